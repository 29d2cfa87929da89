//! The SSH commands of outgoing webhooks: `webhooks <app>|--all`,
//! `webhooks:add <app>|--all URL [--events E,…] [--format json|slack] [--secret S]`,
//! `webhooks:remove ID` and `webhooks:deliveries ID`.
//!
//! A child of [`crate::admin`], whose parsing, output and dispatch it shares.

use empire_core::Error as CoreError;
use empire_core::app::AppName;
use empire_core::service::WebhookRequest;
use empire_core::store::{Webhook, WebhookFormat};

use super::{Args, Exec, ParseError, table, usage_of, when};

/// One of the webhook commands, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhooksCommand {
    /// `webhooks <app>` or `webhooks --all` (`None`).
    List {
        /// The app, or every webhook the user may see.
        app: Option<AppName>,
    },
    /// `webhooks:add <app>|--all URL [--events …] [--format …] [--secret …]`
    Add {
        /// The app, or every app (`--all`).
        app: Option<AppName>,
        /// Where to post.
        url: String,
        /// Event name patterns (none: every event).
        events: Vec<String>,
        /// The body's format.
        format: WebhookFormat,
        /// The signing secret (generated when not given).
        secret: Option<String>,
    },
    /// `webhooks:remove ID`
    Remove {
        /// The webhook.
        id: i64,
    },
    /// `webhooks:deliveries ID`
    Deliveries {
        /// The webhook.
        id: i64,
    },
}

/// `<app>` or `--all`.
fn scope(args: &mut Args<'_>) -> Result<Option<AppName>, ParseError> {
    match args.peek().map(|w| w.text.as_str()) {
        Some("--all") => {
            args.next();
            Ok(None)
        }
        _ => args.app().map(Some),
    }
}

fn id(name: &str, args: &mut Args<'_>) -> Result<i64, ParseError> {
    let text = args.required()?;
    text.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ParseError::Invalid(format!(
            "{text:?} is not a webhook id: usage: {}",
            usage_of(name)
        ))
    })
}

/// Parses the arguments of the webhook command `name`.
pub(super) fn parse(name: &str, args: &mut Args<'_>) -> Result<WebhooksCommand, ParseError> {
    let command = match name {
        "webhooks" => WebhooksCommand::List { app: scope(args)? },
        "webhooks:add" => {
            let app = scope(args)?;
            let url = args.required()?;
            let (mut events, mut format, mut secret) = (Vec::new(), WebhookFormat::Json, None);
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
                    "--events" | "-e" => events.extend(
                        value
                            .split(',')
                            .map(str::trim)
                            .filter(|e| !e.is_empty())
                            .map(str::to_string),
                    ),
                    "--format" | "-f" => {
                        format = value
                            .parse()
                            .map_err(|e: CoreError| ParseError::Invalid(e.to_string()))?;
                    }
                    "--secret" | "-s" => secret = Some(value),
                    other => {
                        return Err(ParseError::Invalid(format!(
                            "unexpected argument {other:?}: usage: {}",
                            usage_of(name)
                        )));
                    }
                }
            }
            WebhooksCommand::Add {
                app,
                url,
                events,
                format,
                secret,
            }
        }
        "webhooks:remove" => WebhooksCommand::Remove {
            id: id(name, args)?,
        },
        "webhooks:deliveries" => WebhooksCommand::Deliveries {
            id: id(name, args)?,
        },
        _ => return Err(ParseError::Unknown(name.to_string())),
    };
    args.done()?;
    Ok(command)
}

/// The rows of a webhooks table, the header first (no secrets).
pub fn webhook_rows(webhooks: &[Webhook]) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "ID".to_string(),
        "APP".into(),
        "URL".into(),
        "EVENTS".into(),
        "FORMAT".into(),
        "ADDED".into(),
    ]];
    for webhook in webhooks {
        rows.push(vec![
            webhook.id.to_string(),
            webhook
                .app
                .as_ref()
                .map_or("(every app)".to_string(), |a| a.to_string()),
            webhook.url.clone(),
            webhook.events.join(","),
            webhook.format.to_string(),
            when(webhook.created_at),
        ]);
    }
    rows
}

impl Exec {
    /// Runs a webhook command; answers the exit status.
    pub(super) async fn webhooks(&self, command: WebhooksCommand) -> Result<u32, CoreError> {
        let platform = &self.platform;
        let actor = &self.actor;
        let out = &self.console;
        match command {
            WebhooksCommand::List { app } => {
                let webhooks = platform.webhooks(actor, app.as_ref()).await?;
                let name = app
                    .as_ref()
                    .map_or("every app".to_string(), |a| a.to_string());
                if webhooks.is_empty() {
                    out.line(&format!("{name} has no webhooks.")).await;
                } else {
                    out.line(&format!("=== Webhooks of {name}")).await;
                    out.out(&table(&webhook_rows(&webhooks))).await;
                }
            }
            WebhooksCommand::Add {
                app,
                url,
                events,
                format,
                secret,
            } => {
                let webhook = platform
                    .add_webhook(
                        actor,
                        WebhookRequest {
                            app,
                            url,
                            events,
                            format,
                            secret,
                        },
                    )
                    .await?;
                let name = webhook
                    .app
                    .as_ref()
                    .map_or("every app".to_string(), |a| a.to_string());
                out.line(&format!(
                    "-----> Webhook {} posts {} of {name} to {} as {}",
                    webhook.id,
                    webhook.events.join(","),
                    webhook.url,
                    webhook.format
                ))
                .await;
                out.line(&format!("       Secret: {}", webhook.secret))
                    .await;
                out.line(
                    "       Each POST carries X-Empire-Signature: sha256=<hex HMAC-SHA256 of the \
                     body with this secret>; it is shown only now.",
                )
                .await;
            }
            WebhooksCommand::Remove { id } => {
                let webhook = platform.remove_webhook(actor, id).await?;
                out.line(&format!("-----> Removed webhook {id} ({})", webhook.url))
                    .await;
            }
            WebhooksCommand::Deliveries { id } => {
                let (webhook, reports) = platform.webhook_deliveries(actor, id, 20).await?;
                if reports.is_empty() {
                    out.line(&format!(
                        "webhook {id} ({}) has no deliveries yet.",
                        webhook.url
                    ))
                    .await;
                    return Ok(0);
                }
                out.line(&format!("=== Deliveries of webhook {id} ({})", webhook.url))
                    .await;
                let mut text = String::new();
                for report in &reports {
                    let d = &report.delivery;
                    text.push_str(&format!(
                        "{}  {}  {} after {} attempt(s)  ({})\n",
                        d.id,
                        d.event,
                        d.status,
                        d.attempts,
                        when(d.created_at)
                    ));
                    for attempt in &report.attempts {
                        let answer = match (attempt.status_code, &attempt.error) {
                            (Some(code), _) => format!("HTTP {code}"),
                            (None, Some(error)) => error.clone(),
                            (None, None) => "no answer".to_string(),
                        };
                        text.push_str(&format!(
                            "    #{} {}  {answer} in {}ms\n",
                            attempt.number,
                            when(attempt.attempted_at),
                            attempt.duration_ms
                        ));
                    }
                }
                out.out(&text).await;
            }
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AdminCommand, parse_command};
    use super::*;

    fn parse(line: &str) -> WebhooksCommand {
        match parse_command(line).unwrap() {
            AdminCommand::Webhooks(command) => command,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_the_webhook_commands() {
        let web = AppName::new("web").unwrap();
        assert_eq!(
            parse("webhooks web"),
            WebhooksCommand::List {
                app: Some(web.clone())
            }
        );
        assert_eq!(parse("webhooks --all"), WebhooksCommand::List { app: None });
        assert_eq!(
            parse(
                "webhooks:add web https://chat.example.com/x --events deploy.*,release.* \
                 --format=slack -s 'a secret'"
            ),
            WebhooksCommand::Add {
                app: Some(web.clone()),
                url: "https://chat.example.com/x".into(),
                events: vec!["deploy.*".into(), "release.*".into()],
                format: WebhookFormat::Slack,
                secret: Some("a secret".into()),
            }
        );
        assert_eq!(
            parse("webhooks:add --all http://hooks.internal/"),
            WebhooksCommand::Add {
                app: None,
                url: "http://hooks.internal/".into(),
                events: vec![],
                format: WebhookFormat::Json,
                secret: None,
            }
        );
        assert_eq!(
            parse("webhooks:remove 3"),
            WebhooksCommand::Remove { id: 3 }
        );
        assert_eq!(
            parse("webhooks:deliveries 12"),
            WebhooksCommand::Deliveries { id: 12 }
        );
        for bad in [
            "webhooks",
            "webhooks:add web",
            "webhooks:add web http://x --format xml",
            "webhooks:add web http://x --what y",
            "webhooks:remove",
            "webhooks:remove x",
            "webhooks:deliveries 1 2",
        ] {
            assert!(parse_command(bad).is_err(), "{bad}");
        }
    }
}
