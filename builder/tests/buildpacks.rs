//! Buildpack builds of real commits on the real Docker engine, with the real stack images
//! (build them first with `scripts/stack-images.sh`). The python and nodejs apps install
//! one real dependency from PyPI / npm through the host's CA bundle.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use empire_builder::{BuildpackConfig, DockerBuilder, STACK_BUILD_IMAGE, STACK_RUN_IMAGE};
use empire_core::Error;
use empire_core::app::AppName;
use empire_core::build::{BuildRequest, BuiltImage, ImageBuilder};
use empire_core::progress::{Progress, ProgressSink};
use empire_core::release::ConfigVars;

// ---------------------------------------------------------------------------------------
// helpers

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// Fails the test with what to do when the stack images are not built.
fn require_stacks() {
    for image in [STACK_BUILD_IMAGE, STACK_RUN_IMAGE] {
        assert!(
            docker_cli(&["image", "inspect", image]).ok,
            "the stack image {image} is missing: build the stack images first with scripts/stack-images.sh"
        );
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Buildpack Test",
            "-c",
            "user.email=bp@example.com",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null())
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Writes `files` (path, content, executable) under `dir`.
fn write_files(dir: &Path, files: &[(&str, &str, bool)]) {
    for (path, content, executable) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        if *executable {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A bare repository holding one commit.
struct Repo {
    _dir: tempfile::TempDir,
    bare: PathBuf,
    commit: String,
}

impl Repo {
    /// The fixture `tests/fixtures/<name>` plus `extra` files, committed.
    fn fixture(name: &str, extra: &[(&str, &str, bool)]) -> Repo {
        Repo::build(|work| {
            copy_tree(&fixtures().join(name), work);
            write_files(work, extra);
        })
    }

    fn files(files: &[(&str, &str, bool)]) -> Repo {
        Repo::build(|work| write_files(work, files))
    }

    fn build(fill: impl FnOnce(&Path)) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        git(&work, &["init", "-q"]);
        fill(&work);
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "test commit"]);
        let commit = git(&work, &["rev-parse", "HEAD"]);
        git(dir.path(), &["clone", "-q", "--bare", "work", "repo.git"]);
        let bare = dir.path().join("repo.git");
        Repo {
            _dir: dir,
            bare,
            commit,
        }
    }
}

/// A buildpack in a git repository of its own (a third-party buildpack).
struct BuildpackRepo {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl BuildpackRepo {
    /// Commits `bin/detect`, `bin/compile` and `bin/release` with these bodies.
    fn new(detect: &str, compile: &str, release: &str) -> BuildpackRepo {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buildpack");
        std::fs::create_dir(&path).unwrap();
        git(&path, &["init", "-q"]);
        BuildpackRepo::commit_bins(&path, detect, compile, release);
        BuildpackRepo { _dir: dir, path }
    }

    fn commit_bins(path: &Path, detect: &str, compile: &str, release: &str) {
        write_files(
            path,
            &[
                (
                    "bin/detect",
                    &format!("#!/usr/bin/env bash\n{detect}"),
                    true,
                ),
                (
                    "bin/compile",
                    &format!("#!/usr/bin/env bash\n{compile}"),
                    true,
                ),
                (
                    "bin/release",
                    &format!("#!/usr/bin/env bash\n{release}"),
                    true,
                ),
            ],
        );
        git(path, &["add", "-A"]);
        git(path, &["commit", "-q", "-m", "buildpack"]);
    }

    fn url(&self) -> String {
        format!("file://{}", self.path.display())
    }
}

/// A unique app; its images, cache volume and any containers are removed when dropped.
struct TestApp {
    name: AppName,
}

impl TestApp {
    fn new() -> TestApp {
        require_stacks();
        let id = uuid::Uuid::new_v4().simple().to_string();
        TestApp {
            name: AppName::new(&format!("bp-{}", &id[..12])).unwrap(),
        }
    }

    fn tag(&self, version: u32) -> String {
        format!("empire/{}:v{version}", self.name)
    }

    fn request(&self, repo: &Repo, version: u32) -> BuildRequest {
        BuildRequest {
            app: self.name.clone(),
            version,
            repo_path: repo.bare.clone(),
            object_dirs: Vec::new(),
            commit: repo.commit.clone(),
            config: ConfigVars::new(),
            no_cache: false,
        }
    }

    /// Containers of this app's builds still on the engine (build containers are
    /// labelled, slug containers named after the app).
    fn leftover_containers(&self) -> Vec<String> {
        let labelled = docker_cli(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=empire.app={}", self.name),
            "--filter",
            "label=empire.build",
        ]);
        let named = docker_cli(&[
            "ps",
            "-aq",
            "--filter",
            &format!("name=empire-slug-{}-", self.name),
        ]);
        labelled
            .stdout
            .lines()
            .chain(named.stdout.lines())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        for id in self.leftover_containers() {
            let _ = docker_cli(&["rm", "-f", &id]);
        }
        let listed = docker_cli(&[
            "image",
            "ls",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            &format!("empire/{}", self.name),
        ]);
        for tag in listed.stdout.lines().filter(|l| !l.is_empty()) {
            let _ = docker_cli(&["image", "rm", tag]);
        }
        let _ = docker_cli(&["volume", "rm", &format!("empire-cache-{}", self.name)]);
    }
}

struct CliOutput {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn docker_cli(args: &[&str]) -> CliOutput {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    CliOutput {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A progress sink that records every line.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl ProgressSink for Recorder {
    fn write_line(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_string());
    }
}

impl Recorder {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn has(&self, needle: &str) -> bool {
        self.lines().iter().any(|l| l.contains(needle))
    }

    fn position(&self, needle: &str) -> Option<usize> {
        self.lines().iter().position(|l| l.contains(needle))
    }
}

async fn build_with(
    builder: &DockerBuilder,
    request: &BuildRequest,
) -> (empire_core::Result<BuiltImage>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let progress = Progress::new(recorder.clone());
    let result = builder.build(request, &progress).await;
    // The build and slug containers are removed in the background after the build
    // returns: wait for that, so the checks that none is left see the end state.
    builder.finish_removals().await;
    if std::env::var_os("BP_TEST_SHOW_OUTPUT").is_some() {
        eprintln!("{}", recorder.lines().join("\n"));
    }
    (result, recorder)
}

async fn build(request: &BuildRequest) -> (empire_core::Result<BuiltImage>, Arc<Recorder>) {
    let builder = DockerBuilder::connect().await.expect("docker is reachable");
    build_with(&builder, request).await
}

/// Builds and expects success, showing the output otherwise.
async fn build_ok(request: &BuildRequest) -> (BuiltImage, Arc<Recorder>) {
    let (result, recorder) = build(request).await;
    match result {
        Ok(built) => (built, recorder),
        Err(err) => panic!("build failed: {err}\n{}", recorder.lines().join("\n")),
    }
}

/// The command of a process type in Procfile text.
fn process(procfile: &str, name: &str) -> String {
    procfile
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {procfile:?}"))
        .to_string()
}

/// A container of an image started as the docker scheduler starts a launcher image: the
/// image's ENTRYPOINT with the process command as CMD (or the image's CMD with none),
/// `$PORT` set and published on the loopback.
struct Running {
    id: String,
    port: u16,
}

impl Running {
    fn start(image: &str, command: Option<&str>) -> Running {
        let mut args = vec![
            "run",
            "-d",
            "-e",
            "PORT=5000",
            "-p",
            "127.0.0.1::5000",
            image,
        ];
        if let Some(command) = command {
            args.push(command);
        }
        let out = docker_cli(&args);
        assert!(out.ok, "docker run {image} failed: {}", out.stderr);
        let id = out.stdout.trim().to_string();
        let port = docker_cli(&["port", &id, "5000/tcp"]);
        let port = port
            .stdout
            .lines()
            .next()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no published port: {}", port.stderr));
        Running { id, port }
    }

    /// GETs `/` until the app answers (30 s at most) and returns the body.
    fn get(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(response) = http_get(self.port) {
                let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
                assert!(head.contains(" 200 "), "unexpected response: {response}");
                return body.to_string();
            }
            if Instant::now() > deadline {
                let logs = docker_cli(&["logs", &self.id]);
                panic!(
                    "the app did not answer on port {}; logs:\n{}{}",
                    self.port, logs.stdout, logs.stderr
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = docker_cli(&["rm", "-f", &self.id]);
    }
}

fn http_get(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    (!response.is_empty()).then_some(response)
}

fn inspect(image: &str, format: &str) -> String {
    let out = docker_cli(&["image", "inspect", "--format", format, image]);
    assert!(out.ok, "inspecting {image}: {}", out.stderr);
    out.stdout.trim().to_string()
}

// ---------------------------------------------------------------------------------------
// tests

#[tokio::test]
async fn a_static_site_builds_on_the_run_stack_and_serves() {
    let app = TestApp::new();
    let repo = Repo::fixture("bp-static", &[]);
    let (built, recorder) = build_ok(&app.request(&repo, 1)).await;

    assert_eq!(built.image, app.tag(1));
    assert!(built.image_id.starts_with("sha256:"), "{}", built.image_id);
    let procfile = built.procfile.expect("the static buildpack declares web");
    assert_eq!(
        procfile,
        "web: exec busybox httpd -f -v -p ${PORT:-5000} -h /app\n"
    );
    let lines = recorder.lines();
    assert_eq!(
        lines[0],
        format!("-----> Building with buildpacks on {STACK_BUILD_IMAGE}")
    );
    assert!(
        recorder.has("Detected buildpack static (Static)"),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"-----> Static site detected".to_string()),
        "{lines:#?}"
    );
    assert!(recorder.has(&format!("Built {}", app.tag(1))), "{lines:#?}");

    // The image: the run stack, the launcher, the labels, the non-root user.
    assert_eq!(
        inspect(&built.image, "{{json .Config.Entrypoint}}"),
        "[\"/empire/launch\"]"
    );
    assert_eq!(inspect(&built.image, "{{.Config.User}}"), "empire");
    assert_eq!(
        inspect(
            &built.image,
            "{{index .Config.Labels \"empire.launcher\"}} {{index .Config.Labels \"empire.app\"}} {{index .Config.Labels \"empire.release\"}}"
        ),
        format!("true {} 1", app.name)
    );
    let tools = docker_cli(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        &built.image,
        "-c",
        "for t in go npm gcc git; do command -v $t; done; id -un; cat /app/index.html",
    ]);
    assert!(tools.ok, "{}", tools.stderr);
    assert!(
        tools.stdout.starts_with("empire\n") && tools.stdout.contains("Hello from a static site"),
        "build tools in the image, or wrong user: {}",
        tools.stdout
    );

    let running = Running::start(&built.image, Some(&process(&procfile, "web")));
    assert!(running.get().contains("<h1>Hello from a static site</h1>"));
    assert!(app.leftover_containers().is_empty());
}

#[tokio::test]
async fn a_python_app_installs_from_pypi_into_a_venv_and_reuses_the_cache() {
    let app = TestApp::new();
    let repo = Repo::fixture("bp-python", &[]);

    let (built, recorder) = build_ok(&app.request(&repo, 1)).await;
    let lines = recorder.lines();
    assert!(
        lines.contains(&"-----> Python app detected".to_string()),
        "{lines:#?}"
    );
    assert!(recorder.has("Collecting six==1.16.0"), "{lines:#?}");
    assert!(
        recorder.has("Successfully installed six-1.16.0"),
        "{lines:#?}"
    );
    assert!(!recorder.has("reused"), "{lines:#?}");
    let procfile = built.procfile.clone().unwrap();
    assert_eq!(procfile, "web: python app.py\n");
    assert_eq!(
        inspect(&built.image, "{{range .Config.Env}}{{println .}}{{end}}")
            .lines()
            .filter(|l| l.starts_with("PYTHONUNBUFFERED=") || l.starts_with("HOME="))
            .collect::<Vec<_>>(),
        vec!["HOME=/app", "PYTHONUNBUFFERED=1"]
    );
    {
        let running = Running::start(&built.image, Some("python app.py"));
        assert_eq!(running.get(), "Hello from Python with six 1.16.0\n");
    }

    // Unchanged requirements: the virtualenv comes from the cache, nothing installs.
    let (built2, recorder) = build_ok(&app.request(&repo, 2)).await;
    let lines = recorder.lines();
    assert!(
        lines.contains(&"-----> Dependencies unchanged: reused the cached virtualenv".to_string()),
        "{lines:#?}"
    );
    assert!(!recorder.has("Collecting"), "{lines:#?}");
    assert!(!recorder.has("Installing dependencies"), "{lines:#?}");
    {
        let running = Running::start(&built2.image, Some("python app.py"));
        assert_eq!(running.get(), "Hello from Python with six 1.16.0\n");
    }

    // no-cache: the cache volume is emptied first, so everything installs again.
    let mut request = app.request(&repo, 3);
    request.no_cache = true;
    let (_, recorder) = build_ok(&request).await;
    let lines = recorder.lines();
    assert!(
        recorder.has("Emptying the build cache (no-cache)"),
        "{lines:#?}"
    );
    assert!(recorder.has("Collecting six==1.16.0"), "{lines:#?}");
    assert!(!recorder.has("reused"), "{lines:#?}");
    assert!(app.leftover_containers().is_empty());
}

#[tokio::test]
async fn a_nodejs_app_installs_from_npm_and_reuses_the_cache() {
    let app = TestApp::new();
    let repo = Repo::fixture("bp-nodejs", &[]);

    let (built, recorder) = build_ok(&app.request(&repo, 1)).await;
    let lines = recorder.lines();
    assert!(
        lines.contains(&"-----> Node.js app detected".to_string()),
        "{lines:#?}"
    );
    assert!(
        recorder.has("Installing dependencies with npm ci (package-lock.json)"),
        "{lines:#?}"
    );
    assert!(recorder.has("added 1 package"), "{lines:#?}");
    let procfile = built.procfile.clone().unwrap();
    assert_eq!(procfile, "web: node server.js\n");
    assert!(
        inspect(&built.image, "{{range .Config.Env}}{{println .}}{{end}}")
            .lines()
            .any(|l| l == "NODE_ENV=production")
    );
    {
        // No command: the image's CMD is the web process.
        let running = Running::start(&built.image, None);
        assert_eq!(
            running.get(),
            "Hello from Node.js: is-number(5000) is true\n"
        );
    }

    let (built2, recorder) = build_ok(&app.request(&repo, 2)).await;
    let lines = recorder.lines();
    assert!(
        lines
            .contains(&"-----> Dependencies unchanged: reused the cached node_modules".to_string()),
        "{lines:#?}"
    );
    assert!(!recorder.has("added "), "{lines:#?}");
    assert!(!recorder.has("npm ci"), "{lines:#?}");
    let running = Running::start(&built2.image, Some(&process(&procfile, "web")));
    assert_eq!(
        running.get(),
        "Hello from Node.js: is-number(5000) is true\n"
    );
}

#[tokio::test]
async fn a_go_app_builds_a_static_binary_from_vendored_modules_offline() {
    let app = TestApp::new();
    let repo = Repo::fixture("bp-go", &[]);
    // An unreachable proxy proves the vendored build needs no network.
    let mut request = app.request(&repo, 1);
    request
        .config
        .insert("GOPROXY".into(), "http://127.0.0.1:9/".into());
    let (built, recorder) = build_ok(&request).await;
    let lines = recorder.lines();
    assert!(
        lines.contains(&"-----> Go app detected".to_string()),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"-----> Building with vendored modules (offline)".to_string()),
        "{lines:#?}"
    );
    assert!(recorder.has("Built bin/hello"), "{lines:#?}");
    assert_eq!(built.procfile.as_deref(), Some("web: bin/hello\n"));

    let running = Running::start(&built.image, Some("bin/hello"));
    assert_eq!(running.get(), "Hello from Go (vendored greet)\n");
    // Static: it runs in an image with no Go and no C library loader needed.
    let ldd = docker_cli(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        &built.image,
        "-c",
        "command -v go || echo no-go; head -c 4 /app/bin/hello | od -c | head -1; grep -c ld-linux /app/bin/hello || true",
    ]);
    assert!(ldd.stdout.starts_with("no-go\n"), "{}", ldd.stdout);
    assert!(
        ldd.stdout.trim_end().ends_with("\n0"),
        "dynamically linked: {}",
        ldd.stdout
    );
}

#[tokio::test]
async fn a_procfile_app_runs_with_only_the_run_stack() {
    let app = TestApp::new();
    let repo = Repo::fixture("bp-procfile", &[]);
    let (built, recorder) = build_ok(&app.request(&repo, 1)).await;
    let lines = recorder.lines();
    assert!(
        recorder.has("Detected buildpack procfile (Procfile)"),
        "{lines:#?}"
    );
    assert!(recorder.has("Process type: clock"), "{lines:#?}");
    assert!(
        recorder.has("Procfile declares types -> web, clock"),
        "{lines:#?}"
    );
    let fixture = std::fs::read_to_string(fixtures().join("bp-procfile/Procfile")).unwrap();
    assert_eq!(built.procfile.as_deref(), Some(fixture.as_str()));
    let running = Running::start(&built.image, Some(&process(&fixture, "web")));
    assert_eq!(running.get(), "Hello from a Procfile app\n");
}

#[tokio::test]
async fn a_buildpacks_file_runs_several_buildpacks_in_order() {
    let app = TestApp::new();
    let repo = Repo::fixture("bp-multi", &[]);
    let (built, recorder) = build_ok(&app.request(&repo, 1)).await;
    let lines = recorder.lines();
    assert!(
        recorder.has("Buildpacks from .buildpacks: nodejs, static"),
        "{lines:#?}"
    );
    let node = recorder
        .position("-----> Node.js app detected")
        .expect("nodejs ran");
    let build = recorder
        .position("-----> Running npm run build")
        .expect("npm run build ran");
    let site = recorder
        .position("-----> Static site detected")
        .expect("static ran");
    assert!(node < build && build < site, "{lines:#?}");
    assert!(
        recorder.has("Serving public/ with busybox httpd"),
        "{lines:#?}"
    );
    let procfile = built.procfile.unwrap();
    assert_eq!(
        procfile,
        "web: exec busybox httpd -f -v -p ${PORT:-5000} -h /app/public\n"
    );
    let running = Running::start(&built.image, Some(&process(&procfile, "web")));
    let body = running.get();
    assert!(
        body.starts_with("<h1>Hello from a multi-buildpack app, rendered by node v"),
        "{body}"
    );
}

#[tokio::test]
async fn a_third_party_buildpack_from_a_local_git_repository_runs_at_its_ref() {
    let app = TestApp::new();
    let buildpack = BuildpackRepo::new(
        "echo Greeter\n",
        r#"set -e
echo "-----> Greeter buildpack from git"
mkdir -p "$1/.profile.d"
echo 'export GREETING="hello from .profile.d"' > "$1/.profile.d/greeting.sh"
echo "compiled with $(cat "$1/message.txt")" > "$1/compiled.txt"
"#,
        r#"cat <<'YAML'
---
config_vars:
  BP_COLOR: blue
  BP_PATH: /app/bin:$PATH
default_process_types:
  web: mkdir -p /tmp/www && echo "$GREETING; $(cat compiled.txt); $BP_COLOR" > /tmp/www/index.html && exec busybox httpd -f -p $PORT -h /tmp/www
  worker: sleep infinity
YAML
"#,
    );
    git(&buildpack.path, &["tag", "v1"]);
    // A later commit on the default branch breaks the buildpack: the ref must win.
    BuildpackRepo::commit_bins(&buildpack.path, "echo Greeter\n", "exit 42\n", "");

    let repo = Repo::files(&[
        (".buildpacks", &format!("{}#v1\n", buildpack.url()), false),
        ("message.txt", "the app's message", false),
        ("Procfile", "worker: echo the Procfile wins\n", false),
    ]);
    let (built, recorder) = build_ok(&app.request(&repo, 1)).await;
    let lines = recorder.lines();
    assert!(
        recorder.has(&format!("Fetching buildpack {}#v1", buildpack.url())),
        "{lines:#?}"
    );
    assert!(
        recorder.has("-----> Greeter buildpack from git"),
        "{lines:#?}"
    );
    // The Procfile wins for worker; web comes from bin/release.
    let procfile = built.procfile.unwrap();
    assert!(
        procfile.starts_with("worker: echo the Procfile wins\nweb: mkdir -p"),
        "{procfile}"
    );
    let env = inspect(&built.image, "{{range .Config.Env}}{{println .}}{{end}}");
    assert!(env.lines().any(|l| l == "BP_COLOR=blue"), "{env}");
    assert!(
        env.lines()
            .any(|l| l.starts_with("BP_PATH=/app/bin:/usr/local/sbin:")),
        "{env}"
    );
    let running = Running::start(&built.image, Some(&process(&procfile, "web")));
    assert_eq!(
        running.get(),
        "hello from .profile.d; compiled with the app's message; blue\n"
    );
}

#[tokio::test]
async fn config_vars_reach_compile_in_env_dir_without_being_echoed() {
    let app = TestApp::new();
    let buildpack = BuildpackRepo::new(
        "exit 1\n",
        r#"if [ -f "$3/MY_VAR" ]; then echo "       MY_VAR is set"; else echo "       MY_VAR is not set"; fi
echo "       ENV_DIR=$3 CACHE_DIR=$2 BUILD_DIR=$1 user=$(id -un)"
if grep -q "EMPIRE TEST CA MARKER" "$SSL_CERT_FILE"; then echo "       app CA in $SSL_CERT_FILE"; fi
if [ "$PIP_CERT" = "$SSL_CERT_FILE" ] && [ "$NODE_EXTRA_CA_CERTS" = "$SSL_CERT_FILE" ] && [ "$REQUESTS_CA_BUNDLE" = "$SSL_CERT_FILE" ]; then echo "       CA variables set"; fi
echo "       certificates: $(grep -c 'BEGIN CERTIFICATE' "$SSL_CERT_FILE")"
"#,
        "echo '--- {}'\n",
    );
    let repo = Repo::files(&[("README", "a custom-built app\n", false)]);

    let secret = "s3cr3t-value-do-not-print";
    let mut request = app.request(&repo, 1);
    // BUILDPACK_URL chooses it, even though its bin/detect does not pass.
    request
        .config
        .insert("BUILDPACK_URL".into(), buildpack.path.display().to_string());
    request.config.insert("MY_VAR".into(), secret.into());
    request.config.insert(
        "EMPIRE_CA_BUNDLE".into(),
        "# EMPIRE TEST CA MARKER\n".into(),
    );
    let (built, recorder) = build_ok(&request).await;
    let lines = recorder.lines();
    assert!(
        lines.contains(&"       app CA in /empire/ca-certificates.crt".to_string()),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"       CA variables set".to_string()),
        "{lines:#?}"
    );
    // The gateway's CA bundle is in the build's bundle (besides the stack's own).
    let host = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap();
    let host_count = host.matches("BEGIN CERTIFICATE").count();
    let count: usize = lines
        .iter()
        .find_map(|l| l.strip_prefix("       certificates: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(count >= host_count, "{count} < {host_count}");
    assert!(recorder.has("Buildpacks from BUILDPACK_URL"), "{lines:#?}");
    assert!(recorder.has("bin/detect did not pass"), "{lines:#?}");
    assert!(
        lines.contains(&"       MY_VAR is set".to_string()),
        "{lines:#?}"
    );
    assert!(
        lines.contains(
            &"       ENV_DIR=/empire/env CACHE_DIR=/cache BUILD_DIR=/app user=empire".to_string()
        ),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains(secret)), "{lines:#?}");
    // No process types anywhere: the image's CMD is left to run as web.
    assert_eq!(built.procfile, None);

    let mut request = app.request(&repo, 2);
    request
        .config
        .insert("BUILDPACK_URL".into(), buildpack.url());
    let (_, recorder) = build_ok(&request).await;
    assert!(
        recorder
            .lines()
            .contains(&"       MY_VAR is not set".to_string()),
        "{:#?}",
        recorder.lines()
    );
}

#[tokio::test]
async fn an_app_no_buildpack_detects_names_every_buildpack_tried() {
    let app = TestApp::new();
    let repo = Repo::files(&[("index.php", "<?php echo 'hi';\n", false)]);
    let (result, recorder) = build(&app.request(&repo, 1)).await;
    match result {
        Err(Error::Build(message)) => assert_eq!(
            message,
            "no buildpack detected this app (tried go, nodejs, python, static, procfile): add a Dockerfile, a .buildpacks file or set BUILDPACK_URL"
        ),
        other => panic!(
            "expected a build error, got {other:?}\n{:#?}",
            recorder.lines()
        ),
    }
    assert!(app.leftover_containers().is_empty());
    assert!(!docker_cli(&["image", "inspect", &app.tag(1)]).ok);
}

#[tokio::test]
async fn a_failing_compile_rejects_the_build_with_its_output() {
    let app = TestApp::new();
    let buildpack = BuildpackRepo::new(
        "echo Doomed\n",
        "echo '-----> Doomed buildpack'\necho 'something broke' >&2\nexit 3\n",
        "",
    );
    let repo = Repo::files(&[(".buildpacks", &format!("{}\n", buildpack.url()), false)]);
    let (result, recorder) = build(&app.request(&repo, 1)).await;
    let lines = recorder.lines();
    match result {
        Err(Error::Build(message)) => {
            assert!(
                message.starts_with(&format!(
                    "buildpack {}: bin/compile failed with exit code 3\n",
                    buildpack.url()
                )),
                "{message}"
            );
            // stdout and stderr reach Docker's log separately: their order may vary.
            assert!(message.contains("something broke"), "{message}");
        }
        other => panic!("expected a build error, got {other:?}\n{lines:#?}"),
    }
    assert!(
        lines.contains(&"-----> Doomed buildpack".to_string()),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"       something broke".to_string()),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&format!(
            " !     Failed to compile with buildpack {} (exit code 3)",
            buildpack.url()
        )),
        "{lines:#?}"
    );
    assert!(app.leftover_containers().is_empty());
    assert!(!docker_cli(&["image", "inspect", &app.tag(1)]).ok);
}

#[tokio::test]
async fn an_unknown_buildpack_name_lists_the_shipped_ones() {
    let app = TestApp::new();
    let repo = Repo::files(&[(".buildpacks", "ruby\n", false)]);
    let (result, _) = build(&app.request(&repo, 1)).await;
    match result {
        Err(Error::Build(message)) => assert_eq!(
            message,
            "unknown buildpack \"ruby\": the shipped buildpacks are go, nodejs, procfile, python, static"
        ),
        other => panic!("expected a build error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_stack_image_names_the_script_that_builds_it() {
    let app = TestApp::new();
    let repo = Repo::fixture("bp-static", &[]);
    let missing = format!("empire/stack-build:missing-{}", app.name);
    let builder = DockerBuilder::connect()
        .await
        .unwrap()
        .with_buildpack_config(BuildpackConfig {
            build_image: missing.clone(),
            ..BuildpackConfig::default()
        });
    let (result, _) = build_with(&builder, &app.request(&repo, 1)).await;
    let err = result.expect_err("the build fails");
    assert!(!matches!(err, Error::Build(_)), "{err:?}");
    assert!(
        err.to_string().contains(&format!(
            "the stack image {missing} is missing: build it with scripts/stack-images.sh"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn prune_images_keeps_the_listed_releases_and_remove_cache_drops_the_volume() {
    let app = TestApp::new();
    let repo = Repo::fixture("bp-static", &[]);
    for version in 1..=3 {
        build_ok(&app.request(&repo, version)).await;
    }
    let builder = DockerBuilder::connect().await.unwrap();
    let removed = builder.prune_images(&app.name, &[2, 3]).await.unwrap();
    assert_eq!(removed, vec![app.tag(1)]);
    assert!(!docker_cli(&["image", "inspect", &app.tag(1)]).ok);
    assert!(docker_cli(&["image", "inspect", &app.tag(2)]).ok);
    assert!(docker_cli(&["image", "inspect", &app.tag(3)]).ok);
    assert!(
        builder
            .prune_images(&app.name, &[2, 3])
            .await
            .unwrap()
            .is_empty()
    );

    let volume = empire_builder::cache_volume_name(app.name.as_str());
    assert!(docker_cli(&["volume", "inspect", &volume]).ok);
    builder.remove_cache(&app.name).await.unwrap();
    assert!(!docker_cli(&["volume", "inspect", &volume]).ok);
    builder.remove_cache(&app.name).await.unwrap();
}

#[tokio::test]
async fn a_build_given_up_midway_leaves_no_container_behind() {
    let app = TestApp::new();
    let buildpack = BuildpackRepo::new(
        "echo Slow\n",
        "echo '-----> Compiling slowly'\nsleep 120\n",
        "",
    );
    let repo = Repo::files(&[(".buildpacks", &format!("{}\n", buildpack.url()), false)]);
    let request = app.request(&repo, 1);
    let builder = DockerBuilder::connect().await.unwrap();
    let recorder = Arc::new(Recorder::default());
    let progress = Progress::new(recorder.clone());
    {
        let build = builder.build(&request, &progress);
        tokio::pin!(build);
        let deadline = Instant::now() + Duration::from_secs(60);
        // Poll the build until its compile is running, then drop it (a pusher gone).
        while !recorder.has("-----> Compiling slowly") {
            assert!(Instant::now() < deadline, "{:#?}", recorder.lines());
            tokio::select! {
                result = &mut build => panic!("the build ended: {result:?}"),
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        assert_eq!(app.leftover_containers().len(), 1);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !app.leftover_containers().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the build container is still there"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Builds `repo` with `config` and expects its compile to fail; returns the output.
async fn failing_compile(
    app: &TestApp,
    repo: &Repo,
    version: u32,
    config: &[(&str, &str)],
) -> String {
    let mut request = app.request(repo, version);
    for (name, value) in config {
        request.config.insert(name.to_string(), value.to_string());
    }
    let (result, recorder) = build(&request).await;
    let output = recorder.lines().join("\n");
    match result {
        Err(Error::Build(message)) => assert!(
            message.contains("bin/compile failed with exit code"),
            "{message}"
        ),
        other => panic!("expected a failed compile, got {other:?}\n{output}"),
    }
    output
}

#[tokio::test]
async fn dependency_installs_honour_the_apps_index_registry_and_proxy() {
    // Each setting points at a closed port on the build container's loopback: the install
    // fails there, proving it went where the config var said.
    let app = TestApp::new();
    let python = Repo::fixture("bp-python", &[]);
    let output = failing_compile(
        &app,
        &python,
        1,
        &[
            ("PIP_INDEX_URL", "http://127.0.0.1:9/simple"),
            ("PIP_RETRIES", "0"),
        ],
    )
    .await;
    assert!(
        output.contains("Looking in indexes: http://127.0.0.1:9/simple"),
        "{output}"
    );

    let output = failing_compile(
        &app,
        &python,
        2,
        // One retry: pip says why it retries.
        &[("HTTPS_PROXY", "http://127.0.0.1:9"), ("PIP_RETRIES", "1")],
    )
    .await;
    assert!(
        output.contains("ProxyError('Cannot connect to proxy.'"),
        "{output}"
    );

    let nodejs = Repo::fixture("bp-nodejs", &[]);
    let output = failing_compile(
        &app,
        &nodejs,
        3,
        &[
            ("NPM_CONFIG_REGISTRY", "http://127.0.0.1:9/"),
            ("NPM_CONFIG_FETCH_RETRIES", "0"),
        ],
    )
    .await;
    assert!(output.contains("127.0.0.1:9"), "{output}");
}
