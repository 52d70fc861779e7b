//! One loaded model and the thread that owns it: jobs come in on a channel and run as
//! sequences, batched together (see [`crate::batcher`]); each job's events go back on its
//! own channel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use wick_engine::{DoneReason, GenerationRequest, Model, Stats, TokenLogprob};

use crate::batcher::{BatchLimits, Batcher, Job, Work};
use crate::embed::{EmbedJob, EmbedOutput, EmbedRequest};
use crate::SchedError;

/// What a submitted generation reports, in order: text chunks, then `Done` or `Error`.
#[derive(Debug)]
pub enum Event {
    /// Text that became safe to send, and the log probabilities of the tokens it
    /// completed (empty unless the request asked for `logprobs`; an entry may arrive
    /// with empty text, e.g. for a token with no text of its own).
    Text {
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    Done {
        reason: DoneReason,
        stats: Stats,
        /// Prompt and generated tokens (Ollama's `context`).
        context: Vec<u32>,
    },
    /// The generation failed; nothing follows.
    Error(Arc<SchedError>),
}

/// The handle the scheduler keeps on a loaded model; its batcher thread does the work.
pub(crate) struct Runner {
    model: Arc<Model>,
    jobs: mpsc::Sender<Work>,
    num_ctx: usize,
    /// Sequences the batcher has in slots now.
    running: Arc<AtomicUsize>,
}

impl Runner {
    pub(crate) fn start(
        model: Model,
        num_ctx: usize,
        limits: BatchLimits,
        pending: Arc<AtomicUsize>,
    ) -> Result<Self, SchedError> {
        let model = Arc::new(model);
        let (jobs, rx) = mpsc::channel::<Work>();
        let running = Arc::new(AtomicUsize::new(0));
        let batcher = Batcher::new(model.clone(), limits, pending, running.clone());
        std::thread::Builder::new()
            .name("wick-batcher".into())
            .spawn(move || {
                batcher.run(rx);
                // The model is gone (unloaded): its memory goes back to the OS.
                crate::memory::return_freed_memory();
            })
            .map_err(|e| SchedError::Load(format!("cannot start runner thread: {e}")))?;
        Ok(Self {
            model,
            jobs,
            num_ctx,
            running,
        })
    }

    pub(crate) fn model(&self) -> &Model {
        &self.model
    }

    pub(crate) fn shared_model(&self) -> Arc<Model> {
        self.model.clone()
    }

    pub(crate) fn num_ctx(&self) -> usize {
        self.num_ctx
    }

    /// Sequences running now (admitted into a slot, not waiting).
    pub(crate) fn running_sequences(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Bytes of KV cache held now, reusable prefixes included.
    pub(crate) fn kv_bytes(&self) -> u64 {
        self.model.kv_bytes_in_use() as u64
    }

    /// Weights plus the KV cache the model's sequences hold now.
    pub(crate) fn memory_bytes(&self) -> u64 {
        self.model.weights_bytes() + self.model.kv_bytes_in_use() as u64
    }

    /// Queue `choices` (at least 1) generations of one prompt, evaluated once; each
    /// choice's events come on its own channel.
    pub(crate) fn submit(
        &self,
        req: GenerationRequest,
        choices: usize,
    ) -> Result<Vec<UnboundedReceiver<Event>>, SchedError> {
        let (events, rx) = unbounded_channel();
        let mut receivers = vec![rx];
        let mut forks = Vec::new();
        for _ in 1..choices {
            let (tx, rx) = unbounded_channel();
            forks.push(tx);
            receivers.push(rx);
        }
        self.jobs
            .send(Work::Generate(Box::new(Job { req, events, forks })))
            .map_err(|_| SchedError::RunnerGone)?;
        Ok(receivers)
    }

    pub(crate) fn embed(
        &self,
        req: EmbedRequest,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<EmbedOutput, SchedError>>, SchedError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Work::Embed(EmbedJob { req, reply }))
            .map_err(|_| SchedError::RunnerGone)?;
        Ok(rx)
    }
}
