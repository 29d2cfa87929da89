//! Pushing built images to a real registry (Debian's docker-registry) with the real
//! Docker engine, anonymously, with basic auth and with tokens from ECR (moto).
//!
//! Needs, as scripts/test.sh sets them up:
//!
//! ```sh
//! export EMPIRE_TEST_REGISTRY=$(scripts/registry.sh 5000)
//! export EMPIRE_TEST_REGISTRY_BASIC=$(scripts/registry.sh 5001 --htpasswd empire:secret)
//! export EMPIRE_TEST_AWS_ENDPOINT=$(scripts/moto.sh 5555)
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use aws_sdk_ecr::config::{BehaviorVersion, Credentials, Region};
use base64::Engine;
use bytes::Bytes;
use empire_builder::{DockerBuilder, EcrSettings, Registry, RegistryAuth, RegistryConfig};
use empire_core::app::AppName;
use empire_core::build::{BuildRequest, BuiltImage, ImageBuilder};
use empire_core::progress::{Progress, ProgressSink};
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// moto's default account: the ECR registry name tests push to.
const ACCOUNT: &str = "123456789012";
const BASIC_USER: &str = "empire";
const BASIC_PASSWORD: &str = "secret";

// ---------------------------------------------------------------------------------------
// set-up

/// A setting the test set-up provides; failing (not skipping) when it is missing.
fn required_env(var: &str, script: &str) -> String {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => value.trim().to_string(),
        _ => panic!(
            "{var} is not set: start the service and export it first, \
             `export {var}=$({script})` (scripts/test.sh does)"
        ),
    }
}

fn anonymous_registry() -> String {
    required_env("EMPIRE_TEST_REGISTRY", "scripts/registry.sh 5000")
}

fn basic_registry() -> String {
    required_env(
        "EMPIRE_TEST_REGISTRY_BASIC",
        "scripts/registry.sh 5001 --htpasswd empire:secret",
    )
}

fn aws_endpoint() -> String {
    required_env("EMPIRE_TEST_AWS_ENDPOINT", "scripts/moto.sh 5555")
}

fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Registry Test",
            "-c",
            "user.email=rt@example.com",
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

/// A bare repository with one commit of a Dockerfile.
struct Repo {
    _dir: tempfile::TempDir,
    bare: PathBuf,
    commit: String,
}

impl Repo {
    fn new(dockerfile: &str) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        git(&work, &["init", "-q"]);
        std::fs::write(work.join("Dockerfile"), dockerfile).unwrap();
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

fn docker_cli(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A unique app; its local images (release and registry tags) and containers are
/// removed when it is dropped.
struct TestApp {
    name: AppName,
    /// Local repositories whose tags to remove (`<endpoint>/<prefix>/<app>`).
    repositories: Mutex<Vec<String>>,
    containers: Mutex<Vec<String>>,
}

impl TestApp {
    fn new() -> TestApp {
        let name = AppName::new(&unique("rt")).unwrap();
        TestApp {
            repositories: Mutex::new(vec![format!("empire/{name}")]),
            name,
            containers: Mutex::new(Vec::new()),
        }
    }

    fn track(&self, repository: String) {
        self.repositories.lock().unwrap().push(repository);
    }

    /// A Dockerfile with a unique first step and a layer of `kib` KiB of random bytes,
    /// which the engine pushes in many chunks.
    fn dockerfile(&self, kib: u32) -> String {
        format!(
            "FROM empire/busybox\nENV RT_APP={}\n\
             RUN dd if=/dev/urandom of=/blob bs=1024 count={kib} 2>/dev/null\n\
             CMD [\"sleep\", \"3600\"]\n",
            self.name
        )
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
}

impl Drop for TestApp {
    fn drop(&mut self) {
        for id in self.containers.lock().unwrap().iter() {
            let _ = docker_cli(&["rm", "-f", id]);
        }
        for repository in self.repositories.lock().unwrap().iter() {
            let (_, listed) = docker_cli(&[
                "image",
                "ls",
                "--digests",
                "--format",
                "{{.Repository}}:{{.Tag}}@{{.Digest}}",
                repository,
            ]);
            for line in listed.lines().filter(|l| !l.is_empty()) {
                let (tagged, digest) = line.split_once('@').unwrap_or((line, ""));
                if !tagged.ends_with(":<none>") {
                    let _ = docker_cli(&["image", "rm", tagged]);
                }
                if digest.starts_with("sha256:") {
                    let _ = docker_cli(&["image", "rm", &format!("{repository}@{digest}")]);
                }
            }
        }
    }
}

/// Records progress lines.
#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl ProgressSink for Lines {
    fn write_line(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_string());
    }
}

impl Lines {
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// The lines of the push step: from its `-----> Pushing image` header to the end.
    fn push_step(&self) -> Vec<String> {
        let all = self.all();
        let start = all
            .iter()
            .position(|l| l.starts_with("-----> Pushing image to "))
            .unwrap_or_else(|| panic!("no push step in:\n{}", all.join("\n")));
        all[start..].to_vec()
    }
}

async fn build(
    builder: &DockerBuilder,
    request: &BuildRequest,
) -> (empire_core::Result<BuiltImage>, Arc<Lines>) {
    let lines = Arc::new(Lines::default());
    let result = builder.build(request, &Progress::new(lines.clone())).await;
    (result, lines)
}

async fn builder_with(config: RegistryConfig) -> DockerBuilder {
    let registry = Registry::new(config).await.expect("a valid registry");
    DockerBuilder::connect()
        .await
        .expect("docker is reachable")
        .with_registry(registry)
}

/// Asserts `image` is `<name>@sha256:<64 hex>` and returns the digest.
fn digest_of(image: &str, name: &str) -> String {
    let digest = image
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('@'))
        .unwrap_or_else(|| panic!("{image} is not a digest reference of {name}"));
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("{digest} is not a sha256 digest"));
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{digest} is not a sha256 digest"
    );
    digest.to_string()
}

// ---------------------------------------------------------------------------------------
// HTTP: the registry API, and proxies that watch (and gate) what the builder sends

/// One request to `addr`: the status, headers and body.
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<String>,
) -> (u16, hyper::HeaderMap, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("Host", addr);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

/// `GET /v2/<name>/tags/list` (with basic auth when given).
async fn registry_tags(addr: &str, name: &str, login: Option<(&str, &str)>) -> Vec<String> {
    let mut headers = Vec::new();
    if let Some((user, password)) = login {
        headers.push(("Authorization", basic(user, password)));
    }
    let (status, _, body) = http(
        addr,
        "GET",
        &format!("/v2/{name}/tags/list"),
        &headers,
        None,
    )
    .await;
    assert_eq!(
        status,
        200,
        "tags of {name}: {}",
        String::from_utf8_lossy(&body)
    );
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut tags: Vec<String> = json["tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    tags
}

/// The digest the registry gives for `<name>:<tag>` (`GET /v2/<name>/manifests/<tag>`).
async fn registry_manifest_digest(
    addr: &str,
    name: &str,
    tag: &str,
    login: Option<(&str, &str)>,
) -> String {
    let mut headers = vec![(
        "Accept",
        "application/vnd.docker.distribution.manifest.v2+json".to_string(),
    )];
    if let Some((user, password)) = login {
        headers.push(("Authorization", basic(user, password)));
    }
    let (status, response_headers, body) = http(
        addr,
        "GET",
        &format!("/v2/{name}/manifests/{tag}"),
        &headers,
        None,
    )
    .await;
    assert_eq!(
        status,
        200,
        "manifest {name}:{tag}: {}",
        String::from_utf8_lossy(&body)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(manifest["schemaVersion"], 2, "{manifest}");
    response_headers
        .get("Docker-Content-Digest")
        .expect("a Docker-Content-Digest header")
        .to_str()
        .unwrap()
        .to_string()
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// What a proxy saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    /// `X-Amz-Target` (the AWS JSON API's operation).
    target: Option<String>,
    authorization: Option<String>,
    /// Whether the proxy answered 401 itself.
    refused: bool,
}

/// A small HTTP proxy in front of `upstream` that records each request. With
/// `required_auth`, requests without that exact `Authorization` header get a 401 basic
/// challenge instead (a registry that wants those credentials).
struct Proxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: &str, required_auth: Option<String>) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let upstream = upstream.to_string();
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let seen = seen.clone();
                    let upstream = upstream.clone();
                    let required = required_auth.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            forward(request, upstream.clone(), required.clone(), seen.clone())
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        Proxy { addr, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests named this AWS operation.
    fn calls(&self, operation: &str) -> usize {
        let target = format!("AmazonEC2ContainerRegistry_V20150921.{operation}");
        self.seen()
            .iter()
            .filter(|s| s.target.as_deref() == Some(target.as_str()))
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type ProxyBody = Either<Incoming, Empty<Bytes>>;

async fn forward(
    request: hyper::Request<Incoming>,
    upstream: String,
    required_auth: Option<String>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<hyper::Response<ProxyBody>, std::io::Error> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let authorization = header("authorization");
    let refused = required_auth
        .as_ref()
        .is_some_and(|required| authorization.as_ref() != Some(required));
    seen.lock().unwrap().push(Seen {
        method: request.method().to_string(),
        path: request.uri().path().to_string(),
        target: header("x-amz-target"),
        authorization,
        refused,
    });
    if refused {
        return Ok(hyper::Response::builder()
            .status(401)
            .header("WWW-Authenticate", "Basic realm=\"empire-test\"")
            .header("Docker-Distribution-API-Version", "registry/2.0")
            .body(Either::Right(Empty::new()))
            .unwrap());
    }
    let stream = tokio::net::TcpStream::connect(&upstream).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(std::io::Error::other)?;
    Ok(response.map(Either::Left))
}

/// An ECR client straight to moto (not through a proxy), for looking at what the builder
/// did.
fn moto_client(endpoint: &str) -> aws_sdk_ecr::Client {
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_ecr::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(http)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_ecr::Client::from_conf(config)
}

fn ecr_settings(endpoint: String) -> EcrSettings {
    EcrSettings {
        endpoint_url: Some(endpoint),
        region: Some("us-east-1".into()),
        credentials: Some(("test".into(), "test".into())),
    }
}

// ---------------------------------------------------------------------------------------
// tests

#[tokio::test]
async fn pushes_to_an_anonymous_registry_and_returns_the_digest() {
    let registry = anonymous_registry();
    let app = TestApp::new();
    let prefix = unique("rtp");
    let builder = builder_with(RegistryConfig {
        address: format!("{registry}/{prefix}"),
        endpoint: None,
        auth: RegistryAuth::None,
    })
    .await;
    let name = format!("{registry}/{prefix}/{}", app.name);
    app.track(name.clone());

    // 6 MiB of random bytes: a layer the engine pushes in many chunks.
    let repo = Repo::new(&app.dockerfile(6 * 1024));
    let (result, lines) = build(&builder, &app.request(&repo, 1)).await;
    let built = result.unwrap_or_else(|e| panic!("build failed: {e}\n{}", lines.all().join("\n")));
    let digest = digest_of(&built.image, &name);

    // The registry has the image under the release's tag, with that digest.
    let repository = format!("{prefix}/{}", app.name);
    assert_eq!(registry_tags(&registry, &repository, None).await, ["v1"]);
    assert_eq!(
        registry_manifest_digest(&registry, &repository, "v1", None).await,
        digest
    );

    // Progress: a few lines per layer, not one per chunk.
    let step = lines.push_step();
    let text = step.join("\n");
    assert_eq!(step[0], format!("-----> Pushing image to {registry}"));
    let mut per_layer: HashMap<String, usize> = HashMap::new();
    for line in &step {
        let Some(rest) = line.strip_prefix("       ") else {
            continue;
        };
        if let Some((id, _)) = rest.split_once(": ")
            && id.len() == 12
            && id.bytes().all(|b| b.is_ascii_hexdigit())
        {
            *per_layer.entry(id.to_string()).or_default() += 1;
        }
    }
    assert!(per_layer.len() >= 2, "expected a line per layer:\n{text}");
    for (layer, count) in &per_layer {
        assert!(*count <= 4, "layer {layer} got {count} lines:\n{text}");
    }
    assert!(
        step.len() < 4 * per_layer.len() + 4,
        "too many push lines for {} layers:\n{text}",
        per_layer.len()
    );
    assert!(
        step.iter()
            .any(|l| l.contains(": Pushed (6.") && l.contains(" MB)")),
        "expected the 6 MiB layer's `Pushed (6.x MB)` line:\n{text}"
    );
    let layers = per_layer.len();
    assert!(
        step.iter()
            .any(|l| l.trim().starts_with(&format!("{layers} layers: "))
                && l.ends_with(" already in the registry")),
        "expected a summary line:\n{text}"
    );
    assert!(
        step.last()
            .unwrap()
            .starts_with(&format!("       Pushed {}", built.image)),
        "the step ends with the digest reference:\n{text}"
    );

    // The engine runs the digest reference without pulling: a container from it starts
    // and `docker ps` shows that reference.
    let container = unique("rt-run");
    let (ok, out) = docker_cli(&["create", "--name", &container, &built.image]);
    assert!(ok, "docker create {}: {out}", built.image);
    app.containers.lock().unwrap().push(container.clone());
    let (ok, out) = docker_cli(&["start", &container]);
    assert!(ok, "docker start: {out}");
    let (_, shown) = docker_cli(&[
        "ps",
        "--no-trunc",
        "--filter",
        &format!("name={container}"),
        "--format",
        "{{.Image}}",
    ]);
    assert_eq!(shown.trim(), built.image);

    // A second release with other content; pruning keeps only it, locally.
    let repo2 = Repo::new(&app.dockerfile(64));
    let (result, lines) = build(&builder, &app.request(&repo2, 2)).await;
    let second = result.unwrap_or_else(|e| panic!("build failed: {e}\n{}", lines.all().join("\n")));
    let digest2 = digest_of(&second.image, &name);
    assert_ne!(digest, digest2);
    assert_eq!(
        registry_tags(&registry, &repository, None).await,
        ["v1", "v2"]
    );
    // The shared base layer is already there the second time.
    assert!(
        lines
            .push_step()
            .iter()
            .any(|l| l.ends_with(": Layer already exists")),
        "expected `Layer already exists`:\n{}",
        lines.push_step().join("\n")
    );
    let _ = docker_cli(&["rm", "-f", &container]);
    builder.prune(&app.name, &[2]).await.expect("pruning");
    let (_, refs) = docker_cli(&[
        "image",
        "ls",
        "--digests",
        "--format",
        "{{.Repository}}:{{.Tag}}@{{.Digest}}",
        &name,
    ]);
    assert!(!refs.contains(":v1@"), "v1 should be pruned: {refs}");
    assert!(
        !refs.contains(&digest),
        "v1's digest should be gone: {refs}"
    );
    assert!(
        refs.contains(&format!("{name}:v2@{digest2}")),
        "v2 stays: {refs}"
    );
}

#[tokio::test]
async fn basic_auth_pushes_with_the_right_password_and_says_why_with_a_wrong_one() {
    let registry = basic_registry();
    let app = TestApp::new();
    let prefix = unique("rtb");
    let name = format!("{registry}/{prefix}/{}", app.name);
    app.track(name.clone());
    let repo = Repo::new(&app.dockerfile(16));

    let good = builder_with(RegistryConfig {
        address: format!("{registry}/{prefix}"),
        endpoint: None,
        auth: RegistryAuth::Basic {
            username: BASIC_USER.into(),
            password: BASIC_PASSWORD.into(),
        },
    })
    .await;
    let (result, lines) = build(&good, &app.request(&repo, 1)).await;
    let built = result.unwrap_or_else(|e| panic!("build failed: {e}\n{}", lines.all().join("\n")));
    let digest = digest_of(&built.image, &name);
    let repository = format!("{prefix}/{}", app.name);
    let login = Some((BASIC_USER, BASIC_PASSWORD));
    assert_eq!(registry_tags(&registry, &repository, login).await, ["v1"]);
    assert_eq!(
        registry_manifest_digest(&registry, &repository, "v1", login).await,
        digest
    );

    let wrong = builder_with(RegistryConfig {
        address: format!("{registry}/{prefix}"),
        endpoint: None,
        auth: RegistryAuth::Basic {
            username: BASIC_USER.into(),
            password: "not-the-password".into(),
        },
    })
    .await;
    let (result, lines) = build(&wrong, &app.request(&repo, 2)).await;
    let err = result
        .expect_err("a wrong password fails the push")
        .to_string();
    assert_eq!(
        err,
        format!(
            "registry error: pushing to {registry} failed: unauthorized: check \
             --registry-username/--registry-password"
        ),
        "{}",
        lines.all().join("\n")
    );
    // Nothing of v2 reached the registry, and no local tag of it is left.
    assert_eq!(registry_tags(&registry, &repository, login).await, ["v1"]);
    let (ok, _) = docker_cli(&["image", "inspect", &format!("{name}:v2")]);
    assert!(!ok, "the tag of the failed push should be removed");

    // Without credentials, the error says the registry wants some.
    let none = builder_with(RegistryConfig {
        address: format!("{registry}/{prefix}"),
        endpoint: None,
        auth: RegistryAuth::None,
    })
    .await;
    let (result, _) = build(&none, &app.request(&repo, 3)).await;
    let err = result
        .expect_err("no credentials fail the push")
        .to_string();
    assert!(
        err.starts_with(&format!(
            "registry error: pushing to {registry} failed: unauthorized: "
        )),
        "{err}"
    );
    assert!(err.contains("--registry-auth basic"), "{err}");
}

#[tokio::test]
async fn an_unreachable_registry_fails_the_push_in_one_line() {
    // A port nothing listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let registry = format!("127.0.0.1:{port}");
    let app = TestApp::new();
    app.track(format!("{registry}/rtu/{}", app.name));
    let builder = builder_with(RegistryConfig {
        address: format!("{registry}/rtu"),
        endpoint: None,
        auth: RegistryAuth::None,
    })
    .await;
    let repo = Repo::new(&app.dockerfile(4));
    let (result, lines) = build(&builder, &app.request(&repo, 1)).await;
    let err = result.expect_err("the push fails").to_string();
    assert_eq!(
        err,
        format!(
            "registry error: pushing to {registry} failed: cannot reach the registry \
             (connection refused)"
        ),
        "{}",
        lines.all().join("\n")
    );
    assert_eq!(err.lines().count(), 1);
}

#[tokio::test]
async fn ecr_auth_gets_a_token_once_creates_the_repository_and_pushes_via_the_endpoint() {
    let moto = aws_endpoint();
    let moto_addr = moto
        .strip_prefix("http://")
        .expect("EMPIRE_TEST_AWS_ENDPOINT is http://HOST:PORT")
        .trim_end_matches('/')
        .to_string();
    let local_registry = anonymous_registry();

    // The token the builder should get, and so send: moto's `AWS:<password>`.
    let direct = moto_client(&moto);
    let token = direct
        .get_authorization_token()
        .send()
        .await
        .expect("GetAuthorizationToken on moto");
    let encoded = token.authorization_data()[0]
        .authorization_token()
        .expect("a token")
        .to_string();
    let decoded = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(&encoded)
            .unwrap(),
    )
    .unwrap();
    let (user, password) = decoded.split_once(':').expect("AWS:<password>");
    assert_eq!(user, "AWS");

    // The endpoint: the local registry behind a proxy that wants exactly that login;
    // the ECR API: moto behind a proxy that counts the calls.
    let registry_proxy = Proxy::start(&local_registry, Some(basic(user, password))).await;
    let moto_proxy = Proxy::start(&moto_addr, None).await;
    let endpoint = registry_proxy.addr.to_string();

    let app = TestApp::new();
    let prefix = unique("rte");
    let ecr_name = format!("{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com");
    let name = format!("{ecr_name}/{prefix}/{}", app.name);
    app.track(format!("{endpoint}/{prefix}/{}", app.name));
    let builder = builder_with(RegistryConfig {
        address: format!("{ecr_name}/{prefix}"),
        endpoint: Some(endpoint.clone()),
        auth: RegistryAuth::Ecr(ecr_settings(format!("http://{}", moto_proxy.addr))),
    })
    .await;

    let repo = Repo::new(&app.dockerfile(32));
    let (result, lines) = build(&builder, &app.request(&repo, 1)).await;
    let built = result.unwrap_or_else(|e| panic!("build failed: {e}\n{}", lines.all().join("\n")));
    let digest = digest_of(&built.image, &name);
    let repository = format!("{prefix}/{}", app.name);
    assert!(
        lines
            .all()
            .contains(&format!("       Created repository {repository}")),
        "{}",
        lines.all().join("\n")
    );
    assert_eq!(moto_proxy.calls("GetAuthorizationToken"), 1);
    assert_eq!(moto_proxy.calls("DescribeRepositories"), 1);
    assert_eq!(moto_proxy.calls("CreateRepository"), 1);

    // moto knows the repository now.
    let described = direct
        .describe_repositories()
        .repository_names(&repository)
        .send()
        .await
        .expect("the repository exists on moto");
    assert_eq!(
        described.repositories()[0].repository_name(),
        Some(repository.as_str())
    );

    // The image went to the endpoint, with the token's login.
    let sent = registry_proxy.seen();
    assert!(
        sent.iter()
            .any(|s| !s.refused && s.method == "PUT" && s.path.ends_with("/manifests/v1")),
        "no authorized manifest upload through the endpoint: {sent:?}"
    );
    assert!(
        sent.iter()
            .filter(|s| s.refused)
            .all(|s| s.authorization.is_none()),
        "the builder sent a login the registry refused: {sent:?}"
    );
    assert_eq!(
        registry_tags(&local_registry, &repository, None).await,
        ["v1"]
    );
    assert_eq!(
        registry_manifest_digest(&local_registry, &repository, "v1", None).await,
        digest
    );

    // A second build: the token and the repository come from the cache.
    let (result, lines) = build(&builder, &app.request(&repo, 2)).await;
    let second = result.unwrap_or_else(|e| panic!("build failed: {e}\n{}", lines.all().join("\n")));
    digest_of(&second.image, &name);
    assert_eq!(
        moto_proxy.calls("GetAuthorizationToken"),
        1,
        "{:?}",
        moto_proxy.seen()
    );
    assert_eq!(moto_proxy.calls("DescribeRepositories"), 1);
    assert_eq!(moto_proxy.calls("CreateRepository"), 1);
    assert_eq!(
        registry_tags(&local_registry, &repository, None).await,
        ["v1", "v2"]
    );
}

#[tokio::test]
async fn ecr_api_failures_fail_the_push_in_one_line() {
    // An ECR API nothing answers.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let local_registry = anonymous_registry();
    let app = TestApp::new();
    let ecr_name = format!("{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com");
    let builder = builder_with(RegistryConfig {
        address: format!("{ecr_name}/rtf"),
        endpoint: Some(local_registry.clone()),
        auth: RegistryAuth::Ecr(ecr_settings(format!("http://127.0.0.1:{port}"))),
    })
    .await;
    app.track(format!("{local_registry}/rtf/{}", app.name));
    let repo = Repo::new(&app.dockerfile(4));
    let (result, _) = build(&builder, &app.request(&repo, 1)).await;
    let err = result.expect_err("the push fails").to_string();
    assert_eq!(
        err,
        format!(
            "registry error: pushing to {ecr_name} (via {local_registry}) failed: ECR \
             DescribeRepositories rtf/{}: cannot reach the ECR API: Connection refused (os \
             error 111)",
            app.name
        )
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[tokio::test]
async fn a_refused_ecr_token_fails_the_push_in_one_line() {
    let moto = aws_endpoint();
    let local_registry = anonymous_registry();
    // A registry that wants another login than the one ECR hands out.
    let registry_proxy = Proxy::start(&local_registry, Some(basic("AWS", "another"))).await;
    let endpoint = registry_proxy.addr.to_string();
    let app = TestApp::new();
    let ecr_name = format!("{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com");
    app.track(format!("{endpoint}/rtr/{}", app.name));
    let builder = builder_with(RegistryConfig {
        address: format!("{ecr_name}/rtr"),
        endpoint: Some(endpoint.clone()),
        auth: RegistryAuth::Ecr(ecr_settings(moto)),
    })
    .await;
    let repo = Repo::new(&app.dockerfile(4));
    let (result, lines) = build(&builder, &app.request(&repo, 1)).await;
    let err = result.expect_err("the push fails").to_string();
    assert_eq!(
        err,
        format!(
            "registry error: pushing to {ecr_name} (via {endpoint}) failed: unauthorized: the \
             registry refused the ECR token"
        ),
        "{}",
        lines.all().join("\n")
    );
    // The token was fresh: it is not fetched again for a retry.
    assert!(
        !lines.all().iter().any(|l| l.contains("renewing")),
        "{}",
        lines.all().join("\n")
    );
}
