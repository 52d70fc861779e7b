//! Splitting a thinking model's streamed output into thinking and content, with the
//! rules of Ollama's thinking parser:
//!
//! - Whitespace before the opening tag is skipped; output that starts with anything
//!   but the opening tag has no thinking, and all of it is content.
//! - Whitespace right after the opening tag and right after the closing tag is
//!   dropped.
//! - Tags split across chunks are held back until they are decided.
//! - When the prompt itself ends with the opening tag (the template opened the
//!   thinking block), the model starts thinking at once:
//!   [`ThinkingParser::for_prompt`].

/// Where the parser is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    LookingForOpen,
    /// Inside thinking, before its first non-blank text.
    StartOfThinking,
    Thinking,
    /// After the closing tag, before the first non-blank content.
    StartOfContent,
    Content,
}

/// A streaming splitter of `open ... close` thinking from content.
#[derive(Debug, Clone)]
pub struct ThinkingParser {
    open: String,
    close: String,
    state: State,
    buf: String,
}

impl ThinkingParser {
    /// A parser that expects the model to open thinking with `open`.
    pub fn new(open: &str, close: &str) -> ThinkingParser {
        ThinkingParser {
            open: open.to_string(),
            close: close.to_string(),
            state: State::LookingForOpen,
            buf: String::new(),
        }
    }

    /// A parser for output that follows `prompt`: if the prompt ends with the opening
    /// tag (ignoring whitespace) the output starts inside thinking.
    pub fn for_prompt(open: &str, close: &str, prompt: &str) -> ThinkingParser {
        let mut parser = ThinkingParser::new(open, close);
        if !open.is_empty() && prompt.trim().ends_with(open) {
            parser.state = State::StartOfThinking;
        }
        parser
    }

    /// Whether the parser is inside thinking (tags seen but not yet closed).
    pub fn in_thinking(&self) -> bool {
        matches!(self.state, State::StartOfThinking | State::Thinking)
    }

    /// Feeds text; returns `(thinking, content)` released by it.
    pub fn push(&mut self, text: &str) -> (String, String) {
        self.buf.push_str(text);
        let (mut thinking, mut content) = (String::new(), String::new());
        while self.step(&mut thinking, &mut content) {}
        (thinking, content)
    }

    /// Ends the stream: releases held-back text (a partial tag, leading blanks).
    pub fn finish(&mut self) -> (String, String) {
        let rest = std::mem::take(&mut self.buf);
        match self.state {
            State::LookingForOpen | State::Content => (String::new(), rest),
            State::Thinking => (rest, String::new()),
            State::StartOfThinking | State::StartOfContent => (String::new(), String::new()),
        }
    }

    /// One transition; true when another may follow at once.
    fn step(&mut self, thinking: &mut String, content: &mut String) -> bool {
        match self.state {
            State::LookingForOpen => {
                let trimmed = self.buf.trim_start();
                if let Some(after) = trimmed.strip_prefix(self.open.as_str()) {
                    let after = after.trim_start().to_string();
                    self.state = if after.is_empty() {
                        State::StartOfThinking
                    } else {
                        State::Thinking
                    };
                    self.buf = after;
                    true
                } else if self.open.starts_with(trimmed) {
                    // Blank so far, or a prefix of the tag: wait.
                    false
                } else {
                    self.state = State::Content;
                    content.push_str(&std::mem::take(&mut self.buf));
                    false
                }
            }
            State::StartOfThinking => {
                let trimmed = self.buf.trim_start();
                if trimmed.is_empty() {
                    self.buf.clear();
                    return false;
                }
                self.buf = trimmed.to_string();
                self.state = State::Thinking;
                true
            }
            State::Thinking => {
                if let Some(at) = self.buf.find(self.close.as_str()) {
                    thinking.push_str(&self.buf[..at]);
                    let rest = self.buf[at + self.close.len()..].trim_start().to_string();
                    self.state = if rest.is_empty() {
                        State::StartOfContent
                    } else {
                        State::Content
                    };
                    content.push_str(&rest);
                    self.buf.clear();
                } else {
                    let keep = held_back(&self.buf, &self.close);
                    let release = self.buf.len() - keep;
                    thinking.push_str(&self.buf[..release]);
                    self.buf.drain(..release);
                }
                false
            }
            State::StartOfContent => {
                let trimmed = self.buf.trim_start();
                if !trimmed.is_empty() {
                    self.state = State::Content;
                    content.push_str(trimmed);
                }
                self.buf.clear();
                false
            }
            State::Content => {
                content.push_str(&std::mem::take(&mut self.buf));
                false
            }
        }
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `tag`.
fn held_back(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| tag.is_char_boundary(n) && text.ends_with(&tag[..n]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_split(p: &mut ThinkingParser, text: &str, at: usize) -> (String, String) {
        let (mut t, mut c) = p.push(&text[..at]);
        let (t2, c2) = p.push(&text[at..]);
        let (t3, c3) = p.finish();
        t.push_str(&t2);
        t.push_str(&t3);
        c.push_str(&c2);
        c.push_str(&c3);
        (t, c)
    }

    fn all_splits(text: &str, expect: (&str, &str), make: impl Fn() -> ThinkingParser) {
        for at in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            let got = run_split(&mut make(), text, at);
            assert_eq!((got.0.as_str(), got.1.as_str()), expect, "split at {at}");
        }
    }

    #[test]
    fn splits_thinking_and_content_at_every_boundary() {
        all_splits(
            "  <think>\n  Let me see… 2+2.</think>\n\nIt is 4.",
            ("Let me see… 2+2.", "It is 4."),
            || ThinkingParser::new("<think>", "</think>"),
        );
    }

    #[test]
    fn only_the_first_block_is_thinking_and_its_inner_blanks_stay() {
        all_splits("<think> inner </think> after", ("inner ", "after"), || {
            ThinkingParser::new("<think>", "</think>")
        });
        all_splits(
            "<think>one</think><think>two</think>rest",
            ("one", "<think>two</think>rest"),
            || ThinkingParser::new("<think>", "</think>"),
        );
    }

    #[test]
    fn output_without_the_open_tag_is_content() {
        all_splits(
            "  Hello <think>x</think>",
            ("", "  Hello <think>x</think>"),
            || ThinkingParser::new("<think>", "</think>"),
        );
    }

    #[test]
    fn a_prompt_that_opened_thinking_starts_inside_it() {
        all_splits("hmm, 4.</think> Four.", ("hmm, 4.", "Four."), || {
            ThinkingParser::for_prompt("<think>", "</think>", "<|im_start|>assistant\n<think>\n")
        });
        let p = ThinkingParser::for_prompt("<think>", "</think>", "assistant\n");
        assert!(!p.in_thinking());
    }

    #[test]
    fn unclosed_thinking_and_partial_tags_flush_on_finish() {
        let mut p = ThinkingParser::new("<think>", "</think>");
        assert_eq!(p.push("<think>abc</thi"), ("abc".into(), String::new()));
        assert_eq!(p.finish(), ("</thi".into(), String::new()));
        let mut p = ThinkingParser::new("<think>", "</think>");
        assert_eq!(p.push(" <thi"), (String::new(), String::new()));
        assert_eq!(p.finish(), (String::new(), " <thi".into()));
    }
}
