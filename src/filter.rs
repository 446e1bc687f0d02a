//! Include and exclude patterns (globs) for backup and restore.

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// Glob patterns matched against absolute paths: a pattern without `/` matches a
/// file name at any depth; one with `/` matches the whole path (a relative one at
/// any depth), and everything below a matching directory.
pub struct PathFilter {
    full: GlobSet,
    base: GlobSet,
    empty: bool,
}

impl PathFilter {
    /// Compiles the patterns.
    pub fn new(patterns: &[String]) -> Result<PathFilter> {
        let (mut full, mut base) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        for p in patterns {
            let p = p.trim_end_matches('/');
            let glob = |s: &str| {
                GlobBuilder::new(s)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()
                    .map_err(|e| Error::InvalidArgument(format!("pattern {p:?}: {e}")))
            };
            if p.contains('/') {
                full.add(glob(p)?);
                if !p.starts_with('/') {
                    full.add(glob(&format!("**/{p}"))?);
                }
                // A pattern matching a directory excludes what is below it too.
                full.add(glob(&format!("{}{p}/**", if p.starts_with('/') { "" } else { "**/" }))?);
            } else {
                base.add(glob(p)?);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| Error::InvalidArgument(format!("patterns: {e}")));
        Ok(PathFilter { full: build(full)?, base: build(base)?, empty: patterns.is_empty() })
    }

    /// Whether there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// Whether `path` (absolute) matches any pattern.
    pub fn matches(&self, path: &Path) -> bool {
        path.file_name().is_some_and(|n| self.base.is_match(n)) || self.full.is_match(path)
    }
}
