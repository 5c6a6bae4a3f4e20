//! What a log entry carries: [`Command`] and its versioned binary encoding.

use std::fmt;

use bytes::Bytes;

use crate::codec::{Reader, Sink};

/// The format version written as the first byte of every encoded [`Command`].
pub const COMMAND_FORMAT_VERSION: u8 = 1;

/// Largest key, in bytes. Larger keys are refused with [`LimitError::KeyTooLarge`].
pub const KEY_BYTES_MAX: usize = 4 * 1024;

/// Largest value, in bytes. Larger values are refused with [`LimitError::ValueTooLarge`].
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;

/// Most pairs in one [`WriteOp::PutMany`]; more are refused with
/// [`LimitError::TooManyPairs`].
pub const PUT_MANY_PAIRS_MAX: usize = 1024;

/// Most key and value bytes, added up, in one [`WriteOp::PutMany`]; more are refused with
/// [`LimitError::BatchTooLarge`].
pub const PUT_MANY_BYTES_MAX: usize = 4 * 1024 * 1024;

const _: () = assert!(KEY_BYTES_MAX + VALUE_BYTES_MAX <= PUT_MANY_BYTES_MAX);
const _: () = assert!(PUT_MANY_BYTES_MAX < u32::MAX as usize);

const KIND_REGISTER: u8 = 0;
const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_COMPARE_AND_SWAP: u8 = 3;
const KIND_PUT_MANY: u8 = 4;
const KIND_SET_PEER: u8 = 5;

/// Most bytes in each text field (name, addresses) of a [`PeerRecord`]. A longer field
/// is refused with [`LimitError::ValueTooLarge`].
pub const PEER_FIELD_BYTES_MAX: usize = 1024;

const PEER_ROLE_VOTER: u8 = 0;
const PEER_ROLE_LEARNER: u8 = 1;
/// Set in the role byte when a `u64` incarnation follows it. Records without an
/// incarnation (0) are encoded byte for byte as before incarnations existed, so older
/// logs, snapshots and digests stay valid.
const PEER_ROLE_INCARNATION_FLAG: u8 = 0x80;

/// What a server joining by address is meant to become.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerRole {
    /// A voter: it joins as a learner and a leader promotes it once it has caught up.
    Voter,
    /// A learner for good (e.g. raft-demo's logger): it never counts toward a quorum.
    Learner,
}

/// How the cluster reaches one server, replicated through the log so that every node
/// (including one that joins later or restarts) knows every other node's address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerRecord {
    /// The server's name as its operator gave it (`node1`, `localhost:4002`).
    pub name: String,
    /// Where its Raft peer listener is (`host:port`).
    pub peer_address: String,
    /// Where its client API is (`host:port`; empty if it serves none), for forwarding.
    pub client_address: String,
    /// What it is meant to become.
    pub role: PeerRole,
    /// A random number drawn once when the server's data directory was created: the
    /// same name with another incarnation is another process or a wiped directory (not
    /// the member that holds the log and the vote). 0: unknown (a record written before
    /// incarnations existed).
    pub incarnation: u64,
}

impl PeerRecord {
    /// Checks every field against [`PEER_FIELD_BYTES_MAX`].
    pub fn validate(&self) -> Result<(), LimitError> {
        for field in [&self.name, &self.peer_address, &self.client_address] {
            if field.len() > PEER_FIELD_BYTES_MAX {
                return Err(LimitError::ValueTooLarge {
                    len: field.len(),
                    max: PEER_FIELD_BYTES_MAX,
                });
            }
        }
        Ok(())
    }

    pub(crate) fn write_to(&self, sink: &mut impl Sink) {
        sink.put_bytes(self.name.as_bytes());
        sink.put_bytes(self.peer_address.as_bytes());
        sink.put_bytes(self.client_address.as_bytes());
        let role = match self.role {
            PeerRole::Voter => PEER_ROLE_VOTER,
            PeerRole::Learner => PEER_ROLE_LEARNER,
        };
        if self.incarnation == 0 {
            sink.put_u8(role);
        } else {
            sink.put_u8(role | PEER_ROLE_INCARNATION_FLAG);
            sink.put_u64(self.incarnation);
        }
    }

    pub(crate) fn read_from(reader: &mut Reader<'_>) -> Result<PeerRecord, DecodeError> {
        let text =
            |bytes: &[u8]| String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidText);
        let name = text(reader.bytes()?)?;
        let peer_address = text(reader.bytes()?)?;
        let client_address = text(reader.bytes()?)?;
        let byte = reader.u8()?;
        let role = match byte & !PEER_ROLE_INCARNATION_FLAG {
            PEER_ROLE_VOTER => PeerRole::Voter,
            PEER_ROLE_LEARNER => PeerRole::Learner,
            _ => return Err(DecodeError::InvalidFlag(byte)),
        };
        let incarnation = if byte & PEER_ROLE_INCARNATION_FLAG == 0 {
            0
        } else {
            match reader.u64()? {
                // 0 is written without the flag: a flagged 0 is not this build's.
                0 => return Err(DecodeError::InvalidFlag(byte)),
                incarnation => incarnation,
            }
        };
        Ok(PeerRecord {
            name,
            peer_address,
            client_address,
            role,
            incarnation,
        })
    }
}

/// A client session's position: exactly-once is per `(client_id, seq)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientSeq {
    /// The session, as returned by [`Output::Registered`](crate::Output::Registered):
    /// the log index of its `Register` entry.
    pub client_id: u64,
    /// The client's sequence number for this write; the first write is 1.
    pub seq: u64,
}

/// A change to the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: Bytes,
        /// Its new value.
        value: Bytes,
    },
    /// Removes `key` (absent keys are fine).
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Replaces the value of `key` with `new` if and only if it currently is `expected`.
    /// `None` means "absent" on both sides: `expected: None` succeeds only if the key is
    /// absent (create-if-absent) and `new: None` deletes it.
    CompareAndSwap {
        /// The key.
        key: Bytes,
        /// The value it must hold now, or `None` if it must be absent.
        expected: Option<Bytes>,
        /// The value to set, or `None` to delete the key.
        new: Option<Bytes>,
    },
    /// Sets every pair, in order, atomically: either every pair is set or, if a limit is
    /// exceeded, none is. A key named twice ends with its last value.
    PutMany {
        /// The pairs to set.
        pairs: Vec<(Bytes, Bytes)>,
    },
}

impl WriteOp {
    /// Checks the size limits ([`KEY_BYTES_MAX`], [`VALUE_BYTES_MAX`],
    /// [`PUT_MANY_PAIRS_MAX`], [`PUT_MANY_BYTES_MAX`]). The state machine runs the same
    /// check when applying; front ends call this to refuse before proposing.
    pub fn validate(&self) -> Result<(), LimitError> {
        match self {
            WriteOp::Put { key, value } => {
                check_key(key)?;
                check_value(value)
            }
            WriteOp::Delete { key } => check_key(key),
            WriteOp::CompareAndSwap { key, expected, new } => {
                check_key(key)?;
                expected.as_ref().map_or(Ok(()), check_value)?;
                new.as_ref().map_or(Ok(()), check_value)
            }
            WriteOp::PutMany { pairs } => {
                if pairs.len() > PUT_MANY_PAIRS_MAX {
                    return Err(LimitError::TooManyPairs {
                        count: pairs.len(),
                        max: PUT_MANY_PAIRS_MAX,
                    });
                }
                for (key, value) in pairs {
                    check_key(key)?;
                    check_value(value)?;
                }
                let bytes = self.payload_bytes();
                if bytes > PUT_MANY_BYTES_MAX {
                    return Err(LimitError::BatchTooLarge {
                        bytes,
                        max: PUT_MANY_BYTES_MAX,
                    });
                }
                Ok(())
            }
        }
    }

    /// Key and value bytes carried, added up (what a buffered write costs).
    pub fn payload_bytes(&self) -> usize {
        match self {
            WriteOp::Put { key, value } => key.len() + value.len(),
            WriteOp::Delete { key } => key.len(),
            WriteOp::CompareAndSwap { key, expected, new } => {
                key.len()
                    + expected.as_ref().map_or(0, Bytes::len)
                    + new.as_ref().map_or(0, Bytes::len)
            }
            WriteOp::PutMany { pairs } => pairs.iter().map(|(k, v)| k.len() + v.len()).sum(),
        }
    }

    fn kind(&self) -> u8 {
        match self {
            WriteOp::Put { .. } => KIND_PUT,
            WriteOp::Delete { .. } => KIND_DELETE,
            WriteOp::CompareAndSwap { .. } => KIND_COMPARE_AND_SWAP,
            WriteOp::PutMany { .. } => KIND_PUT_MANY,
        }
    }

    /// The kind byte, then the body.
    pub(crate) fn write_to(&self, sink: &mut impl Sink) {
        sink.put_u8(self.kind());
        self.write_body(sink);
    }

    fn write_body(&self, sink: &mut impl Sink) {
        match self {
            WriteOp::Put { key, value } => {
                sink.put_bytes(key);
                sink.put_bytes(value);
            }
            WriteOp::Delete { key } => sink.put_bytes(key),
            WriteOp::CompareAndSwap { key, expected, new } => {
                sink.put_bytes(key);
                sink.put_option_bytes(expected.as_deref());
                sink.put_option_bytes(new.as_deref());
            }
            WriteOp::PutMany { pairs } => {
                let count = u32::try_from(pairs.len()).expect("4 billion pairs cannot be encoded");
                sink.put_u32(count);
                for (key, value) in pairs {
                    sink.put_bytes(key);
                    sink.put_bytes(value);
                }
            }
        }
    }

    /// Reads the kind byte, then the body.
    pub(crate) fn read_from(reader: &mut Reader<'_>) -> Result<WriteOp, DecodeError> {
        let kind = reader.u8()?;
        WriteOp::read_body(kind, reader)
    }

    fn read_body(kind: u8, reader: &mut Reader<'_>) -> Result<WriteOp, DecodeError> {
        let bytes = |slice: &[u8]| Bytes::copy_from_slice(slice);
        match kind {
            KIND_PUT => Ok(WriteOp::Put {
                key: bytes(reader.bytes()?),
                value: bytes(reader.bytes()?),
            }),
            KIND_DELETE => Ok(WriteOp::Delete {
                key: bytes(reader.bytes()?),
            }),
            KIND_COMPARE_AND_SWAP => Ok(WriteOp::CompareAndSwap {
                key: bytes(reader.bytes()?),
                expected: reader.option_bytes()?.map(bytes),
                new: reader.option_bytes()?.map(bytes),
            }),
            KIND_PUT_MANY => {
                let count = reader.u32()?;
                // Every pair takes at least 8 bytes (two lengths): never reserve for
                // more pairs than the input could hold.
                let count = usize::try_from(count).map_err(|_| DecodeError::Truncated)?;
                if count > reader.remaining() / 8 {
                    return Err(DecodeError::Truncated);
                }
                let mut pairs = Vec::with_capacity(count);
                for _ in 0..count {
                    let key = bytes(reader.bytes()?);
                    let value = bytes(reader.bytes()?);
                    pairs.push((key, value));
                }
                Ok(WriteOp::PutMany { pairs })
            }
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

fn check_key(key: &Bytes) -> Result<(), LimitError> {
    if key.len() > KEY_BYTES_MAX {
        return Err(LimitError::KeyTooLarge {
            len: key.len(),
            max: KEY_BYTES_MAX,
        });
    }
    Ok(())
}

fn check_value(value: &Bytes) -> Result<(), LimitError> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(LimitError::ValueTooLarge {
            len: value.len(),
            max: VALUE_BYTES_MAX,
        });
    }
    Ok(())
}

/// Everything a log entry's payload can carry. See the crate documentation for the
/// byte layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Opens a client session whose id is the log index of this entry (rkvpb `Register`).
    Register {
        /// The proposing leader's clock, in milliseconds.
        now_ms: u64,
    },
    /// Changes the map, exactly once per `(client_id, seq)` if `session` is set.
    Write {
        /// The proposing leader's clock, in milliseconds.
        now_ms: u64,
        /// The client's session and sequence number, or `None` for a write without
        /// exactly-once protection (retries may apply it twice).
        session: Option<ClientSeq>,
        /// The change.
        op: WriteOp,
    },
    /// Records (or, with `record: None`, forgets) how to reach server `node_id`: the
    /// replicated address book that lets servers join by address.
    SetPeer {
        /// The proposing leader's clock, in milliseconds.
        now_ms: u64,
        /// The server's Raft id.
        node_id: u64,
        /// Its addresses and role, or `None` to forget it.
        record: Option<PeerRecord>,
    },
}

impl Command {
    /// The leader-stamped time of this command.
    pub fn now_ms(&self) -> u64 {
        match self {
            Command::Register { now_ms }
            | Command::Write { now_ms, .. }
            | Command::SetPeer { now_ms, .. } => *now_ms,
        }
    }

    /// Checks the size limits of a write or peer record (a `Register` always passes).
    pub fn validate(&self) -> Result<(), LimitError> {
        match self {
            Command::Register { .. } => Ok(()),
            Command::Write { op, .. } => op.validate(),
            Command::SetPeer { record, .. } => record.as_ref().map_or(Ok(()), PeerRecord::validate),
        }
    }

    /// Encodes the command (format [`COMMAND_FORMAT_VERSION`]).
    ///
    /// # Panics
    /// If a key or value is 4 GiB or longer, which no command passing
    /// [`validate`](Command::validate) is.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.payload_bytes());
        out.put_u8(COMMAND_FORMAT_VERSION);
        match self {
            Command::Register { now_ms } => {
                out.put_u8(KIND_REGISTER);
                out.put_u64(*now_ms);
            }
            Command::Write {
                now_ms,
                session,
                op,
            } => {
                out.put_u8(op.kind());
                out.put_u64(*now_ms);
                match session {
                    None => out.put_u8(0),
                    Some(session) => {
                        out.put_u8(1);
                        out.put_u64(session.client_id);
                        out.put_u64(session.seq);
                    }
                }
                op.write_body(&mut out);
            }
            Command::SetPeer {
                now_ms,
                node_id,
                record,
            } => {
                out.put_u8(KIND_SET_PEER);
                out.put_u64(*now_ms);
                out.put_u64(*node_id);
                match record {
                    None => out.put_u8(0),
                    Some(record) => {
                        out.put_u8(1);
                        record.write_to(&mut out);
                    }
                }
            }
        }
        out
    }

    fn payload_bytes(&self) -> usize {
        match self {
            Command::Register { .. } => 0,
            Command::Write { op, .. } => op.payload_bytes() + 8 * 2,
            Command::SetPeer { record, .. } => record.as_ref().map_or(8, |r| {
                8 + 24 + r.name.len() + r.peer_address.len() + r.client_address.len()
            }),
        }
    }

    /// Decodes a command. Never panics, and never allocates more than the input could
    /// describe, whatever the input.
    pub fn decode(input: &[u8]) -> Result<Command, DecodeError> {
        let mut reader = Reader::new(input);
        let version = reader.u8().map_err(|_| DecodeError::Empty)?;
        if version != COMMAND_FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let kind = reader.u8()?;
        let now_ms = reader.u64()?;
        let command = if kind == KIND_REGISTER {
            Command::Register { now_ms }
        } else if kind == KIND_SET_PEER {
            let node_id = reader.u64()?;
            let record = if reader.flag()? {
                Some(PeerRecord::read_from(&mut reader)?)
            } else {
                None
            };
            Command::SetPeer {
                now_ms,
                node_id,
                record,
            }
        } else {
            if !matches!(
                kind,
                KIND_PUT | KIND_DELETE | KIND_COMPARE_AND_SWAP | KIND_PUT_MANY
            ) {
                return Err(DecodeError::UnknownKind(kind));
            }
            let session = if reader.flag()? {
                Some(ClientSeq {
                    client_id: reader.u64()?,
                    seq: reader.u64()?,
                })
            } else {
                None
            };
            let op = WriteOp::read_body(kind, &mut reader)?;
            Command::Write {
                now_ms,
                session,
                op,
            }
        };
        reader.finish()?;
        Ok(command)
    }
}

/// Why bytes are not a valid encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// No bytes at all.
    Empty,
    /// The format version byte is not one this build reads.
    UnsupportedVersion(u8),
    /// The kind byte names no command.
    UnknownKind(u8),
    /// The input ends before a field it announces.
    Truncated,
    /// A presence flag is neither 0 nor 1.
    InvalidFlag(u8),
    /// Bytes are left after a complete command.
    TrailingBytes(usize),
    /// A text field (a peer's name or address) is not UTF-8.
    InvalidText,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty command"),
            DecodeError::UnsupportedVersion(v) => {
                write!(f, "unsupported command format version {v}")
            }
            DecodeError::UnknownKind(k) => write!(f, "unknown command kind {k}"),
            DecodeError::Truncated => write!(f, "command truncated"),
            DecodeError::InvalidFlag(b) => write!(f, "invalid presence flag {b}"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} trailing bytes after the command"),
            DecodeError::InvalidText => write!(f, "a text field is not UTF-8"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A write exceeding a size limit. Applying it changes nothing but still consumes its
/// session sequence number (the refusal is its result, returned again to a retry).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitError {
    /// A key longer than [`KEY_BYTES_MAX`].
    KeyTooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value longer than [`VALUE_BYTES_MAX`].
    ValueTooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A `PutMany` with more than [`PUT_MANY_PAIRS_MAX`] pairs.
    TooManyPairs {
        /// How many pairs it has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A `PutMany` whose keys and values add up to more than [`PUT_MANY_BYTES_MAX`].
    BatchTooLarge {
        /// Its key and value bytes.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitError::KeyTooLarge { len, max } => {
                write!(f, "key of {len} bytes exceeds the limit of {max}")
            }
            LimitError::ValueTooLarge { len, max } => {
                write!(f, "value of {len} bytes exceeds the limit of {max}")
            }
            LimitError::TooManyPairs { count, max } => {
                write!(f, "{count} pairs in one batch exceed the limit of {max}")
            }
            LimitError::BatchTooLarge { bytes, max } => {
                write!(f, "batch of {bytes} bytes exceeds the limit of {max}")
            }
        }
    }
}

impl std::error::Error for LimitError {}
