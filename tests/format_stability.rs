//! The repository committed in testdata/repo-v1 (made by scripts/make-testdata with
//! format version 1) must keep opening, checking and restoring byte-exact. If this
//! fails, the on-disk format changed: bump the version instead and keep reading v1.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn cairn(args: &[&str]) -> (i32, String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("-r")
        .arg(root.join("testdata/repo-v1"))
        .args(args)
        .env("CAIRN_PASSWORD", "cairn-testdata-v1")
        .output()
        .expect("run cairn");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn v1_repository_lists_checks_and_restores() {
    let (code, out, err) = cairn(&["snapshots", "--json"]);
    assert_eq!(code, 0, "{err}");
    let snaps: serde_json::Value = serde_json::from_str(&out).unwrap();
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[0]["hostname"], "fixture");
    assert_eq!(snaps[1]["tags"], serde_json::json!(["v1"]));
    assert_eq!(snaps[1]["paths"], serde_json::json!(["/tmp/cairn-fixture-v1/data"]));
    assert_eq!(snaps[1]["parent"], snaps[0]["id"]);

    let (code, _, err) = cairn(&["check", "--read-data"]);
    assert_eq!(code, 0, "check failed on the frozen repository: {err}");

    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out");
    let (code, _, err) =
        cairn(&["restore", "latest:/tmp/cairn-fixture-v1/data", "--target", target.to_str().unwrap(), "--verify"]);
    assert_eq!(code, 0, "{err}");

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("testdata/repo-v1.manifest")).unwrap();
    let mut checked = 0;
    for line in manifest.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let p: PathBuf = target.join(f[0]);
        let m = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", f[0]));
        match f[1] {
            "symlink" => assert_eq!(std::fs::read_link(&p).unwrap(), Path::new(f[2])),
            kind => {
                assert_eq!(format!("{:#o}", m.permissions().mode() & 0o7777), f[2], "{}", f[0]);
                let mtime = m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
                assert_eq!(mtime.to_string(), f[3], "mtime of {}", f[0]);
                if kind == "file" {
                    assert_eq!(m.size().to_string(), f[4]);
                    let want = std::fs::read(root.join("testdata/fixture-v1").join(f[0])).unwrap();
                    assert_eq!(std::fs::read(&p).unwrap(), want, "content of {}", f[0]);
                } else {
                    assert!(m.is_dir());
                }
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 9);

    // The first snapshot still has the first version of hello.txt.
    let (code, out, _) = cairn(&["ls", snaps[0]["short_id"].as_str().unwrap(), "/tmp/cairn-fixture-v1/data", "--json"]);
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l.contains("\"hello.txt\"") && l.contains("\"size\":13")), "{out}");
}

#[test]
fn v1_repository_rejects_wrong_password() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("-r")
        .arg(root.join("testdata/repo-v1"))
        .arg("snapshots")
        .env("CAIRN_PASSWORD", "not-the-password")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
}
