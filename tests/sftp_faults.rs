//! The SFTP server goes away in the middle of a backup: stopped and started again
//! (the backup reconnects and completes), or stopped for good (the backup fails
//! with a clear error); either way `check` passes and a re-run completes. Stops
//! and starts the test sshd of `.ci/test` (`scripts/services/sftp`), so it lives
//! in its own test binary: no other test talks to the server meanwhile.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn var(k: &str) -> String {
    std::env::var(k)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("{k} is not set: the SFTP tests need the test sshd (run them through .ci/test)"))
}

/// Runs `scripts/services/sftp VERB DIR`.
fn service(verb: &str, dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/services/sftp");
    let out = Command::new(script).arg(verb).arg(dir).output().expect("scripts/services/sftp");
    assert!(out.status.success(), "sftp {verb}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Pack files under the repository's data folder (the server is on this machine).
fn packs(repo: &Path) -> usize {
    std::fs::read_dir(repo.join("data"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_dir(e.path()).ok())
                .flat_map(|d| d.filter_map(|e| e.ok()))
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

/// Waits until the repository holds at least `n` packs.
fn wait_for_packs(repo: &Path, n: usize) {
    let start = Instant::now();
    loop {
        if packs(repo) >= n {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the backup stored no packs");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sftp_backup_survives_a_server_restart_and_fails_cleanly_when_it_stays_down() {
    let service_dir = PathBuf::from(var("CAIRN_TEST_SFTP_PIDFILE")).parent().unwrap().to_path_buf();
    let root = PathBuf::from(var("CAIRN_TEST_SFTP_DIR"));
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    let dir = root.join(format!("faults-{}", hex::encode(b)));
    let repo = format!("sftp:cairn-test:{}", dir.display());
    let args = format!("sftp.args=-F {}", var("CAIRN_TEST_SFTP_SSH_CONFIG"));
    let env = TestEnv::new();
    let cmd = |extra: &[&str]| {
        let mut full = vec!["-r", repo.as_str(), "-o", args.as_str(), "-o", "retry.max-delay=1"];
        full.extend_from_slice(extra);
        env.cmd(full)
    };
    cmd(&["init", "--kdf-memory", "1024", "--kdf-iterations", "1", "--chunk-size", "64K,256K,1M", "--pack-size", "1"])
        .run()
        .ok();

    // A backup fed through a pipe: half the data, then the server is stopped
    // (every connection cut) and started again, then the rest.
    let data = Rng::new(5).bytes(12 << 20);
    let mut child = cmd(&["backup", "--stdin", "--stdin-filename", "data.bin"]).spawn();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&data[..6 << 20]).unwrap();
    stdin.flush().unwrap();
    wait_for_packs(&dir, 2);
    service("stop", &service_dir);
    service("start", &service_dir);
    stdin.write_all(&data[6 << 20..]).unwrap();
    drop(stdin);
    let r = finish(child);
    assert_eq!(r.code, 0, "the backup did not survive the restart:\n{}", r.stderr);
    cmd(&["check", "--read-data"]).run().ok();
    let target = env.path("out");
    cmd(&["restore", "latest", "--target", s(&target)]).run().ok();
    assert!(std::fs::read(target.join("data.bin")).unwrap() == data, "restored bytes differ");

    // The server stops for good in the middle of a backup: a clear error, exit 1.
    let data2 = Rng::new(6).bytes(12 << 20);
    let before = packs(&dir);
    let mut child = cmd(&["-o", "retry.attempts=3", "backup", "--stdin", "--stdin-filename", "data2.bin"]).spawn();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&data2[..6 << 20]).unwrap();
    stdin.flush().unwrap();
    wait_for_packs(&dir, before + 2);
    service("stop", &service_dir);
    let start = Instant::now();
    let _ = stdin.write_all(&data2[6 << 20..]);
    drop(stdin);
    let r = finish(child);
    service("start", &service_dir);
    assert_eq!(r.code, 1, "expected a failure while the server is down:\n{}", r.stderr);
    assert!(r.stderr.contains("gave up after 3 tries"), "{}", r.stderr);
    assert!(start.elapsed() < Duration::from_secs(60), "retries were not bounded");

    // The repository is consistent and holds only the first snapshot; a re-run completes.
    cmd(&["check"]).run().ok();
    let snaps = cmd(&["snapshots", "--json"]).run();
    snaps.ok();
    assert_eq!(snaps.json().as_array().unwrap().len(), 1, "the failed backup left a snapshot");
    cmd(&["backup", "--stdin", "--stdin-filename", "data2.bin"]).stdin(data2.clone()).run().ok();
    cmd(&["check", "--read-data"]).run().ok();
}
