//! `cairn tag`: add, remove or set the tags of snapshots.

use std::io::Write;

use anyhow::Result;
use cairn::Id;
use cairn::repo::keys::TagChange;
use cairn::repo::snapshot::Snapshot;
use clap::Args;

use super::browse::Filter;
use super::{Global, Output};

#[derive(Args, Debug)]
pub struct TagArgs {
    /// Snapshots to change: IDs, unique prefixes or `latest`. Without any, every
    /// snapshot that passes the filters; with filters too, only those named that
    /// pass them (`latest`: the newest that passes).
    #[arg(value_name = "SNAPSHOT")]
    snapshots: Vec<String>,
    /// Add these tags (repeatable; commas separate several).
    #[arg(long, value_name = "TAGS", value_delimiter = ',')]
    add: Vec<String>,
    /// Remove these tags (repeatable; commas separate several).
    #[arg(long, value_name = "TAGS", value_delimiter = ',')]
    remove: Vec<String>,
    /// Replace all tags with these (repeatable; commas separate several; `--set ""`
    /// removes every tag). Not with --add or --remove.
    #[arg(long, value_name = "TAGS", value_delimiter = ',')]
    set: Option<Vec<String>>,
    #[command(flatten)]
    filter: Filter,
}

/// Tags as given, without the empty names that `""` or `a,,b` produce.
fn tags(v: Vec<String>) -> Vec<String> {
    v.into_iter().filter(|t| !t.is_empty()).collect()
}

pub fn run(g: &Global, out: &Output, a: TagArgs) -> Result<i32> {
    if a.snapshots.is_empty() && a.filter.is_empty() {
        return Err(anyhow::anyhow!("name the snapshots to change, or select them with --host, --tag or --path"));
    }
    let change = TagChange::new(a.set.map(tags), tags(a.add), tags(a.remove))?;
    let repo = g.open()?;
    let selected = select(&repo, &a.snapshots, &a.filter)?;
    // A writer's shared lease, as backup takes (prune waits for it).
    let _lease = if selected.is_empty() { None } else { Some(repo.lock_shared()?) };
    let mut changed = Vec::new();
    let mut failed = None;
    for (id, snap) in &selected {
        // Ctrl-C stops between snapshots, never between writing one and deleting its old file.
        match cairn::check_interrupted().and_then(|()| repo.retag_snapshot(id, snap, &change)) {
            Ok(Some((new_id, new))) => {
                out.info(format!("{} → {}  tags: {}", id.short(), new_id.short(), new.tags.join(",")));
                changed.push(serde_json::json!({"old": id, "new": new_id, "tags": new.tags}));
            }
            Ok(None) => {}
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    // What was changed is reported even when a later snapshot failed.
    if out.json {
        out.json(&changed);
    } else if selected.is_empty() {
        out.info("no snapshot matches the filters");
    } else {
        out.info(format!("changed {} of {} snapshots", changed.len(), selected.len()));
    }
    if let Some(e) = failed {
        return Err(e.into());
    }
    Ok(0)
}

/// The snapshots named by `specs` and passing `filter`, or, with no `specs`, all
/// that pass `filter`; oldest first, each once.
fn select(repo: &cairn::Repository, specs: &[String], filter: &Filter) -> Result<Vec<(Id, Snapshot)>> {
    let all: Vec<(Id, Snapshot)> = repo.snapshots()?;
    let matching = || all.iter().filter(|(_, s)| filter.matches(s));
    if specs.is_empty() {
        return Ok(matching().cloned().collect());
    }
    let ids: Vec<Id> = all.iter().map(|(id, _)| *id).collect();
    let mut chosen = Vec::new();
    for spec in specs {
        let found = if spec == "latest" {
            matching()
                .next_back()
                .cloned()
                .ok_or_else(|| cairn::Error::NotFound("no snapshot matches the filters".into()))?
        } else {
            let id = cairn::id::find_by_prefix(&ids, spec, "snapshot")?;
            let (_, s) = all.iter().find(|(i, _)| *i == id).expect("listed");
            if !filter.matches(s) {
                // Named, but the filters exclude it.
                let _ = writeln!(std::io::stderr(), "skipping snapshot {}: it does not match the filters", id.short());
                continue;
            }
            (id, s.clone())
        };
        if !chosen.iter().any(|(i, _): &(Id, Snapshot)| *i == found.0) {
            chosen.push(found);
        }
    }
    chosen.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    Ok(chosen)
}
