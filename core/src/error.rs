//! The one error type of `empire-core`, shared by the traits other crates implement.

/// A boxed error from an external system, kept as the source of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the core, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A named thing does not exist.
    #[error("{kind} not found: {name}")]
    NotFound {
        /// What kind of thing was looked up (`app`, `release`, `key`, …).
        kind: &'static str,
        /// The name or id that was asked for.
        name: String,
    },
    /// A value given by a user is not acceptable.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field or argument that is wrong.
        field: &'static str,
        /// Why it is wrong.
        message: String,
    },
    /// The thing exists already or the operation conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The user may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No valid credentials were given.
    #[error("{0}")]
    Unauthorized(String),
    /// The build failed; the message says why.
    #[error("build failed: {0}")]
    Build(String),
    /// The release failed to roll out; the message says why.
    #[error("deploy failed: {0}")]
    Deploy(String),
    /// The deploy was cancelled before its rollout started.
    #[error("deploy cancelled: {0}")]
    Cancelled(String),
    /// The store failed.
    #[error("store error: {0}")]
    Store(String),
    /// An external system (Docker, a registry, AWS) failed.
    #[error("{system} error: {message}")]
    Backend {
        /// Which system failed (`docker`, `registry`, …).
        system: &'static str,
        /// What it said.
        message: String,
    },
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        Error::NotFound {
            kind,
            name: name.into(),
        }
    }

    /// Shorthand for [`Error::Backend`].
    pub fn backend(system: &'static str, message: impl std::fmt::Display) -> Self {
        Error::Backend {
            system,
            message: message.to_string(),
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        Error::Store(err.to_string())
    }
}
