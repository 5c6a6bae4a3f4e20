//! The server: a [`Router`] of gRPC methods, served on a listener by [`serve`].
//!
//! One task per connection does everything for it, with no task per call: it reads
//! whatever the socket holds, decodes every frame in it, starts the calls whose requests
//! are complete, polls the calls that have something to say, and writes all their
//! answers in one `write`. With many clients on one connection, one read and one write
//! carry dozens of calls; with one client, an answer leaves as soon as the engine gives
//! it, one wake-up after the reply. Handlers are the methods of the tonic-generated
//! service traits, so the services are the same code whichever transport serves them.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::stream::{self, AbortHandle, Abortable, SelectAll, Stream, StreamExt};
use futures_util::task::AtomicWaker;
use futures_util::{FutureExt, TryFutureExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::conn::{Core, Event, Local, RecvWindow, protocol, shift_windows};
use crate::frame::{
    self, ConnectionError, DEFAULT_WINDOW_BYTES, HEAD_BYTES, MAX_WINDOW_BYTES, PREFACE, Reason,
    flags, setting,
};
use crate::grpc::{self, PREFIX_BYTES};

/// What a call answers, in order.
enum Answer {
    /// A streaming call has started: the response headers can go (a watch that waits
    /// for its first event is under way, and its client should know).
    Started,
    /// A message, already behind its gRPC prefix.
    Message(Bytes),
}

/// A call's answers: a unary call yields one message; an `Err` ends the call with that
/// status.
type Responses = Pin<Box<dyn Stream<Item = Result<Answer, Status>> + Send>>;

type Handler = Box<dyn Fn(MetadataMap, Bytes) -> Responses + Send + Sync>;

/// The methods a server serves, by path (`/package.Service/Method`).
pub struct Router {
    paths: HashMap<Box<[u8]>, usize>,
    /// Each handler, and whether its method is server-streaming.
    handlers: Vec<(Handler, bool)>,
    max_message_bytes: usize,
}

impl Router {
    /// A router whose calls take and send messages of at most `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Router {
        Router {
            paths: HashMap::new(),
            handlers: Vec::new(),
            max_message_bytes,
        }
    }

    fn add(mut self, path: &str, handler: Handler, streaming: bool) -> Router {
        self.paths
            .insert(path.as_bytes().into(), self.handlers.len());
        self.handlers.push((handler, streaming));
        self
    }

    /// Serves the unary method at `path` with `handler`.
    pub fn unary<Req, Resp, F, Fut>(self, path: &str, handler: F) -> Router
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        F: Fn(tonic::Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>> + Send + 'static,
    {
        let max = self.max_message_bytes;
        self.add(
            path,
            Box::new(move |metadata, message| match Req::decode(message) {
                Ok(request) => {
                    let call = handler(request_with(metadata, request));
                    Box::pin(stream::once(call.map(move |result| {
                        result
                            .and_then(|response| grpc::encode_message(response.get_ref(), max))
                            .map(Answer::Message)
                    })))
                }
                Err(e) => refuse(e),
            }),
            false,
        )
    }

    /// Serves the server-streaming method at `path` with `handler`.
    pub fn server_streaming<Req, Resp, S, F, Fut>(self, path: &str, handler: F) -> Router
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        S: Stream<Item = Result<Resp, Status>> + Send + 'static,
        F: Fn(tonic::Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<S>, Status>> + Send + 'static,
    {
        let max = self.max_message_bytes;
        self.add(
            path,
            Box::new(move |metadata, message| match Req::decode(message) {
                Ok(request) => {
                    let call = handler(request_with(metadata, request));
                    Box::pin(
                        stream::once(call.map_ok(move |response| {
                            let messages = response.into_inner().map(move |item| {
                                item.and_then(|message| grpc::encode_message(&message, max))
                                    .map(Answer::Message)
                            });
                            stream::once(std::future::ready(Ok(Answer::Started))).chain(messages)
                        }))
                        .try_flatten(),
                    )
                }
                Err(e) => refuse(e),
            }),
            true,
        )
    }
}

fn request_with<T>(metadata: MetadataMap, message: T) -> tonic::Request<T> {
    tonic::Request::from_parts(metadata, tonic::Extensions::default(), message)
}

fn refuse(error: prost::DecodeError) -> Responses {
    Box::pin(stream::once(std::future::ready(Err(Status::internal(
        format!("undecodable request message: {error}"),
    )))))
}

/// Limits of a server and of each of its connections.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Calls one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS);
    /// more are refused with REFUSED_STREAM, which clients retry.
    pub max_concurrent_streams: u32,
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// The largest header block (after decoding) a request may have.
    pub max_header_list_bytes: usize,
    /// The receive window of each stream (SETTINGS_INITIAL_WINDOW_SIZE).
    pub stream_window_bytes: u32,
    /// The receive window of each connection.
    pub connection_window_bytes: u32,
    /// Request bytes the server's connections may hold, all together, for requests that
    /// have not arrived whole; a request that would take more is refused
    /// (RESOURCE_EXHAUSTED, not processed). This, not flow control, bounds what clients
    /// can make the server buffer.
    pub buffered_request_bytes_max: usize,
    /// Answers waiting to be written beyond which a connection stops reading requests
    /// and stops taking answers from its calls (its client is not reading).
    pub write_buffer_bytes_max: usize,
    /// How long a client may take to send its preface and SETTINGS.
    pub handshake_timeout: Duration,
    /// How long answers may wait for a client that reads nothing before its
    /// connection is closed.
    pub write_stall_timeout: Duration,
    /// Client resets of running calls one connection may make in
    /// [`RESETS_WINDOW`] before it is sent away (ENHANCE_YOUR_CALM): starting a call and
    /// resetting it at once costs the client nothing and the server a call.
    pub resets_max: u32,
    /// How long a shutdown waits for calls in flight.
    pub shutdown_grace: Duration,
}

/// The span over which [`ServerConfig::resets_max`] counts.
pub const RESETS_WINDOW: Duration = Duration::from_secs(10);

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            max_concurrent_streams: 4096,
            max_connections: 10_000,
            max_header_list_bytes: 16 * 1024,
            stream_window_bytes: 1 << 20,
            connection_window_bytes: 16 << 20,
            buffered_request_bytes_max: 256 << 20,
            write_buffer_bytes_max: 4 << 20,
            handshake_timeout: Duration::from_secs(10),
            write_stall_timeout: Duration::from_secs(30),
            resets_max: 10_000,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// What the connections of one server share: the limits, and the request bytes they
/// hold all together.
#[derive(Debug)]
pub struct Shared {
    config: ServerConfig,
    buffered_request_bytes: AtomicUsize,
}

impl Shared {
    /// The shared state of a server with `config`.
    pub fn new(config: ServerConfig) -> Arc<Shared> {
        Arc::new(Shared {
            config,
            buffered_request_bytes: AtomicUsize::new(0),
        })
    }

    /// Request bytes held now, all connections together.
    pub fn buffered_request_bytes(&self) -> usize {
        self.buffered_request_bytes.load(Ordering::Relaxed)
    }
}

/// A share of [`ServerConfig::buffered_request_bytes_max`], given back when dropped.
struct Claim {
    shared: Arc<Shared>,
    bytes: usize,
}

impl Claim {
    /// Takes `more` bytes; false (taking nothing) if that would pass the budget.
    fn grow(&mut self, more: usize) -> bool {
        let before = self
            .shared
            .buffered_request_bytes
            .fetch_add(more, Ordering::Relaxed);
        if before + more > self.shared.config.buffered_request_bytes_max {
            self.shared
                .buffered_request_bytes
                .fetch_sub(more, Ordering::Relaxed);
            return false;
        }
        self.bytes += more;
        true
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.shared
            .buffered_request_bytes
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Serves `router` on every connection `listener` accepts until `shutdown` resolves;
/// then sends every connection a GOAWAY, lets the calls in flight finish (at most
/// [`ServerConfig::shutdown_grace`]) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Arc<Router>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let shared = Shared::new(config);
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    if connections.len() >= shared.config.max_connections {
                        tracing::warn!(%peer, limit = shared.config.max_connections, "too many gRPC connections: closed a new one");
                        continue;
                    }
                    // Answers go out at once: with Nagle's algorithm one could wait for
                    // the client's delayed ACK (40 ms).
                    let _ = socket.set_nodelay(true);
                    // A client that vanished (a partition, a killed host) must not hold
                    // its connection forever: keepalive probes close it.
                    let keepalive = socket2::TcpKeepalive::new()
                        .with_time(KEEPALIVE_IDLE)
                        .with_interval(KEEPALIVE_INTERVAL)
                        .with_retries(KEEPALIVE_RETRIES);
                    let _ = socket2::SockRef::from(&socket).set_tcp_keepalive(&keepalive);
                    let (router, shared, stopping) = (router.clone(), shared.clone(), stopping.clone());
                    connections.spawn(async move {
                        match serve_connection(socket, router, shared, stopping).await {
                            Err(ServeError::Protocol(e)) => {
                                tracing::warn!(%peer, error = %e, "a gRPC client broke the protocol");
                            }
                            Err(e) => tracing::debug!(%peer, error = %e, "gRPC connection ended"),
                            Ok(()) => {}
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accepting a gRPC connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let _ = stop.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(shared.config.shutdown_grace, drained)
        .await
        .is_err()
    {
        connections.abort_all();
    }
}

/// Idle time before keepalive probes start on a client's connection.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// Time between keepalive probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// Unanswered keepalive probes before a client's connection is closed.
const KEEPALIVE_RETRIES: u32 = 3;
/// Rounds of reading, answering and writing one poll of a connection does at most
/// before it yields to the runtime.
const TURNS_PER_POLL: usize = 64;
/// Answers taken from the calls in one round at most.
const OUTPUTS_PER_TURN: usize = 4096;
/// How long a closing connection keeps reading (and dropping) what its client still
/// sends, so that closing does not turn into a reset that could destroy the GOAWAY.
const LINGER: Duration = Duration::from_secs(1);

/// Why a connection ended early.
#[derive(Debug)]
pub enum ServeError {
    /// The socket failed.
    Io(std::io::Error),
    /// The client broke the protocol (the GOAWAY it was sent says how).
    Protocol(ConnectionError),
    /// The client sent no preface in time, or read nothing of the answers for too long.
    TimedOut(&'static str),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Io(e) => write!(f, "i/o: {e}"),
            ServeError::Protocol(e) => write!(f, "{e}"),
            ServeError::TimedOut(what) => write!(f, "timed out: {what}"),
        }
    }
}

impl std::error::Error for ServeError {}

/// Serves one connection until the client closes it or, once `stopping` turns true,
/// until its calls have finished.
pub async fn serve_connection<T>(
    io: T,
    router: Arc<Router>,
    shared: Arc<Shared>,
    mut stopping: watch::Receiver<bool>,
) -> Result<(), ServeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut connection = Connection::new(io, router, shared);
    let stop = async {
        while !*stopping.borrow_and_update() {
            if stopping.changed().await.is_err() {
                // The server went away without a shutdown: serve on.
                std::future::pending::<()>().await;
            }
        }
    };
    let result = tokio::select! {
        result = std::future::poll_fn(|cx| connection.poll(cx)) => result,
        () = stop => {
            connection.go_away(Reason::NO_ERROR, "the server is shutting down");
            std::future::poll_fn(|cx| connection.poll(cx)).await
        }
    };
    if !connection.eof {
        connection.linger().await;
    }
    result
}

/// Where a request's body has got to.
enum Body {
    /// No data yet.
    Empty,
    /// One DATA frame's payload (the common case: no copy).
    One(Bytes),
    /// Several, gathered.
    Gathered(BytesMut),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::One(bytes) => bytes.len(),
            Body::Gathered(bytes) => bytes.len(),
        }
    }

    fn push(&mut self, data: Bytes) {
        *self = match std::mem::replace(self, Body::Empty) {
            Body::Empty => Body::One(data),
            Body::One(first) => {
                let mut gathered = BytesMut::with_capacity(first.len() + data.len());
                gathered.extend_from_slice(&first);
                gathered.extend_from_slice(&data);
                Body::Gathered(gathered)
            }
            Body::Gathered(mut gathered) => {
                gathered.extend_from_slice(&data);
                Body::Gathered(gathered)
            }
        }
    }

    fn prefix(&self) -> &[u8] {
        match self {
            Body::Empty => &[],
            Body::One(bytes) => bytes,
            Body::Gathered(bytes) => bytes,
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Body::Empty => Bytes::new(),
            Body::One(bytes) => bytes,
            Body::Gathered(bytes) => bytes.freeze(),
        }
    }
}

/// A request still arriving.
struct Receiving {
    handler: usize,
    metadata: MetadataMap,
    timeout: Option<Duration>,
    body: Body,
    /// What the client may still send on this stream.
    window: RecvWindow,
    /// The body's share of the server's budget.
    claim: Claim,
}

/// Whether a streaming call may produce its next message: closed while the messages it
/// already produced wait for the client's window, so that a client that does not read
/// makes its call wait (a watch then lags and ends) instead of filling memory.
#[derive(Default)]
struct Gate {
    closed: AtomicBool,
    waker: AtomicWaker,
}

impl Gate {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn open(&self) {
        self.closed.store(false, Ordering::Release);
        self.waker.wake();
    }
}

/// One stream (one call) of the connection.
struct StreamState {
    /// The request, while it arrives; `None` once the call runs.
    receiving: Option<Receiving>,
    /// Whether the client has ended its side (END_STREAM).
    client_done: bool,
    /// What the client lets us send on this stream (may go negative, §6.9.2).
    send_window: i64,
    headers_sent: bool,
    /// Data frames' payloads waiting for flow-control window, in order.
    blocked: VecDeque<Bytes>,
    /// Whether the stream is in the connection's list of blocked streams.
    listed_blocked: bool,
    /// The closing header block, waiting behind `blocked`.
    closing: Option<Bytes>,
    /// Cancels the running call.
    abort: Option<AbortHandle>,
    /// A streaming call's gate.
    gate: Option<Arc<Gate>>,
}

/// A running call's next output, tagged with its stream: an answer, a status that
/// ends it, or `None` when it has ended (successfully, or because it was aborted).
type Output = (u32, Option<Result<Answer, Status>>);

/// A running call as a stream of [`Output`]s that always ends with `(id, None)`; fails
/// with DEADLINE_EXCEEDED when its `grpc-timeout` passes, and with UNKNOWN if its
/// handler panics (the call may have had an effect).
struct Tagged {
    id: u32,
    responses: Abortable<Responses>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    gate: Option<Arc<Gate>>,
    ended: bool,
}

impl Stream for Tagged {
    type Item = Output;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Output>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            self.ended = true;
            let status = Status::deadline_exceeded("the call's grpc-timeout passed");
            return Poll::Ready(Some((self.id, Some(Err(status)))));
        }
        if let Some(gate) = &self.gate
            && gate.closed.load(Ordering::Acquire)
        {
            gate.waker.register(cx.waker());
            if gate.closed.load(Ordering::Acquire) {
                return Poll::Pending;
            }
        }
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.responses.poll_next_unpin(cx)
        }));
        let item = match polled {
            Ok(Poll::Ready(item)) => item,
            Ok(Poll::Pending) => return Poll::Pending,
            Err(_) => {
                tracing::error!(stream = self.id, "a gRPC handler panicked");
                Some(Err(Status::unknown(
                    "the server failed while handling the call; it may or may not have had an effect",
                )))
            }
        };
        if item.is_none() || matches!(item, Some(Err(_))) {
            self.ended = true;
        }
        Poll::Ready(Some((self.id, item)))
    }
}

/// The server side of one HTTP/2 connection.
struct Connection<T> {
    core: Core<T>,
    router: Arc<Router>,
    shared: Arc<Shared>,
    preface_read: bool,
    settings_read: bool,
    streams: HashMap<u32, StreamState>,
    /// Streams with data waiting for flow-control window, oldest first.
    blocked: VecDeque<u32>,
    calls: SelectAll<Tagged>,
    /// The highest stream id the client has opened.
    last_stream: u32,
    /// No new streams: we sent a GOAWAY, or the client did.
    going_away: bool,
    /// We sent a GOAWAY.
    goaway_sent: bool,
    /// The client closed its side of the socket.
    eof: bool,
    /// A connection error to end with once the GOAWAY is written.
    failed: Option<ConnectionError>,
    /// When the connection last made progress (read or wrote); a handshake that does
    /// not finish, or answers no one reads, are timed from it.
    last_progress: Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// Client resets of running calls since `resets_since`.
    resets: u32,
    resets_since: Instant,
    response_headers: Bytes,
    ok_trailers: Bytes,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Connection<T> {
    fn new(io: T, router: Arc<Router>, shared: Arc<Shared>) -> Connection<T> {
        let config = &shared.config;
        let local = Local {
            stream_window: config.stream_window_bytes.max(DEFAULT_WINDOW_BYTES),
            connection_window: config.connection_window_bytes,
            header_block_bytes_max: 4 * config.max_header_list_bytes + 4096,
        };
        let settings = [
            (
                setting::MAX_CONCURRENT_STREAMS,
                config.max_concurrent_streams,
            ),
            (setting::INITIAL_WINDOW_SIZE, local.stream_window),
            (
                setting::MAX_HEADER_LIST_SIZE,
                u32::try_from(config.max_header_list_bytes).unwrap_or(u32::MAX),
            ),
        ];
        // The server's preface is its SETTINGS (§3.4).
        let core = Core::new(io, local, b"", &settings);
        let now = Instant::now();
        let handshake = config.handshake_timeout;
        Connection {
            core,
            router,
            shared,
            preface_read: false,
            settings_read: false,
            streams: HashMap::new(),
            blocked: VecDeque::new(),
            calls: SelectAll::new(),
            last_stream: 0,
            going_away: false,
            goaway_sent: false,
            eof: false,
            failed: None,
            last_progress: now,
            timer: Box::pin(tokio::time::sleep_until(now + handshake)),
            resets: 0,
            resets_since: now,
            response_headers: grpc::response_headers(),
            ok_trailers: grpc::ok_trailers(),
        }
    }

    /// Does everything that can be done now, or a good share of it (then yields to the
    /// runtime, to come back at once); ready once the connection is over.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ServeError>> {
        for _ in 0..TURNS_PER_POLL {
            let mut progress = false;
            if self.may_read() {
                match self.core.poll_read(cx) {
                    Poll::Ready(Ok(false)) => {
                        self.eof = true;
                        progress = true;
                    }
                    Poll::Ready(Ok(true)) => {
                        progress = true;
                        if let Err(e) = self.read_frames() {
                            self.fail(e);
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(ServeError::Io(e))),
                    Poll::Pending => {}
                }
            }
            // Answers are taken from the calls only while there is room to write them,
            // and a bounded number per turn (a call that always has one must not keep
            // the loop from reading and writing).
            for _ in 0..OUTPUTS_PER_TURN {
                if self.core.write.len() >= self.shared.config.write_buffer_bytes_max {
                    break;
                }
                let Poll::Ready(Some((id, output))) = self.calls.poll_next_unpin(cx) else {
                    break;
                };
                progress = true;
                self.on_output(id, output);
            }
            match self.core.poll_flush(cx) {
                Ok(flushed) => progress |= flushed,
                Err(e) => return Poll::Ready(Err(ServeError::Io(e))),
            }
            if self.core.write.is_empty() {
                if let Some(error) = self.failed.take() {
                    return Poll::Ready(Err(ServeError::Protocol(error)));
                }
                if self.eof || (self.going_away && self.streams.is_empty()) {
                    return Poll::Ready(Ok(()));
                }
            }
            if progress {
                self.last_progress = Instant::now();
                continue;
            }
            return self.poll_timer(cx);
        }
        // Still busy: let the runtime's other tasks run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Times out a handshake that does not finish, and answers nobody reads.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ServeError>> {
        let config = &self.shared.config;
        let (limit, what) = if !self.settings_read {
            (config.handshake_timeout, "no HTTP/2 preface and SETTINGS")
        } else if !self.core.write.is_empty() {
            (
                config.write_stall_timeout,
                "the client read none of its answers",
            )
        } else {
            return Poll::Pending;
        };
        // The timer is re-armed only when it fires early (progress moves the due time
        // later, never earlier): resetting it on every poll would cost a timer-wheel
        // update per turn.
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = self.last_progress + limit;
            if due <= Instant::now() {
                return Poll::Ready(Err(ServeError::TimedOut(what)));
            }
            self.timer.as_mut().reset(due);
        }
    }

    /// After the last answer: closes the sending side, then reads (and drops) what the
    /// client still sends, for a short while, so that the close is not a reset.
    async fn linger(&mut self) {
        let close = async {
            let _ = self.core.io.shutdown().await;
            let mut sink = [0u8; 4096];
            while matches!(self.core.io.read(&mut sink).await, Ok(n) if n > 0) {}
        };
        let _ = tokio::time::timeout(LINGER, close).await;
    }

    fn may_read(&self) -> bool {
        !self.eof
            && self.failed.is_none()
            && self.core.write.len() < self.shared.config.write_buffer_bytes_max
    }

    /// Ends the connection with a GOAWAY carrying `error`, once it is written.
    fn fail(&mut self, error: ConnectionError) {
        frame::encode_goaway(
            &mut self.core.write,
            self.last_stream,
            error.reason,
            error.message.as_bytes(),
        );
        for (_, stream) in self.streams.drain() {
            if let Some(abort) = stream.abort {
                abort.abort();
            }
        }
        self.failed = Some(error);
    }

    /// Stops taking new streams (GOAWAY); the connection ends when its calls have.
    fn go_away(&mut self, reason: Reason, message: &str) {
        self.going_away = true;
        if !self.goaway_sent {
            self.goaway_sent = true;
            frame::encode_goaway(
                &mut self.core.write,
                self.last_stream,
                reason,
                message.as_bytes(),
            );
        }
    }

    fn read_frames(&mut self) -> Result<(), ConnectionError> {
        if !self.preface_read {
            let read = &self.core.read;
            let seen = read.len().min(PREFACE.len());
            if read[..seen] != PREFACE[..seen] {
                return Err(ConnectionError::new(
                    Reason::PROTOCOL_ERROR,
                    "not an HTTP/2 connection preface (this port speaks gRPC)",
                ));
            }
            if seen < PREFACE.len() {
                return Ok(());
            }
            self.core.read.advance(PREFACE.len());
            self.preface_read = true;
        }
        if !self.settings_read && self.core.read.len() >= HEAD_BYTES {
            // §3.4: the client's preface goes on with SETTINGS.
            let (kind, frame_flags) = (self.core.read[3], self.core.read[4]);
            if kind != 4 || frame_flags & flags::ACK != 0 {
                return Err(protocol("the client's first frame is not SETTINGS"));
            }
            self.settings_read = true;
        }
        while self.failed.is_none() {
            let Some(event) = self.core.next_event()? else {
                break;
            };
            self.on_event(event)?;
        }
        Ok(())
    }

    fn on_event(&mut self, event: Event) -> Result<(), ConnectionError> {
        match event {
            Event::Data {
                stream,
                payload,
                flow,
                end_stream,
            } => self.on_data(stream, payload, flow, end_stream),
            Event::Headers {
                stream,
                end_stream,
                block,
            } => self.on_header_block(stream, end_stream, &block),
            Event::Reset { stream, .. } => {
                if stream > self.last_stream {
                    return Err(protocol("RST_STREAM on an idle stream"));
                }
                if let Some(state) = self.streams.remove(&stream)
                    && let Some(abort) = state.abort
                {
                    abort.abort();
                    self.count_reset()?;
                }
                Ok(())
            }
            Event::Settings(settings) => {
                if let Some(window) = settings.initial_window_size {
                    shift_windows(
                        self.core.peer_initial_window,
                        window,
                        self.streams.values_mut().map(|s| &mut s.send_window),
                    )?;
                    self.core.peer_initial_window = window;
                }
                self.send_blocked();
                Ok(())
            }
            Event::GoAway { .. } => {
                // The client opens no more streams; the ones it has are served.
                self.going_away = true;
                Ok(())
            }
            Event::WindowUpdate { stream, increment } => {
                if stream > self.last_stream {
                    return Err(protocol("WINDOW_UPDATE on an idle stream"));
                }
                let Some(state) = self.streams.get_mut(&stream) else {
                    return Ok(());
                };
                state.send_window += i64::from(increment);
                if increment == 0 {
                    self.reset(stream, Reason::PROTOCOL_ERROR);
                } else if state.send_window > i64::from(MAX_WINDOW_BYTES) {
                    self.reset(stream, Reason::FLOW_CONTROL_ERROR);
                } else {
                    self.send_blocked();
                }
                Ok(())
            }
            Event::StreamError { stream, reason } => {
                self.reset(stream, reason);
                Ok(())
            }
            Event::Alive => {
                // A connection WINDOW_UPDATE may have opened room.
                self.send_blocked();
                Ok(())
            }
        }
    }

    /// Counts a client reset of a running call; too many is a connection error.
    fn count_reset(&mut self) -> Result<(), ConnectionError> {
        if self.resets_since.elapsed() > RESETS_WINDOW {
            self.resets = 0;
            self.resets_since = Instant::now();
        }
        self.resets += 1;
        if self.resets > self.shared.config.resets_max {
            return Err(ConnectionError::new(
                Reason::ENHANCE_YOUR_CALM,
                "too many calls reset by the client",
            ));
        }
        Ok(())
    }

    fn on_data(
        &mut self,
        id: u32,
        payload: Bytes,
        flow: u32,
        end_stream: bool,
    ) -> Result<(), ConnectionError> {
        if id > self.last_stream {
            return Err(protocol("DATA on a stream that was never opened"));
        }
        let max_message_bytes = self.router.max_message_bytes;
        let Some(stream) = self.streams.get_mut(&id) else {
            // A stream we already answered (or reset): ignore what is still in flight.
            return Ok(());
        };
        let Some(receiving) = stream.receiving.as_mut() else {
            if stream.client_done {
                self.reset(id, Reason::STREAM_CLOSED);
            }
            return Ok(());
        };
        if !receiving.window.receive(flow) {
            self.reset(id, Reason::FLOW_CONTROL_ERROR);
            return Ok(());
        }
        let refusal = if !receiving.claim.grow(payload.len()) {
            Some(Status::resource_exhausted(
                "the server holds too many incomplete requests; retry later",
            ))
        } else {
            receiving.body.push(payload);
            match grpc::declared_length(receiving.body.prefix()) {
                Some(length) if length > max_message_bytes => {
                    Some(Status::resource_exhausted(format!(
                        "the request message is {length} bytes; the limit is {max_message_bytes}"
                    )))
                }
                _ if receiving.body.len() > PREFIX_BYTES + max_message_bytes => Some(
                    Status::internal("a unary call carries more than one request message"),
                ),
                _ => None,
            }
        };
        if let Some(status) = refusal {
            stream.client_done = end_stream;
            stream.receiving = None;
            self.close_with(id, &status);
            return Ok(());
        }
        if end_stream {
            stream.client_done = true;
            self.start_call(id);
        } else {
            receiving.window.release(&mut self.core.write, id, flow);
        }
        Ok(())
    }

    fn on_header_block(
        &mut self,
        id: u32,
        end_stream: bool,
        block: &[u8],
    ) -> Result<(), ConnectionError> {
        let mut request = RequestHead::new(&self.router, self.shared.config.max_header_list_bytes);
        self.core
            .decoder
            .decode(block, |name, value| request.field(name, value))?;
        if id <= self.last_stream {
            // On an open stream this can only be trailers, which end the request.
            let Some(stream) = self.streams.get_mut(&id) else {
                return Ok(());
            };
            if !end_stream || stream.client_done {
                self.reset(id, Reason::PROTOCOL_ERROR);
                return Ok(());
            }
            stream.client_done = true;
            if stream.receiving.is_some() {
                self.start_call(id);
            }
            return Ok(());
        }
        if id.is_multiple_of(2) {
            return Err(protocol("a client opened an even-numbered stream"));
        }
        self.last_stream = id;
        if self.going_away
            || self.streams.len() >= self.shared.config.max_concurrent_streams as usize
        {
            frame::encode_rst_stream(&mut self.core.write, id, Reason::REFUSED_STREAM);
            return Ok(());
        }
        let mut stream = StreamState {
            receiving: None,
            client_done: end_stream,
            send_window: i64::from(self.core.peer_initial_window),
            headers_sent: false,
            blocked: VecDeque::new(),
            listed_blocked: false,
            closing: None,
            abort: None,
            gate: None,
        };
        let refusal = match request.check() {
            Ok(handler) => {
                stream.receiving = Some(Receiving {
                    handler,
                    metadata: MetadataMap::from_headers(request.metadata),
                    timeout: request.timeout,
                    body: Body::Empty,
                    window: self.core.stream_recv_window(),
                    claim: Claim {
                        shared: self.shared.clone(),
                        bytes: 0,
                    },
                });
                None
            }
            Err(refusal) => Some(refusal),
        };
        self.streams.insert(id, stream);
        match refusal {
            None if end_stream => self.start_call(id),
            None => {}
            Some(Refusal::Http(block)) => self.close_block(id, block),
            Some(Refusal::Grpc(status)) => self.close_with(id, &status),
        }
        Ok(())
    }

    /// Starts the call of a stream whose request is complete.
    fn start_call(&mut self, id: u32) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let Some(receiving) = stream.receiving.take() else {
            return;
        };
        let message = match grpc::unary_message(receiving.body.into_bytes()) {
            Ok(message) => message,
            Err(status) => {
                self.close_with(id, &status);
                return;
            }
        };
        let (handler, streaming) = &self.router.handlers[receiving.handler];
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handler(receiving.metadata, message)
        }));
        let Ok(responses) = started else {
            tracing::error!(stream = id, "a gRPC handler panicked");
            let status = Status::unknown("the server failed while starting the call");
            self.close_with(id, &status);
            return;
        };
        let (abort, registration) = AbortHandle::new_pair();
        stream.abort = Some(abort);
        let gate = streaming.then(|| Arc::new(Gate::default()));
        stream.gate = gate.clone();
        self.calls.push(Tagged {
            id,
            responses: Abortable::new(responses, registration),
            deadline: receiving
                .timeout
                .map(|timeout| Box::pin(tokio::time::sleep(timeout))),
            gate,
            ended: false,
        });
    }

    fn on_output(&mut self, id: u32, output: Option<Result<Answer, Status>>) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return; // reset meanwhile
        };
        if stream.closing.is_some() {
            return; // already ending
        }
        match output {
            Some(Ok(answer)) => {
                if !stream.headers_sent {
                    stream.headers_sent = true;
                    let headers = self.response_headers.clone();
                    self.core.send_headers(id, &headers, false);
                }
                if let Answer::Message(message) = answer {
                    self.send_data(id, message);
                }
            }
            Some(Err(status)) => {
                if let Some(abort) = stream.abort.take() {
                    abort.abort();
                }
                self.close_with(id, &status);
            }
            None => {
                if self.streams.get(&id).is_some_and(|s| s.headers_sent) {
                    let trailers = self.ok_trailers.clone();
                    self.close_block(id, trailers);
                } else {
                    self.close_with(id, &Status::new(Code::Ok, ""));
                }
            }
        }
    }

    /// Ends stream `id` with `status`: trailers, or a trailers-only response.
    fn close_with(&mut self, id: u32, status: &Status) {
        let headers_sent = self.streams.get(&id).is_some_and(|s| s.headers_sent);
        self.close_block(id, grpc::status_block(status, !headers_sent));
    }

    /// Ends stream `id` with the header block `block` (END_STREAM), after any data
    /// still waiting for window.
    fn close_block(&mut self, id: u32, block: Bytes) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if !stream.blocked.is_empty() {
            stream.closing = Some(block);
            return;
        }
        self.core.send_headers(id, &block, true);
        self.finish(id);
    }

    /// Forgets a stream whose answer is complete; a client still sending is told to
    /// stop without error (§8.1).
    fn finish(&mut self, id: u32) {
        if let Some(stream) = self.streams.remove(&id) {
            if let Some(abort) = stream.abort {
                abort.abort();
            }
            if !stream.client_done {
                frame::encode_rst_stream(&mut self.core.write, id, Reason::NO_ERROR);
            }
        }
    }

    /// Ends stream `id` with RST_STREAM.
    fn reset(&mut self, id: u32, reason: Reason) {
        frame::encode_rst_stream(&mut self.core.write, id, reason);
        if let Some(stream) = self.streams.remove(&id)
            && let Some(abort) = stream.abort
        {
            abort.abort();
        }
    }

    /// Sends `data` on stream `id` as far as the windows allow; the rest waits (and a
    /// streaming call waits with it).
    fn send_data(&mut self, id: u32, data: Bytes) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if stream.blocked.is_empty() {
            let rest = self
                .core
                .send_data(id, &mut stream.send_window, data, false);
            if rest.is_empty() {
                return;
            }
            stream.blocked.push_back(rest);
        } else {
            stream.blocked.push_back(data);
        }
        if let Some(gate) = &stream.gate {
            gate.close();
        }
        if !stream.listed_blocked {
            stream.listed_blocked = true;
            self.blocked.push_back(id);
        }
    }

    /// Sends what waited for window, stream by stream, oldest first.
    fn send_blocked(&mut self) {
        let mut still = VecDeque::new();
        while let Some(id) = self.blocked.pop_front() {
            let Some(stream) = self.streams.get_mut(&id) else {
                continue;
            };
            while let Some(data) = stream.blocked.pop_front() {
                let rest = self
                    .core
                    .send_data(id, &mut stream.send_window, data, false);
                if !rest.is_empty() {
                    stream.blocked.push_front(rest);
                    break;
                }
            }
            if !stream.blocked.is_empty() {
                still.push_back(id);
                continue;
            }
            stream.listed_blocked = false;
            if let Some(gate) = &stream.gate {
                gate.open();
            }
            if let Some(block) = stream.closing.take() {
                self.core.send_headers(id, &block, true);
                self.finish(id);
            }
        }
        self.blocked = still;
    }
}

/// Why a request is answered without calling its method.
enum Refusal {
    /// Not gRPC: an HTTP error response.
    Http(Bytes),
    /// gRPC, but not callable: a status.
    Grpc(Status),
}

/// What a request's header block said.
struct RequestHead<'a> {
    router: &'a Router,
    method_post: bool,
    method_seen: bool,
    /// The handler `:path` names, if it names one.
    handler: Option<usize>,
    /// A `:path` that names no method, for the error.
    unknown_path: Option<String>,
    content_type_grpc: bool,
    compressed: bool,
    timeout: Option<Duration>,
    bad_timeout: bool,
    metadata: http::HeaderMap,
    /// Header bytes decoded, as SETTINGS_MAX_HEADER_LIST_SIZE counts them.
    size: usize,
    limit: usize,
    too_large: bool,
    malformed: Option<&'static str>,
    regular_seen: bool,
}

impl<'a> RequestHead<'a> {
    fn new(router: &'a Router, limit: usize) -> RequestHead<'a> {
        RequestHead {
            router,
            method_post: false,
            method_seen: false,
            handler: None,
            unknown_path: None,
            content_type_grpc: false,
            compressed: false,
            timeout: None,
            bad_timeout: false,
            metadata: http::HeaderMap::new(),
            size: 0,
            limit,
            too_large: false,
            malformed: None,
            regular_seen: false,
        }
    }

    fn field(&mut self, name: &[u8], value: &[u8]) {
        self.size += name.len() + value.len() + 32;
        if self.size > self.limit {
            self.too_large = true;
            return;
        }
        if name.first() == Some(&b':') {
            if self.regular_seen {
                self.malformed = Some("a pseudo-header after a regular header");
            }
            match name {
                b":method" => {
                    self.method_seen = true;
                    self.method_post = value == b"POST";
                }
                b":path" => match self.router.paths.get(value) {
                    Some(handler) => self.handler = Some(*handler),
                    None => self.unknown_path = Some(String::from_utf8_lossy(value).into_owned()),
                },
                b":scheme" | b":authority" => {}
                _ => self.malformed = Some("an unknown pseudo-header"),
            }
            return;
        }
        self.regular_seen = true;
        match name {
            b"content-type" => {
                self.content_type_grpc = value.starts_with(grpc::CONTENT_TYPE)
                    && matches!(
                        value.get(grpc::CONTENT_TYPE.len()),
                        None | Some(b'+' | b';')
                    );
            }
            b"grpc-timeout" => match grpc::parse_timeout(value) {
                Some(timeout) => self.timeout = Some(timeout),
                None => self.bad_timeout = true,
            },
            b"grpc-encoding" => self.compressed = value != b"identity",
            b"te" | b"user-agent" | b"grpc-accept-encoding" | b"grpc-message-type" => {}
            b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding"
            | b"upgrade" => self.malformed = Some("a connection-specific header"),
            _ => {
                if let (Ok(name), Ok(value)) = (
                    http::HeaderName::from_bytes(name),
                    http::HeaderValue::from_bytes(value),
                ) {
                    self.metadata.append(name, value);
                }
            }
        }
    }

    /// The handler to call, or why none will be.
    fn check(&self) -> Result<usize, Refusal> {
        if let Some(why) = self.malformed {
            return Err(Refusal::Http(grpc::http_error_block(
                400,
                Code::Internal,
                &format!("malformed request: {why}"),
            )));
        }
        if self.too_large {
            return Err(Refusal::Http(grpc::http_error_block(
                431,
                Code::ResourceExhausted,
                "the request's headers are too large",
            )));
        }
        if !self.method_seen || !self.method_post {
            return Err(Refusal::Http(grpc::http_error_block(
                405,
                Code::Unimplemented,
                "gRPC calls are POST requests",
            )));
        }
        if !self.content_type_grpc {
            return Err(Refusal::Http(grpc::http_error_block(
                415,
                Code::Unknown,
                "the content type is not application/grpc",
            )));
        }
        if self.bad_timeout {
            return Err(Refusal::Grpc(Status::invalid_argument(
                "unreadable grpc-timeout",
            )));
        }
        if self.compressed {
            return Err(Refusal::Grpc(Status::unimplemented(
                "compressed messages are not supported (grpc-accept-encoding: identity)",
            )));
        }
        match (self.handler, &self.unknown_path) {
            (Some(handler), _) => Ok(handler),
            (None, Some(path)) => Err(Refusal::Grpc(Status::unimplemented(format!(
                "unknown method {path}"
            )))),
            (None, None) => Err(Refusal::Http(grpc::http_error_block(
                400,
                Code::Internal,
                "malformed request: no :path",
            ))),
        }
    }
}
