//! hraftd (raft-demo's webkvstore) on rkv: the HTTP key-value API with the original's
//! command line, with its gaps closed.
//!
//! ```text
//! hraftd -id node0 ~/node0
//! hraftd -id node1 -haddr localhost:11001 -raddr localhost:12001 -join :11000 ~/node1
//! ```
//! - `POST /key` with a JSON object sets every pair atomically, in one log entry.
//! - `GET /key/NAME` answers `{"NAME": "value"}`; linearizable by default, `?level=lease`
//!   or `?level=stale` to trade freshness for speed.
//! - `DELETE /key/NAME`; `POST /join` with `{"addr": "host:port", "id": "node1"}`.
//! - Any node accepts writes (a follower forwards them to the leader). Errors are JSON
//!   `{"error": ...}`: 400 bad request, 404 missing key, 413 too large, 503 no leader.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use clap::Parser;
use rkv_engine::ReadLevel;
use rkv_kv::{PUT_MANY_BYTES_MAX, PUT_MANY_PAIRS_MAX, PeerRole, WriteOp};

use crate::replica::{self, Replica, ReplicaSpec, json_error};

/// Largest `POST /key` body: the largest batch, with room for JSON quoting.
pub const BODY_BYTES_MAX: usize = PUT_MANY_BYTES_MAX + PUT_MANY_BYTES_MAX / 2;

/// hraftd's command line (the original's flags, Go style).
#[derive(Clone, Debug, Parser)]
#[command(name = "hraftd", about = "HTTP key-value store on Raft (rkv's hraftd)")]
pub struct Flags {
    /// Node id (its name in the cluster).
    #[arg(long, default_value = "")]
    pub id: String,
    /// HTTP address to serve the API on.
    #[arg(long, default_value = "localhost:11000")]
    pub haddr: String,
    /// Raft peer address.
    #[arg(long, default_value = "localhost:12000")]
    pub raddr: String,
    /// HTTP address of a member to join (ignored if the directory already holds a node).
    #[arg(long)]
    pub join: Option<String>,
    /// Log filter (info, debug, ...).
    #[arg(long = "log-level", default_value = "warn")]
    pub log_level: String,
    /// The node's storage directory.
    pub dir: PathBuf,
}

/// Starts the node and serves the API until the process ends.
pub async fn run(flags: Flags) -> Result<(), String> {
    let name = if flags.id.is_empty() {
        flags.raddr.clone()
    } else {
        flags.id.clone()
    };
    let listener = replica::bind(&flags.haddr)
        .await
        .map_err(|e| e.to_string())?;
    let replica = Replica::start(ReplicaSpec {
        name,
        data_dir: flags.dir.clone(),
        peer_listen: flags.raddr.clone(),
        client_address: flags.haddr.clone(),
        join: flags.join.clone(),
        role: PeerRole::Voter,
        observer: None,
    })
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!(name = %replica.name, start = ?replica.start, "hraftd serving on {}", flags.haddr);
    axum::serve(listener, router(replica))
        .await
        .map_err(|e| format!("serving HTTP: {e}"))
}

/// The HTTP API.
pub fn router(replica: Arc<Replica>) -> Router {
    Router::new()
        .route("/key", post(set_keys))
        .route("/key/{name}", get(get_key).delete(delete_key))
        .merge(replica::routes())
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(replica)
}

fn level_from(query: Option<&str>) -> Result<ReadLevel, String> {
    let mut level = ReadLevel::Linearizable;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("level", "linearizable")) => level = ReadLevel::Linearizable,
            Some(("level", "lease")) => level = ReadLevel::Lease,
            Some(("level", "stale")) => level = ReadLevel::Stale,
            Some(("level", other)) => {
                return Err(format!(
                    "unknown level {other:?}: use linearizable, lease or stale"
                ));
            }
            _ => return Err(format!("unknown query parameter {pair:?}")),
        }
    }
    Ok(level)
}

async fn get_key(
    State(replica): State<Arc<Replica>>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    let name = match name {
        Ok(Path(name)) => name,
        Err(rejection) => return json_error(rejection.status(), rejection.body_text(), None),
    };
    let level = match level_from(query.as_deref()) {
        Ok(level) => level,
        Err(why) => return json_error(StatusCode::BAD_REQUEST, why, None),
    };
    match replica.get(Bytes::from(name.clone()), level).await {
        Ok(Some(value)) => {
            let mut object = serde_json::Map::new();
            object.insert(
                name,
                serde_json::Value::String(String::from_utf8_lossy(&value).into_owned()),
            );
            let text = serde_json::Value::Object(object).to_string();
            (StatusCode::OK, [("content-type", "application/json")], text).into_response()
        }
        Ok(None) => json_error(
            StatusCode::NOT_FOUND,
            format!("key {name:?} not found"),
            None,
        ),
        Err(e) => replica::write_error_response(&e, replica.leader_address()),
    }
}

async fn set_keys(
    State(replica): State<Arc<Replica>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            return json_error(rejection.status(), rejection.body_text(), None);
        }
    };
    let object: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(&body) {
        Ok(object) => object,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("the body must be a JSON object of strings, like {{\"k1\":\"v1\"}}: {e}"),
                None,
            );
        }
    };
    if object.is_empty() {
        return json_error(StatusCode::BAD_REQUEST, "no key to set", None);
    }
    if object.len() > PUT_MANY_PAIRS_MAX {
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} pairs; at most {PUT_MANY_PAIRS_MAX} in one request",
                object.len()
            ),
            None,
        );
    }
    let mut pairs = Vec::with_capacity(object.len());
    for (key, value) in object {
        let serde_json::Value::String(value) = value else {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("the value of {key:?} must be a string"),
                None,
            );
        };
        pairs.push((Bytes::from(key), Bytes::from(value)));
    }
    match replica.write(WriteOp::PutMany { pairs }).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => replica::write_error_response(&e, replica.leader_address()),
    }
}

async fn delete_key(
    State(replica): State<Arc<Replica>>,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    let name = match name {
        Ok(Path(name)) => name,
        Err(rejection) => return json_error(rejection.status(), rejection.body_text(), None),
    };
    match replica
        .write(WriteOp::Delete {
            key: Bytes::from(name),
        })
        .await
    {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => replica::write_error_response(&e, replica.leader_address()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_bad_ones_are_named() {
        assert_eq!(level_from(None), Ok(ReadLevel::Linearizable));
        assert_eq!(level_from(Some("level=stale")), Ok(ReadLevel::Stale));
        assert_eq!(level_from(Some("level=lease")), Ok(ReadLevel::Lease));
        assert!(level_from(Some("level=eventual")).is_err_and(|e| e.contains("eventual")));
        assert!(level_from(Some("colour=red")).is_err());
    }
}
