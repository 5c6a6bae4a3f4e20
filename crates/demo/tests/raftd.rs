//! raftd black-box: the SEEDS.md session driven through stdin (init, then a second and a
//! third node joining, one through a follower), the HTTP API, quorum explanations, a
//! restart that resumes without asking, and answers that make no sense.

mod common;

use common::{Proc, call, eventually, free_ports, http, wait_for_membership};
use hyper::{Method, StatusCode};

const RAFTD: &str = env!("CARGO_BIN_EXE_raftd");
const OFFSET: u16 = 1000;

fn raftd(name: &str, dir: &std::path::Path, logs: &std::path::Path) -> Proc {
    std::fs::create_dir_all(dir).expect("node dir");
    Proc::spawn(name, RAFTD, &[], dir, logs, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_session_init_join_join_and_resume() {
    let root = tempfile::tempdir().expect("temp dir");
    let ports = free_ports(3, OFFSET);
    let address: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let dirs: Vec<_> = (1..=3)
        .map(|i| root.path().join(format!("raftd.{i}")))
        .collect();
    let client = http();

    // $ mkdir ~/raftd.1 && cd ~/raftd.1 && raftd
    let mut one = raftd("raftd1", &dirs[0], root.path());
    one.wait_for_output("Enter host:port> ").await;
    one.type_in(&format!("{}\n", address[0]));
    one.wait_for_output("Initialize or join? [ij] ").await;
    one.type_in("i\n");
    let transcript = one.wait_for_output("New raftd cluster created.").await;
    assert!(
        transcript.starts_with(&format!(
            "Enter host:port> {}\nInitialize or join? [ij] i\nNew raftd cluster created.\n",
            address[0]
        )),
        "{transcript}"
    );

    let mut two = raftd("raftd2", &dirs[1], root.path());
    two.type_in(&format!("{}\nj\n{}\n", address[1], address[0]));
    let transcript = two.wait_for_output("Joining cluster... joined.").await;
    assert!(transcript.contains("Server to join: "), "{transcript}");
    // Two nodes: both must be up (SEEDS.md's quorum explanation).
    let note = two.wait_for_output("survives").await;
    assert!(note.contains("2 must be up, so it survives 0"), "{note}");
    wait_for_membership(&client, &address[0], 2, 0).await;

    // The third joins through the second (a follower): forwarded to the leader.
    let mut three = raftd("raftd3", &dirs[2], root.path());
    three.type_in(&format!("{}\nj\n{}\n", address[2], address[1]));
    let note = three.wait_for_output("survives").await;
    assert!(note.contains("2 must be up, so it survives 1"), "{note}");
    wait_for_membership(&client, &address[2], 3, 0).await;

    // The HTTP API: POST /db/{key} on a follower, GET on every node.
    let (code, body) = call(&client, Method::POST, &address[2], "/db/foo", "bar")
        .await
        .expect("post");
    assert_eq!(code, StatusCode::OK, "{body}");
    for a in &address {
        let (code, body) = call(&client, Method::GET, a, "/db/foo", "")
            .await
            .expect("get");
        assert_eq!((code, body.as_str()), (StatusCode::OK, "bar"), "{a}");
    }
    let (code, _) = call(&client, Method::GET, &address[0], "/db/nothing", "")
        .await
        .expect("get");
    assert_eq!(code, StatusCode::NOT_FOUND);

    // One of three may fail: kill the first (the leader); the others go on.
    one.kill();
    eventually("writes go on without the first node", async || match call(
        &client,
        Method::POST,
        &address[1],
        "/db/after",
        "crash",
    )
    .await
    {
        Ok((StatusCode::OK, _)) => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await;

    // Restarted in the same directory, it resumes without asking (stdin is closed).
    let mut again = raftd("raftd1-again", &dirs[0], root.path());
    again.close_stdin();
    let transcript = again
        .wait_for_output(&format!("Resuming raftd node {}.", address[0]))
        .await;
    assert!(!transcript.contains("Enter host:port"), "{transcript}");
    let value = eventually(
        "the restarted node serves what it missed",
        async || match call(&client, Method::GET, &address[0], "/db/after", "").await {
            Ok((StatusCode::OK, body)) => Ok(body),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    assert_eq!(value, "crash");
    drop((two, three, again));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_make_no_sense_are_refused_off_a_terminal() {
    let root = tempfile::tempdir().expect("temp dir");
    for (name, answers, expected) in [
        ("noaddress", "not an address\n", "is not host:port"),
        ("badchoice", "127.0.0.1:1\nmaybe\n", "please answer i or j"),
        ("noanswer", "127.0.0.1:1\n", "input ended"),
    ] {
        let mut node = raftd(name, &root.path().join(name), root.path());
        node.type_in(answers);
        node.close_stdin();
        assert_eq!(node.wait_exit().await, Some(2), "{name}");
        assert!(
            node.errors().contains(expected),
            "{name}: {}",
            node.errors()
        );
        assert!(
            !root.path().join(name).join("identity").exists(),
            "{name}: nothing is created before the questions are answered"
        );
    }
}
