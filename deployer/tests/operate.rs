//! Operating running apps with the docker scheduler against the real engine: scale,
//! restart, one-off processes, logs and custom domains.
//!
//! Every test uses its own namespace, app names and image tag, and removes what it
//! created even when it fails.

mod common;

use std::collections::BTreeSet;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use common::*;
use empire_core::Error;
use empire_core::app::AppName;
use empire_core::formation::ProcessSize;
use empire_core::progress::Progress;
use empire_core::scheduler::{
    DeploySpec, LogLine, LogOptions, OneOffSpec, ProcessSpec, RestartTarget, RunIo, RunOutcome,
    Scheduler,
};
use empire_deployer::DockerSchedulerOptions;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

fn exists(id: &str) -> bool {
    Command::new("docker")
        .args(["inspect", id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// `spec` with the quantity (and size) of one process type changed.
fn scaled(spec: &DeploySpec, name: &str, quantity: u32, size: Option<ProcessSize>) -> DeploySpec {
    let mut spec = spec.clone();
    let p = spec.processes.iter_mut().find(|p| p.name == name).unwrap();
    p.quantity = quantity;
    if let Some(size) = size {
        p.size = size;
    }
    spec
}

/// Scales to `spec`, failing the test if that fails; returns the progress lines.
async fn scale(gateway: &Gateway, spec: &DeploySpec) -> Arc<Lines> {
    let (progress, lines) = recorder();
    gateway
        .scheduler
        .scale(spec, &progress)
        .await
        .unwrap_or_else(|err| panic!("scaling: {err}; {:?}", lines.all()));
    lines
}

/// The ids of the containers of `process`, by instance label.
fn ids_of(fixture: &Fixture, app: &AppName, process: &str) -> Vec<(String, String)> {
    let out = fixture.ps(
        app,
        Some(process),
        &[
            "--format",
            "{{.Label \"empire.process\"}}.{{.Label \"empire.instance\"}} {{.ID}}",
        ],
    );
    let mut ids: Vec<(String, String)> = out
        .lines()
        .map(|l| {
            let (label, id) = l.split_once(' ').unwrap();
            (label.to_string(), id.to_string())
        })
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_web_up_and_down_without_failed_requests() {
    let (fixture, gateway, app) = start("scaleweb").await;
    let v1 = fixture.spec(
        &app,
        1,
        &[("GREETING", "hi")],
        vec![web("web", Some(SERVE_GREETING))],
    );
    gateway.deploy(&v1).await;
    let web1 = fixture.container_id(&app, "web");

    let lines = scale(&gateway, &scaled(&v1, "web", 3, None)).await;
    let all = lines.all();
    for instance in ["web.2", "web.3"] {
        assert!(
            lines.contains(&format!("       {instance} started")),
            "{all:?}"
        );
        assert!(
            lines.contains(&format!("       {instance} is up (")),
            "{all:?}"
        );
    }
    assert!(!lines.contains("web.1"), "web.1 was touched: {all:?}");
    assert!(!lines.contains("stopped"), "{all:?}");
    assert_eq!(
        fixture.containers(&app),
        ["web.1 v1", "web.2 v1", "web.3 v1"]
    );
    assert!(fixture.container_ids(&app).contains(&web1));
    assert_eq!(gateway.router.backends(app.as_str()).unwrap().len(), 3);

    // Three different processes answer through the router.
    let mut bodies = BTreeSet::new();
    for _ in 0..12 {
        let (status, body) = gateway.get(&app).await.unwrap();
        assert_eq!(status, 200);
        bodies.insert(body);
    }
    let expected: BTreeSet<String> = (1..=3).map(|n| format!("hi web.{n} v1 {app}\n")).collect();
    assert_eq!(bodies, expected);
    let processes = gateway.scheduler.processes(&app).await.unwrap();
    let states: Vec<(&str, &str)> = processes
        .iter()
        .map(|p| (p.name.as_str(), p.state.as_str()))
        .collect();
    assert_eq!(states, [("web.1", "up"), ("web.2", "up"), ("web.3", "up")]);

    // Down to one while a client keeps asking.
    let client = ClientLoop::start(gateway.addr, &app);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = scale(&gateway, &scaled(&v1, "web", 1, None)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let bodies = client.finish().await;
    assert!(bodies.contains(&format!("hi web.3 v1 {app}\n")));
    assert_eq!(
        bodies.last().unwrap(),
        &format!("hi web.1 v1 {app}\n"),
        "a removed instance still answered"
    );
    let all = lines.all();
    assert!(lines.contains("       web.2 stopped"), "{all:?}");
    assert!(lines.contains("       web.3 stopped"), "{all:?}");
    assert!(!lines.contains("started"), "{all:?}");
    assert_eq!(fixture.containers(&app), ["web.1 v1"]);
    assert_eq!(fixture.container_id(&app, "web"), web1);
    assert_eq!(gateway.router.backends(app.as_str()).unwrap().len(), 1);

    // Nothing to do is fine.
    let lines = scale(&gateway, &scaled(&v1, "web", 1, None)).await;
    assert!(
        lines.contains("Every process already runs as requested"),
        "{:?}",
        lines.all()
    );
    assert_eq!(fixture.container_id(&app, "web"), web1);

    // Web at 0: the app answers 503.
    scale(&gateway, &scaled(&v1, "web", 0, None)).await;
    assert!(fixture.containers(&app).is_empty());
    assert_eq!(gateway.get(&app).await.unwrap().0, 503);

    gateway.scheduler.remove_app(&app).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_workers_and_resizes_processes() {
    let (fixture, gateway, app) = start("scalework").await;
    let v1 = fixture.spec(
        &app,
        1,
        &[],
        vec![
            web("web", Some(SERVE_WWW)),
            process("worker", "sleep 1000", 0),
        ],
    );
    gateway.deploy(&v1).await;
    assert_eq!(fixture.containers(&app), ["web.1 v1"]);
    let web1 = fixture.container_id(&app, "web");
    // The default size: 1X.
    assert_eq!(
        inspect(
            &web1,
            "{{.HostConfig.CpuShares}} {{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}"
        ),
        "256 536870912 536870912"
    );

    let two = scaled(&v1, "worker", 2, None);
    let lines = scale(&gateway, &two).await;
    let all = lines.all();
    assert!(lines.contains("       worker.1 started"), "{all:?}");
    assert!(lines.contains("       worker.1 is up ("), "{all:?}");
    assert!(lines.contains("       worker.2 is up ("), "{all:?}");
    assert_eq!(
        fixture.containers(&app),
        ["web.1 v1", "worker.1 v1", "worker.2 v1"]
    );
    let workers = ids_of(&fixture, &app, "worker");
    for (_, id) in &workers {
        assert_eq!(inspect(id, "{{.State.Status}}"), "running");
    }

    // A new size replaces the workers with resized ones; web stays as it is.
    let size = ProcessSize::parse("512:256MB").unwrap();
    let lines = scale(&gateway, &scaled(&two, "worker", 2, Some(size))).await;
    let all = lines.all();
    assert!(lines.contains("       worker.2 is up ("), "{all:?}");
    assert!(
        lines.contains("       previous worker.1 stopped"),
        "{all:?}"
    );
    assert!(!lines.contains("web.1"), "{all:?}");
    let resized = ids_of(&fixture, &app, "worker");
    assert_eq!(resized.len(), 2);
    for ((label, id), (old_label, old_id)) in resized.iter().zip(&workers) {
        assert_eq!(label, old_label);
        assert_ne!(id, old_id, "{label} was not replaced");
        assert_eq!(
            inspect(
                id,
                "{{.HostConfig.CpuShares}} {{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}"
            ),
            "512 268435456 268435456"
        );
    }
    assert_eq!(fixture.container_id(&app, "web"), web1);
    assert_eq!(gateway.get(&app).await.unwrap().0, 200);

    let lines = scale(&gateway, &scaled(&two, "worker", 0, None)).await;
    let all = lines.all();
    assert!(lines.contains("       worker.1 stopped"), "{all:?}");
    assert!(lines.contains("       worker.2 stopped"), "{all:?}");
    assert_eq!(fixture.containers(&app), ["web.1 v1"]);
    assert_eq!(gateway.get(&app).await.unwrap().0, 200);

    gateway.scheduler.remove_app(&app).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_whose_new_instances_never_listen_keeps_the_others() {
    let fixture = Fixture::new();
    let gateway = Gateway::start(DockerSchedulerOptions {
        boot_timeout: Duration::from_secs(4),
        ..fixture.options()
    })
    .await;
    let app = fixture.app("scalefail");
    // Only web.1 serves.
    let command = "if [ \"$DYNO\" = web.1 ]; then exec httpd -f -p $PORT -h /www; else echo deaf-marker $DYNO; exec sleep 1000; fi";
    let v1 = fixture.spec(&app, 1, &[], vec![web("web", Some(command))]);
    gateway.deploy(&v1).await;
    let web1 = fixture.container_id(&app, "web");

    let (progress, lines) = recorder();
    let err = gateway
        .scheduler
        .scale(&scaled(&v1, "web", 2, None), &progress)
        .await
        .unwrap_err();
    let Error::Deploy(message) = &err else {
        panic!("expected a deploy error, got {err:?}");
    };
    assert_eq!(
        message,
        "web.2 did not accept connections on $PORT within 4s"
    );
    let all = lines.all();
    assert!(lines.contains("         deaf-marker web.2"), "{all:?}");
    assert!(
        lines.contains("Removed the new processes; the others keep running unchanged"),
        "{all:?}"
    );
    assert_eq!(fixture.containers(&app), ["web.1 v1"]);
    assert_eq!(fixture.container_id(&app, "web"), web1);
    assert_eq!(
        gateway.get(&app).await.unwrap(),
        (200, "hello from v1\n".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_one_instance_or_all_while_serving() {
    let (fixture, gateway, app) = start("restart").await;
    let v1 = fixture.spec(
        &app,
        1,
        &[("GREETING", "hi")],
        vec![
            ProcessSpec {
                quantity: 2,
                ..web("web", Some(SERVE_GREETING))
            },
            process("worker", "sleep 1000", 1),
        ],
    );
    gateway.deploy(&v1).await;
    let before = ids_of(&fixture, &app, "web");
    let worker = fixture.container_id(&app, "worker");

    // One instance.
    let (progress, lines) = recorder();
    gateway
        .scheduler
        .restart(&v1, &RestartTarget::Instance("web".into(), 2), &progress)
        .await
        .unwrap();
    let all = lines.all();
    assert!(lines.contains("Restarting web.2 of v1"), "{all:?}");
    assert!(lines.contains("       web.2 started"), "{all:?}");
    assert!(lines.contains("       web.2 is up ("), "{all:?}");
    assert!(lines.contains("       previous web.2 stopped"), "{all:?}");
    assert!(!lines.contains("web.1"), "{all:?}");
    let after = ids_of(&fixture, &app, "web");
    assert_eq!(after.len(), 2);
    assert_eq!(after[0], before[0], "web.1 was replaced");
    assert_eq!(after[1].0, "web.2");
    assert_ne!(after[1].1, before[1].1, "web.2 was not replaced");
    assert_eq!(fixture.container_id(&app, "worker"), worker);

    // Every web instance, while a client keeps asking.
    let client = ClientLoop::start(gateway.addr, &app);
    tokio::time::sleep(Duration::from_millis(300)).await;
    gateway
        .scheduler
        .restart(
            &v1,
            &RestartTarget::Process("web".into()),
            &Progress::null(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.finish().await;
    let restarted = ids_of(&fixture, &app, "web");
    assert_eq!(restarted.len(), 2);
    for (new, old) in restarted.iter().zip(&after) {
        assert_eq!(new.0, old.0);
        assert_ne!(new.1, old.1, "{} was not replaced", new.0);
    }
    assert_eq!(fixture.container_id(&app, "worker"), worker);

    // Everything.
    gateway
        .scheduler
        .restart(&v1, &RestartTarget::All, &Progress::null())
        .await
        .unwrap();
    assert_ne!(fixture.container_id(&app, "worker"), worker);
    assert_eq!(
        fixture.containers(&app),
        ["web.1 v1", "web.2 v1", "worker.1 v1"]
    );
    assert_eq!(gateway.get(&app).await.unwrap().0, 200);

    // Unknown targets.
    let err = gateway
        .scheduler
        .restart(
            &v1,
            &RestartTarget::Instance("web".into(), 5),
            &Progress::null(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "process not found: web.5");
    let err = gateway
        .scheduler
        .restart(
            &v1,
            &RestartTarget::Process("clock".into()),
            &Progress::null(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "process type not found: clock");

    gateway.scheduler.remove_app(&app).await.unwrap();
}

/// An `AsyncWrite` whose bytes the test reads afterwards.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<u8>>>);

impl Output {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl AsyncWrite for Output {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn oneoff(app: &AppName, image: &str, command: &str, tty: bool) -> OneOffSpec {
    OneOffSpec {
        app: app.clone(),
        release: 1,
        image: image.to_string(),
        config: [("GREETING".to_string(), "hey".to_string())]
            .into_iter()
            .collect(),
        command: command.into(),
        size: ProcessSize::default(),
        tty,
    }
}

fn io(input: &'static [u8], output: &Output) -> RunIo {
    RunIo {
        input: Box::new(input),
        output: Box::new(output.clone()),
        resize: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_attached_one_off_processes() {
    let (fixture, gateway, app) = start("run").await;

    let output = Output::default();
    let outcome = gateway
        .scheduler
        .run(
            &oneoff(&app, &fixture.image, "echo hello; exit 3", false),
            Some(io(b"", &output)),
        )
        .await
        .unwrap();
    assert_eq!(outcome, RunOutcome::Exited(3));
    assert_eq!(output.text(), "hello\n");
    assert!(fixture.containers(&app).is_empty());

    // Input, the environment, and stderr next to stdout.
    let output = Output::default();
    let outcome = gateway
        .scheduler
        .run(
            &oneoff(
                &app,
                &fixture.image,
                "read x; echo got-$x; echo \"$GREETING $EMPIRE_PROCESS $PORT $DYNO\" >&2",
                false,
            ),
            Some(io(b"abc\n", &output)),
        )
        .await
        .unwrap();
    assert_eq!(outcome, RunOutcome::Exited(0));
    // Docker copies stdout and stderr separately: their order is not kept.
    let text = output.text();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 2, "{text:?}");
    assert_eq!(lines[0], "got-abc", "{text:?}");
    let env = lines[1];
    let dyno = env.strip_prefix("hey run 5000 run.").unwrap_or_else(|| {
        panic!("{text:?}");
    });
    assert!(
        dyno.len() == 4 && dyno.bytes().all(|b| b.is_ascii_digit()),
        "{text:?}"
    );
    assert!(fixture.containers(&app).is_empty());

    // A TTY, resized by the client.
    let output = Output::default();
    let (mut keyboard, input) = tokio::io::duplex(64);
    let (resize, sizes) = mpsc::channel(4);
    resize.send((100, 40)).await.unwrap();
    let outcome = gateway
        .scheduler
        .run(
            &oneoff(
                &app,
                &fixture.image,
                "test -t 0 && test -t 1 && echo is-a-tty; sleep 1; stty size",
                true,
            ),
            Some(RunIo {
                input: Box::new(input),
                output: Box::new(output.clone()),
                resize: Some(sizes),
            }),
        )
        .await
        .unwrap();
    assert_eq!(outcome, RunOutcome::Exited(0));
    // A terminal ends lines with CR LF.
    assert_eq!(output.text(), "is-a-tty\r\n40 100\r\n");
    tokio::io::AsyncWriteExt::shutdown(&mut keyboard)
        .await
        .unwrap();
    drop(resize);
    assert!(fixture.containers(&app).is_empty());

    // A caller that stops waiting leaves nothing behind.
    let output = Output::default();
    let (_keyboard, input) = tokio::io::duplex(64);
    let spec = oneoff(&app, &fixture.image, "echo waiting; sleep 1000", false);
    let run = gateway.scheduler.run(
        &spec,
        Some(RunIo {
            input: Box::new(input),
            output: Box::new(output.clone()),
            resize: None,
        }),
    );
    let waited = tokio::time::timeout(Duration::from_secs(3), run).await;
    assert!(waited.is_err(), "the process ended: {waited:?}");
    assert_eq!(output.text(), "waiting\n");
    let mut gone = false;
    for _ in 0..50 {
        if fixture.containers(&app).is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the abandoned one-off process is still there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_launches_commands_keeps_its_entrypoint() {
    let fixture = Fixture::new();
    // An ENTRYPOINT that launches commands, like a buildpack image's.
    let launcher = fixture.build_image(&format!(
        "FROM {}\nRUN printf '#!/bin/sh\\necho via-launcher\\nexec /bin/sh -c \"$1\"\\n' > /launch && chmod +x /launch\nLABEL empire.launcher=true\nENTRYPOINT [\"/launch\"]\n",
        fixture.image
    ));
    let gateway = Gateway::start(fixture.options()).await;
    let app = fixture.app("launch");

    let output = Output::default();
    let outcome = gateway
        .scheduler
        .run(
            &oneoff(&app, &launcher, "echo ran $DYNO | cut -c1-7", false),
            Some(io(b"", &output)),
        )
        .await
        .unwrap();
    assert_eq!(outcome, RunOutcome::Exited(0));
    assert_eq!(output.text(), "via-launcher\nran run\n");

    // A deploy takes the same path.
    let v1 = spec(&app, &launcher, 1, &[], vec![web("web", Some(SERVE_WWW))]);
    gateway.deploy(&v1).await;
    assert_eq!(
        gateway.get(&app).await.unwrap(),
        (200, "hello from v1\n".to_string())
    );
    let id = fixture.container_id(&app, "web");
    assert_eq!(inspect(&id, "{{json .Config.Entrypoint}}"), "[\"/launch\"]");
    assert_eq!(
        inspect(&id, "{{json .Config.Cmd}}"),
        format!("[{:?}]", SERVE_WWW)
    );
    gateway.scheduler.remove_app(&app).await.unwrap();
}

/// The log stream of `app` for `options`.
async fn logs(gateway: &Gateway, app: &AppName, options: LogOptions) -> mpsc::Receiver<LogLine> {
    gateway.scheduler.logs(app, &options).await.unwrap()
}

/// Each line's source and text.
fn texts(lines: &[LogLine]) -> Vec<(&str, &str)> {
    lines
        .iter()
        .map(|l| (l.source.as_str(), l.text.as_str()))
        .collect()
}

/// Receives lines until one matches or the time is up.
async fn wait_for_line(
    rx: &mut mpsc::Receiver<LogLine>,
    seen: &mut Vec<LogLine>,
    wanted: impl Fn(&LogLine) -> bool,
) -> LogLine {
    let found = tokio::time::timeout(Duration::from_secs(15), async {
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
        Err(_) => panic!("no such line within 15s; saw {seen:?}"),
    }
}

/// Everything a stream sends until it closes (fails if it stays open).
async fn collect(mut rx: mpsc::Receiver<LogLine>) -> Vec<LogLine> {
    tokio::time::timeout(Duration::from_secs(15), async {
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        lines
    })
    .await
    .expect("the log stream closes after the backlog")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_detached_one_off_processes_seen_in_logs() {
    let (fixture, gateway, app) = start("detach").await;

    let mut rx = logs(
        &gateway,
        &app,
        LogOptions {
            follow: true,
            ..Default::default()
        },
    )
    .await;
    let mut spec = oneoff(
        &app,
        &fixture.image,
        "echo detached-marker $DYNO; sleep 3",
        false,
    );
    spec.size = ProcessSize::parse("100:64MB").unwrap();
    let outcome = gateway.scheduler.run(&spec, None).await.unwrap();
    let RunOutcome::Detached { name, id } = outcome else {
        panic!("expected a detached process, got {outcome:?}");
    };
    assert!(name.starts_with("run.") && name.len() == 8, "{name}");
    assert_eq!(
        inspect(
            &id,
            "{{.HostConfig.CpuShares}} {{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}} {{.HostConfig.AutoRemove}}"
        ),
        "100 67108864 no true"
    );
    assert!(
        inspect(&id, "{{json .Config.Env}}").contains(&format!("\"DYNO={name}\"")),
        "{}",
        inspect(&id, "{{json .Config.Env}}")
    );
    assert_eq!(inspect(&id, "{{json .NetworkSettings.Ports}}"), "{}");
    let processes = gateway.scheduler.processes(&app).await.unwrap();
    assert_eq!(processes.len(), 1, "{processes:?}");
    assert_eq!(
        (processes[0].name.as_str(), processes[0].process.as_str()),
        (name.as_str(), "run")
    );
    assert_eq!(processes[0].state, "up");

    let mut seen = Vec::new();
    let line = wait_for_line(&mut rx, &mut seen, |l| {
        l.text.starts_with("detached-marker")
    })
    .await;
    assert_eq!(line.text, format!("detached-marker {name}"));
    assert_eq!(line.source, name);
    let age = time::OffsetDateTime::now_utc() - line.time;
    assert!(age < time::Duration::seconds(30), "{:?}", line.time);
    drop(rx);

    let mut gone = false;
    for _ in 0..100 {
        if !exists(&id) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the detached process was not removed after it exited");
    assert!(gateway.scheduler.processes(&app).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_logs_with_tail_filter_and_follow() {
    let (fixture, gateway, app) = start("logs").await;
    let v1 = fixture.spec(
        &app,
        1,
        &[],
        vec![
            web(
                "web",
                Some(
                    "for i in 1 2 3 4 5 6 7 8 9 10; do echo web-line-$i; done; exec httpd -f -p $PORT -h /www",
                ),
            ),
            process(
                "worker",
                "echo worker-out; echo worker-err >&2; exec sleep 1000",
                1,
            ),
        ],
    );
    gateway.deploy(&v1).await;

    let web_only = |tail, follow| LogOptions {
        process: Some("web".into()),
        tail: Some(tail),
        follow,
    };

    // The last 3 lines of web only, then the end.
    let lines = collect(logs(&gateway, &app, web_only(3, false)).await).await;
    assert_eq!(
        texts(&lines),
        [
            ("web.1", "web-line-8"),
            ("web.1", "web-line-9"),
            ("web.1", "web-line-10")
        ]
    );

    // Everything, merged by time: stdout and stderr of every process.
    let lines = collect(logs(&gateway, &app, LogOptions::default()).await).await;
    let got = texts(&lines);
    assert_eq!(got.len(), 12, "{got:?}");
    assert!(got.contains(&("worker.1", "worker-out")), "{got:?}");
    assert!(got.contains(&("worker.1", "worker-err")), "{got:?}");
    let web: Vec<&str> = got
        .iter()
        .filter(|(s, _)| *s == "web.1")
        .map(|(_, t)| *t)
        .collect();
    let expected: Vec<String> = (1..=10).map(|i| format!("web-line-{i}")).collect();
    assert_eq!(web, expected);
    assert!(lines.windows(2).all(|w| w[0].time <= w[1].time));

    // Following: the last line, then what comes later, also from new instances.
    let mut rx = logs(&gateway, &app, web_only(1, true)).await;
    let mut seen = Vec::new();
    let first = wait_for_line(&mut rx, &mut seen, |_| true).await;
    assert_eq!(
        (first.source.as_str(), first.text.as_str()),
        ("web.1", "web-line-10")
    );
    let web1 = fixture.container_id(&app, "web");
    // Write to the process's stdout from outside: a line printed after the call.
    docker(&[
        "exec",
        &web1,
        "sh",
        "-c",
        "echo follow-marker > /proc/1/fd/1",
    ]);
    let line = wait_for_line(&mut rx, &mut seen, |l| l.text == "follow-marker").await;
    assert_eq!(line.source, "web.1");
    scale(&gateway, &scaled(&v1, "web", 2, None)).await;
    wait_for_line(&mut rx, &mut seen, |l| {
        l.source == "web.2" && l.text == "web-line-10"
    })
    .await;
    let web2: Vec<&str> = seen
        .iter()
        .filter(|l| l.source == "web.2")
        .map(|l| l.text.as_str())
        .collect();
    assert_eq!(web2, expected, "web.2 from its first line");
    assert!(
        seen.iter().all(|l| !l.source.starts_with("worker")),
        "{seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|l| l.text == "web-line-10").count(),
        2,
        "a line came twice: {seen:?}"
    );
    drop(rx);

    gateway.scheduler.remove_app(&app).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_domains_route_to_the_app() {
    let (fixture, gateway, app) = start("domains").await;
    let v1 = fixture.www_release(&app);
    gateway.deploy(&v1).await;
    let host = "www.example.test".to_string();
    assert_eq!(get_host(gateway.addr, &host).await.unwrap().0, 404);
    gateway
        .scheduler
        .set_domains(&app, std::slice::from_ref(&host))
        .await
        .unwrap();
    assert_eq!(
        get_host(gateway.addr, &format!("{}:80", host.to_uppercase()))
            .await
            .unwrap(),
        (200, "hello from v1\n".to_string())
    );
    // The app's own host keeps working.
    assert_eq!(gateway.get(&app).await.unwrap().0, 200);
    gateway.scheduler.set_domains(&app, &[]).await.unwrap();
    assert_eq!(get_host(gateway.addr, &host).await.unwrap().0, 404);
    gateway.scheduler.remove_app(&app).await.unwrap();
}
