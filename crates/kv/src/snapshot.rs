//! Snapshots: encoding, restore and the state digest.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::Bytes;

use crate::codec::{Fnv64, Reader, Sink};
use crate::command::{DecodeError, LimitError, PeerRecord, WriteOp};
use crate::machine::{Buffered, Output, Session, StateMachine};
use crate::map::ChunkedMap;

/// The first four bytes of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"RKVS";

/// The snapshot format version, written after the magic, when the address book holds
/// any peer. A state without peers is written as version 1 ([`SNAPSHOT_FORMAT_VERSION_V1`]),
/// byte for byte what earlier builds wrote, so their snapshots and digests stay valid.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 2;

/// The first snapshot format: version 2 without the peer table.
pub const SNAPSHOT_FORMAT_VERSION_V1: u8 = 1;

const CHECKSUM_BYTES: usize = 4;
const HEADER_BYTES: usize = SNAPSHOT_MAGIC.len() + 1;

// Tags of a session's kept result.
const RESULT_NONE: u8 = 0;
const RESULT_PUT: u8 = 1;
const RESULT_DELETED: u8 = 2;
const RESULT_SWAPPED: u8 = 3;
const RESULT_PUT_MANY: u8 = 4;
const RESULT_LIMIT: u8 = 5;

// Tags of a kept limit error.
const LIMIT_KEY: u8 = 0;
const LIMIT_VALUE: u8 = 1;
const LIMIT_PAIRS: u8 = 2;
const LIMIT_BATCH: u8 = 3;

/// A frozen copy of a [`StateMachine`], cheap to take, to encode elsewhere.
///
/// Taking it clones the map's `Arc`-shared chunks (about one pointer per 128 keys) and
/// the sessions (bounded by [`SESSIONS_MAX`](crate::SESSIONS_MAX)); the apply loop goes
/// on while another thread runs [`encode`](SnapshotView::encode). It is `Send`.
#[derive(Clone, Debug)]
pub struct SnapshotView {
    state: StateMachine,
}

// The view must be able to move to the thread that encodes it.
const _: fn() = || {
    fn movable<T: Send + Sync + 'static>() {}
    movable::<SnapshotView>();
};

impl SnapshotView {
    /// The applied index the snapshot covers.
    pub fn applied_index(&self) -> u64 {
        self.state.applied_index
    }

    /// The snapshot bytes (see [`StateMachine::snapshot`]).
    pub fn encode(&self) -> Vec<u8> {
        self.state.snapshot()
    }

    /// The digest of the state it froze (see [`StateMachine::digest`]).
    pub fn digest(&self) -> u64 {
        self.state.digest()
    }
}

impl StateMachine {
    /// A frozen copy for encoding off the apply path.
    pub fn snapshot_view(&self) -> SnapshotView {
        SnapshotView {
            state: self.clone(),
        }
    }

    /// The whole state (map, sessions with their buffered writes and kept results,
    /// clock, applied index) as versioned, checksummed bytes. Deterministic: equal states
    /// encode to equal bytes. Layout in the crate documentation.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_state(&mut out);
        let checksum = crc32c::crc32c(&out);
        out.put_u32(checksum);
        out
    }

    /// A 64-bit hash of the whole state, equal on replicas that applied the same entries
    /// (FNV-1a over the snapshot encoding without its checksum; stable across platforms
    /// and builds of the same format version, not cryptographic).
    pub fn digest(&self) -> u64 {
        let mut hasher = Fnv64::new();
        self.write_state(&mut hasher);
        hasher.finish()
    }

    fn write_state(&self, sink: &mut impl Sink) {
        sink.put(&SNAPSHOT_MAGIC);
        let version = if self.peers.is_empty() {
            SNAPSHOT_FORMAT_VERSION_V1
        } else {
            SNAPSHOT_FORMAT_VERSION
        };
        sink.put_u8(version);
        sink.put_u64(self.applied_index);
        sink.put_u64(self.clock_ms);
        sink.put_u64(self.map.len() as u64);
        for (key, value) in self.map.iter() {
            sink.put_bytes(key);
            sink.put_bytes(value);
        }
        sink.put_u64(self.sessions.len() as u64);
        for (client_id, session) in &self.sessions {
            sink.put_u64(*client_id);
            sink.put_u64(session.last_seq);
            sink.put_u64(session.last_active_ms);
            write_result(sink, session.last_result.as_ref());
            sink.put_u64(session.buffered.len() as u64);
            for (seq, buffered) in &session.buffered {
                sink.put_u64(*seq);
                sink.put_u64(buffered.index);
                buffered.op.write_to(sink);
            }
        }
        if version == SNAPSHOT_FORMAT_VERSION {
            sink.put_u64(self.peers.len() as u64);
            for (node_id, record) in &self.peers {
                sink.put_u64(*node_id);
                record.write_to(sink);
            }
        }
    }

    /// Rebuilds a state machine from [`snapshot`](StateMachine::snapshot) bytes. Never
    /// panics: corrupt, truncated or foreign input is an error.
    pub fn restore(input: &[u8]) -> Result<StateMachine, SnapshotError> {
        if input.len() < HEADER_BYTES + CHECKSUM_BYTES {
            return Err(SnapshotError::TooShort);
        }
        if input[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = input[SNAPSHOT_MAGIC.len()];
        if version != SNAPSHOT_FORMAT_VERSION && version != SNAPSHOT_FORMAT_VERSION_V1 {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        let (body, trailer) = input.split_at(input.len() - CHECKSUM_BYTES);
        let mut stored = [0u8; CHECKSUM_BYTES];
        stored.copy_from_slice(trailer);
        let stored = u32::from_le_bytes(stored);
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(SnapshotError::ChecksumMismatch { stored, computed });
        }
        let mut reader = Reader::new(&body[HEADER_BYTES..]);
        let mut state = read_state(&mut reader)?;
        if version == SNAPSHOT_FORMAT_VERSION {
            state.peers = read_peers(&mut reader)?;
        }
        reader.finish()?;
        Ok(state)
    }
}

fn read_state(reader: &mut Reader<'_>) -> Result<StateMachine, SnapshotError> {
    let applied_index = reader.u64()?;
    let clock_ms = reader.u64()?;
    let mut map = ChunkedMap::default();
    let pairs = reader.u64()?;
    let mut last_key: Option<&[u8]> = None;
    for _ in 0..pairs {
        let key = reader.bytes()?;
        let value = reader.bytes()?;
        if last_key.is_some_and(|last| last >= key) {
            return Err(SnapshotError::Invalid("keys out of order"));
        }
        last_key = Some(key);
        map.insert(Bytes::copy_from_slice(key), Bytes::copy_from_slice(value));
    }
    let session_count = reader.u64()?;
    let mut sessions = BTreeMap::new();
    let mut idle = BTreeSet::new();
    let mut buffered_total = 0usize;
    let mut last_client: Option<u64> = None;
    for _ in 0..session_count {
        let client_id = reader.u64()?;
        if last_client.is_some_and(|last| last >= client_id) {
            return Err(SnapshotError::Invalid("sessions out of order"));
        }
        last_client = Some(client_id);
        let last_seq = reader.u64()?;
        let last_active_ms = reader.u64()?;
        let last_result = read_result(reader)?;
        let buffered_count = reader.u64()?;
        let mut session = Session::new(last_active_ms);
        session.last_seq = last_seq;
        session.last_result = last_result;
        let mut previous_seq = last_seq
            .checked_add(1)
            .ok_or(SnapshotError::Invalid("sequence number overflow"))?;
        for _ in 0..buffered_count {
            let seq = reader.u64()?;
            if seq <= previous_seq {
                return Err(SnapshotError::Invalid("buffered writes out of order"));
            }
            previous_seq = seq;
            let index = reader.u64()?;
            let op = WriteOp::read_from(reader)?;
            session.buffered_bytes += op.payload_bytes();
            session.buffered.insert(seq, Buffered { index, op });
        }
        buffered_total += session.buffered_bytes;
        idle.insert((last_active_ms, client_id));
        sessions.insert(client_id, session);
    }
    Ok(StateMachine {
        map,
        sessions,
        idle,
        buffered_bytes: buffered_total,
        applied_index,
        clock_ms,
        peers: BTreeMap::new(),
    })
}

fn read_peers(reader: &mut Reader<'_>) -> Result<BTreeMap<u64, PeerRecord>, SnapshotError> {
    let count = reader.u64()?;
    let mut peers = BTreeMap::new();
    let mut last: Option<u64> = None;
    for _ in 0..count {
        let node_id = reader.u64()?;
        if last.is_some_and(|last| last >= node_id) {
            return Err(SnapshotError::Invalid("peers out of order"));
        }
        last = Some(node_id);
        peers.insert(node_id, PeerRecord::read_from(reader)?);
    }
    if peers.is_empty() {
        // Version 2 is written only with peers: an empty table is not this build's.
        return Err(SnapshotError::Invalid("a version 2 snapshot without peers"));
    }
    Ok(peers)
}

fn write_result(sink: &mut impl Sink, result: Option<&Output>) {
    match result {
        Some(Output::Put) => sink.put_u8(RESULT_PUT),
        Some(Output::Deleted { existed }) => {
            sink.put_u8(RESULT_DELETED);
            sink.put_u8(u8::from(*existed));
        }
        Some(Output::Swapped { swapped, previous }) => {
            sink.put_u8(RESULT_SWAPPED);
            sink.put_u8(u8::from(*swapped));
            sink.put_option_bytes(previous.as_deref());
        }
        Some(Output::PutMany) => sink.put_u8(RESULT_PUT_MANY),
        Some(Output::Limit(error)) => {
            sink.put_u8(RESULT_LIMIT);
            let (tag, size, max) = match error {
                LimitError::KeyTooLarge { len, max } => (LIMIT_KEY, *len, *max),
                LimitError::ValueTooLarge { len, max } => (LIMIT_VALUE, *len, *max),
                LimitError::TooManyPairs { count, max } => (LIMIT_PAIRS, *count, *max),
                LimitError::BatchTooLarge { bytes, max } => (LIMIT_BATCH, *bytes, *max),
            };
            sink.put_u8(tag);
            sink.put_u64(size as u64);
            sink.put_u64(max as u64);
        }
        // A session keeps only the results of applied writes; the other outputs never
        // become a session's last result.
        None
        | Some(
            Output::Registered { .. }
            | Output::PeerSet { .. }
            | Output::Duplicate
            | Output::Session(_)
            | Output::Rejected(_),
        ) => sink.put_u8(RESULT_NONE),
    }
}

fn read_result(reader: &mut Reader<'_>) -> Result<Option<Output>, SnapshotError> {
    let result = match reader.u8()? {
        RESULT_NONE => None,
        RESULT_PUT => Some(Output::Put),
        RESULT_DELETED => Some(Output::Deleted {
            existed: reader.flag()?,
        }),
        RESULT_SWAPPED => Some(Output::Swapped {
            swapped: reader.flag()?,
            previous: reader.option_bytes()?.map(Bytes::copy_from_slice),
        }),
        RESULT_PUT_MANY => Some(Output::PutMany),
        RESULT_LIMIT => {
            let tag = reader.u8()?;
            let size = usize_from(reader.u64()?)?;
            let max = usize_from(reader.u64()?)?;
            let error = match tag {
                LIMIT_KEY => LimitError::KeyTooLarge { len: size, max },
                LIMIT_VALUE => LimitError::ValueTooLarge { len: size, max },
                LIMIT_PAIRS => LimitError::TooManyPairs { count: size, max },
                LIMIT_BATCH => LimitError::BatchTooLarge { bytes: size, max },
                _ => return Err(SnapshotError::Invalid("unknown limit error")),
            };
            Some(Output::Limit(error))
        }
        _ => return Err(SnapshotError::Invalid("unknown session result")),
    };
    Ok(result)
}

fn usize_from(value: u64) -> Result<usize, SnapshotError> {
    usize::try_from(value).map_err(|_| SnapshotError::Invalid("size does not fit this platform"))
}

/// Why bytes are not a snapshot this build can restore.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Shorter than a header and a checksum.
    TooShort,
    /// Does not start with [`SNAPSHOT_MAGIC`]: not a state machine snapshot.
    BadMagic,
    /// A format version this build does not read.
    UnsupportedVersion(u8),
    /// The CRC-32C trailer does not match: the bytes were damaged.
    ChecksumMismatch {
        /// The checksum in the trailer.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// A field is truncated or malformed despite a valid checksum (a writer bug).
    Malformed(DecodeError),
    /// The fields decode but break an invariant (a writer bug).
    Invalid(&'static str),
}

impl From<DecodeError> for SnapshotError {
    fn from(error: DecodeError) -> SnapshotError {
        SnapshotError::Malformed(error)
    }
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::TooShort => write!(f, "snapshot too short"),
            SnapshotError::BadMagic => write!(f, "not a state machine snapshot (bad magic)"),
            SnapshotError::UnsupportedVersion(v) => {
                write!(f, "unsupported snapshot format version {v}")
            }
            SnapshotError::ChecksumMismatch { stored, computed } => write!(
                f,
                "snapshot checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            SnapshotError::Malformed(e) => write!(f, "malformed snapshot: {e}"),
            SnapshotError::Invalid(what) => write!(f, "invalid snapshot: {what}"),
        }
    }
}

impl std::error::Error for SnapshotError {}
