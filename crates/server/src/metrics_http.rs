//! Prometheus metrics over HTTP (`/metrics`), on `:590<id>` by default as the original.
//!
//! Gauges follow the node's observed state (term, role, commit and applied index,
//! leader changes) and the transport's counters; they are refreshed on every change.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusBuilder;
use rkv_engine::{Engine, TransportStats};
use rkv_raft::Role;

use crate::machine::KvMachine;

fn role_number(role: Role) -> f64 {
    match role {
        Role::Follower => 0.0,
        Role::PreCandidate => 1.0,
        Role::Candidate => 2.0,
        Role::Leader => 3.0,
    }
}

/// Installs the metrics recorder and serves `/metrics` on `address`.
pub async fn start(
    address: SocketAddr,
    engine: Engine<KvMachine>,
    transport: Arc<TransportStats>,
) -> Result<(), String> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("installing the metrics recorder: {e}"))?;
    // The recorder leaves its upkeep (draining histograms) to us.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
        format!(
            "binding the metrics address {address}: {e} (use -metrics-addr or -servermetrics=false)"
        )
    })?;
    let render = handle.clone();
    let app = Router::new().route("/metrics", get(move || std::future::ready(render.render())));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut watch = engine.watch();
    tokio::spawn(async move {
        let mut leader = None;
        loop {
            let observed = watch.borrow_and_update().clone();
            metrics::gauge!("rkv_term").set(observed.term.0 as f64);
            metrics::gauge!("rkv_role").set(role_number(observed.role));
            metrics::gauge!("rkv_commit_index").set(observed.commit.0 as f64);
            metrics::gauge!("rkv_applied_index").set(observed.applied.0 as f64);
            if observed.leader != leader {
                leader = observed.leader;
                metrics::counter!("rkv_leader_changes_total").increment(1);
            }
            metrics::gauge!("rkv_peer_messages_dropped")
                .set(transport.dropped.load(Ordering::Relaxed) as f64);
            metrics::gauge!("rkv_peer_connects")
                .set(transport.connects.load(Ordering::Relaxed) as f64);
            if watch.changed().await.is_err() {
                return;
            }
        }
    });
    Ok(())
}
