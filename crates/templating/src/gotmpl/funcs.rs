//! The functions a template can call: Go's builtins (`eq`, `len`, `index`, `slice`,
//! `printf`, `html`, ...) and Ollama's (`json`, `currentDate`, `yesterdayDate`,
//! `toTypeScriptType`). `and`/`or` are in the executor, which evaluates them lazily.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::sync::Arc;

use super::exec::exec_err;
use super::value::{format_float_g, List, Value};
use crate::error::TemplateError;

/// Type name of Ollama's tool property struct, which `toTypeScriptType` understands.
pub const PROPERTY_TYPE: &str = "api.ToolProperty";

pub fn call(name: &str, args: &[Value]) -> Result<Value, TemplateError> {
    let want = |n: usize| -> Result<(), TemplateError> {
        if args.len() == n {
            Ok(())
        } else {
            Err(exec_err(format!(
                "wrong number of args for {name}: want {n} got {}",
                args.len()
            )))
        }
    };
    Ok(match name {
        "not" => {
            want(1)?;
            Value::Bool(!args[0].truth())
        }
        "len" => {
            want(1)?;
            Value::Int(match &args[0] {
                Value::Str(s) => s.len(),
                Value::List(l) => l.items.len(),
                Value::Map(m) => m.entries.len(),
                other => {
                    return Err(exec_err(format!(
                        "error calling len: len of type {}",
                        other.type_name()
                    )))
                }
            } as i64)
        }
        "index" => {
            if args.is_empty() {
                return Err(exec_err(
                    "wrong number of args for index: want at least 1 got 0",
                ));
            }
            let mut cur = args[0].clone();
            for key in &args[1..] {
                cur = index(&cur, key)?;
            }
            cur
        }
        "slice" => slice(args)?,
        "print" => Value::from(sprint(args)),
        "println" => {
            let mut s = String::new();
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    s.push(' ');
                }
                a.print(&mut s);
            }
            s.push('\n');
            Value::from(s)
        }
        "printf" => {
            let Some(Value::Str(format)) = args.first() else {
                return Err(exec_err("printf: the format must be a string"));
            };
            Value::from(sprintf(format, &args[1..]))
        }
        "html" => Value::from(html_escape(&escaper_input(args))),
        "js" => Value::from(js_escape(&escaper_input(args))),
        "urlquery" => Value::from(query_escape(&escaper_input(args))),
        "call" => return Err(exec_err("error calling call: functions cannot be called")),
        "eq" => {
            if args.len() < 2 {
                return Err(exec_err("missing argument for comparison"));
            }
            let mut any = false;
            for other in &args[1..] {
                if compare(&args[0], other)? == Some(Ordering::Equal) {
                    any = true;
                    break;
                }
            }
            Value::Bool(any)
        }
        "ne" | "lt" | "le" | "gt" | "ge" => {
            want(2)?;
            let ord = compare(&args[0], &args[1])?;
            if name != "ne" && (!is_ordered(&args[0]) || ord.is_none()) {
                return Err(exec_err(format!(
                    "error calling {name}: invalid type for comparison"
                )));
            }
            Value::Bool(match name {
                "ne" => ord != Some(Ordering::Equal),
                "lt" => ord == Some(Ordering::Less),
                "le" => ord != Some(Ordering::Greater),
                "gt" => ord == Some(Ordering::Greater),
                _ => ord != Some(Ordering::Less),
            })
        }
        "json" => {
            want(1)?;
            let mut s = String::new();
            args[0].write_json(&mut s);
            Value::from(s)
        }
        "currentDate" => Value::from(chrono::Local::now().format("%Y-%m-%d").to_string()),
        "yesterdayDate" => {
            let day = chrono::Local::now() - chrono::Duration::days(1);
            Value::from(day.format("%Y-%m-%d").to_string())
        }
        "toTypeScriptType" => {
            want(1)?;
            Value::from(typescript(&args[0]))
        }
        other => return Err(exec_err(format!("function {other:?} not defined"))),
    })
}

fn is_ordered(v: &Value) -> bool {
    matches!(v, Value::Int(_) | Value::Float(_) | Value::Str(_))
}

/// Go's comparison of basic values; `None` when they are unordered (nil, bools).
fn compare(a: &Value, b: &Value) -> Result<Option<Ordering>, TemplateError> {
    Ok(match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => (x == y).then_some(Ordering::Equal),
        (Value::Nil, Value::Nil) => Some(Ordering::Equal),
        (Value::Nil, _) | (_, Value::Nil) => None,
        (Value::List(_) | Value::Map(_), _) | (_, Value::List(_) | Value::Map(_)) => {
            return Err(exec_err("error calling eq: non-comparable type"))
        }
        _ => {
            return Err(exec_err(
                "error calling eq: incompatible types for comparison",
            ))
        }
    })
}

fn as_index(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Float(f) if f.fract() == 0.0 => Some(*f as i64),
        _ => None,
    }
}

fn index(cur: &Value, key: &Value) -> Result<Value, TemplateError> {
    match cur {
        Value::List(l) => {
            let i = as_index(key).ok_or_else(|| {
                exec_err("error calling index: cannot index slice with non-integer")
            })?;
            usize::try_from(i)
                .ok()
                .and_then(|i| l.items.get(i))
                .cloned()
                .ok_or_else(|| exec_err(format!("error calling index: index out of range: {i}")))
        }
        Value::Str(s) => {
            let i = as_index(key).ok_or_else(|| {
                exec_err("error calling index: cannot index string with non-integer")
            })?;
            usize::try_from(i)
                .ok()
                .and_then(|i| s.as_bytes().get(i))
                .map(|b| Value::Int(i64::from(*b)))
                .ok_or_else(|| exec_err(format!("error calling index: index out of range: {i}")))
        }
        Value::Map(m) => match key {
            Value::Str(k) => Ok(m.get(k).cloned().unwrap_or_default()),
            _ => Err(exec_err("error calling index: map key must be a string")),
        },
        Value::Nil => Err(exec_err("error calling index: index of untyped nil")),
        other => Err(exec_err(format!(
            "error calling index: can't index item of type {}",
            other.type_name()
        ))),
    }
}

fn slice(args: &[Value]) -> Result<Value, TemplateError> {
    let Some((item, idx)) = args.split_first() else {
        return Err(exec_err(
            "wrong number of args for slice: want at least 1 got 0",
        ));
    };
    if idx.len() > 3 {
        return Err(exec_err("error calling slice: too many slice indexes"));
    }
    let mut ix = Vec::with_capacity(idx.len());
    for v in idx {
        let i = as_index(v)
            .and_then(|i| usize::try_from(i).ok())
            .ok_or_else(|| exec_err("error calling slice: invalid slice index"))?;
        ix.push(i);
    }
    let len = match item {
        Value::Str(s) => s.len(),
        Value::List(l) => l.items.len(),
        other => {
            return Err(exec_err(format!(
                "error calling slice: can't slice item of type {}",
                other.type_name()
            )))
        }
    };
    let lo = ix.first().copied().unwrap_or(0);
    let hi = ix.get(1).copied().unwrap_or(len);
    let cap = ix.get(2).copied().unwrap_or(len);
    if lo > hi || hi > cap || cap > len {
        return Err(exec_err(format!(
            "error calling slice: index out of range: {lo}:{hi}"
        )));
    }
    Ok(match item {
        Value::Str(s) => {
            if ix.len() == 3 {
                return Err(exec_err(
                    "error calling slice: cannot 3-index slice a string",
                ));
            }
            match s.get(lo..hi) {
                Some(sub) => Value::from(sub),
                None => Value::from(String::from_utf8_lossy(&s.as_bytes()[lo..hi]).into_owned()),
            }
        }
        Value::List(l) => Value::List(Arc::new(List {
            items: l.items[lo..hi].to_vec(),
            ..List::default()
        })),
        _ => Value::Nil,
    })
}

/// Go's `fmt.Sprint`: a space between operands when neither is a string.
pub fn sprint(args: &[Value]) -> String {
    let mut s = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && !matches!(a, Value::Str(_)) && !matches!(args[i - 1], Value::Str(_)) {
            s.push(' ');
        }
        a.print(&mut s);
    }
    s
}

/// The text an escaper works on: a lone string as is, else `fmt.Sprint` of the args.
fn escaper_input(args: &[Value]) -> String {
    match args {
        [Value::Str(s)] => s.to_string(),
        _ => sprint(args),
    }
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\0' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn js_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' | '>' | '&' | '=' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// Ollama's `toTypeScriptType` for a tool property; `any` for anything else.
fn typescript(v: &Value) -> String {
    let Value::Struct(s) = v else {
        return "any".into();
    };
    if s.type_name != PROPERTY_TYPE {
        return "any".into();
    }
    if let Some(Value::List(any_of)) = s.get("AnyOf") {
        if !any_of.items.is_empty() {
            let parts: Vec<String> = any_of.items.iter().map(typescript).collect();
            return parts.join(" | ");
        }
    }
    let types: Vec<&str> = match s.get("Type") {
        Some(Value::List(l)) => l
            .items
            .iter()
            .filter_map(|t| match t {
                Value::Str(s) => Some(&**s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if types.is_empty() {
        return "any".into();
    }
    let parts: Vec<&str> = types
        .iter()
        .map(|t| match *t {
            "string" => "string",
            "number" | "integer" => "number",
            "boolean" => "boolean",
            "array" => "any[]",
            "object" => "Record<string, any>",
            "null" => "null",
            _ => "any",
        })
        .collect();
    parts.join(" | ")
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%v %s %d %q %f %e %g %x %X %t
/// %c %%`, with flags, width and precision.
pub fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut next = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut zero, mut space, mut sharp) =
            (false, false, false, false, false);
        while let Some(&f) = chars.peek() {
            match f {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' => space = true,
                '#' => sharp = true,
                _ => break,
            }
            chars.next();
        }
        let mut number = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| -> Option<usize> {
            if chars.peek() == Some(&'*') {
                chars.next();
                let v = args.get(next).and_then(as_index);
                next += 1;
                return v.map(|v| v.unsigned_abs() as usize);
            }
            let mut n: Option<usize> = None;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                n = Some(
                    n.unwrap_or(0)
                        .saturating_mul(10)
                        .saturating_add(d as usize)
                        .min(1 << 16),
                );
                chars.next();
            }
            n
        };
        let width = number(&mut chars);
        let prec = if chars.peek() == Some(&'.') {
            chars.next();
            Some(number(&mut chars).unwrap_or(0))
        } else {
            None
        };
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next += 1;
        let body = format_verb(verb, arg, prec, plus, space, sharp);
        let body = match body {
            Some(b) => b,
            None if matches!(arg, Value::Nil) => format!("%!{verb}(<nil>)"),
            None => {
                let mut v = String::new();
                arg.print(&mut v);
                format!("%!{verb}({}={v})", arg.type_name())
            }
        };
        let len = body.chars().count();
        match width {
            Some(w) if w > len => {
                let pad = w - len;
                if minus {
                    out.push_str(&body);
                    out.extend(std::iter::repeat_n(' ', pad));
                } else if zero && matches!(arg, Value::Int(_) | Value::Float(_)) {
                    let (sign, digits) = match body.strip_prefix(['-', '+']) {
                        Some(d) => (&body[..1], d),
                        None => ("", body.as_str()),
                    };
                    out.push_str(sign);
                    out.extend(std::iter::repeat_n('0', pad));
                    out.push_str(digits);
                } else {
                    out.extend(std::iter::repeat_n(' ', pad));
                    out.push_str(&body);
                }
            }
            _ => out.push_str(&body),
        }
    }
    if next < args.len() {
        out.push_str("%!(EXTRA ");
        for (i, a) in args[next..].iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let mut v = String::new();
            a.print(&mut v);
            let _ = write!(out, "{}={v}", a.type_name());
        }
        out.push(')');
    }
    out
}

fn format_verb(
    verb: char,
    arg: &Value,
    prec: Option<usize>,
    plus: bool,
    space: bool,
    sharp: bool,
) -> Option<String> {
    let sign = |neg: bool| {
        if neg {
            ""
        } else if plus {
            "+"
        } else if space {
            " "
        } else {
            ""
        }
    };
    Some(match (verb, arg) {
        ('v', Value::Float(f)) if prec.is_none() => {
            format!("{}{}", sign(*f < 0.0), format_float_g(*f))
        }
        ('v', _) => {
            let mut s = String::new();
            arg.print(&mut s);
            s
        }
        ('s', Value::Str(s)) => match prec {
            Some(p) => s.chars().take(p).collect(),
            None => s.to_string(),
        },
        ('s', Value::List(_) | Value::Map(_) | Value::Struct(_)) => {
            let mut s = String::new();
            arg.print(&mut s);
            s
        }
        ('q', Value::Str(s)) => {
            if sharp && !s.contains('`') {
                format!("`{s}`")
            } else {
                go_quote(s)
            }
        }
        ('d', Value::Int(i)) => format!("{}{i}", sign(*i < 0)),
        ('x', Value::Int(i)) => format!(
            "{}{}{:x}",
            if *i < 0 { "-" } else { sign(false) },
            if sharp { "0x" } else { "" },
            i.unsigned_abs()
        ),
        ('X', Value::Int(i)) => format!(
            "{}{}{:X}",
            if *i < 0 { "-" } else { sign(false) },
            if sharp { "0X" } else { "" },
            i.unsigned_abs()
        ),
        ('x', Value::Str(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
        ('X', Value::Str(s)) => s.bytes().map(|b| format!("{b:02X}")).collect(),
        ('c', Value::Int(i)) => u32::try_from(*i)
            .ok()
            .and_then(char::from_u32)
            .unwrap_or('\u{fffd}')
            .to_string(),
        ('t', Value::Bool(b)) => b.to_string(),
        ('f' | 'F', Value::Float(f)) => format!("{}{f:.*}", sign(*f < 0.0), prec.unwrap_or(6)),
        ('e', Value::Float(f)) => {
            let s = format!("{f:.*e}", prec.unwrap_or(6));
            let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
            let e: i32 = e.parse().unwrap_or(0);
            format!(
                "{}{m}e{}{:02}",
                sign(*f < 0.0),
                if e < 0 { '-' } else { '+' },
                e.abs()
            )
        }
        ('g', Value::Float(f)) if prec.is_none() => {
            format!("{}{}", sign(*f < 0.0), format_float_g(*f))
        }
        _ => return None,
    })
}

/// Go's `strconv.Quote`.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printf_verbs() {
        let args = [Value::from("hi"), Value::Int(-3), Value::Float(2.5)];
        assert_eq!(
            sprintf(
                "%s|%5d|%-4s|%.2f|%v|%q%%",
                &[
                    args[0].clone(),
                    args[1].clone(),
                    args[0].clone(),
                    args[2].clone(),
                    args[2].clone(),
                    Value::from("a\"b")
                ]
            ),
            "hi|   -3|hi  |2.50|2.5|\"a\\\"b\"%"
        );
        assert_eq!(sprintf("%d %d", &[Value::Int(1)]), "1 %!d(MISSING)");
        assert_eq!(sprintf("%d", &[Value::from("x")]), "%!d(string=x)");
        assert_eq!(sprintf("x", &[Value::Int(1)]), "x%!(EXTRA int=1)");
        assert_eq!(sprintf("%03d", &[Value::Int(7)]), "007");
    }

    #[test]
    fn print_spacing() {
        let args = [
            Value::Int(1),
            Value::Float(2.5),
            Value::from("a"),
            Value::from("b"),
            Value::Nil,
            Value::Bool(true),
        ];
        assert_eq!(sprint(&args), "1 2.5ab<nil> true");
    }

    #[test]
    fn escapers() {
        assert_eq!(
            html_escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&#34;&lt;/a&gt;"
        );
        assert_eq!(query_escape("a b&c/é"), "a+b%26c%2F%C3%A9");
        assert_eq!(js_escape("a'<\n"), "a\\'\\u003C\\u000A");
    }
}
