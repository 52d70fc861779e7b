//! Running a generation and answering with it: a stream of chunks (NDJSON lines for
//! Ollama's routes, server-sent events for OpenAI's; the last chunk has `done: true`),
//! or the chunks merged into one JSON object with `stream: false`. Both paths build the
//! same chunks, so a streamed answer always equals the non-streamed one.
//!
//! The response body owns the scheduler's event receiver and the model lease: a client
//! that hangs up drops the body, which drops the receiver and cancels the sequence.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;
use wick_engine::{DoneReason, GenerationRequest, TokenLogprob};
use wick_scheduler::{Event, KeepAlive, Lease, ModelSpec, SchedError};

use crate::access_log::RequestRecord;
use crate::drain::ShutdownDeadline;
use crate::error::{ApiError, Result};
use crate::metrics::GenerationMeter;
use crate::wire::Metrics;
use crate::AppState;

/// A model held for one request, and when the request started.
pub(crate) struct Held {
    pub lease: Lease,
    pub started: Instant,
    /// Time spent getting the model (loading it, or waiting for it).
    pub load_duration: Duration,
    meter: GenerationMeter,
    shutdown: ShutdownDeadline,
}

/// Load (or find) the model and hold it for this request.
pub(crate) async fn acquire(
    state: &AppState,
    spec: &ModelSpec,
    keep_alive: Option<KeepAlive>,
    started: Instant,
) -> Result<Held> {
    let t = Instant::now();
    note_model(spec);
    let lease = state.scheduler.acquire(spec, keep_alive).await?;
    let load_duration = lease.load_duration.max(t.elapsed());
    if let Some(r) = RequestRecord::current() {
        r.load(load_duration);
    }
    Ok(Held {
        lease,
        started,
        load_duration,
        meter: GenerationMeter::new(state.metrics.clone(), &spec.name, started),
        shutdown: state.shutdown.clone(),
    })
}

/// Name the model in the request's log line.
fn note_model(spec: &ModelSpec) {
    if let Some(r) = RequestRecord::current() {
        r.model(&spec.name);
    }
}

/// A submitted generation: the events of each of its choices (one unless OpenAI's
/// `n` asked for more), and the lease that keeps the model loaded.
pub(crate) struct Generation {
    rx: Vec<UnboundedReceiver<Event>>,
    /// Choices that have ended.
    ended: Vec<bool>,
    started: Instant,
    load_duration: Duration,
    /// One meter per joined generation; `meter_of[choice]` indexes it.
    meters: Vec<GenerationMeter>,
    meter_of: Vec<usize>,
    /// When it passes, the generation ends with [`SchedError::ShuttingDown`].
    shutdown: ShutdownDeadline,
    _leases: Vec<Lease>,
}

impl Generation {
    /// `choices` generations of one prompt, evaluated once (see
    /// [`Lease::submit_choices`]).
    pub fn submit_choices(held: Held, req: GenerationRequest, choices: usize) -> Result<Self> {
        let rx = held.lease.submit_choices(req, choices)?;
        Ok(Generation {
            ended: vec![false; rx.len()],
            meter_of: vec![0; rx.len()],
            rx,
            started: held.started,
            load_duration: held.load_duration,
            meters: vec![held.meter],
            shutdown: held.shutdown,
            _leases: vec![held.lease],
        })
    }

    /// Several generations answered as one (OpenAI's completions with a list of
    /// prompts): their choices in order, timed from the first one's start.
    pub fn join(gens: Vec<Generation>) -> Option<Generation> {
        let mut gens = gens.into_iter();
        let mut all = gens.next()?;
        for g in gens {
            all.rx.extend(g.rx);
            all.ended.extend(g.ended);
            all.load_duration = all.load_duration.max(g.load_duration);
            let base = all.meters.len();
            all.meter_of.extend(g.meter_of.iter().map(|i| base + i));
            all.meters.extend(g.meters);
            all._leases.extend(g._leases);
        }
        Some(all)
    }

    /// How many choices this generation runs.
    pub fn choices(&self) -> usize {
        self.rx.len()
    }

    /// The next event of any choice still running, with the choice's index; `None`
    /// as the event when that choice's channel closed.
    /// Once the server's shutdown deadline has passed, the event is an error.
    async fn recv(&mut self) -> (usize, Option<Event>) {
        let shutdown = self.shutdown.clone();
        tokio::select! {
            biased;
            () = shutdown.passed() => {
                let choice = self.ended.iter().position(|e| !e).unwrap_or(0);
                (choice, Some(Event::Error(Arc::new(SchedError::ShuttingDown))))
            }
            ev = self.next_event() => ev,
        }
    }

    async fn next_event(&mut self) -> (usize, Option<Event>) {
        if let [rx] = self.rx.as_mut_slice() {
            return (0, rx.recv().await);
        }
        std::future::poll_fn(|cx| {
            for (i, rx) in self.rx.iter_mut().enumerate() {
                if self.ended[i] {
                    continue;
                }
                if let std::task::Poll::Ready(ev) = rx.poll_recv(cx) {
                    return std::task::Poll::Ready((i, ev));
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

/// Shapes a route's chunks from the generation's events.
pub(crate) trait Responder: Send + 'static {
    type Chunk: Serialize + Send + 'static;
    /// The one object of a `stream: false` answer.
    type Whole: Serialize;
    /// Chunks for a piece of generated text of choice `choice` (0 unless the request
    /// asked for several) and the log probabilities of the tokens that completed it
    /// (empty unless asked for; possibly no chunks).
    fn text(
        &mut self,
        choice: usize,
        text: String,
        logprobs: Vec<TokenLogprob>,
    ) -> Vec<Self::Chunk>;
    /// The last chunks of choice `choice`; the final one of the last choice to end
    /// has `done: true`.
    fn done(
        &mut self,
        choice: usize,
        reason: DoneReason,
        metrics: Metrics,
        context: Vec<u32>,
    ) -> Vec<Self::Chunk>;
    /// All chunks of a generation as one response (`stream: false`).
    fn merge(chunks: Vec<Self::Chunk>) -> Option<Self::Whole>;
}

/// How a stream is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Ollama's: one JSON object per line.
    Ndjson,
    /// OpenAI's server-sent events: `data: {json}` blocks, then `data: [DONE]`.
    Sse,
    /// Typed server-sent events (OpenAI's Responses API): `event: <type>` then
    /// `data: {json}` for each chunk, whose `type` names the event; no `[DONE]`.
    SseEvents,
}

impl Framing {
    /// The framing of a streamed response, from its `Content-Type`.
    pub fn of_content_type(ct: &str) -> Option<Framing> {
        [Framing::Ndjson, Framing::Sse]
            .into_iter()
            .find(|f| ct.starts_with(f.content_type()))
    }

    fn content_type(self) -> &'static str {
        match self {
            Framing::Ndjson => "application/x-ndjson",
            Framing::Sse | Framing::SseEvents => "text/event-stream",
        }
    }

    fn frame<T: Serialize>(self, v: &T) -> Bytes {
        if self == Framing::SseEvents {
            return match serde_json::to_value(v) {
                Ok(v) => self.wrap_event(v["type"].as_str().unwrap_or("message"), &v),
                Err(e) => self.error(&format!("encoding a response: {e}")),
            };
        }
        match serde_json::to_vec(v) {
            Ok(json) => self.wrap(json),
            Err(e) => self.error(&format!("encoding a response: {e}")),
        }
    }

    fn wrap_event(self, kind: &str, v: &serde_json::Value) -> Bytes {
        Bytes::from(format!("event: {kind}\ndata: {v}\n\n"))
    }

    fn wrap(self, json: Vec<u8>) -> Bytes {
        let mut out = Vec::with_capacity(json.len() + 8);
        match self {
            Framing::Ndjson => {
                out.extend(json);
                out.push(b'\n');
            }
            Framing::Sse | Framing::SseEvents => {
                out.extend_from_slice(b"data: ");
                out.extend(json);
                out.extend_from_slice(b"\n\n");
            }
        }
        Bytes::from(out)
    }

    /// The last frame of a stream that failed after it began.
    pub fn error(self, msg: &str) -> Bytes {
        let msg = crate::error::without_backtrace(msg);
        let v = match self {
            Framing::Ndjson => serde_json::json!({ "error": msg }),
            Framing::Sse => serde_json::json!({
                "error": { "message": msg, "type": "api_error", "param": null, "code": null }
            }),
            Framing::SseEvents => {
                let v = serde_json::json!({
                    "type": "error", "code": "server_error", "message": msg, "param": null,
                });
                return self.wrap_event("error", &v);
            }
        };
        self.wrap(serde_json::to_vec(&v).unwrap_or_default())
    }

    /// What follows the last chunk.
    fn end(self) -> Option<Bytes> {
        match self {
            Framing::Ndjson | Framing::SseEvents => None,
            Framing::Sse => Some(Bytes::from_static(b"data: [DONE]\n\n")),
        }
    }
}

/// What one event turned into.
enum Step<C> {
    Chunks(Vec<C>),
    Finished(Vec<C>),
    Failed(ApiError),
}

fn step<R: Responder>(
    gen: &mut Generation,
    r: &mut R,
    (choice, ev): (usize, Option<Event>),
) -> Step<R::Chunk> {
    match ev {
        Some(Event::Text { text, logprobs }) if text.is_empty() && logprobs.is_empty() => {
            Step::Chunks(Vec::new())
        }
        Some(Event::Text { text, logprobs }) => {
            if !text.is_empty() {
                if let Some(m) = gen
                    .meter_of
                    .get(choice)
                    .and_then(|&i| gen.meters.get_mut(i))
                {
                    m.text();
                }
            }
            Step::Chunks(r.text(choice, text, logprobs))
        }
        Some(Event::Done {
            reason,
            stats,
            context,
        }) => {
            if let Some(m) = gen
                .meter_of
                .get(choice)
                .and_then(|&i| gen.meters.get_mut(i))
            {
                m.done(&stats);
            }
            let metrics = Metrics::new(gen.started.elapsed(), gen.load_duration, &stats);
            let chunks = r.done(choice, reason, metrics, context);
            if let Some(e) = gen.ended.get_mut(choice) {
                *e = true;
            }
            if gen.ended.iter().all(|&e| e) {
                Step::Finished(chunks)
            } else {
                Step::Chunks(chunks)
            }
        }
        Some(Event::Error(e)) => Step::Failed(ApiError::Generation(e)),
        None => Step::Failed(ApiError::Sched(SchedError::RunnerGone)),
    }
}

/// Streaming state: frames ready to send, and whether the generation ended.
struct Pending {
    frames: VecDeque<Bytes>,
    finished: bool,
    framing: Framing,
}

impl Pending {
    /// Take in one step; `Err` is a failure before anything was framed.
    fn take<C: Serialize>(&mut self, step: Step<C>) -> Result<()> {
        match step {
            Step::Chunks(c) => self.frames.extend(c.iter().map(|c| self.framing.frame(c))),
            Step::Finished(c) => {
                self.frames.extend(c.iter().map(|c| self.framing.frame(c)));
                self.frames.extend(self.framing.end());
                self.finished = true;
            }
            Step::Failed(e) => return Err(e),
        }
        Ok(())
    }
}

/// Answer with a generation, streamed or not.
pub(crate) async fn respond<R: Responder>(
    mut gen: Generation,
    mut r: R,
    stream: bool,
    framing: Framing,
) -> Result<Response> {
    if !stream {
        let mut chunks = Vec::new();
        loop {
            let ev = gen.recv().await;
            match step(&mut gen, &mut r, ev) {
                Step::Chunks(c) => chunks.extend(c),
                Step::Finished(c) => {
                    chunks.extend(c);
                    break;
                }
                Step::Failed(e) => return Err(e),
            }
        }
        let merged = R::merge(chunks)
            .ok_or_else(|| ApiError::internal("the generation produced nothing"))?;
        return Ok(Json(merged).into_response());
    }

    // Wait for the first event, so that a request that fails at once gets a real
    // status code instead of a 200 with an error line.
    let mut pending = Pending {
        frames: VecDeque::new(),
        finished: false,
        framing,
    };
    while pending.frames.is_empty() && !pending.finished {
        let ev = gen.recv().await;
        pending.take(step(&mut gen, &mut r, ev))?;
    }

    let body = futures::stream::unfold(
        (gen, r, pending),
        |(mut gen, mut r, mut pending)| async move {
            loop {
                if let Some(b) = pending.frames.pop_front() {
                    return Some((Ok::<_, Infallible>(b), (gen, r, pending)));
                }
                if pending.finished {
                    return None;
                }
                let ev = gen.recv().await;
                if let Err(e) = pending.take(step(&mut gen, &mut r, ev)) {
                    if e.status().is_server_error()
                        && !matches!(e, ApiError::Generation(ref g) if matches!(**g, SchedError::ShuttingDown))
                    {
                        tracing::error!(error = %e, "generation failed after streaming began");
                    } else {
                        tracing::warn!(error = %e, "generation ended after streaming began");
                    }
                    pending
                        .frames
                        .push_back(pending.framing.error(&e.to_string()));
                    pending.finished = true;
                }
            }
        },
    );
    Ok((
        [(CONTENT_TYPE, framing.content_type())],
        Body::from_stream(body),
    )
        .into_response())
}

/// A streamed `application/x-ndjson` response.
pub(crate) fn ndjson(body: Body) -> Response {
    ([(CONTENT_TYPE, Framing::Ndjson.content_type())], body).into_response()
}

/// How a generate or chat request goes on once it is checked.
pub(crate) enum Start<T> {
    /// An empty prompt: the model was loaded, or unloaded.
    Loaded(LoadReply),
    /// `_debug_render_only`: the rendered prompt, nothing generated.
    Rendered(String),
    /// A generation under way, with what the route needs to shape its answer.
    Running(Generation, T),
}

/// The `done_reason` of a load/unload reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoadReply {
    Load,
    Unload,
}

impl LoadReply {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadReply::Load => "load",
            LoadReply::Unload => "unload",
        }
    }
}

/// An empty prompt: unload the model when `keep_alive` is 0, else load it (or refresh
/// its keep-alive).
pub(crate) async fn load_or_unload(
    state: &AppState,
    spec: &ModelSpec,
    keep_alive: Option<KeepAlive>,
) -> Result<LoadReply> {
    if keep_alive == Some(KeepAlive::For(Duration::ZERO)) {
        state.scheduler.unload(&spec.key);
        return Ok(LoadReply::Unload);
    }
    note_model(spec);
    let lease = state.scheduler.acquire(spec, keep_alive).await?;
    drop(lease);
    Ok(LoadReply::Load)
}
