//! Scripted runs of several sequences through `Model::forward_batch`, joining and
//! leaving a running batch as the batcher would have them, and the same sequences run
//! alone: what the batching invariants of the engine's tests compare.
#![allow(dead_code)]

use wick_engine::kv_cache::KvCache;
use wick_engine::{BatchInput, Model};

/// Seeded token ids below `vocab`.
pub fn tokens(seed: u64, n: usize, vocab: usize) -> Vec<u32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % vocab as u64) as u32
        })
        .collect()
}

pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// The best logit minus the second best.
pub fn margin(v: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &x in v {
        if x > a {
            b = a;
            a = x;
        } else if x > b {
            b = x;
        }
    }
    a - b
}

/// One sequence of a scripted run: its prompt, fed in chunks of `chunk` tokens from
/// step `join` on, then `decode` greedy tokens one per step.
pub struct Script {
    pub prompt: Vec<u32>,
    pub chunk: usize,
    pub join: usize,
    pub decode: usize,
}

/// What one sequence saw: the tokens it was fed (prompt then greedy picks) and the
/// logits after each prompt end and each decoded token.
#[derive(Default)]
pub struct Trace {
    pub fed: Vec<u32>,
    pub logits: Vec<Vec<f32>>,
}

/// Run `script` alone, with the same steps as in the batch: the prompt in its chunks,
/// then one token per step.
pub fn solo(model: &Model, s: &Script) -> Trace {
    let mut cache = model.new_cache(256).expect("cache");
    let mut trace = Trace::default();
    let mut logits = Vec::new();
    for chunk in s.prompt.chunks(s.chunk) {
        logits = model.forward(chunk, &mut cache).expect("prompt");
    }
    trace.fed.extend(&s.prompt);
    for _ in 0..s.decode {
        let next = argmax(&logits);
        trace.logits.push(logits);
        trace.fed.push(next);
        logits = model.forward(&[next], &mut cache).expect("decode");
    }
    trace.logits.push(logits);
    trace
}

/// Run every script in one batcher-like loop: at each step each live sequence gives its
/// next prompt chunk or its next token (the one its solo run picked, so both runs feed
/// the same tokens); sequences join at their step and leave when done.
pub fn batched(model: &Model, scripts: &[Script], solos: &[Trace]) -> Vec<Trace> {
    // Per sequence, the spans of its solo tokens it feeds, one per step.
    let feeds: Vec<Vec<std::ops::Range<usize>>> = scripts
        .iter()
        .map(|s| {
            let n = s.prompt.len();
            let mut spans: Vec<_> = (0..n)
                .step_by(s.chunk)
                .map(|a| a..(a + s.chunk).min(n))
                .collect();
            spans.extend((n..n + s.decode).map(|p| p..p + 1));
            spans
        })
        .collect();
    let mut caches: Vec<KvCache> = scripts
        .iter()
        .map(|_| model.new_cache(256).expect("cache"))
        .collect();
    let mut next = vec![0usize; scripts.len()];
    let mut traces: Vec<Trace> = scripts.iter().map(|_| Trace::default()).collect();
    for step in 0.. {
        let members: Vec<(usize, std::ops::Range<usize>)> = (0..scripts.len())
            .filter(|&i| step >= scripts[i].join && next[i] < feeds[i].len())
            .map(|i| (i, feeds[i][next[i]].clone()))
            .collect();
        if members.is_empty() {
            if (0..scripts.len()).all(|i| next[i] == feeds[i].len()) {
                break;
            }
            continue;
        }
        let mut slots: Vec<Option<&mut KvCache>> = caches.iter_mut().map(Some).collect();
        let mut batch: Vec<BatchInput> = members
            .iter()
            .map(|(i, span)| BatchInput {
                tokens: &solos[*i].fed[span.clone()],
                cache: slots[*i].take().expect("one input per sequence"),
                logits: span.end >= scripts[*i].prompt.len(),
            })
            .collect();
        let out = model
            .forward_batch(&mut batch, model.max_threads())
            .expect("batched step");
        for ((i, span), logits) in members.into_iter().zip(out) {
            traces[i].fed.extend(&solos[i].fed[span]);
            next[i] += 1;
            if let Some(l) = logits {
                traces[i].logits.push(l);
            }
        }
    }
    traces
}

pub fn scripts(vocab: usize) -> Vec<Script> {
    vec![
        Script {
            prompt: tokens(1, 13, vocab),
            chunk: 5,
            join: 0,
            decode: 6,
        },
        Script {
            prompt: tokens(2, 4, vocab),
            chunk: 4,
            join: 2,
            decode: 9,
        },
        Script {
            prompt: tokens(3, 21, vocab),
            chunk: 8,
            join: 3,
            decode: 3,
        },
        Script {
            prompt: tokens(4, 1, vocab),
            chunk: 1,
            join: 7,
            decode: 4,
        },
    ]
}

/// Run `scripts` solo and batched; the largest difference between a batched logit and
/// the same logit solo.
pub fn batching_error(name: &str, model: &Model, scripts: &[Script]) -> f32 {
    let solos: Vec<Trace> = scripts.iter().map(|s| solo(model, s)).collect();
    let runs = batched(model, scripts, &solos);
    let mut worst = 0.0f32;
    for (i, (run, alone)) in runs.iter().zip(&solos).enumerate() {
        assert_eq!(
            run.fed, alone.fed,
            "{name}: sequence {i} was fed differently"
        );
        assert_eq!(
            run.logits.len(),
            alone.logits.len(),
            "{name}: sequence {i} produced a different number of logit rows"
        );
        for (a, b) in run.logits.iter().zip(&alone.logits) {
            for (x, y) in a.iter().zip(b) {
                worst = worst.max((x - y).abs());
            }
        }
    }
    worst
}
