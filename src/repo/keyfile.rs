//! Key files: the master key set wrapped under a password-derived key (Argon2id).

use serde::{Deserialize, Serialize};

use crate::crypto::{self, KdfParams, MasterKey};
use crate::error::{Error, Result};

/// Largest key file we read.
pub const MAX_KEY_FILE: usize = 64 * 1024;

/// KDF section of a key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kdf {
    /// Always "argon2id".
    pub algorithm: String,
    /// Argon2 version (19 = 0x13).
    pub version: u32,
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
    /// Salt, hex.
    pub salt: String,
}

/// A key file as stored (plain JSON; only `data` is secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    /// Key file format version (1).
    pub version: u32,
    /// When it was made.
    pub created: chrono::DateTime<chrono::FixedOffset>,
    /// Who made it.
    pub hostname: String,
    /// Who made it.
    pub username: String,
    /// How the wrapping key is derived from the password.
    pub kdf: Kdf,
    /// The sealed master key, hex.
    pub data: String,
}

fn aad(p: &KdfParams, salt: &[u8]) -> Vec<u8> {
    let mut a = b"cairn key v1".to_vec();
    for v in [p.memory_kib, p.iterations, p.parallelism] {
        a.extend_from_slice(&v.to_le_bytes());
    }
    a.extend_from_slice(salt);
    a
}

impl KeyFile {
    /// Wraps `master` under `password`.
    pub fn create(master: &MasterKey, password: &[u8], params: KdfParams) -> Result<KeyFile> {
        let mut salt = [0u8; 16];
        crypto::random_bytes(&mut salt)?;
        let kek = params.derive(password, &salt)?;
        let sealed = crypto::seal_with(&kek, &aad(&params, &salt), &master.to_bytes());
        Ok(KeyFile {
            version: 1,
            created: chrono::Local::now().fixed_offset(),
            hostname: crate::util::hostname(),
            username: crate::util::username(),
            kdf: Kdf {
                algorithm: "argon2id".into(),
                version: 0x13,
                memory_kib: params.memory_kib,
                iterations: params.iterations,
                parallelism: params.parallelism,
                salt: hex::encode(salt),
            },
            data: hex::encode(sealed),
        })
    }

    /// Parses a stored key file, bounding every field before use.
    pub fn parse(bytes: &[u8]) -> Result<KeyFile> {
        if bytes.len() > MAX_KEY_FILE {
            return Err(Error::corrupt("key file is larger than 64 KiB"));
        }
        let k: KeyFile = serde_json::from_slice(bytes).map_err(|e| Error::corrupt(format!("key file: {e}")))?;
        if k.version != 1 || k.kdf.algorithm != "argon2id" || k.kdf.version != 0x13 {
            return Err(Error::Unsupported(format!(
                "key file version {} / KDF {} v{} is not supported",
                k.version, k.kdf.algorithm, k.kdf.version
            )));
        }
        Ok(k)
    }

    /// The KDF parameters.
    pub fn params(&self) -> KdfParams {
        KdfParams {
            memory_kib: self.kdf.memory_kib,
            iterations: self.kdf.iterations,
            parallelism: self.kdf.parallelism,
        }
    }

    /// Checks the salt and the KDF parameters against their bounds (format section
    /// 5.2) without running the KDF; returns the decoded salt.
    pub fn validate(&self) -> Result<Vec<u8>> {
        let salt = hex::decode(&self.kdf.salt).map_err(|_| Error::corrupt("key file salt is not hex"))?;
        if !(16..=64).contains(&salt.len()) {
            return Err(Error::corrupt("key file salt has a bad length"));
        }
        self.params().validate()?;
        Ok(salt)
    }

    /// Unwraps the master key. `Ok(None)` means the password does not fit this key.
    pub fn open(&self, password: &[u8]) -> Result<Option<MasterKey>> {
        let salt = self.validate()?;
        let params = self.params();
        let sealed = hex::decode(&self.data).map_err(|_| Error::corrupt("key file data is not hex"))?;
        let kek = params.derive(password, &salt)?;
        match crypto::open_with(&kek, &aad(&params, &salt), &sealed) {
            Ok(plain) => MasterKey::from_bytes(&plain).map(Some),
            Err(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_and_tampered_cost() {
        let m = MasterKey::random().unwrap();
        let p = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };
        let k = KeyFile::create(&m, b"secret", p).unwrap();
        let bytes = serde_json::to_vec(&k).unwrap();
        let k = KeyFile::parse(&bytes).unwrap();
        assert_eq!(k.open(b"secret").unwrap().unwrap().blob_id(b"x"), m.blob_id(b"x"));
        assert!(k.open(b"wrong").unwrap().is_none());
        // Lowering the cost in the file must not give a key that opens.
        let mut t = k.clone();
        t.kdf.memory_kib = 32;
        assert!(t.open(b"secret").unwrap().is_none());
        let mut huge = k.clone();
        huge.kdf.memory_kib = u32::MAX;
        assert!(huge.open(b"secret").is_err());
        assert!(KeyFile::parse(b"{").is_err());
    }
}
