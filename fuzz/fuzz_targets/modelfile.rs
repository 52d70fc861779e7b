//! The Modelfile parser (`wick create -f`): any text is a Modelfile or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wick_store::modelfile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(mf) = modelfile::parse(text) {
        assert!(!mf.from.is_empty(), "{text:?}: parsed without a FROM");
    }
});
