//! Empire builder: turns a pushed commit into a container image on the Docker engine.
//!
//! A commit with a `Dockerfile` at its root is built with it; any other commit is built
//! with buildpacks (the Heroku buildpack API v2) in the build stack image, its slug landing
//! in the run stack image (see [`slug`], [`buildpack`] and [`stack`]).
//!
//! The build context is read straight from the app's bare repository (and a push's
//! quarantine object directories) with git2, filtered by the commit's `.dockerignore`,
//! and streamed to the engine as a tar while it is produced. Docker's output is relayed
//! to the deploy's progress line by line as it comes.
//!
//! With a [`Registry`] ([`DockerBuilder::with_registry`]) every built image is pushed
//! there and the build returns its digest reference (see [`registry`]).

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::BuildInfo;
use bollard::query_parameters::{
    BuildImageOptions, BuildImageOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bytes::Bytes;
use empire_core::build::{BuildRequest, BuiltImage, ImageBuilder};
use empire_core::progress::Progress;
use futures_util::StreamExt;
use tokio::sync::mpsc;

pub mod buildpack;
mod context;
pub mod dockerignore;
pub mod ecr;
mod error;
pub mod lines;
pub mod registry;
pub mod slug;
pub mod stack;

pub use ecr::EcrSettings;
pub use error::BuilderError;
pub use registry::{Registry, RegistryAuth, RegistryConfig, RegistryError};
pub use slug::cache_volume_name;
pub use stack::{BuildpackConfig, STACK_BUILD_IMAGE, STACK_RUN_IMAGE};

use crate::lines::LineSplitter;

/// How long the engine may take to read the build context and start answering: contexts
/// can be large, so this is much longer than bollard's default of two minutes. Once the
/// engine answers, a build may run as long as it needs.
const BUILD_REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How many context chunks may wait for the engine to read them.
const CONTEXT_CHANNEL_DEPTH: usize = 4;

/// The tag an app's release image gets: `empire/<app>:v<N>`.
pub fn image_tag(app: &str, version: u32) -> String {
    format!("empire/{app}:v{version}")
}

/// Builds images from commits on a Docker engine.
#[derive(Debug, Clone)]
pub struct DockerBuilder {
    docker: Docker,
    buildpacks: std::sync::Arc<BuildpackConfig>,
    /// Where built images are pushed, if anywhere.
    registry: Option<std::sync::Arc<Registry>>,
}

impl DockerBuilder {
    /// Connects to the local engine, honouring `DOCKER_HOST` (`unix://…`, a socket path,
    /// or `tcp://…`), and negotiates the API version.
    pub async fn connect() -> Result<Self, BuilderError> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|host| !host.is_empty());
        let shown = host
            .clone()
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
        let connect_error = |source| BuilderError::Connect {
            host: shown.clone(),
            source,
        };
        let docker = match host.as_deref() {
            None => Docker::connect_with_local_defaults(),
            Some(path) if path.starts_with('/') => {
                Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
            }
            Some(host) => Docker::connect_with_host(host),
        }
        .map_err(connect_error)?;
        let docker = docker.negotiate_version().await.map_err(connect_error)?;
        Ok(Self::from_docker(docker))
    }

    /// Wraps a client the caller already has, so the binary can share one.
    pub fn from_docker(docker: Docker) -> Self {
        DockerBuilder {
            docker,
            buildpacks: std::sync::Arc::new(BuildpackConfig::default()),
            registry: None,
        }
    }

    /// Pushes every built image to this registry; builds then return the image's digest
    /// reference, `<registry>/<prefix>/<app>@sha256:…`.
    pub fn with_registry(mut self, registry: Registry) -> Self {
        self.registry = Some(std::sync::Arc::new(registry));
        self
    }

    /// The registry built images are pushed to, if any.
    pub fn registry(&self) -> Option<&Registry> {
        self.registry.as_deref()
    }

    /// Uses these stack images, shipped buildpacks and CA bundle for buildpack builds
    /// (the defaults are [`BuildpackConfig::default`]).
    pub fn with_buildpack_config(mut self, config: BuildpackConfig) -> Self {
        self.buildpacks = std::sync::Arc::new(config);
        self
    }

    /// How buildpack builds are set up.
    pub fn buildpack_config(&self) -> &BuildpackConfig {
        &self.buildpacks
    }

    /// The client this builder uses.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Builds the request's commit, with errors in the builder's own terms. The
    /// [`ImageBuilder`] implementation maps them onto [`empire_core::Error`].
    pub async fn build_image(
        &self,
        request: &BuildRequest,
        progress: &Progress,
    ) -> Result<BuiltImage, BuilderError> {
        let tag = image_tag(request.app.as_str(), request.version);

        let repo_path = request.repo_path.clone();
        let object_dirs = request.object_dirs.clone();
        let commit = request.commit.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            context::prepare(&repo_path, &object_dirs, &commit)
        })
        .await??;
        if !prepared.dockerfile {
            return self
                .build_with_buildpacks(request, prepared, progress)
                .await;
        }
        let context::Prepared {
            source,
            procfile,
            short,
            ..
        } = prepared;

        let step = progress.step("Building image from Dockerfile");
        tracing::debug!(image = %tag, commit = %short, "building from Dockerfile");

        let labels = HashMap::from([
            ("empire.app", request.app.to_string()),
            ("empire.release", request.version.to_string()),
        ]);
        // `pull` stays unset (false): base images are local, nothing can be pulled.
        let options = BuildImageOptionsBuilder::new()
            .dockerfile("Dockerfile")
            .t(&tag)
            .rm(true)
            .forcerm(true)
            .nocache(request.no_cache)
            .labels(&labels)
            .build();

        let docker = self.docker.clone().with_timeout(BUILD_REQUEST_TIMEOUT);
        let mut source = source;
        let mut retried = false;
        let image_id = loop {
            let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CONTEXT_CHANNEL_DEPTH);
            let producer = tokio::task::spawn_blocking(move || {
                let produced = context::stream_tar(&source, tx);
                (source, produced)
            });
            let BuildOutcome {
                result,
                image_id,
                containers,
            } = run_build(&docker, &tag, options.clone(), rx, progress).await;
            let (returned, produced) = producer.await?;
            source = returned;
            let failure = match (result, produced) {
                // The context could not be written: that explains whatever Docker said.
                (_, Err(err)) if !matches!(err, BuilderError::ContextClosed) => err,
                (Err(err), _) => err,
                (Ok(()), _) => break image_id,
            };
            self.remove_containers(&containers).await;
            if retried || !matches!(&failure, BuilderError::Step(m) if lost_cached_layer(m)) {
                return Err(failure);
            }
            progress.detail(
                "A cached layer was removed while this build used it (an image removed \
                 meanwhile); building again",
            );
            retried = true;
        };

        let image_id = match image_id {
            Some(id) => id,
            None => self
                .docker
                .inspect_image(&tag)
                .await
                .map_err(|source| BuilderError::Inspect {
                    image: tag.clone(),
                    source,
                })?
                .id
                .unwrap_or_default(),
        };
        step.done(format!("Built {tag}"));
        Ok(BuiltImage {
            image: tag,
            image_id,
            procfile,
        })
    }

    /// Removes the intermediate containers a failed build may have left behind (the
    /// engine's `forcerm` normally has; a vanished container is fine).
    async fn remove_containers(&self, ids: &[String]) {
        for id in ids {
            let options = RemoveContainerOptionsBuilder::new()
                .force(true)
                .v(true)
                .build();
            match self.docker.remove_container(id, Some(options)).await {
                Ok(()) => tracing::debug!(container = %id, "removed leftover build container"),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(err) => {
                    tracing::warn!(container = %id, error = %err, "removing build container")
                }
            }
        }
    }
}

#[async_trait]
impl ImageBuilder for DockerBuilder {
    async fn build(
        &self,
        request: &BuildRequest,
        progress: &Progress,
    ) -> empire_core::Result<BuiltImage> {
        let result = self.build_image(request, progress).await;
        // Whatever happened, leave no untagged images of this app's builds behind.
        self.prune_dangling(request.app.as_str()).await;
        let built = result?;
        let Some(registry) = &self.registry else {
            return Ok(built);
        };
        let image = self
            .push_to_registry(
                registry,
                request.app.as_str(),
                request.version,
                &built.image,
                progress,
            )
            .await?;
        Ok(BuiltImage { image, ..built })
    }

    async fn prune(
        &self,
        app: &empire_core::app::AppName,
        keep: &[u32],
    ) -> empire_core::Result<()> {
        self.prune_images(app, keep).await?;
        self.prune_registry_tags(app, keep).await?;
        Ok(())
    }
}

/// What the build stream said.
struct BuildOutcome {
    result: Result<(), BuilderError>,
    image_id: Option<String>,
    /// Intermediate containers the build announced (`---> Running in <id>`).
    containers: Vec<String>,
}

/// Runs the build request with the context chunks from `context` as its body, and relays
/// the output as it arrives.
async fn run_build(
    docker: &Docker,
    tag: &str,
    options: BuildImageOptions,
    context: mpsc::Receiver<io::Result<Bytes>>,
    progress: &Progress,
) -> BuildOutcome {
    let body =
        bollard::body_try_stream(futures_util::stream::unfold(context, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        }));
    let mut outcome = BuildOutcome {
        result: Ok(()),
        image_id: None,
        containers: Vec::new(),
    };
    let mut splitter = LineSplitter::new();
    let mut stream = docker.build_image(options, None, Some(body));
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream.as_deref() {
                    for line in splitter.push(text) {
                        relay(&line, progress, &mut outcome);
                    }
                }
                if let Some(line) = status_line(&info) {
                    relay(&line, progress, &mut outcome);
                }
                if let Some(id) = info.aux.and_then(|aux| aux.id) {
                    outcome.image_id = Some(id);
                }
            }
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                outcome.result = Err(BuilderError::Step(error));
                break;
            }
            Err(source) => {
                outcome.result = Err(BuilderError::Docker {
                    image: tag.to_string(),
                    source,
                });
                break;
            }
        }
    }
    if let Some(line) = splitter.finish() {
        relay(&line, progress, &mut outcome);
    }
    outcome
}

/// Whether a failed build step says a layer it had taken from the cache is gone: the
/// classic builder does not hold the layers it reuses, so removing another image that
/// shares them (a release pruned, an app destroyed) can pull one away mid-build. The
/// same build then succeeds without that layer in the cache.
fn lost_cached_layer(message: &str) -> bool {
    message.contains("failed to get digest sha256:") || message.contains("No such image: sha256:")
}

/// Sends one output line to the progress and notes intermediate containers.
fn relay(line: &str, progress: &Progress, outcome: &mut BuildOutcome) {
    if let Some(id) = intermediate_container(line) {
        outcome.containers.push(id.to_string());
    }
    progress.detail(line);
}

/// The container id in a ` ---> Running in 0123abcd` line.
fn intermediate_container(line: &str) -> Option<&str> {
    let id = line.trim().strip_prefix("---> Running in ")?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// A `status` message without a progress bar, as one line.
fn status_line(info: &BuildInfo) -> Option<String> {
    let status = info.status.as_deref()?.trim_end();
    let has_bar = info
        .progress_detail
        .as_ref()
        .is_some_and(|detail| detail.current.is_some() || detail.total.is_some());
    if status.is_empty() || has_bar {
        return None;
    }
    Some(match info.id.as_deref() {
        Some(id) if !id.is_empty() => format!("{id}: {status}"),
        _ => status.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_a_vanished_cached_layer_from_other_failures() {
        assert!(lost_cached_layer(
            "failed to get digest sha256:0987b94e2db0266b28f3d8f85cdc930c1280470d3395c5a102fd4d8fb346636d: \
             open /var/lib/docker/image/overlay2/imagedb/content/sha256/0987b94e: no such file or directory"
        ));
        assert!(lost_cached_layer(
            "No such image: sha256:0987b94e2db0266b28f3d8f85cdc930c1280470d3395c5a102fd4d8fb346636d"
        ));
        assert!(!lost_cached_layer(
            "The command '/bin/sh -c make' returned a non-zero code: 2"
        ));
        assert!(!lost_cached_layer("No such image: empire/base:latest"));
    }

    #[test]
    fn tags_images_by_app_and_version() {
        assert_eq!(image_tag("web", 12), "empire/web:v12");
    }

    #[test]
    fn finds_intermediate_containers() {
        assert_eq!(
            intermediate_container(" ---> Running in 5f3c2a1b9d0e"),
            Some("5f3c2a1b9d0e")
        );
        assert_eq!(intermediate_container(" ---> 5f3c2a1b9d0e"), None);
        assert_eq!(intermediate_container("Running in the family"), None);
        assert_eq!(intermediate_container(" ---> Running in not-hex"), None);
    }

    #[test]
    fn status_lines_skip_progress_bars() {
        let plain = BuildInfo {
            status: Some("Pulling from library/x".into()),
            id: Some("latest".into()),
            ..Default::default()
        };
        assert_eq!(
            status_line(&plain).as_deref(),
            Some("latest: Pulling from library/x")
        );
        let bar = BuildInfo {
            status: Some("Downloading".into()),
            progress_detail: Some(bollard::models::ProgressDetail {
                current: Some(1),
                total: Some(10),
            }),
            ..Default::default()
        };
        assert_eq!(status_line(&bar), None);
        assert_eq!(status_line(&BuildInfo::default()), None);
    }
}
