//! The peer protocol: Raft messages between rkv servers over a byte stream.
//!
//! - [`Hello`] / [`Reject`]: the handshake each side sends first, and the refusal that
//!   tells a peer from another cluster (or version, or node) exactly what differs.
//! - [`Frame`]: one unit on the wire; [`encode_frame`] / [`encode_messages`] write a batch
//!   of messages as one frame, [`Frame::encode`] any frame.
//! - [`FrameCodec`] (alias [`FrameDecoder`]): the streaming decoder and encoder, also a
//!   `tokio_util::codec::{Decoder, Encoder}` for `Framed` streams.
//! - [`WireError`]: every failure, typed.
//!
//! ```
//! use bytes::BytesMut;
//! use rkv_raft::{Message, MessageBody, NodeId, Term, Index};
//! use rkv_wire::peer::{Frame, FrameCodec, Hello, encode_frame};
//!
//! let mut codec = FrameCodec::default();
//! let mut stream = BytesMut::new();
//! Frame::Hello(Hello::new(42, NodeId(1), NodeId(2)))
//!     .encode(&mut stream, codec.max_frame_bytes())
//!     .unwrap();
//! let heartbeat = Message {
//!     from: NodeId(1),
//!     to: NodeId(2),
//!     term: Term(3),
//!     body: MessageBody::Heartbeat { commit: Index(5), read_round: 300 },
//! };
//! stream.extend_from_slice(&encode_frame(&[heartbeat.clone()]).unwrap());
//!
//! // The receiver: first the handshake, then batches of messages.
//! let hello = codec.decode(&mut stream).unwrap().unwrap().into_hello().unwrap();
//! hello.check(42, NodeId(2), None).unwrap();
//! assert_eq!(codec.decode(&mut stream).unwrap(), Some(Frame::Messages(vec![heartbeat])));
//! assert_eq!(codec.decode(&mut stream).unwrap(), None); // waits for more bytes
//! ```
//!
//! The specification (`PEER.md`) follows.
//!
#![doc = include_str!("../../PEER.md")]

mod decode;
mod encode;
mod error;
mod handshake;
mod tags;

use bytes::{BufMut, Bytes, BytesMut};
use rkv_raft::{Message, NodeId};
use tokio_util::codec::{Decoder, Encoder};

pub use error::WireError;
pub use handshake::{
    HELLO_MAGIC, Hello, MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, Reject,
};

use decode::Reader;

/// Bytes of the frame header: body length and CRC-32C, each a u32 LE.
pub const FRAME_HEADER_BYTES: usize = 8;
/// The default largest frame body accepted or produced: 64 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 64 << 20;
/// The largest number of bytes a MESSAGES body takes besides its messages: the kind byte
/// and the message count (a varint of at most 10 bytes). A batch fits in a frame when
/// this plus the sum of [`encoded_len`] of its messages is at most the maximum body size.
pub const MESSAGES_BODY_OVERHEAD_BYTES_MAX: usize = 11;
/// Size of a HELLO body (a HELLO frame is this plus [`FRAME_HEADER_BYTES`]).
pub const HELLO_BODY_BYTES: usize = 31;
/// Size of a REJECT body.
pub const REJECT_BODY_BYTES: usize = 10;

/// One frame of the peer protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The handshake, first on every connection in both directions.
    Hello(Hello),
    /// A batch of Raft messages (possibly empty).
    Messages(Vec<Message>),
    /// The handshake was refused; the connection closes after it.
    Reject(Reject),
}

impl Frame {
    /// The frame's kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Hello(_) => tags::FRAME_HELLO,
            Frame::Messages(_) => tags::FRAME_MESSAGES,
            Frame::Reject(_) => tags::FRAME_REJECT,
        }
    }

    /// Appends the whole frame (header and body) to `dst`.
    ///
    /// # Errors
    /// [`WireError::FrameTooLarge`] when the body would exceed `max_frame_bytes`; `dst`
    /// is then left as it was.
    pub fn encode(&self, dst: &mut BytesMut, max_frame_bytes: u32) -> Result<(), WireError> {
        match self {
            Frame::Hello(hello) => put_frame(dst, HELLO_BODY_BYTES, max_frame_bytes, |body| {
                body.put_u8(tags::FRAME_HELLO);
                body.put_slice(&HELLO_MAGIC);
                body.put_u16_le(hello.protocol_version);
                body.put_u64_le(hello.cluster_id);
                body.put_u64_le(hello.from.0);
                body.put_u64_le(hello.to.0);
            }),
            Frame::Messages(messages) => encode_messages(messages, dst, max_frame_bytes),
            Frame::Reject(reject) => {
                let (code, value) = reject.to_parts();
                put_frame(dst, REJECT_BODY_BYTES, max_frame_bytes, |body| {
                    body.put_u8(tags::FRAME_REJECT);
                    body.put_u8(code);
                    body.put_u64_le(value);
                })
            }
        }
    }

    /// The HELLO this frame is, as the first frame of a connection must be.
    ///
    /// # Errors
    /// [`WireError::Rejected`] for a REJECT (the peer refused our HELLO),
    /// [`WireError::UnexpectedFrame`] for anything else.
    pub fn into_hello(self) -> Result<Hello, WireError> {
        match self {
            Frame::Hello(hello) => Ok(hello),
            Frame::Reject(reject) => Err(WireError::Rejected(reject)),
            Frame::Messages(_) => Err(WireError::UnexpectedFrame {
                expected: "HELLO",
                kind: tags::FRAME_MESSAGES,
            }),
        }
    }

    /// The messages this frame carries, as every frame after the HELLO must.
    ///
    /// # Errors
    /// [`WireError::Rejected`] for a REJECT, [`WireError::UnexpectedFrame`] for a second
    /// HELLO.
    pub fn into_messages(self) -> Result<Vec<Message>, WireError> {
        match self {
            Frame::Messages(messages) => Ok(messages),
            Frame::Reject(reject) => Err(WireError::Rejected(reject)),
            Frame::Hello(_) => Err(WireError::UnexpectedFrame {
                expected: "MESSAGES",
                kind: tags::FRAME_HELLO,
            }),
        }
    }
}

/// The exact number of bytes `message` adds to the body of a MESSAGES frame.
pub fn encoded_len(message: &Message) -> usize {
    encode::message_len(message)
}

/// Appends a MESSAGES frame carrying `messages` (a batch, in order) to `dst`.
///
/// # Errors
/// [`WireError::FrameTooLarge`] when the body would exceed `max_frame_bytes`; `dst` is then
/// left as it was. Nothing is copied before the size is known.
pub fn encode_messages(
    messages: &[Message],
    dst: &mut BytesMut,
    max_frame_bytes: u32,
) -> Result<(), WireError> {
    let count = messages.len() as u64;
    let body_len =
        1 + encode::varint_len(count) + messages.iter().map(encode::message_len).sum::<usize>();
    put_frame(dst, body_len, max_frame_bytes, |body| {
        body.put_u8(tags::FRAME_MESSAGES);
        encode::put_varint(body, count);
        for message in messages {
            encode::put_message(body, message);
        }
    })
}

/// A MESSAGES frame carrying `messages`, within [`DEFAULT_MAX_FRAME_BYTES`].
///
/// # Errors
/// [`WireError::FrameTooLarge`] when the body would exceed the default maximum.
pub fn encode_frame(messages: &[Message]) -> Result<Bytes, WireError> {
    let mut dst = BytesMut::new();
    encode_messages(messages, &mut dst, DEFAULT_MAX_FRAME_BYTES)?;
    Ok(dst.freeze())
}

/// Writes header and body; `write_body` must write exactly `body_len` bytes.
fn put_frame(
    dst: &mut BytesMut,
    body_len: usize,
    max_frame_bytes: u32,
    write_body: impl FnOnce(&mut BytesMut),
) -> Result<(), WireError> {
    let len = u32::try_from(body_len)
        .ok()
        .filter(|&len| len <= max_frame_bytes)
        .ok_or(WireError::FrameTooLarge {
            len: body_len as u64,
            max: max_frame_bytes,
        })?;
    let start = dst.len();
    dst.reserve(FRAME_HEADER_BYTES + body_len);
    dst.put_u32_le(len);
    dst.put_u32_le(0); // the CRC, patched below
    write_body(dst);
    let body = &dst[start + FRAME_HEADER_BYTES..];
    // Pair assertion: the size computed up front is the size written.
    assert_eq!(body.len(), body_len, "frame body size computed wrongly");
    let crc = crc32c::crc32c(body);
    dst[start + 4..start + FRAME_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Parses a whole, checksum-verified frame body.
fn decode_body(body: Bytes) -> Result<Frame, WireError> {
    let mut reader = Reader::new(body);
    let frame = match reader.u8("frame kind")? {
        tags::FRAME_HELLO => {
            let magic = reader.array::<4>("hello magic")?;
            if magic != HELLO_MAGIC {
                return Err(WireError::BadMagic(magic));
            }
            let hello = Hello {
                protocol_version: reader.u16_le("hello version")?,
                cluster_id: reader.u64_le("hello cluster id")?,
                from: NodeId(reader.u64_le("hello from")?),
                to: NodeId(reader.u64_le("hello to")?),
            };
            // Frozen layout: later versions may append fields, which this one ignores
            // (it then refuses the version with a clear reason).
            return Ok(Frame::Hello(hello));
        }
        tags::FRAME_MESSAGES => {
            let count = reader.count("message count", decode::MESSAGE_BYTES_MIN)?;
            let mut messages = Vec::with_capacity(count);
            for _ in 0..count {
                messages.push(reader.message()?);
            }
            Frame::Messages(messages)
        }
        tags::FRAME_REJECT => {
            let code = reader.u8("reject reason")?;
            let value = reader.u64_le("reject value")?;
            // Frozen layout, extensible at the end like HELLO.
            return Ok(Frame::Reject(Reject::from_parts(code, value)));
        }
        kind => return Err(WireError::UnknownFrameKind(kind)),
    };
    reader.finish()?;
    Ok(frame)
}

/// The streaming decoder (and encoder) of peer frames.
///
/// Feed it bytes as they arrive; [`FrameCodec::decode`] returns `Ok(None)` until a whole
/// frame is there. A frame whose announced length exceeds the maximum is refused from
/// its 8-byte header, before anything is allocated. After any error the stream is
/// unusable: close the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameCodec {
    max_frame_bytes: u32,
}

/// The name under which the codec is used as a decoder.
pub type FrameDecoder = FrameCodec;

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl FrameCodec {
    /// A codec that accepts and produces frame bodies of at most `max_frame_bytes`.
    pub fn new(max_frame_bytes: u32) -> FrameCodec {
        FrameCodec { max_frame_bytes }
    }

    /// The largest frame body accepted or produced, in bytes.
    pub fn max_frame_bytes(&self) -> u32 {
        self.max_frame_bytes
    }

    /// Takes one whole frame off the front of `src`, or returns `Ok(None)` (consuming
    /// nothing) when more bytes are needed.
    ///
    /// # Errors
    /// [`WireError::FrameTooLarge`], [`WireError::EmptyFrame`],
    /// [`WireError::BadChecksum`], [`WireError::UnknownFrameKind`],
    /// [`WireError::BadMagic`] or a malformed-body error. The stream is unusable after
    /// any of them: close the connection.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        let Some(header) = src.get(..FRAME_HEADER_BYTES) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let expected = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > self.max_frame_bytes {
            return Err(WireError::FrameTooLarge {
                len: u64::from(len),
                max: self.max_frame_bytes,
            });
        }
        if len == 0 {
            return Err(WireError::EmptyFrame);
        }
        // Checked against the maximum above, so this fits in memory by configuration.
        let frame_len = FRAME_HEADER_BYTES + len as usize;
        if src.len() < frame_len {
            src.reserve(frame_len - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(frame_len);
        let body = frame.split_off(FRAME_HEADER_BYTES).freeze();
        let actual = crc32c::crc32c(&body);
        if actual != expected {
            return Err(WireError::BadChecksum { expected, actual });
        }
        decode_body(body).map(Some)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        FrameCodec::decode(self, src)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = WireError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), WireError> {
        frame.encode(dst, self.max_frame_bytes)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = WireError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), WireError> {
        frame.encode(dst, self.max_frame_bytes)
    }
}

impl Encoder<&[Message]> for FrameCodec {
    type Error = WireError;

    fn encode(&mut self, messages: &[Message], dst: &mut BytesMut) -> Result<(), WireError> {
        encode_messages(messages, dst, self.max_frame_bytes)
    }
}
