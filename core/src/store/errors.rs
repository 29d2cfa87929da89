//! The errors both stores return for the same situations, worded once.

use crate::app::AppName;
use crate::error::Error;

/// A hostname another app (or this one) already has.
pub(crate) fn domain_taken(hostname: &str, holder: &str) -> Error {
    Error::Conflict(format!(
        "hostname {hostname} is already attached to app {holder}"
    ))
}

/// The app does not have this hostname.
pub(crate) fn domain_not_found(hostname: &str, app: &AppName) -> Error {
    Error::not_found("domain", format!("{hostname} on app {app}"))
}

/// No token of `user` has this id.
pub(crate) fn token_not_found(user: &str, id: i64) -> Error {
    Error::not_found("token", format!("{id} of user {user}"))
}

/// No token has this digest (never created, or revoked).
pub(crate) fn unknown_token() -> Error {
    Error::not_found("token", "unknown or revoked")
}

/// Two tokens with one secret.
pub(crate) fn token_taken() -> Error {
    Error::Conflict("a token with this secret is already registered".to_string())
}

/// The user does not collaborate on the app.
pub(crate) fn collaborator_not_found(user: &str, app: &AppName) -> Error {
    Error::not_found("collaborator", format!("{user} on app {app}"))
}

/// A succeeded release stays in the history.
pub(crate) fn release_succeeded(app: &AppName, version: u32) -> Error {
    Error::Conflict(format!(
        "release {app} v{version} succeeded; a succeeded release cannot be deleted"
    ))
}

/// The release is not in a state that allows `status` next.
pub(crate) fn bad_transition(
    app: &AppName,
    version: u32,
    from: impl std::fmt::Display,
    to: impl std::fmt::Display,
) -> Error {
    Error::Conflict(format!(
        "release {app} v{version} cannot move from {from} to {to}"
    ))
}

/// A finished release's image is fixed.
pub(crate) fn image_fixed(app: &AppName, version: u32, status: impl std::fmt::Display) -> Error {
    Error::Conflict(format!(
        "release {app} v{version} is {status}; its image can no longer change"
    ))
}

/// Renewing a lease someone else took (or that was given back).
pub(crate) fn lease_lost(app: &AppName) -> Error {
    Error::Conflict(format!("deploy lease of {app} was lost"))
}

/// No release of that version.
pub(crate) fn release_not_found(app: &AppName, version: u32) -> Error {
    Error::not_found("release", format!("{app} v{version}"))
}
