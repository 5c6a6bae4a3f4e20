//! Errors, typed by who can act on them.
//!
//! A client of the core can retry elsewhere ([`NotLeader`] carries the leader hint), back
//! off ([`Busy`]), or fix its request. Nothing here means the node has stopped: the core
//! has no fatal errors, because it does no I/O.

use std::fmt;

use crate::types::{Index, NodeId};

/// This node cannot do that because it is not the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotLeader {
    /// The leader this node knows of, if any.
    pub leader_hint: Option<NodeId>,
}

/// Why a request must wait: a limit was reached or the leader is busy changing something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Busy {
    /// The entries not yet committed exceed `max_uncommitted_bytes`.
    UncommittedBytes {
        /// Bytes not yet committed.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A leadership transfer is under way; proposals resume when it ends.
    Transferring,
    /// The leader has not committed an entry of its own term yet.
    NotReady,
    /// A membership change is still uncommitted; only one runs at a time.
    MembershipChangePending,
}

/// Why a proposal was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProposeError {
    /// Send it to the leader.
    NotLeader(NotLeader),
    /// Retry later.
    Busy(Busy),
    /// The proposal alone exceeds the per-message byte limit and can never be sent.
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
}

/// Why a membership change was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipError {
    /// Send it to the leader.
    NotLeader(NotLeader),
    /// Retry later.
    Busy(Busy),
    /// The server is already a member (AddLearner).
    AlreadyMember(NodeId),
    /// The server is not a member (Remove) or not a learner (Promote).
    NotMember(NodeId),
    /// The learner is too far behind to be promoted yet.
    NotCaughtUp {
        /// The learner.
        node: NodeId,
        /// Its match index.
        match_index: Index,
        /// The leader's last index.
        last_index: Index,
    },
    /// The change would leave no voter.
    LastVoter,
}

/// Why a leadership transfer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferError {
    /// Ask the leader.
    NotLeader(NotLeader),
    /// The target is not a voter.
    NotVoter(NodeId),
    /// The target is this node, which already leads.
    AlreadyLeader,
    /// Another transfer is under way.
    InProgress,
}

/// Why a read could not be confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadError {
    /// No leader is known, or leadership was lost before the read was confirmed.
    NotLeader(NotLeader),
    /// The leader did not answer in time.
    Timeout,
}

/// Why a snapshot handed in by the state machine was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The snapshot is not newer than the current one.
    Stale {
        /// Its index.
        index: Index,
        /// The current snapshot's index.
        current: Index,
    },
    /// The snapshot covers entries that were not applied yet.
    NotApplied {
        /// Its index.
        index: Index,
        /// The last index handed to the state machine.
        applied: Index,
    },
}

/// A configuration the core refuses to run with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The setting at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for NotLeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.leader_hint {
            Some(leader) => write!(f, "not the leader; try {leader}"),
            None => write!(f, "not the leader; no leader is known"),
        }
    }
}

impl fmt::Display for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Busy::UncommittedBytes { bytes, limit } => {
                write!(
                    f,
                    "busy: {bytes} uncommitted bytes reach the limit of {limit}"
                )
            }
            Busy::Transferring => write!(f, "busy: leadership transfer in progress"),
            Busy::NotReady => write!(f, "busy: the new leader has not committed in its term"),
            Busy::MembershipChangePending => write!(f, "busy: a membership change is pending"),
        }
    }
}

impl fmt::Display for ProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProposeError::NotLeader(e) => e.fmt(f),
            ProposeError::Busy(e) => e.fmt(f),
            ProposeError::TooLarge { bytes, limit } => {
                write!(
                    f,
                    "proposal of {bytes} bytes exceeds the message limit of {limit}"
                )
            }
        }
    }
}

impl fmt::Display for MembershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembershipError::NotLeader(e) => e.fmt(f),
            MembershipError::Busy(e) => e.fmt(f),
            MembershipError::AlreadyMember(n) => write!(f, "{n} is already a member"),
            MembershipError::NotMember(n) => write!(f, "{n} is not a member in that role"),
            MembershipError::NotCaughtUp {
                node,
                match_index,
                last_index,
            } => write!(
                f,
                "{node} has not caught up yet (match {match_index}, leader's last {last_index})"
            ),
            MembershipError::LastVoter => write!(f, "the change would leave no voter"),
        }
    }
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::NotLeader(e) => e.fmt(f),
            TransferError::NotVoter(n) => write!(f, "{n} is not a voter"),
            TransferError::AlreadyLeader => write!(f, "this node already leads"),
            TransferError::InProgress => write!(f, "a leadership transfer is already running"),
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::NotLeader(e) => e.fmt(f),
            ReadError::Timeout => write!(f, "the leader did not confirm the read in time"),
        }
    }
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Stale { index, current } => {
                write!(
                    f,
                    "snapshot at {index} is not newer than the current one at {current}"
                )
            }
            SnapshotError::NotApplied { index, applied } => {
                write!(
                    f,
                    "snapshot at {index} is beyond the applied index {applied}"
                )
            }
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid raft config: {}: {}", self.field, self.reason)
    }
}

impl std::error::Error for NotLeader {}
impl std::error::Error for Busy {}
impl std::error::Error for ProposeError {}
impl std::error::Error for MembershipError {}
impl std::error::Error for TransferError {}
impl std::error::Error for ReadError {}
impl std::error::Error for SnapshotError {}
impl std::error::Error for ConfigError {}
