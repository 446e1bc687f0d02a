//! An in-memory backend for fast unit tests. Never a stand-in for the real ones.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{BResult, Backend, BackendError, FileInfo, FileKind, Handle};

/// Files kept in a map.
#[derive(Default)]
pub struct MemBackend {
    files: Mutex<BTreeMap<Handle, Bytes>>,
}

impl MemBackend {
    /// An empty store.
    pub fn new() -> MemBackend {
        MemBackend::default()
    }
}

#[async_trait]
impl Backend for MemBackend {
    fn location(&self) -> String {
        "memory:".into()
    }

    async fn create(&self) -> BResult<()> {
        Ok(())
    }

    async fn write(&self, h: &Handle, data: Bytes) -> BResult<()> {
        let mut files = self.files.lock().expect("poisoned");
        if files.contains_key(h) {
            return Err(BackendError::AlreadyExists(h.path()));
        }
        files.insert(h.clone(), data);
        Ok(())
    }

    async fn read(&self, h: &Handle, range: Option<Range<u64>>) -> BResult<Bytes> {
        let files = self.files.lock().expect("poisoned");
        let data = files.get(h).ok_or_else(|| BackendError::NotFound(h.path()))?;
        match range {
            None => Ok(data.clone()),
            Some(r) if r.start <= r.end && r.end <= data.len() as u64 => {
                Ok(data.slice(r.start as usize..r.end as usize))
            }
            Some(r) => Err(BackendError::Permanent {
                op: "read",
                name: h.path(),
                msg: format!("range {}..{} is beyond the end ({} bytes)", r.start, r.end, data.len()),
            }),
        }
    }

    async fn remove(&self, h: &Handle) -> BResult<()> {
        let mut files = self.files.lock().expect("poisoned");
        files.remove(h).map(drop).ok_or_else(|| BackendError::NotFound(h.path()))
    }

    async fn list(&self, kind: FileKind) -> BResult<Vec<FileInfo>> {
        let files = self.files.lock().expect("poisoned");
        Ok(files
            .iter()
            .filter(|(h, _)| h.kind == kind && crate::id::Id::is_valid_name(&h.name))
            .map(|(h, d)| FileInfo { name: h.name.clone(), size: d.len() as u64 })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conformance() {
        super::super::conformance::run(std::sync::Arc::new(super::MemBackend::new()));
    }
}
