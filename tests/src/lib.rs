//! Harness for the end-to-end tests: drives the real `empire` binary with real git,
//! OpenSSH and Docker, the way a developer would.
//!
//! - [`Gateway`] starts `empire server` on a fresh data dir and free ports, waits for
//!   `/health`, and on drop stops it and removes the containers and images it made
//!   (printing the gateway's log when the test failed).
//! - [`Developer`] holds an SSH key (`ssh-keygen -t ed25519`) added with
//!   `empire keys add`; [`AppRepo`] is a working copy of a fixture with the gateway as
//!   its `empire` remote, and pushes record when each output line arrived.
//! - [`http_get`] is a small blocking HTTP/1.1 client; [`wait_for`] polls; [`TestCa`]
//!   makes certificates and serves TLS for peers on loopback.
//!
//! Every test owns its gateway, so tests run in parallel beside each other.

mod cli;
mod docker;
mod gateway;
mod git;
mod http;
mod tls;
mod util;

pub use cli::CliUser;
pub use docker::{docker, docker_lines, running_containers};
pub use gateway::{Gateway, GatewayBuilder, SettingsVia};
pub use git::{AppRepo, Developer, PushLine, PushOutcome, RunningPush, Stream, TestKey};
pub use http::{HttpRequest, HttpResponse, http_get};
pub use tls::TestCa;
pub use util::{
    empire_bin, fixture_dir, random_suffix, service_from_env, unique_app, wait_for, wait_until,
    workspace_dir,
};
