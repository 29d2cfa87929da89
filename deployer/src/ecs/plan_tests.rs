//! Golden-file tests of the planner (deployer/tests/golden/ecs/*.json), and convergence
//! checks against a simulated account that applies plans to the observed state.
//! `UPDATE_GOLDEN=1 cargo test -p empire-deployer ecs::plan` rewrites the files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use empire_core::app::AppName;
use empire_core::formation::ProcessSize;
use empire_core::scheduler::{DeploySpec, ProcessSpec};

use super::*;

fn env() -> Environment {
    Environment {
        cluster: "empire".into(),
        region: "us-east-1".into(),
        account: "123456789012".into(),
        partition: "aws".into(),
        launch_type: LaunchType::Fargate,
        subnets: vec!["subnet-a".into(), "subnet-b".into()],
        security_groups: vec!["sg-1".into()],
        assign_public_ip: false,
        execution_role_arn: "arn:aws:iam::123456789012:role/empire-exec".into(),
        task_role_arn: None,
        events_role_arn: Some("arn:aws:iam::123456789012:role/empire-events".into()),
        vpc_id: "vpc-1".into(),
        internal: LoadBalancer {
            https: true,
            listener_arn:
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/internal/1/2"
                    .into(),
            dns_name: "internal-empire-1.us-east-1.elb.amazonaws.com".into(),
            zone_id: "ZLBINTERNAL".into(),
        },
        external: Some(LoadBalancer {
            https: true,
            listener_arn:
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/external/3/4"
                    .into(),
            dns_name: "empire-2.us-east-1.elb.amazonaws.com".into(),
            zone_id: "ZLBEXTERNAL".into(),
        }),
        internal_zone: HostedZone {
            id: "ZPRIVATE".into(),
            domain: "empire.internal".into(),
        },
        public_zone: Some(HostedZone {
            id: "ZPUBLIC".into(),
            domain: "example.com".into(),
        }),
        health_check_grace_seconds: 60,
        deregistration_delay_seconds: 30,
        log_retention_days: Some(30),
    }
}

fn process(name: &str, command: &str, quantity: u32) -> ProcessSpec {
    ProcessSpec::new(name, Some(command.to_string()), quantity)
}

fn spec(release: u32) -> DeploySpec {
    let mut web = process("web", "./bin/web --port $PORT", 2);
    web.healthcheck = Some("/health".into());
    let mut worker = process("worker", "./bin/worker", 1);
    worker.size = ProcessSize::X2;
    worker.environment = BTreeMap::from([("QUEUE".into(), "default".into())]);
    let mut clock = process("clock", "./bin/tick", 0);
    clock.cron = Some("*/10 * * * 1-5".into());
    let mut migrate = process("migrate", "./bin/migrate", 0);
    migrate.noservice = true;
    DeploySpec {
        app: AppName::new("acme").unwrap(),
        release,
        image: "123456789012.dkr.ecr.us-east-1.amazonaws.com/acme@sha256:aaaa".into(),
        config: BTreeMap::from([
            ("DATABASE_URL".into(), "postgres://db/acme".into()),
            ("EMPTY".into(), String::new()),
            ("QUEUE".into(), "overridden".into()),
            ("PORT".into(), "9999".into()),
        ]),
        processes: vec![web, worker, clock, migrate],
    }
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/ecs")
        .join(format!("{name}.json"))
}

/// Compares `value` with the golden file `name` (rewritten with UPDATE_GOLDEN=1).
fn golden(name: &str, value: &impl serde::Serialize) {
    let path = golden_path(name);
    let got = serde_json::to_string_pretty(value).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert!(
        got == want,
        "{} differs from the plan:\n{got}",
        path.display()
    );
}

/// A simulated account: applies actions to the observed state the way AWS would.
#[derive(Default)]
struct Account {
    observed: Observed,
    next_revision: BTreeMap<String, u32>,
    next_id: u32,
}

impl Account {
    fn apply(&mut self, env: &Environment, app: &str, actions: &[Action]) {
        let mut registered: BTreeMap<String, String> = BTreeMap::new();
        let mut created_tg: Option<String> = None;
        let o = &mut self.observed;
        let resolve = |r: &TaskDefinitionRef, registered: &BTreeMap<String, String>| match r {
            TaskDefinitionRef::Arn(arn) => arn.clone(),
            TaskDefinitionRef::Registered(family) => registered[family].clone(),
        };
        for action in actions {
            self.next_id += 1;
            let id = self.next_id;
            match action {
                Action::CreateLogGroup { .. } => o.log_group = true,
                Action::DeleteLogGroup { .. } => o.log_group = false,
                Action::PutParameter { name, value, .. } => {
                    o.parameters.insert(name.clone(), value.clone());
                }
                Action::DeleteParameters { names } => {
                    for name in names {
                        o.parameters.remove(name);
                    }
                }
                Action::RegisterTaskDefinition { definition } => {
                    let revision = self
                        .next_revision
                        .entry(definition.family.clone())
                        .or_insert(0);
                    *revision += 1;
                    let arn = format!(
                        "arn:aws:ecs:us-east-1:123456789012:task-definition/{}:{revision}",
                        definition.family
                    );
                    let process = process_of(app, &definition.family).unwrap().to_string();
                    let family = o.families.entry(process).or_default();
                    family.latest = Some(ObservedTaskDefinition {
                        arn: arn.clone(),
                        definition: (**definition).clone(),
                    });
                    family.active_revisions.push(*revision);
                    registered.insert(definition.family.clone(), arn);
                }
                Action::DeregisterTaskDefinitions { arns } => {
                    for arn in arns {
                        let (prefix, revision) = arn.rsplit_once(':').unwrap();
                        let family = prefix.rsplit_once('/').unwrap().1;
                        let process = process_of(app, family).unwrap();
                        let f = o.families.get_mut(process).unwrap();
                        let revision: u32 = revision.parse().unwrap();
                        f.active_revisions.retain(|r| *r != revision);
                        if f.latest.as_ref().is_some_and(|l| l.arn == *arn) {
                            f.latest = None;
                        }
                    }
                }
                Action::CreateTargetGroup { target_group } => {
                    let arn = format!("arn:tg/{}", target_group.name);
                    o.target_group = Some(ObservedTargetGroup {
                        arn: arn.clone(),
                        health_check_path: target_group.health_check_path.clone(),
                        matcher: target_group.matcher.clone(),
                        deregistration_delay_seconds: Some(
                            target_group.deregistration_delay_seconds,
                        ),
                    });
                    created_tg = Some(arn);
                }
                Action::ModifyTargetGroup {
                    health_check_path,
                    matcher,
                    ..
                } => {
                    let tg = o.target_group.as_mut().unwrap();
                    tg.health_check_path = health_check_path.clone();
                    tg.matcher = matcher.clone();
                }
                Action::SetDeregistrationDelay { seconds, .. } => {
                    o.target_group
                        .as_mut()
                        .unwrap()
                        .deregistration_delay_seconds = Some(*seconds);
                }
                Action::DeleteTargetGroup { .. } => o.target_group = None,
                Action::CreateRule {
                    listener,
                    priority,
                    hosts,
                    target_group,
                    ..
                } => {
                    if let TargetGroupRef::Created(_) = target_group {
                        assert!(created_tg.is_some(), "rule before its target group");
                    }
                    let rule = ObservedRule {
                        arn: format!("arn:rule/{id}"),
                        priority: *priority,
                        hosts: hosts.clone(),
                    };
                    let (rules, taken) = match listener {
                        Listener::Internal => (&mut o.internal_rules, &mut o.internal_priorities),
                        Listener::External => (&mut o.external_rules, &mut o.external_priorities),
                    };
                    assert!(taken.insert(*priority), "priority {priority} taken twice");
                    rules.push(rule);
                }
                Action::ModifyRule { arn, hosts } => {
                    for rule in o.internal_rules.iter_mut().chain(&mut o.external_rules) {
                        if rule.arn == *arn {
                            rule.hosts = hosts.clone();
                        }
                    }
                }
                Action::DeleteRule { arn } => {
                    for (rules, taken) in [
                        (&mut o.internal_rules, &mut o.internal_priorities),
                        (&mut o.external_rules, &mut o.external_priorities),
                    ] {
                        if let Some(rule) = rules.iter().find(|r| r.arn == *arn) {
                            taken.remove(&rule.priority);
                        }
                        rules.retain(|r| r.arn != *arn);
                    }
                }
                Action::ChangeRecords { changes, .. } => {
                    for change in changes {
                        if change.action == "DELETE" {
                            assert_eq!(
                                o.records.remove(&change.record.name).as_ref(),
                                Some(&change.record)
                            );
                        } else {
                            o.records
                                .insert(change.record.name.clone(), change.record.clone());
                        }
                    }
                }
                Action::CreateService { service } => {
                    o.services.insert(
                        service.process.clone(),
                        ObservedService {
                            name: service.name.clone(),
                            status: "ACTIVE".into(),
                            task_definition: resolve(&service.task_definition, &registered),
                            desired_count: service.desired_count,
                            release: service.tags.get(TAG_RELEASE).and_then(|r| parse_release(r)),
                        },
                    );
                }
                Action::UpdateService {
                    process,
                    task_definition,
                    desired_count,
                    release,
                    ..
                } => {
                    let service = o.services.get_mut(process).unwrap();
                    if let Some(td) = task_definition {
                        service.task_definition = resolve(td, &registered);
                    }
                    service.desired_count = *desired_count;
                    service.release = Some(*release);
                }
                Action::DeleteService { name } => {
                    let process = process_of(app, name).unwrap().to_string();
                    o.services.remove(&process);
                }
                Action::PutSchedule {
                    rule,
                    process,
                    expression,
                    task_definition,
                    ..
                } => {
                    o.schedules.insert(
                        process.clone(),
                        ObservedSchedule {
                            rule: rule.clone(),
                            expression: expression.clone(),
                            task_definition: Some(resolve(task_definition, &registered)),
                        },
                    );
                }
                Action::DeleteSchedule { rule } => {
                    o.schedules.retain(|_, s| s.rule != *rule);
                }
            }
        }
        let _ = env;
    }

    fn deploy(&mut self, env: &Environment, spec: &DeploySpec) -> Plan {
        let domains = self.observed.domains();
        let plan = plan_deploy(env, spec, &domains, false, &self.observed).unwrap();
        let actions: Vec<Action> = plan.actions().cloned().collect();
        self.apply(env, spec.app.as_str(), &actions);
        plan
    }
}

#[test]
fn first_deploy() {
    let plan = plan_deploy(&env(), &spec(1), &[], false, &Observed::default()).unwrap();
    golden("first_deploy", &plan);
}

#[test]
fn the_task_definition_holds_no_config_value() {
    let env = env();
    let spec = spec(1);
    let web = task_definition(&env, &spec, &spec.processes[0], false);
    let text = serde_json::to_string(&web).unwrap();
    assert!(!text.contains("postgres://db/acme"), "{text}");
    assert_eq!(
        web.container.secrets["DATABASE_URL"],
        "arn:aws:ssm:us-east-1:123456789012:parameter/empire/acme/v1/DATABASE_URL"
    );
    // Reserved variables win over config; the process's own over config.
    assert_eq!(web.container.environment["PORT"], "5000");
    assert!(!web.container.secrets.contains_key("PORT"));
    let worker = task_definition(&env, &spec, &spec.processes[1], false);
    assert_eq!(worker.container.environment["QUEUE"], "default");
    assert!(!worker.container.secrets.contains_key("QUEUE"));
    assert_eq!(worker.cpu.as_deref(), Some("512"));
    assert_eq!(worker.memory.as_deref(), Some("1024"));
}

#[test]
fn an_unchanged_redeploy_plans_nothing() {
    let env = env();
    let mut account = Account::default();
    account.deploy(&env, &spec(1));
    let again = plan_deploy(
        &env,
        &spec(1),
        &account.observed.domains(),
        false,
        &account.observed,
    )
    .unwrap();
    assert!(again.is_empty(), "{again:#?}");
}

#[test]
fn a_deploy_killed_halfway_converges() {
    let env = env();
    let spec = spec(1);
    let plan = plan_deploy(&env, &spec, &[], false, &Observed::default()).unwrap();
    let actions: Vec<Action> = plan.actions().cloned().collect();
    // Stop after each prefix of the actions, run the deploy again: it reaches the same
    // state as a deploy that never stopped.
    let mut complete = Account::default();
    complete.apply(&env, "acme", &actions);
    for cut in 0..actions.len() {
        let mut account = Account::default();
        account.apply(&env, "acme", &actions[..cut]);
        account.deploy(&env, &spec);
        let mut a = account.observed.clone();
        let mut b = complete.observed.clone();
        // Rule priorities and ids depend on the order; compare the rest.
        for o in [&mut a, &mut b] {
            for rule in o.internal_rules.iter_mut().chain(&mut o.external_rules) {
                rule.arn.clear();
            }
        }
        assert_eq!(a, b, "after stopping at action {cut}");
        let again = plan_deploy(&env, &spec, &[], false, &account.observed).unwrap();
        assert!(again.is_empty(), "cut {cut}: {again:#?}");
    }
}

#[test]
fn next_release() {
    let env = env();
    let mut account = Account::default();
    account.deploy(&env, &spec(1));
    let mut next = spec(2);
    next.config
        .insert("DATABASE_URL".into(), "postgres://db2/acme".into());
    next.processes
        .retain(|p| p.name != "migrate" && p.name != "clock");
    next.processes[1].quantity = 3;
    let plan = account.deploy(&env, &next);
    golden("next_release", &plan);
    // The third release prunes the first one's parameters and task definitions.
    let mut third = next.clone();
    third.release = 3;
    let plan = account.deploy(&env, &third);
    golden("third_release", &plan);
    assert!(
        account
            .observed
            .parameters
            .keys()
            .all(|k| !k.starts_with("/empire/acme/v1/")),
        "{:?}",
        account.observed.parameters
    );
    assert_eq!(account.observed.families["web"].active_revisions, [2, 3]);
}

#[test]
fn scale_updates_counts_only() {
    let env = env();
    let mut account = Account::default();
    account.deploy(&env, &spec(1));
    let mut scaled = spec(1);
    scaled.processes[0].quantity = 5;
    let plan = account.deploy(&env, &scaled);
    assert!(
        plan.prepare.is_empty() && plan.finalize.is_empty(),
        "{plan:#?}"
    );
    assert_eq!(
        plan.rollout,
        [Action::UpdateService {
            name: "acme_web".into(),
            process: "web".into(),
            task_definition: None,
            desired_count: 5,
            force_new_deployment: false,
            release: 1,
        }]
    );
    // A new size is a new revision.
    let mut resized = scaled.clone();
    resized.processes[0].size = ProcessSize::PX;
    let plan = account.deploy(&env, &resized);
    assert!(
        matches!(
            &plan.prepare[..],
            [Action::RegisterTaskDefinition { definition }] if definition.cpu.as_deref() == Some("1024")
                && definition.memory.as_deref() == Some("6144")
        ),
        "{plan:#?}"
    );
}

#[test]
fn domains() {
    let env = env();
    let mut account = Account::default();
    account.deploy(&env, &spec(1));
    let hosts: Vec<String> = [
        "www.example.com",
        "example.com",
        "api.example.com",
        "shop.other.org",
        "a.example.com",
        "b.example.com",
        "c.example.com",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let web = spec(1).processes[0].clone();
    let actions = plan_routing(&env, "acme", Some(&web), 1, &hosts, &account.observed).unwrap();
    golden("domains", &actions);
    account.apply(&env, "acme", &actions);
    assert_eq!(account.observed.domains().len(), 7);
    assert_eq!(account.observed.external_rules.len(), 2);
    // Dropping some: the rule is rewritten, the second one and their records go.
    let fewer = vec!["shop.other.org".to_string(), "www.example.com".to_string()];
    let actions = plan_routing(&env, "acme", Some(&web), 1, &fewer, &account.observed).unwrap();
    golden("domains_removed", &actions);
    account.apply(&env, "acme", &actions);
    assert_eq!(account.observed.domains(), fewer);
    // A deploy keeps the domains.
    let plan = plan_deploy(
        &env,
        &spec(1),
        &account.observed.domains(),
        false,
        &account.observed,
    )
    .unwrap();
    assert!(plan.is_empty(), "{plan:#?}");
}

#[test]
fn domains_need_an_external_listener() {
    let mut env = env();
    env.external = None;
    let err = plan_routing(
        &env,
        "acme",
        None,
        1,
        &["x.example.com".into()],
        &Observed::default(),
    )
    .unwrap_err();
    assert!(err.0.contains("EMPIRE_ELB_EXTERNAL_LISTENER_ARN"), "{err}");
}

#[test]
fn remove_app() {
    let env = env();
    let mut account = Account::default();
    account.deploy(&env, &spec(1));
    let web = spec(1).processes[0].clone();
    let actions = plan_routing(
        &env,
        "acme",
        Some(&web),
        1,
        &["www.example.com".into()],
        &account.observed,
    )
    .unwrap();
    account.apply(&env, "acme", &actions);
    let actions = plan_remove_app("acme", &account.observed);
    golden("remove_app", &actions);
    account.apply(&env, "acme", &actions);
    let left = &account.observed;
    assert!(left.services.is_empty() && left.schedules.is_empty() && left.records.is_empty());
    assert!(left.parameters.is_empty() && !left.log_group && left.target_group.is_none());
    assert!(left.internal_rules.is_empty() && left.external_rules.is_empty());
    assert!(
        left.families
            .values()
            .all(|f| f.active_revisions.is_empty())
    );
}

#[test]
fn ec2_launch_type() {
    let mut env = env();
    env.launch_type = LaunchType::Ec2;
    let spec = spec(1);
    let plan = plan_deploy(&env, &spec, &[], true, &Observed::default()).unwrap();
    let web = plan
        .prepare
        .iter()
        .find_map(|a| match a {
            Action::RegisterTaskDefinition { definition } if definition.family == "acme_web" => {
                Some(definition.clone())
            }
            _ => None,
        })
        .unwrap();
    golden("ec2_web_task_definition", &web);
    assert!(plan.rollout.iter().all(|a| matches!(a,
        Action::CreateService { service } if service.network.is_none() && service.launch_type == "EC2")));
}

#[test]
fn target_group_names_fit() {
    let name = target_group_name("abcdefghijklmnopqrstuvwxyz1234");
    assert_eq!(name.len(), 32);
    assert!(name.starts_with("abcdefghijklmnopqrstuvwxy-"));
    assert_eq!(name, target_group_name("abcdefghijklmnopqrstuvwxyz1234"));
    assert_ne!(name, target_group_name("abcdefghijklmnopqrstuvwxyz1235"));
    // A cut that ends in a dash loses it.
    let name = target_group_name("abcdefghijklmnopqrstuvwx-yz");
    assert!(
        name.starts_with("abcdefghijklmnopqrstuvwx-") && !name.contains("--"),
        "{name}"
    );
    assert_eq!(target_group_name("a").len(), 8);
}

#[test]
fn fargate_sizes() {
    assert_eq!(fargate_size(ProcessSize::X1), (256, 512));
    assert_eq!(fargate_size(ProcessSize::X2), (512, 1024));
    assert_eq!(fargate_size(ProcessSize::PX), (1024, 6144));
    let odd = ProcessSize::parse("100:700MB").unwrap();
    assert_eq!(fargate_size(odd), (256, 1024));
    let big_memory = ProcessSize::parse("256:5GB").unwrap();
    assert_eq!(fargate_size(big_memory), (1024, 5120));
    let cpu = ProcessSize::parse("3000:1GB").unwrap();
    assert_eq!(fargate_size(cpu), (4096, 8192));
}

#[test]
fn schedules() {
    assert_eq!(
        schedule_expression("*/10 * * * *").unwrap(),
        "cron(*/10 * * * ? *)"
    );
    assert_eq!(
        schedule_expression("0 3 * * 0").unwrap(),
        "cron(0 3 ? * 1 *)"
    );
    assert_eq!(
        schedule_expression("0 3 * * 1-5").unwrap(),
        "cron(0 3 ? * 2-6 *)"
    );
    assert_eq!(
        schedule_expression("0 3 1 * *").unwrap(),
        "cron(0 3 1 * ? *)"
    );
    assert_eq!(
        schedule_expression("rate(5 minutes)").unwrap(),
        "rate(5 minutes)"
    );
    assert!(schedule_expression("0 3 1 * 1").is_err());
    assert!(schedule_expression("every day").is_err());
}

#[test]
fn cron_needs_the_events_role() {
    let mut env = env();
    env.events_role_arn = None;
    let err = plan_deploy(&env, &spec(1), &[], false, &Observed::default()).unwrap_err();
    assert!(err.0.contains("EMPIRE_ECS_EVENTS_ROLE_ARN"), "{err}");
}

#[test]
fn names() {
    assert_eq!(family("acme", "web"), "acme_web");
    assert_eq!(process_of("acme", "acme_web_2"), Some("web_2"));
    assert_eq!(process_of("acme", "acmex_web"), None);
    assert_eq!(parameter_release("acme", "/empire/acme/v12/KEY"), Some(12));
    assert_eq!(parameter_release("acme", "/empire/acmex/v1/KEY"), None);
    assert_eq!(
        revision_of("arn:aws:ecs:r:1:task-definition/acme_web:7"),
        Some(7)
    );
}
