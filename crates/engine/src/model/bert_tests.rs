//! The encoder forward against a plain f64 forward written from the architecture's
//! definition, on tiny seeded `bert` and `nomic-bert` GGUF files written through the
//! real writer (so the real loader runs too); batched == one by one; pooling units.

use std::collections::BTreeMap;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use wick_kernels::synth::Rng;

use super::*;

const D: usize = 32;
const HEADS: usize = 4;
const FF: usize = 48;
const LAYERS: usize = 2;
const VOCAB: usize = 40;
const CTX: usize = 16;

/// Every tensor of a tiny model as f32 values with its shape (GGUF order: `[cols,
/// rows]` for matrices is handled by giving candle `(rows, cols)`).
type Weights = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn random_weights(nomic: bool, seed: u64) -> Weights {
    let mut rng = Rng::new(seed);
    let mut w = Weights::new();
    let mut put = |name: &str, shape: Vec<usize>, scale: f32, offset: f32| {
        let n = shape.iter().product();
        let values = (0..n)
            .map(|_| offset + scale * rng.range(-1.0, 1.0))
            .collect();
        w.insert(name.to_string(), (shape, values));
    };
    put("token_embd.weight", vec![VOCAB, D], 1.0, 0.0);
    put("token_types.weight", vec![2, D], 0.2, 0.0);
    if !nomic {
        put("position_embd.weight", vec![CTX, D], 0.3, 0.0);
    }
    put("token_embd_norm.weight", vec![D], 0.1, 1.0);
    put("token_embd_norm.bias", vec![D], 0.1, 0.0);
    for l in 0..LAYERS {
        let p = format!("blk.{l}");
        if nomic {
            put(&format!("{p}.attn_qkv.weight"), vec![3 * D, D], 0.3, 0.0);
            put(&format!("{p}.ffn_gate.weight"), vec![FF, D], 0.3, 0.0);
        } else {
            for m in ["attn_q", "attn_k", "attn_v"] {
                put(&format!("{p}.{m}.weight"), vec![D, D], 0.3, 0.0);
                put(&format!("{p}.{m}.bias"), vec![D], 0.1, 0.0);
            }
            put(&format!("{p}.attn_output.bias"), vec![D], 0.1, 0.0);
            put(&format!("{p}.ffn_up.bias"), vec![FF], 0.1, 0.0);
            put(&format!("{p}.ffn_down.bias"), vec![D], 0.1, 0.0);
        }
        put(&format!("{p}.attn_output.weight"), vec![D, D], 0.3, 0.0);
        put(&format!("{p}.ffn_up.weight"), vec![FF, D], 0.3, 0.0);
        put(&format!("{p}.ffn_down.weight"), vec![D, FF], 0.3, 0.0);
        for n in ["attn_output_norm", "layer_output_norm"] {
            put(&format!("{p}.{n}.weight"), vec![D], 0.1, 1.0);
            put(&format!("{p}.{n}.bias"), vec![D], 0.1, 0.0);
        }
    }
    w
}

fn write_gguf(arch: &str, pooling: u32, weights: &Weights, path: &std::path::Path) {
    let k = |s: &str| format!("{arch}.{s}");
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (k("block_count"), Value::U32(LAYERS as u32)),
        (k("context_length"), Value::U32(CTX as u32)),
        (k("embedding_length"), Value::U32(D as u32)),
        (k("feed_forward_length"), Value::U32(FF as u32)),
        (k("attention.head_count"), Value::U32(HEADS as u32)),
        (k("attention.layer_norm_epsilon"), Value::F32(1e-12)),
        (k("pooling_type"), Value::U32(pooling)),
        ("tokenizer.ggml.model".into(), Value::String("bert".into())),
    ];
    if arch == "nomic-bert" {
        meta.push((k("rope.freq_base"), Value::F32(1000.0)));
    }
    // A vocabulary: [PAD] [UNK] [CLS] [SEP] and word pieces.
    let mut tokens = vec!["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    for i in tokens.len()..VOCAB {
        tokens.push(format!("\u{2581}w{i}"));
    }
    let types = (0..VOCAB)
        .map(|i| Value::I32(if i < 4 { 3 } else { 1 }))
        .collect();
    meta.push((
        "tokenizer.ggml.tokens".into(),
        Value::Array(tokens.into_iter().map(Value::String).collect()),
    ));
    meta.push(("tokenizer.ggml.token_type".into(), Value::Array(types)));
    meta.push(("tokenizer.ggml.cls_token_id".into(), Value::U32(2)));
    meta.push(("tokenizer.ggml.seperator_token_id".into(), Value::U32(3)));
    let tensors: Vec<(String, QTensor)> = weights
        .iter()
        .map(|(name, (shape, values))| {
            let t =
                Tensor::from_vec(values.clone(), shape.as_slice(), &Device::Cpu).expect("tensor");
            (
                name.clone(),
                QTensor::quantize(&t, GgmlDType::F32).expect("q"),
            )
        })
        .collect();
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).expect("create");
    candle_core::quantized::gguf_file::write(&mut f, &meta_refs, &tensor_refs).expect("write");
}

fn load(arch: &str, pooling: u32, weights: &Weights) -> (EncoderModel, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("m.gguf");
    write_gguf(arch, pooling, weights, &path);
    let mut gguf = GgufFile::open(&path).expect("open");
    (
        EncoderModel::from_gguf(&mut gguf, arch, 2).expect("load"),
        dir,
    )
}

// ---- the f64 reference ------------------------------------------------------------

fn get(w: &Weights, name: &str) -> Vec<f64> {
    w[name].1.iter().map(|&v| v as f64).collect()
}

/// `y = W x + b` for a `rows x cols` weight.
fn linear(w: &Weights, name: &str, x: &[f64]) -> Vec<f64> {
    let (shape, _) = &w[&format!("{name}.weight")];
    let (rows, cols) = (shape[0], shape[1]);
    let m = get(w, &format!("{name}.weight"));
    let b = w
        .get(&format!("{name}.bias"))
        .map(|(_, b)| b.iter().map(|&v| v as f64).collect::<Vec<_>>());
    (0..rows)
        .map(|r| {
            let dot: f64 = (0..cols).map(|c| m[r * cols + c] * x[c]).sum();
            dot + b.as_ref().map_or(0.0, |b| b[r])
        })
        .collect()
}

fn norm(w: &Weights, name: &str, x: &[f64]) -> Vec<f64> {
    let (g, b) = (
        get(w, &format!("{name}.weight")),
        get(w, &format!("{name}.bias")),
    );
    let mean = x.iter().sum::<f64>() / x.len() as f64;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / x.len() as f64;
    x.iter()
        .enumerate()
        .map(|(i, v)| (v - mean) / (var + 1e-12).sqrt() * g[i] + b[i])
        .collect()
}

fn rope(x: &mut [f64], pos: usize) {
    let hd = D / HEADS;
    for head in x.chunks_mut(hd) {
        for i in 0..hd / 2 {
            let theta = pos as f64 * 1000f64.powf(-2.0 * i as f64 / hd as f64);
            let (a, b) = (head[i], head[i + hd / 2]);
            head[i] = a * theta.cos() - b * theta.sin();
            head[i + hd / 2] = a * theta.sin() + b * theta.cos();
        }
    }
}

fn reference(w: &Weights, nomic: bool, tokens: &[u32], pooling: Pooling) -> Vec<f64> {
    let t = tokens.len();
    let emb = get(w, "token_embd.weight");
    let types = get(w, "token_types.weight");
    let mut x: Vec<Vec<f64>> = tokens
        .iter()
        .enumerate()
        .map(|(p, &tok)| {
            let row: Vec<f64> = (0..D)
                .map(|i| {
                    let pos = if nomic {
                        0.0
                    } else {
                        get(w, "position_embd.weight")[p * D + i]
                    };
                    emb[tok as usize * D + i] + types[i] + pos
                })
                .collect();
            norm(w, "token_embd_norm", &row)
        })
        .collect();
    let hd = D / HEADS;
    for l in 0..LAYERS {
        let p = format!("blk.{l}");
        let (mut q, mut k, mut v) = (vec![], vec![], vec![]);
        for (pos, row) in x.iter().enumerate() {
            let (mut qi, mut ki, vi) = if nomic {
                let all = linear(w, &format!("{p}.attn_qkv"), row);
                (
                    all[..D].to_vec(),
                    all[D..2 * D].to_vec(),
                    all[2 * D..].to_vec(),
                )
            } else {
                (
                    linear(w, &format!("{p}.attn_q"), row),
                    linear(w, &format!("{p}.attn_k"), row),
                    linear(w, &format!("{p}.attn_v"), row),
                )
            };
            if nomic {
                rope(&mut qi, pos);
                rope(&mut ki, pos);
            }
            q.push(qi);
            k.push(ki);
            v.push(vi);
        }
        for i in 0..t {
            let mut att = vec![0.0; D];
            for h in 0..HEADS {
                let s = h * hd..(h + 1) * hd;
                let scores: Vec<f64> = (0..t)
                    .map(|j| {
                        q[i][s.clone()]
                            .iter()
                            .zip(&k[j][s.clone()])
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for j in 0..t {
                    for c in s.clone() {
                        att[c] += e[j] / z * v[j][c];
                    }
                }
            }
            let o = linear(w, &format!("{p}.attn_output"), &att);
            let res: Vec<f64> = x[i].iter().zip(&o).map(|(a, b)| a + b).collect();
            let h1 = norm(w, &format!("{p}.attn_output_norm"), &res);
            let up = linear(w, &format!("{p}.ffn_up"), &h1);
            let act: Vec<f64> = if nomic {
                let gate = linear(w, &format!("{p}.ffn_gate"), &h1);
                gate.iter()
                    .zip(&up)
                    .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                    .collect()
            } else {
                // GELU, tanh form, input and result rounded to f16 (as ggml's table).
                let f16 = |v: f64| half::f16::from_f64(v).to_f64();
                up.iter()
                    .map(|&u| {
                        let u = f16(u);
                        let c = (2.0 / std::f64::consts::PI).sqrt();
                        f16(0.5 * u * (1.0 + (c * (u + 0.044715 * u.powi(3))).tanh()))
                    })
                    .collect()
            };
            let down = linear(w, &format!("{p}.ffn_down"), &act);
            let res: Vec<f64> = h1.iter().zip(&down).map(|(a, b)| a + b).collect();
            x[i] = norm(w, &format!("{p}.layer_output_norm"), &res);
        }
        // (rows are updated in place: attention above used the layer's q/k/v only.)
    }
    let mut out = match pooling {
        Pooling::Cls => x[0].clone(),
        Pooling::Last => x[t - 1].clone(),
        Pooling::Mean => (0..D)
            .map(|c| x.iter().map(|r| r[c]).sum::<f64>() / t as f64)
            .collect(),
    };
    if !nomic {
        let n = out.iter().map(|v| v * v).sum::<f64>().sqrt();
        out.iter_mut().for_each(|v| *v /= n);
    }
    out
}

fn max_diff(a: &[f32], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max)
}

const INPUTS: &[&[u32]] = &[
    &[2, 7, 9, 11, 3],
    &[2, 5, 3],
    &[2, 30, 31, 32, 33, 34, 35, 3],
];

#[test]
fn bert_matches_an_f64_forward_for_every_pooling() {
    let w = random_weights(false, 11);
    for (value, pooling) in [(1, Pooling::Mean), (2, Pooling::Cls), (3, Pooling::Last)] {
        let (model, _dir) = load("bert", value, &w);
        assert!(model.config.normalize);
        let got = model.embed(INPUTS, 2).expect("embed");
        for (tokens, vec) in INPUTS.iter().zip(&got) {
            let want = reference(&w, false, tokens, pooling);
            let diff = max_diff(vec, &want);
            assert!(diff < 1e-4, "{pooling:?}: max difference {diff}");
        }
    }
}

#[test]
fn nomic_bert_matches_an_f64_forward_and_is_not_normalized() {
    let w = random_weights(true, 5);
    let (model, _dir) = load("nomic-bert", 1, &w);
    assert!(!model.config.normalize);
    let got = model.embed(INPUTS, 2).expect("embed");
    for (tokens, vec) in INPUTS.iter().zip(&got) {
        let want = reference(&w, true, tokens, Pooling::Mean);
        let diff = max_diff(vec, &want);
        assert!(diff < 1e-4, "max difference {diff}");
    }
}

#[test]
fn a_batch_equals_its_inputs_one_by_one_bit_for_bit() {
    for nomic in [false, true] {
        let w = random_weights(nomic, 3);
        let arch = if nomic { "nomic-bert" } else { "bert" };
        let (model, _dir) = load(arch, 1, &w);
        let batch = model.embed(INPUTS, 2).expect("batch");
        for (tokens, b) in INPUTS.iter().zip(&batch) {
            let one = model.embed(&[tokens], 1).expect("one");
            assert_eq!(&one[0], b, "{arch}");
        }
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let (model, _dir) = load("bert", 1, &random_weights(false, 1));
    assert!(model.embed(&[&[]], 1).is_err());
    assert!(model.embed(&[&[2, 99, 3]], 1).is_err());
    let long = vec![4u32; CTX + 1];
    assert!(model.embed(&[&long], 1).is_err());
}

#[test]
fn unknown_pooling_is_a_load_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("m.gguf");
    write_gguf("bert", 4, &random_weights(false, 1), &path);
    let mut gguf = GgufFile::open(&path).expect("open");
    let e = EncoderModel::from_gguf(&mut gguf, "bert", 1)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("pooling type 4"), "{e}");
}

#[test]
fn pooling_and_normalization() {
    let rows = [1.0f32, 2.0, 3.0, 4.0, 5.0, 9.0];
    let mut out = [0.0f32; 2];
    Pooling::Mean.pool(&rows, 2, &mut out);
    assert_eq!(out, [3.0, 5.0]);
    Pooling::Cls.pool(&rows, 2, &mut out);
    assert_eq!(out, [1.0, 2.0]);
    Pooling::Last.pool(&rows, 2, &mut out);
    assert_eq!(out, [5.0, 9.0]);
    let mut v = [3.0f32, 4.0];
    l2_normalize(&mut v);
    assert_eq!(v, [0.6, 0.8]);
    let mut zero = [0.0f32; 3];
    l2_normalize(&mut zero);
    assert_eq!(zero, [0.0; 3]);
}
