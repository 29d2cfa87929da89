//! The store behaviours of outgoing webhooks and their deliveries ([`WebhookStore`]),
//! run on every store by `store_suite!`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use empire_core::Error;
use empire_core::event::NewEvent;
use empire_core::store::{
    AttemptResult, DeliveryStatus, NewAttempt, NewWebhook, RESPONSE_EXCERPT_BYTES, Store, Webhook,
    WebhookFormat,
};

use super::{app, assert_not_found, assert_recent};

/// One `#[tokio::test]` per behaviour of this file, each run by `$harness`.
macro_rules! webhook_store_tests {
    ($harness:path) => {
        $crate::store_suite::store_suite_tests!($harness; in webhooks;
            webhooks_are_added_listed_and_removed,
            webhooks_refuse_what_cannot_be_delivered,
            an_event_queues_one_delivery_per_webhook_that_wants_it,
            due_deliveries_are_claimed_once_until_their_lease_lapses,
            attempts_are_recorded_and_decide_what_becomes_of_a_delivery,
            a_restarted_gateway_takes_back_its_claims_at_once,
            concurrent_claims_never_share_a_delivery,
            removing_a_webhook_removes_its_deliveries,
        );
    };
}

pub(crate) use webhook_store_tests;

fn hook(app_name: Option<&str>, url: &str, events: &[&str]) -> NewWebhook {
    NewWebhook {
        app: app_name.map(app),
        url: url.to_string(),
        events: events.iter().map(|e| e.to_string()).collect(),
        format: WebhookFormat::Json,
        secret: "s3cret".to_string(),
        creator: "alice".to_string(),
    }
}

fn event(app_name: Option<&str>, action: &str) -> NewEvent {
    NewEvent::new(
        app_name.map(app).as_ref(),
        "alice",
        action,
        format!("{action} happened"),
    )
}

async fn add(store: &dyn Store, app_name: Option<&str>, events: &[&str]) -> Webhook {
    store
        .create_webhook(hook(app_name, "http://127.0.0.1:9/hook", events))
        .await
        .unwrap()
}

fn attempt(status: Option<u16>, response: &str) -> NewAttempt {
    NewAttempt {
        status_code: status,
        error: status.is_none().then(|| "connection refused".to_string()),
        duration: Duration::from_millis(12),
        response: response.to_string(),
    }
}

pub async fn webhooks_are_added_listed_and_removed(store: Arc<dyn Store>) {
    let web = store
        .create_webhook(NewWebhook {
            format: WebhookFormat::Slack,
            ..hook(
                Some("web"),
                " https://chat.example.com/hooks/1 ",
                &["deploy.*", "scale"],
            )
        })
        .await
        .unwrap();
    assert_eq!(web.app, Some(app("web")));
    assert_eq!(web.url, "https://chat.example.com/hooks/1");
    assert_eq!(web.events, ["deploy.*", "scale"]);
    assert_eq!(web.format, WebhookFormat::Slack);
    assert_eq!(web.secret, "s3cret");
    assert_eq!(web.creator, "alice");
    assert_recent(web.created_at);
    let all = add(store.as_ref(), None, &["*"]).await;
    let api = add(store.as_ref(), Some("api"), &["release.created"]).await;
    assert!(web.id < all.id && all.id < api.id);
    assert_eq!(all.app, None);

    assert_eq!(store.webhook(web.id).await.unwrap(), web);
    assert_eq!(
        store.webhooks(Some(&app("web"))).await.unwrap(),
        vec![web.clone()]
    );
    assert_eq!(
        store.webhooks(None).await.unwrap(),
        vec![web.clone(), all.clone(), api.clone()]
    );
    assert!(store.webhooks(Some(&app("blog"))).await.unwrap().is_empty());

    store.delete_webhook(web.id).await.unwrap();
    assert_not_found(
        store.webhook(web.id).await.unwrap_err(),
        &format!("webhook not found: {}", web.id),
    );
    assert_not_found(
        store.delete_webhook(web.id).await.unwrap_err(),
        &format!("webhook not found: {}", web.id),
    );
    assert_eq!(store.webhooks(None).await.unwrap(), vec![all, api]);
}

pub async fn webhooks_refuse_what_cannot_be_delivered(store: Arc<dyn Store>) {
    for (bad, field) in [
        (hook(Some("web"), "ftp://example.com/x", &["*"]), "url"),
        (hook(Some("web"), "example.com/hook", &["*"]), "url"),
        (hook(Some("web"), "http://exa mple.com/", &["*"]), "url"),
        (hook(Some("web"), "http://example.com/", &[]), "events"),
        (
            hook(Some("web"), "http://example.com/", &["Deploy"]),
            "events",
        ),
        (
            hook(Some("web"), "http://example.com/", &["deploy started"]),
            "events",
        ),
        (
            NewWebhook {
                secret: String::new(),
                ..hook(None, "http://example.com/", &["*"])
            },
            "secret",
        ),
    ] {
        let err = store.create_webhook(bad.clone()).await.unwrap_err();
        assert!(
            matches!(&err, Error::Invalid { field: f, .. } if *f == field),
            "{bad:?}: {err:?}"
        );
    }
    assert!(store.webhooks(None).await.unwrap().is_empty());
}

pub async fn an_event_queues_one_delivery_per_webhook_that_wants_it(store: Arc<dyn Store>) {
    let deploys = add(store.as_ref(), Some("web"), &["deploy.*"]).await;
    let everything = add(store.as_ref(), None, &["*"]).await;
    let other_app = add(store.as_ref(), Some("api"), &["*"]).await;
    let scaling = add(store.as_ref(), Some("web"), &["scale"]).await;

    let recorded = store
        .record_event(
            event(Some("web"), "deploy.failed")
                .with_release(Some(3))
                .with("step", "Building image")
                .with("output", vec!["make: *** [all] Error 1"]),
        )
        .await
        .unwrap();
    assert_eq!(recorded.data["step"], "Building image");
    // Events keep their data.
    let listed = store.events(Some(&app("web")), 1).await.unwrap();
    assert_eq!(listed, vec![recorded.clone()]);

    let queued = store.deliveries(deploys.id, 10).await.unwrap();
    assert_eq!(queued.len(), 1);
    let delivery = &queued[0];
    assert_eq!(delivery.webhook, deploys.id);
    assert_eq!(delivery.event, "deploy.failed");
    assert_eq!(delivery.status, DeliveryStatus::Pending);
    assert_eq!(delivery.attempts, 0);
    assert_eq!(delivery.id.len(), 36, "a UUID: {}", delivery.id);
    assert_recent(delivery.created_at);
    assert_eq!(delivery.payload["action"], "deploy.failed");
    assert_eq!(delivery.payload["app"], "web");
    assert_eq!(delivery.payload["release"], 3);
    assert_eq!(delivery.payload["id"], recorded.id);
    assert_eq!(
        delivery.payload["data"]["output"][0],
        "make: *** [all] Error 1"
    );
    assert_eq!(store.delivery(&delivery.id).await.unwrap(), *delivery);

    let to_all = store.deliveries(everything.id, 10).await.unwrap();
    assert_eq!(to_all.len(), 1);
    assert_ne!(to_all[0].id, delivery.id, "one delivery id per webhook");
    assert!(store.deliveries(other_app.id, 10).await.unwrap().is_empty());
    assert!(store.deliveries(scaling.id, 10).await.unwrap().is_empty());

    // Events of no app go nowhere; newest deliveries first, at most `limit`.
    store.record_event(event(None, "key.added")).await.unwrap();
    store
        .record_event(event(Some("web"), "scale"))
        .await
        .unwrap();
    let to_all = store.deliveries(everything.id, 10).await.unwrap();
    assert_eq!(
        to_all.iter().map(|d| d.event.as_str()).collect::<Vec<_>>(),
        ["scale", "deploy.failed"]
    );
    assert_eq!(store.deliveries(everything.id, 1).await.unwrap().len(), 1);
    assert_eq!(store.deliveries(scaling.id, 10).await.unwrap().len(), 1);
    assert_not_found(
        store.deliveries(9999, 10).await.unwrap_err(),
        "webhook not found: 9999",
    );
}

pub async fn due_deliveries_are_claimed_once_until_their_lease_lapses(store: Arc<dyn Store>) {
    let webhook = add(store.as_ref(), Some("web"), &["*"]).await;
    store
        .record_event(event(Some("web"), "app.created"))
        .await
        .unwrap();
    store
        .record_event(event(Some("web"), "scale"))
        .await
        .unwrap();

    let lease = Duration::from_millis(600);
    let first = store.claim_deliveries("gw-a", lease, 10).await.unwrap();
    assert_eq!(
        first
            .iter()
            .map(|c| c.delivery.event.as_str())
            .collect::<Vec<_>>(),
        ["app.created", "scale"],
        "oldest first"
    );
    assert!(first.iter().all(|c| c.webhook == webhook));
    // Claimed: nobody else gets them while the lease runs.
    assert!(
        store
            .claim_deliveries("gw-b", lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A limit claims only so many.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let again = store.claim_deliveries("gw-b", lease, 1).await.unwrap();
    assert_eq!(again.len(), 1, "a lapsed claim is due again");
    assert_eq!(again[0].delivery.event, "app.created");
    let rest = store.claim_deliveries("gw-b", lease, 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].delivery.event, "scale");
}

pub async fn attempts_are_recorded_and_decide_what_becomes_of_a_delivery(store: Arc<dyn Store>) {
    add(store.as_ref(), Some("web"), &["*"]).await;
    store
        .record_event(event(Some("web"), "scale"))
        .await
        .unwrap();
    let claimed = store
        .claim_deliveries("gw", Duration::from_secs(60), 10)
        .await
        .unwrap();
    let id = claimed[0].delivery.id.clone();

    let long = "é".repeat(RESPONSE_EXCERPT_BYTES); // 2 bytes each
    let after = store
        .record_attempt(
            &id,
            attempt(Some(500), &long),
            AttemptResult::Retry(Duration::from_millis(400)),
        )
        .await
        .unwrap();
    assert_eq!(after.status, DeliveryStatus::Pending);
    assert_eq!(after.attempts, 1);
    let next = after.next_attempt_at.expect("due again later");
    assert!(next > time::OffsetDateTime::now_utc() - time::Duration::seconds(1));
    assert!(
        store
            .claim_deliveries("gw", Duration::from_secs(60), 10)
            .await
            .unwrap()
            .is_empty(),
        "not due before its backoff"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let claimed = store
        .claim_deliveries("gw", Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    store
        .record_attempt(&id, attempt(None, ""), AttemptResult::Retry(Duration::ZERO))
        .await
        .unwrap();
    store
        .claim_deliveries("gw", Duration::from_secs(60), 10)
        .await
        .unwrap();
    let done = store
        .record_attempt(&id, attempt(Some(200), "ok"), AttemptResult::Delivered)
        .await
        .unwrap();
    assert_eq!(done.status, DeliveryStatus::Delivered);
    assert_eq!(done.attempts, 3);
    assert_eq!(done.next_attempt_at, None);
    assert!(
        store
            .claim_deliveries("gw", Duration::from_secs(60), 10)
            .await
            .unwrap()
            .is_empty()
    );

    let attempts = store.delivery_attempts(&id).await.unwrap();
    assert_eq!(
        attempts.iter().map(|a| a.number).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(attempts[0].status_code, Some(500));
    assert_eq!(attempts[0].error, None);
    assert_eq!(attempts[0].duration_ms, 12);
    assert!(attempts[0].response.len() <= RESPONSE_EXCERPT_BYTES);
    assert_eq!(attempts[0].response, "é".repeat(RESPONSE_EXCERPT_BYTES / 2));
    assert_eq!(attempts[1].status_code, None);
    assert_eq!(attempts[1].error.as_deref(), Some("connection refused"));
    assert_eq!(attempts[2].status_code, Some(200));
    assert_eq!(attempts[2].response, "ok");
    assert!(attempts[0].attempted_at <= attempts[2].attempted_at);
    assert_recent(attempts[2].attempted_at);

    // A final answer fails the delivery.
    store
        .record_event(event(Some("web"), "scale"))
        .await
        .unwrap();
    let claimed = store
        .claim_deliveries("gw", Duration::from_secs(60), 10)
        .await
        .unwrap();
    let failed = store
        .record_attempt(
            &claimed[0].delivery.id,
            attempt(Some(404), "no such hook"),
            AttemptResult::Failed,
        )
        .await
        .unwrap();
    assert_eq!(failed.status, DeliveryStatus::Failed);
    assert_not_found(
        store.delivery_attempts("nope").await.unwrap_err(),
        "delivery not found: nope",
    );
}

pub async fn a_restarted_gateway_takes_back_its_claims_at_once(store: Arc<dyn Store>) {
    add(store.as_ref(), Some("web"), &["*"]).await;
    store
        .record_event(event(Some("web"), "scale"))
        .await
        .unwrap();
    store
        .record_event(event(Some("web"), "rollback"))
        .await
        .unwrap();
    let lease = Duration::from_secs(300);
    assert_eq!(
        store
            .claim_deliveries("gw-a", lease, 1)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .claim_deliveries("gw-b", lease, 1)
            .await
            .unwrap()
            .len(),
        1
    );
    // gw-a restarts: what it held is due again, what gw-b holds is not.
    assert_eq!(store.release_claims("gw-a").await.unwrap(), 1);
    let retaken = store.claim_deliveries("gw-a", lease, 10).await.unwrap();
    assert_eq!(retaken.len(), 1);
    assert_eq!(retaken[0].delivery.event, "scale");
    assert_eq!(store.release_claims("gw-c").await.unwrap(), 0);
}

pub async fn concurrent_claims_never_share_a_delivery(store: Arc<dyn Store>) {
    add(store.as_ref(), Some("web"), &["*"]).await;
    add(store.as_ref(), None, &["*"]).await;
    for _ in 0..10 {
        store
            .record_event(event(Some("web"), "scale"))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for gateway in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = store
                    .claim_deliveries(&format!("gw-{gateway}"), Duration::from_secs(60), 3)
                    .await
                    .unwrap();
                if claimed.is_empty() {
                    return mine;
                }
                mine.extend(claimed.into_iter().map(|c| c.delivery.id));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 20, "{all:?}");
    assert_eq!(unique.len(), 20, "a delivery was claimed twice");
}

pub async fn removing_a_webhook_removes_its_deliveries(store: Arc<dyn Store>) {
    let gone = add(store.as_ref(), Some("web"), &["*"]).await;
    let kept = add(store.as_ref(), Some("web"), &["*"]).await;
    store
        .record_event(event(Some("web"), "scale"))
        .await
        .unwrap();
    let id = store.deliveries(gone.id, 1).await.unwrap()[0].id.clone();
    store.delete_webhook(gone.id).await.unwrap();
    assert_not_found(
        store.delivery(&id).await.unwrap_err(),
        &format!("delivery not found: {id}"),
    );
    let claimed = store
        .claim_deliveries("gw", Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].webhook.id, kept.id);
}
