//! The deployer's error type and its mapping onto [`empire_core::Error`].

/// Everything the deployer can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DeployerError {
    /// The Docker engine could not be reached or its API version negotiated.
    #[error("cannot connect to the docker engine: {0}")]
    Connect(#[source] bollard::errors::Error),
    /// A Docker API call failed.
    #[error("docker error while {context}: {source}")]
    Docker {
        /// What the deployer was doing (`creating web.1`, `listing containers`, …).
        context: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
    /// The release's image does not exist on the engine.
    #[error("image {image} was not found on the docker engine")]
    ImageNotFound {
        /// The image reference.
        image: String,
    },
    /// The release's image is neither on the engine nor in a registry it could be
    /// pulled from (pruned, and not pushed anywhere or gone from there too).
    #[error("image {image} is not on the docker engine and {}", match registry {
        Some(registry) => format!("the registry {registry} does not hold it"),
        None => "no registry holds it".to_string(),
    })]
    ImageGone {
        /// The image reference the release records.
        image: String,
        /// The registry that was asked for it, if any.
        registry: Option<String>,
    },
    /// The release's image is not on the engine and pulling it from its registry failed
    /// (unreachable, credentials refused); the reason is one line.
    #[error("pulling image {image} from {registry} failed: {reason}")]
    Pull {
        /// The image reference the release records.
        image: String,
        /// The registry (and the endpoint pulled from, when it differs).
        registry: String,
        /// Why, in one line.
        reason: String,
    },
    /// A container could not be started (the engine refused to run its command).
    #[error("{instance} could not start: {message}")]
    StartFailed {
        /// `web.1`, …
        instance: String,
        /// What the engine said.
        message: String,
    },
    /// The release did not become healthy; the message says which process and why.
    #[error("{0}")]
    Unhealthy(String),
    /// An operation on several containers left some undone; the message lists them.
    #[error("{0}")]
    Incomplete(String),
    /// Copying the streams of an attached one-off process failed (the client went away).
    #[error("{context}: {source}")]
    Stream {
        /// What was being copied (`writing the output of run.1234`).
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The scheduler options are not usable.
    #[error("invalid deployer option {field}: {message}")]
    InvalidOption {
        /// The option.
        field: &'static str,
        /// Why it is wrong.
        message: String,
    },
}

impl DeployerError {
    /// Wraps a bollard error with what the deployer was doing.
    pub(crate) fn docker(context: impl Into<String>, source: bollard::errors::Error) -> Self {
        DeployerError::Docker {
            context: context.into(),
            source,
        }
    }
}

impl From<DeployerError> for empire_core::Error {
    fn from(err: DeployerError) -> Self {
        match err {
            DeployerError::ImageNotFound { .. }
            | DeployerError::ImageGone { .. }
            | DeployerError::Pull { .. }
            | DeployerError::StartFailed { .. }
            | DeployerError::Unhealthy(_) => empire_core::Error::Deploy(err.to_string()),
            DeployerError::InvalidOption { field, message } => {
                empire_core::Error::invalid(field, message)
            }
            DeployerError::Connect(_)
            | DeployerError::Docker { .. }
            | DeployerError::Stream { .. }
            | DeployerError::Incomplete(_) => empire_core::Error::backend("docker", err),
        }
    }
}

/// The HTTP status of a Docker API error, if the engine answered with one.
pub(crate) fn docker_status(err: &bollard::errors::Error) -> Option<u16> {
    match err {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The message of a Docker API error without bollard's decoration.
pub(crate) fn docker_message(err: &bollard::errors::Error) -> String {
    match err {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_onto_core_errors() {
        let err: empire_core::Error =
            DeployerError::Unhealthy("web.1 did not accept connections".into()).into();
        assert!(matches!(err, empire_core::Error::Deploy(_)));
        assert_eq!(
            err.to_string(),
            "deploy failed: web.1 did not accept connections"
        );

        let err: empire_core::Error = DeployerError::ImageNotFound {
            image: "x:1".into(),
        }
        .into();
        assert_eq!(
            err.to_string(),
            "deploy failed: image x:1 was not found on the docker engine"
        );

        let err: empire_core::Error = DeployerError::docker(
            "listing containers",
            bollard::errors::Error::DockerResponseServerError {
                status_code: 500,
                message: "boom".into(),
            },
        )
        .into();
        assert!(matches!(
            err,
            empire_core::Error::Backend {
                system: "docker",
                ..
            }
        ));
        assert!(err.to_string().contains("listing containers"), "{err}");
    }
}
