//! raft-demo kvstore and logger, black-box: the line protocol over TCP (followers
//! forward writes, malformed lines get an error line and the connection stays usable),
//! -logfolder, -cpuprofile/-memprofile written at SIGTERM, and the logger: a learner
//! whose file equals a voter's committed sequence after the leader is SIGKILLed.

mod common;

use std::path::Path;

use common::{Proc, WAIT, eventually, free_ports, http, status, wait_for_membership};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const DEMO: &str = env!("CARGO_BIN_EXE_rkv-demo");

/// A line-protocol connection.
struct LineClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl LineClient {
    async fn connect(address: &str) -> LineClient {
        let stream = eventually(&format!("{address} accepts"), async || {
            TcpStream::connect(address).await
        })
        .await;
        let (read, writer) = stream.into_split();
        LineClient {
            reader: BufReader::new(read),
            writer,
        }
    }

    /// Sends `request` (bytes, a line end is added) and returns the reply line.
    async fn ask(&mut self, request: &[u8]) -> String {
        let mut line = request.to_vec();
        line.push(b'\n');
        tokio::time::timeout(WAIT, self.writer.write_all(&line))
            .await
            .expect("sent within the deadline")
            .expect("send");
        let mut reply = String::new();
        let read = tokio::time::timeout(WAIT, self.reader.read_line(&mut reply))
            .await
            .unwrap_or_else(|_| panic!("no reply to {request:?} within {WAIT:?}"))
            .expect("reply");
        assert!(
            read > 0,
            "the server closed the connection after {request:?}"
        );
        reply.trim_end_matches(['\r', '\n']).to_string()
    }
}

/// One kvstore node's addresses.
struct Addresses {
    name: String,
    port: String,
    raft: String,
    hjoin: String,
}

fn addresses(count: usize) -> Vec<Addresses> {
    let ports = free_ports(count * 3, 0);
    (0..count)
        .map(|i| Addresses {
            name: format!("node{i}"),
            port: format!("127.0.0.1:{}", ports[3 * i]),
            raft: format!("127.0.0.1:{}", ports[3 * i + 1]),
            hjoin: format!("127.0.0.1:{}", ports[3 * i + 2]),
        })
        .collect()
}

fn kvstore(node: &Addresses, join: Option<&str>, root: &Path, extra: &[&str]) -> Proc {
    let dir = root.join(&node.name).display().to_string();
    let mut args = vec![
        "kvstore",
        "-id",
        &node.name,
        "-port",
        &node.port,
        "-raft",
        &node.raft,
        "-hjoin",
        &node.hjoin,
        "-data-dir",
        &dir,
    ];
    if let Some(join) = join {
        args.extend(["-join", join]);
    }
    args.extend(extra);
    Proc::spawn(&node.name, DEMO, &args, root, root, false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_line_protocol_on_three_nodes_with_malformed_lines_and_profiles() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = addresses(3);
    let client = http();
    let (cpu, memory, folder) = (
        root.path().join("cpu.svg"),
        root.path().join("mem.txt"),
        root.path().join("requests"),
    );
    let profile_flags = [
        "-cpuprofile",
        cpu.to_str().expect("utf-8"),
        "-memprofile",
        memory.to_str().expect("utf-8"),
        "-logfolder",
        folder.to_str().expect("utf-8"),
    ];
    let mut first = kvstore(&nodes[0], None, root.path(), &profile_flags);
    wait_for_membership(&client, &nodes[0].hjoin, 1, 0).await;
    let second = kvstore(&nodes[1], Some(&nodes[0].hjoin), root.path(), &[]);
    let third = kvstore(&nodes[2], Some(&nodes[0].hjoin), root.path(), &[]);
    wait_for_membership(&client, &nodes[0].hjoin, 3, 0).await;

    // On a follower: writes are forwarded, reads are linearizable.
    let mut follower = LineClient::connect(&nodes[2].port).await;
    assert_eq!(follower.ask(b"set-colour-dark-blue").await, "OK");
    assert_eq!(follower.ask(b"get-colour").await, "VALUE dark-blue");
    let mut leader = LineClient::connect(&nodes[0].port).await;
    assert_eq!(leader.ask(b"get-colour").await, "VALUE dark-blue");
    assert_eq!(leader.ask(b"delete-colour").await, "OK deleted");
    assert_eq!(follower.ask(b"delete-colour").await, "OK absent");
    assert_eq!(follower.ask(b"get-colour").await, "NOTFOUND");
    assert_eq!(follower.ask(b"set-empty-").await, "OK");
    assert_eq!(leader.ask(b"get-empty").await, "VALUE ");

    // Malformed lines: an ERR line each, and the connection goes on.
    let long = [b"set-k-".as_slice(), &vec![b'x'; 2 * 1024 * 1024]].concat();
    for bad in [
        b"".as_slice(),
        b"hello",
        b"get-",
        b"get-a-b",
        b"set-novalue",
        b"set--v",
        b"delete-",
        b"\xff\xfe",
        &long,
    ] {
        let reply = follower.ask(bad).await;
        assert!(
            reply.starts_with("ERR "),
            "{:?} -> {reply}",
            &bad[..bad.len().min(16)]
        );
    }
    let too_large = [b"set-k-".as_slice(), &vec![b'x'; 1024 * 1024 + 1]].concat();
    let reply = follower.ask(&too_large).await;
    assert!(reply.starts_with("ERR too large"), "{reply}");
    assert_eq!(follower.ask(b"set-still-works").await, "OK");
    assert_eq!(leader.ask(b"get-still").await, "VALUE works");

    // -logfolder: the first node logged what it received.
    let received = std::fs::read_to_string(folder.join("node0.log")).expect("request log");
    assert!(
        received.contains("get-colour") && received.contains("delete-colour"),
        "{received}"
    );

    // SIGTERM: the profiles are written.
    assert_eq!(first.terminate().await, Some(0), "{}", first.errors());
    let svg = std::fs::read_to_string(&cpu).expect("cpu profile");
    assert!(
        svg.starts_with("<?xml") && svg.contains("<svg"),
        "{}",
        &svg[..svg.len().min(200)]
    );
    let stats = std::fs::read_to_string(&memory).expect("memory profile");
    assert!(
        stats.contains("VmHWM:") && stats.contains("VmRSS:"),
        "{stats}"
    );
    drop((second, third));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logger_writes_the_committed_sequence_across_a_leader_crash() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = addresses(4);
    let client = http();
    let mut procs = vec![kvstore(&nodes[0], None, root.path(), &[])];
    wait_for_membership(&client, &nodes[0].hjoin, 1, 0).await;
    procs.push(kvstore(&nodes[1], Some(&nodes[0].hjoin), root.path(), &[]));
    procs.push(kvstore(&nodes[2], Some(&nodes[0].hjoin), root.path(), &[]));
    wait_for_membership(&client, &nodes[0].hjoin, 3, 0).await;

    // rkv-demo logger -id log1 -raft :12003 -join :13000
    let log_file = root.path().join("log1.commands.log");
    let logger_dir = root.path().join("log1").display().to_string();
    let mut logger = Proc::spawn(
        "log1",
        DEMO,
        &[
            "logger",
            "-id",
            "log1",
            "-raft",
            &nodes[3].raft,
            "-hjoin",
            &nodes[3].hjoin,
            "-join",
            &nodes[0].hjoin,
            "-data-dir",
            &logger_dir,
            "-logfile",
            log_file.to_str().expect("utf-8"),
        ],
        root.path(),
        root.path(),
        false,
    );
    let seen = wait_for_membership(&client, &nodes[0].hjoin, 3, 1).await;
    assert_eq!(
        seen.learners,
        vec!["log1".to_string()],
        "the logger is a learner"
    );

    let leader_name = seen.leader.expect("a leader");
    let leader = nodes
        .iter()
        .position(|n| n.name == leader_name)
        .expect("known");
    let writer_node = (leader + 1) % 3;
    let mut expected = Vec::new();
    let mut connection = LineClient::connect(&nodes[writer_node].port).await;
    for i in 0..40 {
        if i == 20 {
            procs[leader].kill(); // SIGKILL, by pid
        }
        let request = format!("set-k{i}-v{i}");
        // Retry until acknowledged: an unknown outcome may apply twice (adjacent lines).
        eventually(
            &format!("{request} is acknowledged"),
            async || match connection.ask(request.as_bytes()).await.as_str() {
                "OK" => Ok(()),
                other => Err(other.to_string()),
            },
        )
        .await;
        expected.push(request);
    }
    let logged = eventually("the logger has every write", async || {
        let text = std::fs::read_to_string(&log_file).map_err(|e| e.to_string())?;
        let mut sets: Vec<String> = Vec::new();
        let mut last_index = 0;
        for line in text.lines() {
            let (index, command) = line.split_once(' ').ok_or(line.to_string())?;
            let index: u64 = index.parse().map_err(|_| line.to_string())?;
            assert!(index > last_index, "indices increase: {text}");
            last_index = index;
            if command.starts_with("set-") && sets.last().map(String::as_str) != Some(command) {
                sets.push(command.to_string());
            }
        }
        if sets.len() == expected.len() {
            Ok(sets)
        } else {
            Err(format!("{} of {}", sets.len(), expected.len()))
        }
    })
    .await;
    assert_eq!(logged, expected);

    // The logger never counts toward a quorum: with it gone too, the two voters go on.
    logger.kill();
    assert_eq!(connection.ask(b"set-after-logger").await, "OK");
    let survivor = &nodes[writer_node].hjoin;
    let s = status(&client, survivor).await.expect("status");
    assert_eq!(s.voters.len(), 3, "{s:?}");

    // The logger's file is exactly a voter's committed sequence: every command entry
    // up to the last one it logged, at the same index, in the same order (leader
    // crash, retries and all). The voter stops first, so its log can be read.
    let text = std::fs::read_to_string(&log_file).expect("the logger's file");
    let lines: Vec<&str> = text.lines().collect();
    let last_logged = rkv_demo::logger::last_logged_index(&log_file);
    procs[writer_node].terminate().await;
    let committed = committed_commands(
        &root.path().join(&nodes[writer_node].name).join("log"),
        last_logged,
    );
    assert_eq!(
        lines, committed,
        "the logger's file against the voter's log"
    );
    drop(procs);
}

/// Each command entry of the log in `dir` up to `last` (all committed: the logger had
/// applied them), as the logger writes it: `INDEX TEXT`.
fn committed_commands(dir: &Path, last: u64) -> Vec<String> {
    use rkv_log::{FileLog, FileLogOptions, LogStore};
    use rkv_raft::{Index, Payload};
    let (log, _, _) = FileLog::open_dir(dir, FileLogOptions::default()).expect("the voter's log");
    assert_eq!(log.first_index(), Index(1), "no snapshot compacted the log");
    assert!(
        log.last_index().0 >= last,
        "the voter has every logged entry"
    );
    let mut lines = Vec::new();
    let mut from = log.first_index();
    while from.0 <= last {
        let entries = log
            .entries(from, Index(last + 1), 1 << 20)
            .expect("entries");
        for entry in &entries {
            if let Payload::Command(command) = &entry.payload {
                lines.push(format!(
                    "{} {}",
                    entry.index.0,
                    rkv_demo::logger::describe(command)
                ));
            }
            from = entry.index.next();
        }
    }
    lines
}
