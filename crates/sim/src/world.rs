//! One simulated run: a cluster of Raft cores on a simulated network and disk, clients
//! that write and read through them, and a nemesis that injects faults, all driven by
//! one event queue and one seeded generator. Same seed, same run.
//!
//! A run has a fault phase (crashes, partitions, message loss, duplication and delay,
//! membership changes, leadership transfers) and then a healing phase in which every
//! fault is repaired and the cluster must finish every client operation (liveness).
//! The invariants of the Raft paper are checked after every event and the clients'
//! history is checked for linearizability at the end.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use bytes::Bytes;
use rkv_check::{OpKind, Operation, Outcome};
use rkv_raft::{
    Action, Config, Index, Membership, MembershipChange, Message, NodeId, Payload, ProposeError,
    RaftNode, ReadId, ReadMode, Role, Snapshot, Term,
};

use crate::disk::Disk;
use crate::invariants::{Invariants, Violation};
use crate::kv::{Command, Kv, Write, WriteOutput};
use crate::rng::Rng;

/// Milliseconds of simulated time.
type Millis = u64;

const TICK_MS: Millis = 10;
const ELECTION_TICKS: u32 = 10;
const ATTEMPT_TIMEOUT_MS: Millis = 400;
const KEYS: [&str; 4] = ["a", "b", "c", "d"];
/// A run that needs more events than this is stuck in a storm (a healthy one needs ~100k).
const MAX_EVENTS: u64 = 2_000_000;

/// Which kinds of fault a run may inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faults {
    /// Message loss, duplication and long delays (reordering).
    pub network: bool,
    /// Partitions: one node isolated, random splits, one-way link cuts.
    pub partitions: bool,
    /// Crashes (losing unsynced writes) and restarts.
    pub crashes: bool,
    /// Adding, promoting and removing servers.
    pub membership: bool,
    /// Leadership transfers.
    pub transfers: bool,
    /// Log compaction and snapshot installation.
    pub snapshots: bool,
}

impl Faults {
    /// Every kind of fault.
    pub const ALL: Faults = Faults {
        network: true,
        partitions: true,
        crashes: true,
        membership: true,
        transfers: true,
        snapshots: true,
    };

    /// The enabled kinds, by name.
    pub fn names(&self) -> Vec<&'static str> {
        let all = [
            (self.network, "network"),
            (self.partitions, "partitions"),
            (self.crashes, "crashes"),
            (self.membership, "membership"),
            (self.transfers, "transfers"),
            (self.snapshots, "snapshots"),
        ];
        all.iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| *name)
            .collect()
    }

    /// A copy with the kind at `position` (in [`Faults::names`] order of all kinds) off.
    pub fn without(&self, position: usize) -> Faults {
        let mut f = *self;
        match position {
            0 => f.network = false,
            1 => f.partitions = false,
            2 => f.crashes = false,
            3 => f.membership = false,
            4 => f.transfers = false,
            _ => f.snapshots = false,
        }
        f
    }
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Options {
    /// Everything random derives from it.
    pub seed: u64,
    /// Founding voters: 3, 5 or 7; 0 picks one from the seed.
    pub nodes: usize,
    /// Length of the fault phase.
    pub fault_ms: Millis,
    /// Longest the healing phase may take to finish every operation.
    pub heal_ms: Millis,
    /// Which faults to inject.
    pub faults: Faults,
    /// Record a line per event.
    pub trace: bool,
    /// A deliberately broken rule in every node.
    #[cfg(feature = "broken-variants")]
    pub bug: Option<rkv_raft::Bug>,
}

impl Options {
    /// Defaults for `seed`.
    pub fn new(seed: u64) -> Options {
        Options {
            seed,
            nodes: 0,
            fault_ms: 5_000,
            heal_ms: 10_000,
            faults: Faults::ALL,
            trace: false,
            #[cfg(feature = "broken-variants")]
            bug: None,
        }
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct Report {
    /// The run's seed.
    pub seed: u64,
    /// The first property broken, if any.
    pub violation: Option<Violation>,
    /// Events processed.
    pub events: u64,
    /// Client operations in the checked history.
    pub operations: usize,
    /// Simulated time at the end.
    pub time_ms: Millis,
    /// One line per event (with `trace`).
    pub trace: Vec<String>,
}

#[derive(Clone, Debug)]
enum Request {
    Write(Command),
    Read { key: String, mode: ReadMode },
}

#[derive(Clone, Debug)]
enum Reply {
    Written(WriteOutput),
    Value(Option<String>),
    /// Not taken here (no leader, busy, lost leadership): try again.
    Retry {
        leader_hint: Option<NodeId>,
    },
}

#[derive(Debug)]
enum Event {
    Tick {
        node: NodeId,
        incarnation: u64,
    },
    /// A message, with its sender's incarnation when it was sent.
    Deliver(Message, u64),
    Sync {
        node: NodeId,
        incarnation: u64,
    },
    Request {
        node: NodeId,
        client: u64,
        attempt: u64,
        request: Request,
    },
    Reply {
        client: u64,
        attempt: u64,
        reply: Reply,
    },
    ClientWake {
        client: u64,
        token: u64,
    },
    Nemesis,
    Restart(NodeId),
    /// Crash a leader shortly after its election, if it still leads that term.
    DeposeLeader(NodeId, Term),
    Heal,
}

struct Scheduled {
    time: Millis,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.time, self.seq).cmp(&(other.time, other.seq))
    }
}

struct Node {
    raft: Option<RaftNode>,
    incarnation: u64,
    disk: Disk,
    kv: Kv,
    sync_scheduled: bool,
    /// index -> (term, client, attempt) of proposals made here.
    proposals: BTreeMap<Index, (Term, u64, u64)>,
    /// Reads asked of the core: id -> (client, attempt, key).
    reads: BTreeMap<ReadId, (u64, u64, String)>,
    /// Confirmed reads waiting for the state machine: (index, client, attempt, key).
    ready_reads: Vec<(Index, u64, u64, String)>,
    next_read_id: u64,
    snapshot_every: u64,
}

struct CurrentOp {
    history: usize,
    request: Request,
    attempt: u64,
    attempts: u32,
    /// The latest attempt was sent and not answered yet.
    awaiting_reply: bool,
    /// Some attempt timed out: the write may have taken effect.
    maybe_applied: bool,
}

struct Client {
    seq: u64,
    current: Option<CurrentOp>,
    leader_hint: Option<NodeId>,
    token: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Faults,
    Healing,
}

/// The whole simulated world.
pub struct World {
    options: Options,
    rng: Rng,
    now: Millis,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    nodes: BTreeMap<NodeId, Node>,
    /// Ids never used yet, for servers that join later.
    spares: Vec<NodeId>,
    /// Directed links that drop everything.
    blocked: BTreeSet<(NodeId, NodeId)>,
    drop_rate: f64,
    duplicate_rate: f64,
    long_delay_rate: f64,
    clients: Vec<Client>,
    history: Vec<Operation>,
    invariants: Invariants,
    phase: Phase,
    stop_issuing_at: Millis,
    events: u64,
    trace: Vec<String>,
    config_template: Config,
    next_attempt: u64,
    /// Gap between nemesis actions, drawn per run: calm, busy or frantic.
    nemesis_gap_ms: (Millis, Millis),
    /// Time an fsync takes, drawn per run: a fast disk or a slow one.
    sync_ms: (Millis, Millis),
    /// Probability of crashing a new leader within milliseconds of its election: leaders
    /// that die with uncommitted entries make the histories of the paper's figure 8.
    depose_rate: f64,
    /// The newest (term, leader) seen.
    last_leader: Option<(Term, NodeId)>,
}

impl World {
    /// Builds the world for `options` (nothing runs yet).
    pub fn new(options: Options) -> World {
        let mut rng = Rng::new(options.seed);
        let voters = if options.nodes == 0 {
            [3usize, 5, 7][rng.range(0, 3) as usize]
        } else {
            options.nodes
        };
        let mut template = Config::new(NodeId(1));
        template.election_ticks = ELECTION_TICKS;
        template.heartbeat_ticks = 2;
        template.pre_vote = rng.chance(0.8);
        template.check_quorum = rng.chance(0.8);
        template.entries_per_msg = rng.range(1, 9) as usize;
        template.catchup_multiplier = rng.range(1, 5) as usize;
        template.max_inflight_msgs = rng.range(1, 9) as usize;
        template.snapshot_chunk_bytes = rng.range(16, 256) as usize;
        template.max_uncommitted_bytes = if rng.chance(0.2) { 400 } else { 1 << 20 };
        template.promote_lag_entries_max = 4;
        #[cfg(feature = "broken-variants")]
        {
            template.bug = options.bug;
        }
        let membership = Membership::with_voters((1..=voters as u64).map(NodeId));
        let spares = (voters as u64 + 1..=voters as u64 + 3)
            .map(NodeId)
            .rev()
            .collect();
        let clients = (0..rng.range(2, 6))
            .map(|_| Client {
                seq: 0,
                current: None,
                leader_hint: None,
                token: 0,
            })
            .collect();
        let nemesis_gap_ms = [(100, 600), (30, 200), (10, 80)][rng.range(0, 3) as usize];
        let sync_ms = [(1, 4), (1, 25)][rng.range(0, 2) as usize];
        let depose_rate = if options.faults.crashes {
            [0.0, 0.0, 0.3, 0.7][rng.range(0, 4) as usize]
        } else {
            0.0
        };
        let mut world = World {
            depose_rate,
            last_leader: None,
            nemesis_gap_ms,
            sync_ms,
            stop_issuing_at: options.fault_ms + options.heal_ms / 3,
            options,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: BTreeMap::new(),
            spares,
            blocked: BTreeSet::new(),
            drop_rate: 0.0,
            duplicate_rate: 0.0,
            long_delay_rate: 0.0,
            clients,
            history: Vec::new(),
            invariants: Invariants::default(),
            phase: Phase::Faults,
            events: 0,
            trace: Vec::new(),
            config_template: template,
            next_attempt: 0,
        };
        for id in membership.voters.clone() {
            world.add_node(id, Snapshot::bootstrap(membership.clone()));
        }
        for client in 0..world.clients.len() as u64 {
            let at = world.rng.range(0, 50);
            world.schedule(at, Event::ClientWake { client, token: 0 });
        }
        let first = world.rng.range(nemesis_gap_ms.0, nemesis_gap_ms.1);
        world.schedule(first, Event::Nemesis);
        let heal_at = world.options.fault_ms;
        world.schedule(heal_at, Event::Heal);
        world
    }

    fn schedule(&mut self, delay: Millis, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            time: self.now + delay,
            seq: self.seq,
            event,
        }));
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if self.options.trace {
            let text = line();
            self.trace.push(format!("{:>6}ms {text}", self.now));
        }
    }

    fn add_node(&mut self, id: NodeId, snapshot: Snapshot) {
        let every = if self.options.faults.snapshots {
            self.rng.range(10, 60)
        } else {
            u64::MAX
        };
        let node = Node {
            raft: None,
            incarnation: 0,
            disk: Disk::new(snapshot),
            kv: Kv::default(),
            sync_scheduled: false,
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            ready_reads: Vec::new(),
            next_read_id: 0,
            snapshot_every: every,
        };
        self.nodes.insert(id, node);
        self.start_node(id);
    }

    /// Boots a node from its disk.
    fn start_node(&mut self, id: NodeId) {
        let mut config = self.config_template.clone();
        config.id = id;
        let seed = self.rng.next_u64();
        let phase = self.rng.range(0, TICK_MS);
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let recovered = node.disk.recover();
        node.kv = Kv::decode(&recovered.snapshot.data).unwrap_or_default();
        node.incarnation += 1;
        node.sync_scheduled = false;
        node.proposals.clear();
        node.reads.clear();
        node.ready_reads.clear();
        node.raft = RaftNode::new(config, recovered, seed).ok();
        let incarnation = node.incarnation;
        self.log(|| format!("{id} starts (incarnation {incarnation})"));
        self.schedule(
            phase + 1,
            Event::Tick {
                node: id,
                incarnation,
            },
        );
    }

    fn crash(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        if node.raft.take().is_none() {
            return Ok(());
        }
        node.incarnation += 1;
        node.disk.crash(&mut self.rng).map_err(|e| Violation {
            property: "log contract",
            detail: format!(
                "{id}: append at {} leaves a hole after {}",
                e.got,
                e.expected.prev()
            ),
        })?;
        self.log(|| format!("{id} crashes"));
        Ok(())
    }

    /// Runs to the end (or the first violation).
    pub fn run(mut self) -> Report {
        let deadline = self.options.fault_ms + self.options.heal_ms;
        let mut violation = None;
        while let Some(Reverse(next)) = self.queue.pop() {
            if next.time > deadline {
                break;
            }
            self.now = next.time;
            self.events += 1;
            if self.events > MAX_EVENTS {
                violation = Some(Violation {
                    property: "bounded work",
                    detail: format!("more than {MAX_EVENTS} events: a message storm or a livelock"),
                });
                break;
            }
            if let Err(v) = self.handle(next.event) {
                violation = Some(v);
                break;
            }
            if self.phase == Phase::Healing && self.now > self.stop_issuing_at && self.all_done() {
                break;
            }
        }
        if violation.is_none() {
            violation = self.final_checks();
        }
        Report {
            seed: self.options.seed,
            violation,
            events: self.events,
            operations: self.history.len(),
            time_ms: self.now,
            trace: self.trace,
        }
    }

    fn all_done(&self) -> bool {
        self.clients.iter().all(|c| c.current.is_none())
    }

    fn final_checks(&mut self) -> Option<Violation> {
        if !self.all_done() {
            let pending = self.clients.iter().filter(|c| c.current.is_some()).count();
            return Some(Violation {
                property: "liveness",
                detail: format!(
                    "{pending} client operations still unfinished {} ms after every fault healed",
                    self.options.heal_ms
                ),
            });
        }
        let healed_write = self.history.iter().any(|op| {
            op.outcome == Outcome::Ok
                && op.invoke >= self.options.fault_ms
                && !matches!(op.kind, OpKind::Get { .. })
        });
        if !healed_write {
            return Some(Violation {
                property: "liveness",
                detail: "no write succeeded after every fault healed".to_string(),
            });
        }
        match rkv_check::check(&self.history) {
            rkv_check::Verdict::Linearizable => None,
            rkv_check::Verdict::NotLinearizable(v) => Some(Violation {
                property: "linearizability",
                detail: format!(
                    "key {}: minimal failing history:\n{}",
                    v.key,
                    render_ops(&v.minimal)
                ),
            }),
            rkv_check::Verdict::Inconclusive { key, reason } => Some(Violation {
                property: "linearizability (inconclusive)",
                detail: format!("key {key}: {reason}"),
            }),
        }
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Tick { node, incarnation } => {
                if self
                    .nodes
                    .get(&node)
                    .is_some_and(|n| n.incarnation == incarnation && n.raft.is_some())
                {
                    self.schedule(TICK_MS, Event::Tick { node, incarnation });
                    self.with_raft(node, RaftNode::tick)?;
                }
            }
            Event::Deliver(message, incarnation) => {
                let to = message.to;
                if self.blocked.contains(&(message.from, to)) {
                    return Ok(());
                }
                // A crash breaks the sender's connections: most of what it had in flight is lost.
                let sender_crashed = self
                    .nodes
                    .get(&message.from)
                    .is_some_and(|n| n.incarnation != incarnation);
                if sender_crashed && self.rng.chance(0.8) {
                    return Ok(());
                }
                self.log(|| {
                    format!(
                        "{} -> {}: {} {:?}",
                        message.from, to, message.term, message.body
                    )
                });
                self.with_raft(to, |raft| raft.step(message))?;
            }
            Event::Sync { node, incarnation } => self.sync(node, incarnation)?,
            Event::Request {
                node,
                client,
                attempt,
                request,
            } => {
                self.request(node, client, attempt, request)?;
            }
            Event::Reply {
                client,
                attempt,
                reply,
            } => self.client_reply(client, attempt, reply),
            Event::ClientWake { client, token } => self.client_wake(client, token),
            Event::Nemesis => {
                if self.phase == Phase::Faults {
                    self.nemesis()?;
                    let next = self.rng.range(self.nemesis_gap_ms.0, self.nemesis_gap_ms.1);
                    self.schedule(next, Event::Nemesis);
                }
            }
            Event::Restart(id) => {
                if self.nodes.get(&id).is_some_and(|n| n.raft.is_none()) {
                    self.start_node(id);
                }
            }
            Event::DeposeLeader(id, term) => {
                let leads = self
                    .nodes
                    .get(&id)
                    .and_then(|n| n.raft.as_ref())
                    .is_some_and(|r| r.term() == term);
                if leads && self.phase == Phase::Faults {
                    if self.rng.chance(0.5) || !self.options.faults.partitions {
                        self.crash(id)?;
                        let downtime = self.rng.range(5, 300);
                        self.schedule(downtime, Event::Restart(id));
                    } else {
                        let all: Vec<NodeId> = self.nodes.keys().copied().collect();
                        for other in all {
                            self.blocked.insert((id, other));
                            self.blocked.insert((other, id));
                        }
                        self.log(|| format!("nemesis: isolate new leader {id}"));
                    }
                }
            }
            Event::Heal => self.heal(),
        }
        self.watch_leader();
        self.check_all()
    }

    /// Notices new leaders, and deposes some of them at once.
    fn watch_leader(&mut self) {
        let Some(leader) = self.leader() else { return };
        let Some(term) = self
            .nodes
            .get(&leader)
            .and_then(|n| n.raft.as_ref())
            .map(RaftNode::term)
        else {
            return;
        };
        if self.last_leader.is_some_and(|(t, _)| t >= term) {
            return;
        }
        self.last_leader = Some((term, leader));
        self.log(|| format!("{leader} leads {term}"));
        if self.phase == Phase::Faults && self.rng.chance(self.depose_rate) {
            let delay = if self.rng.chance(0.5) {
                self.rng.range(0, 3)
            } else {
                self.rng.range(3, 30)
            };
            self.schedule(delay, Event::DeposeLeader(leader, term));
        }
    }

    fn check_all(&mut self) -> Result<(), Violation> {
        for node in self.nodes.values() {
            if let Some(raft) = &node.raft {
                self.invariants.check_node(raft)?;
            }
        }
        Ok(())
    }

    /// Feeds one input to a live node and performs the actions it emits.
    fn with_raft(
        &mut self,
        id: NodeId,
        input: impl FnOnce(&mut RaftNode),
    ) -> Result<(), Violation> {
        let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) else {
            return Ok(());
        };
        input(raft);
        self.drain(id)
    }

    fn drain(&mut self, id: NodeId) -> Result<(), Violation> {
        loop {
            let Some(node) = self.nodes.get_mut(&id) else {
                return Ok(());
            };
            let Some(raft) = node.raft.as_mut() else {
                return Ok(());
            };
            let actions = raft.take_actions();
            if actions.is_empty() {
                return Ok(());
            }
            for action in actions {
                self.perform(id, action)?;
            }
        }
    }

    fn perform(&mut self, id: NodeId, action: Action) -> Result<(), Violation> {
        match action {
            Action::SaveHardState(hs) => {
                if let Some(node) = self.nodes.get_mut(&id) {
                    node.disk.hard_state = hs;
                }
            }
            Action::Append(entries) => {
                let Some(node) = self.nodes.get_mut(&id) else {
                    return Ok(());
                };
                if let Some(raft) = &node.raft {
                    self.invariants.check_append(raft, &entries)?;
                }
                node.disk.unsynced.push(entries);
                if !node.sync_scheduled {
                    node.sync_scheduled = true;
                    let incarnation = node.incarnation;
                    let latency = self.rng.range(self.sync_ms.0, self.sync_ms.1);
                    self.schedule(
                        latency,
                        Event::Sync {
                            node: id,
                            incarnation,
                        },
                    );
                }
            }
            Action::Send(message) => self.send(message),
            Action::Apply(entries) => self.apply(id, entries)?,
            Action::InstallSnapshot(snapshot) => {
                let Some(node) = self.nodes.get_mut(&id) else {
                    return Ok(());
                };
                node.disk.sync().map_err(|e| hole(id, &e))?;
                node.disk.entries.clear();
                node.kv = Kv::decode(&snapshot.data).unwrap_or_default();
                let index = snapshot.meta.index;
                node.disk.snapshot = snapshot;
                node.proposals.retain(|i, _| *i > index);
                self.log(|| format!("{id} installs snapshot at {index}"));
                self.with_raft(id, |raft| raft.snapshot_installed(index))?;
            }
            Action::CompactLog(index) => {
                if let Some(node) = self.nodes.get_mut(&id) {
                    node.disk.compact(index);
                }
            }
            Action::ReadReady { id: read, index } => {
                let Some(node) = self.nodes.get_mut(&id) else {
                    return Ok(());
                };
                if let Some((client, attempt, key)) = node.reads.remove(&read) {
                    node.ready_reads.push((index, client, attempt, key));
                    self.serve_reads(id);
                }
            }
            Action::ReadFailed { id: read, error } => {
                let Some(node) = self.nodes.get_mut(&id) else {
                    return Ok(());
                };
                if let Some((client, attempt, _)) = node.reads.remove(&read) {
                    let leader_hint = match error {
                        rkv_raft::ReadError::NotLeader(n) => n.leader_hint,
                        _ => None,
                    };
                    self.reply(client, attempt, Reply::Retry { leader_hint });
                }
            }
        }
        Ok(())
    }

    fn send(&mut self, message: Message) {
        if self.blocked.contains(&(message.from, message.to)) {
            return;
        }
        if self.rng.chance(self.drop_rate) {
            return;
        }
        let incarnation = self.nodes.get(&message.from).map_or(0, |n| n.incarnation);
        let copies = if self.rng.chance(self.duplicate_rate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if self.rng.chance(self.long_delay_rate) {
                self.rng.range(20, 120)
            } else {
                self.rng.range(1, 4)
            };
            self.schedule(delay, Event::Deliver(message.clone(), incarnation));
        }
    }

    fn sync(&mut self, id: NodeId, incarnation: u64) -> Result<(), Violation> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        if node.incarnation != incarnation || node.raft.is_none() {
            return Ok(());
        }
        node.sync_scheduled = false;
        let (index, term) = node.disk.sync().map_err(|e| hole(id, &e))?;
        self.with_raft(id, |raft| raft.persisted(index, term))
    }

    fn apply(&mut self, id: NodeId, entries: Vec<rkv_raft::Entry>) -> Result<(), Violation> {
        let term = self
            .nodes
            .get(&id)
            .and_then(|n| n.raft.as_ref())
            .map_or(Term(0), RaftNode::term);
        self.invariants.check_apply(id, term, &entries)?;
        let mut replies = Vec::new();
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        let mut last = None;
        for entry in &entries {
            let output = match &entry.payload {
                Payload::Command(data) => Command::decode(data).and_then(|c| node.kv.apply(&c)),
                _ => None,
            };
            if let Some((term, client, attempt)) = node.proposals.remove(&entry.index) {
                let reply = match output {
                    Some(out) if term == entry.term => Reply::Written(out),
                    _ => Reply::Retry { leader_hint: None },
                };
                replies.push((client, attempt, reply));
            }
            last = Some(entry.index);
        }
        // Proposals below the applied index that were not applied as proposed are lost.
        if let Some(last) = last {
            let lost: Vec<Index> = node.proposals.range(..=last).map(|(i, _)| *i).collect();
            for index in lost {
                if let Some((_, client, attempt)) = node.proposals.remove(&index) {
                    replies.push((client, attempt, Reply::Retry { leader_hint: None }));
                }
            }
        }
        for (client, attempt, reply) in replies {
            self.reply(client, attempt, reply);
        }
        self.serve_reads(id);
        self.maybe_snapshot(id)
    }

    fn applied_index(&self, id: NodeId) -> Index {
        self.nodes
            .get(&id)
            .and_then(|n| n.raft.as_ref())
            .map_or(Index(0), |r| r.status().applied)
    }

    fn serve_reads(&mut self, id: NodeId) {
        let applied = self.applied_index(id);
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut node.ready_reads)
            .into_iter()
            .partition(|(index, ..)| *index <= applied);
        node.ready_reads = waiting;
        let answers: Vec<_> = ready
            .into_iter()
            .map(|(_, client, attempt, key)| (client, attempt, node.kv.get(&key)))
            .collect();
        for (client, attempt, value) in answers {
            self.reply(client, attempt, Reply::Value(value));
        }
    }

    fn maybe_snapshot(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        let Some(raft) = node.raft.as_ref() else {
            return Ok(());
        };
        let applied = raft.status().applied;
        if applied.0 < raft.snapshot_index().0 + node.snapshot_every {
            return Ok(());
        }
        let Some(meta) = raft.snapshot_meta(applied) else {
            return Ok(());
        };
        let data = Bytes::from(node.kv.encode());
        // Durable first, then tell the core (the driver contract).
        node.disk.snapshot = Snapshot {
            meta,
            data: data.clone(),
        };
        self.with_raft(id, |raft| {
            let _ = raft.snapshot_taken(applied, data);
        })
    }

    // ----- clients -----

    fn reply(&mut self, client: u64, attempt: u64, reply: Reply) {
        let delay = self.rng.range(1, 4);
        self.schedule(
            delay,
            Event::Reply {
                client,
                attempt,
                reply,
            },
        );
    }

    fn request(
        &mut self,
        id: NodeId,
        client: u64,
        attempt: u64,
        request: Request,
    ) -> Result<(), Violation> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        let Some(raft) = node.raft.as_mut() else {
            return Ok(());
        };
        match request {
            Request::Write(command) => match raft.propose(Bytes::from(command.encode())) {
                Ok((term, index)) => {
                    node.proposals.insert(index, (term, client, attempt));
                }
                Err(ProposeError::NotLeader(n)) => {
                    self.reply(
                        client,
                        attempt,
                        Reply::Retry {
                            leader_hint: n.leader_hint,
                        },
                    );
                }
                Err(_) => self.reply(
                    client,
                    attempt,
                    Reply::Retry {
                        leader_hint: Some(id),
                    },
                ),
            },
            Request::Read { key, mode } => {
                node.next_read_id += 1;
                let read = ReadId(node.next_read_id);
                match raft.read(read, mode) {
                    Ok(()) => {
                        node.reads.insert(read, (client, attempt, key));
                    }
                    Err(rkv_raft::ReadError::NotLeader(n)) => {
                        self.reply(
                            client,
                            attempt,
                            Reply::Retry {
                                leader_hint: n.leader_hint,
                            },
                        );
                    }
                    Err(_) => self.reply(client, attempt, Reply::Retry { leader_hint: None }),
                }
            }
        }
        self.drain(id)
    }

    fn client_wake(&mut self, client: u64, token: u64) {
        let Some(c) = self.clients.get(client as usize) else {
            return;
        };
        if token != c.token {
            return;
        }
        match &c.current {
            None => self.issue(client),
            Some(op) => {
                let timed_out = op.awaiting_reply;
                self.retry(client, timed_out);
            }
        }
    }

    fn issue(&mut self, client: u64) {
        if self.now >= self.stop_issuing_at {
            return;
        }
        let key = KEYS[self.rng.range(0, KEYS.len() as u64) as usize].to_string();
        let dice = self.rng.range(0, 100);
        let lease = self.config_template.check_quorum && self.rng.chance(0.3);
        let Some(c) = self.clients.get_mut(client as usize) else {
            return;
        };
        c.seq += 1;
        let value = format!("c{client}s{}", c.seq);
        let (request, kind) = if dice < 40 {
            let mode = if lease {
                ReadMode::Lease
            } else {
                ReadMode::Linearizable
            };
            (
                Request::Read {
                    key: key.clone(),
                    mode,
                },
                OpKind::Get { value: None },
            )
        } else {
            let write = if dice < 70 {
                Write::Put {
                    key: key.clone(),
                    value: value.clone(),
                }
            } else if dice < 80 {
                Write::Delete { key: key.clone() }
            } else {
                let expected = if self.rng.chance(0.3) {
                    None
                } else {
                    let other = self.rng.range(0, self.clients.len() as u64);
                    let seq = self.rng.range(1, 20);
                    Some(format!("c{other}s{seq}"))
                };
                Write::Cas {
                    key: key.clone(),
                    expected,
                    new: value.clone(),
                }
            };
            let kind = match &write {
                Write::Put { value, .. } => OpKind::Put {
                    value: value.clone(),
                },
                Write::Delete { .. } => OpKind::Delete,
                Write::Cas { expected, new, .. } => OpKind::Cas {
                    expected: expected.clone(),
                    new: new.clone(),
                    swapped: false,
                },
            };
            let Some(c) = self.clients.get_mut(client as usize) else {
                return;
            };
            (
                Request::Write(Command {
                    client,
                    seq: c.seq,
                    write,
                }),
                kind,
            )
        };
        self.history.push(Operation {
            client,
            key,
            invoke: self.now,
            complete: self.now,
            outcome: Outcome::Unknown,
            kind,
        });
        let history = self.history.len() - 1;
        if let Some(c) = self.clients.get_mut(client as usize) {
            c.current = Some(CurrentOp {
                history,
                request,
                attempt: 0,
                attempts: 0,
                awaiting_reply: false,
                maybe_applied: false,
            });
        }
        self.retry(client, false);
    }

    /// Sends the current operation again (after a timeout when `timed_out`).
    fn retry(&mut self, client: u64, timed_out: bool) {
        let max_attempts = if self.phase == Phase::Faults {
            12
        } else {
            u32::MAX
        };
        let live: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.raft.is_some())
            .map(|(id, _)| *id)
            .collect();
        let random = self.rng.pick(&live);
        self.next_attempt += 1;
        let attempt = self.next_attempt;
        let Some(c) = self.clients.get_mut(client as usize) else {
            return;
        };
        let Some(op) = c.current.as_mut() else { return };
        if timed_out && matches!(op.request, Request::Write(_)) {
            op.maybe_applied = true;
        }
        if op.attempts >= max_attempts {
            let outcome = if op.maybe_applied {
                Outcome::Unknown
            } else {
                Outcome::Failed
            };
            let history = op.history;
            c.current = None;
            if let Some(entry) = self.history.get_mut(history) {
                entry.outcome = outcome;
                entry.complete = self.now;
            }
            c.token += 1;
            let token = c.token;
            self.schedule(1, Event::ClientWake { client, token });
            return;
        }
        op.attempts += 1;
        op.attempt = attempt;
        op.awaiting_reply = true;
        let target = c.leader_hint.filter(|_| self.rng.chance(0.8)).or(random);
        let request = op.request.clone();
        c.token += 1;
        let token = c.token;
        self.schedule(ATTEMPT_TIMEOUT_MS, Event::ClientWake { client, token });
        if let Some(node) = target {
            let delay = self.rng.range(1, 4);
            self.schedule(
                delay,
                Event::Request {
                    node,
                    client,
                    attempt,
                    request,
                },
            );
        }
    }

    fn client_reply(&mut self, client: u64, attempt: u64, reply: Reply) {
        let now = self.now;
        let Some(c) = self.clients.get_mut(client as usize) else {
            return;
        };
        let Some(op) = c.current.as_mut() else { return };
        if op.attempt != attempt {
            return;
        }
        let history = op.history;
        match reply {
            Reply::Retry { leader_hint } => {
                c.leader_hint = leader_hint;
                c.token += 1;
                let token = c.token;
                // A definite "not taken": the retry after the backoff is not a timeout.
                op.awaiting_reply = false;
                let backoff = self.rng.range(5, 40);
                self.schedule(backoff, Event::ClientWake { client, token });
                return;
            }
            Reply::Written(output) => {
                if let Some(entry) = self.history.get_mut(history) {
                    if let (OpKind::Cas { swapped, .. }, WriteOutput::Swapped(s)) =
                        (&mut entry.kind, output)
                    {
                        *swapped = s;
                    }
                    entry.outcome = Outcome::Ok;
                    entry.complete = now;
                }
            }
            Reply::Value(value) => {
                if let Some(entry) = self.history.get_mut(history) {
                    entry.kind = OpKind::Get { value };
                    entry.outcome = Outcome::Ok;
                    entry.complete = now;
                }
            }
        }
        c.current = None;
        c.token += 1;
        let token = c.token;
        let think = self.rng.range(0, 20);
        self.schedule(think, Event::ClientWake { client, token });
    }

    // ----- nemesis -----

    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| {
                n.raft
                    .as_ref()
                    .filter(|r| r.role() == Role::Leader)
                    .map(|r| (r.term(), *id))
            })
            .max()
            .map(|(_, id)| id)
    }

    fn live_nodes(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raft.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    fn nemesis(&mut self) -> Result<(), Violation> {
        let faults = self.options.faults;
        let choice = self.rng.range(0, 9);
        let all: Vec<NodeId> = self.nodes.keys().copied().collect();
        match choice {
            0 | 1 if faults.crashes => {
                let victim = if self.rng.chance(0.5) {
                    self.leader()
                } else {
                    self.rng.pick(&self.live_nodes())
                };
                if let Some(victim) = victim {
                    self.crash(victim)?;
                    let downtime = self.rng.range(20, 1500);
                    self.schedule(downtime, Event::Restart(victim));
                }
            }
            2 if faults.crashes && self.rng.chance(0.3) => {
                for id in self.live_nodes() {
                    self.crash(id)?;
                    let downtime = self.rng.range(50, 800);
                    self.schedule(downtime, Event::Restart(id));
                }
            }
            3 | 4 if faults.partitions => {
                self.blocked.clear();
                match self.rng.range(0, 3) {
                    0 => {
                        let victim = if self.rng.chance(0.5) {
                            self.leader()
                        } else {
                            self.rng.pick(&all)
                        };
                        if let Some(victim) = victim {
                            for other in &all {
                                self.blocked.insert((victim, *other));
                                self.blocked.insert((*other, victim));
                            }
                            self.log(|| format!("nemesis: isolate {victim}"));
                        }
                    }
                    1 => {
                        let side: BTreeSet<NodeId> = all
                            .iter()
                            .copied()
                            .filter(|_| self.rng.chance(0.5))
                            .collect();
                        for a in &all {
                            for b in &all {
                                if side.contains(a) != side.contains(b) {
                                    self.blocked.insert((*a, *b));
                                }
                            }
                        }
                        self.log(|| format!("nemesis: split {side:?}"));
                    }
                    _ => {
                        for _ in 0..self.rng.range(1, 4) {
                            if let (Some(a), Some(b)) = (self.rng.pick(&all), self.rng.pick(&all)) {
                                self.blocked.insert((a, b));
                            }
                        }
                        self.log(|| "nemesis: one-way cuts".to_string());
                    }
                }
            }
            5 if faults.partitions => {
                self.blocked.clear();
                self.log(|| "nemesis: heal partitions".to_string());
            }
            6 if faults.network => {
                self.drop_rate = [0.0, 0.02, 0.1, 0.3][self.rng.range(0, 4) as usize];
                self.duplicate_rate = [0.0, 0.05, 0.2][self.rng.range(0, 3) as usize];
                self.long_delay_rate = [0.0, 0.05, 0.2][self.rng.range(0, 3) as usize];
            }
            7 if faults.membership => self.change_membership()?,
            8 if faults.transfers => {
                if let Some(leader) = self.leader() {
                    let voters: Vec<NodeId> =
                        self.membership_of(leader).voters.into_iter().collect();
                    if let Some(target) = self.rng.pick(&voters) {
                        self.log(|| format!("nemesis: transfer {leader} -> {target}"));
                        self.with_raft(leader, |r| {
                            let _ = r.transfer_leadership(target);
                        })?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn membership_of(&self, id: NodeId) -> Membership {
        self.nodes
            .get(&id)
            .and_then(|n| n.raft.as_ref())
            .map(|r| r.membership().clone())
            .unwrap_or_default()
    }

    fn change_membership(&mut self) -> Result<(), Violation> {
        let Some(leader) = self.leader() else {
            return Ok(());
        };
        let membership = self.membership_of(leader);
        let learners: Vec<NodeId> = membership.learners.iter().copied().collect();
        let voters: Vec<NodeId> = membership.voters.iter().copied().collect();
        let change = if let Some(learner) = self.rng.pick(&learners) {
            if self.rng.chance(0.8) {
                MembershipChange::Promote(learner)
            } else {
                MembershipChange::Remove(learner)
            }
        } else if voters.len() > 3 && self.rng.chance(0.5) {
            let Some(victim) = self.rng.pick(&voters) else {
                return Ok(());
            };
            MembershipChange::Remove(victim)
        } else if voters.len() < 7 {
            let Some(spare) = self.spares.pop() else {
                return Ok(());
            };
            self.add_node(spare, Snapshot::bootstrap(Membership::default()));
            MembershipChange::AddLearner(spare)
        } else {
            return Ok(());
        };
        self.log(|| format!("nemesis: {change:?} via {leader}"));
        self.with_raft(leader, |r| {
            let _ = r.change_membership(change);
        })
    }

    fn heal(&mut self) {
        self.phase = Phase::Healing;
        self.blocked.clear();
        self.drop_rate = 0.0;
        self.duplicate_rate = 0.0;
        self.long_delay_rate = 0.0;
        self.log(|| "heal: every fault repaired".to_string());
        let down: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.raft.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in down {
            self.start_node(id);
        }
    }
}

fn hole(id: NodeId, e: &crate::disk::HoleError) -> Violation {
    Violation {
        property: "log contract",
        detail: format!(
            "{id}: append at {} leaves a hole (expected {})",
            e.got, e.expected
        ),
    }
}

fn render_ops(ops: &[Operation]) -> String {
    ops.iter()
        .map(|op| {
            format!(
                "  client {} [{}..{}] {:?} {:?} {}",
                op.client, op.invoke, op.complete, op.outcome, op.kind, op.key
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
