//! The library's error type: variants callers act on, each with an exit code.

use std::path::PathBuf;

use crate::backend::BackendError;

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// There is no repository (no `config`) at the location.
    #[error("no repository at {0} (run `cairn init` first?)")]
    RepoNotFound(String),
    /// `init` on a location that already holds a repository.
    #[error("a repository already exists at {0}")]
    RepoExists(String),
    /// No key file opens with the password given.
    #[error(
        "wrong password: no key in the repository opens with it (if the password is right, its key files were altered)"
    )]
    WrongPassword,
    /// A lock held by another process prevents the operation.
    #[error("repository is locked: {0}")]
    Locked(String),
    /// Repository data failed authentication or does not parse.
    #[error("repository data is damaged: {0}")]
    Corrupt(String),
    /// The repository was written by a newer, incompatible version.
    #[error("{0}")]
    Unsupported(String),
    /// A storage operation failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A local file-system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A snapshot, blob or file named by the user does not exist or is ambiguous.
    #[error("{0}")]
    NotFound(String),
    /// Invalid options or arguments.
    #[error("{0}")]
    InvalidArgument(String),
    /// The operation finished, but some items failed (each was reported).
    #[error("{0}")]
    Incomplete(String),
    /// The user interrupted the operation.
    #[error("interrupted")]
    Cancelled,
}

impl Error {
    /// The process exit code documented in the README for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::RepoNotFound(_) => 10,
            Error::Locked(_) => 11,
            Error::WrongPassword => 12,
            Error::Cancelled => 130,
            _ => 1,
        }
    }

    /// Shorthand for [`Error::Corrupt`].
    pub fn corrupt(what: impl std::fmt::Display) -> Self {
        Error::Corrupt(what.to_string())
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
