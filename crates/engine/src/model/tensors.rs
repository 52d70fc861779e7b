//! Reading weights out of a GGUF file into the CPU kernels' types.

use candle_core::quantized::GgmlDType;
use wick_kernels::{QMatrix, QuantKind};

use crate::error::{EngineError, Result};
use crate::gguf::{GgufFile, RawTensor};

pub(crate) fn quant_kind(dtype: GgmlDType) -> Option<QuantKind> {
    Some(match dtype {
        GgmlDType::F32 => QuantKind::F32,
        GgmlDType::F16 => QuantKind::F16,
        GgmlDType::BF16 => QuantKind::BF16,
        GgmlDType::Q4_0 => QuantKind::Q4_0,
        GgmlDType::Q4_1 => QuantKind::Q4_1,
        GgmlDType::Q5_0 => QuantKind::Q5_0,
        GgmlDType::Q8_0 => QuantKind::Q8_0,
        GgmlDType::Q2K => QuantKind::Q2K,
        GgmlDType::Q3K => QuantKind::Q3K,
        GgmlDType::Q4K => QuantKind::Q4K,
        GgmlDType::Q5K => QuantKind::Q5K,
        GgmlDType::Q6K => QuantKind::Q6K,
        _ => return None,
    })
}

/// A 2-D weight as a kernel matrix.
pub(crate) fn matrix(gguf: &mut GgufFile, name: &str) -> Result<QMatrix> {
    let RawTensor { dtype, dims, data } = gguf.raw_tensor(name)?;
    let kind = quant_kind(dtype).ok_or_else(|| {
        EngineError::InvalidModel(format!(
            "tensor '{name}' has type {dtype:?}, which wick's CPU kernels do not support"
        ))
    })?;
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
        GgmlDType::F32 => Ok(data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()),
        GgmlDType::F16 => Ok(data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()),
        GgmlDType::BF16 => Ok(data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()),
        other => Err(EngineError::InvalidModel(format!(
            "tensor '{name}' has type {other:?}; expected f32, f16 or bf16"
        ))),
    }
}
