//! The safety properties of the Raft paper (figure 3), checked after every event.
//!
//! Each check names its section of the paper. They see the cluster only from outside:
//! through the actions nodes emit and the state they report.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

use rkv_raft::{Entry, Index, NodeId, RaftNode, Role, Term};

/// Which property broke, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The property, with its paper section.
    pub property: &'static str,
    /// What was seen.
    pub detail: String,
}

fn violation(property: &'static str, detail: String) -> Result<(), Violation> {
    Err(Violation { property, detail })
}

fn entry_hash(entry: &Entry) -> u64 {
    // DefaultHasher::new() has fixed keys: the same entry hashes the same in every run.
    let mut h = DefaultHasher::new();
    entry.payload.hash(&mut h);
    h.finish()
}

/// Everything the checks remember across events.
#[derive(Debug, Default)]
pub struct Invariants {
    /// term -> the leader of that term.
    leaders: BTreeMap<Term, NodeId>,
    /// (node, term) -> (last index, its term) when last seen leading.
    leader_logs: HashMap<(NodeId, Term), (Index, Term)>,
    /// (index, term) -> (payload hash, term of the entry before it).
    entries: HashMap<(Index, Term), (u64, Option<Term>)>,
    /// index -> (term, payload hash) of every entry any node applied.
    applied: BTreeMap<Index, (Term, u64)>,
    /// index -> the lowest term in which any node applied it: an upper bound on the term
    /// in which it committed (the committing leader applies it in its own term).
    applied_in_term: BTreeMap<Index, Term>,
    /// Nodes known to lead now, with their term, to spot new leaders.
    leading: BTreeMap<NodeId, Term>,
}

impl Invariants {
    /// §5.2 Election Safety: at most one leader per term. §5.3 Leader Append-Only: a
    /// leader never overwrites or deletes its entries. §5.4 Leader Completeness: a new
    /// leader holds every applied (hence committed) entry.
    pub fn check_node(&mut self, node: &RaftNode) -> Result<(), Violation> {
        let id = node.id();
        if node.role() != Role::Leader {
            self.leading.remove(&id);
            return Ok(());
        }
        let term = node.term();
        let leader = *self.leaders.entry(term).or_insert(id);
        if leader != id {
            return violation(
                "election safety (§5.2)",
                format!("{leader} and {id} both lead term {term}"),
            );
        }
        let last = node.last_index();
        if let Some((prev_last, prev_term)) = self.leader_logs.get(&(id, term)).copied() {
            let still_there =
                prev_last <= node.snapshot_index() || node.entry_term(prev_last) == Some(prev_term);
            if last < prev_last || !still_there {
                return violation(
                    "leader append-only (§5.3)",
                    format!(
                        "{id} leading {term}: log ended at {prev_last} ({prev_term}), now ends at {last}"
                    ),
                );
            }
        }
        self.leader_logs.insert(
            (id, term),
            (last, node.entry_term(last).unwrap_or_default()),
        );
        if self.leading.insert(id, term) != Some(term) {
            self.check_completeness(node)?;
        }
        Ok(())
    }

    fn check_completeness(&self, node: &RaftNode) -> Result<(), Violation> {
        for (index, (term, _)) in self.applied.range(node.snapshot_index().next()..) {
            // Only entries committed in an earlier term bind this leader: one elected by
            // votes cast before the entry committed may legitimately lack it.
            let committed_in = self.applied_in_term.get(index).copied().unwrap_or_default();
            if committed_in >= node.term() {
                continue;
            }
            if node.entry_term(*index) != Some(*term) {
                return violation(
                    "leader completeness (§5.4)",
                    format!(
                        "{} became leader of {} without committed entry {index} ({term}); it has {:?}",
                        node.id(),
                        node.term(),
                        node.entry_term(*index)
                    ),
                );
            }
        }
        Ok(())
    }

    /// §5.3 Log Matching: entries with the same index and term carry the same command and
    /// follow the same entry. Checked on every append a node hands to its disk.
    pub fn check_append(&mut self, node: &RaftNode, entries: &[Entry]) -> Result<(), Violation> {
        let mut prev_in_batch: Option<&Entry> = None;
        for entry in entries {
            let prev_term = match prev_in_batch {
                Some(prev) => Some(prev.term),
                None => node.entry_term(entry.index.prev()),
            };
            prev_in_batch = Some(entry);
            let seen = (entry_hash(entry), prev_term);
            match self.entries.get(&(entry.index, entry.term)) {
                None => {
                    self.entries.insert((entry.index, entry.term), seen);
                }
                Some((hash, prev)) => {
                    let prev_differs = prev.is_some() && prev_term.is_some() && *prev != prev_term;
                    if *hash != seen.0 || prev_differs {
                        return violation(
                            "log matching (§5.3)",
                            format!(
                                "{} appended a different entry at {} in {}",
                                node.id(),
                                entry.index,
                                entry.term
                            ),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// §5.4.3 State Machine Safety: no two nodes apply different entries at one index.
    pub fn check_apply(
        &mut self,
        node: NodeId,
        node_term: Term,
        entries: &[Entry],
    ) -> Result<(), Violation> {
        for entry in entries {
            let lowest = self.applied_in_term.entry(entry.index).or_insert(node_term);
            *lowest = (*lowest).min(node_term);
            let seen = (entry.term, entry_hash(entry));
            match self.applied.get(&entry.index) {
                None => {
                    self.applied.insert(entry.index, seen);
                }
                Some(first) if *first != seen => {
                    return violation(
                        "state machine safety (§5.4.3)",
                        format!(
                            "{node} applied {:?} at {} but {} was applied there before",
                            entry.term, entry.index, first.0
                        ),
                    );
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The highest index any node applied.
    pub fn applied_max(&self) -> Index {
        self.applied.keys().next_back().copied().unwrap_or_default()
    }
}
