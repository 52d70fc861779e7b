//! Request bodies through the real router, in process, with an empty store and no
//! model loaded: the first byte picks the route, the rest is the body. A body that
//! does not parse or validate is a 4xx; nothing here is ever a 5xx or a panic.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request};
use axum::Router;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use wick_api::{app, ApiConfig, AppState};
use wick_engine::Device;
use wick_scheduler::{KeepAlive, Scheduler, SchedulerConfig};
use wick_store::Store;

const ROUTES: &[(Method, &str)] = &[
    (Method::POST, "/api/generate"),
    (Method::POST, "/api/chat"),
    (Method::POST, "/api/embed"),
    (Method::POST, "/api/embeddings"),
    (Method::POST, "/api/show"),
    (Method::POST, "/api/create"),
    (Method::POST, "/api/copy"),
    (Method::DELETE, "/api/delete"),
    (Method::POST, "/v1/chat/completions"),
    (Method::POST, "/v1/completions"),
    (Method::POST, "/v1/embeddings"),
    (Method::POST, "/v1/responses"),
];

struct Server {
    runtime: tokio::runtime::Runtime,
    app: Router,
    _dir: tempfile::TempDir,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let dir = tempfile::tempdir().expect("a temporary store");
        let store = Store::open(dir.path()).expect("open the store");
        let app = runtime.block_on(async {
            let scheduler = Scheduler::new(SchedulerConfig {
                max_loaded_models: 1,
                max_queue: 8,
                default_keep_alive: KeepAlive::For(Duration::from_secs(300)),
                kv_budget_bytes: 64 << 20,
                num_parallel: None,
                default_num_ctx: Some(2048),
                device: Device::Cpu,
            });
            app(AppState::new(scheduler, store, ApiConfig::default()))
        });
        Server {
            runtime,
            app,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (method, uri) = &ROUTES[usize::from(pick) % ROUTES.len()];
    let server = server();
    let request = Request::builder()
        .method(method.clone())
        .uri(*uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_vec()))
        .expect("a request");
    let (status, reply) = server.runtime.block_on(async {
        let response = server
            .app
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let reply = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default();
        (status, reply)
    });
    assert!(
        !status.is_server_error(),
        "{method} {uri} with {:?}: {status} {}",
        String::from_utf8_lossy(body),
        String::from_utf8_lossy(&reply)
    );
});
