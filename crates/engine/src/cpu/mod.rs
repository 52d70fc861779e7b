//! The CPU forward pass's building blocks besides the matrix kernels (which live in
//! `wick-kernels`): row-wise ops and fused attention over the f16 KV cache.

pub mod attention;
pub mod ops;
