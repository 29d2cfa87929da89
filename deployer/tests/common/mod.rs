//! What the Docker tests share: a namespace with its own test image, a gateway (router
//! and scheduler), progress recording and HTTP requests through the router.

#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use empire_core::app::AppName;
use empire_core::formation::ProcessSize;
use empire_core::progress::{Progress, ProgressSink};
use empire_core::scheduler::{DeploySpec, ProcessSpec};
use empire_deployer::{DockerScheduler, DockerSchedulerOptions, Router};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub const BASE_IMAGE: &str = "empire/busybox:latest";

pub fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

pub fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A namespace and a test image built for it; dropping it removes both's leftovers.
pub struct Fixture {
    pub namespace: String,
    pub image: String,
    pub extra_containers: Mutex<Vec<String>>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let id = suffix();
        let image = format!("empire-deployer-test:{id}");
        let dockerfile = format!(
            "FROM {BASE_IMAGE}\nRUN mkdir -p /www && echo 'hello from v1' > /www/index.html\nCMD httpd -f -p $PORT -h /www\n"
        );
        let mut build = Command::new("docker")
            .args(["build", "-q", "-t", &image, "-"])
            .env("DOCKER_BUILDKIT", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker build runs");
        build
            .stdin
            .take()
            .unwrap()
            .write_all(dockerfile.as_bytes())
            .unwrap();
        let output = build.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "building the test image failed (is {BASE_IMAGE} there? scripts/base-images.sh builds it): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Fixture {
            namespace: format!("dtest-{id}"),
            image,
            extra_containers: Mutex::new(Vec::new()),
        }
    }

    pub fn app(&self, name: &str) -> AppName {
        AppName::new(&format!("{name}-{}", suffix())).unwrap()
    }

    pub fn options(&self) -> DockerSchedulerOptions {
        DockerSchedulerOptions {
            namespace: self.namespace.clone(),
            boot_timeout: Duration::from_secs(20),
            worker_settle: Duration::from_secs(1),
            stop_grace: Duration::from_secs(3),
            ..Default::default()
        }
    }

    /// The containers of this namespace, as `app process instance release` lines.
    pub fn containers(&self, app: &AppName) -> Vec<String> {
        let out = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=empire.gateway={}", self.namespace),
            "--filter",
            &format!("label=empire.app={app}"),
            "--format",
            "{{.Label \"empire.process\"}}.{{.Label \"empire.instance\"}} v{{.Label \"empire.release\"}}",
        ]);
        let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
        lines.sort();
        lines
    }

    /// The id of the one container of `process`.
    pub fn container_id(&self, app: &AppName, process: &str) -> String {
        let ids = docker(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=empire.gateway={}", self.namespace),
            "--filter",
            &format!("label=empire.app={app}"),
            "--filter",
            &format!("label=empire.process={process}"),
        ]);
        assert_eq!(ids.lines().count(), 1, "{process}: {ids:?}");
        ids
    }

    pub fn container_ids(&self, app: &AppName) -> Vec<String> {
        docker(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=empire.gateway={}", self.namespace),
            "--filter",
            &format!("label=empire.app={app}"),
        ])
        .lines()
        .map(str::to_string)
        .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=empire.gateway={}", self.namespace),
        ]);
        let mut ids: Vec<String> = ids.lines().map(str::to_string).collect();
        ids.extend(self.extra_containers.lock().unwrap().drain(..));
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            docker(&args);
        }
        docker(&["rmi", "-f", &self.image]);
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
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    pub fn contains(&self, needle: &str) -> bool {
        self.all().iter().any(|l| l.contains(needle))
    }
}

pub fn recorder() -> (Progress, Arc<Lines>) {
    let lines = Arc::new(Lines::default());
    (Progress::new(lines.clone()), lines)
}

/// A router on a fresh port and a scheduler in front of it.
pub struct Gateway {
    pub scheduler: DockerScheduler,
    pub router: Arc<Router>,
    pub addr: SocketAddr,
    pub stop: CancellationToken,
}

impl Gateway {
    pub async fn start(options: DockerSchedulerOptions) -> Gateway {
        let router = Router::new("localhost".into());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(router.clone().serve(listener, stop.clone()));
        let options = DockerSchedulerOptions {
            router_port: addr.port(),
            ..options
        };
        let scheduler = DockerScheduler::connect(router.clone(), options)
            .await
            .expect("the docker engine is reachable");
        Gateway {
            scheduler,
            router,
            addr,
            stop,
        }
    }

    /// GET / of `app` through the router: the status and the body.
    pub async fn get(&self, app: &AppName) -> Result<(u16, String), String> {
        get(self.addr, app).await
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub async fn get(router: SocketAddr, app: &AppName) -> Result<(u16, String), String> {
    get_host(router, &format!("{app}.localhost")).await
}

/// GET / through the router with `Host: host`: the status and the body.
pub async fn get_host(router: SocketAddr, host: &str) -> Result<(u16, String), String> {
    let attempt = async {
        let stream = TcpStream::connect(router)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let request = Request::get("/")
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

pub fn web(name: &str, command: Option<&str>) -> ProcessSpec {
    ProcessSpec {
        name: name.into(),
        command: command.map(str::to_string),
        quantity: 1,
        healthcheck: None,
        size: ProcessSize::default(),
    }
}

pub fn spec(
    app: &AppName,
    image: &str,
    release: u32,
    config: &[(&str, &str)],
    processes: Vec<ProcessSpec>,
) -> DeploySpec {
    DeploySpec {
        app: app.clone(),
        release,
        image: image.to_string(),
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        processes,
    }
}

pub const SERVE_WWW: &str = "httpd -f -p $PORT -h /www";
pub const SERVE_GREETING: &str = "mkdir -p /tmp/www && echo \"$GREETING $DYNO $EMPIRE_RELEASE $EMPIRE_APPNAME\" > /tmp/www/index.html && exec httpd -f -p $PORT -h /tmp/www";
