//! Errors of the `ecs` backend, and retries of the AWS calls that fail for a moment.

use std::future::Future;
use std::time::Duration;

use aws_sdk_ecs::config::http::HttpResponse;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
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
        /// Throttling, a server error or no answer: worth another try.
        transient: bool,
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
    pub fn aws<E>(context: impl Into<String>, err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let code = err.code().map(str::to_string);
        let message = match (err.message(), &code) {
            (Some(message), Some(code)) => format!("{code}: {message}"),
            (Some(message), None) => message.to_string(),
            (None, Some(code)) => code.clone(),
            // No service error: say what went wrong without the raw response.
            (None, None) => {
                let what = match &err {
                    SdkError::ConstructionFailure(_) => "the request could not be built",
                    SdkError::TimeoutError(_) => "the request timed out",
                    SdkError::DispatchFailure(_) => "the request could not be sent",
                    SdkError::ResponseError(_) => UNREADABLE,
                    _ => "the call failed",
                };
                let mut text = what.to_string();
                let mut source = std::error::Error::source(&err);
                while let Some(cause) = source {
                    text.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                text
            }
        };
        let transient = match &err {
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => true,
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                code.as_deref()
                    .is_some_and(|c| TRANSIENT_CODES.contains(&c))
                    || status >= 500
                    || status == 429
            }
            _ => false,
        };
        let mut message = message;
        if message.len() > 500 {
            let mut cut = 500;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        EcsError::Aws {
            context: context.into(),
            code,
            message,
            transient,
        }
    }

    /// Whether AWS answered but the SDK could not read the answer (an emulator that
    /// strays from the API): the call itself may have taken effect.
    pub fn is_unreadable_response(&self) -> bool {
        matches!(self, EcsError::Aws { code: None, message, .. }
            if message.starts_with(UNREADABLE))
    }

    /// Whether the same call may well succeed if made again a little later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            EcsError::Aws {
                transient: true,
                ..
            }
        )
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

/// How an answer the SDK could not read is described.
const UNREADABLE: &str = "the response could not be read";

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
pub async fn call<T, E, F, Fut>(context: &str, mut send: F) -> Result<T, EcsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
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
            transient: code.is_some_and(|c| TRANSIENT_CODES.contains(&c)),
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

    fn response(status: u16) -> HttpResponse {
        HttpResponse::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(status).unwrap(),
            aws_smithy_types::body::SdkBody::from("{\"cpu\": 256}"),
        )
    }

    fn service_error(code: &str, status: u16) -> EcsError {
        let err = aws_sdk_ecs::operation::list_services::ListServicesError::generic(
            aws_sdk_ecs::error::ErrorMetadata::builder()
                .code(code)
                .message("it said no")
                .build(),
        );
        EcsError::aws(
            "listing services",
            SdkError::service_error(err, response(status)),
        )
    }

    #[test]
    fn classifies_sdk_errors() {
        let throttled = service_error("ThrottlingException", 400);
        assert!(throttled.is_transient());
        assert_eq!(
            throttled.to_string(),
            "aws error while listing services: ThrottlingException: it said no"
        );
        assert!(service_error("ServiceUnavailable", 503).is_transient());
        assert!(service_error("Whatever", 502).is_transient());
        assert!(!service_error("ClientException", 400).is_transient());

        // A response the SDK cannot read: not retried, and no raw body in the message.
        let unreadable: SdkError<
            aws_sdk_ecs::operation::list_services::ListServicesError,
            HttpResponse,
        > = SdkError::response_error("expected string", response(200));
        let err = EcsError::aws("listing services", unreadable);
        assert!(!err.is_transient());
        assert!(err.is_unreadable_response());
        assert!(!service_error("ClientException", 400).is_unreadable_response());
        assert_eq!(
            err.to_string(),
            "aws error while listing services: the response could not be read: expected string"
        );
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
