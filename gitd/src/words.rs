//! A shell-like word splitter for SSH command lines.
//!
//! OpenSSH sends the remote command as one string: `ssh host "config:set shop 'MSG=hi
//! there'"` arrives as `config:set shop 'MSG=hi there'`. This splits such a line into
//! words the way a POSIX shell would tokenize simple words, honouring single quotes,
//! double quotes and backslashes, and does nothing else: no variables, globs,
//! redirections, pipes or command substitution. Nothing here ever runs a shell.

use std::ops::Range;

/// One word of a command line, unquoted, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The word with its quotes and escapes removed.
    pub text: String,
    /// The byte range of the word in the line, quotes included.
    pub span: Range<usize>,
}

/// Why a line cannot be split into words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WordsError {
    /// A `'` was opened and never closed.
    #[error("unterminated single quote")]
    UnterminatedSingleQuote,
    /// A `"` was opened and never closed.
    #[error("unterminated double quote")]
    UnterminatedDoubleQuote,
    /// The line ends with a lone backslash.
    #[error("the command ends with a lone backslash")]
    TrailingBackslash,
}

/// Splits `line` into words. Blanks (space, tab, newline) separate words outside quotes;
/// `'…'` keeps everything literally; `"…"` keeps everything but lets a backslash escape
/// `"`, `\`, `$` and `` ` `` (and join lines); a backslash outside quotes escapes the next
/// character (a backslash-newline joins lines). `''` and `""` make an empty word.
pub fn split_words(line: &str) -> Result<Vec<Word>, WordsError> {
    let mut words = Vec::new();
    let mut chars = line.char_indices().peekable();
    // The word being built: its text and where it started.
    let mut current: Option<(String, usize)> = None;
    while let Some((i, c)) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if let Some((text, start)) = current.take() {
                    words.push(Word {
                        text,
                        span: start..i,
                    });
                }
            }
            '\'' => {
                let word = &mut current.get_or_insert_with(|| (String::new(), i)).0;
                loop {
                    match chars.next() {
                        Some((_, '\'')) => break,
                        Some((_, c)) => word.push(c),
                        None => return Err(WordsError::UnterminatedSingleQuote),
                    }
                }
            }
            '"' => {
                let word = &mut current.get_or_insert_with(|| (String::new(), i)).0;
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.peek() {
                            Some(&(_, e @ ('"' | '\\' | '$' | '`'))) => {
                                word.push(e);
                                chars.next();
                            }
                            Some(&(_, '\n')) => {
                                chars.next();
                            }
                            Some(_) => word.push('\\'),
                            None => return Err(WordsError::UnterminatedDoubleQuote),
                        },
                        Some((_, c)) => word.push(c),
                        None => return Err(WordsError::UnterminatedDoubleQuote),
                    }
                }
            }
            '\\' => match chars.next() {
                // A line continuation: no word, no character.
                Some((_, '\n')) => {}
                Some((_, e)) => current.get_or_insert_with(|| (String::new(), i)).0.push(e),
                None => return Err(WordsError::TrailingBackslash),
            },
            c => current.get_or_insert_with(|| (String::new(), i)).0.push(c),
        }
    }
    if let Some((text, start)) = current {
        words.push(Word {
            text,
            span: start..line.len(),
        });
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(line: &str) -> Vec<String> {
        split_words(line)
            .unwrap()
            .into_iter()
            .map(|w| w.text)
            .collect()
    }

    #[test]
    fn splits_on_blanks() {
        assert_eq!(texts("apps"), ["apps"]);
        assert_eq!(
            texts("  config:set  shop\tA=1 \n B=2  "),
            ["config:set", "shop", "A=1", "B=2"]
        );
        assert!(texts("").is_empty());
        assert!(texts(" \t\n ").is_empty());
    }

    #[test]
    fn honours_quotes() {
        assert_eq!(
            texts("config:set shop 'MSG=hello world'"),
            ["config:set", "shop", "MSG=hello world"]
        );
        assert_eq!(texts(r#"a "b c" d"#), ["a", "b c", "d"]);
        // Quotes join with what is next to them, as in a shell.
        assert_eq!(texts(r#"A=x'a b'"c d"e"#), ["A=xa bc de"]);
        // Single quotes keep backslashes and double quotes literally.
        assert_eq!(texts(r#"'a\b"c'"#), [r#"a\b"c"#]);
        // Double quotes keep single quotes and $ literally (nothing is expanded).
        assert_eq!(texts(r#""it's $HOME""#), ["it's $HOME"]);
        assert_eq!(texts("$HOME `id` *"), ["$HOME", "`id`", "*"]);
    }

    #[test]
    fn honours_backslashes() {
        assert_eq!(texts(r"a\ b c"), ["a b", "c"]);
        assert_eq!(texts(r"\'quoted\'"), ["'quoted'"]);
        assert_eq!(texts(r#""say \"hi\" \\ \$x \n""#), [r#"say "hi" \ $x \n"#]);
        assert_eq!(texts("one\\\ntwo"), ["onetwo"]);
        assert_eq!(texts("\"one\\\ntwo\""), ["onetwo"]);
    }

    #[test]
    fn empty_quotes_make_empty_words() {
        assert_eq!(texts("a '' \"\" b"), ["a", "", "", "b"]);
        assert_eq!(texts("''"), [""]);
    }

    #[test]
    fn refuses_unterminated_quotes_and_escapes() {
        assert_eq!(
            split_words("a 'b c"),
            Err(WordsError::UnterminatedSingleQuote)
        );
        assert_eq!(
            split_words("a \"b c"),
            Err(WordsError::UnterminatedDoubleQuote)
        );
        assert_eq!(
            split_words("a \"b\\"),
            Err(WordsError::UnterminatedDoubleQuote)
        );
        assert_eq!(split_words("a b\\"), Err(WordsError::TrailingBackslash));
        assert_eq!(
            WordsError::UnterminatedSingleQuote.to_string(),
            "unterminated single quote"
        );
    }

    #[test]
    fn records_spans_with_quotes() {
        let line = "run shop -- sh -c 'exit 3'";
        let words = split_words(line).unwrap();
        assert_eq!(words.len(), 6);
        assert_eq!(&line[words[3].span.clone()], "sh");
        assert_eq!(&line[words[5].span.clone()], "'exit 3'");
        assert_eq!(&line[words[3].span.start..], "sh -c 'exit 3'");
        let words = split_words("a\\ b  \"c\"d").unwrap();
        assert_eq!(words[0].span, 0..4);
        assert_eq!(words[1].span, 6..10);
        // Non-ASCII text keeps byte offsets.
        let line = "é 'ü x'";
        let words = split_words(line).unwrap();
        assert_eq!(&line[words[1].span.clone()], "'ü x'");
        assert_eq!(words[1].text, "ü x");
    }
}
