//! Key files (stored in clear): parsing and parameter checks never panic.
#![no_main]
use cairn::crypto::KdfParams;
use cairn::repo::keyfile::KeyFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(k) = KeyFile::parse(data) {
        let p =
            KdfParams { memory_kib: k.kdf.memory_kib, iterations: k.kdf.iterations, parallelism: k.kdf.parallelism };
        let _ = p.validate();
    }
});
