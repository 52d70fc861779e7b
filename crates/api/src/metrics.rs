//! `/metrics`: the server's counters, gauges and histograms in the Prometheus text
//! format (0.0.4), or OpenMetrics for a scraper that asks for it in `Accept` (as
//! Prometheus does). The `prometheus-client` crate writes OpenMetrics; the classic
//! format differs only in naming a counter's family with its `_total` suffix and in
//! having no `# UNIT` and `# EOF` lines.
//!
//! Counters and histograms are updated as requests are served: requests by route
//! template (never the raw path) and status, per model the prompt and generated tokens,
//! time to first token, the time between streamed tokens, each request's decode rate
//! and model load times. Gauges (queue depth, running sequences, KV cache bytes, loaded
//! models) are read from the scheduler when scraped, so they cannot drift.
//!
//! Three unlabelled gauges are the model-server protocol of Kubernetes' Gateway API
//! Inference Extension (the signals its endpoint picker routes by): `wick_queue_depth`
//! (TotalQueuedRequests), `wick_running_requests` (TotalRunningRequests) and
//! `wick_kv_cache_utilization` (KVCacheUtilization, 0 to 1). `docs/deploy.md` has the
//! mapping and the picker's configuration.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use wick_engine::Stats;
use wick_scheduler::SchedulerStats;

use crate::access_log::RequestRecord;
use crate::AppState;

const OPENMETRICS: &str = "application/openmetrics-text";
const CONTENT_TYPE_OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const CONTENT_TYPE_PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets, in seconds or tokens per second.
const REQUEST_SECONDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
const FIRST_TOKEN_SECONDS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0,
];
const INTER_TOKEN_SECONDS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const TOKENS_PER_SECOND: [f64; 12] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 60.0, 100.0, 200.0, 400.0, 1000.0, 2000.0,
];
const LOAD_SECONDS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The matched route template (`/api/blobs/{digest}`), or `unmatched`.
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ModelLabels {
    model: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn histograms<L>(buckets: fn() -> Histogram) -> HistogramFamily<L>
where
    L: Clone + std::hash::Hash + Eq,
{
    Family::new_with_constructor(buckets)
}

/// Every metric of the server, and the registry that writes them out.
pub struct ServerMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: HistogramFamily<RouteLabels>,
    first_token_seconds: HistogramFamily<ModelLabels>,
    inter_token_seconds: HistogramFamily<ModelLabels>,
    decode_rate: HistogramFamily<ModelLabels>,
    prompt_tokens: Family<ModelLabels, Counter>,
    generated_tokens: Family<ModelLabels, Counter>,
    load_seconds: HistogramFamily<ModelLabels>,
    // Read from the scheduler at scrape time.
    queued: Gauge,
    running_total: Gauge,
    kv_utilization: Gauge<f64, AtomicU64>,
    running: Family<ModelLabels, Gauge>,
    kv_bytes: Family<ModelLabels, Gauge>,
    kv_budget_bytes: Gauge,
    weights_bytes: Family<ModelLabels, Gauge>,
    loaded_models: Gauge,
    /// One scrape at a time: gauges are refilled, then everything is written.
    scrape: Mutex<()>,
}

impl std::fmt::Debug for ServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerMetrics").finish_non_exhaustive()
    }
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerMetrics {
    pub fn new() -> Self {
        let mut m = ServerMetrics {
            registry: Registry::default(),
            requests: Family::default(),
            request_seconds: histograms(|| Histogram::new(REQUEST_SECONDS)),
            first_token_seconds: histograms(|| Histogram::new(FIRST_TOKEN_SECONDS)),
            inter_token_seconds: histograms(|| Histogram::new(INTER_TOKEN_SECONDS)),
            decode_rate: histograms(|| Histogram::new(TOKENS_PER_SECOND)),
            prompt_tokens: Family::default(),
            generated_tokens: Family::default(),
            load_seconds: histograms(|| Histogram::new(LOAD_SECONDS)),
            queued: Gauge::default(),
            running_total: Gauge::default(),
            kv_utilization: Gauge::default(),
            running: Family::default(),
            kv_bytes: Family::default(),
            kv_budget_bytes: Gauge::default(),
            weights_bytes: Family::default(),
            loaded_models: Gauge::default(),
            scrape: Mutex::new(()),
        };
        m.register();
        m
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "wick_http_requests",
            "HTTP requests answered, by method, route template and status",
            self.requests.clone(),
        );
        r.register_with_unit(
            "wick_http_request_duration",
            "Time from a request's arrival to the end of its response body",
            Unit::Seconds,
            self.request_seconds.clone(),
        );
        r.register_with_unit(
            "wick_time_to_first_token",
            "Time from a generation request's arrival to its first generated text",
            Unit::Seconds,
            self.first_token_seconds.clone(),
        );
        r.register_with_unit(
            "wick_inter_token_latency",
            "Time between successive pieces of generated text of one request",
            Unit::Seconds,
            self.inter_token_seconds.clone(),
        );
        r.register(
            "wick_decode_tokens_per_second",
            "Each finished generation's decode rate (generated tokens / decode time)",
            self.decode_rate.clone(),
        );
        r.register(
            "wick_prompt_tokens",
            "Prompt tokens evaluated",
            self.prompt_tokens.clone(),
        );
        r.register(
            "wick_generated_tokens",
            "Tokens generated",
            self.generated_tokens.clone(),
        );
        r.register_with_unit(
            "wick_model_load_duration",
            "Time to load a model",
            Unit::Seconds,
            self.load_seconds.clone(),
        );
        r.register(
            "wick_queue_depth",
            "Requests submitted and waiting for a slot in a model's batch",
            self.queued.clone(),
        );
        r.register(
            "wick_running_requests",
            "Sequences being served on all models (a request with n choices counts n)",
            self.running_total.clone(),
        );
        r.register(
            "wick_kv_cache_utilization",
            "KV cache in use as a fraction (0 to 1) of the budget, of the fullest loaded model",
            self.kv_utilization.clone(),
        );
        r.register(
            "wick_running_sequences",
            "Sequences in a model's batch (prefilling or generating)",
            self.running.clone(),
        );
        r.register_with_unit(
            "wick_kv_cache_used",
            "KV cache bytes a model holds, reusable prefixes included",
            Unit::Bytes,
            self.kv_bytes.clone(),
        );
        r.register_with_unit(
            "wick_kv_cache_budget",
            "KV cache bytes one model's sequences may hold together (WICK_KV_BUDGET)",
            Unit::Bytes,
            self.kv_budget_bytes.clone(),
        );
        r.register_with_unit(
            "wick_model_weights",
            "Bytes of a loaded model's weights",
            Unit::Bytes,
            self.weights_bytes.clone(),
        );
        r.register(
            "wick_loaded_models",
            "Models loaded now",
            self.loaded_models.clone(),
        );
    }

    /// Count an answered request (at the time its status is known).
    pub(crate) fn count_request(&self, method: &Method, route: &str, status: StatusCode) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.as_str().to_string(),
                route: route.to_string(),
                status: status.as_u16(),
            })
            .inc();
    }

    /// A request's whole duration, when its response body ended.
    pub(crate) fn observe_request(&self, method: &Method, route: &str, took: Duration) {
        self.request_seconds
            .get_or_create(&RouteLabels {
                method: method.as_str().to_string(),
                route: route.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn observe_load(&self, model: &str, took: Duration) {
        self.load_seconds
            .get_or_create(&model_labels(model))
            .observe(took.as_secs_f64());
    }

    /// The whole exposition, with the gauges read from `stats`.
    pub fn render(&self, stats: &SchedulerStats) -> Result<String, std::fmt::Error> {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.queued.set(gauge_value(stats.queued()));
        self.running_total.set(gauge_value(stats.running()));
        self.kv_utilization.set(kv_utilization(stats));
        self.kv_budget_bytes.set(gauge_value(stats.kv_budget_bytes));
        self.loaded_models.set(gauge_value(stats.models.len()));
        // Unloaded models disappear from the per-model gauges.
        self.running.clear();
        self.kv_bytes.clear();
        self.weights_bytes.clear();
        for m in &stats.models {
            let l = model_labels(&m.name);
            self.running
                .get_or_create(&l)
                .set(gauge_value(m.running_sequences));
            self.kv_bytes.get_or_create(&l).set(gauge_value(m.kv_bytes));
            self.weights_bytes
                .get_or_create(&l)
                .set(gauge_value(m.weights_bytes));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn model_labels(model: &str) -> ModelLabels {
    ModelLabels {
        model: model.to_string(),
    }
}

/// The fullest model's KV cache bytes over the per-model budget, within 0..=1 (0 with
/// nothing loaded or no budget). Reusable prefixes count as used until evicted.
fn kv_utilization(stats: &SchedulerStats) -> f64 {
    if stats.kv_budget_bytes == 0 {
        return 0.0;
    }
    let fullest = stats.models.iter().map(|m| m.kv_bytes).max().unwrap_or(0);
    (fullest as f64 / stats.kv_budget_bytes as f64).clamp(0.0, 1.0)
}

fn gauge_value(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let stats = state.scheduler.stats();
    let text = match state.metrics.render(&stats) {
        Ok(text) => text,
        Err(e) => {
            return crate::ApiError::internal(format!("encoding metrics: {e}")).into_response()
        }
    };
    let wants_openmetrics = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(OPENMETRICS));
    if wants_openmetrics {
        ([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], text).into_response()
    } else {
        let text = to_prometheus_text(&text);
        ([(CONTENT_TYPE, CONTENT_TYPE_PROMETHEUS)], text).into_response()
    }
}

/// OpenMetrics text as the classic Prometheus text format: counter families take
/// their samples' `_total` name; `# UNIT` and `# EOF` lines go.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let total = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{prefix}{name}{total} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Timings of one generation: time to first text, time between texts, and at the end
/// its token counts and decode rate (also noted in the request's log line).
pub(crate) struct GenerationMeter {
    metrics: Arc<ServerMetrics>,
    labels: ModelLabels,
    started: Instant,
    last_text: Option<Instant>,
    /// The prompt's tokens are counted once, however many choices share it.
    prompt_counted: bool,
    record: Option<Arc<RequestRecord>>,
}

impl GenerationMeter {
    pub fn new(metrics: Arc<ServerMetrics>, model: &str, started: Instant) -> Self {
        GenerationMeter {
            metrics,
            labels: model_labels(model),
            started,
            last_text: None,
            prompt_counted: false,
            record: RequestRecord::current(),
        }
    }

    /// Generated text arrived.
    pub fn text(&mut self) {
        let now = Instant::now();
        let (histogram, since) = match self.last_text {
            None => (&self.metrics.first_token_seconds, self.started),
            Some(prev) => (&self.metrics.inter_token_seconds, prev),
        };
        histogram
            .get_or_create(&self.labels)
            .observe(now.duration_since(since).as_secs_f64());
        if self.last_text.is_none() {
            if let Some(r) = &self.record {
                r.first_token(now.duration_since(self.started));
            }
        }
        self.last_text = Some(now);
    }

    /// The generation finished.
    pub fn done(&mut self, stats: &Stats) {
        let m = &self.metrics;
        let prompt = if self.prompt_counted {
            0
        } else {
            stats.prompt_eval_count
        };
        self.prompt_counted = true;
        m.prompt_tokens
            .get_or_create(&self.labels)
            .inc_by(prompt as u64);
        m.generated_tokens
            .get_or_create(&self.labels)
            .inc_by(stats.eval_count as u64);
        let secs = stats.eval_duration.as_secs_f64();
        if stats.eval_count > 0 && secs > 0.0 {
            m.decode_rate
                .get_or_create(&self.labels)
                .observe(stats.eval_count as f64 / secs);
        }
        if let Some(r) = &self.record {
            r.tokens(prompt, stats.eval_count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wick_scheduler::ModelStats;

    #[test]
    fn exposition_names_follow_prometheus_conventions() {
        let m = Arc::new(ServerMetrics::new());
        m.count_request(&Method::POST, "/api/generate", StatusCode::OK);
        m.observe_load("smol:1", Duration::from_millis(300));
        let mut meter = GenerationMeter::new(m.clone(), "smol:1", Instant::now());
        meter.text();
        meter.text();
        meter.done(&Stats {
            prompt_eval_count: 7,
            prompt_cached: 0,
            prompt_eval_duration: Duration::from_millis(5),
            eval_count: 4,
            eval_duration: Duration::from_millis(40),
        });
        let stats = SchedulerStats {
            pending: 3,
            kv_budget_bytes: 1 << 30,
            models: vec![
                ModelStats {
                    name: "smol:1".into(),
                    running_sequences: 2,
                    kv_bytes: 4096,
                    weights_bytes: 1000,
                },
                ModelStats {
                    name: "big:1".into(),
                    running_sequences: 0,
                    kv_bytes: 1 << 28,
                    weights_bytes: 1000,
                },
            ],
        };
        let text = m.render(&stats).unwrap();
        for line in [
            "wick_http_requests_total{method=\"POST\",route=\"/api/generate\",status=\"200\"} 1",
            "wick_prompt_tokens_total{model=\"smol:1\"} 7",
            "wick_generated_tokens_total{model=\"smol:1\"} 4",
            "wick_time_to_first_token_seconds_count{model=\"smol:1\"} 1",
            "wick_inter_token_latency_seconds_count{model=\"smol:1\"} 1",
            "wick_decode_tokens_per_second_count{model=\"smol:1\"} 1",
            "wick_model_load_duration_seconds_count{model=\"smol:1\"} 1",
            "wick_queue_depth 1",
            "wick_running_requests 2",
            "wick_kv_cache_utilization 0.25",
            "wick_running_sequences{model=\"smol:1\"} 2",
            "wick_kv_cache_used_bytes{model=\"smol:1\"} 4096",
            "wick_kv_cache_budget_bytes 1073741824",
            "wick_loaded_models 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        let classic = to_prometheus_text(&text);
        assert!(classic.contains("# TYPE wick_http_requests_total counter\n"));
        assert!(classic.contains("# HELP wick_prompt_tokens_total Prompt tokens"));
        assert!(classic.contains("# TYPE wick_time_to_first_token_seconds histogram\n"));
        assert!(!classic.contains("# UNIT") && !classic.contains("# EOF"));
        assert_eq!(
            classic.lines().filter(|l| !l.starts_with('#')).count(),
            text.lines().filter(|l| !l.starts_with('#')).count()
        );
        // An unloaded model leaves the per-model gauges.
        let text = m.render(&SchedulerStats::default()).unwrap();
        assert!(!text.contains("wick_running_sequences{"), "{text}");
        assert!(text.contains("wick_loaded_models 0"));
        assert!(
            text.lines().any(|l| l == "wick_running_requests 0"),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l == "wick_kv_cache_utilization 0.0"),
            "{text}"
        );
    }
}
