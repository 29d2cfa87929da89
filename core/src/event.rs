//! Events: who changed what, when, and which release it made.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::app::AppName;

/// A recorded change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Store id, increasing.
    pub id: i64,
    /// The app it concerns, if any.
    pub app: Option<AppName>,
    /// Who did it.
    pub user: String,
    /// What happened: `app.created`, `deploy`, `config.changed`, `scale`, `rollback`, …
    pub action: String,
    /// The release it made, if any.
    pub release: Option<u32>,
    /// A one-line description a person can read (never config values).
    pub message: String,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// An event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The app it concerns, if any.
    pub app: Option<AppName>,
    /// Who did it.
    pub user: String,
    /// What happened.
    pub action: String,
    /// The release it made, if any.
    pub release: Option<u32>,
    /// A one-line description.
    pub message: String,
}
