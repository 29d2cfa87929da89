//! The seam between the pipeline and whatever runs processes: the `docker` backend
//! (local containers behind the router) or `ecs`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::app::AppName;
use crate::error::Result;
use crate::formation::ProcessSize;
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
    /// CPU shares and memory of each instance.
    #[serde(default)]
    pub size: ProcessSize,
    /// A schedule (extended Procfile `cron`): the process runs as a one-off on it,
    /// never as a service.
    #[serde(default)]
    pub cron: Option<String>,
    /// No service runs this process type (extended Procfile `noservice`); it is only `run`.
    #[serde(default)]
    pub noservice: bool,
    /// Ports exposed through a load balancer (extended Procfile `ports`); empty means
    /// `$PORT` behind the app's HTTP route.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Variables only this process type sees (extended Procfile `environment`), over
    /// the release's config.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
}

impl ProcessSpec {
    /// A process type running `command` (the image's CMD when `None`) at `quantity`,
    /// with every other setting at its default.
    pub fn new(name: impl Into<String>, command: Option<String>, quantity: u32) -> Self {
        ProcessSpec {
            name: name.into(),
            command,
            quantity,
            healthcheck: None,
            size: ProcessSize::default(),
            cron: None,
            noservice: false,
            ports: Vec::new(),
            environment: BTreeMap::new(),
        }
    }

    /// Whether instances of this process type run as a long-lived service.
    pub fn is_service(&self) -> bool {
        self.cron.is_none() && !self.noservice
    }
}

/// A load-balancer port in front of a container port (`"80:8080"`, `"443:8080/https"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The port the load balancer listens on.
    pub listener: u16,
    /// The port the container listens on.
    pub container: u16,
    /// `http`, `https` or `tcp`.
    pub protocol: String,
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

/// Which processes a restart replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartTarget {
    /// Every process of the app.
    All,
    /// Every instance of one process type (`web`).
    Process(String),
    /// One instance (`web.2`: process `web`, instance 2).
    Instance(String, u32),
}

/// A one-off process: `run` in a release's image and config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOffSpec {
    /// The app.
    pub app: AppName,
    /// The release whose image and config it runs with.
    pub release: u32,
    /// The image.
    pub image: String,
    /// The environment.
    pub config: ConfigVars,
    /// The command, handed to `/bin/sh -c` inside the container.
    pub command: String,
    /// Its size.
    pub size: ProcessSize,
    /// Allocate a TTY.
    pub tty: bool,
}

/// The streams of an attached one-off process.
pub struct RunIo {
    /// What the user types (EOF closes the process's stdin).
    pub input: Box<dyn AsyncRead + Send + Unpin>,
    /// What the process writes (stdout and stderr together with a TTY).
    pub output: Box<dyn AsyncWrite + Send + Unpin>,
    /// Terminal size changes (columns, rows), when attached with a TTY.
    pub resize: Option<mpsc::Receiver<(u16, u16)>>,
}

/// How a one-off process ended, or where it runs when detached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunOutcome {
    /// An attached process exited with this code.
    Exited(i32),
    /// A detached process started; its name (`run.1234`) and id.
    Detached {
        /// The instance name shown by `ps`.
        name: String,
        /// The container or task id.
        id: String,
    },
}

/// What `logs` reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogOptions {
    /// Only this process type.
    pub process: Option<String>,
    /// Start with at most this many lines per instance (all when `None`).
    pub tail: Option<u32>,
    /// Keep streaming new lines until the receiver is dropped.
    pub follow: bool,
}

/// One line of a process's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Which instance wrote it (`web.1`).
    pub source: String,
    /// The text, without its newline.
    pub text: String,
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

    /// Converges the current release to the quantities and sizes in `spec` without a new
    /// release: new web instances take traffic only once healthy; instances whose size
    /// changed are replaced health-gated; surplus ones drain and stop.
    async fn scale(&self, spec: &DeploySpec, progress: &Progress) -> Result<()>;

    /// Replaces the targeted instances with fresh ones, health-gated like a deploy.
    async fn restart(
        &self,
        spec: &DeploySpec,
        target: &RestartTarget,
        progress: &Progress,
    ) -> Result<()>;

    /// Runs a one-off process. Attached (`io` given): streams it and returns its exit
    /// code; detached: returns once it started. The container is removed afterwards.
    async fn run(&self, spec: &OneOffSpec, io: Option<RunIo>) -> Result<RunOutcome>;

    /// Streams the app's process output. The stream ends after the backlog unless
    /// `follow`, then when the receiver is dropped.
    async fn logs(&self, app: &AppName, options: &LogOptions) -> Result<mpsc::Receiver<LogLine>>;

    /// Sets the custom hostnames the app answers to.
    async fn set_domains(&self, app: &AppName, hostnames: &[String]) -> Result<()>;

    /// Where a deployed app is reachable, when the backend knows better than the
    /// gateway's URL template; `None` (the default) means the template's URL through
    /// the built-in router.
    fn reachable(&self, _app: &AppName) -> Option<Reachable> {
        None
    }
}

/// Where a deployed app answers, as its scheduler describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reachable {
    /// The app's URL (`https://<app>.empire.internal`).
    pub url: String,
    /// What serves it, for `<url> deployed to <via>` (`the internal load balancer`).
    pub via: String,
}
