//! Read-only commands: `snapshots`, `ls`, `cat`, `stats`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Result, anyhow};
use cairn::Id;
use cairn::backend::{FileKind, Handle};
use cairn::browse;
use cairn::repo::index::IndexFile;
use cairn::repo::keyfile::KeyFile;
use cairn::repo::snapshot::Snapshot;
use cairn::repo::tree::{Node, NodeType};
use cairn::util::human_bytes;
use clap::{Args, ValueEnum};

use super::{Global, Output};

/// Snapshot filters shared by several commands.
#[derive(Args, Debug, Default)]
pub struct Filter {
    /// Only snapshots from this host (repeatable).
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Only snapshots with these tags (a,b = both; repeat for either).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only snapshots that include this path (repeatable: all of them).
    #[arg(long = "path")]
    paths: Vec<String>,
}

impl Filter {
    /// Whether no filter was given.
    pub(super) fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.tags.is_empty() && self.paths.is_empty()
    }

    /// Whether snapshot `s` passes the filter.
    pub(super) fn matches(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.hostname))
            && (self.tags.is_empty()
                || self
                    .tags
                    .iter()
                    .any(|t| s.has_tags(&t.split(',').filter(|x| !x.is_empty()).map(String::from).collect::<Vec<_>>())))
            && self
                .paths
                .iter()
                .all(|p| s.paths.iter().any(|sp| sp == p.trim_end_matches('/') || (p == "/" && sp == "/")))
    }
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    filter: Filter,
    /// Only the newest N snapshots of each host and path set.
    #[arg(long, value_name = "N")]
    latest: Option<usize>,
}

fn snapshot_json(id: &Id, s: &Snapshot) -> serde_json::Value {
    let mut v = serde_json::to_value(s).expect("snapshots serialize");
    v["id"] = id.to_hex().into();
    v["short_id"] = id.short().into();
    v
}

pub fn snapshots(g: &Global, out: &Output, a: SnapshotsArgs) -> Result<i32> {
    let repo = g.open()?;
    let mut list: Vec<(Id, Snapshot)> = repo.snapshots()?.into_iter().filter(|(_, s)| a.filter.matches(s)).collect();
    if let Some(n) = a.latest {
        type Group = (String, Vec<String>);
        let mut groups: BTreeMap<Group, Vec<(Id, Snapshot)>> = BTreeMap::new();
        for (id, s) in list {
            groups.entry((s.hostname.clone(), s.sorted_paths())).or_default().push((id, s));
        }
        list = groups.into_values().flat_map(|g| g.into_iter().rev().take(n).rev()).collect();
        list.sort_by_key(|(_, s)| s.time);
    }
    if out.json {
        out.json(&list.iter().map(|(id, s)| snapshot_json(id, s)).collect::<Vec<_>>());
        return Ok(0);
    }
    let mut w = std::io::stdout().lock();
    writeln!(w, "{:<8}  {:<19}  {:<16}  {:<16}  {:>10}  Paths", "ID", "Time", "Host", "Tags", "Size")?;
    writeln!(w, "{}", "-".repeat(90))?;
    for (id, s) in &list {
        writeln!(
            w,
            "{:<8}  {:<19}  {:<16}  {:<16}  {:>10}  {}",
            id.short(),
            s.time.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S"),
            s.hostname,
            s.tags.join(","),
            human_bytes(s.summary.total_bytes_processed),
            s.paths.join(", ") + if s.partial { "  (partial: interrupted)" } else { "" }
        )?;
    }
    writeln!(w, "{} snapshots", list.len())?;
    Ok(0)
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot: ID, unique prefix or `latest`.
    snapshot: String,
    /// Directory or file inside the snapshot (default: its root).
    path: Option<String>,
    /// Show type, mode, owner, size and time.
    #[arg(short, long)]
    long: bool,
    /// List everything below, not only direct entries.
    #[arg(short = 'R', long)]
    recursive: bool,
}

fn mode_string(n: &Node) -> String {
    let t = match n.node_type {
        NodeType::File => '-',
        NodeType::Dir => 'd',
        NodeType::Symlink => 'l',
        NodeType::Fifo => 'p',
        NodeType::Socket => 's',
        NodeType::Chardev => 'c',
        NodeType::Blockdev => 'b',
    };
    let m = n.mode;
    let mut s = String::from(t);
    for (shift, special, lower, upper) in [(6, 0o4000, 's', 'S'), (3, 0o2000, 's', 'S'), (0, 0o1000, 't', 'T')] {
        let bits = (m >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, m & special != 0) {
            (true, true) => lower,
            (false, true) => upper,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

fn time_string(t: cairn::repo::tree::Timestamp) -> String {
    chrono::DateTime::from_timestamp(t.0, t.1)
        .map(|d| d.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| format!("@{}", t.0))
}

fn rfc3339(t: cairn::repo::tree::Timestamp) -> String {
    chrono::DateTime::from_timestamp(t.0, t.1)
        .map(|d| d.with_timezone(&chrono::Local).to_rfc3339_opts(chrono::SecondsFormat::Nanos, false))
        .unwrap_or_else(|| format!("@{}", t.0))
}

pub fn ls(g: &Global, out: &Output, a: LsArgs) -> Result<i32> {
    let repo = g.open()?;
    let (_, snap) = repo.find_snapshot(&a.snapshot)?;
    let mut w = std::io::stdout().lock();
    let mut err = None;
    let mut print = |p: &Path, n: &Node| {
        let r = if out.json {
            let mut v = serde_json::json!({
                "struct_type": "node",
                "path": p.to_string_lossy(),
                "name": String::from_utf8_lossy(&n.name.0),
                "type": n.node_type,
                "mode": n.mode,
                "uid": n.uid,
                "gid": n.gid,
                "user": n.user,
                "group": n.group,
                "size": n.size,
                "mtime": rfc3339(n.mtime),
                "atime": rfc3339(n.atime),
                "ctime": rfc3339(n.ctime),
                "inode": n.inode,
                "links": n.links,
            });
            if let Some(t) = &n.target {
                v["target"] = String::from_utf8_lossy(&t.0).into();
            }
            writeln!(w, "{v}")
        } else if a.long {
            let owner = n.user.clone().unwrap_or_else(|| n.uid.to_string());
            let group = n.group.clone().unwrap_or_else(|| n.gid.to_string());
            let link = n.target.as_ref().map(|t| format!(" -> {}", String::from_utf8_lossy(&t.0))).unwrap_or_default();
            writeln!(
                w,
                "{} {:>8} {:>8} {:>12} {} {}{link}",
                mode_string(n),
                owner,
                group,
                n.size,
                time_string(n.mtime),
                p.display()
            )
        } else {
            writeln!(w, "{}", p.display())
        };
        if let Err(e) = r {
            err.get_or_insert(e);
        }
    };
    browse::walk(&repo, &snap, a.path.as_deref().unwrap_or("/"), a.recursive, &mut print)?;
    match err {
        Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(0),
    }
}

#[derive(ValueEnum, Clone, Debug)]
enum CatKind {
    Config,
    Key,
    Snapshot,
    Index,
    Tree,
    Blob,
}

#[derive(Args, Debug)]
pub struct CatArgs {
    /// What to print.
    #[arg(value_enum)]
    kind: CatKind,
    /// Its ID: a unique prefix works for keys, snapshots and indexes (`latest` for
    /// snapshots); trees and blobs need the full ID.
    id: Option<String>,
}

pub fn cat(g: &Global, out: &Output, a: CatArgs) -> Result<i32> {
    let repo = g.open()?;
    let need_id = || a.id.clone().ok_or_else(|| anyhow!("cat {:?} needs an ID", a.kind));
    let find = |kind: FileKind| -> Result<Id> {
        let ids = repo.list_ids(kind)?;
        Ok(cairn::id::find_by_prefix(&ids, &need_id()?, kind_name(kind))?)
    };
    let _ = out;
    let value: serde_json::Value = match a.kind {
        CatKind::Config => serde_json::to_value(repo.config())?,
        CatKind::Key => {
            let id = find(FileKind::Key)?;
            let bytes = repo.block_on(repo.backend().read(&Handle::id(FileKind::Key, &id), None))?;
            serde_json::to_value(KeyFile::parse(&bytes)?)?
        }
        CatKind::Snapshot => {
            let (id, s) = repo.find_snapshot(&need_id()?)?;
            snapshot_json(&id, &s)
        }
        CatKind::Index => {
            let id = find(FileKind::Index)?;
            serde_json::to_value(IndexFile::decode(&repo.load_file(FileKind::Index, &id)?)?)?
        }
        CatKind::Tree => {
            let id = Id::from_hex(&need_id()?)?;
            serde_json::to_value(repo.load_tree(&id)?)?
        }
        CatKind::Blob => {
            let id = Id::from_hex(&need_id()?)?;
            let data = repo.read_blob(&id)?;
            let mut w = std::io::stdout().lock();
            w.write_all(&data)?;
            return Ok(0);
        }
    };
    writeln!(std::io::stdout().lock(), "{}", serde_json::to_string_pretty(&value)?)?;
    Ok(0)
}

fn kind_name(k: FileKind) -> &'static str {
    match k {
        FileKind::Key => "key",
        FileKind::Index => "index",
        FileKind::Snapshot => "snapshot",
        FileKind::Pack => "pack",
        FileKind::Lock => "lock",
        FileKind::Config => "config",
    }
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Only this snapshot (ID, prefix or `latest`); default: all.
    snapshot: Option<String>,
    #[command(flatten)]
    filter: Filter,
}

pub fn stats(g: &Global, out: &Output, a: StatsArgs) -> Result<i32> {
    let repo = g.open()?;
    let snaps = match &a.snapshot {
        Some(s) => vec![repo.find_snapshot(s)?],
        None => repo.snapshots()?.into_iter().filter(|(_, s)| a.filter.matches(s)).collect(),
    };
    let st = browse::stats(&repo, &snaps)?;
    let packs = repo.block_on(repo.backend().list(FileKind::Pack))?;
    let repo_size: u64 = packs.iter().map(|p| p.size).sum();
    if out.json {
        let mut v = serde_json::to_value(&st)?;
        v["repository_pack_bytes"] = repo_size.into();
        v["packs"] = packs.len().into();
        out.json(&v);
    } else {
        out.info(format!("Snapshots:          {}", st.snapshots));
        out.info(format!("Files:              {}", st.total_file_count));
        out.info(format!("Restore size:       {}", human_bytes(st.total_restore_size)));
        out.info(format!(
            "Unique data:        {} in {} data and {} tree blobs",
            human_bytes(st.total_uncompressed_size),
            st.data_blobs,
            st.tree_blobs
        ));
        out.info(format!(
            "Stored:             {} (compression ratio {:.2})",
            human_bytes(st.total_stored_size),
            st.compression_ratio
        ));
        out.info(format!("Deduplication:      {:.2}x", st.dedup_ratio));
        out.info(format!("Repository packs:   {} in {} packs", human_bytes(repo_size), packs.len()));
    }
    Ok(0)
}
