//! The whole cycle (backup, restore, forget --prune, check --read-data) with
//! storage that misbehaves: transient failures, lost replies, truncated reads,
//! listings that miss files just written or still show files just removed, and
//! delays (`CAIRN_TEST_FAULTS`, src/backend/faults.rs). Every command must end
//! either successfully or with a clean error (an exit code, one `cairn:` line,
//! no panic), and afterwards, without faults, the repository passes
//! `check --read-data` and every snapshot restores to the tree it was taken of.

mod common;

use common::*;

/// Runs `cairn ARGS` with `faults`: whether it succeeded, and how many faults
/// were injected. A failure must be clean.
fn run_faulty(env: &TestEnv, faults: &str, args: &[&str]) -> (bool, u64) {
    let mut all = vec!["-o", "retry.attempts=4", "-o", "retry.max-delay=0.01"];
    all.extend(args);
    let r = env.cmd(&all).env("CAIRN_TEST_FAULTS", faults).run();
    let injected = r
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("CAIRN_TEST_FAULTS: injected ")?.split(' ').next()?.parse::<u64>().ok())
        .sum();
    if r.code == 0 {
        return (true, injected);
    }
    // (The hook's own report may come last; it is not cairn's output.)
    let last = r.stderr.lines().rfind(|l| !l.trim().is_empty() && !l.starts_with("CAIRN_TEST_FAULTS:")).unwrap_or("");
    assert!(
        last.starts_with("cairn: ") || r.code == 3,
        "{args:?} under {faults}: exit {} without a clear error:\n{}",
        r.code,
        r.stderr
    );
    assert!(r.code == 1 || r.code == 3 || r.code == 11, "{args:?} under {faults}: exit {}:\n{}", r.code, r.stderr);
    (false, injected)
}

#[test]
fn backup_restore_prune_check_under_faults_never_damage_the_repository() {
    let env = TestEnv::new();
    let src = env.path("src");
    env.init(&["--pack-size", "1"]);
    let mut versions: Vec<(String, Files)> = Vec::new();
    let (mut ok, mut failed, mut injected) = (0, 0, 0);
    for round in 0..8u64 {
        // A new version of the tree: some files changed, some added.
        let mut rng = Rng::new(round + 100);
        for i in 0..12 {
            if round == 0 || i % 3 == round as usize % 3 {
                let len = (rng.next_u64() % 200_000) as usize;
                write(src.join(format!("d{}/f{i}-{}", i % 3, round % 2)), rng.bytes(len));
            }
        }
        let tag = format!("r{round}");
        versions.push((tag.clone(), contents(&src)));
        let faults = format!(
            "fail=0.04,lost-reply=0.04,truncate=0.02,stale-list=0.3,ghost-list=0.3,delay-ms=2,seed={}",
            round + 1
        );
        let target = env.path(format!("restore-{round}"));
        let steps: Vec<Vec<&str>> = vec![
            vec!["backup", s(&src), "--tag", &tag],
            vec!["restore", "latest", "--target", s(&target)],
            vec!["forget", "--keep-last", "3", "--prune", "--max-unused", "0"],
            vec!["check", "--read-data"],
        ];
        for args in &steps {
            let (success, n) = run_faulty(&env, &faults, args);
            injected += n;
            if success {
                ok += 1;
            } else {
                failed += 1;
            }
            let r = env.cairn(["check"]);
            assert_eq!(r.code, 0, "round {round}: check after {args:?} under faults:\n{}{}", r.stdout, r.stderr);
        }
        // Without faults: the repository is sound and every snapshot is whole.
        let r = env.cairn(["check", "--read-data"]);
        assert_eq!(r.code, 0, "round {round}: check after the faulty commands:\n{}{}", r.stdout, r.stderr);
        for snap in env.snapshots(&[]) {
            let id = snap["id"].as_str().unwrap();
            let tag = snap["tags"][0].as_str().unwrap();
            let want = &versions.iter().find(|(t, _)| t == tag).unwrap().1;
            let back = env.path("verify");
            let _ = std::fs::remove_dir_all(&back);
            env.cairn(["restore", id, "--target", s(&back)]).ok();
            assert!(contents(&restored_path(&back, &src)) == *want, "round {round}: snapshot {tag} differs");
        }
    }
    println!("under faults: {ok} commands succeeded, {failed} failed cleanly; {injected} faults injected");
    assert!(injected >= 30, "only {injected} faults were injected: the hook is not reached");
    assert!(ok >= 8, "the faults are so dense that nothing succeeds ({ok} of {})", ok + failed);
}
