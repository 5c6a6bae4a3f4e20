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
//! Keys, values and names are escaped ([`escape`]) so that a line is always one
//! command: `\\` for a backslash, `\n`, `\r`, `\t`, `\u{XX}` for other control
//! characters, and `\xNN` for each byte that is not UTF-8; everything else is as sent.
//! The lines are written on the apply path, in order, and flushed per entry. Restarted,
//! the logger drops a torn last line (one without its newline), then appends after the
//! index of the last well-formed line (a restart applies the log again from its
//! snapshot, and nothing is written twice). Not logged: entries that
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
    escape(bytes)
}

/// `bytes` as text on one line (see the module docs): a newline in a value can never
/// start a line of its own.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
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
                escape(record.name.as_bytes()),
                escape(record.peer_address.as_bytes())
            )
        }
        Ok(Command::SetPeer { node_id, .. }) => format!("peer-removed (id {node_id})"),
        Err(e) => format!("undecodable ({} bytes: {e})", command.len()),
    }
}

/// The index of a complete line `INDEX TEXT\n`, if it is one.
fn well_formed_index(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\n")?;
    let space = line.iter().position(|b| *b == b' ')?;
    let (index, _) = line.split_at(space);
    if index.is_empty() || !index.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(index).ok()?.parse().ok()
}

/// Where the file at `path` stands: the index of its last well-formed line (0 if none)
/// and the length of its complete lines (a torn last line, cut by a crash mid-write,
/// lies beyond it).
fn scan(path: &Path) -> std::io::Result<(u64, u64)> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    let mut reader = std::io::BufReader::new(file);
    let (mut last, mut complete) = (0, 0u64);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line)?;
        if read == 0 || line.last() != Some(&b'\n') {
            return Ok((last, complete));
        }
        complete += read as u64;
        if let Some(index) = well_formed_index(&line) {
            last = index;
        }
    }
}

/// The index of the last well-formed line of the file at `path` (0 if there is none or
/// the file cannot be read).
pub fn last_logged_index(path: &Path) -> u64 {
    scan(path).map_or(0, |(last, _)| last)
}

/// An observer appending every applied command to `path`.
pub fn file_observer(path: &Path) -> Result<ApplyObserver, String> {
    let (last, complete) = scan(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // A torn last line goes: its entry is written again, whole, after the last one.
    file.set_len(complete)
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

    fn put(key: &str, value: &str) -> Bytes {
        Bytes::from(
            Command::Write {
                now_ms: 1,
                session: None,
                op: WriteOp::Put {
                    key: Bytes::from(key.to_string()),
                    value: Bytes::from(value.to_string()),
                },
            }
            .encode(),
        )
    }

    /// Regression: a value with a newline used to split its line, and the restart point
    /// was the largest number at the start of any line (here 999999): every later
    /// command was then skipped.
    #[test]
    fn a_value_with_a_newline_stays_on_its_line_and_restarts_resume_correctly() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("log");
        let observer = file_observer(&path).expect("opens");
        observer(rkv_raft::Index(1), &put("k", "a\n999999 y"), &[]);
        observer(rkv_raft::Index(2), &put("tab\t", "back\\slash\r"), &[]);
        assert_eq!(last_logged_index(&path), 2);
        let observer = file_observer(&path).expect("reopens");
        observer(rkv_raft::Index(3), &put("k", "z"), &[]);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text,
            "1 set-k-a\\n999999 y\n2 set-tab\\t-back\\\\slash\\r\n3 set-k-z\n"
        );
    }

    #[test]
    fn escaping_keeps_text_readable_and_one_line() {
        assert_eq!(escape(b"plain text, it's"), "plain text, it's");
        assert_eq!(escape(b"a\x00b\x7f"), "a\\u{0}b\\u{7f}");
        assert_eq!(escape(b"\xff\xfeok"), "\\xff\\xfeok");
        assert_eq!(escape("é".as_bytes()), "é");
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_written_again() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("log");
        std::fs::write(&path, "1 register\ngarbage line\n2 register\n3 regis").expect("write");
        assert_eq!(last_logged_index(&path), 2);
        let observer = file_observer(&path).expect("reopens");
        let command = Bytes::from(Command::Register { now_ms: 1 }.encode());
        observer(rkv_raft::Index(3), &command, &[]);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, "1 register\ngarbage line\n2 register\n3 register\n");
    }
}
