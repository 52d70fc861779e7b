//! One loaded model and the thread that owns it: jobs come in on a channel and run as
//! sequences; each job's events go back on its own channel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use wick_engine::{DoneReason, GenerationRequest, Model, Sequence, Stats};

use crate::SchedError;

/// What a submitted generation reports, in order: text chunks, then `Done` or `Error`.
#[derive(Debug)]
pub enum Event {
    Text(String),
    Done {
        reason: DoneReason,
        stats: Stats,
        /// Prompt and generated tokens (Ollama's `context`).
        context: Vec<u32>,
    },
    Error(String),
}

struct Job {
    req: GenerationRequest,
    events: UnboundedSender<Event>,
}

pub(crate) struct Runner {
    model: Arc<Model>,
    jobs: mpsc::Sender<Job>,
    num_ctx: usize,
    memory_bytes: u64,
}

impl Runner {
    pub(crate) fn start(
        model: Model,
        num_ctx: usize,
        pending: Arc<AtomicUsize>,
    ) -> Result<Self, SchedError> {
        let model = Arc::new(model);
        let (jobs, rx) = mpsc::channel::<Job>();
        let worker_model = model.clone();
        std::thread::Builder::new()
            .name("wick-runner".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    run_job(&worker_model, job);
                    pending.fetch_sub(1, Ordering::SeqCst);
                }
            })
            .map_err(|e| SchedError::Load(format!("cannot start runner thread: {e}")))?;
        let memory_bytes = model.weights_bytes() + (num_ctx * model.kv_bytes_per_position()) as u64;
        Ok(Self {
            model,
            jobs,
            num_ctx,
            memory_bytes,
        })
    }

    pub(crate) fn model(&self) -> &Model {
        &self.model
    }

    pub(crate) fn num_ctx(&self) -> usize {
        self.num_ctx
    }

    pub(crate) fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    pub(crate) fn submit(
        &self,
        req: GenerationRequest,
    ) -> Result<UnboundedReceiver<Event>, SchedError> {
        let (events, rx) = unbounded_channel();
        self.jobs
            .send(Job { req, events })
            .map_err(|_| SchedError::RunnerGone)?;
        Ok(rx)
    }
}

fn run_job(model: &Model, job: Job) {
    if job.events.is_closed() {
        return;
    }
    let mut seq = match Sequence::new(model, job.req) {
        Ok(s) => s,
        Err(e) => {
            let _ = job.events.send(Event::Error(e.to_string()));
            return;
        }
    };
    loop {
        if job.events.is_closed() {
            tracing::debug!("client went away; sequence cancelled");
            return;
        }
        match seq.step(model) {
            Ok(out) => {
                if !out.text.is_empty() && job.events.send(Event::Text(out.text)).is_err() {
                    return;
                }
                if let Some(reason) = out.finished {
                    let _ = job.events.send(Event::Done {
                        reason,
                        stats: seq.stats.clone(),
                        context: seq.context().to_vec(),
                    });
                    return;
                }
            }
            Err(e) => {
                let _ = job.events.send(Event::Error(e.to_string()));
                return;
            }
        }
    }
}
