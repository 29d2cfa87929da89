//! A first push deploys and serves; progress streams while the build runs; a
//! Procfile's web process serves while others stay at zero.

use std::time::Duration;

use empire_e2e::{Gateway, Stream, running_containers, unique_app};

#[test]
fn first_push_deploys_and_serves() {
    let gw = Gateway::start();
    let dev = gw.developer("alice");
    let app = unique_app("first");
    let repo = gw.app_repo(&dev, "web-httpd", &app);

    let push = repo.push();
    push.assert_success();
    assert!(
        push.remote_lines().iter().any(|l| l.starts_with("-----> ")),
        "expected Heroku-style `-----> ` step lines:\n{push}"
    );
    assert!(
        push.remote_lines()
            .iter()
            .any(|l| l.starts_with("       ") && !l.trim().is_empty()),
        "expected 7-space indented detail lines:\n{push}"
    );
    let url = gw.app_url(&app);
    push.assert_contains(&url);
    assert!(
        push.remote_lines()
            .iter()
            .rev()
            .take(3)
            .any(|l| l.contains(&url)),
        "expected the push to end with the app URL {url}:\n{push}"
    );

    // The app answers right away, through the router, by its Host name.
    let answer = gw.get_app(&app, "/").expect("GET / through the router");
    assert_eq!(answer.status, 200, "GET / for {app}: {answer:?}");
    assert_eq!(answer.body.trim(), "web-httpd v1");

    // The app sees a request id the router added.
    let env = gw
        .get_app(&app, "/cgi-bin/env")
        .expect("GET /cgi-bin/env through the router");
    assert_eq!(env.status, 200, "GET /cgi-bin/env for {app}: {env:?}");
    let request_id = env
        .body
        .lines()
        .find_map(|l| l.strip_prefix("request-id="))
        .unwrap_or_default();
    assert!(
        !request_id.trim().is_empty(),
        "the app saw no X-Request-Id header: {:?}",
        env.body
    );

    // An app that does not exist: 404 with a body that says which.
    let missing = unique_app("nosuchapp");
    let answer = empire_e2e::http_get(gw.router_port(), &gw.app_host(&missing), "/")
        .expect("GET / for an unknown app");
    assert_eq!(answer.status, 404, "unknown app: {answer:?}");
    assert!(
        answer.body.contains(&missing),
        "the 404 body should name the unknown app {missing:?}: {:?}",
        answer.body
    );
}

#[test]
fn progress_reaches_the_client_while_the_build_runs() {
    let gw = Gateway::start();
    let dev = gw.developer("alice");
    let app = unique_app("stream");
    let repo = gw.app_repo(&dev, "slow-build", &app);

    let push = repo.push_streaming().wait();
    push.assert_success();
    let started = push
        .line_containing("step-one-started")
        .unwrap_or_else(|| panic!("no `step-one-started` line:\n{push}"));
    let done = push
        .line_containing("step-one-done")
        .unwrap_or_else(|| panic!("no `step-one-done` line:\n{push}"));
    assert_eq!(started.stream, Stream::Stderr);
    assert!(
        started.text.starts_with("remote:"),
        "the build output should come as a remote: line: {:?}",
        started.text
    );
    let before_exit = push.finished.duration_since(started.at);
    assert!(
        before_exit >= Duration::from_secs(3),
        "`step-one-started` arrived only {before_exit:?} before the push exited — the build \
         output was not streamed as it happened:\n{push}"
    );
    let gap = done.at.saturating_duration_since(started.at);
    assert!(
        gap >= Duration::from_secs(3),
        "`step-one-started` and `step-one-done` (4 s apart in the build) arrived {gap:?} \
         apart — Docker's output was buffered:\n{push}"
    );
    gw.wait_for_body(&app, "slow-build v1", Duration::from_secs(5));
}

#[test]
fn a_procfile_app_runs_web_and_leaves_others_at_zero() {
    let gw = Gateway::start();
    let dev = gw.developer("alice");
    let app = unique_app("procs");
    let repo = gw.app_repo(&dev, "procfile-app", &app);

    let push = repo.push();
    push.assert_success();
    push.assert_contains(&gw.app_url(&app));

    let answer = gw.get_app(&app, "/").expect("GET / through the router");
    assert_eq!(answer.status, 200, "GET / for {app}: {answer:?}");
    assert_eq!(answer.body.trim(), "procfile-app web");

    let running = running_containers(&format!("empire.app={app}"));
    assert_eq!(
        running.len(),
        1,
        "expected exactly one running container for {app} (web=1, worker=0), found {running:?}"
    );
}

#[test]
fn push_option_no_cache_rebuilds_every_step() {
    let gw = Gateway::start();
    let dev = gw.developer("alice");
    let app = unique_app("nocache");
    let repo = gw.app_repo(&dev, "slow-build", &app);
    let first = repo.push();
    first.assert_success();
    first.assert_contains("step-one-started");

    // Change only index.html (not `nonce`), so the slow step is cached by default…
    repo.write("index.html", "slow-build v2\n");
    repo.git(&["commit", "-q", "-am", "v2"]);
    let cached = repo.push();
    cached.assert_success();
    assert!(
        !cached.contains("step-one-started"),
        "the unchanged slow step should come from the build cache:\n{cached}"
    );
    gw.wait_for_body(&app, "slow-build v2", Duration::from_secs(5));

    // …and `git push -o no-cache` runs it again.
    repo.write("index.html", "slow-build v3\n");
    repo.git(&["commit", "-q", "-am", "v3"]);
    let rebuilt = repo.push_args(&["-o", "no-cache", "empire", "main"]);
    rebuilt.assert_success();
    rebuilt.assert_contains("step-one-started");
    gw.wait_for_body(&app, "slow-build v3", Duration::from_secs(5));
}
