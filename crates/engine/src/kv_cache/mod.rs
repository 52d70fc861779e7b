//! Per-sequence KV caches: [`CpuKvCache`] (f16, grows with use) for wick's CPU kernels,
//! [`CandleKvCache`] (candle tensors) for GPU devices.

mod candle;
mod cpu;

pub use candle::CandleKvCache;
pub use cpu::{CpuKvCache, KvUsage, GROW_POSITIONS};

/// The cache of one sequence, matching the path its model runs on.
pub enum KvCache {
    Cpu(CpuKvCache),
    Candle(CandleKvCache),
}

impl KvCache {
    /// Positions filled so far.
    pub fn len(&self) -> usize {
        match self {
            KvCache::Cpu(c) => c.len(),
            KvCache::Candle(c) => c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most positions the sequence may hold.
    pub fn capacity(&self) -> usize {
        match self {
            KvCache::Cpu(c) => c.capacity(),
            KvCache::Candle(c) => c.capacity(),
        }
    }

    /// Forget every position from `len` on (they will be overwritten).
    pub fn truncate(&mut self, len: usize) {
        match self {
            KvCache::Cpu(c) => c.truncate(len),
            KvCache::Candle(c) => c.truncate(len),
        }
    }

    /// A deep copy holding the same positions, for a sequence forked from this one
    /// (`n` choices of one prompt share its prefill). Counts toward the model's usage.
    pub fn try_clone(&self) -> crate::error::Result<KvCache> {
        Ok(match self {
            KvCache::Cpu(c) => KvCache::Cpu(c.duplicate()),
            KvCache::Candle(c) => KvCache::Candle(c.try_clone()?),
        })
    }
}
