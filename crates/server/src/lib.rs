//! The rkv server as a library: one node (the engine, rkv's key-value state machine, the
//! TCP peer transport) and the front ends that serve it.
//!
//! `rkvd` (this crate's binary) is relab's rkvd on it; `rkv-demo` puts goraft's raftd,
//! hraftd and raft-demo's programs on the very same node, so there is one server with
//! thin front ends rather than a copy per seed system:
//! - [`node`] starts a node ([`node::start`]) and [`service::Node`] is what every front
//!   end talks to: writes ([`service::Node::write`]), raw proposals, reads at a
//!   consistency level, membership.
//! - [`peers`] and [`membership`] let servers join by address: the address book travels
//!   through the log, joins add learners, and a steward promotes them once caught up.
//! - [`flags`], [`identity`], [`rkvpb_service`], [`v1_service`], [`forward`],
//!   [`routes`] and [`metrics_http`] are rkvd's command line, data directory and gRPC
//!   front ends (served by `rkv-grpc`);
//!   [`rkvd::run`] ties them together.

pub mod flags;
pub mod forward;
pub mod identity;
pub mod machine;
pub mod membership;
pub mod metrics_http;
pub mod node;
pub mod peers;
pub mod rkvd;
pub mod rkvpb_service;
pub mod routes;
pub mod service;
pub mod v1_service;
