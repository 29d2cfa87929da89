//! Apps without a Dockerfile build with buildpacks through the whole push path, and a
//! second push with unchanged dependencies reuses the build cache.

use empire_e2e::{Gateway, unique_app};

#[test]
fn a_static_site_without_a_dockerfile_deploys_with_buildpacks() {
    let gw = Gateway::start();
    let dev = gw.developer("alice");
    let app = unique_app("bpstatic");
    let repo = gw.app_repo(&dev, "bp-static", &app);

    let push = repo.push();
    push.assert_success();
    push.assert_contains("static");
    let answer = gw.get_app(&app, "/").expect("GET / through the router");
    assert_eq!(answer.status, 200, "GET / for {app}: {answer:?}");
    assert!(
        answer.body.contains("Hello from a static site"),
        "{answer:?}"
    );
}

#[test]
fn a_python_app_installs_its_dependencies_once_and_reuses_them() {
    let gw = Gateway::start();
    let dev = gw.developer("alice");
    let app = unique_app("bppython");
    let repo = gw.app_repo(&dev, "bp-python", &app);

    let first = repo.push();
    first.assert_success();
    let answer = gw.get_app(&app, "/").expect("GET / through the router");
    assert_eq!(answer.status, 200, "GET / for {app}: {answer:?}");

    repo.commit_change(
        "NOTES.md",
        "a change that leaves the dependencies alone\n",
        "Add notes",
    );
    let second = repo.push();
    second.assert_success();
    second.assert_contains("reused");
    assert!(
        !second.contains("Collecting"),
        "unchanged dependencies were installed again:\n{second}"
    );
}
