//! One replica of a demo cluster: rkv's node (from `rkv_server::node`) plus what every
//! seed system here shares: a name instead of a number, a data directory that binds the
//! node to its cluster, joining a running cluster through any member over HTTP,
//! bootstrapping a one-node cluster otherwise, and writes that a follower forwards to
//! the leader.
//!
//! # Names, ids, directories
//! Users name servers (`node0`, `localhost:4001`); the Raft id is
//! [`node_id_for`]`(name)`. The data directory holds the node's log, its identity
//! (cluster id and node id, `rkv_server::identity`), its address book (`peers`) and its
//! name (`name`), and its incarnation (`incarnation`: a random number drawn when the
//! directory is first used, sent with every join; the cluster refuses a member's name
//! to another incarnation until the old member is removed with `POST /remove`). A
//! directory that already has an identity is resumed as it is: a join address given
//! again is ignored (with a message), as hraftd does.
//!
//! # Joining
//! A new server POSTs `{"id": NAME, "addr": PEER_ADDR, "client_addr": ADDR, "role":
//! "voter"|"learner"}` to `/join` on any member ([`routes`]). A member that does not lead
//! forwards the request once to the leader's client address; the leader runs
//! `rkv_server::membership` (record the address, add a learner) and answers with the
//! cluster id and the address book. The new server then starts its node with them. The
//! leader's steward promotes it once caught up if its role is `voter`. A resumed node
//! whose addresses changed sends its join again (same incarnation), which records them.
//!
//! # Forwarded writes
//! A follower proposes nothing: it sends the encoded command to the leader's
//! `/internal/propose`, which proposes it there (and never forwards again, so two nodes
//! that disagree about the leader cannot bounce a write between them). Only writes are
//! accepted there (address-book and session commands are the leader's own business),
//! and only with the cluster's id and the leader's own id in [`CLUSTER_HEADER`] and
//! [`TARGET_HEADER`]; members send both on every call to another member, joins
//! included.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use hyper::Method;
use rkv_engine::{EngineConfig, EngineError, ReadLevel};
use rkv_kv::{Command, Output, PeerRecord, PeerRole, WriteOp};
use rkv_raft::{Membership, NodeId};
use rkv_server::identity::{self, Identity};
use rkv_server::machine::ApplyObserver;
use rkv_server::membership::{JoinError, Joined, node_id_for, spawn_steward};
use rkv_server::node::{self, NodeSpec, Started};
use rkv_server::peers::dialable;
use rkv_server::service::{Node, PROPOSAL_TIMEOUT, now_ms};
use serde::{Deserialize, Serialize};

use crate::http_client::{HttpClient, host_port};

/// The file in the data directory holding the node's name.
pub const NAME_FILE: &str = "name";
/// The file in the data directory holding the node's incarnation (hex), drawn when the
/// directory is first used: a wiped directory gets another, so the cluster can tell it
/// from the member it replaces (see `rkv_server::membership`).
pub const INCARNATION_FILE: &str = "incarnation";
/// Header marking a request a member already forwarded (it is never forwarded again).
pub const FORWARDED_HEADER: &str = "x-rkv-forwarded";
/// Header with the sender's cluster id (16 hex digits) on calls between members: a node
/// of another cluster is refused. Required on `/internal/propose`, checked on `/join`
/// when present (a new server does not know the cluster id yet).
pub const CLUSTER_HEADER: &str = "x-rkv-cluster-id";
/// Header with the Raft id (decimal) of the node a member meant to call: an address
/// that now belongs to another node is refused rather than served by the wrong one.
pub const TARGET_HEADER: &str = "x-rkv-target-node";
/// How long a new server keeps trying to join before giving up.
pub const JOIN_PATIENCE: Duration = Duration::from_secs(60);

/// What a replica is started with.
#[derive(Clone)]
pub struct ReplicaSpec {
    /// The server's name; its Raft id is derived from it.
    pub name: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Where it listens for Raft peers (`host:port` or `:port`).
    pub peer_listen: String,
    /// The HTTP address where it serves `/join` and `/internal/propose` (advertised to
    /// the others for forwarding; empty if it serves none).
    pub client_address: String,
    /// A member's HTTP address to join through; `None` founds a cluster (on first start).
    pub join: Option<String>,
    /// What it is meant to become.
    pub role: PeerRole,
    /// Told every applied command (raft-demo's logger).
    pub observer: Option<ApplyObserver>,
}

/// A running replica.
pub struct Replica {
    /// The server's name.
    pub name: String,
    /// The node every front end serves from.
    pub node: Node,
    /// How it started.
    pub start: StartKind,
    http: HttpClient,
}

/// How a replica came up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartKind {
    /// It founded a new one-node cluster.
    Founded,
    /// It joined a running cluster through a member.
    Joined,
    /// Its data directory already belonged to a cluster: it resumed.
    Resumed,
}

/// Why a replica did not start, by who can act.
#[derive(Debug)]
pub enum ReplicaError {
    /// The operator must fix the command line or the directory.
    Config(String),
    /// The cluster refused or did not answer the join (the message says which).
    Join(String),
    /// The node itself did not start (ports, storage).
    Node(String),
}

impl std::fmt::Display for ReplicaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicaError::Config(why) | ReplicaError::Node(why) => f.write_str(why),
            ReplicaError::Join(why) => write!(f, "joining the cluster: {why}"),
        }
    }
}

impl std::error::Error for ReplicaError {}

/// The body of `POST /join` (hraftd's `{"addr", "id"}`, plus ours).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct JoinRequest {
    /// The new server's name.
    pub id: String,
    /// Its Raft peer address.
    pub addr: String,
    /// Its HTTP address, for forwarding (optional).
    #[serde(default)]
    pub client_addr: String,
    /// `voter` (default) or `learner`.
    #[serde(default)]
    pub role: Option<String>,
    /// The joiner's incarnation (0, the default, for a join typed by hand).
    #[serde(default)]
    pub incarnation: u64,
}

/// The body of `POST /remove`: the server's name.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct RemoveRequest {
    /// The server's name.
    pub id: String,
}

/// One server in a join answer.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct PeerJson {
    /// Raft id.
    pub node_id: u64,
    /// Name.
    pub name: String,
    /// Raft peer address.
    pub peer_address: String,
    /// HTTP address.
    pub client_address: String,
    /// `voter` or `learner`.
    pub role: String,
    /// Its incarnation (0: unknown).
    #[serde(default)]
    pub incarnation: u64,
}

/// The answer to a successful `POST /join`.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct JoinAnswer {
    /// The cluster id, in hex.
    pub cluster_id: String,
    /// The leader that added the server.
    pub leader: u64,
    /// The address book.
    pub peers: Vec<PeerJson>,
}

/// A JSON error body: `{"error": ..., "leader": ..., "kind": ...}`.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ErrorBody {
    /// What went wrong and what to do.
    pub error: String,
    /// The leader's HTTP address, when a follower knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// For a failed write or read, what happened, for programs ([`WriteError::kind`]):
    /// `too_large`, `invalid`, `not_leader`, `no_leader` (nothing was applied: retry)
    /// or `unknown` (the write may have been applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// A JSON error response.
pub fn json_error(
    status: StatusCode,
    error: impl Into<String>,
    leader: Option<String>,
) -> Response {
    error_response(
        status,
        ErrorBody {
            error: error.into(),
            leader,
            kind: None,
        },
    )
}

/// The JSON error response for a failed write or read: its status, its message and
/// its [`WriteError::kind`], so that a forwarding member can tell "may have been
/// applied" from "nothing happened".
pub fn write_error_response(error: &WriteError, leader: Option<String>) -> Response {
    error_response(
        error.status(),
        ErrorBody {
            error: error.to_string(),
            leader,
            kind: Some(error.kind().into()),
        },
    )
}

fn error_response(status: StatusCode, body: ErrorBody) -> Response {
    let text = serde_json::to_string(&body).unwrap_or_else(|_| "{}".into());
    (status, [("content-type", "application/json")], text).into_response()
}

fn role_name(role: PeerRole) -> &'static str {
    match role {
        PeerRole::Voter => "voter",
        PeerRole::Learner => "learner",
    }
}

fn parse_role(text: Option<&str>) -> Result<PeerRole, String> {
    match text {
        None | Some("voter") => Ok(PeerRole::Voter),
        Some("learner") => Ok(PeerRole::Learner),
        Some(other) => Err(format!("unknown role {other:?}: use voter or learner")),
    }
}

fn answer_from(joined: &Joined) -> JoinAnswer {
    JoinAnswer {
        cluster_id: format!("{:016x}", joined.cluster_id),
        leader: joined.leader.0,
        peers: joined
            .peers
            .iter()
            .map(|(id, r)| PeerJson {
                node_id: *id,
                name: r.name.clone(),
                peer_address: r.peer_address.clone(),
                client_address: r.client_address.clone(),
                role: role_name(r.role).into(),
                incarnation: r.incarnation,
            })
            .collect(),
    }
}

fn records_from(answer: &JoinAnswer) -> Result<(u64, BTreeMap<u64, PeerRecord>), String> {
    let cluster_id = u64::from_str_radix(&answer.cluster_id, 16)
        .map_err(|_| format!("bad cluster id {:?} in the join answer", answer.cluster_id))?;
    let mut peers = BTreeMap::new();
    for p in &answer.peers {
        peers.insert(
            p.node_id,
            PeerRecord {
                name: p.name.clone(),
                peer_address: p.peer_address.clone(),
                client_address: p.client_address.clone(),
                role: parse_role(Some(&p.role))?,
                incarnation: p.incarnation,
            },
        );
    }
    Ok((cluster_id, peers))
}

/// A cluster id for a new cluster: different for every founding.
fn new_cluster_id(name: &str) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    node_id_for(&format!("{name}/{nanos}/{}", std::process::id())).0
}

/// This directory's incarnation: the one stored, or for a directory that does not
/// belong to a cluster yet a new random one, stored before any join is sent (so a
/// joiner that crashes and retries is the same incarnation). A directory bound before
/// incarnations existed keeps 0, as its record in the cluster has.
fn incarnation_of(dir: &Path, bound: bool) -> Result<u64, ReplicaError> {
    let file = dir.join(INCARNATION_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => u64::from_str_radix(text.trim(), 16)
            .ok()
            .filter(|n| *n != 0)
            .ok_or_else(|| {
                ReplicaError::Config(format!(
                    "{} is not an incarnation (16 hex digits); the directory is damaged",
                    file.display()
                ))
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if bound {
                return Ok(0);
            }
            let incarnation = random_nonzero();
            let temporary = dir.join(format!("{INCARNATION_FILE}.tmp"));
            std::fs::write(&temporary, format!("{incarnation:016x}\n"))
                .and_then(|()| std::fs::rename(&temporary, &file))
                .map_err(|e| ReplicaError::Config(format!("{}: {e}", file.display())))?;
            Ok(incarnation)
        }
        Err(e) => Err(ReplicaError::Config(format!("{}: {e}", file.display()))),
    }
}

/// A random non-zero number (the standard library's randomly keyed hasher, over the
/// clock and the process id).
fn random_nonzero() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.finish().max(1)
}

/// The name stored in `dir`, if the directory holds a node (bound to a cluster).
pub fn stored_name(dir: &Path) -> Option<String> {
    identity::read(dir).ok().flatten()?;
    let name = std::fs::read_to_string(dir.join(NAME_FILE)).ok()?;
    let name = name.trim().to_string();
    (!name.is_empty()).then_some(name)
}

fn engine_config(id: NodeId, dir: &Path) -> EngineConfig {
    let mut config = EngineConfig::new(id, dir.to_path_buf());
    // Heartbeats every 50 ms, elections after 0.5-1 s: the demos' originals used
    // similar timings (hashicorp/raft's defaults are 1 s).
    config.tick = Duration::from_millis(25);
    config.raft.heartbeat_ticks = 2;
    config.raft.election_ticks = 20;
    config
}

async fn post_join(
    http: &HttpClient,
    target: &str,
    request: &JoinRequest,
) -> Result<JoinAnswer, (bool, String)> {
    let body = serde_json::to_vec(request).map_err(|e| (false, e.to_string()))?;
    let (status, answer) = http
        .call(Method::POST, target, "/join", &[], Bytes::from(body))
        .await
        .map_err(|e| (true, e.to_string()))?;
    if status.is_success() {
        return serde_json::from_slice(&answer)
            .map_err(|e| (false, format!("unreadable join answer: {e}")));
    }
    let why = serde_json::from_slice::<ErrorBody>(&answer)
        .map(|b| b.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(&answer).into_owned());
    // 503: no leader yet, or busy with another change; anything else will not change.
    Err((
        status == StatusCode::SERVICE_UNAVAILABLE,
        format!("{status}: {why}"),
    ))
}

impl Replica {
    /// Starts (founds, joins or resumes) a replica; see the module docs.
    pub async fn start(spec: ReplicaSpec) -> Result<Arc<Replica>, ReplicaError> {
        let config = |why: String| ReplicaError::Config(why);
        if spec.name.is_empty() || spec.name.chars().any(char::is_whitespace) {
            return Err(config(format!(
                "the server name {:?} must be non-empty, without spaces",
                spec.name
            )));
        }
        std::fs::create_dir_all(&spec.data_dir)
            .map_err(|e| config(format!("{}: {e}", spec.data_dir.display())))?;
        let id = node_id_for(&spec.name);
        let peer_bind = resolve_listen(&spec.peer_listen)
            .map_err(|e| config(format!("the Raft address: {e}")))?;
        let http = HttpClient::new(PROPOSAL_TIMEOUT + Duration::from_secs(2));
        let stored = identity::read(&spec.data_dir).map_err(|e| config(e.to_string()))?;
        let own = PeerRecord {
            name: spec.name.clone(),
            peer_address: host_port(&spec.peer_listen),
            client_address: host_port(&spec.client_address),
            role: spec.role,
            incarnation: incarnation_of(&spec.data_dir, stored.is_some())?,
        };
        let (cluster_id, peers, bootstrap, start) = match stored {
            Some(stored) => {
                if stored.node_id != id.0 {
                    return Err(config(format!(
                        "{} belongs to another server (not {:?}); use its own directory",
                        spec.data_dir.display(),
                        spec.name
                    )));
                }
                if spec.join.is_some() {
                    // On stderr whatever the log level: the operator asked for a join.
                    eprintln!(
                        "{}: {} already belongs to a cluster: -join is ignored",
                        spec.name,
                        spec.data_dir.display()
                    );
                    tracing::debug!("this node already belongs to a cluster: -join is ignored");
                }
                (stored.cluster_id, BTreeMap::new(), None, StartKind::Resumed)
            }
            None => match &spec.join {
                Some(target) => {
                    // Only a server that can take its peer port may join: a joiner that
                    // could never answer the leader would sit in the membership forever.
                    check_can_listen(peer_bind).await?;
                    let request = JoinRequest {
                        id: spec.name.clone(),
                        addr: own.peer_address.clone(),
                        client_addr: own.client_address.clone(),
                        role: Some(role_name(spec.role).into()),
                        incarnation: own.incarnation,
                    };
                    let answer = join_patiently(&http, target, &request).await?;
                    let (cluster_id, peers) = records_from(&answer).map_err(ReplicaError::Join)?;
                    (cluster_id, peers, None, StartKind::Joined)
                }
                None if spec.role == PeerRole::Learner => {
                    return Err(config(
                        "a learner cannot found a cluster: give it a member to -join".into(),
                    ));
                }
                None => (
                    new_cluster_id(&spec.name),
                    BTreeMap::new(),
                    Some(Membership::with_voters([id])),
                    StartKind::Founded,
                ),
            },
        };
        let bind_identity = || -> Result<(), ReplicaError> {
            identity::check_or_create(
                &spec.data_dir,
                &Identity {
                    cluster_id,
                    node_id: id.0,
                },
            )
            .map_err(|e| config(e.to_string()))?;
            std::fs::write(spec.data_dir.join(NAME_FILE), format!("{}\n", spec.name))
                .map_err(|e| config(format!("{}: {e}", spec.data_dir.display())))
        };
        // A joiner binds its directory only once its address book is on disk: a crash in
        // between leaves a directory that joins again, never a member that cannot reach
        // its peers.
        if start != StartKind::Joined {
            bind_identity()?;
        }
        let mut config = engine_config(id, &spec.data_dir);
        config.bootstrap = bootstrap;
        let addresses = peers
            .iter()
            .filter_map(|(id, r)| Some((NodeId(*id), dialable(&r.peer_address)?)))
            .collect();
        let started: Started = node::start(NodeSpec {
            config,
            cluster_id,
            peers: addresses,
            peer_listen: peer_bind,
            source_address: None,
            servers: Vec::new(),
            unsafe_local_reads: false,
            address_book: true,
            observer: spec.observer,
        })
        .await
        .map_err(|e| ReplicaError::Node(e.to_string()))?;
        if let Some(book) = &started.node.book {
            for (id, record) in &peers {
                book.learn(*id, Some(record));
            }
        }
        if start == StartKind::Joined {
            bind_identity()?;
        }
        if start == StartKind::Resumed {
            tokio::spawn(readvertise(started.node.clone(), own.clone(), http.clone()));
        }
        spawn_steward(started.node.clone(), Some(own));
        Ok(Arc::new(Replica {
            name: spec.name,
            node: started.node,
            start,
            http,
        }))
    }

    /// The HTTP address of the leader, if this node knows one and it registered one.
    pub fn leader_address(&self) -> Option<String> {
        let leader = self.node.engine.observed().leader?;
        self.node.address_of(leader)
    }

    /// Applies a write on the leader: here if this node leads, else forwarded once.
    pub async fn write(&self, op: WriteOp) -> Result<WriteDone, WriteError> {
        let command = Command::Write {
            now_ms: now_ms(),
            session: None,
            op,
        };
        command
            .validate()
            .map_err(|e| WriteError::TooLarge(e.to_string()))?;
        let bytes = Bytes::from(command.encode());
        match propose_here(&self.node, bytes.clone()).await {
            Err(WriteError::NotLeader { .. }) => self.forward(bytes).await,
            other => other,
        }
    }

    async fn forward(&self, command: Bytes) -> Result<WriteDone, WriteError> {
        let leader_id = self.node.engine.observed().leader;
        let Some((leader_id, leader)) =
            leader_id.and_then(|id| Some((id, self.node.address_of(id)?)))
        else {
            return Err(WriteError::NoLeader(
                "no leader is known (an election may be under way); retry".into(),
            ));
        };
        let (cluster, target) = member_headers(self.node.cluster_id, leader_id);
        let answer = self
            .http
            .call(
                Method::POST,
                &leader,
                "/internal/propose",
                &[(CLUSTER_HEADER, &cluster), (TARGET_HEADER, &target)],
                command,
            )
            .await;
        let (status, body) = answer.map_err(|e| {
            WriteError::Unknown(format!("forwarding to the leader at {leader} failed: {e}"))
        })?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| {
                WriteError::Unknown(format!("unreadable answer from the leader: {e}"))
            });
        }
        Err(error_from_leader(&leader, status, &body))
    }

    /// Reads `key` at `level` (a follower confirms a linearizable read with the leader).
    pub async fn get(&self, key: Bytes, level: ReadLevel) -> Result<Option<Bytes>, WriteError> {
        let read = self
            .node
            .engine
            .read(level, move |m| m.kv.get(&key).cloned());
        match tokio::time::timeout(PROPOSAL_TIMEOUT, read).await {
            Err(_) => Err(WriteError::NoLeader(format!(
                "the read was not confirmed within {PROPOSAL_TIMEOUT:?}; retry"
            ))),
            Ok(Err(e)) => Err(WriteError::from_engine(e)),
            Ok(Ok(value)) => Ok(value),
        }
    }
}

/// How often a resumed node checks that the cluster has its current addresses.
const READVERTISE_PERIOD: Duration = Duration::from_millis(500);

/// Makes sure the cluster reaches a resumed node at its current addresses: while the
/// book's record of this node differs from `own` (it restarted with another `-raft` or
/// HTTP address), it sends its join again, as the same incarnation, to the leader or any
/// member (they forward it), which records the new addresses. A leader updates its own
/// record itself (the steward). Gives up after [`JOIN_PATIENCE`], or when the book does
/// not know this node at all.
async fn readvertise(node: Node, own: PeerRecord, http: HttpClient) {
    let Some(book) = node.book.clone() else {
        return;
    };
    let id = node.engine.id();
    let request = JoinRequest {
        id: own.name.clone(),
        addr: own.peer_address.clone(),
        client_addr: own.client_address.clone(),
        role: Some(role_name(own.role).into()),
        incarnation: own.incarnation,
    };
    let deadline = Instant::now() + JOIN_PATIENCE;
    let mut every = tokio::time::interval(READVERTISE_PERIOD);
    while Instant::now() < deadline {
        every.tick().await;
        let observed = node.engine.observed();
        if observed.stopped.is_some() {
            return;
        }
        let records = book.all();
        match records.get(&id.0) {
            None => return,
            Some(recorded) if *recorded == own => return,
            Some(_) if observed.leader == Some(id) => continue,
            Some(_) => {}
        }
        let leader = observed.leader.and_then(|l| Some((l, node.address_of(l)?)));
        let members = records
            .iter()
            .filter(|(other, r)| **other != id.0 && !r.client_address.is_empty())
            .map(|(other, r)| (NodeId(*other), r.client_address.clone()));
        let body = match serde_json::to_vec(&request) {
            Ok(body) => Bytes::from(body),
            Err(_) => return,
        };
        for (target, address) in leader.into_iter().chain(members) {
            let (cluster, target) = member_headers(node.cluster_id, target);
            let answer = http
                .call(
                    Method::POST,
                    &address,
                    "/join",
                    &[(CLUSTER_HEADER, &cluster), (TARGET_HEADER, &target)],
                    body.clone(),
                )
                .await;
            match answer {
                Ok((status, _)) if status.is_success() => {
                    tracing::info!(%address, "the cluster has this node's new addresses");
                    break;
                }
                Ok((status, answer)) => tracing::debug!(
                    %address, %status, answer = %String::from_utf8_lossy(&answer),
                    "re-advertising this node's addresses: not yet"
                ),
                Err(e) => tracing::debug!(%address, error = %e, "re-advertising: no answer"),
            }
        }
    }
    tracing::warn!("the cluster still has old addresses for this node");
}

/// The values of [`CLUSTER_HEADER`] and [`TARGET_HEADER`] for a call to `target`.
fn member_headers(cluster_id: u64, target: NodeId) -> (String, String) {
    (format!("{cluster_id:016x}"), target.0.to_string())
}

/// Checks a call from another member: a [`CLUSTER_HEADER`] naming another cluster, or a
/// [`TARGET_HEADER`] naming another node, is refused (409), and so is a call without
/// the cluster header when `required`.
fn check_member_call(
    node: &Node,
    headers: &HeaderMap,
    required: bool,
) -> Result<(), Box<Response>> {
    let text = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("(not text)"))
    };
    let refuse = |why: String| Err(Box::new(json_error(StatusCode::CONFLICT, why, None)));
    match text(CLUSTER_HEADER) {
        None if required => {
            return Err(Box::new(json_error(
                StatusCode::BAD_REQUEST,
                format!("a call between members must carry the {CLUSTER_HEADER} header"),
                None,
            )));
        }
        None => {}
        Some(cluster) if u64::from_str_radix(cluster, 16).ok() == Some(node.cluster_id) => {}
        Some(cluster) => {
            return refuse(format!(
                "this node belongs to cluster {:016x}, not {cluster}: the caller is a node \
                 of another cluster, or has an old address of ours",
                node.cluster_id
            ));
        }
    }
    match text(TARGET_HEADER) {
        Some(target) if target.parse::<u64>().ok() != Some(node.engine.id().0) => refuse(format!(
            "this is node {}, not node {target}: the caller's address book is out of date",
            node.engine.id()
        )),
        _ => Ok(()),
    }
}

async fn join_patiently(
    http: &HttpClient,
    target: &str,
    request: &JoinRequest,
) -> Result<JoinAnswer, ReplicaError> {
    let deadline = Instant::now() + JOIN_PATIENCE;
    let mut backoff = Duration::from_millis(50);
    loop {
        match post_join(http, target, request).await {
            Ok(answer) => return Ok(answer),
            Err((retry, why)) if retry && Instant::now() < deadline => {
                tracing::info!(%target, %why, "join not done yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err((_, why)) => return Err(ReplicaError::Join(format!("{target}: {why}"))),
        }
    }
}

/// The error a leader's failed answer to a forwarded write stands for: its body's
/// `kind` if it has one (an "outcome unknown" stays unknown), else by status, where a
/// 503 without a kind is unknown too (it cannot be told from one that is).
fn error_from_leader(leader: &str, status: StatusCode, body: &[u8]) -> WriteError {
    let (why, kind) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(body) => (body.error, body.kind),
        Err(_) => (String::from_utf8_lossy(body).into_owned(), None),
    };
    let why = format!("the leader at {leader} answered {status}: {why}");
    match (kind.as_deref(), status) {
        (Some(KIND_TOO_LARGE), _) | (None, StatusCode::PAYLOAD_TOO_LARGE) => {
            WriteError::TooLarge(why)
        }
        (Some(KIND_INVALID), _) | (None, StatusCode::BAD_REQUEST) => WriteError::Invalid(why),
        (Some(KIND_NOT_LEADER | KIND_NO_LEADER), _) | (None, StatusCode::CONFLICT) => {
            WriteError::NoLeader(why)
        }
        _ => WriteError::Unknown(why),
    }
}

const KIND_TOO_LARGE: &str = "too_large";
const KIND_INVALID: &str = "invalid";
const KIND_NOT_LEADER: &str = "not_leader";
const KIND_NO_LEADER: &str = "no_leader";
const KIND_UNKNOWN: &str = "unknown";

/// What a write did.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct WriteDone {
    /// For a delete: whether the key existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existed: Option<bool>,
}

/// Why a write or read failed, by who can act.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The client must send something smaller.
    TooLarge(String),
    /// The client must fix the request.
    Invalid(String),
    /// This node does not lead (only seen inside a node: writes are forwarded).
    NotLeader {
        /// The leader, if known.
        leader: Option<NodeId>,
    },
    /// No leader can be reached now: retry later.
    NoLeader(String),
    /// It may or may not have been applied.
    Unknown(String),
}

impl WriteError {
    fn from_engine(e: EngineError) -> WriteError {
        match e {
            EngineError::NotLeader { leader_hint } => WriteError::NotLeader {
                leader: leader_hint,
            },
            EngineError::Invalid(why) => WriteError::Invalid(why),
            EngineError::OutcomeUnknown(why) => WriteError::Unknown(why),
            EngineError::Dropped => {
                WriteError::NoLeader("leadership changed before the write committed; retry".into())
            }
            other => WriteError::NoLeader(other.to_string()),
        }
    }

    /// What happened, for programs: `too_large`, `invalid`, `not_leader`, `no_leader`
    /// (in these four nothing was applied) or `unknown` (it may have been applied).
    pub fn kind(&self) -> &'static str {
        match self {
            WriteError::TooLarge(_) => KIND_TOO_LARGE,
            WriteError::Invalid(_) => KIND_INVALID,
            WriteError::NotLeader { .. } => KIND_NOT_LEADER,
            WriteError::NoLeader(_) => KIND_NO_LEADER,
            WriteError::Unknown(_) => KIND_UNKNOWN,
        }
    }

    /// The HTTP status that fits.
    pub fn status(&self) -> StatusCode {
        match self {
            WriteError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            WriteError::Invalid(_) => StatusCode::BAD_REQUEST,
            WriteError::NotLeader { .. } | WriteError::NoLeader(_) | WriteError::Unknown(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::TooLarge(why) => write!(f, "too large: {why}"),
            WriteError::Invalid(why) => write!(f, "invalid: {why}"),
            WriteError::NotLeader { .. } => write!(f, "not the leader"),
            WriteError::NoLeader(why) => write!(f, "unavailable: {why}"),
            WriteError::Unknown(why) => {
                write!(f, "outcome unknown, the write may have been applied: {why}")
            }
        }
    }
}

impl std::error::Error for WriteError {}

/// Proposes an encoded command on this node and waits for it to apply.
async fn propose_here(node: &Node, command: Bytes) -> Result<WriteDone, WriteError> {
    let proposed = node.engine.propose(command);
    let applied = match tokio::time::timeout(PROPOSAL_TIMEOUT, proposed).await {
        Err(_) => {
            return Err(WriteError::Unknown(format!(
                "not applied within {PROPOSAL_TIMEOUT:?}; it may still apply"
            )));
        }
        Ok(result) => result.map_err(WriteError::from_engine)?,
    };
    match applied.first().map(|a| &a.output) {
        Some(Output::Deleted { existed }) => Ok(WriteDone {
            existed: Some(*existed),
        }),
        Some(Output::Limit(e)) => Err(WriteError::TooLarge(e.to_string())),
        Some(Output::Rejected(e)) => Err(WriteError::Invalid(e.to_string())),
        Some(other) if other.is_error() => Err(WriteError::Invalid(format!("{other:?}"))),
        _ => Ok(WriteDone::default()),
    }
}

/// `/join`, `/status` and `/internal/propose`, for every front end's HTTP server.
pub fn routes() -> Router<Arc<Replica>> {
    Router::new()
        .route("/join", post(join_handler))
        .route("/remove", post(remove_handler))
        .route("/status", axum::routing::get(status_handler))
        .route("/internal/propose", post(propose_handler))
}

/// `GET /status`: this node's view of the cluster.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct StatusBody {
    /// This server's name.
    pub name: String,
    /// `leader`, `follower`, `candidate` or `precandidate`.
    pub role: String,
    /// The leader's name, if known.
    pub leader: Option<String>,
    /// The current term.
    pub term: u64,
    /// The commit index.
    pub commit: u64,
    /// The applied index.
    pub applied: u64,
    /// Names of the voters.
    pub voters: Vec<String>,
    /// Names of the learners.
    pub learners: Vec<String>,
}

async fn status_handler(State(replica): State<Arc<Replica>>) -> Response {
    let status = match replica.node.engine.status().await {
        Ok(status) => status,
        Err(e) => return json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None),
    };
    let book = replica
        .node
        .book
        .as_ref()
        .map(|b| b.all())
        .unwrap_or_default();
    let name = |id: NodeId| {
        book.get(&id.0)
            .map_or_else(|| format!("id {id}"), |r| r.name.clone())
    };
    let body = StatusBody {
        name: replica.name.clone(),
        role: format!("{:?}", status.role).to_lowercase(),
        leader: status.leader.map(name),
        term: status.term.0,
        commit: status.commit.0,
        applied: status.applied.0,
        voters: status.membership.voters.iter().copied().map(name).collect(),
        learners: status
            .membership
            .learners
            .iter()
            .copied()
            .map(name)
            .collect(),
    };
    let text = serde_json::to_string(&body).unwrap_or_default();
    (StatusCode::OK, [("content-type", "application/json")], text).into_response()
}

fn join_status(error: &JoinError) -> StatusCode {
    match error {
        JoinError::Invalid(_) => StatusCode::BAD_REQUEST,
        JoinError::NameTaken { .. } | JoinError::AnotherIncarnation { .. } => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn join_handler(
    State(replica): State<Arc<Replica>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = check_member_call(&replica.node, &headers, false) {
        return *refused;
    }
    let request: JoinRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("the body must be {{\"addr\": \"host:port\", \"id\": \"name\"}}: {e}"),
                None,
            );
        }
    };
    let role = match parse_role(request.role.as_deref()) {
        Ok(role) => role,
        Err(why) => return json_error(StatusCode::BAD_REQUEST, why, None),
    };
    let record = PeerRecord {
        name: request.id.clone(),
        peer_address: host_port(&request.addr),
        client_address: host_port(&request.client_addr),
        role,
        incarnation: request.incarnation,
    };
    match replica.node.join(node_id_for(&request.id), record).await {
        Ok(joined) => {
            let text = serde_json::to_string(&answer_from(&joined)).unwrap_or_default();
            (StatusCode::OK, [("content-type", "application/json")], text).into_response()
        }
        Err(JoinError::NotLeader {
            leader: Some(leader_id),
            leader_address: Some(leader),
        }) if !headers.contains_key(FORWARDED_HEADER) && !leader.is_empty() => {
            let (cluster, target) = member_headers(replica.node.cluster_id, leader_id);
            let forwarded = replica
                .http
                .call(
                    Method::POST,
                    &leader,
                    "/join",
                    &[
                        (FORWARDED_HEADER, "1"),
                        (CLUSTER_HEADER, &cluster),
                        (TARGET_HEADER, &target),
                    ],
                    body,
                )
                .await;
            match forwarded {
                Ok((status, body)) => {
                    (status, [("content-type", "application/json")], body).into_response()
                }
                Err(e) => json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("forwarding the join to the leader at {leader} failed: {e}; retry"),
                    Some(leader),
                ),
            }
        }
        Err(e) => {
            let leader = match &e {
                JoinError::NotLeader { leader_address, .. } => leader_address.clone(),
                _ => None,
            };
            json_error(join_status(&e), e.to_string(), leader)
        }
    }
}

/// `POST /remove` with `{"id": NAME}`: removes a server from the cluster and forgets its
/// address (so that a wiped server can join again under its name). Leader only: a
/// follower answers 503 with the leader's address in `leader`.
async fn remove_handler(State(replica): State<Arc<Replica>>, body: Bytes) -> Response {
    let request: RemoveRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("the body must be {{\"id\": \"name\"}}: {e}"),
                None,
            );
        }
    };
    match replica.node.remove_server(node_id_for(&request.id)).await {
        Ok(()) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            "{}".to_string(),
        )
            .into_response(),
        Err(e) => {
            let leader = match &e {
                JoinError::NotLeader { leader_address, .. } => leader_address.clone(),
                _ => None,
            };
            json_error(join_status(&e), e.to_string(), leader)
        }
    }
}

async fn propose_handler(
    State(replica): State<Arc<Replica>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = check_member_call(&replica.node, &headers, true) {
        return *refused;
    }
    match Command::decode(&body) {
        Err(e) => {
            return json_error(StatusCode::BAD_REQUEST, format!("not a command: {e}"), None);
        }
        Ok(Command::Write { .. }) => {}
        Ok(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "only writes are forwarded: address-book and session commands are refused",
                None,
            );
        }
    }
    match propose_here(&replica.node, body).await {
        Ok(done) => {
            let text = serde_json::to_string(&done).unwrap_or_default();
            (StatusCode::OK, [("content-type", "application/json")], text).into_response()
        }
        Err(e) => write_error_response(&e, replica.leader_address()),
    }
}

/// Binds `address` and lets it go again: proof that the node's peer listener can take
/// it a moment later (listeners reuse the address, so the second bind succeeds).
async fn check_can_listen(address: SocketAddr) -> Result<(), ReplicaError> {
    match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => {
            drop(listener);
            Ok(())
        }
        Err(e) => Err(ReplicaError::Node(format!(
            "the Raft address {address} cannot be used ({e}): nothing was joined; free it or pick another"
        ))),
    }
}

/// Resolves a listen address, Go style (`:11000` means every interface), preferring
/// IPv4 (`localhost` may resolve to ::1 first, while `:port` peers dial 127.0.0.1).
pub fn resolve_listen(address: &str) -> Result<SocketAddr, ReplicaError> {
    use std::net::ToSocketAddrs;
    let full = if address.starts_with(':') {
        format!("0.0.0.0{address}")
    } else {
        address.to_string()
    };
    let all: Vec<SocketAddr> = full
        .to_socket_addrs()
        .map_err(|e| ReplicaError::Config(format!("cannot resolve {address:?}: {e}")))?
        .collect();
    all.iter()
        .find(|a| a.is_ipv4())
        .or_else(|| all.first())
        .copied()
        .ok_or_else(|| ReplicaError::Config(format!("{address:?} resolves to nothing")))
}

/// Binds an HTTP listener on `address` (see [`resolve_listen`]).
pub async fn bind(address: &str) -> Result<tokio::net::TcpListener, ReplicaError> {
    let resolved = resolve_listen(address)?;
    tokio::net::TcpListener::bind(resolved)
        .await
        .map_err(|e| ReplicaError::Node(format!("binding {address}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a joiner whose peer port is taken used to join first and fail to
    /// start afterwards, leaving a member nobody can reach.
    #[tokio::test]
    async fn a_taken_peer_port_is_found_before_joining() {
        let held = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let taken = held.local_addr().expect("address");
        let refused = check_can_listen(taken).await;
        assert!(
            matches!(&refused, Err(ReplicaError::Node(why)) if why.contains("nothing was joined")),
            "{refused:?}"
        );
        drop(held);
        check_can_listen(taken).await.expect("a free port passes");
    }

    /// A directory draws its incarnation once, before any join, and keeps it; a wiped
    /// directory draws another; a directory bound before incarnations existed keeps 0.
    #[test]
    fn a_directory_keeps_its_incarnation_and_a_wiped_one_gets_another() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = incarnation_of(dir.path(), false).expect("drawn");
        assert_ne!(first, 0);
        assert_eq!(incarnation_of(dir.path(), true).expect("kept"), first);
        std::fs::remove_file(dir.path().join(INCARNATION_FILE)).expect("wipe");
        let second = incarnation_of(dir.path(), false).expect("drawn again");
        assert_ne!(second, first);
        let legacy = tempfile::tempdir().expect("temp dir");
        assert_eq!(incarnation_of(legacy.path(), true).expect("legacy"), 0);
        std::fs::write(legacy.path().join(INCARNATION_FILE), "zz").expect("write");
        assert!(matches!(
            incarnation_of(legacy.path(), true),
            Err(ReplicaError::Config(_))
        ));
    }

    /// Regression: a leader's "outcome unknown" reached the client of a forwarding
    /// follower as "no leader, retry", as if nothing had happened. Every kind maps back
    /// to itself.
    #[tokio::test]
    async fn a_leaders_answer_keeps_its_kind_through_a_forwarding_member() {
        for error in [
            WriteError::TooLarge("big".into()),
            WriteError::Invalid("bad".into()),
            WriteError::NoLeader("election".into()),
            WriteError::Unknown("timed out".into()),
        ] {
            let response = write_error_response(&error, None);
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .expect("body");
            let back = error_from_leader("127.0.0.1:1", status, &body);
            assert_eq!(back.kind(), error.kind(), "{error:?} came back as {back:?}");
        }
        let unknown = error_from_leader(
            "x",
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"error":"outcome unknown"}"#,
        );
        assert!(matches!(unknown, WriteError::Unknown(_)), "{unknown:?}");
        assert!(unknown.to_string().contains("may have been applied"));
    }
}
