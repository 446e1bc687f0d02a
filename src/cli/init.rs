//! `cairn init`.

use anyhow::{Result, anyhow};
use cairn::chunker::ChunkSizes;
use cairn::crypto::KdfParams;
use cairn::repo::{InitOptions, Repository, config};
use clap::Args;

use super::{Global, Output, parse_size};

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Chunk sizes MIN,AVG,MAX (default 64K,128K,1M).
    #[arg(long, value_name = "MIN,AVG,MAX")]
    chunk_size: Option<String>,
    /// Default compression: off, fastest, default, max or a zstd level 1-22.
    #[arg(long, default_value = "default")]
    compression: String,
    /// Target pack size in MiB.
    #[arg(long, value_name = "MiB", default_value_t = 16)]
    pack_size: u32,
    /// Pad every stored chunk's size (Padmé: for typical chunks at most about
    /// 3% more, 1.6% on average), so the storage cannot learn exact lengths.
    #[arg(long)]
    pad: bool,
    /// Argon2id memory for the password key, in KiB (default 65536).
    #[arg(long, value_name = "KiB")]
    kdf_memory: Option<u32>,
    /// Argon2id passes (default 3).
    #[arg(long, value_name = "N")]
    kdf_iterations: Option<u32>,
    /// Cut and name content as the repository given by --from-repo does (its
    /// chunk sizes, chunker seed and ID key), so `copy` from it moves chunks
    /// without re-chunking.
    #[arg(long, requires = "from_repo")]
    copy_chunker_params: bool,
    #[command(flatten)]
    from: super::FromRepo,
}

pub fn run(g: &Global, out: &Output, a: InitArgs) -> Result<i32> {
    let chunker = match &a.chunk_size {
        None => ChunkSizes::default(),
        Some(s) => {
            let v = s.split(',').map(parse_size).collect::<Result<Vec<_>>>()?;
            let [min, avg, max] = v[..] else {
                return Err(anyhow!("--chunk-size takes three sizes MIN,AVG,MAX"));
            };
            let c = |x: u64| u32::try_from(x).map_err(|_| anyhow!("chunk size {x} is too large"));
            ChunkSizes { min_size: c(min)?, avg_size: c(avg)?, max_size: c(max)? }
        }
    };
    let mut kdf = KdfParams::default();
    kdf.memory_kib = a.kdf_memory.unwrap_or(kdf.memory_kib);
    kdf.iterations = a.kdf_iterations.unwrap_or(kdf.iterations);
    kdf.validate().map_err(|_| anyhow!("--kdf-memory must be 8..=4194304 KiB and --kdf-iterations 1..=100"))?;
    let pack_size = a.pack_size.checked_mul(1 << 20).ok_or_else(|| anyhow!("--pack-size is too large"))?;
    let mut opts = InitOptions {
        chunker,
        compression: config::parse_compression(&a.compression)?,
        pack_size,
        pad: a.pad,
        kdf,
        content_keys_from: None,
    };
    if a.copy_chunker_params {
        if a.chunk_size.is_some() {
            return Err(anyhow!("--chunk-size and --copy-chunker-params exclude each other"));
        }
        let from = g.open_from(&a.from)?;
        opts.chunker = from.config().chunker;
        opts.content_keys_from = Some(from.key().clone());
    }
    let backend = cairn::backend::open(g.location()?, &g.options)?;
    let password = g.password(true)?;
    let repo = Repository::init(backend, g.rt.clone(), &password, &opts)?;
    if out.json {
        out.json(&serde_json::json!({"message_type": "initialized", "id": repo.config().id, "repository": repo.backend().location()}));
    } else {
        out.info(format!("created cairn repository {} at {}", repo.config().id.short(), repo.backend().location()));
        out.info("Keep the password safe: without it the data cannot be recovered.");
    }
    Ok(0)
}
