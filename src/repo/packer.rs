//! Saving new blobs: compress and seal on the caller's thread, append to an open
//! pack of the blob's type, and upload full packs concurrently in the background.
//! Memory is bounded by the pack size times the uploads allowed in flight.
//!
//! Data blobs go to one of two open packs at random (as restic 0.18 does), so
//! that which chunks of a file share a pack, and so the pack sizes the storage
//! sees, do not follow the file's chunk sequence: an attacker who knows a file
//! cannot line its chunk lengths up with a pack's size.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::Repository;
use super::index::{IndexFile, IndexPack};
use super::pack::{self, BlobType, PackWriter};
use crate::backend::{BackendError, FileKind, Handle};
use crate::error::{Error, Result};
use crate::id::Id;

/// Counters of what was saved.
#[derive(Debug, Default)]
pub struct SaveStats {
    /// New data blobs.
    pub data_blobs: AtomicU64,
    /// New tree blobs.
    pub tree_blobs: AtomicU64,
    /// Pack files uploaded.
    pub packs: AtomicU64,
    /// Their plaintext bytes.
    pub raw_bytes: AtomicU64,
    /// Their stored bytes.
    pub stored_bytes: AtomicU64,
}

/// Collects blobs into packs and uploads them.
pub struct Packer<'r> {
    repo: &'r Repository,
    /// Open packs: [`DATA_PACKS`] for data, then one for trees.
    open: [Mutex<Option<PackWriter>>; DATA_PACKS + 1],
    /// Picks the data pack of each blob (a SplitMix64 sequence from a random seed).
    pick: AtomicU64,
    uploads: Arc<Semaphore>,
    in_flight: Mutex<Vec<tokio::task::JoinHandle<Result<IndexPack, BackendError>>>>,
    done: Mutex<Vec<IndexPack>>,
    dry_run: bool,
    /// What was saved so far.
    pub stats: SaveStats,
}

/// Open data packs that blobs are spread over.
const DATA_PACKS: usize = 2;

impl<'r> Packer<'r> {
    /// A packer writing to `repo` (or, with `dry_run`, only counting).
    pub fn new(repo: &'r Repository, dry_run: bool) -> Packer<'r> {
        Packer {
            repo,
            open: std::array::from_fn(|_| Mutex::new(None)),
            pick: AtomicU64::new({
                let mut b = [0u8; 8];
                // (Without randomness the order is still scrambled per run.)
                let _ = crate::crypto::random_bytes(&mut b);
                u64::from_le_bytes(b) ^ std::process::id() as u64
            }),
            uploads: Arc::new(Semaphore::new(repo.backend().concurrency().max(1))),
            in_flight: Mutex::new(Vec::new()),
            done: Mutex::new(Vec::new()),
            dry_run,
            stats: SaveStats::default(),
        }
    }

    /// Compresses (with `zstd`, if given), seals and adds one blob.
    pub fn add(
        &self,
        blob_type: BlobType,
        id: Id,
        plain: &[u8],
        zstd: Option<&mut crate::compress::Compressor>,
    ) -> Result<()> {
        thread_local! {
            /// Each worker compresses and seals into a buffer of its own, reused.
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with(|b| {
            let mut buf = b.borrow_mut();
            let pad = self.repo.config().pad;
            let (compressed, n) = pack::encode_blob_into(self.repo.key(), plain, zstd, pad, &mut buf);
            let r = self.add_stored(blob_type, id, compressed, plain.len() as u32, &buf[..n]);
            if buf.len() > 16 << 20 {
                // (A huge tree blob: do not keep its buffer.)
                *buf = Vec::new();
            }
            r
        })
    }

    /// Adds a blob already compressed and sealed (as read from another pack, by
    /// prune and copy).
    pub fn add_stored(
        &self,
        blob_type: BlobType,
        id: Id,
        compressed: bool,
        raw_length: u32,
        stored: &[u8],
    ) -> Result<()> {
        let counter = if blob_type == BlobType::Data { &self.stats.data_blobs } else { &self.stats.tree_blobs };
        counter.fetch_add(1, Ordering::Relaxed);
        self.stats.raw_bytes.fetch_add(raw_length as u64, Ordering::Relaxed);
        self.stats.stored_bytes.fetch_add(stored.len() as u64, Ordering::Relaxed);
        if self.dry_run {
            return Ok(());
        }
        let target = self.repo.config().pack_size as usize;
        let mut slot = self.open[self.slot(blob_type)].lock().expect("poisoned");
        let w = slot.get_or_insert_with(|| PackWriter::new(blob_type, target + target / 8));
        w.add(id, compressed, raw_length, stored);
        if w.size() < target {
            return Ok(());
        }
        let full = slot.take().expect("just filled");
        // Wait for an upload slot while still holding the lock: other workers wait
        // here instead of filling more packs, which bounds memory to the uploads in
        // flight plus one pack per blob type.
        self.upload(full)
    }

    /// The open pack for a blob of `blob_type`: trees their own, data at random.
    fn slot(&self, blob_type: BlobType) -> usize {
        if blob_type == BlobType::Tree {
            return DATA_PACKS;
        }
        let mut z = self.pick.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % DATA_PACKS as u64) as usize
    }

    fn upload(&self, w: PackWriter) -> Result<()> {
        self.check_failed()?;
        let (id, data, blobs) = w.finish(self.repo.key());
        self.stats.packs.fetch_add(1, Ordering::Relaxed);
        let permit = self.repo.block_on(Arc::clone(&self.uploads).acquire_owned()).expect("semaphore open");
        let backend = Arc::clone(self.repo.backend());
        let size = data.len() as u64;
        let task = self.repo.runtime().spawn(async move {
            let _permit = permit;
            match backend.write(&Handle::id(FileKind::Pack, &id), Bytes::from(data)).await {
                Ok(()) | Err(BackendError::AlreadyExists(_)) => Ok(IndexPack { id, size, blobs }),
                Err(e) => Err(e),
            }
        });
        self.in_flight.lock().expect("poisoned").push(task);
        Ok(())
    }

    /// Collects finished uploads; fails early if one failed.
    fn check_failed(&self) -> Result<()> {
        let mut tasks = self.in_flight.lock().expect("poisoned");
        let mut i = 0;
        while i < tasks.len() {
            if tasks[i].is_finished() {
                let t = tasks.swap_remove(i);
                let r = self.repo.block_on(t).map_err(|e| Error::Incomplete(format!("upload task failed: {e}")))?;
                self.done.lock().expect("poisoned").push(r?);
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// Writes an index file listing the packs uploaded so far that no index file
    /// lists yet (None if there are none). A long backup does this from time to
    /// time: what it has stored is then indexed, and the list of new packs held in
    /// memory stays short.
    pub fn checkpoint(&self) -> Result<Option<Id>> {
        self.check_failed()?;
        let packs = std::mem::take(&mut *self.done.lock().expect("poisoned"));
        if packs.is_empty() {
            return Ok(None);
        }
        let file = IndexFile { supersedes: Vec::new(), packs, pending: Vec::new() };
        Ok(Some(self.repo.save_file(FileKind::Index, &file.encode())?))
    }

    /// Uploads the open packs, waits for every upload and writes one index file
    /// listing them (and any others not indexed by a checkpoint). Returns its ID
    /// (None if nothing new was written).
    pub fn finish(&self) -> Result<Option<Id>> {
        let target = self.repo.config().pack_size as usize;
        let mut last: Option<PackWriter> = None;
        for (i, slot) in self.open.iter().enumerate() {
            let Some(w) = slot.lock().expect("poisoned").take().filter(|w| !w.is_empty()) else { continue };
            match last.take() {
                // Data packs that together fit in one go as one: a small backup
                // whose chunks were spread over two packs would show each
                // pack's size, close to single chunk lengths.
                Some(mut l) if i < DATA_PACKS && l.size() + w.size() <= target => {
                    l.append(w);
                    last = Some(l);
                }
                Some(l) => {
                    self.upload(l)?;
                    last = Some(w);
                }
                None => last = Some(w),
            }
        }
        if let Some(l) = last {
            self.upload(l)?;
        }
        self.wait_and_index()
    }

    /// After an interruption or a failure: drops the open packs, waits for the
    /// uploads already running and indexes every pack that arrived, so that the
    /// next backup finds what this one stored. Returns the index file's ID.
    pub fn salvage(&self) -> Result<Option<Id>> {
        for slot in &self.open {
            slot.lock().expect("poisoned").take();
        }
        self.wait_and_index()
    }

    fn wait_and_index(&self) -> Result<Option<Id>> {
        let tasks = std::mem::take(&mut *self.in_flight.lock().expect("poisoned"));
        let mut first_err = None;
        for t in tasks {
            match self.repo.block_on(t) {
                Ok(Ok(p)) => self.done.lock().expect("poisoned").push(p),
                Ok(Err(e)) => first_err = first_err.or(Some(Error::from(e))),
                Err(e) => first_err = first_err.or(Some(Error::Incomplete(format!("upload task failed: {e}")))),
            }
        }
        let indexed = self.checkpoint();
        match first_err {
            Some(e) => Err(e),
            None => indexed,
        }
    }
}
