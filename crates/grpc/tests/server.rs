//! The server against a raw HTTP/2 client: frames split, padded, interleaved, reset,
//! malformed or out of order, as RFC 9113 allows (or forbids) them, and gRPC requests a
//! well-behaved client library would never send.

mod common;

use bytes::BytesMut;
use common::{Raw, TestServer, body, field, request, request_block};
use rkv_grpc::ServerConfig;
use rkv_grpc::frame::{self, Kind, Reason, flags, setting};

fn headers_of(stream: u32) -> impl Fn(&common::Frame) -> bool {
    move |f| f.head.kind == Kind::Headers && f.head.stream == stream
}

/// Reads stream `id`'s answer: (response fields, messages' bytes, trailer fields).
async fn answer(raw: &mut Raw, id: u32) -> (Vec<(String, String)>, Vec<u8>, Vec<(String, String)>) {
    let first = raw.frame_where(headers_of(id)).await;
    let headers = raw.fields(&first.payload);
    if first.head.has(flags::END_STREAM) {
        return (headers.clone(), Vec::new(), headers);
    }
    let mut data = Vec::new();
    loop {
        let frame = raw
            .frame_where(|f| {
                f.head.stream == id && matches!(f.head.kind, Kind::Data | Kind::Headers)
            })
            .await;
        if frame.head.kind == Kind::Data {
            data.extend_from_slice(&frame.payload);
            continue;
        }
        assert!(frame.head.has(flags::END_STREAM), "trailers end the stream");
        let trailers = raw.fields(&frame.payload);
        return (headers, data, trailers);
    }
}

fn decode_message<T: prost::Message + Default>(data: &[u8]) -> T {
    assert!(data.len() >= 5, "a message prefix: {data:?}");
    let length = u32::from_be_bytes(data[1..5].try_into().expect("4 bytes")) as usize;
    assert_eq!(data.len(), 5 + length, "exactly one message");
    T::decode(&data[5..]).expect("decodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_split_padded_and_continued_is_answered() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut raw = Raw::connect(server.address, &[]).await;
    let block = request_block("/test.Echo/Echo", &[]);
    let (first, rest) = block.split_at(5);
    let mut out = BytesMut::new();
    // HEADERS with padding and priority, the rest of the block in a CONTINUATION.
    let mut payload = vec![3u8]; // pad length
    payload.extend_from_slice(&[0, 0, 0, 0, 16]); // priority: no dependency, weight 16
    payload.extend_from_slice(first);
    payload.extend_from_slice(&[0, 0, 0]); // padding
    push_frame(
        &mut out,
        Kind::Headers,
        flags::PADDED | flags::PRIORITY,
        1,
        &payload,
    );
    push_frame(&mut out, Kind::Continuation, flags::END_HEADERS, 1, rest);
    // The message in two DATA frames, the first padded, then an empty END_STREAM.
    let message = body(&"hello, split world".to_string());
    let (a, b) = message.split_at(7);
    let mut padded = vec![2u8];
    padded.extend_from_slice(a);
    padded.extend_from_slice(&[0, 0]);
    push_frame(&mut out, Kind::Data, flags::PADDED, 1, &padded);
    push_frame(&mut out, Kind::Data, 0, 1, b);
    push_frame(&mut out, Kind::Data, flags::END_STREAM, 1, &[]);
    // Frames of unknown type and PRIORITY frames are ignored wherever they come.
    push_frame(&mut out, Kind::Unknown(0xfa), 0, 0, b"whatever");
    push_frame(&mut out, Kind::Priority, 0, 3, &[0, 0, 0, 1, 7]);
    raw.send(&out).await;
    let (headers, data, trailers) = answer(&mut raw, 1).await;
    assert_eq!(field(&headers, ":status"), Some("200"));
    assert_eq!(field(&headers, "content-type"), Some("application/grpc"));
    assert_eq!(decode_message::<String>(&data), "hello, split world");
    assert_eq!(field(&trailers, "grpc-status"), Some("0"));
}

fn push_frame(out: &mut BytesMut, kind: Kind, flags: u8, stream: u32, payload: &[u8]) {
    let kind = match kind {
        Kind::Data => 0u8,
        Kind::Headers => 1,
        Kind::Priority => 2,
        Kind::RstStream => 3,
        Kind::Settings => 4,
        Kind::PushPromise => 5,
        Kind::Ping => 6,
        Kind::GoAway => 7,
        Kind::WindowUpdate => 8,
        Kind::Continuation => 9,
        Kind::Unknown(other) => other,
    };
    let length = (payload.len() as u32).to_be_bytes();
    out.extend_from_slice(&length[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_and_settings_acknowledged() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut raw = Raw::connect(server.address, &[(setting::MAX_FRAME_SIZE, 1 << 20)]).await;
    let ack = raw
        .frame_where(|f| f.head.kind == Kind::Settings && f.head.has(flags::ACK))
        .await;
    assert!(ack.payload.is_empty());
    let mut out = BytesMut::new();
    frame::encode_ping(&mut out, *b"rkv-ping", false);
    raw.send(&out).await;
    let pong = raw.frame_where(|f| f.head.kind == Kind::Ping).await;
    assert!(pong.head.has(flags::ACK));
    assert_eq!(&pong.payload[..], b"rkv-ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_end_the_connection_with_the_right_goaway() {
    let server = TestServer::start(ServerConfig::default()).await;
    // Not HTTP/2 at all.
    let mut raw = Raw::connect_bare(server.address).await;
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(raw.goaway().await, Reason::PROTOCOL_ERROR);

    // A first frame that is not SETTINGS.
    let mut raw = Raw::connect_bare(server.address).await;
    let mut out = BytesMut::from(frame::PREFACE);
    frame::encode_ping(&mut out, [0; 8], false);
    raw.send(&out).await;
    assert_eq!(raw.goaway().await, Reason::PROTOCOL_ERROR);

    let cases: Vec<(&str, BytesMut, Reason)> = vec![
        (
            "a frame over the maximum size",
            {
                let mut out = BytesMut::new();
                push_frame(&mut out, Kind::Data, 0, 1, &vec![0; 16_385]);
                out
            },
            Reason::FRAME_SIZE_ERROR,
        ),
        (
            "an undecodable header block",
            {
                let mut out = BytesMut::new();
                push_frame(
                    &mut out,
                    Kind::Headers,
                    flags::END_HEADERS,
                    1,
                    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                );
                out
            },
            Reason::COMPRESSION_ERROR,
        ),
        (
            "a stream opened with an even id",
            {
                request(
                    2,
                    &request_block("/test.Echo/Echo", &[]),
                    &body(&String::new()),
                )
            },
            Reason::PROTOCOL_ERROR,
        ),
        (
            "DATA on a stream never opened",
            {
                let mut out = BytesMut::new();
                push_frame(&mut out, Kind::Data, flags::END_STREAM, 9, b"x");
                out
            },
            Reason::PROTOCOL_ERROR,
        ),
        (
            "a CONTINUATION without HEADERS",
            {
                let mut out = BytesMut::new();
                push_frame(&mut out, Kind::Continuation, flags::END_HEADERS, 1, &[0x82]);
                out
            },
            Reason::PROTOCOL_ERROR,
        ),
        (
            "a header block interrupted by another frame",
            {
                let mut out = BytesMut::new();
                push_frame(&mut out, Kind::Headers, 0, 1, &[0x83]);
                frame::encode_ping(&mut out, [0; 8], false);
                out
            },
            Reason::PROTOCOL_ERROR,
        ),
        (
            "a PUSH_PROMISE from a client",
            {
                let mut out = BytesMut::new();
                push_frame(
                    &mut out,
                    Kind::PushPromise,
                    flags::END_HEADERS,
                    1,
                    &[0, 0, 0, 2, 0x82],
                );
                out
            },
            Reason::PROTOCOL_ERROR,
        ),
        (
            "a WINDOW_UPDATE of zero on the connection",
            {
                let mut out = BytesMut::new();
                push_frame(&mut out, Kind::WindowUpdate, 0, 0, &[0, 0, 0, 0]);
                out
            },
            Reason::PROTOCOL_ERROR,
        ),
        (
            "a connection window pushed past 2^31-1",
            {
                let mut out = BytesMut::new();
                push_frame(
                    &mut out,
                    Kind::WindowUpdate,
                    0,
                    0,
                    &0x7fff_ffffu32.to_be_bytes(),
                );
                out
            },
            Reason::FLOW_CONTROL_ERROR,
        ),
        (
            "a PING of the wrong size",
            {
                let mut out = BytesMut::new();
                push_frame(&mut out, Kind::Ping, 0, 0, &[0; 7]);
                out
            },
            Reason::FRAME_SIZE_ERROR,
        ),
        (
            "SETTINGS with a bad value",
            {
                let mut out = BytesMut::new();
                frame::encode_settings(&mut out, &[(setting::ENABLE_PUSH, 7)]);
                out
            },
            Reason::PROTOCOL_ERROR,
        ),
    ];
    for (what, bytes, reason) in cases {
        let mut raw = Raw::connect(server.address, &[]).await;
        raw.send(&bytes).await;
        assert_eq!(raw.goaway().await, reason, "{what}");
    }
    // The server still serves.
    let mut raw = Raw::connect(server.address, &[]).await;
    raw.send(&request(
        1,
        &request_block("/test.Echo/Echo", &[]),
        &body(&"ok".to_string()),
    ))
    .await;
    let (_, data, trailers) = answer(&mut raw, 1).await;
    assert_eq!(decode_message::<String>(&data), "ok");
    assert_eq!(field(&trailers, "grpc-status"), Some("0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_are_not_callable_get_http_or_grpc_errors() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut raw = Raw::connect(server.address, &[]).await;
    let echo = body(&"x".to_string());
    let mut get = BytesMut::new();
    rkv_grpc::hpack::put_indexed(&mut get, 2); // :method GET
    rkv_grpc::hpack::put_literal_indexed_name(&mut get, 4, b"/test.Echo/Echo");
    let mut json = request_block("/test.Echo/Echo", &[]);
    json.clear();
    rkv_grpc::hpack::put_indexed(&mut json, rkv_grpc::hpack::index::METHOD_POST);
    rkv_grpc::hpack::put_literal_indexed_name(&mut json, 4, b"/test.Echo/Echo");
    rkv_grpc::hpack::put_literal_indexed_name(&mut json, 31, b"application/json");
    let mut compressed = echo.clone();
    compressed[0] = 1;
    // (stream, request header block, body, :status, grpc-status)
    type Case<'a> = (u32, BytesMut, Vec<u8>, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (1, get, echo.clone(), "405", Some("12")),
        (3, json, echo.clone(), "415", Some("2")),
        (
            5,
            request_block("/test.Echo/Nope", &[]),
            echo.clone(),
            "200",
            Some("12"),
        ),
        (
            7,
            request_block("/test.Echo/Echo", &[("grpc-encoding", "gzip")]),
            echo.clone(),
            "200",
            Some("12"),
        ),
        (
            9,
            request_block("/test.Echo/Echo", &[]),
            compressed,
            "200",
            Some("12"),
        ),
        (
            11,
            request_block("/test.Echo/Echo", &[("grpc-timeout", "soon")]),
            echo.clone(),
            "200",
            Some("3"),
        ),
        (
            13,
            request_block("/test.Echo/Echo", &[("connection", "keep-alive")]),
            echo.clone(),
            "400",
            Some("13"),
        ),
        (
            15,
            request_block("/test.Echo/Echo", &[]),
            vec![0, 0, 0],
            "200",
            Some("13"),
        ),
        (
            17,
            request_block("/test.Echo/Echo", &[]),
            [&echo[..], &echo[..]].concat(),
            "200",
            Some("13"),
        ),
        (
            19,
            request_block("/test.Echo/Echo", &[]),
            vec![0, 1, 0, 0, 0],
            "200",
            Some("8"),
        ),
    ];
    for (id, block, message, http, grpc) in cases {
        raw.send(&request(id, &block, &message)).await;
        let (headers, data, trailers) = answer(&mut raw, id).await;
        assert_eq!(field(&headers, ":status"), Some(http), "stream {id}");
        assert!(data.is_empty(), "stream {id}: no message");
        assert_eq!(
            field(&trailers, "grpc-status"),
            grpc,
            "stream {id}: {trailers:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_before_it_arrives_whole() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut raw = Raw::connect(server.address, &[]).await;
    let mut out = BytesMut::new();
    let block = request_block("/test.Echo/Echo", &[]);
    frame::encode_headers(&mut out, 1, &block, false, frame::DEFAULT_MAX_FRAME_BYTES);
    // A prefix announcing 64 MiB (the router's limit is 4 MiB), and only its first bytes.
    let mut data = vec![0u8];
    data.extend_from_slice(&(64u32 << 20).to_be_bytes());
    data.extend_from_slice(&[b'x'; 100]);
    push_frame(&mut out, Kind::Data, 0, 1, &data);
    raw.send(&out).await;
    let (_, _, trailers) = answer(&mut raw, 1).await;
    assert_eq!(field(&trailers, "grpc-status"), Some("8"), "{trailers:?}");
    // The client is told to stop sending, without error (RFC 9113 §8.1).
    let reset = raw
        .frame_where(|f| f.head.kind == Kind::RstStream && f.head.stream == 1)
        .await;
    assert_eq!(&reset.payload[..], &[0, 0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_limit_are_refused_and_a_reset_cancels_the_call() {
    let config = ServerConfig {
        max_concurrent_streams: 2,
        ..ServerConfig::default()
    };
    let server = TestServer::start(config).await;
    let mut raw = Raw::connect(server.address, &[]).await;
    let hang = request_block("/test.Echo/Hang", &[]);
    let mut out = BytesMut::new();
    for id in [1, 3, 5] {
        out.extend_from_slice(&request(id, &hang, &body(&())));
    }
    raw.send(&out).await;
    let refused = raw
        .frame_where(|f| f.head.kind == Kind::RstStream && f.head.stream == 5)
        .await;
    assert_eq!(
        &refused.payload[..],
        &Reason::REFUSED_STREAM.0.to_be_bytes()
    );
    server
        .hanging
        .until("both calls run", |h| h.running() == 2)
        .await;
    // RST_STREAM from the client drops the call's future.
    let mut out = BytesMut::new();
    frame::encode_rst_stream(&mut out, 1, Reason::CANCEL);
    raw.send(&out).await;
    server
        .hanging
        .until("one call is cancelled", |h| h.running() == 1)
        .await;
    // A slot is free again.
    raw.send(&request(7, &hang, &body(&()))).await;
    server
        .hanging
        .until("the new call runs", |h| {
            h.started() == 3 && h.running() == 2
        })
        .await;
    // Closing the connection drops the calls still running.
    drop(raw);
    server
        .hanging
        .until("every call is dropped", |h| h.running() == 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_answer_waits_for_the_clients_windows() {
    let server = TestServer::start(ServerConfig::default()).await;
    // A stream window of 1,000 bytes, and the connection's default 65,535.
    let mut raw = Raw::connect(server.address, &[(setting::INITIAL_WINDOW_SIZE, 1000)]).await;
    raw.send(&request(
        1,
        &request_block("/test.Echo/Big", &[]),
        &body(&200_000u64),
    ))
    .await;
    let headers = raw.frame_where(headers_of(1)).await;
    assert!(!headers.head.has(flags::END_STREAM));
    let mut received = Vec::new();
    let mut granted_stream = 1000usize;
    let mut granted_connection = 65_535usize;
    // The server never sends more than the windows allow; we widen them as we read.
    while received.len() < 200_000 + 10 {
        let frame = raw.frame().await.expect("open");
        match frame.head.kind {
            Kind::Data if frame.head.stream == 1 => {
                received.extend_from_slice(&frame.payload);
                assert!(received.len() <= granted_stream, "over the stream window");
                assert!(
                    received.len() <= granted_connection,
                    "over the connection window"
                );
                if received.len() == granted_stream {
                    let mut out = BytesMut::new();
                    frame::encode_window_update(&mut out, 1, 50_000);
                    frame::encode_window_update(&mut out, 0, 50_000);
                    granted_stream += 50_000;
                    granted_connection += 50_000;
                    raw.send(&out).await;
                }
            }
            Kind::Headers if frame.head.stream == 1 => {
                let trailers = raw.fields(&frame.payload);
                assert_eq!(field(&trailers, "grpc-status"), Some("0"));
                break;
            }
            _ => {}
        }
    }
    let message: String = decode_message(&received);
    assert_eq!(message.len(), 200_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_timeout_ends_the_call_with_deadline_exceeded() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut raw = Raw::connect(server.address, &[]).await;
    let block = request_block("/test.Echo/Hang", &[("grpc-timeout", "50m")]);
    raw.send(&request(1, &block, &body(&()))).await;
    let (_, _, trailers) = answer(&mut raw, 1).await;
    assert_eq!(field(&trailers, "grpc-status"), Some("4"), "{trailers:?}");
    server
        .hanging
        .until("the call is dropped", |h| {
            h.started() == 1 && h.running() == 0
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_goaway_lets_calls_finish_and_refuses_new_streams() {
    let mut server = TestServer::start(ServerConfig::default()).await;
    let mut raw = Raw::connect(server.address, &[]).await;
    // A stream is open (its request not complete) when the shutdown starts.
    let mut out = BytesMut::new();
    frame::encode_headers(
        &mut out,
        1,
        &request_block("/test.Echo/Echo", &[]),
        false,
        frame::DEFAULT_MAX_FRAME_BYTES,
    );
    raw.send(&out).await;
    raw.send(&request(
        3,
        &request_block("/test.Echo/Echo", &[]),
        &body(&"3".to_string()),
    ))
    .await;
    let _ = answer(&mut raw, 3).await;
    server.stop();
    let goaway = raw.frame_where(|f| f.head.kind == Kind::GoAway).await;
    assert_eq!(&goaway.payload[..4], &3u32.to_be_bytes(), "last stream 3");
    assert_eq!(&goaway.payload[4..8], &[0, 0, 0, 0], "NO_ERROR");
    // A stream opened after the GOAWAY is refused; the one open before finishes.
    raw.send(&request(
        5,
        &request_block("/test.Echo/Echo", &[]),
        &body(&"5".to_string()),
    ))
    .await;
    let refused = raw.frame_where(|f| f.head.kind == Kind::RstStream).await;
    assert_eq!(refused.head.stream, 5);
    let message = body(&"1".to_string());
    let mut out = BytesMut::new();
    frame::encode_data_head(&mut out, 1, message.len() as u32, true);
    out.extend_from_slice(&message);
    raw.send(&out).await;
    let (_, data, _) = answer(&mut raw, 1).await;
    assert_eq!(decode_message::<String>(&data), "1");
    assert!(raw.frame().await.is_none(), "then the connection closes");
    tokio::time::timeout(common::WAIT, server.done)
        .await
        .expect("serve returns")
        .expect("no panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_held_incomplete_are_bounded_by_the_servers_budget() {
    let server = TestServer::start(ServerConfig {
        buffered_request_bytes_max: 100_000,
        ..ServerConfig::default()
    })
    .await;
    let mut raw = Raw::connect(server.address, &[]).await;
    let block = request_block("/test.Echo/Echo", &[]);
    let message = body(&"z".repeat(60_000));
    // Stream 1 sends all but the last byte of its message, and waits.
    let mut out = BytesMut::new();
    frame::encode_headers(&mut out, 1, &block, false, frame::DEFAULT_MAX_FRAME_BYTES);
    for chunk in message[..message.len() - 1].chunks(16_000) {
        push_frame(&mut out, Kind::Data, 0, 1, chunk);
    }
    // Stream 3 would take the held bytes past 100,000: refused, unprocessed.
    frame::encode_headers(&mut out, 3, &block, false, frame::DEFAULT_MAX_FRAME_BYTES);
    for chunk in message.chunks(16_000) {
        push_frame(&mut out, Kind::Data, 0, 3, chunk);
    }
    raw.send(&out).await;
    let (_, _, trailers) = answer(&mut raw, 3).await;
    assert_eq!(field(&trailers, "grpc-status"), Some("8"), "{trailers:?}");
    // Stream 1 completes; its bytes leave the budget, and a new request fits again.
    let mut out = BytesMut::new();
    push_frame(
        &mut out,
        Kind::Data,
        flags::END_STREAM,
        1,
        &message[message.len() - 1..],
    );
    raw.send(&out).await;
    let (_, data, _) = answer(&mut raw, 1).await;
    assert_eq!(decode_message::<String>(&data).len(), 60_000);
    // (The answers so far used the connection's default window: open it up.)
    let mut out = BytesMut::new();
    frame::encode_window_update(&mut out, 0, 1 << 20);
    out.extend_from_slice(&request(5, &block, &message));
    raw.send(&out).await;
    let (_, data, trailers) = answer(&mut raw, 5).await;
    assert_eq!(field(&trailers, "grpc-status"), Some("0"));
    assert_eq!(decode_message::<String>(&data).len(), 60_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_nobody_reads_stops_producing() {
    let server = TestServer::start(ServerConfig::default()).await;
    // A window of 2,000 bytes and never a WINDOW_UPDATE: room for one message.
    let mut raw = Raw::connect(server.address, &[(setting::INITIAL_WINDOW_SIZE, 2000)]).await;
    raw.send(&request(
        1,
        &request_block("/test.Echo/Firehose", &[]),
        &body(&()),
    ))
    .await;
    raw.frame_where(|f| f.head.kind == Kind::Data && f.head.stream == 1)
        .await;
    // Let the server run its loop many times (each echo is a turn of it), then count.
    for i in 0..20u32 {
        let id = 3 + 2 * i;
        raw.send(&request(
            id,
            &request_block("/test.Echo/Echo", &[]),
            &body(&"turn".to_string()),
        ))
        .await;
        let _ = answer(&mut raw, id).await;
    }
    let produced = server
        .hanging
        .produced
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        produced <= 4,
        "the firehose kept producing for a client that reads nothing: {produced}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_says_nothing_is_closed_after_the_handshake_timeout() {
    let server = TestServer::start(ServerConfig {
        handshake_timeout: std::time::Duration::from_millis(100),
        ..ServerConfig::default()
    })
    .await;
    let mut raw = Raw::connect_bare(server.address).await;
    // The server's SETTINGS and window, then the end of the connection.
    let mut frames = 0;
    while raw.frame().await.is_some() {
        frames += 1;
        assert!(frames < 10, "the connection stays open");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resetting_call_after_call_is_sent_away() {
    let server = TestServer::start(ServerConfig {
        resets_max: 5,
        ..ServerConfig::default()
    })
    .await;
    let mut raw = Raw::connect(server.address, &[]).await;
    let hang = request_block("/test.Echo/Hang", &[]);
    for i in 0..10u32 {
        let id = 1 + 2 * i;
        raw.send(&request(id, &hang, &body(&()))).await;
        let target = i as usize + 1;
        server
            .hanging
            .until("the call runs", |h| h.started() == target)
            .await;
        let mut out = BytesMut::new();
        frame::encode_rst_stream(&mut out, id, Reason::CANCEL);
        raw.send(&out).await;
        if i >= 5 {
            break;
        }
    }
    assert_eq!(raw.goaway().await, Reason::ENHANCE_YOUR_CALM);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_priority_frame_ends_its_stream_and_its_call() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut raw = Raw::connect(server.address, &[]).await;
    raw.send(&request(
        1,
        &request_block("/test.Echo/Hang", &[]),
        &body(&()),
    ))
    .await;
    server
        .hanging
        .until("the call runs", |h| h.running() == 1)
        .await;
    let mut out = BytesMut::new();
    push_frame(&mut out, Kind::Priority, 0, 1, &[0, 0, 0, 0]);
    raw.send(&out).await;
    let reset = raw
        .frame_where(|f| f.head.kind == Kind::RstStream && f.head.stream == 1)
        .await;
    assert_eq!(
        &reset.payload[..],
        &Reason::FRAME_SIZE_ERROR.0.to_be_bytes()
    );
    server
        .hanging
        .until("the call is dropped", |h| h.running() == 0)
        .await;
}
