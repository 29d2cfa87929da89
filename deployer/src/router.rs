//! The built-in HTTP router of the `docker` backend: routes each request by its `Host`
//! header to one of the app's healthy containers, round-robin, and counts the requests
//! in flight on every backend so a rollout can drain the old release before stopping it.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The body of every response the router sends.
pub type RouterBody = UnsyncBoxBody<Bytes, BoxError>;

type OutboundBody = Either<Incoming, Empty<Bytes>>;

/// How long the router waits for the request headers of a client connection.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection to a backend may take to open (backends are local).
const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Router::serve`] lets open connections finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Hop-by-hop headers, which apply to one connection and are never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// One place requests of an app can go: a container's published port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Backend {
    /// What runs there (the container id for the docker backend).
    pub id: String,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Backend {
    /// A backend `id` listening on `addr`.
    pub fn new(id: impl Into<String>, addr: SocketAddr) -> Self {
        Backend {
            id: id.into(),
            addr,
        }
    }
}

/// A routed backend and its in-flight counter.
struct Entry {
    backend: Backend,
    inflight: Arc<AtomicUsize>,
}

/// The backends of one app.
#[derive(Default)]
struct AppRoute {
    backends: Vec<Arc<Entry>>,
    next: AtomicUsize,
}

#[derive(Default)]
struct Table {
    apps: HashMap<String, AppRoute>,
    /// Custom domain (lowercase) → app.
    domains: HashMap<String, String>,
    /// Every backend an app was routed to whose counter is still alive (routed now, or
    /// with requests still in flight), so draining sees requests that started before a
    /// backend left the pool.
    counters: HashMap<String, HashMap<Backend, Weak<AtomicUsize>>>,
}

/// Decrements a backend's in-flight counter when dropped.
struct InflightGuard(Arc<AtomicUsize>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What [`Router::pick`] found for a request.
enum Pick {
    NoApp,
    NoBackend,
    Backend(Backend, InflightGuard, usize),
}

/// The HTTP router: `<app>.<apps_domain>` (and custom domains) → the app's backends.
pub struct Router {
    apps_domain: String,
    table: RwLock<Table>,
    client: Client<HttpConnector, OutboundBody>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("apps_domain", &self.apps_domain)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router with no apps that serves `<app>.<apps_domain>`.
    pub fn new(apps_domain: String) -> Arc<Router> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(BACKEND_CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Arc::new(Router {
            apps_domain: normalize_host(&apps_domain),
            table: RwLock::new(Table::default()),
            client,
        })
    }

    /// The domain apps are served under.
    pub fn apps_domain(&self) -> &str {
        &self.apps_domain
    }

    /// Replaces the backends of `app` (creating its route if needed). An app with an
    /// empty list is known but answers 503. Requests already sent to a backend that is
    /// left out keep running; [`Router::drain`] waits for them.
    pub fn set_backends(&self, app: &str, backends: Vec<Backend>) {
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        let table = &mut *table;
        let counters = table.counters.entry(app.to_string()).or_default();
        counters.retain(|_, weak| weak.strong_count() > 0);
        let mut seen = HashSet::new();
        let entries: Vec<Arc<Entry>> = backends
            .into_iter()
            .filter(|b| seen.insert(b.clone()))
            .map(|backend| {
                let inflight = counters
                    .get(&backend)
                    .and_then(Weak::upgrade)
                    .unwrap_or_else(|| Arc::new(AtomicUsize::new(0)));
                counters.insert(backend.clone(), Arc::downgrade(&inflight));
                Arc::new(Entry { backend, inflight })
            })
            .collect();
        let route = table.apps.entry(app.to_string()).or_default();
        route.backends = entries;
    }

    /// Forgets `app`: its hosts answer 404 from now on.
    pub fn remove_app(&self, app: &str) {
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        table.apps.remove(app);
        table.domains.retain(|_, a| a != app);
        if let Some(counters) = table.counters.get_mut(app) {
            counters.retain(|_, weak| weak.strong_count() > 0);
            if counters.is_empty() {
                table.counters.remove(app);
            }
        }
    }

    /// Replaces the custom domains (hostnames, without port) that route to `app`.
    pub fn set_domains(&self, app: &str, domains: Vec<String>) {
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        table.domains.retain(|_, a| a != app);
        for domain in domains {
            table
                .domains
                .insert(normalize_host(&domain), app.to_string());
        }
    }

    /// The apps that have a route.
    pub fn apps(&self) -> Vec<String> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table.apps.keys().cloned().collect()
    }

    /// The backends `app` is routed to now, or `None` if the app has no route.
    pub fn backends(&self, app: &str) -> Option<Vec<Backend>> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table
            .apps
            .get(app)
            .map(|route| route.backends.iter().map(|e| e.backend.clone()).collect())
    }

    /// The backends of `app` that are routed or still have requests in flight.
    pub fn known_backends(&self, app: &str) -> Vec<Backend> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table
            .counters
            .get(app)
            .map(|counters| {
                counters
                    .iter()
                    .filter(|(_, weak)| weak.strong_count() > 0)
                    .map(|(b, _)| b.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many requests of `app` are in flight on `backend` (including open upgraded
    /// connections and responses still streaming).
    pub fn inflight(&self, app: &str, backend: &Backend) -> usize {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table
            .counters
            .get(app)
            .and_then(|c| c.get(backend))
            .and_then(Weak::upgrade)
            .map(|c| c.load(Ordering::SeqCst))
            .unwrap_or(0)
    }

    /// Waits until no request of `app` is in flight on any of `backends`, or `timeout`
    /// passed. Take the backends out of the route first ([`Router::set_backends`]), or
    /// new requests keep arriving. Returns the number of requests still in flight (0
    /// when drained).
    pub async fn drain(&self, app: &str, backends: &[Backend], timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left: usize = backends.iter().map(|b| self.inflight(app, b)).sum();
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The app a `Host` header value routes to, if any.
    pub fn app_for_host(&self, host: &str) -> Option<String> {
        let host = normalize_host(host);
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        if let Some(app) = table.domains.get(&host) {
            return Some(app.clone());
        }
        let label = host
            .strip_suffix(self.apps_domain.as_str())?
            .strip_suffix('.')?;
        (!label.is_empty() && !label.contains('.')).then(|| label.to_string())
    }

    /// Picks the next backend of the app round-robin, skipping `avoid` when there is
    /// another one, and counts the request on it. The count happens under the table
    /// lock, so once [`Router::set_backends`] returns, every request that picked a
    /// removed backend is already counted.
    fn pick(&self, app: &str, avoid: Option<&Backend>) -> Pick {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        let Some(route) = table.apps.get(app) else {
            return Pick::NoApp;
        };
        let len = route.backends.len();
        if len == 0 {
            return Pick::NoBackend;
        }
        let mut index = route.next.fetch_add(1, Ordering::Relaxed) % len;
        if len > 1 && avoid.is_some_and(|a| *a == route.backends[index].backend) {
            index = (index + 1) % len;
        }
        let entry = &route.backends[index];
        entry.inflight.fetch_add(1, Ordering::SeqCst);
        Pick::Backend(
            entry.backend.clone(),
            InflightGuard(entry.inflight.clone()),
            len,
        )
    }

    /// Accepts HTTP/1 connections on `listener` and proxies them until `shutdown` is
    /// cancelled; then stops accepting, lets open connections finish their current
    /// request (up to 10 s) and returns.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let local_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let router = self.clone();
                        let shutdown = shutdown.clone();
                        connections.spawn(async move {
                            router.serve_connection(stream, peer, local_port, shutdown).await;
                        });
                    }
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!(error = %err, "router: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            debug!(
                open = connections.len(),
                "router: closing connections still open after shutdown grace"
            );
        }
    }

    async fn serve_connection(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        local_port: u16,
        shutdown: CancellationToken,
    ) {
        let router = self.clone();
        let service = service_fn(move |req| {
            let router = router.clone();
            async move { Ok::<_, Infallible>(router.handle(req, peer, local_port).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.as_mut().await
            }
        };
        if let Err(err) = result {
            debug!(error = %err, %peer, "router: client connection ended with an error");
        }
    }

    /// Proxies one request.
    async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        local_port: u16,
    ) -> Response<RouterBody> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let Some(app) = self.app_for_host(&host) else {
            return no_app(&host);
        };

        let upgrade = requested_upgrade(req.headers());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();

        let mut headers = parts.headers;
        remove_hop_by_hop(&mut headers);
        if let Some(protocol) = upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol);
        }
        add_forwarding_headers(&mut headers, peer.ip(), local_port);
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".to_string());

        // Without a body, a request that could not reach its backend can go to another.
        let retryable = body.is_end_stream();
        let mut body = Some(body);
        let mut failed: Option<Backend> = None;
        loop {
            let (backend, guard, count) = match self.pick(&app, failed.as_ref()) {
                Pick::NoApp => return no_app(&host),
                Pick::NoBackend => return no_backend(&app),
                Pick::Backend(backend, guard, count) => (backend, guard, count),
            };
            let uri = format!("http://{}{}", backend.addr, path);
            let outbound_body = match body.take() {
                Some(incoming) => Either::Left(incoming),
                None => Either::Right(Empty::new()),
            };
            let mut outbound = Request::new(outbound_body);
            *outbound.method_mut() = parts.method.clone();
            *outbound.version_mut() = Version::HTTP_11;
            *outbound.headers_mut() = headers.clone();
            match uri.parse() {
                Ok(uri) => *outbound.uri_mut() = uri,
                Err(_) => return text(StatusCode::BAD_REQUEST, "invalid request path\n"),
            }
            match self.client.request(outbound).await {
                Ok(response) => return respond(response, guard, client_upgrade),
                Err(err) => {
                    drop(guard);
                    let connect = err.is_connect();
                    warn!(app, backend = %backend.addr, error = %err, "router: backend request failed");
                    if connect && retryable && failed.is_none() && count > 1 {
                        failed = Some(backend);
                        continue;
                    }
                    return text(
                        StatusCode::BAD_GATEWAY,
                        format!("app {app:?} did not answer: {}\n", error_chain(&err)),
                    );
                }
            }
        }
    }
}

/// Builds the client's response from the backend's.
fn respond(
    mut response: Response<Incoming>,
    guard: InflightGuard,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<RouterBody> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return text(
                StatusCode::BAD_GATEWAY,
                "the app switched protocols without being asked to\n",
            );
        };
        let backend_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            // The tunnel counts as one request in flight until either side closes it.
            let _guard = guard;
            match tokio::try_join!(client_upgrade, backend_upgrade) {
                Ok((client, backend)) => {
                    let mut client = TokioIo::new(client);
                    let mut backend = TokioIo::new(backend);
                    if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut backend).await
                    {
                        debug!(error = %err, "router: upgraded connection ended with an error");
                    }
                }
                Err(err) => debug!(error = %err, "router: upgrade failed"),
            }
        });
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, empty());
    }
    remove_hop_by_hop(response.headers_mut());
    response.map(|body| {
        GuardedBody {
            inner: body,
            guard: Some(guard),
        }
        .map_err(BoxError::from)
        .boxed_unsync()
    })
}

/// A response body that keeps its backend's in-flight count until it is finished.
struct GuardedBody {
    inner: Incoming,
    guard: Option<InflightGuard>,
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The `Upgrade` header value when the request asks for a protocol upgrade.
fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if connection_upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Removes the hop-by-hop headers, including those the `Connection` header names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Adds `X-Forwarded-*` and `X-Request-Id`.
fn add_forwarding_headers(headers: &mut HeaderMap, client: IpAddr, local_port: u16) {
    let client = match client {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    let prior: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let forwarded_for = if prior.is_empty() {
        client.to_string()
    } else {
        format!("{}, {client}", prior.join(", "))
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    headers.insert(X_FORWARDED_PORT, HeaderValue::from(local_port));
    let has_request_id = headers
        .get(&X_REQUEST_ID)
        .is_some_and(|v| !v.as_bytes().is_empty());
    if !has_request_id {
        let id = uuid::Uuid::new_v4().to_string();
        if let Ok(value) = HeaderValue::from_str(&id) {
            headers.insert(X_REQUEST_ID, value);
        }
    }
}

/// Lowercases a host, strips its port and a trailing dot.
fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or(rest)
    } else {
        match host.rsplit_once(':') {
            Some((name, port))
                if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                name
            }
            _ => host,
        }
    };
    without_port
        .trim_end_matches('.')
        .trim_start_matches('.')
        .to_ascii_lowercase()
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn empty() -> RouterBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<RouterBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body.into()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn no_app(host: &str) -> Response<RouterBody> {
    text(
        StatusCode::NOT_FOUND,
        format!("no app is configured for host {:?}\n", normalize_host(host)),
    )
}

fn no_backend(app: &str) -> Response<RouterBody> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("app {app:?} has no healthy process\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_hosts() {
        assert_eq!(normalize_host("Web.LocalHost:8080"), "web.localhost");
        assert_eq!(normalize_host("web.localhost."), "web.localhost");
        assert_eq!(normalize_host("[::1]:80"), "::1");
        assert_eq!(normalize_host("example.com"), "example.com");
    }

    #[test]
    fn maps_hosts_to_apps() {
        let router = Router::new("apps.example.com".into());
        assert_eq!(
            router.app_for_host("shop.apps.example.com:8080").as_deref(),
            Some("shop")
        );
        assert_eq!(
            router.app_for_host("SHOP.Apps.Example.com").as_deref(),
            Some("shop")
        );
        assert_eq!(router.app_for_host("a.b.apps.example.com"), None);
        assert_eq!(router.app_for_host("apps.example.com"), None);
        assert_eq!(router.app_for_host("shopapps.example.com"), None);
        assert_eq!(router.app_for_host("www.shop.io"), None);
        router.set_domains("shop", vec!["WWW.Shop.io".into()]);
        assert_eq!(
            router.app_for_host("www.shop.io:80").as_deref(),
            Some("shop")
        );
        router.set_domains("shop", vec![]);
        assert_eq!(router.app_for_host("www.shop.io"), None);
    }

    #[test]
    fn strips_hop_by_hop_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut headers);
        assert!(headers.get("x-secret").is_none());
        assert!(headers.get("keep-alive").is_none());
        assert!(headers.get(header::CONNECTION).is_none());
        assert_eq!(headers.get("x-kept").unwrap(), "1");
    }

    #[test]
    fn appends_forwarded_for() {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        add_forwarding_headers(&mut headers, "::ffff:127.0.0.1".parse().unwrap(), 8080);
        assert_eq!(headers.get(X_FORWARDED_FOR).unwrap(), "10.0.0.1, 127.0.0.1");
        assert_eq!(headers.get(X_FORWARDED_PROTO).unwrap(), "http");
        assert_eq!(headers.get(X_FORWARDED_PORT).unwrap(), "8080");
        let id = headers.get(X_REQUEST_ID).unwrap().to_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }

    #[test]
    fn round_robins_and_counts() {
        let router = Router::new("localhost".into());
        let a = Backend::new("a", "127.0.0.1:1".parse().unwrap());
        let b = Backend::new("b", "127.0.0.1:2".parse().unwrap());
        assert!(matches!(router.pick("x", None), Pick::NoApp));
        router.set_backends("x", vec![]);
        assert!(matches!(router.pick("x", None), Pick::NoBackend));
        router.set_backends("x", vec![a.clone(), b.clone()]);
        let mut picked = Vec::new();
        let mut guards = Vec::new();
        for _ in 0..4 {
            let Pick::Backend(backend, guard, _) = router.pick("x", None) else {
                panic!("no backend");
            };
            picked.push(backend.id);
            guards.push(guard);
        }
        assert_eq!(picked, ["a", "b", "a", "b"]);
        assert_eq!(router.inflight("x", &a), 2);
        // Taking `a` out of the route keeps its counter while requests are in flight.
        router.set_backends("x", vec![b.clone()]);
        assert_eq!(router.inflight("x", &a), 2);
        assert!(router.known_backends("x").contains(&a));
        guards.clear();
        assert_eq!(router.inflight("x", &a), 0);
        router.set_backends("x", vec![b.clone()]);
        assert!(!router.known_backends("x").contains(&a));
    }
}
