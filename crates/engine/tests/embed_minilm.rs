//! The real all-MiniLM-L6-v2, converted to GGUF as `/api/create` does, embeds as
//! sentence-transformers does: its WordPiece token ids equal those of the model's own
//! `tokenizer.json` (run by the `tokenizers` crate), and the reference cosine of two
//! related sentences is reproduced.

use std::collections::BTreeMap;
use std::path::PathBuf;

use wick_engine::convert::bert_to_gguf;
use wick_engine::{Device, Model};

fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("WICK_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models-cache"))
        .join("all-minilm-l6-v2");
    assert!(dir.exists(), "run scripts/fetch-models.sh");
    dir
}

fn load() -> (Model, tempfile::NamedTempFile) {
    let dir = minilm_dir();
    let files: BTreeMap<String, PathBuf> = [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "1_Pooling/config.json",
    ]
    .into_iter()
    .map(|n| (n.to_string(), dir.join(n)))
    .collect();
    let out = tempfile::NamedTempFile::new().expect("tmp");
    bert_to_gguf(&files, out.path()).expect("convert");
    let model = Model::load_with_threads(out.path(), &Device::Cpu, 2).expect("load");
    (model, out)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

const TEXTS: &[&str] = &[
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome!",
    "Héllo, WORLD... naïve café; 東京 co-operation's 12,345 tokens\tand\nlines",
    "",
];

#[test]
fn minilm_tokenizes_like_its_tokenizer_json_and_embeds_like_the_reference() {
    let (model, _file) = load();
    assert!(model.is_encoder());
    assert_eq!(model.context_length(), 512);
    let mut reference =
        tokenizers::Tokenizer::from_file(minilm_dir().join("tokenizer.json")).expect("hf");
    // The file pads and cuts to 128 tokens for training; compare the plain ids.
    reference.with_padding(None);
    reference.with_truncation(None).expect("no truncation");
    let mut inputs = Vec::new();
    for text in TEXTS {
        let (ids, cut) = model
            .tokenizer
            .encode_for_embedding(text, 512, true)
            .expect("encode")
            .expect("fits");
        assert!(!cut);
        let want = reference.encode(*text, true).expect("hf encode");
        assert_eq!(ids, want.get_ids(), "{text:?}");
        inputs.push(ids);
    }
    // Too long: cut to the limit with [CLS] and [SEP] kept, or refused.
    let long = "word ".repeat(600);
    let (ids, cut) = model
        .tokenizer
        .encode_for_embedding(&long, 512, true)
        .expect("encode")
        .expect("cut");
    assert!(cut);
    assert_eq!(ids.len(), 512);
    assert_eq!((ids[0], ids[511]), (101, 102));
    assert!(model
        .tokenizer
        .encode_for_embedding(&long, 512, false)
        .expect("encode")
        .is_none());

    let slices: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
    let vectors = model.embed(&slices, 2).expect("embed");
    for v in &vectors {
        assert_eq!(v.len(), 384);
        let norm: f64 = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-4,
            "bert output is unit length: {norm}"
        );
    }
    // sentence-transformers gives 0.755 for this pair.
    let related = cosine(&vectors[0], &vectors[1]);
    assert!((related - 0.755).abs() < 0.01, "cosine {related}");
    let unrelated = cosine(&vectors[0], &vectors[2]);
    eprintln!("related {related:.4}, unrelated {unrelated:.4}");
    assert!(unrelated < 0.2, "unrelated cosine {unrelated}");
}
