//! Everything that can go wrong on a peer connection, typed by what the caller can do.

use std::fmt;
use std::io;

use rkv_raft::NodeId;

use super::handshake::Reject;

/// An error reading or writing the peer protocol.
///
/// Every variant except [`WireError::Io`] means the byte stream can no longer be trusted:
/// close the connection and redial with back-off. The handshake variants
/// ([`WireError::UnsupportedVersion`], [`WireError::ClusterMismatch`],
/// [`WireError::WrongNode`], [`WireError::UnexpectedPeer`]) are found by
/// [`Hello::check`](super::Hello::check); [`WireError::reject`] gives the frame to send
/// back before closing so that the other side learns why.
#[derive(Debug)]
#[non_exhaustive]
pub enum WireError {
    /// A frame announced (or would need) a body longer than the configured maximum.
    /// Detected from the 8-byte header alone, before anything is allocated.
    FrameTooLarge {
        /// The announced or needed body length in bytes.
        len: u64,
        /// The configured maximum body length in bytes.
        max: u32,
    },
    /// A frame with a zero-length body (it has no kind byte).
    EmptyFrame,
    /// The CRC-32C of the body does not match the header.
    BadChecksum {
        /// The checksum in the frame header.
        expected: u32,
        /// The checksum of the body that arrived.
        actual: u32,
    },
    /// The first byte of the body is not a known frame kind.
    UnknownFrameKind(u8),
    /// A HELLO whose magic is not `RKVP`: the other side does not speak this protocol.
    BadMagic([u8; 4]),
    /// The peer speaks a protocol version this node does not.
    UnsupportedVersion {
        /// The version the peer announced (or, in a REJECT, the highest it speaks).
        peer: u16,
        /// The lowest version this node speaks.
        min: u16,
        /// The highest version this node speaks.
        max: u16,
    },
    /// The peer belongs to another cluster (a wrong address in `-servers`, or a data
    /// directory from another cluster).
    ClusterMismatch {
        /// This node's cluster id.
        local: u64,
        /// The peer's cluster id.
        peer: u64,
    },
    /// The peer addressed a node id that is not this node.
    WrongNode {
        /// This node's id.
        local: NodeId,
        /// The id the peer believes it is talking to.
        addressed: NodeId,
    },
    /// The node that answered at an address is not the one this node meant to dial.
    UnexpectedPeer {
        /// The node this node meant to reach.
        expected: NodeId,
        /// The node that answered.
        actual: NodeId,
    },
    /// The peer refused the handshake and said why.
    Rejected(Reject),
    /// A frame of a kind that is not allowed at this point (e.g. MESSAGES before HELLO).
    UnexpectedFrame {
        /// What was expected.
        expected: &'static str,
        /// The kind byte that arrived.
        kind: u8,
    },
    /// A field runs past the end of the body.
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// A tag byte (message kind, payload kind, option, ...) with an unknown value.
    UnknownTag {
        /// The field being read.
        what: &'static str,
        /// The value found.
        tag: u8,
    },
    /// A varint longer than 10 bytes, overflowing a u64, or not minimally encoded.
    BadVarint {
        /// The field being read.
        what: &'static str,
    },
    /// A boolean byte that is neither 0 nor 1.
    BadBool {
        /// The field being read.
        what: &'static str,
        /// The value found.
        value: u8,
    },
    /// Voters or learners not strictly increasing, or an id in both sets.
    InvalidMembership,
    /// Bytes left over after the body was fully parsed.
    TrailingBytes {
        /// How many bytes were left.
        count: usize,
    },
    /// The underlying stream failed (only from the `tokio_util` codec traits).
    Io(io::Error),
}

impl WireError {
    /// The REJECT to send back before closing, for errors the peer should hear about
    /// (the handshake failures found by [`Hello::check`](super::Hello::check)).
    pub fn reject(&self) -> Option<Reject> {
        match *self {
            WireError::UnsupportedVersion { max, .. } => {
                Some(Reject::UnsupportedVersion { supported_max: max })
            }
            WireError::ClusterMismatch { local, .. } => {
                Some(Reject::ClusterMismatch { cluster_id: local })
            }
            WireError::WrongNode { local, .. } => Some(Reject::WrongNode { node: local }),
            WireError::UnexpectedPeer { expected, .. } => Some(Reject::UnexpectedPeer { expected }),
            _ => None,
        }
    }

    /// Whether the error is a handshake refusal (sent or received) rather than a broken
    /// stream: redialing at once will fail the same way, so a transport should back off
    /// for longer and report it loudly.
    pub fn is_handshake(&self) -> bool {
        matches!(
            self,
            WireError::UnsupportedVersion { .. }
                | WireError::ClusterMismatch { .. }
                | WireError::WrongNode { .. }
                | WireError::UnexpectedPeer { .. }
                | WireError::Rejected(_)
                | WireError::BadMagic(_)
        )
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::FrameTooLarge { len, max } => {
                write!(
                    f,
                    "peer frame of {len} bytes exceeds the maximum of {max} bytes"
                )
            }
            WireError::EmptyFrame => write!(f, "peer frame with an empty body"),
            WireError::BadChecksum { expected, actual } => write!(
                f,
                "peer frame checksum mismatch: header says {expected:#010x}, body has {actual:#010x}"
            ),
            WireError::UnknownFrameKind(kind) => write!(f, "unknown peer frame kind {kind:#04x}"),
            WireError::BadMagic(magic) => write!(
                f,
                "not an rkv peer: hello magic is {magic:02x?}, expected \"RKVP\""
            ),
            WireError::UnsupportedVersion { peer, min, max } => write!(
                f,
                "peer speaks protocol version {peer}, this node speaks versions {min} to {max}"
            ),
            WireError::ClusterMismatch { local, peer } => write!(
                f,
                "peer belongs to cluster {peer:#x} but this node belongs to cluster {local:#x} \
                 (wrong address in -servers, or a data directory from another cluster?)"
            ),
            WireError::WrongNode { local, addressed } => write!(
                f,
                "peer wants to talk to node {addressed} but this is node {local} \
                 (do all servers use the same -servers list?)"
            ),
            WireError::UnexpectedPeer { expected, actual } => write!(
                f,
                "dialed node {expected} but node {actual} answered \
                 (do all servers use the same -servers list?)"
            ),
            WireError::Rejected(reject) => write!(f, "rejected by peer: {reject}"),
            WireError::UnexpectedFrame { expected, kind } => {
                write!(f, "expected a {expected} frame, got kind {kind:#04x}")
            }
            WireError::Truncated { what } => write!(f, "peer frame truncated while reading {what}"),
            WireError::UnknownTag { what, tag } => write!(f, "unknown {what} tag {tag}"),
            WireError::BadVarint { what } => {
                write!(f, "overlong or overflowing varint in {what}")
            }
            WireError::BadBool { what, value } => {
                write!(f, "boolean {what} has value {value}, expected 0 or 1")
            }
            WireError::InvalidMembership => write!(
                f,
                "membership ids not strictly increasing, or an id both voter and learner"
            ),
            WireError::TrailingBytes { count } => {
                write!(
                    f,
                    "{count} unexpected bytes after the end of a peer frame body"
                )
            }
            WireError::Io(e) => write!(f, "peer connection I/O error: {e}"),
        }
    }
}

impl std::error::Error for WireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WireError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(e)
    }
}
