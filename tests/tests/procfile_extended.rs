//! A push with an extended (YAML) Procfile: web is health-checked on the path the
//! Procfile names and sees its own environment, a `noservice` worker gets no
//! container, a `cron` clock runs on its schedule as one-off processes whose output
//! `logs` shows, and a release whose health path fails is refused.

use std::time::{Duration, Instant};

use empire_e2e::{Gateway, docker_lines, unique_app};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[test]
fn an_extended_procfile_deploys_health_checked_with_noservice_and_cron_types() {
    let gw = Gateway::builder().boot_timeout("8s").start();
    let dev = gw.developer("alice");
    let app = unique_app("extproc");
    let repo = gw.app_repo(&dev, "procfile-extended", &app);

    let push = repo.push();
    push.assert_success();
    push.assert_contains("worker runs no service (noservice); start it with run");
    push.assert_contains(
        "clock runs on its schedule \"rate(2 seconds)\" (UTC) as one-off processes; next at ",
    );
    push.assert_contains(&gw.app_url(&app));

    // web serves, with the environment the Procfile gives it.
    let answer = gw.get_app(&app, "/").expect("GET /");
    assert_eq!(
        (answer.status, answer.body.trim()),
        (200, "procfile-extended web")
    );
    let greeting = gw
        .get_app(&app, "/cgi-bin/greeting")
        .expect("GET /cgi-bin/greeting");
    assert_eq!(
        greeting.body.trim(),
        "hello from the Procfile",
        "{greeting:?}"
    );

    // The clock's runs reach `logs`, labelled like one-off processes.
    let deadline = Instant::now() + Duration::from_secs(20);
    let tick = loop {
        let logs = stdout(&dev.ssh(&format!("logs {app}")));
        if let Some(line) = logs.lines().find(|l| l.contains("clock-tick-clock")) {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no clock-tick line in `logs {app}` within 20s:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        tick.contains("run."),
        "a cron run is labelled like a one-off: {tick}"
    );

    // The worker never got a container; ps shows web and maybe a clock run, no worker instance.
    let worker = docker_lines(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=empire.app={app}"),
        "--filter",
        "label=empire.process=worker",
    ]);
    assert!(worker.is_empty(), "worker containers: {worker:?}");
    let ps = stdout(&dev.ssh(&format!("ps {app}")));
    assert!(ps.contains("web.1"), "{ps}");
    assert!(!ps.lines().any(|l| l.starts_with("worker.")), "{ps}");
    // The formation lists the worker and the clock at zero instances.
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["worker", "0", "1X"]),
        "{ps}"
    );
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["clock", "0", "1X"]),
        "{ps}"
    );

    // A release whose health path answers 500 is refused; v1 keeps serving.
    repo.write("health-status", "500 Broken\n");
    repo.write("index.html", "procfile-extended v2\n");
    repo.commit("health check fails");
    let refused = repo.push();
    refused.assert_failure();
    refused.assert_contains("did not pass its health check GET /cgi-bin/health");
    let answer = gw.get_app(&app, "/").expect("GET / after the refused push");
    assert_eq!(
        (answer.status, answer.body.trim()),
        (200, "procfile-extended web")
    );
}
