//! Scaling and restarting the current release of an app without a new release: fresh
//! instances start and must become healthy before they take traffic and before the
//! instances they replace drain and stop.

use std::collections::{BTreeMap, HashSet};

use empire_core::formation::ProcessSize;
use empire_core::progress::Progress;
use empire_core::scheduler::{DeploySpec, ProcessSpec, RestartTarget};
use futures_util::future::join_all;
use tracing::info;

use super::engine::{Managed, ROUTED_PROCESS};
use super::{AppState, Inner, Launched, Rollout, lock, seconds};
use crate::error::DeployerError;

/// The containers of one process type by instance number, with their sizes (`None`
/// when they could not be inspected).
type Instances = BTreeMap<u32, Vec<(Managed, Option<ProcessSize>)>>;

/// A container a rollout stops once its new instances are healthy.
struct Retired {
    container: Managed,
    /// A fresh instance with the same name takes its place.
    replaced: bool,
}

impl Inner {
    /// The containers of the current release, when `spec` is the release this scheduler
    /// serves for its app.
    async fn current_containers(
        &self,
        spec: &DeploySpec,
    ) -> Result<Option<Vec<Managed>>, DeployerError> {
        let app = spec.app.as_str();
        let active = match lock(&self.apps).get(app) {
            Some(state) if state.release == spec.release => state.active.clone(),
            _ => return Ok(None),
        };
        let containers = self.engine.list(Some(app), None).await?;
        Ok(Some(
            containers
                .into_iter()
                .filter(|c| active.contains(&c.id))
                .collect(),
        ))
    }

    /// Converges the current release to the quantities and sizes of `spec`.
    pub(super) async fn scale(
        &self,
        spec: &DeploySpec,
        progress: &Progress,
    ) -> empire_core::Result<()> {
        let Some(containers) = self.current_containers(spec).await? else {
            // Nothing of this release runs here: roll it out in full.
            info!(app = %spec.app, release = spec.release, "scaling a release that does not run; deploying it");
            return self.deploy(spec, progress).await;
        };
        let step = progress.step(format!("Scaling the processes of v{}", spec.release));
        let sizes = join_all(containers.iter().map(|c| self.engine.size_of(&c.id))).await;

        // Every container of the release by process type and instance number.
        let mut existing: BTreeMap<String, Instances> = BTreeMap::new();
        for (c, size) in containers.into_iter().zip(sizes) {
            existing
                .entry(c.process.clone())
                .or_default()
                .entry(c.instance)
                .or_default()
                .push((c, size.ok()));
        }

        let mut start: Vec<(&ProcessSpec, u32)> = Vec::new();
        let mut retire: Vec<Retired> = Vec::new();
        for process in &spec.processes {
            let mut instances = existing.remove(&process.name).unwrap_or_default();
            for n in 1..=process.quantity {
                let candidates = instances.remove(&n).unwrap_or_default();
                // Keep one that runs (or is being restarted by Docker) with the right size.
                let keep = candidates.iter().position(|(c, size)| {
                    *size == Some(process.size) && (c.is_running() || c.state == "restarting")
                });
                if keep.is_none() {
                    start.push((process, n));
                }
                for (i, (c, _)) in candidates.into_iter().enumerate() {
                    if Some(i) != keep {
                        retire.push(Retired {
                            container: c,
                            replaced: true,
                        });
                    }
                }
            }
            // Surplus instances.
            retire.extend(instances.into_values().flatten().map(|(c, _)| Retired {
                container: c,
                replaced: false,
            }));
        }
        // Process types the release no longer runs.
        retire.extend(
            existing
                .into_values()
                .flat_map(BTreeMap::into_values)
                .flatten()
                .map(|(c, _)| Retired {
                    container: c,
                    replaced: false,
                }),
        );

        if start.is_empty() && retire.is_empty() {
            progress.detail("Every process already runs as requested");
        } else {
            self.roll(spec, start, retire, progress).await?;
        }
        step.done(format!("Scaled v{}", spec.release));
        Ok(())
    }

    /// Replaces the targeted instances of the current release with fresh ones.
    pub(super) async fn restart(
        &self,
        spec: &DeploySpec,
        target: &RestartTarget,
        progress: &Progress,
    ) -> empire_core::Result<()> {
        let find = |name: &str| spec.processes.iter().find(|p| p.name == name);
        let what = match target {
            RestartTarget::All => "every process".to_string(),
            RestartTarget::Process(name) => {
                if find(name).is_none() {
                    return Err(empire_core::Error::not_found("process type", name.clone()));
                }
                format!("{name} processes")
            }
            RestartTarget::Instance(name, n) => {
                let label = format!("{name}.{n}");
                if !find(name).is_some_and(|p| (1..=p.quantity).contains(n)) {
                    return Err(empire_core::Error::not_found("process", label));
                }
                label
            }
        };
        let Some(containers) = self.current_containers(spec).await? else {
            info!(app = %spec.app, release = spec.release, "restarting a release that does not run; deploying it");
            return self.deploy(spec, progress).await;
        };
        let step = progress.step(format!("Restarting {what} of v{}", spec.release));

        let targeted = |process: &str, n: u32| match target {
            RestartTarget::All => true,
            RestartTarget::Process(name) => name == process,
            RestartTarget::Instance(name, m) => name == process && *m == n,
        };
        let mut start: Vec<(&ProcessSpec, u32)> = Vec::new();
        for process in &spec.processes {
            for n in 1..=process.quantity {
                if targeted(&process.name, n) {
                    start.push((process, n));
                }
            }
        }
        let retire: Vec<Retired> = containers
            .into_iter()
            .filter(|c| targeted(&c.process, c.instance))
            .map(|c| {
                let replaced = start
                    .iter()
                    .any(|(p, n)| p.name == c.process && *n == c.instance);
                Retired {
                    container: c,
                    replaced,
                }
            })
            .collect();

        if start.is_empty() && retire.is_empty() {
            progress.detail(format!("v{} runs no processes", spec.release));
        } else {
            self.roll(spec, start, retire, progress).await?;
        }
        step.done(format!("Restarted {what}"));
        Ok(())
    }

    /// Starts `start`, waits until every one of them is healthy, routes the new web
    /// instances in place of the retired ones, drains those and stops every retired
    /// container. When a new instance does not become healthy, removes the new ones,
    /// leaves everything else as it was and fails with the reason and its logs.
    async fn roll(
        &self,
        spec: &DeploySpec,
        mut start: Vec<(&ProcessSpec, u32)>,
        mut retire: Vec<Retired>,
        progress: &Progress,
    ) -> empire_core::Result<()> {
        let app = spec.app.as_str();
        start.sort_by_key(|(p, n)| (p.name != ROUTED_PROCESS, p.name.clone(), *n));
        let Launched {
            started,
            backends,
            cleanup,
        } = self
            .launch(spec, start, Rollout::Instances, progress)
            .await?;

        // Healthy: route the new instances in place of the retired ones.
        let retired_ids: HashSet<String> = retire.iter().map(|r| r.container.id.clone()).collect();
        {
            let mut apps = lock(&self.apps);
            let generation = self.next_generation();
            let state = apps.entry(app.to_string()).or_insert_with(|| AppState {
                release: spec.release,
                generation,
                active: HashSet::new(),
            });
            state.generation = generation;
            state.active.retain(|id| !retired_ids.contains(id));
            state.active.extend(started.iter().map(|s| s.id.clone()));
            let mut routed = self.router.backends(app).unwrap_or_default();
            routed.retain(|b| !retired_ids.contains(&b.id));
            routed.extend(backends);
            self.router.set_backends(app, routed);
        }
        cleanup.disarm();

        if let Some(left) = self
            .drain_retired(app, |b| retired_ids.contains(&b.id))
            .await
        {
            progress.detail(format!(
                "{left} still running after {}; stopping the processes anyway",
                seconds(self.options.drain_timeout)
            ));
        }

        join_all(retire.iter().map(|r| {
            self.engine
                .stop_and_remove(&r.container.id, self.options.stop_grace)
        }))
        .await;
        retire.sort_by_key(|r| {
            (
                r.container.process != ROUTED_PROCESS,
                r.container.process.clone(),
                r.container.instance,
            )
        });
        for r in &retire {
            if r.replaced {
                progress.detail(format!("previous {} stopped", r.container.label()));
            } else {
                progress.detail(format!("{} stopped", r.container.label()));
            }
        }
        // Let the route keeper pick up anything that changed meanwhile.
        self.wake(app);
        Ok(())
    }
}
