//! Writing message bodies (`PEER.md`, "Encoding of the body of MESSAGES").

use bytes::{BufMut, BytesMut};
use rkv_raft::{
    AppendResult, Entry, Membership, Message, MessageBody, Payload, SnapshotMeta, SnapshotResult,
};

use super::tags;

/// Appends `value` as a minimal unsigned LEB128 varint.
pub(crate) fn put_varint(dst: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        // Truncation is the point: the low seven bits, with the continuation bit.
        dst.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    dst.put_u8(value as u8);
}

/// The length in bytes of `value` as a varint (1 to 10).
pub(crate) fn varint_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

fn put_bool(dst: &mut BytesMut, value: bool) {
    dst.put_u8(u8::from(value));
}

fn put_bytes(dst: &mut BytesMut, data: &[u8]) {
    put_varint(dst, data.len() as u64);
    dst.put_slice(data);
}

fn bytes_len(data: &[u8]) -> usize {
    varint_len(data.len() as u64) + data.len()
}

fn put_option(dst: &mut BytesMut, value: Option<u64>) {
    match value {
        None => dst.put_u8(0),
        Some(v) => {
            dst.put_u8(1);
            put_varint(dst, v);
        }
    }
}

fn option_len(value: Option<u64>) -> usize {
    1 + value.map_or(0, varint_len)
}

fn put_membership(dst: &mut BytesMut, membership: &Membership) {
    put_varint(dst, membership.voters.len() as u64);
    for id in &membership.voters {
        put_varint(dst, id.0);
    }
    put_varint(dst, membership.learners.len() as u64);
    for id in &membership.learners {
        put_varint(dst, id.0);
    }
}

fn membership_len(membership: &Membership) -> usize {
    varint_len(membership.voters.len() as u64)
        + membership
            .voters
            .iter()
            .map(|id| varint_len(id.0))
            .sum::<usize>()
        + varint_len(membership.learners.len() as u64)
        + membership
            .learners
            .iter()
            .map(|id| varint_len(id.0))
            .sum::<usize>()
}

fn put_snapshot_meta(dst: &mut BytesMut, meta: &SnapshotMeta) {
    put_varint(dst, meta.index.0);
    put_varint(dst, meta.term.0);
    put_membership(dst, &meta.membership);
}

fn snapshot_meta_len(meta: &SnapshotMeta) -> usize {
    varint_len(meta.index.0) + varint_len(meta.term.0) + membership_len(&meta.membership)
}

fn put_entry(dst: &mut BytesMut, entry: &Entry) {
    put_varint(dst, entry.term.0);
    put_varint(dst, entry.index.0);
    match &entry.payload {
        Payload::Noop => dst.put_u8(tags::PAYLOAD_NOOP),
        Payload::Command(data) => {
            dst.put_u8(tags::PAYLOAD_COMMAND);
            put_bytes(dst, data);
        }
        Payload::Membership(membership) => {
            dst.put_u8(tags::PAYLOAD_MEMBERSHIP);
            put_membership(dst, membership);
        }
    }
}

fn entry_len(entry: &Entry) -> usize {
    varint_len(entry.term.0)
        + varint_len(entry.index.0)
        + 1
        + match &entry.payload {
            Payload::Noop => 0,
            Payload::Command(data) => bytes_len(data),
            Payload::Membership(membership) => membership_len(membership),
        }
}

/// Appends one message in the layout of `PEER.md` ("message").
pub(crate) fn put_message(dst: &mut BytesMut, message: &Message) {
    put_varint(dst, message.from.0);
    put_varint(dst, message.to.0);
    put_varint(dst, message.term.0);
    match &message.body {
        MessageBody::PreVote {
            last_log_index,
            last_log_term,
        } => {
            dst.put_u8(tags::PRE_VOTE);
            put_varint(dst, last_log_index.0);
            put_varint(dst, last_log_term.0);
        }
        MessageBody::PreVoteResponse { granted } => {
            dst.put_u8(tags::PRE_VOTE_RESPONSE);
            put_bool(dst, *granted);
        }
        MessageBody::Vote {
            last_log_index,
            last_log_term,
            transfer,
        } => {
            dst.put_u8(tags::VOTE);
            put_varint(dst, last_log_index.0);
            put_varint(dst, last_log_term.0);
            put_bool(dst, *transfer);
        }
        MessageBody::VoteResponse { granted } => {
            dst.put_u8(tags::VOTE_RESPONSE);
            put_bool(dst, *granted);
        }
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            dst.put_u8(tags::APPEND);
            put_varint(dst, prev_index.0);
            put_varint(dst, prev_term.0);
            put_varint(dst, commit.0);
            put_varint(dst, entries.len() as u64);
            for entry in entries {
                put_entry(dst, entry);
            }
        }
        MessageBody::AppendResponse(result) => {
            dst.put_u8(tags::APPEND_RESPONSE);
            match result {
                AppendResult::Success { match_index } => {
                    dst.put_u8(tags::APPEND_SUCCESS);
                    put_varint(dst, match_index.0);
                }
                AppendResult::Reject {
                    rejected_prev,
                    hint,
                } => {
                    dst.put_u8(tags::APPEND_REJECT);
                    put_varint(dst, rejected_prev.0);
                    put_option(dst, hint.term.map(|t| t.0));
                    put_varint(dst, hint.index.0);
                }
            }
        }
        MessageBody::Heartbeat { commit, read_round } => {
            dst.put_u8(tags::HEARTBEAT);
            put_varint(dst, commit.0);
            put_varint(dst, *read_round);
        }
        MessageBody::HeartbeatResponse { read_round } => {
            dst.put_u8(tags::HEARTBEAT_RESPONSE);
            put_varint(dst, *read_round);
        }
        MessageBody::InstallSnapshot {
            meta,
            offset,
            data,
            done,
        } => {
            dst.put_u8(tags::INSTALL_SNAPSHOT);
            put_snapshot_meta(dst, meta);
            put_varint(dst, *offset);
            put_bool(dst, *done);
            put_bytes(dst, data);
        }
        MessageBody::InstallSnapshotResponse(result) => {
            dst.put_u8(tags::INSTALL_SNAPSHOT_RESPONSE);
            match result {
                SnapshotResult::Next { offset } => {
                    dst.put_u8(tags::SNAPSHOT_NEXT);
                    put_varint(dst, *offset);
                }
                SnapshotResult::Done { index } => {
                    dst.put_u8(tags::SNAPSHOT_DONE);
                    put_varint(dst, index.0);
                }
            }
        }
        MessageBody::TimeoutNow => dst.put_u8(tags::TIMEOUT_NOW),
        MessageBody::ReadIndex { id } => {
            dst.put_u8(tags::READ_INDEX);
            put_varint(dst, id.0);
        }
        MessageBody::ReadIndexResponse { id, index } => {
            dst.put_u8(tags::READ_INDEX_RESPONSE);
            put_varint(dst, id.0);
            put_option(dst, index.map(|i| i.0));
        }
    }
}

/// The exact number of bytes [`put_message`] writes for `message`.
pub(crate) fn message_len(message: &Message) -> usize {
    let header = varint_len(message.from.0) + varint_len(message.to.0) + varint_len(message.term.0);
    let body = match &message.body {
        MessageBody::PreVote {
            last_log_index,
            last_log_term,
        } => varint_len(last_log_index.0) + varint_len(last_log_term.0),
        MessageBody::PreVoteResponse { .. } | MessageBody::VoteResponse { .. } => 1,
        MessageBody::Vote {
            last_log_index,
            last_log_term,
            ..
        } => varint_len(last_log_index.0) + varint_len(last_log_term.0) + 1,
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            varint_len(prev_index.0)
                + varint_len(prev_term.0)
                + varint_len(commit.0)
                + varint_len(entries.len() as u64)
                + entries.iter().map(entry_len).sum::<usize>()
        }
        MessageBody::AppendResponse(AppendResult::Success { match_index }) => {
            1 + varint_len(match_index.0)
        }
        MessageBody::AppendResponse(AppendResult::Reject {
            rejected_prev,
            hint,
        }) => {
            1 + varint_len(rejected_prev.0)
                + option_len(hint.term.map(|t| t.0))
                + varint_len(hint.index.0)
        }
        MessageBody::Heartbeat { commit, read_round } => {
            varint_len(commit.0) + varint_len(*read_round)
        }
        MessageBody::HeartbeatResponse { read_round } => varint_len(*read_round),
        MessageBody::InstallSnapshot {
            meta, offset, data, ..
        } => snapshot_meta_len(meta) + varint_len(*offset) + 1 + bytes_len(data),
        MessageBody::InstallSnapshotResponse(SnapshotResult::Next { offset }) => {
            1 + varint_len(*offset)
        }
        MessageBody::InstallSnapshotResponse(SnapshotResult::Done { index }) => {
            1 + varint_len(index.0)
        }
        MessageBody::TimeoutNow => 0,
        MessageBody::ReadIndex { id } => varint_len(id.0),
        MessageBody::ReadIndexResponse { id, index } => {
            varint_len(id.0) + option_len(index.map(|i| i.0))
        }
    };
    header + 1 + body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_len_matches_encoding() {
        let mut values = vec![0, 1, 127, 128, 16_383, 16_384, u64::MAX, u64::MAX / 2];
        values.extend((0..64).map(|shift| 1u64 << shift));
        values.extend((1..64).map(|shift| (1u64 << shift) - 1));
        for value in values {
            let mut buf = BytesMut::new();
            put_varint(&mut buf, value);
            assert_eq!(buf.len(), varint_len(value), "value {value}");
        }
    }

    #[test]
    fn varint_known_bytes() {
        let mut buf = BytesMut::new();
        put_varint(&mut buf, 300);
        assert_eq!(&buf[..], &[0xac, 0x02]);
        buf.clear();
        put_varint(&mut buf, u64::MAX);
        assert_eq!(
            &buf[..],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }
}
