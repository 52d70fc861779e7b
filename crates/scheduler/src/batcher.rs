//! The batcher: the one thread that owns a loaded model and every sequence on it.
//!
//! Each turn of its loop takes new jobs (first come, first served), drops the ones whose
//! client hung up, admits waiting jobs into free slots while the KV memory budget allows,
//! then runs ONE forward pass over every admitted sequence: a decode row for each
//! sequence that is generating, plus prompt chunks of the prefilling ones within a token
//! budget, so a long prompt does not stall the others' streams. Finished sequences leave
//! their cache behind as a reusable prefix for the next request that starts the same way.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use wick_engine::{CachedPrefix, GenerationRequest, Model, Plan, Sequence, StepOutput};

use crate::embed::{self, EmbedJob};
use crate::runner::Event;
use crate::SchedError;

/// Prompt tokens evaluated per step across all prefilling sequences (Ollama's default
/// `num_batch`).
pub const STEP_TOKEN_BUDGET: usize = 512;

/// How long a step that carries prompt tokens may take while other sequences are
/// generating: their next token waits for it, so a long prompt costs them a pause per
/// step, not a stall of its whole prefill.
///
/// Prompts and streams compete here: each step also carries every decode row, and a
/// step of few prompt rows streams all the weights for little work, so short steps
/// stretch the prefill of everyone still waiting for a first token. Eight clients
/// arriving at once (`benches/load.py`, TTFT p99 over the time their prompts take
/// alone), two runs each: with 100 ms steps, Qwen2.5-Coder-0.5B 1.43-1.52x and SmolLM2
/// 1.13-1.15x; with 250 ms, 1.09-1.16x and 0.95-1.14x, for an ITL p99 of about 0.3 s
/// instead of 0.15-0.2 s while those prompts are absorbed. (A floor of 128 prompt
/// tokens did a little better still, 0.85-1.04x, but a slow model would then stall the
/// streams for seconds.)
const STEP_TIME_WHILE_DECODING: Duration = Duration::from_millis(250);

/// While prompts wait for their first token, a step carries at least this many prompt
/// tokens per decode row: every decode row in a step delays the waiting prompts as much
/// as a prompt token or more, so they keep at least 16/17 of a crowded step. Eight
/// clients at once on Qwen2.5-Coder-1.5B (`benches/load.py`, TTFT p99 / bound): 1.71x
/// with 2 per row, 1.36x with 8, 1.25x with 16; SmolLM2 and Qwen 0.5B, whose 250 ms
/// already hold more, 0.94x and 1.06x.
const PROMPT_TOKENS_PER_DECODE_ROW: usize = 16;

/// Bounds of the prompt-token budget of a step while others decode: at least this many
/// (so prefill still moves on a slow model), at most a whole step's budget (also before
/// the model's prompt speed has been measured).
const MIN_BUDGET_WHILE_DECODING: usize = 16;
const MAX_BUDGET_WHILE_DECODING: usize = STEP_TOKEN_BUDGET;

/// Tokens of generation assumed for a request without `num_predict` when estimating
/// whether its KV cache fits.
const ASSUMED_GENERATION: usize = 256;

pub(crate) struct Job {
    pub req: GenerationRequest,
    pub events: UnboundedSender<Event>,
    /// The channels of the request's other choices (`n` > 1): forks of this job's
    /// sequence made once its prompt is evaluated, so all choices share one prefill.
    pub forks: Vec<UnboundedSender<Event>>,
}

impl Job {
    /// Sequences this job runs (each counts as pending until it ends).
    fn sequences(&self) -> usize {
        1 + self.forks.len()
    }
}

/// What the batcher thread is asked to do.
pub(crate) enum Work {
    Generate(Box<Job>),
    Embed(EmbedJob),
}

/// Limits of one model's batcher.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    /// Most sequences running at once (`OLLAMA_NUM_PARALLEL`).
    pub parallel: usize,
    /// Bytes all KV caches of this model may take, reusable prefixes included.
    pub kv_budget: usize,
}

struct Active {
    seq: Sequence,
    events: UnboundedSender<Event>,
    threads: Option<usize>,
    /// Planned into the current step.
    planned: bool,
    /// Channels of the choices still to fork from this sequence (see [`Job::forks`]).
    forks: Vec<UnboundedSender<Event>>,
}

/// One sequence's sampling task of a step: the sequence and its logits.
type SampleWork<'a> = (&'a mut Active, Option<Vec<f32>>);

pub(crate) struct Batcher {
    model: Arc<Model>,
    limits: BatchLimits,
    pending: Arc<AtomicUsize>,
    /// Sequences in slots now, for `/metrics` (written by this thread only).
    running: Arc<AtomicUsize>,
    waiting: VecDeque<Job>,
    /// Embedding jobs received since the last pass; they all run in the next one.
    embeds: Vec<EmbedJob>,
    active: Vec<Active>,
    /// Caches of finished sequences, least recently used first.
    prefixes: VecDeque<CachedPrefix>,
    /// Prompt tokens per second of this model's recent prompt-only steps.
    prompt_rate: PromptRate,
}

/// A moving average of how fast the model evaluates prompt tokens, measured on steps
/// that carry prompt chunks and no decode rows.
#[derive(Debug, Default, Clone, Copy)]
struct PromptRate {
    tokens_per_second: Option<f64>,
}

impl PromptRate {
    fn record(&mut self, tokens: usize, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if tokens < MIN_BUDGET_WHILE_DECODING || secs <= 0.0 {
            return; // too small a step to say much about the model's speed
        }
        let rate = tokens as f64 / secs;
        self.tokens_per_second = Some(match self.tokens_per_second {
            Some(old) => 0.7 * old + 0.3 * rate,
            None => rate,
        });
    }

    /// Prompt tokens a step may carry while `decoding` other sequences generate: what
    /// the model evaluates in [`STEP_TIME_WHILE_DECODING`], and at least
    /// [`PROMPT_TOKENS_PER_DECODE_ROW`] per decode row, so the first tokens of late
    /// arrivals do not wait on everyone else's streams.
    fn budget_while_decoding(&self, decoding: usize) -> usize {
        let by_time = match self.tokens_per_second {
            Some(rate) => (rate * STEP_TIME_WHILE_DECODING.as_secs_f64()) as usize,
            None => MAX_BUDGET_WHILE_DECODING,
        };
        by_time
            .max(PROMPT_TOKENS_PER_DECODE_ROW * decoding)
            .clamp(MIN_BUDGET_WHILE_DECODING, MAX_BUDGET_WHILE_DECODING)
    }
}

impl Batcher {
    pub(crate) fn new(
        model: Arc<Model>,
        limits: BatchLimits,
        pending: Arc<AtomicUsize>,
        running: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            model,
            limits,
            pending,
            running,
            waiting: VecDeque::new(),
            embeds: Vec::new(),
            active: Vec::new(),
            prefixes: VecDeque::new(),
            prompt_rate: PromptRate::default(),
        }
    }

    /// Serve jobs until every sender is gone and nothing is left to run.
    pub(crate) fn run(mut self, jobs: mpsc::Receiver<Work>) {
        loop {
            if self.active.is_empty() && self.waiting.is_empty() {
                // Idle: what the busy spell allocated goes back to the OS.
                crate::memory::return_freed_memory();
                match jobs.recv() {
                    Ok(work) => self.take(work),
                    Err(_) => return,
                }
            }
            while let Ok(work) = jobs.try_recv() {
                self.take(work);
            }
            if !self.embeds.is_empty() {
                let pending = &self.pending;
                let leave = || {
                    pending.fetch_sub(1, Ordering::SeqCst);
                };
                embed::run_jobs(&self.model, std::mem::take(&mut self.embeds), &leave);
            }
            self.drop_cancelled();
            self.admit();
            self.running.store(self.active.len(), Ordering::Relaxed);
            if !self.active.is_empty() {
                self.step();
            }
            self.running.store(self.active.len(), Ordering::Relaxed);
        }
    }

    fn take(&mut self, work: Work) {
        match work {
            Work::Generate(job) => self.waiting.push_back(*job),
            Work::Embed(job) => self.embeds.push(job),
        }
    }

    fn leave(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
    }

    /// A client that hung up frees its place in the queue or its slot (and its cache)
    /// at once.
    fn drop_cancelled(&mut self) {
        let mut gone = 0;
        self.waiting.retain(|j| {
            let closed = j.events.is_closed();
            gone += if closed { j.sequences() } else { 0 };
            !closed
        });
        self.active.retain(|a| {
            let closed = a.events.is_closed();
            gone += if closed { 1 + a.forks.len() } else { 0 };
            !closed
        });
        if gone > 0 {
            tracing::debug!(gone, "clients went away; their sequences were cancelled");
            self.pending.fetch_sub(gone, Ordering::SeqCst);
        }
    }

    /// Admit waiting jobs in arrival order while a slot and KV memory are free.
    fn admit(&mut self) {
        while self.active.len() < self.limits.parallel.max(1) {
            let Some(job) = self.waiting.front() else {
                return;
            };
            let bytes = self.estimate_bytes(&job.req) * job.sequences();
            while self.model.kv_bytes_in_use() + bytes > self.limits.kv_budget
                && !self.prefixes.is_empty()
            {
                self.prefixes.pop_front();
            }
            let fits = self.model.kv_bytes_in_use() + bytes <= self.limits.kv_budget;
            if !fits && !self.active.is_empty() {
                // Wait for a running sequence to finish; first come stays first.
                return;
            }
            let Some(job) = self.waiting.pop_front() else {
                return;
            };
            let prefix = self.take_best_prefix(&job.req.prompt);
            let threads = job.req.num_thread;
            match Sequence::reusing(&self.model, job.req, prefix) {
                Ok(seq) => self.active.push(Active {
                    seq,
                    events: job.events,
                    threads,
                    planned: false,
                    forks: job.forks,
                }),
                Err(e) => {
                    let e = Arc::new(SchedError::Engine(e));
                    for tx in std::iter::once(&job.events).chain(&job.forks) {
                        let _ = tx.send(Event::Error(e.clone()));
                        self.leave();
                    }
                }
            }
        }
    }

    fn estimate_bytes(&self, req: &GenerationRequest) -> usize {
        let generate = req.num_predict.unwrap_or(ASSUMED_GENERATION);
        let positions = (req.prompt.len() + generate).min(req.num_ctx.max(1));
        positions * self.model.kv_bytes_per_position()
    }

    /// The cached prefix sharing the most leading tokens with `prompt`, if any shares one.
    fn take_best_prefix(&mut self, prompt: &[u32]) -> Option<CachedPrefix> {
        let (i, common) = self
            .prefixes
            .iter()
            .enumerate()
            .map(|(i, p)| (i, p.common_prefix(prompt)))
            .max_by_key(|&(_, c)| c)?;
        if common == 0 {
            return None;
        }
        self.prefixes.remove(i)
    }

    /// One forward pass over every active sequence.
    fn step(&mut self) {
        let decoding_rows = self
            .active
            .iter()
            .filter(|a| !a.seq.is_prefilling() && !a.seq.is_finished())
            .count();
        let decoding = decoding_rows > 0;
        let full_budget = if decoding {
            self.prompt_rate.budget_while_decoding(decoding_rows)
        } else {
            STEP_TOKEN_BUDGET
        };
        let mut budget = full_budget;
        let mut finished: Vec<(usize, StepOutput)> = Vec::new();
        // Decoding sequences first (one row each), then prompt chunks in arrival order.
        for decoding_pass in [true, false] {
            for (i, a) in self.active.iter_mut().enumerate() {
                // `planned`: a sequence whose context shifted in the decode pass is
                // prefilling now, and already has its chunk.
                if a.planned || a.seq.is_prefilling() == decoding_pass || a.seq.is_finished() {
                    continue;
                }
                if !decoding_pass && budget == 0 {
                    a.planned = false;
                    continue;
                }
                match a.seq.plan(budget.max(1)) {
                    Plan::Feed(n) => {
                        a.planned = true;
                        if !decoding_pass || a.seq.is_prefilling() {
                            budget = budget.saturating_sub(n);
                        }
                    }
                    Plan::Finished(out) => {
                        a.planned = false;
                        finished.push((i, out));
                    }
                }
            }
        }
        let threads = self
            .active
            .iter()
            .filter(|a| a.planned)
            .map(|a| a.threads.unwrap_or(usize::MAX))
            .max()
            .unwrap_or(usize::MAX)
            .min(self.model.max_threads());
        let start = Instant::now();
        let result = {
            let mut inputs: Vec<_> = self
                .active
                .iter_mut()
                .filter(|a| a.planned)
                .filter_map(|a| a.seq.batch_input())
                .collect();
            if inputs.is_empty() {
                Ok(Vec::new())
            } else {
                self.model.forward_batch(&mut inputs, threads)
            }
        };
        let elapsed = start.elapsed();
        if !decoding {
            self.prompt_rate.record(full_budget - budget, elapsed);
        }
        match result {
            Ok(mut logits) => {
                if self.active.iter().any(|a| !a.forks.is_empty()) {
                    self.fork_choices(&mut logits);
                }
                // Sample every sequence of the step in parallel on the model's workers
                // (large vocabularies make sampling a real cost at 8-16 sequences).
                let mut logits = logits.into_iter();
                let work: Vec<(usize, Mutex<SampleWork>)> = self
                    .active
                    .iter_mut()
                    .enumerate()
                    .filter(|(_, a)| a.planned)
                    .map(|(i, a)| {
                        a.planned = false;
                        (i, Mutex::new((a, logits.next().flatten())))
                    })
                    .collect();
                let outputs: Vec<Mutex<Option<StepOutput>>> =
                    work.iter().map(|_| Mutex::new(None)).collect();
                let model = &self.model;
                model.parallel_for(threads, work.len(), &|t| {
                    let mut slot = work[t].1.lock().unwrap_or_else(|p| p.into_inner());
                    let (a, l) = &mut *slot;
                    let out = a.seq.accept(model, l.as_deref(), elapsed);
                    *outputs[t].lock().unwrap_or_else(|p| p.into_inner()) = Some(out);
                });
                for ((i, _), out) in work.iter().zip(outputs) {
                    if let Some(out) = out.into_inner().unwrap_or_else(|p| p.into_inner()) {
                        finished.push((*i, out));
                    }
                }
            }
            Err(e) => {
                // A failed step fails every sequence in it; the model stays usable.
                tracing::error!("forward pass failed: {e}");
                let e = Arc::new(SchedError::Engine(e));
                for a in self.active.iter_mut().filter(|a| a.planned) {
                    let _ = a.events.send(Event::Error(e.clone()));
                    a.planned = false;
                    a.events = closed_sender();
                }
            }
        }
        self.deliver(finished);
    }

    /// Fork the other choices of each sequence whose prompt this step completed: each
    /// copies the cache and samples from the same logits (appended, in the order of
    /// the planned sequences, so `logits` stays aligned with them).
    fn fork_choices(&mut self, logits: &mut Vec<Option<Vec<f32>>>) {
        let planned: Vec<usize> = (0..self.active.len())
            .filter(|&i| self.active[i].planned)
            .collect();
        for (k, i) in planned.into_iter().enumerate() {
            if self.active[i].forks.is_empty() || !self.active[i].seq.completes_prefill() {
                continue;
            }
            let forks = std::mem::take(&mut self.active[i].forks);
            let threads = self.active[i].threads;
            for (j, events) in forks.into_iter().enumerate() {
                match self.active[i].seq.fork(&self.model, j as u64 + 1) {
                    Ok(seq) => {
                        let l = logits.get(k).cloned().flatten();
                        self.active.push(Active {
                            seq,
                            events,
                            threads,
                            planned: true,
                            forks: Vec::new(),
                        });
                        logits.push(l);
                    }
                    Err(e) => {
                        let _ = events.send(Event::Error(Arc::new(SchedError::Engine(e))));
                        self.leave();
                    }
                }
            }
        }
    }

    /// Send each sequence's new text, and `Done` for those that ended; finished ones
    /// leave their slot and keep their cache as a reusable prefix.
    fn deliver(&mut self, outputs: Vec<(usize, StepOutput)>) {
        let mut done = vec![false; self.active.len()];
        for (i, out) in &outputs {
            if let Some(d) = done.get_mut(*i) {
                *d = out.error.is_some() || out.finished.is_some();
            }
        }
        // Counters first: a client that got its last event no longer counts as
        // queued or running (`/metrics`, the queue limit).
        // A sequence that ends before its prompt completes takes its unforked
        // choices with it.
        let ending_slots = done.iter().filter(|d| **d).count();
        let ending: usize = self
            .active
            .iter()
            .zip(&done)
            .filter(|(_, d)| **d)
            .map(|(a, _)| 1 + a.forks.len())
            .sum();
        self.running
            .store(self.active.len() - ending_slots, Ordering::Relaxed);
        self.pending.fetch_sub(ending, Ordering::SeqCst);
        for (i, out) in outputs {
            let Some(a) = self.active.get(i) else {
                continue;
            };
            if let Some(e) = out.error {
                let e = Arc::new(SchedError::Engine(e));
                for tx in std::iter::once(&a.events).chain(&a.forks) {
                    let _ = tx.send(Event::Error(e.clone()));
                }
                continue;
            }
            if (!out.text.is_empty() || !out.logprobs.is_empty())
                && a.events
                    .send(Event::Text {
                        text: out.text,
                        logprobs: out.logprobs,
                    })
                    .is_err()
            {
                continue; // cancelled (dropped below if it ended, else on the next turn)
            }
            if let Some(reason) = out.finished {
                let _ = a.events.send(Event::Done {
                    reason,
                    stats: a.seq.stats.clone(),
                    context: a.seq.context().to_vec(),
                });
            }
        }
        let active = std::mem::take(&mut self.active);
        for (i, a) in active.into_iter().enumerate() {
            if done.get(i).copied().unwrap_or(false) {
                self.keep_prefix(a.seq.into_prefix());
            } else {
                self.active.push(a);
            }
        }
    }

    fn keep_prefix(&mut self, prefix: CachedPrefix) {
        if prefix.tokens.is_empty() {
            return;
        }
        self.prefixes.push_back(prefix);
        while self.prefixes.len() > self.limits.parallel.max(1) {
            self.prefixes.pop_front();
        }
    }
}

/// A sender whose receiver is gone: marks a failed sequence so the next turn drops it.
fn closed_sender() -> UnboundedSender<Event> {
    let (tx, _) = tokio::sync::mpsc::unbounded_channel();
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_while_decoding_follows_the_measured_prompt_speed() {
        let mut rate = PromptRate::default();
        assert_eq!(rate.budget_while_decoding(1), MAX_BUDGET_WHILE_DECODING);
        // 1000 prompt tokens per second: 250 ms of prompt is 250 tokens.
        rate.record(1000, Duration::from_secs(1));
        assert_eq!(rate.budget_while_decoding(1), 250);
        // ...unless 20 decode rows share the step: then 16 prompt tokens per row.
        assert_eq!(rate.budget_while_decoding(20), 320);
        // Never more than a whole step's budget.
        assert_eq!(rate.budget_while_decoding(100), MAX_BUDGET_WHILE_DECODING);
        // A tiny step does not move the estimate.
        rate.record(2, Duration::from_secs(10));
        assert_eq!(rate.budget_while_decoding(1), 250);
        // A very slow model still gets the minimum; a very fast one the maximum.
        let mut slow = PromptRate::default();
        slow.record(20, Duration::from_secs(1));
        assert_eq!(slow.budget_while_decoding(1), MIN_BUDGET_WHILE_DECODING);
        let mut fast = PromptRate::default();
        fast.record(512, Duration::from_millis(50));
        assert_eq!(fast.budget_while_decoding(1), MAX_BUDGET_WHILE_DECODING);
    }
}
