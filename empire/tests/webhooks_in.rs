//! Contract tests of incoming push webhooks and connected repositories against a real
//! `empire server`: the order of the checks (413, 404, 401), what is ignored, replays,
//! and a queued build's log. Every answer is checked against docs/openapi.yaml.
//!
//! The connected repository here is a loopback port nothing listens on, so a queued
//! build fails to fetch (what deploys is covered by tests/tests/webhooks_in.rs).

mod common;

use std::time::Duration;

use empire_core::push_event::hmac_sha256_hex;
use empire_e2e::{Gateway, unique_app, wait_until};
use serde_json::{Value, json};

use common::{Answer, Api, user_token};

const COMMIT: &str = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c";
const SECRET: &str = "it-is-a-secret-to-everybody";

fn github_push(reference: &str, after: &str) -> String {
    json!({
        "ref": reference,
        "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "after": after,
        "deleted": after.bytes().all(|b| b == b'0'),
        "repository": { "clone_url": "https://evil.example/other.git" },
        "pusher": { "name": "octocat", "email": "octocat@example.com" },
        "head_commit": { "id": after, "message": "Ship it\n\nDetails" },
        "commits": []
    })
    .to_string()
}

/// POSTs a GitHub event signed with `secret` (`None`: unsigned).
fn github(
    api: &Api,
    app: &str,
    event: &str,
    delivery: &str,
    body: &str,
    secret: Option<&str>,
) -> Answer {
    let mut call = api
        .call("POST", &format!("/webhooks/github/{app}"))
        .header("Accept", "*/*")
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", delivery)
        .body(body);
    if let Some(secret) = secret {
        call = call.header(
            "X-Hub-Signature-256",
            &format!("sha256={}", hmac_sha256_hex(secret, body.as_bytes())),
        );
    }
    call.send()
}

fn builds(api: &Api, token: &str, app: &str) -> Vec<Value> {
    let answer = api
        .call("GET", &format!("/apps/{app}/builds"))
        .token(token)
        .send();
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json().as_array().cloned().unwrap()
}

fn assert_status(answer: &Answer, status: u16, word: &str) {
    assert_eq!(answer.status, status, "{}", answer.text());
    assert!(
        answer.text().contains(word),
        "{word:?} is not in {}",
        answer.text()
    );
}

fn ignored(answer: &Answer, reason: &str) {
    assert_eq!(answer.status, 202, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["status"], "ignored", "{body}");
    let text = body["reason"].as_str().unwrap();
    assert!(text.contains(reason), "{reason:?} is not in {text:?}");
}

#[test]
fn webhooks_check_size_then_connection_then_signature_and_deploy_once_per_delivery() {
    let gw = Gateway::builder()
        .arg("--webhook-max-body")
        .arg("4k")
        .start();
    let api = Api::new(&gw);
    let token = user_token(&gw, "alice");
    let app = unique_app("hooked");
    let created = api
        .call("POST", "/apps")
        .token(&token)
        .json(json!({ "name": app }))
        .send();
    assert_eq!(created.status, 201, "{}", created.text());
    let push = github_push("refs/heads/main", COMMIT);

    // Over the limit: 413 before anything else, even for an unknown app and no signature.
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(5000));
    for path in [
        format!("/webhooks/github/{app}"),
        "/webhooks/gitea/nope".into(),
    ] {
        let answer = api
            .call("POST", &path)
            .header("Accept", "*/*")
            .body(&big)
            .send();
        assert_status(&answer, 413, "larger than 4096 bytes");
    }
    // Not connected (or no such app): 404, whatever the signature.
    assert_status(
        &github(&api, &app, "push", "d-0", &push, Some(SECRET)),
        404,
        "is not connected to a repository",
    );
    assert_status(
        &github(&api, "no-such-app", "push", "d-0", &push, Some(SECRET)),
        404,
        "app not found",
    );

    // Connect it (to a port nothing listens on).
    let repo = "http://127.0.0.1:9/acme/hooked.git";
    let connected = api
        .call("PUT", &format!("/apps/{app}/connection"))
        .token(&token)
        .json(json!({ "repo": repo, "secret": SECRET }))
        .send();
    assert_eq!(connected.status, 200, "{}", connected.text());
    let connected = connected.json();
    assert_eq!(connected["repo_url"], repo);
    assert_eq!(connected["branch"], "main");
    assert_eq!(connected["secret_generated"], false);
    assert!(connected.get("secret").is_none(), "{connected}");
    assert_eq!(connected["deploy_key"], Value::Null);
    assert_eq!(
        connected["webhook_urls"]["github"],
        format!("http://127.0.0.1:{}/webhooks/github/{app}", gw.http_port())
    );
    assert_eq!(
        connected["webhook_urls"]["gitlab"],
        format!("http://127.0.0.1:{}/webhooks/gitlab/{app}", gw.http_port())
    );

    // A bad or missing signature: 401, and nothing happens.
    assert_status(
        &github(&api, &app, "push", "d-1", &push, Some("not-the-secret")),
        401,
        "does not match",
    );
    assert_status(
        &github(&api, &app, "push", "d-1", &push, None),
        401,
        "no X-Hub-Signature-256 header",
    );
    // Signed, but a byte of the body changed on the way.
    let signature = format!("sha256={}", hmac_sha256_hex(SECRET, push.as_bytes()));
    let tampered = push.replace("octocat", "octocad");
    let answer = api
        .call("POST", &format!("/webhooks/github/{app}"))
        .header("Accept", "*/*")
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", &signature)
        .body(&tampered)
        .send();
    assert_status(&answer, 401, "does not match");
    assert!(builds(&api, &token, &app).is_empty());

    // What deploys nothing.
    ignored(
        &github(
            &api,
            &app,
            "ping",
            "d-2",
            r#"{"zen":"Keep it simple."}"#,
            Some(SECRET),
        ),
        "ping received",
    );
    ignored(
        &github(
            &api,
            &app,
            "push",
            "d-3",
            &github_push("refs/heads/feature", COMMIT),
            Some(SECRET),
        ),
        "the push is to feature; only pushes to main deploy",
    );
    ignored(
        &github(
            &api,
            &app,
            "push",
            "d-4",
            &github_push("refs/tags/v1", COMMIT),
            Some(SECRET),
        ),
        "is a tag",
    );
    ignored(
        &github(
            &api,
            &app,
            "push",
            "d-5",
            &github_push(
                "refs/heads/main",
                "0000000000000000000000000000000000000000",
            ),
            Some(SECRET),
        ),
        "deleted main",
    );
    ignored(
        &github(&api, &app, "issues", "d-6", "{}", Some(SECRET)),
        "issues events do not deploy",
    );
    // A signed body that is not a push payload.
    assert_status(
        &github(&api, &app, "push", "d-7", "[1, 2]", Some(SECRET)),
        422,
        "payload",
    );
    assert!(builds(&api, &token, &app).is_empty());

    // GitLab's token and Gitea's signature, each checked.
    let gitlab_push = json!({
        "object_kind": "push", "ref": "refs/heads/develop",
        "before": "95790bf891e76fee5e1747ab589903a6a1f80f22", "after": COMMIT,
        "checkout_sha": COMMIT, "user_username": "jsmith", "commits": []
    })
    .to_string();
    for (token_given, status) in [("wrong-token-here", 401), (SECRET, 202)] {
        let answer = api
            .call("POST", &format!("/webhooks/gitlab/{app}"))
            .header("Accept", "*/*")
            .header("X-Gitlab-Event", "Push Hook")
            .header("X-Gitlab-Token", token_given)
            .body(&gitlab_push)
            .send();
        assert_eq!(answer.status, status, "{}", answer.text());
    }
    let gitea_push = gitlab_push.replace("\"object_kind\":\"push\",", "");
    for (secret, status) in [("wrong-secret-here", 401), (SECRET, 202)] {
        let answer = api
            .call("POST", &format!("/webhooks/gitea/{app}"))
            .header("Accept", "*/*")
            .header("X-Gitea-Event", "push")
            .header(
                "X-Gitea-Signature",
                &hmac_sha256_hex(secret, gitea_push.as_bytes()),
            )
            .body(&gitea_push)
            .send();
        assert_eq!(answer.status, status, "{}", answer.text());
    }

    // A push to the branch queues a build; the same delivery again deploys nothing.
    let queued = github(&api, &app, "push", "delivery-42", &push, Some(SECRET));
    assert_eq!(queued.status, 202, "{}", queued.text());
    let queued = queued.json();
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["commit"], COMMIT);
    assert_eq!(queued["pusher"], "octocat");
    let id = queued["build_id"].as_i64().unwrap();
    ignored(
        &github(&api, &app, "push", "delivery-42", &push, Some(SECRET)),
        "delivery delivery-42 was already handled",
    );
    let list = builds(&api, &token, &app);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["source"], "github");
    assert_eq!(list[0]["delivery"], "delivery-42");
    assert_eq!(list[0]["message"], "Ship it\n\nDetails");

    // It fetches from the connected URL (not the payload's) and fails there.
    let mut build = Value::Null;
    assert!(
        wait_until(Duration::from_secs(60), || {
            build = api
                .call("GET", &format!("/apps/{app}/builds/{id}"))
                .token(&token)
                .send()
                .json();
            build["status"] == "failed"
        }),
        "the build did not fail: {build}"
    );
    let failure = build["failure"].as_str().unwrap();
    assert!(failure.contains(repo), "{failure}");
    let log = api
        .call("GET", &format!("/apps/{app}/builds/latest/log"))
        .token(&token)
        .send();
    assert_eq!(log.status, 200);
    let log = log.text();
    assert!(
        log.contains(&format!("Fetching 0d1a26e from {repo}")),
        "{log}"
    );
    assert!(!log.contains("evil.example"), "{log}");
    // Followed, a finished build's log is the same, whole.
    let followed = api
        .call("GET", &format!("/apps/{app}/builds/{id}/log?follow=true"))
        .token(&token)
        .send();
    assert_eq!(followed.text(), log);
    // No release was made.
    let releases = api
        .call("GET", &format!("/apps/{app}/releases"))
        .token(&token)
        .send()
        .json();
    assert_eq!(releases, json!([]));

    // The builds need a token; the webhooks do not (their signature is the auth).
    let answer = api.call("GET", &format!("/apps/{app}/builds")).send();
    assert_eq!(answer.status, 401);

    // Disconnected: the hooks are 404 again.
    let answer = api
        .call("DELETE", &format!("/apps/{app}/connection"))
        .token(&token)
        .send();
    assert_eq!(answer.status, 204, "{}", answer.text());
    assert_status(
        &github(&api, &app, "push", "d-9", &push, Some(SECRET)),
        404,
        "is not connected",
    );
    let answer = api
        .call("DELETE", &format!("/apps/{app}/connection"))
        .token(&token)
        .send();
    assert_eq!(answer.status, 404);
    // Its builds stay listed.
    assert_eq!(builds(&api, &token, &app).len(), 1);
}

#[test]
fn ssh_urls_get_a_deploy_key_and_a_generated_secret() {
    let gw = Gateway::start();
    let api = Api::new(&gw);
    let token = user_token(&gw, "alice");
    let other = user_token(&gw, "bob");
    let app = unique_app("keyed");
    api.call("POST", "/apps")
        .token(&token)
        .json(json!({ "name": app }))
        .send();
    let connect = |branch: &str| {
        api.call("PUT", &format!("/apps/{app}/connection"))
            .token(&token)
            .json(json!({ "repo": "git@github.com:acme/keyed.git", "branch": branch }))
            .send()
    };
    let first = connect("main");
    assert_eq!(first.status, 200, "{}", first.text());
    let first = first.json();
    assert_eq!(first["secret_generated"], true);
    let secret = first["secret"].as_str().unwrap();
    assert_eq!(secret.len(), 64);
    let key = first["deploy_key"].as_str().unwrap();
    assert!(key.starts_with("ssh-ed25519 "), "{key}");
    assert!(
        key.ends_with(&format!("empire deploy key for {app}")),
        "{key}"
    );

    // Connecting again (another branch) keeps the deploy key the host already has.
    let second = connect("production").json();
    assert_eq!(second["deploy_key"], first["deploy_key"]);
    assert_ne!(second["secret"], first["secret"]);
    let shown = api
        .call("GET", &format!("/apps/{app}/connection"))
        .token(&token)
        .send();
    assert_eq!(shown.status, 200);
    let shown = shown.json();
    assert_eq!(shown["branch"], "production");
    assert!(shown.get("secret").is_none(), "{shown}");
    assert!(!shown.to_string().contains("PRIVATE KEY"), "{shown}");

    // Bad input, and somebody else's app.
    for (body, word) in [
        (json!({ "repo": "/etc/passwd" }), "repository URL"),
        (json!({ "repo": "file:///srv/x.git" }), "repository URL"),
        (
            json!({ "repo": "https://h/x.git", "branch": "a..b" }),
            "branch",
        ),
        (
            json!({ "repo": "https://h/x.git", "secret": "short" }),
            "secret",
        ),
        (json!({}), "repo"),
    ] {
        let answer = api
            .call("PUT", &format!("/apps/{app}/connection"))
            .token(&token)
            .json(body)
            .send();
        assert_status(&answer, 422, word);
    }
    let answer = api
        .call("PUT", &format!("/apps/{app}/connection"))
        .token(&other)
        .json(json!({ "repo": "https://h/x.git" }))
        .send();
    assert_eq!(answer.status, 403, "{}", answer.text());
}

/// A build still running when its gateway stops is failed when the gateway starts again
/// (not left `running` for ever), and the app takes webhooks again.
#[test]
fn a_build_interrupted_by_a_restart_is_failed() {
    let mut gw = Gateway::builder().arg("--drain-timeout").arg("1s").start();
    let token = user_token(&gw, "alice");
    let app = unique_app("restarted");
    // A "git host" that takes the connection and never answers: the fetch hangs.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in silent.incoming().take(4).flatten() {
            open.push(stream);
        }
        std::thread::sleep(Duration::from_secs(60));
        drop(open);
    });
    {
        let api = Api::new(&gw);
        api.call("POST", "/apps")
            .token(&token)
            .json(json!({ "name": app }))
            .send();
        let connected = api
            .call("PUT", &format!("/apps/{app}/connection"))
            .token(&token)
            .json(json!({ "repo": format!("http://127.0.0.1:{port}/x.git"), "secret": SECRET }))
            .send();
        assert_eq!(connected.status, 200, "{}", connected.text());
        let push = github_push("refs/heads/main", COMMIT);
        let queued = github(&api, &app, "push", "r-1", &push, Some(SECRET));
        assert_eq!(queued.status, 202, "{}", queued.text());
        let id = queued.json()["build_id"].as_i64().unwrap();
        let path = format!("/apps/{app}/builds/{id}");
        assert!(wait_until(Duration::from_secs(20), || {
            api.call("GET", &path).token(&token).send().json()["status"] == "running"
        }));
    }
    gw.restart();
    let api = Api::new(&gw);
    let list = builds(&api, &token, &app);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["status"], "failed", "{list:?}");
    assert_eq!(list[0]["failure"], "interrupted by a gateway restart");
    // Its delivery stays handled.
    ignored(
        &github(
            &api,
            &app,
            "push",
            "r-1",
            &github_push("refs/heads/main", COMMIT),
            Some(SECRET),
        ),
        "already handled",
    );
    drop(held);
}
