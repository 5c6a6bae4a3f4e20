//! The other seed systems on rkv's engine: goraft's `raftd`, raft-demo's `hraftd`
//! (webkvstore), and raft-demo's kvstore, chat room and logger (`rkv-demo`).
//!
//! Each is a thin front end over one [`replica::Replica`], which is `rkv_server`'s node
//! (the same engine, state machine and transport as rkvd) plus joining by address. So
//! all of them get rkvd's durability, linearizable reads and forwarding of writes; only
//! the protocol each speaks to its users differs:
//! - [`raftd`]: interactive set-up, `GET/POST /db/{key}`, `POST /join`.
//! - [`hraftd`]: `POST /key`, `GET/DELETE /key/NAME`, `POST /join`, JSON errors.
//! - [`kvstore`]: the `get-KEY` / `set-KEY-VALUE` / `delete-KEY` line protocol.
//! - [`chat`]: a chat room whose messages go through the log, and its client.
//! - [`logger`]: a learner that writes every committed command to a file.
//! - [`cli`]: Go-style flags for all of them; [`profile`]: `-cpuprofile`/`-memprofile`.

pub mod chat;
pub mod cli;
pub mod hraftd;
pub mod http_client;
pub mod kvstore;
pub mod logger;
pub mod profile;
pub mod raftd;
pub mod replica;
