//! The rkvd processes of one scenario run: started, killed, paused and restarted by
//! their process ids, each with its own data directory and its own loopback address.
//!
//! Every node gets its own address in a random 127.a.b.0/24 block (all of 127.0.0.0/8
//! is this machine's), so packet filters can tell the nodes apart: rkvd dials its peers
//! from its own address. Nodes beyond the initial voters are *spares*: listed in
//! `-servers` (so they can be added later) but not started until a scenario adds them.
//! The cluster remembers which nodes are members, as the scenario changes them, so that
//! faults aim at members only. A process that exits without being told to is recorded
//! (a crash the run must report), never silently reaped. Dropping a [`Cluster`] kills
//! every process it started, so no run leaves servers behind, also when interrupted.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rkv_client::{Client, ClientConfig};

use crate::ScenarioError;

/// How to start the cluster.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The rkvd binary.
    pub rkvd: PathBuf,
    /// Where data directories and node logs go.
    pub dir: PathBuf,
    /// Initial voters.
    pub voters: usize,
    /// Servers listed but not started: room for membership changes.
    pub spares: usize,
    /// rkvd's `-election`.
    pub election: Duration,
    /// rkvd's `-heartbeat`.
    pub heartbeat: Duration,
    /// The 127.a.b.0/24 block the nodes live in.
    pub block: [u8; 2],
    /// The port every node's client API listens on (peers: +1000).
    pub port: u16,
    /// Extra rkvd flags (e.g. `-unsafe-local-reads`).
    pub extra_args: Vec<String>,
}

/// One server of the cluster.
#[derive(Debug)]
pub struct Node {
    /// Its id (1-based position in `-servers`).
    pub id: u64,
    /// Its own loopback address.
    pub ip: Ipv4Addr,
    /// Its client API address.
    pub address: SocketAddrV4,
    child: Option<Child>,
    paused: bool,
    /// How many times it was started (0: never, so its directory is empty).
    pub starts: u32,
}

impl Node {
    /// The process id, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// The processes of one run.
#[derive(Debug)]
pub struct Cluster {
    spec: ClusterSpec,
    /// Every listed server, voters first, then spares.
    pub nodes: Vec<Node>,
    servers: String,
    members: BTreeSet<u64>,
    pids: Vec<u32>,
    unexpected_exits: Vec<(u64, String)>,
}

impl Cluster {
    /// Lays out the cluster (starts nothing).
    pub fn new(spec: ClusterSpec) -> Cluster {
        let nodes: Vec<Node> = (0..spec.voters + spec.spares)
            .map(|i| {
                let ip = Ipv4Addr::new(127, spec.block[0], spec.block[1], i as u8 + 1);
                Node {
                    id: i as u64 + 1,
                    ip,
                    address: SocketAddrV4::new(ip, spec.port),
                    child: None,
                    paused: false,
                    starts: 0,
                }
            })
            .collect();
        let servers = nodes
            .iter()
            .map(|n| n.address.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let members = (1..=spec.voters as u64).collect();
        Cluster {
            spec,
            nodes,
            servers,
            members,
            pids: Vec::new(),
            unexpected_exits: Vec::new(),
        }
    }

    /// Every server's client address, in id order.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.address.to_string()).collect()
    }

    /// The initial voters' ids.
    pub fn initial_voters(&self) -> Vec<u64> {
        (1..=self.spec.voters as u64).collect()
    }

    /// The node with id `id`.
    pub fn node(&self, id: u64) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    fn node_mut(&mut self, id: u64) -> Result<&mut Node, ScenarioError> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .ok_or_else(|| ScenarioError::Cluster(format!("no node {id}")))
    }

    /// The members, as the scenario last changed them.
    pub fn members(&self) -> Vec<u64> {
        self.members.iter().copied().collect()
    }

    /// Records that `id` joined (`true`) or left the configuration.
    pub fn set_member(&mut self, id: u64, member: bool) {
        if member {
            self.members.insert(id);
        } else {
            self.members.remove(&id);
        }
    }

    /// Ids of the members whose process runs (paused ones included).
    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some() && self.members.contains(&n.id))
            .map(|n| n.id)
            .collect()
    }

    /// Ids of the running members that are not paused.
    pub fn live(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some() && !n.paused && self.members.contains(&n.id))
            .map(|n| n.id)
            .collect()
    }

    /// Every process id this run started.
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// Where node `id` keeps its data.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.spec.dir.join("nodes").join(id.to_string())
    }

    fn log_file(&self, id: u64) -> Result<File, ScenarioError> {
        let path = self.spec.dir.join(format!("rkvd-{id}.log"));
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| ScenarioError::Io(format!("opening {}: {e}", path.display())))
    }

    /// Starts node `id` from its data directory (a no-op if it runs).
    pub fn start(&mut self, id: u64) -> Result<(), ScenarioError> {
        self.poll_exits();
        if self.node(id).is_some_and(|n| n.child.is_some()) {
            return Ok(());
        }
        let data_dir = self.data_dir(id);
        let log = self.log_file(id)?;
        let log_err = log
            .try_clone()
            .map_err(|e| ScenarioError::Io(format!("node {id} log: {e}")))?;
        let cluster = self
            .initial_voters()
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut command = Command::new(&self.spec.rkvd);
        command
            .arg("-id")
            .arg(id.to_string())
            .arg("-servers")
            .arg(&self.servers)
            .arg("-cluster")
            .arg(cluster)
            .arg("-data-dir")
            .arg(&data_dir)
            .arg("-election")
            .arg(format!("{}ms", self.spec.election.as_millis()))
            .arg("-heartbeat")
            .arg(format!("{}ms", self.spec.heartbeat.as_millis()))
            .arg("-checkquorum")
            .arg("-servermetrics=false")
            .args(&self.spec.extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = command.spawn().map_err(|e| {
            ScenarioError::Cluster(format!(
                "starting {} for node {id}: {e}",
                self.spec.rkvd.display()
            ))
        })?;
        self.pids.push(child.id());
        let node = self.node_mut(id)?;
        node.child = Some(child);
        node.paused = false;
        node.starts += 1;
        Ok(())
    }

    /// Records (and forgets) every process that exited although nobody killed it.
    pub fn poll_exits(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.unexpected_exits.push((node.id, status.to_string()));
                node.child = None;
                node.paused = false;
            }
        }
    }

    /// The processes that exited without being told to, so far.
    pub fn unexpected_exits(&mut self) -> Vec<(u64, String)> {
        self.poll_exits();
        self.unexpected_exits.clone()
    }

    /// SIGKILLs the nodes `ids` (a stopped process dies too), all before reaping any, so
    /// that they die at the same moment.
    pub fn kill(&mut self, ids: &[u64]) -> Result<(), ScenarioError> {
        self.poll_exits();
        let mut killed = Vec::new();
        for id in ids {
            let node = self.node_mut(*id)?;
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                killed.push(child);
            }
            node.paused = false;
        }
        for mut child in killed {
            let _ = child.wait();
        }
        Ok(())
    }

    /// SIGSTOPs node `id`.
    pub fn pause(&mut self, id: u64) -> Result<(), ScenarioError> {
        let node = self.node_mut(id)?;
        if let Some(pid) = node.pid() {
            signal(pid, Signal::SIGSTOP)?;
            node.paused = true;
        }
        Ok(())
    }

    /// SIGCONTs node `id` if paused.
    pub fn resume(&mut self, id: u64) -> Result<(), ScenarioError> {
        let node = self.node_mut(id)?;
        if let (Some(pid), true) = (node.pid(), node.paused) {
            signal(pid, Signal::SIGCONT)?;
            node.paused = false;
        }
        Ok(())
    }

    /// Resumes every paused node.
    pub fn resume_all(&mut self) -> Result<(), ScenarioError> {
        for id in self.running() {
            self.resume(id)?;
        }
        Ok(())
    }

    /// A client of all listed servers, the ones in `first` tried first.
    pub fn client(&self, first: &[u64], config: ClientConfig) -> Result<Client, ScenarioError> {
        let mut order: Vec<String> = first
            .iter()
            .filter_map(|id| self.node(*id))
            .map(|n| n.address.to_string())
            .collect();
        order.extend(self.addresses());
        Client::new(order, config).map_err(|e| ScenarioError::Cluster(e.to_string()))
    }

    /// A client that talks to node `id` only.
    pub fn client_of(&self, id: u64, config: ClientConfig) -> Result<Client, ScenarioError> {
        let node = self
            .node(id)
            .ok_or_else(|| ScenarioError::Cluster(format!("no node {id}")))?;
        Client::new([node.address.to_string()], config)
            .map_err(|e| ScenarioError::Cluster(e.to_string()))
    }

    /// Kills every process (the run is over).
    pub fn stop_all(&mut self) {
        let ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        let _ = self.kill(&ids);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn signal(pid: u32, signal: Signal) -> Result<(), ScenarioError> {
    let pid = i32::try_from(pid).map_err(|_| ScenarioError::Cluster(format!("pid {pid}")))?;
    kill(Pid::from_raw(pid), signal)
        .map_err(|e| ScenarioError::Cluster(format!("sending {signal} to {pid}: {e}")))
}
