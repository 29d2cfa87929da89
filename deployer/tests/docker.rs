//! The docker scheduler against the real engine, with the router in front.
//!
//! Every test uses its own namespace, app names and image tag, and removes what it
//! created even when it fails.

mod common;

use std::time::Duration;

use common::*;
use empire_core::Error;
use empire_core::scheduler::{DeploySpec, ProcessSpec, Scheduler};
use empire_deployer::DockerSchedulerOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_and_rolls_to_a_new_release_without_failed_requests() {
    let (fixture, gateway, app) = start("roll").await;

    let v1 = fixture.www_release(&app);
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
    let client = ClientLoop::start(gateway.addr, &app);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let v2 = fixture.spec(
        &app,
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
    // Every request during the rollout was answered.
    let bodies = client.finish().await;
    assert!(
        bodies.iter().any(|b| b == "hello from v1\n"),
        "never saw v1"
    );
    assert_eq!(bodies.last(), Some(&expected_v2));
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

    let v1 = fixture.www_release(&app);
    gateway.deploy(&v1).await;

    let v2 = fixture.spec(
        &app,
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

    let v1 = fixture.spec(
        &app,
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
    let (fixture, gateway, app) = start("noimage").await;
    let missing = format!("empire-deployer-missing:{}", suffix());
    let v1 = spec(&app, &missing, 1, &[], vec![web("web", Some(SERVE_WWW))]);
    let (progress, lines) = recorder();
    let started = std::time::Instant::now();
    let err = gateway.scheduler.deploy(&v1, &progress).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        err.to_string(),
        format!(
            "deploy failed: image {missing} is not on the docker engine and no registry holds it"
        )
    );
    // The image is checked before any container is created.
    assert!(!lines.contains("web.1"), "{:?}", lines.all());
    assert!(fixture.containers(&app).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_workers_and_keeps_the_image_command_when_none_is_given() {
    let (fixture, gateway, app) = start("workers").await;
    // The web process has no command: the image's own CMD serves /www on $PORT.
    let v1 = fixture.spec(
        &app,
        1,
        &[],
        vec![
            process("worker", "sleep 1000", 2),
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
        processes: vec![process("worker", "sleep 1000", 1), web("web", None)],
        ..v1.clone()
    };
    gateway.deploy(&scaled).await;
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
            process("worker", "echo worker-crash; exit 3", 1),
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
    let v1 = fixture.www_release(&app);
    gateway.deploy(&v1).await;
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
    let worker = process("worker", "sleep 1000", 1);
    let v1 = fixture.spec(
        &kept,
        1,
        &[],
        vec![web("web", Some(SERVE_WWW)), worker.clone()],
    );
    {
        let first = Gateway::start(fixture.options()).await;
        first.deploy(&v1).await;
        let other = fixture.spec(&deleted, 3, &[], vec![web("web", Some(SERVE_WWW))]);
        first.deploy(&other).await;
        assert_eq!(first.get(&kept).await.unwrap().0, 200);
        // The first gateway goes away; its containers keep running.
    }
    let web1 = fixture.container_id(&kept, "web");
    let worker1 = fixture.container_id(&kept, "worker");
    // The worker was stopped while no gateway ran.
    docker(&["stop", "-t", "0", &worker1]);
    assert_eq!(inspect(&worker1, "{{.State.Status}}"), "exited");

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
        inspect(&worker1, "{{.State.Status}}"),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_serves_zero_scaled_apps_and_the_keeper_repairs_routes() {
    let fixture = Fixture::new();
    let served = fixture.app("served");
    let v1 = fixture.www_release(&served);
    {
        let first = Gateway::start(fixture.options()).await;
        first.deploy(&v1).await;
    }
    // Many apps scaled to zero beside the one that runs.
    let idle: Vec<DeploySpec> = (0..40)
        .map(|i| {
            let app = fixture.app(&format!("idle{i}"));
            let web0 = ProcessSpec {
                quantity: 0,
                ..web("web", Some(SERVE_WWW))
            };
            fixture.spec(&app, 1, &[], vec![web0])
        })
        .collect();
    let mut current = idle.clone();
    current.push(v1.clone());

    let second = Gateway::start(DockerSchedulerOptions {
        refresh_interval: Duration::from_millis(500),
        ..fixture.options()
    })
    .await;
    second.scheduler.restore(&current).await.unwrap();
    assert_eq!(
        second.get(&served).await.unwrap(),
        (200, "hello from v1\n".to_string())
    );
    for spec in &idle {
        assert_eq!(second.get(&spec.app).await.unwrap().0, 503, "{}", spec.app);
        assert_eq!(second.router.backends(spec.app.as_str()), Some(Vec::new()));
    }

    // A route lost without a Docker event comes back with the next periodic round.
    let routed = second.router.backends(served.as_str()).unwrap();
    assert_eq!(routed.len(), 1);
    second.router.set_backends(served.as_str(), Vec::new());
    let mut back = false;
    for _ in 0..100 {
        if second.router.backends(served.as_str()).as_ref() == Some(&routed) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        back,
        "the route keeper never routed the running container again"
    );
    assert_eq!(second.get(&served).await.unwrap().0, 200);
    for spec in &idle {
        assert_eq!(second.router.backends(spec.app.as_str()), Some(Vec::new()));
    }
}
