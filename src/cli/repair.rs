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
    }
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
