//! A minimal GGUF tensor-directory reader (header, tensor infos, raw tensor bytes), for
//! this crate's tests and benchmarks on real model files. Metadata values are skipped
//! except `general.alignment`.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::{QMatrix, QuantKind};

/// One tensor's entry in a GGUF file.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the innermost (row length).
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Offset from the start of the tensor data section.
    pub offset: u64,
}

/// The tensor directory of a GGUF file.
#[derive(Clone, Debug)]
pub struct GgufIndex {
    pub path: PathBuf,
    pub tensors: Vec<TensorInfo>,
    pub data_start: u64,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_string(r: &mut impl Read) -> io::Result<String> {
    let n = read_u64(r)?;
    if n > 1 << 24 {
        return Err(bad("string too long"));
    }
    let mut b = vec![0u8; n as usize];
    r.read_exact(&mut b)?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

/// Skip one metadata value of type `t`; returns it if it is an integer of up to 32 bits.
fn skip_value(r: &mut (impl Read + Seek), t: u32) -> io::Result<Option<u64>> {
    let fixed = |t: u32| match t {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    };
    match t {
        4 | 5 => Ok(Some(read_u32(r)? as u64)),
        8 => read_string(r).map(|_| None),
        9 => {
            let at = read_u32(r)?;
            let n = read_u64(r)?;
            if let Some(size) = fixed(at) {
                r.seek(SeekFrom::Current((size * n) as i64))?;
            } else {
                for _ in 0..n {
                    skip_value(r, at)?;
                }
            }
            Ok(None)
        }
        t => match fixed(t) {
            Some(size) => {
                r.seek(SeekFrom::Current(size as i64))?;
                Ok(None)
            }
            None => Err(bad(format!("unknown metadata type {t}"))),
        },
    }
}

impl GgufIndex {
    pub fn open(path: &Path) -> io::Result<Self> {
        let mut r = BufReader::new(File::open(path)?);
        let mut magic = [0u8; 4];
        r.read_exact(&mut magic)?;
        if &magic != b"GGUF" {
            return Err(bad("not a GGUF file"));
        }
        let version = read_u32(&mut r)?;
        if version < 2 {
            return Err(bad(format!("GGUF version {version} is not supported")));
        }
        let n_tensors = read_u64(&mut r)?;
        let n_kv = read_u64(&mut r)?;
        let mut alignment = 32u64;
        for _ in 0..n_kv {
            let key = read_string(&mut r)?;
            let t = read_u32(&mut r)?;
            let v = skip_value(&mut r, t)?;
            if key == "general.alignment" {
                alignment = v.filter(|&a| a > 0).unwrap_or(32);
            }
        }
        let mut tensors = Vec::new();
        for _ in 0..n_tensors {
            let name = read_string(&mut r)?;
            let nd = read_u32(&mut r)?;
            if nd > 4 {
                return Err(bad("tensor with more than 4 dims"));
            }
            let dims = (0..nd)
                .map(|_| read_u64(&mut r))
                .collect::<io::Result<_>>()?;
            let ggml_type = read_u32(&mut r)?;
            let offset = read_u64(&mut r)?;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let pos = r.stream_position()?;
        let data_start = pos.div_ceil(alignment) * alignment;
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            data_start,
        })
    }

    /// A 2-D tensor of a supported type as a [`QMatrix`] (`None` for other tensors).
    pub fn read_matrix(&self, t: &TensorInfo) -> io::Result<Option<QMatrix>> {
        let Some(kind) = QuantKind::from_ggml_type(t.ggml_type) else {
            return Ok(None);
        };
        if t.dims.len() != 2 {
            return Ok(None);
        }
        let (cols, rows) = (t.dims[0] as usize, t.dims[1] as usize);
        if cols % kind.block_size() != 0 {
            return Ok(None);
        }
        let mut data = vec![0u8; rows * kind.row_bytes(cols)];
        let mut f = File::open(&self.path)?;
        f.seek(SeekFrom::Start(self.data_start + t.offset))?;
        f.read_exact(&mut data)?;
        QMatrix::new(kind, rows, cols, data)
            .map(Some)
            .map_err(|e| bad(e.to_string()))
    }
}
