//! The engine behind `rkvd`: one node of a cluster, put to work.
//!
//! `rkv-raft` decides; this crate does. An [`Engine`] runs the pure Raft core on one
//! tokio task that owns it (and the state machine) behind a bounded mailbox, writes the
//! log through `rkv-log`'s group-committing writer thread, hands messages to a
//! [`Transport`], applies committed entries and answers proposals and reads. Front ends
//! (gRPC, HTTP, text protocols) talk only to an [`Engine`].
//!
//! ```text
//!  proposals, reads ─┐                         ┌──▶ LogWriter thread (write + fdatasync)
//!  peer messages ────┼──▶ mailbox ──▶ node task ┼──▶ Transport (peers)
//!  log durability ───┘   (bounded)   owns core  └──▶ state machine (apply, reads)
//! ```
//!
//! The driver keeps the core's ordering contract (see `rkv_raft`'s crate docs): a
//! `SaveHardState` is durable before any later action runs, entries go to the writer
//! and come back as "persisted" reports, messages to followers leave while the leader's
//! own fsync runs, and a snapshot is durable before the core is told about it.
//!
//! Throughput comes from batching in every stage: when more than one request is in
//! flight the node task lets the other tasks run once before it flushes, so that one turn makes
//! one log append and one message per peer for all the requests that arrived together;
//! the writer thread group-commits whatever queued during the previous fsync; the peer
//! transport writes one turn's messages to a peer as one frame, straight from the node
//! task. Snapshots fall
//! at a different point of the log on each node, so that their pause never hits a
//! quorum at once.

mod engine;
mod error;
mod state_machine;
mod tcp;
pub mod transport;

pub use engine::{CACHE_ENTRIES_MIN, Engine, EngineConfig, Observed, ReadLevel};
pub use error::{EngineError, StartError};
pub use state_machine::{SnapshotJob, StateMachine};
pub use tcp::{TcpTransport, TransportStats};
pub use transport::Transport;
