//! Index files (after decryption): decode never panics or over-allocates, and
//! what decodes re-encodes to the same bytes and builds an index.
#![no_main]
use cairn::repo::index::{Index, IndexFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = IndexFile::decode(data) {
        assert_eq!(f.encode(), data);
        let _ = Index::build(&[(cairn::Id::hash(data), f)]);
    }
});
