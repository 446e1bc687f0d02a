//! End-to-end tests of the `cairn` binary: fidelity of a backup/restore round
//! trip, deduplication, incremental backups, damaged and bad input, and the
//! everyday command-line behaviour.

mod common;

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, symlink};
use std::path::Path;

use common::fidelity::*;
use common::*;
use serde_json::Value;

// ---------------------------------------------------------------------------
// Helpers specific to these tests
// ---------------------------------------------------------------------------

/// Summary counter `k` of a backup's JSON summary.
#[track_caller]
fn num(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("summary field {k} missing or not a number: {v}"))
}

/// The summary's snapshot ID.
#[track_caller]
fn snap_id(v: &Value) -> String {
    v["snapshot_id"].as_str().unwrap_or_else(|| panic!("no snapshot_id in {v}")).to_string()
}

fn content_ids(node: &Value) -> Vec<String> {
    node["content"]
        .as_array()
        .unwrap_or_else(|| panic!("node without content: {node}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn is_hex64(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

// ---------------------------------------------------------------------------
// 1. Fidelity
// ---------------------------------------------------------------------------

#[test]
fn fidelity_round_trip_keeps_content_and_metadata() {
    let env = TestEnv::new();
    let src = env.path("src");
    build_fidelity_tree(&src);
    env.init(&["--chunk-size", "64K,256K,1M"]);

    // The source must be sparse for the sparseness check below to mean anything.
    let m = fs::metadata(src.join("sparse.img")).unwrap();
    assert!(m.blocks() * 512 < 1 << 20, "source file is not sparse");

    let sum = env.backup_ok(&[s(&src)]);
    assert_eq!(num(&sum, "errors"), 0, "{sum}");

    let target = env.path("restore");
    env.cairn(["restore", "latest", "--target", s(&target)]).ok();
    let back = restored_path(&target, &src);

    // Everything: names, types, modes, owners, mtimes, xattrs, content, links.
    assert_same_tree(&src, &back);

    // The same, spelled out for the properties most likely to break.
    let ino = |p: &str| fs::symlink_metadata(back.join(p)).unwrap().ino();
    assert_eq!(ino("hard1"), ino("hard2"), "hard links restored separately");
    assert_eq!(ino("hard1"), ino("hsub/hard3"), "hard links restored separately");
    assert_eq!(fs::metadata(back.join("hard1")).unwrap().nlink(), 3);

    let sparse = fs::metadata(back.join("sparse.img")).unwrap();
    assert_eq!(sparse.len(), SPARSE_SIZE);
    assert!(sparse.blocks() * 512 < 64 << 20, "restored sparse file allocates {} bytes", sparse.blocks() * 512);

    use std::os::unix::ffi::OsStrExt;
    assert_eq!(fs::read_link(back.join("links/nonutf8")).unwrap().as_os_str().as_bytes(), b"../caf\xe9");
    assert_eq!(fs::read_link(back.join("links/abs")).unwrap(), src.join("one_byte"));
    let m = fs::symlink_metadata(back.join("future2038")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), T2038);
    let m = fs::symlink_metadata(back.join("old1990")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), T1990);
    assert_eq!(fs::symlink_metadata(back.join("setuid")).unwrap().mode() & 0o7777, 0o4755);
    assert_eq!(xattr::get(back.join("xattr_file"), "user.binary").unwrap(), Some(vec![0, 255, 1, 2]));
    assert!(fs::symlink_metadata(back.join("a".repeat(LONG_NAME_LEN))).is_ok());
    if is_root() {
        let m = fs::symlink_metadata(back.join("owned_file")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1234, 5678));
        let m = fs::symlink_metadata(back.join("owned_link")).unwrap();
        assert_eq!((m.uid(), m.gid()), (4321, 8765));
        let m = fs::symlink_metadata(back.join("null_dev")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(&m.file_type()));
        assert_eq!(m.rdev(), nix::sys::stat::makedev(1, 3));
    }

    // --verify re-reads every restored file against the snapshot.
    let target2 = env.path("restore-verify");
    let r = env.cairn(["restore", "latest", "--target", s(&target2), "--verify", "--json"]);
    r.ok();
    let v = r.json();
    assert!(num(&v, "verified") >= 10, "nothing verified: {v}");
    assert_eq!(num(&v, "errors"), 0, "{v}");

    // The repository is sound, down to every blob.
    let r = env.cairn(["check", "--read-data"]);
    r.ok();
    assert!(r.stdout.contains("no errors"), "{}", r.stdout);
}

// ---------------------------------------------------------------------------
// 2. Deduplication
// ---------------------------------------------------------------------------

fn random_tree(root: &Path, seed: u64, files: usize, max_size: usize) -> u64 {
    let mut rng = Rng::new(seed);
    let mut total = 0;
    for i in 0..files {
        let size = (rng.next_u64() as usize) % max_size + 1;
        let p = root.join(format!("d{}/f{i}.bin", i % 5));
        write(&p, rng.bytes(size));
        total += size as u64;
    }
    total
}

#[test]
fn dedup_backing_up_the_same_tree_again_adds_under_one_percent() {
    let env = TestEnv::new();
    let src = env.path("src");
    let total = random_tree(&src, 7, 40, 400 << 10);
    env.init(&[]);

    let first = env.backup_ok(&[s(&src)]);
    assert!(num(&first, "data_blobs") >= 40, "{first}");
    let size1 = env.repo_size();
    assert!(size1 > total, "repository ({size1}) smaller than the data ({total})");
    let limit = size1 / 100;

    // Same tree, with the parent snapshot.
    let second = env.backup_ok(&[s(&src)]);
    assert_eq!(num(&second, "data_blobs"), 0, "{second}");
    let size2 = env.repo_size();
    assert!(size2 - size1 < limit, "second backup added {} bytes (limit {limit})", size2 - size1);

    // Same tree, every file re-read and re-chunked.
    let forced = env.backup_ok(&[s(&src), "--force"]);
    assert_eq!(num(&forced, "files_read"), 40, "{forced}");
    assert_eq!(num(&forced, "data_blobs"), 0, "{forced}");
    let size3 = env.repo_size();
    assert!(size3 - size2 < limit, "forced backup added {} bytes (limit {limit})", size3 - size2);

    // A copy at another path (no parent): every chunk is found in the repository.
    let copy = env.path("copy");
    for f in file_set(&src) {
        write(copy.join(&f), fs::read(src.join(&f)).unwrap());
    }
    let other = env.backup_ok(&[s(&copy)]);
    assert_eq!(num(&other, "files_read"), 40, "{other}");
    assert_eq!(num(&other, "data_blobs"), 0, "{other}");
    let size4 = env.repo_size();
    assert!(size4 - size3 < limit, "backup of a copy added {} bytes (limit {limit})", size4 - size3);
}

#[test]
fn dedup_insertion_at_the_start_reuses_all_but_a_few_chunks() {
    let env = TestEnv::new();
    let src = env.path("src");
    let data = Rng::new(42).bytes(64 << 20);
    write(src.join("big.bin"), &data);
    env.init(&[]);

    let first = env.backup_ok(&[s(&src)]);
    let n1 = num(&first, "data_blobs");
    assert!(n1 >= 20, "64 MiB cut into only {n1} chunks: {first}");

    let mut shifted = Rng::new(43).bytes(100);
    shifted.extend_from_slice(&data);
    write(src.join("big.bin"), &shifted);
    let second = env.backup_ok(&[s(&src)]);
    assert_eq!(num(&second, "files_read"), 1, "{second}");
    let n2 = num(&second, "data_blobs");
    assert!(n2 <= 3, "inserting 100 bytes created {n2} new chunks of {n1}: {second}");
    assert!(num(&second, "data_added") < 16 << 20, "inserting 100 bytes added {} bytes", num(&second, "data_added"));
}

/// The default chunk sizes keep a disk image or database file with a few scattered
/// 4 KiB rewrites mostly deduplicated (restic's and borg's 1-2 MiB chunks would all
/// be touched).
#[test]
fn scattered_4k_rewrites_store_a_small_part_of_a_large_file() {
    let env = TestEnv::new();
    let src = env.path("src");
    let mut data = Rng::new(7).bytes(32 << 20);
    write(src.join("disk.img"), &data);
    env.init(&[]);
    env.backup_ok(&[s(&src)]);

    // Rewrite 40 scattered 4 KiB blocks (0.5% of the file).
    let mut rng = Rng::new(8);
    let blocks = data.len() / 4096;
    for _ in 0..40 {
        let b = (rng.next_u64() % blocks as u64) as usize;
        data[b * 4096..(b + 1) * 4096].copy_from_slice(&rng.bytes(4096));
    }
    write(src.join("disk.img"), &data);
    let second = env.backup_ok(&[s(&src)]);
    // Each rewrite touches one chunk (about 128-256 KiB: a longer chunk is more
    // likely to be hit), so about 5-10 MiB are stored again; restic's chunk
    // sizes store about 26 MiB. The chunker's seed is random per repository.
    let added = num(&second, "data_added");
    assert!(added < data.len() as u64 / 2, "40 scattered 4 KiB rewrites stored {added} of {} bytes", data.len());
}

/// A long backup writes index files as it goes (checkpoints), so what it stored is
/// indexed before the end; the result is the same repository content.
#[test]
fn backup_writes_index_checkpoints_as_it_goes() {
    let env = TestEnv::new();
    let src = env.path("src");
    let mut rng = Rng::new(11);
    for i in 0..120 {
        write(src.join(format!("f{i:03}.bin")), rng.bytes(150_000));
    }
    env.init(&["--pack-size", "1"]);
    let r = env.cmd(["backup", "--json", s(&src)]).env("CAIRN_TEST_CHECKPOINT_BLOBS", "8").run();
    assert_eq!(r.code, 0, "{}", r.stderr);
    // (A checkpoint writes an index file only if a pack was uploaded since the
    // last one: about 17 packs here.)
    let index_files = env.repo_files("index").len();
    assert!(index_files >= 5, "120 new blobs with a checkpoint every 8 wrote {index_files} index file(s)");
    env.cairn(["check", "--read-data"]).ok();
    let target = env.path("restore");
    env.cairn(["restore", "latest", "--target", s(&target)]).ok();
    assert_same_tree(&src, &restored_path(&target, &src));
    // Without the hook the same backup writes one index file.
    let env2 = TestEnv::new();
    env2.init(&["--pack-size", "1"]);
    env2.backup_ok(&[s(&src)]);
    assert_eq!(env2.repo_files("index").len(), 1);
}

#[test]
fn restore_in_small_batches_is_the_same_restore() {
    // A restore works through the selection a batch at a time; with batches of
    // 2 items, hard links, directories' times and every other property cross
    // batch boundaries.
    let env = TestEnv::new();
    let src = env.path("src");
    build_fidelity_tree(&src);
    env.init(&[]);
    env.backup_ok(&[s(&src)]);
    for batch in ["1", "2", "7"] {
        let target = env.path(format!("restore-{batch}"));
        let r = env
            .cmd(["restore", "latest", "--target", s(&target), "--verify", "--json"])
            .env("CAIRN_TEST_RESTORE_BATCH", batch)
            .run();
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(num(&r.json(), "errors"), 0);
        let back = restored_path(&target, &src);
        assert_same_tree(&src, &back);
        let ino = |p: &str| fs::symlink_metadata(back.join(p)).unwrap().ino();
        assert_eq!(ino("hard1"), ino("hard2"));
        assert_eq!(ino("hard1"), ino("hsub/hard3"));
    }
    // Selected parts only: a directory is restored with its first selected entry.
    let target = env.path("restore-part");
    let r = env
        .cmd(["restore", "latest", "--target", s(&target), "--include", "hard2", "--include", "hsub"])
        .env("CAIRN_TEST_RESTORE_BATCH", "1")
        .run();
    assert_eq!(r.code, 0, "{}", r.stderr);
    let back = restored_path(&target, &src);
    let mut names: Vec<String> =
        fs::read_dir(&back).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["hard2", "hsub"]);
    assert_eq!(fs::read(back.join("hsub/hard3")).unwrap(), fs::read(src.join("hard1")).unwrap());
}

#[test]
fn restore_into_an_existing_target_resumes_and_honours_overwrite() {
    let env = TestEnv::new();
    let src = env.path("src");
    let mut rng = Rng::new(31);
    for i in 0..10 {
        write(src.join(format!("d{}/f{i}", i % 2)), rng.bytes(50_000 + i * 7_000));
    }
    env.init(&[]);
    env.backup_ok(&[s(&src)]);
    let target = env.path("t");
    env.cairn(["restore", "latest", "--target", s(&target)]).ok();
    let back = restored_path(&target, &src);
    let ino = |p: &str| fs::metadata(back.join(p)).unwrap().ino();
    let kept = ino("d0/f0");

    // As after an interrupted restore: one file missing, one with other bytes
    // of the same size, one cut short. Run again: only those three are written.
    fs::remove_file(back.join("d1/f1")).unwrap();
    let f2 = fs::read(back.join("d0/f2")).unwrap();
    fs::write(back.join("d0/f2"), vec![0x55; f2.len()]).unwrap();
    let f4 = fs::read(back.join("d0/f4")).unwrap();
    fs::write(back.join("d0/f4"), &f4[..1000]).unwrap();
    let r = env.cairn(["restore", "latest", "--target", s(&target), "--json"]);
    r.ok();
    let v = r.json();
    assert_eq!((num(&v, "unchanged"), num(&v, "files"), num(&v, "errors")), (7, 10, 0), "{v}");
    assert_same_tree(&src, &back);
    assert_eq!(ino("d0/f0"), kept, "a file whose content matched was rewritten");

    // never: an existing file is left as it is.
    fs::write(back.join("d0/f2"), b"mine").unwrap();
    let v = env.cairn(["restore", "latest", "--target", s(&target), "--overwrite", "never", "--json"]).ok().json();
    assert_eq!(num(&v, "skipped"), 10, "{v}");
    assert_eq!(fs::read(back.join("d0/f2")).unwrap(), b"mine");

    // if-newer: kept while newer than the snapshot's, replaced once older.
    set_mtime(&back.join("d0/f2"), 4_000_000_000, 0);
    env.cairn(["restore", "latest", "--target", s(&target), "--overwrite", "if-newer"]).ok();
    assert_eq!(fs::read(back.join("d0/f2")).unwrap(), b"mine");
    set_mtime(&back.join("d0/f2"), 1_000_000_000, 0);
    env.cairn(["restore", "latest", "--target", s(&target), "--overwrite", "if-newer"]).ok();
    assert_eq!(fs::read(back.join("d0/f2")).unwrap(), f2);

    // if-changed: a file with other content is replaced.
    fs::write(back.join("d0/f2"), b"changed").unwrap();
    env.cairn(["restore", "latest", "--target", s(&target), "--overwrite", "if-changed"]).ok();
    assert_same_tree(&src, &back);
    let r = env.cairn(["restore", "latest", "--target", s(&target), "--overwrite", "sometimes"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("possible values: always, if-changed, if-newer, never"), "{}", r.stderr);
}

#[test]
fn restore_delete_removes_only_selected_names_the_snapshot_lacks() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("d0/a"), b"a");
    write(src.join("d1/b"), b"b");
    write(src.join("keep.txt"), b"k");
    env.init(&[]);
    env.backup_ok(&[s(&src)]);
    let target = env.path("t");
    env.cairn(["restore", "latest", "--target", s(&target)]).ok();
    let back = restored_path(&target, &src);
    let outside = env.path("outside");
    write(outside.join("precious"), b"p");

    // Things the snapshot does not have: a file, a directory with content, a
    // symlink to a directory outside the target, and an excluded name.
    write(back.join("extra.txt"), b"x");
    write(back.join("d0/extra_dir/deep/x"), b"x");
    std::os::unix::fs::symlink(&outside, back.join("d1/link")).unwrap();
    write(back.join("d1/skip.log"), b"l");
    // A directory of the snapshot that is a symlink in the target is replaced,
    // never looked into.
    fs::remove_dir_all(back.join("d0")).unwrap();
    std::os::unix::fs::symlink(&outside, back.join("d0")).unwrap();

    let args = |extra: &[&str]| {
        let mut a = vec!["restore", "latest", "--target", s(&target), "--delete", "--exclude", "*.log", "--json"];
        a.extend_from_slice(extra);
        env.cairn(a).ok().json()
    };
    let before = file_set(&target);
    let v = args(&["--dry-run"]);
    assert_eq!(num(&v, "deleted"), 2, "{v}");
    assert_eq!(file_set(&target), before, "--dry-run changed the target");

    let v = args(&[]);
    assert_eq!((num(&v, "deleted"), num(&v, "errors")), (2, 0), "{v}");
    assert!(!back.join("extra.txt").exists() && !back.join("d1/link").exists());
    assert_eq!(fs::read(back.join("d1/skip.log")).unwrap(), b"l", "an excluded name was deleted");
    assert_eq!(fs::read(outside.join("precious")).unwrap(), b"p", "deleted outside the target");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1, "restored into a symlinked directory");
    fs::remove_file(back.join("d1/skip.log")).unwrap();
    assert_eq!(file_set(&back), file_set(&src));

    // A directory where the snapshot has a file goes too, so the file can be restored.
    fs::remove_file(back.join("d1/b")).unwrap();
    write(back.join("d1/b/inside"), b"x");
    let v = args(&[]);
    assert_eq!((num(&v, "deleted"), num(&v, "errors")), (1, 0), "{v}");
    assert_eq!(fs::read(back.join("d1/b")).unwrap(), b"b");

    // With includes only the selected names go.
    write(back.join("d0/extra"), b"x");
    write(back.join("d1/extra"), b"x");
    let v =
        env.cairn(["restore", "latest", "--target", s(&target), "--delete", "--include", "d0", "--json"]).ok().json();
    assert_eq!(num(&v, "deleted"), 1, "{v}");
    assert!(!back.join("d0/extra").exists() && back.join("d1/extra").exists());

    // Without --delete nothing goes.
    env.cairn(["restore", "latest", "--target", s(&target)]).ok();
    assert!(back.join("d1/extra").exists());
}

/// Every blob in the index: ID -> (pack, stored length).
fn all_blobs(env: &TestEnv) -> std::collections::HashMap<String, (String, u64)> {
    let mut out = std::collections::HashMap::new();
    for f in env.repo_files("index") {
        let idx = env.cairn(["cat", "index", f.file_name().unwrap().to_str().unwrap()]).ok().json();
        for p in idx["packs"].as_array().unwrap() {
            for b in p["blobs"].as_array().unwrap() {
                let pack = p["id"].as_str().unwrap().to_string();
                out.insert(b["id"].as_str().unwrap().to_string(), (pack, b["length"].as_u64().unwrap()));
            }
        }
    }
    out
}

#[test]
fn a_files_chunks_are_spread_over_packs_at_random_and_small_backups_make_one_pack() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("big.bin"), Rng::new(3).bytes(6 << 20));
    env.init(&["--chunk-size", "16K,64K,256K", "--pack-size", "1"]);
    let id = snap_id(&env.backup_ok(&[s(&src)]));
    let blobs = all_blobs(&env);
    let packs: Vec<&String> = content_ids(&env.node(&id, &src.join("big.bin"))).iter().map(|b| &blobs[b].0).collect();
    let distinct: std::collections::HashSet<_> = packs.iter().collect();
    // In file order, chunks would fill one pack after the other: one switch
    // per pack. Spread at random over two open packs, about every other chunk
    // switches.
    let switches = packs.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(
        switches > 3 * distinct.len(),
        "{switches} switches over {} packs: chunks are packed in file order",
        distinct.len()
    );

    // A small file whose chunks went to both open packs still makes one pack.
    let small = TestEnv::new();
    let src = small.path("src");
    write(src.join("small.bin"), Rng::new(4).bytes(200 << 10));
    small.init(&["--chunk-size", "16K,32K,64K", "--pack-size", "1"]);
    let id = snap_id(&small.backup_ok(&[s(&src)]));
    let ids = content_ids(&small.node(&id, &src.join("small.bin")));
    assert!(ids.len() >= 3);
    let blobs = all_blobs(&small);
    let distinct: std::collections::HashSet<_> = ids.iter().map(|b| &blobs[b].0).collect();
    assert_eq!(distinct.len(), 1, "a small backup's chunks were left in several packs");
}

#[test]
fn a_padded_repository_stores_padded_chunk_sizes_and_restores_exactly() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("noise.bin"), Rng::new(5).bytes(3 << 20));
    write(src.join("text.txt"), "some compressible text\n".repeat(40_000));
    write(src.join("tiny"), "x");
    env.init(&["--pad", "--chunk-size", "16K,64K,256K"]);
    env.backup_ok(&[s(&src)]);
    let blobs = all_blobs(&env);
    assert!(blobs.len() > 20);
    for (id, (_, len)) in &blobs {
        assert_eq!(*len as usize, cairn::repo::pack::padded(*len as usize), "blob {id} of {len} bytes is not padded");
    }
    // Without --pad most sizes are not padded ones.
    let plain = TestEnv::new();
    plain.init(&["--chunk-size", "16K,64K,256K"]);
    plain.backup_ok(&[s(&src)]);
    let unpadded =
        all_blobs(&plain).values().filter(|(_, l)| *l as usize != cairn::repo::pack::padded(*l as usize)).count();
    assert!(unpadded > 10, "{unpadded}");
    env.cairn(["check", "--read-data"]).ok();
    let target = env.path("t");
    env.cairn(["restore", "latest", "--target", s(&target), "--verify"]).ok();
    assert_same_tree(&src, &restored_path(&target, &src));
    // Prune repacks the stored (padded) blobs as they are.
    write(src.join("noise.bin"), Rng::new(6).bytes(1 << 20));
    env.backup_ok(&[s(&src)]);
    env.cairn(["forget", "--keep-last", "1", "--prune", "--max-unused", "0"]).ok();
    assert!(all_blobs(&env).values().all(|(_, l)| *l as usize == cairn::repo::pack::padded(*l as usize)));
    env.cairn(["check", "--read-data"]).ok();
}

#[test]
fn dedup_identical_files_are_stored_once() {
    let env = TestEnv::new();
    let src = env.path("src");
    let data = Rng::new(5).bytes(3 << 20);
    write(src.join("a.bin"), &data);
    write(src.join("b.bin"), &data);
    write(src.join("sub/c.bin"), &data);
    env.init(&["--chunk-size", "64K,256K,1M"]);

    let sum = env.backup_ok(&[s(&src)]);
    let id = snap_id(&sum);
    let a = content_ids(&env.node(&id, &src.join("a.bin")));
    let b = content_ids(&env.node(&id, &src.join("b.bin")));
    let c = content_ids(&env.node(&id, &src.join("sub/c.bin")));
    assert!(a.len() >= 3, "3 MiB with max chunk 1 MiB gave {} chunks", a.len());
    assert_eq!(a, b);
    assert_eq!(a, c);
    let distinct: std::collections::HashSet<_> = a.iter().collect();
    assert_eq!(num(&sum, "data_blobs"), distinct.len() as u64, "three identical files stored more than once: {sum}");
    assert!(
        num(&sum, "data_added") < (data.len() as u64) * 3 / 2,
        "data added {} for one {}-byte file",
        num(&sum, "data_added"),
        data.len()
    );
}

// ---------------------------------------------------------------------------
// 3. Incremental backups
// ---------------------------------------------------------------------------

#[test]
fn incremental_backup_of_unchanged_tree_reads_nothing() {
    const DIRS: usize = 100;
    const PER_DIR: usize = 100;
    const FILES: u64 = (DIRS * PER_DIR) as u64;
    let env = TestEnv::new();
    let src = env.path("src");
    let mut total = 0u64;
    for d in 0..DIRS {
        let dir = src.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..PER_DIR {
            let body = format!("file {d}/{f}\n");
            total += body.len() as u64;
            fs::write(dir.join(format!("f{f:03}")), body).unwrap();
        }
    }
    env.init(&[]);

    let first = env.backup_ok(&[s(&src)]);
    assert_eq!(num(&first, "files_new"), FILES, "{first}");
    assert_eq!(num(&first, "files_read"), FILES, "{first}");
    assert_eq!(num(&first, "bytes_read"), total, "{first}");

    let second = env.backup_ok(&[s(&src)]);
    assert_eq!(num(&second, "files_read"), 0, "{second}");
    assert_eq!(num(&second, "bytes_read"), 0, "{second}");
    assert_eq!(num(&second, "files_unmodified"), FILES, "{second}");
    assert_eq!(num(&second, "files_new"), 0, "{second}");
    assert_eq!(num(&second, "files_changed"), 0, "{second}");
    assert_eq!(num(&second, "data_blobs"), 0, "{second}");
    assert_eq!(num(&second, "total_files_processed"), FILES, "{second}");
    let snaps = env.snapshots(&[]);
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[1]["parent"], snaps[0]["id"], "parent not recorded");

    // Modify one file (its size changes, so this does not depend on timestamp
    // granularity): exactly that file is read.
    let changed = src.join("d042/f017");
    let mut f = OpenOptions::new().append(true).open(&changed).unwrap();
    std::io::Write::write_all(&mut f, b"appended\n").unwrap();
    drop(f);
    let new_len = fs::metadata(&changed).unwrap().len();
    let third = env.backup_ok(&[s(&src)]);
    assert_eq!(num(&third, "files_read"), 1, "{third}");
    assert_eq!(num(&third, "bytes_read"), new_len, "{third}");
    assert_eq!(num(&third, "files_changed"), 1, "{third}");
    assert_eq!(num(&third, "files_unmodified"), FILES - 1, "{third}");

    // Touch another file (same content, new mtime): read again, nothing stored.
    set_mtime(&src.join("d007/f099"), 1_234_567_890, 42);
    let fourth = env.backup_ok(&[s(&src)]);
    assert_eq!(num(&fourth, "files_read"), 1, "{fourth}");
    assert_eq!(num(&fourth, "files_unmodified"), FILES - 1, "{fourth}");
    assert_eq!(num(&fourth, "data_blobs"), 0, "{fourth}");

    // Extended attributes of unchanged files are carried over from the parent
    // (their ctime says they did not change); a changed one is read again.
    xattr::set(src.join("d001/f001"), "user.k", b"one").unwrap();
    xattr::set(src.join("d001"), "user.dir", b"d").unwrap();
    env.backup_ok(&[s(&src)]);
    xattr::set(src.join("d001/f001"), "user.k", b"two").unwrap();
    let id = snap_id(&env.backup_ok(&[s(&src)]));
    let xattrs = |p: &str| env.node(&id, &src.join(p))["xattrs"].clone();
    assert_eq!(xattrs("d001/f001"), serde_json::json!([{"name": "user.k", "value": "two"}]));
    assert_eq!(xattrs("d001"), serde_json::json!([{"name": "user.dir", "value": "d"}]));

    // --force reads everything again.
    let forced = env.backup_ok(&[s(&src), "--force"]);
    assert_eq!(num(&forced, "files_read"), FILES, "{forced}");
    assert_eq!(num(&forced, "files_unmodified"), 0, "{forced}");
    assert_eq!(num(&forced, "bytes_read"), total + 9, "{forced}");
    assert_eq!(num(&forced, "data_blobs"), 0, "{forced}");
}

// ---------------------------------------------------------------------------
// 4. Bad input
// ---------------------------------------------------------------------------

#[test]
fn wrong_password_exits_12() {
    let env = TestEnv::new();
    env.init(&[]);
    let r = env.cmd(["snapshots"]).env("CAIRN_PASSWORD", "not the password").run();
    r.expect_code(12);
    assert!(r.stderr.contains("password"), "{}", r.stderr);

    // The same through --password-file, and the right password that way works.
    let pw = env.path("pw");
    write(&pw, "wrong\n");
    env.cmd(["snapshots", "--password-file", s(&pw)]).env_remove("CAIRN_PASSWORD").run().expect_code(12);
    write(&pw, format!("{PASSWORD}\n"));
    env.cmd(["snapshots", "--password-file", s(&pw)]).env_remove("CAIRN_PASSWORD").run().ok();
}

#[test]
fn missing_repository_exits_10() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("f"), "x");
    // Nothing at the location.
    let r = env.cairn(["snapshots"]);
    r.expect_code(10);
    assert!(r.stderr.contains("no repository"), "{}", r.stderr);
    env.cairn(["backup", s(&src)]).expect_code(10);
    // An empty directory is not a repository either.
    fs::create_dir(&env.repo).unwrap();
    env.cairn(["check"]).expect_code(10);
    let other = env.path("elsewhere");
    env.cairn(["-r", s(&other), "ls", "latest"]).expect_code(10);
}

#[test]
fn flipped_byte_in_a_pack_is_found_by_check_and_restore() {
    let env = TestEnv::new();
    let src = env.path("src");
    let victim_data = Rng::new(11).bytes(2 << 20);
    write(src.join("victim.bin"), &victim_data);
    write(src.join("good1.bin"), Rng::new(12).bytes(700 << 10));
    write(src.join("good2.txt"), "a good small file\n");
    write(src.join("sub/good3.bin"), Rng::new(13).bytes(300 << 10));
    env.init(&["--chunk-size", "64K,256K,1M"]);
    let sum = env.backup_ok(&[s(&src)]);
    let id = snap_id(&sum);
    env.cairn(["check", "--read-data"]).ok();

    // Damage one data blob of victim.bin, in the middle of its ciphertext.
    let victim_blobs = content_ids(&env.node(&id, &src.join("victim.bin")));
    assert!(victim_blobs.len() >= 2, "{victim_blobs:?}");
    let mut good_blobs = Vec::new();
    for f in ["good1.bin", "good2.txt", "sub/good3.bin"] {
        good_blobs.extend(content_ids(&env.node(&id, &src.join(f))));
    }
    let blob = &victim_blobs[1];
    assert!(!good_blobs.contains(blob));
    let (pack, offset, length) = locate_blob(&env, blob);
    let path = pack_path(&env, &pack);
    let mut bytes = fs::read(&path).unwrap();
    let pos = (offset + length / 2) as usize;
    bytes[pos] ^= 0x01;
    // Pack files may be read-only; replace the file.
    fs::remove_file(&path).unwrap();
    fs::write(&path, &bytes).unwrap();

    // check --read-data names the pack.
    let r = env.cairn(["check", "--read-data"]);
    r.expect_code(1);
    assert!(r.all_output().contains(&pack), "check output does not name pack {pack}:\n{}", r.all_output());
    // ... and the file that uses the damaged blob, and only that one (the
    // others' blobs in the same pack still open).
    let victim = format!("{}/victim.bin uses damaged data", src.display());
    assert!(r.all_output().contains(&victim), "check does not name the damaged file:\n{}", r.all_output());
    assert_eq!(r.all_output().matches("uses damaged data").count(), 1, "{}", r.all_output());

    // restore names the damaged file, restores the others, exits 1.
    let target = env.path("restore");
    let r = env.cairn(["restore", "latest", "--target", s(&target)]);
    r.expect_code(1);
    assert!(r.stderr.contains("victim.bin"), "restore does not name the damaged file:\n{}", r.stderr);
    let back = restored_path(&target, &src);
    for f in ["good1.bin", "good2.txt", "sub/good3.bin"] {
        assert_eq!(fs::read(back.join(f)).unwrap(), fs::read(src.join(f)).unwrap(), "{f} not restored correctly");
        let (a, b) = (entry_info(&src.join(f)), entry_info(&back.join(f)));
        assert_eq!((a.mode, a.mtime), (b.mode, b.mtime), "{f} metadata");
    }
    if let Ok(v) = fs::read(back.join("victim.bin")) {
        assert_ne!(v, victim_data, "damaged file restored as if intact");
    }
}

/// Ways of damaging a repository file: (length to keep, whether the damaged file
/// is renamed to its own hash so that it gets past the name check).
fn truncations(len: usize) -> Vec<(usize, bool)> {
    vec![
        (len / 2, false),
        (len - 1, false),
        (30, false),
        (0, false),
        (len / 2, true),
        (len - 1, true),
        (39, true),
        (0, true),
    ]
}

/// Removes `current` and writes the first `len` bytes of `original` into `dir`,
/// under `name` or (if `rename`) under the BLAKE3 hash of those bytes. Returns
/// the new file's name.
fn damage(dir: &Path, current: &str, name: &str, original: &[u8], len: usize, rename: bool) -> String {
    let _ = fs::remove_file(dir.join(current));
    let bytes = &original[..len];
    let new = if rename { blake3::hash(bytes).to_hex().to_string() } else { name.to_string() };
    fs::write(dir.join(&new), bytes).unwrap();
    new
}

#[test]
fn truncated_index_file_is_a_clean_error() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("a.txt"), "some content\n");
    write(src.join("b/c.txt"), "more content\n");
    env.init(&[]);
    env.backup_ok(&[s(&src)]);
    let index = env.repo_files("index");
    assert_eq!(index.len(), 1, "{index:?}");
    let dir = env.repo.join("index");
    let name = index[0].file_name().unwrap().to_str().unwrap().to_string();
    let original = fs::read(&index[0]).unwrap();
    let mut current = name.clone();

    for (len, rename) in truncations(original.len()) {
        current = damage(&dir, &current, &name, &original, len, rename);
        let ctx = format!(
            "index truncated to {len} of {} bytes{}",
            original.len(),
            if rename { ", renamed to its hash" } else { "" }
        );

        let r = env.cairn(["ls", "latest", "-R"]);
        assert_eq!(r.code, 1, "ls with {ctx}:\n{}", r.stderr);
        assert!(r.stderr.contains("index"), "ls with {ctx}:\n{}", r.stderr);

        let target = env.path(format!("restore-{len}-{rename}"));
        let r = env.cairn(["restore", "latest", "--target", s(&target)]);
        assert_eq!(r.code, 1, "restore with {ctx}:\n{}", r.stderr);

        let r = env.cairn(["check"]);
        assert_eq!(r.code, 1, "check with {ctx}:\n{}", r.all_output());
        assert!(
            r.all_output().contains(&current),
            "check with {ctx} does not name the index file {current}:\n{}",
            r.all_output()
        );

        let r = env.cairn(["backup", s(&src)]);
        assert_ne!(r.code, 0, "backup with {ctx} succeeded:\n{}", r.stderr);
        assert!(!r.stderr.is_empty(), "backup with {ctx}: no message");
    }
    // Intact again, everything works.
    damage(&dir, &current, &name, &original, original.len(), false);
    env.cairn(["check", "--read-data"]).ok();
}

#[test]
fn truncated_snapshot_file_is_a_clean_error() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("a.txt"), "some content\n");
    env.init(&[]);
    let good = snap_id(&env.backup_ok(&[s(&src), "--tag", "good"]));
    write(src.join("a.txt"), "changed content\n");
    let bad = snap_id(&env.backup_ok(&[s(&src), "--tag", "bad"]));
    let dir = env.repo.join("snapshots");
    let original = fs::read(dir.join(&bad)).unwrap();
    let mut current = bad.clone();

    for (len, rename) in truncations(original.len()) {
        current = damage(&dir, &current, &bad, &original, len, rename);
        let ctx = format!(
            "snapshot truncated to {len} of {} bytes{}",
            original.len(),
            if rename { ", renamed to its hash" } else { "" }
        );

        // Listing skips it with a warning; the intact snapshot is still listed.
        let r = env.cairn(["snapshots", "--json"]);
        assert!(
            r.code != 0 || r.stderr.contains(&current[..8]),
            "snapshots with {ctx}: damage not reported:\n{}",
            r.stderr
        );
        if r.code == 0 {
            let listed: Vec<String> = r
                .json()
                .as_array()
                .expect("array")
                .iter()
                .map(|s| s["id"].as_str().unwrap_or_default().to_string())
                .collect();
            assert_eq!(listed, vec![good.clone()], "snapshots with {ctx}");
        }

        let target = env.path(format!("restore-{len}-{rename}"));
        let r = env.cairn(["restore", &current, "--target", s(&target)]);
        assert_eq!(r.code, 1, "restore with {ctx}:\n{}", r.stderr);
        let r = env.cairn(["ls", &current]);
        assert_eq!(r.code, 1, "ls with {ctx}:\n{}", r.stderr);

        let r = env.cairn(["check"]);
        assert_eq!(r.code, 1, "check with {ctx}:\n{}", r.all_output());
        assert!(
            r.all_output().contains(&current),
            "check with {ctx} does not name the snapshot {current}:\n{}",
            r.all_output()
        );

        // The intact snapshot still restores, and is what `latest` means.
        let target = env.path(format!("restore-good-{len}-{rename}"));
        env.cairn(["restore", "latest", "--target", s(&target)]).ok();
        assert_eq!(fs::read(restored_path(&target, &src).join("a.txt")).unwrap(), b"some content\n");
    }
}

#[test]
fn unreadable_source_file_is_skipped_with_exit_3() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("a.txt"), "readable\n");
    write(src.join("secret"), "nobody may read this\n");
    write(src.join("sub/b.txt"), "also readable\n");
    chmod(&src.join("secret"), 0o000);

    // As root every file is readable: run cairn as an unprivileged user instead.
    let as_user = |args: &[&str]| -> Run {
        if !is_root() {
            return env.cairn(args);
        }
        let mut all = vec!["--reuid=65534", "--regid=65534", "--clear-groups", "--", cairn_bin()];
        all.extend(args);
        env.cmd_program("setpriv", &all).run()
    };
    if is_root() {
        assert!(
            std::process::Command::new("setpriv").arg("--version").output().is_ok(),
            "setpriv (util-linux) is needed to test unreadable files as root"
        );
        chmod(env.dir.path(), 0o777);
        // The unprivileged user cannot read it?
        let probe = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(["cat", s(&src.join("secret"))])
            .output()
            .unwrap();
        assert!(!probe.status.success(), "the file is readable after all");
    }

    let mut init = vec!["init"];
    init.extend(FAST_KDF);
    as_user(&init).ok();
    let r = as_user(&["backup", "--json", s(&src)]);
    r.expect_code(3);
    assert!(r.stderr.contains("secret"), "unreadable file not named:\n{}", r.stderr);
    let sum = r.json();
    assert_eq!(num(&sum, "errors"), 1, "{sum}");
    let id = snap_id(&sum);

    let snaps = env.snapshots(&[]);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["id"], id.as_str());
    env.cairn(["check", "--read-data"]).ok();

    let r = env.cairn(["ls", &id, "-R"]);
    r.ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(!lines.iter().any(|l| l.ends_with("/secret")), "unreadable file listed:\n{}", r.stdout);
    for f in ["a.txt", "sub/b.txt"] {
        let want = src.join(f);
        assert!(lines.contains(&s(&want)), "{f} not listed:\n{}", r.stdout);
    }
    let target = env.path("restore");
    env.cairn(["restore", &id, "--target", s(&target)]).ok();
    let back = restored_path(&target, &src);
    assert_eq!(file_set(&back), vec!["a.txt", "sub/b.txt"]);
}

// ---------------------------------------------------------------------------
// 6. Command-line basics
// ---------------------------------------------------------------------------

#[test]
fn snapshots_json_has_the_documented_fields() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("a.txt"), "a\n");
    env.init(&[]);
    let time = "2024-01-02T03:04:05.123456789+01:00";
    let first = env.backup_ok(&[s(&src), "--tag", "alpha,beta", "--host", "testhost", "--time", time]);
    let second = env.backup_ok(&[s(&src), "--host", "testhost"]);

    let snaps = env.snapshots(&[]);
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let s0 = &snaps[0];
    for k in ["id", "short_id", "time", "hostname", "username", "paths", "tags", "tree", "summary"] {
        assert!(s0.get(k).is_some(), "field {k} missing: {s0}");
    }
    assert_eq!(s0["id"], snap_id(&first).as_str());
    assert!(is_hex64(&s0["id"]) && is_hex64(&s0["tree"]), "{s0}");
    let id = s0["id"].as_str().unwrap();
    let short = s0["short_id"].as_str().unwrap();
    assert!(short.len() >= 8 && id.starts_with(short), "{s0}");
    assert_eq!(rfc3339(s0["time"].as_str().unwrap()), rfc3339(time), "{s0}");
    assert_eq!(s0["hostname"], "testhost");
    assert!(s0["username"].as_str().is_some_and(|u| !u.is_empty()));
    assert_eq!(s0["paths"], serde_json::json!([s(&src)]));
    assert_eq!(s0["tags"], serde_json::json!(["alpha", "beta"]));
    for k in [
        "files_new",
        "files_changed",
        "files_unmodified",
        "dirs_new",
        "data_blobs",
        "tree_blobs",
        "data_added",
        "total_files_processed",
        "total_bytes_processed",
        "files_read",
        "bytes_read",
        "errors",
    ] {
        assert!(s0["summary"][k].is_u64(), "summary.{k} missing: {s0}");
    }
    assert_eq!(s0["summary"]["files_new"], 1);
    assert_eq!(snaps[1]["id"], snap_id(&second).as_str());
    assert_eq!(snaps[1]["parent"], s0["id"], "{}", snaps[1]);
    assert!(snaps[1]["tags"].as_array().is_some_and(|t| t.is_empty()));

    // Filters.
    assert_eq!(env.snapshots(&["--host", "testhost"]).len(), 2);
    assert_eq!(env.snapshots(&["--host", "otherhost"]).len(), 0);
    assert_eq!(env.snapshots(&["--path", s(&src)]).len(), 2);
    let latest = env.snapshots(&["--latest", "1"]);
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0]["id"], snaps[1]["id"]);
}

/// An RFC 3339 time as an instant (so that equal times in other zones compare equal).
fn rfc3339(t: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(t).unwrap_or_else(|e| panic!("{t:?}: {e}")).to_utc()
}

#[test]
fn ls_lists_the_expected_paths() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("a.txt"), "hello\n");
    write(src.join("d/b.txt"), "world\n");
    fs::create_dir_all(src.join("d/e")).unwrap();
    symlink("a.txt", src.join("link")).unwrap();
    env.init(&[]);
    env.backup_ok(&[s(&src)]);

    let mut expected: Vec<String> =
        src.ancestors().filter(|p| *p != Path::new("/")).map(|p| s(p).to_string()).collect();
    expected.reverse();
    for rel in ["a.txt", "d", "d/b.txt", "d/e", "link"] {
        expected.push(s(&src.join(rel)).to_string());
    }
    let r = env.cairn(["ls", "latest", "--recursive"]);
    r.ok();
    let got: Vec<String> = r.stdout.lines().map(String::from).collect();
    assert_eq!(got, expected);

    // Non-recursive, below a directory.
    let r = env.cairn(["ls", "latest", s(&src)]);
    r.ok();
    let got: Vec<&str> = r.stdout.lines().collect();
    let want: Vec<String> = ["a.txt", "d", "link"].iter().map(|f| s(&src.join(f)).to_string()).collect();
    assert_eq!(got, want);

    // JSON: one object per line with path, name, type, size.
    let r = env.cairn(["ls", "latest", s(&src), "--recursive", "--json"]);
    r.ok();
    let nodes = r.json_lines();
    assert_eq!(nodes.len(), 5, "{}", r.stdout);
    let by_name: HashMap<&str, &Value> = nodes.iter().map(|n| (n["name"].as_str().unwrap(), n)).collect();
    assert_eq!(by_name["a.txt"]["type"], "file");
    assert_eq!(by_name["a.txt"]["size"], 6);
    assert_eq!(by_name["a.txt"]["path"], s(&src.join("a.txt")));
    assert_eq!(by_name["e"]["type"], "dir");
    assert_eq!(by_name["link"]["type"], "symlink");
    assert_eq!(by_name["b.txt"]["path"], s(&src.join("d/b.txt")));

    // A path not in the snapshot is an error.
    env.cairn(["ls", "latest", "/no/such/path"]).expect_code(1);
}

#[test]
fn stdin_backup_round_trips() {
    let env = TestEnv::new();
    env.init(&[]);
    let mut data = Rng::new(9).bytes(300 << 10);
    data.extend_from_slice(&[0u8; 5000]);
    let r = env.cmd(["backup", "--json", "--stdin", "--stdin-filename", "x.txt"]).stdin(data.clone()).run();
    r.ok();
    let sum = r.json();
    assert_eq!(num(&sum, "bytes_read"), data.len() as u64, "{sum}");
    let snaps = env.snapshots(&[]);
    assert_eq!(snaps[0]["paths"], serde_json::json!(["/x.txt"]));

    let r = env.cairn(["ls", "latest", "--json"]);
    r.ok();
    let nodes = r.json_lines();
    assert_eq!(nodes.len(), 1, "{}", r.stdout);
    assert_eq!(nodes[0]["path"], "/x.txt");
    assert_eq!(nodes[0]["size"], data.len() as u64);

    let target = env.path("restore");
    env.cairn(["restore", "latest", "--target", s(&target)]).ok();
    assert_eq!(fs::read(target.join("x.txt")).unwrap(), data);
    assert_eq!(file_set(&target), vec!["x.txt"]);
}

#[test]
fn exclude_glob_leaves_out_matching_paths() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("keep.txt"), "keep\n");
    write(src.join("junk.tmp"), "junk\n");
    write(src.join("sub/also.tmp"), "junk\n");
    write(src.join("sub/keep2.txt"), "keep\n");
    write(src.join("sub/not.tmpx"), "keep: only ends in .tmpx\n");
    write(src.join("dir.tmp/inner.txt"), "inside an excluded dir\n");
    env.init(&[]);

    let sum = env.backup_ok(&[s(&src), "--exclude", "*.tmp"]);
    assert_eq!(num(&sum, "total_files_processed"), 3, "{sum}");
    let r = env.cairn(["ls", "latest", "-R", s(&src)]);
    r.ok();
    assert!(!r.stdout.contains(".tmp\n"), "{}", r.stdout);
    assert!(!r.stdout.contains("inner.txt"), "{}", r.stdout);
    let target = env.path("restore");
    env.cairn(["restore", &format!("latest:{}", s(&src)), "--target", s(&target)]).ok();
    assert_eq!(file_set(&target), vec!["keep.txt", "sub/keep2.txt", "sub/not.tmpx"]);

    // The same from an exclude file (comments and blank lines ignored).
    let ex = env.path("excludes");
    write(&ex, "# temporary files\n\n*.tmp\nkeep2.txt\n");
    env.backup_ok(&[s(&src), "--exclude-file", s(&ex)]);
    let target = env.path("restore2");
    env.cairn(["restore", &format!("latest:{}", s(&src)), "--target", s(&target)]).ok();
    assert_eq!(file_set(&target), vec!["keep.txt", "sub/not.tmpx"]);
}

#[test]
fn tags_filter_snapshots() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("a"), "a");
    env.init(&[]);
    let daily = snap_id(&env.backup_ok(&[s(&src), "--tag", "daily"]));
    let weekly = snap_id(&env.backup_ok(&[s(&src), "--tag", "weekly"]));
    let both = snap_id(&env.backup_ok(&[s(&src), "--tag", "daily", "--tag", "monthly"]));
    env.backup_ok(&[s(&src)]);

    let ids = |tag: &str| -> Vec<String> {
        let mut v: Vec<String> =
            env.snapshots(&["--tag", tag]).iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
        v.sort();
        v
    };
    let mut want = vec![daily.clone(), both.clone()];
    want.sort();
    assert_eq!(ids("daily"), want);
    assert_eq!(ids("weekly"), vec![weekly]);
    assert_eq!(ids("daily,monthly"), vec![both.clone()]);
    assert_eq!(ids("monthly"), vec![both]);
    assert!(ids("nope").is_empty());
    assert_eq!(env.snapshots(&[]).len(), 4);
}

#[test]
fn cat_config_shows_version_1_and_init_options() {
    let env = TestEnv::new();
    env.init(&["--chunk-size", "64K,256K,1M", "--pack-size", "4", "--compression", "max"]);
    let c = env.cairn(["cat", "config"]).ok().json();
    assert_eq!(c["version"], 1, "{c}");
    assert!(is_hex64(&c["id"]), "{c}");
    assert_eq!(c["chunker"]["min_size"], 64 << 10, "{c}");
    assert_eq!(c["chunker"]["avg_size"], 256 << 10, "{c}");
    assert_eq!(c["chunker"]["max_size"], 1 << 20, "{c}");
    assert_eq!(c["pack_size"], 4 << 20, "{c}");
    assert_eq!(c["compression"], 19, "{c}");
    // The layout on disk.
    for d in ["config", "keys", "snapshots", "index", "data", "locks"] {
        assert!(env.repo.join(d).exists(), "{d} missing from the repository");
    }
}

#[test]
fn init_twice_fails_and_keeps_the_repository() {
    let env = TestEnv::new();
    env.init(&[]);
    let config = fs::read(env.repo.join("config")).unwrap();
    let keys = env.repo_files("keys");
    let id = env.cairn(["cat", "config"]).ok().json()["id"].clone();

    let mut args = vec!["init"];
    args.extend(FAST_KDF);
    let r = env.cairn(&args);
    r.expect_code(1);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    let r = env.cmd(&args).env("CAIRN_PASSWORD", "another").run();
    r.expect_code(1);

    assert_eq!(fs::read(env.repo.join("config")).unwrap(), config);
    assert_eq!(env.repo_files("keys"), keys);
    assert_eq!(env.cairn(["cat", "config"]).ok().json()["id"], id);
    env.cmd(["snapshots"]).env("CAIRN_PASSWORD", "another").run().expect_code(12);
}

#[test]
fn restore_of_a_subpath_restores_only_that_subtree() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("top.txt"), "top\n");
    write(src.join("a/x.txt"), "x\n");
    write(src.join("a/sub/y.txt"), "y\n");
    write(src.join("b/z.txt"), "z\n");
    stamp_tree(&src, &HashMap::new(), &mut 0);
    env.init(&[]);
    env.backup_ok(&[s(&src)]);

    let target = env.path("restore");
    env.cairn(["restore", &format!("latest:{}", s(&src.join("a"))), "--target", s(&target)]).ok();
    assert_eq!(file_set(&target), vec!["sub/y.txt", "x.txt"]);
    assert_eq!(fs::read(target.join("x.txt")).unwrap(), b"x\n");
    assert_same_tree(&src.join("a/sub"), &target.join("sub"));
    assert!(!target.join("tmp").exists() && !target.join("b").exists());

    // A single file.
    let target = env.path("restore-file");
    env.cairn(["restore", &format!("latest:{}", s(&src.join("b/z.txt"))), "--target", s(&target)]).ok();
    assert_eq!(file_set(&target), vec!["z.txt"]);
    assert_same_tree(&src.join("b/z.txt"), &target.join("z.txt"));

    // A path that is not in the snapshot.
    let target = env.path("restore-missing");
    env.cairn(["restore", &format!("latest:{}", s(&src.join("nope"))), "--target", s(&target)]).expect_code(1);
}

#[test]
fn restore_include_restores_only_matching_files() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("one.txt"), "1\n");
    write(src.join("two.log"), "2\n");
    write(src.join("deep/three.txt"), "3\n");
    write(src.join("deep/four.log"), "4\n");
    write(src.join("other/five.log"), "5\n");
    write(src.join("other/six.dat"), "6\n");
    env.init(&[]);
    env.backup_ok(&[s(&src)]);

    let target = env.path("restore");
    env.cairn(["restore", "latest", "--target", s(&target), "--include", "*.txt"]).ok();
    let back = restored_path(&target, &src);
    assert_eq!(file_set(&back), vec!["deep/three.txt", "one.txt"]);
    assert!(!back.join("other").exists(), "directory without matches restored");
    assert_eq!(fs::read(back.join("deep/three.txt")).unwrap(), b"3\n");

    // A directory pattern takes everything below it.
    let target = env.path("restore-dir");
    let other = src.join("other");
    env.cairn(["restore", "latest", "--target", s(&target), "--include", s(&other)]).ok();
    let back = restored_path(&target, &src);
    assert_eq!(file_set(&back), vec!["other/five.log", "other/six.dat"]);

    // Include and exclude together.
    let target = env.path("restore-both");
    env.cairn(["restore", "latest", "--target", s(&target), "--include", "*.log", "--exclude", "four.log"]).ok();
    let back = restored_path(&target, &src);
    assert_eq!(file_set(&back), vec!["other/five.log", "two.log"]);
}

#[test]
fn dry_run_writes_nothing() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("a.bin"), Rng::new(3).bytes(100 << 10));
    env.init(&[]);
    let before = env.repo_size();
    let (code, sum) = env.backup(&[s(&src), "--dry-run"]);
    assert_eq!(code, 0);
    assert_eq!(sum["dry_run"], true, "{sum}");
    assert!(sum["snapshot_id"].is_null(), "{sum}");
    assert_eq!(num(&sum, "files_new"), 1, "{sum}");
    assert_eq!(env.repo_size(), before, "dry run wrote to the repository");
    assert!(env.snapshots(&[]).is_empty());
}

// ---------------------------------------------------------------------------
// The tree comparison itself must notice every kind of difference.
// ---------------------------------------------------------------------------

/// A small tree built deterministically, so two calls give identical trees.
fn comparable_tree(root: &Path) {
    write(root.join("file"), "content\n");
    write(root.join("setuid"), "x");
    chmod(&root.join("setuid"), 0o4755);
    write(root.join("hard1"), "linked\n");
    fs::hard_link(root.join("hard1"), root.join("hard2")).unwrap();
    write(root.join("other"), "linked\n");
    fs::hard_link(root.join("other"), root.join("other2")).unwrap();
    fs::create_dir(root.join("dir")).unwrap();
    write(root.join("dir/inner"), "inner\n");
    xattr::set(root.join("file"), "user.k", b"v").unwrap();
    symlink(os(b"t\xff"), root.join("link")).unwrap();
    stamp_tree(root, &HashMap::new(), &mut 0);
}

#[test]
fn tree_comparison_detects_every_difference() {
    let env = TestEnv::new();
    type Mutation = (&'static str, &'static str, fn(&Path));
    let mutations: Vec<Mutation> = vec![
        ("identical", "", |_| {}),
        ("file mtime ns", "mtime", |r| {
            let m = fs::symlink_metadata(r.join("file")).unwrap();
            set_mtime(&r.join("file"), m.mtime(), m.mtime_nsec() + 1);
        }),
        ("dir mtime", "mtime", |r| set_mtime(&r.join("dir"), 1, 0)),
        ("symlink mtime", "mtime", |r| set_mtime(&r.join("link"), 1, 0)),
        ("setuid bit", "mode", |r| chmod(&r.join("setuid"), 0o755)),
        ("xattr value", "xattrs", |r| xattr::set(r.join("file"), "user.k", b"w").unwrap()),
        ("symlink target", "symlink target", |r| {
            fs::remove_file(r.join("link")).unwrap();
            symlink(os(b"t\xfe"), r.join("link")).unwrap();
        }),
        ("content", "content differs", |r| {
            let f = OpenOptions::new().write(true).open(r.join("file")).unwrap();
            f.write_all_at(b"C", 0).unwrap();
        }),
        ("hard links", "hard-link grouping", |r| {
            // {hard1, hard2} {other, other2} become {hard1, other} {hard2, other2}:
            // same names, contents and link counts, different grouping.
            fs::remove_file(r.join("other")).unwrap();
            fs::hard_link(r.join("hard1"), r.join("other")).unwrap();
            fs::remove_file(r.join("hard2")).unwrap();
            fs::hard_link(r.join("other2"), r.join("hard2")).unwrap();
        }),
        ("missing", "missing", |r| fs::remove_file(r.join("dir/inner")).unwrap()),
        ("extra", "extra", |r| write(r.join("dir/new"), "")),
        ("type", "mode", |r| {
            fs::remove_file(r.join("file")).unwrap();
            fs::create_dir(r.join("file")).unwrap();
        }),
    ];
    for (i, (what, expect, mutate)) in mutations.into_iter().enumerate() {
        let (a, b) = (env.path(format!("a{i}")), env.path(format!("b{i}")));
        comparable_tree(&a);
        comparable_tree(&b);
        let m = fs::symlink_metadata(b.join("dir")).unwrap();
        mutate(&b);
        // Keep the parent directory's time unless that is the point.
        if !what.starts_with("dir") {
            set_mtime(&b.join("dir"), m.mtime(), m.mtime_nsec());
        }
        let m = fs::symlink_metadata(a.as_path()).unwrap();
        set_mtime(&b, m.mtime(), m.mtime_nsec());
        let d = diff_trees(&a, &b);
        if expect.is_empty() {
            assert!(d.is_empty(), "{what}: {d:?}");
        } else {
            assert!(
                d.iter().any(|x| x.contains(expect)),
                "{what}: expected a difference mentioning {expect:?}, got {d:?}"
            );
        }
    }
    if is_root() {
        let (a, b) = (env.path("oa"), env.path("ob"));
        comparable_tree(&a);
        comparable_tree(&b);
        std::os::unix::fs::lchown(b.join("link"), Some(7), Some(7)).unwrap();
        assert!(diff_trees(&a, &b).iter().any(|x| x.contains("owner")));
    }
}

#[test]
fn restore_never_writes_through_symlinks_in_the_target() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("a/inner.txt"), "inner\n");
    write(src.join("f.txt"), "file\n");
    env.init(&[]);
    env.backup_ok(&[s(&src)]);

    // The target already has symlinks where the snapshot has a directory and a file.
    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    write(outside.join("victim.txt"), "keep me\n");
    let target = env.path("restore");
    fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("a")).unwrap();
    std::os::unix::fs::symlink(outside.join("victim.txt"), target.join("f.txt")).unwrap();

    env.cairn(["restore", &format!("latest:{}", s(&src)), "--target", s(&target)]).ok();
    assert!(!outside.join("inner.txt").exists(), "restore wrote through a directory symlink");
    assert_eq!(fs::read(outside.join("victim.txt")).unwrap(), b"keep me\n", "restore wrote through a file symlink");
    assert!(fs::symlink_metadata(target.join("a")).unwrap().is_dir());
    assert_eq!(fs::read(target.join("a/inner.txt")).unwrap(), b"inner\n");
    assert!(fs::symlink_metadata(target.join("f.txt")).unwrap().is_file());
    assert_eq!(fs::read(target.join("f.txt")).unwrap(), b"file\n");
}
