//! Store operations end to end on a temp directory: listing, case-insensitive lookup,
//! blob writes, atomic manifest writes, copy, delete and pruning.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use wick_store::{
    Digest, ErrorKind, Layer, Manifest, ModelName, Store, StoreError, MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_MODEL, MEDIA_TYPE_SYSTEM, MEDIA_TYPE_TEMPLATE,
};

fn name(s: &str) -> ModelName {
    ModelName::parse(s).unwrap()
}

fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("models")).unwrap();
    (dir, store)
}

/// Write a small model: weights, template and config blobs plus its manifest.
fn make_model(store: &Store, n: &str, weights: &[u8], template: &str) -> Manifest {
    let model = store.write_blob_bytes(MEDIA_TYPE_MODEL, weights).unwrap();
    let tmpl = store
        .write_blob_bytes(MEDIA_TYPE_TEMPLATE, template.as_bytes())
        .unwrap();
    let config = store
        .write_blob_bytes(
            MEDIA_TYPE_CONFIG,
            br#"{"model_format":"gguf","model_family":"llama"}"#,
        )
        .unwrap();
    let m = Manifest::new(config, vec![model, tmpl]);
    store.write_manifest(&name(n), &m).unwrap();
    m
}

/// All file names under `dir`, relative, sorted.
fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                out.insert(format!("{rel}/"));
                walk(base, &p, out);
            } else {
                out.insert(rel);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn blob_names(store: &Store) -> BTreeSet<String> {
    tree(store.blobs_dir())
}

#[test]
fn open_creates_layout_and_empty_list() {
    let (dir, store) = new_store();
    assert!(dir.path().join("models/blobs").is_dir());
    assert!(dir.path().join("models/manifests").is_dir());
    assert!(store.list().unwrap().is_empty());
    let err = store.resolve(&name("nope")).unwrap_err();
    assert!(matches!(err, StoreError::NotFound(ref s) if s == "nope"));
    assert_eq!(err.to_string(), "model 'nope' not found");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn list_skips_junk() {
    let (_dir, store) = new_store();
    make_model(&store, "good:1b", b"weights", "{{ .Prompt }}");
    let m = store.manifests_dir();
    let junk = |rel: &str, bytes: &[u8]| {
        let p = m.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    };
    junk("README", b"not a manifest");
    junk("registry.ollama.ai/.DS_Store", b"");
    junk("registry.ollama.ai/library/.DS_Store", b"");
    junk("registry.ollama.ai/library/good/.DS_Store", b"");
    junk(
        "registry.ollama.ai/library/broken/latest",
        b"{\"schemaVersion\":",
    );
    junk("registry.ollama.ai/library/text/latest", b"hello");
    junk("registry.ollama.ai/bad.ns/model/latest", b"{}");
    junk("h.com/ns/skill/m/t", b"{}"); // five levels deep: not a model
    fs::create_dir_all(m.join("registry.ollama.ai/library/good/dir-as-tag")).unwrap();

    let listed = store.list().unwrap();
    let names: Vec<String> = listed.iter().map(|l| l.name.display_shortest()).collect();
    assert_eq!(names, vec!["good:1b"]);
}

#[test]
fn list_reports_digest_size_and_newest_first() {
    let (_dir, store) = new_store();
    let a = make_model(&store, "a", b"aaaa", "t");
    let b = make_model(&store, "ns/b:x", b"bbbbbbbb", "t");
    // Make `a` clearly older.
    let old = SystemTime::now() - Duration::from_secs(3600);
    let a_path = name("a").manifest_path(store.root());
    fs::File::options()
        .write(true)
        .open(&a_path)
        .unwrap()
        .set_modified(old)
        .unwrap();

    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].name.display_shortest(), "ns/b:x");
    assert_eq!(listed[1].name.display_shortest(), "a:latest");
    assert_eq!(listed[0].size, b.size());
    assert_eq!(listed[1].size, a.size());
    assert_eq!(listed[1].digest_hex, Digest::of_bytes(&a.to_bytes()).hex());
    assert!(listed[0].modified_at > listed[1].modified_at);
}

#[test]
fn lookups_ignore_case() {
    let (_dir, store) = new_store();
    let m = make_model(&store, "x", b"w", "t");
    // A manifest whose path has another case than the request.
    let p = store
        .manifests_dir()
        .join("registry.ollama.ai/library/Llama3.2/Latest");
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, m.to_bytes()).unwrap();

    for query in [
        "llama3.2",
        "LLAMA3.2:latest",
        "Registry.Ollama.AI/Library/llama3.2:LATEST",
    ] {
        let r = store.resolve(&name(query)).unwrap();
        assert_eq!(r.name.display_shortest(), "Llama3.2:Latest", "{query}");
        let (path, _) = store.locate(&name(query)).unwrap().unwrap();
        assert_eq!(path, p);
    }
    // Writing under another case replaces the existing manifest instead of adding one.
    store.write_manifest(&name("LLAMA3.2"), &m).unwrap();
    assert_eq!(store.list().unwrap().len(), 2);
    assert!(!store
        .manifests_dir()
        .join("registry.ollama.ai/library/LLAMA3.2")
        .exists());
}

#[test]
fn resolve_reads_all_small_layers() {
    let (_dir, store) = new_store();
    let model = store
        .write_blob_bytes(MEDIA_TYPE_MODEL, b"weights")
        .unwrap();
    let mut model_from = model.clone();
    model_from.from = Some("llama3.2:latest".into());
    let proj = store
        .write_blob_bytes(wick_store::MEDIA_TYPE_PROJECTOR, b"mmproj")
        .unwrap();
    let adapter = store
        .write_blob_bytes(wick_store::MEDIA_TYPE_ADAPTER, b"lora")
        .unwrap();
    let prompt = store
        .write_blob_bytes(wick_store::MEDIA_TYPE_PROMPT, b"legacy {{ .Prompt }}")
        .unwrap();
    let system = store
        .write_blob_bytes(MEDIA_TYPE_SYSTEM, b"be brief")
        .unwrap();
    let lic1 = store
        .write_blob_bytes(wick_store::MEDIA_TYPE_LICENSE, b"MIT")
        .unwrap();
    let lic2 = store
        .write_blob_bytes(wick_store::MEDIA_TYPE_LICENSE, b"Apache")
        .unwrap();
    let msgs = store
        .write_blob_bytes(
            wick_store::MEDIA_TYPE_MESSAGES,
            br#"[{"role":"user","content":"hi"}]"#,
        )
        .unwrap();
    let params = store
        .write_blob_bytes(wick_store::MEDIA_TYPE_PARAMS, br#"{"num_ctx":4096}"#)
        .unwrap();
    let config = store
        .write_blob_bytes(MEDIA_TYPE_CONFIG, br#"{"model_type":"8B"}"#)
        .unwrap();
    let m = Manifest::new(
        config,
        vec![
            model_from, proj, adapter, prompt, system, lic1, lic2, msgs, params,
        ],
    );
    store.write_manifest(&name("full"), &m).unwrap();

    let r = store.resolve(&name("full")).unwrap();
    assert_eq!(
        r.model_path,
        Some(store.blob_path(&model.parsed_digest().unwrap()))
    );
    assert_eq!(r.parent_model.as_deref(), Some("llama3.2:latest"));
    assert_eq!(r.projector_paths.len(), 1);
    assert_eq!(r.adapter_paths.len(), 1);
    assert_eq!(r.template.as_deref(), Some("legacy {{ .Prompt }}"));
    assert_eq!(r.system.as_deref(), Some("be brief"));
    assert_eq!(r.license, vec!["MIT", "Apache"]);
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages[0]["content"], "hi");
    assert_eq!(r.params.unwrap()["num_ctx"], 4096);
    assert_eq!(r.config.model_type, "8B");
    assert_eq!(r.size, m.size());
}

#[test]
fn resolve_missing_weights_is_not_found() {
    let (_dir, store) = new_store();
    let m = make_model(&store, "m", b"weights", "t");
    let d = m.model_layer().unwrap().parsed_digest().unwrap();
    fs::remove_file(store.blob_path(&d)).unwrap();
    let err = store.resolve(&name("m")).unwrap_err();
    assert!(matches!(err, StoreError::BlobNotFound(ref x) if *x == d));
    assert!(err.is_not_found());
}

#[test]
fn corrupt_manifest_is_an_internal_error() {
    let (_dir, store) = new_store();
    let p = name("bad").manifest_path(store.root());
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, b"{not json").unwrap();
    let err = store.resolve(&name("bad")).unwrap_err();
    assert!(matches!(err, StoreError::CorruptManifest { .. }));
    assert_eq!(err.kind(), ErrorKind::Internal);
}

#[test]
fn blob_writer_good_and_mismatched() {
    let (_dir, store) = new_store();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::of_bytes(&data);
    assert!(!store.has_blob(&digest));
    let mut w = store.blob_writer(digest.clone()).unwrap();
    for chunk in data.chunks(8192) {
        w.write_all(chunk).unwrap();
    }
    assert_eq!(w.commit().unwrap(), data.len() as u64);
    assert!(store.has_blob(&digest));
    assert_eq!(fs::read(store.blob_path(&digest)).unwrap(), data);

    let before = tree(store.root());
    let wrong = Digest::parse(&format!("sha256-{}", "ab".repeat(32))).unwrap();
    let mut w = store.blob_writer(wrong.clone()).unwrap();
    w.write_all(b"not what was announced").unwrap();
    let err = w.commit().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "digest mismatch, expected \"sha256:{}\", got \"{}\"",
            "ab".repeat(32),
            Digest::of_bytes(b"not what was announced")
        )
    );
    assert!(err.is_bad_request());
    assert!(!store.has_blob(&wrong));
    assert_eq!(
        tree(store.root()),
        before,
        "no stray files after a mismatch"
    );

    // An abandoned upload leaves nothing behind either.
    let mut w = store.blob_writer(wrong).unwrap();
    w.write_all(b"partial").unwrap();
    drop(w);
    assert_eq!(tree(store.root()), before);
}

#[test]
fn write_blob_bytes_is_idempotent() {
    let (_dir, store) = new_store();
    let a = store.write_blob_bytes(MEDIA_TYPE_SYSTEM, b"same").unwrap();
    let b = store.write_blob_bytes(MEDIA_TYPE_SYSTEM, b"same").unwrap();
    assert_eq!(a, b);
    assert_eq!(a.size, 4);
    assert_eq!(a.digest, Digest::of_bytes(b"same").to_string());
    assert_eq!(blob_names(&store).len(), 1);
    let l = store
        .layer_from_blob(MEDIA_TYPE_MODEL, &Digest::of_bytes(b"same"))
        .unwrap();
    assert_eq!(l.size, 4);
    let missing = Digest::of_bytes(b"missing");
    assert!(matches!(
        store.layer_from_blob(MEDIA_TYPE_MODEL, &missing),
        Err(StoreError::BlobNotFound(_))
    ));
}

#[test]
fn manifest_writes_are_atomic() {
    let (_dir, store) = new_store();
    let store = Arc::new(store);
    let small = make_model(&store, "small", b"s", "t");
    // A much bigger manifest, so a torn write would be visible.
    let big_layers: Vec<Layer> = (0..2000)
        .map(|i| {
            Layer::new(
                MEDIA_TYPE_SYSTEM,
                &Digest::of_bytes(&i.to_string().into_bytes()),
                i,
            )
        })
        .collect();
    let big = Manifest::new(small.config.clone(), big_layers);
    let target = name("flip");
    store.write_manifest(&target, &small).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop, target) = (store.clone(), stop.clone(), target.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !stop.load(Ordering::Relaxed) {
                    let m = store.manifest(&target).expect("always a whole manifest");
                    assert!(m.manifest.layers.len() == 2 || m.manifest.layers.len() == 2000);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for i in 0..200 {
        let m = if i % 2 == 0 { &big } else { &small };
        store.write_manifest(&target, m).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    let names: Vec<String> = fs::read_dir(store.manifests_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["registry.ollama.ai"], "no temp files left");
    assert_eq!(store.manifest(&target).unwrap().manifest, small);
}

#[test]
fn copy_shares_blobs() {
    let (_dir, store) = new_store();
    make_model(&store, "src", b"weights", "t");
    let blobs = blob_names(&store);
    store.copy(&name("src"), &name("other/dst:v2")).unwrap();
    assert_eq!(blob_names(&store), blobs);
    let src_bytes = fs::read(name("src").manifest_path(store.root())).unwrap();
    let dst_bytes = fs::read(name("other/dst:v2").manifest_path(store.root())).unwrap();
    assert_eq!(src_bytes, dst_bytes);
    let names: BTreeSet<String> = store
        .list()
        .unwrap()
        .iter()
        .map(|l| l.name.display_shortest())
        .collect();
    assert_eq!(
        names,
        ["other/dst:v2", "src:latest"].map(String::from).into()
    );

    // Copy onto itself (any case) is a no-op; a missing source is a 404.
    store.copy(&name("src"), &name("SRC:latest")).unwrap();
    assert_eq!(store.list().unwrap().len(), 2);
    let err = store.copy(&name("missing"), &name("x")).unwrap_err();
    assert!(matches!(err, StoreError::NotFound(ref s) if s == "missing"));
}

#[test]
fn delete_keeps_shared_blobs_and_prunes_dirs() {
    let (_dir, store) = new_store();
    let a = make_model(&store, "ns/a", b"shared weights", "template a");
    let b = make_model(&store, "ns/b", b"shared weights", "template b");
    store.copy(&name("ns/a"), &name("ns/a-copy")).unwrap();
    let all = blob_names(&store);
    assert_eq!(all.len(), 4); // weights, config, 2 templates

    // `a` is still referenced by its copy: nothing goes.
    let r = store.delete(&name("ns/a")).unwrap();
    assert_eq!(r.blobs_removed, 0);
    assert_eq!(blob_names(&store), all);
    assert!(!store
        .manifests_dir()
        .join("registry.ollama.ai/ns/a")
        .exists());

    // Deleting the copy frees template a only; weights and config are shared with b.
    let r = store.delete(&name("NS/A-Copy")).unwrap();
    assert_eq!(r.blobs_removed, 1);
    let tmpl_a = a.layers[1].parsed_digest().unwrap();
    assert!(!store.has_blob(&tmpl_a));
    for d in b.digests() {
        assert!(store.has_blob(&d));
    }

    // Last one out frees everything and prunes empty directories, not manifests/.
    store.delete(&name("ns/b")).unwrap();
    assert!(blob_names(&store).is_empty());
    assert!(store.manifests_dir().is_dir());
    assert!(tree(store.manifests_dir()).is_empty());

    let err = store.delete(&name("ns/b")).unwrap_err();
    assert_eq!(err.to_string(), "model 'ns/b' not found");
}

#[test]
fn delete_respects_references_from_unparsable_and_deep_manifests() {
    let (_dir, store) = new_store();
    let a = make_model(&store, "a", b"weights", "t");
    let w = a.model_layer().unwrap().parsed_digest().unwrap();
    let cfg = a.config.parsed_digest().unwrap();
    // A truncated manifest mentioning the weights, and a five-level manifest (newer
    // Ollama) mentioning the config.
    let trunc = store
        .manifests_dir()
        .join("registry.ollama.ai/library/trunc/latest");
    fs::create_dir_all(trunc.parent().unwrap()).unwrap();
    fs::write(&trunc, format!("{{\"layers\":[{{\"digest\":\"{w}\"")).unwrap();
    let deep = store
        .manifests_dir()
        .join("registry.ollama.ai/library/skill/s/latest");
    fs::create_dir_all(deep.parent().unwrap()).unwrap();
    fs::write(&deep, Manifest::new(a.config.clone(), vec![]).to_bytes()).unwrap();

    store.delete(&name("a")).unwrap();
    assert!(store.has_blob(&w));
    assert!(store.has_blob(&cfg));
    assert!(!store.has_blob(&a.layers[1].parsed_digest().unwrap()));
}

#[test]
fn delete_a_corrupt_manifest() {
    let (_dir, store) = new_store();
    let p = name("junk").manifest_path(store.root());
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, b"garbage").unwrap();
    store.delete(&name("junk")).unwrap();
    assert!(!p.exists());
}

#[test]
fn prune_unreferenced_at_startup() {
    let (_dir, store) = new_store();
    let keep = make_model(&store, "keep", b"weights", "t");
    let orphan = store
        .write_blob_bytes(MEDIA_TYPE_SYSTEM, b"orphan")
        .unwrap();
    let orphan_d = orphan.parsed_digest().unwrap();
    let partial = store
        .blobs_dir()
        .join(format!("sha256-{}-partial", "c".repeat(64)));
    fs::write(&partial, b"half a download").unwrap();
    let stale = store.blobs_dir().join(".wick-tmp-stale");
    fs::write(&stale, b"x").unwrap();
    let old = SystemTime::now() - Duration::from_secs(2 * 3600);
    fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let fresh = store.blobs_dir().join(".wick-tmp-fresh");
    fs::write(&fresh, b"x").unwrap();
    fs::create_dir_all(store.manifests_dir().join("h.com/empty/dir")).unwrap();

    let r = store.prune_unreferenced(true).unwrap();
    assert!(r.skipped.is_some());
    assert!(store.has_blob(&orphan_d));

    let r = store.prune_unreferenced(false).unwrap();
    assert_eq!(r.skipped, None);
    assert_eq!(r.blobs_removed, 1);
    assert_eq!(r.bytes_freed, 6);
    assert_eq!(r.temp_files_removed, 1);
    assert!(!store.has_blob(&orphan_d));
    for d in keep.digests() {
        assert!(store.has_blob(&d));
    }
    assert!(
        partial.exists(),
        "files not named like a digest are left alone"
    );
    assert!(!stale.exists());
    assert!(fresh.exists(), "a temp file being written is kept");
    assert!(!store.manifests_dir().join("h.com").exists());
}

#[test]
fn prune_is_skipped_when_a_manifest_is_corrupt() {
    let (_dir, store) = new_store();
    make_model(&store, "keep", b"weights", "t");
    let orphan = store
        .write_blob_bytes(MEDIA_TYPE_SYSTEM, b"orphan")
        .unwrap();
    let p = name("broken").manifest_path(store.root());
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, b"{\"layers\":[").unwrap();
    let r = store.prune_unreferenced(false).unwrap();
    assert!(r.skipped.unwrap().contains("corrupt manifest"));
    assert!(store.has_blob(&orphan.parsed_digest().unwrap()));
}

#[test]
fn fixes_legacy_blob_names() {
    let (_dir, store) = new_store();
    let d = Digest::of_bytes(b"legacy");
    fs::write(
        store.blobs_dir().join(format!("sha256:{}", d.hex())),
        b"legacy",
    )
    .unwrap();
    assert!(!store.has_blob(&d));
    assert_eq!(store.fix_legacy_blob_names().unwrap(), 1);
    assert!(store.has_blob(&d));
    assert_eq!(blob_names(&store).len(), 1);
    assert_eq!(store.fix_legacy_blob_names().unwrap(), 0);
}

#[test]
fn default_root_follows_ollama_models() {
    // The only test that touches the environment.
    std::env::set_var("OLLAMA_MODELS", " \"/srv/models\" ");
    assert_eq!(Store::default_root().unwrap(), Path::new("/srv/models"));
    std::env::remove_var("OLLAMA_MODELS");
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        assert_eq!(
            Store::default_root().unwrap(),
            Path::new(&home).join(".ollama/models")
        );
    }
}
