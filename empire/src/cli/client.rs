//! A small client of the Empire HTTP API: hyper 1 over plain TCP, one connection per
//! request, HTTP Basic auth with the API token as the password.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::TcpStream;

/// How long connecting to the API may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The media type of version 3 of the API.
pub const ACCEPT: &str = "application/vnd.heroku+json; version=3";

/// Where the API answers: `http://host:port[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The host name or address (IPv6 without brackets).
    pub host: String,
    /// The TCP port.
    pub port: u16,
    /// `host:port` as the `Host` header carries it.
    authority: String,
    /// A path every request path is appended to (no trailing `/`).
    prefix: String,
    /// The URL as given, for messages.
    url: String,
}

impl Server {
    /// Parses `http://host[:port][/prefix]`; only plain HTTP is spoken.
    pub fn parse(url: &str) -> Result<Server> {
        let trimmed = url.trim();
        let uri: Uri = trimmed
            .parse()
            .with_context(|| format!("EMPIRE_URL {trimmed:?} is not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => bail!(
                "EMPIRE_URL {trimmed:?} uses {other}: this client speaks plain http (put a TLS \
                 proxy such as stunnel in front, or use http://)"
            ),
            None => bail!("EMPIRE_URL {trimmed:?} has no scheme: write http://host:port"),
        }
        let authority = uri
            .authority()
            .with_context(|| format!("EMPIRE_URL {trimmed:?} names no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            bail!("EMPIRE_URL {trimmed:?} names no host");
        }
        let port = authority.port_u16().unwrap_or(80);
        Ok(Server {
            host,
            port,
            authority: authority
                .as_str()
                .rsplit('@')
                .next()
                .unwrap_or_default()
                .to_string(),
            prefix: uri.path().trim_end_matches('/').to_string(),
            url: trimmed.trim_end_matches('/').to_string(),
        })
    }

    /// The URL, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Credentials sent with every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The user name (may be empty: the server goes by the token).
    pub user: String,
    /// The API token.
    pub token: String,
}

/// An error answer of the API: `{"id": "not_found", "message": "app not found: x"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    /// The HTTP status.
    pub status: StatusCode,
    /// Heroku's error id.
    pub id: String,
    /// The message, for a person.
    pub message: String,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if self.status == StatusCode::UNAUTHORIZED {
            f.write_str("\nrun `empire login` to log in (again)")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiFailure {}

impl ApiFailure {
    /// Reads an error answer: the API's JSON error, or whatever text came.
    pub async fn from_response(response: Response<Incoming>) -> ApiFailure {
        let status = response.status();
        let bytes = match response.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        let text = |field: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(field))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let body = String::from_utf8_lossy(&bytes).trim().to_string();
        ApiFailure {
            status,
            id: text("id").unwrap_or_else(|| "error".to_string()),
            message: text("message").unwrap_or_else(|| {
                if body.is_empty() {
                    format!("the API answered {status}")
                } else {
                    format!("the API answered {status}: {body}")
                }
            }),
        }
    }
}

/// One request to the API.
#[derive(Debug)]
pub struct Call<'a> {
    method: Method,
    path: &'a str,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
    upgrade: bool,
}

impl<'a> Call<'a> {
    /// A request of `method` to `path` (`/apps/web`).
    pub fn new(method: Method, path: &'a str) -> Self {
        Call {
            method,
            path,
            body: None,
            headers: Vec::new(),
            upgrade: false,
        }
    }

    /// A JSON body.
    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// A header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Ask to take the connection over (`Connection: Upgrade`, `Upgrade: tcp`).
    pub fn upgrade(mut self) -> Self {
        self.upgrade = true;
        self
    }
}

/// A client of one Empire API with one user's credentials.
#[derive(Debug, Clone)]
pub struct ApiClient {
    server: Server,
    auth: Option<Auth>,
}

impl ApiClient {
    /// A client of `server` sending `auth` (none: requests go unauthenticated).
    pub fn new(server: Server, auth: Option<Auth>) -> Self {
        ApiClient { server, auth }
    }

    /// Sends a request and answers the response as it arrives, whatever its status.
    pub async fn send(&self, call: Call<'_>) -> Result<Response<Incoming>> {
        let server = &self.server;
        let unreachable = || {
            format!(
                "cannot reach the Empire API at {} (set EMPIRE_URL to where `empire server` listens)",
                server.url()
            )
        };
        let connect = TcpStream::connect((server.host.as_str(), server.port));
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {CONNECT_TIMEOUT:?}"))
            .with_context(unreachable)?
            .with_context(unreachable)?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                .await
                .with_context(|| format!("talking to {}", server.url()))?;
        tokio::spawn(async move {
            if let Err(err) = connection.with_upgrades().await {
                tracing::debug!(%err, "the API connection ended");
            }
        });
        let uri = format!("{}{}", server.prefix, call.path);
        let mut builder = Request::builder()
            .method(call.method.clone())
            .uri(&uri)
            .header(header::HOST, &server.authority)
            .header(header::ACCEPT, ACCEPT)
            .header(
                header::USER_AGENT,
                concat!("empire-cli/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(auth) = &self.auth {
            let basic = STANDARD.encode(format!("{}:{}", auth.user, auth.token));
            builder = builder.header(header::AUTHORIZATION, format!("Basic {basic}"));
        }
        if call.upgrade {
            builder = builder
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "tcp");
        }
        for (name, value) in &call.headers {
            let value = HeaderValue::from_str(value)
                .with_context(|| format!("the {name} header cannot carry {value:?}"))?;
            builder = builder.header(*name, value);
        }
        let body = match &call.body {
            Some(body) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(body.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let request = builder
            .body(body)
            .with_context(|| format!("building the request {} {uri}", call.method))?;
        sender
            .send_request(request)
            .await
            .with_context(|| format!("{} {uri} on {}", call.method, server.url()))
    }

    /// Sends a request; an answer that is not a success (or a protocol switch) becomes
    /// an [`ApiFailure`].
    pub async fn checked(&self, call: Call<'_>) -> Result<Response<Incoming>> {
        let response = self.send(call).await?;
        let status = response.status();
        if status.is_success() || status == StatusCode::SWITCHING_PROTOCOLS {
            Ok(response)
        } else {
            Err(ApiFailure::from_response(response).await.into())
        }
    }

    /// Sends a request and reads its JSON answer (`null` when the answer is empty).
    pub async fn call(&self, call: Call<'_>) -> Result<Value> {
        let what = format!("{} {}", call.method, call.path);
        let response = self.checked(call).await?;
        let bytes = read_all(response).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "the answer to {what} is not JSON: {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    }

    /// `GET path` → JSON.
    pub async fn get(&self, path: &str) -> Result<Value> {
        self.call(Call::new(Method::GET, path)).await
    }

    /// `GET path` → `T`.
    pub async fn get_as<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let value = self.get(path).await?;
        serde_json::from_value(value).with_context(|| format!("reading the answer to GET {path}"))
    }

    /// `GET path` → text.
    pub async fn get_text(&self, path: &str) -> Result<String> {
        let response = self.checked(Call::new(Method::GET, path)).await?;
        let bytes = read_all(response).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `POST path` with a JSON body → JSON.
    pub async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.call(Call::new(Method::POST, path).json(body)).await
    }

    /// `PATCH path` with a JSON body → JSON.
    pub async fn patch(&self, path: &str, body: Value) -> Result<Value> {
        self.call(Call::new(Method::PATCH, path).json(body)).await
    }

    /// `PUT path` → JSON.
    pub async fn put(&self, path: &str) -> Result<Value> {
        self.call(Call::new(Method::PUT, path)).await
    }

    /// `DELETE path` → JSON (`null` for `204 No Content`).
    pub async fn delete(&self, path: &str) -> Result<Value> {
        self.call(Call::new(Method::DELETE, path)).await
    }
}

/// The whole body of a response.
pub async fn read_all(response: Response<Incoming>) -> Result<Bytes> {
    Ok(response
        .into_body()
        .collect()
        .await
        .context("reading the answer")?
        .to_bytes())
}

/// The next piece of a streamed body; `None` at its end.
pub async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(err)) => return Err(err).context("the stream from the API broke off"),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data()
                    && !data.is_empty()
                {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// Copies a streamed body to stdout as it arrives. Answers `false` when stdout went away
/// first (the reader of `| head` is done), `true` at the body's end.
pub async fn stream_to_stdout(body: &mut Incoming) -> Result<bool> {
    use std::io::Write;
    let mut stdout = std::io::stdout();
    while let Some(chunk) = next_chunk(body).await? {
        if stdout
            .write_all(&chunk)
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Percent-encodes one path segment (`SHA256:a/b+c` → `SHA256%3Aa%2Fb%2Bc`).
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_urls() {
        let server = Server::parse("http://localhost:8080").unwrap();
        assert_eq!(
            (server.host.as_str(), server.port, server.prefix.as_str()),
            ("localhost", 8080, "")
        );
        assert_eq!(server.authority, "localhost:8080");
        let server = Server::parse("http://example.com/api/").unwrap();
        assert_eq!(
            (server.host.as_str(), server.port, server.prefix.as_str()),
            ("example.com", 80, "/api")
        );
        let server = Server::parse("http://[::1]:5000").unwrap();
        assert_eq!((server.host.as_str(), server.port), ("::1", 5000));
        assert_eq!(server.authority, "[::1]:5000");
        let err = Server::parse("https://example.com").unwrap_err();
        assert!(err.to_string().contains("plain http"), "{err}");
        assert!(Server::parse("localhost:8080").is_err());
    }

    #[test]
    fn encodes_path_segments() {
        assert_eq!(segment("web.1"), "web.1");
        assert_eq!(segment("SHA256:ab/c+d="), "SHA256%3Aab%2Fc%2Bd%3D");
    }
}
