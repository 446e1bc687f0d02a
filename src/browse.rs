//! Read-only views of snapshots: listing entries (`ls`) and statistics (`stats`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::Repository;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeType, Tree};

/// Resolves `path` inside the tree `root`; returns the node there (None for the root).
pub fn lookup(repo: &Repository, root: &Id, path: &str) -> Result<(Option<Node>, Tree)> {
    let mut tree = repo.load_tree(root)?;
    let mut node = None;
    for c in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let n = tree
            .find(c.as_bytes())
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("{path:?} is not in the snapshot")))?;
        tree = match (n.node_type, n.subtree) {
            (NodeType::Dir, Some(id)) => repo.load_tree(&id)?,
            _ => Tree::default(),
        };
        node = Some(n);
    }
    Ok((node, tree))
}

/// Calls `f` with each entry under `path` in the snapshot (depth-first, sorted);
/// only direct children unless `recursive`. A file path yields the file itself.
pub fn walk(
    repo: &Repository,
    snap: &Snapshot,
    path: &str,
    recursive: bool,
    f: &mut dyn FnMut(&Path, &Node),
) -> Result<()> {
    let (node, tree) = lookup(repo, &snap.tree, path)?;
    let base: PathBuf = Path::new("/").join(path.trim_start_matches('/'));
    if let Some(n) = &node
        && n.node_type != NodeType::Dir
    {
        f(&base, n);
        return Ok(());
    }
    walk_tree(repo, &tree, &base, recursive, f)
}

fn walk_tree(
    repo: &Repository,
    tree: &Tree,
    base: &Path,
    recursive: bool,
    f: &mut dyn FnMut(&Path, &Node),
) -> Result<()> {
    for n in &tree.entries {
        let p = base.join(n.os_name());
        f(&p, n);
        if recursive && let (NodeType::Dir, Some(id)) = (n.node_type, n.subtree) {
            walk_tree(repo, &repo.load_tree(&id)?, &p, recursive, f)?;
        }
    }
    Ok(())
}

/// Repository or snapshot statistics.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    /// Snapshots counted.
    pub snapshots: usize,
    /// Files in them (every name, every snapshot).
    pub total_file_count: u64,
    /// Bytes a full restore of them would write.
    pub total_restore_size: u64,
    /// Distinct data blobs they reference.
    pub data_blobs: u64,
    /// Distinct tree blobs they reference.
    pub tree_blobs: u64,
    /// Plaintext bytes of those blobs.
    pub total_uncompressed_size: u64,
    /// Stored bytes of those blobs (compressed, encrypted).
    pub total_stored_size: u64,
    /// Restore size divided by unique plaintext: how much deduplication saves.
    pub dedup_ratio: f64,
    /// Plaintext divided by stored bytes.
    pub compression_ratio: f64,
}

/// Statistics over `snapshots`.
pub fn stats(repo: &Repository, snapshots: &[(Id, Snapshot)]) -> Result<Stats> {
    let index = repo.index()?;
    let mut st = Stats { snapshots: snapshots.len(), ..Stats::default() };
    let mut seen_trees = HashSet::new();
    let mut seen_blobs = HashSet::new();
    let mut count = |id: &Id, st: &mut Stats, tree: bool| -> Result<()> {
        if !seen_blobs.insert(*id) {
            return Ok(());
        }
        let loc = index.get(id).ok_or_else(|| Error::corrupt(format!("blob {id} is not in the index")))?;
        if tree {
            st.tree_blobs += 1;
        } else {
            st.data_blobs += 1;
        }
        st.total_uncompressed_size += loc.entry.raw_length as u64;
        st.total_stored_size += loc.entry.length as u64;
        Ok(())
    };
    for (_, snap) in snapshots {
        // Trees are walked per snapshot for the file counts, blobs counted once.
        let mut stack = vec![snap.tree];
        while let Some(tid) = stack.pop() {
            count(&tid, &mut st, true)?;
            let tree = repo.load_tree(&tid)?;
            let first_visit = seen_trees.insert(tid);
            for n in &tree.entries {
                match n.node_type {
                    NodeType::Dir => stack.extend(n.subtree),
                    NodeType::File => {
                        st.total_file_count += 1;
                        st.total_restore_size += n.size;
                        if first_visit {
                            for b in n.content.as_deref().unwrap_or_default() {
                                count(b, &mut st, false)?;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    if st.total_uncompressed_size > 0 {
        st.dedup_ratio = st.total_restore_size as f64 / st.total_uncompressed_size as f64;
    }
    if st.total_stored_size > 0 {
        st.compression_ratio = st.total_uncompressed_size as f64 / st.total_stored_size as f64;
    }
    Ok(st)
}

/// Calls `f` with the path and node of every entry below the tree `tree`, depth
/// first in name order, each directory before its contents; a path is `base`
/// joined with the names on the way. Stops at the first error, whether from `f`
/// (which can end the walk early that way) or from loading a tree.
pub fn walk_subtree(
    repo: &Repository,
    tree: &Id,
    base: &Path,
    f: &mut dyn FnMut(&Path, &Node) -> Result<()>,
) -> Result<()> {
    let tree = repo.load_tree(tree)?;
    for n in &tree.entries {
        let p = base.join(n.os_name());
        f(&p, n)?;
        if let (NodeType::Dir, Some(id)) = (n.node_type, n.subtree) {
            walk_subtree(repo, &id, &p, f)?;
        }
    }
    Ok(())
}
