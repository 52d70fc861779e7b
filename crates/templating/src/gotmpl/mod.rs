//! A small Go `text/template` engine: enough of Go's template language for Ollama's
//! chat templates, executed over a Go-like [`Value`] so that truth, printing and
//! `json` come out as Go's do.
//!
//! Supported: text with `{{- -}}` trimming and `{{/* comments */}}`; fields `.A.B`,
//! `$` and variables (`:=`, `=`); `if`/`else if`/`else`, `with`/`else with`/`else`,
//! `range` (`$i, $m :=`, `else`, `break`, `continue`; over slices, maps in key order
//! and integers); `define`/`template`/`block`; pipelines with `|` and parentheses;
//! string, raw string, char, number, bool and nil constants; the builtins
//! `and or not len index slice print printf println html js urlquery eq ne lt le gt
//! ge` (`call` fails: there are no function values), and Ollama's `json`,
//! `currentDate`, `yesterdayDate`, `toTypeScriptType`. Methods cannot be called.
//!
//! [`crate::GoTemplate`] builds Ollama's rendering on top of this module.

mod exec;
mod funcs;
mod lex;
mod parse;
pub mod value;
pub(crate) mod walk;

pub(crate) use exec::execute;
pub(crate) use funcs::PROPERTY_TYPE;
pub(crate) use parse::{parse, Arg, Cmd, Node, Pipe, Tree};
pub use value::{Field, List, Map, Struct, Value};
