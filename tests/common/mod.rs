//! Helpers for the integration tests: a temporary directory per test, a runner
//! for the real `cairn` binary, file-tree builders and a tree comparison that
//! looks at content and every piece of metadata cairn promises to keep.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

pub mod crash;
pub mod fidelity;

/// The password every test repository uses.
pub const PASSWORD: &str = "correct horse battery staple";

/// Cheap KDF settings so that every command opens the repository quickly.
pub const FAST_KDF: [&str; 4] = ["--kdf-memory", "1024", "--kdf-iterations", "1"];

/// The outcome of one `cairn` run.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
    /// Standard output as raw bytes.
    pub raw_stdout: Vec<u8>,
}

impl Run {
    /// Panics with the full output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "expected exit code {code}, got {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the command succeeded.
    #[track_caller]
    pub fn ok(&self) -> &Run {
        self.expect_code(0)
    }

    /// Standard output parsed as one JSON document.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!("stdout is not one JSON document ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr)
        })
    }

    /// Standard output parsed as one JSON document per line.
    #[track_caller]
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("line is not JSON ({e}): {l:?}\n{}", self.stdout))
            })
            .collect()
    }

    /// Standard output and standard error together (for "is X mentioned").
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// A `cairn` invocation being prepared.
pub struct CairnCmd {
    cmd: Command,
    stdin: Option<Vec<u8>>,
    args_text: String,
}

impl CairnCmd {
    /// Feeds `data` on standard input.
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Sets an environment variable for this run.
    pub fn env(mut self, k: &str, v: impl AsRef<OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    /// Removes an environment variable for this run.
    pub fn env_remove(mut self, k: &str) -> Self {
        self.cmd.env_remove(k);
        self
    }

    /// Starts the command with piped standard input, output and error, for tests
    /// that feed it while it runs; collect it with [`finish`].
    pub fn spawn(mut self) -> std::process::Child {
        self.cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        self.cmd.spawn().expect("cannot start cairn")
    }

    /// Runs the command and collects its output. Every run must end without a panic.
    #[track_caller]
    pub fn run(mut self) -> Run {
        self.cmd
            .stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.cmd.spawn().expect("cannot start cairn");
        let writer = self.stdin.take().map(|data| {
            let mut si = child.stdin.take().expect("piped stdin");
            std::thread::spawn(move || {
                let _ = si.write_all(&data);
            })
        });
        let out = child.wait_with_output().expect("cannot wait for cairn");
        if let Some(w) = writer {
            w.join().expect("stdin writer");
        }
        let r = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            raw_stdout: out.stdout,
        };
        assert!(
            !r.stderr.contains("panicked") && !r.stderr.contains("RUST_BACKTRACE"),
            "cairn {} panicked:\n{}",
            self.args_text,
            r.stderr
        );
        assert!(r.code >= 0, "cairn {} was killed by a signal:\n{}", self.args_text, r.stderr);
        r
    }
}

/// Waits for a child started by [`CairnCmd::spawn`] and checks, as [`CairnCmd::run`]
/// does, that it ended without a panic or a signal.
#[track_caller]
pub fn finish(child: std::process::Child) -> Run {
    let out = child.wait_with_output().expect("cannot wait for cairn");
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        raw_stdout: out.stdout,
    };
    assert!(!r.stderr.contains("panicked"), "cairn panicked:\n{}", r.stderr);
    assert!(r.code >= 0, "cairn was killed by a signal:\n{}", r.stderr);
    r
}

/// A test's private world: a temporary directory with a repository path inside.
pub struct TestEnv {
    /// The temporary directory (deleted on drop).
    pub dir: tempfile::TempDir,
    /// The repository location (`CAIRN_REPOSITORY` for every run).
    pub repo: PathBuf,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    /// A fresh temporary directory, on a file system that takes user extended
    /// attributes (see [`base_dir`]).
    pub fn new() -> TestEnv {
        let dir = tempfile::Builder::new().prefix("cairn-test-").tempdir_in(base_dir()).expect("temp dir");
        let repo = dir.path().join("repo");
        TestEnv { dir, repo }
    }

    /// A path inside the temporary directory.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A command for the real binary, with the repository and password set.
    pub fn cmd<I, S>(&self, args: I) -> CairnCmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd_program(cairn_bin(), args)
    }

    /// Like [`TestEnv::cmd`] but runs `program` (e.g. `setpriv ... cairn`) with
    /// the same environment.
    pub fn cmd_program<I, S>(&self, program: &str, args: I) -> CairnCmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(program);
        let mut args_text = String::new();
        for a in args {
            args_text.push_str(&a.as_ref().to_string_lossy());
            args_text.push(' ');
            cmd.arg(a);
        }
        cmd.env("CAIRN_REPOSITORY", &self.repo)
            .env("CAIRN_PASSWORD", PASSWORD)
            .env("CAIRN_CACHE_DIR", self.dir.path().join("cache"))
            .env_remove("CAIRN_PASSWORD_FILE")
            .env_remove("CAIRN_PASSWORD_COMMAND")
            .env_remove("RUST_BACKTRACE")
            .current_dir(self.dir.path());
        CairnCmd { cmd, stdin: None, args_text }
    }

    /// Runs `cairn ARGS...` and returns its exit code and output.
    #[track_caller]
    pub fn cairn<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd(args).run()
    }

    /// `cairn init` with fast KDF settings and `extra` options; must succeed.
    #[track_caller]
    pub fn init(&self, extra: &[&str]) {
        let mut args = vec!["init"];
        args.extend(FAST_KDF);
        args.extend(extra);
        self.cairn(&args).ok();
    }

    /// `cairn backup --json ARGS...`: the exit code and the summary object.
    #[track_caller]
    pub fn backup(&self, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["backup", "--json"];
        all.extend(args);
        let r = self.cairn(&all);
        assert!(r.code == 0 || r.code == 3, "backup {args:?} failed with {}:\n{}\n{}", r.code, r.stdout, r.stderr);
        let last = r
            .stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_else(|| panic!("backup printed nothing:\n{}", r.stderr));
        let v: Value =
            serde_json::from_str(last).unwrap_or_else(|e| panic!("backup summary is not JSON ({e}): {last}"));
        (r.code, v)
    }

    /// A backup that must succeed (exit 0); returns its summary.
    #[track_caller]
    pub fn backup_ok(&self, args: &[&str]) -> Value {
        let (code, v) = self.backup(args);
        assert_eq!(code, 0, "backup {args:?} exited {code}: {v}");
        v
    }

    /// `snapshots --json` as a list.
    #[track_caller]
    pub fn snapshots(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["snapshots", "--json"];
        args.extend(extra);
        let v = self.cairn(&args).ok().json();
        v.as_array().expect("snapshots --json is an array").clone()
    }

    /// A decrypted tree blob (`cat tree ID`).
    #[track_caller]
    pub fn tree(&self, id: &str) -> Value {
        self.cairn(["cat", "tree", id]).ok().json()
    }

    /// The tree node at absolute `path` in the snapshot `snap` (via `cat`).
    #[track_caller]
    pub fn node(&self, snap: &str, path: &Path) -> Value {
        let s = self.cairn(["cat", "snapshot", snap]).ok().json();
        let mut tree = s["tree"].as_str().expect("snapshot tree").to_string();
        let comps: Vec<&OsStr> = path
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        for (i, c) in comps.iter().enumerate() {
            let t = self.tree(&tree);
            let want = c.to_string_lossy();
            let n = t["entries"]
                .as_array()
                .expect("tree entries")
                .iter()
                .find(|e| e["name"].as_str() == Some(&want))
                .unwrap_or_else(|| panic!("{want} not in tree {tree}: {t}"))
                .clone();
            if i == comps.len() - 1 {
                return n;
            }
            tree = n["subtree"].as_str().expect("dir subtree").to_string();
        }
        panic!("empty path")
    }

    /// Total bytes of all files under the repository directory.
    pub fn repo_size(&self) -> u64 {
        dir_size(&self.repo)
    }

    /// The repository files of one kind directory (`index`, `snapshots`, ...).
    pub fn repo_files(&self, kind: &str) -> Vec<PathBuf> {
        let mut v = Vec::new();
        walk_files(&self.repo.join(kind), &mut v);
        v.retain(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit())
        });
        v.sort();
        v
    }
}

impl Drop for TestEnv {
    /// Makes every directory writable again so the temporary tree can be removed
    /// even when a test left read-only directories behind (matters without root).
    fn drop(&mut self) {
        fn open_up(p: &Path) {
            use std::os::unix::fs::PermissionsExt;
            let Ok(m) = fs::symlink_metadata(p) else { return };
            if m.is_dir() {
                let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
                for e in fs::read_dir(p).into_iter().flatten().flatten() {
                    open_up(&e.path());
                }
            }
        }
        open_up(self.dir.path());
    }
}

/// Where test directories go: the system temp directory if its file system
/// takes `user.*` extended attributes, else Cargo's per-target temp directory.
pub fn base_dir() -> &'static Path {
    static BASE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let tmp = std::env::temp_dir();
        let ok =
            tempfile::NamedTempFile::new_in(&tmp).is_ok_and(|f| xattr::set(f.path(), "user.cairn-probe", b"1").is_ok());
        if ok {
            tmp
        } else {
            let t = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
            fs::create_dir_all(&t).expect("CARGO_TARGET_TMPDIR");
            t
        }
    })
}

/// The binary under test.
pub fn cairn_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cairn")
}

/// Whether the tests run as root (ownership and device nodes are then tested).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A path as &str (test paths are ASCII).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Where `abs` (an absolute source path) lands when a whole snapshot is restored
/// into `target`.
pub fn restored_path(target: &Path, abs: &Path) -> PathBuf {
    target.join(abs.strip_prefix("/").expect("absolute path"))
}

fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk_files(&p, out),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
}

/// Sum of the sizes of all regular files below `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let mut v = Vec::new();
    walk_files(dir, &mut v);
    v.iter().map(|p| fs::symlink_metadata(p).map(|m| m.len()).unwrap_or(0)).sum()
}

/// A small deterministic pseudo-random generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (seed 0 is remapped).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Writes `data` to `path`, creating parent directories.
pub fn write(path: impl AsRef<Path>, data: impl AsRef<[u8]>) {
    let path = path.as_ref();
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Sets a file's (or, without following, a symlink's) access and modification times.
pub fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(sec, nsec as _);
    utimensat(nix::fcntl::AT_FDCWD, path, &t, &t, UtimensatFlags::NoFollowSymlink)
        .unwrap_or_else(|e| panic!("utimensat {}: {e}", path.display()));
}

/// Sets permission bits (including setuid, setgid, sticky).
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Everything compared about one tree entry.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryInfo {
    /// Full `st_mode`: type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Size (regular files only; 0 otherwise).
    pub size: u64,
    /// Link count (not for directories).
    pub nlink: u64,
    /// Device number (device nodes only).
    pub rdev: u64,
    /// Raw symlink target.
    pub target: Option<Vec<u8>>,
    /// Extended attributes (not for symlinks).
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Inode number (for hard-link grouping; not compared directly).
    pub ino: u64,
}

/// Reads the metadata of `p` without following symlinks.
pub fn entry_info(p: &Path) -> EntryInfo {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let ft = m.file_type();
    let mut xattrs = BTreeMap::new();
    if !ft.is_symlink() {
        for name in xattr::list(p).unwrap_or_else(|e| panic!("listxattr {}: {e}", p.display())) {
            let v =
                xattr::get(p, &name).unwrap_or_else(|e| panic!("getxattr {}: {e}", p.display())).unwrap_or_default();
            xattrs.insert(name.into_vec(), v);
        }
    }
    EntryInfo {
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        mtime: (m.mtime(), m.mtime_nsec()),
        size: if ft.is_file() { m.size() } else { 0 },
        nlink: if ft.is_dir() { 0 } else { m.nlink() },
        rdev: if ft.is_char_device() || ft.is_block_device() { m.rdev() } else { 0 },
        target: ft.is_symlink().then(|| fs::read_link(p).unwrap().into_os_string().into_vec()),
        xattrs,
        ino: m.ino(),
    }
}

/// Every entry below `root` (and `root` itself as the empty path), keyed by the
/// raw bytes of the path relative to `root`.
pub fn scan_tree(root: &Path) -> BTreeMap<Vec<u8>, EntryInfo> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), Vec::new())];
    while let Some((p, rel)) = stack.pop() {
        let info = entry_info(&p);
        let is_dir = info.mode & libc::S_IFMT == libc::S_IFDIR;
        out.insert(rel.clone(), info);
        if is_dir {
            for e in fs::read_dir(&p).unwrap_or_else(|e| panic!("readdir {}: {e}", p.display())) {
                let e = e.unwrap();
                let mut r = rel.clone();
                if !r.is_empty() {
                    r.push(b'/');
                }
                r.extend_from_slice(e.file_name().as_bytes());
                stack.push((e.path(), r));
            }
        }
    }
    out
}

/// Whether two files have identical content (streamed, so sparse giants are fine).
pub fn same_content(a: &Path, b: &Path) -> Result<(), String> {
    let mut fa = File::open(a).map_err(|e| format!("open {}: {e}", a.display()))?;
    let mut fb = File::open(b).map_err(|e| format!("open {}: {e}", b.display()))?;
    let (mut ba, mut bb) = (vec![0u8; 4 << 20], vec![0u8; 4 << 20]);
    let mut pos = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(|e| format!("read {}: {e}", a.display()))?;
        let nb = read_full(&mut fb, &mut bb).map_err(|e| format!("read {}: {e}", b.display()))?;
        if na != nb || ba[..na] != bb[..nb] {
            let first = ba[..na].iter().zip(&bb[..nb]).position(|(x, y)| x != y).unwrap_or(na.min(nb));
            return Err(format!("content differs at byte {} ({} vs {})", pos + first as u64, a.display(), b.display()));
        }
        if na == 0 {
            return Ok(());
        }
        pos += na as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// `root` joined with a relative path from [`scan_tree`] (empty: `root` itself).
fn join_rel(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() { root.to_path_buf() } else { root.join(OsStr::from_bytes(rel)) }
}

fn show(rel: &[u8]) -> String {
    if rel.is_empty() { ".".into() } else { format!("{:?}", String::from_utf8_lossy(rel)) }
}

/// Compares two trees: the same names, and for each entry type, permission bits
/// (with setuid/setgid/sticky), owner, mtime to the nanosecond, size, link count,
/// device number, symlink target bytes, extended attributes, content, and
/// hard-link grouping. Returns the differences (empty when identical).
pub fn diff_trees(a: &Path, b: &Path) -> Vec<String> {
    let ta = scan_tree(a);
    let tb = scan_tree(b);
    let mut diffs = Vec::new();
    for k in ta.keys() {
        if !tb.contains_key(k) {
            diffs.push(format!("{} is missing from the copy", show(k)));
        }
    }
    for k in tb.keys() {
        if !ta.contains_key(k) {
            diffs.push(format!("{} is extra in the copy", show(k)));
        }
    }
    let mut a_to_b: HashMap<u64, u64> = HashMap::new();
    let mut b_to_a: HashMap<u64, u64> = HashMap::new();
    for (k, ea) in &ta {
        let Some(eb) = tb.get(k) else { continue };
        let mut fields = Vec::new();
        if ea.mode != eb.mode {
            fields.push(format!("mode {:o} vs {:o}", ea.mode, eb.mode));
        }
        if (ea.uid, ea.gid) != (eb.uid, eb.gid) {
            fields.push(format!("owner {}:{} vs {}:{}", ea.uid, ea.gid, eb.uid, eb.gid));
        }
        if ea.mtime != eb.mtime {
            fields.push(format!("mtime {:?} vs {:?}", ea.mtime, eb.mtime));
        }
        if ea.size != eb.size {
            fields.push(format!("size {} vs {}", ea.size, eb.size));
        }
        if ea.nlink != eb.nlink {
            fields.push(format!("link count {} vs {}", ea.nlink, eb.nlink));
        }
        if ea.rdev != eb.rdev {
            fields.push(format!("rdev {:#x} vs {:#x}", ea.rdev, eb.rdev));
        }
        if ea.target != eb.target {
            fields.push(format!(
                "symlink target {:?} vs {:?}",
                ea.target.as_deref().map(String::from_utf8_lossy),
                eb.target.as_deref().map(String::from_utf8_lossy)
            ));
        }
        if ea.xattrs != eb.xattrs {
            fields.push(format!("xattrs {:?} vs {:?}", ea.xattrs, eb.xattrs));
        }
        let is_file = ea.mode & libc::S_IFMT == libc::S_IFREG;
        if is_file && eb.mode & libc::S_IFMT == libc::S_IFREG {
            let (pa, pb) = (join_rel(a, k), join_rel(b, k));
            if let Err(e) = same_content(&pa, &pb) {
                fields.push(e);
            }
            // Hard-link grouping: the inode mapping must be one-to-one.
            if *a_to_b.entry(ea.ino).or_insert(eb.ino) != eb.ino || *b_to_a.entry(eb.ino).or_insert(ea.ino) != ea.ino {
                fields.push("hard-link grouping differs".into());
            }
        }
        if !fields.is_empty() {
            diffs.push(format!("{}: {}", show(k), fields.join("; ")));
        }
    }
    diffs
}

/// Panics with every difference unless the trees are identical.
#[track_caller]
pub fn assert_same_tree(a: &Path, b: &Path) {
    let d = diff_trees(a, b);
    assert!(d.is_empty(), "{} and {} differ:\n  {}", a.display(), b.display(), d.join("\n  "));
}

/// Builds an OsString from raw bytes.
pub fn os(b: &[u8]) -> OsString {
    OsString::from_vec(b.to_vec())
}

/// The set of relative file paths (regular files only) below `root`.
pub fn file_set(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = scan_tree(root)
        .into_iter()
        .filter(|(_, e)| e.mode & libc::S_IFMT == libc::S_IFREG)
        .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
        .collect();
    v.sort();
    v
}

/// Finds where blob `id` is stored, from the decrypted index files:
/// (pack ID, offset, stored length).
pub fn locate_blob(env: &TestEnv, id: &str) -> (String, u64, u64) {
    for f in env.repo_files("index") {
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        let idx = env.cairn(["cat", "index", &name]).ok().json();
        for p in idx["packs"].as_array().expect("index packs") {
            for b in p["blobs"].as_array().expect("pack blobs") {
                if b["id"] == id {
                    return (
                        p["id"].as_str().unwrap().to_string(),
                        b["offset"].as_u64().unwrap(),
                        b["length"].as_u64().unwrap(),
                    );
                }
            }
        }
    }
    panic!("blob {id} is in no index file");
}

/// The pack file for a pack ID.
pub fn pack_path(env: &TestEnv, pack: &str) -> PathBuf {
    env.repo.join("data").join(&pack[..2]).join(pack)
}

/// Every file below a folder: (path relative to it, content), sorted.
pub type Files = Vec<(PathBuf, Vec<u8>)>;

/// The contents of every file below `dir`, by relative path.
pub fn contents(dir: &Path) -> Files {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path().strip_prefix(dir).unwrap().to_path_buf(), fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}
