//! Splits Docker's build output into lines as it arrives.

/// Buffers the `stream` fields of Docker's build messages, which may hold part of a line
/// or several lines, and hands out complete lines.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: String,
}

impl LineSplitter {
    /// A splitter with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a chunk of output and returns the lines it completed, without their line
    /// endings; blank lines are dropped.
    pub fn push(&mut self, chunk: &str) -> Vec<String> {
        let mut lines = Vec::new();
        let mut rest = chunk;
        while let Some(end) = rest.find('\n') {
            self.partial.push_str(&rest[..end]);
            rest = &rest[end + 1..];
            let line = std::mem::take(&mut self.partial);
            if let Some(line) = tidy(line) {
                lines.push(line);
            }
        }
        self.partial.push_str(rest);
        lines
    }

    /// Returns what is left of an unfinished last line, if anything.
    pub fn finish(&mut self) -> Option<String> {
        tidy(std::mem::take(&mut self.partial))
    }
}

/// Drops a trailing `\r` and blank lines.
fn tidy(mut line: String) -> Option<String> {
    if line.ends_with('\r') {
        line.pop();
    }
    if line.trim().is_empty() {
        None
    } else {
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_lines_pass_through() {
        let mut s = LineSplitter::new();
        assert_eq!(
            s.push("Step 1/2 : FROM empire/busybox\n"),
            vec!["Step 1/2 : FROM empire/busybox"]
        );
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn partial_lines_wait_for_their_end() {
        let mut s = LineSplitter::new();
        assert!(s.push("hel").is_empty());
        assert!(s.push("lo wor").is_empty());
        assert_eq!(s.push("ld\nnext"), vec!["hello world"]);
        assert_eq!(s.push("\n"), vec!["next"]);
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn several_lines_in_one_chunk() {
        let mut s = LineSplitter::new();
        assert_eq!(
            s.push(" ---> Running in 0123abcd\nfirst\nsecond\nthi"),
            vec![" ---> Running in 0123abcd", "first", "second"]
        );
        assert_eq!(s.finish(), Some("thi".to_string()));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn blank_lines_and_carriage_returns_are_dropped() {
        let mut s = LineSplitter::new();
        assert_eq!(s.push("\n\na\r\n   \n\r\nb\n"), vec!["a", "b"]);
        assert!(s.push("  ").is_empty());
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn leading_whitespace_is_kept() {
        let mut s = LineSplitter::new();
        assert_eq!(s.push(" ---> 4a5b6c7d8e9f\n"), vec![" ---> 4a5b6c7d8e9f"]);
    }

    #[test]
    fn multibyte_characters_split_across_chunks() {
        let mut s = LineSplitter::new();
        assert!(s.push("héllo ").is_empty());
        assert_eq!(s.push("wörld ✓\n"), vec!["héllo wörld ✓"]);
    }
}
