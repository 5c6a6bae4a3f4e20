//! Whole clusters of engines in one process, over the in-process network and real,
//! fsync'd logs in temporary directories: election, replication, reads at every level,
//! restart from the data directory, and membership changes.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::future::select_all;
use rkv_engine::transport::LocalNetwork;
use rkv_engine::{Engine, EngineConfig, EngineError, ReadLevel, StateMachine};
use rkv_raft::{Index, Membership, MembershipChange, NodeId, Role, Snapshot};

/// A tiny map whose commands are `key=value`.
#[derive(Default)]
struct Map {
    map: BTreeMap<String, String>,
    applied: u64,
}

impl StateMachine for Map {
    type Output = u64;

    fn apply(&mut self, index: Index, command: &Bytes) -> u64 {
        let text = String::from_utf8_lossy(command);
        if let Some((k, v)) = text.split_once('=') {
            self.map.insert(k.to_string(), v.to_string());
        }
        self.applied = index.0;
        index.0
    }

    fn apply_noop(&mut self, index: Index) {
        self.applied = index.0;
    }

    fn snapshot(&self) -> rkv_engine::SnapshotJob {
        let text: Vec<String> = self.map.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Box::new(move || Bytes::from(text.join("\n")))
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        let text = std::str::from_utf8(&snapshot.data).map_err(|e| e.to_string())?;
        self.map = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.applied = snapshot.meta.index.0;
        Ok(())
    }
}

const WAIT: Duration = Duration::from_secs(20);

struct Cluster {
    network: LocalNetwork,
    dirs: BTreeMap<NodeId, tempfile::TempDir>,
    engines: BTreeMap<NodeId, Engine<Map>>,
    founders: Membership,
    /// (snapshot_entries, cache_entries) for every node started.
    settings: (u64, usize),
}

impl Cluster {
    fn new(size: u64) -> Cluster {
        Cluster::with_settings(size, 50, 4096)
    }

    fn with_settings(size: u64, snapshot_entries: u64, cache_entries: usize) -> Cluster {
        let founders = Membership::with_voters((1..=size).map(NodeId));
        let mut cluster = Cluster {
            network: LocalNetwork::new(),
            dirs: BTreeMap::new(),
            engines: BTreeMap::new(),
            founders,
            settings: (snapshot_entries, cache_entries),
        };
        for id in 1..=size {
            cluster.start(NodeId(id), true);
        }
        cluster
    }

    fn start(&mut self, id: NodeId, founder: bool) {
        let dir = self
            .dirs
            .entry(id)
            .or_insert_with(|| tempfile::tempdir().expect("temp dir"));
        let mut config = EngineConfig::new(id, dir.path());
        config.tick = Duration::from_millis(5);
        (config.snapshot_entries, config.cache_entries) = self.settings;
        config.bootstrap = founder.then(|| self.founders.clone());
        let engine = Engine::start(config, Map::default(), self.network.clone()).expect("starts");
        self.network.register(id, engine.peer_inbox());
        self.engines.insert(id, engine);
    }

    fn stop(&mut self, id: NodeId) {
        self.network.unregister(id);
        self.engines.remove(&id);
    }

    async fn leader(&self) -> NodeId {
        let mut watches: Vec<_> = self.engines.values().map(Engine::watch).collect();
        tokio::time::timeout(WAIT, async {
            loop {
                for w in &mut watches {
                    let seen = w.borrow_and_update().clone();
                    if seen.role == Role::Leader {
                        return seen.leader.expect("a leader knows itself");
                    }
                }
                let changes = watches.iter_mut().map(|w| Box::pin(w.changed()));
                let _ = select_all(changes).await;
            }
        })
        .await
        .expect("a leader is elected in time")
    }

    fn engine(&self, id: NodeId) -> &Engine<Map> {
        &self.engines[&id]
    }

    /// Proposes through whoever leads, following hints, until it is applied.
    async fn put(&self, key: &str, value: &str) -> u64 {
        let command = Bytes::from(format!("{key}={value}"));
        tokio::time::timeout(WAIT, async {
            loop {
                let leader = self.leader().await;
                match self.engine(leader).propose(command.clone()).await {
                    Ok(index) => return index,
                    Err(
                        EngineError::NotLeader { .. } | EngineError::Dropped | EngineError::Busy(_),
                    ) => {
                        // Leadership moved between looking and proposing: look again.
                        let mut watch = self.engine(leader).watch();
                        let _ =
                            tokio::time::timeout(Duration::from_millis(50), watch.changed()).await;
                    }
                    Err(e) => panic!("put {key}: {e}"),
                }
            }
        })
        .await
        .expect("the write commits in time")
    }
}

fn get(key: &str) -> impl FnOnce(&Map) -> Option<String> + Send + 'static {
    let key = key.to_string();
    move |m: &Map| m.map.get(&key).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_and_read_at_every_level() {
    let cluster = Cluster::new(3);
    let leader = cluster.leader().await;
    let index = cluster.put("x", "1").await;
    assert!(index > 1, "the entry follows the leader's noop");
    for (id, engine) in &cluster.engines {
        let value = engine.read(ReadLevel::Linearizable, get("x")).await;
        assert_eq!(
            value,
            Ok(Some("1".to_string())),
            "linearizable read on {id} (leader {leader})"
        );
    }
    let lease = cluster
        .engine(leader)
        .read(ReadLevel::Lease, get("x"))
        .await;
    assert_eq!(lease, Ok(Some("1".to_string())));
    // A stale read sees the value once the replica has applied the entry.
    for engine in cluster.engines.values() {
        let seen = engine.wait_for(WAIT, |o| o.applied.0 >= index).await;
        assert!(seen.is_some(), "every replica applies the write");
        assert_eq!(
            engine.read(ReadLevel::Stale, get("x")).await,
            Ok(Some("1".to_string()))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_refuses_proposals_with_the_leader_hint() {
    let cluster = Cluster::new(3);
    let leader = cluster.leader().await;
    cluster.put("warm", "up").await;
    let follower = *cluster
        .engines
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    let knows = cluster
        .engine(follower)
        .wait_for(WAIT, |o| o.leader == Some(leader))
        .await;
    assert!(knows.is_some(), "the follower hears from the leader");
    let result = cluster
        .engine(follower)
        .propose(Bytes::from_static(b"a=b"))
        .await;
    assert_eq!(
        result,
        Err(EngineError::NotLeader {
            leader_hint: Some(leader)
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_losing_the_leader_and_a_full_restart() {
    let mut cluster = Cluster::new(3);
    for i in 0..120 {
        cluster.put(&format!("k{i}"), &i.to_string()).await;
    }
    let old_leader = cluster.leader().await;
    cluster.stop(old_leader);
    cluster.put("after", "failover").await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, old_leader);
    // Every node goes down at once, then comes back from its directory.
    let ids: Vec<NodeId> = cluster.dirs.keys().copied().collect();
    for id in &ids {
        cluster.stop(*id);
    }
    for id in &ids {
        cluster.start(*id, true);
    }
    cluster.leader().await;
    cluster.put("after", "restart").await;
    for engine in cluster.engines.values() {
        assert_eq!(
            engine.read(ReadLevel::Linearizable, get("k7")).await,
            Ok(Some("7".to_string()))
        );
        assert_eq!(
            engine.read(ReadLevel::Linearizable, get("after")).await,
            Ok(Some("restart".to_string()))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_server_joins_as_learner_catches_up_from_a_snapshot_and_is_promoted() {
    let mut cluster = Cluster::new(3);
    for i in 0..200 {
        cluster.put(&format!("k{i}"), &i.to_string()).await;
    }
    cluster.start(NodeId(4), false);
    let leader = cluster.leader().await;
    cluster
        .engine(leader)
        .change_membership(MembershipChange::AddLearner(NodeId(4)))
        .await
        .expect("learner added");
    let caught_up = cluster
        .engine(NodeId(4))
        .wait_for(WAIT, |o| o.applied.0 >= 200)
        .await;
    assert!(caught_up.is_some(), "the learner catches up");
    let leader = cluster.leader().await;
    let promoted = tokio::time::timeout(WAIT, async {
        loop {
            match cluster
                .engine(leader)
                .change_membership(MembershipChange::Promote(NodeId(4)))
                .await
            {
                Ok(index) => return index,
                Err(EngineError::Invalid(_) | EngineError::Busy(_)) => {
                    cluster.put("nudge", "1").await;
                }
                Err(e) => panic!("promote: {e}"),
            }
        }
    })
    .await
    .expect("promoted in time");
    assert!(promoted.0 > 200);
    let status = cluster.engine(leader).status().await.expect("status");
    assert!(status.membership.voters.contains(&NodeId(4)));
    assert_eq!(
        cluster
            .engine(NodeId(4))
            .read(ReadLevel::Linearizable, get("k150"))
            .await,
        Ok(Some("150".to_string()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_bound_compacts_the_entries_kept_in_memory() {
    // Snapshots by count are off (100,000); -cache 10 means the floor of 1,000 entries.
    let cluster = Cluster::with_settings(1, 100_000, 10);
    assert_eq!(rkv_engine::CACHE_ENTRIES_MIN, 1000);
    for i in 0..1100 {
        cluster.put(&format!("k{i}"), "v").await;
    }
    let engine = cluster.engine(NodeId(1));
    // Snapshots fall at a per-node phase of each run of 1,000 entries; whatever the
    // phase, no more than 1,000 entries stay in memory after the latest one.
    tokio::time::timeout(WAIT, async {
        loop {
            let status = engine.status().await.expect("status");
            let in_memory = status.last_index.0 - status.snapshot_index.0;
            if status.snapshot_index.0 > 0 && in_memory <= 1000 {
                return;
            }
            let mut watch = engine.watch();
            let _ = tokio::time::timeout(Duration::from_millis(50), watch.changed()).await;
        }
    })
    .await
    .expect("a snapshot keeps at most 1,000 entries in memory");
    assert_eq!(
        engine.read(ReadLevel::Linearizable, get("k7")).await,
        Ok(Some("v".to_string()))
    );
}
