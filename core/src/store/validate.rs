//! Checks both stores run on what they are asked to record, so that bad input is an
//! [`Error::Invalid`] naming the field, never a database error.

use crate::domain::normalize_hostname;
use crate::error::{Error, Result};
use crate::event::NewEvent;
use crate::formation::ProcessFormation;
use crate::release::ConfigVars;

/// Config var names are non-empty and hold no `=` or NUL; values hold no NUL (neither
/// can reach a process environment).
pub(crate) fn config(config: &ConfigVars) -> Result<()> {
    for (name, value) in config {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(Error::invalid(
                "config var",
                format!("{name:?} is not a variable name (it must be non-empty, without = or NUL)"),
            ));
        }
        if value.contains('\0') {
            return Err(Error::invalid(
                "config var",
                format!("the value of {name} contains a NUL byte"),
            ));
        }
    }
    Ok(())
}

/// Process type names as a Procfile has them: letters, digits, `_` and `-`.
pub(crate) fn formation(entries: &[ProcessFormation]) -> Result<()> {
    for entry in entries {
        let process = entry.process.as_str();
        if process.is_empty()
            || process.len() > 63
            || !process
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Error::invalid(
                "process",
                format!("{process:?} is not a process type name"),
            ));
        }
        if entry.size.cpu_shares == 0
            || entry.size.memory_bytes == 0
            || i64::try_from(entry.size.memory_bytes).is_err()
        {
            return Err(Error::invalid(
                "size",
                format!("{} is not a size for {process}", entry.size),
            ));
        }
        if i32::try_from(entry.quantity).is_err() {
            return Err(Error::invalid(
                "quantity",
                format!("{} instances of {process} is too many", entry.quantity),
            ));
        }
    }
    Ok(())
}

/// The normalized hostname.
pub(crate) fn hostname(hostname: &str) -> Result<String> {
    normalize_hostname(hostname)
}

/// A SHA-256 digest as 64 hex digits, lowercased.
pub(crate) fn digest(digest: &str) -> Result<String> {
    if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(digest.to_ascii_lowercase())
    } else {
        Err(Error::invalid(
            "token digest",
            "expected the SHA-256 of the token as 64 hex digits",
        ))
    }
}

/// A name that must not be blank (users, descriptions of tokens are free text).
pub(crate) fn not_blank(field: &'static str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        Err(Error::invalid(field, "must not be empty"))
    } else {
        Ok(())
    }
}

/// An event says who did what.
pub(crate) fn event(event: &NewEvent) -> Result<()> {
    not_blank("event user", &event.user)?;
    not_blank("event action", &event.action)
}

/// Versions are stored as 32-bit signed integers.
pub(crate) fn version(version: u32) -> Option<i32> {
    i32::try_from(version).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formation::ProcessSize;

    #[test]
    fn refuses_what_no_store_can_keep() {
        assert!(config(&ConfigVars::from([("A".into(), "1".into())])).is_ok());
        for (name, value) in [("", "x"), ("A=B", "x"), ("A\0", "x"), ("A", "x\0y")] {
            let vars = ConfigVars::from([(name.to_string(), value.to_string())]);
            let err = config(&vars).unwrap_err();
            assert!(err.to_string().starts_with("invalid config var"), "{err}");
        }
        let entry = |process: &str, quantity: u32| ProcessFormation {
            process: process.to_string(),
            quantity,
            size: ProcessSize::X1,
        };
        assert!(formation(&[entry("web", 2), entry("worker_1", 0)]).is_ok());
        assert!(formation(&[entry("", 1)]).is_err());
        assert!(formation(&[entry("a b", 1)]).is_err());
        assert!(formation(&[entry("web", u32::MAX)]).is_err());
        assert_eq!(digest(&"AB".repeat(32)).unwrap(), "ab".repeat(32));
        assert!(digest("abc").is_err());
        assert!(digest(&"g".repeat(64)).is_err());
    }
}
