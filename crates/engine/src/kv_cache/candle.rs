//! The KV cache of the candle path (GPU devices, and candle's CPU device in tests): per
//! layer, keys and values as `(kv_heads, positions, head_dim)` f16 tensors on the
//! model's device, written in place.
//!
//! Like [`super::CpuKvCache`], memory grows with the tokens actually used, in steps of
//! [`GROW_POSITIONS`](super::cpu::GROW_POSITIONS) up to the sequence's `num_ctx`, and every cache reports its bytes
//! to the model's shared [`KvUsage`], so admission, prefix reuse and eviction see the
//! same numbers on both paths.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::cpu::{grow_target, KvUsage};
use crate::error::{EngineError, Result};

/// Keys and values are kept in f16, as on the CPU path.
pub const CACHE_DTYPE: DType = DType::F16;

pub struct CandleKvCache {
    /// Per layer, keys and values with `reserved` positions (`None` before the first
    /// write).
    layers: Vec<Option<(Tensor, Tensor)>>,
    n_kv_head: usize,
    head_dim: usize,
    len: usize,
    /// Positions allocated in every layer.
    reserved: usize,
    /// Most positions this sequence may hold (`num_ctx`).
    capacity: usize,
    device: Device,
    usage: Arc<KvUsage>,
}

impl CandleKvCache {
    /// An empty cache for up to `capacity` positions; it allocates nothing yet.
    pub fn new(
        n_layer: usize,
        n_kv_head: usize,
        head_dim: usize,
        capacity: usize,
        device: &Device,
        usage: Arc<KvUsage>,
    ) -> Self {
        Self {
            layers: (0..n_layer).map(|_| None).collect(),
            n_kv_head,
            head_dim,
            len: 0,
            reserved: 0,
            capacity,
            device: device.clone(),
            usage,
        }
    }

    /// Bytes one cached position costs across all layers (keys and values).
    pub fn bytes_per_position(n_layer: usize, n_kv_head: usize, head_dim: usize) -> usize {
        2 * n_layer * n_kv_head * head_dim * CACHE_DTYPE.size_in_bytes()
    }

    /// Positions filled so far.
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
        self.reserved * Self::bytes_per_position(self.layers.len(), self.n_kv_head, self.head_dim)
    }

    /// Forget every position from `len` on (they will be overwritten).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Make room for `positions` positions in every layer (grows in whole steps, copying
    /// the filled positions into the larger tensors).
    pub fn reserve(&mut self, positions: usize) -> Result<()> {
        let Some(target) = grow_target(positions, self.reserved, self.capacity)? else {
            return Ok(());
        };
        let shape = (self.n_kv_head, target, self.head_dim);
        for layer in &mut self.layers {
            let grown = |old: Option<&Tensor>| -> Result<Tensor> {
                let t = Tensor::zeros(shape, CACHE_DTYPE, &self.device)?;
                if let Some(old) = old.filter(|_| self.len > 0) {
                    t.slice_set(&old.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                }
                Ok(t)
            };
            let (k, v) = (
                grown(layer.as_ref().map(|l| &l.0))?,
                grown(layer.as_ref().map(|l| &l.1))?,
            );
            *layer = Some((k, v));
        }
        let before = self.reserved_bytes();
        self.reserved = target;
        self.usage.add(self.reserved_bytes() - before);
        Ok(())
    }

    /// Write `k`, `v` (shape `(kv_heads, t, head_dim)`, any float type) of `layer` at
    /// `pos` and return the keys and values for positions `0..pos + t` in f32.
    /// [`reserve`](Self::reserve) must have made room.
    pub fn write(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
        pos: usize,
    ) -> Result<(Tensor, Tensor)> {
        let t = k.dim(1)?;
        if pos + t > self.reserved {
            return Err(EngineError::Internal(format!(
                "KV write of {t} positions at {pos} does not fit {} reserved positions",
                self.reserved
            )));
        }
        let Some(Some((kc, vc))) = self.layers.get(layer) else {
            return Err(EngineError::Internal(format!("no cache for layer {layer}")));
        };
        kc.slice_set(&k.to_dtype(CACHE_DTYPE)?.contiguous()?, 1, pos)?;
        vc.slice_set(&v.to_dtype(CACHE_DTYPE)?.contiguous()?, 1, pos)?;
        let view = |c: &Tensor| -> Result<Tensor> {
            Ok(c.narrow(1, 0, pos + t)?
                .to_dtype(DType::F32)?
                .contiguous()?)
        };
        Ok((view(kc)?, view(vc)?))
    }

    /// Mark `t` more positions as filled (after every layer wrote them).
    pub fn advance(&mut self, t: usize) {
        self.len = (self.len + t).min(self.reserved);
    }

    /// A deep copy (new buffers) with the same positions, reported to the same usage.
    pub fn try_clone(&self) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|l| -> Result<Option<(Tensor, Tensor)>> {
                l.as_ref()
                    .map(|(k, v)| Ok((k.copy()?, v.copy()?)))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let copy = Self {
            layers,
            n_kv_head: self.n_kv_head,
            head_dim: self.head_dim,
            len: self.len,
            reserved: self.reserved,
            capacity: self.capacity,
            device: self.device.clone(),
            usage: self.usage.clone(),
        };
        self.usage.add(copy.reserved_bytes());
        Ok(copy)
    }
}

impl Drop for CandleKvCache {
    fn drop(&mut self) {
        self.usage.sub(self.reserved_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cache::cpu::GROW_POSITIONS;

    #[test]
    fn grows_in_steps_keeps_what_was_written_and_counts_its_bytes() {
        let usage = Arc::new(KvUsage::default());
        let dev = Device::Cpu;
        let mut c = CandleKvCache::new(2, 2, 4, 1000, &dev, usage.clone());
        assert_eq!(usage.bytes(), 0, "nothing is allocated before use");
        let per_pos = CandleKvCache::bytes_per_position(2, 2, 4);
        c.reserve(3).expect("reserve");
        assert_eq!(usage.bytes(), GROW_POSITIONS * per_pos);
        let k = Tensor::arange(0f32, 24.0, &dev)
            .and_then(|t| t.reshape((2, 3, 4)))
            .expect("k");
        for layer in 0..2 {
            c.write(layer, &k, &k, 0).expect("write");
        }
        c.advance(3);
        c.reserve(GROW_POSITIONS + 1).expect("grow");
        assert_eq!(usage.bytes(), 2 * GROW_POSITIONS * per_pos);
        let (k_all, _) = c
            .write(
                1,
                &k.narrow(1, 0, 1).expect("one"),
                &k.narrow(1, 0, 1).expect("one"),
                3,
            )
            .expect("write");
        assert_eq!(k_all.dims(), &[2, 4, 4]);
        let got: Vec<f32> = k_all
            .narrow(1, 0, 3)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .expect("read");
        let want: Vec<f32> = k.flatten_all().and_then(|t| t.to_vec1()).expect("read");
        assert_eq!(
            got, want,
            "small integers survive f16 and the grow copies them"
        );
        let copy = c.try_clone().expect("clone");
        assert_eq!(usage.bytes(), 4 * GROW_POSITIONS * per_pos);
        drop(copy);
        drop(c);
        assert_eq!(usage.bytes(), 0);
        let mut small = CandleKvCache::new(1, 1, 2, 8, &dev, usage.clone());
        assert!(small.reserve(9).is_err(), "past the context is refused");
        small.reserve(5).expect("reserve");
        assert_eq!(
            usage.bytes(),
            8 * CandleKvCache::bytes_per_position(1, 1, 2),
            "capped at num_ctx"
        );
    }
}
