//! The data a Go template executes over, modelled on what Go's `reflect` sees in
//! Ollama's template data: untyped `nil`, basic kinds, slices, maps and structs.
//!
//! A value knows how Go's `fmt` prints it (`{a b}` for a struct, `[x y]` for a slice,
//! `map[k:v]` for a map, or its `String()` method's text) and how Go's
//! `encoding/json` marshals it (compact, `<>&` escaped, struct json tags).

use std::fmt::Write as _;
use std::sync::Arc;

/// One value in a template's data.
#[derive(Debug, Clone, Default)]
pub enum Value {
    /// Go's untyped `nil` (a nil `interface{}`), also what a missing map key gives.
    #[default]
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Arc<str>),
    List(Arc<List>),
    Map(Arc<Map>),
    Struct(Arc<Struct>),
}

/// A Go slice.
#[derive(Debug, Clone, Default)]
pub struct List {
    pub items: Vec<Value>,
    /// A nil slice: marshals as `null` (prints as `[]` like any empty slice).
    pub nil: bool,
    /// Printed through a `String()` method that returns its JSON.
    pub print_json: bool,
    /// Ollama's `PropertyType`: one item prints and marshals as that item alone.
    pub one_or_many: bool,
}

/// A Go map with string keys, or an insertion-ordered JSON object.
#[derive(Debug, Clone, Default)]
pub struct Map {
    /// Sorted by key for a Go map (Go ranges and marshals maps in key order); in
    /// insertion order for an ordered object.
    pub entries: Vec<(String, Value)>,
    /// A nil map: marshals as `null`.
    pub nil: bool,
    /// Printed through a `String()` method that returns its JSON (`{}` when nil).
    pub print_json: bool,
}

/// A Go struct: exported fields in declaration order.
#[derive(Debug, Clone, Default)]
pub struct Struct {
    pub type_name: &'static str,
    pub fields: Vec<Field>,
    /// Printed through a `String()` method that returns its JSON.
    pub print_json: bool,
}

/// One struct field: its Go name, its json tag and its value.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: &'static str,
    /// The key in JSON (the Go name when the struct has no tag for it).
    pub json: &'static str,
    pub omitempty: bool,
    pub value: Value,
}

impl Field {
    pub fn new(name: &'static str, value: Value) -> Field {
        Field {
            name,
            json: name,
            omitempty: false,
            value,
        }
    }

    pub fn tagged(name: &'static str, json: &'static str, omitempty: bool, value: Value) -> Field {
        Field {
            name,
            json,
            omitempty,
            value,
        }
    }
}

impl Map {
    /// A Go map: keys sorted.
    pub fn sorted(mut entries: Vec<(String, Value)>) -> Map {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|b, a| a.0 == b.0);
        Map {
            entries,
            ..Default::default()
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl Struct {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| &f.value)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(Arc::from(s))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(Arc::from(s))
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<List> for Value {
    fn from(l: List) -> Value {
        Value::List(Arc::new(l))
    }
}

impl From<Map> for Value {
    fn from(m: Map) -> Value {
        Value::Map(Arc::new(m))
    }
}

impl From<Struct> for Value {
    fn from(s: Struct) -> Value {
        Value::Struct(Arc::new(s))
    }
}

impl Value {
    /// The bytes of text this value carries itself (a string's length, 0 otherwise):
    /// what the executor's size limits count.
    pub fn text_len(&self) -> usize {
        match self {
            Value::Str(s) => s.len(),
            _ => 0,
        }
    }

    /// A list of strings (Go `[]string`); `None` is a nil slice.
    pub fn strings(items: Option<&[String]>) -> Value {
        List {
            nil: items.is_none(),
            items: items
                .unwrap_or_default()
                .iter()
                .map(|s| Value::from(s.as_str()))
                .collect(),
            ..Default::default()
        }
        .into()
    }

    /// Decoded JSON as Go's `encoding/json` gives it to an `any`: numbers are
    /// `float64`, objects are `map[string]any` (sorted).
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(0.0)),
            serde_json::Value::String(s) => Value::from(s.as_str()),
            serde_json::Value::Array(a) => List {
                items: a.iter().map(Value::from_json).collect(),
                ..Default::default()
            }
            .into(),
            serde_json::Value::Object(o) => Map::sorted(
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            )
            .into(),
        }
    }

    /// Go's template truth: false for nil, false, zero, and empty strings, slices
    /// and maps; structs are always true.
    pub fn truth(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.items.is_empty(),
            Value::Map(m) => !m.entries.is_empty(),
            Value::Struct(_) => true,
        }
    }

    /// The Go type name used in error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::List(_) => "slice",
            Value::Map(_) => "map",
            Value::Struct(s) => s.type_name,
        }
    }

    /// What `{{ value }}` writes: Go's `fmt.Print`, and `<no value>` for nil.
    pub fn print_action(&self, out: &mut String) {
        match self {
            Value::Nil => out.push_str("<no value>"),
            v => v.print(out),
        }
    }

    /// Go's `fmt` `%v`.
    pub fn print(&self, out: &mut String) {
        match self {
            Value::Nil => out.push_str("<nil>"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => out.push_str(&format_float_g(*f)),
            Value::Str(s) => out.push_str(s),
            Value::List(l) => {
                if l.print_json {
                    self.write_json(out);
                } else if l.one_or_many && l.items.len() <= 1 {
                    if let Some(item) = l.items.first() {
                        item.print(out);
                    }
                } else {
                    out.push('[');
                    for (i, item) in l.items.iter().enumerate() {
                        if i > 0 {
                            out.push(' ');
                        }
                        item.print(out);
                    }
                    out.push(']');
                }
            }
            Value::Map(m) => {
                if m.print_json {
                    if m.nil {
                        out.push_str("{}");
                    } else {
                        self.write_json(out);
                    }
                } else {
                    out.push_str("map[");
                    for (i, (k, v)) in m.entries.iter().enumerate() {
                        if i > 0 {
                            out.push(' ');
                        }
                        out.push_str(k);
                        out.push(':');
                        v.print(out);
                    }
                    out.push(']');
                }
            }
            Value::Struct(s) => {
                if s.print_json {
                    self.write_json(out);
                } else {
                    out.push('{');
                    for (i, f) in s.fields.iter().enumerate() {
                        if i > 0 {
                            out.push(' ');
                        }
                        f.value.print(out);
                    }
                    out.push('}');
                }
            }
        }
    }

    /// Go's `json.Marshal`.
    pub fn write_json(&self, out: &mut String) {
        match self {
            Value::Nil => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => out.push_str(&format_float_json(*f)),
            Value::Str(s) => write_json_string(s, out),
            Value::List(l) => {
                if l.nil {
                    out.push_str("null");
                } else if l.one_or_many && l.items.len() == 1 {
                    l.items[0].write_json(out);
                } else {
                    out.push('[');
                    for (i, item) in l.items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        item.write_json(out);
                    }
                    out.push(']');
                }
            }
            Value::Map(m) => {
                if m.nil {
                    out.push_str("null");
                    return;
                }
                out.push('{');
                for (i, (k, v)) in m.entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_string(k, out);
                    out.push(':');
                    v.write_json(out);
                }
                out.push('}');
            }
            Value::Struct(s) => {
                out.push('{');
                let mut first = true;
                for f in &s.fields {
                    if f.omitempty && f.value.is_empty_for_json() {
                        continue;
                    }
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    write_json_string(f.json, out);
                    out.push(':');
                    f.value.write_json(out);
                }
                out.push('}');
            }
        }
    }

    /// Go's `omitempty` test.
    fn is_empty_for_json(&self) -> bool {
        match self {
            Value::Nil => true,
            Value::Bool(b) => !b,
            Value::Int(i) => *i == 0,
            Value::Float(f) => *f == 0.0,
            Value::Str(s) => s.is_empty(),
            Value::List(l) => l.items.is_empty(),
            Value::Map(m) => m.entries.is_empty(),
            Value::Struct(_) => false,
        }
    }
}

/// A JSON string as Go writes it: `<`, `>`, `&`, U+2028 and U+2029 as `\uXXXX`.
pub fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 64)` (what `%v` prints for a float64).
pub fn format_float_g(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Shortest round-trip digits and the decimal exponent, from Rust's `{:e}`.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    // Shortest formatting decides between the forms with a precision of 6.
    let eprec = 6;
    if exp < -4 || exp >= eprec {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

/// Go's `encoding/json` float64: plain decimal, or exponent form outside
/// `[1e-6, 1e21)` with a two-digit minimum only for positive exponents.
pub fn format_float_json(f: f64) -> String {
    if !f.is_finite() {
        return "null".into();
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let sci = format!("{f:e}");
        let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        if exp < 0 {
            format!("{mantissa}e-{}", exp.abs())
        } else {
            format!("{mantissa}e+{exp:02}")
        }
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_go() {
        assert_eq!(format_float_g(1.0), "1");
        assert_eq!(format_float_g(2.5), "2.5");
        assert_eq!(format_float_g(1e6), "1e+06");
        assert_eq!(format_float_g(1234567.0), "1.234567e+06");
        assert_eq!(format_float_g(123456.0), "123456");
        assert_eq!(format_float_g(0.000001), "1e-06");
        assert_eq!(format_float_g(0.0001), "0.0001");
        assert_eq!(format_float_json(1e21), "1e+21");
        assert_eq!(format_float_json(1e20), "100000000000000000000");
        assert_eq!(format_float_json(1e-7), "1e-7");
        assert_eq!(format_float_json(1.5), "1.5");
        assert_eq!(format_float_json(3.0), "3");
    }

    #[test]
    fn json_escapes_html() {
        let mut out = String::new();
        write_json_string("a<b>&\"\n\u{1}é", &mut out);
        assert_eq!(out, "\"a\\u003cb\\u003e\\u0026\\\"\\n\\u0001é\"");
    }
}
