//! Message generators shared by the peer-protocol tests.

#![allow(dead_code)]

use std::collections::BTreeSet;

use bytes::Bytes;
use rkv_raft::{
    AppendResult, ConflictHint, Entry, Index, Membership, Message, MessageBody, NodeId, Payload,
    ReadId, SnapshotMeta, SnapshotResult, Term,
};

/// A small seeded generator (SplitMix64), so that every failure names its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn bool(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    /// A u64 spread over all varint lengths: small values are common, extremes appear.
    pub fn int(&mut self) -> u64 {
        match self.below(4) {
            0 => self.below(128),
            1 => self.below(1 << 20),
            2 => u64::MAX - self.below(3),
            _ => self.next_u64() >> self.below(64),
        }
    }

    pub fn bytes(&mut self, max: u64) -> Bytes {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next_u64() as u8).collect()
    }

    pub fn membership(&mut self) -> Membership {
        let mut voters = BTreeSet::new();
        let mut learners = BTreeSet::new();
        for _ in 0..self.below(6) {
            voters.insert(NodeId(self.int()));
        }
        for _ in 0..self.below(4) {
            let id = NodeId(self.int());
            if !voters.contains(&id) {
                learners.insert(id);
            }
        }
        Membership { voters, learners }
    }

    pub fn entry(&mut self) -> Entry {
        let payload = match self.below(3) {
            0 => Payload::Noop,
            1 => Payload::Command(self.bytes(64)),
            _ => Payload::Membership(self.membership()),
        };
        Entry {
            term: Term(self.int()),
            index: Index(self.int()),
            payload,
        }
    }

    pub fn message(&mut self) -> Message {
        let body = match self.below(13) {
            0 => MessageBody::PreVote {
                last_log_index: Index(self.int()),
                last_log_term: Term(self.int()),
            },
            1 => MessageBody::PreVoteResponse {
                granted: self.bool(),
            },
            2 => MessageBody::Vote {
                last_log_index: Index(self.int()),
                last_log_term: Term(self.int()),
                transfer: self.bool(),
            },
            3 => MessageBody::VoteResponse {
                granted: self.bool(),
            },
            4 => MessageBody::Append {
                prev_index: Index(self.int()),
                prev_term: Term(self.int()),
                entries: (0..self.below(8)).map(|_| self.entry()).collect(),
                commit: Index(self.int()),
            },
            5 => MessageBody::AppendResponse(if self.bool() {
                AppendResult::Success {
                    match_index: Index(self.int()),
                }
            } else {
                AppendResult::Reject {
                    rejected_prev: Index(self.int()),
                    hint: ConflictHint {
                        term: self.bool().then(|| Term(self.int())),
                        index: Index(self.int()),
                    },
                }
            }),
            6 => MessageBody::Heartbeat {
                commit: Index(self.int()),
                read_round: self.int(),
            },
            7 => MessageBody::HeartbeatResponse {
                read_round: self.int(),
            },
            8 => MessageBody::InstallSnapshot {
                meta: SnapshotMeta {
                    index: Index(self.int()),
                    term: Term(self.int()),
                    membership: self.membership(),
                },
                offset: self.int(),
                data: self.bytes(300),
                done: self.bool(),
            },
            9 => MessageBody::InstallSnapshotResponse(if self.bool() {
                SnapshotResult::Next { offset: self.int() }
            } else {
                SnapshotResult::Done {
                    index: Index(self.int()),
                }
            }),
            10 => MessageBody::TimeoutNow,
            11 => MessageBody::ReadIndex {
                id: ReadId(self.int()),
            },
            _ => MessageBody::ReadIndexResponse {
                id: ReadId(self.int()),
                index: self.bool().then(|| Index(self.int())),
            },
        };
        Message {
            from: NodeId(self.int()),
            to: NodeId(self.int()),
            term: Term(self.int()),
            body,
        }
    }

    pub fn batch(&mut self, max: u64) -> Vec<Message> {
        (0..self.below(max + 1)).map(|_| self.message()).collect()
    }
}

fn msg(body: MessageBody) -> Message {
    Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(7),
        body,
    }
}

/// One message of every `MessageBody` variant (and every sub-variant), built by hand.
pub fn every_variant() -> Vec<Message> {
    let membership = Membership {
        voters: [NodeId(1), NodeId(2), NodeId(3)].into(),
        learners: [NodeId(9)].into(),
    };
    vec![
        msg(MessageBody::PreVote {
            last_log_index: Index(10),
            last_log_term: Term(6),
        }),
        msg(MessageBody::PreVoteResponse { granted: true }),
        msg(MessageBody::PreVoteResponse { granted: false }),
        msg(MessageBody::Vote {
            last_log_index: Index(10),
            last_log_term: Term(6),
            transfer: true,
        }),
        msg(MessageBody::Vote {
            last_log_index: Index(0),
            last_log_term: Term(0),
            transfer: false,
        }),
        msg(MessageBody::VoteResponse { granted: true }),
        msg(MessageBody::Append {
            prev_index: Index(10),
            prev_term: Term(6),
            entries: vec![],
            commit: Index(9),
        }),
        msg(MessageBody::Append {
            prev_index: Index(10),
            prev_term: Term(6),
            entries: vec![
                Entry {
                    term: Term(7),
                    index: Index(11),
                    payload: Payload::Noop,
                },
                Entry {
                    term: Term(7),
                    index: Index(12),
                    payload: Payload::Command(Bytes::from_static(b"set x=1")),
                },
                Entry {
                    term: Term(7),
                    index: Index(13),
                    payload: Payload::Command(Bytes::new()),
                },
                Entry {
                    term: Term(7),
                    index: Index(14),
                    payload: Payload::Membership(membership.clone()),
                },
                Entry {
                    term: Term(7),
                    index: Index(15),
                    payload: Payload::Membership(Membership::default()),
                },
            ],
            commit: Index(10),
        }),
        msg(MessageBody::AppendResponse(AppendResult::Success {
            match_index: Index(15),
        })),
        msg(MessageBody::AppendResponse(AppendResult::Reject {
            rejected_prev: Index(10),
            hint: ConflictHint {
                term: Some(Term(5)),
                index: Index(8),
            },
        })),
        msg(MessageBody::AppendResponse(AppendResult::Reject {
            rejected_prev: Index(10),
            hint: ConflictHint {
                term: None,
                index: Index(4),
            },
        })),
        msg(MessageBody::Heartbeat {
            commit: Index(15),
            read_round: 300,
        }),
        msg(MessageBody::HeartbeatResponse { read_round: 300 }),
        msg(MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                index: Index(100),
                term: Term(6),
                membership,
            },
            offset: 4096,
            data: Bytes::from(vec![0xab; 1000]),
            done: false,
        }),
        msg(MessageBody::InstallSnapshot {
            meta: SnapshotMeta::default(),
            offset: 0,
            data: Bytes::new(),
            done: true,
        }),
        msg(MessageBody::InstallSnapshotResponse(SnapshotResult::Next {
            offset: 5096,
        })),
        msg(MessageBody::InstallSnapshotResponse(SnapshotResult::Done {
            index: Index(100),
        })),
        msg(MessageBody::TimeoutNow),
        msg(MessageBody::ReadIndex { id: ReadId(77) }),
        msg(MessageBody::ReadIndexResponse {
            id: ReadId(77),
            index: Some(Index(15)),
        }),
        msg(MessageBody::ReadIndexResponse {
            id: ReadId(78),
            index: None,
        }),
        Message {
            from: NodeId(u64::MAX),
            to: NodeId(0),
            term: Term(u64::MAX),
            body: MessageBody::Heartbeat {
                commit: Index(u64::MAX),
                read_round: u64::MAX,
            },
        },
    ]
}
