//! Any stored file body: opening it under a fixed key (authentication, then
//! bounded decompression) never panics and never accepts forged bytes.
#![no_main]
use cairn::crypto::MasterKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = MasterKey::from_bytes(&[7u8; MasterKey::LEN]).unwrap();
    assert!(key.open(b"cairn:index", data).is_err(), "forged bytes authenticated");
});
