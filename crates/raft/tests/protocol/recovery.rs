//! Restarting from durable state (Raft paper §5.1 and figure 2, "Persistent state on all
//! servers"): term, vote and log survive a crash; nothing that was not durable does.

use rkv_raft::{Action, MessageBody, RaftNode, Recovered, Role, Snapshot, SnapshotMeta};

use crate::common::*;

const VOTERS: &[u64] = &[1, 2, 3];

fn restarted() -> RaftNode {
    let entries = vec![cmd(1, 1, "a"), cmd(2, 3, "b"), noop(3, 5)];
    node_with(
        config(3),
        recovered(VOTERS, hard_state(5, Some(2)), entries),
    )
}

/// Figure 2: "currentTerm, votedFor, log[]" are persistent: a restarted node resumes them.
#[test]
fn s5_1_restarted_node_resumes_its_term_and_log() {
    let node = restarted();
    assert_eq!(node.role(), Role::Follower);
    assert_eq!(node.term(), t(5));
    assert_eq!(node.last_index(), i(3));
    assert_eq!(node.entry_term(i(2)), Some(t(3)));
    assert_eq!(node.entry(i(1)), Some(&cmd(1, 1, "a")));
    let status = node.status();
    assert_eq!(status.persisted, i(3), "recovered entries are durable");
    assert_eq!(
        status.commit,
        i(0),
        "commitment is relearned from the leader"
    );
    assert_eq!(status.leader, None);
}

/// §5.2 after a restart: the vote cast in the current term still binds.
#[test]
fn s5_2_restarted_node_keeps_its_vote_of_the_current_term() {
    let mut node = restarted();
    past_lease(&mut node);
    node.step(msg(1, 3, 5, vote(3, 5, false)));
    assert_eq!(
        node.take_actions(),
        vec![send(3, 1, 5, MessageBody::VoteResponse { granted: false })]
    );
    node.step(msg(2, 3, 5, vote(3, 5, false)));
    assert_eq!(
        node.take_actions(),
        vec![
            Action::SaveHardState(hard_state(5, Some(2))),
            send(3, 2, 5, MessageBody::VoteResponse { granted: true })
        ]
    );
}

/// §5.2 after a restart: a campaign continues from the recovered term and log.
#[test]
fn s5_2_restarted_node_campaigns_from_its_recovered_term_and_log() {
    let mut node = restarted();
    tick_until_campaign(&mut node);
    assert_eq!(
        node.take_actions(),
        vec![send(3, 1, 6, pre_vote(3, 5)), send(3, 2, 6, pre_vote(3, 5))]
    );
}

/// §7: a node restarted from a snapshot holds the snapshot's index as committed and
/// applied, and the entries after it.
#[test]
fn s7_restarted_node_resumes_from_its_snapshot() {
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: i(10),
            term: t(2),
            membership: membership(VOTERS, &[]),
        },
        data: bytes("state"),
    };
    let entries = vec![cmd(11, 2, "k"), cmd(12, 3, "l")];
    let recovered = Recovered {
        hard_state: hard_state(3, None),
        snapshot,
        entries,
    };
    let node = node_with(config(3), recovered);
    let status = node.status();
    assert_eq!(
        (status.snapshot_index, status.commit, status.applied),
        (i(10), i(10), i(10))
    );
    assert_eq!(node.last_index(), i(12));
    assert_eq!(node.entry_term(i(10)), Some(t(2)));
    assert_eq!(node.entry(i(10)), None);
    assert_eq!(node.membership(), &membership(VOTERS, &[]));
}

/// `Recovered` contract: entries must be contiguous from the snapshot; anything after a
/// gap is unusable and dropped.
#[test]
fn recovered_entries_after_a_gap_are_dropped() {
    let entries = vec![cmd(1, 1, "a"), cmd(2, 1, "b"), cmd(4, 1, "d")];
    let node = node_with(config(3), recovered(VOTERS, hard_state(1, None), entries));
    assert_eq!(node.last_index(), i(2));
}

/// Cluster, crate contract step 2: a follower that crashes before its fsync completed
/// loses only unacknowledged entries, restarts and catches up.
#[test]
fn s5_1_follower_crash_before_fsync_loses_only_unacknowledged_entries() {
    let mut cluster = Cluster::new(VOTERS);
    cluster.elect(1);
    cluster.hold_persist(3, true);
    cluster.node_mut(1).propose(bytes("a")).unwrap();
    cluster.stabilize();
    assert_eq!(
        cluster.node(1).commit_index(),
        i(2),
        "n1 and n2 make a majority"
    );
    cluster.crash(3);
    cluster.restart(3);
    assert_eq!(
        cluster.node(3).last_index(),
        i(1),
        "the unsynced entry is gone"
    );
    assert_eq!(cluster.node(3).term(), t(1));
    cluster.run_ticks(3);
    assert_eq!(cluster.node(3).last_index(), i(2));
    assert_eq!(cluster.commands(3), vec![bytes("a")]);
    assert_eq!(cluster.leader(), Some(n(1)));
}

/// Cluster, §5.4: a leader that crashes with entries only it holds loses them to the
/// next leader, which never had them; committed entries survive.
#[test]
fn s5_4_entries_only_the_crashed_leader_held_are_replaced() {
    let mut cluster = Cluster::new(VOTERS);
    cluster.elect(1);
    cluster.node_mut(1).propose(bytes("kept")).unwrap();
    cluster.stabilize();
    cluster.partition(1);
    cluster.node_mut(1).propose(bytes("lost")).unwrap();
    cluster.stabilize();
    cluster.crash(1);
    cluster.heal();
    cluster.elect(2);
    cluster.node_mut(2).propose(bytes("new")).unwrap();
    cluster.stabilize();
    cluster.restart(1);
    cluster.run_ticks(3);
    assert_eq!(cluster.node(1).role(), Role::Follower);
    for id in VOTERS {
        assert_eq!(
            cluster.commands(*id),
            vec![bytes("kept"), bytes("new")],
            "n{id}"
        );
    }
    cluster.check_log_matching();
}
