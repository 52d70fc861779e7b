//! Continuous batching on the real SmolLM2, through the real server: concurrent requests
//! give exactly what they give alone, cancelling one leaves the others untouched, many
//! clients all finish, prefixes are reused, and the queue and memory limits answer with
//! Ollama's errors.

mod common;

use std::io::{BufRead, BufReader};
use std::thread;

use common::{Server, SMOLLM2};
use serde_json::{json, Value};

const PROMPTS: [&str; 6] = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the sea,",
    "The three primary colors are",
    "Water boils at a temperature of",
    "import numpy as np\n\ndef mean(x):",
];

fn generate(s: &Server, prompt: &str, options: Value) -> Value {
    let (status, r) = s
        .post(
            "/api/generate",
            &json!({"model": SMOLLM2, "prompt": prompt, "raw": true, "stream": false,
                    "options": options}),
        )
        .expect("generate");
    assert_eq!(status, 200, "{r}");
    r
}

fn text(r: &Value) -> String {
    r["response"].as_str().unwrap_or_default().to_string()
}

/// Run `prompts` all at once, one thread per request; responses in prompt order.
fn concurrently(s: &Server, prompts: &[&str], options: &[Value]) -> Vec<Value> {
    thread::scope(|scope| {
        let handles: Vec<_> = prompts
            .iter()
            .zip(options)
            .map(|(p, o)| scope.spawn(move || generate(s, p, o.clone())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    })
}

fn greedy(n: i64) -> Value {
    json!({"temperature": 0, "num_predict": n})
}

#[test]
fn batched_greedy_equals_one_by_one() {
    let s = Server::with_smollm2_env(&[("OLLAMA_NUM_PARALLEL", "6")]);
    let alone: Vec<String> = PROMPTS
        .iter()
        .map(|p| text(&generate(&s, p, greedy(24))))
        .collect();
    let opts = vec![greedy(24); PROMPTS.len()];
    let together: Vec<String> = concurrently(&s, &PROMPTS, &opts).iter().map(text).collect();
    for ((p, a), b) in PROMPTS.iter().zip(&alone).zip(&together) {
        assert!(!a.is_empty(), "{p:?} generated nothing");
        assert_eq!(
            a, b,
            "prompt {p:?}: batched output differs from its solo run"
        );
    }
}

/// The same through the candle device path (what GPUs run), here on candle's CPU
/// device: the batcher drives it with the same steps, prompt chunks beside decode rows.
#[test]
fn candle_path_batched_greedy_equals_one_by_one() {
    let s = Server::with_smollm2_env(&[("OLLAMA_NUM_PARALLEL", "6"), ("WICK_CANDLE_ON_CPU", "1")]);
    let alone: Vec<String> = PROMPTS
        .iter()
        .map(|p| text(&generate(&s, p, greedy(16))))
        .collect();
    let opts = vec![greedy(16); PROMPTS.len()];
    let together: Vec<String> = concurrently(&s, &PROMPTS, &opts).iter().map(text).collect();
    for ((p, a), b) in PROMPTS.iter().zip(&alone).zip(&together) {
        assert!(!a.is_empty(), "{p:?} generated nothing");
        assert_eq!(
            a, b,
            "prompt {p:?}: batched output differs from its solo run"
        );
    }
    let (_, ps) = s.get("/api/ps");
    assert_eq!(ps["models"][0]["name"], SMOLLM2, "{ps}");
}

#[test]
fn seeded_sampling_does_not_depend_on_neighbours() {
    let s = Server::with_smollm2_env(&[("OLLAMA_NUM_PARALLEL", "4")]);
    let seeded = json!({"temperature": 0.9, "top_k": 40, "seed": 1234, "num_predict": 24});
    let alone = text(&generate(&s, PROMPTS[2], seeded.clone()));
    let prompts = [PROMPTS[2], PROMPTS[0], PROMPTS[1], PROMPTS[3]];
    let opts = [
        seeded,
        json!({"temperature": 1.0, "seed": 7, "num_predict": 30}),
        json!({"temperature": 0.5, "seed": 99, "num_predict": 12}),
        greedy(20),
    ];
    let together = concurrently(&s, &prompts, &opts);
    assert_eq!(alone, text(&together[0]));
}

#[test]
fn cancelling_one_stream_leaves_the_others_unchanged() {
    let s = Server::with_smollm2_env(&[("OLLAMA_NUM_PARALLEL", "4")]);
    let expected: Vec<String> = PROMPTS[..3]
        .iter()
        .map(|p| text(&generate(&s, p, greedy(32))))
        .collect();
    let s = &s;
    let got: Vec<String> = thread::scope(|scope| {
        let quitter = scope.spawn(move || {
            let r = s
                .client
                .post(s.url("/api/generate"))
                .json(&json!({"model": SMOLLM2, "prompt": PROMPTS[3], "raw": true,
                              "options": greedy(500)}))
                .send()
                .expect("stream");
            let mut lines = BufReader::new(r).lines();
            for _ in 0..3 {
                lines.next();
            }
            // dropping the response hangs up mid-generation
        });
        let handles: Vec<_> = PROMPTS[..3]
            .iter()
            .map(|p| scope.spawn(move || text(&generate(s, p, greedy(32)))))
            .collect();
        quitter.join().expect("quitter");
        handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .collect()
    });
    assert_eq!(expected, got);
    s.assert_alive();
}

#[test]
fn sixty_four_concurrent_clients_all_complete() {
    let s = Server::with_smollm2();
    let results: Vec<Value> = thread::scope(|scope| {
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    let prompt = format!("{} ({i})", PROMPTS[i % PROMPTS.len()]);
                    generate(s, &prompt, greedy(8))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .collect()
    });
    assert_eq!(results.len(), 64);
    for r in &results {
        assert_eq!(r["done"], true, "{r}");
        assert!(r["eval_count"].as_u64().is_some_and(|n| n >= 1), "{r}");
    }
}

#[test]
fn a_repeated_prefix_is_not_evaluated_again() {
    let s = Server::with_smollm2();
    let base = "The history of computing is a long story that begins with the abacus and";
    let first = generate(&s, base, greedy(8));
    let full = first["prompt_eval_count"].as_u64().expect("count");
    assert!(full > 10, "{first}");
    // The same prompt again: only its last token is evaluated, the text is the same;
    // the whole prompt still counts (as Ollama reports it), the reused part is
    // OpenAI's `cached_tokens`.
    let again = generate(&s, base, greedy(8));
    assert_eq!(again["prompt_eval_count"].as_u64(), Some(full), "{again}");
    assert_eq!(text(&first), text(&again));
    let cached = |prompt: &str| {
        let (status, v) = s
            .post(
                "/v1/completions",
                &json!({"model": SMOLLM2, "prompt": prompt, "max_tokens": 8, "temperature": 0}),
            )
            .expect("completions");
        assert_eq!(status, 200, "{v}");
        let u = &v["usage"];
        (
            u["prompt_tokens"].as_u64().expect("prompt_tokens"),
            u["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .expect("cached_tokens"),
        )
    };
    // Through /v1/completions (the prompt in the chat template) the same holds.
    let (whole, _) = cached(base);
    assert!(whole > full);
    assert_eq!(cached(base), (whole, whole - 1));
    // A longer prompt that starts the same way evaluates only what is new.
    let longer = format!("{base} continues through");
    let (grown_whole, reused) = cached(&longer);
    assert!(
        grown_whole > whole && reused > full / 2 && reused < grown_whole,
        "{grown_whole} {reused}"
    );
    let grown = generate(&s, &longer, greedy(8));
    assert!(
        grown["prompt_eval_count"]
            .as_u64()
            .is_some_and(|n| n > full),
        "{grown}"
    );
    // ...and generates what a fresh server generates for it.
    let fresh = Server::with_smollm2();
    assert_eq!(text(&grown), text(&generate(&fresh, &longer, greedy(8))));
}

#[test]
fn a_client_that_hangs_up_frees_its_slot() {
    // One slot: if the abandoned request kept running (unbounded, long prompt), the
    // second request would wait for it far past the client timeout.
    let s = Server::with_smollm2_env(&[("OLLAMA_NUM_PARALLEL", "1")]);
    let long_prompt = "word ".repeat(1500);
    {
        let r = s
            .client
            .post(s.url("/api/generate"))
            .json(
                &json!({"model": SMOLLM2, "prompt": long_prompt, "raw": true,
                          "options": {"num_predict": -1, "num_ctx": 8192}}),
            )
            .send()
            .expect("stream");
        assert_eq!(r.status().as_u16(), 200);
    }
    let r = generate(&s, PROMPTS[0], greedy(4));
    assert_eq!(r["done"], true);
}

#[test]
fn a_flood_past_the_queue_gets_503s_and_the_rest_complete() {
    let s = Server::with_smollm2_env(&[("OLLAMA_MAX_QUEUE", "2"), ("OLLAMA_NUM_PARALLEL", "1")]);
    // Load first so that the flood meets a busy model, not the loader.
    generate(&s, PROMPTS[0], greedy(1));
    let statuses: Vec<(u16, Value)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    s.post(
                        "/api/generate",
                        &json!({"model": SMOLLM2, "prompt": PROMPTS[i % 6], "raw": true,
                                "stream": false, "options": greedy(48)}),
                    )
                    .expect("request")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .collect()
    });
    let busy: Vec<_> = statuses.iter().filter(|(c, _)| *c == 503).collect();
    let ok = statuses.iter().filter(|(c, _)| *c == 200).count();
    assert!(!busy.is_empty(), "no request was refused: {statuses:?}");
    assert!(ok >= 1, "{statuses:?}");
    assert_eq!(ok + busy.len(), 12, "{statuses:?}");
    assert_eq!(
        busy[0].1["error"],
        "server busy, please try again.  maximum pending requests exceeded"
    );
    s.assert_alive();
}

#[test]
fn a_model_that_cannot_fit_is_refused_with_500() {
    let s = Server::with_smollm2_env(&[("WICK_MEMORY_AVAILABLE", "1000000")]);
    let (status, r) = s
        .post(
            "/api/generate",
            &json!({"model": SMOLLM2, "prompt": "hi", "stream": false}),
        )
        .expect("request");
    assert_eq!(status, 500, "{r}");
    let msg = r["error"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("model requires more system memory"),
        "{msg}"
    );
    s.assert_alive();
}

#[test]
fn a_context_that_shifts_while_batched_generates_what_it_does_alone() {
    // num_ctx 48 with 80 tokens to generate: every sequence shifts its context at least
    // once, while the others decode beside it.
    let s = Server::with_smollm2_env(&[("OLLAMA_NUM_PARALLEL", "4")]);
    let small = json!({"temperature": 0, "num_predict": 80, "num_ctx": 48});
    let prompts = &PROMPTS[..4];
    let alone: Vec<Value> = prompts
        .iter()
        .map(|p| generate(&s, p, small.clone()))
        .collect();
    let together = concurrently(&s, prompts, &vec![small; prompts.len()]);
    for ((p, a), b) in prompts.iter().zip(&alone).zip(&together) {
        // Past 48 positions in all (prompt + generated) the context has shifted.
        let used =
            a["prompt_eval_count"].as_u64().unwrap_or(0) + a["eval_count"].as_u64().unwrap_or(0);
        assert!(used > 48, "{p:?} never shifted its context: {a}");
        assert_eq!(
            text(a),
            text(b),
            "prompt {p:?}: batched shift differs from solo"
        );
    }
    // Without shifting, a full context ends the generation with `length`.
    let (status, r) = s
        .post(
            "/api/generate",
            &json!({"model": SMOLLM2, "prompt": PROMPTS[0], "raw": true, "stream": false,
                    "shift": false, "options": {"temperature": 0, "num_predict": 80,
                    "num_ctx": 48}}),
        )
        .expect("generate");
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["done_reason"], "length", "{r}");
    assert!(r["eval_count"].as_u64().is_some_and(|n| n < 80), "{r}");
}
