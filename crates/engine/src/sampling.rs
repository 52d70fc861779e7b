//! Choosing the next token from logits with Ollama's sampling options.
//!
//! Order, as in llama.cpp's default chain: repetition penalties, then (unless greedy)
//! top-k, typical-p, top-p, min-p, temperature, and a draw from the sequence's own
//! seeded generator. Temperature 0 is greedy. A constrained sequence's token mask comes
//! first of all: disallowed tokens are `-inf` before anything else looks at them.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Ollama's sampling options (`options` of generate/chat), with Ollama's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingOptions {
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub typical_p: f32,
    /// How many recent tokens the penalties look at (0 off, -1 the whole context).
    pub repeat_last_n: i32,
    pub repeat_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// `None` (or a negative seed on the wire) draws a random seed.
    pub seed: Option<u64>,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.0,
            typical_p: 1.0,
            repeat_last_n: 64,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
        }
    }
}

/// A sequence's sampler: options plus its own random generator.
pub struct Sampler {
    options: SamplingOptions,
    rng: StdRng,
}

#[derive(Clone, Copy)]
struct Candidate {
    id: u32,
    logit: f32,
    p: f32,
}

impl Sampler {
    pub fn new(options: SamplingOptions) -> Self {
        let rng = match options.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self { options, rng }
    }

    pub fn options(&self) -> &SamplingOptions {
        &self.options
    }

    /// Pick the next token. `history` is every token of the sequence so far (prompt and
    /// generated), `num_ctx` resolves `repeat_last_n = -1`.
    pub fn sample(&mut self, logits: &[f32], history: &[u32], num_ctx: usize) -> u32 {
        self.sample_masked(logits, history, num_ctx, None)
    }

    /// As [`sample`](Self::sample), choosing only among the tokens whose bit is set in
    /// `allowed` (bit `i % 32` of word `i / 32` for token `i`; tokens past its end are
    /// disallowed).
    pub fn sample_masked(
        &mut self,
        logits: &[f32],
        history: &[u32],
        num_ctx: usize,
        allowed: Option<&[u32]>,
    ) -> u32 {
        let mut logits = logits.to_vec();
        if let Some(words) = allowed {
            apply_mask(&mut logits, words);
        }
        self.apply_penalties(&mut logits, history, num_ctx);
        let o = &self.options;
        if o.temperature <= 0.0 {
            return argmax(&logits);
        }
        let mut cands: Vec<Candidate> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &logit)| Candidate {
                id: i as u32,
                logit,
                p: 0.0,
            })
            .collect();
        if cands.is_empty() {
            return argmax(&logits);
        }
        // Only the top_k best need ordering: partition them out first (151k-token
        // vocabularies make a full sort cost milliseconds per token).
        if o.top_k > 0 && (o.top_k as usize) < cands.len() {
            let k = o.top_k as usize;
            cands.select_nth_unstable_by(k - 1, |a, b| b.logit.total_cmp(&a.logit));
            cands.truncate(k);
        }
        cands.sort_unstable_by(|a, b| b.logit.total_cmp(&a.logit));
        softmax(&mut cands, 1.0);
        if o.typical_p > 0.0 && o.typical_p < 1.0 {
            typical(&mut cands, o.typical_p);
        }
        if o.top_p > 0.0 && o.top_p < 1.0 {
            let mut cum = 0.0;
            let mut keep = cands.len();
            for (i, c) in cands.iter().enumerate() {
                cum += c.p;
                if cum >= o.top_p {
                    keep = i + 1;
                    break;
                }
            }
            cands.truncate(keep.max(1));
        }
        if o.min_p > 0.0 {
            let threshold = cands[0].p * o.min_p;
            let keep = cands.iter().take_while(|c| c.p >= threshold).count();
            cands.truncate(keep.max(1));
        }
        softmax(&mut cands, o.temperature);
        let r: f32 = self.rng.random();
        let mut cum = 0.0;
        for c in &cands {
            cum += c.p;
            if r < cum {
                return c.id;
            }
        }
        cands.last().map_or(0, |c| c.id)
    }

    fn apply_penalties(&self, logits: &mut [f32], history: &[u32], num_ctx: usize) {
        let o = &self.options;
        let window = match o.repeat_last_n {
            0 => return,
            n if n < 0 => num_ctx,
            n => n as usize,
        };
        if o.repeat_penalty == 1.0 && o.presence_penalty == 0.0 && o.frequency_penalty == 0.0 {
            return;
        }
        let start = history.len().saturating_sub(window);
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for &t in &history[start..] {
            *counts.entry(t).or_default() += 1;
        }
        for (&id, &count) in &counts {
            let Some(l) = logits.get_mut(id as usize) else {
                continue;
            };
            if o.repeat_penalty != 1.0 && o.repeat_penalty > 0.0 {
                *l = if *l > 0.0 {
                    *l / o.repeat_penalty
                } else {
                    *l * o.repeat_penalty
                };
            }
            *l -= count as f32 * o.frequency_penalty + o.presence_penalty;
        }
    }
}

/// Set every logit whose bit in `words` is clear to `-inf`.
fn apply_mask(logits: &mut [f32], words: &[u32]) {
    for (chunk, i) in logits.chunks_mut(32).zip(0..) {
        let word = words.get(i).copied().unwrap_or(0);
        if word == u32::MAX {
            continue;
        }
        for (bit, l) in chunk.iter_mut().enumerate() {
            if word & (1 << bit) == 0 {
                *l = f32::NEG_INFINITY;
            }
        }
    }
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, l) in logits.iter().enumerate() {
        if *l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Probabilities of sorted candidates at `temperature`.
fn softmax(cands: &mut [Candidate], temperature: f32) {
    let max = cands.first().map_or(0.0, |c| c.logit) / temperature;
    let mut sum = 0.0;
    for c in cands.iter_mut() {
        c.p = (c.logit / temperature - max).exp();
        sum += c.p;
    }
    for c in cands.iter_mut() {
        c.p /= sum;
    }
}

/// Locally typical sampling: keep the tokens whose surprise is closest to the entropy
/// until their mass reaches `p`.
fn typical(cands: &mut Vec<Candidate>, p: f32) {
    let entropy: f32 = cands
        .iter()
        .filter(|c| c.p > 0.0)
        .map(|c| -c.p * c.p.ln())
        .sum();
    let mut order: Vec<(f32, Candidate)> = cands
        .iter()
        .map(|c| ((-c.p.max(f32::MIN_POSITIVE).ln() - entropy).abs(), *c))
        .collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut cum = 0.0;
    let mut kept = Vec::new();
    for (_, c) in order {
        cum += c.p;
        kept.push(c);
        if cum >= p {
            break;
        }
    }
    kept.sort_unstable_by(|a, b| b.logit.total_cmp(&a.logit));
    *cands = kept;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(temperature: f32, seed: u64) -> SamplingOptions {
        SamplingOptions {
            temperature,
            seed: Some(seed),
            ..Default::default()
        }
    }

    #[test]
    fn temperature_zero_is_argmax() {
        let mut s = Sampler::new(opts(0.0, 1));
        assert_eq!(s.sample(&[0.1, 3.0, 2.0], &[], 10), 1);
    }

    #[test]
    fn the_mask_comes_before_everything() {
        // Token 1 is best but masked out; token 33 (second word) is allowed.
        let mut logits = vec![0.0f32; 40];
        logits[1] = 9.0;
        logits[33] = 1.0;
        logits[5] = 2.0;
        let allowed = [1 << 5, 1 << 1];
        let mut greedy = Sampler::new(opts(0.0, 1));
        assert_eq!(greedy.sample_masked(&logits, &[], 10, Some(&allowed)), 5);
        // A penalty cannot bring a masked token back, at any temperature.
        let mut s = Sampler::new(SamplingOptions {
            repeat_penalty: 0.5,
            ..opts(2.0, 3)
        });
        for _ in 0..50 {
            let t = s.sample_masked(&logits, &[1, 2], 10, Some(&allowed));
            assert!(t == 5 || t == 33, "{t}");
        }
        // Tokens past the mask's end are disallowed.
        let short = [1u32 << 1];
        assert_eq!(greedy.sample_masked(&logits, &[], 10, Some(&short)), 1);
        logits[1] = -1.0;
        logits[39] = 5.0;
        assert_eq!(greedy.sample_masked(&logits, &[], 10, Some(&short)), 1);
    }

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = |seed| {
            let mut s = Sampler::new(opts(1.0, seed));
            (0..20)
                .map(|_| s.sample(&logits, &[], 10))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(SamplingOptions {
            top_k: 1,
            ..opts(1.5, 7)
        });
        for _ in 0..10 {
            assert_eq!(s.sample(&[0.0, 1.0, 0.9], &[], 10), 1);
        }
    }

    #[test]
    fn repeat_penalty_discourages_seen_tokens() {
        let mut s = Sampler::new(SamplingOptions {
            repeat_penalty: 2.0,
            ..opts(0.0, 1)
        });
        // token 1 was seen: 3.0 / 2 = 1.5 < 2.0
        assert_eq!(s.sample(&[0.0, 3.0, 2.0], &[1], 10), 2);
    }

    #[test]
    fn presence_and_frequency_penalties_subtract() {
        let mut s = Sampler::new(SamplingOptions {
            presence_penalty: 0.5,
            frequency_penalty: 0.5,
            ..opts(0.0, 1)
        });
        // token 1 seen twice: 3.0 - (2 * 0.5 + 0.5) = 1.5 < 2.0
        assert_eq!(s.sample(&[0.0, 3.0, 2.0], &[1, 1], 10), 2);
    }

    #[test]
    fn min_p_and_top_p_keep_the_best() {
        let logits = [10.0, 0.0, 0.0, 0.0];
        let mut s = Sampler::new(SamplingOptions {
            min_p: 0.5,
            ..opts(1.0, 3)
        });
        for _ in 0..10 {
            assert_eq!(s.sample(&logits, &[], 10), 0);
        }
        let mut s = Sampler::new(SamplingOptions {
            top_p: 0.5,
            ..opts(1.0, 3)
        });
        for _ in 0..10 {
            assert_eq!(s.sample(&logits, &[], 10), 0);
        }
    }

    #[test]
    fn typical_p_keeps_some_candidates() {
        let logits: Vec<f32> = (0..50).map(|i| -(i as f32) * 0.1).collect();
        let mut s = Sampler::new(SamplingOptions {
            typical_p: 0.5,
            ..opts(1.0, 9)
        });
        let t = s.sample(&logits, &[], 10);
        assert!((t as usize) < 50);
    }
}
