//! `cairn repair index`: the index rebuilt from the packs' own headers after
//! index files were lost or damaged, and damaged packs named.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;

fn tree(src: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    for i in 0..20 {
        let len = (rng.next_u64() % 300_000) as usize;
        write(src.join(format!("d{}/f{i}", i % 3)), rng.bytes(len));
    }
}

#[track_caller]
fn assert_restores(env: &TestEnv, src: &Path, snap: &str, what: &str) {
    let target = env.path(format!("restore-{what}"));
    env.cairn(["restore", snap, "--target", s(&target)]).ok();
    let back = restored_path(&target, src);
    for e in fs::read_dir(src.join("d0")).unwrap() {
        let e = e.unwrap();
        assert_eq!(fs::read(e.path()).unwrap(), fs::read(back.join("d0").join(e.file_name())).unwrap(), "{what}");
    }
}

#[test]
fn repair_index_rebuilds_lost_and_damaged_index_files() {
    let env = TestEnv::new();
    let src = env.path("src");
    env.init(&["--pack-size", "1"]);
    tree(&src, 1);
    let first = env.backup_ok(&[s(&src)])["snapshot_id"].as_str().unwrap().to_string();
    tree(&src.join("more"), 2);
    env.backup_ok(&[s(&src)]);

    // Every index file lost: the repository is unusable, then repaired.
    for f in env.repo_files("index") {
        fs::remove_file(f).unwrap();
    }
    assert_ne!(env.cairn(["check"]).code, 0, "check passes without an index");
    let r = env.cairn(["repair", "index", "--dry-run", "--json"]);
    r.ok();
    assert!(env.repo_files("index").is_empty(), "--dry-run wrote something");
    let packs = env.repo_files("data").len() as u64;
    assert_eq!(r.json()["packs"].as_u64(), Some(packs));
    env.cairn(["repair", "index"]).ok();
    env.cairn(["check", "--read-data"]).ok();
    assert_restores(&env, &src, &first, "after losing the index");
    assert_restores(&env, &src, "latest", "latest after losing the index");

    // A damaged index file: commands name it; repair replaces it.
    let idx = env.repo_files("index");
    let f = fs::OpenOptions::new().write(true).open(&idx[0]).unwrap();
    f.write_all_at(b"\xff\xff", 40).unwrap();
    let r = env.cairn(["check"]);
    assert_ne!(r.code, 0);
    assert!(r.all_output().contains("index/"), "{}", r.all_output());
    env.cairn(["repair", "index"]).ok();
    env.cairn(["check", "--read-data"]).ok();
    assert_restores(&env, &src, "latest", "after a damaged index file");
    assert!(!env.repo_files("index").contains(&idx[0]), "the damaged file was replaced");

    // A pack whose header is damaged: named, left out, the rest indexed.
    let pack = env.repo_files("data").into_iter().max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap();
    let len = fs::metadata(&pack).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&pack).unwrap();
    f.write_all_at(b"\x00\x01\x02", len - 30).unwrap();
    let r = env.cairn(["repair", "index"]);
    assert_eq!(r.code, 1, "{}", r.all_output());
    let name = pack.file_name().unwrap().to_string_lossy().into_owned();
    assert!(r.stderr.contains(&name), "the damaged pack is not named:\n{}", r.stderr);
    assert!(r.stderr.contains("1 pack(s) could not be read"), "{}", r.stderr);
    // check now reports the blobs that are gone, naming the damage.
    assert_ne!(env.cairn(["check"]).code, 0);
}
