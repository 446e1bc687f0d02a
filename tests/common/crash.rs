//! The crash sweep (see tests/crash.rs), shared by the local repository's tests
//! and Swift's (tests/swift_faults.rs).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use cairn::backend::{DynBackend, FileKind, Handle};

use super::*;

/// Runs `cairn ARGS` with the crash hook at operation `n`: whether it crashed.
pub fn crashes_at(env: &TestEnv, n: u64, args: &[&str]) -> bool {
    crashes_with(env, n, args, &[])
}

pub fn crashes_with(env: &TestEnv, n: u64, args: &[&str], vars: &[(&str, &str)]) -> bool {
    let mut cmd = env.cmd(args).env("CAIRN_TEST_FAULTS", format!("abort-at-op={n}"));
    for (k, v) in vars {
        cmd = cmd.env(k, v);
    }
    let (code, stderr) = ended(cmd.spawn(), args);
    match code {
        Some(0) => false,
        Some(c) => panic!("cairn {args:?} failed with {c} (crash hook at {n}):\n{stderr}"),
        None => {
            assert!(stderr.contains("aborting at operation"), "killed by something else:\n{stderr}");
            true
        }
    }
}

/// Waits for `child` (`cairn ARGS`), which must not have panicked: its exit
/// code (None if a signal ended it) and its standard error.
fn ended(child: std::process::Child, args: &[&str]) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "cairn {args:?} panicked:\n{stderr}");
    (out.status.code(), stderr)
}

/// Initialises the repository (1 MiB packs) and backs up two versions of
/// `src`, tagged `v1` and `v2`; returns them.
pub fn two_versions_backed_up(env: &TestEnv, src: &Path) -> Vec<(String, Files)> {
    env.init(&["--pack-size", "1"]);
    let mut versions = Vec::new();
    for (v, seed) in [("v1", 1), ("v2", 2)] {
        versions.push((v.to_string(), make_version(src, seed, 24)));
        env.backup_ok(&[s(src), "--tag", v]);
    }
    versions
}

/// The tree each snapshot tag stands for.
pub type Versions = [(String, Files)];

/// A tree version: `n` files of pseudo-random content under `src`.
pub fn make_version(src: &Path, seed: u64, files: usize) -> Files {
    let _ = std::fs::remove_dir_all(src);
    let mut rng = Rng::new(seed);
    for i in 0..files {
        let len = (rng.next_u64() % 300_000) as usize;
        write(src.join(format!("d{}/f{i}", i % 4)), rng.bytes(len));
    }
    contents(src)
}

/// The repository passes `check --read-data`, and every snapshot it lists
/// restores to the tree its tag names.
#[track_caller]
pub fn assert_sound(env: &TestEnv, src: &Path, versions: &Versions, what: &str) {
    let r = env.cairn(["check", "--read-data"]);
    assert_eq!(r.code, 0, "{what}: check failed:\n{}{}", r.stdout, r.stderr);
    for snap in env.snapshots(&[]) {
        let id = snap["id"].as_str().unwrap();
        let tag = snap["tags"][0].as_str().unwrap();
        let want = &versions.iter().find(|(t, _)| t == tag).unwrap_or_else(|| panic!("unknown tag {tag}")).1;
        let target = env.path("check-restore");
        let _ = std::fs::remove_dir_all(&target);
        env.cairn(["restore", id, "--target", s(&target)]).ok();
        let got = contents(&restored_path(&target, src));
        if snap["partial"] == true {
            // A checkpoint of a backup that did not finish: a part of the tree.
            assert!(got.iter().all(|f| want.contains(f)), "{what}: partial snapshot {tag} has files not in the tree");
        } else {
            assert!(got == *want, "{what}: snapshot {tag} restores differently");
        }
    }
}

/// Where a sweep keeps the repository as it was before the command, to start
/// each crash from it.
pub enum Pristine {
    /// A copy of a local repository folder.
    Local(PathBuf),
    /// A copy of the repository's files through the backend API (Swift, say):
    /// `live` is the repository, `saved` another location to keep them in.
    Remote { live: DynBackend, saved: DynBackend },
}

impl Pristine {
    fn save(&self, env: &TestEnv) {
        match self {
            Pristine::Local(p) => {
                let _ = std::fs::remove_dir_all(p);
                copy_tree(&env.repo, p);
            }
            Pristine::Remote { live, saved } => mirror(live, saved),
        }
    }

    fn reset(&self, env: &TestEnv) {
        match self {
            Pristine::Local(p) => {
                let _ = std::fs::remove_dir_all(&env.repo);
                copy_tree(p, &env.repo);
            }
            Pristine::Remote { live, saved } => mirror(saved, live),
        }
    }
}

/// Makes `to` hold exactly the files of `from` (files are named by their
/// content, so equal names are equal files).
fn mirror(from: &DynBackend, to: &DynBackend) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        to.create().await.unwrap();
        if to.read(&Handle::config(), None).await.is_err() {
            to.write(&Handle::config(), from.read(&Handle::config(), None).await.unwrap()).await.unwrap();
        }
        for kind in FileKind::LISTABLE {
            let want: BTreeSet<String> = from.list(kind).await.unwrap().into_iter().map(|f| f.name).collect();
            let have: BTreeSet<String> = to.list(kind).await.unwrap().into_iter().map(|f| f.name).collect();
            for name in have.difference(&want) {
                to.remove(&Handle { kind, name: name.clone() }).await.unwrap();
            }
            for name in want.difference(&have) {
                let h = Handle { kind, name: name.clone() };
                to.write(&h, from.read(&h, None).await.unwrap()).await.unwrap();
            }
        }
    });
}

/// Runs `args` crashing at operation 1, 2, … (each time on the repository as
/// it was before, kept in `pristine`) until it completes; checks the
/// repository after each crash. Returns the number of crash points tried.
pub fn sweep(
    env: &TestEnv,
    pristine: &Pristine,
    src: &Path,
    versions: &Versions,
    args: &[&str],
    vars: &[(&str, &str)],
) -> u64 {
    pristine.save(env);
    for n in 1..200 {
        pristine.reset(env);
        if !crashes_with(env, n, args, vars) {
            assert_sound(env, src, versions, &format!("{args:?} run to the end"));
            println!("{args:?}: killed at each of its {} writes and removes", n - 1);
            return n - 1;
        }
        assert_sound(env, src, versions, &format!("{args:?} killed at operation {n}"));
    }
    panic!("{args:?} still crashing after 200 operations");
}

pub fn copy_tree(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp").arg("-a").arg(from).arg(to).stdout(Stdio::null()).status().unwrap();
    assert!(st.success());
}

/// Kills `cairn ARGS` with SIGKILL after `ms` milliseconds (storage slowed by
/// 20 ms per operation); whether it was still running.
pub fn killed_after(env: &TestEnv, ms: u64, args: &[&str]) -> bool {
    let mut child = env.cmd(args).env("CAIRN_TEST_FAULTS", "delay-ms=20").spawn();
    std::thread::sleep(std::time::Duration::from_millis(ms));
    let _ = child.kill();
    let (code, stderr) = ended(child, args);
    match code {
        Some(0) => false,
        None => true,
        Some(c) => panic!("cairn {args:?} failed with {c}:\n{stderr}"),
    }
}
