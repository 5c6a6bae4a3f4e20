//! The client's errors, typed by what the caller can do about them.
//!
//! rkvd answers with gRPC statuses carrying a stable reason code in the `rkv-error`
//! metadata (see `proto/rkv/v1/rkv.proto`). The client retries what a retry can fix
//! (not-leader, unavailable, busy, an expired session for a write that was not applied)
//! until its deadline, so what reaches the caller is either a definite refusal
//! (`InvalidArgument`, `NotFound`, ...) or "gave up", where a write's outcome may be
//! unknown: a timed-out write is *unknown*, never "failed" (see [`Error::outcome_unknown`]).

use rkv_wire::v1::errors;
use tonic::{Code, Status};

/// Everything a client call can fail with.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Until the deadline, the servers reached said they were not the leader (an election
    /// may be under way, or the leader is unreachable).
    NotLeader {
        /// The last leader address a server named, if any.
        leader_hint: Option<String>,
        /// For a write: an earlier attempt may have been applied.
        outcome_unknown: bool,
    },
    /// No server answered usefully before the deadline (unreachable, stopping, timing out).
    Unavailable {
        /// The last failure seen.
        message: String,
        /// For a write: an attempt may have been applied (it timed out, or the server
        /// lost leadership after proposing it).
        outcome_unknown: bool,
    },
    /// The servers stayed busy (full queues) until the deadline; nothing was applied.
    Busy(String),
    /// The server gave up waiting for a change to commit (e.g. a reconfiguration); it may
    /// still take effect later.
    Timeout(String),
    /// The request is malformed or over a size limit; retrying will not help.
    InvalidArgument(String),
    /// The session is unknown or expired; the write was not applied. The client opens
    /// a new session itself, so this is seen only with explicit rkvpb sessions.
    UnknownSession(String),
    /// The server refused in its current state (`rkv-error` says why: e.g.
    /// `membership-change-pending`, `not-caught-up`, `seq-too-far-ahead`).
    FailedPrecondition {
        /// The `rkv-error` reason code (empty if none was sent).
        reason: String,
        /// The server's message.
        message: String,
    },
    /// The named member (or thing) does not exist.
    NotFound(String),
    /// The member already exists.
    AlreadyExists(String),
    /// Out of range (e.g. a watch from an index whose history is gone).
    OutOfRange(String),
    /// A bug on the server; it keeps serving.
    Internal(String),
    /// The client was set up wrongly (no servers, an address that cannot be dialed).
    Config(String),
    /// Any other gRPC status.
    Rpc {
        /// The status code.
        code: Code,
        /// The status message.
        message: String,
    },
}

impl Error {
    /// A short, stable name of the error's kind, for counting errors by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotLeader { .. } => "not-leader",
            Error::Unavailable { .. } => "unavailable",
            Error::Busy(_) => "busy",
            Error::Timeout(_) => "timeout",
            Error::InvalidArgument(_) => "invalid-argument",
            Error::UnknownSession(_) => "unknown-session",
            Error::FailedPrecondition { .. } => "failed-precondition",
            Error::NotFound(_) => "not-found",
            Error::AlreadyExists(_) => "already-exists",
            Error::OutOfRange(_) => "out-of-range",
            Error::Internal(_) => "internal",
            Error::Config(_) => "config",
            Error::Rpc { .. } => "rpc",
        }
    }

    /// Whether a write that returned this error may nevertheless have been applied.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Error::NotLeader {
                outcome_unknown, ..
            }
            | Error::Unavailable {
                outcome_unknown, ..
            } => *outcome_unknown,
            Error::Timeout(_) => true,
            _ => false,
        }
    }

    /// The definite error a status stands for, when retrying cannot help.
    pub(crate) fn definite(status: &Status) -> Error {
        let message = status.message().to_string();
        match status.code() {
            Code::InvalidArgument => Error::InvalidArgument(message),
            Code::NotFound => Error::NotFound(message),
            Code::AlreadyExists => Error::AlreadyExists(message),
            Code::OutOfRange => Error::OutOfRange(message),
            Code::Internal => Error::Internal(message),
            Code::FailedPrecondition if reason(status) == Some(errors::UNKNOWN_SESSION) => {
                Error::UnknownSession(message)
            }
            Code::FailedPrecondition => Error::FailedPrecondition {
                reason: reason(status).unwrap_or_default().to_string(),
                message,
            },
            code => Error::Rpc { code, message },
        }
    }
}

/// The `rkv-error` reason code of a status, if it has one.
pub(crate) fn reason(status: &Status) -> Option<&str> {
    status
        .metadata()
        .get(errors::ERROR_KEY)
        .and_then(|v| v.to_str().ok())
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unknown = |yes: bool| {
            if yes {
                " (the write may or may not have been applied)"
            } else {
                ""
            }
        };
        match self {
            Error::NotLeader {
                leader_hint,
                outcome_unknown,
            } => write!(
                f,
                "no leader answered in time (last hint: {}){}",
                leader_hint.as_deref().unwrap_or("none"),
                unknown(*outcome_unknown)
            ),
            Error::Unavailable {
                message,
                outcome_unknown,
            } => write!(
                f,
                "cluster unavailable: {message}{}",
                unknown(*outcome_unknown)
            ),
            Error::Busy(m) => write!(f, "servers busy until the deadline: {m}"),
            Error::Timeout(m) => write!(f, "timed out on the server: {m}"),
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::UnknownSession(m) => write!(f, "unknown session: {m}"),
            Error::FailedPrecondition { reason, message } => {
                write!(f, "refused ({reason}): {message}")
            }
            Error::NotFound(m) => write!(f, "not found: {m}"),
            Error::AlreadyExists(m) => write!(f, "already exists: {m}"),
            Error::OutOfRange(m) => write!(f, "out of range: {m}"),
            Error::Internal(m) => write!(f, "internal server error: {m}"),
            Error::Config(m) => write!(f, "{m}"),
            Error::Rpc { code, message } => write!(f, "{code:?}: {message}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    #[test]
    fn statuses_map_to_definite_errors() {
        let mut status = Status::failed_precondition("gone");
        status.metadata_mut().insert(
            errors::ERROR_KEY,
            MetadataValue::from_static(errors::UNKNOWN_SESSION),
        );
        assert_eq!(
            Error::definite(&status),
            Error::UnknownSession("gone".into())
        );
        assert_eq!(
            Error::definite(&Status::invalid_argument("big")).kind(),
            "invalid-argument"
        );
        assert!(!Error::InvalidArgument(String::new()).outcome_unknown());
        assert!(
            Error::Unavailable {
                message: String::new(),
                outcome_unknown: true
            }
            .outcome_unknown()
        );
    }
}
