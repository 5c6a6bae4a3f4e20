//! What a leader knows about each follower's log, and the flow control that decides
//! what to send it next.

use std::collections::VecDeque;

use crate::types::{Index, SnapshotMeta};

/// The replication state of one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReplicationState {
    /// Finding where the logs agree: one message at a time.
    Probe {
        /// A probe is outstanding; wait for its answer or the next heartbeat answer.
        sent: bool,
    },
    /// The logs agree up to `match_index`: stream entries optimistically, up to the
    /// in-flight window.
    Replicate,
    /// The follower needs entries that were compacted: stream the snapshot in chunks.
    Snapshot {
        /// What is being sent.
        meta: SnapshotMeta,
        /// Offset of the chunk most recently sent.
        offset: u64,
        /// Ticks since the chunk was sent (resent when an election timeout passes).
        ticks_since_sent: u32,
    },
}

/// A leader's record of one follower.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// Highest index known to match the leader's log and be durable on the follower.
    pub match_index: Index,
    /// The next index to send.
    pub next_index: Index,
    /// How entries are being sent.
    pub state: ReplicationState,
    /// Last index of each Append message in flight, oldest first.
    pub inflight: VecDeque<Index>,
    /// Heard from since the last CheckQuorum round.
    pub recent_active: bool,
    /// Highest read round the follower acknowledged.
    pub read_round: u64,
    /// `match_index` when the previous heartbeat answer arrived: no change across a
    /// heartbeat while behind means a message was lost.
    pub match_at_last_heartbeat: Index,
    /// Heartbeat intervals in a row without progress while behind.
    pub stalled_heartbeats: u32,
}

impl Progress {
    /// A follower about which nothing is known yet.
    pub fn new(next_index: Index) -> Progress {
        Progress {
            match_index: Index(0),
            next_index,
            state: ReplicationState::Probe { sent: false },
            inflight: VecDeque::new(),
            recent_active: false,
            read_round: 0,
            match_at_last_heartbeat: Index(0),
            stalled_heartbeats: 0,
        }
    }

    /// Records a successful append up to `index`; returns whether anything new was learned.
    pub fn on_success(&mut self, index: Index) -> bool {
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        if index <= self.match_index {
            return false;
        }
        self.match_index = index;
        if self.next_index <= index {
            self.next_index = index.next();
        }
        if matches!(self.state, ReplicationState::Probe { .. }) {
            self.state = ReplicationState::Replicate;
        }
        true
    }

    /// Falls back to probing from `next_index`.
    pub fn become_probe(&mut self, next_index: Index) {
        self.state = ReplicationState::Probe { sent: false };
        self.next_index = next_index.max(self.match_index.next());
        self.inflight.clear();
    }

    /// Whether another Append may be sent now.
    pub fn can_send(&self, max_inflight: usize) -> bool {
        match self.state {
            ReplicationState::Probe { sent } => !sent,
            ReplicationState::Replicate => self.inflight.len() < max_inflight,
            ReplicationState::Snapshot { .. } => false,
        }
    }
}
