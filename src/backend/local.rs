//! A repository in a local directory. Writes go to a temporary name in the target
//! folder, are fsynced, then linked into place (never replacing an existing name),
//! so a crash never leaves a partial file under a real name.

use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::{BResult, Backend, BackendError, FileInfo, FileKind, Handle};
use crate::id::Id;

/// A repository in a local directory.
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    /// A backend rooted at `root` (which need not exist before `create`).
    pub fn new(root: impl Into<PathBuf>) -> LocalBackend {
        LocalBackend { root: root.into() }
    }

    fn path(&self, h: &Handle) -> PathBuf {
        self.root.join(h.path())
    }
}

/// Runs blocking file-system work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> BResult<T> + Send + 'static) -> BResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| BackendError::Permanent {
        op: "local",
        name: String::new(),
        msg: format!("worker failed: {e}"),
    })?
}

fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("repository files live in a folder");
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd).map_err(|e| io::Error::other(e.to_string()))?;
    let tmp = dir.join(format!("{}{}", super::TEMP_PREFIX, hex::encode(rnd)));
    let mut f = match File::create_new(&tmp) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)?;
            File::create_new(&tmp)?
        }
        r => r?,
    };
    let result = (|| {
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
            // File systems without hard links: check, then rename (the name is
            // content-addressed or written once, so the race is harmless).
            Err(_) if path.symlink_metadata().is_ok() => Err(io::ErrorKind::AlreadyExists.into()),
            Err(_) => fs::rename(&tmp, path),
        }
    })();
    let _ = fs::remove_file(&tmp);
    result?;
    File::open(dir)?.sync_all()
}

fn read_range(path: &Path, range: Range<u64>) -> io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let size = f.metadata()?.len();
    if range.start > range.end || range.end > size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("range {}..{} is beyond the end of the file ({size} bytes)", range.start, range.end),
        ));
    }
    let mut buf = vec![0u8; (range.end - range.start) as usize];
    f.read_exact_at(&mut buf, range.start)?;
    Ok(buf)
}

fn list_dir(dir: &Path, out: &mut Vec<FileInfo>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        r => r?,
    };
    for e in entries {
        let e = e?;
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !Id::is_valid_name(&name) {
            continue;
        }
        match e.metadata() {
            Ok(m) if m.is_file() => out.push(FileInfo { name, size: m.len() }),
            Ok(_) => {}
            // Removed between readdir and stat.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[async_trait]
impl Backend for LocalBackend {
    fn location(&self) -> String {
        format!("local:{}", self.root.display())
    }

    /// Two writes in flight keep a disk busy; more only hold more packs in memory.
    fn concurrency(&self) -> usize {
        2
    }

    async fn create(&self) -> BResult<()> {
        let root = self.root.clone();
        blocking(move || {
            for d in super::layout_dirs() {
                fs::create_dir_all(root.join(&d)).map_err(|e| BackendError::from_io("create", d, e))?;
            }
            Ok(())
        })
        .await
    }

    async fn write(&self, h: &Handle, data: Bytes) -> BResult<()> {
        let (path, name) = (self.path(h), h.path());
        blocking(move || write_atomic(&path, &data).map_err(|e| BackendError::from_io("write", name, e))).await
    }

    async fn read(&self, h: &Handle, range: Option<Range<u64>>) -> BResult<Bytes> {
        let (path, name) = (self.path(h), h.path());
        blocking(move || {
            let r = match range {
                None => fs::read(&path),
                Some(r) => read_range(&path, r),
            };
            r.map(Bytes::from).map_err(|e| BackendError::from_io("read", name, e))
        })
        .await
    }

    async fn remove(&self, h: &Handle) -> BResult<()> {
        let (path, name) = (self.path(h), h.path());
        blocking(move || fs::remove_file(&path).map_err(|e| BackendError::from_io("remove", name, e))).await
    }

    async fn remove_stale_temporaries(&self, age: std::time::Duration) -> BResult<u64> {
        let root = self.root.clone();
        blocking(move || {
            let mut removed = 0;
            let dirs = std::iter::once(String::new()).chain(super::layout_dirs());
            for d in dirs {
                let Ok(entries) = fs::read_dir(root.join(&d)) else { continue };
                for e in entries.flatten() {
                    let stale = e.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
                    if e.file_name().to_string_lossy().starts_with(super::TEMP_PREFIX)
                        && stale.is_some_and(|a| a > age)
                        && fs::remove_file(e.path()).is_ok()
                    {
                        removed += 1;
                    }
                }
            }
            Ok(removed)
        })
        .await
    }

    async fn list(&self, kind: FileKind) -> BResult<Vec<FileInfo>> {
        let dir = self.root.join(kind.dir());
        blocking(move || {
            let mut out = Vec::new();
            let r = if kind == FileKind::Pack {
                (0..=255u8).try_for_each(|b| list_dir(&dir.join(format!("{b:02x}")), &mut out))
            } else {
                list_dir(&dir, &mut out)
            };
            r.map_err(|e| BackendError::from_io("list", kind.dir(), e))?;
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn racing_writers_exactly_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let wins = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8u8)
                .map(|i| {
                    let p = p.clone();
                    s.spawn(move || super::write_atomic(&p, &vec![i; 10_000]).is_ok())
                })
                .collect();
            hs.into_iter().map(|h| h.join().is_ok_and(|ok| ok)).filter(|ok| *ok).count()
        });
        assert_eq!(wins, 1);
    }

    #[test]
    fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        super::super::conformance::run(std::sync::Arc::new(super::LocalBackend::new(dir.path().join("repo"))));
    }
}
