//! The extended Procfile's process settings on the docker scheduler, on the real
//! engine: `noservice` types get no container, `cron` types run on their schedule as
//! one-off containers whose output reaches `logs`, one at a time, following the current
//! release, re-armed by a restore and stopped by `remove_app`; `environment` goes over
//! the config.
//!
//! Schedules use `rate(2 seconds)`, the docker scheduler's sub-minute extension, so a
//! test sees several runs in seconds.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::*;
use empire_core::app::AppName;
use empire_core::scheduler::{DeploySpec, LogLine, LogOptions, ProcessSpec, Scheduler};
use tokio::sync::mpsc;

/// A cron process that prints its greeting and the cron marker, then runs for 3 s: a
/// run still going at the next fire (2 s later) makes that fire skip.
fn clock(greeting: &str) -> ProcessSpec {
    let mut clock = process(
        "clock",
        "echo tick-$GREETING-$EMPIRE_CRON-$EMPIRE_RELEASE; sleep 3",
        0,
    );
    clock.cron = Some("rate(2 seconds)".into());
    clock.environment = BTreeMap::from([("GREETING".to_string(), greeting.to_string())]);
    clock
}

fn release(fixture: &Fixture, app: &AppName, version: u32, greeting: &str) -> DeploySpec {
    let mut web = web("web", Some(SERVE_GREETING));
    web.healthcheck = Some("/index.html".into());
    web.environment = BTreeMap::from([("WEB_ONLY".to_string(), "yes".to_string())]);
    // A caller asking for instances of a noservice type is not obeyed.
    let mut console = process("console", "sleep 1000", 1);
    console.noservice = true;
    fixture.spec(
        app,
        version,
        &[("GREETING", "from-config")],
        vec![web, clock(greeting), console],
    )
}

/// The ids of the detached one-off containers of `app` (cron runs among them).
fn runs(fixture: &Fixture, app: &AppName) -> Vec<String> {
    fixture
        .ps(app, Some("run"), &["-q", "--filter", "status=running"])
        .lines()
        .map(str::to_string)
        .collect()
}

async fn wait_for_line(
    rx: &mut mpsc::Receiver<LogLine>,
    seen: &mut Vec<LogLine>,
    wanted: impl Fn(&LogLine) -> bool,
) -> LogLine {
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = rx.recv().await {
            seen.push(line.clone());
            if wanted(&line) {
                return Some(line);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(line)) => line,
        Ok(None) => panic!("the log stream ended; saw {seen:?}"),
        Err(_) => panic!("no such line within 20s; saw {seen:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_types_run_as_one_offs_one_at_a_time_and_noservice_types_never_run() {
    let (fixture, gateway, app) = start("cron").await;
    let (progress, lines) = recorder();
    let v1 = release(&fixture, &app, 1, "v1-env");
    gateway.scheduler.deploy(&v1, &progress).await.unwrap();

    // What the pusher reads.
    assert!(
        lines.contains(
            "clock runs on its schedule \"rate(2 seconds)\" (UTC) as one-off processes; next at "
        ),
        "{:?}",
        lines.all()
    );
    assert!(
        lines.contains("console runs no service (noservice); start it with run"),
        "{:?}",
        lines.all()
    );
    // web passed its HTTP health check and serves; its own environment is over the config.
    let (status, body) = gateway.get(&app).await.unwrap();
    assert_eq!(status, 200);
    assert!(body.starts_with("from-config web.1 v1"), "{body}");
    let web_env = inspect(&fixture.container_id(&app, "web"), "{{json .Config.Env}}");
    assert!(web_env.contains("\"WEB_ONLY=yes\""), "{web_env}");
    // No container of console, now or later.
    assert_eq!(fixture.ps(&app, Some("console"), &["-q"]), "");

    let mut rx = gateway
        .scheduler
        .logs(
            &app,
            &LogOptions {
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    let line = wait_for_line(&mut rx, &mut seen, |l| l.text.starts_with("tick-")).await;
    // The process's environment went over the config; labelled like a one-off.
    assert_eq!(line.text, "tick-v1-env-clock-v1");
    assert!(line.source.starts_with("run."), "{line:?}");

    // Over 7 s (each run lasts 3 s, fires come every 2 s): never two runs at once, and
    // at least two distinct runs.
    let mut distinct = HashSet::new();
    for _ in 0..35 {
        let running = runs(&fixture, &app);
        assert!(running.len() <= 1, "two runs at once: {running:?}");
        distinct.extend(running);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(distinct.len() >= 2, "runs seen: {distinct:?}");
    assert_eq!(fixture.ps(&app, Some("console"), &["-q"]), "");

    // A new release: the timer follows it (its environment and release number).
    let v2 = release(&fixture, &app, 2, "v2-env");
    gateway.deploy(&v2).await;
    let line = wait_for_line(&mut rx, &mut seen, |l| l.text.starts_with("tick-v2-env")).await;
    assert_eq!(line.text, "tick-v2-env-clock-v2");

    // A release without the cron type stops its runs.
    let v3 = fixture.spec(&app, 3, &[], vec![web("web", Some(SERVE_GREETING))]);
    gateway.deploy(&v3).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(runs(&fixture, &app).is_empty(), "runs after v3");
    drop(rx);

    gateway.scheduler.remove_app(&app).await.unwrap();
    assert!(fixture.container_ids(&app).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_rearms_cron_types_and_remove_app_stops_them() {
    let fixture = Fixture::new();
    let app = fixture.app("cronre");
    let v1 = release(&fixture, &app, 1, "restored");
    {
        let first = Gateway::start(fixture.options()).await;
        first.deploy(&v1).await;
        // The first gateway goes away (its timers with it).
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before: HashSet<String> = runs(&fixture, &app).into_iter().collect();

    let second = Gateway::start(fixture.options()).await;
    second
        .scheduler
        .restore(std::slice::from_ref(&v1))
        .await
        .unwrap();
    // web was adopted; console still has no container.
    assert_eq!(fixture.ps(&app, Some("web"), &["-q"]).lines().count(), 1);
    assert_eq!(fixture.ps(&app, Some("console"), &["-q"]), "");
    // A new run starts within a few seconds.
    let mut started = false;
    for _ in 0..50 {
        if runs(&fixture, &app).iter().any(|id| !before.contains(id)) {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(started, "no cron run after the restore");

    second.scheduler.remove_app(&app).await.unwrap();
    assert!(fixture.container_ids(&app).is_empty());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        fixture.container_ids(&app).is_empty(),
        "a cron run started after remove_app"
    );
}
