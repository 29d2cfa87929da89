//! The PostgreSQL store against a real server: the store behaviour suite, and two
//! stores ("two gateways") sharing one database.
//!
//! Needs `EMPIRE_TEST_DATABASE_URL`, a URL whose role may create databases:
//!
//! ```sh
//! export EMPIRE_TEST_DATABASE_URL=$(scripts/postgres.sh)
//! cargo test -p empire-core --test postgres_store
//! ```
//!
//! Every test makes its own database (`t_<random>`) and drops it at the end, so tests
//! run in parallel.

mod store_suite;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use empire_core::Error;
use empire_core::app::AppName;
use empire_core::release::NewRelease;
use empire_core::store::{PostgresStore, Store};
use tokio_postgres::NoTls;

const URL_VAR: &str = "EMPIRE_TEST_DATABASE_URL";

fn admin_url() -> String {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "{URL_VAR} is not set: the PostgreSQL store tests need a server. Start one with \
             `export {URL_VAR}=$(scripts/postgres.sh)` (from the repository root) and run \
             the tests again"
        ),
    }
}

/// `url` with its database name replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(query) => format!("{host_part}/{db}?{query}"),
        None => format!("{host_part}/{db}"),
    }
}

/// A database of its own for one test.
struct TestDb {
    admin: String,
    name: String,
    url: String,
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to {url} ({URL_VAR}); is scripts/postgres.sh running? {e}")
        });
    tokio::spawn(connection);
    client
}

impl TestDb {
    async fn create() -> TestDb {
        let admin = admin_url();
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        admin_client(&admin)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let url = with_database(&admin, &name);
        TestDb { admin, name, url }
    }

    async fn drop(self) {
        admin_client(&self.admin)
            .await
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .unwrap();
    }
}

/// Runs `test` with the URL of a fresh database, drops the database, then passes on the
/// test's panic if it had one.
async fn with_db<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let db = TestDb::create().await;
    let outcome = tokio::spawn(test(db.url.clone())).await;
    db.drop().await;
    if let Err(err) = outcome {
        match err.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(err) => panic!("test task failed: {err}"),
        }
    }
}

/// Runs a behaviour of the suite on a store over a fresh database.
async fn with_postgres<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_db(|url| async move {
        let store = PostgresStore::connect(&url).await.unwrap();
        test(Arc::new(store)).await;
    })
    .await;
}

store_suite::store_suite!(crate::with_postgres);

fn app(name: &str) -> AppName {
    AppName::new(name).unwrap()
}

fn release(description: &str) -> NewRelease {
    NewRelease {
        commit: None,
        user: "alice".to_string(),
        description: description.to_string(),
        config: Default::default(),
    }
}

/// Two gateways' stores on one database.
async fn two_gateways(url: &str) -> (Arc<dyn Store>, Arc<dyn Store>) {
    let (a, b) = tokio::join!(PostgresStore::connect(url), PostgresStore::connect(url));
    (Arc::new(a.unwrap()), Arc::new(b.unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_number_concurrent_releases_once_each() {
    with_db(|url| async move {
        let (a, b) = two_gateways(&url).await;
        store_suite::two_handles_number_releases_once(a, b).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_held_by_one_gateway_is_refused_to_the_other() {
    with_db(|url| async move {
        let (a, b) = two_gateways(&url).await;
        store_suite::two_handles_share_one_lease(a, b, Duration::from_millis(300)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateways_starting_together_migrate_once() {
    with_db(|url| async move {
        let connects: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { PostgresStore::connect(&url).await })
            })
            .collect();
        let mut stores = Vec::new();
        for connect in connects {
            stores.push(connect.await.unwrap().unwrap());
        }
        // Only one user can be the first (an admin), whichever gateway makes it.
        let users: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, store)| {
                let store = store.clone();
                tokio::spawn(async move { store.create_user(&format!("user{i}"), false).await })
            })
            .collect();
        let mut admins = 0;
        for user in users {
            admins += usize::from(user.await.unwrap().unwrap().admin);
        }
        assert_eq!(admins, 1);
        assert_eq!(stores[3].users().await.unwrap().len(), 4);

        let client = admin_client(&url).await;
        let applied: Vec<String> = client
            .query("SELECT version FROM schema_migrations", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(applied, ["0001_init", "0002_builds", "0003_webhooks"]);
        // Connecting again applies nothing.
        drop(PostgresStore::connect(&url).await.unwrap());
        let count: i64 = client
            .query_one("SELECT count(*) FROM schema_migrations", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(count, 3);
    })
    .await;
}

#[tokio::test]
async fn a_schema_newer_than_this_binary_is_refused() {
    with_db(|url| async move {
        drop(PostgresStore::connect(&url).await.unwrap());
        admin_client(&url)
            .await
            .batch_execute("INSERT INTO schema_migrations (version) VALUES ('9999_future')")
            .await
            .unwrap();
        let err = PostgresStore::connect(&url).await.unwrap_err();
        assert!(matches!(err, Error::Store(_)), "{err:?}");
        assert!(
            err.to_string()
                .contains("has migration 9999_future, newer than this empire knows"),
            "{err}"
        );
    })
    .await;
}

#[tokio::test]
async fn connection_errors_say_where() {
    let err = PostgresStore::connect("postgres://nobody@127.0.0.1:1/nowhere")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("store error: cannot connect to PostgreSQL at 127.0.0.1:1/nowhere"),
        "{err}"
    );
    let err = PostgresStore::connect("postgres://[bad").await.unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
}

#[tokio::test]
async fn text_postgres_cannot_hold_is_kept_readable() {
    with_db(|url| async move {
        let store = PostgresStore::connect(&url).await.unwrap();
        store.create_user("alice", false).await.unwrap();
        store.create_app(&app("web"), "alice").await.unwrap();
        store
            .create_release(&app("web"), release("d"))
            .await
            .unwrap();
        // Build output may carry NUL bytes; the log keeps the rest of the line.
        store
            .append_deploy_log(&app("web"), 1, "before\0after\n")
            .await
            .unwrap();
        assert_eq!(
            store.deploy_log(&app("web"), 1).await.unwrap(),
            "before\u{fffd}after\n"
        );
    })
    .await;
}

#[test]
fn database_names_are_swapped_in_urls() {
    assert_eq!(
        with_database("postgres://u@127.0.0.1:55432/empire_test", "t_1"),
        "postgres://u@127.0.0.1:55432/t_1"
    );
    assert_eq!(
        with_database("postgres://u@h/db?sslmode=disable", "t_2"),
        "postgres://u@h/t_2?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h", "t_3"), "postgres://u@h/t_3");
}
