//! The extended Procfile from a push to what the scheduler is asked to run: the
//! pipeline against the real SQLite store, with an in-test builder and scheduler, and
//! `deploy_spec` under a formation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use empire_core::app::AppName;
use empire_core::build::{BuildRequest, BuiltImage, ImageBuilder};
use empire_core::formation::ScaleRequest;
use empire_core::formation::{ProcessFormation, ProcessSize};
use empire_core::pipeline::{
    DeployPipeline, DeployRequest, DeploySource, Pipeline, PipelineConfig, PushOrigin, deploy_spec,
};
use empire_core::progress::{Progress, ProgressSink};
use empire_core::release::ReleaseStatus;
use empire_core::scheduler::{
    DeploySpec, LogLine, LogOptions, OneOffSpec, PortMapping, ProcessInstance, ProcessSpec,
    RestartTarget, RunIo, RunOutcome, Scheduler,
};
use empire_core::service::{AppData, Platform};
use empire_core::store::{SqliteStore, Store};
use empire_core::user::User;
use empire_core::{Error, Result};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const PROCFILE: &str = "\
web:
  command: exec httpd -f -p $PORT
  healthcheck: /health
  size: 2X
  ports:
    - \"80:5000\"
    - \"443:5000/https\"
  environment:
    GREETING: hello
clock:
  command: echo tick
  cron: \"*/5 * * * *\"
  environment:
    GREETING: from the clock
console:
  command: sh
  noservice: true
worker: sleep 1000
release:
  command: ./migrate
";

struct Builder;

#[async_trait]
impl ImageBuilder for Builder {
    async fn build(&self, request: &BuildRequest, _progress: &Progress) -> Result<BuiltImage> {
        Ok(BuiltImage {
            image: format!("empire/{}:v{}", request.app, request.version),
            image_id: format!("sha256:{}", request.commit),
            procfile: Some(PROCFILE.to_string()),
        })
    }
}

#[derive(Default)]
struct Recorder {
    deployed: Mutex<Vec<DeploySpec>>,
    ran: Mutex<Vec<OneOffSpec>>,
}

#[async_trait]
impl Scheduler for Recorder {
    async fn deploy(&self, spec: &DeploySpec, _progress: &Progress) -> Result<()> {
        self.deployed.lock().unwrap().push(spec.clone());
        Ok(())
    }
    async fn restore(&self, _current: &[DeploySpec]) -> Result<()> {
        Ok(())
    }
    async fn remove_release(&self, _app: &AppName, _release: u32) -> Result<()> {
        Ok(())
    }
    async fn remove_app(&self, _app: &AppName) -> Result<()> {
        Ok(())
    }
    async fn processes(&self, _app: &AppName) -> Result<Vec<ProcessInstance>> {
        Ok(Vec::new())
    }
    async fn scale(&self, _spec: &DeploySpec, _progress: &Progress) -> Result<()> {
        Ok(())
    }
    async fn restart(
        &self,
        _spec: &DeploySpec,
        _target: &RestartTarget,
        _progress: &Progress,
    ) -> Result<()> {
        Ok(())
    }
    async fn run(&self, spec: &OneOffSpec, _io: Option<RunIo>) -> Result<RunOutcome> {
        self.ran.lock().unwrap().push(spec.clone());
        Ok(RunOutcome::Exited(0))
    }
    async fn logs(&self, _app: &AppName, _options: &LogOptions) -> Result<mpsc::Receiver<LogLine>> {
        Ok(mpsc::channel(1).1)
    }
    async fn set_domains(&self, _app: &AppName, _hostnames: &[String]) -> Result<()> {
        Ok(())
    }
}

struct Nowhere;

impl ProgressSink for Nowhere {
    fn write_line(&self, _line: &str) {}
}

fn process<'a>(spec: &'a DeploySpec, name: &str) -> &'a ProcessSpec {
    spec.processes
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no {name} in {spec:?}"))
}

#[tokio::test]
async fn a_push_with_an_extended_procfile_fills_every_process_setting() {
    let Pushed {
        store,
        scheduler,
        app,
        ..
    } = pushed().await;

    // The release keeps name → command, as the API shows it.
    let release = store.release(&app, 1).await.unwrap();
    assert_eq!(release.status, ReleaseStatus::Succeeded);
    assert_eq!(
        release.process_types,
        BTreeMap::from(
            [
                ("clock", "echo tick"),
                ("console", "sh"),
                ("release", "./migrate"),
                ("web", "exec httpd -f -p $PORT"),
                ("worker", "sleep 1000"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        )
    );
    assert_eq!(release.procfile.as_deref(), Some(PROCFILE));
    // The release phase ran the release command.
    assert_eq!(scheduler.ran.lock().unwrap()[0].command, "./migrate");

    let spec = scheduler.deployed.lock().unwrap()[0].clone();
    let names: Vec<&str> = spec.processes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["clock", "console", "web", "worker"]);

    let web = process(&spec, "web");
    assert_eq!(web.quantity, 1);
    assert_eq!(web.healthcheck.as_deref(), Some("/health"));
    assert_eq!(web.size, ProcessSize::X2);
    assert_eq!(
        web.ports,
        [
            PortMapping {
                listener: 80,
                container: 5000,
                protocol: "http".into()
            },
            PortMapping {
                listener: 443,
                container: 5000,
                protocol: "https".into()
            },
        ]
    );
    assert_eq!(
        web.environment.get("GREETING").map(String::as_str),
        Some("hello")
    );
    assert!(web.is_service());

    let clock = process(&spec, "clock");
    assert_eq!(clock.cron.as_deref(), Some("*/5 * * * *"));
    assert_eq!((clock.quantity, clock.is_service()), (0, false));
    assert_eq!(
        clock.environment.get("GREETING").map(String::as_str),
        Some("from the clock")
    );
    assert_eq!(clock.command.as_deref(), Some("echo tick"));

    let console = process(&spec, "console");
    assert!(console.noservice);
    assert_eq!((console.quantity, console.is_service()), (0, false));

    let worker = process(&spec, "worker");
    assert_eq!(
        worker,
        &ProcessSpec::new("worker", Some("sleep 1000".into()), 0)
    );
}

fn release_with(procfile: Option<&str>, types: &[(&str, &str)]) -> empire_core::release::Release {
    empire_core::release::Release {
        app: AppName::new("shop").unwrap(),
        version: 3,
        status: ReleaseStatus::Succeeded,
        image: Some("empire/shop:v3".into()),
        image_id: None,
        process_types: types
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        procfile: procfile.map(str::to_string),
        config: BTreeMap::from([("GREETING".to_string(), "config".to_string())]),
        commit: None,
        user: "alice".into(),
        description: "Deploy".into(),
        failure: None,
        created_at: time::OffsetDateTime::UNIX_EPOCH,
    }
}

fn formation(process: &str, quantity: u32, size: ProcessSize) -> ProcessFormation {
    ProcessFormation {
        process: process.into(),
        quantity,
        size,
    }
}

#[test]
fn a_scaled_size_wins_over_the_procfile_size_and_cron_types_never_run_as_services() {
    let procfile = "web:\n  command: ./web\n  size: 2X\nclock:\n  command: ./tick\n  cron: rate(5 minutes)\n  size: PX\n";
    let release = release_with(Some(procfile), &[("web", "./web"), ("clock", "./tick")]);

    // Not scaled: the Procfile's size, web at one instance.
    let spec = deploy_spec(&release, &[]).unwrap();
    assert_eq!(
        (process(&spec, "web").quantity, process(&spec, "web").size),
        (1, ProcessSize::X2)
    );
    assert_eq!(process(&spec, "clock").size, ProcessSize::PX);

    // Scaled: the formation's count and size, also back to 1X.
    let scaled = [
        formation("web", 3, ProcessSize::X1),
        formation("clock", 2, ProcessSize::X2),
    ];
    let spec = deploy_spec(&release, &scaled).unwrap();
    assert_eq!(
        (process(&spec, "web").quantity, process(&spec, "web").size),
        (3, ProcessSize::X1)
    );
    // A cron process runs no service, whatever the formation says; its one-offs run at
    // the formation's size.
    assert_eq!(
        (
            process(&spec, "clock").quantity,
            process(&spec, "clock").size
        ),
        (0, ProcessSize::X2)
    );
    // The config stays the release's: per-process environment is on the process.
    assert_eq!(
        spec.config.get("GREETING").map(String::as_str),
        Some("config")
    );
}

#[test]
fn a_release_without_a_procfile_or_with_a_standard_one_gets_the_defaults() {
    for procfile in [None, Some("web: ./web\nworker: ./work\n")] {
        let release = release_with(procfile, &[("web", "./web"), ("worker", "./work")]);
        let spec = deploy_spec(&release, &[]).unwrap();
        assert_eq!(
            spec.processes,
            [
                ProcessSpec::new("web", Some("./web".into()), 1),
                ProcessSpec::new("worker", Some("./work".into()), 0),
            ]
        );
    }
}

#[test]
fn a_stored_procfile_that_no_longer_parses_is_an_error_naming_the_release() {
    let release = release_with(Some("web ./web\n"), &[("web", "./web")]);
    let err = deploy_spec(&release, &[]).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    assert!(
        err.to_string().contains("release v3: Procfile line 1"),
        "{err}"
    );
}

struct NoAppData;

#[async_trait]
impl AppData for NoAppData {
    async fn remove(&self, _app: &AppName) -> Result<()> {
        Ok(())
    }
}

/// A platform over an app whose one release was pushed with [`PROCFILE`].
struct Pushed {
    platform: Platform,
    store: Arc<dyn Store>,
    scheduler: Arc<Recorder>,
    alice: User,
    app: AppName,
}

async fn pushed() -> Pushed {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let alice = store.create_user("alice", false).await.unwrap();
    let app = AppName::new("shop").unwrap();
    store.create_app(&app, "alice").await.unwrap();
    let scheduler = Arc::new(Recorder::default());
    let pipeline = Arc::new(DeployPipeline::new(
        store.clone(),
        Arc::new(Builder),
        scheduler.clone(),
        PipelineConfig {
            gateway_id: "gw-test".into(),
            ..PipelineConfig::default()
        },
    ));
    let request = DeployRequest {
        app: app.clone(),
        user: "alice".into(),
        source: DeploySource::Push {
            repo_path: "/nonexistent".into(),
            object_dirs: vec![],
            commit: "abc1234".into(),
            reference: "refs/heads/main".into(),
            origin: PushOrigin::Git,
        },
        no_cache: false,
        message: None,
        turn: None,
    };
    pipeline
        .deploy(
            request,
            Progress::new(Arc::new(Nowhere)),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let platform = Platform::new(
        store.clone(),
        scheduler.clone(),
        pipeline,
        Arc::new(NoAppData),
    );
    Pushed {
        platform,
        store,
        scheduler,
        alice,
        app,
    }
}

#[tokio::test]
async fn cron_and_noservice_types_refuse_a_count_but_take_a_size() {
    let Pushed {
        platform,
        store,
        alice,
        app,
        ..
    } = pushed().await;
    let scale = |text: &str| {
        let requests = [ScaleRequest::parse(text).unwrap()];
        let platform = &platform;
        let (alice, app) = (&alice, &app);
        async move {
            platform
                .scale(alice, app, &requests, Progress::null())
                .await
        }
    };

    let err = scale("clock=1").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid scale: clock runs on its schedule \"*/5 * * * *\" as one-off processes; it cannot be scaled"
    );
    let err = scale("console=2").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("console is a noservice process type: start it with run console"),
        "{err}"
    );
    assert!(
        store.formation(&app).await.unwrap().is_empty(),
        "nothing applied"
    );

    let formation = scale("clock=0:2X").await.unwrap();
    assert_eq!(
        (formation[0].quantity, formation[0].size),
        (0, ProcessSize::X2)
    );
    scale("worker=2").await.unwrap();
}

#[tokio::test]
async fn running_a_process_type_runs_its_command_with_its_environment() {
    let w = pushed().await;
    let run = |command: &'static str| w.platform.run(&w.alice, &w.app, command, false, None, None);
    run("clock --once").await.unwrap();
    run("console").await.unwrap();
    run("echo clock").await.unwrap();
    let ran = w.scheduler.ran.lock().unwrap().clone();
    // The first one-off was the release phase of the push.
    let commands: Vec<&str> = ran[1..].iter().map(|r| r.command.as_str()).collect();
    assert_eq!(commands, ["echo tick --once", "sh", "echo clock"]);
    assert_eq!(
        ran[1].config.get("GREETING").map(String::as_str),
        Some("from the clock")
    );
    assert_eq!(ran[3].config.get("GREETING"), None);
}
