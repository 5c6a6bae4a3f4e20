//! [`MemLog`]: the log in memory.
//!
//! Exists as the reference model that the property tests compare [`crate::FileLog`]
//! against, and as a store for tests and simulations that need no disk. It is as simple
//! as the contract allows, and passes the same conformance suite.

use std::collections::VecDeque;

use rkv_raft::{Entry, HardState, Index, Recovered, Snapshot, SnapshotMeta, Term};

use crate::{LogError, LogStore, RecoveryReport, check_append, check_range};

/// The log, in memory. "Durable" means "in this value": [`LogStore::reopen`] keeps
/// everything, as a file log reopened after a clean `sync` does.
#[derive(Clone, Debug, Default)]
pub struct MemLog {
    /// Entries `first ..= last`.
    entries: VecDeque<Entry>,
    first: Index,
    hard_state: HardState,
    snapshot: Snapshot,
}

impl MemLog {
    /// An empty log with no snapshot.
    pub fn new() -> MemLog {
        MemLog {
            first: Index(1),
            ..MemLog::default()
        }
    }

    fn position(&self, index: Index) -> usize {
        (index.0 - self.first.0) as usize
    }

    fn last_term(&self) -> Term {
        self.entries
            .back()
            .map_or(self.snapshot.meta.term, |e| e.term)
    }
}

impl LogStore for MemLog {
    fn append(&mut self, entries: &[Entry]) -> Result<(), LogError> {
        check_append(entries, &self.snapshot.meta, self.last_index(), |i| {
            self.term(i).unwrap_or_default()
        })?;
        let Some(head) = entries.first() else {
            return Ok(());
        };
        let keep = self.position(head.index);
        self.entries.truncate(keep);
        self.entries.extend(entries.iter().cloned());
        Ok(())
    }

    fn sync(&mut self) -> Result<(Index, Term), LogError> {
        Ok((self.last_index(), self.last_term()))
    }

    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<(), LogError> {
        self.hard_state = *hard_state;
        Ok(())
    }

    fn hard_state(&self) -> HardState {
        self.hard_state
    }

    fn entries(&self, from: Index, to: Index, max_bytes: usize) -> Result<Vec<Entry>, LogError> {
        let to = check_range(from, to, self.first, self.last_index())?;
        let mut result = Vec::new();
        let mut bytes = 0usize;
        for entry in self.entries.range(self.position(from)..self.position(to)) {
            let size = entry.size_bytes();
            if !result.is_empty() && bytes.saturating_add(size) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(size);
            result.push(entry.clone());
        }
        Ok(result)
    }

    fn term(&self, index: Index) -> Result<Term, LogError> {
        if index == self.snapshot.meta.index {
            return Ok(self.snapshot.meta.term);
        }
        if index < self.first {
            return Err(LogError::Compacted {
                index,
                first: self.first,
            });
        }
        let last = self.last_index();
        if index > last {
            return Err(LogError::Unavailable { index, last });
        }
        Ok(self.entries[self.position(index)].term)
    }

    fn first_index(&self) -> Index {
        self.first
    }

    fn last_index(&self) -> Index {
        Index(self.first.0 - 1 + self.entries.len() as u64)
    }

    fn compact(&mut self, up_to: Index) -> Result<(), LogError> {
        let snapshot = self.snapshot.meta.index;
        if up_to > snapshot {
            return Err(LogError::CompactBeyondSnapshot { up_to, snapshot });
        }
        if up_to < self.first {
            return Ok(());
        }
        let count = self.position(up_to) + 1;
        self.entries.drain(..count);
        self.first = up_to.next();
        Ok(())
    }

    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), LogError> {
        let meta = &snapshot.meta;
        let current = self.snapshot.meta.index;
        if meta.index < current {
            return Err(LogError::StaleSnapshot {
                index: meta.index,
                current,
            });
        }
        let matching = self.term(meta.index).ok() == Some(meta.term);
        if !matching {
            self.entries.clear();
            self.first = meta.index.next();
        }
        self.snapshot = snapshot.clone();
        Ok(())
    }

    fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.snapshot.meta
    }

    fn snapshot(&self) -> Result<Snapshot, LogError> {
        Ok(self.snapshot.clone())
    }

    fn reopen(mut self) -> Result<(Self, Recovered, RecoveryReport), LogError> {
        let start = self.snapshot.meta.index.next();
        if start > self.first {
            let count = self.position(start);
            self.entries.drain(..count);
            self.first = start;
        }
        let recovered = Recovered {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.iter().cloned().collect(),
        };
        let report = RecoveryReport {
            entries_recovered: self.entries.len(),
            ..RecoveryReport::default()
        };
        Ok((self, recovered, report))
    }
}
