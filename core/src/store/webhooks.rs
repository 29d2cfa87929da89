//! Outgoing webhooks: subscriptions and the deliveries of events to them.

use async_trait::async_trait;

/// Persistent state of webhook subscriptions and their deliveries.
#[async_trait]
pub trait WebhookStore: Send + Sync {}
