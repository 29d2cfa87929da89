//! Two gateways on one PostgreSQL database deploy the same app in turn: release numbers
//! and the deploy lease live in the database, so neither gateway double-numbers a
//! release or deploys while the other does. Needs the server that `scripts/postgres.sh`
//! starts (the test command exports `EMPIRE_TEST_DATABASE_URL`).

use std::process::Command;
use std::time::Duration;

use empire_e2e::{Developer, Gateway, TestKey, random_suffix, unique_app};

/// A fresh database on the test server, dropped when the value is.
struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    fn create() -> TestDatabase {
        let admin_url = std::env::var("EMPIRE_TEST_DATABASE_URL").expect(
            "EMPIRE_TEST_DATABASE_URL is not set: run `export EMPIRE_TEST_DATABASE_URL=$(scripts/postgres.sh)` first",
        );
        let name = format!("e2e_{}", random_suffix());
        psql(&admin_url, &format!("CREATE DATABASE {name}"));
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("a database URL ends in /<db>");
        let url = format!("{base}/{name}");
        TestDatabase {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &self.admin_url,
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

fn psql(url: &str, sql: &str) {
    let output = Command::new("psql")
        .args([url, "-qc", sql])
        .output()
        .expect("running psql");
    assert!(
        output.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A developer whose key is stored in the shared database, pushing to `gateway`.
fn developer_on(gateway: &Gateway, database: &TestDatabase, user: &str) -> Developer {
    let key = TestKey::generate();
    let public = key.public_path().to_str().expect("utf-8 path").to_string();
    let output = gateway.empire(&[
        "--database-url",
        &database.url,
        "keys",
        "add",
        user,
        &public,
    ]);
    assert!(
        output.status.success(),
        "keys add: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Developer::new(user, key, gateway.ssh_port())
}

#[test]
fn two_gateways_on_one_database_deploy_the_same_app_in_turn() {
    let database = TestDatabase::create();
    let first = Gateway::builder()
        .env("EMPIRE_DATABASE_URL", &database.url)
        .start();
    let second = Gateway::builder()
        .env("EMPIRE_DATABASE_URL", &database.url)
        .start();
    let alice = developer_on(&first, &database, "alice");
    let alice_on_second = developer_on(&second, &database, "alice");
    let app = unique_app("shared");
    second.track_app(&app);

    let repo = first.app_repo(&alice, "slow-build", &app);
    let other = repo.clone_for(&alice_on_second);
    other.git(&["remote", "set-url", "empire", &second.remote_url(&app)]);

    // Both gateways take a push of the same app at once: one waits for the other.
    let mut on_first = repo.push_streaming();
    on_first.wait_for_line("step-one-started", Duration::from_secs(60));
    other.commit_change("NOTES.md", "pushed to the second gateway\n", "Second");
    let on_second = other.push_streaming().wait();
    let on_first = on_first.wait();
    on_first.assert_success();
    on_second.assert_success();
    on_second.assert_contains("Waiting for the deploy of");
    let mut versions = on_first.released_versions();
    versions.extend(on_second.released_versions());
    versions.sort_unstable();
    assert_eq!(
        versions,
        [1, 2],
        "one release each, numbered by the database:\n{on_first}\n{on_second}"
    );

    // Whichever deployed last serves the app from its own router.
    let last = if on_first.released_versions() == [2] {
        &first
    } else {
        &second
    };
    last.wait_for_body(&app, "slow-build v1", Duration::from_secs(30));
}
