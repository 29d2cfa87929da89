//! Outgoing webhooks: subscriptions and the deliveries of events to them.
//!
//! Recording an event ([`super::Store::record_event`]) queues, in the same transaction, one
//! [`Delivery`] per webhook whose patterns match it (app webhooks of the event's app, and
//! the webhooks of all apps). A dispatcher claims due deliveries
//! ([`WebhookStore::claim_deliveries`]) with a short lease, so one delivery is attempted
//! by one gateway at a time and a delivery claimed by a gateway that died becomes due
//! again when its lease lapses; it records every attempt
//! ([`WebhookStore::record_attempt`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::app::AppName;
use crate::error::{Error, Result};
use crate::event::{Event, any_pattern_matches};

/// How a webhook's body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The event as JSON.
    #[default]
    Json,
    /// `{"text": "…"}` a person can read (Slack's incoming webhooks).
    Slack,
}

impl WebhookFormat {
    /// `json` or `slack`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Json => "json",
            WebhookFormat::Slack => "slack",
        }
    }
}

impl fmt::Display for WebhookFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WebhookFormat {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "json" => Ok(WebhookFormat::Json),
            "slack" => Ok(WebhookFormat::Slack),
            other => Err(Error::invalid(
                "format",
                format!("{other:?} is not a webhook format: use json or slack"),
            )),
        }
    }
}

/// An outgoing webhook: where to post which events of which app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// Store id.
    pub id: i64,
    /// The app whose events it gets; `None` for every app's.
    pub app: Option<AppName>,
    /// Where events are posted.
    pub url: String,
    /// Event name patterns (`deploy.*`, `scale`, `*`).
    pub events: Vec<String>,
    /// How the body is written.
    pub format: WebhookFormat,
    /// The HMAC-SHA256 key of `X-Empire-Signature`.
    pub secret: String,
    /// Who added it.
    pub creator: String,
    /// When it was added.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Webhook {
    /// Whether this webhook gets `event`: its app (or every app) and a matching pattern.
    /// Events of no app go to no webhook.
    pub fn wants(&self, event: &Event) -> bool {
        let Some(app) = &event.app else {
            return false;
        };
        self.app.as_ref().is_none_or(|mine| mine == app)
            && any_pattern_matches(&self.events, &event.action)
    }
}

/// A webhook to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhook {
    /// The app, or `None` for every app.
    pub app: Option<AppName>,
    /// Where to post.
    pub url: String,
    /// Event name patterns; at least one.
    pub events: Vec<String>,
    /// The body's format.
    pub format: WebhookFormat,
    /// The signing secret.
    pub secret: String,
    /// Who adds it.
    pub creator: String,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not delivered yet; attempted when due.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up: a final answer or too many attempts.
    Failed,
}

impl DeliveryStatus {
    /// `pending`, `delivered` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// Parses what [`DeliveryStatus::as_str`] writes.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "pending" => Ok(DeliveryStatus::Pending),
            "delivered" => Ok(DeliveryStatus::Delivered),
            "failed" => Ok(DeliveryStatus::Failed),
            other => Err(Error::Store(format!("unknown delivery status {other:?}"))),
        }
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event on its way to one webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The delivery id (a UUID), sent as `X-Empire-Delivery`.
    pub id: String,
    /// The webhook it goes to.
    pub webhook: i64,
    /// The event's action (`deploy.succeeded`), sent as `X-Empire-Event`.
    pub event: String,
    /// The event as JSON (an [`Event`]).
    pub payload: Value,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// How many attempts were made.
    pub attempts: u32,
    /// When it is due next, while pending.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// When it was queued.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// One attempt to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// The delivery.
    pub delivery: String,
    /// 1 for the first attempt.
    pub number: u32,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub attempted_at: OffsetDateTime,
    /// The HTTP status of the answer, when there was one.
    pub status_code: Option<u16>,
    /// Why there was no usable answer (timeout, connection refused), if so.
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// The start of the answer's body (at most [`RESPONSE_EXCERPT_BYTES`]).
    pub response: String,
}

/// How much of a receiver's answer an attempt keeps.
pub const RESPONSE_EXCERPT_BYTES: usize = 1024;

/// An attempt just made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAttempt {
    /// The HTTP status of the answer, if any.
    pub status_code: Option<u16>,
    /// The error when there was no answer.
    pub error: Option<String>,
    /// How long it took.
    pub duration: Duration,
    /// The answer's body; the store keeps at most [`RESPONSE_EXCERPT_BYTES`] of it.
    pub response: String,
}

/// What becomes of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// It arrived.
    Delivered,
    /// Try again after this long.
    Retry(Duration),
    /// Give up.
    Failed,
}

/// A delivery claimed for an attempt, with its webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    /// The delivery.
    pub delivery: Delivery,
    /// Where it goes.
    pub webhook: Webhook,
}

/// A response excerpt cut to at most [`RESPONSE_EXCERPT_BYTES`] on a character boundary.
pub fn response_excerpt(text: &str) -> &str {
    if text.len() <= RESPONSE_EXCERPT_BYTES {
        return text;
    }
    let mut end = RESPONSE_EXCERPT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Checks a webhook before it is stored: an http(s) URL, at least one pattern of event
/// name characters (`a-z 0-9 . _ - *`), a secret.
pub(crate) fn validate(webhook: &NewWebhook) -> Result<()> {
    let url = webhook.url.trim();
    if !(url.starts_with("http://") || url.starts_with("https://"))
        || url.len() <= "https://".len()
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::invalid(
            "url",
            format!("{url:?} is not an http:// or https:// URL"),
        ));
    }
    if webhook.events.is_empty() {
        return Err(Error::invalid("events", "give at least one event pattern"));
    }
    for pattern in &webhook.events {
        let valid = !pattern.is_empty()
            && pattern.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '*')
            });
        if !valid {
            return Err(Error::invalid(
                "events",
                format!("{pattern:?} is not an event pattern (e.g. deploy.* or scale)"),
            ));
        }
    }
    if webhook.secret.is_empty() || webhook.secret.contains('\0') {
        return Err(Error::invalid("secret", "must not be empty"));
    }
    if webhook.creator.trim().is_empty() {
        return Err(Error::invalid("webhook creator", "must not be empty"));
    }
    Ok(())
}

/// The payload of an event's deliveries.
pub(crate) fn payload(event: &Event) -> Result<String> {
    serde_json::to_string(event).map_err(|e| Error::Store(format!("cannot encode event: {e}")))
}

/// Persistent state of webhook subscriptions and their deliveries.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Adds a webhook (checked: URL, patterns, secret).
    async fn create_webhook(&self, webhook: NewWebhook) -> Result<Webhook>;
    /// One webhook; not found otherwise.
    async fn webhook(&self, id: i64) -> Result<Webhook>;
    /// One app's webhooks (not those of every app), or with `None` every webhook, by id.
    async fn webhooks(&self, app: Option<&AppName>) -> Result<Vec<Webhook>>;
    /// Removes a webhook with its deliveries and their attempts.
    async fn delete_webhook(&self, id: i64) -> Result<()>;

    /// A webhook's deliveries, newest first, at most `limit`.
    async fn deliveries(&self, webhook: i64, limit: u32) -> Result<Vec<Delivery>>;
    /// One delivery.
    async fn delivery(&self, id: &str) -> Result<Delivery>;
    /// A delivery's attempts, first first.
    async fn delivery_attempts(&self, delivery: &str) -> Result<Vec<DeliveryAttempt>>;

    /// Claims up to `limit` pending deliveries that are due, oldest due first, for `owner`
    /// for `lease`: until the lease lapses no other claim returns them. Each comes with
    /// its webhook.
    async fn claim_deliveries(
        &self,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>>;
    /// Makes the pending deliveries `owner` claimed due at once (a restarted gateway takes
    /// back what it held when it stopped). Returns how many.
    async fn release_claims(&self, owner: &str) -> Result<u64>;
    /// Records an attempt of a delivery and what becomes of it; returns the delivery as
    /// it now stands.
    async fn record_attempt(
        &self,
        delivery: &str,
        attempt: NewAttempt,
        result: AttemptResult,
    ) -> Result<Delivery>;
}
