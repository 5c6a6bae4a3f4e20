//! The Raft protocol of rkv as a pure, deterministic state machine.
//!
//! [`RaftNode`] does no I/O, reads no clock, spawns nothing and draws no randomness of its
//! own (election timeouts come from a seed handed in). Everything it needs arrives as an
//! input and everything it wants done leaves as an [`Action`]. That is what lets the
//! simulator in `rkv-sim` run thousands of whole clusters from seeds, replay any of them
//! exactly, and lets unit tests assert the exact actions each rule emits.
//!
//! Implemented: elections with randomised timeouts, PreVote and CheckQuorum; pipelined,
//! batched replication with flow control and fast conflict back-off; commit of
//! current-term entries by quorum; ReadIndex reads that share heartbeat rounds, and lease
//! reads; single-server membership changes through learners; leadership transfer; chunked
//! snapshots; limits on message bytes, entries in flight and uncommitted bytes.
//!
//! # Membership changes
//! One server at a time (Raft dissertation §4.1): a membership entry takes effect as soon
//! as it is appended, a leader accepts a new change only after the previous one committed
//! and after it has committed an entry of its own term (the fix for the single-server
//! change bug). A new server joins as a learner, is promoted once it has caught up
//! (`promote_lag_entries_max`), and a leader that removes itself steps down when the
//! removal commits.
//!
//! # Driving a node: the ordering contract
//! After feeding inputs ([`RaftNode::tick`], [`RaftNode::step`], [`RaftNode::propose`],
//! [`RaftNode::read`], ...), call [`RaftNode::take_actions`] and perform the actions
//! **in order**:
//!
//! 1. [`Action::SaveHardState`]: make term and vote durable *before* performing any
//!    action after it (a vote must not leave before it is on disk).
//! 2. [`Action::Append`]: write the entries to the log (dropping any stored suffix they
//!    overwrite). The write may complete later: when entries up to index `i` of term `t`
//!    are durable, call [`RaftNode::persisted`]`(i, t)`. Later `Send` actions may go out
//!    before that: the core never emits an acknowledgement that depends on an unsynced
//!    entry, and a leader counts itself toward a quorum only once durable.
//! 3. [`Action::Send`]: hand the message to the transport; it may be lost, duplicated,
//!    delayed or reordered.
//! 4. [`Action::Apply`]: apply the committed entries to the state machine, in order.
//! 5. [`Action::InstallSnapshot`]: make the snapshot durable, replace the state machine
//!    and the whole log with it, then call [`RaftNode::snapshot_installed`].
//! 6. [`Action::CompactLog`]: the log up to that index may be deleted. The core's own
//!    copies of those entries (and of a log an installed snapshot replaced) wait in
//!    [`RaftNode::take_compacted`], for a driver that would rather free them off its
//!    event loop.
//! 7. [`Action::ReadReady`]: answer the read once the state machine has applied the
//!    given index. [`Action::ReadFailed`]: answer it with the error.
//!
//! After applying, a state machine may hand in a durable snapshot with
//! [`RaftNode::snapshot_taken`] to compact the log.
//!
//! ```
//! use bytes::Bytes;
//! use rkv_raft::{Action, Config, Membership, NodeId, RaftNode, Recovered, Role, Snapshot};
//!
//! // A one-node cluster, bootstrapped from scratch.
//! let recovered = Recovered {
//!     snapshot: Snapshot::bootstrap(Membership::with_voters([NodeId(1)])),
//!     ..Recovered::default()
//! };
//! let mut node = RaftNode::new(Config::new(NodeId(1)), recovered, 7).unwrap();
//! let mut log = Vec::new();
//! let mut applied = Vec::new();
//! for _ in 0..100 {
//!     node.tick();
//!     if node.role() == Role::Leader {
//!         let _ = node.propose(Bytes::from_static(b"x=1"));
//!     }
//!     for action in node.take_actions() {
//!         match action {
//!             // 1. durable before anything after it (a real driver fsyncs here)
//!             Action::SaveHardState(_hard_state) => {}
//!             // 2. write, then report durability
//!             Action::Append(entries) => {
//!                 let last = entries.last().unwrap();
//!                 let (index, term) = (last.index, last.term);
//!                 log.extend(entries);
//!                 node.persisted(index, term);
//!             }
//!             // 3. a one-node cluster has no peers to send to
//!             Action::Send(_message) => {}
//!             // 4. apply in order
//!             Action::Apply(entries) => applied.extend(entries),
//!             _ => {}
//!         }
//!     }
//!     if !applied.is_empty() {
//!         break;
//!     }
//! }
//! assert_eq!(node.role(), Role::Leader);
//! assert!(!applied.is_empty(), "the leader's first entry commits once durable");
//! ```

mod config;
mod error;
mod log;
mod message;
mod node;
mod progress;
mod rng;
mod types;

#[cfg(feature = "broken-variants")]
pub use config::Bug;
pub use config::Config;
pub use error::{
    Busy, ConfigError, MembershipError, NotLeader, ProposeError, ReadError, SnapshotError,
    TransferError,
};
pub use message::{
    AppendResult, ConflictHint, MESSAGE_HEADER_BYTES, Message, MessageBody, SnapshotResult,
};
pub use node::{Action, PeerStatus, RaftNode, Status};
pub use types::{
    ENTRY_OVERHEAD_BYTES, Entry, HardState, Index, Membership, MembershipChange, NodeId, Payload,
    ReadId, ReadMode, Recovered, Role, Snapshot, SnapshotMeta, Term,
};
