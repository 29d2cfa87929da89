//! [`crate::store::WebhookStore`] on PostgreSQL.

use async_trait::async_trait;

use super::PostgresStore;
use crate::store::WebhookStore;

#[async_trait]
impl WebhookStore for PostgresStore {}
