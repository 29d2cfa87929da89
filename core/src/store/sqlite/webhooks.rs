//! [`crate::store::WebhookStore`] on SQLite.

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::WebhookStore;

#[async_trait]
impl WebhookStore for SqliteStore {}
