//! The pure planner of the `ecs` backend: a release, the app's domains, the environment
//! and the AWS state observed for the app, as plain structs, in; the list of actions
//! that bring AWS to the release, out. No network: everything it decides is unit-tested
//! against golden files.
//!
//! Names: the task definition family and the service of a process type are
//! `<app>_<process>` (app names have no underscore); the target group is the app name cut
//! to 25 characters plus a short hash (32 at most); config vars are SecureString
//! parameters `/empire/<app>/v<N>/<KEY>`; the log group is `/empire/<app>`; the
//! EventBridge rule of a `cron` process is `<app>_<process>`. Every resource carries the
//! tags `empire.app`, `empire.process` and `empire.release`.

use std::collections::{BTreeMap, BTreeSet};

use empire_core::formation::ProcessSize;
use empire_core::scheduler::{DEFAULT_PORT, DeploySpec, ProcessSpec};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::LaunchType;

/// The process type behind the app's HTTP route.
pub const WEB: &str = "web";
/// The task definition family suffix of one-off processes (`<app>_run`).
pub const RUN: &str = "run";
/// The tag key naming the app.
pub const TAG_APP: &str = "empire.app";
/// The tag key naming the process type.
pub const TAG_PROCESS: &str = "empire.process";
/// The tag key naming the release (`v3`).
pub const TAG_RELEASE: &str = "empire.release";
/// The status codes a target passes its health check with, like the docker backend's.
pub const HEALTHY_CODES: &str = "200-499";
/// How many host names one listener rule condition holds.
pub const HOSTS_PER_RULE: usize = 5;

/// A load balancer listener and where its load balancer answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancer {
    /// The listener rules go on.
    pub listener_arn: String,
    /// The load balancer's DNS name (the ALIAS target).
    pub dns_name: String,
    /// The load balancer's canonical hosted zone id (the ALIAS target's zone).
    pub zone_id: String,
    /// Whether the listener speaks HTTPS (the scheme of the apps' URLs).
    #[serde(default)]
    pub https: bool,
}

/// A Route53 hosted zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostedZone {
    /// Its id (`Z…`, without `/hostedzone/`).
    pub id: String,
    /// Its domain, without the trailing dot (`empire.internal`).
    pub domain: String,
}

/// The AWS environment the gateway deploys into: the operator's settings and what the
/// gateway resolved from them at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// The cluster.
    pub cluster: String,
    /// The region everything lives in.
    pub region: String,
    /// The account id (for parameter ARNs).
    pub account: String,
    /// The ARN partition (`aws`).
    pub partition: String,
    /// EC2 or FARGATE.
    pub launch_type: LaunchType,
    /// awsvpc subnets.
    pub subnets: Vec<String>,
    /// awsvpc security groups.
    pub security_groups: Vec<String>,
    /// Give awsvpc tasks a public IP.
    pub assign_public_ip: bool,
    /// The task execution role.
    pub execution_role_arn: String,
    /// The role tasks run as.
    pub task_role_arn: Option<String>,
    /// The role EventBridge starts scheduled tasks with.
    pub events_role_arn: Option<String>,
    /// The VPC of the target groups.
    pub vpc_id: String,
    /// The internal load balancer.
    pub internal: LoadBalancer,
    /// The internet-facing load balancer, for custom domains.
    pub external: Option<LoadBalancer>,
    /// The private zone (`<app>.<domain>` records).
    pub internal_zone: HostedZone,
    /// The public zone (custom domain records).
    pub public_zone: Option<HostedZone>,
    /// Seconds new web tasks may fail health checks after they start.
    pub health_check_grace_seconds: u32,
    /// Seconds a target group drains a stopping target.
    pub deregistration_delay_seconds: u32,
    /// Days the log group keeps events.
    pub log_retention_days: Option<i32>,
}

/// Which listener a rule is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Listener {
    /// The internal load balancer's (`<app>.<internal domain>`).
    Internal,
    /// The internet-facing one's (custom domains).
    External,
}

/// The current revision of a task definition family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedTaskDefinition {
    /// Its ARN (`…:task-definition/<family>:<revision>`).
    pub arn: String,
    /// What it holds, in the planner's terms.
    pub definition: TaskDefinition,
}

/// A task definition family as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedFamily {
    /// The latest ACTIVE revision.
    pub latest: Option<ObservedTaskDefinition>,
    /// The numbers of every ACTIVE revision.
    pub active_revisions: Vec<u32>,
}

/// An ECS service as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedService {
    /// `<app>_<process>`.
    pub name: String,
    /// `ACTIVE`, `DRAINING` or `INACTIVE`.
    pub status: String,
    /// The task definition of its primary deployment.
    pub task_definition: String,
    /// Its desired count.
    pub desired_count: u32,
    /// The release of its `empire.release` tag.
    pub release: Option<u32>,
}

/// The app's target group as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedTargetGroup {
    /// Its ARN.
    pub arn: String,
    /// The health check path.
    pub health_check_path: String,
    /// The health check matcher (`200-499`).
    pub matcher: String,
    /// The deregistration delay in seconds, when read.
    pub deregistration_delay_seconds: Option<u32>,
}

/// A listener rule forwarding to the app's target group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRule {
    /// Its ARN.
    pub arn: String,
    /// Its priority.
    pub priority: u32,
    /// The host names of its host-header condition.
    pub hosts: Vec<String>,
}

/// A Route53 ALIAS record of the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The zone.
    pub zone_id: String,
    /// The record name, lowercase, without the trailing dot.
    pub name: String,
    /// The ALIAS target's DNS name, lowercase, without the trailing dot.
    pub alias_dns_name: String,
    /// The ALIAS target's hosted zone.
    pub alias_zone_id: String,
    /// Whether Route53 evaluates the target's health.
    pub evaluate_target_health: bool,
}

/// The EventBridge rule of a `cron` process as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedSchedule {
    /// The rule name.
    pub rule: String,
    /// Its schedule expression.
    pub expression: String,
    /// The task definition its ECS target runs.
    pub task_definition: Option<String>,
}

/// Everything of one app that exists in AWS, as plain data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Whether the app's log group exists.
    pub log_group: bool,
    /// The app's parameters: full name → value.
    pub parameters: BTreeMap<String, String>,
    /// The app's task definition families, by process type.
    pub families: BTreeMap<String, ObservedFamily>,
    /// The app's services, by process type.
    pub services: BTreeMap<String, ObservedService>,
    /// The app's target group.
    pub target_group: Option<ObservedTargetGroup>,
    /// Rules forwarding to it on the internal listener, by priority.
    pub internal_rules: Vec<ObservedRule>,
    /// Rules forwarding to it on the external listener, by priority.
    pub external_rules: Vec<ObservedRule>,
    /// The priorities taken on the internal listener (by any app).
    pub internal_priorities: BTreeSet<u32>,
    /// The priorities taken on the external listener (by any app).
    pub external_priorities: BTreeSet<u32>,
    /// The app's records (its internal name and its custom domains), by name.
    pub records: BTreeMap<String, Record>,
    /// The app's schedules, by process type.
    pub schedules: BTreeMap<String, ObservedSchedule>,
}

impl Observed {
    /// The custom domains the app answers to now (its external rules' host names).
    pub fn domains(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .external_rules
            .iter()
            .flat_map(|r| r.hosts.iter().cloned())
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }
}

/// The `awslogs` log configuration of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfiguration {
    /// `awslogs-group`.
    pub group: String,
    /// `awslogs-region`.
    pub region: String,
    /// `awslogs-stream-prefix` (the process type).
    pub stream_prefix: String,
}

/// The one container of a task definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerDefinition {
    /// The process type.
    pub name: String,
    /// The image, by digest when the release has one.
    pub image: String,
    /// The ENTRYPOINT override (`/bin/sh -c` unless the image launches commands).
    pub entry_point: Option<Vec<String>>,
    /// The command.
    pub command: Option<Vec<String>>,
    /// CPU units (1024 = one vCPU).
    pub cpu: u32,
    /// The hard memory limit in MiB.
    pub memory_mib: u32,
    /// Plain variables: `PORT`, `EMPIRE_*`, the process's own, empty config values.
    pub environment: BTreeMap<String, String>,
    /// Config vars: name → the parameter ARN ECS reads the value from.
    pub secrets: BTreeMap<String, String>,
    /// Container ports.
    pub ports: Vec<u16>,
    /// Where its output goes.
    pub log: LogConfiguration,
    /// The container health check, when the process has a `healthcheck` path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<ContainerHealthCheck>,
}

/// An ECS container health check (`healthCheck` of a container definition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerHealthCheck {
    /// The command, `["CMD-SHELL", "<script>"]`.
    pub command: Vec<String>,
    /// Seconds between checks.
    pub interval_seconds: i32,
    /// Seconds one check may take.
    pub timeout_seconds: i32,
    /// Failed checks in a row before the container is unhealthy.
    pub retries: i32,
    /// Seconds after the start during which failures do not count.
    pub start_period_seconds: i32,
}

/// The container health check of a process with a `healthcheck` path listening on
/// `port`: an HTTP GET from inside the container with busybox's `wget` (both stack
/// images and `empire/busybox` have busybox; Debian's package installs no applet
/// links, hence `busybox wget`), healthy on any status 200–499 like the target group
/// and the docker backend's check, unhealthy when nothing answers or on a 5xx.
pub fn container_health_check(path: &str, port: u16, grace_seconds: u32) -> ContainerHealthCheck {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    // The path is the operator's app's own; quote it for the shell.
    let url = format!("http://127.0.0.1:{port}{}", path.replace('\'', ""));
    ContainerHealthCheck {
        command: vec![
            "CMD-SHELL".to_string(),
            format!(
                "busybox wget -q -S -O /dev/null '{url}' 2>&1 | grep -q 'HTTP/1\\.[01] [234][0-9][0-9]'"
            ),
        ],
        interval_seconds: 10,
        timeout_seconds: 5,
        retries: 3,
        start_period_seconds: i32::try_from(grace_seconds.min(300)).unwrap_or(300),
    }
}

/// A task definition revision, as the planner wants it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDefinition {
    /// `<app>_<process>`.
    pub family: String,
    /// `awsvpc` (FARGATE) or `bridge` (EC2).
    pub network_mode: String,
    /// `FARGATE` or `EC2`.
    pub requires_compatibilities: Vec<String>,
    /// Task-level CPU units (FARGATE).
    pub cpu: Option<String>,
    /// Task-level memory in MiB (FARGATE).
    pub memory: Option<String>,
    /// The execution role.
    pub execution_role_arn: String,
    /// The task role.
    pub task_role_arn: Option<String>,
    /// The container.
    pub container: ContainerDefinition,
    /// Tags (not compared: a revision that differs only in tags is the same).
    pub tags: BTreeMap<String, String>,
}

impl TaskDefinition {
    /// Whether `other` runs the same thing (tags aside).
    pub fn same_as(&self, other: &TaskDefinition) -> bool {
        TaskDefinition {
            tags: BTreeMap::new(),
            ..self.clone()
        } == TaskDefinition {
            tags: BTreeMap::new(),
            ..other.clone()
        }
    }
}

/// A task definition: an existing revision or the one an earlier action registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskDefinitionRef {
    /// An existing revision.
    Arn(String),
    /// The revision `RegisterTaskDefinition` of this family registers.
    Registered(String),
}

/// The app's target group: existing or created by an earlier action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetGroupRef {
    /// An existing target group.
    Arn(String),
    /// The one `CreateTargetGroup` creates, by name.
    Created(String),
}

/// A new target group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetGroupSpec {
    /// Its name (32 characters at most).
    pub name: String,
    /// The container port.
    pub port: u16,
    /// `ip` (awsvpc) or `instance` (bridge).
    pub target_type: String,
    /// The VPC.
    pub vpc_id: String,
    /// The HTTP health check path.
    pub health_check_path: String,
    /// The passing status codes.
    pub matcher: String,
    /// The deregistration delay in seconds.
    pub deregistration_delay_seconds: u32,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// A web service's load balancer attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLoadBalancer {
    /// The target group.
    pub target_group: TargetGroupRef,
    /// The container (`web`).
    pub container_name: String,
    /// Its port.
    pub container_port: u16,
}

/// The awsvpc network of a service or task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Subnets.
    pub subnets: Vec<String>,
    /// Security groups.
    pub security_groups: Vec<String>,
    /// Whether tasks get a public IP.
    pub assign_public_ip: bool,
}

/// A new ECS service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// `<app>_<process>`.
    pub name: String,
    /// The process type.
    pub process: String,
    /// What it runs.
    pub task_definition: TaskDefinitionRef,
    /// How many tasks.
    pub desired_count: u32,
    /// `EC2` or `FARGATE`.
    pub launch_type: String,
    /// awsvpc networking (FARGATE).
    pub network: Option<Network>,
    /// The target group (web).
    pub load_balancer: Option<ServiceLoadBalancer>,
    /// The health-check grace period (web).
    pub health_check_grace_seconds: Option<u32>,
    /// Minimum healthy percent.
    pub minimum_healthy_percent: u32,
    /// Maximum percent.
    pub maximum_percent: u32,
    /// The deployment circuit breaker with rollback.
    pub circuit_breaker: bool,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// One DNS change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordChange {
    /// `UPSERT` or `DELETE`.
    pub action: String,
    /// The record.
    pub record: Record,
}

/// One AWS change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action")]
pub enum Action {
    /// CloudWatch Logs `CreateLogGroup` (+ `PutRetentionPolicy`).
    CreateLogGroup {
        /// `/empire/<app>`.
        name: String,
        /// Retention in days.
        retention_days: Option<i32>,
        /// Tags.
        tags: BTreeMap<String, String>,
    },
    /// CloudWatch Logs `DeleteLogGroup`.
    DeleteLogGroup {
        /// The group.
        name: String,
    },
    /// SSM `PutParameter` (SecureString).
    PutParameter {
        /// `/empire/<app>/v<N>/<KEY>`.
        name: String,
        /// The value.
        value: String,
        /// Replaces a parameter that exists with another value.
        overwrite: bool,
        /// Tags (set on creation only).
        tags: BTreeMap<String, String>,
    },
    /// SSM `DeleteParameters`.
    DeleteParameters {
        /// Full names.
        names: Vec<String>,
    },
    /// ECS `RegisterTaskDefinition`.
    RegisterTaskDefinition {
        /// The revision.
        definition: Box<TaskDefinition>,
    },
    /// ECS `DeregisterTaskDefinition`, for each.
    DeregisterTaskDefinitions {
        /// Revision ARNs.
        arns: Vec<String>,
    },
    /// ELBv2 `CreateTargetGroup` (+ its deregistration delay).
    CreateTargetGroup {
        /// The target group.
        target_group: TargetGroupSpec,
    },
    /// ELBv2 `ModifyTargetGroup`: the health check.
    ModifyTargetGroup {
        /// The target group.
        arn: String,
        /// The health check path.
        health_check_path: String,
        /// The passing status codes.
        matcher: String,
    },
    /// ELBv2 `ModifyTargetGroupAttributes`: the deregistration delay.
    SetDeregistrationDelay {
        /// The target group.
        arn: String,
        /// Seconds.
        seconds: u32,
    },
    /// ELBv2 `DeleteTargetGroup`.
    DeleteTargetGroup {
        /// The target group.
        arn: String,
    },
    /// ELBv2 `CreateRule`: a host-header rule forwarding to the app's target group.
    CreateRule {
        /// The listener.
        listener: Listener,
        /// A free priority.
        priority: u32,
        /// Host names.
        hosts: Vec<String>,
        /// Where it forwards.
        target_group: TargetGroupRef,
        /// Tags.
        tags: BTreeMap<String, String>,
    },
    /// ELBv2 `ModifyRule`: new host names.
    ModifyRule {
        /// The rule.
        arn: String,
        /// Host names.
        hosts: Vec<String>,
    },
    /// ELBv2 `DeleteRule`.
    DeleteRule {
        /// The rule.
        arn: String,
    },
    /// Route53 `ChangeResourceRecordSets`.
    ChangeRecords {
        /// The zone.
        zone_id: String,
        /// The changes.
        changes: Vec<RecordChange>,
    },
    /// ECS `CreateService`.
    CreateService {
        /// The service.
        service: Box<ServiceSpec>,
    },
    /// ECS `UpdateService` (+ `TagResource` with the release).
    UpdateService {
        /// `<app>_<process>`.
        name: String,
        /// The process type.
        process: String,
        /// A new task definition, if it changes.
        task_definition: Option<TaskDefinitionRef>,
        /// The desired count.
        desired_count: u32,
        /// Replace the running tasks even if nothing changed (restart).
        force_new_deployment: bool,
        /// The release it moves to (its `empire.release` tag).
        release: u32,
    },
    /// ECS `DeleteService` (forced: it stops the tasks).
    DeleteService {
        /// `<app>_<process>`.
        name: String,
    },
    /// EventBridge `PutRule` + `PutTargets`: an ECS RunTask on a schedule.
    PutSchedule {
        /// `<app>_<process>`.
        rule: String,
        /// The process type.
        process: String,
        /// `cron(…)` or `rate(…)`.
        expression: String,
        /// What it runs.
        task_definition: TaskDefinitionRef,
        /// Tags.
        tags: BTreeMap<String, String>,
    },
    /// EventBridge `RemoveTargets` + `DeleteRule`.
    DeleteSchedule {
        /// The rule.
        rule: String,
    },
}

/// A deploy in three phases: what must exist before the services move, the service
/// changes whose rollouts are followed, and what changes only once the release serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Log group, parameters, task definitions, target group, rules, records.
    pub prepare: Vec<Action>,
    /// Service creations and updates.
    pub rollout: Vec<Action>,
    /// Schedules, services of process types that are gone, pruning.
    pub finalize: Vec<Action>,
}

impl Plan {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.prepare.is_empty() && self.rollout.is_empty() && self.finalize.is_empty()
    }

    /// Every action, in order.
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.prepare
            .iter()
            .chain(&self.rollout)
            .chain(&self.finalize)
    }
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// The family and service name of a process type: `<app>_<process>`.
pub fn family(app: &str, process: &str) -> String {
    format!("{app}_{process}")
}

/// The process type of a family or service name of `app`, if it is one.
pub fn process_of<'a>(app: &str, name: &'a str) -> Option<&'a str> {
    name.strip_prefix(app)?.strip_prefix('_')
}

/// The app's log group.
pub fn log_group(app: &str) -> String {
    format!("/empire/{app}")
}

/// The app's parameter path (`/empire/<app>/`).
pub fn parameters_path(app: &str) -> String {
    format!("/empire/{app}/")
}

/// The parameter path of one release (`/empire/<app>/v<N>/`).
pub fn release_parameters_path(app: &str, release: u32) -> String {
    format!("/empire/{app}/v{release}/")
}

/// The release a parameter name belongs to.
pub fn parameter_release(app: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(&parameters_path(app))?;
    let (version, _) = rest.split_once('/')?;
    version.strip_prefix('v')?.parse().ok()
}

/// The app's target group name: the app name cut to 25 characters, a dash and six hex
/// digits of its hash; always within ELB's 32 characters and the same for the same app.
pub fn target_group_name(app: &str) -> String {
    let hash = hex::encode(Sha256::digest(app.as_bytes()));
    let cut: String = app.chars().take(25).collect();
    format!("{}-{}", cut.trim_end_matches('-'), &hash[..6])
}

/// `<app>.<internal domain>`.
pub fn internal_hostname(app: &str, env: &Environment) -> String {
    format!("{app}.{}", env.internal_zone.domain)
}

/// The revision number at the end of a task definition ARN.
pub fn revision_of(arn: &str) -> Option<u32> {
    arn.rsplit_once(':')?.1.parse().ok()
}

/// The tags of a resource of `app`.
pub fn tags(app: &str, process: &str, release: u32) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TAG_APP.to_string(), app.to_string()),
        (TAG_PROCESS.to_string(), process.to_string()),
        (TAG_RELEASE.to_string(), format!("v{release}")),
    ])
}

/// Parses a `v3` (or `3`) release tag.
pub fn parse_release(text: &str) -> Option<u32> {
    text.trim_start_matches('v').parse().ok()
}

/// The smallest FARGATE task size (CPU units, MiB) that holds `size`.
pub fn fargate_size(size: ProcessSize) -> (u32, u32) {
    const MIB: u64 = 1024 * 1024;
    let memory = u32::try_from(size.memory_bytes.div_ceil(MIB)).unwrap_or(u32::MAX);
    // (cpu, smallest memory, largest memory, step)
    const TABLE: [(u32, u32, u32, u32); 7] = [
        (256, 512, 2048, 512),
        (512, 1024, 4096, 1024),
        (1024, 2048, 8192, 1024),
        (2048, 4096, 16384, 1024),
        (4096, 8192, 30720, 1024),
        (8192, 16384, 61440, 4096),
        (16384, 32768, 122_880, 8192),
    ];
    for (cpu, min, max, step) in TABLE {
        if cpu < size.cpu_shares || memory > max {
            continue;
        }
        let memory = if memory <= min {
            min
        } else if cpu == 256 {
            // 512, 1024 or 2048.
            memory.next_power_of_two()
        } else {
            memory.div_ceil(step) * step
        };
        return (cpu, memory);
    }
    (16384, 122_880)
}

/// The container size of `size`: CPU units and MiB.
pub fn container_size(size: ProcessSize) -> (u32, u32) {
    const MIB: u64 = 1024 * 1024;
    let memory = u32::try_from(size.memory_bytes.div_ceil(MIB)).unwrap_or(u32::MAX);
    (size.cpu_shares, memory)
}

/// Reserved variables every process gets, over the config.
fn reserved(app: &str, process: &str, release: u32) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("PORT".to_string(), DEFAULT_PORT.to_string()),
        ("EMPIRE_APPNAME".to_string(), app.to_string()),
        ("EMPIRE_PROCESS".to_string(), process.to_string()),
        ("EMPIRE_RELEASE".to_string(), format!("v{release}")),
    ])
}

/// The ARN of a parameter.
pub fn parameter_arn(env: &Environment, name: &str) -> String {
    format!(
        "arn:{}:ssm:{}:{}:parameter{name}",
        env.partition, env.region, env.account
    )
}

/// The task definition of one process type of a release. `launcher`: the image's
/// ENTRYPOINT runs commands itself (a buildpack image), so the command is its argument
/// rather than `/bin/sh -c`'s.
pub fn task_definition(
    env: &Environment,
    spec: &DeploySpec,
    process: &ProcessSpec,
    launcher: bool,
) -> TaskDefinition {
    let app = spec.app.as_str();
    let mut environment = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    let reserved = reserved(app, &process.name, spec.release);
    for (key, value) in &spec.config {
        if reserved.contains_key(key) || process.environment.contains_key(key) {
            continue;
        }
        if value.is_empty() {
            // SSM holds no empty values, and an empty value is no secret.
            environment.insert(key.clone(), String::new());
        } else {
            let name = format!("{}{key}", release_parameters_path(app, spec.release));
            secrets.insert(key.clone(), parameter_arn(env, &name));
        }
    }
    environment.extend(process.environment.clone());
    environment.extend(reserved);

    let (entry_point, command) = match process.command.as_deref().map(str::trim) {
        Some(command) if !command.is_empty() => {
            if launcher {
                (None, Some(vec![command.to_string()]))
            } else {
                (
                    Some(vec!["/bin/sh".to_string(), "-c".to_string()]),
                    Some(vec![command.to_string()]),
                )
            }
        }
        _ => (None, None),
    };
    let mut ports: Vec<u16> = Vec::new();
    if process.name == WEB {
        ports.push(DEFAULT_PORT);
    }
    for mapping in &process.ports {
        if !ports.contains(&mapping.container) {
            ports.push(mapping.container);
        }
    }
    let (cpu, memory_mib) = container_size(process.size);
    let (network_mode, compatibilities, task_cpu, task_memory) = match env.launch_type {
        LaunchType::Fargate => {
            let (cpu, memory) = fargate_size(process.size);
            (
                "awsvpc",
                vec!["FARGATE".to_string()],
                Some(cpu.to_string()),
                Some(memory.to_string()),
            )
        }
        LaunchType::Ec2 => ("bridge", vec!["EC2".to_string()], None, None),
    };
    TaskDefinition {
        family: family(app, &process.name),
        network_mode: network_mode.to_string(),
        requires_compatibilities: compatibilities,
        cpu: task_cpu,
        memory: task_memory,
        execution_role_arn: env.execution_role_arn.clone(),
        task_role_arn: env.task_role_arn.clone(),
        container: ContainerDefinition {
            name: process.name.clone(),
            image: spec.image.clone(),
            entry_point,
            command,
            cpu,
            memory_mib,
            environment,
            secrets,
            log: LogConfiguration {
                group: log_group(app),
                region: env.region.clone(),
                stream_prefix: process.name.clone(),
            },
            health_check: match (&process.healthcheck, ports.first()) {
                (Some(path), Some(port)) => Some(container_health_check(
                    path,
                    *port,
                    env.health_check_grace_seconds,
                )),
                _ => None,
            },
            ports,
        },
        tags: tags(app, &process.name, spec.release),
    }
}

/// Converts a Procfile `cron` schedule to an EventBridge expression: `cron(…)` and
/// `rate(…)` pass through; five Unix cron fields (`*/5 * * * *`) become AWS's six
/// (day-of-week 1-7 from Sunday, `?` in one of the day fields, any year).
pub fn schedule_expression(cron: &str) -> Result<String, PlanError> {
    let cron = cron.trim();
    if (cron.starts_with("cron(") || cron.starts_with("rate(")) && cron.ends_with(')') {
        return Ok(cron.to_string());
    }
    let fields: Vec<&str> = cron.split_whitespace().collect();
    let [minute, hour, dom, month, dow] = fields[..] else {
        return Err(PlanError(format!(
            "cron schedule {cron:?} is neither five cron fields nor cron(...)/rate(...)"
        )));
    };
    let dow = if dow == "*" || dow == "?" {
        "?".to_string()
    } else {
        // Unix counts 0-7 from Sunday, AWS 1-7.
        let mut out = String::new();
        let mut number = String::new();
        for c in dow.chars().chain(std::iter::once('\0')) {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            if !number.is_empty() {
                let n: u32 = number.parse().unwrap_or(0);
                out.push_str(&((n % 7) + 1).to_string());
                number.clear();
            }
            if c != '\0' {
                out.push(c);
            }
        }
        out
    };
    let dom = if dow != "?" {
        if dom != "*" && dom != "?" {
            return Err(PlanError(format!(
                "cron schedule {cron:?} gives both a day of the month and a day of the week, which EventBridge does not support"
            )));
        }
        "?"
    } else {
        dom
    };
    Ok(format!("cron({minute} {hour} {dom} {month} {dow} *)"))
}

/// A free listener rule priority for `seed`, near a number derived from it, so two apps
/// rarely probe the same numbers.
fn free_priority(seed: &str, taken: &mut BTreeSet<u32>) -> u32 {
    let hash = Sha256::digest(seed.as_bytes());
    let start = u32::from_be_bytes([hash[0], hash[1], hash[2], hash[3]]) % 49_000 + 1;
    let mut priority = start;
    while taken.contains(&priority) {
        priority = if priority >= 50_000 { 1 } else { priority + 1 };
    }
    taken.insert(priority);
    priority
}

/// The rules, records and target group that route the app's host names: `<app>.<internal
/// domain>` always (once the app has a web process or a target group), and `domains` on
/// the external listener and in the public zone.
pub fn plan_routing(
    env: &Environment,
    app: &str,
    web: Option<&ProcessSpec>,
    release: u32,
    domains: &[String],
    observed: &Observed,
) -> Result<Vec<Action>, PlanError> {
    let mut actions = Vec::new();
    let mut domains: Vec<String> = domains.iter().map(|d| d.to_ascii_lowercase()).collect();
    domains.sort();
    domains.dedup();
    if !domains.is_empty() && env.external.is_none() {
        return Err(PlanError(
            "custom domains need the internet-facing listener (EMPIRE_ELB_EXTERNAL_LISTENER_ARN)"
                .into(),
        ));
    }
    let wanted = web.is_some() || !domains.is_empty() || observed.target_group.is_some();
    if !wanted {
        return Ok(actions);
    }

    // The target group.
    let path = web
        .and_then(|w| w.healthcheck.clone())
        .or_else(|| {
            observed
                .target_group
                .as_ref()
                .filter(|_| web.is_none())
                .map(|t| t.health_check_path.clone())
        })
        .unwrap_or_else(|| "/".to_string());
    let target_group = match &observed.target_group {
        None => {
            let name = target_group_name(app);
            actions.push(Action::CreateTargetGroup {
                target_group: TargetGroupSpec {
                    name: name.clone(),
                    port: DEFAULT_PORT,
                    target_type: match env.launch_type {
                        LaunchType::Fargate => "ip",
                        LaunchType::Ec2 => "instance",
                    }
                    .to_string(),
                    vpc_id: env.vpc_id.clone(),
                    health_check_path: path,
                    matcher: HEALTHY_CODES.to_string(),
                    deregistration_delay_seconds: env.deregistration_delay_seconds,
                    tags: tags(app, WEB, release),
                },
            });
            TargetGroupRef::Created(name)
        }
        Some(observed) => {
            if observed.health_check_path != path || observed.matcher != HEALTHY_CODES {
                actions.push(Action::ModifyTargetGroup {
                    arn: observed.arn.clone(),
                    health_check_path: path,
                    matcher: HEALTHY_CODES.to_string(),
                });
            }
            if observed.deregistration_delay_seconds != Some(env.deregistration_delay_seconds) {
                actions.push(Action::SetDeregistrationDelay {
                    arn: observed.arn.clone(),
                    seconds: env.deregistration_delay_seconds,
                });
            }
            TargetGroupRef::Arn(observed.arn.clone())
        }
    };

    // Listener rules: one internal, external ones in groups of five host names.
    let mut internal_taken = observed.internal_priorities.clone();
    let mut external_taken = observed.external_priorities.clone();
    let internal_hosts = vec![internal_hostname(app, env)];
    rules(
        &mut actions,
        Listener::Internal,
        &[internal_hosts],
        &observed.internal_rules,
        &target_group,
        &mut internal_taken,
        app,
        release,
    );
    let groups: Vec<Vec<String>> = domains
        .chunks(HOSTS_PER_RULE)
        .map(<[String]>::to_vec)
        .collect();
    rules(
        &mut actions,
        Listener::External,
        &groups,
        &observed.external_rules,
        &target_group,
        &mut external_taken,
        app,
        release,
    );

    // Records: the internal name, and each custom domain inside the public zone.
    let mut wanted_records: BTreeMap<String, Record> = BTreeMap::new();
    let internal = internal_hostname(app, env);
    wanted_records.insert(
        internal.clone(),
        Record {
            zone_id: env.internal_zone.id.clone(),
            name: internal,
            alias_dns_name: normalize_dns(&env.internal.dns_name),
            alias_zone_id: env.internal.zone_id.clone(),
            evaluate_target_health: false,
        },
    );
    if let (Some(zone), Some(external)) = (&env.public_zone, &env.external) {
        for domain in &domains {
            if in_zone(domain, &zone.domain) {
                wanted_records.insert(
                    domain.clone(),
                    Record {
                        zone_id: zone.id.clone(),
                        name: domain.clone(),
                        alias_dns_name: normalize_dns(&external.dns_name),
                        alias_zone_id: external.zone_id.clone(),
                        evaluate_target_health: false,
                    },
                );
            }
        }
    }
    let mut changes: BTreeMap<String, Vec<RecordChange>> = BTreeMap::new();
    for (name, record) in &wanted_records {
        if observed.records.get(name) != Some(record) {
            changes
                .entry(record.zone_id.clone())
                .or_default()
                .push(RecordChange {
                    action: "UPSERT".into(),
                    record: record.clone(),
                });
        }
    }
    for (name, record) in &observed.records {
        if !wanted_records.contains_key(name) {
            changes
                .entry(record.zone_id.clone())
                .or_default()
                .push(RecordChange {
                    action: "DELETE".into(),
                    record: record.clone(),
                });
        }
    }
    for (zone_id, changes) in changes {
        actions.push(Action::ChangeRecords { zone_id, changes });
    }
    Ok(actions)
}

/// Whether `host` is `zone` or inside it.
pub fn in_zone(host: &str, zone: &str) -> bool {
    host == zone || host.ends_with(&format!(".{zone}"))
}

/// A DNS name lowercase and without its trailing dot.
pub fn normalize_dns(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[allow(clippy::too_many_arguments)]
fn rules(
    actions: &mut Vec<Action>,
    listener: Listener,
    groups: &[Vec<String>],
    observed: &[ObservedRule],
    target_group: &TargetGroupRef,
    taken: &mut BTreeSet<u32>,
    app: &str,
    release: u32,
) {
    for (i, hosts) in groups.iter().enumerate() {
        match observed.get(i) {
            Some(rule) => {
                let mut have = rule.hosts.clone();
                have.sort();
                if &have != hosts {
                    actions.push(Action::ModifyRule {
                        arn: rule.arn.clone(),
                        hosts: hosts.clone(),
                    });
                }
            }
            None => {
                let seed = format!("{app}/{listener:?}/{i}");
                actions.push(Action::CreateRule {
                    listener,
                    priority: free_priority(&seed, taken),
                    hosts: hosts.clone(),
                    target_group: target_group.clone(),
                    tags: tags(app, WEB, release),
                });
            }
        }
    }
    for rule in observed.iter().skip(groups.len()) {
        actions.push(Action::DeleteRule {
            arn: rule.arn.clone(),
        });
    }
}

/// The parameters of a release that must be written (missing or different), and
/// those under its path it does not have.
pub fn plan_parameters(spec: &DeploySpec, observed: &Observed, actions: &mut Vec<Action>) {
    let app = spec.app.as_str();
    let path = release_parameters_path(app, spec.release);
    let mut wanted = BTreeSet::new();
    for (key, value) in &spec.config {
        if value.is_empty() {
            continue;
        }
        let name = format!("{path}{key}");
        wanted.insert(name.clone());
        match observed.parameters.get(&name) {
            Some(have) if have == value => {}
            have => actions.push(Action::PutParameter {
                name,
                value: value.clone(),
                overwrite: have.is_some(),
                tags: tags(app, "config", spec.release),
            }),
        }
    }
    let extra: Vec<String> = observed
        .parameters
        .keys()
        .filter(|name| name.starts_with(&path) && !wanted.contains(*name))
        .cloned()
        .collect();
    if !extra.is_empty() {
        actions.push(Action::DeleteParameters { names: extra });
    }
}

/// Plans a deploy of `spec` (also a scale: the same release with other counts).
/// `domains` are the custom domains the app keeps (`observed.domains()` unless they
/// change); `launcher`: the image's ENTRYPOINT runs commands.
pub fn plan_deploy(
    env: &Environment,
    spec: &DeploySpec,
    domains: &[String],
    launcher: bool,
    observed: &Observed,
) -> Result<Plan, PlanError> {
    let app = spec.app.as_str();
    let mut plan = Plan::default();
    if let Some(dup) = spec
        .processes
        .iter()
        .enumerate()
        .find(|(i, p)| spec.processes[..*i].iter().any(|q| q.name == p.name))
    {
        return Err(PlanError(format!(
            "process type {:?} appears twice",
            dup.1.name
        )));
    }

    if !observed.log_group {
        plan.prepare.push(Action::CreateLogGroup {
            name: log_group(app),
            retention_days: env.log_retention_days,
            tags: tags(app, "logs", spec.release),
        });
    }
    plan_parameters(spec, observed, &mut plan.prepare);

    // Task definitions: a revision only when the latest one differs.
    let mut refs: BTreeMap<&str, TaskDefinitionRef> = BTreeMap::new();
    for process in &spec.processes {
        let definition = task_definition(env, spec, process, launcher);
        let latest = observed
            .families
            .get(&process.name)
            .and_then(|f| f.latest.as_ref());
        let reference = match latest {
            Some(latest) if latest.definition.same_as(&definition) => {
                TaskDefinitionRef::Arn(latest.arn.clone())
            }
            _ => {
                let family = definition.family.clone();
                plan.prepare.push(Action::RegisterTaskDefinition {
                    definition: Box::new(definition),
                });
                TaskDefinitionRef::Registered(family)
            }
        };
        refs.insert(process.name.as_str(), reference);
    }

    let web = spec
        .processes
        .iter()
        .find(|p| p.name == WEB && p.is_service());
    plan.prepare.extend(plan_routing(
        env,
        app,
        web,
        spec.release,
        domains,
        observed,
    )?);
    let target_group = plan
        .prepare
        .iter()
        .find_map(|a| match a {
            Action::CreateTargetGroup { target_group } => {
                Some(TargetGroupRef::Created(target_group.name.clone()))
            }
            _ => None,
        })
        .or_else(|| {
            observed
                .target_group
                .as_ref()
                .map(|t| TargetGroupRef::Arn(t.arn.clone()))
        });

    for process in &spec.processes {
        let reference = refs[process.name.as_str()].clone();
        let name = family(app, &process.name);
        let service = observed
            .services
            .get(&process.name)
            .filter(|s| s.status == "ACTIVE");
        if process.is_service() {
            match service {
                Some(service) => {
                    let moves = match &reference {
                        TaskDefinitionRef::Arn(arn) => *arn != service.task_definition,
                        TaskDefinitionRef::Registered(_) => true,
                    };
                    if moves || service.desired_count != process.quantity {
                        plan.rollout.push(Action::UpdateService {
                            name: name.clone(),
                            process: process.name.clone(),
                            task_definition: moves.then(|| reference.clone()),
                            desired_count: process.quantity,
                            force_new_deployment: false,
                            release: spec.release,
                        });
                    }
                }
                None => {
                    let web = process.name == WEB;
                    plan.rollout.push(Action::CreateService {
                        service: Box::new(ServiceSpec {
                            name: name.clone(),
                            process: process.name.clone(),
                            task_definition: reference.clone(),
                            desired_count: process.quantity,
                            launch_type: env.launch_type.as_str().to_string(),
                            network: (env.launch_type == LaunchType::Fargate).then(|| Network {
                                subnets: env.subnets.clone(),
                                security_groups: env.security_groups.clone(),
                                assign_public_ip: env.assign_public_ip,
                            }),
                            load_balancer: web.then(|| target_group.clone()).flatten().map(
                                |target_group| ServiceLoadBalancer {
                                    target_group,
                                    container_name: WEB.to_string(),
                                    container_port: DEFAULT_PORT,
                                },
                            ),
                            health_check_grace_seconds: web
                                .then_some(env.health_check_grace_seconds),
                            minimum_healthy_percent: 100,
                            maximum_percent: 200,
                            circuit_breaker: true,
                            tags: tags(app, &process.name, spec.release),
                        }),
                    });
                }
            }
        } else if service.is_some() {
            plan.finalize
                .push(Action::DeleteService { name: name.clone() });
        }

        match &process.cron {
            Some(cron) => {
                let expression = schedule_expression(cron)?;
                let have = observed.schedules.get(&process.name);
                let same = have.is_some_and(|s| {
                    s.expression == expression
                        && matches!(&reference, TaskDefinitionRef::Arn(arn)
                            if s.task_definition.as_deref() == Some(arn.as_str()))
                });
                if !same {
                    if env.events_role_arn.is_none() {
                        return Err(PlanError(format!(
                            "the cron process {} needs EMPIRE_ECS_EVENTS_ROLE_ARN: the role EventBridge starts its tasks with",
                            process.name
                        )));
                    }
                    plan.finalize.push(Action::PutSchedule {
                        rule: name,
                        process: process.name.clone(),
                        expression,
                        task_definition: reference,
                        tags: tags(app, &process.name, spec.release),
                    });
                }
            }
            None => {
                if let Some(schedule) = observed.schedules.get(&process.name) {
                    plan.finalize.push(Action::DeleteSchedule {
                        rule: schedule.rule.clone(),
                    });
                }
            }
        }
    }

    // Process types the release no longer has.
    let kept: BTreeSet<&str> = spec.processes.iter().map(|p| p.name.as_str()).collect();
    for (process, service) in &observed.services {
        if !kept.contains(process.as_str()) && service.status == "ACTIVE" {
            plan.finalize.push(Action::DeleteService {
                name: service.name.clone(),
            });
        }
    }
    for (process, schedule) in &observed.schedules {
        if !kept.contains(process.as_str()) {
            plan.finalize.push(Action::DeleteSchedule {
                rule: schedule.rule.clone(),
            });
        }
    }

    // Pruning: keep the release that served before this one and this one.
    let previous: Option<u32> = observed
        .services
        .values()
        .filter(|s| s.status == "ACTIVE")
        .filter_map(|s| s.release)
        .min();
    let keep_from = previous.unwrap_or(spec.release).min(spec.release);
    let stale: Vec<String> = observed
        .parameters
        .keys()
        .filter(|name| parameter_release(app, name).is_some_and(|r| r < keep_from))
        .cloned()
        .collect();
    if !stale.is_empty() {
        plan.finalize
            .push(Action::DeleteParameters { names: stale });
    }
    let mut old_revisions = Vec::new();
    for process in &spec.processes {
        let Some(family_state) = observed.families.get(&process.name) else {
            continue;
        };
        // The revision running before this deploy (the service's, else the latest).
        let keep = observed
            .services
            .get(&process.name)
            .filter(|s| s.status == "ACTIVE")
            .and_then(|s| revision_of(&s.task_definition))
            .or_else(|| {
                family_state
                    .latest
                    .as_ref()
                    .and_then(|l| revision_of(&l.arn))
            });
        let Some(keep) = keep else { continue };
        let prefix = match family_state.latest.as_ref() {
            Some(latest) => latest.arn.rsplit_once(':').map(|(p, _)| p.to_string()),
            None => None,
        };
        let Some(prefix) = prefix else { continue };
        for revision in &family_state.active_revisions {
            if *revision < keep {
                old_revisions.push(format!("{prefix}:{revision}"));
            }
        }
    }
    if !old_revisions.is_empty() {
        plan.finalize.push(Action::DeregisterTaskDefinitions {
            arns: old_revisions,
        });
    }
    Ok(plan)
}

/// Plans removing everything of an app.
pub fn plan_remove_app(app: &str, observed: &Observed) -> Vec<Action> {
    let mut actions = Vec::new();
    for schedule in observed.schedules.values() {
        actions.push(Action::DeleteSchedule {
            rule: schedule.rule.clone(),
        });
    }
    for service in observed.services.values() {
        if service.status != "INACTIVE" {
            actions.push(Action::DeleteService {
                name: service.name.clone(),
            });
        }
    }
    for rule in observed
        .internal_rules
        .iter()
        .chain(&observed.external_rules)
    {
        actions.push(Action::DeleteRule {
            arn: rule.arn.clone(),
        });
    }
    if let Some(target_group) = &observed.target_group {
        actions.push(Action::DeleteTargetGroup {
            arn: target_group.arn.clone(),
        });
    }
    let mut by_zone: BTreeMap<String, Vec<RecordChange>> = BTreeMap::new();
    for record in observed.records.values() {
        by_zone
            .entry(record.zone_id.clone())
            .or_default()
            .push(RecordChange {
                action: "DELETE".into(),
                record: record.clone(),
            });
    }
    for (zone_id, changes) in by_zone {
        actions.push(Action::ChangeRecords { zone_id, changes });
    }
    if !observed.parameters.is_empty() {
        actions.push(Action::DeleteParameters {
            names: observed.parameters.keys().cloned().collect(),
        });
    }
    if observed.log_group {
        actions.push(Action::DeleteLogGroup {
            name: log_group(app),
        });
    }
    let mut arns = Vec::new();
    for family in observed.families.values() {
        let Some(prefix) = family
            .latest
            .as_ref()
            .and_then(|l| l.arn.rsplit_once(':').map(|(p, _)| p.to_string()))
        else {
            continue;
        };
        arns.extend(
            family
                .active_revisions
                .iter()
                .map(|r| format!("{prefix}:{r}")),
        );
    }
    if !arns.is_empty() {
        actions.push(Action::DeregisterTaskDefinitions { arns });
    }
    actions
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
