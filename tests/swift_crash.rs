//! The crash sweep of tests/crash.rs on a real OpenStack Swift (the tempauth
//! server of `.ci/test`; ST_AUTH, ST_USER and ST_KEY must be set, the test never
//! skips): a backup and a `forget --prune` are killed (abort, as `kill -9`
//! would) before each of their writes and removes, and at random moments;
//! after every crash
//! `check --read-data` passes and every snapshot restores byte for byte. Before
//! each crash the container is put back as it was through the backend API.

mod common;

use std::sync::Arc;

use cairn::backend::DynBackend;
use cairn::backend::swift::{SwiftBackend, SwiftOptions};
use common::crash::*;
use common::*;

#[test]
fn killed_at_any_write_over_swift_backup_and_prune_leave_a_sound_repository() {
    for v in ["ST_AUTH", "ST_USER", "ST_KEY"] {
        assert!(std::env::var(v).is_ok_and(|s| !s.is_empty()), "{v} is not set: run the Swift tests through .ci/test");
    }
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    let container = format!("cairn-test-crash-{}", hex::encode(b));
    let open = |prefix: &str| -> DynBackend {
        Arc::new(SwiftBackend::from_env(&format!("{container}:/{prefix}"), SwiftOptions::default()).unwrap())
    };
    let mut env = TestEnv::new();
    env.repo = format!("swift:{container}:/repo").into();
    let pristine = Pristine::Remote { live: open("repo"), saved: open("pristine") };

    let src = env.path("src");
    let mut versions = two_versions_backed_up(&env, &src);
    versions.push(("v3".to_string(), make_version(&src, 3, 24)));
    let backup = ["backup", s(&src), "--tag", "v3"];
    let mut points = sweep(&env, &pristine, &src, &versions, &backup, &[("CAIRN_TEST_CHECKPOINT_BLOBS", "16")]);
    assert_eq!(env.snapshots(&[]).len(), 3, "the sweep ends with the backup run to the end");
    let prune = ["forget", "--keep-last", "1", "--prune", "--max-unused", "0"];
    points += sweep(&env, &pristine, &src, &versions, &prune, &[]);
    assert_eq!(env.snapshots(&[]).len(), 1);
    println!("crash points tried over Swift: {points}");
    assert!(points >= 15, "only {points} crash points: the hook is not reached");

    // SIGKILL at random moments of backups and prunes over Swift.
    let mut rng = Rng::new(505);
    let mut kills = 0;
    for round in 4..=9u64 {
        let tag = format!("v{round}");
        versions.push((tag.clone(), make_version(&src, round, 24)));
        let ms = rng.next_u64() % 400;
        kills += killed_after(&env, ms, &["backup", s(&src), "--tag", &tag]) as u32;
        assert_sound(&env, &src, &versions, &format!("backup over Swift killed after {ms} ms"));
        if round % 2 == 0 {
            let ms = rng.next_u64() % 300;
            kills += killed_after(&env, ms, &prune) as u32;
            assert_sound(&env, &src, &versions, &format!("forget --prune over Swift killed after {ms} ms"));
        }
    }
    println!("killed at random moments over Swift: {kills} of 9 runs");
    assert!(kills >= 3, "only {kills} runs were killed: the moments are too late");
}
