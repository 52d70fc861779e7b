//! `tojson` as transformers defines it for chat templates: Python's
//! `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
//!
//! Unlike minijinja's built-in filter this does not HTML-escape, and it uses Python's
//! default separators (`", "` and `": "`, or `","` and `": "` with an indent) and
//! Python's float formatting, so the rendered prompt matches the one the model was
//! trained on byte for byte.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, Value};

/// Options of Python's `json.dumps` that templates pass to `tojson`.
#[derive(Debug, Clone)]
pub(crate) struct DumpOptions {
    pub ensure_ascii: bool,
    /// `None`: everything on one line; `Some(s)`: newlines, `s` repeated per level.
    pub indent: Option<String>,
    pub item_separator: String,
    pub key_separator: String,
    pub sort_keys: bool,
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions {
            ensure_ascii: false,
            indent: None,
            item_separator: ", ".into(),
            key_separator: ": ".into(),
            sort_keys: false,
        }
    }
}

impl DumpOptions {
    fn from_kwargs(kwargs: &Kwargs) -> Result<Self, Error> {
        let mut opts = DumpOptions {
            ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
            sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
            ..Default::default()
        };
        if let Some(indent) = kwargs.get::<Option<Value>>("indent")? {
            opts.indent = match indent.kind() {
                ValueKind::None | ValueKind::Undefined => None,
                ValueKind::String => Some(indent.as_str().unwrap_or_default().to_string()),
                _ => {
                    let n = i64::try_from(indent)?;
                    Some(" ".repeat(n.max(0) as usize))
                }
            };
            if opts.indent.is_some() {
                opts.item_separator = ",".into();
            }
        }
        if let Some(seps) = kwargs.get::<Option<Vec<String>>>("separators")? {
            let [item, key]: [String; 2] = seps.try_into().map_err(|_| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: separators must be a pair (item_separator, key_separator)",
                )
            })?;
            opts.item_separator = item;
            opts.key_separator = key;
        }
        kwargs.assert_all_used()?;
        Ok(opts)
    }
}

/// The `tojson` filter.
pub(crate) fn tojson_filter(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let opts = DumpOptions::from_kwargs(&kwargs)?;
    Ok(Value::from(dumps(value, &opts)?))
}

/// Serializes `value` like Python's `json.dumps` with `opts`.
pub(crate) fn dumps(value: &Value, opts: &DumpOptions) -> Result<String, Error> {
    let mut out = String::new();
    write_value(&mut out, value, opts, 0)?;
    Ok(out)
}

fn not_serializable(value: &Value) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "tojson: object of type {} is not JSON serializable",
            value.kind()
        ),
    )
}

fn write_value(
    out: &mut String,
    value: &Value,
    opts: &DumpOptions,
    depth: usize,
) -> Result<(), Error> {
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => write_number(out, value)?,
        ValueKind::String => {
            write_string(out, value.as_str().unwrap_or_default(), opts.ensure_ascii)
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, ('[', ']'), &items, opts, depth, |out, item, depth| {
                write_value(out, item, opts, depth)
            })?;
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                entries.push((key_string(&key)?, item));
            }
            if opts.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(
                out,
                ('{', '}'),
                &entries,
                opts,
                depth,
                |out, (key, item), depth| {
                    write_string(out, key, opts.ensure_ascii);
                    out.push_str(&opts.key_separator);
                    write_value(out, item, opts, depth)
                },
            )?;
        }
        _ => return Err(not_serializable(value)),
    }
    Ok(())
}

/// Writes `open items... close`, with Python's layout for `indent`.
fn write_container<T>(
    out: &mut String,
    (open, close): (char, char),
    items: &[T],
    opts: &DumpOptions,
    depth: usize,
    mut write_item: impl FnMut(&mut String, &T, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(indent) = &opts.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(indent);
            }
        }
    };
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&opts.item_separator);
        }
        newline(out, depth + 1);
        write_item(out, item, depth + 1)?;
    }
    newline(out, depth);
    out.push(close);
    Ok(())
}

/// Python converts `str`, `int`, `float`, `bool` and `None` keys to strings.
fn key_string(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_string()),
        ValueKind::Bool | ValueKind::None | ValueKind::Number => {
            let mut s = String::new();
            write_value(&mut s, key, &DumpOptions::default(), 0)?;
            Ok(s)
        }
        _ => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "tojson: keys must be str, int, float, bool or None, not {}",
                key.kind()
            ),
        )),
    }
}

fn write_number(out: &mut String, value: &Value) -> Result<(), Error> {
    if value.is_integer() {
        let _ = write!(out, "{value}");
    } else {
        out.push_str(&python_float_repr(f64::try_from(value.clone())?));
    }
    Ok(())
}

/// Python's `float.__repr__` (shortest round-trip digits; scientific notation outside
/// `1e-4 <= |x| < 1e16`), with `json.dumps`'s names for the non-finite values.
pub(crate) fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // Rust's `{:e}` gives the shortest digits that round-trip, e.g. "-1.25e-5".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').expect("LowerExp has an exponent");
    let exp: i32 = exp.parse().expect("LowerExp exponent is an integer");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::from(sign);
    if (-4..16).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            out.push_str(&"0".repeat((-exp - 1) as usize));
            out.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.push_str(&"0".repeat(int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    out
}

/// A JSON string literal as Python writes it (lowercase `\u00XX` escapes; with
/// `ensure_ascii`, everything outside printable ASCII as UTF-16 `\uXXXX` escapes).
fn write_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !(' '..='~').contains(&c)) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(json: &str, opts: &DumpOptions) -> String {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        dumps(&Value::from_serialize(&v), opts).unwrap()
    }

    #[test]
    fn python_separators_and_key_order() {
        let s = dump(
            r#"{"z": [1, 2.5, true, null], "a": {"b": "x"}, "e": {}, "l": []}"#,
            &DumpOptions::default(),
        );
        assert_eq!(
            s,
            r#"{"z": [1, 2.5, true, null], "a": {"b": "x"}, "e": {}, "l": []}"#
        );
    }

    #[test]
    fn indent_layout_matches_python() {
        let opts = DumpOptions {
            indent: Some("  ".into()),
            item_separator: ",".into(),
            ..Default::default()
        };
        let s = dump(r#"{"a": [1, {"b": null}], "c": []}"#, &opts);
        assert_eq!(
            s,
            "{\n  \"a\": [\n    1,\n    {\n      \"b\": null\n    }\n  ],\n  \"c\": []\n}"
        );
    }

    #[test]
    fn strings_are_escaped_like_python() {
        let s = dumps(
            &Value::from("é<&>'\"\\\n\t\u{1}\u{7f}😀"),
            &DumpOptions::default(),
        )
        .unwrap();
        assert_eq!(s, "\"é<&>'\\\"\\\\\\n\\t\\u0001\u{7f}😀\"");
        let ascii = DumpOptions {
            ensure_ascii: true,
            ..Default::default()
        };
        let s = dumps(&Value::from("é\u{7f}😀"), &ascii).unwrap();
        assert_eq!(s, r#""\u00e9\u007f\ud83d\ude00""#);
    }

    #[test]
    fn floats_use_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.2345678901234568e17, "1.2345678901234568e+17"),
            (123.456, "123.456"),
            (-0.0, "-0.0"),
            (f64::INFINITY, "Infinity"),
            (f64::NAN, "NaN"),
        ];
        for (f, want) in cases {
            assert_eq!(python_float_repr(f), want, "{f}");
        }
    }

    #[test]
    fn sort_keys_and_custom_separators() {
        let opts = DumpOptions {
            sort_keys: true,
            item_separator: ",".into(),
            key_separator: ":".into(),
            ..Default::default()
        };
        assert_eq!(
            dump(r#"{"b": 1, "a": [1, 2]}"#, &opts),
            r#"{"a":[1,2],"b":1}"#
        );
    }

    #[test]
    fn undefined_is_not_serializable() {
        assert!(dumps(&Value::UNDEFINED, &DumpOptions::default()).is_err());
    }
}
