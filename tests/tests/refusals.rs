//! What the gateway refuses, and how the refusal reads: unknown keys, commands other
//! than git's, bad app names, other branches, unknown apps without autocreate, broken
//! Procfiles, removed keys.

use std::time::Duration;

use empire_e2e::{Gateway, unique_app};

#[test]
fn an_unknown_key_is_denied() {
    let gw = Gateway::start();
    let _known = gw.developer("alice");
    let stranger = gw.stranger();
    let app = unique_app("nokey");
    let repo = gw.app_repo(&stranger, "web-httpd", &app);

    let push = repo.push();
    push.assert_failure();
    push.assert_contains("Permission denied");
    assert_eq!(
        gw.get_app(&app, "/").expect("GET / for the app").status,
        404,
        "nothing may be deployed for a refused key"
    );
}

#[test]
fn a_command_other_than_git_is_refused_in_one_line() {
    let gw = Gateway::start();
    let dev = gw.developer("alice");

    let output = dev.ssh("ls");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "`ssh git@… ls` should fail; stdout {:?}, stderr {stderr:?}",
        String::from_utf8_lossy(&output.stdout)
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected a one-line refusal on stderr, got {stderr:?}"
    );
    assert!(
        lines[0].contains("\"ls\"") && lines[0].contains("help"),
        "the refusal should name the command and point to help: {:?}",
        lines[0]
    );
    assert!(
        output.stdout.is_empty(),
        "a refused command must not print anything on stdout: {:?}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn a_bad_app_name_is_refused_by_name() {
    let gw = Gateway::start();
    let dev = gw.developer("alice");
    let repo = gw.app_repo(&dev, "web-httpd", "Bad_App");

    let push = repo.push();
    push.assert_failure();
    assert!(
        push.lines_without_url()
            .iter()
            .any(|l| l.contains("Bad_App")),
        "the refusal should name the app name `Bad_App` (outside git's own `To ssh://…` \
         lines):\n{push}"
    );
}

#[test]
fn a_push_to_another_branch_is_refused_naming_main() {
    let gw = Gateway::start();
    let dev = gw.developer("alice");
    let app = unique_app("branch");
    let repo = gw.app_repo(&dev, "web-httpd", &app);

    let push = repo.push_args(&["empire", "main:feature"]);
    push.assert_failure();
    assert!(
        push.remote_lines().iter().any(|l| l.contains("main")),
        "the gateway's refusal (a remote: line) should name the branch that deploys, \
         main:\n{push}"
    );
    assert!(
        !push.contains(&gw.app_url(&app)),
        "a refused push must not print the app URL:\n{push}"
    );
    assert_eq!(
        gw.get_app(&app, "/").expect("GET / for the app").status,
        404,
        "a push to another branch must not deploy"
    );
}

#[test]
fn without_autocreate_an_unknown_app_is_refused() {
    let gw = Gateway::builder().no_autocreate().start();
    let dev = gw.developer("alice");
    let app = unique_app("noauto");
    let repo = gw.app_repo(&dev, "web-httpd", &app);

    let push = repo.push();
    push.assert_failure();
    assert!(
        push.lines_without_url().iter().any(|l| l.contains(&app)),
        "the refusal should name the unknown app {app:?}:\n{push}"
    );
    assert_eq!(
        gw.get_app(&app, "/").expect("GET / for the app").status,
        404,
        "a refused push must not deploy"
    );
}

#[test]
fn a_procfile_error_names_line_and_column() {
    let gw = Gateway::start();
    let dev = gw.developer("alice");
    let app = unique_app("procfile");
    let repo = gw.app_repo(&dev, "bad-procfile", &app);

    let push = repo.push();
    push.assert_hook_declined();
    assert!(
        push.remote_lines()
            .iter()
            .any(|l| l.contains("Procfile line 2, column 4")),
        "expected `Procfile line 2, column 4: …` (the `!` in `wkr!x`):\n{push}"
    );
    assert_eq!(
        gw.get_app(&app, "/").expect("GET / for the app").status,
        404,
        "a push with a broken Procfile must not deploy"
    );
}

#[test]
fn keys_are_listed_and_a_removed_key_can_no_longer_push() {
    let gw = Gateway::start();
    let dev = gw.developer("carol");
    let fingerprint = dev.key.fingerprint();

    let list = gw.empire(&["keys", "list"]);
    let stdout = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "empire keys list failed: {list:?}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(&fingerprint) && l.contains("carol")),
        "`empire keys list` should show {fingerprint} for carol: {stdout:?}"
    );

    let app = unique_app("keys");
    let repo = gw.app_repo(&dev, "web-httpd", &app);
    repo.push().assert_success();
    gw.wait_for_body(&app, "web-httpd v1", Duration::from_secs(5));

    let removed = gw.empire(&["keys", "remove", &fingerprint]);
    assert!(
        removed.status.success(),
        "empire keys remove failed: {removed:?}"
    );
    let list = gw.empire(&["keys", "list"]);
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&fingerprint),
        "the removed key is still listed: {list:?}"
    );

    repo.commit_change("index.html", "web-httpd v2\n", "v2");
    let push = repo.push();
    push.assert_failure();
    push.assert_contains("Permission denied");
    let answer = gw.get_app(&app, "/").expect("GET / after the refused push");
    assert_eq!(answer.body.trim(), "web-httpd v1");
}

#[test]
fn only_collaborators_push_to_an_app() {
    let gw = Gateway::start();
    let alice = gw.developer("alice");
    let bob = gw.developer("bob");
    let app = unique_app("owned");
    let repo = gw.app_repo(&alice, "web-httpd", &app);
    repo.push().assert_success();

    let bobs = repo.clone_for(&bob);
    bobs.commit_change("index.html", "web-httpd by bob\n", "Bob's change");
    let refused = bobs.push();
    refused.assert_failure();
    refused.assert_contains("you (bob) do not have access to app");
    gw.wait_for_body(&app, "web-httpd v1", Duration::from_secs(5));

    let granted = alice.ssh(&format!("access:add {app} bob"));
    assert!(
        granted.status.success(),
        "access:add: {}",
        String::from_utf8_lossy(&granted.stderr)
    );
    bobs.push().assert_success();
    gw.wait_for_body(&app, "web-httpd by bob", Duration::from_secs(30));
}
