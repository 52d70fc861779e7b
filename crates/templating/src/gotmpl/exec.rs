//! The executor: walks a parsed tree over a [`Value`], with Go's rules for dot,
//! variables and their scopes, truth, field access, pipelines and `range`.
//!
//! Hostile templates are bounded: output size, the number of executed nodes and the
//! depth of nested templates all have limits that end execution with an error.

use super::funcs;
use super::parse::{Arg, Branch, Cmd, Node, Pipe, Tree};
use super::value::Value;
use crate::error::TemplateError;

/// Largest output one execution may produce.
const MAX_OUTPUT: usize = 64 << 20;
/// Most nodes and loop iterations one execution may run.
const MAX_STEPS: u64 = 20_000_000;
/// Deepest nesting of executed lists (blocks and `{{ template }}` calls together),
/// which bounds the executor's stack use.
const MAX_DEPTH: usize = 160;

/// How a list of nodes finished.
enum Flow {
    Normal,
    Break,
    Continue,
}

pub(crate) fn exec_err(msg: impl std::fmt::Display) -> TemplateError {
    TemplateError::Render(format!("template: {msg}"))
}

struct State<'t> {
    tree: &'t Tree,
    out: String,
    vars: Vec<(String, Value)>,
    steps: u64,
    depth: usize,
}

/// Executes `root` (a tree's main list, possibly edited) with `data` as dot.
pub fn execute(tree: &Tree, root: &[Node], data: &Value) -> Result<String, TemplateError> {
    let mut st = State {
        tree,
        out: String::new(),
        vars: vec![(String::new(), data.clone())],
        steps: 0,
        depth: 0,
    };
    st.list(root, data)?;
    Ok(st.out)
}

impl State<'_> {
    fn step(&mut self) -> Result<(), TemplateError> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(exec_err("execution exceeded the step limit"));
        }
        if self.out.len() > MAX_OUTPUT {
            return Err(exec_err("output exceeded the size limit"));
        }
        Ok(())
    }

    fn list(&mut self, nodes: &[Node], dot: &Value) -> Result<Flow, TemplateError> {
        if self.depth >= MAX_DEPTH {
            return Err(exec_err("exceeded maximum template depth"));
        }
        self.depth += 1;
        let flow = self.nodes(nodes, dot);
        self.depth -= 1;
        flow
    }

    fn nodes(&mut self, nodes: &[Node], dot: &Value) -> Result<Flow, TemplateError> {
        for node in nodes {
            self.step()?;
            match node {
                Node::Text(t) => self.out.push_str(t),
                Node::Action(pipe) => {
                    let v = self.pipe(pipe, dot)?;
                    if pipe.decl.is_empty() {
                        v.print_action(&mut self.out);
                    }
                }
                Node::If(b) | Node::With(b) => {
                    let flow = self.branch(b, dot, matches!(node, Node::With(_)))?;
                    if !matches!(flow, Flow::Normal) {
                        return Ok(flow);
                    }
                }
                Node::Range(b) => self.range(b, dot)?,
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
                Node::Template { name, pipe } => {
                    let Some(body) = self.tree.defines.get(name) else {
                        return Err(exec_err(format!("no such template {name:?}")));
                    };
                    let arg = match pipe {
                        Some(p) => self.pipe(p, dot)?,
                        None => Value::Nil,
                    };
                    let saved =
                        std::mem::replace(&mut self.vars, vec![(String::new(), arg.clone())]);
                    let result = self.list(body, &arg);
                    self.vars = saved;
                    result?;
                }
            }
        }
        Ok(Flow::Normal)
    }

    /// `if` and `with`: the pipeline's truth picks the list; `with` also moves dot.
    fn branch(&mut self, b: &Branch, dot: &Value, is_with: bool) -> Result<Flow, TemplateError> {
        let mark = self.vars.len();
        let v = self.pipe(&b.pipe, dot)?;
        let result = if v.truth() {
            let new_dot = if is_with { v } else { dot.clone() };
            self.list(&b.list, &new_dot)
        } else if let Some(else_list) = &b.else_list {
            self.list(else_list, dot)
        } else {
            Ok(Flow::Normal)
        };
        self.vars.truncate(mark);
        result
    }

    fn range(&mut self, b: &Branch, dot: &Value) -> Result<(), TemplateError> {
        let mark = self.vars.len();
        // The declared names are bound per item, not to the whole pipeline.
        let decl = b.pipe.decl.clone();
        let mut pipe = b.pipe.clone();
        pipe.decl.clear();
        let v = self.pipe(&pipe, dot)?;
        let len = match &v {
            Value::Nil => 0,
            Value::List(l) => l.items.len(),
            Value::Map(m) => m.entries.len(),
            Value::Int(n) => usize::try_from(*n).unwrap_or(0),
            other => {
                return Err(exec_err(format!(
                    "range can't iterate over {}",
                    printed(other)
                )))
            }
        };
        if len == 0 {
            if let Some(else_list) = &b.else_list {
                self.list(else_list, dot)?;
            }
            self.vars.truncate(mark);
            return Ok(());
        }
        for i in 0..len {
            self.step()?;
            let (key, item) = match &v {
                Value::List(l) => (Value::Int(i as i64), l.items[i].clone()),
                Value::Map(m) => {
                    let (k, v) = &m.entries[i];
                    (Value::from(k.as_str()), v.clone())
                }
                _ => (Value::Int(i as i64), Value::Int(i as i64)),
            };
            match decl.as_slice() {
                [] => {}
                [one] => self.vars.push((one.clone(), item.clone())),
                [k, v, ..] => {
                    self.vars.push((k.clone(), key));
                    self.vars.push((v.clone(), item.clone()));
                }
            }
            let flow = self.list(&b.list, &item);
            self.vars.truncate(mark);
            match flow? {
                Flow::Break => break,
                Flow::Normal | Flow::Continue => {}
            }
        }
        Ok(())
    }

    fn pipe(&mut self, pipe: &Pipe, dot: &Value) -> Result<Value, TemplateError> {
        let mut value: Option<Value> = None;
        for cmd in &pipe.cmds {
            value = Some(self.cmd(cmd, dot, value)?);
        }
        let value = value.unwrap_or_default();
        if pipe.is_assign {
            for name in &pipe.decl {
                let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) else {
                    return Err(exec_err(format!("undefined variable: ${name}")));
                };
                slot.1 = value.clone();
            }
        } else {
            for name in &pipe.decl {
                self.vars.push((name.clone(), value.clone()));
            }
        }
        Ok(value)
    }

    fn cmd(
        &mut self,
        cmd: &Cmd,
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, TemplateError> {
        let Some((first, rest)) = cmd.args.split_first() else {
            return Err(exec_err("empty command"));
        };
        if let Arg::Func(name) = first {
            return self.call(name, rest, dot, piped);
        }
        if !rest.is_empty() || piped.is_some() {
            return Err(exec_err(format!(
                "can't give argument to non-function {}",
                describe(first)
            )));
        }
        self.arg(first, dot)
    }

    fn call(
        &mut self,
        name: &str,
        args: &[Arg],
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, TemplateError> {
        // `and` and `or` evaluate their arguments lazily.
        if name == "and" || name == "or" {
            let total = args.len() + usize::from(piped.is_some());
            if total == 0 {
                return Err(exec_err(format!(
                    "wrong number of args for {name}: want at least 1 got 0"
                )));
            }
            let mut last = Value::Nil;
            for arg in args {
                last = self.arg(arg, dot)?;
                if last.truth() != (name == "and") {
                    return Ok(last);
                }
            }
            if let Some(p) = piped {
                last = p;
            }
            return Ok(last);
        }
        let mut values = Vec::with_capacity(args.len() + 1);
        for arg in args {
            values.push(self.arg(arg, dot)?);
        }
        values.extend(piped);
        // Values held in variables never reach `out`, so a loop doubling a string in a
        // variable would outgrow memory before the output limit saw it: a function's
        // inputs and its result are held to the same limit.
        let input: usize = values.iter().map(Value::text_len).sum();
        if input > MAX_OUTPUT {
            return Err(exec_err(format!("{name}: arguments exceed the size limit")));
        }
        let result = funcs::call(name, &values)?;
        if result.text_len() > MAX_OUTPUT {
            return Err(exec_err(format!("{name}: result exceeds the size limit")));
        }
        Ok(result)
    }

    fn arg(&mut self, arg: &Arg, dot: &Value) -> Result<Value, TemplateError> {
        match arg {
            Arg::Dot => Ok(dot.clone()),
            Arg::Nil => Ok(Value::Nil),
            Arg::Const(v) => Ok(v.clone()),
            Arg::Field(fields) => fields_of(dot, fields),
            Arg::Var(name, fields) => {
                let Some((_, v)) = self.vars.iter().rev().find(|(n, _)| n == name) else {
                    return Err(exec_err(format!("undefined variable: ${name}")));
                };
                let v = v.clone();
                fields_of(&v, fields)
            }
            Arg::Func(name) => self.call(name, &[], dot, None),
            // A declaration inside parentheses lives on to the end of the enclosing
            // control structure, as in Go.
            Arg::Pipe(pipe) => self.pipe(pipe, dot),
            Arg::Chain(term, fields) => {
                let v = self.arg(term, dot)?;
                fields_of(&v, fields)
            }
        }
    }
}

/// `v.A.B`: map keys (missing keys give nil) and struct fields.
fn fields_of(v: &Value, fields: &[String]) -> Result<Value, TemplateError> {
    let mut cur = v.clone();
    for f in fields {
        cur = match &cur {
            Value::Map(m) => m.get(f).cloned().unwrap_or_default(),
            Value::Struct(s) => match s.get(f) {
                Some(v) => v.clone(),
                None => {
                    return Err(exec_err(format!(
                        "can't evaluate field {f} in type {}",
                        s.type_name
                    )))
                }
            },
            Value::Nil => {
                return Err(exec_err(format!(
                    "nil pointer evaluating interface {{}}.{f}"
                )))
            }
            other => {
                return Err(exec_err(format!(
                    "can't evaluate field {f} in type {}",
                    other.type_name()
                )))
            }
        };
    }
    Ok(cur)
}

fn printed(v: &Value) -> String {
    let mut s = String::new();
    v.print(&mut s);
    s
}

fn describe(arg: &Arg) -> String {
    match arg {
        Arg::Field(f) => format!(".{}", f.join(".")),
        Arg::Var(v, f) if f.is_empty() => format!("${v}"),
        Arg::Var(v, f) => format!("${v}.{}", f.join(".")),
        Arg::Dot => ".".into(),
        Arg::Nil => "nil".into(),
        Arg::Const(v) => printed(v),
        Arg::Func(name) => name.clone(),
        Arg::Pipe(_) | Arg::Chain(..) => "(pipeline)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse;
    use super::*;

    fn run(src: &str) -> Result<String, TemplateError> {
        let tree = parse(src)?;
        execute(&tree, &tree.root, &Value::Nil)
    }

    #[test]
    fn a_string_doubled_in_a_variable_hits_the_size_limit() {
        let src = r#"{{$s := "xxxxxxxxxxxxxxxx"}}{{range 40}}{{$s = printf "%s%s" $s $s}}{{end}}{{len $s}}"#;
        let err = run(src).unwrap_err().to_string();
        assert!(err.contains("size limit"), "{err}");
    }

    #[test]
    fn strings_within_the_limit_still_double() {
        let src = r#"{{$s := "ab"}}{{range 3}}{{$s = printf "%s%s" $s $s}}{{end}}{{len $s}}"#;
        assert_eq!(run(src).unwrap(), "16");
    }
}
