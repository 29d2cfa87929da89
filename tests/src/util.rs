//! Paths, names and polling.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The Cargo workspace root (the parent of `tests/`).
pub fn workspace_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `empire` binary under test: `$EMPIRE_BIN`, else `$CARGO_TARGET_DIR/debug/empire`,
/// else `<workspace>/target/debug/empire`. Panics with how to build it when missing.
pub fn empire_bin() -> PathBuf {
    let path = if let Some(bin) = std::env::var_os("EMPIRE_BIN") {
        PathBuf::from(bin)
    } else if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        let target = PathBuf::from(target);
        let target = if target.is_relative() {
            workspace_dir().join(target)
        } else {
            target
        };
        target.join("debug").join("empire")
    } else {
        workspace_dir().join("target").join("debug").join("empire")
    };
    assert!(
        path.is_file(),
        "the empire binary is missing at {}: run `cargo build -p empire` first \
         (or point EMPIRE_BIN at a built binary)",
        path.display()
    );
    path
}

/// A fixture directory: `tests/fixtures/<name>`.
pub fn fixture_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    assert!(
        dir.is_dir(),
        "no fixture named {name:?} at {}",
        dir.display()
    );
    dir
}

/// Six random characters from `[a-z0-9]`.
pub fn random_suffix() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..6)
        .map(|_| CHARS[rand::random_range(0..CHARS.len())] as char)
        .collect()
}

/// A fresh app name: `<prefix>-<6 random chars>` (keep `prefix` ≤ 23 characters, a
/// lowercase letter first, so the name is a valid app name).
pub fn unique_app(prefix: &str) -> String {
    let name = format!("{prefix}-{}", random_suffix());
    assert!(
        name.len() <= 30,
        "app name {name:?} is longer than 30 characters"
    );
    name
}

/// Calls `probe` every 200 ms until it returns `Some`, and returns that; panics naming
/// `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Calls `probe` every 200 ms until it returns true or `timeout` passes; returns
/// whether it did.
pub fn wait_until(timeout: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if probe() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs a command to completion, panicking only when it cannot start.
pub(crate) fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// Runs a command and panics with its output unless it succeeds.
pub(crate) fn run_ok(command: &mut Command) -> Output {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The address a test service gives in `var` (`127.0.0.1:<port>`, or a URL), as
/// scripts/test.sh exports it after starting the service with `setup`.
pub fn service_from_env(var: &str, setup: &str) -> String {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => value.trim().to_string(),
        _ => panic!("{var} is not set: run `export {var}=$({setup})` first (scripts/test.sh does)"),
    }
}
