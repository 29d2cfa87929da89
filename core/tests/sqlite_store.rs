//! The SQLite store on a real file, shared by several handles as the gateway daemon and
//! the `empire` CLI share it, and the store behaviour suite run on it.

mod store_suite;

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use empire_core::Error;
use empire_core::app::AppName;
use empire_core::release::{NewRelease, ReleaseStatus};
use empire_core::store::{SqliteStore, Store};

/// Runs a behaviour of the suite on a fresh database file.
async fn with_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("empire.db"))
        .await
        .unwrap();
    test(Arc::new(store)).await;
}

store_suite::store_suite!(crate::with_sqlite);

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

fn pragma(path: &Path, name: &str) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(&format!("PRAGMA {name}"), [], |row| {
        row.get::<_, rusqlite::types::Value>(0)
    })
    .map(|v| match v {
        rusqlite::types::Value::Integer(i) => i.to_string(),
        rusqlite::types::Value::Text(t) => t,
        other => format!("{other:?}"),
    })
    .unwrap()
}

/// Two handles on one database file.
async fn two_handles() -> (tempfile::TempDir, Arc<dyn Store>, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empire.db");
    let a = SqliteStore::open(&path).await.unwrap();
    let b = SqliteStore::open(&path).await.unwrap();
    (dir, Arc::new(a), Arc::new(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_release_numbering_is_unique_across_handles() {
    let (_dir, a, b) = two_handles().await;
    store_suite::two_handles_number_releases_once(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_held_by_one_handle_is_refused_to_the_other() {
    let (_dir, a, b) = two_handles().await;
    store_suite::two_handles_share_one_lease(a, b, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn the_first_user_is_admin_whichever_handle_creates_users() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empire.db");
    let a = SqliteStore::open(&path).await.unwrap();
    let b = SqliteStore::open(&path).await.unwrap();
    assert!(b.create_user("root", false).await.unwrap().admin);
    assert!(!a.create_user("dev", false).await.unwrap().admin);
    assert!(a.user("root").await.unwrap().admin);
    let err = a.create_user("root", false).await.unwrap_err();
    assert_eq!(err.to_string(), "user root already exists");
}

#[tokio::test]
async fn reopening_keeps_data_and_applies_no_migration_twice() {
    let dir = tempfile::tempdir().unwrap();
    // The parent directory does not exist yet.
    let path = dir.path().join("var/lib/empire/empire.db");
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store.create_user("alice", false).await.unwrap();
        store.create_app(&app("web"), "alice").await.unwrap();
        store
            .create_release(&app("web"), release("v1"))
            .await
            .unwrap();
    }
    assert_eq!(pragma(&path, "journal_mode"), "wal");
    let version = pragma(&path, "user_version");
    assert_ne!(version, "0");

    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(pragma(&path, "user_version"), version);
    assert!(store.user("alice").await.unwrap().admin);
    // Numbering continues where it was.
    let v2 = store
        .create_release(&app("web"), release("v2"))
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handles_opening_a_new_file_at_once_migrate_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empire.db");
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move { SqliteStore::open(&path).await })
        })
        .collect();
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.unwrap().unwrap());
    }
    stores[0].create_user("alice", false).await.unwrap();
    assert_eq!(stores[3].users().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_schema_newer_than_this_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empire.db");
    drop(SqliteStore::open(&path).await.unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 999)
        .unwrap();
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err:?}");
    assert!(
        err.to_string().contains("schema is at version 999"),
        "{err}"
    );
}

#[tokio::test]
async fn every_error_names_what_it_is_about() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("empire.db"))
        .await
        .unwrap();
    let web = app("web");
    store.create_user("alice", false).await.unwrap();
    store
        .add_key("alice", "SHA256:abc", "ssh-ed25519 AAAA alice")
        .await
        .unwrap();
    store.create_app(&web, "alice").await.unwrap();
    store.create_release(&web, release("v1")).await.unwrap();

    let cases: Vec<(Error, &str)> = vec![
        (
            store.create_user("alice", true).await.unwrap_err(),
            "user alice already exists",
        ),
        (store.user("bob").await.unwrap_err(), "user not found: bob"),
        (
            store
                .add_key("bob", "SHA256:new", "ssh-ed25519 B")
                .await
                .unwrap_err(),
            "user not found: bob",
        ),
        (
            store
                .add_key("alice", "SHA256:abc", "ssh-ed25519 C")
                .await
                .unwrap_err(),
            "key SHA256:abc is already registered to user alice",
        ),
        (
            store.key("SHA256:nope").await.unwrap_err(),
            "key not found: SHA256:nope",
        ),
        (
            store.remove_key("SHA256:nope").await.unwrap_err(),
            "key not found: SHA256:nope",
        ),
        (
            store.create_app(&web, "alice").await.unwrap_err(),
            "app web already exists",
        ),
        (
            store.create_app(&app("api"), "bob").await.unwrap_err(),
            "user not found: bob",
        ),
        (
            store.app(&app("api")).await.unwrap_err(),
            "app not found: api",
        ),
        (
            store
                .create_release(&app("api"), release("x"))
                .await
                .unwrap_err(),
            "app not found: api",
        ),
        (
            store.release(&web, 5).await.unwrap_err(),
            "release not found: web v5",
        ),
        (
            store
                .set_release_status(&web, 1, ReleaseStatus::Succeeded, None)
                .await
                .unwrap_err(),
            "release web v1 cannot move from pending to succeeded",
        ),
        (
            store
                .renew_lease(&web, "nobody", Duration::from_secs(1))
                .await
                .unwrap_err(),
            "deploy lease of web was lost",
        ),
    ];
    let mut kinds = BTreeSet::new();
    for (err, message) in cases {
        assert_eq!(err.to_string(), message);
        let kind = match err {
            Error::NotFound { .. } => "not found",
            Error::Conflict(_) => "conflict",
            other => panic!("unexpected variant for {message:?}: {other:?}"),
        };
        let expected = if message.contains("not found") {
            "not found"
        } else {
            "conflict"
        };
        assert_eq!(kind, expected, "{message}");
        kinds.insert(kind);
    }
    assert_eq!(kinds.len(), 2);
}
