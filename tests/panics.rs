//! A panic inside one session (forced with the test-only `fault-injection` feature) ends that
//! session only: the gate keeps serving, other sessions go on, and no counter stays raised.

mod common;

use std::time::Duration;

use common::fake::Script;
use common::fixtures::{gate_with_fake, FAKE_USERS};
use common::last;

#[tokio::test]
async fn a_panicking_session_ends_alone() {
    let (_fake, gate) = gate_with_fake(Script::default(), FAKE_USERS).await;
    let mut other = gate.logged_in("user1", "pass1").await;

    for _ in 0..3 {
        let mut doomed = gate.greeted().await;
        doomed.send(b"a LOGIN fault-injection-panic pw\r\n").await;
        assert!(
            doomed.closed_within(Duration::from_secs(2)).await,
            "the panicking session is closed"
        );
    }
    assert!(
        last(&other.cmd("b", "NOOP").await).starts_with("b OK"),
        "others go on"
    );
    let mut fresh = gate.greeted().await;
    assert!(
        last(&fresh.cmd("a", "LOGIN user2 pass2").await).starts_with("a OK"),
        "new sessions work"
    );
    drop((other, fresh));
    for _ in 0..100 {
        if gate.handle.usage().connections == 0 && gate.handle.registry().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        gate.handle.usage().connections,
        0,
        "the panicked sessions released their counts"
    );
    gate.stop().await;
}
