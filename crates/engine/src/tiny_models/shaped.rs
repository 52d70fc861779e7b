//! Llama-shaped synthetic models of realistic size (1B, 8B) for the GPU benchmark
//! (`benches/gpu.sh`): every matrix Q4_K with random blocks, written through the same
//! [`Builder`] and GGUF writer as the tiny models, so no download is needed.
//!
//! The blocks are made directly rather than quantized from f32 values (an 8B model
//! would be 32 GB of f32 and minutes of quantizing): random 4-bit quants and 6-bit
//! sub-block scales and mins, with the block's `d` chosen so that each weight has
//! standard deviation `gain / sqrt(fan_in)` and `dmin = 7.5 d`, which centres the
//! weights on zero. The text such a model writes is noise; its speed is a real model's.
//! The vocabulary is copied from a GGUF (SmolLM2's 49,152 tokens), so the embedding and
//! output matrices are smaller than Llama 3's (128,256 tokens).

use candle_core::quantized::GgmlDType;
use half::f16;
use std::path::Path;

use super::{families, read_vocab, Builder, Dims};
use crate::error::{EngineError, Result};

/// A decoder's size, as its GGUF keys give it.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub name: &'static str,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub n_ff: usize,
    pub context: usize,
}

/// Llama 3.2 1B and Llama 3.1 8B (their sizes, not their weights or vocabulary).
pub const SHAPES: &[Shape] = &[
    Shape {
        name: "llama-1b",
        n_embd: 2048,
        n_layer: 16,
        n_head: 32,
        n_kv_head: 8,
        n_ff: 8192,
        context: 8192,
    },
    Shape {
        name: "llama-8b",
        n_embd: 4096,
        n_layer: 32,
        n_head: 32,
        n_kv_head: 8,
        n_ff: 14336,
        context: 8192,
    },
];

/// Bytes of one Q4_K block: `d`, `dmin` (f16), 12 bytes of 6-bit scales and mins,
/// 128 bytes of 4-bit quants, for 256 weights.
const Q4K_BLOCK_BYTES: usize = 144;
const Q4K_BLOCK_WEIGHTS: usize = 256;
/// The standard deviation of `sc * q - 7.5 * m` for uniform 6-bit `sc`, `m` and 4-bit
/// `q`: a weight is `d` times it.
const Q4K_UNIT_STD: f32 = 258.3;

/// Write the model of `shape` (a name from [`SHAPES`], or a [`Shape`] via
/// [`write_shape`]) to `out`, with the vocabulary of the GGUF at `vocab_source`.
pub fn write_shaped(shape: &str, vocab_source: &Path, out: &Path) -> Result<()> {
    let s = SHAPES.iter().find(|s| s.name == shape).ok_or_else(|| {
        let known: Vec<&str> = SHAPES.iter().map(|s| s.name).collect();
        EngineError::UnsupportedArchitecture(format!(
            "no shape '{shape}' (known: {})",
            known.join(", ")
        ))
    })?;
    write_shape(s, vocab_source, out)
}

/// As [`write_shaped`], for any shape (the tests use a small one).
pub fn write_shape(s: &Shape, vocab_source: &Path, out: &Path) -> Result<()> {
    if s.n_head == 0
        || !s.n_embd.is_multiple_of(s.n_head)
        || !s.n_embd.is_multiple_of(Q4K_BLOCK_WEIGHTS)
    {
        return Err(EngineError::InvalidModel(format!(
            "shape {}: n_embd must divide by n_head and by 256",
            s.name
        )));
    }
    let vocab = read_vocab(vocab_source)?;
    let mut b = Builder::new(s.name, vocab.n_tokens);
    b.dims = Dims {
        n_vocab: vocab.n_tokens,
        n_embd: s.n_embd,
        n_layer: s.n_layer,
        n_head: s.n_head,
        n_kv_head: s.n_kv_head,
        head_dim: s.n_embd / s.n_head,
        n_ff: s.n_ff,
    };
    b.random_q4k = true;
    families::llama_shaped(&mut b, s.context)?;
    b.meta.extend(vocab.keys);
    b.write(out)
}

impl Builder {
    /// A `[rows, cols]` matrix of random Q4_K blocks whose weights have standard
    /// deviation `gain / sqrt(cols)` around zero.
    pub(super) fn random_q4k_matrix(
        &mut self,
        name: &str,
        shape: &[usize],
        gain: f32,
    ) -> Result<()> {
        let (rows, cols) = match shape {
            [rows, cols] if cols.is_multiple_of(Q4K_BLOCK_WEIGHTS) => (*rows, *cols),
            _ => {
                return Err(EngineError::InvalidModel(format!(
                    "{name}: a Q4_K matrix needs two dimensions, the inner a multiple of 256, not {shape:?}"
                )))
            }
        };
        let d = gain / ((cols as f32).sqrt() * Q4K_UNIT_STD);
        let (d, dmin) = (
            f16::from_f32(d).to_le_bytes(),
            f16::from_f32(7.5 * d).to_le_bytes(),
        );
        let mut raw = vec![0u8; rows * cols / Q4K_BLOCK_WEIGHTS * Q4K_BLOCK_BYTES];
        for chunk in raw.chunks_mut(8) {
            let r = self.rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        for block in raw.chunks_exact_mut(Q4K_BLOCK_BYTES) {
            block[0..2].copy_from_slice(&d);
            block[2..4].copy_from_slice(&dmin);
        }
        self.push_raw(name, &[rows, cols], GgmlDType::Q4K.into(), raw);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Model;

    fn vocab() -> Option<std::path::PathBuf> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../models-cache/smollm2-135m-instruct-q4_1.gguf");
        p.exists().then_some(p)
    }

    /// A small shape loads through the real loader and gives finite, spread logits.
    #[test]
    fn a_shaped_model_loads_and_runs() {
        let Some(vocab) = vocab() else {
            eprintln!("SKIPPED: models-cache/smollm2-135m-instruct-q4_1.gguf is missing");
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("shaped.gguf");
        let shape = Shape {
            name: "llama-test",
            n_embd: 256,
            n_layer: 2,
            n_head: 4,
            n_kv_head: 2,
            n_ff: 512,
            context: 512,
        };
        write_shape(&shape, &vocab, &out).expect("write");
        let model = Model::load(&out, &candle_core::Device::Cpu).expect("load");
        let mut cache = model.new_cache(64).expect("cache");
        let logits = model.forward(&[1, 2, 3, 4], &mut cache).expect("forward");
        assert!(logits.iter().all(|v| v.is_finite()), "non-finite logits");
        let max = logits.iter().cloned().fold(f32::MIN, f32::max);
        let min = logits.iter().cloned().fold(f32::MAX, f32::min);
        assert!(max - min > 0.1, "flat logits {min}..{max}");
    }
}
