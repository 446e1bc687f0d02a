//! History: forget by policy, prune, and their safety: the 60-week scenario,
//! prune killed at every step, backups running while prune runs, leases.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, FixedOffset};
use common::*;

/// Content hash of every regular file below `root`, by relative path.
fn manifest(root: &Path) -> BTreeMap<String, blake3::Hash> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, blake3::hash(&std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

/// One week of changes to the data set: edit, add and delete a few files, grow
/// the log.
fn evolve(src: &Path, week: u64, rng: &mut Rng) {
    if week == 0 {
        for i in 0..30 {
            write(src.join(format!("docs/f{i}.txt")), format!("document {i}\n").repeat(200 + i * 30));
        }
        write(src.join("data/base.bin"), rng.bytes(400_000));
    }
    let n = rng.next_u64();
    // Edit two documents, add one file, delete one of the added files.
    for k in 0..2 {
        let i = (n >> (8 * k)) % 30;
        let p = src.join(format!("docs/f{i}.txt"));
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str(&format!("week {week} edit {k}\n"));
        write(&p, text);
    }
    write(src.join(format!("added/w{week}.bin")), rng.bytes(40_000 + (n % 20_000) as usize));
    if week >= 3 && week % 3 == 0 {
        let _ = std::fs::remove_file(src.join(format!("added/w{}.bin", week - 3)));
    }
    let log = src.join("log/app.log");
    let mut text = std::fs::read_to_string(&log).unwrap_or_default();
    for line in 0..40 {
        text.push_str(&format!("2020 week {week} line {line}: value {}\n", rng.next_u64() % 1000));
    }
    write(&log, text);
}

/// The snapshots `--keep-weekly 8 --keep-monthly 12 --keep-yearly 3` keeps, from
/// the backup times alone, computed the plain way: the newest snapshot of each of
/// the most recent 8 ISO weeks, 12 months and 3 years that have snapshots.
fn expected_kept(times: &[DateTime<FixedOffset>]) -> BTreeSet<usize> {
    let mut order: Vec<usize> = (0..times.len()).collect();
    order.sort_by(|a, b| times[*b].cmp(&times[*a]));
    let mut keep = BTreeSet::new();
    let mut take = |key: &dyn Fn(&DateTime<FixedOffset>) -> (i32, u32), n: usize| {
        let mut seen = Vec::new();
        for &i in &order {
            let k = key(&times[i]);
            if !seen.contains(&k) {
                if seen.len() == n {
                    break;
                }
                seen.push(k);
                keep.insert(i);
            }
        }
    };
    take(&|t| (t.iso_week().year(), t.iso_week().week()), 8);
    take(&|t| (t.year(), t.month()), 12);
    take(&|t| (t.year(), 0), 3);
    keep
}

#[test]
fn sixty_weekly_backups_thinned_by_policy_restore_exactly() {
    let env = TestEnv::new();
    env.init(&["--chunk-size", "16K,64K,256K", "--pack-size", "1"]);
    let src = env.path("src");
    let mut rng = Rng::new(60);
    let start: DateTime<FixedOffset> = DateTime::parse_from_rfc3339("2019-11-03T02:30:00+01:00").unwrap();
    let mut weeks = Vec::new();
    for week in 0..60u64 {
        evolve(&src, week, &mut rng);
        let time = start + chrono::Duration::weeks(week as i64);
        let sum = env.backup_ok(&[s(&src), "--time", &time.to_rfc3339()]);
        weeks.push((sum["snapshot_id"].as_str().unwrap().to_string(), time, manifest(&src)));
    }
    let before = env.repo_size();

    let r = env.cairn([
        "forget",
        "--keep-weekly",
        "8",
        "--keep-monthly",
        "12",
        "--keep-yearly",
        "3",
        "--prune",
        "--max-unused",
        "0%",
        "--json",
    ]);
    r.ok();
    let report = r.json();
    let times: Vec<_> = weeks.iter().map(|w| w.1).collect();
    let expected: BTreeSet<String> = expected_kept(&times).into_iter().map(|i| weeks[i].0.clone()).collect();
    let left: BTreeSet<String> = env.snapshots(&[]).iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(left, expected, "the policy kept the wrong snapshots");
    assert_eq!(report["removed"].as_array().unwrap().len(), 60 - expected.len());
    let pruned = &report["prune"];
    assert!(pruned["packs_deleted"].as_u64().unwrap() > 0, "{pruned}");
    assert_eq!(pruned["packs_deferred"], 0, "no writer was live, nothing should wait: {pruned}");

    let after = env.repo_size();
    assert!(after < before * 9 / 10, "the repository did not shrink enough: {before} -> {after}");

    // Every remaining week restores to exactly what was backed up that week.
    for (id, _, files) in weeks.iter().filter(|w| expected.contains(&w.0)) {
        let target = env.path(format!("restore-{}", &id[..8]));
        env.cairn(["restore", id, "--target", s(&target)]).ok();
        assert_eq!(&manifest(&restored_path(&target, &src)), files, "snapshot {id} restored different content");
        std::fs::remove_dir_all(&target).unwrap();
    }
    env.cairn(["check", "--read-data"]).ok();

    // Forget is idempotent; a second prune finds nothing more to do.
    let again = env.cairn(["forget", "--keep-weekly", "8", "--keep-monthly", "12", "--keep-yearly", "3", "--json"]);
    again.ok();
    assert!(again.json()["removed"].as_array().unwrap().is_empty());
    let p = env.cairn(["prune", "--json", "--max-unused", "0%"]);
    p.ok();
    assert_eq!(p.json()["packs_deleted"], 0, "{}", p.stdout);
}

/// A repository with three snapshots of which the first two are forgotten, so a
/// prune has whole packs to delete and partly used packs to repack.
fn repo_with_garbage(env: &TestEnv) -> (PathBuf, BTreeMap<String, blake3::Hash>) {
    env.init(&["--chunk-size", "16K,64K,256K", "--pack-size", "1"]);
    let src = env.path("src");
    let mut rng = Rng::new(7);
    for i in 0..6 {
        write(src.join(format!("keep{i}.bin")), rng.bytes(300_000));
    }
    let gone = rng.bytes(2_000_000);
    write(src.join("gone.bin"), &gone);
    write(env.path("saved/gone.bin"), &gone);
    env.backup_ok(&[s(&src)]);
    write(src.join("gone2.bin"), rng.bytes(1_500_000));
    env.backup_ok(&[s(&src)]);
    std::fs::remove_file(src.join("gone.bin")).unwrap();
    std::fs::remove_file(src.join("gone2.bin")).unwrap();
    write(src.join("new.bin"), rng.bytes(500_000));
    env.backup_ok(&[s(&src)]);
    env.cairn(["forget", "--keep-last", "1"]).ok();
    (src.clone(), manifest(&src))
}

#[test]
fn prune_killed_at_every_step_loses_nothing_and_a_rerun_finishes() {
    for point in [
        "prune:after-repack",
        "prune:after-index",
        "prune:after-old-index-removed",
        "prune:mid-delete",
        "prune:after-final-index",
    ] {
        let env = TestEnv::new();
        let (src, files) = repo_with_garbage(&env);
        let clean = {
            // The size a prune reaches when nothing goes wrong, on a copy.
            let copy = env.path("copy");
            let out = std::process::Command::new("cp").arg("-a").arg(&env.repo).arg(&copy).status().unwrap();
            assert!(out.success());
            let r = env.cmd(["prune", "--max-unused", "0%"]).env("CAIRN_REPOSITORY", &copy).run();
            r.ok();
            dir_size(&copy)
        };
        let child = env.cmd(["prune", "--max-unused", "0%"]).env("CAIRN_TEST_CRASH_AT", point).spawn();
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "{point}: prune was not stopped there");
        assert!(String::from_utf8_lossy(&out.stderr).contains(point), "{point}: the hook did not fire");

        // Consistent, and the kept snapshot is whole.
        env.cairn(["check", "--read-data"]).ok();
        let target = env.path("restore");
        env.cairn(["restore", "latest", "--target", s(&target)]).ok();
        assert_eq!(manifest(&restored_path(&target, &src)), files, "{point}: data lost");

        // No unlock needed: the dead prune's lease does not block the rerun.
        let r = env.cairn(["prune", "--max-unused", "0%", "--json"]);
        r.ok();
        env.cairn(["check", "--read-data"]).ok();
        assert!(
            env.repo_size() <= clean + 4096,
            "{point}: the rerun left {} bytes, a clean prune {clean}",
            env.repo_size()
        );
    }
}

#[test]
fn prune_defers_deleting_while_a_writer_lease_is_live_and_backups_never_reuse_marked_data() {
    let env = TestEnv::new();
    let (src, files) = repo_with_garbage(&env);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let backend = cairn::backend::open(s(&env.repo), &[]).unwrap();
    let repo = cairn::Repository::open(backend, rt.handle().clone(), PASSWORD.as_bytes()).unwrap();

    // A writer that started before the prune (a backup in progress elsewhere).
    let lease = repo.lock_shared().unwrap();
    let r = env.cairn(["prune", "--max-unused", "0%", "--json"]);
    r.ok();
    let v = r.json();
    assert_eq!(v["packs_deleted"], 0, "deleted while a writer was live: {v}");
    assert!(v["packs_deferred"].as_u64().unwrap() > 0, "{v}");
    assert!(v["deferred_because"].as_str().unwrap().contains("writer"), "{v}");
    env.cairn(["check", "--read-data"]).ok();

    // A backup now stores the forgotten data again instead of reusing the marked
    // packs: it must add data.
    let first = env.snapshots(&[]);
    assert_eq!(first.len(), 1);
    let back = env.path("saved");
    let sum = env.backup_ok(&[s(&back)]);
    assert!(sum["data_added"].as_u64().unwrap() >= 2_000_000, "a marked blob was reused: {sum}");

    // Once the writer is gone, the next prune deletes the marked packs; both
    // snapshots stay whole.
    drop(lease);
    let r = env.cairn(["prune", "--max-unused", "0%", "--json"]);
    r.ok();
    assert!(r.json()["packs_deleted"].as_u64().unwrap() > 0, "{}", r.stdout);
    env.cairn(["check", "--read-data"]).ok();
    let t1 = env.path("r1");
    env.cairn(["restore", first[0]["id"].as_str().unwrap(), "--target", s(&t1)]).ok();
    assert_eq!(manifest(&restored_path(&t1, &src)), files);
    let t2 = env.path("r2");
    env.cairn(["restore", "latest", "--target", s(&t2)]).ok();
    assert_same_tree(&back, &restored_path(&t2, &back));
}

#[test]
fn a_second_prune_is_refused_with_exit_11_and_unlock_removes_stale_locks() {
    let env = TestEnv::new();
    repo_with_garbage(&env);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let backend = cairn::backend::open(s(&env.repo), &[]).unwrap();
    let repo = cairn::Repository::open(backend, rt.handle().clone(), PASSWORD.as_bytes()).unwrap();
    let lease = repo.lock_exclusive().unwrap();
    let r = env.cairn(["prune"]);
    r.expect_code(11);
    assert!(r.stderr.contains("being pruned") && r.stderr.contains("expires by itself"), "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    // Backups never wait for a prune.
    let src = env.path("src");
    env.backup_ok(&[s(&src)]);
    drop(lease);

    // A prune that died leaves its lease behind; nothing waits for it, and unlock
    // removes it.
    let child = env.cmd(["prune"]).env("CAIRN_TEST_CRASH_AT", "prune:after-index").spawn();
    assert!(!child.wait_with_output().unwrap().status.success());
    assert_eq!(env.repo_files("locks").len(), 1, "the dead prune's lease should be there");
    env.cairn(["prune"]).ok();
    let u = env.cairn(["unlock", "--json"]);
    u.ok();
    assert_eq!(u.json()["removed"].as_array().unwrap().len(), 1, "{}", u.stdout);
    assert!(env.repo_files("locks").is_empty());
}

#[test]
fn backups_from_several_hosts_and_prunes_in_loops_never_fail_and_nothing_is_lost() {
    let env = TestEnv::new();
    env.init(&["--chunk-size", "16K,64K,256K", "--pack-size", "1"]);
    // Three hosts back up their own folders, which share one file.
    let shared = Rng::new(1).bytes(2_000_000);
    let srcs: Vec<PathBuf> = (1..=3).map(|h| env.path(format!("host{h}"))).collect();
    for src in &srcs {
        write(src.join("shared.bin"), &shared);
    }
    let first = env.backup_ok(&[s(&srcs[0]), "--host", "h1"]);
    assert!(first["data_added"].as_u64().unwrap() >= 2_000_000);
    // Snapshot ID -> the tree it was taken of, for every backup that ran.
    let taken: std::sync::Mutex<BTreeMap<String, Files>> =
        std::sync::Mutex::new([(first["snapshot_id"].as_str().unwrap().to_string(), contents(&srcs[0]))].into());
    let deadline = Instant::now() + Duration::from_secs(20);
    let prunes = std::thread::scope(|sc| {
        for (h, src) in srcs.iter().enumerate() {
            let taken = &taken;
            let env = &env;
            sc.spawn(move || {
                let host = format!("h{}", h + 1);
                let mut rng = Rng::new(10 + h as u64);
                let mut n = 0u64;
                while Instant::now() < deadline {
                    write(src.join(format!("f{}.bin", n % 4)), rng.bytes(150_000));
                    let r = env.cairn(["backup", "--json", "--host", &host, s(src)]);
                    assert_eq!(r.code, 0, "backup {n} of {host} failed while others and prune ran:\n{}", r.stderr);
                    let v = r.json();
                    if n == 0 && h > 0 {
                        // The shared file was stored by h1: only the new files are added.
                        let added = v["data_added"].as_u64().unwrap();
                        assert!(added < 500_000, "{host}'s first backup added {added} bytes: no dedup across hosts");
                    }
                    let id = v["snapshot_id"].as_str().unwrap().to_string();
                    taken.lock().unwrap().insert(id, contents(src));
                    n += 1;
                }
                assert!(n >= 3, "{host} ran only {n} backups");
            });
        }
        sc.spawn(|| {
            let mut n = 0;
            while Instant::now() < deadline {
                let r = env.cairn(["forget", "--keep-last", "2", "--prune", "--max-unused", "0%"]);
                assert!(r.code == 0 || r.code == 11, "forget --prune failed:\n{}", r.stderr);
                n += 1;
            }
            n
        })
        .join()
        .unwrap()
    });
    assert!(prunes >= 2, "prune ran only {prunes} times");
    env.cairn(["check", "--read-data"]).ok();
    // Every snapshot left restores to exactly the tree it was taken of.
    let taken = taken.into_inner().unwrap();
    let snaps = env.snapshots(&[]);
    assert!(snaps.len() >= 6, "{} snapshots left", snaps.len());
    for snap in snaps {
        let id = snap["id"].as_str().unwrap();
        let target = env.path(format!("r-{}", &id[..8]));
        env.cairn(["restore", id, "--target", s(&target)]).ok();
        let src = Path::new(snap["paths"][0].as_str().unwrap());
        let want = taken.get(id).unwrap_or_else(|| panic!("snapshot {id} was never taken"));
        assert!(contents(&restored_path(&target, src)) == *want, "snapshot {id} restores differently");
    }
    // With the writers gone, a last prune reclaims everything that waited.
    let r = env.cairn(["prune", "--json", "--max-unused", "0%"]);
    r.ok();
    assert_eq!(r.json()["packs_deferred"], 0, "{}", r.stdout);
    env.cairn(["check", "--read-data"]).ok();
}

#[test]
fn prune_removes_stale_temporary_files_and_keeps_fresh_ones() {
    let env = TestEnv::new();
    repo_with_garbage(&env);
    let old = env.repo.join("data/00/.tmp-0123456789abcdef");
    let fresh = env.repo.join("data/01/.tmp-fedcba9876543210");
    write(&old, "left by a killed upload");
    write(&fresh, "an upload in progress");
    let two_hours_ago = chrono::Utc::now().timestamp() - 7200;
    set_mtime(&old, two_hours_ago, 0);
    let r = env.cairn(["prune", "--json"]);
    r.ok();
    assert_eq!(r.json()["temporaries_deleted"], 1, "{}", r.stdout);
    assert!(!old.exists(), "the stale temporary file is still there");
    assert!(fresh.exists(), "a fresh temporary file (a write in progress) was removed");
    env.cairn(["check"]).ok();
}

#[test]
fn forget_keep_within_daily_keeps_one_per_day_of_the_period() {
    let env = TestEnv::new();
    env.init(&[]);
    let src = env.path("src");
    write(src.join("f"), "x");
    let times = ["2024-01-10T20:00:00Z", "2024-01-10T08:00:00Z", "2024-01-09T12:00:00Z", "2024-01-05T12:00:00Z"];
    let ids: Vec<String> = times
        .iter()
        .map(|t| env.backup_ok(&[s(&src), "--time", t])["snapshot_id"].as_str().unwrap().to_string())
        .collect();
    let r = env.cairn(["forget", "--keep-within-daily", "3d", "--json"]);
    r.ok();
    let v = r.json();
    let removed: BTreeSet<&str> = v["removed"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert_eq!(removed, BTreeSet::from([ids[1].as_str(), ids[3].as_str()]), "{v}");
    assert!(v.to_string().contains("daily within 3d"), "{v}");
    let left: BTreeSet<String> = env.snapshots(&[]).iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(left, BTreeSet::from([ids[0].clone(), ids[2].clone()]));
}
