//! Images with a launcher (`empire.launcher=true`, the buildpack images): the docker
//! scheduler keeps their ENTRYPOINT and passes the process command as CMD.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use empire_core::app::AppName;
use empire_core::progress::Progress;
use empire_core::scheduler::{DeploySpec, ProcessSpec, Scheduler};
use empire_deployer::{DockerScheduler, DockerSchedulerOptions, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Builds a busybox image whose ENTRYPOINT is a launcher that sets `GREETING` and runs
/// its one argument with the shell; labelled as a launcher image or not.
fn build_image(tag: &str, labelled: bool) {
    let label = if labelled {
        "LABEL empire.launcher=true\n"
    } else {
        ""
    };
    let dockerfile = format!(
        "FROM empire/busybox:latest\n\
         RUN mkdir -p /empire && printf '#!/bin/sh\\nexport GREETING=\"set by the launcher\"\\nexec /bin/sh -c \"$1\"\\n' > /empire/launch && chmod 755 /empire/launch\n\
         ENTRYPOINT [\"/empire/launch\"]\n{label}"
    );
    let mut build = Command::new("docker")
        .args(["build", "-q", "-t", tag, "-"])
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker build runs");
    build
        .stdin
        .take()
        .unwrap()
        .write_all(dockerfile.as_bytes())
        .unwrap();
    let output = build.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "building {tag} failed (scripts/base-images.sh builds empire/busybox): {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The namespace's containers and the test images go when the test ends.
struct Cleanup {
    namespace: String,
    images: Vec<String>,
    stop: CancellationToken,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.stop.cancel();
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=empire.gateway={}", self.namespace),
        ]);
        for id in ids.lines() {
            docker(&["rm", "-f", id]);
        }
        for image in &self.images {
            docker(&["rmi", "-f", image]);
        }
    }
}

/// GET / of `app` through the router, retried for a few seconds.
fn get(router: SocketAddr, app: &AppName) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut stream = std::net::TcpStream::connect(router)?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(
                stream,
                "GET / HTTP/1.0\r\nHost: {app}.localhost\r\nConnection: close\r\n\r\n"
            )?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        })();
        if let Ok(response) = &attempt
            && response.split(' ').nth(1) == Some("200")
        {
            return response
                .split_once("\r\n\r\n")
                .map(|(_, body)| body.to_string())
                .unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "no answer: {attempt:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launcher_image_keeps_its_entrypoint_and_gets_the_command() {
    let id = suffix();
    let launcher_image = format!("empire-launcher-test:{id}");
    let plain_image = format!("empire-launcher-test:plain-{id}");
    build_image(&launcher_image, true);
    build_image(&plain_image, false);

    let router = Router::new("localhost".into());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let namespace = format!("ltest-{id}");
    let _cleanup = Cleanup {
        namespace: namespace.clone(),
        images: vec![launcher_image.clone(), plain_image.clone()],
        stop: stop.clone(),
    };
    tokio::spawn(router.clone().serve(listener, stop.clone()));
    let scheduler = DockerScheduler::connect(
        router.clone(),
        DockerSchedulerOptions {
            namespace,
            router_port: addr.port(),
            boot_timeout: Duration::from_secs(20),
            worker_settle: Duration::from_secs(1),
            stop_grace: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .await
    .expect("the docker engine is reachable");

    let command = "mkdir -p /tmp/www && echo \"greeting: $GREETING\" > /tmp/www/index.html && exec httpd -f -p $PORT -h /tmp/www";
    for (image, expected) in [
        (&launcher_image, "greeting: set by the launcher\n"),
        // Without the label the command replaces the ENTRYPOINT, as before.
        (&plain_image, "greeting: \n"),
    ] {
        let app = AppName::new(&format!("launch-{}", suffix())).unwrap();
        let spec = DeploySpec {
            app: app.clone(),
            release: 1,
            image: image.clone(),
            config: Default::default(),
            processes: vec![ProcessSpec {
                name: "web".into(),
                command: Some(command.into()),
                quantity: 1,
                healthcheck: None,
                size: Default::default(),
            }],
        };
        scheduler
            .deploy(&spec, &Progress::null())
            .await
            .unwrap_or_else(|err| panic!("deploying {image}: {err}"));
        assert_eq!(get(addr, &app), expected, "{image}");
    }
}
