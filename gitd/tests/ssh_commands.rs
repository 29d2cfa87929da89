//! The SSH operation commands against the real OpenSSH client: a gateway (git server with
//! the service layer, the real `DeployPipeline` and a SQLite store) runs in-process, and
//! the tests type what a developer with only git and ssh types.
//!
//! Two schedulers: the tests of commands that only read and write the store, or whose
//! refusals must not reach a scheduler, use [`RecordingScheduler`], an in-test stand-in
//! that runs nothing and records what it was asked; the tests of `run` and of operating a
//! running app use the real `empire_deployer::DockerScheduler` on the local Docker engine
//! with images made from `empire/busybox`.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use empire_core::app::AppName;
use empire_core::build::{BuildRequest, BuiltImage, ImageBuilder};
use empire_core::pipeline::{DeployPipeline, PipelineConfig, process_types};
use empire_core::progress::Progress;
use empire_core::release::{NewRelease, ReleaseStatus};
use empire_core::scheduler::{
    DeploySpec, LogLine, LogOptions, OneOffSpec, ProcessInstance, RestartTarget, RunIo, RunOutcome,
    Scheduler,
};
use empire_core::service::{AppData, Platform};
use empire_core::store::{ReleaseBuild, SqliteStore, Store};
use empire_deployer::{DockerScheduler, DockerSchedulerOptions, Router};
use empire_gitd::{GitServer, GitServerConfig, load_or_generate_host_key, parse_public_key};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const BASE_IMAGE: &str = "empire/busybox:latest";

fn suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// A stand-in scheduler for tests that must not need Docker: it runs nothing, says so in
/// its progress, and records every call.
#[derive(Default)]
struct RecordingScheduler {
    calls: Mutex<Vec<String>>,
}

impl RecordingScheduler {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

fn formation_of(spec: &DeploySpec) -> String {
    spec.processes
        .iter()
        .map(|p| format!("{}={}:{}", p.name, p.quantity, p.size))
        .collect::<Vec<_>>()
        .join(" ")
}

#[async_trait]
impl Scheduler for RecordingScheduler {
    async fn deploy(&self, spec: &DeploySpec, progress: &Progress) -> empire_core::Result<()> {
        progress.detail("(recording test scheduler: nothing runs)");
        self.record(format!("deploy v{} {}", spec.release, formation_of(spec)));
        Ok(())
    }
    async fn restore(&self, _current: &[DeploySpec]) -> empire_core::Result<()> {
        Ok(())
    }
    async fn remove_release(&self, app: &AppName, release: u32) -> empire_core::Result<()> {
        self.record(format!("remove_release {app} v{release}"));
        Ok(())
    }
    async fn remove_app(&self, app: &AppName) -> empire_core::Result<()> {
        self.record(format!("remove_app {app}"));
        Ok(())
    }
    async fn processes(&self, _app: &AppName) -> empire_core::Result<Vec<ProcessInstance>> {
        Ok(Vec::new())
    }
    async fn scale(&self, spec: &DeploySpec, progress: &Progress) -> empire_core::Result<()> {
        progress.detail("(recording test scheduler: nothing runs)");
        self.record(format!("scale {}", formation_of(spec)));
        Ok(())
    }
    async fn restart(
        &self,
        _spec: &DeploySpec,
        target: &RestartTarget,
        _progress: &Progress,
    ) -> empire_core::Result<()> {
        self.record(format!("restart {target:?}"));
        Ok(())
    }
    async fn run(&self, _spec: &OneOffSpec, _io: Option<RunIo>) -> empire_core::Result<RunOutcome> {
        Err(empire_core::Error::backend(
            "test scheduler",
            "the recording test scheduler runs no processes",
        ))
    }
    async fn logs(
        &self,
        app: &AppName,
        options: &LogOptions,
    ) -> empire_core::Result<mpsc::Receiver<LogLine>> {
        self.record(format!("logs {app} {options:?}"));
        let (tx, rx) = mpsc::channel(4);
        tx.send(LogLine {
            time: time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            source: "web.1".into(),
            text: "hello from the recording scheduler".into(),
        })
        .await
        .unwrap();
        Ok(rx)
    }
    async fn set_domains(&self, app: &AppName, hostnames: &[String]) -> empire_core::Result<()> {
        self.record(format!("set_domains {app} {hostnames:?}"));
        Ok(())
    }
}

/// Builds nothing: these tests deploy prebuilt images only.
struct NoBuilder;

#[async_trait]
impl ImageBuilder for NoBuilder {
    async fn build(
        &self,
        _request: &BuildRequest,
        _progress: &Progress,
    ) -> empire_core::Result<BuiltImage> {
        Err(empire_core::Error::Build(
            "these tests build no images".into(),
        ))
    }
}

/// Records which apps' leftovers were removed.
#[derive(Default)]
struct RecordingAppData(Mutex<Vec<String>>);

#[async_trait]
impl AppData for RecordingAppData {
    async fn remove(&self, app: &AppName) -> empire_core::Result<()> {
        self.0.lock().unwrap().push(app.to_string());
        Ok(())
    }
}

enum Backend {
    Recording,
    Docker,
}

/// An in-process gateway with the users `admin` (the first user, an admin), `alice` and
/// `bob`, each with a key.
struct Gateway {
    dir: tempfile::TempDir,
    port: u16,
    store: Arc<SqliteStore>,
    platform: Arc<Platform>,
    recording: Option<Arc<RecordingScheduler>>,
    app_data: Arc<RecordingAppData>,
    /// The Docker scheduler's namespace, whose containers are removed on drop.
    namespace: Option<String>,
    images: Mutex<Vec<String>>,
    shutdown: CancellationToken,
}

impl Gateway {
    async fn start(backend: Backend) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        for user in ["admin", "alice", "bob"] {
            store.create_user(user, false).await.unwrap();
            let key = dir.path().join(format!("id_{user}"));
            keygen(&key);
            let (fp, normalized) =
                parse_public_key(&std::fs::read_to_string(key.with_extension("pub")).unwrap())
                    .unwrap();
            store.add_key(user, &fp, &normalized).await.unwrap();
        }
        assert!(store.user("admin").await.unwrap().admin);
        assert!(!store.user("alice").await.unwrap().admin);

        let (scheduler, recording, namespace): (Arc<dyn Scheduler>, _, _) = match backend {
            Backend::Recording => {
                let recording = Arc::new(RecordingScheduler::default());
                (recording.clone(), Some(recording), None)
            }
            Backend::Docker => {
                let namespace = format!("gitd-{}", suffix());
                let options = DockerSchedulerOptions {
                    namespace: namespace.clone(),
                    boot_timeout: Duration::from_secs(30),
                    worker_settle: Duration::from_secs(1),
                    stop_grace: Duration::from_secs(2),
                    drain_timeout: Duration::from_secs(2),
                    ..Default::default()
                };
                let scheduler = DockerScheduler::connect(Router::new("localhost".into()), options)
                    .await
                    .expect("the Docker engine answers");
                (Arc::new(scheduler), None, Some(namespace))
            }
        };
        let pipeline = Arc::new(DeployPipeline::new(
            store.clone(),
            Arc::new(NoBuilder),
            scheduler.clone(),
            PipelineConfig::default(),
        ));
        let app_data = Arc::new(RecordingAppData::default());
        let platform = Arc::new(Platform::new(
            store.clone(),
            scheduler,
            pipeline.clone(),
            app_data.clone(),
        ));

        let config = GitServerConfig {
            repos_dir: dir.path().join("repos"),
            hook_program: PathBuf::from("/bin/false"),
            hook_socket: dir.path().join("hook.sock"),
            autocreate: false,
            keepalive: Duration::from_secs(5),
        };
        let host_key = load_or_generate_host_key(&dir.path().join("host_key")).unwrap();
        let server = GitServer::new(config, host_key, store.clone(), pipeline)
            .with_platform(platform.clone());
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move { server.run(tcp, shutdown).await.unwrap() }
        });
        Gateway {
            dir,
            port,
            store,
            platform,
            recording,
            app_data,
            namespace,
            images: Mutex::new(Vec::new()),
            shutdown,
        }
    }

    fn key(&self, user: &str) -> PathBuf {
        self.dir.path().join(format!("id_{user}"))
    }

    /// `ssh <options> git@127.0.0.1 <line>` as `user`, with `extra` options.
    fn command(&self, user: &str, extra: &[&str], line: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-i")
            .arg(self.key(user))
            .args([
                "-F",
                "/dev/null",
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
                &self.port.to_string(),
            ])
            .args(extra)
            .arg("git@127.0.0.1")
            .arg(line)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    async fn ssh(&self, user: &str, line: &str) -> Output {
        run(self.command(user, &[], line)).await
    }

    /// Runs the command and asserts it succeeded; returns its stdout.
    async fn ok(&self, user: &str, line: &str) -> String {
        let out = self.ssh(user, line).await;
        assert!(
            out.status.success(),
            "{line}: {}\nstdout: {}\nstderr: {}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    /// Runs the command and asserts it failed with status 1 and nothing on stdout;
    /// returns its stderr.
    async fn refused(&self, user: &str, line: &str) -> String {
        let out = self.ssh(user, line).await;
        assert_eq!(
            out.status.code(),
            Some(1),
            "{line}: stdout: {}\nstderr: {}",
            stdout(&out),
            stderr(&out)
        );
        stderr(&out)
    }

    async fn ssh_with_stdin(&self, user: &str, line: &str, input: &[u8]) -> Output {
        let mut cmd = self.command(user, &[], line);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).await.unwrap();
        drop(stdin);
        tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("ssh timed out")
            .unwrap()
    }

    /// Records a succeeded release of `image` with this Procfile, as a deploy would,
    /// without running anything.
    async fn recorded_release(&self, app: &str, procfile: &str, image: &str) -> u32 {
        let app = AppName::new(app).unwrap();
        let release = self
            .store
            .create_release(
                &app,
                NewRelease {
                    commit: None,
                    user: "alice".into(),
                    description: format!("Deploy {image}"),
                    config: self.store.app_config(&app).await.unwrap(),
                },
            )
            .await
            .unwrap();
        self.store
            .set_release_build(
                &app,
                release.version,
                &ReleaseBuild {
                    image: image.into(),
                    image_id: image.into(),
                    procfile: Some(procfile.into()),
                    process_types: process_types(Some(procfile)).unwrap(),
                },
            )
            .await
            .unwrap();
        for status in [ReleaseStatus::Deploying, ReleaseStatus::Succeeded] {
            self.store
                .set_release_status(&app, release.version, status, None)
                .await
                .unwrap();
        }
        release.version
    }

    /// Builds an image from `empire/busybox` with this Dockerfile tail; removed on drop.
    fn image(&self, dockerfile_tail: &str) -> String {
        let image = format!("gitd-ssh-test:{}", suffix());
        // A label naming this image makes its layers its own: a parallel test removing an
        // identical image cannot remove them.
        let dockerfile =
            format!("FROM {BASE_IMAGE}\nLABEL empire.test.image=\"{image}\"\n{dockerfile_tail}");
        let mut build = std::process::Command::new("docker")
            .args(["build", "-q", "-t", &image, "-"])
            .env("DOCKER_BUILDKIT", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker build runs");
        use std::io::Write;
        build
            .stdin
            .take()
            .unwrap()
            .write_all(dockerfile.as_bytes())
            .unwrap();
        let output = build.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "building the test image failed (is {BASE_IMAGE} there? scripts/base-images.sh builds it): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.images.lock().unwrap().push(image.clone());
        image
    }

    /// The names of the Docker containers of an app, sorted.
    fn containers(&self, app: &str) -> Vec<String> {
        let namespace = self.namespace.as_ref().expect("a docker gateway");
        let out = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=empire.gateway={namespace}"),
            "--filter",
            &format!("label=empire.app={app}"),
            "--format",
            "{{.Label \"empire.process\"}}.{{.Label \"empire.instance\"}} v{{.Label \"empire.release\"}}",
        ]);
        let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
        lines.sort();
        lines
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(namespace) = &self.namespace {
            let ids = docker(&[
                "ps",
                "-aq",
                "--filter",
                &format!("label=empire.gateway={namespace}"),
            ]);
            let ids: Vec<&str> = ids.lines().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                docker(&args);
            }
        }
        for image in self.images.lock().unwrap().drain(..) {
            docker(&["rmi", "-f", &image]);
        }
    }
}

fn docker(args: &[&str]) -> String {
    let output = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn keygen(path: &Path) {
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test@laptop", "-f"])
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

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn app_name(prefix: &str) -> String {
    format!("{prefix}-{}", suffix())
}

// ---------------------------------------------------------------------------------------
// Commands on the store (recording scheduler).
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_the_commands() {
    let gw = Gateway::start(Backend::Recording).await;
    let help = gw.ok("alice", "help").await;
    assert!(
        help.starts_with("Usage: ssh -p PORT git@HOST <command> [app] [args]\n"),
        "{help}"
    );
    for usage in [
        "apps",
        "create <app>",
        "destroy <app> --confirm <app>",
        "config:set <app> KEY=VALUE...",
        "releases:info <app> vN",
        "rollback <app> vN",
        "scale <app> TYPE=N[:SIZE]...",
        "run <app> [--detach] [--] COMMAND...",
        "logs <app> [--tail N] [--process TYPE] [-f]",
        "domains:add <app> HOST",
        "access:add <app> USER",
        "keys:add",
        "tokens:create [DESCRIPTION]",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(usage)),
            "{usage} missing from:\n{help}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_command_is_one_line_and_status_1() {
    let gw = Gateway::start(Backend::Recording).await;
    let out = gw.ssh("alice", "frobnicate shop").await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "unknown command \"frobnicate\": try \"help\"\n"
    );
    assert!(out.stdout.is_empty());

    // A line the splitter cannot read is one error line too, and nothing runs.
    let err = gw.refused("alice", "config:set shop 'MSG=oops").await;
    assert_eq!(
        err,
        " !     cannot read the command: unterminated single quote\n"
    );
    // Missing arguments say how to use the command.
    let err = gw.refused("alice", "config:set").await;
    assert_eq!(err, " !     usage: config:set <app> KEY=VALUE...\n");
    // Git commands still go the git way.
    let err = gw.refused("alice", "git-upload-pack 'nope.git'").await;
    assert_eq!(err, "app nope does not exist\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_apps_and_config_with_quoted_values() {
    let gw = Gateway::start(Backend::Recording).await;
    assert_eq!(
        gw.ok("alice", "apps").await,
        "You have no apps: create one with \"create <app>\".\n"
    );
    let shop = app_name("shop");
    let created = gw.ok("alice", &format!("create {shop}")).await;
    assert!(
        created.starts_with(&format!("-----> Created {shop}\n")),
        "{created}"
    );
    let err = gw.refused("alice", &format!("create {shop}")).await;
    assert!(err.starts_with(" !     ") && err.contains(&shop), "{err}");
    let err = gw.refused("alice", "create Not_Valid").await;
    assert!(err.starts_with(" !     invalid app name"), "{err}");

    let apps = gw.ok("alice", "apps").await;
    let lines: Vec<&str> = apps.lines().collect();
    assert_eq!(lines[0], "=== alice's apps");
    assert!(
        lines[1].starts_with("NAME") && lines[1].contains("RELEASE"),
        "{apps}"
    );
    assert!(lines[2].starts_with(&format!("{shop}  ")), "{apps}");
    // Columns line up: RELEASE starts where the app's release does.
    assert_eq!(lines[1].find("RELEASE"), lines[2].find("- "), "{apps}");

    // The quotes reach the server and keep the space inside the value.
    let set = gw
        .ok(
            "alice",
            &format!("config:set {shop} 'MSG=hello world' \"GREETING=it's me\" DEBUG=1"),
        )
        .await;
    assert_eq!(
        set,
        format!(
            "-----> Setting DEBUG, GREETING and MSG on {shop}\nDEBUG:    1\nGREETING: it's me\nMSG:      hello world\n"
        )
    );
    let config = gw.ok("alice", &format!("config {shop}")).await;
    assert_eq!(
        config,
        format!("=== {shop} Config Vars\nDEBUG:    1\nGREETING: it's me\nMSG:      hello world\n")
    );
    gw.ok("alice", &format!("config:unset {shop} DEBUG GREETING"))
        .await;
    let config = gw.ok("alice", &format!("config {shop}")).await;
    assert_eq!(
        config,
        format!("=== {shop} Config Vars\nMSG: hello world\n")
    );
    let err = gw
        .refused("alice", &format!("config:set {shop} 1BAD=x"))
        .await;
    assert!(err.starts_with(" !     invalid config key"), "{err}");

    let info = gw.ok("alice", &format!("info {shop}")).await;
    assert!(info.starts_with(&format!("=== {shop}\n")), "{info}");
    assert!(info.contains("Release:       none yet\n"), "{info}");
    assert!(info.contains("Collaborators: alice\n"), "{info}");

    // Destroying needs the name repeated.
    let err = gw.refused("alice", &format!("destroy {shop}")).await;
    assert!(err.contains(&format!("--confirm {shop}")), "{err}");
    gw.ok("alice", &format!("destroy {shop} --confirm {shop}"))
        .await;
    assert_eq!(*gw.app_data.0.lock().unwrap(), vec![shop.clone()]);
    let err = gw.refused("alice", &format!("config {shop}")).await;
    assert_eq!(err, format!(" !     app not found: {shop}\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_collaborator_is_refused() {
    let gw = Gateway::start(Backend::Recording).await;
    let shop = app_name("shop");
    gw.ok("alice", &format!("create {shop}")).await;
    gw.ok("alice", &format!("config:set {shop} SECRET=s3cret"))
        .await;

    for line in [
        format!("config {shop}"),
        format!("config:set {shop} SECRET=mine"),
        format!("info {shop}"),
        format!("releases {shop}"),
        format!("scale {shop} web=2"),
        format!("run {shop} -- id"),
        format!("logs {shop}"),
        format!("access:add {shop} bob"),
        format!("destroy {shop} --confirm {shop}"),
    ] {
        let err = gw.refused("bob", &line).await;
        assert_eq!(
            err,
            format!(" !     you (bob) do not have access to app {shop}\n"),
            "{line}"
        );
    }
    assert!(!gw.ok("bob", "apps").await.contains(&shop));
    assert_eq!(
        gw.refused("bob", "config nope").await,
        " !     app not found: nope\n"
    );
    // Nothing bob tried changed anything or reached the scheduler.
    let config = gw.ok("alice", &format!("config {shop}")).await;
    assert!(config.contains("SECRET: s3cret"), "{config}");
    assert!(gw.recording.as_ref().unwrap().calls().is_empty());

    // Once alice gives bob access, he may.
    let added = gw.ok("alice", &format!("access:add {shop} bob")).await;
    assert_eq!(added, format!("-----> Gave bob access to {shop}\n"));
    assert_eq!(
        gw.ok("alice", &format!("access {shop}")).await,
        format!("=== {shop} Collaborators\nalice\nbob\n")
    );
    assert!(
        gw.ok("bob", &format!("config {shop}"))
            .await
            .contains("SECRET: s3cret")
    );
    assert!(gw.ok("bob", "apps").await.contains(&shop));
    gw.ok("alice", &format!("access:remove {shop} bob")).await;
    gw.refused("bob", &format!("config {shop}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_refuses_an_unknown_process_type_and_streams_a_known_one() {
    let gw = Gateway::start(Backend::Recording).await;
    let recording = gw.recording.clone().unwrap();
    let shop = app_name("shop");
    gw.ok("alice", &format!("create {shop}")).await;
    let err = gw.refused("alice", &format!("scale {shop} web=2")).await;
    assert!(err.contains("has no release yet"), "{err}");
    gw.recorded_release(
        &shop,
        "web: httpd -f -p $PORT\nworker: sleep 1000\n",
        BASE_IMAGE,
    )
    .await;

    let out = gw
        .ssh("alice", &format!("scale {shop} web=2 bogus=1"))
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(" !     process type not found: bogus (v1 of {shop} has web, worker)\n")
    );
    assert!(recording.calls().is_empty(), "{:?}", recording.calls());
    let err = gw.refused("alice", &format!("scale {shop} web=x")).await;
    assert!(err.starts_with(" !     invalid quantity"), "{err}");

    let out = gw
        .ok("alice", &format!("scale {shop} worker=2:2X web=3"))
        .await;
    assert_eq!(
        out,
        format!(
            "-----> Scaling {shop}: worker=2:2X web=3\n       (recording test scheduler: nothing runs)\n       Now running web at 3:1X, worker at 2:2X\n"
        )
    );
    assert_eq!(recording.calls(), ["scale web=3:1X worker=2:2X"]);
    let ps = gw.ok("alice", &format!("ps {shop}")).await;
    assert_eq!(
        ps,
        format!(
            "=== {shop} Processes\n(none running)\n=== {shop} Formation\nTYPE    QUANTITY  SIZE\nweb     3         1X\nworker  2         2X\n"
        )
    );

    let err = gw.refused("alice", &format!("restart {shop} bogus")).await;
    assert_eq!(err, " !     process type not found: bogus\n");
    gw.ok("alice", &format!("restart {shop} web.2")).await;
    assert_eq!(recording.calls()[1], "restart Instance(\"web\", 2)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_domains_and_logs() {
    let gw = Gateway::start(Backend::Recording).await;
    let recording = gw.recording.clone().unwrap();
    let shop = app_name("shop");
    gw.ok("alice", &format!("create {shop}")).await;
    assert_eq!(
        gw.ok("alice", &format!("releases {shop}")).await,
        format!("{shop} has no releases yet: git push to deploy it.\n")
    );
    gw.recorded_release(&shop, "web: httpd -f -p $PORT\n", BASE_IMAGE)
        .await;
    let app = AppName::new(&shop).unwrap();
    gw.store
        .append_deploy_log(&app, 1, "-----> Building\n       step one\n")
        .await
        .unwrap();

    // A config change of a running app is a new release, deployed through the pipeline.
    let out = gw
        .ok("alice", &format!("config:set {shop} 'MSG=hello world'"))
        .await;
    assert!(
        out.starts_with(&format!("-----> Setting MSG on {shop}\n")),
        "{out}"
    );
    assert!(
        out.contains("       (recording test scheduler: nothing runs)\n"),
        "{out}"
    );
    assert!(out.ends_with("MSG: hello world\n"), "{out}");
    assert_eq!(recording.calls(), ["deploy v2 web=1:1X"]);

    let releases = gw.ok("alice", &format!("releases {shop}")).await;
    let lines: Vec<&str> = releases.lines().collect();
    assert_eq!(lines[0], format!("=== {shop} Releases"));
    assert!(lines[1].starts_with("VERSION  STATUS"), "{releases}");
    assert!(
        lines[2].starts_with("v2       succeeded (current)  Set MSG config var"),
        "{releases}"
    );
    assert!(lines[3].starts_with("v1       succeeded"), "{releases}");

    let info = gw.ok("alice", &format!("releases:info {shop} v1")).await;
    assert!(
        info.starts_with(&format!("=== {shop} v1\nStatus:")),
        "{info}"
    );
    assert!(
        info.contains(&format!("Image:       {BASE_IMAGE}\n")),
        "{info}"
    );
    assert!(
        info.ends_with("=== Build log\n-----> Building\n       step one\n"),
        "{info}"
    );
    let err = gw
        .refused("alice", &format!("releases:info {shop} v9"))
        .await;
    assert!(err.starts_with(" !     release not found"), "{err}");

    assert_eq!(
        gw.ok("alice", &format!("domains:add {shop} WWW.Example.com"))
            .await,
        format!("-----> Added www.example.com to {shop}\n")
    );
    let domains = gw.ok("alice", &format!("domains {shop}")).await;
    assert!(domains.contains("\nwww.example.com  "), "{domains}");
    gw.ok("alice", &format!("domains:remove {shop} www.example.com"))
        .await;
    assert_eq!(
        gw.ok("alice", &format!("domains {shop}")).await,
        format!("{shop} has no custom domains.\n")
    );

    let logs = gw
        .ok("alice", &format!("logs {shop} --tail 5 --process web"))
        .await;
    assert_eq!(
        logs,
        "2023-11-14T22:13:20.000Z app[web.1]: hello from the recording scheduler\n"
    );
    assert!(recording.calls().iter().any(|c| {
        c.contains("LogOptions { process: Some(\"web\"), tail: Some(5), follow: false }")
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_tokens() {
    let gw = Gateway::start(Backend::Recording).await;

    let token = gw.ssh("alice", "tokens:create for ci").await;
    assert!(token.status.success(), "{}", stderr(&token));
    let secret = stdout(&token);
    let secret = secret.strip_suffix('\n').unwrap();
    assert!(
        secret.starts_with("emp_") && !secret.contains(char::is_whitespace),
        "{secret}"
    );
    assert!(
        stderr(&token).contains("shown only this once"),
        "{}",
        stderr(&token)
    );
    // The token authenticates alice.
    let user = gw.platform.user_by_token(secret).await.unwrap();
    assert_eq!(user.name, "alice");

    // A new key, read from stdin, then usable to log in.
    let new_key = gw.dir.path().join("id_alice_laptop");
    keygen(&new_key);
    let public = std::fs::read(new_key.with_extension("pub")).unwrap();
    let out = gw.ssh_with_stdin("alice", "keys:add", &public).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (fp, _) = parse_public_key(std::str::from_utf8(&public).unwrap()).unwrap();
    assert_eq!(stdout(&out), format!("-----> Added key {fp} for alice\n"));
    let keys = gw.ok("alice", "keys").await;
    assert!(keys.starts_with("=== alice's keys\nFINGERPRINT"), "{keys}");
    assert!(
        keys.contains(&fp) && keys.contains("ssh-ed25519  test@laptop"),
        "{keys}"
    );
    assert_eq!(keys.lines().count(), 4, "{keys}");

    let mut cmd = Command::new("ssh");
    cmd.arg("-i")
        .arg(&new_key)
        .args([
            "-F",
            "/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
        ])
        .args([
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
        ])
        .args(["-p", &gw.port.to_string(), "git@127.0.0.1", "keys"])
        .stdin(Stdio::null());
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", stderr(&out));

    let out = gw.ssh_with_stdin("alice", "keys:add", b"not a key").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(" !     invalid public key: expected an OpenSSH public key"),
        "{}",
        stderr(&out)
    );
    let err = gw.refused("alice", "keys:add").await;
    assert!(err.contains("give the key on stdin"), "{err}");

    // bob cannot remove alice's key; alice can.
    let err = gw.refused("bob", &format!("keys:remove {fp}")).await;
    assert_eq!(err, format!(" !     key not found: {fp}\n"));
    gw.ok("alice", &format!("keys:remove {fp}")).await;
    assert_eq!(gw.ok("alice", "keys").await.lines().count(), 3);
}

// ---------------------------------------------------------------------------------------
// One-off processes and a running app (Docker).
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_passes_output_input_and_the_exit_code_through() {
    let gw = Gateway::start(Backend::Docker).await;
    let shop = app_name("shop");
    gw.ok("alice", &format!("create {shop}")).await;
    let err = gw.refused("alice", &format!("run {shop} -- true")).await;
    assert!(err.contains("has no release to run a command in"), "{err}");
    gw.recorded_release(&shop, "web: httpd -f -p $PORT\n", BASE_IMAGE)
        .await;
    gw.ok("alice", &format!("config:set {shop} 'MSG=hello world'"))
        .await;

    let out = gw
        .ssh("alice", &format!("run {shop} -- sh -c 'exit 3'"))
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    // The command is the rest of the line; the container's shell expands it.
    let out = gw
        .ssh("alice", &format!("run {shop} echo \"$MSG\" from $(tty)"))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello world from not a tty\n");

    let out = gw
        .ssh_with_stdin("alice", &format!("run {shop} -- tr a-z A-Z"), b"piped in\n")
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "PIPED IN\n");

    // No one-off container is left behind (web.1 is v2, the config change's release).
    assert_eq!(gw.containers(&shop), ["web.1 v2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_ssh_t_gets_a_terminal() {
    let gw = Gateway::start(Backend::Docker).await;
    let shop = app_name("shop");
    gw.ok("alice", &format!("create {shop}")).await;
    gw.recorded_release(&shop, "web: httpd -f -p $PORT\n", BASE_IMAGE)
        .await;

    // -tt: a PTY even though the test's stdin is not a terminal. That stdin ends at once;
    // the output, written after it ended, still arrives.
    let out = run(gw.command(
        "alice",
        &["-tt"],
        &format!("run {shop} -- sleep 0.5; tty; exit 4"),
    ))
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("/dev/pts/"), "{text:?}");
    // The terminal's line discipline ends lines with CR LF.
    assert!(text.contains("\r\n"), "{text:?}");

    // Other commands accept the PTY and write CR LF for the raw terminal.
    let out = run(gw.command("alice", &["-tt"], &format!("config {shop}"))).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{shop} has no config vars.\r\n"));
}

/// A russh client, to send window changes the way a resized terminal does.
mod client {
    use super::*;
    use russh::ChannelMsg;
    use russh::client::{self, Handle};
    use russh::keys::{PrivateKeyWithHashAlg, load_secret_key};

    pub struct AcceptAny;

    impl client::Handler for AcceptAny {
        type Error = russh::Error;
        async fn check_server_key(
            &mut self,
            _key: &russh::keys::PublicKeyOrCertificate,
        ) -> Result<bool, Self::Error> {
            Ok(true)
        }
    }

    pub async fn connect(port: u16, key: &Path) -> Handle<AcceptAny> {
        let config = Arc::new(client::Config::default());
        let mut handle = client::connect(config, ("127.0.0.1", port), AcceptAny)
            .await
            .unwrap();
        let key = load_secret_key(key, None).unwrap();
        let auth = handle
            .authenticate_publickey("git", PrivateKeyWithHashAlg::new(Arc::new(key), None))
            .await
            .unwrap();
        assert!(auth.success());
        handle
    }

    /// Collects a channel's stdout until it closes, with its exit status.
    pub async fn collect(channel: &mut russh::Channel<client::Msg>) -> (String, Option<u32>) {
        let mut out = Vec::new();
        let mut status = None;
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        (String::from_utf8_lossy(&out).into_owned(), status)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_changes_resize_the_terminal_of_run() {
    let gw = Gateway::start(Backend::Docker).await;
    let shop = app_name("shop");
    gw.ok("alice", &format!("create {shop}")).await;
    gw.recorded_release(&shop, "web: httpd -f -p $PORT\n", BASE_IMAGE)
        .await;

    let handle = client::connect(gw.port, &gw.key("alice")).await;
    let mut channel = handle.channel_open_session().await.unwrap();
    channel
        .request_pty(true, "xterm", 80, 24, 0, 0, &[])
        .await
        .unwrap();
    channel
        .exec(
            true,
            format!("run {shop} -- sleep 1; stty -a | head -1; sleep 3; stty -a | head -1"),
        )
        .await
        .unwrap();
    // Once the process printed its first size, the terminal is resized.
    let mut first = Vec::new();
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(msg) = channel.wait().await {
            if let russh::ChannelMsg::Data { data } = msg {
                first.extend_from_slice(&data);
                if String::from_utf8_lossy(&first).contains("line = 0;") {
                    return;
                }
            }
        }
        panic!(
            "the channel closed early: {}",
            String::from_utf8_lossy(&first)
        );
    })
    .await;
    assert!(waited.is_ok(), "{}", String::from_utf8_lossy(&first));
    channel.window_change(132, 43, 0, 0).await.unwrap();
    let (rest, status) =
        tokio::time::timeout(Duration::from_secs(60), client::collect(&mut channel))
            .await
            .expect("run ended");
    let out = format!("{}{rest}", String::from_utf8_lossy(&first));
    assert_eq!(status, Some(0), "{out}");
    let sizes: Vec<&str> = out.lines().filter(|l| l.contains("rows")).collect();
    assert_eq!(sizes.len(), 2, "{out}");
    assert!(sizes[0].contains("rows 24; columns 80;"), "{out}");
    assert!(sizes[1].contains("rows 43; columns 132;"), "{out}");
}

/// Reads a command's stdout line by line, noting when each line arrived.
async fn timed_lines(mut cmd: Command) -> (Vec<(Duration, String)>, Output) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut lines = Vec::new();
    let read = async {
        while let Some(line) = reader.next_line().await.unwrap() {
            lines.push((started.elapsed(), line));
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("the command ended");
    let out = child.wait_with_output().await.unwrap();
    (lines, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operating_a_running_app_streams_progress() {
    let gw = Gateway::start(Backend::Docker).await;
    let shop = app_name("shop");
    gw.ok("alice", &format!("create {shop}")).await;
    let image = gw.image(
        "RUN mkdir -p /www && echo hello > /www/index.html\n\
         CMD echo \"booted with MSG=$MSG\" && exec httpd -f -p $PORT -h /www\n",
    );
    let alice = gw.store.user("alice").await.unwrap();
    let app = AppName::new(&shop).unwrap();
    gw.platform
        .deploy_image(&alice, &app, &image, None, Progress::null())
        .await
        .expect("the test image deploys");
    assert_eq!(gw.containers(&shop), ["web.1 v1"]);

    let ps = gw.ok("alice", &format!("ps {shop}")).await;
    assert!(ps.contains("\nweb.1  up     v1"), "{ps}");

    // config:set redeploys health-gated; its progress arrives while it runs.
    let (lines, out) = timed_lines(gw.command(
        "alice",
        &[],
        &format!("config:set {shop} 'MSG=hello world'"),
    ))
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(
        text[0],
        format!("-----> Setting MSG on {shop}"),
        "{text:#?}"
    );
    assert!(text.len() > 3, "{text:#?}");
    assert_eq!(*text.last().unwrap(), "MSG: hello world", "{text:#?}");
    let first = lines[0].0;
    let last = lines.last().unwrap().0;
    assert!(
        last - first >= Duration::from_millis(200),
        "all lines came at once ({first:?}..{last:?}): {text:#?}"
    );
    assert_eq!(gw.containers(&shop), ["web.1 v2"]);
    let releases = gw.ok("alice", &format!("releases {shop}")).await;
    assert!(
        releases.contains("v2       succeeded (current)  Set MSG config var"),
        "{releases}"
    );

    let logs = gw.ok("alice", &format!("logs {shop} --tail 10")).await;
    assert!(
        logs.lines()
            .any(|l| l.ends_with("app[web.1]: booted with MSG=hello world")),
        "{logs}"
    );

    let scaled = gw.ok("alice", &format!("scale {shop} web=2")).await;
    assert!(
        scaled.starts_with(&format!("-----> Scaling {shop}: web=2\n")),
        "{scaled}"
    );
    assert!(
        scaled.ends_with("       Now running web at 2:1X\n"),
        "{scaled}"
    );
    assert_eq!(gw.containers(&shop), ["web.1 v2", "web.2 v2"]);

    let restarted = gw.ok("alice", &format!("restart {shop} web.2")).await;
    assert!(restarted.ends_with("       Restarted\n"), "{restarted}");

    let rolled = gw.ok("alice", &format!("rollback {shop} v1")).await;
    assert!(
        rolled.starts_with(&format!("-----> Rolling back {shop} to v1\n")),
        "{rolled}"
    );
    assert!(
        rolled.contains("-----> Rolled back to v1: v3 is now serving"),
        "{rolled}"
    );
    let config = gw.ok("alice", &format!("config {shop}")).await;
    assert_eq!(config, format!("{shop} has no config vars.\n"));

    gw.ok("alice", &format!("destroy {shop} --confirm {shop}"))
        .await;
    assert!(
        gw.containers(&shop).is_empty(),
        "{:?}",
        gw.containers(&shop)
    );
}
