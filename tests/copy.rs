//! `cairn copy` between two local repositories with different passwords, with
//! and without shared chunker secrets.

mod common;

use common::*;

#[test]
fn copy_to_another_repository_restores_exactly_and_is_idempotent() {
    let env = TestEnv::new();
    env.init(&["--chunk-size", "16K,64K,256K"]);
    let src = env.path("src");
    write(src.join("a.bin"), Rng::new(1).bytes(1_500_000));
    write(src.join("dir/b.txt"), "hello\n".repeat(1000));
    std::os::unix::fs::symlink("a.bin", src.join("link")).unwrap();
    env.backup_ok(&[s(&src)]);
    write(src.join("dir/c.bin"), Rng::new(2).bytes(700_000));
    env.backup_ok(&[s(&src)]);
    let source = env.repo.clone();

    for (name, shared) in [("plain", false), ("shared", true)] {
        let dst = env.path(format!("dst-{name}"));
        let with = |args: &[&str]| {
            env.cmd(args)
                .env("CAIRN_REPOSITORY", &dst)
                .env("CAIRN_PASSWORD", "another password")
                .env("CAIRN_FROM_PASSWORD", PASSWORD)
                .run()
        };
        let mut init = vec!["init", "--kdf-memory", "1024", "--kdf-iterations", "1"];
        if shared {
            init.extend(["--copy-chunker-params", "--from-repo", s(&source)]);
        }
        with(&init).ok();

        let r = with(&["copy", "--from-repo", s(&source), "--json"]);
        r.ok();
        let v = r.json();
        assert_eq!(v["copied"].as_array().unwrap().len(), 2, "{v}");
        assert_eq!(v["rechunked"], !shared, "{v}");
        if shared {
            // Same trees: the copy's root tree is the source's.
            let src_snaps = env.snapshots(&[]);
            let dst_snaps = with(&["snapshots", "--json"]).json();
            let trees = |v: &serde_json::Value| {
                let mut t: Vec<String> =
                    v.as_array().unwrap().iter().map(|s| s["tree"].as_str().unwrap().to_string()).collect();
                t.sort();
                t
            };
            assert_eq!(trees(&serde_json::Value::Array(src_snaps)), trees(&dst_snaps));
        }

        // The copy restores byte for byte, and its own password opens it.
        let target = env.path(format!("restore-{name}"));
        with(&["restore", "latest", "--target", s(&target)]).ok();
        assert_same_tree(&src, &restored_path(&target, &src));
        with(&["check", "--read-data"]).ok();

        // Copying again adds nothing.
        let again = with(&["copy", "--from-repo", s(&source), "--json"]);
        again.ok();
        let v = again.json();
        assert!(v["copied"].as_array().unwrap().is_empty(), "{v}");
        assert_eq!(v["skipped"].as_array().unwrap().len(), 2, "{v}");
        assert_eq!(v["blobs_added"], 0, "{v}");

        // A wrong source password: exit 12.
        let bad = env
            .cmd(["copy", "--from-repo", s(&source)])
            .env("CAIRN_REPOSITORY", &dst)
            .env("CAIRN_PASSWORD", "another password")
            .env("CAIRN_FROM_PASSWORD", "wrong")
            .run();
        bad.expect_code(12);
    }
}
