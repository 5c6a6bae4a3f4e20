//! rkv's wire formats.
//!
//! - [`peer`]: the protocol between rkv servers: versioned, length-prefixed, checksummed
//!   frames carrying batches of `rkv_raft::Message`, with a handshake that refuses peers
//!   of another cluster, node or version with a clear reason. Specified byte by byte in
//!   `PEER.md` (rendered in the module's documentation).
//! - [`rkvpb`] and [`commonpb`]: the client API of the original Go rkv (`rkvpb.RKV`),
//!   wire-compatible so that its client works against rkvd unchanged.
//! - [`v1`]: rkv's own, richer client API (`rkv.v1.Kv`).
//! - [`paths`]: the gRPC path of every method of both client APIs.
//! - [`codec`]: the protobuf codec the generated gRPC code of this crate and of rkvctl's
//!   etcd client uses (small per-call buffers).

pub mod codec;
pub mod paths;
pub mod peer;

/// The original Go rkv's client API: package `rkvpb`, service `RKV` (`Register`,
/// `Insert`, `Lookup`, `Reconf`, `ReconfOnBecome`), from `proto/rkvpb/rkv.proto`.
/// Server: [`rkvpb::rkv_server::RkvServer`]; client: [`rkvpb::rkv_client::RkvClient`].
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod rkvpb {
    tonic::include_proto!("rkvpb");
}

/// The original's reconfiguration messages and enums (package `commonpb`), from
/// `proto/commonpb/common.proto`, used by [`rkvpb`].
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod commonpb {
    tonic::include_proto!("commonpb");
}

/// rkv's own client API: package `rkv.v1`, service `Kv`, from `proto/rkv/v1/rkv.proto`
/// (whose comments specify the error model: gRPC codes, `rkv-error` reason codes and the
/// `rkv-leader-id` / `rkv-leader-addr` leader hint). Server: [`v1::kv_server::KvServer`];
/// client: [`v1::kv_client::KvClient`].
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("rkv.v1");

    /// Metadata keys and `rkv-error` reason codes of the error model (see the comments of
    /// `proto/rkv/v1/rkv.proto`), shared by server and client so they cannot drift.
    pub mod errors {
        /// Metadata key: the stable reason code of an error.
        pub const ERROR_KEY: &str = "rkv-error";
        /// Metadata key: the leader's node id, in decimal.
        pub const LEADER_ID_KEY: &str = "rkv-leader-id";
        /// Metadata key: the leader's client address, `host:port`.
        pub const LEADER_ADDR_KEY: &str = "rkv-leader-addr";
        /// Metadata key: a suggested back-off in milliseconds (with `busy`).
        pub const RETRY_AFTER_MS_KEY: &str = "rkv-retry-after-ms";
        /// Metadata key: the limit that was exceeded, in bytes (with `too-large`).
        pub const LIMIT_BYTES_KEY: &str = "rkv-limit-bytes";
        /// Metadata key: the oldest index a watch can start from (with `compacted`).
        pub const OLDEST_INDEX_KEY: &str = "rkv-oldest-index";

        /// UNAVAILABLE: not the leader, and the call was not forwarded.
        pub const NOT_LEADER: &str = "not-leader";
        /// UNAVAILABLE: leadership lost after proposing; the write may or may not apply.
        pub const OUTCOME_UNKNOWN: &str = "outcome-unknown";
        /// UNAVAILABLE: the node is shutting down or its engine stopped.
        pub const STOPPED: &str = "stopped";
        /// RESOURCE_EXHAUSTED: a bounded queue is full.
        pub const BUSY: &str = "busy";
        /// RESOURCE_EXHAUSTED: no room to buffer an early session write.
        pub const SESSION_BUFFER_FULL: &str = "session-buffer-full";
        /// FAILED_PRECONDITION: unknown, expired or evicted session.
        pub const UNKNOWN_SESSION: &str = "unknown-session";
        /// FAILED_PRECONDITION: the session seq is too far ahead.
        pub const SEQ_TOO_FAR_AHEAD: &str = "seq-too-far-ahead";
        /// FAILED_PRECONDITION: a membership change is still in progress.
        pub const MEMBERSHIP_CHANGE_PENDING: &str = "membership-change-pending";
        /// FAILED_PRECONDITION: the learner has not caught up.
        pub const NOT_CAUGHT_UP: &str = "not-caught-up";
        /// INVALID_ARGUMENT: a key, value or batch over the size limits.
        pub const TOO_LARGE: &str = "too-large";
        /// INVALID_ARGUMENT: a malformed request.
        pub const INVALID_ARGUMENT: &str = "invalid-argument";
        /// OUT_OF_RANGE: watch history before this index is gone.
        pub const COMPACTED: &str = "compacted";
        /// NOT_FOUND: the node named is not a member.
        pub const NOT_MEMBER: &str = "not-member";
        /// ALREADY_EXISTS: the node is already a member.
        pub const ALREADY_MEMBER: &str = "already-member";
        /// INTERNAL: a bug.
        pub const INTERNAL: &str = "internal";
    }
}
