//! Hand-written histories with a known answer: one test per rule of the model and of the
//! outcome semantics (see the crate docs).

mod common;

use std::time::Duration;

use common::{cas, get, op, put};
use rkv_check::{OpKind, Operation, Outcome, Verdict, check, check_with_limit};

use Outcome::{Failed, Unknown};

const OK: Outcome = Outcome::Ok;

/// Asserts a violation on `key` whose minimal sub-history is exactly `expected` (any order).
fn assert_violation(history: &[Operation], key: &str, expected: &[&Operation]) {
    let verdict = check(history);
    let Verdict::NotLinearizable(violation) = &verdict else {
        panic!("expected a violation on {key:?}, got {verdict}");
    };
    assert_eq!(violation.key, key, "{verdict}");
    let mut minimal: Vec<&Operation> = violation.minimal.iter().collect();
    let mut expected = expected.to_vec();
    minimal.sort_by_key(|op| (op.invoke, op.client));
    expected.sort_by_key(|op| (op.invoke, op.client));
    assert_eq!(minimal, expected, "{verdict}");
}

fn assert_linearizable(history: &[Operation]) {
    let verdict = check(history);
    assert_eq!(verdict, Verdict::Linearizable, "{verdict}");
}

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&[]);
}

#[test]
fn sequential_put_then_get_is_linearizable() {
    assert_linearizable(&[
        op(1, "x", 0, 10, OK, get(None)),
        op(1, "x", 20, 30, OK, put("1")),
        op(1, "x", 40, 50, OK, get(Some("1"))),
        op(1, "x", 60, 70, OK, put("2")),
        op(1, "x", 80, 90, OK, get(Some("2"))),
    ]);
}

#[test]
fn concurrent_put_and_get_may_be_ordered_either_way() {
    for read in [None, Some("1")] {
        assert_linearizable(&[
            op(1, "x", 0, 100, OK, put("1")),
            op(2, "x", 10, 90, OK, get(read)),
        ]);
    }
}

#[test]
fn concurrent_reads_must_agree_on_one_order_of_writes() {
    // Two concurrent puts; one reader sees 1 then 2, another sees 2 then 1, both after both
    // puts completed: no single order explains both.
    let history = [
        op(1, "x", 0, 10, OK, put("1")),
        op(2, "x", 0, 10, OK, put("2")),
        op(3, "x", 20, 30, OK, get(Some("1"))),
        op(4, "x", 20, 30, OK, get(Some("2"))),
    ];
    // The puts stay: a sub-history never drops the only writer of a value it reads.
    assert_violation(
        &history,
        "x",
        &[&history[0], &history[1], &history[2], &history[3]],
    );
}

#[test]
fn stale_read_after_completed_put_is_not_linearizable() {
    let history = [
        op(1, "x", 0, 10, OK, get(None)),
        op(1, "x", 20, 30, OK, put("1")),
        op(2, "x", 25, 35, OK, get(None)), // concurrent with the put: fine either way
        op(3, "x", 40, 50, OK, get(None)), // starts after the put completed: stale
        op(4, "x", 60, 70, OK, put("2")),
        op(4, "x", 80, 90, OK, get(Some("2"))),
    ];
    assert_violation(&history, "x", &[&history[1], &history[3]]);
}

#[test]
fn stale_read_of_an_old_value_is_not_linearizable() {
    let history = [
        op(1, "x", 0, 10, OK, put("old")),
        op(1, "x", 20, 30, OK, put("new")),
        op(2, "x", 40, 50, OK, get(Some("old"))),
    ];
    assert_violation(&history, "x", &[&history[0], &history[1], &history[2]]);
}

#[test]
fn operations_touching_at_one_instant_are_concurrent() {
    // The put completes at 10 and the get is invoked at 10: the get may be ordered first.
    assert_linearizable(&[
        op(1, "x", 0, 10, OK, put("1")),
        op(2, "x", 10, 20, OK, get(None)),
    ]);
}

#[test]
fn lost_update_with_two_successful_cas_is_not_linearizable() {
    let history = [
        op(1, "x", 0, 10, OK, put("0")),
        op(2, "x", 20, 40, OK, cas(Some("0"), "a", true)),
        op(3, "x", 20, 40, OK, cas(Some("0"), "b", true)),
        op(1, "x", 50, 60, OK, get(Some("b"))),
    ];
    assert_violation(&history, "x", &[&history[0], &history[1], &history[2]]);
}

#[test]
fn concurrent_cas_where_one_loses_is_linearizable() {
    assert_linearizable(&[
        op(1, "x", 0, 10, OK, put("0")),
        op(2, "x", 20, 40, OK, cas(Some("0"), "a", false)),
        op(3, "x", 20, 40, OK, cas(Some("0"), "b", true)),
        op(1, "x", 50, 60, OK, get(Some("b"))),
    ]);
}

#[test]
fn cas_on_an_absent_key_compares_with_none() {
    assert_linearizable(&[
        op(1, "x", 0, 10, OK, cas(None, "a", true)),
        op(1, "x", 20, 30, OK, cas(None, "b", false)),
        op(1, "x", 40, 50, OK, get(Some("a"))),
    ]);
    let history = [op(1, "x", 0, 10, OK, cas(None, "a", false))];
    assert_violation(&history, "x", &[&history[0]]);
}

#[test]
fn unknown_put_whose_value_is_read_later_is_linearizable() {
    assert_linearizable(&[
        op(1, "x", 0, 5, Unknown, put("1")),
        op(2, "x", 100, 110, OK, get(Some("1"))),
    ]);
}

#[test]
fn unknown_put_that_is_never_observed_is_linearizable() {
    assert_linearizable(&[
        op(1, "x", 0, 5, Unknown, put("1")),
        op(2, "x", 100, 110, OK, get(None)),
        op(2, "x", 200, 210, OK, get(None)),
    ]);
}

#[test]
fn unknown_put_takes_effect_at_most_once() {
    // Once the value was seen and then overwritten, the unknown put cannot reappear.
    let history = [
        op(1, "x", 0, 5, Unknown, put("1")),
        op(2, "x", 10, 20, OK, get(Some("1"))),
        op(2, "x", 30, 40, OK, put("2")),
        op(2, "x", 50, 60, OK, get(Some("1"))),
    ];
    assert_violation(
        &history,
        "x",
        &[&history[0], &history[1], &history[2], &history[3]],
    );
}

#[test]
fn unknown_put_cannot_take_effect_before_it_is_invoked() {
    let history = [
        op(2, "x", 0, 10, OK, get(Some("1"))),
        op(1, "x", 20, 25, Unknown, put("1")),
    ];
    // The put cannot explain the read (it was invoked after the read completed), so the read
    // of a value not yet written is the whole witness.
    assert_violation(&history, "x", &[&history[0]]);
}

#[test]
fn unknown_results_are_not_checked() {
    // The unknown cas claims it did not swap and the unknown get claims a value never
    // written: both claims are ignored.
    assert_linearizable(&[
        op(1, "x", 0, 10, Unknown, cas(None, "a", false)),
        op(2, "x", 0, 10, Unknown, get(Some("never written"))),
        op(3, "x", 20, 30, OK, get(Some("a"))),
    ]);
}

#[test]
fn failed_put_whose_value_is_read_is_not_linearizable() {
    let history = [
        op(1, "x", 0, 10, Failed, put("1")),
        op(2, "x", 20, 30, OK, get(Some("1"))),
    ];
    // The failed put is dropped before checking, so the read alone is the witness.
    assert_violation(&history, "x", &[&history[1]]);
}

#[test]
fn read_of_a_value_never_written_is_not_linearizable() {
    let history = [
        op(1, "x", 0, 10, OK, put("1")),
        op(2, "x", 5, 15, OK, get(Some("2"))),
    ];
    assert_violation(&history, "x", &[&history[1]]);
}

#[test]
fn delete_makes_the_key_absent() {
    assert_linearizable(&[
        op(1, "x", 0, 10, OK, put("1")),
        op(1, "x", 20, 30, OK, OpKind::Delete),
        op(1, "x", 40, 50, OK, get(None)),
        op(1, "x", 60, 70, OK, cas(None, "2", true)),
        op(1, "x", 80, 90, OK, get(Some("2"))),
    ]);
    let history = [
        op(1, "x", 0, 10, OK, put("1")),
        op(1, "x", 20, 30, OK, OpKind::Delete),
        op(2, "x", 40, 50, OK, get(Some("1"))),
    ];
    assert_violation(&history, "x", &[&history[0], &history[1], &history[2]]);
}

#[test]
fn violation_on_one_key_among_many_names_that_key() {
    let mut history = Vec::new();
    for key in 0..50_u64 {
        let name = format!("key-{key:02}");
        let value = key.to_string();
        history.push(op(key, &name, 0, 10, OK, put(&value)));
        history.push(op(key + 100, &name, 5, 25, OK, get(Some(&value))));
        history.push(op(key, &name, 20, 30, OK, get(Some(&value))));
    }
    let stale = op(7, "key-37", 40, 50, OK, get(None));
    history.push(stale.clone());
    let verdict = check(&history);
    let violation = verdict.violation().expect("key-37 has a stale read");
    assert_eq!(violation.key, "key-37", "{verdict}");
    assert!(violation.minimal.contains(&stale), "{verdict}");
    assert!(
        violation.minimal.iter().all(|op| op.key == "key-37"),
        "{verdict}"
    );
    assert_eq!(violation.minimal.len(), 2, "{verdict}");
}

#[test]
fn the_smallest_violating_key_is_reported() {
    let history = [
        op(1, "b", 0, 10, OK, get(Some("never"))),
        op(2, "a", 0, 10, OK, get(Some("never"))),
        op(3, "c", 0, 10, OK, get(Some("never"))),
    ];
    assert_eq!(
        check(&history).violation().map(|v| v.key.as_str()),
        Some("a")
    );
}

#[test]
fn the_smallest_violating_key_is_reported_when_checking_in_parallel() {
    // Large enough to be checked on several threads; violations on keys 150, 40 and 99 (in
    // that order in the input), so whichever thread finds one first, key 40 must win.
    let mut history = Vec::new();
    for key in 0..200_u64 {
        let name = format!("key-{key:03}");
        for round in 0..12_u64 {
            let value = round.to_string();
            history.push(op(key, &name, round * 20, round * 20 + 10, OK, put(&value)));
            history.push(op(
                key,
                &name,
                round * 20 + 12,
                round * 20 + 18,
                OK,
                get(Some(&value)),
            ));
        }
    }
    for key in [150, 40, 99] {
        history.push(op(7, &format!("key-{key:03}"), 1000, 1010, OK, get(None)));
    }
    for attempt in 0..10 {
        let verdict = check(&history);
        assert_eq!(
            verdict.violation().map(|v| v.key.as_str()),
            Some("key-040"),
            "attempt {attempt}: {verdict}"
        );
    }
}

#[test]
fn malformed_operation_is_inconclusive_not_a_panic() {
    let history = [op(1, "x", 10, 5, OK, put("1"))];
    let verdict = check(&history);
    assert!(
        matches!(&verdict, Verdict::Inconclusive { key, .. } if key == "x"),
        "{verdict}"
    );
}

/// Many mutually concurrent writes followed by a read no write explains: the search must try
/// every subset of writes before it can say no, which a tiny budget does not allow.
fn hopeless_key(key: &str) -> Vec<Operation> {
    let mut ops: Vec<Operation> = (0..40)
        .map(|client| op(client, key, 0, 100, OK, put(&client.to_string())))
        .collect();
    ops.push(op(99, key, 0, 100, OK, get(Some("never written"))));
    ops
}

#[test]
fn budget_exhaustion_is_inconclusive_and_names_the_key() {
    let mut history = hopeless_key("slow");
    history.push(op(1, "fine", 0, 10, OK, put("1")));
    let verdict = check_with_limit(&history, Duration::from_millis(20));
    assert!(
        matches!(&verdict, Verdict::Inconclusive { key, .. } if key == "slow"),
        "{verdict}"
    );
}

#[test]
fn a_violation_beats_an_inconclusive_key() {
    let mut history = hopeless_key("slow");
    history.push(op(1, "z-broken", 0, 10, OK, put("1")));
    history.push(op(2, "z-broken", 20, 30, OK, get(None)));
    let verdict = check_with_limit(&history, Duration::from_millis(20));
    assert_eq!(
        verdict.violation().map(|v| v.key.as_str()),
        Some("z-broken"),
        "{verdict}"
    );
}
