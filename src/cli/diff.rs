//! `cairn diff`: what changed between two snapshots.
//!
//! Both trees are walked together in name order. Directories whose tree IDs are
//! equal are identical and never loaded, so the cost follows the size of the
//! change, not of the snapshots.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cairn::repo::tree::{Node, NodeType};
use cairn::util::human_bytes;
use cairn::{Id, Repository, browse};
use clap::Args;

use super::find::type_name;
use super::{Global, Output};

/// Arguments of `cairn diff`.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The earlier snapshot: ID, unique prefix or `latest`.
    #[arg(value_name = "SNAPSHOT1")]
    snap1: String,
    /// The later snapshot.
    #[arg(value_name = "SNAPSHOT2")]
    snap2: String,
    /// Also list entries whose metadata alone changed (mode, owner, modification
    /// time, extended attributes), marked `U`.
    #[arg(long)]
    metadata: bool,
}

/// What happened to one path.
struct Change<'a> {
    /// The path in the snapshots (absolute).
    path: &'a Path,
    /// `+` added, `-` removed, `M` content modified, `T` type changed, `U`
    /// metadata changed.
    modifier: char,
    /// The entry as it is now (for `-`: as it was).
    node: &'a Node,
    /// For `T`: the type it had before.
    old_type: Option<NodeType>,
}

impl Change<'_> {
    /// The path as printed: lossy UTF-8, directories with a trailing `/`.
    fn display(&self) -> String {
        let mut s = self.path.to_string_lossy().into_owned();
        if self.node.node_type == NodeType::Dir && !s.ends_with('/') {
            s.push('/');
        }
        s
    }
}

/// Counts over all changes.
#[derive(Debug, Default, serde::Serialize)]
struct Summary {
    files_added: u64,
    files_removed: u64,
    files_changed: u64,
    dirs_added: u64,
    dirs_removed: u64,
    others_added: u64,
    others_removed: u64,
    others_changed: u64,
    type_changed: u64,
    metadata_changed: u64,
    bytes_added: u64,
    bytes_removed: u64,
}

impl Summary {
    fn count(&mut self, n: &Node, added: bool) {
        let (files, dirs, others, bytes) = if added {
            (&mut self.files_added, &mut self.dirs_added, &mut self.others_added, &mut self.bytes_added)
        } else {
            (&mut self.files_removed, &mut self.dirs_removed, &mut self.others_removed, &mut self.bytes_removed)
        };
        match n.node_type {
            NodeType::File => {
                *files += 1;
                *bytes += n.size;
            }
            NodeType::Dir => *dirs += 1,
            _ => *others += 1,
        }
    }
}

struct Differ<'a> {
    repo: &'a Repository,
    metadata: bool,
    summary: Summary,
    emit: &'a mut dyn FnMut(&Change) -> cairn::Result<()>,
}

/// Whether the metadata `diff --metadata` reports differs.
fn metadata_differs(a: &Node, b: &Node) -> bool {
    a.mode != b.mode
        || a.uid != b.uid
        || a.gid != b.gid
        || a.user != b.user
        || a.group != b.group
        || a.mtime != b.mtime
        || a.xattrs != b.xattrs
}

impl Differ<'_> {
    fn change(&mut self, path: &Path, modifier: char, node: &Node, old_type: Option<NodeType>) -> cairn::Result<()> {
        (self.emit)(&Change { path, modifier, node, old_type })
    }

    /// Compares two directory trees below `base`.
    fn trees(&mut self, a: &Id, b: &Id, base: &Path) -> cairn::Result<()> {
        if a == b {
            return Ok(());
        }
        cairn::check_interrupted()?;
        let (ta, tb) = (self.repo.load_tree(a)?, self.repo.load_tree(b)?);
        let (mut ia, mut ib) = (ta.entries.iter().peekable(), tb.entries.iter().peekable());
        loop {
            let order = match (ia.peek(), ib.peek()) {
                (None, None) => return Ok(()),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(x), Some(y)) => x.name.0.cmp(&y.name.0),
            };
            match order {
                std::cmp::Ordering::Less => {
                    let x = ia.next().expect("peeked");
                    self.all(x, &base.join(x.os_name()), '-')?;
                }
                std::cmp::Ordering::Greater => {
                    let y = ib.next().expect("peeked");
                    self.all(y, &base.join(y.os_name()), '+')?;
                }
                std::cmp::Ordering::Equal => {
                    let (x, y) = (ia.next().expect("peeked"), ib.next().expect("peeked"));
                    self.both(x, y, &base.join(y.os_name()))?;
                }
            }
        }
    }

    /// Reports `n` and, for a directory, everything below it as added (`+`) or
    /// removed (`-`).
    fn all(&mut self, n: &Node, path: &Path, modifier: char) -> cairn::Result<()> {
        self.summary.count(n, modifier == '+');
        self.change(path, modifier, n, None)?;
        self.below(n, path, modifier)
    }

    /// Reports what is below directory `n` as added or removed.
    fn below(&mut self, n: &Node, path: &Path, modifier: char) -> cairn::Result<()> {
        let (NodeType::Dir, Some(sub)) = (n.node_type, n.subtree) else { return Ok(()) };
        browse::walk_subtree(self.repo, &sub, path, &mut |p, m| {
            cairn::check_interrupted()?;
            self.summary.count(m, modifier == '+');
            (self.emit)(&Change { path: p, modifier, node: m, old_type: None })
        })
    }

    /// Compares the entries with one name in both snapshots.
    fn both(&mut self, x: &Node, y: &Node, path: &Path) -> cairn::Result<()> {
        if x.node_type != y.node_type {
            // The old entry went and a new one came in its place.
            self.summary.type_changed += 1;
            self.summary.count(x, false);
            self.summary.count(y, true);
            self.change(path, 'T', y, Some(x.node_type))?;
            self.below(x, path, '-')?;
            return self.below(y, path, '+');
        }
        let modified = match x.node_type {
            NodeType::File => x.content != y.content,
            NodeType::Symlink => x.target != y.target,
            NodeType::Chardev | NodeType::Blockdev => x.rdev != y.rdev,
            NodeType::Dir | NodeType::Fifo | NodeType::Socket => false,
        };
        if modified {
            if x.node_type == NodeType::File {
                self.summary.files_changed += 1;
                if y.size >= x.size {
                    self.summary.bytes_added += y.size - x.size;
                } else {
                    self.summary.bytes_removed += x.size - y.size;
                }
            } else {
                self.summary.others_changed += 1;
            }
            self.change(path, 'M', y, None)?;
        } else if self.metadata && metadata_differs(x, y) {
            self.summary.metadata_changed += 1;
            self.change(path, 'U', y, None)?;
        }
        match (x.subtree, y.subtree) {
            (Some(a), Some(b)) => self.trees(&a, &b, path),
            _ => Ok(()),
        }
    }
}

/// Runs `cairn diff`: prints the changes and a summary; exit code 0.
pub fn run(g: &Global, out: &Output, a: DiffArgs) -> Result<i32> {
    let repo = g.open()?;
    let (id1, s1) = repo.find_snapshot(&a.snap1).with_context(|| format!("snapshot {}", a.snap1))?;
    let (id2, s2) = repo.find_snapshot(&a.snap2).with_context(|| format!("snapshot {}", a.snap2))?;
    out.info(format!("comparing snapshot {} with {}:\n", id1.short(), id2.short()));
    let mut changes = Vec::new();
    let mut w = BufWriter::new(std::io::stdout().lock());
    let json = out.json;
    let mut emit = |c: &Change| -> cairn::Result<()> {
        if json {
            let mut v = serde_json::json!({
                "path": c.display(),
                "modifier": c.modifier.to_string(),
                "type": type_name(c.node.node_type),
            });
            if let Some(t) = c.old_type {
                v["old_type"] = type_name(t).into();
            }
            changes.push(v);
            Ok(())
        } else {
            writeln!(w, "{} {}", c.modifier, c.display()).map_err(|e| cairn::Error::io("standard output", e))
        }
    };
    let mut d = Differ { repo: &repo, metadata: a.metadata, summary: Summary::default(), emit: &mut emit };
    d.trees(&s1.tree, &s2.tree, &PathBuf::from("/"))?;
    let summary = d.summary;
    w.flush().context("standard output")?;
    drop(w);
    if json {
        out.json(&serde_json::json!({
            "snapshot1": id1.to_hex(),
            "snapshot2": id2.to_hex(),
            "changes": changes,
            "summary": summary,
        }));
        return Ok(0);
    }
    let s = &summary;
    out.info("");
    out.info(format!(
        "Files:     {:>6} new, {:>6} removed, {:>6} changed",
        s.files_added, s.files_removed, s.files_changed
    ));
    out.info(format!("Dirs:      {:>6} new, {:>6} removed", s.dirs_added, s.dirs_removed));
    out.info(format!(
        "Others:    {:>6} new, {:>6} removed, {:>6} changed",
        s.others_added, s.others_removed, s.others_changed
    ));
    if s.type_changed > 0 {
        out.info(format!("Types:     {:>6} changed (counted as removed and added)", s.type_changed));
    }
    if a.metadata {
        out.info(format!("Metadata:  {:>6} changed", s.metadata_changed));
    }
    out.info(format!("Added:     {}", human_bytes(s.bytes_added)));
    out.info(format!("Removed:   {}", human_bytes(s.bytes_removed)));
    Ok(0)
}
