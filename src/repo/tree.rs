//! Tree blobs: one per directory, entries sorted by raw name bytes, serialized as
//! deterministic JSON so identical directories deduplicate.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::id::Id;

/// Raw bytes (names, link targets, xattrs): a JSON string when valid UTF-8,
/// otherwise an array of byte values, so nothing is lost.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteStr(pub Vec<u8>);

impl fmt::Debug for ByteStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl Serialize for ByteStr {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => self.0.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ByteStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ByteStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<ByteStr, E> {
                Ok(ByteStr(v.as_bytes().to_vec()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<ByteStr, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(ByteStr(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A time stamp: seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Timestamp(pub i64, pub u32);

/// The type of a tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device.
    Chardev,
    /// A block device.
    Blockdev,
}

/// An extended attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    /// Its name, e.g. `user.comment`.
    pub name: ByteStr,
    /// Its value.
    pub value: ByteStr,
}

/// One directory entry with all its metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// One path component.
    pub name: ByteStr,
    /// What it is.
    #[serde(rename = "type")]
    pub node_type: NodeType,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Owner name, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Group name, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Modification time.
    pub mtime: Timestamp,
    /// Access time.
    pub atime: Timestamp,
    /// Status change time.
    pub ctime: Timestamp,
    /// Size in bytes (files).
    #[serde(default)]
    pub size: u64,
    /// Inode number.
    #[serde(default)]
    pub inode: u64,
    /// Hard link count.
    #[serde(default)]
    pub links: u64,
    /// Device of the containing file system.
    #[serde(default)]
    pub device: u64,
    /// Device number (character and block devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
    /// Symlink target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ByteStr>,
    /// Extended attributes, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
    /// Content blobs in order (files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Vec<Id>>,
    /// Tree blob (directories).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
}

impl Node {
    /// The name as an OS string.
    pub fn os_name(&self) -> &std::ffi::OsStr {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(&self.name.0)
    }

    /// Whether the name is a safe single path component.
    pub fn has_valid_name(&self) -> bool {
        let n = &self.name.0;
        !n.is_empty() && n != b"." && n != b".." && !n.contains(&b'/') && !n.contains(&0)
    }
}

/// A directory listing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    /// Entries sorted by name bytes, unique.
    pub entries: Vec<Node>,
}

impl Tree {
    /// Sorts entries by name (the canonical order).
    pub fn sort(&mut self) {
        self.entries.sort_by(|a, b| a.name.0.cmp(&b.name.0));
    }

    /// Canonical JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("trees always serialize")
    }

    /// Parses and validates a tree blob: safe names, sorted and unique, each type
    /// carrying the fields it needs.
    pub fn from_bytes(b: &[u8]) -> Result<Tree> {
        let t: Tree = serde_json::from_slice(b).map_err(|e| Error::corrupt(format!("tree does not parse: {e}")))?;
        for (i, n) in t.entries.iter().enumerate() {
            if !n.has_valid_name() {
                return Err(Error::corrupt(format!("tree entry with unsafe name {:?}", n.name)));
            }
            if i > 0 && t.entries[i - 1].name.0 >= n.name.0 {
                return Err(Error::corrupt("tree entries are not sorted and unique"));
            }
            let ok = match n.node_type {
                NodeType::File => n.content.is_some(),
                NodeType::Dir => n.subtree.is_some(),
                NodeType::Symlink => n.target.is_some(),
                _ => true,
            };
            if !ok {
                return Err(Error::corrupt(format!("tree entry {:?} lacks the fields of its type", n.name)));
            }
        }
        Ok(t)
    }

    /// Finds an entry by name.
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.entries.binary_search_by(|n| n.name.0.as_slice().cmp(name)).ok().map(|i| &self.entries[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &[u8]) -> Node {
        Node {
            name: ByteStr(name.to_vec()),
            node_type: NodeType::File,
            mode: 0o644,
            uid: 1,
            gid: 2,
            user: None,
            group: None,
            mtime: Timestamp(-5, 7),
            atime: Timestamp::default(),
            ctime: Timestamp::default(),
            size: 0,
            inode: 0,
            links: 1,
            device: 0,
            rdev: None,
            target: None,
            xattrs: vec![Xattr { name: ByteStr(b"user.x".to_vec()), value: ByteStr(vec![0xff, 0]) }],
            content: Some(vec![]),
            subtree: None,
        }
    }

    #[test]
    fn non_utf8_round_trip_and_order() {
        let mut t = Tree { entries: vec![node(b"z\n"), node(&[0xff, 0xfe]), node(b"a")] };
        t.sort();
        let b = t.to_bytes();
        let back = Tree::from_bytes(&b).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.to_bytes(), b, "serialization is deterministic");
        assert!(back.find(&[0xff, 0xfe]).is_some());
        let s = String::from_utf8(b).unwrap();
        assert!(s.contains("[255,254]") && s.contains("\"z\\n\""), "{s}");
    }

    #[test]
    fn hostile_names_rejected() {
        for bad in [&b".."[..], b".", b"a/b", b"", b"a\0"] {
            let t = Tree { entries: vec![node(bad)] };
            assert!(Tree::from_bytes(&t.to_bytes()).is_err(), "{bad:?}");
        }
        let unsorted = Tree { entries: vec![node(b"b"), node(b"a")] };
        assert!(Tree::from_bytes(&unsorted.to_bytes()).is_err());
    }
}
