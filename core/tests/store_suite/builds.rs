//! The store behaviours of connected repositories, builds and seen deliveries ([`BuildStore`]),
//! run on every store by `store_suite!`.

/// One `#[tokio::test]` per behaviour of this file, each run by `$harness`.
macro_rules! build_store_tests {
    ($harness:path) => {
        $crate::store_suite::store_suite_tests!($harness; in builds;
        );
    };
}

pub(crate) use build_store_tests;
