//! The API's resources as the CLI reads them (only the fields it shows; `--json`
//! prints the answers whole).

use anyhow::{Context, Result};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Reads an answer as `T`.
pub fn typed<T: DeserializeOwned>(value: &Value) -> Result<T> {
    T::deserialize(value).with_context(|| format!("reading the API's answer {value}"))
}

/// A user as embedded in other resources.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserRef {
    /// The user name.
    #[serde(default)]
    pub name: String,
}

/// `GET /apps/{app}`.
#[derive(Debug, Clone, Deserialize)]
pub struct App {
    /// The app name.
    pub name: String,
    /// When it was created (RFC 3339).
    #[serde(default)]
    pub created_at: Option<String>,
    /// The release that serves, if any.
    #[serde(default)]
    pub current_release: Option<u32>,
    /// Where it answers.
    #[serde(default)]
    pub web_url: Option<String>,
    /// Where to push.
    #[serde(default)]
    pub git_url: Option<String>,
}

/// `GET /apps/{app}/releases/{version}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Release {
    /// `3` of v3.
    pub version: u32,
    /// `succeeded`, `failed`, `deploying`, …
    #[serde(default)]
    pub status: String,
    /// Whether it is the release that serves.
    #[serde(default)]
    pub current: bool,
    /// `Deploy 1a2b3c4`, `Set FOO config vars`, …
    #[serde(default)]
    pub description: String,
    /// The image it runs.
    #[serde(default)]
    pub image: Option<String>,
    /// The commit it was built from.
    #[serde(default)]
    pub commit: Option<String>,
    /// Why it failed.
    #[serde(default)]
    pub failure: Option<String>,
    /// Process types and their commands.
    #[serde(default)]
    pub process_types: Option<std::collections::BTreeMap<String, String>>,
    /// Who made it.
    #[serde(default)]
    pub user: UserRef,
    /// When (RFC 3339).
    #[serde(default)]
    pub created_at: Option<String>,
}

/// A release as the dyno list embeds it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReleaseRef {
    /// The version.
    #[serde(default)]
    pub version: Option<u32>,
}

/// `GET /apps/{app}/dynos` items.
#[derive(Debug, Clone, Deserialize)]
pub struct Dyno {
    /// `web.1`.
    pub name: String,
    /// `web`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// `up`, `starting`, …
    #[serde(default)]
    pub state: String,
    /// The command, if known.
    #[serde(default)]
    pub command: Option<String>,
    /// `1X`, …
    #[serde(default)]
    pub size: Option<String>,
    /// The release it runs.
    #[serde(default)]
    pub release: Option<ReleaseRef>,
    /// When it started.
    #[serde(default)]
    pub created_at: Option<String>,
}

/// `GET /apps/{app}/formation` items.
#[derive(Debug, Clone, Deserialize)]
pub struct Formation {
    /// The process type.
    #[serde(rename = "type")]
    pub kind: String,
    /// How many.
    pub quantity: u32,
    /// How large.
    #[serde(default)]
    pub size: String,
}

/// `GET /account/keys` items.
#[derive(Debug, Clone, Deserialize)]
pub struct Key {
    /// `SHA256:…`.
    pub fingerprint: String,
    /// The OpenSSH public key.
    #[serde(default)]
    pub public_key: String,
    /// Its comment.
    #[serde(default)]
    pub comment: String,
}
