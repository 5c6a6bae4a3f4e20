//! The core's in-memory view of the log: the entries after the latest snapshot, plus the
//! commit, applied and persisted marks and the membership history.
//!
//! The durable copy is the driver's; this view is what the protocol reasons about. The
//! driver learns of every change through `Append`, `InstallSnapshot` and `CompactLog`
//! actions and reports durability back with `persisted`.

use std::collections::VecDeque;

use crate::types::{Entry, Index, Membership, Payload, SnapshotMeta, Term};

/// The log, as the core sees it.
#[derive(Debug)]
pub(crate) struct RaftLog {
    /// The prefix that a snapshot replaced.
    pub snapshot: SnapshotMeta,
    /// Entries `snapshot.index + 1 ..= last_index()`.
    entries: VecDeque<Entry>,
    /// Highest index known to be committed.
    pub commit: Index,
    /// Highest index handed to the driver to apply.
    pub applied: Index,
    /// Highest index the driver reported durable.
    pub persisted: Index,
    /// Entries from here on have not been handed to the driver in an `Append` action yet.
    pub unemitted_from: Index,
    /// Membership entries in the log, oldest first, as (index, membership).
    configs: Vec<(Index, Membership)>,
}

impl RaftLog {
    /// A log resumed from a snapshot and the durable entries after it.
    pub fn new(snapshot: SnapshotMeta, entries: Vec<Entry>) -> RaftLog {
        let mut log = RaftLog {
            commit: snapshot.index,
            applied: snapshot.index,
            persisted: snapshot.index,
            unemitted_from: snapshot.index.next(),
            snapshot,
            entries: VecDeque::new(),
            configs: Vec::new(),
        };
        let mut expected = log.snapshot.index.next();
        for entry in entries {
            // Gate: recovered entries must be contiguous; anything after a gap is unusable.
            if entry.index != expected {
                break;
            }
            expected = expected.next();
            log.push(entry);
        }
        log.persisted = log.last_index();
        log.unemitted_from = log.last_index().next();
        log
    }

    /// Index of the last entry (the snapshot's index if there are none).
    pub fn last_index(&self) -> Index {
        Index(self.snapshot.index.0 + self.entries.len() as u64)
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot.term, |e| e.term)
    }

    /// Index of the first entry still held (snapshot index + 1).
    pub fn first_index(&self) -> Index {
        self.snapshot.index.next()
    }

    /// Term of the entry at `index`: `None` if it was compacted away or does not exist.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// The entry at `index`, if held.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        if index <= self.snapshot.index {
            return None;
        }
        let offset = usize::try_from(index.0 - self.snapshot.index.0 - 1).ok()?;
        self.entries.get(offset)
    }

    /// Entries `from ..= to`, at most `max_count` of them and at most `max_bytes` (but at
    /// least one if any is in range).
    pub fn slice(&self, from: Index, to: Index, max_count: usize, max_bytes: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut index = from;
        while index <= to && out.len() < max_count {
            let Some(entry) = self.entry(index) else {
                break;
            };
            bytes += entry.size_bytes();
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push(entry.clone());
            index = index.next();
        }
        out
    }

    /// Appends one entry at `last_index() + 1`.
    pub fn push(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index().next());
        if let Payload::Membership(m) = &entry.payload {
            self.configs.push((entry.index, m.clone()));
        }
        self.entries.push_back(entry);
    }

    /// Removes every entry from `index` on. Never called on committed entries.
    pub fn truncate_from(&mut self, index: Index) {
        debug_assert!(index > self.commit, "truncating committed entry {index}");
        let keep = usize::try_from(index.0.saturating_sub(self.first_index().0)).unwrap_or(0);
        self.entries.truncate(keep);
        self.configs.retain(|(i, _)| *i < index);
        if self.persisted >= index {
            self.persisted = index.prev();
        }
        if self.unemitted_from > index {
            self.unemitted_from = index;
        }
    }

    /// Removes the entries up to and including `meta.index`, which a snapshot now covers,
    /// and returns them.
    pub fn compact(&mut self, meta: SnapshotMeta) -> VecDeque<Entry> {
        let drop = usize::try_from(meta.index.0.saturating_sub(self.snapshot.index.0))
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        // Split rather than drain: only the few entries after the snapshot are moved,
        // and the compacted ones go back to the caller whole.
        let kept = self.entries.split_off(drop);
        let compacted = std::mem::replace(&mut self.entries, kept);
        self.configs.retain(|(i, _)| *i > meta.index);
        self.snapshot = meta;
        compacted
    }

    /// Replaces the whole log by a snapshot received from the leader; returns the entries
    /// it held.
    pub fn reset_to(&mut self, meta: SnapshotMeta) -> VecDeque<Entry> {
        let dropped = std::mem::take(&mut self.entries);
        self.configs.clear();
        self.commit = meta.index;
        self.applied = meta.index;
        self.persisted = meta.index;
        self.unemitted_from = meta.index.next();
        self.snapshot = meta;
        dropped
    }

    /// The membership in force: the latest one in the log, committed or not.
    pub fn membership(&self) -> &Membership {
        self.configs
            .last()
            .map_or(&self.snapshot.membership, |(_, m)| m)
    }

    /// Index of the latest membership entry (the snapshot's index if none is in the log).
    pub fn membership_index(&self) -> Index {
        self.configs.last().map_or(self.snapshot.index, |(i, _)| *i)
    }

    /// The membership in force at `index`.
    pub fn membership_at(&self, index: Index) -> Membership {
        self.configs
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or_else(|| self.snapshot.membership.clone(), |(_, m)| m.clone())
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as up to date as this one
    /// (Raft paper §5.4.1).
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Entries that are committed but not yet handed out for applying, and marks them handed out.
    pub fn take_committed(&mut self) -> Vec<Entry> {
        if self.commit <= self.applied {
            return Vec::new();
        }
        let from = self.applied.next();
        let out = self.slice(from, self.commit, usize::MAX, usize::MAX);
        if let Some(last) = out.last() {
            self.applied = last.index;
        }
        out
    }

    /// Entries not yet handed to the driver for persistence, and marks them handed out.
    pub fn take_unemitted(&mut self) -> Vec<Entry> {
        if self.unemitted_from > self.last_index() {
            return Vec::new();
        }
        let out = self.slice(
            self.unemitted_from,
            self.last_index(),
            usize::MAX,
            usize::MAX,
        );
        self.unemitted_from = self.last_index().next();
        out
    }

    /// The first index of the term of the entry at `index`, searching back no further than
    /// the first held entry (for the conflict hint).
    pub fn first_index_of_term_at(&self, index: Index) -> Index {
        let Some(term) = self.term(index) else {
            return index;
        };
        let mut first = index;
        while first > self.first_index() && self.term(first.prev()) == Some(term) {
            first = first.prev();
        }
        first
    }

    /// The last index whose entry has term `term`, if any entry of that term is held.
    pub fn last_index_of_term(&self, term: Term) -> Option<Index> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.term == term)
            .map(|e| e.index)
    }

    /// Bytes of the entries after the commit index.
    pub fn uncommitted_bytes(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.index > self.commit)
            .map(Entry::size_bytes)
            .sum()
    }
}
