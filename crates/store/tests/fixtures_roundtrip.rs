//! Real-looking Ollama manifests and config blobs: parse, re-serialise byte for byte,
//! and serve them from a store laid out like `~/.ollama/models`.

use std::fs;
use std::path::Path;

use sha2::{Digest as _, Sha256};
use wick_store::{
    ConfigV2, Digest, Manifest, ModelName, Store, MEDIA_TYPE_LICENSE, MEDIA_TYPE_MODEL,
    MEDIA_TYPE_TEMPLATE,
};

const MANIFEST: &[u8] = include_bytes!("fixtures/llama3.2-latest.manifest.json");
const DERIVED: &[u8] = include_bytes!("fixtures/derived.manifest.json");
const CONFIG: &[u8] = include_bytes!("fixtures/llama3.2-config.json");

#[test]
fn manifest_round_trips_byte_for_byte() {
    for fixture in [MANIFEST, DERIVED] {
        let m = Manifest::from_bytes(fixture).unwrap();
        assert_eq!(m.to_bytes(), fixture);
    }
}

#[test]
fn manifest_fields() {
    let m = Manifest::from_bytes(MANIFEST).unwrap();
    assert_eq!(m.schema_version, 2);
    assert_eq!(m.media_type, wick_store::MEDIA_TYPE_MANIFEST);
    assert_eq!(m.config.media_type, wick_store::MEDIA_TYPE_CONFIG);
    assert_eq!(m.config.size, 561);
    assert_eq!(m.layers.len(), 5);
    assert_eq!(m.layers_of(MEDIA_TYPE_LICENSE).count(), 2);
    let model = m.model_layer().unwrap();
    assert_eq!(model.size, 2_019_377_376);
    assert_eq!(
        model.parsed_digest().unwrap().hex(),
        "dde5aa3fc5ffc17176b5e8bdc82f587b24b2678c6c66101bf7da77af9f7ccdff"
    );
    assert_eq!(m.size(), 2_019_377_376 + 1429 + 7711 + 6016 + 96 + 561);

    let d = Manifest::from_bytes(DERIVED).unwrap();
    assert!(d
        .model_layer()
        .unwrap()
        .from
        .as_deref()
        .unwrap()
        .ends_with("sha256-dde5aa3fc5ffc17176b5e8bdc82f587b24b2678c6c66101bf7da77af9f7ccdff"));
}

#[test]
fn pretty_printed_manifest_parses_to_the_same_value() {
    let m = Manifest::from_bytes(MANIFEST).unwrap();
    let pretty = serde_json::to_vec_pretty(&m).unwrap();
    assert_eq!(Manifest::from_bytes(&pretty).unwrap(), m);
}

#[test]
fn config_round_trips() {
    let c: ConfigV2 = serde_json::from_slice(CONFIG).unwrap();
    assert_eq!(c.model_format, "gguf");
    assert_eq!(c.model_family, "llama");
    assert_eq!(c.model_families, vec!["llama".to_string()]);
    assert_eq!(c.model_type, "3.2B");
    assert_eq!(c.file_type, "Q4_K_M");
    assert_eq!(c.rootfs.kind, "layers");
    assert_eq!(c.rootfs.diff_ids.len(), 5);
    let mut bytes = serde_json::to_vec(&c).unwrap();
    bytes.push(b'\n');
    assert_eq!(bytes, CONFIG);

    // Newer fields and unknown ones.
    let c: ConfigV2 = serde_json::from_str(
        r#"{"model_format":"gguf","renderer":"qwen3-coder","parser":"qwen3-coder","requires":"0.12.0",
            "capabilities":["completion","tools"],"context_length":262144,"embedding_length":2048,
            "remote_host":"https://ollama.com:443","remote_model":"qwen3-coder:480b",
            "draft":null,"generation_defaults":{"temperature":0.7}}"#,
    )
    .unwrap();
    assert_eq!(c.renderer, "qwen3-coder");
    assert_eq!(c.capabilities, vec!["completion", "tools"]);
    assert_eq!(c.context_length, 262_144);
    assert_eq!(c.embedding_length, 2048);
    assert_eq!(c.remote_model, "qwen3-coder:480b");
    assert!(c.model_families.is_empty());
}

fn install(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join("manifests").join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

#[test]
fn existing_ollama_store_is_listed_and_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    install(
        dir.path(),
        "registry.ollama.ai/library/llama3.2/latest",
        MANIFEST,
    );

    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 1);
    let l = &listed[0];
    assert_eq!(l.name.display_shortest(), "llama3.2:latest");
    assert_eq!(l.digest_hex, hex::encode(Sha256::digest(MANIFEST)));
    assert_eq!(l.size, Manifest::from_bytes(MANIFEST).unwrap().size());

    // Blobs are not there yet: resolving reports the missing config blob as 404.
    let err = store
        .resolve(&ModelName::parse("llama3.2").unwrap())
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(
        err.to_string().starts_with("blob \"sha256:34bb5ab0"),
        "{err}"
    );
}

#[test]
fn resolves_a_store_with_blobs_whose_names_are_their_digests() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let gguf = b"GGUF\x03\x00\x00\x00 tiny weights";
    let template = "{{ .Prompt }}";
    let params = b"{\"stop\":[\"\\u003c|eot_id|\\u003e\"],\"temperature\":0.6}\n";
    let gguf_layer = store.write_blob_bytes(MEDIA_TYPE_MODEL, gguf).unwrap();
    let tmpl_layer = store
        .write_blob_bytes(MEDIA_TYPE_TEMPLATE, template.as_bytes())
        .unwrap();
    let params_layer = store
        .write_blob_bytes(wick_store::MEDIA_TYPE_PARAMS, params)
        .unwrap();
    let config_layer = store
        .write_blob_bytes(wick_store::MEDIA_TYPE_CONFIG, CONFIG)
        .unwrap();
    let m = Manifest::new(
        config_layer,
        vec![gguf_layer.clone(), tmpl_layer, params_layer],
    );
    install(
        dir.path(),
        "registry.ollama.ai/library/tiny/latest",
        &m.to_bytes(),
    );

    let r = store.resolve(&ModelName::parse("tiny").unwrap()).unwrap();
    assert_eq!(
        r.model_path.as_deref(),
        Some(store.blob_path(&Digest::of_bytes(gguf)).as_path())
    );
    assert_eq!(fs::read(r.model_path.unwrap()).unwrap(), gguf);
    assert_eq!(r.template.as_deref(), Some(template));
    let params = r.params.unwrap();
    assert_eq!(params["stop"][0], "<|eot_id|>");
    assert_eq!(params["temperature"], 0.6);
    assert_eq!(r.config.model_family, "llama");
    assert_eq!(r.name.display_shortest(), "tiny:latest");
}
