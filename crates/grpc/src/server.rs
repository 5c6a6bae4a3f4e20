//! The server: a [`Router`] of gRPC methods, served on a listener by [`serve`].
//!
//! One task per connection does everything for it, with no task per call: it reads
//! whatever the socket holds, decodes every frame in it, starts the calls whose requests
//! are complete, polls the calls that have something to say, and writes all their
//! answers in one `write`. With many clients on one connection, one read and one write
//! carry dozens of calls; with one client, an answer leaves as soon as the engine gives
//! it, one wake-up after the reply. Handlers are the methods of the tonic-generated
//! service traits, so the services are the same code whichever transport serves them.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::stream::{self, AbortHandle, Abortable, SelectAll, Stream, StreamExt};
use futures_util::{FutureExt, TryFutureExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::frame::{
    self, ConnectionError, DEFAULT_MAX_FRAME_BYTES, DEFAULT_WINDOW_BYTES, HEAD_BYTES, Head, Kind,
    MAX_WINDOW_BYTES, PREFACE, Reason, Settings, flags, setting,
};
use crate::grpc::{self, PREFIX_BYTES};
use crate::hpack;

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
    handlers: Vec<Handler>,
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

    fn add(mut self, path: &str, handler: Handler) -> Router {
        self.paths
            .insert(path.as_bytes().into(), self.handlers.len());
        self.handlers.push(handler);
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

/// Limits of a server's connections.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Calls one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS);
    /// more are refused with REFUSED_STREAM, which clients retry.
    pub max_concurrent_streams: u32,
    /// The largest header block (after decoding) a request may have.
    pub max_header_list_bytes: usize,
    /// The receive window of each stream (SETTINGS_INITIAL_WINDOW_SIZE).
    pub stream_window_bytes: u32,
    /// The receive window of each connection.
    pub connection_window_bytes: u32,
    /// Answers waiting to be written beyond which a connection stops reading requests
    /// (its client is not reading).
    pub write_buffer_bytes_max: usize,
    /// How long a shutdown waits for calls in flight.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            max_concurrent_streams: 4096,
            max_header_list_bytes: 16 * 1024,
            stream_window_bytes: 1 << 20,
            connection_window_bytes: 16 << 20,
            write_buffer_bytes_max: 4 << 20,
            shutdown_grace: Duration::from_secs(5),
        }
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
    let config = Arc::new(config);
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    // Answers go out at once: with Nagle's algorithm one could wait for
                    // the client's delayed ACK (40 ms).
                    let _ = socket.set_nodelay(true);
                    let (router, config, stopping) = (router.clone(), config.clone(), stopping.clone());
                    connections.spawn(async move {
                        match serve_connection(socket, router, config, stopping).await {
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
    if tokio::time::timeout(config.shutdown_grace, drained)
        .await
        .is_err()
    {
        connections.abort_all();
    }
}

/// Why a connection ended early.
#[derive(Debug)]
pub enum ServeError {
    /// The socket failed.
    Io(std::io::Error),
    /// The protocol was broken (by the peer, or it told us so in a GOAWAY).
    Protocol(ConnectionError),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Io(e) => write!(f, "i/o: {e}"),
            ServeError::Protocol(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ServeError {}

/// Serves one connection until the client closes it or, once `stopping` turns true,
/// until its calls have finished.
pub async fn serve_connection<T>(
    io: T,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    mut stopping: watch::Receiver<bool>,
) -> Result<(), ServeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut connection = Connection::new(io, router, config);
    let stop = async {
        while !*stopping.borrow_and_update() {
            if stopping.changed().await.is_err() {
                // The server went away without a shutdown: serve on.
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        result = std::future::poll_fn(|cx| connection.poll(cx)) => return result,
        () = stop => {}
    }
    connection.go_away(Reason::NO_ERROR, "the server is shutting down");
    std::future::poll_fn(|cx| connection.poll(cx)).await
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
    /// Bytes received since the stream's window was last topped up.
    unacknowledged: u32,
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
    blocked: std::collections::VecDeque<Bytes>,
    /// The closing header block, waiting behind `blocked`.
    closing: Option<Bytes>,
    /// Cancels the running call.
    abort: Option<AbortHandle>,
}

/// A running call's next output, tagged with its stream: a message, a status that
/// ends it, or `None` when it has ended (successfully, or because it was aborted).
type Output = (u32, Option<Result<Answer, Status>>);

/// A running call as a stream of [`Output`]s that always ends with `(id, None)`, and
/// fails with DEADLINE_EXCEEDED when its `grpc-timeout` passes.
struct Tagged {
    id: u32,
    responses: Abortable<Responses>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
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
        let item = ready!(self.responses.poll_next_unpin(cx));
        if item.is_none() {
            self.ended = true;
        }
        Poll::Ready(Some((self.id, item)))
    }
}

/// The server side of one HTTP/2 connection.
struct Connection<T> {
    io: T,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    read: BytesMut,
    write: BytesMut,
    preface_read: bool,
    settings_read: bool,
    decoder: hpack::Decoder,
    /// A header block waiting for its CONTINUATION frames: (stream, end_stream, block).
    continuation: Option<(u32, bool, BytesMut)>,
    streams: HashMap<u32, StreamState>,
    /// Streams with data waiting for flow-control window, oldest first.
    blocked: std::collections::VecDeque<u32>,
    calls: SelectAll<Tagged>,
    /// The highest stream id the client has opened.
    last_stream: u32,
    /// What the client lets us send on the connection.
    send_window: i64,
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE.
    peer_initial_window: u32,
    /// The client's SETTINGS_MAX_FRAME_SIZE.
    peer_max_frame: u32,
    /// Connection-level bytes received since the window was last topped up.
    unacknowledged: u32,
    /// We sent a GOAWAY: no new streams.
    going_away: bool,
    /// The client closed its side of the socket.
    eof: bool,
    /// A connection error to end with once the GOAWAY is written.
    failed: Option<ConnectionError>,
    response_headers: Bytes,
    ok_trailers: Bytes,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Connection<T> {
    fn new(io: T, router: Arc<Router>, config: Arc<ServerConfig>) -> Connection<T> {
        let mut write = BytesMut::with_capacity(16 * 1024);
        // The server preface (§3.4), and a bigger connection window than the default.
        frame::encode_settings(
            &mut write,
            &[
                (
                    setting::MAX_CONCURRENT_STREAMS,
                    config.max_concurrent_streams,
                ),
                (setting::INITIAL_WINDOW_SIZE, config.stream_window_bytes),
                (
                    setting::MAX_HEADER_LIST_SIZE,
                    u32::try_from(config.max_header_list_bytes).unwrap_or(u32::MAX),
                ),
            ],
        );
        if config.connection_window_bytes > DEFAULT_WINDOW_BYTES {
            frame::encode_window_update(
                &mut write,
                0,
                (config.connection_window_bytes - DEFAULT_WINDOW_BYTES).min(MAX_WINDOW_BYTES),
            );
        }
        Connection {
            io,
            router,
            config,
            read: BytesMut::with_capacity(16 * 1024),
            write,
            preface_read: false,
            settings_read: false,
            decoder: hpack::Decoder::default(),
            continuation: None,
            streams: HashMap::new(),
            blocked: std::collections::VecDeque::new(),
            calls: SelectAll::new(),
            last_stream: 0,
            send_window: i64::from(DEFAULT_WINDOW_BYTES),
            peer_initial_window: DEFAULT_WINDOW_BYTES,
            peer_max_frame: DEFAULT_MAX_FRAME_BYTES,
            unacknowledged: 0,
            going_away: false,
            eof: false,
            failed: None,
            response_headers: grpc::response_headers(),
            ok_trailers: grpc::ok_trailers(),
        }
    }

    /// Does everything that can be done now; ready once the connection is over.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ServeError>> {
        loop {
            let mut progress = false;
            if self.may_read() {
                if self.read.capacity() - self.read.len() < 4096 {
                    self.read.reserve(16 * 1024);
                }
                match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read) {
                    Poll::Ready(Ok(0)) => {
                        self.eof = true;
                        progress = true;
                    }
                    Poll::Ready(Ok(_)) => {
                        progress = true;
                        if let Err(e) = self.read_frames() {
                            self.fail(e);
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(ServeError::Io(e))),
                    Poll::Pending => {}
                }
            }
            while let Poll::Ready(Some((id, output))) = self.calls.poll_next_unpin(cx) {
                progress = true;
                self.on_output(id, output);
            }
            while !self.write.is_empty() {
                match Pin::new(&mut self.io).poll_write(cx, &self.write) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(ServeError::Io(
                            std::io::ErrorKind::WriteZero.into(),
                        )));
                    }
                    Poll::Ready(Ok(n)) => {
                        self.write.advance(n);
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(ServeError::Io(e))),
                    Poll::Pending => break,
                }
            }
            if self.write.is_empty() {
                if let Some(error) = self.failed.take() {
                    return Poll::Ready(Err(ServeError::Protocol(error)));
                }
                if self.eof || (self.going_away && self.streams.is_empty()) {
                    return Poll::Ready(Ok(()));
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    fn may_read(&self) -> bool {
        !self.eof && self.failed.is_none() && self.write.len() < self.config.write_buffer_bytes_max
    }

    /// Ends the connection with a GOAWAY carrying `error`, once it is written.
    fn fail(&mut self, error: ConnectionError) {
        frame::encode_goaway(
            &mut self.write,
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
        if !self.going_away {
            self.going_away = true;
            frame::encode_goaway(
                &mut self.write,
                self.last_stream,
                reason,
                message.as_bytes(),
            );
        }
    }

    fn read_frames(&mut self) -> Result<(), ConnectionError> {
        if !self.preface_read {
            let seen = self.read.len().min(PREFACE.len());
            if self.read[..seen] != PREFACE[..seen] {
                return Err(ConnectionError::new(
                    Reason::PROTOCOL_ERROR,
                    "not an HTTP/2 connection preface (this port speaks gRPC)",
                ));
            }
            if seen < PREFACE.len() {
                return Ok(());
            }
            self.read.advance(PREFACE.len());
            self.preface_read = true;
        }
        while self.read.len() >= HEAD_BYTES && self.failed.is_none() {
            let mut raw = [0u8; HEAD_BYTES];
            raw.copy_from_slice(&self.read[..HEAD_BYTES]);
            let head = Head::parse(&raw);
            if head.length > DEFAULT_MAX_FRAME_BYTES {
                return Err(ConnectionError::new(
                    Reason::FRAME_SIZE_ERROR,
                    format!("a frame of {} bytes", head.length),
                ));
            }
            let total = HEAD_BYTES + head.length as usize;
            if self.read.len() < total {
                self.read.reserve(total - self.read.len());
                break;
            }
            self.read.advance(HEAD_BYTES);
            let payload = self.read.split_to(head.length as usize).freeze();
            self.on_frame(head, payload)?;
        }
        if self.unacknowledged >= self.config.connection_window_bytes / 2 {
            frame::encode_window_update(&mut self.write, 0, self.unacknowledged);
            self.unacknowledged = 0;
        }
        Ok(())
    }

    fn on_frame(&mut self, head: Head, payload: Bytes) -> Result<(), ConnectionError> {
        if !self.settings_read {
            if head.kind != Kind::Settings || head.has(flags::ACK) {
                return Err(ConnectionError::new(
                    Reason::PROTOCOL_ERROR,
                    "the client's first frame is not SETTINGS",
                ));
            }
            self.settings_read = true;
        }
        if self.continuation.is_some() && head.kind != Kind::Continuation {
            return Err(ConnectionError::new(
                Reason::PROTOCOL_ERROR,
                "a header block was interrupted by another frame",
            ));
        }
        match head.kind {
            Kind::Data => self.on_data(head, payload),
            Kind::Headers => self.on_headers(head, payload),
            Kind::Continuation => self.on_continuation(head, payload),
            Kind::Priority => {
                if head.stream == 0 {
                    return Err(protocol("PRIORITY on stream 0"));
                }
                if payload.len() != 5 {
                    frame::encode_rst_stream(
                        &mut self.write,
                        head.stream,
                        Reason::FRAME_SIZE_ERROR,
                    );
                }
                Ok(())
            }
            Kind::RstStream => self.on_rst_stream(head, &payload),
            Kind::Settings => self.on_settings(head, &payload),
            Kind::PushPromise => Err(protocol("a client sent PUSH_PROMISE")),
            Kind::Ping => {
                if head.stream != 0 {
                    return Err(protocol("PING on a stream"));
                }
                let payload: [u8; 8] = payload[..].try_into().map_err(|_| {
                    ConnectionError::new(Reason::FRAME_SIZE_ERROR, "PING is not 8 bytes")
                })?;
                if !head.has(flags::ACK) {
                    frame::encode_ping(&mut self.write, payload, true);
                }
                Ok(())
            }
            Kind::GoAway => {
                if head.stream != 0 || payload.len() < 8 {
                    return Err(protocol("malformed GOAWAY"));
                }
                // The client opens no more streams; the ones it has are served.
                self.going_away = true;
                Ok(())
            }
            Kind::WindowUpdate => self.on_window_update(head, &payload),
            Kind::Unknown(_) => Ok(()),
        }
    }

    fn on_data(&mut self, head: Head, mut payload: Bytes) -> Result<(), ConnectionError> {
        if head.stream == 0 {
            return Err(protocol("DATA on stream 0"));
        }
        // Flow control counts the whole payload, padding included (§6.9).
        self.unacknowledged += head.length;
        if head.has(flags::PADDED) {
            frame::strip_padding(&mut payload)?;
        }
        if head.stream > self.last_stream {
            return Err(protocol("DATA on a stream that was never opened"));
        }
        let end_stream = head.has(flags::END_STREAM);
        let Some(stream) = self.streams.get_mut(&head.stream) else {
            // A stream we already answered (or reset): ignore what is still in flight.
            return Ok(());
        };
        let Some(receiving) = stream.receiving.as_mut() else {
            if stream.client_done {
                self.reset(head.stream, Reason::STREAM_CLOSED);
            }
            return Ok(());
        };
        receiving.body.push(payload);
        receiving.unacknowledged += head.length;
        if let Some(length) = grpc::declared_length(receiving.body.prefix())
            && length > self.router.max_message_bytes
        {
            let status = Status::resource_exhausted(format!(
                "the request message is {length} bytes; the limit is {}",
                self.router.max_message_bytes
            ));
            stream.client_done = end_stream;
            stream.receiving = None;
            self.close_with(head.stream, &status);
            return Ok(());
        }
        if receiving.body.len() > PREFIX_BYTES + self.router.max_message_bytes {
            let status = Status::internal("a unary call carries more than one request message");
            stream.client_done = end_stream;
            stream.receiving = None;
            self.close_with(head.stream, &status);
            return Ok(());
        }
        if end_stream {
            stream.client_done = true;
            self.start_call(head.stream);
        } else if receiving.unacknowledged >= self.config.stream_window_bytes / 2 {
            frame::encode_window_update(&mut self.write, head.stream, receiving.unacknowledged);
            receiving.unacknowledged = 0;
        }
        Ok(())
    }

    fn on_headers(&mut self, head: Head, mut payload: Bytes) -> Result<(), ConnectionError> {
        if head.stream == 0 {
            return Err(protocol("HEADERS on stream 0"));
        }
        if head.has(flags::PADDED) {
            frame::strip_padding(&mut payload)?;
        }
        if head.has(flags::PRIORITY) {
            if payload.len() < 5 {
                return Err(ConnectionError::new(
                    Reason::FRAME_SIZE_ERROR,
                    "HEADERS too short for its priority",
                ));
            }
            payload.advance(5);
        }
        let end_stream = head.has(flags::END_STREAM);
        if head.has(flags::END_HEADERS) {
            return self.on_header_block(head.stream, end_stream, &payload);
        }
        let mut block = BytesMut::with_capacity(payload.len() * 2);
        block.extend_from_slice(&payload);
        self.continuation = Some((head.stream, end_stream, block));
        Ok(())
    }

    fn on_continuation(&mut self, head: Head, payload: Bytes) -> Result<(), ConnectionError> {
        let Some((stream, end_stream, mut block)) = self.continuation.take() else {
            return Err(protocol("CONTINUATION without HEADERS"));
        };
        if head.stream != stream {
            return Err(protocol("CONTINUATION on another stream"));
        }
        // Bounded: the block must be kept whole to decode it (the dynamic table depends
        // on every block), so a client may not make it grow without end.
        if block.len() + payload.len() > 4 * self.config.max_header_list_bytes + 4096 {
            return Err(ConnectionError::new(
                Reason::ENHANCE_YOUR_CALM,
                "a header block far over SETTINGS_MAX_HEADER_LIST_SIZE",
            ));
        }
        block.extend_from_slice(&payload);
        if head.has(flags::END_HEADERS) {
            return self.on_header_block(stream, end_stream, &block);
        }
        self.continuation = Some((stream, end_stream, block));
        Ok(())
    }

    fn on_header_block(
        &mut self,
        id: u32,
        end_stream: bool,
        block: &[u8],
    ) -> Result<(), ConnectionError> {
        let mut request = RequestHead::new(&self.router, self.config.max_header_list_bytes);
        self.decoder
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
        if self.going_away {
            frame::encode_rst_stream(&mut self.write, id, Reason::REFUSED_STREAM);
            return Ok(());
        }
        if self.streams.len() >= self.config.max_concurrent_streams as usize {
            frame::encode_rst_stream(&mut self.write, id, Reason::REFUSED_STREAM);
            return Ok(());
        }
        let mut stream = StreamState {
            receiving: None,
            client_done: end_stream,
            send_window: i64::from(self.peer_initial_window),
            headers_sent: false,
            blocked: std::collections::VecDeque::new(),
            closing: None,
            abort: None,
        };
        let refusal = match request.check() {
            Ok(handler) => {
                stream.receiving = Some(Receiving {
                    handler,
                    metadata: MetadataMap::from_headers(request.metadata),
                    timeout: request.timeout,
                    body: Body::Empty,
                    unacknowledged: 0,
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

    fn on_rst_stream(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnectionError> {
        if payload.len() != 4 {
            return Err(ConnectionError::new(
                Reason::FRAME_SIZE_ERROR,
                "RST_STREAM is not 4 bytes",
            ));
        }
        if head.stream == 0 || head.stream > self.last_stream {
            return Err(protocol("RST_STREAM on an idle stream"));
        }
        if let Some(stream) = self.streams.remove(&head.stream)
            && let Some(abort) = stream.abort
        {
            abort.abort();
        }
        Ok(())
    }

    fn on_settings(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnectionError> {
        if head.stream != 0 {
            return Err(protocol("SETTINGS on a stream"));
        }
        if head.has(flags::ACK) {
            if !payload.is_empty() {
                return Err(ConnectionError::new(
                    Reason::FRAME_SIZE_ERROR,
                    "a SETTINGS acknowledgement with a payload",
                ));
            }
            return Ok(());
        }
        let settings = Settings::parse(payload)?;
        if let Some(size) = settings.max_frame_size {
            self.peer_max_frame = size;
        }
        if let Some(window) = settings.initial_window_size {
            let delta = i64::from(window) - i64::from(self.peer_initial_window);
            self.peer_initial_window = window;
            for stream in self.streams.values_mut() {
                stream.send_window += delta;
                if stream.send_window > i64::from(MAX_WINDOW_BYTES) {
                    return Err(ConnectionError::new(
                        Reason::FLOW_CONTROL_ERROR,
                        "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream's window",
                    ));
                }
            }
        }
        frame::encode_settings_ack(&mut self.write);
        self.send_blocked();
        Ok(())
    }

    fn on_window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnectionError> {
        let raw: [u8; 4] = payload.try_into().map_err(|_| {
            ConnectionError::new(Reason::FRAME_SIZE_ERROR, "WINDOW_UPDATE is not 4 bytes")
        })?;
        let increment = i64::from(u32::from_be_bytes(raw) & MAX_WINDOW_BYTES);
        if head.stream == 0 {
            if increment == 0 {
                return Err(protocol("a WINDOW_UPDATE of 0 on the connection"));
            }
            self.send_window += increment;
            if self.send_window > i64::from(MAX_WINDOW_BYTES) {
                return Err(ConnectionError::new(
                    Reason::FLOW_CONTROL_ERROR,
                    "the connection window overflowed",
                ));
            }
        } else {
            if head.stream > self.last_stream {
                return Err(protocol("WINDOW_UPDATE on an idle stream"));
            }
            let Some(stream) = self.streams.get_mut(&head.stream) else {
                return Ok(());
            };
            stream.send_window += increment;
            if increment == 0 {
                self.reset(head.stream, Reason::PROTOCOL_ERROR);
                return Ok(());
            }
            if stream.send_window > i64::from(MAX_WINDOW_BYTES) {
                self.reset(head.stream, Reason::FLOW_CONTROL_ERROR);
                return Ok(());
            }
        }
        self.send_blocked();
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
        let responses = (self.router.handlers[receiving.handler])(receiving.metadata, message);
        let (abort, registration) = AbortHandle::new_pair();
        stream.abort = Some(abort);
        self.calls.push(Tagged {
            id,
            responses: Abortable::new(responses, registration),
            deadline: receiving
                .timeout
                .map(|timeout| Box::pin(tokio::time::sleep(timeout))),
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
                    frame::encode_headers(
                        &mut self.write,
                        id,
                        &self.response_headers,
                        false,
                        self.peer_max_frame,
                    );
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
        frame::encode_headers(&mut self.write, id, &block, true, self.peer_max_frame);
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
                frame::encode_rst_stream(&mut self.write, id, Reason::NO_ERROR);
            }
        }
    }

    /// Ends stream `id` with RST_STREAM.
    fn reset(&mut self, id: u32, reason: Reason) {
        frame::encode_rst_stream(&mut self.write, id, reason);
        if let Some(stream) = self.streams.remove(&id)
            && let Some(abort) = stream.abort
        {
            abort.abort();
        }
    }

    /// Sends `data` on stream `id` as far as the windows allow; the rest waits.
    fn send_data(&mut self, id: u32, data: Bytes) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if stream.blocked.is_empty() {
            let rest = send_within_windows(
                &mut self.write,
                id,
                data,
                &mut self.send_window,
                &mut stream.send_window,
                self.peer_max_frame,
            );
            if rest.is_empty() {
                return;
            }
            stream.blocked.push_back(rest);
        } else {
            stream.blocked.push_back(data);
        }
        if !self.blocked.contains(&id) {
            self.blocked.push_back(id);
        }
    }

    /// Sends what waited for window, stream by stream, oldest first.
    fn send_blocked(&mut self) {
        let mut still = std::collections::VecDeque::new();
        while let Some(id) = self.blocked.pop_front() {
            let Some(stream) = self.streams.get_mut(&id) else {
                continue;
            };
            while let Some(data) = stream.blocked.pop_front() {
                let rest = send_within_windows(
                    &mut self.write,
                    id,
                    data,
                    &mut self.send_window,
                    &mut stream.send_window,
                    self.peer_max_frame,
                );
                if !rest.is_empty() {
                    stream.blocked.push_front(rest);
                    break;
                }
            }
            if stream.blocked.is_empty() {
                if let Some(block) = stream.closing.take() {
                    frame::encode_headers(&mut self.write, id, &block, true, self.peer_max_frame);
                    self.finish(id);
                }
            } else {
                still.push_back(id);
            }
        }
        self.blocked = still;
    }
}

/// Writes as much of `data` as both windows allow as DATA frames; returns the rest.
fn send_within_windows(
    out: &mut BytesMut,
    id: u32,
    mut data: Bytes,
    connection_window: &mut i64,
    stream_window: &mut i64,
    max_frame: u32,
) -> Bytes {
    while !data.is_empty() {
        let allowed = (*connection_window)
            .min(*stream_window)
            .min(i64::from(max_frame));
        if allowed <= 0 {
            break;
        }
        let length = data.len().min(allowed as usize);
        frame::encode_data_head(out, id, length as u32, false);
        out.extend_from_slice(&data[..length]);
        data.advance(length);
        *connection_window -= length as i64;
        *stream_window -= length as i64;
    }
    data
}

fn protocol(message: &str) -> ConnectionError {
    ConnectionError::new(Reason::PROTOCOL_ERROR, message)
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
