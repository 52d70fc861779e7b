//! Ollama's Go chat templates: [`GoTemplate`] parses a Modelfile `TEMPLATE` and
//! renders chats and generate requests with the data and rules of Ollama's
//! `Template.Execute`:
//!
//! - Consecutive messages of one role are merged with a blank line (tool results
//!   stay apart); all system messages are joined into `.System`.
//! - A template that mentions `.Messages` sees `.System .Messages .Tools .Response
//!   .Think .ThinkLevel .IsThinkSet`; messages and tools have Ollama's Go field names
//!   and print and marshal like Ollama's Go types (`{{ .Tools }}` is their JSON,
//!   properties and arguments in key order, `<` as `\u003c`).
//! - A "legacy" template (only `.System .Prompt .Response`) is executed once per
//!   user/assistant turn; the last turn is cut right after `{{ .Response }}`.
//! - A template that mentions neither `.Messages` nor `.Response` gets a
//!   `{{ .Response }}` appended.
//! - Generate with a suffix executes the template on `.Prompt .Suffix` alone.

use std::sync::Arc;

use serde_json::Value as Json;

use crate::error::TemplateError;
use crate::gotmpl::{self, walk, Arg, Cmd, Field, List, Map, Node, Pipe, Struct, Tree, Value};
use crate::tool_format::ToolCallFormat;
use crate::types::{Message, Tool};

/// Ollama's `think` request field: a bool, or a level (`"high"`, `"medium"`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Think {
    Bool(bool),
    Level(String),
}

impl Think {
    /// Whether thinking is on (`true`, or a known level).
    pub fn enabled(&self) -> bool {
        match self {
            Think::Bool(b) => *b,
            Think::Level(l) => matches!(l.as_str(), "high" | "medium" | "low" | "max"),
        }
    }

    /// `.ThinkLevel`: the level, `medium` for `true`, empty for `false`.
    pub fn level(&self) -> &str {
        match self {
            Think::Bool(true) => "medium",
            Think::Bool(false) => "",
            Think::Level(l) => l,
        }
    }
}

/// An `/api/chat` render.
#[derive(Debug, Clone, Copy, Default)]
pub struct GoChat<'a> {
    pub messages: &'a [Message],
    /// Offered tools; `None` renders as Go's nil slice (`{{ if .Tools }}` is false).
    pub tools: Option<&'a [Tool]>,
    pub think: Option<&'a Think>,
}

/// An `/api/generate` render.
#[derive(Debug, Clone, Copy, Default)]
pub struct GoGenerate<'a> {
    /// The request's `system`, or else the model's; empty means none.
    pub system: &'a str,
    pub prompt: &'a str,
    /// Fill-in-the-middle: with a non-empty suffix only `.Prompt` and `.Suffix` are set.
    pub suffix: &'a str,
    pub think: Option<&'a Think>,
}

/// A parsed Ollama Go template.
#[derive(Debug, Clone)]
pub struct GoTemplate {
    tree: Tree,
    source: String,
    vars: Vec<String>,
    thinking_tags: (String, String),
    tool_tag: String,
}

impl GoTemplate {
    /// Parses a template as Ollama does (`\r\n` normalised to `\n` first).
    pub fn parse(source: &str) -> Result<GoTemplate, TemplateError> {
        let normalized = source.replace("\r\n", "\n");
        let mut tree = gotmpl::parse(&normalized)?;
        let mut vars = walk::vars(&tree);
        if !vars.iter().any(|v| v == "messages" || v == "response") {
            tree.root.push(Node::Action(Pipe {
                cmds: vec![Cmd {
                    args: vec![Arg::Field(vec!["Response".into()])],
                }],
                ..Pipe::default()
            }));
            vars = walk::vars(&tree);
        }
        Ok(GoTemplate {
            thinking_tags: walk::thinking_tags(&tree),
            tool_tag: walk::tool_call_tag(&tree),
            tree,
            source: source.to_string(),
            vars,
        })
    }

    /// The template as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The lower-cased names of the fields and variables the template mentions,
    /// sorted (Ollama's `Template.Vars`): `tools` means the `tools` capability,
    /// `suffix` the `insert` capability.
    pub fn vars(&self) -> &[String] {
        &self.vars
    }

    fn has_var(&self, name: &str) -> bool {
        self.vars.iter().any(|v| v == name)
    }

    /// Ollama's `tools` capability: the template mentions `.Tools`.
    pub fn supports_tools(&self) -> bool {
        self.has_var("tools")
    }

    /// Ollama's `insert` capability: the template mentions `.Suffix`.
    pub fn supports_insert(&self) -> bool {
        self.has_var("suffix")
    }

    /// The tags around `.Thinking` in the messages loop (e.g. `<think>`,
    /// `</think>`), when both were found: Ollama's `thinking` capability.
    pub fn thinking_tags(&self) -> Option<(&str, &str)> {
        let (open, close) = &self.thinking_tags;
        (!open.is_empty() && !close.is_empty()).then_some((open.as_str(), close.as_str()))
    }

    /// How the model writes tool calls, read from the template's `.ToolCalls` branch.
    pub fn tool_call_format(&self) -> ToolCallFormat {
        ToolCallFormat::new(&self.tool_tag)
    }

    /// Renders a chat as Ollama's `/api/chat` does.
    pub fn render_chat(&self, chat: &GoChat<'_>) -> Result<String, TemplateError> {
        self.execute(chat.messages, chat.tools, chat.think, false)
    }

    /// Renders a generate request as Ollama's `/api/generate` does (not `raw`).
    pub fn render_generate(&self, req: &GoGenerate<'_>) -> Result<String, TemplateError> {
        if !req.prompt.is_empty() && !req.suffix.is_empty() {
            let mut data = think_entries(req.think);
            data.push(("Prompt".into(), Value::from(req.prompt)));
            data.push(("Suffix".into(), Value::from(req.suffix)));
            data.push(("Response".into(), Value::from("")));
            return gotmpl::execute(&self.tree, &self.tree.root, &Map::sorted(data).into());
        }
        let mut messages = Vec::with_capacity(2);
        if !req.system.is_empty() {
            messages.push(Message::new("system", req.system));
        }
        messages.push(Message::new("user", req.prompt));
        self.execute(&messages, None, req.think, false)
    }

    /// Ollama's `Template.Execute`; `force_legacy` renders per turn even when the
    /// template mentions `.Messages` (for tests).
    fn execute(
        &self,
        messages: &[Message],
        tools: Option<&[Tool]>,
        think: Option<&Think>,
        force_legacy: bool,
    ) -> Result<String, TemplateError> {
        let (system, merged) = collate(messages);
        if !force_legacy && self.has_var("messages") {
            let mut data = think_entries(think);
            data.push(("System".into(), Value::from(system)));
            data.push(("Messages".into(), messages_value(&merged)));
            data.push(("Tools".into(), tools_value(tools)));
            data.push(("Response".into(), Value::from("")));
            return gotmpl::execute(&self.tree, &self.tree.root, &Map::sorted(data).into());
        }
        let turn = |system: &str, prompt: &str, response: &str| -> Value {
            let mut data = think_entries(think);
            data.push(("System".into(), Value::from(system)));
            data.push(("Prompt".into(), Value::from(prompt)));
            data.push(("Response".into(), Value::from(response)));
            Map::sorted(data).into()
        };
        let mut out = String::new();
        let (mut system, mut prompt, mut response) = (String::new(), String::new(), String::new());
        for m in &merged {
            let flush = match m.role.as_str() {
                "system" => !prompt.is_empty() || !response.is_empty(),
                "user" => !response.is_empty(),
                _ => false,
            };
            if flush {
                out.push_str(&gotmpl::execute(
                    &self.tree,
                    &self.tree.root,
                    &turn(&system, &prompt, &response),
                )?);
                system.clear();
                prompt.clear();
                response.clear();
            }
            match m.role.as_str() {
                "system" => system = m.content.clone(),
                "user" => prompt = m.content.clone(),
                "assistant" => response = m.content.clone(),
                _ => {}
            }
        }
        let last = walk::cut_after_response(&self.tree.root);
        out.push_str(&gotmpl::execute(
            &self.tree,
            &last,
            &turn(&system, &prompt, &response),
        )?);
        Ok(out)
    }
}

fn think_entries(think: Option<&Think>) -> Vec<(String, Value)> {
    vec![
        (
            "Think".into(),
            Value::Bool(think.is_some_and(Think::enabled)),
        ),
        (
            "ThinkLevel".into(),
            Value::from(think.map_or("", Think::level)),
        ),
        ("IsThinkSet".into(), Value::Bool(think.is_some())),
    ]
}

/// Merges runs of one role (not tool results) and gathers the system text.
fn collate(messages: &[Message]) -> (String, Vec<Message>) {
    let mut system = Vec::new();
    let mut merged: Vec<Message> = Vec::with_capacity(messages.len());
    for m in messages {
        if m.role == "system" {
            system.push(m.content.as_str());
        }
        match merged.last_mut() {
            Some(last) if last.role == m.role && m.role != "tool" => {
                last.content.push_str("\n\n");
                last.content.push_str(&m.content);
            }
            _ => merged.push(m.clone()),
        }
    }
    (system.join("\n\n"), merged)
}

fn str_field(name: &'static str, s: &str) -> Field {
    Field::new(name, Value::from(s))
}

fn messages_value(messages: &[Message]) -> Value {
    let items = messages
        .iter()
        .map(|m| {
            let calls = m.tool_calls.as_deref().filter(|c| !c.is_empty());
            let tool_calls = List {
                nil: calls.is_none(),
                items: calls
                    .unwrap_or_default()
                    .iter()
                    .map(|c| {
                        let args = Map {
                            print_json: true,
                            ..Map::sorted(
                                c.function
                                    .arguments
                                    .iter()
                                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                                    .collect(),
                            )
                        };
                        let function = Struct {
                            type_name: "template.templateToolCallFunction",
                            fields: vec![
                                Field::new(
                                    "Index",
                                    Value::Int(c.function.index.unwrap_or(0) as i64),
                                ),
                                str_field("Name", &c.function.name),
                                Field::new("Arguments", args.into()),
                            ],
                            print_json: false,
                        };
                        Value::from(Struct {
                            type_name: "template.templateToolCall",
                            fields: vec![
                                str_field("ID", c.id.as_deref().unwrap_or("")),
                                Field::new("Function", function.into()),
                            ],
                            print_json: false,
                        })
                    })
                    .collect(),
                ..List::default()
            };
            Value::from(Struct {
                type_name: "*template.templateMessage",
                fields: vec![
                    str_field("Role", &m.role),
                    str_field("Content", &m.content),
                    str_field("Thinking", m.thinking.as_deref().unwrap_or("")),
                    Field::new("Images", Value::strings(m.images.as_deref())),
                    Field::new("ToolCalls", tool_calls.into()),
                    str_field("ToolName", m.tool_name.as_deref().unwrap_or("")),
                    str_field("ToolCallID", m.tool_call_id.as_deref().unwrap_or("")),
                ],
                print_json: false,
            })
        })
        .collect();
    List {
        items,
        nil: messages.is_empty(),
        ..List::default()
    }
    .into()
}

fn json_str<'a>(v: &'a Json, key: &str) -> &'a str {
    v.get(key).and_then(Json::as_str).unwrap_or("")
}

/// An `any` field: decoded JSON, nil when absent.
fn any_field(v: &Json, key: &str) -> Value {
    v.get(key).map_or(Value::Nil, Value::from_json)
}

fn string_list(v: &Json, key: &str) -> Value {
    let list: Option<Vec<String>> = v.get(key).and_then(Json::as_array).map(|a| {
        a.iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    });
    Value::strings(list.as_deref())
}

/// Ollama's `ToolProperty`, printed as a Go struct, marshalled with its json tags.
fn property_value(p: &Json) -> Value {
    let any_of = p.get("anyOf").and_then(Json::as_array);
    let types: Option<Vec<String>> = match p.get("type") {
        Some(Json::String(s)) => Some(vec![s.clone()]),
        Some(Json::Array(a)) => Some(
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect(),
        ),
        _ => None,
    };
    let properties = match p.get("properties").and_then(Json::as_object) {
        // A pointer to an ordered map: JSON in the given order.
        Some(o) => Value::from(Map {
            entries: o
                .iter()
                .map(|(k, v)| (k.clone(), property_value(v)))
                .collect(),
            ..Map::default()
        }),
        None => Value::Nil,
    };
    let enum_list = p.get("enum").and_then(Json::as_array);
    Value::from(Struct {
        type_name: gotmpl::PROPERTY_TYPE,
        fields: vec![
            Field::tagged(
                "AnyOf",
                "anyOf",
                true,
                List {
                    nil: any_of.is_none(),
                    items: any_of.into_iter().flatten().map(property_value).collect(),
                    ..List::default()
                }
                .into(),
            ),
            Field::tagged(
                "Type",
                "type",
                true,
                List {
                    nil: types.is_none(),
                    items: types.into_iter().flatten().map(Value::from).collect(),
                    one_or_many: true,
                    ..List::default()
                }
                .into(),
            ),
            Field::tagged("Items", "items", true, any_field(p, "items")),
            Field::tagged(
                "Description",
                "description",
                true,
                Value::from(json_str(p, "description")),
            ),
            Field::tagged(
                "Enum",
                "enum",
                true,
                List {
                    nil: enum_list.is_none(),
                    items: enum_list
                        .into_iter()
                        .flatten()
                        .map(Value::from_json)
                        .collect(),
                    ..List::default()
                }
                .into(),
            ),
            Field::tagged("Properties", "properties", true, properties),
            Field::tagged("Required", "required", true, string_list(p, "required")),
        ],
        print_json: false,
    })
}

/// Ollama's template tools: Go field names, printed as their JSON.
fn tools_value(tools: Option<&[Tool]>) -> Value {
    let Some(tools) = tools else {
        return List {
            nil: true,
            print_json: true,
            ..List::default()
        }
        .into();
    };
    let items = tools
        .iter()
        .map(|t| {
            let f = t.get("function").unwrap_or(&Json::Null);
            let p = f.get("parameters").unwrap_or(&Json::Null);
            let properties = match p.get("properties").and_then(Json::as_object) {
                Some(o) => Map {
                    print_json: true,
                    ..Map::sorted(
                        o.iter()
                            .map(|(k, v)| (k.clone(), property_value(v)))
                            .collect(),
                    )
                },
                None => Map {
                    nil: true,
                    print_json: true,
                    ..Map::default()
                },
            };
            let parameters = Struct {
                type_name: "template.templateToolFunctionParameters",
                fields: vec![
                    Field::tagged("Type", "type", false, Value::from(json_str(p, "type"))),
                    Field::tagged("Defs", "$defs", true, any_field(p, "$defs")),
                    Field::tagged("Items", "items", true, any_field(p, "items")),
                    Field::tagged("Required", "required", true, string_list(p, "required")),
                    Field::tagged("Properties", "properties", false, properties.into()),
                ],
                print_json: false,
            };
            let function = Struct {
                type_name: "template.templateToolFunction",
                fields: vec![
                    Field::tagged("Name", "name", false, Value::from(json_str(f, "name"))),
                    Field::tagged(
                        "Description",
                        "description",
                        false,
                        Value::from(json_str(f, "description")),
                    ),
                    Field::tagged("Parameters", "parameters", false, parameters.into()),
                ],
                print_json: false,
            };
            Value::Struct(Arc::new(Struct {
                type_name: "template.templateTool",
                fields: vec![
                    Field::tagged("Type", "type", false, Value::from(json_str(t, "type"))),
                    Field::tagged("Items", "items", true, any_field(t, "items")),
                    Field::tagged("Function", "function", false, function.into()),
                ],
                print_json: true,
            }))
        })
        .collect();
    List {
        items,
        print_json: true,
        ..List::default()
    }
    .into()
}

#[cfg(test)]
mod tests;
