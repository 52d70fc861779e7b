//! Turning generated token bytes into text chunks that are safe to send: never a
//! broken UTF-8 character, never part of a stop string.

/// What one push produced.
#[derive(Debug, Default, PartialEq)]
pub struct Chunk {
    /// Text that can be sent now.
    pub text: String,
    /// A stop string was found; `text` ends right before it.
    pub stopped: bool,
}

pub struct TextStream {
    pending: Vec<u8>,
    held: String,
    stops: Vec<String>,
    /// Bytes of text decoded so far (sent, held, or cut by a stop string).
    decoded: usize,
    /// Bytes of text sent so far.
    emitted: usize,
}

impl TextStream {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            pending: Vec::new(),
            held: String::new(),
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            decoded: 0,
            emitted: 0,
        }
    }

    /// Bytes of text decoded so far, sent or not.
    pub fn decoded_len(&self) -> usize {
        self.decoded
    }

    /// Bytes of text sent so far.
    pub fn emitted_len(&self) -> usize {
        self.emitted
    }

    /// Whether the last bytes pushed end inside a UTF-8 character.
    pub fn char_unfinished(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Add a token's bytes; returns the text that became safe to emit.
    pub fn push(&mut self, bytes: &[u8]) -> Chunk {
        self.pending.extend_from_slice(bytes);
        let decoded = take_valid_utf8(&mut self.pending);
        self.decoded += decoded.len();
        self.held.push_str(&decoded);
        if let Some(at) = self.first_stop() {
            let text = self.held[..at].to_string();
            self.emitted += text.len();
            self.held.clear();
            self.pending.clear();
            return Chunk {
                text,
                stopped: true,
            };
        }
        let keep = self.partial_stop_suffix();
        let cut = self.held.len() - keep;
        let text = self.held[..cut].to_string();
        self.held.drain(..cut);
        self.emitted += text.len();
        Chunk {
            text,
            stopped: false,
        }
    }

    /// End of generation: everything held back (an unfinished character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let mut text = std::mem::take(&mut self.held);
        if !self.pending.is_empty() {
            let tail = String::from_utf8_lossy(&self.pending);
            self.decoded += tail.len();
            text.push_str(&tail);
            self.pending.clear();
        }
        self.emitted += text.len();
        text
    }

    fn first_stop(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
    }

    /// Length of the longest tail of `held` that could still grow into a stop string.
    fn partial_stop_suffix(&self) -> usize {
        let mut best = 0;
        for stop in &self.stops {
            for (i, _) in stop.char_indices().skip(1) {
                let prefix = &stop[..i];
                if prefix.len() > best && self.held.ends_with(prefix) {
                    best = prefix.len();
                }
            }
        }
        best
    }
}

/// Remove and return the longest decodable prefix of `buf`; invalid bytes become U+FFFD,
/// an unfinished character at the end stays in `buf`.
fn take_valid_utf8(buf: &mut Vec<u8>) -> String {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(buf) {
            Ok(s) => {
                out.push_str(s);
                buf.clear();
                return out;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                out.push_str(std::str::from_utf8(&buf[..valid]).unwrap_or_default());
                match e.error_len() {
                    None => {
                        buf.drain(..valid);
                        return out;
                    }
                    Some(n) => {
                        out.push('\u{FFFD}');
                        buf.drain(..valid + n);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_split_utf8() {
        let mut s = TextStream::new(vec![]);
        let emoji = "🎉".as_bytes();
        assert_eq!(s.push(&emoji[..2]).text, "");
        assert_eq!(s.push(&emoji[2..]).text, "🎉");
    }

    #[test]
    fn never_emits_part_of_a_stop_string() {
        let mut s = TextStream::new(vec!["<end>".into()]);
        assert_eq!(s.push(b"hello <e").text, "hello ");
        assert_eq!(s.push(b"n").text, "");
        let c = s.push(b"d> more");
        assert_eq!(c.text, "");
        assert!(c.stopped);
    }

    #[test]
    fn releases_a_false_alarm() {
        let mut s = TextStream::new(vec!["<end>".into()]);
        assert_eq!(s.push(b"a <e").text, "a ");
        assert_eq!(s.push(b"x").text, "<ex");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn stop_inside_one_push() {
        let mut s = TextStream::new(vec!["\n\n".into()]);
        let c = s.push(b"line one\n\nline two");
        assert_eq!(c.text, "line one");
        assert!(c.stopped);
    }

    #[test]
    fn finish_flushes_unfinished_character() {
        let mut s = TextStream::new(vec![]);
        s.push(&"é".as_bytes()[..1]);
        assert_eq!(s.finish(), "\u{FFFD}");
    }

    #[test]
    fn invalid_bytes_become_replacement() {
        let mut s = TextStream::new(vec![]);
        assert_eq!(s.push(&[b'a', 0xFF, b'b']).text, "a\u{FFFD}b");
    }
}
