//! The AWS side of the `ecs` backend: the SDK clients, the describe calls that observe
//! an app's state for the planner, and the calls that apply the planner's actions.
//! Every call is retried on throttling and transient errors; calls for different process
//! types run concurrently.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_ecs::types as ecs;
use aws_sdk_elasticloadbalancingv2::types as elb;
use aws_sdk_route53::types as r53;
use aws_smithy_http_client::tls;
use empire_core::progress::Progress;
use futures_util::future::join_all;
use tokio::sync::Semaphore;
use tracing::debug;

use super::config::{EcsConfig, LaunchType, parse_arn};
use super::error::{EcsError, call};
use super::plan::{
    Action, ContainerDefinition, ContainerHealthCheck, Environment, HostedZone, Listener,
    LoadBalancer, LogConfiguration, Observed, ObservedFamily, ObservedRule, ObservedSchedule,
    ObservedService, ObservedTargetGroup, ObservedTaskDefinition, Record, TAG_RELEASE,
    TargetGroupRef, TaskDefinition, TaskDefinitionRef, family, in_zone, internal_hostname,
    log_group, normalize_dns, parameters_path, parse_release, process_of, target_group_name,
};

/// How many AWS calls of one phase run at once.
const CONCURRENCY: usize = 8;
/// The id of the EventBridge target of a schedule.
const SCHEDULE_TARGET: &str = "empire";

/// The SDK clients the backend uses.
#[derive(Debug, Clone)]
pub struct Clients {
    /// ECS.
    pub ecs: aws_sdk_ecs::Client,
    /// ELBv2.
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    /// Route53.
    pub route53: aws_sdk_route53::Client,
    /// SSM Parameter Store.
    pub ssm: aws_sdk_ssm::Client,
    /// CloudWatch Logs.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// EventBridge.
    pub events: aws_sdk_eventbridge::Client,
}

/// The HTTP client of the AWS SDK: hyper with rustls on ring (plain HTTP works too, for
/// an emulator on loopback).
pub fn http_client() -> aws_sdk_ecs::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

impl Clients {
    /// Loads region and credentials from the standard AWS chain (`AWS_ENDPOINT_URL`
    /// points every client at an emulator). The backend retries calls itself.
    pub async fn load() -> (Clients, SdkConfig) {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client())
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load()
            .await;
        (Clients::new(&config), config)
    }

    /// Clients of one shared configuration.
    pub fn new(config: &SdkConfig) -> Clients {
        Clients {
            ecs: aws_sdk_ecs::Client::new(config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(config),
            route53: aws_sdk_route53::Client::new(config),
            ssm: aws_sdk_ssm::Client::new(config),
            logs: aws_sdk_cloudwatchlogs::Client::new(config),
            events: aws_sdk_eventbridge::Client::new(config),
        }
    }
}

/// Resolves the operator's settings into the planner's environment: the load balancers
/// behind the listeners, the zones' domains, the account and region.
pub async fn resolve_environment(
    clients: &Clients,
    config: &EcsConfig,
    region: Option<&str>,
) -> Result<Environment, EcsError> {
    config.check().map_err(EcsError::Config)?;
    let listener_arn = parse_arn(&config.internal_listener_arn)
        .ok_or_else(|| EcsError::Config("EMPIRE_ELB_INTERNAL_LISTENER_ARN is not an ARN".into()))?;
    let region = region
        .map(str::to_string)
        .unwrap_or_else(|| listener_arn.region.to_string());
    let account = listener_arn.account.to_string();
    let partition = listener_arn.partition.to_string();

    let internal = load_balancer(clients, &config.internal_listener_arn).await?;
    let external = match &config.external_listener_arn {
        Some(arn) => Some(load_balancer(clients, arn).await?),
        None => None,
    };
    let internal_zone = hosted_zone(clients, &config.internal_zone_id).await?;
    let public_zone = match &config.public_zone_id {
        Some(id) => Some(hosted_zone(clients, id).await?),
        None => None,
    };
    Ok(Environment {
        cluster: config.cluster.clone(),
        region,
        account,
        partition,
        launch_type: config.launch_type,
        subnets: config.subnets.clone(),
        security_groups: config.security_groups.clone(),
        assign_public_ip: config.assign_public_ip,
        execution_role_arn: config.execution_role_arn.clone(),
        task_role_arn: config.task_role_arn.clone(),
        events_role_arn: config.events_role_arn.clone(),
        vpc_id: config.vpc_id.clone(),
        internal,
        external,
        internal_zone,
        public_zone,
        health_check_grace_seconds: u32::try_from(config.health_check_grace.as_secs())
            .unwrap_or(u32::MAX),
        deregistration_delay_seconds: u32::try_from(config.deregistration_delay.as_secs())
            .unwrap_or(u32::MAX),
        log_retention_days: config.log_retention_days,
    })
}

async fn load_balancer(clients: &Clients, listener_arn: &str) -> Result<LoadBalancer, EcsError> {
    let context = format!("describing the listener {listener_arn}");
    let listeners = call(&context, || {
        clients
            .elb
            .describe_listeners()
            .listener_arns(listener_arn)
            .send()
    })
    .await?;
    let https = listeners
        .listeners()
        .first()
        .and_then(|l| l.protocol())
        .is_some_and(|p| *p == aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Https);
    let lb_arn = listeners
        .listeners()
        .first()
        .and_then(|l| l.load_balancer_arn())
        .ok_or_else(|| EcsError::NotFound(format!("listener {listener_arn} not found")))?
        .to_string();
    let lbs = call("describing the load balancer", || {
        clients
            .elb
            .describe_load_balancers()
            .load_balancer_arns(&lb_arn)
            .send()
    })
    .await?;
    let lb = lbs
        .load_balancers()
        .first()
        .ok_or_else(|| EcsError::NotFound(format!("load balancer {lb_arn} not found")))?;
    Ok(LoadBalancer {
        https,
        listener_arn: listener_arn.to_string(),
        dns_name: lb.dns_name().unwrap_or_default().to_string(),
        zone_id: lb
            .canonical_hosted_zone_id()
            .unwrap_or_default()
            .to_string(),
    })
}

async fn hosted_zone(clients: &Clients, id: &str) -> Result<HostedZone, EcsError> {
    let id = id.trim_start_matches("/hostedzone/");
    let zone = call(&format!("reading the hosted zone {id}"), || {
        clients.route53.get_hosted_zone().id(id).send()
    })
    .await?;
    let name = zone
        .hosted_zone()
        .map(|z| normalize_dns(z.name()))
        .ok_or_else(|| EcsError::NotFound(format!("hosted zone {id} not found")))?;
    Ok(HostedZone {
        id: id.to_string(),
        domain: name,
    })
}

/// The cluster's ARN (EventBridge targets name clusters by ARN).
pub fn cluster_arn(env: &Environment) -> String {
    if env.cluster.starts_with("arn:") {
        env.cluster.clone()
    } else {
        format!(
            "arn:{}:ecs:{}:{}:cluster/{}",
            env.partition, env.region, env.account, env.cluster
        )
    }
}

/// What to look at when observing an app.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// The process types whose families to read; `None`: every family of the app.
    pub processes: Option<Vec<String>>,
    /// The task definitions a deploy wants, by process type: a family whose latest
    /// revision is already the wanted one needs no listing of its revisions.
    pub wanted: BTreeMap<String, TaskDefinition>,
    /// Host names to look up records for, besides the app's current domains.
    pub hosts: Vec<String>,
}

/// Reads everything of `app` the planner compares against.
pub async fn observe(
    clients: &Clients,
    env: &Environment,
    app: &str,
    scope: &Scope,
) -> Result<Observed, EcsError> {
    let families =
        async {
            let processes = match &scope.processes {
                Some(processes) => processes.clone(),
                None => list_families(clients, app).await?,
            };
            let names: Vec<String> = processes.iter().map(|p| family(app, p)).collect();
            let read =
                join_all(processes.iter().zip(&names).map(|(process, name)| {
                    observe_family(clients, name, scope.wanted.get(process))
                }))
                .await;
            let mut families = BTreeMap::new();
            for (process, family) in processes.into_iter().zip(read) {
                let family = family?;
                if family.latest.is_some() || !family.active_revisions.is_empty() {
                    families.insert(process, family);
                }
            }
            Ok::<_, EcsError>(families)
        };
    let routing = async {
        let target_group = observe_target_group(clients, app).await?;
        let tg_arn = target_group.as_ref().map(|t| t.arn.clone());
        let (internal, external) = futures_util::join!(
            observe_rules(clients, &env.internal.listener_arn, tg_arn.as_deref()),
            async {
                match &env.external {
                    Some(external) => {
                        observe_rules(clients, &external.listener_arn, tg_arn.as_deref()).await
                    }
                    None => Ok((Vec::new(), BTreeSet::new())),
                }
            }
        );
        Ok::<_, EcsError>((target_group, internal?, external?))
    };
    let (log_group, parameters, families, services, routing, schedules) = futures_util::join!(
        observe_log_group(clients, app),
        observe_parameters(clients, app),
        families,
        observe_services(clients, env, app),
        routing,
        observe_schedules(clients, app),
    );
    let (
        target_group,
        (internal_rules, internal_priorities),
        (external_rules, external_priorities),
    ) = routing?;
    let mut observed = Observed {
        log_group: log_group?,
        parameters: parameters?,
        families: families?,
        services: services?,
        target_group,
        internal_rules,
        external_rules,
        internal_priorities,
        external_priorities,
        records: BTreeMap::new(),
        schedules: schedules?,
    };
    let mut hosts: BTreeSet<String> = observed.domains().into_iter().collect();
    hosts.extend(scope.hosts.iter().map(|h| h.to_ascii_lowercase()));
    let mut lookups = vec![(env.internal_zone.id.clone(), internal_hostname(app, env))];
    if let Some(zone) = &env.public_zone {
        for host in hosts {
            if in_zone(&host, &zone.domain) {
                lookups.push((zone.id.clone(), host));
            }
        }
    }
    let records = join_all(
        lookups
            .iter()
            .map(|(zone, name)| observe_record(clients, zone, name)),
    )
    .await;
    for record in records {
        if let Some(record) = record? {
            observed.records.insert(record.name.clone(), record);
        }
    }
    Ok(observed)
}

async fn observe_log_group(clients: &Clients, app: &str) -> Result<bool, EcsError> {
    let name = log_group(app);
    let groups = call("describing the log group", || {
        clients
            .logs
            .describe_log_groups()
            .log_group_name_prefix(&name)
            .send()
    })
    .await?;
    Ok(groups
        .log_groups()
        .iter()
        .any(|g| g.log_group_name() == Some(name.as_str())))
}

async fn observe_parameters(
    clients: &Clients,
    app: &str,
) -> Result<BTreeMap<String, String>, EcsError> {
    let path = parameters_path(app);
    let mut parameters = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let page = call("reading the config parameters", || {
            clients
                .ssm
                .get_parameters_by_path()
                .path(path.trim_end_matches('/'))
                .recursive(true)
                .with_decryption(true)
                .set_next_token(token.clone())
                .send()
        })
        .await?;
        for parameter in page.parameters() {
            if let (Some(name), Some(value)) = (parameter.name(), parameter.value()) {
                parameters.insert(name.to_string(), value.to_string());
            }
        }
        token = page
            .next_token()
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if token.is_none() {
            return Ok(parameters);
        }
    }
}

/// The process types of the app's ACTIVE task definition families.
async fn list_families(clients: &Clients, app: &str) -> Result<Vec<String>, EcsError> {
    let prefix = format!("{app}_");
    let mut processes = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = call("listing task definition families", || {
            clients
                .ecs
                .list_task_definition_families()
                .family_prefix(&prefix)
                .status(ecs::TaskDefinitionFamilyStatus::Active)
                .set_next_token(token.clone())
                .send()
        })
        .await?;
        for name in page.families() {
            if let Some(process) = process_of(app, name) {
                processes.push(process.to_string());
            }
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(processes);
        }
    }
}

/// The latest ACTIVE revision of a family and, unless it is already `wanted` (then
/// nothing changes and nothing is pruned), the numbers of every ACTIVE revision.
async fn observe_family(
    clients: &Clients,
    name: &str,
    wanted: Option<&TaskDefinition>,
) -> Result<ObservedFamily, EcsError> {
    // The family name alone describes its latest ACTIVE revision.
    let described = call(&format!("describing {name}"), || {
        clients
            .ecs
            .describe_task_definition()
            .task_definition(name)
            .include(ecs::TaskDefinitionField::Tags)
            .send()
    })
    .await;
    let described = match described {
        Ok(described) => described,
        Err(err) if err.code() == Some("ClientException") => {
            return Ok(ObservedFamily::default());
        }
        Err(err) => return Err(err),
    };
    let Some(td) = described.task_definition() else {
        return Ok(ObservedFamily::default());
    };
    let latest_arn = td.task_definition_arn().unwrap_or_default().to_string();
    let latest =
        from_task_definition(td, described.tags()).map(|definition| ObservedTaskDefinition {
            arn: latest_arn.clone(),
            definition,
        });
    let unchanged = match (&latest, wanted) {
        (Some(latest), Some(wanted)) => latest.definition.same_as(wanted),
        _ => false,
    };
    if unchanged {
        return Ok(ObservedFamily {
            active_revisions: super::plan::revision_of(&latest_arn).into_iter().collect(),
            latest,
        });
    }

    let mut revisions = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = call(&format!("listing the revisions of {name}"), || {
            clients
                .ecs
                .list_task_definitions()
                .family_prefix(name)
                .status(ecs::TaskDefinitionStatus::Active)
                .set_next_token(token.clone())
                .send()
        })
        .await?;
        // The prefix also matches longer family names.
        revisions.extend(page.task_definition_arns().iter().filter_map(|arn| {
            let (family_name, revision) = short_arn(arn).rsplit_once(':')?;
            (family_name == name).then(|| revision.parse::<u32>().ok())?
        }));
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    revisions.sort_unstable();
    Ok(ObservedFamily {
        latest,
        active_revisions: revisions,
    })
}

/// The app's services (named `<app>_<process>`) in the cluster.
pub async fn list_app_services(
    clients: &Clients,
    env: &Environment,
    app: &str,
) -> Result<Vec<String>, EcsError> {
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = call("listing the cluster's services", || {
            clients
                .ecs
                .list_services()
                .cluster(&env.cluster)
                .max_results(100)
                .set_next_token(token.clone())
                .send()
        })
        .await?;
        for arn in page.service_arns() {
            let name = arn.rsplit('/').next().unwrap_or(arn);
            if process_of(app, name).is_some() {
                names.push(name.to_string());
            }
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(names);
        }
    }
}

/// Describes services, ten at a time.
pub async fn describe_services(
    clients: &Clients,
    env: &Environment,
    names: &[String],
) -> Result<Vec<ecs::Service>, EcsError> {
    let batches = join_all(names.chunks(10).map(|batch| {
        call("describing services", move || {
            clients
                .ecs
                .describe_services()
                .cluster(&env.cluster)
                .set_services(Some(batch.to_vec()))
                .include(ecs::ServiceField::Tags)
                .send()
        })
    }))
    .await;
    let mut services = Vec::new();
    for batch in batches {
        services.extend(batch?.services().iter().cloned());
    }
    Ok(services)
}

async fn observe_services(
    clients: &Clients,
    env: &Environment,
    app: &str,
) -> Result<BTreeMap<String, ObservedService>, EcsError> {
    let names = list_app_services(clients, env, app).await?;
    let mut services = BTreeMap::new();
    for service in describe_services(clients, env, &names).await? {
        let Some(name) = service.service_name() else {
            continue;
        };
        let Some(process) = process_of(app, name) else {
            continue;
        };
        let release = service
            .tags()
            .iter()
            .find(|t| t.key() == Some(TAG_RELEASE))
            .and_then(|t| t.value())
            .and_then(parse_release);
        services.insert(
            process.to_string(),
            ObservedService {
                name: name.to_string(),
                status: service.status().unwrap_or_default().to_string(),
                task_definition: service.task_definition().unwrap_or_default().to_string(),
                desired_count: u32::try_from(service.desired_count()).unwrap_or(0),
                release,
            },
        );
    }
    Ok(services)
}

async fn observe_target_group(
    clients: &Clients,
    app: &str,
) -> Result<Option<ObservedTargetGroup>, EcsError> {
    let name = target_group_name(app);
    let found = call("describing the target group", || {
        clients.elb.describe_target_groups().names(&name).send()
    })
    .await;
    let groups = match found {
        Ok(groups) => groups,
        Err(err) if err.code() == Some("TargetGroupNotFound") => return Ok(None),
        Err(err) => return Err(err),
    };
    let Some(group) = groups.target_groups().first() else {
        return Ok(None);
    };
    let arn = group.target_group_arn().unwrap_or_default().to_string();
    let attributes = call("reading the target group's attributes", || {
        clients
            .elb
            .describe_target_group_attributes()
            .target_group_arn(&arn)
            .send()
    })
    .await?;
    let deregistration_delay_seconds = attributes
        .attributes()
        .iter()
        .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
        .and_then(|a| a.value())
        .and_then(|v| v.parse().ok());
    Ok(Some(ObservedTargetGroup {
        arn,
        health_check_path: group.health_check_path().unwrap_or("/").to_string(),
        matcher: group
            .matcher()
            .and_then(|m| m.http_code())
            .unwrap_or_default()
            .to_string(),
        deregistration_delay_seconds,
    }))
}

/// The rules forwarding to `target_group` on a listener, by priority, and every
/// priority taken on it.
async fn observe_rules(
    clients: &Clients,
    listener_arn: &str,
    target_group: Option<&str>,
) -> Result<(Vec<ObservedRule>, BTreeSet<u32>), EcsError> {
    let mut ours = Vec::new();
    let mut taken = BTreeSet::new();
    let mut marker: Option<String> = None;
    loop {
        let page = call("describing listener rules", || {
            clients
                .elb
                .describe_rules()
                .listener_arn(listener_arn)
                .set_marker(marker.clone())
                .send()
        })
        .await?;
        for rule in page.rules() {
            let Some(priority) = rule.priority().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            taken.insert(priority);
            let forwards_to_us = target_group.is_some_and(|tg| {
                rule.actions().iter().any(|a| {
                    a.target_group_arn() == Some(tg)
                        || a.forward_config().is_some_and(|f| {
                            f.target_groups()
                                .iter()
                                .any(|t| t.target_group_arn() == Some(tg))
                        })
                })
            });
            if !forwards_to_us {
                continue;
            }
            let mut hosts: Vec<String> = Vec::new();
            for condition in rule.conditions() {
                if condition.field() != Some("host-header") {
                    continue;
                }
                match condition.host_header_config() {
                    Some(config) if !config.values().is_empty() => {
                        hosts.extend(config.values().iter().cloned());
                    }
                    _ => hosts.extend(condition.values().iter().cloned()),
                }
            }
            hosts.sort();
            hosts.dedup();
            ours.push(ObservedRule {
                arn: rule.rule_arn().unwrap_or_default().to_string(),
                priority,
                hosts,
            });
        }
        marker = page.next_marker().map(str::to_string);
        if marker.is_none() {
            break;
        }
    }
    ours.sort_by_key(|r| r.priority);
    Ok((ours, taken))
}

async fn observe_record(
    clients: &Clients,
    zone_id: &str,
    name: &str,
) -> Result<Option<Record>, EcsError> {
    let page = call(&format!("looking up the record {name}"), || {
        clients
            .route53
            .list_resource_record_sets()
            .hosted_zone_id(zone_id)
            .start_record_name(name)
            .start_record_type(r53::RrType::A)
            .max_items(1)
            .send()
    })
    .await?;
    let Some(set) = page.resource_record_sets().first() else {
        return Ok(None);
    };
    if normalize_dns(set.name()) != name || *set.r#type() != r53::RrType::A {
        return Ok(None);
    }
    let Some(alias) = set.alias_target() else {
        return Ok(None);
    };
    Ok(Some(Record {
        zone_id: zone_id.to_string(),
        name: name.to_string(),
        alias_dns_name: normalize_dns(alias.dns_name()),
        alias_zone_id: alias.hosted_zone_id().to_string(),
        evaluate_target_health: alias.evaluate_target_health(),
    }))
}

async fn observe_schedules(
    clients: &Clients,
    app: &str,
) -> Result<BTreeMap<String, ObservedSchedule>, EcsError> {
    let prefix = format!("{app}_");
    let mut rules = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = call("listing schedules", || {
            clients
                .events
                .list_rules()
                .name_prefix(&prefix)
                .set_next_token(token.clone())
                .send()
        })
        .await?;
        for rule in page.rules() {
            if let Some(name) = rule.name()
                && process_of(app, name).is_some()
            {
                rules.push((
                    name.to_string(),
                    rule.schedule_expression().unwrap_or_default().to_string(),
                ));
            }
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let targets = join_all(rules.iter().map(|(name, _)| {
        call("listing a schedule's targets", move || {
            clients.events.list_targets_by_rule().rule(name).send()
        })
    }))
    .await;
    let mut schedules = BTreeMap::new();
    for ((name, expression), targets) in rules.into_iter().zip(targets) {
        let targets = targets?;
        let task_definition = targets
            .targets()
            .iter()
            .find_map(|t| t.ecs_parameters())
            .map(|p| p.task_definition_arn().to_string());
        let process = process_of(app, &name).unwrap_or_default().to_string();
        schedules.insert(
            process,
            ObservedSchedule {
                rule: name,
                expression,
                task_definition,
            },
        );
    }
    Ok(schedules)
}

/// Reads an ECS task definition back into the planner's terms (`None` when it is not
/// one Empire registers: no single container).
pub fn from_task_definition(td: &ecs::TaskDefinition, tags: &[ecs::Tag]) -> Option<TaskDefinition> {
    let [container] = td.container_definitions() else {
        return None;
    };
    let non_empty = |v: &[String]| (!v.is_empty()).then(|| v.to_vec());
    let log = container.log_configuration().map(|l| {
        let option = |key: &str| {
            l.options()
                .and_then(|o| o.get(key))
                .cloned()
                .unwrap_or_default()
        };
        LogConfiguration {
            group: option("awslogs-group"),
            region: option("awslogs-region"),
            stream_prefix: option("awslogs-stream-prefix"),
        }
    })?;
    Some(TaskDefinition {
        family: td.family().unwrap_or_default().to_string(),
        network_mode: td
            .network_mode()
            .map(|m| m.as_str().to_string())
            .unwrap_or_else(|| "bridge".to_string()),
        requires_compatibilities: td
            .requires_compatibilities()
            .iter()
            .map(|c| c.as_str().to_string())
            .collect(),
        cpu: td.cpu().map(str::to_string),
        memory: td.memory().map(str::to_string),
        execution_role_arn: td.execution_role_arn().unwrap_or_default().to_string(),
        task_role_arn: td.task_role_arn().map(str::to_string),
        container: ContainerDefinition {
            name: container.name().unwrap_or_default().to_string(),
            image: container.image().unwrap_or_default().to_string(),
            entry_point: non_empty(container.entry_point()),
            command: non_empty(container.command()),
            cpu: u32::try_from(container.cpu()).unwrap_or(0),
            memory_mib: container
                .memory()
                .and_then(|m| u32::try_from(m).ok())
                .unwrap_or(0),
            environment: container
                .environment()
                .iter()
                .filter_map(|kv| {
                    Some((
                        kv.name()?.to_string(),
                        kv.value().unwrap_or_default().to_string(),
                    ))
                })
                .collect(),
            secrets: container
                .secrets()
                .iter()
                .map(|s| (s.name().to_string(), s.value_from().to_string()))
                .collect(),
            ports: container
                .port_mappings()
                .iter()
                .filter_map(|p| p.container_port().and_then(|p| u16::try_from(p).ok()))
                .collect(),
            log,
            health_check: container.health_check().map(|h| ContainerHealthCheck {
                command: h.command().to_vec(),
                interval_seconds: h.interval().unwrap_or(30),
                timeout_seconds: h.timeout().unwrap_or(5),
                retries: h.retries().unwrap_or(3),
                start_period_seconds: h.start_period().unwrap_or(0),
            }),
        },
        tags: tags
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
            .collect(),
    })
}

fn ecs_tags(tags: &BTreeMap<String, String>) -> Vec<ecs::Tag> {
    tags.iter()
        .map(|(k, v)| ecs::Tag::builder().key(k).value(v).build())
        .collect()
}

fn build_error(what: &str, err: impl std::fmt::Display) -> EcsError {
    EcsError::Plan(format!("cannot build the {what} request: {err}"))
}

/// The ECS container definition of the planner's.
pub fn container_definition(
    definition: &TaskDefinition,
) -> Result<ecs::ContainerDefinition, EcsError> {
    let c = &definition.container;
    let awsvpc = definition.network_mode == "awsvpc";
    let secrets = c
        .secrets
        .iter()
        .map(|(name, from)| {
            ecs::Secret::builder()
                .name(name)
                .value_from(from)
                .build()
                .map_err(|e| build_error("secret", e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let log = ecs::LogConfiguration::builder()
        .log_driver(ecs::LogDriver::Awslogs)
        .options("awslogs-group", &c.log.group)
        .options("awslogs-region", &c.log.region)
        .options("awslogs-stream-prefix", &c.log.stream_prefix)
        .build()
        .map_err(|e| build_error("log configuration", e))?;
    Ok(ecs::ContainerDefinition::builder()
        .name(&c.name)
        .image(&c.image)
        .essential(true)
        .set_entry_point(c.entry_point.clone())
        .set_command(c.command.clone())
        .cpu(i32::try_from(c.cpu).unwrap_or(i32::MAX))
        .memory(i32::try_from(c.memory_mib).unwrap_or(i32::MAX))
        .set_environment(Some(
            c.environment
                .iter()
                .map(|(k, v)| ecs::KeyValuePair::builder().name(k).value(v).build())
                .collect(),
        ))
        .set_secrets(Some(secrets))
        .set_port_mappings(Some(
            c.ports
                .iter()
                .map(|port| {
                    ecs::PortMapping::builder()
                        .container_port(i32::from(*port))
                        .host_port(if awsvpc { i32::from(*port) } else { 0 })
                        .protocol(ecs::TransportProtocol::Tcp)
                        .build()
                })
                .collect(),
        ))
        .log_configuration(log)
        .set_health_check(
            c.health_check
                .as_ref()
                .map(|h| {
                    ecs::HealthCheck::builder()
                        .set_command(Some(h.command.clone()))
                        .interval(h.interval_seconds)
                        .timeout(h.timeout_seconds)
                        .retries(h.retries)
                        .start_period(h.start_period_seconds)
                        .build()
                        .map_err(|e| build_error("health check", e))
                })
                .transpose()?,
        )
        .build())
}

/// What applying actions produced: the new revisions and the created target group.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// Family → the ARN of the revision registered.
    pub registered: BTreeMap<String, String>,
    /// The created target group's ARN.
    pub target_group: Option<String>,
}

impl Applied {
    /// The ARN a task definition reference stands for.
    pub fn resolve(&self, reference: &TaskDefinitionRef) -> Result<String, EcsError> {
        match reference {
            TaskDefinitionRef::Arn(arn) => Ok(arn.clone()),
            TaskDefinitionRef::Registered(family) => {
                self.registered.get(family).cloned().ok_or_else(|| {
                    EcsError::Plan(format!("no revision of {family} was registered"))
                })
            }
        }
    }

    fn target_group(&self, reference: &TargetGroupRef) -> Result<String, EcsError> {
        match reference {
            TargetGroupRef::Arn(arn) => Ok(arn.clone()),
            TargetGroupRef::Created(name) => self
                .target_group
                .clone()
                .ok_or_else(|| EcsError::Plan(format!("the target group {name} was not created"))),
        }
    }
}

/// Applies actions (`base`: what earlier phases registered and created): those that depend on nothing first, then those that need what the
/// first ones made (target group, task definitions) or that must come after them
/// (deleting a target group after its rules). Each rank runs concurrently.
pub async fn apply(
    clients: &Clients,
    env: &Environment,
    actions: &[Action],
    base: &Applied,
    progress: &Progress,
) -> Result<Applied, EcsError> {
    let applied = Mutex::new(base.clone());
    let permits = Semaphore::new(CONCURRENCY);
    for rank in 0..2 {
        let batch: Vec<&Action> = actions.iter().filter(|a| rank_of(a) == rank).collect();
        if batch.is_empty() {
            continue;
        }
        let snapshot = applied.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let runs: Vec<_> = batch
            .into_iter()
            .map(|action| {
                run_action(
                    clients, env, action, &snapshot, &applied, &permits, progress,
                )
            })
            .collect();
        // Report the first failure after everything of the rank finished.
        join_all(runs)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, EcsError>>()?;
    }
    Ok(applied.into_inner().unwrap_or_else(|e| e.into_inner()))
}

async fn run_action(
    clients: &Clients,
    env: &Environment,
    action: &Action,
    snapshot: &Applied,
    applied: &Mutex<Applied>,
    permits: &Semaphore,
    progress: &Progress,
) -> Result<(), EcsError> {
    let _permit = permits.acquire().await.ok();
    let done = apply_one(clients, env, action, snapshot).await?;
    let mut applied = applied.lock().unwrap_or_else(|e| e.into_inner());
    match done {
        Done::Registered(family, arn) => {
            progress.detail(format!("Registered {}", short_arn(&arn)));
            applied.registered.insert(family, arn);
        }
        Done::TargetGroup(arn) => applied.target_group = Some(arn),
        Done::Nothing => {}
    }
    Ok(())
}

/// `family:revision` of a task definition ARN.
pub fn short_arn(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

fn rank_of(action: &Action) -> u8 {
    match action {
        Action::CreateRule { .. }
        | Action::CreateService { .. }
        | Action::UpdateService { .. }
        | Action::PutSchedule { .. }
        | Action::DeleteTargetGroup { .. }
        | Action::DeleteParameters { .. }
        | Action::DeregisterTaskDefinitions { .. }
        | Action::DeleteLogGroup { .. } => 1,
        _ => 0,
    }
}

enum Done {
    Registered(String, String),
    TargetGroup(String),
    Nothing,
}

async fn apply_one(
    clients: &Clients,
    env: &Environment,
    action: &Action,
    applied: &Applied,
) -> Result<Done, EcsError> {
    debug!(?action, "applying");
    match action {
        Action::CreateLogGroup {
            name,
            retention_days,
            tags,
        } => {
            let tags: HashMap<String, String> = tags.clone().into_iter().collect();
            let created = call(&format!("creating the log group {name}"), || {
                clients
                    .logs
                    .create_log_group()
                    .log_group_name(name)
                    .set_tags(Some(tags.clone()))
                    .send()
            })
            .await;
            match created {
                Ok(_) => {}
                Err(err) if err.code() == Some("ResourceAlreadyExistsException") => {}
                Err(err) => return Err(err),
            }
            if let Some(days) = retention_days {
                call("setting the log retention", || {
                    clients
                        .logs
                        .put_retention_policy()
                        .log_group_name(name)
                        .retention_in_days(*days)
                        .send()
                })
                .await?;
            }
        }
        Action::DeleteLogGroup { name } => {
            match call(&format!("deleting the log group {name}"), || {
                clients.logs.delete_log_group().log_group_name(name).send()
            })
            .await
            {
                Ok(_) => {}
                Err(err) if err.code() == Some("ResourceNotFoundException") => {}
                Err(err) => return Err(err),
            }
        }
        Action::PutParameter {
            name,
            value,
            overwrite,
            tags,
        } => {
            let tags = tags
                .iter()
                .map(|(k, v)| {
                    aws_sdk_ssm::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                        .map_err(|e| build_error("tag", e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let tier = if value.len() > 4096 {
                aws_sdk_ssm::types::ParameterTier::Advanced
            } else {
                aws_sdk_ssm::types::ParameterTier::Standard
            };
            let put = |overwrite: bool| {
                let mut request = clients
                    .ssm
                    .put_parameter()
                    .name(name)
                    .value(value)
                    .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                    .tier(tier.clone())
                    .overwrite(overwrite);
                if !overwrite {
                    request = request.set_tags(Some(tags.clone()));
                }
                request.send()
            };
            let context = format!("writing the parameter {name}");
            match call(&context, || put(*overwrite)).await {
                Ok(_) => {}
                // Written meanwhile (a deploy run twice at once): overwrite it.
                Err(err) if err.code() == Some("ParameterAlreadyExists") => {
                    call(&context, || put(true)).await?;
                }
                Err(err) => return Err(err),
            }
        }
        Action::DeleteParameters { names } => {
            let batches = join_all(names.chunks(10).map(|batch| {
                call("deleting parameters", move || {
                    clients
                        .ssm
                        .delete_parameters()
                        .set_names(Some(batch.to_vec()))
                        .send()
                })
            }))
            .await;
            for batch in batches {
                batch?;
            }
        }
        Action::RegisterTaskDefinition { definition } => {
            let container = container_definition(definition)?;
            let family_name = definition.family.clone();
            let registered = call(&format!("registering {family_name}"), || {
                clients
                    .ecs
                    .register_task_definition()
                    .family(&definition.family)
                    .network_mode(ecs::NetworkMode::from(definition.network_mode.as_str()))
                    .set_requires_compatibilities(Some(
                        definition
                            .requires_compatibilities
                            .iter()
                            .map(|c| ecs::Compatibility::from(c.as_str()))
                            .collect(),
                    ))
                    .set_cpu(definition.cpu.clone())
                    .set_memory(definition.memory.clone())
                    .execution_role_arn(&definition.execution_role_arn)
                    .set_task_role_arn(definition.task_role_arn.clone())
                    .container_definitions(container.clone())
                    .set_tags(Some(ecs_tags(&definition.tags)))
                    .send()
            })
            .await?;
            let arn = registered
                .task_definition()
                .and_then(|t| t.task_definition_arn())
                .ok_or_else(|| EcsError::Plan(format!("registering {family_name} gave no ARN")))?
                .to_string();
            return Ok(Done::Registered(family_name, arn));
        }
        Action::DeregisterTaskDefinitions { arns } => {
            let results = join_all(arns.iter().map(|arn| async move {
                let context = format!("deregistering {arn}");
                call(&context, move || {
                    clients
                        .ecs
                        .deregister_task_definition()
                        .task_definition(arn)
                        .send()
                })
                .await
            }))
            .await;
            for result in results {
                match result {
                    Ok(_) => {}
                    Err(err) if err.code() == Some("ClientException") => {
                        debug!(error = %err, "already deregistered");
                    }
                    Err(err) => return Err(err),
                }
            }
        }
        Action::CreateTargetGroup { target_group } => {
            let t = target_group;
            let tags = t
                .tags
                .iter()
                .map(|(k, v)| elb::Tag::builder().key(k).value(v).build())
                .collect::<Vec<_>>();
            let created = call(&format!("creating the target group {}", t.name), || {
                clients
                    .elb
                    .create_target_group()
                    .name(&t.name)
                    .protocol(elb::ProtocolEnum::Http)
                    .port(i32::from(t.port))
                    .vpc_id(&t.vpc_id)
                    .target_type(elb::TargetTypeEnum::from(t.target_type.as_str()))
                    .health_check_protocol(elb::ProtocolEnum::Http)
                    .health_check_path(&t.health_check_path)
                    .matcher(elb::Matcher::builder().http_code(&t.matcher).build())
                    .set_tags(Some(tags.clone()))
                    .send()
            })
            .await?;
            let arn = created
                .target_groups()
                .first()
                .and_then(|g| g.target_group_arn())
                .ok_or_else(|| EcsError::Plan("creating the target group gave no ARN".into()))?
                .to_string();
            set_deregistration_delay(clients, &arn, t.deregistration_delay_seconds).await?;
            return Ok(Done::TargetGroup(arn));
        }
        Action::ModifyTargetGroup {
            arn,
            health_check_path,
            matcher,
        } => {
            call("changing the target group's health check", || {
                clients
                    .elb
                    .modify_target_group()
                    .target_group_arn(arn)
                    .health_check_path(health_check_path)
                    .matcher(elb::Matcher::builder().http_code(matcher).build())
                    .send()
            })
            .await?;
        }
        Action::SetDeregistrationDelay { arn, seconds } => {
            set_deregistration_delay(clients, arn, *seconds).await?;
        }
        Action::DeleteTargetGroup { arn } => {
            match call("deleting the target group", || {
                clients
                    .elb
                    .delete_target_group()
                    .target_group_arn(arn)
                    .send()
            })
            .await
            {
                Ok(_) => {}
                Err(err) if err.code() == Some("TargetGroupNotFound") => {}
                Err(err) => return Err(err),
            }
        }
        Action::CreateRule {
            listener,
            priority,
            hosts,
            target_group,
            tags,
        } => {
            let listener_arn = listener_arn(env, *listener)?;
            let target_group = applied.target_group(target_group)?;
            let tags = tags
                .iter()
                .map(|(k, v)| elb::Tag::builder().key(k).value(v).build())
                .collect::<Vec<_>>();
            call(&format!("adding the rule for {}", hosts.join(", ")), || {
                clients
                    .elb
                    .create_rule()
                    .listener_arn(listener_arn)
                    .priority(i32::try_from(*priority).unwrap_or(i32::MAX))
                    .conditions(host_condition(hosts))
                    .actions(
                        elb::Action::builder()
                            .r#type(elb::ActionTypeEnum::Forward)
                            .target_group_arn(&target_group)
                            .build(),
                    )
                    .set_tags(Some(tags.clone()))
                    .send()
            })
            .await?;
        }
        Action::ModifyRule { arn, hosts } => {
            call(
                &format!("changing the rule for {}", hosts.join(", ")),
                || {
                    clients
                        .elb
                        .modify_rule()
                        .rule_arn(arn)
                        .conditions(host_condition(hosts))
                        .send()
                },
            )
            .await?;
        }
        Action::DeleteRule { arn } => {
            match call("deleting a listener rule", || {
                clients.elb.delete_rule().rule_arn(arn).send()
            })
            .await
            {
                Ok(_) => {}
                Err(err) if err.code() == Some("RuleNotFound") => {}
                Err(err) => return Err(err),
            }
        }
        Action::ChangeRecords { zone_id, changes } => {
            let mut batch = r53::ChangeBatch::builder();
            for change in changes {
                let r = &change.record;
                let alias = r53::AliasTarget::builder()
                    .hosted_zone_id(&r.alias_zone_id)
                    .dns_name(&r.alias_dns_name)
                    .evaluate_target_health(r.evaluate_target_health)
                    .build()
                    .map_err(|e| build_error("alias", e))?;
                let set = r53::ResourceRecordSet::builder()
                    .name(&r.name)
                    .r#type(r53::RrType::A)
                    .alias_target(alias)
                    .build()
                    .map_err(|e| build_error("record", e))?;
                batch = batch.changes(
                    r53::Change::builder()
                        .action(r53::ChangeAction::from(change.action.as_str()))
                        .resource_record_set(set)
                        .build()
                        .map_err(|e| build_error("record change", e))?,
                );
            }
            let batch = batch.build().map_err(|e| build_error("change batch", e))?;
            call("changing DNS records", || {
                clients
                    .route53
                    .change_resource_record_sets()
                    .hosted_zone_id(zone_id)
                    .change_batch(batch.clone())
                    .send()
            })
            .await?;
        }
        Action::CreateService { service } => {
            let s = service;
            let task_definition = applied.resolve(&s.task_definition)?;
            let load_balancer = match &s.load_balancer {
                Some(lb) => Some(
                    ecs::LoadBalancer::builder()
                        .target_group_arn(applied.target_group(&lb.target_group)?)
                        .container_name(&lb.container_name)
                        .container_port(i32::from(lb.container_port))
                        .build(),
                ),
                None => None,
            };
            let network = match &s.network {
                Some(n) => Some(ecs_network(n)?),
                None => None,
            };
            call(&format!("creating the service {}", s.name), || {
                clients
                    .ecs
                    .create_service()
                    .cluster(&env.cluster)
                    .service_name(&s.name)
                    .task_definition(&task_definition)
                    .desired_count(i32::try_from(s.desired_count).unwrap_or(i32::MAX))
                    .launch_type(ecs::LaunchType::from(s.launch_type.as_str()))
                    .set_network_configuration(network.clone())
                    .set_load_balancers(load_balancer.clone().map(|lb| vec![lb]))
                    .set_health_check_grace_period_seconds(
                        s.health_check_grace_seconds
                            .map(|g| i32::try_from(g).unwrap_or(i32::MAX)),
                    )
                    .deployment_configuration(deployment_configuration(
                        s.minimum_healthy_percent,
                        s.maximum_percent,
                        s.circuit_breaker,
                    ))
                    .propagate_tags(ecs::PropagateTags::Service)
                    .set_tags(Some(ecs_tags(&s.tags)))
                    .send()
            })
            .await?;
        }
        Action::UpdateService {
            name,
            task_definition,
            desired_count,
            force_new_deployment,
            release,
            ..
        } => {
            let task_definition = match task_definition {
                Some(reference) => Some(applied.resolve(reference)?),
                None => None,
            };
            let updated = call(&format!("updating the service {name}"), || {
                clients
                    .ecs
                    .update_service()
                    .cluster(&env.cluster)
                    .service(name)
                    .set_task_definition(task_definition.clone())
                    .desired_count(i32::try_from(*desired_count).unwrap_or(i32::MAX))
                    .force_new_deployment(*force_new_deployment)
                    .deployment_configuration(deployment_configuration(100, 200, true))
                    .send()
            })
            .await?;
            if let Some(arn) = updated.service().and_then(|s| s.service_arn()) {
                let tag = ecs::Tag::builder()
                    .key(TAG_RELEASE)
                    .value(format!("v{release}"))
                    .build();
                call(&format!("tagging the service {name}"), || {
                    clients
                        .ecs
                        .tag_resource()
                        .resource_arn(arn)
                        .tags(tag.clone())
                        .send()
                })
                .await?;
            }
        }
        Action::DeleteService { name } => {
            match call(&format!("deleting the service {name}"), || {
                clients
                    .ecs
                    .delete_service()
                    .cluster(&env.cluster)
                    .service(name)
                    .force(true)
                    .send()
            })
            .await
            {
                Ok(_) => {}
                Err(err) if err.code() == Some("ServiceNotFoundException") => {}
                Err(err) => return Err(err),
            }
        }
        Action::PutSchedule {
            rule,
            expression,
            task_definition,
            tags,
            ..
        } => {
            let task_definition = applied.resolve(task_definition)?;
            let role = env
                .events_role_arn
                .clone()
                .ok_or_else(|| EcsError::Config("EMPIRE_ECS_EVENTS_ROLE_ARN is not set".into()))?;
            let tags = tags
                .iter()
                .map(|(k, v)| {
                    aws_sdk_eventbridge::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                        .map_err(|e| build_error("tag", e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            call(&format!("scheduling {rule}"), || {
                clients
                    .events
                    .put_rule()
                    .name(rule)
                    .schedule_expression(expression)
                    .state(aws_sdk_eventbridge::types::RuleState::Enabled)
                    .set_tags(Some(tags.clone()))
                    .send()
            })
            .await?;
            let target = schedule_target(env, &task_definition, &role)?;
            call(&format!("pointing {rule} at its task"), || {
                clients
                    .events
                    .put_targets()
                    .rule(rule)
                    .targets(target.clone())
                    .send()
            })
            .await?;
        }
        Action::DeleteSchedule { rule } => {
            let removed = call(&format!("removing the target of {rule}"), || {
                clients
                    .events
                    .remove_targets()
                    .rule(rule)
                    .ids(SCHEDULE_TARGET)
                    .force(true)
                    .send()
            })
            .await;
            match removed {
                Ok(_) => {}
                Err(err) if err.code() == Some("ResourceNotFoundException") => {}
                Err(err) => return Err(err),
            }
            match call(&format!("deleting the schedule {rule}"), || {
                clients.events.delete_rule().name(rule).force(true).send()
            })
            .await
            {
                Ok(_) => {}
                Err(err) if err.code() == Some("ResourceNotFoundException") => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(Done::Nothing)
}

fn listener_arn(env: &Environment, listener: Listener) -> Result<&str, EcsError> {
    match listener {
        Listener::Internal => Ok(&env.internal.listener_arn),
        Listener::External => env
            .external
            .as_ref()
            .map(|l| l.listener_arn.as_str())
            .ok_or_else(|| EcsError::Config("EMPIRE_ELB_EXTERNAL_LISTENER_ARN is not set".into())),
    }
}

fn host_condition(hosts: &[String]) -> elb::RuleCondition {
    elb::RuleCondition::builder()
        .field("host-header")
        .host_header_config(
            elb::HostHeaderConditionConfig::builder()
                .set_values(Some(hosts.to_vec()))
                .build(),
        )
        .build()
}

async fn set_deregistration_delay(
    clients: &Clients,
    arn: &str,
    seconds: u32,
) -> Result<(), EcsError> {
    call("setting the deregistration delay", || {
        clients
            .elb
            .modify_target_group_attributes()
            .target_group_arn(arn)
            .attributes(
                elb::TargetGroupAttribute::builder()
                    .key("deregistration_delay.timeout_seconds")
                    .value(seconds.to_string())
                    .build(),
            )
            .send()
    })
    .await?;
    Ok(())
}

fn deployment_configuration(
    minimum: u32,
    maximum: u32,
    circuit_breaker: bool,
) -> ecs::DeploymentConfiguration {
    ecs::DeploymentConfiguration::builder()
        .minimum_healthy_percent(i32::try_from(minimum).unwrap_or(100))
        .maximum_percent(i32::try_from(maximum).unwrap_or(200))
        .deployment_circuit_breaker(
            ecs::DeploymentCircuitBreaker::builder()
                .enable(circuit_breaker)
                .rollback(circuit_breaker)
                .build(),
        )
        .build()
}

/// The awsvpc network configuration of a service or task.
pub fn ecs_network(network: &super::plan::Network) -> Result<ecs::NetworkConfiguration, EcsError> {
    let vpc = ecs::AwsVpcConfiguration::builder()
        .set_subnets(Some(network.subnets.clone()))
        .set_security_groups(Some(network.security_groups.clone()))
        .assign_public_ip(if network.assign_public_ip {
            ecs::AssignPublicIp::Enabled
        } else {
            ecs::AssignPublicIp::Disabled
        })
        .build()
        .map_err(|e| build_error("network configuration", e))?;
    Ok(ecs::NetworkConfiguration::builder()
        .awsvpc_configuration(vpc)
        .build())
}

/// The planner's network of `env` (FARGATE only).
pub fn network_of(env: &Environment) -> Option<super::plan::Network> {
    (env.launch_type == LaunchType::Fargate).then(|| super::plan::Network {
        subnets: env.subnets.clone(),
        security_groups: env.security_groups.clone(),
        assign_public_ip: env.assign_public_ip,
    })
}

fn schedule_target(
    env: &Environment,
    task_definition: &str,
    role: &str,
) -> Result<aws_sdk_eventbridge::types::Target, EcsError> {
    use aws_sdk_eventbridge::types as ev;
    let mut parameters = ev::EcsParameters::builder()
        .task_definition_arn(task_definition)
        .task_count(1)
        .launch_type(ev::LaunchType::from(env.launch_type.as_str()));
    if let Some(network) = network_of(env) {
        let vpc = ev::AwsVpcConfiguration::builder()
            .set_subnets(Some(network.subnets))
            .set_security_groups(Some(network.security_groups))
            .assign_public_ip(if network.assign_public_ip {
                ev::AssignPublicIp::Enabled
            } else {
                ev::AssignPublicIp::Disabled
            })
            .build()
            .map_err(|e| build_error("schedule network", e))?;
        parameters = parameters.network_configuration(
            ev::NetworkConfiguration::builder()
                .awsvpc_configuration(vpc)
                .build(),
        );
    }
    ev::Target::builder()
        .id(SCHEDULE_TARGET)
        .arn(cluster_arn(env))
        .role_arn(role)
        .ecs_parameters(parameters.build().map_err(|e| build_error("schedule", e))?)
        .build()
        .map_err(|e| build_error("schedule target", e))
}
