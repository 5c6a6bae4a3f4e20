//! [`StateMachine`]: the map, the client sessions and the apply rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::Bytes;

use crate::command::{ClientSeq, Command, DecodeError, LimitError, PeerRecord, WriteOp};
use crate::map::ChunkedMap;

/// How long a session may stay idle, in milliseconds of the leader-stamped clock, before
/// it expires: one hour. Any command naming the session (applied, duplicate or buffered)
/// counts as activity. After expiry the session answers [`SessionError::Unknown`].
pub const SESSION_TTL_MS: u64 = 60 * 60 * 1000;

/// Most live sessions. Registering one more evicts the session idle the longest (ties
/// broken by the lower client id).
pub const SESSIONS_MAX: usize = 10_000;

/// How far ahead of the last applied sequence number a write may arrive and be buffered:
/// `seq <= last_seq + SEQ_WINDOW`. Beyond it: [`SessionError::TooFarAhead`]. So a session
/// buffers at most `SEQ_WINDOW - 1` writes.
pub const SEQ_WINDOW: u64 = 1024;

/// Most key and value bytes buffered for one session; beyond it an early write answers
/// [`SessionError::BufferFull`] (the gap-filling write itself is never buffered, so this
/// cannot block progress).
pub const SESSION_BUFFER_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Most key and value bytes buffered across all sessions; beyond it an early write
/// answers [`SessionError::BufferFull`].
pub const BUFFER_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What a change to a key was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key now has this value.
    Put(Bytes),
    /// The key was removed (only emitted if it existed).
    Delete,
}

/// One committed change to one key, for watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The log index of the entry whose application made the change visible. A buffered
    /// write's changes carry the index of the entry that released it, so a watcher that
    /// resumes after index `i` misses nothing. One entry may produce several events.
    pub index: u64,
    /// The key.
    pub key: Bytes,
    /// What happened to it.
    pub kind: EventKind,
}

/// Why a session write was not applied. None of these consume the sequence number: the
/// client may send the same `(client_id, seq)` again.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError {
    /// No such session: never registered, expired ([`SESSION_TTL_MS`]) or evicted
    /// ([`SESSIONS_MAX`]). The client must register again.
    Unknown {
        /// The session named.
        client_id: u64,
    },
    /// Sequence numbers start at 1.
    ZeroSeq {
        /// The session named.
        client_id: u64,
    },
    /// `seq` is more than [`SEQ_WINDOW`] past the last applied sequence number.
    TooFarAhead {
        /// The session named.
        client_id: u64,
        /// The sequence number sent.
        seq: u64,
        /// The session's last applied sequence number.
        last_seq: u64,
    },
    /// The write arrived early and the buffer for early writes is full
    /// ([`SESSION_BUFFER_BYTES_MAX`], [`BUFFER_BYTES_MAX`]).
    BufferFull {
        /// The session named.
        client_id: u64,
        /// The sequence number sent.
        seq: u64,
    },
    /// The write was buffered, waiting for an earlier sequence number, when its session
    /// expired or was evicted; it was dropped unapplied.
    Expired {
        /// The session that expired.
        client_id: u64,
    },
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Unknown { client_id } => write!(f, "unknown client session {client_id}"),
            SessionError::ZeroSeq { client_id } => {
                write!(f, "session {client_id}: sequence numbers start at 1")
            }
            SessionError::TooFarAhead {
                client_id,
                seq,
                last_seq,
            } => write!(
                f,
                "session {client_id}: seq {seq} is too far ahead of the last applied {last_seq} (window {SEQ_WINDOW})"
            ),
            SessionError::BufferFull { client_id, seq } => {
                write!(f, "session {client_id}: no room to buffer early seq {seq}")
            }
            SessionError::Expired { client_id } => {
                write!(
                    f,
                    "session {client_id} expired before this write could be applied"
                )
            }
        }
    }
}

impl std::error::Error for SessionError {}

/// The result of one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A session was opened; its id is the log index of the `Register` entry.
    Registered {
        /// The new session's id.
        client_id: u64,
    },
    /// The key was set.
    Put,
    /// The key was removed, if it existed.
    Deleted {
        /// Whether it existed.
        existed: bool,
    },
    /// A compare-and-swap ran.
    Swapped {
        /// Whether the value matched and was replaced.
        swapped: bool,
        /// The value before the command (`None`: absent).
        previous: Option<Bytes>,
    },
    /// Every pair of a `PutMany` was set.
    PutMany,
    /// A duplicate of a write older than the session's last one: already applied, and
    /// its result is no longer kept.
    Duplicate,
    /// A session write that was not applied (and did not consume its sequence number).
    Session(SessionError),
    /// A write over a size limit: nothing changed, the sequence number is consumed.
    Limit(LimitError),
    /// The payload did not decode. Nothing changed except the applied index.
    Rejected(DecodeError),
    /// A [`Command::SetPeer`] was applied: the address book now holds (or, if the command
    /// carried no record, no longer holds) this server.
    PeerSet {
        /// The server whose record changed.
        node_id: u64,
    },
}

impl Output {
    /// Whether this is one of the error outputs (`Session`, `Limit`, `Rejected`).
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Output::Session(_) | Output::Limit(_) | Output::Rejected(_)
        )
    }
}

/// The result of one command, for the driver to route to its waiting client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The log index of the entry that carried this command. For a buffered write that
    /// an entry released, this is the buffered write's own index, not the releasing one.
    pub index: u64,
    /// The command's session and sequence number, if it had one.
    pub session: Option<ClientSeq>,
    /// What the command did.
    pub output: Output,
    /// The committed changes, in order, for watchers.
    pub events: Vec<Event>,
    /// True if this answers a retry of an already applied write (nothing was applied
    /// again; `output` is the original result or [`Output::Duplicate`]).
    pub duplicate: bool,
}

/// A write that arrived before its predecessor, waiting in its session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Buffered {
    /// The log index of its entry.
    pub(crate) index: u64,
    pub(crate) op: WriteOp,
}

/// One client session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    /// The last applied sequence number (0: none yet).
    pub(crate) last_seq: u64,
    /// The result of `last_seq`, returned again to its retries.
    pub(crate) last_result: Option<Output>,
    /// The clock at the last command naming this session.
    pub(crate) last_active_ms: u64,
    /// Early writes by sequence number, all `> last_seq + 1`.
    pub(crate) buffered: BTreeMap<u64, Buffered>,
    /// Key and value bytes in `buffered`.
    pub(crate) buffered_bytes: usize,
}

impl Session {
    pub(crate) fn new(now_ms: u64) -> Session {
        Session {
            last_seq: 0,
            last_result: None,
            last_active_ms: now_ms,
            buffered: BTreeMap::new(),
            buffered_bytes: 0,
        }
    }
}

/// The replicated state machine: an ordered map of bytes to bytes with exactly-once
/// client sessions. Deterministic: replicas fed the same entries hold the same state
/// (compare them with [`digest`](StateMachine::digest)).
///
/// Cloning is cheap for the map (copy-on-write chunks) and linear in the number of
/// sessions; [`snapshot_view`](StateMachine::snapshot_view) is the clone meant for
/// taking snapshots off the apply path.
#[derive(Clone, Debug, Default)]
pub struct StateMachine {
    pub(crate) map: ChunkedMap,
    pub(crate) sessions: BTreeMap<u64, Session>,
    /// `(last_active_ms, client_id)` of every session: the expiry and eviction order.
    pub(crate) idle: BTreeSet<(u64, u64)>,
    /// Buffered bytes across sessions.
    pub(crate) buffered_bytes: usize,
    pub(crate) applied_index: u64,
    pub(crate) clock_ms: u64,
    /// The replicated address book: how to reach each server, by Raft id.
    pub(crate) peers: BTreeMap<u64, PeerRecord>,
}

impl StateMachine {
    /// An empty state machine at applied index 0.
    pub fn new() -> StateMachine {
        StateMachine::default()
    }

    /// Applies the committed entry at `index` whose payload is `payload` (an encoded
    /// [`Command`]), returning the result of every command it completed: none if the
    /// write was buffered, several if it filled a gap and released buffered writes (and,
    /// first, one [`SessionError::Expired`] per buffered write dropped by expiry).
    ///
    /// A payload that does not decode yields one [`Output::Rejected`]; every replica does
    /// the same, so they stay identical. An `index` at or below
    /// [`applied_index`](StateMachine::applied_index) was applied already (a replay after
    /// restoring a snapshot): it is ignored and yields nothing.
    pub fn apply(&mut self, index: u64, payload: &[u8]) -> Vec<Applied> {
        if index <= self.applied_index {
            return Vec::new();
        }
        match Command::decode(payload) {
            Ok(command) => self.apply_command(index, command),
            Err(error) => {
                self.applied_index = index;
                vec![Applied {
                    index,
                    session: None,
                    output: Output::Rejected(error),
                    events: Vec::new(),
                    duplicate: false,
                }]
            }
        }
    }

    /// [`apply`](StateMachine::apply) for a command already decoded.
    pub fn apply_command(&mut self, index: u64, command: Command) -> Vec<Applied> {
        if index <= self.applied_index {
            return Vec::new();
        }
        self.applied_index = index;
        self.clock_ms = self.clock_ms.max(command.now_ms());
        let mut applied = Vec::new();
        self.expire_sessions(&mut applied);
        match command {
            Command::Register { .. } => {
                self.register(index, &mut applied);
                applied.push(Applied {
                    index,
                    session: None,
                    output: Output::Registered { client_id: index },
                    events: Vec::new(),
                    duplicate: false,
                });
            }
            Command::Write {
                session: None, op, ..
            } => {
                let (output, events) = execute(&mut self.map, index, &op);
                applied.push(Applied {
                    index,
                    session: None,
                    output,
                    events,
                    duplicate: false,
                });
            }
            Command::Write {
                session: Some(session),
                op,
                ..
            } => self.apply_session_write(index, session, op, &mut applied),
            Command::SetPeer {
                node_id, record, ..
            } => {
                let output = match record {
                    Some(record) => match record.validate() {
                        Ok(()) => {
                            self.peers.insert(node_id, record);
                            Output::PeerSet { node_id }
                        }
                        Err(limit) => Output::Limit(limit),
                    },
                    None => {
                        self.peers.remove(&node_id);
                        Output::PeerSet { node_id }
                    }
                };
                applied.push(Applied {
                    index,
                    session: None,
                    output,
                    events: Vec::new(),
                    duplicate: false,
                });
            }
        }
        applied
    }

    /// The replicated address book: every server recorded by [`Command::SetPeer`], by id.
    pub fn peers(&self) -> &BTreeMap<u64, PeerRecord> {
        &self.peers
    }

    /// Records that the entry at `index` carried no command (a leader's no-op or a
    /// membership change): only the applied index moves.
    pub fn apply_noop(&mut self, index: u64) {
        self.applied_index = self.applied_index.max(index);
    }

    /// The index of the last entry applied.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The state machine's clock: the largest `now_ms` applied so far.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.map.get(key)
    }

    /// At most `limit` pairs with `start <= key < end` (no upper bound if `end` is
    /// `None`), in key order. An empty `start` starts at the first key; `start >= end`
    /// yields nothing.
    pub fn scan(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Vec<(Bytes, Bytes)> {
        self.map
            .range(start, end)
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// At most `limit` pairs whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8], limit: usize) -> Vec<(Bytes, Bytes)> {
        let end = prefix_end(prefix);
        self.scan(prefix, end.as_deref(), limit)
    }

    /// Pairs with `start <= key < end` in key order, without copying.
    pub fn range<'a>(
        &'a self,
        start: &'a [u8],
        end: Option<&'a [u8]>,
    ) -> impl Iterator<Item = (&'a Bytes, &'a Bytes)> + 'a {
        self.map.range(start, end)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map has no keys.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Number of live sessions (some may be past their idle time: sessions expire when
    /// the next command advances the clock).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The last applied sequence number of a live session.
    pub fn session_last_seq(&self, client_id: u64) -> Option<u64> {
        self.sessions.get(&client_id).map(|s| s.last_seq)
    }

    /// How many writes a live session holds buffered.
    pub fn session_buffered(&self, client_id: u64) -> Option<usize> {
        self.sessions.get(&client_id).map(|s| s.buffered.len())
    }

    fn register(&mut self, client_id: u64, applied: &mut Vec<Applied>) {
        while self.sessions.len() >= SESSIONS_MAX {
            let Some(&(_, oldest)) = self.idle.first() else {
                break;
            };
            self.drop_session(oldest, applied);
        }
        if self.sessions.contains_key(&client_id) {
            // Only possible if a driver replays a Register at a fresh index it already
            // used; keep the set of sessions consistent all the same.
            self.drop_session(client_id, applied);
        }
        self.sessions.insert(client_id, Session::new(self.clock_ms));
        self.idle.insert((self.clock_ms, client_id));
    }

    /// Drops every session idle for longer than [`SESSION_TTL_MS`].
    fn expire_sessions(&mut self, applied: &mut Vec<Applied>) {
        while let Some(&(last_active_ms, client_id)) = self.idle.first() {
            if self.clock_ms.saturating_sub(last_active_ms) <= SESSION_TTL_MS {
                break;
            }
            self.drop_session(client_id, applied);
        }
    }

    /// Removes a session, answering its buffered writes with [`SessionError::Expired`].
    fn drop_session(&mut self, client_id: u64, applied: &mut Vec<Applied>) {
        let Some(session) = self.sessions.remove(&client_id) else {
            return;
        };
        self.idle.remove(&(session.last_active_ms, client_id));
        self.buffered_bytes -= session.buffered_bytes;
        for (seq, buffered) in session.buffered {
            applied.push(Applied {
                index: buffered.index,
                session: Some(ClientSeq { client_id, seq }),
                output: Output::Session(SessionError::Expired { client_id }),
                events: Vec::new(),
                duplicate: false,
            });
        }
    }

    fn apply_session_write(
        &mut self,
        index: u64,
        client_seq: ClientSeq,
        op: WriteOp,
        applied: &mut Vec<Applied>,
    ) {
        let ClientSeq { client_id, seq } = client_seq;
        let answer = |output: Output, duplicate: bool| Applied {
            index,
            session: Some(client_seq),
            output,
            events: Vec::new(),
            duplicate,
        };
        if seq == 0 {
            applied.push(answer(
                Output::Session(SessionError::ZeroSeq { client_id }),
                false,
            ));
            return;
        }
        let Some(session) = self.sessions.get_mut(&client_id) else {
            applied.push(answer(
                Output::Session(SessionError::Unknown { client_id }),
                false,
            ));
            return;
        };
        // Any command naming the session keeps it alive.
        self.idle.remove(&(session.last_active_ms, client_id));
        session.last_active_ms = self.clock_ms;
        self.idle.insert((self.clock_ms, client_id));

        if seq <= session.last_seq {
            let output = match &session.last_result {
                Some(result) if seq == session.last_seq => result.clone(),
                _ => Output::Duplicate,
            };
            applied.push(answer(output, true));
            return;
        }
        if seq > session.last_seq + 1 {
            if seq - session.last_seq > SEQ_WINDOW {
                let last_seq = session.last_seq;
                let error = SessionError::TooFarAhead {
                    client_id,
                    seq,
                    last_seq,
                };
                applied.push(answer(Output::Session(error), false));
                return;
            }
            if session.buffered.contains_key(&seq) {
                // A retry of a write already waiting: the buffered one answers when
                // it is released.
                return;
            }
            let bytes = op.payload_bytes();
            if session.buffered_bytes + bytes > SESSION_BUFFER_BYTES_MAX
                || self.buffered_bytes + bytes > BUFFER_BYTES_MAX
            {
                let error = SessionError::BufferFull { client_id, seq };
                applied.push(answer(Output::Session(error), false));
                return;
            }
            session.buffered_bytes += bytes;
            self.buffered_bytes += bytes;
            session.buffered.insert(seq, Buffered { index, op });
            return;
        }
        // The next write in order: apply it, then every buffered write it releases.
        let (output, events) = execute(&mut self.map, index, &op);
        session.last_seq = seq;
        session.last_result = Some(output.clone());
        applied.push(Applied {
            index,
            session: Some(client_seq),
            output,
            events,
            duplicate: false,
        });
        while let Some(buffered) = session.buffered.remove(&(session.last_seq + 1)) {
            let bytes = buffered.op.payload_bytes();
            session.buffered_bytes -= bytes;
            self.buffered_bytes -= bytes;
            let (output, events) = execute(&mut self.map, index, &buffered.op);
            session.last_seq += 1;
            session.last_result = Some(output.clone());
            applied.push(Applied {
                index: buffered.index,
                session: Some(ClientSeq {
                    client_id,
                    seq: session.last_seq,
                }),
                output,
                events,
                duplicate: false,
            });
        }
    }
}

/// Applies one write to the map; `event_index` stamps its events.
fn execute(map: &mut ChunkedMap, event_index: u64, op: &WriteOp) -> (Output, Vec<Event>) {
    if let Err(error) = op.validate() {
        return (Output::Limit(error), Vec::new());
    }
    let event = |key: &Bytes, kind: EventKind| Event {
        index: event_index,
        key: key.clone(),
        kind,
    };
    match op {
        WriteOp::Put { key, value } => {
            map.insert(key.clone(), value.clone());
            (Output::Put, vec![event(key, EventKind::Put(value.clone()))])
        }
        WriteOp::Delete { key } => {
            let existed = map.remove(key).is_some();
            let events = if existed {
                vec![event(key, EventKind::Delete)]
            } else {
                Vec::new()
            };
            (Output::Deleted { existed }, events)
        }
        WriteOp::CompareAndSwap { key, expected, new } => {
            let previous = map.get(key).cloned();
            let swapped = previous.as_deref() == expected.as_deref();
            let mut events = Vec::new();
            if swapped {
                match new {
                    Some(value) => {
                        map.insert(key.clone(), value.clone());
                        events.push(event(key, EventKind::Put(value.clone())));
                    }
                    None => {
                        if map.remove(key).is_some() {
                            events.push(event(key, EventKind::Delete));
                        }
                    }
                }
            }
            (Output::Swapped { swapped, previous }, events)
        }
        WriteOp::PutMany { pairs } => {
            // Validated as a whole above, so either every pair is set or none is.
            let mut events = Vec::with_capacity(pairs.len());
            for (key, value) in pairs {
                map.insert(key.clone(), value.clone());
                events.push(event(key, EventKind::Put(value.clone())));
            }
            (Output::PutMany, events)
        }
    }
}

/// The least key greater than every key starting with `prefix`, or `None` if there is
/// none (the prefix is empty or all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
