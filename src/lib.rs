//! cairn: encrypted, deduplicating backups.
//!
//! Layers, top to bottom: the CLI (`src/main.rs`, `src/cli/`) parses and prints;
//! [`archiver`], [`restorer`], [`checker`] and [`browse`] do the work and never
//! print; [`repo::Repository`] is the only layer that hashes, compresses, encrypts,
//! packs and indexes; [`backend::Backend`] stores opaque bytes under names.

#![forbid(unsafe_code)]

pub mod archiver;
pub mod backend;
pub mod browse;
pub mod cache;
pub mod checker;
pub mod chunker;
pub mod compress;
pub mod copy;
pub mod crypto;
pub mod error;
pub mod filter;
pub mod id;
pub mod policy;
pub mod prune;
pub mod repair;
pub mod repo;
pub mod restorer;
pub mod util;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use error::{Error, Result};
pub use id::Id;
pub use repo::Repository;

/// Where long operations send warnings (items skipped, damage found).
pub trait Report: Sync {
    /// One complete, human-readable line.
    fn warn(&self, msg: &str);
    /// A line about one item, shown when the user asked for detail (`-v`).
    fn detail(&self, _msg: &str) {}
}

/// Counters a long operation updates as it goes, for progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// Files done.
    pub files: AtomicU64,
    /// Bytes done.
    pub bytes: AtomicU64,
    /// Files expected (0 if unknown).
    pub total_files: AtomicU64,
    /// Bytes expected (0 if unknown).
    pub total_bytes: AtomicU64,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Asks every running operation to stop at the next safe point (Ctrl-C).
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Fails with [`Error::Cancelled`] once [`interrupt`] was called.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) { Err(Error::Cancelled) } else { Ok(()) }
}
