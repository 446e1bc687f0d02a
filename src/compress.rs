//! zstd for blobs: compress only what shrinks, and do not spend the full effort on
//! data a quick probe shows to be incompressible (already compressed or encrypted
//! files, media), the way borg's `auto` mode does.

/// Blobs at least this large are probed before being compressed.
const PROBE_FROM: usize = 256 << 10;
/// Bytes taken from each of three places of the blob for the probe.
const PROBE_PIECE: usize = 16 << 10;

/// A per-thread compressor at the repository's level.
pub struct Compressor {
    main: zstd::bulk::Compressor<'static>,
    probe: zstd::bulk::Compressor<'static>,
    sample: Vec<u8>,
}

impl Compressor {
    /// A compressor for zstd `level` (1..=22); None for level 0 (off).
    pub fn new(level: i32) -> Option<Compressor> {
        if level <= 0 {
            return None;
        }
        Some(Compressor {
            main: zstd::bulk::Compressor::new(level).ok()?,
            probe: zstd::bulk::Compressor::new(1).ok()?,
            sample: Vec::with_capacity(3 * PROBE_PIECE),
        })
    }

    /// The compressed form of `plain`, if it is smaller.
    pub fn compress(&mut self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0; plain.len()];
        let n = self.compress_into(plain, &mut out)?;
        out.truncate(n);
        Some(out)
    }

    /// Compresses `plain` into `out` (at least `plain.len()` bytes long) and
    /// returns the compressed length, if it is smaller than `plain`.
    pub fn compress_into(&mut self, plain: &[u8], out: &mut [u8]) -> Option<usize> {
        if plain.len() <= 64 || !self.worth_trying(plain) {
            return None;
        }
        // Room for less than the input: if it does not fit, it did not shrink.
        self.main.compress_to_buffer(plain, &mut out[..plain.len() - 1]).ok()
    }

    /// Whether a fast level-1 pass over three samples saves at least 1%.
    fn worth_trying(&mut self, plain: &[u8]) -> bool {
        if plain.len() < PROBE_FROM {
            return true;
        }
        self.sample.clear();
        let last = plain.len() - PROBE_PIECE;
        for start in [0, last / 2, last] {
            self.sample.extend_from_slice(&plain[start..start + PROBE_PIECE]);
        }
        let mut out = Vec::with_capacity(self.sample.len());
        match self.probe.compress_to_buffer(&self.sample, &mut out) {
            Ok(n) => n * 100 < self.sample.len() * 99,
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compresses_text_skips_noise() {
        let mut c = Compressor::new(3).unwrap();
        let text: Vec<u8> = (0..1_000_000).map(|i| b"abcdefgh"[i % 8]).collect();
        let z = c.compress(&text).unwrap();
        assert!(z.len() < text.len() / 10);
        assert_eq!(zstd::bulk::decompress(&z, text.len()).unwrap(), text);
        let mut x = 0x9e3779b97f4a7c15u64;
        let noise: Vec<u8> = (0..1_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(c.compress(&noise).is_none());
        assert!(c.compress(&noise[..1000]).is_none(), "small noise does not shrink either");
        assert!(Compressor::new(0).is_none());
    }
}
