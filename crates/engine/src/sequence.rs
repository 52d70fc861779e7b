//! One generation request as it runs: its own KV cache, sampler and text stream, moved
//! through `Prefilling -> Decoding -> Finished` by [`Sequence::step`].
//!
//! Optional per request, and free when unused: a grammar for the answer
//! ([`OutputFormat`], see [`crate::constraint`]) and per-token log probabilities
//! ([`crate::logprobs`]).

use std::time::{Duration, Instant};

use crate::constraint::guide::Guide;
use crate::constraint::OutputFormat;
use crate::error::{EngineError, Result};
use crate::kv_cache::KvCache;
use crate::logprobs::{token_logprobs, LogprobQueue, TokenLogprob};
use crate::model::{BatchInput, Model};
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
    /// CPU threads for this request's steps (`num_thread`); `None` uses every core.
    pub num_thread: Option<usize>,
    /// The answer's shape; check it with [`Model::check_format`] before submitting.
    /// The generation ends (`stop`) when the grammar is complete.
    pub format: Option<OutputFormat>,
    /// With `format`: generate freely until the generated text contains this string
    /// (a thinking model's closing tag, e.g. `</think>`), then apply the grammar. The
    /// rest of the token that completed the string is not part of the answer's grammar.
    pub format_after: Option<String>,
    /// Report each generated token's log probability and this many alternatives
    /// (0..=20); `None` reports none.
    pub logprobs: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoneReason {
    /// End-of-generation token or a stop string.
    Stop,
    /// `num_predict` reached, or the context filled up with shifting disabled (a
    /// structured answer may be cut short).
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
    /// Every prompt token, those served from a cached prefix included (as Ollama and
    /// OpenAI report a prompt's length).
    pub prompt_eval_count: usize,
    /// Of those, the tokens taken from a cached prefix instead of evaluated
    /// (OpenAI's `prompt_tokens_details.cached_tokens`).
    pub prompt_cached: usize,
    /// Time spent evaluating the prompt tokens that were not cached.
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
    /// Log probabilities of the tokens whose text completed in `text` (requests with
    /// `logprobs` only; see [`crate::logprobs`] for the rule).
    pub logprobs: Vec<TokenLogprob>,
    /// Set on the step that ends the sequence.
    pub finished: Option<DoneReason>,
    /// The sequence failed (its grammar broke); it is finished and sends nothing more.
    pub error: Option<EngineError>,
}

/// A finished sequence's cache and the tokens it holds, kept so that a later request
/// whose prompt starts with the same tokens skips recomputing them.
pub struct CachedPrefix {
    pub cache: KvCache,
    /// The tokens whose keys and values are in `cache`, in order.
    pub tokens: Vec<u32>,
}

impl CachedPrefix {
    /// How many leading tokens of `prompt` this cache already holds.
    pub fn common_prefix(&self, prompt: &[u32]) -> usize {
        self.tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
    }
}

/// What a fork of a sequence starts afresh with (see [`Sequence::fork`]).
struct ForkSpec {
    sampling: SamplingOptions,
    stop: Vec<String>,
    format: Option<OutputFormat>,
    format_after: Option<String>,
    logprobs: Option<usize>,
}

pub struct Sequence {
    cache: KvCache,
    /// Tokens in the cache's order (prompt after truncation/shifting, then generated).
    tokens: Vec<u32>,
    /// Every token of the request: original prompt then generated ones (for `context`).
    context: Vec<u32>,
    /// Tokens still to be fed into the cache (the pending prompt, then the last sample).
    pending_from: usize,
    /// The tokens the current step feeds, set by [`Sequence::plan`].
    feeding: Option<(usize, usize)>,
    sampler: Sampler,
    stream: TextStream,
    guide: Option<Guide>,
    logprobs: Option<LogprobQueue>,
    num_predict: Option<usize>,
    num_keep: usize,
    num_ctx: usize,
    shift: bool,
    state: State,
    pub stats: Stats,
    fork_spec: ForkSpec,
}

/// What a sequence wants from the next batched step.
#[derive(Debug)]
pub enum Plan {
    /// Feed this many tokens (see [`Sequence::batch_input`]).
    Feed(usize),
    /// Nothing to run: the sequence just finished (context full, no shift).
    Finished(StepOutput),
}

impl Sequence {
    pub fn new(model: &Model, req: GenerationRequest) -> Result<Self> {
        Self::reusing(model, req, None)
    }

    /// Start a sequence, taking over `prefix`'s cache when its tokens begin the prompt.
    /// The prompt's shared tokens are not evaluated again: they count in
    /// `prompt_eval_count` and `prompt_cached`, not in `prompt_eval_duration`.
    pub fn reusing(
        model: &Model,
        req: GenerationRequest,
        prefix: Option<CachedPrefix>,
    ) -> Result<Self> {
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
        let (cache, done) = match prefix {
            Some(p) if p.cache.capacity() == num_ctx => {
                // At least the last prompt token is evaluated: its logits are needed.
                let common = p.common_prefix(&prompt).min(prompt.len() - 1);
                let mut cache = p.cache;
                cache.truncate(common);
                (cache, common)
            }
            _ => (model.new_cache(num_ctx)?, 0),
        };
        let guide = match &req.format {
            Some(format) => Some(Guide::new(
                model.constraint_env()?,
                format,
                req.format_after.as_deref(),
            )?),
            None => None,
        };
        Ok(Self {
            cache,
            context: req.prompt,
            tokens: prompt,
            pending_from: 0,
            feeding: None,
            sampler: Sampler::new(req.sampling.clone()),
            stream: TextStream::new(req.stop.clone()),
            guide,
            logprobs: req.logprobs.map(LogprobQueue::new),
            num_predict: req.num_predict,
            num_keep,
            num_ctx,
            shift: req.shift,
            state: State::Prefilling { done },
            stats: Stats {
                prompt_eval_count: done,
                prompt_cached: done,
                ..Stats::default()
            },
            fork_spec: ForkSpec {
                sampling: req.sampling,
                stop: req.stop,
                format: req.format,
                format_after: req.format_after,
                logprobs: req.logprobs,
            },
        })
    }

    /// Whether the planned step feeds the last prompt tokens (its logits give the
    /// first generated token): the point where [`fork`](Self::fork) shares a prefill.
    pub fn completes_prefill(&self) -> bool {
        matches!(self.state, State::Prefilling { .. })
            && self.stats.eval_count == 0
            && self.feeding.is_some_and(|(_, to)| to == self.tokens.len())
    }

    /// Another choice of the same request: a copy of this sequence's cache, tokens,
    /// planned step and counts, with a fresh sampler (seed `seed + index`, or a random
    /// one when the request has no seed), text stream, grammar and log-probability
    /// queue. Made when [`completes_prefill`](Self::completes_prefill), before
    /// [`accept`](Self::accept), so `n` choices run one prefill and sample `n` times
    /// from its logits.
    pub fn fork(&self, model: &Model, index: u64) -> Result<Sequence> {
        let spec = &self.fork_spec;
        let mut sampling = spec.sampling.clone();
        sampling.seed = sampling.seed.map(|s| s.wrapping_add(index));
        let guide = match &spec.format {
            Some(format) => Some(Guide::new(
                model.constraint_env()?,
                format,
                spec.format_after.as_deref(),
            )?),
            None => None,
        };
        Ok(Self {
            cache: self.cache.try_clone()?,
            tokens: self.tokens.clone(),
            context: self.context.clone(),
            pending_from: self.pending_from,
            feeding: self.feeding,
            sampler: Sampler::new(sampling.clone()),
            stream: TextStream::new(spec.stop.clone()),
            guide,
            logprobs: spec.logprobs.map(LogprobQueue::new),
            num_predict: self.num_predict,
            num_keep: self.num_keep,
            num_ctx: self.num_ctx,
            shift: self.shift,
            state: self.state,
            stats: self.stats.clone(),
            fork_spec: ForkSpec {
                sampling,
                stop: spec.stop.clone(),
                format: spec.format.clone(),
                format_after: spec.format_after.clone(),
                logprobs: spec.logprobs,
            },
        })
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished(_))
    }

    /// Whether the sequence is still feeding its prompt.
    pub fn is_prefilling(&self) -> bool {
        matches!(self.state, State::Prefilling { .. })
    }

    /// Prompt tokens not yet evaluated.
    pub fn prompt_remaining(&self) -> usize {
        match self.state {
            State::Prefilling { done } => self.tokens.len() - done,
            _ => 0,
        }
    }

    /// The request's prompt and generated tokens (Ollama's `context`).
    pub fn context(&self) -> &[u32] {
        &self.context
    }

    /// Hand back the cache and the tokens it holds, for a later request to reuse.
    pub fn into_prefix(self) -> CachedPrefix {
        let n = self.cache.len().min(self.tokens.len());
        let mut tokens = self.tokens;
        tokens.truncate(n);
        CachedPrefix {
            cache: self.cache,
            tokens,
        }
    }

    /// Decide what the next step feeds: one token when decoding, up to `budget` prompt
    /// tokens (at least one) when prefilling. A full context shifts here, or finishes
    /// the sequence with `length` when shifting is off.
    pub fn plan(&mut self, budget: usize) -> Plan {
        match self.state {
            State::Finished(_) => Plan::Finished(StepOutput::default()),
            State::Prefilling { done } => {
                let end = (done + budget.max(1)).min(self.tokens.len());
                self.feeding = Some((done, end));
                Plan::Feed(end - done)
            }
            State::Decoding => {
                if self.cache.len() + 1 > self.num_ctx {
                    if !self.shift {
                        return Plan::Finished(self.finish(DoneReason::Length));
                    }
                    self.shift_context();
                    // Re-feed what is left after the kept tokens (positions changed).
                    self.state = State::Prefilling {
                        done: self.cache.len(),
                    };
                    return self.plan(budget);
                }
                self.feeding = Some((self.pending_from, self.tokens.len()));
                Plan::Feed(self.tokens.len() - self.pending_from)
            }
        }
    }

    /// The tokens and cache of the planned step, as a batch input.
    pub fn batch_input(&mut self) -> Option<BatchInput<'_>> {
        let (from, to) = self.feeding?;
        let logits = self.step_wants_logits(to);
        Some(BatchInput {
            tokens: &self.tokens[from..to],
            cache: &mut self.cache,
            logits,
        })
    }

    fn step_wants_logits(&self, to: usize) -> bool {
        match self.state {
            State::Prefilling { .. } => to == self.tokens.len(),
            _ => true,
        }
    }

    /// Take the result of the planned step: the logits if it produced some, and how
    /// long the step took (counted as prompt or generation time).
    pub fn accept(
        &mut self,
        model: &Model,
        logits: Option<&[f32]>,
        elapsed: Duration,
    ) -> StepOutput {
        let Some((from, to)) = self.feeding.take() else {
            return StepOutput::default();
        };
        let first_pass = self.stats.eval_count == 0;
        match self.state {
            State::Prefilling { .. } => {
                if first_pass {
                    self.stats.prompt_eval_count += to - from;
                    self.stats.prompt_eval_duration += elapsed;
                } else {
                    self.stats.eval_duration += elapsed;
                }
                if to < self.tokens.len() {
                    self.state = State::Prefilling { done: to };
                    return StepOutput::default();
                }
                self.pending_from = to;
                self.state = State::Decoding;
            }
            State::Decoding => {
                self.pending_from = to;
                self.stats.eval_duration += elapsed;
            }
            State::Finished(_) => return StepOutput::default(),
        }
        match logits {
            Some(l) => self.sample_and_emit(model, l),
            None => StepOutput::default(),
        }
    }

    /// Advance by one forward pass of this sequence alone: a prefill chunk or one
    /// decoded token.
    pub fn step(&mut self, model: &Model) -> Result<StepOutput> {
        match self.plan(PREFILL_CHUNK) {
            Plan::Finished(out) => Ok(out),
            Plan::Feed(_) => {
                let start = Instant::now();
                let threads = model.max_threads();
                let logits = match self.batch_input() {
                    Some(input) => model.forward_batch(&mut [input], threads)?.pop().flatten(),
                    None => None,
                };
                Ok(self.accept(model, logits.as_deref(), start.elapsed()))
            }
        }
    }

    fn sample_and_emit(&mut self, model: &Model, logits: &[f32]) -> StepOutput {
        let mask = match self.guide.as_mut().map(Guide::mask) {
            Some(Err(e)) => return self.fail(e),
            Some(Ok(mask)) => mask,
            None => None,
        };
        let token = self
            .sampler
            .sample_masked(logits, &self.tokens, self.num_ctx, mask);
        self.stats.eval_count += 1;
        if model.tokenizer.is_end_of_generation(token) {
            return self.finish(DoneReason::Stop);
        }
        self.tokens.push(token);
        self.context.push(token);
        let bytes = model.tokenizer.token_bytes(token);
        let complete = match self.guide.as_mut().map(|g| g.commit(token, bytes)) {
            Some(Err(e)) => return self.fail(e),
            Some(Ok(complete)) => complete,
            None => false,
        };
        let chunk = self.stream.push(bytes);
        if let Some(q) = &mut self.logprobs {
            let end = (!self.stream.char_unfinished()).then(|| self.stream.decoded_len());
            let bytes_of = |t| model.tokenizer.token_bytes(t);
            q.push(token_logprobs(logits, token, q.top, bytes_of), end);
        }
        if chunk.stopped {
            self.state = State::Finished(DoneReason::Stop);
            let emitted = self.stream.emitted_len();
            return StepOutput {
                text: chunk.text,
                logprobs: self
                    .logprobs
                    .as_mut()
                    .map(|q| q.release_before_stop(emitted))
                    .unwrap_or_default(),
                finished: Some(DoneReason::Stop),
                error: None,
            };
        }
        let done = if complete {
            Some(DoneReason::Stop)
        } else if self.num_predict.is_some_and(|n| self.stats.eval_count >= n) {
            Some(DoneReason::Length)
        } else {
            None
        };
        if let Some(reason) = done {
            let mut out = self.finish(reason);
            out.text = chunk.text + &out.text;
            return out;
        }
        let emitted = self.stream.emitted_len();
        StepOutput {
            text: chunk.text,
            logprobs: self
                .logprobs
                .as_mut()
                .map(|q| q.release(emitted))
                .unwrap_or_default(),
            finished: None,
            error: None,
        }
    }

    fn finish(&mut self, reason: DoneReason) -> StepOutput {
        self.state = State::Finished(reason);
        StepOutput {
            text: self.stream.finish(),
            logprobs: self
                .logprobs
                .as_mut()
                .map(LogprobQueue::release_all)
                .unwrap_or_default(),
            finished: Some(reason),
            error: None,
        }
    }

    /// End the sequence on an error; nothing more is sent.
    fn fail(&mut self, e: EngineError) -> StepOutput {
        tracing::warn!("sequence failed: {e}");
        self.state = State::Finished(DoneReason::Stop);
        StepOutput {
            error: Some(e),
            ..StepOutput::default()
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
