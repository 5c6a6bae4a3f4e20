//! Joining by address, in process over real TCP on loopback: a founder registers its own
//! address, a server joins through the leader, a join sent to a follower is refused with
//! the leader's address, learners meant to vote are promoted once caught up, and the
//! newcomers apply what the cluster writes.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{WAIT, eventually};
use rkv_engine::{EngineConfig, ReadLevel};
use rkv_kv::{PeerRecord, PeerRole, WriteOp};
use rkv_raft::{Membership, NodeId};
use rkv_server::membership::{JoinError, Joined, node_id_for, spawn_steward};
use rkv_server::node::{self, NodeSpec, Started};
use rkv_server::peers::dialable;

/// `count` distinct free loopback addresses (see `rkv-testkit`).
fn free_addresses(count: usize) -> Vec<SocketAddr> {
    rkv_testkit::free_ports(count, 0)
        .into_iter()
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
        .collect()
}

fn record(name: &str, peer: SocketAddr) -> PeerRecord {
    PeerRecord {
        name: name.into(),
        peer_address: peer.to_string(),
        client_address: format!("client-of-{name}"),
        role: PeerRole::Voter,
        incarnation: 0,
    }
}

fn config(name: &str, dir: &std::path::Path, bootstrap: bool) -> EngineConfig {
    let id = node_id_for(name);
    let mut config = EngineConfig::new(id, dir.join(name));
    config.tick = Duration::from_millis(10);
    config.raft.election_ticks = 20;
    if bootstrap {
        config.bootstrap = Some(Membership::with_voters([id]));
    }
    config
}

async fn start(
    name: &str,
    dir: &std::path::Path,
    cluster_id: u64,
    peer: SocketAddr,
    joined: Option<&Joined>,
) -> Started {
    let peers: BTreeMap<NodeId, SocketAddr> = joined
        .map(|j| {
            j.peers
                .iter()
                .filter_map(|(id, r)| Some((NodeId(*id), dialable(&r.peer_address)?)))
                .collect()
        })
        .unwrap_or_default();
    let started = node::start(NodeSpec {
        config: config(name, dir, joined.is_none()),
        cluster_id,
        peers,
        peer_listen: peer,
        source_address: None,
        servers: Vec::new(),
        unsafe_local_reads: false,
        address_book: true,
        observer: None,
    })
    .await
    .expect("node starts");
    spawn_steward(started.node.clone(), Some(record(name, peer)));
    started
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_join_by_address_through_the_leader_and_become_voters() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster_id = 0x5eed;
    let [a_peer, b_peer, c_peer] = free_addresses(3)[..] else {
        unreachable!("three addresses")
    };
    let a = start("a", dir.path(), cluster_id, a_peer, None).await;
    let (a_id, b_id, c_id) = (node_id_for("a"), node_id_for("b"), node_id_for("c"));

    // The founder leads alone and records its own address.
    eventually("the founder records itself", async || {
        match a.node.peers().await {
            Ok(peers) if peers.get(&a_id.0) == Some(&record("a", a_peer)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let joined = eventually("b joins through the leader", async || {
        a.node.join(b_id, record("b", b_peer)).await
    })
    .await;
    assert_eq!(joined.cluster_id, cluster_id);
    assert_eq!(joined.leader, a_id);
    assert_eq!(joined.peers.len(), 2, "{:?}", joined.peers);
    let b = start("b", dir.path(), cluster_id, b_peer, Some(&joined)).await;

    // A joined server that is caught up is promoted by the leader's steward.
    eventually("b becomes a voter", async || {
        let status = a.node.engine.status().await.map_err(|e| e.to_string())?;
        if status.membership.voters.contains(&b_id) {
            Ok(())
        } else {
            Err(format!("{:?}", status.membership))
        }
    })
    .await;

    // A follower refuses a join and names the leader, with its client address.
    let refused = b
        .node
        .join(c_id, record("c", c_peer))
        .await
        .expect_err("b does not lead");
    assert_eq!(
        refused,
        JoinError::NotLeader {
            leader: Some(a_id),
            leader_address: Some("client-of-a".into())
        }
    );
    // A second name that maps to a taken id is refused (simulated by reusing b's id).
    let taken = a.node.join(b_id, record("impostor", c_peer)).await;
    assert!(
        matches!(taken, Err(JoinError::NameTaken { .. })),
        "{taken:?}"
    );

    let joined = a
        .node
        .join(c_id, record("c", c_peer))
        .await
        .expect("c joins");
    let c = start("c", dir.path(), cluster_id, c_peer, Some(&joined)).await;
    eventually("c becomes a voter", async || {
        let status = a.node.engine.status().await.map_err(|e| e.to_string())?;
        if status.membership.voters.len() == 3 {
            Ok(())
        } else {
            Err(format!("{:?}", status.membership))
        }
    })
    .await;

    // Writes reach the newcomers, and their book holds everyone.
    a.node
        .write(
            WriteOp::Put {
                key: Bytes::from("k"),
                value: Bytes::from("v"),
            },
            None,
        )
        .await
        .expect("write");
    for (name, started) in [("b", &b), ("c", &c)] {
        let value = eventually(&format!("{name} reads k"), async || {
            let read = started
                .node
                .engine
                .read(ReadLevel::Linearizable, |m| m.kv.get(b"k").cloned())
                .await;
            match read {
                Ok(Some(value)) => Ok(value),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        assert_eq!(value, Bytes::from("v"));
        let peers = started.node.peers().await.expect("book");
        assert_eq!(peers.len(), 3, "{name}: {peers:?}");
        let kept = std::fs::read(dir.path().join(name).join(rkv_server::peers::PEERS_FILE));
        assert!(
            kept.is_ok_and(|bytes| !bytes.is_empty()),
            "{name} keeps the book on disk"
        );
    }
}

/// The learners of `node`'s membership and its voters, as the leader sees them.
async fn membership(node: &Started) -> Result<rkv_raft::Membership, String> {
    let status = node.node.engine.status().await.map_err(|e| e.to_string())?;
    Ok(status.membership)
}

/// Regression: a server that joined but never started (its peer address answers
/// nothing) used to be promoted by the steward at once (the core's lag check passes a
/// learner with match index 0 in a young cluster), leaving a one-node founder with a
/// dead voter: no quorum, ever. It must stay a learner, must not block a later joiner's
/// promotion, and the cluster must keep accepting writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_server_that_never_starts_stays_a_learner() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster_id = 0xdead;
    let [a_peer, ghost_peer, c_peer] = free_addresses(3)[..] else {
        unreachable!("three addresses")
    };
    let a = start("a", dir.path(), cluster_id, a_peer, None).await;
    let (a_id, ghost_id, c_id) = (node_id_for("a"), node_id_for("ghost"), node_id_for("c"));
    eventually("the founder records itself", async || {
        match a.node.peers().await {
            Ok(peers) if peers.contains_key(&a_id.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // The ghost joins first and never starts.
    eventually("the ghost joins", async || {
        a.node.join(ghost_id, record("ghost", ghost_peer)).await
    })
    .await;
    let joined = eventually("c joins", async || {
        a.node.join(c_id, record("c", c_peer)).await
    })
    .await;
    let _c = start("c", dir.path(), cluster_id, c_peer, Some(&joined)).await;
    eventually("c, which answers, becomes a voter", async || {
        let m = membership(&a).await?;
        if m.voters.contains(&c_id) {
            Ok(m)
        } else {
            Err(format!("{m:?}"))
        }
    })
    .await;
    let m = membership(&a).await.expect("status");
    assert!(
        m.learners.contains(&ghost_id),
        "the ghost stays a learner: {m:?}"
    );
    assert!(!m.voters.contains(&ghost_id), "{m:?}");
    // The cluster still commits (a and c are a quorum of two voters).
    let put = a.node.write(
        WriteOp::Put {
            key: Bytes::from("k"),
            value: Bytes::from("v"),
        },
        None,
    );
    tokio::time::timeout(WAIT, put)
        .await
        .expect("the write commits in time")
        .expect("write");
    let m = membership(&a).await.expect("status");
    assert!(m.learners.contains(&ghost_id), "{m:?}");
}

#[test]
fn only_a_learner_that_acknowledged_the_commit_index_is_caught_up() {
    use rkv_raft::Index;
    use rkv_server::membership::is_caught_up;
    assert!(!is_caught_up(None, Index(5)));
    assert!(!is_caught_up(Some(Index(0)), Index(0)));
    assert!(!is_caught_up(Some(Index(0)), Index(3)));
    assert!(!is_caught_up(Some(Index(4)), Index(5)));
    assert!(is_caught_up(Some(Index(5)), Index(5)));
    assert!(is_caught_up(Some(Index(6)), Index(5)));
}

/// Regression: joining again under a member's name used to take over that member's
/// identity (a wiped directory or a second process became the voter, without its log
/// or its vote). Only the same incarnation may join again (idempotent); another is
/// refused until the operator removes the old member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_name_is_refused_to_another_incarnation_until_removed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let [a_peer, b_peer] = free_addresses(2)[..] else {
        unreachable!("two addresses")
    };
    let a = start("a", dir.path(), 0xb0b, a_peer, None).await;
    let (a_id, b_id) = (node_id_for("a"), node_id_for("b"));
    let incarnation = |n: u64| PeerRecord {
        incarnation: n,
        ..record("b", b_peer)
    };
    eventually("b joins", async || a.node.join(b_id, incarnation(1)).await).await;
    let again = a.node.join(b_id, incarnation(1)).await;
    assert!(again.is_ok(), "the same incarnation joins again: {again:?}");

    let refused = a.node.join(b_id, incarnation(2)).await;
    assert_eq!(
        refused,
        Err(JoinError::AnotherIncarnation {
            node_id: b_id,
            name: "b".into()
        })
    );
    assert!(
        refused
            .expect_err("refused")
            .to_string()
            .contains("remove the old member first")
    );
    let book = a.node.peers().await.expect("book");
    assert_eq!(book.get(&b_id.0), Some(&incarnation(1)), "unchanged");
    // The founder's own name is refused to a newcomer too.
    let founder = a
        .node
        .join(
            a_id,
            PeerRecord {
                incarnation: 9,
                ..record("a", b_peer)
            },
        )
        .await;
    assert!(
        matches!(founder, Err(JoinError::AnotherIncarnation { .. })),
        "{founder:?}"
    );

    a.node.remove_server(b_id).await.expect("remove b");
    let status = a.node.engine.status().await.expect("status");
    assert!(!status.membership.contains(b_id), "{:?}", status.membership);
    let joined = a
        .node
        .join(b_id, incarnation(2))
        .await
        .expect("after removal the new incarnation joins");
    assert_eq!(joined.peers.get(&b_id.0), Some(&incarnation(2)));
}

/// Regression: two joins of the same server at once (the joiner's retry racing its
/// first attempt) used to fail one of them: the second `AddLearner` was refused as
/// "already a member", which reached the joiner as a 400 it does not retry. Both must
/// succeed, with one learner added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_joins_of_one_server_at_once_both_succeed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let [a_peer, b_peer] = free_addresses(2)[..] else {
        unreachable!("two addresses")
    };
    let a = start("a", dir.path(), 0x2a, a_peer, None).await;
    let (a_id, b_id) = (node_id_for("a"), node_id_for("b"));
    eventually("the founder records itself", async || {
        match a.node.peers().await {
            Ok(peers) if peers.contains_key(&a_id.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let b = PeerRecord {
        incarnation: 5,
        ..record("b", b_peer)
    };
    let (first, second) = tokio::join!(a.node.join(b_id, b.clone()), a.node.join(b_id, b.clone()));
    assert!(first.is_ok(), "{first:?}");
    assert!(second.is_ok(), "{second:?}");
    let status = a.node.engine.status().await.expect("status");
    assert!(status.membership.learners.contains(&b_id), "{status:?}");
}
