//! Crashes at every step: each command that changes a repository (backup,
//! forget, prune, copy, key passwd, and restore, which takes a lease) is killed
//! (abort, as `kill -9` would) just before its 1st, 2nd, 3rd, … write or remove
//! reaches the storage (`CAIRN_TEST_FAULTS=abort-at-op=N`, see
//! src/backend/faults.rs), until it runs to the end. After every crash,
//! `check --read-data` passes and every snapshot the repository lists restores
//! byte for byte to the tree it was taken of.

mod common;

use common::crash::*;
use common::*;

#[test]
fn killed_at_any_write_every_command_leaves_a_sound_repository() {
    let env = TestEnv::new();
    let src = env.path("src");
    let mut versions = two_versions_backed_up(&env, &src);
    let mut points = 0;
    let pristine = Pristine::Local(env.path("pristine"));

    // A backup of a changed tree (small packs, a checkpoint every 16 blobs).
    versions.push(("v3".to_string(), make_version(&src, 3, 24)));
    let backup = ["backup", s(&src), "--tag", "v3"];
    points += sweep(&env, &pristine, &src, &versions, &backup, &[("CAIRN_TEST_CHECKPOINT_BLOBS", "16")]);
    assert_eq!(env.snapshots(&[]).len(), 3, "the sweep ends with the backup run to the end");

    // forget, prune, forget --prune.
    points += sweep(&env, &pristine, &src, &versions, &["forget", "--keep-last", "2"], &[]);
    points += sweep(&env, &pristine, &src, &versions, &["prune", "--max-unused", "0"], &[]);
    points +=
        sweep(&env, &pristine, &src, &versions, &["forget", "--keep-last", "1", "--prune", "--max-unused", "0"], &[]);

    // A restore only takes a lease; copy into a second repository; key passwd.
    let target = env.path("restore-target");
    points += sweep(&env, &pristine, &src, &versions, &["restore", "latest", "--target", s(&target)], &[]);
    let dst = TestEnv::new();
    dst.init(&[]);
    let from = ["copy", "--from-repo", s(&env.repo), "--from-password-file"];
    let pw = env.path("pw");
    std::fs::write(&pw, PASSWORD).unwrap();
    let mut copy: Vec<&str> = from.to_vec();
    copy.push(s(&pw));
    points += sweep(&dst, &Pristine::Local(dst.path("pristine")), &src, &versions, &copy, &[]);
    assert_eq!(dst.snapshots(&[]).len(), env.snapshots(&[]).len());

    // key passwd: at every crash point the old or the new password opens it.
    let new_pw = env.path("new-pw");
    std::fs::write(&new_pw, "a new password").unwrap();
    let pristine = env.path("pristine-keys");
    copy_tree(&env.repo, &pristine);
    for n in 1..20 {
        let _ = std::fs::remove_dir_all(&env.repo);
        copy_tree(&pristine, &env.repo);
        let crashed = crashes_at(&env, n, &["key", "passwd", "--new-password-file", s(&new_pw)]);
        let old = env.cairn(["snapshots"]).code == 0;
        let new = env.cmd(["snapshots"]).env("CAIRN_PASSWORD", "a new password").run().code == 0;
        assert!(old || new, "key passwd killed at operation {n}: no password opens the repository");
        if !crashed {
            assert!(new && !old, "after key passwd only the new password opens it");
            points += n - 1;
            break;
        }
        points += 1;
    }
    println!("crash points tried: {points}");
    assert!(points >= 30, "only {points} crash points: the hook is not reached");
}

#[test]
fn killed_at_random_moments_backup_and_prune_leave_a_sound_repository() {
    let env = TestEnv::new();
    let src = env.path("src");
    env.init(&["--pack-size", "1"]);
    let mut versions = vec![("v0".to_string(), make_version(&src, 50, 24))];
    env.backup_ok(&[s(&src), "--tag", "v0"]);
    let mut rng = Rng::new(404);
    let (mut kills, mut completed) = (0, 0);
    for round in 1..=12u64 {
        let tag = format!("v{round}");
        versions.push((tag.clone(), make_version(&src, 50 + round, 24)));
        let ms = rng.next_u64() % 400;
        let args = ["backup", s(&src), "--tag", &tag];
        let killed = killed_after(&env, ms, &args);
        assert_sound(&env, &src, &versions, &format!("backup killed after {ms} ms"));
        if round % 3 == 0 {
            let ms = rng.next_u64() % 300;
            let prune = ["forget", "--keep-last", "2", "--prune", "--max-unused", "0"];
            let killed_prune = killed_after(&env, ms, &prune);
            assert_sound(&env, &src, &versions, &format!("forget --prune killed after {ms} ms"));
            kills += killed_prune as u32;
            completed += !killed_prune as u32;
        }
        kills += killed as u32;
        completed += !killed as u32;
    }
    println!("killed at random moments: {kills}; ran to the end: {completed}");
    assert!(kills >= 6, "only {kills} of the runs were killed: the moments are too late");
}

/// 96 files of 400 KiB over nested directories, about 38 MiB.
fn nested_tree(src: &std::path::Path) -> Files {
    let mut rng = Rng::new(77);
    for i in 0..96 {
        write(src.join(format!("a{}/b{}/f{i:02}", i % 3, i % 2)), rng.bytes(400 << 10));
    }
    contents(src)
}

#[test]
fn a_backup_killed_after_a_checkpoint_resumes_from_its_partial_snapshot() {
    let env = TestEnv::new();
    let src = env.path("src");
    let files = nested_tree(&src);
    let total: u64 = files.iter().map(|(_, c)| c.len() as u64).sum();
    env.init(&["--pack-size", "1"]);
    // A checkpoint every 32 new blobs; killed (abort) at the 70th of about 90
    // writes and removes.
    let args = ["backup", s(&src)];
    assert!(crashes_with(&env, 70, &args, &[("CAIRN_TEST_CHECKPOINT_BLOBS", "32")]), "the backup was not killed");
    let snaps = env.snapshots(&[]);
    assert_eq!(snaps.len(), 1, "one checkpoint (the last) should be left: {snaps:?}");
    assert_eq!(snaps[0]["partial"], true);
    env.cairn(["check", "--read-data"]).ok();
    // The rerun reads only what the checkpoint lacks, then replaces it.
    let again = env.backup_ok(&[s(&src)]);
    let read = again["bytes_read"].as_u64().unwrap();
    println!("killed after a checkpoint: the rerun read {read} of {total} bytes");
    assert!(read <= total * 2 / 5, "the rerun read {read} of {total} bytes again");
    let snaps = env.snapshots(&[]);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert!(snaps[0].get("partial").is_none());
    let target = env.path("restore");
    env.cairn(["restore", "latest", "--target", s(&target)]).ok();
    assert!(contents(&restored_path(&target, &src)) == files);
}

#[test]
fn an_interrupted_backup_saves_a_partial_snapshot_and_the_rerun_reads_only_the_rest() {
    let env = TestEnv::new();
    let src = env.path("src");
    // In packs of 1 MiB.
    let files = nested_tree(&src);
    let total: u64 = files.iter().map(|(_, c)| c.len() as u64).sum();
    env.init(&["--pack-size", "1"]);
    // Interrupted (as by Ctrl-C) when its 32nd write starts: about 80% through.
    let r = env.cmd(["backup", "--json", s(&src)]).env("CAIRN_TEST_FAULTS", "interrupt-at-op=32").run();
    assert_eq!(r.code, 130, "{}", r.stderr);
    assert!(r.stderr.contains("cairn: interrupted"), "{}", r.stderr);
    assert!(r.stderr.contains("saved partial snapshot"), "{}", r.stderr);
    let snaps = env.snapshots(&[]);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["partial"], true, "{snaps:?}");
    // Nothing unindexed, nothing missing; `latest` passes over a partial snapshot.
    let c = env.cairn(["check", "--read-data"]);
    assert_eq!(c.code, 0, "{}", c.all_output());
    assert!(!c.all_output().contains("not in any index"), "{}", c.all_output());
    let none = env.cairn(["restore", "latest", "--target", s(&env.path("none"))]);
    assert!(none.code != 0 && none.stderr.contains("no (complete) snapshots"), "{}", none.stderr);
    // The partial snapshot holds a part of the files, each exact.
    let target = env.path("partial");
    env.cairn(["restore", snaps[0]["id"].as_str().unwrap(), "--target", s(&target)]).ok();
    let part = contents(&restored_path(&target, &src));
    assert!(
        part.len() >= 48 && part.len() < files.len(),
        "{} of {} files in the partial snapshot",
        part.len(),
        files.len()
    );
    for (name, c) in &part {
        assert!(files.contains(&(name.clone(), c.clone())), "{name:?} differs in the partial snapshot");
    }
    // The rerun reads only what the partial snapshot lacks, then replaces it.
    let again = env.backup_ok(&[s(&src)]);
    let read = again["bytes_read"].as_u64().unwrap();
    println!("partial snapshot: {} of {} files; the rerun read {read} of {total} bytes", part.len(), files.len());
    assert!(read <= total / 4, "the rerun read {read} of {total} bytes again");
    let snaps = env.snapshots(&[]);
    assert_eq!(snaps.len(), 1, "the partial snapshot was not removed: {snaps:?}");
    assert!(snaps[0].get("partial").is_none(), "{snaps:?}");
    let target = env.path("restore");
    env.cairn(["restore", "latest", "--target", s(&target)]).ok();
    assert!(contents(&restored_path(&target, &src)) == files);
    let c = env.cairn(["check", "--read-data"]);
    assert_eq!(c.code, 0, "{}", c.all_output());
}

#[test]
fn sigint_stops_a_running_backup_with_exit_130_and_indexes_what_arrived() {
    let env = TestEnv::new();
    let src = env.path("src");
    let mut rng = Rng::new(21);
    // 256 MiB of incompressible data, and storage that answers slowly (each
    // write waits up to 200 ms): the backup is still running when the signal
    // comes, on any machine.
    for i in 0..256u32 {
        write(src.join(format!("d{}/f{i}", i % 8)), rng.bytes(1 << 20));
    }
    env.init(&[]);
    let child = env.cmd(["backup", s(&src)]).env("CAIRN_TEST_FAULTS", "delay-ms=200").spawn();
    std::thread::sleep(std::time::Duration::from_millis(500));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let r = finish(child);
    assert_eq!(r.code, 130, "{}", r.stderr);
    assert!(r.stderr.contains("interrupted, stopping"), "{}", r.stderr);
    assert!(env.snapshots(&[]).iter().all(|s| s["partial"] == true), "an interrupted backup saved a snapshot");
    let c = env.cairn(["check"]);
    assert_eq!(c.code, 0, "{}", c.all_output());
    assert!(!c.all_output().contains("not in any index"), "{}", c.all_output());
}

#[test]
fn key_add_and_remove_killed_at_any_write_leave_a_password_that_opens() {
    let env = TestEnv::new();
    env.init(&[]);
    let second = env.path("second-pw");
    std::fs::write(&second, "a second password").unwrap();
    let opens = |pw: &str| env.cmd(["snapshots"]).env("CAIRN_PASSWORD", pw).run().code == 0;
    let pristine = env.path("pristine-keys");
    copy_tree(&env.repo, &pristine);
    let mut points = 0;
    // key add: the first password opens it at every point; the second once done.
    for n in 1..20 {
        let _ = std::fs::remove_dir_all(&env.repo);
        copy_tree(&pristine, &env.repo);
        let crashed = crashes_at(&env, n, &["key", "add", "--new-password-file", s(&second)]);
        assert!(opens(PASSWORD), "key add killed at operation {n}: the first password no longer opens it");
        if !crashed {
            assert!(opens("a second password"));
            points += n - 1;
            break;
        }
        points += 1;
    }
    // key remove of the second key: the first password opens it at every point.
    let keys = env.cairn(["key", "list", "--json"]).ok().json();
    let other =
        keys.as_array().unwrap().iter().find(|k| k["current"] == false).unwrap()["id"].as_str().unwrap().to_string();
    let pristine = env.path("pristine-two-keys");
    copy_tree(&env.repo, &pristine);
    for n in 1..20 {
        let _ = std::fs::remove_dir_all(&env.repo);
        copy_tree(&pristine, &env.repo);
        let crashed = crashes_at(&env, n, &["key", "remove", &other]);
        assert!(opens(PASSWORD), "key remove killed at operation {n}: the remaining password no longer opens it");
        if !crashed {
            assert!(!opens("a second password"), "the removed password still opens it");
            points += n - 1;
            break;
        }
        points += 1;
    }
    assert!(points >= 2, "the crash hook was not reached ({points})");
}

#[test]
fn the_password_never_appears_in_any_output() {
    let env = TestEnv::new();
    let secret = "Xq7-unmistakable-passphrase-93";
    let run = |args: &[&str], pw: &str| {
        let r = env.cmd(args).env("CAIRN_PASSWORD", pw).run();
        let all = format!("{}{}", r.stdout, r.stderr);
        assert!(!all.contains(secret), "cairn {args:?} printed the password:\n{all}");
        r.code
    };
    let src = env.path("src");
    write(src.join("f"), "data");
    assert_eq!(run(&["init", "--kdf-memory", "1024", "--kdf-iterations", "1"], secret), 0);
    assert_eq!(run(&["backup", "--json", "-v", s(&src)], secret), 0);
    assert_eq!(run(&["snapshots", "--json"], secret), 0);
    assert_eq!(run(&["key", "list", "--json"], secret), 0);
    assert_eq!(run(&["check", "--json"], secret), 0);
    // Failures: a wrong password (the secret is a prefix of it), a bad flag.
    assert_eq!(run(&["snapshots"], &format!("{secret}-wrong")), 12);
    assert_ne!(run(&["backup", "--no-such-flag"], secret), 0);
    let pwfile = env.path("pw");
    std::fs::write(&pwfile, secret).unwrap();
    let r = env.cmd(["snapshots", "--password-file", s(&pwfile)]).env_remove("CAIRN_PASSWORD").run();
    assert_eq!(r.code, 0);
    assert!(!format!("{}{}", r.stdout, r.stderr).contains(secret));
}
