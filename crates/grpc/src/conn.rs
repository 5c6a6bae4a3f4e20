//! What both ends of an HTTP/2 connection share, written once: the frames read turned
//! into [`Event`]s with every check RFC 9113 makes alike for client and server, the
//! assembly of header blocks from HEADERS and CONTINUATION frames, flow control in both
//! directions (windows enforced on what the peer sends, topped up as it is taken), the
//! peer's settings, and the socket's read and write buffers.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::frame::{
    self, ConnectionError, DEFAULT_MAX_FRAME_BYTES, DEFAULT_WINDOW_BYTES, HEAD_BYTES, Head, Kind,
    MAX_WINDOW_BYTES, Reason, STREAM_ID_MASK, Settings, flags,
};
use crate::hpack;

/// What one frame (or one complete header block) says, checked.
#[derive(Debug)]
pub(crate) enum Event {
    /// DATA on `stream`; `flow` bytes counted against the windows (padding included).
    Data {
        stream: u32,
        payload: Bytes,
        flow: u32,
        end_stream: bool,
    },
    /// A complete header block, not yet decoded (the caller decodes every one, in order).
    Headers {
        stream: u32,
        end_stream: bool,
        block: Bytes,
    },
    /// RST_STREAM.
    Reset { stream: u32, reason: Reason },
    /// The peer's SETTINGS (already applied to the core; to be acknowledged).
    Settings(Settings),
    /// GOAWAY: streams above `last_stream` were not processed.
    GoAway { last_stream: u32, reason: Reason },
    /// WINDOW_UPDATE on a stream (the connection's are applied in the core).
    WindowUpdate { stream: u32, increment: u32 },
    /// A frame that ends only its stream with `reason` (a malformed PRIORITY).
    StreamError { stream: u32, reason: Reason },
    /// A PING was answered, or a SETTINGS or PING acknowledgement arrived: the peer is
    /// alive, and nothing else is to be done.
    Alive,
}

/// A stream's receive window: what the peer may still send, and what was taken since
/// it was last topped up.
#[derive(Debug)]
pub(crate) struct RecvWindow {
    remaining: i64,
    unacknowledged: u32,
    size: u32,
}

impl RecvWindow {
    /// A window of `size` bytes (our SETTINGS_INITIAL_WINDOW_SIZE).
    pub(crate) fn new(size: u32) -> RecvWindow {
        RecvWindow {
            remaining: i64::from(size),
            unacknowledged: 0,
            size,
        }
    }

    /// Counts `flow` bytes received; false if the peer overran the window.
    #[must_use]
    pub(crate) fn receive(&mut self, flow: u32) -> bool {
        self.remaining -= i64::from(flow);
        self.remaining >= 0
    }

    /// Gives `taken` bytes back; writes a WINDOW_UPDATE once half the window is owed.
    pub(crate) fn release(&mut self, out: &mut BytesMut, stream: u32, taken: u32) {
        self.unacknowledged = self.unacknowledged.saturating_add(taken);
        if self.unacknowledged > 0 && self.unacknowledged >= (self.size / 2).max(1) {
            frame::encode_window_update(out, stream, self.unacknowledged);
            self.remaining += i64::from(self.unacknowledged);
            self.unacknowledged = 0;
        }
    }
}

/// Our side's limits for a connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Local {
    /// Our SETTINGS_INITIAL_WINDOW_SIZE (at least the default, so that a peer that has
    /// not seen our SETTINGS yet stays within it too).
    pub(crate) stream_window: u32,
    /// The connection window we keep open.
    pub(crate) connection_window: u32,
    /// The largest header block (encoded) we assemble from CONTINUATION frames.
    pub(crate) header_block_bytes_max: usize,
}

/// The shared state of one connection.
pub(crate) struct Core<T> {
    pub(crate) io: T,
    pub(crate) read: BytesMut,
    pub(crate) write: BytesMut,
    pub(crate) decoder: hpack::Decoder,
    continuation: Option<(u32, bool, BytesMut)>,
    local: Local,
    /// The connection's receive window.
    pub(crate) recv: RecvWindow,
    /// What the peer lets us send on the connection.
    pub(crate) send_window: i64,
    /// The peer's SETTINGS_INITIAL_WINDOW_SIZE.
    pub(crate) peer_initial_window: u32,
    /// The peer's SETTINGS_MAX_FRAME_SIZE.
    pub(crate) peer_max_frame: u32,
    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS.
    pub(crate) peer_max_streams: u32,
    /// The next header block we send starts with a dynamic table size update to 0
    /// (RFC 7541 §4.2: after the peer changes SETTINGS_HEADER_TABLE_SIZE, and at the
    /// start; our encoder never uses the table).
    table_size_update: bool,
    /// Bytes handed to the socket so far, and bytes queued in `write` so far.
    pub(crate) flushed_total: u64,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Core<T> {
    /// A connection on `io` whose first bytes to send are `preface` (the client's
    /// preface, or nothing), then our SETTINGS `settings` and the connection window.
    pub(crate) fn new(io: T, local: Local, preface: &[u8], settings: &[(u16, u32)]) -> Core<T> {
        let mut write = BytesMut::with_capacity(16 * 1024);
        write.extend_from_slice(preface);
        frame::encode_settings(&mut write, settings);
        let connection_window = local.connection_window.max(DEFAULT_WINDOW_BYTES);
        if connection_window > DEFAULT_WINDOW_BYTES {
            frame::encode_window_update(&mut write, 0, connection_window - DEFAULT_WINDOW_BYTES);
        }
        Core {
            io,
            read: BytesMut::with_capacity(16 * 1024),
            write,
            decoder: hpack::Decoder::default(),
            continuation: None,
            local,
            recv: RecvWindow::new(connection_window),
            send_window: i64::from(DEFAULT_WINDOW_BYTES),
            peer_initial_window: DEFAULT_WINDOW_BYTES,
            peer_max_frame: DEFAULT_MAX_FRAME_BYTES,
            peer_max_streams: u32::MAX,
            table_size_update: true,
            flushed_total: 0,
        }
    }

    /// A stream receive window as our settings give it.
    pub(crate) fn stream_recv_window(&self) -> RecvWindow {
        RecvWindow::new(self.local.stream_window)
    }

    /// Reads what the socket has: `Ready(Ok(false))` at end of stream.
    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        if self.read.capacity() - self.read.len() < 4096 {
            self.read.reserve(16 * 1024);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read) {
            Poll::Ready(Ok(0)) => Poll::Ready(Ok(false)),
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(true)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Writes what is queued as far as the socket takes it; whether anything went.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> std::io::Result<bool> {
        let mut progress = false;
        while !self.write.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.write) {
                Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    self.write.advance(n);
                    self.flushed_total += n as u64;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        Ok(progress)
    }

    /// The total of bytes queued for the socket so far (flushed or not).
    pub(crate) fn queued_total(&self) -> u64 {
        self.flushed_total + self.write.len() as u64
    }

    /// Writes a header block (HEADERS, and CONTINUATION frames as needed).
    pub(crate) fn send_headers(&mut self, stream: u32, block: &[u8], end_stream: bool) {
        if self.table_size_update {
            self.table_size_update = false;
            let mut prefixed = BytesMut::with_capacity(block.len() + 1);
            prefixed.extend_from_slice(&[0x20]);
            prefixed.extend_from_slice(block);
            frame::encode_headers(
                &mut self.write,
                stream,
                &prefixed,
                end_stream,
                self.peer_max_frame,
            );
        } else {
            frame::encode_headers(
                &mut self.write,
                stream,
                block,
                end_stream,
                self.peer_max_frame,
            );
        }
    }

    /// Sends as much of `data` on `stream` as the windows allow, as DATA frames; the
    /// last carries END_STREAM if `end_stream` and nothing is left. Returns what is left.
    pub(crate) fn send_data(
        &mut self,
        stream: u32,
        stream_window: &mut i64,
        mut data: Bytes,
        end_stream: bool,
    ) -> Bytes {
        loop {
            let allowed = self
                .send_window
                .min(*stream_window)
                .min(i64::from(self.peer_max_frame))
                .max(0);
            let length = data.len().min(allowed as usize);
            let last = length == data.len();
            if length == 0 && !(last && end_stream) {
                return data;
            }
            frame::encode_data_head(&mut self.write, stream, length as u32, last && end_stream);
            self.write.extend_from_slice(&data[..length]);
            data.advance(length);
            self.send_window -= length as i64;
            *stream_window -= length as i64;
            if last {
                return data;
            }
        }
    }

    /// The next event in what was read; `None` once more bytes are needed.
    pub(crate) fn next_event(&mut self) -> Result<Option<Event>, ConnectionError> {
        loop {
            if self.read.len() < HEAD_BYTES {
                return Ok(None);
            }
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
                return Ok(None);
            }
            self.read.advance(HEAD_BYTES);
            let payload = self.read.split_to(head.length as usize).freeze();
            if let Some(event) = self.on_frame(head, payload)? {
                return Ok(Some(event));
            }
        }
    }

    fn on_frame(
        &mut self,
        head: Head,
        mut payload: Bytes,
    ) -> Result<Option<Event>, ConnectionError> {
        if self.continuation.is_some() && head.kind != Kind::Continuation {
            return Err(protocol("a header block was interrupted by another frame"));
        }
        let on_stream_zero = head.stream == 0;
        match head.kind {
            Kind::Data => {
                if on_stream_zero {
                    return Err(protocol("DATA on stream 0"));
                }
                if !self.recv.receive(head.length) {
                    return Err(ConnectionError::new(
                        Reason::FLOW_CONTROL_ERROR,
                        "DATA beyond the connection window",
                    ));
                }
                // The connection window opens again at once: what is buffered per
                // stream is bounded by each side's own limits.
                self.recv.release(&mut self.write, 0, head.length);
                if head.has(flags::PADDED) {
                    frame::strip_padding(&mut payload)?;
                }
                Ok(Some(Event::Data {
                    stream: head.stream,
                    payload,
                    flow: head.length,
                    end_stream: head.has(flags::END_STREAM),
                }))
            }
            Kind::Headers => {
                if on_stream_zero {
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
                    return Ok(Some(Event::Headers {
                        stream: head.stream,
                        end_stream,
                        block: payload,
                    }));
                }
                self.continuation = Some((head.stream, end_stream, BytesMut::from(&payload[..])));
                Ok(None)
            }
            Kind::Continuation => {
                let Some((stream, end_stream, mut block)) = self.continuation.take() else {
                    return Err(protocol("CONTINUATION without HEADERS"));
                };
                if head.stream != stream {
                    return Err(protocol("CONTINUATION on another stream"));
                }
                // Bounded: a block must be kept whole to be decoded (every block feeds
                // the dynamic table), so it may not grow without end.
                if block.len() + payload.len() > self.local.header_block_bytes_max {
                    return Err(ConnectionError::new(
                        Reason::ENHANCE_YOUR_CALM,
                        "a header block larger than this end accepts",
                    ));
                }
                block.extend_from_slice(&payload);
                if head.has(flags::END_HEADERS) {
                    return Ok(Some(Event::Headers {
                        stream,
                        end_stream,
                        block: block.freeze(),
                    }));
                }
                self.continuation = Some((stream, end_stream, block));
                Ok(None)
            }
            Kind::Priority => {
                if on_stream_zero {
                    return Err(protocol("PRIORITY on stream 0"));
                }
                if payload.len() != 5 {
                    return Ok(Some(Event::StreamError {
                        stream: head.stream,
                        reason: Reason::FRAME_SIZE_ERROR,
                    }));
                }
                Ok(None)
            }
            Kind::RstStream => {
                let raw: [u8; 4] = payload[..].try_into().map_err(|_| {
                    ConnectionError::new(Reason::FRAME_SIZE_ERROR, "RST_STREAM is not 4 bytes")
                })?;
                if on_stream_zero {
                    return Err(protocol("RST_STREAM on stream 0"));
                }
                Ok(Some(Event::Reset {
                    stream: head.stream,
                    reason: Reason(u32::from_be_bytes(raw)),
                }))
            }
            Kind::Settings => {
                if !on_stream_zero {
                    return Err(protocol("SETTINGS on a stream"));
                }
                if head.has(flags::ACK) {
                    if !payload.is_empty() {
                        return Err(ConnectionError::new(
                            Reason::FRAME_SIZE_ERROR,
                            "a SETTINGS acknowledgement with a payload",
                        ));
                    }
                    return Ok(Some(Event::Alive));
                }
                let settings = Settings::parse(&payload)?;
                self.apply(&settings);
                frame::encode_settings_ack(&mut self.write);
                Ok(Some(Event::Settings(settings)))
            }
            Kind::PushPromise => Err(protocol("PUSH_PROMISE (push is never enabled here)")),
            Kind::Ping => {
                if !on_stream_zero {
                    return Err(protocol("PING on a stream"));
                }
                let ping: [u8; 8] = payload[..].try_into().map_err(|_| {
                    ConnectionError::new(Reason::FRAME_SIZE_ERROR, "PING is not 8 bytes")
                })?;
                if !head.has(flags::ACK) {
                    frame::encode_ping(&mut self.write, ping, true);
                }
                Ok(Some(Event::Alive))
            }
            Kind::GoAway => {
                if !on_stream_zero {
                    return Err(protocol("GOAWAY on a stream"));
                }
                if payload.len() < 8 {
                    return Err(ConnectionError::new(
                        Reason::FRAME_SIZE_ERROR,
                        "GOAWAY shorter than 8 bytes",
                    ));
                }
                let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                let reason = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                Ok(Some(Event::GoAway {
                    last_stream: last & STREAM_ID_MASK,
                    reason: Reason(reason),
                }))
            }
            Kind::WindowUpdate => {
                let raw: [u8; 4] = payload[..].try_into().map_err(|_| {
                    ConnectionError::new(Reason::FRAME_SIZE_ERROR, "WINDOW_UPDATE is not 4 bytes")
                })?;
                let increment = u32::from_be_bytes(raw) & MAX_WINDOW_BYTES;
                if !on_stream_zero {
                    return Ok(Some(Event::WindowUpdate {
                        stream: head.stream,
                        increment,
                    }));
                }
                if increment == 0 {
                    return Err(protocol("a WINDOW_UPDATE of 0 on the connection"));
                }
                self.send_window += i64::from(increment);
                if self.send_window > i64::from(MAX_WINDOW_BYTES) {
                    return Err(ConnectionError::new(
                        Reason::FLOW_CONTROL_ERROR,
                        "the connection window overflowed",
                    ));
                }
                Ok(Some(Event::Alive))
            }
            Kind::Unknown(_) => Ok(None),
        }
    }

    fn apply(&mut self, settings: &Settings) {
        if let Some(size) = settings.max_frame_size {
            self.peer_max_frame = size;
        }
        if let Some(streams) = settings.max_concurrent_streams {
            self.peer_max_streams = streams;
        }
        if settings.header_table_size.is_some() {
            self.table_size_update = true;
        }
        // SETTINGS_INITIAL_WINDOW_SIZE moves every stream's window: the caller applies
        // it with `shift_windows`, which needs the old value.
    }
}

/// Moves the send windows of a connection's streams by a change of the peer's
/// SETTINGS_INITIAL_WINDOW_SIZE from `old` to `new` (§6.9.2); an error if one would
/// pass 2^31-1.
pub(crate) fn shift_windows<'a>(
    old: u32,
    new: u32,
    windows: impl Iterator<Item = &'a mut i64>,
) -> Result<(), ConnectionError> {
    let delta = i64::from(new) - i64::from(old);
    for window in windows {
        *window += delta;
        if *window > i64::from(MAX_WINDOW_BYTES) {
            return Err(ConnectionError::new(
                Reason::FLOW_CONTROL_ERROR,
                "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream's window",
            ));
        }
    }
    Ok(())
}

/// A connection error of type PROTOCOL_ERROR.
pub(crate) fn protocol(message: &str) -> ConnectionError {
    ConnectionError::new(Reason::PROTOCOL_ERROR, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> Core<tokio::io::DuplexStream> {
        let (io, _other) = tokio::io::duplex(64);
        Core::new(
            io,
            Local {
                stream_window: 100_000,
                connection_window: 1 << 20,
                header_block_bytes_max: 1000,
            },
            b"",
            &[],
        )
    }

    #[test]
    fn receive_windows_are_enforced_and_topped_up_at_half() {
        let mut out = BytesMut::new();
        let mut window = RecvWindow::new(1000);
        assert!(window.receive(600));
        window.release(&mut out, 3, 400);
        assert!(out.is_empty(), "less than half owed");
        window.release(&mut out, 3, 200);
        assert_eq!(out.len(), HEAD_BYTES + 4, "one WINDOW_UPDATE of 600");
        assert_eq!(&out[HEAD_BYTES..], &600u32.to_be_bytes());
        assert!(window.receive(1000), "the window is 1000 again");
        assert!(!window.receive(1), "one byte over");
        // A window of one byte never asks for an update of zero.
        let mut tiny = RecvWindow::new(1);
        let mut out = BytesMut::new();
        tiny.release(&mut out, 1, 0);
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn data_over_the_connection_window_is_a_flow_control_error() {
        let mut core = core();
        core.recv = RecvWindow::new(10);
        let mut input = BytesMut::new();
        frame::encode_data_head(&mut input, 1, 11, false);
        input.extend_from_slice(&[0; 11]);
        core.read = input;
        let error = core.next_event().expect_err("overrun");
        assert_eq!(error.reason, Reason::FLOW_CONTROL_ERROR);
    }

    #[tokio::test]
    async fn data_waits_for_both_windows_and_ends_the_stream_last() {
        let mut core = core();
        core.write.clear();
        core.send_window = 10;
        let mut stream_window = 4;
        let left = core.send_data(
            1,
            &mut stream_window,
            Bytes::from_static(b"0123456789ab"),
            true,
        );
        assert_eq!(&left[..], b"456789ab");
        assert_eq!(core.write.len(), HEAD_BYTES + 4);
        assert_eq!(core.write[4], 0, "no END_STREAM yet");
        stream_window = 100;
        core.write.clear();
        let left = core.send_data(1, &mut stream_window, left, true);
        assert_eq!(&left[..], b"ab", "the connection window is spent");
        core.send_window += 100;
        core.write.clear();
        let left = core.send_data(1, &mut stream_window, left, true);
        assert!(left.is_empty());
        assert_eq!(core.write[4], flags::END_STREAM);
        // An empty body still ends the stream.
        core.write.clear();
        core.send_window = 0;
        let left = core.send_data(3, &mut stream_window, Bytes::new(), true);
        assert!(left.is_empty());
        assert_eq!(
            (core.write.len(), core.write[4]),
            (HEAD_BYTES, flags::END_STREAM)
        );
    }

    #[tokio::test]
    async fn the_first_header_block_shrinks_the_peers_table_to_nothing() {
        let mut core = core();
        core.write.clear();
        core.send_headers(1, &[0x88], true);
        core.send_headers(3, &[0x88], true);
        assert_eq!(&core.write[HEAD_BYTES..HEAD_BYTES + 2], &[0x20, 0x88]);
        assert_eq!(&core.write[2 * HEAD_BYTES + 2..], &[0x88]);
    }
}
