//! The `empire` CLI as a developer runs it: a home of its own, the gateway's API URL and
//! an API token, and none of the test process's `EMPIRE_*` settings.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::gateway::Gateway;
use crate::util::empire_bin;

/// A user of the CLI with an API token (created with `empire tokens create` on the
/// gateway's data dir).
pub struct CliUser {
    url: String,
    token: String,
    home: tempfile::TempDir,
}

impl CliUser {
    /// A token of `user` on `gw`, and an empty home directory.
    pub fn new(gw: &Gateway, user: &str) -> CliUser {
        let created = gw.empire(&["tokens", "create", user]);
        assert!(
            created.status.success(),
            "empire tokens create {user}: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        CliUser {
            url: format!("http://127.0.0.1:{}", gw.http_port()),
            token: String::from_utf8_lossy(&created.stdout).trim().to_string(),
            home: tempfile::tempdir().expect("a home dir"),
        }
    }

    /// `empire <args>` as this user, with no input.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(empire_bin());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("EMPIRE_") {
                command.env_remove(&key);
            }
        }
        command
            .env("HOME", self.home.path())
            .env("EMPIRE_URL", &self.url)
            .env("EMPIRE_API_TOKEN", &self.token)
            .current_dir(self.home.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running empire")
    }

    /// `empire <args>`, which must succeed; what it printed (stdout, then stderr).
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "empire {args:?} failed:\n{printed}"
        );
        printed
    }

    /// `empire <args> --json`, which must succeed; its stdout parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let output = self.run(&[args, &["--json"]].concat());
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "empire {args:?} --json failed:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }
}
