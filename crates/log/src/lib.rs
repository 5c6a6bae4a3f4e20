//! The durable Raft log of rkv: entries, hard state and snapshots that survive crashes.
//!
//! A vote or an acknowledgement is a promise that the state behind it is on disk; this
//! crate keeps that promise. The on-disk layout and the recovery rules are specified byte
//! by byte in `FORMAT.md` (beside this crate's `Cargo.toml`), which the code follows.
//!
//! - [`LogStore`]: the contract, implemented by [`FileLog`] (segmented, checksummed
//!   files with an entry cache) and [`MemLog`] (memory only, the model for tests). Both
//!   pass [`conformance::run_all`].
//! - [`LogWriter`]: group commit. One thread owns a store behind a bounded queue, drains
//!   whatever is queued into one write and one `fdatasync`, and reports "durable up to
//!   (index, term)", which the driver feeds to `RaftNode::persisted`.
//! - [`vfs`]: the file-I/O seam, and [`sim`]: a simulated disk that injects faults and
//!   crashes through it.
//!
//! # Driving the log from the Raft core
//! For each action of `RaftNode::take_actions`, in order:
//! 1. `SaveHardState(hs)`: [`LogStore::save_hard_state`] (durable when it returns).
//! 2. `Append(entries)`: [`LogStore::append`] (a conflict truncates the stored suffix
//!    first), then [`LogStore::sync`] once for the whole batch and hand its
//!    `(index, term)` to `RaftNode::persisted`.
//! 3. `InstallSnapshot(s)`: [`LogStore::save_snapshot`] (it replaces the log when the log
//!    does not hold the snapshot's last entry), then `RaftNode::snapshot_installed`.
//! 4. `CompactLog(i)`: [`LogStore::compact`], after the snapshot at `i` was saved.
//!
//! ```
//! use bytes::Bytes;
//! use rkv_log::{LogStore, MemLog};
//! use rkv_raft::{Entry, Index, Payload, Term};
//!
//! let mut log = MemLog::new();
//! let entry = |index, term| Entry {
//!     term: Term(term),
//!     index: Index(index),
//!     payload: Payload::Command(Bytes::from_static(b"x=1")),
//! };
//! log.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]).unwrap();
//! // A new leader overwrites from index 2: the stored suffix is dropped first.
//! log.append(&[entry(2, 2)]).unwrap();
//! assert_eq!(log.sync().unwrap(), (Index(2), Term(2)));
//! ```

pub mod conformance;
mod error;
mod file;
pub mod format;
mod mem;
pub mod sim;
pub mod vfs;
mod writer;

use std::fmt;
use std::str::FromStr;

use rkv_raft::{Entry, HardState, Index, Recovered, Snapshot, SnapshotMeta, Term};

pub use error::{Actor, Corruption, LogError};
pub use file::{FileLog, FileLogOptions};
pub use mem::MemLog;
pub use writer::{BATCH_REQUESTS_MAX, LogWriter, Request, WriterError, WriterEvent};

/// The durable log and hard state of one Raft node.
///
/// Indexes: the log holds entries `first_index() ..= last_index()`; the snapshot covers
/// everything up to `snapshot_meta().index`, and `first_index() - 1 <= snapshot index <=
/// last_index()` always holds.
pub trait LogStore: Send {
    /// Buffers entries for appending. They must be consecutive, start at most at
    /// `last_index() + 1` and after the snapshot, and their terms must not decrease. If
    /// the first index is at or below `last_index()`, the stored entries from there on are
    /// dropped first (a conflict). Nothing is durable until [`LogStore::sync`] returns.
    fn append(&mut self, entries: &[Entry]) -> Result<(), LogError>;

    /// Makes everything appended so far durable (one write, one `fdatasync` under
    /// [`SyncPolicy::Always`]) and returns the index and term of the last entry.
    fn sync(&mut self) -> Result<(Index, Term), LogError>;

    /// Saves the term and vote; durable when this returns.
    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<(), LogError>;

    /// The last saved hard state.
    fn hard_state(&self) -> HardState;

    /// Entries `from .. to` (half-open), stopping before `max_bytes` (counted with
    /// `Entry::size_bytes`) would be exceeded, but always at least one if `from < to`.
    fn entries(&self, from: Index, to: Index, max_bytes: usize) -> Result<Vec<Entry>, LogError>;

    /// The term of the entry at `index`; the snapshot's term at the snapshot's index.
    fn term(&self, index: Index) -> Result<Term, LogError>;

    /// The first index still in the log.
    fn first_index(&self) -> Index;

    /// The last index in the log (the snapshot's index when the log is empty).
    fn last_index(&self) -> Index;

    /// Drops entries up to and including `up_to`, which the durable snapshot must cover.
    /// Storage is reclaimed by removing whole segments; live data is never rewritten.
    fn compact(&mut self, up_to: Index) -> Result<(), LogError>;

    /// Saves a snapshot durably and atomically, then removes older snapshots. When the
    /// log does not hold the snapshot's last entry with the snapshot's term (a follower
    /// installing the leader's snapshot), the whole log is replaced by it: afterwards the
    /// log is empty and starts after the snapshot. Otherwise the log is left as it is
    /// (call [`LogStore::compact`] to drop the covered prefix).
    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), LogError>;

    /// What the saved snapshot covers.
    fn snapshot_meta(&self) -> &SnapshotMeta;

    /// The saved snapshot, with its data.
    fn snapshot(&self) -> Result<Snapshot, LogError>;

    /// Closes the store (syncing what is buffered) and recovers it from its durable
    /// state, as a restart would ([`FileLog`]: from the directory). After a reopen the log
    /// starts right after the snapshot.
    fn reopen(self) -> Result<(Self, Recovered, RecoveryReport), LogError>
    where
        Self: Sized;
}

/// When the log calls `fdatasync`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Before reporting anything durable (the default, and the only safe choice).
    #[default]
    Always,
    /// Never. **Unsafe**: an acknowledged write can be lost by a power failure or a
    /// kernel crash. For benchmarks only.
    None,
}

impl SyncPolicy {
    /// A line to print at start-up; loud for [`SyncPolicy::None`].
    pub fn describe(&self) -> &'static str {
        match self {
            SyncPolicy::Always => "sync=always: fdatasync before anything is reported durable",
            SyncPolicy::None => {
                "WARNING: sync=none: the log NEVER calls fdatasync. Acknowledged writes WILL BE \
                 LOST on power failure or kernel crash. UNSAFE: for benchmarks only"
            }
        }
    }

    /// Whether this policy calls `fdatasync`.
    pub fn syncs(&self) -> bool {
        matches!(self, SyncPolicy::Always)
    }
}

impl FromStr for SyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(SyncPolicy::Always),
            "none" => Ok(SyncPolicy::None),
            other => Err(format!(
                "unknown sync policy {other:?} (expected always or none)"
            )),
        }
    }
}

/// A part of the log that recovery cut off, with where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// The file that was cut.
    pub file: String,
    /// The offset it was cut at.
    pub offset: u64,
    /// Bytes dropped from that file.
    pub bytes_dropped: u64,
    /// Later segment files removed as well (repair only).
    pub later_segments_removed: usize,
    /// What was wrong at the offset.
    pub corruption: Corruption,
}

/// What recovery found and did; print it at start-up. Nothing is dropped silently.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files replayed.
    pub segments_replayed: usize,
    /// Entries recovered after the snapshot.
    pub entries_recovered: usize,
    /// A torn tail (a crash during an unsynced write) that was truncated.
    pub torn_tail: Option<Truncation>,
    /// Corruption that was cut off because repair was asked for.
    pub repaired: Option<Truncation>,
    /// Files removed: temporary files, older snapshots, segments the snapshot covers.
    pub removed: Vec<String>,
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "recovered {} entries from {} segments",
            self.entries_recovered, self.segments_replayed
        )?;
        if let Some(t) = &self.torn_tail {
            write!(
                f,
                "; torn tail truncated: {} at offset {} ({} bytes: {})",
                t.file, t.offset, t.bytes_dropped, t.corruption
            )?;
        }
        if let Some(t) = &self.repaired {
            write!(
                f,
                "; REPAIRED corruption: {} cut at offset {} ({} bytes and {} later segments \
                 dropped: {})",
                t.file, t.offset, t.bytes_dropped, t.later_segments_removed, t.corruption
            )?;
        }
        if !self.removed.is_empty() {
            write!(f, "; removed {}", self.removed.join(", "))?;
        }
        Ok(())
    }
}

/// The checks every store makes before an append, so that both refuse the same inputs.
/// `term_at` gives the term of an index in `snapshot.index ..= last`.
pub(crate) fn check_append(
    entries: &[Entry],
    snapshot: &SnapshotMeta,
    last: Index,
    term_at: impl Fn(Index) -> Term,
) -> Result<(), LogError> {
    let Some(head) = entries.first() else {
        return Ok(());
    };
    if head.index <= snapshot.index {
        return Err(LogError::BelowSnapshot {
            index: head.index,
            snapshot: snapshot.index,
        });
    }
    if head.index > last.next() {
        return Err(LogError::Gap {
            index: head.index,
            last,
        });
    }
    let mut expected = head.index;
    let mut previous = term_at(head.index.prev());
    for entry in entries {
        if entry.index != expected {
            return Err(LogError::NotContiguous {
                index: entry.index,
                expected,
            });
        }
        if entry.term < previous {
            return Err(LogError::TermRegression {
                index: entry.index,
                term: entry.term,
                previous,
            });
        }
        let bytes = format::record_len(entry) as u64;
        let max_bytes = u64::from(format::RECORD_LENGTH_MAX) + 8;
        if bytes > max_bytes {
            return Err(LogError::EntryTooLarge {
                index: entry.index,
                bytes,
                max_bytes,
            });
        }
        expected = expected.next();
        previous = entry.term;
    }
    Ok(())
}

/// Checks the arguments of [`LogStore::entries`]; returns the effective end.
pub(crate) fn check_range(
    from: Index,
    to: Index,
    first: Index,
    last: Index,
) -> Result<Index, LogError> {
    if from < first {
        return Err(LogError::Compacted { index: from, first });
    }
    if to > last.next() {
        return Err(LogError::Unavailable {
            index: to.prev(),
            last,
        });
    }
    Ok(to.max(from))
}
