//! `cairn restore`.

use std::path::PathBuf;

use anyhow::Result;
use cairn::Progress;
use cairn::restorer::{self, Overwrite, RestoreOptions};
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
    /// Files already in the target: always (replace), if-changed, if-newer
    /// (only if the snapshot's is newer) or never. An existing file whose
    /// content already matches is never rewritten, so a restore run again
    /// resumes where it stopped.
    #[arg(long, value_enum, default_value = "always")]
    overwrite: OverwriteArg,
    /// Remove files and directories in the target that the snapshot does not
    /// have (only inside restored directories, and only names the includes and
    /// excludes select). Try it with `--dry-run -v` first.
    #[arg(long)]
    delete: bool,
    /// Change nothing: count what would be restored (and, with `-v`, list what
    /// `--delete` would remove).
    #[arg(short = 'n', long)]
    dry_run: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum OverwriteArg {
    Always,
    IfChanged,
    IfNewer,
    Never,
}

pub fn run(g: &Global, out: &Output, a: RestoreArgs) -> Result<i32> {
    let (spec, subpath) = match a.snapshot.split_once(':') {
        Some((s, p)) => (s.to_string(), Some(p.to_string())),
        None => (a.snapshot.clone(), None),
    };
    let repo = g.open()?;
    let _lease = super::reader_lease(&repo, "");
    let (id, snap) = repo.find_snapshot(&spec)?;
    let overwrite = match a.overwrite {
        OverwriteArg::Always => Overwrite::Always,
        OverwriteArg::IfChanged => Overwrite::IfChanged,
        OverwriteArg::IfNewer => Overwrite::IfNewer,
        OverwriteArg::Never => Overwrite::Never,
    };
    let opts = RestoreOptions {
        target: a.target,
        subpath,
        includes: a.includes,
        excludes: a.excludes,
        verify: a.verify,
        overwrite,
        delete: a.delete,
        dry_run: a.dry_run,
    };
    let progress = Progress::default();
    let s = with_progress(out, &progress, "restored", || restorer::restore(&repo, &snap, &opts, out, &progress))?;
    if out.json {
        let mut v = serde_json::to_value(&s)?;
        v["message_type"] = "summary".into();
        v["snapshot_id"] = id.to_hex().into();
        out.json(&v);
    } else {
        out.info(format!(
            "{} snapshot {} to {}: {} files, {} dirs, {} other, {}{}",
            if opts.dry_run { "would restore" } else { "restored" },
            id.short(),
            opts.target.display(),
            s.files,
            s.dirs,
            s.others,
            human_bytes(s.bytes),
            if opts.verify { format!(", {} verified", s.verified) } else { String::new() }
        ));
        if s.unchanged + s.skipped > 0 {
            out.info(format!(
                "{} existing file(s) already matched (metadata set), {} left alone",
                s.unchanged, s.skipped
            ));
        }
        if opts.delete {
            out.info(format!(
                "{} {} item(s) not in the snapshot",
                if opts.dry_run { "would delete" } else { "deleted" },
                s.deleted
            ));
        }
    }
    if s.errors > 0 {
        eprintln!("cairn: {} item(s) could not be restored (see above)", s.errors);
        return Ok(1);
    }
    Ok(0)
}
