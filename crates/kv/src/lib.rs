//! The replicated state machine of rkv: an ordered key-value map with exactly-once client
//! sessions, fed committed log entries by a driver.
//!
//! # Why it exists
//! Raft agrees on a sequence of opaque entries; this crate gives them meaning. Every
//! replica applies the same entries in the same order to a [`StateMachine`] and must end
//! in the same state, so the state machine is deterministic: no I/O, no clock, no
//! randomness, no threads (`clippy.toml` bans the clock and sleeping). Its only notion of
//! time is the `now_ms` the leader stamps on each [`Command`] when proposing; the machine
//! keeps `clock = max(clock, now_ms)`, so its clock never goes backwards even when
//! leadership moves to a node whose wall clock is behind. Compare replicas with
//! [`StateMachine::digest`].
//!
//! It replaces the original rkv's map-plus-sessions, which panicked on an unknown client
//! id and on undecodable commands: here both are answers ([`SessionError::Unknown`],
//! [`Output::Rejected`]) and the machine keeps going, identically on every replica.
//!
//! # Driving it
//! - For each committed entry, in log order: a command entry goes to
//!   [`StateMachine::apply`]`(index, payload)`; a no-op or membership entry to
//!   [`StateMachine::apply_noop`]`(index)`. Entries at or below
//!   [`StateMachine::applied_index`] are ignored, so replaying the log after restoring a
//!   snapshot is safe.
//! - Each [`Applied`] names the entry index and `(client_id, seq)` it answers, so the
//!   driver can route it to the waiting client, and carries the [`Event`]s for watchers.
//! - Reads ([`StateMachine::get`], [`StateMachine::scan`], [`StateMachine::scan_prefix`])
//!   see everything applied so far; the driver decides when that is linearizable.
//! - Snapshots: [`StateMachine::snapshot_view`] is cheap (the map is a copy-on-write
//!   B-tree of `Arc`-shared chunks, so the view shares all of it; only the sessions are
//!   copied), and [`SnapshotView::encode`] runs on another thread while the apply loop
//!   goes on. [`StateMachine::restore`] rebuilds the machine and never panics on corrupt
//!   input.
//!
//! # Sessions: exactly-once writes
//! As in rkvpb: `Register` opens a session whose id is the log index of its entry. Each
//! write may carry `(client_id, seq)`, sequence numbers starting at 1:
//! - `seq == last + 1`: applied; its result is kept as the session's last result. Any
//!   buffered writes that now follow in order are applied too, by the same call, which
//!   returns all their results (each with its own entry index).
//! - `seq == last`: a retry: answered with the kept original result, not applied again
//!   (`duplicate: true`). `seq < last`: answered [`Output::Duplicate`] (result no longer
//!   kept).
//! - `last + 1 < seq <= last + SEQ_WINDOW`: arrived early: buffered in the session,
//!   deterministically, and answered when released (nothing is returned now). A retry of
//!   a write already buffered is ignored (the first copy answers). Buffers are bounded
//!   by [`SEQ_WINDOW`], [`SESSION_BUFFER_BYTES_MAX`] and [`BUFFER_BYTES_MAX`]:
//!   [`SessionError::TooFarAhead`] / [`SessionError::BufferFull`] beyond.
//! - `seq == 0`: [`SessionError::ZeroSeq`]; unknown session: [`SessionError::Unknown`].
//!   Session errors do not consume the sequence number; a write over a size limit does
//!   (its [`Output::Limit`] is its result).
//! - A session idle for more than [`SESSION_TTL_MS`] of the stamped clock expires when a
//!   later command advances the clock; then it answers Unknown. At most [`SESSIONS_MAX`]
//!   sessions live: registering one more evicts the one idle longest. Writes still
//!   buffered in a session that goes are answered [`SessionError::Expired`].
//!
//! Writes without a session are applied as they come (at-least-once under retries).
//!
//! # The address book: joining by address
//! Servers that join a running cluster by address (raftd, hraftd, raft-demo) are known
//! to the others only through the log: [`Command::SetPeer`] records a server's name, its
//! Raft peer address, its client address and its [`PeerRole`] under its Raft id, and
//! [`StateMachine::peers`] returns the book. A leader applies a server's record *before*
//! proposing the membership change that adds it, so every replica that applies the
//! change already knows where the new server is; the book is part of snapshots, so a
//! node restored from one (or a server added much later) learns every address too. The
//! driver turns applied records into transport addresses; the machine only keeps them.
//!
//! # Command encoding (format version 1)
//! All integers little-endian. `bytes` is a `u32` length then the bytes; `option` is a
//! byte 0 (absent) or 1 (present) then, if present, `bytes`.
//! ```text
//! u8  version = 1
//! u8  kind: 0 Register, 1 Put, 2 Delete, 3 CompareAndSwap, 4 PutMany, 5 SetPeer
//! u64 now_ms
//! -- Register ends here; SetPeer continues with
//!    u64 node_id, u8 record flag (0 forget, 1 present); if present:
//!    bytes name, bytes peer_address, bytes client_address (UTF-8),
//!    u8 role (0 voter, 1 learner; bit 0x80 set: u64 incarnation follows, never 0)
//! -- every other kind continues:
//! u8  session flag: 0 none, 1 present; if present: u64 client_id, u64 seq
//! Put:            bytes key, bytes value
//! Delete:         bytes key
//! CompareAndSwap: bytes key, option expected, option new
//! PutMany:        u32 count, then count × (bytes key, bytes value)
//! ```
//! Nothing may follow. [`Command::decode`] never panics and never allocates more than its
//! input could describe. Size limits ([`KEY_BYTES_MAX`], [`VALUE_BYTES_MAX`],
//! [`PUT_MANY_PAIRS_MAX`], [`PUT_MANY_BYTES_MAX`]) are checked when applying (and by
//! [`Command::validate`], for front ends to refuse before proposing), not by the decoder.
//!
//! # Snapshot encoding (format version 2; version 1 when the address book is empty)
//! ```text
//! "RKVS" u8 version = 1 or 2
//! u64 applied_index, u64 clock_ms
//! u64 pair count, then pairs in strictly increasing key order: bytes key, bytes value
//! u64 session count, then sessions in increasing client id order:
//!     u64 client_id, u64 last_seq, u64 last_active_ms,
//!     result: u8 0 none | 1 Put | 2 Deleted u8 existed | 3 Swapped u8 swapped, option previous
//!             | 4 PutMany | 5 Limit u8 which (0 key, 1 value, 2 pairs, 3 batch), u64 size, u64 max
//!     u64 buffered count, then in increasing seq order: u64 seq, u64 index,
//!         u8 kind (1-4 as in commands), the kind's body as in commands
//! -- version 2 only (written only when the book is not empty):
//! u64 peer count (at least 1), then in increasing id order: u64 node_id, the record as in SetPeer
//! u32 CRC-32C of every byte before it
//! ```
//! [`StateMachine::digest`] is FNV-1a 64 over the same bytes without the checksum.
//!
//! ```
//! use bytes::Bytes;
//! use rkv_kv::{ClientSeq, Command, Output, StateMachine, WriteOp};
//!
//! let mut machine = StateMachine::new();
//! let register = Command::Register { now_ms: 1_000 }.encode();
//! let applied = machine.apply(1, &register);
//! assert_eq!(applied[0].output, Output::Registered { client_id: 1 });
//!
//! let put = Command::Write {
//!     now_ms: 1_001,
//!     session: Some(ClientSeq { client_id: 1, seq: 1 }),
//!     op: WriteOp::Put { key: Bytes::from("k"), value: Bytes::from("v") },
//! }
//! .encode();
//! assert_eq!(machine.apply(2, &put)[0].output, Output::Put);
//! // The client retries: acknowledged, not applied again.
//! let retry = machine.apply(3, &put);
//! assert!(retry[0].duplicate && retry[0].events.is_empty());
//! assert_eq!(machine.get(b"k"), Some(&Bytes::from("v")));
//!
//! let restored = StateMachine::restore(&machine.snapshot()).unwrap();
//! assert_eq!(restored.digest(), machine.digest());
//! ```

mod codec;
mod command;
mod machine;
mod map;
mod snapshot;

pub use command::{
    COMMAND_FORMAT_VERSION, ClientSeq, Command, DecodeError, KEY_BYTES_MAX, LimitError,
    PEER_FIELD_BYTES_MAX, PUT_MANY_BYTES_MAX, PUT_MANY_PAIRS_MAX, PeerRecord, PeerRole,
    VALUE_BYTES_MAX, WriteOp,
};
pub use machine::{
    Applied, BUFFER_BYTES_MAX, Event, EventKind, Output, SEQ_WINDOW, SESSION_BUFFER_BYTES_MAX,
    SESSION_TTL_MS, SESSIONS_MAX, SessionError, StateMachine, prefix_end,
};
pub use snapshot::{
    SNAPSHOT_FORMAT_VERSION, SNAPSHOT_FORMAT_VERSION_V1, SNAPSHOT_MAGIC, SnapshotError,
    SnapshotView,
};
