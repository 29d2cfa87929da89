//! Outgoing webhooks: the dispatcher that posts recorded events to the webhooks that
//! want them.
//!
//! The store queues a delivery in the transaction that records an event, so nothing here
//! stands between a deploy and its end. The dispatcher claims due deliveries from the
//! store with a short lease (one gateway attempts a delivery at a time, even with several
//! sharing PostgreSQL), posts each with a timeout, a few at a time, and records every
//! attempt. Timeouts, connection errors, 408, 429 and 5xx answers are retried with
//! exponential backoff and jitter up to a limit; other answers are final. Pending
//! deliveries live in the store, so a restarted gateway resumes them.

pub mod body;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use empire_core::event::signature;
use empire_core::store::{
    AttemptResult, ClaimedDelivery, NewAttempt, RESPONSE_EXCERPT_BYTES, Store,
};
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How the dispatcher behaves.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Whose claims these are (the gateway id).
    pub owner: String,
    /// How long one attempt may take, connecting and reading the answer included.
    pub timeout: Duration,
    /// How many attempts a delivery gets before it fails.
    pub max_attempts: u32,
    /// The wait before the first retry; each further retry waits twice as long.
    pub backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// How many deliveries are attempted at once.
    pub concurrency: usize,
    /// How often the store is asked for due deliveries.
    pub poll: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            owner: "gateway".into(),
            timeout: Duration::from_secs(10),
            max_attempts: 8,
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30 * 60),
            concurrency: 8,
            poll: Duration::from_millis(500),
        }
    }
}

/// The `User-Agent` of deliveries.
const USER_AGENT: &str = concat!("Empire-Webhooks/", env!("CARGO_PKG_VERSION"));

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client for http and https URLs (TLS roots from the system; http only when it has
/// none), connecting within `timeout`.
fn https_client(timeout: Duration) -> HttpsClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
        .map(|b| {
            b.https_or_http()
                .enable_http1()
                .wrap_connector(http.clone())
        })
        .unwrap_or_else(|err| {
            tracing::warn!(%err, "no TLS roots: outgoing webhooks speak http only");
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(
                    rustls::ClientConfig::builder_with_provider(Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default TLS versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
                )
                .https_or_http()
                .enable_http1()
                .wrap_connector(http)
        });
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// Posts queued deliveries until shut down.
pub struct Dispatcher {
    store: Arc<dyn Store>,
    config: DispatchConfig,
    /// Made on the first delivery ([`Dispatcher::client`]).
    client: OnceLock<HttpsClient>,
}

impl Dispatcher {
    /// A dispatcher over `store`. The HTTP(S) client, with its TLS roots read from the
    /// system, is made on the first delivery: a gateway without outgoing webhooks never
    /// loads them.
    pub fn new(store: Arc<dyn Store>, config: DispatchConfig) -> Self {
        Dispatcher {
            store,
            config,
            client: OnceLock::new(),
        }
    }

    /// The client, made on first use.
    fn client(&self) -> &HttpsClient {
        self.client
            .get_or_init(|| https_client(self.config.timeout))
    }

    /// Takes back the deliveries this gateway held when it stopped, then claims and
    /// attempts due deliveries until `shutdown`; attempts under way finish first.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        match this.store.release_claims(&this.config.owner).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deliveries = n, "resuming webhook deliveries"),
            Err(err) => tracing::warn!(%err, "taking back webhook deliveries"),
        }
        let slots = Arc::new(Semaphore::new(this.config.concurrency.max(1)));
        let tasks = TaskTracker::new();
        // A claim outlives an attempt: no other gateway takes a delivery being attempted.
        let lease = this.config.timeout * 2 + Duration::from_secs(30);
        while !shutdown.is_cancelled() {
            let free = slots.available_permits();
            let mut claimed_all = false;
            if free > 0 {
                match this
                    .store
                    .claim_deliveries(&this.config.owner, lease, free as u32)
                    .await
                {
                    Ok(claimed) => {
                        claimed_all = claimed.len() == free;
                        for claim in claimed {
                            let permit = slots
                                .clone()
                                .acquire_owned()
                                .await
                                .expect("the semaphore is never closed");
                            let this = this.clone();
                            tasks.spawn(async move {
                                this.deliver(claim).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(err) => tracing::warn!(%err, "claiming webhook deliveries"),
                }
            }
            if claimed_all {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(this.config.poll) => {}
            }
        }
        tasks.close();
        if tokio::time::timeout(this.config.timeout + Duration::from_secs(1), tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("webhook attempts still running at shutdown; they resume on restart");
        }
    }

    /// One attempt of one delivery, recorded with what becomes of it.
    async fn deliver(&self, claim: ClaimedDelivery) {
        let ClaimedDelivery { delivery, webhook } = claim;
        let body = body::render(webhook.format, &delivery.id, &delivery.payload);
        let number = delivery.attempts + 1;
        let started = Instant::now();
        let outcome = self
            .post(
                &webhook.url,
                &delivery.event,
                &delivery.id,
                &webhook.secret,
                body,
            )
            .await;
        let duration = started.elapsed();
        let (attempt, retryable, ok) = match outcome {
            Ok((status, response)) => (
                NewAttempt {
                    status_code: Some(status.as_u16()),
                    error: None,
                    duration,
                    response,
                },
                retryable_status(status),
                status.is_success(),
            ),
            Err(error) => (
                NewAttempt {
                    status_code: None,
                    error: Some(error.message),
                    duration,
                    response: String::new(),
                },
                error.retryable,
                false,
            ),
        };
        let result = if ok {
            AttemptResult::Delivered
        } else if retryable && number < self.config.max_attempts {
            AttemptResult::Retry(backoff(
                number,
                self.config.backoff,
                self.config.max_backoff,
                jitter(),
            ))
        } else {
            AttemptResult::Failed
        };
        tracing::info!(
            delivery = %delivery.id,
            webhook = webhook.id,
            event = %delivery.event,
            attempt = number,
            status = ?attempt.status_code,
            error = ?attempt.error,
            ?result,
            "webhook delivery attempted"
        );
        if let Err(err) = self
            .store
            .record_attempt(&delivery.id, attempt, result)
            .await
        {
            tracing::warn!(delivery = %delivery.id, %err, "recording a webhook attempt");
        }
    }

    /// Posts `body`; answers the status and the start of the answer's body.
    async fn post(
        &self,
        url: &str,
        event: &str,
        delivery: &str,
        secret: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, String), PostError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| PostError::final_(format!("bad URL: {e}")))?;
        let request = Request::post(uri)
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .header(header::USER_AGENT, HeaderValue::from_static(USER_AGENT))
            .header("x-empire-event", event)
            .header("x-empire-delivery", delivery)
            .header("x-empire-signature", signature(secret, &body))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| PostError::final_(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let response = self.client().request(request).await.map_err(|e| {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    text.push_str(": ");
                    text.push_str(&cause.to_string());
                    source = cause.source();
                }
                PostError::retry(text)
            })?;
            let status = response.status();
            let mut body = response.into_body();
            let mut excerpt = Vec::new();
            while excerpt.len() < RESPONSE_EXCERPT_BYTES {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            excerpt.extend_from_slice(&data);
                        }
                    }
                    // The status is what counts; a broken body keeps what came.
                    Some(Err(_)) | None => break,
                }
            }
            excerpt.truncate(RESPONSE_EXCERPT_BYTES);
            Ok((status, String::from_utf8_lossy(&excerpt).into_owned()))
        };
        match tokio::time::timeout(self.config.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(PostError::retry(format!(
                "no answer within {}",
                empire_core::progress::format_duration(self.config.timeout)
            ))),
        }
    }
}

/// Why an attempt got no answer.
#[derive(Debug)]
struct PostError {
    message: String,
    retryable: bool,
}

impl PostError {
    fn retry(message: String) -> Self {
        PostError {
            message,
            retryable: true,
        }
    }

    fn final_(message: String) -> Self {
        PostError {
            message,
            retryable: false,
        }
    }
}

/// Whether an answer is worth another attempt: 408, 429 and 5xx are; 2xx is delivered;
/// anything else (a 4xx saying the request is wrong, a redirect) is final.
pub fn retryable_status(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// The wait after attempt `number` (1 for the first): `base` doubled per attempt, at most
/// `max`, then spread by `jitter` (0.0..1.0) over ±20% so retries of many deliveries do
/// not arrive together.
pub fn backoff(number: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let doubled = base.saturating_mul(1u32 << number.saturating_sub(1).min(20));
    let capped = doubled.min(max);
    capped.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
}

/// A random number in 0.0..1.0.
fn jitter() -> f64 {
    (uuid::Uuid::new_v4().as_u128() % 10_000) as f64 / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client (and the system's TLS roots) is made by the first delivery, not by
    /// the dispatcher: an idle gateway without webhooks never loads them.
    #[tokio::test]
    async fn the_client_is_made_on_the_first_delivery() {
        let store = empire_core::store::SqliteStore::open_in_memory().expect("a store");
        let dispatcher = Dispatcher::new(Arc::new(store), DispatchConfig::default());
        assert!(dispatcher.client.get().is_none());
        // Port 9 (discard) on loopback: nothing listens, the attempt fails fast.
        let result = dispatcher
            .post(
                "http://127.0.0.1:9/hook",
                "deploy",
                "d1",
                "secret",
                b"{}".to_vec(),
            )
            .await;
        assert!(result.is_err(), "nothing listens on 127.0.0.1:9");
        assert!(dispatcher.client.get().is_some());
    }

    #[test]
    fn backoff_doubles_up_to_a_limit_with_jitter() {
        let base = Duration::from_secs(5);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(1, base, max, 0.5), Duration::from_secs(5));
        assert_eq!(backoff(2, base, max, 0.5), Duration::from_secs(10));
        assert_eq!(backoff(3, base, max, 0.5), Duration::from_secs(20));
        assert_eq!(backoff(5, base, max, 0.5), Duration::from_secs(60));
        assert_eq!(backoff(40, base, max, 0.5), Duration::from_secs(60));
        assert_eq!(backoff(1, base, max, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(1, base, max, 1.0), Duration::from_secs(6));
        let spread: std::collections::BTreeSet<u128> = (0..50)
            .map(|_| backoff(2, base, max, jitter()).as_millis())
            .collect();
        assert!(spread.len() > 1, "jitter spreads retries");
        assert!(spread.iter().all(|ms| (8000..=12000).contains(ms)));
    }

    #[test]
    fn only_timeouts_throttling_and_server_errors_are_retried() {
        for code in [500, 502, 503, 504, 408, 429] {
            assert!(
                retryable_status(StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
        for code in [200, 204, 301, 400, 401, 403, 404, 410, 422] {
            assert!(
                !retryable_status(StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
    }
}
