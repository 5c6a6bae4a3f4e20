//! Shrinking a non-linearizable key history to a small failing sub-history.
//!
//! Every candidate is re-checked with the full search, so whatever this returns is always a
//! verified non-linearizable history. But removing operations can create a failure of its own
//! (drop the put a later read observed, and the read becomes a read of a value nobody wrote),
//! so the stages are ordered and constrained to keep the witness about the bug that is
//! actually in the history:
//!
//! 1. **Safe prefix.** Cut the history after the shortest failing prefix, trying only cut
//!    points where every operation after the cut was invoked after every definite operation
//!    before it completed. Such a cut cannot create a failure: the removed operations come
//!    after all kept ones in any linearization. Found by binary search over the cut points.
//! 2. **Reads.** Delta-debug away reads (gets, and compare-and-swaps known not to have
//!    swapped): chunks of half, a quarter, ... down to single reads, while the rest still
//!    fails. Removing a read never changes any state, so it cannot create a failure either.
//!    The reads that survive are each needed for the failure.
//! 3. **Writes.** The same over the other operations, keeping the surviving reads. Removing a
//!    write also removes the writes whose observations it leaves unexplained (see below); a
//!    candidate that would leave a read unexplained is not tried.
//! 4. Stages 2 and 3 alternate until neither removes anything; then, if the history is small,
//!    **pairs** of operations are tried (two operations that only matter together).
//!
//! *Unexplained observations.* A candidate keeps the provenance of what its operations
//! observed: if an operation observed a value (a get that returned it, a compare-and-swap that
//! swapped from it) and another operation of the key's full history that could precede it
//! (invoked no later than it completed) wrote that value, such an operation must remain;
//! likewise a compare-and-swap that found the key present (expected absent, not swapped) keeps
//! some earlier write. Without this rule most violations would shrink to "a read of a value
//! nobody wrote", which is true but hides the stale read or lost update that happened.
//!
//! The result is 1-minimal (removing any one operation, together with the writes it leaves
//! unexplained, makes it linearizable or leaves a read unexplained) unless the deadline or
//! the attempt limit cut the work short. Stage 3 can still expose a failure that removing a
//! write created (drop the delete between a put and a read of "absent"), but only one that
//! involves reads that were needed for the original failure; the key's full history remains
//! the ground truth.

use std::collections::HashMap;
use std::time::Instant;

use crate::history::{OpKind, Operation, Outcome};
use crate::model::prepare;
use crate::search::{SearchResult, search};

/// Check attempts allowed in one shrink.
const ATTEMPTS_MAX: usize = 100_000;

/// Pair removal is tried only on histories at most this long (it costs `n²/2` checks).
const PAIR_REMOVAL_OPS_MAX: usize = 40;

/// Shrinks `ops` (the relevant operations of one key, known to be non-linearizable).
///
/// Returns the remaining operations in invocation order.
pub(crate) fn shrink(ops: &[&Operation], deadline: Option<Instant>) -> Vec<Operation> {
    let mut current: Vec<&Operation> = ops.to_vec();
    current.sort_by_key(|op| (op.invoke, op.complete));
    let mut shrinker = Shrinker {
        deadline,
        attempts_left: ATTEMPTS_MAX,
        full: Writers::of(&current),
    };
    current = shrinker.shortest_safe_prefix(current);
    current = shrinker.remove_reads_and_writes(current);
    current = shrinker.remove_pairs(current);
    current.into_iter().cloned().collect()
}

/// Whether the operation is known not to have changed the state.
fn is_read(op: &Operation) -> bool {
    op.outcome == Outcome::Ok
        && matches!(
            op.kind,
            OpKind::Get { .. } | OpKind::Cas { swapped: false, .. }
        )
}

/// The value an operation may have written, if any (a compare-and-swap known not to have
/// swapped wrote nothing).
fn written_value(op: &Operation) -> Option<&str> {
    match &op.kind {
        OpKind::Put { value } => Some(value),
        OpKind::Cas { new, swapped, .. } if *swapped || op.outcome != Outcome::Ok => Some(new),
        OpKind::Cas { .. } | OpKind::Get { .. } | OpKind::Delete => None,
    }
}

/// What an operation observed about the state before it.
enum Observation<'a> {
    /// The key held this value.
    Value(&'a str),
    /// The key held some value.
    Present,
}

fn observation(op: &Operation) -> Option<Observation<'_>> {
    if op.outcome != Outcome::Ok {
        return None;
    }
    match &op.kind {
        OpKind::Get { value: Some(value) }
        | OpKind::Cas {
            expected: Some(value),
            swapped: true,
            ..
        } => Some(Observation::Value(value)),
        OpKind::Cas {
            expected: None,
            swapped: false,
            ..
        } => Some(Observation::Present),
        OpKind::Get { value: None } | OpKind::Cas { .. } | OpKind::Put { .. } | OpKind::Delete => {
            None
        }
    }
}

/// Who writes what in a set of operations.
struct Writers<'a> {
    /// The invocation times of the operations writing each value, sorted.
    by_value: HashMap<&'a str, Vec<u64>>,
    /// The invocation times of all writing operations, sorted.
    all: Vec<u64>,
}

impl<'a> Writers<'a> {
    fn of(ops: &[&'a Operation]) -> Self {
        let mut by_value: HashMap<&str, Vec<u64>> = HashMap::new();
        let mut all = Vec::new();
        for op in ops {
            if let Some(value) = written_value(op) {
                by_value.entry(value).or_default().push(op.invoke);
                all.push(op.invoke);
            }
        }
        for invokes in by_value.values_mut() {
            invokes.sort_unstable();
        }
        all.sort_unstable();
        Self { by_value, all }
    }

    /// Whether some operation other than `op` (which must be counted here), invoked no later
    /// than `op` completed, explains what `op` observed. Operations that observe nothing are
    /// trivially explained.
    fn explain(&self, op: &Operation) -> bool {
        let own = written_value(op);
        let (invokes, own_counted) = match observation(op) {
            None => return true,
            Some(Observation::Value(value)) => (
                self.by_value.get(value).map_or(&[][..], Vec::as_slice),
                own == Some(value),
            ),
            Some(Observation::Present) => (&self.all[..], own.is_some()),
        };
        // `op` itself, when counted, was invoked before it completed: it is among these.
        let could_precede = invokes.partition_point(|&invoke| invoke <= op.complete);
        could_precede > usize::from(own_counted)
    }
}

struct Shrinker<'a> {
    deadline: Option<Instant>,
    attempts_left: usize,
    /// The writers in the key's full history.
    full: Writers<'a>,
}

impl<'a> Shrinker<'a> {
    /// Whether shrinking must stop.
    fn exhausted(&self) -> bool {
        self.attempts_left == 0 || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Whether `op`'s observation is unexplained in a candidate with `writers` although the
    /// full history explains it.
    fn orphaned(&self, writers: &Writers<'_>, op: &Operation) -> bool {
        !writers.explain(op) && self.full.explain(op)
    }

    /// Whether `ops` keeps every observation the full history explains explained.
    fn keeps_provenance(&self, ops: &[&Operation]) -> bool {
        let writers = Writers::of(ops);
        !ops.iter().any(|op| self.orphaned(&writers, op))
    }

    /// `ops` without the marked operations and without every write that removing them
    /// leaves unexplained (transitively: an unexplained compare-and-swap is also a writer).
    /// Unexplained reads stay, which makes the candidate fail [`Self::keeps_provenance`].
    fn without(&self, ops: &[&'a Operation], mut removed: Vec<bool>) -> Vec<&'a Operation> {
        loop {
            let kept: Vec<&Operation> = ops
                .iter()
                .zip(&removed)
                .filter(|&(_, &removed)| !removed)
                .map(|(op, _)| *op)
                .collect();
            let writers = Writers::of(&kept);
            let mut changed = false;
            for (op, removed) in ops.iter().zip(removed.iter_mut()) {
                if !*removed && !is_read(op) && self.orphaned(&writers, op) {
                    *removed = true;
                    changed = true;
                }
            }
            if !changed {
                return kept;
            }
        }
    }

    /// Whether `ops` keeps provenance and is verified non-linearizable. Running out of budget
    /// counts as "no".
    fn fails(&mut self, ops: &[&Operation]) -> bool {
        if self.exhausted() || !self.keeps_provenance(ops) {
            return false;
        }
        self.attempts_left -= 1;
        search(&prepare(ops), self.deadline) == SearchResult::NotLinearizable
    }

    /// Stage 1; `ops` is sorted by invocation time.
    fn shortest_safe_prefix(&mut self, mut ops: Vec<&'a Operation>) -> Vec<&'a Operation> {
        let mut cuts = Vec::new();
        let mut definite_complete_max: Option<u64> = None;
        for (position, op) in ops.iter().enumerate() {
            if position > 0 && definite_complete_max.is_none_or(|max| max < op.invoke) {
                cuts.push(position);
            }
            if op.outcome == Outcome::Ok {
                definite_complete_max = definite_complete_max.max(Some(op.complete));
            }
        }
        // Invariant: ops[..cuts[high]] fails, or high == cuts.len() (the whole history fails).
        let (mut low, mut high) = (0, cuts.len());
        while low < high && !self.exhausted() {
            let middle = low + (high - low) / 2;
            if self.fails(&ops[..cuts[middle]]) {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        if let Some(&cut) = cuts.get(high) {
            ops.truncate(cut);
        }
        ops
    }

    /// Stages 2 and 3, until neither removes anything.
    fn remove_reads_and_writes(&mut self, mut ops: Vec<&'a Operation>) -> Vec<&'a Operation> {
        loop {
            let before = ops.len();
            ops = self.remove_chunks(ops, is_read);
            ops = self.remove_chunks(ops, |op| !is_read(op));
            if ops.len() == before || self.exhausted() {
                return ops;
            }
        }
    }

    /// Delta debugging over the operations `eligible` accepts.
    fn remove_chunks(
        &mut self,
        mut ops: Vec<&'a Operation>,
        eligible: fn(&Operation) -> bool,
    ) -> Vec<&'a Operation> {
        let eligible_positions = |ops: &[&Operation]| -> Vec<usize> {
            (0..ops.len()).filter(|&i| eligible(ops[i])).collect()
        };
        let mut chunk = (eligible_positions(&ops).len() / 2).max(1);
        loop {
            let mut removed_any = false;
            let mut start = 0;
            loop {
                let positions = eligible_positions(&ops);
                if start >= positions.len() || self.exhausted() {
                    break;
                }
                let end = (start + chunk).min(positions.len());
                let mut removed = vec![false; ops.len()];
                for &position in &positions[start..end] {
                    removed[position] = true;
                }
                let candidate = self.without(&ops, removed);
                if self.fails(&candidate) {
                    ops = candidate;
                    removed_any = true;
                } else {
                    start = end;
                }
            }
            if self.exhausted() {
                return ops;
            }
            if chunk > 1 {
                chunk /= 2;
            } else if !removed_any {
                return ops;
            }
        }
    }

    /// Stage 4.
    fn remove_pairs(&mut self, mut ops: Vec<&'a Operation>) -> Vec<&'a Operation> {
        'restart: while ops.len() <= PAIR_REMOVAL_OPS_MAX && !self.exhausted() {
            for first in 0..ops.len() {
                for second in first + 1..ops.len() {
                    let mut removed = vec![false; ops.len()];
                    removed[first] = true;
                    removed[second] = true;
                    let candidate = self.without(&ops, removed);
                    if self.fails(&candidate) {
                        ops = self.remove_reads_and_writes(candidate);
                        continue 'restart;
                    }
                    if self.exhausted() {
                        return ops;
                    }
                }
            }
            return ops;
        }
        ops
    }
}
