//! raft-demo chat room, black-box: three replicas, two clients each connected to two of
//! them (one replica shared), both typing at once: each client prints every message
//! exactly once, and both print them in the same order (the log's). Plus a client with
//! a bad config file, and a raw connection sending junk.

mod common;

use common::{Proc, WAIT, eventually, free_ports, http, wait_for_membership};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const DEMO: &str = env!("CARGO_BIN_EXE_rkv-demo");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_on_different_replicas_see_every_message_once_in_one_order() {
    let root = tempfile::tempdir().expect("temp dir");
    let ports = free_ports(9, 0);
    let chat: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", ports[i])).collect();
    let raft: Vec<String> = (0..3)
        .map(|i| format!("127.0.0.1:{}", ports[3 + i]))
        .collect();
    let hjoin: Vec<String> = (0..3)
        .map(|i| format!("127.0.0.1:{}", ports[6 + i]))
        .collect();
    let client = http();
    let mut servers = Vec::new();
    for i in 0..3 {
        let name = format!("node{i}");
        let dir = root.path().join(&name).display().to_string();
        let mut args = vec![
            "chatroom",
            "-id",
            &name,
            "-port",
            &chat[i],
            "-raft",
            &raft[i],
            "-hjoin",
            &hjoin[i],
            "-data-dir",
            &dir,
        ];
        if i > 0 {
            args.extend(["-join", &hjoin[0]]);
        }
        servers.push(Proc::spawn(
            &name,
            DEMO,
            &args,
            root.path(),
            root.path(),
            false,
        ));
        wait_for_membership(&client, &hjoin[0], i + 1, 0).await;
    }

    // One client on replicas 0 and 1, the other on 2 and 1: each hears every message
    // twice and must print it once.
    let mut clients = Vec::new();
    for (name, servers) in [("ann", [&chat[0], &chat[1]]), ("bob", [&chat[2], &chat[1]])] {
        let config = root.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "rep=2\nsvrIps=[\"{}\", \"{}\"]\nmqueueSize=100\n",
                servers[0], servers[1]
            ),
        )
        .expect("config");
        let config = config.display().to_string();
        let args = ["chat", "-config", &config, "-name", name];
        clients.push(Proc::spawn(
            name,
            DEMO,
            &args,
            root.path(),
            root.path(),
            true,
        ));
    }
    for c in &clients {
        eventually(&format!("{} joins the room", c.name), async || {
            if c.errors().contains("connected to 2 server(s)") {
                Ok(())
            } else {
                Err(c.errors())
            }
        })
        .await;
    }
    let sent = 8;
    for i in 0..sent {
        clients[0].type_in(&format!("message {i} from ann\n"));
        clients[1].type_in(&format!("message {i} from bob\n"));
    }
    let mut seen = Vec::new();
    for c in &clients {
        let lines = eventually(&format!("{} prints every message", c.name), async || {
            let output = c.output();
            let lines: Vec<String> = output.lines().map(String::from).collect();
            if lines.len() >= 2 * sent {
                Ok(lines)
            } else {
                Err(format!("{output:?} / {}", c.errors()))
            }
        })
        .await;
        seen.push(lines);
    }
    assert_eq!(seen[0], seen[1], "both clients print the log's order");
    let mut expected: Vec<String> = (0..sent)
        .flat_map(|i| {
            [
                format!("ann: message {i} from ann"),
                format!("bob: message {i} from bob"),
            ]
        })
        .collect();
    let mut printed = seen[0].clone();
    printed.sort();
    expected.sort();
    assert_eq!(printed, expected, "every message exactly once");
    // Each sender's own messages keep their order.
    for name in ["ann", "bob"] {
        let own: Vec<&String> = seen[0].iter().filter(|l| l.starts_with(name)).collect();
        let mut sorted = own.clone();
        sorted.sort();
        assert_eq!(own, sorted, "{name}'s messages in the order typed");
    }

    // A raw connection: a greeting, then junk and an oversized line get notices, and
    // the connection still works.
    let stream = within(tokio::net::TcpStream::connect(&chat[2]))
        .await
        .expect("connect");
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    within(reader.read_line(&mut line)).await.expect("greeting");
    assert!(line.starts_with("! joined the room on node2"), "{line}");
    let mut junk = vec![b'x'; 100 * 1024];
    junk.push(b'\n');
    within(write.write_all(&junk)).await.expect("send");
    within(write.write_all(b"\xff\xfe raw bytes\n"))
        .await
        .expect("send");
    // Lines broadcast for messages committed since this connection joined may come
    // first: skip them (boundedly), in order, until the notice and then the raw message.
    let mut notice = false;
    let mut raw_seen = false;
    for _ in 0..1000 {
        let mut raw = Vec::new();
        within(reader.read_until(b'\n', &mut raw))
            .await
            .expect("a line: the notice, then the raw message");
        if raw.starts_with(b"! error: a message is at most") {
            notice = true;
        } else if raw.ends_with(b"\xff\xfe raw bytes\n") {
            assert!(notice, "the notice for the oversized line comes first");
            raw_seen = true;
            break;
        }
    }
    assert!(notice && raw_seen, "the notice and the raw message arrive");
    drop((clients, servers));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_client_config_is_refused_with_a_message() {
    let root = tempfile::tempdir().expect("temp dir");
    for (name, text, expected) in [
        ("notoml", "rep=[", "client.toml"),
        (
            "norep",
            "rep=0\nsvrIps=[\"127.0.0.1:1\"]\nmqueueSize=10\n",
            "rep must be",
        ),
        (
            "nobody",
            "rep=1\nsvrIps=[\"127.0.0.1:1\"]\nmqueueSize=10\n",
            "no server",
        ),
    ] {
        std::fs::write(root.path().join("client.toml"), text).expect("config");
        let mut c = Proc::spawn(
            name,
            DEMO,
            &["chat", "-config", "client.toml"],
            root.path(),
            root.path(),
            false,
        );
        assert_eq!(c.wait_exit().await, Some(1), "{name}");
        assert!(c.errors().contains(expected), "{name}: {}", c.errors());
    }
    let mut usage = Proc::spawn(
        "usage",
        DEMO,
        &["teleport"],
        root.path(),
        root.path(),
        false,
    );
    assert_eq!(usage.wait_exit().await, Some(2));
    assert!(
        usage.errors().contains("unknown subcommand"),
        "{}",
        usage.errors()
    );
}

/// `io`, or a panic if it takes longer than [`WAIT`]: a server that stops answering
/// fails the test instead of hanging it.
async fn within<T>(io: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, io)
        .await
        .unwrap_or_else(|_| panic!("no answer within {WAIT:?}"))
}
