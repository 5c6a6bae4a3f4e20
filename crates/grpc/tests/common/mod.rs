//! A test server of rkv-grpc with a few methods, and a raw HTTP/2 client that sends
//! frames exactly as a test writes them (what a real client library would not do).

#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use rkv_grpc::frame::{self, HEAD_BYTES, Head, Kind, PREFACE};
use rkv_grpc::{Router, ServerConfig, hpack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tonic::{Response, Status};

/// How long any single wait of a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// Counts the calls of `/test.Echo/Hang` that are running (their futures not dropped).
#[derive(Default)]
pub struct Hanging {
    pub running: AtomicUsize,
    pub started: AtomicUsize,
    /// Messages `Firehose` produced.
    pub produced: AtomicUsize,
    changed: tokio::sync::Notify,
}

impl Hanging {
    /// Waits (bounded) until `condition` holds of the counts.
    pub async fn until(&self, what: &str, condition: impl Fn(&Hanging) -> bool) {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if condition(self) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("{what}: not within {WAIT:?}"));
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }
}

struct RunningGuard(Arc<Hanging>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// The test service:
/// - `Echo(String) -> String`;
/// - `Fail(String) -> ()`: UNAVAILABLE with the request as message and `x-why` metadata;
/// - `Big(u64) -> String`: a string of that many bytes;
/// - `Hang(()) -> ()`: never answers (counted in `hanging` while running);
/// - `Count(u64)` (server streaming) -> that many `u64`s, 0, 1, 2, ...;
/// - `Metadata(String) -> String`: the value of the request metadata named by the request;
/// - `Forever(())` (server streaming) -> one `u64`, then nothing, never ending (counted in
///   `hanging` while running);
/// - `Firehose(())` (server streaming) -> 1 KiB strings without end, as fast as they are
///   taken (counted in `hanging.produced`);
/// - `Panic(())`: its handler panics.
pub fn router(hanging: Arc<Hanging>) -> Router {
    let forever = hanging.clone();
    let firehose = hanging.clone();
    Router::new(4 << 20)
        .unary("/test.Echo/Echo", |request: tonic::Request<String>| async move {
            Ok(Response::new(request.into_inner()))
        })
        .unary("/test.Echo/Fail", |request: tonic::Request<String>| async move {
            let mut status = Status::unavailable(request.into_inner());
            status
                .metadata_mut()
                .insert("x-why", "because".parse().expect("ascii"));
            Err::<Response<()>, _>(status)
        })
        .unary("/test.Echo/Big", |request: tonic::Request<u64>| async move {
            let size = usize::try_from(request.into_inner()).unwrap_or(0);
            Ok(Response::new("b".repeat(size)))
        })
        .unary("/test.Echo/Hang", move |_request: tonic::Request<()>| {
            let hanging = hanging.clone();
            async move {
                hanging.running.fetch_add(1, Ordering::SeqCst);
                hanging.started.fetch_add(1, Ordering::SeqCst);
                hanging.changed.notify_waiters();
                let _guard = RunningGuard(hanging);
                std::future::pending::<()>().await;
                Ok(Response::new(()))
            }
        })
        .server_streaming("/test.Echo/Count", |request: tonic::Request<u64>| async move {
            let count = request.into_inner();
            let messages = futures_util::stream::iter((0..count).map(Ok::<u64, Status>));
            Ok(Response::new(messages))
        })
        .server_streaming("/test.Echo/Forever", move |_request: tonic::Request<()>| {
            let hanging = forever.clone();
            async move {
                hanging.running.fetch_add(1, Ordering::SeqCst);
                hanging.started.fetch_add(1, Ordering::SeqCst);
                hanging.changed.notify_waiters();
                let guard = RunningGuard(hanging);
                let messages = futures_util::stream::once(async { Ok::<u64, Status>(7) })
                    .chain(futures_util::stream::pending())
                    .map(move |item| {
                        let _running = &guard;
                        item
                    });
                Ok(Response::new(messages))
            }
        })
        .server_streaming("/test.Echo/Firehose", move |_request: tonic::Request<()>| {
            let hanging = firehose.clone();
            async move {
                let messages = futures_util::stream::repeat_with(move || {
                    hanging.produced.fetch_add(1, Ordering::SeqCst);
                    Ok::<String, Status>("f".repeat(1024))
                });
                Ok(Response::new(messages))
            }
        })
        .unary("/test.Echo/Panic", |_request: tonic::Request<()>| async move {
            if std::hint::black_box(true) {
                panic!("a handler that panics (on purpose, for a test)");
            }
            Ok(Response::new(()))
        })
        .unary(
            "/test.Echo/Metadata",
            |request: tonic::Request<String>| async move {
                let value = request
                    .metadata()
                    .get(request.get_ref().as_str())
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("(none)")
                    .to_string();
                Ok(Response::new(value))
            },
        )
}

/// A running test server: its address, and how to stop it.
pub struct TestServer {
    pub address: SocketAddr,
    pub hanging: Arc<Hanging>,
    stop: Option<oneshot::Sender<()>>,
    pub done: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(config: ServerConfig) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let hanging = Arc::new(Hanging::default());
        let (stop, stopped) = oneshot::channel();
        let done = tokio::spawn(rkv_grpc::serve(
            listener,
            Arc::new(router(hanging.clone())),
            config,
            async move {
                let _ = stopped.await;
            },
        ));
        TestServer {
            address,
            hanging,
            stop: Some(stop),
            done,
        }
    }

    /// Starts the graceful shutdown.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A frame read back.
#[derive(Debug)]
pub struct Frame {
    pub head: Head,
    pub payload: Bytes,
}

/// A raw HTTP/2 client: writes what the test says, reads frames back.
pub struct Raw {
    stream: TcpStream,
    buffer: BytesMut,
    pub decoder: hpack::Decoder,
}

impl Raw {
    /// Connects without sending anything.
    pub async fn connect_bare(address: SocketAddr) -> Raw {
        let stream = TcpStream::connect(address).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Raw {
            stream,
            buffer: BytesMut::new(),
            decoder: hpack::Decoder::default(),
        }
    }

    /// Connects and sends the preface with `settings`.
    pub async fn connect(address: SocketAddr, settings: &[(u16, u32)]) -> Raw {
        let mut raw = Raw::connect_bare(address).await;
        let mut out = BytesMut::from(PREFACE);
        frame::encode_settings(&mut out, settings);
        raw.send(&out).await;
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next frame; `None` once the server closed the connection.
    pub async fn frame(&mut self) -> Option<Frame> {
        loop {
            if self.buffer.len() >= HEAD_BYTES {
                let mut raw = [0u8; HEAD_BYTES];
                raw.copy_from_slice(&self.buffer[..HEAD_BYTES]);
                let head = Head::parse(&raw);
                let total = HEAD_BYTES + head.length as usize;
                if self.buffer.len() >= total {
                    let mut frame = self.buffer.split_to(total);
                    let payload = frame.split_off(HEAD_BYTES).freeze();
                    return Some(Frame { head, payload });
                }
            }
            let read = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buffer))
                .await
                .expect("the server answers in time");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next frame that `wanted` accepts, skipping the others (at most 100).
    pub async fn frame_where(&mut self, wanted: impl Fn(&Frame) -> bool) -> Frame {
        for _ in 0..100 {
            let frame = self
                .frame()
                .await
                .expect("a frame before the connection closed");
            if wanted(&frame) {
                return frame;
            }
        }
        panic!("100 frames without the one wanted");
    }

    /// The GOAWAY the server ends with: its error code, then the connection closes.
    pub async fn goaway(&mut self) -> frame::Reason {
        let frame = self.frame_where(|f| f.head.kind == Kind::GoAway).await;
        let reason = u32::from_be_bytes(frame.payload[4..8].try_into().expect("4 bytes"));
        for _ in 0..100 {
            if self.frame().await.is_none() {
                return frame::Reason(reason);
            }
        }
        panic!("the connection stayed open after GOAWAY");
    }

    /// The fields of a header block.
    pub fn fields(&mut self, block: &[u8]) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        self.decoder
            .decode(block, |name, value| {
                fields.push((
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                ));
            })
            .expect("the server's header blocks decode");
        fields
    }
}

/// The header block of a gRPC request for `path`, with `extra` fields.
pub fn request_block(path: &str, extra: &[(&str, &str)]) -> BytesMut {
    let mut block = BytesMut::new();
    hpack::put_indexed(&mut block, hpack::index::METHOD_POST);
    hpack::put_indexed(&mut block, hpack::index::SCHEME_HTTP);
    hpack::put_literal_indexed_name(&mut block, hpack::index::PATH, path.as_bytes());
    hpack::put_literal_indexed_name(&mut block, hpack::index::AUTHORITY, b"test");
    hpack::put_literal_indexed_name(&mut block, hpack::index::CONTENT_TYPE, b"application/grpc");
    hpack::put_literal(&mut block, b"te", b"trailers");
    for (name, value) in extra {
        hpack::put_literal(&mut block, name.as_bytes(), value.as_bytes());
    }
    block
}

/// A gRPC message body: the 5-byte prefix and the encoded `message`.
pub fn body(message: &impl prost::Message) -> Vec<u8> {
    let encoded = message.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    out.extend_from_slice(&encoded);
    out
}

/// HEADERS (END_HEADERS) then `body` in DATA frames of the largest default size, the
/// last with END_STREAM.
pub fn request(stream: u32, block: &[u8], body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    frame::encode_headers(
        &mut out,
        stream,
        block,
        false,
        frame::DEFAULT_MAX_FRAME_BYTES,
    );
    let mut chunks = body
        .chunks(frame::DEFAULT_MAX_FRAME_BYTES as usize)
        .peekable();
    if chunks.peek().is_none() {
        frame::encode_data_head(&mut out, stream, 0, true);
    }
    while let Some(chunk) = chunks.next() {
        frame::encode_data_head(
            &mut out,
            stream,
            chunk.len() as u32,
            chunks.peek().is_none(),
        );
        out.extend_from_slice(chunk);
    }
    out
}

/// The value of field `name`.
pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}
