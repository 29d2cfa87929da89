//! Empire's git front door: an SSH server that receives `git push` and hands the pushed
//! commit to the deploy pipeline.
//!
//! The flow of a push:
//!
//! 1. [`server::GitServer`] (russh) authenticates the client's public key against the
//!    store and checks the exec command against the allow-list ([`command::parse_exec`]):
//!    only `git-receive-pack '<app>.git'` and `git-upload-pack '<app>.git'` run.
//! 2. It makes sure the app's bare repository exists ([`repo::ensure_repo`]) with a
//!    `pre-receive` hook that runs `empire hook pre-receive`, and runs the stock
//!    `git receive-pack` on it, wiring the child's stdio to the SSH channel.
//! 3. git runs the hook with the ref updates on stdin and the pushed objects still in
//!    quarantine. The hook ([`hook::run_pre_receive_hook`]) sends them over a Unix socket
//!    to the daemon's [`hook::HookServer`], which runs the
//!    [`empire_core::pipeline::Pipeline`] and streams its progress back line by line; git
//!    relays the hook's output to the pusher as `remote:` lines, and a non-zero exit
//!    rejects the push so the ref does not move.
//!
//! Other commands (`ssh git@HOST apps`, `config:set`, `scale`, `run`, `logs`, …) are the
//! operation commands of [`admin`], parsed by the shell-like splitter of [`words`] and run
//! through [`empire_core::service::Platform`].
//!
//! gitd never builds or deploys anything itself.

pub mod admin;
pub mod command;
pub mod fetch;
pub mod hook;
pub mod repo;
pub mod server;
pub mod words;

pub use admin::{AdminCommand, ParseError, parse_command};
pub use command::{CommandError, GitCommand, GitService, parse_exec};
pub use fetch::GitFetcher;
pub use hook::{HookRequest, HookResponse, HookServer, RefUpdate, run_pre_receive_hook};
pub use repo::{ensure_repo, repo_path};
pub use server::{
    GitServer, GitServerConfig, fingerprint, host_key_fingerprint, load_or_generate_host_key,
    parse_public_key,
};
pub use words::{Word, WordsError, split_words};

/// Everything that can go wrong in gitd outside a single channel, in words an operator
/// can act on.
#[derive(Debug, thiserror::Error)]
pub enum GitdError {
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (names the path).
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The SSH host key could not be read, generated or written.
    #[error("host key {path}: {message}")]
    HostKey {
        /// The host key file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// A public key given by a user is not acceptable.
    #[error("invalid public key: {0}")]
    PublicKey(String),
    /// The SSH layer failed.
    #[error("ssh error: {0}")]
    Ssh(#[from] russh::Error),
    /// The store failed.
    #[error(transparent)]
    Core(#[from] empire_core::Error),
}

impl GitdError {
    /// Shorthand for [`GitdError::Io`].
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        GitdError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<GitdError> for empire_core::Error {
    fn from(err: GitdError) -> Self {
        match err {
            GitdError::Core(e) => e,
            GitdError::PublicKey(message) => empire_core::Error::invalid("public key", message),
            other => empire_core::Error::backend("gitd", other),
        }
    }
}
