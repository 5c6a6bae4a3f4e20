//! The client: a [`Channel`] to one server that any number of callers share.
//!
//! One task owns the connection. Callers hand it their calls through a bounded queue;
//! in one turn it writes every call that queued (HEADERS and DATA, one `write` for all
//! of them), reads whatever answers arrived and hands each to its caller. The
//! connection is made on the first call and made again, on the next call, after it is
//! lost.
//!
//! What a caller is told matters for retries, so it is precise:
//! - a call that certainly had no effect is UNAVAILABLE marked [`NOT_SENT_KEY`]: it was
//!   never written to the socket (the connection failed first, or could not be made),
//!   or the server refused it before processing it (REFUSED_STREAM, or above a GOAWAY's
//!   last stream); the channel itself sends such calls again, a few times, first;
//! - a call that was written and then lost its connection is UNAVAILABLE, and one that
//!   got a malformed or cut answer is UNKNOWN: either may have taken effect;
//! - everything else is the server's own status.
//!
//! The connection pings the server when calls wait for answers and nothing has been
//! heard for a while; a server that does not answer the ping in time has its
//! connection closed (a partition would otherwise hold calls for TCP's minutes).

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
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::conn::{Core, Event, Local, RecvWindow, shift_windows};
use crate::frame::{
    self, ConnectionError, DEFAULT_WINDOW_BYTES, HEAD_BYTES, MAX_WINDOW_BYTES, PREFACE, Reason,
    STREAM_ID_MASK, flags, setting,
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
    /// The largest response header block (decoded) accepted.
    pub max_header_list_bytes: usize,
    /// Connect from this address instead of the one the kernel picks.
    pub local_address: Option<IpAddr>,
    /// Calls that may wait for the connection task before callers wait for room.
    pub queue_calls: usize,
    /// The receive window of each stream (SETTINGS_INITIAL_WINDOW_SIZE).
    pub stream_window_bytes: u32,
    /// The receive window of the connection.
    pub connection_window_bytes: u32,
    /// With calls waiting for answers, silence from the server for this long sends it
    /// a PING.
    pub ping_after: Duration,
    /// A PING unanswered for this long closes the connection.
    pub ping_timeout: Duration,
}

impl Default for ChannelConfig {
    fn default() -> ChannelConfig {
        ChannelConfig {
            connect_timeout: Duration::from_secs(1),
            max_response_bytes: 4 << 20,
            max_header_list_bytes: 64 * 1024,
            local_address: None,
            queue_calls: 4096,
            stream_window_bytes: 1 << 20,
            connection_window_bytes: 16 << 20,
            ping_after: Duration::from_secs(1),
            ping_timeout: Duration::from_secs(5),
        }
    }
}

/// Rounds of reading, sending and writing one poll of a connection does at most before
/// it yields to the runtime.
const TURNS_PER_POLL: usize = 64;

/// Times a call that certainly had no effect is sent again before it fails.
const RESENDS_MAX: u8 = 3;

/// After a failed connection attempt, calls fail at once (as never sent) for this long
/// before the next attempt; it doubles up to [`CONNECT_BACKOFF_MAX`] while attempts fail.
const CONNECT_BACKOFF_MIN: Duration = Duration::from_millis(20);
/// See [`CONNECT_BACKOFF_MIN`].
const CONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Metadata key on the status of a call that certainly had no effect: it was never
/// written to a server, or the server refused it before processing it. Retrying such a
/// call cannot apply it twice. Never taken from a server's answer.
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

/// UNKNOWN: the call was sent and its answer is unusable; it may have taken effect.
fn unknown(message: impl std::fmt::Display) -> Status {
    Status::unknown(format!(
        "{message}; the call may or may not have taken effect"
    ))
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
    /// Unbounded, because flow control bounds it: the server may only send what the
    /// stream's window allows, enforced, and the window grows back only as the caller
    /// takes messages out ([`Control::Consumed`]).
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

/// What callers tell the connection task about calls already handed over.
///
/// On a channel of its own, unbounded, so that it is never lost (a lost credit would
/// shrink a stream's window for good): what it holds is bounded by the calls there are
/// (one cancel each) and the messages delivered (one credit each, and delivery is
/// bounded by the windows).
enum Control {
    /// The caller went away: reset the call's stream.
    Cancel(u64),
    /// A streaming caller took `bytes` of messages: the server may send that much more.
    Consumed { key: u64, bytes: u32 },
}

/// A connection to one gRPC server; cheap to clone, and every clone shares the one
/// connection. The connection task ends when the last clone is dropped.
#[derive(Clone)]
pub struct Channel {
    calls: mpsc::Sender<Call>,
    control: mpsc::UnboundedSender<Control>,
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
        let (calls, queue) = mpsc::channel(config.queue_calls.max(1));
        let (control, controls) = mpsc::unbounded_channel();
        let address: Arc<str> = Arc::from(address);
        tokio::spawn(run(address.clone(), config, queue, controls));
        Channel {
            calls,
            control,
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
        self.calls
            .send(call)
            .await
            .map_err(|_| not_sent("the channel's connection task has ended".into()))?;
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
            control: &self.control,
            key: Some(key),
        };
        let answer = answer.await;
        guard.key = None;
        let message = answer.map_err(|_| unknown("the channel's connection task ended"))??;
        Resp::decode(message).map_err(|e| unknown(format!("undecodable response message: {e}")))
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
            control: self.control.clone(),
            key,
            items,
            done: false,
            message_type: std::marker::PhantomData,
        };
        match streaming.items.recv().await {
            Some(Item::Started) => Ok(streaming),
            Some(Item::End(status)) => {
                streaming.done = true;
                if status.code() == Code::Ok {
                    Ok(streaming)
                } else {
                    Err(status)
                }
            }
            Some(Item::Message(_)) | None => {
                streaming.done = true;
                Err(unknown("the channel's connection task ended"))
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
    control: &'a mpsc::UnboundedSender<Control>,
    key: Option<u64>,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let _ = self.control.send(Control::Cancel(key));
        }
    }
}

/// The messages of a server-streaming call, in order. Dropping it resets the call.
pub struct Streaming<T> {
    control: mpsc::UnboundedSender<Control>,
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
                    let _ = self.control.send(Control::Consumed {
                        key: self.key,
                        bytes: consumed,
                    });
                    T::decode(bytes)
                        .map(Some)
                        .map_err(|e| unknown(format!("undecodable response message: {e}")))
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
                    Err(unknown("the channel's connection task ended"))
                }
            };
        }
    }
}

impl<T> Drop for Streaming<T> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.control.send(Control::Cancel(self.key));
        }
    }
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
async fn run(
    address: Arc<str>,
    config: ChannelConfig,
    mut queue: mpsc::Receiver<Call>,
    mut controls: mpsc::UnboundedReceiver<Control>,
) {
    let mut waiting: VecDeque<Call> = VecDeque::new();
    let mut backoff = CONNECT_BACKOFF_MIN;
    loop {
        // Idle: wait for a call (or for every channel handle to go).
        if waiting.is_empty() {
            match queue.recv().await {
                Some(call) => waiting.push_back(call),
                None => return,
            }
        }
        let stream = match connect(&address, &config).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(%address, error = %e, "gRPC connection attempt failed");
                // Every call waiting, and every call that comes during the back-off,
                // fails at once: none was sent.
                let status = not_sent(format!("tcp connect error: {address}: {e}"));
                let until = Instant::now() + backoff;
                backoff = (backoff * 2).min(CONNECT_BACKOFF_MAX);
                for call in waiting.drain(..) {
                    call.sink.fail(status.clone());
                }
                loop {
                    tokio::select! {
                        call = queue.recv() => match call {
                            Some(call) => call.sink.fail(status.clone()),
                            None => return,
                        },
                        () = tokio::time::sleep_until(until) => break,
                    }
                }
                while controls.try_recv().is_ok() {}
                continue;
            }
        };
        backoff = CONNECT_BACKOFF_MIN;
        let mut connection =
            Connection::new(stream, &address, &config, std::mem::take(&mut waiting));
        let end =
            std::future::poll_fn(|cx| connection.poll(cx, Some((&mut queue, &mut controls)))).await;
        match end {
            End::Closed => return,
            End::Lost(why) => {
                tracing::debug!(%address, %why, "gRPC connection lost");
                waiting = connection.into_unsent();
            }
            End::Draining => {
                // The server sent GOAWAY: the calls it took finish on the old
                // connection, on a task of their own; new calls get a new one.
                waiting = connection.take_waiting();
                tokio::spawn(async move {
                    let _ = std::future::poll_fn(|cx| connection.poll(cx, None)).await;
                });
            }
        }
    }
}

/// How a connection stopped serving new calls.
enum End {
    /// Every channel handle is gone and nothing is in flight.
    Closed,
    /// The connection failed; calls not sent remain.
    Lost(String),
    /// The server sent GOAWAY (or stream ids ran out): calls in flight go on here, new
    /// ones need a new connection. (Cancels and window credits of the calls left here
    /// go to the new connection's task and are dropped: a server that sent GOAWAY is
    /// ending its streams anyway.)
    Draining,
}

/// One call in flight on a connection.
struct StreamState {
    call: Call,
    send_window: i64,
    /// Request bytes not yet sent (flow control); END_STREAM goes with the last.
    unsent: Bytes,
    /// Where the call's HEADERS start in the connection's output: before the socket
    /// took that many bytes, the call never left this process.
    written_at: u64,
    /// Response headers seen, and whether their `:status` was 200.
    headers: Option<u16>,
    /// Response bytes not yet forming a whole message.
    partial: BytesMut,
    /// A unary call's one response message.
    message: Option<Bytes>,
    /// What the server may still send on this stream.
    window: RecvWindow,
}

struct Connection<T> {
    core: Core<T>,
    authority: Bytes,
    max_response_bytes: usize,
    max_header_list_bytes: usize,
    ping_after: Duration,
    ping_timeout: Duration,
    scratch: BytesMut,
    settings_read: bool,
    /// Calls not yet written, in order.
    waiting: VecDeque<Call>,
    streams: HashMap<u32, StreamState>,
    keys: HashMap<u64, u32>,
    /// Streams with request bytes waiting for window.
    blocked: VecDeque<u32>,
    next_stream: u32,
    /// The server's GOAWAY (or our own stream ids running out): no new streams here.
    draining: bool,
    /// No more channel handles: finish what is in flight, then end.
    queue_closed: bool,
    failed: Option<String>,
    /// When the server was last heard from, and when an unanswered PING left.
    last_heard: Instant,
    ping_sent: Option<Instant>,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Connection<T> {
    fn new(io: T, address: &str, config: &ChannelConfig, waiting: VecDeque<Call>) -> Connection<T> {
        let local = Local {
            stream_window: config.stream_window_bytes.max(DEFAULT_WINDOW_BYTES),
            connection_window: config.connection_window_bytes,
            header_block_bytes_max: 4 * config.max_header_list_bytes + 4096,
        };
        let settings = [
            (setting::ENABLE_PUSH, 0),
            (setting::INITIAL_WINDOW_SIZE, local.stream_window),
        ];
        let now = Instant::now();
        Connection {
            core: Core::new(io, local, PREFACE, &settings),
            authority: Bytes::copy_from_slice(address.as_bytes()),
            max_response_bytes: config.max_response_bytes,
            max_header_list_bytes: config.max_header_list_bytes,
            ping_after: config.ping_after,
            ping_timeout: config.ping_timeout,
            scratch: BytesMut::new(),
            settings_read: false,
            waiting,
            streams: HashMap::new(),
            keys: HashMap::new(),
            blocked: VecDeque::new(),
            next_stream: 1,
            draining: false,
            queue_closed: false,
            failed: None,
            last_heard: now,
            ping_sent: None,
            timer: Box::pin(tokio::time::sleep_until(now + config.ping_after)),
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

    /// The calls not yet written (a draining connection takes no new ones).
    fn take_waiting(&mut self) -> VecDeque<Call> {
        std::mem::take(&mut self.waiting)
    }

    /// Serves calls until the connection ends or stops taking new ones. `queues` are the
    /// channel's call and control queues; `None` for a draining connection, which only
    /// finishes what it has.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        mut queues: Option<(
            &mut mpsc::Receiver<Call>,
            &mut mpsc::UnboundedReceiver<Control>,
        )>,
    ) -> Poll<End> {
        for _ in 0..TURNS_PER_POLL {
            let mut progress = false;
            // What the server said first: an end of the connection (EOF, GOAWAY) waiting
            // in the socket must be seen before new calls are committed to it.
            if self.failed.is_none() {
                match self.poll_read(cx) {
                    Ok(true) => progress = true,
                    Ok(false) => {}
                    Err(why) => {
                        if self.failed.is_none() {
                            self.fail(why);
                        }
                    }
                }
            }
            if let Some((calls, controls)) = queues.as_mut() {
                while let Poll::Ready(Some(control)) = controls.poll_recv(cx) {
                    progress = true;
                    self.on_control(control);
                }
                while !self.queue_closed && self.failed.is_none() && !self.draining {
                    match calls.poll_recv(cx) {
                        Poll::Ready(Some(call)) => {
                            progress = true;
                            self.waiting.push_back(call);
                        }
                        Poll::Ready(None) => self.queue_closed = true,
                        Poll::Pending => break,
                    }
                }
            }
            self.start_waiting();
            match self.core.poll_flush(cx) {
                Ok(flushed) => progress |= flushed,
                Err(e) => self.fail(format!("writing: {e}")),
            }
            if let Some(why) = &self.failed {
                // One try at sending the GOAWAY, if there is one; no waiting on a
                // connection that is over.
                let _ = self.core.poll_flush(cx);
                return Poll::Ready(End::Lost(why.clone()));
            }
            if self.streams.is_empty() && self.core.write.is_empty() {
                if queues.is_none() {
                    return Poll::Ready(End::Closed);
                }
                if self.queue_closed && self.waiting.is_empty() {
                    return Poll::Ready(End::Closed);
                }
            }
            if self.draining && queues.is_some() {
                return Poll::Ready(End::Draining);
            }
            if !progress {
                return self.poll_timer(cx);
            }
        }
        // Still busy: let the runtime's other tasks run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Pings a server that has been silent while calls wait; fails the connection if the
    /// ping goes unanswered.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        if self.streams.is_empty() {
            self.ping_sent = None;
            return Poll::Pending;
        }
        loop {
            // The timer is re-armed only when it fires early (hearing from the server
            // moves the due time later, never earlier): resetting it on every poll
            // would cost a timer-wheel update per turn.
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = match self.ping_sent {
                Some(sent) => sent + self.ping_timeout,
                None => self.last_heard + self.ping_after,
            };
            if due > Instant::now() {
                self.timer.as_mut().reset(due);
                continue;
            }
            if self.ping_sent.is_some() {
                let why = format!("the server answered no PING for {:?}", self.ping_timeout);
                self.fail(why.clone());
                return Poll::Ready(End::Lost(why));
            }
            frame::encode_ping(&mut self.core.write, *b"rkv-live", false);
            let now = Instant::now();
            self.ping_sent = Some(now);
            self.timer.as_mut().reset(now + self.ping_timeout);
            if let Err(e) = self.core.poll_flush(cx) {
                let why = format!("writing: {e}");
                self.fail(why.clone());
                return Poll::Ready(End::Lost(why));
            }
        }
    }

    /// Ends the connection. Calls whose bytes never left this process are put back to
    /// be sent on the next connection (and their bytes dropped, so that they cannot
    /// leave on this one after all); calls in flight fail (their outcome is unknown).
    fn fail(&mut self, why: String) {
        self.core.write.clear();
        let mut unsent = Vec::new();
        for (_, stream) in self.streams.drain() {
            if stream.written_at >= self.core.flushed_total {
                unsent.push(stream.call);
            } else {
                stream.call.sink.fail(Status::unavailable(format!(
                    "the connection to the server was lost ({why}); the call may or may not have taken effect"
                )));
            }
        }
        unsent.sort_by_key(|call| call.key);
        for call in unsent.into_iter().rev() {
            self.waiting.push_front(call);
        }
        self.keys.clear();
        self.blocked.clear();
        if self.failed.is_none() {
            self.failed = Some(why);
        }
    }

    fn on_control(&mut self, control: Control) {
        match control {
            Control::Cancel(key) => {
                if let Some(id) = self.keys.remove(&key) {
                    self.streams.remove(&id);
                    frame::encode_rst_stream(&mut self.core.write, id, Reason::CANCEL);
                } else {
                    self.waiting.retain(|call| call.key != key);
                }
            }
            Control::Consumed { key, bytes } => {
                if let Some(id) = self.keys.get(&key)
                    && let Some(stream) = self.streams.get_mut(id)
                {
                    stream.window.release(&mut self.core.write, *id, bytes);
                }
            }
        }
    }

    /// Writes the waiting calls that the server's limits let start.
    fn start_waiting(&mut self) {
        while self.failed.is_none()
            && !self.draining
            && (self.streams.len() as u64) < u64::from(self.core.peer_max_streams)
        {
            if self.next_stream > STREAM_ID_MASK {
                // Stream ids are used up: this connection drains, the next one starts.
                self.draining = true;
                break;
            }
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
            let written_at = self.core.queued_total();
            self.core.send_headers(id, &self.scratch, false);
            let mut stream = StreamState {
                unsent: call.body.clone(),
                call,
                send_window: i64::from(self.core.peer_initial_window),
                written_at,
                headers: None,
                partial: BytesMut::new(),
                message: None,
                window: self.core.stream_recv_window(),
            };
            self.keys.insert(stream.call.key, id);
            let unsent = std::mem::take(&mut stream.unsent);
            stream.unsent = self
                .core
                .send_data(id, &mut stream.send_window, unsent, true);
            if !stream.unsent.is_empty() {
                self.blocked.push_back(id);
            }
            self.streams.insert(id, stream);
        }
    }

    /// Sends request bytes that waited for window.
    fn send_blocked(&mut self) {
        let mut still = VecDeque::new();
        while let Some(id) = self.blocked.pop_front() {
            let Some(stream) = self.streams.get_mut(&id) else {
                continue;
            };
            let unsent = std::mem::take(&mut stream.unsent);
            stream.unsent = self
                .core
                .send_data(id, &mut stream.send_window, unsent, true);
            if !stream.unsent.is_empty() {
                still.push_back(id);
            }
        }
        self.blocked = still;
    }

    /// Reads and handles what the socket holds; whether anything was read.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Result<bool, String> {
        match self.core.poll_read(cx) {
            Poll::Ready(Ok(false)) => Err("the server closed the connection".into()),
            Poll::Ready(Ok(true)) => {
                self.last_heard = Instant::now();
                self.ping_sent = None;
                if let Err(e) = self.read_frames() {
                    let why = e.to_string();
                    self.fail(why.clone());
                    frame::encode_goaway(&mut self.core.write, 0, e.reason, e.message.as_bytes());
                    return Err(why);
                }
                Ok(true)
            }
            Poll::Ready(Err(e)) => Err(format!("reading: {e}")),
            Poll::Pending => Ok(false),
        }
    }

    fn read_frames(&mut self) -> Result<(), ConnectionError> {
        if !self.settings_read && self.core.read.len() >= HEAD_BYTES {
            // §3.4: the server's preface is a SETTINGS frame.
            let (kind, frame_flags) = (self.core.read[3], self.core.read[4]);
            if kind != 4 || frame_flags & flags::ACK != 0 {
                return Err(crate::conn::protocol(
                    "the server's first frame is not SETTINGS",
                ));
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
            } => self.on_header_block(stream, end_stream, &block)?,
            Event::Reset { stream, reason } => self.on_reset(stream, reason),
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
            }
            Event::GoAway {
                last_stream,
                reason,
            } => {
                if reason != Reason::NO_ERROR {
                    tracing::debug!(%reason, last_stream, "the gRPC server sent GOAWAY");
                }
                self.on_goaway(last_stream);
            }
            Event::WindowUpdate { stream, increment } => {
                if let Some(state) = self.streams.get_mut(&stream) {
                    state.send_window += i64::from(increment);
                    if increment == 0 || state.send_window > i64::from(MAX_WINDOW_BYTES) {
                        self.reset_with(stream, unknown("the server broke flow control"));
                    }
                }
                self.send_blocked();
            }
            Event::StreamError { stream, .. } => {
                self.reset_with(stream, unknown("the server sent a malformed frame"));
            }
            Event::Alive => {
                self.ping_sent = None;
                self.send_blocked();
            }
        }
        Ok(())
    }

    /// The server will not process streams above `last`: send those again elsewhere.
    fn on_goaway(&mut self, last: u32) {
        self.draining = true;
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
        let status = if reason == Reason::CANCEL {
            Status::cancelled("the server cancelled the call")
        } else {
            unknown(format!("the server reset the stream ({reason})"))
        };
        stream.call.sink.fail(status);
    }

    fn on_data(&mut self, id: u32, data: Bytes, flow: u32, end_stream: bool) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return; // cancelled by us: ignore what was in flight
        };
        if !stream.window.receive(flow) {
            self.reset_with(id, unknown("the server overran the stream's window"));
            return;
        }
        if stream.headers.is_none() {
            self.reset_with(id, unknown("response DATA before its headers"));
            return;
        }
        stream.partial.extend_from_slice(&data);
        match stream.call.sink {
            Sink::Unary(_) => stream.window.release(&mut self.core.write, id, flow),
            // Padding now; the messages once the caller takes them.
            Sink::Streaming(_) => {
                let padding = flow - data.len() as u32;
                stream.window.release(&mut self.core.write, id, padding);
            }
        }
        let mut failure = None;
        while let Some(length) = grpc::declared_length(&stream.partial) {
            if stream.partial[0] != 0 {
                failure = Some(unknown("the server sent a compressed message"));
                break;
            }
            if length > self.max_response_bytes {
                failure = Some(unknown(format!(
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
                    failure = Some(unknown("more than one response message"));
                    break;
                }
                Sink::Unary(_) => stream.message = Some(message),
            }
        }
        if let Some(status) = failure {
            self.reset_with(id, status);
        } else if end_stream {
            self.finish(id, unknown("the response ended without trailers"));
        }
    }

    fn on_header_block(
        &mut self,
        id: u32,
        end_stream: bool,
        block: &[u8],
    ) -> Result<(), ConnectionError> {
        let mut head = ResponseHead::new(self.max_header_list_bytes);
        self.core
            .decoder
            .decode(block, |name, value| head.field(name, value))?;
        let Some(stream) = self.streams.get_mut(&id) else {
            return Ok(()); // cancelled by us
        };
        if head.too_large {
            self.reset_with(id, unknown("the response's headers are too large"));
            return Ok(());
        }
        if stream.headers.is_none() {
            stream.headers = Some(head.http_status.unwrap_or(0));
            if !end_stream {
                if head.http_status != Some(200) {
                    self.reset_with(id, http_status(head.http_status));
                } else if let Sink::Streaming(items) = &stream.call.sink {
                    let _ = items.send(Item::Started);
                }
                return Ok(());
            }
        } else if !end_stream {
            self.reset_with(id, unknown("response trailers without END_STREAM"));
            return Ok(());
        }
        let http = stream.headers.filter(|s| *s != 0);
        let status = head.into_status(http);
        self.finish(id, status);
        Ok(())
    }

    /// Resets stream `id` and fails its call with `status`.
    fn reset_with(&mut self, id: u32, status: Status) {
        frame::encode_rst_stream(&mut self.core.write, id, Reason::CANCEL);
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
            frame::encode_rst_stream(&mut self.core.write, id, Reason::CANCEL);
        }
        deliver(stream, status);
    }
}

/// For the fuzzer (feature `fuzzing`): one client connection over `io`, with `calls`
/// unary calls and one server-streaming call to send, driven until it ends, whatever
/// the peer sends; the outcomes are dropped.
#[cfg(feature = "fuzzing")]
pub async fn fuzz_connection<T: AsyncRead + AsyncWrite + Unpin>(io: T, calls: usize) {
    let mut waiting = VecDeque::new();
    let mut answers = Vec::new();
    let call = |key, sink| Call {
        key,
        path: "/fuzz.S/M",
        headers: Bytes::new(),
        body: Bytes::from_static(&[0, 0, 0, 0, 0]),
        sink,
        resends: 0,
    };
    for key in 0..calls as u64 {
        let (reply, answer) = oneshot::channel();
        answers.push(answer);
        waiting.push_back(call(key, Sink::Unary(reply)));
    }
    let (items, _stream) = mpsc::unbounded_channel();
    waiting.push_back(call(calls as u64, Sink::Streaming(items)));
    let mut connection = Connection::new(io, "fuzz", &ChannelConfig::default(), waiting);
    let _ = std::future::poll_fn(|cx| connection.poll(cx, None)).await;
}

/// Puts a call that had no effect back in line (at the front, or the back), unless it
/// has been sent again [`RESENDS_MAX`] times already.
fn requeue(line: &mut VecDeque<Call>, mut call: Call, front: bool) {
    if call.resends >= RESENDS_MAX {
        call.sink.fail(not_sent(format!(
            "the call could not be delivered in {RESENDS_MAX} tries: connections failed, \
             or the server refused it unprocessed"
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
fn deliver(stream: StreamState, status: Status) {
    let leftover = !stream.partial.is_empty();
    match stream.call.sink {
        Sink::Unary(reply) => {
            let outcome = match (status.code(), stream.message) {
                (Code::Ok, _) if leftover => Err(unknown("the response ended inside a message")),
                (Code::Ok, Some(message)) => Ok(message),
                (Code::Ok, None) => Err(unknown("the response has no message")),
                _ => Err(status),
            };
            let _ = reply.send(outcome);
        }
        Sink::Streaming(items) => {
            let status = if leftover && status.code() == Code::Ok {
                unknown("the response ended inside a message")
            } else {
                status
            };
            let _ = items.send(Item::End(status));
        }
    }
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
        None => unknown("the response has no :status"),
    }
}

/// What a response header block (headers or trailers) said.
struct ResponseHead {
    http_status: Option<u16>,
    grpc_status: Option<Code>,
    message: Option<String>,
    metadata: http::HeaderMap,
    /// Header bytes decoded, counted as SETTINGS_MAX_HEADER_LIST_SIZE counts them.
    size: usize,
    limit: usize,
    too_large: bool,
}

impl ResponseHead {
    fn new(limit: usize) -> ResponseHead {
        ResponseHead {
            http_status: None,
            grpc_status: None,
            message: None,
            metadata: http::HeaderMap::new(),
            size: 0,
            limit,
            too_large: false,
        }
    }

    fn field(&mut self, name: &[u8], value: &[u8]) {
        self.size += name.len() + value.len() + 32;
        if self.size > self.limit {
            self.too_large = true;
            return;
        }
        match name {
            b":status" => {
                self.http_status = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
            }
            b"grpc-status" => self.grpc_status = Some(Code::from_bytes(value)),
            b"grpc-message" => self.message = Some(percent_decode(value)),
            b"grpc-status-details-bin" | b"content-type" => {}
            // Pseudo-headers, and this transport's own marker, which a server may not set.
            _ if name.first() == Some(&b':') || name.starts_with(b"rkv-grpc-") => {}
            _ => {
                if let (Ok(name), Ok(value)) = (
                    http::HeaderName::from_bytes(name),
                    http::HeaderValue::from_bytes(value),
                ) && self.metadata.try_append(name, value).is_err()
                {
                    self.too_large = true;
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
                unknown("the response has no grpc-status")
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
        assert_eq!(http_status(None).code(), Code::Unknown);
    }

    #[test]
    fn trailers_become_a_status_with_metadata_but_never_the_not_sent_marker() {
        let mut head = ResponseHead::new(64 * 1024);
        head.field(b"grpc-status", b"14");
        head.field(b"grpc-message", b"not%20the%20leader");
        head.field(b"rkv-leader-id", b"3");
        head.field(NOT_SENT_KEY.as_bytes(), b"1");
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
        assert!(
            !status.metadata().contains_key(NOT_SENT_KEY),
            "forged by the server"
        );
        let missing = ResponseHead::new(64 * 1024).into_status(Some(200));
        assert_eq!(missing.code(), Code::Unknown, "maybe applied");
    }

    #[test]
    fn a_huge_header_block_is_cut_off_not_collected() {
        let mut head = ResponseHead::new(64 * 1024);
        for i in 0..100_000 {
            head.field(format!("x-{i}").as_bytes(), b"v");
        }
        assert!(head.too_large);
        assert!(head.metadata.len() < 2000, "{}", head.metadata.len());
    }
}
