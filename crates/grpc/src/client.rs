//! The client: a [`Channel`] to one server that any number of callers share.
//!
//! One task owns the connection. Callers hand it their calls through a bounded queue;
//! in one turn it writes every call that queued (HEADERS and DATA, one `write` for all
//! of them), reads whatever answers arrived and hands each to its caller. The
//! connection is made on the first call and made again, on the next call, after it is
//! lost. Calls that were never written survive a lost connection and go out on the
//! next one; calls in flight fail with UNAVAILABLE (their outcome is unknown), except
//! those the server refused before processing them (REFUSED_STREAM, or above a
//! GOAWAY's last stream), which are sent again.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::frame::{
    self, ConnectionError, DEFAULT_MAX_FRAME_BYTES, DEFAULT_WINDOW_BYTES, HEAD_BYTES, Head, Kind,
    MAX_WINDOW_BYTES, PREFACE, Reason, Settings, flags, setting,
};
use crate::grpc::{self, PREFIX_BYTES};
use crate::hpack;

/// Settings of a [`Channel`].
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// Longest a connection attempt may take.
    pub connect_timeout: Duration,
    /// The largest response message accepted.
    pub max_response_bytes: usize,
    /// Connect from this address instead of the one the kernel picks.
    pub local_address: Option<IpAddr>,
    /// Calls that may wait for the connection task before callers wait for room.
    pub queue_calls: usize,
    /// The receive window of each stream (SETTINGS_INITIAL_WINDOW_SIZE).
    pub stream_window_bytes: u32,
    /// The receive window of the connection.
    pub connection_window_bytes: u32,
}

impl Default for ChannelConfig {
    fn default() -> ChannelConfig {
        ChannelConfig {
            connect_timeout: Duration::from_secs(1),
            max_response_bytes: 4 << 20,
            local_address: None,
            queue_calls: 4096,
            stream_window_bytes: 1 << 20,
            connection_window_bytes: 16 << 20,
        }
    }
}

/// Times a call the server refused unprocessed is sent again before it fails.
const RESENDS_MAX: u8 = 3;

/// Metadata key on the status of a call that certainly had no effect: it was never
/// written to a server, or the server refused it before processing it. Retrying such a
/// call cannot apply it twice.
pub const NOT_SENT_KEY: &str = "rkv-grpc-not-sent";

/// UNAVAILABLE, marked with [`NOT_SENT_KEY`].
fn not_sent(message: String) -> Status {
    let mut status = Status::unavailable(message);
    status.metadata_mut().insert(
        NOT_SENT_KEY,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    status
}

/// What a server-streaming call hands its caller, in order.
enum Item {
    /// The response headers arrived: the call is under way.
    Started,
    /// A message.
    Message(Bytes),
    /// The end, with the call's status (OK: it ended well).
    End(Status),
}

/// Where a call's answer goes.
enum Sink {
    Unary(oneshot::Sender<Result<Bytes, Status>>),
    Streaming(mpsc::UnboundedSender<Item>),
}

impl Sink {
    fn fail(self, status: Status) {
        match self {
            Sink::Unary(reply) => {
                let _ = reply.send(Err(status));
            }
            Sink::Streaming(items) => {
                let _ = items.send(Item::End(status));
            }
        }
    }
}

/// A call on its way to the connection task.
struct Call {
    key: u64,
    path: &'static str,
    /// The call's own metadata, as HPACK literals.
    headers: Bytes,
    /// The request message behind its gRPC prefix.
    body: Bytes,
    sink: Sink,
    resends: u8,
}

enum Command {
    Call(Call),
    /// The caller went away: reset the call's stream.
    Cancel(u64),
    /// A streaming caller took `bytes` of messages: the server may send that much more.
    Consumed {
        key: u64,
        bytes: u32,
    },
}

/// A connection to one gRPC server; cheap to clone, and every clone shares the one
/// connection. The connection task ends when the last clone is dropped.
#[derive(Clone)]
pub struct Channel {
    commands: mpsc::Sender<Command>,
    keys: Arc<AtomicU64>,
    address: Arc<str>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("address", &self.address)
            .finish()
    }
}

impl Channel {
    /// A channel to `address` (`host:port`), connected on first use. Must be called
    /// inside a tokio runtime.
    pub fn lazy(address: &str, config: ChannelConfig) -> Channel {
        let (commands, queue) = mpsc::channel(config.queue_calls.max(1));
        let address: Arc<str> = Arc::from(address);
        tokio::spawn(run(address.clone(), config, queue));
        Channel {
            commands,
            keys: Arc::new(AtomicU64::new(0)),
            address,
        }
    }

    /// The address this channel connects to.
    pub fn address(&self) -> &str {
        &self.address
    }

    async fn start(
        &self,
        path: &'static str,
        headers: Bytes,
        body: Bytes,
        sink: Sink,
    ) -> Result<u64, Status> {
        let key = self.keys.fetch_add(1, Ordering::Relaxed);
        let call = Call {
            key,
            path,
            headers,
            body,
            sink,
            resends: 0,
        };
        self.commands
            .send(Command::Call(call))
            .await
            .map_err(|_| Status::unavailable("the channel's connection task has ended"))?;
        Ok(key)
    }

    /// Calls the unary method at `path`.
    pub async fn unary<Req, Resp>(&self, path: &'static str, request: &Req) -> Result<Resp, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        self.unary_with_metadata(path, request, &[]).await
    }

    /// Calls the unary method at `path`, sending `metadata` (lower-case ASCII names,
    /// printable values) with the request.
    pub async fn unary_with_metadata<Req, Resp>(
        &self,
        path: &'static str,
        request: &Req,
        metadata: &[(&str, &str)],
    ) -> Result<Resp, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let headers = encode_metadata(metadata)?;
        let body = grpc::encode_message(request, u32::MAX as usize)?;
        let (reply, answer) = oneshot::channel();
        let key = self.start(path, headers, body, Sink::Unary(reply)).await?;
        let mut guard = CancelOnDrop {
            commands: &self.commands,
            key: Some(key),
        };
        let answer = answer.await;
        guard.key = None;
        let message = answer
            .map_err(|_| Status::unavailable("the channel's connection task has ended"))??;
        Resp::decode(message)
            .map_err(|e| Status::internal(format!("undecodable response message: {e}")))
    }

    /// Calls the server-streaming method at `path`; returns once the server has started
    /// answering (an error it answers with at once is returned here), and the messages
    /// arrive through the returned [`Streaming`].
    pub async fn server_streaming<Req, Resp>(
        &self,
        path: &'static str,
        request: &Req,
    ) -> Result<Streaming<Resp>, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let body = grpc::encode_message(request, u32::MAX as usize)?;
        let (sink, items) = mpsc::unbounded_channel();
        let key = self
            .start(path, Bytes::new(), body, Sink::Streaming(sink))
            .await?;
        let mut streaming = Streaming {
            commands: self.commands.clone(),
            key,
            items,
            done: false,
            message_type: std::marker::PhantomData,
        };
        match streaming.items.recv().await {
            Some(Item::Started) => Ok(streaming),
            Some(Item::End(status)) if status.code() != Code::Ok => {
                streaming.done = true;
                Err(status)
            }
            Some(Item::End(_)) => {
                streaming.done = true;
                Ok(streaming)
            }
            Some(Item::Message(_)) | None => {
                streaming.done = true;
                Err(Status::unavailable(
                    "the channel's connection task has ended",
                ))
            }
        }
    }
}

/// A call's metadata as HPACK literals; names and values are checked as HTTP/2 wants
/// them (a caller's mistake, not the server's: INVALID_ARGUMENT).
fn encode_metadata(metadata: &[(&str, &str)]) -> Result<Bytes, Status> {
    let mut block = BytesMut::new();
    for (name, value) in metadata {
        let valid_name = http::HeaderName::from_bytes(name.as_bytes())
            .is_ok_and(|parsed| parsed.as_str() == *name && !name.starts_with("grpc-"));
        if !valid_name || http::HeaderValue::from_str(value).is_err() {
            return Err(Status::invalid_argument(format!(
                "metadata {name:?}: {value:?} cannot be sent"
            )));
        }
        hpack::put_literal(&mut block, name.as_bytes(), value.as_bytes());
    }
    Ok(block.freeze())
}

/// Resets a call whose caller stopped waiting.
struct CancelOnDrop<'a> {
    commands: &'a mpsc::Sender<Command>,
    key: Option<u64>,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            // Best effort: with the queue full, the answer is simply dropped on arrival.
            let _ = self.commands.try_send(Command::Cancel(key));
        }
    }
}

/// The messages of a server-streaming call, in order. Dropping it resets the call.
///
/// The queue between the connection task and this handle has no count limit of its
/// own: flow control bounds it, because the server may only send what the stream's
/// window allows, and the window grows back only as [`Streaming::message`] takes
/// messages out.
pub struct Streaming<T> {
    commands: mpsc::Sender<Command>,
    key: u64,
    items: mpsc::UnboundedReceiver<Item>,
    done: bool,
    message_type: std::marker::PhantomData<fn() -> T>,
}

impl<T: prost::Message + Default> Streaming<T> {
    /// The next message; `None` once the call has ended successfully.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        if self.done {
            return Ok(None);
        }
        loop {
            let item = self.items.recv().await;
            return match item {
                Some(Item::Started) => continue,
                Some(Item::Message(bytes)) => {
                    let consumed = u32::try_from(bytes.len() + PREFIX_BYTES).unwrap_or(u32::MAX);
                    let _ = self.commands.try_send(Command::Consumed {
                        key: self.key,
                        bytes: consumed,
                    });
                    T::decode(bytes)
                        .map(Some)
                        .map_err(|e| Status::internal(format!("undecodable response message: {e}")))
                }
                Some(Item::End(status)) => {
                    self.done = true;
                    if status.code() == Code::Ok {
                        Ok(None)
                    } else {
                        Err(status)
                    }
                }
                None => {
                    self.done = true;
                    Err(Status::unavailable(
                        "the channel's connection task has ended",
                    ))
                }
            };
        }
    }
}

impl<T> Drop for Streaming<T> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.commands.try_send(Command::Cancel(self.key));
        }
    }
}

/// The status a failed connection attempt gives the calls that waited for it.
fn never_sent(address: &str, error: &std::io::Error) -> Status {
    not_sent(format!("tcp connect error: {address}: {error}"))
}

async fn connect(address: &str, config: &ChannelConfig) -> std::io::Result<TcpStream> {
    let connect = async {
        let targets = tokio::net::lookup_host(address).await?;
        let mut last = None;
        for target in targets {
            match connect_one(target, config.local_address).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address")
        }))
    };
    let stream = tokio::time::timeout(config.connect_timeout, connect)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn connect_one(target: SocketAddr, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(local) = local.filter(|l| l.is_ipv4() == target.is_ipv4()) else {
        return TcpStream::connect(target).await;
    };
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(target).await
}

/// The connection task of one channel.
async fn run(address: Arc<str>, config: ChannelConfig, mut queue: mpsc::Receiver<Command>) {
    let mut waiting: VecDeque<Call> = VecDeque::new();
    loop {
        // Idle: wait for a call (or for every channel handle to go).
        if waiting.is_empty() {
            match queue.recv().await {
                Some(Command::Call(call)) => waiting.push_back(call),
                Some(Command::Cancel(_) | Command::Consumed { .. }) => continue,
                None => return,
            }
        }
        let stream = match connect(&address, &config).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(%address, error = %e, "gRPC connection attempt failed");
                for call in waiting.drain(..) {
                    call.sink.fail(never_sent(&address, &e));
                }
                continue;
            }
        };
        let mut connection =
            Connection::new(stream, &address, &config, std::mem::take(&mut waiting));
        let end = std::future::poll_fn(|cx| connection.poll(cx, &mut queue)).await;
        waiting = connection.into_unsent();
        match end {
            End::Closed => return,
            End::Lost(why) => {
                tracing::debug!(%address, %why, "gRPC connection lost");
            }
        }
    }
}

/// How a connection ended.
enum End {
    /// Every channel handle is gone and nothing is in flight.
    Closed,
    /// The connection failed or the server sent it away; calls not sent remain.
    Lost(String),
}

/// One call in flight on a connection.
struct StreamState {
    call: Call,
    send_window: i64,
    /// Request bytes not yet sent (flow control); END_STREAM goes with the last.
    unsent: Bytes,
    /// Response headers seen, and whether their `:status` was 200.
    headers: Option<u16>,
    /// Response bytes not yet forming a whole message.
    partial: BytesMut,
    /// A unary call's one response message.
    message: Option<Bytes>,
    /// Response bytes the caller took since the window was last topped up.
    consumed: u32,
}

struct Connection<T> {
    io: T,
    authority: Bytes,
    max_response_bytes: usize,
    stream_window_bytes: u32,
    connection_window_bytes: u32,
    read: BytesMut,
    write: BytesMut,
    scratch: BytesMut,
    decoder: hpack::Decoder,
    continuation: Option<(u32, bool, BytesMut)>,
    /// Calls not yet written, in order.
    waiting: VecDeque<Call>,
    streams: HashMap<u32, StreamState>,
    keys: HashMap<u64, u32>,
    /// Streams with request bytes waiting for window.
    blocked: VecDeque<u32>,
    next_stream: u32,
    send_window: i64,
    peer_initial_window: u32,
    peer_max_frame: u32,
    peer_max_streams: u32,
    unacknowledged: u32,
    /// The server's GOAWAY: its last processed stream.
    goaway: Option<u32>,
    /// No more channel handles: finish what is in flight, then end.
    queue_closed: bool,
    failed: Option<String>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Connection<T> {
    fn new(io: T, address: &str, config: &ChannelConfig, waiting: VecDeque<Call>) -> Connection<T> {
        let mut write = BytesMut::with_capacity(16 * 1024);
        write.extend_from_slice(PREFACE);
        frame::encode_settings(
            &mut write,
            &[
                (setting::ENABLE_PUSH, 0),
                (setting::INITIAL_WINDOW_SIZE, config.stream_window_bytes),
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
            authority: Bytes::copy_from_slice(address.as_bytes()),
            max_response_bytes: config.max_response_bytes,
            stream_window_bytes: config.stream_window_bytes,
            connection_window_bytes: config.connection_window_bytes,
            read: BytesMut::with_capacity(16 * 1024),
            write,
            scratch: BytesMut::new(),
            decoder: hpack::Decoder::default(),
            continuation: None,
            waiting,
            streams: HashMap::new(),
            keys: HashMap::new(),
            blocked: VecDeque::new(),
            next_stream: 1,
            send_window: i64::from(DEFAULT_WINDOW_BYTES),
            peer_initial_window: DEFAULT_WINDOW_BYTES,
            peer_max_frame: DEFAULT_MAX_FRAME_BYTES,
            peer_max_streams: u32::MAX,
            unacknowledged: 0,
            goaway: None,
            queue_closed: false,
            failed: None,
        }
    }

    /// The calls that were never written, to send on the next connection (each at
    /// most [`RESENDS_MAX`] times: a server that drops every connection at once must
    /// not keep this task reconnecting).
    fn into_unsent(self) -> VecDeque<Call> {
        let mut unsent = VecDeque::new();
        for call in self.waiting {
            requeue(&mut unsent, call, false);
        }
        unsent
    }

    fn poll(&mut self, cx: &mut Context<'_>, queue: &mut mpsc::Receiver<Command>) -> Poll<End> {
        loop {
            let mut progress = false;
            // New calls, cancellations, consumed messages.
            while !self.queue_closed && self.failed.is_none() {
                match queue.poll_recv(cx) {
                    Poll::Ready(Some(command)) => {
                        progress = true;
                        self.on_command(command);
                    }
                    Poll::Ready(None) => self.queue_closed = true,
                    Poll::Pending => break,
                }
            }
            self.start_waiting();
            if self.failed.is_none() {
                match self.poll_read(cx) {
                    Ok(true) => progress = true,
                    Ok(false) => {}
                    Err(why) => self.fail(why),
                }
            }
            while !self.write.is_empty() {
                match Pin::new(&mut self.io).poll_write(cx, &self.write) {
                    Poll::Ready(Ok(0)) => {
                        self.fail("the connection would take no more bytes".into());
                        self.write.clear();
                    }
                    Poll::Ready(Ok(n)) => {
                        self.write.advance(n);
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => {
                        self.fail(format!("writing: {e}"));
                        self.write.clear();
                    }
                    Poll::Pending => break,
                }
            }
            if let Some(why) = &self.failed
                && self.write.is_empty()
            {
                return Poll::Ready(End::Lost(why.clone()));
            }
            if self.streams.is_empty() && self.write.is_empty() {
                if self.queue_closed && self.waiting.is_empty() {
                    return Poll::Ready(End::Closed);
                }
                if self.goaway.is_some() {
                    return Poll::Ready(End::Lost("the server sent GOAWAY".into()));
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// Ends the connection: calls in flight fail (their outcome is unknown).
    fn fail(&mut self, why: String) {
        for (_, stream) in self.streams.drain() {
            stream.call.sink.fail(Status::unavailable(format!(
                "the connection to the server was lost ({why}); the call may or may not have been applied"
            )));
        }
        self.keys.clear();
        self.blocked.clear();
        if self.failed.is_none() {
            self.failed = Some(why);
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Call(call) => self.waiting.push_back(call),
            Command::Cancel(key) => {
                if let Some(id) = self.keys.remove(&key) {
                    self.streams.remove(&id);
                    frame::encode_rst_stream(&mut self.write, id, Reason::CANCEL);
                } else {
                    self.waiting.retain(|call| call.key != key);
                }
            }
            Command::Consumed { key, bytes } => {
                let Some(id) = self.keys.get(&key) else {
                    return;
                };
                if let Some(stream) = self.streams.get_mut(id) {
                    stream.consumed += bytes;
                    if stream.consumed >= self.stream_window_bytes / 2 {
                        frame::encode_window_update(&mut self.write, *id, stream.consumed);
                        stream.consumed = 0;
                    }
                }
            }
        }
    }

    /// Writes the waiting calls that the server's limits let start.
    fn start_waiting(&mut self) {
        if self.next_stream > MAX_WINDOW_BYTES && self.goaway.is_none() {
            // Stream ids are used up: this connection drains, the next one starts.
            self.goaway = Some(MAX_WINDOW_BYTES);
        }
        while self.failed.is_none()
            && self.goaway.is_none()
            && (self.streams.len() as u64) < u64::from(self.peer_max_streams)
            && self.next_stream <= MAX_WINDOW_BYTES
        {
            let Some(call) = self.waiting.pop_front() else {
                break;
            };
            let id = self.next_stream;
            self.next_stream += 2;
            self.scratch.clear();
            hpack::put_indexed(&mut self.scratch, hpack::index::METHOD_POST);
            hpack::put_indexed(&mut self.scratch, hpack::index::SCHEME_HTTP);
            hpack::put_literal_indexed_name(
                &mut self.scratch,
                hpack::index::PATH,
                call.path.as_bytes(),
            );
            hpack::put_literal_indexed_name(
                &mut self.scratch,
                hpack::index::AUTHORITY,
                &self.authority,
            );
            hpack::put_literal_indexed_name(
                &mut self.scratch,
                hpack::index::CONTENT_TYPE,
                grpc::CONTENT_TYPE,
            );
            hpack::put_literal(&mut self.scratch, b"te", b"trailers");
            self.scratch.extend_from_slice(&call.headers);
            frame::encode_headers(
                &mut self.write,
                id,
                &self.scratch,
                false,
                self.peer_max_frame,
            );
            let mut stream = StreamState {
                unsent: call.body.clone(),
                call,
                send_window: i64::from(self.peer_initial_window),
                headers: None,
                partial: BytesMut::new(),
                message: None,
                consumed: 0,
            };
            self.keys.insert(stream.call.key, id);
            if send_request(
                &mut self.write,
                id,
                &mut stream,
                &mut self.send_window,
                self.peer_max_frame,
            ) {
                self.blocked.push_back(id);
            }
            self.streams.insert(id, stream);
        }
    }

    /// Sends request bytes that waited for window.
    fn send_blocked(&mut self) {
        let mut still = VecDeque::new();
        while let Some(id) = self.blocked.pop_front() {
            if let Some(stream) = self.streams.get_mut(&id)
                && send_request(
                    &mut self.write,
                    id,
                    stream,
                    &mut self.send_window,
                    self.peer_max_frame,
                )
            {
                still.push_back(id);
            }
        }
        self.blocked = still;
    }

    /// Reads and handles what the socket holds; whether anything was read.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Result<bool, String> {
        if self.read.capacity() - self.read.len() < 4096 {
            self.read.reserve(16 * 1024);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read) {
            Poll::Ready(Ok(0)) => Err("the server closed the connection".into()),
            Poll::Ready(Ok(_)) => {
                self.read_frames().map_err(|e| {
                    frame::encode_goaway(&mut self.write, 0, e.reason, e.message.as_bytes());
                    e.to_string()
                })?;
                Ok(true)
            }
            Poll::Ready(Err(e)) => Err(format!("reading: {e}")),
            Poll::Pending => Ok(false),
        }
    }

    fn read_frames(&mut self) -> Result<(), ConnectionError> {
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
        if self.unacknowledged >= self.connection_window_bytes / 2 {
            frame::encode_window_update(&mut self.write, 0, self.unacknowledged);
            self.unacknowledged = 0;
        }
        Ok(())
    }

    fn on_frame(&mut self, head: Head, mut payload: Bytes) -> Result<(), ConnectionError> {
        if self.continuation.is_some() && head.kind != Kind::Continuation {
            return Err(protocol("a header block was interrupted by another frame"));
        }
        match head.kind {
            Kind::Data => {
                if head.stream == 0 {
                    return Err(protocol("DATA on stream 0"));
                }
                self.unacknowledged += head.length;
                if head.has(flags::PADDED) {
                    frame::strip_padding(&mut payload)?;
                }
                self.on_data(
                    head.stream,
                    payload,
                    head.length,
                    head.has(flags::END_STREAM),
                );
                Ok(())
            }
            Kind::Headers => {
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
                self.continuation = Some((head.stream, end_stream, BytesMut::from(&payload[..])));
                Ok(())
            }
            Kind::Continuation => {
                let Some((stream, end_stream, mut block)) = self.continuation.take() else {
                    return Err(protocol("CONTINUATION without HEADERS"));
                };
                if head.stream != stream {
                    return Err(protocol("CONTINUATION on another stream"));
                }
                if block.len() + payload.len() > 1 << 20 {
                    return Err(ConnectionError::new(
                        Reason::ENHANCE_YOUR_CALM,
                        "a header block over 1 MiB",
                    ));
                }
                block.extend_from_slice(&payload);
                if head.has(flags::END_HEADERS) {
                    return self.on_header_block(stream, end_stream, &block);
                }
                self.continuation = Some((stream, end_stream, block));
                Ok(())
            }
            Kind::RstStream => {
                let raw: [u8; 4] = payload[..].try_into().map_err(|_| {
                    ConnectionError::new(Reason::FRAME_SIZE_ERROR, "RST_STREAM is not 4 bytes")
                })?;
                self.on_reset(head.stream, Reason(u32::from_be_bytes(raw)));
                Ok(())
            }
            Kind::Settings => {
                if head.stream != 0 {
                    return Err(protocol("SETTINGS on a stream"));
                }
                if head.has(flags::ACK) {
                    return Ok(());
                }
                let settings = Settings::parse(&payload)?;
                self.apply(settings)?;
                frame::encode_settings_ack(&mut self.write);
                Ok(())
            }
            Kind::PushPromise => Err(protocol("PUSH_PROMISE, though push is disabled")),
            Kind::Ping => {
                let ping: [u8; 8] = payload[..].try_into().map_err(|_| {
                    ConnectionError::new(Reason::FRAME_SIZE_ERROR, "PING is not 8 bytes")
                })?;
                if !head.has(flags::ACK) {
                    frame::encode_ping(&mut self.write, ping, true);
                }
                Ok(())
            }
            Kind::GoAway => {
                if payload.len() < 8 {
                    return Err(protocol("GOAWAY shorter than 8 bytes"));
                }
                let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & MAX_WINDOW_BYTES;
                self.on_goaway(last);
                Ok(())
            }
            Kind::WindowUpdate => {
                let raw: [u8; 4] = payload[..].try_into().map_err(|_| {
                    ConnectionError::new(Reason::FRAME_SIZE_ERROR, "WINDOW_UPDATE is not 4 bytes")
                })?;
                let increment = i64::from(u32::from_be_bytes(raw) & MAX_WINDOW_BYTES);
                if head.stream == 0 {
                    self.send_window += increment;
                    if increment == 0 || self.send_window > i64::from(MAX_WINDOW_BYTES) {
                        return Err(ConnectionError::new(
                            Reason::FLOW_CONTROL_ERROR,
                            "a bad connection WINDOW_UPDATE",
                        ));
                    }
                } else if let Some(stream) = self.streams.get_mut(&head.stream) {
                    stream.send_window += increment;
                }
                self.send_blocked();
                Ok(())
            }
            Kind::Priority | Kind::Unknown(_) => Ok(()),
        }
    }

    fn apply(&mut self, settings: Settings) -> Result<(), ConnectionError> {
        if let Some(size) = settings.max_frame_size {
            self.peer_max_frame = size;
        }
        if let Some(streams) = settings.max_concurrent_streams {
            self.peer_max_streams = streams;
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
            self.send_blocked();
        }
        Ok(())
    }

    /// The server will not process streams above `last`: send those again later.
    fn on_goaway(&mut self, last: u32) {
        self.goaway = Some(self.goaway.map_or(last, |seen| seen.min(last)));
        let refused: Vec<u32> = self
            .streams
            .keys()
            .copied()
            .filter(|id| *id > last)
            .collect();
        let mut resend = Vec::new();
        for id in refused {
            if let Some(stream) = self.streams.remove(&id) {
                self.keys.remove(&stream.call.key);
                resend.push(stream.call);
            }
        }
        resend.sort_by_key(|call| call.key);
        for call in resend.into_iter().rev() {
            requeue(&mut self.waiting, call, true);
        }
    }

    fn on_reset(&mut self, id: u32, reason: Reason) {
        let Some(stream) = self.streams.remove(&id) else {
            return;
        };
        self.keys.remove(&stream.call.key);
        if reason == Reason::REFUSED_STREAM {
            // Not processed: safe to send again.
            requeue(&mut self.waiting, stream.call, true);
            return;
        }
        // After a complete answer, NO_ERROR only asks us to stop sending (§8.1).
        if reason == Reason::NO_ERROR && stream.message.is_some() {
            finish_unary(stream, Status::new(Code::Ok, ""));
            return;
        }
        let code = match reason {
            Reason::REFUSED_STREAM => Code::Unavailable,
            Reason::CANCEL => Code::Cancelled,
            Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
            _ => Code::Internal,
        };
        stream.call.sink.fail(Status::new(
            code,
            format!("the server reset the stream ({reason})"),
        ));
    }

    fn on_data(&mut self, id: u32, data: Bytes, flow_length: u32, end_stream: bool) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return; // cancelled by us: ignore what was in flight
        };
        if stream.headers.is_none() {
            self.reset_with(id, Status::internal("response DATA before its headers"));
            return;
        }
        stream.partial.extend_from_slice(&data);
        stream.consumed += match stream.call.sink {
            Sink::Unary(_) => flow_length,
            // Padding now; the messages once the caller takes them.
            Sink::Streaming(_) => flow_length - data.len() as u32,
        };
        let mut failure = None;
        while let Some(length) = grpc::declared_length(&stream.partial) {
            if stream.partial[0] != 0 {
                failure = Some(Status::internal("the server sent a compressed message"));
                break;
            }
            if length > self.max_response_bytes {
                failure = Some(Status::out_of_range(format!(
                    "a response message of {length} bytes; the limit is {}",
                    self.max_response_bytes
                )));
                break;
            }
            if stream.partial.len() < PREFIX_BYTES + length {
                break;
            }
            stream.partial.advance(PREFIX_BYTES);
            let message = stream.partial.split_to(length).freeze();
            match &stream.call.sink {
                Sink::Streaming(items) => {
                    if items.send(Item::Message(message)).is_err() {
                        failure = Some(Status::cancelled("the caller went away"));
                        break;
                    }
                }
                Sink::Unary(_) if stream.message.is_some() => {
                    failure = Some(Status::internal("more than one response message"));
                    break;
                }
                Sink::Unary(_) => stream.message = Some(message),
            }
        }
        if let Some(status) = failure {
            self.keys.remove(&stream.call.key);
            frame::encode_rst_stream(&mut self.write, id, Reason::CANCEL);
            if let Some(stream) = self.streams.remove(&id) {
                stream.call.sink.fail(status);
            }
            return;
        }
        if end_stream {
            let status = Status::internal("the response ended without trailers");
            self.finish(id, status);
        } else if stream.consumed >= self.stream_window_bytes / 2 {
            frame::encode_window_update(&mut self.write, id, stream.consumed);
            stream.consumed = 0;
        }
    }

    fn on_header_block(
        &mut self,
        id: u32,
        end_stream: bool,
        block: &[u8],
    ) -> Result<(), ConnectionError> {
        let mut head = ResponseHead::default();
        self.decoder
            .decode(block, |name, value| head.field(name, value))?;
        let Some(stream) = self.streams.get_mut(&id) else {
            return Ok(()); // cancelled by us
        };
        if stream.headers.is_none() {
            stream.headers = Some(head.http_status.unwrap_or(0));
            if !end_stream {
                if head.http_status == Some(200)
                    && let Sink::Streaming(items) = &stream.call.sink
                {
                    let _ = items.send(Item::Started);
                }
                if head.http_status != Some(200) {
                    let status = http_status(head.http_status);
                    self.keys.remove(&stream.call.key);
                    frame::encode_rst_stream(&mut self.write, id, Reason::CANCEL);
                    if let Some(stream) = self.streams.remove(&id) {
                        stream.call.sink.fail(status);
                    }
                }
                return Ok(());
            }
        } else if !end_stream {
            self.reset_with(id, Status::internal("response trailers without END_STREAM"));
            return Ok(());
        }
        let http = stream.headers.filter(|s| *s != 0);
        let status = head.into_status(http);
        self.finish(id, status);
        Ok(())
    }

    fn reset_with(&mut self, id: u32, status: Status) {
        frame::encode_rst_stream(&mut self.write, id, Reason::CANCEL);
        if let Some(stream) = self.streams.remove(&id) {
            self.keys.remove(&stream.call.key);
            stream.call.sink.fail(status);
        }
    }

    /// The call on stream `id` ended with `status`.
    fn finish(&mut self, id: u32, status: Status) {
        let Some(stream) = self.streams.remove(&id) else {
            return;
        };
        self.keys.remove(&stream.call.key);
        if !stream.unsent.is_empty() {
            // The server answered before taking the whole request: stop sending.
            frame::encode_rst_stream(&mut self.write, id, Reason::CANCEL);
        }
        finish_unary(stream, status);
    }
}

/// Puts a call that had no effect back in line (at the front, or the back), unless it
/// has been sent again [`RESENDS_MAX`] times already.
fn requeue(line: &mut VecDeque<Call>, mut call: Call, front: bool) {
    if call.resends >= RESENDS_MAX {
        call.sink.fail(not_sent(format!(
            "the server refused the call unprocessed {RESENDS_MAX} times"
        )));
        return;
    }
    call.resends += 1;
    if front {
        line.push_front(call);
    } else {
        line.push_back(call);
    }
}

/// Hands a finished call its outcome: the message (unary) or the end of the stream.
fn finish_unary(stream: StreamState, status: Status) {
    let leftover = !stream.partial.is_empty();
    match stream.call.sink {
        Sink::Unary(reply) => {
            let outcome = match (status.code(), stream.message) {
                (Code::Ok, _) if leftover => {
                    Err(Status::internal("the response ended inside a message"))
                }
                (Code::Ok, Some(message)) => Ok(message),
                (Code::Ok, None) => Err(Status::internal("the response has no message")),
                _ => Err(status),
            };
            let _ = reply.send(outcome);
        }
        Sink::Streaming(items) => {
            let status = if leftover && status.code() == Code::Ok {
                Status::internal("the response ended inside a message")
            } else {
                status
            };
            let _ = items.send(Item::End(status));
        }
    }
}

/// Writes as much of a stream's request as the windows allow; whether some is left.
fn send_request(
    out: &mut BytesMut,
    id: u32,
    stream: &mut StreamState,
    connection_window: &mut i64,
    max_frame: u32,
) -> bool {
    loop {
        let allowed = (*connection_window)
            .min(stream.send_window)
            .min(i64::from(max_frame));
        let length = stream.unsent.len().min(allowed.max(0) as usize);
        if length == 0 && !stream.unsent.is_empty() {
            return true;
        }
        let last = length == stream.unsent.len();
        frame::encode_data_head(out, id, length as u32, last);
        out.extend_from_slice(&stream.unsent[..length]);
        stream.unsent.advance(length);
        *connection_window -= length as i64;
        stream.send_window -= length as i64;
        if last {
            return false;
        }
    }
}

fn protocol(message: &str) -> ConnectionError {
    ConnectionError::new(Reason::PROTOCOL_ERROR, message)
}

/// The gRPC status of a response that is not gRPC (gRPC over HTTP/2's mapping).
fn http_status(status: Option<u16>) -> Status {
    let code = match status {
        Some(400) => Code::Internal,
        Some(401) => Code::Unauthenticated,
        Some(403) => Code::PermissionDenied,
        Some(404) => Code::Unimplemented,
        Some(429 | 502..=504) => Code::Unavailable,
        _ => Code::Unknown,
    };
    match status {
        Some(status) => Status::new(code, format!("the server answered HTTP {status}")),
        None => Status::internal("the response has no :status"),
    }
}

/// What a response header block (headers or trailers) said.
#[derive(Default)]
struct ResponseHead {
    http_status: Option<u16>,
    grpc_status: Option<Code>,
    message: Option<String>,
    metadata: http::HeaderMap,
}

impl ResponseHead {
    fn field(&mut self, name: &[u8], value: &[u8]) {
        match name {
            b":status" => {
                self.http_status = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
            }
            b"grpc-status" => self.grpc_status = Some(Code::from_bytes(value)),
            b"grpc-message" => self.message = Some(percent_decode(value)),
            b"grpc-status-details-bin" | b"content-type" => {}
            _ if name.first() == Some(&b':') => {}
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

    /// The call's status; `http` is the `:status` of the response headers, if they came
    /// apart from these trailers.
    fn into_status(self, http: Option<u16>) -> Status {
        let Some(code) = self.grpc_status else {
            let http = self.http_status.or(http);
            return if http == Some(200) {
                Status::internal("the response has no grpc-status")
            } else {
                http_status(http)
            };
        };
        Status::with_metadata(
            code,
            self.message.unwrap_or_default(),
            MetadataMap::from_headers(self.metadata),
        )
    }
}

/// Decodes a percent-encoded `grpc-message`; bytes that do not decode are kept as they are.
fn percent_decode(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut at = 0;
    while at < value.len() {
        if value[at] == b'%'
            && let Some(hex) = value.get(at + 1..at + 3)
            && let Ok(text) = std::str::from_utf8(hex)
            && let Ok(byte) = u8::from_str_radix(text, 16)
        {
            out.push(byte);
            at += 3;
            continue;
        }
        out.push(value[at]);
        at += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_decoded_leniently() {
        assert_eq!(percent_decode(b"50%25 sure"), "50% sure");
        assert_eq!(percent_decode(b"caf%C3%A9"), "café");
        assert_eq!(percent_decode(b"100%"), "100%");
        assert_eq!(percent_decode(b"%zz!"), "%zz!");
    }

    #[test]
    fn non_grpc_answers_map_to_the_specs_codes() {
        assert_eq!(http_status(Some(404)).code(), Code::Unimplemented);
        assert_eq!(http_status(Some(503)).code(), Code::Unavailable);
        assert_eq!(http_status(Some(415)).code(), Code::Unknown);
        assert_eq!(http_status(None).code(), Code::Internal);
    }

    #[test]
    fn trailers_become_a_status_with_metadata() {
        let mut head = ResponseHead::default();
        head.field(b"grpc-status", b"14");
        head.field(b"grpc-message", b"not%20the%20leader");
        head.field(b"rkv-leader-id", b"3");
        let status = head.into_status(Some(200));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "not the leader");
        assert_eq!(
            status
                .metadata()
                .get("rkv-leader-id")
                .and_then(|v| v.to_str().ok()),
            Some("3")
        );
        let missing = ResponseHead::default().into_status(Some(200));
        assert_eq!(missing.code(), Code::Internal);
    }
}
