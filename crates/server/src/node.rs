//! Starting one node: the engine with rkv's state machine, the TCP peer transport and
//! its listener, and the [`Node`] handle every front end serves from.
//!
//! rkvd and the other seed systems' front ends (raftd, hraftd, raft-demo, in `rkv-demo`)
//! start their nodes here, so there is one server, with thin front ends around it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use rkv_engine::{Engine, EngineConfig, StartError, TcpTransport};
use rkv_raft::NodeId;
use tokio::net::TcpListener;

use crate::machine::{self, History, KvMachine, Waiters};
use crate::peers::PeerBook;
use crate::service::Node;

/// Everything needed to start a node.
#[derive(Clone)]
pub struct NodeSpec {
    /// The engine's settings (node id, data directory, timing, bootstrap membership).
    pub config: EngineConfig,
    /// The cluster this node belongs to (peers of another cluster are refused).
    pub cluster_id: u64,
    /// Peer addresses known up front (rkvd's `-servers`); may be empty.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Where this node accepts its peers' connections.
    pub peer_listen: SocketAddr,
    /// Dial peers from this address (a node bound to one address of several).
    pub source_address: Option<IpAddr>,
    /// Client addresses by 1-based id (rkvd's `-servers`), for leader hints; may be empty.
    pub servers: Vec<String>,
    /// TEST ONLY: serve every read locally, possibly stale.
    pub unsafe_local_reads: bool,
    /// Keep a replicated address book (servers join by address): applied `SetPeer`
    /// records reach the transport, and a copy is kept in the data directory.
    pub address_book: bool,
    /// Told every applied command, in log order (see [`machine::ApplyObserver`]).
    pub observer: Option<machine::ApplyObserver>,
}

/// Why a node did not start. Each case says what the operator can do.
#[derive(Debug)]
pub enum StartNodeError {
    /// The engine refused to start (unreadable log, bad settings, ...).
    Engine(NodeId, StartError),
    /// The peer address is taken or not ours: pick another.
    BindPeer(SocketAddr, std::io::Error),
}

impl std::fmt::Display for StartNodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartNodeError::Engine(id, e) => write!(f, "starting node {id}: {e}"),
            StartNodeError::BindPeer(address, e) => {
                write!(f, "binding the peer address {address}: {e}")
            }
        }
    }
}

impl std::error::Error for StartNodeError {}

/// A running node.
#[derive(Clone)]
pub struct Started {
    /// What front ends serve from.
    pub node: Node,
    /// Its peer transport (for its counters and addresses).
    pub transport: TcpTransport,
    /// The address its peer listener is bound to.
    pub peer_address: SocketAddr,
}

/// Starts the engine, then the peer listener (so that a node whose data directory is
/// refused never takes its port), on the current multi-threaded tokio runtime.
pub async fn start(spec: NodeSpec) -> Result<Started, StartNodeError> {
    let id = spec.config.raft.id;
    let data_dir: PathBuf = spec.config.data_dir.clone();
    let mut transport = TcpTransport::new(id, spec.cluster_id, spec.peers);
    if let Some(source) = spec.source_address {
        transport = transport.with_source_address(source);
    }
    let waiters = Arc::new(Waiters::default());
    let (events, _) = tokio::sync::broadcast::channel(machine::WATCH_BUFFER_EVENTS);
    let history = Arc::new(std::sync::Mutex::new(History::default()));
    let mut machine = KvMachine::new(waiters.clone(), events.clone(), history.clone());
    let book = spec
        .address_book
        .then(|| Arc::new(PeerBook::open(transport.clone(), Some(&data_dir))));
    if let Some(book) = &book {
        machine = machine.with_peer_book(book.clone());
    }
    if let Some(observer) = spec.observer {
        machine = machine.with_observer(observer);
    }
    let engine = Engine::start(spec.config, machine, transport.clone())
        .map_err(|e| StartNodeError::Engine(id, e))?;
    let listener = TcpListener::bind(spec.peer_listen)
        .await
        .map_err(|e| StartNodeError::BindPeer(spec.peer_listen, e))?;
    let peer_address = listener.local_addr().unwrap_or(spec.peer_listen);
    let (serving, inbox) = (transport.clone(), engine.peer_inbox());
    tokio::spawn(async move { serving.serve(listener, inbox).await });
    let node = Node {
        engine,
        waiters,
        events,
        history,
        servers: Arc::new(spec.servers),
        cluster_id: spec.cluster_id,
        unsafe_local_reads: spec.unsafe_local_reads,
        book,
    };
    Ok(Started {
        node,
        transport,
        peer_address,
    })
}

/// Waits (at most `within`) until the node task has stopped after the last handle to
/// it was dropped: it answers what is pending and closes the log first.
pub async fn wait_stopped(
    mut observed: tokio::sync::watch::Receiver<rkv_engine::Observed>,
    within: std::time::Duration,
) {
    let stopped = tokio::time::timeout(within, async {
        while observed.borrow_and_update().stopped.is_none() {
            if observed.changed().await.is_err() {
                return;
            }
        }
    });
    let _ = stopped.await;
}
