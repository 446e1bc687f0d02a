//! The local cache of a remote repository (here over SFTP, against the test
//! sshd of `.ci/test`): index files, snapshots and tree packs are kept locally,
//! used only while they match their names, and dropped when the repository no
//! longer has them.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn var(k: &str) -> String {
    std::env::var(k)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("{k} is not set: the cache tests need the test sshd (run them through .ci/test)"))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn remote_repository_cache_is_used_verified_and_pruned() {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    let server_dir = PathBuf::from(var("CAIRN_TEST_SFTP_DIR")).join(format!("cache-{}", hex::encode(b)));
    let repo = format!("sftp:cairn-test:{}", server_dir.display());
    let args = format!("sftp.args=-F {}", var("CAIRN_TEST_SFTP_SSH_CONFIG"));
    let env = TestEnv::new();
    let run = |extra: &[&str]| {
        let mut full = vec!["-r", repo.as_str(), "-o", args.as_str()];
        full.extend_from_slice(extra);
        env.cairn(full)
    };
    run(&["init", "--kdf-memory", "1024", "--kdf-iterations", "1"]).ok();
    let src = env.path("src");
    write(src.join("a.txt"), "first\n");
    write(src.join("d/b.bin"), Rng::new(4).bytes(300_000));
    run(&["backup", s(&src)]).ok();
    let id = run(&["cat", "config"]).json()["id"].as_str().unwrap().to_string();
    let cache = env.path("cache").join(&id);
    assert!(env.path("cache/CACHEDIR.TAG").is_file());

    // The backup's own index file and snapshot are cached as written.
    let cached = |kind: &str| files(&cache.join(kind));
    assert_eq!(cached("index").len(), 1, "{:?}", files(&cache));
    assert_eq!(cached("snapshots").len(), 1);
    // Listing the snapshot's files caches its tree pack.
    run(&["ls", "-R", "latest"]).ok();
    let tree_packs = cached("data");
    assert_eq!(tree_packs.len(), 1, "{:?}", files(&cache));
    for f in cached("index").iter().chain(&cached("snapshots")).chain(&tree_packs) {
        let rel = f.strip_prefix(&cache).unwrap();
        assert_eq!(std::fs::read(f).unwrap(), std::fs::read(server_dir.join(rel)).unwrap(), "{rel:?} differs");
    }

    // The cached tree pack is what is read: damage the server's copy (same size);
    // with the cache `ls` still works, without it the damage shows.
    let rel = tree_packs[0].strip_prefix(&cache).unwrap().to_path_buf();
    let server_pack = server_dir.join(&rel);
    let good = std::fs::read(&server_pack).unwrap();
    let mut bad = good.clone();
    for b in bad.iter_mut().take(64) {
        *b ^= 0xff;
    }
    std::fs::write(&server_pack, &bad).unwrap();
    let ls = run(&["ls", "-R", "latest"]);
    ls.ok();
    assert!(ls.stdout.contains("b.bin"), "{}", ls.stdout);
    run(&["--no-cache", "ls", "-R", "latest"]).expect_code(1);
    std::fs::write(&server_pack, &good).unwrap();

    // A damaged cached file is not used: it is fetched again and repaired.
    for kind in ["index", "snapshots"] {
        let f = &cached(kind)[0];
        std::fs::write(f, b"garbage").unwrap();
        let ls = run(&["ls", "-R", "latest"]);
        ls.ok();
        assert!(ls.stdout.contains("b.bin"), "{}", ls.stdout);
        let rel = f.strip_prefix(&cache).unwrap();
        assert_eq!(std::fs::read(f).unwrap(), std::fs::read(server_dir.join(rel)).unwrap(), "{kind} not repaired");
    }

    // After forget and prune, what the repository no longer has leaves the cache.
    write(src.join("a.txt"), "second\n");
    run(&["backup", s(&src)]).ok();
    run(&["forget", "--keep-last", "1", "--prune", "--max-unused", "0%"]).ok();
    run(&["ls", "-R", "latest"]).ok();
    let server_names = |kind: &str| -> Vec<String> {
        files(&server_dir.join(kind)).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
    };
    for kind in ["index", "snapshots", "data"] {
        let have = server_names(kind);
        for f in cached(kind) {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            assert!(have.contains(&name), "{kind}/{name} is cached but gone from the repository");
        }
    }
    assert_eq!(cached("snapshots").len(), 1);
    run(&["check", "--read-data"]).ok();
}
