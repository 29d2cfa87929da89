//! Contract tests of the HTTP API against a real `empire server` (own data dir, free
//! ports, the real Docker engine). Every answer is checked against docs/openapi.yaml as
//! the server serves it: a status the document does not list for the route, or a body
//! that does not fit its schema, fails the test.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use empire_e2e::{Gateway, TestKey, http_get, unique_app, wait_until};
use serde_json::{Value, json};

use common::{
    ACCEPT, Answer, Api, Reader, build_image, connect, deploy, deploy_messages, user_token,
    write_request,
};

const SERVE_TIMEOUT: Duration = Duration::from_secs(20);

fn names(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|item| match &item[field] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// Creates the app `name` as the user of `token`; returns the answer, a 201.
fn create_app(api: &Api, token: &str, name: &str) -> Answer {
    let created = api
        .call("POST", "/apps")
        .token(token)
        .json(json!({ "name": name }))
        .send();
    assert_eq!(created.status, 201, "{}", created.text());
    created
}

/// A gateway, a client of its API and the token of its user `alice`, who owns a new app
/// named after `app`.
fn start_with_app(app: &str) -> (Gateway, Api, String, String) {
    let gw = Gateway::start();
    let api = Api::new(&gw);
    let token = user_token(&gw, "alice");
    let app = unique_app(app);
    create_app(&api, &token, &app);
    (gw, api, token, app)
}

/// Asserts an error answer with `status` and the error id `id`.
fn assert_error(answer: &Answer, status: u16, id: &str) {
    assert_eq!(
        (answer.status, answer.json()["id"].as_str()),
        (status, Some(id)),
        "{}",
        answer.text()
    );
}

/// Asserts an error answer with `status` whose message mentions `word`.
fn assert_refused(answer: &Answer, status: u16, word: &str) {
    assert_eq!(answer.status, status, "{}", answer.text());
    let message = answer.message();
    assert!(message.contains(word), "{word:?} is not in {message:?}");
}

/// Follows `Next-Range` from `first` to the end; returns every page's status and
/// items.
fn all_pages(
    api: &Api,
    token: &str,
    path: &str,
    first: &str,
    field: &str,
) -> Vec<(u16, Vec<String>)> {
    let mut range = Some(first.to_string());
    let mut pages = Vec::new();
    while let Some(current) = range.take() {
        let answer = api
            .call("GET", path)
            .token(token)
            .header("Range", &current)
            .send();
        assert!(
            answer.status == 200 || answer.status == 206,
            "GET {path} with Range {current:?}: {} {}",
            answer.status,
            answer.text()
        );
        pages.push((answer.status, names(&answer.json(), field)));
        if answer.status == 206 {
            range = Some(
                answer
                    .header("next-range")
                    .unwrap_or_else(|| panic!("206 without Next-Range for {current:?}"))
                    .to_string(),
            );
        } else {
            assert_eq!(
                answer.header("next-range"),
                None,
                "a complete page has no Next-Range"
            );
        }
        assert!(pages.len() < 20, "the pages never end");
    }
    pages
}

#[test]
fn authentication_errors_access_keys_tokens_and_ranges() {
    let gw = Gateway::start();
    let api = Api::new(&gw);
    let _root = user_token(&gw, "root"); // the first user is the admin
    let alice = user_token(&gw, "alice");
    let bob = user_token(&gw, "bob");
    let app = unique_app("auth");

    // The document is served as checked in.
    let served = api.call("GET", "/openapi.yaml").send();
    assert_eq!(served.status, 200);
    assert_eq!(
        served.text(),
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml"))
            .unwrap()
    );
    assert_eq!(api.call("GET", "/health").send().text(), "ok\n");

    // No token, a wrong token, Basic and Bearer.
    let none = api.call("GET", "/apps").send();
    assert_eq!(none.status, 401, "{}", none.text());
    assert_eq!(none.json()["id"], "unauthorized");
    assert!(none.message().contains("API token"), "{}", none.message());
    assert_eq!(
        none.header("www-authenticate"),
        Some("Basic realm=\"empire\"")
    );
    let wrong = api.call("GET", "/apps").token("emp_not-a-token").send();
    assert_error(&wrong, 401, "unauthorized");
    let me = api
        .call("GET", "/account")
        .header("Authorization", &format!("Bearer {alice}"))
        .send();
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(
        (me.json()["name"].as_str(), me.json()["admin"].as_bool()),
        (Some("alice"), Some(false))
    );
    assert_eq!(
        api.call("GET", "/account")
            .token(&alice)
            .header("Accept", "application/json")
            .send()
            .status,
        200
    );
    let v2 = api
        .call("GET", "/account")
        .token(&alice)
        .header("Accept", "application/vnd.heroku+json; version=2")
        .unchecked() // any route; the document says so in its description
        .send();
    assert_error(&v2, 406, "not_acceptable");

    // Apps: create, conflicts, bad names, bad bodies, unknown apps, other people's apps.
    let created = create_app(&api, &alice, &app);
    let body = created.json();
    assert_eq!(body["name"], app.as_str());
    assert_eq!(body["current_release"], Value::Null);
    assert_eq!(
        body["git_url"],
        format!("ssh://git@127.0.0.1:{}/{app}.git", gw.ssh_port()).as_str()
    );
    assert_eq!(body["web_url"], gw.app_url(&app).as_str());
    let again = api
        .call("POST", "/apps")
        .token(&alice)
        .json(json!({ "name": app }))
        .send();
    assert_error(&again, 409, "conflict");
    let bad_name = api
        .call("POST", "/apps")
        .token(&alice)
        .json(json!({ "name": "Bad_Name" }))
        .send();
    assert_refused(&bad_name, 422, "app name");
    let no_name = api
        .call("POST", "/apps")
        .token(&alice)
        .json(json!({}))
        .send();
    assert_refused(&no_name, 422, "name");
    let broken = api
        .call("POST", "/apps")
        .token(&alice)
        .body("{\"name\": ")
        .send();
    assert_error(&broken, 400, "bad_request");
    assert!(
        broken.message().contains("not valid JSON"),
        "{}",
        broken.message()
    );
    let unknown = api
        .call("GET", "/apps/no-such-app-here")
        .token(&alice)
        .send();
    assert_error(&unknown, 404, "not_found");
    assert_eq!(unknown.message(), "app not found: no-such-app-here");
    let foreign = api.call("GET", &format!("/apps/{app}")).token(&bob).send();
    assert_error(&foreign, 403, "forbidden");
    assert!(foreign.message().contains(&app), "{}", foreign.message());
    let bobs_apps = api.call("GET", "/apps").token(&bob).send();
    assert_eq!(bobs_apps.json(), json!([]));
    let no_route = api
        .call("GET", "/no/such/route")
        .token(&alice)
        .unchecked()
        .send();
    assert_error(&no_route, 404, "not_found");

    // Collaborators: access:add and access:remove.
    let added = api
        .call("PUT", &format!("/apps/{app}/collaborators/bob"))
        .token(&alice)
        .send();
    assert_eq!(added.status, 201, "{}", added.text());
    let collaborators = api
        .call("GET", &format!("/apps/{app}/collaborators"))
        .token(&bob)
        .send();
    assert_eq!(collaborators.status, 200, "{}", collaborators.text());
    assert_eq!(names(&collaborators.json(), "id"), ["alice", "bob"]);
    let nobody = api
        .call("POST", &format!("/apps/{app}/collaborators"))
        .token(&alice)
        .json(json!({ "user": "nobody" }))
        .send();
    assert_refused(&nobody, 404, "nobody");
    let removed = api
        .call("DELETE", &format!("/apps/{app}/collaborators/bob"))
        .token(&alice)
        .send();
    assert_eq!(removed.status, 204, "{}", removed.text());
    assert_eq!(
        api.call("GET", &format!("/apps/{app}"))
            .token(&bob)
            .send()
            .status,
        403
    );

    // Config before the first release, and invalid values.
    let config_path = format!("/apps/{app}/config-vars");
    assert_eq!(
        api.call("GET", &config_path).token(&alice).send().json(),
        json!({})
    );
    let bad_key = api
        .call("PATCH", &config_path)
        .token(&alice)
        .json(json!({ "1BAD": "x" }))
        .send();
    assert_error(&bad_key, 422, "invalid_params");
    assert!(
        bad_key.message().contains("config key"),
        "{}",
        bad_key.message()
    );
    let set = api
        .call("PATCH", &config_path)
        .token(&alice)
        .json(json!({ "FOO": "bar", "N": 3 }))
        .send();
    assert_eq!(set.status, 200, "{}", set.text());
    assert_eq!(set.json(), json!({ "FOO": "bar", "N": "3" }));
    let unset = api
        .call("PATCH", &config_path)
        .token(&alice)
        .json(json!({ "FOO": null }))
        .send();
    assert_eq!(unset.json(), json!({ "N": "3" }));

    // Domains and scaling refuse bad values before anything runs.
    let bad_host = api
        .call("POST", &format!("/apps/{app}/domains"))
        .token(&alice)
        .json(json!({ "hostname": "not a host!" }))
        .send();
    assert_refused(&bad_host, 422, "hostname");
    let bad_count = api
        .call("PATCH", &format!("/apps/{app}/formation"))
        .token(&alice)
        .json(json!({ "updates": [{ "process": "web", "quantity": -1 }] }))
        .send();
    assert_refused(&bad_count, 422, "quantity");
    let no_release = api
        .call("PATCH", &format!("/apps/{app}/formation"))
        .token(&alice)
        .json(json!({ "updates": [{ "process": "web", "quantity": 2 }] }))
        .send();
    assert_eq!(no_release.status, 409, "{}", no_release.text());

    // SSH keys.
    let junk = api
        .call("POST", "/account/keys")
        .token(&alice)
        .json(json!({ "public_key": "ssh-rsa not-a-key" }))
        .send();
    assert_refused(&junk, 422, "public_key");
    let key = TestKey::generate();
    let public = std::fs::read_to_string(key.public_path()).unwrap();
    let added = api
        .call("POST", "/account/keys")
        .token(&alice)
        .json(json!({ "public_key": public.trim() }))
        .send();
    assert_eq!(added.status, 201, "{}", added.text());
    assert_eq!(added.json()["fingerprint"], key.fingerprint().as_str());
    let keys = api.call("GET", "/account/keys").token(&alice).send();
    assert_eq!(names(&keys.json(), "fingerprint"), [key.fingerprint()]);
    assert_eq!(
        api.call("GET", "/account/keys").token(&bob).send().json(),
        json!([])
    );
    let encoded = key.fingerprint().replace('/', "%2F").replace('+', "%2B");
    let foreign_key = api
        .call("DELETE", &format!("/account/keys/{encoded}"))
        .token(&bob)
        .send();
    assert_eq!(foreign_key.status, 404, "{}", foreign_key.text());
    let deleted = api
        .call("DELETE", &format!("/account/keys/{encoded}"))
        .token(&alice)
        .send();
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    assert_eq!(
        api.call("GET", "/account/keys").token(&alice).send().json(),
        json!([])
    );

    // OAuth authorizations: a user's name and token make a new token.
    let basic =
        |user: &str, token: &str| format!("Basic {}", STANDARD.encode(format!("{user}:{token}")));
    let authorized = api
        .call("POST", "/oauth/authorizations")
        .header("Authorization", &basic("alice", &alice))
        .json(json!({ "description": "laptop", "expires_in": 2_592_000 }))
        .send();
    assert_eq!(authorized.status, 201, "{}", authorized.text());
    let new_token = authorized.json()["access_token"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_token, alice);
    assert_eq!(authorized.json()["description"], "laptop");
    let me = api.call("GET", "/account").token(&new_token).send();
    assert_eq!(me.json()["name"], "alice");
    let mismatch = api
        .call("POST", "/oauth/authorizations")
        .header("Authorization", &basic("bob", &alice))
        .send();
    assert_eq!(mismatch.status, 401, "{}", mismatch.text());
    assert_eq!(api.call("POST", "/oauth/authorizations").send().status, 401);
    let wrong = api
        .call("POST", "/oauth/authorizations")
        .header("Authorization", &basic("alice", "emp_wrong"))
        .send();
    assert_eq!(wrong.status, 401);

    // Ranges: pages of at most `max`, 206 with Next-Range until the last.
    let mut all = vec![app.clone()];
    for _ in 0..4 {
        let name = unique_app("page");
        create_app(&api, &alice, &name);
        all.push(name);
    }
    all.sort();
    let whole = api.call("GET", "/apps").token(&alice).send();
    assert_eq!(whole.status, 200);
    let mut listed = names(&whole.json(), "name");
    listed.sort();
    assert_eq!(listed, all);
    let pages = all_pages(&api, &alice, "/apps", "name ..; max=2", "name");
    let statuses: Vec<u16> = pages.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [206, 206, 200]);
    let paged: Vec<String> = pages.into_iter().flat_map(|(_, names)| names).collect();
    assert_eq!(paged, all);
    let from = all_pages(
        &api,
        &alice,
        "/apps",
        &format!("name {}..; max=10", all[3]),
        "name",
    );
    assert_eq!(from, [(200, all[3..].to_vec())]);
    let bad_range = api
        .call("GET", "/apps")
        .token(&alice)
        .header("Range", "name ..; max=lots")
        .send();
    assert_eq!(bad_range.status, 400, "{}", bad_range.text());

    // Destroying: a confirmation that does not repeat the name is refused.
    let refused = api
        .call("DELETE", &format!("/apps/{app}?confirm=other"))
        .token(&alice)
        .send();
    assert_refused(&refused, 422, "confirm");
    let destroyed = api
        .call("DELETE", &format!("/apps/{app}"))
        .token(&alice)
        .header("X-Heroku-Confirm", &app)
        .send();
    assert_eq!(destroyed.status, 204, "{}", destroyed.text());
    assert_eq!(
        api.call("GET", &format!("/apps/{app}"))
            .token(&alice)
            .send()
            .status,
        404
    );
    let emp_style = api
        .call("DELETE", &format!("/apps/{}", all[1]))
        .token(&alice)
        .send();
    assert_eq!(emp_style.status, 204, "{}", emp_style.text());
}

#[test]
fn deploys_stream_and_config_changes_and_rollbacks_make_releases() {
    let (gw, api, token, app) = start_with_app("deploy");
    let image_a = build_image(&gw, &app, "a", "version a");
    let image_b = build_image(&gw, &app, "b", "version b");

    // The deploy streams Docker-style JSON messages as it goes.
    let answer = api
        .call("POST", &format!("/apps/{app}/deploys"))
        .token(&token)
        .header("Commit-Message", "first of all")
        .json(json!({ "image": image_a }))
        .send();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        answer.header("content-type"),
        Some("application/json; boundary=NL")
    );
    let messages = deploy_messages(&answer);
    let progress: Vec<&str> = messages
        .iter()
        .filter_map(|m| m["stream"].as_str())
        .collect();
    assert!(
        progress.len() >= 2,
        "too little progress:\n{}",
        answer.text()
    );
    assert!(
        progress.iter().all(|line| line.ends_with('\n')),
        "{progress:?}"
    );
    let last = messages.last().unwrap();
    assert_eq!(
        last["status"],
        format!("Status: Created new release v1 of {app}").as_str()
    );
    let aux = messages
        .iter()
        .find(|m| m.get("aux").is_some())
        .expect("an aux message");
    assert_eq!(aux["aux"]["release"], 1);
    assert_eq!(aux["aux"]["url"], gw.app_url(&app).as_str());
    let (first_at, _) = answer.chunks.first().unwrap();
    let (last_at, _) = answer.chunks.last().unwrap();
    assert!(
        answer.chunks.len() >= 2 && *last_at > *first_at + Duration::from_millis(100),
        "the progress arrived all at once: {:?}",
        answer
            .chunks
            .iter()
            .map(|(at, c)| (at, String::from_utf8_lossy(c).into_owned()))
            .collect::<Vec<_>>()
    );
    gw.wait_for_body(&app, "version a", SERVE_TIMEOUT);
    let v1 = api
        .call("GET", &format!("/apps/{app}/releases/v1"))
        .token(&token)
        .send();
    assert_eq!(v1.status, 200, "{}", v1.text());
    let v1 = v1.json();
    assert_eq!(
        (v1["version"].as_u64(), v1["status"].as_str()),
        (Some(1), Some("succeeded"))
    );
    assert_eq!(v1["image"], image_a.as_str());
    assert_eq!(v1["description"], "first of all");
    assert_eq!(v1["current"], true);
    assert_eq!(
        api.call("GET", &format!("/apps/{app}/releases/1"))
            .token(&token)
            .send()
            .json()["version"],
        1
    );
    let log = api
        .call("GET", &format!("/apps/{app}/releases/1/log"))
        .token(&token)
        .send();
    assert_eq!(log.status, 200, "{}", log.text());
    assert!(
        log.header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(
        log.text().contains(progress[0].trim_end()),
        "the release log lacks the streamed progress {:?}:\n{}",
        progress[0],
        log.text()
    );
    let missing = api
        .call("GET", &format!("/apps/{app}/releases/99"))
        .token(&token)
        .send();
    assert_refused(&missing, 404, "release");

    // Setting config makes one release the processes see.
    let config_path = format!("/apps/{app}/config-vars");
    let set = api
        .call("PATCH", &config_path)
        .token(&token)
        .json(json!({ "GREETING": "hi" }))
        .send();
    assert_eq!(set.status, 200, "{}", set.text());
    assert_eq!(set.json(), json!({ "GREETING": "hi" }));
    let env = gw.get_app(&app, "/cgi-bin/env").expect("GET /cgi-bin/env");
    assert_eq!(env.body.trim(), "GREETING=hi OTHER=");
    let releases = api
        .call("GET", &format!("/apps/{app}/releases"))
        .token(&token)
        .send();
    assert_eq!(names(&releases.json(), "version"), ["2", "1"]);

    // POST /deploys names the app after the image's repository (`empire/<app>:b`).
    let answer = api
        .call("POST", "/deploys")
        .token(&token)
        .json(json!({ "image": image_b }))
        .send();
    assert_eq!(answer.status, 200, "{}", answer.text());
    let messages = deploy_messages(&answer);
    assert_eq!(
        messages.last().unwrap()["status"],
        format!("Status: Created new release v3 of {app}").as_str()
    );
    gw.wait_for_body(&app, "version b", SERVE_TIMEOUT);
    assert_eq!(
        gw.get_app(&app, "/cgi-bin/env").unwrap().body.trim(),
        "GREETING=hi OTHER="
    );

    // Setting and unsetting together: one release; `null` unsets.
    let changed = api
        .call("PATCH", &config_path)
        .token(&token)
        .json(json!({ "GREETING": null, "OTHER": "x" }))
        .send();
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert_eq!(changed.json(), json!({ "OTHER": "x" }));
    assert_eq!(
        gw.get_app(&app, "/cgi-bin/env").unwrap().body.trim(),
        "GREETING= OTHER=x"
    );
    let releases = api
        .call("GET", &format!("/apps/{app}/releases"))
        .token(&token)
        .send();
    assert_eq!(names(&releases.json(), "version"), ["4", "3", "2", "1"]);
    assert_eq!(
        api.call("GET", &format!("/apps/{app}/config-vars/2"))
            .token(&token)
            .send()
            .json(),
        json!({ "GREETING": "hi" })
    );

    // A deploy that fails ends its stream with an error and changes nothing.
    let failed = api
        .call("POST", &format!("/apps/{app}/deploys"))
        .token(&token)
        .json(json!({ "image": format!("empire/{app}:no-such-tag") }))
        .send();
    assert_eq!(failed.status, 200, "{}", failed.text());
    let last = deploy_messages(&failed).pop().unwrap();
    assert!(
        last["error"].is_string(),
        "the stream did not end with an error:\n{}",
        failed.text()
    );
    assert_eq!(last["errorDetail"]["message"], last["error"]);
    assert_eq!(gw.get_app(&app, "/").unwrap().body.trim(), "version b");
    let no_image = api
        .call("POST", &format!("/apps/{app}/deploys"))
        .token(&token)
        .json(json!({}))
        .send();
    assert_refused(&no_image, 422, "image");

    // Rolling back to v2 brings back its image and its config, as a new release.
    let rollback = api
        .call("POST", &format!("/apps/{app}/releases"))
        .token(&token)
        .json(json!({ "release": "v2" }))
        .send();
    assert_eq!(rollback.status, 200, "{}", rollback.text());
    let rolled = rollback.json();
    assert_eq!(rolled["image"], image_a.as_str());
    assert_eq!(rolled["current"], true);
    let version = rolled["version"].as_u64().unwrap();
    assert!(version >= 5, "{rolled}");
    gw.wait_for_body(&app, "version a", SERVE_TIMEOUT);
    assert_eq!(
        gw.get_app(&app, "/cgi-bin/env").unwrap().body.trim(),
        "GREETING=hi OTHER="
    );
    assert_eq!(
        api.call("GET", &config_path).token(&token).send().json(),
        json!({ "GREETING": "hi" })
    );
    let app_now = api
        .call("GET", &format!("/apps/{app}"))
        .token(&token)
        .send();
    assert_eq!(app_now.json()["current_release"].as_u64(), Some(version));
    let bad = api
        .call("POST", &format!("/apps/{app}/releases"))
        .token(&token)
        .json(json!({ "release": "latest" }))
        .send();
    assert_refused(&bad, 422, "release");

    // Releases in pages, newest first when asked.
    let path = format!("/apps/{app}/releases");
    let every = names(
        &api.call("GET", &path).token(&token).send().json(),
        "version",
    );
    let mut ascending: Vec<u64> = every.iter().map(|v| v.parse().unwrap()).collect();
    ascending.sort_unstable();
    let pages = all_pages(&api, &token, &path, "version ..; max=2", "version");
    let paged: Vec<u64> = pages
        .iter()
        .flat_map(|(_, v)| v.iter().map(|v| v.parse::<u64>().unwrap()))
        .collect();
    assert_eq!(paged, ascending);
    assert!(
        pages.len() >= 3 && pages[..pages.len() - 1].iter().all(|(s, _)| *s == 206),
        "{pages:?}"
    );
    let newest = all_pages(
        &api,
        &token,
        &path,
        "version ..; max=2, order=desc",
        "version",
    );
    assert_eq!(
        newest[0].1,
        [version.to_string(), (version - 1).to_string()]
    );
}

/// An attached run over a raw connection: returns the status, the headers and every
/// byte that came after the head.
fn attach(
    api: &Api,
    token: &str,
    app: &str,
    body: Value,
    upgrade: bool,
    stdin: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    let path = format!("/apps/{app}/dynos");
    let extra: &[(&str, &str)] = if upgrade {
        &[("Connection", "Upgrade"), ("Upgrade", "tcp")]
    } else {
        &[("X-Multiplex", "1")] // what `emp run` sends
    };
    let mut stream = post_json(
        api,
        &path,
        format!("Basic {}", STANDARD.encode(format!(":{token}"))),
        extra,
        &body,
        Duration::from_secs(120),
    );
    let mut reader = Reader::new(stream.try_clone().unwrap());
    let (status, headers) = reader.head().unwrap();
    api.spec().response("POST", &path, status);
    if status == 101 || (status == 200 && !upgrade) {
        stream.write_all(stdin).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let rest = reader.rest().unwrap();
        (status, headers, String::from_utf8_lossy(&rest).into_owned())
    } else {
        let mut rest = Vec::new();
        reader
            .body(&headers, status, |chunk| {
                rest.extend_from_slice(chunk);
                true
            })
            .unwrap();
        (status, headers, String::from_utf8_lossy(&rest).into_owned())
    }
}

/// Sends `POST path` with the JSON `body` on a fresh connection, authorized by
/// `authorization` and with the `extra` headers, and hands over the connection to
/// read the answer as it comes.
fn post_json(
    api: &Api,
    path: &str,
    authorization: String,
    extra: &[(&str, &str)],
    body: &Value,
    timeout: Duration,
) -> TcpStream {
    let mut stream = connect(api.port(), timeout).unwrap();
    let mut headers = vec![
        ("Accept".to_string(), ACCEPT.to_string()),
        ("Authorization".to_string(), authorization),
        ("Content-Type".to_string(), "application/json".to_string()),
    ];
    headers.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    let body = body.to_string();
    write_request(
        &mut stream,
        "POST",
        path,
        &headers,
        Some(body.as_bytes()),
        false,
    )
    .unwrap();
    stream
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn processes_runs_logs_and_domains() {
    let (mut gw, api, token, app) = start_with_app("procs");
    let image = build_image(&gw, &app, "a", "version a");
    assert_eq!(deploy(&api, &token, &app, &image), 1);
    gw.wait_for_body(&app, "version a", SERVE_TIMEOUT);

    // Formation and scaling.
    let formation = api
        .call("GET", &format!("/apps/{app}/formation"))
        .token(&token)
        .send();
    assert_eq!(formation.status, 200, "{}", formation.text());
    assert_eq!(formation.json()[0]["type"], "web");
    assert_eq!(formation.json()[0]["quantity"], 1);
    assert_eq!(formation.json()[0]["size"], "1X");
    let scale = |updates: Value| {
        api.call("PATCH", &format!("/apps/{app}/formation"))
            .token(&token)
            .json(json!({ "updates": updates }))
            .send()
    };
    let bad = scale(json!([{ "process": "web", "quantity": "many" }]));
    assert_refused(&bad, 422, "quantity");
    let unknown = scale(json!([{ "process": "worker", "quantity": 1 }]));
    assert_refused(&unknown, 404, "worker");
    let scaled = scale(json!([{ "process": "web", "quantity": 2 }]));
    assert_eq!(scaled.status, 200, "{}", scaled.text());
    assert_eq!(
        scaled.json(),
        json!([{ "id": "web", "type": "web", "quantity": 2, "size": "1X", "command": null }])
    );
    let dynos = api
        .call("GET", &format!("/apps/{app}/dynos"))
        .token(&token)
        .send();
    assert_eq!(dynos.status, 200, "{}", dynos.text());
    let mut running = names(&dynos.json(), "name");
    running.sort();
    assert_eq!(running, ["web.1", "web.2"], "{}", dynos.text());
    let first = api
        .call("GET", &format!("/apps/{app}/dynos"))
        .token(&token)
        .header("Range", "name ..; max=1")
        .send();
    assert_eq!(first.status, 206, "{}", first.text());
    assert_eq!(names(&first.json(), "name"), ["web.1"]);
    assert_eq!(first.header("next-range"), Some("name ]web.1..; max=1"));

    // Restarts: one instance, one type, everything; unknown types are not found.
    let web1_started = dynos
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "web.1")
        .unwrap()["created_at"]
        .clone();
    let restart = |target: &str| {
        api.call("DELETE", &format!("/apps/{app}/dynos{target}"))
            .token(&token)
            .send()
    };
    assert_eq!(restart("/web.1").status, 204);
    assert_eq!(restart("/web").status, 204);
    assert_eq!(restart("").status, 204);
    let nope = restart("/worker");
    assert_eq!(nope.status, 404, "{}", nope.text());
    let after = api
        .call("GET", &format!("/apps/{app}/dynos"))
        .token(&token)
        .send()
        .json();
    let mut running = names(&after, "name");
    running.sort();
    assert_eq!(running, ["web.1", "web.2"]);
    let web1 = after
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "web.1")
        .unwrap();
    assert_ne!(web1["created_at"], web1_started, "web.1 was not replaced");
    gw.wait_for_body(&app, "version a", SERVE_TIMEOUT);

    // Attached runs: output, then the exit status; stdin reaches the process.
    let (status, headers, output) = attach(
        &api,
        &token,
        &app,
        json!({ "command": "echo out; echo err >&2; exit 3", "attach": true, "force_no_tty": true }),
        true,
        b"",
    );
    assert_eq!(status, 101, "{output}");
    assert_eq!(header(&headers, "upgrade"), Some("tcp"));
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/vnd.empire.raw-stream")
    );
    let (printed, exit) = output
        .split_once("\u{FFFF} heroku-command-exit-status: ")
        .unwrap_or_else(|| panic!("no exit status in {output:?}"));
    assert_eq!(exit, "3\n");
    let mut lines: Vec<&str> = printed.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["err", "out"]);
    let (status, _, output) = attach(
        &api,
        &token,
        &app,
        json!({ "command": "cat; echo done", "attach": true, "tty": false }),
        true,
        b"hello from stdin\n",
    );
    assert_eq!(status, 101, "{output}");
    assert_eq!(
        output,
        "hello from stdin\ndone\n\u{FFFF} heroku-command-exit-status: 0\n"
    );
    // `emp run` asks for no upgrade: 200 and the raw stream, no status line.
    let (status, headers, output) = attach(
        &api,
        &token,
        &app,
        json!({ "command": "echo legacy; exit 1", "attach": true, "force_no_tty": true, "env": { "TERM": "xterm" } }),
        false,
        b"",
    );
    assert_eq!(status, 200, "{output}");
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/vnd.empire.raw-stream")
    );
    for framing in ["content-length", "transfer-encoding", "upgrade"] {
        assert_eq!(header(&headers, framing), None, "{headers:?}");
    }
    assert_eq!(output, "legacy\n");
    // Errors before the process starts are ordinary answers.
    let (status, _, output) = attach(
        &api,
        &token,
        "no-such-app-here",
        json!({ "command": "true", "attach": true }),
        true,
        b"",
    );
    assert_eq!(status, 404, "{output}");
    let (status, _, output) = attach(
        &api,
        &token,
        &app,
        json!({ "command": "  ", "attach": true }),
        true,
        b"",
    );
    assert_eq!(status, 422, "{output}");
    assert!(output.contains("command"), "{output}");

    // A detached run answers at once with the dyno.
    let detached = api
        .call("POST", &format!("/apps/{app}/dynos"))
        .token(&token)
        .json(json!({ "command": "echo detached-marker; sleep 2", "attach": false }))
        .send();
    assert_eq!(detached.status, 201, "{}", detached.text());
    let dyno = detached.json();
    assert!(dyno["name"].as_str().unwrap().starts_with("run."), "{dyno}");
    assert_eq!(
        (dyno["type"].as_str(), dyno["command"].as_str()),
        (Some("run"), Some("echo detached-marker; sleep 2"))
    );
    assert_eq!(dyno["release"]["version"], 1);
    let sized = api
        .call("POST", &format!("/apps/{app}/dynos"))
        .token(&token)
        .json(json!({ "command": "true", "size": "huge" }))
        .send();
    assert_refused(&sized, 422, "size");
    let sized = api
        .call("POST", &format!("/apps/{app}/dynos"))
        .token(&token)
        .json(json!({ "command": "sleep 20", "size": "2X" }))
        .send();
    assert_eq!(sized.status, 201, "{}", sized.text());
    let container = sized.json()["id"].as_str().unwrap_or_default().to_string();
    let inspected = std::process::Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.HostConfig.CpuShares}} {{.HostConfig.Memory}}",
            &container,
        ])
        .output()
        .expect("running docker inspect");
    assert_eq!(
        String::from_utf8_lossy(&inspected.stdout).trim(),
        "512 1073741824",
        "a 2X one-off gets 512 CPU shares and 1 GB: {}",
        String::from_utf8_lossy(&inspected.stderr)
    );

    // Log sessions: the lines there are, or a stream that goes on.
    let logs = api
        .call("POST", &format!("/apps/{app}/log-sessions"))
        .token(&token)
        .json(json!({ "tail": false, "lines": 20, "process": "web" }))
        .send();
    assert_eq!(logs.status, 200, "{}", logs.text());
    assert!(
        logs.text()
            .lines()
            .any(|l| l.contains(" app[web.1]: booting version a")),
        "no boot line of web.1 in the logs:\n{}",
        logs.text()
    );
    assert!(
        logs.text().lines().all(|l| l.contains(" app[web.")),
        "{}",
        logs.text()
    );
    let one = api
        .call("POST", &format!("/apps/{app}/log-sessions"))
        .token(&token)
        .json(json!({ "tail": false, "dyno": "web.2" }))
        .send();
    assert!(
        one.text().lines().all(|l| l.contains(" app[web.2]: ")),
        "{}",
        one.text()
    );
    assert!(!one.text().is_empty());
    follow_logs_sees_a_restart(&api, &token, &app);

    // Domains: the router answers a hostname once it is added, and not after.
    let hostname = format!("www.{app}.example.test");
    let add = api
        .call("POST", &format!("/apps/{app}/domains"))
        .token(&token)
        .json(json!({ "hostname": hostname.to_uppercase() }))
        .send();
    assert_eq!(add.status, 201, "{}", add.text());
    assert_eq!(add.json()["hostname"], hostname.as_str());
    let routed = http_get(gw.router_port(), &hostname, "/").expect("GET / by hostname");
    assert_eq!((routed.status, routed.body.trim()), (200, "version a"));
    // A restarted gateway routes the hostname again.
    gw.restart();
    let mut last = String::new();
    let served = wait_until(SERVE_TIMEOUT, || {
        match http_get(gw.router_port(), &hostname, "/") {
            Ok(r) => {
                last = format!("{} {:?}", r.status, r.body);
                r.status == 200 && r.body.trim() == "version a"
            }
            Err(e) => {
                last = e.to_string();
                false
            }
        }
    });
    assert!(served, "{hostname} is not served after a restart: {last}");
    let twice = api
        .call("POST", &format!("/apps/{app}/domains"))
        .token(&token)
        .json(json!({ "hostname": hostname }))
        .send();
    assert_eq!(twice.status, 409, "{}", twice.text());
    let domains = api
        .call("GET", &format!("/apps/{app}/domains"))
        .token(&token)
        .send();
    assert_eq!(names(&domains.json(), "hostname"), [hostname.as_str()]);
    let removed = api
        .call("DELETE", &format!("/apps/{app}/domains/{hostname}"))
        .token(&token)
        .send();
    assert_eq!(removed.status, 204, "{}", removed.text());
    assert!(
        wait_until(Duration::from_secs(5), || http_get(
            gw.router_port(),
            &hostname,
            "/"
        )
        .is_ok_and(|r| r.status != 200)),
        "the router still serves {hostname}"
    );
    let gone = api
        .call("DELETE", &format!("/apps/{app}/domains/{hostname}"))
        .token(&token)
        .send();
    assert_eq!(gone.status, 404, "{}", gone.text());

    // Stopping the gateway ends a following log session cleanly.
    let mut stream = connect(api.port(), Duration::from_secs(30)).unwrap();
    let headers = vec![("Authorization".to_string(), format!("Bearer {token}"))];
    write_request(
        &mut stream,
        "POST",
        &format!("/apps/{app}/log-sessions"),
        &headers,
        None,
        true,
    )
    .unwrap();
    let mut reader = Reader::new(stream);
    let (status, headers) = reader.head().unwrap();
    assert_eq!(status, 200);
    gw.send_sigterm();
    let mut followed = String::new();
    reader
        .body(&headers, status, |chunk| {
            followed.push_str(&String::from_utf8_lossy(chunk));
            true
        })
        .unwrap_or_else(|e| {
            panic!("the log stream broke off instead of ending: {e}; got:\n{followed}")
        });
    assert!(gw.wait_exit(Duration::from_secs(10)).success());
}

/// A following log session shows lines written after it started: web.2 boots again.
fn follow_logs_sees_a_restart(api: &Api, token: &str, app: &str) {
    let path = format!("/apps/{app}/log-sessions");
    let stream = post_json(
        api,
        &path,
        format!("Bearer {token}"),
        &[("Connection", "close")],
        &json!({ "lines": 0, "dyno": "web.2" }),
        Duration::from_secs(60),
    );
    let mut reader = Reader::new(stream);
    let (status, headers) = reader.head().unwrap();
    assert_eq!(status, 200);
    api.spec().response("POST", &path, status);
    let restarter = {
        let token = token.to_string();
        let port = api.port();
        let app = app.to_string();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            common::raw_request(
                port,
                "DELETE",
                &format!("/apps/{app}/dynos/web.2"),
                &[("Authorization".into(), format!("Bearer {token}"))],
                None,
                Duration::from_secs(120),
            )
            .expect("restarting web.2")
        })
    };
    let mut seen = String::new();
    reader
        .body(&headers, status, |chunk| {
            seen.push_str(&String::from_utf8_lossy(chunk));
            !seen.contains("app[web.2]: booting version a")
        })
        .unwrap_or_else(|e| panic!("reading the log stream: {e}; so far:\n{seen}"));
    assert!(seen.contains("app[web.2]: booting version a"), "{seen}");
    assert_eq!(restarter.join().unwrap().status, 204);
}
