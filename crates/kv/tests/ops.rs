//! The map operations: put, delete, compare-and-swap, put-many, reads and scans.

mod common;

use bytes::Bytes;
use common::{apply_one, b, delete, put, write};
use rkv_kv::{
    DecodeError, Event, EventKind, KEY_BYTES_MAX, LimitError, Output, PUT_MANY_PAIRS_MAX,
    StateMachine, WriteOp, prefix_end,
};

fn cas(key: &str, expected: Option<&str>, new: Option<&str>) -> WriteOp {
    WriteOp::CompareAndSwap {
        key: b(key),
        expected: expected.map(b),
        new: new.map(b),
    }
}

#[test]
fn put_and_delete_report_what_changed() {
    let mut machine = StateMachine::new();
    let applied = apply_one(&mut machine, 1, &write(0, None, put("k", "v")));
    assert_eq!(applied.output, Output::Put);
    assert_eq!(
        applied.events,
        vec![Event {
            index: 1,
            key: b("k"),
            kind: EventKind::Put(b("v"))
        }]
    );
    let applied = apply_one(&mut machine, 2, &write(0, None, delete("k")));
    assert_eq!(applied.output, Output::Deleted { existed: true });
    assert_eq!(applied.events[0].kind, EventKind::Delete);
    let applied = apply_one(&mut machine, 3, &write(0, None, delete("k")));
    assert_eq!(applied.output, Output::Deleted { existed: false });
    assert!(applied.events.is_empty(), "deleting nothing is no event");
    assert!(machine.is_empty());
}

#[test]
fn compare_and_swap_semantics() {
    let mut machine = StateMachine::new();
    let mut index = 0;
    let mut run = |machine: &mut StateMachine, op: WriteOp| {
        index += 1;
        apply_one(machine, index, &write(0, None, op))
    };
    // Create-if-absent succeeds on an absent key...
    let a = run(&mut machine, cas("k", None, Some("1")));
    assert_eq!(
        a.output,
        Output::Swapped {
            swapped: true,
            previous: None
        }
    );
    assert_eq!(a.events[0].kind, EventKind::Put(b("1")));
    // ...and fails once it exists, reporting the current value.
    let a = run(&mut machine, cas("k", None, Some("2")));
    assert_eq!(
        a.output,
        Output::Swapped {
            swapped: false,
            previous: Some(b("1"))
        }
    );
    assert!(a.events.is_empty());
    assert_eq!(machine.get(b"k"), Some(&b("1")));
    // A wrong expected value fails.
    let a = run(&mut machine, cas("k", Some("x"), Some("2")));
    assert_eq!(
        a.output,
        Output::Swapped {
            swapped: false,
            previous: Some(b("1"))
        }
    );
    // The right one swaps.
    let a = run(&mut machine, cas("k", Some("1"), Some("2")));
    assert_eq!(
        a.output,
        Output::Swapped {
            swapped: true,
            previous: Some(b("1"))
        }
    );
    assert_eq!(machine.get(b"k"), Some(&b("2")));
    // new = None deletes.
    let a = run(&mut machine, cas("k", Some("2"), None));
    assert_eq!(
        a.output,
        Output::Swapped {
            swapped: true,
            previous: Some(b("2"))
        }
    );
    assert_eq!(a.events[0].kind, EventKind::Delete);
    assert_eq!(machine.get(b"k"), None);
    // Expecting a value on an absent key fails; expecting absence and keeping it absent
    // succeeds without an event.
    let a = run(&mut machine, cas("k", Some("2"), Some("3")));
    assert_eq!(
        a.output,
        Output::Swapped {
            swapped: false,
            previous: None
        }
    );
    let a = run(&mut machine, cas("k", None, None));
    assert_eq!(
        a.output,
        Output::Swapped {
            swapped: true,
            previous: None
        }
    );
    assert!(a.events.is_empty());
    // The empty value is a value, not absence.
    run(&mut machine, put("e", ""));
    let a = run(&mut machine, cas("e", None, Some("x")));
    assert_eq!(
        a.output,
        Output::Swapped {
            swapped: false,
            previous: Some(Bytes::new())
        }
    );
    let a = run(&mut machine, cas("e", Some(""), Some("x")));
    assert_eq!(
        a.output,
        Output::Swapped {
            swapped: true,
            previous: Some(Bytes::new())
        }
    );
}

#[test]
fn put_many_sets_every_pair_in_order() {
    let mut machine = StateMachine::new();
    let op = WriteOp::PutMany {
        pairs: vec![(b("a"), b("1")), (b("b"), b("2")), (b("a"), b("3"))],
    };
    let applied = apply_one(&mut machine, 1, &write(0, None, op));
    assert_eq!(applied.output, Output::PutMany);
    assert_eq!(applied.events.len(), 3);
    assert_eq!(
        machine.get(b"a"),
        Some(&b("3")),
        "the last value of a key wins"
    );
    assert_eq!(machine.get(b"b"), Some(&b("2")));
}

#[test]
fn put_many_is_atomic_when_one_pair_is_over_a_limit() {
    let mut machine = StateMachine::new();
    apply_one(&mut machine, 1, &write(0, None, put("a", "old")));
    let long_key = Bytes::from(vec![b'x'; KEY_BYTES_MAX + 1]);
    let op = WriteOp::PutMany {
        pairs: vec![(b("a"), b("new")), (long_key, b("v")), (b("c"), b("3"))],
    };
    let applied = apply_one(&mut machine, 2, &write(0, None, op));
    assert_eq!(
        applied.output,
        Output::Limit(LimitError::KeyTooLarge {
            len: KEY_BYTES_MAX + 1,
            max: KEY_BYTES_MAX
        })
    );
    assert!(applied.events.is_empty());
    assert_eq!(machine.get(b"a"), Some(&b("old")), "no pair was set");
    assert_eq!(machine.get(b"c"), None);
    assert_eq!(machine.len(), 1);

    let pairs = (0..=PUT_MANY_PAIRS_MAX).map(|i| (Bytes::from(i.to_string()), b("v")));
    let op = WriteOp::PutMany {
        pairs: pairs.collect(),
    };
    let applied = apply_one(&mut machine, 3, &write(0, None, op));
    assert!(matches!(
        applied.output,
        Output::Limit(LimitError::TooManyPairs { .. })
    ));
    assert_eq!(machine.len(), 1);
}

#[test]
fn a_malformed_payload_is_rejected_and_the_machine_goes_on() {
    let mut machine = StateMachine::new();
    let applied = apply_one(&mut machine, 1, b"");
    assert_eq!(applied.output, Output::Rejected(DecodeError::Empty));
    let applied = apply_one(&mut machine, 2, &[9, 1, 2]);
    assert_eq!(
        applied.output,
        Output::Rejected(DecodeError::UnsupportedVersion(9))
    );
    let mut truncated = write(0, None, put("k", "v"));
    truncated.pop();
    let applied = apply_one(&mut machine, 3, &truncated);
    assert_eq!(applied.output, Output::Rejected(DecodeError::Truncated));
    assert_eq!(machine.applied_index(), 3);
    let applied = apply_one(&mut machine, 4, &write(0, None, put("k", "v")));
    assert_eq!(applied.output, Output::Put);
}

fn filled() -> StateMachine {
    let mut machine = StateMachine::new();
    // Inserted out of order, with keys that straddle many internal chunks.
    let mut keys: Vec<String> = (0..1000)
        .map(|i| format!("key/{:04}", (i * 7919) % 1000))
        .collect();
    keys.extend(["", "a", "b", "b/1", "b/2", "b\u{7f}", "c"].map(String::from));
    for (index, key) in keys.iter().enumerate() {
        apply_one(
            &mut machine,
            index as u64 + 1,
            &write(0, None, put(key, key)),
        );
    }
    machine
}

#[test]
fn scans_are_in_key_order_and_respect_bounds_and_limits() {
    let machine = filled();
    assert_eq!(machine.len(), 1007);
    let all = machine.scan(b"", None, usize::MAX);
    assert_eq!(all.len(), 1007);
    assert!(
        all.windows(2).all(|w| w[0].0 < w[1].0),
        "strictly increasing keys"
    );
    assert_eq!(all[0].0, Bytes::new(), "the empty key is the first key");

    let page = machine.scan(b"key/0100", Some(b"key/0200"), usize::MAX);
    assert_eq!(page.len(), 100);
    assert_eq!(page[0].0, b("key/0100"));
    assert_eq!(page[99].0, b("key/0199"));

    let limited = machine.scan(b"key/", None, 10);
    assert_eq!(limited.len(), 10);
    assert_eq!(limited[9].0, b("key/0009"));
    assert!(machine.scan(b"key/", None, 0).is_empty());
    assert!(
        machine.scan(b"z", Some(b"a"), 10).is_empty(),
        "start after end"
    );
    assert!(machine.scan(b"b", Some(b"b"), 10).is_empty(), "empty range");

    let prefix: Vec<Bytes> = machine
        .scan_prefix(b"b/", 10)
        .into_iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(prefix, vec![b("b/1"), b("b/2")]);
    assert_eq!(machine.scan_prefix(b"key/", usize::MAX).len(), 1000);
    assert_eq!(machine.scan_prefix(b"", usize::MAX).len(), 1007);
    assert_eq!(machine.range(b"c", None).count(), 1001);
}

#[test]
fn prefix_end_is_the_least_key_after_the_prefix() {
    assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
    assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
    assert_eq!(prefix_end(b"\xff\xff"), None);
    assert_eq!(prefix_end(b""), None);
}

#[test]
fn reads_follow_deletes_across_many_keys() {
    let mut machine = filled();
    let mut index = 2_000;
    for i in (0..1000).step_by(2) {
        index += 1;
        apply_one(
            &mut machine,
            index,
            &write(0, None, delete(&format!("key/{i:04}"))),
        );
    }
    let left = machine.scan_prefix(b"key/", usize::MAX);
    assert_eq!(left.len(), 500);
    assert!(left.iter().all(|(k, _)| k.last().unwrap() % 2 == 1));
    assert_eq!(machine.get(b"key/0001"), Some(&b("key/0001")));
    assert_eq!(machine.get(b"key/0002"), None);
}
