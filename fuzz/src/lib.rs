//! Shared pieces of wick's fuzz targets: an arbitrary conversation for the template
//! renderers, built with `arbitrary` from the bytes after the template.

use arbitrary::{Arbitrary, Unstructured};
use serde_json::{json, Map, Value};
use wick_templating::{Message, Think, Tool, ToolCall, ToolCallFunction};

/// A JSON value (tool arguments, tool schemas).
#[derive(Debug, Arbitrary)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    pub fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Int(i) => Value::from(*i),
            Json::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Json::Str(s) => Value::String(s.clone()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(entries) => Value::Object(object(entries)),
        }
    }
}

fn object(entries: &[(String, Json)]) -> Map<String, Value> {
    entries
        .iter()
        .map(|(k, v)| (k.clone(), v.to_value()))
        .collect()
}

#[derive(Debug, Arbitrary)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
    Other(String),
}

impl Role {
    fn name(&self) -> String {
        match self {
            Role::System => "system".into(),
            Role::User => "user".into(),
            Role::Assistant => "assistant".into(),
            Role::Tool => "tool".into(),
            Role::Other(s) => s.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
pub struct Call {
    pub id: Option<String>,
    pub index: Option<u8>,
    pub name: String,
    pub arguments: Vec<(String, Json)>,
}

#[derive(Debug, Arbitrary)]
pub struct Msg {
    pub role: Role,
    pub content: String,
    pub thinking: Option<String>,
    pub images: Option<Vec<String>>,
    pub tool_calls: Option<Vec<Call>>,
    pub tool_name: Option<String>,
    pub tool_call_id: Option<String>,
}

impl Msg {
    fn to_message(&self) -> Message {
        Message {
            role: self.role.name(),
            content: self.content.clone(),
            thinking: self.thinking.clone(),
            images: self.images.clone(),
            tool_calls: self.tool_calls.as_ref().map(|calls| {
                calls
                    .iter()
                    .map(|c| ToolCall {
                        id: c.id.clone(),
                        function: ToolCallFunction {
                            index: c.index.map(usize::from),
                            name: c.name.clone(),
                            arguments: object(&c.arguments),
                        },
                    })
                    .collect()
            }),
            tool_name: self.tool_name.clone(),
            tool_call_id: self.tool_call_id.clone(),
        }
    }
}

/// A tool: the usual function shape, or any JSON at all.
#[derive(Debug, Arbitrary)]
pub enum ArbTool {
    Function {
        name: String,
        description: String,
        parameters: Json,
    },
    Raw(Json),
}

impl ArbTool {
    fn to_tool(&self) -> Tool {
        match self {
            ArbTool::Function {
                name,
                description,
                parameters,
            } => json!({
                "type": "function",
                "function": {"name": name, "description": description, "parameters": parameters.to_value()}
            }),
            ArbTool::Raw(v) => v.to_value(),
        }
    }
}

#[derive(Debug, Arbitrary)]
pub enum ArbThink {
    Bool(bool),
    Level(String),
}

/// Everything a render sees besides the template.
#[derive(Debug)]
pub struct Conversation {
    pub messages: Vec<Message>,
    pub tools: Option<Vec<Tool>>,
    pub think: Option<Think>,
    pub add_generation_prompt: bool,
    pub bos: String,
    pub eos: String,
    pub system: String,
    pub prompt: String,
    pub suffix: String,
}

#[derive(Debug, Arbitrary)]
struct ArbConversation {
    messages: Vec<Msg>,
    tools: Option<Vec<ArbTool>>,
    think: Option<ArbThink>,
    add_generation_prompt: bool,
    bos: String,
    eos: String,
    system: String,
    prompt: String,
    suffix: String,
}

impl Conversation {
    /// A template and a conversation from fuzz input: the template is the text up to
    /// the first NUL byte (so seeds are plain template files); the bytes after it
    /// build the conversation, or, when there are none, a typical one with tools.
    pub fn split(data: &[u8]) -> (String, Conversation) {
        let (template, rest) = match data.iter().position(|&b| b == 0) {
            Some(i) => (&data[..i], &data[i + 1..]),
            None => (data, &[][..]),
        };
        let template = String::from_utf8_lossy(template).into_owned();
        if rest.is_empty() {
            return (template, Conversation::typical());
        }
        let u = Unstructured::new(rest);
        let conv = match ArbConversation::arbitrary_take_rest(u) {
            Ok(c) => c,
            Err(_) => return (template, Conversation::typical()),
        };
        let conv = Conversation {
            messages: conv.messages.iter().map(Msg::to_message).collect(),
            tools: conv.tools.map(|t| t.iter().map(ArbTool::to_tool).collect()),
            think: conv.think.map(|t| match t {
                ArbThink::Bool(b) => Think::Bool(b),
                ArbThink::Level(l) => Think::Level(l),
            }),
            add_generation_prompt: conv.add_generation_prompt,
            bos: conv.bos,
            eos: conv.eos,
            system: conv.system,
            prompt: conv.prompt,
            suffix: conv.suffix,
        };
        (template, conv)
    }

    /// System, user, an assistant tool call with thinking, its result, a user turn.
    pub fn typical() -> Conversation {
        let call = ToolCall {
            id: Some("call_1".into()),
            function: ToolCallFunction {
                index: Some(0),
                name: "get_weather".into(),
                arguments: json!({"city": "Paris", "days": 2})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            },
        };
        let mut assistant = Message::new("assistant", "");
        assistant.thinking = Some("The user wants the weather.".into());
        assistant.tool_calls = Some(vec![call]);
        let mut tool = Message::new("tool", "{\"temp\": 21}");
        tool.tool_name = Some("get_weather".into());
        tool.tool_call_id = Some("call_1".into());
        Conversation {
            messages: vec![
                Message::new("system", "You are terse."),
                Message::new("user", "Weather in Paris?"),
                assistant,
                tool,
                Message::new("user", "Thanks!"),
            ],
            tools: Some(vec![json!({
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
                }
            })]),
            think: Some(Think::Bool(true)),
            add_generation_prompt: true,
            bos: "<s>".into(),
            eos: "</s>".into(),
            system: "You are terse.".into(),
            prompt: "Hello".into(),
            suffix: String::new(),
        }
    }
}
