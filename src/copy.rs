//! Copy snapshots from one repository into another (e.g. local to off-site).
//!
//! When both repositories cut and name content the same way (the destination
//! was made with `init --copy-chunker-params` from the source), trees are
//! identical and only the blobs the destination lacks travel: each is
//! authenticated and checked against its ID with the source key, then sealed
//! with the destination key (compressed data stays compressed). Otherwise every
//! file is re-chunked with the destination's chunker and its trees rebuilt.
//! A snapshot is saved only after all it references is stored; one whose time,
//! host and paths match a destination snapshot is skipped, so copying twice
//! adds nothing.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use serde::Serialize;

use crate::chunker::Chunker;
use crate::crypto::label;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::Repository;
use crate::repo::index::Index;
use crate::repo::pack::BlobType;
use crate::repo::packer::Packer;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::NodeType;

/// What a copy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyStats {
    /// Snapshots copied: (source ID, new ID).
    pub copied: Vec<(Id, Id)>,
    /// Source snapshots already in the destination.
    pub skipped: Vec<Id>,
    /// Whether files had to be re-chunked (different chunker secrets).
    pub rechunked: bool,
    /// Blobs stored in the destination.
    pub blobs_added: u64,
    /// Their stored bytes.
    pub bytes_added: u64,
}

/// What identifies the same point in time in two repositories.
fn identity(s: &Snapshot) -> (i64, u32, String, Vec<String>) {
    (s.time.timestamp(), s.time.timestamp_subsec_nanos(), s.hostname.clone(), s.sorted_paths())
}

/// Reads a file's content from its blobs, one blob at a time.
struct BlobReader<'a> {
    repo: &'a Repository,
    ids: std::slice::Iter<'a, Id>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for BlobReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            let Some(id) = self.ids.next() else { return Ok(0) };
            self.cur = self.repo.read_blob(id).map_err(std::io::Error::other)?;
            self.pos = 0;
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

struct Copier<'a> {
    src: &'a Repository,
    dst: &'a Repository,
    src_index: std::sync::Arc<Index>,
    dst_index: std::sync::Arc<Index>,
    packer: Packer<'a>,
    /// Blobs stored in this run.
    added: HashSet<Id>,
    /// Source tree → destination tree (re-chunking), or trees already handled.
    trees: HashMap<Id, Id>,
    chunker: Chunker,
    buf: Vec<u8>,
    zstd: Option<crate::compress::Compressor>,
    stats: CopyStats,
}

impl Copier<'_> {
    fn have(&self, id: &Id) -> bool {
        self.dst_index.contains(id) || self.added.contains(id)
    }

    /// Moves one blob as it is stored (same content keys): verified with the
    /// source key, sealed with the destination's.
    fn move_blob(&mut self, id: &Id) -> Result<()> {
        if self.have(id) {
            return Ok(());
        }
        let loc =
            self.src_index.get(id).ok_or_else(|| Error::corrupt(format!("blob {id} is not in the source index")))?;
        let pack = self.src_index.packs()[loc.pack as usize].0;
        let stored = self.src.read_stored(&pack, &loc.entry)?;
        crate::repo::pack::decode_blob(self.src.key(), &loc.entry, &stored)
            .map_err(|e| Error::corrupt(format!("source pack {pack}: {e}")))?;
        let payload = self.src.key().open(label::BLOB, &stored)?;
        let sealed = self.dst.key().seal(label::BLOB, &payload);
        self.packer.add_stored(loc.entry.blob_type, *id, loc.entry.compressed, loc.entry.raw_length, &sealed)?;
        self.added.insert(*id);
        self.stats.blobs_added += 1;
        self.stats.bytes_added += sealed.len() as u64;
        Ok(())
    }

    /// Same content keys: every blob below `tid` the destination lacks.
    fn move_tree(&mut self, tid: Id) -> Result<()> {
        let mut stack = vec![tid];
        while let Some(t) = stack.pop() {
            if self.trees.insert(t, t).is_some() {
                continue;
            }
            crate::check_interrupted()?;
            let tree = self.src.load_tree(&t)?;
            for n in &tree.entries {
                match n.node_type {
                    NodeType::Dir => stack.extend(n.subtree),
                    NodeType::File => {
                        for b in n.content.as_deref().unwrap_or_default() {
                            self.move_blob(b)?;
                        }
                    }
                    _ => {}
                }
            }
            self.move_blob(&t)?;
        }
        Ok(())
    }

    /// Different content keys: re-chunk every file and rebuild the trees; returns
    /// the destination tree ID.
    fn rebuild_tree(&mut self, tid: Id) -> Result<Id> {
        if let Some(t) = self.trees.get(&tid) {
            return Ok(*t);
        }
        crate::check_interrupted()?;
        let mut tree = self.src.load_tree(&tid)?;
        for n in &mut tree.entries {
            match n.node_type {
                NodeType::Dir => {
                    let sub = n
                        .subtree
                        .ok_or_else(|| Error::corrupt(format!("tree {tid}: a directory without a subtree")))?;
                    n.subtree = Some(self.rebuild_tree(sub)?);
                }
                NodeType::File => {
                    let ids = n.content.take().unwrap_or_default();
                    let reader = BlobReader { repo: self.src, ids: ids.iter(), cur: Vec::new(), pos: 0 };
                    let mut new = Vec::new();
                    let (dst, packer, added, stats, zstd, dst_index) =
                        (self.dst, &self.packer, &mut self.added, &mut self.stats, &mut self.zstd, &self.dst_index);
                    let mut buf = std::mem::take(&mut self.buf);
                    self.chunker
                        .chunk_reader(reader, &mut buf, |chunk, _| {
                            let id = dst.key().blob_id(chunk);
                            if !dst_index.contains(&id) && added.insert(id) {
                                packer.add(BlobType::Data, id, chunk, zstd.as_mut())?;
                                stats.blobs_added += 1;
                                stats.bytes_added += chunk.len() as u64;
                            }
                            new.push(id);
                            Ok(())
                        })
                        .map_err(|e| match e {
                            crate::chunker::ChunkError::Read(io) => {
                                Error::corrupt(format!("reading a file of tree {tid} from the source: {io}"))
                            }
                            crate::chunker::ChunkError::Sink(e) => e,
                        })?;
                    self.buf = buf;
                    n.content = Some(new);
                }
                _ => {}
            }
        }
        tree.sort();
        let bytes = tree.to_bytes();
        let id = self.dst.key().blob_id(&bytes);
        if !self.have(&id) {
            self.packer.add(BlobType::Tree, id, &bytes, self.zstd.as_mut())?;
            self.added.insert(id);
            self.stats.blobs_added += 1;
            self.stats.bytes_added += bytes.len() as u64;
        }
        self.trees.insert(tid, id);
        Ok(id)
    }
}

/// Copies `snaps` (source snapshots) from `src` into `dst`, oldest first.
pub fn copy(src: &Repository, dst: &Repository, mut snaps: Vec<(Id, Snapshot)>) -> Result<CopyStats> {
    let _lease = dst.lock_shared()?;
    let same = src.key().same_content_keys(dst.key()) && src.config().chunker == dst.config().chunker;
    let existing: HashSet<_> = dst.snapshots()?.iter().map(|(_, s)| identity(s)).collect();
    snaps.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    let mut c = Copier {
        src,
        dst,
        src_index: src.index()?,
        dst_index: dst.index()?,
        packer: Packer::new(dst, false),
        added: HashSet::new(),
        trees: HashMap::new(),
        chunker: Chunker::new(dst.config().chunker, dst.key().chunker_seed()),
        buf: Vec::new(),
        zstd: crate::compress::Compressor::new(dst.config().compression),
        stats: CopyStats { rechunked: !same, ..CopyStats::default() },
    };
    let mut seen = existing;
    for (sid, snap) in snaps {
        if !seen.insert(identity(&snap)) {
            c.stats.skipped.push(sid);
            continue;
        }
        let tree = if same {
            c.move_tree(snap.tree)?;
            snap.tree
        } else {
            c.rebuild_tree(snap.tree)?
        };
        // Everything the snapshot references is stored and indexed before it is.
        c.packer.finish()?;
        let mut new = snap.clone();
        new.tree = tree;
        new.parent = None;
        new.original = Some(snap.original.unwrap_or(sid));
        let id = dst.save_json(crate::backend::FileKind::Snapshot, &new)?;
        c.stats.copied.push((sid, id));
    }
    Ok(c.stats)
}
