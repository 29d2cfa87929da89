//! The deploy pipeline against the real SQLite store, with an in-test builder and
//! scheduler standing in for Docker (the Docker-backed ones are tested in their crates
//! and end to end in `tests/`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use empire_core::app::AppName;
use empire_core::build::{BuildRequest, BuiltImage, ImageBuilder};
use empire_core::pipeline::{
    DeployPipeline, DeployRequest, DeploySource, Pipeline, PipelineConfig, PushOrigin,
};
use empire_core::progress::{Progress, ProgressSink};
use empire_core::release::ReleaseStatus;
use empire_core::scheduler::{
    DeploySpec, LogLine, LogOptions, OneOffSpec, ProcessInstance, RestartTarget, RunIo, RunOutcome,
    Scheduler,
};
use empire_core::store::{SqliteStore, Store};
use empire_core::{Error, Result};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Builds instantly, or fails / waits when the commit asks for it.
struct StandInBuilder {
    procfile: Option<String>,
}

#[async_trait]
impl ImageBuilder for StandInBuilder {
    async fn build(&self, request: &BuildRequest, progress: &Progress) -> Result<BuiltImage> {
        progress.detail(format!("building {}", request.commit));
        if request.commit.starts_with("fail") {
            return Err(Error::Build("step 2 exited with 7".into()));
        }
        if request.commit.starts_with("slow") {
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        Ok(BuiltImage {
            image: format!("empire/{}:v{}", request.app, request.version),
            image_id: format!("sha256:{}", request.commit),
            procfile: self.procfile.clone(),
        })
    }
}

/// Records what it was asked to run; fails the next rollout when told to; one-off
/// processes print their command and exit with the code `exit N` names.
#[derive(Default)]
struct RecordingScheduler {
    deployed: Mutex<Vec<DeploySpec>>,
    removed: Mutex<Vec<(String, u32)>>,
    restored: Mutex<Vec<DeploySpec>>,
    ran: Mutex<Vec<OneOffSpec>>,
    fail_next: Mutex<bool>,
}

#[async_trait]
impl Scheduler for RecordingScheduler {
    async fn deploy(&self, spec: &DeploySpec, progress: &Progress) -> Result<()> {
        if std::mem::take(&mut *self.fail_next.lock().unwrap()) {
            progress.detail("web.1 never listened");
            return Err(Error::Deploy("web.1 did not become healthy".into()));
        }
        self.deployed.lock().unwrap().push(spec.clone());
        Ok(())
    }
    async fn restore(&self, current: &[DeploySpec]) -> Result<()> {
        self.restored.lock().unwrap().extend_from_slice(current);
        Ok(())
    }
    async fn remove_release(&self, app: &AppName, release: u32) -> Result<()> {
        self.removed
            .lock()
            .unwrap()
            .push((app.to_string(), release));
        Ok(())
    }
    async fn remove_app(&self, _app: &AppName) -> Result<()> {
        Ok(())
    }
    async fn processes(&self, _app: &AppName) -> Result<Vec<ProcessInstance>> {
        Ok(Vec::new())
    }
    async fn scale(&self, spec: &DeploySpec, _progress: &Progress) -> Result<()> {
        self.deployed.lock().unwrap().push(spec.clone());
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
    async fn run(&self, spec: &OneOffSpec, io: Option<RunIo>) -> Result<RunOutcome> {
        self.ran.lock().unwrap().push(spec.clone());
        let code = spec
            .command
            .rsplit_once("exit ")
            .and_then(|(_, n)| n.trim().parse().ok())
            .unwrap_or(0);
        if let Some(mut io) = io {
            io.output
                .write_all(format!("ran: {}\n", spec.command).as_bytes())
                .await
                .unwrap();
        }
        Ok(RunOutcome::Exited(code))
    }
    async fn logs(&self, _app: &AppName, _options: &LogOptions) -> Result<mpsc::Receiver<LogLine>> {
        Ok(mpsc::channel(1).1)
    }
    async fn set_domains(&self, _app: &AppName, _hostnames: &[String]) -> Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl ProgressSink for Lines {
    fn write_line(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_string());
    }
}

impl Lines {
    fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

struct Fixture {
    store: Arc<dyn Store>,
    scheduler: Arc<RecordingScheduler>,
    pipeline: Arc<DeployPipeline>,
    app: AppName,
}

async fn fixture(procfile: Option<&str>) -> Fixture {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    store.create_user("alice", false).await.unwrap();
    let app = AppName::new("shop").unwrap();
    store.create_app(&app, "alice").await.unwrap();
    let scheduler = Arc::new(RecordingScheduler::default());
    let pipeline = Arc::new(DeployPipeline::new(
        store.clone(),
        Arc::new(StandInBuilder {
            procfile: procfile.map(str::to_string),
        }),
        scheduler.clone(),
        PipelineConfig {
            gateway_id: "gw-test".into(),
            url_template: Some("http://{app}.localhost:8000/".into()),
            ..PipelineConfig::default()
        },
    ));
    Fixture {
        store,
        scheduler,
        pipeline,
        app,
    }
}

fn push(app: &AppName, commit: &str) -> DeployRequest {
    DeployRequest {
        app: app.clone(),
        user: "alice".into(),
        source: DeploySource::Push {
            repo_path: "/nonexistent".into(),
            object_dirs: vec![],
            commit: commit.into(),
            reference: "refs/heads/main".into(),
            origin: PushOrigin::Git,
        },
        no_cache: false,
        message: None,
        turn: None,
    }
}

async fn deploy(f: &Fixture, commit: &str) -> (Result<u32>, Arc<Lines>) {
    let lines = Arc::new(Lines::default());
    let result = f
        .pipeline
        .deploy(
            push(&f.app, commit),
            Progress::new(lines.clone()),
            CancellationToken::new(),
        )
        .await
        .map(|outcome| outcome.release);
    (result, lines)
}

#[tokio::test]
async fn a_deploy_becomes_the_current_release_and_prints_the_url() {
    let f = fixture(Some("web: exec httpd -f -p $PORT\nworker: sleep 100\n")).await;
    let (result, lines) = deploy(&f, "abc1234567").await;
    assert_eq!(result.unwrap(), 1);
    assert!(
        lines.text().contains("http://shop.localhost:8000/"),
        "{}",
        lines.text()
    );
    assert_eq!(f.store.app(&f.app).await.unwrap().current_release, Some(1));
    let release = f.store.release(&f.app, 1).await.unwrap();
    assert_eq!(release.status, ReleaseStatus::Succeeded);
    assert_eq!(release.description, "Deploy abc1234");
    assert_eq!(release.image.as_deref(), Some("empire/shop:v1"));
    let spec = f.scheduler.deployed.lock().unwrap()[0].clone();
    let counts: Vec<_> = spec
        .processes
        .iter()
        .map(|p| (p.name.as_str(), p.quantity))
        .collect();
    assert_eq!(counts, [("web", 1), ("worker", 0)]);
    let log = f.store.deploy_log(&f.app, 1).await.unwrap();
    assert!(log.contains("building abc1234567"), "{log}");
}

#[tokio::test]
async fn without_a_procfile_web_runs_the_image_command() {
    let f = fixture(None).await;
    deploy(&f, "abc").await.0.unwrap();
    let spec = f.scheduler.deployed.lock().unwrap()[0].clone();
    assert_eq!(spec.processes.len(), 1);
    assert_eq!(spec.processes[0].name, "web");
    assert_eq!(spec.processes[0].command, None);
}

#[tokio::test]
async fn a_failed_build_is_a_failed_release_and_changes_nothing() {
    let f = fixture(None).await;
    deploy(&f, "good").await.0.unwrap();
    let (result, _) = deploy(&f, "failing").await;
    assert!(matches!(result, Err(Error::Build(_))), "{result:?}");
    let failed = f.store.release(&f.app, 2).await.unwrap();
    assert_eq!(failed.status, ReleaseStatus::Failed);
    assert!(failed.failure.unwrap().contains("exited with 7"));
    assert_eq!(f.store.app(&f.app).await.unwrap().current_release, Some(1));
}

#[tokio::test]
async fn an_unhealthy_release_is_failed_and_the_old_one_stays_current() {
    let f = fixture(None).await;
    deploy(&f, "good").await.0.unwrap();
    *f.scheduler.fail_next.lock().unwrap() = true;
    let (result, lines) = deploy(&f, "good2").await;
    assert!(matches!(result, Err(Error::Deploy(_))), "{result:?}");
    assert!(lines.text().contains("web.1 never listened"));
    assert_eq!(
        f.store.release(&f.app, 2).await.unwrap().status,
        ReleaseStatus::Failed
    );
    assert_eq!(f.store.app(&f.app).await.unwrap().current_release, Some(1));
}

#[tokio::test]
async fn a_procfile_error_fails_the_release_naming_line_and_column() {
    let f = fixture(Some("web: ok\nbad line\n")).await;
    let (result, _) = deploy(&f, "abc").await;
    let message = result.unwrap_err().to_string();
    assert!(message.contains("line 2, column"), "{message}");
    assert_eq!(
        f.store.release(&f.app, 1).await.unwrap().status,
        ReleaseStatus::Failed
    );
}

#[tokio::test]
async fn deploys_of_one_app_wait_their_turn_in_order() {
    let f = fixture(None).await;
    let first = {
        let pipeline = f.pipeline.clone();
        let app = f.app.clone();
        tokio::spawn(async move {
            pipeline
                .deploy(
                    push(&app, "slow-one"),
                    Progress::null(),
                    CancellationToken::new(),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (second, lines) = deploy(&f, "second").await;
    assert_eq!(first.await.unwrap().unwrap().release, 1);
    assert_eq!(second.unwrap(), 2);
    assert!(
        lines
            .text()
            .contains("-----> Waiting for the deploy of shop (started by alice) to finish"),
        "{}",
        lines.text()
    );
    let images: Vec<_> = f
        .scheduler
        .deployed
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.release)
        .collect();
    assert_eq!(images, [1, 2]);
}

#[tokio::test]
async fn a_pusher_who_leaves_during_the_build_cancels_the_deploy() {
    let f = fixture(None).await;
    let cancel = CancellationToken::new();
    let task = {
        let pipeline = f.pipeline.clone();
        let app = f.app.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            pipeline
                .deploy(push(&app, "slow-build"), Progress::null(), cancel)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    cancel.cancel();
    let result = task.await.unwrap();
    assert!(matches!(result, Err(Error::Cancelled(_))), "{result:?}");
    assert!(f.scheduler.deployed.lock().unwrap().is_empty());
    assert_eq!(
        f.store.release(&f.app, 1).await.unwrap().status,
        ReleaseStatus::Failed
    );
}

#[tokio::test]
async fn recovery_fails_interrupted_deploys_and_restores_current_releases() {
    let f = fixture(None).await;
    deploy(&f, "good").await.0.unwrap();
    // A deploy this gateway was running when it died: v2 stuck in `building`.
    let stuck = f
        .store
        .create_release(
            &f.app,
            empire_core::release::NewRelease {
                user: "alice".into(),
                description: "Deploy stuck".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    f.store
        .set_release_status(&f.app, stuck.version, ReleaseStatus::Building, None)
        .await
        .unwrap();
    let lease = f
        .store
        .try_acquire_lease(
            &f.app,
            "gw-test/dead-deploy",
            "alice",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert!(lease.is_none());

    f.pipeline.recover().await.unwrap();

    let v2 = f.store.release(&f.app, 2).await.unwrap();
    assert_eq!(v2.status, ReleaseStatus::Failed);
    assert!(v2.failure.unwrap().contains("restart"));
    assert_eq!(
        *f.scheduler.removed.lock().unwrap(),
        [("shop".to_string(), 2)]
    );
    let restored: Vec<_> = f
        .scheduler
        .restored
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.release)
        .collect();
    assert_eq!(restored, [1]);
    // The dead deploy's lease is gone: a new deploy does not wait.
    let (result, lines) = deploy(&f, "after").await;
    assert_eq!(result.unwrap(), 3);
    assert!(!lines.text().contains("Waiting"));
}

#[tokio::test]
async fn a_reserved_turn_makes_later_deploys_wait_until_it_finishes() {
    let f = fixture(None).await;
    let waiting = Arc::new(Lines::default());
    let turn = f
        .pipeline
        .reserve(
            &f.app,
            "alice",
            &Progress::null(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    let later = {
        let pipeline = f.pipeline.clone();
        let app = f.app.clone();
        let waiting = waiting.clone();
        tokio::spawn(async move {
            pipeline
                .deploy(
                    push(&app, "later"),
                    Progress::new(waiting),
                    CancellationToken::new(),
                )
                .await
        })
    };
    // The holder of the turn deploys without waiting.
    let mut within = push(&f.app, "within");
    within.turn = Some(turn.owner().to_string());
    let outcome = f
        .pipeline
        .deploy(within, Progress::null(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(outcome.release, 1);
    assert!(!later.is_finished());
    turn.finish().await;
    assert_eq!(later.await.unwrap().unwrap().release, 2);
    assert!(
        waiting
            .text()
            .contains("Waiting for the deploy of shop (started by alice)")
    );
}

#[tokio::test]
async fn a_deploy_naming_a_turn_it_does_not_hold_is_refused() {
    let f = fixture(None).await;
    let mut request = push(&f.app, "abc");
    request.turn = Some("gw-test/not-a-turn".into());
    let result = f
        .pipeline
        .deploy(request, Progress::null(), CancellationToken::new())
        .await;
    assert!(matches!(result, Err(Error::Conflict(_))), "{result:?}");
}

fn deploy_of(f: &Fixture, source: DeploySource) -> DeployRequest {
    DeployRequest {
        app: f.app.clone(),
        user: "alice".into(),
        source,
        no_cache: false,
        message: None,
        turn: None,
    }
}

#[tokio::test]
async fn a_rollback_releases_the_old_image_and_config_as_a_new_release() {
    let f = fixture(None).await;
    let mut config = empire_core::release::ConfigVars::new();
    config.insert("COLOR".into(), "blue".into());
    f.store.set_app_config(&f.app, &config).await.unwrap();
    deploy(&f, "first").await.0.unwrap();
    config.insert("COLOR".into(), "green".into());
    let request = deploy_of(
        &f,
        DeploySource::Config {
            config,
            description: "Set COLOR config var".into(),
        },
    );
    f.pipeline
        .deploy(request, Progress::null(), CancellationToken::new())
        .await
        .unwrap();
    deploy(&f, "second").await.0.unwrap();

    let request = deploy_of(&f, DeploySource::Rollback { version: 1 });
    let outcome = f
        .pipeline
        .deploy(request, Progress::null(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(outcome.release, 4);
    let v4 = f.store.release(&f.app, 4).await.unwrap();
    let v1 = f.store.release(&f.app, 1).await.unwrap();
    assert_eq!(v4.image, v1.image);
    assert_eq!(v4.config.get("COLOR").map(String::as_str), Some("blue"));
    assert_eq!(v4.description, "Rollback to v1");
    assert_eq!(
        f.store
            .app_config(&f.app)
            .await
            .unwrap()
            .get("COLOR")
            .map(String::as_str),
        Some("blue")
    );
}

#[tokio::test]
async fn a_rollback_to_a_failed_release_is_refused() {
    let f = fixture(None).await;
    deploy(&f, "good").await.0.unwrap();
    deploy(&f, "failing").await.0.unwrap_err();
    let request = deploy_of(&f, DeploySource::Rollback { version: 2 });
    let err = f
        .pipeline
        .deploy(request, Progress::null(), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("v2"), "{err}");
}

#[tokio::test]
async fn an_unhealthy_config_change_records_no_release_and_changes_nothing() {
    let f = fixture(None).await;
    deploy(&f, "good").await.0.unwrap();
    *f.scheduler.fail_next.lock().unwrap() = true;
    let mut config = f.store.app_config(&f.app).await.unwrap();
    config.insert("BROKEN".into(), "1".into());
    let request = deploy_of(
        &f,
        DeploySource::Config {
            config,
            description: "Set BROKEN config var".into(),
        },
    );
    f.pipeline
        .deploy(request, Progress::null(), CancellationToken::new())
        .await
        .unwrap_err();
    let versions: Vec<u32> = f
        .store
        .releases(&f.app)
        .await
        .unwrap()
        .iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(versions, [1]);
    assert!(
        !f.store
            .app_config(&f.app)
            .await
            .unwrap()
            .contains_key("BROKEN")
    );
    assert_eq!(f.store.app(&f.app).await.unwrap().current_release, Some(1));
}

#[tokio::test]
async fn the_release_phase_runs_before_the_rollout_and_its_failure_fails_the_deploy() {
    let f = fixture(Some("web: serve\nrelease: migrate\n")).await;
    let (result, lines) = deploy(&f, "good").await;
    result.unwrap();
    assert!(
        lines.text().contains("Running release command: migrate"),
        "{}",
        lines.text()
    );
    assert!(lines.text().contains("ran: migrate"), "{}", lines.text());
    let spec = f.scheduler.deployed.lock().unwrap()[0].clone();
    assert!(
        spec.processes.iter().all(|p| p.name != "release"),
        "{spec:?}"
    );

    let f = fixture(Some("web: serve\nrelease: migrate; exit 4\n")).await;
    let (result, lines) = deploy(&f, "good").await;
    let err = result.unwrap_err();
    assert!(err.to_string().contains("exited with code 4"), "{err}");
    assert!(
        f.scheduler.deployed.lock().unwrap().is_empty(),
        "{}",
        lines.text()
    );
    assert_eq!(
        f.store.release(&f.app, 1).await.unwrap().status,
        ReleaseStatus::Failed
    );
}
