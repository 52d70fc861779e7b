//! The GGUF header (metadata and tensor directory), read by wick itself so that every
//! tensor type ggml defines parses, including those candle's reader refuses (MXFP4).
//! Everything in it is untrusted: lengths and counts are checked against the bytes
//! the file has before anything is allocated for them.

use std::collections::HashMap;
use std::io::Read;

use candle_core::quantized::gguf_file::Value;
use candle_core::Shape;

use super::tensor_type::GgmlType;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
/// Nesting depth of arrays of arrays, so a crafted file cannot exhaust the stack.
const MAX_DEPTH: usize = 8;

/// One tensor's directory entry.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub ggml_dtype: GgmlType,
    /// Outermost dimension first (GGUF stores innermost first): a matrix is `[rows, cols]`.
    pub shape: Shape,
    /// Offset of its bytes from the start of the data section.
    pub offset: u64,
}

/// A parsed header.
#[derive(Debug)]
pub struct Content {
    pub version: u32,
    pub metadata: HashMap<String, Value>,
    pub tensor_infos: HashMap<String, TensorInfo>,
    /// Where the data section starts in the file.
    pub tensor_data_offset: u64,
}

/// A header the reader refuses, with what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Malformed(String),
}

fn malformed<T>(what: impl Into<String>) -> Result<T, HeaderError> {
    Err(HeaderError::Malformed(what.into()))
}

/// A reader that knows how many bytes the file has left.
struct Cursor<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Cursor<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], HeaderError> {
        if self.remaining < N as u64 {
            return malformed("the header ends early (truncated file?)");
        }
        let mut b = [0u8; N];
        self.inner.read_exact(&mut b)?;
        self.remaining -= N as u64;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, HeaderError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, HeaderError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    /// A count of items each at least `min_size` bytes: more than the file can hold is
    /// a broken header, refused before anything is allocated for it.
    fn count(&mut self, what: &str, min_size: u64) -> Result<usize, HeaderError> {
        let n = self.u64()?;
        if n.saturating_mul(min_size) > self.remaining {
            return malformed(format!(
                "{what} count {n} does not fit in the file's remaining {} bytes",
                self.remaining
            ));
        }
        usize::try_from(n).or_else(|_| malformed(format!("{what} count {n} is too large")))
    }

    fn string(&mut self) -> Result<String, HeaderError> {
        let n = self.count("string length", 1)?;
        let mut b = vec![0u8; n];
        self.inner.read_exact(&mut b)?;
        self.remaining -= n as u64;
        String::from_utf8(b).or_else(|_| malformed("a string is not UTF-8"))
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<Value, HeaderError> {
        Ok(match ty {
            0 => Value::U8(u8::from_le_bytes(self.bytes()?)),
            1 => Value::I8(i8::from_le_bytes(self.bytes()?)),
            2 => Value::U16(u16::from_le_bytes(self.bytes()?)),
            3 => Value::I16(i16::from_le_bytes(self.bytes()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.bytes()?)),
            6 => Value::F32(f32::from_le_bytes(self.bytes()?)),
            7 => match self.bytes::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return malformed(format!("bool value {b}")),
            },
            8 => Value::String(self.string()?),
            9 => {
                if depth >= MAX_DEPTH {
                    return malformed("arrays nested too deep");
                }
                let item = self.u32()?;
                let min = match item {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    10..=12 | 8 => 8,
                    9 => 12,
                    t => return malformed(format!("unknown metadata value type {t}")),
                };
                let n = self.count("array length", min)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.bytes()?)),
            12 => Value::F64(f64::from_le_bytes(self.bytes()?)),
            t => return malformed(format!("unknown metadata value type {t}")),
        })
    }
}

/// Parse the header of a GGUF file of `file_len` bytes read from its start.
pub fn read_header(reader: impl Read, file_len: u64) -> Result<Content, HeaderError> {
    let mut r = Cursor {
        inner: reader,
        remaining: file_len,
    };
    if &r.bytes::<4>()? != MAGIC {
        return malformed("not a GGUF file (bad magic)");
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return malformed(format!("GGUF version {version} is not supported"));
    }
    // A tensor entry takes at least 8 + 4 + 4 + 8 bytes, a metadata entry 8 + 4 + 1.
    let n_tensors = r.count("tensor", 24)?;
    let n_kv = r.count("metadata", 13)?;
    let mut metadata = HashMap::with_capacity(n_kv);
    for _ in 0..n_kv {
        let key = r.string()?;
        let ty = r.u32()?;
        let value = r.value(ty, 0)?;
        metadata.insert(key, value);
    }
    let mut tensor_infos = HashMap::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name = r.string()?;
        let n_dims = r.u32()?;
        if n_dims > MAX_DIMS {
            return malformed(format!("tensor '{name}' has {n_dims} dimensions"));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = r.u64()?;
            dims.push(
                usize::try_from(d)
                    .or_else(|_| malformed(format!("tensor '{name}' is too large")))?,
            );
        }
        dims.reverse();
        let ggml_dtype = GgmlType(r.u32()?);
        if !ggml_dtype.is_known() {
            return malformed(format!(
                "tensor '{name}' has ggml type {}, which ggml does not define",
                ggml_dtype.0
            ));
        }
        let offset = r.u64()?;
        let info = TensorInfo {
            ggml_dtype,
            shape: Shape::from(dims),
            offset,
        };
        if tensor_infos.insert(name.clone(), info).is_some() {
            return malformed(format!("tensor '{name}' is listed twice"));
        }
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match super::value_as_u64(v) {
            Some(a) if a > 0 && a.is_power_of_two() => a,
            _ => return malformed("general.alignment is not a power of two"),
        },
    };
    let position = file_len - r.remaining;
    let tensor_data_offset = position.div_ceil(alignment) * alignment;
    Ok(Content {
        version,
        metadata,
        tensor_infos,
        tensor_data_offset,
    })
}
