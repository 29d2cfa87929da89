//! Every server setting can come from flags (the other tests), `EMPIRE_*` environment
//! variables or a `--config` TOML file.

use std::time::Duration;

use empire_e2e::{Gateway, SettingsVia, unique_app};

#[test]
fn settings_from_the_environment() {
    // The ports, data dir and domain come only from EMPIRE_* variables: the gateway
    // answering on them and serving a push proves they were read.
    let gw = Gateway::builder().settings_via(SettingsVia::Env).start();
    let dev = gw.developer("alice");
    let app = unique_app("envcfg");
    let repo = gw.app_repo(&dev, "web-httpd", &app);
    let push = repo.push();
    push.assert_success();
    push.assert_contains(&gw.app_url(&app));
    gw.wait_for_body(&app, "web-httpd v1", Duration::from_secs(5));
}

#[test]
fn a_switch_from_the_environment() {
    let gw = Gateway::builder()
        .settings_via(SettingsVia::Env)
        .no_autocreate()
        .start();
    let dev = gw.developer("alice");
    let app = unique_app("envauto");
    let push = gw.app_repo(&dev, "web-httpd", &app).push();
    push.assert_failure();
    assert!(
        push.lines_without_url().iter().any(|l| l.contains(&app)),
        "EMPIRE_NO_AUTOCREATE=true should refuse the unknown app {app:?}:\n{push}"
    );
}

#[test]
fn settings_from_a_config_file() {
    let gw = Gateway::builder()
        .settings_via(SettingsVia::ConfigFile)
        .start();
    let dev = gw.developer("alice");
    let app = unique_app("filecfg");
    let repo = gw.app_repo(&dev, "web-httpd", &app);
    let push = repo.push();
    push.assert_success();
    push.assert_contains(&gw.app_url(&app));
    gw.wait_for_body(&app, "web-httpd v1", Duration::from_secs(5));
}

#[test]
fn a_switch_from_a_config_file() {
    let gw = Gateway::builder()
        .settings_via(SettingsVia::ConfigFile)
        .no_autocreate()
        .start();
    let dev = gw.developer("alice");
    let app = unique_app("fileauto");
    let push = gw.app_repo(&dev, "web-httpd", &app).push();
    push.assert_failure();
    assert!(
        push.lines_without_url().iter().any(|l| l.contains(&app)),
        "`no_autocreate = true` should refuse the unknown app {app:?}:\n{push}"
    );
}

#[test]
fn the_banner_says_where_it_listens_and_how_to_push() {
    let gw = Gateway::start();
    let log = gw.log();
    assert!(
        log.contains(&format!("127.0.0.1:{}", gw.ssh_port())),
        "the banner should show the SSH listener:\n{log}"
    );
    assert!(
        log.contains(&format!("{}", gw.router_port())),
        "the banner should show the router listener:\n{log}"
    );
    assert!(
        log.contains("keys add"),
        "the banner should say how to add a key:\n{log}"
    );
    assert!(
        log.contains("git push"),
        "the banner should say how to push:\n{log}"
    );
}

#[test]
fn a_given_host_key_is_the_one_clients_see() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("host_key");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "host", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let listed = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(dir.path().join("host_key.pub"))
        .output()
        .unwrap();
    let expected = String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();

    let gw = Gateway::builder()
        .arg("--host-key")
        .arg(key.to_str().unwrap())
        .start();
    assert_eq!(gw.host_key_fingerprint(), expected);
}
