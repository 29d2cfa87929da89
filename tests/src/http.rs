//! A tiny blocking HTTP/1.1 client over `TcpStream` (GET with a Host header, one
//! request per connection), and the reading of one request for the small servers the
//! tests run as peers of the gateway.

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header names and values in the order received (names as sent).
    pub headers: Vec<(String, String)>,
    /// The body (lossy UTF-8), with chunked encoding undone.
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` on `127.0.0.1:port` with `Host: host`, waiting at most 10 s.
pub fn http_get(port: u16, host: &str, path: &str) -> io::Result<HttpResponse> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: empire-e2e\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )?;
    stream.flush()?;

    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at;
        }
        if read_more(&mut stream, &mut buf)? == 0 {
            return Err(bad(format!(
                "connection closed before the end of the headers: {:?}",
                String::from_utf8_lossy(&buf)
            )));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("not an HTTP/1 status line: {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line: {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut response = HttpResponse {
        status,
        headers,
        body: String::new(),
    };
    let mut rest = buf.split_off(head_end + 4);
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length: Option<usize> = response
        .header("content-length")
        .and_then(|v| v.parse().ok());
    let body = if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if chunked {
        read_chunked(&mut stream, rest)?
    } else if let Some(length) = length {
        while rest.len() < length {
            if read_more(&mut stream, &mut rest)? == 0 {
                return Err(bad(format!(
                    "body ended after {} of {length} bytes",
                    rest.len()
                )));
            }
        }
        rest.truncate(length);
        rest
    } else {
        while read_more(&mut stream, &mut rest)? > 0 {}
        rest
    };
    response.body = String::from_utf8_lossy(&body).into_owned();
    Ok(response)
}

fn read_chunked(stream: &mut TcpStream, mut buf: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(at) = find(&buf, b"\r\n") {
                break at;
            }
            if read_more(stream, &mut buf)? == 0 {
                return Err(bad("connection closed inside a chunk header".into()));
            }
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| bad(format!("bad chunk size {size_text:?}")))?;
        buf.drain(..line_end + 2);
        if size == 0 {
            return Ok(body);
        }
        while buf.len() < size + 2 {
            if read_more(stream, &mut buf)? == 0 {
                return Err(bad("connection closed inside a chunk".into()));
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn bad(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::http_get;

    /// Serves one connection with `answer` and returns the request it read.
    fn serve_once(answer: &'static [u8]) -> (u16, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            stream.write_all(answer).unwrap();
            String::from_utf8(request).unwrap()
        });
        (port, handle)
    }

    #[test]
    fn reads_a_content_length_body_and_sends_the_host() {
        let (port, server) = serve_once(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Request-Id: abc\r\n\r\nhello-and-more",
        );
        let answer = http_get(port, "web.localhost", "/x").unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "hello");
        assert_eq!(answer.header("x-request-id"), Some("abc"));
        let request = server.join().unwrap();
        assert!(request.starts_with("GET /x HTTP/1.1\r\n"), "{request:?}");
        assert!(
            request.contains("\r\nHost: web.localhost\r\n"),
            "{request:?}"
        );
    }

    #[test]
    fn decodes_a_chunked_body() {
        let (port, _server) = serve_once(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nno a\r\n7;x=y\r\npp here\r\n0\r\n\r\n",
        );
        let answer = http_get(port, "x.localhost", "/").unwrap();
        assert_eq!(answer.status, 404);
        assert_eq!(answer.body, "no app here");
    }

    #[test]
    fn reads_to_the_end_without_a_length() {
        let (port, _server) = serve_once(b"HTTP/1.0 502 Bad Gateway\r\n\r\nupstream down");
        let answer = http_get(port, "x.localhost", "/").unwrap();
        assert_eq!(answer.status, 502);
        assert_eq!(answer.body, "upstream down");
    }
}

/// A request a test's server got.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// Header names and values in the order received (names as sent).
    pub headers: Vec<(String, String)>,
    /// The body, with chunked encoding undone.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Reads one request (its body by `Content-Length` or chunked); `None` when the
    /// connection ends or breaks first.
    pub fn read(reader: &mut impl BufRead) -> Option<HttpRequest> {
        let mut request_line = String::new();
        reader.read_line(&mut request_line).ok()?;
        let mut parts = request_line.split_whitespace();
        let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
        let mut request = HttpRequest {
            method,
            target,
            headers: Vec::new(),
            body: Vec::new(),
        };
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                request
                    .headers
                    .push((name.trim().to_string(), value.trim().to_string()));
            }
        }
        if request.header("transfer-encoding") == Some("chunked") {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).ok()?;
                let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk).ok()?;
                if size == 0 {
                    break;
                }
                request.body.extend_from_slice(&chunk[..size]);
            }
        } else {
            let length = request
                .header("content-length")
                .and_then(|v| v.parse().ok());
            request.body = vec![0; length.unwrap_or(0)];
            reader.read_exact(&mut request.body).ok()?;
        }
        Some(request)
    }
}
