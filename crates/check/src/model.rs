//! The sequential specification of one key, compiled for the search.
//!
//! A key is a register holding `Option<String>`, initially `None`. To make states cheap to
//! copy, compare and hash, every distinct value mentioned on a key is interned to a small
//! integer: state `0` is "absent" and state `i > 0` is the `i`-th distinct value.

use std::collections::HashMap;

use crate::history::{OpKind, Operation, Outcome};

/// An interned register state: [`ABSENT`] or the id of a value.
pub(crate) type State = usize;

/// The state of a key that holds no value.
pub(crate) const ABSENT: State = 0;

/// One operation's effect and, when known, its observed result, in interned form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// A get that returned the given state. (Gets with unknown outcomes are dropped earlier.)
    Read(State),
    /// A put (of a value id) or a delete (of [`ABSENT`]); always succeeds.
    Write(State),
    /// A compare-and-swap; `swapped` is `None` when the outcome is unknown.
    Cas {
        /// The state required for the swap.
        expected: State,
        /// The state written by the swap.
        new: State,
        /// The observed result, if known.
        swapped: Option<bool>,
    },
}

impl Step {
    /// Whether the step never changes the state: a get, or a compare-and-swap known not to
    /// have swapped.
    pub(crate) fn is_read_only(self) -> bool {
        matches!(
            self,
            Self::Read(_)
                | Self::Cas {
                    swapped: Some(false),
                    ..
                }
        )
    }

    /// Applies the step to `state`. Returns the next state, or `None` when the observed result
    /// is impossible from `state`.
    pub(crate) fn apply(self, state: State) -> Option<State> {
        match self {
            Self::Read(read) => (read == state).then_some(state),
            Self::Write(written) => Some(written),
            Self::Cas {
                expected,
                new,
                swapped,
            } => {
                let matches = expected == state;
                if swapped.is_some_and(|swapped| swapped != matches) {
                    return None;
                }
                Some(if matches { new } else { state })
            }
        }
    }
}

/// One operation ready for the search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PreparedOp {
    /// The effect and observed result.
    pub(crate) step: Step,
    /// Invocation time.
    pub(crate) invoke: u64,
    /// Completion time; `None` for unknown outcomes (completion at +infinity).
    pub(crate) complete: Option<u64>,
}

/// The relevant operations of one key, sorted by invocation time (ties: input order), with
/// values interned.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyHistory {
    /// The operations, in invocation order.
    pub(crate) ops: Vec<PreparedOp>,
}

/// The state for `value`, allocating a new id for a value not seen before.
fn intern<'a>(values: &mut HashMap<&'a str, State>, value: Option<&'a str>) -> State {
    match value {
        None => ABSENT,
        Some(value) => {
            let next = values.len() + 1;
            *values.entry(value).or_insert(next)
        }
    }
}

/// Compiles the operations of one key. Callers pass only relevant operations (see
/// [`Operation::is_relevant`]); any other is skipped here as well, to keep the search sound.
pub(crate) fn prepare(ops: &[&Operation]) -> KeyHistory {
    let mut values: HashMap<&str, State> = HashMap::new();
    let mut prepared: Vec<(usize, PreparedOp)> = Vec::with_capacity(ops.len());
    for (position, op) in ops.iter().enumerate() {
        let definite = match op.outcome {
            Outcome::Ok => true,
            Outcome::Unknown => false,
            Outcome::Failed => continue,
        };
        let step = match &op.kind {
            OpKind::Get { value } if definite => Step::Read(intern(&mut values, value.as_deref())),
            OpKind::Get { .. } => continue,
            OpKind::Put { value } => Step::Write(intern(&mut values, Some(value))),
            OpKind::Delete => Step::Write(ABSENT),
            OpKind::Cas {
                expected,
                new,
                swapped,
            } => Step::Cas {
                expected: intern(&mut values, expected.as_deref()),
                new: intern(&mut values, Some(new)),
                swapped: definite.then_some(*swapped),
            },
        };
        let complete = definite.then_some(op.complete);
        prepared.push((
            position,
            PreparedOp {
                step,
                invoke: op.invoke,
                complete,
            },
        ));
    }
    prepared.sort_by_key(|(position, op)| (op.invoke, *position));
    KeyHistory {
        ops: prepared.into_iter().map(|(_, op)| op).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_accepts_the_current_state() {
        assert_eq!(Step::Read(3).apply(3), Some(3));
        assert_eq!(Step::Read(3).apply(ABSENT), None);
    }

    #[test]
    fn cas_follows_its_observed_result() {
        let cas = |swapped| Step::Cas {
            expected: 1,
            new: 2,
            swapped,
        };
        assert_eq!(cas(Some(true)).apply(1), Some(2));
        assert_eq!(cas(Some(true)).apply(3), None);
        assert_eq!(cas(Some(false)).apply(3), Some(3));
        assert_eq!(cas(Some(false)).apply(1), None);
        assert_eq!(cas(None).apply(1), Some(2));
        assert_eq!(cas(None).apply(3), Some(3));
    }

    #[test]
    fn prepare_interns_values_and_orders_by_invocation() {
        let put = Operation {
            client: 1,
            key: "k".into(),
            invoke: 10,
            complete: 20,
            outcome: Outcome::Ok,
            kind: OpKind::Put { value: "a".into() },
        };
        let get = Operation {
            invoke: 5,
            outcome: Outcome::Ok,
            kind: OpKind::Get {
                value: Some("a".into()),
            },
            ..put.clone()
        };
        let unknown_get = Operation {
            outcome: Outcome::Unknown,
            ..get.clone()
        };
        let history = prepare(&[&put, &get, &unknown_get]);
        assert_eq!(
            history.ops,
            vec![
                PreparedOp {
                    step: Step::Read(1),
                    invoke: 5,
                    complete: Some(20),
                },
                PreparedOp {
                    step: Step::Write(1),
                    invoke: 10,
                    complete: Some(20),
                },
            ]
        );
    }
}
