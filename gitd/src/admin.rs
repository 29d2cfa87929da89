//! SSH commands for developers who have only git and ssh:
//! `ssh -p 2222 git@HOST <command> [app] [args]`, with the CLI's command names.
//!
//! The command line is split into words by [`crate::words::split_words`] and parsed into
//! an [`AdminCommand`]; nothing is handed to a shell. Every command runs through
//! [`empire_core::service::Platform`], which checks that the authenticated user may do
//! it. Output is Heroku style: tables with aligned columns, `-----> ` steps, seven-space
//! detail, and ` !     ` errors on stderr with exit status 1. Long operations (config
//! changes, scaling, restarts, rollbacks) stream their progress while they run.
//!
//! OpenSSH joins its arguments with spaces before sending them, so an argument with a
//! space needs quotes that survive the local shell:
//! `ssh git@HOST "config:set shop 'MSG=hello world'"`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use empire_core::Error as CoreError;
use empire_core::app::AppName;
use empire_core::formation::ScaleRequest;
use empire_core::progress::{Progress, ProgressSink};
use empire_core::scheduler::{LogOptions, RunIo, RunOutcome};
use empire_core::service::{ConfigChanges, Platform};
use empire_core::user::User;
use russh::ChannelWriteHalf;
use russh::server::Msg;
use time::{OffsetDateTime, UtcOffset};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::server::parse_public_key;

#[path = "admin_webhooks.rs"]
pub mod webhooks;

#[path = "admin_builds.rs"]
pub mod builds;
use crate::words::{Word, WordsError, split_words};

/// The longest command line accepted (config values may be long, a certificate say).
const MAX_LINE: usize = 256 * 1024;
/// The longest public key `keys:add` reads from stdin.
const MAX_KEY: usize = 16 * 1024;
/// How long an attached `run` may take to notice that its client went away before it is
/// abandoned.
const RUN_GRACE: Duration = Duration::from_secs(5);
/// Extended-data stream number of stderr.
const STDERR: u32 = 1;
/// The prefix of error lines.
const ERROR: &str = " !     ";

/// The commands with their usage and what they do, in the order `help` lists them.
pub const COMMANDS: &[(&str, &str)] = &[
    ("apps", "list the apps you can access"),
    ("create <app>", "create an app"),
    (
        "destroy <app> --confirm <app>",
        "destroy an app: processes, releases, repository",
    ),
    (
        "info <app>",
        "show an app's release, processes, domains and collaborators",
    ),
    ("config <app>", "show the config vars"),
    (
        "config:set <app> KEY=VALUE...",
        "set config vars (a running app restarts as a new release)",
    ),
    (
        "config:unset <app> KEY...",
        "unset config vars (a running app restarts as a new release)",
    ),
    ("releases <app>", "list the releases, newest first"),
    (
        "releases:info <app> vN",
        "show a release with its build log",
    ),
    (
        "rollback <app> vN",
        "deploy vN's image and config again as a new release",
    ),
    ("ps <app>", "list the processes and the formation"),
    (
        "scale <app> TYPE=N[:SIZE]...",
        "scale process types: web=3 worker=2:2X",
    ),
    (
        "restart <app> [TYPE|TYPE.N]",
        "restart every process, one type or one instance",
    ),
    (
        "run <app> [--detach] [--] COMMAND...",
        "run a one-off process (ssh -t for a terminal)",
    ),
    (
        "logs <app> [--tail N] [--process TYPE] [-f]",
        "show the processes' output (-f follows it)",
    ),
    ("domains <app>", "list the custom domains"),
    ("domains:add <app> HOST", "add a custom domain"),
    ("domains:remove <app> HOST", "remove a custom domain"),
    ("access <app>", "list the collaborators"),
    ("access:add <app> USER", "give a user access to the app"),
    ("access:remove <app> USER", "take a user's access away"),
    (
        "webhooks <app>|--all",
        "list the outgoing webhooks (of the app, or every one you may see)",
    ),
    (
        "webhooks:add <app>|--all URL [--events E,…] [--format json|slack] [--secret S]",
        "post the app's events (or every app's) to a URL; prints the signing secret",
    ),
    ("webhooks:remove ID", "remove an outgoing webhook"),
    (
        "webhooks:deliveries ID",
        "show a webhook's deliveries and their attempts",
    ),
    (
        "apps:connect <app> --repo URL [--branch B] [--secret S]",
        "deploy pushes to a GitHub, GitLab or Gitea repository (prints the webhook)",
    ),
    (
        "apps:disconnect <app>",
        "stop deploying pushes to the connected repository",
    ),
    ("builds <app>", "list the builds webhooks started"),
    (
        "builds:logs <app> [ID] [-f]",
        "show a build's log (the newest; -f follows it)",
    ),
    ("keys", "list your SSH keys"),
    (
        "keys:add",
        "add an SSH key read from stdin: keys:add < key.pub",
    ),
    ("keys:remove FINGERPRINT", "remove one of your SSH keys"),
    (
        "tokens:create [DESCRIPTION]",
        "create an API token for the CLI and the HTTP API",
    ),
    ("help", "show this list"),
];

/// Whether `name` is one of the SSH commands.
pub fn is_command(name: &str) -> bool {
    COMMANDS
        .iter()
        .any(|(usage, _)| command_name(usage) == name)
}

fn command_name(usage: &str) -> &str {
    usage.split(' ').next().unwrap_or(usage)
}

fn usage_of(name: &str) -> &'static str {
    COMMANDS
        .iter()
        .map(|(usage, _)| *usage)
        .find(|usage| command_name(usage) == name)
        .unwrap_or("help")
}

/// One SSH command, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    /// `apps`
    Apps,
    /// `create <app>` (the name is checked when the app is created).
    Create {
        /// The new app's name.
        app: String,
    },
    /// `destroy <app> --confirm <app>`
    Destroy {
        /// The app.
        app: AppName,
        /// What `--confirm` repeated (empty when missing).
        confirm: String,
    },
    /// `info <app>`
    Info {
        /// The app.
        app: AppName,
    },
    /// `config <app>`
    Config {
        /// The app.
        app: AppName,
    },
    /// `config:set <app> K=V…` and `config:unset <app> K…`.
    ConfigChange {
        /// The app.
        app: AppName,
        /// What to set (`Some`) and unset (`None`).
        changes: ConfigChanges,
    },
    /// `releases <app>`
    Releases {
        /// The app.
        app: AppName,
    },
    /// `releases:info <app> vN`
    ReleaseInfo {
        /// The app.
        app: AppName,
        /// The release.
        version: u32,
    },
    /// `rollback <app> vN`
    Rollback {
        /// The app.
        app: AppName,
        /// The release to go back to.
        version: u32,
    },
    /// `ps <app>`
    Ps {
        /// The app.
        app: AppName,
    },
    /// `scale <app> web=3 worker=2:2X…`
    Scale {
        /// The app.
        app: AppName,
        /// The changes.
        requests: Vec<ScaleRequest>,
    },
    /// `restart <app> [web|web.1]`
    Restart {
        /// The app.
        app: AppName,
        /// A process type or instance; everything when `None`.
        target: Option<String>,
    },
    /// `run <app> [--detach] [--] <command…>`
    Run {
        /// The app.
        app: AppName,
        /// Start it and return instead of attaching.
        detach: bool,
        /// The command as written on the line (quotes included), for `/bin/sh -c` in the
        /// app's container.
        command: String,
    },
    /// `logs <app> [--tail N] [--process TYPE] [-f]`
    Logs {
        /// The app.
        app: AppName,
        /// What to read.
        options: LogOptions,
    },
    /// `domains <app>`
    Domains {
        /// The app.
        app: AppName,
    },
    /// `domains:add <app> HOST`
    DomainAdd {
        /// The app.
        app: AppName,
        /// The hostname.
        hostname: String,
    },
    /// `domains:remove <app> HOST`
    DomainRemove {
        /// The app.
        app: AppName,
        /// The hostname.
        hostname: String,
    },
    /// `access <app>`
    Access {
        /// The app.
        app: AppName,
    },
    /// `access:add <app> USER`
    AccessAdd {
        /// The app.
        app: AppName,
        /// The user to add.
        user: String,
    },
    /// `access:remove <app> USER`
    AccessRemove {
        /// The app.
        app: AppName,
        /// The user to remove.
        user: String,
    },
    /// `keys`
    Keys,
    /// `keys:add` (the key comes on stdin)
    KeyAdd,
    /// `keys:remove FINGERPRINT`
    KeyRemove {
        /// The key's `SHA256:` fingerprint.
        fingerprint: String,
    },
    /// `tokens:create [DESCRIPTION]`
    TokenCreate {
        /// What the token is for.
        description: String,
    },
    /// `apps:connect`, `apps:disconnect`, `builds`, `builds:logs`.
    Builds(builds::BuildsCommand),
    /// `webhooks`, `webhooks:add`, `webhooks:remove`, `webhooks:deliveries`.
    Webhooks(webhooks::WebhooksCommand),
    /// `help`
    Help,
}

/// Why a command line was refused. The display form is the one line the user sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but blanks.
    #[error(
        "no command given: there is no shell here; run git push or fetch, or one of the commands \"help\" lists"
    )]
    Empty,
    /// The line is not UTF-8, too long, or holds control characters.
    #[error("cannot read the command: {0}")]
    Unreadable(String),
    /// The line cannot be split into words.
    #[error("cannot read the command: {0}")]
    Words(#[from] WordsError),
    /// Not a command.
    #[error("unknown command {0:?}: try \"help\"")]
    Unknown(String),
    /// Arguments are missing or extra.
    #[error("usage: {0}")]
    Usage(&'static str),
    /// An argument is not acceptable.
    #[error("{0}")]
    Invalid(String),
}

/// The arguments after the command name.
struct Args<'a> {
    name: &'a str,
    words: &'a [Word],
    next: usize,
}

impl<'a> Args<'a> {
    fn usage(&self) -> ParseError {
        ParseError::Usage(usage_of(self.name))
    }

    fn peek(&self) -> Option<&'a Word> {
        self.words.get(self.next)
    }

    fn next(&mut self) -> Option<&'a str> {
        let word = self.words.get(self.next)?;
        self.next += 1;
        Some(&word.text)
    }

    fn required(&mut self) -> Result<String, ParseError> {
        self.next().map(str::to_string).ok_or_else(|| self.usage())
    }

    fn app(&mut self) -> Result<AppName, ParseError> {
        let name = self.next().ok_or_else(|| self.usage())?;
        AppName::new(name).map_err(|e| ParseError::Invalid(e.to_string()))
    }

    fn rest(&mut self) -> Vec<String> {
        let rest = self.words[self.next..]
            .iter()
            .map(|w| w.text.clone())
            .collect();
        self.next = self.words.len();
        rest
    }

    fn done(&self) -> Result<(), ParseError> {
        match self.peek() {
            None => Ok(()),
            Some(extra) => Err(ParseError::Invalid(format!(
                "unexpected argument {:?}: usage: {}",
                extra.text,
                usage_of(self.name)
            ))),
        }
    }
}

fn version(text: &str) -> Result<u32, ParseError> {
    text.strip_prefix('v')
        .unwrap_or(text)
        .parse::<u32>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| {
            ParseError::Invalid(format!(
                "{text:?} is not a release version: use vN, such as v3"
            ))
        })
}

/// Parses an SSH command line.
pub fn parse_command(line: &str) -> Result<AdminCommand, ParseError> {
    if line.len() > MAX_LINE {
        return Err(ParseError::Unreadable(format!(
            "it is too long ({} bytes)",
            line.len()
        )));
    }
    if line
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n'))
    {
        return Err(ParseError::Unreadable(
            "it contains a control character".into(),
        ));
    }
    let words = split_words(line)?;
    let Some(first) = words.first() else {
        return Err(ParseError::Empty);
    };
    let name = first.text.as_str();
    let mut args = Args {
        name,
        words: &words[1..],
        next: 0,
    };
    let command = match name {
        "apps" => AdminCommand::Apps,
        "create" => AdminCommand::Create {
            app: args.required()?,
        },
        "destroy" => {
            let app = args.app()?;
            let mut confirm = String::new();
            while let Some(word) = args.next() {
                if word == "--confirm" || word == "-c" {
                    confirm = args.required()?;
                } else if let Some(value) = word.strip_prefix("--confirm=") {
                    confirm = value.to_string();
                } else {
                    return Err(ParseError::Invalid(format!(
                        "unexpected argument {word:?}: usage: {}",
                        usage_of(name)
                    )));
                }
            }
            AdminCommand::Destroy { app, confirm }
        }
        "info" => AdminCommand::Info { app: args.app()? },
        "config" => AdminCommand::Config { app: args.app()? },
        "config:set" => {
            let app = args.app()?;
            let mut changes = ConfigChanges::new();
            for pair in args.rest() {
                match pair.split_once('=') {
                    Some((key, value)) if !key.is_empty() => {
                        changes.insert(key.to_string(), Some(value.to_string()));
                    }
                    _ => {
                        return Err(ParseError::Invalid(format!(
                            "{pair:?} is not KEY=VALUE: usage: {}",
                            usage_of(name)
                        )));
                    }
                }
            }
            if changes.is_empty() {
                return Err(args.usage());
            }
            AdminCommand::ConfigChange { app, changes }
        }
        "config:unset" => {
            let app = args.app()?;
            let changes: ConfigChanges = args.rest().into_iter().map(|k| (k, None)).collect();
            if changes.is_empty() {
                return Err(args.usage());
            }
            AdminCommand::ConfigChange { app, changes }
        }
        "releases" => AdminCommand::Releases { app: args.app()? },
        "releases:info" => AdminCommand::ReleaseInfo {
            app: args.app()?,
            version: version(&args.required()?)?,
        },
        "rollback" => AdminCommand::Rollback {
            app: args.app()?,
            version: version(&args.required()?)?,
        },
        "ps" => AdminCommand::Ps { app: args.app()? },
        "scale" => {
            let app = args.app()?;
            let requests = args
                .rest()
                .iter()
                .map(|r| ScaleRequest::parse(r).map_err(|e| ParseError::Invalid(e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            if requests.is_empty() {
                return Err(args.usage());
            }
            AdminCommand::Scale { app, requests }
        }
        "restart" => AdminCommand::Restart {
            app: args.app()?,
            target: args.next().map(str::to_string),
        },
        "run" => {
            let app = args.app()?;
            let mut detach = false;
            while let Some(word) = args.peek() {
                match word.text.as_str() {
                    "--detach" | "-d" => {
                        detach = true;
                        args.next();
                    }
                    "--" => {
                        args.next();
                        break;
                    }
                    option if option.starts_with('-') => {
                        return Err(ParseError::Invalid(format!(
                            "unknown option {option:?}: usage: {} (put -- before a command that starts with -)",
                            usage_of(name)
                        )));
                    }
                    _ => break,
                }
            }
            // The command is the rest of the line as written, quotes and all: the app's
            // container runs it with /bin/sh -c, as `heroku run` does.
            let command = match args.peek() {
                Some(word) => line[word.span.start..].trim_end().to_string(),
                None => return Err(args.usage()),
            };
            args.rest();
            AdminCommand::Run {
                app,
                detach,
                command,
            }
        }
        "logs" => {
            let app = args.app()?;
            let mut options = LogOptions::default();
            while let Some(word) = args.next() {
                let (flag, inline) = match word.split_once('=') {
                    Some((flag, value)) if flag.starts_with("--") => (flag, Some(value)),
                    _ => (word, None),
                };
                let value = |args: &mut Args| match inline {
                    Some(value) => Ok(value.to_string()),
                    None => args.required(),
                };
                match flag {
                    "--tail" | "-n" | "--num" => {
                        let text = value(&mut args)?;
                        options.tail = Some(text.parse().map_err(|_| {
                            ParseError::Invalid(format!("--tail {text:?} is not a number of lines"))
                        })?);
                    }
                    "--process" | "-p" => options.process = Some(value(&mut args)?),
                    "-f" | "--follow" | "-t" if inline.is_none() => options.follow = true,
                    other => {
                        return Err(ParseError::Invalid(format!(
                            "unexpected argument {other:?}: usage: {}",
                            usage_of(name)
                        )));
                    }
                }
            }
            AdminCommand::Logs { app, options }
        }
        "domains" => AdminCommand::Domains { app: args.app()? },
        "domains:add" => AdminCommand::DomainAdd {
            app: args.app()?,
            hostname: args.required()?,
        },
        "domains:remove" => AdminCommand::DomainRemove {
            app: args.app()?,
            hostname: args.required()?,
        },
        "access" => AdminCommand::Access { app: args.app()? },
        "access:add" => AdminCommand::AccessAdd {
            app: args.app()?,
            user: args.required()?,
        },
        "access:remove" => AdminCommand::AccessRemove {
            app: args.app()?,
            user: args.required()?,
        },
        "keys" => AdminCommand::Keys,
        "keys:add" => AdminCommand::KeyAdd,
        "keys:remove" => AdminCommand::KeyRemove {
            fingerprint: args.required()?,
        },
        "tokens:create" => {
            let words = args.rest();
            AdminCommand::TokenCreate {
                description: if words.is_empty() {
                    "created over ssh".to_string()
                } else {
                    words.join(" ")
                },
            }
        }
        "apps:connect" | "apps:disconnect" | "builds" | "builds:logs" => {
            AdminCommand::Builds(builds::parse(name, &mut args)?)
        }
        "webhooks" | "webhooks:add" | "webhooks:remove" | "webhooks:deliveries" => {
            AdminCommand::Webhooks(webhooks::parse(name, &mut args)?)
        }
        "help" | "--help" | "-h" => {
            args.rest();
            AdminCommand::Help
        }
        other => return Err(ParseError::Unknown(other.to_string())),
    };
    args.done()?;
    Ok(command)
}

/// The lines `help` prints.
pub fn help_text() -> String {
    let width = COMMANDS.iter().map(|(u, _)| u.len()).max().unwrap_or(0);
    let mut text = String::new();
    text.push_str("Usage: ssh -p PORT git@HOST <command> [app] [args]\n\n");
    text.push_str("Commands:\n");
    for (usage, about) in COMMANDS {
        let _ = writeln!(text, "  {usage:width$}  {about}");
    }
    text.push_str(
        "\nQuote arguments with spaces so the quotes reach the server:\n  \
         ssh git@HOST \"config:set shop 'MSG=hello world'\"\n\
         Deploy with git: git push ssh://git@HOST:PORT/<app>.git main\n",
    );
    text
}

// ---------------------------------------------------------------------------------------
// Output.
// ---------------------------------------------------------------------------------------

/// Writes a command's output to its SSH channel: stdout as channel data, stderr as
/// extended data, each waiting for the client's window. With a PTY the client's terminal
/// is raw, so newlines go out as CR LF.
#[derive(Clone)]
pub(crate) struct Console {
    writer: Arc<ChannelWriteHalf<Msg>>,
    crlf: bool,
    cancel: CancellationToken,
}

impl Console {
    pub(crate) fn new(
        writer: Arc<ChannelWriteHalf<Msg>>,
        crlf: bool,
        cancel: CancellationToken,
    ) -> Self {
        Console {
            writer,
            crlf,
            cancel,
        }
    }

    async fn write(&self, ext: Option<u32>, text: &str) -> bool {
        let text = if self.crlf {
            text.replace("\r\n", "\n").replace('\n', "\r\n")
        } else {
            text.to_string()
        };
        let bytes = Bytes::from(text);
        let send = async {
            match ext {
                None => self.writer.data_bytes(bytes).await,
                Some(ext) => self.writer.extended_data_bytes(ext, bytes).await,
            }
        };
        tokio::select! {
            sent = send => sent.is_ok(),
            _ = self.cancel.cancelled() => false,
        }
    }

    /// Writes text to stdout as it is.
    pub(crate) async fn out(&self, text: &str) -> bool {
        self.write(None, text).await
    }

    /// Writes one line to stdout.
    pub(crate) async fn line(&self, line: &str) -> bool {
        self.write(None, &format!("{line}\n")).await
    }

    /// Writes a line to stderr as it is.
    pub(crate) async fn err_line(&self, line: &str) -> bool {
        self.write(Some(STDERR), &format!("{line}\n")).await
    }

    /// Writes an error to stderr, each line prefixed with ` !     `.
    pub(crate) async fn error(&self, message: &str) -> bool {
        let mut text = String::new();
        for line in message.lines() {
            let _ = writeln!(text, "{ERROR}{line}");
        }
        self.write(Some(STDERR), &text).await
    }

    /// A [`Progress`] whose lines go to stdout as they come, and the relay to finish
    /// once the operation returned.
    fn progress(&self) -> (Progress, Relay) {
        let (lines, mut pending) = mpsc::unbounded_channel::<Option<String>>();
        let console = self.clone();
        let task = tokio::spawn(async move {
            while let Some(Some(line)) = pending.recv().await {
                if !console.line(&line).await {
                    break;
                }
            }
        });
        let progress = Progress::new(Arc::new(RelaySink(lines.clone())));
        (progress, Relay { lines, task })
    }
}

struct RelaySink(mpsc::UnboundedSender<Option<String>>);

impl ProgressSink for RelaySink {
    fn write_line(&self, line: &str) {
        let _ = self.0.send(Some(line.to_string()));
    }
}

/// The task that writes an operation's progress lines.
struct Relay {
    lines: mpsc::UnboundedSender<Option<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Waits until every line written so far reached the channel (lines a stray clone of
    /// the progress writes later are dropped).
    async fn finish(self) {
        let _ = self.lines.send(None);
        let _ = self.task.await;
    }
}

/// Aligns rows into columns two spaces apart; the first row is the header.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths[c].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// `Key:  value` lines with the values aligned.
fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    let mut text = String::new();
    for (key, value) in pairs {
        let label = format!("{key}:");
        let _ = writeln!(text, "{label:width$} {value}");
    }
    text
}

/// `2025-11-27 09:17:00 UTC`
fn when(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `2025-11-27T09:17:00.123Z`, as log lines are stamped.
fn stamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn config_lines(config: &BTreeMap<String, String>) -> String {
    let width = config.keys().map(|k| k.len() + 1).max().unwrap_or(0);
    let mut text = String::new();
    for (key, value) in config {
        let label = format!("{key}:");
        let _ = writeln!(text, "{label:width$} {value}");
    }
    text
}

fn names(list: &[&str]) -> String {
    match list {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

// ---------------------------------------------------------------------------------------
// Running a command.
// ---------------------------------------------------------------------------------------

/// A terminal the client asked for with `ssh -t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TerminalSize {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

/// One SSH command to run on its channel.
pub(crate) struct Invocation {
    /// The service layer, or `None` on a server that runs git only.
    pub platform: Option<Arc<Platform>>,
    /// The authenticated user's name.
    pub user: String,
    /// The command line.
    pub line: String,
    /// Where output goes.
    pub console: Console,
    /// The channel, for an attached `run`'s output.
    pub writer: Arc<ChannelWriteHalf<Msg>>,
    /// The client's data.
    pub stdin: mpsc::Receiver<Bytes>,
    /// The PTY the client asked for, if any.
    pub terminal: Option<TerminalSize>,
    /// Window changes of that PTY.
    pub resize: Option<mpsc::Receiver<(u16, u16)>>,
    /// Cancelled when the client goes away.
    pub cancel: CancellationToken,
}

/// Runs one SSH command; returns its exit status.
pub(crate) async fn run(mut inv: Invocation) -> u32 {
    let command = match parse_command(&inv.line) {
        Ok(command) => command,
        Err(err @ ParseError::Unknown(_)) => {
            inv.stdin.close();
            inv.console.err_line(&err.to_string()).await;
            return 1;
        }
        Err(err) => {
            inv.stdin.close();
            inv.console.error(&err.to_string()).await;
            return 1;
        }
    };
    if !matches!(command, AdminCommand::Run { .. } | AdminCommand::KeyAdd) {
        // Nothing reads the client's data: let the session stop queueing it.
        inv.stdin.close();
    }
    if command == AdminCommand::Help {
        inv.console.out(&help_text()).await;
        return 0;
    }
    let Some(platform) = inv.platform.clone() else {
        inv.console
            .error("this server runs git push and fetch only: its SSH commands are not enabled")
            .await;
        return 1;
    };
    let actor = match platform.store().user(&inv.user).await {
        Ok(user) => user,
        Err(err) => {
            tracing::warn!(user = %inv.user, error = %err, "cannot look up the user");
            inv.console.error(&err.to_string()).await;
            return 1;
        }
    };
    let console = inv.console.clone();
    let exec = Exec {
        platform,
        actor,
        console: console.clone(),
    };
    match exec.execute(command, &mut inv).await {
        Ok(code) => code,
        Err(err) => {
            console.error(&err.to_string()).await;
            1
        }
    }
}

struct Exec {
    platform: Arc<Platform>,
    actor: User,
    console: Console,
}

impl Exec {
    async fn execute(&self, command: AdminCommand, inv: &mut Invocation) -> Result<u32, CoreError> {
        let platform = &self.platform;
        let actor = &self.actor;
        let out = &self.console;
        match command {
            AdminCommand::Help => {
                out.out(&help_text()).await;
            }
            AdminCommand::Apps => {
                let apps = platform.apps(actor).await?;
                if apps.is_empty() {
                    out.line("You have no apps: create one with \"create <app>\".")
                        .await;
                } else {
                    let mut rows = vec![vec!["NAME".into(), "RELEASE".into(), "CREATED".into()]];
                    for app in apps {
                        rows.push(vec![
                            app.name.to_string(),
                            app.current_release
                                .map_or("-".to_string(), |v| format!("v{v}")),
                            when(app.created_at),
                        ]);
                    }
                    out.line(&format!("=== {}'s apps", actor.name)).await;
                    out.out(&table(&rows)).await;
                }
            }
            AdminCommand::Create { app } => {
                let created = platform.create_app(actor, &app).await?;
                out.line(&format!("-----> Created {}", created.name)).await;
                out.line(&format!(
                    "       Push to deploy: git push ssh://git@HOST:PORT/{}.git main",
                    created.name
                ))
                .await;
            }
            AdminCommand::Destroy { app, confirm } => {
                out.line(&format!("-----> Destroying {app}")).await;
                platform.destroy_app(actor, &app, &confirm).await?;
                out.line(&format!(
                    "       Destroyed {app}: its processes, releases and repository are gone"
                ))
                .await;
            }
            AdminCommand::Info { app } => self.info(&app).await?,
            AdminCommand::Webhooks(command) => return self.webhooks(command).await,
            AdminCommand::Builds(command) => return self.builds(command, inv).await,
            AdminCommand::Config { app } => {
                let config = platform.config(actor, &app).await?;
                if config.is_empty() {
                    out.line(&format!("{app} has no config vars.")).await;
                } else {
                    out.line(&format!("=== {app} Config Vars")).await;
                    out.out(&config_lines(&config)).await;
                }
            }
            AdminCommand::ConfigChange { app, changes } => {
                let set: Vec<&str> = changes
                    .iter()
                    .filter(|(_, v)| v.is_some())
                    .map(|(k, _)| k.as_str())
                    .collect();
                let unset: Vec<&str> = changes
                    .iter()
                    .filter(|(_, v)| v.is_none())
                    .map(|(k, _)| k.as_str())
                    .collect();
                let mut what = Vec::new();
                if !set.is_empty() {
                    what.push(format!("Setting {}", names(&set)));
                }
                if !unset.is_empty() {
                    what.push(format!("Unsetting {}", names(&unset)));
                }
                out.line(&format!("-----> {} on {app}", what.join(" and ")))
                    .await;
                let (progress, relay) = out.progress();
                let result = platform.set_config(actor, &app, &changes, progress).await;
                relay.finish().await;
                let config = result?;
                let shown: BTreeMap<String, String> = config
                    .into_iter()
                    .filter(|(k, _)| changes.get(k).is_some_and(Option::is_some))
                    .collect();
                out.out(&config_lines(&shown)).await;
                if !unset.is_empty() {
                    out.line(&format!("Unset {}.", names(&unset))).await;
                }
            }
            AdminCommand::Releases { app } => {
                let found = platform.app(actor, &app).await?;
                let releases = platform.releases(actor, &app).await?;
                if releases.is_empty() {
                    out.line(&format!(
                        "{app} has no releases yet: git push to deploy it."
                    ))
                    .await;
                } else {
                    let mut rows = vec![vec![
                        "VERSION".into(),
                        "STATUS".into(),
                        "DESCRIPTION".into(),
                        "USER".into(),
                        "CREATED".into(),
                    ]];
                    for r in releases {
                        let status = if found.current_release == Some(r.version) {
                            format!("{} (current)", r.status)
                        } else {
                            r.status.to_string()
                        };
                        rows.push(vec![
                            format!("v{}", r.version),
                            status,
                            r.description,
                            r.user,
                            when(r.created_at),
                        ]);
                    }
                    out.line(&format!("=== {app} Releases")).await;
                    out.out(&table(&rows)).await;
                }
            }
            AdminCommand::ReleaseInfo { app, version } => {
                let release = platform.release(actor, &app, version).await?;
                let log = platform.release_log(actor, &app, version).await?;
                let mut pairs = vec![
                    ("Status", release.status.to_string()),
                    ("Description", release.description.clone()),
                    ("User", release.user.clone()),
                    ("Created", when(release.created_at)),
                ];
                if let Some(commit) = &release.commit {
                    pairs.push(("Commit", commit.clone()));
                }
                if let Some(image) = &release.image {
                    pairs.push(("Image", image.clone()));
                }
                let types: Vec<String> = release
                    .process_types
                    .iter()
                    .map(|(name, command)| {
                        if command.is_empty() {
                            format!("{name} (image CMD)")
                        } else {
                            format!("{name}: {command}")
                        }
                    })
                    .collect();
                if !types.is_empty() {
                    pairs.push(("Processes", types.join("; ")));
                }
                if !release.config.is_empty() {
                    let keys: Vec<&str> = release.config.keys().map(String::as_str).collect();
                    pairs.push(("Config vars", keys.join(", ")));
                }
                if let Some(failure) = &release.failure {
                    pairs.push(("Failure", failure.clone()));
                }
                out.line(&format!("=== {app} v{version}")).await;
                out.out(&fields(&pairs)).await;
                out.line("=== Build log").await;
                if log.trim().is_empty() {
                    out.line("(empty)").await;
                } else if log.ends_with('\n') {
                    out.out(&log).await;
                } else {
                    out.line(&log).await;
                }
            }
            AdminCommand::Rollback { app, version } => {
                out.line(&format!("-----> Rolling back {app} to v{version}"))
                    .await;
                let (progress, relay) = out.progress();
                let result = platform.rollback(actor, &app, version, progress).await;
                relay.finish().await;
                let outcome = result?;
                let mut line = format!(
                    "-----> Rolled back to v{version}: v{} is now serving",
                    outcome.release
                );
                if let Some(url) = outcome.url {
                    let _ = write!(line, " at {url}");
                }
                out.line(&line).await;
            }
            AdminCommand::Ps { app } => {
                let processes = platform.processes(actor, &app).await?;
                let formation = platform.formation(actor, &app).await?;
                out.line(&format!("=== {app} Processes")).await;
                if processes.is_empty() {
                    out.line("(none running)").await;
                } else {
                    let mut rows = vec![vec![
                        "NAME".into(),
                        "STATE".into(),
                        "RELEASE".into(),
                        "STARTED".into(),
                    ]];
                    for p in processes {
                        rows.push(vec![
                            p.name,
                            p.state,
                            format!("v{}", p.release),
                            p.started_at.map_or("-".into(), when),
                        ]);
                    }
                    out.out(&table(&rows)).await;
                }
                if !formation.is_empty() {
                    out.line(&format!("=== {app} Formation")).await;
                    let mut rows = vec![vec!["TYPE".into(), "QUANTITY".into(), "SIZE".into()]];
                    for f in formation {
                        rows.push(vec![f.process, f.quantity.to_string(), f.size.to_string()]);
                    }
                    out.out(&table(&rows)).await;
                }
            }
            AdminCommand::Scale { app, requests } => {
                let asked: Vec<String> = requests
                    .iter()
                    .map(|r| {
                        let mut text = format!("{}=", r.process);
                        if let Some(q) = r.quantity {
                            let _ = write!(text, "{q}");
                        }
                        if let Some(size) = r.size {
                            let _ = write!(text, ":{size}");
                        }
                        text
                    })
                    .collect();
                out.line(&format!("-----> Scaling {app}: {}", asked.join(" ")))
                    .await;
                let (progress, relay) = out.progress();
                let result = platform.scale(actor, &app, &requests, progress).await;
                relay.finish().await;
                let formation = result?;
                let running: Vec<String> = formation
                    .iter()
                    .map(|f| format!("{} at {}:{}", f.process, f.quantity, f.size))
                    .collect();
                out.line(&format!("       Now running {}", running.join(", ")))
                    .await;
            }
            AdminCommand::Restart { app, target } => {
                let what = target.as_deref().unwrap_or("all processes");
                out.line(&format!("-----> Restarting {what} of {app}"))
                    .await;
                let (progress, relay) = out.progress();
                let result = platform
                    .restart(actor, &app, target.as_deref(), progress)
                    .await;
                relay.finish().await;
                result?;
                out.line("       Restarted").await;
            }
            AdminCommand::Run {
                app,
                detach,
                command,
            } => return self.run(&app, detach, &command, inv).await,
            AdminCommand::Logs { app, options } => {
                let mut lines = platform.logs(actor, &app, &options).await?;
                loop {
                    let line = tokio::select! {
                        line = lines.recv() => line,
                        _ = inv.cancel.cancelled() => None,
                    };
                    let Some(line) = line else { break };
                    let text = format!("{} app[{}]: {}", stamp(line.time), line.source, line.text);
                    if !out.line(&text).await {
                        break;
                    }
                }
            }
            AdminCommand::Domains { app } => {
                let domains = platform.domains(actor, &app).await?;
                if domains.is_empty() {
                    out.line(&format!("{app} has no custom domains.")).await;
                } else {
                    let mut rows = vec![vec!["HOSTNAME".into(), "ADDED".into()]];
                    for d in domains {
                        rows.push(vec![d.hostname, when(d.created_at)]);
                    }
                    out.line(&format!("=== {app} Domains")).await;
                    out.out(&table(&rows)).await;
                }
            }
            AdminCommand::DomainAdd { app, hostname } => {
                let domain = platform.add_domain(actor, &app, &hostname).await?;
                out.line(&format!("-----> Added {} to {app}", domain.hostname))
                    .await;
            }
            AdminCommand::DomainRemove { app, hostname } => {
                platform.remove_domain(actor, &app, &hostname).await?;
                out.line(&format!("-----> Removed {hostname} from {app}"))
                    .await;
            }
            AdminCommand::Access { app } => {
                let users = platform.collaborators(actor, &app).await?;
                out.line(&format!("=== {app} Collaborators")).await;
                for user in users {
                    out.line(&user).await;
                }
            }
            AdminCommand::AccessAdd { app, user } => {
                platform.add_collaborator(actor, &app, &user).await?;
                out.line(&format!("-----> Gave {user} access to {app}"))
                    .await;
            }
            AdminCommand::AccessRemove { app, user } => {
                platform.remove_collaborator(actor, &app, &user).await?;
                out.line(&format!("-----> Removed {user}'s access to {app}"))
                    .await;
            }
            AdminCommand::Keys => {
                let keys = platform.keys(actor).await?;
                if keys.is_empty() {
                    out.line("You have no SSH keys.").await;
                } else {
                    let mut rows = vec![vec![
                        "FINGERPRINT".into(),
                        "TYPE".into(),
                        "COMMENT".into(),
                        "ADDED".into(),
                    ]];
                    for key in keys {
                        let mut parts = key.public_key.splitn(3, ' ');
                        let kind = parts.next().unwrap_or_default().to_string();
                        let comment = parts.nth(1).unwrap_or_default().to_string();
                        rows.push(vec![key.fingerprint, kind, comment, when(key.created_at)]);
                    }
                    out.line(&format!("=== {}'s keys", actor.name)).await;
                    out.out(&table(&rows)).await;
                }
            }
            AdminCommand::KeyAdd => {
                let text = read_stdin(&mut inv.stdin, MAX_KEY, &inv.cancel).await?;
                if text.trim().is_empty() {
                    return Err(CoreError::invalid(
                        "public key",
                        "give the key on stdin: ssh git@HOST keys:add < ~/.ssh/id_ed25519.pub",
                    ));
                }
                let (fingerprint, normalized) = parse_public_key(&text)?;
                let key = platform.add_key(actor, &fingerprint, &normalized).await?;
                out.line(&format!(
                    "-----> Added key {} for {}",
                    key.fingerprint, key.user
                ))
                .await;
            }
            AdminCommand::KeyRemove { fingerprint } => {
                platform.remove_key(actor, &fingerprint).await?;
                out.line(&format!("-----> Removed key {fingerprint}")).await;
            }
            AdminCommand::TokenCreate { description } => {
                let token = platform.create_token(&actor.name, &description).await?;
                out.line(&token.secret).await;
                out.err_line(&format!(
                    "-----> Created API token {} for {}: it is shown only this once, keep it secret",
                    token.token.id, actor.name
                ))
                .await;
            }
        }
        Ok(0)
    }

    async fn info(&self, app: &AppName) -> Result<(), CoreError> {
        let platform = &self.platform;
        let actor = &self.actor;
        let found = platform.app(actor, app).await?;
        let formation = platform.formation(actor, app).await?;
        let domains = platform.domains(actor, app).await?;
        let collaborators = platform.collaborators(actor, app).await?;
        let mut pairs = vec![
            (
                "Release",
                found
                    .current_release
                    .map_or("none yet".to_string(), |v| format!("v{v}")),
            ),
            ("Created", when(found.created_at)),
        ];
        if !formation.is_empty() {
            let processes: Vec<String> = formation
                .iter()
                .map(|f| format!("{}={}:{}", f.process, f.quantity, f.size))
                .collect();
            pairs.push(("Processes", processes.join(" ")));
        }
        if !domains.is_empty() {
            let hosts: Vec<String> = domains.into_iter().map(|d| d.hostname).collect();
            pairs.push(("Domains", hosts.join(", ")));
        }
        pairs.push(("Collaborators", collaborators.join(", ")));
        self.console.line(&format!("=== {app}")).await;
        self.console.out(&fields(&pairs)).await;
        Ok(())
    }

    async fn run(
        &self,
        app: &AppName,
        detach: bool,
        command: &str,
        inv: &mut Invocation,
    ) -> Result<u32, CoreError> {
        let tty = inv.terminal.is_some() && !detach;
        if detach {
            let outcome = self
                .platform
                .run(&self.actor, app, command, false, None, None)
                .await?;
            return Ok(match outcome {
                RunOutcome::Detached { name, .. } => {
                    self.console
                        .line(&format!("-----> Running `{command}` detached as {name}"))
                        .await;
                    self.console
                        .line(&format!(
                            "       Follow it with: logs {app} --process run -f"
                        ))
                        .await;
                    0
                }
                RunOutcome::Exited(code) => exit_status(code),
            });
        }
        let (_unused, stdin) = mpsc::channel(1);
        let io = RunIo {
            input: Box::new(QueueReader {
                queue: std::mem::replace(&mut inv.stdin, stdin),
                chunk: Bytes::new(),
            }),
            output: Box::new(NoShutdown(inv.writer.make_writer())),
            resize: if tty { inv.resize.take() } else { None },
        };
        let running = self
            .platform
            .run(&self.actor, app, command, tty, None, Some(io));
        tokio::pin!(running);
        let outcome = tokio::select! {
            outcome = &mut running => outcome,
            _ = inv.cancel.cancelled() => {
                // The client went away: its stdin ended and writes fail, which ends the
                // process; give the scheduler a moment to clean up before abandoning it.
                match tokio::time::timeout(RUN_GRACE, &mut running).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        tracing::warn!(%app, "abandoned a one-off process whose client went away");
                        return Ok(1);
                    }
                }
            }
        }?;
        Ok(match outcome {
            RunOutcome::Exited(code) => exit_status(code),
            RunOutcome::Detached { name, .. } => {
                self.console
                    .line(&format!("-----> Running `{command}` as {name}"))
                    .await;
                0
            }
        })
    }
}

fn exit_status(code: i32) -> u32 {
    u32::try_from(code).unwrap_or(255)
}

/// Reads the client's data until EOF, at most `limit` bytes, as UTF-8.
async fn read_stdin(
    queue: &mut mpsc::Receiver<Bytes>,
    limit: usize,
    cancel: &CancellationToken,
) -> Result<String, CoreError> {
    let mut data = Vec::new();
    loop {
        let chunk = tokio::select! {
            chunk = queue.recv() => chunk,
            _ = cancel.cancelled() => None,
        };
        let Some(chunk) = chunk else { break };
        data.extend_from_slice(&chunk);
        if data.len() > limit {
            return Err(CoreError::invalid(
                "public key",
                format!("more than {limit} bytes on stdin: give one public key"),
            ));
        }
    }
    String::from_utf8(data).map_err(|_| CoreError::invalid("public key", "stdin is not utf-8 text"))
}

/// The client's data as an `AsyncRead`: ends at the client's EOF.
struct QueueReader {
    queue: mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl AsyncRead for QueueReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.chunk.is_empty() {
            match self.queue.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => self.chunk = chunk,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = self.chunk.len().min(buf.remaining());
        let part = self.chunk.split_to(n);
        buf.put_slice(&part);
        Poll::Ready(Ok(()))
    }
}

/// A writer whose shutdown only flushes: the channel's EOF is sent once, with the exit
/// status, when the command ends.
struct NoShutdown<W>(W);

impl<W: AsyncWrite + Unpin> AsyncWrite for NoShutdown<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use empire_core::formation::ProcessSize;

    fn parse(line: &str) -> AdminCommand {
        parse_command(line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn refuse(line: &str) -> String {
        parse_command(line).unwrap_err().to_string()
    }

    fn app(name: &str) -> AppName {
        AppName::new(name).unwrap()
    }

    #[test]
    fn parses_app_commands() {
        assert_eq!(parse("apps"), AdminCommand::Apps);
        assert_eq!(
            parse("create shop"),
            AdminCommand::Create { app: "shop".into() }
        );
        assert_eq!(
            parse("destroy shop --confirm shop"),
            AdminCommand::Destroy {
                app: app("shop"),
                confirm: "shop".into()
            }
        );
        assert_eq!(
            parse("destroy shop"),
            AdminCommand::Destroy {
                app: app("shop"),
                confirm: String::new()
            }
        );
        assert_eq!(
            parse("config:set shop 'MSG=hello world' EMPTY= URL=a=b"),
            AdminCommand::ConfigChange {
                app: app("shop"),
                changes: ConfigChanges::from([
                    ("EMPTY".into(), Some(String::new())),
                    ("MSG".into(), Some("hello world".into())),
                    ("URL".into(), Some("a=b".into())),
                ])
            }
        );
        assert_eq!(
            parse("config:unset shop A B"),
            AdminCommand::ConfigChange {
                app: app("shop"),
                changes: ConfigChanges::from([("A".into(), None), ("B".into(), None)])
            }
        );
        assert_eq!(
            parse("releases:info shop v3"),
            AdminCommand::ReleaseInfo {
                app: app("shop"),
                version: 3
            }
        );
        assert_eq!(
            parse("rollback shop 2"),
            AdminCommand::Rollback {
                app: app("shop"),
                version: 2
            }
        );
        let AdminCommand::Scale { requests, .. } = parse("scale shop web=3 worker=2:2X") else {
            panic!()
        };
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[1].size, Some(ProcessSize::X2));
        assert_eq!(
            parse("restart shop web.1"),
            AdminCommand::Restart {
                app: app("shop"),
                target: Some("web.1".into())
            }
        );
        assert_eq!(
            parse("tokens:create for ci"),
            AdminCommand::TokenCreate {
                description: "for ci".into()
            }
        );
    }

    #[test]
    fn run_keeps_the_command_as_written() {
        assert_eq!(
            parse("run shop -- sh -c 'exit 3'"),
            AdminCommand::Run {
                app: app("shop"),
                detach: false,
                command: "sh -c 'exit 3'".into()
            }
        );
        assert_eq!(
            parse("run shop --detach echo $HOME  "),
            AdminCommand::Run {
                app: app("shop"),
                detach: true,
                command: "echo $HOME".into()
            }
        );
        assert_eq!(
            parse("run shop -- -weird"),
            AdminCommand::Run {
                app: app("shop"),
                detach: false,
                command: "-weird".into()
            }
        );
        assert!(refuse("run shop -x").contains("unknown option \"-x\""));
        assert_eq!(
            refuse("run shop --"),
            "usage: run <app> [--detach] [--] COMMAND..."
        );
    }

    #[test]
    fn parses_log_options() {
        assert_eq!(
            parse("logs shop --tail 20 --process web -f"),
            AdminCommand::Logs {
                app: app("shop"),
                options: LogOptions {
                    process: Some("web".into()),
                    tail: Some(20),
                    follow: true
                }
            }
        );
        assert_eq!(
            parse("logs shop --tail=5"),
            AdminCommand::Logs {
                app: app("shop"),
                options: LogOptions {
                    process: None,
                    tail: Some(5),
                    follow: false
                }
            }
        );
        assert!(refuse("logs shop --tail x").contains("not a number"));
        assert!(refuse("logs shop --bogus").contains("unexpected argument \"--bogus\""));
    }

    #[test]
    fn refuses_bad_lines_in_one_line() {
        assert_eq!(
            refuse("bogus shop"),
            "unknown command \"bogus\": try \"help\""
        );
        assert_eq!(refuse("   "), ParseError::Empty.to_string());
        assert_eq!(refuse("config"), "usage: config <app>");
        assert_eq!(
            refuse("config:set shop"),
            "usage: config:set <app> KEY=VALUE..."
        );
        assert!(refuse("config:set shop novalue").contains("\"novalue\" is not KEY=VALUE"));
        assert!(refuse("config Shop").starts_with("invalid app name"));
        assert!(refuse("info shop extra").contains("unexpected argument \"extra\""));
        assert!(refuse("rollback shop vx").contains("not a release version"));
        assert!(refuse("scale shop web=-1").contains("quantity"));
        assert_eq!(
            refuse("config:set shop 'MSG=oops"),
            "cannot read the command: unterminated single quote"
        );
        assert!(refuse("apps \u{1b}[2J").contains("control character"));
        for line in refuse("scale").lines().chain(refuse("bogus").lines()) {
            assert!(!line.is_empty());
        }
    }

    #[test]
    fn every_listed_command_parses_or_asks_for_its_arguments() {
        for (usage, _) in COMMANDS {
            let name = command_name(usage);
            assert!(is_command(name));
            match parse_command(name) {
                Ok(_) => {}
                Err(ParseError::Usage(u)) => assert_eq!(u, *usage),
                Err(other) => panic!("{name}: {other}"),
            }
        }
        assert!(!is_command("git-receive-pack"));
    }

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["NAME".to_string(), "RELEASE".into(), "X".into()],
            vec!["a-long-name".to_string(), "v1".into(), "".into()],
        ];
        assert_eq!(table(&rows), "NAME         RELEASE  X\na-long-name  v1\n");
        assert_eq!(
            fields(&[("Release", "v1".into()), ("Collaborators", "alice".into())]),
            "Release:       v1\nCollaborators: alice\n"
        );
        assert_eq!(names(&["A", "B", "C"]), "A, B and C");
    }

    #[test]
    fn help_lists_every_command() {
        let help = help_text();
        for (usage, about) in COMMANDS {
            assert!(help.contains(usage) && help.contains(about), "{usage}");
        }
    }
}
