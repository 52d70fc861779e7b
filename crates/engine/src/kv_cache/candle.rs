//! The KV cache of the candle path (GPU devices): one preallocated
//! `(kv_heads, capacity, head_dim)` buffer per layer for keys and
//! one for values, written in place as the sequence grows.

use candle_core::{DType, Device, Tensor};

use crate::error::{EngineError, Result};

/// Keys and values are kept in f32 on the candle path.
pub const CACHE_DTYPE: DType = DType::F32;

pub struct CandleKvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
    capacity: usize,
}

impl CandleKvCache {
    /// Reserve room for `capacity` positions. CPU allocations are zeroed lazily by the
    /// OS, so untouched capacity costs address space, not time.
    pub fn new(
        n_layer: usize,
        n_kv_head: usize,
        head_dim: usize,
        capacity: usize,
        device: &Device,
    ) -> Result<Self> {
        let layers = (0..n_layer)
            .map(|_| -> Result<(Tensor, Tensor)> {
                let shape = (n_kv_head, capacity, head_dim);
                Ok((
                    Tensor::zeros(shape, CACHE_DTYPE, device)?,
                    Tensor::zeros(shape, CACHE_DTYPE, device)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            len: 0,
            capacity,
        })
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

    /// Forget every position from `len` on (they will be overwritten).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Write `k`, `v` (shape `(1, kv_heads, t, head_dim)`) of `layer` at `pos` and return
    /// views of the keys and values for positions `0..pos + t`.
    pub fn write(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
        pos: usize,
    ) -> Result<(Tensor, Tensor)> {
        let (kc, vc) = self
            .layers
            .get(layer)
            .ok_or_else(|| EngineError::Internal(format!("no cache for layer {layer}")))?;
        let t = k.dim(2)?;
        if pos + t > self.capacity {
            return Err(EngineError::Internal(format!(
                "KV cache full: {} positions needed, {} reserved",
                pos + t,
                self.capacity
            )));
        }
        kc.slice_set(&k.squeeze(0)?.contiguous()?, 1, pos)?;
        vc.slice_set(&v.squeeze(0)?.contiguous()?, 1, pos)?;
        Ok((kc.narrow(1, 0, pos + t)?, vc.narrow(1, 0, pos + t)?))
    }

    /// Mark `t` more positions as filled (after every layer wrote them).
    pub fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// A deep copy (new buffers) with the same positions.
    pub fn try_clone(&self) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| -> Result<(Tensor, Tensor)> { Ok((k.copy()?, v.copy()?)) })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            len: self.len,
            capacity: self.capacity,
        })
    }
}
