//! The client side of the registry protocol, shared by pull and push: where a model
//! lives (base URL and repository), and an HTTP client that answers a registry's
//! bearer-token challenge.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use wick_store::ModelName;

/// Why talking to a registry failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    Registry(String),
}

/// Where a model lives: the registry's base URL and the repository path.
pub(crate) struct Target {
    pub(crate) base: String,
    repository: String,
    tag: String,
}

impl Target {
    pub(crate) fn new(name: &ModelName, insecure: bool) -> Self {
        let scheme = if insecure { "http" } else { "https" };
        Target {
            base: format!("{scheme}://{}", name.host()),
            repository: format!("{}/{}", name.namespace(), name.model()),
            tag: name.tag().to_string(),
        }
    }

    pub(crate) fn manifest_url(&self) -> String {
        format!(
            "{}/v2/{}/manifests/{}",
            self.base, self.repository, self.tag
        )
    }

    pub(crate) fn blob_url(&self, digest: &str) -> String {
        format!("{}/v2/{}/blobs/{digest}", self.base, self.repository)
    }

    pub(crate) fn uploads_url(&self) -> String {
        format!("{}/v2/{}/blobs/uploads/", self.base, self.repository)
    }

    /// An upload `Location` as the registry gave it (often a path) made absolute.
    pub(crate) fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}/{}", self.base, location.trim_start_matches('/'))
        }
    }
}

/// An HTTP client for one pull or push, holding the bearer token once a registry issued one.
pub(crate) struct Registry {
    http: reqwest::Client,
    token: tokio::sync::Mutex<Option<String>>,
}

impl Registry {
    pub(crate) fn new() -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()?;
        // `WICK_REGISTRY_KEY`: the key of a registry that wants one (another wick
        // started with `WICK_API_KEY`), sent as the bearer token from the first request.
        let key = std::env::var("WICK_REGISTRY_KEY")
            .ok()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty());
        Ok(Registry {
            http,
            token: tokio::sync::Mutex::new(key),
        })
    }

    /// GET `url`, answering one bearer-token challenge.
    pub(crate) async fn get(
        &self,
        url: &str,
        headers: &[(reqwest::header::HeaderName, String)],
    ) -> Result<reqwest::Response, ClientError> {
        self.send_small(Method::GET, url, headers).await
    }

    /// A request without a body (GET, HEAD), answering one bearer-token challenge.
    pub(crate) async fn send_small(
        &self,
        method: Method,
        url: &str,
        headers: &[(reqwest::header::HeaderName, String)],
    ) -> Result<reqwest::Response, ClientError> {
        for attempt in 0..2 {
            let mut req = self.http.request(method.clone(), url);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            if let Some(t) = self.token.lock().await.as_deref() {
                req = req.header(AUTHORIZATION, format!("Bearer {t}"));
            }
            let resp = req.send().await?;
            if resp.status() != StatusCode::UNAUTHORIZED || attempt == 1 {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(BearerChallenge::parse)
                .ok_or_else(|| ClientError::Registry("unauthorized".into()))?;
            let token = self.fetch_token(&challenge).await?;
            *self.token.lock().await = Some(token);
        }
        Err(ClientError::Registry("unauthorized".into()))
    }

    /// A request with the bearer token this client holds, if any (for requests whose
    /// body cannot be sent twice: the token was obtained by an earlier request).
    pub(crate) async fn authorized(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, url);
        match self.token.lock().await.as_deref() {
            Some(t) => req.header(AUTHORIZATION, format!("Bearer {t}")),
            None => req,
        }
    }

    async fn fetch_token(&self, c: &BearerChallenge) -> Result<String, ClientError> {
        let mut query = Vec::new();
        if let Some(s) = &c.service {
            query.push(("service", s.as_str()));
        }
        if let Some(s) = &c.scope {
            query.push(("scope", s.as_str()));
        }
        let resp = self.http.get(&c.realm).query(&query).send().await?;
        if !resp.status().is_success() {
            return Err(ClientError::Registry(format!(
                "getting a registry token: {}",
                resp.status()
            )));
        }
        let body: Value = resp.json().await?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ClientError::Registry("the registry's token answer has no token".into()))
    }
}

/// `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`.
#[derive(Debug, PartialEq)]
struct BearerChallenge {
    realm: String,
    service: Option<String>,
    scope: Option<String>,
}

impl BearerChallenge {
    fn parse(header: &str) -> Option<Self> {
        let rest = header.trim().strip_prefix("Bearer ")?;
        let mut fields = HashMap::new();
        let mut s = rest;
        while !s.is_empty() {
            let (key, after) = s.split_once('=')?;
            let after = after.trim_start();
            let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            } else {
                after.split_once(',').unwrap_or((after, ""))
            };
            fields.insert(key.trim().to_ascii_lowercase(), value.to_string());
            s = tail.trim_start_matches([',', ' ']);
        }
        Some(BearerChallenge {
            realm: fields.remove("realm")?,
            service: fields.remove("service"),
            scope: fields.remove("scope"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges() {
        let c = BearerChallenge::parse(
            r#"Bearer realm="https://ollama.com/token",service="ollama.com",scope="repository:library/qwen:pull""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://ollama.com/token");
        assert_eq!(c.service.as_deref(), Some("ollama.com"));
        assert_eq!(c.scope.as_deref(), Some("repository:library/qwen:pull"));
        assert_eq!(BearerChallenge::parse("Basic realm=\"x\""), None);
        assert_eq!(BearerChallenge::parse("Bearer service=\"x\""), None);
    }

    #[test]
    fn targets() {
        let name = ModelName::parse("127.0.0.1:5000/library/qwen:0.5b").unwrap();
        let t = Target::new(&name, true);
        assert_eq!(
            t.manifest_url(),
            "http://127.0.0.1:5000/v2/library/qwen/manifests/0.5b"
        );
        assert_eq!(
            t.blob_url("sha256:ab"),
            "http://127.0.0.1:5000/v2/library/qwen/blobs/sha256:ab"
        );
        let t = Target::new(&ModelName::parse("qwen").unwrap(), false);
        assert_eq!(
            t.manifest_url(),
            "https://registry.ollama.ai/v2/library/qwen/manifests/latest"
        );
        // Hugging Face serves its GGUF repositories over the same protocol.
        let name = ModelName::parse("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M").unwrap();
        assert_eq!(
            Target::new(&name, false).manifest_url(),
            "https://hf.co/v2/bartowski/Llama-3.2-1B-Instruct-GGUF/manifests/Q4_K_M"
        );
    }
}
