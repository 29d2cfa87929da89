//! Pushes to one app wait for each other; pushes to different apps run side by side.

use std::time::Duration;

use empire_e2e::{Gateway, unique_app};

#[test]
fn two_pushes_to_one_app_take_turns() {
    let gw = Gateway::start();
    let alice = gw.developer("alice");
    let bob = gw.developer("bob");
    let app = unique_app("turns");

    // Alice has a commit; Bob cloned her work and added one on top.
    let a = gw.app_repo(&alice, "slow-build", &app);
    a.commit_change("index.html", "from alice\n", "alice's change");
    let b = a.clone_for(&bob);
    b.commit_change("index.html", "from bob\n", "bob's change");

    let mut push_a = a.push_streaming();
    push_a.wait_for_line("step-one-started", Duration::from_secs(120));
    // Alice's push created the app; Bob may push to it once she adds him.
    let granted = alice.ssh(&format!("access:add {app} bob"));
    assert!(
        granted.status.success(),
        "access:add: {}",
        String::from_utf8_lossy(&granted.stderr)
    );
    let push_b = b.push_streaming();
    let push_a = push_a.wait();
    let push_b = push_b.wait();

    push_a.assert_success();
    push_b.assert_success();
    let waiting = format!("Waiting for the deploy of {app} (started by alice)");
    assert!(
        push_b.contains(&waiting),
        "expected Bob's push to say {waiting:?}:\n{push_b}"
    );
    assert!(
        !push_a.contains("Waiting for the deploy"),
        "Alice's push had nothing to wait for:\n{push_a}"
    );
    // Bob's build ran after Alice's deploy was released.
    let alice_released = push_a
        .line_containing("Released v")
        .unwrap_or_else(|| panic!("no `Released vN` line:\n{push_a}"));
    let bob_build = push_b
        .line_containing("step-one-started")
        .unwrap_or_else(|| panic!("Bob's build did not run:\n{push_b}"));
    assert!(
        bob_build.at + Duration::from_millis(200) >= alice_released.at,
        "Bob's build ran before Alice's deploy ended:\n{push_a}\n{push_b}"
    );

    let a_versions = push_a.released_versions();
    let b_versions = push_b.released_versions();
    assert_eq!(a_versions.len(), 1, "one `Released vN` line:\n{push_a}");
    assert_eq!(b_versions.len(), 1, "one `Released vN` line:\n{push_b}");
    assert_ne!(
        a_versions, b_versions,
        "the two pushes should be distinct releases"
    );

    let answer = gw.get_app(&app, "/").expect("GET / after both pushes");
    assert_eq!(answer.status, 200, "{answer:?}");
    let body = answer.body.trim();
    assert!(
        body == "from alice" || body == "from bob",
        "the app serves {body:?}, neither push's content"
    );
}

#[test]
fn pushes_to_two_apps_build_at_the_same_time() {
    let gw = Gateway::start();
    let dev = gw.developer("alice");
    let first = gw.app_repo(&dev, "slow-build", &unique_app("side-a"));
    let second = gw.app_repo(&dev, "slow-build", &unique_app("side-b"));

    let push_1 = first.push_streaming();
    let push_2 = second.push_streaming();
    let push_1 = push_1.wait();
    let push_2 = push_2.wait();
    push_1.assert_success();
    push_2.assert_success();

    let started_1 = push_1
        .line_containing("step-one-started")
        .unwrap_or_else(|| panic!("no build output:\n{push_1}"));
    let started_2 = push_2
        .line_containing("step-one-started")
        .unwrap_or_else(|| panic!("no build output:\n{push_2}"));
    assert!(
        started_1.at < push_2.finished && started_2.at < push_1.finished,
        "both builds should start before either push ends (one waited for the other):\n\
         {push_1}\n{push_2}"
    );
    assert!(
        !push_1.contains("Waiting for the deploy") && !push_2.contains("Waiting for the deploy"),
        "pushes to different apps must not wait for each other:\n{push_1}\n{push_2}"
    );
}
