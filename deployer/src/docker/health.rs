//! Probes that decide whether a process accepts traffic.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long a connection must stay open, silent or not, to count as accepted. Docker's
/// userland proxy accepts every connection on a published port and closes it at once
/// when nothing listens in the container, so a bare `connect` proves nothing.
const SETTLE: Duration = Duration::from_millis(150);

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProbeFailure {
    /// Nothing accepted the connection (refused, or closed right away).
    NotListening,
    /// The health check answered with a server error.
    Status(u16),
    /// The health check failed at the HTTP level.
    Http(String),
    /// The probe did not finish in time.
    Timeout,
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeFailure::NotListening => f.write_str("nothing accepted connections"),
            ProbeFailure::Status(status) => write!(f, "it answered {status}"),
            ProbeFailure::Http(message) => write!(f, "{message}"),
            ProbeFailure::Timeout => f.write_str("it did not answer in time"),
        }
    }
}

/// Checks that something accepts TCP connections on `addr` and keeps them open.
pub(crate) async fn tcp_check(addr: SocketAddr, timeout: Duration) -> Result<(), ProbeFailure> {
    let check = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|_| ProbeFailure::NotListening)?;
        let mut buf = [0u8; 64];
        match tokio::time::timeout(SETTLE, stream.read(&mut buf)).await {
            // Still open and quiet: a server waiting for its request.
            Err(_) => Ok(()),
            // A banner: something is there.
            Ok(Ok(n)) if n > 0 => Ok(()),
            // Closed or reset right away: the proxy found nothing behind the port.
            Ok(_) => Err(ProbeFailure::NotListening),
        }
    };
    tokio::time::timeout(timeout, check)
        .await
        .unwrap_or(Err(ProbeFailure::Timeout))
}

/// Sends `GET path` with `Host: host` to `addr`; any status below 500 passes.
pub(crate) async fn http_check(
    addr: SocketAddr,
    path: &str,
    host: &str,
    timeout: Duration,
) -> Result<(), ProbeFailure> {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let check = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|_| ProbeFailure::NotListening)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ProbeFailure::Http(e.to_string()))?;
        let connection = tokio::spawn(conn);
        let request = Request::get(path.as_str())
            .header(header::HOST, host)
            .header(header::USER_AGENT, "empire-healthcheck")
            .header(header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| ProbeFailure::Http(format!("invalid health check path {path:?}: {e}")))?;
        let result = sender.send_request(request).await;
        connection.abort();
        match result {
            Ok(response) if response.status().as_u16() < 500 => Ok(()),
            Ok(response) => Err(ProbeFailure::Status(response.status().as_u16())),
            // The proxy closed the connection without an answer: nothing listens.
            Err(err) if err.is_incomplete_message() || err.is_closed() => {
                Err(ProbeFailure::NotListening)
            }
            Err(err) => Err(ProbeFailure::Http(err.to_string())),
        }
    };
    tokio::time::timeout(timeout, check)
        .await
        .unwrap_or(Err(ProbeFailure::Timeout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn tcp_check_tells_listening_from_closing() {
        // A server that keeps connections open passes.
        let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open_addr = open.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = open.accept().await {
                held.push(s);
            }
        });
        assert_eq!(tcp_check(open_addr, Duration::from_secs(2)).await, Ok(()));

        // A proxy-like server that accepts and closes at once fails.
        let closing = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closing_addr = closing.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = closing.accept().await {
                drop(s);
            }
        });
        assert_eq!(
            tcp_check(closing_addr, Duration::from_secs(2)).await,
            Err(ProbeFailure::NotListening)
        );

        // Nothing at all fails.
        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone_addr = gone.local_addr().unwrap();
        drop(gone);
        assert_eq!(
            tcp_check(gone_addr, Duration::from_secs(2)).await,
            Err(ProbeFailure::NotListening)
        );
    }

    async fn answer_with(status: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_check_passes_below_500() {
        let ok = answer_with("404 Not Found").await;
        assert_eq!(
            http_check(ok, "/health", "a.localhost", Duration::from_secs(2)).await,
            Ok(())
        );
        let failing = answer_with("503 Service Unavailable").await;
        assert_eq!(
            http_check(failing, "health", "a.localhost", Duration::from_secs(2)).await,
            Err(ProbeFailure::Status(503))
        );
    }
}
