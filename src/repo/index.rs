//! Index files (blob -> pack, offset, lengths) and the in-memory index built from
//! them: a sorted array of fixed-size entries, searched by binary search.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::pack::{BlobEntry, BlobType};

const MAGIC: &[u8; 8] = b"CAIRNIX1";
/// An index file that also lists packs pending deletion (written by prune).
const MAGIC_PENDING: &[u8; 8] = b"CAIRNIX2";

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

/// Bytes of a blob ID kept in memory. 192 bits: two different blobs share them
/// with a probability of about n²/2¹⁹³ for n blobs (under 10⁻³⁰ for 10¹² blobs);
/// a blob read back is still verified against its full ID.
const KEY: usize = 24;
/// Flag bits in the top of [`Slot::pack`].
const TREE: u32 = 1 << 31;
const COMPRESSED: u32 = 1 << 30;
/// At most this many packs (2³⁰, 16 PiB at the default pack size).
const MAX_PACKS: usize = 1 << 30;

/// One entry of the sorted in-memory table: 40 bytes per blob.
#[derive(Clone, Copy)]
struct Slot {
    key: [u8; KEY],
    /// Position in [`Index::packs`], with the blob type and compression flags.
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 40);

fn key(id: &Id) -> [u8; KEY] {
    id.0[..KEY].try_into().expect("KEY <= 32")
}

/// Every blob's location, built from all index files.
#[derive(Default)]
pub struct Index {
    packs: Vec<(Id, u64)>,
    slots: Table,
    /// Blobs that live only in packs pending deletion: readable, never reused.
    pending: Table,
    /// For each pack of `packs`, whether it is pending deletion.
    pack_pending: Vec<bool>,
}

impl Index {
    /// Builds the table from index files, skipping superseded ones. Fails only
    /// for more than 2³⁰ packs.
    pub fn build(files: &[(Id, IndexFile)]) -> Result<Index> {
        let superseded: HashSet<Id> = files.iter().flat_map(|(_, f)| f.supersedes.iter().copied()).collect();
        let mut idx = Index::default();
        let mut pack_no: HashMap<Id, u32> = HashMap::new();
        let mut add = |idx: &mut Index, p: &IndexPack, pending: bool| {
            let no = *pack_no.entry(p.id).or_insert_with(|| {
                idx.packs.push((p.id, p.size));
                idx.pack_pending.push(pending);
                (idx.packs.len() - 1) as u32
            });
            idx.pack_pending[no as usize] &= pending;
            let slots = if pending { &mut idx.pending.slots } else { &mut idx.slots.slots };
            slots.extend(p.blobs.iter().map(|b| Slot {
                key: key(&b.id),
                pack: no
                    | if b.blob_type == BlobType::Tree { TREE } else { 0 }
                    | if b.compressed { COMPRESSED } else { 0 },
                offset: b.offset,
                length: b.length,
                raw_length: b.raw_length,
            }));
        };
        for (id, f) in files {
            if superseded.contains(id) {
                continue;
            }
            for p in &f.packs {
                add(&mut idx, p, false);
            }
            for p in &f.pending {
                add(&mut idx, &p.pack, true);
            }
        }
        idx.slots.seal();
        // A blob also stored in a live pack is not pending.
        let live = &idx.slots;
        idx.pending.slots.retain(|s| live.find(&s.key).is_none());
        idx.pending.seal();
        if idx.packs.len() > MAX_PACKS {
            return Err(Error::corrupt(format!("the index lists {} packs, more than {MAX_PACKS}", idx.packs.len())));
        }
        Ok(idx)
    }

    /// The location of blob `id`, if indexed (also in a pack pending deletion).
    pub fn get(&self, id: &Id) -> Option<Location> {
        let k = key(id);
        let s = self.slots.find(&k).or_else(|| self.pending.find(&k))?;
        Some(Location {
            pack: s.pack & !(TREE | COMPRESSED),
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
        self.slots.find(&key(id)).is_some()
    }

    /// The pack table: (pack ID, size).
    pub fn packs(&self) -> &[(Id, u64)] {
        &self.packs
    }

    /// Number of distinct blobs.
    pub fn len(&self) -> usize {
        self.slots.slots.len()
    }

    /// Whether no blob is indexed.
    pub fn is_empty(&self) -> bool {
        self.slots.slots.is_empty()
    }

    /// Whether pack number `no` (a position in [`Index::packs`]) is pending
    /// deletion: it may already be gone.
    pub fn pack_is_pending(&self, no: usize) -> bool {
        self.pack_pending.get(no).copied().unwrap_or(false)
    }

    /// Whether blob `id` lives only in a pack pending deletion.
    pub fn is_pending(&self, id: &Id) -> bool {
        !self.contains(id) && self.pending.find(&key(id)).is_some()
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
    /// Sorts, removes duplicate keys and builds the directory.
    fn seal(&mut self) {
        self.slots.sort_unstable_by(|a, b| cmp_key(&a.key, &b.key));
        self.slots.dedup_by(|a, b| a.key == b.key);
        self.slots.shrink_to_fit();
        self.dir.clear();
        if self.slots.len() >= 1 << 14 {
            self.dir.reserve_exact(65_537);
            let mut i = 0;
            for bucket in 0..=65_536usize {
                while i < self.slots.len()
                    && (u16::from_be_bytes([self.slots[i].key[0], self.slots[i].key[1]]) as usize) < bucket
                {
                    i += 1;
                }
                self.dir.push(i as u32);
            }
        }
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

    #[test]
    fn hostile_counts_do_not_allocate() {
        let mut evil = MAGIC.to_vec();
        evil.extend_from_slice(&0u32.to_le_bytes());
        evil.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(IndexFile::decode(&evil).is_err());
    }
}
