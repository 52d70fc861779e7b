//! Model names as clients send them (`../../etc`, `host:port/ns/model:tag`, ...): a
//! name that parses is always a safe path below the store and round-trips.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use wick_store::ModelName;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(name) = ModelName::parse(s) else {
        return;
    };
    for part in name.parts() {
        assert!(!part.is_empty(), "{s:?}: empty part");
        assert!(
            !part.starts_with('.'),
            "{s:?}: part {part:?} starts with a dot"
        );
        assert!(
            !part.contains(['/', '\\', '\0']),
            "{s:?}: part {part:?} has a separator"
        );
    }
    let root = Path::new("/store");
    let manifest = name.manifest_path(root);
    assert!(
        manifest.starts_with("/store/manifests"),
        "{s:?}: {manifest:?}"
    );
    let filepath = name.filepath();
    let parts: Vec<Component<'_>> = filepath.components().collect();
    assert_eq!(parts.len(), 4, "{s:?}: {parts:?}");
    assert!(
        parts.iter().all(|c| matches!(c, Component::Normal(_))),
        "{s:?}: {parts:?}"
    );
    // Every printed form reads back as the same name.
    for form in [name.to_string(), name.display_shortest()] {
        let again = ModelName::parse(&form)
            .unwrap_or_else(|e| panic!("{s:?} prints as {form:?}, which does not parse: {e}"));
        assert_eq!(again, name, "{s:?} -> {form:?}");
    }
    let [host, namespace, model, tag] = name.parts();
    let built = ModelName::from_parts(host, namespace, model, tag)
        .unwrap_or_else(|e| panic!("{s:?}: its own parts are refused: {e}"));
    assert_eq!(built, name);
});
