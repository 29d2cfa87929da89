//! Cron processes on the docker scheduler: each process type with a `cron` schedule
//! (extended Procfile) gets a timer task that starts a detached one-off container
//! (`run.NNNN` in `ps` and `logs`, like any `run --detach`) each time the schedule
//! fires, with the current release's image, config, the process's own `environment`
//! over it, its command and size.
//!
//! - At most one run of a process type at a time: when the previous run still runs at
//!   the next fire, that fire is skipped. Runs carry `EMPIRE_CRON=<process type>` in
//!   their environment, which is how a run is recognised, also one started before a
//!   gateway restart.
//! - The timers follow the current release: a deploy (or a restore after a restart)
//!   hands them the new release and adds or drops timers as the Procfile changed; an
//!   unchanged schedule keeps its timer, so a `rate(…)` keeps its rhythm over deploys.
//!   A run already going keeps the release it started with.
//! - Removing the app (or dropping the scheduler) stops the timers; removing the app
//!   also removes runs in progress with its other containers.
//! - Schedules are in UTC. A fire missed while the gateway was down is not made up;
//!   `rate(…)` counts from when the timer was armed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};

use empire_core::schedule::Schedule;
use empire_core::scheduler::{DeploySpec, OneOffSpec, RunOutcome};
use time::OffsetDateTime;
use tracing::{debug, info, warn};

use super::engine::OneOff;
use super::{AbortOnDrop, Inner, lock};
use crate::error::DeployerError;

/// The variable that marks a container as a run of a cron process type.
pub(crate) const CRON_ENV: &str = "EMPIRE_CRON";

/// The release a timer starts its next run from.
type Current = Arc<Mutex<Arc<DeploySpec>>>;

/// One armed process type.
struct Armed {
    /// The schedule as written; a different one re-arms the timer.
    schedule: String,
    current: Current,
    _timer: AbortOnDrop,
}

/// The cron timers of every app, by app and process type.
#[derive(Default)]
pub(super) struct Crons {
    apps: Mutex<HashMap<String, HashMap<String, Armed>>>,
}

impl Crons {
    /// Arms the cron process types of `spec` (the release now current for its app),
    /// keeping the timers whose schedule did not change and stopping those of process
    /// types that are gone or no longer cron.
    pub(super) fn arm(&self, inner: &Arc<Inner>, spec: &DeploySpec) {
        let app = spec.app.as_str();
        let shared = Arc::new(spec.clone());
        let wanted: HashMap<&str, &str> = spec
            .processes
            .iter()
            .filter_map(|p| Some((p.name.as_str(), p.cron.as_deref()?)))
            .collect();
        let mut apps = lock(&self.apps);
        let armed = apps.entry(app.to_string()).or_default();
        armed.retain(|process, a| wanted.get(process.as_str()) == Some(&a.schedule.as_str()));
        for (process, text) in wanted {
            if let Some(a) = armed.get(process) {
                *lock(&a.current) = shared.clone();
                continue;
            }
            let schedule = match Schedule::parse(text) {
                Ok(schedule) => schedule,
                Err(err) => {
                    // The Procfile was checked when the release was built.
                    warn!(app, process, %err, "cron: not a schedule; the process does not run");
                    continue;
                }
            };
            info!(
                app,
                process,
                schedule = text,
                release = spec.release,
                "cron: armed"
            );
            let current: Current = Arc::new(Mutex::new(shared.clone()));
            let timer = tokio::spawn(keep_schedule(
                Arc::downgrade(inner),
                app.to_string(),
                process.to_string(),
                schedule,
                current.clone(),
            ));
            armed.insert(
                process.to_string(),
                Armed {
                    schedule: text.to_string(),
                    current,
                    _timer: AbortOnDrop(timer),
                },
            );
        }
        if armed.is_empty() {
            apps.remove(app);
        }
    }

    /// Stops the timers of an app.
    pub(super) fn disarm(&self, app: &str) {
        if lock(&self.apps).remove(app).is_some() {
            info!(app, "cron: disarmed");
        }
    }

    /// After a restore: arms the current releases and stops the timers of other apps.
    pub(super) fn restore(&self, inner: &Arc<Inner>, current: &[DeploySpec]) {
        let live: HashSet<&str> = current.iter().map(|s| s.app.as_str()).collect();
        lock(&self.apps).retain(|app, _| live.contains(app.as_str()));
        for spec in current {
            self.arm(inner, spec);
        }
    }
}

/// Waits for each fire of `schedule` and starts a run; stops when the scheduler is gone
/// or the schedule never fires again.
async fn keep_schedule(
    inner: Weak<Inner>,
    app: String,
    process: String,
    schedule: Schedule,
    current: Current,
) {
    let mut after = OffsetDateTime::now_utc();
    loop {
        let Some(next) = schedule.next_after(after) else {
            info!(app, process, "cron: the schedule fires no more");
            return;
        };
        let wait = next - OffsetDateTime::now_utc();
        if wait.is_positive() {
            tokio::time::sleep(wait.unsigned_abs()).await;
        }
        // Fires missed while waiting (a suspended host) are not made up.
        let now = OffsetDateTime::now_utc();
        after = match schedule.next_after(next) {
            Some(following) if following <= now => now,
            _ => next,
        };
        let Some(inner) = inner.upgrade() else { return };
        let spec = lock(&current).clone();
        match fire(&inner, &spec, &process).await {
            Ok(Some(name)) => {
                info!(app, process, instance = %name, release = spec.release, "cron: started")
            }
            Ok(None) => {}
            Err(err) => warn!(app, process, %err, "cron: the run did not start"),
        }
    }
}

/// Starts one run of `process` from `spec`, unless the previous one still runs.
/// Returns the run's name (`run.1234`).
async fn fire(
    inner: &Inner,
    spec: &DeploySpec,
    process: &str,
) -> Result<Option<String>, DeployerError> {
    let app = spec.app.as_str();
    let Some(p) = spec.processes.iter().find(|p| p.name == process) else {
        return Ok(None);
    };
    if let Some(running) = running_run(inner, app, process).await? {
        warn!(app, process, previous = %running, "cron: the previous run still runs; skipping this one");
        return Ok(None);
    }
    let mut config = spec.config.clone();
    config.extend(p.environment.clone());
    config.insert(CRON_ENV.to_string(), process.to_string());
    let run = OneOffSpec {
        app: spec.app.clone(),
        release: spec.release,
        image: spec.image.clone(),
        config,
        command: p.command.clone().unwrap_or_default(),
        size: p.size,
        tty: false,
    };
    match inner.run(&run, None).await? {
        RunOutcome::Detached { name, .. } => Ok(Some(name)),
        RunOutcome::Exited(_) => Ok(None),
    }
}

/// The name of a run of `process` that is still going, if any.
async fn running_run(
    inner: &Inner,
    app: &str,
    process: &str,
) -> Result<Option<String>, DeployerError> {
    let marker = format!("{CRON_ENV}={process}");
    let detached = inner
        .engine
        .list(Some(app), None)
        .await?
        .into_iter()
        .filter(|c| {
            c.oneoff == Some(OneOff::Detached) && !matches!(c.state.as_str(), "exited" | "dead")
        });
    for c in detached {
        match inner.engine.inspect(&c.id).await {
            Ok(info) => {
                let env = info.config.and_then(|c| c.env).unwrap_or_default();
                if env.contains(&marker) {
                    return Ok(Some(c.label()));
                }
            }
            // Gone meanwhile (runs remove themselves when they exit).
            Err(err) => debug!(container = %c.id, %err, "cron: inspect failed"),
        }
    }
    Ok(None)
}
