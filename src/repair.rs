//! Repairs. `repair index` rebuilds the index from the packs themselves: every
//! pack's header (authenticated) says which blobs it holds and where, so lost,
//! damaged or incomplete index files can be replaced by new ones. `repair
//! snapshots` rewrites snapshots without the files whose data is lost, so that
//! the rest stays restorable and `check` passes again.

use std::collections::{HashMap, HashSet};

use futures_util::StreamExt;

use crate::backend::{FileKind, Handle};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::Repository;
use crate::repo::index::{IndexFile, IndexPack};
use crate::repo::pack::{self, BlobType};
use crate::repo::packer::Packer;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{NodeType, Tree};
use crate::{Progress, Report};

/// What `repair index` found and did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RepairIndexStats {
    /// Packs whose header was read.
    pub packs: usize,
    /// Blobs they hold.
    pub blobs: u64,
    /// Packs whose header could not be read or authenticated: (pack, why).
    pub damaged: Vec<(String, String)>,
    /// Index files replaced.
    pub index_files_replaced: usize,
    /// Index files written.
    pub index_files_written: usize,
    /// Whether nothing was changed.
    pub dry_run: bool,
}

/// Bytes read from the end of a pack at first: the header of a pack of up to
/// about 1,400 blobs is in them (one request per pack).
const TAIL: u64 = 64 << 10;

/// Reads and authenticates the header of pack `id` of `size` bytes.
async fn read_header(repo: &Repository, id: Id, size: u64) -> Result<IndexPack> {
    let h = Handle::id(FileKind::Pack, &id);
    let b = repo.backend();
    if size < 4 {
        return Err(Error::corrupt("the pack is too short"));
    }
    let from = size.saturating_sub(TAIL);
    let tail = b.read(&h, Some(from..size)).await?;
    if tail.len() as u64 != size - from {
        return Err(Error::corrupt("the storage returned a short read"));
    }
    let start = pack::header_start(size, &tail[tail.len() - 4..])?;
    let sealed = if start >= from {
        tail.slice((start - from) as usize..tail.len() - 4)
    } else {
        let s = b.read(&h, Some(start..size - 4)).await?;
        if s.len() as u64 != size - 4 - start {
            return Err(Error::corrupt("the storage returned a short read"));
        }
        s
    };
    let blobs = pack::parse_header(repo.key(), &sealed, start)?;
    Ok(IndexPack { id, size, blobs })
}

/// Rebuilds the index from the headers of all packs: writes new index files
/// that supersede every existing one, then removes those. Packs marked for
/// deletion by prune become live again (the next prune marks them anew). Holds
/// the exclusive lease. Damaged packs are left out and listed.
pub fn repair_index(repo: &Repository, dry_run: bool, report: &dyn crate::Report) -> Result<RepairIndexStats> {
    let _lease = if dry_run { None } else { Some(repo.lock_exclusive()?) };
    let old = repo.list_ids(FileKind::Index)?;
    let listed = repo.block_on(repo.backend().list(FileKind::Pack))?;
    let mut stats = RepairIndexStats { dry_run, index_files_replaced: old.len(), ..RepairIndexStats::default() };
    let concurrency = repo.backend().concurrency().max(1) * 2;
    let results: Vec<(String, Result<IndexPack>)> = repo.block_on(
        futures_util::stream::iter(listed)
            .map(|f| async move {
                let r = match Id::from_hex(&f.name) {
                    Ok(id) => read_header(repo, id, f.size).await,
                    Err(e) => Err(e),
                };
                (f.name, r)
            })
            .buffer_unordered(concurrency)
            .collect(),
    );
    let mut packs = Vec::new();
    for (name, r) in results {
        crate::check_interrupted()?;
        match r {
            Ok(p) => {
                stats.blobs += p.blobs.len() as u64;
                packs.push(p);
            }
            Err(e) => {
                report.warn(&format!("pack {name}: {e}; its blobs are not indexed"));
                stats.damaged.push((name, e.to_string()));
            }
        }
    }
    packs.sort_by_key(|p| p.id);
    stats.packs = packs.len();
    if dry_run {
        return Ok(stats);
    }
    // Superseded too: what the old files superseded, where they can be read (so
    // that files deleted long ago stay superseded if they come back).
    let mut supersedes = old.clone();
    for f in repo.load_files(FileKind::Index, &old).into_iter().flatten() {
        if let Ok(f) = IndexFile::decode(&f) {
            supersedes.extend(f.supersedes);
        }
    }
    supersedes.sort();
    supersedes.dedup();
    let file = IndexFile { supersedes, packs, pending: Vec::new() };
    stats.index_files_written = repo.save_index(&file)?.len();
    for id in &old {
        repo.remove_file(&Handle::id(FileKind::Index, id))?;
    }
    repo.invalidate_index();
    Ok(stats)
}

/// What `repair snapshots` does.
#[derive(Debug, Clone, Default)]
pub struct RepairSnapshotsOptions {
    /// Also read every pack to find damaged blobs (else only blobs that the
    /// index lacks, or whose pack is missing or of the wrong size, count).
    pub read_data: bool,
    /// Remove each original once its repaired version is saved.
    pub forget: bool,
    /// Only say what would change.
    pub dry_run: bool,
}

/// One repaired snapshot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RepairedSnapshot {
    /// The original.
    pub id: String,
    /// The repaired version (None in a dry run).
    pub new_id: Option<String>,
    /// Files left out.
    pub files_dropped: u64,
    /// Directories whose tree was unreadable, now empty.
    pub dirs_emptied: u64,
}

/// What `repair snapshots` found and did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairSnapshotsStats {
    /// Snapshots looked at.
    pub snapshots: usize,
    /// Those that needed a repair.
    pub repaired: Vec<RepairedSnapshot>,
    /// Whether the originals were removed.
    pub forget: bool,
    /// Whether nothing was changed.
    pub dry_run: bool,
}

/// Rewrites trees without what cannot be read.
struct Rewriter<'a> {
    repo: &'a Repository,
    index: &'a crate::repo::index::Index,
    damage: &'a crate::checker::Damage,
    packer: &'a Packer<'a>,
    report: &'a dyn Report,
    /// Tree ID -> (its repaired ID, files dropped, directories emptied below it).
    done: HashMap<Id, (Id, u64, u64)>,
    /// New trees stored.
    saved: HashSet<Id>,
}

impl Rewriter<'_> {
    fn lost(&self, id: &Id) -> bool {
        self.index.get(id).is_none() || self.damage.is_bad(self.index, id)
    }

    /// The repaired version of tree `id` at `path` of snapshot `snap`.
    fn tree(&mut self, id: Id, path: &str, snap: &Id) -> Result<(Id, u64, u64)> {
        if let Some(&r) = self.done.get(&id) {
            return Ok(r);
        }
        let tree = if self.lost(&id) { Err(Error::corrupt("its tree is lost")) } else { self.repo.load_tree(&id) };
        let mut tree = match tree {
            Ok(t) => t,
            Err(e) => {
                self.report.warn(&format!("snapshot {}: {path}: unreadable directory, now empty: {e}", snap.short()));
                let r = (self.save(&Tree::default())?, 0, 1);
                self.done.insert(id, r);
                return Ok(r);
            }
        };
        let (mut files, mut dirs) = (0, 0);
        let mut kept = Vec::with_capacity(tree.entries.len());
        for mut n in std::mem::take(&mut tree.entries) {
            let child = format!("{}/{}", path.trim_end_matches('/'), String::from_utf8_lossy(&n.name.0));
            match n.node_type {
                NodeType::Dir => {
                    let (sub, f, d) = self.tree(n.subtree.unwrap_or_default(), &child, snap)?;
                    n.subtree = Some(sub);
                    (files, dirs) = (files + f, dirs + d);
                }
                NodeType::File if n.content.as_deref().unwrap_or_default().iter().any(|b| self.lost(b)) => {
                    self.report.warn(&format!("snapshot {}: {child}: data lost, file left out", snap.short()));
                    files += 1;
                    continue;
                }
                _ => {}
            }
            kept.push(n);
        }
        tree.entries = kept;
        let r = if files + dirs == 0 { (id, 0, 0) } else { (self.save(&tree)?, files, dirs) };
        self.done.insert(id, r);
        Ok(r)
    }

    fn save(&mut self, tree: &Tree) -> Result<Id> {
        let bytes = tree.to_bytes();
        let id = self.repo.key().blob_id(&bytes);
        if self.lost(&id) && self.saved.insert(id) {
            let mut z = crate::compress::Compressor::new(self.repo.config().compression);
            self.packer.add(BlobType::Tree, id, &bytes, z.as_mut())?;
        }
        Ok(id)
    }
}

/// Rewrites every snapshot (or those in `only`) that uses lost data: files
/// whose content cannot be read are left out, unreadable directories become
/// empty. Each repaired snapshot is saved as a new one tagged `repaired`, with
/// `original` naming the first ID; the original stays unless `forget`. Holds a
/// shared lease, like a backup.
pub fn repair_snapshots(
    repo: &Repository,
    only: Option<Vec<(Id, Snapshot)>>,
    opts: &RepairSnapshotsOptions,
    report: &dyn Report,
    progress: &Progress,
) -> Result<RepairSnapshotsStats> {
    let _lease = if opts.dry_run { None } else { Some(repo.lock_shared()?) };
    let all = repo.snapshots()?;
    // Repaired versions saved by an earlier run: (original, tree) -> ID. A run
    // again reuses them instead of saving the same repair twice.
    let earlier: HashMap<(Id, Id), Id> = all.iter().filter_map(|(id, s)| Some(((s.original?, s.tree), *id))).collect();
    let snaps = only.unwrap_or(all);
    let index = repo.index()?;
    let damage = crate::checker::find_damage(repo, &index, opts.read_data, report, progress)?;
    let packer = Packer::new(repo, opts.dry_run);
    let mut w = Rewriter {
        repo,
        index: &index,
        damage: &damage,
        packer: &packer,
        report,
        done: HashMap::new(),
        saved: HashSet::new(),
    };
    let mut stats = RepairSnapshotsStats {
        snapshots: snaps.len(),
        forget: opts.forget,
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let mut todo = Vec::new();
    for (id, snap) in snaps {
        crate::check_interrupted()?;
        let (tree, files, dirs) = w.tree(snap.tree, "/", &id)?;
        if tree != snap.tree {
            todo.push((id, snap, tree, files, dirs));
        }
    }
    // The new trees are stored and indexed before any snapshot refers to them.
    packer.finish()?;
    for (id, snap, tree, files_dropped, dirs_emptied) in todo {
        let original = snap.original.unwrap_or(id);
        let mut new = Snapshot { tree, original: Some(original), ..snap.clone() };
        if !new.tags.iter().any(|t| t == "repaired") {
            new.tags.push("repaired".into());
        }
        let new_id = match earlier.get(&(original, tree)) {
            _ if opts.dry_run => None,
            Some(&done) => {
                if opts.forget {
                    repo.remove_file(&Handle::id(FileKind::Snapshot, &id))?;
                }
                Some(done)
            }
            None if opts.forget => Some(repo.rewrite_snapshot(&id, &snap, new)?.0),
            None => Some(repo.save_json(FileKind::Snapshot, &new)?),
        };
        stats.repaired.push(RepairedSnapshot {
            id: id.to_hex(),
            new_id: new_id.map(|i| i.to_hex()),
            files_dropped,
            dirs_emptied,
        });
    }
    Ok(stats)
}
