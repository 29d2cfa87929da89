//! Images the engine does not have: a registry whose name differs from the endpoint
//! images are pushed to (`--registry` / `--registry-endpoint`), a rollback to a release
//! whose local image was removed but is in the registry, and a rollback to a release
//! whose image was pruned and is in no registry.
//!
//! The registry tests need what scripts/test.sh exports:
//! `EMPIRE_TEST_REGISTRY=$(scripts/registry.sh 5000)`,
//! `EMPIRE_TEST_REGISTRY_BASIC=$(scripts/registry.sh 5001 --htpasswd empire:secret)` and
//! `EMPIRE_TEST_AWS_ENDPOINT=$(scripts/moto.sh 5555)`.

use std::process::Output;
use std::time::Duration;

use empire_e2e::{
    AppRepo, CliUser, Gateway, GatewayBuilder, docker, docker_lines, running_containers,
    service_from_env, unique_app,
};

const SERVE_TIMEOUT: Duration = Duration::from_secs(10);

/// stdout then stderr.
fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The image the app's running containers were created from (all the same).
fn running_image(app: &str) -> String {
    let containers = running_containers(&format!("empire.app={app}"));
    assert!(!containers.is_empty(), "no running container of {app}");
    let mut images: Vec<String> = containers
        .iter()
        .flat_map(|id| {
            docker_lines(&[
                "ps",
                "--no-trunc",
                "--filter",
                &format!("id={id}"),
                "--format",
                "{{.Image}}",
            ])
        })
        .collect();
    images.dedup();
    assert_eq!(images.len(), 1, "{images:?}");
    images.remove(0)
}

/// Pushes a change of `index.html` to `web-httpd v<version>` and waits until it serves.
fn push_version(gw: &Gateway, repo: &AppRepo, app: &str, version: u32) -> String {
    let body = format!("web-httpd v{version}");
    if version > 1 {
        repo.commit_change("index.html", &format!("{body}\n"), &format!("v{version}"));
    }
    let push = repo.push();
    push.assert_success();
    gw.wait_for_body(app, &body, SERVE_TIMEOUT);
    push.to_string()
}

fn image_exists(reference: &str) -> bool {
    docker(&["image", "inspect", reference]).status.success()
}

#[test]
fn a_registry_named_apart_from_its_endpoint_deploys_and_a_rollback_pulls_a_removed_image() {
    let registry = service_from_env("EMPIRE_TEST_REGISTRY", "scripts/registry.sh 5000");
    pushes_through_the_endpoint_and_pulls_back(&registry, &[]);
}

#[test]
fn a_rollback_pulls_from_a_basic_auth_registry_with_the_builders_login() {
    let registry = service_from_env(
        "EMPIRE_TEST_REGISTRY_BASIC",
        "scripts/registry.sh 5001 --htpasswd empire:secret",
    );
    pushes_through_the_endpoint_and_pulls_back(
        &registry,
        &[
            "--registry-auth",
            "basic",
            "--registry-username",
            "empire",
            "--registry-password",
            "secret",
        ],
    );
}

#[test]
fn an_ecr_named_registry_reached_through_the_endpoint_deploys_and_pulls_back() {
    // moto serves ECR's API (the token, the repository) but no registry: the images go
    // to the local registry through --registry-endpoint, under the ECR registry's name.
    let registry = service_from_env("EMPIRE_TEST_REGISTRY", "scripts/registry.sh 5000");
    let aws = service_from_env("EMPIRE_TEST_AWS_ENDPOINT", "scripts/moto.sh 5555");
    let gateway = Gateway::builder()
        .arg("--registry-auth")
        .arg("ecr")
        .env("AWS_ENDPOINT_URL", &aws)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1");
    named_registry_round_trip(
        gateway,
        "123456789012.dkr.ecr.us-east-1.amazonaws.com",
        &registry,
    );
}

/// A gateway with `--registry localhost:<port>/<prefix> --registry-endpoint
/// 127.0.0.1:<port>` (and `auth`): a push deploys the image the release records under
/// the registry's name, and a rollback to a release whose local image was removed pulls
/// it back through the endpoint and serves it.
fn pushes_through_the_endpoint_and_pulls_back(registry: &str, auth: &[&str]) {
    let port: u16 = registry
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .expect("the registry is HOST:PORT");
    // The registry's name is `localhost:<port>`; the engine reaches it as 127.0.0.1.
    let name = format!("localhost:{port}");
    let mut gw = Gateway::builder();
    for arg in auth {
        gw = gw.arg(arg);
    }
    named_registry_round_trip(gw, &name, registry);
}

/// `gateway` started with `--registry <name>/<prefix> --registry-endpoint <endpoint>`:
/// see [`pushes_through_the_endpoint_and_pulls_back`].
fn named_registry_round_trip(gateway: GatewayBuilder, name: &str, registry: &str) {
    let prefix = unique_app("e2e-regname");
    let gw = gateway
        .arg("--registry")
        .arg(&format!("{name}/{prefix}"))
        .arg("--registry-endpoint")
        .arg(registry)
        .start();
    let dev = gw.developer("alice");
    let app = unique_app("regname");
    let repo = gw.app_repo(&dev, "web-httpd", &app);
    let cli = CliUser::new(&gw, "alice");

    // v1: pushed through the endpoint, recorded under the name, deployed, served.
    let push = push_version(&gw, &repo, &app, 1);
    let recorded = format!("{name}/{prefix}/{app}@sha256:");
    assert!(
        push.contains(&format!("Pushed {recorded}")),
        "expected `Pushed {recorded}…`:\n{push}"
    );
    let releases = cli.run(&["releases", "-a", &app, "--json"]);
    assert!(releases.status.success(), "{}", text(&releases));
    let listed = String::from_utf8_lossy(&releases.stdout).into_owned();
    let v1_image = listed
        .split('"')
        .find(|s| s.starts_with(&recorded))
        .unwrap_or_else(|| panic!("no release image {recorded}… in:\n{listed}"))
        .to_string();
    let digest = v1_image.rsplit_once('@').expect("a digest reference").1;
    // The engine knows the pushed image under the endpoint's name: that is what runs.
    let at_endpoint = format!("{registry}/{prefix}/{app}@{digest}");
    assert_eq!(running_image(&app), at_endpoint);

    // v2 replaces it; then v1's image is removed from the engine altogether.
    push_version(&gw, &repo, &app, 2);
    let v1_id = docker_lines(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        &format!("empire/{app}:v1"),
    ])
    .remove(0);
    let removed = docker(&["rmi", "-f", &v1_id]);
    assert!(removed.status.success(), "{}", text(&removed));
    assert!(!image_exists(&at_endpoint), "{at_endpoint} is still there");

    // The rollback pulls v1 from the registry (through the endpoint) and serves it.
    let rolled = cli.run(&["rollback", "-a", &app, "v1"]);
    assert!(
        rolled.status.success(),
        "the rollback failed:\n{}",
        text(&rolled)
    );
    assert!(
        String::from_utf8_lossy(&rolled.stdout).contains("done, v3"),
        "{}",
        text(&rolled)
    );
    gw.wait_for_body(&app, "web-httpd v1", SERVE_TIMEOUT);
    assert!(image_exists(&at_endpoint), "{at_endpoint} was not pulled");
    assert_eq!(running_image(&app), at_endpoint);
}

#[test]
fn a_rollback_to_a_pruned_image_fails_naming_the_release_and_the_app_keeps_serving() {
    let gw = Gateway::start();
    let dev = gw.developer("alice");
    let app = unique_app("pruned");
    let repo = gw.app_repo(&dev, "web-httpd", &app);
    let cli = CliUser::new(&gw, "alice");

    // Six releases: the gateway keeps the images of the newest five, so v1's goes.
    for version in 1..=6 {
        push_version(&gw, &repo, &app, version);
    }
    let v1 = format!("empire/{app}:v1");
    assert!(!image_exists(&v1), "{v1} should have been pruned");
    assert!(image_exists(&format!("empire/{app}:v2")));

    let rolled = cli.run(&["rollback", "-a", &app, "v1"]);
    let output = text(&rolled);
    assert!(
        !rolled.status.success(),
        "the rollback succeeded:\n{output}"
    );
    let reason = format!("release v1's image {v1} is gone (pruned) and no registry holds it");
    let lines: Vec<&str> = output.lines().filter(|l| l.contains(&reason)).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line with {reason:?}:\n{output}"
    );

    // v6 keeps serving, and stays the current release.
    let answer = gw.get_app(&app, "/").expect("GET / after the rollback");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body.trim(), "web-httpd v6");
}
