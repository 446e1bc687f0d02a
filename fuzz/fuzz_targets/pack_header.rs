//! Pack headers (after decryption): entries must tile the blob area; decoding
//! never panics whatever the claimed header start.
#![no_main]
use cairn::repo::pack::decode_header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let start = u64::from_le_bytes(data[..8].try_into().unwrap());
    if let Ok(entries) = decode_header(&data[8..], start) {
        let total: u64 = entries.iter().map(|e| e.length as u64).sum();
        assert_eq!(total, start);
    }
});
