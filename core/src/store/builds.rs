//! Repositories connected to apps and the builds their webhooks start.

use async_trait::async_trait;

/// Persistent state of connected repositories, builds and seen webhook deliveries.
#[async_trait]
pub trait BuildStore: Send + Sync {}
