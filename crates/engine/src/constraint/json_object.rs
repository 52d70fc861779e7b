//! The grammar of Ollama's `format: "json"`: one JSON object, any keys and values, in
//! the compact layout of the schema formats (`", "` and `": "` separators).
//!
//! Unlike a plain JSON grammar, numbers and collections are bounded, so that a small
//! model sampling at a high temperature cannot append digits, members or items until
//! its context fills (a cut-off answer is not JSON): numbers have at most 16 integer
//! digits, 16 fraction digits and a 3-digit exponent; an object at most 32 members; an
//! array at most 64 items. Strings are not bounded: a counted string would give the
//! lexer a state per character and cost a fresh token mask at each one.

/// The Lark source llguidance compiles for `format: "json"`.
pub(crate) const JSON_OBJECT_LARK: &str = r#"
start: object
value: object | array | STRING | NUMBER | "true" | "false" | "null"
object: "{" (pair (", " pair){0,31})? "}"
pair: STRING ": " value
array: "[" (value (", " value){0,63})? "]"
STRING: /"(\\(["\\\/bfnrt]|u[0-9a-fA-F]{4})|[^"\\\x00-\x1F\x7F])*"/
NUMBER: /-?(0|[1-9][0-9]{0,15})(\.[0-9]{1,16})?([eE][-+]?[0-9]{1,3})?/
"#;
