//! Tiny seeded models of every decoder family, written as real GGUF files with the
//! metadata keys and tensor names, shapes and layouts llama.cpp's converter writes for
//! that family. They exist to prove wick's forward equal to llama.cpp's without a
//! download: `scripts/record_family_fixtures.py` records llama.cpp on each file, and
//! `tests/family_parity.rs` regenerates the file, checks its sha256 and compares.
//!
//! Every file is a pure function of the family name and the vocabulary source (the
//! `tokenizer.*` keys of SmolLM2's GGUF are copied as they are, so both engines build
//! the same `gpt2`/`smollm` tokenizer): the weights come from a SplitMix RNG seeded
//! by the family name, metadata is written in a fixed order, and quantization is
//! deterministic, so the output is byte-identical run after run.
//!
//! Weights are scaled so that attention is sharp, every block moves the residual
//! stream, and the logits are peaked (a clear top-1 at most positions): a decoder that
//! gets a detail wrong shows it in the top-1 token, not only in the fourth decimal.

mod families;
mod hf_export;
mod shaped;

pub use hf_export::write_hf_dir;

pub use shaped::{write_shape, write_shaped, Shape, SHAPES};

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use wick_kernels::synth::Rng;

use crate::error::{EngineError, Result};
use crate::gguf::{GgmlType, TensorOut};

/// Every family [`write`] knows, by the name the fixtures use.
pub const FAMILIES: &[&str] = &[
    "llama", "llama3", "qwen2", "qwen3", "qwen3moe", "gemma2", "gemma3", "phi3", "granite",
    "olmo2", "gpt-oss",
];

/// Write the tiny model of `family` to `out`, with the vocabulary and tokenizer
/// metadata of the GGUF at `vocab_source` (SmolLM2's).
pub fn write(family: &str, vocab_source: &Path, out: &Path) -> Result<()> {
    let vocab = read_vocab(vocab_source)?;
    let mut b = Builder::new(family, vocab.n_tokens);
    families::build(family, &mut b)?;
    b.meta.extend(vocab.keys);
    b.write(out)
}

/// The vocabulary size and `tokenizer.*` keys (sorted by key) of a GGUF file.
struct Vocab {
    n_tokens: usize,
    keys: Vec<(String, Value)>,
}

fn read_vocab(path: &Path) -> Result<Vocab> {
    let file = File::open(path).map_err(|source| EngineError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let content = Content::read(&mut BufReader::new(file))
        .map_err(|e| EngineError::InvalidModel(format!("{}: {e}", path.display())))?;
    let mut keys: Vec<(String, Value)> = content
        .metadata
        .into_iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    let n_tokens = keys
        .iter()
        .find(|(k, _)| k == "tokenizer.ggml.tokens")
        .and_then(|(_, v)| match v {
            Value::Array(a) => Some(a.len()),
            _ => None,
        })
        .ok_or_else(|| EngineError::MissingMetadata("tokenizer.ggml.tokens".into()))?;
    Ok(Vocab { n_tokens, keys })
}

/// The shape every family starts from; a family may change any of it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub n_ff: usize,
}

/// Collects metadata and tensors in order, then writes them as one GGUF file.
pub(crate) struct Builder {
    pub arch: String,
    pub dims: Dims,
    meta: Vec<(String, Value)>,
    tensors: Vec<TensorOut<'static>>,
    rng: Rng,
    /// Index into [`MATRIX_KINDS`], advanced by every quantized matrix.
    next_kind: usize,
    /// Every matrix as random Q4_K blocks made directly (no f32 values to quantize),
    /// for the benchmark shapes of [`shaped`].
    random_q4k: bool,
}

/// The quantized kinds the weight matrices cycle through (all have wick kernels).
const MATRIX_KINDS: [GgmlDType; 6] = [
    GgmlDType::Q4K,
    GgmlDType::Q8_0,
    GgmlDType::Q6K,
    GgmlDType::Q4_0,
    GgmlDType::F16,
    GgmlDType::F32,
];

/// FNV-1a of the family name: each family its own weights, the same every run.
fn seed_of(family: &str) -> u64 {
    family.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Builder {
    fn new(family: &str, n_vocab: usize) -> Self {
        Self {
            arch: String::new(),
            dims: Dims {
                n_vocab,
                n_embd: 256,
                n_layer: 2,
                n_head: 4,
                n_kv_head: 2,
                head_dim: 64,
                n_ff: 512,
            },
            meta: Vec::new(),
            tensors: Vec::new(),
            rng: Rng::new(seed_of(family)),
            next_kind: 0,
            random_q4k: false,
        }
    }

    /// A general key (no architecture prefix).
    pub fn general(&mut self, key: &str, value: Value) {
        self.meta.push((key.to_string(), value));
    }

    /// An `<arch>.<key>` key.
    pub fn key(&mut self, key: &str, value: Value) {
        let full = format!("{}.{key}", self.arch);
        self.meta.push((full, value));
    }

    pub fn key_u32(&mut self, key: &str, v: usize) {
        self.key(key, Value::U32(v as u32));
    }

    pub fn key_f32(&mut self, key: &str, v: f32) {
        self.key(key, Value::F32(v));
    }

    /// `n` values uniform with standard deviation `std` around `mean`.
    pub fn values(&mut self, n: usize, mean: f32, std: f32) -> Vec<f32> {
        let half_width = std * 3f32.sqrt();
        (0..n)
            .map(|_| mean + half_width * self.rng.range(-1.0, 1.0))
            .collect()
    }

    /// Add a tensor from explicit values; `shape` in candle order (outermost first, so
    /// a weight matrix is `[rows = outputs, cols = inputs]`; GGUF stores it reversed).
    pub fn put(
        &mut self,
        name: &str,
        shape: &[usize],
        data: Vec<f32>,
        kind: impl Into<GgmlType>,
    ) -> Result<()> {
        let kind = kind.into();
        let bytes = match kind.candle() {
            Some(dtype) => {
                let t = Tensor::from_vec(data, shape, &Device::Cpu)?;
                QTensor::quantize(&t, dtype)?.data()?.into_owned()
            }
            // ggml's reference quantizer, as llama.cpp's converter writes gpt-oss's experts.
            None if kind == GgmlType::MXFP4 => wick_kernels::reference::quantize_row_mxfp4(&data),
            None => {
                return Err(EngineError::UnsupportedTensorType {
                    tensor: name.to_string(),
                    kind: kind.name(),
                })
            }
        };
        self.push_raw(name, shape, kind, bytes);
        Ok(())
    }

    /// Add a tensor given as its blocks.
    fn push_raw(&mut self, name: &str, shape: &[usize], ty: GgmlType, data: Vec<u8>) {
        self.tensors.push(TensorOut {
            name: name.to_string(),
            ty,
            dims: shape.to_vec(),
            data: Cow::Owned(data),
        });
    }

    /// An F32 vector (norm weights, biases, rope factors, sinks).
    pub fn vector(&mut self, name: &str, n: usize, mean: f32, std: f32) -> Result<()> {
        let data = self.values(n, mean, std);
        self.put(name, &[n], data, GgmlDType::F32)
    }

    /// A weight matrix (or a stack of expert matrices, `shape` of rank 3) with entries
    /// of standard deviation `gain / sqrt(fan_in)`, in the next kind of the cycle.
    pub fn matrix(&mut self, name: &str, shape: &[usize], gain: f32) -> Result<()> {
        if self.random_q4k {
            return self.random_q4k_matrix(name, shape, gain);
        }
        let kind = if std::env::var_os("TINY_F32").is_some() {
            GgmlDType::F32
        } else {
            MATRIX_KINDS[self.next_kind % MATRIX_KINDS.len()]
        };
        self.next_kind += 1;
        self.matrix_as(name, shape, gain, kind)
    }

    /// As [`matrix`](Self::matrix), in a given kind.
    pub fn matrix_as(
        &mut self,
        name: &str,
        shape: &[usize],
        gain: f32,
        kind: impl Into<GgmlType>,
    ) -> Result<()> {
        let fan_in = *shape.last().unwrap_or(&1);
        let n: usize = shape.iter().product();
        let data = self.values(n, 0.0, gain / (fan_in as f32).sqrt());
        self.put(name, shape, data, kind)
    }

    fn write(self, out: &Path) -> Result<()> {
        let io = |source| EngineError::Io {
            path: out.display().to_string(),
            source,
        };
        let mut w = BufWriter::new(File::create(out).map_err(io)?);
        crate::gguf::write_gguf_to(&mut w, &self.meta, &self.tensors).map_err(io)?;
        w.flush().map_err(io)
    }
}
