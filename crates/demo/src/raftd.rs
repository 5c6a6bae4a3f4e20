//! raftd (goraft's reference server) on rkv: set up interactively, then an HTTP
//! key-value API.
//!
//! ```text
//! $ mkdir ~/raftd.1 && cd ~/raftd.1 && raftd
//! Enter host:port> localhost:4001
//! Initialize or join? [ij] i
//! New raftd cluster created.
//! ```
//! The working directory (or `-dir`) is the node's storage; started again there it
//! resumes with its name and data without asking. Flags answer the questions for
//! scripts (`-addr`, `-init`, `-join`), and when stdin is not a terminal the answers
//! are read from its lines (and echoed, so the transcript reads as above):
//! `printf 'localhost:4001\ni\n' | raftd`.
//!
//! HTTP on host:port: `GET /db/{key}` (the value, 404 if absent; linearizable),
//! `POST /db/{key}` (the body is the value; a follower forwards it to the leader),
//! `POST /join`. Raft peers talk on host:(port + `-peer-port-offset`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use clap::Parser;
use rkv_engine::ReadLevel;
use rkv_kv::{PeerRole, WriteOp};

use crate::replica::{self, Replica, ReplicaSpec, StartKind, json_error, stored_name};

/// raftd's command line: every flag is optional (the questions ask what is missing).
#[derive(Clone, Debug, Parser)]
#[command(name = "raftd", about = "Raft key-value server (rkv's raftd)")]
pub struct Flags {
    /// Answers "Enter host:port>".
    #[arg(long)]
    pub addr: Option<String>,
    /// Answers "Initialize or join?" with initialize.
    #[arg(long, default_value_t = false, conflicts_with = "join")]
    pub init: bool,
    /// Answers "Initialize or join?" with join, and "Server to join:" with this.
    #[arg(long)]
    pub join: Option<String>,
    /// The node's storage (default: the working directory).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Raft peers talk on the HTTP port plus this.
    #[arg(long = "peer-port-offset", default_value_t = 1000)]
    pub peer_port_offset: u16,
    /// Log filter (info, debug, ...).
    #[arg(long = "log-level", default_value = "warn")]
    pub log_level: String,
}

/// What the questions settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answers {
    /// host:port: the node's name and HTTP address.
    pub address: String,
    /// The member to join, or `None` to initialize a new cluster.
    pub join: Option<String>,
    /// Whether the directory already held this node.
    pub resume: bool,
}

/// Asks what the flags and the directory do not say, on `input`/`output`. At a
/// terminal a bad answer is asked again; otherwise it is an error.
pub fn ask(
    flags: &Flags,
    input: &mut impl BufRead,
    output: &mut impl Write,
    interactive: bool,
) -> Result<Answers, String> {
    if let Some(name) = stored_name(&flags.dir) {
        let _ = writeln!(output, "Resuming raftd node {name}.");
        return Ok(Answers {
            address: name,
            join: None,
            resume: true,
        });
    }
    let mut question = |prompt: &str, check: &dyn Fn(&str) -> Result<String, String>| loop {
        let _ = write!(output, "{prompt}");
        let _ = output.flush();
        let mut line = String::new();
        match input.read_line(&mut line) {
            Ok(0) => return Err(format!("no answer to {:?}: input ended", prompt.trim())),
            Ok(_) => {}
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
        let answer = line.trim();
        if !interactive {
            let _ = writeln!(output, "{answer}");
        }
        match check(answer) {
            Ok(value) => return Ok(value),
            Err(why) if interactive => {
                let _ = writeln!(output, "{why}");
            }
            Err(why) => return Err(why),
        }
    };
    let address = match &flags.addr {
        Some(address) => check_address(address)?,
        None => question("Enter host:port> ", &check_address)?,
    };
    let join = if flags.init {
        None
    } else if let Some(join) = &flags.join {
        Some(check_address(join)?)
    } else {
        let choice = question("Initialize or join? [ij] ", &|answer| match answer {
            "i" | "I" | "init" | "initialize" => Ok("i".into()),
            "j" | "J" | "join" => Ok("j".into()),
            other => Err(format!("please answer i or j, not {other:?}")),
        })?;
        if choice == "j" {
            Some(question("Server to join: ", &check_address)?)
        } else {
            None
        }
    };
    Ok(Answers {
        address,
        join,
        resume: false,
    })
}

fn check_address(text: &str) -> Result<String, String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} is not host:port"))?;
    if port.parse::<u16>().is_err() || host.contains(char::is_whitespace) {
        return Err(format!("{text:?} is not host:port"));
    }
    Ok(text.to_string())
}

fn peer_address(address: &str, offset: u16) -> Result<String, String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{address:?} is not host:port"))?;
    let port = port
        .parse::<u16>()
        .ok()
        .and_then(|p| p.checked_add(offset))
        .ok_or_else(|| format!("{address}: port + -peer-port-offset {offset} exceeds 65535"))?;
    Ok(format!("{host}:{port}"))
}

/// Asks the questions on stdin/stdout; `Err` if they cannot be answered.
pub fn ask_on_console(flags: &Flags) -> Result<Answers, String> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    ask(
        flags,
        &mut stdin.lock(),
        &mut std::io::stdout(),
        interactive,
    )
}

/// How many failures a cluster of `voters` voters survives.
pub fn quorum_note(voters: usize) -> String {
    let quorum = voters / 2 + 1;
    format!(
        "The cluster has {voters} voting server(s): {quorum} must be up, so it survives {} failure(s).",
        voters - quorum
    )
}

/// Starts the node as answered and serves HTTP until the process ends.
pub async fn serve(flags: Flags, answers: Answers) -> Result<(), String> {
    let listener = replica::bind(&answers.address)
        .await
        .map_err(|e| e.to_string())?;
    if answers.join.is_some() {
        print!("Joining cluster... ");
        let _ = std::io::stdout().flush();
    }
    let replica = Replica::start(ReplicaSpec {
        name: answers.address.clone(),
        data_dir: flags.dir.clone(),
        peer_listen: peer_address(&answers.address, flags.peer_port_offset)?,
        client_address: answers.address.clone(),
        join: answers.join.clone(),
        role: PeerRole::Voter,
        observer: None,
    })
    .await
    .map_err(|e| e.to_string())?;
    match replica.start {
        StartKind::Founded => println!("New raftd cluster created."),
        StartKind::Joined => println!("joined."),
        StartKind::Resumed => {}
    }
    // The book as this node knows it: the join answer's, or the founder's own.
    let voters = replica.node.book.as_ref().map_or(0, |book| {
        book.all()
            .values()
            .filter(|p| p.role == PeerRole::Voter)
            .count()
    });
    println!("{}", quorum_note(voters.max(1)));
    let _ = std::io::stdout().flush();
    axum::serve(listener, router(replica))
        .await
        .map_err(|e| format!("serving HTTP: {e}"))
}

/// The HTTP API.
pub fn router(replica: Arc<Replica>) -> Router {
    Router::new()
        .route("/db/{key}", get(get_value).post(set_value))
        .merge(replica::routes())
        .with_state(replica)
}

async fn get_value(State(replica): State<Arc<Replica>>, Path(key): Path<String>) -> Response {
    match replica.get(Bytes::from(key), ReadLevel::Linearizable).await {
        Ok(Some(value)) => (StatusCode::OK, value).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "").into_response(),
        Err(e) => replica::write_error_response(&e, replica.leader_address()),
    }
}

async fn set_value(
    State(replica): State<Arc<Replica>>,
    Path(key): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let value = match body {
        Ok(value) => value,
        Err(rejection) => return json_error(rejection.status(), rejection.body_text(), None),
    };
    match replica
        .write(WriteOp::Put {
            key: Bytes::from(key),
            value,
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

    fn flags(dir: &std::path::Path) -> Flags {
        Flags {
            addr: None,
            init: false,
            join: None,
            dir: dir.to_path_buf(),
            peer_port_offset: 1000,
            log_level: "warn".into(),
        }
    }

    #[test]
    fn the_questions_read_answers_from_lines() {
        let dir = tempfile::tempdir().expect("dir");
        let mut out = Vec::new();
        let answers = ask(
            &flags(dir.path()),
            &mut "localhost:4002\nj\nlocalhost:4001\n".as_bytes(),
            &mut out,
            false,
        )
        .expect("answers");
        assert_eq!(answers.join.as_deref(), Some("localhost:4001"));
        let transcript = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            transcript,
            "Enter host:port> localhost:4002\nInitialize or join? [ij] j\nServer to join: localhost:4001\n"
        );
    }

    #[test]
    fn bad_answers_are_errors_off_a_terminal_and_asked_again_on_one() {
        let dir = tempfile::tempdir().expect("dir");
        let e = ask(
            &flags(dir.path()),
            &mut "nonsense\n".as_bytes(),
            &mut Vec::new(),
            false,
        )
        .expect_err("not host:port");
        assert!(e.contains("host:port"), "{e}");
        let e = ask(
            &flags(dir.path()),
            &mut "".as_bytes(),
            &mut Vec::new(),
            false,
        )
        .expect_err("no input");
        assert!(e.contains("input ended"), "{e}");
        let answers = ask(
            &flags(dir.path()),
            &mut "nonsense\nlocalhost:4001\nx\ni\n".as_bytes(),
            &mut Vec::new(),
            true,
        )
        .expect("asked again");
        assert_eq!(answers.address, "localhost:4001");
        assert_eq!(answers.join, None);
    }

    #[test]
    fn quorums_as_seeds_explains_them() {
        assert!(quorum_note(2).contains("2 must be up, so it survives 0"));
        assert!(quorum_note(3).contains("survives 1"));
        assert!(quorum_note(5).contains("survives 2"));
    }
}
