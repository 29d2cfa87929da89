//! The developer's side: an SSH key, a working copy, `git push` with timed output.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::util::{fixture_dir, random_suffix, run, run_ok};

/// How long any single push may take before the test gives up on it.
const PUSH_TIMEOUT: Duration = Duration::from_secs(300);

/// An ed25519 key pair made with `ssh-keygen -t ed25519 -N ''`, in its own temp dir.
#[derive(Debug)]
pub struct TestKey {
    _dir: TempDir,
    private: PathBuf,
    public: PathBuf,
}

impl TestKey {
    /// Generates a fresh key.
    pub fn generate() -> TestKey {
        let dir = tempfile::Builder::new()
            .prefix("empire-e2e-key-")
            .tempdir()
            .expect("creating a key dir");
        let private = dir.path().join("id_ed25519");
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "empire-e2e", "-f"])
                .arg(&private),
        );
        let public = dir.path().join("id_ed25519.pub");
        TestKey {
            _dir: dir,
            private,
            public,
        }
    }

    /// The private key file.
    pub fn private_path(&self) -> &Path {
        &self.private
    }

    /// The public key file.
    pub fn public_path(&self) -> &Path {
        &self.public
    }

    /// The key's fingerprint as OpenSSH prints it: `SHA256:…`.
    pub fn fingerprint(&self) -> String {
        let output = run_ok(Command::new("ssh-keygen").arg("-lf").arg(&self.public));
        let text = String::from_utf8_lossy(&output.stdout);
        text.split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("unexpected ssh-keygen -l output: {text:?}"))
            .to_string()
    }

    /// The `ssh` command line that uses only this key against `port`.
    pub fn ssh_command(&self, port: u16) -> String {
        format!(
            "ssh -i {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no \
             -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -p {port}",
            self.private.display()
        )
    }
}

/// Someone who pushes: a user name and a key (added to the gateway or not).
#[derive(Debug)]
pub struct Developer {
    /// The user name the key was added for.
    pub user: String,
    /// The key.
    pub key: TestKey,
    ssh_port: u16,
}

impl Developer {
    /// A developer using `key` against the gateway's SSH `port`.
    pub fn new(user: &str, key: TestKey, ssh_port: u16) -> Developer {
        Developer {
            user: user.into(),
            key,
            ssh_port,
        }
    }

    /// The `GIT_SSH_COMMAND` for this developer.
    pub fn git_ssh_command(&self) -> String {
        self.key.ssh_command(self.ssh_port)
    }

    /// Runs `ssh … git@127.0.0.1 <remote_command>` (no stdin).
    pub fn ssh(&self, remote_command: &str) -> Output {
        let mut command = Command::new("ssh");
        command
            .arg("-i")
            .arg(self.key.private_path())
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "BatchMode=yes",
                "-p",
                &self.ssh_port.to_string(),
                "git@127.0.0.1",
                remote_command,
            ])
            .stdin(Stdio::null());
        run(&mut command)
    }
}

/// A working copy of a fixture in a temp dir, on branch `main`, with the gateway as
/// its `empire` remote. Every commit the helpers make also rewrites `nonce`, so Docker
/// never serves a fixture's build steps from another test's cache.
#[derive(Debug)]
pub struct AppRepo {
    dir: TempDir,
    app: String,
    ssh_command: String,
}

impl AppRepo {
    /// Copies `tests/fixtures/<fixture>` into a temp dir, `git init -b main`, commits
    /// it and adds `remote_url` as `empire`.
    pub fn from_fixture(fixture: &str, app: &str, remote_url: &str, ssh_command: &str) -> AppRepo {
        let dir = tempfile::Builder::new()
            .prefix(&format!("empire-e2e-{app}-"))
            .tempdir()
            .expect("creating a repo dir");
        let repo = AppRepo {
            dir,
            app: app.into(),
            ssh_command: ssh_command.into(),
        };
        copy_dir(&fixture_dir(fixture), repo.path());
        repo.git(&["init", "-q", "-b", "main"]);
        repo.configure();
        repo.git(&["remote", "add", "empire", remote_url]);
        repo.commit(&format!("{fixture} fixture"));
        repo
    }

    /// A second working copy of the same history (`git clone` of this one) with the
    /// same `empire` remote, pushing with `developer`'s key: what a teammate has.
    pub fn clone_for(&self, developer: &Developer) -> AppRepo {
        let dir = tempfile::Builder::new()
            .prefix(&format!("empire-e2e-{}-clone-", self.app))
            .tempdir()
            .expect("creating a clone dir");
        run_ok(
            Command::new("git")
                .args(["clone", "-q", "--origin", "origin"])
                .arg(self.path())
                .arg(dir.path()),
        );
        let clone = AppRepo {
            dir,
            app: self.app.clone(),
            ssh_command: developer.git_ssh_command(),
        };
        clone.configure();
        let url = self.git(&["remote", "get-url", "empire"]);
        clone.git(&["remote", "add", "empire", url.trim()]);
        clone
    }

    fn configure(&self) {
        self.git(&["config", "user.name", "Empire Test"]);
        self.git(&["config", "user.email", "e2e@empire.invalid"]);
        self.git(&["config", "commit.gpgsign", "false"]);
    }

    /// The app this repo pushes to.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The working copy.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `git` command in the working copy with the developer's SSH command set.
    pub fn git_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("git");
        command
            .current_dir(self.path())
            .env("GIT_SSH_COMMAND", &self.ssh_command)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// Runs `git <args>` and returns its stdout; panics unless it succeeds.
    pub fn git(&self, args: &[&str]) -> String {
        let output = run_ok(&mut self.git_command(args));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Writes `contents` to `relative` (creating directories).
    pub fn write(&self, relative: &str, contents: &str) {
        let path = self.path().join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("creating a directory in the repo");
        }
        fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// Deletes `relative` from the working copy.
    pub fn remove(&self, relative: &str) {
        let path = self.path().join(relative);
        fs::remove_file(&path).unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
    }

    /// Copies `tests/fixtures/<fixture>` over the working copy (files it has replace
    /// the repo's; others stay).
    pub fn apply_fixture(&self, fixture: &str) {
        copy_dir(&fixture_dir(fixture), self.path());
    }

    /// Rewrites `nonce`, stages everything and commits; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        self.write("nonce", &format!("{}-{}\n", self.app, random_suffix()));
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Writes `relative` and commits; returns the commit id.
    pub fn commit_change(&self, relative: &str, contents: &str, message: &str) -> String {
        self.write(relative, contents);
        self.commit(message)
    }

    /// `git push empire main`, waited for.
    pub fn push(&self) -> PushOutcome {
        self.spawn_push(&["empire", "main"]).wait()
    }

    /// `git push <args>` (e.g. `["-o", "no-cache", "empire", "main"]`), waited for.
    pub fn push_args(&self, args: &[&str]) -> PushOutcome {
        self.spawn_push(args).wait()
    }

    /// `git push empire main`, with each output line recorded as it arrives.
    pub fn push_streaming(&self) -> RunningPush {
        self.spawn_push(&["empire", "main"])
    }

    /// Starts `git push <args>`; its stdout and stderr are read line by line as they
    /// come (a line ends at `\n` or `\r`) and time-stamped.
    pub fn spawn_push(&self, args: &[&str]) -> RunningPush {
        let mut full = vec!["push"];
        full.extend_from_slice(args);
        let mut command = self.git_command(&full);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let shared: Arc<Shared> = Arc::default();
        let readers = vec![
            read_lines(
                child.stdout.take().expect("piped stdout"),
                Stream::Stdout,
                shared.clone(),
            ),
            read_lines(
                child.stderr.take().expect("piped stderr"),
                Stream::Stderr,
                shared.clone(),
            ),
        ];
        RunningPush {
            child,
            started,
            shared,
            readers,
            description: format!("git push {} (app {})", args.join(" "), self.app),
        }
    }
}

/// Which output a line came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// git's stdout.
    Stdout,
    /// git's stderr (where `remote:` lines go).
    Stderr,
}

/// One line of a push's output and when it arrived.
#[derive(Debug, Clone)]
pub struct PushLine {
    /// When the harness read it.
    pub at: Instant,
    /// The line without its terminator or trailing whitespace.
    pub text: String,
    /// Where it came from.
    pub stream: Stream,
}

#[derive(Debug, Default)]
struct Shared {
    lines: Mutex<Vec<PushLine>>,
    changed: Condvar,
}

fn read_lines(
    mut pipe: impl Read + Send + 'static,
    stream: Stream,
    shared: Arc<Shared>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut current: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        let flush = |current: &mut Vec<u8>| {
            let text = String::from_utf8_lossy(current).trim_end().to_string();
            current.clear();
            if !text.is_empty() {
                let mut lines = shared.lines.lock().expect("lines lock");
                lines.push(PushLine {
                    at: Instant::now(),
                    text,
                    stream,
                });
                shared.changed.notify_all();
            }
        };
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    for &byte in &buf[..n] {
                        if byte == b'\n' || byte == b'\r' {
                            flush(&mut current);
                        } else {
                            current.push(byte);
                        }
                    }
                }
            }
        }
        flush(&mut current);
    })
}

/// A `git push` in progress.
#[derive(Debug)]
pub struct RunningPush {
    child: Child,
    started: Instant,
    shared: Arc<Shared>,
    readers: Vec<JoinHandle<()>>,
    description: String,
}

impl RunningPush {
    /// The lines so far.
    pub fn lines(&self) -> Vec<PushLine> {
        self.shared.lines.lock().expect("lines lock").clone()
    }

    /// Waits until a line containing `needle` arrives and returns it; panics with the
    /// output so far after `timeout` or if the push ends without one.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> PushLine {
        let mut deadline = Instant::now() + timeout;
        let mut exited: Option<ExitStatus> = None;
        let mut lines = self.shared.lines.lock().expect("lines lock");
        loop {
            if let Some(line) = lines.iter().find(|l| l.text.contains(needle)) {
                return line.clone();
            }
            let now = Instant::now();
            if exited.is_none() {
                exited = self.child.try_wait().ok().flatten();
                if exited.is_some() {
                    // Give the readers a moment to hand over the last lines.
                    deadline = deadline.min(now + Duration::from_secs(1));
                }
            }
            if now >= deadline {
                let output: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
                panic!(
                    "{}: no line containing {needle:?} {} ; output so far:\n{}",
                    self.description,
                    match exited {
                        Some(status) => format!("before it exited ({status})"),
                        None => format!("within {timeout:?}"),
                    },
                    output.join("\n")
                );
            }
            let wait = (deadline - now).min(Duration::from_millis(200));
            lines = self
                .shared
                .changed
                .wait_timeout(lines, wait)
                .expect("lines lock")
                .0;
        }
    }

    /// Waits for the push to end (at most 5 minutes) and returns what it printed.
    pub fn wait(mut self) -> PushOutcome {
        let deadline = self.started + PUSH_TIMEOUT;
        let status = loop {
            match self.child.try_wait().expect("polling git push") {
                Some(status) => break status,
                None if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let output: Vec<String> = self.lines().into_iter().map(|l| l.text).collect();
                    panic!(
                        "{} did not finish within {PUSH_TIMEOUT:?}; output so far:\n{}",
                        self.description,
                        output.join("\n")
                    );
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let finished = Instant::now();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        PushOutcome {
            status,
            lines: self.lines(),
            started: self.started,
            finished,
            description: self.description.clone(),
        }
    }
}

/// What a finished `git push` printed, line by line with arrival times.
#[derive(Debug, Clone)]
pub struct PushOutcome {
    /// git's exit status.
    pub status: ExitStatus,
    /// Every output line (stdout and stderr) in arrival order.
    pub lines: Vec<PushLine>,
    /// When `git push` was started.
    pub started: Instant,
    /// When it exited.
    pub finished: Instant,
    description: String,
}

impl PushOutcome {
    /// Whether git exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// All lines joined with `\n`.
    pub fn output(&self) -> String {
        self.lines
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether any line contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.lines.iter().any(|l| l.text.contains(needle))
    }

    /// The first line containing `needle`.
    pub fn line_containing(&self, needle: &str) -> Option<&PushLine> {
        self.lines.iter().find(|l| l.text.contains(needle))
    }

    /// The text of the `remote:` lines, without the `remote: ` prefix.
    pub fn remote_lines(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|l| l.text.strip_prefix("remote:"))
            .map(|t| t.strip_prefix(' ').unwrap_or(t))
            .collect()
    }

    /// Lines that are not git's own echo of the remote URL (`To ssh://…`, `error:
    /// failed to push some refs to 'ssh://…'`), so a name they contain came from the
    /// gateway.
    pub fn lines_without_url(&self) -> Vec<&str> {
        self.lines
            .iter()
            .map(|l| l.text.as_str())
            .filter(|t| !t.contains("ssh://"))
            .collect()
    }

    /// The versions in `Released vN` lines.
    pub fn released_versions(&self) -> Vec<u32> {
        self.remote_lines()
            .iter()
            .filter_map(|l| {
                let at = l.find("Released v")?;
                let digits: String = l[at + "Released v".len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse().ok()
            })
            .collect()
    }

    /// How long after the start `line` arrived.
    pub fn offset(&self, line: &PushLine) -> Duration {
        line.at.saturating_duration_since(self.started)
    }

    /// Panics with the output unless git exited 0.
    pub fn assert_success(&self) {
        assert!(self.success(), "expected the push to succeed:\n{self}");
    }

    /// Panics with the output unless git exited non-zero.
    pub fn assert_failure(&self) {
        assert!(!self.success(), "expected the push to fail:\n{self}");
    }

    /// Panics with the output unless the push was rejected by the pre-receive hook:
    /// non-zero exit and `! [remote rejected] main -> main (pre-receive hook declined)`.
    pub fn assert_hook_declined(&self) {
        self.assert_failure();
        assert!(
            self.lines
                .iter()
                .any(|l| l.text.contains("[remote rejected]")
                    && l.text.contains("pre-receive hook declined")),
            "expected `! [remote rejected] … (pre-receive hook declined)`:\n{self}"
        );
    }

    /// Panics with the output unless some line contains `needle`.
    pub fn assert_contains(&self, needle: &str) {
        assert!(
            self.contains(needle),
            "expected a line containing {needle:?}:\n{self}"
        );
    }
}

impl fmt::Display for PushOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "---- {} exited {} after {:.1}s ----",
            self.description,
            self.status,
            self.finished.duration_since(self.started).as_secs_f64()
        )?;
        for line in &self.lines {
            writeln!(
                f,
                "[{:>6.2}s] {}",
                line.at
                    .saturating_duration_since(self.started)
                    .as_secs_f64(),
                line.text
            )?;
        }
        write!(f, "---- end of push output ----")
    }
}

/// Copies `from` into `to` recursively, keeping file modes (executable bits).
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("creating {}: {e}", to.display()));
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display())) {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap_or_else(|e| {
                panic!(
                    "copying {} to {}: {e}",
                    entry.path().display(),
                    target.display()
                )
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    use std::time::Duration;

    use super::AppRepo;

    /// A bare repository whose pre-receive hook prints, sleeps, prints and exits `code`.
    fn bare_repo(dir: &std::path::Path, code: i32) -> String {
        let bare = dir.join("srv.git");
        let status = Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(&bare)
            .status()
            .unwrap();
        assert!(status.success());
        let hook = bare.join("hooks").join("pre-receive");
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\ncat >/dev/null\necho '-----> early'\nprintf 'progress 50%%\\rprogress 100%%\\n'\nsleep 2\necho '       late'\nexit {code}\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        bare.to_str().unwrap().to_string()
    }

    #[test]
    fn a_push_records_lines_as_they_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let url = bare_repo(dir.path(), 0);
        let repo = AppRepo::from_fixture("web-httpd", "harness", &url, "ssh");
        let push = repo.push();
        push.assert_success();
        let remote = push.remote_lines();
        assert!(remote.contains(&"-----> early"), "{push}");
        assert!(remote.contains(&"       late"), "{push}");
        assert!(
            remote.contains(&"progress 50%"),
            "a \\r ends a line:\n{push}"
        );
        let early = push.line_containing("early").unwrap();
        let late = push.line_containing("late").unwrap();
        let gap = late.at.duration_since(early.at);
        assert!(gap >= Duration::from_millis(1500), "gap {gap:?}:\n{push}");
        assert!(push.finished.duration_since(early.at) >= Duration::from_millis(1500));
    }

    #[test]
    fn a_declined_push_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let url = bare_repo(dir.path(), 1);
        let repo = AppRepo::from_fixture("web-httpd", "harness", &url, "ssh");
        let mut running = repo.push_streaming();
        let early = running.wait_for_line("early", Duration::from_secs(10));
        assert!(early.text.starts_with("remote:"));
        let push = running.wait();
        push.assert_hook_declined();
    }
}
