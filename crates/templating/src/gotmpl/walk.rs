//! Ollama's walks over a parsed template tree, re-done on ours: the identifiers a
//! template mentions (`Template.Vars`), the thinking tags around `.Thinking`
//! (`thinking.InferTags`), the tool-call tag in the `.ToolCalls` branch
//! (`tools.parseTag`), and the legacy cut after `{{ .Response }}`.

use std::collections::BTreeSet;

use super::parse::{Arg, Branch, Node, Pipe, Tree};

/// The lower-cased field and variable names the template mentions, sorted.
pub fn vars(tree: &Tree) -> Vec<String> {
    let mut set = BTreeSet::new();
    let mut lists: Vec<&Vec<Node>> = vec![&tree.root];
    lists.extend(tree.defines.values());
    for list in lists {
        idents_list(list, &mut set);
    }
    set.into_iter().collect()
}

fn idents_list(nodes: &[Node], out: &mut BTreeSet<String>) {
    for n in nodes {
        match n {
            Node::Action(p) => idents_pipe(p, out),
            Node::If(b) | Node::Range(b) | Node::With(b) => {
                idents_pipe(&b.pipe, out);
                idents_list(&b.list, out);
                if let Some(e) = &b.else_list {
                    idents_list(e, out);
                }
            }
            Node::Template { pipe: Some(p), .. } => idents_pipe(p, out),
            _ => {}
        }
    }
}

fn idents_pipe(pipe: &Pipe, out: &mut BTreeSet<String>) {
    for cmd in &pipe.cmds {
        for arg in &cmd.args {
            match arg {
                Arg::Field(f) => out.extend(f.iter().map(|s| s.to_lowercase())),
                Arg::Var(v, f) => {
                    out.insert(format!("${}", v.to_lowercase()));
                    out.extend(f.iter().map(|s| s.to_lowercase()));
                }
                Arg::Pipe(p) => idents_pipe(p, out),
                // Like Ollama's walk, chained fields `(x).A` are not looked into.
                _ => {}
            }
        }
    }
}

/// What the tag search keeps on its way down the tree.
#[derive(Clone, Copy)]
enum Ancestor<'a> {
    List(&'a [Node]),
    Range(&'a Branch),
}

/// The text right before and after `.Thinking` inside the `range` over `.Messages`
/// (e.g. `<think>` and `</think>`), trimmed; empty when not found.
pub fn thinking_tags(tree: &Tree) -> (String, String) {
    let mut tags = (String::new(), String::new());
    let mut stack = Vec::new();
    visit_list(&tree.root, &mut stack, &mut tags);
    tags
}

fn visit_list<'a>(nodes: &'a [Node], stack: &mut Vec<Ancestor<'a>>, tags: &mut (String, String)) {
    stack.push(Ancestor::List(nodes));
    for n in nodes {
        match n {
            Node::Action(p) => visit_pipe(p, stack, tags),
            Node::If(b) | Node::With(b) => visit_branch(b, stack, tags),
            Node::Range(b) => {
                stack.push(Ancestor::Range(b));
                visit_branch(b, stack, tags);
                stack.pop();
            }
            Node::Template { pipe: Some(p), .. } => visit_pipe(p, stack, tags),
            _ => {}
        }
    }
    stack.pop();
}

fn visit_branch<'a>(b: &'a Branch, stack: &mut Vec<Ancestor<'a>>, tags: &mut (String, String)) {
    visit_pipe(&b.pipe, stack, tags);
    visit_list(&b.list, stack, tags);
    if let Some(e) = &b.else_list {
        visit_list(e, stack, tags);
    }
}

fn visit_pipe<'a>(pipe: &'a Pipe, stack: &mut Vec<Ancestor<'a>>, tags: &mut (String, String)) {
    for cmd in &pipe.cmds {
        for arg in &cmd.args {
            match arg {
                Arg::Field(f) if f.first().is_some_and(|s| s == "Thinking") => {
                    let range = stack.iter().rev().find_map(|a| match a {
                        Ancestor::Range(r) => Some(*r),
                        Ancestor::List(_) => None,
                    });
                    if !range.is_some_and(|r| pipe_uses_field(&r.pipe, "Messages")) {
                        continue;
                    }
                    let list = stack.iter().rev().find_map(|a| match a {
                        Ancestor::List(l) => Some(*l),
                        Ancestor::Range(_) => None,
                    });
                    if let Some(list) = list {
                        if let Some(Node::Text(t)) = list.first() {
                            tags.0 = t.trim().to_string();
                        }
                        if let Some(Node::Text(t)) = list.last() {
                            tags.1 = t.trim().to_string();
                        }
                    }
                }
                Arg::Pipe(p) => visit_pipe(p, stack, tags),
                _ => {}
            }
        }
    }
}

fn pipe_uses_field(pipe: &Pipe, field: &str) -> bool {
    pipe.cmds.iter().flat_map(|c| &c.args).any(|a| match a {
        Arg::Field(f) => f.first().is_some_and(|s| s == field),
        Arg::Pipe(p) => pipe_uses_field(p, field),
        _ => false,
    })
}

/// The tool-call tag: the first non-blank text inside the first `if` on
/// `.ToolCalls`, cut before any `{` and trimmed; `{` (bare JSON) when there is none.
pub fn tool_call_tag(tree: &Tree) -> String {
    let text = find_tool_calls_if(&tree.root).and_then(|b| first_text(&b.list).ok().flatten());
    let Some(text) = text else {
        return "{".into();
    };
    let text = text.replace("\r\n", "\n");
    let tag = text.split('{').next().unwrap_or("").trim();
    if tag.is_empty() {
        "{".into()
    } else {
        tag.to_string()
    }
}

fn find_tool_calls_if(nodes: &[Node]) -> Option<&Branch> {
    for n in nodes {
        let found =
            match n {
                Node::If(b) => {
                    let on_tool_calls =
                        b.pipe.cmds.iter().flat_map(|c| &c.args).any(
                            |a| matches!(a, Arg::Field(f) if f.iter().any(|s| s == "ToolCalls")),
                        );
                    if on_tool_calls {
                        return Some(b);
                    }
                    find_in_branch(b)
                }
                Node::Range(b) | Node::With(b) => find_in_branch(b),
                _ => None,
            };
        if found.is_some() {
            return found;
        }
    }
    None
}

fn find_in_branch(b: &Branch) -> Option<&Branch> {
    find_tool_calls_if(&b.list).or_else(|| b.else_list.as_deref().and_then(find_tool_calls_if))
}

/// The first non-blank text, depth first; `Err` when an action or the end of a
/// nested block comes first (the search stops there).
fn first_text(nodes: &[Node]) -> Result<Option<String>, ()> {
    for n in nodes {
        match n {
            Node::Text(t) if t.trim().is_empty() => {}
            Node::Text(t) => return Ok(Some(t.clone())),
            Node::If(b) | Node::Range(b) | Node::With(b) => {
                if let Some(t) = first_text(&b.list)? {
                    return Ok(Some(t));
                }
                if let Some(e) = &b.else_list {
                    if let Some(t) = first_text(e)? {
                        return Ok(Some(t));
                    }
                }
                return Err(());
            }
            Node::Action(_) => return Err(()),
            _ => {}
        }
    }
    Ok(None)
}

/// The tree for the last turn of a legacy template: everything after the first
/// `{{ .Response }}` removed (the `.Response` itself stays, for a prefilled answer).
pub fn cut_after_response(nodes: &[Node]) -> Vec<Node> {
    let mut cut = false;
    cut_list(nodes, &mut cut)
}

fn cut_list(nodes: &[Node], cut: &mut bool) -> Vec<Node> {
    let mut out = Vec::new();
    for n in nodes {
        if *cut {
            break;
        }
        match n {
            Node::Action(p) => {
                if let Some(p) = cut_pipe(p, cut) {
                    out.push(Node::Action(p));
                }
            }
            Node::If(b) => out.push(Node::If(cut_branch(b, cut))),
            Node::With(b) => out.push(Node::With(cut_branch(b, cut))),
            Node::Range(b) => out.push(Node::Range(cut_branch(b, cut))),
            other => out.push(other.clone()),
        }
    }
    out
}

fn cut_branch(b: &Branch, cut: &mut bool) -> Branch {
    // The condition is not searched; only the lists are.
    let list = cut_list(&b.list, cut);
    let else_list = b.else_list.as_ref().map(|e| cut_list(e, cut));
    Branch {
        pipe: b.pipe.clone(),
        list,
        else_list,
    }
}

fn cut_pipe(pipe: &Pipe, cut: &mut bool) -> Option<Pipe> {
    let mut cmds = Vec::new();
    for cmd in &pipe.cmds {
        let mut args = Vec::new();
        for a in &cmd.args {
            if *cut {
                continue;
            }
            match a {
                Arg::Field(f) => {
                    if f.iter().any(|s| s == "Response") {
                        *cut = true;
                    }
                    args.push(a.clone());
                }
                Arg::Pipe(p) => {
                    if let Some(p) = cut_pipe(p, cut) {
                        args.push(Arg::Pipe(Box::new(p)));
                    }
                }
                other => args.push(other.clone()),
            }
        }
        if args.is_empty() {
            return None;
        }
        cmds.push(super::parse::Cmd { args });
    }
    if cmds.is_empty() {
        return None;
    }
    Some(Pipe {
        decl: pipe.decl.clone(),
        is_assign: pipe.is_assign,
        cmds,
    })
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse;
    use super::*;

    #[test]
    fn vars_are_lowercased_and_sorted() {
        let t = parse(
            "{{ range $i, $m := .Messages }}{{ $m.Role }}{{ (len .Tools) }}{{ end }}{{ .System }}",
        )
        .unwrap();
        assert_eq!(vars(&t), ["$m", "messages", "role", "system", "tools"]);
    }

    #[test]
    fn thinking_tags_come_from_the_messages_range() {
        let t = parse("{{ range .Messages }}{{ if .Thinking }}<think>{{ .Thinking }}</think>\n{{ end }}{{ .Content }}{{ end }}").unwrap();
        assert_eq!(thinking_tags(&t), ("<think>".into(), "</think>".into()));
        let t = parse("{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}").unwrap();
        assert_eq!(thinking_tags(&t), (String::new(), String::new()));
    }

    #[test]
    fn tool_call_tags() {
        let t = parse("{{ range .Messages }}{{ if .ToolCalls }}<tool_call>\n{{ range .ToolCalls }}{\"name\": \"{{ .Function.Name }}\"}{{ end }}</tool_call>{{ end }}{{ end }}").unwrap();
        assert_eq!(tool_call_tag(&t), "<tool_call>");
        let t = parse("{{ range .Messages }}{{ if .ToolCalls }}{{ range .ToolCalls }}{\"name\": \"{{ .Function.Name }}\"}{{ end }}{{ end }}{{ end }}").unwrap();
        assert_eq!(tool_call_tag(&t), "{");
        let t = parse("{{ .Prompt }}").unwrap();
        assert_eq!(tool_call_tag(&t), "{");
    }

    #[test]
    fn cut_keeps_the_response_and_drops_what_follows() {
        let t = parse("a{{ if .X }}b{{ .Response }}c{{ end }}d").unwrap();
        let cut = cut_after_response(&t.root);
        assert_eq!(cut.len(), 2);
        let Node::If(b) = &cut[1] else { panic!() };
        assert_eq!(b.list.len(), 2);
    }
}
