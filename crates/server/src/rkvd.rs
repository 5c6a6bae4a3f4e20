//! rkvd's start-up: from its flags to a serving node. Flags as relab's rkvd (`rkvd -id 1
//! -servers :9201,:9202,:9203 -cluster 1,2,3`), the rkvpb and rkv.v1 gRPC APIs on the
//! client address, Raft peers on the client port plus `-peer-port-offset`, Prometheus
//! metrics on `:590<id>/metrics`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use rkv_engine::EngineConfig;
use rkv_raft::{Membership, NodeId};
use tokio::net::TcpListener;

use crate::flags::{Flags, Sync, resolve};
use crate::identity::{self, Identity};
use crate::node::{self, NodeSpec};
use crate::{forward, metrics_http, rkvpb_service, routes, v1_service};

/// An address to dial: an unspecified host (`:9201`) means this machine.
fn dialable(mut address: SocketAddr) -> SocketAddr {
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    address
}

fn peer_address(server: &str, offset: u16) -> Result<SocketAddr, String> {
    let mut address = resolve(server).map_err(|e| e.to_string())?;
    let port = address
        .port()
        .checked_add(offset)
        .ok_or_else(|| format!("{server}: port + -peer-port-offset {offset} exceeds 65535"))?;
    address.set_port(port);
    Ok(address)
}

/// The largest Raft message rkvd lets the core build: half a peer frame, so that a
/// frame always holds at least one (and batches of smaller ones).
const PEER_MESSAGE_BYTES_MAX: usize = rkv_wire::peer::DEFAULT_MAX_FRAME_BYTES as usize / 2;

fn engine_config(flags: &Flags, data_dir: PathBuf) -> EngineConfig {
    let id = NodeId(flags.id);
    let mut config = EngineConfig::new(id, data_dir);
    // Two ticks per heartbeat: fine enough for the election timeout's jitter.
    let tick = (flags.heartbeat / 2).max(std::time::Duration::from_millis(1));
    config.tick = tick;
    config.raft.heartbeat_ticks = 2;
    config.raft.election_ticks = u32::try_from(flags.election.as_nanos() / tick.as_nanos())
        .unwrap_or(u32::MAX)
        .max(3);
    config.raft.check_quorum = flags.checkquorum;
    config.raft.entries_per_msg = if flags.batch {
        usize::try_from(flags.entriespermsg).unwrap_or(64)
    } else {
        1
    };
    config.raft.catchup_multiplier = usize::try_from(flags.catchupmultiplier).unwrap_or(1024);
    // -maxgrpc bounds client messages; peer messages must also fit a peer frame.
    config.raft.max_msg_bytes = flags.maxgrpc.min(PEER_MESSAGE_BYTES_MAX);
    config.cache_entries = usize::try_from(flags.cache)
        .unwrap_or(usize::MAX)
        .min(1 << 20);
    config.sync = match flags.sync {
        Sync::Always => rkv_log::SyncPolicy::Always,
        Sync::None => rkv_log::SyncPolicy::None,
    };
    if flags.cluster.contains(&flags.id) {
        config.bootstrap = Some(Membership::with_voters(
            flags.cluster.iter().copied().map(NodeId),
        ));
    }
    config
}

/// Runs rkvd with `flags` until interrupted (Ctrl-C), then lets the node task finish.
/// Flags that do not fit together (an `-id` that is no position in `-servers`, ...) are
/// an error, whether or not the caller validated them.
pub async fn run(flags: Flags) -> Result<(), String> {
    flags.validate().map_err(|e| e.to_string())?;
    let id = NodeId(flags.id);
    let data_dir = flags
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("rkvd-data/{}", flags.id)));
    if flags.wipe {
        identity::wipe(&data_dir).map_err(|e| e.to_string())?;
        tracing::warn!(dir = %data_dir.display(), "-wipe: deleted the data directory");
    }
    let cluster_id = identity::cluster_id(&flags.servers, &flags.cluster);
    identity::check_or_create(
        &data_dir,
        &Identity {
            cluster_id,
            node_id: flags.id,
        },
    )
    .map_err(|e| e.to_string())?;
    if flags.unsafe_local_reads {
        tracing::warn!("-unsafe-local-reads: reads may be stale (test switch)");
        eprintln!(
            "rkvd: WARNING: -unsafe-local-reads: every read is served locally and may be stale (tests only)"
        );
    }
    if flags.sync == Sync::None {
        tracing::warn!(
            "-sync none: the log is NEVER fsync'd; acknowledged writes can be lost on a crash"
        );
        eprintln!(
            "rkvd: WARNING: -sync none: acknowledged writes can be lost on a crash (benchmarks only)"
        );
    }

    let mut peers = BTreeMap::new();
    for (position, server) in flags.servers.iter().enumerate() {
        let peer = NodeId(position as u64 + 1);
        peers.insert(
            peer,
            dialable(peer_address(server, flags.peer_port_offset)?),
        );
    }
    let own_server = usize::try_from(flags.id)
        .ok()
        .and_then(|id| flags.servers.get(id.checked_sub(1)?))
        .ok_or_else(|| format!("-id {} is not a position in -servers", flags.id))?;
    let client_address = resolve(own_server).map_err(|e| e.to_string())?;
    let peer_listen = peer_address(own_server, flags.peer_port_offset)?;

    let config = engine_config(&flags, data_dir.clone());
    // A node given its own address dials from it (peers, forwarded calls): peers and
    // packet filters see it.
    let source_address = (!client_address.ip().is_unspecified()).then(|| client_address.ip());
    let started = node::start(NodeSpec {
        config,
        cluster_id,
        peers,
        peer_listen,
        source_address,
        servers: flags.servers.clone(),
        unsafe_local_reads: flags.unsafe_local_reads,
        address_book: false,
        observer: None,
    })
    .await
    .map_err(|e| e.to_string())?;
    let (node, transport) = (started.node, started.transport);
    let engine = node.engine.clone();

    if flags.servermetrics {
        let address = flags
            .metrics_addr
            .clone()
            .unwrap_or_else(|| format!(":590{}", flags.id));
        let address = resolve(&address).map_err(|e| e.to_string())?;
        metrics_http::start(address, engine.clone(), transport.stats()).await?;
    }

    let listener = TcpListener::bind(client_address)
        .await
        .map_err(|e| format!("binding the client address {client_address}: {e}"))?;
    tracing::info!(
        %id, client = %client_address, peers = %peer_listen, dir = %data_dir.display(),
        cluster = format!("{cluster_id:016x}"), "rkvd serving"
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("interrupted: shutting down");
    };
    let router = routes::router(
        rkvpb_service::RkvService::new(node.clone()),
        forward::ForwardingKv::new(v1_service::KvService::new(node))
            .with_source_address(source_address),
        flags.maxgrpc,
    );
    let config = rkv_grpc::ServerConfig {
        // Room for two requests of the largest size -maxgrpc allows, arriving at once.
        buffered_request_bytes_max: rkv_grpc::ServerConfig::default()
            .buffered_request_bytes_max
            .max(flags.maxgrpc.saturating_mul(2)),
        ..rkv_grpc::ServerConfig::default()
    };
    rkv_grpc::serve(listener, std::sync::Arc::new(router), config, shutdown).await;
    // Let the node task finish (answer what is pending, close the log) before exiting.
    let observed = engine.watch();
    drop(engine);
    node::wait_stopped(observed, std::time::Duration::from_secs(5)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `run` indexed `-servers` with `-id` and relied on its caller to have
    /// validated the flags; called directly with a bad `-id` it panicked.
    #[tokio::test]
    async fn run_refuses_an_id_outside_the_servers_without_panicking() {
        let dir = tempfile::tempdir().expect("temp dir");
        let args = [
            "rkvd",
            "-id",
            "5",
            "-servers",
            ":1,:2,:3",
            "-cluster",
            "1,2,3",
            "-data-dir",
            dir.path().to_str().expect("utf-8"),
        ];
        let flags = Flags::parse_go_style(args.iter().map(|a| a.to_string())).expect("parses");
        let refused = run(flags).await.expect_err("refused");
        assert!(refused.contains("-id 5"), "{refused}");
    }
}
