//! `wick serve`: wire the settings to the store, the scheduler and the API, and listen.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use wick_api::{ApiConfig, ApiKey, AppState};
use wick_engine::Device;
use wick_scheduler::{KeepAlive, Scheduler, SchedulerConfig};
use wick_store::Store;

use crate::host::Host;
use crate::{listen, logging, CliError};

/// Server settings, each from a flag or Ollama's environment variable.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Where the model store lives (blobs/ and manifests/, Ollama's layout)
    /// [default: ~/.ollama/models]
    #[arg(long, env = "OLLAMA_MODELS")]
    pub models: Option<PathBuf>,

    /// How long a model stays loaded after its last request: a Go duration ("5m",
    /// "1h30m") or seconds; negative keeps it loaded forever
    #[arg(long, env = "OLLAMA_KEEP_ALIVE", default_value = "5m")]
    pub keep_alive: String,

    /// Most models loaded at once (0 means the default, 3)
    #[arg(long, env = "OLLAMA_MAX_LOADED_MODELS", default_value_t = 3)]
    pub max_loaded_models: usize,

    /// Requests queued or running before new ones get a 503
    #[arg(long, env = "OLLAMA_MAX_QUEUE", default_value_t = 512)]
    pub max_queue: usize,

    /// Default context window (num_ctx) in tokens; unset or 0 uses each model's
    /// trained context, capped by the KV budget
    #[arg(long, env = "OLLAMA_CONTEXT_LENGTH")]
    pub context_length: Option<usize>,

    /// Do not delete unreferenced blobs at startup or when create replaces a model
    #[arg(long, env = "OLLAMA_NOPRUNE", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    pub noprune: bool,

    /// Accept pushes over the registry protocol (`/v2/.../blobs/uploads`, manifests);
    /// with WICK_API_KEY set, only from clients holding the key
    #[arg(long, env = "WICK_REGISTRY_PUSH", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    pub registry_push: bool,

    /// Sequences one model runs at once, batched together (0 chooses from the KV
    /// budget: as many 2048-token sequences as fit, 4 to 16)
    #[arg(long, env = "OLLAMA_NUM_PARALLEL", default_value_t = 0)]
    pub num_parallel: usize,

    /// Bytes of KV cache one model's sequences may use together; bounds the default
    /// num_ctx and how many sequences run at once
    /// [default: total RAM / 8, at most 4 GiB]
    #[arg(long, env = "WICK_KV_BUDGET")]
    pub kv_budget: Option<usize>,

    /// Extra browser origins allowed to call the API, comma-separated (`*` wildcards)
    #[arg(long, env = "OLLAMA_ORIGINS", value_delimiter = ',')]
    pub origins: Vec<String>,

    /// Log level as Ollama reads it: 1 or true is debug, 2 trace, 0 or false info;
    /// -1 warnings and -2 errors only (RUST_LOG overrides)
    #[arg(long, env = "OLLAMA_DEBUG", num_args = 0..=1, default_missing_value = "1")]
    pub debug: Option<String>,

    /// API key clients must send as `Authorization: Bearer <key>` on every route but
    /// `/` and `/api/version` (the `wick` CLI sends it from the same variable); unset:
    /// no key
    #[arg(long, env = "WICK_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Largest request body in bytes; larger ones get 413 (blob uploads are exempt
    /// and streamed to disk) [default: 64 MiB]
    #[arg(long, env = "WICK_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Wall-clock cap per request, a Go duration ("2m", "90s") or seconds: a late
    /// answer is a 504, a stream ends with an error line; unset, 0 or negative: none
    #[arg(long, env = "WICK_REQUEST_TIMEOUT")]
    pub request_timeout: Option<String>,

    /// How long a client may take to send a request's headers (HTTP/1; also how long
    /// an idle keep-alive connection stays open), a Go duration or seconds
    #[arg(long, env = "WICK_HEADER_TIMEOUT", default_value = "30s")]
    pub header_timeout: String,

    /// On SIGINT/SIGTERM, how long running requests get to finish before their
    /// streams end with an error line, a Go duration or seconds (0: end them at once)
    #[arg(long, env = "WICK_SHUTDOWN_TIMEOUT", default_value = "30s")]
    pub shutdown_timeout: String,

    /// Most client connections open at once; one more gets a 503 and is closed
    #[arg(long, env = "WICK_MAX_CONNECTIONS", default_value_t = 1000)]
    pub max_connections: usize,
}

const GIB: usize = 1 << 30;

/// Total memory from /proc/meminfo, when there is one.
fn total_ram_bytes() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn default_kv_budget() -> usize {
    total_ram_bytes().map_or(4 * GIB, |ram| (ram / 8).min(4 * GIB))
}

fn device() -> Result<Device, CliError> {
    #[cfg(feature = "cuda")]
    {
        return Device::new_cuda(0).map_err(|e| CliError::Other(format!("CUDA device: {e}")));
    }
    #[cfg(all(feature = "metal", not(feature = "cuda")))]
    {
        return Device::new_metal(0).map_err(|e| CliError::Other(format!("Metal device: {e}")));
    }
    #[allow(unreachable_code)]
    Ok(Device::Cpu)
}

/// This machine's host name, for the DNS-rebinding guard.
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// A duration setting (Go duration or seconds); `None` when zero or negative.
fn duration_setting(name: &str, value: &str) -> Result<Option<Duration>, CliError> {
    match KeepAlive::parse(value) {
        Ok(KeepAlive::For(d)) if !d.is_zero() => Ok(Some(d)),
        Ok(_) => Ok(None),
        Err(e) => Err(CliError::Other(format!("invalid {name} {value:?}: {e}"))),
    }
}

pub async fn serve(host: &Host, cfg: ServeConfig) -> Result<(), CliError> {
    logging::init(logging::level_from_ollama_debug(cfg.debug.as_deref()));
    let request_timeout = match cfg.request_timeout.as_deref() {
        Some(v) if !v.trim().is_empty() => duration_setting("WICK_REQUEST_TIMEOUT", v)?,
        _ => None,
    };
    let header_timeout = duration_setting("WICK_HEADER_TIMEOUT", &cfg.header_timeout)?
        .ok_or_else(|| CliError::Other("WICK_HEADER_TIMEOUT must be positive".into()))?;
    let drain_timeout =
        duration_setting("WICK_SHUTDOWN_TIMEOUT", &cfg.shutdown_timeout)?.unwrap_or_default();
    if cfg.max_connections == 0 {
        return Err(CliError::Other(
            "WICK_MAX_CONNECTIONS must be positive".into(),
        ));
    }
    if cfg.max_body_bytes == Some(0) {
        return Err(CliError::Other(
            "WICK_MAX_BODY_BYTES must be positive".into(),
        ));
    }
    let api_key = cfg.api_key.as_deref().and_then(ApiKey::new);
    let keep_alive = KeepAlive::parse(&cfg.keep_alive).unwrap_or_else(|e| {
        tracing::warn!(value = %cfg.keep_alive, error = %e, "invalid OLLAMA_KEEP_ALIVE, using 5m");
        KeepAlive::For(std::time::Duration::from_secs(300))
    });
    let store = match &cfg.models {
        Some(dir) if !dir.as_os_str().is_empty() => Store::open(dir.clone()),
        _ => Store::from_env(),
    }
    .map_err(|e| CliError::Other(format!("opening the model store: {e}")))?;
    match store.fix_legacy_blob_names() {
        Ok(0) => {}
        Ok(n) => tracing::info!(renamed = n, "renamed legacy blob file names"),
        Err(e) => tracing::warn!(error = %e, "could not check legacy blob names"),
    }
    match store.prune_unreferenced(cfg.noprune) {
        Ok(r) if r.blobs_removed > 0 || r.temp_files_removed > 0 => tracing::info!(
            blobs = r.blobs_removed,
            bytes = r.bytes_freed,
            temp_files = r.temp_files_removed,
            "pruned unused blobs"
        ),
        Ok(r) => {
            if let Some(why) = r.skipped {
                tracing::info!(reason = %why, "blob pruning skipped");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not prune unused blobs"),
    }

    let kv_budget_bytes = cfg.kv_budget.unwrap_or_else(default_kv_budget);
    let scheduler = Scheduler::new(SchedulerConfig {
        max_loaded_models: if cfg.max_loaded_models == 0 {
            3
        } else {
            cfg.max_loaded_models
        },
        max_queue: if cfg.max_queue == 0 {
            512
        } else {
            cfg.max_queue
        },
        default_keep_alive: keep_alive,
        kv_budget_bytes,
        num_parallel: Some(cfg.num_parallel).filter(|n| *n > 0),
        default_num_ctx: cfg.context_length.filter(|n| *n > 0),
        device: device()?,
    });
    tracing::info!(
        models = %store.root().display(),
        ?keep_alive,
        kv_budget_bytes,
        api_key = api_key.is_some(),
        max_body_bytes = cfg.max_body_bytes.unwrap_or(wick_api::DEFAULT_MAX_BODY_BYTES),
        ?request_timeout,
        "starting wick"
    );
    let (bind_host, port) = host.bind_addr();
    let listener = tokio::net::TcpListener::bind((bind_host.as_str(), port))
        .await
        .map_err(|e| CliError::Other(format!("listening on {bind_host}:{port}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Other(e.to_string()))?;
    let state = AppState::new(
        scheduler,
        store,
        ApiConfig {
            no_prune: cfg.noprune,
            origins: cfg
                .origins
                .iter()
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect(),
            loopback_only: addr.ip().is_loopback(),
            hostname: hostname(),
            api_key,
            max_body_bytes: cfg.max_body_bytes,
            request_timeout,
            registry_push: cfg.registry_push,
        },
    );
    let deadline = state.shutdown.clone();
    let app = wick_api::app(state);
    // Tests that start the server on port 0 read the real address from this line.
    println!("Listening on {addr} (version {})", wick_api::OLLAMA_VERSION);
    tracing::info!(%addr, "listening");
    let limits = listen::ListenConfig {
        header_timeout,
        max_connections: cfg.max_connections,
        drain_timeout,
    };
    listen::serve(listener, app, limits, deadline, shutdown_signals()).await;
    tracing::info!("stopped");
    Ok(())
}

/// One message per Ctrl-C or SIGTERM: the first starts a graceful shutdown, a second
/// cuts its drain short. Stores are written atomically, so stopping is always safe.
fn shutdown_signals() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            #[cfg(unix)]
            let term_recv = async {
                match term.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let term_recv = std::future::pending::<()>();
            tokio::select! {
                r = tokio::signal::ctrl_c() => {
                    if r.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                () = term_recv => {}
            }
            if tx.send(()).await.is_err() {
                break;
            }
        }
    });
    rx
}
