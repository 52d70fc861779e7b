//! A SentencePiece tokenizer (`tokenizer.model`, the protobuf `ModelProto` of which
//! only the pieces matter, with `tokenizer_config.json`) as GGUF `llama` tokenizer
//! metadata, as llama.cpp's converter writes it: one entry per id up to the model's
//! vocabulary size (missing ids become `[PAD<id>]`, unused), each piece's score and
//! type, the added tokens of `added_tokens.json` and of `tokenizer_config.json`'s
//! `added_tokens_decoder` retyped control or user-defined with score -1000, and the
//! special vocabulary ([`super::special_vocab`]).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::quantized::gguf_file::Value;
use prost::Message;
use serde_json::Value as Json;

use super::special_vocab::{looks_special, special_vocab};
use super::{
    read_json, TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL, TOKEN_TYPE_UNUSED, TOKEN_TYPE_USER_DEFINED,
};
use crate::error::{EngineError, Result};

const TOKEN_TYPE_UNKNOWN: i32 = 2;
const TOKEN_TYPE_BYTE: i32 = 6;
/// The score llama.cpp gives added tokens.
const ADDED_SCORE: f32 = -1000.0;

/// SentencePiece's `ModelProto`: its pieces, and of the trainer and normalizer specs
/// the fields a reader needs to make sense of them (the rest is skipped on reading).
#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(message, repeated, tag = "1")]
    pub pieces: Vec<Piece>,
    #[prost(message, optional, tag = "2")]
    pub trainer_spec: Option<TrainerSpec>,
    #[prost(message, optional, tag = "3")]
    pub normalizer_spec: Option<NormalizerSpec>,
}

/// `TrainerSpec`: `model_type` 1 unigram, 2 BPE; the special ids (-1 for none).
#[derive(Clone, PartialEq, Message)]
pub struct TrainerSpec {
    #[prost(int32, optional, tag = "3")]
    pub model_type: Option<i32>,
    #[prost(bool, optional, tag = "35")]
    pub byte_fallback: Option<bool>,
    #[prost(int32, optional, tag = "40")]
    pub unk_id: Option<i32>,
    #[prost(int32, optional, tag = "41")]
    pub bos_id: Option<i32>,
    #[prost(int32, optional, tag = "42")]
    pub eos_id: Option<i32>,
    #[prost(int32, optional, tag = "43")]
    pub pad_id: Option<i32>,
}

/// `NormalizerSpec`: the rule set's name and the whitespace handling.
#[derive(Clone, PartialEq, Message)]
pub struct NormalizerSpec {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(bool, optional, tag = "3")]
    pub add_dummy_prefix: Option<bool>,
    #[prost(bool, optional, tag = "4")]
    pub remove_extra_whitespaces: Option<bool>,
    #[prost(bool, optional, tag = "5")]
    pub escape_whitespaces: Option<bool>,
}

/// One `ModelProto.SentencePiece`; `kind` is its `Type` (1 normal, 2 unknown,
/// 3 control, 4 user-defined, 5 unused, 6 byte; absent means normal).
#[derive(Clone, PartialEq, Message)]
pub struct Piece {
    #[prost(string, optional, tag = "1")]
    pub piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    pub score: Option<f32>,
    #[prost(int32, optional, tag = "3")]
    pub kind: Option<i32>,
}

impl ModelProto {
    /// Parse `tokenizer.model`.
    pub fn decode_model(bytes: &[u8]) -> Result<Self> {
        let model = Self::decode(bytes)
            .map_err(|e| EngineError::InvalidModel(format!("tokenizer.model: {e}")))?;
        if model.pieces.is_empty() {
            return Err(EngineError::InvalidModel(
                "tokenizer.model holds no pieces".into(),
            ));
        }
        Ok(model)
    }

    /// The bytes of `tokenizer.model`.
    pub fn encode_model(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

/// The GGUF tokenizer keys for the directory's SentencePiece tokenizer; `vocab_size`
/// is the model's (`config.json`), if it says.
pub(super) fn sentencepiece_metadata(
    files: &BTreeMap<String, PathBuf>,
    config: &Json,
    vocab_size: Option<usize>,
) -> Result<Vec<(String, Value)>> {
    let path = files
        .get("tokenizer.model")
        .ok_or_else(|| EngineError::InvalidModel("tokenizer.model is missing".into()))?;
    let bytes = std::fs::read(path).map_err(|source| EngineError::Io {
        path: "tokenizer.model".into(),
        source,
    })?;
    let model = ModelProto::decode_model(&bytes)?;
    let tokenizer_config = read_json(files, "tokenizer_config.json")?.unwrap_or(Json::Null);

    let n = vocab_size.unwrap_or(model.pieces.len());
    let mut tokens: Vec<String> = (0..n).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10_000.0f32; n];
    let mut types = vec![TOKEN_TYPE_UNUSED; n];
    for (id, piece) in model.pieces.iter().enumerate().take(n) {
        tokens[id] = piece.piece.clone().unwrap_or_default();
        scores[id] = piece.score.unwrap_or(0.0);
        // llama.cpp asks the processor is-unknown / is-control / is-unused / is-byte;
        // anything else, user-defined pieces included, is normal.
        types[id] = match piece.kind.unwrap_or(TOKEN_TYPE_NORMAL) {
            k @ (TOKEN_TYPE_UNKNOWN | TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNUSED | TOKEN_TYPE_BYTE) => {
                k
            }
            _ => TOKEN_TYPE_NORMAL,
        };
    }
    if let Some(added) = read_json(files, "added_tokens.json")? {
        for (text, id) in added.as_object().into_iter().flatten() {
            let Some(id) = id.as_u64().map(|v| v as usize).filter(|&id| id < n) else {
                continue; // out of range: llama.cpp ignores it too
            };
            tokens[id] = text.clone();
            scores[id] = ADDED_SCORE;
            types[id] = TOKEN_TYPE_USER_DEFINED;
        }
    }
    for (id, data) in tokenizer_config["added_tokens_decoder"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(content)) = (
            id.parse::<usize>().ok().filter(|&id| id < n),
            data["content"].as_str(),
        ) else {
            return Err(EngineError::InvalidModel(format!(
                "tokenizer_config.json: added token {id} has no content or is past the vocabulary"
            )));
        };
        if data["special"].as_bool() == Some(true) || looks_special(content) {
            tokens[id] = content.to_string();
            types[id] = TOKEN_TYPE_CONTROL;
        } else {
            tokens[id] = content.replace('\u{2581}', " ");
            types[id] = TOKEN_TYPE_USER_DEFINED;
        }
        scores[id] = ADDED_SCORE;
    }

    let mut id_of: HashMap<&str, u32> = HashMap::new();
    for (id, token) in tokens.iter().enumerate() {
        id_of.entry(token.as_str()).or_insert(id as u32);
    }
    let mut m: Vec<(String, Value)> = vec![
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        ("tokenizer.ggml.pre".into(), Value::String("default".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.iter().cloned().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.scores".into(),
            Value::Array(scores.into_iter().map(Value::F32).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
    ];
    m.extend(special_vocab(files, config, &tokenizer_config, &id_of)?);
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn piece(text: &str, score: f32, kind: Option<i32>) -> Piece {
        Piece {
            piece: Some(text.into()),
            score: Some(score),
            kind,
        }
    }

    #[test]
    fn pieces_round_trip_through_the_protobuf() {
        let model = ModelProto {
            pieces: vec![
                piece("<unk>", 0.0, Some(TOKEN_TYPE_UNKNOWN)),
                piece("\u{2581}the", -1.5, None),
                piece("<0x0A>", 0.0, Some(TOKEN_TYPE_BYTE)),
            ],
            trainer_spec: Some(TrainerSpec {
                model_type: Some(2),
                byte_fallback: Some(true),
                ..TrainerSpec::default()
            }),
            normalizer_spec: None,
        };
        let back = ModelProto::decode_model(&model.encode_model()).expect("decode");
        assert_eq!(back, model);
    }

    #[test]
    fn added_tokens_are_retyped_and_the_vocabulary_padded() {
        let dir = tempfile::tempdir().expect("tmp");
        let model = ModelProto {
            pieces: vec![
                piece("<pad>", 0.0, Some(TOKEN_TYPE_CONTROL)),
                piece("\u{2581}\u{2581}", -3.0, Some(TOKEN_TYPE_USER_DEFINED)),
                piece("<start_of_turn>", 0.0, Some(TOKEN_TYPE_USER_DEFINED)),
                piece("a", -2.0, None),
            ],
            ..ModelProto::default()
        };
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("write");
            (name.to_string(), path)
        };
        let files: BTreeMap<String, PathBuf> = [
            write("tokenizer.model", &model.encode_model()),
            write(
                "tokenizer_config.json",
                br#"{"added_tokens_decoder": {
                    "1": {"content": "\u2581\u2581", "special": false},
                    "2": {"content": "<start_of_turn>", "special": true}},
                    "pad_token": "<pad>", "add_bos_token": true}"#,
            ),
        ]
        .into_iter()
        .collect();
        let m = sentencepiece_metadata(&files, &Json::Null, Some(6)).expect("metadata");
        let get = |k: &str| {
            m.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| format!("{v:?}"))
        };
        let tokens = get("tokenizer.ggml.tokens").expect("tokens");
        assert!(tokens.contains(r#"String("  ")"#), "{tokens}");
        assert!(tokens.contains(r#"String("[PAD5]")"#), "{tokens}");
        assert_eq!(
            get("tokenizer.ggml.token_type").as_deref(),
            Some("Array([I32(3), I32(4), I32(3), I32(1), I32(5), I32(5)])")
        );
        assert_eq!(
            get("tokenizer.ggml.scores").as_deref(),
            Some(
                "Array([F32(0.0), F32(-1000.0), F32(-1000.0), F32(-2.0), F32(-10000.0), F32(-10000.0)])"
            )
        );
        assert_eq!(
            get("tokenizer.ggml.padding_token_id").as_deref(),
            Some("U32(0)")
        );
    }

    /// A real `tokenizer.model` trained by Google's sentencepiece, read as llama.cpp's
    /// converter reads it through sentencepiece (scripts/record_sentencepiece_fixture.py).
    #[test]
    fn a_trained_sentencepiece_model_reads_as_sentencepiece_reports_it() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/fixtures");
        let files: BTreeMap<String, PathBuf> = [(
            "tokenizer.model".to_string(),
            fixtures.join("sentencepiece_tiny.model"),
        )]
        .into_iter()
        .collect();
        let want: Json = serde_json::from_str(
            &std::fs::read_to_string(fixtures.join("sentencepiece_tiny.json")).expect("fixture"),
        )
        .expect("fixture JSON");
        let want = want["pieces"].as_array().expect("pieces");
        let m = sentencepiece_metadata(&files, &Json::Null, None).expect("metadata");
        let array = |k: &str| match m.iter().find(|(n, _)| n == k) {
            Some((_, Value::Array(a))) => a.clone(),
            _ => panic!("{k} missing"),
        };
        let (tokens, scores, types) = (
            array("tokenizer.ggml.tokens"),
            array("tokenizer.ggml.scores"),
            array("tokenizer.ggml.token_type"),
        );
        assert_eq!(tokens.len(), want.len());
        for (id, w) in want.iter().enumerate() {
            assert_eq!(
                tokens[id].to_string().ok(),
                w[0].as_str().map(String::from).as_ref(),
                "{id}"
            );
            assert_eq!(
                scores[id].to_f32().ok(),
                w[1].as_f64().map(|v| v as f32),
                "{id}"
            );
            assert_eq!(
                types[id].to_i32().ok(),
                w[2].as_i64().map(|v| v as i32),
                "{id}"
            );
        }
        // Byte pieces, control, unknown and normal pieces are all there.
        for kind in [2, 3, 6, 1] {
            assert!(
                types.iter().any(|t| t.to_i32().ok() == Some(kind)),
                "type {kind}"
            );
        }
    }

    #[test]
    fn garbage_is_not_a_tokenizer() {
        assert!(ModelProto::decode_model(b"\xff\xff\xff").is_err());
        assert!(ModelProto::decode_model(b"").is_err());
    }
}
