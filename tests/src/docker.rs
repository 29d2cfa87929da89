//! The `docker` CLI, for looking at what a user could see with `docker ps` and for
//! cleaning up.

use std::process::{Command, Output};

use crate::util::run;

/// Runs `docker <args>` and returns its output (whatever the exit status).
pub fn docker(args: &[&str]) -> Output {
    run(Command::new("docker").args(args))
}

/// Runs `docker <args>` and returns its non-empty stdout lines; panics if it fails.
pub fn docker_lines(args: &[&str]) -> Vec<String> {
    let output = docker(args);
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// The ids of running containers carrying `label` (`key=value`).
pub fn running_containers(label: &str) -> Vec<String> {
    docker_lines(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label={label}"),
        "--filter",
        "status=running",
    ])
}

/// Removes every container labelled `empire.gateway=<id>` and the images of `apps`.
/// Best effort: cleanup must not hide the test's own failure.
pub(crate) fn cleanup(gateway_id: Option<&str>, apps: &[String]) {
    if let Some(id) = gateway_id {
        let label = format!("label=empire.gateway={id}");
        let output = docker(&["ps", "-aq", "--no-trunc", "--filter", &label]);
        let ids: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().map(String::as_str));
            let out = docker(&args);
            if !out.status.success() {
                eprintln!(
                    "cleanup: docker rm failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    for app in apps {
        let mut images: Vec<String> = Vec::new();
        for filter in [
            format!("reference=empire/{app}"),
            format!("reference=empire/{app}:*"),
            format!("label=empire.app={app}"),
        ] {
            let output = docker(&["images", "-q", "--no-trunc", "--filter", &filter]);
            for id in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                if !images.iter().any(|i| i == id) {
                    images.push(id.to_string());
                }
            }
        }
        if !images.is_empty() {
            let mut args = vec!["rmi", "-f"];
            args.extend(images.iter().map(String::as_str));
            let out = docker(&args);
            if !out.status.success() {
                eprintln!(
                    "cleanup: docker rmi failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}
