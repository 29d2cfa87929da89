//! A gateway restarted on the same data dir keeps serving its apps and takes pushes.

use std::time::Duration;

use empire_e2e::{Gateway, running_containers, unique_app};

#[test]
fn a_restarted_gateway_keeps_serving_and_takes_new_pushes() {
    let mut gw = Gateway::start();
    let dev = gw.developer("alice");
    let app = unique_app("restart");
    let repo = gw.app_repo(&dev, "web-httpd", &app);
    repo.push().assert_success();
    gw.wait_for_body(&app, "web-httpd v1", Duration::from_secs(5));
    let before = running_containers(&format!("empire.app={app}"));
    let host_key = gw.host_key_fingerprint();

    gw.restart();
    assert_eq!(
        gw.host_key_fingerprint(),
        host_key,
        "the SSH host key changed across a restart (known_hosts would break)"
    );
    gw.wait_for_body(&app, "web-httpd v1", Duration::from_secs(30));
    let after = running_containers(&format!("empire.app={app}"));
    assert_eq!(
        before, after,
        "the restarted gateway should adopt the running containers, not replace them"
    );

    repo.commit_change("index.html", "web-httpd v2\n", "v2 after the restart");
    let push = repo.push();
    push.assert_success();
    push.assert_contains(&gw.app_url(&app));
    gw.wait_for_body(&app, "web-httpd v2", Duration::from_secs(5));
}

#[test]
fn sigterm_lets_a_running_deploy_finish_then_exits() {
    let mut gw = Gateway::start();
    let dev = gw.developer("alice");
    let app = unique_app("drain");
    let repo = gw.app_repo(&dev, "slow-build", &app);

    let mut push = repo.push_streaming();
    push.wait_for_line("step-one-started", Duration::from_secs(120));
    gw.send_sigterm();
    // A new push is no longer taken…
    let late = gw.app_repo(&dev, "web-httpd", &unique_app("late"));
    let late_push = late.push();
    late_push.assert_failure();
    // …but the running one completes.
    let push = push.wait();
    push.assert_success();
    push.assert_contains(&gw.app_url(&app));
    let status = gw.wait_exit(Duration::from_secs(20));
    assert!(
        status.success(),
        "the gateway exited with {status} after SIGTERM"
    );

    // The release it finished is there after the next start.
    gw.restart();
    gw.wait_for_body(&app, "slow-build v1", Duration::from_secs(30));
}
