//! `cairn backup`.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use cairn::Progress;
use cairn::archiver::{self, BackupOptions};
use cairn::util::human_bytes;
use clap::Args;

use super::output::with_progress;
use super::{Global, Output};

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and directories to back up.
    paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable; commas separate several).
    #[arg(long = "tag", value_delimiter = ',')]
    tags: Vec<String>,
    /// Host name to record instead of this machine's.
    #[arg(long)]
    host: Option<String>,
    /// Time to record instead of now (RFC 3339).
    #[arg(long)]
    time: Option<String>,
    /// Leave out paths matching a glob (repeatable).
    #[arg(short = 'e', long = "exclude")]
    excludes: Vec<String>,
    /// Read exclude globs from a file, one per line (# comments).
    #[arg(long = "exclude-file")]
    exclude_files: Vec<PathBuf>,
    /// Stay on the file system of each path.
    #[arg(short = 'x', long)]
    one_file_system: bool,
    /// Snapshot to compare with (default: the latest with the same host and paths).
    #[arg(long)]
    parent: Option<String>,
    /// Read every file, even if unchanged.
    #[arg(short, long)]
    force: bool,
    /// Back up standard input as one file.
    #[arg(long)]
    stdin: bool,
    /// File name for --stdin.
    #[arg(long, default_value = "stdin")]
    stdin_filename: String,
    /// Do not write anything, only show what would be done.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Compression for this backup (off, fastest, default, max, 1-22).
    #[arg(long)]
    compression: Option<String>,
}

pub fn run(g: &Global, out: &Output, a: BackupArgs) -> Result<i32> {
    let mut excludes = a.excludes.clone();
    for f in &a.exclude_files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading exclude file {}", f.display()))?;
        excludes.extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from));
    }
    if a.stdin && !a.paths.is_empty() {
        return Err(anyhow!("--stdin takes no paths"));
    }
    if !a.stdin && a.paths.is_empty() {
        return Err(anyhow!("nothing to back up: give at least one path (or --stdin)"));
    }
    let time = match &a.time {
        Some(t) => {
            Some(chrono::DateTime::parse_from_rfc3339(t).with_context(|| format!("--time {t:?} is not RFC 3339"))?)
        }
        None => None,
    };
    let opts = BackupOptions {
        paths: a.paths,
        tags: a.tags.into_iter().filter(|t| !t.is_empty()).collect(),
        host: a.host,
        time,
        excludes,
        one_file_system: a.one_file_system,
        parent: a.parent,
        force: a.force,
        stdin_filename: a.stdin.then_some(a.stdin_filename),
        dry_run: a.dry_run,
        compression: a.compression.as_deref().map(cairn::repo::config::parse_compression).transpose()?,
    };
    let repo = g.open()?;
    let progress = Progress::default();
    if out.show_progress() && opts.stdin_filename.is_none() {
        let (paths, ex) = (opts.paths.clone(), opts.excludes.clone());
        let p = &progress;
        std::thread::scope(|s| -> Result<i32> {
            s.spawn(move || archiver::scan(&paths, &ex, p));
            let r = with_progress(out, &progress, "backed up", || archiver::backup(&repo, &opts, out, &progress));
            report(out, r?)
        })
    } else {
        let r = archiver::backup(&repo, &opts, out, &progress)?;
        report(out, r)
    }
}

fn report(out: &Output, r: archiver::BackupResult) -> Result<i32> {
    let s = &r.snapshot.summary;
    if out.verbose > 0 && !out.json {
        match r.snapshot.parent {
            Some(p) => out.info(format!("parent snapshot {}: unchanged files were not read", p.short())),
            None => out.info("no parent snapshot: every file was read"),
        }
    }
    if out.json {
        let mut v = serde_json::to_value(s)?;
        v["message_type"] = "summary".into();
        v["snapshot_id"] = r.id.map(|i| i.to_hex()).into();
        v["dry_run"] = r.id.is_none().into();
        out.json(&v);
    } else {
        out.info(format!(
            "Files:       {} new, {} changed, {} unmodified",
            s.files_new, s.files_changed, s.files_unmodified
        ));
        out.info(format!(
            "Dirs:        {} new, {} changed, {} unmodified",
            s.dirs_new, s.dirs_changed, s.dirs_unmodified
        ));
        out.info(format!(
            "Added:       {} ({} stored), read {} in {} files",
            human_bytes(s.data_added),
            human_bytes(s.data_added_packed),
            human_bytes(s.bytes_read),
            s.files_read
        ));
        out.info(format!(
            "Processed:   {} files, {} in {:.2}s",
            s.total_files_processed,
            human_bytes(s.total_bytes_processed),
            s.duration_seconds
        ));
        match r.id {
            Some(id) => out.info(format!("snapshot {} saved", id.short())),
            None => out.info("dry run: nothing was written"),
        }
    }
    if s.errors > 0 {
        eprintln!("warning: {} source(s) could not be read; the snapshot was saved without them", s.errors);
        return Ok(3);
    }
    Ok(0)
}
