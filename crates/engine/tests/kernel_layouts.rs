//! wick's kernels read every quantized layout as ggml does: their dequantization of
//! random blocks of each kind equals candle's port of ggml's (bit for bit), so a file
//! means the same numbers to both.

use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::Device;
use wick_engine::gguf::GgmlType;
use wick_kernels::{reference, synth, QuantKind};

#[test]
fn every_kind_dequantizes_as_ggml_does() {
    let (rows, cols) = (3, 512);
    for kind in QuantKind::ALL {
        // candle has no MXFP4: gguf-py's reference checks that kind (mxfp4_reference.rs).
        let Some(ggml) = GgmlType::from(kind).candle() else {
            assert_eq!(kind, QuantKind::Mxfp4);
            continue;
        };
        let data = synth::random_data(kind, rows, cols, 7);
        let ours = reference::dequantize(kind, rows, cols, &data).expect("dequantize");
        let theirs = qtensor_from_ggml(ggml, &data, vec![rows, cols], &Device::Cpu)
            .and_then(|t| t.dequantize(&Device::Cpu))
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .expect("candle dequantizes");
        assert_eq!(ours.len(), theirs.len(), "{kind:?}");
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!(
                a == b || (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{kind:?} value {i}: wick {a}, ggml {b}"
            );
        }
    }
}
