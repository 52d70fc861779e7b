//! Ollama's chat wire types, shared by the API layer and the templates.
//!
//! Every optional field is skipped when `None`, so a message round-trips to the same
//! JSON Ollama sends, and a template sees an absent key (undefined), as it would in
//! Python.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A tool offered to the model: Ollama's tool JSON
/// (`{"type": "function", "function": {"name", "description", "parameters"}}`), kept
/// as-is so it round-trips with its key order and reaches the template unchanged.
pub type Tool = Value;

/// One chat message (`/api/chat` `messages[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    /// `null` reads as empty (an assistant message that only makes tool calls).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    /// Base64-encoded images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// For `role: "tool"`: the name of the tool whose result this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A message with only a role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
            ..Default::default()
        }
    }
}

/// A call the model made to one of the offered tools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub function: ToolCallFunction,
}

/// The function part of a [`ToolCall`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallFunction {
    /// Position of this call among the calls of one response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub name: String,
    /// The arguments as a JSON object, keys in the order the model wrote them.
    #[serde(default)]
    pub arguments: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trips_with_key_order() {
        let json = r#"{"role":"assistant","content":"","tool_calls":[{"id":"call_abcd1234","function":{"index":0,"name":"get_weather","arguments":{"zeta":1,"alpha":{"y":2,"b":3}}}}]}"#;
        let msg: Message = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&msg).unwrap(), json);
    }

    #[test]
    fn none_fields_are_skipped_and_content_defaults() {
        let msg: Message = serde_json::from_str(r#"{"role":"user"}"#).unwrap();
        assert_eq!(msg, Message::new("user", ""));
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"role":"user","content":""}"#
        );
    }

    #[test]
    fn tool_round_trips_with_key_order() {
        let json = r#"{"type":"function","function":{"name":"f","parameters":{"type":"object","required":["z","a"],"properties":{"z":{"type":"string"},"a":{"type":"integer"}}}}}"#;
        let tool: Tool = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&tool).unwrap(), json);
    }
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod null_content_tests {
    use super::*;

    #[test]
    fn null_content_is_empty() {
        let m: Message = serde_json::from_str(
            r#"{"role": "assistant", "content": null, "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}"#,
        )
        .unwrap();
        assert_eq!(m.content, "");
        assert!(serde_json::from_str::<Message>(r#"{"role": "user", "content": 3}"#).is_err());
    }
}
