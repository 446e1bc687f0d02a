//! `cairn check`.

use anyhow::Result;
use cairn::Progress;
use cairn::checker::{self, CheckOptions, Subset};
use clap::Args;

use super::output::with_progress;
use super::{Global, Output};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Read all packs and verify every blob.
    #[arg(long)]
    read_data: bool,
    /// Read only a subset of packs: N% (random) or n/t (part n of t).
    #[arg(long, value_name = "N%|n/t")]
    read_data_subset: Option<Subset>,
}

pub fn run(g: &Global, out: &Output, a: CheckArgs) -> Result<i32> {
    let repo = g.open()?;
    let _lease = super::reader_lease(&repo, "");
    let opts = CheckOptions { read_data: a.read_data, subset: a.read_data_subset };
    let progress = Progress::default();
    let s = with_progress(out, &progress, "checked packs:", || checker::check(&repo, &opts, out, &progress))?;
    if out.json {
        out.json(&s);
    } else {
        out.info(format!(
            "checked {} snapshots, {} trees, {} packs{}",
            s.snapshots,
            s.trees,
            s.packs,
            if opts.read_data || opts.subset.is_some() { format!(" ({} read)", s.packs_read) } else { String::new() }
        ));
        if s.errors.is_empty() {
            out.info("no errors were found");
        }
    }
    if s.errors.is_empty() {
        Ok(0)
    } else {
        eprintln!("cairn: check found {} error(s)", s.errors.len());
        Ok(1)
    }
}
