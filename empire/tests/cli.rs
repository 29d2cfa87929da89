//! The `empire` CLI as a client of the HTTP API, against a real `empire server` (own data
//! dir, free ports, the real Docker engine): what a user types and what they see.
//! Every command runs with its own HOME (for ~/.netrc) and a working directory outside
//! any git repository.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use empire_e2e::{Gateway, TestKey, empire_bin, unique_app};
use serde_json::{Value, json};
use tempfile::TempDir;

use common::{build_image, user_token};

const SERVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A user at a terminal: a HOME of their own, a working directory, and the gateway's
/// API as EMPIRE_URL.
struct User {
    home: TempDir,
    cwd: TempDir,
    url: String,
}

/// What a command printed and how it ended.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn from(output: Output) -> Ran {
        Ran {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn ok(self, what: &str) -> Ran {
        assert_eq!(
            self.code,
            Some(0),
            "empire {what} failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("--json printed no JSON ({e}):\n{}", self.stdout))
    }

    fn has_line(&self, line: &str) -> bool {
        self.stdout.lines().any(|l| l == line)
    }
}

impl User {
    fn new(gw: &Gateway) -> User {
        User {
            home: tempfile::tempdir().unwrap(),
            cwd: tempfile::tempdir().unwrap(),
            url: format!("http://127.0.0.1:{}", gw.http_port()),
        }
    }

    fn netrc(&self) -> std::path::PathBuf {
        self.home.path().join(".netrc")
    }

    /// `program` in `dir` with this user's environment (and no other `EMPIRE_*`).
    fn program_in(&self, program: &Path, dir: &Path) -> Command {
        let mut command = Command::new(program);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("EMPIRE_") {
                command.env_remove(&key);
            }
        }
        command
            .env("HOME", self.home.path())
            .env("EMPIRE_URL", &self.url)
            .current_dir(dir);
        command
    }

    fn command_in(&self, dir: &Path, args: &[&str]) -> Command {
        let mut command = self.program_in(&empire_bin(), dir);
        command.args(args);
        command
    }

    fn run_in(&self, dir: &Path, args: &[&str]) -> Ran {
        Ran::from(self.command_in(dir, args).output().expect("running empire"))
    }

    /// `empire <args>` in the user's working directory, stdin closed.
    fn run(&self, args: &[&str]) -> Ran {
        self.run_in(self.cwd.path(), args)
    }

    /// `empire <args>` with `input` on stdin.
    fn run_with_stdin(&self, args: &[&str], input: &str) -> Ran {
        let mut child = self
            .command_in(self.cwd.path(), args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running empire");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        Ran::from(child.wait_with_output().unwrap())
    }

    /// `empire <args>` running, its stdout lines arriving on a channel with the time
    /// since the start.
    fn spawn_lines(&self, args: &[&str]) -> (Child, mpsc::Receiver<(Duration, String)>) {
        let mut child = self
            .command_in(self.cwd.path(), args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running empire");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let started = Instant::now();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((started.elapsed(), line)).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }

    fn login(&self, token: &str) {
        let ran = self
            .run(&["login", "--user", "alice", "--token", token])
            .ok("login");
        assert!(ran.has_line("Logged in as alice"), "{}", ran.stdout);
    }
}

/// A git repository (outside the workspace) whose `empire` remote is `url`.
fn repo_with_remote(url: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for args in [vec!["init", "-q"], vec!["remote", "add", "empire", url]] {
        let status = Command::new("git")
            .args(&args)
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }
    dir
}

fn assert_error(ran: &Ran, message: &str) {
    assert_eq!(
        ran.code,
        Some(1),
        "expected a failure:\nstdout:\n{}\nstderr:\n{}",
        ran.stdout,
        ran.stderr
    );
    assert!(
        ran.stderr
            .lines()
            .any(|l| l.starts_with(" !     ") && l.contains(message)),
        "no ` !     …{message}…` line on stderr:\n{}",
        ran.stderr
    );
}

#[test]
fn login_apps_config_domains_access_keys_and_errors() {
    let gw = Gateway::start();
    let token = user_token(&gw, "alice");
    let user = User::new(&gw);
    let app = unique_app("cli");

    // Without credentials every command says how to get some.
    let ran = user.run(&["apps"]);
    assert_error(&ran, "run `empire login`");
    assert!(ran.stdout.is_empty(), "{}", ran.stdout);

    // A wrong token is refused and nothing is stored.
    let ran = user.run(&["login", "--user", "alice", "--token", "emp_wrong"]);
    assert_error(&ran, "refused the token");
    assert!(!user.netrc().exists());
    // Someone else's name with alice's token is refused too.
    let ran = user.run(&["login", "--user", "bob", "--token", &token]);
    assert_error(&ran, "belongs to alice");

    // Login reads the user and token from stdin when it is not a terminal, replaces the
    // entry of the API's host and keeps every other entry.
    fs::write(
        user.netrc(),
        "machine github.com login me password ghp_keep\nmachine 127.0.0.1 login old password emp_stale\n",
    )
    .unwrap();
    let ran = user
        .run_with_stdin(&["login"], &format!("alice\n{token}\n"))
        .ok("login");
    assert!(ran.has_line("Logged in as alice"), "{}", ran.stdout);
    let netrc = fs::read_to_string(user.netrc()).unwrap();
    assert!(
        netrc.contains("machine github.com login me password ghp_keep\n"),
        "{netrc}"
    );
    assert!(
        netrc.contains(&format!("machine 127.0.0.1 login alice password {token}\n")),
        "{netrc}"
    );
    assert!(!netrc.contains("emp_stale"), "{netrc}");
    assert_eq!(netrc.matches("machine 127.0.0.1").count(), 1, "{netrc}");
    let mode = fs::metadata(user.netrc()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Into a fresh HOME, with flags: the file is created private.
    let fresh = User::new(&gw);
    fresh.login(&token);
    let mode = fs::metadata(fresh.netrc()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        fs::read_to_string(fresh.netrc()).unwrap(),
        format!("machine 127.0.0.1 login alice password {token}\n")
    );
    assert!(user.run(&["whoami"]).ok("whoami").has_line("alice"));
    // EMPIRE_API_TOKEN overrides the stored token.
    let mut command = user.command_in(user.cwd.path(), &["whoami"]);
    let ran = Ran::from(
        command
            .env("EMPIRE_API_TOKEN", "emp_not-a-token")
            .output()
            .unwrap(),
    );
    assert_eq!(ran.code, Some(1), "{}", ran.stdout);
    assert!(ran.stderr.contains(" !     "), "{}", ran.stderr);
    let nobody = User::new(&gw);
    let mut command = nobody.command_in(nobody.cwd.path(), &["whoami"]);
    let ran = Ran::from(command.env("EMPIRE_API_TOKEN", &token).output().unwrap());
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(ran.stdout, "alice\n");

    // apps, create, info.
    let ran = user.run(&["apps"]).ok("apps");
    assert!(ran.stdout.contains("You have no apps"), "{}", ran.stdout);
    let ran = user.run(&["create", &app]).ok("create");
    assert!(
        ran.has_line(&format!("Creating {app}... done")),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains(&gw.remote_url(&app)), "{}", ran.stdout);
    let ran = user.run(&["apps"]).ok("apps");
    assert!(
        ran.has_line("=== Apps") && ran.has_line(&app),
        "{}",
        ran.stdout
    );
    let listed = user.run(&["apps", "--json"]).ok("apps --json").json();
    assert_eq!(listed[0]["name"], app.as_str(), "{listed}");
    let ran = user.run(&["info", "-a", &app]).ok("info");
    assert!(ran.has_line(&format!("=== {app}")), "{}", ran.stdout);
    assert!(
        ran.has_line(&format!("Git URL:         {}", gw.remote_url(&app))),
        "{}",
        ran.stdout
    );
    assert!(ran.has_line("Current Release: none yet"), "{}", ran.stdout);
    assert_eq!(
        user.run(&["info", "-a", &app, "--json"]).ok("info").json()["name"],
        app.as_str()
    );

    // Config vars.
    let ran = user
        .run(&["config:set", "-a", &app, "A=1", "B=two words"])
        .ok("config:set");
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!("-----> Setting A, B and restarting {app}...").as_str(),
            "       done",
            "A: 1",
            "B: two words"
        ],
        "{}",
        ran.stdout
    );
    let ran = user.run(&["config", "-a", &app]).ok("config");
    assert_eq!(
        ran.stdout,
        format!("=== {app} Config Vars\nA: 1\nB: two words\n")
    );
    let config = user
        .run(&["config", "-a", &app, "--json"])
        .ok("config")
        .json();
    assert_eq!(config, json!({ "A": "1", "B": "two words" }));
    let ran = user
        .run(&["config:unset", "-a", &app, "A"])
        .ok("config:unset");
    assert!(
        ran.stdout
            .starts_with(&format!("-----> Unsetting A and restarting {app}...\n")),
        "{}",
        ran.stdout
    );
    let config = user
        .run(&["config", "-a", &app, "--json"])
        .ok("config")
        .json();
    assert_eq!(config, json!({ "B": "two words" }));
    assert_error(
        &user.run(&["config:set", "-a", &app, "NOEQUALS"]),
        "is not KEY=value",
    );

    // The app of the `empire` git remote, in both URL forms; none: a clear error.
    let ssh_form = repo_with_remote(&gw.remote_url(&app));
    let ran = user
        .run_in(ssh_form.path(), &["config"])
        .ok("config in a repo");
    assert!(
        ran.has_line(&format!("=== {app} Config Vars")),
        "{}",
        ran.stdout
    );
    assert!(ran.has_line("B: two words"), "{}", ran.stdout);
    let scp_form = repo_with_remote(&format!("git@127.0.0.1:{app}.git"));
    let ran = user
        .run_in(scp_form.path(), &["config:get", "B"])
        .ok("config:get in a repo");
    assert_eq!(ran.stdout, "two words\n");
    assert_error(&user.run(&["config"]), "no app given: pass -a APP");

    // `create` inside a git repository adds the `empire` remote.
    let second = unique_app("cli2");
    let repo = tempfile::tempdir().unwrap();
    assert!(
        Command::new("git")
            .args(["init", "-q"])
            .current_dir(repo.path())
            .status()
            .unwrap()
            .success()
    );
    let ran = user
        .run_in(repo.path(), &["create", &second])
        .ok("create in a repo");
    assert!(ran.has_line("Git remote empire added"), "{}", ran.stdout);
    let url = Command::new("git")
        .args(["remote", "get-url", "empire"])
        .current_dir(repo.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&url.stdout).trim(),
        gw.remote_url(&second)
    );
    let ran = user.run_in(repo.path(), &["info"]).ok("info in a repo");
    assert!(ran.has_line(&format!("=== {second}")), "{}", ran.stdout);

    // Domains.
    let hostname = format!("www.{app}.example.test");
    let ran = user
        .run(&["domains:add", "-a", &app, &hostname])
        .ok("domains:add");
    assert_eq!(ran.stdout, format!("Adding {hostname} to {app}... done\n"));
    let ran = user.run(&["domains", "-a", &app]).ok("domains");
    assert!(
        ran.has_line(&format!("=== {app} Custom Domains")),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout
            .lines()
            .any(|l| l.starts_with(&format!("{hostname}  "))),
        "{}",
        ran.stdout
    );
    user.run(&["domains:remove", "-a", &app, &hostname])
        .ok("domains:remove");
    let domains = user
        .run(&["domains", "-a", &app, "--json"])
        .ok("domains")
        .json();
    assert_eq!(domains, json!([]));

    // Access.
    assert!(gw.empire(&["users", "add", "bob"]).status.success());
    let ran = user
        .run(&["access:add", "-a", &app, "bob"])
        .ok("access:add");
    assert_eq!(ran.stdout, format!("Adding bob access to {app}... done\n"));
    let ran = user.run(&["access", "-a", &app]).ok("access");
    assert_eq!(ran.stdout, format!("=== {app} Access\nalice\nbob\n"));
    user.run(&["access:remove", "-a", &app, "bob"])
        .ok("access:remove");
    let ran = user.run(&["access", "-a", &app]).ok("access");
    assert_eq!(ran.stdout, format!("=== {app} Access\nalice\n"));
    assert_error(&user.run(&["access:add", "-a", &app, "nobody"]), "nobody");

    // Your own SSH keys.
    let ran = user.run(&["keys"]).ok("keys");
    assert!(
        ran.stdout.contains("You have no SSH keys"),
        "{}",
        ran.stdout
    );
    let key = TestKey::generate();
    let public = key.public_path().to_str().unwrap();
    let ran = user.run(&["keys:add", public]).ok("keys:add");
    assert_eq!(
        ran.stdout,
        format!(
            "Uploading {public} SSH key... done, {}\n",
            key.fingerprint()
        )
    );
    let ran = user.run(&["keys"]).ok("keys");
    assert!(
        ran.stdout
            .lines()
            .any(|l| l.starts_with(&format!("{}  ssh-ed25519", key.fingerprint()))),
        "{}",
        ran.stdout
    );
    let listed = user.run(&["keys", "--json"]).ok("keys --json").json();
    assert_eq!(listed[0]["fingerprint"], key.fingerprint().as_str());
    user.run(&["keys:remove", &key.fingerprint()])
        .ok("keys:remove");
    assert_eq!(user.run(&["keys", "--json"]).ok("keys").json(), json!([]));
    // The admin commands of the data dir are still there.
    let admin = gw.empire(&["keys", "list"]);
    assert!(admin.status.success());

    // API errors: ` !     <message>` and status 1.
    let ran = user.run(&["info", "-a", "no-such-app"]);
    assert_eq!(ran.code, Some(1));
    assert_eq!(ran.stderr, " !     app not found: no-such-app\n");
    assert!(ran.stdout.is_empty(), "{}", ran.stdout);

    // Destroying wants the name again.
    assert_error(
        &user.run(&["destroy", "-a", &app]),
        &format!("--confirm {app}"),
    );
    assert_error(
        &user.run(&["destroy", "-a", &app, "--confirm", "other"]),
        "does not match",
    );
    let ran = user
        .run(&["destroy", "-a", &app, "--confirm", &app])
        .ok("destroy");
    assert!(ran.stdout.ends_with("done\n"), "{}", ran.stdout);
    user.run(&["destroy", "-a", &second, "--confirm", &second])
        .ok("destroy");
    assert_eq!(user.run(&["apps", "--json"]).ok("apps").json(), json!([]));
    assert_error(
        &user.run(&["info", "-a", &app]),
        &format!("app not found: {app}"),
    );
}

#[test]
fn deploys_releases_rollbacks_processes_runs_and_logs() {
    let gw = Gateway::start();
    let token = user_token(&gw, "alice");
    let user = User::new(&gw);
    user.login(&token);
    let app = unique_app("clirun");
    user.run(&["create", &app]).ok("create");
    let image_a = build_image(&gw, &app, "a", "version a");
    let image_b = build_image(&gw, &app, "b", "version b");

    // A deploy streams its progress as it happens.
    let (mut child, lines) =
        user.spawn_lines(&["deploy", "-a", &app, &image_a, "--message", "first deploy"]);
    let status = child.wait().unwrap();
    let lines: Vec<(Duration, String)> = lines.iter().collect();
    let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    assert!(status.success(), "deploy failed: {text:#?}");
    let progress: Vec<&(Duration, String)> = lines
        .iter()
        .filter(|(_, l)| l.starts_with("-----> "))
        .collect();
    assert!(progress.len() >= 2, "{text:#?}");
    assert_eq!(
        text.last().copied(),
        Some(format!("Status: Created new release v1 of {app}").as_str())
    );
    let (first_at, _) = lines.first().unwrap();
    let (last_at, _) = lines.last().unwrap();
    assert!(
        *last_at > *first_at + Duration::from_millis(100),
        "the progress arrived all at once: {lines:?}"
    );
    gw.wait_for_body(&app, "version a", SERVE_TIMEOUT);
    let ran = user.run(&["deploy", "-a", &app, &image_b]).ok("deploy");
    assert!(
        ran.has_line(&format!("Status: Created new release v2 of {app}")),
        "{}",
        ran.stdout
    );
    gw.wait_for_body(&app, "version b", SERVE_TIMEOUT);
    // A deploy that fails says why, exits 1 and leaves a failed release v3.
    let ran = user.run(&["deploy", "-a", &app, &format!("empire/{app}:no-such-tag")]);
    assert_eq!(ran.code, Some(1), "{}", ran.stdout);
    assert!(ran.stderr.starts_with(" !     "), "{}", ran.stderr);

    // Releases, newest first, and one release with its build log.
    let ran = user.run(&["releases", "-a", &app]).ok("releases");
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("=== {app} Releases - Current: v2"),
        "{}",
        ran.stdout
    );
    let v2 = lines
        .iter()
        .position(|l| l.starts_with("v2  "))
        .expect("a v2 line");
    let v1 = lines
        .iter()
        .position(|l| l.starts_with("v1  "))
        .expect("a v1 line");
    assert!(v2 < v1, "{}", ran.stdout);
    let v1_words: Vec<&str> = lines[v1]
        .split("  ")
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect();
    assert_eq!(
        v1_words[..3],
        ["v1", "first deploy", "alice"],
        "{}",
        lines[v1]
    );
    assert!(
        v1_words[3] == "just now" || v1_words[3].ends_with(" ago"),
        "{}",
        lines[v1]
    );
    assert!(
        lines[v2].contains(&format!("Deploy {image_b}")),
        "{}",
        lines[v2]
    );
    let v3 = lines
        .iter()
        .find(|l| l.starts_with("v3  "))
        .expect("a v3 line");
    assert!(v3.contains("(failed)"), "{v3}");
    let ran = user
        .run(&["releases:info", "-a", &app, "v1"])
        .ok("releases:info");
    assert!(ran.has_line("=== Release v1"), "{}", ran.stdout);
    assert!(
        ran.has_line(&format!("Image:     {image_a}")),
        "{}",
        ran.stdout
    );
    let log_at = ran
        .stdout
        .find("=== v1 Build Log\n")
        .unwrap_or_else(|| panic!("no build log:\n{}", ran.stdout));
    assert!(
        ran.stdout[log_at..].contains("\n-----> "),
        "the build log has no progress:\n{}",
        ran.stdout
    );

    // Rolling back to v1 serves version a again, as v4.
    let ran = user.run(&["rollback", "-a", &app, "v1"]).ok("rollback");
    assert!(
        ran.stdout.starts_with(&format!(
            "-----> Rolling back {app} to v1...\n       done, v4\n"
        )),
        "{}",
        ran.stdout
    );
    gw.wait_for_body(&app, "version a", SERVE_TIMEOUT);
    let releases = user
        .run(&["releases", "-a", &app, "--json"])
        .ok("releases")
        .json();
    assert_eq!(releases[0]["version"], 4, "{releases}");
    assert_eq!(releases[0]["description"], "Rollback to v1");

    // Scaling and processes.
    let ran = user.run(&["scale", "-a", &app, "web=2"]).ok("scale");
    assert_eq!(
        ran.stdout,
        format!("-----> Scaling processes of {app}...\n       done, now running web at 2:1X\n")
    );
    let ran = user.run(&["ps", "-a", &app]).ok("ps");
    assert!(ran.has_line("=== web (1X) (2)"), "{}", ran.stdout);
    for name in ["web.1", "web.2"] {
        assert!(
            ran.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{name}:  up  v4  "))),
            "no {name} line:\n{}",
            ran.stdout
        );
    }
    let ran = user.run(&["scale", "-a", &app]).ok("scale");
    assert_eq!(ran.stdout, "web=2:1X\n");
    let ran = user.run(&["restart", "-a", &app, "web.1"]).ok("restart");
    assert_eq!(
        ran.stdout,
        format!("-----> Restarting web.1 of {app}...\n       done\n")
    );
    assert_error(&user.run(&["restart", "-a", &app, "worker"]), "worker");

    // Attached runs: output, exit status, stdin.
    let ran = user.run(&["run", "-a", &app, "--", "sh", "-c", "echo hi; exit 3"]);
    assert_eq!(ran.code, Some(3), "{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(ran.stdout, "hi\n");
    assert!(
        ran.stderr.contains("Running `sh -c 'echo hi; exit 3'`"),
        "{}",
        ran.stderr
    );
    let ran = user.run_with_stdin(&["run", "-a", &app, "--", "cat"], "from stdin\n");
    assert_eq!(
        (ran.code, ran.stdout.as_str()),
        (Some(0), "from stdin\n"),
        "{}",
        ran.stderr
    );
    // On a terminal (script(1) gives it one) the process gets a terminal too.
    let command = format!(
        "{} run -a {app} -- sh -c 'tty; exit 4'",
        empire_bin().display()
    );
    let script = user
        .program_in(Path::new("script"), user.cwd.path())
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("running script(1)");
    let printed = String::from_utf8_lossy(&script.stdout);
    assert_eq!(script.status.code(), Some(4), "{printed}");
    assert!(
        printed.contains("/dev/"),
        "no terminal on the other side: {printed:?}"
    );
    assert!(!printed.contains("not a tty"), "{printed:?}");
    // Detached.
    let ran = user
        .run(&["run", "-a", &app, "--detach", "--", "sleep", "1"])
        .ok("run --detach");
    assert!(ran.stderr.contains("done, run."), "{}", ran.stderr);

    // Logs: the lines there are, then following a restart.
    let ran = user.run(&["logs", "-a", &app, "-n", "5"]).ok("logs");
    assert!(!ran.stdout.is_empty());
    assert!(
        ran.stdout.lines().all(|l| l.contains(" app[")),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains("]: booting version a"),
        "{}",
        ran.stdout
    );
    let ran = user
        .run(&["logs", "-a", &app, "-n", "1", "--process", "web.2"])
        .ok("logs");
    assert_eq!(ran.stdout.lines().count(), 1, "{}", ran.stdout);
    assert!(ran.stdout.contains(" app[web.2]: "), "{}", ran.stdout);
    let (mut follow, lines) =
        user.spawn_lines(&["logs", "-a", &app, "-n", "0", "-f", "-p", "web.2"]);
    std::thread::sleep(Duration::from_millis(500));
    user.run(&["restart", "-a", &app, "web.2"]).ok("restart");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok((_, line)) => {
                let done = line.contains("app[web.2]: booting version a");
                seen.push(line);
                if done {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        seen.iter()
            .any(|l| l.contains("app[web.2]: booting version a")),
        "logs -f did not show the restarted web.2 booting: {seen:?}"
    );

    user.run(&["destroy", "-a", &app, "--confirm", &app])
        .ok("destroy");
}
