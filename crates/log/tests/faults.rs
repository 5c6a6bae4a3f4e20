//! Fault injection: after every injected fault (EIO on write or sync, a torn write, short
//! writes) and a crash that keeps only synced bytes (plus, sometimes, a torn prefix of
//! the rest), recovery yields exactly a prefix of what was written that includes
//! everything reported durable, and the log can go on from there. Every case derives from
//! one seed, printed when it fails.

use std::sync::Arc;

use rkv_log::conformance::entry;
use rkv_log::sim::{Faults, SimVfs};
use rkv_log::{Actor, FileLog, FileLogOptions, LogError, LogStore};
use rkv_raft::{Entry, HardState, Index, NodeId, Term};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn options() -> FileLogOptions {
    FileLogOptions {
        cache_entries: 8,
        segment_bytes_max: 2048,
        ..FileLogOptions::default()
    }
}

fn open(vfs: &SimVfs) -> Result<(FileLog, rkv_raft::Recovered, rkv_log::RecoveryReport), LogError> {
    FileLog::open(Arc::new(vfs.clone()), options())
}

fn faults(rng: &mut Rng) -> Faults {
    let k = Some(rng.below(40));
    match rng.below(5) {
        0 => Faults {
            write_error_after: k,
            ..Faults::default()
        },
        1 => Faults {
            sync_error_after: k,
            ..Faults::default()
        },
        2 => Faults {
            torn_write_after: k,
            ..Faults::default()
        },
        3 => Faults {
            short_writes: true,
            ..Faults::default()
        },
        _ => Faults::default(),
    }
}

/// What the workload did before the fault (or the crash) stopped it.
struct Outcome {
    written: Vec<Entry>,
    durable: u64,
    hard_states: Vec<HardState>,
}

/// Appends and syncs until an error, checking that errors poison the log.
fn workload(log: &mut FileLog, rng: &mut Rng, mut outcome: Outcome) -> Outcome {
    let term = outcome.written.last().map_or(1, |e| e.term.0);
    for _ in 0..rng.below(60) {
        let next = outcome.written.len() as u64 + 1;
        let result = match rng.below(10) {
            0 => {
                let hs = HardState {
                    term: Term(term),
                    vote: Some(NodeId(rng.below(3))),
                };
                outcome.hard_states.push(hs);
                log.save_hard_state(&hs).map(|()| {
                    // Durable: older states may no longer come back.
                    outcome.hard_states.drain(..outcome.hard_states.len() - 1);
                })
            }
            1..=3 => log.sync().map(|(index, t)| {
                assert_eq!(index.0, outcome.written.len() as u64);
                assert_eq!(outcome.written.last().map_or(Term(0), |e| e.term), t);
                outcome.durable = index.0;
            }),
            _ => {
                let batch: Vec<Entry> = (next..next + 1 + rng.below(20))
                    .map(|i| entry(i, term))
                    .collect();
                // Even a failed append may have written part of the batch (a segment
                // roll writes): count it as written, never as durable.
                let result = log.append(&batch);
                outcome.written.extend(batch);
                result
            }
        };
        if let Err(error) = result {
            assert_eq!(error.actor(), Actor::Environment, "{error}");
            assert!(
                matches!(log.sync(), Err(LogError::Poisoned)),
                "an I/O error poisons the log"
            );
            break;
        }
    }
    outcome
}

/// Checks the recovered state against what was written and reported durable.
fn check(recovered: &rkv_raft::Recovered, outcome: &Outcome) -> usize {
    let entries = &recovered.entries;
    assert!(
        entries.len() as u64 >= outcome.durable,
        "lost durable entries: recovered {} < durable {}",
        entries.len(),
        outcome.durable
    );
    assert!(
        entries.len() <= outcome.written.len(),
        "recovered entries never written"
    );
    assert_eq!(
        entries[..],
        outcome.written[..entries.len()],
        "recovered a prefix of what was written"
    );
    assert!(
        outcome.hard_states.contains(&recovered.hard_state),
        "hard state {:?} is neither the durable one nor the one being saved: {:?}",
        recovered.hard_state,
        outcome.hard_states
    );
    entries.len()
}

fn run_seed(seed: u64) {
    let mut rng = Rng(seed);
    let vfs = SimVfs::new(seed);
    let (mut log, _, _) = open(&vfs).expect("open an empty log");
    vfs.set_faults(faults(&mut rng));
    let outcome = Outcome {
        written: Vec::new(),
        durable: 0,
        hard_states: vec![HardState::default()],
    };
    let outcome = workload(&mut log, &mut rng, outcome);
    drop(log);
    let crashed = vfs.crash(rng.below(2) == 0);
    let (mut log, recovered, report) = match open(&crashed) {
        Ok(opened) => opened,
        Err(e) => panic!("recovery after a crash failed: {e}"),
    };
    let kept = check(&recovered, &outcome);
    // The log goes on from the recovered prefix, and survives a second crash.
    let mut outcome = Outcome {
        written: outcome.written[..kept].to_vec(),
        durable: kept as u64,
        hard_states: vec![recovered.hard_state],
    };
    outcome = workload(&mut log, &mut rng, outcome);
    let durable = log.sync().map(|(i, _)| i.0).unwrap_or(outcome.durable);
    outcome.durable = outcome.durable.max(durable);
    let crashed_again = crashed.crash(rng.below(2) == 0);
    let (_, recovered, _) =
        open(&crashed_again).unwrap_or_else(|e| panic!("second recovery: {e} (first: {report})"));
    check(&recovered, &outcome);
}

#[test]
fn recovery_after_injected_faults_keeps_a_durable_prefix() {
    for seed in 0..400 {
        let result = std::panic::catch_unwind(|| run_seed(seed));
        if result.is_err() {
            panic!("fault injection failed; reproduce with seed={seed}");
        }
    }
}

fn synced_log(vfs: &SimVfs, count: u64) -> Vec<Entry> {
    let (mut log, _, _) = open(vfs).unwrap();
    let written: Vec<Entry> = (1..=count).map(|i| entry(i, 1)).collect();
    for chunk in written.chunks(7) {
        log.append(chunk).unwrap();
        log.sync().unwrap();
    }
    written
}

fn segments(vfs: &SimVfs) -> Vec<String> {
    use rkv_log::vfs::Vfs;
    let mut names: Vec<String> = vfs
        .list()
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    names
}

#[test]
fn corruption_before_the_tail_is_refused_with_file_and_offset_unless_repaired() {
    let vfs = SimVfs::new(7);
    let written = synced_log(&vfs, 200);
    let names = segments(&vfs);
    assert!(
        names.len() >= 3,
        "the test needs several segments: {names:?}"
    );
    let victim = &names[1];
    assert!(vfs.corrupt(victim, 100, 0x40));
    let error = open(&vfs).unwrap_err();
    match &error {
        LogError::Corrupt { file, offset, .. } => {
            assert!(file.ends_with(victim.as_str()), "{error}");
            assert!(*offset <= 100, "{error}");
        }
        other => panic!("expected corruption, got {other}"),
    }
    assert_eq!(error.actor(), Actor::Operator);
    // Refusing changed nothing: it is refused again.
    assert!(matches!(open(&vfs), Err(LogError::Corrupt { .. })));

    let repair = FileLogOptions {
        repair: true,
        ..options()
    };
    let (_, recovered, report) = FileLog::open(Arc::new(vfs.clone()), repair).unwrap();
    let repaired = report.repaired.clone().expect("repair is reported");
    assert!(repaired.later_segments_removed >= 1, "{report}");
    assert!(!recovered.entries.is_empty());
    assert_eq!(recovered.entries[..], written[..recovered.entries.len()]);
    // After repair the log opens cleanly.
    let (_, again, report) = open(&vfs).unwrap();
    assert_eq!(again.entries, recovered.entries);
    assert!(
        report.repaired.is_none() && report.torn_tail.is_none(),
        "{report}"
    );
}

#[test]
fn a_bad_record_followed_by_good_ones_in_the_last_segment_is_corruption() {
    let vfs = SimVfs::new(8);
    synced_log(&vfs, 30);
    let last = segments(&vfs).pop().unwrap();
    assert!(vfs.corrupt(&last, 40, 0x01));
    assert!(matches!(open(&vfs), Err(LogError::Corrupt { .. })));
}

#[test]
fn a_torn_last_record_is_truncated_and_reported() {
    let vfs = SimVfs::new(9);
    let written = synced_log(&vfs, 30);
    use rkv_log::vfs::Vfs;
    let last = segments(&vfs).pop().unwrap();
    // The last record ends at the last non-zero byte: after it, preallocated zeros.
    let bytes = vfs.read(&last).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).unwrap() as u64 + 1;
    assert!(
        end < vfs.file_len(&last).unwrap(),
        "the segment was preallocated"
    );
    assert!(vfs.corrupt(&last, end - 1, 0xff));
    let (_, recovered, report) = open(&vfs).unwrap();
    let torn = report.torn_tail.expect("the torn tail is reported");
    assert!(torn.file.ends_with(last.as_str()));
    assert_eq!(recovered.entries[..], written[..written.len() - 1]);
    assert_eq!(vfs.file_len(&last), Some(torn.offset), "the file was cut");
}

#[test]
fn preallocated_space_ends_the_records_quietly_and_is_cut() {
    use rkv_log::vfs::Vfs;
    let vfs = SimVfs::new(11);
    let written = synced_log(&vfs, 30);
    let last = segments(&vfs).pop().unwrap();
    let bytes = vfs.read(&last).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).unwrap() as u64 + 1;
    assert!(
        end < bytes.len() as u64,
        "the active segment was preallocated"
    );
    let (_, recovered, report) = open(&vfs).unwrap();
    assert_eq!(recovered.entries, written);
    assert!(
        report.torn_tail.is_none() && report.repaired.is_none(),
        "{report}"
    );
    assert_eq!(vfs.file_len(&last), Some(end), "the unused space was cut");
    // A non-zero byte inside the preallocated space is not silently ignored.
    let vfs = SimVfs::new(12);
    synced_log(&vfs, 30);
    let last = segments(&vfs).pop().unwrap();
    let len = vfs.file_len(&last).unwrap();
    assert!(vfs.corrupt(&last, len - 1, 0x01));
    let (_, recovered, report) = open(&vfs).unwrap();
    assert_eq!(recovered.entries.len(), 30);
    assert!(report.torn_tail.is_some(), "{report}");
}

#[test]
fn damaged_hard_state_and_snapshot_are_refused() {
    let vfs = SimVfs::new(10);
    let (mut log, _, _) = open(&vfs).unwrap();
    log.save_hard_state(&HardState {
        term: Term(3),
        vote: None,
    })
    .unwrap();
    log.save_hard_state(&HardState {
        term: Term(4),
        vote: None,
    })
    .unwrap();
    drop(log);
    // One damaged slot: the other one still holds a durable state.
    assert!(vfs.corrupt("hardstate", 70, 1));
    let (_, recovered, _) = open(&vfs).unwrap();
    assert_eq!(recovered.hard_state.term, Term(4));
    assert!(vfs.corrupt("hardstate", 5, 1));
    assert!(matches!(open(&vfs), Err(LogError::Corrupt { .. })));

    let vfs = SimVfs::new(11);
    synced_log(&vfs, 10);
    let (mut log, _, _) = open(&vfs).unwrap();
    let snapshot = rkv_raft::Snapshot {
        meta: rkv_raft::SnapshotMeta {
            index: Index(5),
            term: Term(1),
            ..Default::default()
        },
        data: bytes::Bytes::from_static(b"data"),
    };
    log.save_snapshot(&snapshot).unwrap();
    drop(log);
    use rkv_log::vfs::Vfs;
    let name = vfs
        .list()
        .unwrap()
        .into_iter()
        .find(|n| n.ends_with(".snap"))
        .unwrap();
    assert!(vfs.corrupt(&name, 30, 4));
    assert!(matches!(open(&vfs), Err(LogError::Corrupt { .. })));
}
