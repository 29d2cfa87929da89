//! [`crate::store::WebhookStore`] on PostgreSQL.
//!
//! Claims take due deliveries `FOR UPDATE SKIP LOCKED` and move them past a lease in the
//! same statement, so gateways sharing the database never claim one delivery twice.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use serde_json::{Map, Value};
use tokio_postgres::Row;
use tokio_postgres::types::Json;
use uuid::Uuid;

use super::{
    ATTEMPTS, Fail, PgResult, PostgresStore, execute, query, query_one, query_opt, rows, seconds,
    step, unsigned, without_nul,
};
use crate::app::AppName;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::store::WebhookStore;
use crate::store::webhooks::{
    AttemptResult, ClaimedDelivery, Delivery, DeliveryAttempt, DeliveryStatus, NewAttempt,
    NewWebhook, Webhook, WebhookFormat, response_excerpt, validate,
};

const WEBHOOK_COLUMNS: &str = "id, app_name, url, events, format, secret, creator, created_at";

fn webhook_row(row: &Row) -> PgResult<Webhook> {
    let app: Option<&str> = row.try_get(1)?;
    let Json(events): Json<Vec<String>> = row.try_get(3)?;
    let format: &str = row.try_get(4)?;
    Ok(Webhook {
        id: row.try_get(0)?,
        app: app.map(AppName::new).transpose()?,
        url: row.try_get(2)?,
        events,
        format: format.parse::<WebhookFormat>()?,
        secret: row.try_get(5)?,
        creator: row.try_get(6)?,
        created_at: row.try_get(7)?,
    })
}

const DELIVERY_COLUMNS: &str =
    "d.id, d.webhook_id, d.event, d.payload, d.status, d.attempts, d.next_attempt_at, d.created_at";

fn delivery_row(row: &Row) -> PgResult<Delivery> {
    let Json(payload): Json<Value> = row.try_get(3)?;
    let status: &str = row.try_get(4)?;
    Ok(Delivery {
        id: row.try_get(0)?,
        webhook: row.try_get(1)?,
        event: row.try_get(2)?,
        payload,
        status: DeliveryStatus::parse(status)?,
        attempts: unsigned(row, 5)?,
        next_attempt_at: row.try_get(6)?,
        created_at: row.try_get(7)?,
    })
}

fn attempt_row(row: &Row) -> PgResult<DeliveryAttempt> {
    let status: Option<i32> = row.try_get(3)?;
    let duration: i64 = row.try_get(5)?;
    Ok(DeliveryAttempt {
        delivery: row.try_get(0)?,
        number: unsigned(row, 1)?,
        attempted_at: row.try_get(2)?,
        status_code: status.and_then(|s| u16::try_from(s).ok()),
        error: row.try_get(4)?,
        duration_ms: u64::try_from(duration).unwrap_or_default(),
        response: row.try_get(6)?,
    })
}

/// Event data with NUL characters replaced: PostgreSQL's JSONB cannot hold `\u0000`.
pub(super) fn without_nul_json(data: &Map<String, Value>) -> Map<String, Value> {
    fn clean(value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(without_nul(s).into_owned()),
            Value::Array(items) => Value::Array(items.iter().map(clean).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (without_nul(k).into_owned(), clean(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    data.iter()
        .map(|(k, v)| (without_nul(k).into_owned(), clean(v)))
        .collect()
}

async fn webhook_by_id(c: &impl GenericClient, id: i64) -> PgResult<Webhook> {
    match query_opt(
        c,
        &format!("SELECT {WEBHOOK_COLUMNS} FROM outgoing_webhooks WHERE id = $1"),
        &[&id],
    )
    .await?
    {
        Some(row) => webhook_row(&row),
        None => Err(Error::not_found("webhook", id.to_string()).into()),
    }
}

async fn delivery_by_id(c: &impl GenericClient, id: &str) -> PgResult<Delivery> {
    match query_opt(
        c,
        &format!("SELECT {DELIVERY_COLUMNS} FROM outgoing_deliveries d WHERE d.id = $1"),
        &[&id],
    )
    .await?
    {
        Some(row) => delivery_row(&row),
        None => Err(Error::not_found("delivery", id).into()),
    }
}

/// Queues a delivery of `event` to every webhook that wants it, inside the transaction
/// that recorded the event. Returns how many were queued.
pub(super) async fn enqueue(c: &impl GenericClient, event: &Event) -> PgResult<usize> {
    let Some(app) = &event.app else {
        return Ok(0);
    };
    let found = query(
        c,
        &format!(
            "SELECT {WEBHOOK_COLUMNS} FROM outgoing_webhooks \
             WHERE app_name = $1 OR app_name IS NULL ORDER BY id"
        ),
        &[&app.as_str()],
    )
    .await?;
    let webhooks = rows(found, webhook_row)?;
    let wanted: Vec<&Webhook> = webhooks.iter().filter(|w| w.wants(event)).collect();
    if wanted.is_empty() {
        return Ok(0);
    }
    let payload = serde_json::to_value(event)
        .map_err(|e| Error::Store(format!("cannot encode event: {e}")))?;
    for webhook in &wanted {
        execute(
            c,
            "INSERT INTO outgoing_deliveries (id, webhook_id, event_id, event, payload, status, \
             attempts, next_attempt_at) VALUES ($1, $2, $3, $4, $5, 'pending', 0, now())",
            &[
                &Uuid::new_v4().to_string(),
                &webhook.id,
                &event.id,
                &event.action,
                &Json(&payload),
            ],
        )
        .await?;
    }
    Ok(wanted.len())
}

#[async_trait]
impl WebhookStore for PostgresStore {
    async fn create_webhook(&self, webhook: NewWebhook) -> Result<Webhook> {
        validate(&webhook)?;
        let app = webhook.app.as_ref().map(AppName::as_str);
        let url = webhook.url.trim();
        let format = webhook.format.as_str();
        read!(self, |c| {
            let row = query_one(
                &c,
                &format!(
                    "INSERT INTO outgoing_webhooks (app_name, url, events, format, secret, creator) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING {WEBHOOK_COLUMNS}"
                ),
                &[
                    &app,
                    &url,
                    &Json(&webhook.events),
                    &format,
                    &webhook.secret,
                    &webhook.creator,
                ],
            )
            .await?;
            webhook_row(&row)
        })
    }

    async fn webhook(&self, id: i64) -> Result<Webhook> {
        read!(self, |c| { webhook_by_id(&c, id).await })
    }

    async fn webhooks(&self, app: Option<&AppName>) -> Result<Vec<Webhook>> {
        read!(self, |c| {
            let found =
                match app {
                    Some(app) => query(
                        &c,
                        &format!(
                            "SELECT {WEBHOOK_COLUMNS} FROM outgoing_webhooks WHERE app_name = $1 \
                             ORDER BY id"
                        ),
                        &[&app.as_str()],
                    )
                    .await?,
                    None => {
                        query(
                            &c,
                            &format!("SELECT {WEBHOOK_COLUMNS} FROM outgoing_webhooks ORDER BY id"),
                            &[],
                        )
                        .await?
                    }
                };
            rows(found, webhook_row)
        })
    }

    async fn delete_webhook(&self, id: i64) -> Result<()> {
        read!(self, |c| {
            if execute(&c, "DELETE FROM outgoing_webhooks WHERE id = $1", &[&id]).await? == 0 {
                return Err(Fail::Core(Error::not_found("webhook", id.to_string())));
            }
            Ok(())
        })
    }

    async fn deliveries(&self, webhook: i64, limit: u32) -> Result<Vec<Delivery>> {
        let limit = i64::from(limit);
        read!(self, |c| {
            webhook_by_id(&c, webhook).await?;
            let found = query(
                &c,
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM outgoing_deliveries d \
                     WHERE d.webhook_id = $1 ORDER BY d.seq DESC LIMIT $2"
                ),
                &[&webhook, &limit],
            )
            .await?;
            rows(found, delivery_row)
        })
    }

    async fn delivery(&self, id: &str) -> Result<Delivery> {
        read!(self, |c| { delivery_by_id(&c, id).await })
    }

    async fn delivery_attempts(&self, delivery: &str) -> Result<Vec<DeliveryAttempt>> {
        read!(self, |c| {
            delivery_by_id(&c, delivery).await?;
            let found = query(
                &c,
                "SELECT delivery_id, number, attempted_at, status_code, error, duration_ms, \
                 response FROM outgoing_attempts WHERE delivery_id = $1 ORDER BY number",
                &[&delivery],
            )
            .await?;
            rows(found, attempt_row)
        })
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>> {
        let limit = i64::from(limit);
        let lease = seconds(lease);
        transaction!(self, |tx| {
            let found = query(
                &tx,
                &format!(
                    "UPDATE outgoing_deliveries d \
                     SET next_attempt_at = now() + make_interval(secs => $2), claimed_by = $1 \
                     WHERE d.seq IN (SELECT seq FROM outgoing_deliveries \
                         WHERE status = 'pending' AND next_attempt_at <= now() \
                         ORDER BY next_attempt_at, seq LIMIT $3 FOR UPDATE SKIP LOCKED) \
                     RETURNING {DELIVERY_COLUMNS}"
                ),
                &[&owner, &lease, &limit],
            )
            .await?;
            let mut claimed = Vec::with_capacity(found.len());
            for delivery in rows(found, delivery_row)? {
                let webhook = webhook_by_id(&tx, delivery.webhook).await?;
                claimed.push(ClaimedDelivery { delivery, webhook });
            }
            claimed.sort_by_key(|c| c.delivery.created_at);
            Ok(claimed)
        })
    }

    async fn release_claims(&self, owner: &str) -> Result<u64> {
        read!(self, |c| {
            execute(
                &c,
                "UPDATE outgoing_deliveries SET next_attempt_at = now(), claimed_by = NULL \
                 WHERE status = 'pending' AND claimed_by = $1 AND next_attempt_at > now()",
                &[&owner],
            )
            .await
        })
    }

    async fn record_attempt(
        &self,
        delivery: &str,
        attempt: NewAttempt,
        result: AttemptResult,
    ) -> Result<Delivery> {
        let status_code = attempt.status_code.map(i32::from);
        let error = attempt.error.as_deref().map(without_nul);
        let response = without_nul(response_excerpt(&attempt.response)).into_owned();
        let duration = i64::try_from(attempt.duration.as_millis()).unwrap_or(i64::MAX);
        let (status, retry_after) = match result {
            AttemptResult::Delivered => (DeliveryStatus::Delivered, None),
            AttemptResult::Failed => (DeliveryStatus::Failed, None),
            AttemptResult::Retry(after) => (DeliveryStatus::Pending, Some(seconds(after))),
        };
        transaction!(self, |tx| {
            let row = query_opt(
                &tx,
                "SELECT attempts FROM outgoing_deliveries WHERE id = $1 FOR UPDATE",
                &[&delivery],
            )
            .await?
            .ok_or_else(|| Fail::Core(Error::not_found("delivery", delivery)))?;
            let number = unsigned(&row, 0)? + 1;
            let number = i32::try_from(number)
                .map_err(|_| Fail::Core(Error::Store("too many attempts".into())))?;
            execute(
                &tx,
                "INSERT INTO outgoing_attempts (delivery_id, number, status_code, error, \
                 duration_ms, response) VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &delivery,
                    &number,
                    &status_code,
                    &error.as_deref(),
                    &duration,
                    &response,
                ],
            )
            .await?;
            execute(
                &tx,
                "UPDATE outgoing_deliveries SET attempts = $2, status = $3, claimed_by = NULL, \
                 next_attempt_at = CASE WHEN $4::float8 IS NULL THEN NULL \
                     ELSE now() + make_interval(secs => $4::float8) END \
                 WHERE id = $1",
                &[&delivery, &number, &status.as_str(), &retry_after],
            )
            .await?;
            delivery_by_id(&tx, delivery).await
        })
    }
}
