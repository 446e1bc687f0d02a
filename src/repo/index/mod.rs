//! Index files (blob -> pack, offset, lengths) and the in-memory index built from
//! them: a sorted array of fixed-size entries, searched by binary search.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::pack::{BlobEntry, BlobType};

mod paged;

const MAGIC: &[u8; 8] = b"CAIRNIX1";
/// An index file that also lists packs pending deletion (written by prune).
const MAGIC_PENDING: &[u8; 8] = b"CAIRNIX2";

/// Blobs per index file written at once by prune and repair (46 MB before
/// compression), far below the 1 GiB a reader accepts.
pub const MAX_FILE_BLOBS: usize = 1 << 20;

/// One pack as listed in an index file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IndexPack {
    /// The pack's name.
    pub id: Id,
    /// Its size in bytes.
    pub size: u64,
    /// Its blobs.
    pub blobs: Vec<BlobEntry>,
}

/// A pack that prune has marked for deletion: no snapshot used its blobs when it
/// was marked. Its blobs stay readable but are never reused by a backup.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PendingPack {
    /// The pack and its blobs.
    pub pack: IndexPack,
    /// When it was marked (Unix seconds).
    pub marked_at: i64,
}

/// The content of one index file.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct IndexFile {
    /// Index files whose content this one contains (ignored when loading).
    pub supersedes: Vec<Id>,
    /// Packs and their blobs.
    pub packs: Vec<IndexPack>,
    /// Packs pending deletion.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingPack>,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(Error::corrupt("index file is truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn id(&mut self) -> Result<Id> {
        Ok(Id(self.take(32)?.try_into().expect("32")))
    }
    /// A count of items of at least `min_size` bytes each, bounded by what is left.
    fn count(&mut self, min_size: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size) > self.0.len() {
            return Err(Error::corrupt("index file count exceeds its length"));
        }
        Ok(n)
    }
}

fn encode_pack(p: &IndexPack, out: &mut Vec<u8>) {
    out.extend_from_slice(&p.id.0);
    out.extend_from_slice(&p.size.to_le_bytes());
    out.extend_from_slice(&(p.blobs.len() as u32).to_le_bytes());
    for b in &p.blobs {
        b.encode(out);
    }
}

fn decode_pack(r: &mut Reader<'_>, marked: bool) -> Result<(IndexPack, i64)> {
    let id = r.id()?;
    let size = r.u64()?;
    let marked_at = if marked { r.u64()? as i64 } else { 0 };
    let nb = r.count(BlobEntry::SIZE)?;
    let blobs = (0..nb).map(|_| BlobEntry::decode(r.take(BlobEntry::SIZE)?)).collect::<Result<Vec<_>>>()?;
    for b in &blobs {
        if b.offset as u64 + b.length as u64 > size {
            return Err(Error::corrupt(format!("index: blob {} lies outside pack {id}", b.id)));
        }
    }
    Ok((IndexPack { id, size, blobs }, marked_at))
}

impl IndexFile {
    /// Binary encoding (before compression and sealing): `CAIRNIX1`, or
    /// `CAIRNIX2` with a trailing section of packs pending deletion.
    pub fn encode(&self) -> Vec<u8> {
        let blobs: usize = self.packs.iter().chain(self.pending.iter().map(|p| &p.pack)).map(|p| p.blobs.len()).sum();
        let mut out = Vec::with_capacity(
            20 + 32 * self.supersedes.len() + 52 * (self.packs.len() + self.pending.len()) + BlobEntry::SIZE * blobs,
        );
        out.extend_from_slice(if self.pending.is_empty() { MAGIC } else { MAGIC_PENDING });
        out.extend_from_slice(&(self.supersedes.len() as u32).to_le_bytes());
        for id in &self.supersedes {
            out.extend_from_slice(&id.0);
        }
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            encode_pack(p, &mut out);
        }
        if !self.pending.is_empty() {
            out.extend_from_slice(&(self.pending.len() as u32).to_le_bytes());
            for p in &self.pending {
                out.extend_from_slice(&p.pack.id.0);
                out.extend_from_slice(&p.pack.size.to_le_bytes());
                out.extend_from_slice(&(p.marked_at as u64).to_le_bytes());
                out.extend_from_slice(&(p.pack.blobs.len() as u32).to_le_bytes());
                for b in &p.pack.blobs {
                    b.encode(&mut out);
                }
            }
        }
        out
    }

    /// The same content as index files of at most `max_blobs` blobs each (a
    /// pack is never split; one larger than that is a part of its own). The
    /// list of superseded files goes with the last part, so that writing the
    /// parts in order never hides the old files before all parts are written.
    pub fn split(&self, max_blobs: usize) -> Vec<IndexFile> {
        let mut parts = vec![IndexFile::default()];
        let mut n = 0;
        let listed =
            self.packs.iter().map(|p| (p, None)).chain(self.pending.iter().map(|p| (&p.pack, Some(p.marked_at))));
        for (p, marked) in listed {
            if n > 0 && n + p.blobs.len() > max_blobs {
                parts.push(IndexFile::default());
                n = 0;
            }
            n += p.blobs.len();
            let part = parts.last_mut().expect("one part");
            match marked {
                None => part.packs.push(p.clone()),
                Some(marked_at) => part.pending.push(PendingPack { pack: p.clone(), marked_at }),
            }
        }
        parts.last_mut().expect("one part").supersedes = self.supersedes.clone();
        parts
    }

    /// Parses [`IndexFile::encode`]'s output, bounding every count by the length.
    pub fn decode(data: &[u8]) -> Result<IndexFile> {
        let mut r = Reader(data);
        let with_pending = match r.take(8)? {
            m if m == MAGIC => false,
            m if m == MAGIC_PENDING => true,
            _ => return Err(Error::corrupt("index file has an unknown format")),
        };
        let n = r.count(32)?;
        let supersedes = (0..n).map(|_| r.id()).collect::<Result<_>>()?;
        let n = r.count(44)?;
        let packs = (0..n).map(|_| decode_pack(&mut r, false).map(|(p, _)| p)).collect::<Result<Vec<_>>>()?;
        let mut pending = Vec::new();
        if with_pending {
            let n = r.count(52)?;
            for _ in 0..n {
                let (pack, marked_at) = decode_pack(&mut r, true)?;
                pending.push(PendingPack { pack, marked_at });
            }
            if pending.is_empty() {
                return Err(Error::corrupt("index file of the pending kind lists no pending pack"));
            }
        }
        if !r.0.is_empty() {
            return Err(Error::corrupt("index file has trailing bytes"));
        }
        Ok(IndexFile { supersedes, packs, pending })
    }
}

/// Where a blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The pack's position in [`Index::packs`].
    pub pack: u32,
    /// The blob entry (type, flags, offset, lengths).
    pub entry: BlobEntry,
}

/// Bytes of a blob ID kept in the index. 192 bits: two different blobs share
/// them with a probability of about n²/2¹⁹³ for n blobs (under 10⁻³⁰ for 10¹²
/// blobs); a blob read back is still verified against its full ID.
const KEY: usize = 24;
/// Flag bits in the top of [`Slot::pack`].
const TREE: u32 = 1 << 31;
const COMPRESSED: u32 = 1 << 30;
/// At most this many packs (2³⁰, 16 PiB at the default pack size).
const MAX_PACKS: usize = 1 << 30;

/// One entry of the sorted table: 40 bytes per blob, in memory and on disk.
#[derive(Clone, Copy)]
struct Slot {
    key: [u8; KEY],
    /// Position in [`Index::packs`], with the blob type and compression flags.
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
}

const _: () = assert!(std::mem::size_of::<Slot>() == paged::SLOT);

impl Slot {
    fn pack_no(&self) -> u32 {
        self.pack & !(TREE | COMPRESSED)
    }

    fn with_pack(self, no: u32) -> Slot {
        Slot { pack: no | (self.pack & (TREE | COMPRESSED)), ..self }
    }
}

fn key(id: &Id) -> [u8; KEY] {
    id.0[..KEY].try_into().expect("KEY <= 32")
}

/// Every blob's location, built from all index files: a sorted table in memory
/// or, beyond the memory budget, a paged table on disk (plus an in-memory table
/// of index files newer than it).
#[derive(Default)]
pub struct Index {
    packs: Vec<(Id, u64)>,
    slots: Table,
    /// Blobs that live only in packs pending deletion: readable, never reused.
    pending: Table,
    /// For each pack of `packs`, whether it is pending deletion.
    pack_pending: Vec<bool>,
    /// The table on disk; its packs are the first of `packs`.
    base: Option<paged::Paged>,
}

impl Index {
    /// Builds the table in memory from index files, skipping superseded ones.
    /// Fails only for more than 2³⁰ packs.
    pub fn build(files: &[(Id, IndexFile)]) -> Result<Index> {
        let mut b = Builder::new(Limits::unlimited());
        for (id, f) in files {
            b.add(*id, f)?;
        }
        b.finish(&[], None)
    }

    /// Opens a table that [`Builder::finish`] wrote to `path` with `key`; none
    /// if it is missing, damaged or written with another key.
    pub fn open_table(path: &Path, key: &[u8; 32]) -> Option<Index> {
        let f = std::fs::File::open(path).ok()?;
        let (t, packs, pack_pending) = paged::open(f, Some(path.to_path_buf()), key)?;
        Some(Index { packs, pack_pending, base: Some(t), ..Index::default() })
    }

    /// The index files the table on disk was built from (sorted; empty for an
    /// index wholly in memory).
    pub fn covers(&self) -> &[Id] {
        self.base.as_ref().map_or(&[], |b| &b.covers[..])
    }

    /// Whether lookups go to a table on disk.
    pub fn on_disk(&self) -> bool {
        self.base.is_some()
    }

    fn find_live(&self, k: &[u8; KEY]) -> Option<Slot> {
        self.slots.find(k).copied().or_else(|| self.base.as_ref()?.find_live(k))
    }

    fn find_pending(&self, k: &[u8; KEY]) -> Option<Slot> {
        self.pending.find(k).copied().or_else(|| self.base.as_ref()?.find_pending(k))
    }

    /// The location of blob `id`, if indexed (also in a pack pending deletion).
    pub fn get(&self, id: &Id) -> Option<Location> {
        let k = key(id);
        let s = self.find_live(&k).or_else(|| self.find_pending(&k))?;
        Some(Location {
            pack: s.pack_no(),
            entry: BlobEntry {
                blob_type: if s.pack & TREE != 0 { BlobType::Tree } else { BlobType::Data },
                compressed: s.pack & COMPRESSED != 0,
                id: *id,
                offset: s.offset,
                length: s.length,
                raw_length: s.raw_length,
            },
        })
    }

    /// Whether blob `id` is stored in a live pack (not one pending deletion):
    /// whether a backup may reuse it.
    pub fn contains(&self, id: &Id) -> bool {
        self.find_live(&key(id)).is_some()
    }

    /// The pack table: (pack ID, size).
    pub fn packs(&self) -> &[(Id, u64)] {
        &self.packs
    }

    /// Number of distinct live blobs (a blob both on disk and in a newer index
    /// file counts twice).
    pub fn len(&self) -> usize {
        self.slots.slots.len() + self.base.as_ref().map_or(0, |b| b.len())
    }

    /// Whether no blob is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether pack number `no` (a position in [`Index::packs`]) is pending
    /// deletion: it may already be gone.
    pub fn pack_is_pending(&self, no: usize) -> bool {
        self.pack_pending.get(no).copied().unwrap_or(false)
    }

    /// Whether blob `id` lives only in a pack pending deletion.
    pub fn is_pending(&self, id: &Id) -> bool {
        !self.contains(id) && self.find_pending(&key(id)).is_some()
    }
}

/// Key order (bytewise), comparing the first 8 bytes as one integer: random keys
/// almost always differ there.
fn cmp_key(a: &[u8; KEY], b: &[u8; KEY]) -> std::cmp::Ordering {
    let head = |k: &[u8; KEY]| u64::from_be_bytes(k[..8].try_into().expect("8 bytes"));
    head(a).cmp(&head(b)).then_with(|| a[8..].cmp(&b[8..]))
}

/// A sorted table of slots with a directory of where each value of the first two
/// key bytes starts (for tables large enough to pay for its 256 KiB), so a lookup
/// is a binary search over a few entries only.
#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    /// 65,537 start positions, or empty.
    dir: Vec<u32>,
}

impl Table {
    /// A table of sorted slots with distinct keys.
    fn from_sorted(mut slots: Vec<Slot>) -> Table {
        slots.shrink_to_fit();
        let mut dir = Vec::new();
        if slots.len() >= 1 << 14 {
            dir.reserve_exact(65_537);
            let mut i = 0;
            for bucket in 0..=65_536usize {
                while i < slots.len() && (u16::from_be_bytes([slots[i].key[0], slots[i].key[1]]) as usize) < bucket {
                    i += 1;
                }
                dir.push(i as u32);
            }
        }
        Table { slots, dir }
    }

    fn find(&self, k: &[u8; KEY]) -> Option<&Slot> {
        let slots = match self.dir.is_empty() {
            true => &self.slots[..],
            false => {
                let b = u16::from_be_bytes([k[0], k[1]]) as usize;
                &self.slots[self.dir[b] as usize..self.dir[b + 1] as usize]
            }
        };
        slots.binary_search_by(|s| cmp_key(&s.key, k)).ok().map(|i| &slots[i])
    }
}

/// How much of the index a [`Builder`] may keep in memory, and where it spills.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes of slots (40 per blob) kept in memory; beyond them the index is
    /// sorted in runs on disk and merged into a paged table.
    pub budget: usize,
    /// Start spilling at once (the listing says the index is too large), in runs
    /// of half the budget, so that building stays within it too.
    pub spill_from_start: bool,
    /// Folder for the runs (and the table, when it has no place of its own).
    pub dir: PathBuf,
    /// Key that seals the table's pages and trailer.
    pub key: [u8; 32],
}

impl Limits {
    /// An index wholly in memory, whatever its size.
    pub fn unlimited() -> Limits {
        Limits { budget: usize::MAX, spill_from_start: false, dir: std::env::temp_dir(), key: [0; 32] }
    }
}

/// Builds an [`Index`] from index files handed over one at a time, in any order.
/// Which packs count is settled at the end (an index file may be superseded by
/// one read later), so blobs are collected with their pack and resolved then.
pub struct Builder {
    limits: Limits,
    /// Slots per run once spilling.
    run_len: usize,
    files: Vec<Id>,
    superseded: HashSet<Id>,
    packs: Vec<(Id, u64)>,
    pack_no: HashMap<Id, u32>,
    /// (pack, index file, listed as pending) for every listing of a pack.
    mentions: Vec<(u32, u32, bool)>,
    slots: Vec<Slot>,
    runs: Vec<std::fs::File>,
}

impl Builder {
    /// An empty builder.
    pub fn new(limits: Limits) -> Builder {
        let budget_slots = limits.budget / paged::SLOT;
        let run_len = if limits.spill_from_start { (budget_slots / 2).max(1024) } else { budget_slots };
        Builder {
            limits,
            run_len,
            files: Vec::new(),
            superseded: HashSet::new(),
            packs: Vec::new(),
            pack_no: HashMap::new(),
            mentions: Vec::new(),
            slots: Vec::new(),
            runs: Vec::new(),
        }
    }

    /// Blobs added so far (with repeats).
    pub fn blobs(&self) -> usize {
        self.slots.len() + self.runs.len() * self.run_len
    }

    /// Whether an index file added so far supersedes one of `ids`.
    pub fn supersedes_any(&self, ids: &[Id]) -> bool {
        ids.iter().any(|id| self.superseded.contains(id))
    }

    /// Adds the content of index file `id`.
    pub fn add(&mut self, id: Id, f: &IndexFile) -> Result<()> {
        let file = self.files.len() as u32;
        self.files.push(id);
        self.superseded.extend(f.supersedes.iter().copied());
        let listed = f.packs.iter().map(|p| (p, false)).chain(f.pending.iter().map(|p| (&p.pack, true)));
        for (p, pending) in listed {
            let next = self.packs.len() as u32;
            let no = *self.pack_no.entry(p.id).or_insert(next);
            if no == next {
                self.packs.push((p.id, p.size));
            }
            self.mentions.push((no, file, pending));
            for b in &p.blobs {
                self.slots.push(Slot {
                    key: key(&b.id),
                    pack: no
                        | if b.blob_type == BlobType::Tree { TREE } else { 0 }
                        | if b.compressed { COMPRESSED } else { 0 },
                    offset: b.offset,
                    length: b.length,
                    raw_length: b.raw_length,
                });
                if self.slots.len() >= self.run_len {
                    self.spill()?;
                }
            }
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<()> {
        let run = std::fs::create_dir_all(&self.limits.dir)
            .and_then(|()| paged::spill(&self.limits.dir, &mut self.slots))
            .map_err(|e| Error::io(&self.limits.dir, e))?;
        self.runs.push(run);
        self.slots = Vec::new();
        self.run_len = (self.limits.budget / paged::SLOT / 2).max(1024);
        Ok(())
    }

    /// The packs that count (listed by an index file that is not superseded),
    /// renumbered: for each old number the new one (or `u32::MAX`), the packs
    /// and whether each is pending deletion (listed so by every such file).
    fn settle_packs(&mut self, first: usize) -> Result<Settled> {
        let sup: Vec<bool> = self.files.iter().map(|f| self.superseded.contains(f)).collect();
        let mut valid = vec![false; self.packs.len()];
        let mut pending = vec![true; self.packs.len()];
        for &(p, f, pend) in &self.mentions {
            if !sup[f as usize] {
                valid[p as usize] = true;
                pending[p as usize] &= pend;
            }
        }
        let (mut map, mut packs, mut flags) = (Vec::with_capacity(valid.len()), Vec::new(), Vec::new());
        for (i, ok) in valid.iter().enumerate() {
            if *ok {
                map.push((first + packs.len()) as u32);
                packs.push(self.packs[i]);
                flags.push(pending[i]);
            } else {
                map.push(u32::MAX);
            }
        }
        if first + packs.len() > MAX_PACKS {
            return Err(Error::corrupt(format!(
                "the index lists {} packs, more than {MAX_PACKS}",
                first + packs.len()
            )));
        }
        Ok(Settled { map, packs, pending: flags })
    }

    /// Finishes the index. Within the budget it is a table in memory; beyond it
    /// the runs are merged into a paged table at `table` (or a temporary file),
    /// recording that it covers `covers`.
    pub fn finish(mut self, covers: &[Id], table: Option<&Path>) -> Result<Index> {
        let Settled { map, packs, pending: pack_pending } = self.settle_packs(0)?;
        if self.runs.is_empty() {
            let (slots, pending) = resolve_in_memory(std::mem::take(&mut self.slots), &map, &pack_pending);
            return Ok(Index {
                packs,
                pack_pending,
                slots: Table::from_sorted(slots),
                pending: Table::from_sorted(pending),
                base: None,
            });
        }
        if !self.slots.is_empty() {
            self.spill()?;
        }
        self.slots = Vec::new();
        self.pack_no = HashMap::new();
        let dir = table.and_then(Path::parent).unwrap_or(&self.limits.dir).to_path_buf();
        let err = |e: std::io::Error| Error::io(&dir, e);
        let (file, tmp) = match table {
            Some(_) => {
                let t = tempfile::NamedTempFile::new_in(&dir).map_err(err)?;
                (t.reopen().map_err(err)?, Some(t))
            }
            None => (tempfile::tempfile_in(&dir).map_err(err)?, None),
        };
        let mut w = paged::Writer::new(file, self.limits.key).map_err(err)?;
        // Blobs only in pending packs go to a run of their own, written after.
        let mut pend = std::io::BufWriter::new(tempfile::tempfile_in(&dir).map_err(err)?);
        let mut b = [0u8; paged::SLOT];
        paged::merge(std::mem::take(&mut self.runs), |group| match pick(group, &map, &pack_pending) {
            Some((s, false)) => w.push(&s),
            Some((s, true)) => {
                s.encode(&mut b);
                pend.write_all(&b)
            }
            None => Ok(()),
        })
        .map_err(err)?;
        let pend = pend.into_inner().map_err(|e| err(e.into_error()))?;
        w.next_section().map_err(err)?;
        paged::merge(vec![pend], |g| w.push(&g[0])).map_err(err)?;
        let mut covers = covers.to_vec();
        covers.sort_unstable();
        let file = w.finish(&covers, &packs, &pack_pending).map_err(err)?;
        let path = match (table, tmp) {
            (Some(p), Some(t)) => {
                t.persist(p).map_err(|e| Error::io(p, e.error))?;
                Some(p.to_path_buf())
            }
            _ => None,
        };
        let (t, packs, pack_pending) = paged::open(file, path, &self.limits.key).ok_or_else(|| {
            Error::io(&dir, std::io::Error::other("the on-disk index just written does not read back"))
        })?;
        Ok(Index { packs, pack_pending, base: Some(t), ..Index::default() })
    }

    /// Finishes the index of index files newer than `base`'s table, in memory,
    /// on top of it.
    pub fn finish_over(mut self, mut base: Index) -> Result<Index> {
        let Settled { map, packs, pending: pack_pending } = self.settle_packs(base.packs.len())?;
        let mut slots = std::mem::take(&mut self.slots);
        for run in std::mem::take(&mut self.runs) {
            paged::merge(vec![run], |g| {
                slots.push(g[0]);
                Ok(())
            })
            .map_err(|e| Error::io(&self.limits.dir, e))?;
        }
        let full: Vec<bool> = base.pack_pending.iter().copied().chain(pack_pending.iter().copied()).collect();
        let (live, pending) = resolve_in_memory(slots, &map, &full);
        base.packs.extend(packs);
        base.pack_pending = full;
        base.slots = Table::from_sorted(live);
        base.pending = Table::from_sorted(pending);
        Ok(base)
    }
}

/// The packs that count, from [`Builder::settle_packs`].
struct Settled {
    /// For each pack number as added, its final number or `u32::MAX`.
    map: Vec<u32>,
    packs: Vec<(Id, u64)>,
    /// Whether each of `packs` is pending deletion.
    pending: Vec<bool>,
}

/// Of slots with the same key, the one to index, with whether it is pending:
/// a copy in a live pack first, else one in a pack pending deletion; none if
/// every copy is in a pack that no current index file lists.
fn pick(group: &[Slot], map: &[u32], pending: &[bool]) -> Option<(Slot, bool)> {
    let mut found: Option<(Slot, bool)> = None;
    for s in group {
        let no = map[s.pack_no() as usize];
        if no == u32::MAX {
            continue;
        }
        let p = pending[no as usize];
        if !p {
            return Some((s.with_pack(no), false));
        }
        found.get_or_insert((s.with_pack(no), true));
    }
    found
}

/// Sorts `slots` and keeps one per key: (live, pending).
fn resolve_in_memory(mut slots: Vec<Slot>, map: &[u32], pending: &[bool]) -> (Vec<Slot>, Vec<Slot>) {
    slots.sort_unstable_by(|a, b| cmp_key(&a.key, &b.key));
    let (mut w, mut i, mut pend) = (0, 0, Vec::new());
    while i < slots.len() {
        let mut j = i + 1;
        while j < slots.len() && slots[j].key == slots[i].key {
            j += 1;
        }
        match pick(&slots[i..j], map, pending) {
            Some((s, false)) => {
                slots[w] = s;
                w += 1;
            }
            Some((s, true)) => pend.push(s),
            None => {}
        }
        i = j;
    }
    slots.truncate(w);
    (slots, pend)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u8, offset: u32) -> BlobEntry {
        BlobEntry {
            blob_type: BlobType::Data,
            compressed: i % 2 == 0,
            id: Id::hash(&[i]),
            offset,
            length: 100,
            raw_length: if i % 2 == 0 { 200 } else { 60 },
        }
    }

    #[test]
    fn encode_decode_build_lookup() {
        let f = IndexFile {
            supersedes: vec![Id::hash(b"old")],
            packs: vec![IndexPack { id: Id::hash(b"p"), size: 1000, blobs: vec![entry(1, 0), entry(2, 100)] }],
            pending: vec![],
        };
        let enc = f.encode();
        assert_eq!(IndexFile::decode(&enc).unwrap(), f);
        for cut in 0..enc.len() {
            assert!(IndexFile::decode(&enc[..cut]).is_err(), "truncated at {cut}");
        }
        let g = IndexFile {
            supersedes: vec![],
            packs: vec![IndexPack { id: Id::hash(b"q"), size: 500, blobs: vec![entry(3, 0)] }],
            pending: vec![],
        };
        let old = IndexFile {
            supersedes: vec![],
            packs: vec![IndexPack { id: Id::hash(b"gone"), size: 100, blobs: vec![entry(9, 0)] }],
            pending: vec![],
        };
        let idx = Index::build(&[(Id::hash(b"a"), f), (Id::hash(b"b"), g), (Id::hash(b"old"), old)]).unwrap();
        assert_eq!(idx.len(), 3, "superseded index files are ignored");
        let l = idx.get(&Id::hash(&[2])).unwrap();
        assert_eq!(idx.packs()[l.pack as usize].0, Id::hash(b"p"));
        assert_eq!(l.entry, entry(2, 100));
        assert!(!idx.contains(&Id::hash(&[9])));
        assert!(idx.get(&Id::hash(b"nope")).is_none());
        // Blob type and compression flags survive in the packed slot.
        let tree = BlobEntry { blob_type: BlobType::Tree, compressed: true, ..entry(4, 0) };
        let h = IndexFile {
            supersedes: vec![],
            packs: vec![IndexPack { id: Id::hash(b"t"), size: 500, blobs: vec![tree, entry(5, 100)] }],
            pending: vec![],
        };
        let idx = Index::build(&[(Id::hash(b"h"), h)]).unwrap();
        assert_eq!(idx.get(&Id::hash(&[4])).unwrap().entry, tree);
        assert_eq!(idx.get(&Id::hash(&[5])).unwrap().entry, entry(5, 100));
        assert_eq!(idx.get(&Id::hash(&[4])).unwrap().pack, 0);
    }

    #[test]
    fn pending_packs_are_readable_but_not_reusable() {
        let f = IndexFile {
            supersedes: vec![],
            packs: vec![IndexPack { id: Id::hash(b"p"), size: 1000, blobs: vec![entry(1, 0)] }],
            pending: vec![PendingPack {
                pack: IndexPack { id: Id::hash(b"old"), size: 300, blobs: vec![entry(1, 0), entry(2, 100)] },
                marked_at: 1_700_000_000,
            }],
        };
        let enc = f.encode();
        assert_eq!(&enc[..8], MAGIC_PENDING);
        assert_eq!(IndexFile::decode(&enc).unwrap(), f);
        for cut in 0..enc.len() {
            assert!(IndexFile::decode(&enc[..cut]).is_err(), "truncated at {cut}");
        }
        let idx = Index::build(&[(Id::hash(b"f"), f)]).unwrap();
        // Blob 2 lives only in the pending pack: readable, not reusable.
        assert!(!idx.contains(&Id::hash(&[2])));
        assert!(idx.is_pending(&Id::hash(&[2])));
        let l = idx.get(&Id::hash(&[2])).unwrap();
        assert_eq!(idx.packs()[l.pack as usize].0, Id::hash(b"old"));
        // Blob 1 is also in a live pack: that copy is the one found.
        assert!(idx.contains(&Id::hash(&[1])) && !idx.is_pending(&Id::hash(&[1])));
        assert_eq!(idx.packs()[idx.get(&Id::hash(&[1])).unwrap().pack as usize].0, Id::hash(b"p"));
    }

    #[test]
    fn large_index_finds_every_blob_through_its_directory() {
        let mut blobs: Vec<BlobEntry> =
            (0..20_000u32).map(|i| BlobEntry { id: Id::hash(&i.to_le_bytes()), offset: i, ..entry(0, 0) }).collect();
        // The first and last buckets of the directory.
        for (n, first) in [[0u8, 0], [0, 0], [0xff, 0xff], [0xff, 0xfe]].iter().enumerate() {
            let mut id = Id::hash(&[n as u8, 7]).0;
            id[..2].copy_from_slice(first);
            blobs.push(BlobEntry { id: Id(id), offset: 30_000 + n as u32, ..entry(0, 0) });
        }
        let f = IndexFile {
            supersedes: vec![],
            packs: vec![IndexPack { id: Id::hash(b"big"), size: 1 << 20, blobs: blobs.clone() }],
            pending: vec![],
        };
        let idx = Index::build(&[(Id::hash(b"f"), f)]).unwrap();
        assert_eq!(idx.len(), blobs.len());
        assert!(!idx.slots.dir.is_empty(), "a table this large has a directory");
        for b in &blobs {
            assert_eq!(idx.get(&b.id).map(|l| l.entry.offset), Some(b.offset), "{}", b.id);
        }
        for i in 20_000..30_000u32 {
            assert!(!idx.contains(&Id::hash(&i.to_le_bytes())));
        }
        let mut edge = Id([0xff; 32]);
        assert!(!idx.contains(&edge));
        edge.0 = [0; 32];
        assert!(!idx.contains(&edge));
    }

    fn pack(name: &[u8], range: std::ops::Range<u32>) -> IndexPack {
        let blobs = range
            .map(|i| BlobEntry {
                blob_type: if i % 3 == 0 { BlobType::Tree } else { BlobType::Data },
                compressed: i % 2 == 0,
                id: Id::hash(&i.to_le_bytes()),
                offset: i,
                length: 10,
                raw_length: i / 2,
            })
            .collect();
        IndexPack { id: Id::hash(name), size: 1 << 20, blobs }
    }

    /// Index files exercising every rule: repeats, superseded files, pending packs.
    fn history() -> Vec<(Id, IndexFile)> {
        let file = |packs, pending: Vec<IndexPack>, supersedes| IndexFile {
            supersedes,
            packs,
            pending: pending.into_iter().map(|pack| PendingPack { pack, marked_at: 1 }).collect(),
        };
        vec![
            (Id::hash(b"f0"), file(vec![pack(b"p0", 5000..6000), pack(b"p4", 7000..7100)], vec![], vec![])),
            (Id::hash(b"f1"), file(vec![pack(b"p1", 0..3000), pack(b"p2", 2500..5000)], vec![], vec![])),
            (
                Id::hash(b"f2"),
                file(vec![pack(b"p0b", 5500..5600)], vec![pack(b"p4", 7000..7100)], vec![Id::hash(b"f0")]),
            ),
            (Id::hash(b"f3"), file(vec![], vec![pack(b"p3", 6000..7000), pack(b"p3b", 100..200)], vec![])),
        ]
    }

    fn assert_same(a: &Index, b: &Index, ids: std::ops::Range<u32>) {
        for i in ids {
            let id = Id::hash(&i.to_le_bytes());
            let (la, lb) = (a.get(&id), b.get(&id));
            assert_eq!(la.map(|l| l.entry), lb.map(|l| l.entry), "blob {i}");
            // (Blobs 2500..3000 are in two live packs: either is right.)
            if !(2500..3000).contains(&i) {
                assert_eq!(la.map(|l| a.packs()[l.pack as usize]), lb.map(|l| b.packs()[l.pack as usize]), "blob {i}");
            }
            assert_eq!((a.contains(&id), a.is_pending(&id)), (b.contains(&id), b.is_pending(&id)), "blob {i}");
            if let Some(l) = la {
                assert_eq!(a.pack_is_pending(l.pack as usize), b.pack_is_pending(lb.unwrap().pack as usize));
            }
        }
    }

    #[test]
    fn disk_index_answers_as_the_memory_index() {
        let dir = tempfile::tempdir().unwrap();
        let files = history();
        let mem = Index::build(&files).unwrap();
        // The rules themselves: superseded f0's p0 is gone (but p0b, listed by f2,
        // counts); p4 is pending (f2 says so; f0 no longer counts); p3b's blobs
        // are also live in p1.
        let id = |i: u32| Id::hash(&i.to_le_bytes());
        assert!(mem.get(&id(5100)).is_none() && mem.contains(&id(5550)));
        assert!(mem.is_pending(&id(7050)) && mem.is_pending(&id(6500)));
        assert!(mem.contains(&id(150)) && !mem.is_pending(&id(150)));
        let limits = |spill_from_start| Limits {
            budget: 1000 * paged::SLOT,
            spill_from_start,
            dir: dir.path().to_path_buf(),
            key: [3; 32],
        };
        let table = dir.path().join("index.table");
        for from_start in [false, true] {
            let mut b = Builder::new(limits(from_start));
            for (id, f) in &files {
                b.add(*id, f).unwrap();
            }
            let disk = b.finish(&files.iter().map(|f| f.0).collect::<Vec<_>>(), Some(&table)).unwrap();
            assert!(disk.on_disk() && disk.slots.slots.is_empty(), "beyond the budget the table is on disk");
            assert_same(&disk, &mem, 0..9000);
            assert_eq!(disk.len(), mem.len());
        }
        // Reopened, with a newer index file on top (in memory).
        let base = Index::open_table(&table, &[3; 32]).unwrap();
        let mut sorted: Vec<Id> = files.iter().map(|f| f.0).collect();
        sorted.sort();
        assert_eq!(base.covers(), &sorted[..]);
        assert!(Index::open_table(&table, &[4; 32]).is_none(), "another key's table is not used");
        let newer = IndexFile {
            supersedes: vec![],
            packs: vec![pack(b"p5", 8000..8100), pack(b"p6", 6900..7010)],
            pending: vec![],
        };
        let mut b = Builder::new(Limits::unlimited());
        b.add(Id::hash(b"f4"), &newer).unwrap();
        let over = b.finish_over(base).unwrap();
        let mut all = files.clone();
        all.push((Id::hash(b"f4"), newer));
        let mem = Index::build(&all).unwrap();
        assert_same(&over, &mem, 0..9000);
        assert!(over.contains(&id(6950)) && over.contains(&id(8050)), "the newer file's blobs are live");
        // A temporary table (no cache) works the same.
        let mut b = Builder::new(limits(true));
        for (id, f) in &all {
            b.add(*id, f).unwrap();
        }
        assert_same(&b.finish(&[], None).unwrap(), &mem, 0..9000);
    }

    #[test]
    fn split_keeps_everything_and_supersedes_last() {
        let f = IndexFile {
            supersedes: vec![Id::hash(b"old1"), Id::hash(b"old2")],
            packs: vec![pack(b"a", 0..10), pack(b"b", 10..15), pack(b"c", 15..40)],
            pending: vec![PendingPack { pack: pack(b"d", 40..45), marked_at: 9 }],
        };
        let parts = f.split(12);
        // a(10) | b(5) | c(25, alone: packs are not split) | d(5)
        let sizes: Vec<usize> = parts
            .iter()
            .map(|p| p.packs.iter().chain(p.pending.iter().map(|q| &q.pack)).map(|q| q.blobs.len()).sum())
            .collect();
        assert_eq!(sizes, vec![10, 5, 25, 5]);
        assert!(parts[..3].iter().all(|p| p.supersedes.is_empty()));
        assert_eq!(parts[3].supersedes, f.supersedes);
        assert_eq!(parts[3].pending[0].marked_at, 9);
        let whole = Index::build(&[(Id::hash(b"f"), f.clone())]).unwrap();
        let split: Vec<(Id, IndexFile)> =
            parts.into_iter().enumerate().map(|(i, p)| (Id::hash(&[i as u8, 1]), p)).collect();
        assert_same(&Index::build(&split).unwrap(), &whole, 0..50);
        assert_eq!(f.split(1000).len(), 1);
        assert_eq!(f.split(1000)[0], f);
    }

    #[test]
    fn hostile_counts_do_not_allocate() {
        let mut evil = MAGIC.to_vec();
        evil.extend_from_slice(&0u32.to_le_bytes());
        evil.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(IndexFile::decode(&evil).is_err());
    }
}
