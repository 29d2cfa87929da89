//! The operations beside deploys: `ps`, `restart`, detached `run`, removing a release
//! or an app.

use std::collections::BTreeMap;

use aws_sdk_ecs::types as ecs;
use empire_core::progress::Progress;
use empire_core::scheduler::{
    DeploySpec, OneOffSpec, ProcessInstance, ProcessSpec, RestartTarget, RunOutcome,
};
use futures_util::future::join_all;
use time::OffsetDateTime;
use tracing::warn;

use super::aws::{Scope, ecs_network, list_app_services, network_of, observe, short_arn};
use super::error::{EcsError, call};
use super::plan::{
    Action, Observed, Plan, RUN, TAG_RELEASE, TaskDefinitionRef, family, parameter_release,
    parse_release, plan_parameters, plan_remove_app, process_of, tags, task_definition,
};
use super::{Inner, by_name};

/// Who ECS says started Empire's one-off tasks.
const STARTED_BY: &str = "empire";

impl Inner {
    /// Lists tasks (RUNNING and PENDING) of a service or a family.
    async fn list_tasks(
        &self,
        service: Option<&str>,
        family_name: Option<&str>,
    ) -> Result<Vec<String>, EcsError> {
        let mut arns = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = call("listing tasks", || {
                self.clients
                    .ecs
                    .list_tasks()
                    .cluster(&self.env.cluster)
                    .set_service_name(service.map(str::to_string))
                    .set_family(family_name.map(str::to_string))
                    .set_next_token(token.clone())
                    .send()
            })
            .await?;
            arns.extend(page.task_arns().iter().cloned());
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(arns);
            }
        }
    }

    /// The tasks of a family started with `started_by`.
    async fn list_tasks_started_by(
        &self,
        family_name: &str,
        started_by: &str,
    ) -> Result<Vec<String>, EcsError> {
        let page = call("listing tasks", || {
            self.clients
                .ecs
                .list_tasks()
                .cluster(&self.env.cluster)
                .family(family_name)
                .started_by(started_by)
                .send()
        })
        .await?;
        Ok(page.task_arns().to_vec())
    }

    async fn describe_tasks(&self, arns: &[String]) -> Result<Vec<ecs::Task>, EcsError> {
        let batches = join_all(arns.chunks(100).map(|batch| {
            call("describing tasks", move || {
                self.clients
                    .ecs
                    .describe_tasks()
                    .cluster(&self.env.cluster)
                    .set_tasks(Some(batch.to_vec()))
                    .include(ecs::TaskField::Tags)
                    .send()
            })
        }))
        .await;
        let mut tasks = Vec::new();
        for batch in batches {
            tasks.extend(batch?.tasks().iter().cloned());
        }
        Ok(tasks)
    }

    /// The release of each task definition, from its `empire.release` tag.
    async fn releases_of(&self, arns: Vec<String>) -> BTreeMap<String, u32> {
        let described = join_all(arns.iter().map(|arn| {
            call("describing a task definition", move || {
                self.clients
                    .ecs
                    .describe_task_definition()
                    .task_definition(arn)
                    .include(ecs::TaskDefinitionField::Tags)
                    .send()
            })
        }))
        .await;
        arns.into_iter()
            .zip(described)
            .filter_map(|(arn, d)| {
                let d = d.ok()?;
                let release = d
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some(TAG_RELEASE))
                    .and_then(|t| t.value())
                    .and_then(parse_release)
                    .or_else(|| {
                        d.task_definition()?
                            .container_definitions()
                            .first()?
                            .environment()
                            .iter()
                            .find(|kv| kv.name() == Some("EMPIRE_RELEASE"))
                            .and_then(|kv| kv.value())
                            .and_then(parse_release)
                    })?;
                Some((arn, release))
            })
            .collect()
    }

    /// The app's service tasks (`web.1`, … by start time) and one-off tasks (`run.<id>`).
    pub(crate) async fn processes(&self, app: &str) -> Result<Vec<ProcessInstance>, EcsError> {
        let services = list_app_services(&self.clients, &self.env, app).await?;
        let run_family = family(app, RUN);
        let mut lists = join_all(services.iter().map(|s| self.list_tasks(Some(s), None))).await;
        lists.push(self.list_tasks(None, Some(&run_family)).await);
        let mut arns = Vec::new();
        let mut listed: Vec<(String, String)> = Vec::new();
        let sources = services
            .iter()
            .map(|s| process_of(app, s).unwrap_or(s).to_string());
        for (process, list) in sources.chain(std::iter::once(RUN.to_string())).zip(lists) {
            for arn in list? {
                listed.push((process.clone(), arn.clone()));
                arns.push(arn);
            }
        }
        arns.sort();
        arns.dedup();
        let tasks = match self.describe_tasks(&arns).await {
            Ok(tasks) => tasks,
            // What the listing says, without states or times.
            Err(err) if err.is_unreadable_response() => {
                warn!(app, error = %err, "DescribeTasks answered unreadably; listing tasks only");
                return Ok(listed_only(listed));
            }
            Err(err) => return Err(err),
        };
        let mut definitions: Vec<String> = tasks
            .iter()
            .filter_map(|t| t.task_definition_arn().map(str::to_string))
            .collect();
        definitions.sort();
        definitions.dedup();
        let releases = self.releases_of(definitions).await;

        let mut by_process: BTreeMap<String, Vec<&ecs::Task>> = BTreeMap::new();
        for task in &tasks {
            let Some(td) = task.task_definition_arn() else {
                continue;
            };
            let family_name = short_arn(td).rsplit_once(':').map(|(f, _)| f).unwrap_or("");
            if let Some(process) = process_of(app, family_name) {
                by_process
                    .entry(process.to_string())
                    .or_default()
                    .push(task);
            }
        }
        let mut instances = Vec::new();
        for (process, mut tasks) in by_process {
            tasks.sort_by_key(|t| {
                (
                    t.started_at().or(t.created_at()).map(|d| d.secs()),
                    t.task_arn().map(str::to_string),
                )
            });
            for (i, task) in tasks.iter().enumerate() {
                let id = task_id(task.task_arn().unwrap_or_default());
                let name = if process == RUN {
                    format!("{RUN}.{}", short_id(id))
                } else {
                    format!("{process}.{}", i + 1)
                };
                let state = match task.last_status().unwrap_or_default() {
                    "RUNNING" => "up",
                    "PROVISIONING" | "PENDING" | "ACTIVATING" => "starting",
                    "DEACTIVATING" | "STOPPING" | "DEPROVISIONING" => "stopping",
                    "STOPPED" | "DELETED" => "exited",
                    other => other,
                }
                .to_lowercase();
                let release = task
                    .task_definition_arn()
                    .and_then(|td| releases.get(td).copied())
                    .unwrap_or(0);
                instances.push(ProcessInstance {
                    name,
                    process: process.clone(),
                    release,
                    state,
                    started_at: task
                        .started_at()
                        .and_then(|d| OffsetDateTime::from_unix_timestamp(d.secs()).ok()),
                });
            }
        }
        instances.sort_by(|a, b| {
            (a.process != "web", &a.process, a.name.len(), &a.name).cmp(&(
                b.process != "web",
                &b.process,
                b.name.len(),
                &b.name,
            ))
        });
        Ok(instances)
    }

    /// Replaces tasks: a new deployment of each targeted service, or one task stopped
    /// (ECS starts its replacement).
    pub(crate) async fn restart(
        &self,
        spec: &DeploySpec,
        target: &RestartTarget,
        progress: &Progress,
    ) -> Result<(), EcsError> {
        let app = spec.app.as_str();
        if let RestartTarget::Instance(process, n) = target {
            let step = progress.step(format!("Restarting {process}.{n}"));
            let instances = self.processes(app).await?;
            let wanted = format!("{process}.{n}");
            let services = list_app_services(&self.clients, &self.env, app).await?;
            let service = family(app, process);
            if !services.contains(&service) {
                return Err(EcsError::NotFound(format!(
                    "{app} has no {process} service"
                )));
            }
            let mut tasks = self
                .describe_tasks(&self.list_tasks(Some(&service), None).await?)
                .await?;
            tasks.sort_by_key(|t| {
                (
                    t.started_at().or(t.created_at()).map(|d| d.secs()),
                    t.task_arn().map(str::to_string),
                )
            });
            let Some(task) = (*n as usize).checked_sub(1).and_then(|i| tasks.get(i)) else {
                return Err(EcsError::NotFound(format!(
                    "{wanted} is not running ({} instance(s) of {process})",
                    instances.iter().filter(|i| i.process == *process).count()
                )));
            };
            let arn = task.task_arn().unwrap_or_default().to_string();
            call(&format!("stopping {wanted}"), || {
                self.clients
                    .ecs
                    .stop_task()
                    .cluster(&self.env.cluster)
                    .task(&arn)
                    .reason("restarted with empire")
                    .send()
            })
            .await?;
            progress.detail(format!(
                "Stopped {wanted} ({}); ECS starts its replacement",
                task_id(&arn)
            ));
            step.done("Restarted");
            return Ok(());
        }

        let step = progress.step(match target {
            RestartTarget::Process(p) => format!("Restarting {p}"),
            _ => "Restarting all processes".to_string(),
        });
        let observed = observe(
            &self.clients,
            &self.env,
            app,
            &Scope {
                processes: Some(Vec::new()),
                hosts: Vec::new(),
                ..Scope::default()
            },
        )
        .await?;
        let processes = by_name(spec);
        let mut rollout = Vec::new();
        for (process, service) in &observed.services {
            if service.status != "ACTIVE" {
                continue;
            }
            if let RestartTarget::Process(p) = target
                && p != process
            {
                continue;
            }
            rollout.push(Action::UpdateService {
                name: service.name.clone(),
                process: process.clone(),
                task_definition: None,
                desired_count: processes
                    .get(process.as_str())
                    .map(|p| p.quantity)
                    .unwrap_or(service.desired_count),
                force_new_deployment: true,
                release: service.release.unwrap_or(spec.release),
            });
        }
        if rollout.is_empty() {
            return Err(EcsError::NotFound(match target {
                RestartTarget::Process(p) => format!("{app} has no {p} service"),
                _ => format!("{app} has no services"),
            }));
        }
        let plan = Plan {
            rollout,
            ..Plan::default()
        };
        self.run_plan(spec, &observed, &plan, progress).await?;
        step.done("Restarted");
        Ok(())
    }

    /// Starts a one-off task of the release with a command override; its output goes
    /// to the app's log group.
    pub(crate) async fn run_detached(&self, spec: &OneOffSpec) -> Result<RunOutcome, EcsError> {
        let app = spec.app.as_str();
        let mut process = ProcessSpec::new(RUN, Some(":".to_string()), 1);
        process.size = spec.size;
        let deploy = DeploySpec {
            app: spec.app.clone(),
            release: spec.release,
            image: spec.image.clone(),
            config: spec.config.clone(),
            processes: vec![process.clone()],
        };
        let observed = observe(
            &self.clients,
            &self.env,
            app,
            &Scope {
                processes: Some(vec![RUN.to_string()]),
                hosts: Vec::new(),
                ..Scope::default()
            },
        )
        .await?;
        let launcher = self.launcher(&spec.image).await;
        let definition = task_definition(&self.env, &deploy, &process, launcher);
        let mut actions = Vec::new();
        if !observed.log_group {
            actions.push(Action::CreateLogGroup {
                name: super::plan::log_group(app),
                retention_days: self.env.log_retention_days,
                tags: tags(app, "logs", spec.release),
            });
        }
        plan_parameters(&deploy, &observed, &mut actions);
        let latest = observed.families.get(RUN).and_then(|f| f.latest.as_ref());
        let reference = match latest {
            Some(latest) if latest.definition.same_as(&definition) => {
                TaskDefinitionRef::Arn(latest.arn.clone())
            }
            _ => {
                let family_name = definition.family.clone();
                actions.push(Action::RegisterTaskDefinition {
                    definition: Box::new(definition),
                });
                TaskDefinitionRef::Registered(family_name)
            }
        };
        let applied = self.apply_phase(&actions, &Progress::null()).await?;
        let task_definition = applied.resolve(&reference)?;
        let network = match network_of(&self.env) {
            Some(n) => Some(ecs_network(&n)?),
            None => None,
        };
        let overrides = ecs::TaskOverride::builder()
            .container_overrides(
                ecs::ContainerOverride::builder()
                    .name(RUN)
                    .command(spec.command.clone())
                    .build(),
            )
            .build();
        let tags: Vec<ecs::Tag> = tags(app, RUN, spec.release)
            .into_iter()
            .map(|(k, v)| ecs::Tag::builder().key(k).value(v).build())
            .collect();
        // The token makes a retried RunTask start one task, not two; the unique
        // startedBy finds it again if the answer is lost.
        let token = uuid::Uuid::new_v4().simple().to_string();
        let started_by = format!("{STARTED_BY}-{}", &token[..12]);
        let ran = call("starting the one-off task", || {
            self.clients
                .ecs
                .run_task()
                .cluster(&self.env.cluster)
                .task_definition(&task_definition)
                .launch_type(ecs::LaunchType::from(self.env.launch_type.as_str()))
                .set_network_configuration(network.clone())
                .overrides(overrides.clone())
                .started_by(&started_by)
                .client_token(&token)
                .count(1)
                .set_tags(Some(tags.clone()))
                .send()
        })
        .await;
        let ran = match ran {
            Ok(ran) => ran,
            Err(err) if err.is_unreadable_response() => {
                warn!(error = %err, "RunTask answered unreadably; finding the task by startedBy");
                let arn = self
                    .list_tasks_started_by(&family(app, RUN), &started_by)
                    .await?
                    .into_iter()
                    .next()
                    .ok_or(err)?;
                let id = task_id(&arn).to_string();
                return Ok(RunOutcome::Detached {
                    name: format!("{RUN}.{}", short_id(&id)),
                    id,
                });
            }
            Err(err) => return Err(err),
        };
        if let Some(failure) = ran.failures().first() {
            return Err(EcsError::Rollout(format!(
                "ECS could not start the task: {}",
                failure
                    .reason()
                    .or(failure.detail())
                    .unwrap_or("no reason given")
            )));
        }
        let arn = ran
            .tasks()
            .first()
            .and_then(|t| t.task_arn())
            .ok_or_else(|| EcsError::Rollout("ECS started no task".into()))?;
        let id = task_id(arn).to_string();
        Ok(RunOutcome::Detached {
            name: format!("{RUN}.{}", short_id(&id)),
            id,
        })
    }

    /// Deletes a release's parameters and deregisters its task definitions that no
    /// service runs.
    pub(crate) async fn remove_release(&self, app: &str, release: u32) -> Result<(), EcsError> {
        let observed = observe(&self.clients, &self.env, app, &Scope::default()).await?;
        // A release a service runs keeps its parameters: its tasks read them at start.
        let serving = observed
            .services
            .values()
            .any(|s| s.status == "ACTIVE" && s.release == Some(release));
        let names: Vec<String> = observed
            .parameters
            .keys()
            .filter(|n| !serving && parameter_release(app, n) == Some(release))
            .cloned()
            .collect();
        let in_use: Vec<&str> = observed
            .services
            .values()
            .filter(|s| s.status == "ACTIVE")
            .map(|s| s.task_definition.as_str())
            .collect();
        let mut revisions = Vec::new();
        for family_state in observed.families.values() {
            let Some(prefix) = family_state
                .latest
                .as_ref()
                .and_then(|l| l.arn.rsplit_once(':').map(|(p, _)| p.to_string()))
            else {
                continue;
            };
            revisions.extend(
                family_state
                    .active_revisions
                    .iter()
                    .map(|r| format!("{prefix}:{r}"))
                    .filter(|arn| !in_use.contains(&arn.as_str())),
            );
        }
        let releases = self.releases_of(revisions).await;
        let arns: Vec<String> = releases
            .into_iter()
            .filter(|(_, r)| *r == release)
            .map(|(arn, _)| arn)
            .collect();
        let mut actions = Vec::new();
        if !names.is_empty() {
            actions.push(Action::DeleteParameters { names });
        }
        if !arns.is_empty() {
            actions.push(Action::DeregisterTaskDefinitions { arns });
        }
        self.apply_phase(&actions, &Progress::null()).await?;
        Ok(())
    }

    /// Removes every resource of the app, and stops its one-off tasks.
    pub(crate) async fn remove_app(&self, app: &str) -> Result<(), EcsError> {
        let observed: Observed = observe(&self.clients, &self.env, app, &Scope::default()).await?;
        let oneoffs = self.list_tasks(None, Some(&family(app, RUN))).await?;
        let stopped = join_all(oneoffs.iter().map(|arn| {
            call("stopping a one-off task", move || {
                self.clients
                    .ecs
                    .stop_task()
                    .cluster(&self.env.cluster)
                    .task(arn)
                    .reason("app destroyed")
                    .send()
            })
        }))
        .await;
        for result in stopped {
            // The app goes anyway; a task that did not stop ends on its own.
            if let Err(err) = result {
                warn!(app, error = %err, "stopping a one-off task failed");
            }
        }
        let actions = plan_remove_app(app, &observed);
        self.apply_phase(&actions, &Progress::null()).await?;
        Ok(())
    }
}

/// Instances from task listings alone (state `unknown`).
fn listed_only(mut listed: Vec<(String, String)>) -> Vec<ProcessInstance> {
    listed.sort();
    listed.dedup();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    listed
        .into_iter()
        .map(|(process, arn)| {
            let n = counts.entry(process.clone()).or_default();
            *n += 1;
            let name = if process == RUN {
                format!("{RUN}.{}", short_id(task_id(&arn)))
            } else {
                format!("{process}.{n}")
            };
            ProcessInstance {
                name,
                process,
                release: 0,
                state: "unknown".into(),
                started_at: None,
            }
        })
        .collect()
}

/// The id at the end of a task ARN.
pub(crate) fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The first eight characters of a task id.
pub(crate) fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}
