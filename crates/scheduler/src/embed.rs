//! Embedding jobs: a request's tokenized inputs, run by the model's batcher thread between
//! generation steps. Every embedding job waiting at that moment joins one forward pass
//! (all inputs of all of them), so concurrent requests share the model's passes as
//! generations share its steps; if that pass fails, each job runs alone, so one bad
//! request cannot fail the others.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use wick_engine::Model;

use crate::SchedError;

/// What to embed: whole inputs, each already tokenized with its special tokens.
#[derive(Debug, Clone)]
pub struct EmbedRequest {
    pub inputs: Vec<Vec<u32>>,
    /// `num_thread`: caps the CPU threads of the pass.
    pub num_thread: Option<usize>,
}

/// The vectors of an [`EmbedRequest`], in input order, as the model gives them.
#[derive(Debug, Clone)]
pub struct EmbedOutput {
    pub embeddings: Vec<Vec<f32>>,
    /// Tokens evaluated (special tokens included), Ollama's `prompt_eval_count`.
    pub prompt_tokens: usize,
    /// Time of the forward pass that computed them.
    pub duration: Duration,
}

pub(crate) type EmbedReply = oneshot::Sender<Result<EmbedOutput, SchedError>>;

pub(crate) struct EmbedJob {
    pub req: EmbedRequest,
    pub reply: EmbedReply,
}

/// Run `jobs` as one forward pass, and answer each. `leave` is called once per job
/// (answered, or dropped because its client went away) before its answer is sent, so
/// a client that has its answer is no longer counted in the queue.
pub(crate) fn run_jobs(model: &Model, jobs: Vec<EmbedJob>, leave: &dyn Fn()) {
    let jobs: Vec<EmbedJob> = jobs
        .into_iter()
        .filter(|j| {
            let closed = j.reply.is_closed();
            if closed {
                leave();
            }
            !closed
        })
        .collect();
    if jobs.is_empty() {
        return;
    }
    let threads = |js: &[EmbedJob]| {
        js.iter()
            .map(|j| j.req.num_thread.unwrap_or(usize::MAX))
            .max()
            .unwrap_or(usize::MAX)
            .min(model.max_threads())
    };
    let start = Instant::now();
    let all: Vec<&[u32]> = jobs
        .iter()
        .flat_map(|j| j.req.inputs.iter().map(Vec::as_slice))
        .collect();
    match model.embed(&all, threads(&jobs)) {
        Ok(vectors) => {
            let duration = start.elapsed();
            let mut vectors = vectors.into_iter();
            for job in jobs {
                let embeddings: Vec<Vec<f32>> =
                    vectors.by_ref().take(job.req.inputs.len()).collect();
                let prompt_tokens = job.req.inputs.iter().map(Vec::len).sum();
                leave();
                let _ = job.reply.send(Ok(EmbedOutput {
                    embeddings,
                    prompt_tokens,
                    duration,
                }));
            }
        }
        Err(e) if jobs.len() == 1 => {
            if let Some(job) = jobs.into_iter().next() {
                leave();
                let _ = job.reply.send(Err(SchedError::Engine(e)));
            }
        }
        Err(_) => {
            // Find out whose inputs failed: each job alone.
            for job in jobs {
                run_jobs(model, vec![job], leave);
            }
        }
    }
}
