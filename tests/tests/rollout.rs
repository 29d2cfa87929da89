//! Rolling to a new release without dropping requests, and keeping the running release
//! when a build or a boot fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use empire_e2e::{Gateway, unique_app};

#[test]
fn a_second_push_rolls_to_v2_without_failed_requests() {
    let gw = Gateway::start();
    let dev = gw.developer("alice");
    let app = unique_app("roll");
    let repo = gw.app_repo(&dev, "web-httpd", &app);
    repo.push().assert_success();
    gw.wait_for_body(&app, "web-httpd v1", Duration::from_secs(5));

    repo.commit_change("index.html", "web-httpd v2\n", "v2");
    let stop = Arc::new(AtomicBool::new(false));
    let (push, answers) = std::thread::scope(|s| {
        let client = s.spawn(|| {
            let mut answers = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let answer = match gw.get_app(&app, "/") {
                    Ok(r) => (r.status, r.body.trim().to_string()),
                    Err(e) => (0, format!("request error: {e}")),
                };
                answers.push(answer);
                std::thread::sleep(Duration::from_millis(20));
            }
            answers
        });
        let push = repo.push();
        stop.store(true, Ordering::SeqCst);
        (push, client.join().expect("client thread"))
    });
    push.assert_success();

    let failed: Vec<&(u16, String)> = answers
        .iter()
        .filter(|(status, body)| {
            *status != 200 || (body != "web-httpd v1" && body != "web-httpd v2")
        })
        .collect();
    assert!(
        answers.len() >= 20,
        "the client made only {} requests during the push",
        answers.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests during the rollout failed, e.g. {:?}\n{push}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        answers.iter().any(|(_, body)| body == "web-httpd v1"),
        "v1 should have served while v2 was built"
    );

    // The push returned: v2 is what the app serves now.
    let answer = gw.get_app(&app, "/").expect("GET / after the push");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body.trim(), "web-httpd v2");
}

#[test]
fn a_failing_build_rejects_the_push_and_v1_keeps_serving() {
    let gw = Gateway::start();
    let dev = gw.developer("alice");
    let app = unique_app("badbuild");
    let repo = gw.app_repo(&dev, "web-httpd", &app);
    repo.push().assert_success();
    gw.wait_for_body(&app, "web-httpd v1", Duration::from_secs(5));

    repo.apply_fixture("failing-build");
    repo.commit("a build that fails");
    let push = repo.push();
    push.assert_hook_declined();
    // The RUN step's own output reached the pusher (the Dockerfile text says
    // `$((40+2))`, the shell prints 42).
    assert!(
        push.remote_lines()
            .iter()
            .any(|l| l.contains("build-step-output-42")),
        "expected the failing build's output in remote: lines:\n{push}"
    );
    assert!(
        push.remote_lines().iter().any(|l| l.starts_with(" !     ")),
        "expected a ` !     ` error line:\n{push}"
    );

    let answer = gw.get_app(&app, "/").expect("GET / after the failed push");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body.trim(), "web-httpd v1");
}

#[test]
fn a_failing_boot_rejects_the_push_shows_its_logs_and_v1_keeps_serving() {
    let gw = Gateway::builder().boot_timeout("8s").start();
    let dev = gw.developer("alice");
    let app = unique_app("badboot");
    let repo = gw.app_repo(&dev, "web-httpd", &app);
    repo.push().assert_success();
    gw.wait_for_body(&app, "web-httpd v1", Duration::from_secs(5));

    repo.apply_fixture("failing-boot");
    repo.commit("a web process that exits at once");
    let push = repo.push();
    push.assert_hook_declined();
    // The Procfile says `$((40+2))`; only the process itself prints 42.
    assert!(
        push.remote_lines()
            .iter()
            .any(|l| l.contains("boot-failure-marker-42")),
        "expected the failing process's last log lines in remote: lines:\n{push}"
    );
    assert!(
        push.finished.duration_since(push.started) < Duration::from_secs(120),
        "the failed boot took too long to be reported:\n{push}"
    );

    let answer = gw.get_app(&app, "/").expect("GET / after the failed push");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body.trim(), "web-httpd v1");
}
