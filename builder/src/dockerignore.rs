//! `.dockerignore` parsing and matching, the way the Docker CLI filters a build context.
//!
//! The rules follow `moby/patternmatcher` and the CLI's `dockerignore.ReadAll`:
//!
//! - one pattern a line; a line starting with `#` is a comment; surrounding whitespace is
//!   trimmed and blank lines are skipped; a UTF-8 byte order mark on the first line is
//!   dropped;
//! - `!pattern` is an exception that re-includes what earlier patterns excluded; the last
//!   pattern that matches a path decides;
//! - patterns are cleaned like Go's `filepath.Clean` and anchored at the context root (a
//!   leading `/` is stripped);
//! - the syntax is Go's `filepath.Match` (`*` and `?` never match `/`, `[...]` classes with
//!   `^` negation and ranges, `\` escapes) plus `**`, which matches any number of
//!   directories (`**/` may match nothing, a trailing `**` matches everything);
//! - a pattern that matches a directory also matches everything below it.
//!
//! [`DockerIgnore::walk_decision`] reproduces how the CLI walks the context: an excluded
//! directory is skipped as a whole unless an exception pattern names a path inside it.

/// A `.dockerignore` file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// A line is not a valid pattern (an unclosed `[`, a trailing `\`, a bad range).
    #[error("line {line}: syntax error in pattern {pattern:?}")]
    Syntax {
        /// The 1-based line number in `.dockerignore`.
        line: usize,
        /// The pattern as written.
        pattern: String,
    },
    /// A line is a lone `!`.
    #[error("line {line}: illegal exclusion pattern \"!\"")]
    EmptyExclusion {
        /// The 1-based line number in `.dockerignore`.
        line: usize,
    },
}

/// What to do with a path met while walking the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send the entry (and, for a directory, walk into it).
    Include,
    /// A file: leave it out.
    Exclude,
    /// An excluded directory that an exception pattern may reach into: leave the directory
    /// entry out but walk into it, deciding for each child.
    Descend,
    /// An excluded directory nothing can re-include: leave it and everything below out.
    Prune,
}

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// One exact character.
    Literal(char),
    /// `?`: one character other than `/`.
    AnyChar,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**` (or `**/`) followed by more pattern: nothing, or anything ending in `/`.
    AnyDirs,
    /// A trailing `**`: anything at all.
    AnyAll,
    /// `[...]`: one character in (or, negated, not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// One compiled `.dockerignore` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// The cleaned pattern text, without its `!`.
    cleaned: String,
    /// Whether the line started with `!`.
    exclusion: bool,
    tokens: Vec<Token>,
}

impl Pattern {
    fn matches(&self, path: &[char]) -> bool {
        match_tokens(&self.tokens, path)
    }
}

/// The patterns of a `.dockerignore` file, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

impl DockerIgnore {
    /// Parses the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let mut patterns = Vec::new();
        for (index, raw) in text.split('\n').enumerate() {
            let line = index + 1;
            // bufio.ScanLines drops a trailing `\r`.
            let mut raw = raw.strip_suffix('\r').unwrap_or(raw);
            if index == 0 {
                raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
            }
            // Comments are recognised before trimming, as Docker does.
            if raw.starts_with('#') {
                continue;
            }
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                continue;
            }
            let (exclusion, rest) = match trimmed.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, trimmed),
            };
            if rest.is_empty() {
                return Err(PatternError::EmptyExclusion { line });
            }
            let mut cleaned = clean(rest);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let tokens = compile(&cleaned).ok_or_else(|| PatternError::Syntax {
                line,
                pattern: raw.trim().to_string(),
            })?;
            patterns.push(Pattern {
                cleaned,
                exclusion,
                tokens,
            });
        }
        Ok(DockerIgnore { patterns })
    }

    /// Makes sure `path` is sent even if a pattern excludes it, the way the Docker CLI
    /// keeps `Dockerfile` and `.dockerignore` (it appends `!path` when `path` is excluded).
    pub fn always_include(&mut self, path: &str) {
        if self.excludes(path) {
            let cleaned = clean(path);
            let tokens = compile(&escape(&cleaned)).unwrap_or_default();
            self.patterns.push(Pattern {
                cleaned,
                exclusion: true,
                tokens,
            });
        }
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` (relative to the context root, `/`-separated) is left out: the last
    /// pattern matching the path or one of its parent directories decides.
    pub fn excludes(&self, path: &str) -> bool {
        let chars: Vec<char> = path.chars().collect();
        // The ends of each parent directory: `a/b/c` has parents `a` and `a/b`.
        let parents: Vec<usize> = chars
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == '/')
            .map(|(i, _)| i)
            .collect();
        let mut excluded = false;
        for pattern in &self.patterns {
            // Only a pattern that could change the outcome needs evaluating.
            if pattern.exclusion != excluded {
                continue;
            }
            let matched = pattern.matches(&chars)
                || parents.iter().any(|&end| pattern.matches(&chars[..end]));
            if matched {
                excluded = !pattern.exclusion;
            }
        }
        excluded
    }

    /// Decides what to do with an entry met while walking the context, as the Docker CLI
    /// does: an excluded directory is still walked when an exception pattern starts with
    /// its path (`!dir/keep` for `dir`), without sending the directory entry itself.
    pub fn walk_decision(&self, path: &str, is_dir: bool) -> Decision {
        if !self.excludes(path) {
            return Decision::Include;
        }
        if !is_dir {
            return Decision::Exclude;
        }
        let dir_slash = format!("{path}/");
        let reachable = self
            .patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| format!("{}/", p.cleaned).starts_with(&dir_slash));
        if reachable {
            Decision::Descend
        } else {
            Decision::Prune
        }
    }
}

/// Go's `filepath.Clean` for `/`-separated paths.
fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Escapes the pattern metacharacters of a literal path.
fn escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Compiles a cleaned pattern, or `None` if its syntax is invalid for `filepath.Match`.
fn compile(pattern: &str) -> Option<Vec<Token>> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                // `**/` is the same as `**`.
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                tokens.push(if i == chars.len() {
                    Token::AnyAll
                } else {
                    Token::AnyDirs
                });
            }
            '*' => {
                tokens.push(Token::Star);
                i += 1;
            }
            '?' => {
                tokens.push(Token::AnyChar);
                i += 1;
            }
            '\\' => {
                // A trailing backslash is a syntax error for filepath.Match.
                let escaped = *chars.get(i + 1)?;
                tokens.push(Token::Literal(escaped));
                i += 2;
            }
            '[' => {
                let (token, next) = compile_class(&chars, i + 1)?;
                tokens.push(token);
                i = next;
            }
            c => {
                tokens.push(Token::Literal(c));
                i += 1;
            }
        }
    }
    Some(tokens)
}

/// Compiles a character class whose body starts at `start` (just after `[`); returns the
/// token and the index after the closing `]`.
fn compile_class(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let mut i = start;
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        match chars.get(i) {
            None => return None,
            Some(']') if !ranges.is_empty() => {
                return Some((Token::Class { negated, ranges }, i + 1));
            }
            _ => {}
        }
        let (low, next) = class_char(chars, i)?;
        i = next;
        let mut high = low;
        if chars.get(i) == Some(&'-') {
            let (h, next) = class_char(chars, i + 1)?;
            if h < low {
                return None;
            }
            high = h;
            i = next;
        }
        ranges.push((low, high));
    }
}

/// One possibly escaped character inside a class; `-` and `]` must be escaped there.
fn class_char(chars: &[char], i: usize) -> Option<(char, usize)> {
    match chars.get(i)? {
        '-' | ']' => None,
        '\\' => Some((*chars.get(i + 1)?, i + 2)),
        c => Some((*c, i + 1)),
    }
}

/// Whether the tokens match the whole path, by simulating all positions at once.
fn match_tokens(tokens: &[Token], path: &[char]) -> bool {
    let n = path.len();
    let mut current = vec![false; n + 1];
    current[0] = true;
    for token in tokens {
        let mut next = vec![false; n + 1];
        for start in (0..=n).filter(|&i| current[i]) {
            match token {
                Token::Literal(c) => {
                    if path.get(start) == Some(c) {
                        next[start + 1] = true;
                    }
                }
                Token::AnyChar => {
                    if path.get(start).is_some_and(|c| *c != '/') {
                        next[start + 1] = true;
                    }
                }
                Token::Class { negated, ranges } => {
                    if let Some(c) = path.get(start) {
                        let inside = ranges.iter().any(|(lo, hi)| lo <= c && c <= hi);
                        if inside != *negated {
                            next[start + 1] = true;
                        }
                    }
                }
                Token::Star => {
                    next[start] = true;
                    let mut end = start;
                    while end < n && path[end] != '/' {
                        end += 1;
                        next[end] = true;
                    }
                }
                Token::AnyDirs => {
                    next[start] = true;
                    for end in start..n {
                        if path[end] == '/' {
                            next[end + 1] = true;
                        }
                    }
                }
                Token::AnyAll => {
                    for slot in next.iter_mut().skip(start) {
                        *slot = true;
                    }
                }
            }
        }
        if !next.iter().any(|b| *b) {
            return false;
        }
        current = next;
    }
    current[n]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(text: &str) -> DockerIgnore {
        DockerIgnore::parse(text).unwrap()
    }

    fn pattern_matches(pattern: &str, path: &str) -> bool {
        let tokens = compile(&clean(pattern)).expect("valid pattern");
        match_tokens(&tokens, &path.chars().collect::<Vec<_>>())
    }

    #[test]
    fn cleans_like_go() {
        assert_eq!(clean(""), ".");
        assert_eq!(clean("a/b/"), "a/b");
        assert_eq!(clean("a//b/./c"), "a/b/c");
        assert_eq!(clean("a/../b"), "b");
        assert_eq!(clean("a/../../b"), "../b");
        assert_eq!(clean("/../a"), "/a");
        assert_eq!(clean("/"), "/");
        assert_eq!(clean("./"), ".");
        assert_eq!(clean("../../x/.."), "../..");
    }

    #[test]
    fn star_and_question_stay_within_one_component() {
        assert!(pattern_matches("*.md", "README.md"));
        assert!(!pattern_matches("*.md", "docs/README.md"));
        assert!(pattern_matches("docs/*.md", "docs/a.md"));
        assert!(!pattern_matches("docs/*.md", "docs/sub/a.md"));
        assert!(pattern_matches("a?c", "abc"));
        assert!(!pattern_matches("a?c", "a/c"));
        assert!(!pattern_matches("a?c", "ac"));
        assert!(pattern_matches("*", "anything"));
        assert!(!pattern_matches("*", "a/b"));
        assert!(pattern_matches("a*", "a"));
    }

    #[test]
    fn double_star_spans_directories() {
        assert!(pattern_matches("**/*.go", "main.go"));
        assert!(pattern_matches("**/*.go", "a/b/main.go"));
        assert!(!pattern_matches("**/*.go", "a/b/main.goo"));
        assert!(pattern_matches("a/**/b", "a/b"));
        assert!(pattern_matches("a/**/b", "a/x/y/b"));
        assert!(!pattern_matches("a/**/b", "a/xb"));
        assert!(pattern_matches("**", "x/y/z"));
        assert!(pattern_matches("dir/**", "dir/x/y"));
        assert!(pattern_matches("dir/**", "dir/"));
        assert!(!pattern_matches("dir/**", "other/x"));
        assert!(pattern_matches("**foo", "a/foo"));
        assert!(pattern_matches("**foo", "foo"));
        // As in Docker's regexp translation, `**foo` is `(.*/)?foo`, not a suffix match.
        assert!(!pattern_matches("**foo", "xfoo"));
    }

    #[test]
    fn classes_and_escapes() {
        assert!(pattern_matches("[abc].txt", "b.txt"));
        assert!(!pattern_matches("[abc].txt", "d.txt"));
        assert!(pattern_matches("[^abc].txt", "d.txt"));
        assert!(!pattern_matches("[^abc].txt", "a.txt"));
        assert!(pattern_matches("file[0-9]", "file7"));
        assert!(!pattern_matches("file[0-9]", "filex"));
        assert!(pattern_matches("[\\]]", "]"));
        assert!(pattern_matches("\\*", "*"));
        assert!(!pattern_matches("\\*", "x"));
        assert!(pattern_matches("a\\?", "a?"));
        assert!(!pattern_matches("a\\?", "ab"));
        // Regexp metacharacters are plain characters in patterns.
        assert!(pattern_matches("a.b+(c)|{d}$^", "a.b+(c)|{d}$^"));
        assert!(!pattern_matches("a.b", "axb"));
    }

    #[test]
    fn bad_syntax_is_an_error() {
        for bad in ["[abc", "abc\\", "[]", "[z-a]", "[a-]", "[-a]", "x/[^]"] {
            let err = DockerIgnore::parse(&format!("ok\n{bad}\n")).unwrap_err();
            assert_eq!(
                err,
                PatternError::Syntax {
                    line: 2,
                    pattern: bad.to_string()
                },
                "{bad}"
            );
        }
        let err = DockerIgnore::parse("a\n  !  \n").unwrap_err();
        assert_eq!(err, PatternError::EmptyExclusion { line: 2 });
        assert_eq!(err.to_string(), "line 2: illegal exclusion pattern \"!\"",);
    }

    #[test]
    fn parses_comments_blanks_whitespace_and_anchors() {
        let ig = ignore(
            "\u{feff}# comment\n\n   \n  /secret.txt  \r\n./build/\n!  /build/keep\n #not-a-comment\n",
        );
        let cleaned: Vec<(&str, bool)> = ig
            .patterns
            .iter()
            .map(|p| (p.cleaned.as_str(), p.exclusion))
            .collect();
        assert_eq!(
            cleaned,
            vec![
                ("secret.txt", false),
                ("build", false),
                ("build/keep", true),
                ("#not-a-comment", false)
            ]
        );
        assert!(ig.excludes("secret.txt"));
        assert!(
            !ig.excludes("sub/secret.txt"),
            "patterns are anchored at the root"
        );
        assert!(ig.excludes("#not-a-comment"));
        assert!(ignore("").is_empty());
        assert!(ignore("# only a comment\n").is_empty());
    }

    #[test]
    fn a_matching_directory_excludes_its_contents() {
        let ig = ignore("logs\nnode_modules/\n");
        assert!(ig.excludes("logs"));
        assert!(ig.excludes("logs/a.log"));
        assert!(ig.excludes("logs/deep/b.log"));
        assert!(ig.excludes("node_modules/x/y.js"));
        assert!(!ig.excludes("logsx"));
        assert!(!ig.excludes("src/logs"));
        let ig = ignore("**/target\n");
        assert!(ig.excludes("target/debug/x"));
        assert!(ig.excludes("crates/a/target/debug/x"));
        assert!(!ig.excludes("crates/a/targets"));
    }

    #[test]
    fn exceptions_reinclude_and_later_lines_win() {
        let ig = ignore("*.md\n!README.md\n");
        assert!(ig.excludes("CHANGES.md"));
        assert!(!ig.excludes("README.md"));

        let ig = ignore("!README.md\n*.md\n");
        assert!(ig.excludes("README.md"), "the later line wins");

        let ig = ignore("docs\n!docs/keep.md\n");
        assert!(ig.excludes("docs/a.md"));
        assert!(!ig.excludes("docs/keep.md"));

        let ig = ignore("*\n!src\nsrc/*.tmp\n");
        assert!(ig.excludes("anything"));
        assert!(!ig.excludes("src"));
        assert!(!ig.excludes("src/main.rs"));
        assert!(ig.excludes("src/x.tmp"));
    }

    #[test]
    fn walking_prunes_or_descends_excluded_directories() {
        let ig = ignore("docs\n!docs/keep.md\nlogs\n*.tmp\n");
        assert_eq!(ig.walk_decision("src", true), Decision::Include);
        assert_eq!(ig.walk_decision("src/a.rs", false), Decision::Include);
        assert_eq!(ig.walk_decision("logs", true), Decision::Prune);
        assert_eq!(ig.walk_decision("docs", true), Decision::Descend);
        assert_eq!(ig.walk_decision("docs/a.md", false), Decision::Exclude);
        assert_eq!(ig.walk_decision("docs/keep.md", false), Decision::Include);
        assert_eq!(ig.walk_decision("x.tmp", false), Decision::Exclude);
        // Without any exception an excluded directory is always pruned.
        let ig = ignore("docs\n");
        assert_eq!(ig.walk_decision("docs", true), Decision::Prune);
        // An exception with a wildcard does not reach into a pruned directory (as in Docker).
        let ig = ignore("docs\n!*/keep.md\n");
        assert_eq!(ig.walk_decision("docs", true), Decision::Prune);
        // A nested exception keeps every directory on the way.
        let ig = ignore("a\n!a/b/c\n");
        assert_eq!(ig.walk_decision("a", true), Decision::Descend);
        assert_eq!(ig.walk_decision("a/b", true), Decision::Descend);
        assert_eq!(ig.walk_decision("a/x", true), Decision::Prune);
        assert_eq!(ig.walk_decision("a/b/c", false), Decision::Include);
    }

    #[test]
    fn build_files_are_always_included() {
        let mut ig = ignore("*\n");
        assert!(ig.excludes("Dockerfile"));
        ig.always_include("Dockerfile");
        ig.always_include(".dockerignore");
        assert!(!ig.excludes("Dockerfile"));
        assert!(!ig.excludes(".dockerignore"));
        assert!(ig.excludes("other"));
        // Nothing is appended when the file is not excluded.
        let mut ig = ignore("*.md\n");
        ig.always_include("Dockerfile");
        assert_eq!(ig.patterns.len(), 1);
        // Metacharacters in the kept name are literal.
        let mut ig = ignore("*\n");
        ig.always_include("Docker[file]");
        assert!(!ig.excludes("Docker[file]"));
        assert!(ig.excludes("Dockerf"));
    }
}
