//! The request queue between the API and the engine: which models are loaded, for how
//! long (`keep_alive`), and one owner thread per loaded model that runs its sequences.
//!
//! Callers `acquire` a [`Lease`] on a model (loading it if needed), tokenize with it, and
//! `submit` a generation; events come back on that request's own channel. Dropping the
//! receiver cancels the sequence.

mod batcher;
mod embed;
mod error;
mod keep_alive;
mod memory;
mod runner;
mod stats;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wick_engine::{Device, Model};

use batcher::BatchLimits;
pub use batcher::STEP_TOKEN_BUDGET;
pub use embed::{EmbedOutput, EmbedRequest};
pub use error::{ErrorKind, SchedError};
pub use keep_alive::KeepAlive;
pub use runner::Event;
use runner::Runner;
pub use stats::{LoadObserver, ModelStats, SchedulerStats};

/// How the scheduler behaves; built from `OLLAMA_*` settings by the server.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub max_loaded_models: usize,
    /// Requests waiting or running across all models before new ones get a 503.
    pub max_queue: usize,
    pub default_keep_alive: KeepAlive,
    /// Bytes of KV cache one model's sequences may take together (reusable prefixes
    /// included); bounds the default `num_ctx` and how many sequences are admitted.
    pub kv_budget_bytes: usize,
    /// `OLLAMA_NUM_PARALLEL`: most sequences one model runs at once; `None` chooses from
    /// the memory budget (at least 4).
    pub num_parallel: Option<usize>,
    /// `OLLAMA_CONTEXT_LENGTH`: the default `num_ctx` when set.
    pub default_num_ctx: Option<usize>,
    pub device: Device,
}

/// Which model to run: a stable key (the manifest digest), its name and its GGUF file.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub key: String,
    pub name: String,
    pub path: PathBuf,
    pub digest: String,
}

/// A loaded model as `/api/ps` shows it.
#[derive(Debug, Clone)]
pub struct RunningModel {
    pub name: String,
    pub digest: String,
    pub size: u64,
    pub context_length: usize,
    /// Bytes of `size` on a GPU device (0 on the CPU).
    pub size_vram: u64,
    /// `None` while in use or kept forever.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub forever: bool,
}

struct Loaded {
    runner: Arc<Runner>,
    spec: ModelSpec,
    active: usize,
    keep_alive: KeepAlive,
    expires_at: Option<Instant>,
    last_used: Instant,
}

struct State {
    loaded: HashMap<String, Loaded>,
}

pub struct Scheduler {
    config: SchedulerConfig,
    state: Mutex<State>,
    load_lock: tokio::sync::Mutex<()>,
    pending: Arc<AtomicUsize>,
    on_load: Mutex<Option<LoadObserver>>,
}

/// A hold on a loaded model for one request; the model stays loaded while leased and its
/// keep-alive timer starts when the lease is dropped.
pub struct Lease {
    scheduler: Arc<Scheduler>,
    key: String,
    runner: Arc<Runner>,
    pub load_duration: Duration,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Arc<Self> {
        let s = Arc::new(Self {
            config,
            state: Mutex::new(State {
                loaded: HashMap::new(),
            }),
            load_lock: tokio::sync::Mutex::new(()),
            pending: Arc::new(AtomicUsize::new(0)),
            on_load: Mutex::new(None),
        });
        let weak = Arc::downgrade(&s);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let Some(s) = weak.upgrade() else { break };
                s.unload_expired();
            }
        });
        s
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Call `observer` after every model load from now on (replaces an earlier one).
    pub fn set_load_observer(&self, observer: LoadObserver) {
        *self.on_load.lock().unwrap_or_else(|p| p.into_inner()) = Some(observer);
    }

    /// The queue and the loaded models, now (for `/metrics`).
    pub fn stats(&self) -> SchedulerStats {
        let state = self.lock();
        let mut models: Vec<ModelStats> = state
            .loaded
            .values()
            .map(|l| ModelStats {
                name: l.spec.name.clone(),
                running_sequences: l.runner.running_sequences(),
                kv_bytes: l.runner.kv_bytes(),
                weights_bytes: l.runner.model().weights_bytes(),
            })
            .collect();
        models.sort_by(|a, b| a.name.cmp(&b.name));
        SchedulerStats {
            pending: self.pending.load(Ordering::SeqCst),
            kv_budget_bytes: self.config.kv_budget_bytes as u64,
            models,
        }
    }

    /// Load `spec` unless it is loaded, and hold it for one request. `keep_alive` of
    /// `None` uses the default.
    pub async fn acquire(
        self: &Arc<Self>,
        spec: &ModelSpec,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Lease, SchedError> {
        let keep_alive = keep_alive.unwrap_or(self.config.default_keep_alive);
        if let Some(lease) = self.try_lease(&spec.key, keep_alive) {
            return Ok(lease);
        }
        let _guard = self.load_lock.lock().await;
        if let Some(lease) = self.try_lease(&spec.key, keep_alive) {
            return Ok(lease);
        }
        self.make_room().await;
        self.check_memory(spec).await?;
        let start = Instant::now();
        let path = spec.path.clone();
        let device = self.config.device.clone();
        let model = tokio::task::spawn_blocking(move || Model::load(&path, &device))
            .await
            .map_err(|e| SchedError::Load(format!("loader crashed: {e}")))??;
        let num_ctx = self.default_num_ctx(&model);
        let took = start.elapsed();
        tracing::info!(model = %spec.name, num_ctx, "model loaded in {took:?}");
        let observer = self
            .on_load
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(observe) = observer {
            observe(&spec.name, took);
        }
        let limits = BatchLimits {
            parallel: self.num_parallel(&model),
            kv_budget: self.kv_budget(),
        };
        tracing::info!(model = %spec.name, parallel = limits.parallel, "batching up to {} sequences", limits.parallel);
        let runner = Arc::new(Runner::start(model, num_ctx, limits, self.pending.clone())?);
        let mut state = self.lock();
        state.loaded.insert(
            spec.key.clone(),
            Loaded {
                runner: runner.clone(),
                spec: spec.clone(),
                active: 1,
                keep_alive,
                expires_at: None,
                last_used: Instant::now(),
            },
        );
        Ok(Lease {
            scheduler: self.clone(),
            key: spec.key.clone(),
            runner,
            load_duration: start.elapsed(),
        })
    }

    /// Unload a model now (requests already running on it finish first).
    pub fn unload(&self, key: &str) -> bool {
        let removed = self.lock().loaded.remove(key).is_some();
        if removed {
            tracing::info!(key, "model unloaded");
        }
        removed
    }

    /// Loaded models, latest expiry first.
    pub fn running(&self) -> Vec<RunningModel> {
        let state = self.lock();
        let now = Instant::now();
        let utc_now = chrono::Utc::now();
        let on_gpu = !self.config.device.is_cpu();
        let mut out: Vec<RunningModel> = state
            .loaded
            .values()
            .map(|l| {
                let forever = matches!(l.keep_alive, KeepAlive::Forever);
                let expires_at = match (l.expires_at, l.keep_alive) {
                    (Some(at), _) => Some(at.saturating_duration_since(now)),
                    (None, KeepAlive::For(d)) => Some(d),
                    (None, KeepAlive::Forever) => None,
                }
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| utc_now + d);
                let size = l.runner.memory_bytes();
                RunningModel {
                    name: l.spec.name.clone(),
                    digest: l.spec.digest.clone(),
                    size,
                    context_length: l.runner.num_ctx(),
                    // On a GPU device the weights and the KV cache live on it.
                    size_vram: if on_gpu { size } else { 0 },
                    expires_at,
                    forever,
                }
            })
            .collect();
        out.sort_by(|a, b| match (a.forever, b.forever) {
            (true, false) => std::cmp::Ordering::Less,
            (false, true) => std::cmp::Ordering::Greater,
            _ => b.expires_at.cmp(&a.expires_at),
        });
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn try_lease(self: &Arc<Self>, key: &str, keep_alive: KeepAlive) -> Option<Lease> {
        let mut state = self.lock();
        let l = state.loaded.get_mut(key)?;
        l.active += 1;
        l.keep_alive = keep_alive;
        l.expires_at = None;
        l.last_used = Instant::now();
        Some(Lease {
            scheduler: self.clone(),
            key: key.to_string(),
            runner: l.runner.clone(),
            load_duration: Duration::ZERO,
        })
    }

    fn release(&self, key: &str) {
        let mut state = self.lock();
        let Some(l) = state.loaded.get_mut(key) else {
            return;
        };
        l.active = l.active.saturating_sub(1);
        l.last_used = Instant::now();
        if l.active == 0 {
            match l.keep_alive {
                KeepAlive::Forever => l.expires_at = None,
                KeepAlive::For(d) if d.is_zero() => {
                    state.loaded.remove(key);
                    tracing::info!(key, "model unloaded (keep_alive 0)");
                }
                KeepAlive::For(d) => l.expires_at = Some(Instant::now() + d),
            }
        }
    }

    fn unload_expired(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        state.loaded.retain(|key, l| {
            let expired = l.active == 0 && l.expires_at.is_some_and(|at| at <= now);
            if expired {
                tracing::info!(key, "model unloaded (keep_alive expired)");
            }
            !expired
        });
    }

    /// Wait until fewer than `max_loaded_models` are loaded, evicting the least recently
    /// used idle model.
    async fn make_room(&self) {
        loop {
            {
                let mut state = self.lock();
                if state.loaded.len() < self.config.max_loaded_models.max(1) {
                    return;
                }
                let victim = state
                    .loaded
                    .iter()
                    .filter(|(_, l)| l.active == 0)
                    .min_by_key(|(_, l)| l.last_used)
                    .map(|(k, _)| k.clone());
                if let Some(k) = victim {
                    state.loaded.remove(&k);
                    tracing::info!(key = %k, "evicted idle model to make room");
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// KV bytes a newly loaded model's sequences may hold: the configured budget, and on
    /// a GPU no more than the device has free once the weights are on it (less
    /// `OLLAMA_GPU_OVERHEAD`).
    fn kv_budget(&self) -> usize {
        let configured = self.config.kv_budget_bytes;
        if self.config.device.is_cpu() {
            return configured;
        }
        match memory::available_bytes_on(&self.config.device) {
            Some(free) => configured.min(usize::try_from(free).unwrap_or(usize::MAX)),
            None => configured,
        }
    }

    /// Sequences one model runs at once: `OLLAMA_NUM_PARALLEL`, or as many 2048-token
    /// sequences as the KV budget holds, between 4 and 16.
    fn num_parallel(&self, model: &Model) -> usize {
        match self.config.num_parallel {
            Some(n) if n > 0 => n,
            _ => {
                let per_seq = 2048 * model.kv_bytes_per_position().max(1);
                (self.config.kv_budget_bytes / per_seq).clamp(4, 16)
            }
        }
    }

    /// Make memory for a load: evict idle models, wait for busy ones to become idle;
    /// refuse (Ollama's 500) when even an empty server could not hold the model.
    async fn check_memory(&self, spec: &ModelSpec) -> Result<(), SchedError> {
        let Some(needed) = memory::estimate_load_bytes(&spec.path) else {
            return Ok(());
        };
        let mut evicted_at: Option<Instant> = None;
        loop {
            let Some(available) = memory::available_bytes_on(&self.config.device) else {
                return Ok(());
            };
            if needed <= available {
                return Ok(());
            }
            {
                let mut state = self.lock();
                let idle: Vec<String> = state
                    .loaded
                    .iter()
                    .filter(|(_, l)| l.active == 0)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in &idle {
                    state.loaded.remove(k);
                    tracing::info!(key = %k, "evicted idle model to free memory");
                }
                if !idle.is_empty() {
                    evicted_at = Some(Instant::now());
                }
                // Evicted models free their memory once their batcher threads exit;
                // after that, an empty server that still lacks room never will have it.
                let settled = evicted_at.is_none_or(|t| t.elapsed() > Duration::from_secs(2));
                if state.loaded.is_empty() && settled {
                    return Err(SchedError::OutOfMemory { needed, available });
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn default_num_ctx(&self, model: &Model) -> usize {
        let trained = model.context_length();
        let by_memory = self.config.kv_budget_bytes / model.kv_bytes_per_position().max(1);
        let wanted = self.config.default_num_ctx.unwrap_or(trained);
        let n = wanted.min(trained).min(by_memory).max(256);
        if n < wanted {
            tracing::info!(
                wanted,
                num_ctx = n,
                "default context capped by the KV memory budget"
            );
        }
        n
    }
}

impl Lease {
    pub fn model(&self) -> &Model {
        self.runner.model()
    }

    /// The model, for work that runs on another thread while the lease is held.
    pub fn shared_model(&self) -> Arc<Model> {
        self.runner.shared_model()
    }

    /// The `num_ctx` used when a request does not set one.
    pub fn default_num_ctx(&self) -> usize {
        self.runner.num_ctx()
    }

    /// Queue a generation; its events arrive on the returned channel. Full queue: 503.
    pub fn submit(
        &self,
        req: wick_engine::GenerationRequest,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<Event>, SchedError> {
        let mut rx = self.submit_choices(req, 1)?;
        rx.pop().ok_or(SchedError::RunnerGone)
    }

    /// Queue `choices` generations of one prompt (OpenAI's `n`): the prompt is
    /// evaluated once and its cache copied for each choice, choice `i` sampling with
    /// seed `seed + i`. One channel per choice; the queue counts each choice.
    pub fn submit_choices(
        &self,
        req: wick_engine::GenerationRequest,
        choices: usize,
    ) -> Result<Vec<tokio::sync::mpsc::UnboundedReceiver<Event>>, SchedError> {
        let choices = choices.max(1);
        let max = self.scheduler.config.max_queue;
        let pending = &self.scheduler.pending;
        if pending.fetch_add(choices, Ordering::SeqCst) + choices > max {
            pending.fetch_sub(choices, Ordering::SeqCst);
            return Err(SchedError::QueueFull);
        }
        self.runner.submit(req, choices).inspect_err(|_| {
            pending.fetch_sub(choices, Ordering::SeqCst);
        })
    }

    /// Embed a request's inputs on the model's batcher thread, in one pass with the
    /// other embedding requests waiting then. Full queue: 503. Dropping the future
    /// cancels the job if it has not run yet.
    pub async fn embed(&self, req: EmbedRequest) -> Result<EmbedOutput, SchedError> {
        let max = self.scheduler.config.max_queue;
        let pending = &self.scheduler.pending;
        if pending.fetch_add(1, Ordering::SeqCst) >= max {
            pending.fetch_sub(1, Ordering::SeqCst);
            return Err(SchedError::QueueFull);
        }
        let rx = match self.runner.embed(req) {
            Ok(rx) => rx,
            Err(e) => {
                pending.fetch_sub(1, Ordering::SeqCst);
                return Err(e);
            }
        };
        rx.await.map_err(|_| SchedError::RunnerGone)?
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.scheduler.release(&self.key);
    }
}
