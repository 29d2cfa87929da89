//! `empire apps:connect`, `apps:disconnect`, `builds` and `builds:logs`: deploying the
//! pushes to a repository on GitHub, GitLab or Gitea, and the builds they start.

use std::io::Write;

use anyhow::Result;
use clap::Subcommand;
use hyper::Method;
use serde_json::{Value, json};

use super::client::{ApiClient, Call, segment, stream_to_stdout};
use super::output::{self, header, table, text};
use super::{AppArgs, JsonArgs, session};

/// The commands of connected repositories and their builds.
#[derive(Debug, Subcommand)]
pub enum BuildsCommand {
    /// Deploy every push to a branch of a repository on GitHub, GitLab or Gitea: prints
    /// the webhook URL and secret to add there (and a deploy key for SSH URLs).
    #[command(name = "apps:connect")]
    Connect {
        #[command(flatten)]
        target: AppArgs,
        /// The clone URL (`https://…`, `git@host:owner/repo.git`, `ssh://…`).
        #[arg(long, value_name = "URL")]
        repo: String,
        /// The branch whose pushes deploy.
        #[arg(long, default_value = "main")]
        branch: String,
        /// The webhook secret (one is generated when not given).
        #[arg(long)]
        secret: Option<String>,
        #[command(flatten)]
        output: JsonArgs,
    },
    /// Stop deploying pushes to the connected repository.
    #[command(name = "apps:disconnect")]
    Disconnect {
        #[command(flatten)]
        target: AppArgs,
    },
    /// List the builds webhooks started, newest first.
    Builds {
        #[command(flatten)]
        target: AppArgs,
        #[command(flatten)]
        output: JsonArgs,
    },
    /// Show a build's log (default: the newest build); `-f` follows it until it ends.
    #[command(name = "builds:logs", alias = "builds:output")]
    BuildsLogs {
        #[command(flatten)]
        target: AppArgs,
        /// The build id, as `empire builds` lists it.
        build: Option<u64>,
        /// Keep printing until the build ends.
        #[arg(short = 'f', long = "follow", short_alias = 't', alias = "tail")]
        follow: bool,
    },
}

/// Runs one of the commands.
pub async fn run(command: BuildsCommand) -> Result<()> {
    match command {
        BuildsCommand::Connect {
            target,
            repo,
            branch,
            secret,
            output,
        } => connect(&target, &repo, &branch, secret, output.json).await,
        BuildsCommand::Disconnect { target } => disconnect(&target).await,
        BuildsCommand::Builds { target, output } => builds(&target, output.json).await,
        BuildsCommand::BuildsLogs {
            target,
            build,
            follow,
        } => logs(&target, build, follow).await,
    }
}

fn for_app(target: &AppArgs) -> Result<(ApiClient, String)> {
    let client = session::client()?;
    let app = session::app(target.app.as_deref(), &target.remote)?;
    Ok((client, app))
}

fn app_path(app: &str, rest: &str) -> String {
    format!("/apps/{}{rest}", segment(app))
}

/// What `apps:connect` prints from the API's answer.
pub fn connected_text(app: &str, answer: &Value) -> String {
    let mut out = format!(
        "Pushes to {} of {} now deploy {app}.\n",
        text(answer, "branch"),
        text(answer, "repo_url")
    );
    out.push_str("Add a push webhook (content type application/json) on the git host:\n");
    let mut rows = Vec::new();
    for (key, title) in [
        ("github", "GitHub"),
        ("gitlab", "GitLab"),
        ("gitea", "Gitea"),
    ] {
        if let Some(url) = answer["webhook_urls"][key].as_str() {
            rows.push(vec![format!("  {title}"), url.to_string()]);
        }
    }
    out.push_str(&table(&rows));
    match answer["secret"].as_str() {
        Some(secret) => out.push_str(&format!(
            "Secret:  {secret}\n         (generated; give it to the webhook as its secret, GitLab's \"secret token\")\n"
        )),
        None => out.push_str("Secret:  the one you gave\n"),
    }
    if let Some(key) = answer["deploy_key"].as_str() {
        out.push_str("Deploy key (add it to the repository, read-only):\n");
        out.push_str(key);
        out.push('\n');
    }
    out
}

async fn connect(
    target: &AppArgs,
    repo: &str,
    branch: &str,
    secret: Option<String>,
    json: bool,
) -> Result<()> {
    let (client, app) = for_app(target)?;
    let mut body = json!({ "repo": repo, "branch": branch });
    if let Some(secret) = secret {
        body["secret"] = json!(secret);
    }
    if !json {
        out!("Connecting {app} to {repo}... ");
        let _ = std::io::stdout().flush();
    }
    let answer = client
        .call(Call::new(Method::PUT, &app_path(&app, "/connection")).json(body))
        .await;
    if !json {
        outln!("{}", if answer.is_ok() { "done" } else { "failed" });
    }
    let answer = answer?;
    if json {
        output::json(&answer);
    } else {
        out!("{}", connected_text(&app, &answer));
    }
    Ok(())
}

async fn disconnect(target: &AppArgs) -> Result<()> {
    let (client, app) = for_app(target)?;
    out!("Disconnecting {app}... ");
    let _ = std::io::stdout().flush();
    let result = client.delete(&app_path(&app, "/connection")).await;
    outln!("{}", if result.is_ok() { "done" } else { "failed" });
    result?;
    Ok(())
}

/// The rows of `empire builds`, the header first.
pub fn build_rows(list: &[Value]) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "ID".to_string(),
        "Status".into(),
        "Commit".into(),
        "Ref".into(),
        "Pusher".into(),
        "Release".into(),
        "Created".into(),
    ]];
    for build in list {
        let reference = text(build, "ref");
        rows.push(vec![
            build["id"].to_string(),
            text(build, "status"),
            text(build, "commit").chars().take(7).collect(),
            reference
                .strip_prefix("refs/heads/")
                .unwrap_or(&reference)
                .to_string(),
            format!("{} ({})", text(build, "pusher"), text(build, "source")),
            build["release"]["version"]
                .as_u64()
                .map_or("-".to_string(), |v| format!("v{v}")),
            build["created_at"]
                .as_str()
                .map(output::ago)
                .unwrap_or_default(),
        ]);
    }
    rows
}

async fn builds(target: &AppArgs, json: bool) -> Result<()> {
    let (client, app) = for_app(target)?;
    let list = client.get(&app_path(&app, "/builds")).await?;
    if json {
        output::json(&list);
        return Ok(());
    }
    let list = list.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        outln!(
            "{app} has no builds yet: connect it with `empire apps:connect` and push to the repository."
        );
        return Ok(());
    }
    header(&format!("{app} Builds"));
    out!("{}", table(&build_rows(&list)));
    Ok(())
}

async fn logs(target: &AppArgs, build: Option<u64>, follow: bool) -> Result<()> {
    let (client, app) = for_app(target)?;
    let id = build.map_or("latest".to_string(), |n| n.to_string());
    let path = app_path(
        &app,
        &format!(
            "/builds/{id}/log{}",
            if follow { "?follow=true" } else { "" }
        ),
    );
    let response = client.checked(Call::new(Method::GET, &path)).await?;
    if !stream_to_stdout(&mut response.into_body()).await? {
        return Ok(()); // the reader went away (`| head`)
    }
    if follow {
        let build = client
            .get(&app_path(&app, &format!("/builds/{id}")))
            .await?;
        let status = text(&build, "status");
        match build["release"]["version"].as_u64() {
            Some(v) => outln!("Build {} {status}: v{v}", build["id"]),
            None => outln!("Build {} {status}", build["id"]),
        }
        if status == "failed" || status == "superseded" {
            anyhow::bail!("{}", text(&build, "failure"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_a_connection_like_heroku() {
        let answer = json!({
            "repo_url": "git@github.com:acme/shop.git",
            "branch": "main",
            "webhook_urls": {
                "github": "http://gw:8080/webhooks/github/shop",
                "gitlab": "http://gw:8080/webhooks/gitlab/shop",
                "gitea": "http://gw:8080/webhooks/gitea/shop"
            },
            "secret": "abc123",
            "deploy_key": "ssh-ed25519 AAAA empire deploy key for shop"
        });
        let text = connected_text("shop", &answer);
        assert!(
            text.starts_with("Pushes to main of git@github.com:acme/shop.git now deploy shop.\n")
        );
        assert!(
            text.contains("  GitHub  http://gw:8080/webhooks/github/shop\n"),
            "{text}"
        );
        assert!(
            text.contains("  Gitea   http://gw:8080/webhooks/gitea/shop\n"),
            "{text}"
        );
        assert!(text.contains("Secret:  abc123\n"), "{text}");
        assert!(
            text.ends_with("ssh-ed25519 AAAA empire deploy key for shop\n"),
            "{text}"
        );
    }

    #[test]
    fn lists_builds_in_columns() {
        let rows = build_rows(&[json!({
            "id": 7, "status": "succeeded", "commit": "0123456789abcdef",
            "ref": "refs/heads/main", "pusher": "octocat", "source": "github",
            "release": {"version": 3}, "created_at": null
        })]);
        assert_eq!(
            rows[1][..6],
            [
                "7",
                "succeeded",
                "0123456",
                "main",
                "octocat (github)",
                "v3"
            ]
        );
    }
}
