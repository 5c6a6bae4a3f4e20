//! # rkv-check: is this key-value history linearizable?
//!
//! rkv promises linearizable reads and writes. Tests cannot see linearizability directly: they
//! see a *history*, the operations clients issued with the times each was invoked and
//! completed and what each returned. This crate answers whether some total order of those
//! operations exists that (a) respects real time (an operation that completed before another
//! was invoked comes first) and (b) is a legal run of the sequential key-value model. The
//! simulator (`crates/sim`) and `rkvctl` record histories and hand them here; when the answer
//! is no, the checker says which key and gives a small sub-history that shows the bug.
//!
//! ## Model
//!
//! Each key is an independent register holding `Option<String>`, initially `None`:
//!
//! | operation | effect | result (checked only for [`Outcome::Ok`]) |
//! |---|---|---|
//! | [`OpKind::Get`] | none | `value` is the current state |
//! | [`OpKind::Put`] | state becomes `Some(value)` | none |
//! | [`OpKind::Delete`] | state becomes `None` | none |
//! | [`OpKind::Cas`] | if state == `expected`, state becomes `Some(new)` | `swapped` says whether it did |
//!
//! Outcomes: an [`Outcome::Ok`] operation took effect exactly once, between its invocation and
//! its completion. An [`Outcome::Failed`] one never took effect and is dropped. An
//! [`Outcome::Unknown`] one (a timeout, a lost connection) may have taken effect at any point
//! after its invocation, or never: its completion is treated as +infinity and its result is not
//! checked; an unknown get is dropped since it can neither change nor reveal anything.
//!
//! ## Algorithm
//!
//! Linearizability is *local* (Herlihy & Wing's P-compositionality): a history is linearizable
//! iff the sub-history of every key is. [`check`] partitions the history by key and checks
//! the keys in parallel on scoped threads. Each key is checked with the Wing & Gong search
//! improved by Lowe and used by Porcupine: a linked list of call and return events with
//! lift/unlift, a backtracking stack, and a memo of (linearized set, state) pairs already
//! explored. At equal timestamps calls sort before returns, so an operation completing at `t`
//! and one invoked at `t` are treated as concurrent (the conservative choice: never a false
//! alarm from clock granularity). For a failing key, the history is shrunk to a small failing
//! sub-history ([`Violation::minimal`]).
//!
//! The verdict is deterministic: keys are examined in sorted order, and when several keys fail,
//! the smallest one is reported. Only a [`Verdict::Inconclusive`] caused by a time budget
//! depends on the machine's speed.
//!
//! ## The JSON-lines history file
//!
//! [`write_jsonl`] and [`read_jsonl`] store a history as one [`Operation`] per line, encoded by
//! `serde_json`. Fields: `client` (u64), `key` (string), `invoke` and `complete` (u64, any
//! monotonic unit shared by the whole file), `outcome` (`"ok"`, `"failed"` or `"unknown"`)
//! and `kind`, an object tagged by `op`:
//!
//! ```text
//! {"client":1,"key":"x","invoke":100,"complete":180,"outcome":"ok","kind":{"op":"put","value":"1"}}
//! {"client":2,"key":"x","invoke":150,"complete":260,"outcome":"ok","kind":{"op":"get","value":"1"}}
//! {"client":2,"key":"y","invoke":300,"complete":420,"outcome":"ok","kind":{"op":"get","value":null}}
//! {"client":3,"key":"x","invoke":310,"complete":900,"outcome":"unknown","kind":{"op":"delete"}}
//! {"client":1,"key":"x","invoke":400,"complete":470,"outcome":"ok","kind":{"op":"cas","expected":"1","new":"2","swapped":true}}
//! ```
//!
//! `value` and `expected` are `null` for "absent" and may then be omitted. Lines may appear in
//! any order; blank lines are ignored. A line that is not a valid operation is an error that
//! names its line number ([`ReadError`]).
//!
//! ## Example
//!
//! ```
//! use rkv_check::{check, OpKind, Operation, Outcome, Verdict};
//!
//! let op = |client, invoke, complete, kind| Operation {
//!     client,
//!     key: "x".to_string(),
//!     invoke,
//!     complete,
//!     outcome: Outcome::Ok,
//!     kind,
//! };
//! // Client 1's put completes before client 2 reads, yet the read misses it.
//! let history = vec![
//!     op(1, 0, 10, OpKind::Put { value: "1".to_string() }),
//!     op(2, 20, 30, OpKind::Get { value: None }),
//! ];
//! match check(&history) {
//!     Verdict::NotLinearizable(violation) => {
//!         assert_eq!(violation.key, "x");
//!         assert_eq!(violation.minimal.len(), 2);
//!     }
//!     other => panic!("expected a violation, got {other:?}"),
//! }
//! ```

mod history;
mod jsonl;
mod model;
mod search;
mod shrink;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use history::{History, InvalidOperation, OpKind, Operation, Outcome};
pub use jsonl::{ReadError, read_jsonl, write_jsonl};

pub use search::MEMO_BYTES_MAX;
use search::SearchResult;

/// How long shrinking a violation may take when [`check`] runs without a budget.
pub const SHRINK_BUDGET_DEFAULT: Duration = Duration::from_secs(10);

/// Upper bound on checker threads, whatever the machine reports.
const THREADS_MAX: usize = 64;

/// Histories with fewer relevant operations are checked on the calling thread: spawning
/// threads would cost more than the search.
const PARALLEL_OPS_MIN: usize = 2048;

/// The checker's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every key's history is linearizable.
    Linearizable,
    /// Some key's history is not; the smallest such key is reported.
    NotLinearizable(Violation),
    /// No violation was found, but the checker could not decide: a key's search ran out of its
    /// time budget or of memory ([`MEMO_BYTES_MAX`]), or the history is malformed (an
    /// operation completes before it is invoked).
    Inconclusive {
        /// The key the checker gave up on.
        key: String,
        /// Why, in words.
        reason: String,
    },
}

impl Verdict {
    /// Whether the history was proven linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Self::Linearizable)
    }

    /// The violation, if one was found.
    pub fn violation(&self) -> Option<&Violation> {
        match self {
            Self::NotLinearizable(violation) => Some(violation),
            Self::Linearizable | Self::Inconclusive { .. } => None,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Linearizable => f.write_str("linearizable"),
            Self::NotLinearizable(violation) => violation.fmt(f),
            Self::Inconclusive { key, reason } => {
                write!(f, "inconclusive on key {key:?}: {reason}")
            }
        }
    }
}

/// A key whose history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// A small sub-history of that key that is itself not linearizable, in invocation order.
    ///
    /// A value read in it keeps an operation that wrote that value (when the key's history had
    /// one), so it shows the stale read or lost update rather than a read of a value nobody
    /// wrote. Within that rule it is 1-minimal (dropping any single operation makes it
    /// linearizable) unless shrinking ran out of its budget, in which case it is merely a
    /// smaller failing history.
    pub minimal: Vec<Operation>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "key {:?} is not linearizable; failing sub-history of {} operation(s):",
            self.key,
            self.minimal.len()
        )?;
        for op in &self.minimal {
            write!(f, "\n  {op}")?;
        }
        Ok(())
    }
}

/// Checks a history for linearizability with no time limit.
///
/// Operations may appear in any order. The search is exponential in the worst case (a key with
/// many concurrent writes whose results do not pin down an order); its memory per key is
/// bounded by [`MEMO_BYTES_MAX`], but its time is not, so for histories that are not trusted
/// to be reasonable use [`check_with_limit`]. Shrinking a violation is bounded by
/// [`SHRINK_BUDGET_DEFAULT`].
pub fn check(history: &[Operation]) -> Verdict {
    check_keys(history, None)
}

/// Checks a history, giving up on any key whose search takes longer than `budget`.
///
/// A key that runs out of budget makes the verdict [`Verdict::Inconclusive`] unless another key
/// is found not linearizable. Shrinking a violation gets the same budget again.
pub fn check_with_limit(history: &[Operation], budget: Duration) -> Verdict {
    check_keys(history, Some(budget))
}

/// The result for one key, by its position in the sorted key list.
type KeyResult = (usize, SearchResult);

fn check_keys(history: &[Operation], budget: Option<Duration>) -> Verdict {
    for op in history {
        if let Err(reason) = op.validate() {
            return Verdict::Inconclusive {
                key: op.key.clone(),
                reason: format!("malformed history: {reason} ({op})"),
            };
        }
    }
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history.iter().filter(|op| op.is_relevant()) {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let keys: Vec<(&str, Vec<&Operation>)> = by_key.into_iter().collect();

    let mut results = search_keys(&keys, budget);
    results.sort_unstable_by_key(|&(index, _)| index);

    let violating = results
        .iter()
        .find(|(_, result)| *result == SearchResult::NotLinearizable);
    if let Some(&(index, _)) = violating {
        let (key, ops) = &keys[index];
        let shrink_budget = budget.unwrap_or(SHRINK_BUDGET_DEFAULT);
        let minimal = shrink::shrink(ops, Instant::now().checked_add(shrink_budget));
        return Verdict::NotLinearizable(Violation {
            key: (*key).to_string(),
            minimal,
        });
    }
    let gave_up = results.iter().find_map(|&(index, result)| {
        let ops = keys[index].1.len();
        match result {
            SearchResult::OutOfBudget { steps } => Some((
                index,
                format!(
                    "search ran out of its {:?} budget after {steps} steps on {ops} operations",
                    budget.unwrap_or(Duration::MAX)
                ),
            )),
            SearchResult::MemoFull { configurations } => Some((
                index,
                format!(
                    "search memo reached {} MiB after {configurations} configurations on {ops} \
                     operations (too many concurrent writes on one key)",
                    MEMO_BYTES_MAX >> 20
                ),
            )),
            SearchResult::Linearizable | SearchResult::NotLinearizable => None,
        }
    });
    if let Some((index, reason)) = gave_up {
        return Verdict::Inconclusive {
            key: keys[index].0.to_string(),
            reason,
        };
    }
    Verdict::Linearizable
}

/// Searches every key, on several threads when there is more than one key. Keys after the
/// first violation found are skipped: only the smallest violating key is reported, and every
/// key before it is still searched, so the outcome does not depend on scheduling.
fn search_keys(keys: &[(&str, Vec<&Operation>)], budget: Option<Duration>) -> Vec<KeyResult> {
    let next_key = AtomicUsize::new(0);
    let first_violation = AtomicUsize::new(usize::MAX);
    let worker = || {
        let mut results = Vec::new();
        loop {
            let index = next_key.fetch_add(1, Ordering::Relaxed);
            if index >= keys.len() || index > first_violation.load(Ordering::Relaxed) {
                return results;
            }
            let deadline = budget.and_then(|budget| Instant::now().checked_add(budget));
            let result = search::search(&model::prepare(&keys[index].1), deadline);
            if result == SearchResult::NotLinearizable {
                first_violation.fetch_min(index, Ordering::Relaxed);
            }
            results.push((index, result));
        }
    };
    let total_ops: usize = keys.iter().map(|(_, ops)| ops.len()).sum();
    let threads = if total_ops < PARALLEL_OPS_MIN {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(keys.len())
            .min(THREADS_MAX)
    };
    if threads <= 1 {
        return worker();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(worker)).collect();
        let mut results = Vec::with_capacity(keys.len());
        for handle in handles {
            match handle.join() {
                Ok(partial) => results.extend(partial),
                // The worker cannot panic short of a bug; re-raise it rather than hide it.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        results
    })
}
