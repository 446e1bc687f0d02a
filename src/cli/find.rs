//! `cairn find`: entries whose name or path matches a glob, across snapshots.
//!
//! Each snapshot's tree is walked from the root. A tree seen before (same ID, and
//! for path patterns the same place) is known to hold matches or not, so a subtree
//! without matches is skipped at once: searching many snapshots of a mostly
//! unchanged tree costs little more than searching one.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cairn::repo::snapshot::Snapshot;
use cairn::repo::tree::{NodeType, Timestamp};
use cairn::{Id, Repository};
use chrono::{DateTime, FixedOffset, Local, NaiveDate, NaiveDateTime, TimeZone};
use clap::Args;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::browse::Filter;
use super::{Global, Output};

/// Arguments of `cairn find`.
#[derive(Args, Debug)]
pub struct FindArgs {
    /// Glob matched against each entry's name, or, if it contains `/`, against its
    /// full path (repeatable: any of them).
    #[arg(required = true, value_name = "PATTERN")]
    patterns: Vec<String>,
    /// Only this snapshot: ID, unique prefix or `latest` (repeatable; default: all).
    #[arg(short = 's', long = "snapshot", value_name = "SNAPSHOT")]
    snapshots: Vec<String>,
    /// Only snapshots taken at or before TIME: RFC 3339, `YYYY-MM-DD HH:MM[:SS]`
    /// (local time) or a date `YYYY-MM-DD` (up to the end of that day).
    #[arg(long, value_name = "TIME")]
    newest: Option<String>,
    /// Only snapshots taken at or after TIME (same forms; a date means from the
    /// start of that day).
    #[arg(long, value_name = "TIME")]
    oldest: Option<String>,
    /// Match the patterns regardless of case.
    #[arg(short = 'i', long)]
    ignore_case: bool,
    #[command(flatten)]
    filter: Filter,
}

/// Compiled patterns: those without `/` match the last path component, the
/// others the whole path (a relative one at any depth); a trailing `/` limits a
/// pattern to directories. Unlike exclude patterns, a match does not extend to
/// what lies below a matching directory.
struct Matcher {
    any: [GlobSet; 2],
    dirs_only: [GlobSet; 2],
    /// Whether some pattern looks at the whole path (matches then depend on where
    /// a tree is, not only on its content).
    has_path_patterns: bool,
}

impl Matcher {
    fn new(patterns: &[String], ignore_case: bool) -> cairn::Result<Matcher> {
        let glob = |raw: &str, p: &str| {
            GlobBuilder::new(p)
                .literal_separator(true)
                .backslash_escape(true)
                .case_insensitive(ignore_case)
                .build()
                .map_err(|e| cairn::Error::InvalidArgument(format!("pattern {raw:?}: {e}")))
        };
        // [any, dirs_only] x [name, path]
        let mut sets: [[GlobSetBuilder; 2]; 2] =
            std::array::from_fn(|_| std::array::from_fn(|_| GlobSetBuilder::new()));
        let mut has_path_patterns = false;
        for raw in patterns {
            if raw.is_empty() {
                return Err(cairn::Error::InvalidArgument("an empty pattern matches nothing".into()));
            }
            let dir_only = raw.len() > 1 && raw.ends_with('/');
            let p = if dir_only { raw.trim_end_matches('/') } else { raw.as_str() };
            let b = &mut sets[usize::from(dir_only)];
            if p.contains('/') {
                has_path_patterns = true;
                b[1].add(glob(raw, p)?);
                if !p.starts_with('/') {
                    b[1].add(glob(raw, &format!("**/{p}"))?);
                }
            } else {
                b[0].add(glob(raw, p)?);
            }
        }
        let build = |b: &GlobSetBuilder| b.build().map_err(|e| cairn::Error::InvalidArgument(format!("patterns: {e}")));
        Ok(Matcher {
            any: [build(&sets[0][0])?, build(&sets[0][1])?],
            dirs_only: [build(&sets[1][0])?, build(&sets[1][1])?],
            has_path_patterns,
        })
    }

    fn matches(&self, path: &Path, name: &OsStr, is_dir: bool) -> bool {
        let hit = |s: &[GlobSet; 2]| s[0].is_match(name) || s[1].is_match(path);
        hit(&self.any) || (is_dir && hit(&self.dirs_only))
    }
}

/// One entry found.
struct Match {
    path: PathBuf,
    node_type: NodeType,
    size: u64,
    mtime: Timestamp,
    mode: u32,
}

/// Walks trees, remembering for each tree whether it holds any match.
struct Finder<'a> {
    repo: &'a Repository,
    matcher: Matcher,
    /// (tree, place for path patterns) → whether something below matches.
    seen: HashMap<(Id, Option<PathBuf>), bool>,
}

impl Finder<'_> {
    /// Appends the matches below tree `id` (at path `base`) to `out`; returns
    /// whether there were any.
    fn walk(&mut self, id: &Id, base: &Path, out: &mut Vec<Match>) -> cairn::Result<bool> {
        cairn::check_interrupted()?;
        let key = (*id, self.matcher.has_path_patterns.then(|| base.to_path_buf()));
        if self.seen.get(&key) == Some(&false) {
            return Ok(false);
        }
        let tree = self.repo.load_tree(id)?;
        let mut found = false;
        for n in &tree.entries {
            let path = base.join(n.os_name());
            let is_dir = n.node_type == NodeType::Dir;
            if self.matcher.matches(&path, n.os_name(), is_dir) {
                found = true;
                out.push(Match {
                    path: path.clone(),
                    node_type: n.node_type,
                    size: n.size,
                    mtime: n.mtime,
                    mode: n.mode,
                });
            }
            if let (true, Some(sub)) = (is_dir, n.subtree) {
                found |= self.walk(&sub, &path, out)?;
            }
        }
        self.seen.insert(key, found);
        Ok(found)
    }
}

/// A bound given to `--newest`/`--oldest`: RFC 3339, a local date and time, or a
/// date (its first or, for `end_of_day`, its last instant, local time).
pub(super) fn parse_time(flag: &str, s: &str, end_of_day: bool) -> cairn::Result<DateTime<FixedOffset>> {
    let bad = || {
        cairn::Error::InvalidArgument(format!(
            "{flag} {s:?}: expected an RFC 3339 time (2024-01-02T03:04:05+01:00), \
             a local time (2024-01-02 03:04:05) or a date (2024-01-02)"
        ))
    };
    let t = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d);
    }
    let local = |n: NaiveDateTime| Local.from_local_datetime(&n).earliest().map(|d| d.fixed_offset()).ok_or_else(bad);
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, f) {
            return local(n);
        }
    }
    let day = NaiveDate::parse_from_str(t, "%Y-%m-%d").map_err(|_| bad())?;
    if end_of_day {
        let next = day.succ_opt().ok_or_else(bad)?;
        Ok(local(next.and_hms_opt(0, 0, 0).ok_or_else(bad)?)? - chrono::Duration::nanoseconds(1))
    } else {
        local(day.and_hms_opt(0, 0, 0).ok_or_else(bad)?)
    }
}

/// The lower-case name of an entry type, as in JSON.
pub(super) fn type_name(t: NodeType) -> &'static str {
    match t {
        NodeType::File => "file",
        NodeType::Dir => "dir",
        NodeType::Symlink => "symlink",
        NodeType::Fifo => "fifo",
        NodeType::Socket => "socket",
        NodeType::Chardev => "chardev",
        NodeType::Blockdev => "blockdev",
    }
}

/// A time as `ls --json` shows it: RFC 3339 in local time with nanoseconds.
pub(super) fn rfc3339(t: Timestamp) -> String {
    DateTime::from_timestamp(t.0, t.1)
        .map(|d| d.with_timezone(&Local).to_rfc3339_opts(chrono::SecondsFormat::Nanos, false))
        .unwrap_or_else(|| format!("@{}", t.0))
}

/// A time as `ls -l` shows it: local, to the second.
pub(super) fn time_string(t: Timestamp) -> String {
    DateTime::from_timestamp(t.0, t.1)
        .map(|d| d.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| format!("@{}", t.0))
}

/// The snapshots to search: those named (or all), passing the filters, oldest first.
fn select(repo: &Repository, a: &FindArgs) -> Result<Vec<(Id, Snapshot)>> {
    let newest = a.newest.as_deref().map(|s| parse_time("--newest", s, true)).transpose()?;
    let oldest = a.oldest.as_deref().map(|s| parse_time("--oldest", s, false)).transpose()?;
    let mut list = if a.snapshots.is_empty() {
        repo.snapshots()?
    } else {
        let mut seen = HashSet::new();
        let mut v = Vec::new();
        for spec in &a.snapshots {
            let (id, s) = repo.find_snapshot(spec).with_context(|| format!("--snapshot {spec}"))?;
            if seen.insert(id) {
                v.push((id, s));
            }
        }
        v.sort_by(|x, y| x.1.time.cmp(&y.1.time).then(x.0.cmp(&y.0)));
        v
    };
    list.retain(|(_, s)| {
        a.filter.matches(s) && newest.is_none_or(|n| s.time <= n) && oldest.is_none_or(|o| s.time >= o)
    });
    Ok(list)
}

/// Runs `cairn find`: prints the matches per snapshot; exit code 0, also when
/// nothing matched ("no matches" on stderr).
pub fn run(g: &Global, out: &Output, a: FindArgs) -> Result<i32> {
    let matcher = Matcher::new(&a.patterns, a.ignore_case)?;
    let repo = g.open()?;
    let snaps = select(&repo, &a)?;
    let mut finder = Finder { repo: &repo, matcher, seen: HashMap::new() };
    let mut json = Vec::new();
    let (mut total, mut with_matches) = (0usize, 0usize);
    let mut w = std::io::stdout().lock();
    for (id, snap) in &snaps {
        let mut found = Vec::new();
        finder.walk(&snap.tree, Path::new("/"), &mut found).with_context(|| format!("snapshot {}", id.short()))?;
        if found.is_empty() {
            continue;
        }
        total += found.len();
        with_matches += 1;
        if out.json {
            let matches: Vec<_> = found
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "path": m.path.to_string_lossy(),
                        "type": type_name(m.node_type),
                        "size": m.size,
                        "mtime": rfc3339(m.mtime),
                        "mode": m.mode,
                    })
                })
                .collect();
            json.push(serde_json::json!({
                "snapshot": id.to_hex(),
                "short_id": id.short(),
                "time": snap.time,
                "hostname": snap.hostname,
                "matches": matches,
            }));
            continue;
        }
        writeln!(
            w,
            "Found {} in snapshot {} from {} on {}:",
            plural(found.len(), "match", "matches"),
            id.short(),
            snap.time.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S"),
            snap.hostname
        )?;
        for m in &found {
            let size = if m.node_type == NodeType::File { m.size.to_string() } else { "-".into() };
            writeln!(
                w,
                "  {:<8} {:>12}  {}  {}",
                type_name(m.node_type),
                size,
                time_string(m.mtime),
                m.path.display()
            )?;
        }
        writeln!(w)?;
    }
    drop(w);
    if out.json {
        out.json(&json);
    } else if total > 0 {
        out.info(format!(
            "{} in {} of {} searched",
            plural(total, "match", "matches"),
            with_matches,
            plural(snaps.len(), "snapshot", "snapshots")
        ));
    }
    if total == 0 && !out.quiet {
        eprintln!("no matches (searched {})", plural(snaps.len(), "snapshot", "snapshots"));
    }
    Ok(0)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_paths_dirs_and_case() {
        let m = Matcher::new(&["*.TXT".into(), "docs/*.md".into(), "/abs/x".into(), "cache/".into()], true).unwrap();
        let t = |p: &str, dir: bool| {
            let p = Path::new(p);
            m.matches(p, p.file_name().unwrap(), dir)
        };
        assert!(t("/a/b/notes.txt", false));
        assert!(t("/deep/docs/readme.MD", false));
        assert!(!t("/deep/docs/sub/readme.md", false), "* does not cross /");
        assert!(t("/abs/x", false));
        assert!(!t("/other/abs/x", false), "a leading / anchors");
        assert!(!t("/abs/x/below", false), "a match does not extend below");
        assert!(t("/x/cache", true));
        assert!(!t("/x/cache", false), "a trailing / only matches directories");
        assert!(m.has_path_patterns);
        let strict = Matcher::new(&["*.txt".into()], false).unwrap();
        assert!(!strict.has_path_patterns);
        assert!(!strict.matches(Path::new("/A.TXT"), OsStr::new("A.TXT"), false));
        assert!(Matcher::new(&["[".into()], false).is_err());
    }

    #[test]
    fn time_bounds() {
        let d = parse_time("--oldest", "2024-03-05", false).unwrap();
        assert_eq!(d.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S%.f").to_string(), "2024-03-05 00:00:00");
        let e = parse_time("--newest", "2024-03-05", true).unwrap();
        assert_eq!(
            e.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S%.9f").to_string(),
            "2024-03-05 23:59:59.999999999"
        );
        let r = parse_time("--newest", "2024-03-05T10:00:00+02:00", true).unwrap();
        assert_eq!(r.timestamp(), 1_709_625_600);
        assert!(parse_time("--newest", "yesterday", true).is_err());
    }
}
