//! `cairn dump`: a file's content, or a directory as a tar or zip stream.
//!
//! Three kinds of threads: a walker goes through the trees in order and sends each
//! entry, and for each chunk of a file a slot, down a short bounded channel;
//! fetchers read, decrypt and verify the chunks into their slots, several at once;
//! the calling thread writes the archive in walk order. Memory stays bounded by
//! the channel (a few chunks), whatever the size of the files.

use std::cell::Cell;
use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, anyhow};
use cairn::repo::tree::{Node, NodeType, Timestamp};
use cairn::util::human_bytes;
use cairn::{Id, Report, Repository, browse};
use clap::{Args, ValueEnum};
use crossbeam_channel::{Receiver, Sender};

use super::{Global, Output};

/// Archive formats.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// POSIX tar with GNU long names and PAX times and extended attributes.
    Tar,
    /// Zip (deflate), with files, directories and symlinks only.
    Zip,
}

/// Arguments of `cairn dump`.
#[derive(Args, Debug)]
pub struct DumpArgs {
    /// Snapshot: ID, unique prefix or `latest`.
    snapshot: String,
    /// File or directory inside the snapshot, as `ls` shows it (`/` for all of it).
    path: OsString,
    /// Write an archive in this format (default for a directory or other
    /// non-file: tar). A file is written as it is unless this is given.
    #[arg(short = 'a', long, value_enum, value_name = "FORMAT")]
    archive: Option<Format>,
    /// Write to FILE (created or replaced) instead of standard output.
    #[arg(short = 't', long, value_name = "FILE")]
    target: Option<PathBuf>,
}

/// What the walker goes through.
enum Source {
    /// Everything below a directory (names relative to it).
    Tree(Id),
    /// One entry, under this name.
    Single(PathBuf, Box<Node>),
}

/// The walker's messages, in archive order.
enum Event {
    /// An entry; a file that is not a hard link to an earlier entry is followed by
    /// one `Blob` per content ID.
    Entry {
        /// Name in the archive.
        rel: PathBuf,
        node: Box<Node>,
        /// The earlier name this one is a hard link of (tar only).
        link: Option<PathBuf>,
    },
    /// The next chunk of the current file, once a fetcher has read it.
    Blob(Receiver<cairn::Result<Vec<u8>>>),
    /// The walk failed (a tree could not be read).
    Failed(cairn::Error),
}

type Job = (Id, Sender<cairn::Result<Vec<u8>>>);

/// The first name seen of a hard-linked file, and its content.
type FirstLink = (PathBuf, Option<Vec<Id>>);

/// What was written.
#[derive(Debug, Default, serde::Serialize)]
struct Stats {
    files: u64,
    dirs: u64,
    /// Symlinks, hard links, FIFOs and devices.
    others: u64,
    /// Entries the archive format cannot hold (each reported).
    skipped: u64,
    bytes: u64,
}

/// Finds `path` (raw bytes, `/`-separated) in the snapshot.
fn resolve(repo: &Repository, root: &Id, path: &OsStr, not_found: impl Fn() -> cairn::Error) -> cairn::Result<Source> {
    let mut cur: Option<Node> = None;
    for c in path.as_bytes().split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".") {
        let tree = match &cur {
            None => *root,
            Some(n) => match (n.node_type, n.subtree) {
                (NodeType::Dir, Some(id)) => id,
                _ => return Err(not_found()),
            },
        };
        cur = Some(repo.load_tree(&tree)?.find(c).cloned().ok_or_else(&not_found)?);
    }
    Ok(match cur {
        None => Source::Tree(*root),
        Some(n) => match (n.node_type, n.subtree) {
            (NodeType::Dir, Some(id)) => Source::Tree(id),
            _ => Source::Single(PathBuf::from(n.os_name()), Box::new(n)),
        },
    })
}

/// The walker: sends every entry of `src` in order, and one slot per chunk
/// (queuing the chunk for the fetchers). Stops quietly when the writer is gone.
fn produce(repo: &Repository, src: &Source, hard_links: bool, events: Sender<Event>, jobs: Sender<Job>) {
    // (device, inode) → the first name and its content.
    let mut links: HashMap<(u64, u64), FirstLink> = HashMap::new();
    let mut gone = false;
    let mut send = |rel: &Path, n: &Node| -> cairn::Result<()> {
        let mut link = None;
        if hard_links && n.node_type == NodeType::File && n.links > 1 && n.inode != 0 {
            match links.entry((n.device, n.inode)) {
                MapEntry::Occupied(e) if e.get().1 == n.content => link = Some(e.get().0.clone()),
                MapEntry::Occupied(_) => {}
                MapEntry::Vacant(v) => {
                    v.insert((rel.to_path_buf(), n.content.clone()));
                }
            }
        }
        let blobs = match (&link, n.node_type) {
            (None, NodeType::File) => n.content.clone().unwrap_or_default(),
            _ => Vec::new(),
        };
        // A send fails only when the writer has stopped: end the walk quietly.
        let mut sent = events.send(Event::Entry { rel: rel.to_path_buf(), node: Box::new(n.clone()), link }).is_ok();
        for id in blobs {
            if !sent {
                break;
            }
            let (tx, rx) = crossbeam_channel::bounded(1);
            sent = jobs.send((id, tx)).is_ok() && events.send(Event::Blob(rx)).is_ok();
        }
        if sent {
            Ok(())
        } else {
            gone = true;
            Err(cairn::Error::Cancelled)
        }
    };
    let r = match src {
        Source::Tree(id) => browse::walk_subtree(repo, id, Path::new(""), &mut send),
        Source::Single(rel, n) => send(rel, n),
    };
    if let Err(e) = r
        && !gone
    {
        let _ = events.send(Event::Failed(e));
    }
}

/// A fetcher: reads queued chunks until the queue closes or the writer stops.
fn fetch(repo: &Repository, jobs: Receiver<Job>, stop: &AtomicBool) {
    while let Ok((id, slot)) = jobs.recv() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let _ = slot.send(repo.read_blob(&id));
    }
}

/// A library error carried through `io::Error` (recovered by [`lift`]).
fn wrap(e: cairn::Error) -> io::Error {
    io::Error::other(e)
}

/// A library error met while reading one file's content, carried through
/// `io::Error` with the file's name in the archive.
#[derive(Debug, thiserror::Error)]
#[error("{path}")]
struct InFile {
    path: String,
    #[source]
    source: cairn::Error,
}

/// An `io::Error` as the error it carries: a wrapped library error keeps its
/// message and exit code; anything else (a closed pipe, a full disk) stays as it is.
fn lift(e: io::Error) -> anyhow::Error {
    if !e.get_ref().is_some_and(|i| i.is::<cairn::Error>() || i.is::<InFile>()) {
        return anyhow::Error::new(e);
    }
    let Some(inner) = e.into_inner() else { return anyhow!("I/O error") };
    match inner.downcast::<cairn::Error>() {
        Ok(c) => anyhow::Error::new(*c),
        Err(other) => match other.downcast::<InFile>() {
            Ok(f) => anyhow::Error::new(f.source).context(f.path),
            Err(other) => anyhow!(other),
        },
    }
}

/// The next event, or None once the walker has finished.
fn next_event(events: &Receiver<Event>) -> io::Result<Option<Event>> {
    cairn::check_interrupted().map_err(wrap)?;
    match events.recv() {
        Ok(Event::Failed(e)) => Err(wrap(e)),
        Ok(ev) => Ok(Some(ev)),
        Err(_) => Ok(None),
    }
}

/// The content of one file, chunk by chunk from the event stream, checked
/// against the size and chunk count the tree records.
struct Content<'a> {
    events: &'a Receiver<Event>,
    path: &'a Path,
    /// Chunks still to come.
    left: usize,
    /// Bytes still to come.
    remaining: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl<'a> Content<'a> {
    fn new(events: &'a Receiver<Event>, path: &'a Path, n: &Node) -> Content<'a> {
        let left = n.content.as_ref().map_or(0, Vec::len);
        Content { events, path, left, remaining: n.size, buf: Vec::new(), pos: 0 }
    }

    /// A library error, with the file's name.
    fn error(&self, e: cairn::Error) -> io::Error {
        io::Error::other(InFile { path: self.path.to_string_lossy().into_owned(), source: e })
    }

    fn damaged(&self, what: &str) -> io::Error {
        self.error(cairn::Error::corrupt(what))
    }

    /// The next chunk, or None at the end of the file.
    fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.left == 0 {
            return if self.remaining == 0 {
                Ok(None)
            } else {
                Err(self.damaged("the content is shorter than the recorded size"))
            };
        }
        let data = match next_event(self.events)? {
            Some(Event::Blob(slot)) => slot
                .recv()
                .map_err(|_| wrap(cairn::Error::Incomplete("a chunk reader stopped".into())))?
                .map_err(|e| self.error(e))?,
            _ => return Err(wrap(cairn::Error::Incomplete("internal error: chunk expected".into()))),
        };
        self.left -= 1;
        if data.len() as u64 > self.remaining {
            return Err(self.damaged("the content is longer than the recorded size"));
        }
        self.remaining -= data.len() as u64;
        Ok(Some(data))
    }
}

impl Read for Content<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.next_chunk()? {
                Some(d) => {
                    self.buf = d;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Passes writes on until the first error or until `dead` is set; after that it
/// swallows everything, so that cleanup on drop (a tar or zip trailer) never
/// writes a complete-looking archive after a failure, nor reports a second error.
struct Guarded<'a, W: Write> {
    inner: W,
    dead: &'a Cell<bool>,
}

impl<W: Write> Write for Guarded<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.dead.get() {
            return Ok(buf.len());
        }
        self.inner.write(buf).inspect_err(|_| self.dead.set(true))
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.dead.get() {
            return Ok(());
        }
        self.inner.flush().inspect_err(|_| self.dead.set(true))
    }
}

/// One PAX extended header record: `LEN KEY=VALUE\n`, LEN counting itself.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3;
    let mut len = rest;
    loop {
        let next = rest + len.to_string().len();
        if next == len {
            break;
        }
        len = next;
    }
    out.extend_from_slice(format!("{len} ").as_bytes());
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// A time as a PAX decimal number of seconds (negative before 1970).
fn pax_time(t: Timestamp) -> String {
    match t {
        Timestamp(s, 0) => s.to_string(),
        Timestamp(s, ns) if s >= 0 => format!("{s}.{ns:09}"),
        Timestamp(s, ns) => format!("-{}.{:09}", -(s + 1), 1_000_000_000 - ns),
    }
}

/// Writes one entry (and its content) to the tar archive.
fn tar_entry<W: Write>(
    b: &mut tar::Builder<W>,
    events: &Receiver<Event>,
    rel: &Path,
    n: &Node,
    link: Option<&Path>,
    stats: &mut Stats,
    report: &dyn Report,
) -> io::Result<()> {
    use tar::EntryType;
    if n.node_type == NodeType::Socket {
        stats.skipped += 1;
        report.warn(&format!("{}: a socket cannot be stored in a tar archive (skipped)", rel.display()));
        return Ok(());
    }
    let mut pax = Vec::new();
    if n.mtime.1 != 0 || n.mtime.0 < 0 {
        pax_record(&mut pax, b"mtime", pax_time(n.mtime).as_bytes());
    }
    for x in &n.xattrs {
        pax_record(&mut pax, &[b"SCHILY.xattr.", &x.name.0[..]].concat(), &x.value.0);
    }
    if !pax.is_empty() {
        let mut h = tar::Header::new_ustar();
        let name = b"././@PaxHeader";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(EntryType::XHeader);
        h.set_mode(0o644);
        h.set_size(pax.len() as u64);
        h.set_mtime(n.mtime.0.max(0) as u64);
        h.set_cksum();
        b.append(&h, pax.as_slice())?;
    }
    let mut h = tar::Header::new_gnu();
    h.set_mode(n.mode & 0o7777);
    h.set_uid(n.uid.into());
    h.set_gid(n.gid.into());
    h.set_mtime(n.mtime.0.max(0) as u64);
    // Names too long for the header are left out; the numeric IDs remain.
    if let Some(u) = &n.user {
        let _ = h.set_username(u);
    }
    if let Some(g) = &n.group {
        let _ = h.set_groupname(g);
    }
    h.set_size(0);
    let empty = io::empty();
    match n.node_type {
        NodeType::File => match link {
            Some(first) => {
                h.set_entry_type(EntryType::Link);
                b.append_link(&mut h, rel, first)?;
                stats.others += 1;
            }
            None => {
                h.set_entry_type(EntryType::Regular);
                h.set_size(n.size);
                b.append_data(&mut h, rel, Content::new(events, rel, n))?;
                stats.files += 1;
                stats.bytes += n.size;
            }
        },
        NodeType::Dir => {
            h.set_entry_type(EntryType::Directory);
            let mut name = rel.as_os_str().to_owned();
            name.push("/");
            b.append_data(&mut h, name, empty)?;
            stats.dirs += 1;
        }
        NodeType::Symlink => {
            h.set_entry_type(EntryType::Symlink);
            let target = n.target.as_ref().map(|t| OsStr::from_bytes(&t.0)).unwrap_or_default();
            b.append_link(&mut h, rel, target)?;
            stats.others += 1;
        }
        NodeType::Fifo | NodeType::Chardev | NodeType::Blockdev => {
            h.set_entry_type(match n.node_type {
                NodeType::Fifo => EntryType::Fifo,
                NodeType::Chardev => EntryType::Char,
                _ => EntryType::Block,
            });
            if n.node_type != NodeType::Fifo {
                let dev = n.rdev.unwrap_or(0);
                let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
                let too_big = || io::Error::other(format!("{}: device number too large for tar", rel.display()));
                h.set_device_major(u32::try_from(major).map_err(|_| too_big())?)?;
                h.set_device_minor(u32::try_from(minor).map_err(|_| too_big())?)?;
            }
            b.append_data(&mut h, rel, empty)?;
            stats.others += 1;
        }
        NodeType::Socket => unreachable!("handled above"),
    }
    Ok(())
}

/// Writes every entry as a tar archive. On failure the archive is left
/// unfinished: `dead` is set before the builder is dropped, so no trailer follows.
fn write_tar<W: Write>(
    w: W,
    events: &Receiver<Event>,
    stats: &mut Stats,
    report: &dyn Report,
    dead: &Cell<bool>,
) -> io::Result<W> {
    let mut b = tar::Builder::new(w);
    let mut entries = || -> io::Result<()> {
        while let Some(ev) = next_event(events)? {
            match ev {
                Event::Entry { rel, node, link } => {
                    tar_entry(&mut b, events, &rel, &node, link.as_deref(), stats, report)?
                }
                _ => return Err(wrap(cairn::Error::Incomplete("internal error: entry expected".into()))),
            }
        }
        Ok(())
    };
    if let Err(e) = entries() {
        dead.set(true);
        return Err(e);
    }
    b.into_inner()
}

/// A zip library error as an I/O error (keeping the I/O error it carries).
fn zip_io(e: zip::result::ZipError) -> io::Error {
    match e {
        zip::result::ZipError::Io(e) => e,
        other => io::Error::other(other),
    }
}

/// Files from this size on get zip64 sizes (below 4 GiB, since deflate can
/// make incompressible data a little larger).
const LARGE_FILE: u64 = 0xF000_0000;

/// The zip entry options for `n`: permissions, DOS time (local) and the extended
/// timestamp field (UTC seconds) that unzip and others use when present.
fn zip_options(n: &Node) -> zip::write::FullFileOptions<'static> {
    use chrono::{Datelike, Timelike};
    let dos = chrono::DateTime::from_timestamp(n.mtime.0, 0)
        .map(|d| d.with_timezone(&chrono::Local))
        .and_then(|d| {
            zip::DateTime::from_date_and_time(
                u16::try_from(d.year()).ok()?,
                d.month() as u8,
                d.day() as u8,
                d.hour() as u8,
                d.minute() as u8,
                d.second() as u8,
            )
            .ok()
        })
        .unwrap_or_default();
    let mut o = zip::write::FullFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(n.mode)
        .last_modified_time(dos);
    if let Ok(secs) = i32::try_from(n.mtime.0) {
        let mut ut = vec![1u8];
        ut.extend_from_slice(&secs.to_le_bytes());
        let _ = o.add_extra_data(0x5455, ut, false);
    }
    o
}

/// Writes every entry as a zip archive (streamed: sizes and checksums follow
/// each file's data). On failure `dead` is set before the writer is dropped, so
/// no central directory follows.
fn write_zip<W: Write>(
    w: W,
    events: &Receiver<Event>,
    stats: &mut Stats,
    report: &dyn Report,
    dead: &Cell<bool>,
) -> io::Result<W> {
    let mut z = zip::ZipWriter::new_stream(w);
    if let Err(e) = zip_entries(&mut z, events, stats, report) {
        dead.set(true);
        return Err(e);
    }
    Ok(z.finish().map_err(zip_io)?.into_inner())
}

fn zip_entries<W: Write>(
    z: &mut zip::ZipWriter<zip::write::StreamWriter<W>>,
    events: &Receiver<Event>,
    stats: &mut Stats,
    report: &dyn Report,
) -> io::Result<()> {
    let mut names = HashSet::new();
    while let Some(ev) = next_event(events)? {
        let Event::Entry { rel, node: n, .. } = ev else {
            return Err(wrap(cairn::Error::Incomplete("internal error: entry expected".into())));
        };
        let mut content = Content::new(events, &rel, &n);
        let mut name = rel.to_string_lossy().into_owned();
        if n.node_type == NodeType::Dir {
            name.push('/');
        }
        let skip = match n.node_type {
            NodeType::File | NodeType::Dir | NodeType::Symlink if names.contains(&name) => {
                Some("its name is not valid UTF-8 and clashes with another one after conversion")
            }
            NodeType::File | NodeType::Dir | NodeType::Symlink => None,
            _ => Some("zip archives hold only files, directories and symlinks"),
        };
        if let Some(why) = skip {
            // Read past its chunks (if any) to stay in step with the stream.
            while content.next_chunk()?.is_some() {}
            stats.skipped += 1;
            report.warn(&format!("{}: {why} (skipped)", rel.display()));
            continue;
        }
        names.insert(name.clone());
        let o = zip_options(&n);
        match n.node_type {
            NodeType::File => {
                z.start_file(name, o.large_file(n.size >= LARGE_FILE)).map_err(zip_io)?;
                while let Some(d) = content.next_chunk()? {
                    z.write_all(&d)?;
                }
                stats.files += 1;
                stats.bytes += n.size;
            }
            NodeType::Dir => {
                // Not `add_directory`: in a streamed archive it flags a data
                // descriptor that it never writes, which unzip rejects ("overlapped
                // components"). An empty entry whose name ends in `/` is a directory
                // to every reader; only the type bits of its mode say "file".
                z.start_file(name, o.compression_method(zip::CompressionMethod::Stored)).map_err(zip_io)?;
                stats.dirs += 1;
            }
            _ => {
                let target = n.target.as_ref().map(|t| String::from_utf8_lossy(&t.0).into_owned()).unwrap_or_default();
                z.add_symlink(name, target, o).map_err(zip_io)?;
                stats.others += 1;
            }
        }
    }
    Ok(())
}

/// A file's content as it is.
fn write_raw<W: Write>(mut w: W, events: &Receiver<Event>, stats: &mut Stats) -> io::Result<W> {
    while let Some(ev) = next_event(events)? {
        let Event::Entry { rel, node, .. } = ev else {
            return Err(wrap(cairn::Error::Incomplete("internal error: entry expected".into())));
        };
        let mut content = Content::new(events, &rel, &node);
        while let Some(d) = content.next_chunk()? {
            w.write_all(&d)?;
        }
        stats.files += 1;
        stats.bytes += node.size;
    }
    Ok(w)
}

/// Runs `cairn dump`: streams the file or archive; exit code 0.
pub fn run(g: &Global, out: &Output, a: DumpArgs) -> Result<i32> {
    let repo = g.open()?;
    let _lease = super::reader_lease(&repo, "");
    let (id, snap) = repo.find_snapshot(&a.snapshot)?;
    let shown = a.path.to_string_lossy().into_owned();
    let not_found = || cairn::Error::NotFound(format!("{shown}: not found in snapshot {}", id.short()));
    let src = resolve(&repo, &snap.tree, &a.path, not_found)?;
    let format = match (&src, a.archive) {
        (Source::Single(_, n), None) if n.node_type == NodeType::File => None,
        (_, f) => Some(f.unwrap_or(Format::Tar)),
    };
    if format.is_some() && a.target.is_none() && io::stdout().is_terminal() {
        return Err(anyhow!("stdout is a terminal; redirect it or use --target"));
    }
    let sink: Box<dyn Write> = match &a.target {
        Some(p) => Box::new(File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => Box::new(io::stdout().lock()),
    };
    let dead = Cell::new(false);
    let w = BufWriter::with_capacity(1 << 16, Guarded { inner: sink, dead: &dead });
    let fetchers = repo.backend().concurrency().clamp(2, 8);
    let (ev_tx, ev_rx) = crossbeam_channel::bounded::<Event>(2 * fetchers);
    let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
    let stop = AtomicBool::new(false);
    let mut stats = Stats::default();
    let (repo_ref, src_ref, stop_ref) = (&repo, &src, &stop);
    let hard_links = format == Some(Format::Tar);
    let result = std::thread::scope(|s| -> io::Result<()> {
        std::thread::Builder::new()
            .name("dump-walker".into())
            .stack_size(16 << 20)
            .spawn_scoped(s, move || produce(repo_ref, src_ref, hard_links, ev_tx, job_tx))?;
        for _ in 0..fetchers {
            let jobs = job_rx.clone();
            s.spawn(move || fetch(repo_ref, jobs, stop_ref));
        }
        drop(job_rx);
        let events = ev_rx;
        let r = match format {
            None => write_raw(w, &events, &mut stats),
            Some(Format::Tar) => write_tar(w, &events, &mut stats, out, &dead),
            Some(Format::Zip) => write_zip(w, &events, &mut stats, out, &dead),
        }
        .and_then(|mut w| w.flush());
        // Stop the fetchers and let a walker blocked on the channel see it closed.
        stop.store(true, Ordering::Relaxed);
        if r.is_err() {
            dead.set(true);
        }
        drop(events);
        r
    });
    let what = format!("{shown} in snapshot {}", id.short());
    result.map_err(lift).with_context(|| format!("dumping {what}"))?;
    if let Some(t) = &a.target {
        let format_name = match format {
            None => "raw",
            Some(Format::Tar) => "tar",
            Some(Format::Zip) => "zip",
        };
        if out.json {
            let mut v = serde_json::to_value(&stats)?;
            v["message_type"] = "summary".into();
            v["snapshot_id"] = id.to_hex().into();
            v["path"] = shown.clone().into();
            v["target"] = t.to_string_lossy().into_owned().into();
            v["format"] = format_name.into();
            out.json(&v);
        } else {
            out.info(format!(
                "wrote {what} to {} ({format_name}): {} files, {} dirs, {} others, {}{}",
                t.display(),
                stats.files,
                stats.dirs,
                stats.others,
                human_bytes(stats.bytes),
                if stats.skipped > 0 { format!(", {} skipped", stats.skipped) } else { String::new() }
            ));
        }
    }
    Ok(0)
}
