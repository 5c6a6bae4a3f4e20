//! [`LogWriter`]: group commit on a thread of its own.
//!
//! Exists because one `fdatasync` costs as much as thousands of appends: the writer thread
//! owns the store behind a bounded queue, takes everything queued at once, applies it in
//! order as one buffered batch, and ends the batch with one [`LogStore::sync`] (one write,
//! one `fdatasync`). It then reports "durable up to (index, term)", which the driver
//! hands to `RaftNode::persisted`. While a sync runs, new requests queue up and form the
//! next batch, so the batch size adapts to the load by itself.
//!
//! Back-pressure: the queue holds at most `queue_len` requests. [`LogWriter::submit`]
//! blocks while it is full; [`LogWriter::try_submit`] returns [`WriterError::Busy`]
//! instead, handing the request back.

use std::fmt;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::{self, JoinHandle};

use rkv_raft::{Entry, HardState, Index, Snapshot, SnapshotMeta, Term};

use crate::{LogError, LogStore};

/// Most requests taken into one batch, so that one batch's latency stays bounded.
pub const BATCH_REQUESTS_MAX: usize = 4096;

/// Work for the writer, applied in the order submitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Append entries (see [`LogStore::append`]); reported by [`WriterEvent::Durable`].
    Append(Vec<Entry>),
    /// Save the hard state; reported by [`WriterEvent::HardStateSaved`] once durable.
    SaveHardState(HardState),
    /// Compact the log; reported by [`WriterEvent::Compacted`].
    Compact(Index),
    /// Save a snapshot; reported by [`WriterEvent::SnapshotSaved`] once durable.
    SaveSnapshot(Snapshot),
}

/// What the writer reports, in order.
#[derive(Debug)]
pub enum WriterEvent {
    /// Every entry appended so far is durable; the last one has this index and term.
    Durable {
        /// The last durable index.
        index: Index,
        /// Its term.
        term: Term,
    },
    /// This hard state is durable (a vote may now be sent).
    HardStateSaved(HardState),
    /// The log was compacted up to this index.
    Compacted(Index),
    /// This snapshot is durable.
    SnapshotSaved(SnapshotMeta),
    /// The store failed; the writer has stopped and refuses further requests. For an
    /// I/O error, reopen the store (recovery decides what survived).
    Failed(LogError),
}

/// Why a request was not queued. The request is handed back.
#[derive(Debug, PartialEq, Eq)]
pub enum WriterError {
    /// The queue is full ([`LogWriter::try_submit`] only): retry later or shed load.
    Busy(Request),
    /// The writer has stopped (after [`WriterEvent::Failed`]).
    Stopped(Request),
}

impl fmt::Display for WriterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriterError::Busy(_) => write!(f, "the log writer's queue is full"),
            WriterError::Stopped(_) => write!(f, "the log writer has stopped"),
        }
    }
}

impl std::error::Error for WriterError {}

/// Owns a [`LogStore`] on its own thread and group-commits what is submitted.
#[derive(Debug)]
pub struct LogWriter<S: LogStore + 'static> {
    sender: Option<SyncSender<Request>>,
    thread: Option<JoinHandle<S>>,
}

impl<S: LogStore + 'static> LogWriter<S> {
    /// Starts the writer thread with a queue of `queue_len` requests (at least 1).
    /// `on_event` runs on the writer thread, in order; keep it short (forward to a channel).
    pub fn spawn(
        store: S,
        queue_len: usize,
        on_event: impl FnMut(WriterEvent) + Send + 'static,
    ) -> LogWriter<S> {
        let (sender, receiver) = mpsc::sync_channel(queue_len.max(1));
        let thread = thread::Builder::new()
            .name("rkv-log-writer".to_string())
            .spawn(move || run(store, &receiver, on_event))
            .expect("spawning the log writer thread");
        LogWriter {
            sender: Some(sender),
            thread: Some(thread),
        }
    }

    /// Queues a request, blocking while the queue is full.
    pub fn submit(&self, request: Request) -> Result<(), WriterError> {
        let sender = self.sender.as_ref().expect("present until close");
        sender.send(request).map_err(|e| WriterError::Stopped(e.0))
    }

    /// Queues a request, or returns [`WriterError::Busy`] at once if the queue is full.
    pub fn try_submit(&self, request: Request) -> Result<(), WriterError> {
        let sender = self.sender.as_ref().expect("present until close");
        sender.try_send(request).map_err(|e| match e {
            TrySendError::Full(r) => WriterError::Busy(r),
            TrySendError::Disconnected(r) => WriterError::Stopped(r),
        })
    }

    /// Finishes what is queued, stops the thread and returns the store (None if the
    /// writer thread panicked).
    pub fn close(mut self) -> Option<S> {
        self.sender = None;
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl<S: LogStore + 'static> Drop for LogWriter<S> {
    fn drop(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run<S: LogStore>(
    mut store: S,
    receiver: &Receiver<Request>,
    mut on_event: impl FnMut(WriterEvent),
) -> S {
    let mut batch = Vec::new();
    while let Ok(request) = receiver.recv() {
        batch.push(request);
        while batch.len() < BATCH_REQUESTS_MAX {
            match receiver.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        if let Err(error) = apply_batch(&mut store, &mut batch, &mut on_event) {
            on_event(WriterEvent::Failed(error));
            break;
        }
    }
    store
}

fn apply_batch<S: LogStore>(
    store: &mut S,
    batch: &mut Vec<Request>,
    on_event: &mut impl FnMut(WriterEvent),
) -> Result<(), LogError> {
    let mut appended = false;
    for request in batch.drain(..) {
        match request {
            Request::Append(entries) => {
                store.append(&entries)?;
                appended = true;
            }
            Request::SaveHardState(hard_state) => {
                store.save_hard_state(&hard_state)?;
                on_event(WriterEvent::HardStateSaved(hard_state));
            }
            Request::Compact(index) => {
                store.compact(index)?;
                on_event(WriterEvent::Compacted(index));
            }
            Request::SaveSnapshot(snapshot) => {
                store.save_snapshot(&snapshot)?;
                on_event(WriterEvent::SnapshotSaved(snapshot.meta));
            }
        }
    }
    if appended {
        let (index, term) = store.sync()?;
        on_event(WriterEvent::Durable { index, term });
    }
    Ok(())
}
