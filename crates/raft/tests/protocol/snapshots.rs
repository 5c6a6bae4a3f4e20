//! Log compaction and snapshots (Raft paper §7): compaction after `snapshot_taken`, and
//! chunked InstallSnapshot to followers that need compacted entries.

use rkv_raft::{
    Action, MessageBody, RaftNode, Snapshot, SnapshotError, SnapshotMeta, SnapshotResult,
};

use crate::common::*;

const VOTERS: &[u64] = &[1, 2, 3];
const DATA: &str = "0123456789";

fn chunk(offset: u64, data: &str, done: bool) -> MessageBody {
    MessageBody::InstallSnapshot {
        meta: meta(),
        offset,
        data: bytes(data),
        done,
    }
}

fn meta() -> SnapshotMeta {
    SnapshotMeta {
        index: i(4),
        term: t(1),
        membership: membership(VOTERS, &[]),
    }
}

fn next(offset: u64) -> MessageBody {
    MessageBody::InstallSnapshotResponse(SnapshotResult::Next { offset })
}

fn done(index: u64) -> MessageBody {
    MessageBody::InstallSnapshotResponse(SnapshotResult::Done { index: i(index) })
}

/// Leader n1 with a, b, c committed and applied (with n2) at 2..4; n3 never answered.
/// Actions drained.
fn leader_with_applied_entries(snapshot_chunk_bytes: usize) -> RaftNode {
    let mut cfg = config(1);
    cfg.snapshot_chunk_bytes = snapshot_chunk_bytes;
    let mut node = node_with(cfg, bootstrap(VOTERS));
    make_leader(&mut node);
    for data in ["a", "b", "c"] {
        node.propose(bytes(data)).unwrap();
    }
    node.persisted(i(4), t(1));
    node.step(msg(2, 1, 1, ack(4)));
    assert_eq!(node.commit_index(), i(4));
    assert_eq!(node.status().applied, i(4));
    node.take_actions();
    node
}

/// §7: the state machine's durable snapshot replaces the log up to its index; the driver
/// is told it may delete those entries.
#[test]
fn s7_snapshot_taken_compacts_the_log_and_emits_compact_log() {
    let mut node = leader_with_applied_entries(4);
    assert_eq!(node.snapshot_taken(i(3), bytes(DATA)), Ok(()));
    assert_eq!(node.take_actions(), vec![Action::CompactLog(i(3))]);
    assert_eq!(node.snapshot_index(), i(3));
    assert_eq!(node.entry(i(3)), None);
    assert_eq!(
        node.entry_term(i(3)),
        Some(t(1)),
        "the snapshot keeps the term of its last entry"
    );
    assert_eq!(node.entry(i(4)), Some(&cmd(4, 1, "c")));
    assert_eq!(node.last_index(), i(4));
}

/// The compacted entries go back to the driver (to be freed off its event loop), once.
#[test]
fn s7_the_driver_takes_the_compacted_entries_once() {
    let mut node = leader_with_applied_entries(4);
    assert_eq!(node.snapshot_taken(i(3), bytes(DATA)), Ok(()));
    let compacted: Vec<u64> = node.take_compacted().iter().map(|e| e.index.0).collect();
    assert_eq!(compacted, vec![1, 2, 3]);
    assert!(node.take_compacted().is_empty(), "handed over once");
    assert_eq!(node.entry(i(4)), Some(&cmd(4, 1, "c")), "the rest stays");
}

/// `snapshot_taken` contract: a snapshot that is not newer, or that covers entries not
/// yet applied, is refused and changes nothing.
#[test]
fn s7_snapshot_taken_refuses_stale_and_unapplied_snapshots() {
    let mut node = leader_with_applied_entries(4);
    node.snapshot_taken(i(3), bytes(DATA)).unwrap();
    node.take_actions();
    assert_eq!(
        node.snapshot_taken(i(3), bytes(DATA)),
        Err(SnapshotError::Stale {
            index: i(3),
            current: i(3)
        })
    );
    assert_eq!(
        node.snapshot_taken(i(2), bytes(DATA)),
        Err(SnapshotError::Stale {
            index: i(2),
            current: i(3)
        })
    );
    node.propose(bytes("d")).unwrap();
    node.take_actions();
    assert_eq!(
        node.snapshot_taken(i(5), bytes(DATA)),
        Err(SnapshotError::NotApplied {
            index: i(5),
            applied: i(4)
        })
    );
    assert_eq!(node.take_actions(), vec![]);
    assert_eq!(node.snapshot_index(), i(3));
}

/// §7: "the leader must occasionally send snapshots to followers that lag behind", here
/// in chunks of `snapshot_chunk_bytes`, each sent when the previous one is acknowledged.
#[test]
fn s7_leader_sends_the_snapshot_in_chunks_to_a_follower_behind_it() {
    let mut node = leader_with_applied_entries(4);
    node.snapshot_taken(i(4), bytes(DATA)).unwrap();
    assert_eq!(node.take_actions(), vec![Action::CompactLog(i(4))]);
    // n3 shows up: it needs entries from 1 on, which are gone.
    node.step(msg(
        3,
        1,
        1,
        MessageBody::HeartbeatResponse { read_round: 0 },
    ));
    assert_eq!(
        node.take_actions(),
        vec![send(1, 3, 1, chunk(0, "0123", false))]
    );
    node.step(msg(3, 1, 1, next(4)));
    assert_eq!(
        node.take_actions(),
        vec![send(1, 3, 1, chunk(4, "4567", false))]
    );
    node.step(msg(3, 1, 1, next(8)));
    assert_eq!(
        node.take_actions(),
        vec![send(1, 3, 1, chunk(8, "89", true))]
    );
}

/// §7: while a snapshot is being sent, new entries are not sent to that follower;
/// replication resumes after the snapshot's index once the follower installed it.
#[test]
fn s7_replication_resumes_after_the_snapshot_index() {
    let mut node = leader_with_applied_entries(4);
    node.snapshot_taken(i(4), bytes(DATA)).unwrap();
    node.step(msg(
        3,
        1,
        1,
        MessageBody::HeartbeatResponse { read_round: 0 },
    ));
    node.take_actions();
    node.propose(bytes("d")).unwrap();
    assert_eq!(
        node.take_actions(),
        vec![
            Action::Append(vec![cmd(5, 1, "d")]),
            send(1, 2, 1, append(4, 1, vec![cmd(5, 1, "d")], 4))
        ]
    );
    node.step(msg(3, 1, 1, done(4)));
    assert_eq!(
        node.take_actions(),
        vec![send(1, 3, 1, append(4, 1, vec![cmd(5, 1, "d")], 4))]
    );
    assert_eq!(
        node.status()
            .peers
            .iter()
            .find(|p| p.id == n(3))
            .map(|p| p.match_index),
        Some(i(4))
    );
}

/// §7 (figure 13): the follower collects the chunks, hands the whole snapshot to the
/// driver after the last one, and acknowledges only once `snapshot_installed` says it
/// is durable.
#[test]
fn s7_follower_installs_after_the_last_chunk_and_acknowledges_once_installed() {
    let mut node = new_node(3, VOTERS);
    node.step(msg(1, 3, 1, chunk(0, "0123", false)));
    assert_eq!(
        node.take_actions(),
        vec![
            Action::SaveHardState(hard_state(1, None)),
            send(3, 1, 1, next(4))
        ]
    );
    node.step(msg(1, 3, 1, chunk(4, "4567", false)));
    assert_eq!(node.take_actions(), vec![send(3, 1, 1, next(8))]);
    node.step(msg(1, 3, 1, chunk(8, "89", true)));
    assert_eq!(
        node.take_actions(),
        vec![Action::InstallSnapshot(Snapshot {
            meta: meta(),
            data: bytes(DATA)
        })]
    );
    node.snapshot_installed(i(4));
    assert_eq!(node.take_actions(), vec![send(3, 1, 1, done(4))]);
    let status = node.status();
    assert_eq!(
        (
            status.snapshot_index,
            status.commit,
            status.applied,
            status.last_index
        ),
        (i(4), i(4), i(4), i(4))
    );
}

/// §7: after installing, the follower continues the log right after the snapshot.
#[test]
fn s7_follower_appends_after_the_installed_snapshot() {
    let mut node = new_node(3, VOTERS);
    node.step(msg(1, 3, 1, chunk(0, DATA, true)));
    node.snapshot_installed(i(4));
    node.take_actions();
    node.step(msg(1, 3, 1, append(4, 1, vec![cmd(5, 1, "d")], 4)));
    assert_eq!(
        node.take_actions(),
        vec![Action::Append(vec![cmd(5, 1, "d")])]
    );
    node.persisted(i(5), t(1));
    assert_eq!(node.take_actions(), vec![send(3, 1, 1, ack(5))]);
}

/// A follower installing a snapshot ignores Appends until it is done: they would apply
/// to a log that is being replaced.
#[test]
fn s7_follower_ignores_appends_while_installing() {
    let mut node = new_node(3, VOTERS);
    node.step(msg(1, 3, 1, chunk(0, DATA, true)));
    node.take_actions();
    node.step(msg(1, 3, 1, append(4, 1, vec![cmd(5, 1, "d")], 4)));
    assert_eq!(node.take_actions(), vec![]);
    assert_eq!(node.last_index(), i(4));
}

/// A chunk out of order is answered with the offset the follower needs.
#[test]
fn s7_follower_asks_for_the_chunk_it_needs() {
    let mut node = new_node(3, VOTERS);
    node.step(msg(1, 3, 1, chunk(0, "0123", false)));
    node.take_actions();
    node.step(msg(1, 3, 1, chunk(8, "89", true)));
    assert_eq!(node.take_actions(), vec![send(3, 1, 1, next(4))]);
}

/// A follower that already holds everything the snapshot covers (committed) answers
/// Done at once instead of replacing its log.
#[test]
fn s7_follower_that_already_has_the_snapshots_entries_answers_done() {
    let mut node = new_node(3, VOTERS);
    let entries = vec![
        noop(1, 1),
        cmd(2, 1, "a"),
        cmd(3, 1, "b"),
        cmd(4, 1, "c"),
        cmd(5, 1, "d"),
    ];
    node.step(msg(1, 3, 1, append(0, 0, entries, 5)));
    node.persisted(i(5), t(1));
    node.take_actions();
    node.step(msg(1, 3, 1, chunk(0, "0123", false)));
    assert_eq!(node.take_actions(), vec![send(3, 1, 1, done(4))]);
    assert_eq!(node.last_index(), i(5));
}

/// Cluster, §7: a follower that was away while the leader compacted catches up through
/// a snapshot sent in chunks, and then through the log.
#[test]
fn s7_cluster_lagging_follower_catches_up_through_a_snapshot() {
    let mut cluster = Cluster::with(membership(VOTERS, &[]), |id| {
        let mut cfg = config(id);
        cfg.snapshot_chunk_bytes = 5;
        cfg
    });
    cluster.elect(1);
    cluster.partition(3);
    for data in ["a", "b", "c", "d"] {
        cluster.node_mut(1).propose(bytes(data)).unwrap();
        cluster.stabilize();
    }
    assert_eq!(cluster.take_snapshot(1), Ok(i(5)));
    cluster.stabilize();
    cluster.node_mut(1).propose(bytes("e")).unwrap();
    cluster.stabilize();
    cluster.heal();
    cluster.run_ticks(3);
    assert_eq!(cluster.node(3).snapshot_index(), i(5));
    assert_eq!(cluster.node(3).last_index(), i(6));
    assert_eq!(cluster.commands(3), cluster.commands(1));
    assert_eq!(cluster.commands(3).len(), 5);
    cluster.check_log_matching();
}

/// §7: "If existing log entry has same index and term as snapshot's last included entry,
/// retain log entries following it": a follower that holds the snapshot's last entry
/// (not yet known committed) keeps its log, commits up to the snapshot and answers Done.
#[test]
fn s7_follower_holding_the_snapshots_last_entry_keeps_the_entries_after_it() {
    let mut node = new_node(3, VOTERS);
    let entries = vec![
        noop(1, 1),
        cmd(2, 1, "a"),
        cmd(3, 1, "b"),
        cmd(4, 1, "c"),
        cmd(5, 1, "d"),
    ];
    node.step(msg(1, 3, 1, append(0, 0, entries.clone(), 0)));
    node.persisted(i(5), t(1));
    node.take_actions();
    node.step(msg(1, 3, 1, chunk(0, "0123", false)));
    assert_eq!(
        node.take_actions(),
        vec![Action::Apply(entries[..4].to_vec()), send(3, 1, 1, done(4))]
    );
    assert_eq!(node.commit_index(), i(4));
    assert_eq!(node.last_index(), i(5));
    assert_eq!(node.snapshot_index(), i(0), "nothing was installed");
}
