//! BERT's WordPiece tokenizer from a `bert`-type GGUF vocabulary, as llama.cpp's
//! converter writes it: a piece that starts a word carries the phantom space `▁`, a
//! piece that continues one is bare (Hugging Face's `##` prefix removed), and bracketed
//! specials (`[CLS]`, `[SEP]`, `[UNK]`, ...) stay as they are.
//!
//! The vocabulary is mapped back to Hugging Face's form and run through the `tokenizers`
//! crate's BERT pipeline: normalizer (clean text, Chinese characters apart, accents
//! stripped and lowercased unless `wick.tokenizer.lowercase` is false), BERT's
//! whitespace-and-punctuation pre-tokenizer and WordPiece with `[UNK]`.

use std::collections::HashSet;

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{AddedToken, Tokenizer};

use super::{string_array, Encoder, GgufTokenizer, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED};
use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;

const PHANTOM_SPACE: char = '\u{2581}';

/// Whether a GGUF token is a bracketed special (`[CLS]`), kept as is by the converter.
fn is_bracketed(t: &str) -> bool {
    t.starts_with('[') && t.ends_with(']')
}

/// A GGUF WordPiece token in Hugging Face's spelling: `▁word` -> `word`, `iece` ->
/// `##iece`, `[CLS]` -> `[CLS]`.
fn hf_piece(t: &str) -> String {
    if is_bracketed(t) {
        t.to_string()
    } else if let Some(rest) = t.strip_prefix(PHANTOM_SPACE) {
        rest.to_string()
    } else {
        format!("##{t}")
    }
}

pub(super) fn from_gguf(gguf: &GgufFile) -> Result<GgufTokenizer> {
    let tokens = string_array(gguf, "tokenizer.ggml.tokens")?;
    let token_types: Vec<i32> = match gguf.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?
            .iter()
            .map(|t| t.to_i32().unwrap_or(1))
            .collect(),
        None => vec![1; tokens.len()],
    };
    let type_of = |i: usize| token_types.get(i).copied().unwrap_or(1);
    let special: Vec<bool> = (0..tokens.len())
        .map(|i| {
            let ty = type_of(i);
            ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED
        })
        .collect();

    let mut vocab = serde_json::Map::new();
    let mut seen = HashSet::new();
    for (i, t) in tokens.iter().enumerate() {
        let piece = hf_piece(t);
        if seen.insert(piece.clone()) {
            vocab.insert(piece, serde_json::Value::from(i as u32));
        }
    }
    let unk = tokens
        .iter()
        .find(|t| *t == "[UNK]")
        .cloned()
        .unwrap_or_else(|| "[UNK]".to_string());
    // The `tokenizers` crate builds a WordPiece with a given vocabulary from its JSON.
    let spec = serde_json::json!({
        "type": "WordPiece",
        "unk_token": unk,
        "continuing_subword_prefix": "##",
        "max_input_chars_per_word": 100,
        "vocab": vocab,
    })
    .to_string();
    let model: WordPiece = serde_json::from_str(&spec)
        .map_err(|e| EngineError::Tokenizer(format!("WordPiece vocabulary: {e}")))?;

    let lowercase = gguf
        .get("wick.tokenizer.lowercase")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(true);
    let mut inner = Tokenizer::new(model);
    inner.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)));
    inner.with_pre_tokenizer(Some(BertPreTokenizer));
    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(&special)
        .filter(|(_, s)| **s)
        .map(|(t, _)| AddedToken::from(t.clone(), true))
        .collect();
    inner.add_special_tokens(&specials);

    let token_bytes = tokens
        .iter()
        .zip(&special)
        .map(|(t, s)| match (s, t.strip_prefix(PHANTOM_SPACE)) {
            (false, Some(rest)) => format!(" {rest}").into_bytes(),
            _ => t.as_bytes().to_vec(),
        })
        .collect();

    let id = |key: &str| gguf.get(key).and_then(|v| v.to_u32().ok());
    let id_of_text = |text: &str| tokens.iter().position(|t| t == text).map(|i| i as u32);
    let flag = |key: &str| gguf.get(key).and_then(|v| v.to_bool().ok()).unwrap_or(true);
    let cls = id("tokenizer.ggml.cls_token_id")
        .or_else(|| id("tokenizer.ggml.bos_token_id"))
        .or_else(|| id_of_text("[CLS]"));
    let sep = id("tokenizer.ggml.seperator_token_id")
        .or_else(|| id("tokenizer.ggml.eos_token_id"))
        .or_else(|| id_of_text("[SEP]"));
    let embedding_ends = (
        cls.filter(|_| flag("tokenizer.ggml.add_bos_token")),
        sep.filter(|_| flag("tokenizer.ggml.add_eos_token")),
    );
    if let Some(bad) = [embedding_ends.0, embedding_ends.1]
        .into_iter()
        .flatten()
        .find(|&i| i as usize >= tokens.len())
    {
        return Err(EngineError::Tokenizer(format!(
            "special token id {bad} is outside the vocabulary"
        )));
    }
    Ok(GgufTokenizer {
        inner: Encoder::Hf(Box::new(inner)),
        token_bytes,
        special,
        bos_token_id: cls,
        eos_token_id: sep,
        // Text is never generated with an encoder: nothing is prepended by `encode`.
        add_bos: false,
        end_of_generation: sep.into_iter().collect(),
        fim_tokens: None,
        embedding_ends,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_map_back_to_hugging_face_spelling() {
        assert_eq!(hf_piece("\u{2581}the"), "the");
        assert_eq!(hf_piece("ing"), "##ing");
        assert_eq!(hf_piece("[CLS]"), "[CLS]");
        assert_eq!(hf_piece("["), "##[");
        assert_eq!(hf_piece("\u{2581}["), "[");
    }
}
