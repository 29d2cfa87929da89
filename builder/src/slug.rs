//! Buildpack builds on the Docker engine: a build container from the build stack with the
//! source, the buildpacks, ENV_DIR and the app's cache volume; `bin/detect`,
//! `bin/compile` and `bin/release` run in it as the stack's non-root user with their
//! output streamed live; the slug (`/app`) then lands in an image of the run stack with a
//! launcher as its ENTRYPOINT.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerConfig, ContainerCreateBody, HostConfig, VolumeCreateRequest};
use bollard::query_parameters::{
    CommitContainerOptions, CreateContainerOptions, DownloadFromContainerOptions,
    ListImagesOptions, PruneImagesOptions, RemoveContainerOptionsBuilder, RemoveImageOptions,
    RemoveVolumeOptions, UploadToContainerOptions,
};
use bytes::Bytes;
use empire_core::app::AppName;
use empire_core::build::{BuildRequest, BuiltImage};
use empire_core::procfile;
use empire_core::progress::Progress;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::buildpack::{
    self, BUILDPACK_URL_VAR, BuildpackError, BuildpackRef, ReleaseInfo, SHIPPED_ORDER, Selection,
};
use crate::context::{self, Prepared};
use crate::error::BuilderError;
use crate::stack::{
    APP_DIR, BUILDPACKS_DIR, CA_BUNDLE_PATH, CACHE_DIR, ENV_DIR, LAUNCHER_LABEL, LAUNCHER_PATH,
    LAUNCHER_SCRIPT, STACK_NAME, STACK_USER, env_map, expand_env,
};
use crate::{DockerBuilder, image_tag};

/// How long one Docker request of a buildpack build may take before it answers (uploads
/// of large sources, commits of large slugs).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How many lines of a failed compile's output its error repeats.
const TAIL_LINES: usize = 10;

/// The most `bin/detect` / `bin/release` output kept.
const CAPTURE_LIMIT: usize = 1024 * 1024;

/// The config var whose PEM content is added to the build's CA bundle.
pub const CA_BUNDLE_VAR: &str = "EMPIRE_CA_BUNDLE";

/// Proxy settings given to every buildpack step straight in its environment (both
/// spellings), besides ENV_DIR.
const PROXY_VARS: &[&str] = &["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"];

/// The name of an app's build cache volume.
pub fn cache_volume_name(app: &str) -> String {
    format!("empire-cache-{app}")
}

/// Runs before the buildpacks, as root: builds the CA bundle, hands the source, ENV_DIR
/// and the buildpacks to the stack user, and empties the cache for `no-cache`.
const SETUP_SCRIPT: &str = r#"set -e
for bundle in /etc/ssl/certs/ca-certificates.crt /empire/ca/*.crt; do
    if [ -f "$bundle" ]; then cat "$bundle"; echo; fi
done > /empire/ca-certificates.crt
chmod 0644 /empire/ca-certificates.crt
chmod -R a+x /empire/buildpacks/*/bin
chown -R "$1:$1" /app /empire/env /empire/buildpacks
chmod 0700 /empire/env
if [ "$2" = no-cache ]; then
    find /cache -mindepth 1 -delete
fi
chown "$1:$1" /cache
"#;

/// Runs a buildpack step after sourcing the `export` files of the buildpacks before it
/// (the multi-buildpack convention): `bash -c STEP_SCRIPT step EXPORTS… -- BIN ARGS…`.
const STEP_SCRIPT: &str = r#"while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
    if [ -f "$1" ]; then . "$1"; fi
    shift
done
shift
exec "$@""#;

/// One buildpack of a build: where it is on the gateway and in the container.
#[derive(Debug, Clone)]
struct Pack {
    /// The shipped name or the URL (credentials hidden).
    label: String,
    /// Its directory on the gateway.
    host_dir: PathBuf,
    /// Its directory in the build container.
    dir: String,
}

impl Pack {
    fn bin(&self, name: &str) -> String {
        format!("{}/bin/{name}", self.dir)
    }
}

/// What an exec printed and how it ended.
struct ExecOutput {
    code: i64,
    stdout: String,
    tail: VecDeque<String>,
}

impl DockerBuilder {
    /// Builds a commit without a Dockerfile with buildpacks.
    pub(crate) async fn build_with_buildpacks(
        &self,
        request: &BuildRequest,
        prepared: Prepared,
        progress: &Progress,
    ) -> Result<BuiltImage, BuilderError> {
        let config = self.buildpack_config().clone();
        let app = request.app.as_str();
        progress.step(format!(
            "Building with buildpacks on {}",
            config.build_image
        ));

        let selection = buildpack::select(
            request.config.get(BUILDPACK_URL_VAR).map(String::as_str),
            prepared.buildpacks_file.as_deref(),
        )?;
        let docker = self.docker().clone().with_timeout(REQUEST_TIMEOUT);
        require_image(&docker, &config.build_image).await?;
        let run_env = require_image(&docker, &config.run_image).await?;

        // Buildpacks from git are cloned on the gateway, then copied in like the others.
        let fetched = tempfile::tempdir().map_err(|source| BuildpackError::Io {
            action: "creating a directory for buildpacks".to_string(),
            source,
        })?;
        let (packs, explicit) = match &selection {
            Selection::Explicit { from, buildpacks } => {
                let mut packs = Vec::new();
                for (i, reference) in buildpacks.iter().enumerate() {
                    let host_dir = match reference {
                        BuildpackRef::Shipped(name) => {
                            buildpack::shipped_dir(&config.buildpacks_dir, name)?
                        }
                        BuildpackRef::Git { url, reference: r } => {
                            progress.detail(format!("Fetching buildpack {}", reference.label()));
                            let into = fetched.path().join(i.to_string());
                            buildpack::fetch_git(url, r.as_deref(), &into).await?;
                            into
                        }
                    };
                    packs.push(pack(i, reference.label(), host_dir));
                }
                let names: Vec<&str> = packs.iter().map(|p| p.label.as_str()).collect();
                progress.detail(format!("Buildpacks from {from}: {}", names.join(", ")));
                (packs, true)
            }
            Selection::Detect => {
                let mut packs = Vec::new();
                for (i, name) in SHIPPED_ORDER.iter().enumerate() {
                    let host_dir = buildpack::shipped_dir(&config.buildpacks_dir, name)?;
                    packs.push(pack(i, name.to_string(), host_dir));
                }
                (packs, false)
            }
        };

        let archive = {
            let packs = packs.clone();
            let vars = request.config.clone();
            let ca = config.ca_bundle.clone();
            tokio::task::spawn_blocking(move || empire_archive(&packs, &vars, ca.as_deref()))
                .await?
                .map_err(|source| BuildpackError::Io {
                    action: "packing the buildpacks and ENV_DIR".to_string(),
                    source,
                })?
        };

        let volume = cache_volume_name(app);
        docker
            .create_volume(VolumeCreateRequest {
                name: Some(volume.clone()),
                labels: Some(HashMap::from([
                    ("empire.app".to_string(), app.to_string()),
                    ("empire.cache".to_string(), "true".to_string()),
                ])),
                ..Default::default()
            })
            .await
            .map_err(|e| BuildpackError::docker(format!("creating cache volume {volume}"), e))?;

        let container = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(format!(
                        "empire-build-{app}-v{}-{}",
                        request.version,
                        suffix()
                    )),
                    ..Default::default()
                }),
                ContainerCreateBody {
                    image: Some(config.build_image.clone()),
                    user: Some("root".to_string()),
                    cmd: Some(vec!["sleep".to_string(), "infinity".to_string()]),
                    working_dir: Some(APP_DIR.to_string()),
                    labels: Some(HashMap::from([
                        ("empire.app".to_string(), app.to_string()),
                        ("empire.build".to_string(), format!("v{}", request.version)),
                    ])),
                    host_config: Some(HostConfig {
                        binds: Some(vec![format!("{volume}:{CACHE_DIR}")]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| BuildpackError::docker("creating the build container", e))?
            .id;

        // Removed in the background once the job is done, whatever its outcome (the
        // guard also covers a build whose future is dropped midway).
        let guard = ContainerGuard::new(&docker, &container);
        let job = Job {
            docker: &docker,
            container: &container,
            request,
            progress,
            env: step_env(request),
        };
        let result = job
            .run(
                prepared,
                archive,
                &packs,
                explicit,
                &config.run_image,
                &run_env,
            )
            .await;
        guard.remove_later();
        drop(fetched);
        result
    }

    /// Removes an app's build cache volume (when the app is destroyed). A missing volume
    /// is fine.
    pub async fn remove_cache(&self, app: &AppName) -> Result<(), BuilderError> {
        // A build container still being removed would keep the volume in use.
        self.finish_removals().await;
        let volume = cache_volume_name(app.as_str());
        match self
            .docker()
            .remove_volume(&volume, Some(RemoveVolumeOptions { force: true }))
            .await
        {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => {
                Err(BuildpackError::docker(format!("removing cache volume {volume}"), e).into())
            }
        }
    }

    /// Removes the app's release images `empire/<app>:v<N>` whose N is not in `keep`, and
    /// returns the tags removed. An image still used by a container stays (and is not
    /// returned).
    pub async fn prune_images(
        &self,
        app: &AppName,
        keep: &[u32],
    ) -> Result<Vec<String>, BuilderError> {
        let repo = format!("empire/{}", app.as_str());
        let images = self
            .docker()
            .list_images(Some(ListImagesOptions {
                filters: Some(HashMap::from([(
                    "reference".to_string(),
                    vec![repo.clone()],
                )])),
                ..Default::default()
            }))
            .await
            .map_err(|e| BuildpackError::docker(format!("listing images of {repo}"), e))?;
        let mut tags: Vec<(u32, String)> = images
            .iter()
            .flat_map(|image| image.repo_tags.iter())
            .filter_map(|tag| {
                let version = tag.strip_prefix(&repo)?.strip_prefix(":v")?;
                let version: u32 = version.parse().ok()?;
                (!keep.contains(&version)).then(|| (version, tag.clone()))
            })
            .collect();
        tags.sort();
        let mut removed = Vec::new();
        for (_, tag) in tags {
            match self
                .docker()
                .remove_image(&tag, None::<RemoveImageOptions>, None)
                .await
            {
                Ok(_) => removed.push(tag),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404 | 409,
                    message,
                }) => tracing::debug!(%tag, %message, "image kept"),
                Err(e) => {
                    return Err(BuildpackError::docker(format!("removing image {tag}"), e).into());
                }
            }
        }
        Ok(removed)
    }

    /// Removes dangling (untagged) images an app's builds left behind. Best effort: a
    /// prune that is already running elsewhere is not an error.
    pub(crate) async fn prune_dangling(&self, app: &str) {
        let filters = HashMap::from([
            ("dangling".to_string(), vec!["true".to_string()]),
            ("label".to_string(), vec![format!("empire.app={app}")]),
        ]);
        if let Err(err) = self
            .docker()
            .prune_images(Some(PruneImagesOptions {
                filters: Some(filters),
            }))
            .await
        {
            tracing::debug!(%app, error = %err, "pruning dangling images");
        }
    }
}

/// One buildpack build inside its build container.
struct Job<'a> {
    docker: &'a bollard::Docker,
    container: &'a str,
    request: &'a BuildRequest,
    progress: &'a Progress,
    /// The environment every buildpack step gets.
    env: Vec<String>,
}

impl Job<'_> {
    async fn run(
        &self,
        prepared: Prepared,
        archive: Vec<u8>,
        packs: &[Pack],
        explicit: bool,
        run_image: &str,
        run_env: &BTreeMap<String, String>,
    ) -> Result<BuiltImage, BuilderError> {
        let progress = self.progress;
        self.docker
            .start_container(self.container, None)
            .await
            .map_err(|e| BuildpackError::docker("starting the build container", e))?;

        let Prepared {
            source,
            procfile,
            short,
            ..
        } = prepared;
        self.upload_source(source).await?;
        self.docker
            .upload_to_container(
                self.container,
                Some(UploadToContainerOptions {
                    path: "/empire".to_string(),
                    ..Default::default()
                }),
                bollard::body_full(Bytes::from(archive)),
            )
            .await
            .map_err(|e| {
                BuildpackError::docker("copying the buildpacks into the build container", e)
            })?;
        progress.detail(format!(
            "Source {short} in {APP_DIR}, cache volume {} at {CACHE_DIR}",
            cache_volume_name(self.request.app.as_str())
        ));

        if self.request.no_cache {
            progress.detail("Emptying the build cache (no-cache)");
        }
        let setup = self
            .exec(
                "root",
                vec![
                    "/bin/sh".to_string(),
                    "-c".to_string(),
                    SETUP_SCRIPT.to_string(),
                    "setup".to_string(),
                    STACK_USER.to_string(),
                    if self.request.no_cache {
                        "no-cache"
                    } else {
                        "cache"
                    }
                    .to_string(),
                ],
                true,
            )
            .await?;
        if setup.code != 0 {
            return Err(BuildpackError::Container {
                action: "preparing the build container".to_string(),
                message: format!("exit code {}: {}", setup.code, setup.stdout.trim()),
            }
            .into());
        }

        // Detection: the first shipped buildpack that says yes, or (for buildpacks the
        // app chose) each one's name.
        let mut chosen: Vec<(Pack, String)> = Vec::new();
        if explicit {
            for pack in packs {
                let name = match self.detect(pack).await? {
                    Some(name) => {
                        progress.detail(format!("Using buildpack {} ({name})", pack.label));
                        name
                    }
                    None => {
                        progress.detail(format!(
                            "Using buildpack {} (its bin/detect did not pass; it runs as chosen)",
                            pack.label
                        ));
                        pack.label.clone()
                    }
                };
                chosen.push((pack.clone(), name));
            }
        } else {
            for pack in packs {
                if let Some(name) = self.detect(pack).await? {
                    progress.detail(format!("Detected buildpack {} ({name})", pack.label));
                    chosen.push((pack.clone(), name));
                    break;
                }
            }
            if chosen.is_empty() {
                return Err(BuildpackError::NoneDetected {
                    tried: packs.iter().map(|p| p.label.clone()).collect(),
                }
                .into());
            }
        }

        // Compile, each buildpack seeing the `export` files of those before it.
        let mut exports = Vec::new();
        for (pack, _) in &chosen {
            let output = self
                .exec(
                    STACK_USER,
                    step_command(
                        &exports,
                        vec![
                            pack.bin("compile"),
                            APP_DIR.to_string(),
                            CACHE_DIR.to_string(),
                            ENV_DIR.to_string(),
                        ],
                    ),
                    false,
                )
                .await?;
            if output.code != 0 {
                progress.error(format!(
                    "Failed to compile with buildpack {} (exit code {})",
                    pack.label, output.code
                ));
                return Err(BuildpackError::Compile {
                    buildpack: pack.label.clone(),
                    code: output.code,
                    tail: output.tail.into_iter().collect(),
                }
                .into());
            }
            exports.push(format!("{}/export", pack.dir));
        }

        // Release: process types and config vars, the later buildpack winning.
        let step = progress.step("Discovering process types");
        let mut release = ReleaseInfo::default();
        for (pack, _) in &chosen {
            let output = self
                .exec(
                    STACK_USER,
                    step_command(&exports, vec![pack.bin("release"), APP_DIR.to_string()]),
                    true,
                )
                .await?;
            let release_error = |message: String| BuildpackError::Release {
                buildpack: pack.label.clone(),
                message,
            };
            if output.code != 0 {
                return Err(release_error(format!("failed with exit code {}", output.code)).into());
            }
            release.merge(buildpack::parse_release(&output.stdout).map_err(release_error)?);
        }
        let merged = buildpack::merge_procfile(procfile.as_deref(), &release.default_process_types);
        if let Some(text) = &procfile {
            let types = procfile::parse(text)
                .map(|p| p.processes.into_iter().map(|(n, _)| n).collect::<Vec<_>>())
                .unwrap_or_default();
            progress.detail(format!("Procfile declares types -> {}", list(&types)));
        }
        let defaults: Vec<String> = release.default_process_types.keys().cloned().collect();
        progress.detail(format!(
            "Default types for buildpack -> {}",
            list(&defaults)
        ));
        drop(step);

        let web = merged
            .as_deref()
            .and_then(|text| procfile::parse(text).ok())
            .and_then(|p| p.processes.into_iter().find(|(name, _)| name == "web"))
            .map(|(_, command)| command);
        let labels: Vec<&str> = chosen.iter().map(|(p, _)| p.label.as_str()).collect();
        let image_id = self
            .assemble(run_image, run_env, &release, web, &labels.join(","))
            .await?;
        Ok(BuiltImage {
            image: image_tag(self.request.app.as_str(), self.request.version),
            image_id,
            procfile: merged,
        })
    }

    /// The name `bin/detect` printed, else the buildpack's label.
    fn detect_name(&self, pack: &Pack, printed: Option<&str>) -> String {
        printed
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| pack.label.clone())
    }

    /// Runs `bin/detect`: the name it printed when it passed.
    async fn detect(&self, pack: &Pack) -> Result<Option<String>, BuildpackError> {
        let output = self
            .exec(
                STACK_USER,
                vec![pack.bin("detect"), APP_DIR.to_string()],
                true,
            )
            .await?;
        Ok((output.code == 0).then(|| {
            let first = output.stdout.lines().next().unwrap_or("");
            self.detect_name(pack, Some(first))
        }))
    }

    /// Streams the commit's tree into `/app`.
    async fn upload_source(&self, source: context::Source) -> Result<(), BuilderError> {
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
        let producer = tokio::task::spawn_blocking(move || context::stream_tar(&source, tx));
        let body =
            bollard::body_try_stream(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|chunk| (chunk, rx))
            }));
        let uploaded = self
            .docker
            .upload_to_container(
                self.container,
                Some(UploadToContainerOptions {
                    path: APP_DIR.to_string(),
                    ..Default::default()
                }),
                body,
            )
            .await;
        let produced = producer.await?;
        match (uploaded, produced) {
            (_, Err(err)) if !matches!(err, BuilderError::ContextClosed) => Err(err),
            (Err(e), _) => {
                Err(BuildpackError::docker("copying the source into the build container", e).into())
            }
            (Ok(()), _) => Ok(()),
        }
    }

    /// Runs a command in the build container as `user`, relaying its output line by line
    /// as it comes (stdout is kept instead when `capture`).
    async fn exec(
        &self,
        user: &str,
        cmd: Vec<String>,
        capture: bool,
    ) -> Result<ExecOutput, BuildpackError> {
        let what = cmd.first().cloned().unwrap_or_default();
        let error = |e| BuildpackError::docker(format!("running {what} in the build container"), e);
        let created = self
            .docker
            .create_exec(
                self.container,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    user: Some(user.to_string()),
                    cmd: Some(cmd.clone()),
                    env: Some(self.env.clone()),
                    working_dir: Some(APP_DIR.to_string()),
                    ..Default::default()
                },
            )
            .await
            .map_err(error)?;
        let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(error)?
        else {
            return Err(BuildpackError::Container {
                action: format!("running {what} in the build container"),
                message: "the engine did not attach to its output".to_string(),
            });
        };
        let mut result = ExecOutput {
            code: -1,
            stdout: String::new(),
            tail: VecDeque::new(),
        };
        let mut stdout = ByteLines::default();
        let mut stderr = ByteLines::default();
        let mut captured = Vec::new();
        while let Some(item) = output.next().await {
            match item.map_err(error)? {
                LogOutput::StdOut { message } if capture => {
                    if captured.len() < CAPTURE_LIMIT {
                        captured.extend_from_slice(&message);
                    }
                }
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    for line in stdout.push(&message) {
                        self.relay(&line, &mut result.tail);
                    }
                }
                LogOutput::StdErr { message } => {
                    for line in stderr.push(&message) {
                        self.relay(&line, &mut result.tail);
                    }
                }
                LogOutput::StdIn { .. } => {}
            }
        }
        for line in stdout.finish().into_iter().chain(stderr.finish()) {
            self.relay(&line, &mut result.tail);
        }
        result.stdout = String::from_utf8_lossy(&captured).into_owned();

        // The output ends as the process exits; the engine may note the exit a moment
        // later.
        for _ in 0..200 {
            let inspected = self.docker.inspect_exec(&created.id).await.map_err(error)?;
            if inspected.running != Some(true) {
                result.code = inspected.exit_code.unwrap_or(-1);
                return Ok(result);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(BuildpackError::Container {
            action: format!("running {what} in the build container"),
            message: "it did not report an exit code".to_string(),
        })
    }

    /// Sends one output line to the progress as a buildpack wrote it: its own `----->`
    /// headers and indented lines as they are, anything else indented as detail.
    fn relay(&self, line: &str, tail: &mut VecDeque<String>) {
        if line.starts_with("----->") || line.starts_with(' ') || line.starts_with('\t') {
            self.progress.raw(line);
        } else {
            self.progress.detail(line);
        }
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.to_string());
    }

    /// Puts the slug in an image of the run stack: a container of the run stack gets
    /// `/app` (streamed from the build container) and the launcher, and is committed as
    /// `empire/<app>:v<N>`. Returns the image ID.
    async fn assemble(
        &self,
        run_image: &str,
        run_env: &BTreeMap<String, String>,
        release: &ReleaseInfo,
        web: Option<String>,
        buildpacks: &str,
    ) -> Result<String, BuilderError> {
        let step = self
            .progress
            .step(format!("Assembling the image on {run_image}"));
        let app = self.request.app.as_str();
        let tag = image_tag(app, self.request.version);
        let labels = HashMap::from([
            ("empire.app".to_string(), app.to_string()),
            (
                "empire.release".to_string(),
                self.request.version.to_string(),
            ),
            (LAUNCHER_LABEL.to_string(), "true".to_string()),
            ("empire.buildpacks".to_string(), buildpacks.to_string()),
        ]);
        let slug = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(format!(
                        "empire-slug-{app}-v{}-{}",
                        self.request.version,
                        suffix()
                    )),
                    ..Default::default()
                }),
                // No labels: a commit would copy them into the image.
                ContainerCreateBody {
                    image: Some(run_image.to_string()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| BuildpackError::docker("creating the slug container", e))?
            .id;
        let guard = ContainerGuard::new(self.docker, &slug);
        let previous = self
            .docker
            .inspect_image(&tag)
            .await
            .ok()
            .and_then(|i| i.id);
        let result = self
            .fill_and_commit(&slug, &tag, run_env, release, web, labels)
            .await;
        // The image is committed (or the commit failed): the container goes in the
        // background.
        guard.remove_later();
        let image_id = result?;
        if let Some(previous) = previous.filter(|p| *p != image_id) {
            // A rebuild of the same release: the image it replaces is now untagged.
            let _ = self
                .docker
                .remove_image(&previous, None::<RemoveImageOptions>, None)
                .await;
        }
        step.done(format!("Built {tag}"));
        Ok(image_id)
    }

    async fn fill_and_commit(
        &self,
        slug: &str,
        tag: &str,
        run_env: &BTreeMap<String, String>,
        release: &ReleaseInfo,
        web: Option<String>,
        labels: HashMap<String, String>,
    ) -> Result<String, BuilderError> {
        let download = self.docker.download_from_container(
            self.container,
            Some(DownloadFromContainerOptions {
                path: APP_DIR.to_string(),
            }),
        );
        let body = bollard::body_try_stream(download.map(|chunk| chunk.map_err(io::Error::other)));
        self.docker
            .upload_to_container(
                slug,
                Some(UploadToContainerOptions {
                    path: "/".to_string(),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| BuildpackError::docker("copying the slug into the run stack", e))?;
        self.docker
            .upload_to_container(
                slug,
                Some(UploadToContainerOptions {
                    path: "/".to_string(),
                    ..Default::default()
                }),
                bollard::body_full(Bytes::from(launcher_archive().map_err(|source| {
                    BuildpackError::Io {
                        action: "packing the launcher".to_string(),
                        source,
                    }
                })?)),
            )
            .await
            .map_err(|e| BuildpackError::docker("copying the launcher into the run stack", e))?;

        let (repo, version) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
        let committed = self
            .docker
            .commit_container(
                CommitContainerOptions {
                    container: Some(slug.to_string()),
                    repo: Some(repo.to_string()),
                    tag: Some(version.to_string()),
                    pause: false,
                    ..Default::default()
                },
                ContainerConfig {
                    env: Some(image_env(run_env, &release.config_vars)),
                    cmd: web.map(|command| vec![command]),
                    entrypoint: Some(vec![LAUNCHER_PATH.to_string()]),
                    user: Some(STACK_USER.to_string()),
                    working_dir: Some(APP_DIR.to_string()),
                    labels: Some(labels),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| BuildpackError::docker(format!("committing {tag}"), e))?;
        Ok(committed.id)
    }
}

/// The image's environment: the run stack's, `HOME=/app`, then bin/release's
/// `config_vars` (with `$NAME` expanded against the stack's environment).
fn image_env(
    run_env: &BTreeMap<String, String>,
    config_vars: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut env = run_env.clone();
    env.insert("HOME".to_string(), APP_DIR.to_string());
    for (name, value) in config_vars {
        if buildpack::is_env_name(name) {
            let expanded = expand_env(value, run_env);
            env.insert(name.clone(), expanded);
        }
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The environment of every buildpack step: the stack, the commit, the CA bundle under
/// every name the usual tools read, and the app's proxy settings.
fn step_env(request: &BuildRequest) -> Vec<String> {
    let mut env = vec![
        format!("STACK={STACK_NAME}"),
        format!("SOURCE_VERSION={}", request.commit),
        "LANG=C.UTF-8".to_string(),
    ];
    for name in [
        "SSL_CERT_FILE",
        "PIP_CERT",
        "NODE_EXTRA_CA_CERTS",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
    ] {
        env.push(format!("{name}={CA_BUNDLE_PATH}"));
    }
    for name in PROXY_VARS {
        let lower = name.to_ascii_lowercase();
        let value = request
            .config
            .get(*name)
            .or_else(|| request.config.get(&lower));
        if let Some(value) = value {
            env.push(format!("{name}={value}"));
            env.push(format!("{lower}={value}"));
        }
    }
    env
}

fn step_command(exports: &[String], argv: Vec<String>) -> Vec<String> {
    let mut cmd = vec![
        "/bin/bash".to_string(),
        "-c".to_string(),
        STEP_SCRIPT.to_string(),
        "empire-step".to_string(),
    ];
    cmd.extend(exports.iter().cloned());
    cmd.push("--".to_string());
    cmd.extend(argv);
    cmd
}

fn pack(index: usize, label: String, host_dir: PathBuf) -> Pack {
    let base = host_dir
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| {
            n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .unwrap_or("buildpack")
        .to_string();
    Pack {
        label,
        dir: format!("{BUILDPACKS_DIR}/{index:02}-{base}"),
        host_dir,
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_string()
    } else {
        names.join(", ")
    }
}

fn suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    format!("{:08x}", nanos ^ std::process::id().rotate_left(16))
}

/// Checks that a stack image is on the engine and returns its environment.
async fn require_image(
    docker: &bollard::Docker,
    image: &str,
) -> Result<BTreeMap<String, String>, BuildpackError> {
    match docker.inspect_image(image).await {
        Ok(inspect) => Ok(env_map(
            &inspect.config.and_then(|c| c.env).unwrap_or_default(),
        )),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Err(BuildpackError::StackMissing {
            image: image.to_string(),
        }),
        Err(e) => Err(BuildpackError::docker(format!("inspecting {image}"), e)),
    }
}

/// Removes a container when the build is done with it: [`ContainerGuard::remove_later`]
/// once the image is committed (the push does not wait for it), or from a spawned task
/// when the guard is dropped on an error path or with the build's future (a pusher that
/// went away). Either way the removal is counted until done, and
/// [`DockerBuilder::finish_removals`] waits for the count to reach zero (a gateway that
/// shuts down, an app whose cache volume is removed).
struct ContainerGuard {
    docker: bollard::Docker,
    id: Option<String>,
}

impl ContainerGuard {
    fn new(docker: &bollard::Docker, id: &str) -> Self {
        ContainerGuard {
            docker: docker.clone(),
            id: Some(id.to_string()),
        }
    }

    /// Removes the container in the background.
    fn remove_later(self) {
        drop(self);
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            remove_in_background(self.docker.clone(), id);
        }
    }
}

/// Build and slug containers being removed in the background.
static REMOVALS: AtomicUsize = AtomicUsize::new(0);
/// Woken when [`REMOVALS`] drops to zero.
static REMOVALS_DONE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Counts a background removal until its task ends (also when the task is dropped).
struct Removal;

impl Removal {
    fn start() -> Self {
        REMOVALS.fetch_add(1, Ordering::SeqCst);
        Removal
    }
}

impl Drop for Removal {
    fn drop(&mut self) {
        if REMOVALS.fetch_sub(1, Ordering::SeqCst) == 1 {
            REMOVALS_DONE.notify_waiters();
        }
    }
}

/// Removes the container on a spawned task (counted in [`REMOVALS`]); without a runtime,
/// a thread of its own runs the removal.
fn remove_in_background(docker: bollard::Docker, id: String) {
    let removal = Removal::start();
    let task = async move {
        let _removal = removal;
        remove_container(&docker, &id).await;
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(task);
        }
        Err(_) => {
            std::thread::spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(task),
                    Err(err) => tracing::warn!(error = %err, "cannot remove a build container"),
                }
            });
        }
    }
}

impl DockerBuilder {
    /// Waits until the build and slug containers being removed in the background are
    /// gone. A gateway calls it before it exits, so none is left behind.
    pub async fn finish_removals(&self) {
        loop {
            let done = REMOVALS_DONE.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if REMOVALS.load(Ordering::SeqCst) == 0 {
                return;
            }
            done.await;
        }
    }

    /// How many build and slug containers are being removed in the background.
    pub fn pending_removals(&self) -> usize {
        REMOVALS.load(Ordering::SeqCst)
    }
}

async fn remove_container(docker: &bollard::Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    match docker.remove_container(id, Some(options)).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(err) => tracing::warn!(container = %id, error = %err, "removing a build container"),
    }
}

/// The tar unpacked at `/empire` in the build container: `buildpacks/NN-name/…`,
/// `env/NAME` (one file per config var) and `ca/*.crt` (the gateway's bundle and the
/// app's `EMPIRE_CA_BUNDLE`).
fn empire_archive(
    packs: &[Pack],
    config: &BTreeMap<String, String>,
    ca_bundle: Option<&Path>,
) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    append_dir_entry(&mut tar, "buildpacks")?;
    for pack in packs {
        let name = pack
            .dir
            .strip_prefix("/empire/")
            .unwrap_or(&pack.dir)
            .to_string();
        append_dir_entry(&mut tar, &name)?;
        append_tree(&mut tar, &pack.host_dir, &name)?;
    }
    append_dir_entry(&mut tar, "env")?;
    for (name, value) in config {
        if buildpack::is_env_name(name) {
            append_file(&mut tar, &format!("env/{name}"), 0o600, value.as_bytes())?;
        } else {
            tracing::warn!(var = %name, "config var not written to ENV_DIR: not a valid name");
        }
    }
    append_dir_entry(&mut tar, "ca")?;
    if let Some(path) = ca_bundle {
        match std::fs::read(path) {
            Ok(bundle) => append_file(&mut tar, "ca/gateway.crt", 0o644, &bundle)?,
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "reading the CA bundle")
            }
        }
    }
    if let Some(pem) = config.get(CA_BUNDLE_VAR).filter(|p| !p.trim().is_empty()) {
        append_file(&mut tar, "ca/app.crt", 0o644, pem.as_bytes())?;
    }
    tar.into_inner()
}

/// The tar unpacked at `/` in the slug container: the launcher.
fn launcher_archive() -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    append_file(
        &mut tar,
        LAUNCHER_PATH.trim_start_matches('/'),
        0o755,
        LAUNCHER_SCRIPT.as_bytes(),
    )?;
    tar.into_inner()
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

fn append_dir_entry(tar: &mut tar::Builder<Vec<u8>>, path: &str) -> io::Result<()> {
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut h, path, io::empty())
}

fn append_file(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> io::Result<()> {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    tar.append_data(&mut h, path, data)
}

/// Adds a directory of the gateway under `prefix`, keeping executable bits and symlinks,
/// leaving out `.git`.
fn append_tree(tar: &mut tar::Builder<Vec<u8>>, dir: &Path, prefix: &str) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == ".git" {
            continue;
        }
        let path = format!("{prefix}/{name}");
        let meta = entry.path().symlink_metadata()?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(entry.path())?;
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            tar.append_link(&mut h, &path, target)?;
        } else if meta.is_dir() {
            append_dir_entry(tar, &path)?;
            append_tree(tar, &entry.path(), &path)?;
        } else if meta.is_file() {
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            let data = std::fs::read(entry.path())?;
            append_file(tar, &path, mode, &data)?;
        }
    }
    Ok(())
}

/// Splits an exec's output into lines as it arrives: bytes are kept until a line is
/// complete (so a character split between chunks survives), a carriage return keeps
/// only what follows it (progress bars), blank lines are dropped.
#[derive(Default)]
struct ByteLines {
    partial: Vec<u8>,
}

impl ByteLines {
    fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.partial.extend_from_slice(chunk);
        let mut lines = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            if let Some(line) = tidy(&line[..line.len() - 1]) {
                lines.push(line);
            }
        }
        lines
    }

    fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.partial);
        tidy(&rest)
    }
}

fn tidy(line: &[u8]) -> Option<String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = match line.iter().rposition(|&b| b == b'\r') {
        Some(at) => &line[at + 1..],
        None => line,
    };
    let text = String::from_utf8_lossy(line).into_owned();
    (!text.trim().is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn byte_lines_keep_split_characters_and_drop_progress_bars() {
        let mut lines = ByteLines::default();
        let snowman = "☃".as_bytes();
        assert!(lines.push(&snowman[..1]).is_empty());
        let mut rest = snowman[1..].to_vec();
        rest.extend_from_slice(b" ok\r\n\n 10%\r 50%\r100%\nlast");
        assert_eq!(lines.push(&rest), vec!["☃ ok", "100%"]);
        assert_eq!(lines.finish().as_deref(), Some("last"));
        assert_eq!(lines.finish(), None);
    }

    #[test]
    fn the_image_environment_expands_release_config_vars() {
        let run = BTreeMap::from([
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("HOME".to_string(), "/home/empire".to_string()),
        ]);
        let vars = BTreeMap::from([
            ("PATH".to_string(), "/app/bin:$PATH".to_string()),
            ("NODE_ENV".to_string(), "production".to_string()),
            ("bad name".to_string(), "x".to_string()),
        ]);
        assert_eq!(
            image_env(&run, &vars),
            vec![
                "HOME=/app".to_string(),
                "NODE_ENV=production".to_string(),
                "PATH=/app/bin:/usr/bin:/bin".to_string(),
            ]
        );
    }

    #[test]
    fn step_env_has_the_ca_bundle_and_proxies_but_no_other_config() {
        let request = BuildRequest {
            app: AppName::new("web").unwrap(),
            version: 1,
            repo_path: PathBuf::from("/nonexistent"),
            object_dirs: vec![],
            commit: "abc".to_string(),
            config: BTreeMap::from([
                ("https_proxy".to_string(), "http://proxy:3128".to_string()),
                ("SECRET".to_string(), "hunter2".to_string()),
            ]),
            no_cache: false,
        };
        let env = step_env(&request);
        assert!(env.contains(&"HTTPS_PROXY=http://proxy:3128".to_string()));
        assert!(env.contains(&"https_proxy=http://proxy:3128".to_string()));
        assert!(env.contains(&format!("PIP_CERT={CA_BUNDLE_PATH}")));
        assert!(env.contains(&format!("NODE_EXTRA_CA_CERTS={CA_BUNDLE_PATH}")));
        assert!(!env.iter().any(|e| e.contains("hunter2")), "{env:?}");
    }

    #[test]
    fn the_empire_archive_holds_buildpacks_env_and_ca() {
        let dir = tempfile::tempdir().unwrap();
        let bp = dir.path().join("mine");
        std::fs::create_dir_all(bp.join("bin")).unwrap();
        std::fs::create_dir_all(bp.join(".git")).unwrap();
        std::fs::write(bp.join(".git/HEAD"), "ref").unwrap();
        std::fs::write(bp.join("bin/compile"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            bp.join("bin/compile"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(bp.join("README"), "hi").unwrap();
        std::os::unix::fs::symlink("README", bp.join("LINK")).unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, "GATEWAY PEM").unwrap();
        let packs = vec![pack(0, "file:///x".to_string(), bp)];
        let config = BTreeMap::from([
            ("MY_VAR".to_string(), "v".to_string()),
            ("EMPIRE_CA_BUNDLE".to_string(), "APP PEM".to_string()),
            ("../evil".to_string(), "x".to_string()),
        ]);
        let data = empire_archive(&packs, &config, Some(&ca)).unwrap();
        let mut archive = tar::Archive::new(&data[..]);
        let mut seen = BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mode = entry.header().mode().unwrap();
            let mut body = String::new();
            entry.read_to_string(&mut body).unwrap();
            seen.insert(path, (mode, body));
        }
        let paths: Vec<&str> = seen.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            vec![
                "buildpacks",
                "buildpacks/00-mine",
                "buildpacks/00-mine/LINK",
                "buildpacks/00-mine/README",
                "buildpacks/00-mine/bin",
                "buildpacks/00-mine/bin/compile",
                "ca",
                "ca/app.crt",
                "ca/gateway.crt",
                "env",
                "env/EMPIRE_CA_BUNDLE",
                "env/MY_VAR",
            ]
        );
        assert_eq!(seen["buildpacks/00-mine/bin/compile"].0, 0o755);
        assert_eq!(seen["buildpacks/00-mine/README"].0, 0o644);
        assert_eq!(seen["env/MY_VAR"], (0o600, "v".to_string()));
        assert_eq!(seen["ca/gateway.crt"].1, "GATEWAY PEM");
    }

    #[test]
    fn the_launcher_archive_is_executable() {
        let data = launcher_archive().unwrap();
        let mut archive = tar::Archive::new(&data[..]);
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str(), Some("empire/launch"));
        assert_eq!(entry.header().mode().unwrap(), 0o755);
    }

    #[test]
    fn step_commands_source_earlier_exports() {
        let cmd = step_command(
            &["/e/00/export".to_string()],
            vec!["/b/compile".to_string()],
        );
        assert_eq!(&cmd[..2], &["/bin/bash".to_string(), "-c".to_string()]);
        assert_eq!(
            &cmd[3..],
            &["empire-step", "/e/00/export", "--", "/b/compile"]
        );
    }
}
