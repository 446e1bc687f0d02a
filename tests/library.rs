//! The library API end to end on the in-memory backend: backup, incremental
//! backup, restore and check without the CLI.

use std::sync::Arc;

use cairn::archiver::{BackupOptions, backup};
use cairn::backend::mem::MemBackend;
use cairn::checker::{CheckOptions, check};
use cairn::crypto::KdfParams;
use cairn::repo::InitOptions;
use cairn::restorer::{RestoreOptions, restore};
use cairn::{Progress, Report, Repository};

struct Quiet;
impl Report for Quiet {
    fn warn(&self, msg: &str) {
        panic!("unexpected warning: {msg}");
    }
}

#[test]
fn backup_restore_check_in_memory() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let opts =
        InitOptions { kdf: KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 }, ..InitOptions::default() };
    let repo = Repository::init(Arc::new(MemBackend::new()), rt.handle().clone(), b"pw", &opts).unwrap();

    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("a/b")).unwrap();
    std::fs::write(src.path().join("a/b/one.txt"), b"one").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(src.path().join("a/big.bin"), &big).unwrap();

    let bopts = BackupOptions { paths: vec![src.path().to_path_buf()], ..BackupOptions::default() };
    let first = backup(&repo, &bopts, &Quiet, &Progress::default()).unwrap();
    let s = &first.snapshot.summary;
    assert_eq!((s.files_new, s.files_read, s.errors), (2, 2, 0));
    assert_eq!(s.bytes_read, 3_000_003);

    let second = backup(&repo, &bopts, &Quiet, &Progress::default()).unwrap();
    let s = &second.snapshot.summary;
    assert_eq!((s.files_unmodified, s.files_read, s.data_blobs), (2, 0, 0));
    assert_eq!(second.snapshot.parent, first.id);

    let out = tempfile::tempdir().unwrap();
    let sub = src.path().to_string_lossy().into_owned();
    let ropts = RestoreOptions {
        target: out.path().to_path_buf(),
        subpath: Some(sub),
        verify: true,
        ..RestoreOptions::default()
    };
    let r = restore(&repo, &second.snapshot, &ropts, &Quiet, &Progress::default()).unwrap();
    assert_eq!((r.files, r.errors, r.verified), (2, 0, 2));
    assert_eq!(std::fs::read(out.path().join("a/big.bin")).unwrap(), big);
    assert_eq!(std::fs::read(out.path().join("a/b/one.txt")).unwrap(), b"one");

    let c = check(&repo, &CheckOptions { read_data: true, subset: None }, &Quiet, &Progress::default()).unwrap();
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert_eq!(c.snapshots, 2);
    assert!(c.packs_read >= 2, "data and tree packs are read");
}
