//! Repairs. `repair index` rebuilds the index from the packs themselves: every
//! pack's header (authenticated) says which blobs it holds and where, so lost,
//! damaged or incomplete index files can be replaced by new ones.

use futures_util::StreamExt;

use crate::backend::{FileKind, Handle};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::Repository;
use crate::repo::index::{IndexFile, IndexPack};
use crate::repo::pack;

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
    let file = IndexFile { supersedes: old.clone(), packs, pending: Vec::new() };
    stats.index_files_written = repo.save_index(&file)?.len();
    for id in &old {
        repo.remove_file(&Handle::id(FileKind::Index, id))?;
    }
    repo.invalidate_index();
    Ok(stats)
}
