//! What the Docker tests share: a namespace with its own test image, a gateway (router
//! and scheduler), progress recording and HTTP requests through the router.

#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use empire_core::app::AppName;
use empire_core::progress::Progress;
use empire_core::scheduler::{DeploySpec, ProcessSpec, Scheduler};
use empire_deployer::{DockerScheduler, DockerSchedulerOptions, Router};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
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

/// Builds the image `tag` from `dockerfile` (with the classic builder: no registry is
/// reachable), failing the test with the build's output when it fails. A label naming
/// `tag` right after `FROM` makes every layer this test's own, so a parallel test that
/// removes its identical image never removes this one's.
pub fn build_image(tag: &str, dockerfile: &str) {
    let dockerfile = match dockerfile.split_once('\n') {
        Some((from, rest)) => format!("{from}\nLABEL empire.test.image=\"{tag}\"\n{rest}"),
        None => format!("{dockerfile}\nLABEL empire.test.image=\"{tag}\"\n"),
    };
    let mut build = Command::new("docker")
        .args(["build", "-q", "-t", tag, "-"])
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
        "building {tag} failed (is {BASE_IMAGE} there? scripts/base-images.sh builds it): {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `docker inspect -f <format> <id>`.
pub fn inspect(id: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, id])
}

/// A namespace and a test image built for it (serving `hello from v1` from /www);
/// dropping it removes the namespace's containers and the images of the test.
pub struct Fixture {
    pub namespace: String,
    pub image: String,
    pub extra_containers: Mutex<Vec<String>>,
    extra_images: Mutex<Vec<String>>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let id = suffix();
        let image = format!("empire-deployer-test:{id}");
        build_image(
            &image,
            &format!(
                "FROM {BASE_IMAGE}\nRUN mkdir -p /www && echo 'hello from v1' > /www/index.html\nCMD httpd -f -p $PORT -h /www\n"
            ),
        );
        Fixture {
            namespace: format!("dtest-{id}"),
            image,
            extra_containers: Mutex::new(Vec::new()),
            extra_images: Mutex::new(Vec::new()),
        }
    }

    /// Builds another image for the test from `dockerfile`; it goes with the fixture.
    pub fn build_image(&self, dockerfile: &str) -> String {
        let tag = format!("empire-deployer-test:{}", suffix());
        build_image(&tag, dockerfile);
        self.extra_images.lock().unwrap().push(tag.clone());
        tag
    }

    /// A release of `app` on the fixture's image.
    pub fn spec(
        &self,
        app: &AppName,
        release: u32,
        config: &[(&str, &str)],
        processes: Vec<ProcessSpec>,
    ) -> DeploySpec {
        spec(app, &self.image, release, config, processes)
    }

    /// v1 of `app`: one web process serving the image's /www (`hello from v1`).
    pub fn www_release(&self, app: &AppName) -> DeploySpec {
        self.spec(app, 1, &[], vec![web("web", Some(SERVE_WWW))])
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

    /// `docker ps -a --no-trunc` of this namespace's containers of `app` (of `process`
    /// only, when given) with `args` added (`-q`, `--format …`).
    pub fn ps(&self, app: &AppName, process: Option<&str>, args: &[&str]) -> String {
        let gateway = format!("label=empire.gateway={}", self.namespace);
        let app = format!("label=empire.app={app}");
        let process = process.map(|p| format!("label=empire.process={p}"));
        let mut all = vec![
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            &gateway,
            "--filter",
            &app,
        ];
        if let Some(process) = &process {
            all.extend(["--filter", process.as_str()]);
        }
        all.extend(args);
        docker(&all)
    }

    /// The containers of `app`, as sorted `process.instance vN` lines.
    pub fn containers(&self, app: &AppName) -> Vec<String> {
        let out = self.ps(
            app,
            None,
            &[
                "--format",
                "{{.Label \"empire.process\"}}.{{.Label \"empire.instance\"}} v{{.Label \"empire.release\"}}",
            ],
        );
        let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
        lines.sort();
        lines
    }

    /// The id of the one container of `process`.
    pub fn container_id(&self, app: &AppName, process: &str) -> String {
        let ids = self.ps(app, Some(process), &["-q"]);
        assert_eq!(ids.lines().count(), 1, "{process}: {ids:?}");
        ids
    }

    /// The ids of the containers of `app`.
    pub fn container_ids(&self, app: &AppName) -> Vec<String> {
        self.ps(app, None, &["-q"])
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
        for image in self.extra_images.lock().unwrap().drain(..) {
            docker(&["rmi", "-f", &image]);
        }
    }
}

/// What most tests start with: a fixture, a gateway with the fixture's options and a
/// unique app name starting with `app`.
pub async fn start(app: &str) -> (Fixture, Gateway, AppName) {
    let fixture = Fixture::new();
    let gateway = Gateway::start(fixture.options()).await;
    let app = fixture.app(app);
    (fixture, gateway, app)
}

// Not every test binary that includes this module uses both.
#[allow(unused_imports)]
pub use empire_deployer::ecs::testing::{Lines, recorder};

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

    /// Deploys `spec` with no progress output; a deploy that fails fails the test.
    pub async fn deploy(&self, spec: &DeploySpec) {
        self.scheduler
            .deploy(spec, &Progress::null())
            .await
            .unwrap_or_else(|err| panic!("deploying v{} of {}: {err}", spec.release, spec.app));
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

/// Requests through the router in a loop until stopped.
pub struct ClientLoop {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<Result<(u16, String), String>>>,
}

impl ClientLoop {
    pub fn start(addr: SocketAddr, app: &AppName) -> ClientLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let stop = stop.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let mut results = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    results.push(get(addr, &app).await);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                results
            })
        };
        ClientLoop { stop, task }
    }

    /// Stops the loop and asserts that every request was answered 200; returns the
    /// bodies in order.
    pub async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        let results = self.task.await.unwrap();
        let failed: Vec<_> = results
            .iter()
            .filter(|r| !matches!(r, Ok((200, _))))
            .collect();
        assert!(
            failed.is_empty(),
            "{} of {} requests failed: {:?}",
            failed.len(),
            results.len(),
            &failed[..failed.len().min(5)]
        );
        assert!(results.len() > 10, "only {} requests", results.len());
        results.into_iter().map(|r| r.unwrap().1).collect()
    }
}

pub fn web(name: &str, command: Option<&str>) -> ProcessSpec {
    ProcessSpec::new(name, command.map(str::to_string), 1)
}

/// A process type that runs `command` `quantity` times.
pub fn process(name: &str, command: &str, quantity: u32) -> ProcessSpec {
    ProcessSpec::new(name, Some(command.into()), quantity)
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
