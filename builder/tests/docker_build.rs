//! Builds real commits (made with the git CLI) on the real Docker engine.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use empire_builder::DockerBuilder;
use empire_core::Error;
use empire_core::app::AppName;
use empire_core::build::{BuildRequest, BuiltImage, ImageBuilder};
use empire_core::progress::{Progress, ProgressSink};

// ---------------------------------------------------------------------------------------
// helpers

/// Runs git with a clean configuration; `envs` and `stdin` are optional.
fn git_with(dir: &Path, args: &[&str], envs: &[(&str, &Path)], stdin: Option<&[u8]>) -> String {
    let mut cmd = Command::new("git");
    cmd.args([
        "-c",
        "user.name=Builder Test",
        "-c",
        "user.email=bt@example.com",
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
    .stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (key, value) in envs {
        cmd.env(key, value);
    }
    let mut child = cmd.spawn().expect("git runs");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn git(dir: &Path, args: &[&str]) -> String {
    git_with(dir, args, &[], None)
}

/// A bare repository holding one commit.
struct Repo {
    dir: tempfile::TempDir,
    bare: PathBuf,
    commit: String,
}

impl Repo {
    /// Commits `files` (path, content, executable) in a work repository and clones it bare.
    fn new(files: &[(&str, &[u8], bool)]) -> Repo {
        Repo::with(files, |_| {})
    }

    /// Like [`Repo::new`], with `setup` run in the work tree before the commit.
    fn with(files: &[(&str, &[u8], bool)], setup: impl FnOnce(&Path)) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        git(&work, &["init", "-q"]);
        for (path, content, executable) in files {
            let path = work.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, content).unwrap();
            if *executable {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        setup(&work);
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "test commit"]);
        let commit = git(&work, &["rev-parse", "HEAD"]);
        git(dir.path(), &["clone", "-q", "--bare", "work", "repo.git"]);
        let bare = dir.path().join("repo.git");
        Repo { dir, bare, commit }
    }

    fn short(&self) -> &str {
        &self.commit[..7]
    }
}

/// A unique app name; its images are removed when it is dropped.
struct TestApp {
    name: AppName,
    /// Untagged intermediate images to remove too (from failed builds).
    extra_images: Mutex<Vec<String>>,
}

impl TestApp {
    fn new() -> TestApp {
        let id = uuid::Uuid::new_v4().simple().to_string();
        TestApp {
            name: AppName::new(&format!("bt-{}", &id[..12])).unwrap(),
            extra_images: Mutex::new(Vec::new()),
        }
    }

    fn tag(&self, version: u32) -> String {
        format!("empire/{}:v{version}", self.name)
    }

    /// A Dockerfile whose first step is unique to this app, so no other test shares its
    /// intermediate images.
    fn dockerfile(&self, steps: &str) -> Vec<u8> {
        format!("FROM empire/busybox\nENV BT_APP={}\n{steps}", self.name).into_bytes()
    }

    fn request(&self, repo: &Repo, version: u32) -> BuildRequest {
        BuildRequest {
            app: self.name.clone(),
            version,
            repo_path: repo.bare.clone(),
            object_dirs: Vec::new(),
            commit: repo.commit.clone(),
            config: Default::default(),
            no_cache: false,
        }
    }

    /// Notes the images a build's output names (` ---> <id>`), to remove the untagged ones.
    fn note_images_of(&self, lines: &[String]) {
        let mut extra = self.extra_images.lock().unwrap();
        for line in lines {
            if let Some(id) = line.trim().strip_prefix("---> ")
                && id.len() == 12
                && id.bytes().all(|b| b.is_ascii_hexdigit())
            {
                extra.push(id.to_string());
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
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
        // Only untagged images: never the base image a build output also names.
        for id in self.extra_images.lock().unwrap().iter().rev() {
            let tags = docker_cli(&["image", "inspect", "--format", "{{len .RepoTags}}", id]);
            if tags.ok && tags.stdout.trim() == "0" {
                let _ = docker_cli(&["image", "rm", id]);
            }
        }
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

/// Runs a shell script in a throwaway container of `image` and returns its output.
fn run_in(image: &str, script: &str) -> String {
    let out = docker_cli(&["run", "--rm", image, "sh", "-c", script]);
    assert!(out.ok, "docker run {image} failed: {}", out.stderr);
    out.stdout
}

/// A progress sink that records when each line arrived.
#[derive(Default)]
struct Recorder(Mutex<Vec<(Instant, String)>>);

impl ProgressSink for Recorder {
    fn write_line(&self, line: &str) {
        self.0
            .lock()
            .unwrap()
            .push((Instant::now(), line.to_string()));
    }
}

impl Recorder {
    fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    fn arrival(&self, line: &str) -> Option<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| l == line)
            .map(|(at, _)| *at)
    }
}

/// Builds and returns the result with the recorded output.
async fn build(
    app: &TestApp,
    request: &BuildRequest,
) -> (empire_core::Result<BuiltImage>, Arc<Recorder>) {
    let builder = DockerBuilder::connect().await.expect("docker is reachable");
    let recorder = Arc::new(Recorder::default());
    let progress = Progress::new(recorder.clone());
    let result = builder.build(request, &progress).await;
    app.note_images_of(&recorder.lines());
    (result, recorder)
}

fn context_listing(image: &str) -> Vec<String> {
    run_in(image, "cd /app && find . | sort")
        .lines()
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------
// tests

#[tokio::test]
async fn a_commit_with_a_dockerfile_builds_a_tagged_labelled_image() {
    let app = TestApp::new();
    let big: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
    let repo = Repo::with(
        &[
            (
                "Dockerfile",
                &app.dockerfile("COPY . /app\nCMD [\"cat\", \"/app/hello.txt\"]\n"),
                false,
            ),
            ("Procfile", b"web: httpd -f -p $PORT\n", false),
            ("hello.txt", b"hello from the commit\n", false),
            ("bin/run", b"#!/bin/sh\necho running\n", true),
            ("big.bin", &big, false),
        ],
        |work| std::os::unix::fs::symlink("hello.txt", work.join("link")).unwrap(),
    );

    let (result, recorder) = build(&app, &app.request(&repo, 1)).await;
    let built = result.expect("the build succeeds");
    assert_eq!(built.image, app.tag(1));
    assert!(built.image_id.starts_with("sha256:"), "{}", built.image_id);
    assert_eq!(built.procfile.as_deref(), Some("web: httpd -f -p $PORT\n"));

    let docker = DockerBuilder::connect().await.unwrap();
    let inspect = docker.docker().inspect_image(&app.tag(1)).await.unwrap();
    assert_eq!(inspect.id.as_deref(), Some(built.image_id.as_str()));
    let labels = inspect.config.unwrap().labels.unwrap();
    assert_eq!(
        labels.get("empire.app").map(String::as_str),
        Some(app.name.as_str())
    );
    assert_eq!(labels.get("empire.release").map(String::as_str), Some("1"));

    let out = run_in(
        &app.tag(1),
        "cat /app/hello.txt; test -x /app/bin/run && echo executable; \
         test -x /app/hello.txt || echo plain; readlink /app/link; wc -c < /app/big.bin; \
         md5sum < /app/big.bin",
    );
    let local_md5 = {
        let mut child = Command::new("md5sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&big).unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
    };
    assert_eq!(
        out,
        format!(
            "hello from the commit\nexecutable\nplain\nhello.txt\n{}\n{}",
            big.len(),
            local_md5
        )
    );

    let lines = recorder.lines();
    assert_eq!(lines[0], "-----> Building image from Dockerfile");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("       Step 1/") && l.ends_with(" : FROM empire/busybox")),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&format!("       Successfully tagged {}", app.tag(1))),
        "{lines:#?}"
    );
    assert!(lines.iter().all(|l| !l.trim().is_empty()), "{lines:#?}");
    let last = lines.last().unwrap();
    assert!(
        last.starts_with(&format!("       Built {} in ", app.tag(1))) && last.ends_with('s'),
        "{last}"
    );
}

#[tokio::test]
async fn dockerignore_excludes_files_and_directories_and_exceptions_reinclude() {
    let app = TestApp::new();
    let ignore = b"# the build context\n\
        secret.txt\n\
        /logs\n\
        docs/*.md\n\
        !docs/keep.md\n\
        **/*.tmp\n\
        Dockerfile\n";
    let repo = Repo::new(&[
        ("Dockerfile", &app.dockerfile("COPY . /app\n"), false),
        (".dockerignore", ignore, false),
        ("secret.txt", b"do not ship\n", false),
        ("app.txt", b"ship me\n", false),
        ("logs/a.log", b"log\n", false),
        ("logs/deep/b.log", b"log\n", false),
        ("docs/a.md", b"a\n", false),
        ("docs/keep.md", b"keep\n", false),
        ("docs/guide.txt", b"guide\n", false),
        ("src/x.tmp", b"tmp\n", false),
        ("src/main.sh", b"echo main\n", false),
    ]);

    let (result, _) = build(&app, &app.request(&repo, 1)).await;
    result.expect("the build succeeds although the Dockerfile is ignored");
    let ours = context_listing(&app.tag(1));
    assert_eq!(
        ours,
        [
            ".",
            "./.dockerignore",
            "./app.txt",
            "./docs",
            "./docs/guide.txt",
            "./docs/keep.md",
            "./src",
            "./src/main.sh",
        ]
    );

    // The same files built by the Docker CLI from an export of the commit agree.
    let export = repo.dir.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let archive = Command::new("git")
        .args(["archive", "--format=tar", &repo.commit])
        .current_dir(&repo.bare)
        .output()
        .unwrap();
    assert!(archive.status.success());
    let mut untar = Command::new("tar")
        .args(["-x", "-C"])
        .arg(&export)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    untar
        .stdin
        .take()
        .unwrap()
        .write_all(&archive.stdout)
        .unwrap();
    assert!(untar.wait().unwrap().success());
    let cli_tag = format!("empire/{}:cli", app.name);
    let cli = Command::new("docker")
        .args(["build", "-q", "-t", &cli_tag])
        .arg(&export)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert_eq!(context_listing(&cli_tag), ours);
}

#[tokio::test]
async fn output_is_streamed_while_the_build_runs() {
    let app = TestApp::new();
    let repo = Repo::new(&[(
        "Dockerfile",
        &app.dockerfile("RUN echo first && sleep 2 && echo second\n"),
        false,
    )]);
    let (result, recorder) = build(&app, &app.request(&repo, 1)).await;
    let finished = Instant::now();
    result.expect("the build succeeds");
    let first = recorder
        .arrival("       first")
        .unwrap_or_else(|| panic!("no `first` line: {:#?}", recorder.lines()));
    let second = recorder.arrival("       second").expect("a `second` line");
    assert!(
        finished.duration_since(first) >= Duration::from_millis(1500),
        "`first` arrived only {:?} before the build finished",
        finished.duration_since(first)
    );
    assert!(second.duration_since(first) >= Duration::from_millis(1500));
}

#[tokio::test]
async fn a_failing_step_is_a_build_error_after_its_output() {
    let app = TestApp::new();
    let repo = Repo::new(&[(
        "Dockerfile",
        &app.dockerfile("RUN echo before-the-failure\nRUN exit 3\n"),
        false,
    )]);
    let (result, recorder) = build(&app, &app.request(&repo, 1)).await;
    let message = match result {
        Err(Error::Build(message)) => message,
        other => panic!("expected a build error, got {other:?}"),
    };
    assert!(message.contains("exit 3"), "{message}");
    assert!(message.contains("non-zero code: 3"), "{message}");

    let lines = recorder.lines();
    assert!(
        lines.contains(&"       before-the-failure".to_string()),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("       Step 4/") && l.ends_with(" : RUN exit 3")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("Built empire/")),
        "{lines:#?}"
    );

    // Nothing was tagged and no intermediate container is left.
    let docker = DockerBuilder::connect().await.unwrap();
    assert!(docker.docker().inspect_image(&app.tag(1)).await.is_err());
    let containers: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.trim().strip_prefix("---> Running in "))
        .collect();
    assert_eq!(containers.len(), 3, "{lines:#?}");
    for id in containers {
        let inspect = docker_cli(&["container", "inspect", id]);
        assert!(!inspect.ok, "container {id} was left behind");
    }
}

#[tokio::test]
async fn a_dockerfile_syntax_error_is_a_build_error() {
    let app = TestApp::new();
    let repo = Repo::new(&[("Dockerfile", &app.dockerfile("FROBNICATE now\n"), false)]);
    let (result, _) = build(&app, &app.request(&repo, 1)).await;
    match result {
        Err(Error::Build(message)) => {
            assert!(
                message.contains("unknown instruction: FROBNICATE"),
                "{message}"
            )
        }
        other => panic!("expected a build error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_procfile_that_is_not_utf8_is_rejected() {
    let app = TestApp::new();
    let repo = Repo::new(&[
        ("Dockerfile", &app.dockerfile(""), false),
        ("Procfile", b"web: \xff\xfe\n", false),
    ]);
    let (result, _) = build(&app, &app.request(&repo, 1)).await;
    match result {
        Err(Error::Build(message)) => assert_eq!(
            message,
            format!("the Procfile in {} is not valid UTF-8 text", repo.short())
        ),
        other => panic!("expected a build error, got {other:?}"),
    }
}

#[tokio::test]
async fn objects_only_in_a_quarantine_directory_are_found() {
    let app = TestApp::new();
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("repo.git");
    git(dir.path(), &["init", "-q", "--bare", "repo.git"]);
    let quarantine = bare.join("objects").join("incoming-test");
    std::fs::create_dir(&quarantine).unwrap();
    let main_objects = bare.join("objects");
    let env: [(&str, &Path); 2] = [
        ("GIT_OBJECT_DIRECTORY", &quarantine),
        ("GIT_ALTERNATE_OBJECT_DIRECTORIES", &main_objects),
    ];
    let hash = |content: &[u8]| {
        git_with(
            &bare,
            &["hash-object", "-w", "--stdin"],
            &env,
            Some(content),
        )
    };
    let dockerfile = hash(&app.dockerfile("COPY . /app\n"));
    let file = hash(b"pushed but not yet accepted\n");
    let tree = git_with(
        &bare,
        &["mktree"],
        &env,
        Some(
            format!("100644 blob {dockerfile}\tDockerfile\n100644 blob {file}\tq.txt\n").as_bytes(),
        ),
    );
    let commit = git_with(
        &bare,
        &["commit-tree", &tree, "-m", "quarantined"],
        &env,
        None,
    );

    // The repository itself does not have the commit.
    let probe = Command::new("git")
        .args(["cat-file", "-e", &commit])
        .current_dir(&bare)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .status()
        .unwrap();
    assert!(
        !probe.success(),
        "the commit must only be in the quarantine"
    );

    let mut request = BuildRequest {
        app: app.name.clone(),
        version: 1,
        repo_path: bare.clone(),
        object_dirs: Vec::new(),
        commit: commit.clone(),
        config: Default::default(),
        no_cache: false,
    };
    let (result, _) = build(&app, &request).await;
    match result {
        Err(Error::Build(message)) => assert!(
            message.starts_with(&format!(
                "reading commit {} from {}: ",
                &commit[..7],
                bare.display()
            )),
            "{message}"
        ),
        other => panic!("expected a build error without the quarantine, got {other:?}"),
    }

    request.object_dirs = vec![quarantine];
    let (result, _) = build(&app, &request).await;
    result.expect("the build finds the quarantined objects");
    assert_eq!(
        run_in(&app.tag(1), "cat /app/q.txt"),
        "pushed but not yet accepted\n"
    );
}

#[tokio::test]
async fn no_cache_rebuilds_every_step() {
    let app = TestApp::new();
    let repo = Repo::new(&[
        (
            "Dockerfile",
            &app.dockerfile("COPY . /app\nRUN echo built > /built\n"),
            false,
        ),
        ("a.txt", b"a\n", false),
    ]);
    let uses_cache = |lines: &[String]| lines.iter().any(|l| l.contains("Using cache"));

    let (result, first) = build(&app, &app.request(&repo, 1)).await;
    let first_id = result.unwrap().image_id;
    assert!(!uses_cache(&first.lines()), "{:#?}", first.lines());

    let (result, cached) = build(&app, &app.request(&repo, 2)).await;
    result.unwrap();
    assert!(uses_cache(&cached.lines()), "{:#?}", cached.lines());

    let mut request = app.request(&repo, 3);
    request.no_cache = true;
    let (result, fresh) = build(&app, &request).await;
    assert_ne!(result.unwrap().image_id, first_id);
    assert!(!uses_cache(&fresh.lines()), "{:#?}", fresh.lines());
    assert!(
        fresh
            .lines()
            .iter()
            .any(|l| l.ends_with(" : RUN echo built > /built")),
        "{:#?}",
        fresh.lines()
    );
}

#[tokio::test]
async fn an_unreachable_daemon_is_a_docker_backend_error() {
    let app = TestApp::new();
    let repo = Repo::new(&[("Dockerfile", &app.dockerfile(""), false)]);
    let docker =
        bollard::Docker::connect_with_http("tcp://127.0.0.1:9", 5, bollard::API_DEFAULT_VERSION)
            .unwrap();
    let builder = DockerBuilder::from_docker(docker);
    let err = builder
        .build(&app.request(&repo, 1), &Progress::null())
        .await
        .unwrap_err();
    match err {
        Error::Backend { system, message } => {
            assert_eq!(system, "docker");
            assert!(message.contains(&app.tag(1)), "{message}");
        }
        other => panic!("expected a docker backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn connect_negotiates_with_the_local_engine() {
    let builder = DockerBuilder::connect().await.expect("docker is reachable");
    let version = builder.docker().version().await.unwrap();
    assert!(version.api_version.is_some());
    let images: BTreeSet<String> = builder
        .docker()
        .inspect_image("empire/busybox:latest")
        .await
        .expect("the base image exists")
        .repo_tags
        .unwrap_or_default()
        .into_iter()
        .collect();
    assert!(images.contains("empire/busybox:latest"));
}

#[tokio::test]
async fn an_unreadable_object_aborts_the_context_and_names_the_file() {
    let app = TestApp::new();
    let filler: Vec<u8> = (0..200 * 1024).map(|i| (i % 253) as u8).collect();
    let repo = Repo::new(&[
        ("Dockerfile", &app.dockerfile("COPY . /app\n"), false),
        ("a-filler.bin", &filler, false),
        ("zz-gone.txt", b"this object will vanish\n", false),
    ]);
    let blob = git(
        &repo.bare,
        &["rev-parse", &format!("{}:zz-gone.txt", repo.commit)],
    );
    // A local clone links the work repository's loose objects.
    let loose = repo.bare.join("objects").join(&blob[..2]).join(&blob[2..]);
    std::fs::remove_file(&loose).expect("the blob is a loose object");

    let (result, _) = build(&app, &app.request(&repo, 1)).await;
    match result {
        Err(Error::Backend { system, message }) => {
            assert_eq!(system, "git");
            assert!(
                message.starts_with(&format!("reading zz-gone.txt in commit {}: ", repo.short())),
                "{message}"
            );
        }
        other => panic!("expected a git backend error, got {other:?}"),
    }
    // The engine did not build from the partial context.
    let docker = DockerBuilder::connect().await.unwrap();
    assert!(docker.docker().inspect_image(&app.tag(1)).await.is_err());
}
