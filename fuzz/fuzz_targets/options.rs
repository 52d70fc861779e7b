//! Ollama `options` maps: any JSON is options or a 400, and resolving never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use wick_api::options::{OptionsPatch, KNOWN_OPTIONS};
use wick_engine::Sampler;

/// Logits with a tie, a -inf and a NaN: what a sampler must survive.
const LOGITS: [f32; 8] = [1.0, 2.5, -3.0, 2.5, f32::NEG_INFINITY, 0.0, f32::NAN, 7.0];

fn check(map: &Map<String, Value>) {
    let Ok(patch) = OptionsPatch::from_map(map) else {
        return;
    };
    let layered = OptionsPatch::default().overlay(&patch);
    assert_eq!(layered, patch);
    for num_ctx in [0, 1, 2048] {
        let run = layered.resolve(num_ctx);
        let mut sampling = run.sampling;
        sampling.seed = Some(sampling.seed.unwrap_or(7));
        let mut sampler = Sampler::new(sampling);
        let history = [1, 1, 7, 3, 3, 3];
        let token = sampler.sample(&LOGITS, &history, run.num_ctx);
        assert!((token as usize) < LOGITS.len(), "sampled {token}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    match &value {
        Value::Object(map) => check(map),
        other => {
            // A bare value: try it as every known option.
            for (key, _) in KNOWN_OPTIONS {
                let mut map = Map::new();
                map.insert((*key).to_string(), other.clone());
                check(&map);
            }
        }
    }
});
