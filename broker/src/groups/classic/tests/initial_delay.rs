//! Kafka's initial rebalance delay (`groups.initial_rebalance_delay_ms`): when it holds a
//! new group's first join phase open, what extends it, what caps it, and that it applies to
//! nothing else.

use super::{answered, join_request, Harness};
use crate::groups::classic::ClassicState;

const DELAY_MS: u32 = 3_000;

#[test]
fn a_new_groups_first_join_waits_the_delay_and_each_newcomer_extends_it() {
    let mut harness = Harness::with_initial_delay(DELAY_MS);
    let mut first = harness.join(join_request("", None)).expect("join accepted");
    assert!(answered(&mut first).is_none(), "the first join waits");
    assert_eq!(harness.state(), ClassicState::PreparingRebalance);
    harness.advance(2_000);
    let mut second = harness.join(join_request("", None)).expect("join accepted");
    assert!(answered(&mut first).is_none() && answered(&mut second).is_none());
    // The first step ends at 3 s; the second member joined during it: one more step, to 6 s.
    harness.advance(1_000);
    harness.advance(2_900);
    assert!(
        answered(&mut first).is_none() && answered(&mut second).is_none(),
        "a newcomer extends the wait by the delay"
    );
    harness.advance(100);
    let first = answered(&mut first).expect("answered").expect("joined");
    let second = answered(&mut second).expect("answered").expect("joined");
    assert_eq!(
        (first.generation, second.generation),
        (1, 1),
        "one generation for both"
    );
    assert_eq!(first.leader_id, first.member_id);
    assert_eq!(first.members.len(), 2, "the leader gets both members");
    assert_eq!(harness.state(), ClassicState::CompletingRebalance);
}

#[test]
fn a_step_without_newcomers_ends_the_delay() {
    let mut harness = Harness::with_initial_delay(DELAY_MS);
    let mut first = harness.join(join_request("", None)).expect("join accepted");
    harness.advance(u64::from(DELAY_MS) - 100);
    assert!(answered(&mut first).is_none());
    harness.advance(100);
    let joined = answered(&mut first).expect("answered").expect("joined");
    assert_eq!(joined.generation, 1);
    assert_eq!(joined.members.len(), 1);
}

#[test]
fn the_rebalance_timeout_caps_the_delay() {
    let mut harness = Harness::with_initial_delay(DELAY_MS);
    let short = |member_id: &str| {
        let mut request = join_request(member_id, None);
        request.rebalance_timeout_ms = 4_000;
        request
    };
    let mut first = harness.join(short("")).expect("join accepted");
    harness.advance(1_000);
    let mut second = harness.join(short("")).expect("join accepted");
    // At 3 s a second step starts, capped at the rebalance deadline (4 s) however many join.
    harness.advance(2_000);
    let mut third = harness.join(short("")).expect("join accepted");
    harness.advance(500);
    harness.advance(400);
    assert!(answered(&mut first).is_none(), "still waiting at 3.9 s");
    harness.advance(100);
    for (name, waiting) in [
        ("first", &mut first),
        ("second", &mut second),
        ("third", &mut third),
    ] {
        let joined = answered(waiting)
            .unwrap_or_else(|| panic!("{name} answered by the rebalance deadline"))
            .expect("joined");
        assert_eq!(joined.generation, 1, "{name}");
    }
}

#[test]
fn zero_turns_the_delay_off() {
    let mut harness = Harness::with_initial_delay(0);
    let joined = harness.join_now(join_request("", None));
    assert_eq!(joined.generation, 1);
}

#[test]
fn a_group_with_members_rebalances_without_the_delay() {
    let mut harness = Harness::with_initial_delay(DELAY_MS);
    let mut first = harness.join(join_request("", None)).expect("join accepted");
    harness.advance(u64::from(DELAY_MS));
    let joined = answered(&mut first).expect("answered").expect("joined");
    let mut synced = harness.sync(
        &joined.member_id,
        joined.generation,
        &[(&joined.member_id, b"all")],
    );
    answered(&mut synced).expect("answered").expect("synced");
    assert_eq!(harness.state(), ClassicState::Stable);
    // A second member makes the stable group rebalance: done as soon as both have joined.
    let mut second = harness.join(join_request("", None)).expect("join accepted");
    assert!(answered(&mut second).is_none(), "waits for the first to rejoin");
    let rejoined = harness.join_now(join_request(&joined.member_id, None));
    assert_eq!(rejoined.generation, joined.generation + 1);
    let second = answered(&mut second).expect("answered").expect("joined");
    assert_eq!(second.generation, rejoined.generation);
}
