//! rkv's gRPC transport: unary and server-streaming gRPC on an HTTP/2 connection of its
//! own, for the server ([`serve`] a [`Router`]) and the client ([`Channel`]).
//!
//! Why not tonic's transport (hyper and h2): profiled at 100 clients, it was most of the
//! leader's CPU time (hyper's per-call task, tower's layers, h2's locked stream store:
//! 60% of the leader against 14% for the Raft node task and 9% for the log writer), and
//! rkvctl spent more CPU per call than the leader's whole Raft work. gRPC's unary calls
//! need a small, well-specified part of HTTP/2 (RFC 9113) and HPACK (RFC 7541), which
//! this crate implements on one task per connection: every frame a read brings is
//! handled in one go, every answer ready in one turn leaves in one write, and no call
//! gets a task or a lock of its own. grpc-go, which etcd uses, has its own HTTP/2
//! transport for the same reasons.
//!
//! What stays tonic's: the generated message types and service traits (handlers are the
//! same code under either transport), [`tonic::Status`] with its metadata, and the
//! header encoding of statuses.
//!
//! ```text
//!  socket ─▶ read ─▶ frames ─▶ HPACK ─▶ request complete ─▶ Router handler (a future)
//!                                                                    │ polled in place
//!  socket ◀─ one write ◀─ HEADERS / DATA / trailers ◀── answers ready this turn
//! ```
//!
//! Limits, so that no peer can make either end hold more than it chose: the server
//! bounds calls per connection (SETTINGS_MAX_CONCURRENT_STREAMS), connections, header
//! blocks, messages (`-maxgrpc`), the request bytes all its connections hold for
//! incomplete requests, and answers waiting for a client that does not read (it stops
//! reading that client, and stops polling a streaming call until its answers leave);
//! both ends enforce the receive windows they advertise, and the client's stream windows
//! open only as the caller takes messages. Handshakes and stalled writes time out on the
//! server; the client pings a silent server. Compression is refused (rkv never asks
//! for it).
//!
//! `conn` is what client and server share (frames, header blocks, windows, settings);
//! `server` and `client` are each side's streams and calls.

pub mod client;
mod conn;
pub mod frame;
pub mod grpc;
pub mod hpack;
pub mod server;

#[cfg(feature = "fuzzing")]
pub use client::fuzz_connection;
pub use client::{Channel, ChannelConfig, NOT_SENT_KEY, Streaming};
pub use server::{Router, ServeError, ServerConfig, Shared, serve, serve_connection};
