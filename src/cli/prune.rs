//! `cairn prune` and `cairn unlock`.

use anyhow::{Result, anyhow};
use cairn::prune::{self, MaxUnused, PruneOptions, PruneStats};
use cairn::util::human_bytes;
use clap::Args;

use super::{Global, Output, parse_size};

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Unused data tolerated in partly used packs before they are repacked:
    /// a percentage of the data in use, a size (e.g. 200M), or "unlimited".
    #[arg(long, default_value = "5%", value_name = "PERCENT|SIZE|unlimited")]
    max_unused: String,
    /// Repack at most this much data in one run (e.g. 10G).
    #[arg(long, value_name = "SIZE")]
    max_repack_size: Option<String>,
    /// Only print what would be deleted and repacked.
    #[arg(short = 'n', long)]
    dry_run: bool,
}

/// Parses the prune options (shared with `forget --prune`).
pub fn options(max_unused: &str, max_repack: Option<&str>, dry_run: bool) -> Result<PruneOptions> {
    let max_unused = MaxUnused::parse(max_unused, |s| parse_size(s).ok()).ok_or_else(|| {
        anyhow!("--max-unused {max_unused:?}: expected a percentage (5%), a size (200M) or unlimited")
    })?;
    let max_repack = max_repack.map(parse_size).transpose()?;
    Ok(PruneOptions { max_unused, max_repack, dry_run })
}

/// Runs prune on an open repository and prints its report.
pub fn prune_and_report(repo: &cairn::Repository, out: &Output, opts: &PruneOptions) -> Result<i32> {
    let s = prune::prune(repo, opts)?;
    if out.json {
        out.json(&s);
    } else {
        print(out, &s);
    }
    Ok(0)
}

fn print(out: &Output, s: &PruneStats) {
    let would = if s.dry_run { "would " } else { "" };
    out.info(format!(
        "{} snapshots use {} blobs ({}); {} blobs ({}) are unused",
        s.snapshots,
        s.blobs_used,
        human_bytes(s.bytes_used),
        s.blobs_unused,
        human_bytes(s.bytes_unused)
    ));
    out.info(format!(
        "{would}repack {} pack(s) ({}), {would}delete {} pack(s) ({}); unused data left: {}",
        s.packs_repacked,
        human_bytes(s.bytes_repacked),
        s.packs_deleted,
        human_bytes(s.bytes_deleted),
        human_bytes(s.bytes_unused_after)
    ));
    if s.packs_deferred > 0 {
        out.info(format!(
            "{} pack(s) ({}) are marked for deletion but kept for now: {}; a later prune deletes them",
            s.packs_deferred,
            human_bytes(s.bytes_deferred),
            s.deferred_because.as_deref().unwrap_or("a writer may still use them")
        ));
    }
    if s.packs_resurrected > 0 {
        out.info(format!("{} marked pack(s) are in use again and were kept", s.packs_resurrected));
    }
    if s.unindexed_deleted > 0 {
        out.info(format!(
            "deleted {} pack file(s) ({}) left by interrupted backups",
            s.unindexed_deleted,
            human_bytes(s.unindexed_bytes_deleted)
        ));
    }
}

pub fn run(g: &Global, out: &Output, a: PruneArgs) -> Result<i32> {
    let opts = options(&a.max_unused, a.max_repack_size.as_deref(), a.dry_run)?;
    let repo = g.open()?;
    prune_and_report(&repo, out, &opts)
}

#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Remove every lock, also those of running processes (only when you are
    /// sure no other cairn uses the repository).
    #[arg(long)]
    remove_all: bool,
}

pub fn unlock(g: &Global, out: &Output, a: UnlockArgs) -> Result<i32> {
    let repo = g.open()?;
    let mut removed = Vec::new();
    for (id, l) in repo.leases()? {
        if a.remove_all || !l.is_live() {
            match repo.block_on(repo.backend().remove(&cairn::backend::Handle::id(cairn::backend::FileKind::Lock, &id)))
            {
                Ok(()) => removed.push(serde_json::json!({"id": id.to_hex(), "lock": l.describe()})),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if out.json {
        out.json(&serde_json::json!({ "removed": removed }));
    } else if removed.is_empty() {
        out.info("no stale locks");
    } else {
        for r in &removed {
            out.info(format!("removed {}", r["lock"].as_str().unwrap_or_default()));
        }
    }
    Ok(0)
}
