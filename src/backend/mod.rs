//! Storage backends: opaque, immutable bytes under names. Backends never see
//! plaintext and know nothing of packs, indexes or encryption.
//!
//! The trait is small on purpose: every backend maps its native errors once into
//! [`BackendError`], writes atomically and never overwrites an existing name.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::id::Id;

pub mod conformance;
pub mod faults;
pub mod local;
pub mod mem;
pub mod retry;
pub mod sftp;
pub mod swift;

/// The kinds of files in a repository, each in its own folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    /// The single `config` file.
    Config,
    /// `keys/`: password-wrapped master keys.
    Key,
    /// `snapshots/`: snapshot manifests.
    Snapshot,
    /// `index/`: blob locations.
    Index,
    /// `data/XX/`: pack files.
    Pack,
    /// `locks/`: writer leases.
    Lock,
}

impl FileKind {
    /// The folder holding files of this kind (empty for the config).
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Config => "",
            FileKind::Key => "keys",
            FileKind::Snapshot => "snapshots",
            FileKind::Index => "index",
            FileKind::Pack => "data",
            FileKind::Lock => "locks",
        }
    }

    /// Every kind that lives in a folder.
    pub const LISTABLE: [FileKind; 5] =
        [FileKind::Key, FileKind::Snapshot, FileKind::Index, FileKind::Pack, FileKind::Lock];
}

/// A file in the repository: its kind and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle {
    /// The kind, which picks the folder.
    pub kind: FileKind,
    /// The name within the folder ("config" for the config).
    pub name: String,
}

impl Handle {
    /// The repository's config file.
    pub fn config() -> Handle {
        Handle { kind: FileKind::Config, name: "config".into() }
    }

    /// A file named by an ID.
    pub fn id(kind: FileKind, id: &Id) -> Handle {
        Handle { kind, name: id.to_hex() }
    }

    /// The path relative to the repository root, with `/` separators.
    /// Packs fan out into 256 folders by the first two hex digits of the name.
    pub fn path(&self) -> String {
        match self.kind {
            FileKind::Config => self.name.clone(),
            FileKind::Pack => format!("data/{}/{}", &self.name[..2.min(self.name.len())], self.name),
            k => format!("{}/{}", k.dir(), self.name),
        }
    }
}

impl std::fmt::Display for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path())
    }
}

/// Every folder a new repository needs, relative to the root.
pub fn layout_dirs() -> Vec<String> {
    let mut dirs: Vec<String> = FileKind::LISTABLE.iter().map(|k| k.dir().to_string()).collect();
    dirs.extend((0..=255u8).map(|b| format!("data/{b:02x}")));
    dirs
}

/// A file found by [`Backend::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Its name (an ID in hex for every listable kind).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Errors every backend maps its native errors into.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The file does not exist.
    #[error("{0}: not found")]
    NotFound(String),
    /// A write named a file that already exists.
    #[error("{0}: already exists")]
    AlreadyExists(String),
    /// A failure that may go away if retried (network, timeouts, 5xx).
    #[error("{op} {name}: {msg} (temporary failure)")]
    Transient {
        /// The operation, e.g. "write".
        op: &'static str,
        /// The file or location concerned.
        name: String,
        /// What went wrong.
        msg: String,
        /// How long the server asked us to wait before trying again (`Retry-After`).
        retry_after: Option<std::time::Duration>,
    },
    /// A failure that retrying will not fix (permissions, disk full, bad config).
    #[error("{op} {name}: {msg}")]
    Permanent {
        /// The operation, e.g. "write".
        op: &'static str,
        /// The file or location concerned.
        name: String,
        /// What went wrong.
        msg: String,
    },
}

impl BackendError {
    /// Maps an I/O error for operation `op` on `name`.
    pub fn from_io(op: &'static str, name: impl Into<String>, e: std::io::Error) -> BackendError {
        use std::io::ErrorKind::*;
        let name = name.into();
        match e.kind() {
            NotFound => BackendError::NotFound(name),
            AlreadyExists => BackendError::AlreadyExists(name),
            Interrupted | TimedOut | ConnectionReset | ConnectionAborted | BrokenPipe | WouldBlock => {
                BackendError::Transient { op, name, msg: e.to_string(), retry_after: None }
            }
            _ => BackendError::Permanent { op, name, msg: e.to_string() },
        }
    }

    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, BackendError::Transient { .. })
    }

    /// Whether the error says the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound(_))
    }
}

/// Result of backend operations.
pub type BResult<T> = std::result::Result<T, BackendError>;

/// A storage backend. All methods may be called concurrently.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// A human-readable location, e.g. `local:/srv/repo`.
    fn location(&self) -> String;

    /// How many requests it is worth having in flight at once.
    fn concurrency(&self) -> usize {
        4
    }

    /// Creates the folder layout of a new repository (idempotent).
    async fn create(&self) -> BResult<()>;

    /// Stores `data` under `h` atomically and durably. Fails with
    /// [`BackendError::AlreadyExists`] if the name exists.
    async fn write(&self, h: &Handle, data: Bytes) -> BResult<()>;

    /// Reads a whole file, or the byte range `range` of it.
    async fn read(&self, h: &Handle, range: Option<Range<u64>>) -> BResult<Bytes>;

    /// Removes a file.
    async fn remove(&self, h: &Handle) -> BResult<()>;

    /// Lists the files of a kind with well-formed names (IDs), with their sizes.
    async fn list(&self, kind: FileKind) -> BResult<Vec<FileInfo>>;

    /// Removes temporary files (`.tmp-*`) older than `age` that interrupted
    /// writes left behind; returns how many. Backends whose writes leave no
    /// temporary files (Swift) keep this default.
    async fn remove_stale_temporaries(&self, _age: std::time::Duration) -> BResult<u64> {
        Ok(0)
    }
}

/// The prefix of the temporary names that local and SFTP writes use.
pub const TEMP_PREFIX: &str = ".tmp-";

/// A shared backend.
pub type DynBackend = Arc<dyn Backend>;

/// Opens the backend for a repository location: a path, `local:PATH`,
/// `swift:CONTAINER[:/PREFIX]`, `sftp:[USER@]HOST:PATH` or
/// `sftp://[USER@]HOST[:PORT]/PATH`. `options` are `-o KEY=VALUE` settings.
pub fn open(location: &str, options: &[(String, String)]) -> crate::Result<DynBackend> {
    let bad = |k: &str, v: &str| crate::Error::InvalidArgument(format!("option {k}={v:?} is not valid"));
    let mut swift = swift::SwiftOptions::default();
    let mut retry = retry::RetryOptions::default();
    let mut sftp = sftp::SftpOptions::default();
    for (k, v) in options {
        match k.as_str() {
            "swift.connections" => swift.connections = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| bad(k, v))?,
            "swift.storage-policy" => swift.storage_policy = Some(v.clone()),
            "swift.page-limit" => {
                swift.page_limit = v.parse().ok().filter(|n| (1..=10_000).contains(n)).ok_or_else(|| bad(k, v))?
            }
            "sftp.command" => sftp.command = Some(v.clone()),
            "sftp.args" => sftp.args = Some(v.clone()),
            "sftp.connections" => {
                sftp.connections = v.parse().ok().filter(|n| (1..=64).contains(n)).ok_or_else(|| bad(k, v))?
            }
            "sftp.timeout" => {
                let secs: f64 = v.parse().map_err(|_| bad(k, v))?;
                sftp.timeout = std::time::Duration::try_from_secs_f64(secs)
                    .ok()
                    .filter(|d| !d.is_zero() && *d <= std::time::Duration::from_secs(86_400))
                    .ok_or_else(|| bad(k, v))?;
            }
            "retry.attempts" => retry.attempts = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| bad(k, v))?,
            "retry.max-delay" => {
                let secs: f64 = v.parse().map_err(|_| bad(k, v))?;
                retry.max_delay = std::time::Duration::try_from_secs_f64(secs)
                    .ok()
                    .filter(|d| *d <= std::time::Duration::from_secs(3600))
                    .ok_or_else(|| bad(k, v))?;
            }
            _ => return Err(crate::Error::InvalidArgument(format!("unknown option {k:?}"))),
        }
    }
    // Test-only fault injection goes below the retry layer, which it exercises;
    // a local directory then gets one too, as remote storage would have.
    let faults = match std::env::var(faults::ENV) {
        Ok(v) if !v.is_empty() => Some(faults::Faults::parse(&v)?),
        _ => None,
    };
    let wrap = |b: DynBackend, retried: bool| -> DynBackend {
        let b: DynBackend = match &faults {
            Some(f) => Arc::new(faults::FaultBackend::new(b, f.clone())),
            None => b,
        };
        if retried || faults.is_some() { Arc::new(retry::RetryBackend::new(b, retry)) } else { b }
    };
    if let Some(rest) = location.strip_prefix("local:") {
        return Ok(wrap(Arc::new(local::LocalBackend::new(rest)), false));
    }
    if let Some(spec) = location.strip_prefix("swift:") {
        return Ok(wrap(Arc::new(swift::SwiftBackend::from_env(spec, swift)?), true));
    }
    if let Some(spec) = location.strip_prefix("sftp:") {
        return Ok(wrap(Arc::new(sftp::SftpBackend::new(spec, sftp)?), true));
    }
    if let Some((scheme, _)) = location.split_once(':')
        && matches!(scheme, "s3" | "rest" | "b2" | "azure" | "gs" | "rclone")
    {
        return Err(crate::Error::InvalidArgument(format!(
            "repository location {location:?}: the {scheme} backend is not available in this version"
        )));
    }
    Ok(wrap(Arc::new(local::LocalBackend::new(location)), false))
}
