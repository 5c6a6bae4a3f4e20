//! The byte layouts of FORMAT.md: encoders and decoders, pure functions over byte slices.
//!
//! Exists apart from the file logic so that the decoders can be fuzzed and property
//! tested without any I/O, and so that one place owns every on-disk width. Decoders never
//! panic and never allocate more than the input could hold: every length is checked
//! against the bytes actually present before it is used.

use std::collections::BTreeSet;

use bytes::Bytes;
use rkv_raft::{
    Entry, HardState, Index, Membership, NodeId, Payload, Snapshot, SnapshotMeta, Term,
};

use crate::error::Corruption;

/// The format version written by this build for the hard state and snapshot files.
pub const VERSION: u32 = 1;
/// The segment format version written by this build: 2 adds preallocation (FORMAT.md
/// §2); version 1 segments are read too.
pub const SEGMENT_VERSION: u32 = 2;
/// Magic number at the start of a segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"rkvlogsg";
/// Magic number at the start of each hard state slot.
pub const HARD_STATE_MAGIC: [u8; 8] = *b"rkvhards";
/// Magic number at the start of a snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"rkvsnaps";
/// Size of a segment header.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// Size of a record's fixed part: length, crc, type, term, index.
pub const RECORD_HEADER_BYTES: usize = 25;
/// Smallest value of a record's length field (type, term and index, no body).
pub const RECORD_LENGTH_MIN: u32 = 17;
/// Largest value of a record's length field.
pub const RECORD_LENGTH_MAX: u32 = 64 << 20;
/// Size of one hard state slot.
pub const HARD_STATE_SLOT_BYTES: usize = 64;
/// Size of the hard state file (two slots).
pub const HARD_STATE_FILE_BYTES: usize = 2 * HARD_STATE_SLOT_BYTES;

const TYPE_NOOP: u8 = 1;
const TYPE_COMMAND: u8 = 2;
const TYPE_MEMBERSHIP: u8 = 3;

// The record header is the length and crc fields plus the part the length counts.
const _: () = assert!(RECORD_HEADER_BYTES == 8 + RECORD_LENGTH_MIN as usize);
const _: () = assert!(HARD_STATE_SLOT_BYTES >= 37 + 4);

fn crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Reads fixed-width little-endian fields, failing with `Truncated` instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, position: 0 }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], Corruption> {
        let end = self
            .position
            .checked_add(len)
            .filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(Corruption::Truncated {
                needed: self.position as u64 + len as u64,
                available: self.bytes.len() as u64,
            });
        };
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, Corruption> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, Corruption> {
        let mut buf = [0u8; 4];
        buf.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(buf))
    }

    fn u64(&mut self) -> Result<u64, Corruption> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(buf))
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }
}

fn check_magic(actual: &[u8], expected: &[u8; 8]) -> Result<(), Corruption> {
    if actual == expected {
        Ok(())
    } else {
        Err(Corruption::BadMagic)
    }
}

fn check_version(version: u32) -> Result<(), Corruption> {
    if version == VERSION {
        Ok(())
    } else {
        Err(Corruption::UnsupportedVersion(version))
    }
}

fn check_crc(stored: u32, computed: u32) -> Result<(), Corruption> {
    if stored == computed {
        Ok(())
    } else {
        Err(Corruption::BadChecksum { stored, computed })
    }
}

/// A segment's header (FORMAT.md §2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's sequence number.
    pub sequence: u64,
    /// The index of its first record, and the truncation point it implies.
    pub first_index: Index,
}

/// Appends the encoded header to `out`.
pub fn encode_segment_header(header: &SegmentHeader, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&SEGMENT_MAGIC);
    out.extend_from_slice(&SEGMENT_VERSION.to_le_bytes());
    out.extend_from_slice(&header.sequence.to_le_bytes());
    out.extend_from_slice(&header.first_index.0.to_le_bytes());
    let checksum = crc(&out[start..]);
    out.extend_from_slice(&checksum.to_le_bytes());
    debug_assert_eq!(out.len() - start, SEGMENT_HEADER_BYTES);
}

/// Decodes a segment header from the start of `bytes`.
pub fn decode_segment_header(bytes: &[u8]) -> Result<SegmentHeader, Corruption> {
    let mut reader = Reader::new(bytes);
    let magic = reader.take(8)?;
    let version = reader.u32()?;
    let sequence = reader.u64()?;
    let first_index = Index(reader.u64()?);
    let stored = reader.u32()?;
    check_magic(magic, &SEGMENT_MAGIC)?;
    check_crc(stored, crc(&bytes[..SEGMENT_HEADER_BYTES - 4]))?;
    if !(1..=SEGMENT_VERSION).contains(&version) {
        return Err(Corruption::UnsupportedVersion(version));
    }
    Ok(SegmentHeader {
        sequence,
        first_index,
    })
}

/// Whether `bytes` (what follows the last record of a segment) is unused preallocated
/// space: a zero length field and nothing but zeros to the end (FORMAT.md §2).
pub fn is_preallocated_tail(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|b| *b == 0)
}

/// The encoded size of an entry's record.
pub fn record_len(entry: &Entry) -> usize {
    RECORD_HEADER_BYTES + body_len(&entry.payload)
}

fn body_len(payload: &Payload) -> usize {
    match payload {
        Payload::Noop => 0,
        Payload::Command(data) => data.len(),
        Payload::Membership(m) => membership_len(m),
    }
}

fn membership_len(membership: &Membership) -> usize {
    8 + 8 * (membership.voters.len() + membership.learners.len())
}

fn encode_membership(membership: &Membership, out: &mut Vec<u8>) {
    for set in [&membership.voters, &membership.learners] {
        let count = u32::try_from(set.len()).expect("fewer than 2^32 members");
        out.extend_from_slice(&count.to_le_bytes());
        for id in set {
            out.extend_from_slice(&id.0.to_le_bytes());
        }
    }
}

fn decode_node_set(reader: &mut Reader<'_>) -> Result<BTreeSet<NodeId>, Corruption> {
    let count = reader.u32()? as usize;
    // Gate: never trust a count beyond what the bytes can hold.
    if count > reader.remaining() / 8 {
        return Err(Corruption::BadBody);
    }
    let mut set = BTreeSet::new();
    let mut previous: Option<u64> = None;
    for _ in 0..count {
        let id = reader.u64()?;
        if previous.is_some_and(|p| p >= id) {
            return Err(Corruption::BadBody);
        }
        previous = Some(id);
        set.insert(NodeId(id));
    }
    Ok(set)
}

fn decode_membership(reader: &mut Reader<'_>) -> Result<Membership, Corruption> {
    let voters = decode_node_set(reader)?;
    let learners = decode_node_set(reader)?;
    Ok(Membership { voters, learners })
}

/// Appends the encoded record of `entry` to `out`.
///
/// # Panics
/// If the entry's body exceeds [`RECORD_LENGTH_MAX`]; callers check with [`record_len`].
pub fn encode_record(entry: &Entry, out: &mut Vec<u8>) {
    let body = body_len(&entry.payload);
    let length = u32::try_from(RECORD_LENGTH_MIN as usize + body)
        .ok()
        .filter(|&l| l <= RECORD_LENGTH_MAX)
        .expect("record length checked by the caller");
    let kind = match &entry.payload {
        Payload::Noop => TYPE_NOOP,
        Payload::Command(_) => TYPE_COMMAND,
        Payload::Membership(_) => TYPE_MEMBERSHIP,
    };
    // The fixed part is built on the stack and copied once: this runs for every entry.
    let mut header = [0u8; RECORD_HEADER_BYTES];
    header[0..4].copy_from_slice(&length.to_le_bytes());
    header[8] = kind;
    header[9..17].copy_from_slice(&entry.term.0.to_le_bytes());
    header[17..25].copy_from_slice(&entry.index.0.to_le_bytes());
    out.reserve(RECORD_HEADER_BYTES + body);
    let start = out.len();
    out.extend_from_slice(&header);
    match &entry.payload {
        Payload::Noop => {}
        Payload::Command(data) => out.extend_from_slice(data),
        Payload::Membership(m) => encode_membership(m, out),
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[0..4]), &out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len() - start, RECORD_HEADER_BYTES + body);
}

/// The outcome of looking at the bytes where a record should start.
#[derive(Debug, PartialEq, Eq)]
pub struct DecodedRecord {
    /// The entry.
    pub entry: Entry,
    /// How many bytes the record occupies.
    pub len: usize,
}

/// Checks only the framing (length and CRC) of the record at the start of `bytes`, and
/// returns its total size. Used by the torn-tail scan to ask "does a valid record start
/// here?".
pub fn check_record_frame(bytes: &[u8]) -> Result<usize, Corruption> {
    let mut reader = Reader::new(bytes);
    let length = reader.u32()?;
    let stored = reader.u32()?;
    if !(RECORD_LENGTH_MIN..=RECORD_LENGTH_MAX).contains(&length) {
        return Err(Corruption::BadLength(u64::from(length)));
    }
    let rest = reader.take(length as usize)?;
    let computed = crc32c::crc32c_append(crc32c::crc32c(&bytes[..4]), rest);
    check_crc(stored, computed)?;
    Ok(8 + length as usize)
}

/// Decodes the record at the start of `bytes` (FORMAT.md §2.2).
pub fn decode_record(bytes: &[u8]) -> Result<DecodedRecord, Corruption> {
    let len = check_record_frame(bytes)?;
    let mut reader = Reader::new(&bytes[8..len]);
    let kind = reader.u8()?;
    let term = Term(reader.u64()?);
    let index = Index(reader.u64()?);
    let body = reader.take(reader.remaining())?;
    let payload = match kind {
        TYPE_NOOP if body.is_empty() => Payload::Noop,
        TYPE_NOOP => return Err(Corruption::BadBody),
        TYPE_COMMAND => Payload::Command(Bytes::copy_from_slice(body)),
        TYPE_MEMBERSHIP => {
            let mut body_reader = Reader::new(body);
            let membership = decode_membership(&mut body_reader)?;
            if body_reader.remaining() != 0 {
                return Err(Corruption::BadBody);
            }
            Payload::Membership(membership)
        }
        other => return Err(Corruption::BadType(other)),
    };
    Ok(DecodedRecord {
        entry: Entry {
            term,
            index,
            payload,
        },
        len,
    })
}

/// Encodes one hard state slot (FORMAT.md §3).
pub fn encode_hard_state_slot(
    sequence: u64,
    hard_state: &HardState,
) -> [u8; HARD_STATE_SLOT_BYTES] {
    let mut slot = [0u8; HARD_STATE_SLOT_BYTES];
    slot[0..8].copy_from_slice(&HARD_STATE_MAGIC);
    slot[8..12].copy_from_slice(&VERSION.to_le_bytes());
    slot[12..20].copy_from_slice(&sequence.to_le_bytes());
    slot[20..28].copy_from_slice(&hard_state.term.0.to_le_bytes());
    slot[28] = u8::from(hard_state.vote.is_some());
    slot[29..37].copy_from_slice(&hard_state.vote.map_or(0, |v| v.0).to_le_bytes());
    let checksum = crc(&slot[..HARD_STATE_SLOT_BYTES - 4]);
    slot[HARD_STATE_SLOT_BYTES - 4..].copy_from_slice(&checksum.to_le_bytes());
    slot
}

/// Decodes one hard state slot into its sequence number and hard state.
pub fn decode_hard_state_slot(bytes: &[u8]) -> Result<(u64, HardState), Corruption> {
    let mut reader = Reader::new(bytes);
    let magic = reader.take(8)?;
    let version = reader.u32()?;
    let sequence = reader.u64()?;
    let term = Term(reader.u64()?);
    let has_vote = reader.u8()?;
    let vote = reader.u64()?;
    let reserved = reader.take(HARD_STATE_SLOT_BYTES - 41)?;
    let stored = reader.u32()?;
    check_magic(magic, &HARD_STATE_MAGIC)?;
    check_crc(stored, crc(&bytes[..HARD_STATE_SLOT_BYTES - 4]))?;
    check_version(version)?;
    let vote = match has_vote {
        0 if vote == 0 => None,
        1 => Some(NodeId(vote)),
        _ => return Err(Corruption::BadBody),
    };
    if reserved.iter().any(|&b| b != 0) {
        return Err(Corruption::BadBody);
    }
    Ok((sequence, HardState { term, vote }))
}

/// Decodes the hard state file: the valid slot with the highest sequence number.
pub fn decode_hard_state_file(bytes: &[u8]) -> Result<(u64, HardState), Corruption> {
    let first = bytes
        .get(..HARD_STATE_SLOT_BYTES)
        .map(decode_hard_state_slot);
    let second = bytes
        .get(HARD_STATE_SLOT_BYTES..HARD_STATE_FILE_BYTES)
        .map(decode_hard_state_slot);
    match (first, second) {
        (Some(Ok(a)), Some(Ok(b))) => Ok(if b.0 > a.0 { b } else { a }),
        (Some(Ok(a)), _) => Ok(a),
        (_, Some(Ok(b))) => Ok(b),
        _ => Err(Corruption::NoValidHardState),
    }
}

/// Encodes a snapshot file (FORMAT.md §4).
pub fn encode_snapshot(snapshot: &Snapshot, log_sequence_min: u64) -> Vec<u8> {
    let meta = &snapshot.meta;
    let mut out = Vec::with_capacity(48 + membership_len(&meta.membership) + snapshot.data.len());
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&meta.index.0.to_le_bytes());
    out.extend_from_slice(&meta.term.0.to_le_bytes());
    out.extend_from_slice(&log_sequence_min.to_le_bytes());
    encode_membership(&meta.membership, &mut out);
    out.extend_from_slice(&(snapshot.data.len() as u64).to_le_bytes());
    out.extend_from_slice(&snapshot.data);
    let checksum = crc(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    out
}

/// Decodes a snapshot file into the snapshot and its `log_sequence_min`.
pub fn decode_snapshot(bytes: &[u8]) -> Result<(Snapshot, u64), Corruption> {
    if bytes.len() < 4 {
        return Err(Corruption::Truncated {
            needed: 4,
            available: bytes.len() as u64,
        });
    }
    let (body, stored) = bytes.split_at(bytes.len() - 4);
    let mut reader = Reader::new(body);
    let magic = reader.take(8)?;
    check_magic(magic, &SNAPSHOT_MAGIC)?;
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    check_crc(stored, crc(body))?;
    check_version(reader.u32()?)?;
    let index = Index(reader.u64()?);
    let term = Term(reader.u64()?);
    let log_sequence_min = reader.u64()?;
    let membership = decode_membership(&mut reader)?;
    let data_len = reader.u64()?;
    if data_len != reader.remaining() as u64 {
        return Err(Corruption::BadLength(data_len));
    }
    let data = Bytes::copy_from_slice(reader.take(reader.remaining())?);
    let meta = SnapshotMeta {
        index,
        term,
        membership,
    };
    Ok((Snapshot { meta, data }, log_sequence_min))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, payload: Payload) -> Entry {
        Entry {
            term: Term(term),
            index: Index(index),
            payload,
        }
    }

    #[test]
    fn records_round_trip() {
        let entries = [
            entry(1, 1, Payload::Noop),
            entry(2, 1, Payload::Command(Bytes::from_static(b"hello"))),
            entry(
                3,
                2,
                Payload::Membership(Membership::with_voters([NodeId(1), NodeId(9)])),
            ),
        ];
        let mut out = Vec::new();
        for e in &entries {
            let before = out.len();
            encode_record(e, &mut out);
            assert_eq!(out.len() - before, record_len(e));
        }
        let mut offset = 0;
        for e in &entries {
            let decoded = decode_record(&out[offset..]).unwrap();
            assert_eq!(&decoded.entry, e);
            offset += decoded.len;
        }
        assert_eq!(offset, out.len());
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut out = Vec::new();
        encode_record(
            &entry(7, 3, Payload::Command(Bytes::from_static(b"xyz"))),
            &mut out,
        );
        for bit in 0..out.len() * 8 {
            let mut bad = out.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_record(&bad).is_err(),
                "bit {bit} flip went unnoticed"
            );
        }
    }

    #[test]
    fn headers_and_hard_state_round_trip() {
        let header = SegmentHeader {
            sequence: 5,
            first_index: Index(77),
        };
        let mut out = Vec::new();
        encode_segment_header(&header, &mut out);
        assert_eq!(decode_segment_header(&out), Ok(header));
        out[3] ^= 1;
        assert!(decode_segment_header(&out).is_err());

        let hs = HardState {
            term: Term(4),
            vote: Some(NodeId(2)),
        };
        let mut file = Vec::new();
        file.extend_from_slice(&encode_hard_state_slot(2, &HardState::default()));
        file.extend_from_slice(&encode_hard_state_slot(3, &hs));
        assert_eq!(decode_hard_state_file(&file), Ok((3, hs)));
        file[HARD_STATE_SLOT_BYTES + 20] ^= 1;
        assert_eq!(decode_hard_state_file(&file), Ok((2, HardState::default())));
    }

    #[test]
    fn snapshots_round_trip() {
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                index: Index(10),
                term: Term(3),
                membership: Membership::with_voters([NodeId(1), NodeId(2)]),
            },
            data: Bytes::from_static(b"state"),
        };
        let bytes = encode_snapshot(&snapshot, 4);
        assert_eq!(decode_snapshot(&bytes), Ok((snapshot, 4)));
        for cut in 0..bytes.len() {
            assert!(decode_snapshot(&bytes[..cut]).is_err());
        }
    }
}
