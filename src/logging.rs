//! The server's logs: `tracing` to stderr, at the level `OLLAMA_DEBUG` selects as
//! Ollama reads it (`RUST_LOG` overrides).

use tracing_subscriber::filter::LevelFilter;

/// `OLLAMA_DEBUG` as Ollama's `envconfig.LogLevel` reads it: quotes and blanks
/// trimmed, a Go bool (`1`, `t`, `true`, ...) is debug and a false one info, else an
/// integer `n` is slog level `-4n` (`2` trace; `-1` warnings, `-2` errors only, below
/// that nothing); anything else is info.
pub fn level_from_ollama_debug(value: Option<&str>) -> LevelFilter {
    let Some(v) = value.map(|v| v.trim().trim_matches(['"', '\''])) else {
        return LevelFilter::INFO;
    };
    if v.is_empty() {
        return LevelFilter::INFO;
    }
    match go_parse_bool(v) {
        Some(true) => return LevelFilter::DEBUG,
        Some(false) => return LevelFilter::INFO,
        None => {}
    }
    let Some(n) = go_parse_int(v).filter(|n| *n != 0) else {
        return LevelFilter::INFO;
    };
    // slog levels: DEBUG -4, INFO 0, WARN 4, ERROR 8; Ollama's TRACE is -8. A handler
    // at level L shows records at L and above.
    match n.saturating_mul(-4) {
        l if l <= -8 => LevelFilter::TRACE,
        l if l <= -4 => LevelFilter::DEBUG,
        l if l <= 0 => LevelFilter::INFO,
        l if l <= 4 => LevelFilter::WARN,
        l if l <= 8 => LevelFilter::ERROR,
        _ => LevelFilter::OFF,
    }
}

/// Go's `strconv.ParseBool`.
fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseInt(s, 10, 64)`: an optional sign and decimal digits only.
fn go_parse_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Install the subscriber. At debug and trace, the HTTP stack's own chatter stays at
/// info.
pub fn init(level: LevelFilter) {
    let directives = if level > LevelFilter::INFO {
        format!("{level},hyper=info,hyper_util=info,h2=info,tower=info,reqwest=info")
    } else {
        level.to_string()
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(directives));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollama_debug_levels() {
        let l = |v: &str| level_from_ollama_debug(Some(v));
        assert_eq!(level_from_ollama_debug(None), LevelFilter::INFO);
        assert_eq!(l(""), LevelFilter::INFO);
        for debug in [
            "1", "true", "TRUE", "True", "t", "T", " 1 ", "\"1\"", "'true'",
        ] {
            assert_eq!(l(debug), LevelFilter::DEBUG, "{debug}");
        }
        for info in [
            "0", "false", "FALSE", "f", "F", "no", "yes", "on", "1.5", "0x2",
        ] {
            assert_eq!(l(info), LevelFilter::INFO, "{info}");
        }
        assert_eq!(l("2"), LevelFilter::TRACE);
        assert_eq!(l("+2"), LevelFilter::TRACE);
        assert_eq!(l("3"), LevelFilter::TRACE);
        assert_eq!(l("-1"), LevelFilter::WARN);
        assert_eq!(l("-2"), LevelFilter::ERROR);
        assert_eq!(l("-3"), LevelFilter::OFF);
    }
}
