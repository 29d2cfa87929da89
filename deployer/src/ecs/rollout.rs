//! Following ECS deployments to their end: each service's deployment of the new task
//! definition until its rolloutState is COMPLETED or FAILED, or a timeout, with a
//! progress line whenever its counts change and one for each new service event.
//!
//! The describe calls come from a [`ServiceSource`], so tests drive the logic with
//! scripted responses (moto never launches tasks, so a rollout cannot be followed there).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use empire_core::progress::Progress;
use tokio::time::Instant;

use super::aws::{Clients, describe_services};
use super::error::EcsError;
use super::plan::Environment;

/// One deployment of a service, as ECS describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeploymentState {
    /// Its id.
    pub id: String,
    /// `PRIMARY` (the newest), `ACTIVE` (being replaced) or `INACTIVE`.
    pub status: String,
    /// The task definition it runs.
    pub task_definition: String,
    /// `IN_PROGRESS`, `COMPLETED` or `FAILED` (with the circuit breaker on).
    pub rollout_state: Option<String>,
    /// Why it is in that state.
    pub rollout_state_reason: Option<String>,
    /// Tasks wanted.
    pub desired: u32,
    /// Tasks running.
    pub running: u32,
    /// Tasks starting.
    pub pending: u32,
    /// Tasks that failed to start or stay up.
    pub failed: u32,
}

/// A service event (`(service acme_web) has reached a steady state.`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceEvent {
    /// Its id.
    pub id: String,
    /// When it happened, in milliseconds since the epoch.
    pub at_millis: i64,
    /// What ECS says.
    pub message: String,
}

/// A service as the rollout follower sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceState {
    /// `<app>_<process>`.
    pub name: String,
    /// Its deployments.
    pub deployments: Vec<DeploymentState>,
    /// Its latest events, newest first as ECS lists them.
    pub events: Vec<ServiceEvent>,
}

/// Where service descriptions come from.
#[async_trait]
pub trait ServiceSource: Send + Sync {
    /// Describes the named services (those that do not exist are left out).
    async fn describe(&self, names: &[String]) -> Result<Vec<ServiceState>, EcsError>;
}

/// ECS itself.
pub struct EcsSource<'a> {
    /// The clients.
    pub clients: &'a Clients,
    /// The environment (the cluster).
    pub env: &'a Environment,
}

#[async_trait]
impl ServiceSource for EcsSource<'_> {
    async fn describe(&self, names: &[String]) -> Result<Vec<ServiceState>, EcsError> {
        let services = describe_services(self.clients, self.env, names).await?;
        Ok(services
            .iter()
            .map(|s| ServiceState {
                name: s.service_name().unwrap_or_default().to_string(),
                deployments: s
                    .deployments()
                    .iter()
                    .map(|d| DeploymentState {
                        id: d.id().unwrap_or_default().to_string(),
                        status: d.status().unwrap_or_default().to_string(),
                        task_definition: d.task_definition().unwrap_or_default().to_string(),
                        rollout_state: d.rollout_state().map(|r| r.as_str().to_string()),
                        rollout_state_reason: d.rollout_state_reason().map(str::to_string),
                        desired: u32::try_from(d.desired_count()).unwrap_or(0),
                        running: u32::try_from(d.running_count()).unwrap_or(0),
                        pending: u32::try_from(d.pending_count()).unwrap_or(0),
                        failed: u32::try_from(d.failed_tasks()).unwrap_or(0),
                    })
                    .collect(),
                events: s
                    .events()
                    .iter()
                    .map(|e| ServiceEvent {
                        id: e.id().unwrap_or_default().to_string(),
                        at_millis: e
                            .created_at()
                            .map(|t| t.to_millis().unwrap_or(0))
                            .unwrap_or(0),
                        message: e.message().unwrap_or_default().to_string(),
                    })
                    .collect(),
            })
            .collect())
    }
}

/// A deployment to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// The process type (the prefix of its progress lines).
    pub process: String,
    /// The service.
    pub service: String,
    /// The task definition the service moves to.
    pub task_definition: String,
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every deployment completed.
    Completed,
    /// A deployment failed (ECS's circuit breaker rolls that service back).
    Failed {
        /// Its process type.
        process: String,
        /// Why, in ECS's words.
        reason: String,
        /// Whether ECS already puts the service back (its circuit breaker).
        rolled_back_by_ecs: bool,
    },
    /// Deployments were still going when the time was up.
    TimedOut {
        /// Their process types.
        waiting: Vec<String>,
    },
}

/// How one service's deployment stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Waiting,
    Completed,
    Failed(String, bool),
}

fn status_of(state: &ServiceState, watch: &Watch) -> (Status, Option<(u32, u32, u32, u32)>) {
    let primary = state.deployments.iter().find(|d| d.status == "PRIMARY");
    let ours = primary
        .filter(|d| d.task_definition == watch.task_definition)
        .or_else(|| {
            state
                .deployments
                .iter()
                .find(|d| d.task_definition == watch.task_definition)
        });
    let Some(ours) = ours else {
        return match primary {
            // Another deployment took over: the circuit breaker rolled back.
            Some(primary) => (
                Status::Failed(
                    format!(
                        "ECS rolled {} back to {}",
                        watch.service,
                        super::aws::short_arn(&primary.task_definition)
                    ),
                    true,
                ),
                None,
            ),
            None => (Status::Waiting, None),
        };
    };
    let counts = Some((ours.running, ours.desired, ours.pending, ours.failed));
    let status = match ours.rollout_state.as_deref() {
        Some("COMPLETED") => Status::Completed,
        Some("FAILED") => Status::Failed(
            ours.rollout_state_reason
                .clone()
                .unwrap_or_else(|| "the deployment failed".into()),
            true,
        ),
        _ if ours.status != "PRIMARY" => Status::Failed(
            format!(
                "ECS rolled {} back to {}",
                watch.service,
                primary
                    .map(|p| super::aws::short_arn(&p.task_definition).to_string())
                    .unwrap_or_else(|| "an earlier task definition".into())
            ),
            true,
        ),
        // Without the circuit breaker's states: done when it alone runs, all of it.
        None if state.deployments.len() == 1 && ours.running == ours.desired => Status::Completed,
        _ => Status::Waiting,
    };
    (status, counts)
}

/// Follows the deployments until all completed, one failed, or `timeout` passed.
/// Prints events newer than `since_millis`.
pub async fn follow(
    source: &dyn ServiceSource,
    watches: &[Watch],
    timeout: Duration,
    poll: Duration,
    since_millis: i64,
    progress: &Progress,
) -> Result<Outcome, EcsError> {
    let deadline = Instant::now() + timeout;
    let names: Vec<String> = watches.iter().map(|w| w.service.clone()).collect();
    let mut seen_events: HashSet<String> = HashSet::new();
    let mut last_counts: BTreeMap<String, (u32, u32, u32, u32)> = BTreeMap::new();
    let mut done: HashSet<String> = HashSet::new();
    loop {
        let states = source.describe(&names).await?;
        for watch in watches {
            if done.contains(&watch.service) {
                continue;
            }
            let Some(state) = states.iter().find(|s| s.name == watch.service) else {
                continue;
            };
            // Events oldest first, each once.
            for event in state.events.iter().rev() {
                if event.at_millis >= since_millis && seen_events.insert(event.id.clone()) {
                    progress.detail(format!("{}: {}", watch.process, event.message));
                }
            }
            let (status, counts) = status_of(state, watch);
            if let Some(counts) = counts
                && last_counts.get(&watch.service) != Some(&counts)
            {
                last_counts.insert(watch.service.clone(), counts);
                let (running, desired, pending, failed) = counts;
                let mut line = format!("{}: {running}/{desired} running", watch.process);
                if pending > 0 {
                    line.push_str(&format!(", {pending} pending"));
                }
                if failed > 0 {
                    line.push_str(&format!(", {failed} failed"));
                }
                progress.detail(line);
            }
            match status {
                Status::Waiting => {}
                Status::Completed => {
                    progress.detail(format!("{}: rollout completed", watch.process));
                    done.insert(watch.service.clone());
                }
                Status::Failed(reason, rolled_back_by_ecs) => {
                    return Ok(Outcome::Failed {
                        process: watch.process.clone(),
                        reason,
                        rolled_back_by_ecs,
                    });
                }
            }
        }
        if done.len() == watches.len() {
            return Ok(Outcome::Completed);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Outcome::TimedOut {
                waiting: watches
                    .iter()
                    .filter(|w| !done.contains(&w.service))
                    .map(|w| w.process.clone())
                    .collect(),
            });
        }
        tokio::time::sleep(poll.min(deadline - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Answers each describe with the next scripted response (the last one repeats).
    struct Script {
        responses: Mutex<Vec<Vec<ServiceState>>>,
        calls: Mutex<u32>,
    }

    impl Script {
        fn new(mut responses: Vec<Vec<ServiceState>>) -> Self {
            responses.reverse();
            Script {
                responses: Mutex::new(responses),
                calls: Mutex::new(0),
            }
        }
    }

    #[async_trait]
    impl ServiceSource for Script {
        async fn describe(&self, names: &[String]) -> Result<Vec<ServiceState>, EcsError> {
            *self.calls.lock().unwrap() += 1;
            let mut responses = self.responses.lock().unwrap();
            let response = if responses.len() > 1 {
                responses.pop().unwrap()
            } else {
                responses.last().cloned().unwrap_or_default()
            };
            Ok(response
                .into_iter()
                .filter(|s| names.contains(&s.name))
                .collect())
        }
    }

    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);
    impl empire_core::progress::ProgressSink for Lines {
        fn write_line(&self, line: &str) {
            self.0.lock().unwrap().push(line.to_string());
        }
    }

    fn deployment(
        status: &str,
        td: &str,
        rollout: Option<&str>,
        (running, desired, pending): (u32, u32, u32),
    ) -> DeploymentState {
        DeploymentState {
            id: format!("ecs-svc/{td}"),
            status: status.into(),
            task_definition: td.into(),
            rollout_state: rollout.map(str::to_string),
            rollout_state_reason: None,
            desired,
            running,
            pending,
            failed: 0,
        }
    }

    fn service(
        name: &str,
        deployments: Vec<DeploymentState>,
        events: &[(&str, i64, &str)],
    ) -> ServiceState {
        ServiceState {
            name: name.into(),
            deployments,
            events: events
                .iter()
                .map(|(id, at, message)| ServiceEvent {
                    id: id.to_string(),
                    at_millis: *at,
                    message: message.to_string(),
                })
                .collect(),
        }
    }

    fn watch(process: &str, td: &str) -> Watch {
        Watch {
            process: process.into(),
            service: format!("acme_{process}"),
            task_definition: td.into(),
        }
    }

    async fn run(script: Script, watches: &[Watch], timeout_ms: u64) -> (Outcome, Vec<String>) {
        let lines = Arc::new(Lines::default());
        let progress = Progress::new(lines.clone());
        let outcome = follow(
            &script,
            watches,
            Duration::from_millis(timeout_ms),
            Duration::from_millis(1),
            1000,
            &progress,
        )
        .await
        .unwrap();
        let lines = lines.0.lock().unwrap().clone();
        (outcome, lines)
    }

    #[tokio::test]
    async fn follows_a_deployment_to_completed() {
        let old = "arn:td/acme_web:1";
        let new = "arn:td/acme_web:2";
        let script = Script::new(vec![
            vec![service(
                "acme_web",
                vec![
                    deployment("PRIMARY", new, Some("IN_PROGRESS"), (0, 2, 0)),
                    deployment("ACTIVE", old, Some("COMPLETED"), (2, 2, 0)),
                ],
                &[("old", 10, "an event from before the deploy")],
            )],
            vec![service(
                "acme_web",
                vec![
                    deployment("PRIMARY", new, Some("IN_PROGRESS"), (0, 2, 2)),
                    deployment("ACTIVE", old, Some("COMPLETED"), (2, 2, 0)),
                ],
                &[
                    (
                        "e1",
                        2000,
                        "(service acme_web) has started 2 tasks: (task a) (task b).",
                    ),
                    ("old", 10, "an event from before the deploy"),
                ],
            )],
            // Nothing changed: no line.
            vec![service(
                "acme_web",
                vec![
                    deployment("PRIMARY", new, Some("IN_PROGRESS"), (0, 2, 2)),
                    deployment("ACTIVE", old, Some("COMPLETED"), (2, 2, 0)),
                ],
                &[(
                    "e1",
                    2000,
                    "(service acme_web) has started 2 tasks: (task a) (task b).",
                )],
            )],
            vec![service(
                "acme_web",
                vec![deployment("PRIMARY", new, Some("COMPLETED"), (2, 2, 0))],
                &[
                    ("e2", 3000, "(service acme_web) has reached a steady state."),
                    (
                        "e1",
                        2000,
                        "(service acme_web) has started 2 tasks: (task a) (task b).",
                    ),
                ],
            )],
        ]);
        let (outcome, lines) = run(script, &[watch("web", new)], 5000).await;
        assert_eq!(outcome, Outcome::Completed);
        assert_eq!(
            lines,
            [
                "       web: 0/2 running",
                "       web: (service acme_web) has started 2 tasks: (task a) (task b).",
                "       web: 0/2 running, 2 pending",
                "       web: (service acme_web) has reached a steady state.",
                "       web: 2/2 running",
                "       web: rollout completed",
            ]
        );
    }

    #[tokio::test]
    async fn a_failed_deployment_fails_with_its_reason() {
        let new = "arn:td/acme_web:2";
        let mut failed = deployment("PRIMARY", new, Some("FAILED"), (0, 2, 0));
        failed.rollout_state_reason =
            Some("ECS deployment circuit breaker: tasks failed to start.".into());
        failed.failed = 4;
        let script = Script::new(vec![
            vec![service(
                "acme_web",
                vec![deployment("PRIMARY", new, Some("IN_PROGRESS"), (0, 2, 1))],
                &[],
            )],
            vec![service("acme_web", vec![failed], &[])],
        ]);
        let (outcome, lines) = run(script, &[watch("web", new)], 5000).await;
        assert_eq!(
            outcome,
            Outcome::Failed {
                process: "web".into(),
                reason: "ECS deployment circuit breaker: tasks failed to start.".into(),
                rolled_back_by_ecs: true,
            }
        );
        assert_eq!(lines.last().unwrap(), "       web: 0/2 running, 4 failed");
    }

    #[tokio::test]
    async fn a_rollback_by_the_circuit_breaker_is_a_failure() {
        let old = "arn:td/acme_web:1";
        let new = "arn:td/acme_web:2";
        let script = Script::new(vec![vec![service(
            "acme_web",
            vec![deployment("PRIMARY", old, Some("IN_PROGRESS"), (1, 2, 0))],
            &[],
        )]]);
        let (outcome, _) = run(script, &[watch("web", new)], 5000).await;
        let Outcome::Failed { reason, .. } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(reason, "ECS rolled acme_web back to acme_web:1");
    }

    #[tokio::test]
    async fn a_stall_times_out() {
        let new = "arn:td/acme_web:2";
        let script = Script::new(vec![vec![service(
            "acme_web",
            vec![deployment("PRIMARY", new, Some("IN_PROGRESS"), (1, 2, 1))],
            &[],
        )]]);
        let started = std::time::Instant::now();
        let (outcome, lines) = run(script, &[watch("web", new)], 50).await;
        assert_eq!(
            outcome,
            Outcome::TimedOut {
                waiting: vec!["web".into()]
            }
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
        // One line for the one state it was in.
        assert_eq!(lines, ["       web: 1/2 running, 1 pending"]);
    }

    #[tokio::test]
    async fn one_of_several_services_failing_stops_the_rollout() {
        let web = "arn:td/acme_web:2";
        let worker = "arn:td/acme_worker:2";
        let script = Script::new(vec![
            vec![
                service(
                    "acme_web",
                    vec![deployment("PRIMARY", web, Some("COMPLETED"), (2, 2, 0))],
                    &[],
                ),
                service(
                    "acme_worker",
                    vec![deployment(
                        "PRIMARY",
                        worker,
                        Some("IN_PROGRESS"),
                        (0, 1, 1),
                    )],
                    &[],
                ),
            ],
            vec![
                service(
                    "acme_web",
                    vec![deployment("PRIMARY", web, Some("COMPLETED"), (2, 2, 0))],
                    &[],
                ),
                service(
                    "acme_worker",
                    vec![DeploymentState {
                        rollout_state_reason: Some("tasks failed to start".into()),
                        ..deployment("PRIMARY", worker, Some("FAILED"), (0, 1, 0))
                    }],
                    &[(
                        "w1",
                        5000,
                        "(service acme_worker) is unable to consistently start tasks successfully.",
                    )],
                ),
            ],
        ]);
        let (outcome, lines) =
            run(script, &[watch("web", web), watch("worker", worker)], 5000).await;
        assert_eq!(
            outcome,
            Outcome::Failed {
                process: "worker".into(),
                reason: "tasks failed to start".into(),
                rolled_back_by_ecs: true,
            }
        );
        assert!(
            lines.contains(&"       web: rollout completed".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(
                &"       worker: (service acme_worker) is unable to consistently start tasks successfully."
                    .to_string()
            ),
            "{lines:?}"
        );
    }

    #[tokio::test]
    async fn without_rollout_states_a_single_full_deployment_is_complete() {
        let new = "arn:td/acme_worker:3";
        let script = Script::new(vec![
            vec![service(
                "acme_worker",
                vec![
                    deployment("PRIMARY", new, None, (1, 1, 0)),
                    deployment("ACTIVE", "arn:td/acme_worker:2", None, (1, 1, 0)),
                ],
                &[],
            )],
            vec![service(
                "acme_worker",
                vec![deployment("PRIMARY", new, None, (1, 1, 0))],
                &[],
            )],
        ]);
        let (outcome, _) = run(script, &[watch("worker", new)], 5000).await;
        assert_eq!(outcome, Outcome::Completed);
    }
}
