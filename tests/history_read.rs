//! End-to-end tests of the read-only history commands: `diff` between two
//! snapshots, `find` across snapshots, and `dump` of a file or a directory as a
//! tar or zip stream.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};

use common::fidelity::stamp_tree;
use common::*;
use serde_json::Value;

/// The snapshot ID from a backup summary.
#[track_caller]
fn snap_id(v: &Value) -> String {
    v["snapshot_id"].as_str().unwrap_or_else(|| panic!("no snapshot_id in {v}")).to_string()
}

/// Runs `program args` with `input` on stdin; panics unless it succeeds.
#[track_caller]
fn run_with_stdin(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut si = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = si.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

// ---------------------------------------------------------------------------
// diff
// ---------------------------------------------------------------------------

/// Parses `diff` text output into (modifier, path) pairs, in order, leaving out
/// the summary.
fn diff_lines(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            let (m, p) = l.split_once(' ')?;
            (["+", "-", "M", "T", "U"].contains(&m) && p.starts_with('/')).then(|| (m.to_string(), p.to_string()))
        })
        .collect()
}

#[test]
fn diff_reports_added_removed_modified_type_and_metadata_changes() {
    let env = TestEnv::new();
    env.init(&[]);
    let src = env.path("src");
    let rng = &mut Rng::new(7);
    write(src.join("keep.txt"), "unchanged\n");
    write(src.join("remove.txt"), rng.bytes(111));
    write(src.join("modify.bin"), rng.bytes(3000));
    write(src.join("shrink.txt"), rng.bytes(1000));
    write(src.join("chmod.txt"), "mode changes\n");
    write(src.join("touch.txt"), "time changes\n");
    write(src.join("becomes_dir"), rng.bytes(100));
    write(src.join("olddir/a.txt"), rng.bytes(30));
    write(src.join("olddir/sub/b.txt"), rng.bytes(20));
    symlink("keep.txt", src.join("link")).unwrap();
    stamp_tree(&src, &Default::default(), &mut 0);
    let s1 = snap_id(&env.backup_ok(&[s(&src)]));

    fs::remove_file(src.join("remove.txt")).unwrap();
    let mut grown = fs::read(src.join("modify.bin")).unwrap();
    grown.extend(rng.bytes(2000));
    write(src.join("modify.bin"), &grown);
    write(src.join("shrink.txt"), rng.bytes(400));
    chmod(&src.join("chmod.txt"), 0o600);
    set_mtime(&src.join("touch.txt"), 1_600_000_000, 5);
    fs::remove_file(src.join("becomes_dir")).unwrap();
    write(src.join("becomes_dir/inner.txt"), rng.bytes(50));
    fs::remove_dir_all(src.join("olddir")).unwrap();
    write(src.join("newdir/c.txt"), rng.bytes(40));
    write(src.join("added.txt"), rng.bytes(70));
    fs::remove_file(src.join("link")).unwrap();
    symlink("touch.txt", src.join("link")).unwrap();
    set_mtime(&src, 1_700_000_000, 0);
    let s2 = snap_id(&env.backup_ok(&[s(&src)]));

    let p = |rel: &str| format!("{}/{rel}", s(&src));
    let expected: BTreeSet<(String, String)> = [
        ("-", p("remove.txt")),
        ("M", p("modify.bin")),
        ("M", p("shrink.txt")),
        ("T", p("becomes_dir/")),
        ("+", p("becomes_dir/inner.txt")),
        ("-", p("olddir/")),
        ("-", p("olddir/a.txt")),
        ("-", p("olddir/sub/")),
        ("-", p("olddir/sub/b.txt")),
        ("+", p("newdir/")),
        ("+", p("newdir/c.txt")),
        ("+", p("added.txt")),
        ("M", p("link")),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p))
    .collect();

    // Without --metadata: exactly the content changes, a directory before its contents.
    let r = env.cairn(["diff", &s1, &s2]);
    r.ok();
    let lines = diff_lines(&r.stdout);
    assert_eq!(lines.iter().cloned().collect::<BTreeSet<_>>(), expected, "{}", r.stdout);
    assert_eq!(lines.len(), expected.len(), "no path twice:\n{}", r.stdout);
    let pos = |m: &str, path: &str| lines.iter().position(|(a, b)| a == m && *b == p(path)).unwrap();
    assert!(pos("-", "olddir/") < pos("-", "olddir/sub/") && pos("-", "olddir/sub/") < pos("-", "olddir/sub/b.txt"));
    assert!(pos("T", "becomes_dir/") < pos("+", "becomes_dir/inner.txt"));
    assert!(r.stdout.contains("Added:") && r.stdout.contains("Removed:"), "{}", r.stdout);

    // With --metadata: also the mode and time changes, and the changed directory.
    // (Directories above the source, such as the temp dir, may change too.)
    let r = env.cairn(["diff", "--metadata", &s1, &s2]);
    r.ok();
    let mine: BTreeSet<_> =
        diff_lines(&r.stdout).into_iter().filter(|(_, path)| path.starts_with(&format!("{}/", s(&src)))).collect();
    let mut with_meta = expected.clone();
    for path in [p("chmod.txt"), p("touch.txt"), p("")] {
        with_meta.insert(("U".to_string(), path));
    }
    assert_eq!(mine, with_meta, "{}", r.stdout);

    // JSON: the same changes, and the summary counts and bytes.
    let v = env.cairn(["diff", "--json", &s1, &s2]).ok().json();
    let changes: BTreeSet<(String, String)> = v["changes"]
        .as_array()
        .expect("changes array")
        .iter()
        .map(|c| (c["modifier"].as_str().unwrap().to_string(), c["path"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(changes, expected);
    let t = v["changes"].as_array().unwrap().iter().find(|c| c["modifier"] == "T").unwrap();
    assert_eq!((t["type"].as_str(), t["old_type"].as_str()), (Some("dir"), Some("file")), "{t}");
    let sum = &v["summary"];
    let n = |k: &str| sum[k].as_u64().unwrap_or_else(|| panic!("summary.{k} missing: {sum}"));
    // Added: added.txt, newdir/c.txt, becomes_dir/inner.txt; removed: remove.txt,
    // olddir/a.txt, olddir/sub/b.txt and the file becomes_dir was.
    assert_eq!((n("files_added"), n("files_removed"), n("files_changed")), (3, 4, 2), "{sum}");
    assert_eq!((n("dirs_added"), n("dirs_removed")), (2, 2), "{sum}");
    assert_eq!((n("others_changed"), n("type_changed"), n("metadata_changed")), (1, 1, 0), "{sum}");
    assert_eq!(n("bytes_added"), 70 + 40 + 50 + 2000, "{sum}");
    assert_eq!(n("bytes_removed"), 111 + 30 + 20 + 100 + 600, "{sum}");

    // A snapshot compared with itself: nothing.
    let v = env.cairn(["diff", "--json", &s2, &s2]).ok().json();
    assert_eq!(v["changes"].as_array().map(Vec::len), Some(0), "{v}");
    assert_eq!(v["summary"]["bytes_added"], 0);
}

#[test]
fn diff_of_unknown_snapshot_fails() {
    let env = TestEnv::new();
    env.init(&[]);
    let src = env.path("src");
    write(src.join("f"), "x");
    let s1 = snap_id(&env.backup_ok(&[s(&src)]));
    let r = env.cairn(["diff", &s1, "deadbeef"]);
    r.expect_code(1);
    assert!(r.stderr.contains("deadbeef"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------
// find
// ---------------------------------------------------------------------------

/// `find --json ARGS`: snapshot ID → matched paths (relative to `base`).
#[track_caller]
fn find_json(env: &TestEnv, base: &Path, args: &[&str]) -> BTreeMap<String, Vec<String>> {
    let mut all = vec!["find", "--json"];
    all.extend(args);
    // Dates in --newest/--oldest are local: pin the zone so the bounds are known.
    let v = env.cmd(&all).env("TZ", "UTC").run().ok().json();
    v.as_array()
        .unwrap_or_else(|| panic!("find --json is not an array: {v}"))
        .iter()
        .map(|snap| {
            let id = snap["snapshot"].as_str().unwrap().to_string();
            let paths = snap["matches"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    let p = m["path"].as_str().unwrap();
                    p.strip_prefix(&format!("{}/", s(base))).unwrap_or(p).to_string()
                })
                .collect();
            (id, paths)
        })
        .collect()
}

#[test]
fn find_across_snapshots_with_globs_and_filters() {
    let env = TestEnv::new();
    env.init(&[]);
    let src = env.path("src");
    write(src.join("a/report.txt"), "first report\n");
    write(src.join("b/Notes.md"), "notes\n");
    write(src.join("a/c"), "a file named c\n");
    write(src.join("m/old/f.txt"), "moved later\n");
    let s1 = snap_id(&env.backup_ok(&["--time", "2024-01-10T12:00:00Z", s(&src)]));
    fs::remove_dir_all(src.join("b")).unwrap();
    // A renamed directory keeps its tree: the search must still look inside it
    // under its new name.
    fs::rename(src.join("m/old"), src.join("m/new")).unwrap();
    write(src.join("c/report.txt"), "second report, longer\n");
    let s2 = snap_id(&env.backup_ok(&["--time", "2024-02-10T12:00:00Z", s(&src)]));
    fs::remove_dir_all(src.join("a")).unwrap();
    write(src.join("d/other.bin"), "other\n");
    let s3 = snap_id(&env.backup_ok(&["--time", "2024-03-10T12:00:00Z", "--host", "elsewhere", s(&src)]));

    let m = |pairs: &[(&str, &[&str])]| -> BTreeMap<String, Vec<String>> {
        pairs.iter().map(|(id, ps)| (id.to_string(), ps.iter().map(|p| p.to_string()).collect())).collect()
    };
    // A name glob: a/report.txt is in the first two snapshots, c/report.txt in the last two.
    assert_eq!(
        find_json(&env, &src, &["report.*"]),
        m(&[(&s1, &["a/report.txt"]), (&s2, &["a/report.txt", "c/report.txt"]), (&s3, &["c/report.txt"])])
    );
    // A relative path glob matches at any depth; an absolute one is anchored.
    assert_eq!(find_json(&env, &src, &["a/*.txt"]), m(&[(&s1, &["a/report.txt"]), (&s2, &["a/report.txt"])]));
    let anchored = format!("{}/c/*", s(&src));
    assert_eq!(find_json(&env, &src, &[&anchored]), m(&[(&s2, &["c/report.txt"]), (&s3, &["c/report.txt"])]));
    assert!(find_json(&env, &src, &["/c/*"]).is_empty(), "a leading / anchors at the root");
    // A trailing / matches directories only.
    assert_eq!(find_json(&env, &src, &["c/"]), m(&[(&s2, &["c"]), (&s3, &["c"])]));
    assert_eq!(find_json(&env, &src, &["c"]), m(&[(&s1, &["a/c"]), (&s2, &["a/c", "c"]), (&s3, &["c"])]));
    // The same tree under another name: found by name and by its new path.
    let tree_of = |id: &str, rel: &str| env.node(id, &src.join(rel))["subtree"].clone();
    assert_eq!(tree_of(&s1, "m/old"), tree_of(&s2, "m/new"), "the renamed directory keeps its tree ID");
    assert_eq!(
        find_json(&env, &src, &["f.txt"]),
        m(&[(&s1, &["m/old/f.txt"]), (&s2, &["m/new/f.txt"]), (&s3, &["m/new/f.txt"])])
    );
    assert_eq!(find_json(&env, &src, &["new/*.txt"]), m(&[(&s2, &["m/new/f.txt"]), (&s3, &["m/new/f.txt"])]));
    // Several patterns: any of them.
    assert_eq!(find_json(&env, &src, &["*.bin", "Notes.md"]), m(&[(&s1, &["b/Notes.md"]), (&s3, &["d/other.bin"])]));

    // Case: exact by default, -i ignores it.
    let r = env.cairn(["find", "notes.md"]);
    r.ok();
    assert!(r.stderr.contains("no matches"), "{}", r.stderr);
    assert!(!r.stdout.contains("Notes.md"), "{}", r.stdout);
    assert_eq!(find_json(&env, &src, &["-i", "notes.MD"]), m(&[(&s1, &["b/Notes.md"])]));

    // --snapshot restricts (repeatable, prefixes and `latest` work).
    assert_eq!(find_json(&env, &src, &["report.txt", "--snapshot", &s2[..8]]).keys().collect::<Vec<_>>(), [&s2]);
    assert_eq!(
        find_json(&env, &src, &["report.txt", "-s", &s1, "-s", "latest"]).keys().cloned().collect::<BTreeSet<_>>(),
        [s1.clone(), s3.clone()].into_iter().collect()
    );
    // Time bounds: a date covers the whole day; a time is inclusive.
    let ids = |args: &[&str]| -> BTreeSet<String> {
        let mut a = vec!["report.txt"];
        a.extend(args);
        find_json(&env, &src, &a).into_keys().collect()
    };
    let set = |v: &[&String]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(ids(&["--newest", "2024-02-10"]), set(&[&s1, &s2]));
    assert_eq!(ids(&["--newest", "2024-02-10T12:00:00Z"]), set(&[&s1, &s2]));
    assert_eq!(ids(&["--newest", "2024-02-10T11:59:59Z"]), set(&[&s1]));
    assert_eq!(ids(&["--oldest", "2024-02-10"]), set(&[&s2, &s3]));
    assert_eq!(ids(&["--oldest", "2024-01-01", "--newest", "2024-01-31"]), set(&[&s1]));
    // Snapshot filters shared with `snapshots`.
    assert_eq!(ids(&["--host", "elsewhere"]), set(&[&s3]));
    let bad = env.cairn(["find", "x", "--newest", "last tuesday"]);
    bad.expect_code(1);
    assert!(bad.stderr.contains("--newest"), "{}", bad.stderr);

    // The JSON shape.
    let v = env.cairn(["find", "--json", "other.bin"]).ok().json();
    let one = &v.as_array().unwrap()[0];
    assert_eq!(one["snapshot"], s3);
    assert_eq!(one["hostname"], "elsewhere");
    assert!(one["time"].as_str().unwrap().starts_with("2024-03-10T12:00:00"), "{one}");
    let hit = &one["matches"][0];
    assert_eq!(hit["path"], format!("{}/d/other.bin", s(&src)));
    assert_eq!(hit["type"], "file");
    assert_eq!(hit["size"], 6);
    assert_eq!(hit["mode"], entry_info(&src.join("d/other.bin")).mode & 0o7777);
    assert!(hit["mtime"].as_str().is_some_and(|t| t.len() >= 19), "{hit}");

    // Text: a header per snapshot with matches, then the entries.
    let r = env.cairn(["find", "report.txt"]);
    r.ok();
    assert_eq!(r.stdout.matches("Found ").count(), 3, "{}", r.stdout);
    assert!(r.stdout.contains(&s2[..8]) && r.stdout.contains("elsewhere"), "{}", r.stdout);
    assert!(r.stdout.contains(&format!("{}/c/report.txt", s(&src))), "{}", r.stdout);
}

// ---------------------------------------------------------------------------
// dump
// ---------------------------------------------------------------------------

#[test]
fn dump_single_file_is_byte_identical() {
    let env = TestEnv::new();
    env.init(&["--chunk-size", "64K,256K,1M"]);
    let src = env.path("src");
    let data = Rng::new(11).bytes(3 << 20);
    write(src.join("big.bin"), &data);
    write(src.join("empty"), "");
    let id = snap_id(&env.backup_ok(&[s(&src)]));
    let big = format!("{}/big.bin", s(&src));
    let chunks = env.node(&id, Path::new(&big))["content"].as_array().unwrap().len();
    assert!(chunks > 3, "the file should span several chunks, has {chunks}");

    let r = env.cairn(["dump", &id, &big]);
    r.ok();
    assert!(r.raw_stdout == data, "dump differs from the file ({} vs {} bytes)", r.raw_stdout.len(), data.len());
    // The path without its leading / works too; an empty file is empty.
    let r = env.cairn(["dump", "latest", big.trim_start_matches('/')]);
    assert!(r.ok().raw_stdout == data);
    assert!(env.cairn(["dump", &id, &format!("{}/empty", s(&src))]).ok().raw_stdout.is_empty());

    // --target writes the file; --json reports what was written.
    let out = env.path("restored.bin");
    let v = env.cairn(["dump", "--json", &id, &big, "--target", s(&out)]).ok().json();
    assert!(fs::read(&out).unwrap() == data);
    assert_eq!((v["files"].as_u64(), v["bytes"].as_u64()), (Some(1), Some(data.len() as u64)), "{v}");
    assert_eq!(v["format"], "raw");
}

/// A tree with every kind of entry tar keeps: nested directories with their own
/// modes, an empty directory and file, multi-chunk content, symlinks (relative,
/// absolute, dangling), a hard-link pair, a FIFO, a long path, a non-UTF-8 name,
/// an extended attribute, and distinct nanosecond mtimes everywhere.
fn build_dump_tree(root: &Path) {
    let rng = &mut Rng::new(3);
    write(root.join("big.bin"), rng.bytes(700_000));
    write(root.join("empty"), "");
    write(root.join("script.sh"), "#!/bin/sh\necho hi\n");
    chmod(&root.join("script.sh"), 0o750);
    write(root.join("private"), "secret\n");
    chmod(&root.join("private"), 0o600);
    write(root.join("nested/deeper/leaf.txt"), "leaf\n");
    chmod(&root.join("nested/deeper"), 0o750);
    fs::create_dir_all(root.join("empty_dir")).unwrap();
    symlink("nested/deeper/leaf.txt", root.join("rel_link")).unwrap();
    symlink("/etc/hostname", root.join("abs_link")).unwrap();
    symlink("does/not/exist", root.join("dangling")).unwrap();
    write(root.join("hard_a"), "linked twice\n");
    fs::hard_link(root.join("hard_a"), root.join("nested/hard_b")).unwrap();
    nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o640)).unwrap();
    chmod(&root.join("fifo"), 0o640);
    let long = root.join("l".repeat(60)).join("m".repeat(60)).join("n".repeat(60));
    write(long, "a path longer than 100 bytes\n");
    write(root.join(os(b"caf\xe9")), "latin-1 name\n");
    write(root.join("with_xattr"), "has an attribute\n");
    xattr::set(root.join("with_xattr"), "user.comment", b"hello").unwrap();
    stamp_tree(root, &Default::default(), &mut 0);
}

#[test]
fn dump_directory_as_tar_unpacks_to_the_same_tree() {
    let env = TestEnv::new();
    env.init(&["--chunk-size", "64K,256K,1M"]);
    let base = env.path("base");
    build_dump_tree(&base.join("tree"));
    let id = snap_id(&env.backup_ok(&[s(&base)]));

    let r = env.cairn(["dump", &id, s(&base)]);
    r.ok();
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    let out = env.path("out");
    fs::create_dir(&out).unwrap();
    run_with_stdin("tar", &["-x", "--xattrs", "--xattrs-include=user.*", "-f", "-", "-C", s(&out)], &r.raw_stdout);
    // Names are relative to the dumped directory, which itself is not an entry.
    let listing = String::from_utf8_lossy(&run_with_stdin("tar", &["-t", "-f", "-"], &r.raw_stdout)).into_owned();
    assert!(listing.lines().all(|l| l.starts_with("tree/")), "{listing}");
    assert_same_tree(&base.join("tree"), &out.join("tree"));

    // The same through --target, and the whole snapshot with `/`.
    let file = env.path("all.tar");
    env.cairn(["dump", &id, "/", "--target", s(&file)]).ok();
    let listing = String::from_utf8_lossy(&run_with_stdin("tar", &["-t", "-f", s(&file)], b"")).into_owned();
    let want = format!("{}/tree/nested/deeper/leaf.txt", s(&base).trim_start_matches('/'));
    assert!(listing.lines().any(|l| l == want), "{want} not in\n{listing}");
}

#[test]
fn dump_directory_as_zip() {
    let env = TestEnv::new();
    env.init(&["--chunk-size", "64K,256K,1M"]);
    let base = env.path("base");
    let big = Rng::new(5).bytes(900_000);
    write(base.join("dir/big.bin"), &big);
    write(base.join("dir/sub/small.txt"), "small\n");
    chmod(&base.join("dir/sub/small.txt"), 0o640);
    symlink("sub/small.txt", base.join("dir/link")).unwrap();
    nix::unistd::mkfifo(&base.join("dir/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let id = snap_id(&env.backup_ok(&[s(&base)]));

    let zip = env.path("out.zip");
    let r = env.cairn(["dump", "--archive", "zip", &id, &format!("{}/dir", s(&base)), "--target", s(&zip)]);
    r.ok();
    assert!(r.stderr.contains("fifo") && r.stderr.contains("skipped"), "the FIFO is reported: {}", r.stderr);
    let script = r#"
import json, stat, struct, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
assert z.testzip() is None, "CRC error"
# Entries must follow each other exactly: local header, data, and a data
# descriptor where flag bit 3 promises one (unzip rejects overlaps).
raw = open(sys.argv[1], "rb").read()
infos = sorted(z.infolist(), key=lambda i: i.header_offset)
central = raw.rfind(b"PK\x05\x06")
central = struct.unpack("<I", raw[central + 16:central + 20])[0]
for n, i in enumerate(infos):
    o = i.header_offset
    flags, = struct.unpack("<H", raw[o + 6:o + 8])
    name_len, extra_len = struct.unpack("<HH", raw[o + 26:o + 30])
    end = o + 30 + name_len + extra_len + i.compress_size
    if flags & 8:
        assert raw[end:end + 4] == b"PK\x07\x08", "missing data descriptor after " + i.filename
        end += 24 if i.file_size >= 0xFFFFFFFF else 16
    nxt = infos[n + 1].header_offset if n + 1 < len(infos) else central
    assert end == nxt, "%s ends at %d, next part starts at %d" % (i.filename, end, nxt)
out = {}
for i in z.infolist():
    mode = i.external_attr >> 16
    out[i.filename] = {"mode": mode & 0o7777, "link": stat.S_ISLNK(mode), "dir": i.is_dir(),
                       "data": z.read(i).hex() if not i.is_dir() else ""}
print(json.dumps(out))
"#;
    let listing = Command::new("python3").args(["-c", script, s(&zip)]).output().expect("python3");
    assert!(listing.status.success(), "{}", String::from_utf8_lossy(&listing.stderr));
    let v: Value = serde_json::from_slice(&listing.stdout).unwrap();
    let names: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(names, ["big.bin", "link", "sub/", "sub/small.txt"].into_iter().collect());
    assert_eq!(v["big.bin"]["data"].as_str().unwrap(), hex(&big), "big.bin content");
    assert_eq!(v["sub/small.txt"]["data"].as_str().unwrap(), hex(b"small\n"));
    assert_eq!(v["sub/small.txt"]["mode"], 0o640);
    assert_eq!(v["sub/"]["dir"], true);
    assert_eq!(v["sub/"]["mode"], entry_info(&base.join("dir/sub")).mode & 0o777);
    assert_eq!(v["link"]["link"], true);
    assert_eq!(v["link"]["data"].as_str().unwrap(), hex(b"sub/small.txt"), "a symlink stores its target");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Reads a few bytes of `cairn ARGS` and closes the pipe: cairn must stop
/// quietly with exit code 0.
#[track_caller]
fn read_a_little_then_close(env: &TestEnv, args: &[&str]) {
    let mut child = env.cmd(args).spawn();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 10];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let r = finish(child);
    assert_eq!(r.code, 0, "exit code after the reader went away; stderr:\n{}", r.stderr);
    assert!(r.stderr.is_empty(), "no error text expected:\n{}", r.stderr);
}

#[test]
fn dump_to_a_closed_pipe_exits_quietly() {
    let env = TestEnv::new();
    env.init(&["--chunk-size", "64K,256K,1M"]);
    let src = env.path("src");
    write(src.join("big.bin"), Rng::new(9).bytes(4 << 20));
    write(src.join("more.bin"), Rng::new(10).bytes(2 << 20));
    let id = snap_id(&env.backup_ok(&[s(&src)]));
    read_a_little_then_close(&env, &["dump", &id, &format!("{}/big.bin", s(&src))]);
    read_a_little_then_close(&env, &["dump", &id, s(&src)]);
    read_a_little_then_close(&env, &["dump", "--archive", "zip", &id, s(&src)]);
}

#[test]
fn dump_of_a_missing_path_fails_clearly() {
    let env = TestEnv::new();
    env.init(&[]);
    let src = env.path("src");
    write(src.join("file"), "x");
    let id = snap_id(&env.backup_ok(&[s(&src)]));
    for missing in [format!("{}/nope", s(&src)), format!("{}/file/below", s(&src))] {
        let r = env.cairn(["dump", &id, &missing]);
        r.expect_code(1);
        assert!(r.stdout.is_empty(), "{}", r.stdout);
        let want = format!("{missing}: not found in snapshot {}", &id[..8]);
        assert!(r.stderr.contains(&want), "expected {want:?} in: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "one line: {}", r.stderr);
    }
}

#[test]
fn dump_with_a_damaged_chunk_fails_and_leaves_the_archive_unfinished() {
    use std::os::unix::fs::FileExt;
    let env = TestEnv::new();
    env.init(&["--chunk-size", "64K,256K,1M", "--compression", "off"]);
    let src = env.path("src");
    write(src.join("a.txt"), "fine\n");
    write(src.join("big.bin"), Rng::new(21).bytes(2 << 20));
    write(src.join("z.txt"), "after the damage\n");
    let id = snap_id(&env.backup_ok(&[s(&src)]));
    let node = env.node(&id, &src.join("big.bin"));
    let second = node["content"][1].as_str().unwrap().to_string();
    let (pack, offset, len) = locate_blob(&env, &second);
    let pack = pack_path(&env, &pack);
    let f = fs::OpenOptions::new().write(true).open(&pack).unwrap();
    f.write_all_at(b"garbage!", offset + len / 2).unwrap();

    for format in ["tar", "zip"] {
        let out = env.path(format!("out.{format}"));
        let r = env.cairn(["dump", "--archive", format, &id, s(&src), "--target", s(&out)]);
        r.expect_code(1);
        assert!(r.stderr.contains("damaged") && r.stderr.contains(&id[..8]), "{format}: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "one line: {}", r.stderr);
        // No trailer: the archive must not pass for a complete one.
        let check = match format {
            "tar" => Command::new("tar").args(["-t", "-f", s(&out)]).output().unwrap(),
            _ => Command::new("python3")
                .args(["-c", "import sys, zipfile; zipfile.ZipFile(sys.argv[1])", s(&out)])
                .output()
                .unwrap(),
        };
        assert!(!check.status.success(), "{format}: a damaged dump reads as a complete archive");
    }
    // The file itself, written as it is, stops with the same error.
    let r = env.cairn(["dump", &id, &format!("{}/big.bin", s(&src))]);
    r.expect_code(1);
    assert!(r.stderr.contains("damaged"), "{}", r.stderr);
}
