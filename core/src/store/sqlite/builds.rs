//! [`crate::store::BuildStore`] on SQLite.

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::BuildStore;

#[async_trait]
impl BuildStore for SqliteStore {}
