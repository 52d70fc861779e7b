//! One generation request as it runs: its own KV cache, sampler and text stream, moved
//! through `Prefilling -> Decoding -> Finished` by [`Sequence::step`].

use std::time::{Duration, Instant};

use crate::error::{EngineError, Result};
use crate::kv_cache::KvCache;
use crate::model::Model;
use crate::sampling::{Sampler, SamplingOptions};
use crate::text_stream::TextStream;

/// Prompt tokens fed per forward pass while prefilling.
pub const PREFILL_CHUNK: usize = 512;

/// What a caller asks of one generation.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt: Vec<u32>,
    pub sampling: SamplingOptions,
    pub stop: Vec<String>,
    /// Most tokens to generate; `None` is unbounded (until EOS or the context is full
    /// and cannot shift).
    pub num_predict: Option<usize>,
    /// Context window of this sequence, in tokens.
    pub num_ctx: usize,
    /// Tokens kept at the start when the context is shifted or a prompt truncated.
    pub num_keep: usize,
    /// Shift the context (drop old tokens) instead of stopping when it is full.
    pub shift: bool,
    /// Cut a too-long prompt to fit (keeping `num_keep` tokens and the end) instead of
    /// refusing it.
    pub truncate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoneReason {
    /// End-of-generation token or a stop string.
    Stop,
    /// `num_predict` reached, or the context filled up with shifting disabled.
    Length,
}

impl DoneReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DoneReason::Stop => "stop",
            DoneReason::Length => "length",
        }
    }
}

/// Counts and timings for the final response.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub prompt_eval_count: usize,
    pub prompt_eval_duration: Duration,
    pub eval_count: usize,
    pub eval_duration: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Prefilling { done: usize },
    Decoding,
    Finished(DoneReason),
}

/// The result of one step.
#[derive(Debug, Default)]
pub struct StepOutput {
    /// Text that became safe to send (may be empty).
    pub text: String,
    /// Set on the step that ends the sequence.
    pub finished: Option<DoneReason>,
}

pub struct Sequence {
    cache: KvCache,
    /// Tokens in the cache's order (prompt after truncation/shifting, then generated).
    tokens: Vec<u32>,
    /// Every token of the request: original prompt then generated ones (for `context`).
    context: Vec<u32>,
    /// Tokens still to be fed into the cache (the pending prompt, then the last sample).
    pending_from: usize,
    sampler: Sampler,
    stream: TextStream,
    num_predict: Option<usize>,
    num_keep: usize,
    num_ctx: usize,
    shift: bool,
    state: State,
    pub stats: Stats,
}

impl Sequence {
    pub fn new(model: &Model, req: GenerationRequest) -> Result<Self> {
        let num_ctx = req.num_ctx.min(model.context_length()).max(2);
        let mut prompt = req.prompt.clone();
        if prompt.is_empty() {
            return Err(EngineError::InvalidRequest("empty prompt".into()));
        }
        let vocab = model.tokenizer.vocab_size() as u32;
        if let Some(bad) = prompt.iter().find(|&&t| t >= vocab) {
            return Err(EngineError::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary ({vocab} tokens)"
            )));
        }
        let num_keep = req.num_keep.min(num_ctx / 2);
        if prompt.len() >= num_ctx {
            if !req.truncate {
                return Err(EngineError::InvalidRequest(
                    "the input length exceeds the context length".into(),
                ));
            }
            // As Ollama's runner does: keep the first num_keep tokens and the end.
            let keep_tail = num_ctx - 1 - num_keep;
            let tail = prompt.split_off(prompt.len() - keep_tail);
            prompt.truncate(num_keep);
            prompt.extend(tail);
            tracing::warn!(
                original = req.prompt.len(),
                kept = prompt.len(),
                num_ctx,
                "truncating input prompt to fit the context window"
            );
        }
        Ok(Self {
            cache: model.new_cache(num_ctx)?,
            context: req.prompt,
            tokens: prompt,
            pending_from: 0,
            sampler: Sampler::new(req.sampling),
            stream: TextStream::new(req.stop),
            num_predict: req.num_predict,
            num_keep,
            num_ctx,
            shift: req.shift,
            state: State::Prefilling { done: 0 },
            stats: Stats::default(),
        })
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished(_))
    }

    /// The request's prompt and generated tokens (Ollama's `context`).
    pub fn context(&self) -> &[u32] {
        &self.context
    }

    /// Advance by one forward pass: a prefill chunk or one decoded token.
    pub fn step(&mut self, model: &Model) -> Result<StepOutput> {
        match self.state {
            State::Finished(_) => Ok(StepOutput::default()),
            State::Prefilling { done } => {
                let start = Instant::now();
                let end = (done + PREFILL_CHUNK).min(self.tokens.len());
                let logits = model.forward(&self.tokens[done..end], &mut self.cache)?;
                let first_pass = self.stats.eval_count == 0;
                if first_pass {
                    self.stats.prompt_eval_count += end - done;
                }
                let out = if end == self.tokens.len() {
                    self.pending_from = end;
                    self.state = State::Decoding;
                    self.sample_and_emit(model, &logits)
                } else {
                    self.state = State::Prefilling { done: end };
                    StepOutput::default()
                };
                if first_pass {
                    self.stats.prompt_eval_duration += start.elapsed();
                } else {
                    self.stats.eval_duration += start.elapsed();
                }
                Ok(out)
            }
            State::Decoding => {
                let start = Instant::now();
                if self.cache.len() + 1 > self.num_ctx {
                    if !self.shift {
                        return Ok(self.finish(DoneReason::Length));
                    }
                    self.shift_context();
                    // Re-feed what is left after the kept tokens (positions changed).
                    self.state = State::Prefilling {
                        done: self.cache.len(),
                    };
                    let out = self.step(model)?;
                    return Ok(out);
                }
                let next = &self.tokens[self.pending_from..];
                let logits = model.forward(next, &mut self.cache)?;
                self.pending_from = self.tokens.len();
                let out = self.sample_and_emit(model, &logits);
                self.stats.eval_duration += start.elapsed();
                Ok(out)
            }
        }
    }

    fn sample_and_emit(&mut self, model: &Model, logits: &[f32]) -> StepOutput {
        let token = self.sampler.sample(logits, &self.tokens, self.num_ctx);
        self.stats.eval_count += 1;
        if model.tokenizer.is_end_of_generation(token) {
            return self.finish(DoneReason::Stop);
        }
        self.tokens.push(token);
        self.context.push(token);
        let chunk = self.stream.push(model.tokenizer.token_bytes(token));
        if chunk.stopped {
            self.state = State::Finished(DoneReason::Stop);
            return StepOutput {
                text: chunk.text,
                finished: Some(DoneReason::Stop),
            };
        }
        if self.num_predict.is_some_and(|n| self.stats.eval_count >= n) {
            let mut out = self.finish(DoneReason::Length);
            out.text = chunk.text + &out.text;
            return out;
        }
        StepOutput {
            text: chunk.text,
            finished: None,
        }
    }

    fn finish(&mut self, reason: DoneReason) -> StepOutput {
        self.state = State::Finished(reason);
        StepOutput {
            text: self.stream.finish(),
            finished: Some(reason),
        }
    }

    /// Drop half of the tokens after `num_keep` (Ollama's context shift).
    fn shift_context(&mut self) {
        let keep = self.num_keep;
        let discard = (self.tokens.len() - keep) / 2;
        self.tokens.drain(keep..keep + discard);
        self.cache.truncate(keep);
        self.pending_from = keep;
        tracing::debug!(keep, discard, "context shift");
    }
}
