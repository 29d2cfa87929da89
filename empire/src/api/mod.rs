//! The HTTP API in the shape of Heroku's Platform API v3, as Remind's Empire served it,
//! so `emp` and Heroku-style clients work. A thin face over [`Platform`]: every handler
//! parses, authenticates, calls the service and serializes; errors map to statuses in
//! [`error`]. The document `docs/openapi.yaml` describes every route registered here
//! (a test checks both ways) and is served at `GET /openapi.yaml`.

mod account;
mod apps;
mod builds;
mod collaborators;
mod deploys;
mod domains;
mod dynos;
pub mod error;
mod extract;
mod logs;
pub mod range;
mod releases;
mod resources;
mod run;
mod stream;
mod webhooks_in;
mod webhooks_out;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use empire_core::service::Platform;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::error::ApiError;
use self::range::{ListRange, Ranged, paginate};
use self::resources::AppUrls;
pub use self::run::LEGACY_ATTACH_UPGRADE;

/// The OpenAPI document of this API.
pub const OPENAPI_YAML: &str = include_str!("../../../docs/openapi.yaml");

/// What the API needs besides the service layer.
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// Where apps answer: `http://{app}.localhost:8000/` (`{app}` is replaced).
    pub app_url_template: Option<String>,
    /// The port of the SSH git server, for `git_url`.
    pub ssh_port: u16,
    /// The largest webhook body accepted (`None`: 1 MiB).
    pub webhook_max_body: Option<usize>,
}

/// The state every handler shares.
#[derive(Clone)]
pub struct ApiState {
    platform: Arc<Platform>,
    config: Arc<ApiConfig>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl ApiState {
    /// Wires the API over the service layer. `shutdown` ends the streams that would
    /// otherwise go on (following logs).
    pub fn new(platform: Arc<Platform>, config: ApiConfig, shutdown: CancellationToken) -> Self {
        ApiState {
            platform,
            config: Arc::new(config),
            tasks: TaskTracker::new(),
            shutdown,
        }
    }

    /// The operations the API started (deploys, config changes, scaling, restarts,
    /// rollbacks), for a shutdown to wait for: close it, then wait.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    fn urls(&self, headers: &HeaderMap) -> AppUrls {
        AppUrls {
            web_template: self.config.app_url_template.clone(),
            host: extract::request_host(headers),
            ssh_port: self.config.ssh_port,
        }
    }
}

/// A router that remembers which method and path it registered, so the OpenAPI
/// document can be checked against it.
pub struct Routes {
    router: Router<ApiState>,
    table: Vec<(Method, &'static str)>,
}

impl Routes {
    fn new() -> Self {
        Routes {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    fn on<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a routable method");
        self.table.push((method, path));
        self.router = self.router.route(path, on(filter, handler));
        self
    }

    /// The (method, path) pairs registered, paths in axum's and OpenAPI's `{param}` form.
    pub fn table(&self) -> &[(Method, &'static str)] {
        &self.table
    }
}

/// Every route of the server.
pub fn routes() -> Routes {
    use Method as M;
    Routes::new()
        .on(M::GET, "/health", || async { "ok\n" })
        .on(M::GET, "/openapi.yaml", openapi)
        // Apps
        .on(M::GET, "/apps", apps::list)
        .on(M::POST, "/apps", apps::create)
        .on(M::POST, "/organizations/apps", apps::create)
        .on(M::GET, "/apps/{app}", apps::info)
        .on(M::DELETE, "/apps/{app}", apps::destroy)
        // Config
        .on(M::GET, "/apps/{app}/config-vars", releases::config)
        .on(M::PATCH, "/apps/{app}/config-vars", releases::set_config)
        .on(
            M::GET,
            "/apps/{app}/config-vars/{version}",
            releases::config_of,
        )
        // Releases
        .on(M::GET, "/apps/{app}/releases", releases::list)
        .on(M::POST, "/apps/{app}/releases", releases::rollback)
        .on(M::GET, "/apps/{app}/releases/{version}", releases::info)
        .on(M::GET, "/apps/{app}/releases/{version}/log", releases::log)
        // Deploys
        .on(M::POST, "/apps/{app}/deploys", deploys::deploy_app)
        .on(M::POST, "/deploys", deploys::deploy)
        // Processes
        .on(M::GET, "/apps/{app}/dynos", dynos::list)
        .on(M::POST, "/apps/{app}/dynos", run::create)
        .on(M::DELETE, "/apps/{app}/dynos", dynos::restart_all)
        .on(M::DELETE, "/apps/{app}/dynos/{dyno}", dynos::restart)
        .on(M::GET, "/apps/{app}/formation", dynos::formation)
        .on(M::PATCH, "/apps/{app}/formation", dynos::scale)
        // Logs
        .on(M::POST, "/apps/{app}/log-sessions", logs::create)
        // Domains
        .on(M::GET, "/apps/{app}/domains", domains::list)
        .on(M::POST, "/apps/{app}/domains", domains::create)
        .on(
            M::DELETE,
            "/apps/{app}/domains/{hostname}",
            domains::destroy,
        )
        // Access
        .on(M::GET, "/apps/{app}/collaborators", collaborators::list)
        .on(M::POST, "/apps/{app}/collaborators", collaborators::create)
        .on(
            M::PUT,
            "/apps/{app}/collaborators/{user}",
            collaborators::put,
        )
        .on(
            M::DELETE,
            "/apps/{app}/collaborators/{user}",
            collaborators::destroy,
        )
        // Account
        .on(M::GET, "/account", account::info)
        .on(M::GET, "/account/keys", account::keys)
        .on(M::POST, "/account/keys", account::add_key)
        .on(M::DELETE, "/account/keys/{key}", account::remove_key)
        .on(M::POST, "/oauth/authorizations", account::authorize)
        // Outgoing webhooks (deploy events to other systems)
        .on(M::GET, "/apps/{app}/webhooks", webhooks_out::list_app)
        .on(M::POST, "/apps/{app}/webhooks", webhooks_out::create_app)
        .on(M::GET, "/outgoing-webhooks", webhooks_out::list)
        .on(M::POST, "/outgoing-webhooks", webhooks_out::create)
        .on(M::DELETE, "/outgoing-webhooks/{id}", webhooks_out::destroy)
        .on(
            M::GET,
            "/outgoing-webhooks/{id}/deliveries",
            webhooks_out::deliveries,
        )
        // Connected repositories and their webhook builds
        .on(M::PUT, "/apps/{app}/connection", builds::connect)
        .on(M::GET, "/apps/{app}/connection", builds::info)
        .on(M::DELETE, "/apps/{app}/connection", builds::disconnect)
        .on(M::GET, "/apps/{app}/builds", builds::list)
        .on(M::GET, "/apps/{app}/builds/{id}", builds::info_build)
        .on(M::GET, "/apps/{app}/builds/{id}/log", builds::log)
        // Push webhooks from git hosts (signed, no API token)
        .on(M::POST, "/webhooks/github/{app}", webhooks_in::github)
        .on(M::POST, "/webhooks/gitlab/{app}", webhooks_in::gitlab)
        .on(M::POST, "/webhooks/gitea/{app}", webhooks_in::gitea)
}

/// The API as a router, ready to serve.
pub fn router(state: ApiState) -> Router {
    let routes = routes();
    tracing::debug!(routes = routes.table().len(), "serving the API");
    routes
        .router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(extract::check_accept))
        .with_state(state)
}

async fn openapi() -> Response {
    with_content_type("application/yaml", OPENAPI_YAML)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such route: {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// The content type of text answers (release and app logs).
pub(crate) const PLAIN_TEXT: &str = "text/plain; charset=utf-8";

/// A 200 answer of `body` as `content_type`.
pub(crate) fn with_content_type(content_type: &'static str, body: impl IntoResponse) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// A JSON answer with a status.
pub(crate) fn json(status: StatusCode, value: Value) -> Response {
    (status, axum::Json(value)).into_response()
}

/// A list answer: paged when the request has a `Range` (206 with `Next-Range` while more
/// follow), whole otherwise.
pub(crate) fn list<T: Ranged>(
    headers: &HeaderMap,
    items: Vec<T>,
    render: impl Fn(&T) -> Value,
) -> Result<Response, ApiError> {
    let range = ListRange::from_headers(headers)?;
    let page = paginate(items, range.as_ref())?;
    let body = Value::Array(page.items.iter().map(render).collect());
    Ok(paged(json(StatusCode::OK, body), page.next_range))
}

/// A list answer like [`list`], serialized straight from typed, borrowed resources (no
/// `Value` tree), about `item_size` bytes per item. `write` serializes one item, e.g. with
/// [`write_json`]. A list that fits in one [`CHUNK`] is answered from one buffer with a
/// `Content-Length`; a longer one (`GET /apps` of 1,000 apps: ~330 KB) is streamed in
/// chunks of about [`CHUNK`] bytes (chunked transfer), serialized as hyper sends them,
/// so no answer needs one buffer above glibc's mmap threshold (see
/// docs/benchmarks-api.md: such buffers stayed in malloc arenas after a load).
pub(crate) fn list_typed<T, W>(
    headers: &HeaderMap,
    items: Vec<T>,
    item_size: usize,
    write: W,
) -> Result<Response, ApiError>
where
    T: Ranged + Send + Unpin + 'static,
    W: Fn(&mut Vec<u8>, &T) -> serde_json::Result<()> + Send + Unpin + 'static,
{
    let range = ListRange::from_headers(headers)?;
    let page = paginate(items, range.as_ref())?;
    let mut chunks = JsonArrayChunks::new(page.items, item_size, write);
    let first = chunks.next_chunk().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("serializing the list: {e}"),
        )
    })?;
    let body = match first {
        Some(first) if chunks.done => axum::body::Body::from(first),
        first => {
            chunks.pending = first.map(Bytes::from);
            axum::body::Body::from_stream(chunks)
        }
    };
    let response = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    Ok(paged(response, page.next_range))
}

/// The size a streamed list answer's chunks reach (an item that would cross it still
/// goes in whole): well below glibc's 128 KiB mmap threshold.
pub(crate) const CHUNK: usize = 32 * 1024;

/// `[item, …]` as a stream of JSON chunks of about [`CHUNK`] bytes, serialized one chunk
/// per poll. After each chunk the stream yields once (waking itself), so hyper writes
/// that chunk to the socket before it asks for the next: without that it would buffer
/// up to ~400 KB of chunks first, i.e. the whole answer again.
struct JsonArrayChunks<T, W> {
    items: std::vec::IntoIter<T>,
    item_size: usize,
    write: W,
    /// Nothing written yet (the `[` is still due).
    started: bool,
    /// The `]` is written: nothing follows.
    done: bool,
    /// A chunk made but not handed out yet (the first, made before the answer).
    pending: Option<Bytes>,
    /// The last poll handed out a chunk: yield before making the next.
    yield_next: bool,
}

impl<T, W> JsonArrayChunks<T, W>
where
    W: Fn(&mut Vec<u8>, &T) -> serde_json::Result<()>,
{
    fn new(items: Vec<T>, item_size: usize, write: W) -> Self {
        JsonArrayChunks {
            items: items.into_iter(),
            item_size,
            write,
            started: false,
            done: false,
            pending: None,
            yield_next: false,
        }
    }

    /// The next chunk, `None` after the `]`.
    fn next_chunk(&mut self) -> serde_json::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        let size = (2 + self.items.len() * self.item_size).min(CHUNK + self.item_size);
        let mut out = Vec::with_capacity(size);
        if !self.started {
            self.started = true;
            out.push(b'[');
        } else {
            // Chunks after the first end where an item ended and a next one followed.
            out.push(b',');
        }
        let mut first = true;
        while out.len() < CHUNK {
            let Some(item) = self.items.next() else {
                out.push(b']');
                self.done = true;
                return Ok(Some(out));
            };
            if !first {
                out.push(b',');
            }
            first = false;
            (self.write)(&mut out, &item)?;
        }
        if self.items.len() == 0 {
            out.push(b']');
            self.done = true;
        }
        Ok(Some(out))
    }
}

impl<T, W> futures_util::Stream for JsonArrayChunks<T, W>
where
    T: Unpin,
    W: Fn(&mut Vec<u8>, &T) -> serde_json::Result<()> + Unpin,
{
    type Item = serde_json::Result<Bytes>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = self.get_mut();
        if let Some(chunk) = this.pending.take() {
            this.yield_next = true;
            return Poll::Ready(Some(Ok(chunk)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        if this.yield_next {
            this.yield_next = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.yield_next = true;
        match this.next_chunk() {
            Ok(chunk) => Poll::Ready(chunk.map(|c| Ok(Bytes::from(c)))),
            Err(e) => {
                tracing::warn!(error = %e, "serializing a streamed list failed; answer cut");
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}

/// Appends `value` as JSON to `out`.
pub(crate) fn write_json(out: &mut Vec<u8>, value: &impl Serialize) -> serde_json::Result<()> {
    serde_json::to_writer(out, value)
}

/// `[item, …]` as JSON bytes, each written by `write`, in one buffer pre-sized to
/// `item_size` per item (what a streamed list answer adds up to; tests compare).
#[cfg(test)]
pub(crate) fn json_array<T>(
    items: &[T],
    item_size: usize,
    write: impl Fn(&mut Vec<u8>, &T) -> serde_json::Result<()>,
) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(2 + items.len() * item_size);
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(&mut out, item)?;
    }
    out.push(b']');
    Ok(out)
}

/// Makes a list answer `206 Partial Content` with `Next-Range` when more items follow.
fn paged(mut response: Response, next_range: Option<String>) -> Response {
    if let Some(next) = next_range {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(value) = HeaderValue::from_str(&next) {
            response.headers_mut().insert("next-range", value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every route the server registers is in docs/openapi.yaml, and every operation of
    /// the document is a registered route.
    #[test]
    fn the_openapi_document_lists_exactly_the_registered_routes() {
        let doc: serde_norway::Value =
            serde_norway::from_str(OPENAPI_YAML).expect("docs/openapi.yaml is YAML");
        assert!(
            doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
            "docs/openapi.yaml is not an OpenAPI 3 document"
        );
        let methods = ["get", "put", "post", "delete", "patch", "head", "options"];
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_mapping().expect("paths") {
            let path = path.as_str().expect("path").to_string();
            for (method, _) in item.as_mapping().expect("path item") {
                let method = method.as_str().expect("method");
                if methods.contains(&method) {
                    documented.insert((method.to_ascii_uppercase(), path.clone()));
                }
            }
        }
        let registered: BTreeSet<(String, String)> = routes()
            .table()
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        let undocumented: Vec<_> = registered.difference(&documented).collect();
        let unregistered: Vec<_> = documented.difference(&registered).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from docs/openapi.yaml: {undocumented:?}"
        );
        assert!(
            unregistered.is_empty(),
            "docs/openapi.yaml documents routes the server does not have: {unregistered:?}"
        );
    }

    /// A list streamed in chunks is byte for byte the list written in one buffer, and
    /// no chunk grows past [`CHUNK`] by more than one item.
    #[test]
    fn chunked_json_arrays_are_the_whole_array() {
        use futures_util::StreamExt;
        let write = |out: &mut Vec<u8>, s: &String| write_json(out, s);
        for (count, len) in [
            (0, 1),
            (1, 10),
            (3, 5000),
            (100, 300),
            (1000, 331),
            (7, 40000),
        ] {
            let items: Vec<String> = (0..count)
                .map(|i| format!("{i:0>width$}\"é", width = len))
                .collect();
            let whole = json_array(&items, len + 2, write).unwrap();
            let mut chunks = JsonArrayChunks::new(items, len + 2, write);
            let mut streamed = Vec::new();
            let mut polls = 0;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async {
                while let Some(chunk) = chunks.next().await {
                    let chunk = chunk.unwrap();
                    assert!(
                        chunk.len() <= CHUNK + len + 10,
                        "a chunk of {}",
                        chunk.len()
                    );
                    streamed.extend_from_slice(&chunk);
                    polls += 1;
                }
            });
            assert_eq!(
                String::from_utf8(streamed).unwrap(),
                String::from_utf8(whole).unwrap()
            );
            assert!(polls >= 1 && (count * len < CHUNK || polls > 1));
        }
    }

    struct Named(String);

    impl Ranged for Named {
        const FIELDS: &'static [&'static str] = &["name"];
        fn range_key(&self, _field: &str) -> range::RangeKey {
            range::RangeKey::Text(self.0.clone())
        }
    }

    /// A list answer: a short one whole with a `Content-Length`, a long one streamed
    /// (no length) with the same bytes, and a page of it with `Next-Range`.
    #[tokio::test]
    async fn long_list_answers_are_streamed_whole_and_paged() {
        use axum::body::HttpBody;
        use http_body_util::BodyExt;
        let names = |n: usize| -> Vec<Named> {
            (0..n)
                .map(|i| Named(format!("app-{i:04}-{}", "x".repeat(90))))
                .collect()
        };
        let write = |out: &mut Vec<u8>, item: &Named| write_json(out, &item.0);
        let body = |response: Response| async move {
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8(bytes.to_vec()).unwrap()
        };
        let expected =
            |items: &[Named]| String::from_utf8(json_array(items, 100, write).unwrap()).unwrap();

        let short = list_typed(&HeaderMap::new(), names(10), 100, write).unwrap();
        assert_eq!(short.status(), StatusCode::OK);
        // hyper writes the body's exact size as the Content-Length.
        let length = short.body().size_hint().exact();
        let text = body(short).await;
        assert_eq!(length, Some(text.len() as u64));
        assert_eq!(text, expected(&names(10)));

        let long = list_typed(&HeaderMap::new(), names(2000), 100, write).unwrap();
        assert_eq!(long.status(), StatusCode::OK);
        assert_eq!(long.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(long.body().size_hint().exact(), None, "a chunked answer");
        let text = body(long).await;
        assert!(text.len() > 4 * CHUNK);
        assert_eq!(text, expected(&names(2000)));

        let mut headers = HeaderMap::new();
        headers.insert("range", HeaderValue::from_static("name ..; max=1000"));
        let page = list_typed(&headers, names(2000), 100, write).unwrap();
        assert_eq!(page.status(), StatusCode::PARTIAL_CONTENT);
        assert!(page.headers().contains_key("next-range"));
        assert_eq!(body(page).await, expected(&names(1000)));
    }

    /// Every `$ref` in the document points at a schema that exists.
    #[test]
    fn the_openapi_references_resolve() {
        let doc: serde_norway::Value = serde_norway::from_str(OPENAPI_YAML).unwrap();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for reference in refs {
            let mut node = &doc;
            for part in reference.trim_start_matches("#/").split('/') {
                node = &node[part];
            }
            assert!(!node.is_null(), "{reference} does not resolve");
        }
    }

    fn collect_refs(node: &serde_norway::Value, out: &mut Vec<String>) {
        match node {
            serde_norway::Value::Mapping(map) => {
                for (key, value) in map {
                    if key.as_str() == Some("$ref") {
                        out.push(value.as_str().expect("$ref is text").to_string());
                    } else {
                        collect_refs(value, out);
                    }
                }
            }
            serde_norway::Value::Sequence(items) => {
                for item in items {
                    collect_refs(item, out);
                }
            }
            _ => {}
        }
    }
}
