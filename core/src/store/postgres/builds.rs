//! [`crate::store::BuildStore`] on PostgreSQL.

use async_trait::async_trait;

use super::PostgresStore;
use crate::store::BuildStore;

#[async_trait]
impl BuildStore for PostgresStore {}
