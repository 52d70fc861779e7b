//! The CPU forward pass's building blocks besides the matrix kernels (which live in
//! `wick-kernels`): row-wise ops and fused attention over the f16 KV cache.

pub mod attention;
#[cfg(target_arch = "x86_64")]
pub mod attention_tiled;
pub mod ops;
