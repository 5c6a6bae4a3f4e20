//! The client against the server: calls of every shape over one shared connection,
//! windows smaller than the messages, cancellation, lost and refused connections.

mod common;

use std::time::Duration;

use common::{TestServer, WAIT};
use rkv_grpc::{Channel, ChannelConfig, NOT_SENT_KEY, ServerConfig};
use tonic::Code;

fn channel(server: &TestServer) -> Channel {
    Channel::lazy(&server.address.to_string(), ChannelConfig::default())
}

async fn echo(channel: &Channel, text: &str) -> Result<String, tonic::Status> {
    tokio::time::timeout(WAIT, channel.unary("/test.Echo/Echo", &text.to_string()))
        .await
        .expect("an answer within the test's wait")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_answers_and_errors_with_their_metadata() {
    let server = TestServer::start(ServerConfig::default()).await;
    let channel = channel(&server);
    assert_eq!(echo(&channel, "hello").await.expect("echo"), "hello");
    assert_eq!(echo(&channel, "").await.expect("empty message"), "");

    let failed = channel
        .unary::<String, ()>("/test.Echo/Fail", &"50% of the time, it fails".to_string())
        .await
        .expect_err("fails");
    assert_eq!(failed.code(), Code::Unavailable);
    assert_eq!(failed.message(), "50% of the time, it fails");
    assert_eq!(
        failed.metadata().get("x-why").and_then(|v| v.to_str().ok()),
        Some("because")
    );

    let unknown = channel
        .unary::<String, String>("/test.Echo/Nope", &String::new())
        .await
        .expect_err("no such method");
    assert_eq!(unknown.code(), Code::Unimplemented);

    let value: String = channel
        .unary_with_metadata(
            "/test.Echo/Metadata",
            &"x-test".to_string(),
            &[("x-test", "sent along")],
        )
        .await
        .expect("metadata");
    assert_eq!(value, "sent along");
    let refused = channel
        .unary_with_metadata::<String, String>(
            "/test.Echo/Metadata",
            &String::new(),
            &[("Bad Name", "x")],
        )
        .await
        .expect_err("not a header name");
    assert_eq!(refused.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_concurrent_calls_share_one_connection() {
    let server = TestServer::start(ServerConfig {
        // Fewer streams than calls: the rest wait for a slot, none is refused.
        max_concurrent_streams: 100,
        ..ServerConfig::default()
    })
    .await;
    let channel = channel(&server);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..2000 {
        let channel = channel.clone();
        calls.spawn(async move { (i, echo(&channel, &format!("call {i}")).await) });
    }
    let mut answered = 0;
    while let Some(joined) = calls.join_next().await {
        let (i, answer) = joined.expect("no panic");
        assert_eq!(answer.expect("answered"), format!("call {i}"));
        answered += 1;
    }
    assert_eq!(answered, 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_larger_than_every_window_go_both_ways() {
    let server = TestServer::start(ServerConfig::default()).await;
    let channel = channel(&server);
    // 3 MiB: over the server's stream window (1 MiB) and the client's.
    let big = "r".repeat(3 << 20);
    assert_eq!(
        echo(&channel, &big).await.expect("big echo").len(),
        big.len()
    );
    let answer: String = tokio::time::timeout(WAIT, channel.unary("/test.Echo/Big", &(3u64 << 20)))
        .await
        .expect("in time")
        .expect("big answer");
    assert_eq!(answer.len(), 3 << 20);
    // Over the client's own limit: the call ran, its answer is unusable (UNKNOWN: it
    // may have taken effect).
    let small = Channel::lazy(
        &server.address.to_string(),
        ChannelConfig {
            max_response_bytes: 1000,
            ..ChannelConfig::default()
        },
    );
    let refused = tokio::time::timeout(WAIT, small.unary::<u64, String>("/test.Echo/Big", &5000))
        .await
        .expect("in time")
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::Unknown);
    assert_eq!(
        echo(&small, "still fine").await.expect("echo"),
        "still fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_delivers_every_message_in_order_then_its_end() {
    let server = TestServer::start(ServerConfig::default()).await;
    let channel = channel(&server);
    let mut stream = channel
        .server_streaming::<u64, u64>("/test.Echo/Count", &300_000)
        .await
        .expect("started");
    let mut next = 0;
    while let Some(value) = stream.message().await.expect("a message") {
        assert_eq!(value, next);
        next += 1;
    }
    assert_eq!(next, 300_000);
    assert_eq!(stream.message().await.expect("ended"), None);
    // An empty stream just ends.
    let mut empty = channel
        .server_streaming::<u64, u64>("/test.Echo/Count", &0)
        .await
        .expect("started");
    assert_eq!(empty.message().await.expect("ended"), None);
    // An error at once is the call's error.
    let unknown = channel
        .server_streaming::<u64, u64>("/test.Echo/Nope", &0)
        .await
        .err()
        .expect("no such method");
    assert_eq!(unknown.code(), Code::Unimplemented);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_stop_waiting_cancel_their_calls_on_the_server() {
    let server = TestServer::start(ServerConfig::default()).await;
    let channel = channel(&server);
    let call = tokio::spawn({
        let channel = channel.clone();
        async move { channel.unary::<(), ()>("/test.Echo/Hang", &()).await }
    });
    server
        .hanging
        .until("the call runs", |h| h.running() == 1)
        .await;
    call.abort();
    server
        .hanging
        .until("the dropped call is cancelled", |h| h.running() == 0)
        .await;

    let mut stream = channel
        .server_streaming::<(), u64>("/test.Echo/Forever", &())
        .await
        .expect("started");
    assert_eq!(stream.message().await.expect("first"), Some(7));
    server
        .hanging
        .until("the stream runs", |h| h.running() == 1)
        .await;
    drop(stream);
    server
        .hanging
        .until("the dropped stream is cancelled", |h| h.running() == 0)
        .await;
    assert_eq!(echo(&channel, "after").await.expect("echo"), "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_fails_calls_as_never_sent() {
    // A port that was free a moment ago: nothing listens on it.
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").to_string()
    };
    let channel = Channel::lazy(&address, ChannelConfig::default());
    let failed = tokio::time::timeout(WAIT, echo(&channel, "x"))
        .await
        .expect("bounded")
        .expect_err("nothing listens");
    assert_eq!(failed.code(), Code::Unavailable);
    assert!(failed.metadata().contains_key(NOT_SENT_KEY), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_reached_again_and_calls_in_flight_fail_as_unknown() {
    let mut server = TestServer::start(ServerConfig {
        shutdown_grace: Duration::from_millis(100),
        ..ServerConfig::default()
    })
    .await;
    let address = server.address;
    let channel = Channel::lazy(&address.to_string(), ChannelConfig::default());
    assert_eq!(echo(&channel, "before").await.expect("echo"), "before");
    let hung = tokio::spawn({
        let channel = channel.clone();
        async move { channel.unary::<(), ()>("/test.Echo/Hang", &()).await }
    });
    server
        .hanging
        .until("the call hangs", |h| h.running() == 1)
        .await;
    server.stop();
    let lost = tokio::time::timeout(WAIT, hung)
        .await
        .expect("bounded")
        .expect("no panic")
        .expect_err("the server went away");
    assert_eq!(lost.code(), Code::Unavailable);
    assert!(
        !lost.metadata().contains_key(NOT_SENT_KEY),
        "a call in flight may have been applied: {lost:?}"
    );
    tokio::time::timeout(WAIT, server.done)
        .await
        .expect("stops")
        .expect("no panic");

    // A new server on the same address: the channel connects to it on the next call.
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .expect("rebind");
    let hanging = std::sync::Arc::new(common::Hanging::default());
    tokio::spawn(rkv_grpc::serve(
        listener,
        std::sync::Arc::new(common::router(hanging)),
        ServerConfig::default(),
        std::future::pending(),
    ));
    let again = tokio::time::timeout(WAIT, async {
        loop {
            match echo(&channel, "after").await {
                Ok(answer) => return answer,
                // Only the call that found the old connection closed may fail, as never sent.
                Err(status) => assert!(status.metadata().contains_key(NOT_SENT_KEY), "{status:?}"),
            }
        }
    })
    .await
    .expect("bounded");
    assert_eq!(again, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_is_given_up_within_the_ping_timeout() {
    // A "server" that takes the connection and every byte, and says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut sink = vec![0u8; 4096];
        while matches!(tokio::io::AsyncReadExt::read(&mut socket, &mut sink).await, Ok(n) if n > 0)
        {
        }
    });
    let channel = Channel::lazy(
        &address.to_string(),
        ChannelConfig {
            ping_after: Duration::from_millis(50),
            ping_timeout: Duration::from_millis(200),
            ..ChannelConfig::default()
        },
    );
    let lost = tokio::time::timeout(WAIT, echo_unbounded(&channel))
        .await
        .expect("given up by the ping timeout, not by the test's wait")
        .expect_err("no answer");
    assert_eq!(lost.code(), Code::Unavailable, "{lost:?}");
    assert!(
        !lost.metadata().contains_key(NOT_SENT_KEY),
        "the call was written: it may have had an effect"
    );
}

async fn echo_unbounded(channel: &Channel) -> Result<String, tonic::Status> {
    channel.unary("/test.Echo/Echo", &"x".to_string()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_its_call_only() {
    let server = TestServer::start(ServerConfig::default()).await;
    let channel = channel(&server);
    let failed = tokio::time::timeout(WAIT, channel.unary::<(), ()>("/test.Echo/Panic", &()))
        .await
        .expect("in time")
        .expect_err("it panicked");
    assert_eq!(
        failed.code(),
        Code::Unknown,
        "it may have had an effect: {failed:?}"
    );
    assert_eq!(
        echo(&channel, "still served").await.expect("echo"),
        "still served"
    );
}
