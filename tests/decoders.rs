//! Hostile input to every decoder of repository data: random mutations and
//! truncations of valid encodings must give errors, never panics or huge
//! allocations.

use cairn::Id;
use cairn::crypto::{KdfParams, MasterKey};
use cairn::repo::index::{IndexFile, IndexPack, PendingPack};
use cairn::repo::keyfile::KeyFile;
use cairn::repo::pack::{self, BlobEntry, BlobType, PackWriter};
use cairn::repo::snapshot::Snapshot;
use cairn::repo::tree::Tree;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Variants of `valid`: truncations, bit flips, overwritten spans and splices of
/// large little-endian numbers (to hit length fields).
fn mutations(valid: &[u8], rng: &mut Rng, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut v = valid.to_vec();
        match rng.below(4) {
            0 => v.truncate(rng.below(valid.len())),
            1 => {
                for _ in 0..=rng.below(4) {
                    let i = rng.below(v.len());
                    v[i] ^= 1 << rng.below(8);
                }
            }
            2 => {
                let i = rng.below(v.len());
                let end = (i + 1 + rng.below(16)).min(v.len());
                v[i..end].fill(rng.next() as u8);
            }
            _ => {
                let i = rng.below(v.len().saturating_sub(4));
                let big = [u32::MAX, u32::MAX / 46, 1 << 30, 0x7fff_ffff][rng.below(4)];
                if i + 4 <= v.len() {
                    v[i..i + 4].copy_from_slice(&big.to_le_bytes());
                }
            }
        }
        out.push(v);
    }
    out
}

#[test]
fn index_decoder_survives_mutations() {
    let entry = |i: u8| BlobEntry {
        blob_type: BlobType::Data,
        compressed: true,
        id: Id::hash(&[i]),
        offset: 100 * i as u32,
        length: 100,
        raw_length: 300,
    };
    let f = IndexFile {
        supersedes: vec![Id::hash(b"s")],
        packs: vec![IndexPack { id: Id::hash(b"p"), size: 10_000, blobs: (0..20).map(entry).collect() }],
        pending: vec![PendingPack {
            pack: IndexPack { id: Id::hash(b"q"), size: 5_000, blobs: (0..5).map(entry).collect() },
            marked_at: 1_800_000_000,
        }],
    };
    let valid = f.encode();
    assert_eq!(IndexFile::decode(&valid).unwrap(), f);
    let mut rng = Rng(1);
    for m in mutations(&valid, &mut rng, 3000) {
        let _ = IndexFile::decode(&m);
    }
}

#[test]
fn pack_decoder_survives_mutations() {
    let key = MasterKey::random().unwrap();
    let mut w = PackWriter::new(BlobType::Tree, 0);
    for i in 0..10u32 {
        let plain = format!("blob number {i} with some text in it").repeat(i as usize + 1);
        let (c, s) = pack::encode_blob(&key, plain.as_bytes(), None);
        w.add(key.blob_id(plain.as_bytes()), c, plain.len() as u32, &s);
    }
    let (id, valid, _) = w.finish(&key);
    assert!(pack::verify_pack(&key, &id, &valid).unwrap().iter().all(|(_, r)| r.is_ok()));
    let mut rng = Rng(2);
    for m in mutations(&valid, &mut rng, 2000) {
        // Named correctly, so the decoder itself is exercised past the name check.
        let r = pack::verify_pack(&key, &Id::hash(&m), &m);
        if m != valid {
            assert!(r.is_err() || r.unwrap().iter().any(|(_, b)| b.is_err()), "a damaged pack verified clean");
        }
    }
}

#[test]
fn tree_snapshot_and_key_decoders_survive_mutations() {
    let tree = r#"{"entries":[{"name":"a","type":"file","mode":420,"uid":0,"gid":0,"mtime":[1,2],"atime":[1,2],"ctime":[1,2],"size":3,"inode":4,"links":1,"device":5,"content":["0000000000000000000000000000000000000000000000000000000000000000"]},{"name":[255],"type":"dir","mode":493,"uid":0,"gid":0,"mtime":[1,2],"atime":[1,2],"ctime":[1,2],"subtree":"1111111111111111111111111111111111111111111111111111111111111111"}]}"#;
    assert!(Tree::from_bytes(tree.as_bytes()).is_ok());
    let snap = r#"{"time":"2024-01-02T03:04:05.123456789+01:00","tree":"1111111111111111111111111111111111111111111111111111111111111111","paths":["/x"],"hostname":"h","username":"u","tags":["t"]}"#;
    assert!(serde_json::from_str::<Snapshot>(snap).is_ok());
    let master = MasterKey::random().unwrap();
    let kf = KeyFile::create(&master, b"pw", KdfParams { memory_kib: 8, iterations: 1, parallelism: 1 }).unwrap();
    let key = serde_json::to_vec(&kf).unwrap();
    let mut rng = Rng(3);
    for m in mutations(tree.as_bytes(), &mut rng, 3000) {
        let _ = Tree::from_bytes(&m);
    }
    for m in mutations(snap.as_bytes(), &mut rng, 3000) {
        let _ = serde_json::from_slice::<Snapshot>(&m);
    }
    for m in mutations(&key, &mut rng, 300) {
        if let Ok(k) = KeyFile::parse(&m) {
            // Bounded KDF parameters: this returns quickly or refuses.
            let _ = k.open(b"pw");
        }
    }
}
