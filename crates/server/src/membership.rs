//! Growing a cluster by address: a server asks any member to let it join, the leader
//! records its address and adds it as a learner, and a steward on every node promotes
//! caught-up learners that are meant to vote.
//!
//! # The join, step by step (on the leader)
//! 1. The record (name, peer and client address, role, incarnation) is checked; a
//!    different server already recorded under the same id is refused
//!    ([`JoinError::NameTaken`]), and so is the same name with another incarnation while
//!    the id is a member ([`JoinError::AnotherIncarnation`]): that is a wiped directory
//!    or a second process, which must not take over the member's identity (it has
//!    neither its log nor its vote). The operator removes the old member first
//!    ([`Node::remove_server`]). Joins on one node run one at a time, so two joins of
//!    one id cannot both pass this check.
//! 2. A `SetPeer` entry carrying the record is proposed and applied: from then on every
//!    replica that applies the log (and so every future leader) can reach the server
//!    (see [`crate::peers`]).
//! 3. If the server is not a member yet, `AddLearner` is proposed and applied. A learner
//!    receives the log but does not vote, so a slow newcomer never stalls commits.
//! 4. The answer carries the cluster id and the whole address book, which the new
//!    server needs before it can answer the leader (its transport must know where to
//!    send, and it must present the right cluster id in its handshake).
//!
//! A join that is repeated by the same incarnation (a retry, or a restarted server with
//! a new address, which sends one on its own) only updates the record; the leader dials
//! a member's new address at once, before the record commits. A follower answers [`JoinError::NotLeader`] with the leader's id
//! and client address, so front ends forward the request there.
//!
//! # Promotion
//! [`spawn_steward`] runs on every node and acts only while the node leads, so it
//! survives leader changes: every learner whose record says [`PeerRole::Voter`] is
//! promoted once its match index (the leader's record of what it acknowledged) is at
//! least the leader's commit index ([`is_caught_up`]: proof that the two can talk both
//! ways; the core's own check, a bounded lag, would accept a learner that never
//! answered), trying again on the next round otherwise. A learner that is not ready is
//! skipped, never waited for: the next one may be promoted in the same round. (The core
//! reports no "last heard" time, so a learner that caught up and then died before the
//! next commit can still be promoted; a write committed in between prevents it.) A join is refused (retry) until
//! the leader's own address is in the book, for the same reason. Learners recorded as
//! [`PeerRole::Learner`] (raft-demo's logger) stay learners. The steward also records
//! the node's own address when it leads and the book lacks it, which is how the first
//! server of a cluster gets into the book.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rkv_engine::{EngineError, ReadLevel};
use rkv_kv::{Command, Output, PeerRecord, PeerRole};
use rkv_raft::{MembershipChange, NodeId, Role};

use crate::service::{Node, PROPOSAL_TIMEOUT, now_ms};

/// Joins on this process run one at a time (see the module docs, step 1).
static JOINS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// How often the steward looks at the membership.
pub const STEWARD_PERIOD: Duration = Duration::from_millis(100);

/// A server's Raft id from its name: FNV-1a 64 of the name's bytes (never 0). Every
/// node derives the same id from the same name, so names are all a user ever types.
pub fn node_id_for(name: &str) -> NodeId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    NodeId(hash.max(1))
}

/// What a successful join returns to the new server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    /// The cluster's id (the new server's transport presents it to its peers).
    pub cluster_id: u64,
    /// The leader that added it.
    pub leader: NodeId,
    /// The whole address book, the new server's own record included.
    pub peers: BTreeMap<u64, PeerRecord>,
}

/// Why a join did not happen, by who can act on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinError {
    /// The caller must fix the request (empty name, field too long, ...).
    Invalid(String),
    /// Another server already has this id: the new server must pick another name.
    NameTaken {
        /// The id both names map to.
        node_id: NodeId,
        /// The name recorded under it.
        recorded: String,
    },
    /// The id is a member under another incarnation (a wiped data directory, or another
    /// process started with the same name): remove the old member first, then join.
    AnotherIncarnation {
        /// The member's id.
        node_id: NodeId,
        /// Its name.
        name: String,
    },
    /// Ask the leader instead (its client address, if it registered one).
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
        /// Its client address, if known.
        leader_address: Option<String>,
    },
    /// The cluster cannot do it now (no quorum, busy, another change in flight): retry.
    Unavailable(String),
    /// The request was proposed but its fate is unknown: retrying is safe (joins are
    /// idempotent).
    Unknown(String),
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinError::Invalid(why) => write!(f, "invalid join request: {why}"),
            JoinError::NameTaken { node_id, recorded } => write!(
                f,
                "the name maps to id {node_id}, which server {recorded:?} already has: choose another name"
            ),
            JoinError::AnotherIncarnation { node_id, name } => write!(
                f,
                "server {name:?} (id {node_id}) is already a member, and this is not that member \
                 (another incarnation: its data directory was wiped or replaced, or another \
                 process uses the name); remove the old member first (POST /remove \
                 {{\"id\": {name:?}}}), then join again"
            ),
            JoinError::NotLeader {
                leader: Some(leader),
                leader_address,
            } => write!(
                f,
                "not the leader; the leader is {leader} at {}",
                leader_address.as_deref().unwrap_or("an unknown address")
            ),
            JoinError::NotLeader { leader: None, .. } => {
                write!(f, "not the leader, and no leader is known yet: retry")
            }
            JoinError::Unavailable(why) => write!(f, "cannot join now: {why}; retry"),
            JoinError::Unknown(why) => write!(f, "join outcome unknown: {why}; retry"),
        }
    }
}

impl std::error::Error for JoinError {}

impl Node {
    fn join_error(&self, error: EngineError) -> JoinError {
        match error {
            EngineError::NotLeader { leader_hint } => JoinError::NotLeader {
                leader: leader_hint,
                leader_address: leader_hint.and_then(|l| self.address_of(l)),
            },
            EngineError::Invalid(why) => JoinError::Invalid(why),
            EngineError::OutcomeUnknown(why) => JoinError::Unknown(why),
            other => JoinError::Unavailable(other.to_string()),
        }
    }

    /// The address book as this replica has applied it.
    pub async fn peers(&self) -> Result<BTreeMap<u64, PeerRecord>, EngineError> {
        self.engine
            .read(ReadLevel::Stale, |m| m.kv.peers().clone())
            .await
    }

    /// Proposes `SetPeer` and waits for it to apply.
    async fn set_peer(&self, node_id: NodeId, record: &PeerRecord) -> Result<(), JoinError> {
        let command = Command::SetPeer {
            now_ms: now_ms(),
            node_id: node_id.0,
            record: Some(record.clone()),
        };
        let proposed = self.engine.propose(Bytes::from(command.encode()));
        match tokio::time::timeout(PROPOSAL_TIMEOUT, proposed).await {
            Err(_) => Err(JoinError::Unknown(format!(
                "the address was not applied within {PROPOSAL_TIMEOUT:?}"
            ))),
            Ok(Err(e)) => Err(self.join_error(e)),
            Ok(Ok(applied)) => match applied.first().map(|a| &a.output) {
                Some(Output::PeerSet { .. }) => Ok(()),
                other => Err(JoinError::Invalid(format!("refused: {other:?}"))),
            },
        }
    }

    /// Adds server `node_id` at the addresses of `record` (steps in the module docs).
    /// Only the leader can; others answer [`JoinError::NotLeader`].
    pub async fn join(&self, node_id: NodeId, record: PeerRecord) -> Result<Joined, JoinError> {
        if record.name.is_empty() || record.peer_address.is_empty() {
            return Err(JoinError::Invalid(
                "a server needs a name and a peer address".into(),
            ));
        }
        record
            .validate()
            .map_err(|e| JoinError::Invalid(e.to_string()))?;
        // One join at a time on this node: two joins of one id (a retry racing the
        // original, or two processes with one name) cannot both pass the checks below.
        let _one_at_a_time = self.leader_turn().await?;
        let book = self.peers().await.map_err(|e| self.join_error(e))?;
        if !book.contains_key(&self.engine.id().0) {
            // The new server must be able to answer this leader: without the leader's
            // own address in the book it could receive the log but never acknowledge it.
            return Err(JoinError::Unavailable(
                "the leader has not recorded its own address yet".into(),
            ));
        }
        let status = self.engine.status().await.map_err(|e| self.join_error(e))?;
        let is_member = status.membership.contains(node_id);
        match book.get(&node_id.0) {
            Some(recorded) if recorded.name != record.name => {
                return Err(JoinError::NameTaken {
                    node_id,
                    recorded: recorded.name.clone(),
                });
            }
            Some(recorded) if is_member && recorded.incarnation != record.incarnation => {
                return Err(JoinError::AnotherIncarnation {
                    node_id,
                    name: record.name,
                });
            }
            // A member nobody recorded (a founder before its steward ran) cannot be
            // proved to be the joiner either.
            None if is_member => {
                return Err(JoinError::AnotherIncarnation {
                    node_id,
                    name: record.name,
                });
            }
            _ => {}
        }
        if book.get(&node_id.0) != Some(&record) {
            if is_member && let Some(peers) = &self.book {
                // A member that moved (same incarnation, new address): the entry that
                // records the move may need its acknowledgement to commit.
                peers.dial(node_id.0, &record);
            }
            self.set_peer(node_id, &record).await?;
        }
        if !is_member {
            match self
                .change_members(MembershipChange::AddLearner(node_id))
                .await?
            {
                // Another join of this very server (a retry racing the original, through
                // another node or an earlier leader) added it first: it has joined.
                Err(_) if self.is_joined_as(node_id, &record).await => {}
                Err(e) => return Err(self.join_error(e)),
                Ok(_) => {}
            }
        }
        Ok(Joined {
            cluster_id: self.cluster_id,
            leader: self.engine.id(),
            peers: self.peers().await.map_err(|e| self.join_error(e))?,
        })
    }

    /// Whether `node_id` is a member and the book holds exactly `record` for it (the same
    /// incarnation at the same addresses).
    async fn is_joined_as(&self, node_id: NodeId, record: &PeerRecord) -> bool {
        let member = self
            .engine
            .status()
            .await
            .is_ok_and(|status| status.membership.contains(node_id));
        member
            && self
                .peers()
                .await
                .is_ok_and(|book| book.get(&node_id.0) == Some(record))
    }

    /// Refuses unless this node leads, then waits for this process's turn (see
    /// [`JOINS`]); the turn lasts as long as the permit.
    async fn leader_turn(&self) -> Result<tokio::sync::SemaphorePermit<'static>, JoinError> {
        if self.engine.observed().role != Role::Leader {
            return Err(self.join_error(EngineError::NotLeader {
                leader_hint: self.engine.observed().leader,
            }));
        }
        JOINS
            .acquire()
            .await
            .map_err(|_| JoinError::Unavailable("the node is stopping".into()))
    }

    /// Makes a membership change, waiting at most [`PROPOSAL_TIMEOUT`]: past that its
    /// outcome is unknown. The engine's own answer is the caller's to judge.
    async fn change_members(
        &self,
        change: MembershipChange,
    ) -> Result<Result<rkv_raft::Index, EngineError>, JoinError> {
        tokio::time::timeout(PROPOSAL_TIMEOUT, self.engine.change_membership(change))
            .await
            .map_err(|_| {
                JoinError::Unknown(format!(
                    "the membership change was not applied within {PROPOSAL_TIMEOUT:?}"
                ))
            })
    }

    /// Removes server `node_id` from the membership and forgets its record, so that the
    /// name can join again (a wiped directory, a replaced machine). Only the leader can;
    /// others answer [`JoinError::NotLeader`]. Removing a server that is not a member
    /// only forgets its record.
    pub async fn remove_server(&self, node_id: NodeId) -> Result<(), JoinError> {
        let _one_at_a_time = self.leader_turn().await?;
        let status = self.engine.status().await.map_err(|e| self.join_error(e))?;
        if status.membership.contains(node_id) {
            self.change_members(MembershipChange::Remove(node_id))
                .await?
                .map_err(|e| self.join_error(e))?;
        }
        let book = self.peers().await.map_err(|e| self.join_error(e))?;
        if book.contains_key(&node_id.0) {
            let command = Command::SetPeer {
                now_ms: now_ms(),
                node_id: node_id.0,
                record: None,
            };
            let proposed = self.engine.propose(Bytes::from(command.encode()));
            match tokio::time::timeout(PROPOSAL_TIMEOUT, proposed).await {
                Err(_) => {
                    return Err(JoinError::Unknown(format!(
                        "forgetting the address was not applied within {PROPOSAL_TIMEOUT:?}"
                    )));
                }
                Ok(Err(e)) => return Err(self.join_error(e)),
                Ok(Ok(_)) => {}
            }
        }
        Ok(())
    }

    /// One round of the steward (see [`spawn_steward`]); a no-op unless this node leads.
    pub async fn steward_round(&self, own: Option<&PeerRecord>) {
        if self.engine.observed().role != Role::Leader {
            return;
        }
        let Ok(book) = self.peers().await else { return };
        if let Some(own) = own
            && book.get(&self.engine.id().0) != Some(own)
            && let Err(e) = self.set_peer(self.engine.id(), own).await
        {
            tracing::debug!(error = %e, "recording this node's address failed; will retry");
        }
        let Ok(status) = self.engine.status().await else {
            return;
        };
        for learner in &status.membership.learners {
            let wants_vote = book
                .get(&learner.0)
                .is_some_and(|r| r.role == PeerRole::Voter);
            if !wants_vote {
                continue;
            }
            let acknowledged = status
                .peers
                .iter()
                .find(|p| p.id == *learner)
                .map(|p| p.match_index);
            if !is_caught_up(acknowledged, status.commit) {
                tracing::debug!(
                    node = %learner,
                    ?acknowledged,
                    commit = %status.commit,
                    "not promoted: it has not acknowledged everything committed"
                );
                continue;
            }
            match self
                .engine
                .change_membership(MembershipChange::Promote(*learner))
                .await
            {
                Ok(_) => {
                    tracing::info!(node = %learner, "promoted a caught-up learner to voter");
                    // One change at a time: the next learner waits for the next round.
                    break;
                }
                // Refused (lagging, another change in flight): the next learner may
                // still be promotable, so one stuck learner never blocks the others.
                Err(e) => tracing::debug!(node = %learner, error = %e, "not promoted yet"),
            }
        }
    }
}

/// Whether a learner that acknowledged up to `acknowledged` (`None`: the leader has no
/// progress for it) may be promoted when the leader's commit index is `commit`: only
/// once it has acknowledged everything committed. A learner that never answered (a
/// server that joined but never started, or sits at a wrong address) has acknowledged
/// nothing and stays a learner, so it can never become a voter the quorum waits for.
pub fn is_caught_up(acknowledged: Option<rkv_raft::Index>, commit: rkv_raft::Index) -> bool {
    acknowledged.is_some_and(|matched| matched.0 > 0 && matched >= commit)
}

/// Runs [`Node::steward_round`] every [`STEWARD_PERIOD`] until the node stops. `own` is
/// this node's record, written into the book whenever it leads and the book lacks it.
pub fn spawn_steward(node: Node, own: Option<PeerRecord>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(STEWARD_PERIOD);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if node.engine.observed().stopped.is_some() {
                return;
            }
            node.steward_round(own.as_ref()).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_names_are_stable_and_never_zero() {
        assert_eq!(node_id_for("node0"), node_id_for("node0"));
        assert_ne!(node_id_for("node0"), node_id_for("node1"));
        assert_ne!(node_id_for(""), NodeId(0));
    }
}
