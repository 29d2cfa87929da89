//! `empire server --registry`: a `git push` pushes the built image to the registry and
//! deploys it by digest (needs `export EMPIRE_TEST_REGISTRY=$(scripts/registry.sh 5000)`,
//! as scripts/test.sh does).

use std::time::Duration;

use empire_e2e::{Gateway, docker_lines, http_get, running_containers, unique_app};

fn registry() -> String {
    match std::env::var("EMPIRE_TEST_REGISTRY") {
        Ok(value) if !value.trim().is_empty() => value.trim().to_string(),
        _ => panic!(
            "EMPIRE_TEST_REGISTRY is not set: run `export EMPIRE_TEST_REGISTRY=$(scripts/registry.sh 5000)` \
             first (scripts/test.sh does)"
        ),
    }
}

#[test]
fn a_push_with_a_registry_deploys_the_pushed_digest() {
    let registry = registry();
    let port: u16 = registry
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .expect("EMPIRE_TEST_REGISTRY is HOST:PORT");
    let prefix = unique_app("e2e-registry");
    let gw = Gateway::builder()
        .arg("--registry")
        .arg(&format!("{registry}/{prefix}"))
        .start();
    let dev = gw.developer("alice");
    let app = unique_app("reg");
    let repo = gw.app_repo(&dev, "web-httpd", &app);

    let push = repo.push();
    push.assert_success();
    push.assert_contains(&format!("-----> Pushing image to {registry}"));
    let name = format!("{registry}/{prefix}/{app}");
    let pushed = push
        .remote_lines()
        .iter()
        .find_map(|line| {
            let rest = line.trim().strip_prefix("Pushed ")?;
            let reference = rest.split_whitespace().next()?;
            reference
                .starts_with(&format!("{name}@sha256:"))
                .then(|| reference.to_string())
        })
        .unwrap_or_else(|| panic!("no `Pushed {name}@sha256:…` line:\n{push}"));
    let layer_lines = push
        .remote_lines()
        .iter()
        .filter(|l| l.contains(": Pushed") || l.contains(": Pushing") || l.contains(": Mounted"))
        .count();
    assert!(
        layer_lines <= 4 * 4,
        "too many layer lines ({layer_lines}):\n{push}"
    );
    gw.wait_for_body(&app, "web-httpd v1", Duration::from_secs(10));

    // The registry has the release's tag.
    let tags = http_get(port, &registry, &format!("/v2/{prefix}/{app}/tags/list"))
        .expect("GET the registry's tag list");
    assert_eq!(tags.status, 200, "{tags:?}");
    assert!(tags.body.contains("\"v1\""), "{}", tags.body);

    // The running containers are of the digest reference: the release recorded it and
    // the scheduler ran it.
    let containers = running_containers(&format!("empire.app={app}"));
    assert!(!containers.is_empty(), "no running container of {app}");
    for id in &containers {
        let image = docker_lines(&[
            "ps",
            "--no-trunc",
            "--filter",
            &format!("id={id}"),
            "--format",
            "{{.Image}}",
        ]);
        assert_eq!(image.join("\n"), pushed, "container {id}");
    }
}

#[test]
fn an_unreachable_registry_rejects_the_push_in_one_line() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let gw = Gateway::builder()
        .arg("--registry")
        .arg(&format!("127.0.0.1:{port}/apps"))
        .start();
    let dev = gw.developer("alice");
    let app = unique_app("regdown");
    let repo = gw.app_repo(&dev, "web-httpd", &app);

    let push = repo.push();
    push.assert_failure();
    let reason = format!(
        "pushing to 127.0.0.1:{port} failed: cannot reach the registry (connection refused)"
    );
    let mentions: Vec<&str> = push
        .remote_lines()
        .into_iter()
        .filter(|l| l.contains("pushing to 127.0.0.1"))
        .collect();
    assert!(
        !mentions.is_empty() && mentions.iter().all(|l| l.contains(&reason)),
        "expected the one-line reason {reason:?}:\n{push}"
    );
    assert!(
        running_containers(&format!("empire.app={app}")).is_empty(),
        "nothing may run after a failed push"
    );
}
