//! Backup: walks the source paths, cuts files into chunks, saves the new ones and
//! writes one tree blob per directory, then the index and finally the snapshot.
//!
//! Threads: the walker (the caller's thread) reads, chunks and hashes; workers
//! compress, seal and pack new blobs fed through a bounded channel; packs upload on
//! the async runtime. Nothing here prints: warnings go to the [`Report`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::{DateTime, FixedOffset};

use crate::backend::{FileKind, Handle};
use crate::chunker::{ChunkError, Chunker};
use crate::error::{Error, Result};
use crate::filter::PathFilter;
use crate::id::Id;
use crate::repo::Repository;
use crate::repo::index::Index;
use crate::repo::pack::BlobType;
use crate::repo::packer::Packer;
use crate::repo::snapshot::{Snapshot, Summary};
use crate::repo::tree::{ByteStr, Node, NodeType, Timestamp, Tree, Xattr};
use crate::{Progress, Report};

/// What to back up and how.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Source paths (files or directories).
    pub paths: Vec<PathBuf>,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// Host name to record (default: this machine's).
    pub host: Option<String>,
    /// Time to record (default: now).
    pub time: Option<DateTime<FixedOffset>>,
    /// Glob patterns to leave out.
    pub excludes: Vec<String>,
    /// Do not cross file-system boundaries.
    pub one_file_system: bool,
    /// Parent snapshot (ID, prefix or `latest`); default: the latest with the same host and paths.
    pub parent: Option<String>,
    /// Re-read every file even if unchanged.
    pub force: bool,
    /// Read one file from standard input, stored under this name.
    pub stdin_filename: Option<String>,
    /// Do everything except writing to the repository.
    pub dry_run: bool,
    /// zstd level for this backup (default: the repository's).
    pub compression: Option<i32>,
}

/// The outcome of a backup.
#[derive(Debug)]
pub struct BackupResult {
    /// The new snapshot's ID (None for a dry run).
    pub id: Option<Id>,
    /// The snapshot as saved.
    pub snapshot: Snapshot,
}

struct Job {
    blob_type: BlobType,
    id: Id,
    data: Vec<u8>,
}

/// New blobs between index checkpoints (see [`Packer::checkpoint`]), unless
/// `CAIRN_TEST_CHECKPOINT_BLOBS` says otherwise (tests).
const CHECKPOINT_BLOBS: u64 = 65_536;
/// Longest time between index checkpoints while new blobs are stored.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Decides which blobs are new and queues them for the workers.
struct Sink<'a> {
    repo: &'a Repository,
    index: &'a Index,
    queued: HashSet<Id>,
    tx: crossbeam_channel::Sender<Job>,
    /// Buffers of jobs the workers are done with, for reuse (no allocation and
    /// no fresh pages per chunk).
    spare: crossbeam_channel::Receiver<Vec<u8>>,
    /// The ID of the chunk cut from a run of zeros, hashed once.
    zero_id: Id,
    packer: &'a Packer<'a>,
    checkpoint: Checkpoint,
    /// Blobs queued, and (counted by the workers) packed.
    sent: u64,
    done: &'a AtomicU64,
}

/// When the next index checkpoint is due.
struct Checkpoint {
    /// New blobs queued since the last one.
    blobs: u64,
    /// When the last one was.
    at: std::time::Instant,
    /// New blobs that make the next one due.
    every: u64,
    /// Set with each index checkpoint: the walker is to save a partial
    /// snapshot when it next moves to another entry ([`Walker::checkpoint`]).
    partial_due: bool,
}

impl Sink<'_> {
    fn save(&mut self, blob_type: BlobType, data: &[u8]) -> Result<Id> {
        self.queue(blob_type, self.repo.key().blob_id(data), data)
    }

    /// Saves a chunk of file content; `zero`: the chunker found it to be a run of
    /// zeros, whose ID is known.
    fn save_chunk(&mut self, data: &[u8], zero: bool) -> Result<Id> {
        let id = if zero { self.zero_id } else { self.repo.key().blob_id(data) };
        self.queue(BlobType::Data, id, data)
    }

    /// Queues blob `id` for the workers unless it is stored or queued already.
    fn queue(&mut self, blob_type: BlobType, id: Id, data: &[u8]) -> Result<Id> {
        if !self.index.contains(&id) && self.queued.insert(id) {
            let mut buf = self.spare.try_recv().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(data);
            self.tx
                .send(Job { blob_type, id, data: buf })
                .map_err(|_| Error::Incomplete("the blob workers stopped".into()))?;
            self.sent += 1;
            let c = &mut self.checkpoint;
            c.blobs += 1;
            if c.blobs >= c.every || (c.blobs % 1024 == 0 && c.at.elapsed() >= CHECKPOINT_EVERY) {
                self.packer.checkpoint()?;
                (c.blobs, c.at, c.partial_due) = (0, std::time::Instant::now(), true);
            }
        }
        Ok(id)
    }

    /// Waits until the workers have packed every blob queued so far.
    fn drain(&self, worker_error: &Mutex<Option<Error>>) -> Result<()> {
        while self.done.load(Ordering::Acquire) < self.sent {
            if let Some(e) = worker_error.lock().expect("poisoned").take() {
                return Err(e);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok(())
    }
}

/// A source tree being assembled from absolute paths: intermediate directories
/// are virtual (metadata only), leaves are walked.
#[derive(Default)]
struct VDir {
    children: BTreeMap<Vec<u8>, VEntry>,
}

enum VEntry {
    Leaf(PathBuf),
    Dir(PathBuf, VDir),
}

/// A name's node in the parent snapshot and, when that is a partial snapshot
/// (an interrupted backup's), in the complete snapshot before it: a file is not
/// read again if either has it unchanged.
type Olds<'t> = [Option<&'t Node>; 2];

/// The parents' trees of one directory (see [`Olds`]).
type OldTrees = [Option<Tree>; 2];

fn find_old<'t>(trees: &'t OldTrees, name: &[u8]) -> Olds<'t> {
    [trees[0].as_ref().and_then(|t| t.find(name)), trees[1].as_ref().and_then(|t| t.find(name))]
}

struct Walker<'a> {
    sink: Sink<'a>,
    chunker: Chunker,
    buf: Vec<u8>,
    excludes: PathFilter,
    opts: &'a BackupOptions,
    report: &'a dyn Report,
    progress: &'a Progress,
    summary: Summary,
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
    hardlinks: HashMap<(u64, u64), (u64, Vec<Id>)>,
    worker_error: &'a Mutex<Option<Error>>,
    /// The directories being walked, outermost first. An error leaves them as
    /// they are, so that what was done can still be saved ([`Walker::save_partial`]).
    stack: Vec<Frame>,
    /// Saves a partial snapshot of a root tree and the summary so far.
    save_checkpoint: &'a dyn Fn(Id, Summary) -> Result<Id>,
    /// The partial snapshot this backup saved last, replaced by the next.
    last_partial: Option<Id>,
}

/// A directory being walked: its node (None for the root) and its entries so far.
struct Frame {
    node: Option<Node>,
    tree: Tree,
}

fn ts(sec: i64, nsec: i64) -> Timestamp {
    Timestamp(sec, nsec as u32)
}

fn open_noatime(path: &Path) -> io::Result<File> {
    match fs::OpenOptions::new().read(true).custom_flags(libc::O_NOATIME).open(path) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => File::open(path),
        r => r,
    }
}

fn read_xattrs(path: &Path) -> Vec<Xattr> {
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    let mut out: Vec<Xattr> = names
        .filter_map(|n| {
            let value = xattr::get(path, &n).ok().flatten()?;
            Some(Xattr { name: ByteStr(n.into_vec()), value: ByteStr(value) })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

impl Walker<'_> {
    fn check_workers(&self) -> Result<()> {
        crate::check_interrupted()?;
        match self.worker_error.lock().expect("poisoned").take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn warn(&mut self, path: &Path, e: impl std::fmt::Display) {
        self.summary.errors += 1;
        self.report.warn(&format!("{}: {e} (skipped)", path.display()));
    }

    /// The node of `path` from its metadata. Extended attributes are read from
    /// the file unless an old node (in a parent snapshot) has the same inode and
    /// change time: setting or removing one changes the ctime, so they are the
    /// old node's.
    fn base_node(&mut self, name: &[u8], path: &Path, m: &Metadata, olds: Olds) -> Node {
        let ft = m.file_type();
        let node_type = if ft.is_file() {
            NodeType::File
        } else if ft.is_dir() {
            NodeType::Dir
        } else if ft.is_symlink() {
            NodeType::Symlink
        } else if ft.is_fifo() {
            NodeType::Fifo
        } else if ft.is_socket() {
            NodeType::Socket
        } else if ft.is_char_device() {
            NodeType::Chardev
        } else {
            NodeType::Blockdev
        };
        let user = self
            .users
            .entry(m.uid())
            .or_insert_with(|| nix::unistd::User::from_uid(m.uid().into()).ok().flatten().map(|u| u.name))
            .clone();
        let group = self
            .groups
            .entry(m.gid())
            .or_insert_with(|| nix::unistd::Group::from_gid(m.gid().into()).ok().flatten().map(|g| g.name))
            .clone();
        Node {
            name: ByteStr(name.to_vec()),
            node_type,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            user,
            group,
            mtime: ts(m.mtime(), m.mtime_nsec()),
            atime: ts(m.atime(), m.atime_nsec()),
            ctime: ts(m.ctime(), m.ctime_nsec()),
            size: if node_type == NodeType::File { m.size() } else { 0 },
            inode: m.ino(),
            links: m.nlink(),
            device: m.dev(),
            rdev: matches!(node_type, NodeType::Chardev | NodeType::Blockdev).then(|| m.rdev()),
            target: None,
            xattrs: match olds.into_iter().flatten().find(|o| {
                !self.opts.force
                    && o.node_type == node_type
                    && o.inode == m.ino()
                    && o.ctime == ts(m.ctime(), m.ctime_nsec())
            }) {
                Some(o) => o.xattrs.clone(),
                None => read_xattrs(path),
            },
            content: None,
            subtree: None,
        }
    }

    /// Builds the node for `path` (already stat'ed); None if it must be skipped.
    fn entry(&mut self, name: &[u8], path: &Path, m: &Metadata, olds: Olds, root_dev: u64) -> Result<Option<Node>> {
        let mut node = self.base_node(name, path, m, olds);
        match node.node_type {
            NodeType::Dir => {
                let old_trees = self.old_subtrees(olds);
                self.stack.push(Frame { node: Some(node), tree: Tree::default() });
                let id = self.dir(path, &old_trees, olds, root_dev)?;
                node = self.pop_node(id);
            }
            NodeType::Symlink => match fs::read_link(path) {
                Ok(t) => node.target = Some(ByteStr(t.into_os_string().into_vec())),
                Err(e) => {
                    self.warn(path, e);
                    return Ok(None);
                }
            },
            NodeType::File => {
                match self.file_content(path, &node, olds)? {
                    Some((c, size)) => {
                        // The file may have grown or shrunk since it was stat'ed.
                        node.size = size;
                        node.content = Some(c);
                    }
                    None => return Ok(None),
                }
                self.summary.total_files_processed += 1;
                self.summary.total_bytes_processed += node.size;
                self.progress.files.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        Ok(Some(node))
    }

    fn old_subtrees(&mut self, olds: Olds) -> OldTrees {
        let [a, b] = olds.map(|old| old.filter(|o| o.node_type == NodeType::Dir).and_then(|o| o.subtree));
        // The same tree in both parents (a directory the interrupted backup had
        // finished, unchanged since) is loaded once.
        [a, b.filter(|b| a != Some(*b))].map(|id| {
            let id = id?;
            match self.sink.repo.load_tree(&id) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.report.warn(&format!("parent tree {id} unreadable, reading files again: {e}"));
                    None
                }
            }
        })
    }

    /// Ends the walk of the directory on top of the stack, whose tree is `id`:
    /// returns its node with the tree.
    fn pop_node(&mut self, id: Id) -> Node {
        let mut node = self.stack.pop().and_then(|f| f.node).expect("a directory frame with its node");
        node.subtree = Some(id);
        node
    }

    /// Adds a finished entry to the directory being walked.
    fn push_entry(&mut self, node: Option<Node>) {
        self.stack.last_mut().expect("a directory frame").tree.entries.extend(node);
    }

    /// A checkpoint of the walk: every blob queued so far is packed, uploaded
    /// and indexed, then a partial snapshot records the files finished so far
    /// (replacing this backup's previous one), so that a backup killed after it
    /// resumes from there.
    fn checkpoint(&mut self) -> Result<()> {
        self.sink.checkpoint.partial_due = false;
        let Some(root) = self.save_partial()? else { return Ok(()) };
        self.sink.drain(self.worker_error)?;
        self.sink.packer.finish()?;
        let id = (self.save_checkpoint)(root, self.summary.clone())?;
        if let Some(old) = self.last_partial.replace(id)
            && let Err(e) = self.sink.repo.remove_file(&Handle::id(FileKind::Snapshot, &old))
        {
            self.report.warn(&format!("could not remove partial snapshot {}: {e}", old.short()));
        }
        Ok(())
    }

    /// Saves the trees of what the walk has finished so far: each directory on
    /// the stack with its finished entries and, last, the directory walked
    /// inside it. Returns the root tree's ID (None if nothing is being walked).
    fn save_partial(&mut self) -> Result<Option<Id>> {
        let mut inner: Option<Node> = None;
        for i in (0..self.stack.len()).rev() {
            let mut tree = Tree { entries: self.stack[i].tree.entries.clone() };
            tree.entries.extend(inner.take());
            let id = self.sink.save(BlobType::Tree, &tree.to_bytes())?;
            match &self.stack[i].node {
                Some(n) => inner = Some(Node { subtree: Some(id), ..n.clone() }),
                None => return Ok(Some(id)),
            }
        }
        Ok(None)
    }

    fn file_content(&mut self, path: &Path, node: &Node, olds: Olds) -> Result<Option<(Vec<Id>, u64)>> {
        let index = self.sink.index;
        let unchanged = olds.into_iter().flatten().find_map(|o| {
            let c = o.content.as_ref()?;
            (!self.opts.force
                && o.node_type == NodeType::File
                && o.size == node.size
                && o.mtime == node.mtime
                && o.ctime == node.ctime
                && o.inode == node.inode
                && c.iter().all(|id| index.contains(id)))
            .then_some(c)
        });
        if let Some(c) = unchanged {
            self.summary.files_unmodified += 1;
            self.progress.bytes.fetch_add(node.size, Ordering::Relaxed);
            return Ok(Some((c.clone(), node.size)));
        }
        let old = olds[0].or(olds[1]);
        let link_key = (node.device, node.inode);
        if node.links > 1
            && let Some((size, c)) = self.hardlinks.get(&link_key)
            && *size == node.size
        {
            let c = (c.clone(), *size);
            self.count_new(old);
            return Ok(Some(c));
        }
        let file = match open_noatime(path) {
            Ok(f) => f,
            Err(e) => {
                self.warn(path, e);
                return Ok(None);
            }
        };
        let (content, size) = match self.read_content(file) {
            Ok(c) => c,
            Err(ChunkError::Read(e)) => {
                self.warn(path, e);
                return Ok(None);
            }
            Err(ChunkError::Sink(e)) => return Err(e),
        };
        self.count_new(old);
        if node.links > 1 {
            self.hardlinks.insert(link_key, (size, content.clone()));
        }
        Ok(Some((content, size)))
    }

    fn count_new(&mut self, old: Option<&Node>) {
        if old.is_some() {
            self.summary.files_changed += 1;
        } else {
            self.summary.files_new += 1;
        }
    }

    /// Chunks and saves `src`; returns the content IDs and the bytes read.
    fn read_content(&mut self, src: impl Read) -> Result<(Vec<Id>, u64), ChunkError> {
        let Walker { chunker, buf, sink, progress, .. } = self;
        let mut ids = Vec::new();
        let n = chunker.chunk_reader(src, buf, |chunk, zero| {
            crate::check_interrupted()?;
            ids.push(sink.save_chunk(chunk, zero)?);
            progress.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            Ok(())
        })?;
        self.summary.files_read += 1;
        self.summary.bytes_read += n;
        Ok((ids, n))
    }

    /// Walks a real directory; returns its tree ID.
    fn dir(&mut self, path: &Path, old: &OldTrees, old_node: Olds, root_dev: u64) -> Result<Id> {
        self.check_workers()?;
        let mut names: Vec<OsString> = match fs::read_dir(path) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect(),
            Err(e) => {
                self.warn(path, format!("cannot list directory: {e}"));
                Vec::new()
            }
        };
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            crate::check_interrupted()?;
            if self.sink.checkpoint.partial_due && !self.opts.dry_run {
                self.checkpoint()?;
            }
            let child = path.join(&name);
            let m = match fs::symlink_metadata(&child) {
                Ok(m) => m,
                Err(e) => {
                    if !self.excludes.matches(&child, false) {
                        self.warn(&child, e);
                    }
                    continue;
                }
            };
            if self.excludes.matches(&child, m.is_dir()) {
                continue;
            }
            if self.opts.one_file_system && m.is_dir() && m.dev() != root_dev {
                continue;
            }
            let n = self.entry(name.as_bytes(), &child, &m, find_old(old, name.as_bytes()), root_dev)?;
            self.push_entry(n);
        }
        let tree = std::mem::take(&mut self.stack.last_mut().expect("a directory frame").tree);
        self.finish_tree(tree, old_node)
    }

    fn finish_tree(&mut self, tree: Tree, old_node: Olds) -> Result<Id> {
        let id = self.sink.save(BlobType::Tree, &tree.to_bytes())?;
        self.count_dir(id, old_node);
        Ok(id)
    }

    fn count_dir(&mut self, id: Id, old_node: Olds) {
        match old_node[0].or(old_node[1]).and_then(|o| o.subtree) {
            None => self.summary.dirs_new += 1,
            Some(o) if o == id => self.summary.dirs_unmodified += 1,
            Some(_) => self.summary.dirs_changed += 1,
        }
    }

    /// Walks a virtual directory (the path components above the sources); the
    /// root is not counted as a directory.
    fn vdir(&mut self, dir: &VDir, old: &OldTrees, old_node: Olds, root: bool) -> Result<Id> {
        for (name, child) in &dir.children {
            if self.sink.checkpoint.partial_due && !self.opts.dry_run {
                self.checkpoint()?;
            }
            let old_child = find_old(old, name);
            let path = match child {
                VEntry::Leaf(p) | VEntry::Dir(p, _) => p,
            };
            let m = match fs::symlink_metadata(path) {
                Ok(m) => m,
                Err(e) => {
                    self.warn(path, e);
                    continue;
                }
            };
            let node = match child {
                VEntry::Leaf(p) => self.entry(name, p, &m, old_child, m.dev())?,
                VEntry::Dir(p, sub) => {
                    let mut node = self.base_node(name, p, &m, old_child);
                    node.node_type = NodeType::Dir;
                    let old_trees = self.old_subtrees(old_child);
                    self.stack.push(Frame { node: Some(node), tree: Tree::default() });
                    let id = self.vdir(sub, &old_trees, old_child, false)?;
                    Some(self.pop_node(id))
                }
            };
            self.push_entry(node);
        }
        let tree = std::mem::take(&mut self.stack.last_mut().expect("a directory frame").tree);
        if root { self.sink.save(BlobType::Tree, &tree.to_bytes()) } else { self.finish_tree(tree, old_node) }
    }

    fn stdin(&mut self, name: &str, old: Option<&Tree>) -> Result<Id> {
        let now = chrono::Utc::now();
        let t = Timestamp(now.timestamp(), now.timestamp_subsec_nanos());
        let (content, size) = match self.read_content(io::stdin().lock()) {
            Ok(c) => c,
            Err(ChunkError::Read(e)) => return Err(Error::io("standard input", e)),
            Err(ChunkError::Sink(e)) => return Err(e),
        };
        self.count_new(old.and_then(|t| t.find(name.as_bytes())));
        self.summary.total_files_processed = 1;
        self.summary.total_bytes_processed = size;
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let node = Node {
            name: ByteStr(name.as_bytes().to_vec()),
            node_type: NodeType::File,
            mode: 0o644,
            uid,
            gid,
            user: Some(crate::util::username()),
            group: None,
            mtime: t,
            atime: t,
            ctime: t,
            size,
            inode: 0,
            links: 1,
            device: 0,
            rdev: None,
            target: None,
            xattrs: Vec::new(),
            content: Some(content),
            subtree: None,
        };
        self.finish_tree(Tree { entries: vec![node] }, [None, None])
    }
}

/// Makes `p` absolute and removes `.` and `..` lexically (symlinks are kept).
fn clean_absolute(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| Error::io(p, e))?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

fn build_vroot(paths: &[PathBuf]) -> VDir {
    let mut root = VDir::default();
    let mut sorted = paths.to_vec();
    sorted.sort();
    'paths: for p in sorted {
        let comps: Vec<_> =
            p.components().filter_map(|c| if let Component::Normal(n) = c { Some(n) } else { None }).collect();
        if comps.is_empty() {
            continue;
        }
        let mut dir = &mut root;
        let mut cur = PathBuf::from("/");
        for (i, c) in comps.iter().enumerate() {
            cur.push(c);
            let key = c.as_bytes().to_vec();
            if i == comps.len() - 1 {
                dir.children.insert(key, VEntry::Leaf(cur.clone()));
                continue 'paths;
            }
            let e = dir.children.entry(key).or_insert_with(|| VEntry::Dir(cur.clone(), VDir::default()));
            match e {
                // A source that contains this one already covers it.
                VEntry::Leaf(_) => continue 'paths,
                VEntry::Dir(_, d) => dir = d,
            }
        }
    }
    root
}

/// Counts the files and bytes below `paths` into `progress`'s totals (for an ETA);
/// meant to run beside [`backup`]. Errors are ignored: the backup reports them.
pub fn scan(paths: &[PathBuf], excludes: &[String], progress: &Progress) {
    let Ok(filter) = PathFilter::new(excludes) else {
        return;
    };
    let mut stack: Vec<PathBuf> = paths.iter().filter_map(|p| clean_absolute(p).ok()).collect();
    while let Some(path) = stack.pop() {
        let Ok(m) = fs::symlink_metadata(&path) else {
            continue;
        };
        if m.is_dir() {
            for e in fs::read_dir(&path).into_iter().flatten().flatten() {
                let child = e.path();
                if !filter.matches(&child, e.file_type().is_ok_and(|t| t.is_dir())) {
                    stack.push(child);
                }
            }
        } else if m.is_file() {
            progress.total_files.fetch_add(1, Ordering::Relaxed);
            progress.total_bytes.fetch_add(m.len(), Ordering::Relaxed);
        }
    }
}

/// Runs a backup and saves the snapshot.
pub fn backup(
    repo: &Repository,
    opts: &BackupOptions,
    report: &dyn Report,
    progress: &Progress,
) -> Result<BackupResult> {
    let start = Instant::now();
    let backup_start = chrono::Local::now().fixed_offset();
    let index = repo.index()?;
    let paths: Vec<String> = match &opts.stdin_filename {
        Some(name) => {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(Error::InvalidArgument(format!("--stdin-filename {name:?} must be a plain file name")));
            }
            vec![format!("/{name}")]
        }
        None => {
            if opts.paths.is_empty() {
                return Err(Error::InvalidArgument("nothing to back up: give at least one path".into()));
            }
            let mut v = Vec::new();
            for p in &opts.paths {
                let abs = clean_absolute(p)?;
                if let Err(e) = fs::symlink_metadata(&abs) {
                    return Err(Error::io(abs, e));
                }
                v.push(abs.to_string_lossy().into_owned());
            }
            v.sort();
            v.dedup();
            v
        }
    };
    let hostname = opts.host.clone().unwrap_or_else(crate::util::hostname);

    // The parent snapshot: the files it lists unchanged are not read again. If
    // it is a partial one (an interrupted backup's), the latest complete one of
    // the same paths counts too; a complete backup removes the partial ones.
    let snapshots = repo.snapshots()?;
    let same = |s: &Snapshot| s.hostname == hostname && s.sorted_paths() == paths;
    let partials: Vec<Id> = snapshots.iter().filter(|(_, s)| s.partial && same(s)).map(|(id, _)| *id).collect();
    let parent = match &opts.parent {
        Some(spec) => Some(repo.find_snapshot(spec)?),
        None => snapshots.iter().rev().find(|(_, s)| same(s)).cloned(),
    };
    let complete = match &parent {
        Some((_, p)) if p.partial => snapshots.into_iter().rev().find(|(_, s)| !s.partial && same(s)),
        _ => None,
    };
    let parent_trees: OldTrees = [&parent, &complete].map(|p| {
        let (_, s) = p.as_ref()?;
        match repo.load_tree(&s.tree) {
            Ok(t) => Some(t),
            Err(e) => {
                report.warn(&format!("parent snapshot unreadable, reading all files: {e}"));
                None
            }
        }
    });

    let lease = if opts.dry_run { None } else { Some(repo.lock_shared()?) };
    let packer = Packer::new(repo, opts.dry_run);
    let level = opts.compression.unwrap_or(repo.config().compression);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
    let (tx, rx) = crossbeam_channel::bounded::<Job>(workers * 2);
    let (spare_tx, spare_rx) = crossbeam_channel::bounded::<Vec<u8>>(workers * 3);
    let worker_error = Mutex::new(None);
    let done = AtomicU64::new(0);

    // The snapshot of a root tree, with the summary completed from the packer.
    let snapshot = |tree: Id, mut summary: Summary, partial: bool| {
        let st = &packer.stats;
        summary.data_blobs = st.data_blobs.load(Ordering::Relaxed);
        summary.tree_blobs = st.tree_blobs.load(Ordering::Relaxed);
        summary.data_added = st.raw_bytes.load(Ordering::Relaxed);
        summary.data_added_packed = st.stored_bytes.load(Ordering::Relaxed);
        summary.backup_start = Some(backup_start);
        summary.backup_end = Some(chrono::Local::now().fixed_offset());
        summary.duration_seconds = start.elapsed().as_secs_f64();
        Snapshot {
            time: opts.time.unwrap_or(backup_start),
            tree,
            paths: paths.clone(),
            hostname: hostname.clone(),
            username: crate::util::username(),
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            tags: opts.tags.clone(),
            parent: parent.as_ref().map(|(id, _)| *id),
            excludes: opts.excludes.clone(),
            program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
            summary,
            original: None,
            partial,
        }
    };
    let save_checkpoint =
        |root: Id, summary: Summary| save_snapshot(repo, lease.as_ref(), &snapshot(root, summary, true));

    let (tree, summary, partial, last_partial) = std::thread::scope(|s| -> Result<_> {
        for _ in 0..workers {
            let (rx, spare, packer, worker_error, done) = (rx.clone(), spare_tx.clone(), &packer, &worker_error, &done);
            s.spawn(move || {
                let mut z = crate::compress::Compressor::new(level);
                for job in rx {
                    let r = packer.add(job.blob_type, job.id, &job.data, z.as_mut());
                    done.fetch_add(1, Ordering::Release);
                    if let Err(e) = r {
                        worker_error.lock().expect("poisoned").get_or_insert(e);
                        break;
                    }
                    // (Not kept when full, or when a huge tree blob made it large.)
                    if job.data.capacity() <= 16 << 20 {
                        let _ = spare.try_send(job.data);
                    }
                }
            });
        }
        drop(rx);
        let chunker = Chunker::new(repo.config().chunker, repo.key().chunker_seed());
        let zero_id = repo.key().blob_id(&vec![0; chunker.zero_chunk_len()]);
        let mut w = Walker {
            sink: Sink {
                repo,
                index: &index,
                queued: HashSet::new(),
                tx,
                spare: spare_rx,
                zero_id,
                packer: &packer,
                checkpoint: Checkpoint {
                    blobs: 0,
                    at: std::time::Instant::now(),
                    every: std::env::var("CAIRN_TEST_CHECKPOINT_BLOBS")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(CHECKPOINT_BLOBS),
                    partial_due: false,
                },
                sent: 0,
                done: &done,
            },
            chunker,
            buf: Vec::new(),
            excludes: PathFilter::new(&opts.excludes)?,
            opts,
            report,
            progress,
            summary: Summary::default(),
            users: HashMap::new(),
            groups: HashMap::new(),
            hardlinks: HashMap::new(),
            worker_error: &worker_error,
            stack: Vec::new(),
            save_checkpoint: &save_checkpoint,
            last_partial: None,
        };
        let tree = match &opts.stdin_filename {
            Some(name) => w.stdin(name, parent_trees[0].as_ref()),
            // Backing up `/` itself: the root directory is the snapshot's root tree.
            None if paths.iter().any(|p| p == "/") => match fs::symlink_metadata("/") {
                Ok(m) => {
                    w.stack.push(Frame { node: None, tree: Tree::default() });
                    w.dir(Path::new("/"), &parent_trees, [None, None], m.dev())
                }
                Err(e) => Err(Error::io("/", e)),
            },
            None => {
                let root = build_vroot(&paths.iter().map(PathBuf::from).collect::<Vec<_>>());
                w.stack.push(Frame { node: None, tree: Tree::default() });
                w.vdir(&root, &parent_trees, [None, None], true)
            }
        };
        // Interrupted: what the walk finished is saved as partial trees (the
        // backup then saves a partial snapshot); not after a failure.
        let partial = match &tree {
            Err(Error::Cancelled) if !opts.dry_run => w.save_partial().ok().flatten(),
            _ => None,
        };
        let Walker { sink, summary, last_partial, .. } = w;
        drop(sink); // closes the channel: workers drain and stop
        Ok((tree, summary, partial, last_partial))
    })?;
    let worker_failed = worker_error.lock().expect("poisoned").take();
    // (An interruption after the walk still stops the backup before its snapshot.)
    let (tree, partial) = match (tree, crate::check_interrupted()) {
        (Ok(t), Err(e)) => (Err(e), Some(t)),
        (Err(Error::Cancelled), _) => (Err(Error::Cancelled), partial),
        (t, _) => (t, None),
    };
    // This backup's last checkpoint is replaced by what comes now.
    let remove_partial = |p: Id| {
        if let Err(e) = repo.remove_file(&Handle::id(FileKind::Snapshot, &p)) {
            report.warn(&format!("could not remove partial snapshot {}: {e}", p.short()));
        }
    };
    if worker_failed.is_some() || tree.is_err() {
        match (&worker_failed, partial) {
            _ if opts.dry_run => {}
            // Interrupted: the open packs are uploaded and indexed, and a partial
            // snapshot records the files stored so far, so that the next backup
            // neither stores nor reads them again.
            (None, Some(root)) => match packer.finish().and_then(|_| save_checkpoint(root, summary)) {
                Ok(id) => {
                    report.warn(&format!(
                        "saved partial snapshot {} of what was stored before the interruption; the next backup of \
                         these paths continues from it",
                        id.short()
                    ));
                    if let Some(p) = last_partial {
                        remove_partial(p);
                    }
                }
                Err(e) => report.warn(&format!("could not save a partial snapshot: {e}")),
            },
            // Failed: what was uploaded is indexed (best effort), so that the next
            // backup does not store it again; its last checkpoint, if any, stays.
            _ => {
                let _ = packer.salvage();
            }
        }
        return Err(worker_failed.or(tree.err()).expect("failed"));
    }
    let tree = tree?;
    packer.finish()?;
    let snapshot = snapshot(tree, summary, false);
    if opts.dry_run {
        return Ok(BackupResult { id: None, snapshot });
    }
    let id = save_snapshot(repo, lease.as_ref(), &snapshot)?;
    // The partial snapshots this one completes are of no more use.
    partials.into_iter().chain(last_partial).for_each(remove_partial);
    Ok(BackupResult { id: Some(id), snapshot })
}

/// Saves a backup's snapshot, unless its lock may have lapsed.
fn save_snapshot(repo: &Repository, lease: Option<&crate::repo::lock::LeaseGuard>, snapshot: &Snapshot) -> Result<Id> {
    if lease.is_some_and(|l| l.may_have_expired()) {
        return Err(Error::Incomplete(
            "the backup's lock could not be renewed for almost 30 minutes, so a prune may have removed data it \
             reused; the snapshot was not saved (run the backup again)"
                .into(),
        ));
    }
    repo.save_json(FileKind::Snapshot, snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths_and_virtual_root() {
        assert_eq!(clean_absolute(Path::new("/a/./b/../c")).unwrap(), PathBuf::from("/a/c"));
        let root = build_vroot(&[PathBuf::from("/a/b"), PathBuf::from("/a/b/c"), PathBuf::from("/d")]);
        assert_eq!(root.children.len(), 2);
        match root.children.get(&b"a"[..]) {
            Some(VEntry::Dir(_, d)) => {
                assert!(matches!(d.children.get(&b"b"[..]), Some(VEntry::Leaf(_))))
            }
            _ => panic!("expected a virtual dir"),
        }
    }
}
