//! Engines talking over real TCP on loopback, in the peer protocol of `rkv-wire`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use rkv_engine::{Engine, EngineConfig, ReadLevel, StateMachine, TcpTransport};
use rkv_raft::{Index, Membership, NodeId, Role, Snapshot};
use tokio::net::TcpListener;

/// Counts applied commands.
#[derive(Default)]
struct Counter(u64);

impl StateMachine for Counter {
    type Output = u64;
    fn apply(&mut self, _index: Index, _command: &Bytes) -> u64 {
        self.0 += 1;
        self.0
    }
    fn apply_noop(&mut self, _index: Index) {}
    fn snapshot(&self) -> rkv_engine::SnapshotJob {
        let count = self.0;
        Box::new(move || Bytes::from(count.to_le_bytes().to_vec()))
    }
    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        let bytes: [u8; 8] = snapshot
            .data
            .as_ref()
            .try_into()
            .map_err(|_| "bad counter snapshot")?;
        self.0 = u64::from_le_bytes(bytes);
        Ok(())
    }
}

const WAIT: Duration = Duration::from_secs(20);

struct Node {
    engine: Engine<Counter>,
    transport: TcpTransport,
    _dir: tempfile::TempDir,
}

async fn cluster(cluster_ids: &[u64]) -> Vec<Node> {
    let mut listeners = Vec::new();
    let mut addresses = BTreeMap::new();
    for id in 1..=cluster_ids.len() as u64 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        addresses.insert(NodeId(id), listener.local_addr().expect("address"));
        listeners.push(listener);
    }
    let membership = Membership::with_voters(addresses.keys().copied());
    let mut nodes = Vec::new();
    for (listener, (id, cluster_id)) in listeners
        .into_iter()
        .zip((1..).map(NodeId).zip(cluster_ids))
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = EngineConfig::new(id, dir.path());
        config.tick = Duration::from_millis(5);
        config.bootstrap = Some(membership.clone());
        let transport = TcpTransport::new(id, *cluster_id, addresses.clone());
        let engine = Engine::start(config, Counter::default(), transport.clone()).expect("starts");
        let (server, inbox) = (transport.clone(), engine.peer_inbox());
        tokio::spawn(async move { server.serve(listener, inbox).await });
        nodes.push(Node {
            engine,
            transport,
            _dir: dir,
        });
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_worth_of_engines_replicate_over_tcp() {
    let nodes = cluster(&[7, 7, 7]).await;
    let leader = tokio::time::timeout(WAIT, async {
        loop {
            for node in &nodes {
                if node.engine.observed().role == Role::Leader {
                    return node;
                }
            }
            let mut watch = nodes[0].engine.watch();
            let _ = tokio::time::timeout(Duration::from_millis(20), watch.changed()).await;
        }
    })
    .await
    .expect("a leader is elected over TCP");
    for expected in 1..=50u64 {
        let count = leader
            .engine
            .propose(Bytes::from_static(b"+1"))
            .await
            .expect("committed");
        assert_eq!(count, expected);
    }
    for node in &nodes {
        let count = node
            .engine
            .read(ReadLevel::Linearizable, |c: &Counter| c.0)
            .await;
        assert_eq!(count, Ok(50), "node {}", node.engine.id());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_from_another_cluster_is_refused() {
    // Node 3 believes it belongs to cluster 8: the others must not let it in, nor it them.
    let nodes = cluster(&[7, 7, 8]).await;
    let stranger = &nodes[2];
    let refused = tokio::time::timeout(WAIT, async {
        loop {
            let failures: u64 = nodes
                .iter()
                .map(|n| {
                    n.transport
                        .stats()
                        .handshake_failures
                        .load(Ordering::Relaxed)
                })
                .sum();
            if failures >= 2 {
                return failures;
            }
            let mut watch = stranger.engine.watch();
            let _ = tokio::time::timeout(Duration::from_millis(20), watch.changed()).await;
        }
    })
    .await
    .expect("handshakes are refused");
    assert!(refused >= 2);
    // The two real members still form a majority of three and elect a leader among themselves.
    let elected = nodes[0]
        .engine
        .wait_for(WAIT, |o| o.leader.is_some_and(|l| l != NodeId(3)))
        .await;
    assert!(
        elected.is_some(),
        "nodes 1 and 2 elect a leader without node 3"
    );
    // Cut off, it keeps asking for pre-votes that never arrive, and never leads.
    assert_ne!(
        stranger.engine.observed().role,
        Role::Leader,
        "the stranger never wins"
    );
    assert_eq!(
        stranger.engine.observed().term,
        rkv_raft::Term(0),
        "pre-votes do not raise its term"
    );
}
