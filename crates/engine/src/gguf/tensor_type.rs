//! ggml's tensor types as GGUF names them: every type a file may hold, served or not,
//! so a header always parses and an unserved type is refused by name.

use candle_core::quantized::GgmlDType;
use wick_kernels::QuantKind;

/// A tensor's ggml type id, as the file stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GgmlType(pub u32);

/// ggml's name, values per block and bytes per block of each type id it defines.
const TYPES: &[(u32, &str, usize, usize)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
];

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const BF16: GgmlType = GgmlType(30);
    pub const MXFP4: GgmlType = GgmlType(39);

    fn traits(self) -> Option<&'static (u32, &'static str, usize, usize)> {
        TYPES.iter().find(|t| t.0 == self.0)
    }

    /// Whether ggml defines this id (a file with any other is broken).
    pub fn is_known(self) -> bool {
        self.traits().is_some()
    }

    /// ggml's name (`Q4_K`, `MXFP4`, ...), or `type N` for an id ggml does not define.
    pub fn name(self) -> String {
        self.traits()
            .map_or_else(|| format!("type {}", self.0), |t| t.1.to_string())
    }

    /// Values per block (1 for an unknown id; such a file is refused at open).
    pub fn block_size(self) -> usize {
        self.traits().map_or(1, |t| t.2)
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.traits().map_or(1, |t| t.3)
    }

    /// The kind wick's CPU kernels run, if they run this type.
    pub fn kernel_kind(self) -> Option<QuantKind> {
        QuantKind::from_ggml_type(self.0)
    }

    /// candle's type, where candle has this one.
    pub fn candle(self) -> Option<GgmlDType> {
        Some(match self.0 {
            0 => GgmlDType::F32,
            1 => GgmlDType::F16,
            2 => GgmlDType::Q4_0,
            3 => GgmlDType::Q4_1,
            6 => GgmlDType::Q5_0,
            7 => GgmlDType::Q5_1,
            8 => GgmlDType::Q8_0,
            9 => GgmlDType::Q8_1,
            10 => GgmlDType::Q2K,
            11 => GgmlDType::Q3K,
            12 => GgmlDType::Q4K,
            13 => GgmlDType::Q5K,
            14 => GgmlDType::Q6K,
            15 => GgmlDType::Q8K,
            30 => GgmlDType::BF16,
            _ => return None,
        })
    }
}

impl From<GgmlDType> for GgmlType {
    fn from(d: GgmlDType) -> Self {
        GgmlType(match d {
            GgmlDType::F32 => 0,
            GgmlDType::F16 => 1,
            GgmlDType::Q4_0 => 2,
            GgmlDType::Q4_1 => 3,
            GgmlDType::Q5_0 => 6,
            GgmlDType::Q5_1 => 7,
            GgmlDType::Q8_0 => 8,
            GgmlDType::Q8_1 => 9,
            GgmlDType::Q2K => 10,
            GgmlDType::Q3K => 11,
            GgmlDType::Q4K => 12,
            GgmlDType::Q5K => 13,
            GgmlDType::Q6K => 14,
            GgmlDType::Q8K => 15,
            GgmlDType::BF16 => 30,
        })
    }
}

impl From<QuantKind> for GgmlType {
    fn from(k: QuantKind) -> Self {
        GgmlType(k.ggml_type())
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candle_and_kernel_kinds_agree_with_the_table() {
        for t in TYPES {
            let ty = GgmlType(t.0);
            if let Some(d) = ty.candle() {
                assert_eq!(GgmlType::from(d), ty);
                assert_eq!((d.block_size(), d.type_size()), (t.2, t.3), "{}", t.1);
            }
            if let Some(k) = ty.kernel_kind() {
                assert_eq!((k.block_size(), k.type_size(), k.name()), (t.2, t.3, t.1));
            }
        }
        for k in QuantKind::ALL {
            assert!(GgmlType::from(k).is_known(), "{k}");
        }
        assert_eq!(GgmlType(42).name(), "type 42");
        assert!(!GgmlType(42).is_known());
    }
}
