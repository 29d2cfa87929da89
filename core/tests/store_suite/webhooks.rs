//! The store behaviours of outgoing webhooks and their deliveries ([`WebhookStore`]),
//! run on every store by `store_suite!`.

/// One `#[tokio::test]` per behaviour of this file, each run by `$harness`.
macro_rules! webhook_store_tests {
    ($harness:path) => {
        $crate::store_suite::store_suite_tests!($harness; in webhooks;
        );
    };
}

pub(crate) use webhook_store_tests;
