//! Group commit: the writer applies requests in order, ends each batch with one sync and
//! reports durability; a full queue answers Busy; a failure stops it with an event.

use std::sync::Arc;
use std::sync::mpsc;

use rkv_log::conformance::{entries, entry};
use rkv_log::sim::{Faults, SimVfs};
use rkv_log::{
    FileLog, FileLogOptions, LogStore, LogWriter, MemLog, Request, WriterError, WriterEvent,
};
use rkv_raft::{HardState, Index, Term};

#[test]
fn batches_share_syncs_and_report_durability_in_order() {
    let vfs = SimVfs::new(1);
    let (log, _, _) = FileLog::open(Arc::new(vfs.clone()), FileLogOptions::default()).unwrap();
    let syncs_before = vfs.stats().syncs;
    let (events, received) = mpsc::channel();
    let writer = LogWriter::spawn(log, 1024, move |event| events.send(event).unwrap());
    writer
        .submit(Request::SaveHardState(HardState {
            term: Term(1),
            vote: None,
        }))
        .unwrap();
    for i in 1..=500 {
        writer.submit(Request::Append(vec![entry(i, 1)])).unwrap();
    }
    let log = writer.close().expect("writer thread ends cleanly");
    let mut durable = Index(0);
    let mut batches = 0;
    let mut saw_hard_state = false;
    for event in received.try_iter() {
        match event {
            WriterEvent::Durable { index, term } => {
                assert!(index > durable, "durability only moves forward");
                assert_eq!(term, Term(1));
                durable = index;
                batches += 1;
            }
            WriterEvent::HardStateSaved(hs) => {
                assert_eq!(durable, Index(0), "the hard state came first");
                assert_eq!(hs.term, Term(1));
                saw_hard_state = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(saw_hard_state);
    assert_eq!(durable, Index(500));
    let syncs = vfs.stats().syncs - syncs_before;
    assert_eq!(
        syncs,
        batches + 1,
        "one fdatasync per batch, plus the hard state's"
    );
    assert_eq!(
        log.entries(Index(1), Index(501), usize::MAX).unwrap(),
        entries(1, 500, 1)
    );
}

#[test]
fn a_full_queue_answers_busy_and_hands_the_request_back() {
    // The callback blocks the writer thread until the test lets it go, so the queue fills.
    let (gate_sender, gate) = mpsc::sync_channel::<()>(0);
    let writer = LogWriter::spawn(MemLog::new(), 2, move |_| {
        let _ = gate.recv();
    });
    writer.submit(Request::Append(vec![entry(1, 1)])).unwrap();
    let mut busy = None;
    for i in 2..1000 {
        match writer.try_submit(Request::Append(vec![entry(i, 1)])) {
            Ok(()) => {}
            Err(error) => {
                busy = Some(error);
                break;
            }
        }
    }
    match busy {
        Some(WriterError::Busy(Request::Append(batch))) => assert_eq!(batch.len(), 1),
        other => panic!("expected Busy, got {other:?}"),
    }
    drop(gate_sender);
    writer.close().unwrap();
}

#[test]
fn an_io_error_stops_the_writer_with_an_event() {
    let vfs = SimVfs::new(2);
    let (log, _, _) = FileLog::open(Arc::new(vfs.clone()), FileLogOptions::default()).unwrap();
    vfs.set_faults(Faults {
        sync_error_after: Some(0),
        ..Faults::default()
    });
    let (events, received) = mpsc::channel();
    let writer = LogWriter::spawn(log, 4, move |event| events.send(event).unwrap());
    writer.submit(Request::Append(vec![entry(1, 1)])).unwrap();
    match received.recv().unwrap() {
        WriterEvent::Failed(error) => assert_eq!(error.actor(), rkv_log::Actor::Environment),
        other => panic!("expected a failure, got {other:?}"),
    }
    // The thread has ended: requests are refused.
    let mut refused = false;
    for i in 2..10 {
        if let Err(WriterError::Stopped(_)) = writer.submit(Request::Append(vec![entry(i, 1)])) {
            refused = true;
            break;
        }
    }
    assert!(refused);
}
