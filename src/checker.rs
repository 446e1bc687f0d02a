//! `check`: verifies that every snapshot's trees and blobs are indexed, that every
//! indexed pack exists with the right size, and with `read_data` that every blob
//! decrypts and matches its ID. Problems are reported one by one, never fatal.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::backend::{FileKind, Handle};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::Repository;
use crate::repo::index::Index;
use crate::repo::pack;
use crate::repo::tree::NodeType;
use crate::{Progress, Report};

/// Which packs `--read-data-subset` reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Subset {
    /// A random fraction (0..=1) of the packs.
    Fraction(f64),
    /// Part `n` of `t` (1-based), by pack name.
    Part(u32, u32),
}

impl std::str::FromStr for Subset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Subset> {
        let bad = || Error::InvalidArgument(format!("--read-data-subset {s:?}: expected N% or n/t"));
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&p) {
                return Err(bad());
            }
            return Ok(Subset::Fraction(p / 100.0));
        }
        let (n, t) = s.split_once('/').ok_or_else(bad)?;
        let (n, t): (u32, u32) = (n.parse().map_err(|_| bad())?, t.parse().map_err(|_| bad())?);
        if t == 0 || n == 0 || n > t {
            return Err(bad());
        }
        Ok(Subset::Part(n, t))
    }
}

/// What `check` looks at.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Read and verify pack contents.
    pub read_data: bool,
    /// Only this subset of packs (implies reading data).
    pub subset: Option<Subset>,
}

/// What `check` found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CheckSummary {
    /// Snapshots checked.
    pub snapshots: usize,
    /// Distinct trees checked.
    pub trees: usize,
    /// Packs in the index.
    pub packs: usize,
    /// Packs read and verified.
    pub packs_read: usize,
    /// Problems (each also reported).
    pub errors: Vec<String>,
    /// Harmless findings (e.g. packs left by an interrupted backup).
    pub warnings: Vec<String>,
}

/// Where problems go: reported as they are found and collected.
pub(crate) struct Findings<'a> {
    report: &'a dyn Report,
    summary: Mutex<CheckSummary>,
}

impl<'a> Findings<'a> {
    pub(crate) fn new(report: &'a dyn Report) -> Findings<'a> {
        Findings { report, summary: Mutex::new(CheckSummary::default()) }
    }

    fn error(&self, msg: String) {
        self.report.warn(&format!("error: {msg}"));
        self.summary.lock().expect("poisoned").errors.push(msg);
    }
    fn warning(&self, msg: String) {
        self.report.warn(&format!("warning: {msg}"));
        self.summary.lock().expect("poisoned").warnings.push(msg);
    }
}

fn choose_packs(mut packs: Vec<(Id, u64)>, subset: Option<Subset>) -> Result<Vec<(Id, u64)>> {
    match subset {
        None => Ok(packs),
        Some(Subset::Part(n, t)) => Ok(packs
            .into_iter()
            .filter(|(id, _)| u32::from_le_bytes(id.0[..4].try_into().expect("4")) % t == n - 1)
            .collect()),
        Some(Subset::Fraction(f)) => {
            let want = (packs.len() as f64 * f).ceil() as usize;
            for i in (1..packs.len()).rev() {
                let mut r = [0u8; 8];
                crate::crypto::random_bytes(&mut r)?;
                packs.swap(i, (u64::from_le_bytes(r) % (i as u64 + 1)) as usize);
            }
            packs.truncate(want);
            Ok(packs)
        }
    }
}

/// Checks the repository. Returns an error only if checking itself cannot proceed.
pub fn check(repo: &Repository, opts: &CheckOptions, report: &dyn Report, progress: &Progress) -> Result<CheckSummary> {
    let found = Findings::new(report);

    // Snapshots before the index: a backup writes its index before its snapshot,
    // so every snapshot seen here has its blobs in an index file listed below.
    let snaps = repo.snapshots_with(|id, e| found.error(format!("snapshot {id}: {e}")))?;

    // Every index file is read, one damaged file not hiding the rest, into the
    // repository's index for the tree walk below (within the index memory
    // budget, so a check of any size fits in memory).
    let index = repo.check_index(|id, e| {
        let m = e.to_string();
        found.error(if m.contains(&id.to_hex()) { m } else { format!("index/{id}: {m}") })
    })?;

    let mut damage = Damage::default();
    let readable = stored_packs(repo, &index, &found, &mut damage)?;

    // The snapshots' trees.
    let mut seen_trees: HashSet<Id> = HashSet::new();
    for (sid, snap) in &snaps {
        let mut stack = vec![(snap.tree, String::from("/"))];
        while let Some((tid, path)) = stack.pop() {
            if !seen_trees.insert(tid) {
                continue;
            }
            if index.get(&tid).is_none() {
                found.error(format!("snapshot {}: tree {tid} for {path} is missing from the index", sid.short()));
                continue;
            }
            if index.is_pending(&tid) {
                found.warning(format!(
                    "snapshot {}: tree {tid} for {path} is in a pack pending deletion (the next prune keeps it)",
                    sid.short()
                ));
            }
            let tree = match repo.load_tree(&tid) {
                Ok(t) => t,
                Err(e) => {
                    found.error(format!("snapshot {}: {path}: {e}", sid.short()));
                    continue;
                }
            };
            for n in &tree.entries {
                let child = format!(
                    "{}{}",
                    if path.ends_with('/') { path.clone() } else { format!("{path}/") },
                    String::from_utf8_lossy(&n.name.0)
                );
                match n.node_type {
                    NodeType::Dir => stack.push((n.subtree.unwrap_or_default(), child)),
                    NodeType::File => {
                        for b in n.content.as_deref().unwrap_or_default() {
                            if index.get(b).is_none() {
                                found.error(format!(
                                    "snapshot {}: {child}: blob {b} is missing from the index",
                                    sid.short()
                                ));
                            } else if index.is_pending(b) {
                                found.warning(format!(
                                    "snapshot {}: {child}: blob {b} is in a pack pending deletion (the next prune \
                                     keeps it)",
                                    sid.short()
                                ));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    {
        let mut s = found.summary.lock().expect("poisoned");
        s.snapshots = snaps.len();
        s.trees = seen_trees.len();
        s.packs = index.packs().len();
    }

    if opts.read_data || opts.subset.is_some() {
        let packs = choose_packs(readable, opts.subset)?;
        read_packs(repo, &index, &packs, &found, progress, &mut damage)?;
        found.summary.lock().expect("poisoned").packs_read = packs.len();
        if !damage.packs.is_empty() || !damage.blobs.is_empty() {
            affected(repo, &index, &snaps, &damage, &found);
        }
    }
    Ok(found.summary.into_inner().expect("poisoned"))
}

/// Compares the indexed packs with the storage's listing: a pack missing (unless
/// prune marked it) or of another size is reported and counted as damaged.
/// Returns the others, with their sizes.
fn stored_packs(repo: &Repository, index: &Index, found: &Findings<'_>, damage: &mut Damage) -> Result<Vec<(Id, u64)>> {
    let listed: HashMap<String, u64> =
        repo.block_on(repo.backend().list(FileKind::Pack))?.into_iter().map(|f| (f.name, f.size)).collect();
    let mut readable = Vec::new();
    let indexed: HashSet<String> = index.packs().iter().map(|(id, _)| id.to_hex()).collect();
    for (no, (id, size)) in index.packs().iter().enumerate() {
        match listed.get(&id.to_hex()) {
            // Marked by prune: it may be deleted at any time.
            None if index.pack_is_pending(no) => {}
            None => {
                found.error(format!("pack {id} is in the index but missing from the repository"));
                damage.packs.insert(*id);
            }
            Some(s) if s != size => {
                found.error(format!("pack {id} has size {s}, the index says {size} (truncated or damaged)"));
                damage.packs.insert(*id);
            }
            Some(_) => readable.push((*id, *size)),
        }
    }
    let unindexed = listed.keys().filter(|n| !indexed.contains(*n)).count();
    if unindexed > 0 {
        found.warning(format!("{unindexed} pack(s) are not in any index (left by an interrupted backup; harmless)"));
    }
    Ok(readable)
}

/// Reads `packs` in parallel, opening every blob; adds what is damaged to
/// `damage`.
fn read_packs(
    repo: &Repository,
    index: &Index,
    packs: &[(Id, u64)],
    found: &Findings<'_>,
    progress: &Progress,
    damage: &mut Damage,
) -> Result<()> {
    progress.total_files.store(packs.len() as u64, Ordering::Relaxed);
    let next = AtomicUsize::new(0);
    let found_damage = Mutex::new(std::mem::take(damage));
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while let Some((id, _)) = packs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if crate::check_interrupted().is_err() {
                        break;
                    }
                    read_pack(repo, index, id, found, &found_damage);
                    progress.files.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    *damage = found_damage.into_inner().expect("poisoned");
    crate::check_interrupted()
}

/// What is damaged in a repository, found by comparing the index with the
/// storage and, with `read_data`, by reading every pack (each problem is
/// reported). For `repair snapshots`.
pub fn find_damage(
    repo: &Repository,
    index: &Index,
    read_data: bool,
    report: &dyn Report,
    progress: &Progress,
) -> Result<Damage> {
    let found = Findings::new(report);
    let mut damage = Damage::default();
    let readable = stored_packs(repo, index, &found, &mut damage)?;
    if read_data {
        read_packs(repo, index, &readable, &found, progress, &mut damage)?;
    }
    Ok(damage)
}

/// Names the files of each snapshot that use damaged data (at most 20 per
/// snapshot, then a count).
fn affected(
    repo: &Repository,
    index: &Index,
    snaps: &[(Id, crate::repo::snapshot::Snapshot)],
    damage: &Damage,
    found: &Findings<'_>,
) {
    let bad = |b: &Id| damage.is_bad(index, b);
    for (sid, snap) in snaps {
        let mut files = Vec::new();
        let mut stack = vec![(snap.tree, String::from("/"))];
        while let Some((tid, path)) = stack.pop() {
            let Ok(tree) = repo.load_tree(&tid) else { continue };
            for n in &tree.entries {
                let child = format!("{}/{}", path.trim_end_matches('/'), String::from_utf8_lossy(&n.name.0));
                match n.node_type {
                    NodeType::Dir => stack.push((n.subtree.unwrap_or_default(), child)),
                    NodeType::File if n.content.as_deref().unwrap_or_default().iter().any(bad) => files.push(child),
                    _ => {}
                }
            }
        }
        files.sort();
        for f in files.iter().take(20) {
            found.error(format!("snapshot {}: {f} uses damaged data", sid.short()));
        }
        if files.len() > 20 {
            found.error(format!("snapshot {}: and {} more files use damaged data", sid.short(), files.len() - 20));
        }
    }
}

/// What was found damaged: whole packs (missing, of the wrong size, unreadable,
/// or their header is) and single blobs.
#[derive(Default)]
pub struct Damage {
    packs: HashSet<Id>,
    blobs: HashSet<Id>,
}

impl Damage {
    /// Whether blob `id` cannot be read: damaged, or in a damaged pack. (A blob
    /// the index lacks is not counted here.)
    pub fn is_bad(&self, index: &Index, id: &Id) -> bool {
        self.blobs.contains(id) || index.get(id).is_some_and(|l| self.packs.contains(&index.packs()[l.pack as usize].0))
    }
}

fn read_pack(repo: &Repository, index: &Index, id: &Id, found: &Findings<'_>, damage: &Mutex<Damage>) {
    let data = match repo.block_on(repo.backend().read(&Handle::id(FileKind::Pack, id), None)) {
        Ok(d) => d,
        Err(e) => {
            damage.lock().expect("poisoned").packs.insert(*id);
            return found.error(format!("pack {id}: cannot read: {e}"));
        }
    };
    // A pack whose bytes changed is still opened blob by blob, to tell which
    // blobs are damaged.
    let hash = Id::hash(&data);
    if hash != *id {
        found.error(format!("pack {id}: content does not match its name (damaged or truncated)"));
    }
    let blobs = match pack::verify_pack(repo.key(), &hash, &data) {
        Ok(b) => b,
        Err(e) => {
            damage.lock().expect("poisoned").packs.insert(*id);
            return found.error(format!("pack {id}: {e}"));
        }
    };
    for (e, r) in blobs {
        if let Err(err) = r {
            damage.lock().expect("poisoned").blobs.insert(e.id);
            found.error(format!("pack {id}: {err}"));
        }
        if index.get(&e.id).is_none() {
            found.warning(format!("pack {id}: blob {} is not in the index", e.id));
        }
    }
}
