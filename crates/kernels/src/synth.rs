//! Deterministic synthetic data for tests and benchmarks: a small seeded RNG and valid
//! random weight blocks of every kind (random quants, sane f16 scales).

use crate::f16::f32_to_f16;
use crate::{QMatrix, QuantKind};

/// SplitMix64: tiny, seeded, good enough for test data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// `n` values uniform in `[-1, 1)`.
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.range(-1.0, 1.0)).collect()
    }
}

fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f32_to_f16(v).to_le_bytes());
}

/// Raw bytes of a random `rows x cols` matrix of `kind` (`cols` a multiple of the block).
pub fn random_data(kind: QuantKind, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let n_blocks = rows * cols / kind.block_size();
    let ts = kind.type_size();
    let mut data = vec![0u8; n_blocks * ts];
    for chunk in data.chunks_mut(8) {
        let r = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    for b in data.chunks_exact_mut(ts) {
        let sign = if rng.unit() < 0.5 { -1.0 } else { 1.0 };
        match kind {
            QuantKind::F32 => b.copy_from_slice(&rng.range(-1.0, 1.0).to_le_bytes()),
            QuantKind::F16 => put_f16(b, 0, rng.range(-1.0, 1.0)),
            QuantKind::BF16 => {
                b.copy_from_slice(&crate::f16::f32_to_bf16(rng.range(-1.0, 1.0)).to_le_bytes())
            }
            QuantKind::Q4_0 | QuantKind::Q5_0 | QuantKind::Q8_0 => {
                put_f16(b, 0, sign * rng.range(0.002, 0.02))
            }
            QuantKind::Q4_1 => {
                put_f16(b, 0, rng.range(0.002, 0.02));
                put_f16(b, 2, rng.range(-0.1, 0.1));
            }
            QuantKind::Q4K | QuantKind::Q5K => {
                put_f16(b, 0, rng.range(0.0002, 0.002));
                put_f16(b, 2, rng.range(0.0002, 0.002));
            }
            QuantKind::Q6K => put_f16(b, 208, sign * rng.range(0.0002, 0.002)),
            QuantKind::Q2K => {
                put_f16(b, 80, rng.range(0.0002, 0.002));
                put_f16(b, 82, rng.range(0.0002, 0.002));
            }
            QuantKind::Q3K => put_f16(b, 108, sign * rng.range(0.0002, 0.002)),
            // Scales 2^-10 ..= 2^-5: values up to 0.375, like the Q4_0 ones.
            QuantKind::Mxfp4 => b[0] = 118 + (rng.next_u64() % 6) as u8,
        }
    }
    data
}

/// A random `rows x cols` matrix of `kind`.
pub fn random_matrix(kind: QuantKind, rows: usize, cols: usize, seed: u64) -> QMatrix {
    QMatrix::new(kind, rows, cols, random_data(kind, rows, cols, seed))
        .expect("random_data has the size QMatrix::new checks")
}
