//! The HTTP listener: the API (see [`crate::api`]), `GET /health` and
//! `GET /openapi.yaml`.
//!
//! One compatibility shim lives at the connection level: Empire's `emp run` attaches by
//! sending `POST /apps/{app}/dynos` with `"attach": true` and no `Upgrade` header, and
//! expects `200 OK` followed by the raw stream on the same connection. hyper hands a
//! connection over only after `101 Switching Protocols` to a request that asked for an
//! upgrade, so [`LegacyAttach`] adds `Upgrade: x-empire-legacy-attach` to exactly such a
//! request (the first on its connection) and turns the `101` status line of its answer
//! into `200 OK`. Every other request and answer passes through untouched.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};

/// Serves the API until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> io::Result<()> {
    axum::serve(LegacyAttachListener(listener), api::router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// A TCP listener whose connections are wrapped in [`LegacyAttach`].
struct LegacyAttachListener(TcpListener);

impl Listener for LegacyAttachListener {
    type Io = LegacyAttach<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = Listener::accept(&mut self.0).await;
        let _ = stream.set_nodelay(true);
        (LegacyAttach::new(stream), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Listener::local_addr(&self.0)
    }
}

/// The most a first request is looked at: head and body.
const SNIFF_LIMIT: usize = 1 << 20;
const SWITCHING: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\n";

/// Where a connection is in being looked at.
const SNIFFING: u8 = 0;
/// The first request was a legacy attach: its `101` becomes `200`.
const ARMED: u8 = 1;
/// Nothing (more) to change.
const PASSTHROUGH: u8 = 2;

/// A connection that rewrites a legacy attached run (see the module docs).
pub struct LegacyAttach<S> {
    inner: S,
    state: Arc<AtomicU8>,
    /// Bytes read while sniffing, served before reading further.
    read_buf: Vec<u8>,
    read_pos: usize,
    /// Bytes of a rewritten status line not yet written.
    write_pending: Vec<u8>,
}

impl<S> LegacyAttach<S> {
    fn new(inner: S) -> Self {
        LegacyAttach {
            inner,
            state: Arc::new(AtomicU8::new(SNIFFING)),
            read_buf: Vec::new(),
            read_pos: 0,
            write_pending: Vec::new(),
        }
    }
}

/// Whether `buf` holds a complete first request that needs the shim, not yet enough to
/// tell (`None`), or one that does not.
fn classify(buf: &[u8]) -> Option<Option<usize>> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() >= SNIFF_LIMIT {
            Some(None)
        } else {
            None
        };
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut words = request_line.split(' ');
    let (method, target, version) = (words.next(), words.next(), words.next());
    let path = target
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default();
    let segments: Vec<&str> = path.split('/').collect();
    let is_run = method == Some("POST")
        && version == Some("HTTP/1.1")
        && segments.len() == 4
        && segments[0].is_empty()
        && segments[1] == "apps"
        && !segments[2].is_empty()
        && segments[3] == "dynos";
    if !is_run {
        return Some(None);
    }
    let mut length = 0usize;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("upgrade") || name.eq_ignore_ascii_case("transfer-encoding") {
            return Some(None);
        }
        if name.eq_ignore_ascii_case("content-length") {
            match value.trim().parse() {
                Ok(n) => length = n,
                Err(_) => return Some(None),
            }
        }
    }
    let body_start = head_end + 4;
    if buf.len() < body_start + length {
        return if body_start + length > SNIFF_LIMIT {
            Some(None)
        } else {
            None
        };
    }
    let attach = serde_json::from_slice::<serde_json::Value>(&buf[body_start..body_start + length])
        .ok()
        .and_then(|body| body.get("attach").and_then(serde_json::Value::as_bool))
        .unwrap_or(false);
    // Where the added header goes: right after the request line.
    Some(attach.then(|| request_line.len() + 2))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl<S: AsyncRead + Unpin> AsyncRead for LegacyAttach<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.state.load(Ordering::Acquire) == SNIFFING {
            match classify(&this.read_buf) {
                None => {
                    let mut chunk = [0u8; 8192];
                    let mut chunk_buf = ReadBuf::new(&mut chunk);
                    match Pin::new(&mut this.inner).poll_read(cx, &mut chunk_buf) {
                        Poll::Ready(Ok(())) if chunk_buf.filled().is_empty() => {
                            // EOF before a whole request: hand over what there is.
                            this.state.store(PASSTHROUGH, Ordering::Release);
                        }
                        Poll::Ready(Ok(())) => this.read_buf.extend_from_slice(chunk_buf.filled()),
                        Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Some(None) => this.state.store(PASSTHROUGH, Ordering::Release),
                Some(Some(at)) => {
                    let header = format!("Upgrade: {}\r\n", api::LEGACY_ATTACH_UPGRADE);
                    this.read_buf.splice(at..at, header.into_bytes());
                    this.state.store(ARMED, Ordering::Release);
                }
            }
        }
        if this.read_pos < this.read_buf.len() {
            let rest = &this.read_buf[this.read_pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.read_pos += n;
            if this.read_pos == this.read_buf.len() {
                this.read_buf = Vec::new();
                this.read_pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> LegacyAttach<S> {
    fn poll_write_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.write_pending.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.write_pending) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    self.write_pending.drain(..n);
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LegacyAttach<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_write_pending(cx))?;
        if this.state.load(Ordering::Acquire) == ARMED {
            this.state.store(PASSTHROUGH, Ordering::Release);
            if buf.starts_with(SWITCHING) {
                this.write_pending = OK.to_vec();
                return Poll::Ready(Ok(SWITCHING.len()));
            }
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_write_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_write_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    // Not vectored, so hyper writes a response head in one buffer.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    fn run_request(body: &str, extra: &str) -> String {
        format!(
            "POST /apps/web/dynos HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// Sends `request` through the shim and returns what the server side reads
    /// (`marked`: expecting the added header).
    async fn through(
        request: &str,
        marked: bool,
    ) -> (
        String,
        LegacyAttach<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
    ) {
        let (mut client, server) = duplex(1 << 16);
        let mut shim = LegacyAttach::new(server);
        client.write_all(request.as_bytes()).await.unwrap();
        let added = format!("Upgrade: {}\r\n", api::LEGACY_ATTACH_UPGRADE).len();
        let expected = request.len() + if marked { added } else { 0 };
        let mut seen = vec![0u8; expected];
        shim.read_exact(&mut seen).await.unwrap();
        (String::from_utf8(seen).unwrap(), shim, client)
    }

    #[tokio::test]
    async fn marks_a_legacy_attach_and_answers_it_200() {
        let request = run_request(r#"{"command":"ls","attach":true}"#, "X-Multiplex: 1\r\n");
        let (seen, mut shim, mut client) = through(&request, true).await;
        assert!(
            seen.starts_with(&format!(
                "POST /apps/web/dynos HTTP/1.1\r\nUpgrade: {}\r\nHost: x\r\n",
                api::LEGACY_ATTACH_UPGRADE
            )),
            "{seen:?}"
        );
        assert!(
            seen.ends_with(r#"{"command":"ls","attach":true}"#),
            "{seen:?}"
        );
        shim.write_all(b"HTTP/1.1 101 Switching Protocols\r\ncontent-type: x\r\n\r\nhello")
            .await
            .unwrap();
        shim.flush().await.unwrap();
        let mut answer = vec![0u8; 256];
        let n = client.read(&mut answer).await.unwrap();
        let mut answer = answer[..n].to_vec();
        while !answer.ends_with(b"hello") {
            let mut more = [0u8; 64];
            let n = client.read(&mut more).await.unwrap();
            answer.extend_from_slice(&more[..n]);
        }
        assert_eq!(
            String::from_utf8(answer).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-type: x\r\n\r\nhello"
        );
    }

    #[tokio::test]
    async fn leaves_other_requests_alone() {
        for request in [
            run_request(r#"{"command":"ls","attach":false}"#, ""),
            run_request(
                r#"{"command":"ls","attach":true}"#,
                "Upgrade: tcp\r\nConnection: Upgrade\r\n",
            ),
            run_request(r#"{"command":"ls","attach":true}"#, "").replace("/dynos", "/dynos/web"),
            "GET /apps HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        ] {
            let (seen, mut shim, mut client) = through(&request, false).await;
            assert_eq!(seen, request);
            shim.write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
                .await
                .unwrap();
            let mut answer = vec![0u8; 64];
            let n = client.read(&mut answer).await.unwrap();
            assert!(answer[..n].starts_with(b"HTTP/1.1 101"), "{request}");
        }
    }

    #[test]
    fn waits_for_the_whole_body() {
        let request = run_request(r#"{"command":"ls","attach":true}"#, "");
        let cut = request.len() - 5;
        assert_eq!(classify(&request.as_bytes()[..cut]), None);
        assert!(matches!(classify(request.as_bytes()), Some(Some(_))));
        assert_eq!(classify(b"GET / HTTP/1.1\r\n\r\n"), Some(None));
    }
}
