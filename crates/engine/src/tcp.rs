//! The real transport: Raft messages between processes over TCP, in the peer protocol
//! of `rkv-wire` (`crates/wire/PEER.md`).
//!
//! Each node dials every peer it sends to, once, and keeps that connection for its
//! outbound messages; it accepts the connections its peers dial for their inbound ones.
//! Per peer, one task drains a bounded queue: whatever has queued up while the last
//! frame was written goes out together in the next frame (batching under load, one
//! message per frame when idle). A full queue drops the message (Raft retransmits) and
//! counts it. A lost connection is redialled with back-off. Both sides check each
//! other's HELLO: a peer from another cluster, or one that is not who we dialled, is
//! refused with a reason the other side can print.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::BytesMut;
use rkv_raft::{Message, NodeId};
use rkv_wire::peer::{
    DEFAULT_MAX_FRAME_BYTES, Frame, FrameCodec, Hello, MESSAGES_BODY_OVERHEAD_BYTES_MAX, WireError,
    encoded_len,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

use crate::transport::{PeerInbox, Transport};

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE_MESSAGES: usize = 8192;
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
/// Longest a frame may take to write before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Counters a status page or metrics endpoint can read.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Messages dropped because a peer's queue was full or its address unknown.
    pub dropped: AtomicU64,
    /// Connections made to peers (including reconnections).
    pub connects: AtomicU64,
    /// Connections refused in the handshake (either side).
    pub handshake_failures: AtomicU64,
}

/// The TCP transport of one node.
#[derive(Clone, Debug)]
pub struct TcpTransport {
    local: NodeId,
    cluster_id: u64,
    addresses: Arc<RwLock<BTreeMap<NodeId, SocketAddr>>>,
    queues: BTreeMap<NodeId, mpsc::Sender<Message>>,
    stats: Arc<TransportStats>,
    source: Option<IpAddr>,
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
            queues: BTreeMap::new(),
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

    fn queue_for(&mut self, peer: NodeId) -> &mpsc::Sender<Message> {
        let (local, cluster_id) = (self.local, self.cluster_id);
        let (addresses, stats, source) = (self.addresses.clone(), self.stats.clone(), self.source);
        self.queues.entry(peer).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PEER_QUEUE_MESSAGES);
            tokio::spawn(dial_loop(
                local, peer, cluster_id, source, addresses, rx, stats,
            ));
            tx
        })
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, message: Message) {
        let stats = self.stats.clone();
        if self.queue_for(message.to).try_send(message).is_err() {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
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
                write!(f, "a frame took over {WRITE_TIMEOUT:?} to write")
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
    let mut reader = FrameReader {
        stream: read,
        buffer: BytesMut::new(),
        codec: FrameCodec::default(),
    };
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

/// Keeps a connection to `peer` and writes its queued messages, redialling with back-off.
async fn dial_loop(
    local: NodeId,
    peer: NodeId,
    cluster_id: u64,
    source: Option<IpAddr>,
    addresses: Arc<RwLock<BTreeMap<NodeId, SocketAddr>>>,
    mut queue: mpsc::Receiver<Message>,
    stats: Arc<TransportStats>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let address = addresses.read().ok().and_then(|a| a.get(&peer).copied());
        let mut connected = false;
        let result = match address {
            Some(address) => {
                send_over(
                    local,
                    peer,
                    cluster_id,
                    (source, address),
                    &mut queue,
                    &stats,
                    &mut connected,
                )
                .await
            }
            None => Err(TransportError::Closed),
        };
        if connected {
            // The link worked: a later drop starts the back-off afresh.
            backoff = BACKOFF_MIN;
        }
        match result {
            Ok(()) => return, // the node stopped: the queue closed
            Err(e) => {
                if is_handshake_error(&e) {
                    stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, error = %e, "peer refused");
                } else {
                    tracing::debug!(%peer, error = %e, "peer connection lost");
                }
            }
        }
        // Messages queued while disconnected are stale by now: Raft will resend what matters.
        while let Ok(_stale) = queue.try_recv() {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if queue.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn send_over(
    local: NodeId,
    peer: NodeId,
    cluster_id: u64,
    (source, address): (Option<IpAddr>, SocketAddr),
    queue: &mut mpsc::Receiver<Message>,
    stats: &TransportStats,
    connected: &mut bool,
) -> Result<(), TransportError> {
    let connect = async {
        match source {
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
    let mut reader = FrameReader {
        stream: read,
        buffer: BytesMut::new(),
        codec: FrameCodec::default(),
    };
    handshake(
        &mut reader,
        &mut write,
        Hello::new(cluster_id, local, peer),
        Some(peer),
    )
    .await?;
    stats.connects.fetch_add(1, Ordering::Relaxed);
    // The peer never writes after its HELLO; reading tells us when it goes away.
    let mut closed = Box::pin(async move { reader.next().await });
    *connected = true;
    let mut batch = Vec::with_capacity(FRAME_MESSAGES_MAX);
    let mut buffer = BytesMut::new();
    // A message taken off the queue that did not fit in the previous frame.
    let mut carried: Option<Message> = None;
    let frame_body_max = DEFAULT_MAX_FRAME_BYTES as usize - MESSAGES_BODY_OVERHEAD_BYTES_MAX;
    loop {
        let first = match carried.take() {
            Some(message) => message,
            None => tokio::select! {
                message = queue.recv() => match message {
                    Some(message) => message,
                    None => return Ok(()),
                },
                result = &mut closed => {
                    return Err(result.err().unwrap_or(TransportError::Closed));
                }
            },
        };
        let mut size = encoded_len(&first);
        if size > frame_body_max {
            // The core bounds messages well below a frame; one this large cannot be sent.
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, size, "dropped a message larger than a peer frame");
            continue;
        }
        batch.push(first);
        // Fill the frame with what else is queued, by count and by bytes.
        while batch.len() < FRAME_MESSAGES_MAX {
            let Ok(message) = queue.try_recv() else { break };
            let len = encoded_len(&message);
            if size + len > frame_body_max {
                carried = Some(message);
                break;
            }
            size += len;
            batch.push(message);
        }
        buffer.clear();
        Frame::Messages(std::mem::take(&mut batch)).encode(&mut buffer, DEFAULT_MAX_FRAME_BYTES)?;
        // A peer that vanished without closing (power loss) must not stall the link.
        tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&buffer))
            .await
            .map_err(|_| TransportError::WriteTimeout)??;
    }
}
