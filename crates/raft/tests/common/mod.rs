//! Test harness for the `rkv-raft` core, shared by the protocol tests and the golden runner.
//!
//! The core is a pure state machine: inputs go in, [`Action`]s come out. This module is the
//! smallest driver that honours the ordering contract of `src/lib.rs`, so that tests can
//! run single nodes and whole clusters in memory and get the same run every time:
//!
//! - **Builders and shorthands** ([`config`], [`bootstrap`], [`new_node`], [`n`], [`t`],
//!   [`i`], [`cmd`], [`append`], ...) and helpers that bring one node into a known state by
//!   feeding it synthetic messages ([`make_leader`], [`committed_leader`], [`follower_of`],
//!   [`past_lease`]). The exact-action unit tests start from these.
//! - **[`Cluster`]**: nodes, an in-memory network and an in-memory disk per node. The
//!   network is one FIFO queue; links can be cut one way or both ([`Cluster::cut`],
//!   [`Cluster::partition`]) and restored ([`Cluster::heal`]). The disk keeps the hard state,
//!   the latest snapshot and the log; an `Append` is written at once and reported durable
//!   at once, or, while a test holds a node's fsyncs ([`Cluster::hold_persist`]), only when
//!   the test releases them. `InstallSnapshot` replaces the disk and calls
//!   `snapshot_installed`. Applied commands form each node's state machine. A crash keeps
//!   only what was durable. [`Cluster::stabilize`] processes actions and delivers messages
//!   until nothing is left, bounded by a round count.
//! - **Checks on every step**, so that any test that drives a cluster also checks the
//!   paper's safety properties: at most one leader per term (Election Safety, §5.2), no
//!   two different entries applied at one index (State Machine Safety, §5.4.3), entries
//!   applied in order without gaps, hard state that never goes back (§5.1, a vote is
//!   never changed within a term).
//! - **Rendering** ([`render_action`], [`render_message`], [`render_status`]): the text
//!   form of the golden files in `testdata/`.
//!
//! No sleeping, no wall clock, no unseeded randomness: node `k` draws its election timeouts
//! from seed [`seed`]`(k)`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use bytes::Bytes;
use rkv_raft::{
    Action, AppendResult, Config, ConflictHint, Entry, HardState, Index, Membership, Message,
    MessageBody, NodeId, Payload, RaftNode, Recovered, Role, Snapshot, SnapshotError, SnapshotMeta,
    SnapshotResult, Status, Term,
};

/// Election timeout of the test configuration, in ticks.
pub const ELECTION_TICKS: u32 = 10;

/// Upper bound on the rounds of [`Cluster::stabilize`]: a run that does not settle in this
/// many rounds is a livelock, and a bug.
pub const STABILIZE_ROUNDS_MAX: usize = 10_000;

// ----- shorthands -----

/// Node id shorthand.
pub fn n(id: u64) -> NodeId {
    NodeId(id)
}

/// Term shorthand.
pub fn t(term: u64) -> Term {
    Term(term)
}

/// Index shorthand.
pub fn i(index: u64) -> Index {
    Index(index)
}

/// The election-timeout seed of node `id`. Chosen so that each of nodes 1 to 5 draws a
/// first timeout above `ELECTION_TICKS` (n1 16, n2 15, n3 14, n4 14, n5 19 ticks), which
/// lets a test tick a fresh node past its lease without it campaigning.
pub fn seed(id: u64) -> u64 {
    1000 + id
}

/// The test configuration: small tick counts, every other setting at its default.
pub fn config(id: u64) -> Config {
    let mut config = Config::new(NodeId(id));
    config.election_ticks = ELECTION_TICKS;
    config.heartbeat_ticks = 1;
    config
}

/// A membership of the given voters and learners.
pub fn membership(voters: &[u64], learners: &[u64]) -> Membership {
    Membership {
        voters: voters.iter().copied().map(NodeId).collect(),
        learners: learners.iter().copied().map(NodeId).collect(),
    }
}

/// The durable state of a founding member of a cluster of `voters`.
pub fn bootstrap(voters: &[u64]) -> Recovered {
    bootstrap_with(membership(voters, &[]))
}

/// The durable state of a founding member of a cluster with this membership.
pub fn bootstrap_with(membership: Membership) -> Recovered {
    Recovered {
        snapshot: Snapshot::bootstrap(membership),
        ..Recovered::default()
    }
}

/// The durable state of a member of `voters` that stopped with this hard state and log.
pub fn recovered(voters: &[u64], hard_state: HardState, entries: Vec<Entry>) -> Recovered {
    Recovered {
        hard_state,
        entries,
        ..bootstrap(voters)
    }
}

/// Node `id` of a new cluster of `voters`, with the test configuration.
pub fn new_node(id: u64, voters: &[u64]) -> RaftNode {
    node_with(config(id), bootstrap(voters))
}

/// A node from a configuration and durable state, seeded with [`seed`].
pub fn node_with(config: Config, recovered: Recovered) -> RaftNode {
    let seed = seed(config.id.0);
    RaftNode::new(config, recovered, seed).expect("valid test configuration")
}

/// A command entry.
pub fn cmd(index: u64, term: u64, data: &str) -> Entry {
    Entry {
        term: Term(term),
        index: Index(index),
        payload: Payload::Command(bytes(data)),
    }
}

/// A leader's no-op entry.
pub fn noop(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: Index(index),
        payload: Payload::Noop,
    }
}

/// A membership entry.
pub fn conf(index: u64, term: u64, membership: Membership) -> Entry {
    Entry {
        term: Term(term),
        index: Index(index),
        payload: Payload::Membership(membership),
    }
}

/// Bytes from a string.
pub fn bytes(data: &str) -> Bytes {
    Bytes::copy_from_slice(data.as_bytes())
}

/// A message.
pub fn msg(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body,
    }
}

/// The action that sends a message.
pub fn send(from: u64, to: u64, term: u64, body: MessageBody) -> Action {
    Action::Send(msg(from, to, term, body))
}

/// An Append body.
pub fn append(prev_index: u64, prev_term: u64, entries: Vec<Entry>, commit: u64) -> MessageBody {
    MessageBody::Append {
        prev_index: Index(prev_index),
        prev_term: Term(prev_term),
        entries,
        commit: Index(commit),
    }
}

/// A successful AppendResponse body.
pub fn ack(match_index: u64) -> MessageBody {
    MessageBody::AppendResponse(AppendResult::Success {
        match_index: Index(match_index),
    })
}

/// A rejecting AppendResponse body.
pub fn reject(rejected_prev: u64, hint_term: Option<u64>, hint_index: u64) -> MessageBody {
    MessageBody::AppendResponse(AppendResult::Reject {
        rejected_prev: Index(rejected_prev),
        hint: ConflictHint {
            term: hint_term.map(Term),
            index: Index(hint_index),
        },
    })
}

/// A Heartbeat body.
pub fn heartbeat(commit: u64, read_round: u64) -> MessageBody {
    MessageBody::Heartbeat {
        commit: Index(commit),
        read_round,
    }
}

/// A Vote body.
pub fn vote(last_index: u64, last_term: u64, transfer: bool) -> MessageBody {
    MessageBody::Vote {
        last_log_index: Index(last_index),
        last_log_term: Term(last_term),
        transfer,
    }
}

/// A PreVote body.
pub fn pre_vote(last_index: u64, last_term: u64) -> MessageBody {
    MessageBody::PreVote {
        last_log_index: Index(last_index),
        last_log_term: Term(last_term),
    }
}

/// A hard state.
pub fn hard_state(term: u64, vote: Option<u64>) -> HardState {
    HardState {
        term: Term(term),
        vote: vote.map(NodeId),
    }
}

// ----- single-node helpers for the exact-action tests -----

/// Ticks `node` `count` times.
pub fn tick_n(node: &mut RaftNode, count: u32) {
    for _ in 0..count {
        node.tick();
    }
}

/// Ticks a follower until it leaves the follower role; returns how many ticks it took.
/// Panics if it has not campaigned after `2 * election_ticks` ticks.
pub fn tick_until_campaign(node: &mut RaftNode) -> u32 {
    for ticks in 1..=2 * ELECTION_TICKS {
        node.tick();
        if node.role() != Role::Follower {
            return ticks;
        }
    }
    panic!(
        "{} did not campaign within {} ticks",
        node.id(),
        2 * ELECTION_TICKS
    );
}

/// Ticks a fresh (or freshly led) follower for one election timeout so that its leader
/// lease lapses, and drops what it emitted. Panics if it campaigned meanwhile (its seed
/// draws a longer first timeout, see [`seed`]).
pub fn past_lease(node: &mut RaftNode) {
    tick_n(node, ELECTION_TICKS);
    assert_eq!(
        node.role(),
        Role::Follower,
        "{} campaigned while waiting out its lease",
        node.id()
    );
    node.take_actions();
}

/// Makes a follower win an election: it times out, every other voter grants its PreVote
/// and its Vote. Drops the actions emitted on the way.
pub fn make_leader(node: &mut RaftNode) {
    tick_until_campaign(node);
    let id = node.id();
    let others: Vec<NodeId> = node
        .membership()
        .voters
        .iter()
        .copied()
        .filter(|v| *v != id)
        .collect();
    if node.role() == Role::PreCandidate {
        let term = node.term().next();
        for voter in &others {
            if node.role() != Role::PreCandidate {
                break;
            }
            node.step(Message {
                from: *voter,
                to: id,
                term,
                body: MessageBody::PreVoteResponse { granted: true },
            });
        }
    }
    if node.role() == Role::Leader {
        // A single voter wins on its own vote.
        node.take_actions();
        return;
    }
    assert_eq!(
        node.role(),
        Role::Candidate,
        "{id} did not become a candidate"
    );
    let term = node.term();
    for voter in &others {
        if node.role() != Role::Candidate {
            break;
        }
        node.step(Message {
            from: *voter,
            to: id,
            term,
            body: MessageBody::VoteResponse { granted: true },
        });
    }
    assert_eq!(node.role(), Role::Leader, "{id} did not become leader");
    node.take_actions();
}

/// Node 1 leading a new cluster of `voters` (built with `config`) at term 1, with its noop
/// at index 1 durable on itself and acknowledged by every other voter: the noop is
/// committed and every follower is in steady replication. Actions drained.
pub fn committed_leader_with(config: Config, voters: &[u64]) -> RaftNode {
    let mut node = node_with(config, bootstrap(voters));
    make_leader(&mut node);
    assert_eq!(node.term(), Term(1));
    node.persisted(Index(1), Term(1));
    for &voter in voters.iter().filter(|v| **v != 1) {
        node.step(msg(voter, 1, 1, ack(1)));
    }
    assert_eq!(node.commit_index(), Index(1));
    node.take_actions();
    node
}

/// [`committed_leader_with`] with the test configuration.
pub fn committed_leader(voters: &[u64]) -> RaftNode {
    committed_leader_with(config(1), voters)
}

/// Node `id` of a cluster of `voters`, following `leader` at `term` after one heartbeat.
/// Actions drained.
pub fn follower_of(id: u64, leader: u64, term: u64, voters: &[u64]) -> RaftNode {
    let mut node = new_node(id, voters);
    node.step(msg(leader, id, term, heartbeat(0, 0)));
    assert_eq!(node.leader(), Some(NodeId(leader)));
    node.take_actions();
    node
}

// ----- the state machine: a list of commands, and its snapshot encoding -----

/// Encodes a state machine (the list of applied commands) as snapshot data.
pub fn encode_commands(commands: &[Bytes]) -> Bytes {
    let mut out = Vec::new();
    for command in commands {
        let len = u32::try_from(command.len()).expect("test command under 4 GiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(command);
    }
    Bytes::from(out)
}

/// Decodes snapshot data made by [`encode_commands`].
pub fn decode_commands(data: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 4 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        assert!(rest.len() >= 4 + len, "torn snapshot data");
        out.push(Bytes::copy_from_slice(&rest[4..4 + len]));
        rest = &rest[4 + len..];
    }
    assert!(rest.is_empty(), "torn snapshot data");
    out
}

// ----- the cluster -----

/// What one node keeps on its disk.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    /// The latest hard state saved.
    pub hard_state: HardState,
    /// The latest snapshot (installed or taken).
    pub snapshot: Snapshot,
    /// Entries written after the snapshot, durable or not.
    pub log: Vec<Entry>,
    /// Entries up to this index are durable.
    pub durable: Index,
}

impl Disk {
    /// The durable state a restarted node resumes from.
    pub fn recovered(&self) -> Recovered {
        Recovered {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self
                .log
                .iter()
                .filter(|e| e.index <= self.durable)
                .cloned()
                .collect(),
        }
    }

    /// The membership in force at `index`, from the log and the snapshot.
    pub fn membership_at(&self, index: Index) -> Membership {
        self.log
            .iter()
            .rev()
            .filter(|e| e.index <= index)
            .find_map(|e| match &e.payload {
                Payload::Membership(m) => Some(m.clone()),
                _ => None,
            })
            .unwrap_or_else(|| self.snapshot.meta.membership.clone())
    }
}

/// One server of a [`Cluster`]: the core, its disk and its state machine.
#[derive(Debug)]
pub struct Peer {
    /// The core.
    pub node: RaftNode,
    /// Its configuration (to restart it).
    pub config: Config,
    /// Whether it runs (a crashed node neither ticks nor receives).
    pub up: bool,
    /// Its disk.
    pub disk: Disk,
    /// Hold fsyncs back until [`Cluster::release_persist`].
    pub hold_persist: bool,
    /// Durability reports held back, oldest first.
    pub pending_persist: Vec<(Index, Term)>,
    /// The state machine: the commands applied, in order (rebuilt from snapshots).
    pub commands: Vec<Bytes>,
    /// Last index applied to the state machine.
    pub applied_index: Index,
    /// Every entry this incarnation applied, in order.
    pub applied: Vec<Entry>,
    /// `ReadReady` and `ReadFailed` actions received, in order.
    pub reads: Vec<Action>,
}

/// An in-memory cluster: nodes, network and disks, driven deterministically.
#[derive(Debug, Default)]
pub struct Cluster {
    /// The servers, by id.
    pub peers: BTreeMap<NodeId, Peer>,
    /// Messages sent and not yet delivered, oldest first.
    pub network: VecDeque<Message>,
    /// Cut links, as (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Text trace of what happened, for the golden files.
    trace: Vec<String>,
    /// The leader of each term seen so far (Election Safety).
    leaders: BTreeMap<Term, NodeId>,
    /// The entry applied at each index by anyone (State Machine Safety).
    applied: BTreeMap<Index, Entry>,
}

impl Cluster {
    /// A new cluster of `voters`, each with the test configuration.
    pub fn new(voters: &[u64]) -> Cluster {
        Cluster::with(membership(voters, &[]), config)
    }

    /// A new cluster whose founding members (voters and learners) are built with `make`.
    pub fn with(membership: Membership, make: impl Fn(u64) -> Config) -> Cluster {
        let mut cluster = Cluster::default();
        for id in membership.members().collect::<Vec<_>>() {
            cluster.add_node(make(id.0), bootstrap_with(membership.clone()));
        }
        cluster
    }

    /// Adds a server with the given configuration and durable state.
    pub fn add_node(&mut self, config: Config, recovered: Recovered) {
        let id = config.id;
        let disk = Disk {
            hard_state: recovered.hard_state,
            durable: recovered
                .entries
                .last()
                .map_or(recovered.snapshot.meta.index, |e| e.index),
            snapshot: recovered.snapshot.clone(),
            log: recovered.entries.clone(),
        };
        let node = node_with(config.clone(), recovered);
        let commands = decode_commands(&disk.snapshot.data);
        let applied_index = disk.snapshot.meta.index;
        let peer = Peer {
            node,
            config,
            up: true,
            disk,
            hold_persist: false,
            pending_persist: Vec::new(),
            commands,
            applied_index,
            applied: Vec::new(),
            reads: Vec::new(),
        };
        self.peers.insert(id, peer);
    }

    /// Adds a server that is not a member yet (to join as a learner later).
    pub fn add_joining_node(&mut self, id: u64) {
        self.add_node(config(id), bootstrap_with(Membership::default()));
    }

    /// The ids of all servers.
    pub fn ids(&self) -> Vec<NodeId> {
        self.peers.keys().copied().collect()
    }

    /// A server.
    pub fn peer(&self, id: u64) -> &Peer {
        self.peers
            .get(&NodeId(id))
            .unwrap_or_else(|| panic!("no node n{id}"))
    }

    /// A server, mutably.
    pub fn peer_mut(&mut self, id: u64) -> &mut Peer {
        self.peers
            .get_mut(&NodeId(id))
            .unwrap_or_else(|| panic!("no node n{id}"))
    }

    /// A server's core.
    pub fn node(&self, id: u64) -> &RaftNode {
        &self.peer(id).node
    }

    /// A server's core, mutably (for feeding inputs directly).
    pub fn node_mut(&mut self, id: u64) -> &mut RaftNode {
        &mut self.peer_mut(id).node
    }

    /// The running leader of the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.peers
            .values()
            .filter(|p| p.up && p.node.role() == Role::Leader)
            .max_by_key(|p| p.node.term())
            .map(|p| p.node.id())
    }

    /// A server's state machine.
    pub fn commands(&self, id: u64) -> Vec<Bytes> {
        self.peer(id).commands.clone()
    }

    /// The entry some server applied at `index`, if any did.
    pub fn applied_entry(&self, index: Index) -> Option<&Entry> {
        self.applied.get(&index)
    }

    /// Hands out and clears the text trace.
    pub fn take_trace(&mut self) -> Vec<String> {
        std::mem::take(&mut self.trace)
    }

    // ----- time -----

    /// Ticks one server.
    pub fn tick(&mut self, id: u64) {
        let peer = self.peer_mut(id);
        if peer.up {
            peer.node.tick();
        }
    }

    /// Ticks every running server once.
    pub fn tick_all(&mut self) {
        for peer in self.peers.values_mut().filter(|p| p.up) {
            peer.node.tick();
        }
    }

    /// Ticks one server until it leaves the follower role; returns the ticks taken, or
    /// `None` if it had not after `2 * election_ticks` ticks.
    pub fn campaign(&mut self, id: u64) -> Option<u32> {
        let limit = 2 * self.peer(id).config.election_ticks;
        for ticks in 1..=limit {
            self.tick(id);
            if self.node(id).role() != Role::Follower {
                return Some(ticks);
            }
        }
        None
    }

    /// From a cluster where nobody leads: lets the lease of every other server lapse
    /// (`ELECTION_TICKS` ticks, short of the first timeout that [`seed`] draws; a server
    /// that just started refuses votes for its first election timeout), then makes `id`
    /// campaign and runs the election to its end. Panics unless `id` wins.
    pub fn elect(&mut self, id: u64) {
        for other in self.ids() {
            if other != NodeId(id) && self.peers[&other].up {
                for _ in 0..ELECTION_TICKS {
                    self.tick(other.0);
                }
                assert_eq!(
                    self.node(other.0).role(),
                    Role::Follower,
                    "{other} campaigned first"
                );
            }
        }
        self.campaign(id)
            .unwrap_or_else(|| panic!("n{id} did not campaign"));
        self.stabilize();
        assert_eq!(
            self.node(id).role(),
            Role::Leader,
            "n{id} did not win its election"
        );
    }

    // ----- network -----

    /// Drops messages from `from` to `to` until healed.
    pub fn cut(&mut self, from: u64, to: u64) {
        self.cut.insert((NodeId(from), NodeId(to)));
    }

    /// Cuts every link to and from `id`.
    pub fn partition(&mut self, id: u64) {
        for other in self.ids() {
            if other != NodeId(id) && self.peers[&other].up {
                self.cut.insert((NodeId(id), other));
                self.cut.insert((other, NodeId(id)));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Delivers every message queued now, in order; returns whether there were any.
    /// Messages over cut links or to crashed servers are lost.
    pub fn deliver(&mut self) -> bool {
        let messages = std::mem::take(&mut self.network);
        let any = !messages.is_empty();
        for message in messages {
            self.deliver_message(message);
        }
        any
    }

    /// Delivers one message now, unless its link is cut or its recipient is down.
    pub fn deliver_message(&mut self, message: Message) {
        let reachable = !self.cut.contains(&(message.from, message.to))
            && self.peers.get(&message.to).is_some_and(|p| p.up);
        if !reachable {
            self.trace
                .push(format!("dropped: {}", render_message(&message)));
        } else if let Some(peer) = self.peers.get_mut(&message.to) {
            peer.node.step(message);
        }
    }

    /// Delivers only the queued messages that match `keep`, drops the rest (traced).
    pub fn deliver_only(&mut self, keep: impl Fn(&Message) -> bool) {
        let messages = std::mem::take(&mut self.network);
        for message in messages {
            if keep(&message) {
                self.network.push_back(message);
            } else {
                self.trace
                    .push(format!("dropped: {}", render_message(&message)));
            }
        }
        self.deliver();
    }

    // ----- the driver -----

    /// Takes a server's actions and performs them; returns whether there were any.
    pub fn process(&mut self, id: NodeId) -> bool {
        let Some(peer) = self.peers.get_mut(&id) else {
            return false;
        };
        if !peer.up || !peer.node.has_actions() {
            return false;
        }
        let actions = peer.node.take_actions();
        if actions.is_empty() {
            return false;
        }
        self.perform(id, actions);
        true
    }

    /// Performs `actions` of server `id` in order, as the contract in `src/lib.rs` says.
    pub fn perform(&mut self, id: NodeId, actions: Vec<Action>) {
        self.trace.push(format!("> {id}"));
        for action in actions {
            self.trace.push(format!("  {}", render_action(&action)));
            self.perform_one(id, action);
        }
        self.check_leader(id);
    }

    fn perform_one(&mut self, id: NodeId, action: Action) {
        let peer = self.peers.get_mut(&id).expect("known node");
        match action {
            Action::SaveHardState(hard_state) => {
                let old = peer.disk.hard_state;
                assert!(
                    hard_state.term >= old.term,
                    "{id}: term went back: {old:?} -> {hard_state:?}"
                );
                if hard_state.term == old.term && old.vote.is_some() {
                    assert_eq!(
                        hard_state.vote, old.vote,
                        "{id}: vote changed within {}",
                        old.term
                    );
                }
                peer.disk.hard_state = hard_state;
            }
            Action::Append(entries) => {
                let first = entries.first().expect("Append carries entries").index;
                let last = entries.last().expect("Append carries entries").clone();
                assert!(
                    first > peer.disk.snapshot.meta.index,
                    "{id}: Append at {first} behind the snapshot at {}",
                    peer.disk.snapshot.meta.index
                );
                let stored_last = peer
                    .disk
                    .log
                    .last()
                    .map_or(peer.disk.snapshot.meta.index, |e| e.index);
                assert!(
                    first <= stored_last.next(),
                    "{id}: Append at {first} leaves a hole after {stored_last}"
                );
                peer.disk.log.retain(|e| e.index < first);
                if peer.disk.durable >= first {
                    peer.disk.durable = first.prev();
                }
                peer.disk.log.extend(entries);
                if peer.hold_persist {
                    peer.pending_persist.push((last.index, last.term));
                } else {
                    peer.disk.durable = last.index;
                    peer.node.persisted(last.index, last.term);
                }
            }
            Action::Send(message) => {
                assert_eq!(message.from, id, "{id} sends as someone else");
                self.network.push_back(message);
            }
            Action::Apply(entries) => {
                for entry in entries {
                    assert_eq!(
                        entry.index,
                        peer.applied_index.next(),
                        "{id}: applied out of order after {}",
                        peer.applied_index
                    );
                    if let Some(other) = self.applied.get(&entry.index) {
                        assert_eq!(
                            other, &entry,
                            "State Machine Safety: two entries applied at {}",
                            entry.index
                        );
                    }
                    self.applied.insert(entry.index, entry.clone());
                    if let Payload::Command(data) = &entry.payload {
                        peer.commands.push(data.clone());
                    }
                    peer.applied_index = entry.index;
                    peer.applied.push(entry);
                }
            }
            Action::InstallSnapshot(snapshot) => {
                let index = snapshot.meta.index;
                peer.commands = decode_commands(&snapshot.data);
                peer.applied_index = index;
                peer.disk.log.clear();
                peer.disk.durable = index;
                peer.disk.snapshot = snapshot;
                peer.pending_persist.clear();
                peer.node.snapshot_installed(index);
            }
            Action::CompactLog(index) => {
                assert!(
                    peer.disk.snapshot.meta.index >= index,
                    "{id}: compacted past its snapshot"
                );
                peer.disk.log.retain(|e| e.index > index);
            }
            Action::ReadReady { .. } | Action::ReadFailed { .. } => peer.reads.push(action),
        }
    }

    /// Election Safety (§5.2): at most one leader per term.
    fn check_leader(&mut self, id: NodeId) {
        let node = &self.peers[&id].node;
        if node.role() == Role::Leader {
            let term = node.term();
            let first = *self.leaders.entry(term).or_insert(id);
            assert_eq!(first, id, "Election Safety: two leaders in {term}");
        }
    }

    /// Runs until no server has actions and no message is in flight. Panics after
    /// [`STABILIZE_ROUNDS_MAX`] rounds.
    pub fn stabilize(&mut self) {
        for _ in 0..STABILIZE_ROUNDS_MAX {
            let mut busy = false;
            for id in self.ids() {
                busy |= self.process(id);
            }
            busy |= self.deliver();
            if !busy {
                return;
            }
        }
        panic!("the cluster did not stabilize within {STABILIZE_ROUNDS_MAX} rounds");
    }

    /// Ticks every server and stabilizes, `count` times.
    pub fn run_ticks(&mut self, count: u32) {
        for _ in 0..count {
            self.tick_all();
            self.stabilize();
        }
    }

    // ----- disk -----

    /// Holds (or stops holding) a server's fsyncs. Stopping does not release the held ones.
    pub fn hold_persist(&mut self, id: u64, hold: bool) {
        self.peer_mut(id).hold_persist = hold;
    }

    /// Completes a server's held fsyncs, in order; returns the reports made.
    pub fn release_persist(&mut self, id: u64) -> Vec<(Index, Term)> {
        let peer = self.peer_mut(id);
        let pending = std::mem::take(&mut peer.pending_persist);
        for &(index, term) in &pending {
            if peer
                .disk
                .log
                .iter()
                .any(|e| e.index == index && e.term == term)
            {
                peer.disk.durable = peer.disk.durable.max(index);
            }
            peer.node.persisted(index, term);
        }
        pending
    }

    /// The state machine of `id` snapshots everything it applied; the core compacts.
    pub fn take_snapshot(&mut self, id: u64) -> Result<Index, SnapshotError> {
        let peer = self.peer_mut(id);
        let index = peer.applied_index;
        let data = encode_commands(&peer.commands);
        let term = peer.node.entry_term(index).unwrap_or_default();
        let meta = SnapshotMeta {
            index,
            term,
            membership: peer.disk.membership_at(index),
        };
        peer.node.snapshot_taken(index, data.clone())?;
        peer.disk.snapshot = Snapshot { meta, data };
        Ok(index)
    }

    /// Crashes a server: it stops, loses what was not durable, and its messages in
    /// flight to it are lost.
    pub fn crash(&mut self, id: u64) {
        let peer = self.peer_mut(id);
        peer.up = false;
        let durable = peer.disk.durable;
        peer.disk.log.retain(|e| e.index <= durable);
        peer.pending_persist.clear();
    }

    /// Restarts a crashed server from its disk.
    pub fn restart(&mut self, id: u64) {
        let peer = self.peer_mut(id);
        let recovered = peer.disk.recovered();
        peer.commands = decode_commands(&recovered.snapshot.data);
        peer.applied_index = recovered.snapshot.meta.index;
        peer.applied.clear();
        peer.node = node_with(peer.config.clone(), recovered);
        peer.up = true;
    }

    /// Checks the Log Matching property (§5.3) between every pair of running servers: if
    /// two logs hold an entry with the same index and term, they agree on every entry up
    /// to it.
    pub fn check_log_matching(&self) {
        let logs: Vec<(NodeId, BTreeMap<Index, Entry>)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.up)
            .map(|(id, p)| (*id, log_of(&p.node)))
            .collect();
        for (a, log_a) in &logs {
            for (b, log_b) in &logs {
                if a >= b {
                    continue;
                }
                let common = log_a
                    .iter()
                    .rev()
                    .find(|(index, e)| log_b.get(index).is_some_and(|f| f.term == e.term));
                let Some((&upto, _)) = common else { continue };
                for (index, entry) in log_a.range(..=upto) {
                    if let Some(other) = log_b.get(index) {
                        assert_eq!(entry, other, "Log Matching: {a} and {b} differ at {index}");
                    }
                }
            }
        }
    }
}

/// The entries a core holds, by index.
pub fn log_of(node: &RaftNode) -> BTreeMap<Index, Entry> {
    let first = node.snapshot_index().next();
    (first.0..=node.last_index().0)
        .filter_map(|k| node.entry(Index(k)).map(|e| (e.index, e.clone())))
        .collect()
}

// ----- rendering for the golden files -----

fn render_ids(ids: &BTreeSet<NodeId>) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `v=[n1,n2] l=[n3]`.
pub fn render_membership(membership: &Membership) -> String {
    format!(
        "v=[{}] l=[{}]",
        render_ids(&membership.voters),
        render_ids(&membership.learners)
    )
}

/// `i2@t1 "data"`, `i1@t1 noop`, `i3@t1 conf v=[..] l=[..]`.
pub fn render_entry(entry: &Entry) -> String {
    let payload = match &entry.payload {
        Payload::Noop => "noop".to_string(),
        Payload::Command(data) => format!("{:?}", String::from_utf8_lossy(data)),
        Payload::Membership(m) => format!("conf {}", render_membership(m)),
    };
    format!("{}@{} {payload}", entry.index, entry.term)
}

/// A list of entries in brackets.
pub fn render_entries(entries: &[Entry]) -> String {
    format!(
        "[{}]",
        entries
            .iter()
            .map(render_entry)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// `n1->n2 t1 Vote last=i0@t0`.
pub fn render_message(message: &Message) -> String {
    let body = match &message.body {
        MessageBody::PreVote {
            last_log_index,
            last_log_term,
        } => {
            format!("PreVote last={last_log_index}@{last_log_term}")
        }
        MessageBody::PreVoteResponse { granted } => {
            format!(
                "PreVoteResponse {}",
                if *granted { "granted" } else { "rejected" }
            )
        }
        MessageBody::Vote {
            last_log_index,
            last_log_term,
            transfer,
        } => {
            format!(
                "Vote last={last_log_index}@{last_log_term}{}",
                if *transfer { " transfer" } else { "" }
            )
        }
        MessageBody::VoteResponse { granted } => {
            format!(
                "VoteResponse {}",
                if *granted { "granted" } else { "rejected" }
            )
        }
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            format!(
                "Append prev={prev_index}@{prev_term} commit={commit} {}",
                render_entries(entries)
            )
        }
        MessageBody::AppendResponse(AppendResult::Success { match_index }) => {
            format!("AppendResponse ok match={match_index}")
        }
        MessageBody::AppendResponse(AppendResult::Reject {
            rejected_prev,
            hint,
        }) => {
            let term = hint.term.map_or_else(|| "-".to_string(), |t| t.to_string());
            format!(
                "AppendResponse reject prev={rejected_prev} hint={term}/{}",
                hint.index
            )
        }
        MessageBody::Heartbeat { commit, read_round } => {
            format!("Heartbeat commit={commit} round={read_round}")
        }
        MessageBody::HeartbeatResponse { read_round } => {
            format!("HeartbeatResponse round={read_round}")
        }
        MessageBody::InstallSnapshot {
            meta,
            offset,
            data,
            done,
        } => format!(
            "InstallSnapshot {}@{} offset={offset} bytes={}{}",
            meta.index,
            meta.term,
            data.len(),
            if *done { " done" } else { "" }
        ),
        MessageBody::InstallSnapshotResponse(SnapshotResult::Next { offset }) => {
            format!("InstallSnapshotResponse next={offset}")
        }
        MessageBody::InstallSnapshotResponse(SnapshotResult::Done { index }) => {
            format!("InstallSnapshotResponse done={index}")
        }
        MessageBody::TimeoutNow => "TimeoutNow".to_string(),
        MessageBody::ReadIndex { id } => format!("ReadIndex id={}", id.0),
        MessageBody::ReadIndexResponse { id, index } => format!(
            "ReadIndexResponse id={} index={}",
            id.0,
            index.map_or_else(|| "-".to_string(), |i| i.to_string())
        ),
    };
    format!("{}->{} {} {body}", message.from, message.to, message.term)
}

/// One action per line in the golden files.
pub fn render_action(action: &Action) -> String {
    match action {
        Action::SaveHardState(hs) => format!(
            "SaveHardState {} vote={}",
            hs.term,
            hs.vote.map_or_else(|| "-".to_string(), |v| v.to_string())
        ),
        Action::Append(entries) => format!("Append {}", render_entries(entries)),
        Action::Send(message) => format!("Send {}", render_message(message)),
        Action::Apply(entries) => format!("Apply {}", render_entries(entries)),
        Action::InstallSnapshot(snapshot) => format!(
            "InstallSnapshot {}@{} {} bytes={}",
            snapshot.meta.index,
            snapshot.meta.term,
            render_membership(&snapshot.meta.membership),
            snapshot.data.len()
        ),
        Action::CompactLog(index) => format!("CompactLog {index}"),
        Action::ReadReady { id, index } => format!("ReadReady id={} index={index}", id.0),
        Action::ReadFailed { id, error } => format!("ReadFailed id={} {error:?}", id.0),
    }
}

/// A node's status on one line.
pub fn render_status(status: &Status) -> String {
    let mut out = format!(
        "{}: {:?} {} leader={} commit={} applied={} last={} persisted={} snapshot={} {}",
        status.id,
        status.role,
        status.term,
        status
            .leader
            .map_or_else(|| "-".to_string(), |l| l.to_string()),
        status.commit,
        status.applied,
        status.last_index,
        status.persisted,
        status.snapshot_index,
        render_membership(&status.membership),
    );
    for peer in &status.peers {
        let _ = write!(
            out,
            " [{} match={} next={}]",
            peer.id, peer.match_index, peer.next_index
        );
    }
    out
}
