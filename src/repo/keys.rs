//! Managing the repository's key files (passwords) and rewriting snapshot
//! manifests (tags): the library side of `cairn key` and `cairn tag`.
//!
//! Both follow the repository's one rule for changes: files are never modified,
//! so a change writes a new file first and deletes the old one afterwards. A crash
//! in between leaves one file too many (an extra key, a duplicate snapshot that
//! differs only in its tags), never one too few.

use super::Repository;
use super::keyfile::{self, KeyFile};
use super::snapshot::Snapshot;
use crate::backend::{BackendError, FileKind, Handle};
use crate::crypto::KdfParams;
use crate::error::{Error, Result};
use crate::id::{self, Id};

/// One key file as listed by [`Repository::keys`].
#[derive(Debug)]
pub struct KeyInfo {
    /// Its ID (file name).
    pub id: Id,
    /// Whether it is the key the repository was opened with.
    pub current: bool,
    /// The parsed file, or why it cannot be used (damaged, unsupported, unreadable).
    pub file: Result<KeyFile>,
}

/// How [`Repository::retag_snapshot`] changes a snapshot's tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagChange {
    /// Replace all tags with these (an empty list removes every tag).
    Set(Vec<String>),
    /// Add these tags (those not there yet, in this order) and remove those.
    Modify {
        /// Tags to add.
        add: Vec<String>,
        /// Tags to remove.
        remove: Vec<String>,
    },
}

impl TagChange {
    /// Builds a change from the three kinds of request; `set` is `Some` when
    /// setting was asked for (even with an empty list). Refuses `set` together
    /// with `add`/`remove`, a request that changes nothing, empty tag names and a
    /// tag both added and removed.
    pub fn new(set: Option<Vec<String>>, add: Vec<String>, remove: Vec<String>) -> Result<TagChange> {
        let bad = |msg: &str| Err(Error::InvalidArgument(msg.into()));
        if [&add, &remove].into_iter().chain(set.as_ref()).flatten().any(|t| t.is_empty()) {
            return bad("a tag cannot be empty");
        }
        if let Some(set) = set {
            if !add.is_empty() || !remove.is_empty() {
                return bad("--set cannot be combined with --add or --remove");
            }
            return Ok(TagChange::Set(dedup(set)));
        }
        if add.is_empty() && remove.is_empty() {
            return bad("no tags to change: give --add, --remove or --set");
        }
        if let Some(t) = add.iter().find(|t| remove.contains(t)) {
            return Err(Error::InvalidArgument(format!("tag {t:?} is both added and removed")));
        }
        Ok(TagChange::Modify { add: dedup(add), remove })
    }

    /// The tags that `tags` become.
    pub fn apply(&self, tags: &[String]) -> Vec<String> {
        match self {
            TagChange::Set(set) => set.clone(),
            TagChange::Modify { add, remove } => {
                let mut out = tags.to_vec();
                for t in add {
                    if !out.contains(t) {
                        out.push(t.clone());
                    }
                }
                out.retain(|t| !remove.contains(t));
                out
            }
        }
    }
}

/// `v` without repeated elements, first occurrences kept in order.
fn dedup(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(v.len());
    for t in v {
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

impl Repository {
    /// Reads and checks one key file: size, name hash, JSON, versions and bounds
    /// (but runs no KDF).
    fn read_key_file(&self, id: &Id, size: u64) -> Result<KeyFile> {
        if size > keyfile::MAX_KEY_FILE as u64 {
            return Err(Error::corrupt("key file is larger than 64 KiB"));
        }
        let bytes = self.block_on(self.backend.read(&Handle::id(FileKind::Key, id), None))?;
        if Id::hash(&bytes) != *id {
            return Err(Error::corrupt("content does not match its name (damaged or truncated)"));
        }
        let kf = KeyFile::parse(&bytes)?;
        kf.validate()?;
        Ok(kf)
    }

    /// Every key file, oldest first. A key file that cannot be read or used is
    /// listed with its error rather than failing the whole listing.
    pub fn keys(&self) -> Result<Vec<KeyInfo>> {
        let files = self.block_on(self.backend.list(FileKind::Key))?;
        let mut out = Vec::with_capacity(files.len());
        for f in files {
            let id = Id::from_hex(&f.name)?;
            let file = match self.read_key_file(&id, f.size) {
                // Removed since the listing (another `key remove`): not a key any more.
                Err(Error::Backend(BackendError::NotFound(_))) => continue,
                r => r,
            };
            out.push(KeyInfo { id, current: self.key_id == Some(id), file });
        }
        out.sort_by(|a, b| {
            let created = |k: &KeyInfo| k.file.as_ref().ok().map(|f| f.created);
            // Damaged ones (no time) last.
            created(a).is_none().cmp(&created(b).is_none()).then(created(a).cmp(&created(b))).then(a.id.cmp(&b.id))
        });
        Ok(out)
    }

    /// Resolves a key file ID or unique prefix.
    pub fn find_key(&self, prefix: &str) -> Result<Id> {
        let ids = self.list_ids(FileKind::Key)?;
        id::find_by_prefix(&ids, prefix, "key")
    }

    /// Removes the key file `id`, so that its password no longer opens the
    /// repository. Refuses the key the repository was opened with, and a removal
    /// that would leave no usable (undamaged) key file.
    pub fn remove_key(&self, id: &Id) -> Result<()> {
        let keys = self.keys()?;
        if !keys.iter().any(|k| k.id == *id) {
            return Err(Error::NotFound(format!("no key {}", id.short())));
        }
        if keys.len() == 1 {
            return Err(Error::InvalidArgument(
                "cannot remove the only key: the repository could not be opened any more".into(),
            ));
        }
        if self.key_id == Some(*id) {
            return Err(Error::InvalidArgument(
                "cannot remove the key in use; open the repository with another password to remove it".into(),
            ));
        }
        if !keys.iter().any(|k| k.id != *id && k.file.is_ok()) {
            return Err(Error::InvalidArgument(
                "cannot remove the last usable key: the other key files are damaged".into(),
            ));
        }
        self.remove_key_file(id)
    }

    fn remove_key_file(&self, id: &Id) -> Result<()> {
        match self.block_on(self.backend.remove(&Handle::id(FileKind::Key, id))) {
            Ok(()) | Err(BackendError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The KDF parameters of the key in use, if it is known and readable.
    pub fn current_kdf(&self) -> Option<KdfParams> {
        let id = self.key_id?;
        let files = self.block_on(self.backend.list(FileKind::Key)).ok()?;
        let size = files.iter().find(|f| f.name == id.to_hex())?.size;
        self.read_key_file(&id, size).ok().map(|k| k.params())
    }

    /// Changes the password of the key in use: adds a key file for
    /// `new_password`, then removes the one the repository was opened with (in
    /// that order, so there is never a moment without a usable key). Returns the
    /// new and the removed key's IDs; afterwards the new key is the one in use.
    pub fn change_password(&mut self, new_password: &[u8], params: KdfParams) -> Result<(Id, Id)> {
        let old = self.key_id.ok_or_else(|| {
            Error::InvalidArgument("the key in use is not known (the repository was not opened with a password)".into())
        })?;
        let new = self.add_key(new_password, params)?;
        self.key_id = Some(new);
        self.remove_key_file(&old).map_err(|e| {
            Error::Incomplete(format!(
                "added key {} for the new password, but could not remove the old key {} (remove it with `cairn key remove`): {e}",
                new.short(),
                old.short()
            ))
        })?;
        Ok((new, old))
    }

    /// Replaces the snapshot file `old_id` (holding `old`) with `new`: writes
    /// `new` as a new snapshot file first, then deletes the old file. `new.original`
    /// is set to the ID the snapshot was first saved under, so its history stays
    /// traceable. Returns the new ID and the manifest as saved.
    pub fn rewrite_snapshot(&self, old_id: &Id, old: &Snapshot, mut new: Snapshot) -> Result<(Id, Snapshot)> {
        new.original = Some(old.original.unwrap_or(*old_id));
        let new_id = self.save_json(FileKind::Snapshot, &new)?;
        if new_id != *old_id {
            match self.block_on(self.backend.remove(&Handle::id(FileKind::Snapshot, old_id))) {
                // Already gone (e.g. a concurrent rewrite): the new file stands.
                Ok(()) | Err(BackendError::NotFound(_)) => {}
                Err(e) => {
                    return Err(Error::Incomplete(format!(
                        "saved snapshot {} but could not delete the old file {} (it remains as a duplicate): {e}",
                        new_id.short(),
                        old_id.short()
                    )));
                }
            }
        }
        Ok((new_id, new))
    }

    /// Applies `change` to the tags of snapshot `id` (holding `snap`). Returns the
    /// new ID and manifest, or `None` when the tags stay as they are (the file is
    /// then left alone).
    pub fn retag_snapshot(&self, id: &Id, snap: &Snapshot, change: &TagChange) -> Result<Option<(Id, Snapshot)>> {
        let tags = change.apply(&snap.tags);
        if tags == snap.tags {
            return Ok(None);
        }
        let new = Snapshot { tags, ..snap.clone() };
        self.rewrite_snapshot(id, snap, new).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::DynBackend;
    use crate::backend::mem::MemBackend;
    use crate::repo::InitOptions;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn tag_change_rules() {
        assert!(TagChange::new(Some(s(&["a"])), s(&["b"]), vec![]).is_err());
        assert!(TagChange::new(Some(s(&["a"])), vec![], s(&["b"])).is_err());
        assert!(TagChange::new(None, vec![], vec![]).is_err());
        assert!(TagChange::new(None, s(&["a"]), s(&["a"])).is_err());
        assert!(TagChange::new(None, s(&[""]), vec![]).is_err());
        let add = TagChange::new(None, s(&["b", "c", "b"]), s(&["x"])).unwrap();
        assert_eq!(add.apply(&s(&["x", "a", "b"])), s(&["a", "b", "c"]));
        let set = TagChange::new(Some(s(&["z", "z", "y"])), vec![], vec![]).unwrap();
        assert_eq!(set.apply(&s(&["a"])), s(&["z", "y"]));
        assert_eq!(TagChange::new(Some(vec![]), vec![], vec![]).unwrap().apply(&s(&["a"])), Vec::<String>::new());
    }

    #[test]
    fn keys_list_remove_and_passwd() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let b: DynBackend = Arc::new(MemBackend::new());
        let kdf = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };
        let opts = InitOptions { kdf, ..InitOptions::default() };
        Repository::init(Arc::clone(&b), rt.handle().clone(), b"one", &opts).unwrap();
        let mut repo = Repository::open(Arc::clone(&b), rt.handle().clone(), b"one").unwrap();
        let first = repo.key_id().unwrap();
        assert!(matches!(repo.remove_key(&first), Err(Error::InvalidArgument(m)) if m.contains("only key")));
        let second = repo.add_key(b"two", kdf).unwrap();
        let keys = repo.keys().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.iter().filter(|k| k.current).map(|k| k.id).collect::<Vec<_>>(), vec![first]);
        assert!(matches!(repo.remove_key(&first), Err(Error::InvalidArgument(m)) if m.contains("key in use")));
        assert_eq!(repo.current_kdf(), Some(kdf));

        // A damaged key file is listed with its error, not fatal.
        let junk = b"not json".to_vec();
        let junk_id = Id::hash(&junk);
        rt.block_on(b.write(&Handle::id(FileKind::Key, &junk_id), junk.into())).unwrap();
        let keys = repo.keys().unwrap();
        assert_eq!(keys.len(), 3);
        assert_eq!(keys.last().unwrap().id, junk_id);
        assert!(keys.last().unwrap().file.is_err());

        repo.remove_key(&second).unwrap();
        assert!(matches!(Repository::open(Arc::clone(&b), rt.handle().clone(), b"two"), Err(Error::WrongPassword)));
        let (new, old) = repo.change_password(b"three", kdf).unwrap();
        assert_eq!((old, repo.key_id()), (first, Some(new)));
        assert!(matches!(Repository::open(Arc::clone(&b), rt.handle().clone(), b"one"), Err(Error::WrongPassword)));
        let again = Repository::open(Arc::clone(&b), rt.handle().clone(), b"three").unwrap();
        assert_eq!(again.key_id(), Some(new));
        // The new key in use and a damaged file: the damaged one may go, the good one not.
        assert!(matches!(again.remove_key(&new), Err(Error::InvalidArgument(_))));
        again.remove_key(&junk_id).unwrap();
        assert_eq!(again.keys().unwrap().len(), 1);
    }
}
