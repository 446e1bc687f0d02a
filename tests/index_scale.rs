//! A repository whose index is far larger than the memory budget. A test-only
//! generator writes index files for `CAIRN_SCALE_BLOBS` made-up blobs (3 million
//! by default; `scripts/bench-index` runs it with 100 million); then:
//! - the first backup into it builds the sorted table on disk, and a backup
//!   with the table in place uses much less memory than one that holds the
//!   index in memory (and, at the default budget, stays under it);
//! - deduplication and restore work through the table and through newer index
//!   files kept in memory on top of it;
//! - lookups of generated blobs find every one and no stranger (the timings are
//!   printed: `cargo test --release --test index_scale -- --nocapture`).
#![allow(unsafe_code)] // wait4(2), for the peak memory of one child process

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use cairn::Id;
use cairn::backend::FileKind;
use cairn::repo::index::{IndexFile, IndexPack};
use cairn::repo::pack::{BlobEntry, BlobType};
use cairn::repo::{INDEX_TABLE, IndexSettings, Repository};
use common::*;

const PER_FILE: u64 = 65_536;
const PER_PACK: u64 = 256;

fn fake_id(i: u64) -> Id {
    Id(*blake3::hash(&[b"fake blob ".as_slice(), &i.to_le_bytes()].concat()).as_bytes())
}

/// The index file of generated blobs `first..first + n`.
fn fake_index(first: u64, n: u64) -> IndexFile {
    let packs = (first..first + n)
        .step_by(PER_PACK as usize)
        .map(|p| {
            let blobs: Vec<BlobEntry> = (p..(p + PER_PACK).min(first + n))
                .map(|i| BlobEntry {
                    blob_type: BlobType::Data,
                    compressed: true,
                    id: fake_id(i),
                    offset: ((i - p) * 1000) as u32,
                    length: 1000,
                    raw_length: 2000,
                })
                .collect();
            IndexPack { id: Id(*blake3::hash(&p.to_le_bytes()).as_bytes()), size: PER_PACK * 1000, blobs }
        })
        .collect();
    IndexFile { supersedes: vec![], packs, pending: vec![] }
}

fn open(env: &TestEnv, rt: &tokio::runtime::Runtime, budget: usize) -> Repository {
    let backend = cairn::backend::open(s(&env.repo), &[]).unwrap();
    let mut repo = Repository::open(backend, rt.handle().clone(), PASSWORD.as_bytes()).unwrap();
    let dir = cairn::cache::dir_of(&env.path("cache"), &repo.config().id);
    repo.set_index_settings(IndexSettings { budget, dir: Some(dir) });
    repo
}

/// Runs `cairn ARGS` (with the test's repository and cache): its output and
/// peak resident memory in MiB and its wall time.
fn measured(env: &TestEnv, args: &[&str]) -> (String, f64, f64) {
    let (stdout, stderr, code, rss, secs) = measured_status(env, args);
    assert!(code == 0, "cairn {args:?} failed:\n{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("warning"), "cairn {args:?}:\n{stderr}");
    (stdout, rss, secs)
}

/// Like [`measured`], whatever the exit code: (stdout, stderr, exit code, peak
/// RSS in MiB, seconds).
#[allow(clippy::zombie_processes)] // waited for with wait4(2), which std does not know
fn measured_status(env: &TestEnv, args: &[&str]) -> (String, String, i32, f64, f64) {
    let start = Instant::now();
    let mut child = env.cmd(args).spawn();
    drop(child.stdin.take());
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).unwrap();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).unwrap();
        s
    });
    let mut status = 0;
    // SAFETY: `ru` is a plain struct the kernel fills; the pid is our child's,
    // waited for once here (std's Child is never waited for after this).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert_eq!(pid, child.id() as i32, "wait4 failed");
    let secs = start.elapsed().as_secs_f64();
    let stdout = reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    assert!(libc::WIFEXITED(status), "cairn {args:?} was killed:\n{stderr}");
    (stdout, stderr, libc::WEXITSTATUS(status), ru.ru_maxrss as f64 / 1024.0, secs)
}

fn write_tree(dir: &Path, seed: u64, dirs: usize) {
    let mut rng = Rng::new(seed);
    for d in 0..dirs {
        let sub = dir.join(format!("d{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..30 {
            let n = (rng.next_u64() % 200_000) as usize;
            std::fs::write(sub.join(format!("f{f}")), rng.bytes(n)).unwrap();
        }
    }
}

/// New data blobs a backup stored (its parent folders' trees change each time:
/// the repository lives beside the source).
fn added(json: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(json.lines().last().unwrap()).unwrap();
    v["data_blobs"].as_u64().unwrap_or_else(|| panic!("no data_blobs in {v}"))
}

#[test]
fn backup_into_a_huge_index_stays_within_the_budget() {
    let blobs: u64 = std::env::var("CAIRN_SCALE_BLOBS").map_or(3_000_000, |v| v.parse().unwrap());
    let budget_mib: usize = std::env::var("CAIRN_SCALE_BUDGET_MIB").map_or(32, |v| v.parse().unwrap());
    let env = TestEnv::new();
    env.init(&[]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // Generate the index files, on two threads.
    let t = Instant::now();
    {
        let repo = Arc::new(open(&env, &rt, budget_mib << 20));
        let files = blobs.div_ceil(PER_FILE);
        std::thread::scope(|sc| {
            for part in 0..2 {
                let repo = Arc::clone(&repo);
                sc.spawn(move || {
                    for f in (part..files).step_by(2) {
                        let first = f * PER_FILE;
                        let file = fake_index(first, PER_FILE.min(blobs - first));
                        repo.save_file(FileKind::Index, &file.encode()).unwrap();
                    }
                });
            }
        });
    }
    let stored = dir_size(&env.repo.join("index"));
    println!(
        "generated {blobs} blobs in {:.1} s: {} index files, {:.0} MiB",
        t.elapsed().as_secs_f64(),
        blobs.div_ceil(PER_FILE),
        stored as f64 / 1048576.0
    );

    let src = env.path("src");
    write_tree(&src, 1, 10);
    let budget = format!("--index-memory={budget_mib}M");
    let table = cairn::cache::dir_of(&env.path("cache"), &open(&env, &rt, 1 << 20).config().id).join(INDEX_TABLE);

    // First backup: builds the table.
    let (out, rss_build, secs) = measured(&env, &["backup", "--json", &budget, s(&src)]);
    assert!(table.exists(), "an index beyond the budget is kept on disk");
    let first = added(&out);
    assert!(first > 0);
    println!("backup 1 (builds the table): {secs:.1} s, peak RSS {rss_build:.0} MiB");

    // Second backup of the same tree: nothing new, found through the newer
    // index file kept in memory on top of the table.
    let (out, rss_overlay, secs) = measured(&env, &["backup", "--json", &budget, s(&src)]);
    assert_eq!(added(&out), 0, "unchanged data found again");
    println!("backup 2 (table + newer files): {secs:.2} s, peak RSS {rss_overlay:.0} MiB");

    // Rebuilt so that the table itself covers the real blobs; a changed tree.
    std::fs::remove_file(&table).unwrap();
    write_tree(&env.path("src/more"), 2, 2);
    let (out, rss_disk, secs) = measured(&env, &["backup", "--json", &budget, s(&src)]);
    let new = added(&out);
    assert!(new > 0 && new < first / 3, "only the new files are stored ({new} blobs, {first} at first)");
    println!("backup 3 (rebuilt table, a few new files): {secs:.1} s, peak RSS {rss_disk:.0} MiB");
    let (out, rss_table, secs) = measured(&env, &["backup", "--json", &budget, s(&src)]);
    assert_eq!(added(&out), 0);
    println!("backup 4 (table only): {secs:.2} s, peak RSS {rss_table:.0} MiB");

    // Restore through the table; byte-exact.
    let target = env.path("restore");
    let (_, rss_restore, secs) = measured(&env, &["restore", "latest", "--target", s(&target), &budget]);
    assert!(contents(&src) == contents(&restored_path(&target, &src)), "the restore differs");
    println!("restore through the table: {secs:.2} s, peak RSS {rss_restore:.0} MiB");

    // The same backup with the index in memory costs its 40 bytes per blob.
    let slots_mib = blobs as f64 * 40.0 / 1048576.0;
    if blobs <= 20_000_000 {
        let (_, rss_mem, secs) = measured(&env, &["backup", "--json", "--index-memory=8G", s(&src)]);
        println!("backup 4 again, index in memory: {secs:.2} s, peak RSS {rss_mem:.0} MiB");
        assert!(rss_table + slots_mib / 2.0 < rss_mem, "table {rss_table} MiB vs memory {rss_mem} MiB");
    }
    // check reads every index file within the budget too. (The generated packs
    // do not exist, so it reports them missing and exits 1.)
    let (_, stderr, code, rss_check, secs) = measured_status(&env, &["check", &budget]);
    assert_eq!(code, 1, "{}", &stderr[..stderr.len().min(2000)]);
    assert!(stderr.contains("is in the index but missing from the repository") && !stderr.contains("panicked"));
    println!("check: {secs:.1} s, peak RSS {rss_check:.0} MiB");
    assert!(rss_check < budget_mib as f64 + slots_mib / 4.0 + 160.0, "check took {rss_check} MiB");
    for rss in [rss_overlay, rss_table, rss_restore] {
        assert!(rss < (budget_mib as f64).max(64.0) + 96.0, "peak RSS {rss} MiB, budget {budget_mib} MiB");
    }
    assert!(rss_build < budget_mib as f64 + slots_mib / 4.0 + 160.0, "building took {rss_build} MiB");

    // Lookups, in this process: every generated blob sampled is found where it
    // was put, strangers are not.
    let repo = open(&env, &rt, budget_mib << 20);
    let t = Instant::now();
    let idx = repo.index().unwrap();
    assert!(idx.on_disk());
    let open_secs = t.elapsed().as_secs_f64();
    let mut rng = Rng::new(7);
    let n = 200_000;
    let t = Instant::now();
    for _ in 0..n {
        let i = rng.next_u64() % blobs;
        let l = idx.get(&fake_id(i)).unwrap_or_else(|| panic!("blob {i} not found"));
        assert_eq!(l.entry.offset as u64, (i % PER_PACK) * 1000);
        let pack = i / PER_PACK * PER_PACK;
        assert_eq!(idx.packs()[l.pack as usize].0, Id(*blake3::hash(&pack.to_le_bytes()).as_bytes()));
    }
    let hit = t.elapsed().as_secs_f64() / n as f64 * 1e6;
    let t = Instant::now();
    for i in 0..n {
        assert!(!idx.contains(&fake_id(blobs + i)));
    }
    let miss = t.elapsed().as_secs_f64() / n as f64 * 1e6;
    println!(
        "index of {blobs} blobs: opened in {open_secs:.2} s; lookup {hit:.2} µs (found), {miss:.2} µs (absent), \
         table {:.0} MiB on disk",
        std::fs::metadata(&table).unwrap().len() as f64 / 1048576.0
    );
}
