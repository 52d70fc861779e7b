//! OpenAI's `tool_choice`, enforced: `none` offers no tools (they are not rendered and
//! no call is read), `auto` lets the model choose, and `required` or a named function
//! constrain the answer by grammar to one call in the model's own tool-call syntax
//! (its template's tag, then `{"name", "arguments"}` with the arguments matching the
//! tool's `parameters` schema).

use serde_json::{json, Value};
use wick_engine::OutputFormat;
use wick_templating::{Tool, ToolCallFormat};

use crate::error::{ApiError, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum ToolChoice {
    #[default]
    Auto,
    None,
    Required,
    Function(String),
}

impl ToolChoice {
    /// OpenAI's wire forms: `"none" | "auto" | "required"` or
    /// `{"type": "function", "function": {"name": ...}}` (the Responses API's flat
    /// `{"type": "function", "name": ...}` too).
    pub fn parse(v: Option<&Value>) -> Result<ToolChoice> {
        let bad = |msg: &str| ApiError::bad(format!("invalid \"tool_choice\": {msg}"));
        match v {
            None | Some(Value::Null) => Ok(ToolChoice::Auto),
            Some(Value::String(s)) => match s.as_str() {
                "auto" => Ok(ToolChoice::Auto),
                "none" => Ok(ToolChoice::None),
                "required" => Ok(ToolChoice::Required),
                other => Err(bad(&format!(
                    "{other:?} (expected \"none\", \"auto\", \"required\" or a function)"
                ))),
            },
            Some(Value::Object(o)) => {
                if o.get("type").and_then(Value::as_str) != Some("function") {
                    return Err(bad("only {\"type\": \"function\", ...} is supported"));
                }
                let name = o
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .or_else(|| o.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("the function's \"name\" is required"))?;
                Ok(ToolChoice::Function(name.to_string()))
            }
            Some(_) => Err(bad("expected a string or an object")),
        }
    }

    /// A named function must be one of `tools`; `required` needs a tool.
    pub fn check_offered(&self, tools: &[Tool]) -> Result<()> {
        match self {
            ToolChoice::Required if tools.is_empty() => Err(ApiError::bad(
                "\"tool_choice\" \"required\" needs at least one tool in \"tools\"",
            )),
            ToolChoice::Function(name)
                if !tools
                    .iter()
                    .any(|t| function(t).and_then(|f| f.get("name")?.as_str()) == Some(name)) =>
            {
                Err(ApiError::bad(format!(
                    "invalid \"tool_choice\": no tool named {name:?} is offered"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The grammar of the one call `required` or a named function asks for; `None`
    /// when the model chooses (`auto`, `none`).
    pub fn grammar(&self, tools: &[Tool], format: &ToolCallFormat) -> Result<Option<OutputFormat>> {
        let wanted: Vec<&Value> = match self {
            ToolChoice::Auto | ToolChoice::None => return Ok(None),
            ToolChoice::Required => tools.iter().collect(),
            ToolChoice::Function(name) => {
                let t = tools
                    .iter()
                    .find(|t| function(t).and_then(|f| f.get("name")?.as_str()) == Some(name))
                    .ok_or_else(|| {
                        ApiError::bad(format!(
                            "invalid \"tool_choice\": no tool named {name:?} is offered"
                        ))
                    })?;
                vec![t]
            }
        };
        if wanted.is_empty() {
            return Err(ApiError::bad(
                "\"tool_choice\" \"required\" needs at least one tool in \"tools\"",
            ));
        }
        let calls: Vec<Value> = wanted.into_iter().map(call_schema).collect::<Result<_>>()?;
        let schema = match calls.len() {
            1 => calls.into_iter().next().unwrap_or_default(),
            _ => json!({ "anyOf": calls }),
        };
        let (prefix, suffix) = match format.tag() {
            "{" => (String::new(), String::new()),
            "[" => ("[".to_string(), "]".to_string()),
            tag if tag.ends_with('>') => (format!("{tag}\n"), String::new()),
            tag => (tag.to_string(), String::new()),
        };
        Ok(Some(OutputFormat::Wrapped {
            prefix,
            schema,
            suffix,
        }))
    }
}

fn function(tool: &Tool) -> Option<&Value> {
    tool.get("function").or(Some(tool))
}

/// `{"name": <const>, "arguments": <parameters>}` for one tool.
fn call_schema(tool: &Value) -> Result<Value> {
    let f = function(tool).unwrap_or(tool);
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad("tools: every tool needs a function \"name\""))?;
    let params = match f.get("parameters") {
        None | Some(Value::Null) => json!({ "type": "object" }),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(ApiError::bad(format!(
                "tools: the \"parameters\" of {name:?} must be a JSON Schema object"
            )))
        }
    };
    Ok(json!({
        "type": "object",
        "properties": { "name": { "const": name }, "arguments": params },
        "required": ["name", "arguments"],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Vec<Tool> {
        vec![
            json!({"type": "function", "function": {"name": "a", "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}}),
            json!({"type": "function", "function": {"name": "b"}}),
        ]
    }

    #[test]
    fn wire_forms() {
        assert_eq!(ToolChoice::parse(None).unwrap(), ToolChoice::Auto);
        assert_eq!(
            ToolChoice::parse(Some(&json!("none"))).unwrap(),
            ToolChoice::None
        );
        assert_eq!(
            ToolChoice::parse(Some(
                &json!({"type": "function", "function": {"name": "a"}})
            ))
            .unwrap(),
            ToolChoice::Function("a".into())
        );
        assert_eq!(
            ToolChoice::parse(Some(&json!({"type": "function", "name": "b"}))).unwrap(),
            ToolChoice::Function("b".into())
        );
        assert!(ToolChoice::parse(Some(&json!("always"))).is_err());
        assert!(ToolChoice::parse(Some(&json!({"type": "web_search"}))).is_err());
    }

    #[test]
    fn grammars_follow_the_tag_and_the_tools() {
        let qwen = ToolCallFormat::new("<tool_call>");
        let Some(OutputFormat::Wrapped { prefix, schema, .. }) = ToolChoice::Function("a".into())
            .grammar(&tools(), &qwen)
            .unwrap()
        else {
            panic!("a grammar")
        };
        assert_eq!(prefix, "<tool_call>\n");
        assert_eq!(schema["properties"]["name"]["const"], "a");
        assert_eq!(
            schema["properties"]["arguments"]["properties"]["x"]["type"],
            "string"
        );
        let Some(OutputFormat::Wrapped { prefix, schema, .. }) = ToolChoice::Required
            .grammar(&tools(), &ToolCallFormat::new(""))
            .unwrap()
        else {
            panic!("a grammar")
        };
        assert_eq!(prefix, "");
        assert_eq!(schema["anyOf"].as_array().unwrap().len(), 2);
        assert!(ToolChoice::Function("zz".into())
            .grammar(&tools(), &qwen)
            .is_err());
        assert!(ToolChoice::Required.grammar(&[], &qwen).is_err());
        assert_eq!(ToolChoice::Auto.grammar(&tools(), &qwen).unwrap(), None);
    }
}
