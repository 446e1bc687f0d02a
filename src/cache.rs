//! A local cache of a remote repository's index files, snapshots and tree packs,
//! so that a run does not download them again.
//!
//! Everything cached is stored exactly as in the repository (encrypted) under its
//! repository name, which is the BLAKE3 hash of its bytes: a cached file is used
//! only if its content still hashes to its name, and is deleted otherwise (then
//! fetched again). Files that are gone from the repository are dropped from the
//! cache when the repository is next listed. Writes go to a temporary name and
//! are renamed into place; any cache error only means a cache miss.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::backend::{FileKind, Handle};
use crate::id::Id;

/// The cache of one repository: `BASE/<repository ID>/`.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

/// The default base folder: `$XDG_CACHE_HOME/cairn` or `~/.cache/cairn`.
pub fn default_base() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from);
    xdg.or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))
        .map(|b| b.join("cairn"))
}

const TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by cairn.\n\
# For information about cache directory tags see https://bford.info/cachedir/\n";

/// The cache folder of repository `repo_id` below `base`.
pub fn dir_of(base: &Path, repo_id: &Id) -> PathBuf {
    base.join(repo_id.to_hex())
}

/// Creates a repository's cache folder `dir` (mode 0700: only the user reads
/// it) and the cache directory tag beside it.
pub fn prepare(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    if let Some(base) = dir.parent() {
        let tag = base.join("CACHEDIR.TAG");
        if !tag.exists() {
            fs::write(&tag, TAG)?;
        }
    }
    Ok(())
}

impl Cache {
    /// Opens (creating it if needed) the cache of repository `repo_id` below `base`.
    pub fn open(base: &Path, repo_id: &Id) -> std::io::Result<Cache> {
        let dir = dir_of(base, repo_id);
        prepare(&dir)?;
        Ok(Cache { dir })
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, h: &Handle) -> PathBuf {
        self.dir.join(h.path())
    }

    /// A cached file whose content still matches its name.
    pub fn get(&self, h: &Handle) -> Option<Bytes> {
        let p = self.path(h);
        let data = fs::read(&p).ok()?;
        if Id::hash(&data).to_hex() == h.name {
            Some(Bytes::from(data))
        } else {
            let _ = fs::remove_file(&p);
            None
        }
    }

    /// Stores a file read from the repository (best effort).
    pub fn put(&self, h: &Handle, data: &[u8]) {
        let p = self.path(h);
        let Some(dir) = p.parent() else { return };
        let mut rnd = [0u8; 8];
        if getrandom::fill(&mut rnd).is_err() {
            return;
        }
        let tmp = dir.join(format!(".tmp-{}", hex::encode(rnd)));
        let create = |p: &Path| {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(p)
        };
        let ok = fs::create_dir_all(dir).is_ok()
            && create(&tmp).and_then(|mut f| f.write_all(data)).is_ok()
            && fs::rename(&tmp, &p).is_ok();
        if !ok {
            let _ = fs::remove_file(&tmp);
        }
    }

    /// Drops cached files of `kind` whose names are not in `live`.
    pub fn retain(&self, kind: FileKind, live: &HashSet<String>) {
        let base = self.dir.join(kind.dir());
        let dirs: Vec<PathBuf> = if kind == FileKind::Pack {
            fs::read_dir(&base).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default()
        } else {
            vec![base]
        };
        for d in dirs {
            let Ok(entries) = fs::read_dir(&d) else { continue };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !live.contains(&name) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_only_matching_content_and_drops_the_rest() {
        let base = tempfile::tempdir().unwrap();
        let c = Cache::open(base.path(), &Id::hash(b"repo")).unwrap();
        assert!(base.path().join("CACHEDIR.TAG").exists());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(c.dir()).unwrap().permissions().mode() & 0o777, 0o700);
        let data = b"sealed index bytes";
        let h = Handle::id(FileKind::Index, &Id::hash(data));
        assert!(c.get(&h).is_none());
        c.put(&h, data);
        assert_eq!(c.get(&h).unwrap().as_ref(), data);
        assert_eq!(fs::metadata(c.path(&h)).unwrap().permissions().mode() & 0o777, 0o600);
        // A damaged cached file is not served, and is removed.
        fs::write(c.path(&h), b"damaged").unwrap();
        assert!(c.get(&h).is_none());
        assert!(!c.path(&h).exists());
        // Files no longer in the repository go.
        c.put(&h, data);
        let p = Handle::id(FileKind::Pack, &Id::hash(b"pack"));
        c.put(&p, b"pack");
        c.retain(FileKind::Index, &HashSet::new());
        c.retain(FileKind::Pack, &[p.name.clone()].into_iter().collect());
        assert!(c.get(&h).is_none());
        assert!(c.get(&p).is_some());
    }
}
