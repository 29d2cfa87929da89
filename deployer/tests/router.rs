//! The router against real little HTTP backends on 127.0.0.1 (no Docker).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use empire_deployer::{Backend, Router};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

type TestBody = BoxBody<Bytes, Infallible>;

fn full(text: impl Into<String>) -> TestBody {
    Full::new(Bytes::from(text.into())).boxed()
}

/// Serves `handler` on a fresh 127.0.0.1 port.
async fn backend<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// A backend that answers every request with `name`.
async fn named(name: &'static str) -> SocketAddr {
    backend(move |_req| async move { Response::new(full(name)) }).await
}

/// A router serving on a fresh port; the token stops it.
async fn router() -> (Arc<Router>, SocketAddr, CancellationToken) {
    let router = Router::new("localhost".into());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    tokio::spawn(router.clone().serve(listener, token.clone()));
    (router, addr, token)
}

struct Answer {
    status: StatusCode,
    body: String,
}

/// One GET on a new connection.
async fn get(router: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let stream = TcpStream::connect(router).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut request = Request::get(path).header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        sender.send_request(request.body(Empty::<Bytes>::new()).unwrap()),
    )
    .await
    .expect("the router answers in time")
    .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

#[tokio::test]
async fn routes_by_host_and_explains_404_and_503() {
    let (router, addr, _token) = router().await;
    let shop = named("shop backend").await;
    router.set_backends("shop", vec![Backend::new("s1", shop)]);

    let answer = get(addr, "shop.localhost", "/", &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "shop backend");
    // Case and port do not matter.
    let answer = get(addr, "SHOP.LocalHost:8080", "/x?y=1", &[]).await;
    assert_eq!(answer.body, "shop backend");

    let answer = get(addr, "nope.localhost", "/", &[]).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(
        answer.body.trim(),
        r#"no app is configured for host "nope.localhost""#
    );
    let answer = get(addr, "example.org", "/", &[]).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);

    router.set_backends("idle", vec![]);
    let answer = get(addr, "idle.localhost", "/", &[]).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body.trim(), r#"app "idle" has no healthy process"#);

    // Custom domains route too.
    router.set_domains("shop", vec!["www.shop.test".into()]);
    let answer = get(addr, "www.shop.test", "/", &[]).await;
    assert_eq!(answer.body, "shop backend");

    router.remove_app("shop");
    assert_eq!(
        get(addr, "shop.localhost", "/", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(addr, "www.shop.test", "/", &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn balances_round_robin() {
    let (router, addr, _token) = router().await;
    let a = named("a").await;
    let b = named("b").await;
    router.set_backends("rr", vec![Backend::new("a", a), Backend::new("b", b)]);
    let mut bodies = Vec::new();
    for _ in 0..6 {
        let answer = get(addr, "rr.localhost", "/", &[]).await;
        assert_eq!(answer.status, StatusCode::OK);
        bodies.push(answer.body);
    }
    assert_ne!(bodies[0], bodies[1], "{bodies:?}");
    for pair in bodies.windows(2) {
        assert_ne!(pair[0], pair[1], "not alternating: {bodies:?}");
    }
}

#[tokio::test]
async fn keeps_client_connections_alive() {
    let (router, addr, _token) = router().await;
    let a = named("kept").await;
    router.set_backends("ka", vec![Backend::new("a", a)]);
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        sender.ready().await.unwrap();
        let response = sender
            .send_request(
                Request::get("/")
                    .header("host", "ka.localhost")
                    .body(Empty::<Bytes>::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "kept");
    }
}

#[tokio::test]
async fn sets_forwarding_headers_and_request_ids() {
    let (router, addr, _token) = router().await;
    let echo = backend(|req: Request<Incoming>| async move {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        Response::new(full(format!(
            "xff={}|proto={}|port={}|id={}|host={}|path={}",
            header("x-forwarded-for"),
            header("x-forwarded-proto"),
            header("x-forwarded-port"),
            header("x-request-id"),
            header("host"),
            req.uri()
        )))
    })
    .await;
    router.set_backends("echo", vec![Backend::new("e", echo)]);

    let answer = get(addr, "echo.localhost", "/p?q=1", &[]).await;
    let fields: Vec<&str> = answer.body.split('|').collect();
    assert_eq!(fields[0], "xff=127.0.0.1");
    assert_eq!(fields[1], "proto=http");
    assert_eq!(fields[2], format!("port={}", addr.port()));
    let id = fields[3].strip_prefix("id=").unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "generated id: {id:?}");
    assert_eq!(fields[4], "host=echo.localhost");
    assert_eq!(fields[5], "path=/p?q=1");

    let answer = get(
        addr,
        "echo.localhost",
        "/",
        &[("x-request-id", "abc-123"), ("x-forwarded-for", "10.1.2.3")],
    )
    .await;
    assert!(answer.body.contains("id=abc-123|"), "{}", answer.body);
    assert!(
        answer.body.starts_with("xff=10.1.2.3, 127.0.0.1|"),
        "{}",
        answer.body
    );
}

/// A backend whose response sends `first`, then waits for the test before `second`.
async fn streaming_backend(
    release: Arc<tokio::sync::Mutex<Option<oneshot::Receiver<()>>>>,
) -> SocketAddr {
    backend(move |_req| {
        let release = release.clone();
        async move {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let _ = tx.send(Ok(Frame::data(Bytes::from("first;")))).await;
                if let Some(gate) = release.lock().await.take() {
                    let _ = gate.await;
                }
                let _ = tx.send(Ok(Frame::data(Bytes::from("second")))).await;
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|frame| (frame, rx))
            });
            Response::new(BoxBody::new(StreamBody::new(stream)))
        }
    })
    .await
}

#[tokio::test]
async fn streams_response_bodies_without_buffering() {
    let (router, addr, _token) = router().await;
    let (open_gate, gate) = oneshot::channel();
    let slow = streaming_backend(Arc::new(tokio::sync::Mutex::new(Some(gate)))).await;
    router.set_backends("stream", vec![Backend::new("s", slow)]);

    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = sender
        .send_request(
            Request::get("/")
                .header("host", "stream.localhost")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    // The first chunk arrives while the backend is still holding back the second.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the first chunk arrives before the response is complete")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(first, "first;");
    open_gate.send(()).unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(rest, "second");
}

#[tokio::test]
async fn streams_request_bodies_to_the_backend() {
    let (router, addr, _token) = router().await;
    let echo = backend(|req: Request<Incoming>| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Response::new(full(format!("got {} bytes", body.len())))
    })
    .await;
    router.set_backends("upload", vec![Backend::new("u", echo)]);
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let payload = Bytes::from(vec![b'x'; 3 * 1024 * 1024]);
    let response = sender
        .send_request(
            Request::post("/upload")
                .header("host", "upload.localhost")
                .body(Full::new(payload))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, format!("got {} bytes", 3 * 1024 * 1024));
}

#[tokio::test]
async fn passes_websocket_upgrades_through() {
    let (router, addr, _token) = router().await;
    let ws = backend(|mut req: Request<Incoming>| async move {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 1024];
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut reply = b"echo:".to_vec();
                        reply.extend_from_slice(&buf[..n]);
                        if io.write_all(&reply).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .body(full(""))
            .unwrap()
    })
    .await;
    router.set_backends("ws", vec![Backend::new("w", ws)]);

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(
            b"GET /socket HTTP/1.1\r\nHost: ws.localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut byte))
            .await
            .expect("the router answers the upgrade")
            .unwrap();
        assert_eq!(
            n,
            1,
            "connection closed after {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");

    for message in ["ping", "second message"] {
        client.write_all(message.as_bytes()).await.unwrap();
        let expected = format!("echo:{message}");
        let mut reply = vec![0u8; expected.len()];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut reply))
            .await
            .expect("the echo comes back through the router")
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&reply), expected);
    }
}

#[tokio::test]
async fn drain_waits_for_requests_still_streaming() {
    let (router, addr, _token) = router().await;
    let (open_gate, gate) = oneshot::channel();
    let old = streaming_backend(Arc::new(tokio::sync::Mutex::new(Some(gate)))).await;
    let new = named("new").await;
    let old_backend = Backend::new("old", old);
    router.set_backends("app", vec![old_backend.clone()]);

    // A slow request to the old backend: headers and a first chunk, then it waits.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = sender
        .send_request(
            Request::get("/")
                .header("host", "app.localhost")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let slow =
        tokio::spawn(async move { response.into_body().collect().await.unwrap().to_bytes() });
    assert_eq!(router.inflight("app", &old_backend), 1);

    // Switch: new requests go to the new backend at once.
    router.set_backends("app", vec![Backend::new("new", new)]);
    assert_eq!(get(addr, "app.localhost", "/", &[]).await.body, "new");
    assert_eq!(router.known_backends("app").len(), 2);

    // A drain with a short timeout gives up and reports what is left.
    let left = router
        .drain(
            "app",
            std::slice::from_ref(&old_backend),
            Duration::from_millis(200),
        )
        .await;
    assert_eq!(left, 1);

    let drain = {
        let router = router.clone();
        let old_backend = old_backend.clone();
        tokio::spawn(async move {
            router
                .drain("app", &[old_backend], Duration::from_secs(10))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !drain.is_finished(),
        "drain returned while a request streams"
    );
    open_gate.send(()).unwrap();
    let left = tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(left, 0);
    assert_eq!(slow.await.unwrap(), "first;second");
    assert_eq!(router.inflight("app", &old_backend), 0);
}

#[tokio::test]
async fn answers_502_and_retries_another_backend_when_one_is_down() {
    let (router, addr, _token) = router().await;
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = gone.local_addr().unwrap();
    drop(gone);
    let alive = named("alive").await;

    router.set_backends("flaky", vec![Backend::new("dead", dead)]);
    let answer = get(addr, "flaky.localhost", "/", &[]).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(
        answer.body.contains(r#"app "flaky" did not answer"#),
        "{}",
        answer.body
    );

    router.set_backends(
        "flaky",
        vec![Backend::new("dead", dead), Backend::new("alive", alive)],
    );
    for _ in 0..4 {
        let answer = get(addr, "flaky.localhost", "/", &[]).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, "alive");
    }
}

#[tokio::test]
async fn stops_serving_on_shutdown() {
    let router = Router::new("localhost".into());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    let served = tokio::spawn(router.clone().serve(listener, token.clone()));
    assert_eq!(
        get(addr, "x.localhost", "/", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    token.cancel();
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("serve returns after shutdown")
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}
