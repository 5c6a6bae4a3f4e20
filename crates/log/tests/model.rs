//! Property test: random sequences of append (with conflicts), sync, snapshot, compact,
//! hard state and reopen give the same log in `FileLog` (on a simulated disk, with tiny
//! segments and a tiny cache so that every path is taken) as in `MemLog`, the model.
//! Proptest prints the failing sequence (shrunk) and persists its seed.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use rkv_log::sim::SimVfs;
use rkv_log::{FileLog, FileLogOptions, LogStore, MemLog};
use rkv_raft::{
    Entry, HardState, Index, Membership, NodeId, Payload, Snapshot, SnapshotMeta, Term,
};

#[derive(Clone, Debug)]
enum Op {
    /// Append `count` entries starting `back` entries before `last + 1`.
    Append {
        back: u64,
        count: u64,
        new_term: bool,
        size: usize,
    },
    Sync,
    /// A snapshot `back` entries before the last index; `mismatch` gives it another term
    /// (or puts it past the end), which replaces the log.
    Snapshot {
        back: u64,
        mismatch: bool,
    },
    /// Compact up to `back` entries before the snapshot.
    Compact {
        back: u64,
    },
    HardState {
        vote: bool,
    },
    Reopen,
    Read {
        from_back: u64,
        len: u64,
        max_bytes: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..6u64, 1..12u64, any::<bool>(), 0..300usize)
            .prop_map(|(back, count, new_term, size)| Op::Append { back, count, new_term, size }),
        3 => Just(Op::Sync),
        1 => (0..20u64, prop::bool::weighted(0.3)).prop_map(|(back, mismatch)| Op::Snapshot { back, mismatch }),
        1 => (0..20u64).prop_map(|back| Op::Compact { back }),
        1 => any::<bool>().prop_map(|vote| Op::HardState { vote }),
        1 => Just(Op::Reopen),
        2 => (0..30u64, 0..30u64, 0..2000usize).prop_map(|(from_back, len, max_bytes)| Op::Read { from_back, len, max_bytes }),
    ]
}

fn payload(index: u64, term: u64, size: usize) -> Payload {
    match size % 11 {
        0 => Payload::Noop,
        1 => Payload::Membership(Membership::with_voters([NodeId(1), NodeId(index)])),
        _ => Payload::Command(Bytes::from(vec![(index ^ term) as u8; size])),
    }
}

fn compare(model: &MemLog, real: &FileLog) -> Result<(), TestCaseError> {
    prop_assert_eq!(model.first_index(), real.first_index());
    prop_assert_eq!(model.last_index(), real.last_index());
    prop_assert_eq!(model.hard_state(), real.hard_state());
    prop_assert_eq!(model.snapshot_meta(), real.snapshot_meta());
    let (first, end) = (model.first_index(), model.last_index().next());
    prop_assert_eq!(
        model.entries(first, end, usize::MAX).unwrap(),
        real.entries(first, end, usize::MAX).unwrap()
    );
    let last = model.last_index();
    prop_assert_eq!(model.term(last).unwrap(), real.term(last).unwrap());
    Ok(())
}

fn same<T: PartialEq + std::fmt::Debug>(
    what: &str,
    model: Result<T, rkv_log::LogError>,
    real: Result<T, rkv_log::LogError>,
) -> Result<(), TestCaseError> {
    match (model, real) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{}", what),
        (Err(a), Err(b)) => prop_assert_eq!(
            std::mem::discriminant(&a),
            std::mem::discriminant(&b),
            "{}: {} vs {}",
            what,
            a,
            b
        ),
        (a, b) => prop_assert!(false, "{what}: model {a:?}, file log {b:?}"),
    }
    Ok(())
}

fn run(ops: Vec<Op>, seed: u64) -> Result<(), TestCaseError> {
    let options = FileLogOptions {
        cache_entries: 4,
        segment_bytes_max: 600,
        ..FileLogOptions::default()
    };
    let mut real = FileLog::open(Arc::new(SimVfs::new(seed)), options)
        .unwrap()
        .0;
    let mut model = MemLog::new();
    let mut term = 1u64;
    for op in ops {
        match op {
            Op::Append {
                back,
                count,
                new_term,
                size,
            } => {
                if new_term {
                    term += 1;
                }
                let start = model.last_index().0 + 1 - back.min(model.last_index().0);
                let batch: Vec<Entry> = (start..start + count)
                    .map(|i| Entry {
                        term: Term(term),
                        index: Index(i),
                        payload: payload(i, term, size + i as usize),
                    })
                    .collect();
                same("append", model.append(&batch), real.append(&batch))?;
            }
            Op::Sync => same("sync", model.sync(), real.sync())?,
            Op::Snapshot { back, mismatch } => {
                let last = model.last_index().0;
                let index = if mismatch && back % 2 == 0 {
                    last + back + 1
                } else {
                    last.saturating_sub(back)
                };
                let t = if mismatch {
                    term + 1
                } else {
                    model.term(Index(index)).map_or(term, |t| t.0)
                };
                if mismatch {
                    term += 1;
                }
                let snapshot = Snapshot {
                    meta: SnapshotMeta {
                        index: Index(index),
                        term: Term(t),
                        membership: Membership::with_voters([NodeId(1)]),
                    },
                    data: Bytes::from(format!("state {index}")),
                };
                same(
                    "snapshot",
                    model.save_snapshot(&snapshot),
                    real.save_snapshot(&snapshot),
                )?;
            }
            Op::Compact { back } => {
                let up_to = Index(model.snapshot_meta().index.0.saturating_sub(back));
                same("compact", model.compact(up_to), real.compact(up_to))?;
            }
            Op::HardState { vote } => {
                let hs = HardState {
                    term: Term(term),
                    vote: vote.then_some(NodeId(term % 3 + 1)),
                };
                same(
                    "hard state",
                    model.save_hard_state(&hs),
                    real.save_hard_state(&hs),
                )?;
            }
            Op::Reopen => {
                let (m, model_recovered, _) = model.reopen().unwrap();
                let (r, real_recovered, report) = real.reopen().unwrap();
                prop_assert_eq!(model_recovered.entries, real_recovered.entries);
                prop_assert_eq!(model_recovered.snapshot, real_recovered.snapshot);
                prop_assert_eq!(model_recovered.hard_state, real_recovered.hard_state);
                prop_assert!(
                    report.torn_tail.is_none() && report.repaired.is_none(),
                    "{}",
                    report
                );
                model = m;
                real = r;
            }
            Op::Read {
                from_back,
                len,
                max_bytes,
            } => {
                let from = Index(model.last_index().0.saturating_sub(from_back).max(1));
                let to = Index(from.0 + len);
                same(
                    "entries",
                    model.entries(from, to, max_bytes),
                    real.entries(from, to, max_bytes),
                )?;
            }
        }
        compare(&model, &real)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn file_log_behaves_like_the_model(ops in prop::collection::vec(op(), 1..80), seed in any::<u64>()) {
        run(ops, seed)?;
    }
}
