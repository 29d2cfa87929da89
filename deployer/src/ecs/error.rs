//! Errors of the `ecs` backend, and retries of the AWS calls that fail for a moment.

use std::future::Future;
use std::time::Duration;

use aws_sdk_ecs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use tracing::debug;

/// Everything the `ecs` backend can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EcsError {
    /// An AWS call failed.
    #[error("aws error while {context}: {message}")]
    Aws {
        /// What the backend was doing (`registering acme_web`).
        context: String,
        /// The AWS error code (`ThrottlingException`), when there was one.
        code: Option<String>,
        /// What AWS said.
        message: String,
    },
    /// The settings are not usable; the message names each problem.
    #[error("invalid ecs settings: {0}")]
    Config(String),
    /// The release cannot be mapped onto ECS (a bad cron schedule, …).
    #[error("{0}")]
    Plan(String),
    /// A rollout failed or timed out; the previous release keeps serving.
    #[error("{0}")]
    Rollout(String),
    /// Something the backend needs was not found.
    #[error("{0}")]
    NotFound(String),
    /// The operation is not possible here.
    #[error("{0}")]
    Unsupported(String),
}

impl EcsError {
    /// The AWS error code, if this is an AWS error with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            EcsError::Aws { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Wraps an SDK error with what the backend was doing.
    pub fn aws<E, R>(context: impl Into<String>, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let code = err.code().map(str::to_string);
        let message = match err.message() {
            Some(message) => match &code {
                Some(code) => format!("{code}: {message}"),
                None => message.to_string(),
            },
            None => match &code {
                Some(code) => code.clone(),
                None => DisplayErrorContext(&err).to_string(),
            },
        };
        EcsError::Aws {
            context: context.into(),
            code,
            message,
        }
    }

    /// Whether the same call may well succeed if made again a little later.
    pub fn is_transient(&self) -> bool {
        match self {
            EcsError::Aws { code, message, .. } => match code.as_deref() {
                Some(code) => TRANSIENT_CODES.contains(&code),
                // No code: the request did not get an answer (connection, timeout).
                None => !message.is_empty(),
            },
            _ => false,
        }
    }
}

impl From<EcsError> for empire_core::Error {
    fn from(err: EcsError) -> Self {
        match err {
            EcsError::Rollout(message) | EcsError::Plan(message) => {
                empire_core::Error::Deploy(message)
            }
            EcsError::Config(message) => empire_core::Error::invalid("ecs settings", message),
            EcsError::NotFound(message) => empire_core::Error::not_found("aws resource", message),
            EcsError::Unsupported(message) => empire_core::Error::Conflict(message),
            err @ EcsError::Aws { .. } => empire_core::Error::backend("aws", err),
        }
    }
}

/// Error codes that mean "slow down" or "try again".
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "PriorRequestNotComplete",
    "TooManyUpdates",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "InternalError",
    "InternalServerError",
    "ServerException",
    "OperationAbortedException",
    "ConcurrentModificationException",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// How calls are retried: exponential backoff with full jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Attempts in all (the first one included).
    pub attempts: u32,
    /// The first delay's upper bound.
    pub base: Duration,
    /// The largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            attempts: 8,
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay before retry number `retry` (0-based): uniformly random up to
    /// `min(max, base * 2^retry)`.
    pub fn delay(&self, retry: u32) -> Duration {
        let cap = self
            .base
            .saturating_mul(2u32.saturating_pow(retry))
            .min(self.max);
        let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::random_range(0..=millis))
    }

    /// Runs `call` until it succeeds, fails for good, or the attempts run out.
    pub async fn retry<T, F, Fut>(&self, mut call: F) -> Result<T, EcsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, EcsError>>,
    {
        let mut retry = 0;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(err) if err.is_transient() && retry + 1 < self.attempts => {
                    let delay = self.delay(retry);
                    debug!(error = %err, ?delay, "transient aws error; retrying");
                    tokio::time::sleep(delay).await;
                    retry += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// Runs one SDK call with the default backoff, wrapping its error with `context`.
pub async fn call<T, E, R, F, Fut>(context: &str, mut send: F) -> Result<T, EcsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, R>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    Backoff::default()
        .retry(|| {
            let sent = send();
            async move { sent.await.map_err(|e| EcsError::aws(context, e)) }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn aws(code: Option<&str>) -> EcsError {
        EcsError::Aws {
            context: "testing".into(),
            code: code.map(str::to_string),
            message: "boom".into(),
        }
    }

    #[tokio::test]
    async fn retries_throttling_then_succeeds() {
        let calls = AtomicU32::new(0);
        let backoff = Backoff {
            attempts: 5,
            base: Duration::from_millis(1),
            max: Duration::from_millis(4),
        };
        let value = backoff
            .retry(|| async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(aws(Some("ThrottlingException"))),
                    1 => Err(aws(Some("Throttling"))),
                    _ => Ok(7),
                }
            })
            .await
            .unwrap();
        assert_eq!(value, 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_on_other_errors_and_after_the_attempts() {
        let backoff = Backoff {
            attempts: 3,
            base: Duration::from_millis(1),
            max: Duration::from_millis(2),
        };
        let calls = AtomicU32::new(0);
        let err = backoff
            .retry(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(aws(Some("ClientException")))
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("ClientException"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let err = backoff
            .retry(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(aws(Some("TooManyRequestsException")))
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("TooManyRequestsException"));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn delays_grow_and_stay_under_the_cap() {
        let backoff = Backoff {
            attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for retry in 0..10 {
            let cap = Duration::from_millis(100 * 2u64.pow(retry)).min(Duration::from_secs(1));
            for _ in 0..20 {
                assert!(backoff.delay(retry) <= cap);
            }
        }
        // Jitter: not every delay is the same.
        let delays: std::collections::HashSet<Duration> =
            (0..50).map(|_| backoff.delay(5)).collect();
        assert!(delays.len() > 1);
    }

    #[test]
    fn maps_onto_core_errors() {
        let err: empire_core::Error = EcsError::Rollout("web failed".into()).into();
        assert_eq!(err.to_string(), "deploy failed: web failed");
        let err: empire_core::Error = aws(Some("X")).into();
        assert!(
            err.to_string()
                .starts_with("aws error: aws error while testing"),
            "{err}"
        );
    }
}
