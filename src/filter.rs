//! Include and exclude patterns (globs) for backup and restore.

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// Glob patterns matched against absolute paths. A pattern without `/` matches a
/// name at any depth; one with `/` matches the whole path (a relative one at any
/// depth) and everything below it; a trailing `/` limits a pattern to directories.
pub struct PathFilter {
    any: Globs,
    dirs_only: Globs,
    empty: bool,
}

/// Patterns split by what they are matched against.
struct Globs {
    /// Matched against the whole path.
    full: GlobSet,
    /// Matched against the last component.
    base: GlobSet,
}

impl Globs {
    fn matches(&self, path: &Path) -> bool {
        path.file_name().is_some_and(|n| self.base.is_match(n)) || self.full.is_match(path)
    }
}

fn glob(pattern: &str, s: &str) -> Result<globset::Glob> {
    GlobBuilder::new(s)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("pattern {pattern:?}: {e}")))
}

impl PathFilter {
    /// Compiles the patterns.
    pub fn new(patterns: &[String]) -> Result<PathFilter> {
        let mut sets = [(GlobSetBuilder::new(), GlobSetBuilder::new()), (GlobSetBuilder::new(), GlobSetBuilder::new())];
        for raw in patterns {
            let dir_only = raw.len() > 1 && raw.ends_with('/');
            let p = if dir_only { raw.trim_end_matches('/') } else { raw.as_str() };
            let (full, base) = &mut sets[usize::from(dir_only)];
            if p.contains('/') {
                let anchored = p.starts_with('/');
                full.add(glob(raw, p)?);
                if !anchored {
                    full.add(glob(raw, &format!("**/{p}"))?);
                }
                if !dir_only {
                    // What lies below a matching directory matches too.
                    full.add(glob(raw, &format!("{}{p}/**", if anchored { "" } else { "**/" }))?);
                }
            } else {
                base.add(glob(raw, p)?);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| Error::InvalidArgument(format!("patterns: {e}")));
        let [(full, base), (dfull, dbase)] = sets;
        Ok(PathFilter {
            any: Globs { full: build(full)?, base: build(base)? },
            dirs_only: Globs { full: build(dfull)?, base: build(dbase)? },
            empty: patterns.is_empty(),
        })
    }

    /// Whether there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// Whether `path` (absolute; a directory if `is_dir`) matches any pattern.
    pub fn matches(&self, path: &Path, is_dir: bool) -> bool {
        self.any.matches(path) || (is_dir && self.dirs_only.matches(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_paths_and_directories() {
        let f = PathFilter::new(&["*.tmp".into(), "cache/".into(), "/abs/skip".into(), "rel/x".into()]).unwrap();
        assert!(f.matches(Path::new("/x/y/a.tmp"), false));
        assert!(!f.matches(Path::new("/x/y/a.tmpx"), false));
        assert!(f.matches(Path::new("/x/cache"), true));
        assert!(!f.matches(Path::new("/x/cache"), false), "a trailing / only matches directories");
        assert!(f.matches(Path::new("/abs/skip"), false));
        assert!(f.matches(Path::new("/abs/skip/deeper"), false));
        assert!(!f.matches(Path::new("/other/abs/skip"), false));
        assert!(f.matches(Path::new("/a/b/rel/x"), false));
        assert!(f.matches(Path::new("/a/b/rel/x/y"), false));
        assert!(!f.matches(Path::new("/a/b/rel/xy"), false));
        assert!(PathFilter::new(&[]).unwrap().is_empty());
        assert!(PathFilter::new(&["[".into()]).is_err());
    }
}
