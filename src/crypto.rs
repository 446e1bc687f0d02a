//! Keys, authenticated encryption (XChaCha20-Poly1305), keyed content IDs and the
//! password KDF (Argon2id). Pure functions: no I/O.

use chacha20poly1305::aead::{AeadInOut, Generate, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};
use crate::id::Id;

/// Bytes added by [`MasterKey::seal`]: a 24-byte nonce and a 16-byte tag.
pub const OVERHEAD: usize = 24 + 16;

/// Associated-data labels: each kind of sealed object is bound to its kind.
pub mod label {
    /// The repository config.
    pub const CONFIG: &[u8] = b"cairn:config";
    /// Index files.
    pub const INDEX: &[u8] = b"cairn:index";
    /// Snapshot manifests.
    pub const SNAPSHOT: &[u8] = b"cairn:snapshot";
    /// Lock files.
    pub const LOCK: &[u8] = b"cairn:lock";
    /// The header at the end of a pack.
    pub const PACK_HEADER: &[u8] = b"cairn:pack-header";
    /// A blob inside a pack.
    pub const BLOB: &[u8] = b"cairn:blob";
}

/// The repository's secret key set, made at `init` and wrapped by each key file.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    enc: [u8; 32],
    id: [u8; 32],
    chunker_seed: u64,
}

impl MasterKey {
    /// Serialized length: encryption key, ID key, chunker seed.
    pub const LEN: usize = 72;

    /// A fresh random key set.
    pub fn random() -> Result<MasterKey> {
        let mut b = [0u8; Self::LEN];
        random_bytes(&mut b)?;
        let k = MasterKey::from_bytes(&b);
        b.zeroize();
        k
    }

    /// `enc || id || seed (u64 LE)`.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[..32].copy_from_slice(&self.enc);
        b[32..64].copy_from_slice(&self.id);
        b[64..].copy_from_slice(&self.chunker_seed.to_le_bytes());
        b
    }

    /// Inverse of [`MasterKey::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Result<MasterKey> {
        if b.len() != Self::LEN {
            return Err(Error::corrupt("master key has the wrong length"));
        }
        let mut k = MasterKey { enc: [0; 32], id: [0; 32], chunker_seed: 0 };
        k.enc.copy_from_slice(&b[..32]);
        k.id.copy_from_slice(&b[32..64]);
        k.chunker_seed = u64::from_le_bytes(b[64..].try_into().expect("8 bytes"));
        Ok(k)
    }

    /// This key set with the content-addressing secrets (ID key and chunker seed)
    /// of `other`: a repository made with it cuts files at the same places and
    /// names chunks with the same IDs as `other`'s, so `copy` between them moves
    /// blobs without re-chunking. The encryption key stays this one's.
    pub fn with_content_keys_of(&self, other: &MasterKey) -> MasterKey {
        MasterKey { enc: self.enc, id: other.id, chunker_seed: other.chunker_seed }
    }

    /// Whether `other` names and cuts content as this key set does.
    pub fn same_content_keys(&self, other: &MasterKey) -> bool {
        self.id == other.id && self.chunker_seed == other.chunker_seed
    }

    /// The secret seed of the content-defined chunker.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// The ID of a blob: BLAKE3 keyed with the repository's ID key.
    pub fn blob_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id, plaintext).as_bytes())
    }

    /// The key of local files derived from repository data (the on-disk index
    /// table in the cache): they are encrypted and authenticated like the
    /// repository's, so a damaged or foreign file is refused and the cache
    /// holds nothing readable without the repository key.
    pub fn local_key(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("cairn 2026-11 local index table key");
        h.update(&self.enc).update(&self.id);
        *h.finalize().as_bytes()
    }

    /// Encrypts `plaintext` with a fresh nonce: `nonce || ciphertext || tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal_with(&self.enc, aad, plaintext)
    }

    /// [`MasterKey::seal`] in place (see [`seal_in_place`]).
    pub fn seal_in_place(&self, aad: &[u8], buf: &mut [u8]) {
        seal_in_place(&self.enc, aad, buf)
    }

    /// Decrypts and authenticates the output of [`MasterKey::seal`].
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        open_with(&self.enc, aad, sealed)
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Fills `buf` from the operating system's random source.
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf)
        .map_err(|e| Error::Io { path: "random source".into(), source: std::io::Error::other(e.to_string()) })
}

/// Seals `plaintext` under `key` (see [`MasterKey::seal`]).
pub fn seal_with(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce = XNonce::generate();
    let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_inout_detached(&nonce, aad, (&mut out[24..]).into())
        .expect("XChaCha20-Poly1305 accepts any message below 256 GiB");
    out.extend_from_slice(&tag);
    out
}

/// Seals in place: `buf` is 24 bytes of room for the nonce, the plaintext, and
/// 16 bytes of room for the tag; afterwards it is what [`seal_with`] returns.
pub fn seal_in_place(key: &[u8; 32], aad: &[u8], buf: &mut [u8]) {
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce = XNonce::generate();
    let n = buf.len() - 16;
    buf[..24].copy_from_slice(&nonce);
    let tag = cipher
        .encrypt_inout_detached(&nonce, aad, (&mut buf[24..n]).into())
        .expect("XChaCha20-Poly1305 accepts any message below 256 GiB");
    buf[n..].copy_from_slice(&tag);
}

/// Encrypts `buf` but its last 16 bytes in place under `key` and `nonce`, and
/// writes the tag into those 16 bytes. The caller guarantees that a nonce is
/// never used twice with one key (the local index table: a random salt per
/// table and the page number).
pub fn seal_detached(key: &[u8; 32], nonce: &[u8; 24], buf: &mut [u8]) {
    let n = buf.len() - 16;
    let tag = XChaCha20Poly1305::new(key.into())
        .encrypt_inout_detached(nonce.into(), b"", (&mut buf[..n]).into())
        .expect("XChaCha20-Poly1305 accepts any message below 256 GiB");
    buf[n..].copy_from_slice(&tag);
}

/// Opens what [`seal_detached`] made, in place; false if it does not authenticate.
pub fn open_detached(key: &[u8; 32], nonce: &[u8; 24], buf: &mut [u8]) -> bool {
    let Some(n) = buf.len().checked_sub(16) else { return false };
    let (ct, tag) = buf.split_at_mut(n);
    let tag = Tag::try_from(&tag[..]).expect("16 bytes");
    XChaCha20Poly1305::new(key.into()).decrypt_inout_detached(nonce.into(), b"", ct.into(), &tag).is_ok()
}

/// Opens the output of [`seal_with`]; any tampering is an error.
pub fn open_with(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < OVERHEAD {
        return Err(Error::corrupt("encrypted object is too short"));
    }
    let cipher = XChaCha20Poly1305::new(key.into());
    let (nonce, rest) = sealed.split_at(24);
    let (ct, tag) = rest.split_at(rest.len() - 16);
    let nonce = XNonce::try_from(nonce).expect("24 bytes");
    let tag = Tag::try_from(tag).expect("16 bytes");
    let mut out = ct.to_vec();
    cipher
        .decrypt_inout_detached(&nonce, aad, out.as_mut_slice().into(), &tag)
        .map_err(|_| Error::corrupt("authentication failed (wrong key or modified data)"))?;
    Ok(out)
}

/// Argon2id parameters, as stored in a key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about 0.2 s on the project machine.
    fn default() -> Self {
        KdfParams { memory_kib: 64 * 1024, iterations: 3, parallelism: 1 }
    }
}

impl KdfParams {
    /// Rejects parameters outside sane bounds before any work is done (a hostile
    /// key file must not make us allocate terabytes).
    pub fn validate(&self) -> Result<()> {
        let ok = (8..=4 * 1024 * 1024).contains(&self.memory_kib)
            && (1..=100).contains(&self.iterations)
            && (1..=64).contains(&self.parallelism)
            && self.memory_kib >= 8 * self.parallelism;
        if ok { Ok(()) } else { Err(Error::corrupt(format!("key file has out-of-range KDF parameters {self:?}"))) }
    }

    /// Derives a 32-byte key-encryption key from `password`.
    pub fn derive(&self, password: &[u8], salt: &[u8]) -> Result<[u8; 32]> {
        self.validate()?;
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| Error::corrupt(format!("KDF parameters: {e}")))?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        argon.hash_password_into(password, salt, &mut out).map_err(|e| Error::corrupt(format!("KDF: {e}")))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let k = MasterKey::random().unwrap();
        let s = k.seal(label::BLOB, b"hello");
        assert_eq!(s.len(), 5 + OVERHEAD);
        assert_eq!(k.open(label::BLOB, &s).unwrap(), b"hello");
        // Another label (object kind) must not open.
        assert!(k.open(label::INDEX, &s).is_err());
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 1;
            assert!(k.open(label::BLOB, &t).is_err(), "flip at {i} not detected");
        }
        assert!(k.open(label::BLOB, &s[..s.len() - 1]).is_err());
        assert!(k.open(label::BLOB, &s[..10]).is_err());
        // Fresh nonce per object.
        assert_ne!(k.seal(label::BLOB, b"hello"), s);
    }

    #[test]
    fn master_key_bytes_and_ids() {
        let k = MasterKey::random().unwrap();
        let k2 = MasterKey::from_bytes(&k.to_bytes()).unwrap();
        assert_eq!(k.blob_id(b"x"), k2.blob_id(b"x"));
        assert_eq!(k.chunker_seed(), k2.chunker_seed());
        let other = MasterKey::random().unwrap();
        assert_ne!(k.blob_id(b"x"), other.blob_id(b"x"), "IDs must depend on the key");
        assert_ne!(k.blob_id(b"x"), Id::hash(b"x"));
    }

    #[test]
    fn kdf_bounds() {
        let p = KdfParams { memory_kib: 8, iterations: 1, parallelism: 1 };
        let a = p.derive(b"pw", b"0123456789abcdef").unwrap();
        assert_eq!(a, p.derive(b"pw", b"0123456789abcdef").unwrap());
        assert_ne!(a, p.derive(b"pw2", b"0123456789abcdef").unwrap());
        assert!(KdfParams { memory_kib: u32::MAX, ..p }.validate().is_err());
        assert!(KdfParams { iterations: 0, ..p }.validate().is_err());
    }
}
