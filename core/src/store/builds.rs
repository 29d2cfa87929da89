//! Repositories connected to apps and the builds their webhooks start.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::app::AppName;
use crate::error::{Error, Result};

/// An SSH key pair a connected repository is fetched with (the public half goes to the
/// git host as a read-only deploy key).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployKey {
    /// The public key, one OpenSSH line (`ssh-ed25519 AAAA… comment`).
    pub public: String,
    /// The private key in OpenSSH's PEM format.
    pub private: String,
}

impl fmt::Debug for DeployKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeployKey")
            .field("public", &self.public)
            .field("private", &"<redacted>")
            .finish()
    }
}

/// What connecting an app to a repository records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConnection {
    /// Where the code is fetched from (the only URL ever fetched for this app).
    pub repo_url: String,
    /// The branch whose pushes deploy.
    pub branch: String,
    /// The webhook secret (HMAC key for GitHub and Gitea, the token for GitLab).
    pub secret: String,
    /// The key SSH URLs are fetched with.
    pub deploy_key: Option<DeployKey>,
}

/// An app's connection to a repository on a hosted git server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoConnection {
    /// The app.
    pub app: AppName,
    /// Where the code is fetched from.
    pub repo_url: String,
    /// The branch whose pushes deploy.
    pub branch: String,
    /// The webhook secret.
    pub secret: String,
    /// The key SSH URLs are fetched with.
    pub deploy_key: Option<DeployKey>,
    /// When it was (last) connected.
    pub created_at: OffsetDateTime,
}

/// Where a build stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    /// Waiting for its turn.
    Queued,
    /// Fetching, building and rolling out.
    Running,
    /// Deployed: its release serves.
    Succeeded,
    /// Fetching, the build or the rollout failed.
    Failed,
    /// A newer push came while it waited; it never ran.
    Superseded,
}

impl BuildStatus {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Queued => "queued",
            BuildStatus::Running => "running",
            BuildStatus::Succeeded => "succeeded",
            BuildStatus::Failed => "failed",
            BuildStatus::Superseded => "superseded",
        }
    }

    /// Whether the build has ended (nothing about it changes any more).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            BuildStatus::Succeeded | BuildStatus::Failed | BuildStatus::Superseded
        )
    }

    /// Whether a build may move from `self` to `next`.
    pub fn can_move_to(self, next: BuildStatus) -> bool {
        match self {
            BuildStatus::Queued => next != BuildStatus::Queued,
            BuildStatus::Running => next.is_finished(),
            _ => false,
        }
    }
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BuildStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "queued" => BuildStatus::Queued,
            "running" => BuildStatus::Running,
            "succeeded" => BuildStatus::Succeeded,
            "failed" => BuildStatus::Failed,
            "superseded" => BuildStatus::Superseded,
            other => return Err(Error::Store(format!("unknown build status {other:?}"))),
        })
    }
}

/// What a webhook push records as a build.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewBuild {
    /// Who sent it: `github`, `gitlab` or `gitea`.
    pub source: String,
    /// The pushed commit.
    pub commit: String,
    /// The pushed ref (`refs/heads/main`).
    pub reference: String,
    /// Who pushed.
    pub pusher: String,
    /// The head commit's message.
    pub message: String,
    /// The webhook delivery ID, when the sender gave one.
    pub delivery: Option<String>,
    /// The gateway whose queue holds it (`None`: none in particular).
    pub gateway: Option<String>,
}

/// A build of a pushed commit, started by a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// Its id (unique across apps).
    pub id: i64,
    /// The app.
    pub app: AppName,
    /// Who sent it: `github`, `gitlab` or `gitea`.
    pub source: String,
    /// The pushed commit.
    pub commit: String,
    /// The pushed ref.
    pub reference: String,
    /// Who pushed.
    pub pusher: String,
    /// The head commit's message.
    pub message: String,
    /// The webhook delivery ID.
    pub delivery: Option<String>,
    /// The gateway whose queue holds it.
    pub gateway: Option<String>,
    /// Where it stands.
    pub status: BuildStatus,
    /// The release it made, once it has one.
    pub release: Option<u32>,
    /// Why it failed or was superseded.
    pub failure: Option<String>,
    /// When the webhook arrived.
    pub created_at: OffsetDateTime,
    /// When it last changed status.
    pub updated_at: OffsetDateTime,
}

/// A piece of a build's log; `seq` grows in the order pieces were appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildLogChunk {
    /// Its position: read on after the last one seen.
    pub seq: i64,
    /// The text (whole lines).
    pub text: String,
}

/// Persistent state of connected repositories, builds and seen webhook deliveries.
/// Deleting an app removes its connection, builds, logs and deliveries.
#[async_trait]
pub trait BuildStore: Send + Sync {
    /// Connects an app to a repository, replacing any earlier connection.
    async fn connect_repo(
        &self,
        app: &AppName,
        connection: &NewConnection,
    ) -> Result<RepoConnection>;
    /// The app's connection; not found (`connection`) when it has none.
    async fn repo_connection(&self, app: &AppName) -> Result<RepoConnection>;
    /// Removes the app's connection (its builds stay); not found when it has none.
    async fn disconnect_repo(&self, app: &AppName) -> Result<()>;

    /// Remembers a webhook delivery ID of the app; answers whether it is new (`false`:
    /// seen before).
    async fn record_delivery(&self, app: &AppName, delivery: &str) -> Result<bool>;

    /// Records a build in state `queued`.
    async fn create_build(&self, app: &AppName, build: &NewBuild) -> Result<Build>;
    /// One build of the app.
    async fn build(&self, app: &AppName, id: i64) -> Result<Build>;
    /// The app's builds, newest first, at most `limit`.
    async fn builds(&self, app: &AppName, limit: u32) -> Result<Vec<Build>>;
    /// Moves a build on (checked: queued → anything, running → finished); `release` is
    /// the release it made, `failure` why it failed or was superseded.
    async fn set_build_status(
        &self,
        app: &AppName,
        id: i64,
        status: BuildStatus,
        release: Option<u32>,
        failure: Option<&str>,
    ) -> Result<()>;
    /// Every build, of any app, that is queued or running.
    async fn unfinished_builds(&self) -> Result<Vec<Build>>;

    /// Appends text to a build's log.
    async fn append_build_log(&self, app: &AppName, id: i64, text: &str) -> Result<()>;
    /// The pieces of a build's log after `after` (0 for all), in order.
    async fn build_log(&self, app: &AppName, id: i64, after: i64) -> Result<Vec<BuildLogChunk>>;
}

/// No build of that id on the app.
pub(crate) fn build_not_found(app: &AppName, id: i64) -> Error {
    Error::not_found("build", format!("{id} of app {app}"))
}

/// The app is not connected to a repository.
pub(crate) fn not_connected(app: &AppName) -> Error {
    Error::not_found(
        "connection",
        format!("{app} is not connected to a repository"),
    )
}

/// A build that cannot move to `to`.
pub(crate) fn bad_build_transition(id: i64, from: BuildStatus, to: BuildStatus) -> Error {
    Error::Conflict(format!("build {id} cannot move from {from} to {to}"))
}
