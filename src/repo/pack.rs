//! Pack files: sealed blobs back to back, then a sealed header listing them, then
//! the header's length. Also the blob encoding (zstd, then seal) shared by all.

use crate::compress::Compressor;
use crate::crypto::{MasterKey, OVERHEAD, label};
use crate::error::{Error, Result};
use crate::id::Id;

/// The two kinds of blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    /// A chunk of file content.
    Data,
    /// A directory listing.
    Tree,
}

impl BlobType {
    fn code(self) -> u8 {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
        }
    }
}

/// Largest plaintext blob we accept (trees of huge directories included).
pub const MAX_BLOB: u32 = 1 << 30;

/// One blob's entry in a pack header or index file: 46 bytes on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BlobEntry {
    /// Data or tree.
    #[serde(rename = "type")]
    pub blob_type: BlobType,
    /// Whether the payload is a zstd frame.
    pub compressed: bool,
    /// Keyed hash of the plaintext.
    pub id: Id,
    /// Byte offset in the pack.
    pub offset: u32,
    /// Stored length (with the encryption envelope).
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
}

impl BlobEntry {
    /// Encoded size.
    pub const SIZE: usize = 46;

    /// Appends the 46-byte encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.blob_type.code());
        out.push(u8::from(self.compressed));
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.raw_length.to_le_bytes());
    }

    /// Decodes one entry; `b` must be 46 bytes.
    pub fn decode(b: &[u8]) -> Result<BlobEntry> {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let blob_type = match b[0] {
            0 => BlobType::Data,
            1 => BlobType::Tree,
            t => return Err(Error::corrupt(format!("unknown blob type {t}"))),
        };
        let compressed = match b[1] {
            0 => false,
            1 => true,
            f => return Err(Error::corrupt(format!("unknown blob flags {f:#x}"))),
        };
        let e = BlobEntry {
            blob_type,
            compressed,
            id: Id(b[2..34].try_into().expect("32 bytes")),
            offset: u32_at(34),
            length: u32_at(38),
            raw_length: u32_at(42),
        };
        if (e.length as usize) < OVERHEAD
            || e.raw_length > MAX_BLOB
            || (!e.compressed && (e.length as usize) < e.raw_length as usize + OVERHEAD)
        {
            return Err(Error::corrupt(format!("blob {} has inconsistent lengths", e.id)));
        }
        Ok(e)
    }
}

/// Compresses (when it helps) and seals a blob's plaintext. Returns (compressed, stored bytes).
pub fn encode_blob(key: &MasterKey, plain: &[u8], zstd: Option<&mut Compressor>) -> (bool, Vec<u8>) {
    let mut out = Vec::new();
    let (compressed, n) = encode_blob_into(key, plain, zstd, false, &mut out);
    out.truncate(n);
    (compressed, out)
}

/// [`encode_blob`] into `buf` (grown as needed, never shrunk, so that a reused
/// buffer costs no allocation): compressed straight after the nonce and sealed
/// in place; with `pad`, zeros follow the payload up to [`padded`] size.
/// Returns whether it was compressed and the stored length, `buf[..n]`.
pub fn encode_blob_into(
    key: &MasterKey,
    plain: &[u8],
    zstd: Option<&mut Compressor>,
    pad: bool,
    buf: &mut Vec<u8>,
) -> (bool, usize) {
    let room = if pad { padded(plain.len() + OVERHEAD) } else { plain.len() + OVERHEAD };
    if buf.len() < room {
        buf.resize(room, 0);
    }
    let (compressed, mut len) = match zstd.and_then(|z| z.compress_into(plain, &mut buf[24..24 + plain.len()])) {
        Some(n) => (true, n),
        None => {
            buf[24..24 + plain.len()].copy_from_slice(plain);
            (false, plain.len())
        }
    };
    if pad {
        let to = padded(len + OVERHEAD) - OVERHEAD;
        buf[24 + len..24 + to].fill(0);
        len = to;
    }
    key.seal_in_place(label::BLOB, &mut buf[..24 + len + 16]);
    (compressed, 24 + len + 16)
}

/// Padmé (Nikitin et al., 2019): `n` rounded up so that only its top
/// ⌊log2 ⌊log2 n⌋⌋ + 1 bits may be set: at most 12% more, leaking O(log log n)
/// bits of the size instead of all of them.
pub fn padded(n: usize) -> usize {
    if n < 2 {
        return n;
    }
    let e = usize::BITS - 1 - n.leading_zeros(); // ⌊log2 n⌋
    let s = u32::BITS - e.leading_zeros(); // ⌊log2 e⌋ + 1
    let mask = (1usize << (e - s)) - 1;
    (n + mask) & !mask
}

thread_local! {
    /// One decompression context per thread: creating one per blob is costly.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompresses a zstd frame of at most `capacity` bytes.
fn decompress(data: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        d.as_mut().expect("just set").decompress(data, capacity)
    })
}

/// Opens, decompresses and verifies a stored blob against its entry.
pub fn decode_blob(key: &MasterKey, e: &BlobEntry, stored: &[u8]) -> Result<Vec<u8>> {
    let payload =
        key.open(label::BLOB, stored).map_err(|_| Error::corrupt(format!("blob {}: authentication failed", e.id)))?;
    // What follows the zstd frame, or the plaintext, is padding: zeros only.
    let end = if e.compressed {
        zstd::zstd_safe::find_frame_compressed_size(&payload).map_err(|c| {
            Error::corrupt(format!("blob {}: bad zstd frame: {}", e.id, zstd::zstd_safe::get_error_name(c)))
        })?
    } else {
        (e.raw_length as usize).min(payload.len())
    };
    if !payload[end..].iter().all(|&b| b == 0) {
        return Err(Error::corrupt(format!("blob {}: padding is not zeros", e.id)));
    }
    let plain = if e.compressed {
        decompress(&payload[..end], e.raw_length as usize)
            .map_err(|err| Error::corrupt(format!("blob {}: decompression failed: {err}", e.id)))?
    } else {
        let mut payload = payload;
        payload.truncate(end);
        payload
    };
    if plain.len() != e.raw_length as usize || key.blob_id(&plain) != e.id {
        return Err(Error::corrupt(format!("blob {}: content does not match its ID", e.id)));
    }
    Ok(plain)
}

/// Assembles one pack in memory.
pub struct PackWriter {
    /// Data or tree: a pack holds one type.
    pub blob_type: BlobType,
    buf: Vec<u8>,
    entries: Vec<BlobEntry>,
}

impl PackWriter {
    /// An empty pack for blobs of `blob_type`.
    pub fn new(blob_type: BlobType, capacity: usize) -> PackWriter {
        PackWriter { blob_type, buf: Vec::with_capacity(capacity), entries: Vec::new() }
    }

    /// Appends a stored blob.
    pub fn add(&mut self, id: Id, compressed: bool, raw_length: u32, stored: &[u8]) {
        self.entries.push(BlobEntry {
            blob_type: self.blob_type,
            compressed,
            id,
            offset: self.buf.len() as u32,
            length: stored.len() as u32,
            raw_length,
        });
        self.buf.extend_from_slice(stored);
    }

    /// Appends every blob of `other` (of the same type).
    pub fn append(&mut self, other: PackWriter) {
        for e in &other.entries {
            self.add(e.id, e.compressed, e.raw_length, &other.buf[e.offset as usize..(e.offset + e.length) as usize]);
        }
    }

    /// Bytes of blobs so far.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the sealed header and its length; returns the pack's ID, bytes and entries.
    pub fn finish(mut self, key: &MasterKey) -> (Id, Vec<u8>, Vec<BlobEntry>) {
        let mut header = Vec::with_capacity(self.entries.len() * BlobEntry::SIZE);
        for e in &self.entries {
            e.encode(&mut header);
        }
        let sealed = key.seal(label::PACK_HEADER, &header);
        self.buf.extend_from_slice(&sealed);
        self.buf.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        (Id::hash(&self.buf), self.buf, self.entries)
    }
}

/// Where the sealed header of a pack of `pack_size` bytes starts, given its last 4 bytes.
pub fn header_start(pack_size: u64, trailer: &[u8]) -> Result<u64> {
    let len = u32::from_le_bytes(trailer.try_into().map_err(|_| Error::corrupt("pack trailer is not 4 bytes"))?) as u64;
    if len < OVERHEAD as u64 || len + 4 > pack_size {
        return Err(Error::corrupt(format!("pack header length {len} does not fit a {pack_size}-byte pack")));
    }
    Ok(pack_size - 4 - len)
}

/// Parses a pack header given its sealed bytes and where it starts; checks that the
/// entries tile the blob area exactly.
pub fn parse_header(key: &MasterKey, sealed: &[u8], header_start: u64) -> Result<Vec<BlobEntry>> {
    let plain =
        key.open(label::PACK_HEADER, sealed).map_err(|_| Error::corrupt("pack header: authentication failed"))?;
    decode_header(&plain, header_start)
}

/// The entries of a decrypted pack header, checked to tile `0..header_start`.
pub fn decode_header(plain: &[u8], header_start: u64) -> Result<Vec<BlobEntry>> {
    if plain.is_empty() || plain.len() % BlobEntry::SIZE != 0 {
        return Err(Error::corrupt("pack header has a bad length"));
    }
    let entries = plain.chunks(BlobEntry::SIZE).map(BlobEntry::decode).collect::<Result<Vec<_>>>()?;
    let mut pos = 0u64;
    for e in &entries {
        if e.offset as u64 != pos {
            return Err(Error::corrupt(format!("pack header: blob {} is not where the previous one ends", e.id)));
        }
        pos += e.length as u64;
    }
    if pos != header_start {
        return Err(Error::corrupt("pack header does not describe the whole pack"));
    }
    Ok(entries)
}

/// Parses a whole pack (as read for `check --read-data`): verifies its name, header
/// and each blob. Returns the entries and, per entry, the verification result.
pub fn verify_pack(key: &MasterKey, name: &Id, data: &[u8]) -> Result<Vec<(BlobEntry, Result<()>)>> {
    if Id::hash(data) != *name {
        return Err(Error::corrupt(format!("pack {name}: content does not match its name (damaged or truncated)")));
    }
    if data.len() < 4 {
        return Err(Error::corrupt(format!("pack {name} is too short")));
    }
    let start = header_start(data.len() as u64, &data[data.len() - 4..])?;
    let entries = parse_header(key, &data[start as usize..data.len() - 4], start)?;
    Ok(entries
        .into_iter()
        .map(|e| {
            let stored = &data[e.offset as usize..(e.offset + e.length) as usize];
            let r = decode_blob(key, &e, stored).map(drop);
            (e, r)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padme_rounds_up_by_at_most_12_percent_to_few_distinct_sizes() {
        let mut last = 0;
        let mut sizes = std::collections::BTreeSet::new();
        for n in 1..300_000usize {
            let p = padded(n);
            assert!(p >= n && p <= n + n / 8, "padded({n}) = {p}");
            assert!(p >= last, "not monotonic at {n}");
            assert_eq!(padded(p), p, "padded is not idempotent at {n}");
            last = p;
            sizes.insert(p);
        }
        // Sizes 65,536..300,000 (the usual chunks) collapse to a few hundred.
        assert!(sizes.range(65_536..).count() < 400, "{}", sizes.range(65_536..).count());
        assert_eq!((padded(9), padded(1000), padded(65_537)), (10, 1024, 67_584));
    }

    #[test]
    fn padded_blobs_decode_and_their_padding_is_authenticated_zeros() {
        let key = MasterKey::random().unwrap();
        let mut z = Compressor::new(3).unwrap();
        let text: Vec<u8> = (0..70_000u32).map(|i| b"abcdefgh"[(i % 7) as usize]).collect();
        let noise: Vec<u8> = (0..70_001u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for plain in [&text, &noise] {
            let mut buf = Vec::new();
            let (c, n) = encode_blob_into(&key, plain, Some(&mut z), true, &mut buf);
            assert_eq!(n, padded(n), "the stored size is a padded size");
            let e = BlobEntry {
                blob_type: BlobType::Data,
                compressed: c,
                id: key.blob_id(plain),
                offset: 0,
                length: n as u32,
                raw_length: plain.len() as u32,
            };
            let mut enc = Vec::new();
            e.encode(&mut enc);
            BlobEntry::decode(&enc).unwrap();
            assert_eq!(&decode_blob(&key, &e, &buf[..n]).unwrap(), plain);
        }
        // Non-zero bytes after the plaintext are refused, even though sealed.
        let mut payload = b"plain".to_vec();
        payload.extend_from_slice(&[0, 0, 1]);
        let stored = key.seal(label::BLOB, &payload);
        let e = BlobEntry {
            blob_type: BlobType::Data,
            compressed: false,
            id: key.blob_id(b"plain"),
            offset: 0,
            length: stored.len() as u32,
            raw_length: 5,
        };
        assert!(decode_blob(&key, &e, &stored).unwrap_err().to_string().contains("padding"));
        let stored = key.seal(label::BLOB, &payload[..7]);
        assert_eq!(decode_blob(&key, &BlobEntry { length: stored.len() as u32, ..e }, &stored).unwrap(), b"plain");
    }

    #[test]
    fn pack_round_trip_and_damage() {
        let key = MasterKey::random().unwrap();
        let mut z = Compressor::new(3).unwrap();
        let mut w = PackWriter::new(BlobType::Data, 0);
        let blobs: Vec<Vec<u8>> =
            vec![vec![0u8; 10_000], b"short".to_vec(), (0..5000u32).map(|i| (i * 31) as u8).collect()];
        for b in &blobs {
            let (c, s) = encode_blob(&key, b, Some(&mut z));
            w.add(key.blob_id(b), c, b.len() as u32, &s);
        }
        let (id, data, entries) = w.finish(&key);
        assert!(entries[0].compressed, "zeros compress");
        assert!(!entries[1].compressed, "5 bytes are stored as is");
        let checked = verify_pack(&key, &id, &data).unwrap();
        assert_eq!(checked.len(), 3);
        assert!(checked.iter().all(|(_, r)| r.is_ok()));
        for (e, b) in entries.iter().zip(&blobs) {
            let s = &data[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(&decode_blob(&key, e, s).unwrap(), b);
        }
        let mut bad = data.clone();
        bad[entries[1].offset as usize + 30] ^= 1;
        assert!(verify_pack(&key, &id, &bad).is_err(), "the name check catches it");
        let checked = verify_pack(&key, &Id::hash(&bad), &bad).unwrap();
        assert!(checked[1].1.is_err() && checked[0].1.is_ok() && checked[2].1.is_ok());
        // Truncation and hostile header lengths are errors, not panics.
        for cut in [0, 3, 4, 50, data.len() - 1] {
            let t = &data[..cut];
            assert!(verify_pack(&key, &Id::hash(t), t).is_err());
        }
        let mut evil = data.clone();
        let n = evil.len();
        evil[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(verify_pack(&key, &Id::hash(&evil), &evil).is_err());
    }
}
