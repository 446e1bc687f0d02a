//! SFTP through the system OpenSSH client: `ssh HOST -s sftp`, so that
//! `~/.ssh/config`, keys, the agent, `known_hosts`, ProxyJump and ControlMaster
//! all apply. The SFTP protocol runs over the child's stdin/stdout
//! (`openssh-sftp-client`); ssh's stderr is kept to explain failures.
//!
//! Writes go to a temporary name in the target folder, are fsynced, then
//! hard-linked to the real name (`hardlink@openssh.com`, which never replaces an
//! existing file) and the temporary name removed; a server without the extension
//! gets a POSIX rename after checking that the name is free. Several connections
//! (`sftp.connections`) carry requests in parallel; a connection that drops is
//! replaced on next use, and the retry layer repeats the failed operation.

use std::collections::VecDeque;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use openssh_sftp_client::error::SftpErrorKind;
use openssh_sftp_client::{Error as SftpError, Sftp, SftpOptions as ClientOptions};
use tokio::io::{AsyncBufReadExt, AsyncSeekExt};

use super::{BResult, Backend, BackendError, FileInfo, FileKind, Handle};
use crate::id::Id;

/// Settings from `-o sftp.*` options.
#[derive(Debug, Clone)]
pub struct SftpOptions {
    /// Replaces the whole ssh command (`sftp.command`), split like a shell would.
    pub command: Option<String>,
    /// Extra ssh arguments before the host (`sftp.args`).
    pub args: Option<String>,
    /// Parallel ssh connections (`sftp.connections`, default 4).
    pub connections: usize,
    /// Longest time one request may take before the connection counts as hung
    /// (`sftp.timeout`, seconds, default 300).
    pub timeout: Duration,
}

impl Default for SftpOptions {
    fn default() -> Self {
        SftpOptions { command: None, args: None, connections: 4, timeout: Duration::from_secs(300) }
    }
}

/// Where the repository is: `[USER@]HOST`, an optional port and the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The user, if given.
    pub user: Option<String>,
    /// Host name, ssh alias or address (without brackets).
    pub host: String,
    /// The port, if given (URL form only).
    pub port: Option<u16>,
    /// Absolute, or relative to the login directory.
    pub path: String,
}

impl Target {
    /// Parses `[USER@]HOST:PATH` or `//[USER@]HOST[:PORT]/PATH` (after `sftp:`).
    pub fn parse(spec: &str) -> Result<Target, String> {
        let usage = "expected sftp:[USER@]HOST:/PATH or sftp://[USER@]HOST[:PORT]//PATH";
        let (authority, path, url) = if let Some(rest) = spec.strip_prefix("//") {
            let (auth, path) = rest.split_once('/').ok_or(usage)?;
            (auth, path.to_string(), true)
        } else {
            // Brackets keep an IPv6 address's colons apart from the path's.
            let split = if spec.contains('[') { spec.find("]:").map(|i| i + 1) } else { spec.find(':') };
            let i = split.ok_or(usage)?;
            (&spec[..i], spec[i + 1..].to_string(), false)
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or(usage)?;
            (h, after.strip_prefix(':'))
        } else if url {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        } else {
            (hostport, None)
        };
        let port = match port {
            Some(p) => Some(p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?),
            None => None,
        };
        let path = path.trim_end_matches('/').to_string();
        if host.is_empty() || path.is_empty() || user.as_deref() == Some("") {
            return Err(usage.into());
        }
        Ok(Target { user, host: host.to_string(), port, path })
    }
}

/// Splits a command line into words: whitespace separates, single and double
/// quotes group, a backslash escapes the next character (outside single quotes).
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let (mut words, mut cur, mut in_word) = (Vec::new(), String::new(), false);
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => cur.push(chars.next().ok_or("trailing backslash")?),
                        Some(c) => cur.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next().ok_or("trailing backslash")?);
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// One ssh process and the SFTP session over its pipes.
struct Conn {
    sftp: Arc<Sftp>,
    /// Killed when the connection is dropped.
    _child: tokio::process::Child,
    /// Set when a request failed in a way that means the connection is gone.
    dead: AtomicBool,
}

/// A repository on an SFTP server.
pub struct SftpBackend {
    target: Target,
    argv: Vec<String>,
    opts: SftpOptions,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    /// Whether any connection ever succeeded: until then, connection failures are
    /// final (a wrong host or key should fail at once, not after retries).
    connected: AtomicBool,
    /// The last lines ssh wrote to stderr, to explain failures.
    ssh_log: Arc<Mutex<VecDeque<String>>>,
}

fn permanent(op: &'static str, name: impl Into<String>, msg: impl Into<String>) -> BackendError {
    BackendError::Permanent { op, name: name.into(), msg: msg.into() }
}

fn transient(op: &'static str, name: impl Into<String>, msg: impl Into<String>) -> BackendError {
    BackendError::Transient { op, name: name.into(), msg: msg.into(), retry_after: None }
}

/// Whether an error means the connection is lost (rather than a refused request).
fn is_connection_error(e: &SftpError) -> bool {
    !matches!(e, SftpError::SftpError(..) | SftpError::UnsupportedExtension(_))
}

impl SftpBackend {
    /// Parses the location (after `sftp:`) and builds the ssh command.
    pub fn new(spec: &str, opts: SftpOptions) -> Result<SftpBackend, BackendError> {
        let target = Target::parse(spec).map_err(|m| permanent("open", format!("sftp:{spec}"), m))?;
        let bad = |m: String| permanent("open", "sftp", m);
        let argv = match &opts.command {
            Some(c) => split_words(c).map_err(|m| bad(format!("sftp.command: {m}")))?,
            None => {
                let mut a: Vec<String> = ["ssh", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                if let Some(p) = target.port {
                    a.extend(["-p".into(), p.to_string()]);
                }
                if let Some(u) = &target.user {
                    a.extend(["-l".into(), u.clone()]);
                }
                if let Some(extra) = &opts.args {
                    a.extend(split_words(extra).map_err(|m| bad(format!("sftp.args: {m}")))?);
                }
                a.extend([target.host.clone(), "-s".into(), "sftp".into()]);
                a
            }
        };
        if argv.is_empty() {
            return Err(bad("sftp.command is empty".into()));
        }
        let n = opts.connections.max(1);
        Ok(SftpBackend {
            target,
            argv,
            opts: SftpOptions { connections: n, ..opts },
            slots: (0..n).map(|_| tokio::sync::Mutex::new(None)).collect(),
            connected: AtomicBool::new(false),
            ssh_log: Arc::new(Mutex::new(VecDeque::new())),
        })
    }

    /// The ssh command that will run.
    pub fn command(&self) -> &[String] {
        &self.argv
    }

    /// ssh's last words, for an error message.
    fn ssh_said(&self) -> String {
        let log = self.ssh_log.lock().expect("poisoned");
        let lines: Vec<&str> = log.iter().map(String::as_str).filter(|l| !l.trim().is_empty()).collect();
        lines.join("; ")
    }

    /// Starts ssh and the SFTP session.
    async fn connect(&self) -> BResult<Conn> {
        let mut cmd = tokio::process::Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| permanent("connect", self.location(), format!("cannot run {:?}: {e}", self.argv[0])))?;
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::clone(&self.ssh_log);
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let mut log = log.lock().expect("poisoned");
                log.push_back(l);
                while log.len() > 8 {
                    log.pop_front();
                }
            }
        });
        let (stdin, stdout) = (child.stdin.take().expect("piped"), child.stdout.take().expect("piped"));
        let session = tokio::time::timeout(self.opts.timeout, Sftp::new(stdin, stdout, ClientOptions::new())).await;
        match session {
            Ok(Ok(sftp)) => {
                self.connected.store(true, Ordering::SeqCst);
                Ok(Conn { sftp: Arc::new(sftp), _child: child, dead: AtomicBool::new(false) })
            }
            Ok(Err(e)) => {
                // ssh has exited; give its stderr reader a moment to collect the reason.
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(self.connect_error(format!("{e}")))
            }
            Err(_) => Err(self.connect_error(format!("no SFTP session within {:?}", self.opts.timeout))),
        }
    }

    /// A failed connection, explained from ssh's stderr.
    fn connect_error(&self, detail: String) -> BackendError {
        let said = self.ssh_said();
        let lower = said.to_lowercase();
        let what = if lower.contains("permission denied") {
            "authentication refused (is the right key offered? see -o sftp.args='-i KEY')"
        } else if lower.contains("host key verification failed") || lower.contains("identification has changed") {
            "the server's host key is unknown or has changed (check known_hosts)"
        } else if lower.contains("could not resolve hostname") {
            "unknown host"
        } else if lower.contains("connection refused")
            || lower.contains("no route to host")
            || lower.contains("timed out")
            || lower.contains("network is unreachable")
        {
            "server unreachable"
        } else if lower.contains("subsystem request failed") {
            "the server does not offer SFTP"
        } else {
            "cannot connect"
        };
        let msg = if said.is_empty() { format!("{what} ({detail})") } else { format!("{what}: ssh: {said}") };
        // Once connected, a lost server may come back: let the retry layer try again.
        let fatal = !self.connected.load(Ordering::SeqCst)
            || matches!(what, "unknown host")
            || what.starts_with("authentication")
            || what.starts_with("the server's host key");
        if fatal { permanent("connect", self.location(), msg) } else { transient("connect", self.location(), msg) }
    }

    /// A live connection: the least busy one, or a new one while every live
    /// connection has a request in flight and a slot is free (so a command that
    /// does one thing at a time opens one connection, and a busy one up to
    /// `sftp.connections`). Dead connections are replaced.
    async fn conn(&self) -> BResult<Arc<Conn>> {
        loop {
            let (mut best, mut free, mut connecting) = (None::<Arc<Conn>>, None, None);
            for (i, slot) in self.slots.iter().enumerate() {
                let Ok(g) = slot.try_lock() else {
                    connecting.get_or_insert(i);
                    continue;
                };
                match g.as_ref() {
                    Some(c) if !c.dead.load(Ordering::SeqCst) => {
                        // Held by the slot and by each request in flight.
                        if best.as_ref().is_none_or(|b| Arc::strong_count(c) < Arc::strong_count(b)) {
                            best = Some(Arc::clone(c));
                        }
                    }
                    _ => {
                        free.get_or_insert(i);
                    }
                }
            }
            // `best` counts the slot, our clone and the requests in flight.
            let idle = best.as_ref().is_some_and(|b| Arc::strong_count(b) <= 2);
            if let Some(b) = best
                && (idle || free.is_none())
            {
                return Ok(b);
            }
            let Some(i) = free.or(connecting) else { continue };
            let mut slot = self.slots[i].lock().await;
            if let Some(c) = slot.as_ref()
                && !c.dead.load(Ordering::SeqCst)
            {
                // Connected by someone else meanwhile.
                return Ok(Arc::clone(c));
            }
            *slot = None;
            let c = Arc::new(self.connect().await?);
            *slot = Some(Arc::clone(&c));
            return Ok(c);
        }
    }

    /// Runs `f` on a connection with the request timeout; maps its error for `op`
    /// on `name`, and retires the connection if the error means it is gone.
    async fn run<T, F, Fut>(&self, op: &'static str, name: &str, f: F) -> BResult<T>
    where
        F: FnOnce(Arc<Sftp>) -> Fut,
        Fut: std::future::Future<Output = Result<T, SftpError>>,
    {
        let c = self.conn().await?;
        let r = tokio::time::timeout(self.opts.timeout, f(Arc::clone(&c.sftp))).await;
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if is_connection_error(&e) {
                    c.dead.store(true, Ordering::SeqCst);
                    let said = self.ssh_said();
                    let why = if said.is_empty() { e.to_string() } else { format!("{e}; ssh: {said}") };
                    return Err(transient(op, name, format!("connection lost: {why}")));
                }
                Err(map_error(op, name, e))
            }
            Err(_) => {
                c.dead.store(true, Ordering::SeqCst);
                Err(transient(op, name, format!("no reply within {:?}", self.opts.timeout)))
            }
        }
    }

    fn full(&self, rel: &str) -> PathBuf {
        Path::new(&self.target.path).join(rel)
    }
}

/// Maps a refused request (an SFTP status) for `op` on `name`.
fn map_error(op: &'static str, name: &str, e: SftpError) -> BackendError {
    match &e {
        SftpError::SftpError(SftpErrorKind::NoSuchFile, _) => BackendError::NotFound(name.to_string()),
        SftpError::SftpError(SftpErrorKind::PermDenied, _) => permanent(op, name, "permission denied"),
        SftpError::SftpError(kind, msg) => permanent(op, name, format!("{kind:?}: {}", msg.get().0)),
        _ => permanent(op, name, e.to_string()),
    }
}

fn is_failure(e: &SftpError) -> bool {
    matches!(e, SftpError::SftpError(SftpErrorKind::Failure, _))
}

fn is_missing(e: &SftpError) -> bool {
    matches!(e, SftpError::SftpError(SftpErrorKind::NoSuchFile, _))
}

/// Creates `dir` and its missing parents (an existing directory is fine).
async fn mkdir_all(sftp: &Sftp, dir: &Path) -> Result<(), SftpError> {
    let mut fs = sftp.fs();
    let mut missing = Vec::new();
    let mut d = dir.to_path_buf();
    loop {
        match fs.metadata(&d).await {
            Ok(_) => break,
            Err(e) if is_missing(&e) => {
                missing.push(d.clone());
                match d.parent() {
                    Some(p) if !p.as_os_str().is_empty() => d = p.to_path_buf(),
                    _ => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    for d in missing.into_iter().rev() {
        match fs.create_dir(&d).await {
            // Made meanwhile by another writer.
            Err(e)
                if is_failure(&e) && fs.metadata(&d).await.is_ok_and(|m| m.file_type().is_some_and(|t| t.is_dir())) => {
            }
            r => r?,
        }
    }
    Ok(())
}

/// What a write found.
enum Written {
    Stored,
    Exists,
}

async fn write_file(sftp: Arc<Sftp>, path: PathBuf, data: Bytes) -> Result<Written, SftpError> {
    let dir = path.parent().expect("repository files live in a folder").to_path_buf();
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd).map_err(|e| std::io::Error::other(e.to_string()))?;
    let tmp = dir.join(format!("{}{}", super::TEMP_PREFIX, hex::encode(rnd)));
    let file = match sftp.options().write(true).create_new(true).open(&tmp).await {
        Err(e) if is_missing(&e) => {
            mkdir_all(&sftp, &dir).await?;
            sftp.options().write(true).create_new(true).open(&tmp).await?
        }
        r => r?,
    };
    let mut fs = sftp.fs();
    let result = async {
        let mut keep = file.clone();
        // Pipelined writes without copying, several in flight, each at its own
        // offset; 255 KiB is OpenSSH's largest write (the client splits a piece
        // further for servers that take less).
        let piece = 255 << 10;
        let writes = (0..data.len()).step_by(piece).map(|off| {
            let (mut f, mut part) = (file.clone(), [data.slice(off..(off + piece).min(data.len()))]);
            async move {
                f.seek(std::io::SeekFrom::Start(off as u64)).await?;
                f.write_all_zero_copy(&mut part).await
            }
        });
        let written: Vec<Result<(), SftpError>> = futures_util::stream::iter(writes).buffered(16).collect().await;
        written.into_iter().collect::<Result<(), SftpError>>()?;
        drop(file);
        if sftp.support_fsync() {
            keep.sync_all().await?;
        }
        keep.close().await?;
        if sftp.support_hardlink() {
            match fs.hard_link(&tmp, &path).await {
                Ok(()) => Ok(Written::Stored),
                // OpenSSH reports EEXIST as a plain failure.
                Err(e) if is_failure(&e) && fs.metadata(&path).await.is_ok() => Ok(Written::Exists),
                Err(e) => Err(e),
            }
        } else if fs.metadata(&path).await.is_ok() {
            Ok(Written::Exists)
        } else {
            fs.rename(&tmp, &path).await.map(|()| Written::Stored)
        }
    }
    .await;
    match fs.remove_file(&tmp).await {
        Ok(()) => {}
        Err(e) if is_missing(&e) => {}
        Err(e) if result.is_ok() => return Err(e),
        Err(_) => {}
    }
    result
}

/// Reads `n` bytes at `off`; `None` if the file ends first.
async fn read_at(mut f: openssh_sftp_client::file::File, off: u64, n: usize) -> Result<Option<BytesMut>, SftpError> {
    f.seek(std::io::SeekFrom::Start(off)).await?;
    let mut buf = BytesMut::with_capacity(n);
    while buf.len() < n {
        let len = buf.len();
        match f.read(u32::try_from(n - len).unwrap_or(u32::MAX), buf.split_off(len)).await? {
            Some(b) => buf.unsplit(b),
            None => return Ok(None),
        }
    }
    Ok(Some(buf))
}

/// Reads a file or a range of it; `None` if the file is shorter than the range.
async fn read_file(sftp: Arc<Sftp>, path: PathBuf, range: Option<Range<u64>>) -> Result<Option<Bytes>, SftpError> {
    let mut f = sftp.open(&path).await?;
    let (start, len) = match &range {
        Some(r) => (r.start, r.end - r.start),
        None => (0, f.metadata().await?.len().unwrap_or(0)),
    };
    // Large reads go in pieces, several in flight.
    const PIECE: u64 = 1 << 20;
    let mut pieces = Vec::new();
    let mut off = start;
    while off < start + len {
        let n = PIECE.min(start + len - off);
        pieces.push(read_at(f.clone(), off, n as usize));
        off += n;
    }
    let parts: Vec<_> = futures_util::stream::iter(pieces).buffered(8).collect().await;
    let mut out = BytesMut::with_capacity(len as usize);
    for p in parts {
        match p? {
            Some(b) => out.extend_from_slice(&b),
            None => return Ok(None),
        }
    }
    f.close().await?;
    if range.is_some_and(|r| r.start == r.end) {
        // A zero-length range of an existing file: it must reach that far.
        let size = sftp.fs().metadata(&path).await?.len().unwrap_or(0);
        if size < start {
            return Ok(None);
        }
    }
    Ok(Some(out.freeze()))
}

async fn list_dir(sftp: Arc<Sftp>, dir: PathBuf) -> Result<Vec<FileInfo>, SftpError> {
    let mut fs = sftp.fs();
    let d = match fs.open_dir(&dir).await {
        Err(e) if is_missing(&e) => return Ok(Vec::new()),
        r => r?,
    };
    let entries = d.read_dir();
    tokio::pin!(entries);
    let mut out = Vec::new();
    while let Some(e) = entries.next().await {
        let e = e?;
        let Some(name) = e.filename().to_str() else { continue };
        let m = e.metadata();
        if Id::is_valid_name(name) && m.file_type().is_some_and(|t| t.is_file()) {
            out.push(FileInfo { name: name.to_string(), size: m.len().unwrap_or(0) });
        }
    }
    Ok(out)
}

#[async_trait]
impl Backend for SftpBackend {
    fn location(&self) -> String {
        let t = &self.target;
        let user = t.user.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
        match t.port {
            Some(p) => format!("sftp://{user}{}:{p}/{}", t.host, t.path),
            None => format!("sftp:{user}{}:{}", t.host, t.path),
        }
    }

    fn concurrency(&self) -> usize {
        self.opts.connections
    }

    async fn create(&self) -> BResult<()> {
        let root = PathBuf::from(&self.target.path);
        let name = self.target.path.clone();
        let r = self
            .run("create", &name, |sftp| async move {
                mkdir_all(&sftp, &root).await?;
                let paths: Vec<PathBuf> = super::layout_dirs().iter().map(|d| root.join(d)).collect();
                let made: Vec<Result<(), SftpError>> = futures_util::stream::iter(paths.into_iter().map(|p| {
                    let sftp = Arc::clone(&sftp);
                    async move { mkdir_all(&sftp, &p).await }
                }))
                .buffer_unordered(32)
                .collect()
                .await;
                made.into_iter().collect()
            })
            .await;
        match r {
            Err(BackendError::NotFound(n)) => Err(permanent("create", n, "cannot create the folder there")),
            r => r,
        }
    }

    async fn write(&self, h: &Handle, data: Bytes) -> BResult<()> {
        let (name, path) = (h.path(), self.full(&h.path()));
        let need = data.len() as u64;
        match self.run("write", &name, |sftp| write_file(sftp, path, data)).await {
            Ok(Written::Stored) => Ok(()),
            Ok(Written::Exists) => Err(BackendError::AlreadyExists(name)),
            // OpenSSH reports ENOSPC (like most errors) as a plain failure: ask the
            // file system how much room is left.
            Err(BackendError::Permanent { msg, .. }) if msg.starts_with("Failure") => {
                let root = PathBuf::from(&self.target.path);
                let free = self
                    .run("write", &name, |sftp| async move {
                        if !sftp.support_statvfs() {
                            return Ok(None);
                        }
                        let v = sftp.fs().statvfs(&root).await?;
                        Ok(Some(v.bavail.saturating_mul(v.frsize)))
                    })
                    .await
                    .ok()
                    .flatten();
                Err(match free {
                    Some(f) if f < need.saturating_add(1 << 20) => {
                        permanent("write", name, format!("the server's disk is full ({f} bytes free)"))
                    }
                    _ => permanent("write", name, format!("the server refused the write ({msg})")),
                })
            }
            Err(e) => Err(e),
        }
    }

    async fn read(&self, h: &Handle, range: Option<Range<u64>>) -> BResult<Bytes> {
        let (name, path) = (h.path(), self.full(&h.path()));
        if let Some(r) = &range
            && r.start > r.end
        {
            return Err(permanent("read", name, "reversed range"));
        }
        match self.run("read", &name, |sftp| read_file(sftp, path, range)).await? {
            Some(d) => Ok(d),
            None => Err(permanent("read", name, "range is beyond the end of the file")),
        }
    }

    async fn remove(&self, h: &Handle) -> BResult<()> {
        let (name, path) = (h.path(), self.full(&h.path()));
        self.run("remove", &name, |sftp| async move { sftp.fs().remove_file(&path).await }).await
    }

    async fn remove_stale_temporaries(&self, age: Duration) -> BResult<u64> {
        let root = PathBuf::from(&self.target.path);
        let dirs: Vec<PathBuf> =
            std::iter::once(root.clone()).chain(super::layout_dirs().iter().map(|d| root.join(d))).collect();
        let counts: Vec<BResult<u64>> = futures_util::stream::iter(dirs.into_iter().map(|dir| async move {
            self.run("clean", &dir.display().to_string(), |sftp| async move {
                let mut fs = sftp.fs();
                let d = match fs.open_dir(&dir).await {
                    Err(e) if is_missing(&e) => return Ok(0),
                    r => r?,
                };
                let entries = d.read_dir();
                tokio::pin!(entries);
                let mut stale = Vec::new();
                while let Some(e) = entries.next().await {
                    let e = e?;
                    let old = e
                        .metadata()
                        .modified()
                        .map(|t| t.as_system_time())
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|a| a > age);
                    if old && e.filename().to_string_lossy().starts_with(super::TEMP_PREFIX) {
                        stale.push(dir.join(e.filename()));
                    }
                }
                let mut n = 0;
                for p in stale {
                    if sftp.fs().remove_file(&p).await.is_ok() {
                        n += 1;
                    }
                }
                Ok(n)
            })
            .await
        }))
        .buffer_unordered(self.opts.connections * 4)
        .collect()
        .await;
        counts.into_iter().sum()
    }

    async fn list(&self, kind: FileKind) -> BResult<Vec<FileInfo>> {
        let dir = self.full(kind.dir());
        if kind != FileKind::Pack {
            return self.run("list", kind.dir(), |sftp| list_dir(sftp, dir)).await;
        }
        // 256 folders, listed over all connections at once.
        let lists: Vec<BResult<Vec<FileInfo>>> = futures_util::stream::iter((0..=255u8).map(|b| {
            let sub = dir.join(format!("{b:02x}"));
            async move { self.run("list", "data", |sftp| list_dir(sftp, sub)).await }
        }))
        .buffer_unordered(self.opts.connections * 4)
        .collect()
        .await;
        let mut out = Vec::new();
        for l in lists {
            out.extend(l?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(user: Option<&str>, host: &str, port: Option<u16>, path: &str) -> Target {
        Target { user: user.map(str::to_string), host: host.into(), port, path: path.into() }
    }

    #[test]
    fn parses_locations() {
        assert_eq!(Target::parse("me@host:/srv/repo").unwrap(), t(Some("me"), "host", None, "/srv/repo"));
        assert_eq!(Target::parse("host:backups/r").unwrap(), t(None, "host", None, "backups/r"));
        assert_eq!(Target::parse("//me@host:2222//srv/repo").unwrap(), t(Some("me"), "host", Some(2222), "/srv/repo"));
        assert_eq!(Target::parse("//host/rel/repo/").unwrap(), t(None, "host", None, "rel/repo"));
        assert_eq!(Target::parse("//[::1]:22//r").unwrap(), t(None, "::1", Some(22), "/r"));
        assert_eq!(Target::parse("u@[::1]:/r").unwrap(), t(Some("u"), "::1", None, "/r"));
        assert_eq!(Target::parse("a@b@host:/r").unwrap(), t(Some("a@b"), "host", None, "/r"));
        for bad in ["host", "host:", ":/r", "//host", "//host:x//r", "@host:/r"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn splits_words() {
        assert_eq!(
            split_words(r#"ssh -i "my key" -o 'A=b c' x\ y"#).unwrap(),
            ["ssh", "-i", "my key", "-o", "A=b c", "x y"]
        );
        assert_eq!(split_words("  a   b ").unwrap(), ["a", "b"]);
        assert_eq!(split_words("''").unwrap(), [""]);
        assert!(split_words("'open").is_err());
    }

    #[test]
    fn classifies_connection_failures_from_ssh_stderr() {
        let b = SftpBackend::new("host:/r", SftpOptions::default()).unwrap();
        let said = |lines: &[&str]| {
            let mut log = b.ssh_log.lock().unwrap();
            log.clear();
            log.extend(lines.iter().map(|l| l.to_string()));
        };
        let msg = |e: BackendError| (e.is_transient(), e.to_string());

        said(&["alice@host: Permission denied (publickey)."]);
        let (transient, m) = msg(b.connect_error("eof".into()));
        assert!(!transient && m.contains("authentication refused") && m.contains("Permission denied"), "{m}");
        said(&["Host key verification failed."]);
        assert!(msg(b.connect_error("eof".into())).1.contains("host key is unknown or has changed"));
        said(&["ssh: Could not resolve hostname nowhere: Name or service not known"]);
        assert!(msg(b.connect_error("eof".into())).1.contains("unknown host"));
        said(&["ssh: connect to host 127.0.0.1 port 1: Connection refused"]);
        let (transient, m) = msg(b.connect_error("eof".into()));
        assert!(!transient && m.contains("server unreachable"), "before any connection it is final: {m}");
        said(&[]);
        assert!(msg(b.connect_error("no SFTP session".into())).1.contains("cannot connect (no SFTP session)"));

        // Once a connection has worked, a lost server may come back: retried. A
        // refused key or an unknown host stay final.
        b.connected.store(true, Ordering::SeqCst);
        said(&["ssh: connect to host 127.0.0.1 port 22: Connection refused"]);
        assert!(b.connect_error("eof".into()).is_transient());
        said(&["alice@host: Permission denied (publickey)."]);
        assert!(!b.connect_error("eof".into()).is_transient());
        said(&["ssh: Could not resolve hostname nowhere: Name or service not known"]);
        assert!(!b.connect_error("eof".into()).is_transient());
    }

    #[test]
    fn builds_the_ssh_command() {
        let o = SftpOptions { args: Some("-i /k -o X=1".into()), ..SftpOptions::default() };
        let b = SftpBackend::new("//me@h:2222//r", o).unwrap();
        let cmd = b.command().join(" ");
        assert!(cmd.starts_with("ssh "), "{cmd}");
        assert!(cmd.ends_with("-p 2222 -l me -i /k -o X=1 h -s sftp"), "{cmd}");
        let o = SftpOptions { command: Some("my-ssh -x host -s sftp".into()), ..SftpOptions::default() };
        assert_eq!(SftpBackend::new("host:/r", o).unwrap().command(), ["my-ssh", "-x", "host", "-s", "sftp"]);
        assert_eq!(SftpBackend::new("h:/r", SftpOptions::default()).unwrap().location(), "sftp:h:/r");
    }
}
