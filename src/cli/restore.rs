//! `cairn restore`.

use std::path::PathBuf;

use anyhow::Result;
use cairn::Progress;
use cairn::restorer::{self, RestoreOptions};
use cairn::util::human_bytes;
use clap::Args;

use super::output::with_progress;
use super::{Global, Output};

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot: ID, unique prefix or `latest`, optionally with `:PATH` inside it.
    snapshot: String,
    /// Directory to restore into.
    #[arg(short, long)]
    target: PathBuf,
    /// Only restore paths matching a glob (repeatable).
    #[arg(short, long = "include")]
    includes: Vec<String>,
    /// Leave out paths matching a glob (repeatable).
    #[arg(short, long = "exclude")]
    excludes: Vec<String>,
    /// Re-read restored files and check them against the snapshot.
    #[arg(long)]
    verify: bool,
}

pub fn run(g: &Global, out: &Output, a: RestoreArgs) -> Result<i32> {
    let (spec, subpath) = match a.snapshot.split_once(':') {
        Some((s, p)) => (s.to_string(), Some(p.to_string())),
        None => (a.snapshot.clone(), None),
    };
    let repo = g.open()?;
    let _lease = super::reader_lease(&repo, "");
    let (id, snap) = repo.find_snapshot(&spec)?;
    let opts =
        RestoreOptions { target: a.target, subpath, includes: a.includes, excludes: a.excludes, verify: a.verify };
    let progress = Progress::default();
    let s = with_progress(out, &progress, "restored", || restorer::restore(&repo, &snap, &opts, out, &progress))?;
    if out.json {
        let mut v = serde_json::to_value(&s)?;
        v["message_type"] = "summary".into();
        v["snapshot_id"] = id.to_hex().into();
        out.json(&v);
    } else {
        out.info(format!(
            "restored snapshot {} to {}: {} files, {} dirs, {} other, {}{}",
            id.short(),
            opts.target.display(),
            s.files,
            s.dirs,
            s.others,
            human_bytes(s.bytes),
            if opts.verify { format!(", {} verified", s.verified) } else { String::new() }
        ));
    }
    if s.errors > 0 {
        eprintln!("cairn: {} item(s) could not be restored (see above)", s.errors);
        return Ok(1);
    }
    Ok(0)
}
