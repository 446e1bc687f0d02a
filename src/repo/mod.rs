//! The repository: the only layer that hashes, compresses, encrypts, packs and
//! indexes. It turns typed objects into named, sealed files on a [`Backend`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{BackendError, DynBackend, FileKind, Handle};
use crate::chunker::ChunkSizes;
use crate::crypto::{KdfParams, MasterKey, label};
use crate::error::{Error, Result};
use crate::id::{self, Id};

pub mod config;
pub mod index;
pub mod keyfile;
pub mod keys;
pub mod lock;
pub mod pack;
pub mod packer;
pub mod snapshot;
pub mod tree;

use config::Config;
use index::{Index, IndexFile};
use keyfile::KeyFile;
use pack::BlobEntry;
use snapshot::Snapshot;
use tree::Tree;

/// Choices made once, at `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// FastCDC limits.
    pub chunker: ChunkSizes,
    /// Default zstd level (0 = off).
    pub compression: i32,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Pad new blobs' sizes (see [`config::Config::pad`]).
    pub pad: bool,
    /// Argon2id cost for the first key.
    pub kdf: KdfParams,
    /// Take the ID key and chunker seed from this key set (`init
    /// --copy-chunker-params`), so that `copy` from its repository needs no
    /// re-chunking.
    pub content_keys_from: Option<MasterKey>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkSizes::default(),
            compression: 3,
            pack_size: 16 << 20,
            pad: false,
            kdf: KdfParams::default(),
            content_keys_from: None,
        }
    }
}

/// An open repository.
pub struct Repository {
    backend: DynBackend,
    rt: tokio::runtime::Handle,
    key: MasterKey,
    config: Config,
    index: Mutex<Option<Arc<Index>>>,
    tree_packs: Mutex<TreePacks>,
    /// The key file the password opened (none right after `init`'s first key).
    key_id: Option<Id>,
    /// Local copies of index files, snapshots and tree packs (remote repositories).
    cache: Option<crate::cache::Cache>,
    index_settings: IndexSettings,
}

/// How much memory the index may take, and where a larger one is kept on disk.
#[derive(Debug, Clone)]
pub struct IndexSettings {
    /// Bytes of index (40 per blob) kept in memory; a larger index is a sorted
    /// table on disk.
    pub budget: usize,
    /// Where that table is kept between runs (the local cache); without one it
    /// is a temporary file, rebuilt each run.
    pub dir: Option<std::path::PathBuf>,
}

impl Default for IndexSettings {
    fn default() -> Self {
        IndexSettings { budget: 256 << 20, dir: None }
    }
}

/// The name of the on-disk index table in [`IndexSettings::dir`].
pub const INDEX_TABLE: &str = "index.table";

/// Whole tree packs kept after a tree was first read from them, so that walking a
/// snapshot costs one request per tree pack, not one per directory (what matters on
/// a remote backend). Packs are immutable, so entries never go stale; the oldest
/// are dropped beyond [`TreePacks::LIMIT`] bytes.
#[derive(Default)]
struct TreePacks {
    packs: std::collections::HashMap<Id, Bytes>,
    order: std::collections::VecDeque<Id>,
    bytes: usize,
}

impl TreePacks {
    const LIMIT: usize = 32 << 20;

    fn insert(&mut self, id: Id, data: Bytes) {
        self.bytes += data.len();
        if self.packs.insert(id, data).is_none() {
            self.order.push_back(id);
        }
        while self.bytes > Self::LIMIT {
            let Some(old) = self.order.pop_front() else { break };
            self.bytes -= self.packs.remove(&old).map_or(0, |d| d.len());
        }
    }
}

fn label_for(kind: FileKind) -> &'static [u8] {
    match kind {
        FileKind::Config => label::CONFIG,
        FileKind::Index => label::INDEX,
        FileKind::Snapshot => label::SNAPSHOT,
        FileKind::Lock => label::LOCK,
        FileKind::Key | FileKind::Pack => unreachable!("keys and packs are not file bodies"),
    }
}

/// Largest decompressed file body accepted for `kind`.
fn body_limit(kind: FileKind) -> usize {
    if kind == FileKind::Index { 1 << 30 } else { 64 << 20 }
}

impl Repository {
    /// Creates a new repository at `backend` and opens it.
    pub fn init(
        backend: DynBackend,
        rt: tokio::runtime::Handle,
        password: &[u8],
        opts: &InitOptions,
    ) -> Result<Repository> {
        let config = Config {
            version: config::FORMAT_VERSION,
            id: {
                let mut b = [0u8; 32];
                crate::crypto::random_bytes(&mut b)?;
                Id(b)
            },
            chunker: opts.chunker,
            compression: opts.compression,
            pack_size: opts.pack_size,
            pad: opts.pad,
        };
        config.validate()?;
        match rt.block_on(backend.read(&Handle::config(), None)) {
            Ok(_) => return Err(Error::RepoExists(backend.location())),
            Err(BackendError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        rt.block_on(backend.create())?;
        let mut key = MasterKey::random()?;
        if let Some(other) = &opts.content_keys_from {
            key = key.with_content_keys_of(other);
        }
        let repo = Repository::assemble(backend, rt, key, config, None);
        repo.add_key(password, opts.kdf)?;
        // The config is written last: its presence is what makes a repository.
        let body = repo.seal_body(FileKind::Config, &serde_json::to_vec(&repo.config).expect("config serializes"));
        repo.block_on(repo.backend.write(&Handle::config(), Bytes::from(body)))?;
        Ok(repo)
    }

    /// Opens the repository at `backend` with `password`.
    pub fn open(backend: DynBackend, rt: tokio::runtime::Handle, password: &[u8]) -> Result<Repository> {
        let sealed_config = match rt.block_on(backend.read(&Handle::config(), None)) {
            Ok(b) => b,
            Err(BackendError::NotFound(_)) => return Err(Error::RepoNotFound(backend.location())),
            Err(e) => return Err(e.into()),
        };
        let keys = rt.block_on(backend.list(FileKind::Key))?;
        if keys.is_empty() {
            return Err(Error::corrupt("the repository has no key files"));
        }
        let mut master = None;
        let mut key_id = None;
        let mut damaged = Vec::new();
        for k in keys {
            let h = Handle { kind: FileKind::Key, name: k.name };
            if k.size > keyfile::MAX_KEY_FILE as u64 {
                damaged.push(format!("{h}: too large"));
                continue;
            }
            let bytes = rt.block_on(backend.read(&h, None))?;
            if Id::hash(&bytes).to_hex() != h.name {
                damaged.push(format!("{h}: content does not match its name"));
                continue;
            }
            match KeyFile::parse(&bytes).and_then(|kf| kf.open(password)) {
                Ok(Some(m)) => {
                    master = Some(m);
                    key_id = Id::from_hex(&h.name).ok();
                    break;
                }
                Ok(None) => {}
                Err(e) => damaged.push(format!("{h}: {e}")),
            }
        }
        let Some(key) = master else {
            if !damaged.is_empty() {
                eprintln!("warning: unusable key files: {}", damaged.join("; "));
            }
            return Err(Error::WrongPassword);
        };
        let plain =
            open_body(&key, FileKind::Config, &sealed_config).map_err(|e| Error::corrupt(format!("config: {e}")))?;
        let config: Config = serde_json::from_slice(&plain).map_err(|e| Error::corrupt(format!("config: {e}")))?;
        config.validate()?;
        Ok(Repository::assemble(backend, rt, key, config, key_id))
    }

    /// A repository handle with nothing loaded or cached yet.
    fn assemble(
        backend: DynBackend,
        rt: tokio::runtime::Handle,
        key: MasterKey,
        config: Config,
        key_id: Option<Id>,
    ) -> Repository {
        Repository {
            backend,
            rt,
            key,
            config,
            index: Mutex::new(None),
            tree_packs: Mutex::default(),
            key_id,
            cache: None,
            index_settings: IndexSettings::default(),
        }
    }

    /// Sets the index memory budget and where a larger index is kept.
    pub fn set_index_settings(&mut self, s: IndexSettings) {
        self.index_settings = s;
    }

    /// Uses `cache` for index files, snapshots and tree packs from now on.
    pub fn set_cache(&mut self, cache: Option<crate::cache::Cache>) {
        self.cache = cache;
    }

    /// The local cache, if one is used.
    pub fn cache(&self) -> Option<&crate::cache::Cache> {
        self.cache.as_ref()
    }

    /// The cache, for the kinds it holds.
    fn cache_for(&self, kind: FileKind) -> Option<&crate::cache::Cache> {
        self.cache.as_ref().filter(|_| matches!(kind, FileKind::Index | FileKind::Snapshot | FileKind::Pack))
    }

    /// A whole file, from the cache if it holds it (index files, snapshots and
    /// tree packs), else from the backend (then cached).
    fn fetch(&self, h: &Handle) -> Result<Bytes> {
        if let Some(c) = self.cache_for(h.kind)
            && let Some(d) = c.get(h)
        {
            return Ok(d);
        }
        let d = self.block_on(self.backend.read(h, None))?;
        if let Some(c) = self.cache_for(h.kind) {
            c.put(h, &d);
        }
        Ok(d)
    }

    /// The ID of the key file that the password opened.
    pub fn key_id(&self) -> Option<Id> {
        self.key_id
    }

    /// Wraps the master key under another password; returns the new key file's ID.
    pub fn add_key(&self, password: &[u8], params: KdfParams) -> Result<Id> {
        let kf = KeyFile::create(&self.key, password, params)?;
        let bytes = serde_json::to_vec_pretty(&kf).expect("key file serializes");
        let id = Id::hash(&bytes);
        self.block_on(self.backend.write(&Handle::id(FileKind::Key, &id), Bytes::from(bytes)))?;
        Ok(id)
    }

    /// Runs a backend future to completion from a plain (non-async) thread.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The runtime the backend runs on.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }

    /// The storage.
    pub fn backend(&self) -> &DynBackend {
        &self.backend
    }

    /// The decrypted config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The master key set.
    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    fn seal_body(&self, kind: FileKind, payload: &[u8]) -> Vec<u8> {
        seal_body(&self.key, kind, payload)
    }

    /// Seals `payload` as a file of `kind`, named by the hash of its stored bytes.
    pub fn save_file(&self, kind: FileKind, payload: &[u8]) -> Result<Id> {
        let sealed = Bytes::from(self.seal_body(kind, payload));
        let id = Id::hash(&sealed);
        let h = Handle::id(kind, &id);
        match self.block_on(self.backend.write(&h, sealed.clone())) {
            Ok(()) | Err(BackendError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(c) = self.cache_for(kind) {
            c.put(&h, &sealed);
        }
        if kind == FileKind::Index {
            // The cached index no longer lists everything: reload on next use.
            *self.index.lock().expect("poisoned") = None;
        }
        Ok(id)
    }

    /// Reads, verifies (name hash, authentication) and opens a file of `kind`.
    pub fn load_file(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
        let h = Handle::id(kind, id);
        let sealed = self.fetch(&h)?;
        self.open_file(&h, &sealed)
    }

    fn open_file(&self, h: &Handle, sealed: &[u8]) -> Result<Vec<u8>> {
        if Id::hash(sealed).to_hex() != h.name {
            return Err(Error::corrupt(format!("{h}: content does not match its name (damaged or truncated)")));
        }
        open_body(&self.key, h.kind, sealed).map_err(|e| Error::corrupt(format!("{h}: {e}")))
    }

    /// Saves a value as JSON in a file of `kind`.
    pub fn save_json<T: Serialize>(&self, kind: FileKind, value: &T) -> Result<Id> {
        self.save_file(kind, &serde_json::to_vec(value).expect("values serialize"))
    }

    /// Loads a JSON file of `kind`.
    pub fn load_json<T: DeserializeOwned>(&self, kind: FileKind, id: &Id) -> Result<T> {
        let plain = self.load_file(kind, id)?;
        serde_json::from_slice(&plain).map_err(|e| Error::corrupt(format!("{}: {e}", Handle::id(kind, id))))
    }

    /// IDs of all files of `kind`.
    pub fn list_ids(&self, kind: FileKind) -> Result<Vec<Id>> {
        self.list_files(kind)?.iter().map(|f| Id::from_hex(&f.name)).collect()
    }

    /// The files of `kind` with their sizes; cached copies of files no longer
    /// listed are dropped (except tree packs, which the index decides about).
    fn list_files(&self, kind: FileKind) -> Result<Vec<crate::backend::FileInfo>> {
        let files = self.block_on(self.backend.list(kind))?;
        if let Some(c) = self.cache_for(kind).filter(|_| kind != FileKind::Pack) {
            c.retain(kind, &files.iter().map(|f| f.name.clone()).collect());
        }
        Ok(files)
    }

    /// Runs `f`, which lists index files and reads them, again (up to 5 times)
    /// if a listed file is gone: a prune replaced it meanwhile, so a newer one
    /// supersedes it and a new listing shows that one.
    fn retry_vanished<T>(&self, f: impl Fn() -> Result<T>) -> Result<T> {
        let mut tries = 0;
        loop {
            match f() {
                Err(Error::Backend(e)) if e.is_not_found() && tries < 5 => tries += 1,
                r => return r,
            }
        }
    }

    /// Reads many files of `kind` concurrently; results in the order of `ids`.
    pub fn load_files(&self, kind: FileKind, ids: &[Id]) -> Vec<Result<Vec<u8>>> {
        let limit = Arc::new(tokio::sync::Semaphore::new(self.backend.concurrency().max(1) * 2));
        let cache = self.cache_for(kind);
        let tasks: Vec<_> = ids
            .iter()
            .map(|id| {
                let h = Handle::id(kind, id);
                if let Some(d) = cache.and_then(|c| c.get(&h)) {
                    return Err(d);
                }
                let (b, limit) = (Arc::clone(&self.backend), Arc::clone(&limit));
                Ok(self.rt.spawn(async move {
                    let _permit = limit.acquire_owned().await;
                    b.read(&h, None).await
                }))
            })
            .collect();
        tasks
            .into_iter()
            .zip(ids)
            .map(|(t, id)| {
                let h = Handle::id(kind, id);
                let sealed = match t {
                    Err(cached) => cached,
                    Ok(t) => {
                        let d = self.block_on(t).map_err(|e| Error::Incomplete(format!("reader failed: {e}")))??;
                        if let Some(c) = cache {
                            c.put(&h, &d);
                        }
                        d
                    }
                };
                self.open_file(&h, &sealed)
            })
            .collect()
    }

    /// Every snapshot, oldest first. Unreadable snapshot files are reported to `warn`.
    pub fn snapshots_with(&self, mut warn: impl FnMut(Id, Error)) -> Result<Vec<(Id, Snapshot)>> {
        let ids = self.list_ids(FileKind::Snapshot)?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, r) in ids.iter().zip(self.load_files(FileKind::Snapshot, &ids)) {
            match r.and_then(|p| {
                serde_json::from_slice::<Snapshot>(&p).map_err(|e| Error::corrupt(format!("snapshot {id}: {e}")))
            }) {
                Ok(s) => out.push((*id, s)),
                Err(e) => warn(*id, e),
            }
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Every readable snapshot, oldest first (damaged ones are skipped with a warning).
    pub fn snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        self.snapshots_with(|id, e| eprintln!("warning: skipping snapshot {}: {e}", id.short()))
    }

    /// Resolves `latest` (the newest complete snapshot), a full ID or a unique
    /// prefix.
    pub fn find_snapshot(&self, spec: &str) -> Result<(Id, Snapshot)> {
        if spec == "latest" {
            // (A partial snapshot, an interrupted backup's, is not the latest.)
            return self
                .snapshots()?
                .into_iter()
                .rfind(|(_, s)| !s.partial)
                .ok_or_else(|| Error::NotFound("the repository has no (complete) snapshots".into()));
        }
        let ids = self.list_ids(FileKind::Snapshot)?;
        let id = id::find_by_prefix(&ids, spec, "snapshot")?;
        Ok((id, self.load_json(FileKind::Snapshot, &id)?))
    }

    /// All index files, parsed. A damaged one is an error naming it.
    pub fn load_index_files(&self) -> Result<Vec<(Id, IndexFile)>> {
        self.retry_vanished(|| {
            let ids = self.list_ids(FileKind::Index)?;
            let mut out = Vec::with_capacity(ids.len());
            self.for_each_index_file(&ids, |id, f| {
                out.push((id, f?));
                Ok(true)
            })?;
            Ok(out)
        })
    }

    /// Saves `f` as index files of at most [`index::MAX_FILE_BLOBS`] blobs, the
    /// one that supersedes older files last (see [`IndexFile::split`]); returns
    /// their IDs in the order written.
    pub fn save_index(&self, f: &IndexFile) -> Result<Vec<Id>> {
        f.split(index::MAX_FILE_BLOBS).iter().map(|part| self.save_file(FileKind::Index, &part.encode())).collect()
    }

    /// Forgets the cached index (after index files were replaced).
    pub fn invalidate_index(&self) {
        *self.index.lock().expect("poisoned") = None;
    }

    /// The index, loaded on first use: in memory, or beyond the budget a table
    /// on disk (reused from the last run when the index files it covers are all
    /// still there, with newer ones in memory on top).
    pub fn index(&self) -> Result<Arc<Index>> {
        let mut slot = self.index.lock().expect("poisoned");
        if let Some(i) = &*slot {
            return Ok(Arc::clone(i));
        }
        let idx = Arc::new(self.retry_vanished(|| self.load_index())?);
        self.adopt_index(&mut slot, Arc::clone(&idx));
        Ok(idx)
    }

    fn load_index(&self) -> Result<Index> {
        let listed = self.list_files(FileKind::Index)?;
        let mut ids = listed.iter().map(|f| Id::from_hex(&f.name)).collect::<Result<Vec<_>>>()?;
        ids.sort_unstable();
        let s = &self.index_settings;
        let table = s.dir.as_ref().map(|d| d.join(INDEX_TABLE));
        let key = self.key.local_key();
        // An index entry is at least 32 bytes stored (its ID does not compress),
        // so this bounds the number of blobs from above.
        let stored: u64 = listed.iter().map(|f| f.size).sum();
        let large = stored / 32 * 40 > s.budget as u64;
        if large
            && let Some(base) = table.as_deref().and_then(|t| Index::open_table(t, &key))
            && base.covers().iter().all(|c| ids.binary_search(c).is_ok())
        {
            // Index files newer than the table, in memory on top of it, unless
            // they replace some it covers or are many (then rebuild).
            let newer: Vec<Id> = ids.iter().filter(|i| base.covers().binary_search(i).is_err()).copied().collect();
            let limit = s.budget / 8 / 40;
            let mut b = index::Builder::new(index::Limits::unlimited());
            let mut fits = true;
            self.for_each_index_file(&newer, |id, f| {
                b.add(id, &f?)?;
                fits = b.blobs() <= limit && !b.supersedes_any(base.covers());
                Ok(fits)
            })?;
            if fits {
                return b.finish_over(base);
            }
        }
        self.build_index(&ids, large, table, |_, e| Err(e))
    }

    /// Builds the index from every index file in `ids` (a few at a time, never
    /// all in memory), within the memory budget: beyond it, as a table on disk
    /// (`table`, else a temporary file). A file that cannot be read or decoded
    /// goes to `damaged`, which fails the build or lets it go on without it.
    fn build_index(
        &self,
        ids: &[Id],
        large: bool,
        mut table: Option<PathBuf>,
        mut damaged: impl FnMut(Id, Error) -> Result<()>,
    ) -> Result<Index> {
        let s = &self.index_settings;
        if large
            && let Some(d) = &s.dir
            && let Err(e) = crate::cache::prepare(d)
        {
            eprintln!("warning: the index is kept in a temporary file ({}: {e})", d.display());
            table = None;
        }
        let dir = table.as_deref().and_then(Path::parent).map_or_else(std::env::temp_dir, Path::to_path_buf);
        let limits = index::Limits { budget: s.budget, spill_from_start: large, dir, key: self.key.local_key() };
        let mut b = index::Builder::new(limits);
        let mut read = Vec::with_capacity(ids.len());
        self.for_each_index_file(ids, |id, f| {
            match f {
                Ok(f) => {
                    b.add(id, &f)?;
                    read.push(id);
                }
                Err(e) => damaged(id, e)?,
            }
            Ok(true)
        })?;
        let idx = b.finish(&read, table.as_deref())?;
        if let Some(t) = table.filter(|_| !idx.on_disk()) {
            let _ = std::fs::remove_file(t);
        }
        Ok(idx)
    }

    /// For `check`: builds the index from every listed index file, reading each
    /// (none is taken from a table built before), within the memory budget;
    /// a damaged one goes to `damaged` and is left out. The result becomes the
    /// repository's index.
    pub fn check_index(&self, mut damaged: impl FnMut(Id, Error)) -> Result<Arc<Index>> {
        let listed = self.list_files(FileKind::Index)?;
        let mut ids = listed.iter().map(|f| Id::from_hex(&f.name)).collect::<Result<Vec<_>>>()?;
        ids.sort_unstable();
        let large = listed.iter().map(|f| f.size).sum::<u64>() / 32 * 40 > self.index_settings.budget as u64;
        let table = self.index_settings.dir.as_ref().map(|d| d.join(INDEX_TABLE));
        let idx = self.build_index(&ids, large, table, |id, e| {
            damaged(id, e);
            Ok(())
        })?;
        Ok(self.set_index(idx))
    }

    /// Reads and decodes index files a few at a time (fetching and decrypting in
    /// parallel), handing each to `f` until it returns false.
    fn for_each_index_file(&self, ids: &[Id], mut f: impl FnMut(Id, Result<IndexFile>) -> Result<bool>) -> Result<()> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
        for batch in ids.chunks(threads * 4) {
            let decoded: Vec<Result<IndexFile>> = std::thread::scope(|sc| {
                let parts: Vec<_> = batch
                    .chunks(batch.len().div_ceil(threads))
                    .map(|part| {
                        sc.spawn(move || {
                            part.iter()
                                .zip(self.load_files(FileKind::Index, part))
                                .map(|(id, r)| {
                                    IndexFile::decode(&r?).map_err(|e| Error::corrupt(format!("index/{id}: {e}")))
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                parts.into_iter().flat_map(|h| h.join().expect("index reader panicked")).collect()
            });
            for (id, r) in batch.iter().zip(decoded) {
                if !f(*id, r)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Uses `idx`, built by the caller from index files it loaded anyway, as the
    /// in-memory index (instead of loading them a second time).
    pub fn set_index(&self, idx: Index) -> Arc<Index> {
        let idx = Arc::new(idx);
        self.adopt_index(&mut self.index.lock().expect("poisoned"), Arc::clone(&idx));
        idx
    }

    fn adopt_index(&self, slot: &mut Option<Arc<Index>>, idx: Arc<Index>) {
        if let Some(c) = &self.cache {
            // Cached tree packs that no index lists any more (pruned) go.
            c.retain(FileKind::Pack, &idx.packs().iter().map(|(id, _)| id.to_hex()).collect());
        }
        *slot = Some(idx);
    }

    /// Removes a file; one that is already gone is fine.
    pub fn remove_file(&self, h: &Handle) -> Result<()> {
        match self.block_on(self.backend.remove(h)) {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a blob's stored bytes from its pack.
    pub fn read_stored(&self, pack: &Id, e: &BlobEntry) -> Result<Bytes> {
        let h = Handle::id(FileKind::Pack, pack);
        let range = e.offset as u64..e.offset as u64 + e.length as u64;
        Ok(self.block_on(self.backend.read(&h, Some(range)))?)
    }

    /// The stored bytes of a tree blob, from the tree pack cache (reading the whole
    /// pack on a miss).
    fn tree_pack_range(&self, pack: &Id, e: &BlobEntry) -> Result<Bytes> {
        let cached = self.tree_packs.lock().expect("poisoned").packs.get(pack).cloned();
        let data = match cached {
            Some(d) => d,
            None => {
                let d = self.fetch(&Handle::id(FileKind::Pack, pack))?;
                self.tree_packs.lock().expect("poisoned").insert(*pack, d.clone());
                d
            }
        };
        let range = e.offset as usize..e.offset as usize + e.length as usize;
        data.get(range).map(|b| data.slice_ref(b)).ok_or_else(|| Error::corrupt(format!("pack {pack} is truncated")))
    }

    /// Forgets the tree packs kept in memory (after a tree walk that is done).
    pub fn drop_tree_cache(&self) {
        *self.tree_packs.lock().expect("poisoned") = TreePacks::default();
    }

    /// Reads, decrypts, decompresses and verifies a blob.
    pub fn read_blob(&self, id: &Id) -> Result<Vec<u8>> {
        let idx = self.index()?;
        let loc = idx.get(id).ok_or_else(|| Error::corrupt(format!("blob {id} is not in the index")))?;
        let (pack, pack_size) = idx.packs()[loc.pack as usize];
        let stored = if loc.entry.blob_type == pack::BlobType::Tree && pack_size <= (TreePacks::LIMIT / 2) as u64 {
            self.tree_pack_range(&pack, &loc.entry)?
        } else {
            self.read_stored(&pack, &loc.entry)?
        };
        pack::decode_blob(&self.key, &loc.entry, &stored).map_err(|e| Error::corrupt(format!("pack {pack}: {e}")))
    }

    /// Loads and validates a tree blob.
    pub fn load_tree(&self, id: &Id) -> Result<Tree> {
        Tree::from_bytes(&self.read_blob(id)?).map_err(|e| Error::corrupt(format!("tree {id}: {e}")))
    }
}

/// Seals a file body: a compression marker byte (zstd level 3 when it helps),
/// then the payload, sealed under `kind`'s label.
fn seal_body(key: &MasterKey, kind: FileKind, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload.len() / 2 + 1);
    match zstd::bulk::compress(payload, 3) {
        Ok(c) if c.len() < payload.len() => {
            body.push(1);
            body.extend_from_slice(&c);
        }
        _ => {
            body.push(0);
            body.extend_from_slice(payload);
        }
    }
    key.seal(label_for(kind), &body)
}

/// Opens a sealed file body: authentication, compression marker, bounded zstd.
fn open_body(key: &MasterKey, kind: FileKind, sealed: &[u8]) -> Result<Vec<u8>> {
    let body = key.open(label_for(kind), sealed)?;
    match body.split_first() {
        Some((0, rest)) => Ok(rest.to_vec()),
        Some((1, rest)) => {
            let limit = body_limit(kind);
            let mut out = Vec::new();
            let mut dec = zstd::stream::read::Decoder::new(rest).map_err(|e| Error::corrupt(format!("zstd: {e}")))?;
            let n = std::io::copy(&mut std::io::Read::take(&mut dec, limit as u64 + 1), &mut out)
                .map_err(|e| Error::corrupt(format!("decompression failed: {e}")))?;
            if n > limit as u64 {
                return Err(Error::corrupt(format!("decompresses to more than {limit} bytes")));
            }
            Ok(out)
        }
        _ => Err(Error::corrupt("unknown compression marker")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::mem::MemBackend;

    fn opts() -> InitOptions {
        InitOptions { kdf: KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 }, ..InitOptions::default() }
    }

    #[test]
    fn init_open_files_and_tampering() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let b: DynBackend = Arc::new(MemBackend::new());
        let repo = Repository::init(Arc::clone(&b), rt.handle().clone(), b"pw", &opts()).unwrap();
        assert!(matches!(
            Repository::init(Arc::clone(&b), rt.handle().clone(), b"pw", &opts()),
            Err(Error::RepoExists(_))
        ));
        assert!(matches!(Repository::open(Arc::clone(&b), rt.handle().clone(), b"nope"), Err(Error::WrongPassword)));
        // A second key opens the same repository.
        repo.add_key(b"second", opts().kdf).unwrap();
        let again = Repository::open(Arc::clone(&b), rt.handle().clone(), b"second").unwrap();
        assert_eq!(again.config(), repo.config());

        let id = repo.save_file(FileKind::Snapshot, b"{\"x\":1}").unwrap();
        assert_eq!(again.load_file(FileKind::Snapshot, &id).unwrap(), b"{\"x\":1}");
        // Swapping a file under another name is detected by the name hash.
        let other = repo.save_file(FileKind::Snapshot, b"{\"x\":2}").unwrap();
        let h = Handle::id(FileKind::Snapshot, &id);
        let stolen = rt.block_on(b.read(&Handle::id(FileKind::Snapshot, &other), None)).unwrap();
        rt.block_on(b.remove(&h)).unwrap();
        rt.block_on(b.write(&h, stolen)).unwrap();
        let e = repo.load_file(FileKind::Snapshot, &id).unwrap_err().to_string();
        assert!(e.contains("does not match its name"), "{e}");
        // An index body cannot be passed off as a snapshot (labels differ).
        let idx = repo.save_file(FileKind::Index, b"CAIRNIX1").unwrap();
        let sealed = rt.block_on(b.read(&Handle::id(FileKind::Index, &idx), None)).unwrap();
        let fake = Handle::id(FileKind::Snapshot, &idx);
        rt.block_on(b.write(&fake, sealed)).unwrap();
        assert!(repo.load_file(FileKind::Snapshot, &idx).is_err());
        assert!(repo.find_snapshot("latest").is_err(), "no valid snapshot JSON exists");
    }

    #[test]
    fn missing_repository() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let b: DynBackend = Arc::new(MemBackend::new());
        assert!(matches!(Repository::open(b, rt.handle().clone(), b"pw"), Err(Error::RepoNotFound(_))));
    }
}
