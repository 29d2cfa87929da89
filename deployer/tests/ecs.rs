//! The `ecs` backend against moto, the AWS API emulator, through a proxy that records
//! every request the SDK sends. moto never launches tasks, so the rollout is not
//! followed here (`rollout_wait = false`); the rollout logic has its own tests with
//! scripted describe responses (src/ecs/rollout.rs).

mod ecs_common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ecs_common::{Account, Recorder, bodies, count, mutating, recorder, sdk_config, suffix};
use empire_core::app::AppName;
use empire_core::progress::Progress;
use empire_core::scheduler::{
    DeploySpec, LogOptions, OneOffSpec, ProcessSpec, RestartTarget, RunIo, RunOutcome, Scheduler,
};
use empire_deployer::ecs::aws::Clients;
use empire_deployer::ecs::plan::target_group_name;
use empire_deployer::ecs::{EcsScheduler, LaunchType};

async fn scheduler(account: &Account) -> (EcsScheduler, Recorder) {
    let recorder = Recorder::start(account.moto.clone()).await;
    let clients = Clients::new(&sdk_config(&recorder.url()).await);
    let scheduler = EcsScheduler::with_clients(account.config.clone(), clients, Some("us-east-1"))
        .await
        .expect("the environment resolves");
    recorder.take();
    (scheduler, recorder)
}

fn spec(app: &AppName, release: u32) -> DeploySpec {
    let mut web = ProcessSpec::new("web", Some("httpd -f -p $PORT".into()), 2);
    web.healthcheck = Some("/health".into());
    let worker = ProcessSpec::new("worker", Some("sleep 100000".into()), 1);
    let mut clock = ProcessSpec::new("clock", Some("date".into()), 0);
    clock.cron = Some("*/15 * * * *".into());
    let mut migrate = ProcessSpec::new("migrate", Some("echo migrating".into()), 0);
    migrate.noservice = true;
    DeploySpec {
        app: app.clone(),
        release,
        image: "registry.test/acme@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
        config: BTreeMap::from([
            ("DATABASE_URL".into(), format!("postgres://db/{app}-v{release}")),
            ("EMPTY".into(), String::new()),
        ]),
        processes: vec![web, worker, clock, migrate],
    }
}

fn app() -> AppName {
    AppName::new(&format!("a{}", suffix())).unwrap()
}

async fn service(account: &Account, name: &str) -> Option<aws_sdk_ecs::types::Service> {
    let out = account
        .clients
        .ecs
        .describe_services()
        .cluster(&account.config.cluster)
        .services(name)
        .send()
        .await
        .unwrap();
    out.services()
        .iter()
        .find(|s| s.status() == Some("ACTIVE"))
        .cloned()
}

async fn parameters(account: &Account, app: &AppName) -> BTreeMap<String, String> {
    let out = account
        .clients
        .ssm
        .get_parameters_by_path()
        .path(format!("/empire/{app}"))
        .recursive(true)
        .with_decryption(true)
        .send()
        .await
        .unwrap();
    out.parameters()
        .iter()
        .map(|p| {
            (
                p.name().unwrap().to_string(),
                p.value().unwrap().to_string(),
            )
        })
        .collect()
}

async fn rules(account: &Account, listener: &str) -> Vec<Vec<String>> {
    let out = account
        .clients
        .elb
        .describe_rules()
        .listener_arn(listener)
        .send()
        .await
        .unwrap();
    out.rules()
        .iter()
        .filter(|r| !r.is_default().unwrap_or(false))
        .map(|r| {
            let mut hosts: Vec<String> = r
                .conditions()
                .iter()
                .flat_map(|c| {
                    c.host_header_config()
                        .map(|h| h.values().to_vec())
                        .unwrap_or_else(|| c.values().to_vec())
                })
                .collect();
            hosts.sort();
            hosts
        })
        .collect()
}

async fn records(account: &Account, zone: &str) -> Vec<String> {
    let out = account
        .clients
        .route53
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .send()
        .await
        .unwrap();
    out.resource_record_sets()
        .iter()
        .filter(|r| r.alias_target().is_some())
        .map(|r| r.name().trim_end_matches('.').to_string())
        .collect()
}

#[tokio::test]
async fn a_deploy_creates_everything_and_an_unchanged_redeploy_changes_nothing() {
    let account = Account::create(LaunchType::Fargate).await;
    let (scheduler, proxy) = scheduler(&account).await;
    let app = app();
    let (progress, lines) = recorder();
    scheduler.deploy(&spec(&app, 1), &progress).await.unwrap();
    let calls = proxy.take();

    // Task definitions: one per process type, config only as secrets.
    let registered = bodies(&calls, "RegisterTaskDefinition");
    assert_eq!(registered.len(), 4, "{registered:#?}");
    for body in &registered {
        assert!(
            !body.contains("postgres://"),
            "a config value in a task definition: {body}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        let container = &json["containerDefinitions"][0];
        assert_eq!(json["networkMode"], "awsvpc");
        assert_eq!(json["requiresCompatibilities"][0], "FARGATE");
        assert_eq!(json["executionRoleArn"], account.config.execution_role_arn);
        assert_eq!(container["image"], spec(&app, 1).image);
        assert_eq!(
            container["entryPoint"],
            serde_json::json!(["/bin/sh", "-c"])
        );
        assert_eq!(container["logConfiguration"]["logDriver"], "awslogs");
        assert_eq!(
            container["logConfiguration"]["options"]["awslogs-group"],
            format!("/empire/{app}")
        );
        assert_eq!(
            container["secrets"][0]["valueFrom"],
            format!("arn:aws:ssm:us-east-1:123456789012:parameter/empire/{app}/v1/DATABASE_URL")
        );
        let env: BTreeMap<String, String> = container["environment"]
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| {
                (
                    kv["name"].as_str().unwrap().to_string(),
                    kv["value"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(env["PORT"], "5000");
        assert_eq!(env["EMPIRE_APPNAME"], app.as_str());
        assert_eq!(env["EMPIRE_RELEASE"], "v1");
        assert_eq!(env["EMPTY"], "");
        assert_eq!(json["cpu"], "256");
        assert_eq!(json["memory"], "512");
        // The container health check only where the Procfile sets `healthcheck`.
        if json["family"] == format!("{app}_web") {
            assert_eq!(container["healthCheck"]["command"][0], "CMD-SHELL");
            let script = container["healthCheck"]["command"][1].as_str().unwrap();
            assert!(
                script
                    .starts_with("busybox wget -q -S -O /dev/null 'http://127.0.0.1:5000/health'"),
                "{script}"
            );
        } else {
            assert!(container.get("healthCheck").is_none(), "{container}");
        }
    }

    // Services: web and worker only, with the deployment settings.
    let created = bodies(&calls, "CreateService");
    assert_eq!(created.len(), 2, "{created:#?}");
    for body in &created {
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["launchType"], "FARGATE");
        assert_eq!(
            json["deploymentConfiguration"]["minimumHealthyPercent"],
            100
        );
        assert_eq!(json["deploymentConfiguration"]["maximumPercent"], 200);
        assert_eq!(
            json["deploymentConfiguration"]["deploymentCircuitBreaker"],
            serde_json::json!({"enable": true, "rollback": true})
        );
        assert_eq!(
            json["networkConfiguration"]["awsvpcConfiguration"]["subnets"],
            serde_json::json!(account.config.subnets)
        );
        if json["serviceName"] == format!("{app}_web") {
            assert_eq!(json["desiredCount"], 2);
            assert_eq!(json["loadBalancers"][0]["containerName"], "web");
            assert_eq!(json["loadBalancers"][0]["containerPort"], 5000);
            assert_eq!(json["healthCheckGracePeriodSeconds"], 60);
        } else {
            assert_eq!(json["serviceName"], format!("{app}_worker"));
            assert!(json.get("loadBalancers").is_none(), "{json}");
        }
    }
    let web = service(&account, &format!("{app}_web"))
        .await
        .expect("web service");
    assert_eq!(web.desired_count(), 2);
    assert!(
        web.task_definition()
            .unwrap()
            .ends_with(&format!("{app}_web:1"))
    );
    assert!(service(&account, &format!("{app}_worker")).await.is_some());
    assert!(service(&account, &format!("{app}_clock")).await.is_none());
    assert!(service(&account, &format!("{app}_migrate")).await.is_none());

    // Target group, rule, record, parameters, log group, schedule.
    let groups = account
        .clients
        .elb
        .describe_target_groups()
        .names(target_group_name(app.as_str()))
        .send()
        .await
        .unwrap();
    let group = &groups.target_groups()[0];
    assert_eq!(group.health_check_path(), Some("/health"));
    assert_eq!(group.matcher().and_then(|m| m.http_code()), Some("200-499"));
    assert_eq!(group.port(), Some(5000));
    let attributes = account
        .clients
        .elb
        .describe_target_group_attributes()
        .target_group_arn(group.target_group_arn().unwrap())
        .send()
        .await
        .unwrap();
    assert!(attributes.attributes().iter().any(|a| a.key()
        == Some("deregistration_delay.timeout_seconds")
        && a.value() == Some("30")));
    let internal_host = format!("{app}.{}", account.internal_domain);
    assert_eq!(
        rules(&account, &account.config.internal_listener_arn).await,
        [vec![internal_host.clone()]]
    );
    assert!(
        records(&account, &account.internal_zone)
            .await
            .contains(&internal_host)
    );
    let params = parameters(&account, &app).await;
    assert_eq!(
        params,
        BTreeMap::from([(
            format!("/empire/{app}/v1/DATABASE_URL"),
            format!("postgres://db/{app}-v1")
        )])
    );
    assert!(bodies(&calls, "PutParameter")[0].contains("\"SecureString\""));
    let groups = account
        .clients
        .logs
        .describe_log_groups()
        .log_group_name_prefix(format!("/empire/{app}"))
        .send()
        .await
        .unwrap();
    assert_eq!(groups.log_groups().len(), 1);
    let schedule = account
        .clients
        .events
        .describe_rule()
        .name(format!("{app}_clock"))
        .send()
        .await
        .unwrap();
    assert_eq!(schedule.schedule_expression(), Some("cron(*/15 * * * ? *)"));
    let targets = bodies(&calls, "PutTargets");
    assert!(
        targets[0].contains(&format!("{app}_clock:1")),
        "{targets:?}"
    );
    assert!(lines.contains(&format!(
        "-----> Deploying v1 to ECS (cluster {})",
        account.config.cluster
    )));
    assert!(lines.contains(&format!("web: creating the service {app}_web (2 tasks)")));

    // The same release again: nothing is registered, created or updated.
    let (progress, lines) = recorder();
    scheduler.deploy(&spec(&app, 1), &progress).await.unwrap();
    let calls = proxy.take();
    let changes: Vec<&str> = calls
        .iter()
        .filter(|c| mutating(&c.action))
        .map(|c| c.action.as_str())
        .collect();
    assert!(
        changes.is_empty(),
        "an unchanged redeploy changed {changes:?}"
    );
    assert!(lines.contains("v1 is deployed already: nothing to change"));
    account.remove().await;
}

#[tokio::test]
async fn scale_a_new_release_and_a_rollback() {
    let account = Account::create(LaunchType::Fargate).await;
    let (scheduler, proxy) = scheduler(&account).await;
    let app = app();
    scheduler
        .deploy(&spec(&app, 1), &Progress::null())
        .await
        .unwrap();
    proxy.take();

    // scale web=3: one UpdateService, nothing registered.
    let mut scaled = spec(&app, 1);
    scaled.processes[0].quantity = 3;
    scheduler.scale(&scaled, &Progress::null()).await.unwrap();
    let calls = proxy.take();
    let changes: Vec<&str> = calls
        .iter()
        .filter(|c| mutating(&c.action))
        .map(|c| c.action.as_str())
        .collect();
    assert_eq!(changes, ["UpdateService", "TagResource"], "{calls:#?}");
    let update: serde_json::Value =
        serde_json::from_str(bodies(&calls, "UpdateService")[0]).unwrap();
    assert_eq!(update["desiredCount"], 3);
    assert!(update.get("taskDefinition").is_none(), "{update}");
    let web = service(&account, &format!("{app}_web")).await.unwrap();
    assert_eq!(web.desired_count(), 3);

    // v2: new config; the services move to the new revisions.
    let mut v2 = scaled.clone();
    v2.release = 2;
    v2.config
        .insert("DATABASE_URL".into(), "postgres://db/two".into());
    scheduler.deploy(&v2, &Progress::null()).await.unwrap();
    let calls = proxy.take();
    assert_eq!(count(&calls, "RegisterTaskDefinition"), 4);
    assert_eq!(count(&calls, "UpdateService"), 2);
    assert_eq!(count(&calls, "CreateService"), 0);
    let web = service(&account, &format!("{app}_web")).await.unwrap();
    assert!(
        web.task_definition()
            .unwrap()
            .ends_with(&format!("{app}_web:2")),
        "{web:?}"
    );
    let tags = account
        .clients
        .ecs
        .list_tags_for_resource()
        .resource_arn(web.service_arn().unwrap())
        .send()
        .await
        .unwrap();
    assert!(
        tags.tags()
            .iter()
            .any(|t| t.key() == Some("empire.release") && t.value() == Some("v2"))
    );

    // A rollback to v1 is v3 with v1's image and config: v1's parameters and task
    // definitions are pruned once v3 serves; v2's are kept for the way back.
    let mut v3 = scaled.clone();
    v3.release = 3;
    scheduler.deploy(&v3, &Progress::null()).await.unwrap();
    let params = parameters(&account, &app).await;
    assert_eq!(
        params.keys().cloned().collect::<Vec<_>>(),
        [
            format!("/empire/{app}/v2/DATABASE_URL"),
            format!("/empire/{app}/v3/DATABASE_URL")
        ]
    );
    assert_eq!(
        params[&format!("/empire/{app}/v3/DATABASE_URL")],
        format!("postgres://db/{app}-v1")
    );
    let active = account.active_task_definitions(&format!("{app}_web")).await;
    let revisions: Vec<&str> = active
        .iter()
        .map(|a| a.rsplit(':').next().unwrap())
        .collect();
    assert_eq!(revisions, ["2", "3"]);

    // The worker process type goes away in v4: its service is deleted.
    let mut v4 = v3.clone();
    v4.release = 4;
    v4.processes.retain(|p| p.name != "worker");
    scheduler.deploy(&v4, &Progress::null()).await.unwrap();
    assert!(service(&account, &format!("{app}_worker")).await.is_none());

    // restart: a new deployment of each service.
    proxy.take();
    let (progress, lines) = recorder();
    scheduler
        .restart(&v4, &RestartTarget::All, &progress)
        .await
        .unwrap();
    let calls = proxy.take();
    let update: serde_json::Value =
        serde_json::from_str(bodies(&calls, "UpdateService")[0]).unwrap();
    assert_eq!(update["forceNewDeployment"], true);
    assert!(lines.contains("web: restarting the service"));
    account.remove().await;
}

#[tokio::test]
async fn custom_domains_get_rules_and_records() {
    let account = Account::create(LaunchType::Fargate).await;
    let (scheduler, proxy) = scheduler(&account).await;
    let app = app();
    scheduler
        .deploy(&spec(&app, 1), &Progress::null())
        .await
        .unwrap();
    let www = format!("www.{}", account.public_domain);
    let elsewhere = format!("{app}.elsewhere.org");
    scheduler
        .set_domains(&app, &[www.clone(), elsewhere.clone()])
        .await
        .unwrap();
    let external = account.config.external_listener_arn.clone().unwrap();
    let mut expected = vec![www.clone(), elsewhere.clone()];
    expected.sort();
    assert_eq!(rules(&account, &external).await, [expected]);
    // Only the hostname inside the public zone gets a record.
    assert_eq!(records(&account, &account.public_zone).await, [www]);

    // A deploy keeps them.
    proxy.take();
    scheduler
        .deploy(&spec(&app, 1), &Progress::null())
        .await
        .unwrap();
    assert!(proxy.take().iter().all(|c| !mutating(&c.action)));

    // Dropping one rewrites the rule and removes the record.
    scheduler
        .set_domains(&app, std::slice::from_ref(&elsewhere))
        .await
        .unwrap();
    assert_eq!(rules(&account, &external).await, [vec![elsewhere.clone()]]);
    assert!(records(&account, &account.public_zone).await.is_empty());
    scheduler.set_domains(&app, &[]).await.unwrap();
    assert!(rules(&account, &external).await.is_empty());
    account.remove().await;
}

#[tokio::test]
async fn run_detached_ps_and_logs() {
    let account = Account::create(LaunchType::Fargate).await;
    let (scheduler, proxy) = scheduler(&account).await;
    let app = app();
    scheduler
        .deploy(&spec(&app, 1), &Progress::null())
        .await
        .unwrap();
    proxy.take();
    let oneoff = OneOffSpec {
        app: app.clone(),
        release: 1,
        image: spec(&app, 1).image,
        config: spec(&app, 1).config,
        command: "echo hello from run".into(),
        size: Default::default(),
        tty: false,
    };
    let outcome = scheduler.run(&oneoff, None).await.unwrap();
    let RunOutcome::Detached { name, id } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(name, format!("run.{}", &id[..8]));
    let calls = proxy.take();
    let run: serde_json::Value = serde_json::from_str(bodies(&calls, "RunTask")[0]).unwrap();
    assert_eq!(
        run["overrides"]["containerOverrides"][0]["command"],
        serde_json::json!(["echo hello from run"])
    );
    assert_eq!(run["launchType"], "FARGATE");
    assert!(
        run["taskDefinition"]
            .as_str()
            .unwrap()
            .contains(&format!("{app}_run:1"))
    );
    // A second run of the same release reuses the task definition.
    scheduler.run(&oneoff, None).await.unwrap();
    assert_eq!(count(&proxy.take(), "RegisterTaskDefinition"), 0);

    let ps = scheduler.processes(&app).await.unwrap();
    let runs: Vec<&str> = ps
        .iter()
        .filter(|p| p.process == "run")
        .map(|p| p.name.as_str())
        .collect();
    assert!(runs.contains(&name.as_str()), "{ps:#?}");
    assert!(
        ps.iter()
            .filter(|p| p.process == "run")
            .all(|p| p.release == 1),
        "{ps:#?}"
    );

    // Logs: what the containers wrote to the app's log group.
    let group = format!("/empire/{app}");
    let stream = "web/web/0123456789abcdef";
    account
        .clients
        .logs
        .create_log_stream()
        .log_group_name(&group)
        .log_stream_name(stream)
        .send()
        .await
        .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let put = |text: &str, at: i64| {
        account
            .clients
            .logs
            .put_log_events()
            .log_group_name(&group)
            .log_stream_name(stream)
            .log_events(
                aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                    .timestamp(at)
                    .message(text)
                    .build()
                    .unwrap(),
            )
            .send()
    };
    put("first line", now - 2000).await.unwrap();
    put("second line", now - 1000).await.unwrap();
    let mut rx = scheduler.logs(&app, &LogOptions::default()).await.unwrap();
    let mut got = Vec::new();
    while let Some(line) = rx.recv().await {
        got.push(format!("{} {}", line.source, line.text));
    }
    assert_eq!(got, ["web.01234567 first line", "web.01234567 second line"]);

    let scheduler = scheduler.with_log_poll(Duration::from_millis(200));
    let mut rx = scheduler
        .logs(
            &app,
            &LogOptions {
                process: Some("web".into()),
                tail: Some(1),
                follow: true,
            },
        )
        .await
        .unwrap();
    let first = rx.recv().await.unwrap();
    assert_eq!(first.text, "second line");
    put("third line", now).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a followed line arrives")
        .unwrap();
    assert_eq!(next.text, "third line");
    account.remove().await;
}

#[tokio::test]
async fn remove_app_leaves_nothing() {
    let account = Account::create(LaunchType::Fargate).await;
    let (scheduler, _proxy) = scheduler(&account).await;
    let app = app();
    scheduler
        .deploy(&spec(&app, 1), &Progress::null())
        .await
        .unwrap();
    let www = format!("www.{}", account.public_domain);
    scheduler.set_domains(&app, &[www]).await.unwrap();
    scheduler.remove_app(&app).await.unwrap();

    assert!(service(&account, &format!("{app}_web")).await.is_none());
    assert!(service(&account, &format!("{app}_worker")).await.is_none());
    assert!(
        rules(&account, &account.config.internal_listener_arn)
            .await
            .is_empty()
    );
    let external = account.config.external_listener_arn.clone().unwrap();
    assert!(rules(&account, &external).await.is_empty());
    assert!(records(&account, &account.internal_zone).await.is_empty());
    assert!(records(&account, &account.public_zone).await.is_empty());
    assert!(parameters(&account, &app).await.is_empty());
    let groups = account
        .clients
        .elb
        .describe_target_groups()
        .names(target_group_name(app.as_str()))
        .send()
        .await;
    assert!(groups.is_err(), "the target group is still there");
    let logs = account
        .clients
        .logs
        .describe_log_groups()
        .log_group_name_prefix(format!("/empire/{app}"))
        .send()
        .await
        .unwrap();
    assert!(logs.log_groups().is_empty());
    let schedules = account
        .clients
        .events
        .list_rules()
        .name_prefix(format!("{app}_"))
        .send()
        .await
        .unwrap();
    assert!(schedules.rules().is_empty());
    let active = account.active_task_definitions(&format!("{app}_")).await;
    assert!(active.is_empty(), "{active:?}");
    // Removing it again is fine.
    scheduler.remove_app(&app).await.unwrap();
    account.remove().await;
}

#[tokio::test]
async fn missing_settings_are_named() {
    let err = EcsScheduler::connect(Default::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("EMPIRE_ECS_CLUSTER is not set"), "{err}");
    assert!(
        err.contains("EMPIRE_ROUTE53_INTERNAL_ZONE_ID is not set"),
        "{err}"
    );

    // A listener that does not exist.
    let account = Account::create(LaunchType::Fargate).await;
    let mut config = account.config.clone();
    config.internal_listener_arn = config
        .internal_listener_arn
        .replace("listener/app", "listener/app/nope");
    let clients = Clients::new(&sdk_config(&account.moto).await);
    let err = EcsScheduler::with_clients(config, clients, Some("us-east-1"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("listener"), "{err}");
    account.remove().await;
}

#[tokio::test]
async fn an_attached_run_uses_the_local_docker_engine() {
    use empire_deployer::{DockerScheduler, DockerSchedulerOptions, Router};
    let account = Account::create(LaunchType::Fargate).await;
    let (scheduler, _proxy) = scheduler(&account).await;
    let local = DockerScheduler::connect(
        Router::new("localhost".into()),
        DockerSchedulerOptions {
            namespace: format!("ecs-{}", suffix()),
            ..Default::default()
        },
    )
    .await
    .expect("the docker engine is reachable");
    let scheduler = scheduler.with_local_runner(Arc::new(local));
    let app = app();
    let oneoff = OneOffSpec {
        app: app.clone(),
        release: 1,
        image: "empire/busybox:latest".into(),
        config: BTreeMap::from([("GREETING".into(), "hi from config".into())]),
        command: "echo $GREETING; exit 3".into(),
        size: Default::default(),
        tty: false,
    };
    let (output, mut read) = tokio::io::duplex(4096);
    let io = RunIo {
        input: Box::new(tokio::io::empty()),
        output: Box::new(output),
        resize: None,
    };
    let outcome = scheduler.run(&oneoff, Some(io)).await.unwrap();
    assert_eq!(outcome, RunOutcome::Exited(3));
    let mut text = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut read, &mut text)
        .await
        .unwrap();
    assert_eq!(text.trim(), "hi from config");
    account.remove().await;
}

/// moto never starts tasks and keeps a service's first deployment PRIMARY: with the
/// rollout followed, a first deploy times out and an update looks rolled back by ECS.
/// Both put the app back as it was.
#[tokio::test]
async fn a_failed_rollout_puts_the_other_services_back() {
    let mut account = Account::create(LaunchType::Fargate).await;
    let app = app();

    // v1 with the rollout followed: nothing ever runs, the time runs out, and the new
    // services are removed again.
    account.config.rollout_wait = true;
    account.config.rollout_timeout = Duration::from_secs(1);
    let (first, _proxy) = scheduler(&account).await;
    let (progress, lines) = recorder();
    let err = first
        .deploy(&spec(&app, 1), &progress)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("did not finish rolling out within 1s"),
        "{err}"
    );
    assert!(err.starts_with("deploy failed: "), "{err}");
    assert!(lines.contains("web: 0/2 running"), "{:#?}", lines.all());
    assert!(lines.contains("web: removing the new service"));
    assert!(service(&account, &format!("{app}_web")).await.is_none());
    assert!(service(&account, &format!("{app}_worker")).await.is_none());
    // The schedule is only set once a release serves.
    let schedules = account
        .clients
        .events
        .list_rules()
        .name_prefix(format!("{app}_"))
        .send()
        .await
        .unwrap();
    assert!(schedules.rules().is_empty());

    // v1 without waiting, then v2 followed: moto's web deployment stays on v1, which
    // looks like ECS's circuit breaker rolling web back; the worker, which had moved
    // to v2 already, is put back on v1 by Empire.
    account.config.rollout_wait = false;
    let (second, _proxy) = scheduler(&account).await;
    second
        .deploy(&spec(&app, 1), &Progress::null())
        .await
        .unwrap();
    account.config.rollout_wait = true;
    account.config.rollout_timeout = Duration::from_secs(5);
    let (third, proxy) = scheduler(&account).await;
    let (progress, lines) = recorder();
    let err = third
        .deploy(&spec(&app, 2), &progress)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("deployment failed"), "{err}");
    let worker = service(&account, &format!("{app}_worker")).await.unwrap();
    assert!(
        worker
            .task_definition()
            .unwrap()
            .ends_with(&format!("{app}_worker:1")),
        "{worker:?}"
    );
    let all = lines.all();
    assert!(
        all.iter()
            .any(|l| l.contains(&format!("back to {app}_worker:1 (1)"))
                || l.contains(&format!("back to {app}_web:1 (2)"))),
        "{all:#?}"
    );
    // Nothing of v2's finalize ran: v1's parameters and the schedule on v1 stay.
    let calls = proxy.take();
    assert_eq!(count(&calls, "PutTargets"), 0);
    assert_eq!(count(&calls, "DeleteParameters"), 0);
    assert!(
        parameters(&account, &app)
            .await
            .contains_key(&format!("/empire/{app}/v1/DATABASE_URL"))
    );
}

#[tokio::test]
async fn remove_release_deletes_its_parameters_and_task_definitions() {
    let account = Account::create(LaunchType::Fargate).await;
    let (scheduler, _proxy) = scheduler(&account).await;
    let app = app();
    scheduler
        .deploy(&spec(&app, 1), &Progress::null())
        .await
        .unwrap();
    scheduler
        .deploy(&spec(&app, 2), &Progress::null())
        .await
        .unwrap();
    scheduler.remove_release(&app, 1).await.unwrap();
    let params = parameters(&account, &app).await;
    assert_eq!(
        params.keys().cloned().collect::<Vec<_>>(),
        [format!("/empire/{app}/v2/DATABASE_URL")]
    );
    let active = account.active_task_definitions(&format!("{app}_web")).await;
    let revisions: Vec<&str> = active
        .iter()
        .map(|a| a.rsplit(':').next().unwrap())
        .collect();
    assert_eq!(revisions, ["2"]);
    // The release that serves is never removed from under its services.
    scheduler.remove_release(&app, 2).await.unwrap();
    assert_eq!(parameters(&account, &app).await.len(), 1);
    let web = service(&account, &format!("{app}_web")).await.unwrap();
    let described = account
        .clients
        .ecs
        .describe_task_definition()
        .task_definition(web.task_definition().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        described.task_definition().unwrap().status(),
        Some(&aws_sdk_ecs::types::TaskDefinitionStatus::Active)
    );
    account.remove().await;
}

/// Straight at moto, whose RunTask and DescribeTasks answers the SDK cannot read (the
/// containers' `cpu` as a number): `run --detach` finds its task by its unique
/// `startedBy`, `ps` falls back to the task listings, and `destroy` still removes
/// everything.
#[tokio::test]
async fn detached_runs_survive_unreadable_task_answers() {
    let account = Account::create(LaunchType::Fargate).await;
    let clients = Clients::new(&sdk_config(&account.moto).await);
    let scheduler = EcsScheduler::with_clients(account.config.clone(), clients, Some("us-east-1"))
        .await
        .unwrap();
    let app = app();
    scheduler
        .deploy(&spec(&app, 1), &Progress::null())
        .await
        .unwrap();
    let oneoff = OneOffSpec {
        app: app.clone(),
        release: 1,
        image: spec(&app, 1).image,
        config: spec(&app, 1).config,
        command: "echo hi".into(),
        size: Default::default(),
        tty: false,
    };
    let RunOutcome::Detached { name, id } = scheduler.run(&oneoff, None).await.unwrap() else {
        panic!("not detached")
    };
    assert_eq!(name, format!("run.{}", &id[..8]));
    let ps = scheduler.processes(&app).await.unwrap();
    assert!(ps.iter().any(|p| p.name == name), "{ps:#?}");
    scheduler.remove_app(&app).await.unwrap();
    assert!(service(&account, &format!("{app}_web")).await.is_none());
    assert!(parameters(&account, &app).await.is_empty());
    account.remove().await;
}
