//! The rkvd processes of one scenario run: started, killed, paused and restarted by
//! their process ids, each with its own data directory and its own loopback address.
//!
//! Every node gets its own address in a random 127.a.b.0/24 block (all of 127.0.0.0/8
//! is this machine's), so packet filters can tell the nodes apart: rkvd dials its peers
//! from its own address. Nodes beyond the initial voters are *spares*: listed in
//! `-servers` (so they can be added later) but not started until a scenario adds them.
//! Dropping a [`Cluster`] kills every process it started, so no run leaves servers
//! behind, also when interrupted.

use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
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
    /// How many times it was started.
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
        Cluster {
            spec,
            nodes,
            servers,
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

    /// Ids of the nodes whose process runs (paused ones included).
    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// Ids of the running nodes that are not paused.
    pub fn live(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some() && !n.paused)
            .map(|n| n.id)
            .collect()
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
        let node = self.node_mut(id)?;
        node.child = Some(child);
        node.paused = false;
        node.starts += 1;
        Ok(())
    }

    /// SIGKILLs node `id` (resuming it first if paused, so it dies at once) and reaps it.
    pub fn kill(&mut self, id: u64) -> Result<(), ScenarioError> {
        let node = self.node_mut(id)?;
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
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

    /// Deletes node `id`'s data directory (it must not run): it can then join afresh.
    pub fn wipe(&mut self, id: u64) -> Result<(), ScenarioError> {
        if self.node(id).is_some_and(|n| n.child.is_some()) {
            return Err(ScenarioError::Cluster(format!(
                "node {id} runs: not wiping its data"
            )));
        }
        remove_dir(&self.data_dir(id))
    }

    /// Whether a process exited on its own (a crash the scenario did not cause).
    pub fn exited_by_itself(&mut self) -> Vec<(u64, String)> {
        let mut exited = Vec::new();
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                exited.push((node.id, status.to_string()));
                node.child = None;
            }
        }
        exited
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
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            node.paused = false;
        }
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

fn remove_dir(path: &Path) -> Result<(), ScenarioError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ScenarioError::Io(format!(
            "removing {}: {e}",
            path.display()
        ))),
    }
}
