//! Index files (blob -> pack, offset, lengths) and the in-memory index built from
//! them: a sorted array of fixed-size entries, searched by binary search.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::pack::{BlobEntry, BlobType};

const MAGIC: &[u8; 8] = b"CAIRNIX1";

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

/// The content of one index file.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct IndexFile {
    /// Index files whose content this one contains (ignored when loading).
    pub supersedes: Vec<Id>,
    /// Packs and their blobs.
    pub packs: Vec<IndexPack>,
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

impl IndexFile {
    /// Binary encoding (before compression and sealing).
    pub fn encode(&self) -> Vec<u8> {
        let blobs: usize = self.packs.iter().map(|p| p.blobs.len()).sum();
        let mut out =
            Vec::with_capacity(16 + 32 * self.supersedes.len() + 44 * self.packs.len() + BlobEntry::SIZE * blobs);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.supersedes.len() as u32).to_le_bytes());
        for id in &self.supersedes {
            out.extend_from_slice(&id.0);
        }
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            out.extend_from_slice(&p.id.0);
            out.extend_from_slice(&p.size.to_le_bytes());
            out.extend_from_slice(&(p.blobs.len() as u32).to_le_bytes());
            for b in &p.blobs {
                b.encode(&mut out);
            }
        }
        out
    }

    /// Parses [`IndexFile::encode`]'s output, bounding every count by the length.
    pub fn decode(data: &[u8]) -> Result<IndexFile> {
        let mut r = Reader(data);
        if r.take(8)? != MAGIC {
            return Err(Error::corrupt("index file has an unknown format"));
        }
        let n = r.count(32)?;
        let supersedes = (0..n).map(|_| r.id()).collect::<Result<_>>()?;
        let n = r.count(44)?;
        let mut packs = Vec::with_capacity(n);
        for _ in 0..n {
            let id = r.id()?;
            let size = r.u64()?;
            let nb = r.count(BlobEntry::SIZE)?;
            let blobs = (0..nb).map(|_| BlobEntry::decode(r.take(BlobEntry::SIZE)?)).collect::<Result<Vec<_>>>()?;
            for b in &blobs {
                if b.offset as u64 + b.length as u64 > size {
                    return Err(Error::corrupt(format!("index: blob {} lies outside pack {id}", b.id)));
                }
            }
            packs.push(IndexPack { id, size, blobs });
        }
        if !r.0.is_empty() {
            return Err(Error::corrupt("index file has trailing bytes"));
        }
        Ok(IndexFile { supersedes, packs })
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

/// One entry of the sorted in-memory table (52 bytes).
#[derive(Clone, Copy)]
struct Slot {
    id: [u8; 32],
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
    flags: u8,
}

/// Every blob's location, built from all index files.
#[derive(Default)]
pub struct Index {
    packs: Vec<(Id, u64)>,
    slots: Vec<Slot>,
}

impl Index {
    /// Builds the table from index files, skipping superseded ones.
    pub fn build(files: Vec<(Id, IndexFile)>) -> Index {
        let superseded: HashSet<Id> = files.iter().flat_map(|(_, f)| f.supersedes.iter().copied()).collect();
        let mut idx = Index::default();
        let mut pack_no: HashMap<Id, u32> = HashMap::new();
        for (id, f) in files {
            if superseded.contains(&id) {
                continue;
            }
            for p in f.packs {
                let no = *pack_no.entry(p.id).or_insert_with(|| {
                    idx.packs.push((p.id, p.size));
                    (idx.packs.len() - 1) as u32
                });
                idx.slots.extend(p.blobs.iter().map(|b| Slot {
                    id: b.id.0,
                    pack: no,
                    offset: b.offset,
                    length: b.length,
                    raw_length: b.raw_length,
                    flags: (b.blob_type == BlobType::Tree) as u8 | (u8::from(b.compressed) << 1),
                }));
            }
        }
        idx.slots.sort_unstable_by_key(|s| s.id);
        idx.slots.dedup_by(|a, b| a.id == b.id);
        idx.slots.shrink_to_fit();
        idx
    }

    /// The location of blob `id`, if indexed.
    pub fn get(&self, id: &Id) -> Option<Location> {
        let i = self.slots.binary_search_by(|s| s.id.cmp(&id.0)).ok()?;
        Some(self.location(&self.slots[i]))
    }

    fn location(&self, s: &Slot) -> Location {
        Location {
            pack: s.pack,
            entry: BlobEntry {
                blob_type: if s.flags & 1 == 1 { BlobType::Tree } else { BlobType::Data },
                compressed: s.flags & 2 == 2,
                id: Id(s.id),
                offset: s.offset,
                length: s.length,
                raw_length: s.raw_length,
            },
        }
    }

    /// Whether blob `id` is indexed.
    pub fn contains(&self, id: &Id) -> bool {
        self.slots.binary_search_by(|s| s.id.cmp(&id.0)).is_ok()
    }

    /// The pack table: (pack ID, size).
    pub fn packs(&self) -> &[(Id, u64)] {
        &self.packs
    }

    /// Number of distinct blobs.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no blob is indexed.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every blob's location.
    pub fn iter(&self) -> impl Iterator<Item = Location> + '_ {
        self.slots.iter().map(|s| self.location(s))
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
        };
        let enc = f.encode();
        assert_eq!(IndexFile::decode(&enc).unwrap(), f);
        for cut in 0..enc.len() {
            assert!(IndexFile::decode(&enc[..cut]).is_err(), "truncated at {cut}");
        }
        let g = IndexFile {
            supersedes: vec![],
            packs: vec![IndexPack { id: Id::hash(b"q"), size: 500, blobs: vec![entry(3, 0)] }],
        };
        let old = IndexFile {
            supersedes: vec![],
            packs: vec![IndexPack { id: Id::hash(b"gone"), size: 100, blobs: vec![entry(9, 0)] }],
        };
        let idx = Index::build(vec![(Id::hash(b"a"), f), (Id::hash(b"b"), g), (Id::hash(b"old"), old)]);
        assert_eq!(idx.len(), 3, "superseded index files are ignored");
        let l = idx.get(&Id::hash(&[2])).unwrap();
        assert_eq!(idx.packs()[l.pack as usize].0, Id::hash(b"p"));
        assert_eq!(l.entry, entry(2, 100));
        assert!(!idx.contains(&Id::hash(&[9])));
        assert!(idx.get(&Id::hash(b"nope")).is_none());
    }

    #[test]
    fn hostile_counts_do_not_allocate() {
        let mut evil = MAGIC.to_vec();
        evil.extend_from_slice(&0u32.to_le_bytes());
        evil.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(IndexFile::decode(&evil).is_err());
    }
}
