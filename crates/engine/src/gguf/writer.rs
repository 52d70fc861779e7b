//! Writing GGUF files, for every tensor type ggml defines: candle's writer takes only
//! the types candle has, and gpt-oss's experts are MXFP4. The bytes are those candle's
//! writer produced for the same input (version 2, which differs from 3 only in allowing
//! big-endian files), so a file wick wrote before imports to the same digest again.

use std::borrow::Cow;
use std::io::{self, Write};

use candle_core::quantized::gguf_file::Value;

use super::tensor_type::GgmlType;

const ALIGNMENT: usize = 32;

/// A tensor to write: its type, its dims outermost first (`[rows, cols]`), its blocks.
pub struct TensorOut<'a> {
    pub name: String,
    pub ty: GgmlType,
    pub dims: Vec<usize>,
    pub data: Cow<'a, [u8]>,
}

impl TensorOut<'_> {
    fn expected_bytes(&self) -> Option<usize> {
        let elems = self
            .dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))?;
        (elems % self.ty.block_size() == 0)
            .then(|| elems / self.ty.block_size() * self.ty.type_size())
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn string(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

/// GGUF's id of a value's type.
fn type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn value(w: &mut impl Write, v: &Value) -> io::Result<()> {
    match v {
        Value::U8(x) => w.write_all(&x.to_le_bytes()),
        Value::I8(x) => w.write_all(&x.to_le_bytes()),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(x) => w.write_all(&[u8::from(*x)]),
        Value::String(s) => string(w, s),
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
        Value::Array(items) => {
            let item = items.first().map_or(4, type_id);
            if items.iter().any(|i| type_id(i) != item) {
                return Err(invalid("an array mixes value types".into()));
            }
            w.write_all(&item.to_le_bytes())?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            items.iter().try_for_each(|i| value(w, i))
        }
    }
}

fn pad(w: &mut impl Write, len: usize) -> io::Result<usize> {
    let padding = len.next_multiple_of(ALIGNMENT) - len;
    w.write_all(&[0u8; ALIGNMENT][..padding])?;
    Ok(padding)
}

/// Write a whole GGUF file: `metadata` in the order given, then `tensors`.
pub fn write(
    w: &mut impl Write,
    metadata: &[(&str, &Value)],
    tensors: &[TensorOut],
) -> io::Result<()> {
    let mut header = Vec::new();
    header.extend_from_slice(b"GGUF");
    header.extend_from_slice(&2u32.to_le_bytes());
    header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, v) in metadata {
        string(&mut header, key)?;
        header.extend_from_slice(&type_id(v).to_le_bytes());
        value(&mut header, v)?;
    }
    let mut offset = 0usize;
    for t in tensors {
        if t.expected_bytes() != Some(t.data.len()) {
            return Err(invalid(format!(
                "tensor '{}' of {} {:?} has {} bytes",
                t.name,
                t.ty,
                t.dims,
                t.data.len()
            )));
        }
        string(&mut header, &t.name)?;
        header.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for &d in t.dims.iter().rev() {
            header.extend_from_slice(&(d as u64).to_le_bytes());
        }
        header.extend_from_slice(&t.ty.0.to_le_bytes());
        header.extend_from_slice(&(offset as u64).to_le_bytes());
        offset = (offset + t.data.len()).next_multiple_of(ALIGNMENT);
    }
    w.write_all(&header)?;
    pad(w, header.len())?;
    for t in tensors {
        w.write_all(&t.data)?;
        pad(w, t.data.len())?;
    }
    Ok(())
}
