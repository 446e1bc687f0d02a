//! The conformance suite every backend must pass (memory, local, SFTP, Swift).
//! Call [`run`] from a test with a backend pointing at an empty location.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::{BackendError, DynBackend, FileKind, Handle};
use crate::id::Id;

fn name(i: u64) -> String {
    Id::hash(&i.to_le_bytes()).to_hex()
}

/// Runs every check against `b`, panicking with a description on the first failure.
pub fn run(b: DynBackend) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(run_async(b));
}

/// The async body of [`run`], for callers that already have a runtime.
pub async fn run_async(b: DynBackend) {
    b.create().await.expect("create");
    b.create().await.expect("create is idempotent");

    // Config: write once, read back, never overwritten.
    let cfg = Handle::config();
    b.write(&cfg, Bytes::from_static(b"config-1")).await.expect("write config");
    assert!(matches!(b.write(&cfg, Bytes::from_static(b"config-2")).await, Err(BackendError::AlreadyExists(_))));
    assert_eq!(&b.read(&cfg, None).await.expect("read config")[..], b"config-1");

    // Whole and ranged reads, for every listable kind.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for (i, kind) in FileKind::LISTABLE.iter().enumerate() {
        let h = Handle { kind: *kind, name: name(i as u64) };
        b.write(&h, Bytes::from(data.clone())).await.unwrap_or_else(|e| panic!("write {h}: {e}"));
        assert_eq!(b.read(&h, None).await.expect("read").as_ref(), &data[..], "{h}");
        assert_eq!(b.read(&h, Some(10..20)).await.expect("range").as_ref(), &data[10..20]);
        assert_eq!(b.read(&h, Some(99_990..100_000)).await.expect("tail").as_ref(), &data[99_990..]);
        assert!(b.read(&h, Some(99_990..100_001)).await.is_err(), "range past the end must fail");
        let listed = b.list(*kind).await.expect("list");
        assert_eq!(listed.len(), 1, "{kind:?}: {listed:?}");
        assert_eq!((listed[0].name.as_str(), listed[0].size), (h.name.as_str(), 100_000));
        // No overwrite, and the original content survives the attempt.
        let err = b.write(&h, Bytes::from_static(b"other")).await.expect_err("overwrite must fail");
        assert!(matches!(err, BackendError::AlreadyExists(_)), "{err}");
        assert_eq!(b.read(&h, None).await.expect("read").len(), 100_000);
        b.remove(&h).await.expect("remove");
        assert!(b.list(*kind).await.expect("list").is_empty());
        assert!(b.read(&h, None).await.expect_err("read removed").is_not_found());
        assert!(b.remove(&h).await.expect_err("remove missing").is_not_found());
    }

    // A pack-sized file whose length is not a multiple of any block size: whole
    // and ranged reads at unaligned offsets, small and large, up to the end.
    let big: Vec<u8> = (0..3_000_017u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let h = Handle { kind: FileKind::Pack, name: name(2000) };
    b.write(&h, Bytes::from(big.clone())).await.expect("write large");
    assert!(b.read(&h, None).await.expect("read large").as_ref() == &big[..], "large file read back differs");
    for r in [0..1_048_576, 4097..1_500_001, 1_000_000..3_000_017, 2_999_000..3_000_017, 12_345..12_999] {
        let got = b.read(&h, Some(r.start as u64..r.end as u64)).await.expect("large range");
        assert!(got.as_ref() == &big[r.clone()], "range {r:?} of a large file differs");
    }
    assert!(b.read(&h, Some(1_000_000..3_000_018)).await.is_err(), "large range past the end must fail");
    assert_eq!(b.list(FileKind::Pack).await.expect("list")[0].size, 3_000_017);
    b.remove(&h).await.expect("remove large");

    // Empty files.
    let empty = Handle { kind: FileKind::Lock, name: name(1000) };
    b.write(&empty, Bytes::new()).await.expect("write empty");
    assert!(b.read(&empty, None).await.expect("read empty").is_empty());
    assert!(b.read(&empty, Some(0..0)).await.expect("empty range").is_empty());
    b.remove(&empty).await.expect("remove empty");

    // Names that are not IDs are not listed.
    let odd = Handle { kind: FileKind::Snapshot, name: "not-an-id".into() };
    if b.write(&odd, Bytes::from_static(b"x")).await.is_ok() {
        assert!(b.list(FileKind::Snapshot).await.expect("list").is_empty());
        b.remove(&odd).await.expect("remove odd");
    }

    // Concurrent writers: distinct names all land; racing on one name, exactly the
    // content of one writer survives and the others see AlreadyExists.
    let mut tasks = Vec::new();
    for i in 0..32u64 {
        let b = Arc::clone(&b);
        tasks.push(tokio::spawn(async move {
            let h = Handle { kind: FileKind::Pack, name: name(2000 + i) };
            b.write(&h, Bytes::from(vec![i as u8; 1000 + i as usize])).await
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("concurrent write");
    }
    let race = Handle { kind: FileKind::Index, name: name(3000) };
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let (b, race) = (Arc::clone(&b), race.clone());
        tasks.push(tokio::spawn(async move { b.write(&race, Bytes::from(vec![i; 5000])).await }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(()) => ok += 1,
            Err(BackendError::AlreadyExists(_)) => {}
            Err(e) => panic!("racing write: {e}"),
        }
    }
    // Local file systems let exactly one racing writer win; object stores (Swift)
    // check If-None-Match before the upload completes, so several may. Either way
    // the object must be one writer's content, whole: never torn or mixed.
    assert!(ok >= 1, "no racing writer won");
    let got = b.read(&race, None).await.expect("read race");
    assert!(got.len() == 5000 && got.iter().all(|&x| x == got[0]), "a torn file after racing writes");
    b.remove(&race).await.expect("remove race");

    let packs: BTreeMap<String, u64> =
        b.list(FileKind::Pack).await.expect("list").into_iter().map(|f| (f.name, f.size)).collect();
    assert_eq!(packs.len(), 32);
    for i in 0..32u64 {
        assert_eq!(packs.get(&name(2000 + i)), Some(&(1000 + i)));
    }

    // A listing of thousands of files.
    let n = 2500u64;
    let mut tasks = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(250) {
        let (b, chunk) = (Arc::clone(&b), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for i in chunk {
                b.write(&Handle { kind: FileKind::Snapshot, name: name(10_000 + i) }, Bytes::from_static(b"s")).await?;
            }
            Ok::<_, BackendError>(())
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("bulk write");
    }
    let listed = b.list(FileKind::Snapshot).await.expect("list many");
    assert_eq!(listed.len() as u64, n);
    let mut names: Vec<_> = listed.into_iter().map(|f| f.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len() as u64, n, "listing repeats names");

    // Clean up so the location can be reused.
    for f in b.list(FileKind::Snapshot).await.expect("list") {
        b.remove(&Handle { kind: FileKind::Snapshot, name: f.name }).await.expect("remove");
    }
    for f in b.list(FileKind::Pack).await.expect("list") {
        b.remove(&Handle { kind: FileKind::Pack, name: f.name }).await.expect("remove");
    }
    b.remove(&cfg).await.expect("remove config");
}
