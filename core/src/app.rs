//! Applications and their names.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// A validated application name: a DNS label of 1 to 30 characters, lowercase letters,
/// digits and dashes, starting with a letter and not ending with a dash.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppName(String);

impl AppName {
    /// Validates `name` against `^[a-z]([a-z0-9-]{0,28}[a-z0-9])?$`.
    pub fn new(name: &str) -> Result<Self> {
        let bytes = name.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 30
            && bytes[0].is_ascii_lowercase()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[bytes.len() - 1] != b'-';
        if valid {
            Ok(AppName(name.to_string()))
        } else {
            Err(Error::invalid(
                "app name",
                format!(
                    "{name:?} must be 1-30 lowercase letters, digits or dashes, start with a letter and not end with a dash"
                ),
            ))
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for AppName {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        AppName::new(&value)
    }
}

impl From<AppName> for String {
    fn from(value: AppName) -> Self {
        value.0
    }
}

impl std::str::FromStr for AppName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        AppName::new(s)
    }
}

/// An application as the store records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    /// Store id.
    pub id: i64,
    /// The app's name.
    pub name: AppName,
    /// The version of the release that serves now, if any.
    pub current_release: Option<u32>,
    /// When the app was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for name in [
            "a",
            "web",
            "my-app-2",
            "a1",
            "abcdefghijklmnopqrstuvwxyz1234",
        ] {
            assert!(AppName::new(name).is_ok(), "{name} should be valid");
        }
    }

    #[test]
    fn refuses_bad_names() {
        for name in [
            "",
            "1app",
            "-app",
            "app-",
            "App",
            "my_app",
            "a.b",
            "app/x",
            "..",
            "abcdefghijklmnopqrstuvwxyz12345",
        ] {
            let err = AppName::new(name).unwrap_err().to_string();
            assert!(err.contains("invalid app name"), "{name}: {err}");
        }
    }
}
