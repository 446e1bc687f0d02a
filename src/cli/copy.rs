//! `cairn copy`: copy snapshots from another repository into this one.

use anyhow::Result;
use cairn::util::human_bytes;
use clap::Args;

use super::browse::Filter;
use super::{FromRepo, Global, Output};

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Snapshots of the source to copy (IDs, prefixes or "latest"); all by default.
    snapshots: Vec<String>,
    #[command(flatten)]
    from: FromRepo,
    #[command(flatten)]
    filter: Filter,
}

pub fn run(g: &Global, out: &Output, a: CopyArgs) -> Result<i32> {
    let src = g.open_from(&a.from)?;
    let _lease = super::reader_lease(&src, "source repository: ");
    let dst = g.open()?;
    let snaps = if a.snapshots.is_empty() {
        // (Partial snapshots, of interrupted backups, only unless named.)
        src.snapshots()?.into_iter().filter(|(_, s)| !s.partial && a.filter.matches(s)).collect()
    } else {
        a.snapshots.iter().map(|s| src.find_snapshot(s)).collect::<cairn::Result<Vec<_>>>()?
    };
    let stats = cairn::copy::copy(&src, &dst, snaps)?;
    if out.json {
        out.json(&stats);
        return Ok(0);
    }
    for (from, to) in &stats.copied {
        out.info(format!("copied snapshot {} as {}", from.short(), to.short()));
    }
    if !stats.skipped.is_empty() {
        out.info(format!("{} snapshot(s) were already there", stats.skipped.len()));
    }
    out.info(format!(
        "{} snapshot(s) copied, {} blob(s) ({}) added{}",
        stats.copied.len(),
        stats.blobs_added,
        human_bytes(stats.bytes_added),
        if stats.rechunked { " (files re-chunked: the repositories cut content differently)" } else { "" }
    ));
    Ok(0)
}
