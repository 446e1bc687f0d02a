//! Snapshot manifests: one point in time, pointing at a root tree.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::id::Id;

/// What a backup did; restic's field names where they exist.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    /// When the backup started.
    pub backup_start: Option<DateTime<FixedOffset>>,
    /// When it finished.
    pub backup_end: Option<DateTime<FixedOffset>>,
    /// Seconds it took.
    pub duration_seconds: f64,
    /// Files not in the parent snapshot.
    pub files_new: u64,
    /// Files whose metadata or content changed.
    pub files_changed: u64,
    /// Files taken from the parent without reading.
    pub files_unmodified: u64,
    /// Directories not in the parent.
    pub dirs_new: u64,
    /// Directories whose tree changed.
    pub dirs_changed: u64,
    /// Directories with an identical tree.
    pub dirs_unmodified: u64,
    /// New data blobs written.
    pub data_blobs: u64,
    /// New tree blobs written.
    pub tree_blobs: u64,
    /// Plaintext bytes of new blobs.
    pub data_added: u64,
    /// Stored bytes of new blobs (compressed and encrypted).
    pub data_added_packed: u64,
    /// Files in the snapshot.
    pub total_files_processed: u64,
    /// Bytes of all files in the snapshot.
    pub total_bytes_processed: u64,
    /// Files whose content was read.
    pub files_read: u64,
    /// Bytes of content read.
    pub bytes_read: u64,
    /// Sources that could not be read (skipped).
    pub errors: u64,
}

/// A snapshot manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The point in time it records.
    pub time: DateTime<FixedOffset>,
    /// Root tree blob.
    pub tree: Id,
    /// Absolute paths backed up.
    pub paths: Vec<String>,
    /// Host it was taken on.
    pub hostname: String,
    /// User who took it.
    pub username: String,
    /// Their uid.
    #[serde(default)]
    pub uid: u32,
    /// Their gid.
    #[serde(default)]
    pub gid: u32,
    /// Labels.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The snapshot used to skip unchanged files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    /// Exclude patterns in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    /// Writer version.
    #[serde(default)]
    pub program_version: String,
    /// Statistics.
    #[serde(default)]
    pub summary: Summary,
    /// The ID this snapshot was first saved under, when it is a rewritten copy
    /// (e.g. by `cairn tag`) of an earlier snapshot file; absent in an original.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<Id>,
    /// Saved by an interrupted backup: the files it had stored when it stopped.
    /// The next backup of the same paths on the same host continues from it and
    /// removes it; `latest` and retention policies pass it over.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

impl Snapshot {
    /// Whether it carries every tag in `tags`.
    pub fn has_tags(&self, tags: &[String]) -> bool {
        tags.iter().all(|t| self.tags.contains(t))
    }

    /// Paths, sorted, for grouping by path set.
    pub fn sorted_paths(&self) -> Vec<String> {
        let mut p = self.paths.clone();
        p.sort();
        p
    }
}
