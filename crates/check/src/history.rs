//! The data a history is made of: one [`Operation`] per client request, with the times the
//! client saw it start and end, what it asked for and what it got back.
//!
//! These types are the contract between the recorders (the simulator, `rkvctl`) and the
//! checker, and they are also the on-disk JSON-lines format (see the crate docs), so field and
//! variant names are part of the format: renaming one breaks recorded files.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Outcome of one client operation as observed by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The operation took effect exactly once and its return value (if any) is known.
    Ok,
    /// The operation definitely did not take effect (for example the server rejected it before
    /// proposing it). The checker drops such operations.
    Failed,
    /// The client does not know whether the operation took effect (for example it timed out).
    /// It may have taken effect at any point after its invocation, or never; its return value
    /// is unconstrained.
    Unknown,
}

/// What the operation did and, for [`Outcome::Ok`] operations, what it returned.
///
/// Serialised internally tagged by `op`: `{"op":"get","value":"1"}`, `{"op":"put","value":"1"}`,
/// `{"op":"delete"}`, `{"op":"cas","expected":null,"new":"1","swapped":true}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OpKind {
    /// Read the key.
    Get {
        /// The value read (`None`: the key was absent). Ignored unless the outcome is
        /// [`Outcome::Ok`].
        #[serde(default)]
        value: Option<String>,
    },
    /// Set the key to `value`.
    Put {
        /// The value written.
        value: String,
    },
    /// Remove the key.
    Delete,
    /// Compare-and-swap: if the current value equals `expected` (`None`: the key is absent),
    /// set it to `new`.
    Cas {
        /// The value the key must hold for the swap to happen (`None`: absent).
        #[serde(default)]
        expected: Option<String>,
        /// The value written when the swap happens.
        new: String,
        /// Whether the swap happened. Ignored unless the outcome is [`Outcome::Ok`].
        swapped: bool,
    },
}

/// One client operation on one key, as recorded by the client.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Operation {
    /// The client that issued the operation. Informational: the checker does not assume that a
    /// client has one operation outstanding at a time.
    pub client: u64,
    /// The key the operation touched.
    pub key: String,
    /// Invocation time, in any monotonic unit shared by the whole history (nanoseconds,
    /// simulated ticks, ...).
    pub invoke: u64,
    /// Completion time in the same unit. For [`Outcome::Unknown`] this is the time the client
    /// gave up; the checker treats it as +infinity.
    pub complete: u64,
    /// What the client observed about the operation's fate.
    pub outcome: Outcome,
    /// What the operation did and returned.
    pub kind: OpKind,
}

/// Why an [`Operation`] cannot be part of any history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum InvalidOperation {
    /// The operation completes (or was given up on) before it was invoked.
    CompletesBeforeInvoke {
        /// The invocation time.
        invoke: u64,
        /// The completion time, which is smaller.
        complete: u64,
    },
}

impl fmt::Display for InvalidOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CompletesBeforeInvoke { invoke, complete } => write!(
                f,
                "operation completes at {complete}, before it is invoked at {invoke}"
            ),
        }
    }
}

impl std::error::Error for InvalidOperation {}

impl Operation {
    /// Checks the operation on its own: its completion time must not precede its invocation
    /// time (this holds for every outcome, since a client cannot give up on a request before
    /// sending it).
    pub fn validate(&self) -> Result<(), InvalidOperation> {
        if self.complete < self.invoke {
            return Err(InvalidOperation::CompletesBeforeInvoke {
                invoke: self.invoke,
                complete: self.complete,
            });
        }
        Ok(())
    }

    /// Whether the operation changes (or may change) the key: put, delete and compare-and-swap.
    pub fn is_write(&self) -> bool {
        !matches!(self.kind, OpKind::Get { .. })
    }

    /// Whether the checker needs to look at this operation at all. Failed operations did not
    /// take effect, and a get whose outcome is unknown neither changed the state nor returned
    /// anything, so both can be dropped without changing the verdict.
    pub fn is_relevant(&self) -> bool {
        match self.outcome {
            Outcome::Ok => true,
            Outcome::Failed => false,
            Outcome::Unknown => self.is_write(),
        }
    }
}

/// A quoted value, or `absent` for `None`.
struct ShowValue<'a>(Option<&'a str>);

impl fmt::Display for ShowValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => write!(f, "{value:?}"),
            None => f.write_str("absent"),
        }
    }
}

impl fmt::Display for Operation {
    /// One line, e.g. `client 3 [10, 20] ok put "x" = "1"` or
    /// `client 4 [15, inf) unknown cas "x" "1" -> "2"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match self.outcome {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        };
        write!(f, "client {} [{}, ", self.client, self.invoke)?;
        match self.outcome {
            Outcome::Unknown => write!(f, "inf) {outcome} ")?,
            Outcome::Ok | Outcome::Failed => write!(f, "{}] {outcome} ", self.complete)?,
        }
        let show_result = self.outcome == Outcome::Ok;
        match &self.kind {
            OpKind::Get { value } => {
                write!(f, "get {:?}", self.key)?;
                if show_result {
                    write!(f, " -> {}", ShowValue(value.as_deref()))?;
                }
            }
            OpKind::Put { value } => write!(f, "put {:?} = {value:?}", self.key)?,
            OpKind::Delete => write!(f, "delete {:?}", self.key)?,
            OpKind::Cas {
                expected,
                new,
                swapped,
            } => {
                write!(
                    f,
                    "cas {:?} {} -> {new:?}",
                    self.key,
                    ShowValue(expected.as_deref())
                )?;
                if show_result {
                    f.write_str(if *swapped { " swapped" } else { " not swapped" })?;
                }
            }
        }
        Ok(())
    }
}

/// A recorded history: every operation of a test run, in any order.
///
/// A thin wrapper around `Vec<Operation>` with the checker and the file format as methods.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The operations, in any order (the checker orders them by time).
    pub ops: Vec<Operation>,
}

impl History {
    /// An empty history (which is linearizable).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one operation.
    pub fn push(&mut self, op: Operation) {
        self.ops.push(op);
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the history has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The distinct keys touched, sorted.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.ops.iter().map(|op| op.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// The operations on one key, in recorded order.
    pub fn for_key<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Operation> + 'a {
        self.ops.iter().filter(move |op| op.key == key)
    }

    /// Checks the history without a time limit; see [`crate::check`].
    pub fn check(&self) -> crate::Verdict {
        crate::check(&self.ops)
    }

    /// Checks the history with a time budget per key; see [`crate::check_with_limit`].
    pub fn check_with_limit(&self, budget: std::time::Duration) -> crate::Verdict {
        crate::check_with_limit(&self.ops, budget)
    }

    /// Writes the history as JSON lines; see [`crate::write_jsonl`].
    pub fn write_jsonl(&self, writer: impl std::io::Write) -> std::io::Result<()> {
        crate::write_jsonl(writer, &self.ops)
    }

    /// Reads a history from JSON lines; see [`crate::read_jsonl`].
    pub fn read_jsonl(reader: impl std::io::BufRead) -> Result<Self, crate::ReadError> {
        crate::read_jsonl(reader).map(Self::from)
    }
}

impl From<Vec<Operation>> for History {
    fn from(ops: Vec<Operation>) -> Self {
        Self { ops }
    }
}

impl FromIterator<Operation> for History {
    fn from_iter<I: IntoIterator<Item = Operation>>(iter: I) -> Self {
        Self {
            ops: iter.into_iter().collect(),
        }
    }
}

impl Extend<Operation> for History {
    fn extend<I: IntoIterator<Item = Operation>>(&mut self, iter: I) {
        self.ops.extend(iter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(outcome: Outcome, kind: OpKind) -> Operation {
        Operation {
            client: 1,
            key: "k".into(),
            invoke: 5,
            complete: 9,
            outcome,
            kind,
        }
    }

    #[test]
    fn relevance_drops_failed_ops_and_unknown_gets_only() {
        let get = OpKind::Get { value: None };
        let put = OpKind::Put { value: "v".into() };
        assert!(op(Outcome::Ok, get.clone()).is_relevant());
        assert!(!op(Outcome::Failed, get.clone()).is_relevant());
        assert!(!op(Outcome::Unknown, get).is_relevant());
        assert!(op(Outcome::Ok, put.clone()).is_relevant());
        assert!(!op(Outcome::Failed, put.clone()).is_relevant());
        assert!(op(Outcome::Unknown, put).is_relevant());
        assert!(op(Outcome::Unknown, OpKind::Delete).is_relevant());
    }

    #[test]
    fn validate_rejects_completion_before_invocation() {
        let mut bad = op(Outcome::Ok, OpKind::Delete);
        bad.complete = 4;
        assert_eq!(
            bad.validate(),
            Err(InvalidOperation::CompletesBeforeInvoke {
                invoke: 5,
                complete: 4
            })
        );
        bad.complete = 5;
        assert_eq!(bad.validate(), Ok(()));
    }

    #[test]
    fn display_is_one_readable_line() {
        let get = op(
            Outcome::Ok,
            OpKind::Get {
                value: Some("1".into()),
            },
        );
        assert_eq!(get.to_string(), r#"client 1 [5, 9] ok get "k" -> "1""#);
        let cas = op(
            Outcome::Unknown,
            OpKind::Cas {
                expected: None,
                new: "2".into(),
                swapped: true,
            },
        );
        assert_eq!(
            cas.to_string(),
            r#"client 1 [5, inf) unknown cas "k" absent -> "2""#
        );
    }
}
