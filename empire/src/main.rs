//! `empire`: the gateway daemon, its admin commands, git's pre-receive hook and the
//! Heroku-style client commands of the HTTP API.

mod admin;
mod api;
mod cli;
mod config;
mod ecs_settings;
mod http;
mod outgoing;
mod server;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::config::{GlobalArgs, ServerArgs};

/// Empire: a git-push PaaS gateway.
#[derive(Debug, Parser)]
#[command(name = "empire", version, about = "Empire: git push to deploy", long_about = None)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the gateway: SSH git, the HTTP API and the router.
    Server(Box<ServerArgs>),
    /// Your SSH keys, through the API (`keys add|list|remove`: anyone's, on the data dir).
    Keys(cli::KeysArgs),
    /// Manage users.
    #[command(subcommand)]
    Users(admin::UsersCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Tokens(admin::TokensCommand),
    /// Git hooks (run by git inside the gateway, not by people).
    #[command(subcommand, hide = true)]
    Hook(HookCommand),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

#[derive(Debug, Subcommand)]
enum HookCommand {
    /// The pre-receive hook: hands the push to the daemon and relays its progress.
    PreReceive,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::Hook(HookCommand::PreReceive) = cli.command {
        std::process::exit(empire_gitd::hook::run_pre_receive_hook());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EMPIRE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => {
                // On a worker thread, not this one: what the start-up allocates and frees
                // (every app's current release, to restore it) is then reused by the
                // requests that follow instead of staying in the main thread's heap.
                let global = cli.global;
                tokio::spawn(async move { server::run(&global, *args).await }).await?
            }
            Command::Keys(cli::KeysArgs {
                admin: Some(cmd), ..
            }) => admin::keys(&cli.global, cmd).await,
            Command::Keys(args) => std::process::exit(cli::list_keys(args).await),
            Command::Client(cmd) => std::process::exit(cli::run(cmd).await),
            Command::Users(cmd) => admin::users(&cli.global, cmd).await,
            Command::Tokens(cmd) => admin::tokens(&cli.global, cmd).await,
            Command::Hook(_) => unreachable!("handled before the runtime starts"),
        }
    })
}
