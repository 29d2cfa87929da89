//! The seam between the pipeline and whatever runs processes: the `docker` backend
//! (local containers behind the router) or `ecs`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::app::AppName;
use crate::error::Result;
use crate::progress::Progress;
use crate::release::ConfigVars;

/// The port every process listens on (`$PORT`).
pub const DEFAULT_PORT: u16 = 5000;

/// One process type of a release, with how many instances should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// The process type (`web`, `worker`, …).
    pub name: String,
    /// The command, run through `/bin/sh -c`; `None` runs the image's own CMD.
    pub command: Option<String>,
    /// How many instances run.
    pub quantity: u32,
    /// HTTP path probed before the process receives traffic (else a TCP connect).
    pub healthcheck: Option<String>,
}

/// Everything a scheduler needs to run a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploySpec {
    /// The app.
    pub app: AppName,
    /// The release number.
    pub release: u32,
    /// The image reference to run.
    pub image: String,
    /// The environment of every process.
    pub config: ConfigVars,
    /// The process types with their counts.
    pub processes: Vec<ProcessSpec>,
}

/// A running (or crashed) instance of a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInstance {
    /// `web.1`, `worker.2`, …
    pub name: String,
    /// The process type.
    pub process: String,
    /// The release it runs.
    pub release: u32,
    /// `up`, `starting`, `crashed`, …
    pub state: String,
    /// When it started.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
}

/// Runs releases. Every operation streams what it does to `progress`.
#[async_trait]
pub trait Scheduler: Send + Sync {
    /// Rolls the release out, health-gated: returns once it serves, or fails with
    /// [`crate::Error::Deploy`] after removing what it started, leaving the previous
    /// release serving.
    async fn deploy(&self, spec: &DeploySpec, progress: &Progress) -> Result<()>;

    /// After a gateway restart: adopts or recreates the processes of each app's current
    /// release and removes anything else Empire started.
    async fn restore(&self, current: &[DeploySpec]) -> Result<()>;

    /// Removes the processes of one release (an interrupted deploy).
    async fn remove_release(&self, app: &AppName, release: u32) -> Result<()>;

    /// Removes every process of an app.
    async fn remove_app(&self, app: &AppName) -> Result<()>;

    /// Lists the app's process instances.
    async fn processes(&self, app: &AppName) -> Result<Vec<ProcessInstance>>;
}
