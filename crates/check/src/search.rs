//! The Wing & Gong search with Lowe's memoisation, as in Porcupine, for one key.
//!
//! The history becomes a doubly linked list of call and return events in time order. The
//! search repeatedly looks at the events from the head of the list:
//!
//! * a **call** whose operation can be applied to the current state, giving a (set of
//!   linearized operations, state) pair not seen before, is *linearized*: the state advances,
//!   the operation's call and return events are *lifted* out of the list, the step is pushed on
//!   a backtracking stack and the scan restarts at the head;
//! * otherwise the scan moves on to the next event;
//! * a **return** means the operation it belongs to had to be linearized before this point and
//!   was not: the search *backtracks* by popping the stack, *unlifting* (re-inserting, in
//!   reverse order, dancing-links style) that operation's events, restoring the state, and
//!   continuing the scan just after the un-linearized call.
//!
//! Reads are linearized eagerly, which prunes most of the search on busy keys; see [`search`].
//!
//! The history is linearizable as soon as every operation with a known outcome is linearized.
//! Operations with unknown outcomes have no return event (they complete at +infinity), so they
//! never force a backtrack; if the definite operations run out while some are still in the
//! list, those are taken never to have happened. The history is not linearizable when a
//! backtrack finds the stack empty.
//!
//! Equal timestamps: events are ordered by time and, at equal times, **calls before returns**.
//! An operation that completes at `t` and one invoked at `t` are therefore concurrent and may be
//! linearized in either order. This is the conservative choice: it never reports a violation
//! that depends on how two clocks rounded the same instant.
//!
//! The memo ("cache") holds every (linearized set, state) pair already explored; reaching one
//! again cannot lead anywhere new. Linearized sets are stored compactly as [`LinearizedSet`]
//! (an end index plus the few holes below it) rather than as a bitset over the whole key, so a
//! long history on one hot key costs memory per configuration proportional to its concurrency
//! (plus its never-linearized unknown operations), not its length.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use crate::model::{ABSENT, KeyHistory, State};

/// How a search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SearchResult {
    /// Some linearization exists.
    Linearizable,
    /// No linearization exists.
    NotLinearizable,
    /// The deadline passed first.
    OutOfBudget {
        /// Search steps taken before giving up.
        steps: u64,
    },
    /// The memo outgrew [`MEMO_BYTES_MAX`] first.
    MemoFull {
        /// Configurations explored before giving up.
        configurations: usize,
    },
}

/// The most memory one key's memo may take before the search gives up (1 GiB). Without a
/// bound, a key with a few dozen concurrent writes can exhaust memory
/// long before any time budget runs out.
pub const MEMO_BYTES_MAX: usize = 1 << 30;

/// How many search steps pass between two looks at the clock.
const STEPS_PER_CLOCK_CHECK: u64 = 1024;

/// Marks "no node" in the event list.
const NONE: usize = usize::MAX;

/// The node index of the list's head sentinel.
const HEAD: usize = 0;

/// The event list: node 0 is the head sentinel, nodes 1.. are events in time order.
struct EventList {
    /// Previous node; kept on lifted nodes so they can be re-inserted.
    prev: Vec<usize>,
    /// Next node or [`NONE`]; kept on lifted nodes so they can be re-inserted.
    next: Vec<usize>,
    /// The operation each node belongs to.
    op: Vec<usize>,
    /// For call nodes, the node of the matching return ([`NONE`] for unknown outcomes).
    /// For return nodes, [`NONE`] as well; `is_call` tells them apart.
    matching_return: Vec<usize>,
    /// Whether each node is a call event.
    is_call: Vec<bool>,
}

impl EventList {
    fn new(history: &KeyHistory) -> Self {
        // (time, is_return, op): calls sort before returns at equal times; see module docs.
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(history.ops.len() * 2);
        for (index, op) in history.ops.iter().enumerate() {
            events.push((op.invoke, false, index));
            if let Some(complete) = op.complete {
                events.push((complete, true, index));
            }
        }
        events.sort_unstable();

        let nodes = events.len() + 1;
        let mut list = Self {
            prev: Vec::with_capacity(nodes),
            next: Vec::with_capacity(nodes),
            op: Vec::with_capacity(nodes),
            matching_return: vec![NONE; nodes],
            is_call: Vec::with_capacity(nodes),
        };
        list.prev.push(NONE);
        list.next.push(if events.is_empty() { NONE } else { 1 });
        list.op.push(NONE);
        list.is_call.push(false);
        let mut call_node = vec![NONE; history.ops.len()];
        for (position, &(_, is_return, op)) in events.iter().enumerate() {
            let node = position + 1;
            list.prev.push(node - 1);
            list.next
                .push(if node + 1 < nodes { node + 1 } else { NONE });
            list.op.push(op);
            list.is_call.push(!is_return);
            if is_return {
                // The call sorts first: its time is not larger and calls win ties.
                list.matching_return[call_node[op]] = node;
            } else {
                call_node[op] = node;
            }
        }
        list
    }

    fn remove(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NONE {
            self.prev[next] = prev;
        }
    }

    fn restore(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NONE {
            self.prev[next] = node;
        }
    }

    /// Takes a call and its return (if any) out of the list.
    fn lift(&mut self, call: usize) {
        self.remove(call);
        let matching_return = self.matching_return[call];
        if matching_return != NONE {
            self.remove(matching_return);
        }
    }

    /// Undoes [`Self::lift`]; must be called in the reverse order of the lifts.
    fn unlift(&mut self, call: usize) {
        let matching_return = self.matching_return[call];
        if matching_return != NONE {
            self.restore(matching_return);
        }
        self.restore(call);
    }
}

/// The set of linearized operations (indices in invocation order), stored as `end` (one past
/// the largest member) and the sorted non-members below `end`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct LinearizedSet {
    end: usize,
    holes: Vec<usize>,
}

impl LinearizedSet {
    /// Adds `op`, which must not be a member.
    pub(crate) fn insert(&mut self, op: usize) {
        if op >= self.end {
            self.holes.extend(self.end..op);
            self.end = op + 1;
        } else if let Ok(position) = self.holes.binary_search(&op) {
            self.holes.remove(position);
        }
    }

    /// Removes `op`, which must be a member.
    pub(crate) fn remove(&mut self, op: usize) {
        if op + 1 == self.end {
            self.end = op;
            while self.end > 0 && self.holes.last() == Some(&(self.end - 1)) {
                self.holes.pop();
                self.end -= 1;
            }
        } else if op < self.end
            && let Err(position) = self.holes.binary_search(&op)
        {
            self.holes.insert(position, op);
        }
    }
}

/// A hasher for keys that are already well-mixed `u64`s.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = mix(self.0 ^ u64::from(byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// The splitmix64 finaliser.
fn mix(mut value: u64) -> u64 {
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

/// Hashes a (linearized set, state) pair.
fn hash_configuration(set: &LinearizedSet, state: State) -> u64 {
    let mut hash = mix(set.end as u64 ^ 0x9e37_79b9_7f4a_7c15);
    hash = mix(hash ^ state as u64);
    for &hole in &set.holes {
        hash = mix(hash ^ hole as u64);
    }
    hash
}

/// One explored configuration; holes live in [`Cache::holes`].
struct CacheEntry {
    end: usize,
    state: State,
    holes_start: usize,
    holes_len: usize,
    /// The next entry with the same hash, or [`NONE`].
    next: usize,
}

/// Every (linearized set, state) pair explored so far.
#[derive(Default)]
struct Cache {
    buckets: HashMap<u64, usize, BuildHasherDefault<PassThroughHasher>>,
    entries: Vec<CacheEntry>,
    holes: Vec<usize>,
}

impl Cache {
    fn holds(&self, mut entry: usize, set: &LinearizedSet, state: State) -> bool {
        while entry != NONE {
            let candidate = &self.entries[entry];
            if candidate.end == set.end
                && candidate.state == state
                && self.holes[candidate.holes_start..candidate.holes_start + candidate.holes_len]
                    == set.holes[..]
            {
                return true;
            }
            entry = candidate.next;
        }
        false
    }

    /// Records the pair; returns false if it was already there.
    fn insert(&mut self, set: &LinearizedSet, state: State) -> bool {
        let hash = hash_configuration(set, state);
        let first = self.buckets.get(&hash).copied().unwrap_or(NONE);
        if self.holds(first, set, state) {
            return false;
        }
        let index = self.entries.len();
        self.entries.push(CacheEntry {
            end: set.end,
            state,
            holes_start: self.holes.len(),
            holes_len: set.holes.len(),
            next: first,
        });
        self.holes.extend_from_slice(&set.holes);
        self.buckets.insert(hash, index);
        true
    }

    /// Approximate heap bytes held: entries, their holes, and the hash table's slots.
    fn bytes(&self) -> usize {
        self.entries.len() * (std::mem::size_of::<CacheEntry>() + 2 * std::mem::size_of::<u64>())
            + self.holes.len() * std::mem::size_of::<usize>()
    }
}

/// One linearized operation on the backtracking stack.
struct Frame {
    /// The operation's call node.
    call: usize,
    /// The state before the operation.
    state_before: State,
    /// Whether the operation is a read linearized as soon as it applied (see [`search`]):
    /// if nothing can follow it, nothing can follow the configuration before it either.
    read_first: bool,
}

/// Decides whether one key's history is linearizable, giving up at `deadline` or when the
/// memo reaches [`MEMO_BYTES_MAX`].
///
/// On top of the classic search, reads go first: if a read-only operation `r` (see
/// [`crate::model::Step::is_read_only`]) is reachable in the scan and its result matches the
/// current state, then a linearization from the current configuration exists iff one exists
/// after linearizing `r` right now. (Take any valid continuation and move `r` to the front:
/// `r` changes no state, its result matches, and no pending operation has to precede it, since
/// the scan stops at the first pending return and `r`'s call comes before it.) So each time
/// the scan restarts it first looks for such a read and linearizes it without considering any
/// alternative; if the configuration after it fails, or is already in the memo (explored and
/// failed), the current configuration fails too and the search backtracks at once. Writes are
/// only ordered where no read pins them. On a hot key with many concurrent clients this turns
/// an exponential exploration into a nearly linear one.
pub(crate) fn search(history: &KeyHistory, deadline: Option<Instant>) -> SearchResult {
    let mut definite_left = history
        .ops
        .iter()
        .filter(|op| op.complete.is_some())
        .count();
    if definite_left == 0 {
        return SearchResult::Linearizable;
    }
    let mut list = EventList::new(history);
    let mut linearized = LinearizedSet::default();
    let mut cache = Cache::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut state = ABSENT;
    let mut entry = list.next[HEAD];
    // Whether the scan has just restarted at the head (and so should look for reads first).
    let mut restarted = true;
    let mut steps: u64 = 0;

    loop {
        steps += 1;
        if steps.is_multiple_of(STEPS_PER_CLOCK_CHECK) {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return SearchResult::OutOfBudget { steps };
            }
            if cache.bytes() > MEMO_BYTES_MAX {
                return SearchResult::MemoFull {
                    configurations: cache.entries.len(),
                };
            }
        }
        if restarted {
            restarted = false;
            if let Some(read) = first_applicable_read(&list, history, state) {
                entry = read;
            }
        }
        let mut doomed = entry == NONE || !list.is_call[entry];
        if !doomed {
            let op = list.op[entry];
            let prepared = &history.ops[op];
            if let Some(next_state) = prepared.step.apply(state) {
                let read_first = prepared.step.is_read_only();
                linearized.insert(op);
                if cache.insert(&linearized, next_state) {
                    stack.push(Frame {
                        call: entry,
                        state_before: state,
                        read_first,
                    });
                    state = next_state;
                    list.lift(entry);
                    if prepared.complete.is_some() {
                        definite_left -= 1;
                        if definite_left == 0 {
                            return SearchResult::Linearizable;
                        }
                    }
                    entry = list.next[HEAD];
                    restarted = true;
                    continue;
                }
                linearized.remove(op);
                doomed = read_first;
            }
            if !doomed {
                entry = list.next[entry];
                continue;
            }
        }
        // The current configuration cannot be completed: we reached the return of a pending
        // operation, the end of the list (only when every remaining call was refused, since a
        // pending definite operation leaves its return in the list), or a read whose
        // successor configuration already failed. Undo linearizations until one that was a
        // choice rather than a forced read, and try the next event after it. (Reads before it
        // in the list did not apply in that configuration, or one would have been forced.)
        loop {
            let Some(frame) = stack.pop() else {
                return SearchResult::NotLinearizable;
            };
            let op = list.op[frame.call];
            linearized.remove(op);
            state = frame.state_before;
            list.unlift(frame.call);
            if history.ops[op].complete.is_some() {
                definite_left += 1;
            }
            if !frame.read_first {
                entry = list.next[frame.call];
                break;
            }
        }
    }
}

/// The first call in the scan window (up to the first pending return) of a read-only
/// operation whose result matches `state`.
fn first_applicable_read(list: &EventList, history: &KeyHistory, state: State) -> Option<usize> {
    let mut entry = list.next[HEAD];
    while entry != NONE && list.is_call[entry] {
        let step = history.ops[list.op[entry]].step;
        if step.is_read_only() && step.apply(state).is_some() {
            return Some(entry);
        }
        entry = list.next[entry];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PreparedOp, Step};

    fn op(step: Step, invoke: u64, complete: Option<u64>) -> PreparedOp {
        PreparedOp {
            step,
            invoke,
            complete,
        }
    }

    fn run(ops: Vec<PreparedOp>) -> SearchResult {
        search(&KeyHistory { ops }, None)
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(run(vec![]), SearchResult::Linearizable);
    }

    #[test]
    fn sequential_read_of_the_written_value_is_linearizable() {
        let ops = vec![
            op(Step::Write(1), 0, Some(1)),
            op(Step::Read(1), 2, Some(3)),
        ];
        assert_eq!(run(ops), SearchResult::Linearizable);
    }

    #[test]
    fn stale_read_is_not_linearizable() {
        let ops = vec![
            op(Step::Write(1), 0, Some(1)),
            op(Step::Read(ABSENT), 2, Some(3)),
        ];
        assert_eq!(run(ops), SearchResult::NotLinearizable);
    }

    #[test]
    fn touching_intervals_are_concurrent() {
        // The write completes at 5 and the read is invoked at 5: either order is allowed.
        let ops = vec![
            op(Step::Write(1), 0, Some(5)),
            op(Step::Read(ABSENT), 5, Some(6)),
        ];
        assert_eq!(run(ops), SearchResult::Linearizable);
    }

    #[test]
    fn unknown_write_may_be_skipped_or_applied() {
        let skipped = vec![
            op(Step::Write(1), 0, None),
            op(Step::Read(ABSENT), 2, Some(3)),
        ];
        assert_eq!(run(skipped), SearchResult::Linearizable);
        let applied = vec![op(Step::Write(1), 0, None), op(Step::Read(1), 2, Some(3))];
        assert_eq!(run(applied), SearchResult::Linearizable);
        let before_invocation = vec![op(Step::Read(1), 0, Some(1)), op(Step::Write(1), 2, None)];
        assert_eq!(run(before_invocation), SearchResult::NotLinearizable);
    }

    #[test]
    fn linearized_set_round_trips() {
        let mut set = LinearizedSet::default();
        set.insert(3);
        assert_eq!(set.end, 4);
        assert_eq!(set.holes, vec![0, 1, 2]);
        set.insert(1);
        assert_eq!(set.holes, vec![0, 2]);
        set.remove(3);
        assert_eq!(set.end, 2);
        assert_eq!(set.holes, vec![0]);
        set.remove(1);
        assert_eq!(set, LinearizedSet::default());
    }

    #[test]
    fn deadline_in_the_past_gives_up_on_long_searches() {
        // Many concurrent writes and one impossible read: the search explores a lot before it
        // can conclude, and an expired deadline stops it at the first clock check.
        let mut ops: Vec<PreparedOp> = (0..16)
            .map(|i| op(Step::Write(i + 1), 0, Some(100)))
            .collect();
        ops.push(op(Step::Read(99), 0, Some(100)));
        let result = search(&KeyHistory { ops }, Some(Instant::now()));
        assert!(
            matches!(result, SearchResult::OutOfBudget { steps } if steps == STEPS_PER_CLOCK_CHECK),
            "{result:?}"
        );
    }
}
