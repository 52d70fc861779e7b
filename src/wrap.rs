//! Word wrapping of a streamed answer on a terminal, as Ollama's CLI does it: text is
//! printed as it arrives; when a line would pass five columns short of the terminal's
//! width, the word being written is moved to the next line (cursor back over it, erase
//! to the end of the line, newline, the word again). A word too long for any line is
//! broken where it stands. `--nowordwrap` (or `/set nowordwrap`), a stdout that is not a
//! terminal, or a terminal under ten columns wide turn it off.

use std::io::IsTerminal;

use unicode_width::UnicodeWidthChar;

/// Columns kept free at the right edge.
const MARGIN: usize = 5;
/// Narrower terminals are not wrapped.
const MIN_WIDTH: usize = 10;

/// The wrapping state of one answer being printed.
#[derive(Debug)]
pub struct WordWrap {
    /// The terminal's width in columns; 0 when wrapping is off.
    width: usize,
    /// Columns used on the current line.
    line: usize,
    /// The word being written (since the last space or line break).
    word: String,
}

impl WordWrap {
    /// Wrapping for stdout at its current width, or off when `enabled` is false or
    /// stdout is not a terminal.
    pub fn for_stdout(enabled: bool) -> WordWrap {
        let stdout = std::io::stdout();
        let width = if enabled && stdout.is_terminal() {
            console::Term::stdout()
                .size_checked()
                .map(|(_, cols)| usize::from(cols))
                .unwrap_or(0)
        } else {
            0
        };
        WordWrap::with_width(width)
    }

    /// Wrapping at `width` columns (under ten: off).
    pub fn with_width(width: usize) -> WordWrap {
        WordWrap {
            width: if width >= MIN_WIDTH { width } else { 0 },
            line: 0,
            word: String::new(),
        }
    }

    /// What to print for the next piece of the answer.
    pub fn push(&mut self, text: &str) -> String {
        if self.width == 0 {
            return text.to_string();
        }
        let limit = self.width - MARGIN;
        let mut out = String::with_capacity(text.len());
        for ch in text.chars() {
            let w = ch.width().unwrap_or(0);
            if self.line + 1 > limit {
                let word_width = str_width(&self.word);
                if word_width > self.width - MIN_WIDTH {
                    // A word longer than a line: break it here (Ollama's CLI prints the
                    // word a second time at this point; wick does not).
                    out.push('\n');
                    out.push(ch);
                    self.word.clear();
                    if !ch.is_whitespace() && w < 2 {
                        self.word.push(ch);
                    }
                    self.line = w;
                    continue;
                }
                if word_width > 0 {
                    out.push_str(&format!("\x1b[{word_width}D"));
                }
                out.push_str("\x1b[K\n");
                out.push_str(&self.word);
                out.push(ch);
                self.line = word_width + w;
                if ch == ' ' || ch == '\t' || w >= 2 {
                    self.word.clear();
                } else {
                    self.word.push(ch);
                }
                continue;
            }
            out.push(ch);
            self.line += w;
            match ch {
                _ if w >= 2 => self.word.clear(),
                ' ' | '\t' => self.word.clear(),
                '\n' | '\r' => {
                    self.line = 0;
                    self.word.clear();
                }
                _ => self.word.push(ch),
            }
        }
        out
    }
}

fn str_width(s: &str) -> usize {
    s.chars().map(|c| c.width().unwrap_or(0)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a terminal shows for `printed`: the escape sequences `push` writes applied.
    fn screen(printed: &str) -> Vec<String> {
        let mut lines = vec![Vec::<char>::new()];
        let mut col = 0usize;
        let mut chars = printed.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\x1b' => {
                    chars.next(); // '['
                    let mut n = String::new();
                    while let Some(d) = chars.next_if(|d| d.is_ascii_digit()) {
                        n.push(d);
                    }
                    let line = lines.last_mut().unwrap();
                    match chars.next() {
                        Some('D') => col = col.saturating_sub(n.parse().unwrap_or(1)),
                        Some('K') => line.truncate(col),
                        _ => {}
                    }
                }
                '\n' => {
                    lines.push(Vec::new());
                    col = 0;
                }
                c => {
                    let line = lines.last_mut().unwrap();
                    if col < line.len() {
                        line[col] = c;
                    } else {
                        line.push(c);
                    }
                    col += 1;
                }
            }
        }
        lines.into_iter().map(|l| l.into_iter().collect()).collect()
    }

    #[test]
    fn words_move_to_the_next_line_before_the_margin() {
        let text = "The quick brown fox jumps over the lazy dog and keeps on running far away.";
        for pieces in [
            vec![text.to_string()],
            text.split_inclusive(' ').map(String::from).collect(),
            text.chars().map(String::from).collect(),
        ] {
            let mut wrap = WordWrap::with_width(30);
            let printed: String = pieces.iter().map(|p| wrap.push(p)).collect();
            let lines = screen(&printed);
            assert!(lines.iter().all(|l| l.chars().count() <= 25), "{lines:?}");
            // No word is cut, and nothing is lost.
            let words: Vec<&str> = lines.iter().flat_map(|l| l.split_whitespace()).collect();
            assert_eq!(
                words,
                text.split_whitespace().collect::<Vec<_>>(),
                "{lines:?}"
            );
            assert!(lines.len() >= 3, "{lines:?}");
        }
    }

    #[test]
    fn line_breaks_in_the_text_start_the_count_again() {
        let mut wrap = WordWrap::with_width(30);
        let printed = wrap.push("short line\nanother short line\nand a third");
        assert_eq!(printed, "short line\nanother short line\nand a third");
    }

    #[test]
    fn a_word_longer_than_a_line_is_broken_where_it_stands() {
        let mut wrap = WordWrap::with_width(20);
        let word = "x".repeat(50);
        let lines = screen(&wrap.push(&word));
        assert!(lines.iter().all(|l| l.chars().count() <= 15), "{lines:?}");
        assert_eq!(lines.concat(), word);
    }

    #[test]
    fn off_when_disabled_or_too_narrow() {
        let text = "word ".repeat(40);
        assert_eq!(WordWrap::with_width(0).push(&text), text);
        assert_eq!(WordWrap::with_width(9).push(&text), text);
    }
}
