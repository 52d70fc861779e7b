//! Reading weights out of a GGUF file into the CPU kernels' types.

use wick_kernels::{QMatrix, QuantKind};

use crate::error::{EngineError, Result};
use crate::gguf::{GgmlType, GgufFile, RawTensor};

/// The kernels' kind of tensor `name`'s type, or the error naming both.
pub(crate) fn kernel_kind(name: &str, dtype: GgmlType) -> Result<QuantKind> {
    dtype
        .kernel_kind()
        .ok_or_else(|| EngineError::UnsupportedTensorType {
            tensor: name.to_string(),
            kind: dtype.name(),
        })
}

/// A 2-D weight as a kernel matrix.
pub(crate) fn matrix(gguf: &mut GgufFile, name: &str) -> Result<QMatrix> {
    let RawTensor { dtype, dims, data } = gguf.raw_tensor(name)?;
    let kind = kernel_kind(name, dtype)?;
    let [rows, cols] = dims[..] else {
        return Err(EngineError::InvalidModel(format!(
            "tensor '{name}' should be 2-D, has shape {dims:?}"
        )));
    };
    QMatrix::new(kind, rows, cols, data)
        .map_err(|e| EngineError::InvalidModel(format!("tensor '{name}': {e}")))
}

/// A 1-D f32 (or f16) tensor such as a norm weight or a bias.
pub(crate) fn vector(gguf: &mut GgufFile, name: &str) -> Result<Vec<f32>> {
    floats(gguf, name, 1)
}

/// An f32 (or f16) tensor of `rank` dimensions, its values in file order (the biases
/// of a mixture's experts are 2-D, one row per expert).
pub(crate) fn floats(gguf: &mut GgufFile, name: &str, rank: usize) -> Result<Vec<f32>> {
    let RawTensor { dtype, dims, data } = gguf.raw_tensor(name)?;
    if dims.len() != rank {
        return Err(EngineError::InvalidModel(format!(
            "tensor '{name}' should be {rank}-D, has shape {dims:?}"
        )));
    }
    match dtype {
        GgmlType::F32 => Ok(data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()),
        GgmlType::F16 => Ok(data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()),
        GgmlType::BF16 => Ok(data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()),
        other => Err(EngineError::InvalidModel(format!(
            "tensor '{name}' has type {other}; expected f32, f16 or bf16"
        ))),
    }
}
