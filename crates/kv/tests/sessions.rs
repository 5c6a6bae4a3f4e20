//! Exactly-once client sessions: duplicates, early arrivals, bounds, expiry.

mod common;

use bytes::Bytes;
use common::{apply_one, b, delete, put, register, write};
use rkv_kv::{
    ClientSeq, EventKind, LimitError, Output, SEQ_WINDOW, SESSION_TTL_MS, SESSIONS_MAX,
    SessionError, StateMachine, VALUE_BYTES_MAX, WriteOp,
};

/// A machine with one session (client id 1) registered at t = 1000.
fn with_session() -> StateMachine {
    let mut machine = StateMachine::new();
    let applied = apply_one(&mut machine, 1, &register(1_000));
    assert_eq!(applied.output, Output::Registered { client_id: 1 });
    machine
}

#[test]
fn register_uses_the_log_index_as_client_id() {
    let mut machine = StateMachine::new();
    machine.apply_noop(6);
    let applied = apply_one(&mut machine, 7, &register(0));
    assert_eq!(applied.output, Output::Registered { client_id: 7 });
    assert_eq!(applied.session, None);
    assert_eq!(machine.session_last_seq(7), Some(0));
    assert_eq!(machine.applied_index(), 7);
}

#[test]
fn a_retry_of_the_last_write_returns_the_original_result_and_is_not_reapplied() {
    let mut machine = with_session();
    let first = apply_one(&mut machine, 2, &write(1_001, Some((1, 1)), put("k", "v1")));
    assert_eq!(first.output, Output::Put);
    assert_eq!(first.events.len(), 1);
    assert!(!first.duplicate);

    // Another write of the key without a session, then a retry of seq 1.
    apply_one(&mut machine, 3, &write(1_002, None, put("k", "other")));
    let retry = apply_one(&mut machine, 4, &write(1_003, Some((1, 1)), put("k", "v1")));
    assert!(retry.duplicate);
    assert_eq!(retry.output, Output::Put);
    assert!(retry.events.is_empty(), "a duplicate changes nothing");
    assert_eq!(
        retry.session,
        Some(ClientSeq {
            client_id: 1,
            seq: 1
        })
    );
    assert_eq!(
        machine.get(b"k"),
        Some(&b("other")),
        "the retry was not re-applied"
    );
}

#[test]
fn the_original_result_is_kept_even_when_the_state_changed_since() {
    let mut machine = with_session();
    let swap = WriteOp::CompareAndSwap {
        key: b("k"),
        expected: None,
        new: Some(b("v")),
    };
    let first = apply_one(&mut machine, 2, &write(1_001, Some((1, 1)), swap.clone()));
    let original = Output::Swapped {
        swapped: true,
        previous: None,
    };
    assert_eq!(first.output, original);
    // Re-applying would now fail (the key exists); the retry must still say it swapped.
    let retry = apply_one(&mut machine, 3, &write(1_002, Some((1, 1)), swap));
    assert_eq!(retry.output, original);
    assert!(retry.duplicate);
}

#[test]
fn older_duplicates_answer_duplicate_without_result() {
    let mut machine = with_session();
    apply_one(&mut machine, 2, &write(1, Some((1, 1)), put("a", "1")));
    apply_one(&mut machine, 3, &write(1, Some((1, 2)), delete("a")));
    let old = apply_one(&mut machine, 4, &write(1, Some((1, 1)), put("a", "1")));
    assert_eq!(old.output, Output::Duplicate);
    assert!(old.duplicate);
    assert_eq!(machine.get(b"a"), None, "the old put was not re-applied");
    let last = apply_one(&mut machine, 5, &write(1, Some((1, 2)), delete("a")));
    assert_eq!(last.output, Output::Deleted { existed: true });
}

#[test]
fn early_writes_are_buffered_and_released_in_order_by_the_gap_filler() {
    let mut machine = with_session();
    // seq 3 and 4 arrive before 2, and seq 1 before all.
    apply_one(&mut machine, 2, &write(1, Some((1, 1)), put("k", "1")));
    assert!(
        machine
            .apply(3, &write(1, Some((1, 4)), put("k", "4")))
            .is_empty()
    );
    assert!(
        machine
            .apply(4, &write(1, Some((1, 3)), put("k", "3")))
            .is_empty()
    );
    assert_eq!(
        machine.get(b"k"),
        Some(&b("1")),
        "nothing applied out of order"
    );
    assert_eq!(machine.session_buffered(1), Some(2));
    assert_eq!(machine.applied_index(), 4);

    let released = machine.apply(5, &write(1, Some((1, 2)), put("k", "2")));
    let seqs: Vec<u64> = released.iter().map(|a| a.session.unwrap().seq).collect();
    assert_eq!(seqs, vec![2, 3, 4], "released in sequence order");
    let indexes: Vec<u64> = released.iter().map(|a| a.index).collect();
    assert_eq!(indexes, vec![5, 4, 3], "each answer names its own entry");
    for applied in &released {
        assert_eq!(applied.output, Output::Put);
        // The changes became visible at entry 5.
        assert_eq!(applied.events[0].index, 5);
    }
    let values: Vec<EventKind> = released.iter().map(|a| a.events[0].kind.clone()).collect();
    assert_eq!(
        values,
        vec![
            EventKind::Put(b("2")),
            EventKind::Put(b("3")),
            EventKind::Put(b("4"))
        ]
    );
    assert_eq!(machine.get(b"k"), Some(&b("4")));
    assert_eq!(machine.session_last_seq(1), Some(4));
    assert_eq!(machine.session_buffered(1), Some(0));

    // A release stops at the next gap.
    assert!(
        machine
            .apply(6, &write(1, Some((1, 7)), put("k", "7")))
            .is_empty()
    );
    let released = machine.apply(7, &write(1, Some((1, 5)), put("k", "5")));
    assert_eq!(released.len(), 1);
    assert_eq!(machine.session_buffered(1), Some(1));
}

#[test]
fn a_retry_of_a_buffered_write_is_answered_once_on_release() {
    let mut machine = with_session();
    assert!(
        machine
            .apply(2, &write(1, Some((1, 2)), put("k", "first")))
            .is_empty()
    );
    assert!(
        machine
            .apply(3, &write(1, Some((1, 2)), put("k", "retry")))
            .is_empty()
    );
    assert_eq!(machine.session_buffered(1), Some(1));
    let released = machine.apply(4, &write(1, Some((1, 1)), put("x", "1")));
    assert_eq!(released.len(), 2);
    assert_eq!(released[1].index, 2, "the first copy is the one applied");
    assert_eq!(machine.get(b"k"), Some(&b("first")));
}

#[test]
fn the_buffer_is_bounded_by_the_sequence_window() {
    let mut machine = with_session();
    let mut index = 2;
    for seq in 2..=SEQ_WINDOW {
        assert!(
            machine
                .apply(index, &write(1, Some((1, seq)), put("k", "v")))
                .is_empty()
        );
        index += 1;
    }
    assert_eq!(machine.session_buffered(1), Some(SEQ_WINDOW as usize - 1));
    let beyond = apply_one(
        &mut machine,
        index,
        &write(1, Some((1, SEQ_WINDOW + 1)), put("k", "v")),
    );
    assert_eq!(
        beyond.output,
        Output::Session(SessionError::TooFarAhead {
            client_id: 1,
            seq: SEQ_WINDOW + 1,
            last_seq: 0
        })
    );
    assert_eq!(machine.session_buffered(1), Some(SEQ_WINDOW as usize - 1));
    // TooFarAhead does not consume the number: once the gap fills, it can be sent again.
    index += 1;
    let released = machine.apply(index, &write(1, Some((1, 1)), put("k", "v")));
    assert_eq!(released.len(), SEQ_WINDOW as usize);
    index += 1;
    let again = apply_one(
        &mut machine,
        index,
        &write(1, Some((1, SEQ_WINDOW + 1)), put("k", "last")),
    );
    assert_eq!(again.output, Output::Put);
}

#[test]
fn the_buffer_is_bounded_in_bytes() {
    let mut machine = with_session();
    let big = Bytes::from(vec![7u8; VALUE_BYTES_MAX]);
    let mut buffered = 0;
    let mut full = None;
    for seq in 2..40 {
        let op = WriteOp::Put {
            key: b("k"),
            value: big.clone(),
        };
        // Entry index = seq: entry 1 registered the session.
        let applied = machine.apply(seq, &write(1, Some((1, seq)), op));
        if applied.is_empty() {
            buffered += 1;
        } else {
            full = Some(applied[0].output.clone());
            break;
        }
    }
    assert_eq!(
        buffered, 7,
        "8 MiB per session holds 7 values of 1 MiB and a key"
    );
    assert_eq!(
        full,
        Some(Output::Session(SessionError::BufferFull {
            client_id: 1,
            seq: 9
        }))
    );
}

#[test]
fn an_unknown_session_is_an_answer_not_a_panic() {
    let mut machine = with_session();
    let applied = apply_one(&mut machine, 2, &write(1, Some((99, 1)), put("k", "v")));
    assert_eq!(
        applied.output,
        Output::Session(SessionError::Unknown { client_id: 99 })
    );
    assert!(applied.output.is_error());
    assert_eq!(machine.get(b"k"), None);
    assert_eq!(machine.applied_index(), 2);
}

#[test]
fn sequence_zero_is_refused() {
    let mut machine = with_session();
    let applied = apply_one(&mut machine, 2, &write(1, Some((1, 0)), put("k", "v")));
    assert_eq!(
        applied.output,
        Output::Session(SessionError::ZeroSeq { client_id: 1 })
    );
    assert_eq!(machine.get(b"k"), None);
}

#[test]
fn sessions_expire_after_the_idle_time_of_the_stamped_clock() {
    let mut machine = with_session(); // active at t = 1000
    let t = 1_000 + SESSION_TTL_MS;
    // Exactly the TTL idle: still alive, and this write refreshes it.
    let applied = apply_one(&mut machine, 2, &write(t, Some((1, 1)), put("k", "v")));
    assert_eq!(applied.output, Output::Put);
    // Another session's activity moves the clock past the TTL of session 1.
    apply_one(&mut machine, 3, &register(t + SESSION_TTL_MS));
    assert_eq!(machine.session_last_seq(1), Some(1));
    apply_one(
        &mut machine,
        4,
        &write(t + SESSION_TTL_MS + 1, None, put("x", "y")),
    );
    assert_eq!(machine.session_last_seq(1), None, "expired");
    let applied = apply_one(
        &mut machine,
        5,
        &write(t + SESSION_TTL_MS + 1, Some((1, 2)), put("k", "w")),
    );
    assert_eq!(
        applied.output,
        Output::Session(SessionError::Unknown { client_id: 1 })
    );
    assert_eq!(
        machine.session_last_seq(3),
        Some(0),
        "the fresh session lives"
    );
}

#[test]
fn buffered_writes_of_an_expired_session_are_answered_expired() {
    let mut machine = with_session();
    assert!(
        machine
            .apply(2, &write(1_000, Some((1, 3)), put("k", "v")))
            .is_empty()
    );
    let applied = machine.apply(3, &write(1_000 + SESSION_TTL_MS + 1, None, put("x", "y")));
    assert_eq!(applied.len(), 2);
    assert_eq!(applied[0].index, 2);
    assert_eq!(
        applied[0].session,
        Some(ClientSeq {
            client_id: 1,
            seq: 3
        })
    );
    assert_eq!(
        applied[0].output,
        Output::Session(SessionError::Expired { client_id: 1 })
    );
    assert_eq!(applied[1].output, Output::Put);
    assert_eq!(machine.get(b"k"), None);
}

#[test]
fn the_clock_never_goes_backwards() {
    let mut machine = with_session();
    apply_one(&mut machine, 2, &write(5_000, None, put("a", "1")));
    assert_eq!(machine.clock_ms(), 5_000);
    // A new leader whose wall clock is behind stamps an earlier time.
    apply_one(&mut machine, 3, &write(10, Some((1, 1)), put("a", "2")));
    assert_eq!(machine.clock_ms(), 5_000);
    // The session's activity was recorded at the machine clock, not at 10, so it does not
    // expire early: one TTL after 5000 it is still alive.
    apply_one(
        &mut machine,
        4,
        &write(5_000 + SESSION_TTL_MS, None, put("a", "3")),
    );
    assert_eq!(machine.session_last_seq(1), Some(1));
}

#[test]
fn registering_beyond_the_bound_evicts_the_longest_idle_session() {
    let mut machine = StateMachine::new();
    let mut index = 1;
    for _ in 0..SESSIONS_MAX {
        apply_one(&mut machine, index, &register(index));
        index += 1;
    }
    // Session 1 is the oldest, but it writes now; session 2 becomes the longest idle.
    apply_one(
        &mut machine,
        index,
        &write(index, Some((1, 1)), put("k", "v")),
    );
    index += 1;
    assert_eq!(machine.session_count(), SESSIONS_MAX);
    apply_one(&mut machine, index, &register(index));
    assert_eq!(machine.session_count(), SESSIONS_MAX);
    assert_eq!(machine.session_last_seq(2), None, "longest idle evicted");
    assert_eq!(machine.session_last_seq(1), Some(1));
    assert_eq!(machine.session_last_seq(index), Some(0));
}

#[test]
fn a_write_over_a_limit_consumes_its_sequence_number() {
    let mut machine = with_session();
    let huge = WriteOp::Put {
        key: b("k"),
        value: Bytes::from(vec![0u8; VALUE_BYTES_MAX + 1]),
    };
    let refused = apply_one(&mut machine, 2, &write(1, Some((1, 1)), huge.clone()));
    let error = Output::Limit(LimitError::ValueTooLarge {
        len: VALUE_BYTES_MAX + 1,
        max: VALUE_BYTES_MAX,
    });
    assert_eq!(refused.output, error);
    assert!(refused.events.is_empty());
    assert_eq!(machine.get(b"k"), None);
    assert_eq!(machine.session_last_seq(1), Some(1));
    let retry = apply_one(&mut machine, 3, &write(1, Some((1, 1)), huge));
    assert_eq!(retry.output, error);
    assert!(retry.duplicate);
}

#[test]
fn replayed_indexes_are_ignored() {
    let mut machine = with_session();
    apply_one(&mut machine, 2, &write(1, None, put("k", "v")));
    let digest = machine.digest();
    assert!(machine.apply(2, &write(1, None, put("k", "w"))).is_empty());
    assert!(machine.apply(1, &register(5)).is_empty());
    assert_eq!(machine.digest(), digest);
}
