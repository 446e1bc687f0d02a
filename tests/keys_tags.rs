//! End-to-end tests of `cairn key` (several passwords, removing keys, changing
//! the password) and `cairn tag` (rewriting snapshot manifests).

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

const NEW_PASSWORD: &str = "tr0ub4dor&3";

/// Runs `cairn ARGS` with `password` instead of the default one.
#[track_caller]
fn with_password(env: &TestEnv, password: &str, args: &[&str]) -> Run {
    env.cmd(args).env("CAIRN_PASSWORD", password).run()
}

/// `key list --json` opened with `password`.
#[track_caller]
fn keys(env: &TestEnv, password: &str) -> Vec<Value> {
    with_password(env, password, &["key", "list", "--json"]).ok().json().as_array().expect("key list array").clone()
}

/// The ID of the key marked current in a `key list --json` result; exactly one must be.
#[track_caller]
fn current(keys: &[Value]) -> String {
    let cur: Vec<&Value> = keys.iter().filter(|k| k["current"] == true).collect();
    assert_eq!(cur.len(), 1, "exactly one key must be current: {keys:?}");
    cur[0]["id"].as_str().unwrap().to_string()
}

/// Writes `password` (with a newline, as editors do) to a file and returns its path.
fn password_file(env: &TestEnv, name: &str, password: &str) -> String {
    let p = env.path(name);
    write(&p, format!("{password}\n"));
    s(&p).to_string()
}

/// A repository with one backup of a small tree; returns the source directory.
fn repo_with_backup(env: &TestEnv) -> std::path::PathBuf {
    let src = env.path("src");
    write(src.join("a.txt"), "alpha\n");
    write(src.join("sub/b.bin"), Rng::new(7).bytes(100_000));
    env.init(&[]);
    env.backup_ok(&[s(&src)]);
    src
}

#[test]
fn key_add_gives_a_second_password_and_list_marks_the_one_in_use() {
    let env = TestEnv::new();
    repo_with_backup(&env);
    let first = current(&keys(&env, PASSWORD));

    let file = password_file(&env, "newpw", NEW_PASSWORD);
    let mut args = vec!["key", "add", "--json", "--new-password-file", &file];
    args.extend(FAST_KDF);
    let added = env.cairn(&args).ok().json();
    assert_eq!(added["message_type"], "key_added");
    let second = added["id"].as_str().unwrap().to_string();
    assert_ne!(second, first);

    // Both passwords open the repository.
    assert_eq!(with_password(&env, PASSWORD, &["snapshots", "--json"]).ok().json().as_array().unwrap().len(), 1);
    assert_eq!(with_password(&env, NEW_PASSWORD, &["snapshots", "--json"]).ok().json().as_array().unwrap().len(), 1);

    // Two keys; the one in use is the one the password opened.
    let by_old = keys(&env, PASSWORD);
    assert_eq!(by_old.len(), 2, "{by_old:?}");
    assert_eq!(current(&by_old), first);
    assert_eq!(current(&keys(&env, NEW_PASSWORD)), second);
    let ids: BTreeSet<&str> = by_old.iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert_eq!(ids, BTreeSet::from([first.as_str(), second.as_str()]));
    for k in &by_old {
        assert_eq!(k["damaged"], false, "{k}");
        assert_eq!(k["kdf"]["memory_kib"], 1024, "{k}");
        assert_eq!(k["kdf"]["iterations"], 1, "{k}");
        assert!(k["created"].is_string() && k["hostname"].is_string() && k["username"].is_string(), "{k}");
    }

    // The text listing marks the key in use with `*`.
    let text = env.cairn(["key", "list"]).ok().stdout.clone();
    let starred: Vec<&str> = text.lines().filter(|l| l.starts_with('*')).collect();
    assert_eq!(starred.len(), 1, "{text}");
    assert!(starred[0].contains(&first[..8]), "{text}");
    assert!(text.contains(&second[..8]) && text.contains("2 keys"), "{text}");
}

#[test]
fn key_add_takes_the_new_password_from_the_environment_and_refuses_none_or_empty() {
    let env = TestEnv::new();
    repo_with_backup(&env);
    let mut args = vec!["key", "add"];
    args.extend(FAST_KDF);
    let r = env.cmd(&args).env("CAIRN_NEW_PASSWORD", NEW_PASSWORD).run();
    r.ok();
    assert!(r.stdout.contains("added key"), "{}", r.stdout);
    with_password(&env, NEW_PASSWORD, &["snapshots"]).ok();

    // No new password (standard input is not a terminal): refused, nothing added.
    let r = env.cmd(&args).env_remove("CAIRN_NEW_PASSWORD").run();
    r.expect_code(1);
    assert!(r.stderr.contains("no new password"), "{}", r.stderr);
    // Empty, from the environment or a file: refused.
    let r = env.cmd(&args).env("CAIRN_NEW_PASSWORD", "").run();
    r.expect_code(1);
    assert!(r.stderr.contains("empty password"), "{}", r.stderr);
    let empty = password_file(&env, "empty", "");
    let mut with_file = args.clone();
    with_file.extend(["--new-password-file", &empty]);
    env.cairn(&with_file).expect_code(1);
    assert_eq!(keys(&env, PASSWORD).len(), 2);
}

#[test]
fn key_remove_refuses_the_key_in_use_and_the_last_key_and_removes_others() {
    let env = TestEnv::new();
    repo_with_backup(&env);
    let first = current(&keys(&env, PASSWORD));

    // The only key cannot go.
    let r = env.cairn(["key", "remove", &first[..8]]);
    r.expect_code(1);
    assert!(r.stderr.contains("cannot remove the only key"), "{}", r.stderr);

    let file = password_file(&env, "newpw", NEW_PASSWORD);
    let mut args = vec!["key", "add", "--json", "--new-password-file", &file];
    args.extend(FAST_KDF);
    let second = env.cairn(&args).ok().json()["id"].as_str().unwrap().to_string();

    // The key in use cannot go, even with another one present.
    let r = env.cairn(["key", "remove", &first[..8]]);
    r.expect_code(1);
    assert!(
        r.stderr.contains("cannot remove the key in use; open the repository with another password to remove it"),
        "{}",
        r.stderr
    );
    assert_eq!(keys(&env, PASSWORD).len(), 2);

    // Another key goes; its password then no longer opens the repository.
    let r = env.cairn(["key", "remove", "--json", &second[..10]]).ok().json();
    assert_eq!(r["message_type"], "key_removed");
    assert_eq!(r["id"], second.as_str());
    let r = with_password(&env, NEW_PASSWORD, &["snapshots"]);
    r.expect_code(12);
    let left = keys(&env, PASSWORD);
    assert_eq!(left.len(), 1);
    assert_eq!(current(&left), first);

    // An unknown key is an error.
    env.cairn(["key", "remove", "ffffffffffff"]).expect_code(1);
    // And the last key still cannot go.
    env.cairn(["key", "remove", &first]).expect_code(1);
    env.cairn(["snapshots"]).ok();
}

#[test]
fn key_list_shows_damaged_key_files_without_failing() {
    let env = TestEnv::new();
    repo_with_backup(&env);
    // A file whose content does not match its name.
    let bogus = "ab".repeat(32);
    write(env.repo.join("keys").join(&bogus), "{\"not\":\"a key\"}");
    let list = keys(&env, PASSWORD);
    assert_eq!(list.len(), 2, "{list:?}");
    let damaged = list.iter().find(|k| k["id"] == bogus.as_str()).expect("damaged key listed");
    assert_eq!(damaged["damaged"], true);
    assert_eq!(damaged["current"], false);
    assert!(damaged["error"].as_str().is_some_and(|e| e.contains("does not match its name")), "{damaged}");
    let text = env.cairn(["key", "list"]).ok().stdout.clone();
    assert!(text.lines().any(|l| l.contains(&bogus[..8]) && l.contains("damaged")), "{text}");
    // The damaged file can be removed.
    env.cairn(["key", "remove", &bogus[..8]]).ok();
    assert_eq!(keys(&env, PASSWORD).len(), 1);
}

#[test]
fn key_passwd_replaces_the_password_and_the_data_still_restores() {
    let env = TestEnv::new();
    let src = repo_with_backup(&env);
    let old_key = current(&keys(&env, PASSWORD));

    let file = password_file(&env, "newpw", NEW_PASSWORD);
    let mut args = vec!["key", "passwd", "--json", "--new-password-file", &file];
    args.extend(FAST_KDF);
    let r = env.cairn(&args).ok().json();
    assert_eq!(r["message_type"], "password_changed");
    assert_eq!(r["removed"], old_key.as_str());
    let new_key = r["added"].as_str().unwrap().to_string();

    // The old password no longer opens the repository; the new one does.
    with_password(&env, PASSWORD, &["snapshots"]).expect_code(12);
    let list = keys(&env, NEW_PASSWORD);
    assert_eq!(list.len(), 1);
    assert_eq!(current(&list), new_key);

    let target = env.path("restore");
    with_password(&env, NEW_PASSWORD, &["restore", "latest", "--target", s(&target)]).ok();
    assert_same_tree(&src, &restored_path(&target, &src));
    with_password(&env, NEW_PASSWORD, &["check", "--read-data"]).ok();
}

#[test]
fn key_passwd_keeps_the_cost_of_the_key_in_use_unless_told() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("a"), "a");
    env.cairn(["init", "--kdf-memory", "2048", "--kdf-iterations", "2"]).ok();
    let r = env.cmd(["key", "passwd"]).env("CAIRN_NEW_PASSWORD", NEW_PASSWORD).run();
    r.ok();
    let list = keys(&env, NEW_PASSWORD);
    assert_eq!((list[0]["kdf"]["memory_kib"].as_u64(), list[0]["kdf"]["iterations"].as_u64()), (Some(2048), Some(2)));
    // Out-of-range cost: refused before anything is written.
    let r = env.cmd(["key", "add", "--kdf-memory", "4"]).env("CAIRN_PASSWORD", NEW_PASSWORD).run();
    r.expect_code(1);
    assert!(r.stderr.contains("--kdf-memory"), "{}", r.stderr);
    assert_eq!(keys(&env, NEW_PASSWORD).len(), 1);
}

// ---------------------------------------------------------------------------
// tag
// ---------------------------------------------------------------------------

/// All snapshots, by ID.
fn snaps(env: &TestEnv) -> Vec<Value> {
    env.snapshots(&[])
}

fn ids(list: &[Value]) -> BTreeSet<String> {
    list.iter().map(|v| v["id"].as_str().unwrap().to_string()).collect()
}

fn snap<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter().find(|v| v["id"] == id).unwrap_or_else(|| panic!("snapshot {id} not in {list:?}"))
}

fn tags_of(v: &Value) -> Vec<String> {
    v["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect()
}

/// `tag --json ARGS`: the list of changes.
#[track_caller]
fn tag(env: &TestEnv, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["tag", "--json"];
    all.extend(args);
    env.cairn(&all).ok().json().as_array().expect("tag --json array").clone()
}

#[test]
fn tag_add_remove_set_rewrite_one_snapshot_and_keep_its_history() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("a.txt"), "alpha\n");
    write(src.join("b.bin"), Rng::new(1).bytes(50_000));
    env.init(&[]);
    let a = env.backup_ok(&[s(&src), "--tag", "daily"])["snapshot_id"].as_str().unwrap().to_string();
    let b = env.backup_ok(&[s(&src)])["snapshot_id"].as_str().unwrap().to_string();

    let original_a = env.cairn(["cat", "snapshot", &a]).ok().json();

    // --add, by prefix: a new ID, the old file gone, `original` pointing at the first ID.
    let ch = tag(&env, &["--add", "keep,yearly", &a[..8]]);
    assert_eq!(ch.len(), 1, "{ch:?}");
    assert_eq!(ch[0]["old"], a.as_str());
    assert_eq!(ch[0]["tags"], serde_json::json!(["daily", "keep", "yearly"]));
    let a1 = ch[0]["new"].as_str().unwrap().to_string();
    assert_ne!(a1, a);
    let list = snaps(&env);
    assert_eq!(ids(&list), BTreeSet::from([a1.clone(), b.clone()]), "untouched snapshots keep their IDs");
    assert_eq!(snap(&list, &a1)["original"], a.as_str());
    assert!(snap(&list, &b).get("original").is_none(), "{}", snap(&list, &b));
    assert_eq!(env.repo_files("snapshots").len(), 2, "the old file was deleted");

    // --remove on the rewritten one: `original` still the very first ID.
    let ch = tag(&env, &["--remove", "daily", "--remove", "yearly", &a1]);
    let a2 = ch[0]["new"].as_str().unwrap().to_string();
    assert_eq!(ch[0]["old"], a1.as_str());
    let list = snaps(&env);
    assert_eq!(tags_of(snap(&list, &a2)), ["keep"]);
    assert_eq!(snap(&list, &a2)["original"], a.as_str());
    assert!(!ids(&list).contains(&a1));
    // Everything but the tags, the ID and `original` is as it was.
    let after = snap(&list, &a2);
    for k in ["time", "tree", "paths", "hostname", "username", "uid", "gid", "summary", "program_version"] {
        assert!(after.get(k).is_some(), "{k} missing: {after}");
        assert_eq!(after[k], original_a[k], "{k} changed");
    }

    // --set replaces all tags; `latest` works.
    let ch = tag(&env, &["--set", "x", "--set", "y,z", "latest"]);
    assert_eq!(ch.len(), 1);
    assert_eq!(ch[0]["old"], b.as_str());
    let b1 = ch[0]["new"].as_str().unwrap().to_string();
    let list = snaps(&env);
    assert_eq!(tags_of(snap(&list, &b1)), ["x", "y", "z"]);
    assert_eq!(snap(&list, &b1)["original"], b.as_str());
    assert!(ids(&list).contains(&a2), "the other snapshot keeps its ID");

    // A change that changes nothing rewrites nothing.
    assert!(tag(&env, &["--add", "x", "--remove", "nope", &b1]).is_empty());
    assert!(ids(&snaps(&env)).contains(&b1));
    let r = env.cairn(["tag", "--add", "x", &b1]).ok().stdout.clone();
    assert!(r.contains("changed 0 of 1"), "{r}");

    // --set "" clears every tag.
    let ch = tag(&env, &["--set", "", &b1]);
    assert_eq!(ch[0]["tags"], serde_json::json!([]));

    // Text output names old and new IDs.
    let r = env.cairn(["tag", "--add", "t", &a2[..8]]).ok().stdout.clone();
    assert!(r.contains(&format!("{} → ", &a2[..8])), "{r}");

    // The retagged snapshot still restores, and the repository checks clean.
    let target = env.path("restore");
    env.cairn(["restore", "latest", "--target", s(&target)]).ok();
    assert_same_tree(&src, &restored_path(&target, &src));
    env.cairn(["check", "--read-data"]).ok();
}

#[test]
fn tag_by_filters_changes_only_matching_snapshots() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("a.txt"), "alpha\n");
    env.init(&[]);
    let id = |v: Value| v["snapshot_id"].as_str().unwrap().to_string();
    let h1 = id(env.backup_ok(&[s(&src), "--host", "h1"]));
    let h2a = id(env.backup_ok(&[s(&src), "--host", "h2", "--tag", "old"]));
    let h2b = id(env.backup_ok(&[s(&src), "--host", "h2"]));

    let ch = tag(&env, &["--host", "h2", "--add", "offsite"]);
    let olds: BTreeSet<&str> = ch.iter().map(|c| c["old"].as_str().unwrap()).collect();
    assert_eq!(olds, BTreeSet::from([h2a.as_str(), h2b.as_str()]));
    let list = snaps(&env);
    assert!(ids(&list).contains(&h1), "the h1 snapshot keeps its ID");
    assert!(!ids(&list).contains(&h2a) && !ids(&list).contains(&h2b));

    // `snapshots --tag` sees the new tags.
    let tagged = env.snapshots(&["--tag", "offsite"]);
    assert_eq!(tagged.len(), 2);
    assert!(tagged.iter().all(|v| v["hostname"] == "h2"));
    let new_ids: BTreeSet<String> = ch.iter().map(|c| c["new"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids(&tagged), new_ids);

    // Filter by tag: only the one that had `old`; a second filter narrows further.
    let ch = tag(&env, &["--tag", "old", "--remove", "old"]);
    assert_eq!(ch.len(), 1);
    assert_eq!(snap(&snaps(&env), ch[0]["new"].as_str().unwrap())["original"], h2a.as_str());
    assert!(env.snapshots(&["--tag", "old"]).is_empty());

    // A filter that matches nothing changes nothing.
    assert!(tag(&env, &["--host", "nobody", "--add", "x"]).is_empty());
    // Named snapshots and filters together: only the named ones that match.
    let ch = tag(&env, &["--host", "h2", "--add", "both", &h1[..8]]);
    assert!(ch.is_empty(), "{ch:?}");
    assert!(ids(&snaps(&env)).contains(&h1));
    let ch = tag(&env, &["--host", "h1", "--add", "both", "latest"]);
    assert_eq!(ch.len(), 1);
    assert_eq!(ch[0]["old"], h1.as_str(), "`latest` with a filter is the newest that matches");
}

#[test]
fn tag_refuses_bad_requests() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("a.txt"), "alpha\n");
    env.init(&[]);
    let a = env.backup_ok(&[s(&src), "--tag", "t"])["snapshot_id"].as_str().unwrap().to_string();

    let r = env.cairn(["tag", "--set", "x", "--add", "y", &a]);
    r.expect_code(1);
    assert!(r.stderr.contains("--set cannot be combined with --add or --remove"), "{}", r.stderr);
    let r = env.cairn(["tag", "--set", "x", "--remove", "t", &a]);
    r.expect_code(1);
    // No snapshot and no filter.
    let r = env.cairn(["tag", "--add", "x"]);
    r.expect_code(1);
    assert!(r.stderr.contains("name the snapshots") && r.stderr.contains("--host"), "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "not one line: {}", r.stderr);
    // Nothing to change.
    let r = env.cairn(["tag", &a]);
    r.expect_code(1);
    assert!(r.stderr.contains("no tags to change"), "{}", r.stderr);
    // Adding and removing the same tag.
    env.cairn(["tag", "--add", "x", "--remove", "x", &a]).expect_code(1);
    // An unknown snapshot.
    env.cairn(["tag", "--add", "x", "ffffffff"]).expect_code(1);
    // None of these changed anything.
    assert_eq!(ids(&snaps(&env)), BTreeSet::from([a.clone()]));
    assert_eq!(tags_of(&snaps(&env)[0]), ["t"]);
}
