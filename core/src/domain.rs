//! Custom domains: hostnames the router serves for an app.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::app::AppName;
use crate::error::{Error, Result};

/// A hostname attached to an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    /// The hostname, lowercase (`www.example.com`).
    pub hostname: String,
    /// The app it routes to.
    pub app: AppName,
    /// When it was added.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Validates and lowercases a hostname: dot-separated DNS labels of letters, digits and
/// dashes (a leading `*.` wildcard label is not accepted), at most 253 characters.
pub fn normalize_hostname(hostname: &str) -> Result<String> {
    let host = hostname.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(valid_label) {
        return Err(Error::invalid(
            "hostname",
            format!("{hostname:?} is not a valid hostname"),
        ));
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_validates_hostnames() {
        assert_eq!(
            normalize_hostname("WWW.Example.com.").unwrap(),
            "www.example.com"
        );
        assert_eq!(normalize_hostname("localhost").unwrap(), "localhost");
        for bad in [
            "",
            "a..b",
            "-a.com",
            "a-.com",
            "a b.com",
            "*.example.com",
            "x/y",
        ] {
            assert!(normalize_hostname(bad).is_err(), "{bad}");
        }
    }
}
