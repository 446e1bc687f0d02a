//! Prune: remove data no snapshot uses, in two phases so that it never races a
//! backup.
//!
//! 1. Under the exclusive lease, find every blob the snapshots use; packs with no
//!    used blob are *marked* (pending deletion) and partly used packs above the
//!    unused threshold are *repacked* (their used blobs copied into new packs,
//!    then the old packs marked too).
//! 2. Write one index file that lists the kept packs and the marked ones (as
//!    pending), superseding every index file read, then delete those files. From
//!    then on no backup reuses a blob of a marked pack (it stores it again).
//! 3. Delete the marked packs whose deletion no writer can still depend on: a
//!    writer lease that began before the marking (with a margin for clock skew)
//!    and is still live defers them to a later prune. A marked pack that a newer
//!    snapshot uses after all is kept (resurrected). Then a last index file drops
//!    the deleted packs.
//!
//! Every step leaves a consistent repository: a crash at any point loses
//! nothing a snapshot uses, and the next prune finishes the job.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::backend::{FileKind, Handle};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::Repository;
use crate::repo::index::{IndexFile, IndexPack, PendingPack};
use crate::repo::pack;
use crate::repo::packer::Packer;
use crate::repo::tree::NodeType;

/// Writer leases that began up to this long after a marking still defer the
/// deletion (clocks of different hosts may disagree by this much).
pub const CLOCK_MARGIN: chrono::Duration = chrono::Duration::minutes(10);

/// Temporary upload files older than this are removed by prune.
pub const TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// How much unused data may stay in partly used packs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxUnused {
    /// This percentage of the bytes in use.
    Percent(f64),
    /// This many bytes.
    Bytes(u64),
    /// Any amount: never repack (only whole unused packs are removed).
    Unlimited,
}

impl MaxUnused {
    /// Parses `5%`, `100M`-style sizes (via `size`) or `unlimited`.
    pub fn parse(s: &str, size: impl Fn(&str) -> Option<u64>) -> Option<MaxUnused> {
        let t = s.trim();
        if t == "unlimited" {
            return Some(MaxUnused::Unlimited);
        }
        if let Some(p) = t.strip_suffix('%') {
            return p.trim().parse::<f64>().ok().filter(|p| (0.0..=100.0).contains(p)).map(MaxUnused::Percent);
        }
        size(t).map(MaxUnused::Bytes)
    }
}

/// What `prune` is asked to do.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// The unused-data threshold for repacking (default 5%).
    pub max_unused: MaxUnused,
    /// Repack at most this many bytes of packs.
    pub max_repack: Option<u64>,
    /// Only report what would be done.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions { max_unused: MaxUnused::Percent(5.0), max_repack: None, dry_run: false }
    }
}

/// What prune found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneStats {
    /// Snapshots whose data was kept.
    pub snapshots: usize,
    /// Packs in the index before.
    pub packs_before: usize,
    /// Stored bytes in those packs.
    pub bytes_before: u64,
    /// Blobs in use.
    pub blobs_used: u64,
    /// Stored bytes of the blobs in use.
    pub bytes_used: u64,
    /// Blobs no snapshot uses (or duplicate copies).
    pub blobs_unused: u64,
    /// Their stored bytes.
    pub bytes_unused: u64,
    /// Packs with no used blob, marked for deletion in this run.
    pub packs_unused: usize,
    /// Partly used packs repacked.
    pub packs_repacked: usize,
    /// Bytes of the packs repacked.
    pub bytes_repacked: u64,
    /// New packs written by repacking.
    pub packs_written: usize,
    /// Packs deleted in this run (marked now or by an earlier prune).
    pub packs_deleted: usize,
    /// Their bytes.
    pub bytes_deleted: u64,
    /// Marked packs left for a later prune because a writer may still use them.
    pub packs_deferred: usize,
    /// Their bytes.
    pub bytes_deferred: u64,
    /// Why deletion was deferred, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deferred_because: Option<String>,
    /// Marked packs that a snapshot turned out to use: kept.
    pub packs_resurrected: usize,
    /// Pack files in no index (left by interrupted backups) deleted.
    pub unindexed_deleted: usize,
    /// Their bytes.
    pub unindexed_bytes_deleted: u64,
    /// Why packs in no index were left alone, if they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unindexed_kept_because: Option<String>,
    /// Temporary files of interrupted uploads removed.
    pub temporaries_deleted: u64,
    /// Unused bytes left in kept packs.
    pub bytes_unused_after: u64,
    /// Whether this was a dry run (nothing changed).
    pub dry_run: bool,
}

/// A test hook: `CAIRN_TEST_CRASH_AT=POINT` aborts the process at that point,
/// as a power cut would (used by the crash-safety tests).
fn crash_point(point: &str) {
    if std::env::var("CAIRN_TEST_CRASH_AT").is_ok_and(|v| v == point) {
        eprintln!("CAIRN_TEST_CRASH_AT={point}: aborting");
        std::process::abort();
    }
}

/// Every snapshot. One that is listed but cannot be read stops prune: its blobs
/// would otherwise count as unused (one listed and then gone was removed
/// meanwhile, by forget, and is left out).
fn readable_snapshots(repo: &Repository) -> Result<Vec<(Id, crate::repo::snapshot::Snapshot)>> {
    let mut bad = None;
    let snaps = repo.snapshots_with(|id, e| match e {
        Error::Backend(b) if b.is_not_found() => {}
        e => {
            bad.get_or_insert(format!("snapshot {}: {e}", id.short()));
        }
    })?;
    match bad {
        Some(b) => Err(Error::corrupt(format!(
            "{b}; prune stops without deleting anything (run `cairn check`; forget a damaged snapshot first)"
        ))),
        None => Ok(snaps),
    }
}

/// Every blob (tree and data) the snapshots `roots` use, walking each tree once.
fn used_blobs(repo: &Repository, roots: impl IntoIterator<Item = Id>, used: &mut HashSet<Id>) -> Result<()> {
    let mut stack: Vec<Id> = roots.into_iter().collect();
    while let Some(tid) = stack.pop() {
        if !used.insert(tid) {
            continue;
        }
        crate::check_interrupted()?;
        let tree = repo
            .load_tree(&tid)
            .map_err(|e| Error::corrupt(format!("{e}; prune stops without deleting anything (run `cairn check`)")))?;
        for n in tree.entries {
            match n.node_type {
                NodeType::Dir => stack.extend(n.subtree),
                NodeType::File => used.extend(n.content.unwrap_or_default()),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Runs prune. Takes the exclusive lease (unless `dry_run`).
pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneStats> {
    let _lease = if opts.dry_run { None } else { Some(repo.lock_exclusive()?) };
    let backend = repo.backend();
    let mut stats = PruneStats { dry_run: opts.dry_run, ..PruneStats::default() };

    // Pack files as they are now: anything not indexed here and still not indexed
    // at the end, with no writer live, was left by an interrupted backup.
    let listed = repo.block_on(backend.list(FileKind::Pack))?;

    // The snapshots first, then the index: a backup writes its index before its
    // snapshot, so every snapshot seen here has its blobs in an index listed below.
    let snaps = readable_snapshots(repo)?;

    // Index files and the packs they list; also the index the tree walk uses.
    let files = repo.load_index_files()?;
    repo.set_index(crate::repo::index::Index::build(&files)?);
    let read_ids: Vec<Id> = files.iter().map(|(id, _)| *id).collect();
    let superseded: HashSet<Id> = files.iter().flat_map(|(_, f)| f.supersedes.iter().copied()).collect();
    // What the new index supersedes: the files read, and those they superseded
    // (transitively), so that an old index file the storage brings back after
    // it was deleted stays superseded instead of pointing at deleted packs.
    let mut retired: Vec<Id> = read_ids.iter().chain(&superseded).copied().collect();
    retired.sort();
    retired.dedup();
    let mut live: Vec<IndexPack> = Vec::new();
    let mut live_ids: HashSet<Id> = HashSet::new();
    let mut pending: HashMap<Id, PendingPack> = HashMap::new();
    for (id, f) in &files {
        if superseded.contains(id) {
            continue;
        }
        for p in &f.packs {
            if live_ids.insert(p.id) {
                live.push(p.clone());
            }
        }
        for p in &f.pending {
            pending.entry(p.pack.id).or_insert_with(|| p.clone());
        }
    }
    pending.retain(|id, _| !live_ids.contains(id));
    live.sort_by_key(|p| p.id);
    stats.packs_before = live.len();
    stats.bytes_before = live.iter().map(|p| p.size).sum();

    // What the snapshots use.
    let seen_snaps: HashSet<Id> = snaps.iter().map(|(id, _)| *id).collect();
    stats.snapshots = snaps.len();
    let mut used = HashSet::new();
    used_blobs(repo, snaps.iter().map(|(_, s)| s.tree), &mut used)?;

    // Each used blob is kept in exactly one live pack (its owner); every other
    // copy is unused.
    let mut owner: HashMap<Id, Id> = HashMap::new();
    let mut per_pack: Vec<(u64, u64)> = Vec::with_capacity(live.len()); // (used, unused) stored bytes
    for p in &live {
        let (mut u, mut n) = (0, 0);
        for b in &p.blobs {
            if used.contains(&b.id) && !owner.contains_key(&b.id) {
                owner.insert(b.id, p.id);
                u += b.length as u64;
                stats.blobs_used += 1;
            } else {
                n += b.length as u64;
                stats.blobs_unused += 1;
            }
        }
        stats.bytes_used += u;
        stats.bytes_unused += n;
        per_pack.push((u, n));
    }
    // A marked pack holding a blob that is used and nowhere else comes back.
    let mut resurrected: Vec<IndexPack> = Vec::new();
    pending.retain(|_, p| {
        let needed = p.pack.blobs.iter().any(|b| used.contains(&b.id) && !owner.contains_key(&b.id));
        if needed {
            for b in &p.pack.blobs {
                if used.contains(&b.id) {
                    owner.entry(b.id).or_insert(p.pack.id);
                }
            }
            resurrected.push(p.pack.clone());
        }
        !needed
    });
    stats.packs_resurrected = resurrected.len();
    if let Some(b) = used.iter().find(|b| !owner.contains_key(b)) {
        return Err(Error::corrupt(format!(
            "blob {b} is used by a snapshot but in no index; prune stops without deleting anything (run `cairn check`)"
        )));
    }

    // Whole unused packs go; partly used ones are repacked, most wasteful first,
    // until the unused bytes left are within the limit.
    let mut unused_packs = Vec::new();
    let mut candidates = Vec::new();
    let mut keep = Vec::new();
    for (p, (u, n)) in live.into_iter().zip(per_pack) {
        if u == 0 {
            unused_packs.push(p);
        } else if n > 0 {
            candidates.push((p, u, n));
        } else {
            keep.push(p);
        }
    }
    let limit = match opts.max_unused {
        MaxUnused::Percent(pc) => (stats.bytes_used as f64 * pc / 100.0) as u64,
        MaxUnused::Bytes(b) => b,
        MaxUnused::Unlimited => u64::MAX,
    };
    candidates.sort_by(|a, b| (b.2 * a.0.size).cmp(&(a.2 * b.0.size)).then(a.0.id.cmp(&b.0.id)));
    let mut left: u64 = candidates.iter().map(|c| c.2).sum();
    let mut repack = Vec::new();
    let mut budget = opts.max_repack.unwrap_or(u64::MAX);
    for (p, u, n) in candidates {
        if left > limit && p.size <= budget {
            budget -= p.size;
            left -= n;
            repack.push((p, u));
        } else {
            keep.push(p);
        }
    }
    stats.packs_unused = unused_packs.len();
    stats.packs_repacked = repack.len();
    stats.bytes_repacked = repack.iter().map(|(p, _)| p.size).sum();
    stats.bytes_unused_after = left;
    if opts.dry_run {
        stats.packs_deleted = unused_packs.len() + repack.len() + pending.len();
        stats.bytes_deleted = unused_packs.iter().chain(repack.iter().map(|(p, _)| p)).map(|p| p.size).sum::<u64>()
            + pending.values().map(|p| p.pack.size).sum::<u64>();
        return Ok(stats);
    }

    // Repack: copy the used blobs (verified on the way) into new packs.
    if !repack.is_empty() {
        let packer = Packer::new(repo, false);
        for (p, _) in &repack {
            crate::check_interrupted()?;
            let data = repo.block_on(backend.read(&Handle::id(FileKind::Pack, &p.id), None))?;
            for b in &p.blobs {
                if owner.get(&b.id) != Some(&p.id) {
                    continue;
                }
                let raw = data
                    .get(b.offset as usize..b.offset as usize + b.length as usize)
                    .ok_or_else(|| Error::corrupt(format!("pack {} is shorter than its index says", p.id)))?;
                pack::decode_blob(repo.key(), b, raw).map_err(|e| {
                    Error::corrupt(format!("pack {}: {e}; prune stops (run `cairn check --read-data`)", p.id))
                })?;
                packer.add_stored(b.blob_type, b.id, b.compressed, b.raw_length, raw)?;
            }
        }
        packer.finish()?;
        stats.packs_written = packer.stats.packs.load(std::sync::atomic::Ordering::Relaxed) as usize;
    }
    crash_point("prune:after-repack");

    // One index file: kept and resurrected packs live, the rest marked.
    let marked_at = chrono::Utc::now().timestamp();
    let mut marked: Vec<PendingPack> = pending.into_values().collect();
    marked.extend(
        unused_packs.into_iter().chain(repack.into_iter().map(|(p, _)| p)).map(|pack| PendingPack { pack, marked_at }),
    );
    marked.sort_by_key(|p| p.pack.id);
    keep.extend(resurrected);
    keep.sort_by_key(|p| p.id);
    let new_index = IndexFile { supersedes: retired.clone(), packs: keep, pending: marked };
    let n1 = repo.save_index(&new_index)?;
    crash_point("prune:after-index");
    for id in &read_ids {
        repo.remove_file(&Handle::id(FileKind::Index, id))?;
    }
    repo.invalidate_index();
    crash_point("prune:after-old-index-removed");

    // Which marked packs may go now.
    let writers: Vec<_> = repo.leases()?.into_iter().map(|(_, l)| l).filter(|l| !l.exclusive && l.is_live()).collect();
    // Snapshots saved since we looked (by writers that may have used marked blobs).
    let newer: Vec<Id> =
        readable_snapshots(repo)?.into_iter().filter(|(id, _)| !seen_snaps.contains(id)).map(|(_, s)| s.tree).collect();
    let mut newly_used = HashSet::new();
    used_blobs(repo, newer, &mut newly_used)?;
    let IndexFile { packs: mut keep, pending: marked, .. } = new_index;
    let (mut deleted, mut deferred, mut late) = (Vec::new(), Vec::new(), 0);
    for p in marked {
        if p.pack.blobs.iter().any(|b| newly_used.contains(&b.id)) {
            late += 1;
            keep.push(p.pack);
            continue;
        }
        let blocker = writers.iter().find(|w| w.since().timestamp() <= p.marked_at + CLOCK_MARGIN.num_seconds());
        match blocker {
            Some(w) => {
                stats.deferred_because.get_or_insert_with(|| format!("a writer may still use them: {}", w.describe()));
                deferred.push(p);
            }
            None => deleted.push(p),
        }
    }
    let mut done = 0;
    for p in &deleted {
        crate::check_interrupted()?;
        repo.remove_file(&Handle::id(FileKind::Pack, &p.pack.id))?;
        done += 1;
        if done == 1 {
            crash_point("prune:mid-delete");
        }
    }
    stats.packs_deleted = deleted.len();
    stats.bytes_deleted = deleted.iter().map(|p| p.pack.size).sum();
    stats.packs_deferred = deferred.len();
    stats.bytes_deferred = deferred.iter().map(|p| p.pack.size).sum();
    stats.packs_resurrected += late;
    // The index files this prune leaves, and the packs they list.
    let (ours, our_packs): (Vec<Id>, Vec<Id>) = if !deleted.is_empty() || late > 0 {
        keep.sort_by_key(|p| p.id);
        let mut supersedes = retired;
        supersedes.extend(&n1);
        let last = IndexFile { supersedes, packs: keep, pending: deferred };
        let n2 = repo.save_index(&last)?;
        crash_point("prune:after-final-index");
        for id in &n1 {
            repo.remove_file(&Handle::id(FileKind::Index, id))?;
        }
        repo.invalidate_index();
        (n2, last.packs.iter().map(|p| p.id).chain(last.pending.iter().map(|p| p.pack.id)).collect())
    } else {
        (n1, keep.iter().map(|p| p.id).chain(deferred.iter().map(|p| p.pack.id)).collect())
    };

    // Pack files no index lists (left by interrupted backups), if no writer is live:
    // a writer that is live may be about to index the packs it uploaded. Only
    // when the listing of index files shows the ones just written: a listing
    // that has not caught up with them (eventually consistent storage) may miss
    // others too, whose packs must not be taken for leftovers.
    let files = if writers.is_empty() { repo.load_index_files()? } else { Vec::new() };
    let caught_up = ours.iter().all(|id| files.iter().any(|(f, _)| f == id));
    if writers.is_empty() && !caught_up {
        stats.unindexed_kept_because =
            Some("the storage's listing does not show the index just written yet; the next prune retries".into());
    } else if writers.is_empty() {
        let indexed: HashSet<Id> = files
            .into_iter()
            .flat_map(|(_, f)| f.packs.into_iter().map(|p| p.id).chain(f.pending.into_iter().map(|p| p.pack.id)))
            .chain(our_packs)
            .collect();
        let gone: HashSet<Id> = deleted.iter().map(|p| p.pack.id).collect();
        for f in listed {
            let Ok(id) = Id::from_hex(&f.name) else { continue };
            if indexed.contains(&id) || gone.contains(&id) {
                continue;
            }
            repo.remove_file(&Handle::id(FileKind::Pack, &id))?;
            stats.unindexed_deleted += 1;
            stats.unindexed_bytes_deleted += f.size;
        }
        // Temporary files of writes that were interrupted (an hour is far longer
        // than any upload of one file takes).
        stats.temporaries_deleted = repo.block_on(backend.remove_stale_temporaries(TEMP_AGE))?;
    }
    Ok(stats)
}
