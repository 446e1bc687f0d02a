//! Tree blobs: parsing and validation never panic, and a valid tree survives a
//! round trip.
#![no_main]
use cairn::repo::tree::Tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = Tree::from_bytes(data) {
        let again = Tree::from_bytes(&t.to_bytes()).expect("a valid tree re-parses");
        assert_eq!(again.to_bytes(), t.to_bytes());
        for n in &t.entries {
            assert!(n.has_valid_name());
        }
    }
});
