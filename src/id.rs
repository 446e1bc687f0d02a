//! 32-byte identifiers (blob IDs and file names), hex conversion and prefix lookup.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// A 32-byte identifier: a keyed BLAKE3 hash for blobs, a plain BLAKE3 hash for files.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// The unkeyed BLAKE3 hash of `data` (names of self-naming files).
    pub fn hash(data: &[u8]) -> Id {
        Id(*blake3::hash(data).as_bytes())
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Id> {
        let mut out = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut out).is_err() {
            return Err(Error::InvalidArgument(format!("not a valid ID: {s:?}")));
        }
        Ok(Id(out))
    }

    /// Whether `s` is a well-formed ID (64 lowercase hex characters).
    pub fn is_valid_name(s: &str) -> bool {
        s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex characters, as shown in tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Id::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Finds the one ID in `ids` that starts with `prefix` (hex), for user-typed short IDs.
pub fn find_by_prefix<'a>(ids: impl IntoIterator<Item = &'a Id>, prefix: &str, what: &str) -> Result<Id> {
    let prefix = prefix.to_ascii_lowercase();
    let mut found = None;
    for id in ids {
        if id.to_hex().starts_with(&prefix) {
            if found.is_some_and(|f| f != *id) {
                return Err(Error::NotFound(format!("{what} prefix {prefix:?} is ambiguous")));
            }
            found = Some(*id);
        }
    }
    found.ok_or_else(|| Error::NotFound(format!("no {what} matches {prefix:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_prefix() {
        let a = Id::hash(b"a");
        let b = Id::hash(b"b");
        assert_eq!(Id::from_hex(&a.to_hex()).unwrap(), a);
        assert!(Id::from_hex("zz").is_err());
        assert!(Id::is_valid_name(&a.to_hex()));
        assert!(!Id::is_valid_name(&a.to_hex().to_uppercase()));
        assert_eq!(find_by_prefix([&a, &b], &a.short(), "snapshot").unwrap(), a);
        assert!(find_by_prefix([&a, &b], "", "snapshot").is_err());
        assert!(find_by_prefix([&a, &b], "xyz", "snapshot").is_err());
    }
}
