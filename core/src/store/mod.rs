//! The store: the only source of truth. [`SqliteStore`] is the embedded default;
//! [`PostgresStore`] lets several gateways share one database.

mod builds;
mod errors;
mod postgres;
mod sqlite;
mod validate;
mod webhooks;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use builds::{
    Build, BuildLogChunk, BuildStatus, BuildStore, DeployKey, NewBuild, NewConnection,
    RepoConnection,
};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use webhooks::{
    AttemptResult, ClaimedDelivery, Delivery, DeliveryAttempt, DeliveryStatus, NewAttempt,
    NewWebhook, RESPONSE_EXCERPT_BYTES, Webhook, WebhookFormat, WebhookStore, response_excerpt,
};

use crate::app::{App, AppName};
use crate::domain::Domain;
use crate::error::Result;
use crate::event::{Event, NewEvent};
use crate::formation::ProcessFormation;
use crate::release::{ConfigVars, NewRelease, ProcessTypes, Release, ReleaseStatus};
use crate::user::{ApiToken, SshKey, User};

/// Who holds an app's deploy lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHolder {
    /// The deploy (owner id) that holds it.
    pub owner: String,
    /// The user who started that deploy.
    pub user: String,
    /// When it lapses unless renewed.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// What the pipeline records once a release's image is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseBuild {
    /// The image reference to run.
    pub image: String,
    /// The image ID.
    pub image_id: String,
    /// The raw Procfile.
    pub procfile: Option<String>,
    /// The process types parsed from it.
    pub process_types: ProcessTypes,
}

/// Persistent state. Every method is a single transaction: nothing half-applied.
///
/// The builds of connected repositories ([`BuildStore`]) and outgoing webhooks
/// ([`WebhookStore`]) are their own traits, implemented by every store.
#[async_trait]
pub trait Store: BuildStore + WebhookStore + Send + Sync {
    /// Creates a user; the first user ever created is an admin whatever `admin` says.
    async fn create_user(&self, name: &str, admin: bool) -> Result<User>;
    /// Looks a user up by name.
    async fn user(&self, name: &str) -> Result<User>;
    /// All users, by name.
    async fn users(&self) -> Result<Vec<User>>;

    /// Adds a key (OpenSSH form) with its `SHA256:` fingerprint to a user.
    async fn add_key(&self, user: &str, fingerprint: &str, public_key: &str) -> Result<SshKey>;
    /// The key with this fingerprint, with its user.
    async fn key(&self, fingerprint: &str) -> Result<SshKey>;
    /// All keys, or one user's.
    async fn keys(&self, user: Option<&str>) -> Result<Vec<SshKey>>;
    /// Removes a key by fingerprint.
    async fn remove_key(&self, fingerprint: &str) -> Result<()>;

    /// Creates an app; a conflict if it exists.
    async fn create_app(&self, name: &AppName, owner: &str) -> Result<App>;
    /// Looks an app up.
    async fn app(&self, name: &AppName) -> Result<App>;
    /// All apps, by name.
    async fn apps(&self) -> Result<Vec<App>>;
    /// Deletes an app with its releases and logs.
    async fn delete_app(&self, name: &AppName) -> Result<()>;

    /// Records a new release with the next version number, in state `pending`.
    async fn create_release(&self, app: &AppName, release: NewRelease) -> Result<Release>;
    /// One release.
    async fn release(&self, app: &AppName, version: u32) -> Result<Release>;
    /// An app's releases, newest first.
    async fn releases(&self, app: &AppName) -> Result<Vec<Release>>;
    /// Every release still in progress (pending, building, deploying), on any app.
    async fn releases_in_progress(&self) -> Result<Vec<Release>>;
    /// Records the built image of a release.
    async fn set_release_build(
        &self,
        app: &AppName,
        version: u32,
        build: &ReleaseBuild,
    ) -> Result<()>;
    /// Moves a release to `status` (checked against the state machine); `failure` says why
    /// when it fails. Moving to `succeeded` also makes it the app's current release.
    async fn set_release_status(
        &self,
        app: &AppName,
        version: u32,
        status: ReleaseStatus,
        failure: Option<&str>,
    ) -> Result<()>;

    /// Appends lines to a release's deploy log.
    async fn append_deploy_log(&self, app: &AppName, version: u32, text: &str) -> Result<()>;
    /// A release's whole deploy log.
    async fn deploy_log(&self, app: &AppName, version: u32) -> Result<String>;

    /// Takes the app's deploy lease for `owner` if it is free or lapsed; otherwise returns
    /// who holds it.
    async fn try_acquire_lease(
        &self,
        app: &AppName,
        owner: &str,
        user: &str,
        ttl: Duration,
    ) -> Result<Option<LeaseHolder>>;
    /// Extends a held lease; an error if `owner` no longer holds it.
    async fn renew_lease(&self, app: &AppName, owner: &str, ttl: Duration) -> Result<()>;
    /// Gives a lease back (no-op if `owner` does not hold it).
    async fn release_lease(&self, app: &AppName, owner: &str) -> Result<()>;

    /// Deletes a release that never succeeded (a config change that did not become
    /// healthy records no release); a conflict for a succeeded one.
    async fn delete_release(&self, app: &AppName, version: u32) -> Result<()>;

    /// The config the app's next deploy runs with: the current release's, or what was
    /// set before the first deploy. Moving a release to `succeeded` also makes its config
    /// the app's config, in the same transaction.
    async fn app_config(&self, app: &AppName) -> Result<ConfigVars>;
    /// Replaces the app's config (used while the app has no release yet).
    async fn set_app_config(&self, app: &AppName, config: &ConfigVars) -> Result<()>;

    /// The app's formation, by process type. Process types never scaled are absent.
    async fn formation(&self, app: &AppName) -> Result<Vec<ProcessFormation>>;
    /// Upserts these entries of the app's formation, all in one transaction.
    async fn set_formation(&self, app: &AppName, entries: &[ProcessFormation]) -> Result<()>;

    /// Attaches a hostname (already normalized) to an app; a conflict naming the app that
    /// has it when it is taken.
    async fn add_domain(&self, app: &AppName, hostname: &str) -> Result<Domain>;
    /// One app's domains, or every app's.
    async fn domains(&self, app: Option<&AppName>) -> Result<Vec<Domain>>;
    /// Detaches a hostname; not found when the app does not have it.
    async fn remove_domain(&self, app: &AppName, hostname: &str) -> Result<()>;

    /// Records an API token by the SHA-256 hex digest of its secret.
    async fn create_token(&self, user: &str, digest: &str, description: &str) -> Result<ApiToken>;
    /// The user whose token has this digest (not found otherwise).
    async fn user_by_token(&self, digest: &str) -> Result<User>;
    /// A user's tokens.
    async fn tokens(&self, user: &str) -> Result<Vec<ApiToken>>;
    /// Revokes one of a user's tokens.
    async fn revoke_token(&self, user: &str, id: i64) -> Result<()>;

    /// Makes a user a collaborator on an app (no-op if already). `create_app` makes the
    /// owner one in the same transaction.
    async fn add_collaborator(&self, app: &AppName, user: &str) -> Result<()>;
    /// Removes a collaborator; not found when the user is not one.
    async fn remove_collaborator(&self, app: &AppName, user: &str) -> Result<()>;
    /// An app's collaborators, by name.
    async fn collaborators(&self, app: &AppName) -> Result<Vec<String>>;
    /// Whether the user collaborates on the app.
    async fn is_collaborator(&self, app: &AppName, user: &str) -> Result<bool>;
    /// The apps a user collaborates on (every app for an admin), by name, in one query.
    async fn apps_for(&self, user: &User) -> Result<Vec<App>>;

    /// Records an event.
    async fn record_event(&self, event: NewEvent) -> Result<Event>;
    /// The newest events first, of one app or all, at most `limit`.
    async fn events(&self, app: Option<&AppName>, limit: u32) -> Result<Vec<Event>>;
}
