//! Loaded models, one file per architecture family, behind one [`Model`] type.

pub mod bert;
mod candle_cpu_ops;
pub mod decoder;
mod decoder_candle;
pub mod decoder_spec;
mod linear;
mod moe;
mod tensors;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use candle_core::Device;

use crate::constraint::{ConstraintEnv, OutputFormat};

use crate::error::{EngineError, Result};
use crate::facts::GgufFacts;
use crate::gguf::GgufFile;
use crate::kv_cache::{CandleKvCache, CpuKvCache, KvCache, KvUsage};
use crate::tokenizer::GgufTokenizer;

use bert::EncoderModel;
use decoder::{CpuBatchInput, DecoderModel, Head};
pub use decoder_candle::CandleArithmetic;
use decoder_candle::{CandleBatchInput, CandleDecoder};
use decoder_spec::decoder_family;

enum Network {
    /// wick's own kernels; batches run together.
    Cpu {
        model: DecoderModel,
        kv_usage: Arc<KvUsage>,
    },
    /// candle tensors on a GPU device (or candle's CPU device in tests); batches run
    /// together.
    Candle {
        model: CandleDecoder,
        kv_usage: Arc<KvUsage>,
    },
    /// A sentence-embedding encoder (BERT class) on wick's own kernels, on any device.
    Encoder(EncoderModel),
}

/// Why a model cannot embed: the message for the client.
fn no_generation() -> EngineError {
    EngineError::InvalidRequest("an embedding model cannot generate text".into())
}

/// One sequence's part of a [`Model::forward_batch`] call.
pub struct BatchInput<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    /// Whether the logits of the last token are wanted.
    pub logits: bool,
}

/// A model ready to run: weights, tokenizer and the facts read from its GGUF header.
pub struct Model {
    network: Network,
    weights_bytes: u64,
    pub tokenizer: GgufTokenizer,
    pub facts: GgufFacts,
    /// Built on the first structured-output request, not at load.
    constraint_env: OnceLock<std::result::Result<ConstraintEnv, String>>,
}

/// Architectures loaded as sentence-embedding encoders.
const ENCODER_ARCHITECTURES: &[&str] = &["bert", "nomic-bert"];

/// Check, from the header alone, that wick can run a GGUF file: its architecture is
/// one it knows and every tensor's kind is one its kernels have. `/api/create` calls
/// this so an unusable file is refused when it is imported, not at first use.
pub fn check_supported(path: &Path) -> Result<()> {
    let gguf = GgufFile::open(path)?;
    let arch = gguf.architecture()?;
    if decoder_family(&arch).is_none() && !ENCODER_ARCHITECTURES.contains(&arch.as_str()) {
        return Err(EngineError::UnsupportedArchitecture(arch));
    }
    crate::tokenizer::check_tokenizer(&gguf)?;
    let mut names: Vec<&String> = gguf.content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let dtype = gguf.content.tensor_infos[name].ggml_dtype;
        if dtype.kernel_kind().is_none() {
            return Err(EngineError::UnsupportedTensorType {
                tensor: name.clone(),
                kind: dtype.name(),
            });
        }
    }
    Ok(())
}

impl Model {
    /// Load a GGUF file, on the CPU with one worker per physical core. Unknown
    /// architectures and broken files are errors, never panics.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::load_with_threads(path, device, wick_kernels::physical_cores())
    }

    /// As [`load`](Self::load), with `threads` CPU workers.
    /// `WICK_CANDLE_ON_CPU=1` puts decoders on the candle path on the CPU too: the GPU
    /// path, served and tested on a machine without a GPU.
    pub fn load_with_threads(path: &Path, device: &Device, threads: usize) -> Result<Self> {
        let on_candle =
            !device.is_cpu() || std::env::var("WICK_CANDLE_ON_CPU").is_ok_and(|v| v == "1");
        let candle = on_candle.then_some(CandleArithmetic::Quantized);
        Self::load_inner(path, device, threads, candle)
    }

    /// Load a decoder onto the candle path on `device`, whatever the device is: on
    /// candle's CPU device this is how the GPU path is tested without a GPU.
    pub fn load_on_candle(
        path: &Path,
        device: &Device,
        arithmetic: CandleArithmetic,
    ) -> Result<Self> {
        Self::load_inner(path, device, 1, Some(arithmetic))
    }

    fn load_inner(
        path: &Path,
        device: &Device,
        threads: usize,
        candle: Option<CandleArithmetic>,
    ) -> Result<Self> {
        let mut gguf = GgufFile::open(path)?;
        let facts = GgufFacts::from_gguf(&gguf, false)?;
        let tokenizer = GgufTokenizer::from_gguf(&gguf)?;
        let network = match facts.architecture.as_str() {
            arch if decoder_family(arch).is_some() && candle.is_none() => Network::Cpu {
                model: DecoderModel::from_gguf(&mut gguf, arch, threads)?,
                kv_usage: Arc::new(KvUsage::default()),
            },
            arch if decoder_family(arch).is_some() => Network::Candle {
                model: CandleDecoder::from_gguf(
                    &mut gguf,
                    arch,
                    device,
                    candle.unwrap_or(CandleArithmetic::Quantized),
                )?,
                kv_usage: Arc::new(KvUsage::default()),
            },
            arch if ENCODER_ARCHITECTURES.contains(&arch) => {
                Network::Encoder(EncoderModel::from_gguf(&mut gguf, arch, threads)?)
            }
            other => return Err(EngineError::UnsupportedArchitecture(other.to_string())),
        };
        if network_vocab_mismatch(&network, tokenizer.vocab_size()) {
            return Err(EngineError::InvalidModel(
                "the tokenizer has more tokens than the embedding matrix".into(),
            ));
        }
        let weights_bytes = match &network {
            Network::Cpu { model, .. } => model.weights_bytes() as u64,
            Network::Encoder(model) => model.weights_bytes() as u64,
            Network::Candle { .. } => std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        };
        Ok(Self {
            network,
            weights_bytes,
            tokenizer,
            facts,
            constraint_env: OnceLock::new(),
        })
    }

    /// Compile `format` into a grammar for this model's vocabulary, so that a bad
    /// schema is refused before anything is generated (`InvalidFormat`, whose message
    /// names the problem). The compiled grammar is kept for the sequence that uses it.
    /// The first call on a model also builds its token trie (tens to hundreds of
    /// milliseconds): call it off async threads.
    pub fn check_format(&self, format: &OutputFormat) -> Result<()> {
        self.constraint_env()?.check(format)
    }

    /// The model's vocabulary for structured outputs, built on first use.
    pub(crate) fn constraint_env(&self) -> Result<&ConstraintEnv> {
        self.constraint_env
            .get_or_init(|| {
                let start = std::time::Instant::now();
                let env = ConstraintEnv::new(&self.tokenizer).map_err(|e| e.to_string());
                tracing::debug!(
                    "structured-output vocabulary built in {:?}",
                    start.elapsed()
                );
                env
            })
            .as_ref()
            .map_err(|e| EngineError::InvalidFormat(e.clone()))
    }

    /// Feed the next `tokens` of one sequence; logits of the last one.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let mut batch = [BatchInput {
            tokens,
            cache,
            logits: true,
        }];
        let threads = self.max_threads();
        self.forward_batch(&mut batch, threads)?
            .pop()
            .flatten()
            .ok_or_else(|| EngineError::Internal("no logits".into()))
    }

    /// One step for several sequences at once (each its own tokens and cache): on the
    /// CPU one pass through the weights for all their rows. Returns, per input, the
    /// last token's logits when asked for.
    pub fn forward_batch(
        &self,
        batch: &mut [BatchInput],
        threads: usize,
    ) -> Result<Vec<Option<Vec<f32>>>> {
        match &self.network {
            Network::Cpu { model, .. } => {
                let mut inputs = Vec::with_capacity(batch.len());
                for b in batch.iter_mut() {
                    let KvCache::Cpu(cache) = &mut *b.cache else {
                        return Err(EngineError::Internal(
                            "a GPU cache was given to a CPU model".into(),
                        ));
                    };
                    inputs.push(CpuBatchInput {
                        tokens: b.tokens,
                        cache,
                        logits: b.logits,
                    });
                }
                model.forward_batch(&mut inputs, threads)
            }
            Network::Encoder(_) => Err(no_generation()),
            Network::Candle { model, .. } => {
                let mut inputs = Vec::with_capacity(batch.len());
                for b in batch.iter_mut() {
                    let KvCache::Candle(cache) = &mut *b.cache else {
                        return Err(EngineError::Internal(
                            "a CPU cache was given to a GPU model".into(),
                        ));
                    };
                    inputs.push(CandleBatchInput {
                        tokens: b.tokens,
                        cache,
                        logits: b.logits,
                    });
                }
                model.forward_batch(&mut inputs, Head::Logits)
            }
        }
    }

    /// Run `f(task)` for every task in `0..n_tasks` on up to `threads` of the model's
    /// CPU workers (in order on the calling thread on GPU devices).
    pub fn parallel_for(&self, threads: usize, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        match &self.network {
            Network::Cpu { model, .. } => model.pool().run(threads, n_tasks, f),
            Network::Encoder(model) => model.pool().run(threads, n_tasks, f),
            Network::Candle { .. } => (0..n_tasks).for_each(f),
        }
    }

    /// Most CPU threads a forward call can use (1 on GPU devices).
    pub fn max_threads(&self) -> usize {
        match &self.network {
            Network::Cpu { model, .. } => model.max_threads(),
            Network::Encoder(model) => model.max_threads(),
            Network::Candle { .. } => 1,
        }
    }

    /// A fresh KV cache for one sequence of up to `capacity` positions. On the CPU it
    /// takes memory only as the sequence grows.
    pub fn new_cache(&self, capacity: usize) -> Result<KvCache> {
        match &self.network {
            Network::Cpu { model, kv_usage } => {
                let c = &model.spec;
                Ok(KvCache::Cpu(CpuKvCache::new(
                    c.n_layer,
                    c.n_kv_head,
                    c.head_dim,
                    capacity,
                    kv_usage.clone(),
                )))
            }
            Network::Candle { model, kv_usage } => {
                let c = &model.spec;
                Ok(KvCache::Candle(CandleKvCache::new(
                    c.n_layer,
                    c.n_kv_head,
                    c.head_dim,
                    capacity,
                    model.device(),
                    kv_usage.clone(),
                )))
            }
            Network::Encoder(_) => Err(no_generation()),
        }
    }

    /// Bytes of KV cache one position of one sequence costs.
    pub fn kv_bytes_per_position(&self) -> usize {
        match &self.network {
            Network::Cpu { model, .. } => {
                let c = &model.spec;
                CpuKvCache::bytes_per_position(c.n_layer, c.n_kv_head, c.head_dim)
            }
            Network::Candle { model, .. } => {
                let c = &model.spec;
                CandleKvCache::bytes_per_position(c.n_layer, c.n_kv_head, c.head_dim)
            }
            Network::Encoder(_) => 0,
        }
    }

    /// Bytes the KV caches of this model's live sequences hold now.
    pub fn kv_bytes_in_use(&self) -> usize {
        match &self.network {
            Network::Cpu { kv_usage, .. } | Network::Candle { kv_usage, .. } => kv_usage.bytes(),
            Network::Encoder(_) => 0,
        }
    }

    /// Bytes the weights take in memory.
    pub fn weights_bytes(&self) -> u64 {
        self.weights_bytes
    }

    /// The longest context the model was trained for.
    pub fn context_length(&self) -> usize {
        match &self.network {
            Network::Cpu { model, .. } => model.spec.context_length,
            Network::Candle { model, .. } => model.spec.context_length,
            Network::Encoder(m) => m.max_positions(),
        }
    }

    /// Whether this is a sentence-embedding encoder (it cannot generate text).
    pub fn is_encoder(&self) -> bool {
        matches!(self.network, Network::Encoder(_))
    }

    /// One vector per input, as the model's runner gives it (Ollama's "runner output"):
    /// pooled as the GGUF says, and unit length when the model normalizes its own
    /// output (`bert`; not `nomic-bert`); a decoder's last token's final-normed hidden
    /// state, as Ollama takes it from llama.cpp. Each input is whole: its tokens from
    /// [`GgufTokenizer::encode_for_embedding`]. The inputs run batched.
    pub fn embed(&self, inputs: &[&[u32]], threads: usize) -> Result<Vec<Vec<f32>>> {
        match &self.network {
            Network::Encoder(m) => m.embed(inputs, threads),
            Network::Cpu { model, kv_usage } => decoder_embed(model, kv_usage, inputs, threads),
            Network::Candle { .. } => Err(EngineError::NoEmbeddings),
        }
    }
}

/// Rows one forward pass of an embedding request takes at most: long inputs run in
/// chunks through a scratch cache, short ones share a pass.
const EMBED_CHUNK: usize = 512;

/// A decoder's embeddings, as Ollama takes them from llama.cpp: each input runs through
/// a scratch KV cache, and its vector is the last token's final-normed hidden state
/// (llama.cpp's output for a decoder without pooling, or with `last` pooling). Inputs
/// share forward passes of up to [`EMBED_CHUNK`] rows.
fn decoder_embed(
    model: &DecoderModel,
    usage: &Arc<KvUsage>,
    inputs: &[&[u32]],
    threads: usize,
) -> Result<Vec<Vec<f32>>> {
    // llama.cpp's numbering: 0 none, 3 last.
    if let Some(p) = model.pooling_type.filter(|p| ![0, 3].contains(p)) {
        return Err(EngineError::InvalidRequest(format!(
            "pooling type {p} is not supported for a decoder model (none and last are)"
        )));
    }
    if let Some(i) = inputs.iter().position(|t| t.is_empty()) {
        return Err(EngineError::InvalidRequest(format!(
            "input {i} has no tokens"
        )));
    }
    let c = &model.spec;
    let mut caches: Vec<CpuKvCache> = inputs
        .iter()
        .map(|t| CpuKvCache::new(c.n_layer, c.n_kv_head, c.head_dim, t.len(), usage.clone()))
        .collect();
    let mut fed = vec![0usize; inputs.len()];
    let mut out: Vec<Option<Vec<f32>>> = vec![None; inputs.len()];
    let mut next = 0;
    while next < inputs.len() {
        let mut budget = EMBED_CHUNK;
        let mut members = Vec::new();
        let mut i = next;
        while i < inputs.len() && budget > 0 {
            let take = (inputs[i].len() - fed[i]).min(budget);
            budget -= take;
            members.push((i, fed[i]..fed[i] + take));
            i += 1;
        }
        // The members are consecutive inputs from `next` on.
        let slots = &mut caches[next..next + members.len()];
        let mut batch: Vec<CpuBatchInput> = members
            .iter()
            .zip(slots.iter_mut())
            .map(|((idx, span), cache)| CpuBatchInput {
                tokens: &inputs[*idx][span.clone()],
                cache,
                logits: span.end == inputs[*idx].len(),
            })
            .collect();
        let hidden = model.last_hidden_batch(&mut batch, threads)?;
        for ((idx, span), h) in members.into_iter().zip(hidden) {
            fed[idx] = span.end;
            if let Some(h) = h {
                out[idx] = Some(h);
            }
        }
        while next < inputs.len() && fed[next] == inputs[next].len() {
            next += 1;
        }
    }
    out.into_iter()
        .map(|v| v.ok_or_else(|| EngineError::Internal("an input produced no embedding".into())))
        .collect()
}

fn network_vocab_mismatch(network: &Network, tokenizer_vocab: usize) -> bool {
    match network {
        Network::Cpu { model, .. } => tokenizer_vocab > model.vocab(),
        Network::Encoder(model) => tokenizer_vocab > model.vocab(),
        Network::Candle { model, .. } => tokenizer_vocab > model.vocab(),
    }
}
