//! The index on disk, for repositories whose index does not fit the memory
//! budget: the sorted slots of the in-memory table, in 4 KiB pages, each sealed
//! with XChaCha20-Poly1305; a sealed trailer holds the packs, one fence (the
//! first 8 key bytes) per page and the list of index files the table covers.
//! Only the trailer is kept in memory (about 0.1 byte per blob); a lookup reads
//! and opens one page. The file lives in the local cache; see docs/format.md §20.

use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{KEY, Slot, cmp_key};
use crate::id::Id;

const MAGIC: &[u8; 8] = b"CAIRNIT2";
const PAGE: usize = 4096;
const TAG: usize = 16;
/// Bytes of one slot on disk.
pub(super) const SLOT: usize = 40;
/// Slots per page: 102, then the tag.
const PER_PAGE: usize = (PAGE - TAG) / SLOT;
/// The trailer is refused beyond this (a table of 2³⁰ packs and 10¹¹ blobs fits).
const MAX_TRAILER: u64 = 1 << 36;

impl Slot {
    pub(super) fn encode(&self, out: &mut [u8]) {
        out[..KEY].copy_from_slice(&self.key);
        out[24..28].copy_from_slice(&self.pack.to_le_bytes());
        out[28..32].copy_from_slice(&self.offset.to_le_bytes());
        out[32..36].copy_from_slice(&self.length.to_le_bytes());
        out[36..40].copy_from_slice(&self.raw_length.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Slot {
        let u = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Slot {
            key: b[..KEY].try_into().expect("KEY bytes"),
            pack: u(24),
            offset: u(28),
            length: u(32),
            raw_length: u(36),
        }
    }
}

fn head(k: &[u8; KEY]) -> u64 {
    u64::from_be_bytes(k[..8].try_into().expect("8 bytes"))
}

/// The nonce of page `page` (or of the trailer, `u64::MAX`) of the table with
/// `salt`: unique per key, since every table gets a random salt.
fn nonce(salt: &[u8; 16], page: u64) -> [u8; 24] {
    let mut n = [0u8; 24];
    n[..16].copy_from_slice(salt);
    n[16..].copy_from_slice(&page.to_le_bytes());
    n
}

/// A sorted run of slots spilled to a temporary file while building.
pub(super) fn spill(dir: &Path, slots: &mut [Slot]) -> io::Result<File> {
    slots.sort_unstable_by(|a, b| cmp_key(&a.key, &b.key));
    let mut f = BufWriter::with_capacity(1 << 20, tempfile::tempfile_in(dir)?);
    let mut b = [0u8; SLOT];
    for s in slots.iter() {
        s.encode(&mut b);
        f.write_all(&b)?;
    }
    let f = f.into_inner().map_err(|e| e.into_error())?;
    Ok(f)
}

/// Reads the slots of a run from its start.
struct RunReader(BufReader<File>);

impl RunReader {
    fn new(f: File) -> RunReader {
        RunReader(BufReader::with_capacity(256 << 10, f))
    }

    fn next(&mut self) -> io::Result<Option<Slot>> {
        let mut b = [0u8; SLOT];
        match self.0.read_exact(&mut b) {
            Ok(()) => Ok(Some(Slot::decode(&b))),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Merges sorted runs into one sorted stream, handing each group of slots with
/// the same key to `group`.
pub(super) fn merge(runs: Vec<File>, mut group: impl FnMut(&[Slot]) -> io::Result<()>) -> io::Result<()> {
    let mut readers = Vec::with_capacity(runs.len());
    for mut f in runs {
        io::Seek::rewind(&mut f)?;
        readers.push(RunReader::new(f));
    }
    let mut heap = BinaryHeap::new();
    let mut current: Vec<Option<Slot>> = Vec::with_capacity(readers.len());
    for (i, r) in readers.iter_mut().enumerate() {
        let s = r.next()?;
        if let Some(s) = &s {
            heap.push(std::cmp::Reverse((s.key, i)));
        }
        current.push(s);
    }
    let mut same: Vec<Slot> = Vec::new();
    while let Some(std::cmp::Reverse((k, i))) = heap.pop() {
        if same.first().is_some_and(|s| s.key != k) {
            group(&same)?;
            same.clear();
        }
        same.push(current[i].expect("a run in the heap has a current slot"));
        current[i] = readers[i].next()?;
        if let Some(s) = &current[i] {
            heap.push(std::cmp::Reverse((s.key, i)));
        }
    }
    if !same.is_empty() {
        group(&same)?;
    }
    Ok(())
}

/// One sorted section (live or pending blobs) of a table.
#[derive(Default)]
struct Section {
    first_page: u64,
    len: u64,
    /// The first 8 key bytes of each page's first slot.
    fences: Vec<u64>,
}

/// Writes slots (in key order) as tagged pages, section after section.
pub(super) struct Writer {
    out: BufWriter<File>,
    key: [u8; 32],
    salt: [u8; 16],
    page: Vec<u8>,
    in_page: usize,
    pages: u64,
    sections: Vec<Section>,
}

impl Writer {
    /// Starts a table in `file` (empty).
    pub(super) fn new(file: File, key: [u8; 32]) -> io::Result<Writer> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(io::Error::other)?;
        Ok(Writer {
            out: BufWriter::with_capacity(1 << 20, file),
            key,
            salt,
            page: vec![0; PAGE],
            in_page: 0,
            pages: 0,
            sections: vec![Section::default()],
        })
    }

    /// Appends a slot to the current section.
    pub(super) fn push(&mut self, s: &Slot) -> io::Result<()> {
        let sec = self.sections.last_mut().expect("a section");
        if self.in_page == 0 {
            sec.fences.push(head(&s.key));
        }
        s.encode(&mut self.page[self.in_page * SLOT..][..SLOT]);
        sec.len += 1;
        self.in_page += 1;
        if self.in_page == PER_PAGE {
            self.flush_page()?;
        }
        Ok(())
    }

    fn flush_page(&mut self) -> io::Result<()> {
        if self.in_page == 0 {
            return Ok(());
        }
        self.page[self.in_page * SLOT..PAGE - TAG].fill(0);
        crate::crypto::seal_detached(&self.key, &nonce(&self.salt, self.pages), &mut self.page);
        self.out.write_all(&self.page)?;
        self.pages += 1;
        self.in_page = 0;
        Ok(())
    }

    /// Ends the current section and starts the next one.
    pub(super) fn next_section(&mut self) -> io::Result<()> {
        self.flush_page()?;
        self.sections.push(Section { first_page: self.pages, ..Section::default() });
        Ok(())
    }

    /// Writes the trailer: the covered index files, the packs, the sections.
    pub(super) fn finish(mut self, covers: &[Id], packs: &[(Id, u64)], pending: &[bool]) -> io::Result<File> {
        self.flush_page()?;
        let mut t = Vec::with_capacity(64 + 32 * covers.len() + 41 * packs.len());
        t.extend_from_slice(MAGIC);
        t.extend_from_slice(&self.salt);
        t.extend_from_slice(&(covers.len() as u64).to_le_bytes());
        for c in covers {
            t.extend_from_slice(&c.0);
        }
        t.extend_from_slice(&(packs.len() as u64).to_le_bytes());
        for ((id, size), p) in packs.iter().zip(pending) {
            t.extend_from_slice(&id.0);
            t.extend_from_slice(&size.to_le_bytes());
            t.push(u8::from(*p));
        }
        t.extend_from_slice(&(self.sections.len() as u64).to_le_bytes());
        for s in &self.sections {
            t.extend_from_slice(&s.first_page.to_le_bytes());
            t.extend_from_slice(&s.len.to_le_bytes());
            for f in &s.fences {
                t.extend_from_slice(&f.to_le_bytes());
            }
        }
        t.extend_from_slice(&[0; TAG]);
        crate::crypto::seal_detached(&self.key, &nonce(&self.salt, u64::MAX), &mut t[24..]);
        let n = t.len() as u64;
        self.out.write_all(&t)?;
        self.out.write_all(&n.to_le_bytes())?;
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

/// An opened table.
pub(super) struct Paged {
    file: File,
    /// Where it lives (removed when found damaged), or none for a temporary one.
    path: Option<PathBuf>,
    key: [u8; 32],
    salt: [u8; 16],
    /// The index files it was built from, sorted.
    pub(super) covers: Vec<Id>,
    live: Section,
    pending: Section,
    damaged: AtomicBool,
}

/// What [`open`] returns: the table, its packs and which of them are pending.
pub(super) type Opened = (Paged, Vec<(Id, u64)>, Vec<bool>);

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64) -> Option<&'a [u8]> {
        let n = usize::try_from(n).ok().filter(|&n| n <= self.0.len())?;
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    /// A count of items of `size` bytes, bounded by what is left.
    fn count(&mut self, size: u64) -> Option<u64> {
        self.u64().filter(|n| n.checked_mul(size).is_some_and(|b| b <= self.0.len() as u64))
    }
}

/// Opens a table written by [`Writer`] with `key`, checking the trailer and that
/// the pages it describes are all there. Any mismatch is `None` (rebuild).
pub(super) fn open(file: File, path: Option<PathBuf>, key: &[u8; 32]) -> Option<Opened> {
    let len = file.metadata().ok()?.len();
    let mut n = [0u8; 8];
    file.read_exact_at(&mut n, len.checked_sub(8)?).ok()?;
    let n = u64::from_le_bytes(n);
    if !(24 + TAG as u64..=MAX_TRAILER).contains(&n) || n + 8 > len {
        return None;
    }
    let body = len - 8 - n;
    let mut t = vec![0u8; n as usize];
    file.read_exact_at(&mut t, body).ok()?;
    if &t[..8] != MAGIC {
        return None;
    }
    let salt: [u8; 16] = t[8..24].try_into().ok()?;
    if !crate::crypto::open_detached(key, &nonce(&salt, u64::MAX), &mut t[24..]) {
        return None;
    }
    let mut c = Cursor(&t[24..t.len() - TAG]);
    let nc = c.count(32)?;
    let covers = (0..nc).map(|_| Some(Id(c.take(32)?.try_into().ok()?))).collect::<Option<Vec<_>>>()?;
    let np = c.count(41)?;
    let mut packs = Vec::with_capacity(np as usize);
    let mut pending = Vec::with_capacity(np as usize);
    for _ in 0..np {
        let id = Id(c.take(32)?.try_into().ok()?);
        let size = c.u64()?;
        packs.push((id, size));
        pending.push(c.take(1)?[0] != 0);
    }
    if c.u64()? != 2 {
        return None;
    }
    let mut section = || -> Option<Section> {
        let first_page = c.u64()?;
        let len = c.u64()?;
        let pages = len.div_ceil(PER_PAGE as u64);
        let raw = c.take(pages.checked_mul(8)?)?;
        let fences = raw.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().expect("8"))).collect();
        Some(Section { first_page, len, fences })
    };
    let live = section()?;
    let pend = section()?;
    let pages = live.fences.len() as u64 + pend.fences.len() as u64;
    if !c.0.is_empty()
        || live.first_page != 0
        || pend.first_page != live.fences.len() as u64
        || pages * PAGE as u64 != body
    {
        return None;
    }
    let paged = Paged { file, path, key: *key, salt, covers, live, pending: pend, damaged: AtomicBool::new(false) };
    Some((paged, packs, pending))
}

impl Paged {
    /// Number of live blobs.
    pub(super) fn len(&self) -> usize {
        self.live.len as usize
    }

    /// The live slot with key `k`.
    pub(super) fn find_live(&self, k: &[u8; KEY]) -> Option<Slot> {
        self.find(&self.live, k)
    }

    /// The slot with key `k` among blobs only in packs pending deletion.
    pub(super) fn find_pending(&self, k: &[u8; KEY]) -> Option<Slot> {
        self.find(&self.pending, k)
    }

    fn find(&self, sec: &Section, k: &[u8; KEY]) -> Option<Slot> {
        let h = head(k);
        // Pages whose first key could precede k; usually exactly one is read.
        let mut p = sec.fences.partition_point(|&f| f < h).saturating_sub(1);
        while p < sec.fences.len() && sec.fences[p] <= h {
            let mut page = [0u8; PAGE];
            let no = sec.first_page + p as u64;
            let ok = self.file.read_exact_at(&mut page, no * PAGE as u64).is_ok()
                && crate::crypto::open_detached(&self.key, &nonce(&self.salt, no), &mut page);
            if !ok {
                self.damaged();
                return None;
            }
            let n = (sec.len - p as u64 * PER_PAGE as u64).min(PER_PAGE as u64) as usize;
            let slots = &page[..n * SLOT];
            let (mut lo, mut hi) = (0, n);
            while lo < hi {
                let mid = (lo + hi) / 2;
                match slots[mid * SLOT..mid * SLOT + KEY].cmp(&k[..]) {
                    std::cmp::Ordering::Less => lo = mid + 1,
                    std::cmp::Ordering::Greater => hi = mid,
                    std::cmp::Ordering::Equal => return Some(Slot::decode(&slots[mid * SLOT..][..SLOT])),
                }
            }
            if lo < n {
                return None;
            }
            p += 1;
        }
        None
    }

    /// A page failed to open or could not be read: warn once and remove the
    /// table, so the next run rebuilds it. The lookup counts as a miss.
    fn damaged(&self) {
        if !self.damaged.swap(true, Ordering::Relaxed) {
            eprintln!("warning: the local index table is damaged; it will be rebuilt on the next run");
            if let Some(p) = &self.path {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(i: u64) -> Slot {
        let mut key = [0u8; KEY];
        key.copy_from_slice(&Id::hash(&i.to_le_bytes()).0[..KEY]);
        Slot { key, pack: (i % 7) as u32, offset: i as u32, length: 100, raw_length: 200 }
    }

    fn table(dir: &Path, live: &[Slot], pending: &[Slot], key: &[u8; 32]) -> PathBuf {
        let path = dir.join("t");
        let mut w = Writer::new(File::create(&path).unwrap(), *key).unwrap();
        for s in live {
            w.push(s).unwrap();
        }
        w.next_section().unwrap();
        for s in pending {
            w.push(s).unwrap();
        }
        let packs: Vec<(Id, u64)> = (0..7u8).map(|i| (Id::hash(&[i]), 1000)).collect();
        w.finish(&[Id::hash(b"ix")], &packs, &[false; 7]).unwrap();
        path
    }

    #[test]
    fn pages_find_every_slot_and_reject_damage() {
        let dir = tempfile::tempdir().unwrap();
        let key = [7u8; 32];
        let mut live: Vec<Slot> = (0..10_000).map(slot).collect();
        // Keys sharing their first 8 bytes across a page boundary.
        for (n, s) in live.iter_mut().enumerate().take(300).skip(95) {
            s.key[..8].copy_from_slice(&[0x55; 8]);
            s.key[8] = n as u8;
            s.key[9] = (n >> 8) as u8;
        }
        live.sort_unstable_by(|a, b| cmp_key(&a.key, &b.key));
        live.dedup_by(|a, b| a.key == b.key);
        let pending: Vec<Slot> = (20_000..20_050).map(slot).collect::<Vec<_>>();
        let mut pending = pending;
        pending.sort_unstable_by(|a, b| cmp_key(&a.key, &b.key));
        let path = table(dir.path(), &live, &pending, &key);
        let (t, packs, _) = open(File::open(&path).unwrap(), Some(path.clone()), &key).unwrap();
        assert_eq!((t.len(), packs.len(), t.covers.clone()), (live.len(), 7, vec![Id::hash(b"ix")]));
        for s in &live {
            assert_eq!(t.find_live(&s.key).map(|f| f.offset), Some(s.offset));
            assert!(t.find_pending(&s.key).is_none());
        }
        for s in &pending {
            assert_eq!(t.find_pending(&s.key).map(|f| f.offset), Some(s.offset));
            assert!(t.find_live(&s.key).is_none());
        }
        for i in 30_000..31_000 {
            assert!(t.find_live(&slot(i).key).is_none());
        }
        assert!(t.find_live(&[0; KEY]).is_none() && t.find_live(&[0xff; KEY]).is_none());
        // Nothing of a slot is readable in the file.
        let bytes = std::fs::read(&path).unwrap();
        assert!(!bytes.windows(KEY).any(|w| w == live[7].key), "a blob key in plain text");
        // Another key opens nothing.
        assert!(open(File::open(&path).unwrap(), None, &[8u8; 32]).is_none());
        // A damaged page is a miss, a warning, and the file goes.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0xAA], 5 * PAGE as u64 + 17).unwrap();
        let s = live[5 * PER_PAGE + 3];
        assert!(t.find_live(&s.key).is_none());
        assert!(!path.exists());
        // A truncated file does not open.
        let path = table(dir.path(), &live, &pending, &key);
        let len = std::fs::metadata(&path).unwrap().len();
        for cut in [len - 1, len - 100, PAGE as u64 * 3, 5] {
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(cut).unwrap();
            assert!(open(File::open(&path).unwrap(), None, &key).is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn merge_groups_equal_keys_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut a: Vec<Slot> = (0..1000).map(slot).collect();
        let mut b: Vec<Slot> = (500..1500).map(slot).collect();
        let runs = vec![spill(dir.path(), &mut a).unwrap(), spill(dir.path(), &mut b).unwrap()];
        let mut seen = Vec::new();
        merge(runs, |g| {
            assert!(g.iter().all(|s| s.key == g[0].key));
            seen.push((g[0].key, g.len()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 1500);
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
        assert_eq!(seen.iter().filter(|s| s.1 == 2).count(), 500);
    }
}
