//! The node task and its handle.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rkv_log::{
    FileLog, FileLogOptions, LogStore, LogWriter, Request, SyncPolicy, WriterError, WriterEvent,
};
use rkv_raft::{
    Action, Config, Entry, HardState, Index, Membership, MembershipChange, Message, NodeId,
    Payload, RaftNode, ReadId, ReadMode, Role, Snapshot, SnapshotMeta, Status, Term,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{EngineError, StartError};
use crate::state_machine::StateMachine;
use crate::transport::{PeerInbox, Transport};

/// How a read is confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadLevel {
    /// ReadIndex: confirmed by a quorum heartbeat round; never stale.
    Linearizable,
    /// The leader's lease (CheckQuorum on; assumes clocks tick at about the same rate).
    Lease,
    /// This replica's state as it is: fast, may lag.
    Stale,
}

/// The smallest effective [`EngineConfig::cache_entries`]: fewer would snapshot the
/// state machine almost every write.
pub const CACHE_ENTRIES_MIN: usize = 1000;

/// Settings of one node.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The Raft core's settings (its `id` is this node's id).
    pub raft: Config,
    /// How long one tick lasts.
    pub tick: Duration,
    /// Where the log, hard state and snapshots live.
    pub data_dir: PathBuf,
    /// When to fdatasync.
    pub sync: SyncPolicy,
    /// Most log entries kept in memory (rkvd's `-cache`). The core keeps every entry
    /// after the latest snapshot in memory (followers catching up and the apply loop
    /// read them there), so this bounds how many may pile up: a snapshot is taken once
    /// this many (at least [`CACHE_ENTRIES_MIN`]) have been applied since the last one,
    /// or sooner (see `snapshot_entries`). The file log keeps no second copy.
    pub cache_entries: usize,
    /// Take a snapshot (and compact the log) at least every this many applied entries.
    /// Where in that run a node takes it depends on its id, so that the nodes of a
    /// cluster take theirs at different moments and a quorum keeps committing.
    pub snapshot_entries: u64,
    /// The founding voters, used only if the data directory holds no state yet. `None`
    /// starts a node that waits to be added to an existing cluster.
    pub bootstrap: Option<Membership>,
    /// Capacity of the request mailbox; a full mailbox answers Busy.
    pub mailbox_capacity: usize,
    /// Requests queued for the log writer before the node task waits for it.
    pub log_queue_capacity: usize,
}

impl EngineConfig {
    /// Defaults for node `id` storing its state in `data_dir`.
    pub fn new(id: NodeId, data_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            raft: Config::new(id),
            tick: Duration::from_millis(10),
            data_dir: data_dir.into(),
            sync: SyncPolicy::Always,
            cache_entries: 4096,
            snapshot_entries: 100_000,
            bootstrap: None,
            mailbox_capacity: 65_536,
            log_queue_capacity: 65_536,
        }
    }
}

/// What every handle can see of the node at any moment without asking it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The node's role.
    pub role: Role,
    /// Its term.
    pub term: Term,
    /// The leader it follows.
    pub leader: Option<NodeId>,
    /// Its commit index.
    pub commit: Index,
    /// The index its state machine has applied.
    pub applied: Index,
    /// Why it stopped, if it did.
    pub stopped: Option<String>,
}

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;
type ReadFn<S> = Box<dyn FnOnce(Result<&S, EngineError>) + Send>;

enum Input<S: StateMachine> {
    Propose {
        command: Bytes,
        reply: Reply<S::Output>,
    },
    Read {
        level: ReadLevel,
        run: ReadFn<S>,
    },
    ChangeMembership {
        change: MembershipChange,
        reply: Reply<Index>,
    },
    Transfer {
        target: NodeId,
        reply: Reply<()>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
}

/// A handle to a running node. Cheap to clone; the node stops when every handle is dropped.
pub struct Engine<S: StateMachine> {
    id: NodeId,
    inbox: mpsc::Sender<Input<S>>,
    peers: PeerInbox,
    observed: watch::Receiver<Observed>,
}

impl<S: StateMachine> Clone for Engine<S> {
    fn clone(&self) -> Self {
        Engine {
            id: self.id,
            inbox: self.inbox.clone(),
            peers: self.peers.clone(),
            observed: self.observed.clone(),
        }
    }
}

impl<S: StateMachine> Engine<S> {
    /// Opens (or creates) the node's data directory, recovers its state and starts the
    /// node task on the current tokio runtime (which must be multi-threaded: the node
    /// task may wait on the log writer when its queue is full).
    pub fn start(
        config: EngineConfig,
        mut state_machine: S,
        transport: impl Transport,
    ) -> Result<Engine<S>, StartError> {
        config.raft.validate().map_err(StartError::Config)?;
        let multi_threaded = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if !multi_threaded {
            return Err(StartError::Runtime);
        }
        let options = FileLogOptions {
            sync: config.sync,
            // The core holds the entries; a cache here would only copy them again.
            cache_entries: 0,
            ..FileLogOptions::default()
        };
        let (mut store, mut recovered, report) =
            FileLog::open_dir(config.data_dir.join("log"), options).map_err(StartError::Log)?;
        if report.torn_tail.is_some() || report.repaired.is_some() {
            tracing::warn!(?report, "log recovery cut a torn tail");
        }
        let fresh = recovered.snapshot.meta.index == Index(0)
            && recovered.entries.is_empty()
            && recovered.hard_state == HardState::default()
            && recovered.snapshot.meta.membership == Membership::default();
        if fresh && let Some(membership) = &config.bootstrap {
            let snapshot = Snapshot::bootstrap(membership.clone());
            store.save_snapshot(&snapshot).map_err(StartError::Log)?;
            recovered.snapshot = snapshot;
        }
        if recovered.snapshot.meta.index > Index(0) {
            state_machine
                .restore(&recovered.snapshot)
                .map_err(StartError::Snapshot)?;
        }
        let snapshot_index = recovered.snapshot.meta.index;
        let seed = seed_for(config.raft.id);
        let raft =
            RaftNode::new(config.raft.clone(), recovered, seed).map_err(StartError::Config)?;

        // Writer events: at most one per request (one Durable per batch of appends). The
        // writer could only block here if the node handed it more than this many requests
        // without reading a single event in between, while itself blocked on a full
        // writer queue; the node reads events first in every turn of its loop, and one
        // turn submits far fewer requests than this holds.
        let (log_tx, log_rx) =
            mpsc::channel(config.log_queue_capacity + rkv_log::BATCH_REQUESTS_MAX + 16);
        let writer = LogWriter::spawn(store, config.log_queue_capacity, move |event| {
            let _ = log_tx.blocking_send(event);
        });
        let snapshot_entries = config
            .snapshot_entries
            .min(config.cache_entries.max(CACHE_ENTRIES_MIN) as u64)
            .max(1);
        let (inbox, inbox_rx) = mpsc::channel(config.mailbox_capacity);
        let (peers, peers_rx) = mpsc::channel(config.mailbox_capacity);
        let observed = Observed {
            role: raft.role(),
            term: raft.term(),
            leader: raft.leader(),
            commit: raft.commit_index(),
            applied: snapshot_index,
            stopped: None,
        };
        let (observed_tx, observed_rx) = watch::channel(observed);
        let node = Node {
            raft,
            state_machine,
            transport,
            writer: Some(writer),
            proposals: BTreeMap::new(),
            appends_in_flight: VecDeque::new(),
            ticks: 0,
            changes: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_read: 0,
            ready_reads: VecDeque::new(),
            deferred: VecDeque::new(),
            awaiting_hard_state: None,
            applied: snapshot_index,
            last_snapshot: snapshot_index,
            snapshot_entries,
            snapshot_phase: snapshot_phase(config.raft.id, snapshot_entries),
            own_snapshot: None,
            encoding_snapshot: false,
            encoded: mpsc::channel(1),
            installing: None,
            observed: observed_tx,
            stopped: None,
        };
        let tick = config.tick;
        tokio::spawn(node.run(inbox_rx, peers_rx, log_rx, tick));
        Ok(Engine {
            id: config.raft.id,
            inbox,
            peers,
            observed: observed_rx,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Where a transport delivers this node's inbound peer messages.
    pub fn peer_inbox(&self) -> PeerInbox {
        self.peers.clone()
    }

    /// The latest observed state.
    pub fn observed(&self) -> Observed {
        self.observed.borrow().clone()
    }

    /// A receiver that changes whenever the observed state does.
    pub fn watch(&self) -> watch::Receiver<Observed> {
        self.observed.clone()
    }

    fn submit(&self, input: Input<S>) -> Result<(), EngineError> {
        self.inbox.try_send(input).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                EngineError::Busy("the node's mailbox is full".into())
            }
            mpsc::error::TrySendError::Closed(_) => EngineError::Stopped(self.stop_reason()),
        })
    }

    fn stop_reason(&self) -> String {
        self.observed
            .borrow()
            .stopped
            .clone()
            .unwrap_or_else(|| "shut down".into())
    }

    /// Waits for an answer. A reply channel closed without one means the node task
    /// ended while the request was in it: for a write, whether it applies is unknown.
    async fn wait<T>(
        &self,
        rx: oneshot::Receiver<Result<T, EngineError>>,
        closed: fn(String) -> EngineError,
    ) -> Result<T, EngineError> {
        rx.await.unwrap_or_else(|_| Err(closed(self.stop_reason())))
    }

    /// Proposes a command; resolves once it is applied, with the state machine's output.
    /// A proposal that is never applied (the leader lost its place) may also never
    /// resolve: callers bound the wait and then treat the outcome as unknown.
    pub async fn propose(&self, command: Bytes) -> Result<S::Output, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Input::Propose { command, reply })?;
        self.wait(rx, EngineError::OutcomeUnknown).await
    }

    /// Runs `read` against the state machine once it is safe at `level`.
    pub async fn read<R: Send + 'static>(
        &self,
        level: ReadLevel,
        read: impl FnOnce(&S) -> R + Send + 'static,
    ) -> Result<R, EngineError> {
        let (reply, rx) = oneshot::channel();
        let run: ReadFn<S> = Box::new(move |state| {
            let _ = reply.send(state.map(read));
        });
        self.submit(Input::Read { level, run })?;
        self.wait(rx, EngineError::Stopped).await
    }

    /// Changes the membership; resolves once the change is applied.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<Index, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Input::ChangeMembership { change, reply })?;
        self.wait(rx, EngineError::OutcomeUnknown).await
    }

    /// Starts handing leadership to `target`.
    pub async fn transfer_leadership(&self, target: NodeId) -> Result<(), EngineError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Input::Transfer { target, reply })?;
        self.wait(rx, EngineError::Stopped).await
    }

    /// The core's full status (membership, per-peer progress, ...).
    pub async fn status(&self) -> Result<Status, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Input::Status { reply })?;
        rx.await
            .map_err(|_| EngineError::Stopped(self.stop_reason()))
    }

    /// Waits until the observed state satisfies `condition` or `timeout` passes.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&Observed) -> bool,
    ) -> Option<Observed> {
        let mut rx = self.observed.clone();
        tokio::time::timeout(timeout, async {
            loop {
                let seen = rx.borrow_and_update().clone();
                if condition(&seen) {
                    return Some(seen);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await
        .ok()
        .flatten()
    }
}

/// A seed for election timeouts: different per node and per start.
fn seed_for(id: NodeId) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Where in each run of `every` entries node `id` takes its snapshots, in `0..every`.
///
/// Writing a snapshot stalls a node's log for a few milliseconds (the file, its fsync,
/// the directory's). If every node of a cluster took theirs at the same index, as they
/// would by counting alone, commits would stall with them: at 256 clients that was
/// a 50-90 ms p99.9. Spread by the golden ratio, the phases of any few ids are far
/// apart (ids 1, 2, 3: 0.62, 0.24 and 0.85 of the way), so a quorum is always writing.
fn snapshot_phase(id: NodeId, every: u64) -> u64 {
    // The fractional part of id * 0.618..., as a 32-bit fraction.
    let fraction = id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    u64::try_from((u128::from(fraction) * u128::from(every)) >> 32).unwrap_or(0)
}

/// The first index after `last` (a snapshot's) at which the next snapshot is due: the
/// next `phase + k * every`, so never more than `every` entries later.
fn next_snapshot_at(last: u64, every: u64, phase: u64) -> u64 {
    let every = every.max(1);
    if last < phase {
        return phase;
    }
    phase.saturating_add(((last - phase) / every + 1).saturating_mul(every))
}

/// A snapshot of ours, serialised off the node task.
type Encoded = (SnapshotMeta, Bytes);

/// The task that owns the core, the state machine and the writer.
struct Node<S: StateMachine, T: Transport> {
    raft: RaftNode,
    state_machine: S,
    transport: T,
    writer: Option<LogWriter<FileLog>>,
    /// index -> (term, reply, proposed at) of proposals made here.
    proposals: BTreeMap<Index, (Term, Reply<S::Output>, Instant)>,
    /// Appends handed to the writer and not yet durable: (last index, handed over at).
    appends_in_flight: VecDeque<(Index, Instant)>,
    ticks: u64,
    /// index -> (term, reply) of membership changes made here.
    changes: BTreeMap<Index, (Term, Reply<Index>)>,
    reads: BTreeMap<ReadId, ReadFn<S>>,
    next_read: u64,
    /// Confirmed reads waiting for the state machine to reach their index.
    ready_reads: VecDeque<(Index, ReadFn<S>)>,
    /// Actions held back until the hard state in `awaiting_hard_state` is durable.
    deferred: VecDeque<Action>,
    awaiting_hard_state: Option<HardState>,
    applied: Index,
    last_snapshot: Index,
    snapshot_entries: u64,
    /// Snapshots are due at the indexes `snapshot_phase + k * snapshot_entries`.
    snapshot_phase: u64,
    /// A snapshot of ours being made durable: (index, data).
    own_snapshot: Option<(Index, Bytes)>,
    /// A snapshot of ours being serialised off the node task.
    encoding_snapshot: bool,
    /// Where serialised snapshots come back.
    encoded: (mpsc::Sender<Encoded>, mpsc::Receiver<Encoded>),
    /// A snapshot from the leader being made durable.
    installing: Option<Index>,
    observed: watch::Sender<Observed>,
    stopped: Option<String>,
}

/// Peer batches, and inputs, handled in one turn besides the one that woke it: keeps
/// one busy queue from starving the rest while still batching work between flushes.
const BATCH_INPUTS_MAX: usize = 1024;
/// How often (in ticks) a leader records its followers' lag.
const PEER_METRICS_TICKS: u64 = 50;

impl<S: StateMachine, T: Transport> Node<S, T> {
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Input<S>>,
        mut peers: mpsc::Receiver<Vec<Message>>,
        mut log_events: mpsc::Receiver<WriterEvent>,
        tick: Duration,
    ) {
        let mut ticker = tokio::time::interval(tick);
        // Burst: ticks missed while the task was busy are all delivered, so the core's
        // logical clock never falls behind wall time (a lagging clock would stretch a
        // leader's lease past the moment its followers may elect someone else).
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        while self.stopped.is_none() {
            tokio::select! {
                biased;
                _ = ticker.tick() => {
                    self.raft.tick();
                    self.ticks += 1;
                    if self.ticks.is_multiple_of(PEER_METRICS_TICKS) {
                        self.record_peer_lag();
                    }
                }
                Some(event) = log_events.recv() => self.on_log_event(event),
                Some(messages) = peers.recv() => self.on_peer_messages(messages),
                input = inbox.recv() => {
                    let Some(input) = input else { break };
                    self.on_input(input);
                }
                Some((meta, data)) = self.encoded.1.recv() => self.on_snapshot_encoded(meta, data),
            }
            // With several client requests in flight, whatever woke this turn often
            // woke other tasks too (the gRPC calls that arrived in the same read, the
            // other follower's answer): let them queue their inputs, so that one turn,
            // one log append and one message per peer cover them all. With one request
            // or none there is nothing to wait for, and the trip through the scheduler
            // would only add latency.
            if self.proposals.len() + self.reads.len() > 1 {
                tokio::task::yield_now().await;
            }
            if !self.drain(&mut log_events, &mut peers, &mut inbox) || self.stopped.is_some() {
                break;
            }
            let actions = self.raft.take_actions();
            self.perform(actions);
            self.transport.flush();
            self.publish();
        }
        self.shutdown();
    }

    /// Handles what is already queued: every log event and finished snapshot encoding,
    /// and at most [`BATCH_INPUTS_MAX`] peer batches and inputs (so that one busy queue
    /// cannot starve the others between flushes). Stops early once the node has
    /// stopped; false once every handle is gone.
    fn drain(
        &mut self,
        log_events: &mut mpsc::Receiver<WriterEvent>,
        peers: &mut mpsc::Receiver<Vec<Message>>,
        inbox: &mut mpsc::Receiver<Input<S>>,
    ) -> bool {
        // Durability first: it is what most waiting work depends on.
        while let Ok(event) = log_events.try_recv() {
            self.on_log_event(event);
        }
        // Under load some other queue is always ready, and the biased select would
        // never reach a finished snapshot: take it here.
        if let Ok((meta, data)) = self.encoded.1.try_recv() {
            self.on_snapshot_encoded(meta, data);
        }
        if self.stopped.is_some() {
            return true;
        }
        for _ in 0..BATCH_INPUTS_MAX {
            let Ok(messages) = peers.try_recv() else {
                break;
            };
            self.on_peer_messages(messages);
        }
        for _ in 0..BATCH_INPUTS_MAX {
            match inbox.try_recv() {
                Ok(input) => self.on_input(input),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    fn on_peer_messages(&mut self, messages: Vec<Message>) {
        for message in messages {
            self.raft.step(message);
        }
    }

    fn on_input(&mut self, input: Input<S>) {
        match input {
            Input::Propose { command, reply } => match self.raft.propose(command) {
                Ok((term, index)) => {
                    metrics::counter!("rkv_proposals_total").increment(1);
                    let replaced = self.proposals.insert(index, (term, reply, Instant::now()));
                    if let Some((_, old, _)) = replaced {
                        // An earlier proposal of ours held this index and was overwritten.
                        let _ = old.send(Err(EngineError::Dropped));
                    }
                }
                Err(e) => {
                    metrics::counter!("rkv_proposals_refused_total").increment(1);
                    let _ = reply.send(Err(e.into()));
                }
            },
            Input::Read {
                level: ReadLevel::Stale,
                run,
            } => run(Ok(&self.state_machine)),
            Input::Read { level, run } => {
                self.next_read += 1;
                let id = ReadId(self.next_read);
                let mode = match level {
                    ReadLevel::Lease => ReadMode::Lease,
                    _ => ReadMode::Linearizable,
                };
                match self.raft.read(id, mode) {
                    Ok(()) => {
                        self.reads.insert(id, run);
                    }
                    Err(e) => run(Err(e.into())),
                }
            }
            Input::ChangeMembership { change, reply } => {
                match self.raft.change_membership(change) {
                    Ok(index) => {
                        self.changes.insert(index, (self.raft.term(), reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Input::Transfer { target, reply } => {
                let _ = reply.send(self.raft.transfer_leadership(target).map_err(Into::into));
            }
            Input::Status { reply } => {
                let _ = reply.send(self.raft.status());
            }
        }
    }

    fn on_log_event(&mut self, event: WriterEvent) {
        match event {
            WriterEvent::Durable { index, term } => {
                while self
                    .appends_in_flight
                    .front()
                    .is_some_and(|(last, _)| *last <= index)
                {
                    if let Some((_, at)) = self.appends_in_flight.pop_front() {
                        let seconds = at.elapsed().as_secs_f64();
                        metrics::histogram!("rkv_log_durable_seconds").record(seconds);
                    }
                }
                self.raft.persisted(index, term);
            }
            WriterEvent::HardStateSaved(saved) => {
                if self.awaiting_hard_state == Some(saved) {
                    self.awaiting_hard_state = None;
                    let deferred: Vec<Action> = self.deferred.drain(..).collect();
                    self.perform(deferred);
                }
            }
            WriterEvent::SnapshotSaved(meta) => {
                if self.installing == Some(meta.index) {
                    self.installing = None;
                    self.raft.snapshot_installed(meta.index);
                } else if let Some((index, data)) = self.own_snapshot.take()
                    && index == meta.index
                    && self.raft.snapshot_taken(index, data).is_ok()
                {
                    self.last_snapshot = index;
                    self.free_compacted();
                }
            }
            WriterEvent::Compacted(_) => {}
            WriterEvent::Failed(e) => {
                tracing::error!(error = %e, "the log failed; the node stops");
                self.stopped = Some(format!("log failure: {e}"));
            }
        }
    }

    /// Performs actions in order, holding everything after a `SaveHardState` back until
    /// the writer reports it durable (the core's ordering contract, step 1).
    fn perform(&mut self, actions: Vec<Action>) {
        for action in actions {
            if self.awaiting_hard_state.is_some() {
                self.deferred.push_back(action);
                continue;
            }
            match action {
                Action::SaveHardState(hard_state) => {
                    self.awaiting_hard_state = Some(hard_state);
                    self.write(Request::SaveHardState(hard_state));
                }
                Action::Append(entries) => {
                    if let Some(last) = entries.last() {
                        self.appends_in_flight
                            .push_back((last.index, Instant::now()));
                        let count = entries.len() as u64;
                        metrics::counter!("rkv_log_appended_entries_total").increment(count);
                    }
                    self.write(Request::Append(entries));
                }
                Action::Send(message) => self.transport.send(message),
                Action::Apply(entries) => {
                    // What is ready goes out before the state machine's work.
                    self.transport.flush();
                    self.apply(entries);
                }
                Action::InstallSnapshot(snapshot) => {
                    self.transport.flush();
                    if let Err(e) = self.state_machine.restore(&snapshot) {
                        tracing::error!(error = %e, "the leader's snapshot is corrupt; the node stops");
                        self.stopped = Some(format!("corrupt snapshot from the leader: {e}"));
                        return;
                    }
                    self.applied = snapshot.meta.index;
                    self.last_snapshot = snapshot.meta.index;
                    self.installing = Some(snapshot.meta.index);
                    self.free_compacted();
                    // The snapshot may or may not contain them: their outcome is unknown.
                    self.fail_superseded_proposals(|| {
                        EngineError::OutcomeUnknown("covered by a snapshot from the leader".into())
                    });
                    self.drain_ready_reads();
                    self.write(Request::SaveSnapshot(snapshot));
                }
                Action::CompactLog(index) => self.write(Request::Compact(index)),
                Action::ReadReady { id, index } => {
                    if let Some(run) = self.reads.remove(&id) {
                        if index <= self.applied {
                            run(Ok(&self.state_machine));
                        } else {
                            self.ready_reads.push_back((index, run));
                        }
                    }
                }
                Action::ReadFailed { id, error } => {
                    if let Some(run) = self.reads.remove(&id) {
                        run(Err(error.into()));
                    }
                }
            }
        }
    }

    /// Queues a request for the log writer, waiting for room if its queue is full.
    fn write(&mut self, request: Request) {
        let Some(writer) = &self.writer else { return };
        let result = match writer.try_submit(request) {
            Err(WriterError::Busy(request)) => {
                tokio::task::block_in_place(|| writer.submit(request))
            }
            other => other,
        };
        if let Err(e) = result {
            self.stopped = Some(format!("the log writer stopped: {e}"));
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        metrics::counter!("rkv_applied_entries_total").increment(entries.len() as u64);
        for entry in entries {
            match &entry.payload {
                Payload::Command(command) => {
                    let output = self.state_machine.apply(entry.index, command);
                    if let Some((term, reply, at)) = self.proposals.remove(&entry.index) {
                        let seconds = at.elapsed().as_secs_f64();
                        metrics::histogram!("rkv_proposal_commit_seconds").record(seconds);
                        let _ = reply.send(if term == entry.term {
                            Ok(output)
                        } else {
                            Err(EngineError::Dropped)
                        });
                    }
                }
                Payload::Noop | Payload::Membership(_) => {
                    self.state_machine.apply_noop(entry.index);
                    if let Some((term, reply)) = self.changes.remove(&entry.index) {
                        let ok =
                            term == entry.term && matches!(entry.payload, Payload::Membership(_));
                        let _ = reply.send(if ok {
                            Ok(entry.index)
                        } else {
                            Err(EngineError::Dropped)
                        });
                    }
                }
            }
            self.applied = entry.index;
        }
        // Applied entries covered every index up to here: a proposal of ours there that
        // was not answered lost its place to another leader's entry.
        self.fail_superseded_proposals(|| EngineError::Dropped);
        self.drain_ready_reads();
        self.maybe_snapshot();
    }

    /// Serves the confirmed reads the state machine has caught up with.
    fn drain_ready_reads(&mut self) {
        while self
            .ready_reads
            .front()
            .is_some_and(|(index, _)| *index <= self.applied)
        {
            if let Some((_, run)) = self.ready_reads.pop_front() {
                run(Ok(&self.state_machine));
            }
        }
    }

    /// Answers the proposals and membership changes at or below the applied index that
    /// are still waiting.
    fn fail_superseded_proposals(&mut self, error: impl Fn() -> EngineError) {
        let keep = self.proposals.split_off(&self.applied.next());
        for (_, (_, reply, _)) in std::mem::replace(&mut self.proposals, keep) {
            let _ = reply.send(Err(error()));
        }
        let keep = self.changes.split_off(&self.applied.next());
        for (_, (_, reply)) in std::mem::replace(&mut self.changes, keep) {
            let _ = reply.send(Err(error()));
        }
    }

    /// Frees the entries the latest snapshot replaced on a blocking thread: freeing them
    /// here stalled a leader's turn by 10-20 ms per 100,000 entries (each one its own
    /// allocation from a gRPC call).
    fn free_compacted(&mut self) {
        let compacted = self.raft.take_compacted();
        if !compacted.is_empty() {
            tokio::task::spawn_blocking(move || drop(compacted));
        }
    }

    fn maybe_snapshot(&mut self) {
        let next = next_snapshot_at(
            self.last_snapshot.0,
            self.snapshot_entries,
            self.snapshot_phase,
        );
        let due = self.applied.0 >= next;
        if !due
            || self.own_snapshot.is_some()
            || self.encoding_snapshot
            || self.installing.is_some()
        {
            return;
        }
        let Some(meta) = self.raft.snapshot_meta(self.applied) else {
            return;
        };
        let job = self.state_machine.snapshot();
        let done = self.encoded.0.clone();
        self.encoding_snapshot = true;
        tokio::task::spawn_blocking(move || {
            let data = job();
            let _ = done.blocking_send((meta, data));
        });
    }

    /// A snapshot of ours is serialised: make it durable (unless a newer one from the
    /// leader was installed meanwhile).
    fn on_snapshot_encoded(&mut self, meta: SnapshotMeta, data: Bytes) {
        self.encoding_snapshot = false;
        if meta.index <= self.last_snapshot || self.installing.is_some() {
            return;
        }
        metrics::histogram!("rkv_snapshot_bytes").record(data.len() as f64);
        self.own_snapshot = Some((meta.index, data.clone()));
        self.write(Request::SaveSnapshot(Snapshot { meta, data }));
    }

    /// Per-follower replication lag (leader only), in entries.
    fn record_peer_lag(&self) {
        if self.raft.role() != Role::Leader {
            return;
        }
        let status = self.raft.status();
        for peer in &status.peers {
            let lag = status.last_index.0.saturating_sub(peer.match_index.0);
            metrics::gauge!("rkv_peer_lag_entries", "peer" => peer.id.0.to_string())
                .set(lag as f64);
        }
    }

    fn publish(&mut self) {
        let observed = Observed {
            role: self.raft.role(),
            term: self.raft.term(),
            leader: self.raft.leader(),
            commit: self.raft.commit_index(),
            applied: self.applied,
            stopped: self.stopped.clone(),
        };
        let id = self.raft.id();
        self.observed.send_if_modified(|current| {
            if *current == observed {
                return false;
            }
            // Role and leader changes are what an operator reads a log for.
            if (current.role, current.term, current.leader)
                != (observed.role, observed.term, observed.leader)
            {
                tracing::info!(
                    node = %id, role = ?observed.role, term = observed.term.0,
                    leader = ?observed.leader.map(|l| l.0), "raft state changed"
                );
            }
            *current = observed;
            true
        });
    }

    fn shutdown(&mut self) {
        let reason = self.stopped.clone().unwrap_or_else(|| "shut down".into());
        self.stopped = Some(reason.clone());
        // Proposals in flight may still commit through the other nodes.
        for (_, (_, reply, _)) in std::mem::take(&mut self.proposals) {
            let _ = reply.send(Err(EngineError::OutcomeUnknown(reason.clone())));
        }
        for (_, (_, reply)) in std::mem::take(&mut self.changes) {
            let _ = reply.send(Err(EngineError::OutcomeUnknown(reason.clone())));
        }
        for (_, run) in std::mem::take(&mut self.reads) {
            run(Err(EngineError::Stopped(reason.clone())));
        }
        for (_, run) in std::mem::take(&mut self.ready_reads) {
            run(Err(EngineError::Stopped(reason.clone())));
        }
        self.publish();
        if let Some(writer) = self.writer.take() {
            tokio::task::block_in_place(|| drop(writer.close()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_take_their_snapshots_at_different_indexes() {
        let every = 100_000;
        let phases: Vec<u64> = (1..=5)
            .map(|id| snapshot_phase(NodeId(id), every))
            .collect();
        assert!(phases.iter().all(|p| *p < every), "{phases:?}");
        // In a 3-node cluster no two are closer than a fifth of the run.
        for (i, a) in phases[..3].iter().enumerate() {
            for b in &phases[i + 1..3] {
                assert!(a.abs_diff(*b) >= every / 5, "{phases:?}");
            }
        }
    }

    #[test]
    fn the_next_snapshot_is_never_more_than_a_run_away() {
        for phase in [0, 1, 500, 999] {
            for last in [0, 1, 499, 500, 501, 999, 1000, 1499, 1500, 123_456] {
                let next = next_snapshot_at(last, 1000, phase);
                assert!(next > last, "{last} {phase} {next}");
                assert!(next - last <= 1000, "{last} {phase} {next}");
                assert_eq!(next % 1000, phase, "{last} {phase} {next}");
            }
        }
        // Near the end of the index space it saturates instead of wrapping.
        assert_eq!(next_snapshot_at(u64::MAX - 1, 1000, 7), u64::MAX);
    }
}
