//! The core alone: proposals committed per second by a 3-node cluster held in memory,
//! with no I/O at all (messages are handed over directly, "persisted" is reported at
//! once). This is the ceiling the protocol logic puts on rkv, whatever the disk and
//! network do; the shape of openraft's minimal benchmark.
//!
//! `cargo bench -p rkv-raft` runs it; `cargo bench -p rkv-raft -- --test` runs a tiny
//! version that only checks it still works.
#![allow(clippy::disallowed_methods)] // a benchmark's job is to read the clock

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rkv_raft::{Action, Config, Membership, Message, NodeId, RaftNode, Recovered, Role, Snapshot};

struct Cluster {
    nodes: Vec<RaftNode>,
    inbox: VecDeque<Message>,
    committed: u64,
}

impl Cluster {
    fn new(size: u64) -> Cluster {
        let membership = Membership::with_voters((1..=size).map(NodeId));
        let nodes = (1..=size)
            .map(|id| {
                let mut config = Config::new(NodeId(id));
                config.entries_per_msg = 256;
                // Node 1 leads; the others only follow.
                config.campaign = id == 1;
                config.max_inflight_msgs = 64;
                let recovered = Recovered {
                    snapshot: Snapshot::bootstrap(membership.clone()),
                    ..Recovered::default()
                };
                RaftNode::new(config, recovered, id).expect("valid config")
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            inbox: VecDeque::new(),
            committed: 0,
        };
        for _ in 0..1_000 {
            if cluster.nodes[0].role() == Role::Leader {
                break;
            }
            for node in &mut cluster.nodes {
                node.tick();
            }
            cluster.settle();
        }
        assert_eq!(cluster.nodes[0].role(), Role::Leader, "node 1 is elected");
        cluster.committed = 0;
        cluster
    }

    fn process(&mut self, at: usize) {
        for action in self.nodes[at].take_actions() {
            match action {
                Action::Append(entries) => {
                    if let Some(last) = entries.last() {
                        let (index, term) = (last.index, last.term);
                        self.nodes[at].persisted(index, term);
                    }
                }
                Action::Send(message) => self.inbox.push_back(message),
                Action::Apply(entries) if at == 0 => self.committed += entries.len() as u64,
                _ => {}
            }
        }
    }

    /// Delivers messages until the cluster is quiet.
    fn settle(&mut self) {
        loop {
            for at in 0..self.nodes.len() {
                while self.nodes[at].has_actions() {
                    self.process(at);
                }
            }
            if self.inbox.is_empty() {
                return;
            }
            while let Some(message) = self.inbox.pop_front() {
                let to = usize::try_from(message.to.0 - 1).expect("small ids");
                self.nodes[to].step(message);
            }
        }
    }
}

/// Keeps `proposers` proposals outstanding until `total` have committed.
fn run(proposers: u64, total: u64) -> Duration {
    let mut cluster = Cluster::new(3);
    let payload = Bytes::from_static(b"0123456789abcdef");
    let started = Instant::now();
    let mut proposed = 0u64;
    while cluster.committed < total {
        let outstanding = proposed - cluster.committed;
        for _ in outstanding..proposers {
            cluster.nodes[0]
                .propose(payload.clone())
                .expect("the leader accepts");
            proposed += 1;
        }
        cluster.settle();
    }
    started.elapsed()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test");
    let total = if quick { 2_000 } else { 2_000_000 };
    println!(
        "{:>10} {:>14} {:>16}",
        "proposers", "committed", "proposals/s"
    );
    for proposers in [1u64, 256] {
        let count = if proposers == 1 { total / 10 } else { total };
        let elapsed = run(proposers, count);
        let rate = count as f64 / elapsed.as_secs_f64();
        println!("{proposers:>10} {count:>14} {rate:>16.0}");
    }
}
