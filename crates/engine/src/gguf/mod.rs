//! Reading a GGUF file: its metadata as typed facts, and its tensors.

mod header;
mod tensor_type;
mod writer;

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::QTensor;
use candle_core::Device;

pub use header::{Content, TensorInfo};
pub use tensor_type::GgmlType;
pub use writer::TensorOut;

use wick_kernels::WeightBytes;

use crate::error::{EngineError, Result};
use crate::mapped_file::ModelFile;

/// One tensor as the file stores it: ggml type, dims (GGUF order: innermost first is
/// reversed here as candle does, so a weight matrix is `[rows, cols]`), raw blocks.
pub struct RawTensor {
    pub dtype: GgmlType,
    pub dims: Vec<usize>,
    /// The bytes, in the mapped file (or its copy): nothing is copied per tensor.
    pub data: WeightBytes,
}

/// An opened GGUF file: its header (metadata and tensor index), and its bytes, mapped
/// (see [`ModelFile`]) the first time a tensor is read.
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    file: File,
    bytes: Option<Arc<ModelFile>>,
}

/// The product of a header's dims, or `None` where it overflows.
fn checked_elem_count(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// How many bytes a tensor's blocks take, or `None` where the header's dims overflow.
fn tensor_bytes(info: &TensorInfo) -> Option<usize> {
    let blocks = checked_elem_count(info.shape.dims())? / info.ggml_dtype.block_size();
    blocks.checked_mul(info.ggml_dtype.type_size())
}

/// Write a GGUF file: `metadata` in the order given, then `tensors`.
pub fn write_gguf(
    dst: &Path,
    metadata: &[(String, Value)],
    tensors: &[(String, QTensor)],
) -> Result<()> {
    let tensors = tensors
        .iter()
        .map(|(name, t)| {
            Ok(TensorOut {
                name: name.clone(),
                ty: t.dtype().into(),
                dims: t.shape().dims().to_vec(),
                data: t.data()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    write_gguf_tensors(dst, metadata, &tensors)
}

/// Write a GGUF file of tensors given as raw blocks of any ggml type.
pub fn write_gguf_tensors(
    dst: &Path,
    metadata: &[(String, Value)],
    tensors: &[TensorOut],
) -> Result<()> {
    let io = |source| EngineError::Io {
        path: dst.display().to_string(),
        source,
    };
    let mut w = std::io::BufWriter::new(File::create(dst).map_err(io)?);
    write_gguf_to(&mut w, metadata, tensors).map_err(io)?;
    std::io::Write::flush(&mut w).map_err(io)?;
    Ok(())
}

/// Write a whole GGUF file to `w`.
pub fn write_gguf_to(
    w: &mut impl std::io::Write,
    metadata: &[(String, Value)],
    tensors: &[TensorOut],
) -> std::io::Result<()> {
    let meta_refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    writer::write(w, &meta_refs, tensors)
}

/// A tensor as a listing shows it: its name, ggml's type name (`Q4_K`, `F16`, ...)
/// and its GGUF shape (innermost dimension first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSummary {
    pub name: String,
    pub kind: String,
    pub shape: Vec<u64>,
}

impl GgufFile {
    /// Every tensor in file order.
    pub fn tensor_summaries(&self) -> Vec<TensorSummary> {
        let mut infos: Vec<_> = self.content.tensor_infos.iter().collect();
        infos.sort_by_key(|(_, info)| info.offset);
        infos
            .into_iter()
            .map(|(name, info)| TensorSummary {
                name: name.clone(),
                kind: info.ggml_dtype.name(),
                shape: info.shape.dims().iter().rev().map(|&d| d as u64).collect(),
            })
            .collect()
    }

    /// Open and parse the header. A truncated or corrupt file is an `InvalidModel` error.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| EngineError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let invalid =
            |what: String| EngineError::InvalidModel(format!("{}: {what}", path.display()));
        let content =
            header::read_header(BufReader::new(&file), file_len).map_err(|e| match e {
                header::HeaderError::Malformed(m) => invalid(format!("malformed GGUF header: {m}")),
                header::HeaderError::Io(source) => EngineError::Io {
                    path: path.display().to_string(),
                    source,
                },
            })?;
        // Every tensor must lie inside the file: catches truncated downloads before we
        // try to read them. The arithmetic is checked: the header is untrusted.
        for (name, info) in content.tensor_infos.iter() {
            let end = tensor_bytes(info)
                .and_then(|bytes| u64::try_from(bytes).ok())
                .and_then(|bytes| {
                    content
                        .tensor_data_offset
                        .checked_add(info.offset)?
                        .checked_add(bytes)
                });
            if end.is_none_or(|end| end > file_len) {
                return Err(invalid(format!(
                    "tensor '{name}' extends past the end of the file (truncated?)"
                )));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            content,
            file,
            bytes: None,
        })
    }

    /// The whole file's bytes, mapped on first use.
    pub fn bytes(&mut self) -> Result<Arc<ModelFile>> {
        if let Some(b) = &self.bytes {
            return Ok(b.clone());
        }
        let io = |source| EngineError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let file = self.file.try_clone().map_err(io)?;
        let bytes = Arc::new(ModelFile::open(&self.path, file)?);
        self.bytes = Some(bytes.clone());
        Ok(bytes)
    }

    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// The metadata entries whose keys `keep` accepts, sorted by key: a file written
    /// from them has the same bytes every time.
    pub fn metadata_entries(&self, keep: impl Fn(&str) -> bool) -> Vec<(String, Value)> {
        let mut entries: Vec<(String, Value)> = self
            .content
            .metadata
            .iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// A tensor as candle's quantized tensor on `device` (the candle path).
    pub fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        let RawTensor { dtype, dims, data } = self.raw_tensor(name)?;
        let candle = dtype
            .candle()
            .ok_or_else(|| EngineError::UnsupportedTensorType {
                tensor: name.to_string(),
                kind: format!("{dtype} (on the candle path)"),
            })?;
        candle_core::quantized::ggml_file::qtensor_from_ggml(candle, &data, dims, device)
            .map_err(|e| EngineError::InvalidModel(format!("tensor '{name}': {e}")))
    }

    /// A tensor's raw ggml bytes as stored in the file, for wick's own CPU kernels.
    pub fn raw_tensor(&mut self, name: &str) -> Result<RawTensor> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| EngineError::InvalidModel(format!("missing tensor '{name}'")))?;
        let dtype = info.ggml_dtype;
        let dims = info.shape.dims().to_vec();
        let elems = checked_elem_count(info.shape.dims()).unwrap_or(usize::MAX);
        if !elems.is_multiple_of(dtype.block_size()) {
            return Err(EngineError::InvalidModel(format!(
                "tensor '{name}': {elems} values do not fill whole {dtype} blocks"
            )));
        }
        let len = tensor_bytes(info).unwrap_or(usize::MAX);
        let at = self
            .content
            .tensor_data_offset
            .checked_add(info.offset)
            .and_then(|at| usize::try_from(at).ok())
            .unwrap_or(usize::MAX);
        let bytes = self.bytes()?;
        let data = at
            .checked_add(len)
            .and_then(|end| WeightBytes::shared(bytes, at..end))
            .ok_or_else(|| {
                EngineError::InvalidModel(format!(
                    "{}: tensor '{name}' extends past the end of the file (truncated?)",
                    self.path.display()
                ))
            })?;
        Ok(RawTensor { dtype, dims, data })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.get(key)
            .ok_or_else(|| EngineError::MissingMetadata(key.to_string()))?
            .to_u32()
            .or_else(|_| {
                self.get(key)
                    .map(value_as_u64)
                    .and_then(|v| v.and_then(|v| u32::try_from(v).ok()))
                    .ok_or_else(|| EngineError::InvalidModel(format!("'{key}' is not an integer")))
            })
    }

    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let v = self
            .get(key)
            .ok_or_else(|| EngineError::MissingMetadata(key.to_string()))?;
        v.to_f32()
            .or_else(|_| v.to_f64().map(|f| f as f32))
            .map_err(|_| EngineError::InvalidModel(format!("'{key}' is not a float")))
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)
            .and_then(|v| v.to_string().ok())
            .map(|s| s.as_str())
    }

    pub fn architecture(&self) -> Result<String> {
        self.get_str("general.architecture")
            .map(str::to_string)
            .ok_or_else(|| EngineError::MissingMetadata("general.architecture".into()))
    }
}

/// Any integer-typed GGUF value as u64 (negative values give None).
pub fn value_as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::U8(x) => Some(*x as u64),
        Value::I8(x) => u64::try_from(*x).ok(),
        Value::U16(x) => Some(*x as u64),
        Value::I16(x) => u64::try_from(*x).ok(),
        Value::U32(x) => Some(*x as u64),
        Value::I32(x) => u64::try_from(*x).ok(),
        Value::U64(x) => Some(*x),
        Value::I64(x) => u64::try_from(*x).ok(),
        _ => None,
    }
}

/// A GGUF value as JSON, for `/api/show`'s `model_info`. Arrays longer than
/// `max_array` become `null` (Ollama hides the vocabulary unless `verbose`).
pub fn value_to_json(v: &Value, max_array: usize) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::U8(x) => J::from(*x),
        Value::I8(x) => J::from(*x),
        Value::U16(x) => J::from(*x),
        Value::I16(x) => J::from(*x),
        Value::U32(x) => J::from(*x),
        Value::I32(x) => J::from(*x),
        Value::U64(x) => J::from(*x),
        Value::I64(x) => J::from(*x),
        Value::F32(x) => serde_json::Number::from_f64(*x as f64).map_or(J::Null, J::Number),
        Value::F64(x) => serde_json::Number::from_f64(*x).map_or(J::Null, J::Number),
        Value::Bool(x) => J::Bool(*x),
        Value::String(s) => J::String(s.clone()),
        Value::Array(items) => {
            if items.len() > max_array {
                J::Null
            } else {
                J::Array(items.iter().map(|i| value_to_json(i, max_array)).collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn regression(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/regressions/gguf_reader")
            .join(name)
    }

    #[test]
    fn zero_alignment_is_a_broken_file_not_a_panic() {
        let err = GgufFile::open(&regression("alignment-zero.gguf")).err();
        assert!(
            matches!(&err, Some(EngineError::InvalidModel(m)) if m.contains("malformed")),
            "{err:?}"
        );
    }

    #[test]
    fn a_tensor_offset_that_wraps_is_refused_at_open() {
        let err = GgufFile::open(&regression("tensor-end-wraps.gguf")).err();
        assert!(
            matches!(&err, Some(EngineError::InvalidModel(m)) if m.contains("past the end")),
            "{err:?}"
        );
    }

    fn written(tensors: &[TensorOut]) -> (tempfile::NamedTempFile, Result<GgufFile>) {
        let file = tempfile::NamedTempFile::new().expect("temp");
        let meta = vec![(
            "general.architecture".to_string(),
            Value::String("x".into()),
        )];
        write_gguf_tensors(file.path(), &meta, tensors).expect("write");
        let opened = GgufFile::open(file.path());
        (file, opened)
    }

    #[test]
    fn an_mxfp4_tensor_round_trips_through_writer_and_reader() {
        let values: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) / 8.0).collect();
        let blocks = wick_kernels::reference::quantize_row_mxfp4(&values);
        let t = TensorOut {
            name: "blk.0.ffn_up_exps.weight".into(),
            ty: GgmlType::MXFP4,
            dims: vec![1, 2, 32],
            data: Cow::Borrowed(&blocks),
        };
        let (_f, gguf) = written(std::slice::from_ref(&t));
        let mut gguf = gguf.expect("open");
        assert_eq!(gguf.architecture().expect("arch"), "x");
        let raw = gguf.raw_tensor(&t.name).expect("raw");
        assert_eq!(
            (raw.dtype, raw.dims.clone()),
            (GgmlType::MXFP4, vec![1, 2, 32])
        );
        assert_eq!(&raw.data[..], &blocks[..]);
        assert_eq!(gguf.tensor_summaries()[0].kind, "MXFP4");
        // candle has no MXFP4: the candle path refuses it by name.
        let err = gguf.tensor(&t.name, &Device::Cpu).err();
        assert!(
            matches!(&err, Some(EngineError::UnsupportedTensorType { kind, .. }) if kind.contains("MXFP4")),
            "{err:?}"
        );
    }

    #[test]
    fn a_type_ggml_does_not_define_is_a_broken_file() {
        let t = TensorOut {
            name: "w".into(),
            ty: GgmlType(77),
            dims: vec![4],
            data: Cow::Owned(vec![0; 4]),
        };
        let (_f, gguf) = written(&[t]);
        let err = gguf.err();
        assert!(
            matches!(&err, Some(EngineError::InvalidModel(m)) if m.contains("ggml type 77")),
            "{err:?}"
        );
    }

    #[test]
    fn counts_larger_than_the_file_are_refused_before_allocating() {
        let file = tempfile::NamedTempFile::new().expect("temp");
        let mut bytes = b"GGUF".to_vec();
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&1u64.to_le_bytes());
        // A key whose string claims 2^60 bytes.
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        std::fs::write(file.path(), &bytes).expect("write");
        let err = GgufFile::open(file.path()).err();
        assert!(
            matches!(&err, Some(EngineError::InvalidModel(m)) if m.contains("does not fit")),
            "{err:?}"
        );
        std::fs::write(file.path(), &bytes[..10]).expect("write");
        let err = GgufFile::open(file.path()).err();
        assert!(
            matches!(&err, Some(EngineError::InvalidModel(m)) if m.contains("ends early")),
            "{err:?}"
        );
    }

    #[test]
    fn overflowing_dims_have_no_element_count() {
        assert_eq!(checked_elem_count(&[usize::MAX, 2]), None);
        assert_eq!(checked_elem_count(&[3, 4]), Some(12));
        assert_eq!(checked_elem_count(&[]), Some(1));
    }
}
