//! Snapshot manifests (after decryption): parsing never panics.
#![no_main]
use cairn::repo::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = serde_json::from_slice::<Snapshot>(data) {
        let _ = s.sorted_paths();
        let _ = serde_json::to_vec(&s).expect("a parsed snapshot serializes");
    }
});
