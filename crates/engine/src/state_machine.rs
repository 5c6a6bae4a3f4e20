//! What the engine needs from a state machine: deterministic apply, snapshot, restore.

use bytes::Bytes;
use rkv_raft::{Index, Snapshot};

/// Serialises a captured state; runs off the node task.
pub type SnapshotJob = Box<dyn FnOnce() -> Bytes + Send>;

/// A deterministic state machine replicated by the engine. Every replica applies the same
/// commands in the same order and must end in the same state.
pub trait StateMachine: Send + 'static {
    /// What applying one command returns to its proposer.
    type Output: Send + 'static;

    /// Applies the command committed at `index`.
    fn apply(&mut self, index: Index, command: &Bytes) -> Self::Output;

    /// Records that the entry at `index` carried no command (a leader's no-op or a
    /// membership change).
    fn apply_noop(&mut self, index: Index);

    /// Captures the state as of the last applied index, cheaply, and returns the work of
    /// serialising it, which the engine runs on a blocking thread so that applying goes
    /// on meanwhile (snapshots stay off the hot path).
    fn snapshot(&self) -> SnapshotJob;

    /// Replaces the whole state by a snapshot. An error means the snapshot is corrupt.
    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), String>;
}
