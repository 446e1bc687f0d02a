//! The Swift backend against a real OpenStack Swift (tempauth), started by
//! `scripts/services/swift` from `.ci/test`, which exports ST_AUTH, ST_USER and
//! ST_KEY. Without them these tests fail: they never skip.

mod common;

use std::sync::Arc;

use cairn::backend::retry::{RetryBackend, RetryOptions};
use cairn::backend::swift::{SwiftBackend, SwiftOptions};
use cairn::backend::{Backend, FileKind};
use common::*;

fn require_swift() {
    for v in ["ST_AUTH", "ST_USER", "ST_KEY"] {
        assert!(
            std::env::var(v).is_ok_and(|s| !s.is_empty()),
            "{v} is not set: the Swift tests need the test server (run them through .ci/test, \
             or eval \"$(scripts/services/swift start DIR)\" first)"
        );
    }
}

/// A container name no other test or run uses.
fn unique_container(tag: &str) -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    format!("cairn-test-{tag}-{}", hex::encode(b))
}

#[test]
fn swift_passes_the_backend_conformance_suite() {
    require_swift();
    let spec = format!("{}:/some/prefix", unique_container("conf"));
    let b = SwiftBackend::from_env(&spec, SwiftOptions { page_limit: 700, ..SwiftOptions::default() }).unwrap();
    cairn::backend::conformance::run(Arc::new(RetryBackend::new(Arc::new(b), RetryOptions::default())));
}

#[test]
fn swift_end_to_end_backup_restore_check() {
    require_swift();
    let env = TestEnv::new();
    let src = env.path("src");
    // Every kind of file, name, mode, time and attribute, including a 1 GiB sparse file.
    common::fidelity::build_fidelity_tree(&src);
    let repo = format!("swift:{}:/repo", unique_container("e2e"));
    let run = |args: &[&str]| {
        let mut full = vec!["-r", repo.as_str()];
        full.extend_from_slice(args);
        env.cairn(full)
    };
    run(&["init", "--kdf-memory", "1024", "--kdf-iterations", "1", "--chunk-size", "64K,256K,1M", "--pack-size", "1"])
        .ok();
    run(&["backup", s(&src)]).ok();
    let second = run(&["backup", s(&src), "--json"]);
    second.ok();
    assert_eq!(second.json()["files_read"], 0, "the unchanged re-backup over Swift read files");
    let target = env.path("restore");
    run(&["restore", "latest", "--target", s(&target), "--verify"]).ok();
    let back = restored_path(&target, &src);
    assert_same_tree(&src, &back);
    let sparse = std::fs::metadata(back.join("sparse.img")).unwrap();
    assert!(std::os::unix::fs::MetadataExt::blocks(&sparse) * 512 < 64 << 20, "the sparse file came back dense");
    run(&["check", "--read-data"]).ok();
    // The data folder holds more objects than one listing page.
    let many = run(&["-o", "swift.page-limit=2", "check"]);
    many.ok();
    assert!(many.stdout.contains("packs"), "{}", many.stdout);
}

#[test]
fn swift_listing_pages_through_many_objects() {
    require_swift();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let spec = unique_container("page");
    let b = SwiftBackend::from_env(&spec, SwiftOptions { page_limit: 3, ..SwiftOptions::default() }).unwrap();
    rt.block_on(async {
        b.create().await.unwrap();
        for i in 0..10u8 {
            let id = cairn::Id::hash(&[i]);
            b.write(&cairn::backend::Handle::id(FileKind::Pack, &id), bytes::Bytes::from(vec![i; i as usize]))
                .await
                .unwrap();
        }
        let mut listed = b.list(FileKind::Pack).await.unwrap();
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(listed.len(), 10, "a page limit of 3 must still list all 10");
        assert!(b.list(FileKind::Snapshot).await.unwrap().is_empty());
    });
}

#[test]
fn swift_wrong_credentials_fail_clearly() {
    require_swift();
    let env = TestEnv::new();
    let repo = format!("swift:{}", unique_container("auth"));
    let r = env.cmd(["-r", repo.as_str(), "snapshots"]).env("ST_KEY", "not-the-key").run();
    r.expect_code(1);
    assert!(r.stderr.contains("access denied") || r.stderr.contains("401"), "{}", r.stderr);
    assert!(!r.stderr.contains("not-the-key"), "the secret leaked into the error");
    // A missing container is "no repository".
    env.cmd(["-r", repo.as_str(), "snapshots"]).run().expect_code(10);
}
