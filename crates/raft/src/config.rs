//! Tunables of one node. Time is counted in ticks, never in wall-clock units: the driver
//! decides how long a tick is.

use crate::error::ConfigError;
use crate::types::NodeId;

/// A deliberately broken protocol rule, for proving that the simulator finds real bugs.
#[cfg(feature = "broken-variants")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Commit an entry of an earlier term by counting replicas (Raft paper figure 8).
    CommitOldTermByCount,
    /// Grant votes without checking that the candidate's log is up to date.
    VoteWithoutLogCheck,
    /// Acknowledge appended entries before they are durable.
    AckBeforePersist,
    /// Answer ReadIndex reads at once, without confirming leadership with a quorum.
    ReadWithoutQuorum,
}

/// How one node behaves.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id.
    pub id: NodeId,
    /// Minimum election timeout; each timeout is drawn from `[election_ticks, 2 * election_ticks)`.
    pub election_ticks: u32,
    /// Heartbeat interval; must be well below `election_ticks`.
    pub heartbeat_ticks: u32,
    /// Ask "would you vote for me?" before starting a real election, so that a server
    /// that was cut off does not disturb a healthy cluster when it returns.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum for an election timeout steps down, and
    /// followers that hear from a leader ignore vote requests for an election timeout.
    /// Required for lease reads.
    pub check_quorum: bool,
    /// Whether this node may ever start an election.
    pub campaign: bool,
    /// Entries per Append message in steady state.
    pub entries_per_msg: usize,
    /// A follower that lags far behind gets `entries_per_msg * catchup_multiplier` entries per message.
    pub catchup_multiplier: usize,
    /// Append messages in flight per follower before the leader waits for answers.
    pub max_inflight_msgs: usize,
    /// Bytes per message (a single entry larger than this is still sent alone).
    pub max_msg_bytes: usize,
    /// Bytes of appended but uncommitted entries before proposals are refused as busy.
    pub max_uncommitted_bytes: usize,
    /// Bytes per snapshot chunk.
    pub snapshot_chunk_bytes: usize,
    /// A learner is promoted only if it lags the leader's last index by at most this many entries.
    pub promote_lag_entries_max: u64,
    /// A deliberately broken rule (tests only).
    #[cfg(feature = "broken-variants")]
    pub bug: Option<Bug>,
}

impl Config {
    /// Sensible defaults for a node with the given id (rkvd's: 10 ms ticks, 1 s election
    /// timeout is `election_ticks = 100`, `heartbeat_ticks = 2`).
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_ticks: 10,
            heartbeat_ticks: 1,
            pre_vote: true,
            check_quorum: true,
            campaign: true,
            entries_per_msg: 64,
            catchup_multiplier: 1024,
            max_inflight_msgs: 256,
            max_msg_bytes: 4 << 20,
            max_uncommitted_bytes: 64 << 20,
            snapshot_chunk_bytes: 1 << 20,
            promote_lag_entries_max: 1024,
            #[cfg(feature = "broken-variants")]
            bug: None,
        }
    }

    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field, reason| Err(ConfigError { field, reason });
        if self.id.0 == 0 {
            return fail("id", "node id 0 is reserved");
        }
        if self.heartbeat_ticks == 0 {
            return fail("heartbeat_ticks", "must be at least 1");
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return fail("election_ticks", "must be greater than heartbeat_ticks");
        }
        if self.entries_per_msg == 0 {
            return fail("entries_per_msg", "must be at least 1");
        }
        if self.catchup_multiplier == 0 {
            return fail("catchup_multiplier", "must be at least 1");
        }
        if self.max_inflight_msgs == 0 {
            return fail("max_inflight_msgs", "must be at least 1");
        }
        if self.max_msg_bytes == 0 || self.snapshot_chunk_bytes == 0 {
            return fail("max_msg_bytes", "byte limits must be at least 1");
        }
        if self.max_uncommitted_bytes == 0 {
            return fail("max_uncommitted_bytes", "must be at least 1");
        }
        Ok(())
    }

    #[cfg(feature = "broken-variants")]
    pub(crate) fn has_bug(&self, bug: Bug) -> bool {
        self.bug == Some(bug)
    }

    #[cfg(not(feature = "broken-variants"))]
    #[allow(clippy::unused_self)]
    pub(crate) fn has_bug(&self, _bug: Bug) -> bool {
        false
    }
}

/// Without the test feature the bugs exist only as names that are never set.
#[cfg(not(feature = "broken-variants"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bug {
    CommitOldTermByCount,
    VoteWithoutLogCheck,
    AckBeforePersist,
    ReadWithoutQuorum,
}
