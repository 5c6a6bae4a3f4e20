//! raft-demo's chat room on rkv: a publish-subscribe room whose messages go through the
//! log, and its client.
//!
//! ```text
//! rkv-demo chatroom -id node0 -port :11000 -raft :12000 -hjoin :13000
//! rkv-demo chatroom -id node1 -port :11001 -raft :12001 -join :13000
//! rkv-demo chat -config client.toml
//! ```
//! # Server
//! Clients connect to any replica's `-port` and send one message per line. Each message
//! is proposed to the log (a follower forwards it to the leader); every replica sends
//! every committed message, in log order, to all its connected clients as a line
//! `INDEX TEXT`, INDEX being the message's log index (the same on every replica). A
//! server greets each client with `! joined the room on NAME` once subscribed: the
//! client sees every message committed after that. A message that could not be
//! committed is answered `! error ...` to its sender only; `! ...` lines are notices.
//!
//! Messages are writes of the reserved key [`CHAT_KEY`] in rkv's key-value machine: each
//! overwrites the last, so the map holds one message whatever the traffic, and the
//! machine's change events carry every message in log order. (A chat room node runs
//! only the chat room, so the key is free.)
//!
//! # Client
//! Reads the TOML file of the original:
//! ```toml
//! rep=3
//! svrIps=["127.0.0.1:11000", "127.0.0.1:11001", "127.0.0.1:11002"]
//! mqueueSize=100
//! ```
//! It connects to the first `rep` servers of `svrIps`, sends each line typed on stdin
//! (as `NAME: text`) to one of them (the next one if that fails), and prints each
//! message once: as it hears each from up to `rep` replicas, it drops repeats, keeping
//! the log indices of the last `mqueueSize` messages (exact, unlike comparing texts),
//! and also drops any index at or below the highest it has printed: every replica sends
//! in log order, so such a message is a repeat from a replica that lags by more than
//! `mqueueSize` messages (the queue alone would print it again, out of order).
//! Messages go to stdout, one line each; notices and errors to stderr.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use rkv_kv::{EventKind, PeerRole, WriteOp};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc};

use crate::kvstore::{NodeFlags, read_line, serve_http};
use crate::profile::stop_requested;
use crate::replica::{Replica, WriteError};

/// The key every chat message is written to.
pub const CHAT_KEY: &[u8] = b"\0chat";
/// Most messages a client remembers to drop repeats.
pub const MQUEUE_SIZE_MAX: usize = 1_000_000;
/// Longest message line.
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024;
/// Messages a client's connection may fall behind before it is told it missed some.
pub const CLIENT_QUEUE_MESSAGES: usize = 1024;

/// `rkv-demo chatroom`'s flags.
#[derive(Clone, Debug, Parser)]
#[command(name = "chatroom", about = "raft-demo's chat room server")]
pub struct ServerFlags {
    /// The node.
    #[command(flatten)]
    pub node: NodeFlags,
    /// Client address.
    #[arg(long, default_value = ":11000")]
    pub port: String,
}

/// Starts the replica and serves chat clients until SIGINT/SIGTERM.
pub async fn run_server(flags: ServerFlags) -> Result<(), String> {
    let clients = crate::replica::bind(&flags.port)
        .await
        .map_err(|e| e.to_string())?;
    let (replica, http) = flags.node.start(PeerRole::Voter, None).await?;
    tokio::spawn(serve_http(replica.clone(), http));
    let accept = async {
        loop {
            match clients.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_chatter(replica.clone(), stream));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a chat client failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    };
    tokio::select! {
        () = accept => Ok(()),
        () = stop_requested() => Ok(()),
    }
}

async fn serve_chatter(replica: Arc<Replica>, stream: TcpStream) {
    // Subscribe first: every message committed from now on reaches this client.
    let mut events = replica.node.events.subscribe();
    let (read, mut write) = stream.into_split();
    let (out, mut outbox) = mpsc::channel::<Vec<u8>>(CLIENT_QUEUE_MESSAGES);
    let writer = tokio::spawn(async move {
        while let Some(line) = outbox.recv().await {
            if write.write_all(&line).await.is_err() {
                return;
            }
        }
    });
    // The greeting goes out after subscribing: a client that has read it will see
    // every message committed from then on.
    let greeting = format!("! joined the room on {}\n", replica.name);
    if out.send(greeting.into_bytes()).await.is_err() {
        return;
    }
    let broadcast_out = out.clone();
    let broadcaster = tokio::spawn(async move {
        loop {
            let batch = match events.recv().await {
                Ok(batch) => batch,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let notice =
                        format!("! this replica skipped {missed} changes: messages were missed\n");
                    if broadcast_out.send(notice.into_bytes()).await.is_err() {
                        return;
                    }
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            for event in batch.iter() {
                let EventKind::Put(text) = &event.kind else {
                    continue;
                };
                if event.key.as_ref() != CHAT_KEY {
                    continue;
                }
                let line = [format!("{} ", event.index).as_bytes(), text, b"\n"].concat();
                if broadcast_out.send(line).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        let notice = match read_line(&mut reader, &mut line, MESSAGE_BYTES_MAX).await {
            Err(_) | Ok(None) => break,
            Ok(Some(false)) => Some(format!(
                "! error: a message is at most {MESSAGE_BYTES_MAX} bytes\n"
            )),
            Ok(Some(true)) if line.is_empty() => None,
            Ok(Some(true)) => {
                let write = WriteOp::Put {
                    key: Bytes::from_static(CHAT_KEY),
                    value: Bytes::copy_from_slice(&line),
                };
                match replica.write(write).await {
                    Ok(_) => None,
                    Err(e) => Some(send_failure_notice(&e)),
                }
            }
        };
        if let Some(notice) = notice
            && out.send(notice.into_bytes()).await.is_err()
        {
            break;
        }
    }
    broadcaster.abort();
    drop(out);
    let _ = writer.await;
}

/// The notice a sender gets when its message did not commit for sure: "not sent" only
/// when nothing was applied; an unknown outcome says the message may still appear.
pub fn send_failure_notice(error: &WriteError) -> String {
    match error {
        WriteError::Unknown(_) => {
            format!("! error: maybe sent (it may still appear; do not resend blindly): {error}\n")
        }
        _ => format!("! error: not sent: {error}\n"),
    }
}

/// The client's TOML file, as raft-demo's.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ClientConfig {
    /// How many of the servers to connect to.
    pub rep: usize,
    /// The servers' chat addresses.
    #[serde(rename = "svrIps")]
    pub svr_ips: Vec<String>,
    /// How many recent messages are remembered to drop repeats.
    #[serde(rename = "mqueueSize")]
    pub mqueue_size: usize,
}

impl ClientConfig {
    /// Parses and checks the file's text.
    pub fn parse(text: &str) -> Result<ClientConfig, String> {
        let config: ClientConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        if config.rep == 0 || config.svr_ips.is_empty() {
            return Err("rep must be at least 1 and svrIps must list a server".into());
        }
        if config.mqueue_size == 0 || config.mqueue_size > MQUEUE_SIZE_MAX {
            return Err(format!("mqueueSize must be 1 to {MQUEUE_SIZE_MAX}"));
        }
        Ok(config)
    }
}

/// `rkv-demo chat`'s flags.
#[derive(Clone, Debug, Parser)]
#[command(name = "chat", about = "raft-demo's chat client")]
pub struct ClientFlags {
    /// The TOML file (rep, svrIps, mqueueSize).
    #[arg(long)]
    pub config: PathBuf,
    /// The name shown before your messages (default: "user" and the process id).
    #[arg(long)]
    pub name: Option<String>,
}

/// Drops messages already seen: the last `capacity` indices (the original's queue), and
/// any index at or below the highest seen (a lagging replica's repeats, however late).
#[derive(Debug)]
pub struct Dedup {
    order: VecDeque<u64>,
    seen: HashSet<u64>,
    capacity: usize,
    highest: u64,
}

impl Dedup {
    /// Remembers up to `capacity` messages.
    pub fn new(capacity: usize) -> Dedup {
        Dedup {
            order: VecDeque::with_capacity(capacity),
            seen: HashSet::with_capacity(capacity),
            capacity: capacity.max(1),
            highest: 0,
        }
    }

    /// True the first time `index` is offered, and only if it is above every index
    /// offered before (messages are printed in log order, each once).
    pub fn first_time(&mut self, index: u64) -> bool {
        if index <= self.highest || self.seen.contains(&index) {
            return false;
        }
        self.highest = index;
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.order.push_back(index);
        self.seen.insert(index);
        true
    }
}

/// Connects, sends stdin's lines and prints every message once, until stdin ends
/// (then it waits for messages until SIGINT/SIGTERM).
pub async fn run_client(flags: ClientFlags) -> Result<(), String> {
    let text = std::fs::read_to_string(&flags.config)
        .map_err(|e| format!("{}: {e}", flags.config.display()))?;
    let config =
        ClientConfig::parse(&text).map_err(|e| format!("{}: {e}", flags.config.display()))?;
    let name = flags
        .name
        .clone()
        .unwrap_or_else(|| format!("user{}", std::process::id()));
    let (heard, mut hearing) = mpsc::channel::<(u64, String)>(1024);
    let mut senders = Vec::new();
    for address in config.svr_ips.iter().take(config.rep) {
        match connect(address).await {
            Ok((reader, write)) => {
                senders.push((address.clone(), write));
                tokio::spawn(listen(address.clone(), reader, heard.clone()));
            }
            Err(e) => eprintln!("chat: cannot join the room at {address}: {e}"),
        }
    }
    drop(heard);
    if senders.is_empty() {
        return Err("no server in svrIps could be reached".into());
    }
    eprintln!("chat: connected to {} server(s)", senders.len());
    let printer = tokio::spawn(async move {
        let mut dedup = Dedup::new(config.mqueue_size);
        let mut stdout = tokio::io::stdout();
        while let Some((index, text)) = hearing.recv().await {
            if index == 0 {
                eprintln!("chat: {text}");
            } else if dedup.first_time(index) {
                let _ = stdout.write_all(format!("{text}\n").as_bytes()).await;
                let _ = stdout.flush().await;
            }
        }
    });
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    let sending = async {
        while let Ok(Some(_)) = read_line(&mut stdin, &mut line, MESSAGE_BYTES_MAX).await {
            if line.is_empty() {
                continue;
            }
            let message = format!("{name}: {}\n", String::from_utf8_lossy(&line));
            let mut sent = false;
            for (address, write) in senders.iter_mut() {
                match write.write_all(message.as_bytes()).await {
                    Ok(()) => {
                        sent = true;
                        break;
                    }
                    Err(e) => eprintln!("chat: sending to {address} failed: {e}; trying the next"),
                }
            }
            if !sent {
                eprintln!("chat: no server took the message");
            }
        }
    };
    sending.await;
    tokio::select! {
        _ = printer => Ok(()),
        () = stop_requested() => Ok(()),
    }
}

/// Longest a server may take to greet a client.
pub const GREETING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

type ServerReader = BufReader<tokio::net::tcp::OwnedReadHalf>;

/// Connects to a chat server and waits for its greeting (after which every committed
/// message reaches this client).
async fn connect(address: &str) -> Result<(ServerReader, tokio::net::tcp::OwnedWriteHalf), String> {
    let host = crate::http_client::host_port(address);
    let stream = TcpStream::connect(&host).await.map_err(|e| e.to_string())?;
    let (read, write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut greeting = String::new();
    match tokio::time::timeout(GREETING_TIMEOUT, reader.read_line(&mut greeting)).await {
        Ok(Ok(n)) if n > 0 && greeting.starts_with("! joined") => Ok((reader, write)),
        Ok(Ok(_)) => Err(format!(
            "not a chat room (it said {:?})",
            greeting.trim_end()
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no greeting within {GREETING_TIMEOUT:?}")),
    }
}

/// Reads `INDEX TEXT` lines from one server; notices (`! ...`) go out with index 0.
async fn listen(address: String, mut reader: ServerReader, heard: mpsc::Sender<(u64, String)>) {
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        // Bytes, not text: a message that is not UTF-8 is shown lossily, never fatal.
        match reader.read_until(b'\n', &mut bytes).await {
            Ok(0) | Err(_) => {
                let _ = heard.send((0, format!("! {address} went away"))).await;
                return;
            }
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&bytes);
        let text = line.trim_end_matches(['\r', '\n']);
        let parsed = text
            .split_once(' ')
            .and_then(|(index, rest)| Some((index.parse::<u64>().ok()?, rest.to_string())));
        let message = parsed.unwrap_or_else(|| (0, text.to_string()));
        if heard.send(message).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_originals_config_parses_and_bad_ones_say_why() {
        let config = ClientConfig::parse(
            "rep=3\nsvrIps=[\"127.0.0.1:11000\", \"127.0.0.1:11001\", \"127.0.0.1:11002\"]\nmqueueSize=100\n",
        )
        .expect("parses");
        assert_eq!(config.rep, 3);
        assert_eq!(config.svr_ips.len(), 3);
        assert_eq!(config.mqueue_size, 100);
        assert!(ClientConfig::parse("rep=0\nsvrIps=[\"a:1\"]\nmqueueSize=1").is_err());
        assert!(ClientConfig::parse("rep=\"x\"").is_err());
        assert!(ClientConfig::parse("rep=1\nsvrIps=[\"a:1\"]\nmqueueSize=99999999999").is_err());
    }

    #[test]
    fn repeats_are_dropped_while_remembered() {
        let mut dedup = Dedup::new(2);
        assert!(dedup.first_time(5));
        assert!(!dedup.first_time(5));
        assert!(dedup.first_time(6));
        assert!(dedup.first_time(7)); // 5 is out of the queue now
        assert!(!dedup.first_time(6));
    }

    /// Regression: a replica lagging more than `mqueueSize` messages behind used to
    /// have its repeats printed again, out of order, once they had left the queue.
    #[test]
    fn a_lagging_replicas_repeats_are_dropped_even_when_forgotten() {
        let mut dedup = Dedup::new(2);
        // The fast replica delivers 1..=5; the slow one then delivers 1..=6.
        let fast: Vec<bool> = (1..=5).map(|i| dedup.first_time(i)).collect();
        assert_eq!(fast, [true; 5]);
        let slow: Vec<u64> = (1..=6).filter(|i| dedup.first_time(*i)).collect();
        assert_eq!(slow, [6], "only the new message is printed");
    }

    /// Regression: an unknown outcome was reported as "not sent".
    #[test]
    fn an_unknown_outcome_is_not_reported_as_not_sent() {
        let unknown = send_failure_notice(&WriteError::Unknown("timed out".into()));
        assert!(!unknown.contains("not sent"), "{unknown}");
        assert!(unknown.contains("may still appear"), "{unknown}");
        let none = send_failure_notice(&WriteError::NoLeader("election".into()));
        assert!(none.starts_with("! error: not sent"), "{none}");
    }
}
