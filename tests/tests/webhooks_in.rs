//! Push webhooks end to end: an app connected (over SSH) to a repository that
//! `git daemon` serves on a loopback port, pushes announced by signed GitHub, GitLab and
//! Gitea webhooks (posted with curl, signed with openssl), and the real gateway fetching
//! the pushed commit from the connected URL and deploying it through Docker; also an
//! SSH URL fetched with the app's deploy key, and an HTTPS URL (`git http-backend`
//! behind TLS) fetched with the configured access token.

use std::io::{BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use empire_e2e::{
    AppRepo, Developer, Gateway, HttpRequest, TestCa, empire_bin, unique_app, wait_until,
};

const DEPLOY_TIMEOUT: Duration = Duration::from_secs(240);
const SECRET: &str = "webhook-secret-for-e2e";

/// `git daemon` serving the bare repositories under a temp dir on a free loopback port.
struct GitHost {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl GitHost {
    fn start() -> GitHost {
        let dir = tempfile::Builder::new()
            .prefix("empire-e2e-githost-")
            .tempdir()
            .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("git")
            .args([
                "daemon",
                "--export-all",
                "--reuseaddr",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", dir.path().display()))
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting git daemon");
        assert!(
            wait_until(Duration::from_secs(10), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            }),
            "git daemon did not listen on {port}"
        );
        GitHost { dir, port, child }
    }

    /// A new bare repository `<name>.git`; its path (to push to) and its git:// URL.
    fn repo(&self, name: &str) -> (PathBuf, String) {
        let path = bare_repo(self.dir.path(), name);
        (path, format!("git://127.0.0.1:{}/{name}.git", self.port))
    }
}

/// A new bare repository `<name>.git` under `dir` with `main` as its HEAD.
fn bare_repo(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.git"));
    let out = Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    path
}

impl Drop for GitHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `git http-backend` behind TLS on a loopback port, serving the bare repositories under
/// a temp dir only to requests that carry `Authorization: Basic x-access-token:<token>`,
/// the way GitHub, GitLab and Gitea take access tokens over HTTPS.
struct HttpsGitHost {
    dir: tempfile::TempDir,
    port: u16,
    token: Arc<Mutex<String>>,
}

impl HttpsGitHost {
    fn start(ca: Arc<TestCa>, token: &str) -> HttpsGitHost {
        let dir = tempfile::Builder::new()
            .prefix("empire-e2e-httpshost-")
            .tempdir()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let token = Arc::new(Mutex::new(token.to_string()));
        let (root, required) = (dir.path().to_path_buf(), token.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
                let (ca, root) = (ca.clone(), root.clone());
                let token = required.lock().unwrap().clone();
                std::thread::spawn(move || {
                    ca.serve(stream, |tls| git_over_http(tls, &root, &token))
                });
            }
        });
        HttpsGitHost { dir, port, token }
    }

    /// A new bare repository `<name>.git`; its path (to push to) and its https:// URL.
    fn repo(&self, name: &str) -> (PathBuf, String) {
        let path = bare_repo(self.dir.path(), name);
        (path, format!("https://127.0.0.1:{}/{name}.git", self.port))
    }

    /// From now on only `token` is let in.
    fn require_token(&self, token: &str) {
        *self.token.lock().unwrap() = token.to_string();
    }
}

/// Answers one HTTP/1.1 request: 401 without the token, else what `git http-backend`
/// (a CGI program) makes of it.
fn git_over_http(stream: &mut (impl Read + Write), root: &Path, token: &str) {
    let mut reader = BufReader::new(stream);
    let Some(request) = HttpRequest::read(&mut reader) else {
        return;
    };
    let header = |name: &str| request.header(name);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
    if header("authorization") != Some(&format!("Basic {basic}")) {
        let _ = reader.get_mut().write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((&request.target, ""));
    let mut cgi = Command::new("git");
    cgi.arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &request.method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type").unwrap_or(""))
        .env("CONTENT_LENGTH", request.body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1");
    for (name, var) in [
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "HTTP_GIT_PROTOCOL"),
    ] {
        if let Some(value) = header(name) {
            cgi.env(var, value);
        }
    }
    let mut child = cgi
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting git http-backend");
    let mut input = child.stdin.take().unwrap();
    let body = request.body.clone();
    let writer = std::thread::spawn(move || input.write_all(&body));
    let output = child.wait_with_output().expect("git http-backend runs");
    let _ = writer.join();
    // CGI output: header lines, a blank line, the body; `Status:` sets the status.
    let split = output
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let split = split.or_else(|| {
        output
            .stdout
            .windows(2)
            .position(|w| w == b"\n\n")
            .map(|i| (i, 2))
    });
    let Some((end, gap)) = split else { return };
    let cgi_headers = String::from_utf8_lossy(&output.stdout[..end]).into_owned();
    let mut status = "200 OK".to_string();
    let mut response = String::new();
    for line in cgi_headers.lines() {
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                status = value.trim().to_string();
            }
            _ => response.push_str(&format!("{line}\r\n")),
        }
    }
    let content = &output.stdout[end + gap..];
    let stream = reader.get_mut();
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\n{response}Content-Length: {}\r\nConnection: close\r\n\r\n",
        content.len()
    );
    let _ = stream.write_all(content);
    let _ = stream.flush();
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn ssh_ok(dev: &Developer, command: &str) -> String {
    let out = dev.ssh(command);
    assert!(out.status.success(), "ssh {command}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// HMAC-SHA256 of `body` under `secret`, in hex, by openssl (not Empire's own code).
fn openssl_hmac(secret: &str, body: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    line.rsplit(' ').next().unwrap().trim().to_string()
}

/// POSTs a webhook with curl; answers the status and body.
fn post(url: &str, headers: &[(&str, String)], body: &str) -> (u16, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(&file, body).unwrap();
    let mut command = Command::new("curl");
    command.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"]);
    command.args(["-H", "Content-Type: application/json"]);
    for (name, value) in headers {
        command.arg("-H").arg(format!("{name}: {value}"));
    }
    command
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(url);
    let out = command.output().expect("curl runs");
    assert!(out.status.success(), "curl: {}", text(&out));
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = all.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

enum Host {
    GitHub,
    GitLab,
    Gitea,
}

/// A push event as `host` sends it, signed with `secret`; answers status and body.
/// A push to announce: the ref, the commit, the pusher and the delivery ID.
struct Push<'a>(&'a str, &'a str, &'a str, &'a str);

fn announce(gw: &Gateway, host: Host, app: &str, push: Push<'_>, secret: &str) -> (u16, String) {
    let Push(reference, commit, pusher, delivery) = push;
    let base = format!("http://127.0.0.1:{}", gw.http_port());
    match host {
        Host::GitHub => {
            let body = format!(
                r#"{{"ref":"{reference}","before":"0000000000000000000000000000000000000001","after":"{commit}","deleted":false,"repository":{{"clone_url":"https://evil.invalid/x.git"}},"pusher":{{"name":"{pusher}","email":"{pusher}@example.com"}},"head_commit":{{"id":"{commit}","message":"Deploy from GitHub\n\nbody"}},"commits":[]}}"#
            );
            post(
                &format!("{base}/webhooks/github/{app}"),
                &[
                    ("X-GitHub-Event", "push".into()),
                    ("X-GitHub-Delivery", delivery.into()),
                    (
                        "X-Hub-Signature-256",
                        format!("sha256={}", openssl_hmac(secret, &body)),
                    ),
                ],
                &body,
            )
        }
        Host::GitLab => {
            let body = format!(
                r#"{{"object_kind":"push","ref":"{reference}","before":"0000000000000000000000000000000000000001","after":"{commit}","checkout_sha":"{commit}","user_name":"Jay Smith","user_username":"{pusher}","commits":[{{"id":"{commit}","message":"Deploy from GitLab"}}],"total_commits_count":1}}"#
            );
            post(
                &format!("{base}/webhooks/gitlab/{app}"),
                &[
                    ("X-Gitlab-Event", "Push Hook".into()),
                    ("X-Gitlab-Event-UUID", delivery.into()),
                    ("X-Gitlab-Token", secret.into()),
                ],
                &body,
            )
        }
        Host::Gitea => {
            let body = format!(
                r#"{{"ref":"{reference}","before":"0000000000000000000000000000000000000001","after":"{commit}","commits":[{{"id":"{commit}","message":"Deploy from Gitea"}}],"head_commit":{{"id":"{commit}","message":"Deploy from Gitea"}},"pusher":{{"login":"{pusher}","username":"{pusher}"}},"sender":{{"login":"{pusher}"}}}}"#
            );
            post(
                &format!("{base}/webhooks/gitea/{app}"),
                &[
                    ("X-Gitea-Event", "push".into()),
                    ("X-Gitea-Delivery", delivery.into()),
                    ("X-Gitea-Signature", openssl_hmac(secret, &body)),
                ],
                &body,
            )
        }
    }
}

fn build_id(answer: &(u16, String)) -> String {
    assert_eq!(answer.0, 202, "{}", answer.1);
    assert!(answer.1.contains(r#""status":"queued""#), "{}", answer.1);
    let after = answer.1.split(r#""build_id":"#).nth(1).unwrap();
    after.split([',', '}']).next().unwrap().to_string()
}

/// Commits `index.html` = `content` and pushes it to the hosted repository's `branch`.
fn push_to_host(repo: &AppRepo, content: &str, branch: &str) -> String {
    repo.write("index.html", &format!("{content}\n"));
    let commit = repo.commit(content);
    repo.git(&[
        "push",
        "-q",
        "-f",
        "empire",
        &format!("HEAD:refs/heads/{branch}"),
    ]);
    commit
}

/// `releases:info <app> vN` over SSH.
fn release_info(dev: &Developer, app: &str, version: u32) -> String {
    ssh_ok(dev, &format!("releases:info {app} v{version}"))
}

fn builds_table(dev: &Developer, app: &str) -> String {
    ssh_ok(dev, &format!("builds {app}"))
}

/// The status of build `id` in `builds <app>`.
fn build_status(dev: &Developer, app: &str, id: &str) -> String {
    builds_table(dev, app)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_default()
}

/// Waits until build `id` is `status` (whatever it ended as otherwise).
fn wait_build_status(dev: &Developer, app: &str, id: &str, status: &str) {
    let mut last = String::new();
    assert!(
        wait_until(DEPLOY_TIMEOUT, || {
            last = build_status(dev, app, id);
            last == status
        }),
        "build {id} of {app} is {last:?}, not {status}: {}",
        ssh_ok(dev, &format!("builds:logs {app} {id}"))
    );
}

fn wait_build(dev: &Developer, app: &str, id: &str, status: &str) {
    let mut last = String::new();
    assert!(
        wait_until(DEPLOY_TIMEOUT, || {
            last = build_status(dev, app, id);
            last == status || last == "failed"
        }),
        "build {id} of {app} is {last:?}, not {status}"
    );
    assert_eq!(
        last,
        status,
        "build {id} of {app}: {}",
        ssh_ok(dev, &format!("builds:logs {app} {id}"))
    );
}

fn file_url(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn signed_pushes_from_three_hosts_deploy_the_pushed_commit_once_and_the_newest_last() {
    let gw = Gateway::start();
    let dev = gw.developer("alice");
    let host = GitHost::start();
    let app = unique_app("hook");
    gw.track_app(&app);
    ssh_ok(&dev, &format!("create {app}"));
    let (bare, url) = host.repo(&app);
    let connected = ssh_ok(
        &dev,
        &format!("apps:connect {app} --repo {url} --secret {SECRET}"),
    );
    assert!(
        connected.contains(&format!(
            "GitHub  http://127.0.0.1:{}/webhooks/github/{app}",
            gw.http_port()
        )),
        "{connected}"
    );
    assert!(
        connected.contains(&format!("Connected {app} to {url} (branch main)")),
        "{connected}"
    );
    let repo = AppRepo::from_fixture("web-httpd", &app, &file_url(&bare), "ssh");

    // GitHub.
    let first = push_to_host(&repo, "from github", "main");
    let answer = announce(
        &gw,
        Host::GitHub,
        &app,
        Push("refs/heads/main", &first, "octocat", "gh-1"),
        SECRET,
    );
    let id = build_id(&answer);
    // Followed from the start over SSH, the log streams until the build ends.
    let followed = std::thread::scope(|scope| {
        let follower = scope.spawn(|| ssh_ok(&dev, &format!("builds:logs {app} {id} -f")));
        wait_build(&dev, &app, &id, "succeeded");
        follower.join().unwrap()
    });
    assert!(followed.contains("Fetching"), "{followed}");
    assert!(followed.contains("Released v1"), "{followed}");
    assert!(
        followed.contains("Status:") && followed.contains("succeeded"),
        "{followed}"
    );
    gw.wait_for_body(&app, "from github", Duration::from_secs(30));
    let info = release_info(&dev, &app, 1);
    assert!(info.contains(&first), "{info}");
    assert!(info.contains("octocat"), "{info}");
    assert!(info.contains("Deploy from GitHub"), "{info}");
    let log = ssh_ok(&dev, &format!("builds:logs {app} {id} -f"));
    assert!(
        log.contains(&format!("Fetching {} from {url}", &first[..7])),
        "{log}"
    );
    assert!(log.contains("Released v1"), "{log}");
    assert!(log.contains("Status:"), "{log}");
    // The branch moved to the deployed commit in the app's repository.
    let head = Command::new("git")
        .arg("-C")
        .arg(gw.data_dir().join(format!("repos/{app}.git")))
        .args(["rev-parse", "refs/heads/main"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&head.stdout).trim(), first);

    // GitLab.
    let second = push_to_host(&repo, "from gitlab", "main");
    let id = build_id(&announce(
        &gw,
        Host::GitLab,
        &app,
        Push("refs/heads/main", &second, "jsmith", "gl-1"),
        SECRET,
    ));
    wait_build(&dev, &app, &id, "succeeded");
    gw.wait_for_body(&app, "from gitlab", Duration::from_secs(30));
    let info = release_info(&dev, &app, 2);
    assert!(info.contains(&second) && info.contains("jsmith"), "{info}");

    // Gitea.
    let third = push_to_host(&repo, "from gitea", "main");
    let gitea = announce(
        &gw,
        Host::Gitea,
        &app,
        Push("refs/heads/main", &third, "gitea-dev", "gt-1"),
        SECRET,
    );
    let id = build_id(&gitea);
    wait_build(&dev, &app, &id, "succeeded");
    gw.wait_for_body(&app, "from gitea", Duration::from_secs(30));
    let info = release_info(&dev, &app, 3);
    assert!(
        info.contains(&third) && info.contains("gitea-dev"),
        "{info}"
    );
    let builds_before = builds_table(&dev, &app).lines().count();

    // A bad signature changes nothing.
    let bad = push_to_host(&repo, "forged", "main");
    let answer = announce(
        &gw,
        Host::GitHub,
        &app,
        Push("refs/heads/main", &bad, "mallory", "gh-bad"),
        "not-the-secret",
    );
    assert_eq!(answer.0, 401, "{}", answer.1);
    // A push to another branch is ignored.
    let feature = push_to_host(&repo, "on a feature branch", "feature");
    let answer = announce(
        &gw,
        Host::GitHub,
        &app,
        Push("refs/heads/feature", &feature, "octocat", "gh-2"),
        SECRET,
    );
    assert_eq!(answer.0, 202, "{}", answer.1);
    assert!(
        answer.1.contains("only pushes to main deploy"),
        "{}",
        answer.1
    );
    // A replayed delivery is not deployed twice.
    let answer = announce(
        &gw,
        Host::Gitea,
        &app,
        Push("refs/heads/main", &third, "gitea-dev", "gt-1"),
        SECRET,
    );
    assert_eq!(answer.0, 202, "{}", answer.1);
    assert!(answer.1.contains("already handled"), "{}", answer.1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(builds_table(&dev, &app).lines().count(), builds_before);
    gw.wait_for_body(&app, "from gitea", Duration::from_secs(5));
    assert!(!ssh_ok(&dev, &format!("releases {app}")).contains("v4"));

    // The CLI, a client of the API.
    let token = gw.empire(&["tokens", "create", "alice"]);
    assert!(token.status.success(), "{}", text(&token));
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
    let home = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        Command::new(empire_bin())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("EMPIRE_URL", format!("http://127.0.0.1:{}", gw.http_port()))
            .env("EMPIRE_API_TOKEN", &token)
            .args(args)
            .output()
            .unwrap()
    };

    // Quick pushes: the first runs, the second waits and is replaced by the third, which
    // deploys after the first.
    let a = push_to_host(&repo, "quick a", "main");
    let b = push_to_host(&repo, "quick b", "main");
    let c = push_to_host(&repo, "quick c", "main");
    let id_a = build_id(&announce(
        &gw,
        Host::GitHub,
        &app,
        Push("refs/heads/main", &a, "octocat", "q-a"),
        SECRET,
    ));
    let id_b = build_id(&announce(
        &gw,
        Host::GitHub,
        &app,
        Push("refs/heads/main", &b, "octocat", "q-b"),
        SECRET,
    ));
    let id_c = build_id(&announce(
        &gw,
        Host::GitHub,
        &app,
        Push("refs/heads/main", &c, "octocat", "q-c"),
        SECRET,
    ));
    // The CLI follows the waiting build's log through the API until it ends.
    let log = std::thread::scope(|scope| {
        let follower = scope.spawn(|| cli(&["builds:logs", "-a", &app, &id_c, "--follow"]));
        wait_build(&dev, &app, &id_c, "succeeded");
        follower.join().unwrap()
    });
    assert!(log.status.success(), "{}", text(&log));
    let log = String::from_utf8_lossy(&log.stdout).into_owned();
    assert!(log.contains(&format!("Build {id_c} of {app}")), "{log}");
    assert!(log.contains("Released v5"), "{log}");
    assert!(
        log.contains(&format!("Build {id_c} succeeded: v5")),
        "{log}"
    );
    gw.wait_for_body(&app, "quick c", Duration::from_secs(30));
    assert_eq!(build_status(&dev, &app, &id_a), "succeeded");
    assert_eq!(build_status(&dev, &app, &id_b), "superseded");
    let releases = ssh_ok(&dev, &format!("releases {app}"));
    assert_eq!(
        (1..=6)
            .filter(|v| releases.contains(&format!("v{v} ")))
            .count(),
        5,
        "{releases}"
    );
    assert!(release_info(&dev, &app, 4).contains(&a));
    assert!(release_info(&dev, &app, 5).contains(&c));
    let skipped = ssh_ok(&dev, &format!("builds:logs {app} {id_b}"));
    assert!(
        skipped.contains(&format!("superseded by build {id_c}")),
        "{skipped}"
    );

    // The CLI lists the same builds through the API.
    let listed = cli(&["builds", "-a", &app]);
    assert!(listed.status.success(), "{}", text(&listed));
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.starts_with(&format!("=== {app} Builds")), "{listed}");
    assert!(
        listed.contains("superseded") && listed.contains("octocat (github)"),
        "{listed}"
    );
    // Unfollowed, the newest build's log as it is.
    let log = cli(&["builds:logs", "-a", &app]);
    assert!(log.status.success(), "{}", text(&log));
    let log = String::from_utf8_lossy(&log.stdout).into_owned();
    assert!(log.contains(&format!("Build {id_c} of {app}")), "{log}");
    assert!(log.contains("Released v5"), "{log}");

    // Disconnected, its hooks are refused.
    let out = ssh_ok(&dev, &format!("apps:disconnect {app}"));
    assert!(out.contains("Disconnected"), "{out}");
    let answer = announce(
        &gw,
        Host::GitHub,
        &app,
        Push("refs/heads/main", &c, "octocat", "q-d"),
        SECRET,
    );
    assert_eq!(answer.0, 404, "{}", answer.1);
}

/// An SSH clone URL is fetched with the deploy key `apps:connect` made: here the git host
/// is the gateway's own SSH server, where the key belongs to a user who may read the
/// source app.
#[test]
fn ssh_repositories_are_fetched_with_the_deploy_key() {
    let gw = Gateway::start();
    let dev = gw.developer("alice");
    let source = unique_app("src");
    let target = unique_app("dst");
    gw.track_app(&target);
    let repo = gw.app_repo(&dev, "web-httpd", &source);
    repo.write("index.html", "fetched over ssh\n");
    let commit = repo.commit("over ssh");
    repo.push().assert_success();
    ssh_ok(&dev, &format!("create {target}"));

    let url = format!("ssh://git@127.0.0.1:{}/{source}.git", gw.ssh_port());
    let connected = ssh_ok(
        &dev,
        &format!("apps:connect {target} --repo {url} --secret {SECRET}"),
    );
    let key = connected
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("ssh-ed25519 "))
        .unwrap_or_else(|| panic!("no deploy key in {connected}"))
        .to_string();
    assert!(
        key.ends_with(&format!("empire deploy key for {target}")),
        "{key}"
    );

    // Without the key on the host, the fetch is refused and the build fails.
    let id = build_id(&announce(
        &gw,
        Host::GitHub,
        &target,
        Push("refs/heads/main", &commit, "octocat", "ssh-1"),
        SECRET,
    ));
    wait_build_status(&dev, &target, &id, "failed");
    let log = ssh_ok(&dev, &format!("builds:logs {target} {id}"));
    assert!(
        log.contains(&format!("cannot fetch {commit} from {url}")),
        "{log}"
    );
    assert!(log.contains("Permission denied"), "{log}");

    // The host takes the key (read access to the source app), and the next push deploys.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deploy.pub");
    std::fs::write(&file, format!("{key}\n")).unwrap();
    let added = gw.empire(&["keys", "add", "deploybot", file.to_str().unwrap()]);
    assert!(added.status.success(), "{}", text(&added));
    ssh_ok(&dev, &format!("access:add {source} deploybot"));
    let id = build_id(&announce(
        &gw,
        Host::GitHub,
        &target,
        Push("refs/heads/main", &commit, "octocat", "ssh-2"),
        SECRET,
    ));
    wait_build(&dev, &target, &id, "succeeded");
    gw.wait_for_body(&target, "fetched over ssh", Duration::from_secs(30));
    let info = release_info(&dev, &target, 1);
    assert!(info.contains(&commit), "{info}");
}

#[test]
fn https_repositories_are_fetched_with_the_access_token() {
    let ca = Arc::new(TestCa::new("git-host-ca"));
    let host = HttpsGitHost::start(ca.clone(), "another-token");
    let gw = Gateway::builder()
        .arg("--git-https-token")
        .arg("host-access-token")
        .env("GIT_SSL_CAINFO", ca.ca_file().to_str().unwrap())
        .start();
    let dev = gw.developer("alice");
    let app = unique_app("https");
    gw.track_app(&app);
    ssh_ok(&dev, &format!("create {app}"));
    let (bare, url) = host.repo(&app);
    ssh_ok(
        &dev,
        &format!("apps:connect {app} --repo {url} --secret {SECRET}"),
    );
    let repo = AppRepo::from_fixture("web-httpd", &app, &file_url(&bare), "ssh");
    let commit = push_to_host(&repo, "fetched over https", "main");

    // The host wants another token: the fetch is refused, the build fails and says so,
    // and the token never shows in the log.
    let id = build_id(&announce(
        &gw,
        Host::GitHub,
        &app,
        Push("refs/heads/main", &commit, "octocat", "https-1"),
        SECRET,
    ));
    wait_build_status(&dev, &app, &id, "failed");
    let log = ssh_ok(&dev, &format!("builds:logs {app} {id}"));
    assert!(
        log.contains(&format!("cannot fetch {commit} from {url}")),
        "{log}"
    );
    assert!(
        log.contains("the host did not accept the gateway's access token"),
        "{log}"
    );
    assert!(!log.contains("host-access-token"), "{log}");

    // With the gateway's token accepted, the next push is fetched over TLS and deploys.
    host.require_token("host-access-token");
    let id = build_id(&announce(
        &gw,
        Host::GitHub,
        &app,
        Push("refs/heads/main", &commit, "octocat", "https-2"),
        SECRET,
    ));
    wait_build(&dev, &app, &id, "succeeded");
    gw.wait_for_body(&app, "fetched over https", Duration::from_secs(30));
    let info = release_info(&dev, &app, 1);
    assert!(info.contains(&commit), "{info}");
}
