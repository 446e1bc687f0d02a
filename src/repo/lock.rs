//! Writer locks. A backup announces itself with a shared lock file; read-only
//! commands take none. (Expiry, refresh and exclusive locks come with prune.)

use serde::{Deserialize, Serialize};

use super::Repository;
use crate::backend::{FileKind, Handle};
use crate::error::Result;
use crate::id::Id;

/// A lock file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lock {
    /// When it was taken.
    pub time: chrono::DateTime<chrono::FixedOffset>,
    /// By which host.
    pub hostname: String,
    /// By which user.
    pub username: String,
    /// By which process.
    pub pid: u32,
    /// Exclusive (prune) or shared (backup).
    pub exclusive: bool,
}

/// Removes the lock file when dropped.
pub struct LockGuard<'r> {
    repo: &'r Repository,
    id: Id,
}

impl Repository {
    /// Takes a shared (writer) lock.
    pub fn lock_shared(&self) -> Result<LockGuard<'_>> {
        let lock = Lock {
            time: chrono::Local::now().fixed_offset(),
            hostname: crate::util::hostname(),
            username: crate::util::username(),
            pid: std::process::id(),
            exclusive: false,
        };
        let id = self.save_json(FileKind::Lock, &lock)?;
        Ok(LockGuard { repo: self, id })
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.repo.block_on(self.repo.backend().remove(&Handle::id(FileKind::Lock, &self.id)));
    }
}
