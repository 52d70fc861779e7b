//! SentencePiece vocabularies (`tokenizer.ggml.model = llama`, as Gemma and Llama 2 use
//! them), tokenized the way llama.cpp does it, so the ids are the same.
//!
//! Encoding a prompt has three steps:
//! 1. Special tokens are cut out of the text whole: every control, user-defined and
//!    unknown token, longest text first; each one splits the text pieces that remain
//!    around its left-to-right, non-overlapping occurrences. An Aho-Corasick pass finds
//!    which of them occur at all, so a prompt pays only for the specials it contains.
//! 2. Each remaining piece gets a leading space when the vocabulary asks for one
//!    (`tokenizer.ggml.add_space_prefix`, after the start or a special token), and its
//!    spaces become `▁`.
//! 3. The piece is split into characters, and adjacent symbols are merged while any
//!    pair's concatenation is in the vocabulary: always the pair whose merged token has
//!    the highest score, the leftmost on ties. A symbol that is not a token at the end
//!    (a lone character outside the vocabulary) becomes its UTF-8 bytes as `<0xNN>`
//!    tokens (byte fallback), or the unknown token when the vocabulary has no such
//!    byte token.
//!
//! Every merge produces a token, so the final symbols need no re-splitting. Decoding a
//! token gives its bytes: a normal piece with `▁` read as a space, a byte token its
//! byte, a control or user-defined token its own text.

use std::collections::{BinaryHeap, HashMap, HashSet};

use aho_corasick::AhoCorasick;

use super::{
    eog_and_fim, promote_control_looking, string_array, token_types, Encoder, GgufTokenizer,
    TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED,
};
use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;

/// SentencePiece's stand-in for a space.
const SPACE: &str = "\u{2581}";

const TOKEN_TYPE_NORMAL: i32 = 1;
const TOKEN_TYPE_UNKNOWN: i32 = 2;
const TOKEN_TYPE_BYTE: i32 = 6;

/// What a SentencePiece vocabulary needs beyond its tokens: read from the GGUF, or
/// written by hand in tests.
#[derive(Debug, Clone, Default)]
pub(super) struct SpmConfig {
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub unknown_token_id: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
}

/// The encoder of a SentencePiece vocabulary.
pub(super) struct Spm {
    /// Token text to id (the first id when a text repeats).
    ids: HashMap<Box<str>, u32>,
    scores: Vec<f32>,
    /// The token of each byte for byte fallback.
    byte_tokens: [Option<u32>; 256],
    unknown: Option<u32>,
    pub(super) add_space_prefix: bool,
    specials: Specials,
}

/// A piece of the prompt: text still to tokenize, or a special token cut out whole.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

/// The tokens matched whole in prompts, in the order they are cut out.
struct Specials {
    /// Over `texts`; `None` when there are no specials.
    finder: Option<AhoCorasick>,
    texts: Vec<Box<str>>,
    ids: Vec<u32>,
}

impl Specials {
    /// `tokens` as (id, text), any order; the longest text is cut first, lower ids first
    /// among equal lengths.
    fn new(mut tokens: Vec<(u32, &str)>) -> Result<Self> {
        tokens.retain(|(_, t)| !t.is_empty());
        tokens.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        let texts: Vec<Box<str>> = tokens.iter().map(|(_, t)| Box::from(*t)).collect();
        let ids = tokens.iter().map(|(id, _)| *id).collect();
        let finder = if texts.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::new(texts.iter().map(|t| t.as_bytes()))
                    .map_err(|e| EngineError::Tokenizer(format!("special tokens: {e}")))?,
            )
        };
        Ok(Self { finder, texts, ids })
    }

    /// `text` cut at every special token.
    fn partition<'t>(&self, text: &'t str) -> Vec<Fragment<'t>> {
        let mut fragments = vec![Fragment::Text(text)];
        let Some(finder) = &self.finder else {
            return fragments;
        };
        // Which specials occur anywhere (a special inside a piece occurs in the text).
        let mut present: Vec<usize> = finder
            .find_overlapping_iter(text)
            .map(|m| m.pattern().as_usize())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        // Pattern indices are already in cutting order.
        present.sort_unstable();
        for p in present {
            let (special, id) = (&*self.texts[p], self.ids[p]);
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                let Fragment::Text(piece) = fragment else {
                    next.push(fragment);
                    continue;
                };
                let mut rest = 0;
                for (at, _) in piece.match_indices(special) {
                    if at > rest {
                        next.push(Fragment::Text(&piece[rest..at]));
                    }
                    next.push(Fragment::Token(id));
                    rest = at + special.len();
                }
                if rest < piece.len() {
                    next.push(Fragment::Text(&piece[rest..]));
                }
            }
            fragments = next;
        }
        fragments
    }
}

/// One symbol of a piece being merged: a byte range of the piece, linked to its
/// neighbours; `len == 0` once merged into its left neighbour.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of two adjacent symbols into a token.
#[derive(PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// Bytes of the merged text: a stale candidate no longer has this size.
    size: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    /// Highest score first; the leftmost pair first on ties.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Spm {
    /// Token ids of `text`, special tokens matched whole; no BOS or EOS.
    pub(super) fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        if text.is_empty() {
            return out;
        }
        let mut after_special = true;
        for fragment in self.specials.partition(text) {
            match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    after_special = true;
                }
                Fragment::Text(piece) => {
                    let mut escaped = String::with_capacity(piece.len() + 3);
                    if self.add_space_prefix && after_special {
                        escaped.push_str(SPACE);
                    }
                    escaped.push_str(&piece.replace(' ', SPACE));
                    self.encode_piece(&escaped, &mut out);
                    after_special = false;
                }
            }
        }
        out
    }

    fn token(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    /// Merge the characters of one escaped piece into tokens, appended to `out`.
    fn encode_piece(&self, piece: &str, out: &mut Vec<u32>) {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(piece.len());
        for (start, c) in piece.char_indices() {
            let i = symbols.len();
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: Some(i + 1),
            });
        }
        if let Some(last) = symbols.last_mut() {
            last.next = None;
        }

        let mut queue = BinaryHeap::new();
        let candidate = |symbols: &[Symbol], left: Option<usize>, right: Option<usize>| {
            let (left, right) = (left?, right?);
            let start = symbols[left].start;
            let size = symbols[left].len + symbols[right].len;
            let id = self.token(piece.get(start..start + size)?)?;
            let score = self.scores.get(id as usize).copied().unwrap_or(0.0);
            Some(Bigram {
                score,
                left,
                right,
                size,
            })
        };
        for i in 1..symbols.len() {
            queue.extend(candidate(&symbols, Some(i - 1), Some(i)));
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
                continue;
            }
            symbols[b.left].len += r.len;
            symbols[b.right].len = 0;
            symbols[b.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(b.left);
            }
            queue.extend(candidate(&symbols, symbols[b.left].prev, Some(b.left)));
            queue.extend(candidate(&symbols, Some(b.left), symbols[b.left].next));
        }

        let mut at = (!symbols.is_empty()).then_some(0);
        while let Some(i) = at {
            let s = symbols[i];
            let text = &piece[s.start..s.start + s.len];
            match self.token(text) {
                Some(id) => out.push(id),
                None => out.extend(
                    text.bytes()
                        .filter_map(|b| self.byte_tokens[b as usize].or(self.unknown)),
                ),
            }
            at = s.next;
        }
    }
}

/// The byte a `<0xNN>` token stands for.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2)
        .then(|| u8::from_str_radix(hex, 16).ok())
        .flatten()
}

pub(super) fn from_gguf(gguf: &GgufFile) -> Result<GgufTokenizer> {
    let tokens = string_array(gguf, "tokenizer.ggml.tokens")?;
    let scores: Vec<f32> = match gguf.get("tokenizer.ggml.scores") {
        Some(v) => v
            .to_vec()
            .map_err(|e| EngineError::Tokenizer(format!("tokenizer.ggml.scores: {e}")))?
            .iter()
            .map(|s| {
                s.to_f32()
                    .or_else(|_| s.to_i32().map(|i| i as f32))
                    .map_err(|e| EngineError::Tokenizer(format!("tokenizer.ggml.scores: {e}")))
            })
            .collect::<Result<_>>()?,
        None => vec![0.0; tokens.len()],
    };
    if scores.len() < tokens.len() {
        return Err(EngineError::Tokenizer(format!(
            "{} scores for {} tokens",
            scores.len(),
            tokens.len()
        )));
    }
    let types = token_types(gguf, tokens.len())?;
    let id = |key: &str| gguf.get(key).and_then(|v| v.to_u32().ok());
    let flag = |key: &str, default: bool| {
        gguf.get(key)
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(default)
    };
    // llama.cpp's defaults for SentencePiece vocabularies, unless the GGUF says otherwise.
    let config = SpmConfig {
        bos_token_id: id("tokenizer.ggml.bos_token_id").or(Some(1)),
        eos_token_id: id("tokenizer.ggml.eos_token_id").or(Some(2)),
        unknown_token_id: id("tokenizer.ggml.unknown_token_id").or(Some(0)),
        add_bos: flag("tokenizer.ggml.add_bos_token", true),
        add_eos: flag("tokenizer.ggml.add_eos_token", false),
        add_space_prefix: flag("tokenizer.ggml.add_space_prefix", true),
    };
    let mut tokenizer = from_parts(tokens, scores, types, config)?;
    let extra = [
        id("tokenizer.ggml.eot_token_id"),
        id("tokenizer.ggml.eom_token_id"),
    ];
    tokenizer
        .end_of_generation
        .extend(extra.into_iter().flatten());
    Ok(tokenizer)
}

/// A SentencePiece tokenizer from its vocabulary (texts, scores, GGUF token types).
pub(super) fn from_parts(
    tokens: Vec<String>,
    scores: Vec<f32>,
    mut types: Vec<i32>,
    config: SpmConfig,
) -> Result<GgufTokenizer> {
    let n = tokens.len();
    types.resize(n, TOKEN_TYPE_NORMAL);
    promote_control_looking(&tokens, &mut types);
    let in_vocab = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
    let (bos, eos, unknown) = (
        in_vocab(config.bos_token_id),
        in_vocab(config.eos_token_id),
        in_vocab(config.unknown_token_id),
    );
    if config.add_bos && bos.is_none() {
        return Err(EngineError::Tokenizer(
            "add_bos_token is set but the vocabulary has no BOS token".into(),
        ));
    }

    let mut ids: HashMap<Box<str>, u32> = HashMap::with_capacity(n);
    for (i, t) in tokens.iter().enumerate() {
        ids.entry(Box::from(t.as_str())).or_insert(i as u32);
    }
    let mut byte_tokens = [None; 256];
    for (b, slot) in byte_tokens.iter_mut().enumerate() {
        *slot = ids
            .get(format!("<0x{b:02X}>").as_str())
            .copied()
            .or_else(|| {
                // A vocabulary without byte tokens may still hold the ASCII character.
                char::from_u32(b as u32)
                    .filter(char::is_ascii)
                    .and_then(|c| ids.get(c.to_string().as_str()).copied())
            });
    }

    let whole = |ty: i32| {
        matches!(
            ty,
            TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED | TOKEN_TYPE_UNKNOWN
        )
    };
    let specials = Specials::new(
        tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (_, &ty))| whole(ty))
            .map(|(i, (t, _))| (i as u32, t.as_str()))
            .collect(),
    )?;
    let token_bytes: Vec<Vec<u8>> = tokens
        .iter()
        .zip(&types)
        .map(|(t, &ty)| match ty {
            TOKEN_TYPE_NORMAL => t.replace(SPACE, " ").into_bytes(),
            TOKEN_TYPE_BYTE => parse_byte_token(t).map(|b| vec![b]).unwrap_or_default(),
            ty if whole(ty) => t.as_bytes().to_vec(),
            _ => Vec::new(),
        })
        .collect();
    // User-defined pieces (Gemma's runs of spaces and newlines) are text the model
    // writes; only control and unknown tokens are names.
    let special = types
        .iter()
        .map(|&ty| ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_UNKNOWN)
        .collect();
    let (mut end_of_generation, fim_tokens) = eog_and_fim(&tokens);
    end_of_generation.extend(eos);

    let spm = Spm {
        ids,
        scores,
        byte_tokens,
        unknown,
        add_space_prefix: config.add_space_prefix,
        specials,
    };
    Ok(GgufTokenizer {
        inner: Encoder::Spm(Box::new(spm)),
        token_bytes,
        special,
        bos_token_id: bos,
        eos_token_id: eos,
        add_bos: config.add_bos,
        end_of_generation,
        fim_tokens,
        embedding_ends: (
            bos.filter(|_| config.add_bos),
            eos.filter(|_| config.add_eos),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small vocabulary: specials, the 256 byte tokens, and pieces with scores.
    fn tiny() -> GgufTokenizer {
        let mut tokens: Vec<String> = ["<pad>", "<eos>", "<bos>", "<unk>"]
            .map(String::from)
            .to_vec();
        let mut types = vec![TOKEN_TYPE_CONTROL; 4];
        for (text, ty) in [
            ("<start_of_turn>", TOKEN_TYPE_CONTROL),
            ("<end_of_turn>", TOKEN_TYPE_CONTROL),
            ("\n", TOKEN_TYPE_USER_DEFINED),
            ("  ", TOKEN_TYPE_USER_DEFINED),
        ] {
            tokens.push(text.into());
            types.push(ty);
        }
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(TOKEN_TYPE_BYTE);
        }
        let pieces = [
            "▁", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "llo", "hello", "▁w", "▁wor", "or",
            "▁world", "ld", "é",
        ];
        for p in pieces {
            tokens.push(p.into());
            types.push(TOKEN_TYPE_NORMAL);
        }
        let mut scores = vec![-1000.0; tokens.len()];
        let n = scores.len();
        for (k, s) in scores[n - pieces.len()..].iter_mut().enumerate() {
            *s = -(k as f32);
        }
        let config = SpmConfig {
            bos_token_id: Some(2),
            eos_token_id: Some(1),
            unknown_token_id: Some(3),
            add_bos: true,
            ..SpmConfig::default()
        };
        from_parts(tokens, scores, types, config).expect("tiny vocabulary")
    }

    fn id(t: &GgufTokenizer, text: &str) -> u32 {
        let Encoder::Spm(spm) = &t.inner else {
            panic!("not SentencePiece")
        };
        spm.token(text).expect("token in vocabulary")
    }

    #[test]
    fn merges_follow_scores() {
        let t = tiny();
        let got = t.encode("hello world", false).expect("encode");
        assert_eq!(got, vec![id(&t, "hello"), id(&t, "▁world")]);
        assert_eq!(t.decode(&got), "hello world");
        let with_bos = t.encode("hello", true).expect("encode");
        assert_eq!(with_bos, vec![2, id(&t, "hello")]);
    }

    #[test]
    fn unknown_characters_fall_back_to_bytes() {
        let t = tiny();
        // 'ß' (C3 9F) and '€' (E2 82 AC) are not pieces; 'é' is.
        let got = t.encode("ß€é", false).expect("encode");
        let bytes: Vec<u32> = [0xC3u8, 0x9F, 0xE2, 0x82, 0xAC]
            .iter()
            .map(|b| id(&t, &format!("<0x{b:02X}>")))
            .collect();
        assert_eq!(&got[..5], &bytes[..]);
        assert_eq!(got[5], id(&t, "é"));
        assert_eq!(t.decode(&got), "ß€é");
    }

    #[test]
    fn byte_tokens_decode_into_utf8() {
        let t = tiny();
        let ids: Vec<u32> = "日本🎉"
            .bytes()
            .map(|b| id(&t, &format!("<0x{b:02X}>")))
            .collect();
        assert_eq!(t.token_bytes(ids[0]), &[0xE6]);
        assert_eq!(t.decode(&ids), "日本🎉");
        // A lone continuation byte is not valid UTF-8 on its own.
        assert_eq!(t.decode(&ids[1..2]), "\u{FFFD}");
    }

    #[test]
    fn specials_are_matched_whole() {
        let t = tiny();
        let text = "<start_of_turn>hello\n<end_of_turn>  <bos>";
        let got = t.encode(text, false).expect("encode");
        let want = vec![
            id(&t, "<start_of_turn>"),
            id(&t, "hello"),
            id(&t, "\n"),
            id(&t, "<end_of_turn>"),
            id(&t, "  "),
            2,
        ];
        assert_eq!(got, want);
        assert_eq!(t.decode(&got), text);
        assert!(t.is_end_of_generation(id(&t, "<end_of_turn>")));
        assert!(t.is_end_of_generation(1));
        assert!(t.is_special(id(&t, "<start_of_turn>")));
        // User-defined pieces are text, not names.
        assert!(!t.is_special(id(&t, "\n")));
    }

    #[test]
    fn longer_specials_are_cut_first() {
        let specials = Specials::new(vec![(7, "ab"), (8, "abc"), (9, "c")]).expect("specials");
        assert_eq!(
            specials.partition("xabcab c"),
            vec![
                Fragment::Text("x"),
                Fragment::Token(8),
                Fragment::Token(7),
                Fragment::Text(" "),
                Fragment::Token(9),
            ]
        );
        assert_eq!(specials.partition("xyz"), vec![Fragment::Text("xyz")]);
    }

    #[test]
    fn space_prefix_after_start_and_specials() {
        let mut t = tiny();
        if let Encoder::Spm(spm) = &mut t.inner {
            spm.add_space_prefix = true;
        }
        let got = t.encode("world<end_of_turn>world", false).expect("encode");
        let w = id(&t, "▁world");
        assert_eq!(got, vec![w, id(&t, "<end_of_turn>"), w]);
        // Decoding drops the space the encoder added in front.
        assert_eq!(t.decode(&[w]), "world");
    }

    #[test]
    fn byte_token_texts() {
        assert_eq!(parse_byte_token("<0x0A>"), Some(b'\n'));
        assert_eq!(parse_byte_token("<0xff>"), Some(0xFF));
        assert_eq!(parse_byte_token("<0x1>"), None);
        assert_eq!(parse_byte_token("0x41"), None);
    }
}
