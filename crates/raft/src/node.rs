//! One Raft node: the protocol's state machine.
//!
//! Every public method is an input (a tick, a message, a proposal, a read, a durability
//! report); every effect is an [`Action`] collected for the driver and handed out by
//! [`RaftNode::take_actions`]. The node never blocks, never reads a clock and never does
//! I/O, so a run is a pure function of its inputs and its seed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use crate::config::{Bug, Config};
use crate::error::{
    Busy, ConfigError, MembershipError, NotLeader, ProposeError, ReadError, SnapshotError,
    TransferError,
};
use crate::log::RaftLog;
use crate::message::{
    AppendResult, ConflictHint, MESSAGE_HEADER_BYTES, Message, MessageBody, SnapshotResult,
};
use crate::progress::{Progress, ReplicationState};
use crate::rng::SplitMix64;
use crate::types::{
    Entry, HardState, Index, Membership, MembershipChange, NodeId, Payload, ReadId, ReadMode,
    Recovered, Role, Snapshot, SnapshotMeta, Term,
};

/// Work for the driver, in the order it must be done. See the crate docs for the contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Make the term and vote durable before performing any later action of the batch.
    SaveHardState(HardState),
    /// Append entries to the durable log. If the first entry's index is at or below the
    /// last stored index, first drop the stored entries from that index on (a conflict).
    /// Durability may complete later; report it with [`RaftNode::persisted`].
    Append(Vec<Entry>),
    /// Deliver a message to a peer (best effort: it may be lost).
    Send(Message),
    /// Apply committed entries to the state machine, in order.
    Apply(Vec<Entry>),
    /// Replace the state machine and the whole durable log by this snapshot received from
    /// the leader, durably, then call [`RaftNode::snapshot_installed`].
    InstallSnapshot(Snapshot),
    /// Entries up to and including this index are covered by the durable snapshot and may
    /// be deleted from the log.
    CompactLog(Index),
    /// A read is confirmed: serve it once the state machine has applied `index`.
    ReadReady {
        /// The driver's id for the read.
        id: ReadId,
        /// The applied index the read must wait for.
        index: Index,
    },
    /// A read could not be confirmed.
    ReadFailed {
        /// The driver's id for the read.
        id: ReadId,
        /// Why.
        error: ReadError,
    },
}

/// A snapshot of a node's state for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its term.
    pub term: Term,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Commit index.
    pub commit: Index,
    /// Last index handed out to apply.
    pub applied: Index,
    /// Last log index.
    pub last_index: Index,
    /// Last durable log index.
    pub persisted: Index,
    /// Index of the latest snapshot.
    pub snapshot_index: Index,
    /// The membership in force.
    pub membership: Membership,
    /// On a leader: each follower's match index.
    pub peers: Vec<PeerStatus>,
}

/// A leader's view of one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The follower.
    pub id: NodeId,
    /// Highest index known replicated there.
    pub match_index: Index,
    /// Next index to send.
    pub next_index: Index,
}

/// What one call of `send_append` did.
enum SendOutcome {
    Nothing,
    SentMore,
    SentLast,
}

/// Who asked for a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadOrigin {
    Local(ReadId),
    Remote(NodeId, ReadId),
}

#[derive(Clone, Copy, Debug)]
struct PendingRead {
    origin: ReadOrigin,
    index: Index,
    round: u64,
}

#[derive(Clone, Copy, Debug)]
struct Transfer {
    target: NodeId,
    ticks: u32,
    timeout_now_sent: bool,
}

#[derive(Debug)]
struct LeaderState {
    progress: BTreeMap<NodeId, Progress>,
    /// An entry of this term has committed: reads and membership changes may proceed.
    committed_in_term: bool,
    /// New entries wait to be sent to followers at the next flush.
    broadcast_pending: bool,
    /// The latest heartbeat round sent.
    read_round: u64,
    /// A read waits for a round that has not been sent yet.
    read_round_requested: bool,
    /// When each recent round was sent, for the lease.
    round_sent_at: VecDeque<(u64, u64)>,
    /// Reads waiting for their round to be acknowledged by a quorum.
    pending_reads: VecDeque<PendingRead>,
    /// Reads that arrived before the leader committed in its term.
    waiting_reads: Vec<ReadOrigin>,
    /// The lease holds while `now` is below this tick.
    lease_until: u64,
    /// A TimeoutNow was sent this term: voters may ignore their leases, so this leader's
    /// lease can no longer be trusted.
    lease_revoked: bool,
    /// The commit index followers were last told of.
    commit_notified: Index,
    transfer: Option<Transfer>,
    check_quorum_ticks: u32,
    uncommitted_bytes: usize,
}

#[derive(Debug)]
enum RoleState {
    Follower,
    PreCandidate { votes: BTreeMap<NodeId, bool> },
    Candidate { votes: BTreeMap<NodeId, bool> },
    Leader(Box<LeaderState>),
}

#[derive(Debug)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// How long a leader's lease lasts after the heartbeat round that confirmed it was sent.
/// Followers that answered refuse votes for `election_ticks` after they received it; the
/// slack of at least two ticks covers tick phase differences, and of 10% clocks that
/// run at slightly different rates (the documented clock assumption of lease reads).
fn lease_ticks(election_ticks: u32) -> u64 {
    u64::from(election_ticks.saturating_sub(election_ticks.div_ceil(10).max(2)))
}

/// A Raft node. See the crate docs for how to drive it.
#[derive(Debug)]
pub struct RaftNode {
    config: Config,
    rng: SplitMix64,
    term: Term,
    vote: Option<NodeId>,
    leader: Option<NodeId>,
    role: RoleState,
    log: RaftLog,
    /// The data of `log.snapshot`, for followers that need it.
    snapshot_data: Bytes,
    /// Entries the latest snapshot compacted away, until the driver takes them.
    compacted: VecDeque<Entry>,
    now: u64,
    election_elapsed: u32,
    election_timeout: u32,
    heartbeat_elapsed: u32,
    /// Until the first election timeout after start, behave as if a leader's lease might
    /// still hold (a restarted voter must not help depose a leader that serves lease reads).
    fresh_start: bool,
    /// Highest index known to match the current leader's log.
    verified_index: Index,
    /// Highest match index acknowledged to the current leader.
    acked_index: Index,
    incoming_snapshot: Option<IncomingSnapshot>,
    installing_snapshot: Option<Index>,
    /// Reads forwarded to the leader, with the tick at which they time out.
    forwarded_reads: BTreeMap<ReadId, u64>,
    output: Vec<Action>,
}

impl RaftNode {
    /// Resumes (or starts) a node from its durable state. `seed` drives its election
    /// timeouts; give every node a different one.
    pub fn new(config: Config, recovered: Recovered, seed: u64) -> Result<RaftNode, ConfigError> {
        config.validate()?;
        let Recovered {
            hard_state,
            snapshot,
            entries,
        } = recovered;
        let log = RaftLog::new(snapshot.meta, entries);
        let mut node = RaftNode {
            rng: SplitMix64::new(seed),
            term: hard_state.term,
            vote: hard_state.vote,
            leader: None,
            role: RoleState::Follower,
            log,
            snapshot_data: snapshot.data,
            compacted: VecDeque::new(),
            now: 0,
            election_elapsed: 0,
            election_timeout: config.election_ticks,
            heartbeat_elapsed: 0,
            fresh_start: true,
            verified_index: Index(0),
            acked_index: Index(0),
            incoming_snapshot: None,
            installing_snapshot: None,
            forwarded_reads: BTreeMap::new(),
            output: Vec::new(),
            config,
        };
        node.reset_election_timer();
        Ok(node)
    }

    // ----- queries -----

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The current role.
    pub fn role(&self) -> Role {
        match self.role {
            RoleState::Follower => Role::Follower,
            RoleState::PreCandidate { .. } => Role::PreCandidate,
            RoleState::Candidate { .. } => Role::Candidate,
            RoleState::Leader(_) => Role::Leader,
        }
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The commit index.
    pub fn commit_index(&self) -> Index {
        self.log.commit
    }

    /// The last log index.
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }

    /// The term of the entry at `index`, if held (or covered exactly by the snapshot).
    pub fn entry_term(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }

    /// The entry at `index`, if held.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// The membership in force (the latest in the log, committed or not).
    pub fn membership(&self) -> &Membership {
        self.log.membership()
    }

    /// Index of the latest snapshot.
    pub fn snapshot_index(&self) -> Index {
        self.log.snapshot.index
    }

    /// What a snapshot of the state machine at `index` would cover: the driver persists
    /// this with the snapshot data before calling [`RaftNode::snapshot_taken`]. `None` if
    /// `index` is not a held entry that was handed out to apply.
    pub fn snapshot_meta(&self, index: Index) -> Option<SnapshotMeta> {
        if index <= self.log.snapshot.index || index > self.log.applied {
            return None;
        }
        let term = self.log.term(index)?;
        Some(SnapshotMeta {
            index,
            term,
            membership: self.log.membership_at(index),
        })
    }

    /// Everything a status page shows.
    pub fn status(&self) -> Status {
        let peers = match &self.role {
            RoleState::Leader(leader) => leader
                .progress
                .iter()
                .map(|(id, p)| PeerStatus {
                    id: *id,
                    match_index: p.match_index,
                    next_index: p.next_index,
                })
                .collect(),
            _ => Vec::new(),
        };
        Status {
            id: self.config.id,
            role: self.role(),
            term: self.term,
            leader: self.leader,
            commit: self.log.commit,
            applied: self.log.applied,
            last_index: self.log.last_index(),
            persisted: self.log.persisted,
            snapshot_index: self.log.snapshot.index,
            membership: self.log.membership().clone(),
            peers,
        }
    }

    /// Whether actions are waiting (or a flush would create some).
    pub fn has_actions(&self) -> bool {
        !self.output.is_empty()
            || matches!(&self.role, RoleState::Leader(l) if l.broadcast_pending || l.read_round_requested)
    }

    /// Hands out the work accumulated since the last call, in order. Batched sends (new
    /// entries for followers, a shared read round) are created here, so calling this once
    /// per batch of inputs is what makes many proposals share one message.
    pub fn take_actions(&mut self) -> Vec<Action> {
        self.flush();
        std::mem::take(&mut self.output)
    }

    // ----- inputs -----

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.now += 1;
        self.expire_forwarded_reads();
        if matches!(self.role, RoleState::Leader(_)) {
            self.tick_leader();
        } else {
            self.tick_follower();
        }
    }

    /// Proposes a command. On success the entry sits at the returned (term, index); it is
    /// committed if an `Apply` action later carries an entry with that index and term.
    pub fn propose(&mut self, command: Bytes) -> Result<(Term, Index), ProposeError> {
        let size = crate::types::ENTRY_OVERHEAD_BYTES + command.len();
        let leader_hint = self.leader;
        let RoleState::Leader(leader) = &mut self.role else {
            return Err(ProposeError::NotLeader(NotLeader { leader_hint }));
        };
        if leader.transfer.is_some() {
            return Err(ProposeError::Busy(Busy::Transferring));
        }
        if size > self.config.max_msg_bytes {
            return Err(ProposeError::TooLarge {
                bytes: size,
                limit: self.config.max_msg_bytes,
            });
        }
        let limit = self.config.max_uncommitted_bytes;
        if leader.uncommitted_bytes > 0 && leader.uncommitted_bytes + size > limit {
            let bytes = leader.uncommitted_bytes;
            return Err(ProposeError::Busy(Busy::UncommittedBytes { bytes, limit }));
        }
        leader.uncommitted_bytes += size;
        leader.broadcast_pending = true;
        let index = self.log.last_index().next();
        self.log.push(Entry {
            term: self.term,
            index,
            payload: Payload::Command(command),
        });
        self.emit_log_writes();
        Ok((self.term, index))
    }

    /// Asks for a read. The answer comes as a `ReadReady` or `ReadFailed` action carrying
    /// `id`. A follower forwards the request to its leader.
    pub fn read(&mut self, id: ReadId, mode: ReadMode) -> Result<(), ReadError> {
        if matches!(self.role, RoleState::Leader(_)) {
            self.leader_read(ReadOrigin::Local(id), mode);
            return Ok(());
        }
        let Some(leader) = self.leader else {
            return Err(ReadError::NotLeader(NotLeader { leader_hint: None }));
        };
        let deadline = self.now + 2 * u64::from(self.config.election_ticks);
        self.forwarded_reads.insert(id, deadline);
        self.send(leader, MessageBody::ReadIndex { id });
        Ok(())
    }

    /// Proposes a membership change (one server at a time).
    pub fn change_membership(
        &mut self,
        change: MembershipChange,
    ) -> Result<Index, MembershipError> {
        let leader_hint = self.leader;
        let RoleState::Leader(leader) = &mut self.role else {
            return Err(MembershipError::NotLeader(NotLeader { leader_hint }));
        };
        if leader.transfer.is_some() {
            return Err(MembershipError::Busy(Busy::Transferring));
        }
        if !leader.committed_in_term {
            return Err(MembershipError::Busy(Busy::NotReady));
        }
        if self.log.membership_index() > self.log.commit {
            return Err(MembershipError::Busy(Busy::MembershipChangePending));
        }
        let mut membership = self.log.membership().clone();
        let last_index = self.log.last_index();
        match change {
            MembershipChange::AddLearner(id) => {
                if membership.contains(id) {
                    return Err(MembershipError::AlreadyMember(id));
                }
                membership.learners.insert(id);
            }
            MembershipChange::Promote(id) => {
                if !membership.learners.contains(&id) {
                    return Err(MembershipError::NotMember(id));
                }
                let match_index = leader.progress.get(&id).map_or(Index(0), |p| p.match_index);
                // A learner that never acknowledged anything may not even run: as a voter
                // it could cost the cluster its quorum, however short the log still is.
                if match_index == Index(0)
                    || match_index.0 + self.config.promote_lag_entries_max < last_index.0
                {
                    return Err(MembershipError::NotCaughtUp {
                        node: id,
                        match_index,
                        last_index,
                    });
                }
                membership.learners.remove(&id);
                membership.voters.insert(id);
            }
            MembershipChange::Remove(id) => {
                if !membership.contains(id) {
                    return Err(MembershipError::NotMember(id));
                }
                if membership.voters.len() == 1 && membership.voters.contains(&id) {
                    return Err(MembershipError::LastVoter);
                }
                membership.voters.remove(&id);
                membership.learners.remove(&id);
            }
        }
        let index = last_index.next();
        let entry = Entry {
            term: self.term,
            index,
            payload: Payload::Membership(membership),
        };
        leader.uncommitted_bytes += entry.size_bytes();
        leader.broadcast_pending = true;
        self.log.push(entry);
        self.emit_log_writes();
        self.sync_progress_with_membership();
        Ok(index)
    }

    /// Hands leadership to `target`: once its log is up to date it is told to campaign at
    /// once. Proposals are refused until the transfer ends or an election timeout passes.
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), TransferError> {
        let leader_hint = self.leader;
        let id = self.config.id;
        let RoleState::Leader(leader) = &mut self.role else {
            return Err(TransferError::NotLeader(NotLeader { leader_hint }));
        };
        if target == id {
            return Err(TransferError::AlreadyLeader);
        }
        if !self.log.membership().voters.contains(&target) {
            return Err(TransferError::NotVoter(target));
        }
        if leader.transfer.is_some() {
            return Err(TransferError::InProgress);
        }
        leader.transfer = Some(Transfer {
            target,
            ticks: 0,
            timeout_now_sent: false,
        });
        self.maybe_send_timeout_now();
        self.replicate_to(target);
        Ok(())
    }

    /// Reports that the log is durable up to `index`, whose entry has `term`. Reports for
    /// entries that were since overwritten are ignored.
    pub fn persisted(&mut self, index: Index, term: Term) {
        if self.log.term(index) != Some(term) || index <= self.log.persisted {
            return;
        }
        self.log.persisted = index.min(self.log.last_index());
        if matches!(self.role, RoleState::Leader(_)) {
            self.maybe_commit();
        } else {
            self.ack_leader(false);
        }
    }

    /// The state machine has made a durable snapshot of everything up to `index`: compact
    /// the log behind it.
    pub fn snapshot_taken(&mut self, index: Index, data: Bytes) -> Result<(), SnapshotError> {
        let current = self.log.snapshot.index;
        if index <= current {
            return Err(SnapshotError::Stale { index, current });
        }
        if index > self.log.applied {
            return Err(SnapshotError::NotApplied {
                index,
                applied: self.log.applied,
            });
        }
        let Some(term) = self.log.term(index) else {
            return Err(SnapshotError::Stale { index, current });
        };
        let meta = SnapshotMeta {
            index,
            term,
            membership: self.log.membership_at(index),
        };
        self.emit_log_writes();
        // Entries not taken since the previous snapshot are dropped here after all.
        self.compacted = self.log.compact(meta);
        if self.log.persisted < index {
            self.log.persisted = index;
        }
        self.snapshot_data = data;
        self.output.push(Action::CompactLog(index));
        Ok(())
    }

    /// Takes the entries that the latest snapshot replaced: compacted by
    /// [`RaftNode::snapshot_taken`], or dropped for an installed snapshot (see the
    /// ordering contract, step 6). Freeing a hundred thousand entries one by one takes
    /// milliseconds: a driver with a thread to spare drops them there instead of on its
    /// event loop. Not calling this is fine: they are dropped at the next snapshot.
    pub fn take_compacted(&mut self) -> VecDeque<Entry> {
        std::mem::take(&mut self.compacted)
    }

    /// The snapshot of an `InstallSnapshot` action is durable and installed.
    pub fn snapshot_installed(&mut self, index: Index) {
        if self.installing_snapshot != Some(index) {
            return;
        }
        self.installing_snapshot = None;
        if let Some(leader) = self.leader {
            self.send(
                leader,
                MessageBody::InstallSnapshotResponse(SnapshotResult::Done { index }),
            );
        }
    }

    /// Handles a message from a peer.
    pub fn step(&mut self, message: Message) {
        // Gate: only messages for this node, from someone else.
        if message.to != self.config.id || message.from == self.config.id {
            return;
        }
        if message.term > self.term {
            match &message.body {
                MessageBody::PreVote { .. } => {}
                MessageBody::PreVoteResponse { granted: true } => {}
                MessageBody::Vote { transfer, .. } if self.in_lease() && !transfer => return,
                body => {
                    let leader = match body {
                        MessageBody::Append { .. }
                        | MessageBody::Heartbeat { .. }
                        | MessageBody::InstallSnapshot { .. } => Some(message.from),
                        _ => None,
                    };
                    self.become_follower(message.term, leader);
                }
            }
        } else if message.term < self.term {
            self.step_stale(&message);
            return;
        }
        let from = message.from;
        match message.body {
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => {
                self.handle_pre_vote(from, message.term, last_log_index, last_log_term);
            }
            MessageBody::Vote {
                last_log_index,
                last_log_term,
                ..
            } => {
                self.handle_vote(from, last_log_index, last_log_term);
            }
            MessageBody::PreVoteResponse { granted } => {
                if matches!(self.role, RoleState::PreCandidate { .. }) {
                    self.tally(from, granted);
                }
            }
            MessageBody::VoteResponse { granted } => {
                if matches!(self.role, RoleState::Candidate { .. }) {
                    self.tally(from, granted);
                }
            }
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                if self.accept_leader(from) {
                    self.handle_append(from, prev_index, prev_term, entries, commit);
                }
            }
            MessageBody::Heartbeat { commit, read_round } => {
                if self.accept_leader(from) {
                    self.handle_heartbeat(from, commit, read_round);
                }
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done,
            } => {
                if self.accept_leader(from) {
                    self.handle_snapshot_chunk(from, meta, offset, &data, done);
                }
            }
            MessageBody::AppendResponse(result) => self.handle_append_response(from, result),
            MessageBody::HeartbeatResponse { read_round } => {
                self.handle_heartbeat_response(from, read_round);
            }
            MessageBody::InstallSnapshotResponse(result) => {
                self.handle_snapshot_response(from, result);
            }
            MessageBody::TimeoutNow => {
                if matches!(self.role, RoleState::Follower) && self.can_campaign() {
                    self.start_election(true);
                }
            }
            MessageBody::ReadIndex { id } => {
                if matches!(self.role, RoleState::Leader(_)) {
                    self.leader_read(ReadOrigin::Remote(from, id), ReadMode::Linearizable);
                } else {
                    self.send(from, MessageBody::ReadIndexResponse { id, index: None });
                }
            }
            MessageBody::ReadIndexResponse { id, index } => {
                if self.forwarded_reads.remove(&id).is_some() {
                    self.output.push(match index {
                        Some(index) => Action::ReadReady { id, index },
                        None => Action::ReadFailed {
                            id,
                            error: ReadError::NotLeader(NotLeader {
                                leader_hint: self.leader,
                            }),
                        },
                    });
                }
            }
        }
    }

    // ----- elections -----

    fn in_lease(&self) -> bool {
        self.config.check_quorum
            && self.election_elapsed < self.config.election_ticks
            && (self.leader.is_some() || self.fresh_start)
    }

    /// Whether this node may start an election: it must be allowed to, and be a voter in
    /// its newest membership, or, while that membership is uncommitted, in the committed
    /// one (a server removed by an uncommitted entry must still be able to lead, or the
    /// cluster can deadlock: dissertation §4.2.2). Its own vote counts only if it is a voter.
    fn can_campaign(&self) -> bool {
        let id = self.config.id;
        let voter_now = self.log.membership().voters.contains(&id);
        let voter_committed = self.log.membership_index() > self.log.commit
            && self.log.membership_at(self.log.commit).voters.contains(&id);
        self.config.campaign && self.installing_snapshot.is_none() && (voter_now || voter_committed)
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.election_timeout = self
            .rng
            .range(self.config.election_ticks, 2 * self.config.election_ticks);
    }

    fn tick_follower(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_ticks {
            self.fresh_start = false;
        }
        if self.election_elapsed < self.election_timeout {
            return;
        }
        if self.can_campaign() {
            self.campaign();
        } else {
            // Nobody has been heard from for a whole timeout: forget the stale hint.
            self.leader = None;
            self.reset_election_timer();
        }
    }

    /// Fails every read forwarded to a leader: that leader's term is over.
    fn fail_forwarded_reads(&mut self, leader_hint: Option<NodeId>) {
        for id in std::mem::take(&mut self.forwarded_reads).into_keys() {
            let error = ReadError::NotLeader(NotLeader { leader_hint });
            self.output.push(Action::ReadFailed { id, error });
        }
    }

    fn expire_forwarded_reads(&mut self) {
        let now = self.now;
        let expired: Vec<ReadId> = self
            .forwarded_reads
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.forwarded_reads.remove(&id);
            self.output.push(Action::ReadFailed {
                id,
                error: ReadError::Timeout,
            });
        }
    }

    fn campaign(&mut self) {
        if self.config.pre_vote {
            self.become_pre_candidate();
        } else {
            self.start_election(false);
        }
    }

    fn become_pre_candidate(&mut self) {
        self.fail_leader_state();
        self.leader = None;
        self.fresh_start = false;
        self.role = RoleState::PreCandidate {
            votes: BTreeMap::new(),
        };
        self.reset_election_timer();
        let body = MessageBody::PreVote {
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
        };
        self.request_votes(self.term.next(), body);
    }

    fn start_election(&mut self, transfer: bool) {
        self.fail_leader_state();
        self.fail_forwarded_reads(None);
        self.term = self.term.next();
        self.vote = Some(self.config.id);
        self.leader = None;
        self.fresh_start = false;
        self.verified_index = Index(0);
        self.acked_index = Index(0);
        self.save_hard_state();
        self.role = RoleState::Candidate {
            votes: BTreeMap::new(),
        };
        self.reset_election_timer();
        let body = MessageBody::Vote {
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            transfer,
        };
        self.request_votes(self.term, body);
    }

    /// Votes for itself, then asks every other voter.
    fn request_votes(&mut self, term: Term, body: MessageBody) {
        let id = self.config.id;
        let voters: Vec<NodeId> = self
            .log
            .membership()
            .voters
            .iter()
            .copied()
            .filter(|v| *v != id)
            .collect();
        for voter in voters {
            self.output.push(Action::Send(Message {
                from: id,
                to: voter,
                term,
                body: body.clone(),
            }));
        }
        self.tally(id, true);
    }

    fn tally(&mut self, from: NodeId, granted: bool) {
        let membership = self.log.membership();
        if !membership.voters.contains(&from) {
            return;
        }
        let quorum = membership.quorum();
        let (RoleState::PreCandidate { votes } | RoleState::Candidate { votes }) = &mut self.role
        else {
            return;
        };
        votes.insert(from, granted);
        let granted_count = votes.values().filter(|g| **g).count();
        let rejected_count = votes.len() - granted_count;
        if granted_count >= quorum {
            if matches!(self.role, RoleState::PreCandidate { .. }) {
                self.start_election(false);
            } else {
                self.become_leader();
            }
        } else if rejected_count >= quorum {
            self.become_follower(self.term, None);
        }
    }

    fn handle_pre_vote(&mut self, from: NodeId, term: Term, last_index: Index, last_term: Term) {
        // Whether this node is a voter does not matter: a server votes even if its own
        // membership lags (dissertation §4.1); only the candidate decides whose votes count.
        let granted = term > self.term
            && !self.in_lease()
            && (self.config.has_bug(Bug::VoteWithoutLogCheck)
                || self.log.is_up_to_date(last_index, last_term));
        let reply_term = if granted { term } else { self.term };
        self.output.push(Action::Send(Message {
            from: self.config.id,
            to: from,
            term: reply_term,
            body: MessageBody::PreVoteResponse { granted },
        }));
    }

    fn handle_vote(&mut self, from: NodeId, last_index: Index, last_term: Term) {
        let can_vote = self.vote == Some(from) || (self.vote.is_none() && self.leader.is_none());
        let granted = can_vote
            && (self.config.has_bug(Bug::VoteWithoutLogCheck)
                || self.log.is_up_to_date(last_index, last_term));
        if granted {
            self.vote = Some(from);
            self.reset_election_timer();
            self.save_hard_state();
        }
        self.send(from, MessageBody::VoteResponse { granted });
    }

    /// Answers a message from an older term so that its sender learns the newer term.
    fn step_stale(&mut self, message: &Message) {
        match message.body {
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. }
                if self.config.check_quorum || self.config.pre_vote =>
            {
                self.send(
                    message.from,
                    MessageBody::HeartbeatResponse { read_round: 0 },
                );
            }
            MessageBody::PreVote { .. } => {
                self.send(
                    message.from,
                    MessageBody::PreVoteResponse { granted: false },
                );
            }
            MessageBody::Vote { .. } => {
                self.send(message.from, MessageBody::VoteResponse { granted: false });
            }
            _ => {}
        }
    }

    /// Follows the sender of a leader message in the current term; false if this node
    /// leads the term itself (which cannot happen with a correct peer).
    fn accept_leader(&mut self, from: NodeId) -> bool {
        match self.role {
            RoleState::Leader(_) => false,
            RoleState::Follower => {
                self.leader = Some(from);
                self.election_elapsed = 0;
                true
            }
            _ => {
                self.become_follower(self.term, Some(from));
                true
            }
        }
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.fail_leader_state_with_hint(leader);
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.verified_index = Index(0);
            self.acked_index = Index(0);
            self.save_hard_state();
            self.fail_forwarded_reads(leader);
        }
        self.role = RoleState::Follower;
        self.leader = leader;
        self.reset_election_timer();
    }

    /// Ends leadership: reads waiting on it fail.
    fn fail_leader_state(&mut self) {
        self.fail_leader_state_with_hint(None);
    }

    /// Ends leadership: reads waiting on it fail, pointing at `leader_hint`.
    fn fail_leader_state_with_hint(&mut self, leader_hint: Option<NodeId>) {
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let origins: Vec<ReadOrigin> = leader
            .pending_reads
            .drain(..)
            .map(|r| r.origin)
            .chain(leader.waiting_reads.drain(..))
            .collect();
        self.role = RoleState::Follower;
        self.leader = leader_hint;
        for origin in origins {
            self.answer_read(origin, None);
        }
    }

    fn become_leader(&mut self) {
        let id = self.config.id;
        let next = self.log.last_index().next();
        let progress = self
            .log
            .membership()
            .members()
            .filter(|m| *m != id)
            .map(|m| (m, Progress::new(next)))
            .collect();
        self.role = RoleState::Leader(Box::new(LeaderState {
            progress,
            committed_in_term: false,
            broadcast_pending: true,
            read_round: 0,
            read_round_requested: false,
            round_sent_at: VecDeque::new(),
            pending_reads: VecDeque::new(),
            waiting_reads: Vec::new(),
            lease_until: 0,
            lease_revoked: false,
            commit_notified: self.log.commit,
            transfer: None,
            check_quorum_ticks: 0,
            uncommitted_bytes: 0,
        }));
        self.leader = Some(id);
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        self.log.push(Entry {
            term: self.term,
            index: next,
            payload: Payload::Noop,
        });
        let uncommitted = self.log.uncommitted_bytes();
        if let RoleState::Leader(leader) = &mut self.role {
            leader.uncommitted_bytes = uncommitted;
        }
        self.emit_log_writes();
        self.maybe_commit();
    }

    // ----- leader -----

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.probe_stalled_followers();
            self.broadcast_heartbeat();
        }
        let election_ticks = self.config.election_ticks;
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        if let Some(transfer) = &mut leader.transfer {
            transfer.ticks += 1;
            if transfer.ticks >= election_ticks {
                leader.transfer = None;
            }
        }
        let mut resend = Vec::new();
        for (id, p) in &mut leader.progress {
            if let ReplicationState::Snapshot {
                ticks_since_sent, ..
            } = &mut p.state
            {
                *ticks_since_sent += 1;
                if *ticks_since_sent >= election_ticks {
                    resend.push(*id);
                }
            }
        }
        leader.check_quorum_ticks += 1;
        let check_now = leader.check_quorum_ticks >= election_ticks;
        for id in resend {
            self.send_snapshot_chunk(id);
        }
        if check_now {
            self.check_quorum();
        }
    }

    fn check_quorum(&mut self) {
        let id = self.config.id;
        let membership = self.log.membership();
        let quorum = membership.quorum();
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        leader.check_quorum_ticks = 0;
        let active = membership
            .voters
            .iter()
            .filter(|v| **v == id || leader.progress.get(v).is_some_and(|p| p.recent_active))
            .count();
        for p in leader.progress.values_mut() {
            p.recent_active = false;
        }
        if self.config.check_quorum && active < quorum {
            self.become_follower(self.term, None);
        }
    }

    fn broadcast_heartbeat(&mut self) {
        self.heartbeat_elapsed = 0;
        let now = self.now;
        let commit = self.log.commit;
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        leader.read_round += 1;
        leader.read_round_requested = false;
        let round = leader.read_round;
        leader.round_sent_at.push_back((round, now));
        while leader.round_sent_at.len() > 64 {
            leader.round_sent_at.pop_front();
        }
        for (to, p) in &leader.progress {
            self.output.push(Action::Send(Message {
                from: self.config.id,
                to: *to,
                term: self.term,
                body: MessageBody::Heartbeat {
                    commit: commit.min(p.match_index),
                    read_round: round,
                },
            }));
        }
        self.confirm_reads();
    }

    /// A follower in Replicate state that made no progress across heartbeat intervals
    /// while entries were in flight lost a message: probe it again.
    fn probe_stalled_followers(&mut self) {
        let last = self.log.last_index();
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        for p in leader.progress.values_mut() {
            let stuck = p.state == ReplicationState::Replicate
                && p.match_index < last
                && p.match_index == p.match_at_last_heartbeat;
            if !stuck {
                p.stalled_heartbeats = 0;
                p.match_at_last_heartbeat = p.match_index;
                continue;
            }
            // Two whole heartbeat intervals without progress: a slow disk would have
            // answered by now, so a message was lost.
            p.stalled_heartbeats += 1;
            if p.stalled_heartbeats >= 2 {
                p.stalled_heartbeats = 0;
                let next = p.match_index.next();
                p.become_probe(next);
            }
        }
    }

    /// Sends what accumulated since the last flush: new entries, a read round, and the new
    /// commit index to followers that got nothing else.
    fn flush(&mut self) {
        let commit = self.log.commit;
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let read_round = leader.read_round_requested;
        let broadcast = std::mem::take(&mut leader.broadcast_pending);
        let notify = commit > leader.commit_notified && !read_round;
        leader.commit_notified = commit;
        if !broadcast && !notify && !read_round {
            return;
        }
        let peers: Vec<NodeId> = leader.progress.keys().copied().collect();
        if read_round {
            self.broadcast_heartbeat();
        }
        for peer in peers {
            let sent = broadcast && self.replicate_to(peer);
            if !sent && notify {
                self.notify_commit(peer);
            }
        }
    }

    /// Tells `to` the commit index with a heartbeat of the current read round.
    fn notify_commit(&mut self, to: NodeId) {
        let commit = self.log.commit;
        let RoleState::Leader(leader) = &self.role else {
            return;
        };
        let Some(p) = leader.progress.get(&to) else {
            return;
        };
        let body = MessageBody::Heartbeat {
            commit: commit.min(p.match_index),
            read_round: leader.read_round,
        };
        self.send(to, body);
    }

    /// Sends `to` as many Append messages as flow control allows; returns whether any was sent.
    fn replicate_to(&mut self, to: NodeId) -> bool {
        let mut sent = false;
        loop {
            match self.send_append(to) {
                SendOutcome::Nothing => return sent,
                SendOutcome::SentLast => return true,
                SendOutcome::SentMore => sent = true,
            }
        }
    }

    /// Sends one Append (or snapshot chunk) to `to`.
    fn send_append(&mut self, to: NodeId) -> SendOutcome {
        let RoleState::Leader(leader) = &mut self.role else {
            return SendOutcome::Nothing;
        };
        let Some(p) = leader.progress.get_mut(&to) else {
            return SendOutcome::Nothing;
        };
        if !p.can_send(self.config.max_inflight_msgs) {
            return SendOutcome::Nothing;
        }
        let prev_index = p.next_index.prev();
        let Some(prev_term) = self.log.term(prev_index) else {
            self.send_snapshot_chunk(to);
            return SendOutcome::SentLast;
        };
        let last = self.log.last_index();
        let lag = last.0.saturating_sub(p.match_index.0);
        let steady = self.config.entries_per_msg;
        let catching_up = lag > (steady * self.config.max_inflight_msgs) as u64;
        let max_count = if catching_up {
            steady * self.config.catchup_multiplier
        } else {
            steady
        };
        let entry_bytes_max = self
            .config
            .max_msg_bytes
            .saturating_sub(MESSAGE_HEADER_BYTES);
        let entries = self
            .log
            .slice(p.next_index, last, max_count, entry_bytes_max);
        let outcome = match p.state {
            ReplicationState::Replicate => {
                let Some(last_sent) = entries.last().map(|e| e.index) else {
                    return SendOutcome::Nothing;
                };
                p.next_index = last_sent.next();
                p.inflight.push_back(last_sent);
                if p.next_index <= last {
                    SendOutcome::SentMore
                } else {
                    SendOutcome::SentLast
                }
            }
            _ => {
                p.state = ReplicationState::Probe { sent: true };
                SendOutcome::SentLast
            }
        };
        let body = MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit: self.log.commit,
        };
        self.send(to, body);
        outcome
    }

    fn send_snapshot_chunk(&mut self, to: NodeId) {
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let Some(p) = leader.progress.get_mut(&to) else {
            return;
        };
        let offset = match &p.state {
            ReplicationState::Snapshot { meta, offset, .. } if *meta == self.log.snapshot => {
                *offset
            }
            _ => 0,
        };
        let len = self.snapshot_data.len() as u64;
        let offset = offset.min(len);
        let end = (offset + self.config.snapshot_chunk_bytes as u64).min(len);
        let meta = self.log.snapshot.clone();
        p.state = ReplicationState::Snapshot {
            meta: meta.clone(),
            offset,
            ticks_since_sent: 0,
        };
        p.inflight.clear();
        let (start, stop) = (
            usize::try_from(offset).unwrap_or(0),
            usize::try_from(end).unwrap_or(0),
        );
        let data = self.snapshot_data.slice(start..stop);
        self.send(
            to,
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done: end == len,
            },
        );
    }

    fn handle_append_response(&mut self, from: NodeId, result: AppendResult) {
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let Some(p) = leader.progress.get_mut(&from) else {
            return;
        };
        p.recent_active = true;
        match result {
            AppendResult::Success { match_index } => {
                if p.on_success(match_index) {
                    self.maybe_commit();
                    self.maybe_send_timeout_now();
                }
            }
            AppendResult::Reject {
                rejected_prev,
                hint,
            } => {
                let stale = match p.state {
                    ReplicationState::Probe { .. } => rejected_prev != p.next_index.prev(),
                    ReplicationState::Replicate => rejected_prev <= p.match_index,
                    ReplicationState::Snapshot { .. } => true,
                };
                if stale {
                    return;
                }
                let next = match hint.term.and_then(|t| self.log.last_index_of_term(t)) {
                    Some(last_of_term) => last_of_term.next(),
                    None => hint.index,
                };
                let next = next.min(rejected_prev).max(p.match_index.next());
                if matches!(p.state, ReplicationState::Probe { .. }) && next == p.next_index {
                    // Nothing new learned (a duplicate): wait for the next heartbeat answer
                    // rather than answer every copy with another probe.
                    return;
                }
                p.become_probe(next);
            }
        }
        self.replicate_to(from);
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        let last = self.log.last_index();
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let Some(p) = leader.progress.get_mut(&from) else {
            return;
        };
        p.recent_active = true;
        p.read_round = p.read_round.max(read_round);
        if p.match_index < last
            && let ReplicationState::Probe { sent } = &mut p.state
        {
            // The probe or its answer may have been lost: allow another.
            *sent = false;
        }
        self.confirm_reads();
        self.replicate_to(from);
    }

    fn handle_snapshot_response(&mut self, from: NodeId, result: SnapshotResult) {
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let Some(p) = leader.progress.get_mut(&from) else {
            return;
        };
        p.recent_active = true;
        match result {
            SnapshotResult::Next { offset } => {
                if let ReplicationState::Snapshot {
                    offset: current, ..
                } = &mut p.state
                {
                    *current = offset;
                    self.send_snapshot_chunk(from);
                }
            }
            SnapshotResult::Done { index } => {
                if index > p.match_index {
                    p.match_index = index;
                }
                p.become_probe(index.next());
                self.maybe_commit();
                self.replicate_to(from);
            }
        }
    }

    fn maybe_send_timeout_now(&mut self) {
        let last = self.log.last_index();
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let Some(transfer) = &mut leader.transfer else {
            return;
        };
        if transfer.timeout_now_sent {
            return;
        }
        if leader
            .progress
            .get(&transfer.target)
            .is_some_and(|p| p.match_index == last)
        {
            transfer.timeout_now_sent = true;
            leader.lease_revoked = true;
            let target = transfer.target;
            self.send(target, MessageBody::TimeoutNow);
        }
    }

    /// Advances the commit index to the highest index durable on a quorum of voters, if
    /// its entry is of the current term (Raft paper §5.4.2).
    fn maybe_commit(&mut self) {
        let id = self.config.id;
        let own = if self.config.has_bug(Bug::AckBeforePersist) {
            self.log.last_index()
        } else {
            self.log.persisted
        };
        let membership = self.log.membership();
        let RoleState::Leader(leader) = &self.role else {
            return;
        };
        let mut matches: Vec<Index> = membership
            .voters
            .iter()
            .map(|v| {
                if *v == id {
                    own
                } else {
                    leader.progress.get(v).map_or(Index(0), |p| p.match_index)
                }
            })
            .collect();
        if matches.is_empty() {
            return;
        }
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matches[membership.quorum() - 1];
        if candidate <= self.log.commit {
            return;
        }
        let current_term = self.log.term(candidate) == Some(self.term);
        if current_term || self.config.has_bug(Bug::CommitOldTermByCount) {
            self.advance_commit(candidate);
        }
    }

    fn advance_commit(&mut self, commit: Index) {
        let old = self.log.commit;
        self.log.commit = commit;
        let committed_bytes: usize = self
            .log
            .slice(old.next(), commit, usize::MAX, usize::MAX)
            .iter()
            .map(Entry::size_bytes)
            .sum();
        let id = self.config.id;
        let term_committed = self.log.term(commit) == Some(self.term);
        let removed =
            self.log.membership_index() <= commit && !self.log.membership().voters.contains(&id);
        self.emit_apply();
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        leader.uncommitted_bytes = leader.uncommitted_bytes.saturating_sub(committed_bytes);
        if term_committed && !leader.committed_in_term {
            leader.committed_in_term = true;
            let waiting = std::mem::take(&mut leader.waiting_reads);
            let round = leader.read_round + 1;
            for origin in waiting {
                leader.pending_reads.push_back(PendingRead {
                    origin,
                    index: commit,
                    round,
                });
                leader.read_round_requested = true;
            }
        }
        if removed {
            // Tell the followers that the removal committed before going quiet, so that
            // they need not wait for an election to learn it.
            let peers: Vec<NodeId> = leader.progress.keys().copied().collect();
            for peer in peers {
                self.notify_commit(peer);
            }
            self.become_follower(self.term, None);
        }
    }

    fn leader_read(&mut self, origin: ReadOrigin, mode: ReadMode) {
        let commit = self.log.commit;
        let now = self.now;
        let id = self.config.id;
        let only_voter =
            self.log.membership().voters.len() == 1 && self.log.membership().voters.contains(&id);
        let lease_ok = mode == ReadMode::Lease && self.config.check_quorum;
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        if !leader.committed_in_term {
            leader.waiting_reads.push(origin);
            return;
        }
        let unconfirmed_bug = self.config.has_bug(Bug::ReadWithoutQuorum);
        if only_voter
            || unconfirmed_bug
            || (lease_ok && !leader.lease_revoked && now < leader.lease_until)
        {
            self.answer_read(origin, Some(commit));
            return;
        }
        let round = leader.read_round + 1;
        leader.pending_reads.push_back(PendingRead {
            origin,
            index: commit,
            round,
        });
        leader.read_round_requested = true;
    }

    /// Releases the reads whose round a quorum of voters has acknowledged, and extends the lease.
    fn confirm_reads(&mut self) {
        let id = self.config.id;
        let membership = self.log.membership();
        let quorum = membership.quorum();
        let election_ticks = self.config.election_ticks;
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let mut rounds: Vec<u64> = membership
            .voters
            .iter()
            .map(|v| {
                if *v == id {
                    leader.read_round
                } else {
                    leader.progress.get(v).map_or(0, |p| p.read_round)
                }
            })
            .collect();
        if rounds.len() < quorum {
            return;
        }
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let confirmed = rounds[quorum - 1];
        if let Some((_, sent)) = leader.round_sent_at.iter().find(|(r, _)| *r == confirmed) {
            leader.lease_until = leader.lease_until.max(sent + lease_ticks(election_ticks));
        }
        let mut ready = Vec::new();
        while leader
            .pending_reads
            .front()
            .is_some_and(|r| r.round <= confirmed)
        {
            if let Some(read) = leader.pending_reads.pop_front() {
                ready.push(read);
            }
        }
        for read in ready {
            self.answer_read(read.origin, Some(read.index));
        }
    }

    fn answer_read(&mut self, origin: ReadOrigin, index: Option<Index>) {
        match origin {
            ReadOrigin::Local(id) => self.output.push(match index {
                Some(index) => Action::ReadReady { id, index },
                None => Action::ReadFailed {
                    id,
                    error: ReadError::NotLeader(NotLeader {
                        leader_hint: self.leader,
                    }),
                },
            }),
            ReadOrigin::Remote(to, id) => {
                self.send(to, MessageBody::ReadIndexResponse { id, index })
            }
        }
    }

    /// Adds progress for new members and drops it for removed ones.
    fn sync_progress_with_membership(&mut self) {
        let id = self.config.id;
        let members: BTreeSet<NodeId> = self
            .log
            .membership()
            .members()
            .filter(|m| *m != id)
            .collect();
        let next = self.log.last_index();
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        leader.progress.retain(|m, _| members.contains(m));
        for m in members {
            leader
                .progress
                .entry(m)
                .or_insert_with(|| Progress::new(next));
        }
    }

    // ----- follower -----

    fn handle_append(
        &mut self,
        from: NodeId,
        mut prev_index: Index,
        mut prev_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: Index,
    ) {
        if self.installing_snapshot.is_some() {
            return;
        }
        // Entries at or below our commit index are known to match: skip them.
        if prev_index < self.log.commit {
            let commit = self.log.commit;
            entries.retain(|e| e.index > commit);
            prev_index = commit;
            prev_term = self.log.term(commit).unwrap_or(prev_term);
            self.verified_index = self.verified_index.max(commit);
        }
        match self.log.term(prev_index) {
            None => {
                let hint = ConflictHint {
                    term: None,
                    index: self.log.last_index().next(),
                };
                let result = AppendResult::Reject {
                    rejected_prev: prev_index,
                    hint,
                };
                self.send(from, MessageBody::AppendResponse(result));
                return;
            }
            Some(term) if term != prev_term => {
                let hint = ConflictHint {
                    term: Some(term),
                    index: self.log.first_index_of_term_at(prev_index),
                };
                let result = AppendResult::Reject {
                    rejected_prev: prev_index,
                    hint,
                };
                self.send(from, MessageBody::AppendResponse(result));
                return;
            }
            Some(_) => {}
        }
        let last_new = Index(prev_index.0 + entries.len() as u64);
        for entry in entries {
            match self.log.term(entry.index) {
                Some(term) if term == entry.term => continue,
                Some(_) => {
                    if entry.index <= self.log.commit {
                        // A correct leader never contradicts a committed entry.
                        return;
                    }
                    self.log.truncate_from(entry.index);
                    self.log.push(entry);
                }
                None => self.log.push(entry),
            }
        }
        self.emit_log_writes();
        self.verified_index = self.verified_index.max(last_new);
        let commit = leader_commit.min(last_new);
        if commit > self.log.commit {
            self.log.commit = commit;
            self.emit_apply();
        }
        let durable = self.log.persisted >= last_new || self.config.has_bug(Bug::AckBeforePersist);
        self.ack_leader(durable);
    }

    /// Tells the leader how far our log matches its log durably: always when `force`,
    /// otherwise only if that is further than last said.
    fn ack_leader(&mut self, force: bool) {
        let Some(leader) = self.leader else { return };
        if leader == self.config.id {
            return;
        }
        let durable = if self.config.has_bug(Bug::AckBeforePersist) {
            self.log.last_index()
        } else {
            self.log.persisted
        };
        let match_index = durable.min(self.verified_index);
        if force || match_index > self.acked_index {
            self.acked_index = self.acked_index.max(match_index);
            self.send(
                leader,
                MessageBody::AppendResponse(AppendResult::Success { match_index }),
            );
        }
    }

    fn handle_heartbeat(&mut self, from: NodeId, leader_commit: Index, read_round: u64) {
        let commit = leader_commit.min(self.log.last_index());
        if commit > self.log.commit && self.installing_snapshot.is_none() {
            self.log.commit = commit;
            self.emit_apply();
        }
        self.send(from, MessageBody::HeartbeatResponse { read_round });
    }

    fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: &[u8],
        done: bool,
    ) {
        if self.installing_snapshot.is_some() {
            return;
        }
        if meta.index <= self.log.commit || self.log.term(meta.index) == Some(meta.term) {
            // The log already holds the snapshot's last entry, so it matches the leader's
            // up to there: keep the entries after it (Raft paper §7) and just commit.
            self.incoming_snapshot = None;
            self.verified_index = self.verified_index.max(meta.index);
            if meta.index > self.log.commit {
                self.log.commit = meta.index;
                self.emit_apply();
            }
            let index = meta.index.min(self.log.persisted);
            self.send(
                from,
                MessageBody::InstallSnapshotResponse(SnapshotResult::Done { index }),
            );
            return;
        }
        if offset == 0 {
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta: meta.clone(),
                data: Vec::new(),
            });
        }
        let expected = match &mut self.incoming_snapshot {
            Some(incoming) if incoming.meta == meta && incoming.data.len() as u64 == offset => {
                incoming.data.extend_from_slice(data);
                if !done {
                    Some(incoming.data.len() as u64)
                } else {
                    None
                }
            }
            Some(incoming) if incoming.meta == meta => Some(incoming.data.len() as u64),
            _ => Some(0),
        };
        if let Some(offset) = expected {
            self.send(
                from,
                MessageBody::InstallSnapshotResponse(SnapshotResult::Next { offset }),
            );
            return;
        }
        let Some(incoming) = self.incoming_snapshot.take() else {
            return;
        };
        self.emit_log_writes();
        self.compacted = self.log.reset_to(incoming.meta.clone());
        self.verified_index = incoming.meta.index;
        self.acked_index = incoming.meta.index;
        self.installing_snapshot = Some(incoming.meta.index);
        self.snapshot_data = Bytes::from(incoming.data);
        self.output.push(Action::InstallSnapshot(Snapshot {
            meta: incoming.meta,
            data: self.snapshot_data.clone(),
        }));
    }

    // ----- output -----

    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.output.push(Action::Send(Message {
            from: self.config.id,
            to,
            term: self.term,
            body,
        }));
    }

    /// Queues the term and vote for durability. A save not yet followed by any send is
    /// replaced rather than repeated: nothing has depended on it yet, so one fsync does.
    fn save_hard_state(&mut self) {
        let hard_state = HardState {
            term: self.term,
            vote: self.vote,
        };
        for action in self.output.iter_mut().rev() {
            match action {
                Action::Send(_) => break,
                Action::SaveHardState(previous) => {
                    *previous = hard_state;
                    return;
                }
                _ => {}
            }
        }
        self.output.push(Action::SaveHardState(hard_state));
    }

    /// Hands new log entries to the driver, merged into the previous `Append` action when
    /// they continue it.
    fn emit_log_writes(&mut self) {
        let entries = self.log.take_unemitted();
        let Some(first) = entries.first() else { return };
        if let Some(Action::Append(previous)) = self.output.last_mut()
            && previous
                .last()
                .is_some_and(|e| e.index.next() == first.index)
        {
            previous.extend(entries);
            return;
        }
        self.output.push(Action::Append(entries));
    }

    fn emit_apply(&mut self) {
        let entries = self.log.take_committed();
        if !entries.is_empty() {
            self.output.push(Action::Apply(entries));
        }
    }
}
