//! `keep_alive`: how long a model stays loaded after its last request.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    Forever,
    /// Zero unloads right after the request.
    For(Duration),
}

impl KeepAlive {
    /// From seconds as Ollama reads a JSON number: negative means forever.
    pub fn from_secs_f64(secs: f64) -> Self {
        if secs < 0.0 || !secs.is_finite() || secs > 1e12 {
            KeepAlive::Forever
        } else {
            KeepAlive::For(Duration::from_secs_f64(secs))
        }
    }

    /// Parse a Go duration string (`"5m"`, `"1h30m"`, `"-1"`, `"300ms"`); a bare number
    /// is seconds. Negative means forever.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(secs) = s.parse::<f64>() {
            return Ok(Self::from_secs_f64(secs));
        }
        let nanos = parse_go_duration(s)?;
        Ok(if nanos < 0.0 {
            KeepAlive::Forever
        } else {
            KeepAlive::For(Duration::from_nanos(nanos as u64))
        })
    }
}

/// Go's `time.ParseDuration`: an optional sign then `<decimal><unit>` pairs, units
/// `ns us µs ms s m h`. Returns nanoseconds.
pub fn parse_go_duration(s: &str) -> Result<f64, String> {
    let bad = || format!("time: invalid duration \"{s}\"");
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0.0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration \"{s}\""))?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            u => return Err(format!("time: unknown unit \"{u}\" in duration \"{s}\"")),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Ok(if neg { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(
            KeepAlive::parse("5m"),
            Ok(KeepAlive::For(Duration::from_secs(300)))
        );
        assert_eq!(
            KeepAlive::parse("1h30m"),
            Ok(KeepAlive::For(Duration::from_secs(5400)))
        );
        assert_eq!(
            KeepAlive::parse("300ms"),
            Ok(KeepAlive::For(Duration::from_millis(300)))
        );
        assert_eq!(
            KeepAlive::parse("1.5s"),
            Ok(KeepAlive::For(Duration::from_millis(1500)))
        );
        assert_eq!(KeepAlive::parse("0"), Ok(KeepAlive::For(Duration::ZERO)));
        assert_eq!(KeepAlive::parse("-1"), Ok(KeepAlive::Forever));
        assert_eq!(KeepAlive::parse("-1m"), Ok(KeepAlive::Forever));
        assert_eq!(
            KeepAlive::parse("30"),
            Ok(KeepAlive::For(Duration::from_secs(30)))
        );
        assert!(KeepAlive::parse("5x").is_err());
        assert!(KeepAlive::parse("m").is_err());
        assert!(KeepAlive::parse("").is_err());
    }

    #[test]
    fn numbers_are_seconds() {
        assert_eq!(KeepAlive::from_secs_f64(-5.0), KeepAlive::Forever);
        assert_eq!(
            KeepAlive::from_secs_f64(2.5),
            KeepAlive::For(Duration::from_millis(2500))
        );
    }
}
