//! gpt-oss as Ollama's own files carry it: `general.architecture` `gptoss` with its keys
//! under `gptoss.*`, and (converted from OpenAI's original checkpoint) one fused
//! `attn_qkv` projection with one fused bias. llama.cpp does not load such a file, so
//! the reference is the same weights written the way llama.cpp's converter writes them:
//! wick's tiny seeded gpt-oss (proven against llama.cpp in `family_parity.rs`), its
//! q/k/v widened to F32 in both files so that fusing them changes no value. Fed the
//! same tokens one at a time, the two files give the same logits bit for bit on the
//! kernels, and within candle's matmul rounding on the candle path.

mod common;

use std::borrow::Cow;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use common::scripted::tokens;
use wick_engine::gguf::{GgmlType, GgufFile, TensorOut};
use wick_engine::model::CandleArithmetic;
use wick_engine::{tiny_models, Device, Model};

/// The tiny model's tensors and metadata, its q/k/v (and their biases) as f32 values.
struct Source {
    metadata: Vec<(String, Value)>,
    /// Every tensor but q/k/v: name, type, dims, bytes.
    others: Vec<(String, GgmlType, Vec<usize>, Vec<u8>)>,
    /// Per layer: q, k, v as (rows, cols, values) and their biases.
    qkv: Vec<[(usize, usize, Vec<f32>); 3]>,
    biases: Vec<[Vec<f32>; 3]>,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn values(gguf: &mut GgufFile, name: &str) -> Vec<f32> {
    gguf.tensor(name, &Device::Cpu)
        .and_then(|t| Ok(t.dequantize(&Device::Cpu)?))
        .and_then(|t| Ok(t.flatten_all()?.to_vec1::<f32>()?))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn read(path: &Path) -> Source {
    let mut gguf = GgufFile::open(path).expect("open the tiny gpt-oss");
    let metadata = gguf.metadata_entries(|_| true);
    let n_layer = gguf.get_u32("gpt-oss.block_count").expect("block count") as usize;
    let mut names: Vec<String> = gguf.content.tensor_infos.keys().cloned().collect();
    names.sort();
    let is_qkv = |n: &str| {
        ["attn_q.", "attn_k.", "attn_v."]
            .iter()
            .any(|p| n.contains(p))
    };
    let mut others = Vec::new();
    for name in names.iter().filter(|n| !is_qkv(n)) {
        let raw = gguf.raw_tensor(name).expect("tensor");
        others.push((name.clone(), raw.dtype, raw.dims, raw.data.to_vec()));
    }
    let mut qkv = Vec::new();
    let mut biases = Vec::new();
    for il in 0..n_layer {
        let part = |gguf: &mut GgufFile, p: &str| {
            let name = format!("blk.{il}.{p}.weight");
            let dims = gguf.raw_tensor(&name).expect("tensor").dims;
            (dims[0], dims[1], values(gguf, &name))
        };
        qkv.push([
            part(&mut gguf, "attn_q"),
            part(&mut gguf, "attn_k"),
            part(&mut gguf, "attn_v"),
        ]);
        let bias = |gguf: &mut GgufFile, p: &str| values(gguf, &format!("blk.{il}.{p}.bias"));
        biases.push([
            bias(&mut gguf, "attn_q"),
            bias(&mut gguf, "attn_k"),
            bias(&mut gguf, "attn_v"),
        ]);
    }
    Source {
        metadata,
        others,
        qkv,
        biases,
    }
}

/// Write the source as llama.cpp names it (`fused: false`) or as Ollama's gpt-oss
/// files do (`fused: true`).
fn write(src: &Source, fused: bool, dst: &Path) {
    let metadata: Vec<(String, Value)> = src
        .metadata
        .iter()
        .map(|(k, v)| match (fused, k.as_str()) {
            (true, "general.architecture") => (k.clone(), Value::String("gptoss".into())),
            (true, _) => match k.strip_prefix("gpt-oss.") {
                Some(rest) => (format!("gptoss.{rest}"), v.clone()),
                None => (k.clone(), v.clone()),
            },
            (false, _) => (k.clone(), v.clone()),
        })
        .collect();
    let mut tensors: Vec<TensorOut> = src
        .others
        .iter()
        .map(|(name, ty, dims, data)| TensorOut {
            name: name.clone(),
            ty: *ty,
            dims: dims.clone(),
            data: Cow::Borrowed(data),
        })
        .collect();
    let f32_tensor = |name: String, dims: Vec<usize>, v: &[f32]| TensorOut {
        name,
        ty: GgmlType::from(candle_core::quantized::GgmlDType::F32),
        dims,
        data: Cow::Owned(f32_bytes(v)),
    };
    for (il, (parts, biases)) in src.qkv.iter().zip(&src.biases).enumerate() {
        if fused {
            let rows: usize = parts.iter().map(|p| p.0).sum();
            let cols = parts[0].1;
            let w: Vec<f32> = parts.iter().flat_map(|p| p.2.iter().copied()).collect();
            let b: Vec<f32> = biases.iter().flat_map(|b| b.iter().copied()).collect();
            tensors.push(f32_tensor(
                format!("blk.{il}.attn_qkv.weight"),
                vec![rows, cols],
                &w,
            ));
            tensors.push(f32_tensor(
                format!("blk.{il}.attn_qkv.bias"),
                vec![rows],
                &b,
            ));
        } else {
            for (p, (part, bias)) in ["attn_q", "attn_k", "attn_v"]
                .iter()
                .zip(parts.iter().zip(biases))
            {
                tensors.push(f32_tensor(
                    format!("blk.{il}.{p}.weight"),
                    vec![part.0, part.1],
                    &part.2,
                ));
                tensors.push(f32_tensor(
                    format!("blk.{il}.{p}.bias"),
                    vec![bias.len()],
                    bias,
                ));
            }
        }
    }
    wick_engine::gguf::write_gguf_tensors(dst, &metadata, &tensors).expect("write");
}

/// Logits after each of `ids`, fed one at a time.
fn run(model: &Model, ids: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = model.new_cache(256).expect("cache");
    ids.iter()
        .map(|&t| model.forward(&[t], &mut cache).expect("forward"))
        .collect()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

#[test]
fn ollamas_gptoss_files_run_as_llamacpps_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tiny = dir.path().join("tiny.gguf");
    tiny_models::write("gpt-oss", &common::smollm2_gguf(), &tiny).expect("tiny gpt-oss");
    let src = read(&tiny);
    let (llamacpp, ollama) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
    write(&src, false, &llamacpp);
    write(&src, true, &ollama);
    assert_eq!(
        GgufFile::open(&ollama)
            .expect("open")
            .architecture()
            .expect("arch"),
        "gptoss"
    );
    wick_engine::model::check_supported(&ollama).expect("/api/create would take it");

    let a = Model::load_with_threads(&llamacpp, &Device::Cpu, 2).expect("llama.cpp's naming");
    let b = Model::load_with_threads(&ollama, &Device::Cpu, 2).expect("Ollama's naming");
    let ids = tokens(7, 24, a.tokenizer.vocab_size());
    let (la, lb) = (run(&a, &ids), run(&b, &ids));
    assert_eq!(la, lb, "the kernels give other logits for Ollama's file");

    let a = Model::load_on_candle(&llamacpp, &Device::Cpu, CandleArithmetic::Quantized)
        .expect("llama.cpp's naming on candle");
    let b = Model::load_on_candle(&ollama, &Device::Cpu, CandleArithmetic::Quantized)
        .expect("Ollama's naming on candle");
    let d = max_diff(&run(&a, &ids), &run(&b, &ids));
    assert!(d <= 1e-4, "the candle path moves by {d} on Ollama's file");
}
