//! [`crate::store::WebhookStore`] on SQLite.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};
use uuid::Uuid;

use super::{SqliteStore, conversion, json_at, ms, now_ms, time_at, to_json};
use crate::app::AppName;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::store::WebhookStore;
use crate::store::webhooks::{
    AttemptResult, ClaimedDelivery, Delivery, DeliveryAttempt, DeliveryStatus, NewAttempt,
    NewWebhook, Webhook, WebhookFormat, payload, response_excerpt, validate,
};

const WEBHOOK_COLUMNS: &str = "id, app_name, url, events, format, secret, creator, created_at";

fn webhook_row(row: &Row<'_>) -> rusqlite::Result<Webhook> {
    let app: Option<String> = row.get(1)?;
    let format: String = row.get(4)?;
    Ok(Webhook {
        id: row.get(0)?,
        app: app
            .map(|name| AppName::new(&name))
            .transpose()
            .map_err(|e| conversion(1, Type::Text, e))?,
        url: row.get(2)?,
        events: json_at(row, 3)?,
        format: format
            .parse::<WebhookFormat>()
            .map_err(|e| conversion(4, Type::Text, e))?,
        secret: row.get(5)?,
        creator: row.get(6)?,
        created_at: time_at(row, 7)?,
    })
}

const DELIVERY_COLUMNS: &str =
    "d.id, d.webhook_id, d.event, d.payload, d.status, d.attempts, d.next_attempt_at, d.created_at";

fn delivery_row(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    let status: String = row.get(4)?;
    let next: Option<i64> = row.get(6)?;
    Ok(Delivery {
        id: row.get(0)?,
        webhook: row.get(1)?,
        event: row.get(2)?,
        payload: json_at(row, 3)?,
        status: DeliveryStatus::parse(&status).map_err(|e| conversion(4, Type::Text, e))?,
        attempts: row.get(5)?,
        next_attempt_at: match next {
            Some(_) => Some(time_at(row, 6)?),
            None => None,
        },
        created_at: time_at(row, 7)?,
    })
}

fn attempt_row(row: &Row<'_>) -> rusqlite::Result<DeliveryAttempt> {
    let duration: i64 = row.get(5)?;
    Ok(DeliveryAttempt {
        delivery: row.get(0)?,
        number: row.get(1)?,
        attempted_at: time_at(row, 2)?,
        status_code: row.get(3)?,
        error: row.get(4)?,
        duration_ms: u64::try_from(duration).unwrap_or_default(),
        response: row.get(6)?,
    })
}

fn webhook_by_id(conn: &Connection, id: i64) -> Result<Webhook> {
    conn.prepare_cached(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM outgoing_webhooks WHERE id = ?1"
    ))?
    .query_row([id], webhook_row)
    .optional()?
    .ok_or_else(|| Error::not_found("webhook", id.to_string()))
}

fn delivery_by_id(conn: &Connection, id: &str) -> Result<Delivery> {
    conn.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM outgoing_deliveries d WHERE d.id = ?1"
    ))?
    .query_row([id], delivery_row)
    .optional()?
    .ok_or_else(|| Error::not_found("delivery", id))
}

/// Queues a delivery of `event` to every webhook that wants it, inside the transaction
/// that recorded the event. Returns how many were queued.
pub(super) fn enqueue(conn: &Connection, event: &Event) -> Result<usize> {
    let Some(app) = &event.app else {
        return Ok(0);
    };
    let webhooks: Vec<Webhook> = conn
        .prepare_cached(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM outgoing_webhooks \
             WHERE app_name = ?1 OR app_name IS NULL ORDER BY id"
        ))?
        .query_map([app.as_str()], webhook_row)?
        .collect::<rusqlite::Result<_>>()?;
    let wanted: Vec<&Webhook> = webhooks.iter().filter(|w| w.wants(event)).collect();
    if wanted.is_empty() {
        return Ok(0);
    }
    let body = payload(event)?;
    let now = now_ms(conn)?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO outgoing_deliveries (id, webhook_id, event_id, event, payload, status, \
         attempts, next_attempt_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6)",
    )?;
    for webhook in &wanted {
        insert.execute(params![
            Uuid::new_v4().to_string(),
            webhook.id,
            event.id,
            event.action,
            body,
            now
        ])?;
    }
    Ok(wanted.len())
}

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn create_webhook(&self, webhook: NewWebhook) -> Result<Webhook> {
        validate(&webhook)?;
        self.write(move |tx| {
            let now = now_ms(tx)?;
            let id: i64 = tx.query_row(
                "INSERT INTO outgoing_webhooks (app_name, url, events, format, secret, creator, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
                params![
                    webhook.app.as_ref().map(AppName::as_str),
                    webhook.url.trim(),
                    to_json(&webhook.events)?,
                    webhook.format.as_str(),
                    webhook.secret,
                    webhook.creator,
                    now
                ],
                |row| row.get(0),
            )?;
            webhook_by_id(tx, id)
        })
        .await
    }

    async fn webhook(&self, id: i64) -> Result<Webhook> {
        self.call(move |conn| webhook_by_id(conn, id)).await
    }

    async fn webhooks(&self, app: Option<&AppName>) -> Result<Vec<Webhook>> {
        let app = app.cloned();
        self.call(move |conn| {
            let found = match app {
                Some(app) => conn
                    .prepare_cached(&format!(
                        "SELECT {WEBHOOK_COLUMNS} FROM outgoing_webhooks WHERE app_name = ?1 ORDER BY id"
                    ))?
                    .query_map([app.as_str()], webhook_row)?
                    .collect::<rusqlite::Result<_>>()?,
                None => conn
                    .prepare_cached(&format!(
                        "SELECT {WEBHOOK_COLUMNS} FROM outgoing_webhooks ORDER BY id"
                    ))?
                    .query_map([], webhook_row)?
                    .collect::<rusqlite::Result<_>>()?,
            };
            Ok(found)
        })
        .await
    }

    async fn delete_webhook(&self, id: i64) -> Result<()> {
        self.write(move |tx| {
            if tx.execute("DELETE FROM outgoing_webhooks WHERE id = ?1", [id])? == 0 {
                return Err(Error::not_found("webhook", id.to_string()));
            }
            Ok(())
        })
        .await
    }

    async fn deliveries(&self, webhook: i64, limit: u32) -> Result<Vec<Delivery>> {
        self.call(move |conn| {
            webhook_by_id(conn, webhook)?;
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM outgoing_deliveries d \
                     WHERE d.webhook_id = ?1 ORDER BY d.seq DESC LIMIT ?2"
                ))?
                .query_map(params![webhook, limit], delivery_row)?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn delivery(&self, id: &str) -> Result<Delivery> {
        let id = id.to_string();
        self.call(move |conn| delivery_by_id(conn, &id)).await
    }

    async fn delivery_attempts(&self, delivery: &str) -> Result<Vec<DeliveryAttempt>> {
        let delivery = delivery.to_string();
        self.call(move |conn| {
            delivery_by_id(conn, &delivery)?;
            Ok(conn
                .prepare_cached(
                    "SELECT delivery_id, number, attempted_at, status_code, error, duration_ms, \
                     response FROM outgoing_attempts WHERE delivery_id = ?1 ORDER BY number",
                )?
                .query_map([delivery.as_str()], attempt_row)?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>> {
        let owner = owner.to_string();
        self.write(move |tx| {
            let now = now_ms(tx)?;
            // BEGIN IMMEDIATE: no other writer claims between this read and the update.
            let due: Vec<Delivery> = tx
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM outgoing_deliveries d \
                     WHERE d.status = 'pending' AND d.next_attempt_at <= ?1 \
                     ORDER BY d.next_attempt_at, d.seq LIMIT ?2"
                ))?
                .query_map(params![now, limit], delivery_row)?
                .collect::<rusqlite::Result<_>>()?;
            let until = now.saturating_add(ms(lease));
            let mut claimed = Vec::with_capacity(due.len());
            for mut delivery in due {
                tx.prepare_cached(
                    "UPDATE outgoing_deliveries SET next_attempt_at = ?2, claimed_by = ?3 \
                     WHERE id = ?1",
                )?
                .execute(params![delivery.id, until, owner])?;
                delivery.next_attempt_at = Some(
                    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(until) * 1_000_000)
                        .map_err(|e| Error::Store(format!("bad claim time: {e}")))?,
                );
                let webhook = webhook_by_id(tx, delivery.webhook)?;
                claimed.push(ClaimedDelivery { delivery, webhook });
            }
            Ok(claimed)
        })
        .await
    }

    async fn release_claims(&self, owner: &str) -> Result<u64> {
        let owner = owner.to_string();
        self.write(move |tx| {
            let now = now_ms(tx)?;
            let changed = tx.execute(
                "UPDATE outgoing_deliveries SET next_attempt_at = ?2, claimed_by = NULL \
                 WHERE status = 'pending' AND claimed_by = ?1 AND next_attempt_at > ?2",
                params![owner, now],
            )?;
            Ok(changed as u64)
        })
        .await
    }

    async fn record_attempt(
        &self,
        delivery: &str,
        attempt: NewAttempt,
        result: AttemptResult,
    ) -> Result<Delivery> {
        let delivery = delivery.to_string();
        self.write(move |tx| {
            let current = delivery_by_id(tx, &delivery)?;
            let now = now_ms(tx)?;
            let number = current.attempts + 1;
            tx.execute(
                "INSERT INTO outgoing_attempts (delivery_id, number, attempted_at, status_code, \
                 error, duration_ms, response) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    delivery,
                    number,
                    now,
                    attempt.status_code,
                    attempt.error,
                    ms(attempt.duration),
                    response_excerpt(&attempt.response)
                ],
            )?;
            let (status, next) = match result {
                AttemptResult::Delivered => (DeliveryStatus::Delivered, None),
                AttemptResult::Failed => (DeliveryStatus::Failed, None),
                AttemptResult::Retry(after) => {
                    (DeliveryStatus::Pending, Some(now.saturating_add(ms(after))))
                }
            };
            tx.execute(
                "UPDATE outgoing_deliveries SET attempts = ?2, status = ?3, next_attempt_at = ?4, \
                 claimed_by = NULL WHERE id = ?1",
                params![delivery, number, status.as_str(), next],
            )?;
            delivery_by_id(tx, &delivery)
        })
        .await
    }
}
