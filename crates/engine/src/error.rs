//! Errors of the engine, typed by who can act on them: the client (retry elsewhere, back
//! off, give up) or the operator (the node has stopped).

use std::fmt;

use rkv_raft::{MembershipError, NodeId, ProposeError, ReadError, TransferError};

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineError {
    /// This node does not lead; ask the leader (if one is known).
    NotLeader {
        /// The leader this node knows of.
        leader_hint: Option<NodeId>,
    },
    /// A limit was reached (mailbox, uncommitted bytes, a transfer in progress): retry later.
    Busy(String),
    /// The proposal's log position was taken by another leader's entry: it was not
    /// applied and never will be. Safe to retry.
    Dropped,
    /// The request is invalid (for example too large) and retrying will not help.
    Invalid(String),
    /// A write or membership change was accepted but its fate is unknown (the node
    /// stopped, or a snapshot from the leader replaced the log around it): it may or may
    /// not be applied. Retry only through a session (exactly-once) or after reading.
    OutcomeUnknown(String),
    /// A read could not be confirmed in time (no leader answered); retry.
    Unavailable(String),
    /// The node has stopped (shut down or a fatal storage error): the operator must act.
    Stopped(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::NotLeader {
                leader_hint: Some(leader),
            } => {
                write!(f, "not the leader; the leader is {leader}")
            }
            EngineError::NotLeader { leader_hint: None } => {
                write!(f, "not the leader; no leader is known")
            }
            EngineError::Busy(why) => write!(f, "busy: {why}"),
            EngineError::Dropped => write!(f, "the proposal lost its log position; retry"),
            EngineError::Invalid(why) => write!(f, "invalid request: {why}"),
            EngineError::OutcomeUnknown(why) => write!(f, "outcome unknown: {why}"),
            EngineError::Unavailable(why) => write!(f, "unavailable: {why}"),
            EngineError::Stopped(why) => write!(f, "the node has stopped: {why}"),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<ProposeError> for EngineError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::NotLeader(n) => EngineError::NotLeader {
                leader_hint: n.leader_hint,
            },
            ProposeError::Busy(b) => EngineError::Busy(b.to_string()),
            other => EngineError::Invalid(other.to_string()),
        }
    }
}

impl From<ReadError> for EngineError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NotLeader(n) => EngineError::NotLeader {
                leader_hint: n.leader_hint,
            },
            other => EngineError::Busy(other.to_string()),
        }
    }
}

impl From<MembershipError> for EngineError {
    fn from(e: MembershipError) -> Self {
        match e {
            MembershipError::NotLeader(n) => EngineError::NotLeader {
                leader_hint: n.leader_hint,
            },
            MembershipError::Busy(b) => EngineError::Busy(b.to_string()),
            other => EngineError::Invalid(other.to_string()),
        }
    }
}

impl From<TransferError> for EngineError {
    fn from(e: TransferError) -> Self {
        match e {
            TransferError::NotLeader(n) => EngineError::NotLeader {
                leader_hint: n.leader_hint,
            },
            TransferError::InProgress => EngineError::Busy(e.to_string()),
            other => EngineError::Invalid(other.to_string()),
        }
    }
}

/// Why a node could not start. These need the operator.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The durable log could not be opened or recovered.
    Log(rkv_log::LogError),
    /// The Raft configuration is invalid.
    Config(rkv_raft::ConfigError),
    /// The stored snapshot could not be restored into the state machine.
    Snapshot(String),
    /// Not started on a multi-threaded tokio runtime (the node task may wait on the log
    /// writer with `block_in_place`, which needs one).
    Runtime,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Log(e) => write!(f, "opening the log: {e}"),
            StartError::Config(e) => e.fmt(f),
            StartError::Snapshot(e) => write!(f, "restoring the snapshot: {e}"),
            StartError::Runtime => write!(f, "the engine needs a multi-threaded tokio runtime"),
        }
    }
}

impl std::error::Error for StartError {}
