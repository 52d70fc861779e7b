//! The lexer: splits a Go template into text and the tokens of its `{{ }}` actions,
//! applying the `{{- ` and ` -}}` whitespace trim markers and dropping comments.

use crate::error::TemplateError;

/// One token inside an action, or a piece of text between actions.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Text(String),
    /// `{{` (after trimming); `}}` is [`Tok::Close`].
    Open,
    Close,
    /// A keyword or function name.
    Ident(String),
    /// `.Name` (the leading dot stripped).
    Field(String),
    /// `$name`, or `$` alone (empty name).
    Var(String),
    Dot,
    Str(String),
    Number(String),
    Char(char),
    LParen,
    RParen,
    Pipe,
    Declare,
    Assign,
    Comma,
}

/// A token and whether whitespace came right before it (a field right after a term
/// with no space between is a chained field access).
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub spaced: bool,
    pub line: usize,
}

fn err(line: usize, msg: impl std::fmt::Display) -> TemplateError {
    TemplateError::Syntax(format!("template: line {line}: {msg}"))
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Splits `src` into tokens.
pub fn lex(src: &str) -> Result<Vec<Token>, TemplateError> {
    let mut toks = Vec::new();
    let mut rest = src;
    let mut line = 1;
    let mut trim_next_text = false;
    loop {
        let (text, after) = match rest.find("{{") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        let mut text = text;
        if trim_next_text {
            text = text.trim_start_matches(is_space);
        }
        let Some(after) = after else {
            push_text(&mut toks, text, line);
            break;
        };
        // `{{- ` trims the text before it.
        let left_trim = after.starts_with('-') && after[1..].starts_with(is_space);
        if left_trim {
            text = text.trim_end_matches(is_space);
        }
        push_text(&mut toks, text, line);
        line += rest[..rest.len() - after.len()].matches('\n').count();
        let mut body = if left_trim { &after[2..] } else { after };
        // A comment: `{{/* ... */}}`, optionally with trim markers.
        let trimmed = body.trim_start_matches(is_space);
        if trimmed.starts_with("/*") && (left_trim || trimmed.len() == body.len()) {
            let Some(end) = trimmed.find("*/") else {
                return Err(err(line, "unclosed comment"));
            };
            let after_comment = &trimmed[end + 2..];
            line += trimmed[..end].matches('\n').count();
            let (right_trim, tail) = if let Some(t) = after_comment
                .trim_start_matches(is_space)
                .strip_prefix("-}}")
                .filter(|_| after_comment.starts_with(is_space))
            {
                (true, t)
            } else if let Some(t) = after_comment.strip_prefix("}}") {
                (false, t)
            } else {
                return Err(err(line, "comment ends before closing delimiter"));
            };
            trim_next_text = right_trim;
            rest = tail;
            continue;
        }
        toks.push(Token {
            tok: Tok::Open,
            spaced: false,
            line,
        });
        let mut spaced = false;
        loop {
            let Some(c) = body.chars().next() else {
                return Err(err(line, "unclosed action"));
            };
            if is_space(c) {
                // ` -}}` closes with a right trim.
                let t = body.trim_start_matches(is_space);
                line += body[..body.len() - t.len()].matches('\n').count();
                if let Some(tail) = t.strip_prefix("-}}") {
                    toks.push(Token {
                        tok: Tok::Close,
                        spaced: true,
                        line,
                    });
                    trim_next_text = true;
                    body = tail;
                    break;
                }
                body = t;
                spaced = true;
                continue;
            }
            if let Some(tail) = body.strip_prefix("}}") {
                toks.push(Token {
                    tok: Tok::Close,
                    spaced,
                    line,
                });
                trim_next_text = false;
                body = tail;
                break;
            }
            let (tok, len) = lex_one(body, line)?;
            toks.push(Token { tok, spaced, line });
            spaced = false;
            body = &body[len..];
        }
        rest = body;
    }
    Ok(toks)
}

fn push_text(toks: &mut Vec<Token>, text: &str, line: usize) {
    if !text.is_empty() {
        toks.push(Token {
            tok: Tok::Text(text.to_string()),
            spaced: false,
            line,
        });
    }
}

fn ident_len(s: &str) -> usize {
    s.char_indices()
        .find(|&(_, c)| !(c.is_alphanumeric() || c == '_'))
        .map_or(s.len(), |(i, _)| i)
}

/// One token at the start of `s` and its length in bytes.
fn lex_one(s: &str, line: usize) -> Result<(Tok, usize), TemplateError> {
    let mut chars = s.chars();
    let c = chars.next().unwrap_or(' ');
    let next = chars.next();
    Ok(match c {
        '(' => (Tok::LParen, 1),
        ')' => (Tok::RParen, 1),
        '|' => (Tok::Pipe, 1),
        ',' => (Tok::Comma, 1),
        '=' => (Tok::Assign, 1),
        ':' if next == Some('=') => (Tok::Declare, 2),
        '$' => {
            let n = ident_len(&s[1..]);
            (Tok::Var(s[1..1 + n].to_string()), 1 + n)
        }
        '.' if next.is_some_and(|c| c.is_ascii_digit()) => lex_number(s, line)?,
        '.' => {
            let n = ident_len(&s[1..]);
            if n == 0 {
                (Tok::Dot, 1)
            } else {
                (Tok::Field(s[1..1 + n].to_string()), 1 + n)
            }
        }
        '"' => {
            let (text, len) = lex_quoted(s, line)?;
            (Tok::Str(text), len)
        }
        '`' => {
            let Some(end) = s[1..].find('`') else {
                return Err(err(line, "unterminated raw quoted string"));
            };
            (Tok::Str(s[1..1 + end].to_string()), end + 2)
        }
        '\'' => {
            let (text, len) = lex_quoted(s, line)?;
            let mut cs = text.chars();
            match (cs.next(), cs.next()) {
                (Some(ch), None) => (Tok::Char(ch), len),
                _ => return Err(err(line, "malformed character constant")),
            }
        }
        '+' | '-' | '0'..='9' => lex_number(s, line)?,
        c if c.is_alphabetic() || c == '_' => {
            let n = ident_len(s);
            (Tok::Ident(s[..n].to_string()), n)
        }
        c => return Err(err(line, format!("unexpected {c:?} in command"))),
    })
}

fn lex_number(s: &str, line: usize) -> Result<(Tok, usize), TemplateError> {
    let len = s
        .char_indices()
        .find(|&(i, c)| {
            !(c.is_ascii_alphanumeric()
                || c == '.'
                || c == '_'
                || ((c == '+' || c == '-')
                    && (i == 0 || matches!(s.as_bytes()[i - 1], b'e' | b'E' | b'p' | b'P'))))
        })
        .map_or(s.len(), |(i, _)| i);
    if len == 0 || (len == 1 && !s.as_bytes()[0].is_ascii_digit()) {
        return Err(err(
            line,
            format!("bad number syntax: {:?}", &s[..len.max(1)]),
        ));
    }
    Ok((Tok::Number(s[..len].to_string()), len))
}

/// A `"..."` or `'...'` literal with Go's escapes; returns the text and the length.
fn lex_quoted(s: &str, line: usize) -> Result<(String, usize), TemplateError> {
    let quote = s.chars().next().unwrap_or('"');
    let mut out = String::new();
    let mut it = s.char_indices().skip(1);
    while let Some((i, c)) = it.next() {
        match c {
            c if c == quote => return Ok((out, i + 1)),
            '\n' => break,
            '\\' => {
                let Some((_, e)) = it.next() else { break };
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'a' => out.push('\u{7}'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'v' => out.push('\u{b}'),
                    '\\' | '"' | '\'' => out.push(e),
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let hex: String =
                            (0..n).filter_map(|_| it.next().map(|(_, c)| c)).collect();
                        let ch = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| err(line, "invalid escape in string"))?;
                        out.push(ch);
                    }
                    '0'..='7' => {
                        let mut v = e as u32 - '0' as u32;
                        for _ in 0..2 {
                            if let Some((_, d)) = it.next() {
                                v = v * 8 + d.to_digit(8).unwrap_or(0);
                            }
                        }
                        out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
                    }
                    _ => return Err(err(line, "unknown escape sequence")),
                }
            }
            c => out.push(c),
        }
    }
    Err(err(line, "unterminated quoted string"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<Tok> {
        lex(src).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn trims_and_comments() {
        assert_eq!(
            kinds("a  {{- .X -}}  b {{/* c */}} d {{- /* e */ -}} f"),
            vec![
                Tok::Text("a".into()),
                Tok::Open,
                Tok::Field("X".into()),
                Tok::Close,
                Tok::Text("b ".into()),
                Tok::Text(" d".into()),
                Tok::Text("f".into()),
            ]
        );
    }

    #[test]
    fn tokens() {
        assert_eq!(
            kinds(r#"{{ $i, $m := range .A.B }}{{ printf "%d\n" -1 `x` 'y' (len $) }}"#),
            vec![
                Tok::Open,
                Tok::Var("i".into()),
                Tok::Comma,
                Tok::Var("m".into()),
                Tok::Declare,
                Tok::Ident("range".into()),
                Tok::Field("A".into()),
                Tok::Field("B".into()),
                Tok::Close,
                Tok::Open,
                Tok::Ident("printf".into()),
                Tok::Str("%d\n".into()),
                Tok::Number("-1".into()),
                Tok::Str("x".into()),
                Tok::Char('y'),
                Tok::LParen,
                Tok::Ident("len".into()),
                Tok::Var("".into()),
                Tok::RParen,
                Tok::Close,
            ]
        );
        assert!(lex("{{ .X").is_err());
        assert!(lex("{{ \"x }}").is_err());
    }
}
