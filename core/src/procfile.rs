//! The Procfile parser (nom): `name: command` lines, comments, blank lines, CRLF.
//!
//! The grammar, one line at a time:
//!
//! ```text
//! procfile = [BOM] { line ( "\r\n" | "\n" ) } [ line ]
//! line     = blank | comment | process
//! blank    = { " " | "\t" }
//! comment  = { " " | "\t" } "#" { any }
//! process  = { " " | "\t" } name { " " | "\t" } ":" command
//! name     = ( "A".."Z" | "a".."z" | "0".."9" | "_" | "-" ) { … }
//! command  = any non-blank text; surrounding whitespace is trimmed
//! ```
//!
//! A `#` inside a command is part of the command (the shell sees it), not a comment.

use std::collections::HashMap;
use std::fmt;

use nom::bytes::complete::{take_till, take_while};
use nom::character::complete::{char, space0};
use nom::combinator::{eof, opt};
use nom::sequence::terminated;
use nom::{IResult, Parser};

use crate::release::ProcessTypes;

/// A parsed Procfile: process types in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Procfile {
    /// `(name, command)` pairs in the order they appear.
    pub processes: Vec<(String, String)>,
}

impl Procfile {
    /// The process types as a release records them (name → command).
    pub fn process_types(&self) -> ProcessTypes {
        self.processes.iter().cloned().collect()
    }
}

/// A Procfile that does not parse: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcfileError {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column number.
    pub column: usize,
    /// The offending line, as written.
    pub line_text: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ProcfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keep tabs in the padding so the caret lines up under the offending character.
        let before = self.column.saturating_sub(1);
        let mut pad: String = self
            .line_text
            .chars()
            .take(before)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let padded = pad.chars().count();
        pad.extend(std::iter::repeat_n(' ', before.saturating_sub(padded)));
        write!(
            f,
            "Procfile line {}, column {}: {}\n  {}\n  {}^",
            self.line, self.column, self.message, self.line_text, pad
        )
    }
}

impl std::error::Error for ProcfileError {}

type Res<'a, O> = IResult<&'a str, O, nom::error::Error<&'a str>>;

/// One physical line, without its terminator (`\n` or `\r\n`).
fn physical_line(input: &str) -> Res<'_, &str> {
    terminated(take_till(|c| c == '\n'), opt(char('\n')))
        .map(|line: &str| line.strip_suffix('\r').unwrap_or(line))
        .parse(input)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn blank(input: &str) -> Res<'_, ()> {
    (space0, eof).map(|_| ()).parse(input)
}

fn comment(input: &str) -> Res<'_, ()> {
    (space0, char('#')).map(|_| ()).parse(input)
}

/// A meaningful line of a Procfile.
enum Line<'a> {
    /// Blank or a comment.
    Nothing,
    /// `name: command`; `name_at` is the byte offset of the name in the line.
    Process {
        name: &'a str,
        name_at: usize,
        command: &'a str,
    },
}

/// What is wrong with one line, at which byte offset.
struct LineError {
    at: usize,
    message: String,
}

fn parse_line(line: &str) -> Result<Line<'_>, LineError> {
    if blank(line).is_ok() || comment(line).is_ok() {
        return Ok(Line::Nothing);
    }
    let offset = |rest: &str| line.len() - rest.len();
    let (after_indent, _) = space0::<_, nom::error::Error<&str>>(line).unwrap_or((line, ""));
    let (after_name, name) =
        take_while::<_, _, nom::error::Error<&str>>(is_name_char)(after_indent)
            .unwrap_or((after_indent, ""));
    let colon: Res<'_, _> = (space0, char(':')).parse(after_name);
    match colon {
        Ok((after_colon, _)) => {
            if name.is_empty() {
                return Err(LineError {
                    at: offset(after_indent),
                    message: "expected a process name before ':'".to_string(),
                });
            }
            let (command_start, _) =
                space0::<_, nom::error::Error<&str>>(after_colon).unwrap_or((after_colon, ""));
            let command = command_start.trim();
            if command.is_empty() {
                return Err(LineError {
                    at: offset(command_start),
                    message: format!("process type \"{name}\" has an empty command"),
                });
            }
            Ok(Line::Process {
                name,
                name_at: offset(after_indent),
                command,
            })
        }
        Err(_) => {
            // The name stops at `after_name`, and no ':' follows it. If the line has a
            // ':' further on (or there is no name at all), the character there is not
            // allowed in a name; otherwise the colon is missing.
            let at = offset(after_name);
            match after_name.chars().next() {
                Some(c) if name.is_empty() || after_name.contains(':') => Err(LineError {
                    at,
                    message: format!(
                        "invalid character {c:?} in the process name (use letters, digits, '_' and '-')"
                    ),
                }),
                _ => Err(LineError {
                    at,
                    message: "expected ':' after the process name".to_string(),
                }),
            }
        }
    }
}

/// Parses a Procfile.
///
/// A UTF-8 byte order mark at the start is ignored; lines may end with `\n` or `\r\n`
/// and the last one needs no terminator. A Procfile with no process line parses to an
/// empty [`Procfile`]; whether that is acceptable is the caller's decision.
pub fn parse(input: &str) -> Result<Procfile, ProcfileError> {
    let mut rest = input.strip_prefix('\u{feff}').unwrap_or(input);
    let mut processes = Vec::new();
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    let mut number = 0;
    while !rest.is_empty() {
        let (next, line) = physical_line(rest).map_err(|e| ProcfileError {
            line: number + 1,
            column: 1,
            line_text: String::new(),
            message: format!("unreadable line: {e}"),
        })?;
        rest = next;
        number += 1;
        let error = |at: usize, message: String| ProcfileError {
            line: number,
            column: line[..at].chars().count() + 1,
            line_text: line.to_string(),
            message,
        };
        match parse_line(line).map_err(|e| error(e.at, e.message))? {
            Line::Nothing => {}
            Line::Process {
                name,
                name_at,
                command,
            } => {
                if let Some(first) = first_seen.get(name) {
                    return Err(error(
                        name_at,
                        format!("process type \"{name}\" is defined twice (first on line {first})"),
                    ));
                }
                first_seen.insert(name, number);
                processes.push((name.to_string(), command.to_string()));
            }
        }
    }
    Ok(Procfile { processes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn procs(input: &str) -> Vec<(String, String)> {
        parse(input)
            .unwrap_or_else(|e| panic!("{input:?} should parse: {e}"))
            .processes
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, c)| (n.to_string(), c.to_string()))
            .collect()
    }

    fn err(input: &str) -> ProcfileError {
        match parse(input) {
            Ok(p) => panic!("{input:?} should not parse, got {p:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_standard_lines_in_order() {
        let input =
            "web: bundle exec puma -p $PORT\nworker: bundle exec sidekiq\nrelease: ./migrate\n";
        assert_eq!(
            procs(input),
            pairs(&[
                ("web", "bundle exec puma -p $PORT"),
                ("worker", "bundle exec sidekiq"),
                ("release", "./migrate"),
            ])
        );
    }

    #[test]
    fn spaces_around_the_colon_are_optional() {
        let input = "web:./server\nworker : ./work\nclock\t:\t./clock  \t\n  indented: ./x\n";
        assert_eq!(
            procs(input),
            pairs(&[
                ("web", "./server"),
                ("worker", "./work"),
                ("clock", "./clock"),
                ("indented", "./x"),
            ])
        );
    }

    #[test]
    fn names_take_letters_digits_underscores_and_dashes() {
        assert_eq!(
            procs("Web_2-x: run\n9: nine\n-: dash\n"),
            pairs(&[("Web_2-x", "run"), ("9", "nine"), ("-", "dash")])
        );
    }

    #[test]
    fn the_command_keeps_colons_hashes_and_inner_spaces() {
        assert_eq!(
            procs("web: rackup -o 0.0.0.0:$PORT  # not a comment\n"),
            pairs(&[("web", "rackup -o 0.0.0.0:$PORT  # not a comment")])
        );
    }

    #[test]
    fn skips_comments_and_blank_lines() {
        let input =
            "# the web process\n\n   \n\t# indented comment\nweb: ./server\n  #worker: ./off\n\n";
        assert_eq!(procs(input), pairs(&[("web", "./server")]));
    }

    #[test]
    fn handles_crlf_a_missing_final_newline_and_a_bom() {
        let input = "\u{feff}web: ./server\r\n# c\r\n\r\nworker: ./work --flag";
        assert_eq!(
            procs(input),
            pairs(&[("web", "./server"), ("worker", "./work --flag")])
        );
        assert_eq!(procs("web: ./server\r\n"), pairs(&[("web", "./server")]));
    }

    #[test]
    fn an_empty_procfile_has_no_processes() {
        assert_eq!(procs(""), vec![]);
        assert_eq!(procs("\u{feff}"), vec![]);
        assert_eq!(procs("# nothing yet\r\n\r\n"), vec![]);
    }

    #[test]
    fn process_types_map_names_to_commands() {
        let types = parse("web: a\nworker: b\n").unwrap().process_types();
        assert_eq!(types.get("web").map(String::as_str), Some("a"));
        assert_eq!(types.get("worker").map(String::as_str), Some("b"));
        assert_eq!(types.len(), 2);
    }

    #[test]
    fn reports_a_missing_colon_after_the_name() {
        let e = err("web: ok\nworker bundle exec sidekiq\n");
        assert_eq!((e.line, e.column), (2, 7));
        assert_eq!(e.message, "expected ':' after the process name");
        assert_eq!(e.line_text, "worker bundle exec sidekiq");

        let e = err("web");
        assert_eq!((e.line, e.column), (1, 4));
        assert_eq!(e.message, "expected ':' after the process name");

        let e = err("web=./server");
        assert_eq!((e.line, e.column), (1, 4));
        assert_eq!(e.message, "expected ':' after the process name");
    }

    #[test]
    fn reports_an_empty_name() {
        let e = err(": ./server\n");
        assert_eq!((e.line, e.column), (1, 1));
        assert_eq!(e.message, "expected a process name before ':'");

        let e = err("web: a\n   : ./server\n");
        assert_eq!((e.line, e.column), (2, 4));
    }

    #[test]
    fn points_at_an_invalid_character_in_the_name() {
        let e = err("web.1: ./server\n");
        assert_eq!((e.line, e.column), (1, 4));
        assert_eq!(
            e.message,
            "invalid character '.' in the process name (use letters, digits, '_' and '-')"
        );

        // Columns count characters, not bytes.
        let e = err("wébé: ./server\n");
        assert_eq!((e.line, e.column), (1, 2));
        assert!(
            e.message.starts_with("invalid character 'é'"),
            "{}",
            e.message
        );

        let e = err("web server: ./server\n");
        assert_eq!((e.line, e.column), (1, 4));
        assert!(
            e.message.starts_with("invalid character ' '"),
            "{}",
            e.message
        );

        let e = err("$web: x\n");
        assert_eq!((e.line, e.column), (1, 1));
        assert!(
            e.message.starts_with("invalid character '$'"),
            "{}",
            e.message
        );

        let e = err("!!!\n");
        assert_eq!((e.line, e.column), (1, 1));
        assert!(
            e.message.starts_with("invalid character '!'"),
            "{}",
            e.message
        );
    }

    #[test]
    fn reports_an_empty_command() {
        let e = err("web:\n");
        assert_eq!((e.line, e.column), (1, 5));
        assert_eq!(e.message, "process type \"web\" has an empty command");

        let e = err("web: ok\nworker:   \t \n");
        assert_eq!((e.line, e.column), (2, 13));
        assert_eq!(e.message, "process type \"worker\" has an empty command");
    }

    #[test]
    fn reports_a_duplicate_process_type() {
        let e = err("# procs\nweb: ./a\nworker: ./w\n  web: ./b\n");
        assert_eq!((e.line, e.column), (4, 3));
        assert_eq!(
            e.message,
            "process type \"web\" is defined twice (first on line 2)"
        );
        // Names are case-sensitive.
        assert_eq!(procs("web: a\nWeb: b\n").len(), 2);
    }

    #[test]
    fn errors_on_line_3_with_crlf_endings_have_exact_positions() {
        let e = err("web: ./a\r\n\r\nworker ./w\r\nclock: ./c\r\n");
        assert_eq!((e.line, e.column), (3, 7));
        assert_eq!(e.line_text, "worker ./w");
        assert_eq!(e.message, "expected ':' after the process name");

        let e = err("web: ./a\r\n# c\r\n  w@rker: ./w\r\n");
        assert_eq!((e.line, e.column), (3, 4));
        assert_eq!(e.line_text, "  w@rker: ./w");

        let e = err("\u{feff}web: ./a\r\n\r\nweb: ./b");
        assert_eq!((e.line, e.column), (3, 1));
        assert_eq!(
            e.message,
            "process type \"web\" is defined twice (first on line 1)"
        );

        let e = err("web: ./a\r\nx: y\r\nworker:\r\n");
        assert_eq!((e.line, e.column), (3, 8));
        assert_eq!(e.line_text, "worker:");
    }

    #[test]
    fn a_bom_does_not_shift_columns() {
        let e = err("\u{feff}we.b: x\n");
        assert_eq!((e.line, e.column), (1, 3));
        assert_eq!(e.line_text, "we.b: x");
    }

    #[test]
    fn display_shows_the_line_and_a_caret() {
        let e = err("web: a\r\nworker ./w\r\n");
        assert_eq!(
            e.to_string(),
            "Procfile line 2, column 7: expected ':' after the process name\n  worker ./w\n        ^"
        );
        let e = err("\tweb.x: a\n");
        assert_eq!(
            e.to_string(),
            "Procfile line 1, column 5: invalid character '.' in the process name (use letters, digits, '_' and '-')\n  \tweb.x: a\n  \t   ^"
        );
        let e = err("web:");
        assert!(e.to_string().ends_with("\n  web:\n      ^"), "{e}");
    }
}
