//! The real transport: Raft messages between processes over TCP, in the peer protocol
//! of `rkv-wire` (`crates/wire/PEER.md`).
//!
//! Each node dials every peer it sends to, once, and keeps that connection for its
//! outbound messages; it accepts the connections its peers dial for their inbound ones.
//! The node task collects a turn's messages per peer and, when it flushes them, writes
//! them as one frame (up to a frame's limits) straight into the socket: no hand-off to
//! another task, which on a busy two-core machine costs a thread wake per message on the
//! commit path. What the socket does not take at once (or what is sent while the link is
//! down) waits in a bounded backlog that the peer's own task writes, in order, once the
//! socket is writable; a full backlog drops new messages (Raft retransmits) and counts
//! them, and so does a lost connection for what was waiting. That task also dials, and
//! redials a lost connection with back-off. Both sides check each other's HELLO: a peer from another
//! cluster, or one that is not who we dialled, is refused with a reason the other side
//! can print.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use rkv_raft::{Message, NodeId};
use rkv_wire::peer::{
    DEFAULT_MAX_FRAME_BYTES, Frame, FrameCodec, Hello, MESSAGES_BODY_OVERHEAD_BYTES_MAX, WireError,
    encoded_len,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

use crate::transport::{PeerInbox, Transport};

/// Encoded bytes a peer link holds for its task (written when the socket takes them)
/// before new messages are dropped. A frame larger than this (up to a frame's 64 MiB)
/// is still taken when nothing else waits.
const BACKLOG_BYTES_MAX: usize = 16 << 20;
/// Capacity a backlog or encoding buffer may keep once empty; more is given back after
/// a burst.
const BUFFER_KEPT_BYTES_MAX: usize = 1 << 20;
/// Messages put in one frame at most.
const FRAME_MESSAGES_MAX: usize = 1024;
/// Longest wait for a peer's HELLO.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest sent data may stay unacknowledged before a peer connection is given up.
const UNACKED_MAX: Duration = Duration::from_secs(1);
/// Idle time before keepalive probes start on an accepted peer connection.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(2);
/// Time between keepalive probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Unanswered keepalive probes before an accepted peer connection is closed.
const KEEPALIVE_RETRIES: u32 = 3;
/// Longest a connection attempt to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a backlog may wait without any of it being written before the connection is
/// given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Counters a status page or metrics endpoint can read.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Messages dropped: a peer's backlog was full, or its connection was lost (or never
    /// made) while they waited, or one was too large for a frame.
    pub dropped: AtomicU64,
    /// Connections made to peers (including reconnections).
    pub connects: AtomicU64,
    /// Connections refused in the handshake (either side).
    pub handshake_failures: AtomicU64,
}

/// The TCP transport of one node.
///
/// [`Transport::send`] collects messages; [`Transport::flush`] sends them. A clone shares
/// the addresses and counters but dials its own connections when it sends.
#[derive(Debug)]
pub struct TcpTransport {
    local: NodeId,
    cluster_id: u64,
    addresses: Arc<RwLock<BTreeMap<NodeId, SocketAddr>>>,
    links: BTreeMap<NodeId, Link>,
    /// Where a frame is encoded before it is written.
    scratch: BytesMut,
    stats: Arc<TransportStats>,
    source: Option<IpAddr>,
}

impl Clone for TcpTransport {
    fn clone(&self) -> TcpTransport {
        TcpTransport {
            local: self.local,
            cluster_id: self.cluster_id,
            addresses: self.addresses.clone(),
            links: BTreeMap::new(),
            scratch: BytesMut::new(),
            stats: self.stats.clone(),
            source: self.source,
        }
    }
}

/// The node task's end of the link to one peer.
#[derive(Debug)]
struct Link {
    /// Messages sent since the last flush.
    pending: Vec<Message>,
    outbound: Arc<Mutex<Outbound>>,
    /// Tells the link's task that the backlog has something; closing it (dropping the
    /// transport) stops the task.
    wake: mpsc::Sender<()>,
}

/// What the node task and a link's task share.
#[derive(Default)]
struct Outbound {
    /// The connection's write half, once its handshake is done.
    write: Option<Arc<OwnedWriteHalf>>,
    /// Encoded frames, or the rest of one, not yet written: written before anything new.
    backlog: BytesMut,
    /// Messages in (or partly in) the backlog: dropped with it if the connection is lost.
    backlog_messages: u64,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("connected", &self.write.is_some())
            .field("backlog_bytes", &self.backlog.len())
            .field("backlog_messages", &self.backlog_messages)
            .finish()
    }
}

impl Outbound {
    /// Writes `frame` (of `messages` messages) after the backlog: straight into the
    /// socket if nothing waits, otherwise (or for what the socket does not take now)
    /// into the backlog.
    fn write(&mut self, frame: &[u8], messages: u64) -> Written {
        let mut written = 0;
        if self.backlog.is_empty()
            && let Some(write) = &self.write
        {
            while written < frame.len() {
                match write.try_write(&frame[written..]) {
                    Ok(n) if n > 0 => written += n,
                    // Would block, or failed: the link's task writes the rest, or finds
                    // the connection broken and redials.
                    _ => break,
                }
            }
            if written == frame.len() {
                return Written::Sent;
            }
        }
        if written == 0
            && !self.backlog.is_empty()
            && self.backlog.len() + frame.len() > BACKLOG_BYTES_MAX
        {
            return Written::Dropped;
        }
        // The task waits for the socket (or a connection) already if there was a backlog
        // (or no connection): only the first frame needs to wake it.
        let wake = self.backlog.is_empty() && self.write.is_some();
        self.backlog.extend_from_slice(&frame[written..]);
        self.backlog_messages += messages;
        Written::Queued { wake }
    }

    /// Drops `n` written bytes off the front of the backlog.
    fn written(&mut self, n: usize) {
        self.backlog.advance(n);
        if self.backlog.is_empty() {
            self.backlog_messages = 0;
            if self.backlog.capacity() > BUFFER_KEPT_BYTES_MAX {
                self.backlog = BytesMut::new();
            }
        }
    }

    /// Forgets the connection and what waited for it (stale by the time a new one is
    /// up: Raft resends what matters); returns how many messages that was.
    fn disconnect(&mut self) -> u64 {
        self.write = None;
        self.backlog = BytesMut::new();
        std::mem::take(&mut self.backlog_messages)
    }
}

/// What became of a frame handed to [`Outbound::write`].
enum Written {
    /// The socket took all of it.
    Sent,
    /// (The rest of) it waits in the backlog; `wake`: the link's task must be told.
    Queued { wake: bool },
    /// The backlog is full: it was dropped.
    Dropped,
}

/// Locks a link's shared state. A panic elsewhere while holding it leaves nothing
/// half-done that matters (at worst a backlog that the next disconnect discards), so a
/// poisoned lock is used as it is.
fn lock(outbound: &Mutex<Outbound>) -> std::sync::MutexGuard<'_, Outbound> {
    outbound
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl TcpTransport {
    /// A transport for node `local` of cluster `cluster_id`, knowing its peers' addresses.
    pub fn new(
        local: NodeId,
        cluster_id: u64,
        addresses: BTreeMap<NodeId, SocketAddr>,
    ) -> TcpTransport {
        TcpTransport {
            local,
            cluster_id,
            addresses: Arc::new(RwLock::new(addresses)),
            links: BTreeMap::new(),
            scratch: BytesMut::new(),
            stats: Arc::new(TransportStats::default()),
            source: None,
        }
    }

    /// Dials peers from `source` instead of the address the kernel would pick. A node
    /// listening on its own address (one of several on a machine, e.g. 127.0.0.11)
    /// then appears to its peers, and to packet filters, as that address.
    pub fn with_source_address(mut self, source: IpAddr) -> TcpTransport {
        self.source = Some(source);
        self
    }

    /// Learns (or changes) a peer's address, e.g. when a server is added.
    pub fn set_address(&self, node: NodeId, address: SocketAddr) {
        if let Ok(mut addresses) = self.addresses.write() {
            addresses.insert(node, address);
        }
    }

    /// The transport's counters.
    pub fn stats(&self) -> Arc<TransportStats> {
        self.stats.clone()
    }

    /// Accepts peer connections on `listener` and delivers their messages to `inbox`.
    /// Runs until the inbox closes (the node stopped).
    pub async fn serve(&self, listener: TcpListener, inbox: PeerInbox) {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accepting a peer connection failed");
                    tokio::time::sleep(BACKOFF_MAX).await;
                    continue;
                }
            };
            if inbox.is_closed() {
                return;
            }
            let _ = stream.set_nodelay(true);
            // A dialer that vanished (a partition, a killed host) must not leave this
            // reader waiting forever: keepalive probes close the connection.
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(KEEPALIVE_IDLE)
                .with_interval(KEEPALIVE_INTERVAL)
                .with_retries(KEEPALIVE_RETRIES);
            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
            let (cluster_id, local, inbox, stats) = (
                self.cluster_id,
                self.local,
                inbox.clone(),
                self.stats.clone(),
            );
            tokio::spawn(async move {
                if let Err(e) = receive(stream, cluster_id, local, inbox).await {
                    if is_handshake_error(&e) {
                        stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "refused a peer connection");
                    } else {
                        tracing::debug!(error = %e, "peer connection closed");
                    }
                }
            });
        }
    }

    fn link_for(&mut self, peer: NodeId) -> &mut Link {
        self.links.entry(peer).or_insert_with(|| {
            let (wake, woken) = mpsc::channel(1);
            let outbound = Arc::new(Mutex::new(Outbound::default()));
            tokio::spawn(dial_loop(
                LinkTask {
                    local: self.local,
                    peer,
                    cluster_id: self.cluster_id,
                    source: self.source,
                    addresses: self.addresses.clone(),
                    stats: self.stats.clone(),
                    outbound: outbound.clone(),
                },
                woken,
            ));
            Link {
                pending: Vec::new(),
                outbound,
                wake,
            }
        })
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, message: Message) {
        self.link_for(message.to).pending.push(message);
    }

    fn flush(&mut self) {
        let frame_body_max = DEFAULT_MAX_FRAME_BYTES as usize - MESSAGES_BODY_OVERHEAD_BYTES_MAX;
        for (peer, link) in &mut self.links {
            let mut messages = link.pending.drain(..).peekable();
            while messages.peek().is_some() {
                // One frame: as many messages as fit, by count and by bytes.
                let mut batch = Vec::new();
                let mut size = 0;
                while let Some(message) = messages.peek() {
                    let len = encoded_len(message);
                    let full = batch.len() >= FRAME_MESSAGES_MAX || size + len > frame_body_max;
                    if full && !batch.is_empty() {
                        break;
                    }
                    size += len;
                    batch.extend(messages.next());
                }
                let count = batch.len() as u64;
                if size > frame_body_max {
                    // The core bounds messages well below a frame; one this large cannot
                    // be sent.
                    self.stats.dropped.fetch_add(count, Ordering::Relaxed);
                    tracing::warn!(%peer, size, "dropped a message larger than a peer frame");
                    continue;
                }
                self.scratch.clear();
                let written = match Frame::Messages(batch)
                    .encode(&mut self.scratch, DEFAULT_MAX_FRAME_BYTES)
                {
                    Ok(()) => lock(&link.outbound).write(&self.scratch, count),
                    Err(_) => Written::Dropped,
                };
                match written {
                    Written::Sent | Written::Queued { wake: false } => {}
                    Written::Queued { wake: true } => {
                        // Full means a wake is pending already.
                        let _ = link.wake.try_send(());
                    }
                    Written::Dropped => {
                        self.stats.dropped.fetch_add(count, Ordering::Relaxed);
                    }
                }
            }
        }
        if self.scratch.capacity() > BUFFER_KEPT_BYTES_MAX {
            self.scratch = BytesMut::new();
        }
    }
}

fn is_handshake_error(e: &TransportError) -> bool {
    matches!(
        e,
        TransportError::Wire(
            WireError::ClusterMismatch { .. }
                | WireError::WrongNode { .. }
                | WireError::UnexpectedPeer { .. }
                | WireError::UnsupportedVersion { .. }
                | WireError::Rejected(_)
                | WireError::BadMagic(_)
        )
    )
}

/// What ends a peer connection.
#[derive(Debug)]
enum TransportError {
    Io(std::io::Error),
    Wire(WireError),
    Closed,
    HelloTimeout,
    WriteTimeout,
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Io(e) => write!(f, "i/o: {e}"),
            TransportError::Wire(e) => write!(f, "{e}"),
            TransportError::Closed => write!(f, "closed by the peer"),
            TransportError::HelloTimeout => write!(f, "no HELLO within {HELLO_TIMEOUT:?}"),
            TransportError::WriteTimeout => {
                write!(f, "the peer took nothing for {WRITE_TIMEOUT:?}")
            }
        }
    }
}

impl From<std::io::Error> for TransportError {
    fn from(e: std::io::Error) -> Self {
        TransportError::Io(e)
    }
}

impl From<WireError> for TransportError {
    fn from(e: WireError) -> Self {
        TransportError::Wire(e)
    }
}

/// Reads frames off a stream.
struct FrameReader {
    stream: tokio::net::tcp::OwnedReadHalf,
    buffer: BytesMut,
    codec: FrameCodec,
}

impl FrameReader {
    fn new(stream: tokio::net::tcp::OwnedReadHalf) -> FrameReader {
        FrameReader {
            stream,
            buffer: BytesMut::new(),
            codec: FrameCodec::default(),
        }
    }

    async fn next(&mut self) -> Result<Frame, TransportError> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buffer)? {
                return Ok(frame);
            }
            self.buffer.reserve(64 * 1024);
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return Err(TransportError::Closed);
            }
        }
    }
}

async fn write_frame(
    stream: &mut tokio::net::tcp::OwnedWriteHalf,
    frame: &Frame,
) -> Result<(), TransportError> {
    let mut buffer = BytesMut::new();
    frame.encode(&mut buffer, DEFAULT_MAX_FRAME_BYTES)?;
    stream.write_all(&buffer).await?;
    Ok(())
}

/// Exchanges HELLOs; returns the peer's after checking it.
async fn handshake(
    reader: &mut FrameReader,
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    ours: Hello,
    expected_peer: Option<NodeId>,
) -> Result<Hello, TransportError> {
    write_frame(writer, &Frame::Hello(ours)).await?;
    let frame = tokio::time::timeout(HELLO_TIMEOUT, reader.next())
        .await
        .map_err(|_| TransportError::HelloTimeout)??;
    let theirs = frame.into_hello()?;
    if let Err(e) = theirs.check(ours.cluster_id, ours.from, expected_peer) {
        if let Some(reject) = e.reject() {
            let _ = write_frame(writer, &Frame::Reject(reject)).await;
        }
        return Err(e.into());
    }
    Ok(theirs)
}

/// Serves one inbound connection: handshake, then deliver every message.
async fn receive(
    stream: TcpStream,
    cluster_id: u64,
    local: NodeId,
    inbox: PeerInbox,
) -> Result<(), TransportError> {
    let (read, mut write) = stream.into_split();
    let mut reader = FrameReader::new(read);
    // We do not know who is calling until its HELLO arrives, so ours names it afterwards:
    // read first, then answer.
    let frame = tokio::time::timeout(HELLO_TIMEOUT, reader.next())
        .await
        .map_err(|_| TransportError::HelloTimeout)??;
    let theirs = frame.into_hello()?;
    if let Err(e) = theirs.check(cluster_id, local, None) {
        if let Some(reject) = e.reject() {
            let _ = write_frame(&mut write, &Frame::Reject(reject)).await;
        }
        return Err(e.into());
    }
    write_frame(
        &mut write,
        &Frame::Hello(Hello::new(cluster_id, local, theirs.from)),
    )
    .await?;
    loop {
        let messages = reader.next().await?.into_messages()?;
        let messages: Vec<Message> = messages
            .into_iter()
            .filter(|m| m.from == theirs.from && m.to == local)
            .collect();
        if !messages.is_empty() && inbox.send(messages).await.is_err() {
            return Ok(());
        }
    }
}

/// What a link's task needs to dial its peer and write to it.
struct LinkTask {
    local: NodeId,
    peer: NodeId,
    cluster_id: u64,
    source: Option<IpAddr>,
    addresses: Arc<RwLock<BTreeMap<NodeId, SocketAddr>>>,
    stats: Arc<TransportStats>,
    outbound: Arc<Mutex<Outbound>>,
}

impl LinkTask {
    /// Forgets the connection and what waited for it, counting those messages dropped.
    fn disconnected(&self) {
        let lost = lock(&self.outbound).disconnect();
        self.stats.dropped.fetch_add(lost, Ordering::Relaxed);
    }
}

/// Keeps a connection to the peer and writes the link's backlog, redialling with
/// back-off. Ends once the transport is gone (`woken` closed).
async fn dial_loop(task: LinkTask, mut woken: mpsc::Receiver<()>) {
    let peer = task.peer;
    let mut backoff = BACKOFF_MIN;
    loop {
        let address = task
            .addresses
            .read()
            .ok()
            .and_then(|a| a.get(&peer).copied());
        let mut connected = false;
        let result = match address {
            Some(address) => send_over(&task, address, &mut woken, &mut connected).await,
            None => Err(TransportError::Closed),
        };
        task.disconnected();
        if connected {
            // The link worked: a later drop starts the back-off afresh.
            backoff = BACKOFF_MIN;
        }
        match result {
            Ok(()) => return, // the node stopped: the transport is gone
            Err(e) => {
                if is_handshake_error(&e) {
                    task.stats
                        .handshake_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, error = %e, "peer refused");
                } else {
                    tracing::debug!(%peer, error = %e, "peer connection lost");
                }
            }
        }
        if woken.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Dials, shakes hands, then writes the backlog whenever there is one, until the
/// connection fails (an error) or the transport is gone (`Ok`).
async fn send_over(
    task: &LinkTask,
    address: SocketAddr,
    woken: &mut mpsc::Receiver<()>,
    connected: &mut bool,
) -> Result<(), TransportError> {
    let connect = async {
        match task.source {
            None => TcpStream::connect(address).await,
            Some(source) => {
                let socket = if source.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.bind(SocketAddr::new(source, 0))?;
                socket.connect(address).await
            }
        }
    };
    // Bounded: a peer whose SYNs are dropped must not hold the dial loop for the
    // kernel's minutes of SYN retries; the loop redials with back-off instead.
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting timed out"))??;
    stream.set_nodelay(true)?;
    // Sent data unacknowledged this long means the link is down: the kernel closes the
    // connection, and we redial. Without it, a connection that lived through a partition
    // waits out TCP's exponential retransmission back-off (seconds) after the heal.
    socket2::SockRef::from(&stream).set_tcp_user_timeout(Some(UNACKED_MAX))?;
    let (read, mut write) = stream.into_split();
    let mut reader = FrameReader::new(read);
    handshake(
        &mut reader,
        &mut write,
        Hello::new(task.cluster_id, task.local, task.peer),
        Some(task.peer),
    )
    .await?;
    task.stats.connects.fetch_add(1, Ordering::Relaxed);
    if woken.is_closed() {
        // The node stopped while we dialled: what waits is stale.
        return Ok(());
    }
    // The peer never writes after its HELLO; reading tells us when it goes away.
    let closed = Box::pin(async move { reader.next().await });
    *connected = true;
    let write = Arc::new(write);
    lock(&task.outbound).write = Some(write.clone());
    pump(task, &write, woken, closed).await
}

/// Writes the link's backlog whenever it has one, until the connection fails (an
/// error) or the transport is gone (`Ok`).
async fn pump(
    task: &LinkTask,
    write: &OwnedWriteHalf,
    woken: &mut mpsc::Receiver<()>,
    mut closed: std::pin::Pin<Box<impl Future<Output = Result<Frame, TransportError>>>>,
) -> Result<(), TransportError> {
    // When the backlog last shrank, or last started to fill.
    let mut progress = Instant::now();
    loop {
        let waiting = {
            let mut outbound = lock(&task.outbound);
            while !outbound.backlog.is_empty() {
                match write.try_write(&outbound.backlog) {
                    Ok(0) => return Err(TransportError::Closed),
                    Ok(n) => {
                        outbound.written(n);
                        progress = Instant::now();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
            !outbound.backlog.is_empty()
        };
        if waiting {
            // A peer that vanished without closing (power loss) must not stall the link.
            let left = WRITE_TIMEOUT.saturating_sub(progress.elapsed());
            if left.is_zero() {
                return Err(TransportError::WriteTimeout);
            }
            tokio::select! {
                writable = tokio::time::timeout(left, write.writable()) => {
                    if let Ok(result) = writable {
                        result?;
                    }
                }
                result = &mut closed => {
                    return Err(result.err().unwrap_or(TransportError::Closed));
                }
                wake = woken.recv() => if wake.is_none() {
                    return Ok(());
                }
            }
        } else {
            tokio::select! {
                wake = woken.recv() => if wake.is_none() {
                    return Ok(());
                },
                result = &mut closed => {
                    return Err(result.err().unwrap_or(TransportError::Closed));
                }
            }
            progress = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rkv_raft::{Entry, Index, MessageBody, Payload, Term};

    use super::*;

    const WAIT: Duration = Duration::from_secs(20);

    /// Message number `seq` from node 1 to node 2 (its number is its term), carrying
    /// `payload`.
    fn message(seq: u64, payload: &Bytes) -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(seq),
            body: MessageBody::Append {
                prev_index: Index(0),
                prev_term: Term(0),
                entries: vec![Entry {
                    term: Term(seq),
                    index: Index(1),
                    payload: Payload::Command(payload.clone()),
                }],
                commit: Index(0),
            },
        }
    }

    /// Node 2's side of a connection the transport dialled: accepts it on `listener`
    /// and answers the HELLO. The write half must be kept: the transport takes a closed
    /// connection for a lost one.
    async fn accept(listener: &TcpListener) -> (FrameReader, OwnedWriteHalf) {
        let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .expect("the transport dials")
            .expect("accept");
        let (read, mut write) = stream.into_split();
        let mut reader = FrameReader::new(read);
        let hello = tokio::time::timeout(WAIT, reader.next())
            .await
            .expect("a HELLO in time")
            .expect("a frame")
            .into_hello()
            .expect("a HELLO");
        assert_eq!((hello.from, hello.cluster_id), (NodeId(1), 7));
        let ours = Frame::Hello(Hello::new(7, NodeId(2), NodeId(1)));
        tokio::time::timeout(WAIT, write_frame(&mut write, &ours))
            .await
            .expect("answered in time")
            .expect("answered");
        (reader, write)
    }

    /// A transport for node 1 of cluster 7 whose peer 2 is a bare socket the test
    /// drives, connected by a first message (number 0).
    async fn linked() -> (TcpTransport, TcpListener, FrameReader, OwnedWriteHalf) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let mut transport = TcpTransport::new(NodeId(1), 7, BTreeMap::from([(NodeId(2), address)]));
        transport.send(message(0, &Bytes::new()));
        transport.flush();
        let (mut reader, write) = accept(&listener).await;
        assert_eq!(receive_seqs(&mut reader, 1).await, vec![0]);
        (transport, listener, reader, write)
    }

    /// Reads messages until `count` have arrived; returns their numbers.
    async fn receive_seqs(reader: &mut FrameReader, count: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        while seqs.len() < count {
            let frame = tokio::time::timeout(WAIT, reader.next())
                .await
                .unwrap_or_else(|_| panic!("{} of {count} messages arrived", seqs.len()))
                .expect("a frame");
            seqs.extend(
                frame
                    .into_messages()
                    .expect("messages")
                    .iter()
                    .map(|m| m.term.0),
            );
        }
        seqs
    }

    fn backlog_bytes(transport: &TcpTransport) -> usize {
        lock(&transport.links[&NodeId(2)].outbound).backlog.len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flushs_messages_to_a_peer_arrive_in_one_frame_in_order() {
        let (mut transport, _listener, mut reader, _write) = linked().await;
        let payload = Bytes::from_static(b"sixteen bytes!!!");
        for seq in 1..=5 {
            transport.send(message(seq, &payload));
        }
        transport.flush();
        assert_eq!(
            backlog_bytes(&transport),
            0,
            "the socket took it all at once"
        );
        let frame = tokio::time::timeout(WAIT, reader.next())
            .await
            .expect("a frame arrives")
            .expect("a frame");
        let seqs: Vec<u64> = frame
            .into_messages()
            .expect("messages")
            .iter()
            .map(|m| m.term.0)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_stops_reading_costs_dropped_messages_not_a_stalled_node() {
        let (mut transport, _listener, mut reader, _write) = linked().await;
        let stats = transport.stats();
        // The peer reads nothing: the kernel's buffers fill, then the backlog, then
        // messages are dropped. Every flush returns (a blocking one would hang here).
        let payload = Bytes::from(vec![7u8; 256 << 10]);
        let mut sent = 1;
        while stats.dropped.load(Ordering::Relaxed) == 0 {
            assert!(
                sent < 2_000,
                "nothing was dropped after {sent} messages of 256 KiB"
            );
            transport.send(message(sent, &payload));
            transport.flush();
            sent += 1;
        }
        let backlog = backlog_bytes(&transport);
        assert!(
            backlog + payload.len() > BACKLOG_BYTES_MAX && backlog <= BACKLOG_BYTES_MAX,
            "dropped with {backlog} bytes waiting: only a full backlog drops"
        );
        // More while the backlog is full: each is dropped, none blocks.
        for _ in 0..10 {
            transport.send(message(sent, &payload));
            transport.flush();
            sent += 1;
        }
        let dropped = stats.dropped.load(Ordering::Relaxed);
        assert!(dropped >= 11, "{dropped} dropped with a full backlog");
        // Once the peer reads again, everything not dropped (of messages 1 to sent - 1)
        // arrives, in order, once.
        let delivered = receive_seqs(&mut reader, (sent - 1 - dropped) as usize).await;
        assert!(
            delivered.windows(2).all(|w| w[0] < w[1]),
            "out of order or repeated: {delivered:?}"
        );
        assert_eq!(delivered.len() as u64 + dropped, sent - 1);
        assert_eq!(stats.connects.load(Ordering::Relaxed), 1, "never redialled");
        // The link is healthy again: the next message goes straight through.
        transport.send(message(sent, &payload));
        transport.flush();
        assert_eq!(receive_seqs(&mut reader, 1).await, vec![sent]);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), dropped);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_connection_is_redialled() {
        let (mut transport, listener, reader, write) = linked().await;
        // The peer goes away; the transport redials by itself.
        drop((reader, write));
        let (mut reader, _write) = accept(&listener).await;
        transport.send(message(1, &Bytes::from_static(b"x")));
        transport.flush();
        // Sent while connecting, or straight through: it arrives either way.
        assert_eq!(receive_seqs(&mut reader, 1).await, vec![1]);
        assert_eq!(transport.stats().connects.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_transport_closes_its_connections() {
        let (transport, _listener, mut reader, _write) = linked().await;
        drop(transport);
        let end = tokio::time::timeout(WAIT, reader.next())
            .await
            .expect("the connection ends in time");
        assert!(matches!(end, Err(TransportError::Closed)), "{end:?}");
    }
}
