//! The SSH commands of connected repositories and their webhook builds:
//! `apps:connect <app> --repo URL [--branch B] [--secret S]`, `apps:disconnect <app>`,
//! `builds <app>` and `builds:logs <app> [ID] [-f]`.
//!
//! A child of [`crate::admin`], whose parsing, output and dispatch it shares.

use std::time::Duration;

use empire_core::Error as CoreError;
use empire_core::app::AppName;
use empire_core::push_event::Provider;
use empire_core::service::builds::Connected;
use empire_core::store::Build;

use super::{Args, Exec, Invocation, ParseError, fields, table, usage_of, when};

/// How often `builds:logs -f` looks for new output.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// One of the build commands, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildsCommand {
    /// `apps:connect <app> --repo URL [--branch B] [--secret S]`
    Connect {
        /// The app.
        app: AppName,
        /// The clone URL.
        repo: String,
        /// The branch whose pushes deploy (default `main`).
        branch: Option<String>,
        /// The webhook secret (generated when not given).
        secret: Option<String>,
    },
    /// `apps:disconnect <app>`
    Disconnect {
        /// The app.
        app: AppName,
    },
    /// `builds <app>`
    List {
        /// The app.
        app: AppName,
    },
    /// `builds:logs <app> [ID] [-f]`
    Logs {
        /// The app.
        app: AppName,
        /// The build (default: the newest).
        id: Option<i64>,
        /// Keep printing until the build ends.
        follow: bool,
    },
}

/// Parses the arguments of the build command `name`.
pub(super) fn parse(name: &str, args: &mut Args<'_>) -> Result<BuildsCommand, ParseError> {
    let app = args.app()?;
    Ok(match name {
        "apps:connect" => {
            let (mut repo, mut branch, mut secret) = (None, None, None);
            while let Some(word) = args.next() {
                let (flag, inline) = match word.split_once('=') {
                    Some((flag, value)) if flag.starts_with("--") => (flag, Some(value)),
                    _ => (word, None),
                };
                let value = match inline {
                    Some(value) => value.to_string(),
                    None => args.required()?,
                };
                match flag {
                    "--repo" | "-r" => repo = Some(value),
                    "--branch" | "-b" => branch = Some(value),
                    "--secret" | "-s" => secret = Some(value),
                    other => {
                        return Err(ParseError::Invalid(format!(
                            "unexpected argument {other:?}: usage: {}",
                            usage_of(name)
                        )));
                    }
                }
            }
            let repo = repo.ok_or_else(|| args.usage())?;
            BuildsCommand::Connect {
                app,
                repo,
                branch,
                secret,
            }
        }
        "apps:disconnect" => BuildsCommand::Disconnect { app },
        "builds" => BuildsCommand::List { app },
        "builds:logs" => {
            let (mut id, mut follow) = (None, false);
            while let Some(word) = args.next() {
                match word {
                    "-f" | "--follow" | "-t" | "--tail" => follow = true,
                    text => {
                        let parsed = text.parse::<i64>().ok().filter(|n| *n > 0);
                        match (parsed, id) {
                            (Some(n), None) => id = Some(n),
                            _ => {
                                return Err(ParseError::Invalid(format!(
                                    "unexpected argument {text:?}: usage: {}",
                                    usage_of(name)
                                )));
                            }
                        }
                    }
                }
            }
            BuildsCommand::Logs { app, id, follow }
        }
        _ => return Err(ParseError::Unknown(name.to_string())),
    })
}

/// The lines `apps:connect` prints: where to point the git host's webhook, its secret
/// and the deploy key.
pub fn connected_text(connected: &Connected, urls: &[(Provider, String)]) -> String {
    let connection = &connected.connection;
    let app = &connection.app;
    let mut text = format!(
        "-----> Connected {app} to {} (branch {})\n",
        connection.repo_url, connection.branch
    );
    text.push_str("       Add a push webhook (content type application/json) on the git host:\n");
    if urls.is_empty() {
        for provider in Provider::ALL {
            text.push_str(&format!(
                "         {:<7} http://<gateway>/webhooks/{}/{app}\n",
                provider.title(),
                provider.as_str()
            ));
        }
    } else {
        for (provider, url) in urls {
            text.push_str(&format!("         {:<7} {url}\n", provider.title()));
        }
    }
    if connected.secret_generated {
        text.push_str(&format!(
            "       Secret:  {} (generated; GitLab calls it the secret token)\n",
            connection.secret
        ));
    } else {
        text.push_str("       Secret:  the one you gave\n");
    }
    if let Some(key) = &connection.deploy_key {
        text.push_str("       Add this deploy key (read-only) to the repository:\n");
        text.push_str(&format!("       {}\n", key.public));
    }
    text
}

/// The rows of a builds table, the header first.
pub fn build_rows(builds: &[Build]) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "ID".to_string(),
        "STATUS".into(),
        "COMMIT".into(),
        "REF".into(),
        "PUSHER".into(),
        "RELEASE".into(),
        "CREATED".into(),
    ]];
    for build in builds {
        rows.push(vec![
            build.id.to_string(),
            build.status.to_string(),
            build.commit.chars().take(7).collect(),
            build
                .reference
                .strip_prefix("refs/heads/")
                .unwrap_or(&build.reference)
                .to_string(),
            format!("{} ({})", build.pusher, build.source),
            build.release.map_or("-".to_string(), |v| format!("v{v}")),
            when(build.created_at),
        ]);
    }
    rows
}

impl Exec {
    /// Runs a build command; answers the exit status.
    pub(super) async fn builds(
        &self,
        command: BuildsCommand,
        inv: &mut Invocation,
    ) -> Result<u32, CoreError> {
        let platform = &self.platform;
        let actor = &self.actor;
        let out = &self.console;
        match command {
            BuildsCommand::Connect {
                app,
                repo,
                branch,
                secret,
            } => {
                let connected = platform
                    .connect_app(actor, &app, &repo, branch.as_deref(), secret.as_deref())
                    .await?;
                let urls = platform.webhook_urls(&app, None);
                out.out(&connected_text(&connected, &urls)).await;
            }
            BuildsCommand::Disconnect { app } => {
                let connection = platform.disconnect_app(actor, &app).await?;
                out.line(&format!(
                    "-----> Disconnected {app} from {}",
                    connection.repo_url
                ))
                .await;
                out.line(
                    "       Its webhooks are refused from now on; remove them on the git host.",
                )
                .await;
            }
            BuildsCommand::List { app } => {
                let builds = platform.builds(actor, &app).await?;
                if builds.is_empty() {
                    out.line(&format!(
                        "{app} has no builds yet: connect it with apps:connect and push to the repository."
                    ))
                    .await;
                } else {
                    out.line(&format!("=== {app} Builds")).await;
                    out.out(&table(&build_rows(&builds))).await;
                }
            }
            BuildsCommand::Logs { app, id, follow } => {
                let build = platform.build(actor, &app, id).await?;
                let mut after = 0;
                loop {
                    let (now, chunks) = platform.build_log(actor, &app, build.id, after).await?;
                    for chunk in &chunks {
                        if !out.out(&chunk.text).await {
                            return Ok(0);
                        }
                        after = chunk.seq;
                    }
                    if !follow || now.status.is_finished() {
                        if now.status.is_finished() {
                            let mut pairs = vec![("Status", now.status.to_string())];
                            if let Some(release) = now.release {
                                pairs.push(("Release", format!("v{release}")));
                            }
                            if let Some(failure) = &now.failure {
                                pairs.push(("Failure", failure.clone()));
                            }
                            out.out(&fields(&pairs)).await;
                        }
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(FOLLOW_EVERY) => {}
                        _ = inv.cancel.cancelled() => break,
                    }
                }
            }
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AdminCommand, parse_command};
    use super::*;

    fn parse(line: &str) -> BuildsCommand {
        match parse_command(line).unwrap() {
            AdminCommand::Builds(command) => command,
            other => panic!("{other:?}"),
        }
    }

    fn app(name: &str) -> AppName {
        AppName::new(name).unwrap()
    }

    #[test]
    fn parses_the_build_commands() {
        assert_eq!(
            parse(
                "apps:connect shop --repo https://github.com/acme/shop.git --branch=prod -s 's3cret s'"
            ),
            BuildsCommand::Connect {
                app: app("shop"),
                repo: "https://github.com/acme/shop.git".into(),
                branch: Some("prod".into()),
                secret: Some("s3cret s".into()),
            }
        );
        assert_eq!(
            parse("apps:disconnect shop"),
            BuildsCommand::Disconnect { app: app("shop") }
        );
        assert_eq!(
            parse("builds shop"),
            BuildsCommand::List { app: app("shop") }
        );
        assert_eq!(
            parse("builds:logs shop 12 -f"),
            BuildsCommand::Logs {
                app: app("shop"),
                id: Some(12),
                follow: true
            }
        );
        assert_eq!(
            parse("builds:logs shop"),
            BuildsCommand::Logs {
                app: app("shop"),
                id: None,
                follow: false
            }
        );
        for bad in [
            "apps:connect shop",
            "apps:connect shop --repo",
            "apps:connect shop --repo x --what y",
            "builds:logs shop x",
            "builds:logs shop 1 2",
            "apps:disconnect shop extra",
        ] {
            assert!(parse_command(bad).is_err(), "{bad}");
        }
    }
}
