//! `cairn repair index`: the index rebuilt from the packs' own headers after
//! index files were lost or damaged, and damaged packs named. `cairn repair
//! snapshots`: snapshots rewritten without the files whose data is lost.

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

fn ids(node: &serde_json::Value) -> Vec<String> {
    node["content"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

#[test]
fn repair_snapshots_drops_files_with_damaged_data_and_keeps_the_rest() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("victim.bin"), Rng::new(11).bytes(2 << 20));
    write(src.join("good1.bin"), Rng::new(12).bytes(700 << 10));
    write(src.join("sub/good2.bin"), Rng::new(13).bytes(300 << 10));
    env.init(&["--chunk-size", "64K,256K,1M"]);
    let first = env.backup_ok(&[s(&src)]);
    write(src.join("good1.bin"), Rng::new(14).bytes(700 << 10));
    env.backup_ok(&[s(&src)]);
    let first = first["snapshot_id"].as_str().unwrap().to_string();

    // One flipped byte in a data blob of victim.bin (used by both snapshots).
    let victim = ids(&env.node(&first, &src.join("victim.bin")));
    let (pack, offset, length) = locate_blob(&env, &victim[1]);
    let path = pack_path(&env, &pack);
    let mut bytes = fs::read(&path).unwrap();
    bytes[(offset + length / 2) as usize] ^= 1;
    fs::remove_file(&path).unwrap();
    fs::write(&path, &bytes).unwrap();

    // Without reading the packs the damage is invisible: nothing to repair.
    let v = env.cairn(["repair", "snapshots", "--json"]).ok().json();
    assert_eq!(v["repaired"].as_array().unwrap().len(), 0, "{v}");
    // --dry-run: both snapshots named, nothing written.
    let v = env.cairn(["repair", "snapshots", "--read-data", "--dry-run", "--json"]).ok().json();
    let r = v["repaired"].as_array().unwrap();
    assert_eq!(r.len(), 2, "{v}");
    assert!(r.iter().all(|x| x["files_dropped"] == 1 && x["new_id"].is_null()), "{v}");
    assert_eq!(env.snapshots(&[]).len(), 2);

    // The repair: two new snapshots tagged `repaired` without victim.bin; the
    // originals are kept.
    let out = env.cairn(["repair", "snapshots", "--read-data"]);
    out.ok();
    assert!(out.stderr.contains("victim.bin: data lost, file left out"), "{}", out.stderr);
    let snaps = env.snapshots(&[]);
    assert_eq!(snaps.len(), 4);
    let repaired = env.snapshots(&["--tag", "repaired"]);
    assert_eq!(repaired.len(), 2);
    for snap in &repaired {
        let id = snap["id"].as_str().unwrap();
        let target = env.path(format!("r-{id}"));
        env.cairn(["restore", id, "--target", s(&target)]).ok();
        let back = restored_path(&target, &src);
        assert!(!back.join("victim.bin").exists());
        assert_eq!(fs::read(back.join("sub/good2.bin")).unwrap(), fs::read(src.join("sub/good2.bin")).unwrap());
        assert!(snap["original"].is_string(), "{snap}");
    }

    // --forget removes the originals; a prune then drops the damaged blob, and
    // check --read-data passes again.
    let v = env.cairn(["repair", "snapshots", "--read-data", "--forget", "--json"]).ok().json();
    assert_eq!(v["repaired"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(env.snapshots(&[]).len(), 2, "the originals were not removed");
    env.cairn(["prune", "--max-unused", "0"]).ok();
    env.cairn(["check", "--read-data"]).ok();
}

#[test]
fn repair_index_then_repair_snapshots_after_a_lost_pack() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("a.bin"), Rng::new(1).bytes(500 << 10));
    env.init(&[]);
    env.backup_ok(&[s(&src)]);
    let packs_before = env.repo_files("data");
    write(src.join("b.bin"), Rng::new(2).bytes(500 << 10));
    env.backup_ok(&[s(&src)]);
    // The second backup's data pack (b.bin alone) is lost.
    let new: Vec<_> = env.repo_files("data").into_iter().filter(|p| !packs_before.contains(p)).collect();
    let data_pack = new
        .iter()
        .find(|p| fs::metadata(p).unwrap().len() > 400 << 10)
        .unwrap_or_else(|| panic!("no data pack among {new:?}"));
    fs::remove_file(data_pack).unwrap();
    env.cairn(["check"]).expect_code(1);

    // Without --read-data a missing pack is enough to see the loss.
    let v = env.cairn(["repair", "snapshots", "--forget", "--json"]).ok().json();
    let r = v["repaired"].as_array().unwrap();
    assert_eq!(r.len(), 1, "only the second snapshot uses the lost pack: {v}");
    assert_eq!(r[0]["files_dropped"], 1, "{v}");
    env.cairn(["repair", "index"]).ok();
    env.cairn(["check", "--read-data"]).ok();
    let target = env.path("t");
    env.cairn(["restore", "latest", "--target", s(&target)]).ok();
    let back = restored_path(&target, &src);
    assert_eq!(fs::read(back.join("a.bin")).unwrap(), fs::read(src.join("a.bin")).unwrap());
    assert!(!back.join("b.bin").exists());
}
