//! The service layer's permission checks, validation and events, on the real SQLite
//! store with the real pipeline; an in-test builder and scheduler stand in for Docker
//! (the Docker-backed ones are tested in their crates and end to end).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use empire_core::app::AppName;
use empire_core::build::{BuildRequest, BuiltImage, ImageBuilder};
use empire_core::formation::{ProcessSize, ScaleRequest};
use empire_core::pipeline::{DeployPipeline, PipelineConfig};
use empire_core::progress::Progress;
use empire_core::scheduler::{
    DeploySpec, LogLine, LogOptions, OneOffSpec, ProcessInstance, RestartTarget, RunIo, RunOutcome,
    Scheduler,
};
use empire_core::service::{AppData, ConfigChanges, Platform};
use empire_core::store::{SqliteStore, Store};
use empire_core::user::User;
use empire_core::{Error, Result};
use tokio::sync::mpsc;

struct StandInBuilder;

#[async_trait]
impl ImageBuilder for StandInBuilder {
    async fn build(&self, request: &BuildRequest, _progress: &Progress) -> Result<BuiltImage> {
        Ok(BuiltImage {
            image: format!("empire/{}:v{}", request.app, request.version),
            image_id: "sha256:1".into(),
            procfile: Some("web: serve\nworker: work\n".into()),
        })
    }
}

#[derive(Default)]
struct StandInScheduler {
    scaled: Mutex<Vec<DeploySpec>>,
    ran: Mutex<Vec<OneOffSpec>>,
    domains: Mutex<Vec<(String, Vec<String>)>>,
}

#[async_trait]
impl Scheduler for StandInScheduler {
    async fn deploy(&self, _spec: &DeploySpec, _progress: &Progress) -> Result<()> {
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
    async fn scale(&self, spec: &DeploySpec, _progress: &Progress) -> Result<()> {
        self.scaled.lock().unwrap().push(spec.clone());
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
    async fn set_domains(&self, app: &AppName, hostnames: &[String]) -> Result<()> {
        self.domains
            .lock()
            .unwrap()
            .push((app.to_string(), hostnames.to_vec()));
        Ok(())
    }
}

#[derive(Default)]
struct RecordingAppData(Mutex<Vec<String>>);

#[async_trait]
impl AppData for RecordingAppData {
    async fn remove(&self, app: &AppName) -> Result<()> {
        self.0.lock().unwrap().push(app.to_string());
        Ok(())
    }
}

struct World {
    platform: Platform,
    store: Arc<dyn Store>,
    scheduler: Arc<StandInScheduler>,
    app_data: Arc<RecordingAppData>,
    admin: User,
    alice: User,
    bob: User,
    app: AppName,
}

async fn world() -> World {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let admin = store.create_user("root", true).await.unwrap();
    let alice = store.create_user("alice", false).await.unwrap();
    let bob = store.create_user("bob", false).await.unwrap();
    let scheduler = Arc::new(StandInScheduler::default());
    let pipeline = Arc::new(DeployPipeline::new(
        store.clone(),
        Arc::new(StandInBuilder),
        scheduler.clone(),
        PipelineConfig::default(),
    ));
    let app_data = Arc::new(RecordingAppData::default());
    let platform = Platform::new(store.clone(), scheduler.clone(), pipeline, app_data.clone());
    let app = platform.create_app(&alice, "shop").await.unwrap().name;
    World {
        platform,
        store,
        scheduler,
        app_data,
        admin,
        alice,
        bob,
        app,
    }
}

async fn deploy_image(w: &World) {
    w.platform
        .deploy_image(&w.alice, &w.app, "empire/busybox", None, Progress::null())
        .await
        .unwrap();
}

#[tokio::test]
async fn collaborators_and_admins_may_act_others_are_forbidden() {
    let w = world().await;
    assert!(w.platform.app(&w.alice, &w.app).await.is_ok());
    assert!(w.platform.app(&w.admin, &w.app).await.is_ok());
    let err = w.platform.app(&w.bob, &w.app).await.unwrap_err();
    assert!(matches!(err, Error::Forbidden(_)), "{err}");
    assert!(err.to_string().contains("bob"), "{err}");
    assert!(w.platform.apps(&w.bob).await.unwrap().is_empty());
    w.platform
        .add_collaborator(&w.alice, &w.app, "bob")
        .await
        .unwrap();
    assert_eq!(w.platform.apps(&w.bob).await.unwrap().len(), 1);
    w.platform
        .remove_collaborator(&w.alice, &w.app, "bob")
        .await
        .unwrap();
    assert!(matches!(
        w.platform.config(&w.bob, &w.app).await,
        Err(Error::Forbidden(_))
    ));
    let unknown = AppName::new("nope").unwrap();
    assert!(matches!(
        w.platform.app(&w.alice, &unknown).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn config_set_before_a_deploy_is_kept_and_after_makes_one_release() {
    let w = world().await;
    let mut changes = ConfigChanges::new();
    changes.insert("FOO".into(), Some("1".into()));
    w.platform
        .set_config(&w.alice, &w.app, &changes, Progress::null())
        .await
        .unwrap();
    deploy_image(&w).await;
    assert_eq!(
        w.store
            .release(&w.app, 1)
            .await
            .unwrap()
            .config
            .get("FOO")
            .map(String::as_str),
        Some("1")
    );

    let mut changes = ConfigChanges::new();
    changes.insert("FOO".into(), None);
    changes.insert("BAR".into(), Some("x y".into()));
    changes.insert("BAZ".into(), Some("z".into()));
    let config = w
        .platform
        .set_config(&w.alice, &w.app, &changes, Progress::null())
        .await
        .unwrap();
    assert_eq!(config.keys().collect::<Vec<_>>(), ["BAR", "BAZ"]);
    let releases = w.store.releases(&w.app).await.unwrap();
    assert_eq!(releases.len(), 2);
    assert_eq!(
        releases[0].description,
        "Set BAR, BAZ config vars; Unset FOO config var"
    );

    let mut bad = ConfigChanges::new();
    bad.insert("GOOD".into(), Some("1".into()));
    bad.insert("NOT-OK".into(), Some("1".into()));
    let err = w
        .platform
        .set_config(&w.alice, &w.app, &bad, Progress::null())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "config key",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        !w.platform
            .config(&w.alice, &w.app)
            .await
            .unwrap()
            .contains_key("GOOD"),
        "nothing half-applied"
    );

    let events = w.platform.events(&w.alice, Some(&w.app), 10).await.unwrap();
    let changed = events
        .iter()
        .find(|e| e.action == "config.changed")
        .unwrap();
    assert!(
        !changed.message.contains("x y"),
        "events never carry values: {}",
        changed.message
    );
}

#[tokio::test]
async fn scale_refuses_unknown_types_and_applies_nothing_then_scales() {
    let w = world().await;
    deploy_image(&w).await; // an image deploy has only web
    let requests = [
        ScaleRequest::parse("web=2").unwrap(),
        ScaleRequest::parse("worker=1").unwrap(),
    ];
    let err = w
        .platform
        .scale(&w.alice, &w.app, &requests, Progress::null())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("worker"), "{err}");
    assert!(w.scheduler.scaled.lock().unwrap().is_empty());

    let requests = [ScaleRequest::parse("web=3:2X").unwrap()];
    let formation = w
        .platform
        .scale(&w.alice, &w.app, &requests, Progress::null())
        .await
        .unwrap();
    assert_eq!(formation.len(), 1);
    assert_eq!(
        (formation[0].quantity, formation[0].size),
        (3, ProcessSize::X2)
    );
    let spec = w.scheduler.scaled.lock().unwrap()[0].clone();
    assert_eq!(spec.processes[0].quantity, 3);
    // Scaling makes no release.
    assert_eq!(w.store.releases(&w.app).await.unwrap().len(), 1);
}

#[tokio::test]
async fn domains_are_validated_routed_and_unique() {
    let w = world().await;
    let err = w
        .platform
        .add_domain(&w.alice, &w.app, "not a host")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "hostname",
                ..
            }
        ),
        "{err}"
    );
    w.platform
        .add_domain(&w.alice, &w.app, "WWW.Shop.test")
        .await
        .unwrap();
    let routed = w.scheduler.domains.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        routed,
        ("shop".to_string(), vec!["www.shop.test".to_string()])
    );
    let other = w.platform.create_app(&w.bob, "other").await.unwrap().name;
    let err = w
        .platform
        .add_domain(&w.bob, &other, "www.shop.test")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    w.platform
        .remove_domain(&w.alice, &w.app, "www.shop.test")
        .await
        .unwrap();
    assert!(
        w.platform
            .domains(&w.alice, &w.app)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn destroy_needs_the_name_and_removes_everything() {
    let w = world().await;
    deploy_image(&w).await;
    let err = w
        .platform
        .destroy_app(&w.alice, &w.app, "wrong")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "confirm",
                ..
            }
        ),
        "{err}"
    );
    assert!(w.store.app(&w.app).await.is_ok());
    w.platform
        .destroy_app(&w.alice, &w.app, "shop")
        .await
        .unwrap();
    assert!(matches!(
        w.store.app(&w.app).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(*w.app_data.0.lock().unwrap(), ["shop"]);
}

#[tokio::test]
async fn tokens_authenticate_their_user_and_nothing_else() {
    let w = world().await;
    let token = w.platform.create_token("alice", "test").await.unwrap();
    assert_eq!(
        w.platform.user_by_token(&token.secret).await.unwrap().name,
        "alice"
    );
    let err = w.platform.user_by_token("emp_wrong").await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)), "{err}");
}

#[tokio::test]
async fn a_one_off_runs_in_the_current_release_at_the_size_asked_for() {
    let w = world().await;
    let err = w
        .platform
        .run(&w.alice, &w.app, "date", false, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "no release yet: {err}");
    deploy_image(&w).await;
    w.platform
        .run(&w.alice, &w.app, "date", false, None, None)
        .await
        .unwrap();
    w.platform
        .run(&w.alice, &w.app, "date", false, Some(ProcessSize::PX), None)
        .await
        .unwrap();
    let ran = w.scheduler.ran.lock().unwrap().clone();
    assert_eq!(ran[0].size, ProcessSize::X1);
    assert_eq!(ran[1].size, ProcessSize::PX);
    assert_eq!(ran[1].image, "empire/busybox");
    let err = w
        .platform
        .run(&w.bob, &w.app, "date", false, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden(_)), "{err}");
}
