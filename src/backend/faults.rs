//! Fault injection, for tests only: a wrapper that makes a backend misbehave the
//! way real storage does, so that tests can prove every command completes or
//! fails cleanly and never damages the repository. Enabled by the environment
//! variable `CAIRN_TEST_FAULTS` (never by default), a comma-separated list of:
//!
//! - `abort-at-op=N`: the process aborts (like `kill -9`) when the Nth write or
//!   remove is about to reach the storage (writes in flight at that moment on
//!   other threads may or may not be done);
//! - `interrupt-at-op=N`: at the Nth write or remove, the process is
//!   interrupted as by Ctrl-C ([`crate::interrupt`]) and goes on from there;
//! - `fail=P`: each operation fails with a transient error with probability P
//!   before reaching the storage;
//! - `lost-reply=P`: a write or remove reaches the storage but reports a
//!   transient error, with probability P (as when a reply is lost);
//! - `truncate=P`: a read returns only part of what was asked, with probability P;
//! - `stale-list=P`: a listing leaves out each file this process wrote with
//!   probability P (an eventually consistent store that has not caught up with
//!   a recent write);
//! - `ghost-list=P`: a listing still shows each file this process removed with
//!   probability P (reading it then fails with "not found");
//! - `delay-ms=N`: each operation first waits up to N ms;
//! - `seed=S`: the random choices' seed (default: random).

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{BResult, Backend, BackendError, DynBackend, FileInfo, FileKind, Handle};

/// The variable that enables fault injection.
pub const ENV: &str = "CAIRN_TEST_FAULTS";

/// What to inject.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    abort_at_op: Option<u64>,
    interrupt_at_op: Option<u64>,
    fail: f64,
    lost_reply: f64,
    truncate: f64,
    stale_list: f64,
    ghost_list: f64,
    delay_ms: u64,
    seed: Option<u64>,
}

impl Faults {
    /// Parses the value of [`ENV`].
    pub fn parse(spec: &str) -> crate::Result<Faults> {
        let bad = |item: &str| crate::Error::InvalidArgument(format!("{ENV}: cannot parse {item:?}"));
        let mut f = Faults::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = item.split_once('=').ok_or_else(|| bad(item))?;
            let p = || v.parse::<f64>().ok().filter(|p| (0.0..=1.0).contains(p)).ok_or_else(|| bad(item));
            let n = || v.parse::<u64>().map_err(|_| bad(item));
            match k {
                "abort-at-op" => f.abort_at_op = Some(n()?),
                "interrupt-at-op" => f.interrupt_at_op = Some(n()?),
                "fail" => f.fail = p()?,
                "lost-reply" => f.lost_reply = p()?,
                "truncate" => f.truncate = p()?,
                "stale-list" => f.stale_list = p()?,
                "ghost-list" => f.ghost_list = p()?,
                "delay-ms" => f.delay_ms = n()?,
                "seed" => f.seed = Some(n()?),
                _ => return Err(bad(item)),
            }
        }
        Ok(f)
    }
}

/// A backend that injects [`Faults`] into another.
pub struct FaultBackend {
    inner: DynBackend,
    faults: Faults,
    ops: AtomicU64,
    /// Faults injected so far (reported when the backend is dropped).
    injected: AtomicU64,
    rng: Mutex<u64>,
    /// Files this process wrote, and removed (with their sizes).
    written: Mutex<std::collections::HashSet<(FileKind, String)>>,
    removed: Mutex<Vec<(FileKind, FileInfo)>>,
}

impl FaultBackend {
    /// Wraps `inner`.
    pub fn new(inner: DynBackend, faults: Faults) -> FaultBackend {
        let seed = faults.seed.unwrap_or_else(|| getrandom::u64().unwrap_or(1));
        FaultBackend {
            inner,
            faults,
            ops: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            rng: Mutex::new(seed | 1),
            written: Mutex::default(),
            removed: Mutex::default(),
        }
    }

    /// A uniform random number in [0, 1).
    fn random(&self) -> f64 {
        let mut x = self.rng.lock().expect("poisoned");
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        (*x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether to inject a fault of probability `p` (counted).
    fn chance(&self, p: f64) -> bool {
        let yes = p > 0.0 && self.random() < p;
        if yes {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        yes
    }

    /// The delay, the abort point (for writes and removes) and injected failures.
    async fn before(&self, op: &'static str, name: &str, mutates: bool) -> BResult<()> {
        if self.faults.delay_ms > 0 {
            let ms = (self.random() * self.faults.delay_ms as f64) as u64;
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if mutates {
            let now = self.ops.fetch_add(1, Ordering::SeqCst) + 1;
            if self.faults.abort_at_op == Some(now) {
                eprintln!("{ENV}: aborting at operation {now} ({op} {name})");
                std::process::abort();
            }
            if self.faults.interrupt_at_op == Some(now) {
                eprintln!("{ENV}: interrupting at operation {now} ({op} {name})");
                crate::interrupt();
            }
        }
        if self.chance(self.faults.fail) {
            return Err(injected(op, name));
        }
        Ok(())
    }

    fn after<T>(&self, op: &'static str, name: &str, r: BResult<T>) -> BResult<T> {
        match r {
            Ok(_) if self.chance(self.faults.lost_reply) => Err(injected(op, name)),
            r => r,
        }
    }
}

impl Drop for FaultBackend {
    fn drop(&mut self) {
        let n = self.injected.load(Ordering::Relaxed);
        if n > 0 {
            eprintln!("{ENV}: injected {n} fault(s)");
        }
    }
}

fn injected(op: &'static str, name: &str) -> BackendError {
    BackendError::Transient { op, name: name.to_string(), msg: "injected fault".into(), retry_after: None }
}

#[async_trait]
impl Backend for FaultBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }

    async fn create(&self) -> BResult<()> {
        self.inner.create().await
    }

    async fn write(&self, h: &Handle, data: Bytes) -> BResult<()> {
        let name = h.to_string();
        self.before("write", &name, true).await?;
        let r = self.inner.write(h, data).await;
        if r.is_ok() {
            self.written.lock().expect("poisoned").insert((h.kind, h.name.clone()));
        }
        self.after("write", &name, r)
    }

    async fn read(&self, h: &Handle, range: Option<Range<u64>>) -> BResult<Bytes> {
        let name = h.to_string();
        self.before("read", &name, false).await?;
        let data = self.inner.read(h, range).await?;
        if !data.is_empty() && self.chance(self.faults.truncate) {
            let keep = (self.random() * data.len() as f64) as usize;
            return Ok(data.slice(..keep));
        }
        Ok(data)
    }

    async fn remove(&self, h: &Handle) -> BResult<()> {
        let name = h.to_string();
        self.before("remove", &name, true).await?;
        let size = match self.faults.ghost_list > 0.0 {
            true => self.inner.list(h.kind).await?.into_iter().find(|f| f.name == h.name).map(|f| f.size),
            false => None,
        };
        let r = self.inner.remove(h).await;
        if r.is_ok()
            && let Some(size) = size
        {
            self.removed.lock().expect("poisoned").push((h.kind, FileInfo { name: h.name.clone(), size }));
        }
        self.after("remove", &name, r)
    }

    async fn list(&self, kind: FileKind) -> BResult<Vec<FileInfo>> {
        self.before("list", kind.dir(), false).await?;
        let mut files = self.inner.list(kind).await?;
        if self.faults.stale_list > 0.0 {
            let written = self.written.lock().expect("poisoned").clone();
            files.retain(|f| !(written.contains(&(kind, f.name.clone())) && self.chance(self.faults.stale_list)));
        }
        if self.faults.ghost_list > 0.0 {
            let removed = self.removed.lock().expect("poisoned").clone();
            for (k, f) in removed {
                if k == kind && !files.iter().any(|g| g.name == f.name) && self.chance(self.faults.ghost_list) {
                    files.push(f);
                }
            }
        }
        Ok(files)
    }

    async fn remove_stale_temporaries(&self, age: Duration) -> BResult<u64> {
        self.inner.remove_stale_temporaries(age).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs_and_refuses_nonsense() {
        let f = Faults::parse("abort-at-op=7, fail=0.25,truncate=0.1,stale-list=0.5,delay-ms=3,seed=9").unwrap();
        assert_eq!(f.abort_at_op, Some(7));
        assert_eq!((f.fail, f.truncate, f.stale_list, f.delay_ms, f.seed), (0.25, 0.1, 0.5, 3, Some(9)));
        for bad in ["fail=2", "fail", "abort-at-op=-1", "nonsense=1", "truncate=x"] {
            assert!(Faults::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn injects_what_it_is_told() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mem: DynBackend = std::sync::Arc::new(crate::backend::mem::MemBackend::new());
        let h = Handle::id(FileKind::Snapshot, &crate::Id::hash(b"x"));
        rt.block_on(mem.write(&h, Bytes::from_static(b"0123456789"))).unwrap();
        let all = FaultBackend::new(mem.clone(), Faults::parse("fail=1").unwrap());
        assert!(rt.block_on(all.read(&h, None)).unwrap_err().is_transient());
        let cut = FaultBackend::new(mem.clone(), Faults::parse("truncate=1,seed=3").unwrap());
        assert!(rt.block_on(cut.read(&h, None)).unwrap().len() < 10);
        let stale = FaultBackend::new(mem.clone(), Faults::parse("stale-list=1,ghost-list=1").unwrap());
        assert_eq!(rt.block_on(stale.list(FileKind::Snapshot)).unwrap().len(), 1, "older files are listed");
        let h3 = Handle::id(FileKind::Snapshot, &crate::Id::hash(b"z"));
        rt.block_on(stale.write(&h3, Bytes::from_static(b"z"))).unwrap();
        let listed = rt.block_on(stale.list(FileKind::Snapshot)).unwrap();
        assert!(listed.len() == 1 && !listed.iter().any(|f| f.name == h3.name), "a file just written is not");
        rt.block_on(stale.remove(&h)).unwrap();
        let listed = rt.block_on(stale.list(FileKind::Snapshot)).unwrap();
        assert!(listed.iter().any(|f| f.name == h.name), "a file just removed still is");
        assert!(rt.block_on(stale.read(&h, None)).unwrap_err().is_not_found());
        let lost = FaultBackend::new(mem.clone(), Faults::parse("lost-reply=1").unwrap());
        let h2 = Handle::id(FileKind::Snapshot, &crate::Id::hash(b"y"));
        assert!(rt.block_on(lost.write(&h2, Bytes::from_static(b"y"))).unwrap_err().is_transient());
        assert_eq!(rt.block_on(mem.read(&h2, None)).unwrap().as_ref(), b"y", "the write itself happened");
    }
}
