//! The parser: tokens to a tree of text, actions and control structures, shaped like
//! Go's `text/template/parse` tree (an `{{ else if }}` is an `if` inside the else
//! list), so Ollama's tree walks (`Vars`, tool-call tags, thinking tags, the cut at
//! `.Response`) carry over node for node.

use std::collections::HashMap;

use super::lex::{lex, Tok, Token};
use super::value::Value;
use crate::error::TemplateError;

/// Deepest nesting of blocks and parentheses a template may use.
const MAX_NESTING: usize = 128;

/// A parsed template: the main tree and the `define`d ones.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    pub root: Vec<Node>,
    pub defines: HashMap<String, Vec<Node>>,
}

#[derive(Debug, Clone)]
pub enum Node {
    Text(String),
    Action(Pipe),
    If(Branch),
    Range(Branch),
    With(Branch),
    Break,
    Continue,
    Template { name: String, pipe: Option<Pipe> },
}

#[derive(Debug, Clone)]
pub struct Branch {
    pub pipe: Pipe,
    pub list: Vec<Node>,
    pub else_list: Option<Vec<Node>>,
}

/// `$a, $b := cmd | cmd`.
#[derive(Debug, Clone, Default)]
pub struct Pipe {
    /// Declared or assigned variable names, without `$`.
    pub decl: Vec<String>,
    /// `=` rather than `:=`.
    pub is_assign: bool,
    pub cmds: Vec<Cmd>,
}

#[derive(Debug, Clone, Default)]
pub struct Cmd {
    pub args: Vec<Arg>,
}

#[derive(Debug, Clone)]
pub enum Arg {
    /// `.A.B`
    Field(Vec<String>),
    /// `$x.A.B` (name without `$`; empty for `$`)
    Var(String, Vec<String>),
    Dot,
    Nil,
    Const(Value),
    /// A function name.
    Func(String),
    /// `( pipeline )`
    Pipe(Box<Pipe>),
    /// `(pipeline).A.B`
    Chain(Box<Arg>, Vec<String>),
}

/// Functions a template may call (Go's builtins and Ollama's).
pub const FUNCS: &[&str] = &[
    "and",
    "or",
    "not",
    "len",
    "index",
    "slice",
    "print",
    "printf",
    "println",
    "html",
    "js",
    "urlquery",
    "call",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "json",
    "currentDate",
    "yesterdayDate",
    "toTypeScriptType",
];

/// How a list ended.
enum ListEnd {
    Eof,
    End,
    Else,
    /// `{{ else if ... }}` / `{{ else with ... }}`: the keyword.
    ElseChain(String),
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
    range_depth: usize,
    defines: HashMap<String, Vec<Node>>,
}

fn err(line: usize, msg: impl std::fmt::Display) -> TemplateError {
    TemplateError::Syntax(format!("template: line {line}: {msg}"))
}

/// Parses a Go template.
pub fn parse(src: &str) -> Result<Tree, TemplateError> {
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
        depth: 0,
        range_depth: 0,
        defines: HashMap::new(),
    };
    let (root, end) = p.list(true)?;
    match end {
        ListEnd::Eof => Ok(Tree {
            root,
            defines: p.defines,
        }),
        ListEnd::End => Err(err(p.line(), "unexpected {{end}}")),
        ListEnd::Else | ListEnd::ElseChain(_) => Err(err(p.line(), "unexpected {{else}}")),
    }
}

impl Parser {
    fn line(&self) -> usize {
        self.toks
            .get(self.pos.min(self.toks.len().saturating_sub(1)))
            .map_or(1, |t| t.line)
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n).map(|t| &t.tok)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|t| t.tok.clone());
        self.pos += 1;
        t
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<(), TemplateError> {
        match self.next() {
            Some(t) if t == want => Ok(()),
            other => Err(err(
                self.line(),
                format!("unexpected {other:?} in {what}, expected {want:?}"),
            )),
        }
    }

    fn enter(&mut self) -> Result<(), TemplateError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(err(self.line(), "template nests too deeply"));
        }
        Ok(())
    }

    /// Nodes up to `{{ end }}`, `{{ else }}` or the end of input.
    fn list(&mut self, top: bool) -> Result<(Vec<Node>, ListEnd), TemplateError> {
        self.enter()?;
        let mut nodes = Vec::new();
        let end = loop {
            match self.next() {
                None => break ListEnd::Eof,
                Some(Tok::Text(t)) => nodes.push(Node::Text(t)),
                Some(Tok::Open) => {
                    let keyword = match self.peek() {
                        Some(Tok::Ident(k)) => k.clone(),
                        _ => String::new(),
                    };
                    match keyword.as_str() {
                        "end" => {
                            self.pos += 1;
                            self.expect(Tok::Close, "end")?;
                            break ListEnd::End;
                        }
                        "else" => {
                            self.pos += 1;
                            if let Some(Tok::Ident(k)) = self.peek() {
                                if k == "if" || k == "with" {
                                    let k = k.clone();
                                    self.pos += 1;
                                    break ListEnd::ElseChain(k);
                                }
                            }
                            self.expect(Tok::Close, "else")?;
                            break ListEnd::Else;
                        }
                        "if" | "with" | "range" => {
                            self.pos += 1;
                            nodes.push(self.branch(&keyword)?);
                        }
                        "break" | "continue" => {
                            self.pos += 1;
                            if self.range_depth == 0 {
                                return Err(err(
                                    self.line(),
                                    format!("{{{{{keyword}}}}} outside {{{{range}}}}"),
                                ));
                            }
                            self.expect(Tok::Close, &keyword)?;
                            nodes.push(if keyword == "break" {
                                Node::Break
                            } else {
                                Node::Continue
                            });
                        }
                        "template" => {
                            self.pos += 1;
                            let name = self.template_name()?;
                            let pipe = if self.peek() == Some(&Tok::Close) {
                                None
                            } else {
                                Some(self.pipe(false, &Tok::Close)?)
                            };
                            self.expect(Tok::Close, "template")?;
                            nodes.push(Node::Template { name, pipe });
                        }
                        "define" | "block" => {
                            if keyword == "define" && !top {
                                return Err(err(self.line(), "{{define}} inside a block"));
                            }
                            self.pos += 1;
                            let name = self.template_name()?;
                            let pipe = if keyword == "block" {
                                Some(self.pipe(false, &Tok::Close)?)
                            } else {
                                None
                            };
                            self.expect(Tok::Close, &keyword)?;
                            let (body, end) = self.list(false)?;
                            if !matches!(end, ListEnd::End) {
                                return Err(err(self.line(), format!("unterminated {keyword}")));
                            }
                            self.defines.insert(name.clone(), body);
                            if keyword == "block" {
                                nodes.push(Node::Template { name, pipe });
                            }
                        }
                        _ => {
                            let pipe = self.pipe(true, &Tok::Close)?;
                            self.expect(Tok::Close, "action")?;
                            nodes.push(Node::Action(pipe));
                        }
                    }
                }
                Some(other) => return Err(err(self.line(), format!("unexpected {other:?}"))),
            }
        };
        self.depth -= 1;
        Ok((nodes, end))
    }

    fn template_name(&mut self) -> Result<String, TemplateError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(s),
            other => Err(err(
                self.line(),
                format!("unexpected {other:?} in template clause"),
            )),
        }
    }

    /// `if`, `with` or `range`, its pipeline, body and else part.
    fn branch(&mut self, keyword: &str) -> Result<Node, TemplateError> {
        let pipe = self.pipe(true, &Tok::Close)?;
        if keyword != "range" && pipe.decl.len() > 1 {
            return Err(err(self.line(), "too many declarations in command"));
        }
        self.expect(Tok::Close, keyword)?;
        if keyword == "range" {
            self.range_depth += 1;
        }
        let listed = self.list(false);
        if keyword == "range" {
            self.range_depth -= 1;
        }
        let (list, end) = listed?;
        let else_list = match end {
            ListEnd::End => None,
            ListEnd::Else => {
                let (else_list, end) = self.list(false)?;
                if !matches!(end, ListEnd::End) {
                    return Err(err(self.line(), format!("expected end; found {keyword}")));
                }
                Some(else_list)
            }
            ListEnd::ElseChain(k) => {
                if k != keyword || keyword == "range" {
                    return Err(err(
                        self.line(),
                        format!("unexpected else {k} in {keyword}"),
                    ));
                }
                Some(vec![self.branch(&k)?])
            }
            ListEnd::Eof => return Err(err(self.line(), format!("unexpected EOF in {keyword}"))),
        };
        let branch = Branch {
            pipe,
            list,
            else_list,
        };
        Ok(match keyword {
            "if" => Node::If(branch),
            "with" => Node::With(branch),
            _ => Node::Range(branch),
        })
    }

    /// A pipeline up to (not including) `stop`.
    fn pipe(&mut self, allow_decl: bool, stop: &Tok) -> Result<Pipe, TemplateError> {
        self.enter()?;
        let mut pipe = Pipe::default();
        if allow_decl {
            // `$x :=`, `$x =`, `$i, $m :=`
            let mut n = 0;
            let mut names = Vec::new();
            while let Some(Tok::Var(name)) = self.peek_at(n) {
                names.push(name.clone());
                match self.peek_at(n + 1) {
                    Some(Tok::Comma) => n += 2,
                    Some(Tok::Declare) | Some(Tok::Assign) => {
                        pipe.is_assign = self.peek_at(n + 1) == Some(&Tok::Assign);
                        pipe.decl = names;
                        self.pos += n + 2;
                        break;
                    }
                    _ => break,
                }
            }
        }
        loop {
            let mut cmd = Cmd::default();
            loop {
                match self.peek() {
                    Some(t) if t == stop => break,
                    Some(Tok::Pipe) | Some(Tok::RParen) | Some(Tok::Close) | None => break,
                    _ => cmd.args.push(self.operand()?),
                }
            }
            if cmd.args.is_empty() {
                return Err(err(self.line(), "missing value for command"));
            }
            pipe.cmds.push(cmd);
            if self.peek() == Some(&Tok::Pipe) {
                self.pos += 1;
                continue;
            }
            break;
        }
        self.depth -= 1;
        Ok(pipe)
    }

    /// A term followed by any chained `.Field`s.
    fn operand(&mut self) -> Result<Arg, TemplateError> {
        let line = self.line();
        let term = match self.next() {
            Some(Tok::Field(f)) => Arg::Field(vec![f]),
            Some(Tok::Var(v)) => Arg::Var(v, Vec::new()),
            Some(Tok::Dot) => Arg::Dot,
            Some(Tok::Str(s)) => Arg::Const(Value::from(s)),
            Some(Tok::Char(c)) => Arg::Const(Value::Int(c as i64)),
            Some(Tok::Number(n)) => Arg::Const(
                number(&n).ok_or_else(|| err(line, format!("bad number syntax: {n:?}")))?,
            ),
            Some(Tok::Ident(id)) => match id.as_str() {
                "true" => Arg::Const(Value::Bool(true)),
                "false" => Arg::Const(Value::Bool(false)),
                "nil" => Arg::Nil,
                _ if FUNCS.contains(&id.as_str()) => Arg::Func(id),
                _ => return Err(err(line, format!("function {id:?} not defined"))),
            },
            Some(Tok::LParen) => {
                let pipe = self.pipe(true, &Tok::RParen)?;
                self.expect(Tok::RParen, "parenthesized pipeline")?;
                Arg::Pipe(Box::new(pipe))
            }
            other => return Err(err(line, format!("unexpected {other:?} in operand"))),
        };
        let mut chain = Vec::new();
        while let Some(Token {
            tok: Tok::Field(f),
            spaced: false,
            ..
        }) = self.toks.get(self.pos)
        {
            chain.push(f.clone());
            self.pos += 1;
        }
        if chain.is_empty() {
            return Ok(term);
        }
        Ok(match term {
            Arg::Field(mut f) => {
                f.extend(chain);
                Arg::Field(f)
            }
            Arg::Var(v, mut f) => {
                f.extend(chain);
                Arg::Var(v, f)
            }
            Arg::Dot => return Err(err(line, "unexpected . after term")),
            Arg::Nil | Arg::Const(_) => {
                return Err(err(line, "unexpected field on a constant"));
            }
            term => Arg::Chain(Box::new(term), chain),
        })
    }
}

/// A Go number constant: an int when it is one, else a float.
fn number(s: &str) -> Option<Value> {
    let clean = s.replace('_', "");
    let (neg, digits) = match clean.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
    };
    let int = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i64::from_str_radix(h, 16).ok()
    } else if let Some(b) = digits
        .strip_prefix("0b")
        .or_else(|| digits.strip_prefix("0B"))
    {
        i64::from_str_radix(b, 2).ok()
    } else if let Some(o) = digits
        .strip_prefix("0o")
        .or_else(|| digits.strip_prefix("0O"))
    {
        i64::from_str_radix(o, 8).ok()
    } else if digits.len() > 1
        && digits.starts_with('0')
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        i64::from_str_radix(&digits[1..], 8).ok()
    } else {
        digits.parse::<i64>().ok()
    };
    if let Some(i) = int {
        return Some(Value::Int(if neg { -i } else { i }));
    }
    clean.parse::<f64>().ok().map(Value::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn else_if_nests_in_the_else_list() {
        let t = parse("{{ if .A }}a{{ else if .B }}b{{ else }}c{{ end }}").unwrap();
        let Node::If(b) = &t.root[0] else { panic!() };
        let Some(else_list) = &b.else_list else {
            panic!()
        };
        assert!(matches!(&else_list[0], Node::If(inner) if inner.else_list.is_some()));
    }

    #[test]
    fn rejects_bad_templates() {
        for src in [
            "{{ if .A }}",
            "{{ end }}",
            "{{ nosuchfunc 1 }}",
            "{{ break }}",
            "{{ range .A }}{{ else if .B }}{{ end }}",
            "{{ (.A }}",
            "{{ }}",
        ] {
            assert!(parse(src).is_err(), "{src}");
        }
        let deep = "{{ if .A }}".repeat(1000);
        assert!(parse(&deep).is_err());
        let parens = format!("{{{{ {}1{} }}}}", "(".repeat(1000), ")".repeat(1000));
        assert!(parse(&parens).is_err());
    }

    #[test]
    fn numbers() {
        assert!(matches!(number("42"), Some(Value::Int(42))));
        assert!(matches!(number("-0x10"), Some(Value::Int(-16))));
        assert!(matches!(number("1.5"), Some(Value::Float(f)) if f == 1.5));
        assert!(matches!(number("1e3"), Some(Value::Float(f)) if f == 1000.0));
    }
}
