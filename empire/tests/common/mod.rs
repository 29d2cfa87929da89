//! Helpers of the API contract tests: a small blocking HTTP/1.1 client that checks every
//! answer against docs/openapi.yaml, a tiny JSON-schema checker, and test images.

#![allow(dead_code)]

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use empire_e2e::Gateway;
use serde_json::Value;

/// The OpenAPI document, as JSON.
pub struct Spec {
    doc: Value,
}

/// The Accept header every request sends unless told otherwise.
pub const ACCEPT: &str = "application/vnd.heroku+json; version=3";

impl Spec {
    /// Parses the YAML document.
    pub fn parse(yaml: &str) -> Spec {
        let doc: Value = serde_norway::from_str(yaml).expect("the OpenAPI document is YAML");
        Spec { doc }
    }

    /// The documented path template a concrete path matches (the most literal one).
    pub fn template(&self, path: &str) -> Option<String> {
        let path = path.split('?').next().unwrap_or_default();
        let segments: Vec<&str> = path.split('/').collect();
        let mut best: Option<(usize, String)> = None;
        for template in self.doc["paths"].as_object().expect("paths").keys() {
            let parts: Vec<&str> = template.split('/').collect();
            if parts.len() != segments.len() {
                continue;
            }
            let mut literal = 0;
            let matches = parts.iter().zip(&segments).all(|(part, segment)| {
                if part.starts_with('{') {
                    !segment.is_empty()
                } else {
                    literal += 1;
                    part == segment
                }
            });
            if matches && best.as_ref().is_none_or(|(n, _)| literal > *n) {
                best = Some((literal, template.clone()));
            }
        }
        best.map(|(_, t)| t)
    }

    fn resolve<'a>(&'a self, mut node: &'a Value) -> &'a Value {
        while let Some(reference) = node.get("$ref").and_then(Value::as_str) {
            let pointer = reference.trim_start_matches('#');
            node = self
                .doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("{reference} does not resolve"));
        }
        node
    }

    /// The documented response of an operation for a status; panics when the operation
    /// or the status is not documented.
    pub fn response(&self, method: &str, path: &str, status: u16) -> &Value {
        let template = self
            .template(path)
            .unwrap_or_else(|| panic!("{method} {path} is not in docs/openapi.yaml"));
        let operation = &self.doc["paths"][&template][method.to_ascii_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {template} is not in docs/openapi.yaml"
        );
        let response = &operation["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {template} answered {status}, which docs/openapi.yaml does not document"
        );
        self.resolve(response)
    }

    /// Checks a JSON body against the documented schema of the response.
    pub fn check(&self, method: &str, path: &str, status: u16, body: &Value) {
        let response = self.response(method, path, status);
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {path} answered {status} with JSON, but the document gives no JSON schema for it"
        );
        if let Err(err) = self.validate(schema, body, "$") {
            panic!(
                "{method} {path} answered {status} with a body that does not match docs/openapi.yaml: {err}\nbody: {body}"
            );
        }
    }

    /// A small JSON-schema check: `$ref`, `type` (one or several), `enum`, `required`,
    /// `properties` (no undocumented properties unless `additionalProperties`), `items`,
    /// `minimum`.
    pub fn validate(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let schema = self.resolve(schema);
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => return Err(format!("{at}: bad type in the schema")),
            };
            let fits = types.iter().any(|t| match *t {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                "null" => value.is_null(),
                _ => false,
            });
            if !fits {
                return Err(format!("{at}: {value} is not of type {types:?}"));
            }
        }
        if value.is_null() {
            return Ok(());
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            return Err(format!("{at}: {value} is not one of {options:?}"));
        }
        if let (Some(minimum), Some(n)) = (
            schema.get("minimum").and_then(Value::as_f64),
            value.as_f64(),
        ) && n < minimum
        {
            return Err(format!("{at}: {n} is below the minimum {minimum}"));
        }
        if let Some(object) = value.as_object() {
            for key in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !object.contains_key(key) {
                    return Err(format!("{at}: the required property {key:?} is missing"));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (key, item) in object {
                let path = format!("{at}.{key}");
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(sub), _) => self.validate(sub, item, &path)?,
                    (None, Some(sub)) if sub.is_object() => self.validate(sub, item, &path)?,
                    (None, Some(Value::Bool(true))) => {}
                    _ if properties.is_some() => {
                        return Err(format!("{path}: the property is not documented"));
                    }
                    _ => {}
                }
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for (i, item) in array.iter().enumerate() {
                self.validate(items, item, &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// When each piece of the body arrived, relative to the request.
    pub chunks: Vec<(Duration, Vec<u8>)>,
}

impl Answer {
    /// The first header named `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the answer is not JSON ({e}): {}", self.text()))
    }

    /// The `message` of an error answer.
    pub fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A client of one gateway's API that checks each answer against the document.
pub struct Api {
    port: u16,
    spec: Spec,
}

/// One request being put together.
pub struct Call<'a> {
    api: &'a Api,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    check: bool,
    timeout: Duration,
}

impl Api {
    /// A client of the gateway's HTTP port, with the document it serves.
    pub fn new(gw: &Gateway) -> Api {
        let port = gw.http_port();
        let yaml = raw_request(
            port,
            "GET",
            "/openapi.yaml",
            &[("Accept".into(), "*/*".into())],
            None,
            Duration::from_secs(10),
        )
        .expect("GET /openapi.yaml");
        assert_eq!(yaml.status, 200, "GET /openapi.yaml: {}", yaml.text());
        Api {
            port,
            spec: Spec::parse(&yaml.text()),
        }
    }

    /// The document.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts a request.
    pub fn call(&self, method: &str, path: &str) -> Call<'_> {
        Call {
            api: self,
            method: method.to_string(),
            path: path.to_string(),
            headers: vec![("Accept".into(), ACCEPT.into())],
            body: None,
            check: true,
            timeout: Duration::from_secs(180),
        }
    }
}

impl Call<'_> {
    /// HTTP Basic auth with the token as the password.
    pub fn token(self, token: &str) -> Self {
        let basic = STANDARD.encode(format!("someone:{token}"));
        self.header("Authorization", &format!("Basic {basic}"))
    }

    /// A header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.into(), value.into()));
        self
    }

    /// A JSON body.
    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body.to_string().into_bytes());
        self.header("Content-Type", "application/json")
    }

    /// A raw body.
    pub fn body(mut self, body: &str) -> Self {
        self.body = Some(body.as_bytes().to_vec());
        self.header("Content-Type", "application/json")
    }

    /// Do not check the answer against the document.
    pub fn unchecked(mut self) -> Self {
        self.check = false;
        self
    }

    /// Sends the request, reads the whole answer and checks it against the document.
    pub fn send(self) -> Answer {
        let answer = raw_request(
            self.api.port,
            &self.method,
            &self.path,
            &self.headers,
            self.body.as_deref(),
            self.timeout,
        )
        .unwrap_or_else(|e| panic!("{} {}: {e}", self.method, self.path));
        if self.check {
            self.check_answer(&answer);
        }
        answer
    }

    fn check_answer(&self, answer: &Answer) {
        let spec = &self.api.spec;
        let response = spec.response(&self.method, &self.path, answer.status);
        let content_type = answer.header("content-type").unwrap_or_default();
        if answer.body.is_empty() && answer.status == 204 {
            return;
        }
        if content_type.starts_with("application/json; boundary=NL") {
            for line in answer.text().lines().filter(|l| !l.trim().is_empty()) {
                let value: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("a streamed line is not JSON ({e}): {line}"));
                spec.check(&self.method, &self.path, answer.status, &value);
            }
        } else if content_type.starts_with("application/json") {
            spec.check(&self.method, &self.path, answer.status, &answer.json());
        } else {
            let documented = response["content"]
                .as_object()
                .is_some_and(|c| c.keys().any(|k| content_type.starts_with(k.as_str())));
            assert!(
                documented,
                "{} {} answered {} as {content_type:?}, which the document does not list",
                self.method, self.path, answer.status
            );
        }
    }
}

/// Sends one request on a fresh connection and reads the answer to its end.
pub fn raw_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<Answer> {
    let started = Instant::now();
    let mut stream = connect(port, timeout)?;
    write_request(&mut stream, method, path, headers, body, true)?;
    let mut reader = Reader::new(stream);
    let (status, headers) = reader.head()?;
    let mut answer = Answer {
        status,
        headers,
        body: Vec::new(),
        chunks: Vec::new(),
    };
    reader.body(&answer.headers.clone(), status, |chunk| {
        answer.chunks.push((started.elapsed(), chunk.to_vec()));
        answer.body.extend_from_slice(chunk);
        true
    })?;
    Ok(answer)
}

/// A connection to the gateway's HTTP port.
pub fn connect(port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// Writes a request head and body.
pub fn write_request(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
    close: bool,
) -> io::Result<()> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str(&format!(
        "Content-Length: {}\r\n\r\n",
        body.map_or(0, <[u8]>::len)
    ));
    stream.write_all(head.as_bytes())?;
    if let Some(body) = body {
        stream.write_all(body)?;
    }
    stream.flush()
}

/// Reads answers from a connection.
pub struct Reader {
    /// The connection.
    pub stream: TcpStream,
    /// Bytes read but not consumed yet.
    pub buf: Vec<u8>,
}

impl Reader {
    /// Wraps a connection.
    pub fn new(stream: TcpStream) -> Reader {
        Reader {
            stream,
            buf: Vec::new(),
        }
    }

    fn more(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16384];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads the status line and headers.
    pub fn head(&mut self) -> io::Result<(u16, Vec<(String, String)>)> {
        let end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at;
            }
            if self.more()? == 0 {
                return Err(bad(format!(
                    "the connection closed inside the head: {:?}",
                    String::from_utf8_lossy(&self.buf)
                )));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Ok((status, headers))
    }

    /// Reads the body, handing each piece to `on_chunk` as it arrives (return false to
    /// stop early).
    pub fn body(
        &mut self,
        headers: &[(String, String)],
        status: u16,
        mut on_chunk: impl FnMut(&[u8]) -> bool,
    ) -> io::Result<()> {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        if status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(());
        }
        if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let line_end = loop {
                    if let Some(at) = find(&self.buf, b"\r\n") {
                        break at;
                    }
                    if self.more()? == 0 {
                        return Err(bad("the connection closed inside a chunk header".into()));
                    }
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| bad(format!("bad chunk size {size_text:?}")))?;
                self.buf.drain(..line_end + 2);
                if size == 0 {
                    return Ok(());
                }
                while self.buf.len() < size + 2 {
                    if self.more()? == 0 {
                        return Err(bad("the connection closed inside a chunk".into()));
                    }
                }
                let chunk: Vec<u8> = self.buf.drain(..size + 2).take(size).collect();
                if !on_chunk(&chunk) {
                    return Ok(());
                }
            }
        } else if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok())
        {
            while self.buf.len() < length {
                if self.more()? == 0 {
                    return Err(bad("the connection closed inside the body".into()));
                }
            }
            let body: Vec<u8> = self.buf.drain(..length).collect();
            on_chunk(&body);
            Ok(())
        } else {
            loop {
                if !self.buf.is_empty() {
                    let chunk = std::mem::take(&mut self.buf);
                    if !on_chunk(&chunk) {
                        return Ok(());
                    }
                }
                if self.more()? == 0 {
                    return Ok(());
                }
            }
        }
    }

    /// Reads everything until the peer closes (what is buffered first).
    pub fn rest(&mut self) -> io::Result<Vec<u8>> {
        while self.more()? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn bad(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Adds a user with `empire users add` (the first user of a gateway is an admin) and
/// returns a new API token from `empire tokens create`.
pub fn user_token(gw: &Gateway, user: &str) -> String {
    let added = gw.empire(&["users", "add", user]);
    assert!(
        added.status.success(),
        "empire users add {user}: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    let created = gw.empire(&["tokens", "create", user]);
    assert!(
        created.status.success(),
        "empire tokens create {user}: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    let token = String::from_utf8_lossy(&created.stdout).trim().to_string();
    assert!(token.starts_with("emp_") && token.len() > 40, "{token:?}");
    token
}

/// Builds `empire/<app>:<tag>`: busybox httpd on `$PORT` serving `index` at `/`
/// (printing `booting <index>` as it starts), and
/// `/cgi-bin/env` answering the `GREETING` and `OTHER` config vars. The gateway removes
/// the image when it is dropped (`track_app`).
pub fn build_image(gw: &Gateway, app: &str, tag: &str, index: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    gw.track_app(app);
    let dir = tempfile::tempdir().expect("a build context");
    let root = dir.path();
    fs::create_dir_all(root.join("www/cgi-bin")).unwrap();
    fs::write(root.join("www/index.html"), format!("{index}\n")).unwrap();
    let cgi = root.join("www/cgi-bin/env");
    fs::write(
        &cgi,
        "#!/bin/sh\necho \"Content-Type: text/plain\"\necho\necho \"GREETING=$GREETING OTHER=$OTHER\"\n",
    )
    .unwrap();
    fs::set_permissions(&cgi, fs::Permissions::from_mode(0o755)).unwrap();
    let image = format!("empire/{app}:{tag}");
    write_dockerfile(root, &image);
    let output = Command::new("docker")
        .args(["build", "-q", "-t", &image])
        .arg(root)
        .output()
        .expect("running docker build");
    assert!(
        output.status.success(),
        "docker build {image}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    image
}

/// The test app's Dockerfile. A label naming the image makes its layers its own: a
/// parallel test removing an identical image cannot remove them.
fn write_dockerfile(root: &Path, image: &str) {
    fs::write(
        root.join("Dockerfile"),
        format!(
            "FROM empire/busybox\nLABEL empire.test.image=\"{image}\"\nCOPY www /www\n\
             CMD [\"/bin/sh\", \"-c\", \"echo booting $(cat /www/index.html); exec httpd -f -p $PORT -h /www\"]\n"
        ),
    )
    .unwrap();
}

/// The lines of a deploy stream, parsed.
pub fn deploy_messages(answer: &Answer) -> Vec<Value> {
    answer
        .text()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Deploys an image through the API and waits until it serves; returns the release.
pub fn deploy(api: &Api, token: &str, app: &str, image: &str) -> u64 {
    let answer = api
        .call("POST", &format!("/apps/{app}/deploys"))
        .token(token)
        .json(serde_json::json!({ "image": image }))
        .send();
    assert_eq!(answer.status, 200, "{}", answer.text());
    let messages = deploy_messages(&answer);
    if let Some(error) = messages.iter().find(|m| m.get("error").is_some()) {
        panic!(
            "deploying {image} to {app} failed: {error}\n{}",
            answer.text()
        );
    }
    messages
        .iter()
        .find_map(|m| m["aux"]["release"].as_u64())
        .unwrap_or_else(|| panic!("no release in the deploy stream:\n{}", answer.text()))
}
