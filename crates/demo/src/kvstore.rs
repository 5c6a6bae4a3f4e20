//! raft-demo's kvstore on rkv: a text protocol over TCP, one request a line.
//!
//! ```text
//! rkv-demo kvstore -id node0 -port :11000 -raft :12000 -hjoin :13000
//! rkv-demo kvstore -id node1 -port :11001 -raft :12001 -join :13000
//! ```
//! # The protocol
//! A request is one line (`\n` or `\r\n` ends it); every request gets exactly one reply
//! line, in order:
//!
//! | request | reply |
//! |---|---|
//! | `get-KEY` | `VALUE <value>` or `NOTFOUND` (a linearizable read) |
//! | `set-KEY-VALUE` | `OK` (the key ends at the first `-`; the value may contain `-`) |
//! | `delete-KEY` | `OK deleted` or `OK absent` |
//! | anything else | `ERR <what is wrong>`; the connection stays open |
//!
//! Keys are non-empty and contain no `-`. A line over [`LINE_BYTES_MAX`] is answered
//! `ERR` and skipped up to its end. Any replica accepts writes: a follower forwards them
//! to the leader. Failures the client can retry say so: `ERR unavailable: ...`.
//!
//! # Joining
//! `-hjoin ADDR` serves `POST /join` over HTTP (the first node's, in the original's
//! set-up); `-join ADDR` makes a new node ask that address to add it. Every node also
//! serves joins and forwarded writes on that HTTP address, or on an ephemeral port of
//! the `-raft` host when it has no `-hjoin`, so that followers can always forward to it.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clap::{Args, Parser};
use rkv_engine::ReadLevel;
use rkv_kv::{KEY_BYTES_MAX, PeerRole, VALUE_BYTES_MAX, WriteOp};
use rkv_server::machine::ApplyObserver;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::profile::{Profiles, stop_requested};
use crate::replica::{self, Replica, ReplicaSpec};

/// Longest request line: a largest key and value with the verb.
pub const LINE_BYTES_MAX: usize = KEY_BYTES_MAX + VALUE_BYTES_MAX + 16;

/// The flags every raft-demo node has.
#[derive(Args, Clone, Debug)]
pub struct NodeFlags {
    /// The node's name.
    #[arg(long)]
    pub id: String,
    /// Raft peer address.
    #[arg(long, default_value = ":12000")]
    pub raft: String,
    /// Serve join requests (HTTP `POST /join`) on this address.
    #[arg(long)]
    pub hjoin: Option<String>,
    /// Join the cluster through the member serving joins at this address.
    #[arg(long)]
    pub join: Option<String>,
    /// Where the node keeps its state (default: rkv-demo-data/ID).
    #[arg(long = "data-dir")]
    pub data_dir: Option<PathBuf>,
    /// Log filter (info, debug, ...).
    #[arg(long = "log-level", default_value = "warn")]
    pub log_level: String,
}

impl NodeFlags {
    fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("rkv-demo-data/{}", self.id)))
    }

    /// Binds the node's HTTP address (`-hjoin`, or an ephemeral port on the `-raft`
    /// host) and starts the replica. Returns it with the bound listener, to serve.
    pub async fn start(
        &self,
        role: PeerRole,
        observer: Option<ApplyObserver>,
    ) -> Result<(Arc<Replica>, tokio::net::TcpListener), String> {
        let http_address = match &self.hjoin {
            Some(address) => address.clone(),
            None => {
                let host = self.raft.rsplit_once(':').map_or("", |(host, _)| host);
                format!("{}:0", if host.is_empty() { "127.0.0.1" } else { host })
            }
        };
        let listener = replica::bind(&http_address)
            .await
            .map_err(|e| e.to_string())?;
        let bound = listener
            .local_addr()
            .map_err(|e| format!("the HTTP address: {e}"))?;
        let advertised = advertised(&http_address, bound);
        let replica = Replica::start(ReplicaSpec {
            name: self.id.clone(),
            data_dir: self.data_dir(),
            peer_listen: self.raft.clone(),
            client_address: advertised,
            join: self.join.clone(),
            role,
            observer,
        })
        .await
        .map_err(|e| e.to_string())?;
        Ok((replica, listener))
    }
}

/// The address others use for a listener asked for at `asked` and bound at `bound`.
fn advertised(asked: &str, bound: SocketAddr) -> String {
    let host = asked.rsplit_once(':').map_or("", |(host, _)| host);
    let host = if host.is_empty() || host == "0.0.0.0" {
        "127.0.0.1"
    } else {
        host
    };
    format!("{host}:{}", bound.port())
}

/// `rkv-demo kvstore`'s flags.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "kvstore",
    about = "raft-demo's kvstore: a line protocol over TCP"
)]
pub struct Flags {
    /// The node.
    #[command(flatten)]
    pub node: NodeFlags,
    /// Client address (the line protocol).
    #[arg(long, default_value = ":11000")]
    pub port: String,
    /// Write a CPU profile (flame graph SVG) here when stopped.
    #[arg(long)]
    pub cpuprofile: Option<PathBuf>,
    /// Write memory statistics here when stopped.
    #[arg(long)]
    pub memprofile: Option<PathBuf>,
    /// Log every received request to DIR/ID.log.
    #[arg(long)]
    pub logfolder: Option<PathBuf>,
}

/// One parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `get-KEY`.
    Get(Bytes),
    /// `set-KEY-VALUE`.
    Set(Bytes, Bytes),
    /// `delete-KEY`.
    Delete(Bytes),
}

fn key(bytes: &[u8]) -> Result<Bytes, String> {
    if bytes.is_empty() {
        return Err("the key is empty".into());
    }
    if bytes.contains(&b'-') {
        return Err("a key cannot contain '-'".into());
    }
    Ok(Bytes::copy_from_slice(bytes))
}

/// Parses a request line (without its line end).
pub fn parse(line: &[u8]) -> Result<Request, String> {
    if let Some(rest) = line.strip_prefix(b"get-") {
        return Ok(Request::Get(key(rest)?));
    }
    if let Some(rest) = line.strip_prefix(b"delete-") {
        return Ok(Request::Delete(key(rest)?));
    }
    if let Some(rest) = line.strip_prefix(b"set-") {
        let Some(dash) = rest.iter().position(|b| *b == b'-') else {
            return Err("set needs a key and a value: set-KEY-VALUE".into());
        };
        let (k, value) = (&rest[..dash], &rest[dash + 1..]);
        return Ok(Request::Set(key(k)?, Bytes::copy_from_slice(value)));
    }
    Err("unknown request: use get-KEY, set-KEY-VALUE or delete-KEY".into())
}

/// Runs one request and returns its reply line (without the line end).
pub async fn answer(replica: &Replica, request: Request) -> Vec<u8> {
    let result = match request {
        Request::Get(key) => {
            replica
                .get(key, ReadLevel::Linearizable)
                .await
                .map(|value| match value {
                    Some(value) => [b"VALUE ".as_slice(), &value].concat(),
                    None => b"NOTFOUND".to_vec(),
                })
        }
        Request::Set(key, value) => replica
            .write(WriteOp::Put { key, value })
            .await
            .map(|_| b"OK".to_vec()),
        Request::Delete(key) => replica
            .write(WriteOp::Delete { key })
            .await
            .map(|done| match done.existed {
                Some(false) => b"OK absent".to_vec(),
                _ => b"OK deleted".to_vec(),
            }),
    };
    result.unwrap_or_else(|e| format!("ERR {e}").into_bytes())
}

/// Reads one line of at most `max` bytes into `line` (without its end). `Ok(None)` at
/// the end of input; `Ok(Some(false))` if the line was too long (it is skipped).
pub async fn read_line<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    line.clear();
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if line.is_empty() && !too_long {
                None
            } else {
                Some(!too_long)
            });
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(end) => (&available[..end], Some(end + 1)),
            None => (available, None),
        };
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let consumed = done.unwrap_or(available.len());
        reader.consume(consumed);
        if done.is_some() {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(!too_long));
        }
    }
}

/// A request log (`-logfolder`): one line per received request.
type RequestLog = Arc<Mutex<std::fs::File>>;

async fn serve_client(
    replica: Arc<Replica>,
    stream: tokio::net::TcpStream,
    log: Option<RequestLog>,
) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        let reply = match read_line(&mut reader, &mut line, LINE_BYTES_MAX).await {
            Err(_) | Ok(None) => return,
            Ok(Some(false)) => {
                format!("ERR the line is longer than {LINE_BYTES_MAX} bytes").into_bytes()
            }
            Ok(Some(true)) => {
                if let Some(log) = &log
                    && let Ok(mut file) = log.lock()
                {
                    let _ = writeln!(
                        file,
                        "{} {peer} {}",
                        rkv_server::service::now_ms(),
                        String::from_utf8_lossy(&line)
                    );
                }
                match parse(&line) {
                    Ok(request) => answer(&replica, request).await,
                    Err(why) => format!("ERR {why}").into_bytes(),
                }
            }
        };
        let mut out = reply;
        out.push(b'\n');
        if write.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Starts the node and serves the line protocol until SIGINT/SIGTERM (then writes the
/// profiles).
pub async fn run(flags: Flags) -> Result<(), String> {
    let profiles = Profiles::start(flags.cpuprofile.clone(), flags.memprofile.clone())?;
    let log = match &flags.logfolder {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("-logfolder {}: {e}", dir.display()))?;
            let path = dir.join(format!("{}.log", flags.node.id));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("-logfolder {}: {e}", path.display()))?;
            Some(Arc::new(Mutex::new(file)))
        }
        None => None,
    };
    let clients = replica::bind(&flags.port)
        .await
        .map_err(|e| e.to_string())?;
    let (replica, http) = flags.node.start(PeerRole::Voter, None).await?;
    tokio::spawn(serve_http(replica.clone(), http));
    let serving = accept_loop(replica, clients, log);
    tokio::select! {
        () = serving => Ok(()),
        () = stop_requested() => profiles.finish(),
    }
}

/// Serves `/join` and `/internal/propose` on `listener`.
pub async fn serve_http(replica: Arc<Replica>, listener: TcpListener) {
    let router = replica::routes().with_state(replica);
    if let Err(e) = axum::serve(listener, router).await {
        tracing::error!(error = %e, "the HTTP listener failed");
    }
}

async fn accept_loop(replica: Arc<Replica>, clients: TcpListener, log: Option<RequestLog>) {
    loop {
        match clients.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_client(replica.clone(), stream, log.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a client failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_malformed_ones_say_why() {
        assert_eq!(parse(b"get-a"), Ok(Request::Get(Bytes::from("a"))));
        assert_eq!(
            parse(b"set-a-b-c"),
            Ok(Request::Set(Bytes::from("a"), Bytes::from("b-c")))
        );
        assert_eq!(
            parse(b"set-a-"),
            Ok(Request::Set(Bytes::from("a"), Bytes::new()))
        );
        assert_eq!(parse(b"delete-a"), Ok(Request::Delete(Bytes::from("a"))));
        for bad in [
            &b"get-"[..],
            b"get-a-b",
            b"set-a",
            b"set--v",
            b"put-a-b",
            b"",
            b"\xff",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn long_lines_are_skipped_and_the_next_one_is_read() {
        let input = b"get-a\r\nxxxxxxxxxxxx\nget-b\nlast".to_vec();
        let mut reader = BufReader::with_capacity(4, input.as_slice());
        let mut line = Vec::new();
        assert_eq!(
            read_line(&mut reader, &mut line, 8).await.ok(),
            Some(Some(true))
        );
        assert_eq!(line, b"get-a");
        assert_eq!(
            read_line(&mut reader, &mut line, 8).await.ok(),
            Some(Some(false))
        );
        assert_eq!(
            read_line(&mut reader, &mut line, 8).await.ok(),
            Some(Some(true))
        );
        assert_eq!(line, b"get-b");
        assert_eq!(
            read_line(&mut reader, &mut line, 8).await.ok(),
            Some(Some(true))
        );
        assert_eq!(line, b"last");
        assert_eq!(read_line(&mut reader, &mut line, 8).await.ok(), Some(None));
    }

    #[test]
    fn advertised_addresses_are_dialable() {
        let bound: SocketAddr = "0.0.0.0:4000".parse().expect("address");
        assert_eq!(advertised(":0", bound), "127.0.0.1:4000");
        assert_eq!(advertised("10.0.0.7:0", bound), "10.0.0.7:4000");
    }
}
