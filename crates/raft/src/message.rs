//! Messages between servers. The core produces and consumes them; the transport only
//! moves them.

use bytes::Bytes;

use crate::types::{Entry, Index, NodeId, ReadId, SnapshotMeta, Term};

/// One message from one server to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// The sender's term (for a PreVote request: the term it would campaign in).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of message the protocol exchanges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// "Would you vote for me?" Sent before a real election; changes nobody's term.
    PreVote {
        /// Index of the candidate's last entry.
        last_log_index: Index,
        /// Term of the candidate's last entry.
        last_log_term: Term,
    },
    /// Answer to [`MessageBody::PreVote`].
    PreVoteResponse {
        /// Whether the vote would be granted.
        granted: bool,
    },
    /// A real vote request in a new term.
    Vote {
        /// Index of the candidate's last entry.
        last_log_index: Index,
        /// Term of the candidate's last entry.
        last_log_term: Term,
        /// Set when the election was asked for by the leader (leadership transfer): voters
        /// then ignore their leader lease.
        transfer: bool,
    },
    /// Answer to [`MessageBody::Vote`].
    VoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// Entries to append after `prev_index`, plus the leader's commit index.
    Append {
        /// Index of the entry just before `entries`.
        prev_index: Index,
        /// Term of that entry.
        prev_term: Term,
        /// Entries to append (may be empty: a probe).
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: Index,
    },
    /// Answer to [`MessageBody::Append`].
    AppendResponse(AppendResult),
    /// Keeps followers from campaigning, carries the commit index and confirms reads.
    Heartbeat {
        /// min(leader's commit index, follower's known match index).
        commit: Index,
        /// The read round this heartbeat belongs to.
        read_round: u64,
    },
    /// Answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse {
        /// The read round being acknowledged.
        read_round: u64,
    },
    /// One chunk of a snapshot for a follower that is too far behind.
    InstallSnapshot {
        /// What the snapshot covers.
        meta: SnapshotMeta,
        /// Byte offset of this chunk in the snapshot data.
        offset: u64,
        /// The chunk.
        data: Bytes,
        /// Whether this is the last chunk.
        done: bool,
    },
    /// Answer to [`MessageBody::InstallSnapshot`].
    InstallSnapshotResponse(SnapshotResult),
    /// Leadership transfer: "campaign now, skipping PreVote".
    TimeoutNow,
    /// A follower asks the leader for a read index on behalf of a client.
    ReadIndex {
        /// The follower's id for the read.
        id: ReadId,
    },
    /// Answer to [`MessageBody::ReadIndex`].
    ReadIndexResponse {
        /// The follower's id for the read.
        id: ReadId,
        /// The index to wait for, or `None` when the leader could not confirm one.
        index: Option<Index>,
    },
}

/// The outcome of an append, from the follower's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendResult {
    /// The follower's log matches the leader's, durably, up to `match_index`.
    Success {
        /// Highest index known to match and be durable.
        match_index: Index,
    },
    /// The entry at `rejected_prev` did not match.
    Reject {
        /// The `prev_index` of the rejected message.
        rejected_prev: Index,
        /// Where the leader should look next.
        hint: ConflictHint,
    },
}

/// A follower's hint that lets the leader skip a whole conflicting term at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConflictHint {
    /// The term of the follower's conflicting entry, or `None` if its log is too short.
    pub term: Option<Term>,
    /// The first index of that term in the follower's log, or its last index + 1.
    pub index: Index,
}

/// The outcome of a snapshot chunk, from the follower's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotResult {
    /// Send the chunk at this offset next.
    Next {
        /// The offset wanted.
        offset: u64,
    },
    /// The snapshot up to `index` is installed and durable.
    Done {
        /// The snapshot's index.
        index: Index,
    },
}

/// Bytes a message costs besides its entries or snapshot data, for the byte limit.
pub const MESSAGE_HEADER_BYTES: usize = 32;

impl Message {
    /// Rough size in bytes, for the per-message byte limit.
    pub fn size_bytes(&self) -> usize {
        MESSAGE_HEADER_BYTES
            + match &self.body {
                MessageBody::Append { entries, .. } => entries.iter().map(Entry::size_bytes).sum(),
                MessageBody::InstallSnapshot { data, .. } => data.len(),
                _ => 0,
            }
    }
}
