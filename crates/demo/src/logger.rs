//! raft-demo's logger on rkv: a learner that writes every committed command, in log
//! order, to its own file.
//!
//! ```text
//! rkv-demo logger -id log1 -raft :12003 -join :13000
//! ```
//! It joins as a learner for good (its record says so, so no leader promotes it): it
//! receives the log but never votes and never counts toward a quorum, so the cluster
//! works the same with or without it.
//!
//! # The file
//! One line per applied command entry: `INDEX TEXT`, with TEXT in the kvstore's request
//! form where there is one ([`describe`]): `set-KEY-VALUE`, `delete-KEY`, and
//! `set-many K=V ...`, `cas-KEY`, `register`, `peer NAME ADDRESS ROLE` otherwise.
//! The lines are written on the apply path, in order, and flushed per entry. Restarted,
//! the logger appends after the last index already in the file (a restart applies the
//! log again from its snapshot, and nothing is written twice). Not logged: entries that
//! reach the logger inside a snapshot (only if it falls behind by a whole snapshot
//! interval, 100,000 entries); the file then jumps, visibly, to the next index.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clap::Parser;
use rkv_kv::{Command, PeerRole, WriteOp};
use rkv_server::machine::ApplyObserver;

use crate::kvstore::{NodeFlags, serve_http};
use crate::profile::stop_requested;

/// `rkv-demo logger`'s flags.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "logger",
    about = "raft-demo's logger: a learner writing every committed command"
)]
pub struct Flags {
    /// The node.
    #[command(flatten)]
    pub node: NodeFlags,
    /// The file commands are written to (default: ID.commands.log).
    #[arg(long)]
    pub logfile: Option<PathBuf>,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A committed command as one line of text (see the module docs).
pub fn describe(command: &[u8]) -> String {
    match Command::decode(command) {
        Ok(Command::Register { .. }) => "register".into(),
        Ok(Command::Write { op, .. }) => match op {
            WriteOp::Put { key, value } => format!("set-{}-{}", text(&key), text(&value)),
            WriteOp::Delete { key } => format!("delete-{}", text(&key)),
            WriteOp::CompareAndSwap { key, .. } => format!("cas-{}", text(&key)),
            WriteOp::PutMany { pairs } => {
                let pairs: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| format!("{}={}", text(k), text(v)))
                    .collect();
                format!("set-many {}", pairs.join(" "))
            }
        },
        Ok(Command::SetPeer {
            node_id,
            record: Some(record),
            ..
        }) => {
            let role = match record.role {
                PeerRole::Voter => "voter",
                PeerRole::Learner => "learner",
            };
            format!(
                "peer {} {} {role} (id {node_id})",
                record.name, record.peer_address
            )
        }
        Ok(Command::SetPeer { node_id, .. }) => format!("peer-removed (id {node_id})"),
        Err(e) => format!("undecodable ({} bytes: {e})", command.len()),
    }
}

/// The last index written to the file at `path` (0 if there is none).
pub fn last_logged_index(path: &Path) -> u64 {
    let Ok(file) = std::fs::File::open(path) else {
        return 0;
    };
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| line.split_once(' ')?.0.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// An observer appending every applied command to `path`.
pub fn file_observer(path: &Path) -> Result<ApplyObserver, String> {
    let last = last_logged_index(path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let state = Arc::new(Mutex::new((std::io::BufWriter::new(file), last)));
    let shown = path.display().to_string();
    Ok(Arc::new(move |index, command: &Bytes, _| {
        let Ok(mut state) = state.lock() else { return };
        let (out, last) = &mut *state;
        if index.0 <= *last {
            return;
        }
        *last = index.0;
        let written = writeln!(out, "{} {}", index.0, describe(command)).and_then(|()| out.flush());
        if let Err(e) = written {
            tracing::error!(file = %shown, error = %e, "cannot write the command log");
        }
    }))
}

/// Joins as a learner and logs until SIGINT/SIGTERM.
pub async fn run(flags: Flags) -> Result<(), String> {
    // Replica::start refuses a learner that would found a cluster: it must -join.
    let path = flags
        .logfile
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.commands.log", flags.node.id)));
    let observer = file_observer(&path)?;
    let (replica, http) = flags.node.start(PeerRole::Learner, Some(observer)).await?;
    tracing::info!(name = %replica.name, file = %path.display(), "logging committed commands");
    tokio::select! {
        () = serve_http(replica, http) => Ok(()),
        () = stop_requested() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_as_kvstore_requests() {
        let put = Command::Write {
            now_ms: 1,
            session: None,
            op: WriteOp::Put {
                key: Bytes::from("k"),
                value: Bytes::from("v-1"),
            },
        };
        assert_eq!(describe(&put.encode()), "set-k-v-1");
        assert!(describe(b"\x09garbage").starts_with("undecodable"));
    }

    #[test]
    fn a_restarted_logger_appends_after_the_last_index() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("log");
        let command = Bytes::from(Command::Register { now_ms: 1 }.encode());
        let observer = file_observer(&path).expect("opens");
        for index in 1..=3 {
            observer(rkv_raft::Index(index), &command, &[]);
        }
        let observer = file_observer(&path).expect("reopens");
        for index in 2..=4 {
            observer(rkv_raft::Index(index), &command, &[]);
        }
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, "1 register\n2 register\n3 register\n4 register\n");
    }
}
