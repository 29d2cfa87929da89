//! gitd against the real OpenSSH client and git: a gateway (git server + hook server +
//! SQLite store) runs in-process with a fake pipeline, and the tests push, fetch and
//! misbehave the way users do.
//!
//! The repositories' pre-receive hook is the `hook` example of this crate
//! (target/<profile>/examples/hook), which runs exactly what `empire hook pre-receive`
//! runs. `cargo test -p empire-gitd` builds it.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use empire_core::app::AppName;
use empire_core::pipeline::{DeployOutcome, DeployRequest, DeploySource, Pipeline, PushOrigin};
use empire_core::progress::Progress;
use empire_core::store::{SqliteStore, Store};
use empire_gitd::hook::{self, HookServer};
use empire_gitd::{GitServer, GitServerConfig, load_or_generate_host_key, parse_public_key};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What the fake pipeline does with a deploy.
#[derive(Clone)]
enum Behavior {
    /// Prints these lines, one every 100 ms, then succeeds.
    Succeed(Vec<&'static str>),
    /// Prints a line, then waits for the test to release it, then succeeds.
    WaitForRelease,
    /// Prints a line, then fails with this build error.
    Fail(&'static str),
    /// Prints a line, then waits for its cancel token.
    WaitForCancel,
}

/// A deploy the fake pipeline saw.
#[derive(Debug, Clone)]
struct Seen {
    request: DeployRequest,
    /// `git cat-file -t <commit>` with the request's object dirs as alternates.
    object_type: String,
    /// Whether the commit is readable without them (it must not be: quarantine).
    readable_without_object_dirs: bool,
}

struct FakePipeline {
    behavior: Behavior,
    seen: Mutex<Vec<Seen>>,
    started: Notify,
    release: Notify,
    cancelled: Mutex<bool>,
}

impl FakePipeline {
    fn new(behavior: Behavior) -> Arc<Self> {
        Arc::new(FakePipeline {
            behavior,
            seen: Mutex::new(Vec::new()),
            started: Notify::new(),
            release: Notify::new(),
            cancelled: Mutex::new(false),
        })
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn cat_file(repo: &Path, object_dirs: Option<&[PathBuf]>, commit: &str) -> Output {
    let mut cmd = Command::new("git");
    cmd.arg("--git-dir")
        .arg(repo)
        .args(["cat-file", "-t", commit])
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES");
    if let Some(dirs) = object_dirs {
        let joined = std::env::join_paths(dirs).unwrap();
        cmd.env("GIT_ALTERNATE_OBJECT_DIRECTORIES", joined);
    }
    cmd.output().await.unwrap()
}

#[async_trait]
impl Pipeline for FakePipeline {
    async fn reserve(
        &self,
        app: &empire_core::app::AppName,
        _user: &str,
        _progress: &Progress,
        _cancel: &CancellationToken,
    ) -> empire_core::Result<empire_core::pipeline::DeployTurn> {
        Ok(empire_core::pipeline::DeployTurn::unleased(
            app.clone(),
            "test-turn".into(),
        ))
    }

    async fn deploy(
        &self,
        request: DeployRequest,
        progress: Progress,
        cancel: CancellationToken,
    ) -> empire_core::Result<DeployOutcome> {
        let DeploySource::Push {
            repo_path,
            object_dirs,
            commit,
            ..
        } = &request.source
        else {
            panic!("not a push: {request:?}");
        };
        let with = cat_file(repo_path, Some(object_dirs), commit).await;
        let without = cat_file(repo_path, None, commit).await;
        self.seen.lock().unwrap().push(Seen {
            request: request.clone(),
            object_type: String::from_utf8_lossy(&with.stdout).trim().to_string(),
            readable_without_object_dirs: without.status.success(),
        });
        self.started.notify_one();
        match &self.behavior {
            Behavior::Succeed(lines) => {
                for line in lines {
                    progress.raw(line);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(DeployOutcome {
                    release: 1,
                    url: Some("http://web.example".into()),
                })
            }
            Behavior::WaitForRelease => {
                progress.step("Waiting for the test");
                tokio::time::timeout(Duration::from_secs(30), self.release.notified())
                    .await
                    .map_err(|_| empire_core::Error::Deploy("never released".into()))?;
                progress.detail("released");
                Ok(DeployOutcome {
                    release: 1,
                    url: None,
                })
            }
            Behavior::Fail(message) => {
                progress.step(format!("Building {}", request.app));
                Err(empire_core::Error::Build(message.to_string()))
            }
            Behavior::WaitForCancel => {
                progress.step("Building forever");
                tokio::select! {
                    _ = cancel.cancelled() => {
                        *self.cancelled.lock().unwrap() = true;
                        Err(empire_core::Error::Cancelled("the pusher went away".into()))
                    }
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {
                        Err(empire_core::Error::Deploy("never cancelled".into()))
                    }
                }
            }
        }
    }
}

/// The hook program: this crate's `hook` example, built by `cargo test`.
fn hook_program() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/git_push-<hash> → target/<profile>/examples/hook
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let hook = profile_dir.join("examples").join("hook");
    assert!(
        hook.is_file(),
        "{} is missing: run the tests with `cargo test -p empire-gitd` (which builds the \
         examples) or build it with `cargo build -p empire-gitd --example hook`",
        hook.display()
    );
    hook
}

/// An in-process gateway with a user `alice` whose key is at `key`.
struct Gateway {
    dir: tempfile::TempDir,
    port: u16,
    key: PathBuf,
    store: Arc<SqliteStore>,
    pipeline: Arc<FakePipeline>,
    repos: PathBuf,
    shutdown: CancellationToken,
}

impl Gateway {
    async fn start(behavior: Behavior) -> Gateway {
        Gateway::start_with(behavior, true).await
    }

    async fn start_with(behavior: Behavior, autocreate: bool) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        store.create_user("alice", false).await.unwrap();
        let key = dir.path().join("id_alice");
        keygen(&key);
        let (fp, normalized) =
            parse_public_key(&std::fs::read_to_string(key.with_extension("pub")).unwrap()).unwrap();
        store.add_key("alice", &fp, &normalized).await.unwrap();

        let pipeline = FakePipeline::new(behavior);
        let shutdown = CancellationToken::new();
        let socket = dir.path().join("run/hook.sock");
        let listener = hook::bind(&socket).unwrap();
        let hooks = HookServer::new(pipeline.clone());
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move { hooks.serve(listener, shutdown).await }
        });

        let repos = dir.path().join("repos");
        let config = GitServerConfig {
            repos_dir: repos.clone(),
            hook_program: hook_program(),
            hook_socket: socket,
            autocreate,
            keepalive: Duration::from_secs(5),
        };
        let host_key = load_or_generate_host_key(&dir.path().join("host_key")).unwrap();
        let server = GitServer::new(config, host_key, store.clone(), pipeline.clone());
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move { server.run(tcp, shutdown).await.unwrap() }
        });

        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        Gateway {
            dir,
            port,
            key,
            store,
            pipeline,
            repos,
            shutdown,
        }
    }

    fn ssh_command(&self, key: &Path) -> String {
        format!(
            "ssh -i {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no \
             -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes -p {}",
            key.display(),
            self.port
        )
    }

    /// `git <args>` in `cwd` as alice.
    fn git(&self, cwd: &Path, args: &[&str]) -> Command {
        self.git_as(&self.key, cwd, args)
    }

    fn git_as(&self, key: &Path, cwd: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("git");
        cmd.current_dir(cwd)
            .args(args)
            .env("HOME", self.dir.path().join("home"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "Alice")
            .env("GIT_AUTHOR_EMAIL", "alice@example.com")
            .env("GIT_COMMITTER_NAME", "Alice")
            .env("GIT_COMMITTER_EMAIL", "alice@example.com")
            .env("GIT_SSH_COMMAND", self.ssh_command(key))
            .kill_on_drop(true);
        cmd
    }

    async fn run_git(&self, cwd: &Path, args: &[&str]) -> Output {
        run(self.git(cwd, args)).await
    }

    /// A work tree with one commit on main and the gateway as remote `empire`
    /// (scp-like address: `git-receive-pack 'web.git'`).
    async fn work_tree(&self, name: &str) -> PathBuf {
        let work = self.dir.path().join(name);
        std::fs::create_dir_all(&work).unwrap();
        ok(self
            .run_git(&work, &["init", "-q", "--initial-branch=main"])
            .await);
        std::fs::write(work.join("Procfile"), "web: httpd -f -p $PORT\n").unwrap();
        ok(self.run_git(&work, &["add", "."]).await);
        ok(self.run_git(&work, &["commit", "-q", "-m", "first"]).await);
        ok(self
            .run_git(&work, &["remote", "add", "empire", "git@127.0.0.1:web.git"])
            .await);
        work
    }

    async fn head(&self, work: &Path) -> String {
        let out = ok(self.run_git(work, &["rev-parse", "HEAD"]).await);
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// The commit a ref of the app's bare repository points at, if any.
    async fn remote_ref(&self, app: &str, reference: &str) -> Option<String> {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(self.repos.join(format!("{app}.git")))
            .args(["rev-parse", "--verify", "-q", reference])
            .output()
            .await
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8(out.stdout).unwrap().trim().to_string())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn keygen(path: &Path) {
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

async fn run(mut cmd: Command) -> Output {
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("command timed out")
        .unwrap()
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "command failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_main_reaches_the_pipeline_and_streams_its_output() {
    let gw = Gateway::start(Behavior::Succeed(vec![
        "-----> Building web",
        "       step two",
        "-----> Released v1: http://web.example",
    ]))
    .await;
    let work = gw.work_tree("work").await;
    let commit = gw.head(&work).await;

    let out = gw.run_git(&work, &["push", "empire", "main"]).await;
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    // git pads sideband lines with spaces (to clear the terminal line): trim them.
    let remote: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("remote:"))
        .map(str::trim_end)
        .collect();
    let building = remote
        .iter()
        .position(|l| *l == "remote: -----> Building web")
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(remote[building + 1], "remote:        step two", "{err}");
    assert_eq!(
        remote[building + 2],
        "remote: -----> Released v1: http://web.example",
        "{err}"
    );
    assert!(err.contains(" * [new branch]      main -> main"), "{err}");

    let seen = gw.pipeline.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0].request;
    assert_eq!(request.app.as_str(), "web");
    assert_eq!(request.user, "alice");
    assert!(!request.no_cache);
    assert_eq!(request.message, None);
    let DeploySource::Push {
        repo_path,
        object_dirs,
        commit: pushed,
        reference,
        origin,
    } = &request.source
    else {
        panic!("{request:?}")
    };
    assert_eq!(pushed, &commit);
    assert_eq!(*origin, PushOrigin::Git);
    assert_eq!(reference, "refs/heads/main");
    assert_eq!(repo_path, &gw.repos.join("web.git").canonicalize().unwrap());
    assert!(!object_dirs.is_empty());
    // The pipeline can read the pushed commit from the quarantine, and only from there.
    assert_eq!(seen[0].object_type, "commit");
    assert!(!seen[0].readable_without_object_dirs);

    // The ref moved after the deploy, and the app was created on the first push.
    assert_eq!(gw.remote_ref("web", "refs/heads/main").await, Some(commit));
    gw.store.app(&AppName::new("web").unwrap()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reaches_the_pusher_while_the_deploy_runs() {
    let gw = Gateway::start(Behavior::WaitForRelease).await;
    let work = gw.work_tree("work").await;
    let mut cmd = gw.git(&work, &["push", "empire", "main"]);
    cmd.stderr(Stdio::piped()).stdout(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // The step line arrives while the pipeline still waits: nothing is buffered until
    // the end.
    let seen_step = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.trim_end() == "remote: -----> Waiting for the test" {
                return true;
            }
        }
        false
    })
    .await
    .expect("the progress line did not arrive while the deploy ran");
    assert!(seen_step);
    gw.pipeline.release.notify_one();
    let mut rest = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push(line.trim_end().to_string());
    }
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{rest:?}");
    assert!(
        rest.contains(&"remote:        released".to_string()),
        "{rest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_deploy_rejects_the_push_and_the_ref_stays() {
    let gw = Gateway::start(Behavior::Fail("no Dockerfile and no buildpack detected")).await;
    let work = gw.work_tree("work").await;
    let out = gw.run_git(&work, &["push", "empire", "main"]).await;
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("remote: -----> Building web"), "{err}");
    assert!(
        err.contains("remote:  !     build failed: no Dockerfile and no buildpack detected"),
        "{err}"
    );
    assert!(
        err.contains(" ! [remote rejected] main -> main (pre-receive hook declined)"),
        "{err}"
    );
    assert_eq!(gw.pipeline.seen().len(), 1);
    assert_eq!(gw.remote_ref("web", "refs/heads/main").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_another_branch_is_refused_naming_main() {
    let gw = Gateway::start(Behavior::Succeed(vec![])).await;
    let work = gw.work_tree("work").await;
    let out = gw.run_git(&work, &["push", "empire", "HEAD:feature"]).await;
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(
            "remote:  !     pushes to refs/heads/feature are not deployed: push to main (git push empire HEAD:main)"
        ),
        "{err}"
    );
    assert!(
        err.contains("! [remote rejected] HEAD -> feature (pre-receive hook declined)"),
        "{err}"
    );
    assert!(gw.pipeline.seen().is_empty());
    assert_eq!(gw.remote_ref("web", "refs/heads/feature").await, None);

    // Tags are not deployed either.
    ok(gw.run_git(&work, &["tag", "v1"]).await);
    let out = gw.run_git(&work, &["push", "empire", "v1"]).await;
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("remote:  !     pushes to refs/tags/v1 are not deployed: push to main"),
        "{err}"
    );

    // Deleting the deploy branch is refused.
    ok(gw.run_git(&work, &["push", "empire", "main"]).await);
    let commit = gw.head(&work).await;
    let out = gw.run_git(&work, &["push", "empire", ":main"]).await;
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(
            "remote:  !     deleting main is not allowed: it is the branch empire deploys"
        ),
        "{err}"
    );
    assert_eq!(gw.remote_ref("web", "refs/heads/main").await, Some(commit));
    assert_eq!(gw.pipeline.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_options_reach_the_pipeline() {
    let gw = Gateway::start(Behavior::Succeed(vec!["ok"])).await;
    let work = gw.work_tree("work").await;
    let out = gw
        .run_git(
            &work,
            &[
                "push",
                "-o",
                "no-cache",
                "-o",
                "message=fix the login page",
                "empire",
                "main",
            ],
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = gw.pipeline.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].request.no_cache);
    assert_eq!(
        seen[0].request.message.as_deref(),
        Some("fix the login page")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_is_denied() {
    let gw = Gateway::start(Behavior::Succeed(vec![])).await;
    let work = gw.work_tree("work").await;
    let stranger = gw.dir.path().join("id_stranger");
    keygen(&stranger);
    let out = run(gw.git_as(&stranger, &work, &["push", "empire", "main"])).await;
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("Permission denied (publickey)"), "{err}");
    assert!(gw.pipeline.seen().is_empty());
    assert!(!gw.repos.join("web.git").exists());
}

/// `ssh <gateway> <command>` as alice.
async fn ssh(gw: &Gateway, command: &[&str]) -> Output {
    let mut cmd = Command::new("ssh");
    cmd.args([
        "-i",
        gw.key.to_str().unwrap(),
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
        "-T",
        "-p",
        &gw.port.to_string(),
        "git@127.0.0.1",
    ])
    .args(command)
    .stdin(Stdio::null())
    .kill_on_drop(true);
    run(cmd).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_commands_get_a_one_line_refusal() {
    let gw = Gateway::start(Behavior::Succeed(vec![])).await;
    let cases: &[(&[&str], &str)] = &[
        (&["ls"], "unknown command \"ls\": try \"help\"\n"),
        (
            &["git-receive-pack '../etc.git'"],
            "invalid repository path \"../etc.git\": \"..\" is not allowed: expected '<app>.git'\n",
        ),
        (
            &["git-receive-pack 'web.git'; id"],
            "unexpected arguments after the repository: \"; id\"\n",
        ),
        (
            &["git-upload-pack 'My_App.git'"],
            "invalid app name \"My_App\": app names are 1-30 lowercase letters, digits or dashes, start with a letter and do not end with a dash\n",
        ),
        (&["git-upload-pack 'nope.git'"], "app nope does not exist\n"),
        // This gateway has no service layer: the operation commands are off.
        (
            &["apps"],
            " !     this server runs git push and fetch only: its SSH commands are not enabled\n",
        ),
        (
            &[],
            "no command given: there is no shell here; run git push or fetch, or one of the commands \"help\" lists\n",
        ),
    ];
    for (command, expected) in cases {
        let out = ssh(&gw, command).await;
        assert_eq!(out.status.code(), Some(1), "{command:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), *expected, "{command:?}");
        assert!(out.stdout.is_empty(), "{command:?}");
    }
    // Nothing was created for any of them.
    assert!(!gw.repos.exists() || std::fs::read_dir(&gw.repos).unwrap().next().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_autocreate_a_push_to_a_missing_app_is_refused() {
    let gw = Gateway::start_with(Behavior::Succeed(vec![]), false).await;
    let work = gw.work_tree("work").await;
    let out = gw.run_git(&work, &["push", "empire", "main"]).await;
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("app web does not exist (create it first)"),
        "{err}"
    );
    assert!(gw.pipeline.seen().is_empty());

    // Once the app exists, the push goes through.
    gw.store
        .create_app(&AppName::new("web").unwrap(), "alice")
        .await
        .unwrap();
    let out = gw.run_git(&work, &["push", "empire", "main"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(gw.pipeline.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_app_can_be_cloned_back() {
    let gw = Gateway::start(Behavior::Succeed(vec![])).await;
    let work = gw.work_tree("work").await;
    let commit = gw.head(&work).await;

    // Before any push there is nothing to clone.
    let out = gw
        .run_git(gw.dir.path(), &["clone", "git@127.0.0.1:web.git", "early"])
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("app web does not exist"),
        "{}",
        stderr(&out)
    );

    ok(gw.run_git(&work, &["push", "empire", "main"]).await);
    // The ssh:// form sends '/web.git'.
    let url = format!("ssh://git@127.0.0.1:{}/web.git", gw.port);
    let out = gw.run_git(gw.dir.path(), &["clone", &url, "copy"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let copy = gw.dir.path().join("copy");
    assert_eq!(gw.head(&copy).await, commit);
    assert_eq!(
        std::fs::read_to_string(copy.join("Procfile")).unwrap(),
        "web: httpd -f -p $PORT\n"
    );
    // And fetch (protocol v2 over GIT_PROTOCOL) from the original work tree.
    let out = gw
        .run_git(&work, &["-c", "protocol.version=2", "fetch", "empire"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_push_goes_through_and_clones_back() {
    let gw = Gateway::start(Behavior::Succeed(vec!["-----> Building big"])).await;
    let work = gw.work_tree("work").await;
    // 50 MB that does not compress.
    let mut data = vec![0u8; 50 << 20];
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(std::process::id());
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(work.join("blob.bin"), &data).unwrap();
    drop(data);
    ok(gw.run_git(&work, &["add", "blob.bin"]).await);
    ok(gw.run_git(&work, &["commit", "-q", "-m", "big"]).await);
    let commit = gw.head(&work).await;

    // --progress makes the server report progress on the sideband while the pack
    // streams in: output and input flow at the same time.
    let out = gw
        .run_git(&work, &["push", "--progress", "empire", "main"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("remote: -----> Building big"));
    let seen = gw.pipeline.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].object_type, "commit");
    assert_eq!(
        gw.remote_ref("web", "refs/heads/main").await,
        Some(commit.clone())
    );

    let out = gw
        .run_git(
            gw.dir.path(),
            &["clone", "--progress", "git@127.0.0.1:web.git", "copy"],
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("remote: Enumerating objects"),
        "{}",
        stderr(&out)
    );
    let copy = gw.dir.path().join("copy");
    assert_eq!(gw.head(&copy).await, commit);
    assert_eq!(
        std::fs::metadata(copy.join("blob.bin")).unwrap().len(),
        50 << 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pusher_who_disconnects_cancels_the_deploy() {
    let gw = Gateway::start(Behavior::WaitForCancel).await;
    let work = gw.work_tree("work").await;
    let mut cmd = gw.git(&work, &["push", "empire", "main"]);
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = cmd.spawn().unwrap();
    tokio::time::timeout(Duration::from_secs(60), gw.pipeline.started.notified())
        .await
        .expect("the deploy did not start");
    // The pusher hits ^C: git and its ssh die together.
    let pgid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGINT).unwrap();
    let _ = child.wait().await;
    let cancelled = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if *gw.pipeline.cancelled.lock().unwrap() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(cancelled.is_ok(), "the deploy was not cancelled");
    assert_eq!(gw.remote_ref("web", "refs/heads/main").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_new_connections_but_a_running_push_completes() {
    let gw = Gateway::start(Behavior::WaitForRelease).await;
    let work = gw.work_tree("work").await;
    let commit = gw.head(&work).await;
    let push = tokio::spawn(run(gw.git(&work, &["push", "empire", "main"])));
    tokio::time::timeout(Duration::from_secs(60), gw.pipeline.started.notified())
        .await
        .expect("the deploy did not start");

    gw.shutdown.cancel();
    // New connections are refused once the server stopped accepting.
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "the server still accepts connections");
    let out = ssh(&gw, &["git-upload-pack 'web.git'"]).await;
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));

    // The push that was running finishes normally.
    gw.pipeline.release.notify_one();
    let out = push.await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(gw.remote_ref("web", "refs/heads/main").await, Some(commit));
}
