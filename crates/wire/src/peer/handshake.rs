//! The HELLO and REJECT frames: who is talking, in which cluster, with which version.

use std::fmt;

use rkv_raft::NodeId;

use super::error::WireError;

/// The protocol version this build speaks when it sends a HELLO.
pub const PROTOCOL_VERSION: u16 = 1;
/// The lowest protocol version this build accepts.
pub const MIN_PROTOCOL_VERSION: u16 = 1;
/// The highest protocol version this build accepts.
pub const MAX_PROTOCOL_VERSION: u16 = PROTOCOL_VERSION;
/// The four bytes after the kind byte of every HELLO.
pub const HELLO_MAGIC: [u8; 4] = *b"RKVP";

const _: () = assert!(MIN_PROTOCOL_VERSION <= PROTOCOL_VERSION);
const _: () = assert!(PROTOCOL_VERSION <= MAX_PROTOCOL_VERSION);

/// The first frame each side of a peer connection sends.
///
/// Its layout is frozen across protocol versions (see `PEER.md`), so that two builds of
/// different versions can always tell each other what they speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hello {
    /// The protocol version of the sender.
    pub protocol_version: u16,
    /// The cluster the sender belongs to.
    pub cluster_id: u64,
    /// The sender's node id.
    pub from: NodeId,
    /// The node id the sender believes it is talking to.
    pub to: NodeId,
}

impl Hello {
    /// A HELLO at this build's [`PROTOCOL_VERSION`].
    pub fn new(cluster_id: u64, from: NodeId, to: NodeId) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            cluster_id,
            from,
            to,
        }
    }

    /// Checks a HELLO received from a peer, in the order of `PEER.md`: version, cluster
    /// id, that it is addressed to `local`, and (on the dialing side, which knows whom it
    /// meant to reach) that it comes from `expected_peer`.
    ///
    /// # Errors
    /// [`WireError::UnsupportedVersion`], [`WireError::ClusterMismatch`],
    /// [`WireError::WrongNode`] or [`WireError::UnexpectedPeer`]; send
    /// [`WireError::reject`] back before closing the connection.
    pub fn check(
        &self,
        cluster_id: u64,
        local: NodeId,
        expected_peer: Option<NodeId>,
    ) -> Result<(), WireError> {
        if !(MIN_PROTOCOL_VERSION..=MAX_PROTOCOL_VERSION).contains(&self.protocol_version) {
            return Err(WireError::UnsupportedVersion {
                peer: self.protocol_version,
                min: MIN_PROTOCOL_VERSION,
                max: MAX_PROTOCOL_VERSION,
            });
        }
        if self.cluster_id != cluster_id {
            return Err(WireError::ClusterMismatch {
                local: cluster_id,
                peer: self.cluster_id,
            });
        }
        if self.to != local {
            return Err(WireError::WrongNode {
                local,
                addressed: self.to,
            });
        }
        if let Some(expected) = expected_peer
            && expected != self.from
        {
            return Err(WireError::UnexpectedPeer {
                expected,
                actual: self.from,
            });
        }
        Ok(())
    }
}

/// Why a peer refused a HELLO: the body of a REJECT frame.
///
/// Each reason carries the rejecting side's own value, so that the rejected side can say
/// exactly what differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Reason 1: the rejecting side does not speak the announced version.
    UnsupportedVersion {
        /// The highest version the rejecting side speaks.
        supported_max: u16,
    },
    /// Reason 2: the rejecting side belongs to another cluster.
    ClusterMismatch {
        /// The rejecting side's cluster id.
        cluster_id: u64,
    },
    /// Reason 3: the HELLO was addressed to another node id.
    WrongNode {
        /// The rejecting side's node id.
        node: NodeId,
    },
    /// Reason 4: the dialer meant to reach another node.
    UnexpectedPeer {
        /// The node the dialer meant to reach.
        expected: NodeId,
    },
    /// A reason this build does not know (sent by a newer peer).
    Other {
        /// The reason code.
        code: u8,
        /// The value that came with it.
        value: u64,
    },
}

impl Reject {
    /// The reason code and value as they appear on the wire.
    pub fn to_parts(self) -> (u8, u64) {
        match self {
            Reject::UnsupportedVersion { supported_max } => (1, u64::from(supported_max)),
            Reject::ClusterMismatch { cluster_id } => (2, cluster_id),
            Reject::WrongNode { node } => (3, node.0),
            Reject::UnexpectedPeer { expected } => (4, expected.0),
            Reject::Other { code, value } => (code, value),
        }
    }

    /// The reject for a reason code and value read from the wire. A version that does
    /// not fit in a u16 is kept as [`Reject::Other`], so that every input round-trips.
    pub fn from_parts(code: u8, value: u64) -> Reject {
        match code {
            1 => match u16::try_from(value) {
                Ok(supported_max) => Reject::UnsupportedVersion { supported_max },
                Err(_) => Reject::Other { code, value },
            },
            2 => Reject::ClusterMismatch { cluster_id: value },
            3 => Reject::WrongNode {
                node: NodeId(value),
            },
            4 => Reject::UnexpectedPeer {
                expected: NodeId(value),
            },
            _ => Reject::Other { code, value },
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reject::UnsupportedVersion { supported_max } => write!(
                f,
                "it speaks protocol versions up to {supported_max}, this node speaks \
                 {MIN_PROTOCOL_VERSION} to {MAX_PROTOCOL_VERSION}"
            ),
            Reject::ClusterMismatch { cluster_id } => {
                write!(f, "it belongs to another cluster, {cluster_id:#x}")
            }
            Reject::WrongNode { node } => write!(f, "it is node {node}, not the one addressed"),
            Reject::UnexpectedPeer { expected } => {
                write!(f, "it meant to reach node {expected}, not this node")
            }
            Reject::Other { code, value } => write!(f, "reason {code} (value {value})"),
        }
    }
}
