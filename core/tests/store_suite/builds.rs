//! The store behaviours of connected repositories, builds and seen deliveries ([`BuildStore`]),
//! run on every store by `store_suite!`.

use std::sync::Arc;

use empire_core::store::{BuildStatus, DeployKey, NewBuild, NewConnection, Store};

use super::{app, assert_conflict, assert_not_found, assert_recent, with_web};

/// One `#[tokio::test]` per behaviour of this file, each run by `$harness`.
macro_rules! build_store_tests {
    ($harness:path) => {
        $crate::store_suite::store_suite_tests!($harness; in builds;
            connections_are_made_replaced_and_removed,
            deliveries_are_new_once_per_app,
            builds_are_listed_newest_first_per_app,
            builds_walk_from_queued_to_an_end,
            build_logs_are_read_on_from_where_a_reader_stopped,
            deleting_an_app_removes_its_connection_and_builds,
        );
    };
}

pub(crate) use build_store_tests;

fn connection(url: &str, key: bool) -> NewConnection {
    NewConnection {
        repo_url: url.to_string(),
        branch: "main".to_string(),
        secret: "s3cret-s3cret".to_string(),
        deploy_key: key.then(|| DeployKey {
            public: "ssh-ed25519 AAAAC3 empire".to_string(),
            private: "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n"
                .to_string(),
        }),
    }
}

fn push(commit: &str, delivery: Option<&str>) -> NewBuild {
    NewBuild {
        source: "github".to_string(),
        commit: commit.to_string(),
        reference: "refs/heads/main".to_string(),
        pusher: "octocat".to_string(),
        message: "Fix the thing\n\nBecause".to_string(),
        delivery: delivery.map(str::to_string),
        gateway: Some("gw-1".to_string()),
    }
}

pub async fn connections_are_made_replaced_and_removed(store: Arc<dyn Store>) {
    with_web(store.as_ref()).await;
    let web = app("web");
    assert_not_found(
        store.repo_connection(&web).await.unwrap_err(),
        "connection not found: web is not connected to a repository",
    );
    let made = store
        .connect_repo(&web, &connection("git@github.com:acme/web.git", true))
        .await
        .unwrap();
    assert_eq!(made.app, web);
    assert_eq!(made.repo_url, "git@github.com:acme/web.git");
    assert_eq!(made.branch, "main");
    assert_eq!(made.secret, "s3cret-s3cret");
    assert_eq!(
        made.deploy_key.as_ref().unwrap().public,
        "ssh-ed25519 AAAAC3 empire"
    );
    assert!(
        made.deploy_key
            .as_ref()
            .unwrap()
            .private
            .contains("OPENSSH")
    );
    assert_recent(made.created_at);
    assert_eq!(store.repo_connection(&web).await.unwrap(), made);

    // Connecting again replaces it.
    let mut https = connection("https://gitlab.com/acme/web.git", false);
    https.branch = "production".to_string();
    let replaced = store.connect_repo(&web, &https).await.unwrap();
    assert_eq!(replaced.repo_url, "https://gitlab.com/acme/web.git");
    assert_eq!(replaced.branch, "production");
    assert_eq!(replaced.deploy_key, None);
    assert_eq!(store.repo_connection(&web).await.unwrap(), replaced);

    store.disconnect_repo(&web).await.unwrap();
    assert_not_found(
        store.disconnect_repo(&web).await.unwrap_err(),
        "connection not found: web is not connected to a repository",
    );
    assert!(store.repo_connection(&web).await.is_err());
    assert_not_found(
        store.connect_repo(&app("nope"), &https).await.unwrap_err(),
        "app not found: nope",
    );
    assert_not_found(
        store.repo_connection(&app("nope")).await.unwrap_err(),
        "app not found: nope",
    );
}

pub async fn deliveries_are_new_once_per_app(store: Arc<dyn Store>) {
    with_web(store.as_ref()).await;
    store.create_app(&app("api"), "bob").await.unwrap();
    assert!(store.record_delivery(&app("web"), "d-1").await.unwrap());
    assert!(!store.record_delivery(&app("web"), "d-1").await.unwrap());
    assert!(store.record_delivery(&app("web"), "d-2").await.unwrap());
    // Another app's hook may carry the same ID.
    assert!(store.record_delivery(&app("api"), "d-1").await.unwrap());
    assert_not_found(
        store
            .record_delivery(&app("nope"), "d-1")
            .await
            .unwrap_err(),
        "app not found: nope",
    );
}

pub async fn builds_are_listed_newest_first_per_app(store: Arc<dyn Store>) {
    with_web(store.as_ref()).await;
    let (web, api) = (app("web"), app("api"));
    store.create_app(&api, "bob").await.unwrap();
    let first = store
        .create_build(
            &web,
            &push("1111111111111111111111111111111111111111", Some("d-1")),
        )
        .await
        .unwrap();
    assert_eq!(first.app, web);
    assert_eq!(first.status, BuildStatus::Queued);
    assert_eq!(first.source, "github");
    assert_eq!(first.commit, "1111111111111111111111111111111111111111");
    assert_eq!(first.reference, "refs/heads/main");
    assert_eq!(first.pusher, "octocat");
    assert_eq!(first.message, "Fix the thing\n\nBecause");
    assert_eq!(first.delivery.as_deref(), Some("d-1"));
    assert_eq!(first.gateway.as_deref(), Some("gw-1"));
    assert_eq!((first.release, first.failure.as_deref()), (None, None));
    assert_recent(first.created_at);
    let other = store
        .create_build(
            &api,
            &push("2222222222222222222222222222222222222222", None),
        )
        .await
        .unwrap();
    let second = store
        .create_build(
            &web,
            &push("3333333333333333333333333333333333333333", None),
        )
        .await
        .unwrap();
    assert!(second.id > first.id);
    let ids: Vec<i64> = store
        .builds(&web, 10)
        .await
        .unwrap()
        .iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(ids, [second.id, first.id]);
    assert_eq!(
        store.builds(&web, 1).await.unwrap(),
        std::slice::from_ref(&second)
    );
    assert_eq!(store.build(&web, first.id).await.unwrap(), first);
    // A build is only found under its own app.
    assert_not_found(
        store.build(&web, other.id).await.unwrap_err(),
        &format!("build not found: {} of app web", other.id),
    );
    assert_not_found(
        store.builds(&app("nope"), 5).await.unwrap_err(),
        "app not found: nope",
    );
}

pub async fn builds_walk_from_queued_to_an_end(store: Arc<dyn Store>) {
    with_web(store.as_ref()).await;
    let web = app("web");
    let a = store
        .create_build(
            &web,
            &push("1111111111111111111111111111111111111111", None),
        )
        .await
        .unwrap();
    let b = store
        .create_build(
            &web,
            &push("2222222222222222222222222222222222222222", None),
        )
        .await
        .unwrap();
    let c = store
        .create_build(
            &web,
            &push("3333333333333333333333333333333333333333", None),
        )
        .await
        .unwrap();
    let unfinished: Vec<i64> = store
        .unfinished_builds()
        .await
        .unwrap()
        .iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(unfinished, [a.id, b.id, c.id]);

    store
        .set_build_status(&web, a.id, BuildStatus::Running, None, None)
        .await
        .unwrap();
    store
        .set_build_status(&web, a.id, BuildStatus::Succeeded, Some(4), None)
        .await
        .unwrap();
    let done = store.build(&web, a.id).await.unwrap();
    assert_eq!(done.status, BuildStatus::Succeeded);
    assert_eq!(done.release, Some(4));
    assert!(done.updated_at >= done.created_at);
    assert_conflict(
        store
            .set_build_status(&web, a.id, BuildStatus::Running, None, None)
            .await
            .unwrap_err(),
        &format!("build {} cannot move from succeeded to running", a.id),
    );

    // A waiting build is superseded without running.
    store
        .set_build_status(
            &web,
            b.id,
            BuildStatus::Superseded,
            None,
            Some("superseded by build 3"),
        )
        .await
        .unwrap();
    let skipped = store.build(&web, b.id).await.unwrap();
    assert_eq!(skipped.status, BuildStatus::Superseded);
    assert_eq!(skipped.failure.as_deref(), Some("superseded by build 3"));

    store
        .set_build_status(&web, c.id, BuildStatus::Running, None, None)
        .await
        .unwrap();
    assert_conflict(
        store
            .set_build_status(&web, c.id, BuildStatus::Queued, None, None)
            .await
            .unwrap_err(),
        &format!("build {} cannot move from running to queued", c.id),
    );
    let unfinished: Vec<i64> = store
        .unfinished_builds()
        .await
        .unwrap()
        .iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(unfinished, [c.id]);
    store
        .set_build_status(
            &web,
            c.id,
            BuildStatus::Failed,
            None,
            Some("build failed: x"),
        )
        .await
        .unwrap();
    let failed = store.build(&web, c.id).await.unwrap();
    assert_eq!(
        (failed.status, failed.failure.as_deref()),
        (BuildStatus::Failed, Some("build failed: x"))
    );
    assert!(store.unfinished_builds().await.unwrap().is_empty());
    assert_not_found(
        store
            .set_build_status(&web, 999_999, BuildStatus::Running, None, None)
            .await
            .unwrap_err(),
        "build not found: 999999 of app web",
    );
}

pub async fn build_logs_are_read_on_from_where_a_reader_stopped(store: Arc<dyn Store>) {
    with_web(store.as_ref()).await;
    let web = app("web");
    let build = store
        .create_build(
            &web,
            &push("1111111111111111111111111111111111111111", None),
        )
        .await
        .unwrap();
    assert!(store.build_log(&web, build.id, 0).await.unwrap().is_empty());
    store
        .append_build_log(&web, build.id, "-----> Fetching\n")
        .await
        .unwrap();
    store
        .append_build_log(&web, build.id, "       one\n       two\n")
        .await
        .unwrap();
    let all = store.build_log(&web, build.id, 0).await.unwrap();
    let text: String = all.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(text, "-----> Fetching\n       one\n       two\n");
    let last = all.last().unwrap().seq;
    assert!(
        store
            .build_log(&web, build.id, last)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .append_build_log(&web, build.id, "-----> Released v1\n")
        .await
        .unwrap();
    let more = store.build_log(&web, build.id, last).await.unwrap();
    assert_eq!(more.len(), 1);
    assert_eq!(more[0].text, "-----> Released v1\n");
    assert!(more[0].seq > last);
    assert_not_found(
        store.build_log(&web, 999_999, 0).await.unwrap_err(),
        "build not found: 999999 of app web",
    );
    assert_not_found(
        store
            .append_build_log(&web, 999_999, "x\n")
            .await
            .unwrap_err(),
        "build not found: 999999 of app web",
    );
}

pub async fn deleting_an_app_removes_its_connection_and_builds(store: Arc<dyn Store>) {
    with_web(store.as_ref()).await;
    let web = app("web");
    store
        .connect_repo(&web, &connection("git@github.com:acme/web.git", true))
        .await
        .unwrap();
    let build = store
        .create_build(
            &web,
            &push("1111111111111111111111111111111111111111", Some("d-1")),
        )
        .await
        .unwrap();
    store
        .append_build_log(&web, build.id, "-----> Fetching\n")
        .await
        .unwrap();
    store.record_delivery(&web, "d-1").await.unwrap();
    store.delete_app(&web).await.unwrap();

    // A new app of the same name starts with nothing.
    store.create_app(&web, "alice").await.unwrap();
    assert!(store.repo_connection(&web).await.is_err());
    assert!(store.builds(&web, 10).await.unwrap().is_empty());
    assert!(store.unfinished_builds().await.unwrap().is_empty());
    assert!(store.record_delivery(&web, "d-1").await.unwrap());
}
