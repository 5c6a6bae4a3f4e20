//! Black-box tests of real `rkvd` processes on loopback: the original's command lines,
//! the rkvpb API as relab's rkvctl uses it, rkv.v1 reads at every level on every node,
//! kill -9 of the leader, restart from the data directory, and bad input.

mod common;

use std::time::Instant;

use common::{Cluster, WAIT, eventually, rkvd_output};
use rkv_wire::rkvpb::{InsertRequest, LookupRequest, RegisterRequest};
use rkv_wire::v1::{self, Consistency};
use tonic::Code;

/// Calls `f` on the leader, following not-leader answers, until it succeeds.
macro_rules! on_leader {
    ($cluster:expr, $client:ident, $call:expr) => {{
        let deadline = Instant::now() + WAIT;
        loop {
            let leader = $cluster.leader().await;
            let mut $client = $cluster.rkvpb(leader).await;
            match $call.await {
                Ok(response) => break response.into_inner(),
                Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                    continue;
                }
                Err(status) => panic!("call failed: {status}"),
            }
        }
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_rkvctl_calls_work_and_follow_not_leader_errors() {
    let cluster = Cluster::start(3, 3);
    let registered = on_leader!(cluster, c, c.register(RegisterRequest {}));
    assert!(registered.client_id > 0, "the session id is a log index");
    for seq in 1..=20u64 {
        let request = InsertRequest {
            client_id: registered.client_id,
            client_seq: seq,
            key: format!("key{}", seq % 5),
            value: format!("value{seq}"),
        };
        let inserted = on_leader!(cluster, c, c.insert(request.clone()));
        assert!(inserted.ok);
    }
    // A duplicate is acknowledged and not applied again.
    let stale = InsertRequest {
        client_id: registered.client_id,
        client_seq: 3,
        key: "key3".into(),
        value: "again".into(),
    };
    assert!(on_leader!(cluster, c, c.insert(stale.clone())).ok);
    let value = on_leader!(cluster, c, c.lookup(LookupRequest { key: "key3".into() })).value;
    assert_eq!(
        value, "value18",
        "the duplicate of seq 3 did not overwrite seq 18"
    );
    let missing = on_leader!(cluster, c, c.lookup(LookupRequest { key: "nope".into() })).value;
    assert_eq!(missing, "(none)");
    // A follower refuses with UNAVAILABLE and names the leader.
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let mut client = cluster.rkvpb(follower).await;
    let status = client
        .register(RegisterRequest {})
        .await
        .expect_err("followers do not lead");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status
            .metadata()
            .get("rkv-leader-id")
            .and_then(|v| v.to_str().ok()),
        Some(leader.to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_session_is_an_error_not_a_crash() {
    let cluster = Cluster::start(3, 3);
    let request = InsertRequest {
        client_id: 999_999,
        client_seq: 1,
        key: "k".into(),
        value: "v".into(),
    };
    let deadline = Instant::now() + WAIT;
    let status = loop {
        let leader = cluster.leader().await;
        match cluster.rkvpb(leader).await.insert(request.clone()).await {
            Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                continue;
            }
            Err(status) => break status,
            Ok(_) => panic!("an unknown session was accepted"),
        }
    };
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
    // The server is still serving.
    let leader = cluster.leader().await;
    assert!(
        cluster
            .rkvpb(leader)
            .await
            .register(RegisterRequest {})
            .await
            .is_ok()
    );
}

async fn put_on_leader(cluster: &Cluster, key: &str, value: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let leader = cluster.leader().await;
        let request = v1::PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            session: None,
        };
        match cluster.v1(leader).await.put(request).await {
            Ok(_) => return,
            Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                continue;
            }
            Err(status) => panic!("put {key}: {status}"),
        }
    }
}

async fn get(
    cluster: &Cluster,
    id: u64,
    key: &str,
    consistency: Consistency,
) -> Result<Option<String>, tonic::Status> {
    let request = v1::GetRequest {
        key: key.as_bytes().to_vec().into(),
        consistency: consistency.into(),
    };
    let response = cluster.v1(id).await.get(request).await?.into_inner();
    Ok(response
        .value
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_loses_nothing_and_the_node_resumes_from_its_directory() {
    let mut cluster = Cluster::start(3, 3);
    for i in 0..30 {
        put_on_leader(&cluster, &format!("k{i}"), &format!("v{i}")).await;
    }
    let old = cluster.leader().await;
    cluster.kill(old);
    put_on_leader(&cluster, "after", "failover").await;
    let new = cluster.leader().await;
    assert_ne!(new, old, "a new leader took over");
    cluster.boot(old);
    // The restarted node catches up and serves linearizable reads with everything.
    let value = eventually("the restarted node serves reads", async || {
        match get(&cluster, old, "after", Consistency::Linearizable).await {
            Ok(Some(v)) => Ok(v),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(value, "failover");
    for id in 1..=3 {
        for i in [0, 17, 29] {
            let value = get(&cluster, id, &format!("k{i}"), Consistency::Linearizable)
                .await
                .expect("read");
            assert_eq!(value, Some(format!("v{i}")), "node {id} key k{i}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_at_every_level_on_every_node_and_compare_and_swap() {
    let cluster = Cluster::start(3, 3);
    put_on_leader(&cluster, "x", "1").await;
    for id in 1..=3 {
        assert_eq!(
            get(&cluster, id, "x", Consistency::Linearizable)
                .await
                .expect("read"),
            Some("1".into())
        );
    }
    // Lease reads on a follower are confirmed by the leader; a stale read after a
    // linearizable one on the same node cannot go back in time.
    for id in 1..=3 {
        for level in [Consistency::Lease, Consistency::Stale] {
            let value = get(&cluster, id, "x", level).await.expect("read");
            assert_eq!(value, Some("1".into()), "node {id} at {level:?}");
        }
    }
    let leader = cluster.leader().await;
    let mut client = cluster.v1(leader).await;
    let cas = |expected: Option<&str>, new: &str| v1::CompareAndSwapRequest {
        key: b"x".to_vec().into(),
        expected: expected.map(|e| e.as_bytes().to_vec().into()),
        new: Some(new.as_bytes().to_vec().into()),
        session: None,
    };
    let swapped = client
        .compare_and_swap(cas(Some("1"), "2"))
        .await
        .expect("cas")
        .into_inner();
    assert!(swapped.swapped);
    let refused = client
        .compare_and_swap(cas(Some("1"), "3"))
        .await
        .expect("cas")
        .into_inner();
    assert!(!refused.swapped);
    assert_eq!(refused.previous.as_deref(), Some(&b"2"[..]));
    let scan = client
        .scan(v1::ScanRequest {
            selector: None,
            limit: 10,
            consistency: Consistency::Linearizable.into(),
        })
        .await
        .expect("scan")
        .into_inner();
    assert_eq!(scan.kvs.len(), 1);
    let status = client
        .status(v1::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.role, v1::Role::Leader as i32);
    assert_eq!(status.members.len(), 3);
}

#[test]
fn bad_flags_and_foreign_data_directories_are_refused_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = rkvd_output(&["-id", "1", "-backend", "paxos"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown backend"));
    let out = rkvd_output(&["-id", "9", "-servers", ":1,:2"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-id 9"));
    let out = rkvd_output(&["-backend", "etcd", "-id", "1"], dir.path());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not available yet"));
    // A directory made by node 1 is refused to node 2.
    std::fs::create_dir_all(dir.path().join("d")).expect("dir");
    std::fs::write(
        dir.path().join("d/identity"),
        "cluster_id=0000000000000001\nnode_id=1\n",
    )
    .expect("write");
    let out = rkvd_output(
        &["-id", "2", "-data-dir", "d", "-servermetrics=false"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("belongs to node 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads a whole HTTP/1.0 response from `address` (the metrics endpoint speaks HTTP/1.1).
async fn http_get(address: &str, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_in_prometheus_text_format() {
    let port = common::free_port();
    let metrics = format!("127.0.0.1:{port}");
    // Only server 1 serves metrics (the others would clash on one address).
    let mut cluster = Cluster::start_with(3, 3, &["-servermetrics=false"]);
    cluster.kill(1);
    cluster.extra_args = vec!["-metrics-addr".into(), metrics.clone()];
    cluster.boot(1);
    for i in 0..5 {
        put_on_leader(&cluster, &format!("m{i}"), "x").await;
    }
    let body = eventually("metrics", async || {
        match http_get(&metrics, "/metrics").await {
            Ok(body) if body.contains("rkv_applied_entries_total") => Ok(body),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        body.starts_with("HTTP/1.1 200") || body.starts_with("HTTP/1.0 200"),
        "{body}"
    );
    for name in [
        "rkv_term",
        "rkv_commit_index",
        "rkv_applied_index",
        "rkv_log_durable_seconds",
        "rkv_role",
    ] {
        assert!(body.contains(name), "{name} missing from:\n{body}");
    }
}

/// A membership change through rkv.v1.
#[derive(Clone, Copy, Debug)]
enum Change {
    Add(u64),
    Promote(u64),
    Remove(u64),
}

/// Asks the leader for `change` until it is accepted (the leader may change, and a
/// promotion is refused until the learner has caught up).
async fn change_members(cluster: &Cluster, change: Change) -> Vec<v1::Member> {
    eventually(&format!("{change:?}"), async || {
        let leader = cluster.leader().await;
        let mut client = cluster.v1(leader).await;
        match change {
            Change::Add(id) => client
                .member_add(v1::MemberAddRequest {
                    id,
                    address: String::new(),
                    as_learner: true,
                })
                .await
                .map(|r| r.into_inner().members),
            Change::Promote(id) => client
                .member_promote(v1::MemberPromoteRequest { id })
                .await
                .map(|r| r.into_inner().members),
            Change::Remove(id) => client
                .member_remove(v1::MemberRemoveRequest { id })
                .await
                .map(|r| r.into_inner().members),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_server_joins_as_a_learner_is_promoted_and_a_member_is_removed() {
    let mut cluster = Cluster::start(4, 3);
    for i in 0..20 {
        put_on_leader(&cluster, &format!("j{i}"), "before").await;
    }
    cluster.boot(4);
    let members = change_members(&cluster, Change::Add(4)).await;
    assert!(
        members.iter().any(|m| m.id == 4 && m.is_learner),
        "{members:?}"
    );
    let members = change_members(&cluster, Change::Promote(4)).await;
    assert!(
        members.iter().any(|m| m.id == 4 && !m.is_learner),
        "{members:?}"
    );
    // The new voter serves linearizable reads with everything written before it joined
    // (once it knows the leader: on a loaded machine an election may be under way).
    let value = eventually("a linearizable read on the new voter", async || {
        get(&cluster, 4, "j7", Consistency::Linearizable).await
    })
    .await;
    assert_eq!(value, Some("before".into()));
    // Remove a follower (not the leader) and keep writing with the other three.
    let leader = cluster.leader().await;
    let victim = (1..=3).find(|id| *id != leader).expect("a follower");
    let members = change_members(&cluster, Change::Remove(victim)).await;
    assert!(!members.iter().any(|m| m.id == victim), "{members:?}");
    cluster.kill(victim);
    put_on_leader(&cluster, "after", "removal").await;
    assert_eq!(
        get(&cluster, 4, "after", Consistency::Linearizable)
            .await
            .expect("read"),
        Some("removal".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_replays_past_changes_then_streams_new_ones() {
    let cluster = Cluster::start(3, 3);
    put_on_leader(&cluster, "w", "1").await;
    put_on_leader(&cluster, "other", "x").await;
    put_on_leader(&cluster, "w", "2").await;
    // Watch from the beginning on a follower: the past comes first, in order, filtered.
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let mut stream = eventually("a watch on a follower", async || {
        let request = v1::WatchRequest {
            filter: Some(v1::watch_request::Filter::Key(b"w".to_vec().into())),
            start_index: 1,
        };
        cluster
            .v1(follower)
            .await
            .watch(request)
            .await
            .map(|r| r.into_inner())
    })
    .await;
    let mut values = Vec::new();
    while values.len() < 3 {
        let response = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("in time")
            .expect("stream")
            .expect("open");
        values.extend(
            response
                .events
                .iter()
                .map(|e| String::from_utf8_lossy(&e.value).into_owned()),
        );
        if values.len() == 2 {
            put_on_leader(&cluster, "w", "3").await;
        }
    }
    assert_eq!(values, ["1", "2", "3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_writes_to_the_leader() {
    let cluster = Cluster::start(3, 3);
    put_on_leader(&cluster, "warm", "up").await;
    let leader = cluster.leader().await;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let mut client = cluster.v1(followers[0]).await;
    let put = v1::PutRequest {
        key: b"via".to_vec().into(),
        value: b"follower".to_vec().into(),
        session: None,
    };
    client
        .put(put)
        .await
        .expect("a follower accepts a write and forwards it");
    let swapped = client
        .compare_and_swap(v1::CompareAndSwapRequest {
            key: b"via".to_vec().into(),
            expected: Some(b"follower".to_vec().into()),
            new: Some(b"swapped".to_vec().into()),
            session: None,
        })
        .await
        .expect("forwarded compare-and-swap")
        .into_inner();
    assert!(swapped.swapped);
    assert_eq!(
        get(&cluster, followers[1], "via", Consistency::Linearizable)
            .await
            .expect("read"),
        Some("swapped".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_refused_and_the_server_keeps_serving() {
    let cluster = Cluster::start_with(3, 3, &["-servermetrics=false", "-maxgrpc", "4096"]);
    put_on_leader(&cluster, "small", "ok").await;
    let leader = cluster.leader().await;
    let huge = v1::PutRequest {
        key: b"big".to_vec().into(),
        value: vec![b'x'; 64 * 1024].into(),
        session: None,
    };
    let status = cluster
        .v1(leader)
        .await
        .put(huge)
        .await
        .expect_err("over -maxgrpc");
    assert!(
        matches!(
            status.code(),
            Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument
        ),
        "{status}"
    );
    assert_eq!(
        get(&cluster, leader, "small", Consistency::Linearizable)
            .await
            .expect("still serving"),
        Some("ok".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_far_larger_than_the_codec_buffers_round_trip() {
    // The gRPC codec starts every call with a small buffer (rkv_wire::codec); a value
    // thousands of times its size must still arrive whole, both ways.
    let cluster = Cluster::start_with(3, 3, &["-servermetrics=false"]);
    let value: String = (0..1_000_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    put_on_leader(&cluster, "large", &value).await;
    let leader = cluster.leader().await;
    let read = get(&cluster, leader, "large", Consistency::Linearizable)
        .await
        .expect("read back");
    // Compared without printing a megabyte on failure.
    assert_eq!(read.as_ref().map(String::len), Some(value.len()));
    assert!(
        read.as_deref() == Some(value.as_str()),
        "the value came back changed"
    );
}
