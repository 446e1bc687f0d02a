//! Leases: lock files that expire by themselves.
//!
//! A writer (backup, copy) holds a *shared* lease; prune holds an *exclusive*
//! one. Nothing ever waits for a lease: backups ignore every lease; prune refuses
//! to start while another live exclusive lease exists, and defers deleting data
//! while a writer lease that might still use it is live. A lease is renewed every
//! [`REFRESH`] by writing a fresh lock file (same lease ID and creation time) and
//! removing the previous one; it counts as stale when it has not been renewed for
//! [`EXPIRY`], or when its process is gone (same host, PID not running). Stale
//! leases never block anything, so no crash ever needs a manual unlock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::Repository;
use crate::backend::{DynBackend, FileKind, Handle};
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::Id;

/// How often a held lease is renewed.
pub const REFRESH: Duration = Duration::from_secs(5 * 60);
/// A lease not renewed for this long is stale.
pub const EXPIRY: Duration = Duration::from_secs(30 * 60);

/// A lock file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lock {
    /// When it was last renewed.
    pub time: DateTime<FixedOffset>,
    /// When the lease was first taken (kept across renewals).
    #[serde(default)]
    pub created: Option<DateTime<FixedOffset>>,
    /// The lease's identity, the same in every renewal (hex).
    #[serde(default)]
    pub lease: String,
    /// By which host.
    pub hostname: String,
    /// By which user.
    pub username: String,
    /// By which process.
    pub pid: u32,
    /// Exclusive (prune) or shared (backup, copy).
    pub exclusive: bool,
}

impl Lock {
    /// When the lease began.
    pub fn since(&self) -> DateTime<FixedOffset> {
        self.created.unwrap_or(self.time)
    }

    /// Whether the lease still counts: renewed within [`EXPIRY`] and, if taken on
    /// this host, its process still running.
    pub fn is_live(&self) -> bool {
        let age = chrono::Utc::now().signed_duration_since(self.time);
        if age.to_std().is_ok_and(|a| a > EXPIRY) {
            return false;
        }
        if self.hostname == crate::util::hostname() {
            return process_alive(self.pid);
        }
        true
    }

    /// A one-line description for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} lock of {}@{} (PID {}) since {}",
            if self.exclusive { "an exclusive" } else { "a shared" },
            self.username,
            self.hostname,
            self.pid,
            self.since().format("%Y-%m-%d %H:%M:%S")
        )
    }
}

fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(p) = i32::try_from(pid) else { return false };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::ESRCH) => false,
        Err(_) => true, // EPERM: it exists, owned by someone else
    }
}

/// What a renewal thread needs: no borrow of the repository.
struct Renewer {
    backend: DynBackend,
    rt: tokio::runtime::Handle,
    key: MasterKey,
}

impl Renewer {
    fn write(&self, lock: &Lock) -> Result<Id> {
        let payload = serde_json::to_vec(lock).expect("lock serializes");
        let sealed = super::seal_body(&self.key, FileKind::Lock, &payload);
        let id = Id::hash(&sealed);
        self.rt.block_on(self.backend.write(&Handle::id(FileKind::Lock, &id), bytes::Bytes::from(sealed)))?;
        Ok(id)
    }

    fn remove(&self, id: &Id) {
        let _ = self.rt.block_on(self.backend.remove(&Handle::id(FileKind::Lock, id)));
    }
}

/// A held lease: renewed in the background, removed when dropped.
pub struct LeaseGuard {
    /// The current lock file, whether a renewal failed, and when the lease was
    /// last written successfully.
    state: Arc<(std::sync::Mutex<(Id, std::time::Instant)>, AtomicBool)>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    renewer: Arc<Renewer>,
    lock: Lock,
}

impl LeaseGuard {
    /// The lease as written.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// The current lock file's ID.
    pub fn file_id(&self) -> Id {
        self.state.0.lock().expect("poisoned").0
    }

    /// Whether a renewal failed (the lease may have expired for others).
    pub fn renewal_failed(&self) -> bool {
        self.state.1.load(Ordering::SeqCst)
    }

    /// Whether others may already consider the lease expired: renewals failed
    /// for so long that the last lock file written is close to [`EXPIRY`]. A
    /// writer must then not save a snapshot: a prune may have deleted data it
    /// reused.
    pub fn may_have_expired(&self) -> bool {
        let last = self.state.0.lock().expect("poisoned").1;
        last.elapsed() + Duration::from_secs(5 * 60) >= EXPIRY
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let id = self.file_id();
        self.renewer.remove(&id);
    }
}

impl Repository {
    fn take_lease(&self, exclusive: bool) -> Result<LeaseGuard> {
        let now = chrono::Local::now().fixed_offset();
        let mut rnd = [0u8; 16];
        crate::crypto::random_bytes(&mut rnd)?;
        let lock = Lock {
            time: now,
            created: Some(now),
            lease: hex::encode(rnd),
            hostname: crate::util::hostname(),
            username: crate::util::username(),
            pid: std::process::id(),
            exclusive,
        };
        let renewer =
            Arc::new(Renewer { backend: Arc::clone(self.backend()), rt: self.rt.clone(), key: self.key.clone() });
        let id = renewer.write(&lock)?;
        let state = Arc::new((std::sync::Mutex::new((id, std::time::Instant::now())), AtomicBool::new(false)));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let thread = {
            let (state, renewer, mut lock) = (Arc::clone(&state), Arc::clone(&renewer), lock.clone());
            std::thread::Builder::new()
                .name("cairn-lease".into())
                .spawn(move || {
                    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(REFRESH) {
                        lock.time = chrono::Local::now().fixed_offset();
                        match renewer.write(&lock) {
                            Ok(new) => {
                                let old = std::mem::replace(
                                    &mut *state.0.lock().expect("poisoned"),
                                    (new, std::time::Instant::now()),
                                );
                                renewer.remove(&old.0);
                            }
                            Err(_) => state.1.store(true, Ordering::SeqCst),
                        }
                    }
                })
                .map_err(|e| Error::Io { path: "lease thread".into(), source: e })?
        };
        Ok(LeaseGuard { state, stop: Some(tx), thread: Some(thread), renewer, lock })
    }

    /// Takes a shared (writer) lease. Never waits and never fails because of
    /// other leases.
    pub fn lock_shared(&self) -> Result<LeaseGuard> {
        self.take_lease(false)
    }

    /// Takes a shared lease for a command that reads data (restore, check, dump,
    /// copy's source), so that a prune meanwhile defers deleting what it may still
    /// read. A repository that cannot be written to (read-only storage) is read
    /// without one: `None`, and the reason for a warning.
    pub fn lock_reader(&self) -> (Option<LeaseGuard>, Option<String>) {
        match self.take_lease(false) {
            Ok(g) => (Some(g), None),
            Err(e) => (None, Some(format!("reading without a lock ({e}); a prune running meanwhile may delete data"))),
        }
    }

    /// Takes the exclusive (prune) lease; fails with [`Error::Locked`] while
    /// another live exclusive lease exists. Of two taken at the same moment, the
    /// older (then the smaller file ID) wins.
    pub fn lock_exclusive(&self) -> Result<LeaseGuard> {
        let guard = self.take_lease(true)?;
        let mine = (guard.lock.since(), guard.file_id());
        for (id, other) in self.leases()? {
            if other.lease == guard.lock.lease || !other.exclusive || !other.is_live() {
                continue;
            }
            if (other.since(), id) < mine {
                let msg = other.describe();
                drop(guard);
                return Err(Error::Locked(format!(
                    "the repository is being pruned: {msg}; it expires by itself {} min after its last renewal",
                    EXPIRY.as_secs() / 60
                )));
            }
        }
        Ok(guard)
    }

    /// Every readable lock file (unreadable ones are skipped: a lock being
    /// removed while listed, or damaged).
    pub fn leases(&self) -> Result<Vec<(Id, Lock)>> {
        let ids = self.list_ids(FileKind::Lock)?;
        let files = self.load_files(FileKind::Lock, &ids);
        Ok(ids
            .into_iter()
            .zip(files)
            .filter_map(|(id, r)| r.ok().and_then(|b| serde_json::from_slice::<Lock>(&b).ok()).map(|l| (id, l)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::mem::MemBackend;
    use crate::crypto::KdfParams;
    use crate::repo::InitOptions;

    fn lock(minutes_ago: i64, pid: u32, host: &str) -> Lock {
        let t = (chrono::Local::now() - chrono::Duration::minutes(minutes_ago)).fixed_offset();
        Lock {
            time: t,
            created: Some(t),
            lease: "x".into(),
            hostname: host.into(),
            username: "u".into(),
            pid,
            exclusive: false,
        }
    }

    #[test]
    fn leases_expire_by_time_and_by_dead_process() {
        let me = std::process::id();
        assert!(lock(1, me, &crate::util::hostname()).is_live());
        assert!(!lock(31, me, &crate::util::hostname()).is_live(), "not renewed for 31 minutes");
        // A PID that cannot exist on this host: the process is gone.
        assert!(!lock(1, u32::MAX - 1, &crate::util::hostname()).is_live());
        // On another host only the time counts.
        assert!(lock(1, u32::MAX - 1, "elsewhere.example").is_live());
    }

    #[test]
    fn a_writer_whose_lease_may_have_expired_knows_it() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let b: crate::backend::DynBackend = Arc::new(MemBackend::new());
        let opts =
            InitOptions { kdf: KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 }, ..Default::default() };
        let repo = Repository::init(b, rt.handle().clone(), b"pw", &opts).unwrap();
        let guard = repo.lock_shared().unwrap();
        assert!(!guard.may_have_expired());
        assert_eq!(repo.leases().unwrap().len(), 1);
        // As if every renewal had failed for 26 minutes.
        guard.state.0.lock().unwrap().1 = std::time::Instant::now() - Duration::from_secs(26 * 60);
        assert!(guard.may_have_expired());
        // A second exclusive lease is refused while the first is live.
        let first = repo.lock_exclusive().unwrap();
        assert!(matches!(repo.lock_exclusive(), Err(Error::Locked(_))));
        drop(first);
        drop(guard);
        assert!(repo.leases().unwrap().is_empty(), "dropped leases leave no lock file");
    }
}
