//! `cairn repair`.

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand};

use super::{Global, Output};

#[derive(Args, Debug)]
pub struct RepairArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Rebuild the index from the packs' own headers (after index files were
    /// lost or damaged).
    Index(IndexArgs),
    /// Rewrite snapshots that use lost or damaged data without the files
    /// concerned (unreadable directories become empty), so the rest stays
    /// restorable. Each is saved as a new snapshot tagged `repaired`.
    Snapshots(SnapshotsArgs),
}

#[derive(Args, Debug)]
struct SnapshotsArgs {
    /// Snapshots to look at (default: all).
    snapshots: Vec<String>,
    /// Also read every pack to find damaged data (else only data the index
    /// lacks or whose pack is missing or cut short counts).
    #[arg(long)]
    read_data: bool,
    /// Remove each original once its repaired version is saved.
    #[arg(long)]
    forget: bool,
    /// Only say what would change.
    #[arg(short = 'n', long)]
    dry_run: bool,
}

#[derive(Args, Debug)]
struct IndexArgs {
    /// Only read the packs and say what would be written.
    #[arg(short = 'n', long)]
    dry_run: bool,
}

pub fn run(g: &Global, out: &Output, a: RepairArgs) -> Result<i32> {
    match a.what {
        What::Index(a) => index(g, out, a),
        What::Snapshots(a) => snapshots(g, out, a),
    }
}

fn snapshots(g: &Global, out: &Output, a: SnapshotsArgs) -> Result<i32> {
    let repo = g.open()?;
    let only = if a.snapshots.is_empty() {
        None
    } else {
        Some(a.snapshots.iter().map(|s| repo.find_snapshot(s)).collect::<cairn::Result<Vec<_>>>()?)
    };
    let opts = cairn::repair::RepairSnapshotsOptions { read_data: a.read_data, forget: a.forget, dry_run: a.dry_run };
    let progress = cairn::Progress::default();
    let s = super::output::with_progress(out, &progress, "packs read", || {
        cairn::repair::repair_snapshots(&repo, only, &opts, out, &progress)
    })?;
    if out.json {
        out.json(&s);
        return Ok(0);
    }
    for r in &s.repaired {
        let what = format!("{} file(s) left out, {} directory(ies) emptied", r.files_dropped, r.dirs_emptied);
        match &r.new_id {
            Some(new) => out.info(format!(
                "snapshot {}: {what}; saved as {}{}",
                &r.id[..8],
                &new[..8],
                if s.forget { ", the original removed" } else { ", the original kept" }
            )),
            None => out.info(format!("snapshot {}: would be repaired: {what}", &r.id[..8])),
        }
    }
    out.info(format!(
        "{} snapshot(s) looked at, {} {}",
        s.snapshots,
        s.repaired.len(),
        if s.dry_run { "would be repaired" } else { "repaired" }
    ));
    Ok(0)
}

fn index(g: &Global, out: &Output, a: IndexArgs) -> Result<i32> {
    let repo = g.open()?;
    let s = cairn::repair::repair_index(&repo, a.dry_run, out)?;
    if out.json {
        out.json(&s);
    } else {
        let would = if s.dry_run { "would replace" } else { "replaced" };
        out.info(format!(
            "read the headers of {} packs ({} blobs); {would} {} index file(s){}",
            s.packs,
            s.blobs,
            s.index_files_replaced,
            if s.dry_run { String::new() } else { format!(" with {}", s.index_files_written) }
        ));
    }
    if !s.damaged.is_empty() {
        return Err(anyhow!(
            "{} pack(s) could not be read (listed above); their blobs are not indexed (run `cairn check`)",
            s.damaged.len()
        ));
    }
    Ok(0)
}
