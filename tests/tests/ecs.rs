//! `empire server --scheduler ecs` end to end: the real binary, real git over OpenSSH,
//! the image pushed to the local registry, and every AWS call going to moto (the AWS
//! API emulator) through a proxy that records them. moto never starts tasks, so the
//! gateway runs with `EMPIRE_ECS_ROLLOUT_WAIT=false` and the FARGATE launch type (see
//! docs/ecs.md, "moto's limits").
//!
//! Needs what scripts/test.sh exports: `EMPIRE_TEST_REGISTRY=$(scripts/registry.sh 5000)`
//! and `EMPIRE_TEST_AWS_ENDPOINT=$(scripts/moto.sh 5555)`.

use std::collections::BTreeMap;

use empire_deployer::ecs::LaunchType;
use empire_deployer::ecs::plan::target_group_name;
use empire_deployer::ecs::testing::{Account, Recorder, bodies};
use empire_e2e::{CliUser, Gateway, service_from_env, unique_app};
use tokio::runtime::Runtime;

/// An extended Procfile: web with an HTTP health check, a worker.
const PROCFILE: &str = "\
web:
  command: exec httpd -f -p $PORT -h /www
  healthcheck: /
worker:
  command: while true; do sleep 60; done
";

/// What moto holds for one app, read with the SDK straight from moto.
struct Aws<'a> {
    rt: &'a Runtime,
    account: &'a Account,
    app: &'a str,
}

/// The container of a task definition revision, in the ECS API's JSON terms we check.
#[derive(Debug)]
struct Container {
    arn: String,
    image: String,
    entry_point: Vec<String>,
    command: Vec<String>,
    environment: BTreeMap<String, String>,
    secrets: BTreeMap<String, String>,
    health_check: Vec<String>,
}

impl Aws<'_> {
    fn name(&self, process: &str) -> String {
        format!("{}_{process}", self.app)
    }

    /// The ACTIVE service of `process`: (task definition ARN, desired count).
    fn service(&self, process: &str) -> Option<(String, i32)> {
        let out = self
            .rt
            .block_on(
                self.account
                    .clients
                    .ecs
                    .describe_services()
                    .cluster(&self.account.config.cluster)
                    .services(self.name(process))
                    .send(),
            )
            .unwrap();
        out.services()
            .iter()
            .find(|s| s.status() == Some("ACTIVE"))
            .map(|s| {
                (
                    s.task_definition().unwrap_or_default().to_string(),
                    s.desired_count(),
                )
            })
    }

    fn task_definition(&self, arn: &str) -> Container {
        let out = self
            .rt
            .block_on(
                self.account
                    .clients
                    .ecs
                    .describe_task_definition()
                    .task_definition(arn)
                    .send(),
            )
            .unwrap();
        let td = out.task_definition().expect("a task definition");
        assert_eq!(td.container_definitions().len(), 1, "{td:?}");
        let c = &td.container_definitions()[0];
        Container {
            arn: td.task_definition_arn().unwrap_or_default().to_string(),
            image: c.image().unwrap_or_default().to_string(),
            entry_point: c.entry_point().to_vec(),
            command: c.command().to_vec(),
            environment: c
                .environment()
                .iter()
                .map(|kv| {
                    (
                        kv.name().unwrap_or_default().to_string(),
                        kv.value().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
            secrets: c
                .secrets()
                .iter()
                .map(|s| (s.name().to_string(), s.value_from().to_string()))
                .collect(),
            health_check: c
                .health_check()
                .map(|h| h.command().to_vec())
                .unwrap_or_default(),
        }
    }

    /// The container of the service of `process`.
    fn running(&self, process: &str) -> Container {
        let (arn, _) = self
            .service(process)
            .unwrap_or_else(|| panic!("no service {}", self.name(process)));
        self.task_definition(&arn)
    }

    /// The ACTIVE task definition revisions of the app (ARNs).
    fn task_definitions(&self) -> Vec<String> {
        self.rt.block_on(
            self.account
                .active_task_definitions(&format!("{}_", self.app)),
        )
    }

    /// Parameter name → (type, value).
    fn parameters(&self) -> BTreeMap<String, (String, String)> {
        let out = self
            .rt
            .block_on(
                self.account
                    .clients
                    .ssm
                    .get_parameters_by_path()
                    .path(format!("/empire/{}", self.app))
                    .recursive(true)
                    .with_decryption(true)
                    .send(),
            )
            .unwrap();
        out.parameters()
            .iter()
            .map(|p| {
                (
                    p.name().unwrap_or_default().to_string(),
                    (
                        p.r#type()
                            .map(|t| t.as_str().to_string())
                            .unwrap_or_default(),
                        p.value().unwrap_or_default().to_string(),
                    ),
                )
            })
            .collect()
    }

    /// The app's target group ARN, if it exists.
    fn target_group(&self) -> Option<String> {
        let out = self
            .rt
            .block_on(
                self.account
                    .clients
                    .elb
                    .describe_target_groups()
                    .names(target_group_name(self.app))
                    .send(),
            )
            .ok()?;
        out.target_groups()
            .first()
            .and_then(|t| t.target_group_arn())
            .map(str::to_string)
    }

    /// The health check path and matcher of the app's target group.
    fn target_group_check(&self) -> (String, String) {
        let out = self
            .rt
            .block_on(
                self.account
                    .clients
                    .elb
                    .describe_target_groups()
                    .names(target_group_name(self.app))
                    .send(),
            )
            .unwrap();
        let tg = &out.target_groups()[0];
        (
            tg.health_check_path().unwrap_or_default().to_string(),
            tg.matcher()
                .and_then(|m| m.http_code())
                .unwrap_or_default()
                .to_string(),
        )
    }

    /// The rules of `listener`: (host names, forwarded-to target group).
    fn rules(&self, listener: &str) -> Vec<(Vec<String>, String)> {
        let out = self
            .rt
            .block_on(
                self.account
                    .clients
                    .elb
                    .describe_rules()
                    .listener_arn(listener)
                    .send(),
            )
            .unwrap();
        out.rules()
            .iter()
            .filter(|r| !r.is_default().unwrap_or(false))
            .map(|r| {
                let hosts = r
                    .conditions()
                    .iter()
                    .flat_map(|c| {
                        c.host_header_config()
                            .map(|h| h.values().to_vec())
                            .unwrap_or_else(|| c.values().to_vec())
                    })
                    .collect();
                let target = r
                    .actions()
                    .iter()
                    .find_map(|a| a.target_group_arn())
                    .unwrap_or_default()
                    .to_string();
                (hosts, target)
            })
            .collect()
    }

    /// The rules of `listener` that name one of the app's hosts.
    fn app_rules(&self, listener: &str, hosts: &[&str]) -> Vec<(Vec<String>, String)> {
        self.rules(listener)
            .into_iter()
            .filter(|(h, _)| h.iter().any(|h| hosts.contains(&h.as_str())))
            .collect()
    }

    /// The records of `zone`: name (no trailing dot) → (type, ALIAS target DNS name).
    fn records(&self, zone: &str) -> BTreeMap<String, (String, String)> {
        let out = self
            .rt
            .block_on(
                self.account
                    .clients
                    .route53
                    .list_resource_record_sets()
                    .hosted_zone_id(zone)
                    .send(),
            )
            .unwrap();
        out.resource_record_sets()
            .iter()
            .map(|r| {
                (
                    r.name().trim_end_matches('.').to_string(),
                    (
                        r.r#type().as_str().to_string(),
                        r.alias_target()
                            .map(|a| a.dns_name().trim_end_matches('.').to_ascii_lowercase())
                            .unwrap_or_default(),
                    ),
                )
            })
            .collect()
    }

    /// The DNS name of the load balancer of `listener`.
    fn load_balancer_dns(&self, listener: &str) -> String {
        let elb = &self.account.clients.elb;
        let listeners = self
            .rt
            .block_on(elb.describe_listeners().listener_arns(listener).send())
            .unwrap();
        let lb = listeners.listeners()[0]
            .load_balancer_arn()
            .unwrap()
            .to_string();
        let lbs = self
            .rt
            .block_on(elb.describe_load_balancers().load_balancer_arns(lb).send())
            .unwrap();
        lbs.load_balancers()[0]
            .dns_name()
            .unwrap()
            .trim_end_matches('.')
            .to_ascii_lowercase()
    }

    fn log_group(&self) -> bool {
        let name = format!("/empire/{}", self.app);
        let out = self
            .rt
            .block_on(
                self.account
                    .clients
                    .logs
                    .describe_log_groups()
                    .log_group_name_prefix(&name)
                    .send(),
            )
            .unwrap();
        out.log_groups()
            .iter()
            .any(|g| g.log_group_name() == Some(name.as_str()))
    }
}

#[test]
fn a_push_and_every_operation_leave_the_right_state_in_aws() {
    let registry = service_from_env("EMPIRE_TEST_REGISTRY", "scripts/registry.sh 5000");
    let rt = Runtime::new().expect("a tokio runtime");
    let account = rt.block_on(Account::create(LaunchType::Fargate));
    assert!(!account.config.rollout_wait);
    let proxy = rt.block_on(Recorder::start(account.moto.clone()));
    let prefix = unique_app("e2e-ecs");
    let mut gateway = Gateway::builder()
        .arg("--scheduler")
        .arg("ecs")
        .arg("--registry")
        .arg(&format!("{registry}/{prefix}"))
        .env("AWS_ENDPOINT_URL", &proxy.url())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1");
    for (key, value) in account.server_env() {
        gateway = gateway.env(key, &value);
    }
    let gw = gateway.start();
    let dev = gw.developer("alice");
    let cli = CliUser::new(&gw, "alice");
    let app = unique_app("ecs");
    let aws = Aws {
        rt: &rt,
        account: &account,
        app: &app,
    };
    let internal_host = format!("{app}.{}", account.internal_domain);
    let internal_listener = account.config.internal_listener_arn.clone();
    let external_listener = account.config.external_listener_arn.clone().unwrap();

    // The app with a config var, then the push: v1.
    cli.ok(&["create", &app, "--no-remote"]);
    cli.ok(&["config:set", "-a", &app, "DATABASE_URL=postgres://db/v1"]);
    let repo = gw.app_repo(&dev, "web-httpd", &app);
    repo.write("Procfile", PROCFILE);
    repo.commit("an extended Procfile");
    proxy.take();
    let push = repo.push();
    push.assert_success();
    let output = push.output();
    eprintln!("{output}");
    for line in [
        format!("Creating the log group /empire/{app}"),
        format!("Creating the target group {}", target_group_name(&app)),
        format!("Routing {internal_host} through the internal load balancer"),
        "Storing 1 config var(s) in SSM Parameter Store".to_string(),
        format!("Registered {app}_web:"),
        format!("Registered {app}_worker:"),
        "Services updated; ECS rolls them out (not waiting)".to_string(),
        format!("http://{internal_host} deployed to the internal load balancer"),
    ] {
        assert!(
            push.remote_lines().iter().any(|l| l.contains(&line)),
            "no `remote:` line with {line:?}:\n{output}"
        );
    }
    assert!(
        !output.contains("deployed to the router") && !output.contains(".localhost"),
        "the push names the local router:\n{output}"
    );

    // Task definitions per process type: the image by digest, the command, the
    // environment, the config as secrets from SSM, the health check on web.
    let web = aws.running("web");
    let image = web.image.clone();
    assert!(
        image.starts_with(&format!("{registry}/{prefix}/{app}@sha256:")),
        "{web:?}"
    );
    assert_eq!(web.entry_point, ["/bin/sh", "-c"]);
    assert_eq!(web.command, ["exec httpd -f -p $PORT -h /www"]);
    assert_eq!(web.environment["PORT"], "5000");
    assert_eq!(web.environment["EMPIRE_APPNAME"], app);
    assert_eq!(web.environment["EMPIRE_RELEASE"], "v1");
    assert_eq!(web.environment["EMPIRE_PROCESS"], "web");
    assert!(!web.environment.contains_key("DATABASE_URL"), "{web:?}");
    assert!(
        web.secrets["DATABASE_URL"].ends_with(&format!(":parameter/empire/{app}/v1/DATABASE_URL")),
        "{web:?}"
    );
    assert_eq!(
        web.health_check.first().map(String::as_str),
        Some("CMD-SHELL")
    );
    assert!(
        web.health_check[1].contains("http://127.0.0.1:5000/"),
        "{web:?}"
    );
    let worker = aws.running("worker");
    assert_eq!(worker.image, image);
    assert_eq!(worker.command, ["while true; do sleep 60; done"]);
    assert_eq!(worker.environment["EMPIRE_PROCESS"], "worker");
    assert!(worker.health_check.is_empty(), "{worker:?}");
    let v1_web = web.arn.clone();
    let v1_worker = worker.arn.clone();
    assert_eq!(
        aws.parameters(),
        BTreeMap::from([(
            format!("/empire/{app}/v1/DATABASE_URL"),
            ("SecureString".to_string(), "postgres://db/v1".to_string())
        )])
    );
    // Services with the formation's counts; the target group, the internal rule and
    // record, the log group.
    // (A new app's formation: one web, no worker until scaled.)
    assert_eq!(aws.service("web").unwrap().1, 1);
    assert_eq!(aws.service("worker").unwrap().1, 0);
    let target_group = aws.target_group().expect("the app's target group");
    assert_eq!(
        aws.target_group_check(),
        ("/".to_string(), "200-499".to_string())
    );
    assert_eq!(
        aws.app_rules(&internal_listener, &[&internal_host]),
        [(vec![internal_host.clone()], target_group.clone())]
    );
    let internal_lb = aws.load_balancer_dns(&internal_listener);
    assert_eq!(
        aws.records(&account.internal_zone).get(&internal_host),
        Some(&("A".to_string(), internal_lb.clone()))
    );
    assert!(aws.log_group());
    let calls = proxy.take();
    assert!(
        bodies(&calls, "CreateService")
            .iter()
            .all(|b| b.contains("\"launchType\":\"FARGATE\"")),
        "{calls:#?}"
    );

    // config:set: v2, parameters under v2, the services on v2's task definitions.
    let set = cli.ok(&["config:set", "-a", &app, "GREETING=hello"]);
    assert!(set.contains("v2"), "{set}");
    let params = aws.parameters();
    assert_eq!(
        params.get(&format!("/empire/{app}/v2/GREETING")),
        Some(&("SecureString".to_string(), "hello".to_string()))
    );
    assert_eq!(
        params.get(&format!("/empire/{app}/v2/DATABASE_URL")),
        Some(&("SecureString".to_string(), "postgres://db/v1".to_string()))
    );
    let web = aws.running("web");
    assert_eq!(web.environment["EMPIRE_RELEASE"], "v2");
    assert!(web.secrets.contains_key("GREETING"), "{web:?}");
    assert_ne!(web.arn, v1_web);

    // scale worker=2: the desired count, nothing else moves.
    cli.ok(&["scale", "-a", &app, "worker=2"]);
    assert_eq!(aws.service("worker").unwrap().1, 2);
    assert_eq!(aws.service("web").unwrap().1, 1);

    // rollback v1: v3 with v1's image and config, on every service.
    let rolled = cli.ok(&["rollback", "-a", &app, "v1"]);
    assert!(rolled.contains("v3"), "{rolled}");
    for (process, v1) in [("web", &v1_web), ("worker", &v1_worker)] {
        let now = aws.running(process);
        let before = aws.task_definition(v1);
        assert_eq!(now.image, before.image, "{process}");
        assert_eq!(now.command, before.command, "{process}");
        assert_eq!(now.environment["EMPIRE_RELEASE"], "v3", "{process}");
        assert_eq!(
            now.secrets.keys().collect::<Vec<_>>(),
            ["DATABASE_URL"],
            "{process}: v1's config"
        );
    }
    assert_eq!(aws.service("worker").unwrap().1, 2, "the formation stays");
    assert_eq!(
        aws.parameters()
            .get(&format!("/empire/{app}/v3/DATABASE_URL")),
        Some(&("SecureString".to_string(), "postgres://db/v1".to_string()))
    );

    // run --detach: a RunTask of the web task definition with the command override.
    proxy.take();
    let run = cli.ok(&["run", "-a", &app, "--detach", "echo", "one-off"]);
    let calls = proxy.take();
    let tasks = bodies(&calls, "RunTask");
    assert_eq!(tasks.len(), 1, "{run}\n{calls:#?}");
    let task: serde_json::Value = serde_json::from_str(tasks[0]).unwrap();
    assert_eq!(task["launchType"], "FARGATE");
    let override_command = task["overrides"]["containerOverrides"][0]["command"].to_string();
    assert!(
        override_command.contains("echo") && override_command.contains("one-off"),
        "{task}"
    );

    // domains:add: rules on the external listener; a record in the public zone for
    // a name inside it, none for a name outside it.
    let inside = format!("www.{}", account.public_domain);
    let outside = format!("api-{}.example.org", &app);
    cli.ok(&["domains:add", "-a", &app, &inside]);
    cli.ok(&["domains:add", "-a", &app, &outside]);
    let external = aws.app_rules(&external_listener, &[&inside, &outside]);
    let mut hosts: Vec<String> = external.iter().flat_map(|(h, _)| h.clone()).collect();
    hosts.sort();
    let mut want = vec![inside.clone(), outside.clone()];
    want.sort();
    assert_eq!(hosts, want, "{external:?}");
    assert!(external.iter().all(|(_, tg)| *tg == target_group));
    let external_lb = aws.load_balancer_dns(&external_listener);
    let public = aws.records(&account.public_zone);
    assert_eq!(
        public.get(&inside),
        Some(&("A".to_string(), external_lb.clone()))
    );
    assert!(!public.contains_key(&outside), "{public:?}");
    assert!(
        !aws.records(&account.internal_zone).contains_key(&inside),
        "a custom domain in the private zone"
    );

    // destroy: nothing of the app is left.
    cli.ok(&["destroy", "-a", &app, "--confirm", &app]);
    assert_eq!(aws.service("web"), None);
    assert_eq!(aws.service("worker"), None);
    assert_eq!(aws.target_group(), None);
    assert!(
        aws.app_rules(&internal_listener, &[&internal_host])
            .is_empty()
    );
    assert!(
        aws.app_rules(&external_listener, &[&inside, &outside])
            .is_empty()
    );
    assert!(
        !aws.records(&account.internal_zone)
            .contains_key(&internal_host)
    );
    assert!(!aws.records(&account.public_zone).contains_key(&inside));
    assert!(aws.parameters().is_empty());
    assert!(!aws.log_group());
    assert!(aws.task_definitions().is_empty());
    drop(gw);
    rt.block_on(account.remove());
}
