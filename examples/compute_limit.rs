//! The machine's compute limit for a backup of a tree: how fast the same bytes go
//! through cairn's own hashing, compression and encryption alone, on every core,
//! with no file system, channel or pack in the way. scripts/bench runs it beside
//! the timed backups and reports backup throughput as a share of it.
//!
//! The tree is read into memory and cut with the default chunker first (not
//! timed). Timed: each chunk's keyed BLAKE3 ID, and for the first copy of each
//! ID (a backup stores duplicates once) zstd at the default level with the
//! incompressibility probe, then XChaCha20-Poly1305 sealing; one thread per core
//! taking chunks in order. Prints one JSON line.
//!
//! Usage: cargo run --release --example compute_limit -- DIR [THREADS]

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use cairn::chunker::{ChunkSizes, Chunker};
use cairn::compress::Compressor;
use cairn::crypto::MasterKey;
use cairn::repo::pack;

fn read_tree(dir: &Path, files: &mut Vec<Vec<u8>>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let t = e.file_type()?;
        if t.is_dir() {
            read_tree(&e.path(), files)?;
        } else if t.is_file() {
            files.push(std::fs::read(e.path())?);
        }
    }
    Ok(())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: compute_limit DIR [THREADS]");
        std::process::exit(2);
    };
    let threads = args
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let mut files = Vec::new();
    if let Err(e) = read_tree(Path::new(&dir), &mut files) {
        eprintln!("compute_limit: reading {dir}: {e}");
        std::process::exit(1);
    }
    let key = MasterKey::random().expect("random key");
    let chunker = Chunker::new(ChunkSizes::default(), key.chunker_seed());
    let mut chunks: Vec<&[u8]> = Vec::new();
    for f in &files {
        let mut rest = &f[..];
        while !rest.is_empty() {
            let n = chunker.cut(rest);
            chunks.push(&rest[..n]);
            rest = &rest[n..];
        }
    }
    let bytes: usize = chunks.iter().map(|c| c.len()).sum();
    let next = AtomicUsize::new(0);
    let seen = Mutex::new(HashSet::new());
    let stored = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut zstd = Compressor::new(3);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(c) = chunks.get(i) else { break };
                    let id = key.blob_id(c);
                    if seen.lock().expect("poisoned").insert(id) {
                        let (_, sealed) = pack::encode_blob(&key, c, zstd.as_mut());
                        stored.fetch_add(sealed.len(), Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"bytes\":{bytes},\"chunks\":{},\"stored_bytes\":{},\"threads\":{threads},\"seconds\":{secs:.3},\"mbps\":{:.1}}}",
        chunks.len(),
        stored.load(Ordering::Relaxed),
        bytes as f64 / 1e6 / secs
    );
}
