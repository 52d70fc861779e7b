//! Read-only views of the scheduler for `/metrics`: read at scrape time, never stored.

use std::sync::Arc;
use std::time::Duration;

/// The scheduler as a whole, now.
#[derive(Debug, Clone, Default)]
pub struct SchedulerStats {
    /// Requests submitted and not finished yet (queued or running) across all models.
    pub pending: usize,
    /// Bytes of KV cache one model's sequences may hold together (`WICK_KV_BUDGET`).
    pub kv_budget_bytes: u64,
    /// One entry per loaded model.
    pub models: Vec<ModelStats>,
}

impl SchedulerStats {
    /// Sequences running on all models.
    pub fn running(&self) -> usize {
        self.models.iter().map(|m| m.running_sequences).sum()
    }

    /// Requests waiting for a slot: submitted but not running yet.
    pub fn queued(&self) -> usize {
        self.pending.saturating_sub(self.running())
    }
}

/// One loaded model, now.
#[derive(Debug, Clone)]
pub struct ModelStats {
    pub name: String,
    /// Sequences in the model's batch (admitted, prefilling or decoding).
    pub running_sequences: usize,
    /// Bytes its KV caches hold, reusable prefixes of finished sequences included.
    pub kv_bytes: u64,
    /// Bytes of its weights.
    pub weights_bytes: u64,
}

/// Called with a model's name and how long it took to load, after each load.
pub type LoadObserver = Arc<dyn Fn(&str, Duration) + Send + Sync>;
