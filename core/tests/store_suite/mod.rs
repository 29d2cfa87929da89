//! The store's behaviour, written once and run against every implementation: each
//! function gets a fresh, empty store. `store_suite!(harness)` makes one test per
//! behaviour, where `harness(behaviour)` runs it on a fresh store of one kind. The
//! `two_handles_*` behaviours take two handles on one database (two gateways).

use std::sync::Arc;
use std::time::Duration;

use empire_core::Error;
use empire_core::app::AppName;
use empire_core::event::NewEvent;
use empire_core::formation::{ProcessFormation, ProcessSize};
use empire_core::release::{ConfigVars, NewRelease, ProcessTypes, ReleaseStatus};
use empire_core::store::{ReleaseBuild, Store};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

pub(crate) mod builds;
pub(crate) mod webhooks;

/// One `#[tokio::test]` per behaviour below, in a module `suite`, each run by `$harness`
/// (an `async fn(impl FnOnce(Arc<dyn Store>) -> impl Future<Output = ()>)`).
macro_rules! store_suite {
    ($harness:path) => {
        mod suite {
            $crate::store_suite::store_suite_tests!($harness;
                users_the_first_is_an_admin,
                keys_belong_to_users,
                apps_are_created_listed_and_named_once,
                releases_are_numbered_per_app_and_listed_newest_first,
                a_release_walks_the_state_machine_and_becomes_current,
                lists_releases_in_progress_on_every_app,
                deploy_logs_append_in_order,
                deleting_an_app_removes_everything_but_its_events,
                leases_exclude_other_owners_until_released_or_lapsed,
                config_is_the_apps_until_a_release_succeeds_with_its_own,
                formation_entries_are_upserted,
                domains_attach_to_one_app_at_a_time,
                tokens_authenticate_until_revoked,
                collaborators_decide_which_apps_a_user_sees,
                events_are_listed_newest_first_and_outlive_their_app,
                only_releases_that_never_succeeded_are_deleted,
                concurrent_releases_are_numbered_once_each,
            );
            $crate::store_suite::builds::build_store_tests!($harness);
            $crate::store_suite::webhooks::webhook_store_tests!($harness);
        }
    };
}

/// The tests `store_suite!` makes.
macro_rules! store_suite_tests {
    ($harness:path; in $module:ident; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $harness(crate::store_suite::$module::$name).await;
            }
        )*
    };
    ($harness:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $harness(crate::store_suite::$name).await;
            }
        )*
    };
}

pub(crate) use {store_suite, store_suite_tests};

fn app(name: &str) -> AppName {
    AppName::new(name).unwrap()
}

fn vars(pairs: &[(&str, &str)]) -> ConfigVars {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn new_release(description: &str, config: ConfigVars) -> NewRelease {
    NewRelease {
        commit: Some("1a2b3c4d".to_string()),
        user: "alice".to_string(),
        description: description.to_string(),
        config,
    }
}

fn build(image: &str) -> ReleaseBuild {
    ReleaseBuild {
        image: image.to_string(),
        image_id: format!("sha256:{}", hex_digest(image)),
        procfile: Some("web: ./server\n".to_string()),
        process_types: ProcessTypes::from([("web".to_string(), "./server".to_string())]),
    }
}

fn hex_digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Walks a release through building and deploying to succeeded.
async fn succeed(store: &dyn Store, app: &AppName, version: u32) {
    store
        .set_release_status(app, version, ReleaseStatus::Building, None)
        .await
        .unwrap();
    store
        .set_release_build(app, version, &build(&format!("{app}:v{version}")))
        .await
        .unwrap();
    store
        .set_release_status(app, version, ReleaseStatus::Deploying, None)
        .await
        .unwrap();
    store
        .set_release_status(app, version, ReleaseStatus::Succeeded, None)
        .await
        .unwrap();
}

/// A timestamp the store just made: UTC, and now give or take a minute.
fn assert_recent(at: OffsetDateTime) {
    assert_eq!(at.offset(), time::UtcOffset::UTC);
    let off = (OffsetDateTime::now_utc() - at).abs();
    assert!(off < time::Duration::minutes(1), "{at} is {off} from now");
}

fn assert_not_found(err: Error, message: &str) {
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), message);
}

fn assert_conflict(err: Error, message: &str) {
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    assert_eq!(err.to_string(), message);
}

fn assert_invalid(err: Error, starts: &str) {
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    assert!(err.to_string().starts_with(starts), "{err}");
}

/// A store with users alice (the admin) and bob, and alice's app `web`.
async fn with_web(store: &dyn Store) {
    store.create_user("alice", false).await.unwrap();
    store.create_user("bob", false).await.unwrap();
    store.create_app(&app("web"), "alice").await.unwrap();
}

pub async fn users_the_first_is_an_admin(store: Arc<dyn Store>) {
    let alice = store.create_user("alice", false).await.unwrap();
    assert!(alice.admin);
    assert_recent(alice.created_at);
    let bob = store.create_user("bob", false).await.unwrap();
    assert!(!bob.admin);
    assert_ne!(alice.id, bob.id);
    let carol = store.create_user("carol", true).await.unwrap();
    assert!(carol.admin);
    assert_eq!(store.user("bob").await.unwrap(), bob);
    let names: Vec<_> = store
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| (u.name, u.admin))
        .collect();
    assert_eq!(
        names,
        [
            ("alice".to_string(), true),
            ("bob".to_string(), false),
            ("carol".to_string(), true)
        ]
    );
    assert_conflict(
        store.create_user("alice", true).await.unwrap_err(),
        "user alice already exists",
    );
    assert_not_found(store.user("zed").await.unwrap_err(), "user not found: zed");
    assert_invalid(
        store.create_user(" ", false).await.unwrap_err(),
        "invalid user name",
    );
}

pub async fn keys_belong_to_users(store: Arc<dyn Store>) {
    store.create_user("alice", false).await.unwrap();
    store.create_user("bob", false).await.unwrap();
    let b1 = store
        .add_key("bob", "SHA256:bbb", "ssh-ed25519 AAAAbbb bob@laptop")
        .await
        .unwrap();
    assert_eq!(b1.user, "bob");
    assert_recent(b1.created_at);
    let a1 = store
        .add_key("alice", "SHA256:aaa", "ssh-ed25519 AAAAaaa alice@laptop")
        .await
        .unwrap();
    let b2 = store
        .add_key("bob", "SHA256:ccc", "ssh-rsa AAAAccc bob@desk")
        .await
        .unwrap();
    assert_eq!(store.key("SHA256:ccc").await.unwrap(), b2);
    assert_eq!(
        store.keys(None).await.unwrap(),
        [a1.clone(), b1.clone(), b2]
    );
    assert_eq!(
        store.keys(Some("bob")).await.unwrap()[0].fingerprint,
        "SHA256:bbb"
    );
    assert_conflict(
        store
            .add_key("alice", "SHA256:bbb", "ssh-ed25519 X")
            .await
            .unwrap_err(),
        "key SHA256:bbb is already registered to user bob",
    );
    assert_not_found(
        store.add_key("zed", "SHA256:z", "k").await.unwrap_err(),
        "user not found: zed",
    );
    assert_not_found(
        store.keys(Some("zed")).await.unwrap_err(),
        "user not found: zed",
    );
    store.remove_key("SHA256:ccc").await.unwrap();
    assert_not_found(
        store.key("SHA256:ccc").await.unwrap_err(),
        "key not found: SHA256:ccc",
    );
    assert_not_found(
        store.remove_key("SHA256:ccc").await.unwrap_err(),
        "key not found: SHA256:ccc",
    );
    assert_eq!(store.keys(Some("bob")).await.unwrap(), [b1]);
}

pub async fn apps_are_created_listed_and_named_once(store: Arc<dyn Store>) {
    store.create_user("alice", false).await.unwrap();
    store.create_user("bob", false).await.unwrap();
    let web = store.create_app(&app("web"), "alice").await.unwrap();
    assert_eq!(web.name.as_str(), "web");
    assert_eq!(web.current_release, None);
    assert_recent(web.created_at);
    // Bytewise order, as on every store: `a-b` before `ab`.
    for name in ["api", "ab", "a-b", "zeta"] {
        store.create_app(&app(name), "bob").await.unwrap();
    }
    assert_eq!(store.app(&app("web")).await.unwrap(), web);
    let names: Vec<_> = store
        .apps()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name.to_string())
        .collect();
    assert_eq!(names, ["a-b", "ab", "api", "web", "zeta"]);
    // The creator collaborates on the app from the start.
    assert_eq!(store.collaborators(&app("web")).await.unwrap(), ["alice"]);
    assert!(store.is_collaborator(&app("web"), "alice").await.unwrap());
    assert!(!store.is_collaborator(&app("web"), "bob").await.unwrap());

    assert_conflict(
        store.create_app(&app("web"), "bob").await.unwrap_err(),
        "app web already exists",
    );
    assert_not_found(
        store.create_app(&app("new"), "zed").await.unwrap_err(),
        "user not found: zed",
    );
    // A failed create leaves nothing behind.
    assert_not_found(
        store.app(&app("new")).await.unwrap_err(),
        "app not found: new",
    );
    assert_not_found(
        store.delete_app(&app("new")).await.unwrap_err(),
        "app not found: new",
    );
}

pub async fn releases_are_numbered_per_app_and_listed_newest_first(store: Arc<dyn Store>) {
    with_web(store.as_ref()).await;
    store.create_app(&app("api"), "alice").await.unwrap();
    let config = vars(&[("RACK_ENV", "production"), ("EMPTY", "")]);
    let v1 = store
        .create_release(&app("web"), new_release("Deploy 1a2b3c4", config.clone()))
        .await
        .unwrap();
    assert_eq!(v1.version, 1);
    assert_eq!(v1.status, ReleaseStatus::Pending);
    assert_eq!(v1.config, config);
    assert_eq!(v1.commit.as_deref(), Some("1a2b3c4d"));
    assert_eq!(v1.user, "alice");
    assert_eq!(v1.description, "Deploy 1a2b3c4");
    assert!(v1.process_types.is_empty());
    assert_eq!(v1.image, None);
    assert_recent(v1.created_at);
    assert_eq!(store.release(&app("web"), 1).await.unwrap(), v1);

    let api1 = store
        .create_release(&app("api"), new_release("x", ConfigVars::new()))
        .await
        .unwrap();
    assert_eq!(api1.version, 1);
    let v2 = store
        .create_release(&app("web"), new_release("y", ConfigVars::new()))
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    let listed = store.releases(&app("web")).await.unwrap();
    assert_eq!(listed, [v2, v1]);

    assert_not_found(
        store
            .create_release(&app("nope"), NewRelease::default())
            .await
            .unwrap_err(),
        "app not found: nope",
    );
    assert_not_found(
        store.release(&app("web"), 9).await.unwrap_err(),
        "release not found: web v9",
    );
    assert_not_found(
        store.release(&app("web"), u32::MAX).await.unwrap_err(),
        &format!("release not found: web v{}", u32::MAX),
    );
    assert_not_found(
        store.release(&app("nope"), 1).await.unwrap_err(),
        "app not found: nope",
    );
    assert_not_found(
        store.releases(&app("nope")).await.unwrap_err(),
        "app not found: nope",
    );
    assert_invalid(
        store
            .create_release(&app("web"), new_release("z", vars(&[("A=B", "1")])))
            .await
            .unwrap_err(),
        "invalid config var",
    );
}

pub async fn a_release_walks_the_state_machine_and_becomes_current(store: Arc<dyn Store>) {
    with_web(store.as_ref()).await;
    let web = app("web");
    store
        .create_release(&web, new_release("Deploy", ConfigVars::new()))
        .await
        .unwrap();
    let b = build("registry.local/web@sha256:abc");
    store
        .set_release_status(&web, 1, ReleaseStatus::Building, None)
        .await
        .unwrap();
    store.set_release_build(&web, 1, &b).await.unwrap();
    store
        .set_release_status(&web, 1, ReleaseStatus::Deploying, None)
        .await
        .unwrap();
    assert_eq!(store.app(&web).await.unwrap().current_release, None);
    store
        .set_release_status(&web, 1, ReleaseStatus::Succeeded, None)
        .await
        .unwrap();

    let v1 = store.release(&web, 1).await.unwrap();
    assert_eq!(v1.status, ReleaseStatus::Succeeded);
    assert_eq!(v1.image.as_deref(), Some(b.image.as_str()));
    assert_eq!(v1.image_id, Some(b.image_id.clone()));
    assert_eq!(v1.procfile, b.procfile);
    assert_eq!(v1.process_types, b.process_types);
    assert_eq!(v1.failure, None);
    assert_eq!(store.app(&web).await.unwrap().current_release, Some(1));

    // Final states are final, and a finished release's image cannot change.
    assert_conflict(
        store
            .set_release_status(&web, 1, ReleaseStatus::Failed, Some("late"))
            .await
            .unwrap_err(),
        "release web v1 cannot move from succeeded to failed",
    );
    assert_conflict(
        store.set_release_build(&web, 1, &b).await.unwrap_err(),
        "release web v1 is succeeded; its image can no longer change",
    );

    // A failed release records why, and leaves the current release alone.
    store
        .create_release(&web, new_release("Deploy 2", ConfigVars::new()))
        .await
        .unwrap();
    assert_conflict(
        store
            .set_release_status(&web, 2, ReleaseStatus::Succeeded, None)
            .await
            .unwrap_err(),
        "release web v2 cannot move from pending to succeeded",
    );
    store
        .set_release_status(&web, 2, ReleaseStatus::Failed, Some("health check failed"))
        .await
        .unwrap();
    let v2 = store.release(&web, 2).await.unwrap();
    assert_eq!(v2.status, ReleaseStatus::Failed);
    assert_eq!(v2.failure.as_deref(), Some("health check failed"));
    assert_eq!(store.app(&web).await.unwrap().current_release, Some(1));
    // Versions are never reused after a failure.
    let v3 = store
        .create_release(&web, new_release("Deploy 3", ConfigVars::new()))
        .await
        .unwrap();
    assert_eq!(v3.version, 3);
    succeed(store.as_ref(), &web, 3).await;
    assert_eq!(store.app(&web).await.unwrap().current_release, Some(3));

    assert_not_found(
        store
            .set_release_status(&web, 7, ReleaseStatus::Building, None)
            .await
            .unwrap_err(),
        "release not found: web v7",
    );
    assert_not_found(
        store
            .set_release_build(&app("nope"), 1, &b)
            .await
            .unwrap_err(),
        "app not found: nope",
    );
}

pub async fn lists_releases_in_progress_on_every_app(store: Arc<dyn Store>) {
    with_web(store.as_ref()).await;
    store.create_app(&app("api"), "alice").await.unwrap();
    for name in ["web", "web", "api", "web"] {
        store
            .create_release(&app(name), new_release("d", ConfigVars::new()))
            .await
            .unwrap();
    }
    store
        .set_release_status(&app("web"), 1, ReleaseStatus::Failed, None)
        .await
        .unwrap();
    store
        .set_release_status(&app("api"), 1, ReleaseStatus::Deploying, None)
        .await
        .unwrap();
    succeed(store.as_ref(), &app("web"), 3).await;
    let in_progress: Vec<_> = store
        .releases_in_progress()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.app.to_string(), r.version, r.status))
        .collect();
    assert_eq!(
        in_progress,
        [
            ("api".to_string(), 1, ReleaseStatus::Deploying),
            ("web".to_string(), 2, ReleaseStatus::Pending)
        ]
    );
}

pub async fn deploy_logs_append_in_order(store: Arc<dyn Store>) {
    with_web(store.as_ref()).await;
    let web = app("web");
    for _ in 0..2 {
        store
            .create_release(&web, new_release("d", ConfigVars::new()))
            .await
            .unwrap();
    }
    assert_eq!(store.deploy_log(&web, 1).await.unwrap(), "");
    for chunk in [
        "-----> Building\n",
        "       step 1 ✓\n",
        "",
        "-----> Done\n",
    ] {
        store.append_deploy_log(&web, 1, chunk).await.unwrap();
    }
    store.append_deploy_log(&web, 2, "other\n").await.unwrap();
    assert_eq!(
        store.deploy_log(&web, 1).await.unwrap(),
        "-----> Building\n       step 1 ✓\n-----> Done\n"
    );
    assert_eq!(store.deploy_log(&web, 2).await.unwrap(), "other\n");
    // Many small chunks stay in order.
    let chunks: Vec<String> = (0..200).map(|i| format!("line {i}\n")).collect();
    for chunk in &chunks {
        store.append_deploy_log(&web, 2, chunk).await.unwrap();
    }
    assert_eq!(
        store.deploy_log(&web, 2).await.unwrap(),
        format!("other\n{}", chunks.concat())
    );
    assert_not_found(
        store.append_deploy_log(&web, 3, "x").await.unwrap_err(),
        "release not found: web v3",
    );
    assert_not_found(
        store.deploy_log(&app("nope"), 1).await.unwrap_err(),
        "app not found: nope",
    );
}

pub async fn deleting_an_app_removes_everything_but_its_events(store: Arc<dyn Store>) {
    with_web(store.as_ref()).await;
    let web = app("web");
    store
        .create_release(&web, new_release("d", vars(&[("A", "1")])))
        .await
        .unwrap();
    succeed(store.as_ref(), &web, 1).await;
    store.append_deploy_log(&web, 1, "log\n").await.unwrap();
    store.add_collaborator(&web, "bob").await.unwrap();
    store.add_domain(&web, "www.example.com").await.unwrap();
    store
        .set_formation(
            &web,
            &[ProcessFormation {
                process: "web".to_string(),
                quantity: 2,
                size: ProcessSize::X1,
            }],
        )
        .await
        .unwrap();
    store
        .record_event(NewEvent {
            app: Some(web.clone()),
            user: "alice".to_string(),
            action: "deploy".to_string(),
            release: Some(1),
            message: "Deployed v1".to_string(),
            data: Default::default(),
        })
        .await
        .unwrap();
    let ttl = Duration::from_secs(60);
    assert_eq!(
        store
            .try_acquire_lease(&web, "d1", "alice", ttl)
            .await
            .unwrap(),
        None
    );
    store.delete_app(&web).await.unwrap();

    assert_not_found(store.app(&web).await.unwrap_err(), "app not found: web");
    assert_not_found(
        store.releases(&web).await.unwrap_err(),
        "app not found: web",
    );
    assert!(store.domains(None).await.unwrap().is_empty());
    let bob = store.user("bob").await.unwrap();
    assert!(store.apps_for(&bob).await.unwrap().is_empty());
    // Its events stay, under its name.
    let events = store.events(Some(&web), 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].app, Some(web.clone()));

    // A new app of the same name starts afresh: v1, a free lease, no domains, no
    // formation, empty config, its creator its only collaborator.
    store.create_app(&web, "bob").await.unwrap();
    assert_eq!(
        store
            .try_acquire_lease(&web, "d2", "bob", ttl)
            .await
            .unwrap(),
        None
    );
    let v1 = store
        .create_release(&web, new_release("d", ConfigVars::new()))
        .await
        .unwrap();
    assert_eq!(v1.version, 1);
    assert_eq!(store.deploy_log(&web, 1).await.unwrap(), "");
    assert!(store.domains(Some(&web)).await.unwrap().is_empty());
    assert!(store.formation(&web).await.unwrap().is_empty());
    assert!(store.app_config(&web).await.unwrap().is_empty());
    assert_eq!(store.collaborators(&web).await.unwrap(), ["bob"]);
    // The hostname is free again.
    store.add_domain(&web, "www.example.com").await.unwrap();
}

pub async fn leases_exclude_other_owners_until_released_or_lapsed(store: Arc<dyn Store>) {
    let web = app("web");
    let ttl = Duration::from_secs(60);
    // A lease can guard an app that does not exist yet (its first push).
    assert_eq!(
        store
            .try_acquire_lease(&web, "a", "alice", ttl)
            .await
            .unwrap(),
        None
    );
    // The holder may take it again (idempotent).
    assert_eq!(
        store
            .try_acquire_lease(&web, "a", "alice", ttl)
            .await
            .unwrap(),
        None
    );
    let holder = store
        .try_acquire_lease(&web, "b", "bob", ttl)
        .await
        .unwrap()
        .expect("a holds the lease");
    assert_eq!(
        (holder.owner.as_str(), holder.user.as_str()),
        ("a", "alice")
    );
    let left = holder.expires_at - OffsetDateTime::now_utc();
    assert!(left > time::Duration::seconds(50), "{left}");
    assert!(left <= time::Duration::seconds(61), "{left}");

    // Renewing and releasing are the holder's alone.
    store.renew_lease(&web, "a", ttl).await.unwrap();
    assert_conflict(
        store.renew_lease(&web, "b", ttl).await.unwrap_err(),
        "deploy lease of web was lost",
    );
    store.release_lease(&web, "b").await.unwrap();
    assert!(
        store
            .try_acquire_lease(&web, "b", "bob", ttl)
            .await
            .unwrap()
            .is_some()
    );
    store.release_lease(&web, "a").await.unwrap();
    assert_conflict(
        store.renew_lease(&web, "a", ttl).await.unwrap_err(),
        "deploy lease of web was lost",
    );
    assert_eq!(
        store
            .try_acquire_lease(&web, "b", "bob", ttl)
            .await
            .unwrap(),
        None
    );

    // A lapsed lease goes to the next taker, and its old holder has lost it.
    let short = Duration::from_millis(50);
    let api = app("api");
    assert_eq!(
        store
            .try_acquire_lease(&api, "a", "alice", short)
            .await
            .unwrap(),
        None
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        store
            .try_acquire_lease(&api, "b", "bob", ttl)
            .await
            .unwrap(),
        None
    );
    assert_conflict(
        store.renew_lease(&api, "a", ttl).await.unwrap_err(),
        "deploy lease of api was lost",
    );
    // Leases of different apps are independent.
    let holder = store
        .try_acquire_lease(&web, "c", "carol", ttl)
        .await
        .unwrap()
        .expect("b holds web");
    assert_eq!(holder.owner, "b");
}

pub async fn config_is_the_apps_until_a_release_succeeds_with_its_own(store: Arc<dyn Store>) {
    with_web(store.as_ref()).await;
    let web = app("web");
    assert!(store.app_config(&web).await.unwrap().is_empty());
    // Set before the first deploy.
    let before = vars(&[("DATABASE_URL", "postgres://db/web"), ("A", "1")]);
    store.set_app_config(&web, &before).await.unwrap();
    assert_eq!(store.app_config(&web).await.unwrap(), before);

    // A release in progress, or one that fails, does not change it.
    let mut next = before.clone();
    next.insert("B".to_string(), "2".to_string());
    next.remove("A");
    store
        .create_release(&web, new_release("v1", next.clone()))
        .await
        .unwrap();
    assert_eq!(store.app_config(&web).await.unwrap(), before);
    store
        .set_release_status(&web, 1, ReleaseStatus::Failed, Some("boom"))
        .await
        .unwrap();
    assert_eq!(store.app_config(&web).await.unwrap(), before);

    // A succeeded release's config becomes the app's.
    store
        .create_release(&web, new_release("v2", next.clone()))
        .await
        .unwrap();
    succeed(store.as_ref(), &web, 2).await;
    assert_eq!(store.app_config(&web).await.unwrap(), next);
    assert_eq!(store.release(&web, 2).await.unwrap().config, next);

    // Values keep every character.
    let odd = vars(&[
        ("JSON", r#"{"a": [1, "b"]}"#),
        ("UNICODE", "héllo ✓"),
        ("Q", "'\"\\"),
    ]);
    store.set_app_config(&web, &odd).await.unwrap();
    assert_eq!(store.app_config(&web).await.unwrap(), odd);
    // Other apps are untouched.
    store.create_app(&app("api"), "alice").await.unwrap();
    assert!(store.app_config(&app("api")).await.unwrap().is_empty());

    assert_not_found(
        store.app_config(&app("nope")).await.unwrap_err(),
        "app not found: nope",
    );
    assert_not_found(
        store
            .set_app_config(&app("nope"), &before)
            .await
            .unwrap_err(),
        "app not found: nope",
    );
    for bad in [vars(&[("", "x")]), vars(&[("A", "x\0y")])] {
        assert_invalid(
            store.set_app_config(&web, &bad).await.unwrap_err(),
            "invalid config var",
        );
    }
    assert_eq!(store.app_config(&web).await.unwrap(), odd);
}

pub async fn formation_entries_are_upserted(store: Arc<dyn Store>) {
    with_web(store.as_ref()).await;
    let web = app("web");
    assert!(store.formation(&web).await.unwrap().is_empty());
    let entry = |process: &str, quantity: u32, size: ProcessSize| ProcessFormation {
        process: process.to_string(),
        quantity,
        size,
    };
    let big = ProcessSize {
        cpu_shares: 2048,
        memory_bytes: 16 * 1024 * 1024 * 1024,
    };
    store
        .set_formation(
            &web,
            &[
                entry("worker", 1, ProcessSize::X2),
                entry("web", 2, ProcessSize::X1),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        store.formation(&web).await.unwrap(),
        [
            entry("web", 2, ProcessSize::X1),
            entry("worker", 1, ProcessSize::X2)
        ]
    );
    // Upsert: one entry changes, another is added, the third stays.
    store
        .set_formation(
            &web,
            &[entry("web", 0, big), entry("clock", 1, ProcessSize::PX)],
        )
        .await
        .unwrap();
    assert_eq!(
        store.formation(&web).await.unwrap(),
        [
            entry("clock", 1, ProcessSize::PX),
            entry("web", 0, big),
            entry("worker", 1, ProcessSize::X2)
        ]
    );
    // Nothing to change is fine; another app's formation is its own.
    store.set_formation(&web, &[]).await.unwrap();
    store.create_app(&app("api"), "alice").await.unwrap();
    assert!(store.formation(&app("api")).await.unwrap().is_empty());

    // All or nothing: a bad entry changes nothing.
    assert_invalid(
        store
            .set_formation(
                &web,
                &[
                    entry("web", 5, ProcessSize::X1),
                    entry("no way", 1, ProcessSize::X1),
                ],
            )
            .await
            .unwrap_err(),
        "invalid process",
    );
    assert_eq!(
        store.formation(&web).await.unwrap()[1],
        entry("web", 0, big)
    );
    assert_not_found(
        store.formation(&app("nope")).await.unwrap_err(),
        "app not found: nope",
    );
    assert_not_found(
        store
            .set_formation(&app("nope"), &[entry("web", 1, ProcessSize::X1)])
            .await
            .unwrap_err(),
        "app not found: nope",
    );
}

pub async fn domains_attach_to_one_app_at_a_time(store: Arc<dyn Store>) {
    with_web(store.as_ref()).await;
    let (web, shop) = (app("web"), app("shop"));
    store.create_app(&shop, "bob").await.unwrap();
    let d = store.add_domain(&shop, "www.example.com").await.unwrap();
    assert_eq!(d.hostname, "www.example.com");
    assert_eq!(d.app, shop);
    assert_recent(d.created_at);
    // Stored normalized.
    let upper = store.add_domain(&shop, "Shop.Example.COM").await.unwrap();
    assert_eq!(upper.hostname, "shop.example.com");
    store.add_domain(&web, "api.example.com").await.unwrap();

    assert_conflict(
        store.add_domain(&web, "www.example.com").await.unwrap_err(),
        "hostname www.example.com is already attached to app shop",
    );
    assert_conflict(
        store
            .add_domain(&shop, "WWW.example.com")
            .await
            .unwrap_err(),
        "hostname www.example.com is already attached to app shop",
    );
    assert_invalid(
        store.add_domain(&web, "not a host").await.unwrap_err(),
        "invalid hostname",
    );
    assert_not_found(
        store
            .add_domain(&app("nope"), "x.example.com")
            .await
            .unwrap_err(),
        "app not found: nope",
    );

    let hosts = |domains: Vec<empire_core::domain::Domain>| -> Vec<(String, String)> {
        domains
            .into_iter()
            .map(|d| (d.hostname, d.app.to_string()))
            .collect()
    };
    assert_eq!(
        hosts(store.domains(None).await.unwrap()),
        [
            ("api.example.com".to_string(), "web".to_string()),
            ("shop.example.com".to_string(), "shop".to_string()),
            ("www.example.com".to_string(), "shop".to_string()),
        ]
    );
    assert_eq!(
        store.domains(Some(&shop)).await.unwrap(),
        [upper.clone(), d.clone()]
    );
    assert_not_found(
        store.domains(Some(&app("nope"))).await.unwrap_err(),
        "app not found: nope",
    );

    // Only the app that has it can let it go.
    assert_not_found(
        store
            .remove_domain(&web, "www.example.com")
            .await
            .unwrap_err(),
        "domain not found: www.example.com on app web",
    );
    store.remove_domain(&shop, "www.example.com").await.unwrap();
    assert_not_found(
        store
            .remove_domain(&shop, "www.example.com")
            .await
            .unwrap_err(),
        "domain not found: www.example.com on app shop",
    );
    assert_eq!(store.domains(Some(&shop)).await.unwrap(), [upper]);
    // Then another app may take it.
    store.add_domain(&web, "www.example.com").await.unwrap();
    assert_eq!(store.domains(Some(&web)).await.unwrap().len(), 2);
}

pub async fn tokens_authenticate_until_revoked(store: Arc<dyn Store>) {
    with_web(store.as_ref()).await;
    let secret = hex_digest("secret-1");
    let t1 = store
        .create_token("bob", &secret, "created by empire tokens create")
        .await
        .unwrap();
    assert_eq!(t1.user, "bob");
    assert_eq!(t1.description, "created by empire tokens create");
    assert_recent(t1.created_at);
    let t2 = store
        .create_token("bob", &hex_digest("secret-2"), "ci")
        .await
        .unwrap();
    let a1 = store
        .create_token("alice", &hex_digest("secret-3"), "laptop")
        .await
        .unwrap();
    assert_ne!(t1.id, t2.id);

    let bob = store.user("bob").await.unwrap();
    assert_eq!(store.user_by_token(&secret).await.unwrap(), bob);
    // Digests compare case-insensitively (hex).
    assert_eq!(
        store.user_by_token(&secret.to_uppercase()).await.unwrap(),
        bob
    );
    assert_eq!(store.tokens("bob").await.unwrap(), [t1.clone(), t2.clone()]);
    assert_eq!(store.tokens("alice").await.unwrap(), [a1]);

    assert_conflict(
        store
            .create_token("alice", &secret, "again")
            .await
            .unwrap_err(),
        "a token with this secret is already registered",
    );
    assert_invalid(
        store
            .create_token("bob", "not-a-digest", "x")
            .await
            .unwrap_err(),
        "invalid token digest",
    );
    assert_not_found(
        store
            .create_token("zed", &hex_digest("z"), "x")
            .await
            .unwrap_err(),
        "user not found: zed",
    );
    assert_not_found(
        store.user_by_token(&hex_digest("never")).await.unwrap_err(),
        "token not found: unknown or revoked",
    );

    // Only its owner revokes a token.
    assert_not_found(
        store.revoke_token("alice", t1.id).await.unwrap_err(),
        &format!("token not found: {} of user alice", t1.id),
    );
    store.revoke_token("bob", t1.id).await.unwrap();
    assert_not_found(
        store.user_by_token(&secret).await.unwrap_err(),
        "token not found: unknown or revoked",
    );
    assert_eq!(store.tokens("bob").await.unwrap(), [t2]);
    assert_eq!(
        store.user_by_token(&hex_digest("secret-2")).await.unwrap(),
        bob
    );
    assert_not_found(
        store.revoke_token("bob", t1.id).await.unwrap_err(),
        &format!("token not found: {} of user bob", t1.id),
    );
    assert_not_found(
        store.tokens("zed").await.unwrap_err(),
        "user not found: zed",
    );
}

pub async fn collaborators_decide_which_apps_a_user_sees(store: Arc<dyn Store>) {
    with_web(store.as_ref()).await;
    store.create_user("carol", false).await.unwrap();
    for name in ["shop", "api", "blog"] {
        store.create_app(&app(name), "bob").await.unwrap();
    }
    let names = |apps: Vec<empire_core::app::App>| -> Vec<String> {
        apps.into_iter().map(|a| a.name.to_string()).collect()
    };
    let alice = store.user("alice").await.unwrap();
    let bob = store.user("bob").await.unwrap();
    let carol = store.user("carol").await.unwrap();
    assert!(alice.admin);
    // Admins see every app, whoever made it.
    assert_eq!(
        names(store.apps_for(&alice).await.unwrap()),
        ["api", "blog", "shop", "web"]
    );
    assert_eq!(
        store.apps_for(&alice).await.unwrap(),
        store.apps().await.unwrap()
    );
    assert_eq!(
        names(store.apps_for(&bob).await.unwrap()),
        ["api", "blog", "shop"]
    );
    assert!(store.apps_for(&carol).await.unwrap().is_empty());

    store.add_collaborator(&app("web"), "carol").await.unwrap();
    store.add_collaborator(&app("shop"), "carol").await.unwrap();
    // Adding twice is a no-op.
    store.add_collaborator(&app("shop"), "carol").await.unwrap();
    assert_eq!(
        names(store.apps_for(&carol).await.unwrap()),
        ["shop", "web"]
    );
    assert_eq!(
        store.collaborators(&app("shop")).await.unwrap(),
        ["bob", "carol"]
    );
    assert!(store.is_collaborator(&app("web"), "carol").await.unwrap());
    assert!(!store.is_collaborator(&app("api"), "carol").await.unwrap());
    assert!(!store.is_collaborator(&app("web"), "nobody").await.unwrap());

    // The entries carry the app's state.
    store
        .create_release(&app("web"), new_release("d", ConfigVars::new()))
        .await
        .unwrap();
    succeed(store.as_ref(), &app("web"), 1).await;
    let seen = store.apps_for(&carol).await.unwrap();
    assert_eq!(seen[1], store.app(&app("web")).await.unwrap());
    assert_eq!(seen[1].current_release, Some(1));

    store
        .remove_collaborator(&app("shop"), "carol")
        .await
        .unwrap();
    assert_eq!(names(store.apps_for(&carol).await.unwrap()), ["web"]);
    assert_not_found(
        store
            .remove_collaborator(&app("shop"), "carol")
            .await
            .unwrap_err(),
        "collaborator not found: carol on app shop",
    );
    // Even an owner can be removed (an admin can still operate the app).
    store
        .remove_collaborator(&app("shop"), "bob")
        .await
        .unwrap();
    assert!(store.collaborators(&app("shop")).await.unwrap().is_empty());
    assert_eq!(names(store.apps_for(&bob).await.unwrap()), ["api", "blog"]);

    assert_not_found(
        store
            .add_collaborator(&app("nope"), "carol")
            .await
            .unwrap_err(),
        "app not found: nope",
    );
    assert_not_found(
        store
            .add_collaborator(&app("web"), "zed")
            .await
            .unwrap_err(),
        "user not found: zed",
    );
    assert_not_found(
        store.collaborators(&app("nope")).await.unwrap_err(),
        "app not found: nope",
    );
    assert_not_found(
        store
            .is_collaborator(&app("nope"), "bob")
            .await
            .unwrap_err(),
        "app not found: nope",
    );
    // Deleting an app drops it from everyone's list.
    store.delete_app(&app("web")).await.unwrap();
    assert!(store.apps_for(&carol).await.unwrap().is_empty());
}

pub async fn events_are_listed_newest_first_and_outlive_their_app(store: Arc<dyn Store>) {
    with_web(store.as_ref()).await;
    store.create_app(&app("api"), "alice").await.unwrap();
    let event =
        |app_name: Option<&str>, action: &str, release: Option<u32>, message: &str| NewEvent {
            app: app_name.map(app),
            user: "alice".to_string(),
            action: action.to_string(),
            release,
            message: message.to_string(),
            data: Default::default(),
        };
    let e1 = store
        .record_event(event(Some("web"), "app.created", None, "Created web"))
        .await
        .unwrap();
    assert_eq!(e1.app, Some(app("web")));
    assert_eq!(e1.user, "alice");
    assert_eq!(e1.action, "app.created");
    assert_eq!(e1.release, None);
    assert_eq!(e1.message, "Created web");
    assert_recent(e1.created_at);
    let e2 = store
        .record_event(event(Some("api"), "deploy", Some(1), "Deployed api v1"))
        .await
        .unwrap();
    let e3 = store
        .record_event(event(None, "user.created", None, "Created user bob"))
        .await
        .unwrap();
    let e4 = store
        .record_event(event(Some("web"), "config.changed", Some(2), "Set A"))
        .await
        .unwrap();
    assert!(e1.id < e2.id && e2.id < e3.id && e3.id < e4.id);

    assert_eq!(
        store.events(None, 10).await.unwrap(),
        [e4.clone(), e3.clone(), e2.clone(), e1.clone()]
    );
    assert_eq!(
        store.events(None, 2).await.unwrap(),
        [e4.clone(), e3.clone()]
    );
    assert!(store.events(None, 0).await.unwrap().is_empty());
    assert_eq!(
        store.events(Some(&app("web")), 10).await.unwrap(),
        [e4.clone(), e1.clone()]
    );
    assert_eq!(
        store.events(Some(&app("web")), 1).await.unwrap(),
        std::slice::from_ref(&e4)
    );
    assert!(
        store
            .events(Some(&app("blog")), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // An app's events outlive it, and its deletion can be recorded after the fact.
    store.delete_app(&app("web")).await.unwrap();
    let e5 = store
        .record_event(event(Some("web"), "app.destroyed", None, "Destroyed web"))
        .await
        .unwrap();
    assert_eq!(
        store.events(Some(&app("web")), 10).await.unwrap(),
        [e5, e4, e1]
    );
    assert_eq!(store.events(None, 10).await.unwrap().len(), 5);

    assert_invalid(
        store
            .record_event(event(None, " ", None, "x"))
            .await
            .unwrap_err(),
        "invalid event action",
    );
}

pub async fn only_releases_that_never_succeeded_are_deleted(store: Arc<dyn Store>) {
    with_web(store.as_ref()).await;
    let web = app("web");
    for _ in 0..3 {
        store
            .create_release(&web, new_release("d", ConfigVars::new()))
            .await
            .unwrap();
    }
    succeed(store.as_ref(), &web, 1).await;
    store
        .set_release_status(&web, 2, ReleaseStatus::Deploying, None)
        .await
        .unwrap();
    store
        .append_deploy_log(&web, 2, "rolling out\n")
        .await
        .unwrap();
    store
        .set_release_status(&web, 2, ReleaseStatus::Failed, Some("unhealthy"))
        .await
        .unwrap();

    assert_conflict(
        store.delete_release(&web, 1).await.unwrap_err(),
        "release web v1 succeeded; a succeeded release cannot be deleted",
    );
    // A failed one and a pending one go, with their logs.
    store.delete_release(&web, 2).await.unwrap();
    store.delete_release(&web, 3).await.unwrap();
    assert_not_found(
        store.release(&web, 2).await.unwrap_err(),
        "release not found: web v2",
    );
    assert_not_found(
        store.deploy_log(&web, 2).await.unwrap_err(),
        "release not found: web v2",
    );
    let left: Vec<u32> = store
        .releases(&web)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(left, [1]);
    assert!(store.releases_in_progress().await.unwrap().is_empty());
    assert_eq!(store.app(&web).await.unwrap().current_release, Some(1));
    // Numbers are not handed out again.
    let v4 = store
        .create_release(&web, new_release("d", ConfigVars::new()))
        .await
        .unwrap();
    assert_eq!(v4.version, 4);

    assert_not_found(
        store.delete_release(&web, 2).await.unwrap_err(),
        "release not found: web v2",
    );
    assert_not_found(
        store.delete_release(&app("nope"), 1).await.unwrap_err(),
        "app not found: nope",
    );
}

pub async fn concurrent_releases_are_numbered_once_each(store: Arc<dyn Store>) {
    with_web(store.as_ref()).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .create_release(
                        &app("web"),
                        new_release(&format!("deploy {i}"), ConfigVars::new()),
                    )
                    .await
                    .map(|r| r.version)
            })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.unwrap().unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=20).collect::<Vec<u32>>());
}

/// Two handles (two gateways) creating releases at once: 40 versions, each once, and
/// both list all of them newest first.
pub async fn two_handles_number_releases_once(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    a.create_user("alice", false).await.unwrap();
    a.create_app(&app("web"), "alice").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        for store in [Arc::clone(&a), Arc::clone(&b)] {
            tasks.push(tokio::spawn(async move {
                let release = NewRelease {
                    user: "alice".into(),
                    description: format!("deploy {i}"),
                    ..NewRelease::default()
                };
                store
                    .create_release(&app("web"), release)
                    .await
                    .map(|r| r.version)
            }));
        }
    }
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.unwrap().unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=40).collect::<Vec<u32>>());
    for store in [&a, &b] {
        let listed = store.releases(&app("web")).await.unwrap();
        let numbers: Vec<u32> = listed.iter().map(|r| r.version).collect();
        assert_eq!(numbers, (1..=40).rev().collect::<Vec<u32>>());
        let mut descriptions: Vec<_> = listed.iter().map(|r| r.description.clone()).collect();
        descriptions.sort();
        descriptions.dedup();
        assert_eq!(descriptions.len(), 20);
    }
}

/// A lease held through one handle is refused through the other until it lapses (after
/// `ttl`) or is given back; renewal keeps it; of many takers at once exactly one wins.
pub async fn two_handles_share_one_lease(a: Arc<dyn Store>, b: Arc<dyn Store>, ttl: Duration) {
    let web = app("web");
    let long = Duration::from_secs(60);

    // Lapses after its TTL.
    assert_eq!(
        a.try_acquire_lease(&web, "deploy-a", "alice", ttl)
            .await
            .unwrap(),
        None
    );
    let holder = b
        .try_acquire_lease(&web, "deploy-b", "bob", long)
        .await
        .unwrap()
        .expect("A holds the lease");
    assert_eq!(
        (holder.owner.as_str(), holder.user.as_str()),
        ("deploy-a", "alice")
    );
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert_eq!(
        b.try_acquire_lease(&web, "deploy-b", "bob", long)
            .await
            .unwrap(),
        None
    );
    let err = a.renew_lease(&web, "deploy-a", ttl).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    assert_eq!(err.to_string(), "deploy lease of web was lost");
    // A's late release does not free B's lease.
    a.release_lease(&web, "deploy-a").await.unwrap();
    let holder = a
        .try_acquire_lease(&web, "deploy-a", "alice", long)
        .await
        .unwrap()
        .expect("B holds the lease");
    assert_eq!(holder.owner, "deploy-b");

    // Freed at once when its holder gives it back.
    b.release_lease(&web, "deploy-b").await.unwrap();
    assert_eq!(
        a.try_acquire_lease(&web, "deploy-a", "alice", long)
            .await
            .unwrap(),
        None
    );
    // Renewal keeps it from others past the first TTL.
    let api = app("api");
    assert_eq!(
        a.try_acquire_lease(&api, "deploy-a", "alice", ttl)
            .await
            .unwrap(),
        None
    );
    for _ in 0..4 {
        tokio::time::sleep(ttl / 2).await;
        a.renew_lease(&api, "deploy-a", ttl).await.unwrap();
    }
    assert!(
        b.try_acquire_lease(&api, "deploy-b", "bob", long)
            .await
            .unwrap()
            .is_some()
    );

    // Many takers at once across both handles: exactly one wins.
    let contested = app("contested");
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = if i % 2 == 0 {
                Arc::clone(&a)
            } else {
                Arc::clone(&b)
            };
            let contested = contested.clone();
            tokio::spawn(async move {
                store
                    .try_acquire_lease(&contested, &format!("deploy-{i}"), "alice", long)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        if task.await.unwrap().is_none() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}
