//! `cairn forget`: remove snapshots by a retention policy or by ID.

use anyhow::{Result, anyhow};
use cairn::Id;
use cairn::backend::{FileKind, Handle};
use cairn::policy::{self, GroupBy, Policy, UNLIMITED, Within};
use clap::Args;

use super::browse::Filter;
use super::{Global, Output};

/// A count: a number, or `unlimited` (also `-1`).
fn count(s: &str) -> Result<u32, String> {
    match s.trim() {
        "unlimited" | "-1" => Ok(UNLIMITED),
        t => t.parse().map_err(|_| format!("{s:?} is not a count (a number or \"unlimited\")")),
    }
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to forget (IDs, prefixes or "latest") instead of a policy.
    snapshots: Vec<String>,
    /// Keep the newest N snapshots.
    #[arg(long, value_name = "N", value_parser = count)]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have snapshots.
    #[arg(long, value_name = "N", value_parser = count)]
    keep_hourly: Option<u32>,
    /// … of each of the last N days.
    #[arg(long, value_name = "N", value_parser = count)]
    keep_daily: Option<u32>,
    /// … of each of the last N ISO weeks.
    #[arg(long, value_name = "N", value_parser = count)]
    keep_weekly: Option<u32>,
    /// … of each of the last N months.
    #[arg(long, value_name = "N", value_parser = count)]
    keep_monthly: Option<u32>,
    /// … of each of the last N years.
    #[arg(long, value_name = "N", value_parser = count)]
    keep_yearly: Option<u32>,
    /// Keep every snapshot within this period of the newest, e.g. 1y2m3d4h.
    #[arg(long, value_name = "DURATION")]
    keep_within: Option<Within>,
    /// Keep the newest snapshot of each hour within this period of the newest.
    #[arg(long, value_name = "DURATION")]
    keep_within_hourly: Option<Within>,
    /// … of each day.
    #[arg(long, value_name = "DURATION")]
    keep_within_daily: Option<Within>,
    /// … of each ISO week.
    #[arg(long, value_name = "DURATION")]
    keep_within_weekly: Option<Within>,
    /// … of each month.
    #[arg(long, value_name = "DURATION")]
    keep_within_monthly: Option<Within>,
    /// … of each year.
    #[arg(long, value_name = "DURATION")]
    keep_within_yearly: Option<Within>,
    /// Keep snapshots with these tags (a,b = both; repeat for either).
    #[arg(long, value_name = "TAGS")]
    keep_tag: Vec<String>,
    /// Apply the policy to each group of snapshots with the same host, paths, tags
    /// (any of them, comma-separated, or "" for one group).
    #[arg(long, default_value = "host,paths", value_name = "FIELDS")]
    group_by: GroupBy,
    #[command(flatten)]
    filter: Filter,
    /// Only print what would be removed.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Prune right after: remove the data no remaining snapshot uses.
    #[arg(long)]
    prune: bool,
    /// With --prune: see `cairn prune --max-unused`.
    #[arg(long, default_value = "5%", value_name = "PERCENT|SIZE|unlimited")]
    max_unused: String,
    /// With --prune: see `cairn prune --max-repack-size`.
    #[arg(long, value_name = "SIZE")]
    max_repack_size: Option<String>,
}

pub fn run(g: &Global, out: &Output, a: ForgetArgs) -> Result<i32> {
    let policy = Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within: a.keep_within,
        within_hourly: a.keep_within_hourly,
        within_daily: a.keep_within_daily,
        within_weekly: a.keep_within_weekly,
        within_monthly: a.keep_within_monthly,
        within_yearly: a.keep_within_yearly,
        tags: a
            .keep_tag
            .iter()
            .map(|t| t.split(',').filter(|x| !x.is_empty()).map(String::from).collect::<Vec<_>>())
            .filter(|t| !t.is_empty())
            .collect(),
    };
    if !a.snapshots.is_empty() && !policy.is_empty() {
        return Err(anyhow!("give either snapshots to forget or a --keep-* policy, not both"));
    }
    if a.snapshots.is_empty() && policy.is_empty() {
        return Err(anyhow!(
            "no policy given: use --keep-last, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly, \
             --keep-within, --keep-within-daily (-hourly, -weekly, -monthly, -yearly) or --keep-tag, or name \
             the snapshots to forget"
        ));
    }
    let prune_opts = if a.prune {
        Some(super::prune::options(&a.max_unused, a.max_repack_size.as_deref(), a.dry_run)?)
    } else {
        None
    };
    let repo = g.open()?;

    let (groups, remove): (Vec<policy::GroupResult>, Vec<Id>) = if a.snapshots.is_empty() {
        // Partial snapshots (interrupted backups') are the next backup's to
        // remove; a policy neither keeps nor forgets them.
        let snaps: Vec<_> = repo.snapshots()?.into_iter().filter(|(_, s)| !s.partial && a.filter.matches(s)).collect();
        let groups = policy::apply(&snaps, &policy, a.group_by);
        let remove = groups.iter().flat_map(|g| g.remove.iter().map(|r| r.id)).collect();
        (groups, remove)
    } else {
        let mut ids = Vec::new();
        for s in &a.snapshots {
            let (id, _) = repo.find_snapshot(s)?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        (Vec::new(), ids)
    };

    if !out.json {
        for g in &groups {
            out.info(format!("snapshots of {}:", g.key));
            for k in &g.keep {
                let time = k.time.format("%Y-%m-%d %H:%M:%S");
                out.info(format!("  keep   {}  {time}  {}", k.id.short(), k.reasons.join(", ")));
            }
            for r in &g.remove {
                out.info(format!("  remove {}  {}", r.id.short(), r.time.format("%Y-%m-%d %H:%M:%S")));
            }
        }
    }
    let mut report = serde_json::json!({
        "dry_run": a.dry_run,
        "groups": groups,
        "removed": remove.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
    });
    if a.dry_run {
        if out.json {
            out.json(&report);
        } else {
            out.info(format!("would remove {} snapshot(s)", remove.len()));
        }
        return Ok(0);
    }
    for id in &remove {
        repo.remove_file(&Handle::id(FileKind::Snapshot, id))
            .map_err(|e| anyhow::Error::from(e).context(format!("removing snapshot {}", id.short())))?;
    }
    if !out.json {
        out.info(format!("removed {} snapshot(s)", remove.len()));
    }
    if let Some(opts) = prune_opts {
        if out.json {
            report["prune"] = serde_json::to_value(cairn::prune::prune(&repo, &opts)?)?;
        } else {
            super::prune::prune_and_report(&repo, out, &opts)?;
        }
    }
    if out.json {
        out.json(&report);
    }
    Ok(0)
}
