//! HTTP/2 frames (RFC 9113 §4 and §6): the 9-byte frame header, the frame types, flags,
//! settings and error codes, and the encoders for every frame this crate sends.
//!
//! Parsing is split in two: [`Head::parse`] reads a frame header and the connection
//! decides, by type, what the payload means. Everything here is pure (bytes in, bytes
//! out), so that it can be tested and fuzzed without a socket.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// What a client sends first on every connection (§3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of a frame header.
pub const HEAD_BYTES: usize = 9;
/// The largest frame payload either side may send until told otherwise (§6.5.2).
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 16_384;
/// The largest value SETTINGS_MAX_FRAME_SIZE may take.
pub const MAX_FRAME_BYTES_LIMIT: u32 = (1 << 24) - 1;
/// Every flow-control window starts at this size (§6.9.2).
pub const DEFAULT_WINDOW_BYTES: u32 = 65_535;
/// The largest a flow-control window may grow (§6.9.1).
pub const MAX_WINDOW_BYTES: u32 = (1 << 31) - 1;
/// The bits of a stream id (the top bit of the field is reserved), and the largest id.
pub const STREAM_ID_MASK: u32 = (1 << 31) - 1;

/// A frame's type (§6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// DATA.
    Data,
    /// HEADERS.
    Headers,
    /// PRIORITY (deprecated; read and ignored).
    Priority,
    /// RST_STREAM.
    RstStream,
    /// SETTINGS.
    Settings,
    /// PUSH_PROMISE (never valid towards a server; refused by clients that disable it).
    PushPromise,
    /// PING.
    Ping,
    /// GOAWAY.
    GoAway,
    /// WINDOW_UPDATE.
    WindowUpdate,
    /// CONTINUATION.
    Continuation,
    /// An extension frame type: ignored, as §4.1 requires.
    Unknown(u8),
}

impl Kind {
    fn from_byte(byte: u8) -> Kind {
        match byte {
            0 => Kind::Data,
            1 => Kind::Headers,
            2 => Kind::Priority,
            3 => Kind::RstStream,
            4 => Kind::Settings,
            5 => Kind::PushPromise,
            6 => Kind::Ping,
            7 => Kind::GoAway,
            8 => Kind::WindowUpdate,
            9 => Kind::Continuation,
            other => Kind::Unknown(other),
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            Kind::Data => 0,
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
        }
    }
}

/// Frame flags (§6). Some bits mean different things on different frame types.
pub mod flags {
    /// DATA, HEADERS: the sender's last frame on this stream.
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS, PING: an acknowledgement.
    pub const ACK: u8 = 0x1;
    /// HEADERS, CONTINUATION: the header block ends in this frame.
    pub const END_HEADERS: u8 = 0x4;
    /// DATA, HEADERS: the payload starts with a pad length and ends with padding.
    pub const PADDED: u8 = 0x8;
    /// HEADERS: the payload starts with 5 bytes of priority information.
    pub const PRIORITY: u8 = 0x20;
}

/// A frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Payload length in bytes.
    pub length: u32,
    /// Frame type.
    pub kind: Kind,
    /// Flags.
    pub flags: u8,
    /// Stream id (0: the connection); the reserved bit is dropped.
    pub stream: u32,
}

impl Head {
    /// Reads a frame header from its 9 bytes.
    pub fn parse(bytes: &[u8; HEAD_BYTES]) -> Head {
        Head {
            length: u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]),
            kind: Kind::from_byte(bytes[3]),
            flags: bytes[4],
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & STREAM_ID_MASK,
        }
    }

    /// Whether flag `flag` is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn encode(&self, out: &mut BytesMut) {
        let length = self.length.to_be_bytes();
        out.put_slice(&length[1..]);
        out.put_u8(self.kind.to_byte());
        out.put_u8(self.flags);
        out.put_u32(self.stream & STREAM_ID_MASK);
    }
}

/// An HTTP/2 error code (§7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reason(pub u32);

impl Reason {
    /// Graceful shutdown, or no error.
    pub const NO_ERROR: Reason = Reason(0);
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: Reason = Reason(1);
    /// Something unexpected went wrong here.
    pub const INTERNAL_ERROR: Reason = Reason(2);
    /// The peer broke flow control.
    pub const FLOW_CONTROL_ERROR: Reason = Reason(3);
    /// A frame arrived on a stream that was already half-closed.
    pub const STREAM_CLOSED: Reason = Reason(5);
    /// A frame had an invalid size.
    pub const FRAME_SIZE_ERROR: Reason = Reason(6);
    /// The stream was refused before any processing: safe to retry.
    pub const REFUSED_STREAM: Reason = Reason(7);
    /// The stream is no longer needed.
    pub const CANCEL: Reason = Reason(8);
    /// The header compression context can no longer be kept.
    pub const COMPRESSION_ERROR: Reason = Reason(9);
    /// The peer generates excessive load.
    pub const ENHANCE_YOUR_CALM: Reason = Reason(11);
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            0 => "NO_ERROR",
            1 => "PROTOCOL_ERROR",
            2 => "INTERNAL_ERROR",
            3 => "FLOW_CONTROL_ERROR",
            4 => "SETTINGS_TIMEOUT",
            5 => "STREAM_CLOSED",
            6 => "FRAME_SIZE_ERROR",
            7 => "REFUSED_STREAM",
            8 => "CANCEL",
            9 => "COMPRESSION_ERROR",
            10 => "CONNECT_ERROR",
            11 => "ENHANCE_YOUR_CALM",
            12 => "INADEQUATE_SECURITY",
            13 => "HTTP_1_1_REQUIRED",
            other => return write!(f, "error code {other:#x}"),
        };
        f.write_str(name)
    }
}

/// A connection error (§5.4.1): the connection ends with a GOAWAY carrying `reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionError {
    /// The error code sent (or received) in the GOAWAY.
    pub reason: Reason,
    /// What went wrong, for the log and the GOAWAY's debug data.
    pub message: String,
}

impl ConnectionError {
    /// A connection error with `reason`.
    pub fn new(reason: Reason, message: impl Into<String>) -> ConnectionError {
        ConnectionError {
            reason,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP/2 {}: {}", self.reason, self.message)
    }
}

impl std::error::Error for ConnectionError {}

/// SETTINGS parameter identifiers (§6.5.2).
pub mod setting {
    /// SETTINGS_HEADER_TABLE_SIZE.
    pub const HEADER_TABLE_SIZE: u16 = 1;
    /// SETTINGS_ENABLE_PUSH.
    pub const ENABLE_PUSH: u16 = 2;
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub const MAX_CONCURRENT_STREAMS: u16 = 3;
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub const INITIAL_WINDOW_SIZE: u16 = 4;
    /// SETTINGS_MAX_FRAME_SIZE.
    pub const MAX_FRAME_SIZE: u16 = 5;
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub const MAX_HEADER_LIST_SIZE: u16 = 6;
}

/// The values of one SETTINGS frame; `None` where it did not name the parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// SETTINGS_HEADER_TABLE_SIZE.
    pub header_table_size: Option<u32>,
    /// SETTINGS_ENABLE_PUSH.
    pub enable_push: Option<bool>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_concurrent_streams: Option<u32>,
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub initial_window_size: Option<u32>,
    /// SETTINGS_MAX_FRAME_SIZE.
    pub max_frame_size: Option<u32>,
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub max_header_list_size: Option<u32>,
}

impl Settings {
    /// Reads a SETTINGS payload, checking each value as §6.5.2 requires. Unknown
    /// parameters are ignored.
    pub fn parse(mut payload: &[u8]) -> Result<Settings, ConnectionError> {
        if !payload.len().is_multiple_of(6) {
            return Err(ConnectionError::new(
                Reason::FRAME_SIZE_ERROR,
                "SETTINGS payload is not a multiple of 6 bytes",
            ));
        }
        let mut settings = Settings::default();
        while payload.has_remaining() {
            let id = payload.get_u16();
            let value = payload.get_u32();
            match id {
                setting::HEADER_TABLE_SIZE => settings.header_table_size = Some(value),
                setting::ENABLE_PUSH => match value {
                    0 | 1 => settings.enable_push = Some(value == 1),
                    _ => {
                        return Err(ConnectionError::new(
                            Reason::PROTOCOL_ERROR,
                            "SETTINGS_ENABLE_PUSH is neither 0 nor 1",
                        ));
                    }
                },
                setting::MAX_CONCURRENT_STREAMS => settings.max_concurrent_streams = Some(value),
                setting::INITIAL_WINDOW_SIZE => {
                    if value > MAX_WINDOW_BYTES {
                        return Err(ConnectionError::new(
                            Reason::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
                        ));
                    }
                    settings.initial_window_size = Some(value);
                }
                setting::MAX_FRAME_SIZE => {
                    if !(DEFAULT_MAX_FRAME_BYTES..=MAX_FRAME_BYTES_LIMIT).contains(&value) {
                        return Err(ConnectionError::new(
                            Reason::PROTOCOL_ERROR,
                            "SETTINGS_MAX_FRAME_SIZE outside 2^14..2^24-1",
                        ));
                    }
                    settings.max_frame_size = Some(value);
                }
                setting::MAX_HEADER_LIST_SIZE => settings.max_header_list_size = Some(value),
                _ => {}
            }
        }
        Ok(settings)
    }
}

/// Removes the pad length byte and the padding of a PADDED DATA or HEADERS payload
/// (§6.1, §6.2).
pub fn strip_padding(payload: &mut Bytes) -> Result<(), ConnectionError> {
    if payload.is_empty() {
        return Err(ConnectionError::new(
            Reason::FRAME_SIZE_ERROR,
            "PADDED frame without a pad length",
        ));
    }
    let pad = usize::from(payload[0]);
    if pad >= payload.len() {
        return Err(ConnectionError::new(
            Reason::PROTOCOL_ERROR,
            "padding longer than the frame",
        ));
    }
    payload.advance(1);
    payload.truncate(payload.len() - pad);
    Ok(())
}

/// Writes a SETTINGS frame with `values` (id, value).
pub fn encode_settings(out: &mut BytesMut, values: &[(u16, u32)]) {
    Head {
        length: (values.len() * 6) as u32,
        kind: Kind::Settings,
        flags: 0,
        stream: 0,
    }
    .encode(out);
    for (id, value) in values {
        out.put_u16(*id);
        out.put_u32(*value);
    }
}

/// Writes a SETTINGS acknowledgement.
pub fn encode_settings_ack(out: &mut BytesMut) {
    Head {
        length: 0,
        kind: Kind::Settings,
        flags: flags::ACK,
        stream: 0,
    }
    .encode(out);
}

/// Writes a PING (or, with `ack`, its answer) carrying `payload`.
pub fn encode_ping(out: &mut BytesMut, payload: [u8; 8], ack: bool) {
    Head {
        length: 8,
        kind: Kind::Ping,
        flags: if ack { flags::ACK } else { 0 },
        stream: 0,
    }
    .encode(out);
    out.put_slice(&payload);
}

/// Writes a WINDOW_UPDATE granting `increment` (1..=2^31-1) bytes on `stream`.
pub fn encode_window_update(out: &mut BytesMut, stream: u32, increment: u32) {
    debug_assert!(increment > 0 && increment <= MAX_WINDOW_BYTES);
    Head {
        length: 4,
        kind: Kind::WindowUpdate,
        flags: 0,
        stream,
    }
    .encode(out);
    out.put_u32(increment & MAX_WINDOW_BYTES);
}

/// Writes a RST_STREAM ending `stream` with `reason`.
pub fn encode_rst_stream(out: &mut BytesMut, stream: u32, reason: Reason) {
    Head {
        length: 4,
        kind: Kind::RstStream,
        flags: 0,
        stream,
    }
    .encode(out);
    out.put_u32(reason.0);
}

/// Writes a GOAWAY: streams above `last_stream` were not processed.
pub fn encode_goaway(out: &mut BytesMut, last_stream: u32, reason: Reason, debug: &[u8]) {
    let debug = &debug[..debug.len().min(256)];
    Head {
        length: 8 + debug.len() as u32,
        kind: Kind::GoAway,
        flags: 0,
        stream: 0,
    }
    .encode(out);
    out.put_u32(last_stream & STREAM_ID_MASK);
    out.put_u32(reason.0);
    out.put_slice(debug);
}

/// Writes a header block as one HEADERS frame, followed by CONTINUATION frames if it is
/// larger than `max_frame_bytes`.
pub fn encode_headers(
    out: &mut BytesMut,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame_bytes: u32,
) {
    let max = max_frame_bytes.max(DEFAULT_MAX_FRAME_BYTES) as usize;
    let mut chunks = block.chunks(max).peekable();
    let mut kind = Kind::Headers;
    let end_stream_flag = if end_stream { flags::END_STREAM } else { 0 };
    if block.is_empty() {
        Head {
            length: 0,
            kind,
            flags: end_stream_flag | flags::END_HEADERS,
            stream,
        }
        .encode(out);
        return;
    }
    while let Some(chunk) = chunks.next() {
        let mut frame_flags = if kind == Kind::Headers {
            end_stream_flag
        } else {
            0
        };
        if chunks.peek().is_none() {
            frame_flags |= flags::END_HEADERS;
        }
        Head {
            length: chunk.len() as u32,
            kind,
            flags: frame_flags,
            stream,
        }
        .encode(out);
        out.put_slice(chunk);
        kind = Kind::Continuation;
    }
}

/// Writes the header of a DATA frame of `length` bytes; the caller writes the payload.
pub fn encode_data_head(out: &mut BytesMut, stream: u32, length: u32, end_stream: bool) {
    Head {
        length,
        kind: Kind::Data,
        flags: if end_stream { flags::END_STREAM } else { 0 },
        stream,
    }
    .encode(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(bytes: &[u8]) -> Head {
        Head::parse(bytes[..HEAD_BYTES].try_into().expect("9 bytes"))
    }

    #[test]
    fn heads_round_trip_and_drop_the_reserved_bit() {
        let mut out = BytesMut::new();
        encode_data_head(&mut out, 7, 300, true);
        let head = head_of(&out);
        assert_eq!(
            head,
            Head {
                length: 300,
                kind: Kind::Data,
                flags: flags::END_STREAM,
                stream: 7
            }
        );
        let mut raw = [0u8; HEAD_BYTES];
        raw[5] = 0x80; // the reserved bit, set
        raw[8] = 3;
        assert_eq!(Head::parse(&raw).stream, 3);
        raw[3] = 0xee;
        assert_eq!(Head::parse(&raw).kind, Kind::Unknown(0xee));
    }

    #[test]
    fn large_header_blocks_continue_in_continuation_frames() {
        let block = vec![0xab; 40_000];
        let mut out = BytesMut::new();
        encode_headers(&mut out, 5, &block, true, DEFAULT_MAX_FRAME_BYTES);
        let mut rest = &out[..];
        let mut seen = Vec::new();
        while !rest.is_empty() {
            let head = head_of(rest);
            seen.push((head.kind, head.flags, head.length));
            rest = &rest[HEAD_BYTES + head.length as usize..];
        }
        assert_eq!(
            seen,
            vec![
                (Kind::Headers, flags::END_STREAM, 16_384),
                (Kind::Continuation, 0, 16_384),
                (Kind::Continuation, flags::END_HEADERS, 40_000 - 2 * 16_384),
            ]
        );
    }

    #[test]
    fn settings_are_checked_as_the_rfc_says() {
        let mut out = BytesMut::new();
        encode_settings(
            &mut out,
            &[
                (setting::INITIAL_WINDOW_SIZE, 1 << 20),
                (setting::MAX_FRAME_SIZE, 32_768),
                (0x99, 5),
            ],
        );
        let settings = Settings::parse(&out[HEAD_BYTES..]).expect("valid");
        assert_eq!(settings.initial_window_size, Some(1 << 20));
        assert_eq!(settings.max_frame_size, Some(32_768));
        assert_eq!(settings.header_table_size, None);

        let bad = |id: u16, value: u32| {
            let mut out = BytesMut::new();
            encode_settings(&mut out, &[(id, value)]);
            Settings::parse(&out[HEAD_BYTES..])
                .expect_err("refused")
                .reason
        };
        assert_eq!(
            bad(setting::INITIAL_WINDOW_SIZE, 1 << 31),
            Reason::FLOW_CONTROL_ERROR
        );
        assert_eq!(bad(setting::MAX_FRAME_SIZE, 100), Reason::PROTOCOL_ERROR);
        assert_eq!(
            bad(setting::MAX_FRAME_SIZE, 1 << 24),
            Reason::PROTOCOL_ERROR
        );
        assert_eq!(bad(setting::ENABLE_PUSH, 2), Reason::PROTOCOL_ERROR);
        assert_eq!(
            Settings::parse(&[0; 5]).expect_err("short").reason,
            Reason::FRAME_SIZE_ERROR
        );
    }

    #[test]
    fn padding_is_removed_and_checked() {
        let mut payload = Bytes::from_static(&[2, b'h', b'i', 0, 0]);
        strip_padding(&mut payload).expect("valid");
        assert_eq!(&payload[..], b"hi");
        let mut all_padding = Bytes::from_static(&[4, 0, 0, 0, 0]);
        strip_padding(&mut all_padding).expect("empty data is fine");
        assert!(all_padding.is_empty());
        let mut too_long = Bytes::from_static(&[5, 0, 0]);
        assert_eq!(
            strip_padding(&mut too_long).expect_err("refused").reason,
            Reason::PROTOCOL_ERROR
        );
        let mut empty = Bytes::new();
        assert!(strip_padding(&mut empty).is_err());
    }
}
