//! `empire server` as a child process on a fresh data dir and free ports.

use std::fs::{self, OpenOptions};
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::docker::cleanup;
use crate::git::{AppRepo, Developer, TestKey};
use crate::http::{HttpResponse, http_get};
use crate::util::{empire_bin, run, wait_until};

/// How long a gateway has to answer `/health` after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long SIGTERM may take before the gateway is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How many lines of the gateway's log a failing test prints.
const LOG_TAIL_LINES: usize = 200;

/// Options for [`Gateway`]; `Gateway::builder().boot_timeout("8s").start()`.
#[derive(Debug, Clone, Default)]
pub struct GatewayBuilder {
    boot_timeout: Option<String>,
    lock_timeout: Option<String>,
    no_autocreate: bool,
    args: Vec<String>,
    env: Vec<(String, String)>,
    via: SettingsVia,
}

/// How the harness hands the server its settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SettingsVia {
    /// `empire --data-dir D server --ssh-listen … --no-autocreate`.
    #[default]
    Flags,
    /// `EMPIRE_DATA_DIR`, `EMPIRE_SSH_LISTEN`, …, `EMPIRE_NO_AUTOCREATE=true`.
    Env,
    /// `empire --config <data-dir>/empire.toml server`, keys named like the flags.
    ConfigFile,
}

impl GatewayBuilder {
    /// `--boot-timeout` (e.g. `8s`).
    pub fn boot_timeout(mut self, value: &str) -> Self {
        self.boot_timeout = Some(value.into());
        self
    }

    /// `--lock-timeout` (e.g. `15m`).
    pub fn lock_timeout(mut self, value: &str) -> Self {
        self.lock_timeout = Some(value.into());
        self
    }

    /// `--no-autocreate`: pushes to unknown apps are refused.
    pub fn no_autocreate(mut self) -> Self {
        self.no_autocreate = true;
        self
    }

    /// Any other `empire server` flag.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Hand the server its settings as flags (the default), `EMPIRE_*` variables or a
    /// `--config` TOML file.
    pub fn settings_via(mut self, via: SettingsVia) -> Self {
        self.via = via;
        self
    }

    /// An environment variable for the server process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts the gateway and waits until `/health` answers 200.
    pub fn start(self) -> Gateway {
        let data = tempfile::Builder::new()
            .prefix("empire-e2e-")
            .tempdir()
            .expect("creating the data dir");
        let [ssh_port, http_port, router_port] = free_ports();
        let log_path = data.path().join("gateway.log");
        let mut gateway = Gateway {
            data,
            ssh_port,
            http_port,
            router_port,
            options: self,
            child: None,
            log_path,
            id: None,
            apps: Mutex::new(Vec::new()),
        };
        gateway.spawn();
        gateway
    }
}

/// A running `empire server` with its own data dir and ports. Dropping it stops the
/// server (SIGTERM, then SIGKILL after 20 s), removes the containers labelled with its
/// gateway id and the images of the apps its repos used, and — when the test is
/// failing — prints the tail of the server's log.
#[derive(Debug)]
pub struct Gateway {
    data: TempDir,
    ssh_port: u16,
    http_port: u16,
    router_port: u16,
    options: GatewayBuilder,
    child: Option<Child>,
    log_path: PathBuf,
    id: Option<String>,
    apps: Mutex<Vec<String>>,
}

impl Gateway {
    /// Starts a gateway with default options.
    pub fn start() -> Gateway {
        GatewayBuilder::default().start()
    }

    /// Options for a gateway.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// The SSH (git) port.
    pub fn ssh_port(&self) -> u16 {
        self.ssh_port
    }

    /// The HTTP API port.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The router port.
    pub fn router_port(&self) -> u16 {
        self.router_port
    }

    /// The gateway id the server wrote to `<data-dir>/gateway-id`.
    pub fn id(&self) -> &str {
        self.id.as_deref().expect("the gateway has started")
    }

    /// Everything the server printed so far (stdout and stderr).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `ssh://git@127.0.0.1:<ssh-port>/<app>.git`.
    pub fn remote_url(&self, app: &str) -> String {
        format!("ssh://git@127.0.0.1:{}/{app}.git", self.ssh_port)
    }

    /// The URL a push prints for `app`: `http://<app>.localhost:<router-port>/`.
    pub fn app_url(&self, app: &str) -> String {
        format!("http://{app}.localhost:{}/", self.router_port)
    }

    /// The Host header the router routes `app` by.
    pub fn app_host(&self, app: &str) -> String {
        format!("{app}.localhost")
    }

    /// The fingerprint (`SHA256:…`) of the SSH host key the server presents, as a
    /// client sees it (`ssh-keyscan` then `ssh-keygen -l`).
    pub fn host_key_fingerprint(&self) -> String {
        let scan = run(Command::new("ssh-keyscan").args([
            "-T",
            "5",
            "-t",
            "ed25519",
            "-p",
            &self.ssh_port.to_string(),
            "127.0.0.1",
        ]));
        let keys = String::from_utf8_lossy(&scan.stdout).into_owned();
        let line = keys
            .lines()
            .find(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap_or_else(|| {
                panic!(
                    "ssh-keyscan found no ed25519 host key on port {}: {}",
                    self.ssh_port,
                    String::from_utf8_lossy(&scan.stderr)
                )
            });
        // `127.0.0.1 ssh-ed25519 AAAA…` → the key part for ssh-keygen.
        let key: Vec<&str> = line.split_whitespace().skip(1).collect();
        let file = self.data.path().join(".scanned-host-key.pub");
        fs::write(&file, format!("{}\n", key.join(" "))).expect("writing the scanned key");
        let output = crate::util::run_ok(Command::new("ssh-keygen").arg("-lf").arg(&file));
        let _ = fs::remove_file(&file);
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .nth(1)
            .expect("a fingerprint")
            .to_string()
    }

    /// Remembers `app` so its images are removed when the gateway is dropped.
    pub fn track_app(&self, app: &str) {
        let mut apps = self.apps.lock().expect("apps lock");
        if !apps.iter().any(|a| a == app) {
            apps.push(app.to_string());
        }
    }

    /// `GET path` through the router with `Host: <app>.localhost`.
    pub fn get_app(&self, app: &str, path: &str) -> io::Result<HttpResponse> {
        http_get(self.router_port, &self.app_host(app), path)
    }

    /// Waits up to `timeout` until `GET /` for `app` answers 200 with `body` (trimmed);
    /// panics with the last answer otherwise.
    pub fn wait_for_body(&self, app: &str, body: &str, timeout: Duration) {
        let mut last = String::from("no request made");
        let ok = wait_until(timeout, || match self.get_app(app, "/") {
            Ok(r) if r.status == 200 && r.body.trim() == body => true,
            Ok(r) => {
                last = format!("{} {:?}", r.status, r.body);
                false
            }
            Err(e) => {
                last = format!("error: {e}");
                false
            }
        });
        assert!(
            ok,
            "{app} did not serve {body:?} within {timeout:?}; last answer: {last}"
        );
    }

    /// Runs `empire --data-dir <data-dir> <args>` (a CLI command beside the server).
    pub fn empire(&self, args: &[&str]) -> Output {
        let mut command = Command::new(empire_bin());
        scrub_env(&mut command);
        command.arg("--data-dir").arg(self.data.path()).args(args);
        run(&mut command)
    }

    /// `empire keys add <user> <key.pub>`; panics unless it succeeds and prints
    /// `Added key SHA256:… for <user>`.
    pub fn add_key(&self, user: &str, key: &TestKey) {
        let public = key.public_path().to_str().expect("utf-8 path").to_string();
        let output = self.empire(&["keys", "add", user, &public]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "empire keys add {user} failed ({}):\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let expected = format!("Added key {} for {user}", key.fingerprint());
        assert!(
            stdout.contains(&expected),
            "empire keys add printed {stdout:?}, expected a line {expected:?}"
        );
    }

    /// A developer with a fresh key that was added for `user`.
    pub fn developer(&self, user: &str) -> Developer {
        let key = TestKey::generate();
        self.add_key(user, &key);
        Developer::new(user, key, self.ssh_port)
    }

    /// A developer whose key the gateway has never seen.
    pub fn stranger(&self) -> Developer {
        Developer::new("stranger", TestKey::generate(), self.ssh_port)
    }

    /// A working copy of `fixture` for `app`, committed, with this gateway as its
    /// `empire` remote and `developer`'s key for SSH.
    pub fn app_repo(&self, developer: &Developer, fixture: &str, app: &str) -> AppRepo {
        self.track_app(app);
        AppRepo::from_fixture(
            fixture,
            app,
            &self.remote_url(app),
            &developer.git_ssh_command(),
        )
    }

    /// Stops the server with SIGTERM and waits for it to exit (up to 20 s); panics with
    /// the log if it has to be killed.
    pub fn stop(&mut self) -> ExitStatus {
        match self.terminate() {
            Some(Ok(status)) => status,
            Some(Err(status)) => panic!(
                "the gateway did not exit within {STOP_TIMEOUT:?} of SIGTERM and was killed \
                 ({status}); log:\n{}",
                tail(&self.log(), LOG_TAIL_LINES)
            ),
            None => panic!("the gateway is not running"),
        }
    }

    /// Sends SIGTERM to the server without waiting for it to exit.
    pub fn send_sigterm(&self) {
        let child = self.child.as_ref().expect("the gateway is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM {} failed", child.id());
    }

    /// Waits up to `timeout` for the server to exit (after [`Gateway::send_sigterm`]);
    /// panics with the log if it is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("the gateway was running");
        loop {
            if let Some(status) = child.try_wait().expect("polling the gateway") {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the gateway was still running {timeout:?} later; log:\n{}",
                    tail(&self.log(), LOG_TAIL_LINES)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// SIGTERM, wait, and start again on the same data dir and ports (just the start
    /// if the server has already stopped).
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        let id = self.id.clone();
        self.spawn();
        assert_eq!(
            self.id, id,
            "the gateway id in the data dir changed across a restart"
        );
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("opening the gateway log");
        let log_err = log.try_clone().expect("cloning the log handle");
        let mut command = Command::new(empire_bin());
        scrub_env(&mut command);
        command.env("EMPIRE_LOG", "info");
        // (setting, value); a `None` value is a switch that is on.
        let mut settings: Vec<(&str, Option<String>)> = vec![
            ("ssh-listen", Some(format!("127.0.0.1:{}", self.ssh_port))),
            ("http-listen", Some(format!("127.0.0.1:{}", self.http_port))),
            (
                "router-listen",
                Some(format!("127.0.0.1:{}", self.router_port)),
            ),
            ("apps-domain", Some("localhost".into())),
        ];
        if let Some(value) = &self.options.boot_timeout {
            settings.push(("boot-timeout", Some(value.clone())));
        }
        if let Some(value) = &self.options.lock_timeout {
            settings.push(("lock-timeout", Some(value.clone())));
        }
        if self.options.no_autocreate {
            settings.push(("no-autocreate", None));
        }
        let data_dir = self
            .data
            .path()
            .to_str()
            .expect("utf-8 data dir")
            .to_string();
        match self.options.via {
            SettingsVia::Flags => {
                command.arg("--data-dir").arg(&data_dir).arg("server");
                for (name, value) in &settings {
                    command.arg(format!("--{name}"));
                    if let Some(value) = value {
                        command.arg(value);
                    }
                }
            }
            SettingsVia::Env => {
                command.env("EMPIRE_DATA_DIR", &data_dir);
                for (name, value) in &settings {
                    let key = format!("EMPIRE_{}", name.replace('-', "_").to_ascii_uppercase());
                    command.env(key, value.as_deref().unwrap_or("true"));
                }
                command.arg("server");
            }
            SettingsVia::ConfigFile => {
                let mut toml = format!("data_dir = {data_dir:?}\n");
                for (name, value) in &settings {
                    let key = name.replace('-', "_");
                    match value {
                        Some(value) => toml.push_str(&format!("{key} = {value:?}\n")),
                        None => toml.push_str(&format!("{key} = true\n")),
                    }
                }
                let file = self.data.path().join("empire.toml");
                fs::write(&file, toml).expect("writing the config file");
                command.arg("--config").arg(&file).arg("server");
            }
        }
        command.args(&self.options.args);
        for (key, value) in &self.options.env {
            command.env(key, value);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        self.child = Some(child);
        self.wait_ready();
        let id_path = self.data.path().join("gateway-id");
        let id = fs::read_to_string(&id_path)
            .unwrap_or_else(|e| panic!("the server did not write {}: {e}", id_path.display()));
        let id = id.trim().to_string();
        assert!(!id.is_empty(), "{} is empty", id_path.display());
        self.id = Some(id);
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last: String;
        loop {
            let child = self.child.as_mut().expect("spawned");
            if let Some(status) = child.try_wait().expect("polling the gateway") {
                self.child = None;
                panic!(
                    "the gateway exited ({status}) before it was ready; log:\n{}",
                    tail(&self.log(), LOG_TAIL_LINES)
                );
            }
            match http_get(self.http_port, "127.0.0.1", "/health") {
                Ok(r) if r.status == 200 => return,
                Ok(r) => last = format!("{} {:?}", r.status, r.body),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                panic!(
                    "the gateway did not answer GET /health with 200 within {READY_TIMEOUT:?} \
                     (last: {last}); log:\n{}",
                    tail(&self.log(), LOG_TAIL_LINES)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM and wait; `Ok` if it exited by itself, `Err` if it had to be killed.
    fn terminate(&mut self) -> Option<Result<ExitStatus, ExitStatus>> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(Ok(status));
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(Ok(status)),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => {
                    // Its git receive-pack and hook children would outlive it otherwise.
                    let descendants = descendants(child.id());
                    let _ = child.kill();
                    kill_pids(&descendants);
                    let status = child.wait().expect("waiting for the killed gateway");
                    return Some(Err(status));
                }
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let stopped = self.terminate();
        if std::thread::panicking() {
            eprintln!(
                "---- gateway log ({}; last {LOG_TAIL_LINES} lines) ----\n{}\n---- end of gateway log ----",
                self.log_path.display(),
                tail(&self.log(), LOG_TAIL_LINES)
            );
        }
        if let Some(Err(status)) = stopped {
            eprintln!("the gateway ignored SIGTERM for {STOP_TIMEOUT:?} and was killed ({status})");
        }
        let apps = self.apps.lock().map(|a| a.clone()).unwrap_or_default();
        let id = self
            .id
            .clone()
            .or_else(|| fs::read_to_string(self.data.path().join("gateway-id")).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        cleanup(id.as_deref(), &apps);
    }
}

/// Three distinct free ports, found by binding 127.0.0.1:0 (all held at once so they
/// differ; released just before the server binds them).
fn free_ports() -> [u16; 3] {
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("binding a free port"))
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect();
    [ports[0], ports[1], ports[2]]
}

/// The processes below `pid` (children, grandchildren, …), from `/proc/*/stat`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid …`; comm may contain spaces and parentheses.
            let Some(after) = stat.rfind(')').map(|at| &stat[at + 1..]) else {
                continue;
            };
            if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                parents.push((child, ppid));
            }
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, ppid) in &parents {
            if ppid == parent && !found.contains(&child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

/// SIGKILL to each of `pids` (best effort).
fn kill_pids(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-KILL")
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// Keeps the caller's `EMPIRE_*` settings from leaking into the process under test.
fn scrub_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("EMPIRE_") {
            command.env_remove(&key);
        }
    }
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::Duration;

    use super::{descendants, kill_pids};

    #[test]
    fn finds_and_kills_grandchildren() {
        let mut child = Command::new("sh")
            .args(["-c", "sh -c 'sleep 30; true' & sleep 30; wait"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let found = descendants(child.id());
        assert!(found.len() >= 3, "expected sh, sleep and sleep: {found:?}");
        kill_pids(&found);
        child.kill().unwrap();
        child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        for pid in found {
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false);
            assert!(!alive, "process {pid} survived");
        }
    }
}
