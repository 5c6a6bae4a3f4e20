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

/// Change events kept for watchers that fall behind before they are told they lagged.
pub const WATCH_BUFFER_EVENTS: usize = 4096;

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
}

impl KvMachine {
    /// A fresh machine, with the waiters and the event channel the front ends share.
    pub fn new(waiters: Arc<Waiters>, events: broadcast::Sender<Arc<Vec<Event>>>) -> KvMachine {
        KvMachine {
            kv: rkv_kv::StateMachine::new(),
            waiters,
            events,
        }
    }
}

impl rkv_engine::StateMachine for KvMachine {
    type Output = Vec<Applied>;

    fn apply(&mut self, index: Index, command: &Bytes) -> Vec<Applied> {
        let applied = self.kv.apply(index.0, command);
        let mut events = Vec::new();
        for a in &applied {
            self.waiters.notify(a);
            events.extend(a.events.iter().cloned());
        }
        if !events.is_empty() {
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
        Ok(())
    }
}
