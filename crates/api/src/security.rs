//! Ollama's browser protections.
//!
//! - CORS: browsers may call the API from the local origins Ollama allows
//!   (`http(s)://localhost|127.0.0.1|0.0.0.0[:port]`, `app://`, `file://`, `tauri://`,
//!   `vscode-webview://`, `vscode-file://`) and from `OLLAMA_ORIGINS` (comma list,
//!   `*` wildcards).
//! - DNS-rebinding guard: a server bound to a loopback address answers only requests
//!   whose `Host` is a local name or a loopback/private/unspecified address; others get
//!   403 (`allowedHostsMiddleware`).

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::ApiConfig;

const BUILTIN_ORIGINS: &[&str] = &[
    "http://localhost",
    "https://localhost",
    "http://localhost:*",
    "https://localhost:*",
    "http://127.0.0.1",
    "https://127.0.0.1",
    "http://127.0.0.1:*",
    "https://127.0.0.1:*",
    "http://0.0.0.0",
    "https://0.0.0.0",
    "http://0.0.0.0:*",
    "https://0.0.0.0:*",
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
];

/// `pattern` with `*` matching any run of characters.
fn wildcard_match(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || !s[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

pub(crate) fn origin_allowed(origin: &str, extra: &[String]) -> bool {
    BUILTIN_ORIGINS
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .any(|p| p == "*" || wildcard_match(p, origin))
}

pub(crate) fn cors(config: &ApiConfig) -> CorsLayer {
    let extra = config.origins.clone();
    let mut headers = vec![
        header::AUTHORIZATION,
        header::CONTENT_TYPE,
        header::USER_AGENT,
        header::ACCEPT,
        HeaderName::from_static("x-requested-with"),
        HeaderName::from_static("openai-beta"),
    ];
    for h in [
        "x-stainless-arch",
        "x-stainless-async",
        "x-stainless-custom-poll-interval",
        "x-stainless-helper-method",
        "x-stainless-lang",
        "x-stainless-os",
        "x-stainless-package-version",
        "x-stainless-poll-helper",
        "x-stainless-retry-count",
        "x-stainless-runtime",
        "x-stainless-runtime-version",
        "x-stainless-timeout",
    ] {
        headers.push(HeaderName::from_static(h));
    }
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin.to_str().is_ok_and(|o| origin_allowed(o, &extra))
        }))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::HEAD,
            Method::OPTIONS,
        ])
        .allow_headers(headers)
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_link_local(),
        // fc00::/7 unique local addresses.
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// Whether a `Host` header (without the port) may reach a loopback-bound server.
pub(crate) fn host_allowed(host: &str, hostname: Option<&str>) -> bool {
    let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
    if let Ok(ip) = host.parse::<IpAddr>() {
        return ip.is_loopback() || ip.is_unspecified() || is_private(ip);
    }
    host.is_empty()
        || host == "localhost"
        || hostname.is_some_and(|h| h.eq_ignore_ascii_case(&host))
        || [".localhost", ".local", ".internal"]
            .iter()
            .any(|tld| host.ends_with(tld))
}

/// Split `host:port` / `[v6]:port` / `host`.
fn host_part(authority: &str) -> &str {
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

pub(crate) async fn guard_hosts(
    State(config): State<Arc<ApiConfig>>,
    req: Request,
    next: Next,
) -> Response {
    if config.loopback_only {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(host_part)
            .unwrap_or_default();
        if !host_allowed(host, config.hostname.as_deref()) {
            tracing::warn!(host, "refusing a request for a non-local host name");
            return StatusCode::FORBIDDEN.into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert!(origin_allowed("http://localhost:3000", &[]));
        assert!(origin_allowed("http://127.0.0.1", &[]));
        assert!(origin_allowed("vscode-webview://abc", &[]));
        assert!(!origin_allowed("https://evil.example", &[]));
        assert!(origin_allowed(
            "https://app.example.com",
            &["https://*.example.com".into()]
        ));
        assert!(origin_allowed("https://x.y", &["*".into()]));
    }

    #[test]
    fn hosts() {
        for ok in [
            "localhost",
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "0.0.0.0",
            "a.localhost",
            "box.local",
            "",
            "myhost",
        ] {
            assert!(host_allowed(ok, Some("myhost")), "{ok}");
        }
        for bad in ["evil.example", "8.8.8.8", "localhost.evil.com"] {
            assert!(!host_allowed(bad, Some("myhost")), "{bad}");
        }
        assert_eq!(host_part("localhost:11434"), "localhost");
        assert_eq!(host_part("[::1]:80"), "::1");
        assert_eq!(host_part("::1"), "::1");
    }
}
