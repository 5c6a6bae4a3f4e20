//! The conformance suite every [`LogStore`] must pass.
//!
//! Exists so that [`crate::MemLog`] (the model) and [`crate::FileLog`] (the real thing)
//! are held to one contract, written once (as openraft's `testing/log/suite.rs`). Each
//! case gets a fresh store from `make`; a failing case panics with its name.
//!
//! ```
//! rkv_log::conformance::run_all(rkv_log::MemLog::new);
//! ```

use bytes::Bytes;
use rkv_raft::{
    Entry, HardState, Index, Membership, NodeId, Payload, Snapshot, SnapshotMeta, Term,
};

use crate::{LogError, LogStore};

/// A deterministic entry: its payload depends on index and term only.
pub fn entry(index: u64, term: u64) -> Entry {
    let payload = match index % 7 {
        0 => Payload::Noop,
        3 => Payload::Membership(Membership::with_voters([NodeId(1), NodeId(index % 5 + 2)])),
        _ => Payload::Command(Bytes::from(format!(
            "i{index}t{term}:{}",
            "x".repeat((index % 13) as usize)
        ))),
    };
    Entry {
        term: Term(term),
        index: Index(index),
        payload,
    }
}

/// Entries `from ..= to`, all of term `term`.
pub fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..=to).map(|i| entry(i, term)).collect()
}

fn snapshot(index: u64, term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index: Index(index),
            term: Term(term),
            membership: Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
        },
        data: Bytes::from(format!("state machine at {index}")),
    }
}

fn all<S: LogStore>(store: &S) -> Vec<Entry> {
    store
        .entries(store.first_index(), store.last_index().next(), usize::MAX)
        .expect("reading the whole log")
}

fn reopen<S: LogStore>(store: S) -> S {
    let (store, recovered, _report) = store.reopen().expect("reopen");
    assert_eq!(
        recovered.entries,
        all(&store),
        "recovered entries match the store"
    );
    assert_eq!(recovered.hard_state, store.hard_state());
    assert_eq!(&recovered.snapshot.meta, store.snapshot_meta());
    store
}

/// A named case: it gets a fresh store and panics on failure.
pub type Case<S> = (&'static str, fn(S));

/// The cases, by name.
pub fn cases<S: LogStore>() -> Vec<Case<S>> {
    vec![
        ("empty", empty::<S>),
        ("append_and_read", append_and_read::<S>),
        ("refuses_bad_appends", refuses_bad_appends::<S>),
        ("overwrite_on_conflict", overwrite_on_conflict::<S>),
        ("overwrite_unsynced", overwrite_unsynced::<S>),
        (
            "reopen_keeps_everything_synced",
            reopen_keeps_everything_synced::<S>,
        ),
        ("compaction", compaction::<S>),
        (
            "snapshot_matching_keeps_log",
            snapshot_matching_keeps_log::<S>,
        ),
        ("snapshot_replaces_log", snapshot_replaces_log::<S>),
        ("hard_state", hard_state::<S>),
        ("max_bytes", max_bytes::<S>),
    ]
}

/// Runs every case on a fresh store from `make`.
pub fn run_all<S: LogStore>(make: impl Fn() -> S) {
    for (name, case) in cases::<S>() {
        eprintln!("conformance: {name}");
        case(make());
    }
}

fn empty<S: LogStore>(mut store: S) {
    assert_eq!(store.first_index(), Index(1));
    assert_eq!(store.last_index(), Index(0));
    assert_eq!(store.term(Index(0)).unwrap(), Term(0));
    assert!(matches!(
        store.term(Index(1)),
        Err(LogError::Unavailable { .. })
    ));
    assert_eq!(store.entries(Index(1), Index(1), 100).unwrap(), vec![]);
    assert_eq!(store.sync().unwrap(), (Index(0), Term(0)));
    assert_eq!(store.hard_state(), HardState::default());
    let store = reopen(store);
    assert_eq!(store.last_index(), Index(0));
}

fn append_and_read<S: LogStore>(mut store: S) {
    let written = [entries(1, 10, 1), entries(11, 30, 2)].concat();
    store.append(&written[..10]).unwrap();
    store.append(&written[10..]).unwrap();
    assert_eq!(store.last_index(), Index(30));
    assert_eq!(all(&store), written, "readable before sync");
    assert_eq!(store.sync().unwrap(), (Index(30), Term(2)));
    assert_eq!(all(&store), written);
    assert_eq!(
        store.entries(Index(5), Index(9), usize::MAX).unwrap(),
        written[4..8]
    );
    assert_eq!(store.term(Index(10)).unwrap(), Term(1));
    assert_eq!(store.term(Index(11)).unwrap(), Term(2));
    assert!(matches!(
        store.term(Index(31)),
        Err(LogError::Unavailable { .. })
    ));
    assert!(matches!(
        store.entries(Index(5), Index(32), usize::MAX),
        Err(LogError::Unavailable { .. })
    ));
    store.append(&entries(31, 31, 2)).unwrap();
    assert_eq!(store.sync().unwrap(), (Index(31), Term(2)));
}

fn refuses_bad_appends<S: LogStore>(mut store: S) {
    store.append(&entries(1, 5, 2)).unwrap();
    let gap = store.append(&entries(7, 8, 2)).unwrap_err();
    assert!(matches!(gap, LogError::Gap { .. }), "{gap}");
    assert_eq!(gap.actor(), crate::Actor::Caller);
    let mut holes = entries(6, 8, 2);
    holes.remove(1);
    assert!(matches!(
        store.append(&holes),
        Err(LogError::NotContiguous { .. })
    ));
    assert!(matches!(
        store.append(&entries(6, 6, 1)),
        Err(LogError::TermRegression { .. })
    ));
    assert!(matches!(
        store.append(&entries(3, 3, 1)),
        Err(LogError::TermRegression { .. })
    ));
    assert!(matches!(
        store.append(&entries(0, 1, 3)),
        Err(LogError::BelowSnapshot { .. })
    ));
    // Refused appends change nothing.
    assert_eq!(all(&store), entries(1, 5, 2));
    store.append(&[]).unwrap();
    assert_eq!(store.sync().unwrap(), (Index(5), Term(2)));
}

fn overwrite_on_conflict<S: LogStore>(mut store: S) {
    store.append(&entries(1, 10, 1)).unwrap();
    store.sync().unwrap();
    store.append(&entries(5, 7, 2)).unwrap();
    assert_eq!(store.last_index(), Index(7));
    let expected = [entries(1, 4, 1), entries(5, 7, 2)].concat();
    assert_eq!(all(&store), expected);
    assert_eq!(store.sync().unwrap(), (Index(7), Term(2)));
    // Overwrite again, at the very first index of the previous overwrite.
    store.append(&entries(5, 12, 3)).unwrap();
    store.sync().unwrap();
    let expected = [entries(1, 4, 1), entries(5, 12, 3)].concat();
    assert_eq!(all(&store), expected);
    let mut store = reopen(store);
    assert_eq!(all(&store), expected);
    // And after a reopen, a conflict into recovered entries.
    store.append(&entries(2, 3, 4)).unwrap();
    assert_eq!(store.sync().unwrap(), (Index(3), Term(4)));
    let store = reopen(store);
    assert_eq!(all(&store), [entries(1, 1, 1), entries(2, 3, 4)].concat());
}

fn overwrite_unsynced<S: LogStore>(mut store: S) {
    store.append(&entries(1, 5, 1)).unwrap();
    store.append(&entries(3, 8, 2)).unwrap();
    store.append(&entries(8, 9, 3)).unwrap();
    let expected = [entries(1, 2, 1), entries(3, 7, 2), entries(8, 9, 3)].concat();
    assert_eq!(all(&store), expected);
    assert_eq!(store.sync().unwrap(), (Index(9), Term(3)));
    let store = reopen(store);
    assert_eq!(all(&store), expected);
}

fn reopen_keeps_everything_synced<S: LogStore>(mut store: S) {
    let mut expected = Vec::new();
    for round in 0..5u64 {
        let batch = entries(round * 40 + 1, round * 40 + 40, round + 1);
        store.append(&batch).unwrap();
        expected.extend(batch);
        store.sync().unwrap();
        store = reopen(store);
        assert_eq!(all(&store), expected, "after reopen {round}");
        assert_eq!(store.last_index(), Index(round * 40 + 40));
    }
}

fn compaction<S: LogStore>(mut store: S) {
    store.append(&entries(1, 100, 1)).unwrap();
    store.sync().unwrap();
    assert!(matches!(
        store.compact(Index(10)),
        Err(LogError::CompactBeyondSnapshot { .. })
    ));
    store.save_snapshot(&snapshot(40, 1)).unwrap();
    store.compact(Index(30)).unwrap();
    assert_eq!(store.first_index(), Index(31));
    assert!(matches!(
        store.term(Index(20)),
        Err(LogError::Compacted { .. })
    ));
    assert!(matches!(
        store.entries(Index(30), Index(35), usize::MAX),
        Err(LogError::Compacted { .. })
    ));
    assert_eq!(all(&store), entries(31, 100, 1));
    store.compact(Index(40)).unwrap();
    store.compact(Index(20)).unwrap(); // behind the first index: nothing to do
    assert_eq!(store.first_index(), Index(41));
    assert_eq!(
        store.term(Index(40)).unwrap(),
        Term(1),
        "the snapshot's term"
    );
    assert!(matches!(
        store.compact(Index(41)),
        Err(LogError::CompactBeyondSnapshot { .. })
    ));
    store.append(&entries(101, 120, 2)).unwrap();
    store.sync().unwrap();
    let mut store = reopen(store);
    assert_eq!(store.first_index(), Index(41));
    assert_eq!(
        all(&store),
        [entries(41, 100, 1), entries(101, 120, 2)].concat()
    );
    store.save_snapshot(&snapshot(120, 2)).unwrap();
    store.compact(Index(120)).unwrap();
    assert_eq!(store.first_index(), Index(121));
    assert_eq!(store.last_index(), Index(120));
    assert_eq!(store.sync().unwrap(), (Index(120), Term(2)));
    let mut store = reopen(store);
    assert_eq!(store.last_index(), Index(120));
    store.append(&entries(121, 125, 3)).unwrap();
    store.sync().unwrap();
    let store = reopen(store);
    assert_eq!(all(&store), entries(121, 125, 3));
}

fn snapshot_matching_keeps_log<S: LogStore>(mut store: S) {
    store.append(&entries(1, 10, 1)).unwrap();
    store.save_snapshot(&snapshot(5, 1)).unwrap();
    assert_eq!(
        store.first_index(),
        Index(1),
        "a matching snapshot keeps the log"
    );
    assert_eq!(all(&store), entries(1, 10, 1));
    assert_eq!(store.snapshot().unwrap(), snapshot(5, 1));
    assert!(matches!(
        store.save_snapshot(&snapshot(4, 1)),
        Err(LogError::StaleSnapshot { .. })
    ));
    let (store, recovered, _) = store.reopen().unwrap();
    assert_eq!(recovered.snapshot, snapshot(5, 1));
    assert_eq!(recovered.entries, entries(6, 10, 1));
    assert_eq!(store.first_index(), Index(6));
    assert_eq!(store.snapshot().unwrap(), snapshot(5, 1));
}

fn snapshot_replaces_log<S: LogStore>(mut store: S) {
    store.append(&entries(1, 10, 1)).unwrap();
    store.sync().unwrap();
    // The leader's snapshot disagrees at its index: the whole log goes.
    store.save_snapshot(&snapshot(8, 2)).unwrap();
    assert_eq!(store.first_index(), Index(9));
    assert_eq!(store.last_index(), Index(8));
    assert_eq!(store.term(Index(8)).unwrap(), Term(2));
    assert_eq!(all(&store), vec![]);
    assert_eq!(store.sync().unwrap(), (Index(8), Term(2)));
    let mut store = reopen(store);
    assert_eq!(store.last_index(), Index(8));
    // Beyond the log's end: also replaces it.
    store.append(&entries(9, 12, 2)).unwrap();
    store.save_snapshot(&snapshot(50, 3)).unwrap();
    assert_eq!(all(&store), vec![]);
    store.append(&entries(51, 55, 3)).unwrap();
    store.sync().unwrap();
    let (store, recovered, _) = store.reopen().unwrap();
    assert_eq!(recovered.snapshot, snapshot(50, 3));
    assert_eq!(recovered.entries, entries(51, 55, 3));
    assert_eq!(store.snapshot().unwrap(), snapshot(50, 3));
}

fn hard_state<S: LogStore>(mut store: S) {
    for term in 1..=5u64 {
        let hs = HardState {
            term: Term(term),
            vote: (term % 2 == 1).then_some(NodeId(term)),
        };
        store.save_hard_state(&hs).unwrap();
        assert_eq!(store.hard_state(), hs);
        store = reopen(store);
        assert_eq!(store.hard_state(), hs);
    }
}

fn max_bytes<S: LogStore>(mut store: S) {
    store.append(&entries(1, 20, 1)).unwrap();
    store.sync().unwrap();
    let one = store.entries(Index(1), Index(21), 0).unwrap();
    assert_eq!(one.len(), 1, "at least one entry, whatever the limit");
    let limit: usize = entries(1, 5, 1).iter().map(Entry::size_bytes).sum();
    assert_eq!(
        store.entries(Index(1), Index(21), limit).unwrap(),
        entries(1, 5, 1)
    );
    assert_eq!(
        store.entries(Index(1), Index(21), limit + 1).unwrap(),
        entries(1, 5, 1)
    );
    assert_eq!(store.entries(Index(7), Index(7), 0).unwrap(), vec![]);
}
