//! The repository config: format version, ID, chunker sizes, compression, pack size.

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkSizes;
use crate::error::{Error, Result};
use crate::id::Id;

/// The newest repository format this version reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The decrypted `config` file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Config {
    /// Repository format version.
    pub version: u32,
    /// Random repository ID.
    pub id: Id,
    /// FastCDC limits.
    pub chunker: ChunkSizes,
    /// Default zstd level for new blobs (0 = off).
    pub compression: i32,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Pad every new blob's stored size (Padmé), so that the storage cannot
    /// learn exact chunk lengths from pack sizes. Off unless `init --pad`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pad: bool,
}

impl Config {
    /// Smallest allowed target pack size.
    pub const MIN_PACK: u32 = 1 << 20;
    /// Largest allowed target pack size.
    pub const MAX_PACK: u32 = 1 << 30;

    /// Rejects versions we do not know and values out of range.
    pub fn validate(&self) -> Result<()> {
        if self.version > FORMAT_VERSION {
            return Err(Error::Unsupported(format!(
                "repository format version {} is newer than this cairn understands ({FORMAT_VERSION}); upgrade cairn",
                self.version
            )));
        }
        if self.version == 0 {
            return Err(Error::corrupt("config has format version 0"));
        }
        self.chunker.validate()?;
        if !(0..=22).contains(&self.compression) {
            return Err(Error::InvalidArgument(format!(
                "compression level {} is out of range 0..=22",
                self.compression
            )));
        }
        if !(Self::MIN_PACK..=Self::MAX_PACK).contains(&self.pack_size) {
            return Err(Error::InvalidArgument(format!("pack size {} is out of range 1 MiB..=1 GiB", self.pack_size)));
        }
        Ok(())
    }
}

/// Parses `off|fastest|default|max|N` into a zstd level (0 = off).
pub fn parse_compression(s: &str) -> Result<i32> {
    let level = match s {
        "off" | "none" => 0,
        "fastest" => 1,
        "auto" | "default" => 3,
        "max" => 19,
        n => n.parse::<i32>().map_err(|_| {
            Error::InvalidArgument(format!("compression {s:?}: expected off, fastest, default, max or 1..22"))
        })?,
    };
    if !(0..=22).contains(&level) {
        return Err(Error::InvalidArgument(format!("compression level {level} is out of range 1..=22")));
    }
    Ok(level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_names_and_versions() {
        assert_eq!(parse_compression("off").unwrap(), 0);
        assert_eq!(parse_compression("default").unwrap(), 3);
        assert_eq!(parse_compression("7").unwrap(), 7);
        assert!(parse_compression("99").is_err());
        assert!(parse_compression("fast").is_err());
        let mut c = Config {
            version: 1,
            id: Id::default(),
            chunker: ChunkSizes::default(),
            compression: 3,
            pack_size: 16 << 20,
            pad: false,
        };
        assert!(c.validate().is_ok());
        c.version = 2;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("newer"), "{e}");
    }
}
