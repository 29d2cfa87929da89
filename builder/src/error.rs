//! The builder's errors and how they map onto [`empire_core::Error`].

use std::path::PathBuf;

use empire_core::Error;

use crate::dockerignore::PatternError;

/// Everything that can go wrong while building an image.
#[derive(Debug, thiserror::Error)]
pub enum BuilderError {
    /// The Docker client could not be set up or the daemon did not answer.
    #[error("connecting to the docker daemon at {host}: {source}")]
    Connect {
        /// The daemon address tried (`DOCKER_HOST` or the default socket).
        host: String,
        /// What bollard said.
        #[source]
        source: bollard::errors::Error,
    },
    /// The app's repository could not be opened.
    #[error("opening repository {}: {source}", path.display())]
    OpenRepo {
        /// The repository path.
        path: PathBuf,
        /// What git said.
        #[source]
        source: git2::Error,
    },
    /// An extra object directory (a push quarantine) could not be added.
    #[error("adding object directory {} to {}: {source}", dir.display(), repo.display())]
    ObjectDir {
        /// The object directory.
        dir: PathBuf,
        /// The repository path.
        repo: PathBuf,
        /// What git said.
        #[source]
        source: git2::Error,
    },
    /// The commit to build does not exist or is not a commit.
    #[error("reading commit {commit} from {}: {source}", repo.display())]
    Commit {
        /// The commit as requested (shortened).
        commit: String,
        /// The repository path.
        repo: PathBuf,
        /// What git said.
        #[source]
        source: git2::Error,
    },
    /// An object of the commit's tree could not be read.
    #[error("reading {path} in commit {commit}: {source}")]
    Tree {
        /// The short commit id.
        commit: String,
        /// The path inside the tree.
        path: String,
        /// What git said.
        #[source]
        source: git2::Error,
    },
    /// The commit's `Procfile` is not UTF-8 text.
    #[error("the Procfile in {commit} is not valid UTF-8 text")]
    ProcfileNotUtf8 {
        /// The short commit id.
        commit: String,
    },
    /// The commit's `.dockerignore` has an invalid line.
    #[error("invalid .dockerignore in {commit}: {source}")]
    DockerIgnore {
        /// The short commit id.
        commit: String,
        /// The bad line.
        #[source]
        source: PatternError,
    },
    /// Writing the build context failed.
    #[error("writing the build context of {commit}: {source}")]
    Context {
        /// The short commit id.
        commit: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Docker stopped reading the build context before it was complete.
    #[error("the docker daemon stopped reading the build context")]
    ContextClosed,
    /// A Dockerfile step failed; the message is Docker's.
    #[error("{0}")]
    Step(String),
    /// The daemon refused or failed the build request.
    #[error("building {image}: {source}")]
    Docker {
        /// The image tag being built.
        image: String,
        /// What bollard said.
        #[source]
        source: bollard::errors::Error,
    },
    /// The build ended without reporting an image and the tag cannot be inspected.
    #[error("inspecting built image {image}: {source}")]
    Inspect {
        /// The image tag.
        image: String,
        /// What bollard said.
        #[source]
        source: bollard::errors::Error,
    },
    /// A buildpack build failed (no buildpack detected, a failed compile, a missing
    /// stack image, …).
    #[error(transparent)]
    Buildpack(#[from] crate::buildpack::BuildpackError),
    /// A background task of the build panicked or was cancelled.
    #[error("build task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl BuilderError {
    /// Whether the user can fix this by changing what they push (a bad commit, a failing
    /// Dockerfile step or buildpack, an undetected app), as opposed to a fault of the
    /// engine or the gateway.
    pub fn is_user_error(&self) -> bool {
        match self {
            BuilderError::Buildpack(err) => err.is_user_error(),
            BuilderError::Commit { .. }
            | BuilderError::ProcfileNotUtf8 { .. }
            | BuilderError::DockerIgnore { .. }
            | BuilderError::Step(_) => true,
            // The daemon answers a Dockerfile it cannot parse, or an instruction it cannot
            // run, with a 4xx status before streaming anything.
            BuilderError::Docker {
                source: bollard::errors::Error::DockerResponseServerError { status_code, .. },
                ..
            } => (400..500).contains(status_code),
            _ => false,
        }
    }
}

impl From<BuilderError> for Error {
    fn from(err: BuilderError) -> Self {
        if err.is_user_error() {
            return match err {
                BuilderError::Step(message) => Error::Build(message),
                BuilderError::Docker {
                    source: bollard::errors::Error::DockerResponseServerError { message, .. },
                    ..
                } => Error::Build(message),
                other => Error::Build(other.to_string()),
            };
        }
        let system = match err {
            BuilderError::OpenRepo { .. }
            | BuilderError::ObjectDir { .. }
            | BuilderError::Tree { .. }
            | BuilderError::Context { .. } => "git",
            _ => "docker",
        };
        Error::backend(system, err)
    }
}
