//! The exec command allow-list.
//!
//! An SSH client asks the server to run a command; gitd runs nothing but git's two
//! transport services on an app's repository. The command line is never given to a
//! shell: it is parsed here into a [`GitCommand`] and everything else is refused with a
//! one-line [`CommandError`] the client shows to the user.
//!
//! Accepted, exactly as git's SSH transport sends them:
//!
//! ```text
//! git-receive-pack 'myapp.git'      (git push empire@host:myapp.git)
//! git-receive-pack '/myapp.git'     (git push ssh://empire@host/myapp.git)
//! git receive-pack 'myapp.git'      (the space form some clients send)
//! git-upload-pack 'myapp.git'       (git clone / fetch)
//! ```

use std::fmt;

use empire_core::app::AppName;

/// The longest command line considered at all.
const MAX_COMMAND_LEN: usize = 1024;

/// The rule every refusal ends with when the command itself is wrong.
const ALLOWED: &str = "only git-receive-pack and git-upload-pack are allowed";

/// The git transport service a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GitService {
    /// `git receive-pack`: the client pushes.
    ReceivePack,
    /// `git upload-pack`: the client clones or fetches.
    UploadPack,
}

impl GitService {
    /// The git subcommand that implements the service (`receive-pack`, `upload-pack`).
    pub fn program(&self) -> &'static str {
        match self {
            GitService::ReceivePack => "receive-pack",
            GitService::UploadPack => "upload-pack",
        }
    }

    /// The dashed command name clients send (`git-receive-pack`).
    pub fn command_name(&self) -> &'static str {
        match self {
            GitService::ReceivePack => "git-receive-pack",
            GitService::UploadPack => "git-upload-pack",
        }
    }
}

impl fmt::Display for GitService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.command_name())
    }
}

/// An allowed command: a git service on an app's repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitCommand {
    /// Which service to run.
    pub service: GitService,
    /// The app whose repository it runs on.
    pub app: AppName,
}

/// Why a command was refused. The display form is one lowercase line for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No command at all (an interactive login or `ssh host ''`).
    #[error(
        "no command given: there is no shell here; run git push or fetch, or one of the commands \"help\" lists"
    )]
    Empty,
    /// The command is not UTF-8.
    #[error("the command is not valid utf-8: {ALLOWED}")]
    NotUtf8,
    /// The command is unreasonably long.
    #[error("the command is too long ({0} bytes): {ALLOWED}")]
    TooLong(usize),
    /// The command holds a newline, tab or other control character.
    #[error("the command contains a control character: {ALLOWED}")]
    ControlCharacter,
    /// A command other than the two git services.
    #[error("unknown command {0:?}: {ALLOWED}")]
    UnknownCommand(String),
    /// A git service without its repository argument.
    #[error("missing repository: expected {0} '<app>.git'")]
    MissingRepository(GitService),
    /// The repository argument is not in single quotes.
    #[error("the repository {0:?} must be in single quotes: expected '<app>.git'")]
    NotQuoted(String),
    /// Something follows the repository argument.
    #[error("unexpected arguments after the repository: {0:?}")]
    ExtraArguments(String),
    /// The repository path is not `<app>.git`.
    #[error("invalid repository path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given, without its quotes.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The app name is not a valid app name.
    #[error(
        "invalid app name {0:?}: app names are 1-30 lowercase letters, digits or dashes, start with a letter and do not end with a dash"
    )]
    InvalidAppName(String),
}

/// Parses an SSH exec command line against the allow-list.
pub fn parse_exec(line: &str) -> Result<GitCommand, CommandError> {
    if line.len() > MAX_COMMAND_LEN {
        return Err(CommandError::TooLong(line.len()));
    }
    if line.chars().any(char::is_control) {
        return Err(CommandError::ControlCharacter);
    }
    if line.trim().is_empty() {
        return Err(CommandError::Empty);
    }

    let (program, rest) = split_word(line);
    let (service, rest) = match program {
        "git-receive-pack" => (GitService::ReceivePack, rest),
        "git-upload-pack" => (GitService::UploadPack, rest),
        "git" => {
            let (sub, rest) = split_word(rest.unwrap_or(""));
            match sub {
                "receive-pack" => (GitService::ReceivePack, rest),
                "upload-pack" => (GitService::UploadPack, rest),
                "" => return Err(CommandError::UnknownCommand("git".to_string())),
                other => return Err(CommandError::UnknownCommand(format!("git {other}"))),
            }
        }
        other => return Err(CommandError::UnknownCommand(other.to_string())),
    };

    let argument = match rest {
        Some(arg) if !arg.is_empty() => arg,
        _ => return Err(CommandError::MissingRepository(service)),
    };
    let path = unquote(argument)?;
    let app = app_from_path(path)?;
    Ok(GitCommand { service, app })
}

/// Splits at the first space: the word before it, and what follows the space (`None`
/// when there is no space). Leading spaces are not skipped: a well-formed command has
/// exactly one space between words.
fn split_word(s: &str) -> (&str, Option<&str>) {
    match s.split_once(' ') {
        Some((word, rest)) => (word, Some(rest)),
        None => (s, None),
    }
}

/// `'<path>'` → `<path>`; refuses anything but exactly one single-quoted word.
fn unquote(argument: &str) -> Result<&str, CommandError> {
    let Some(inner) = argument.strip_prefix('\'') else {
        return Err(CommandError::NotQuoted(argument.to_string()));
    };
    let Some(end) = inner.find('\'') else {
        return Err(CommandError::NotQuoted(argument.to_string()));
    };
    let (path, after) = (&inner[..end], &inner[end + 1..]);
    if !after.is_empty() {
        return Err(CommandError::ExtraArguments(after.to_string()));
    }
    Ok(path)
}

/// `<app>.git` or `/<app>.git` → the app name.
fn app_from_path(path: &str) -> Result<AppName, CommandError> {
    let invalid = |reason| CommandError::InvalidPath {
        path: path.to_string(),
        reason,
    };
    if path.is_empty() {
        return Err(invalid("expected '<app>.git'"));
    }
    let relative = path.strip_prefix('/').unwrap_or(path);
    if relative.contains("..") {
        return Err(invalid("\"..\" is not allowed: expected '<app>.git'"));
    }
    if relative.contains('/') {
        return Err(invalid("directories are not allowed: expected '<app>.git'"));
    }
    let Some(name) = relative.strip_suffix(".git") else {
        return Err(invalid(
            "expected '<app>.git' (the repository ends in .git)",
        ));
    };
    AppName::new(name).map_err(|_| CommandError::InvalidAppName(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> GitCommand {
        parse_exec(line).unwrap_or_else(|e| panic!("{line:?} refused: {e}"))
    }

    fn err(line: &str) -> String {
        match parse_exec(line) {
            Ok(cmd) => panic!("{line:?} accepted as {cmd:?}"),
            Err(e) => {
                let text = e.to_string();
                assert!(!text.contains('\n'), "{text:?} is not one line");
                assert_eq!(
                    text.chars().next().map(|c| c.is_lowercase()),
                    Some(true),
                    "{text:?} does not start lowercase"
                );
                text
            }
        }
    }

    #[test]
    fn accepts_the_git_transport_commands() {
        let cases = [
            (
                "git-receive-pack 'myapp.git'",
                GitService::ReceivePack,
                "myapp",
            ),
            (
                "git-receive-pack '/myapp.git'",
                GitService::ReceivePack,
                "myapp",
            ),
            (
                "git receive-pack 'myapp.git'",
                GitService::ReceivePack,
                "myapp",
            ),
            (
                "git receive-pack '/myapp.git'",
                GitService::ReceivePack,
                "myapp",
            ),
            (
                "git-upload-pack 'myapp.git'",
                GitService::UploadPack,
                "myapp",
            ),
            (
                "git-upload-pack '/myapp.git'",
                GitService::UploadPack,
                "myapp",
            ),
            (
                "git upload-pack 'myapp.git'",
                GitService::UploadPack,
                "myapp",
            ),
            ("git-receive-pack 'a.git'", GitService::ReceivePack, "a"),
            (
                "git-receive-pack 'my-app-2.git'",
                GitService::ReceivePack,
                "my-app-2",
            ),
            (
                "git-receive-pack 'abcdefghijklmnopqrstuvwxyz1234.git'",
                GitService::ReceivePack,
                "abcdefghijklmnopqrstuvwxyz1234",
            ),
        ];
        for (line, service, app) in cases {
            let cmd = ok(line);
            assert_eq!(cmd.service, service, "{line}");
            assert_eq!(cmd.app.as_str(), app, "{line}");
        }
    }

    #[test]
    fn service_programs() {
        assert_eq!(GitService::ReceivePack.program(), "receive-pack");
        assert_eq!(GitService::UploadPack.program(), "upload-pack");
        assert_eq!(GitService::ReceivePack.to_string(), "git-receive-pack");
        assert_eq!(GitService::UploadPack.to_string(), "git-upload-pack");
    }

    #[test]
    fn refuses_unknown_commands() {
        assert_eq!(
            err("ls"),
            "unknown command \"ls\": only git-receive-pack and git-upload-pack are allowed"
        );
        for line in [
            "ls -la",
            "sh -c 'id'",
            "bash",
            "git-upload-archive 'myapp.git'",
            "git upload-archive 'myapp.git'",
            "git",
            "git ",
            "git  receive-pack 'myapp.git'",
            "git-receive-pack-x 'myapp.git'",
            "GIT-RECEIVE-PACK 'myapp.git'",
            "/usr/bin/git-receive-pack 'myapp.git'",
            " git-receive-pack 'myapp.git'",
            "git-receive-pack;id 'myapp.git'",
            "scp -t /tmp",
            "rsync --server . /",
            "env GIT_DIR=/ git-receive-pack 'myapp.git'",
        ] {
            let e = err(line);
            assert!(e.starts_with("unknown command "), "{line:?}: {e}");
            assert!(e.ends_with(ALLOWED), "{line:?}: {e}");
        }
    }

    #[test]
    fn refuses_empty_commands() {
        for line in ["", " ", "   "] {
            let e = err(line);
            assert!(e.starts_with("no command given"), "{line:?}: {e}");
        }
    }

    #[test]
    fn refuses_control_characters() {
        for line in [
            "git-receive-pack 'myapp.git'\n",
            "git-receive-pack 'myapp.git'\nid",
            "git-receive-pack 'my\napp.git'",
            "git-receive-pack\t'myapp.git'",
            "git-receive-pack 'myapp.git'\r",
            "git-receive-pack 'myapp.git'\0",
            "git-receive-pack '\u{1b}[31mmyapp.git'",
        ] {
            let e = err(line);
            assert!(e.contains("control character"), "{line:?}: {e}");
        }
    }

    #[test]
    fn refuses_missing_repository() {
        assert_eq!(
            err("git-receive-pack"),
            "missing repository: expected git-receive-pack '<app>.git'"
        );
        assert_eq!(
            err("git-upload-pack "),
            "missing repository: expected git-upload-pack '<app>.git'"
        );
        assert_eq!(
            err("git receive-pack"),
            "missing repository: expected git-receive-pack '<app>.git'"
        );
    }

    #[test]
    fn refuses_unquoted_or_badly_quoted_repositories() {
        for line in [
            "git-receive-pack myapp.git",
            "git-receive-pack \"myapp.git\"",
            "git-receive-pack 'myapp.git",
            "git-receive-pack myapp.git'",
            "git-receive-pack  'myapp.git'",
            "git-receive-pack `id`",
            "git-receive-pack $(id)",
        ] {
            let e = err(line);
            assert!(e.contains("must be in single quotes"), "{line:?}: {e}");
        }
    }

    #[test]
    fn refuses_trailing_arguments() {
        for (line, extra) in [
            ("git-receive-pack 'myapp.git' --foo", " --foo"),
            ("git-receive-pack 'myapp.git' 'other.git'", " 'other.git'"),
            ("git-receive-pack 'myapp.git';id", ";id"),
            ("git-receive-pack 'myapp.git' && id", " && id"),
            ("git-receive-pack 'myapp.git' | id", " | id"),
            ("git-receive-pack 'myapp.git'$(id)", "$(id)"),
            ("git-receive-pack 'myapp.git'`id`", "`id`"),
            ("git-receive-pack 'my'app.git'", "app.git'"),
            ("git-receive-pack 'myapp.git' ", " "),
            ("git-receive-pack ''\\''myapp.git'", "\\''myapp.git'"),
        ] {
            let e = err(line);
            assert_eq!(
                e,
                format!("unexpected arguments after the repository: {extra:?}"),
                "{line:?}"
            );
        }
    }

    #[test]
    fn refuses_paths_outside_the_repository_directory() {
        for line in [
            "git-receive-pack '../myapp.git'",
            "git-receive-pack '/../myapp.git'",
            "git-receive-pack '..'",
            "git-receive-pack 'my..app.git'",
            "git-upload-pack '/etc/../../root.git'",
        ] {
            let e = err(line);
            assert!(e.contains("\"..\" is not allowed"), "{line:?}: {e}");
        }
        for line in [
            "git-receive-pack 'apps/myapp.git'",
            "git-receive-pack '//myapp.git'",
            "git-receive-pack '/srv/git/myapp.git'",
            "git-receive-pack 'myapp.git/'",
            "git-receive-pack '~/myapp.git'",
            "git-upload-pack '/home/git/myapp.git'",
        ] {
            let e = err(line);
            assert!(e.contains("directories are not allowed"), "{line:?}: {e}");
        }
    }

    #[test]
    fn refuses_paths_without_dot_git() {
        for line in [
            "git-receive-pack 'myapp'",
            "git-receive-pack '/myapp'",
            "git-receive-pack 'myapp.git.bak'",
            "git-receive-pack 'myapp.GIT'",
            "git-receive-pack ''",
            "git-receive-pack '/'",
        ] {
            let e = err(line);
            assert!(e.starts_with("invalid repository path"), "{line:?}: {e}");
            assert!(e.contains("'<app>.git'"), "{line:?}: {e}");
        }
    }

    #[test]
    fn refuses_invalid_app_names() {
        assert_eq!(
            err("git-receive-pack 'My_App.git'"),
            "invalid app name \"My_App\": app names are 1-30 lowercase letters, digits or dashes, start with a letter and do not end with a dash"
        );
        for (line, name) in [
            ("git-receive-pack '.git'", ""),
            ("git-receive-pack '1app.git'", "1app"),
            ("git-receive-pack '-app.git'", "-app"),
            ("git-receive-pack 'app-.git'", "app-"),
            ("git-receive-pack 'a.b.git'", "a.b"),
            ("git-receive-pack 'app;id.git'", "app;id"),
            ("git-receive-pack 'app|id.git'", "app|id"),
            ("git-receive-pack 'app&id.git'", "app&id"),
            ("git-receive-pack 'app$x.git'", "app$x"),
            ("git-receive-pack 'app`id`.git'", "app`id`"),
            ("git-receive-pack 'app id.git'", "app id"),
            ("git-receive-pack 'app\"x.git'", "app\"x"),
            ("git-receive-pack 'app\\x.git'", "app\\x"),
            ("git-receive-pack 'app*.git'", "app*"),
            ("git-receive-pack 'ünïcode.git'", "ünïcode"),
            (
                "git-receive-pack 'abcdefghijklmnopqrstuvwxyz12345.git'",
                "abcdefghijklmnopqrstuvwxyz12345",
            ),
        ] {
            let e = err(line);
            assert!(
                e.starts_with(&format!("invalid app name {name:?}: ")),
                "{line:?}: {e}"
            );
        }
    }

    #[test]
    fn refuses_overlong_commands() {
        let line = format!("git-receive-pack '{}.git'", "a".repeat(2000));
        let e = err(&line);
        assert!(e.starts_with("the command is too long"), "{e}");
    }
}
