//! The docker scheduler against the real engine, with the router in front.
//!
//! Every test uses its own namespace, app names and image tag, and removes what it
//! created even when it fails.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use empire_core::Error;
use empire_core::app::AppName;
use empire_core::progress::{Progress, ProgressSink};
use empire_core::scheduler::{DeploySpec, ProcessSpec, Scheduler};
use empire_deployer::{DockerScheduler, DockerSchedulerOptions, Router};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const BASE_IMAGE: &str = "empire/busybox:latest";

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A namespace and a test image built for it; dropping it removes both's leftovers.
struct Fixture {
    namespace: String,
    image: String,
    extra_containers: Mutex<Vec<String>>,
}

impl Fixture {
    fn new() -> Fixture {
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

    fn app(&self, name: &str) -> AppName {
        AppName::new(&format!("{name}-{}", suffix())).unwrap()
    }

    fn options(&self) -> DockerSchedulerOptions {
        DockerSchedulerOptions {
            namespace: self.namespace.clone(),
            boot_timeout: Duration::from_secs(20),
            worker_settle: Duration::from_secs(1),
            stop_grace: Duration::from_secs(3),
            ..Default::default()
        }
    }

    /// The containers of this namespace, as `app process instance release` lines.
    fn containers(&self, app: &AppName) -> Vec<String> {
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
    fn container_id(&self, app: &AppName, process: &str) -> String {
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

    fn container_ids(&self, app: &AppName) -> Vec<String> {
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
struct Lines(Mutex<Vec<String>>);

impl ProgressSink for Lines {
    fn write_line(&self, line: &str) {
        eprintln!("{line}");
        self.0.lock().unwrap().push(line.to_string());
    }
}

impl Lines {
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    fn contains(&self, needle: &str) -> bool {
        self.all().iter().any(|l| l.contains(needle))
    }
}

fn recorder() -> (Progress, Arc<Lines>) {
    let lines = Arc::new(Lines::default());
    (Progress::new(lines.clone()), lines)
}

/// A router on a fresh port and a scheduler in front of it.
struct Gateway {
    scheduler: DockerScheduler,
    router: Arc<Router>,
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Gateway {
    async fn start(options: DockerSchedulerOptions) -> Gateway {
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
    async fn get(&self, app: &AppName) -> Result<(u16, String), String> {
        get(self.addr, app).await
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn get(router: SocketAddr, app: &AppName) -> Result<(u16, String), String> {
    let attempt = async {
        let stream = TcpStream::connect(router)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let request = Request::get("/")
            .header("host", format!("{app}.localhost"))
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

fn web(name: &str, command: Option<&str>) -> ProcessSpec {
    ProcessSpec {
        name: name.into(),
        command: command.map(str::to_string),
        quantity: 1,
        healthcheck: None,
    }
}

fn spec(
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

const SERVE_WWW: &str = "httpd -f -p $PORT -h /www";
const SERVE_GREETING: &str = "mkdir -p /tmp/www && echo \"$GREETING $DYNO $EMPIRE_RELEASE $EMPIRE_APPNAME\" > /tmp/www/index.html && exec httpd -f -p $PORT -h /tmp/www";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_and_rolls_to_a_new_release_without_failed_requests() {
    let fixture = Fixture::new();
    let gateway = Gateway::start(fixture.options()).await;
    let app = fixture.app("roll");

    let v1 = spec(
        &app,
        &fixture.image,
        1,
        &[],
        vec![web("web", Some(SERVE_WWW))],
    );
    let (progress1, lines1) = recorder();
    gateway.scheduler.deploy(&v1, &progress1).await.unwrap();
    assert_eq!(lines1.all()[0], "-----> Starting processes for v1");
    assert!(
        lines1.contains("       web.1 started"),
        "{:?}",
        lines1.all()
    );
    assert!(
        lines1.contains("       web.1 is up ("),
        "{:?}",
        lines1.all()
    );
    let routed = format!(
        "       Routed http://{app}.localhost:{}/ to v1",
        gateway.addr.port()
    );
    assert!(
        lines1.all().contains(&routed),
        "{routed:?} in {:?}",
        lines1.all()
    );
    assert_eq!(
        gateway.get(&app).await.unwrap(),
        (200, "hello from v1\n".to_string())
    );

    let processes = gateway.scheduler.processes(&app).await.unwrap();
    assert_eq!(processes.len(), 1, "{processes:?}");
    assert_eq!(processes[0].name, "web.1");
    assert_eq!(processes[0].process, "web");
    assert_eq!(processes[0].state, "up");
    assert_eq!(processes[0].release, 1);
    assert!(processes[0].started_at.is_some());
    assert_eq!(gateway.scheduler.current_release(&app), Some(1));

    // Hit the router continuously while v2 rolls out.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        let addr = gateway.addr;
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
    tokio::time::sleep(Duration::from_millis(300)).await;

    let v2 = spec(
        &app,
        &fixture.image,
        2,
        &[("GREETING", "hello from v2")],
        vec![web("web", Some(SERVE_GREETING))],
    );
    let (progress2, lines2) = recorder();
    gateway.scheduler.deploy(&v2, &progress2).await.unwrap();
    let expected_v2 = format!("hello from v2 web.1 v2 {app}\n");
    // Requests sent after the deploy returned all reach v2.
    for _ in 0..5 {
        assert_eq!(gateway.get(&app).await.unwrap(), (200, expected_v2.clone()));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let results = client.await.unwrap();

    let failed: Vec<_> = results
        .iter()
        .filter(|r| !matches!(r, Ok((200, _))))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the rollout: {:?}",
        failed.len(),
        results.len(),
        &failed[..failed.len().min(5)]
    );
    let bodies: Vec<&str> = results
        .iter()
        .map(|r| r.as_ref().unwrap().1.as_str())
        .collect();
    assert!(bodies.contains(&"hello from v1\n"), "never saw v1");
    assert_eq!(bodies.last().copied(), Some(expected_v2.as_str()));
    let switched = bodies.iter().position(|b| *b == expected_v2).unwrap();
    assert!(
        bodies[switched..].iter().all(|b| *b == expected_v2),
        "the body went back to v1 after switching"
    );

    assert!(
        lines2.contains(&format!(
            "Routed http://{app}.localhost:{}/ to v2; stopped v1",
            gateway.addr.port()
        )),
        "{:?}",
        lines2.all()
    );
    assert_eq!(fixture.containers(&app), vec!["web.1 v2".to_string()]);
    let processes = gateway.scheduler.processes(&app).await.unwrap();
    assert_eq!(processes.len(), 1, "{processes:?}");
    assert_eq!(
        (processes[0].name.as_str(), processes[0].release),
        ("web.1", 2)
    );

    gateway.scheduler.remove_app(&app).await.unwrap();
    assert!(fixture.containers(&app).is_empty());
    assert!(gateway.scheduler.processes(&app).await.unwrap().is_empty());
    assert_eq!(gateway.get(&app).await.unwrap().0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_never_listens_fails_and_the_previous_keeps_serving() {
    let fixture = Fixture::new();
    let gateway = Gateway::start(DockerSchedulerOptions {
        boot_timeout: Duration::from_secs(4),
        ..fixture.options()
    })
    .await;
    let app = fixture.app("deaf");

    let v1 = spec(
        &app,
        &fixture.image,
        1,
        &[],
        vec![web("web", Some(SERVE_WWW))],
    );
    gateway
        .scheduler
        .deploy(&v1, &Progress::null())
        .await
        .unwrap();

    let v2 = spec(
        &app,
        &fixture.image,
        2,
        &[],
        vec![web("web", Some("echo booting-failed-marker; sleep 1000"))],
    );
    let (progress, lines) = recorder();
    let err = gateway.scheduler.deploy(&v2, &progress).await.unwrap_err();
    let Error::Deploy(message) = &err else {
        panic!("expected a deploy error, got {err:?}");
    };
    assert_eq!(
        message,
        "web.1 did not accept connections on $PORT within 4s"
    );
    assert!(
        lines.contains(
            "       web.1 did not accept connections on $PORT within 4s; its last log lines:"
        ),
        "{:?}",
        lines.all()
    );
    assert!(
        lines.contains("         booting-failed-marker"),
        "{:?}",
        lines.all()
    );
    assert!(
        lines.contains("Removed the processes of v2; v1 keeps serving"),
        "{:?}",
        lines.all()
    );
    assert!(!lines.contains("is up"), "{:?}", lines.all());

    assert_eq!(
        gateway.get(&app).await.unwrap(),
        (200, "hello from v1\n".to_string())
    );
    assert_eq!(fixture.containers(&app), vec!["web.1 v1".to_string()]);
    assert_eq!(gateway.scheduler.current_release(&app), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_release_reports_its_crashes_and_fails() {
    let fixture = Fixture::new();
    let gateway = Gateway::start(DockerSchedulerOptions {
        boot_timeout: Duration::from_secs(4),
        ..fixture.options()
    })
    .await;
    let app = fixture.app("crash");

    let v1 = spec(
        &app,
        &fixture.image,
        1,
        &[],
        vec![web("web", Some("echo crash-marker; exit 2"))],
    );
    let (progress, lines) = recorder();
    let err = gateway.scheduler.deploy(&v1, &progress).await.unwrap_err();
    let Error::Deploy(message) = &err else {
        panic!("expected a deploy error, got {err:?}");
    };
    assert!(
        message.starts_with("web.1 crashed ") && message.contains("(last exit code 2)"),
        "{message}"
    );
    assert!(
        message.ends_with("did not accept connections on $PORT within 4s"),
        "{message}"
    );
    assert!(
        lines.contains("       web.1 crashed (exit code 2), restarting"),
        "{:?}",
        lines.all()
    );
    assert!(lines.contains("  crash-marker"), "{:?}", lines.all());
    assert!(
        lines
            .all()
            .last()
            .unwrap()
            .ends_with("Removed the processes of v1"),
        "{:?}",
        lines.all()
    );
    assert!(fixture.containers(&app).is_empty());
    assert_eq!(gateway.get(&app).await.unwrap().0, 404);
    assert!(gateway.scheduler.processes(&app).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_fails_at_once() {
    let fixture = Fixture::new();
    let gateway = Gateway::start(fixture.options()).await;
    let app = fixture.app("noimage");
    let missing = format!("empire-deployer-missing:{}", suffix());
    let v1 = spec(&app, &missing, 1, &[], vec![web("web", Some(SERVE_WWW))]);
    let (progress, lines) = recorder();
    let started = std::time::Instant::now();
    let err = gateway.scheduler.deploy(&v1, &progress).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        err.to_string(),
        format!("deploy failed: image {missing} was not found on the docker engine")
    );
    assert!(
        lines.contains("web.1 could not be created: image"),
        "{:?}",
        lines.all()
    );
    assert!(fixture.containers(&app).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_workers_and_keeps_the_image_command_when_none_is_given() {
    let fixture = Fixture::new();
    let gateway = Gateway::start(fixture.options()).await;
    let app = fixture.app("workers");
    // The web process has no command: the image's own CMD serves /www on $PORT.
    let v1 = spec(
        &app,
        &fixture.image,
        1,
        &[],
        vec![
            ProcessSpec {
                name: "worker".into(),
                command: Some("sleep 1000".into()),
                quantity: 2,
                healthcheck: None,
            },
            ProcessSpec {
                healthcheck: Some("/index.html".into()),
                ..web("web", None)
            },
        ],
    );
    let (progress, lines) = recorder();
    gateway.scheduler.deploy(&v1, &progress).await.unwrap();
    let all = lines.all();
    // Web starts first.
    assert_eq!(all[1], "       web.1 started", "{all:?}");
    assert!(lines.contains("       worker.1 is up ("), "{all:?}");
    assert!(lines.contains("       worker.2 is up ("), "{all:?}");
    assert_eq!(
        gateway.get(&app).await.unwrap(),
        (200, "hello from v1\n".to_string())
    );
    let processes = gateway.scheduler.processes(&app).await.unwrap();
    let names: Vec<(&str, &str)> = processes
        .iter()
        .map(|p| (p.name.as_str(), p.state.as_str()))
        .collect();
    assert_eq!(
        names,
        [("web.1", "up"), ("worker.1", "up"), ("worker.2", "up")]
    );

    // Scaling is a redeploy of the same release: fresh containers replace the old.
    let before = fixture.container_ids(&app);
    let scaled = DeploySpec {
        processes: vec![
            ProcessSpec {
                name: "worker".into(),
                command: Some("sleep 1000".into()),
                quantity: 1,
                healthcheck: None,
            },
            web("web", None),
        ],
        ..v1.clone()
    };
    gateway
        .scheduler
        .deploy(&scaled, &Progress::null())
        .await
        .unwrap();
    assert_eq!(
        fixture.containers(&app),
        vec!["web.1 v1".to_string(), "worker.1 v1".to_string()]
    );
    let after = fixture.container_ids(&app);
    assert!(after.iter().all(|id| !before.contains(id)));

    // A worker that keeps crashing fails the deploy, even with a healthy web.
    let (crash_progress, crash_lines) = recorder();
    let broken = DeploySpec {
        release: 2,
        processes: vec![
            ProcessSpec {
                name: "worker".into(),
                command: Some("echo worker-crash; exit 3".into()),
                quantity: 1,
                healthcheck: None,
            },
            web("web", None),
        ],
        ..v1.clone()
    };
    let err = gateway
        .scheduler
        .deploy(&broken, &crash_progress)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("worker.1 crashed"),
        "{err}: {:?}",
        crash_lines.all()
    );
    assert!(
        crash_lines.contains("  worker-crash"),
        "{:?}",
        crash_lines.all()
    );
    assert_eq!(fixture.container_ids(&app), after);
    assert_eq!(
        gateway.get(&app).await.unwrap(),
        (200, "hello from v1\n".to_string())
    );

    gateway.scheduler.remove_app(&app).await.unwrap();
    assert!(fixture.containers(&app).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_container_leaves_the_pool_until_it_is_back() {
    let fixture = Fixture::new();
    // No periodic refresh in this test: Docker's events alone must drive the routes.
    let gateway = Gateway::start(DockerSchedulerOptions {
        refresh_interval: Duration::from_secs(600),
        ..fixture.options()
    })
    .await;
    let app = fixture.app("heal");
    let v1 = spec(
        &app,
        &fixture.image,
        1,
        &[],
        vec![web("web", Some(SERVE_WWW))],
    );
    gateway
        .scheduler
        .deploy(&v1, &Progress::null())
        .await
        .unwrap();
    assert_eq!(gateway.get(&app).await.unwrap().0, 200);
    let before = gateway.router.backends(app.as_str()).unwrap();
    assert_eq!(before.len(), 1);

    // Kill the server inside (a crash; `docker kill` would count as a manual stop):
    // Docker restarts the container by its restart policy.
    let id = &fixture.container_ids(&app)[0];
    docker(&["exec", id, "sh", "-c", "kill -9 $(pidof httpd)"]);
    let mut saw_gap = false;
    let mut back = false;
    for _ in 0..750 {
        let routed = gateway.router.backends(app.as_str()).unwrap_or_default();
        if routed.is_empty() {
            saw_gap = true;
        } else if saw_gap && gateway.get(&app).await.map(|r| r.0) == Ok(200) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        saw_gap,
        "the dead container was never taken out of the pool"
    );
    assert!(back, "the restarted container was never routed again");
    let processes = gateway.scheduler.processes(&app).await.unwrap();
    assert_eq!(processes[0].state, "up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_adopts_recreates_and_removes() {
    let fixture = Fixture::new();
    let kept = fixture.app("kept");
    let deleted = fixture.app("deleted");
    let worker = ProcessSpec {
        name: "worker".into(),
        command: Some("sleep 1000".into()),
        quantity: 1,
        healthcheck: None,
    };
    let v1 = spec(
        &kept,
        &fixture.image,
        1,
        &[],
        vec![web("web", Some(SERVE_WWW)), worker.clone()],
    );
    {
        let first = Gateway::start(fixture.options()).await;
        first
            .scheduler
            .deploy(&v1, &Progress::null())
            .await
            .unwrap();
        let other = spec(
            &deleted,
            &fixture.image,
            3,
            &[],
            vec![web("web", Some(SERVE_WWW))],
        );
        first
            .scheduler
            .deploy(&other, &Progress::null())
            .await
            .unwrap();
        assert_eq!(first.get(&kept).await.unwrap().0, 200);
        // The first gateway goes away; its containers keep running.
    }
    let web1 = fixture.container_id(&kept, "web");
    let worker1 = fixture.container_id(&kept, "worker");
    // The worker was stopped while no gateway ran.
    docker(&["stop", "-t", "0", &worker1]);
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Status}}", &worker1]),
        "exited"
    );

    // A container of another gateway on the same engine must survive the restore.
    let foreign = docker(&[
        "create",
        "--label",
        &format!("empire.gateway={}-other", fixture.namespace),
        "--label",
        &format!("empire.app={deleted}"),
        BASE_IMAGE,
        "true",
    ]);
    assert!(!foreign.is_empty());
    fixture
        .extra_containers
        .lock()
        .unwrap()
        .push(foreign.clone());

    let second = Gateway::start(fixture.options()).await;
    assert_eq!(second.get(&kept).await.unwrap().0, 404);
    // The current release now wants two web processes: web.1 is adopted, web.2 created.
    let wanted = DeploySpec {
        processes: vec![
            ProcessSpec {
                quantity: 2,
                ..web("web", Some(SERVE_WWW))
            },
            worker,
        ],
        ..v1.clone()
    };
    second
        .scheduler
        .restore(std::slice::from_ref(&wanted))
        .await
        .unwrap();

    assert_eq!(
        second.get(&kept).await.unwrap(),
        (200, "hello from v1\n".to_string())
    );
    assert_eq!(
        fixture.containers(&kept),
        vec![
            "web.1 v1".to_string(),
            "web.2 v1".to_string(),
            "worker.1 v1".to_string()
        ]
    );
    let ids = fixture.container_ids(&kept);
    assert!(ids.contains(&web1), "web.1 was recreated, not adopted");
    assert!(
        ids.contains(&worker1),
        "worker.1 was recreated, not adopted"
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Status}}", &worker1]),
        "running",
        "the stopped worker was not started again"
    );
    assert_eq!(second.router.backends(kept.as_str()).unwrap().len(), 2);
    let processes = second.scheduler.processes(&kept).await.unwrap();
    let states: Vec<(&str, &str, u32)> = processes
        .iter()
        .map(|p| (p.name.as_str(), p.state.as_str(), p.release))
        .collect();
    assert_eq!(
        states,
        [
            ("web.1", "up", 1),
            ("web.2", "up", 1),
            ("worker.1", "up", 1)
        ]
    );
    assert_eq!(second.scheduler.current_release(&kept), Some(1));

    assert!(
        fixture.containers(&deleted).is_empty(),
        "containers of an app with no current release are removed"
    );
    assert_eq!(second.get(&deleted).await.unwrap().0, 404);
    assert_eq!(
        docker(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("id={foreign}")
        ]),
        foreign,
        "restore removed a container of another namespace"
    );

    second.scheduler.remove_app(&kept).await.unwrap();
    assert!(fixture.containers(&kept).is_empty());
}
