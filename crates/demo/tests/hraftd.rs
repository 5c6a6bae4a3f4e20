//! hraftd black-box: the README's command lines and curl calls, over real HTTP, on
//! three processes; forwarding from a follower; reads at three levels; JSON errors with
//! fitting statuses; a restarted cluster that ignores -join and still knows every
//! address.

mod common;

use common::{Proc, call, eventually, free_ports, http, status, wait_for_membership};
use hyper::{Method, StatusCode};

const HRAFTD: &str = env!("CARGO_BIN_EXE_hraftd");

struct Node {
    name: String,
    haddr: String,
    raddr: String,
    dir: String,
}

/// node0..node2 in directories under `root`: HTTP on `ports[0..3]`, Raft on `ports[3..6]`.
fn three_nodes(root: &std::path::Path, ports: &[u16]) -> Vec<Node> {
    (0..3)
        .map(|i| Node {
            name: format!("node{i}"),
            haddr: format!("127.0.0.1:{}", ports[i]),
            raddr: format!("127.0.0.1:{}", ports[i + 3]),
            dir: root.join(format!("node{i}")).display().to_string(),
        })
        .collect()
}

fn start(node: &Node, join: Option<&str>, root: &std::path::Path) -> Proc {
    let mut args = vec![
        "-id",
        &node.name,
        "-haddr",
        &node.haddr,
        "-raddr",
        &node.raddr,
    ];
    if let Some(join) = join {
        args.extend(["-join", join]);
    }
    args.push(&node.dir);
    Proc::spawn(&node.name, HRAFTD, &args, root, root, false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_session_works_with_forwarding_errors_and_restarts() {
    let root = tempfile::tempdir().expect("temp dir");
    let ports = free_ports(6, 0);
    let nodes = three_nodes(root.path(), &ports);
    let client = http();
    // hraftd -id node0 ~/node0; then node1 joins through node0, node2 through node1
    // (a follower: the join is forwarded to the leader).
    let mut procs = vec![start(&nodes[0], None, root.path())];
    wait_for_membership(&client, &nodes[0].haddr, 1, 0).await;
    procs.push(start(&nodes[1], Some(&nodes[0].haddr), root.path()));
    wait_for_membership(&client, &nodes[0].haddr, 2, 0).await;
    procs.push(start(&nodes[2], Some(&nodes[1].haddr), root.path()));
    let seen = wait_for_membership(&client, &nodes[2].haddr, 3, 0).await;
    // node0 usually still leads, but a busy machine may have elected another: any
    // leader will do, and the writes below go to a node that was not leading.
    let leader = seen.leader.expect("a leader");
    let follower = nodes
        .iter()
        .rposition(|n| n.name != leader)
        .expect("two of three do not lead");

    // curl -XPOST localhost:11001/key -d '{"user1": "batman"}' (to a follower: forwarded)
    let (code, body) = call(
        &client,
        Method::POST,
        &nodes[follower].haddr,
        "/key",
        r#"{"user1": "batman", "user2": "robin"}"#,
    )
    .await
    .expect("post");
    assert_eq!(code, StatusCode::OK, "{body}");
    // curl -XGET localhost:11000/key/user1, on every node, at every level.
    for node in &nodes {
        for path in ["/key/user1", "/key/user1?level=lease"] {
            let (code, body) = call(&client, Method::GET, &node.haddr, path, "")
                .await
                .expect("get");
            assert_eq!(
                (code, body.as_str()),
                (StatusCode::OK, r#"{"user1":"batman"}"#),
                "{path} on {}",
                node.name
            );
        }
        let stale = eventually("a stale read catches up", async || {
            match call(
                &client,
                Method::GET,
                &node.haddr,
                "/key/user2?level=stale",
                "",
            )
            .await
            {
                Ok((StatusCode::OK, body)) => Ok(body),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        assert_eq!(stale, r#"{"user2":"robin"}"#);
    }
    // curl -XDELETE localhost:11000/key/user1 (to a follower), then it is gone.
    let (code, _) = call(
        &client,
        Method::DELETE,
        &nodes[follower].haddr,
        "/key/user1",
        "",
    )
    .await
    .expect("delete");
    assert_eq!(code, StatusCode::OK);
    let (code, body) = call(&client, Method::GET, &nodes[0].haddr, "/key/user1", "")
        .await
        .expect("get");
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(body.contains("\"error\""), "{body}");

    // Errors: JSON bodies with fitting statuses, and the node keeps serving.
    let cases = [
        (Method::POST, "/key", "{not json", StatusCode::BAD_REQUEST),
        (
            Method::POST,
            "/key",
            r#"["a","b"]"#,
            StatusCode::BAD_REQUEST,
        ),
        (Method::POST, "/key", r#"{"k": 5}"#, StatusCode::BAD_REQUEST),
        (Method::POST, "/key", "{}", StatusCode::BAD_REQUEST),
        (
            Method::GET,
            "/key/user2?level=eventual",
            "",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/join",
            r#"{"addr": 7}"#,
            StatusCode::BAD_REQUEST,
        ),
        (Method::GET, "/key/%FF", "", StatusCode::BAD_REQUEST),
        (Method::DELETE, "/key/%FF", "", StatusCode::BAD_REQUEST),
    ];
    for (method, path, body, expected) in cases {
        let (code, answer) = call(&client, method.clone(), &nodes[1].haddr, path, body)
            .await
            .expect("call");
        assert_eq!(code, expected, "{method} {path} {body}: {answer}");
        let parsed: serde_json::Value = serde_json::from_str(&answer).expect("a JSON error");
        assert!(parsed["error"].is_string(), "{answer}");
    }
    let huge = format!(r#"{{"big": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let (code, answer) = call(&client, Method::POST, &nodes[1].haddr, "/key", &huge)
        .await
        .expect("call");
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    let too_big = format!(r#"{{"big": "{}"}}"#, "x".repeat(7 * 1024 * 1024));
    let (code, answer) = call(&client, Method::POST, &nodes[1].haddr, "/key", &too_big)
        .await
        .expect("call");
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");

    // With a quorum gone there is no leader: writes answer 503, as JSON.
    procs[0].kill();
    procs[1].kill();
    let (code, answer) = call(
        &client,
        Method::POST,
        &nodes[2].haddr,
        "/key",
        r#"{"a":"b"}"#,
    )
    .await
    .expect("call");
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");

    // Restart everyone (node1 and node2 with their -join again: ignored). The cluster
    // comes back from the data directories alone: each node knows every address.
    procs[2].kill();
    let mut procs = vec![
        start(&nodes[0], None, root.path()),
        start(&nodes[1], Some(&nodes[0].haddr), root.path()),
        start(&nodes[2], Some(&nodes[1].haddr), root.path()),
    ];
    let after = wait_for_membership(&client, &nodes[1].haddr, 3, 0).await;
    assert!(after.leader.is_some());
    // The operator is told, on stderr, that the -join it gave was not used.
    eventually("node1 says -join is ignored", async || {
        let errors = procs[1].errors();
        if errors.contains("-join is ignored") {
            Ok(())
        } else {
            Err(errors)
        }
    })
    .await;
    let value = eventually("the data survives the restart", async || {
        match call(&client, Method::GET, &nodes[2].haddr, "/key/user2", "").await {
            Ok((StatusCode::OK, body)) => Ok(body),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(value, r#"{"user2":"robin"}"#);
    let s = status(&client, &nodes[0].haddr).await.expect("status");
    assert_eq!(
        s.voters.len(),
        3,
        "no new member from the ignored -join: {s:?}"
    );
    procs.clear();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_command_line_is_refused_with_a_message() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut missing_dir = Proc::spawn(
        "nodir",
        HRAFTD,
        &["-id", "node0"],
        root.path(),
        root.path(),
        false,
    );
    assert_eq!(missing_dir.wait_exit().await, Some(2));
    assert!(
        missing_dir.errors().contains("DIR"),
        "{}",
        missing_dir.errors()
    );
    let mut bad_address = Proc::spawn(
        "badaddr",
        HRAFTD,
        &["-id", "node0", "-haddr", "nowhere", "d"],
        root.path(),
        root.path(),
        false,
    );
    assert_eq!(bad_address.wait_exit().await, Some(1));
    assert!(
        bad_address.errors().contains("nowhere"),
        "{}",
        bad_address.errors()
    );
}

/// Regression: `/internal/propose` used to apply any command (address-book entries,
/// session registrations) from anyone, for any cluster. It takes only writes, only with
/// this cluster's id and this node's id in the member headers; a join naming another
/// cluster is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_calls_from_another_cluster_or_with_other_commands_are_refused() {
    use bytes::Bytes;
    use rkv_demo::replica::{CLUSTER_HEADER, TARGET_HEADER};
    use rkv_kv::{Command, PeerRecord, PeerRole, WriteOp};

    let root = tempfile::tempdir().expect("temp dir");
    let ports = free_ports(2, 0);
    let node = Node {
        name: "node0".into(),
        haddr: format!("127.0.0.1:{}", ports[0]),
        raddr: format!("127.0.0.1:{}", ports[1]),
        dir: root.path().join("node0").display().to_string(),
    };
    let _proc = start(&node, None, root.path());
    let client = http();
    wait_for_membership(&client, &node.haddr, 1, 0).await;
    let identity = rkv_server::identity::read(std::path::Path::new(&node.dir))
        .expect("identity readable")
        .expect("identity written");
    let cluster = format!("{:016x}", identity.cluster_id);
    let other_cluster = format!("{:016x}", identity.cluster_id ^ 1);
    let own_id = identity.node_id.to_string();
    let other_id = (identity.node_id ^ 1).to_string();
    let write = Bytes::from(
        Command::Write {
            now_ms: 1,
            session: None,
            op: WriteOp::Put {
                key: Bytes::from("k"),
                value: Bytes::from("v"),
            },
        }
        .encode(),
    );
    let set_peer = Bytes::from(
        Command::SetPeer {
            now_ms: 1,
            node_id: 42,
            record: Some(PeerRecord {
                name: "intruder".into(),
                peer_address: "127.0.0.1:1".into(),
                client_address: String::new(),
                role: PeerRole::Voter,
                incarnation: 0,
            }),
        }
        .encode(),
    );
    let propose = async |headers: &[(&str, &str)], body: &Bytes| {
        let (code, body) = client
            .call(
                Method::POST,
                &node.haddr,
                "/internal/propose",
                headers,
                body.clone(),
            )
            .await
            .expect("call");
        (code, String::from_utf8_lossy(&body).into_owned())
    };
    let (code, body) = propose(&[], &write).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "no cluster header: {body}");
    let (code, body) = propose(
        &[(CLUSTER_HEADER, &other_cluster), (TARGET_HEADER, &own_id)],
        &write,
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("cluster"), "{body}");
    let (code, body) = propose(
        &[(CLUSTER_HEADER, &cluster), (TARGET_HEADER, &other_id)],
        &write,
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT, "another target: {body}");
    let (code, body) = propose(
        &[(CLUSTER_HEADER, &cluster), (TARGET_HEADER, &own_id)],
        &set_peer,
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("only writes"), "{body}");
    let (_, status_body) = call(&client, Method::GET, &node.haddr, "/status", "")
        .await
        .expect("status");
    assert!(!status_body.contains("intruder"), "{status_body}");
    let (code, body) = propose(
        &[(CLUSTER_HEADER, &cluster), (TARGET_HEADER, &own_id)],
        &write,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "a member's write: {body}");

    // A join forwarded by a node of another cluster.
    let join = Bytes::from(r#"{"id": "node9", "addr": "127.0.0.1:1"}"#);
    let (code, body) = client
        .call(
            Method::POST,
            &node.haddr,
            "/join",
            &[(CLUSTER_HEADER, &other_cluster)],
            join,
        )
        .await
        .expect("join call");
    assert_eq!(
        code,
        StatusCode::CONFLICT,
        "{}",
        String::from_utf8_lossy(&body)
    );
}

/// Regression: a node restarted from its directory with a new Raft address was never
/// re-advertised: the others kept dialling the old one and it received nothing more.
/// It now sends its join again (same incarnation), and the cluster records the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_at_a_new_address_is_reached_there() {
    let root = tempfile::tempdir().expect("temp dir");
    let ports = free_ports(7, 0);
    let mut nodes = three_nodes(root.path(), &ports);
    let client = http();
    let mut procs = vec![start(&nodes[0], None, root.path())];
    wait_for_membership(&client, &nodes[0].haddr, 1, 0).await;
    procs.push(start(&nodes[1], Some(&nodes[0].haddr), root.path()));
    wait_for_membership(&client, &nodes[0].haddr, 2, 0).await;
    procs.push(start(&nodes[2], Some(&nodes[0].haddr), root.path()));
    wait_for_membership(&client, &nodes[0].haddr, 3, 0).await;

    // node2 stops and comes back from its directory with another Raft address.
    procs[2].terminate().await;
    nodes[2].raddr = format!("127.0.0.1:{}", ports[6]);
    procs[2] = start(&nodes[2], None, root.path());
    let written = eventually("a write commits", async || {
        match call(
            &client,
            Method::POST,
            &nodes[0].haddr,
            "/key",
            r#"{"moved": "yes"}"#,
        )
        .await
        {
            Ok((StatusCode::OK, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    written.await;
    // It receives the log at its new address: a stale read there sees the write.
    eventually(
        "node2 applies the write at its new address",
        async || match call(
            &client,
            Method::GET,
            &nodes[2].haddr,
            "/key/moved?level=stale",
            "",
        )
        .await
        {
            Ok((StatusCode::OK, body)) if body.contains("yes") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    drop(procs);
}
