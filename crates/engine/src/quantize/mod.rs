//! Quantizing a GGUF model (`/api/create` with `quantize`), as llama.cpp's
//! `llama-quantize` does without an importance matrix: the same per-tensor choice of
//! type for each file type (the K-mixes give the output matrix, some `attn_v` and some
//! `ffn_down` layers more bits), the same fallback for matrices whose rows do not fill
//! 256-value super-blocks, and the same bytes: the K-quants through [`k_quants`]
//! (ggml's reference quantizers), the others through candle's ports of them (whose
//! Q4_0, Q5_0 and Q8_0 already equal ggml's).
//!
//! Only float models are quantized (F32, F16, BF16), as in Ollama; vectors (norms,
//! biases) stay as they are.

use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;

use crate::error::{EngineError, Result};
use crate::gguf::{write_gguf, GgmlType, GgufFile};

pub mod k_quants;

/// A file type `quantize` can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    Q4_0,
    Q8_0,
    Q4KS,
    Q4KM,
    Q5KM,
    Q6K,
}

impl FileType {
    /// Ollama's names, case-insensitively (`q4_K_M`, `Q8_0`, ...).
    pub fn parse(s: &str) -> Option<FileType> {
        Some(match s.to_ascii_uppercase().as_str() {
            "Q4_0" => FileType::Q4_0,
            "Q8_0" => FileType::Q8_0,
            "Q4_K_S" => FileType::Q4KS,
            "Q4_K_M" | "Q4_K" => FileType::Q4KM,
            "Q5_K_M" | "Q5_K" => FileType::Q5KM,
            "Q6_K" => FileType::Q6K,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            FileType::Q4_0 => "Q4_0",
            FileType::Q8_0 => "Q8_0",
            FileType::Q4KS => "Q4_K_S",
            FileType::Q4KM => "Q4_K_M",
            FileType::Q5KM => "Q5_K_M",
            FileType::Q6K => "Q6_K",
        }
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`).
    fn id(self) -> u32 {
        match self {
            FileType::Q4_0 => 2,
            FileType::Q8_0 => 7,
            FileType::Q4KS => 14,
            FileType::Q4KM => 15,
            FileType::Q5KM => 17,
            FileType::Q6K => 18,
        }
    }

    fn default_type(self) -> GgmlDType {
        match self {
            FileType::Q4_0 => GgmlDType::Q4_0,
            FileType::Q8_0 => GgmlDType::Q8_0,
            FileType::Q4KS | FileType::Q4KM => GgmlDType::Q4K,
            FileType::Q5KM => GgmlDType::Q5K,
            FileType::Q6K => GgmlDType::Q6K,
        }
    }
}

/// llama.cpp's rule for which layers of a K-mix get more bits: the first and last
/// eighth, and every third layer between.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The layer index of a `blk.N.` tensor.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// The type a tensor gets (llama.cpp's `llama_tensor_get_type`, for the file types
/// above and models without experts).
fn tensor_type(
    ftype: FileType,
    name: &str,
    cols: usize,
    n_layer: usize,
    has_output: bool,
) -> GgmlDType {
    let default = ftype.default_type();
    let layer = layer_of(name).unwrap_or(0);
    let mut t = if name == "output.weight" || (!has_output && name == "token_embd.weight") {
        if ftype == FileType::Q8_0 {
            default
        } else {
            GgmlDType::Q6K
        }
    } else if name.ends_with("attn_v.weight") {
        match ftype {
            FileType::Q4KM | FileType::Q5KM if use_more_bits(layer, n_layer) => GgmlDType::Q6K,
            FileType::Q4KS if layer < 4 => GgmlDType::Q5K,
            _ => default,
        }
    } else if name.ends_with("ffn_down.weight") {
        match ftype {
            FileType::Q4KM | FileType::Q5KM if use_more_bits(layer, n_layer) => GgmlDType::Q6K,
            FileType::Q4KS if layer < n_layer / 8 => GgmlDType::Q5K,
            _ => default,
        }
    } else if name.ends_with("attn_qkv.weight") {
        match ftype {
            FileType::Q4KM => GgmlDType::Q5K,
            FileType::Q5KM => GgmlDType::Q6K,
            _ => default,
        }
    } else {
        default
    };
    // Rows that do not fill 256-value super-blocks take llama.cpp's fallback kind.
    if !cols.is_multiple_of(256) {
        t = match t {
            GgmlDType::Q4K => GgmlDType::Q5_0,
            GgmlDType::Q5K => GgmlDType::Q5_1,
            GgmlDType::Q6K => GgmlDType::Q8_0,
            other => other,
        };
    }
    if !cols.is_multiple_of(32) {
        t = GgmlDType::F16;
    }
    t
}

/// Whether a tensor is quantized at all: matrices only, never the token-type table.
fn is_quantized(name: &str, dims: usize) -> bool {
    dims >= 2 && name.ends_with(".weight") && !name.starts_with("token_types")
}

/// The tensors' names in the order their data lies in the file (as llama-quantize
/// walks them).
fn names_in_file_order(gguf: &GgufFile) -> Vec<String> {
    let mut names: Vec<(&String, u64)> = gguf
        .content
        .tensor_infos
        .iter()
        .map(|(n, i)| (n, i.offset))
        .collect();
    names.sort_by_key(|(_, offset)| *offset);
    names.into_iter().map(|(n, _)| n.clone()).collect()
}

/// Quantize `src` into `dst` as `ftype`. `progress(done, total)` (bytes of source
/// tensor data) is called after each tensor. A model that is not F32/F16/BF16 is
/// refused, as Ollama refuses it; every refusal comes before the first tensor is done.
pub fn quantize_gguf(
    src: &Path,
    dst: &Path,
    ftype: FileType,
    mut progress: impl FnMut(u64, u64),
) -> Result<()> {
    let mut gguf = GgufFile::open(src)?;
    let arch = gguf.architecture()?;
    let n_layer = gguf.get_u32(&format!("{arch}.block_count"))? as usize;
    let has_output = gguf.has_tensor("output.weight");
    let names = names_in_file_order(&gguf);
    for name in &names {
        let info = &gguf.content.tensor_infos[name];
        if is_quantized(name, info.shape.rank())
            && !matches!(
                info.ggml_dtype,
                GgmlType::F32 | GgmlType::F16 | GgmlType::BF16
            )
        {
            return Err(EngineError::InvalidRequest(
                "quantization is only supported for F16 and F32 models".into(),
            ));
        }
        let cols = info.shape.dims().last().copied().unwrap_or(0);
        if is_quantized(name, info.shape.rank())
            && tensor_type(ftype, name, cols, n_layer, has_output) == GgmlDType::Q5_1
        {
            return Err(EngineError::InvalidRequest(format!(
                "{}: tensor '{name}' ({cols} columns) would need Q5_1, which wick does not serve; use q4_K_M or q6_K",
                ftype.name()
            )));
        }
    }
    let bytes_of = |name: &String| {
        let info = &gguf.content.tensor_infos[name];
        (info.shape.elem_count() / info.ggml_dtype.block_size() * info.ggml_dtype.type_size())
            as u64
    };
    let total: u64 = names.iter().map(bytes_of).sum();
    let sizes: Vec<u64> = names.iter().map(bytes_of).collect();
    let mut done = 0u64;
    let mut out: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    for (name, size) in names.iter().zip(sizes) {
        let q = gguf.tensor(name, &Device::Cpu)?;
        let dims = q.shape().dims().to_vec();
        let q = if is_quantized(name, dims.len()) {
            let cols = dims.last().copied().unwrap_or(0);
            let want = tensor_type(ftype, name, cols, n_layer, has_output);
            let floats = q.dequantize(&Device::Cpu)?;
            quantize_tensor(&floats, want)?
        } else {
            q
        };
        out.push((name.clone(), q));
        done += size;
        progress(done, total);
    }
    let mut metadata =
        gguf.metadata_entries(|k| k != "general.file_type" && k != "general.quantization_version");
    metadata.push(("general.file_type".into(), Value::U32(ftype.id())));
    metadata.push(("general.quantization_version".into(), Value::U32(2)));
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    metadata.dedup_by(|a, b| a.0 == b.0);
    write_gguf(dst, &metadata, &out)
}

/// `floats` as `dtype`: ggml's own K-quant quantizers, candle's for the rest.
fn quantize_tensor(floats: &candle_core::Tensor, dtype: GgmlDType) -> Result<QTensor> {
    type Quantizer = fn(&[f32]) -> Vec<u8>;
    let kquant: Option<Quantizer> = match dtype {
        GgmlDType::Q4K => Some(k_quants::quantize_q4_k),
        GgmlDType::Q5K => Some(k_quants::quantize_q5_k),
        GgmlDType::Q6K => Some(k_quants::quantize_q6_k),
        _ => None,
    };
    let Some(quantize) = kquant else {
        return Ok(QTensor::quantize(floats, dtype)?);
    };
    let dims = floats.dims().to_vec();
    let values = floats.flatten_all()?.to_vec1::<f32>()?;
    let bytes = quantize(&values);
    Ok(candle_core::quantized::ggml_file::qtensor_from_ggml(
        dtype,
        &bytes,
        dims,
        &Device::Cpu,
    )?)
}

/// Write `src` with every matrix dequantized to F16 and every other tensor to F32: the
/// float file `quantize` starts from, made from a quantized model (tests and fixtures
/// use it; nothing else ships float models here).
pub fn dequantize_to_f16(src: &Path, dst: &Path) -> Result<()> {
    let mut gguf = GgufFile::open(src)?;
    let names = names_in_file_order(&gguf);
    let mut out: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    for name in &names {
        let q = gguf.tensor(name, &Device::Cpu)?;
        let floats = q.dequantize(&Device::Cpu)?;
        let dtype = if floats.rank() >= 2 {
            GgmlDType::F16
        } else {
            GgmlDType::F32
        };
        out.push((name.clone(), QTensor::quantize(&floats, dtype)?));
    }
    let mut metadata = gguf.metadata_entries(|k| k != "general.file_type");
    metadata.push(("general.file_type".into(), Value::U32(1)));
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    write_gguf(dst, &metadata, &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(FileType::parse("q4_K_M"), Some(FileType::Q4KM));
        assert_eq!(FileType::parse("Q8_0"), Some(FileType::Q8_0));
        assert_eq!(FileType::parse("q3_K_L"), None);
    }

    #[test]
    fn k_mixes_follow_llama_cpp() {
        // 24 layers: the first 3, the last 3 and every third between get more bits.
        let more: Vec<usize> = (0..24).filter(|&i| use_more_bits(i, 24)).collect();
        assert_eq!(more, [0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]);
        let t = |name: &str, cols| tensor_type(FileType::Q4KM, name, cols, 24, true);
        assert_eq!(t("output.weight", 1024), GgmlDType::Q6K);
        assert_eq!(t("token_embd.weight", 1024), GgmlDType::Q4K);
        assert_eq!(t("blk.0.attn_v.weight", 1024), GgmlDType::Q6K);
        assert_eq!(t("blk.3.attn_v.weight", 1024), GgmlDType::Q4K);
        assert_eq!(t("blk.5.ffn_down.weight", 4864), GgmlDType::Q6K);
        assert_eq!(t("blk.4.ffn_gate.weight", 1024), GgmlDType::Q4K);
        // Rows of 896 values: Q4_K falls back to Q5_0, Q6_K to Q8_0.
        assert_eq!(t("blk.4.attn_q.weight", 896), GgmlDType::Q5_0);
        assert_eq!(t("blk.0.attn_v.weight", 896), GgmlDType::Q8_0);
        // Tied output: the embedding table is the output.
        assert_eq!(
            tensor_type(FileType::Q4KM, "token_embd.weight", 1024, 24, false),
            GgmlDType::Q6K
        );
        assert_eq!(
            tensor_type(FileType::Q4KS, "blk.2.ffn_down.weight", 1024, 24, true),
            GgmlDType::Q5K
        );
        assert_eq!(
            tensor_type(FileType::Q8_0, "output.weight", 1024, 24, true),
            GgmlDType::Q8_0
        );
    }
}
