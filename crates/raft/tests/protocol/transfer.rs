//! Leadership transfer (dissertation §3.10).

use rkv_raft::{
    Action, Busy, MembershipChange, MembershipError, MessageBody, NotLeader, ProposeError, ReadId,
    ReadMode, Role, TransferError,
};

use crate::common::*;

const VOTERS: &[u64] = &[1, 2, 3];

/// §3.10: once the target's log is up to date, the leader tells it to time out now.
#[test]
fn s3_10_transfer_sends_timeout_now_to_a_caught_up_target() {
    let mut node = committed_leader(VOTERS);
    assert_eq!(node.transfer_leadership(n(2)), Ok(()));
    assert_eq!(
        node.take_actions(),
        vec![send(1, 2, 1, MessageBody::TimeoutNow)]
    );
}

/// §3.10: "the prior leader sends its log entries to the target server" first; TimeoutNow
/// follows the acknowledgement that makes it current, and is sent only once.
#[test]
fn s3_10_transfer_waits_for_a_lagging_target_to_catch_up() {
    let mut node = committed_leader(VOTERS);
    node.propose(bytes("x")).unwrap();
    node.take_actions();
    assert_eq!(node.transfer_leadership(n(2)), Ok(()));
    assert_eq!(node.take_actions(), vec![]);
    node.step(msg(2, 1, 1, ack(2)));
    assert_eq!(
        node.take_actions(),
        vec![send(1, 2, 1, MessageBody::TimeoutNow)]
    );
    node.step(msg(
        2,
        1,
        1,
        MessageBody::HeartbeatResponse { read_round: 0 },
    ));
    node.step(msg(2, 1, 1, ack(2)));
    assert_eq!(node.take_actions(), vec![]);
}

/// §3.10: "the prior leader stops accepting new client requests" during the transfer.
#[test]
fn s3_10_proposals_and_membership_changes_are_refused_during_a_transfer() {
    let mut node = committed_leader(VOTERS);
    node.transfer_leadership(n(2)).unwrap();
    assert_eq!(
        node.propose(bytes("x")),
        Err(ProposeError::Busy(Busy::Transferring))
    );
    assert_eq!(
        node.change_membership(MembershipChange::AddLearner(n(4))),
        Err(MembershipError::Busy(Busy::Transferring))
    );
}

/// §3.10: TimeoutNow makes the target start an election at once, at the next term,
/// without PreVote, flagged as a transfer so that voters ignore their leases.
#[test]
fn s3_10_target_campaigns_at_once_without_pre_vote() {
    let mut node = follower_of(2, 1, 1, VOTERS);
    node.step(msg(1, 2, 1, MessageBody::TimeoutNow));
    assert_eq!(node.role(), Role::Candidate);
    assert_eq!(node.term(), t(2));
    assert_eq!(
        node.take_actions(),
        vec![
            Action::SaveHardState(hard_state(2, Some(2))),
            send(2, 1, 2, vote(0, 0, true)),
            send(2, 3, 2, vote(0, 0, true)),
        ]
    );
}

/// §3.10: "If the transfer does not complete after an election timeout, the prior leader
/// aborts the transfer and resumes accepting client requests."
#[test]
fn s3_10_transfer_aborts_after_an_election_timeout() {
    let mut node = committed_leader(VOTERS);
    node.propose(bytes("x")).unwrap();
    node.transfer_leadership(n(2)).unwrap();
    tick_n(&mut node, ELECTION_TICKS - 1);
    assert_eq!(
        node.propose(bytes("y")),
        Err(ProposeError::Busy(Busy::Transferring))
    );
    node.tick();
    assert_eq!(node.role(), Role::Leader);
    assert_eq!(node.propose(bytes("y")), Ok((t(1), i(3))));
    let actions = node.take_actions();
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Send(m) if m.body == MessageBody::TimeoutNow)),
        "{actions:?}"
    );
}

/// Errors contract: a transfer that cannot happen is refused with a typed reason.
#[test]
fn s3_10_invalid_transfers_are_refused() {
    let mut node = node_with(config(1), bootstrap_with(membership(VOTERS, &[4])));
    make_leader(&mut node);
    assert_eq!(
        node.transfer_leadership(n(1)),
        Err(TransferError::AlreadyLeader)
    );
    assert_eq!(
        node.transfer_leadership(n(4)),
        Err(TransferError::NotVoter(n(4)))
    );
    assert_eq!(
        node.transfer_leadership(n(9)),
        Err(TransferError::NotVoter(n(9)))
    );
    node.transfer_leadership(n(2)).unwrap();
    assert_eq!(
        node.transfer_leadership(n(3)),
        Err(TransferError::InProgress)
    );
    let mut follower = follower_of(2, 1, 1, VOTERS);
    assert_eq!(
        follower.transfer_leadership(n(3)),
        Err(TransferError::NotLeader(NotLeader {
            leader_hint: Some(n(1))
        }))
    );
}

/// §6.4.1 with §3.10: once TimeoutNow is out, voters may ignore their leases, so the
/// leader stops serving lease reads from its lease.
#[test]
fn s3_10_lease_is_revoked_once_timeout_now_is_sent() {
    let mut node = committed_leader(VOTERS);
    node.tick();
    node.take_actions();
    node.step(msg(
        2,
        1,
        1,
        MessageBody::HeartbeatResponse { read_round: 1 },
    ));
    node.read(ReadId(1), ReadMode::Lease).unwrap();
    assert_eq!(
        node.take_actions(),
        vec![Action::ReadReady {
            id: ReadId(1),
            index: i(1)
        }]
    );
    node.transfer_leadership(n(2)).unwrap();
    node.take_actions();
    node.read(ReadId(2), ReadMode::Lease).unwrap();
    assert_eq!(
        node.take_actions(),
        vec![
            send(1, 2, 1, heartbeat(1, 2)),
            send(1, 3, 1, heartbeat(1, 2))
        ]
    );
}

/// Cluster, §3.10: leadership moves to the target in one election, at the next term, and
/// the new leader takes proposals.
#[test]
fn s3_10_cluster_leadership_moves_to_the_target() {
    let mut cluster = Cluster::new(VOTERS);
    cluster.elect(1);
    cluster.node_mut(1).propose(bytes("a")).unwrap();
    cluster.stabilize();
    cluster.node_mut(1).transfer_leadership(n(2)).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.leader(), Some(n(2)));
    assert_eq!(cluster.node(2).term(), t(2));
    assert_eq!(cluster.node(1).role(), Role::Follower);
    cluster.node_mut(2).propose(bytes("b")).unwrap();
    cluster.stabilize();
    cluster.run_ticks(1);
    for id in VOTERS {
        assert_eq!(cluster.commands(*id), vec![bytes("a"), bytes("b")], "n{id}");
    }
}
