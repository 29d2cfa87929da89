//! The Procfile: the standard `name: command` lines, or Empire's extended YAML form.
//!
//! # Standard form
//!
//! Parsed by hand (nom) so errors point at a line and column. The grammar, one line at a
//! time:
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
//!
//! # Extended form
//!
//! A YAML mapping of process types whose values are mappings (Remind's Empire's format,
//! plus `healthcheck` and `size`):
//!
//! ```yaml
//! web:
//!   command: ./bin/web          # a string, or a list of words run without a shell
//!   healthcheck: /health        # HTTP path probed before the process takes traffic
//!   size: 2X                    # the default size: 1X, 2X, PX or <cpu shares>:<memory>
//!   ports:                      # load-balancer ports (the ecs scheduler)
//!     - "80:8080"               #   listener:container, http
//!     - "443:8080/https"        #   with a protocol: http, https or tcp
//!     - "5678": {protocol: tcp} #   Empire's mapping form
//!   environment:                # over the app's config, for this process type only
//!     LOG_LEVEL: debug
//! clock:
//!   command: ./bin/tick
//!   cron: "*/10 * * * *"        # runs on a schedule, never as a service
//! console:
//!   command: ./bin/console
//!   noservice: true             # no service; only `run`
//! worker: ./bin/worker          # a plain string is just the command
//! ```
//!
//! Which form a Procfile is in: when it parses in the standard form it is a standard
//! Procfile (so `web: ./server`, also a YAML mapping of strings, keeps its meaning
//! exactly, `#` and all), unless one of its commands starts with `{` and YAML reads
//! that entry as a mapping of extended keys (`web: {command: ./server, cron: …}`). A
//! Procfile that does not parse in the standard form is read as YAML: a mapping with a
//! mapping among its values is the extended form, and its errors name the process type
//! and key (`web.cron: …`) with the line and column; anything else reports the
//! standard form's error.
//!
//! Unknown keys are refused. `cron` takes a [`Schedule`](crate::schedule::Schedule)
//! (five-field cron, AWS's six fields or `cron(…)`, `rate(…)`; always UTC); `cron` and
//! `noservice` exclude each other, and `ports` and `healthcheck` only apply to a
//! service; the `release` process (run once before each deploy with the app's config)
//! takes only `command`. A `command` list is joined into one shell command, each word
//! quoted, so it runs exactly those words. Port defaults: `"80"` is `80:80`; the
//! protocol is `https` for listener 443 and `http` otherwise.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use nom::bytes::complete::{take_till, take_while};
use nom::character::complete::{char, space0};
use nom::combinator::{eof, opt};
use nom::sequence::terminated;
use nom::{IResult, Parser};

use crate::formation::ProcessSize;
use crate::release::ProcessTypes;
use crate::scheduler::PortMapping;

mod extended;

/// A parsed Procfile: process types in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Procfile {
    /// `(name, command)` pairs in the order they appear.
    pub processes: Vec<(String, String)>,
    /// Whether it is in the extended (YAML) form.
    pub extended: bool,
    /// The extended form's settings of each process type beyond its command (none in
    /// the standard form).
    pub settings: BTreeMap<String, ProcessSettings>,
}

impl Procfile {
    /// The process types as a release records them (name → command).
    pub fn process_types(&self) -> ProcessTypes {
        self.processes.iter().cloned().collect()
    }

    /// The settings of a process type (the defaults when it has none).
    pub fn settings_of(&self, process: &str) -> ProcessSettings {
        self.settings.get(process).cloned().unwrap_or_default()
    }
}

/// What the extended form says about a process type besides its command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessSettings {
    /// `cron`: the schedule as written (it parses as a [`crate::schedule::Schedule`]).
    pub cron: Option<String>,
    /// `noservice`: only `run`, never a service.
    pub noservice: bool,
    /// `ports`: load-balancer ports.
    pub ports: Vec<PortMapping>,
    /// `environment`: variables over the app's config for this process type.
    pub environment: BTreeMap<String, String>,
    /// `healthcheck`: the HTTP path probed before the process takes traffic.
    pub healthcheck: Option<String>,
    /// `size`: the size it runs at unless the formation says otherwise.
    pub size: Option<ProcessSize>,
}

/// A Procfile that does not parse: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcfileError {
    /// 1-based line number (0 when the error has no position).
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
        if self.line == 0 {
            return write!(f, "Procfile: {}", self.message);
        }
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

/// Parses a Procfile in either form (see the [module documentation](self) for how the
/// form is told).
///
/// A UTF-8 byte order mark at the start is ignored; lines may end with `\n` or `\r\n`
/// and the last one needs no terminator. A Procfile with no process line parses to an
/// empty [`Procfile`]; whether that is acceptable is the caller's decision.
pub fn parse(input: &str) -> Result<Procfile, ProcfileError> {
    let standard = parse_standard(input);
    let flow_entry = standard
        .as_ref()
        .is_ok_and(|p| p.processes.iter().any(|(_, c)| c.starts_with('{')));
    if standard.is_ok() && !flow_entry {
        return standard;
    }
    match extended::parse(input, flow_entry) {
        extended::Outcome::Extended(result) => result,
        extended::Outcome::NotExtended => standard,
        extended::Outcome::BrokenYaml(yaml_error) => match standard {
            // `web:` with nothing after it, then indented lines: meant as YAML.
            Err(e) if e.message.ends_with("has an empty command") => Err(yaml_error),
            other => other,
        },
    }
}

/// Parses the standard `name: command` form.
fn parse_standard(input: &str) -> Result<Procfile, ProcfileError> {
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
    Ok(Procfile {
        processes,
        ..Procfile::default()
    })
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

    // ----- the extended form -----

    fn settings(procfile: &Procfile, name: &str) -> ProcessSettings {
        procfile
            .settings
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no settings for {name}: {procfile:?}"))
    }

    const EXTENDED: &str = "\
# Empire's extended form
web:
  command: ./bin/web --port $PORT
  healthcheck: /health
  size: 2X
  ports:
    - \"80:8080\"
    - \"443:8080/https\"
    - 9000
    - \"5678\":
        protocol: tcp
  environment:
    LOG_LEVEL: debug
    WORKERS: 4
    VERBOSE: true
clock:
  command: [\"./bin/tick\", \"--say\", \"it's time\"]
  cron: \"*/10 * * * *\"
console:
  command: ./bin/console
  noservice: true
worker: bundle exec sidekiq
release:
  command: ./migrate
";

    #[test]
    fn parses_the_extended_form_in_file_order() {
        let p = parse(EXTENDED).unwrap();
        assert!(p.extended);
        assert_eq!(
            p.processes,
            pairs(&[
                ("web", "./bin/web --port $PORT"),
                ("clock", "./bin/tick --say 'it'\\''s time'"),
                ("console", "./bin/console"),
                ("worker", "bundle exec sidekiq"),
                ("release", "./migrate"),
            ])
        );
        let web = settings(&p, "web");
        assert_eq!(web.healthcheck.as_deref(), Some("/health"));
        assert_eq!(web.size, Some(ProcessSize::X2));
        let port = |listener, container, protocol: &str| PortMapping {
            listener,
            container,
            protocol: protocol.to_string(),
        };
        assert_eq!(
            web.ports,
            [
                port(80, 8080, "http"),
                port(443, 8080, "https"),
                port(9000, 9000, "http"),
                port(5678, 5678, "tcp"),
            ]
        );
        assert_eq!(
            web.environment,
            BTreeMap::from([
                ("LOG_LEVEL".to_string(), "debug".to_string()),
                ("VERBOSE".to_string(), "true".to_string()),
                ("WORKERS".to_string(), "4".to_string()),
            ])
        );
        assert!(web.cron.is_none() && !web.noservice);

        let clock = settings(&p, "clock");
        assert_eq!(clock.cron.as_deref(), Some("*/10 * * * *"));
        assert!(settings(&p, "console").noservice);
        assert_eq!(settings(&p, "worker"), ProcessSettings::default());
        assert_eq!(settings(&p, "release"), ProcessSettings::default());
        // The release records name → command as before.
        assert_eq!(
            p.process_types().get("clock").map(String::as_str),
            Some("./bin/tick --say 'it'\\''s time'")
        );
    }

    #[test]
    fn empires_own_example_parses() {
        let p = parse(
            "web:\n  command: ./bin/web\nscheduled-job:\n  command: ./bin/scheduled-job\n  cron: '0/2 * * * ? *'\n",
        )
        .unwrap();
        assert_eq!(
            settings(&p, "scheduled-job").cron.as_deref(),
            Some("0/2 * * * ? *")
        );
    }

    #[test]
    fn a_mapping_of_strings_stays_the_standard_form() {
        let p = parse("web: ./server # not a comment\nworker: ./work\n").unwrap();
        assert!(!p.extended);
        assert!(p.settings.is_empty());
        assert_eq!(
            p.processes,
            pairs(&[("web", "./server # not a comment"), ("worker", "./work")])
        );
        // A shell group is a command, not a YAML flow mapping.
        let p = parse("web: { ./a; ./b; }\n").unwrap();
        assert!(!p.extended);
        assert_eq!(p.processes, pairs(&[("web", "{ ./a; ./b; }")]));
        // …but a flow mapping of extended keys is the extended form.
        let p = parse("web: {command: ./server, healthcheck: /up}\n").unwrap();
        assert!(p.extended);
        assert_eq!(settings(&p, "web").healthcheck.as_deref(), Some("/up"));
        // CRLF and a BOM work in the extended form too.
        let p = parse("\u{feff}web:\r\n  command: ./server\r\n  noservice: true\r\n").unwrap();
        assert!(settings(&p, "web").noservice);
    }

    fn xerr(input: &str) -> ProcfileError {
        let e = err(input);
        assert!(
            !e.message.contains(" at line "),
            "the position is given once: {e:?}"
        );
        e
    }

    #[test]
    fn extended_errors_name_the_process_type_and_key_with_a_position() {
        let e = xerr("web:\n  command: ./web\n  cron: \"60 * * * *\"\n");
        assert_eq!((e.line, e.column), (3, 9));
        assert_eq!(
            e.message,
            "web.cron: \"60 * * * *\" is not a schedule: minute field: 60 is out of range 0-59"
        );
        assert_eq!(e.line_text, "  cron: \"60 * * * *\"");
        assert_eq!(
            e.to_string(),
            concat!(
                "Procfile line 3, column 9: web.cron: \"60 * * * *\" is not a schedule: ",
                "minute field: 60 is out of range 0-59\n    cron: \"60 * * * *\"\n          ^"
            )
        );

        let e = xerr("web:\n  command: ./web\nclock:\n  command: ./tick\n  crom: \"* * * * *\"\n");
        assert_eq!((e.line, e.column), (5, 3));
        assert!(
            e.message
                .starts_with("clock: unknown field `crom`, expected one of `command`, `cron`"),
            "{}",
            e.message
        );

        let e = xerr("web:\n  healthcheck: /up\n");
        assert!(
            e.message.contains("web: missing field `command`"),
            "{}",
            e.message
        );

        let e = xerr("web:\n  command: ./web\n  size: 3X\n");
        assert_eq!((e.line, e.column), (3, 9));
        assert!(
            e.message.starts_with("web.size: \"3X\" is not a size"),
            "{}",
            e.message
        );

        let e = xerr("web:\n  command: ./web\n  healthcheck: health\n");
        assert!(
            e.message
                .starts_with("web.healthcheck: \"health\" is not an HTTP path"),
            "{}",
            e.message
        );

        let e = xerr("web:\n  command: ./web\n  ports:\n    - \"80:http\"\n");
        assert_eq!((e.line, e.column), (4, 7));
        assert!(
            e.message
                .starts_with("web.ports[0]: \"80:http\": \"http\" is not a port"),
            "{}",
            e.message
        );

        let e = xerr("web:\n  command: ./web\n  ports: [\"80/udp\"]\n");
        assert!(
            e.message
                .contains("protocol \"udp\" is not one of http, https, tcp"),
            "{}",
            e.message
        );

        let e = xerr("web:\n  command: ./web\n  environment:\n    1BAD: x\n");
        assert_eq!(e.line, 4);
        assert!(
            e.message
                .starts_with("web.environment: \"1BAD\" is not a variable name"),
            "{}",
            e.message
        );

        let e = xerr("web:\n  command: ./web\n  noservice: maybe\n");
        assert!(
            e.message.starts_with("web.noservice: invalid type"),
            "{}",
            e.message
        );

        let e = xerr("web:\n  command: ./web\n  cron: \"* * * * *\"\n  noservice: true\n");
        assert!(
            e.message
                .starts_with("web: `cron` and `noservice` exclude each other"),
            "{}",
            e.message
        );

        let e = xerr("clock:\n  command: ./tick\n  cron: \"* * * * *\"\n  ports: [\"80\"]\n");
        assert!(
            e.message
                .starts_with("clock: `ports` apply only to a service"),
            "{}",
            e.message
        );

        for key in ["noservice: true", "size: 2X", "environment: {A: b}"] {
            let e = xerr(&format!("release:\n  command: ./migrate\n  {key}\n"));
            assert_eq!(
                e.message,
                "release: the release process runs once before each deploy with the app's config; it takes only `command`"
            );
        }
        let e = xerr("release:\n  command: ./migrate\n  noservice: true\n");
        assert!(
            e.message
                .starts_with("release: the release process runs once"),
            "{}",
            e.message
        );

        let e = xerr("web:\n  command: \"  \"\n");
        assert!(
            e.message.starts_with("web.command: the command is empty"),
            "{}",
            e.message
        );

        let e = xerr("web:\n  command: ./web\nweb.2:\n  command: ./web\n");
        assert_eq!(e.line, 3);
        assert!(
            e.message.contains("\"web.2\" is not a process type name"),
            "{}",
            e.message
        );

        let e = xerr("web:\n  command: ./web\nworker:\n");
        assert!(
            e.message.starts_with("worker: invalid type: unit value"),
            "{}",
            e.message
        );
    }

    #[test]
    fn duplicate_process_types_are_refused_in_the_extended_form() {
        let e = err("web:\n  command: ./a\nweb:\n  command: ./b\n");
        assert_eq!(e.message, "process type \"web\" is defined twice");
        assert_eq!((e.line, e.column), (3, 1));
        // A standard Procfile keeps the standard error.
        let e = err("web: ./a\nweb: ./b\n");
        assert_eq!(
            e.message,
            "process type \"web\" is defined twice (first on line 1)"
        );
    }

    #[test]
    fn broken_yaml_meant_as_the_extended_form_reports_the_yaml_error() {
        // A tab in the indentation: YAML refuses it; `web:` alone would otherwise be
        // reported as an empty standard command.
        let e = err("web:\n  command: ./web\n\thealthcheck: /up\n");
        assert!(
            e.message
                .starts_with("not a valid extended (YAML) Procfile:"),
            "{e:?}"
        );
        assert_eq!(e.line, 3);
        // Broken standard Procfiles keep their own error.
        let e = err("web: a\nworker bundle exec sidekiq\n");
        assert_eq!(e.message, "expected ':' after the process name");
    }
}
