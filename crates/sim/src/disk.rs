//! A simulated disk. What was synced survives a crash; of what was written but not synced,
//! a crash keeps a random prefix, whose last write may be torn (only some of its entries
//! reach the platter), like a real append-only file after power loss.

use rkv_raft::{Entry, HardState, Index, Recovered, Snapshot, Term};

use crate::rng::Rng;

/// What a node's disk holds.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    /// Term and vote (the driver syncs them at once, as the contract requires).
    pub hard_state: HardState,
    /// The newest durable snapshot.
    pub snapshot: Snapshot,
    /// Durable log entries after the snapshot.
    pub entries: Vec<Entry>,
    /// Appends written but not yet synced, oldest first.
    pub unsynced: Vec<Vec<Entry>>,
}

/// A driver broke the log's contract (an append that leaves a hole).
#[derive(Debug)]
pub struct HoleError {
    /// The index expected next.
    pub expected: Index,
    /// The index written.
    pub got: Index,
}

impl Disk {
    /// A fresh disk holding the given starting snapshot.
    pub fn new(snapshot: Snapshot) -> Disk {
        Disk {
            snapshot,
            ..Disk::default()
        }
    }

    /// Applies one append to the durable image: drops overwritten entries, skips ones a
    /// snapshot already covers.
    fn apply_append(&mut self, entries: &[Entry]) -> Result<(), HoleError> {
        let snapshot_index = self.snapshot.meta.index;
        for entry in entries.iter().filter(|e| e.index > snapshot_index) {
            let offset =
                usize::try_from(entry.index.0 - snapshot_index.0 - 1).unwrap_or(usize::MAX);
            if offset > self.entries.len() {
                let expected = Index(snapshot_index.0 + self.entries.len() as u64 + 1);
                return Err(HoleError {
                    expected,
                    got: entry.index,
                });
            }
            self.entries.truncate(offset);
            self.entries.push(entry.clone());
        }
        Ok(())
    }

    /// Makes every written append durable; returns the durable log's last (index, term).
    pub fn sync(&mut self) -> Result<(Index, Term), HoleError> {
        for append in std::mem::take(&mut self.unsynced) {
            self.apply_append(&append)?;
        }
        Ok(self.last())
    }

    /// The durable log's last (index, term).
    pub fn last(&self) -> (Index, Term) {
        self.entries
            .last()
            .map_or((self.snapshot.meta.index, self.snapshot.meta.term), |e| {
                (e.index, e.term)
            })
    }

    /// Drops entries up to `index` (covered by the durable snapshot).
    pub fn compact(&mut self, index: Index) {
        self.entries.retain(|e| e.index > index);
    }

    /// A crash: keep a random prefix of the unsynced writes, the last one possibly torn.
    pub fn crash(&mut self, rng: &mut Rng) -> Result<(), HoleError> {
        let unsynced = std::mem::take(&mut self.unsynced);
        let kept = rng.range(0, unsynced.len() as u64 + 1) as usize;
        for (i, append) in unsynced.iter().enumerate().take(kept) {
            let torn = i + 1 == kept && rng.chance(0.5);
            let len = if torn {
                rng.range(0, append.len() as u64) as usize
            } else {
                append.len()
            };
            self.apply_append(&append[..len])?;
        }
        Ok(())
    }

    /// What a restarting node reads back.
    pub fn recover(&self) -> Recovered {
        Recovered {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.clone(),
        }
    }
}
