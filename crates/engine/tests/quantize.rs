//! wick's quantizer against llama.cpp's (fixture: `scripts/record_quantize_fixture.py`):
//! SmolLM2 dequantized to F16 and quantized by wick to Q8_0 and Q4_K_M gives every
//! tensor the type llama.cpp gives it and the same bytes (Q8_0, Q5_0, Q4_K, Q6_K and
//! the float tensors alike). So llama.cpp's greedy continuation of wick's file is the one
//! recorded from its own file; the test also prints wick's engine's continuations beside
//! it (margin-aware), for the record.

mod common;

use common::{model_cache, repo};

use serde_json::Value;
use sha2::{Digest, Sha256};
use wick_engine::gguf::GgufFile;
use wick_engine::quantize::{dequantize_to_f16, quantize_gguf, FileType};
use wick_engine::{Device, Model};

/// Logit margin below which llama.cpp's choice is a near tie.
const NEAR_TIE: f64 = 0.05;

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn greedy(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = model.new_cache(prompt.len() + n + 1).expect("cache");
    let mut logits = model.forward(prompt, &mut cache).expect("prefill");
    let mut out = Vec::new();
    for _ in 0..n {
        let (tok, _) =
            logits
                .iter()
                .enumerate()
                .fold((0u32, f32::NEG_INFINITY), |best, (i, &l)| {
                    if l > best.1 {
                        (i as u32, l)
                    } else {
                        best
                    }
                });
        out.push(tok);
        logits = model.forward(&[tok], &mut cache).expect("decode");
    }
    out
}

#[test]
fn quantized_tensors_are_llamacpp_s() {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("assets/fixtures/llamacpp_quantize.json"))
            .expect("fixture"),
    )
    .expect("json");
    let src = model_cache().join("smollm2-135m-instruct-q4_1.gguf");
    assert!(
        src.exists(),
        "{} missing: run scripts/fetch-models.sh",
        src.display()
    );
    let dir = tempfile::tempdir().expect("tmp");
    let f16 = dir.path().join("f16.gguf");
    dequantize_to_f16(&src, &f16).expect("dequantize");
    let bytes = std::fs::read(&f16).expect("read f16");
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        fixture["f16_sha256"].as_str().expect("sha"),
        "the F16 file differs from the one llama.cpp quantized"
    );
    drop(bytes);

    for (name, ftype) in [("q8_0", FileType::Q8_0), ("q4_K_M", FileType::Q4KM)] {
        let out = dir.path().join(format!("{name}.gguf"));
        quantize_gguf(&f16, &out, ftype, |_, _| {}).expect("quantize");
        let want = &fixture["types"][name];
        let mut gguf = GgufFile::open(&out).expect("open");
        let names: Vec<String> = gguf.content.tensor_infos.keys().cloned().collect();
        let mut kinds = std::collections::BTreeSet::new();
        for t in &names {
            let expected = &want["tensors"][t];
            let raw = gguf.raw_tensor(t).expect("tensor");
            let ty = raw.dtype.name();
            let want_ty = expected["type"].as_str().expect("type").replace('_', "");
            assert_eq!(ty.replace('_', ""), want_ty, "{name} {t}: type");
            let bytes: &[u8] = raw.data.as_ref();
            assert_eq!(
                hex::encode(Sha256::digest(bytes)),
                expected["sha256"].as_str().expect("sha"),
                "{name} {t}: {} bytes differ from llama.cpp's",
                raw.dtype
            );
            kinds.insert(raw.dtype.name());
        }
        eprintln!(
            "{name}: all {} tensors byte-identical to llama.cpp's ({kinds:?})",
            names.len()
        );
        let model = Model::load(&out, &Device::Cpu).expect("load the quantized file");
        for case in want["cases"].as_array().expect("cases") {
            let expected = ids(&case["tokens"]);
            let margins: Vec<f64> = case["margins"]
                .as_array()
                .expect("margins")
                .iter()
                .map(|m| m.as_f64().expect("margin"))
                .collect();
            let got = greedy(&model, &ids(&case["prompt_ids"]), expected.len());
            let agree = got
                .iter()
                .zip(&expected)
                .take_while(|(g, e)| g == e)
                .count();
            let note = match margins.get(agree) {
                Some(m) if *m < NEAR_TIE => format!("then a near tie (margin {m})"),
                Some(m) => format!("then differs at margin {m}"),
                None => "all".to_string(),
            };
            eprintln!(
                "{name} {}: {agree}/{} tokens agree, {note}",
                case["prompt"],
                expected.len()
            );
        }
    }
}
