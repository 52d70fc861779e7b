//! A tokenizer built from GGUF metadata (`tokenizer.ggml.*`), reproducing llama.cpp's
//! token ids, plus byte-exact detokenization for streaming.
//!
//! `gpt2`-type vocabularies become a byte-level BPE from `tokens` + `merges`, with the
//! pre-tokenizer chosen by `tokenizer.ggml.pre`; control and user-defined tokens become
//! special added tokens so they are matched whole inside prompts. `bert`-type
//! vocabularies (sentence-embedding encoders) become a WordPiece ([`wordpiece`]).
//! `llama`-type (SentencePiece) vocabularies run llama.cpp's own merge procedure
//! ([`spm`]), scores and byte fallback included.

use std::collections::HashSet;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;

mod spm;
mod wordpiece;

pub(crate) const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub(crate) const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// o200k's split (`gpt-4o`, gpt-oss), in llama.cpp's spelling: a letter that is not
/// ASCII `a-z` counts as upper case, one that is not `A-Z` as lower case.
pub(crate) const GPT4O_PATTERN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-2's split, which llama.cpp's `gpt-2` pre-tokenizer (and the second step of
/// `smollm`'s) uses.
const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// llama.cpp's splits for a BPE vocabulary with no (or the `default`) pre-tokenizer,
/// applied one after the other.
const DEFAULT_PATTERNS: &[&str] = &[
    r"[\p{P}\$\+<=>\^~\|]+",
    GPT2_PATTERN,
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
];

/// The `tokenizer.ggml.pre` values of BPE vocabularies wick tokenizes as llama.cpp does.
pub const KNOWN_PRE_TOKENIZERS: &[&str] = &[
    "default",
    "gpt-2",
    "qwen2",
    "deepseek-r1-qwen",
    "llama-bpe",
    "llama3",
    "smaug-bpe",
    "smollm",
    "starcoder",
    "refact",
    "gpt-4o",
];

/// GGUF `tokenizer.ggml.token_type` values.
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;
const TOKEN_TYPE_UNUSED: i32 = 5;

/// Token texts llama.cpp treats as end-of-generation, and therefore as control tokens,
/// whatever type the GGUF gives them (`llama-vocab.cpp`).
const END_OF_GENERATION_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// Fill-in-the-middle token texts llama.cpp promotes to control tokens; the last three
/// also end generation.
const FIM_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<|fim_suffix|>",
    "<|fim_middle|>",
    "<|fim_pad|>",
    "<|fim_repo|>",
    "<|file_sep|>",
];
const FIM_END_TEXTS: &[&str] = &["<|fim_pad|>", "<|fim_repo|>", "<|file_sep|>"];

/// How text becomes ids.
enum Encoder {
    /// The `tokenizers` crate (BPE, WordPiece).
    Hf(Box<Tokenizer>),
    /// llama.cpp's SentencePiece procedure.
    Spm(Box<spm::Spm>),
}

/// A model's tokenizer: encoding through `tokenizers` or [`spm`], decoding to raw bytes.
pub struct GgufTokenizer {
    inner: Encoder,
    /// The bytes each token stands for (special tokens: their text).
    token_bytes: Vec<Vec<u8>>,
    /// Control and user-defined tokens (SentencePiece: control and unknown only):
    /// never text a grammar may produce.
    special: Vec<bool>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub add_bos: bool,
    /// Tokens that end generation (EOS, EOT, `<|im_end|>`, ...).
    pub end_of_generation: HashSet<u32>,
    /// Texts of the FIM tokens when the vocabulary has them.
    pub fim_tokens: Option<(String, String, String)>,
    /// The tokens an embedding input starts and ends with (BERT's `[CLS]` and `[SEP]`;
    /// a decoder's BOS, and its EOS when the GGUF asks for one).
    pub embedding_ends: (Option<u32>, Option<u32>),
}

/// Whether the file's tokenizer is one wick builds, without building it: the model
/// kind, and for BPE the pre-tokenizer (so `/api/create` refuses what would fail at
/// first use).
pub fn check_tokenizer(gguf: &GgufFile) -> Result<()> {
    match gguf.get_str("tokenizer.ggml.model").unwrap_or("") {
        "gpt2" => {
            let pre = gguf.get_str("tokenizer.ggml.pre").unwrap_or("default");
            pre_tokenizer_for(pre).map(|_| ())
        }
        "bert" | "llama" => Ok(()),
        model => Err(unsupported_model(model)),
    }
}

fn unsupported_model(model: &str) -> EngineError {
    EngineError::Tokenizer(format!(
        "tokenizer model '{model}' is not supported yet (only 'gpt2' BPE, \
         'llama' SentencePiece and 'bert' WordPiece)"
    ))
}

impl GgufTokenizer {
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        match gguf.get_str("tokenizer.ggml.model").unwrap_or("") {
            "gpt2" => Self::byte_level_bpe(gguf),
            "bert" => wordpiece::from_gguf(gguf),
            "llama" => spm::from_gguf(gguf),
            model => Err(unsupported_model(model)),
        }
    }

    fn byte_level_bpe(gguf: &GgufFile) -> Result<Self> {
        let tokens = string_array(gguf, "tokenizer.ggml.tokens")?;
        let merges = string_array(gguf, "tokenizer.ggml.merges")?;
        let mut token_types = token_types(gguf, tokens.len())?;
        let pre = gguf.get_str("tokenizer.ggml.pre").unwrap_or("default");
        promote_control_looking(&tokens, &mut token_types);

        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges: tokenizers::models::bpe::Merges = merges
            .iter()
            .filter_map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tokenizer_for(pre)?));
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(token_types.iter())
            .filter(|(_, t)| **t == TOKEN_TYPE_CONTROL || **t == TOKEN_TYPE_USER_DEFINED)
            .map(|(text, _)| AddedToken::from(text.clone(), true))
            .collect();
        inner.add_special_tokens(&specials);

        let special = token_types
            .iter()
            .map(|&t| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
            .collect();
        let byte_decoder = byte_decoder_table();
        let token_bytes = tokens
            .iter()
            .zip(token_types.iter())
            .map(|(text, ty)| match *ty {
                TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED => text.as_bytes().to_vec(),
                TOKEN_TYPE_UNUSED => Vec::new(),
                _ => text
                    .chars()
                    .map(|c| byte_decoder.get(&c).copied().unwrap_or(b'?'))
                    .collect(),
            })
            .collect();

        let id = |key: &str| gguf.get(key).and_then(|v| v.to_u32().ok());
        let bos_token_id = id("tokenizer.ggml.bos_token_id");
        let eos_token_id = id("tokenizer.ggml.eos_token_id");
        let add_bos = gguf
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        let (mut end_of_generation, fim_tokens) = eog_and_fim(&tokens);
        end_of_generation.extend(
            [
                eos_token_id,
                id("tokenizer.ggml.eot_token_id"),
                id("tokenizer.ggml.eom_token_id"),
            ]
            .into_iter()
            .flatten(),
        );
        let add_eos = gguf
            .get("tokenizer.ggml.add_eos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        let embedding_ends = (
            bos_token_id.filter(|_| add_bos),
            eos_token_id.filter(|_| add_eos),
        );
        Ok(Self {
            inner: Encoder::Hf(Box::new(inner)),
            token_bytes,
            special,
            bos_token_id,
            eos_token_id,
            add_bos,
            end_of_generation,
            fim_tokens,
            embedding_ends,
        })
    }

    /// The tokens of one embedding input: its text between [`Self::embedding_ends`],
    /// the text cut to `max_len` tokens in all when `truncate` (else `None` when it is
    /// longer). Returns the tokens and whether the text was cut.
    pub fn encode_for_embedding(
        &self,
        text: &str,
        max_len: usize,
        truncate: bool,
    ) -> Result<Option<(Vec<u32>, bool)>> {
        let body = self.encode_text(text)?;
        let (start, end) = self.embedding_ends;
        let ends = start.is_some() as usize + end.is_some() as usize;
        let room = max_len.saturating_sub(ends);
        if body.len() > room && !truncate {
            return Ok(None);
        }
        let cut = body.len() > room;
        let mut ids = Vec::with_capacity(body.len().min(room) + ends);
        ids.extend(start);
        ids.extend_from_slice(&body[..body.len().min(room)]);
        ids.extend(end);
        Ok(Some((ids, cut)))
    }

    /// Token ids for `text`, special tokens matched whole; BOS added when the model asks
    /// for it and `add_bos` is true. (An EOS the GGUF asks for is added only to
    /// embedding inputs, [`Self::embedding_ends`].)
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let body = self.encode_text(text)?;
        let mut ids = Vec::with_capacity(body.len() + 1);
        if add_bos && self.add_bos {
            if let Some(bos) = self.bos_token_id {
                ids.push(bos);
            }
        }
        ids.extend_from_slice(&body);
        Ok(ids)
    }

    /// Token ids for `text` alone, special tokens matched whole.
    fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        match &self.inner {
            Encoder::Hf(inner) => Ok(inner
                .encode_fast(text, false)
                .map_err(|e| EngineError::Tokenizer(e.to_string()))?
                .get_ids()
                .to_vec()),
            Encoder::Spm(spm) => Ok(spm.encode(text)),
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// The raw bytes a token stands for (may be part of a UTF-8 character).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Decode a whole sequence (lossy for incomplete UTF-8). A SentencePiece vocabulary
    /// that adds a space in front of the text loses it again here, as in llama.cpp.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&i| self.token_bytes(i).iter().copied())
            .collect();
        if matches!(&self.inner, Encoder::Spm(spm) if spm.add_space_prefix)
            && bytes.first() == Some(&b' ')
        {
            bytes.remove(0);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Whether `id` is a control or user-defined token (its bytes are its name, not
    /// text the model writes). SentencePiece's user-defined pieces are text.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.contains(&id)
    }
}

/// `tokenizer.ggml.token_type` for each of `n` tokens (normal where it is missing).
fn token_types(gguf: &GgufFile, n: usize) -> Result<Vec<i32>> {
    let mut types: Vec<i32> = match gguf.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?
            .iter()
            .map(|t| t.to_i32().unwrap_or(1))
            .collect(),
        None => vec![1; n],
    };
    types.resize(n, 1);
    Ok(types)
}

/// Make end-of-generation and FIM tokens control tokens, whatever type the GGUF gives.
fn promote_control_looking(tokens: &[String], types: &mut [i32]) {
    for (text, ty) in tokens.iter().zip(types.iter_mut()) {
        let control_looking =
            END_OF_GENERATION_TEXTS.contains(&text.as_str()) || FIM_TEXTS.contains(&text.as_str());
        if control_looking && *ty != TOKEN_TYPE_CONTROL {
            tracing::debug!(token = %text, "treating control-looking token as control");
            *ty = TOKEN_TYPE_CONTROL;
        }
    }
}

/// The tokens whose text ends generation, and the FIM token texts when the vocabulary
/// has all three.
fn eog_and_fim(tokens: &[String]) -> (HashSet<u32>, Option<(String, String, String)>) {
    let end_of_generation = tokens
        .iter()
        .enumerate()
        .filter(|(_, text)| {
            END_OF_GENERATION_TEXTS.contains(&text.as_str())
                || FIM_END_TEXTS.contains(&text.as_str())
        })
        .map(|(i, _)| i as u32)
        .collect();
    let has = |t: &str| tokens.iter().any(|x| x == t);
    let fim_tokens = (has("<|fim_prefix|>") && has("<|fim_suffix|>") && has("<|fim_middle|>"))
        .then(|| {
            (
                "<|fim_prefix|>".to_string(),
                "<|fim_suffix|>".to_string(),
                "<|fim_middle|>".to_string(),
            )
        });
    (end_of_generation, fim_tokens)
}

fn string_array(gguf: &GgufFile, key: &str) -> Result<Vec<String>> {
    let values = gguf
        .get(key)
        .ok_or_else(|| EngineError::MissingMetadata(key.to_string()))?
        .to_vec()
        .map_err(|e| EngineError::Tokenizer(format!("{key}: {e}")))?;
    values
        .iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|e| EngineError::Tokenizer(format!("{key}: {e}")))
        })
        .collect()
}

fn pre_tokenizer_for(pre: &str) -> Result<PreTokenizerWrapper> {
    let splits = |patterns: &[&str]| -> Result<PreTokenizerWrapper> {
        let mut steps: Vec<PreTokenizerWrapper> = patterns
            .iter()
            .map(|pattern| {
                Split::new(
                    SplitPattern::Regex(pattern.to_string()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map(Into::into)
                .map_err(|e| EngineError::Tokenizer(e.to_string()))
            })
            .collect::<Result<_>>()?;
        steps.push(ByteLevel::new(false, false, false).into());
        Ok(Sequence::new(steps).into())
    };
    match pre {
        "qwen2" | "deepseek-r1-qwen" => splits(&[QWEN2_PATTERN]),
        "llama-bpe" | "llama3" | "smaug-bpe" => splits(&[LLAMA3_PATTERN]),
        "gpt-4o" => splits(&[GPT4O_PATTERN]),
        "smollm" | "starcoder" | "refact" => Ok(Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, false, true).into(),
        ])
        .into()),
        "gpt-2" => splits(&[GPT2_PATTERN]),
        "" | "default" => splits(DEFAULT_PATTERNS),
        other => Err(EngineError::Tokenizer(format!(
            "pre-tokenizer '{other}' is not supported yet (wick knows {})",
            KNOWN_PRE_TOKENIZERS.join(", ")
        ))),
    }
}

/// GPT-2's byte-to-unicode table, inverted: the printable character standing for each
/// byte back to the byte.
fn byte_decoder_table() -> std::collections::HashMap<char, u8> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    printable
        .into_iter()
        .zip(chars)
        .filter_map(|(b, c)| char::from_u32(c).map(|c| (c, b as u8)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_covers_every_byte_once() {
        let table = byte_decoder_table();
        assert_eq!(table.len(), 256);
        assert_eq!(table.get(&'Ġ'), Some(&b' '));
        assert_eq!(table.get(&'Ċ'), Some(&b'\n'));
        assert_eq!(table.get(&'a'), Some(&b'a'));
    }
}
