//! Users and their SSH keys.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A person (or robot) who pushes and operates apps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Store id.
    pub id: i64,
    /// Unique user name.
    pub name: String,
    /// Admins may operate every app.
    pub admin: bool,
    /// When the user was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// An SSH public key that authenticates a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshKey {
    /// `SHA256:…` fingerprint, as OpenSSH prints it.
    pub fingerprint: String,
    /// The key in OpenSSH `authorized_keys` form (`ssh-ed25519 AAAA… comment`).
    pub public_key: String,
    /// The user the key belongs to.
    pub user: String,
    /// When the key was added.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// An API token (its secret is shown once, at creation; the store keeps its SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Store id.
    pub id: i64,
    /// The user it authenticates.
    pub user: String,
    /// What it is for (`created by empire tokens create`, `oauth`, …).
    pub description: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}
