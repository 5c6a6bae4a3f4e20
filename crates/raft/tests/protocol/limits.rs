//! Limits on proposals and messages (TigerBeetle's "put a limit on everything"), and the
//! configuration checks: `max_uncommitted_bytes`, `max_msg_bytes`, and who may propose.

use rkv_raft::{
    Action, Busy, Config, ENTRY_OVERHEAD_BYTES, MessageBody, NotLeader, ProposeError, RaftNode,
};

use crate::common::*;

const VOTERS: &[u64] = &[1, 2, 3];

fn payload(len: usize) -> bytes::Bytes {
    bytes::Bytes::from(vec![b'x'; len])
}

/// Config contract: once the uncommitted entries reach `max_uncommitted_bytes`, further
/// proposals are refused as busy (and leave no trace), until entries commit.
#[test]
fn proposal_beyond_max_uncommitted_bytes_is_refused_as_busy() {
    let mut cfg = config(1);
    cfg.max_uncommitted_bytes = 100;
    let mut node = committed_leader_with(cfg, VOTERS);
    let half = 50 - ENTRY_OVERHEAD_BYTES;
    assert_eq!(node.propose(payload(half)), Ok((t(1), i(2))));
    assert_eq!(node.propose(payload(half)), Ok((t(1), i(3))));
    assert_eq!(
        node.propose(payload(1)),
        Err(ProposeError::Busy(Busy::UncommittedBytes {
            bytes: 100,
            limit: 100
        }))
    );
    assert_eq!(
        node.last_index(),
        i(3),
        "a refused proposal is not appended"
    );
    node.take_actions();
    node.persisted(i(3), t(1));
    node.step(msg(2, 1, 1, ack(3)));
    assert_eq!(node.commit_index(), i(3));
    assert_eq!(
        node.propose(payload(1)),
        Ok((t(1), i(4))),
        "committing frees the budget"
    );
}

/// Config contract: "Bytes of appended but uncommitted entries before proposals are
/// refused as busy" - the new leader's noop is such an entry.
///
/// BUG: `become_leader` (src/node.rs) initialises `uncommitted_bytes` from the log
/// *before* pushing the noop, but `advance_commit` subtracts the noop's 24 bytes when it
/// commits. After the noop commits the count is 24 bytes short of the real uncommitted
/// bytes, so the leader accepts proposals beyond `max_uncommitted_bytes`.
#[test]
fn uncommitted_bytes_stay_exact_when_the_leaders_noop_commits() {
    let mut cfg = config(1);
    cfg.max_uncommitted_bytes = 100;
    let mut node = node_with(cfg, bootstrap(VOTERS));
    make_leader(&mut node);
    // Three one-byte commands (25 bytes each) wait behind the noop.
    for _ in 0..3 {
        node.propose(payload(1)).unwrap();
    }
    node.take_actions();
    // Only the noop commits (n2 acknowledged just index 1).
    node.persisted(i(4), t(1));
    node.step(msg(2, 1, 1, ack(1)));
    assert_eq!(node.commit_index(), i(1));
    // 75 bytes are uncommitted; 26 more would make 101 > 100.
    assert_eq!(
        node.propose(payload(2)),
        Err(ProposeError::Busy(Busy::UncommittedBytes {
            bytes: 75,
            limit: 100
        }))
    );
}

/// Config contract: a single proposal larger than `max_msg_bytes` could never be sent.
#[test]
fn proposal_larger_than_max_msg_bytes_is_refused_as_too_large() {
    let mut cfg = config(1);
    cfg.max_msg_bytes = 100;
    let mut node = committed_leader_with(cfg, VOTERS);
    let fits = 100 - ENTRY_OVERHEAD_BYTES;
    assert_eq!(
        node.propose(payload(fits + 1)),
        Err(ProposeError::TooLarge {
            bytes: 101,
            limit: 100
        })
    );
    assert_eq!(node.take_actions(), vec![]);
    assert_eq!(node.propose(payload(fits)), Ok((t(1), i(2))));
}

/// Errors contract: a follower refuses a proposal and names the leader it knows.
#[test]
fn proposal_on_a_follower_is_refused_with_the_leader_hint() {
    let mut node = follower_of(2, 1, 1, VOTERS);
    assert_eq!(
        node.propose(payload(1)),
        Err(ProposeError::NotLeader(NotLeader {
            leader_hint: Some(n(1))
        }))
    );
    assert_eq!(node.take_actions(), vec![]);
    let mut lost = new_node(3, VOTERS);
    assert_eq!(
        lost.propose(payload(1)),
        Err(ProposeError::NotLeader(NotLeader { leader_hint: None }))
    );
}

/// Errors contract: a candidate knows no leader.
#[test]
fn proposal_on_a_candidate_is_refused_without_a_hint() {
    let mut node = new_node(1, VOTERS);
    tick_until_campaign(&mut node);
    assert_eq!(
        node.propose(payload(1)),
        Err(ProposeError::NotLeader(NotLeader { leader_hint: None }))
    );
}

/// Config and `Message::size_bytes` contract: `max_msg_bytes` bounds "bytes per message",
/// and `Message::size_bytes` is "for the per-message byte limit"; only a single entry
/// larger than the limit may exceed it.
///
/// BUG (minor): `send_append` (src/node.rs) passes `max_msg_bytes` to `RaftLog::slice`,
/// which counts entry bytes only, so a batched Append exceeds the limit by the 32-byte
/// header that `Message::size_bytes` adds. Subtract the header (or compare
/// `Message::size_bytes`) when slicing.
#[test]
fn batched_append_messages_stay_within_max_msg_bytes() {
    let mut cfg = config(1);
    cfg.max_msg_bytes = 100;
    let mut node = committed_leader_with(cfg, VOTERS);
    for _ in 0..8 {
        node.propose(payload(1)).unwrap();
    }
    let mut appends = 0;
    for action in node.take_actions() {
        if let Action::Send(message) = action
            && let MessageBody::Append { entries, .. } = &message.body
        {
            appends += 1;
            assert!(
                entries.len() == 1 || message.size_bytes() <= 100,
                "{} entries in a message of {} bytes",
                entries.len(),
                message.size_bytes()
            );
        }
    }
    assert!(appends >= 2);
}

fn refused(change: impl FnOnce(&mut Config)) -> &'static str {
    let mut cfg = config(1);
    change(&mut cfg);
    RaftNode::new(cfg, bootstrap(VOTERS), 1)
        .expect_err("invalid configuration accepted")
        .field
}

/// Config contract (`validate`): settings that cannot work are refused, naming the field.
#[test]
fn invalid_configurations_are_refused() {
    assert_eq!(refused(|c| c.id = n(0)), "id");
    assert_eq!(refused(|c| c.heartbeat_ticks = 0), "heartbeat_ticks");
    assert_eq!(
        refused(|c| c.election_ticks = c.heartbeat_ticks),
        "election_ticks"
    );
    assert_eq!(refused(|c| c.entries_per_msg = 0), "entries_per_msg");
    assert_eq!(refused(|c| c.catchup_multiplier = 0), "catchup_multiplier");
    assert_eq!(refused(|c| c.max_inflight_msgs = 0), "max_inflight_msgs");
    assert_eq!(refused(|c| c.max_msg_bytes = 0), "max_msg_bytes");
    assert_eq!(refused(|c| c.snapshot_chunk_bytes = 0), "max_msg_bytes");
    assert_eq!(
        refused(|c| c.max_uncommitted_bytes = 0),
        "max_uncommitted_bytes"
    );
    assert!(config(1).validate().is_ok());
}
