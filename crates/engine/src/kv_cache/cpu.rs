//! The CPU KV cache of one sequence: per layer, keys and values in f16, laid out
//! `[position][kv_head][head_dim]`, written in place.
//!
//! Memory grows with the tokens actually used, in steps of [`GROW_POSITIONS`], up to the
//! sequence's `num_ctx`; it is never preallocated at the full context. Every cache of a
//! model reports its bytes to one shared [`KvUsage`], which the scheduler reads to admit
//! sequences within the memory budget.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use half::f16;

use crate::error::{EngineError, Result};

/// Positions added at a time when a cache grows.
pub const GROW_POSITIONS: usize = 256;

/// How many positions a cache holding `reserved` of `capacity` grows to so that
/// `positions` fit: `None` when they already do, an error past the capacity.
pub(crate) fn grow_target(
    positions: usize,
    reserved: usize,
    capacity: usize,
) -> Result<Option<usize>> {
    if positions > capacity {
        return Err(EngineError::Internal(format!(
            "KV cache full: {positions} positions needed, the context holds {capacity}"
        )));
    }
    if positions <= reserved {
        return Ok(None);
    }
    Ok(Some(
        positions
            .div_ceil(GROW_POSITIONS)
            .saturating_mul(GROW_POSITIONS)
            .min(capacity),
    ))
}

/// Bytes held by all KV caches of one model.
#[derive(Debug, Default)]
pub struct KvUsage {
    bytes: AtomicUsize,
}

impl KvUsage {
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn add(&self, bytes: usize) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn sub(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

struct LayerKv {
    k: Vec<f16>,
    v: Vec<f16>,
}

pub struct CpuKvCache {
    layers: Vec<LayerKv>,
    /// Values per position: `kv_heads * head_dim`.
    row: usize,
    len: usize,
    /// Positions allocated in every layer.
    reserved: usize,
    /// Most positions this sequence may hold (`num_ctx`).
    capacity: usize,
    usage: Arc<KvUsage>,
}

impl CpuKvCache {
    pub fn new(
        n_layer: usize,
        n_kv_head: usize,
        head_dim: usize,
        capacity: usize,
        usage: Arc<KvUsage>,
    ) -> Self {
        Self {
            layers: (0..n_layer)
                .map(|_| LayerKv {
                    k: Vec::new(),
                    v: Vec::new(),
                })
                .collect(),
            row: n_kv_head * head_dim,
            len: 0,
            reserved: 0,
            capacity,
            usage,
        }
    }

    /// Bytes one cached position costs across all layers (keys and values).
    pub fn bytes_per_position(n_layer: usize, n_kv_head: usize, head_dim: usize) -> usize {
        2 * n_layer * n_kv_head * head_dim * std::mem::size_of::<f16>()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes this cache holds now.
    pub fn reserved_bytes(&self) -> usize {
        self.reserved * self.row * 2 * self.layers.len() * std::mem::size_of::<f16>()
    }

    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Make room for `positions` positions in every layer (grows in whole steps).
    pub fn reserve(&mut self, positions: usize) -> Result<()> {
        let Some(target) = grow_target(positions, self.reserved, self.capacity)? else {
            return Ok(());
        };
        let before = self.reserved_bytes();
        for layer in &mut self.layers {
            for buf in [&mut layer.k, &mut layer.v] {
                buf.reserve_exact(target * self.row - buf.len());
                buf.resize(target * self.row, f16::ZERO);
            }
        }
        self.reserved = target;
        self.usage
            .bytes
            .fetch_add(self.reserved_bytes() - before, Ordering::Relaxed);
        Ok(())
    }

    /// Store the keys and values of `layer` for positions `pos..pos + t`, given as `t`
    /// rows of `kv_heads * head_dim` f32s. [`reserve`](Self::reserve) must have made room.
    pub fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) -> Result<()> {
        let row = self.row;
        let t = k.len() / row.max(1);
        if k.len() != v.len() || k.len() != t * row || pos + t > self.reserved {
            return Err(EngineError::Internal(format!(
                "KV write of {} values at {pos} does not fit {} reserved positions",
                k.len(),
                self.reserved
            )));
        }
        let l = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| EngineError::Internal(format!("no cache for layer {layer}")))?;
        let range = pos * row..(pos + t) * row;
        for (dst, src) in l.k[range.clone()].iter_mut().zip(k) {
            *dst = f16::from_f32(*src);
        }
        for (dst, src) in l.v[range].iter_mut().zip(v) {
            *dst = f16::from_f32(*src);
        }
        Ok(())
    }

    /// Keys and values of `layer` for positions `0..positions`.
    pub fn layer(&self, layer: usize, positions: usize) -> Option<(&[f16], &[f16])> {
        let l = self.layers.get(layer)?;
        let n = positions.min(self.reserved) * self.row;
        Some((&l.k[..n], &l.v[..n]))
    }

    /// Mark `t` more positions as filled (after every layer wrote them).
    pub fn advance(&mut self, t: usize) {
        self.len = (self.len + t).min(self.reserved);
    }

    /// A copy with the same positions and reservation, reported to the same usage.
    pub fn duplicate(&self) -> Self {
        let copy = Self {
            layers: self
                .layers
                .iter()
                .map(|l| LayerKv {
                    k: l.k.clone(),
                    v: l.v.clone(),
                })
                .collect(),
            row: self.row,
            len: self.len,
            reserved: self.reserved,
            capacity: self.capacity,
            usage: self.usage.clone(),
        };
        self.usage
            .bytes
            .fetch_add(copy.reserved_bytes(), Ordering::Relaxed);
        copy
    }
}

impl Drop for CpuKvCache {
    fn drop(&mut self) {
        self.usage
            .bytes
            .fetch_sub(self.reserved_bytes(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_in_steps_and_reports_usage() {
        let usage = Arc::new(KvUsage::default());
        let mut c = CpuKvCache::new(2, 2, 4, 1000, usage.clone());
        assert_eq!(usage.bytes(), 0);
        c.reserve(3).unwrap();
        assert_eq!(c.reserved_bytes(), GROW_POSITIONS * 8 * 2 * 2 * 2);
        assert_eq!(usage.bytes(), c.reserved_bytes());
        c.reserve(GROW_POSITIONS + 1).unwrap();
        assert_eq!(c.reserved_bytes(), 2 * GROW_POSITIONS * 8 * 2 * 2 * 2);
        // capped at the capacity, and past it an error
        c.reserve(1000).unwrap();
        assert_eq!(c.reserved_bytes(), 1000 * 8 * 2 * 2 * 2);
        assert!(c.reserve(1001).is_err());
        drop(c);
        assert_eq!(usage.bytes(), 0);
    }

    #[test]
    fn a_duplicate_holds_the_same_rows_and_counts_its_bytes() {
        let usage = Arc::new(KvUsage::default());
        let mut c = CpuKvCache::new(1, 1, 2, 16, usage.clone());
        c.reserve(1).unwrap();
        c.write(0, 0, &[1.0, 2.0], &[3.0, 4.0]).unwrap();
        c.advance(1);
        let d = c.duplicate();
        assert_eq!(usage.bytes(), 2 * c.reserved_bytes());
        assert_eq!((d.len(), d.layer(0, 1)), (1, c.layer(0, 1)));
        drop(d);
        assert_eq!(usage.bytes(), c.reserved_bytes());
    }

    #[test]
    fn writes_rows_in_place() {
        let usage = Arc::new(KvUsage::default());
        let mut c = CpuKvCache::new(1, 1, 2, 16, usage);
        c.reserve(3).unwrap();
        c.write(0, 0, &[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0, 7.0, 8.0])
            .unwrap();
        c.advance(2);
        c.write(0, 2, &[9.0, 10.0], &[11.0, 12.0]).unwrap();
        c.advance(1);
        let (k, v) = c.layer(0, 3).unwrap();
        let k: Vec<f32> = k.iter().map(|x| x.to_f32()).collect();
        let v: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
        assert_eq!(k, [1.0, 2.0, 3.0, 4.0, 9.0, 10.0]);
        assert_eq!(v, [5.0, 6.0, 7.0, 8.0, 11.0, 12.0]);
        assert!(c.write(0, 15, &[0.0; 4], &[0.0; 4]).is_err());
    }
}
