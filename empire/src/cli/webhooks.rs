//! `empire webhooks`, `webhooks:add`, `webhooks:remove` and `webhooks:deliveries`:
//! outgoing webhooks that tell other systems (chat, tooling) what happened to an app.

use std::io::Write;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{ApiClient, segment};
use super::output::{self, header, table, text};
use super::{AppArgs, JsonArgs, session};

/// Which webhooks a command is about: one app's (`-a`, else the `empire` remote's) or
/// every app's (`--all`).
#[derive(Debug, Clone, Args)]
pub struct Scope {
    #[command(flatten)]
    target: AppArgs,
    /// Every app's events instead of one app's (admins).
    #[arg(long, conflicts_with = "app")]
    all: bool,
}

/// The outgoing webhook commands.
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// List outgoing webhooks: the app's, or with --all every one you may see.
    Webhooks {
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        output: JsonArgs,
    },
    /// Post the app's events (or with --all every app's) to a URL; prints the signing
    /// secret, generated when --secret is not given.
    #[command(name = "webhooks:add")]
    WebhooksAdd {
        #[command(flatten)]
        scope: Scope,
        /// Where to post (`https://chat.example.com/hooks/…`).
        url: String,
        /// Event name patterns, comma-separated (`deploy.*,release.*`; default all):
        /// app.created, app.destroyed, deploy.started, deploy.succeeded, deploy.failed,
        /// release.created, rollback, config.changed, scale.
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        /// `json` (the event) or `slack` (`{"text": …}` for people).
        #[arg(long, default_value = "json")]
        format: String,
        /// The HMAC-SHA256 key of `X-Empire-Signature` (default: a random one).
        #[arg(long)]
        secret: Option<String>,
        #[command(flatten)]
        output: JsonArgs,
    },
    /// Remove an outgoing webhook with its deliveries.
    #[command(name = "webhooks:remove")]
    WebhooksRemove {
        /// The webhook id (`empire webhooks` shows it).
        id: String,
    },
    /// Show a webhook's deliveries, newest first, with every attempt.
    #[command(name = "webhooks:deliveries")]
    WebhooksDeliveries {
        /// The webhook id.
        id: String,
        /// How many deliveries.
        #[arg(short = 'n', long = "num", default_value_t = 20)]
        num: u32,
        #[command(flatten)]
        output: JsonArgs,
    },
}

/// Runs a webhook command.
pub async fn run(command: WebhookCommand) -> Result<()> {
    match command {
        WebhookCommand::Webhooks { scope, output } => list(&scope, output.json).await,
        WebhookCommand::WebhooksAdd {
            scope,
            url,
            events,
            format,
            secret,
            output,
        } => add(&scope, &url, events, &format, secret, output.json).await,
        WebhookCommand::WebhooksRemove { id } => remove(&id).await,
        WebhookCommand::WebhooksDeliveries { id, num, output } => {
            deliveries(&id, num, output.json).await
        }
    }
}

/// The API path of the scope's webhooks, and what to call them.
fn scope_path(scope: &Scope) -> Result<(String, String)> {
    if scope.all {
        return Ok(("/outgoing-webhooks".into(), "every app".into()));
    }
    let app = session::app(scope.target.app.as_deref(), &scope.target.remote)?;
    Ok((format!("/apps/{}/webhooks", segment(&app)), app))
}

fn client() -> Result<ApiClient> {
    session::client()
}

fn id_of(text: &str) -> Result<String> {
    let id = text.trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("{text:?} is not a webhook id: `empire webhooks` lists them");
    }
    Ok(id.to_string())
}

fn events_text(webhook: &Value) -> String {
    webhook["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn app_text(webhook: &Value) -> String {
    webhook["app"]["name"]
        .as_str()
        .unwrap_or("(every app)")
        .to_string()
}

async fn list(scope: &Scope, json: bool) -> Result<()> {
    let client = client()?;
    let (path, name) = scope_path(scope)?;
    let list = client.get(&path).await?;
    if json {
        output::json(&list);
        return Ok(());
    }
    let items = list.as_array().cloned().unwrap_or_default();
    header(&format!("Webhooks of {name}"));
    if items.is_empty() {
        outln!("No webhooks. Add one: empire webhooks:add -a <app> <url>");
        return Ok(());
    }
    let mut rows = vec![vec![
        "ID".to_string(),
        "App".to_string(),
        "URL".to_string(),
        "Events".to_string(),
        "Format".to_string(),
        "Added".to_string(),
    ]];
    for webhook in &items {
        rows.push(vec![
            text(webhook, "id"),
            app_text(webhook),
            text(webhook, "url"),
            events_text(webhook),
            text(webhook, "format"),
            webhook["created_at"]
                .as_str()
                .map(output::ago)
                .unwrap_or_default(),
        ]);
    }
    out!("{}", table(&rows));
    Ok(())
}

async fn add(
    scope: &Scope,
    url: &str,
    events: Vec<String>,
    format: &str,
    secret: Option<String>,
    json: bool,
) -> Result<()> {
    let client = client()?;
    let (path, name) = scope_path(scope)?;
    let events: Vec<String> = events
        .into_iter()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    let mut body = json!({ "url": url, "format": format });
    if !events.is_empty() {
        body["events"] = json!(events);
    }
    if let Some(secret) = secret {
        body["secret"] = Value::String(secret);
    }
    if !json {
        out!("Adding a webhook of {name}... ");
        let _ = std::io::stdout().flush();
    }
    let added = client.post(&path, body).await;
    if !json {
        outln!("{}", if added.is_ok() { "done" } else { "failed" });
    }
    let added = added?;
    if json {
        output::json(&added);
        return Ok(());
    }
    outln!(
        "Webhook {} posts {} of {} to {} as {}",
        text(&added, "id"),
        events_text(&added),
        app_text(&added),
        text(&added, "url"),
        text(&added, "format")
    );
    outln!("Secret: {}", text(&added, "secret"));
    outln!(
        "Each POST carries X-Empire-Signature: sha256=<hex HMAC-SHA256 of the body with this \
         secret>; it is shown only now."
    );
    Ok(())
}

async fn remove(id: &str) -> Result<()> {
    let client = client()?;
    let id = id_of(id)?;
    out!("Removing webhook {id}... ");
    let _ = std::io::stdout().flush();
    let removed = client.delete(&format!("/outgoing-webhooks/{id}")).await;
    outln!("{}", if removed.is_ok() { "done" } else { "failed" });
    removed.map(|_| ())
}

async fn deliveries(id: &str, num: u32, json: bool) -> Result<()> {
    let client = client()?;
    let id = id_of(id)?;
    let list = client
        .get(&format!("/outgoing-webhooks/{id}/deliveries?limit={num}"))
        .await
        .with_context(|| format!("reading the deliveries of webhook {id}"))?;
    if json {
        output::json(&list);
        return Ok(());
    }
    let items = list.as_array().cloned().unwrap_or_default();
    header(&format!("Deliveries of webhook {id}"));
    if items.is_empty() {
        outln!("No deliveries yet.");
        return Ok(());
    }
    for delivery in &items {
        let next = match delivery["next_attempt_at"].as_str() {
            Some(at) if text(delivery, "status") == "pending" => format!(", next attempt {at}"),
            _ => String::new(),
        };
        outln!(
            "{}  {}  {} after {} attempt(s){}  ({})",
            text(delivery, "id"),
            text(delivery, "event"),
            text(delivery, "status"),
            delivery["attempt_count"],
            next,
            delivery["created_at"]
                .as_str()
                .map(output::ago)
                .unwrap_or_default()
        );
        for attempt in delivery["attempts"].as_array().into_iter().flatten() {
            let answer = match attempt["status_code"].as_u64() {
                Some(code) => format!("HTTP {code}"),
                None => text(attempt, "error"),
            };
            let response = text(attempt, "response");
            let response = response.lines().next().unwrap_or_default();
            outln!(
                "    #{} {}  {} in {}ms{}",
                attempt["number"],
                text(attempt, "attempted_at"),
                answer,
                attempt["duration_ms"],
                if response.is_empty() {
                    String::new()
                } else {
                    format!("  {response}")
                }
            );
        }
    }
    Ok(())
}
