//! A hostile storage, end to end through the command line: files swapped,
//! replayed after they were superseded or forgotten, and a key file whose KDF
//! cost was lowered. Each is detected, named with what it affects, and never
//! panics or passes silently.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;

/// Writes `bytes` as a repository file of `kind` under its own BLAKE3 name, as
/// an attacker with write access can; returns that name.
fn plant(env: &TestEnv, kind: &str, bytes: &[u8]) -> String {
    let name = blake3::hash(bytes).to_hex().to_string();
    let path = if kind == "data" { pack_path(env, &name) } else { env.repo.join(kind).join(&name) };
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
    name
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

fn two_versions(env: &TestEnv, src: &Path) -> (Value, Value) {
    write(src.join("a.bin"), Rng::new(1).bytes(600 << 10));
    write(src.join("sub/b.bin"), Rng::new(2).bytes(600 << 10));
    env.init(&["--chunk-size", "64K,128K,256K", "--pack-size", "1"]);
    let first = env.backup_ok(&[s(src)]);
    write(src.join("a.bin"), Rng::new(3).bytes(600 << 10));
    let second = env.backup_ok(&[s(src)]);
    (first, second)
}

#[test]
fn a_pack_stored_under_another_packs_name_is_named_with_the_files_it_affects() {
    let env = TestEnv::new();
    let src = env.path("src");
    let (first, second) = two_versions(&env, &src);
    let id2 = second["snapshot_id"].as_str().unwrap();
    let a2 = env.node(id2, &src.join("a.bin"))["content"][0].as_str().unwrap().to_string();
    let b = env.node(id2, &src.join("sub/b.bin"))["content"][0].as_str().unwrap().to_string();
    let (victim, _, _) = locate_blob(&env, &a2);
    let (other, _, _) = locate_blob(&env, &b);
    assert_ne!(victim, other, "a.bin's new data should be in the second backup's packs");
    // The second backup's pack with a.bin is replaced by a valid pack of the
    // first backup (same size class: both hold 600 KiB of noise).
    fs::remove_file(pack_path(&env, &victim)).unwrap();
    fs::copy(pack_path(&env, &other), pack_path(&env, &victim)).unwrap();

    let r = env.cairn(["check", "--read-data"]);
    r.expect_code(1);
    let out = r.all_output();
    assert!(out.contains(&format!("pack {victim}")), "{out}");
    assert!(out.contains("/a.bin uses damaged data"), "the affected file is not named:\n{out}");
    assert!(!out.contains("/sub/b.bin uses damaged data"), "{out}");
    // The restore of the second snapshot names a.bin and restores b.bin; the
    // first snapshot does not use the pack and restores whole.
    let t = env.path("t2");
    let r = env.cairn(["restore", id2, "--target", s(&t)]);
    r.expect_code(1);
    assert!(r.stderr.contains("a.bin"), "{}", r.stderr);
    let back = restored_path(&t, &src);
    assert_eq!(fs::read(back.join("sub/b.bin")).unwrap(), fs::read(src.join("sub/b.bin")).unwrap());
    let t = env.path("t1");
    env.cairn(["restore", first["snapshot_id"].as_str().unwrap(), "--target", s(&t)]).ok();
}

#[test]
fn replayed_index_and_snapshot_files_are_harmless_or_named() {
    let env = TestEnv::new();
    let src = env.path("src");
    let (first, _) = two_versions(&env, &src);
    let id1 = first["snapshot_id"].as_str().unwrap().to_string();
    let snap1 = fs::read(env.repo.join("snapshots").join(&id1)).unwrap();
    let old_index: Vec<(String, Vec<u8>)> =
        env.repo_files("index").iter().map(|p| (name_of(p), fs::read(p).unwrap())).collect();
    env.cairn(["forget", &id1, "--prune", "--max-unused", "0"]).ok();
    let packs_now = env.repo_files("data").len();

    // Index files that the prune superseded, put back: they stay superseded.
    for (name, bytes) in &old_index {
        assert_eq!(&plant(&env, "index", bytes), name);
    }
    let r = env.cairn(["check", "--read-data"]);
    assert_eq!(r.code, 0, "replayed superseded index files broke check:\n{}", r.all_output());
    let t = env.path("t");
    env.cairn(["restore", "latest", "--target", s(&t)]).ok();
    assert!(contents(&restored_path(&t, &src)) == contents(&src));
    env.cairn(["prune", "--max-unused", "0"]).ok();
    assert_eq!(env.repo_files("data").len(), packs_now, "a replayed index made prune keep or lose packs");

    // The forgotten snapshot, put back: its lost data is named, and a backup
    // taking it as parent does not trust it (the restore is exact).
    assert_eq!(plant(&env, "snapshots", &snap1), id1);
    let r = env.cairn(["check"]);
    r.expect_code(1);
    assert!(r.all_output().contains(&format!("snapshot {}", &id1[..8])), "{}", r.all_output());
    let v = env.cairn(["backup", "--json", "--parent", &id1, s(&src)]).ok().json();
    let t = env.path("t3");
    env.cairn(["restore", v["snapshot_id"].as_str().unwrap(), "--target", s(&t)]).ok();
    assert!(contents(&restored_path(&t, &src)) == contents(&src));
    let v = env.cairn(["repair", "snapshots", "--forget", "--json"]).ok().json();
    assert_eq!(v["repaired"].as_array().unwrap().len(), 1, "{v}");
    env.cairn(["check", "--read-data"]).ok();
}

#[test]
fn a_key_file_with_a_lowered_kdf_cost_does_not_open_the_repository() {
    let env = TestEnv::new();
    env.cairn(["init", "--kdf-memory", "2048", "--kdf-iterations", "2"]).ok();
    let key = env.repo_files("keys").pop().unwrap();
    let mut k: Value = serde_json::from_slice(&fs::read(&key).unwrap()).unwrap();
    k["kdf"]["memory_kib"] = 8.into();
    k["kdf"]["iterations"] = 1.into();
    fs::remove_file(&key).unwrap();
    plant(&env, "keys", &serde_json::to_vec(&k).unwrap());
    let r = env.cairn(["snapshots"]);
    assert_eq!(r.code, 12, "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("wrong password") && r.stderr.contains("key files were altered"), "{}", r.stderr);
}
