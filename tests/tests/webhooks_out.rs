//! Outgoing webhooks against a real HTTP receiver on loopback, and deploy messages:
//! events are signed with the webhook's secret, a receiver that fails is retried and every
//! attempt recorded, a pending retry survives a gateway restart, `config.changed` names
//! keys and never values, `--require-message` refuses a push without a message, and an
//! `https://` receiver is reached over TLS only when its certificate chains to a root
//! the gateway trusts.

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use empire_e2e::{CliUser, Gateway, HttpRequest, TestCa, unique_app, wait_for};
use serde_json::Value;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    at: Instant,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "a body that is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A small HTTP/1.1 server on a loopback port that records every request and answers
/// the statuses of its script in turn (the last one from then on).
struct Receiver {
    scheme: &'static str,
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(script: &[u16]) -> Receiver {
        Receiver::listen("http", script, |stream, script, log| {
            serve(stream, script, log);
        })
    }

    /// The same over TLS, with a certificate for 127.0.0.1 that `ca` signed.
    fn start_tls(script: &[u16], ca: &Arc<TestCa>) -> Receiver {
        let ca = ca.clone();
        Receiver::listen("https", script, move |stream, script, log| {
            ca.serve(stream, |tls| serve(tls, script, log));
        })
    }

    fn listen(
        scheme: &'static str,
        script: &[u16],
        serve: impl Fn(TcpStream, &[u16], &Mutex<Vec<Received>>) + Clone + Send + 'static,
    ) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the receiver");
        let port = listener.local_addr().unwrap().port();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script = script.to_vec();
        let log = received.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
                let (script, log, serve) = (script.clone(), log.clone(), serve.clone());
                thread::spawn(move || serve(stream, &script, &log));
            }
        });
        Receiver {
            scheme,
            port,
            received,
        }
    }

    fn url(&self) -> String {
        format!("{}://127.0.0.1:{}/hook", self.scheme, self.port)
    }

    fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `probe` finds what it looks for among the requests.
    fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        probe: impl Fn(&[Received]) -> Option<T>,
    ) -> T {
        wait_for(what, timeout, || probe(&self.requests()))
    }
}

fn serve(stream: impl Read + Write, script: &[u16], log: &Mutex<Vec<Received>>) {
    let mut reader = BufReader::new(stream);
    let Some(HttpRequest { headers, body, .. }) = HttpRequest::read(&mut reader) else {
        return;
    };
    let status = {
        let mut log = log.lock().unwrap();
        log.push(Received {
            headers,
            body,
            at: Instant::now(),
        });
        script[(log.len() - 1).min(script.len() - 1)]
    };
    let text = format!("answer {status}");
    let stream = reader.get_mut();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.flush();
}

/// `sha256=` and the HMAC-SHA256 of `body` keyed with `secret`, by openssl (an
/// implementation independent of the gateway's).
fn openssl_signature(secret: &str, body: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running openssl");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let hex = text.rsplit(' ').next().unwrap_or_default().trim();
    format!("sha256={hex}")
}

fn attempt_statuses(delivery: &Value) -> Vec<u64> {
    delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_u64().unwrap_or(0))
        .collect()
}

#[test]
fn deploy_events_are_signed_retried_and_name_config_keys_only() {
    let gw = Gateway::builder()
        .arg("--webhook-backoff")
        .arg("300ms")
        .start();
    let dev = gw.developer("alice");
    let cli = CliUser::new(&gw, "alice");
    let app = unique_app("hooks");
    cli.ok(&["create", &app, "--no-remote"]);

    let everything = Receiver::start(&[200]);
    let flaky = Receiver::start(&[500, 500, 200]);
    let added = cli.ok(&[
        "webhooks:add",
        "-a",
        &app,
        &everything.url(),
        "--secret",
        "s3cret-for-tests",
    ]);
    assert!(added.contains("Secret: s3cret-for-tests"), "{added}");
    let flaky_hook = cli.json(&[
        "webhooks:add",
        "-a",
        &app,
        &flaky.url(),
        "--events",
        "deploy.succeeded",
    ]);
    let generated = flaky_hook["secret"].as_str().unwrap().to_string();
    assert_eq!(generated.len(), 64, "a generated secret: {generated}");
    let flaky_id = flaky_hook["id"].as_str().unwrap().to_string();
    let listed = cli.ok(&["webhooks", "-a", &app]);
    assert!(
        listed.contains(&flaky.url()) && listed.contains("deploy.succeeded"),
        "{listed}"
    );
    assert!(
        !listed.contains(&generated),
        "listing shows no secret:\n{listed}"
    );

    let repo = gw.app_repo(&dev, "web-httpd", &app);
    let commit = repo.git(&["rev-parse", "HEAD"]).trim().to_string();
    repo.push_args(&["-o", "message=first deploy of the hooks", "empire", "main"])
        .assert_success();

    // Everything the app did reaches the first receiver, signed with its secret.
    let released = everything.wait("release.created", Duration::from_secs(30), |r| {
        r.iter()
            .find(|r| r.header("x-empire-event") == Some("release.created"))
            .cloned()
    });
    let started = everything
        .requests()
        .into_iter()
        .find(|r| r.header("x-empire-event") == Some("deploy.started"))
        .expect("a deploy.started delivery");
    for request in [&started, &released] {
        assert_eq!(
            request.header("x-empire-signature").unwrap(),
            openssl_signature("s3cret-for-tests", &request.body),
            "the signature verifies against the body"
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        let delivery = request.header("x-empire-delivery").unwrap();
        assert_eq!(delivery.len(), 36, "a UUID: {delivery}");
        assert_eq!(request.json()["delivery"], delivery);
    }
    let body = started.json();
    assert_eq!(body["event"], "deploy.started");
    assert_eq!(body["app"], app.as_str());
    assert_eq!(body["release"], 1);
    assert_eq!(body["user"], "alice");
    assert_eq!(body["source"], "push");
    assert_eq!(body["commit"], commit.as_str());
    assert_eq!(body["description"], "first deploy of the hooks");
    assert!(released.json()["timings"]["duration_ms"].as_u64().is_some());

    // The second receiver answered 500 twice, then 200: three attempts, all recorded.
    flaky.wait("three attempts", Duration::from_secs(30), |r| {
        (r.len() >= 3).then_some(())
    });
    let requests = flaky.requests();
    let ids: Vec<&str> = requests
        .iter()
        .map(|r| r.header("x-empire-delivery").unwrap())
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one delivery retried: {ids:?}"
    );
    assert!(
        requests[1].at.duration_since(requests[0].at) >= Duration::from_millis(200),
        "a retry waits its backoff"
    );
    assert_eq!(
        requests[0].header("x-empire-signature").unwrap(),
        openssl_signature(&generated, &requests[0].body)
    );
    let deliveries = wait_for(
        "the third attempt recorded",
        Duration::from_secs(10),
        || {
            let list = cli.json(&["webhooks:deliveries", &flaky_id]);
            (list[0]["status"] == "delivered").then_some(list)
        },
    );
    assert_eq!(deliveries.as_array().unwrap().len(), 1, "{deliveries}");
    assert_eq!(deliveries[0]["id"], ids[0]);
    assert_eq!(deliveries[0]["attempt_count"], 3);
    assert_eq!(attempt_statuses(&deliveries[0]), [500, 500, 200]);
    assert_eq!(deliveries[0]["attempts"][0]["response"], "answer 500");
    let shown = cli.ok(&["webhooks:deliveries", &flaky_id]);
    assert!(shown.contains("delivered after 3 attempt(s)"), "{shown}");
    assert!(
        shown.contains("HTTP 500") && shown.contains("HTTP 200"),
        "{shown}"
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(flaky.requests().len(), 3, "nothing more after the 200");

    // config.changed carries the keys, never the values.
    cli.ok(&[
        "config:set",
        "-a",
        &app,
        "SECRET_TOKEN=hunter2-value",
        "OTHER=x",
    ]);
    let changed = everything.wait("config.changed", Duration::from_secs(60), |r| {
        r.iter()
            .find(|r| r.header("x-empire-event") == Some("config.changed"))
            .cloned()
    });
    let body = changed.json();
    assert_eq!(body["set"], serde_json::json!(["OTHER", "SECRET_TOKEN"]));
    assert_eq!(body["release"], 2);
    for request in everything.requests().iter().chain(flaky.requests().iter()) {
        let text = String::from_utf8_lossy(&request.body);
        assert!(
            !text.contains("hunter2"),
            "a config value left the gateway: {text}"
        );
    }
    let events: Vec<String> = everything
        .requests()
        .iter()
        .map(|r| r.header("x-empire-event").unwrap().to_string())
        .collect();
    for expected in [
        "deploy.started",
        "deploy.succeeded",
        "release.created",
        "config.changed",
    ] {
        assert!(
            events.iter().any(|e| e == expected),
            "{expected} in {events:?}"
        );
    }

    cli.ok(&["webhooks:remove", &flaky_id]);
    assert!(!cli.ok(&["webhooks", "-a", &app]).contains(&flaky.url()));

    // Scaling, a rollback and the app's end are told too.
    cli.ok(&["scale", "-a", &app, "web=2"]);
    cli.ok(&["rollback", "-a", &app, "v1"]);
    cli.ok(&["destroy", "-a", &app, "--confirm", &app]);
    // Deliveries go out concurrently: wait for all three, in whatever order.
    everything.wait(
        "scale, rollback and app.destroyed",
        Duration::from_secs(60),
        |r| {
            ["scale", "rollback", "app.destroyed"]
                .iter()
                .all(|event| r.iter().any(|r| r.header("x-empire-event") == Some(event)))
                .then_some(())
        },
    );
    let find = |event: &str| {
        everything
            .requests()
            .into_iter()
            .find(|r| r.header("x-empire-event") == Some(event))
            .unwrap_or_else(|| panic!("no {event} delivery"))
            .json()
    };
    assert_eq!(find("app.destroyed")["app"], app.as_str());
    let scale = find("scale");
    assert_eq!(scale["formation"][0]["process"], "web");
    assert_eq!(scale["formation"][0]["quantity"], 2);
    let rollback = find("rollback");
    assert_eq!(rollback["rollback_to"], 1);
    assert_eq!(rollback["release"], 3);
}

#[test]
fn a_pending_retry_survives_a_gateway_restart() {
    let mut gw = Gateway::builder()
        .arg("--webhook-backoff")
        .arg("4s")
        .start();
    gw.developer("alice");
    let cli = CliUser::new(&gw, "alice");
    let app = unique_app("hookrestart");
    cli.ok(&["create", &app, "--no-remote"]);
    let receiver = Receiver::start(&[503, 200]);
    let hook = cli.json(&[
        "webhooks:add",
        "-a",
        &app,
        &receiver.url(),
        "--events",
        "config.*",
        "--format",
        "slack",
    ]);
    let id = hook["id"].as_str().unwrap().to_string();

    // No release yet: the config change is recorded without a deploy.
    cli.ok(&["config:set", "-a", &app, "GREETING=hello"]);
    receiver.wait("the first attempt", Duration::from_secs(20), |r| {
        (!r.is_empty()).then_some(())
    });
    let pending = wait_for(
        "the failed attempt recorded",
        Duration::from_secs(5),
        || {
            let list = cli.json(&["webhooks:deliveries", &id]);
            (list[0]["attempt_count"] == 1).then_some(list)
        },
    );
    assert_eq!(pending[0]["status"], "pending");

    gw.restart();
    let restarted = Instant::now();
    receiver.wait(
        "the retry after the restart",
        Duration::from_secs(30),
        |r| (r.len() >= 2).then_some(()),
    );
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests[1].at >= restarted,
        "retried by the restarted gateway"
    );
    assert_eq!(
        requests[0].header("x-empire-delivery"),
        requests[1].header("x-empire-delivery")
    );
    let text = requests[1].json()["text"].as_str().unwrap().to_string();
    assert_eq!(
        text,
        format!("alice changed the config of {app}: set GREETING")
    );
    let delivered = wait_for("the delivery recorded", Duration::from_secs(5), || {
        let list = cli.json(&["webhooks:deliveries", &id]);
        (list[0]["status"] == "delivered").then_some(list)
    });
    assert_eq!(attempt_statuses(&delivered[0]), [503, 200]);
}

#[test]
fn require_message_refuses_a_push_without_one() {
    let gw = Gateway::builder().arg("--require-message").start();
    let dev = gw.developer("alice");
    let cli = CliUser::new(&gw, "alice");
    let app = unique_app("needsmsg");
    let repo = gw.app_repo(&dev, "web-httpd", &app);

    let refused = repo.push();
    refused.assert_failure();
    assert!(
        refused.contains(" !     a deploy message is required: git push -o message=\"…\""),
        "{}",
        refused.output()
    );
    assert!(
        refused.contains("--require-message"),
        "{}",
        refused.output()
    );
    assert!(
        !refused.contains("Building"),
        "nothing is built without a message:\n{}",
        refused.output()
    );

    repo.push_args(&["-o", "message=ship the login fix", "empire", "main"])
        .assert_success();
    let releases = cli.json(&["releases", "-a", &app]);
    assert_eq!(
        releases[0]["description"], "ship the login fix",
        "{releases}"
    );

    // An image deploy through the API needs one too.
    let refused = cli.run(&["deploy", "-a", &app, "empire/busybox:latest"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("a deploy message is required: empire deploy -m"),
        "{stderr}"
    );
    assert_eq!(
        cli.json(&["releases", "-a", &app])
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// `ssh … <command>`; answers (success, stdout, stderr).
fn ssh(dev: &empire_e2e::Developer, command: &str) -> (bool, String, String) {
    let output = dev.ssh(command);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn ssh_commands_manage_webhooks_for_collaborators_and_admins() {
    let gw = Gateway::start();
    let alice = gw.developer("alice"); // the first user: an admin
    let bob = gw.developer("bob");
    let app = unique_app("sshhooks");
    let (ok, _, err) = ssh(&alice, &format!("create {app}"));
    assert!(ok, "{err}");
    let receiver = Receiver::start(&[200]);

    let (ok, out, err) = ssh(
        &alice,
        &format!(
            "webhooks:add {app} {} --events config.changed --format slack --secret sekrit",
            receiver.url()
        ),
    );
    assert!(ok, "{err}");
    assert!(out.contains("-----> Webhook "), "{out}");
    assert!(out.contains("Secret: sekrit"), "{out}");
    let id: String = out
        .split("-----> Webhook ")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let (ok, out, _) = ssh(&alice, &format!("webhooks {app}"));
    assert!(
        ok && out.contains(&receiver.url()) && !out.contains("sekrit"),
        "{out}"
    );

    // Bob is no collaborator: the app's webhooks are not his; every app's are admins'.
    let (ok, _, err) = ssh(&bob, &format!("webhooks {app}"));
    assert!(!ok && err.contains("do not have access"), "{err}");
    let (ok, _, err) = ssh(&bob, &format!("webhooks:add --all {}", receiver.url()));
    assert!(
        !ok && err.contains("only admins may add webhooks of every app"),
        "{err}"
    );
    let (ok, _, err) = ssh(&bob, &format!("webhooks:remove {id}"));
    assert!(
        !ok && err.contains(&format!("webhook not found: {id}")),
        "{err}"
    );

    let (ok, _, err) = ssh(&alice, &format!("config:set {app} GREETING=hi"));
    assert!(ok, "{err}");
    let request = receiver.wait("config.changed", Duration::from_secs(20), |r| {
        r.first().cloned()
    });
    assert_eq!(
        request.header("x-empire-signature").unwrap(),
        openssl_signature("sekrit", &request.body)
    );
    let deliveries = wait_for("the delivery recorded", Duration::from_secs(5), || {
        let (_, out, _) = ssh(&alice, &format!("webhooks:deliveries {id}"));
        out.contains("delivered after 1 attempt(s)").then_some(out)
    });
    assert!(
        deliveries.contains("config.changed") && deliveries.contains("HTTP 200"),
        "{deliveries}"
    );

    let (ok, out, err) = ssh(&alice, &format!("webhooks:remove {id}"));
    assert!(
        ok && out.contains(&format!("Removed webhook {id}")),
        "{out}{err}"
    );
    let (_, out, _) = ssh(&alice, &format!("webhooks {app}"));
    assert!(out.contains("has no webhooks"), "{out}");
}

#[test]
fn a_failed_deploy_says_which_step_failed_and_how() {
    let gw = Gateway::start();
    let dev = gw.developer("alice");
    let cli = CliUser::new(&gw, "alice");
    let app = unique_app("hookfail");
    cli.ok(&["create", &app, "--no-remote"]);
    let receiver = Receiver::start(&[200]);
    cli.ok(&[
        "webhooks:add",
        "-a",
        &app,
        &receiver.url(),
        "--events",
        "deploy.*",
    ]);

    let repo = gw.app_repo(&dev, "failing-build", &app);
    repo.push().assert_failure();
    let failed = receiver.wait("deploy.failed", Duration::from_secs(60), |r| {
        r.iter()
            .find(|r| r.header("x-empire-event") == Some("deploy.failed"))
            .cloned()
    });
    let body = failed.json();
    assert_eq!(body["release"], 1);
    assert_eq!(body["source"], "push");
    assert!(
        body["step"].as_str().unwrap().starts_with("Building"),
        "the failing step: {body}"
    );
    let output: Vec<&str> = body["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        output.iter().any(|l| l.contains("build-step-output-42")),
        "the last lines of the step's output: {output:?}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("build failed"),
        "{body}"
    );
    // Deliveries go out concurrently: their order is not promised.
    let mut events: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("x-empire-event").unwrap().to_string())
        .collect();
    events.sort();
    assert_eq!(events, ["deploy.failed", "deploy.started"]);
}

#[test]
fn https_receivers_are_reached_only_with_a_trusted_certificate() {
    let trusted = Arc::new(TestCa::new("empire-test-ca"));
    let unknown = Arc::new(TestCa::new("unknown-ca"));
    // The gateway's TLS roots are the system's; SSL_CERT_FILE names another bundle.
    let gw = Gateway::builder()
        .env("SSL_CERT_FILE", trusted.ca_file().to_str().unwrap())
        .arg("--webhook-backoff")
        .arg("10s")
        .start();
    gw.developer("alice");
    let cli = CliUser::new(&gw, "alice");
    let app = unique_app("hooktls");
    cli.ok(&["create", &app, "--no-remote"]);
    let good = Receiver::start_tls(&[200], &trusted);
    let bad = Receiver::start_tls(&[200], &unknown);
    let good_hook = cli.json(&[
        "webhooks:add",
        "-a",
        &app,
        &good.url(),
        "--events",
        "config.*",
        "--secret",
        "tls-secret",
    ]);
    let bad_hook = cli.json(&[
        "webhooks:add",
        "-a",
        &app,
        &bad.url(),
        "--events",
        "config.*",
    ]);

    cli.ok(&["config:set", "-a", &app, "GREETING=hello"]);
    let request = good.wait("the delivery over TLS", Duration::from_secs(30), |r| {
        r.first().cloned()
    });
    assert_eq!(
        request.header("x-empire-signature").unwrap(),
        openssl_signature("tls-secret", &request.body)
    );
    assert_eq!(request.json()["event"], "config.changed");
    let delivered = wait_for("the delivery recorded", Duration::from_secs(5), || {
        let list = cli.json(&["webhooks:deliveries", good_hook["id"].as_str().unwrap()]);
        (list[0]["status"] == "delivered").then_some(list)
    });
    assert_eq!(attempt_statuses(&delivered[0]), [200]);

    // A certificate from an authority the gateway does not trust: no request is made,
    // and the attempt says why.
    let failed = wait_for(
        "the refused attempt recorded",
        Duration::from_secs(30),
        || {
            let list = cli.json(&["webhooks:deliveries", bad_hook["id"].as_str().unwrap()]);
            (list[0]["attempt_count"] == 1).then_some(list)
        },
    );
    assert_eq!(failed[0]["status"], "pending", "{failed}");
    let error = failed[0]["attempts"][0]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("invalid peer certificate: UnknownIssuer"),
        "{failed}"
    );
    assert!(bad.requests().is_empty(), "nothing was sent to it");
}
