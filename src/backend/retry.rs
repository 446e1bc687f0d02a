//! Retries transient backend errors with exponential backoff and jitter, bounded
//! in attempts. Wraps any backend; permanent errors pass through at once.

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{BResult, Backend, BackendError, DynBackend, FileInfo, FileKind, Handle};

/// Backoff settings (`-o retry.attempts=N`, `-o retry.max-delay=SECONDS`).
#[derive(Debug, Clone, Copy)]
pub struct RetryOptions {
    /// Tries per operation, the first included.
    pub attempts: u32,
    /// Delay before the first retry.
    pub base_delay: Duration,
    /// Upper bound of the delay between tries (each delay is at least half of
    /// the current bound, which doubles from `base_delay`).
    pub max_delay: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions { attempts: 6, base_delay: Duration::from_millis(500), max_delay: Duration::from_secs(15) }
    }
}

/// A backend that retries the transient failures of another.
pub struct RetryBackend {
    inner: DynBackend,
    opts: RetryOptions,
}

impl RetryBackend {
    /// Wraps `inner`.
    pub fn new(inner: DynBackend, opts: RetryOptions) -> RetryBackend {
        RetryBackend { inner, opts }
    }

    async fn retry<T, F, Fut>(&self, mut f: F) -> BResult<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: std::future::Future<Output = BResult<T>> + Send,
        T: Send,
    {
        let mut delay = self.opts.base_delay.min(self.opts.max_delay);
        let mut attempt = 1;
        loop {
            match f().await {
                Err(e) if e.is_transient() && attempt < self.opts.attempts.max(1) => {
                    // Jitter: a random delay between half the current bound and the bound,
                    // or longer if the server asked for it (up to the bound of the options).
                    let jitter = getrandom::u64().unwrap_or(0) % (delay.as_millis() as u64 + 1);
                    let mut wait = Duration::from_millis(jitter.max(delay.as_millis() as u64 / 2));
                    if let BackendError::Transient { retry_after: Some(asked), .. } = e {
                        wait = wait.max(asked.min(self.opts.max_delay));
                    }
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(self.opts.max_delay);
                    attempt += 1;
                }
                Err(BackendError::Transient { op, name, msg, retry_after }) => {
                    return Err(BackendError::Transient {
                        op,
                        name,
                        msg: format!("{msg}; gave up after {attempt} tries"),
                        retry_after,
                    });
                }
                r => return r,
            }
        }
    }
}

#[async_trait]
impl Backend for RetryBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }

    async fn create(&self) -> BResult<()> {
        self.retry(|| self.inner.create()).await
    }

    async fn write(&self, h: &Handle, data: Bytes) -> BResult<()> {
        let mut first = true;
        self.retry(|| {
            let (data, retried) = (data.clone(), !std::mem::replace(&mut first, false));
            async move {
                match self.inner.write(h, data).await {
                    // A retry after a write whose reply was lost finds the object there.
                    Err(BackendError::AlreadyExists(_)) if retried && h.kind != FileKind::Config => Ok(()),
                    r => r,
                }
            }
        })
        .await
    }

    async fn read(&self, h: &Handle, range: Option<Range<u64>>) -> BResult<Bytes> {
        // A file that was listed or indexed may not be readable yet on an eventually
        // consistent store: a missing file is tried twice more, a missing config is not
        // (that is how a location without a repository answers, and it must be quick).
        let mut missing = if h.kind == FileKind::Config { 0 } else { 2 };
        loop {
            match self.retry(|| self.inner.read(h, range.clone())).await {
                Err(e) if e.is_not_found() && missing > 0 => {
                    missing -= 1;
                    tokio::time::sleep(self.opts.base_delay).await;
                }
                r => return r,
            }
        }
    }

    async fn remove(&self, h: &Handle) -> BResult<()> {
        self.retry(|| self.inner.remove(h)).await
    }

    async fn list(&self, kind: FileKind) -> BResult<Vec<FileInfo>> {
        self.retry(|| self.inner.list(kind)).await
    }

    async fn remove_stale_temporaries(&self, age: Duration) -> BResult<u64> {
        self.retry(|| self.inner.remove_stale_temporaries(age)).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::backend::mem::MemBackend;

    /// Fails the first `fail` calls of every operation with a transient error.
    struct Flaky {
        inner: MemBackend,
        fail: u32,
        calls: AtomicU32,
        retry_after: Option<Duration>,
    }

    fn flaky(fail: u32, retry_after: Option<Duration>) -> Arc<Flaky> {
        Arc::new(Flaky { inner: MemBackend::new(), fail, calls: AtomicU32::new(0), retry_after })
    }

    impl Flaky {
        fn trip(&self) -> BResult<()> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail {
                return Err(BackendError::Transient {
                    op: "test",
                    name: "x".into(),
                    msg: "503".into(),
                    retry_after: self.retry_after,
                });
            }
            Ok(())
        }
    }

    #[async_trait]
    impl Backend for Flaky {
        fn location(&self) -> String {
            "flaky:".into()
        }
        async fn create(&self) -> BResult<()> {
            self.trip()
        }
        async fn write(&self, h: &Handle, data: Bytes) -> BResult<()> {
            self.trip()?;
            self.inner.write(h, data).await
        }
        async fn read(&self, h: &Handle, range: Option<Range<u64>>) -> BResult<Bytes> {
            self.trip()?;
            self.inner.read(h, range).await
        }
        async fn remove(&self, h: &Handle) -> BResult<()> {
            self.trip()?;
            self.inner.remove(h).await
        }
        async fn list(&self, kind: FileKind) -> BResult<Vec<FileInfo>> {
            self.trip()?;
            self.inner.list(kind).await
        }
    }

    #[test]
    fn retries_transient_errors_within_the_bound() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let opts =
            RetryOptions { attempts: 3, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(4) };
        let h = Handle::config();
        // Two failures, three tries: succeeds.
        let b = RetryBackend::new(flaky(2, None), opts);
        rt.block_on(b.write(&h, Bytes::from_static(b"x"))).unwrap();
        // Three failures, three tries: gives up with a clear message.
        let b = RetryBackend::new(flaky(3, None), opts);
        let e = rt.block_on(b.read(&h, None)).unwrap_err().to_string();
        assert!(e.contains("gave up after 3 tries"), "{e}");
        // Permanent errors are not retried.
        let f = flaky(0, None);
        let b = RetryBackend::new(f.clone(), opts);
        assert!(rt.block_on(b.read(&h, None)).unwrap_err().is_not_found());
        assert_eq!(f.calls.load(Ordering::SeqCst), 1);
        // A listed kind that is missing may be eventual consistency: two more tries.
        let f = flaky(0, None);
        let b = RetryBackend::new(f.clone(), opts);
        let pack = Handle { kind: FileKind::Pack, name: "00".repeat(32) };
        assert!(rt.block_on(b.read(&pack, None)).unwrap_err().is_not_found());
        assert_eq!(f.calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn honours_retry_after_within_the_bound() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let opts =
            RetryOptions { attempts: 3, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(300) };
        let h = Handle::config();
        // The server asks for 150 ms twice: the call takes at least 300 ms.
        let b = RetryBackend::new(flaky(2, Some(Duration::from_millis(150))), opts);
        let t = std::time::Instant::now();
        rt.block_on(b.write(&h, Bytes::from_static(b"x"))).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
        // An hour is capped at max-delay.
        let b = RetryBackend::new(flaky(2, Some(Duration::from_secs(3600))), opts);
        let t = std::time::Instant::now();
        rt.block_on(b.write(&h, Bytes::from_static(b"x"))).unwrap();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }
}
