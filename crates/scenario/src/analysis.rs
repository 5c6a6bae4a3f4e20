//! What a finished run's history says beyond linearizability: acknowledged writes that
//! are gone, how long the cluster could not take writes, and throughput over time.
//!
//! Times are microseconds since the run started, as recorded by
//! [`crate::workload::Recorder`].

use std::collections::BTreeMap;

use rkv_check::{OpKind, Operation, Outcome};

/// An acknowledged write whose effect is missing at the end of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostWrite {
    /// The write.
    pub op: Operation,
    /// The key's value at the end (`None`: absent).
    pub final_value: Option<String>,
}

/// What an operation leaves in its key if it takes effect; `None` if it changes nothing.
fn effect(op: &Operation) -> Option<Option<&str>> {
    match (&op.kind, op.outcome) {
        (_, Outcome::Failed) => None,
        (OpKind::Get { .. }, _) => None,
        (OpKind::Put { value }, _) => Some(Some(value.as_str())),
        (OpKind::Delete, _) => Some(None),
        (OpKind::Cas { swapped: false, .. }, Outcome::Ok) => None,
        (OpKind::Cas { new, .. }, _) => Some(Some(new.as_str())),
    }
}

/// Acknowledged writes (ok puts, deletes and successful swaps) that the key's final
/// value (read linearizably after the run; `finals`) shows were lost.
///
/// Written values are unique, so a final value `Some(v)` names the one write W that
/// left it: every acknowledged write invoked after W completed must have taken effect
/// after W, and would have replaced `v`. Such a write is lost. Writes that may have
/// taken effect (unknown) do not excuse it: had they landed after W, `v` would be gone
/// too. A final value of absent is left by a delete (or by nothing): an acknowledged
/// put or swap is lost if no delete (acknowledged or unknown) could have come after it.
/// Runs in one pass per key.
pub fn lost_writes(
    history: &[Operation],
    finals: &BTreeMap<String, Option<String>>,
) -> Vec<LostWrite> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history.iter().filter(|op| effect(op).is_some()) {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut lost = Vec::new();
    for (key, writes) in by_key {
        let Some(final_value) = finals.get(key) else {
            continue;
        };
        let acknowledged = writes.iter().filter(|op| op.outcome == Outcome::Ok);
        let mut report = |op: &Operation| {
            lost.push(LostWrite {
                op: op.clone(),
                final_value: final_value.clone(),
            })
        };
        match final_value {
            Some(value) => {
                let Some(writer) = writes
                    .iter()
                    .find(|op| effect(op) == Some(Some(value.as_str())))
                else {
                    // A value nobody wrote: the linearizability check reports it.
                    continue;
                };
                if writer.outcome != Outcome::Ok {
                    continue; // it may have landed any time after its invocation
                }
                for op in acknowledged.filter(|op| op.invoke > writer.complete) {
                    report(op);
                }
            }
            None => {
                let last_delete = writes
                    .iter()
                    .filter(|op| effect(op) == Some(None))
                    .map(|op| match op.outcome {
                        Outcome::Unknown => u64::MAX,
                        _ => op.complete,
                    })
                    .max();
                for op in acknowledged {
                    let sets_value = matches!(effect(op), Some(Some(_)));
                    if sets_value && last_delete.is_none_or(|end| end <= op.invoke) {
                        report(op);
                    }
                }
            }
        }
    }
    lost
}

/// Completion times of successful writes, sorted.
pub fn write_completions(history: &[Operation]) -> Vec<u64> {
    let mut times: Vec<u64> = history
        .iter()
        .filter(|op| op.outcome == Outcome::Ok && effect(op).is_some())
        .map(|op| op.complete)
        .collect();
    times.sort_unstable();
    times
}

/// The longest stretch of `[from, to]` with no successful write: (start, length).
pub fn longest_gap(completions: &[u64], from: u64, to: u64) -> (u64, u64) {
    let mut best = (from, 0);
    let mut previous = from;
    for &t in completions.iter().filter(|t| (from..=to).contains(*t)) {
        if t - previous > best.1 {
            best = (previous, t - previous);
        }
        previous = t;
    }
    if to.saturating_sub(previous) > best.1 {
        best = (previous, to - previous);
    }
    best
}

/// Time from `at` to the completion of the first successful write invoked at or after
/// it (`None`: none was): how long the fault kept new writes from succeeding.
pub fn recovery_after(history: &[Operation], at: u64) -> Option<u64> {
    history
        .iter()
        .filter(|op| op.outcome == Outcome::Ok && effect(op).is_some() && op.invoke >= at)
        .map(|op| op.complete - at)
        .min()
}

/// Successful operations completed in each whole second of `[0, until)`.
pub fn throughput_per_second(history: &[Operation], until: u64) -> Vec<u64> {
    let seconds = usize::try_from(until.div_ceil(1_000_000)).unwrap_or(0);
    let mut buckets = vec![0u64; seconds];
    for op in history.iter().filter(|op| op.outcome == Outcome::Ok) {
        if let Some(bucket) = usize::try_from(op.complete / 1_000_000)
            .ok()
            .and_then(|s| buckets.get_mut(s))
        {
            *bucket += 1;
        }
    }
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: &str, invoke: u64, complete: u64, outcome: Outcome, kind: OpKind) -> Operation {
        Operation {
            client: 1,
            key: key.into(),
            invoke,
            complete,
            outcome,
            kind,
        }
    }

    fn put(value: &str) -> OpKind {
        OpKind::Put {
            value: value.into(),
        }
    }

    fn finals(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    #[test]
    fn a_write_that_is_the_final_value_is_not_lost() {
        let history = [op("a", 0, 10, Outcome::Ok, put("1"))];
        assert!(lost_writes(&history, &finals(&[("a", Some("1"))])).is_empty());
    }

    #[test]
    fn a_missing_acknowledged_write_is_lost() {
        let history = [op("a", 0, 10, Outcome::Ok, put("1"))];
        let lost = lost_writes(&history, &finals(&[("a", None)]));
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].final_value, None);
    }

    #[test]
    fn a_later_or_concurrent_write_may_overwrite() {
        let history = [
            op("a", 0, 10, Outcome::Ok, put("1")),
            op("a", 5, 20, Outcome::Ok, put("2")),
        ];
        assert!(lost_writes(&history, &finals(&[("a", Some("2"))])).is_empty());
        // "2" is gone although nothing came after it (its successor ended before it began).
        let history = [
            op("a", 0, 10, Outcome::Ok, put("1")),
            op("a", 20, 30, Outcome::Ok, put("2")),
        ];
        let lost = lost_writes(&history, &finals(&[("a", Some("1"))]));
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].op.kind, put("2"));
    }

    #[test]
    fn unknown_writes_do_not_excuse_a_lost_one() {
        // "1" is final although "2" was acknowledged after "1" finished: "2" is lost,
        // whatever the unknown "3" did.
        let history = [
            op("a", 0, 10, Outcome::Ok, put("1")),
            op("a", 20, 30, Outcome::Ok, put("2")),
            op("a", 5, 6, Outcome::Unknown, put("3")),
        ];
        let lost = lost_writes(&history, &finals(&[("a", Some("1"))]));
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].op.kind, put("2"));
        // An unknown write may be the final one, at any time after its invocation.
        let unknown = [
            op("a", 20, 30, Outcome::Ok, put("2")),
            op("a", 0, 10, Outcome::Unknown, put("1")),
        ];
        assert!(lost_writes(&unknown, &finals(&[("a", Some("1"))])).is_empty());
        // A failed write never took effect: a value only it wrote is not its doing.
        let failed = [
            op("a", 20, 30, Outcome::Ok, put("2")),
            op("a", 40, 50, Outcome::Failed, put("1")),
        ];
        assert!(lost_writes(&failed, &finals(&[("a", Some("1"))])).is_empty());
    }

    #[test]
    fn an_absent_final_value_needs_a_delete_after_each_acknowledged_put() {
        let history = [
            op("a", 0, 10, Outcome::Ok, put("1")),
            op("a", 5, 20, Outcome::Ok, OpKind::Delete),
        ];
        assert!(lost_writes(&history, &finals(&[("a", None)])).is_empty());
        let history = [
            op("a", 0, 10, Outcome::Ok, OpKind::Delete),
            op("a", 20, 30, Outcome::Ok, put("1")),
        ];
        assert_eq!(lost_writes(&history, &finals(&[("a", None)])).len(), 1);
        let history = [
            op("a", 20, 30, Outcome::Ok, put("1")),
            op("a", 0, 10, Outcome::Unknown, OpKind::Delete),
        ];
        assert!(lost_writes(&history, &finals(&[("a", None)])).is_empty());
    }

    #[test]
    fn deletes_and_swaps_count_as_writes_and_failed_swaps_do_not() {
        let history = [
            op("a", 0, 10, Outcome::Ok, put("1")),
            op("a", 20, 30, Outcome::Ok, OpKind::Delete),
        ];
        assert_eq!(lost_writes(&history, &finals(&[("a", Some("1"))])).len(), 1);
        let history = [
            op("a", 0, 10, Outcome::Ok, put("1")),
            op(
                "a",
                20,
                30,
                Outcome::Ok,
                OpKind::Cas {
                    expected: Some("0".into()),
                    new: "2".into(),
                    swapped: false,
                },
            ),
        ];
        assert!(lost_writes(&history, &finals(&[("a", Some("1"))])).is_empty());
    }

    #[test]
    fn gaps_and_recovery_times() {
        let times = [10, 20, 100, 110];
        assert_eq!(longest_gap(&times, 0, 120), (20, 80));
        assert_eq!(longest_gap(&times, 0, 300), (110, 190));
        assert_eq!(longest_gap(&[], 0, 50), (0, 50));
        let history = [
            op("a", 0, 30, Outcome::Ok, put("1")),
            op("a", 25, 100, Outcome::Ok, put("2")),
            op("a", 40, 60, Outcome::Failed, put("3")),
            op("a", 50, 90, Outcome::Ok, OpKind::Get { value: None }),
        ];
        // The write in flight when the fault struck does not count as recovery.
        assert_eq!(recovery_after(&history, 20), Some(80));
        assert_eq!(recovery_after(&history, 0), Some(30));
        assert_eq!(recovery_after(&history, 26), None);
    }

    #[test]
    fn throughput_counts_successes_per_second() {
        let history = [
            op("a", 0, 500_000, Outcome::Ok, put("1")),
            op("a", 0, 900_000, Outcome::Ok, put("2")),
            op("a", 0, 1_500_000, Outcome::Ok, put("3")),
            op("a", 0, 1_600_000, Outcome::Failed, put("4")),
        ];
        assert_eq!(throughput_per_second(&history, 2_000_000), vec![2, 1]);
    }
}
