//! Quantized CPU matrix multiplication over ggml's block formats, and the persistent
//! thread pool that runs it.
//!
//! # Design
//!
//! * [`QMatrix`] holds a weight matrix exactly as a GGUF file stores it: `rows` output
//!   features, each a row of `cols` inputs packed in ggml blocks ([`QuantKind`]). Nothing
//!   is repacked at load, so loading is a copy (or a borrow of the mapped file), resident
//!   memory is the file's, and [`QMatrix::dequantize_row`] doubles as the token-embedding
//!   lookup.
//! * [`QMatrix::matmul`] computes `out[i][j] = dot(x[i], W[j])` for `m` activation rows.
//!   Like ggml, it first quantizes the activations once to the type the weights pair with
//!   (Q8_0 for Q4_0/Q5_0/Q8_0/MXFP4, Q8_1 for Q4_1, Q8_K for the K-quants, f16 for F16, none
//!   for F32), reproducing the rounding of ggml's x86 quantizers bit for bit, then takes
//!   exact integer dot products per block and scales them in float.
//! * The float order is fixed per kind, whatever `m`, the tiling, the backend or the
//!   thread count, so a row of a batched call is bit-identical to the same row computed
//!   alone (tested) and batching never changes a greedy token. Q4_0, Q4_1, Q5_0, MXFP4, the
//!   K-quants (Q4_K, Q5_K, Q6_K): one scalar `fma` chain per (weight row, activation row)
//!   pair over the blocks' exact integer totals (see `scalar::k_chain`). Q8_0, F16 and
//!   F32: ggml's AVX2 `ggml_vec_dot_*` order (an 8-lane accumulator per pair, the same
//!   horizontal sum). llama.cpp's x86 build repacks several kinds and sums those in yet
//!   other orders, so the last bits differ from it anyway; its tokens agree wherever its
//!   top-2 margin is clear (the parity tests).
//! * Batches of 8 rows or more of the chain-order kinds run a GEMM (`kgemm`): the
//!   activations are interleaved in groups of 8 rows so one vector lane is one row, each
//!   weight row is unpacked once per call to byte codes (Q4_0/Q4_1/Q5_0 calls of up to
//!   16 rows read the weights as stored instead: `kgemm::direct_dots`), and the inner
//!   step broadcasts four codes against a group (`vpmaddubsw`), summing in 16 bits for
//!   as many steps as cannot overflow before one `vpmaddwd` applies the sub-block scale
//!   for 8 rows at once. Tiles keep two groups' span of blocks in L1 and the task's unpacked rows in L2.
//! * Smaller batches and decode use row kernels of `NR` weight rows x `MR` activation
//!   rows (at most 4 pairs). Decode (`m = 1`) runs 4 weight rows at a time and prefetches
//!   the next four while it computes, which keeps it near the memory bandwidth; its
//!   Q4_0/Q5_0 kernels multiply unsigned weight codes and subtract a per-lane activation
//!   sum computed once per call (same integers as ggml's sign trick, fewer uops). Work is
//!   split over output rows into tasks run by a [`ThreadPool`].
//! * The AVX2+FMA+F16C kernels are chosen at run time ([`Backend::detect`]); a portable
//!   scalar path computes the same integer sums for every kind and is what other CPUs run
//!   (`--cfg wick_kernels_portable` builds that configuration on x86 too). [`reference`](mod@reference)
//!   has plain dequantization of every kind.
//! * [`ThreadPool`] keeps `n - 1` worker threads that spin briefly and then park between
//!   jobs; the calling thread works too, so `ThreadPool::new(1)` spawns nothing. A job
//!   never waits for a worker that has not started on it.
//! * The only allocations per call are reused thread-local buffers: the quantized (and,
//!   for the GEMM, interleaved) activations and a task's unpacked weight rows.

mod act;
mod avx2;
mod f16;
pub mod gguf;
mod kgemm;
mod matrix;
mod pool;
pub mod reference;
mod scalar;
pub mod synth;
mod weights;

pub use matrix::{Backend, QMatrix, ACT_TILE};
pub use pool::ThreadPool;
pub use weights::WeightBytes;

/// Weight storage formats, with ggml's type ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantKind {
    F32,
    F16,
    /// bfloat16: f32's exponent, 7 bits of mantissa.
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    /// OCP microscaling FP4 (gpt-oss's experts): 32 E2M1 values and a power-of-two scale.
    Mxfp4,
}

impl QuantKind {
    /// Every kind, for tests and benches.
    pub const ALL: [QuantKind; 13] = [
        QuantKind::F32,
        QuantKind::F16,
        QuantKind::BF16,
        QuantKind::Q4_0,
        QuantKind::Q4_1,
        QuantKind::Q5_0,
        QuantKind::Q8_0,
        QuantKind::Q2K,
        QuantKind::Q3K,
        QuantKind::Q4K,
        QuantKind::Q5K,
        QuantKind::Q6K,
        QuantKind::Mxfp4,
    ];

    /// The kind of a ggml type id (`None` for types these kernels do not handle).
    pub fn from_ggml_type(id: u32) -> Option<Self> {
        Some(match id {
            0 => QuantKind::F32,
            1 => QuantKind::F16,
            2 => QuantKind::Q4_0,
            3 => QuantKind::Q4_1,
            6 => QuantKind::Q5_0,
            8 => QuantKind::Q8_0,
            10 => QuantKind::Q2K,
            11 => QuantKind::Q3K,
            12 => QuantKind::Q4K,
            13 => QuantKind::Q5K,
            14 => QuantKind::Q6K,
            30 => QuantKind::BF16,
            39 => QuantKind::Mxfp4,
            _ => return None,
        })
    }

    /// ggml's type id.
    pub fn ggml_type(self) -> u32 {
        match self {
            QuantKind::F32 => 0,
            QuantKind::F16 => 1,
            QuantKind::Q4_0 => 2,
            QuantKind::Q4_1 => 3,
            QuantKind::Q5_0 => 6,
            QuantKind::Q8_0 => 8,
            QuantKind::Q2K => 10,
            QuantKind::Q3K => 11,
            QuantKind::Q4K => 12,
            QuantKind::Q5K => 13,
            QuantKind::Q6K => 14,
            QuantKind::BF16 => 30,
            QuantKind::Mxfp4 => 39,
        }
    }

    /// Values per block.
    pub fn block_size(self) -> usize {
        match self {
            QuantKind::F32 | QuantKind::F16 | QuantKind::BF16 => 1,
            QuantKind::Q4_0
            | QuantKind::Q4_1
            | QuantKind::Q5_0
            | QuantKind::Q8_0
            | QuantKind::Mxfp4 => 32,
            QuantKind::Q2K | QuantKind::Q3K | QuantKind::Q4K | QuantKind::Q5K | QuantKind::Q6K => {
                256
            }
        }
    }

    /// A K-quant (Q2_K to Q6_K): 256-value super-blocks, multiplied with Q8_K activations.
    pub fn is_k_quant(self) -> bool {
        self.block_size() == 256
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            QuantKind::F32 => 4,
            QuantKind::F16 | QuantKind::BF16 => 2,
            QuantKind::Q4_0 => 18,
            QuantKind::Q4_1 => 20,
            QuantKind::Q5_0 => 22,
            QuantKind::Q8_0 => 34,
            QuantKind::Q2K => 84,
            QuantKind::Q3K => 110,
            QuantKind::Q4K => 144,
            QuantKind::Q5K => 176,
            QuantKind::Q6K => 210,
            QuantKind::Mxfp4 => 17,
        }
    }

    /// Bytes of one row of `cols` values (`cols` a multiple of the block size).
    pub fn row_bytes(self, cols: usize) -> usize {
        cols / self.block_size() * self.type_size()
    }

    /// ggml's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            QuantKind::F32 => "F32",
            QuantKind::F16 => "F16",
            QuantKind::BF16 => "BF16",
            QuantKind::Q4_0 => "Q4_0",
            QuantKind::Q4_1 => "Q4_1",
            QuantKind::Q5_0 => "Q5_0",
            QuantKind::Q8_0 => "Q8_0",
            QuantKind::Q2K => "Q2_K",
            QuantKind::Q3K => "Q3_K",
            QuantKind::Q4K => "Q4_K",
            QuantKind::Q5K => "Q5_K",
            QuantKind::Q6K => "Q6_K",
            QuantKind::Mxfp4 => "MXFP4",
        }
    }
}

impl std::fmt::Display for QuantKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a kernel call can refuse.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("ggml type {0} is not supported by wick's CPU kernels")]
    UnsupportedType(u32),
    #[error("{kind} rows of {cols} values do not fill whole blocks of {block}")]
    PartialBlock {
        kind: QuantKind,
        cols: usize,
        block: usize,
    },
    #[error("{kind} matrix of {rows}x{cols} needs {expected} bytes, got {got}")]
    DataSize {
        kind: QuantKind,
        rows: usize,
        cols: usize,
        expected: usize,
        got: usize,
    },
    #[error("{what} has {got} values, expected {expected}")]
    BufferSize {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error(
        "cannot stack a {other} matrix of {other_cols} columns under a {first} one of {first_cols}"
    )]
    StackMismatch {
        first: QuantKind,
        first_cols: usize,
        other: QuantKind,
        other_cols: usize,
    },
    #[error("row {row} out of range for a matrix of {rows} rows")]
    RowOutOfRange { row: usize, rows: usize },
    #[error("the {0:?} kernels are not available on this CPU")]
    BackendUnavailable(Backend),
}

/// Physical cores of this machine (best effort: distinct (package, core) pairs of
/// `/proc/cpuinfo`, else the available parallelism); at least 1.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let from_cpuinfo = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| count_physical_cores(&text));
    match from_cpuinfo {
        // The process may be limited to fewer CPUs than the machine has.
        Some(n) => n.clamp(1, logical),
        None => logical.max(1),
    }
}

fn count_physical_cores(cpuinfo: &str) -> Option<usize> {
    let mut cores = std::collections::HashSet::new();
    let mut package = None;
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "physical id" => package = value.trim().parse::<u32>().ok(),
            "core id" => {
                if let Ok(core) = value.trim().parse::<u32>() {
                    cores.insert((package.unwrap_or(0), core));
                }
            }
            _ => {}
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_ggml_ids() {
        for k in QuantKind::ALL {
            assert_eq!(QuantKind::from_ggml_type(k.ggml_type()), Some(k));
            assert_eq!(k.row_bytes(k.block_size() * 3), 3 * k.type_size());
        }
        assert_eq!(QuantKind::from_ggml_type(9), None, "Q5_1 is not served");
    }

    #[test]
    fn k_quants_are_the_five_super_block_kinds() {
        let k: Vec<QuantKind> = QuantKind::ALL
            .into_iter()
            .filter(|k| k.is_k_quant())
            .collect();
        use QuantKind::*;
        assert_eq!(k, [Q2K, Q3K, Q4K, Q5K, Q6K]);
    }

    #[test]
    fn cpuinfo_core_count() {
        let text = "processor: 0\nphysical id: 0\ncore id: 0\n\nprocessor: 1\nphysical id: 0\ncore id: 0\n\nprocessor: 2\nphysical id: 0\ncore id: 1\n";
        assert_eq!(count_physical_cores(text), Some(2));
        assert_eq!(count_physical_cores("processor: 0\n"), None);
        assert!(physical_cores() >= 1);
    }
}
