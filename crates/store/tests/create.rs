//! `create_model`: Ollama's layer order, Go-compatible JSON blobs, and deriving a model
//! from another one.

use serde_json::{json, Map, Value};
use wick_store::{
    ConfigV2, Digest, ModelName, NewModel, Store, StoreError, MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_LICENSE, MEDIA_TYPE_MESSAGES, MEDIA_TYPE_MODEL, MEDIA_TYPE_PARAMS,
    MEDIA_TYPE_SYSTEM, MEDIA_TYPE_TEMPLATE,
};

fn name(s: &str) -> ModelName {
    ModelName::parse(s).unwrap()
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

fn upload_gguf(store: &Store, bytes: &[u8]) -> Digest {
    let d = Digest::of_bytes(bytes);
    let mut w = store.blob_writer(d.clone()).unwrap();
    w.write_all(bytes).unwrap();
    w.commit().unwrap();
    d
}

fn base_model(store: &Store) -> wick_store::Manifest {
    let d = upload_gguf(store, b"GGUF tiny");
    let model = store.layer_from_blob(MEDIA_TYPE_MODEL, &d).unwrap();
    let spec = NewModel {
        layers: vec![model],
        template: Some("{{ .System }} {{ .Prompt }}".into()),
        system: Some("You are <terse> & kind.".into()),
        params: Some(obj(
            json!({"temperature": 0.6, "stop": ["<|eot_id|>"], "num_ctx": 4096}),
        )),
        license: vec!["MIT".into(), String::new(), "Apache-2.0".into()],
        messages: vec![
            json!({"role": "user", "content": "hi"}),
            json!({"role": "assistant", "content": "hello"}),
        ],
        config: ConfigV2 {
            model_format: "gguf".into(),
            model_family: "llama".into(),
            model_families: vec!["llama".into()],
            model_type: "1.2M".into(),
            file_type: "F16".into(),
            ..ConfigV2::default()
        },
    };
    store.create_model(&name("base"), spec).unwrap()
}

#[test]
fn creates_layers_in_ollama_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let m = base_model(&store);

    let types: Vec<&str> = m.layers.iter().map(|l| l.media_type.as_str()).collect();
    assert_eq!(
        types,
        [
            MEDIA_TYPE_MODEL,
            MEDIA_TYPE_TEMPLATE,
            MEDIA_TYPE_SYSTEM,
            MEDIA_TYPE_LICENSE,
            MEDIA_TYPE_LICENSE,
            MEDIA_TYPE_PARAMS,
            MEDIA_TYPE_MESSAGES,
        ]
    );
    assert_eq!(m.schema_version, 2);
    assert_eq!(m.config.media_type, MEDIA_TYPE_CONFIG);

    // Params: sorted keys, HTML-escaped like Go, trailing newline.
    let params = store
        .read_blob(&m.layers[5].parsed_digest().unwrap())
        .unwrap();
    assert_eq!(
        String::from_utf8(params).unwrap(),
        "{\"num_ctx\":4096,\"stop\":[\"\\u003c|eot_id|\\u003e\"],\"temperature\":0.6}\n"
    );
    // Template and system are raw text.
    let system = store
        .read_blob(&m.layers[2].parsed_digest().unwrap())
        .unwrap();
    assert_eq!(system, b"You are <terse> & kind.");
    // Config: Go field order, rootfs listing every layer.
    let config = store.read_blob(&m.config.parsed_digest().unwrap()).unwrap();
    let config: Value = serde_json::from_slice(&config).unwrap();
    let keys: Vec<&str> = config
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "model_format",
            "model_family",
            "model_families",
            "model_type",
            "file_type",
            "architecture",
            "os",
            "rootfs"
        ]
    );
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["rootfs"]["type"], "layers");
    let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let digests: Vec<&str> = m.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(diff_ids, digests);

    // And it reads back.
    let r = store.resolve(&name("base:latest")).unwrap();
    assert_eq!(r.template.as_deref(), Some("{{ .System }} {{ .Prompt }}"));
    assert_eq!(r.system.as_deref(), Some("You are <terse> & kind."));
    assert_eq!(r.license, vec!["MIT", "Apache-2.0"]);
    assert_eq!(r.params.as_ref().unwrap()["stop"][0], "<|eot_id|>");
    assert_eq!(r.messages.len(), 2);
    assert_eq!(r.config.file_type, "F16");
    assert_eq!(r.manifest, m);
}

#[test]
fn derives_from_an_existing_model() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let base = base_model(&store);

    let spec = NewModel {
        layers: base.layers.clone(),
        template: Some("new {{ .Prompt }}".into()),
        system: Some(String::new()), // empty: keep the inherited system prompt
        params: Some(obj(json!({"temperature": 0.1}))),
        license: vec!["Extra".into()],
        messages: vec![],
        config: ConfigV2::default(),
    };
    let m = store.create_model(&name("me/derived:v1"), spec).unwrap();
    let r = store.resolve(&name("me/derived:v1")).unwrap();
    assert_eq!(r.template.as_deref(), Some("new {{ .Prompt }}"));
    assert_eq!(r.system.as_deref(), Some("You are <terse> & kind."));
    assert_eq!(r.license, vec!["MIT", "Apache-2.0", "Extra"]);
    let params = r.params.unwrap();
    assert_eq!(params["temperature"], 0.1);
    assert_eq!(params["num_ctx"], 4096);
    assert_eq!(r.messages.len(), 2, "messages inherited");
    assert_eq!(m.layers_of(MEDIA_TYPE_TEMPLATE).count(), 1);
    assert_eq!(m.layers_of(MEDIA_TYPE_PARAMS).count(), 1);
    assert_eq!(m.model_layer(), base.model_layer());

    // Both listed; deleting the base keeps what the derived model still uses.
    assert_eq!(store.list().unwrap().len(), 2);
    store.delete(&name("base")).unwrap();
    for d in m.digests() {
        assert!(store.has_blob(&d), "{d}");
    }
}

#[test]
fn replacing_a_model_then_pruning_its_old_layers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let old = base_model(&store);
    let old_listed = store.manifest(&name("base")).unwrap();
    let spec = NewModel {
        layers: vec![old.model_layer().unwrap().clone()],
        ..NewModel::default()
    };
    store.create_model(&name("base"), spec).unwrap();
    let report = store
        .remove_unreferenced_layers(&old_listed.manifest)
        .unwrap();
    assert!(report.blobs_removed >= 5); // template, system, 2 licenses, params, messages, config
    assert!(store.has_blob(&old.model_layer().unwrap().parsed_digest().unwrap()));
    assert!(store.resolve(&name("base")).unwrap().template.is_none());
}

#[test]
fn missing_base_blob_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let d = Digest::of_bytes(b"never uploaded");
    let spec = NewModel {
        layers: vec![wick_store::Layer::new(MEDIA_TYPE_MODEL, &d, 14)],
        ..NewModel::default()
    };
    let err = store.create_model(&name("x"), spec).unwrap_err();
    assert!(matches!(err, StoreError::BlobNotFound(ref x) if *x == d));
    assert!(store.list().unwrap().is_empty());
}
