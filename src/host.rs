//! `OLLAMA_HOST`, parsed like Ollama's `envconfig.Host()`: `host`, `host:port`,
//! `:port`, `scheme://host[:port][/path]`; the default is `127.0.0.1:11434`, and a
//! scheme without a port means 80 (http) or 443 (https).

use std::fmt;

pub const DEFAULT_PORT: u16 = 11434;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub scheme: String,
    /// Empty means every interface (server) or this machine (client).
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Host {
    pub fn parse(s: &str) -> Host {
        let s = s.trim().trim_matches(|c| c == '"' || c == '\'');
        let (scheme, hostport, default_port) = match s.split_once("://") {
            None => ("http", s, DEFAULT_PORT),
            Some(("https", rest)) => ("https", rest, 443),
            Some(("http", rest)) => ("http", rest, 80),
            Some((other, rest)) => (other, rest, DEFAULT_PORT),
        };
        let (hostport, path) = match hostport.split_once('/') {
            Some((hp, p)) => (hp, p),
            None => (hostport, ""),
        };
        let (host, port) = match split_host_port(hostport) {
            Some((h, p)) => match p.parse::<u16>() {
                Ok(port) => (h.to_string(), port),
                Err(_) => {
                    eprintln!("warning: invalid port {p:?} in OLLAMA_HOST, using {default_port}");
                    (h.to_string(), default_port)
                }
            },
            None if hostport.is_empty() => ("127.0.0.1".to_string(), default_port),
            None => (hostport.trim_matches(['[', ']']).to_string(), default_port),
        };
        Host {
            scheme: scheme.to_string(),
            host,
            port,
            path: path.to_string(),
        }
    }

    /// The address the server binds: an empty host means all interfaces.
    pub fn bind_addr(&self) -> (String, u16) {
        let host = if self.host.is_empty() {
            "0.0.0.0".to_string()
        } else {
            self.host.clone()
        };
        (host, self.port)
    }

    /// The base URL clients use: an unspecified address means this machine.
    pub fn base_url(&self) -> String {
        let host = match self.host.as_str() {
            "" | "0.0.0.0" => "127.0.0.1".to_string(),
            "::" => "[::1]".to_string(),
            h if h.contains(':') => format!("[{h}]"),
            h => h.to_string(),
        };
        let path = if self.path.is_empty() {
            String::new()
        } else {
            format!("/{}", self.path.trim_end_matches('/'))
        };
        format!("{}://{}:{}{}", self.scheme, host, self.port, path)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base_url())
    }
}

/// Go's `net.SplitHostPort`: `host:port`, `[v6]:port`, `:port`.
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((h, port));
    }
    let (h, p) = s.rsplit_once(':')?;
    if h.contains(':') {
        return None;
    }
    Some((h, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(s: &str) -> (String, u16) {
        let h = Host::parse(s);
        (h.host, h.port)
    }

    #[test]
    fn forms() {
        assert_eq!(hp(""), ("127.0.0.1".into(), 11434));
        assert_eq!(hp("0.0.0.0"), ("0.0.0.0".into(), 11434));
        assert_eq!(hp("1.2.3.4:5678"), ("1.2.3.4".into(), 5678));
        assert_eq!(hp(":1234"), ("".into(), 1234));
        assert_eq!(hp("http://example.com"), ("example.com".into(), 80));
        assert_eq!(hp("https://example.com"), ("example.com".into(), 443));
        assert_eq!(
            hp("http://example.com:9000/x"),
            ("example.com".into(), 9000)
        );
        assert_eq!(hp("[::1]:8080"), ("::1".into(), 8080));
        assert_eq!(hp("::1"), ("::1".into(), 11434));
        assert_eq!(hp("localhost:bad"), ("localhost".into(), 11434));
    }

    #[test]
    fn urls() {
        assert_eq!(Host::parse("").base_url(), "http://127.0.0.1:11434");
        assert_eq!(Host::parse(":99").base_url(), "http://127.0.0.1:99");
        assert_eq!(Host::parse("0.0.0.0:1").base_url(), "http://127.0.0.1:1");
        assert_eq!(Host::parse("[::1]:2").base_url(), "http://[::1]:2");
        assert_eq!(
            Host::parse("http://h:3/prefix/").base_url(),
            "http://h:3/prefix"
        );
        assert_eq!(Host::parse(":99").bind_addr(), ("0.0.0.0".into(), 99));
    }
}
