//! The replicated state machine as the engine sees it: `rkv-kv`'s map and sessions, plus
//! the two ways a front end learns about applied writes besides its own proposal's
//! answer: session waiters (a write that arrived early is answered when a later entry
//! releases it) and a broadcast of change events (Watch).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rkv_kv::{Applied, ClientSeq, Event};
use rkv_raft::{Index, Snapshot};
use tokio::sync::{broadcast, oneshot};

use crate::peers::PeerBook;

/// Change events kept for watchers that fall behind before they are told they lagged.
pub const WATCH_BUFFER_EVENTS: usize = 4096;
/// Recent change events kept so that a watch can start at a past index.
pub const WATCH_HISTORY_EVENTS: usize = 100_000;

/// The recent change events this replica applied, for watches that start in the past.
#[derive(Debug, Default)]
pub struct History {
    events: std::collections::VecDeque<Event>,
    /// The oldest index whose events are all kept (what came before is compacted).
    from: u64,
}

impl History {
    /// The events from `start` on, or `Err(oldest)` if they are no longer all kept.
    pub fn since(&self, start: u64) -> Result<Vec<Event>, u64> {
        if start < self.from {
            return Err(self.from);
        }
        // Events are in index order: skip to the first wanted one.
        let first = self.events.partition_point(|e| e.index < start);
        Ok(self.events.range(first..).cloned().collect())
    }

    fn push(&mut self, events: &[Event]) {
        for event in events {
            if self.events.len() == WATCH_HISTORY_EVENTS
                && let Some(dropped) = self.events.pop_front()
            {
                self.from = dropped.index + 1;
            }
            self.events.push_back(event.clone());
        }
    }

    fn reset(&mut self, after: u64) {
        self.events.clear();
        self.from = after + 1;
    }
}

/// Callers waiting for one session write, keyed by (client id, seq).
type WaitList = HashMap<(u64, u64), Vec<oneshot::Sender<Applied>>>;

/// Writes waiting for their session command to be applied, by (client id, seq).
#[derive(Debug, Default)]
pub struct Waiters {
    waiting: Mutex<WaitList>,
}

impl Waiters {
    /// Registers interest in the result of `(client_id, seq)`.
    pub fn wait(&self, session: ClientSeq) -> oneshot::Receiver<Applied> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting
                .entry((session.client_id, session.seq))
                .or_default()
                .push(tx);
        }
        rx
    }

    /// Forgets a registration whose caller gave up.
    pub fn forget(&self, session: ClientSeq) {
        let key = (session.client_id, session.seq);
        if let Ok(mut waiting) = self.waiting.lock()
            && let Some(list) = waiting.get_mut(&key)
        {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                waiting.remove(&key);
            }
        }
    }

    fn notify(&self, applied: &Applied) {
        let Some(session) = applied.session else {
            return;
        };
        let senders = self
            .waiting
            .lock()
            .ok()
            .and_then(|mut waiting| waiting.remove(&(session.client_id, session.seq)));
        for tx in senders.into_iter().flatten() {
            let _ = tx.send(applied.clone());
        }
    }
}

/// `rkv-kv`'s state machine behind the engine's trait.
pub struct KvMachine {
    /// The map and sessions.
    pub kv: rkv_kv::StateMachine,
    waiters: Arc<Waiters>,
    events: broadcast::Sender<Arc<Vec<Event>>>,
    history: Arc<Mutex<History>>,
    book: Option<Arc<PeerBook>>,
    observer: Option<ApplyObserver>,
}

/// Called on the node task with every applied command entry, in log order: its index,
/// its bytes and what applying it did (raft-demo's logger writes them to a file). It
/// runs on the apply path, so it must be quick.
pub type ApplyObserver = Arc<dyn Fn(Index, &Bytes, &[Applied]) + Send + Sync>;

impl KvMachine {
    /// A fresh machine, with the waiters and the event channel the front ends share.
    pub fn new(
        waiters: Arc<Waiters>,
        events: broadcast::Sender<Arc<Vec<Event>>>,
        history: Arc<Mutex<History>>,
    ) -> KvMachine {
        KvMachine {
            kv: rkv_kv::StateMachine::new(),
            waiters,
            events,
            history,
            book: None,
            observer: None,
        }
    }

    /// Calls `observer` with every applied command (see [`ApplyObserver`]).
    pub fn with_observer(mut self, observer: ApplyObserver) -> KvMachine {
        self.observer = Some(observer);
        self
    }

    /// Tells `book` every peer record this machine applies or restores (nodes that join
    /// by address; see [`crate::peers`]).
    pub fn with_peer_book(mut self, book: Arc<PeerBook>) -> KvMachine {
        self.book = Some(book);
        self
    }
}

impl rkv_engine::StateMachine for KvMachine {
    type Output = Vec<Applied>;

    fn apply(&mut self, index: Index, command: &Bytes) -> Vec<Applied> {
        let applied = self.kv.apply(index.0, command);
        if let Some(observer) = &self.observer {
            observer(index, command, &applied);
        }
        let mut events = Vec::new();
        for a in &applied {
            if let (Some(book), rkv_kv::Output::PeerSet { node_id }) = (&self.book, &a.output) {
                book.learn(*node_id, self.kv.peers().get(node_id));
            }
            self.waiters.notify(a);
            events.extend(a.events.iter().cloned());
        }
        if !events.is_empty() {
            // History first, then the broadcast: a watcher that subscribes and then reads
            // the history sees every event at least once (it skips repeats by index).
            if let Ok(mut history) = self.history.lock() {
                history.push(&events);
            }
            // No receiver is fine: nobody watches.
            let _ = self.events.send(Arc::new(events));
        }
        applied
    }

    fn apply_noop(&mut self, index: Index) {
        self.kv.apply_noop(index.0);
    }

    fn snapshot(&self) -> rkv_engine::SnapshotJob {
        // A copy-on-write view: cheap here, encoded on a blocking thread by the engine.
        let view = self.kv.snapshot_view();
        Box::new(move || Bytes::from(view.encode()))
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        self.kv = rkv_kv::StateMachine::restore(&snapshot.data).map_err(|e| e.to_string())?;
        if let Some(book) = &self.book {
            book.merge_all(self.kv.peers());
        }
        if let Ok(mut history) = self.history.lock() {
            history.reset(snapshot.meta.index.0);
        }
        // Watchers of this replica cannot see what the snapshot skipped: an empty batch
        // tells them their stream has a gap.
        let _ = self.events.send(Arc::new(Vec::new()));
        Ok(())
    }
}
