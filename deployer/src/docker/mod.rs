//! The `docker` scheduler backend: one container per process instance on the local
//! Docker engine, web containers behind the built-in [`Router`].

mod cron;
mod engine;
mod extended;
mod health;
mod logs;
mod oneoff;
mod operate;

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::ContainerStateStatusEnum;
use empire_core::app::AppName;
use empire_core::progress::{Progress, format_duration};
use empire_core::scheduler::{
    DeploySpec, LogLine, LogOptions, OneOffSpec, ProcessInstance, ProcessSpec, RestartTarget,
    RunIo, RunOutcome, Scheduler,
};
use futures_util::StreamExt;
use futures_util::future::join_all;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

use crate::error::{DeployerError, docker_status};
use crate::router::{Backend, Router};
use engine::{
    Engine, Events, Labels, Managed, OneOff, ROUTED_PROCESS, inspected_host_port, next_event,
};
use health::{ProbeFailure, http_check, tcp_check};

/// How many log lines of a failing container a failed deploy prints.
const FAILURE_LOG_LINES: usize = 20;
/// How often a deploy re-checks a starting instance.
const HEALTH_POLL: Duration = Duration::from_millis(200);
/// How long one health probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the route keeper re-checks apps with instances that are not routed yet.
const FAST_REFRESH: Duration = Duration::from_millis(500);
/// How many connection checks a route refresh runs at once, over all apps.
const REFRESH_CHECKS: usize = 16;

/// Settings of the [`DockerScheduler`].
#[derive(Debug, Clone)]
pub struct DockerSchedulerOptions {
    /// How long new instances have to become healthy before a deploy fails (60 s).
    pub boot_timeout: Duration,
    /// How long a non-web process must keep running to count as up (10 s).
    pub worker_settle: Duration,
    /// How long a rollout waits for requests in flight on the old release (30 s).
    pub drain_timeout: Duration,
    /// How long a stopped process gets between SIGTERM and SIGKILL (10 s).
    pub stop_grace: Duration,
    /// The domain apps are served under (`<app>.<apps_domain>`), for output and for
    /// the `Host` header of HTTP health checks.
    pub apps_domain: String,
    /// The port the router listens on, for output (80 is left out of URLs).
    pub router_port: u16,
    /// Scopes the containers to one gateway: they carry the label
    /// `<label_prefix>.gateway=<namespace>` and the scheduler never touches others.
    /// Also the first part of container names.
    pub namespace: String,
    /// The prefix of every label the scheduler sets (`empire` → `empire.app`, …).
    pub label_prefix: String,
    /// How often the routes of every app are re-checked, besides Docker events (2 s).
    pub refresh_interval: Duration,
    /// The registry release images were pushed to: an image the engine does not have
    /// (pushed through `--registry-endpoint`, or pruned) is pulled from it (none).
    pub registry: Option<Arc<dyn crate::ImageRegistry>>,
}

impl Default for DockerSchedulerOptions {
    fn default() -> Self {
        DockerSchedulerOptions {
            boot_timeout: Duration::from_secs(60),
            worker_settle: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
            apps_domain: "localhost".into(),
            router_port: 8080,
            namespace: "empire".into(),
            label_prefix: "empire".into(),
            refresh_interval: Duration::from_secs(2),
            registry: None,
        }
    }
}

impl DockerSchedulerOptions {
    fn validate(&self) -> Result<(), DeployerError> {
        let valid_name = |s: &str| {
            s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        };
        if !valid_name(&self.namespace) {
            return Err(DeployerError::InvalidOption {
                field: "namespace",
                message: format!(
                    "{:?} must start with a letter or digit and hold only letters, digits, '_', '.' or '-'",
                    self.namespace
                ),
            });
        }
        if !valid_name(&self.label_prefix) {
            return Err(DeployerError::InvalidOption {
                field: "label_prefix",
                message: format!("{:?} is not a usable label prefix", self.label_prefix),
            });
        }
        Ok(())
    }
}

/// What the scheduler serves for an app: its current release and the containers that
/// make it up. Only these are ever routed.
#[derive(Debug, Clone)]
struct AppState {
    release: u32,
    /// Bumped on every change, so a route refresh computed for an older state is dropped.
    generation: u64,
    active: HashSet<String>,
}

struct Inner {
    engine: Engine,
    router: Arc<Router>,
    options: DockerSchedulerOptions,
    apps: Mutex<HashMap<String, AppState>>,
    generation: AtomicU64,
    /// Apps whose routes the route keeper should refresh now.
    wake_apps: Mutex<HashSet<String>>,
    wake: Notify,
}

/// Runs releases as containers on the local Docker engine, behind the [`Router`].
pub struct DockerScheduler {
    inner: Arc<Inner>,
    /// The timers of cron processes (extended Procfile).
    crons: cron::Crons,
    _route_keeper: DropGuard,
}

impl std::fmt::Debug for DockerScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerScheduler")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// One started instance of a deploy.
struct Started {
    id: String,
    label: String,
    process: String,
    routed: bool,
    healthcheck: Option<String>,
    started: Instant,
}

/// What a rollout replaces, which decides what a failed one says is left running.
#[derive(Debug, Clone, Copy)]
enum Rollout {
    /// A whole release: the release served before, if any, keeps serving.
    Release,
    /// Some instances of the current release: the others keep running.
    Instances,
}

/// The new instances of a rollout, all healthy and not routed yet.
struct Launched {
    started: Vec<Started>,
    /// The routed instances' addresses.
    backends: Vec<Backend>,
    /// Removes the new containers unless disarmed once they serve.
    cleanup: Cleanup,
}

/// How many times an instance crashed during a deploy, and its last exit code.
#[derive(Debug, Default, Clone)]
struct Crashes {
    count: u32,
    last_exit_code: Option<String>,
}

type CrashLog = Arc<Mutex<HashMap<String, Crashes>>>;

/// Removes a deploy's containers unless it succeeded, also when the deploy future is
/// dropped half-way.
struct Cleanup {
    engine: Engine,
    ids: Vec<String>,
}

impl Cleanup {
    async fn run(mut self) {
        let ids = std::mem::take(&mut self.ids);
        join_all(ids.iter().map(|id| self.engine.remove_now(id))).await;
    }

    fn disarm(mut self) {
        self.ids.clear();
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.ids);
        let engine = self.engine.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            warn!(
                count = ids.len(),
                "deploy interrupted; removing the containers it started"
            );
            handle.spawn(async move {
                join_all(ids.iter().map(|id| engine.remove_now(id))).await;
            });
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl DockerScheduler {
    /// Connects to the local Docker engine (honouring `DOCKER_HOST`), negotiates the API
    /// version and starts the task that keeps the router's backends in line with the
    /// containers (it stops when the scheduler is dropped).
    pub async fn connect(
        router: Arc<Router>,
        options: DockerSchedulerOptions,
    ) -> Result<Self, DeployerError> {
        options.validate()?;
        let docker = Docker::connect_with_local_defaults().map_err(DeployerError::Connect)?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(DeployerError::Connect)?;
        let engine = Engine::new(
            docker,
            Labels::new(&options.label_prefix),
            options.namespace.clone(),
            options.registry.clone(),
        );
        let inner = Arc::new(Inner {
            engine,
            router,
            options,
            apps: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            wake_apps: Mutex::new(HashSet::new()),
            wake: Notify::new(),
        });
        let cancel = CancellationToken::new();
        tokio::spawn(keep_routes(inner.clone(), cancel.clone()));
        Ok(DockerScheduler {
            inner,
            crons: cron::Crons::default(),
            _route_keeper: cancel.drop_guard(),
        })
    }

    /// The router this scheduler routes to.
    pub fn router(&self) -> &Arc<Router> {
        &self.inner.router
    }

    /// The release the scheduler serves for `app`, if any.
    pub fn current_release(&self, app: &AppName) -> Option<u32> {
        lock(&self.inner.apps).get(app.as_str()).map(|s| s.release)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// `60s`, `2.5s`.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Inner {
    fn app_url(&self, app: &str) -> String {
        let port = match self.options.router_port {
            80 => String::new(),
            port => format!(":{port}"),
        };
        format!("http://{app}.{}{port}/", self.options.apps_domain)
    }

    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Asks the route keeper to refresh `app` now.
    fn wake(&self, app: &str) {
        lock(&self.wake_apps).insert(app.to_string());
        self.wake.notify_one();
    }

    async fn deploy(&self, spec: &DeploySpec, progress: &Progress) -> empire_core::Result<()> {
        let app = spec.app.as_str();
        let step = progress.step(format!("Starting processes for v{}", spec.release));
        let engine = &self.engine;
        // Web first, then the other process types in the order of the release.
        let mut start: Vec<(&ProcessSpec, u32)> = spec
            .processes
            .iter()
            .flat_map(|p| (1..=p.quantity).map(move |n| (p, n)))
            .collect();
        start.sort_by_key(|(p, _)| p.name != ROUTED_PROCESS);
        let Launched {
            started,
            backends,
            cleanup,
        } = self.launch(spec, start, Rollout::Release, progress).await?;

        // Healthy: switch the route, then drain and stop everything else of the app.
        let active: HashSet<String> = started.iter().map(|s| s.id.clone()).collect();
        {
            let mut apps = lock(&self.apps);
            apps.insert(
                app.to_string(),
                AppState {
                    release: spec.release,
                    generation: self.next_generation(),
                    active: active.clone(),
                },
            );
            self.router.set_backends(app, backends);
        }
        cleanup.disarm();
        info!(app, release = spec.release, "routed to the new release");

        if let Some(left) = self.drain_retired(app, |b| !active.contains(&b.id)).await {
            progress.detail(format!(
                "{left} to the previous processes still running after {}; stopping them anyway",
                seconds(self.options.drain_timeout)
            ));
        }

        let mut stopped = BTreeSet::new();
        match engine.list(Some(app), None).await {
            Ok(containers) => {
                // One-off processes keep running on the release they started with.
                let old: Vec<Managed> = containers
                    .into_iter()
                    .filter(|c| !active.contains(&c.id) && c.oneoff.is_none())
                    .collect();
                stopped.extend(old.iter().map(|c| c.release));
                join_all(
                    old.iter()
                        .map(|c| engine.stop_and_remove(&c.id, self.options.stop_grace)),
                )
                .await;
            }
            Err(err) => {
                // The release serves; the next deploy or restore removes the leftovers.
                warn!(app, error = %err, "could not list the previous containers to stop them");
            }
        }

        let has_web = started.iter().any(|s| s.routed);
        let mut line = if has_web {
            format!("Routed {} to v{}", self.app_url(app), spec.release)
        } else {
            format!(
                "v{} has no {ROUTED_PROCESS} process; {} answers 503",
                spec.release,
                self.app_url(app)
            )
        };
        if !stopped.is_empty() {
            let list: Vec<String> = stopped.iter().map(|r| format!("v{r}")).collect();
            line.push_str(&format!("; stopped {}", list.join(", ")));
        }
        progress.detail(line);
        step.done(format!("Deployed v{}", spec.release));
        Ok(())
    }

    /// Waits up to the drain timeout for the requests in flight on the known backends of
    /// `app` that `retired` picks (already out of the route). Says how many were still
    /// running (`1 request`, `3 requests`) when some were.
    async fn drain_retired(&self, app: &str, retired: impl Fn(&Backend) -> bool) -> Option<String> {
        let draining: Vec<Backend> = self
            .router
            .known_backends(app)
            .into_iter()
            .filter(|b| retired(b))
            .collect();
        let left = self
            .router
            .drain(app, &draining, self.options.drain_timeout)
            .await;
        (left > 0).then(|| format!("{left} request{}", if left == 1 { "" } else { "s" }))
    }

    /// The error message of instances that did not become healthy, and the reason and
    /// last log lines of the first failing instance of each process type.
    async fn failure_report(
        &self,
        failures: &[(&Started, String)],
    ) -> (String, Vec<(String, Vec<String>)>) {
        let mut logs = Vec::new();
        let mut seen = HashSet::new();
        for (instance, reason) in failures {
            if seen.insert(instance.process.clone()) {
                logs.push((
                    reason.clone(),
                    self.engine.last_logs(&instance.id, FAILURE_LOG_LINES).await,
                ));
            }
        }
        let mut reason = failures.first().map(|f| f.1.clone()).unwrap_or_default();
        if failures.len() > 1 {
            reason.push_str(&format!(
                " ({} more instance{} failed too)",
                failures.len() - 1,
                if failures.len() == 2 { "" } else { "s" }
            ));
        }
        (reason, logs)
    }

    /// Creates and starts the instances `start` in that order and waits until every one
    /// of them is healthy, printing crashes as they happen. When one cannot be created
    /// or started or does not become healthy, prints why with its last log lines,
    /// removes every new container and fails; nothing else is touched.
    async fn launch(
        &self,
        spec: &DeploySpec,
        start: Vec<(&ProcessSpec, u32)>,
        rollout: Rollout,
        progress: &Progress,
    ) -> empire_core::Result<Launched> {
        let engine = &self.engine;
        let deploy_id = uuid::Uuid::new_v4().simple().to_string();

        // Crashes are reported from Docker's `die` events; replaying from a moment
        // before the first container starts, none is missed.
        let crashes: CrashLog = Arc::default();
        let watcher = (!start.is_empty()).then(|| {
            AbortOnDrop(tokio::spawn(watch_crashes(
                engine.clone(),
                spec.app.as_str().to_string(),
                deploy_id.clone(),
                unix_now().saturating_sub(2),
                progress.clone(),
                crashes.clone(),
            )))
        });
        let launcher = if start.is_empty() {
            false
        } else {
            // The image first (pulled from the registry when the engine lacks it): a
            // release whose image is gone fails before any container is touched.
            engine
                .prepare_image(&spec.image, Some(progress))
                .await
                .map_err(empire_core::Error::from)?
        };

        let mut cleanup = Cleanup {
            engine: engine.clone(),
            ids: Vec::new(),
        };
        let mut started = Vec::new();
        for (process, n) in start {
            let label = format!("{}.{n}", process.name);
            let id = match engine
                .create(
                    &extended::with_environment(spec, process),
                    process,
                    n,
                    &deploy_id,
                    launcher,
                )
                .await
            {
                Ok(id) => id,
                Err(err) => {
                    drop(watcher);
                    progress.detail(format!("{label} could not be created: {err}"));
                    return Err(self
                        .abandon(spec, rollout, progress, cleanup, &[], err)
                        .await);
                }
            };
            cleanup.ids.push(id.clone());
            if let Err(err) = engine.start(&id, &label).await {
                drop(watcher);
                let logs = vec![(
                    err.to_string(),
                    engine.last_logs(&id, FAILURE_LOG_LINES).await,
                )];
                return Err(self
                    .abandon(spec, rollout, progress, cleanup, &logs, err)
                    .await);
            }
            progress.detail(format!("{label} started"));
            started.push(Started {
                id,
                label,
                process: process.name.clone(),
                routed: process.name == ROUTED_PROCESS,
                healthcheck: process.healthcheck.clone(),
                started: Instant::now(),
            });
        }

        let outcomes = join_all(
            started
                .iter()
                .map(|s| self.wait_healthy(spec, s, &crashes, progress)),
        )
        .await;
        drop(watcher);

        let mut failures = Vec::new();
        let mut backends = Vec::new();
        for (instance, outcome) in started.iter().zip(outcomes) {
            match outcome {
                Ok(Some(addr)) => backends.push(Backend::new(instance.id.clone(), addr)),
                Ok(None) => {}
                Err(reason) => failures.push((instance, reason)),
            }
        }
        if !failures.is_empty() {
            let (reason, logs) = self.failure_report(&failures).await;
            let err = DeployerError::Unhealthy(reason);
            return Err(self
                .abandon(spec, rollout, progress, cleanup, &logs, err)
                .await);
        }
        Ok(Launched {
            started,
            backends,
            cleanup,
        })
    }

    /// Prints why each failing instance failed with its last log lines, removes the
    /// rollout's new containers, says what keeps running and builds the error.
    async fn abandon(
        &self,
        spec: &DeploySpec,
        rollout: Rollout,
        progress: &Progress,
        cleanup: Cleanup,
        failures: &[(String, Vec<String>)],
        err: DeployerError,
    ) -> empire_core::Error {
        print_failures(progress, failures);
        let any = !cleanup.ids.is_empty();
        cleanup.run().await;
        match rollout {
            Rollout::Release => {
                let keeps = lock(&self.apps)
                    .get(spec.app.as_str())
                    .map(|s| format!("; v{} keeps serving", s.release))
                    .unwrap_or_default();
                progress.detail(format!("Removed the processes of v{}{keeps}", spec.release));
            }
            Rollout::Instances if any => {
                progress.detail("Removed the new processes; the others keep running unchanged");
            }
            Rollout::Instances => {}
        }
        err.into()
    }

    /// Waits for one instance to become healthy: a routed process must accept
    /// connections on its port (or pass its HTTP health check), another must keep
    /// running for `worker_settle`. Returns the routed address.
    async fn wait_healthy(
        &self,
        spec: &DeploySpec,
        instance: &Started,
        crashes: &CrashLog,
        progress: &Progress,
    ) -> Result<Option<SocketAddr>, String> {
        let options = &self.options;
        let settle = options.worker_settle;
        let deadline = if instance.routed {
            instance.started + options.boot_timeout
        } else {
            instance.started + options.boot_timeout.max(settle + Duration::from_secs(2))
        };
        let host = format!("{}.{}", spec.app, options.apps_domain);
        let mut running_since: Option<(i64, Instant)> = None;
        let mut last_probe: Option<ProbeFailure> = None;
        let mut last_exit: Option<i64> = None;
        let mut restarts = 0i64;
        let mut engine_error: Option<String> = None;
        loop {
            match self.engine.inspect(&instance.id).await {
                Ok(info) => {
                    let state = info.state.clone().unwrap_or_default();
                    restarts = info.restart_count.unwrap_or(0);
                    let running = state.running == Some(true)
                        && state.restarting != Some(true)
                        && state.status == Some(ContainerStateStatusEnum::RUNNING);
                    if running {
                        if instance.routed {
                            if let Some(port) = inspected_host_port(&info) {
                                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                                let probe = match instance.healthcheck.as_deref() {
                                    Some(path) => {
                                        http_check(addr, path, &host, PROBE_TIMEOUT).await
                                    }
                                    None => tcp_check(addr, PROBE_TIMEOUT).await,
                                };
                                match probe {
                                    Ok(()) => {
                                        progress.detail(format!(
                                            "{} is up ({})",
                                            instance.label,
                                            format_duration(instance.started.elapsed())
                                        ));
                                        return Ok(Some(addr));
                                    }
                                    Err(failure) => last_probe = Some(failure),
                                }
                            }
                        } else {
                            match running_since {
                                Some((count, since)) if count == restarts => {
                                    if since.elapsed() >= settle {
                                        progress.detail(format!(
                                            "{} is up ({})",
                                            instance.label,
                                            format_duration(instance.started.elapsed())
                                        ));
                                        return Ok(None);
                                    }
                                }
                                _ => running_since = Some((restarts, Instant::now())),
                            }
                        }
                    } else {
                        running_since = None;
                        if matches!(
                            state.status,
                            Some(
                                ContainerStateStatusEnum::EXITED
                                    | ContainerStateStatusEnum::DEAD
                                    | ContainerStateStatusEnum::RESTARTING
                            )
                        ) {
                            last_exit = state.exit_code.or(last_exit);
                        }
                        if let Some(error) = state.error.filter(|e| !e.is_empty()) {
                            engine_error = Some(error);
                        }
                    }
                }
                Err(err) if docker_status(&err) == Some(404) => {
                    return Err(format!("{} was removed while starting", instance.label));
                }
                Err(err) => debug!(instance = %instance.label, error = %err, "inspect failed"),
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep(HEALTH_POLL.min(deadline - now)).await;
        }

        let logged = lock(crashes)
            .get(&instance.label)
            .cloned()
            .unwrap_or_default();
        let crash_count = i64::from(logged.count).max(restarts);
        let exit_code = logged
            .last_exit_code
            .or_else(|| last_exit.map(|c| c.to_string()));
        let crashed = if crash_count > 0 || exit_code.is_some() {
            let times = match crash_count {
                0 | 1 => "once".to_string(),
                n => format!("{n} times"),
            };
            let code = exit_code
                .map(|c| format!(" (last exit code {c})"))
                .unwrap_or_default();
            format!(" crashed {times}{code} and")
        } else {
            String::new()
        };
        let timeout = seconds(if instance.routed {
            options.boot_timeout
        } else {
            deadline - instance.started
        });
        let mut reason = if instance.routed {
            match (&instance.healthcheck, &last_probe) {
                (Some(path), Some(failure)) if *failure != ProbeFailure::NotListening => format!(
                    "{}{crashed} did not pass its health check GET {path} within {timeout}: {failure}",
                    instance.label
                ),
                _ => format!(
                    "{}{crashed} did not accept connections on $PORT within {timeout}",
                    instance.label
                ),
            }
        } else {
            format!(
                "{}{crashed} did not stay up for {} within {timeout}",
                instance.label,
                seconds(settle)
            )
        };
        if let Some(error) = engine_error {
            reason.push_str(&format!(" (docker: {error})"));
        }
        Err(reason)
    }

    async fn restore(&self, current: &[Cow<'_, DeploySpec>]) -> Result<(), DeployerError> {
        let engine = &self.engine;
        let all = engine.list(None, None).await?;
        let wanted: HashMap<&str, &DeploySpec> =
            current.iter().map(|s| (s.app.as_str(), &**s)).collect();

        let mut by_app: HashMap<String, Vec<Managed>> = HashMap::new();
        let mut remove: Vec<Managed> = Vec::new();
        for c in all {
            // A detached one-off process of a live app runs on until it exits; an
            // attached one lost its client with the previous gateway.
            if let Some(oneoff) = c.oneoff {
                if oneoff == OneOff::Attached || !wanted.contains_key(c.app.as_str()) {
                    remove.push(c);
                }
                continue;
            }
            if wanted.contains_key(c.app.as_str()) {
                by_app.entry(c.app.clone()).or_default().push(c);
            } else {
                remove.push(c);
            }
        }

        let mut errors = Vec::new();
        let mut states = Vec::new();
        for spec in current {
            let app = spec.app.as_str();
            let mut containers = by_app.remove(app).unwrap_or_default();
            // Best first: running, then restarting, then the newest.
            containers.sort_by_key(|c| {
                (
                    std::cmp::Reverse(c.is_running()),
                    std::cmp::Reverse(c.state == "restarting"),
                    std::cmp::Reverse(c.created),
                )
            });
            let deploy_id = uuid::Uuid::new_v4().simple().to_string();
            // Inspected only when a container has to be created (most apps need none).
            let mut launches: Option<bool> = None;
            let mut active = HashSet::new();
            let mut kept = HashSet::new();
            for process in spec.processes.iter().filter(|p| p.quantity > 0) {
                for n in 1..=process.quantity {
                    let label = format!("{}.{n}", process.name);
                    let adopted = containers.iter().find(|c| {
                        c.release == spec.release && c.process == process.name && c.instance == n
                    });
                    if let Some(c) = adopted {
                        if c.is_running() || c.state == "restarting" {
                            kept.insert(c.id.clone());
                            active.insert(c.id.clone());
                            continue;
                        }
                        info!(app, instance = %label, "starting the stopped container");
                        match engine.start(&c.id, &label).await {
                            Ok(()) => {
                                kept.insert(c.id.clone());
                                active.insert(c.id.clone());
                                continue;
                            }
                            // It is removed with the strays; a fresh one replaces it.
                            Err(err) => warn!(app, instance = %label, error = %err,
                                "the stopped container does not start; replacing it"),
                        }
                    }
                    info!(app, instance = %label, release = spec.release, "recreating a missing process");
                    let launcher = match launches {
                        Some(launcher) => launcher,
                        None => *launches.insert(engine.launcher(&spec.image).await),
                    };
                    match engine
                        .create(
                            &extended::with_environment(spec, process),
                            process,
                            n,
                            &deploy_id,
                            launcher,
                        )
                        .await
                    {
                        Ok(id) => {
                            active.insert(id.clone());
                            if let Err(err) = engine.start(&id, &label).await {
                                errors.push(format!("{app} {label}: {err}"));
                            }
                        }
                        Err(err) => errors.push(format!("{app} {label}: {err}")),
                    }
                }
            }
            remove.extend(containers.into_iter().filter(|c| !kept.contains(&c.id)));
            states.push((app.to_string(), spec.release, active));
        }

        {
            let mut apps = lock(&self.apps);
            apps.retain(|app, _| wanted.contains_key(app.as_str()));
            for (app, release, active) in &states {
                apps.insert(
                    app.clone(),
                    AppState {
                        release: *release,
                        generation: self.next_generation(),
                        active: active.clone(),
                    },
                );
            }
        }
        for app in self.router.apps() {
            if !wanted.contains_key(app.as_str()) {
                self.router.remove_app(&app);
            }
        }

        if !remove.is_empty() {
            info!(
                count = remove.len(),
                "removing containers that belong to no current release"
            );
        }
        join_all(remove.iter().map(|c| engine.remove_now(&c.id))).await;

        // Route what is healthy, in parallel, for at most boot_timeout; the route keeper
        // routes the stragglers when they come up.
        let deadline = Instant::now() + self.options.boot_timeout;
        let mut waiting: Vec<String> = states.iter().map(|(app, _, _)| app.clone()).collect();
        loop {
            let incomplete = self.refresh_apps(&waiting).await;
            waiting.retain(|app| incomplete.contains(app));
            if waiting.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                for app in &waiting {
                    warn!(
                        app,
                        "not every web process of the app is healthy after restore"
                    );
                    self.wake(app);
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }

        if errors.is_empty() {
            Ok(())
        } else {
            Err(DeployerError::Incomplete(format!(
                "could not restore every process: {}",
                errors.join("; ")
            )))
        }
    }

    /// Routes the active web containers of `apps` that run and accept connections,
    /// from one listing of the namespace's containers (of the app alone when there is
    /// one). Returns the apps whose active web containers are not all routed; an app
    /// the scheduler does not serve counts as complete.
    async fn refresh_apps(&self, apps: &[String]) -> HashSet<String> {
        let states: Vec<(&str, AppState)> = {
            let current = lock(&self.apps);
            apps.iter()
                .filter_map(|app| current.get(app).map(|s| (app.as_str(), s.clone())))
                .collect()
        };
        let only = match states.as_slice() {
            [] => return HashSet::new(),
            [(app, _)] => Some(*app),
            _ => None,
        };
        let mut by_app = match self.engine.list(only, None).await {
            Ok(containers) => group_by_app(containers),
            Err(err) => {
                debug!(error = %err, "route refresh: listing failed");
                return states.iter().map(|(app, _)| app.to_string()).collect();
            }
        };
        // The checks of all apps share the limit; apps without web containers need none.
        let checks = Semaphore::new(REFRESH_CHECKS);
        let checks = &checks;
        let refreshed = join_all(states.iter().map(|(app, state)| {
            let web: Vec<Managed> = by_app
                .remove(*app)
                .unwrap_or_default()
                .into_iter()
                .filter(|c| state.active.contains(&c.id) && c.process == ROUTED_PROCESS)
                .collect();
            async move {
                let probes = join_all(web.iter().map(|c| async move {
                    if !c.is_running() {
                        return None;
                    }
                    let addr = SocketAddr::from(([127, 0, 0, 1], c.host_port?));
                    let _permit = checks.acquire().await.ok()?;
                    tcp_check(addr, PROBE_TIMEOUT)
                        .await
                        .ok()
                        .map(|()| Backend::new(c.id.clone(), addr))
                }))
                .await;
                let backends: Vec<Backend> = probes.into_iter().flatten().collect();
                (*app, state.generation, web.len(), backends)
            }
        }))
        .await;

        let mut incomplete = HashSet::new();
        let apps = lock(&self.apps);
        for (app, generation, web, backends) in refreshed {
            if backends.len() != web {
                incomplete.insert(app.to_string());
            }
            if apps.get(app).map(|s| s.generation) != Some(generation) {
                continue;
            }
            let current = self.router.backends(app);
            if current.as_ref() != Some(&backends) {
                debug!(app, routed = backends.len(), of = web, "routes updated");
                self.router.set_backends(app, backends);
            }
        }
        incomplete
    }

    async fn remove_release(&self, app: &str, release: u32) -> Result<(), DeployerError> {
        let active = lock(&self.apps)
            .get(app)
            .map(|s| s.active.clone())
            .unwrap_or_default();
        let containers = self.engine.list(Some(app), Some(release)).await?;
        join_all(
            containers
                .iter()
                .filter(|c| !active.contains(&c.id) && c.oneoff.is_none())
                .map(|c| self.engine.remove_now(&c.id)),
        )
        .await;
        Ok(())
    }

    async fn remove_app(&self, app: &str) -> Result<(), DeployerError> {
        {
            let mut apps = lock(&self.apps);
            apps.remove(app);
            self.router.remove_app(app);
        }
        let containers = self.engine.list(Some(app), None).await?;
        join_all(
            containers
                .iter()
                .map(|c| self.engine.stop_and_remove(&c.id, self.options.stop_grace)),
        )
        .await;
        let left = self.engine.list(Some(app), None).await?;
        if left.is_empty() {
            Ok(())
        } else {
            Err(DeployerError::Incomplete(format!(
                "{} container(s) of {app} could not be removed",
                left.len()
            )))
        }
    }

    async fn processes(&self, app: &str) -> Result<Vec<ProcessInstance>, DeployerError> {
        let containers = self.engine.list(Some(app), None).await?;
        let state = lock(&self.apps).get(app).cloned();
        let routed: HashSet<String> = self
            .router
            .backends(app)
            .unwrap_or_default()
            .into_iter()
            .map(|b| b.id)
            .collect();
        let inspected = join_all(containers.iter().map(|c| self.engine.inspect(&c.id))).await;
        let mut instances = Vec::new();
        for (c, info) in containers.iter().zip(inspected) {
            let Ok(info) = info else { continue };
            let docker_state = info.state.unwrap_or_default();
            let restarts = info.restart_count.unwrap_or(0);
            let active = state.as_ref().is_some_and(|s| s.active.contains(&c.id));
            let status = match docker_state.status {
                Some(ContainerStateStatusEnum::RUNNING) => {
                    let serving = c.process != ROUTED_PROCESS || routed.contains(&c.id);
                    let older = state.as_ref().is_some_and(|s| c.release < s.release);
                    if serving || (!active && older) {
                        "up"
                    } else if restarts > 0 {
                        "restarting"
                    } else {
                        "starting"
                    }
                }
                Some(ContainerStateStatusEnum::RESTARTING) => "crashed",
                Some(ContainerStateStatusEnum::CREATED) => "starting",
                Some(ContainerStateStatusEnum::PAUSED) => "paused",
                Some(ContainerStateStatusEnum::REMOVING | ContainerStateStatusEnum::STOPPING) => {
                    "stopping"
                }
                _ => "exited",
            };
            let started_at = docker_state
                .started_at
                .as_deref()
                .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
                .filter(|t| t.year() >= 1970);
            instances.push(ProcessInstance {
                name: c.label(),
                process: c.process.clone(),
                release: c.release,
                state: status.to_string(),
                started_at,
            });
        }
        instances.sort_by(|a, b| {
            (
                a.process != ROUTED_PROCESS,
                &a.process,
                instance_number(a),
                a.release,
            )
                .cmp(&(
                    b.process != ROUTED_PROCESS,
                    &b.process,
                    instance_number(b),
                    b.release,
                ))
        });
        Ok(instances)
    }
}

/// The containers grouped by the app they belong to, in listing order.
fn group_by_app(containers: Vec<Managed>) -> HashMap<String, Vec<Managed>> {
    let mut by_app: HashMap<String, Vec<Managed>> = HashMap::new();
    for c in containers {
        by_app.entry(c.app.clone()).or_default().push(c);
    }
    by_app
}

/// Prints why each failing instance failed, with its last log lines.
fn print_failures(progress: &Progress, failures: &[(String, Vec<String>)]) {
    for (reason, lines) in failures {
        if lines.is_empty() {
            progress.detail(format!("{reason}; it wrote no log lines"));
        } else {
            progress.detail(format!("{reason}; its last log lines:"));
            for line in lines {
                progress.detail(format!("  {line}"));
            }
        }
    }
}

fn instance_number(p: &ProcessInstance) -> u32 {
    p.name
        .rsplit_once('.')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

/// Prints `web.1 crashed (exit code N), restarting` for every `die` event of a deploy's
/// containers and counts them.
async fn watch_crashes(
    engine: Engine,
    app: String,
    deploy_id: String,
    since: u64,
    progress: Progress,
    crashes: CrashLog,
) {
    let mut filters = engine.filters(Some(&app), None);
    if let Some(labels) = filters.get_mut("label") {
        labels.push(format!("{}={deploy_id}", engine.labels.deploy()));
    }
    let mut events = engine.container_events(filters, &["die"], Some(since));
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                debug!(error = %err, "crash watcher: event stream failed");
                return;
            }
        };
        let attributes = event.actor.and_then(|a| a.attributes).unwrap_or_default();
        let (Some(process), Some(n)) = (
            attributes.get(&engine.labels.process()),
            attributes.get(&engine.labels.instance()),
        ) else {
            continue;
        };
        let label = format!("{process}.{n}");
        let code = attributes
            .get("exitCode")
            .cloned()
            .unwrap_or_else(|| "unknown".into());
        {
            let mut crashes = lock(&crashes);
            let entry = crashes.entry(label.clone()).or_default();
            entry.count += 1;
            entry.last_exit_code = Some(code.clone());
        }
        progress.detail(format!("{label} crashed (exit code {code}), restarting"));
    }
}

/// Keeps the router in line with the containers: follows Docker's events for this
/// namespace and polls, and routes exactly the running, accepting web containers of
/// each app's current release.
async fn keep_routes(inner: Arc<Inner>, cancel: CancellationToken) {
    let mut events: Option<Events> = None;
    let mut reconnect_at = Instant::now();
    let mut fast = tokio::time::interval(FAST_REFRESH);
    fast.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_full = Instant::now();
    let mut pending: HashSet<String> = HashSet::new();
    loop {
        if events.is_none() && Instant::now() >= reconnect_at {
            let filters = inner.engine.filters(None, None);
            let kinds = ["start", "die", "destroy", "pause", "unpause", "stop"];
            events = Some(inner.engine.container_events(filters, &kinds, None));
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            event = next_event(&mut events) => match event {
                Some(Ok(event)) => {
                    let app = event
                        .actor
                        .and_then(|a| a.attributes)
                        .and_then(|mut a| a.remove(&inner.engine.labels.app()));
                    if let Some(app) = app {
                        pending.insert(app);
                    }
                }
                other => {
                    if let Some(Err(err)) = other {
                        debug!(error = %err, "route keeper: event stream failed; reconnecting");
                    }
                    events = None;
                    reconnect_at = Instant::now() + Duration::from_secs(2);
                }
            },
            _ = fast.tick() => {
                if last_full.elapsed() >= inner.options.refresh_interval {
                    last_full = Instant::now();
                    pending.extend(lock(&inner.apps).keys().cloned());
                }
            }
            _ = inner.wake.notified() => {}
        }
        pending.extend(lock(&inner.wake_apps).drain());
        if pending.is_empty() {
            continue;
        }
        let apps: Vec<String> = pending.drain().collect();
        let refreshed = tokio::time::timeout(Duration::from_secs(10), inner.refresh_apps(&apps));
        tokio::select! {
            _ = cancel.cancelled() => return,
            result = refreshed => match result {
                // Apps with instances that are not routed yet are checked again soon.
                Ok(incomplete) => pending.extend(incomplete),
                Err(_) => warn!("route keeper: refreshing routes took more than 10s"),
            },
        }
        // Let the fast ticker pace the re-checks instead of spinning.
        if !pending.is_empty() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = fast.tick() => {}
            }
        }
    }
}

#[async_trait]
impl Scheduler for DockerScheduler {
    async fn deploy(&self, spec: &DeploySpec, progress: &Progress) -> empire_core::Result<()> {
        self.inner
            .deploy(&extended::services_only(spec), progress)
            .await?;
        self.crons.arm(&self.inner, spec);
        extended::print_notes(spec, progress);
        Ok(())
    }

    async fn restore(&self, current: &[DeploySpec]) -> empire_core::Result<()> {
        // Borrowed unless a spec has cron or noservice processes: a gateway with many
        // apps would otherwise hold every spec twice at start.
        let services: Vec<Cow<'_, DeploySpec>> =
            current.iter().map(extended::services_only).collect();
        let restored = self.inner.restore(&services).await;
        self.crons.restore(&self.inner, current);
        Ok(restored?)
    }

    async fn remove_release(&self, app: &AppName, release: u32) -> empire_core::Result<()> {
        Ok(self.inner.remove_release(app.as_str(), release).await?)
    }

    async fn remove_app(&self, app: &AppName) -> empire_core::Result<()> {
        self.crons.disarm(app.as_str());
        Ok(self.inner.remove_app(app.as_str()).await?)
    }

    async fn processes(&self, app: &AppName) -> empire_core::Result<Vec<ProcessInstance>> {
        Ok(self.inner.processes(app.as_str()).await?)
    }

    async fn scale(&self, spec: &DeploySpec, progress: &Progress) -> empire_core::Result<()> {
        self.inner
            .scale(&extended::services_only(spec), progress)
            .await?;
        self.crons.arm(&self.inner, spec);
        Ok(())
    }

    async fn restart(
        &self,
        spec: &DeploySpec,
        target: &RestartTarget,
        progress: &Progress,
    ) -> empire_core::Result<()> {
        self.inner
            .restart(&extended::services_only(spec), target, progress)
            .await
    }

    async fn run(&self, spec: &OneOffSpec, io: Option<RunIo>) -> empire_core::Result<RunOutcome> {
        Ok(self.inner.run(spec, io).await?)
    }

    async fn logs(
        &self,
        app: &AppName,
        options: &LogOptions,
    ) -> empire_core::Result<mpsc::Receiver<LogLine>> {
        Ok(logs::stream(self.inner.clone(), app.as_str(), options).await?)
    }

    async fn set_domains(&self, app: &AppName, hostnames: &[String]) -> empire_core::Result<()> {
        self.inner
            .router
            .set_domains(app.as_str(), hostnames.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_seconds() {
        assert_eq!(seconds(Duration::from_secs(60)), "60s");
        assert_eq!(seconds(Duration::from_millis(2500)), "2.5s");
    }

    #[test]
    fn groups_containers_by_app() {
        let container = |id: &str, app: &str, process: &str| Managed {
            id: id.into(),
            app: app.into(),
            process: process.into(),
            instance: 1,
            release: 1,
            state: "running".into(),
            created: 0,
            host_port: None,
            oneoff: None,
        };
        let by_app = group_by_app(vec![
            container("a1", "alpha", "web"),
            container("b1", "beta", "worker"),
            container("a2", "alpha", "worker"),
        ]);
        let ids = |app: &str| -> Vec<String> {
            by_app
                .get(app)
                .map(|cs| cs.iter().map(|c| c.id.clone()).collect())
                .unwrap_or_default()
        };
        assert_eq!(by_app.len(), 2);
        assert_eq!(ids("alpha"), ["a1", "a2"]);
        assert_eq!(ids("beta"), ["b1"]);
        assert!(ids("gamma").is_empty());
        assert!(group_by_app(Vec::new()).is_empty());
    }

    #[test]
    fn validates_options() {
        assert!(DockerSchedulerOptions::default().validate().is_ok());
        let bad = DockerSchedulerOptions {
            namespace: "-bad ns".into(),
            ..Default::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("namespace"), "{err}");
    }
}
