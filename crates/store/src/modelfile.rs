//! Modelfiles, parsed on the client like Ollama's `parser` package: instructions are
//! case-insensitive, `#` starts a comment line, values may be `"quoted"` or
//! `"""multi-line"""`, and `PARAMETER` values are typed by the option they set.

use crate::options::{option_kind, OptionKind};
use serde_json::{Map, Value};

/// Parameters Ollama removed: accepted with a warning and dropped.
const DEPRECATED_PARAMETERS: &[&str] = &[
    "penalize_newline",
    "low_vram",
    "f16_kv",
    "logits_all",
    "vocab_only",
    "use_mlock",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
    "tfs_z",
    "numa",
    "embedding_only",
];

/// A parsed Modelfile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Modelfile {
    /// `FROM`: a GGUF path or a model name.
    pub from: String,
    pub template: Option<String>,
    pub system: Option<String>,
    pub license: Vec<String>,
    pub parameters: Map<String, Value>,
    /// `(role, content)` pairs.
    pub messages: Vec<(String, String)>,
    pub requires: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelfileError {
    #[error("line {line}: {message}")]
    At { line: usize, message: String },
    #[error("no FROM line")]
    NoFrom,
}

struct Cursor {
    chars: Vec<char>,
    pos: usize,
}

impl Cursor {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn line(&self) -> usize {
        1 + self.chars[..self.pos.min(self.chars.len())]
            .iter()
            .filter(|c| **c == '\n')
            .count()
    }

    fn err(&self, message: impl Into<String>) -> ModelfileError {
        ModelfileError::At {
            line: self.line(),
            message: message.into(),
        }
    }

    fn starts_with(&self, s: &str) -> bool {
        s.chars()
            .enumerate()
            .all(|(i, c)| self.chars.get(self.pos + i) == Some(&c))
    }

    fn skip_blank(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.pos += 1;
            } else if c == '#' {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.pos += 1;
                }
            } else {
                break;
            }
        }
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(|c| c == ' ' || c == '\t') {
            self.pos += 1;
        }
    }

    fn word(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(|c| !c.is_whitespace()) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// A value: `"""..."""`, `"..."` (both may span lines) or the rest of the line.
    fn value(&mut self) -> Result<String, ModelfileError> {
        self.skip_spaces();
        for quote in ["\"\"\"", "\""] {
            if self.starts_with(quote) {
                let start_line = self.line();
                self.pos += quote.chars().count();
                let start = self.pos;
                while !self.starts_with(quote) {
                    if self.peek().is_none() {
                        return Err(ModelfileError::At {
                            line: start_line,
                            message: format!("unterminated {quote} string"),
                        });
                    }
                    self.pos += 1;
                }
                let v: String = self.chars[start..self.pos].iter().collect();
                self.pos += quote.chars().count();
                return Ok(v);
            }
        }
        let start = self.pos;
        while self.peek().is_some_and(|c| c != '\n') {
            self.pos += 1;
        }
        let v: String = self.chars[start..self.pos].iter().collect();
        Ok(v.trim().to_string())
    }
}

/// Parse a Modelfile's text.
pub fn parse(src: &str) -> Result<Modelfile, ModelfileError> {
    let mut c = Cursor {
        chars: src.chars().collect(),
        pos: 0,
    };
    let mut mf = Modelfile::default();
    let mut have_from = false;
    loop {
        c.skip_blank();
        if c.peek().is_none() {
            break;
        }
        let instruction = c.word().to_lowercase();
        match instruction.as_str() {
            "from" => {
                mf.from = c.value()?;
                have_from = true;
            }
            "template" => mf.template = Some(c.value()?),
            "system" => mf.system = Some(c.value()?),
            "license" => mf.license.push(c.value()?),
            "requires" => mf.requires = Some(c.value()?),
            "parameter" => {
                c.skip_spaces();
                let key = c.word().to_lowercase();
                if key.is_empty() {
                    return Err(c.err("PARAMETER needs a name and a value"));
                }
                let raw = c.value()?;
                add_parameter(&mut mf.parameters, &key, &raw).map_err(|m| c.err(m))?;
            }
            "message" => {
                c.skip_spaces();
                let role = c.word().to_lowercase();
                if !matches!(role.as_str(), "system" | "user" | "assistant" | "tool") {
                    return Err(c.err(format!(
                        "role must be one of \"system\", \"user\", \"assistant\" or \"tool\", got {role:?}"
                    )));
                }
                let content = c.value()?;
                mf.messages.push((role, content));
            }
            "adapter" => return Err(c.err("ADAPTER is not supported yet")),
            "draft" => return Err(c.err("DRAFT is not supported yet")),
            "renderer" | "parser" => {
                return Err(c.err(format!("{} is not supported yet", instruction.to_uppercase())))
            }
            other => {
                return Err(c.err(format!(
                    "unknown instruction {other:?}: must be one of FROM, TEMPLATE, SYSTEM, PARAMETER, MESSAGE, LICENSE, REQUIRES"
                )))
            }
        }
    }
    if !have_from || mf.from.is_empty() {
        return Err(ModelfileError::NoFrom);
    }
    Ok(mf)
}

/// Add a `PARAMETER`, typed like Ollama's `FormatParams`; `stop` accumulates.
fn add_parameter(params: &mut Map<String, Value>, key: &str, raw: &str) -> Result<(), String> {
    if DEPRECATED_PARAMETERS.contains(&key) {
        eprintln!("warning: parameter {key:?} is deprecated and ignored");
        return Ok(());
    }
    let kind = option_kind(key).ok_or_else(|| format!("unknown parameter {key:?}"))?;
    let bad = |what: &str| format!("invalid {what} value for parameter {key:?}: {raw:?}");
    let value = match kind {
        OptionKind::Int => Value::from(
            raw.parse::<i64>()
                .or_else(|_| raw.parse::<f64>().map(|f| f as i64))
                .map_err(|_| bad("integer"))?,
        ),
        OptionKind::Float => {
            let f = raw.parse::<f64>().map_err(|_| bad("float"))?;
            serde_json::Number::from_f64(f)
                .map(Value::Number)
                .ok_or_else(|| bad("float"))?
        }
        OptionKind::Bool => Value::Bool(match raw.to_lowercase().as_str() {
            "true" | "1" | "t" => true,
            "false" | "0" | "f" => false,
            _ => return Err(bad("boolean")),
        }),
        OptionKind::StringList => {
            let entry = params
                .entry(key.to_string())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(items) = entry {
                items.push(Value::String(raw.to_string()));
            }
            return Ok(());
        }
    };
    params.insert(key.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn full_modelfile() {
        let src = r#"
# a comment
FROM ./smollm2.gguf
template """{% for m in messages %}{{ m.content }}
{% endfor %}"""
SYSTEM "You are terse."
PARAMETER temperature 0.2
PARAMETER stop <|im_end|>
PARAMETER stop "User:"
PARAMETER num_ctx 4096
parameter mirostat 1
MESSAGE user Hi there
MESSAGE assistant """Hello!
How can I help?"""
LICENSE MIT
"#;
        let mf = parse(src).unwrap();
        assert_eq!(mf.from, "./smollm2.gguf");
        assert_eq!(
            mf.template.as_deref(),
            Some("{% for m in messages %}{{ m.content }}\n{% endfor %}")
        );
        assert_eq!(mf.system.as_deref(), Some("You are terse."));
        assert_eq!(
            Value::Object(mf.parameters),
            json!({"temperature": 0.2, "stop": ["<|im_end|>", "User:"], "num_ctx": 4096})
        );
        assert_eq!(
            mf.messages,
            vec![
                ("user".to_string(), "Hi there".to_string()),
                (
                    "assistant".to_string(),
                    "Hello!\nHow can I help?".to_string()
                )
            ]
        );
        assert_eq!(mf.license, vec!["MIT".to_string()]);
    }

    #[test]
    fn errors() {
        assert_eq!(parse("SYSTEM hi"), Err(ModelfileError::NoFrom));
        assert!(parse("FROM x\nPARAMETER top_k many")
            .unwrap_err()
            .to_string()
            .contains("integer"));
        assert!(parse("FROM x\nPARAMETER nope 1")
            .unwrap_err()
            .to_string()
            .contains("unknown parameter"));
        assert!(parse("FROM x\nSYSTEM \"\"\"open")
            .unwrap_err()
            .to_string()
            .contains("unterminated"));
        assert!(parse("FROM x\nBOGUS y").is_err());
        assert!(parse("FROM x\nMESSAGE robot hi").is_err());
    }
}
