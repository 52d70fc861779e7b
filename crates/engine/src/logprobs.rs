//! Per-token log probabilities, as Ollama reports them: log-softmax of the model's raw
//! logits (before penalties, temperature and grammar masks), for the sampled token and
//! the `k` most likely ones.
//!
//! Delivery rule: a token's entry goes out with the text chunk that completes its
//! text. Text is held back while a UTF-8 character or a possible stop string is
//! unfinished, and the entries wait with it. A token whose text runs into a stop string
//! is not reported (neither is its text), nor is an end-of-generation token; at the end
//! of a generation every token still waiting is reported with the final text.

use std::collections::VecDeque;

/// Most alternatives a request may ask for (Ollama's and OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// One alternative at a position.
#[derive(Debug, Clone, PartialEq)]
pub struct TopLogprob {
    /// The token's text (lossy UTF-8 of `bytes`).
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// The sampled token at one position, with its most likely alternatives (best first).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
    pub top_logprobs: Vec<TopLogprob>,
}

/// Log probability of `token` and of the `top` best tokens under `logits`. One pass
/// keeps a running log-sum-exp and the `top` best in a small sorted buffer.
/// `bytes_of` gives a token's bytes (e.g. [`GgufTokenizer::token_bytes`](crate::GgufTokenizer::token_bytes)).
pub fn token_logprobs<'a>(
    logits: &[f32],
    token: u32,
    top: usize,
    bytes_of: impl Fn(u32) -> &'a [u8],
) -> TokenLogprob {
    let top = top.min(MAX_TOP_LOGPROBS);
    let mut max = f32::NEG_INFINITY;
    let mut sum = 0.0f32;
    // Best first; ties keep the lower id first.
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(top + 1);
    for (i, &x) in logits.iter().enumerate() {
        if x.is_nan() || x == f32::NEG_INFINITY {
            continue;
        }
        if x > max {
            sum = sum * (max - x).exp() + 1.0;
            max = x;
        } else {
            sum += (x - max).exp();
        }
        if top > 0 && (best.len() < top || best.last().is_some_and(|b| x > b.0)) {
            let at = best.partition_point(|b| b.0 >= x);
            best.insert(at, (x, i as u32));
            best.truncate(top);
        }
    }
    let lse = max + sum.ln();
    let logprob_of = |x: f32| x - lse;
    let raw = logits
        .get(token as usize)
        .copied()
        .unwrap_or(f32::NEG_INFINITY);
    let entry = |id: u32| {
        let bytes = bytes_of(id).to_vec();
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    };
    let (text, bytes) = entry(token);
    TokenLogprob {
        token: text,
        bytes,
        logprob: logprob_of(raw),
        top_logprobs: best
            .into_iter()
            .map(|(x, id)| {
                let (token, bytes) = entry(id);
                TopLogprob {
                    token,
                    bytes,
                    logprob: logprob_of(x),
                }
            })
            .collect(),
    }
}

/// Entries waiting for their text to be sent, each with the offset in the stream's
/// decoded text where that text ends (`None` while its last character is unfinished).
pub(crate) struct LogprobQueue {
    pub top: usize,
    waiting: VecDeque<(Option<usize>, TokenLogprob)>,
}

impl LogprobQueue {
    pub(crate) fn new(top: usize) -> Self {
        Self {
            top: top.min(MAX_TOP_LOGPROBS),
            waiting: VecDeque::new(),
        }
    }

    /// A token was pushed into the text stream; `decoded_end` is the decoded length
    /// when its bytes completed every character (`None` when one is unfinished).
    pub(crate) fn push(&mut self, entry: TokenLogprob, decoded_end: Option<usize>) {
        if let Some(end) = decoded_end {
            // This token finished the characters of the ones before it, too.
            for (e, _) in self.waiting.iter_mut().rev() {
                if e.is_some() {
                    break;
                }
                *e = Some(end);
            }
        }
        self.waiting.push_back((decoded_end, entry));
    }

    /// Entries whose text lies within the first `emitted` bytes sent.
    pub(crate) fn release(&mut self, emitted: usize) -> Vec<TokenLogprob> {
        let n = self
            .waiting
            .iter()
            .take_while(|(end, _)| end.is_some_and(|e| e <= emitted))
            .count();
        self.waiting.drain(..n).map(|(_, e)| e).collect()
    }

    /// End of generation: everything still waiting.
    pub(crate) fn release_all(&mut self) -> Vec<TokenLogprob> {
        self.waiting.drain(..).map(|(_, e)| e).collect()
    }

    /// A stop string cut the text: what ran into it is dropped.
    pub(crate) fn release_before_stop(&mut self, emitted: usize) -> Vec<TokenLogprob> {
        let out = self.release(emitted);
        self.waiting.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text_stream::TextStream;

    fn bytes_of(id: u32) -> &'static [u8] {
        const WORDS: [&[u8]; 5] = [b"a", b"b", b"c", b"d", b"e"];
        WORDS.get(id as usize).copied().unwrap_or(&[])
    }

    #[test]
    fn log_softmax_sums_to_one_and_top_is_ordered() {
        let logits = [1.0f32, 3.0, -2.0, 3.0, 0.5];
        let lp = token_logprobs(&logits, 4, 5, bytes_of);
        let total: f32 = lp.top_logprobs.iter().map(|t| t.logprob.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        let order: Vec<&str> = lp.top_logprobs.iter().map(|t| t.token.as_str()).collect();
        assert_eq!(order, ["b", "d", "a", "e", "c"], "best first, ties by id");
        assert_eq!(lp.token, "e");
        assert_eq!(lp.bytes, b"e");
        let reference = 0.5 - logits.iter().map(|x| x.exp()).sum::<f32>().ln();
        assert!((lp.logprob - reference).abs() < 1e-5);
        assert_eq!(lp.top_logprobs[3].logprob, lp.logprob);
    }

    #[test]
    fn top_zero_and_masked_logits() {
        let logits = [f32::NEG_INFINITY, 0.0, 0.0];
        let lp = token_logprobs(&logits, 1, 0, bytes_of);
        assert!(lp.top_logprobs.is_empty());
        assert!((lp.logprob - 0.5f32.ln()).abs() < 1e-6);
        // Impossible tokens are not alternatives.
        let lp = token_logprobs(&logits, 2, 20, bytes_of);
        assert_eq!(lp.top_logprobs.len(), 2);
        assert_eq!(lp.top_logprobs[1].token, "c");
    }

    fn entry(name: &str) -> TokenLogprob {
        TokenLogprob {
            token: name.into(),
            bytes: name.as_bytes().to_vec(),
            logprob: 0.0,
            top_logprobs: Vec::new(),
        }
    }

    /// Push tokens through a stream and a queue as a sequence does.
    fn run(stops: &[&str], tokens: &[&[u8]]) -> Vec<(String, Vec<String>)> {
        let mut stream = TextStream::new(stops.iter().map(|s| s.to_string()).collect());
        let mut q = LogprobQueue::new(0);
        let mut out = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            let chunk = stream.push(t);
            let end = (!stream.char_unfinished()).then(|| stream.decoded_len());
            q.push(entry(&format!("t{i}")), end);
            let lps = if chunk.stopped {
                q.release_before_stop(stream.emitted_len())
            } else {
                q.release(stream.emitted_len())
            };
            let names = lps.into_iter().map(|l| l.token).collect();
            out.push((chunk.text, names));
            if chunk.stopped {
                return out;
            }
        }
        let text = stream.finish();
        out.push((text, q.release_all().into_iter().map(|l| l.token).collect()));
        out
    }

    fn pair(text: &str, names: &[&str]) -> (String, Vec<String>) {
        (text.into(), names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn entries_follow_their_text() {
        let e = "é".as_bytes();
        // A character split over two tokens: both go out with it.
        let got = run(&[], &[b"a", &e[..1], &e[1..], b"b"]);
        assert_eq!(
            got,
            [
                pair("a", &["t0"]),
                pair("", &[]),
                pair("é", &["t1", "t2"]),
                pair("b", &["t3"]),
                pair("", &[]),
            ]
        );
    }

    #[test]
    fn held_back_text_holds_its_entries_and_stops_swallow_them() {
        let got = run(&["<end>"], &[b"hi <", b"e", b"x", b" <en", b"d>"]);
        assert_eq!(
            got,
            [
                pair("hi ", &[]),
                pair("", &[]),
                pair("<ex", &["t0", "t1", "t2"]),
                pair(" ", &[]),
                pair("", &[]),
            ]
        );
        // Unfinished at the end: released with the final text.
        let got = run(&["<end>"], &[b"a <e"]);
        assert_eq!(got, [pair("a ", &[]), pair("<e", &["t0"])]);
    }
}
