//! Reading message bodies (`PEER.md`, "Encoding of the body of MESSAGES").
//!
//! Every read checks the bytes that are left before it takes them, no count is trusted
//! for an allocation beyond what the remaining bytes could hold, and `bytes` fields are
//! zero-copy slices of the frame.

use std::collections::BTreeSet;

use bytes::Bytes;
use rkv_raft::{
    AppendResult, ConflictHint, Entry, Index, Membership, Message, MessageBody, NodeId, Payload,
    ReadId, SnapshotMeta, SnapshotResult, Term,
};

use super::error::WireError;
use super::tags;

/// The fewest bytes one message can take: from, to, term and tag, one byte each.
pub(crate) const MESSAGE_BYTES_MIN: usize = 4;
/// The fewest bytes one entry can take: term, index and payload tag.
const ENTRY_BYTES_MIN: usize = 3;

/// A cursor over a frame body.
pub(crate) struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Reader {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(self) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(WireError::TrailingBytes { count }),
        }
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        let byte = *self
            .buf
            .get(self.pos)
            .ok_or(WireError::Truncated { what })?;
        self.pos += 1;
        Ok(byte)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], WireError> {
        let slice = self
            .buf
            .get(self.pos..self.pos + N)
            .ok_or(WireError::Truncated { what })?;
        let mut out = [0; N];
        out.copy_from_slice(slice);
        self.pos += N;
        Ok(out)
    }

    pub(crate) fn u16_le(&mut self, what: &'static str) -> Result<u16, WireError> {
        self.array(what).map(u16::from_le_bytes)
    }

    pub(crate) fn u64_le(&mut self, what: &'static str) -> Result<u64, WireError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A minimal unsigned LEB128 varint of at most 10 bytes that fits in a u64.
    pub(crate) fn varint(&mut self, what: &'static str) -> Result<u64, WireError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = self.u8(what)?;
            let group = u64::from(byte & 0x7f);
            // The tenth byte holds bit 63 only.
            if i == 9 && byte > 1 {
                return Err(WireError::BadVarint { what });
            }
            value |= group << (7 * i);
            if byte & 0x80 == 0 {
                // A last byte of zero after the first is an overlong encoding.
                if i > 0 && byte == 0 {
                    return Err(WireError::BadVarint { what });
                }
                return Ok(value);
            }
        }
        Err(WireError::BadVarint { what })
    }

    fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(WireError::BadBool { what, value }),
        }
    }

    fn option_varint(&mut self, what: &'static str) -> Result<Option<u64>, WireError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => self.varint(what).map(Some),
            tag => Err(WireError::UnknownTag { what, tag }),
        }
    }

    fn bytes(&mut self, what: &'static str) -> Result<Bytes, WireError> {
        let len = self.varint(what)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= self.remaining())
            .ok_or(WireError::Truncated { what })?;
        let data = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(data)
    }

    /// A count of items that each take at least `item_bytes_min` bytes; a count the rest
    /// of the body could not hold is rejected before anything is allocated for it.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        item_bytes_min: usize,
    ) -> Result<usize, WireError> {
        let count = self.varint(what)?;
        usize::try_from(count)
            .ok()
            .filter(|&count| count <= self.remaining() / item_bytes_min)
            .ok_or(WireError::Truncated { what })
    }

    fn index(&mut self, what: &'static str) -> Result<Index, WireError> {
        self.varint(what).map(Index)
    }

    fn term(&mut self, what: &'static str) -> Result<Term, WireError> {
        self.varint(what).map(Term)
    }

    fn id_set(&mut self, what: &'static str) -> Result<BTreeSet<NodeId>, WireError> {
        let count = self.count(what, 1)?;
        let mut set = BTreeSet::new();
        let mut previous: Option<u64> = None;
        for _ in 0..count {
            let id = self.varint(what)?;
            if previous.is_some_and(|p| p >= id) {
                return Err(WireError::InvalidMembership);
            }
            previous = Some(id);
            set.insert(NodeId(id));
        }
        Ok(set)
    }

    fn membership(&mut self) -> Result<Membership, WireError> {
        let voters = self.id_set("membership voters")?;
        let learners = self.id_set("membership learners")?;
        if !voters.is_disjoint(&learners) {
            return Err(WireError::InvalidMembership);
        }
        Ok(Membership { voters, learners })
    }

    fn snapshot_meta(&mut self) -> Result<SnapshotMeta, WireError> {
        Ok(SnapshotMeta {
            index: self.index("snapshot index")?,
            term: self.term("snapshot term")?,
            membership: self.membership()?,
        })
    }

    fn entry(&mut self) -> Result<Entry, WireError> {
        let term = self.term("entry term")?;
        let index = self.index("entry index")?;
        let payload = match self.u8("payload tag")? {
            tags::PAYLOAD_NOOP => Payload::Noop,
            tags::PAYLOAD_COMMAND => Payload::Command(self.bytes("command")?),
            tags::PAYLOAD_MEMBERSHIP => Payload::Membership(self.membership()?),
            tag => {
                return Err(WireError::UnknownTag {
                    what: "payload",
                    tag,
                });
            }
        };
        Ok(Entry {
            term,
            index,
            payload,
        })
    }

    /// One message in the layout of `PEER.md` ("message").
    pub(crate) fn message(&mut self) -> Result<Message, WireError> {
        let from = NodeId(self.varint("message from")?);
        let to = NodeId(self.varint("message to")?);
        let term = self.term("message term")?;
        let body = match self.u8("message tag")? {
            tags::PRE_VOTE => MessageBody::PreVote {
                last_log_index: self.index("last log index")?,
                last_log_term: self.term("last log term")?,
            },
            tags::PRE_VOTE_RESPONSE => MessageBody::PreVoteResponse {
                granted: self.bool("granted")?,
            },
            tags::VOTE => MessageBody::Vote {
                last_log_index: self.index("last log index")?,
                last_log_term: self.term("last log term")?,
                transfer: self.bool("transfer")?,
            },
            tags::VOTE_RESPONSE => MessageBody::VoteResponse {
                granted: self.bool("granted")?,
            },
            tags::APPEND => {
                let prev_index = self.index("prev index")?;
                let prev_term = self.term("prev term")?;
                let commit = self.index("commit")?;
                let count = self.count("entry count", ENTRY_BYTES_MIN)?;
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    entries.push(self.entry()?);
                }
                MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                }
            }
            tags::APPEND_RESPONSE => MessageBody::AppendResponse(self.append_result()?),
            tags::HEARTBEAT => MessageBody::Heartbeat {
                commit: self.index("commit")?,
                read_round: self.varint("read round")?,
            },
            tags::HEARTBEAT_RESPONSE => MessageBody::HeartbeatResponse {
                read_round: self.varint("read round")?,
            },
            tags::INSTALL_SNAPSHOT => MessageBody::InstallSnapshot {
                meta: self.snapshot_meta()?,
                offset: self.varint("snapshot offset")?,
                done: self.bool("snapshot done")?,
                data: self.bytes("snapshot data")?,
            },
            tags::INSTALL_SNAPSHOT_RESPONSE => {
                MessageBody::InstallSnapshotResponse(match self.u8("snapshot result tag")? {
                    tags::SNAPSHOT_NEXT => SnapshotResult::Next {
                        offset: self.varint("snapshot offset")?,
                    },
                    tags::SNAPSHOT_DONE => SnapshotResult::Done {
                        index: self.index("snapshot index")?,
                    },
                    tag => {
                        return Err(WireError::UnknownTag {
                            what: "snapshot result",
                            tag,
                        });
                    }
                })
            }
            tags::TIMEOUT_NOW => MessageBody::TimeoutNow,
            tags::READ_INDEX => MessageBody::ReadIndex {
                id: ReadId(self.varint("read id")?),
            },
            tags::READ_INDEX_RESPONSE => MessageBody::ReadIndexResponse {
                id: ReadId(self.varint("read id")?),
                index: self.option_varint("read index")?.map(Index),
            },
            tag => {
                return Err(WireError::UnknownTag {
                    what: "message",
                    tag,
                });
            }
        };
        Ok(Message {
            from,
            to,
            term,
            body,
        })
    }

    fn append_result(&mut self) -> Result<AppendResult, WireError> {
        match self.u8("append result tag")? {
            tags::APPEND_SUCCESS => Ok(AppendResult::Success {
                match_index: self.index("match index")?,
            }),
            tags::APPEND_REJECT => Ok(AppendResult::Reject {
                rejected_prev: self.index("rejected prev")?,
                hint: ConflictHint {
                    term: self.option_varint("hint term")?.map(Term),
                    index: self.index("hint index")?,
                },
            }),
            tag => Err(WireError::UnknownTag {
                what: "append result",
                tag,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(bytes: &'static [u8]) -> Result<u64, WireError> {
        let mut reader = Reader::new(Bytes::from_static(bytes));
        let value = reader.varint("test")?;
        reader.finish()?;
        Ok(value)
    }

    #[test]
    fn varints_decode() {
        assert_eq!(varint(&[0]).unwrap(), 0);
        assert_eq!(varint(&[0x7f]).unwrap(), 127);
        assert_eq!(varint(&[0xac, 0x02]).unwrap(), 300);
        assert_eq!(
            varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).unwrap(),
            u64::MAX
        );
    }

    #[test]
    fn bad_varints_are_rejected() {
        // Overlong: 0 written in two bytes.
        assert!(matches!(
            varint(&[0x80, 0x00]),
            Err(WireError::BadVarint { .. })
        ));
        // Overflow: the tenth byte carries more than bit 63.
        assert!(matches!(
            varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            Err(WireError::BadVarint { .. })
        ));
        // Eleven bytes.
        assert!(matches!(
            varint(&[
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x81, 0x00
            ]),
            Err(WireError::BadVarint { .. })
        ));
        // Runs off the end.
        assert!(matches!(varint(&[0x80]), Err(WireError::Truncated { .. })));
    }

    #[test]
    fn huge_counts_are_rejected_before_allocation() {
        // An Append claiming u64::MAX entries in a body of a few bytes.
        let mut body = vec![1, 2, 3, tags::APPEND, 0, 0, 0];
        body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        let mut reader = Reader::new(Bytes::from(body));
        assert!(matches!(
            reader.message(),
            Err(WireError::Truncated {
                what: "entry count"
            })
        ));
    }
}
