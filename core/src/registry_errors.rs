//! How an image registry's failures read in the messages an engine passes on (the
//! registry's own `unauthorized:`/`denied:` errors and Go's network errors), shared by
//! the builder, which pushes, and the deployer, which pulls.

/// Whether `message` says the registry refused the credentials (or had none).
pub fn refused_credentials(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "denied:",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// A one-line reason when `message` says the registry cannot be reached.
pub fn unreachable_reason(message: &str) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    let cause = [
        "connection refused",
        "no such host",
        "i/o timeout",
        "connection reset by peer",
        "network is unreachable",
        "no route to host",
        "server gave http response to https client",
        "context deadline exceeded",
    ]
    .into_iter()
    .find(|cause| lower.contains(cause))?;
    Some(format!("cannot reach the registry ({cause})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_refusals_and_unreachable_registries() {
        assert!(refused_credentials("unauthorized: authentication required"));
        assert!(refused_credentials("no basic auth credentials"));
        assert!(refused_credentials(
            "denied: requested access to the resource is denied"
        ));
        assert!(!refused_credentials("manifest invalid"));
        assert_eq!(
            unreachable_reason(
                "Get \"http://127.0.0.1:5999/v2/\": dial tcp 127.0.0.1:5999: connect: connection refused"
            )
            .as_deref(),
            Some("cannot reach the registry (connection refused)")
        );
        assert_eq!(unreachable_reason("manifest invalid"), None);
    }
}
