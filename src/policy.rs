//! Retention policies for `forget`: which snapshots to keep, and why.
//!
//! Pure functions over snapshot manifests, with the semantics of restic's `forget`.
//! Snapshots are first [grouped](group) (by host, paths and/or tags); each group is
//! then sorted newest first (ties on time broken by ID, highest first) and walked
//! once. A snapshot is kept if any rule of the [`Policy`] keeps it, and every rule
//! looks at every snapshot, so one snapshot can be kept for several reasons:
//!
//! - `last N`: the first N snapshots.
//! - `hourly`/`daily`/`weekly`/`monthly`/`yearly N`: each rule remembers the bucket
//!   of the last snapshot it kept and how many it may still keep; a snapshot whose
//!   bucket differs from that one is kept. In effect, the newest snapshot of each of
//!   the N most recent buckets that hold snapshots. Buckets are taken from the
//!   snapshot's own recorded wall-clock time and offset (never converted to the
//!   time zone of the machine running `forget`): hour, day, ISO 8601 week
//!   (ISO year and week number), month, year.
//! - `within D`: every snapshot no older than the group's newest snapshot minus D,
//!   in calendar terms (see [`Within::earliest`]).
//! - `hourly`/`daily`/`weekly`/`monthly`/`yearly within D`: the newest snapshot of
//!   each hour (day, …) among the snapshots `within D`, without a count.
//! - tags: every snapshot carrying all tags of at least one entry.
//!
//! An empty policy (see [`Policy::is_empty`]) removes nothing: [`apply`] keeps every
//! snapshot with the reason `no policy`. The CLI refuses such a policy instead.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Days, FixedOffset, Months, TimeDelta, Timelike};
use serde::Serialize;

use crate::error::Error;
use crate::id::Id;
use crate::repo::snapshot::Snapshot;

/// The count that means "no limit": keep the newest snapshot of every hour, day,
/// week, month or year (every snapshot for `last`).
pub const UNLIMITED: u32 = u32::MAX;

/// A retention policy. [`Default`] is the empty policy.
///
/// A count of `None` or `Some(0)` means the rule is not used; [`UNLIMITED`] means
/// no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the newest N snapshots.
    pub last: Option<u32>,
    /// Keep the newest snapshot of each of the N most recent hours with snapshots.
    pub hourly: Option<u32>,
    /// … of each of the N most recent days.
    pub daily: Option<u32>,
    /// … of each of the N most recent ISO 8601 weeks (Monday to Sunday).
    pub weekly: Option<u32>,
    /// … of each of the N most recent months.
    pub monthly: Option<u32>,
    /// … of each of the N most recent years.
    pub yearly: Option<u32>,
    /// Keep every snapshot taken within this period before the group's newest one
    /// (a zero period is not a rule).
    pub within: Option<Within>,
    /// Keep the newest snapshot of each hour within this period before the
    /// group's newest snapshot.
    pub within_hourly: Option<Within>,
    /// … of each day.
    pub within_daily: Option<Within>,
    /// … of each ISO 8601 week.
    pub within_weekly: Option<Within>,
    /// … of each month.
    pub within_monthly: Option<Within>,
    /// … of each year.
    pub within_yearly: Option<Within>,
    /// Keep every snapshot that has all tags of at least one entry: `[["a", "b"],
    /// ["c"]]` keeps snapshots tagged both `a` and `b`, and those tagged `c`. An
    /// empty entry matches every snapshot (callers should refuse one).
    pub tags: Vec<Vec<String>>,
}

impl Policy {
    /// Whether no rule can keep anything: all counts unset or 0, no (or a zero)
    /// `within`, no tags. [`apply`] then keeps every snapshot.
    pub fn is_empty(&self) -> bool {
        Rule::ALL.iter().all(|r| r.count(self).unwrap_or(0) == 0 && r.within(self).is_none_or(|w| w.is_zero()))
            && self.within.is_none_or(|w| w.is_zero())
            && self.tags.is_empty()
    }
}

/// A calendar period for `keep within`: years, months, days and hours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Within {
    /// Years (12 months each).
    pub years: u32,
    /// Months (calendar months, clamped at month ends).
    pub months: u32,
    /// Days (calendar days of the recorded local time).
    pub days: u32,
    /// Hours (3600 seconds each).
    pub hours: u32,
}

const WITHIN_SYNTAX: &str = "expected numbers with the units y, m, d, h in that order, like 30d or 1y6m";

impl Within {
    /// Parses `1y2m3d4h`, `30d`, `2y`, …: any of the units `y` (years), `m`
    /// (months), `d` (days), `h` (hours), each at most once, in that order, each
    /// after a decimal number. The error is one line, for the user.
    pub fn parse(s: &str) -> Result<Within, String> {
        let invalid = |detail: &str| format!("invalid duration {s:?}: {detail}");
        if s.is_empty() {
            return Err(invalid(WITHIN_SYNTAX));
        }
        let mut w = Within::default();
        let mut rest = s;
        let mut next_unit = 0; // index into "ymdh" of the first unit still allowed
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(invalid(WITHIN_SYNTAX));
            }
            let n: u32 = rest[..digits].parse().map_err(|_| invalid(&format!("{} is too large", &rest[..digits])))?;
            let unit = match rest[digits..].chars().next() {
                Some(c) => c,
                None => return Err(invalid(&format!("{} has no unit (y, m, d or h)", &rest[..digits]))),
            };
            let Some(idx) = "ymdh".find(unit) else { return Err(invalid(WITHIN_SYNTAX)) };
            if idx < next_unit {
                return Err(invalid("units must come in the order y, m, d, h, each at most once"));
            }
            next_unit = idx + 1;
            *[&mut w.years, &mut w.months, &mut w.days, &mut w.hours][idx] = n;
            rest = &rest[digits + unit.len_utf8()..];
        }
        Ok(w)
    }

    /// Whether all parts are 0.
    pub fn is_zero(&self) -> bool {
        *self == Within::default()
    }

    /// The oldest time still "within" the period before `newest`: in `newest`'s own
    /// offset, years and months are subtracted first as calendar months (a day that
    /// does not exist becomes the month's last day: 31 March minus 1 month is
    /// 28 or 29 February), then calendar days, then hours. `None` if that is before
    /// the earliest representable time (then every snapshot is within).
    pub fn earliest(&self, newest: DateTime<FixedOffset>) -> Option<DateTime<FixedOffset>> {
        let months = self.years.checked_mul(12)?.checked_add(self.months)?;
        newest
            .checked_sub_months(Months::new(months))?
            .checked_sub_days(Days::new(u64::from(self.days)))?
            .checked_sub_signed(TimeDelta::try_hours(i64::from(self.hours))?)
    }
}

/// The canonical form: the non-zero parts (`1y2m`, `30d`), `0h` if all are 0.
impl fmt::Display for Within {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0h");
        }
        for (n, unit) in [(self.years, 'y'), (self.months, 'm'), (self.days, 'd'), (self.hours, 'h')] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

/// [`Within::parse`] with the library's error type ([`Error::InvalidArgument`]).
impl FromStr for Within {
    type Err = Error;
    fn from_str(s: &str) -> Result<Within, Error> {
        Within::parse(s).map_err(Error::InvalidArgument)
    }
}

/// Which snapshot fields split snapshots into groups that a policy is applied to
/// separately. All `false`: one group. restic's (and `cairn forget`'s) default is
/// host and paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupBy {
    /// Group by host name.
    pub host: bool,
    /// Group by the set of backed-up paths (order does not matter).
    pub paths: bool,
    /// Group by the set of tags (order does not matter).
    pub tags: bool,
}

impl GroupBy {
    /// Parses a comma-separated list of `host`, `paths` and `tags` (restic's
    /// spellings `hosts`, `path` and `tag` are accepted too), in any order; the
    /// empty string means one group. The error is one line, for the user.
    pub fn parse(s: &str) -> Result<GroupBy, String> {
        let mut by = GroupBy { host: false, paths: false, tags: false };
        if s.is_empty() {
            return Ok(by);
        }
        for word in s.split(',') {
            match word.trim() {
                "host" | "hosts" => by.host = true,
                "paths" | "path" => by.paths = true,
                "tags" | "tag" => by.tags = true,
                _ => {
                    return Err(format!(
                        "invalid grouping {s:?}: expected a comma-separated list of host, paths, tags (or nothing)"
                    ));
                }
            }
        }
        Ok(by)
    }

    /// The key of the group that `s` belongs to.
    pub fn key(&self, s: &Snapshot) -> GroupKey {
        let set = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v.dedup();
            v
        };
        GroupKey {
            hostname: self.host.then(|| s.hostname.clone()),
            paths: self.paths.then(|| set(&s.paths)),
            tags: self.tags.then(|| set(&s.tags)),
        }
    }
}

/// [`GroupBy::parse`] with the library's error type ([`Error::InvalidArgument`]).
impl FromStr for GroupBy {
    type Err = Error;
    fn from_str(s: &str) -> Result<GroupBy, Error> {
        GroupBy::parse(s).map_err(Error::InvalidArgument)
    }
}

/// What the snapshots of one group share: each field is set only when grouping by
/// it. Paths and tags are sorted, without duplicates. Groups are ordered by key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct GroupKey {
    /// The host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The backed-up paths.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// The tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// For headings: `host vm, paths [/etc, /home], tags []`, or `all snapshots`.
impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(h) = &self.hostname {
            parts.push(format!("host {h}"));
        }
        if let Some(p) = &self.paths {
            parts.push(format!("paths [{}]", p.join(", ")));
        }
        if let Some(t) = &self.tags {
            parts.push(format!("tags [{}]", t.join(", ")));
        }
        if parts.is_empty() { f.write_str("all snapshots") } else { f.write_str(&parts.join(", ")) }
    }
}

/// A snapshot the policy keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    /// Its ID.
    pub id: Id,
    /// Its recorded time.
    pub time: DateTime<FixedOffset>,
    /// Why, one entry per rule that keeps it, in this order: `last snapshot`,
    /// `hourly snapshot`, `daily snapshot`, `weekly snapshot`, `monthly snapshot`,
    /// `yearly snapshot`, `within 1y2m`, `tag a,b` (one per matching entry); or
    /// `no policy` for an empty policy.
    pub reasons: Vec<String>,
}

/// A snapshot the policy does not keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// Its ID.
    pub id: Id,
    /// Its recorded time.
    pub time: DateTime<FixedOffset>,
}

/// The decision for one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupResult {
    /// What its snapshots share.
    pub key: GroupKey,
    /// The snapshots kept, newest first.
    pub keep: Vec<Kept>,
    /// The snapshots to forget, newest first.
    pub remove: Vec<Removed>,
}

/// Splits `snaps` into groups by `by`: groups ordered by key, snapshots in each
/// newest first (ties on time: highest ID first). No snapshots, no groups.
pub fn group(snaps: &[(Id, Snapshot)], by: GroupBy) -> Vec<(GroupKey, Vec<(Id, Snapshot)>)> {
    group_refs(snaps, by)
        .into_iter()
        .map(|(k, v)| (k, v.into_iter().map(|(id, s)| (id, s.clone())).collect()))
        .collect()
}

/// Applies `policy` to each group of `snaps` (grouped by `by`, see [`group`]).
/// Every input snapshot ends up in exactly one `keep` or `remove` list.
pub fn apply(snaps: &[(Id, Snapshot)], policy: &Policy, by: GroupBy) -> Vec<GroupResult> {
    group_refs(snaps, by)
        .into_iter()
        .map(|(key, list)| {
            let (keep, remove) = decide(&list, policy);
            GroupResult { key, keep, remove }
        })
        .collect()
}

fn group_refs(snaps: &[(Id, Snapshot)], by: GroupBy) -> BTreeMap<GroupKey, Vec<(Id, &Snapshot)>> {
    let mut groups: BTreeMap<GroupKey, Vec<(Id, &Snapshot)>> = BTreeMap::new();
    for (id, s) in snaps {
        groups.entry(by.key(s)).or_default().push((*id, s));
    }
    for list in groups.values_mut() {
        list.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
    }
    groups
}

/// The counted rules, in the order their reasons are listed.
#[derive(Debug, Clone, Copy)]
enum Rule {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

/// A bucket: (year, month or ISO week, day, hour), unused parts 0; for `last`, the
/// position in the group, so that every snapshot is a bucket of its own.
type Bucket = (i64, u32, u32, u32);

impl Rule {
    const ALL: [Rule; 6] = [Rule::Last, Rule::Hourly, Rule::Daily, Rule::Weekly, Rule::Monthly, Rule::Yearly];

    fn count(self, p: &Policy) -> Option<u32> {
        match self {
            Rule::Last => p.last,
            Rule::Hourly => p.hourly,
            Rule::Daily => p.daily,
            Rule::Weekly => p.weekly,
            Rule::Monthly => p.monthly,
            Rule::Yearly => p.yearly,
        }
    }

    /// The period of the `within` form of the rule (`last` has none).
    fn within(self, p: &Policy) -> Option<Within> {
        match self {
            Rule::Last => None,
            Rule::Hourly => p.within_hourly,
            Rule::Daily => p.within_daily,
            Rule::Weekly => p.within_weekly,
            Rule::Monthly => p.within_monthly,
            Rule::Yearly => p.within_yearly,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Rule::Last => "last snapshot",
            Rule::Hourly => "hourly snapshot",
            Rule::Daily => "daily snapshot",
            Rule::Weekly => "weekly snapshot",
            Rule::Monthly => "monthly snapshot",
            Rule::Yearly => "yearly snapshot",
        }
    }

    /// The bucket of a snapshot taken at `t` (its recorded local time: chrono's
    /// `Datelike`/`Timelike` on a `DateTime<FixedOffset>` read the wall clock in
    /// that offset), at position `nr` of its group.
    fn bucket(self, t: &DateTime<FixedOffset>, nr: usize) -> Bucket {
        let y = i64::from(t.year());
        match self {
            Rule::Last => (nr as i64, 0, 0, 0),
            Rule::Hourly => (y, t.month(), t.day(), t.hour()),
            Rule::Daily => (y, t.month(), t.day(), 0),
            Rule::Weekly => (i64::from(t.iso_week().year()), t.iso_week().week(), 0, 0),
            Rule::Monthly => (y, t.month(), 0, 0),
            Rule::Yearly => (y, 0, 0, 0),
        }
    }
}

/// Decides one group, given newest first.
fn decide(list: &[(Id, &Snapshot)], policy: &Policy) -> (Vec<Kept>, Vec<Removed>) {
    let mut keep = Vec::new();
    let mut remove = Vec::new();
    if policy.is_empty() {
        let keep = list.iter().map(|(id, s)| Kept { id: *id, time: s.time, reasons: vec!["no policy".into()] });
        return (keep.collect(), remove);
    }
    struct Counter {
        rule: Rule,
        left: u32,
        last: Option<Bucket>,
        /// For the `within` form: the period and the earliest time it keeps
        /// (None: the period reaches past any time).
        within: Option<(Within, Option<DateTime<FixedOffset>>)>,
    }
    let newest = list.first().map(|(_, s)| s.time);
    let mut counters: Vec<Counter> = Rule::ALL
        .iter()
        .filter_map(|&rule| {
            rule.count(policy).filter(|&n| n > 0).map(|left| Counter { rule, left, last: None, within: None })
        })
        .chain(Rule::ALL.iter().filter_map(|&rule| {
            let w = rule.within(policy).filter(|w| !w.is_zero())?;
            let earliest = w.earliest(newest?);
            Some(Counter { rule, left: UNLIMITED, last: None, within: Some((w, earliest)) })
        }))
        .collect();
    // (period, earliest time kept); earliest None: the period reaches past any time.
    let within = match (policy.within.filter(|w| !w.is_zero()), list.first()) {
        (Some(w), Some((_, newest))) => Some((w, w.earliest(newest.time))),
        _ => None,
    };
    for (nr, (id, s)) in list.iter().enumerate() {
        let mut reasons = Vec::new();
        for c in counters.iter_mut().filter(|c| c.left > 0) {
            if c.within.is_some_and(|(_, earliest)| earliest.is_some_and(|e| s.time < e)) {
                continue;
            }
            let bucket = c.rule.bucket(&s.time, nr);
            if c.last != Some(bucket) {
                c.last = Some(bucket);
                if c.left != UNLIMITED {
                    c.left -= 1;
                }
                reasons.push(match c.within {
                    Some((w, _)) => format!("{} within {w}", c.rule.reason().trim_end_matches(" snapshot")),
                    None => c.rule.reason().to_string(),
                });
            }
        }
        if let Some((w, earliest)) = &within {
            if earliest.is_none_or(|e| s.time >= e) {
                reasons.push(format!("within {w}"));
            }
        }
        for entry in &policy.tags {
            if s.has_tags(entry) {
                reasons.push(format!("tag {}", entry.join(",")));
            }
        }
        if reasons.is_empty() {
            remove.push(Removed { id: *id, time: s.time });
        } else {
            keep.push(Kept { id: *id, time: s.time, reasons });
        }
    }
    (keep, remove)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::{BTreeSet, HashMap};

    const L: &str = "last snapshot";
    const H: &str = "hourly snapshot";
    const D: &str = "daily snapshot";
    const W: &str = "weekly snapshot";
    const M: &str = "monthly snapshot";
    const Y: &str = "yearly snapshot";

    fn id(n: u8) -> Id {
        let mut b = [0u8; 32];
        b[0] = n;
        Id(b)
    }

    /// Built through serde, so that fields added to `Snapshot` later take their defaults.
    fn snapshot(time: DateTime<FixedOffset>, host: &str, paths: &[&str], tags: &[&str]) -> Snapshot {
        serde_json::from_value(serde_json::json!({
            "time": time, "tree": Id::default(), "paths": paths, "hostname": host, "username": "u", "tags": tags,
        }))
        .unwrap()
    }

    /// `"2021-01-01T10:00:00+01:00 host=a paths=/x,/y tags=a,b id=7"`: the time,
    /// then optional fields (default host `h`, paths `/data`, no tags, ID = the
    /// snapshot's index in the case).
    fn parse_snap(index: usize, spec: &str) -> (Id, Snapshot) {
        let mut words = spec.split_whitespace();
        let time = DateTime::parse_from_rfc3339(words.next().unwrap()).unwrap();
        let (mut host, mut paths, mut tags, mut n) = ("h", vec!["/data"], vec![], index as u8);
        for w in words {
            let (k, v) = w.split_once('=').unwrap();
            match k {
                "host" => host = v,
                "paths" => paths = v.split(',').collect(),
                "tags" => tags = v.split(',').collect(),
                "id" => n = v.parse().unwrap(),
                _ => panic!("bad snapshot field {k}"),
            }
        }
        (id(n), snapshot(time, host, &paths, &tags))
    }

    /// `"last=2 daily=all within=1m tag=a,b"`; `all` is [`UNLIMITED`].
    fn parse_policy(spec: &str) -> Policy {
        let mut p = Policy::default();
        for w in spec.split_whitespace() {
            let (k, v) = w.split_once('=').unwrap();
            let n = || Some(if v == "all" { UNLIMITED } else { v.parse().unwrap() });
            match k {
                "last" => p.last = n(),
                "hourly" => p.hourly = n(),
                "daily" => p.daily = n(),
                "weekly" => p.weekly = n(),
                "monthly" => p.monthly = n(),
                "yearly" => p.yearly = n(),
                "within" => p.within = Some(Within::parse(v).unwrap()),
                "within-hourly" => p.within_hourly = Some(Within::parse(v).unwrap()),
                "within-daily" => p.within_daily = Some(Within::parse(v).unwrap()),
                "within-weekly" => p.within_weekly = Some(Within::parse(v).unwrap()),
                "within-monthly" => p.within_monthly = Some(Within::parse(v).unwrap()),
                "within-yearly" => p.within_yearly = Some(Within::parse(v).unwrap()),
                "tag" => p.tags.push(v.split(',').map(String::from).collect()),
                _ => panic!("bad policy field {k}"),
            }
        }
        p
    }

    struct Case {
        name: &'static str,
        snaps: &'static [&'static str],
        policy: &'static str,
        by: &'static str,
        groups: usize,
        /// Index into `snaps` and the reasons, computed by hand; all others removed.
        keep: &'static [(usize, &'static [&'static str])],
    }

    const CASES: &[Case] = &[
        Case {
            name: "last 2 keeps the newest two, whatever the input order",
            snaps: &[
                "2021-01-03T10:00:00+00:00",
                "2021-01-01T10:00:00+00:00",
                "2021-01-04T10:00:00+00:00",
                "2021-01-02T10:00:00+00:00",
            ],
            policy: "last=2",
            by: "",
            groups: 1,
            keep: &[(2, &[L]), (0, &[L])],
        },
        Case {
            name: "last larger than the number of snapshots keeps them all",
            snaps: &["2021-01-01T10:00:00+00:00", "2021-01-02T10:00:00+00:00", "2021-01-03T10:00:00+00:00"],
            policy: "last=10",
            by: "",
            groups: 1,
            keep: &[(0, &[L]), (1, &[L]), (2, &[L])],
        },
        Case {
            name: "last unlimited keeps them all",
            snaps: &[
                "2021-01-01T10:00:00+00:00",
                "2021-01-01T10:00:01+00:00",
                "2020-01-01T10:00:00+00:00",
                "1999-01-01T10:00:00+00:00",
            ],
            policy: "last=all",
            by: "",
            groups: 1,
            keep: &[(0, &[L]), (1, &[L]), (2, &[L]), (3, &[L])],
        },
        Case {
            name: "hourly keeps the newest snapshot of each of the 2 most recent hours",
            snaps: &[
                "2021-05-05T10:05:00+00:00",
                "2021-05-05T10:50:00+00:00",
                "2021-05-05T11:10:00+00:00",
                "2021-05-05T13:00:00+00:00",
                "2021-05-05T13:30:00+00:00",
            ],
            policy: "hourly=2",
            by: "",
            groups: 1,
            keep: &[(4, &[H]), (2, &[H])],
        },
        Case {
            name: "daily counts only days that have snapshots",
            snaps: &[
                "2021-05-01T08:00:00+00:00",
                "2021-05-01T20:00:00+00:00",
                "2021-05-02T09:00:00+00:00",
                "2021-05-04T12:00:00+00:00",
                "2021-05-04T13:00:00+00:00",
                "2021-05-05T07:00:00+00:00",
            ],
            policy: "daily=3",
            by: "",
            groups: 1,
            keep: &[(5, &[D]), (4, &[D]), (2, &[D])],
        },
        Case {
            name: "daily unlimited keeps the newest of every day",
            snaps: &[
                "2021-01-01T10:00:00+00:00",
                "2021-01-01T12:00:00+00:00",
                "2021-01-02T08:00:00+00:00",
                "2021-01-03T01:00:00+00:00",
                "2021-01-03T02:00:00+00:00",
            ],
            policy: "daily=all",
            by: "",
            groups: 1,
            keep: &[(1, &[D]), (2, &[D]), (4, &[D])],
        },
        Case {
            name: "weekly: 2020-12-31 and 2021-01-03 are both in ISO week 2020-W53, 2021-01-04 in 2021-W01",
            snaps: &["2020-12-31T12:00:00+00:00", "2021-01-03T12:00:00+00:00", "2021-01-04T12:00:00+00:00"],
            policy: "weekly=10",
            by: "",
            groups: 1,
            keep: &[(2, &[W]), (1, &[W])],
        },
        Case {
            name: "yearly: 2020-12-31 and 2021-01-03 are in different years",
            snaps: &["2020-12-31T12:00:00+00:00", "2021-01-03T12:00:00+00:00", "2021-01-04T12:00:00+00:00"],
            policy: "yearly=10",
            by: "",
            groups: 1,
            keep: &[(2, &[Y]), (0, &[Y])],
        },
        Case {
            name: "weekly and yearly across a new year: several reasons on one snapshot",
            snaps: &["2020-12-31T12:00:00+00:00", "2021-01-03T12:00:00+00:00", "2021-01-04T12:00:00+00:00"],
            policy: "weekly=10 yearly=10",
            by: "",
            groups: 1,
            keep: &[(2, &[W, Y]), (1, &[W]), (0, &[Y])],
        },
        Case {
            name: "weekly 3 across a new year: 2021-W02, 2021-W01, 2020-W53",
            snaps: &[
                "2020-12-28T12:00:00+00:00",
                "2020-12-31T12:00:00+00:00",
                "2021-01-03T12:00:00+00:00",
                "2021-01-04T12:00:00+00:00",
                "2021-01-10T12:00:00+00:00",
                "2021-01-11T12:00:00+00:00",
            ],
            policy: "weekly=3",
            by: "",
            groups: 1,
            keep: &[(5, &[W]), (4, &[W]), (2, &[W])],
        },
        Case {
            name: "weekly: 2019-12-30 is in ISO week 2020-W01, 2019-12-29 in 2019-W52",
            snaps: &["2019-12-29T12:00:00+00:00", "2019-12-30T12:00:00+00:00", "2020-01-05T12:00:00+00:00"],
            policy: "weekly=5",
            by: "",
            groups: 1,
            keep: &[(2, &[W]), (0, &[W])],
        },
        Case {
            name: "monthly by recorded local time, not UTC (in UTC these are only June and November)",
            snaps: &[
                "2021-06-30T12:00:00+02:00",
                "2021-07-01T01:30:00+02:00",
                "2021-11-30T12:00:00+01:00",
                "2021-12-01T00:30:00+01:00",
            ],
            policy: "monthly=10",
            by: "",
            groups: 1,
            keep: &[(3, &[M]), (2, &[M]), (1, &[M]), (0, &[M])],
        },
        Case {
            name: "monthly: 00:30+01:00 on 1 February is February, though 30 minutes after 23:00Z on 31 January",
            snaps: &[
                "2021-01-15T12:00:00+00:00",
                "2021-01-31T23:00:00+00:00",
                "2021-02-01T00:30:00+01:00",
                "2021-03-01T12:00:00+00:00",
            ],
            policy: "monthly=3",
            by: "",
            groups: 1,
            keep: &[(3, &[M]), (2, &[M]), (1, &[M])],
        },
        Case {
            name: "yearly 2 keeps the newest of the two most recent years with snapshots",
            snaps: &[
                "2019-06-01T12:00:00+00:00",
                "2019-12-31T23:59:59+00:00",
                "2020-01-01T00:00:00+00:00",
                "2022-05-05T12:00:00+00:00",
            ],
            policy: "yearly=2",
            by: "",
            groups: 1,
            keep: &[(3, &[Y]), (2, &[Y])],
        },
        Case {
            name: "DST ends: 02:10+02:00 and 02:10+01:00 are an hour apart but the same local hour",
            snaps: &["2021-10-31T02:10:00+02:00", "2021-10-31T02:10:00+01:00", "2021-10-31T01:50:00+02:00"],
            policy: "hourly=5",
            by: "",
            groups: 1,
            keep: &[(1, &[H]), (2, &[H])],
        },
        Case {
            name: "DST starts: 01:30+01:00 and 03:30+02:00 are an hour apart and two local hours",
            snaps: &["2021-03-28T00:45:00+01:00", "2021-03-28T01:30:00+01:00", "2021-03-28T03:30:00+02:00"],
            policy: "hourly=2",
            by: "",
            groups: 1,
            keep: &[(2, &[H]), (1, &[H])],
        },
        Case {
            name: "one instant recorded as 01:30+02:00 and 00:30+01:00 is two local hours",
            snaps: &["2021-06-02T01:30:00+02:00 id=1", "2021-06-02T00:30:00+01:00 id=2"],
            policy: "hourly=2",
            by: "",
            groups: 1,
            keep: &[(0, &[H]), (1, &[H])],
        },
        Case {
            name: "one instant recorded as 01:30+02:00 and 00:30+01:00 is one local day: the higher ID is kept",
            snaps: &["2021-06-02T01:30:00+02:00 id=9", "2021-06-02T00:30:00+01:00 id=2"],
            policy: "daily=5",
            by: "",
            groups: 1,
            keep: &[(0, &[D])],
        },
        Case {
            name: "one instant recorded as 00:30+02:00 and 23:30+01:00 is two local days",
            snaps: &["2021-06-02T00:30:00+02:00", "2021-06-01T23:30:00+01:00"],
            policy: "daily=2",
            by: "",
            groups: 1,
            keep: &[(0, &[D]), (1, &[D])],
        },
        Case {
            name: "ties: of identical times, last 1 keeps the highest ID",
            snaps: &[
                "2021-01-01T00:00:00+00:00 id=5",
                "2021-01-01T00:00:00+00:00 id=9",
                "2021-01-01T00:00:00+00:00 id=1",
            ],
            policy: "last=1",
            by: "",
            groups: 1,
            keep: &[(1, &[L])],
        },
        Case {
            name: "ties: of identical times, last 2 keeps the two highest IDs",
            snaps: &[
                "2021-01-01T00:00:00+00:00 id=5",
                "2021-01-01T00:00:00+00:00 id=9",
                "2021-01-01T00:00:00+00:00 id=1",
            ],
            policy: "last=2",
            by: "",
            groups: 1,
            keep: &[(1, &[L]), (0, &[L])],
        },
        Case {
            name: "within 1m from 31 March reaches back to 28 February (clamped), same time of day",
            snaps: &[
                "2021-03-31T12:00:00+00:00",
                "2021-03-01T00:00:00+00:00",
                "2021-02-28T12:00:00+00:00",
                "2021-02-28T11:59:59+00:00",
                "2021-01-31T12:00:00+00:00",
            ],
            policy: "within=1m",
            by: "",
            groups: 1,
            keep: &[(0, &["within 1m"]), (1, &["within 1m"]), (2, &["within 1m"])],
        },
        Case {
            name: "within 1m from 31 March of a leap year reaches back to 29 February",
            snaps: &["2020-03-31T00:00:00+00:00", "2020-02-29T00:00:00+00:00", "2020-02-28T23:00:00+00:00"],
            policy: "within=1m",
            by: "",
            groups: 1,
            keep: &[(0, &["within 1m"]), (1, &["within 1m"])],
        },
        Case {
            name: "within 1y1d2h: 12 months, then a day, then two hours",
            snaps: &[
                "2021-03-01T10:00:00+00:00",
                "2020-02-29T08:00:00+00:00",
                "2020-02-29T07:59:00+00:00",
                "2020-06-01T00:00:00+00:00",
            ],
            policy: "within=1y1d2h",
            by: "",
            groups: 1,
            keep: &[(0, &["within 1y1d2h"]), (1, &["within 1y1d2h"]), (3, &["within 1y1d2h"])],
        },
        Case {
            name: "within counts months in the newest snapshot's offset: 31 Mar 00:30+02:00 - 1m = 27 Feb 22:30Z",
            snaps: &["2021-03-31T00:30:00+02:00", "2021-02-28T00:00:00+00:00", "2021-02-27T22:29:00+00:00"],
            policy: "within=1m",
            by: "",
            groups: 1,
            keep: &[(0, &["within 1m"]), (1, &["within 1m"])],
        },
        Case {
            name: "within is relative to the newest snapshot of each group",
            snaps: &[
                "2021-05-10T00:00:00+00:00 host=a",
                "2021-05-01T00:00:00+00:00 host=a",
                "2021-04-29T23:00:00+00:00 host=a",
                "2021-01-10T00:00:00+00:00 host=b",
                "2021-01-05T00:00:00+00:00 host=b",
                "2020-12-30T00:00:00+00:00 host=b",
            ],
            policy: "within=10d",
            by: "host",
            groups: 2,
            keep: &[(0, &["within 10d"]), (1, &["within 10d"]), (3, &["within 10d"]), (4, &["within 10d"])],
        },
        Case {
            name: "daily within 3d: the newest of each day no older than 3 days before the newest",
            snaps: &[
                "2021-01-10T12:00:00+00:00",
                "2021-01-10T08:00:00+00:00",
                "2021-01-09T20:00:00+00:00",
                "2021-01-08T09:00:00+00:00",
                "2021-01-07T13:00:00+00:00",
                "2021-01-07T11:00:00+00:00",
                "2021-01-01T10:00:00+00:00",
            ],
            policy: "within-daily=3d",
            by: "",
            groups: 1,
            keep: &[
                (0, &["daily within 3d"]),
                (2, &["daily within 3d"]),
                (3, &["daily within 3d"]),
                (4, &["daily within 3d"]),
            ],
        },
        Case {
            name: "weekly within 21d and monthly within 1y together, each with its own buckets",
            snaps: &[
                "2021-03-31T10:00:00+00:00",
                "2021-03-29T10:00:00+00:00",
                "2021-03-24T10:00:00+00:00",
                "2021-03-10T10:00:00+00:00",
                "2021-02-15T10:00:00+00:00",
                "2021-02-01T10:00:00+00:00",
                "2020-03-01T10:00:00+00:00",
            ],
            policy: "within-weekly=21d within-monthly=1y",
            by: "",
            groups: 1,
            keep: &[
                (0, &["weekly within 21d", "monthly within 1y"]),
                (2, &["weekly within 21d"]),
                (3, &["weekly within 21d"]),
                (4, &["monthly within 1y"]),
            ],
        },
        Case {
            name: "tags: all tags of one entry; the newest snapshot may go",
            snaps: &[
                "2021-01-01T00:00:00+00:00 tags=a,b",
                "2021-01-02T00:00:00+00:00 tags=a",
                "2021-01-03T00:00:00+00:00 tags=c,d",
                "2021-01-04T00:00:00+00:00 tags=a,b,c",
                "2021-01-05T00:00:00+00:00",
            ],
            policy: "tag=a,b tag=c",
            by: "",
            groups: 1,
            keep: &[(0, &["tag a,b"]), (2, &["tag c"]), (3, &["tag a,b", "tag c"])],
        },
        Case {
            name: "last, daily, weekly, monthly and yearly together",
            snaps: &[
                "2021-05-10T10:00:00+00:00",
                "2021-05-10T09:00:00+00:00",
                "2021-05-09T12:00:00+00:00",
                "2021-04-20T12:00:00+00:00",
            ],
            policy: "last=1 daily=2 weekly=2 monthly=2 yearly=1",
            by: "",
            groups: 1,
            keep: &[(0, &[L, D, W, M, Y]), (2, &[D, W]), (3, &[M])],
        },
        Case {
            name: "last, within and tag together",
            snaps: &[
                "2021-01-10T00:00:00+00:00 tags=x",
                "2021-01-08T00:00:00+00:00",
                "2021-01-07T23:00:00+00:00 tags=x",
                "2021-01-01T00:00:00+00:00",
            ],
            policy: "last=1 within=2d tag=x",
            by: "",
            groups: 1,
            keep: &[(0, &[L, "within 2d", "tag x"]), (1, &["within 2d"]), (2, &["tag x"])],
        },
        Case {
            name: "group by host: last 1 of each host",
            snaps: &[
                "2021-01-01T00:00:00+00:00 host=a",
                "2021-01-02T00:00:00+00:00 host=b",
                "2021-01-03T00:00:00+00:00 host=a",
                "2021-01-04T00:00:00+00:00 host=b",
                "2021-01-05T00:00:00+00:00 host=c",
            ],
            policy: "last=1",
            by: "host",
            groups: 3,
            keep: &[(2, &[L]), (3, &[L]), (4, &[L])],
        },
        Case {
            name: "group by nothing: last 1 of all hosts",
            snaps: &[
                "2021-01-01T00:00:00+00:00 host=a",
                "2021-01-02T00:00:00+00:00 host=b",
                "2021-01-03T00:00:00+00:00 host=a",
                "2021-01-04T00:00:00+00:00 host=b",
                "2021-01-05T00:00:00+00:00 host=c",
            ],
            policy: "last=1",
            by: "",
            groups: 1,
            keep: &[(4, &[L])],
        },
        Case {
            name: "group by paths: the order of the paths does not matter, the host does not count",
            snaps: &[
                "2021-01-01T00:00:00+00:00 paths=/x",
                "2021-01-02T00:00:00+00:00 paths=/x,/y",
                "2021-01-03T00:00:00+00:00 paths=/y,/x",
                "2021-01-04T00:00:00+00:00 paths=/x host=other",
            ],
            policy: "last=1",
            by: "paths",
            groups: 2,
            keep: &[(3, &[L]), (2, &[L])],
        },
        Case {
            name: "group by tags: the order of the tags does not matter, no tags is a group",
            snaps: &[
                "2021-01-01T00:00:00+00:00 tags=a",
                "2021-01-02T00:00:00+00:00 tags=b,a",
                "2021-01-03T00:00:00+00:00 tags=a,b",
                "2021-01-04T00:00:00+00:00",
                "2021-01-05T00:00:00+00:00 tags=a",
            ],
            policy: "last=1",
            by: "tags",
            groups: 3,
            keep: &[(4, &[L]), (2, &[L]), (3, &[L])],
        },
        Case {
            name: "group by host and paths: daily 1 in each",
            snaps: &[
                "2021-01-01T00:00:00+00:00 host=a paths=/x",
                "2021-01-02T00:00:00+00:00 host=a paths=/y",
                "2021-01-03T00:00:00+00:00 host=b paths=/x",
                "2021-01-04T00:00:00+00:00 host=a paths=/x",
            ],
            policy: "daily=1",
            by: "host,paths",
            groups: 3,
            keep: &[(3, &[D]), (1, &[D]), (2, &[D])],
        },
        Case {
            name: "the user guide's example (2026-11-26 is a Thursday; 23 to 29 November is one ISO week)",
            snaps: &[
                "2026-11-26T20:00:00+01:00",
                "2026-11-26T08:00:00+01:00",
                "2026-11-25T20:00:00+01:00",
                "2026-11-23T20:00:00+01:00",
                "2026-11-22T20:00:00+01:00",
                "2026-11-15T20:00:00+01:00",
                "2026-10-31T20:00:00+01:00",
                "2026-09-30T20:00:00+02:00",
                "2025-12-31T20:00:00+01:00",
            ],
            policy: "daily=3 weekly=2 monthly=3 yearly=2",
            by: "host,paths",
            groups: 1,
            keep: &[(0, &[D, W, M, Y]), (2, &[D]), (3, &[D]), (4, &[W]), (6, &[M]), (7, &[M]), (8, &[Y])],
        },
        Case { name: "no snapshots: no groups", snaps: &[], policy: "last=1", by: "host", groups: 0, keep: &[] },
        Case {
            name: "an empty policy keeps everything",
            snaps: &["2021-01-01T00:00:00+00:00", "2021-01-02T00:00:00+00:00"],
            policy: "",
            by: "",
            groups: 1,
            keep: &[(0, &["no policy"]), (1, &["no policy"])],
        },
        Case {
            name: "counts of 0 and a zero within are no rules: the policy is empty",
            snaps: &["2021-01-01T00:00:00+00:00", "2021-01-02T00:00:00+00:00"],
            policy: "last=0 daily=0 within=0d",
            by: "",
            groups: 1,
            keep: &[(0, &["no policy"]), (1, &["no policy"])],
        },
        Case {
            name: "a count of 0 beside another rule keeps nothing by itself",
            snaps: &["2021-01-01T00:00:00+00:00", "2021-01-02T00:00:00+00:00", "2021-01-02T01:00:00+00:00"],
            policy: "last=0 daily=1",
            by: "",
            groups: 1,
            keep: &[(2, &[D])],
        },
        Case {
            name: "with mixed offsets a day can recur, and counts again (restic's last-bucket rule)",
            snaps: &["2021-01-02T01:00:00+05:00", "2021-01-01T21:00:00+00:00", "2021-01-02T03:00:00+05:00"],
            policy: "daily=3",
            by: "",
            groups: 1,
            keep: &[(2, &[D]), (1, &[D]), (0, &[D])],
        },
    ];

    fn newest_first(a: &(DateTime<FixedOffset>, Id), b: &(DateTime<FixedOffset>, Id)) -> std::cmp::Ordering {
        b.0.cmp(&a.0).then(b.1.cmp(&a.1))
    }

    /// What one case did: (number of groups, kept index -> reasons, removed indices,
    /// whether every list is newest first).
    type Outcome = (usize, BTreeMap<usize, Vec<String>>, BTreeSet<usize>, bool);

    fn run_case(case: &Case) -> Outcome {
        let snaps: Vec<(Id, Snapshot)> = case.snaps.iter().enumerate().map(|(i, s)| parse_snap(i, s)).collect();
        let index: HashMap<Id, usize> = snaps.iter().enumerate().map(|(i, (id, _))| (*id, i)).collect();
        assert_eq!(index.len(), snaps.len(), "{}: IDs must differ", case.name);
        let result = apply(&snaps, &parse_policy(case.policy), GroupBy::parse(case.by).unwrap());
        let (mut kept, mut removed, mut sorted) = (BTreeMap::new(), BTreeSet::new(), true);
        for g in &result {
            let keep: Vec<_> = g.keep.iter().map(|k| (k.time, k.id)).collect();
            let remove: Vec<_> = g.remove.iter().map(|r| (r.time, r.id)).collect();
            sorted &= keep.is_sorted_by(|a, b| newest_first(a, b).is_le());
            sorted &= remove.is_sorted_by(|a, b| newest_first(a, b).is_le());
            for (id, time) in keep.iter().chain(&remove).map(|(t, id)| (id, t)) {
                assert_eq!(*time, snaps[index[id]].1.time, "{}: time of {id:?}", case.name);
            }
            for k in &g.keep {
                assert!(kept.insert(index[&k.id], k.reasons.clone()).is_none(), "{}: kept twice", case.name);
            }
            for r in &g.remove {
                assert!(removed.insert(index[&r.id]), "{}: removed twice", case.name);
            }
        }
        (result.len(), kept, removed, sorted)
    }

    #[test]
    fn table() {
        assert!(CASES.len() >= 20);
        let mut failures = Vec::new();
        for case in CASES {
            let kept: BTreeMap<usize, Vec<String>> =
                case.keep.iter().map(|(i, r)| (*i, r.iter().map(|s| s.to_string()).collect())).collect();
            let removed: BTreeSet<usize> = (0..case.snaps.len()).filter(|i| !kept.contains_key(i)).collect();
            let expected = (case.groups, kept, removed, true);
            let got = run_case(case);
            if got != expected {
                failures.push(format!("{}:\n  expected {expected:?}\n  got      {got:?}", case.name));
            }
        }
        assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), CASES.len(), failures.join("\n"));
    }

    #[test]
    fn keep_and_remove_lists_are_newest_first_with_ties_by_id() {
        let specs = [
            "2021-01-01T00:00:00+00:00 id=3",
            "2021-01-03T00:00:00+00:00 id=1",
            "2021-01-02T01:00:00+01:00 id=7", // the same instant as the next
            "2021-01-02T00:00:00+00:00 id=8",
            "2021-01-02T00:00:00+00:00 id=2",
        ];
        let snaps: Vec<_> = specs.iter().enumerate().map(|(i, s)| parse_snap(i, s)).collect();
        let r = apply(&snaps, &parse_policy("last=3"), GroupBy::parse("").unwrap());
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].keep.iter().map(|k| k.id).collect::<Vec<_>>(), [id(1), id(8), id(7)]);
        assert_eq!(r[0].remove.iter().map(|k| k.id).collect::<Vec<_>>(), [id(2), id(3)]);
        let grouped = group(&snaps, GroupBy::parse("").unwrap());
        assert_eq!(grouped[0].1.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [id(1), id(8), id(7), id(2), id(3)]);
    }

    #[test]
    fn empty_group_decides_nothing() {
        let (keep, remove) = decide(&[], &parse_policy("last=1 within=1d tag=a"));
        assert!(keep.is_empty() && remove.is_empty());
        assert!(apply(&[], &Policy::default(), GroupBy::parse("host").unwrap()).is_empty());
        assert!(group(&[], GroupBy::parse("").unwrap()).is_empty());
    }

    #[test]
    fn groups_keys_and_order() {
        let specs = [
            "2021-01-01T00:00:00+00:00 host=b paths=/y,/x tags=t,s,t",
            "2021-01-02T00:00:00+00:00 host=a paths=/x",
            "2021-01-03T00:00:00+00:00 host=b paths=/x,/y tags=s,t",
            "2021-01-04T00:00:00+00:00 host=a paths=/x tags=s",
        ];
        let snaps: Vec<_> = specs.iter().enumerate().map(|(i, s)| parse_snap(i, s)).collect();
        let strs = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());

        let g = group(&snaps, GroupBy::parse("host,paths").unwrap());
        let keys: Vec<_> =
            g.iter().map(|(k, v)| (k.clone(), v.iter().map(|(id, _)| *id).collect::<Vec<_>>())).collect();
        assert_eq!(
            keys,
            [
                (GroupKey { hostname: Some("a".into()), paths: strs(&["/x"]), tags: None }, vec![id(3), id(1)]),
                (GroupKey { hostname: Some("b".into()), paths: strs(&["/x", "/y"]), tags: None }, vec![id(2), id(0)]),
            ]
        );
        assert_eq!(g[1].0.to_string(), "host b, paths [/x, /y]");

        let g = group(&snaps, GroupBy::parse("tags").unwrap());
        let keys: Vec<_> = g.iter().map(|(k, v)| (k.tags.clone(), v.len())).collect();
        assert_eq!(keys, [(strs(&[]), 1), (strs(&["s"]), 1), (strs(&["s", "t"]), 2)]);
        assert_eq!(g[0].0.to_string(), "tags []");

        let g = group(&snaps, GroupBy::parse("").unwrap());
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].0, GroupKey { hostname: None, paths: None, tags: None });
        assert_eq!(g[0].0.to_string(), "all snapshots");
        // The snapshots themselves come back unchanged.
        assert_eq!(g[0].1[3], snaps[0]);
    }

    #[test]
    fn json_shape() {
        let snaps = vec![
            parse_snap(1, "2021-01-02T10:00:00+01:00 host=vm tags=a"),
            parse_snap(2, "2021-01-01T10:00:00+01:00 host=vm"),
        ];
        let r = apply(&snaps, &parse_policy("last=1 tag=a"), GroupBy::parse("host").unwrap());
        let v = serde_json::to_value(&r).unwrap();
        let expected = serde_json::json!([{
            "key": {"hostname": "vm"},
            "keep": [{"id": id(1).to_hex(), "time": "2021-01-02T10:00:00+01:00", "reasons": ["last snapshot", "tag a"]}],
            "remove": [{"id": id(2).to_hex(), "time": "2021-01-01T10:00:00+01:00"}],
        }]);
        assert_eq!(v, expected);
    }

    #[test]
    fn within_earliest_examples_of_the_user_guide() {
        let t = |s| DateTime::parse_from_rfc3339(s).unwrap();
        let newest = t("2026-03-31T14:00:00+02:00");
        for (w, earliest) in [
            ("1m", "2026-02-28T14:00:00+02:00"),
            ("1y1d2h", "2025-03-30T12:00:00+02:00"),
            ("30d", "2026-03-01T14:00:00+02:00"),
            ("1y1m", "2025-02-28T14:00:00+02:00"),
            ("25m", "2024-02-29T14:00:00+02:00"),
            ("36h", "2026-03-30T02:00:00+02:00"),
        ] {
            let got = Within::parse(w).unwrap().earliest(newest).unwrap();
            assert_eq!(got, t(earliest), "{w}");
            assert_eq!(got.offset(), newest.offset(), "{w}");
        }
    }

    #[test]
    fn within_beyond_representable_times_keeps_everything() {
        let snaps = vec![parse_snap(0, "2021-01-02T10:00:00+00:00"), parse_snap(1, "1900-01-01T10:00:00+00:00")];
        for w in [
            Within { years: u32::MAX, ..Default::default() },  // months overflow u32
            Within { years: 1_000_000, ..Default::default() }, // before chrono's range
            Within { days: u32::MAX, hours: u32::MAX, ..Default::default() },
        ] {
            let policy = Policy { within: Some(w), ..Default::default() };
            let r = apply(&snaps, &policy, GroupBy::parse("").unwrap());
            assert_eq!(r[0].keep.len(), 2, "{w}");
            assert!(r[0].remove.is_empty());
            assert_eq!(r[0].keep[1].reasons, [format!("within {w}")]);
        }
    }

    #[test]
    fn policy_is_empty() {
        assert!(Policy::default().is_empty());
        assert!(parse_policy("last=0 hourly=0 daily=0 weekly=0 monthly=0 yearly=0 within=0y0m0d0h").is_empty());
        for p in ["last=1", "hourly=1", "daily=1", "weekly=1", "monthly=1", "yearly=all", "within=1h", "tag=a"] {
            assert!(!parse_policy(p).is_empty(), "{p}");
        }
    }

    #[test]
    fn within_parse_valid() {
        let w = |years, months, days, hours| Within { years, months, days, hours };
        for (s, expected, canonical) in [
            ("1y2m3d4h", w(1, 2, 3, 4), "1y2m3d4h"),
            ("30d", w(0, 0, 30, 0), "30d"),
            ("2y", w(2, 0, 0, 0), "2y"),
            ("1y4h", w(1, 0, 0, 4), "1y4h"),
            ("18m", w(0, 18, 0, 0), "18m"),
            ("1m0d", w(0, 1, 0, 0), "1m"),
            ("007h", w(0, 0, 0, 7), "7h"),
            ("0d", w(0, 0, 0, 0), "0h"),
            ("4294967295h", w(0, 0, 0, u32::MAX), "4294967295h"),
        ] {
            assert_eq!(Within::parse(s), Ok(expected), "{s}");
            assert_eq!(expected.to_string(), canonical, "{s}");
            assert_eq!(s.parse::<Within>().unwrap(), expected, "{s}");
        }
        assert!(Within::parse("0d").unwrap().is_zero());
        assert!(!Within::parse("1h").unwrap().is_zero());
    }

    #[test]
    fn within_parse_invalid() {
        for s in [
            "",
            "d",
            "1",
            "12",
            "1x",
            "y1",
            "1d1y",
            "1d1d",
            "1h1m",
            "-1d",
            "+1d",
            "1 d",
            " 1d",
            "1d ",
            "1D",
            "1.5d",
            "1d2",
            "4294967296h",
            "99999999999999999999y",
            "1w",
            "1dd",
            "1y2m3d4h5h",
            "１d",
        ] {
            let err = Within::parse(s).expect_err(s);
            assert!(err.starts_with("invalid duration ") && !err.contains('\n'), "{s}: {err}");
            assert!(matches!(s.parse::<Within>(), Err(Error::InvalidArgument(_))), "{s}");
        }
        assert!(Within::parse("4294967296h").unwrap_err().contains("too large"));
        assert!(Within::parse("1d1y").unwrap_err().contains("order"));
        assert!(Within::parse("5").unwrap_err().contains("no unit"));
    }

    #[test]
    fn group_by_parse() {
        let by = |host, paths, tags| GroupBy { host, paths, tags };
        for (s, expected) in [
            ("", by(false, false, false)),
            ("host", by(true, false, false)),
            ("paths", by(false, true, false)),
            ("tags", by(false, false, true)),
            ("host,paths", by(true, true, false)),
            ("paths,host", by(true, true, false)),
            ("host, paths ,tags", by(true, true, true)),
            ("hosts,path,tag", by(true, true, true)),
            ("host,host", by(true, false, false)),
        ] {
            assert_eq!(GroupBy::parse(s), Ok(expected), "{s:?}");
            assert_eq!(s.parse::<GroupBy>().unwrap(), expected, "{s:?}");
        }
        for s in ["foo", "host,", ",host", "host,,paths", "host paths", "HOST", "hostname", " ", "host;paths"] {
            let err = GroupBy::parse(s).expect_err(s);
            assert!(err.starts_with("invalid grouping ") && !err.contains('\n'), "{s:?}: {err}");
            assert!(matches!(s.parse::<GroupBy>(), Err(Error::InvalidArgument(_))), "{s:?}");
        }
    }

    /// A small deterministic generator (SplitMix64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
        fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
            &v[self.below(v.len() as u64) as usize]
        }
    }

    const OFFSETS: [i32; 6] = [0, 3600, 7200, -5 * 3600, 5 * 3600 + 1800, 14 * 3600];
    const PATH_SETS: [&[&str]; 4] = [&["/x"], &["/y"], &["/x", "/y"], &["/y", "/x"]];
    const TAG_SETS: [&[&str]; 4] = [&[], &["t"], &["u"], &["t", "u"]];

    /// 0 to 40 snapshots over 2019-2022 (some hours apart, some at identical
    /// times), with random offsets (unless `one_offset`), hosts, paths and tags.
    fn random_snapshots(rng: &mut Rng, one_offset: bool) -> Vec<(Id, Snapshot)> {
        let n = rng.below(41) as usize;
        let base = DateTime::parse_from_rfc3339("2019-01-01T00:00:00+00:00").unwrap().timestamp();
        let mut out: Vec<(Id, Snapshot)> = Vec::with_capacity(n);
        let mut last = base + rng.below(4 * 365 * 86400) as i64;
        for _ in 0..n {
            let t = match rng.below(10) {
                0 if !out.is_empty() => out[rng.below(out.len() as u64) as usize].1.time.timestamp(),
                1..=4 => last + rng.below(3 * 3600) as i64, // close to the previous one
                _ => base + rng.below(4 * 365 * 86400) as i64,
            };
            last = t;
            let offset = FixedOffset::east_opt(if one_offset { 3600 } else { *rng.pick(&OFFSETS) }).unwrap();
            let time = DateTime::from_timestamp(t, 0).unwrap().with_timezone(&offset);
            let host = *rng.pick(&["a", "b"]);
            let paths = *rng.pick(&PATH_SETS);
            let tags = *rng.pick(&TAG_SETS);
            let mut idb = [0u8; 32];
            for chunk in idb.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes());
            }
            out.push((Id(idb), snapshot(time, host, paths, tags)));
        }
        out
    }

    fn random_count(rng: &mut Rng) -> Option<u32> {
        match rng.below(10) {
            0..=4 => None,
            5 => Some(0),
            6..=8 => Some(1 + rng.below(5) as u32),
            _ => Some(UNLIMITED),
        }
    }

    /// A policy with at least one count >= 1 or a non-zero `within`.
    fn random_policy(rng: &mut Rng) -> Policy {
        loop {
            let mut p = Policy {
                last: random_count(rng),
                hourly: random_count(rng),
                daily: random_count(rng),
                weekly: random_count(rng),
                monthly: random_count(rng),
                yearly: random_count(rng),
                ..Default::default()
            };
            if rng.chance(30) {
                p.within = Some(Within {
                    years: rng.below(2) as u32,
                    months: rng.below(14) as u32,
                    days: rng.below(40) as u32,
                    hours: rng.below(50) as u32,
                });
            }
            if rng.chance(30) {
                let entry = *rng.pick(&TAG_SETS[1..]);
                p.tags.push(entry.iter().map(|s| s.to_string()).collect());
            }
            let counted = Rule::ALL.iter().any(|r| r.count(&p).unwrap_or(0) >= 1);
            if counted || p.within.is_some_and(|w| !w.is_zero()) {
                return p;
            }
        }
    }

    fn random_group_by(rng: &mut Rng) -> GroupBy {
        GroupBy { host: rng.chance(50), paths: rng.chance(50), tags: rng.chance(50) }
    }

    #[test]
    fn properties_of_random_policies() {
        let mut rng = Rng(0x5eed_cafe);
        for round in 0..400 {
            let snaps = random_snapshots(&mut rng, false);
            let policy = random_policy(&mut rng);
            let by = random_group_by(&mut rng);
            let ctx = format!("round {round}: {policy:?} {by:?}");
            let result = apply(&snaps, &policy, by);
            let groups = group(&snaps, by);
            assert_eq!(result.len(), groups.len(), "{ctx}");

            let mut kept: Vec<(Id, Snapshot)> = Vec::new();
            let mut seen = BTreeSet::new();
            for (r, (key, members)) in result.iter().zip(&groups) {
                assert_eq!(&r.key, key, "{ctx}");
                // (1) The newest snapshot of every group is kept.
                assert_eq!(r.keep.first().map(|k| k.id), Some(members[0].0), "{ctx}: newest of {key}");
                // (3) keep and remove split the group exactly.
                let mut split: Vec<Id> = r.keep.iter().map(|k| k.id).chain(r.remove.iter().map(|x| x.id)).collect();
                assert_eq!(split.len(), members.len(), "{ctx}");
                split.sort();
                let mut want: Vec<Id> = members.iter().map(|(id, _)| *id).collect();
                want.sort();
                assert_eq!(split, want, "{ctx}");
                for k in &r.keep {
                    assert!(!k.reasons.is_empty(), "{ctx}");
                    kept.push(members.iter().find(|(id, _)| *id == k.id).unwrap().clone());
                }
                seen.extend(split);
            }
            // (3) Across groups: the union is the input, each snapshot once.
            assert_eq!(seen.len(), snaps.len(), "{ctx}");
            assert_eq!(seen, snaps.iter().map(|(id, _)| *id).collect::<BTreeSet<_>>(), "{ctx}");

            // (2) Idempotent: applied to what it kept, the policy keeps it all, for the
            // same reasons.
            let again = apply(&kept, &policy, by);
            assert!(again.iter().all(|g| g.remove.is_empty()), "{ctx}: second run removes");
            let first: Vec<&Kept> = result.iter().flat_map(|g| &g.keep).collect();
            let second: Vec<&Kept> = again.iter().flat_map(|g| &g.keep).collect();
            assert_eq!(first, second, "{ctx}");
        }
    }

    #[test]
    fn keep_last_alone_keeps_exactly_min_n_len() {
        let mut rng = Rng(42);
        for round in 0..300 {
            let snaps = random_snapshots(&mut rng, false);
            let n = rng.below(12) as u32 + 1;
            let by = random_group_by(&mut rng);
            let policy = Policy { last: Some(n), ..Default::default() };
            for (r, (_, members)) in apply(&snaps, &policy, by).iter().zip(group(&snaps, by)) {
                let want = (n as usize).min(members.len());
                assert_eq!(r.keep.len(), want, "round {round}");
                let first: Vec<Id> = members[..want].iter().map(|(id, _)| *id).collect();
                assert_eq!(r.keep.iter().map(|k| k.id).collect::<Vec<_>>(), first, "round {round}");
                assert!(r.keep.iter().all(|k| k.reasons == [L]), "round {round}");
            }
        }
    }

    /// With one offset throughout, a bucket rule keeps the newest snapshot of each of
    /// the N most recent buckets: checked against a direct computation of that.
    #[test]
    fn bucket_rules_keep_newest_of_most_recent_buckets() {
        let mut rng = Rng(7);
        for round in 0..300 {
            let snaps = random_snapshots(&mut rng, true);
            let rule = *rng.pick(&[Rule::Hourly, Rule::Daily, Rule::Weekly, Rule::Monthly, Rule::Yearly]);
            let n = if rng.chance(20) { UNLIMITED } else { rng.below(6) as u32 + 1 };
            let mut policy = Policy::default();
            match rule {
                Rule::Hourly => policy.hourly = Some(n),
                Rule::Daily => policy.daily = Some(n),
                Rule::Weekly => policy.weekly = Some(n),
                Rule::Monthly => policy.monthly = Some(n),
                _ => policy.yearly = Some(n),
            }
            let key = |t: &DateTime<FixedOffset>| -> String {
                match rule {
                    Rule::Hourly => t.format("%Y-%m-%d %H").to_string(),
                    Rule::Daily => t.format("%Y-%m-%d").to_string(),
                    Rule::Weekly => t.format("%G-W%V").to_string(),
                    Rule::Monthly => t.format("%Y-%m").to_string(),
                    _ => t.format("%Y").to_string(),
                }
            };
            // The newest (time, then ID) snapshot of each bucket.
            let mut newest: BTreeMap<String, (DateTime<FixedOffset>, Id)> = BTreeMap::new();
            for (id, s) in &snaps {
                let e = newest.entry(key(&s.time)).or_insert((s.time, *id));
                if (s.time, *id) > *e {
                    *e = (s.time, *id);
                }
            }
            // Buckets are strings that sort like time (one offset, zero-padded).
            let want: BTreeSet<Id> = newest.values().rev().take(n as usize).map(|(_, id)| *id).collect();
            let r = apply(&snaps, &policy, GroupBy::parse("").unwrap());
            let got: BTreeSet<Id> = r.iter().flat_map(|g| g.keep.iter().map(|k| k.id)).collect();
            assert_eq!(got, want, "round {round}: {rule:?} {n}");
        }
    }
}
