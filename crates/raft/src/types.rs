//! The protocol's vocabulary: ids, terms, indexes, entries, membership and hard state.
//!
//! Term, index and node id are distinct types so that the compiler catches a term passed
//! where an index was meant.

use std::collections::BTreeSet;
use std::fmt;

use bytes::Bytes;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_type!(
    /// A server's identity, unique within a cluster and never reused.
    NodeId,
    "n"
);
id_type!(
    /// A Raft term: a logical clock that increases with every election.
    Term,
    "t"
);
id_type!(
    /// The position of an entry in the log; the first entry has index 1, 0 means "none".
    Index,
    "i"
);

impl Index {
    /// The index after this one.
    #[must_use]
    pub fn next(self) -> Index {
        Index(self.0 + 1)
    }

    /// The index before this one (0 stays 0).
    #[must_use]
    pub fn prev(self) -> Index {
        Index(self.0.saturating_sub(1))
    }
}

impl Term {
    /// The term after this one.
    #[must_use]
    pub fn next(self) -> Term {
        Term(self.0 + 1)
    }
}

/// Who votes and who only listens.
///
/// Voters elect leaders and form commit quorums; learners receive the log but never vote
/// and never count toward a quorum. A node is in at most one of the two sets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Membership {
    /// Servers that vote and count toward quorums.
    pub voters: BTreeSet<NodeId>,
    /// Servers that receive the log but do not vote.
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    /// A membership of the given voters and no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Every member, voters first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// How many voters make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

/// A change to the membership, one server at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MembershipChange {
    /// Add a server as a learner: it receives the log but does not vote.
    AddLearner(NodeId),
    /// Make a caught-up learner a voter.
    Promote(NodeId),
    /// Remove a voter or a learner. A leader that removes itself steps down once the
    /// change commits.
    Remove(NodeId),
}

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Payload {
    /// Appended by a new leader to commit the entries of earlier terms.
    Noop,
    /// An opaque command for the state machine.
    Command(Bytes),
    /// The complete membership that takes effect as soon as the entry is appended.
    Membership(Membership),
}

impl Payload {
    /// Size in bytes used for flow control and limits.
    pub fn size_bytes(&self) -> usize {
        match self {
            Payload::Noop => 0,
            Payload::Command(data) => data.len(),
            Payload::Membership(m) => (m.voters.len() + m.learners.len()) * 8,
        }
    }
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The term of the leader that created it.
    pub term: Term,
    /// Its position in the log.
    pub index: Index,
    /// What it carries.
    pub payload: Payload,
}

/// Fixed per-entry overhead counted against byte limits, besides the payload.
pub const ENTRY_OVERHEAD_BYTES: usize = 24;

impl Entry {
    /// Size in bytes used for flow control and limits.
    pub fn size_bytes(&self) -> usize {
        ENTRY_OVERHEAD_BYTES + self.payload.size_bytes()
    }
}

/// The state that must be durable before a vote or a term change is acted upon.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    /// The latest term this server has seen.
    pub term: Term,
    /// Whom it voted for in that term.
    pub vote: Option<NodeId>,
}

/// Describes the log prefix that a snapshot replaces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    /// The last index the snapshot covers.
    pub index: Index,
    /// The term of the entry at `index`.
    pub term: Term,
    /// The membership in force at `index`.
    pub membership: Membership,
}

/// A snapshot of the state machine, opaque to the core.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Snapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The state machine's serialised state.
    pub data: Bytes,
}

impl Snapshot {
    /// The starting point of a brand-new cluster: an empty snapshot at index 0 whose
    /// membership is the initial set of voters. Every founding member starts from the
    /// same one; a server that will join later starts from an empty membership.
    pub fn bootstrap(membership: Membership) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index: Index(0),
                term: Term(0),
                membership,
            },
            data: Bytes::new(),
        }
    }
}

/// The durable state a node resumes from.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    /// Term and vote.
    pub hard_state: HardState,
    /// The newest snapshot (for a fresh node, [`Snapshot::bootstrap`]).
    pub snapshot: Snapshot,
    /// Durable entries after the snapshot, contiguous from `snapshot.meta.index + 1`.
    pub entries: Vec<Entry>,
}

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks whether it could win an election before disturbing anyone (PreVote).
    PreCandidate,
    /// Campaigns in a new term.
    Candidate,
    /// Leads the current term.
    Leader,
}

/// An identifier the driver gives to a read request; the core echoes it back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadId(pub u64);

/// How a read is confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadMode {
    /// ReadIndex: one heartbeat round confirms leadership; no log write.
    Linearizable,
    /// Served under the leader's lease when CheckQuorum is on (assumes bounded clock
    /// drift between servers); falls back to ReadIndex when the lease has lapsed.
    Lease,
}
