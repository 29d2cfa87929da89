//! Test support (the `test-support` feature) for the ECS tests of this crate and the
//! end-to-end tests of the binary (tests/tests/ecs.rs): moto (the AWS API emulator) started on loopback, a recording
//! proxy between the SDK and moto, and the AWS pieces an operator provides (VPC,
//! subnets, security group, cluster, load balancers with listeners, hosted zones)
//! created fresh for each test.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::ecs::aws::{Clients, http_client};
use crate::ecs::{EcsConfig, LaunchType};
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_ecs::config::{Credentials, Region};
use bytes::Bytes;
use empire_core::progress::{Progress, ProgressSink};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The region the tests use.
pub const REGION: &str = "us-east-1";

/// moto's URL: `EMPIRE_TEST_AWS_ENDPOINT`, else moto started by scripts/moto.sh.
pub fn moto() -> String {
    if let Ok(url) = std::env::var("EMPIRE_TEST_AWS_ENDPOINT")
        && !url.is_empty()
    {
        return url;
    }
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/moto.sh");
        let out = Command::new("sh")
            .arg(script)
            .arg("5555")
            .output()
            .expect("scripts/moto.sh runs");
        assert!(
            out.status.success(),
            "scripts/moto.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
    .clone()
}

/// A random 8-character suffix for unique names.
pub fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// An SDK configuration with static test credentials pointing at `endpoint`.
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .http_client(http_client())
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await
}

/// One request the proxy forwarded.
#[derive(Debug, Clone)]
pub struct Call {
    /// The operation (`RegisterTaskDefinition`, `CreateRule`, `ChangeResourceRecordSets`).
    pub action: String,
    /// The service (`ecs`, `elb`, `route53`, `ssm`, `logs`, `events`).
    pub service: String,
    /// The request body.
    pub body: String,
}

/// A proxy in front of moto that records each request's operation and body.
#[derive(Clone)]
pub struct Recorder {
    /// Where the proxy listens.
    pub addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    /// (forward one request at a time, added latency per request), for benchmarks.
    mode: Arc<Mutex<(bool, Duration)>>,
}

/// The operation and service of a request: the JSON protocols' `X-Amz-Target`, the
/// query protocol's `Action`, or Route53's REST path.
fn operation(
    method: &http::Method,
    path: &str,
    target: Option<&str>,
    body: &str,
) -> (String, String) {
    if let Some(target) = target {
        let (prefix, action) = target.split_once('.').unwrap_or(("", target));
        let service = match prefix {
            p if p.starts_with("AmazonEC2ContainerService") => "ecs",
            p if p.starts_with("AmazonSSM") => "ssm",
            p if p.starts_with("Logs") => "logs",
            p if p.starts_with("AWSEvents") => "events",
            other => other,
        };
        return (action.to_string(), service.to_string());
    }
    if let Some(action) = body.split('&').find_map(|kv| kv.strip_prefix("Action=")) {
        return (action.to_string(), "elb".to_string());
    }
    if path.starts_with("/2013-04-01/") {
        let action = match (method.as_str(), path) {
            ("POST", p) if p.ends_with("/rrset") || p.ends_with("/rrset/") => {
                "ChangeResourceRecordSets"
            }
            ("GET", p) if p.contains("/rrset") => "ListResourceRecordSets",
            ("GET", p) if p.contains("/hostedzone/") => "GetHostedZone",
            ("POST", p) if p.ends_with("/hostedzone") => "CreateHostedZone",
            _ => "Route53",
        };
        return (action.to_string(), "route53".to_string());
    }
    (format!("{method} {path}"), "unknown".to_string())
}

impl Recorder {
    /// Starts the proxy in front of `upstream` (moto's URL) on a free loopback port.
    pub async fn start(upstream: String) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let mode: Arc<Mutex<(bool, Duration)>> = Arc::new(Mutex::new((false, Duration::ZERO)));
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        let recorder = Recorder {
            addr,
            calls: calls.clone(),
            mode: mode.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let calls = calls.clone();
                let client = client.clone();
                let upstream = upstream.clone();
                let mode = mode.clone();
                let gate = gate.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<Incoming>| {
                        let calls = calls.clone();
                        let client = client.clone();
                        let upstream = upstream.clone();
                        let (serialize, latency) = *mode.lock().unwrap();
                        let gate = gate.clone();
                        async move {
                            let _turn = if serialize {
                                Some(gate.lock_owned().await)
                            } else {
                                None
                            };
                            if !latency.is_zero() {
                                tokio::time::sleep(latency).await;
                            }
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await?.to_bytes();
                            let text = String::from_utf8_lossy(&body).to_string();
                            let target = parts
                                .headers
                                .get("x-amz-target")
                                .and_then(|v| v.to_str().ok());
                            let (action, service) =
                                operation(&parts.method, parts.uri.path(), target, &text);
                            calls.lock().unwrap().push(Call {
                                action,
                                service,
                                body: text,
                            });
                            let path = parts
                                .uri
                                .path_and_query()
                                .map(|p| p.as_str())
                                .unwrap_or("/");
                            let mut forward = http::Request::builder()
                                .method(parts.method.clone())
                                .uri(format!("{upstream}{path}"));
                            for (name, value) in &parts.headers {
                                forward = forward.header(name, value);
                            }
                            let forward = forward.body(Full::new(body)).unwrap();
                            let response = client.request(forward).await.unwrap();
                            let (mut parts, body) = response.into_parts();
                            let mut body = body.collect().await?.to_bytes();
                            if let Some(fixed) = fix_moto_tasks(&body) {
                                body = fixed;
                                parts.headers.remove(http::header::CONTENT_LENGTH);
                            }
                            Ok::<_, hyper::Error>(http::Response::from_parts(
                                parts,
                                Full::new(body),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        recorder
    }

    /// Forward one request at a time (`serialize`) and add `latency` to each.
    pub fn set_mode(&self, serialize: bool, latency: Duration) {
        *self.mode.lock().unwrap() = (serialize, latency);
    }

    /// `http://<addr>`, the endpoint to point the SDK (or `AWS_ENDPOINT_URL`) at.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every call since the last `take`.
    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    /// Every call recorded so far (kept).
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

/// moto answers RunTask and DescribeTasks with the `cpu` and `memory` of each task's
/// containers as numbers where the ECS API has strings, which the SDK refuses to parse
/// (moto 5.2, measured): the proxy turns them into strings. Nothing else is changed.
fn fix_moto_tasks(body: &[u8]) -> Option<Bytes> {
    let needle = b"\"containers\"";
    if !body.starts_with(b"{") || !body.windows(needle.len()).any(|w| w == needle) {
        return None;
    }
    let mut json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let tasks = json.get_mut("tasks")?.as_array_mut()?;
    for task in tasks {
        let Some(containers) = task.get_mut("containers").and_then(|c| c.as_array_mut()) else {
            continue;
        };
        for container in containers {
            for key in ["cpu", "memory", "memoryReservation"] {
                if let Some(value) = container.get_mut(key)
                    && value.is_number()
                {
                    *value = serde_json::Value::String(value.to_string());
                }
            }
        }
    }
    Some(Bytes::from(serde_json::to_vec(&json).ok()?))
}

/// Whether an operation changes something.
pub fn mutating(action: &str) -> bool {
    [
        "Create",
        "Register",
        "Update",
        "Put",
        "Delete",
        "Deregister",
        "Change",
        "Modify",
        "Tag",
        "Run",
        "Stop",
        "Remove",
    ]
    .iter()
    .any(|p| action.starts_with(p))
}

/// How many of `calls` are `action`.
pub fn count(calls: &[Call], action: &str) -> usize {
    calls.iter().filter(|c| c.action == action).count()
}

/// The request bodies of the `action` calls.
pub fn bodies<'a>(calls: &'a [Call], action: &str) -> Vec<&'a str> {
    calls
        .iter()
        .filter(|c| c.action == action)
        .map(|c| c.body.as_str())
        .collect()
}

/// An unsigned EC2 query call to moto (moto does not check signatures); the response
/// XML.
async fn ec2(endpoint: &str, params: &[(&str, &str)]) -> String {
    match try_ec2(endpoint, params).await {
        Ok(text) => text,
        Err(err) => panic!("EC2 {params:?}: {err}"),
    }
}

/// [`ec2`] without panicking: the response XML, or the status and body.
async fn try_ec2(endpoint: &str, params: &[(&str, &str)]) -> Result<String, String> {
    let mut body = String::from("Version=2016-11-15");
    for (k, v) in params {
        body.push('&');
        body.push_str(k);
        body.push('=');
        body.push_str(&v.replace('/', "%2F"));
    }
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("{endpoint}/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!("{status} {text}"))
    }
}

fn xml_value(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no {tag} in {xml}"))
        + open.len();
    let end = xml[start..].find('<').unwrap() + start;
    xml[start..end].to_string()
}

/// The AWS pieces an operator provides, made fresh in moto.
pub struct Account {
    /// moto's URL.
    pub moto: String,
    /// Clients straight to moto (not recorded).
    pub clients: Clients,
    /// The ECS settings naming these pieces.
    pub config: EcsConfig,
    /// The VPC.
    pub vpc: String,
    /// The private zone's domain (`empire-<id>.internal`).
    pub internal_domain: String,
    /// The public zone's domain (`example-<id>.com`).
    pub public_domain: String,
    /// The private zone's id.
    pub internal_zone: String,
    /// The public zone's id.
    pub public_zone: String,
}

impl Account {
    /// Creates a VPC (DNS hostnames on), two subnets, a security group, a cluster, an
    /// internal and an internet-facing load balancer with an HTTP listener each, a
    /// private and a public hosted zone.
    pub async fn create(launch_type: LaunchType) -> Account {
        let moto = moto();
        let id = suffix();
        let vpc = xml_value(
            &ec2(
                &moto,
                &[("Action", "CreateVpc"), ("CidrBlock", "10.20.0.0/16")],
            )
            .await,
            "vpcId",
        );
        ec2(
            &moto,
            &[
                ("Action", "ModifyVpcAttribute"),
                ("VpcId", &vpc),
                ("EnableDnsHostnames.Value", "true"),
            ],
        )
        .await;
        let mut subnets = Vec::new();
        for (cidr, zone) in [
            ("10.20.1.0/24", "us-east-1a"),
            ("10.20.2.0/24", "us-east-1b"),
        ] {
            subnets.push(xml_value(
                &ec2(
                    &moto,
                    &[
                        ("Action", "CreateSubnet"),
                        ("VpcId", &vpc),
                        ("CidrBlock", cidr),
                        ("AvailabilityZone", zone),
                    ],
                )
                .await,
                "subnetId",
            ));
        }
        let group = xml_value(
            &ec2(
                &moto,
                &[
                    ("Action", "CreateSecurityGroup"),
                    ("GroupName", &format!("empire-{id}")),
                    ("GroupDescription", "empire"),
                    ("VpcId", &vpc),
                ],
            )
            .await,
            "groupId",
        );

        let sdk = sdk_config(&moto).await;
        let clients = Clients::new(&sdk);
        let cluster = format!("empire-{id}");
        clients
            .ecs
            .create_cluster()
            .cluster_name(&cluster)
            .send()
            .await
            .unwrap();
        let mut listeners = Vec::new();
        for (name, scheme) in [
            (
                "internal",
                aws_sdk_elasticloadbalancingv2::types::LoadBalancerSchemeEnum::Internal,
            ),
            (
                "external",
                aws_sdk_elasticloadbalancingv2::types::LoadBalancerSchemeEnum::InternetFacing,
            ),
        ] {
            let lb = clients
                .elb
                .create_load_balancer()
                .name(format!("{name}-{id}"))
                .set_subnets(Some(subnets.clone()))
                .security_groups(&group)
                .scheme(scheme)
                .send()
                .await
                .unwrap();
            let lb_arn = lb.load_balancers()[0]
                .load_balancer_arn()
                .unwrap()
                .to_string();
            let listener = clients
                .elb
                .create_listener()
                .load_balancer_arn(lb_arn)
                .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
                .port(80)
                .default_actions(
                    aws_sdk_elasticloadbalancingv2::types::Action::builder()
                        .r#type(aws_sdk_elasticloadbalancingv2::types::ActionTypeEnum::FixedResponse)
                        .fixed_response_config(
                            aws_sdk_elasticloadbalancingv2::types::FixedResponseActionConfig::builder()
                                .status_code("404")
                                .build(),
                        )
                        .build(),
                )
                .send()
                .await
                .unwrap();
            listeners.push(listener.listeners()[0].listener_arn().unwrap().to_string());
        }
        let internal_domain = format!("empire-{id}.internal");
        let public_domain = format!("example-{id}.com");
        let internal_zone = clients
            .route53
            .create_hosted_zone()
            .name(&internal_domain)
            .caller_reference(format!("internal-{id}"))
            .vpc(
                aws_sdk_route53::types::Vpc::builder()
                    .vpc_id(&vpc)
                    .vpc_region(aws_sdk_route53::types::VpcRegion::UsEast1)
                    .build(),
            )
            .hosted_zone_config(
                aws_sdk_route53::types::HostedZoneConfig::builder()
                    .private_zone(true)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let public_zone = clients
            .route53
            .create_hosted_zone()
            .name(&public_domain)
            .caller_reference(format!("public-{id}"))
            .send()
            .await
            .unwrap();
        let zone_id =
            |z: &aws_sdk_route53::operation::create_hosted_zone::CreateHostedZoneOutput| {
                z.hosted_zone()
                    .unwrap()
                    .id()
                    .trim_start_matches("/hostedzone/")
                    .to_string()
            };
        let internal_zone = zone_id(&internal_zone);
        let public_zone = zone_id(&public_zone);
        let config = EcsConfig {
            cluster,
            launch_type,
            subnets,
            security_groups: vec![group],
            execution_role_arn: "arn:aws:iam::123456789012:role/empire-execution".into(),
            events_role_arn: Some("arn:aws:iam::123456789012:role/empire-events".into()),
            vpc_id: vpc.clone(),
            internal_listener_arn: listeners[0].clone(),
            external_listener_arn: Some(listeners[1].clone()),
            internal_zone_id: internal_zone.clone(),
            public_zone_id: Some(public_zone.clone()),
            rollout_wait: false,
            rollout_poll: Duration::from_millis(200),
            ..EcsConfig::default()
        };
        Account {
            moto,
            clients,
            config,
            vpc,
            internal_domain,
            public_domain,
            internal_zone,
            public_zone,
        }
    }
}

/// Collects progress lines (and echoes them for failing tests).
#[derive(Default)]
pub struct Lines(Mutex<Vec<String>>);

impl ProgressSink for Lines {
    fn write_line(&self, line: &str) {
        eprintln!("{line}");
        self.0.lock().unwrap().push(line.to_string());
    }
}

impl Lines {
    /// Every line so far.
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    /// Whether a line contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.all().iter().any(|l| l.contains(needle))
    }
}

/// A progress whose lines are collected in the returned [`Lines`].
pub fn recorder() -> (Progress, Arc<Lines>) {
    let lines = Arc::new(Lines::default());
    (Progress::new(lines.clone()), lines)
}

impl Account {
    /// Deletes what [`Account::create`] made (best effort: what an app left behind
    /// keeps its piece): the load balancers and their listeners, the zones, the cluster,
    /// the security group, the subnets and the VPC.
    pub async fn remove(&self) {
        let c = &self.clients;
        let mut listeners = vec![self.config.internal_listener_arn.clone()];
        listeners.extend(self.config.external_listener_arn.clone());
        for listener in listeners {
            let Ok(found) = c
                .elb
                .describe_listeners()
                .listener_arns(&listener)
                .send()
                .await
            else {
                continue;
            };
            let lb = found
                .listeners()
                .first()
                .and_then(|l| l.load_balancer_arn())
                .map(str::to_string);
            let _ = c.elb.delete_listener().listener_arn(&listener).send().await;
            if let Some(lb) = lb {
                let _ = c
                    .elb
                    .delete_load_balancer()
                    .load_balancer_arn(lb)
                    .send()
                    .await;
            }
        }
        for zone in [&self.internal_zone, &self.public_zone] {
            let _ = c.route53.delete_hosted_zone().id(zone).send().await;
        }
        let _ = c
            .ecs
            .delete_cluster()
            .cluster(&self.config.cluster)
            .send()
            .await;
        for group in &self.config.security_groups {
            let _ = try_ec2(
                &self.moto,
                &[("Action", "DeleteSecurityGroup"), ("GroupId", group)],
            )
            .await;
        }
        for subnet in &self.config.subnets {
            let _ = try_ec2(
                &self.moto,
                &[("Action", "DeleteSubnet"), ("SubnetId", subnet)],
            )
            .await;
        }
        let _ = try_ec2(&self.moto, &[("Action", "DeleteVpc"), ("VpcId", &self.vpc)]).await;
    }

    /// The ARNs of the ACTIVE task definitions whose family starts with `prefix`.
    pub async fn active_task_definitions(&self, prefix: &str) -> Vec<String> {
        let out = self
            .clients
            .ecs
            .list_task_definitions()
            .family_prefix(prefix)
            .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
            .send()
            .await
            .expect("listing task definitions");
        out.task_definition_arns().to_vec()
    }

    /// The `empire server --scheduler ecs` settings naming these pieces, as the
    /// environment variables the gateway reads.
    pub fn server_env(&self) -> Vec<(&'static str, String)> {
        let c = &self.config;
        let mut env = vec![
            ("EMPIRE_ECS_CLUSTER", c.cluster.clone()),
            ("EMPIRE_ECS_LAUNCH_TYPE", c.launch_type.as_str().to_string()),
            ("EMPIRE_ECS_SUBNETS", c.subnets.join(",")),
            ("EMPIRE_ECS_SECURITY_GROUPS", c.security_groups.join(",")),
            (
                "EMPIRE_ECS_EXECUTION_ROLE_ARN",
                c.execution_role_arn.clone(),
            ),
            ("EMPIRE_VPC_ID", c.vpc_id.clone()),
            (
                "EMPIRE_ELB_INTERNAL_LISTENER_ARN",
                c.internal_listener_arn.clone(),
            ),
            (
                "EMPIRE_ROUTE53_INTERNAL_ZONE_ID",
                c.internal_zone_id.clone(),
            ),
            ("EMPIRE_ECS_ROLLOUT_WAIT", c.rollout_wait.to_string()),
        ];
        if let Some(arn) = &c.events_role_arn {
            env.push(("EMPIRE_ECS_EVENTS_ROLE_ARN", arn.clone()));
        }
        if let Some(arn) = &c.external_listener_arn {
            env.push(("EMPIRE_ELB_EXTERNAL_LISTENER_ARN", arn.clone()));
        }
        if let Some(zone) = &c.public_zone_id {
            env.push(("EMPIRE_ROUTE53_PUBLIC_ZONE_ID", zone.clone()));
        }
        env
    }
}
