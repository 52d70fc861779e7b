//! Grammars on a small byte-level vocabulary: every byte is a token, plus a few
//! multi-byte ones and two special tokens (one ends generation).

use serde_json::json;

use super::guide::Guide;
use super::*;

const OPEN_QUOTE: u32 = 256; // `{"`
const SPACES: u32 = 257; // two spaces
const EOS: u32 = 258; // <|im_end|>, special, ends generation
const IM_START: u32 = 259; // <|im_start|>, special

fn env() -> ConstraintEnv {
    let mut words: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    words.push(b"{\"".to_vec());
    words.push(b"  ".to_vec());
    words.push(b"\xFF<|im_end|>".to_vec());
    words.push(b"\xFF<|im_start|>".to_vec());
    ConstraintEnv::from_vocab(words, vec![EOS], Some(EOS), None).expect("vocabulary")
}

fn allowed(mask: &[u32], id: u32) -> bool {
    mask.get(id as usize / 32)
        .is_some_and(|w| w & (1 << (id % 32)) != 0)
}

fn guide(env: &ConstraintEnv, schema: serde_json::Value) -> Guide {
    Guide::new(env, &OutputFormat::JsonSchema(schema), None).expect("schema compiles")
}

/// Feed `text` byte by byte, checking each byte is allowed; returns whether the
/// grammar completed on the last byte (and never before).
fn feed(g: &mut Guide, text: &str) -> bool {
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let mask = g.mask().expect("mask").expect("active").to_vec();
        assert!(
            allowed(&mask, b as u32),
            "{:?} refused after {:?}",
            b as char,
            &text[..i]
        );
        assert!(!allowed(&mask, IM_START), "special token allowed");
        let complete = g.commit(b as u32, &[b]).expect("commit");
        if complete {
            assert_eq!(i + 1, bytes.len(), "complete early after {:?}", &text[..=i]);
            return true;
        }
    }
    false
}

fn refuses(g: &mut Guide, b: u8) -> bool {
    !allowed(g.mask().expect("mask").expect("active"), b as u32)
}

#[test]
fn json_object_is_compact_and_completes() {
    let env = env();
    let mut g = Guide::new(&env, &OutputFormat::Json, None).expect("json");
    let mask = g.mask().expect("mask").expect("active").to_vec();
    assert!(allowed(&mask, b'{' as u32) && allowed(&mask, OPEN_QUOTE));
    for refused in [b' ', b'[', b'"', b'1'] {
        assert!(!allowed(&mask, refused as u32), "{:?}", refused as char);
    }
    assert!(!allowed(&mask, SPACES) && !allowed(&mask, EOS));
    assert!(feed(&mut g, r#"{"a": [1, true], "b": {"c": null}}"#));
}

#[test]
fn json_numbers_have_bounded_length() {
    let env = env();
    let mut g = Guide::new(&env, &OutputFormat::Json, None).expect("json");
    assert!(!feed(&mut g, r#"{"x": -3.1415926535897932"#));
    // Sixteen fraction digits: no seventeenth, the number must end.
    assert!(refuses(&mut g, b'7'));
    assert!(feed(&mut g, "e-123}"));
    let mut g = Guide::new(&env, &OutputFormat::Json, None).expect("json");
    assert!(!feed(&mut g, r#"{"x": 1234567890123456"#));
    assert!(refuses(&mut g, b'7'));
}

#[test]
fn json_objects_and_arrays_have_bounded_width() {
    let env = env();
    let mut g = Guide::new(&env, &OutputFormat::Json, None).expect("json");
    let members: Vec<String> = (0..32)
        .map(|i| format!("\"k{i}\": [{}]", vec!["0"; 64].join(", ")))
        .collect();
    assert!(!feed(&mut g, &format!("{{{}", members.join(", "))));
    // The 32nd member is the last: the object must close.
    assert!(refuses(&mut g, b','));
    assert!(feed(&mut g, "}"));
}

#[test]
fn no_free_whitespace() {
    let env = env();
    let mut g = Guide::new(&env, &OutputFormat::Json, None).expect("json");
    assert!(!feed(&mut g, r#"{"a":"#));
    // Only the one space of the key separator.
    assert!(!feed(&mut g, " "));
    assert!(refuses(&mut g, b' '));
    assert!(refuses(&mut g, b'\n'));
}

#[test]
fn end_of_generation_only_where_the_grammar_accepts() {
    let env = env();
    let mut g = guide(&env, json!({ "type": "integer" }));
    assert!(!allowed(g.mask().expect("mask").expect("active"), EOS));
    assert!(!feed(&mut g, "42"));
    assert!(allowed(g.mask().expect("mask").expect("active"), EOS));
}

#[test]
fn enum_const_and_required() {
    let env = env();
    let schema = json!({
        "type": "object",
        "properties": {
            "color": { "enum": ["red", "green"] },
            "kind": { "const": "car" }
        },
        "required": ["color", "kind"],
        "additionalProperties": false
    });
    let mut g = guide(&env, schema.clone());
    assert!(!feed(&mut g, r#"{"color": "r"#));
    assert!(refuses(&mut g, b'x'));
    assert!(feed(&mut g, r#"ed", "kind": "car"}"#));
    // `}` before the required keys is refused.
    let mut g = guide(&env, schema);
    assert!(!feed(&mut g, r#"{"color": "green""#));
    assert!(refuses(&mut g, b'}'));
}

#[test]
fn arrays_with_bounds_nested_objects_and_numbers() {
    let env = env();
    let schema = json!({
        "type": "object",
        "properties": {
            "xs": {
                "type": "array",
                "items": { "type": "integer", "minimum": 0, "maximum": 9 },
                "minItems": 2,
                "maxItems": 3
            },
            "inner": {
                "type": "object",
                "properties": { "ok": { "type": "boolean" } },
                "required": ["ok"]
            }
        },
        "required": ["xs", "inner"],
        "additionalProperties": false
    });
    let mut g = guide(&env, schema.clone());
    assert!(!feed(&mut g, r#"{"xs": [1"#));
    assert!(refuses(&mut g, b']'), "minItems");
    assert!(refuses(&mut g, b'0'), "maximum 9");
    assert!(!feed(&mut g, ", 2, 3"));
    assert!(refuses(&mut g, b','), "maxItems");
    assert!(feed(&mut g, r#"], "inner": {"ok": false}}"#));
}

#[test]
fn pattern_any_of_and_refs() {
    let env = env();
    let schema = json!({
        "$defs": {
            "code": { "type": "string", "pattern": "^[a-z]{3}$" }
        },
        "anyOf": [
            { "$ref": "#/$defs/code" },
            { "type": "number", "exclusiveMinimum": 0 }
        ]
    });
    let mut g = guide(&env, schema.clone());
    assert!(!feed(&mut g, r#""ab"#));
    assert!(refuses(&mut g, b'"'), "three letters");
    assert!(refuses(&mut g, b'A'));
    assert!(feed(&mut g, r#"c""#));
    let mut g = guide(&env, schema);
    assert!(refuses(&mut g, b'-'), "exclusiveMinimum");
    assert!(!feed(&mut g, "2.5"));
}

#[test]
fn format_after_waits_for_the_closing_tag() {
    let env = env();
    let mut g = Guide::new(&env, &OutputFormat::Json, Some("</think>")).expect("json");
    assert!(g.mask().expect("mask").is_none());
    for piece in ["<think>", "hmm </th", "ink", ">"] {
        assert!(!g.is_active());
        assert!(!g.commit(b'x' as u32, piece.as_bytes()).expect("commit"));
    }
    assert!(g.is_active());
    assert!(refuses(&mut g, b'\n'));
    assert!(feed(&mut g, "{}"));
}

#[test]
fn bad_schemas_are_named() {
    let env = env();
    let cases = [
        (json!({ "$ref": "#/$defs/missing" }), "missing"),
        (json!({ "type": "strng" }), "strng"),
        (json!(5), "must be an object"),
        (json!(false), "accepts no value"),
        (
            json!({ "type": "integer", "minimum": 5, "maximum": 1 }),
            "5",
        ),
    ];
    for (schema, needle) in cases {
        let err = env
            .check(&OutputFormat::JsonSchema(schema.clone()))
            .expect_err(&schema.to_string());
        let msg = err.to_string();
        assert!(matches!(err, EngineError::InvalidFormat(_)), "{msg}");
        assert!(msg.contains(needle), "{schema}: {msg}");
    }
    env.check(&OutputFormat::JsonSchema(json!(true)))
        .expect("true is any value");
}

#[test]
fn compiled_formats_are_reused() {
    let env = env();
    let f = OutputFormat::JsonSchema(json!({ "type": "object" }));
    env.check(&f).expect("compiles");
    env.check(&f).expect("compiles");
    let cache = env.compiled.lock().expect("lock");
    assert_eq!(cache.len(), 1);
}

#[test]
fn objects_without_additional_properties_are_closed() {
    let env = env();
    let schema = json!({
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "object", "properties": {"c": {"type": "boolean"}}}},
        "required": ["a"],
    });
    let mut g = guide(&env, schema);
    assert!(!feed(&mut g, r#"{"a": 1, "b": {"c": true"#));
    // Nothing but the end of `b`: no invented member.
    assert!(refuses(&mut g, b','));
    assert!(feed(&mut g, "}}"));
    // An explicit `additionalProperties: true` is kept.
    let mut g = guide(
        &env,
        json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": true}),
    );
    assert!(!feed(&mut g, r#"{"a": 1, "x""#));
}

#[test]
fn a_wrapped_tool_call_has_its_tag_and_matching_arguments() {
    let env = env();
    let format = OutputFormat::Wrapped {
        prefix: "<tool_call>\n".into(),
        schema: json!({
            "type": "object",
            "properties": {
                "name": {"const": "get_weather"},
                "arguments": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
            "required": ["name", "arguments"],
        }),
        suffix: "\n</tool_call>".into(),
    };
    let mut g = Guide::new(&env, &format, None).expect("grammar compiles");
    assert!(refuses(&mut g, b'{'), "the tag comes first");
    assert!(feed(
        &mut g,
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"
    ));
    let mut g = Guide::new(&env, &format, None).expect("grammar compiles");
    feed(&mut g, "<tool_call>\n{\"name\": \"");
    assert!(refuses(&mut g, b'x'), "only the offered name");
}
