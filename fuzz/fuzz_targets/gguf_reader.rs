//! Arbitrary bytes as a GGUF file, through everything the server does with a header:
//! `check_supported` (`/api/create`), the facts (`/api/show`, `/api/tags`), the
//! decoder and encoder descriptions, the tokenizer, and the raw tensor reads.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wick_engine::gguf::{value_to_json, GgufFile};
use wick_engine::model::bert::EncoderConfig;
use wick_engine::model::decoder_spec::DecoderSpec;
use wick_engine::{GgufFacts, GgufTokenizer};

/// One file per fuzzing process, rewritten each run (the reader takes a path).
fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("wick-fuzz-gguf-{}.gguf", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = path();
    std::fs::write(path, data).expect("write the input to a file");
    let _ = wick_engine::model::check_supported(path);
    let Ok(mut gguf) = GgufFile::open(path) else {
        return;
    };
    for verbose in [false, true] {
        if let Ok(facts) = GgufFacts::from_gguf(&gguf, verbose) {
            let _ = facts.parameter_size();
        }
    }
    for v in gguf.metadata().values() {
        let _ = value_to_json(v, 64);
    }
    if let Ok(arch) = gguf.architecture() {
        let _ = DecoderSpec::from_gguf(&gguf, &arch);
        let _ = EncoderConfig::from_gguf(&gguf, &arch);
    }
    if let Ok(tokenizer) = GgufTokenizer::from_gguf(&gguf) {
        if let Ok(ids) = tokenizer.encode("Hello, world! <|im_end|> ünïcödé 123", true) {
            let _ = tokenizer.decode(&ids);
        }
        let _ = tokenizer.encode_for_embedding("Hello", 8, true);
    }
    let names: Vec<String> = gguf.content.tensor_infos.keys().cloned().collect();
    for name in names {
        let _ = gguf.raw_tensor(&name);
    }
});
