//! Outgoing webhooks on the service layer: who may add, list and remove them, and what a
//! webhook's deliveries were. App webhooks belong to the app's collaborators; webhooks of
//! every app (`--all`) to admins.

use crate::app::AppName;
use crate::error::{Error, Result};
use crate::service::Platform;
use crate::store::{Delivery, DeliveryAttempt, NewWebhook, Webhook, WebhookFormat};
use crate::user::User;

/// A webhook to add.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookRequest {
    /// The app, or `None` for every app (admins only).
    pub app: Option<AppName>,
    /// Where to post.
    pub url: String,
    /// Event name patterns; none means every event (`*`).
    pub events: Vec<String>,
    /// The body's format.
    pub format: WebhookFormat,
    /// The signing secret; a random one when `None`.
    pub secret: Option<String>,
}

/// A delivery with its attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The delivery.
    pub delivery: Delivery,
    /// Its attempts, first first.
    pub attempts: Vec<DeliveryAttempt>,
}

/// How many deliveries `webhooks:deliveries` shows at most.
pub const MAX_DELIVERIES: u32 = 100;

impl Platform {
    /// Checks that `actor` may see and change `webhook`: its app's collaborators, or
    /// admins (the only ones for webhooks of every app). Others are told it does not exist.
    async fn authorize_webhook(&self, actor: &User, webhook: &Webhook) -> Result<()> {
        if actor.admin {
            return Ok(());
        }
        let allowed = match &webhook.app {
            Some(app) => self.store.is_collaborator(app, &actor.name).await?,
            None => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(Error::not_found("webhook", webhook.id.to_string()))
        }
    }

    /// One app's webhooks, or with `None` every webhook the actor may see (admins: all of
    /// them; others: those of their apps).
    pub async fn webhooks(&self, actor: &User, app: Option<&AppName>) -> Result<Vec<Webhook>> {
        if let Some(app) = app {
            self.authorize(actor, app).await?;
            return self.store.webhooks(Some(app)).await;
        }
        let all = self.store.webhooks(None).await?;
        if actor.admin {
            return Ok(all);
        }
        let mine: Vec<AppName> = self
            .store
            .apps_for(actor)
            .await?
            .into_iter()
            .map(|a| a.name)
            .collect();
        Ok(all
            .into_iter()
            .filter(|w| w.app.as_ref().is_some_and(|a| mine.contains(a)))
            .collect())
    }

    /// Adds a webhook; the answer holds its secret (generated when none was given), the
    /// only time it is shown.
    pub async fn add_webhook(&self, actor: &User, request: WebhookRequest) -> Result<Webhook> {
        match &request.app {
            Some(app) => {
                self.authorize(actor, app).await?;
            }
            None => Self::require_admin(actor, "add webhooks of every app")?,
        }
        let events = if request.events.is_empty() {
            vec!["*".to_string()]
        } else {
            request.events
        };
        let secret = match request.secret {
            Some(secret) if secret.trim().is_empty() => {
                return Err(Error::invalid("secret", "must not be empty"));
            }
            Some(secret) => secret,
            None => new_secret(),
        };
        let webhook = self
            .store
            .create_webhook(NewWebhook {
                app: request.app,
                url: request.url,
                events,
                format: request.format,
                secret,
                creator: actor.name.clone(),
            })
            .await?;
        let target = webhook.app.as_ref().map_or("every app", AppName::as_str);
        tracing::info!(id = webhook.id, url = %webhook.url, %target, "webhook added");
        Ok(webhook)
    }

    /// Removes a webhook with its deliveries.
    pub async fn remove_webhook(&self, actor: &User, id: i64) -> Result<Webhook> {
        let webhook = self.store.webhook(id).await?;
        self.authorize_webhook(actor, &webhook).await?;
        self.store.delete_webhook(id).await?;
        Ok(webhook)
    }

    /// A webhook and its newest deliveries (at most `limit`, capped at
    /// [`MAX_DELIVERIES`]), each with its attempts.
    pub async fn webhook_deliveries(
        &self,
        actor: &User,
        id: i64,
        limit: u32,
    ) -> Result<(Webhook, Vec<DeliveryReport>)> {
        let webhook = self.store.webhook(id).await?;
        self.authorize_webhook(actor, &webhook).await?;
        let deliveries = self
            .store
            .deliveries(id, limit.clamp(1, MAX_DELIVERIES))
            .await?;
        let mut reports = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let attempts = self.store.delivery_attempts(&delivery.id).await?;
            reports.push(DeliveryReport { delivery, attempts });
        }
        Ok((webhook, reports))
    }
}

/// A random signing secret: 32 bytes as hex.
fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_long_and_random() {
        let (a, b) = (super::new_secret(), super::new_secret());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
