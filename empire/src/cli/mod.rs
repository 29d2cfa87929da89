//! The `empire` CLI as a client of the HTTP API, in Heroku's `name:verb` style:
//! `empire apps`, `empire config:set -a web A=1`, `empire run -- sh`, …
//!
//! The server is `EMPIRE_URL` (default `http://localhost:8080`); the credentials are the
//! `~/.netrc` entry of its host that `empire login` writes (`EMPIRE_API_TOKEN` overrides
//! the token), sent as HTTP Basic auth. The app is `-a APP`, else the app of the git
//! remote `empire` of the current directory. Output is for people unless `--json` asks
//! for the API's JSON; errors print ` !     <message>` on stderr and exit 1.

/// `print!` that ends the program quietly when stdout is closed (`empire logs | head`).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` that ends the program quietly when stdout is closed.
macro_rules! outln {
    () => {
        $crate::cli::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod builds;
mod client;
mod commands;
mod netrc;
mod output;
mod run;
mod session;
mod types;
mod webhooks;

use std::path::PathBuf;

use clap::{Args, Subcommand};

use self::client::ApiFailure;

/// Which app a command works on.
#[derive(Debug, Clone, Args)]
pub struct AppArgs {
    /// The app (default: the app of the `empire` git remote of the current directory).
    #[arg(short = 'a', long = "app", value_name = "APP")]
    pub app: Option<String>,
    /// The git remote that names the app when -a is not given.
    #[arg(
        short = 'r',
        long = "remote",
        value_name = "REMOTE",
        default_value = "empire"
    )]
    pub remote: String,
}

/// `--json`.
#[derive(Debug, Clone, Copy, Args)]
pub struct JsonArgs {
    /// Print the API's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `empire keys`: without a subcommand, your own SSH keys through the API; with one,
/// the admin commands on the data dir (`empire keys add|list|remove`).
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct KeysArgs {
    /// Admin commands on the data dir.
    #[command(subcommand)]
    pub admin: Option<crate::admin::KeysCommand>,
    #[command(flatten)]
    pub output: JsonArgs,
}

/// The client commands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Log in to EMPIRE_URL: checks the user's API token and keeps it in ~/.netrc.
    Login {
        /// The user name (asked for when not given).
        #[arg(long)]
        user: Option<String>,
        /// The API token (`empire tokens create <user>` on the gateway makes one; asked
        /// for when not given).
        #[arg(long)]
        token: Option<String>,
    },
    /// Forget the credentials of EMPIRE_URL's host in ~/.netrc.
    Logout,
    /// Show who the stored credentials log in as.
    #[command(alias = "auth:whoami")]
    Whoami {
        #[command(flatten)]
        output: JsonArgs,
    },
    /// List your apps.
    #[command(alias = "apps:list")]
    Apps {
        #[command(flatten)]
        output: JsonArgs,
    },
    /// Create an app (and add the `empire` git remote here, in a git repository).
    #[command(alias = "apps:create")]
    Create {
        /// The app name (a random one when not given).
        name: Option<String>,
        /// The git remote to add.
        #[arg(short = 'r', long = "remote", default_value = "empire")]
        remote: String,
        /// Do not add a git remote.
        #[arg(long)]
        no_remote: bool,
        #[command(flatten)]
        output: JsonArgs,
    },
    /// Destroy an app for good: its releases, processes, domains and images.
    #[command(alias = "apps:destroy")]
    Destroy {
        #[command(flatten)]
        target: AppArgs,
        /// The app name again, to confirm.
        #[arg(long, value_name = "APP")]
        confirm: Option<String>,
    },
    /// Show an app.
    #[command(alias = "apps:info")]
    Info {
        #[command(flatten)]
        target: AppArgs,
        #[command(flatten)]
        output: JsonArgs,
    },
    /// Show the config vars.
    Config {
        #[command(flatten)]
        target: AppArgs,
        /// Print `KEY=value` lines for a shell.
        #[arg(short = 's', long)]
        shell: bool,
        #[command(flatten)]
        output: JsonArgs,
    },
    /// Print one config var's value.
    #[command(name = "config:get")]
    ConfigGet {
        #[command(flatten)]
        target: AppArgs,
        /// The key.
        key: String,
    },
    /// Set config vars (one new release when the app runs).
    #[command(name = "config:set", alias = "config:add")]
    ConfigSet {
        #[command(flatten)]
        target: AppArgs,
        /// `KEY=value` pairs.
        #[arg(required = true, value_name = "KEY=VALUE")]
        vars: Vec<String>,
        #[command(flatten)]
        output: JsonArgs,
    },
    /// Unset config vars.
    #[command(name = "config:unset", alias = "config:remove")]
    ConfigUnset {
        #[command(flatten)]
        target: AppArgs,
        /// The keys.
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        #[command(flatten)]
        output: JsonArgs,
    },
    /// List releases, newest first.
    Releases {
        #[command(flatten)]
        target: AppArgs,
        /// How many.
        #[arg(short = 'n', long = "num", default_value_t = 15)]
        num: usize,
        #[command(flatten)]
        output: JsonArgs,
    },
    /// Show a release and its build log.
    #[command(name = "releases:info")]
    ReleasesInfo {
        #[command(flatten)]
        target: AppArgs,
        /// `v3` or `3` (default: the current release).
        version: Option<String>,
        #[command(flatten)]
        output: JsonArgs,
    },
    /// Roll back to an earlier release's image and config, as a new release.
    #[command(alias = "releases:rollback")]
    Rollback {
        #[command(flatten)]
        target: AppArgs,
        /// `v3` or `3` (default: the last good release before the current one).
        version: Option<String>,
        #[command(flatten)]
        output: JsonArgs,
    },
    /// List the app's processes.
    #[command(alias = "ps:list")]
    Ps {
        #[command(flatten)]
        target: AppArgs,
        #[command(flatten)]
        output: JsonArgs,
    },
    /// Scale process types: `web=3 worker=2:2X` (no arguments: show the formation).
    #[command(alias = "ps:scale")]
    Scale {
        #[command(flatten)]
        target: AppArgs,
        /// `TYPE=COUNT`, `TYPE=COUNT:SIZE` or `TYPE=SIZE`.
        #[arg(value_name = "TYPE=COUNT[:SIZE]")]
        changes: Vec<String>,
        #[command(flatten)]
        output: JsonArgs,
    },
    /// Restart every process, a process type (`web`) or one process (`web.1`).
    #[command(alias = "ps:restart")]
    Restart {
        #[command(flatten)]
        target: AppArgs,
        /// `web` or `web.1` (default: everything).
        dyno: Option<String>,
    },
    /// Run a one-off process attached to this terminal: `empire run -- sh -c 'ls; env'`.
    Run {
        #[command(flatten)]
        target: AppArgs,
        /// Start it in the background and print its name.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Its size (`1X`, `2X`, …).
        #[arg(short = 's', long)]
        size: Option<String>,
        /// No terminal on the other side, even when this is one.
        #[arg(long)]
        no_tty: bool,
        /// With --detach: print the API's JSON.
        #[arg(long)]
        json: bool,
        /// The command; one word is a shell command line, several are quoted as given.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        command: Vec<String>,
    },
    /// Show the app's logs (`-f` to keep following).
    #[command(alias = "logs:tail")]
    Logs {
        #[command(flatten)]
        target: AppArgs,
        /// At most this many lines of each process to start with.
        #[arg(short = 'n', long = "num", default_value_t = 100)]
        num: u32,
        /// Only this process type (`web`) or process (`web.1`).
        #[arg(short = 'p', long = "process", alias = "dyno", value_name = "TYPE")]
        process: Option<String>,
        /// Keep streaming new lines.
        #[arg(short = 'f', long = "follow", short_alias = 't', alias = "tail")]
        follow: bool,
    },
    /// List custom domains.
    Domains {
        #[command(flatten)]
        target: AppArgs,
        #[command(flatten)]
        output: JsonArgs,
    },
    /// Add a custom domain; the router serves it at once.
    #[command(name = "domains:add")]
    DomainsAdd {
        #[command(flatten)]
        target: AppArgs,
        /// The hostname.
        hostname: String,
        #[command(flatten)]
        output: JsonArgs,
    },
    /// Remove a custom domain.
    #[command(name = "domains:remove")]
    DomainsRemove {
        #[command(flatten)]
        target: AppArgs,
        /// The hostname.
        hostname: String,
    },
    /// List who may operate the app.
    Access {
        #[command(flatten)]
        target: AppArgs,
        #[command(flatten)]
        output: JsonArgs,
    },
    /// Let a user operate the app.
    #[command(name = "access:add")]
    AccessAdd {
        #[command(flatten)]
        target: AppArgs,
        /// The user name.
        user: String,
    },
    /// Take a user's access away.
    #[command(name = "access:remove")]
    AccessRemove {
        #[command(flatten)]
        target: AppArgs,
        /// The user name.
        user: String,
    },
    /// Outgoing webhooks: tell other systems what happened to an app.
    #[command(flatten)]
    Webhooks(webhooks::WebhookCommand),
    /// Deploy a prebuilt image, streaming progress (without -a or an `empire` remote
    /// the app is named after the image's repository).
    Deploy {
        #[command(flatten)]
        target: AppArgs,
        /// The image (`registry/acme/web:v2`).
        image: String,
        /// The release description.
        #[arg(short = 'm', long)]
        message: Option<String>,
    },
    /// Add an SSH key of yours (default: ~/.ssh/id_ed25519.pub, id_ecdsa.pub or id_rsa.pub).
    #[command(name = "keys:add")]
    KeysAdd {
        /// An OpenSSH public key file, or `-` for stdin.
        file: Option<PathBuf>,
        #[command(flatten)]
        output: JsonArgs,
    },
    /// Connected repositories and the builds their webhooks start.
    #[command(flatten)]
    Builds(builds::BuildsCommand),
    /// Remove an SSH key of yours by fingerprint (`SHA256:…`) or comment.
    #[command(name = "keys:remove")]
    KeysRemove {
        /// The fingerprint, as `empire keys` shows it, or the key's comment.
        key: String,
    },
}

/// Runs a client command; answers the exit status (errors are printed).
pub async fn run(command: ClientCommand) -> i32 {
    finish(commands::dispatch(command).await)
}

/// `empire keys` without a subcommand: your SSH keys. Answers the exit status.
pub async fn list_keys(args: KeysArgs) -> i32 {
    finish(commands::keys(args.output.json).await.map(|()| 0))
}

/// Prints an error as ` !     <message>` lines and answers 1; a success answers its code.
fn finish(result: anyhow::Result<i32>) -> i32 {
    match result {
        Ok(code) => code,
        Err(err) => {
            let message = match err.downcast_ref::<ApiFailure>() {
                Some(failure) => failure.to_string(),
                None => format!("{err:#}"),
            };
            for line in message.lines() {
                eprintln!(" !     {line}");
            }
            1
        }
    }
}
