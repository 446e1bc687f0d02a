//! The SFTP backend against a real OpenSSH sshd on 127.0.0.1, started by
//! `scripts/services/sftp` from `.ci/test`, which exports the CAIRN_TEST_SFTP_*
//! variables. Without them these tests fail: they never skip.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use cairn::backend::retry::{RetryBackend, RetryOptions};
use cairn::backend::sftp::{SftpBackend, SftpOptions};
use common::*;

/// The test server's settings.
pub struct Server {
    pub user: String,
    pub port: String,
    pub key: String,
    pub known_hosts: String,
    pub ssh_config: String,
    pub root: PathBuf,
}

pub fn server() -> Server {
    let v = |k: &str| {
        std::env::var(k).ok().filter(|s| !s.is_empty()).unwrap_or_else(|| {
            panic!(
                "{k} is not set: the SFTP tests need the test sshd (run them through .ci/test, \
                 or eval \"$(scripts/services/sftp start DIR)\" first)"
            )
        })
    };
    Server {
        user: v("CAIRN_TEST_SFTP_USER"),
        port: v("CAIRN_TEST_SFTP_PORT"),
        key: v("CAIRN_TEST_SFTP_KEY"),
        known_hosts: v("CAIRN_TEST_SFTP_KNOWN_HOSTS"),
        ssh_config: v("CAIRN_TEST_SFTP_SSH_CONFIG"),
        root: PathBuf::from(v("CAIRN_TEST_SFTP_DIR")),
    }
}

impl Server {
    /// A fresh directory name under the server's root.
    fn unique(&self, tag: &str) -> PathBuf {
        let mut b = [0u8; 6];
        getrandom::fill(&mut b).unwrap();
        self.root.join(format!("{tag}-{}", hex::encode(b)))
    }

    /// ssh arguments that use only the test's key and known hosts.
    fn args(&self, key: &str, known_hosts: &str) -> String {
        format!(
            "-F /dev/null -i {key} -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes \
             -o StrictHostKeyChecking=yes -o UserKnownHostsFile={known_hosts}"
        )
    }

    /// The URL form of a repository location at `path`.
    fn url(&self, path: &std::path::Path) -> String {
        format!("sftp://{}@127.0.0.1:{}/{}", self.user, self.port, path.display())
    }
}

#[test]
fn sftp_passes_the_backend_conformance_suite() {
    let srv = server();
    let dir = srv.unique("conf");
    let spec = format!("//{}@127.0.0.1:{}/{}", srv.user, srv.port, dir.display());
    let opts = SftpOptions { args: Some(srv.args(&srv.key, &srv.known_hosts)), ..SftpOptions::default() };
    let b = SftpBackend::new(&spec, opts).unwrap();
    cairn::backend::conformance::run(Arc::new(RetryBackend::new(Arc::new(b), RetryOptions::default())));
    // Temporary upload names never outlive a write.
    let leftovers: Vec<_> = walk(&dir).into_iter().filter(|p| p.contains(".tmp-")).collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

#[test]
fn sftp_end_to_end_fidelity_backup_restore_check() {
    let srv = server();
    let env = TestEnv::new();
    let src = env.path("src");
    common::fidelity::build_fidelity_tree(&src);
    let dir = srv.unique("e2e");
    // The host-alias form, with the test's ssh_config.
    let repo = format!("sftp:cairn-test:{}", dir.display());
    let args = format!("sftp.args=-F {}", srv.ssh_config);
    let run = |extra: &[&str]| {
        let mut full = vec!["-r", repo.as_str(), "-o", args.as_str()];
        full.extend_from_slice(extra);
        env.cairn(full)
    };
    run(&["init", "--kdf-memory", "1024", "--kdf-iterations", "1", "--chunk-size", "64K,256K,1M", "--pack-size", "1"])
        .ok();
    assert!(dir.join("config").is_file(), "init wrote no config on the server");
    run(&["backup", s(&src)]).ok();
    let second = run(&["backup", s(&src), "--json"]);
    second.ok();
    assert_eq!(second.json()["files_read"], 0, "the unchanged re-backup over SFTP read files");
    let target = env.path("restore");
    run(&["restore", "latest", "--target", s(&target), "--verify"]).ok();
    let back = restored_path(&target, &src);
    assert_same_tree(&src, &back);
    let sparse = std::fs::metadata(back.join("sparse.img")).unwrap();
    assert!(std::os::unix::fs::MetadataExt::blocks(&sparse) * 512 < 64 << 20, "the sparse file came back dense");
    run(&["check", "--read-data"]).ok();
    assert!(walk(&dir).iter().all(|p| !p.contains(".tmp-")), "temporary files left behind");
}

#[test]
fn sftp_url_form_and_bad_connections_fail_clearly() {
    let srv = server();
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("a.txt"), "a\n");
    let dir = srv.unique("url");
    let repo = srv.url(&dir);
    let good = format!("sftp.args={}", srv.args(&srv.key, &srv.known_hosts));
    env.cairn(["-r", &repo, "-o", &good, "init", "--kdf-memory", "1024", "--kdf-iterations", "1"]).ok();
    env.cairn(["-r", &repo, "-o", &good, "backup", s(&src)]).ok();

    // A key the server does not know: authentication refused, exit 1, nothing written.
    let other = env.path("other_key");
    let k = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f", s(&other)])
        .status()
        .expect("ssh-keygen");
    assert!(k.success());
    let bad_key = format!("sftp.args={}", srv.args(s(&other), &srv.known_hosts));
    let fresh = srv.unique("refused");
    let r = env.cairn(["-r", &srv.url(&fresh), "-o", &bad_key, "init", "--kdf-memory", "1024"]);
    r.expect_code(1);
    assert!(r.stderr.contains("authentication refused"), "{}", r.stderr);
    assert!(r.stderr.contains("Permission denied"), "ssh's own words are kept: {}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "not one line: {}", r.stderr);
    assert!(!fresh.exists(), "a refused login wrote something");

    // An unknown host key (empty known_hosts, strict checking).
    let empty = env.path("empty_known_hosts");
    write(&empty, "");
    let r = env.cairn(["-r", &repo, "-o", &format!("sftp.args={}", srv.args(&srv.key, s(&empty))), "snapshots"]);
    r.expect_code(1);
    assert!(r.stderr.contains("host key"), "{}", r.stderr);

    // Nothing listening: unreachable, quickly.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nowhere = format!("sftp://{}@127.0.0.1:{closed}/{}", srv.user, dir.display());
    let start = std::time::Instant::now();
    let r = env.cairn(["-r", &nowhere, "-o", &good, "snapshots"]);
    r.expect_code(1);
    assert!(r.stderr.contains("unreachable"), "{}", r.stderr);
    assert!(start.elapsed() < std::time::Duration::from_secs(20), "took {:?}", start.elapsed());

    // A path that does not exist: no repository (exit 10).
    let r = env.cairn(["-r", &srv.url(&srv.unique("missing")), "-o", &good, "snapshots"]);
    r.expect_code(10);

    // A bad location.
    let r = env.cairn(["-r", "sftp:nohostpath", "snapshots"]);
    r.expect_code(1);
    assert!(r.stderr.contains("expected sftp:"), "{}", r.stderr);
}

#[test]
fn sftp_lists_a_folder_of_100_000_files() {
    use cairn::backend::{Backend, FileKind};
    let srv = server();
    let dir = srv.unique("many");
    // The server is this machine: make the files directly, then list them over SFTP.
    let snaps = dir.join("snapshots");
    std::fs::create_dir_all(&snaps).unwrap();
    for i in 0..100_000u64 {
        let name = cairn::id::Id::hash(&i.to_le_bytes()).to_hex();
        std::fs::File::create(snaps.join(name)).unwrap();
    }
    std::fs::File::create(snaps.join(".tmp-0123456789abcdef")).unwrap();
    let spec = format!("//{}@127.0.0.1:{}/{}", srv.user, srv.port, dir.display());
    let opts = SftpOptions { args: Some(srv.args(&srv.key, &srv.known_hosts)), ..SftpOptions::default() };
    let b = SftpBackend::new(&spec, opts).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let files = rt.block_on(b.list(FileKind::Snapshot)).unwrap();
    assert_eq!(files.len(), 100_000, "a temporary file was listed, or files were missed");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sftp_removes_stale_temporary_files_only() {
    use cairn::backend::Backend;
    let srv = server();
    let dir = srv.unique("temps");
    let spec = format!("//{}@127.0.0.1:{}/{}", srv.user, srv.port, dir.display());
    let opts = SftpOptions { args: Some(srv.args(&srv.key, &srv.known_hosts)), ..SftpOptions::default() };
    let b = SftpBackend::new(&spec, opts).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(b.create()).unwrap();
    // The server is this machine: plant the files directly.
    let old = dir.join("index/.tmp-0123456789abcdef");
    let fresh = dir.join("data/ab/.tmp-fedcba9876543210");
    write(&old, "stale");
    write(&fresh, "in progress");
    set_mtime(&old, chrono::Utc::now().timestamp() - 7200, 0);
    let n = rt.block_on(b.remove_stale_temporaries(std::time::Duration::from_secs(3600))).unwrap();
    assert_eq!(n, 1);
    assert!(!old.exists() && fresh.exists());
}
