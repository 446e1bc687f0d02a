//! The repository config (after decryption): parsing and validation never panic.
#![no_main]
use cairn::repo::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = serde_json::from_slice::<Config>(data) {
        let _ = c.validate();
    }
});
