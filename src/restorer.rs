//! Restore: recreates a snapshot (or a part of it) under a target directory with
//! contents, hard links, special files, holes and all metadata.
//!
//! The trees are walked once and what is selected is restored in batches, each
//! in phases: create (directories, empty files at their final size, links and
//! special files), fill (pack ranges are read in parallel, and every blob is
//! verified and written where it belongs), metadata of files. Directories get
//! theirs at the end, deepest first, so their times stick.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

use crate::error::{Error, Result};
use crate::filter::PathFilter;
use crate::id::Id;
use crate::repo::Repository;
use crate::repo::index::Index;
use crate::repo::pack::{self, BlobEntry};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeType, Timestamp, Tree, Xattr};
use crate::util::is_zero;
use crate::{Progress, Report};

/// What to restore and where.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Directory to restore into (created if missing).
    pub target: PathBuf,
    /// Path inside the snapshot to restore (default: all of it).
    pub subpath: Option<String>,
    /// Only paths matching these (and what is below them).
    pub includes: Vec<String>,
    /// Leave out paths matching these.
    pub excludes: Vec<String>,
    /// Re-read restored files afterwards and check them against the snapshot.
    pub verify: bool,
    /// What to do with files that already exist in the target.
    pub overwrite: Overwrite,
    /// Remove what the target's restored directories hold that the snapshot
    /// does not (only names the includes and excludes select).
    pub delete: bool,
    /// Walk and count, but change nothing in the target.
    pub dry_run: bool,
}

/// What restore does with a regular file that already exists where it restores
/// one (restic's `--overwrite`). In every mode but `never`, an existing file
/// whose size and content (each chunk's keyed hash) already match is left as it
/// is and only gets its metadata, so a restore run again into the same target
/// resumes where it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace existing files (unless their content already matches).
    #[default]
    Always,
    /// Replace existing files whose content differs (the same as `Always`:
    /// matching content is never rewritten).
    IfChanged,
    /// Replace existing files only if the snapshot's is newer (mtime).
    IfNewer,
    /// Leave every existing file alone.
    Never,
}

/// What a restore did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreSummary {
    /// Regular files restored (hard links counted once per name).
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks and special files.
    pub others: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Files verified with `--verify`.
    pub verified: u64,
    /// Existing files whose content already matched: only their metadata was set.
    pub unchanged: u64,
    /// Existing files left alone (`--overwrite never` or `if-newer`).
    pub skipped: u64,
    /// Names removed from the target (`delete`), each with what was below it.
    pub deleted: u64,
    /// Items that could not be restored (each reported).
    pub errors: u64,
}

struct Item {
    /// Where it goes.
    dest: PathBuf,
    node: Entry,
}

/// What restore keeps of a tree node (a restore holds one per item, so this is
/// about half the size of a [`Node`]: no names of owners, ctime or subtree).
struct Entry {
    node_type: NodeType,
    mode: u32,
    uid: u32,
    gid: u32,
    atime: Timestamp,
    mtime: Timestamp,
    size: u64,
    /// (device, inode) of a file with more than one link: its other names in the
    /// snapshot become hard links to the first.
    link: Option<(u64, u64)>,
    rdev: u64,
    target: Option<Box<[u8]>>,
    xattrs: Box<[Xattr]>,
    content: Box<[Id]>,
}

impl From<Node> for Entry {
    fn from(n: Node) -> Entry {
        let linked = n.node_type == NodeType::File && n.links > 1 && n.inode != 0;
        Entry {
            node_type: n.node_type,
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            atime: n.atime,
            mtime: n.mtime,
            size: n.size,
            link: linked.then_some((n.device, n.inode)),
            rdev: n.rdev.unwrap_or(0),
            target: n.target.map(|t| t.0.into_boxed_slice()),
            xattrs: n.xattrs.into_boxed_slice(),
            content: n.content.unwrap_or_default().into_boxed_slice(),
        }
    }
}

struct FileJob {
    item: usize,
    /// Set when the file is a further name of an inode restored in this batch.
    link_of: Option<usize>,
    failed: bool,
    /// An existing file whose content already matches: nothing to write.
    keep: bool,
}

/// A file already at the destination.
enum Existing {
    /// Leave it alone (`never`, `if-newer`).
    Skip,
    /// Its content is the snapshot's: only set the metadata.
    Matches,
}

/// Items per batch, and blobs: a restore plans, creates and fills this much at
/// a time, so its memory does not grow with the size of the selection.
/// `CAIRN_TEST_RESTORE_BATCH` sets the items per batch (tests).
const BATCH_ITEMS: usize = 50_000;
const BATCH_BLOBS: usize = 500_000;

/// A restore in progress: walks the snapshot's trees and restores what it finds
/// in batches. Only directories (for their metadata, set at the end) and files
/// with several links (for hard links across batches) are kept beyond a batch.
struct Restorer<'a> {
    repo: &'a Repository,
    index: &'a Index,
    opts: &'a RestoreOptions,
    report: &'a dyn Report,
    progress: &'a Progress,
    includes: PathFilter,
    excludes: PathFilter,
    batch_items: usize,
    /// Whether progress totals come from the snapshot (else they grow per batch).
    known_totals: bool,
    /// Whether the target held anything when the restore began (only then are
    /// existing files looked for).
    target_had_files: bool,
    /// Directories being walked that nothing was restored in yet: they are
    /// restored with their first selected item (or if selected themselves).
    open_dirs: Vec<Option<Item>>,
    batch: Vec<Item>,
    batch_blobs: usize,
    /// Restored directories, in walk order, and whether each failed.
    dirs: Vec<(Item, bool)>,
    /// Directories this restore made (their entries cannot be in the way).
    made_dirs: HashSet<PathBuf>,
    /// (device, inode) of restored files with several links: the first name,
    /// and whether it failed.
    links: HashMap<(u64, u64), (PathBuf, bool)>,
    summary: RestoreSummary,
    as_root: bool,
    workers: usize,
}

impl Restorer<'_> {
    /// Adds `node` at `snap_path` (and below) to the restore.
    fn add(&mut self, node: Node, snap_path: PathBuf, dest: PathBuf, selected: bool) -> Result<()> {
        let is_dir = node.node_type == NodeType::Dir;
        if self.excludes.matches(&snap_path, is_dir) {
            return Ok(());
        }
        let selected = selected || self.includes.is_empty() || self.includes.matches(&snap_path, is_dir);
        if !is_dir {
            if selected {
                self.push(Item { dest, node: node.into() })?;
            }
            return Ok(());
        }
        let tree = match node.subtree {
            Some(id) => self.repo.load_tree(&id)?,
            None => Tree::default(),
        };
        self.delete_extras(&dest, &snap_path, &tree, selected);
        self.open_dirs.push(Some(Item { dest: dest.clone(), node: node.into() }));
        if selected {
            self.flush_open_dirs()?;
        }
        crate::check_interrupted()?;
        for child in tree.entries {
            let name = child.os_name().to_owned();
            self.add(child, snap_path.join(&name), dest.join(&name), selected)?;
        }
        self.open_dirs.pop();
        Ok(())
    }

    /// With `delete`: removes what the target directory `dir` holds that `tree`
    /// (the snapshot's directory `snap_dir`) does not, and directories where
    /// the snapshot has a file, link or special file, if the filters select
    /// it. A `dir` that is not a real directory (a symlink, say) is not looked
    /// into: restore replaces it, and nothing outside the target is touched.
    fn delete_extras(&mut self, dir: &Path, snap_dir: &Path, tree: &Tree, selected: bool) {
        if !self.opts.delete || !fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
            return;
        }
        let entries = match fs::read_dir(dir) {
            Ok(d) => d,
            Err(e) => {
                self.report.warn(&format!("{}: cannot list for --delete: {e}", dir.display()));
                self.summary.errors += 1;
                return;
            }
        };
        // Name -> whether the snapshot has a directory there.
        let names: HashMap<&OsStr, bool> =
            tree.entries.iter().map(|n| (n.os_name(), n.node_type == NodeType::Dir)).collect();
        for entry in entries {
            let (name, is_dir) = match entry.and_then(|e| Ok((e.file_name(), e.file_type()?.is_dir()))) {
                Ok(x) => x,
                Err(e) => {
                    self.report.warn(&format!("{}: cannot list for --delete: {e}", dir.display()));
                    self.summary.errors += 1;
                    continue;
                }
            };
            let path = snap_dir.join(&name);
            // Kept: names the snapshot has, unless a directory stands where the
            // snapshot has something else (restore could not replace it).
            if names.get(name.as_os_str()).is_some_and(|&snap_dir| snap_dir || !is_dir)
                || self.excludes.matches(&path, is_dir)
                || !(selected || self.includes.is_empty() || self.includes.matches(&path, is_dir))
            {
                continue;
            }
            let dest = dir.join(&name);
            if self.opts.dry_run {
                self.report.detail(&format!("would delete {}", dest.display()));
            } else {
                // `remove_dir_all` does not follow symlinks.
                let r = if is_dir { fs::remove_dir_all(&dest) } else { fs::remove_file(&dest) };
                if let Err(e) = r {
                    self.report.warn(&format!("{}: cannot delete: {e}", dest.display()));
                    self.summary.errors += 1;
                    continue;
                }
                self.report.detail(&format!("deleted {}", dest.display()));
            }
            self.summary.deleted += 1;
        }
    }

    /// Restores the directories being walked that are not restored yet.
    fn flush_open_dirs(&mut self) -> Result<()> {
        for i in 0..self.open_dirs.len() {
            if let Some(d) = self.open_dirs[i].take() {
                self.batch.push(d);
            }
        }
        Ok(())
    }

    fn push(&mut self, item: Item) -> Result<()> {
        self.flush_open_dirs()?;
        self.batch_blobs += item.node.content.len();
        self.batch.push(item);
        if self.batch.len() >= self.batch_items || self.batch_blobs >= BATCH_BLOBS {
            self.run_batch()?;
        }
        Ok(())
    }

    /// Creates, fills and sets the metadata of the current batch (directories'
    /// metadata waits for the end).
    fn run_batch(&mut self) -> Result<()> {
        let items = std::mem::take(&mut self.batch);
        self.batch_blobs = 0;
        let (report, progress, index) = (self.report, self.progress, self.index);

        // Existing files in the way (only when the target was not empty).
        let existing = if self.target_had_files { self.existing_files(&items) } else { HashMap::new() };
        if self.opts.dry_run {
            self.count_only(&items, &existing);
            return Ok(());
        }

        // Create everything, files at their final size (sparse).
        let mut failed_items = HashSet::new();
        let mut jobs: Vec<FileJob> = Vec::new();
        let mut inodes: HashMap<(u64, u64), usize> = HashMap::new();
        let (mut files, mut bytes) = (0, 0);
        for (i, item) in items.iter().enumerate() {
            let n = &item.node;
            if let Some(key) = n.link {
                let first = match inodes.get(&key) {
                    Some(&job) => Some((&items[jobs[job].item].dest, Some(job), false)),
                    None => self.links.get(&key).map(|(p, failed)| (p, None, *failed)),
                };
                if let Some((first, job, failed)) = first {
                    remove_existing(&item.dest);
                    match fs::hard_link(first, &item.dest) {
                        Ok(()) => {
                            files += 1;
                            match job {
                                Some(_) => jobs.push(FileJob { item: i, link_of: job, failed: false, keep: false }),
                                None if failed => {
                                    failed_items.insert(i);
                                }
                                None => {}
                            }
                        }
                        Err(e) => {
                            report.warn(&format!("{}: cannot create hard link: {e}", item.dest.display()));
                            failed_items.insert(i);
                        }
                    }
                    continue;
                }
            }
            match existing.get(&i) {
                Some(Existing::Skip) => {
                    self.summary.skipped += 1;
                    continue;
                }
                Some(Existing::Matches) => {
                    if let Some(key) = n.link {
                        inodes.insert(key, jobs.len());
                    }
                    jobs.push(FileJob { item: i, link_of: None, failed: false, keep: true });
                    self.summary.unchanged += 1;
                    files += 1;
                    bytes += n.size;
                    progress.bytes.fetch_add(n.size, Ordering::Relaxed);
                    continue;
                }
                None => {}
            }
            let fresh = item.dest.parent().is_some_and(|p| self.made_dirs.contains(p));
            match create_item(item, fresh) {
                Ok(made) => match n.node_type {
                    NodeType::Dir => {
                        self.summary.dirs += 1;
                        if made {
                            self.made_dirs.insert(item.dest.clone());
                        }
                    }
                    NodeType::File => {
                        if let Some(key) = n.link {
                            inodes.insert(key, jobs.len());
                        }
                        jobs.push(FileJob { item: i, link_of: None, failed: false, keep: false });
                        files += 1;
                        bytes += n.size;
                    }
                    _ => self.summary.others += 1,
                },
                Err(e) if is_full(&e) => return Err(Error::io(&item.dest, e)),
                Err(e) => {
                    report.warn(&format!("{}: cannot create: {e}", item.dest.display()));
                    failed_items.insert(i);
                }
            }
        }
        self.summary.files += files;
        self.summary.bytes += bytes;
        if !self.known_totals {
            progress.total_bytes.fetch_add(bytes, Ordering::Relaxed);
            progress.total_files.fetch_add(files, Ordering::Relaxed);
        }

        // Plan the reads: every blob occurrence with where it goes, sorted by pack
        // and position in the pack (one flat vector: no per-blob allocation).
        let mut wants: Vec<Want> = Vec::new();
        for (j, job) in jobs.iter_mut().enumerate() {
            if job.link_of.is_some() || job.keep {
                continue;
            }
            let node = &items[job.item].node;
            let mut offset = 0u64;
            for id in &node.content {
                let Some(loc) = index.get(id) else {
                    report
                        .warn(&format!("{}: blob {id} is missing from the repository", items[job.item].dest.display()));
                    job.failed = true;
                    break;
                };
                wants.push(Want { pack: loc.pack, entry: loc.entry, job: j, file_offset: offset });
                offset += loc.entry.raw_length as u64;
            }
            if !job.failed && offset != node.size {
                report
                    .warn(&format!("{}: content does not add up to the recorded size", items[job.item].dest.display()));
            }
        }
        wants.sort_unstable_by_key(|w| (w.pack, w.entry.offset, w.job, w.file_offset));
        let reads = plan_reads(&wants);
        // Tree packs read while planning are not needed any more.
        self.repo.drop_tree_cache();

        // Fill: workers take one read at a time (a range of a pack), write its blobs.
        let next = AtomicUsize::new(0);
        let failures: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
        let fatal: Mutex<Option<Error>> = Mutex::new(None);
        let repo = self.repo;
        std::thread::scope(|s| {
            for _ in 0..self.workers.min(reads.len()) {
                s.spawn(|| {
                    loop {
                        if let Err(e) = crate::check_interrupted() {
                            fatal.lock().expect("poisoned").get_or_insert(e);
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(wants) = reads.get(i) else {
                            break;
                        };
                        let pack_id = index.packs()[wants[0].pack as usize].0;
                        if let Err(e) = fill(repo, &pack_id, wants, &jobs, &items, &failures, progress) {
                            fatal.lock().expect("poisoned").get_or_insert(e);
                            break;
                        }
                    }
                });
            }
        });
        if let Some(e) = fatal.into_inner().expect("poisoned") {
            return Err(e);
        }
        drop(reads);
        drop(wants);
        for (j, msg) in failures.into_inner().expect("poisoned") {
            if !jobs[j].failed {
                report.warn(&msg);
            }
            jobs[j].failed = true;
        }
        for job in &jobs {
            let failed = job.failed || job.link_of.is_some_and(|f| jobs[f].failed);
            if failed {
                failed_items.insert(job.item);
            }
            if job.link_of.is_none()
                && let Some(key) = items[job.item].node.link
            {
                self.links.insert(key, (items[job.item].dest.clone(), failed));
            }
        }

        // Metadata of everything but directories, in parallel.
        let others: Vec<usize> = (0..items.len())
            .filter(|i| items[*i].node.node_type != NodeType::Dir && !failed_items.contains(i))
            .collect();
        let meta_failed = Mutex::new(Vec::new());
        let as_root = self.as_root;
        std::thread::scope(|s| {
            for part in others.chunks(others.len().div_ceil(self.workers).max(1)) {
                let (items, meta_failed) = (&items, &meta_failed);
                s.spawn(move || {
                    for &i in part {
                        if let Err(e) = set_metadata(&items[i], as_root) {
                            meta_failed.lock().expect("poisoned").push((i, e));
                        }
                    }
                });
            }
        });
        let mut meta_failed = meta_failed.into_inner().expect("poisoned");
        meta_failed.sort_by_key(|(i, _)| *i);
        for (i, e) in meta_failed {
            report.warn(&format!("{}: cannot restore metadata: {e}", items[i].dest.display()));
            failed_items.insert(i);
        }

        if self.opts.verify {
            let to_verify: Vec<usize> = jobs
                .iter()
                .filter(|j| j.link_of.is_none() && !failed_items.contains(&j.item))
                .map(|j| j.item)
                .collect();
            for i in to_verify {
                match verify_file(self.repo, index, &items[i]) {
                    Ok(()) => self.summary.verified += 1,
                    Err(e) => {
                        report.warn(&format!("{}: verification failed: {e}", items[i].dest.display()));
                        failed_items.insert(i);
                    }
                }
            }
        }
        for (i, item) in items.into_iter().enumerate() {
            if item.node.node_type == NodeType::Dir {
                self.dirs.push((item, failed_items.contains(&i)));
            } else if failed_items.contains(&i) {
                self.summary.errors += 1;
            }
        }
        Ok(())
    }

    /// For the regular files of `items` that already exist at their destination:
    /// whether to leave them alone or whether their content already matches.
    /// Checked in parallel (it reads the existing files).
    fn existing_files(&self, items: &[Item]) -> HashMap<usize, Existing> {
        let candidates: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].node.node_type == NodeType::File && items[i].node.link.is_none())
            .collect();
        let found = Mutex::new(HashMap::new());
        let (overwrite, repo, index) = (self.opts.overwrite, self.repo, self.index);
        std::thread::scope(|s| {
            for part in candidates.chunks(candidates.len().div_ceil(self.workers).max(1)) {
                let found = &found;
                s.spawn(move || {
                    for &i in part {
                        let (item, n) = (&items[i], &items[i].node);
                        let Ok(m) = fs::symlink_metadata(&item.dest) else { continue };
                        if !m.is_file() {
                            continue;
                        }
                        use std::os::unix::fs::MetadataExt;
                        let older = (m.mtime(), m.mtime_nsec()) < (n.mtime.0, n.mtime.1 as i64);
                        let e = match overwrite {
                            Overwrite::Never => Some(Existing::Skip),
                            Overwrite::IfNewer if !older => Some(Existing::Skip),
                            _ if m.len() == n.size && verify_file(repo, index, item).is_ok() => Some(Existing::Matches),
                            _ => None,
                        };
                        if let Some(e) = e {
                            found.lock().expect("poisoned").insert(i, e);
                        }
                    }
                });
            }
        });
        found.into_inner().expect("poisoned")
    }

    /// What a batch would restore (`dry_run`), counted in the summary.
    fn count_only(&mut self, items: &[Item], existing: &HashMap<usize, Existing>) {
        let s = &mut self.summary;
        for (i, item) in items.iter().enumerate() {
            match (existing.get(&i), item.node.node_type) {
                (Some(Existing::Skip), _) => s.skipped += 1,
                (Some(Existing::Matches), _) => {
                    s.unchanged += 1;
                    s.files += 1;
                    s.bytes += item.node.size;
                }
                (None, NodeType::Dir) => s.dirs += 1,
                (None, NodeType::File) => {
                    s.files += 1;
                    s.bytes += item.node.size;
                }
                (None, _) => s.others += 1,
            }
        }
    }

    /// Directories' metadata, deepest first (the reverse of walk order), so that
    /// creating their entries no longer changes their times.
    fn finish_dirs(&mut self) {
        for (item, failed) in self.dirs.iter().rev() {
            if *failed {
                self.summary.errors += 1;
                continue;
            }
            if let Err(e) = set_metadata(item, self.as_root) {
                self.report.warn(&format!("{}: cannot restore metadata: {e}", item.dest.display()));
                self.summary.errors += 1;
            }
        }
    }
}

/// Writes `data` at `offset`, skipping whole 4 KiB blocks of zeros so that they stay
/// holes in the (pre-sized, sparse) file.
fn write_sparse(f: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    const BLOCK: u64 = 4096;
    let mut pos = 0usize;
    let mut run_start: Option<usize> = None;
    while pos < data.len() {
        let abs = offset + pos as u64;
        let len = ((BLOCK - abs % BLOCK) as usize).min(data.len() - pos);
        let zero = is_zero(&data[pos..pos + len]);
        match (zero, run_start) {
            (false, None) => run_start = Some(pos),
            (true, Some(s)) => {
                f.write_all_at(&data[s..pos], offset + s as u64)?;
                run_start = None;
            }
            _ => {}
        }
        pos += len;
    }
    if let Some(s) = run_start {
        f.write_all_at(&data[s..], offset + s as u64)?;
    }
    Ok(())
}

/// A full disk (or quota, or inode table) fails every item after the first: the
/// restore stops with one message instead of one per item.
fn is_full(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

fn remove_existing(p: &Path) {
    if let Ok(m) = fs::symlink_metadata(p)
        && !m.is_dir()
    {
        let _ = fs::remove_file(p);
    }
}

/// Creates `item` (files empty, at their final size). `fresh` says its parent was
/// made by this restore, so nothing can stand in the way. Returns whether a new
/// directory was made.
fn create_item(item: &Item, fresh: bool) -> io::Result<bool> {
    let n = &item.node;
    let p = &item.dest;
    match n.node_type {
        NodeType::Dir => {
            // Never follow a symlink that stands where a directory goes.
            if !fresh {
                match fs::symlink_metadata(p) {
                    Ok(m) if m.is_dir() => return Ok(false),
                    Ok(_) => fs::remove_file(p)?,
                    Err(_) => {}
                }
            }
            fs::DirBuilder::new().mode(0o700).create(p)?;
            return Ok(true);
        }
        NodeType::File => {
            if !fresh {
                remove_existing(p);
            }
            let f =
                OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(p)?;
            if n.size > 0 {
                f.set_len(n.size)?;
            }
        }
        NodeType::Symlink => {
            if !fresh {
                remove_existing(p);
            }
            let target = n.target.as_deref().map(OsStr::from_bytes).unwrap_or_default();
            std::os::unix::fs::symlink(target, p)?;
        }
        NodeType::Fifo => {
            if !fresh {
                remove_existing(p);
            }
            nix::unistd::mkfifo(p, Mode::from_bits_truncate(0o600)).map_err(io::Error::from)?;
        }
        NodeType::Socket | NodeType::Chardev | NodeType::Blockdev => {
            if !fresh {
                remove_existing(p);
            }
            let kind = match n.node_type {
                NodeType::Socket => SFlag::S_IFSOCK,
                NodeType::Chardev => SFlag::S_IFCHR,
                _ => SFlag::S_IFBLK,
            };
            nix::sys::stat::mknod(p, kind, Mode::from_bits_truncate(0o600), n.rdev as _).map_err(io::Error::from)?;
        }
    }
    Ok(false)
}

fn set_metadata(item: &Item, as_root: bool) -> io::Result<()> {
    let (n, p) = (&item.node, &item.dest);
    let mut first_err = None;
    for x in &n.xattrs {
        if let Err(e) = xattr::set(p, OsStr::from_bytes(&x.name.0), &x.value.0) {
            first_err.get_or_insert(io::Error::new(e.kind(), format!("extended attribute {:?}: {e}", x.name)));
        }
    }
    if as_root && let Err(e) = std::os::unix::fs::lchown(p, Some(n.uid), Some(n.gid)) {
        first_err.get_or_insert(e);
    }
    if n.node_type != NodeType::Symlink
        && let Err(e) = fs::set_permissions(p, fs::Permissions::from_mode(n.mode & 0o7777))
    {
        first_err.get_or_insert(e);
    }
    let t = |ts: Timestamp| TimeSpec::new(ts.0, ts.1 as _);
    if let Err(e) = utimensat(nix::fcntl::AT_FDCWD, p, &t(n.atime), &t(n.mtime), UtimensatFlags::NoFollowSymlink) {
        first_err.get_or_insert(e.into());
    }
    first_err.map_or(Ok(()), Err)
}

/// One blob to place: where it is and where it goes.
struct Want {
    pack: u32,
    entry: BlobEntry,
    /// The file job.
    job: usize,
    /// Offset in the file.
    file_offset: u64,
}

/// Restores `snapshot` according to `opts`.
pub fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    opts: &RestoreOptions,
    report: &dyn Report,
    progress: &Progress,
) -> Result<RestoreSummary> {
    let index = repo.index()?;
    let sub = opts.subpath.as_deref().unwrap_or("/");
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let whole = sub.trim_matches('/').is_empty()
        && opts.includes.is_empty()
        && opts.excludes.is_empty()
        && snapshot.summary.total_files_processed > 0;
    if whole {
        progress.total_bytes.store(snapshot.summary.total_bytes_processed, Ordering::Relaxed);
        progress.total_files.store(snapshot.summary.total_files_processed, Ordering::Relaxed);
    }
    let mut r = Restorer {
        repo,
        index: &index,
        opts,
        report,
        progress,
        includes: PathFilter::new(&opts.includes)?,
        excludes: PathFilter::new(&opts.excludes)?,
        batch_items: std::env::var("CAIRN_TEST_RESTORE_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(BATCH_ITEMS),
        known_totals: whole,
        target_had_files: fs::read_dir(&opts.target).is_ok_and(|mut d| d.next().is_some()),
        open_dirs: Vec::new(),
        batch: Vec::new(),
        batch_blobs: 0,
        dirs: Vec::new(),
        made_dirs: HashSet::new(),
        links: HashMap::new(),
        summary: RestoreSummary::default(),
        as_root: nix::unistd::geteuid().is_root(),
        // Enough readers to keep the CPUs and the backend (network round trips) busy.
        workers: (cores * 2).max(repo.backend().concurrency()).clamp(2, 16),
    };

    // Find the starting point inside the snapshot.
    let (start, tree) = crate::browse::lookup(repo, &snapshot.tree, sub)?;
    let snap_path: PathBuf =
        std::iter::once("/").chain(sub.split('/').filter(|c| !c.is_empty() && *c != ".")).collect();
    if !opts.dry_run {
        fs::create_dir_all(&opts.target).map_err(|e| Error::io(&opts.target, e))?;
    }
    let single = start.filter(|n| n.node_type != NodeType::Dir);
    if single.is_none() {
        r.delete_extras(&opts.target, &snap_path, &tree, false);
    }
    if let Some(node) = single {
        // A single file (or link): restore it under its own name.
        let dest = opts.target.join(node.os_name());
        r.add(node, snap_path.clone(), dest, false)?;
    }
    for child in tree.entries {
        let name = child.os_name().to_owned();
        r.add(child, snap_path.join(&name), opts.target.join(&name), false)?;
    }
    r.run_batch()?;
    r.finish_dirs();
    Ok(r.summary)
}

/// The reads of a batch: `wants` (sorted by pack and position) cut into runs
/// that one ranged read of a pack covers, merging blobs less than `MAX_GAP`
/// apart up to `MAX_READ` bytes. A blob wanted in several places appears once
/// per place, adjacent, in the same read (unless it is larger than a read).
fn plan_reads(wants: &[Want]) -> Vec<&[Want]> {
    const MAX_GAP: u64 = 1 << 20;
    const MAX_READ: u64 = 4 << 20;
    let mut reads = Vec::new();
    let mut i = 0;
    while i < wants.len() {
        let start = wants[i].entry.offset as u64;
        let mut end = start + wants[i].entry.length as u64;
        let mut k = i + 1;
        while k < wants.len() && wants[k].pack == wants[i].pack {
            let e = &wants[k].entry;
            let e_end = e.offset as u64 + e.length as u64;
            if e.offset as u64 > end + MAX_GAP || e_end.max(end) - start > MAX_READ {
                break;
            }
            end = end.max(e_end);
            k += 1;
        }
        reads.push(&wants[i..k]);
        i = k;
    }
    reads
}

/// Reads the range of pack `pack_id` that `wants` (one entry of [`plan_reads`])
/// covers, and writes its blobs, each decoded once.
fn fill(
    repo: &Repository,
    pack_id: &Id,
    wants: &[Want],
    jobs: &[FileJob],
    items: &[Item],
    failures: &Mutex<Vec<(usize, String)>>,
    progress: &Progress,
) -> Result<()> {
    let fail = |wants: &[Want], msg: &str| {
        let mut f = failures.lock().expect("poisoned");
        for w in wants {
            f.push((w.job, format!("{}: {msg}", items[jobs[w.job].item].dest.display())));
        }
    };
    let start = wants[0].entry.offset as u64;
    let end = wants.iter().map(|w| w.entry.offset as u64 + w.entry.length as u64).max().unwrap_or(start);
    let range = repo.block_on(
        repo.backend().read(&crate::backend::Handle::id(crate::backend::FileKind::Pack, pack_id), Some(start..end)),
    );
    let data = match range {
        Ok(d) => d,
        Err(e) => {
            fail(wants, &format!("cannot read pack {pack_id}: {e}"));
            return Ok(());
        }
    };
    let mut open: Option<(usize, File)> = None;
    for same in wants.chunk_by(|a, b| a.entry.offset == b.entry.offset) {
        let entry = &same[0].entry;
        let off = (entry.offset as u64 - start) as usize;
        // The storage may return less than asked for.
        let Some(stored) = data.get(off..off + entry.length as usize) else {
            fail(same, &format!("pack {pack_id}: the storage returned a short read"));
            continue;
        };
        let plain = match pack::decode_blob(repo.key(), entry, stored) {
            Ok(p) => p,
            Err(e) => {
                fail(same, &format!("damaged data in pack {pack_id}: {e}"));
                continue;
            }
        };
        let zero = is_zero(&plain);
        for w in same {
            let j = w.job;
            progress.bytes.fetch_add(plain.len() as u64, Ordering::Relaxed);
            if zero {
                continue;
            }
            // Blobs of one file sit together in a pack: keep only its handle open.
            if open.as_ref().is_none_or(|(k, _)| *k != j) {
                open = None;
                match OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(&items[jobs[j].item].dest) {
                    Ok(f) => open = Some((j, f)),
                    Err(e) => {
                        fail(std::slice::from_ref(w), &format!("cannot open for writing: {e}"));
                        continue;
                    }
                }
            }
            let Some((_, f)) = &open else { continue };
            match write_sparse(f, w.file_offset, &plain) {
                Err(e) if is_full(&e) => return Err(Error::io(&items[jobs[j].item].dest, e)),
                Err(e) => fail(std::slice::from_ref(w), &format!("write failed: {e}")),
                Ok(()) => {}
            }
        }
    }
    Ok(())
}

/// Re-reads a restored file and checks each blob-sized piece against its ID.
fn verify_file(repo: &Repository, index: &Index, item: &Item) -> Result<()> {
    let mut f = File::open(&item.dest).map_err(|e| Error::io(&item.dest, e))?;
    let mut buf = Vec::new();
    for id in &item.node.content {
        let len =
            index.get(id).ok_or_else(|| Error::corrupt(format!("blob {id} not indexed")))?.entry.raw_length as usize;
        buf.resize(len, 0);
        f.read_exact(&mut buf).map_err(|e| Error::io(&item.dest, e))?;
        if repo.key().blob_id(&buf) != *id {
            return Err(Error::corrupt("content differs from the snapshot"));
        }
    }
    let mut extra = [0u8; 1];
    if f.read(&mut extra).map_err(|e| Error::io(&item.dest, e))? != 0 {
        return Err(Error::corrupt("file is longer than in the snapshot"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_writes_leave_zero_blocks_unwritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = OpenOptions::new().write(true).create(true).truncate(true).open(&p).unwrap();
        let size = 4 << 20;
        f.set_len(size).unwrap();
        let mut data = vec![0u8; 3 << 20];
        data[100] = 1;
        data[(2 << 20) + 5000] = 2;
        write_sparse(&f, 1000, &data).unwrap();
        drop(f);
        let back = fs::read(&p).unwrap();
        assert_eq!(back[1100], 1);
        assert_eq!(back[1000 + (2 << 20) + 5000], 2);
        assert_eq!(back.iter().filter(|&&b| b != 0).count(), 2);
        use std::os::unix::fs::MetadataExt;
        let blocks = fs::metadata(&p).unwrap().blocks() * 512;
        assert!(blocks < 1 << 20, "{blocks} bytes allocated for two small islands");
        assert!(is_zero(&[0; 33]) && !is_zero(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]));
    }
}
