//! Errors, typed by who can act on them.
//!
//! Exists so that a caller can branch on the error instead of parsing a message: a bad
//! argument is the caller's bug, an I/O error is the environment's (the store is then
//! poisoned and must be reopened), and corruption needs the operator (the error names the
//! file and the offset).

use std::fmt;
use std::io;

use rkv_raft::{Index, Term};

/// Who can act on an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    /// The caller passed something the store refuses; fix the call.
    Caller,
    /// The disk or the OS failed; the store is poisoned: reopen it (recovery decides what
    /// survived), and check the machine if it happens again.
    Environment,
    /// Data on disk is damaged; an operator must look (or reopen with repair).
    Operator,
}

/// What is wrong with bytes that failed to decode.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Corruption {
    /// The bytes end before the structure does.
    Truncated {
        /// Bytes needed from the structure's start.
        needed: u64,
        /// Bytes available from the structure's start.
        available: u64,
    },
    /// The magic number is not the expected one.
    BadMagic,
    /// A format version this build does not read.
    UnsupportedVersion(u32),
    /// The checksum does not match the contents.
    BadChecksum {
        /// The checksum stored in the file.
        stored: u32,
        /// The checksum computed over the contents.
        computed: u32,
    },
    /// A length field outside its allowed range.
    BadLength(u64),
    /// An unknown record type.
    BadType(u8),
    /// A record body that does not match its type.
    BadBody,
    /// A record whose index is not the next one expected.
    IndexOutOfSequence {
        /// The index replay expected.
        expected: Index,
        /// The index found.
        found: Index,
    },
    /// A record whose term is below the previous entry's.
    TermRegression {
        /// The index of the record.
        index: Index,
        /// Its term.
        term: Term,
        /// The previous entry's term.
        previous: Term,
    },
    /// A segment whose first index leaves a gap after the entries before it.
    Gap {
        /// The first index the segment may start at, at most.
        expected_at_most: Index,
        /// The segment's first index.
        found: Index,
    },
    /// A file's contents disagree with its name.
    NameMismatch,
    /// The hard state file holds no valid slot.
    NoValidHardState,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::Truncated { needed, available } => {
                write!(f, "truncated: {needed} bytes needed, {available} available")
            }
            Corruption::BadMagic => write!(f, "bad magic number"),
            Corruption::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            Corruption::BadChecksum { stored, computed } => {
                write!(
                    f,
                    "bad CRC32C: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            Corruption::BadLength(len) => write!(f, "length {len} out of range"),
            Corruption::BadType(t) => write!(f, "unknown record type {t}"),
            Corruption::BadBody => write!(f, "record body does not match its type"),
            Corruption::IndexOutOfSequence { expected, found } => {
                write!(f, "index {found} where {expected} was expected")
            }
            Corruption::TermRegression {
                index,
                term,
                previous,
            } => write!(
                f,
                "entry {index} has term {term}, below the previous {previous}"
            ),
            Corruption::Gap {
                expected_at_most,
                found,
            } => write!(
                f,
                "segment starts at {found}, leaving a gap after {expected_at_most}"
            ),
            Corruption::NameMismatch => write!(f, "contents disagree with the file name"),
            Corruption::NoValidHardState => write!(f, "no valid hard state slot"),
        }
    }
}

/// Every error of the log stores.
#[derive(Debug)]
#[non_exhaustive]
pub enum LogError {
    /// The index is behind the log's first index (compacted into a snapshot).
    Compacted {
        /// The index asked for.
        index: Index,
        /// The first index still in the log.
        first: Index,
    },
    /// The index is beyond the last entry.
    Unavailable {
        /// The index asked for.
        index: Index,
        /// The last index in the log.
        last: Index,
    },
    /// An append whose first index is past `last + 1`.
    Gap {
        /// The first index of the append.
        index: Index,
        /// The last index in the log.
        last: Index,
    },
    /// Entries of one append whose indexes are not consecutive.
    NotContiguous {
        /// The index found.
        index: Index,
        /// The index expected.
        expected: Index,
    },
    /// An entry whose term is below the term of the entry before it.
    TermRegression {
        /// The entry's index.
        index: Index,
        /// The entry's term.
        term: Term,
        /// The previous entry's term.
        previous: Term,
    },
    /// An append that would overwrite entries covered by the snapshot (they are committed).
    BelowSnapshot {
        /// The first index of the append.
        index: Index,
        /// The snapshot's index.
        snapshot: Index,
    },
    /// An entry whose encoded record would exceed the format's limit.
    EntryTooLarge {
        /// The entry's index.
        index: Index,
        /// Its encoded size.
        bytes: u64,
        /// The largest record the format allows.
        max_bytes: u64,
    },
    /// A compaction past the durable snapshot.
    CompactBeyondSnapshot {
        /// The index asked for.
        up_to: Index,
        /// The snapshot's index.
        snapshot: Index,
    },
    /// A snapshot older than the one already saved.
    StaleSnapshot {
        /// The new snapshot's index.
        index: Index,
        /// The saved snapshot's index.
        current: Index,
    },
    /// An I/O operation failed. The store is poisoned from then on.
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file (or directory) concerned.
        file: String,
        /// The OS error.
        source: io::Error,
    },
    /// An earlier I/O error left the files in an unknown state; reopen the store.
    Poisoned,
    /// Damaged data on disk, refused (see FORMAT.md §5).
    Corrupt {
        /// The file.
        file: String,
        /// Byte offset of the damaged structure in the file.
        offset: u64,
        /// What is wrong.
        corruption: Corruption,
    },
}

impl LogError {
    /// Who can act on this error.
    pub fn actor(&self) -> Actor {
        match self {
            LogError::Compacted { .. }
            | LogError::Unavailable { .. }
            | LogError::Gap { .. }
            | LogError::NotContiguous { .. }
            | LogError::TermRegression { .. }
            | LogError::BelowSnapshot { .. }
            | LogError::EntryTooLarge { .. }
            | LogError::CompactBeyondSnapshot { .. }
            | LogError::StaleSnapshot { .. } => Actor::Caller,
            LogError::Io { .. } | LogError::Poisoned => Actor::Environment,
            LogError::Corrupt { .. } => Actor::Operator,
        }
    }

    pub(crate) fn io(operation: &'static str, file: impl Into<String>, source: io::Error) -> Self {
        LogError::Io {
            operation,
            file: file.into(),
            source,
        }
    }
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Compacted { index, first } => {
                write!(f, "entry {index} is compacted (the log starts at {first})")
            }
            LogError::Unavailable { index, last } => {
                write!(f, "entry {index} is beyond the last entry {last}")
            }
            LogError::Gap { index, last } => {
                write!(
                    f,
                    "append at {index} leaves a gap after the last entry {last}"
                )
            }
            LogError::NotContiguous { index, expected } => {
                write!(f, "appended entry {index} where {expected} was expected")
            }
            LogError::TermRegression {
                index,
                term,
                previous,
            } => write!(
                f,
                "entry {index} has term {term}, below the previous {previous}"
            ),
            LogError::BelowSnapshot { index, snapshot } => write!(
                f,
                "append at {index} would overwrite entries covered by the snapshot at {snapshot}"
            ),
            LogError::EntryTooLarge {
                index,
                bytes,
                max_bytes,
            } => write!(
                f,
                "entry {index} encodes to {bytes} bytes, over the limit {max_bytes}"
            ),
            LogError::CompactBeyondSnapshot { up_to, snapshot } => write!(
                f,
                "cannot compact up to {up_to}: the durable snapshot only covers {snapshot}"
            ),
            LogError::StaleSnapshot { index, current } => write!(
                f,
                "snapshot at {index} is older than the saved snapshot at {current}"
            ),
            LogError::Io {
                operation,
                file,
                source,
            } => write!(f, "I/O error during {operation} on {file}: {source}"),
            LogError::Poisoned => write!(
                f,
                "an earlier I/O error left the log in an unknown state; reopen it"
            ),
            LogError::Corrupt {
                file,
                offset,
                corruption,
            } => write!(
                f,
                "corrupt log data in {file} at offset {offset}: {corruption} \
                 (refusing to start; an operator may reopen with repair, which drops \
                 everything from this point on)"
            ),
        }
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
