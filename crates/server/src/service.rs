//! What every front end shares: the engine, the session waiters, the event channel and
//! the cluster's addresses, and the translation of engine and state-machine outcomes
//! into gRPC statuses with the metadata the client library branches on.

use std::sync::Arc;
use std::time::Duration;

use rkv_engine::{Engine, EngineError};
use rkv_kv::{Applied, ClientSeq, Command, Event, Output, SessionError, WriteOp};
use rkv_raft::NodeId;
use rkv_wire::v1::errors;
use tokio::sync::broadcast;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::machine::{KvMachine, Waiters};
use crate::peers::PeerBook;

/// How long a write may wait to be applied before its outcome is reported unknown.
pub const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The node as front ends see it.
#[derive(Clone)]
pub struct Node {
    /// The engine.
    pub engine: Engine<KvMachine>,
    /// Session writes waiting to be applied.
    pub waiters: Arc<Waiters>,
    /// Applied change events, for Watch.
    pub events: broadcast::Sender<Arc<Vec<Event>>>,
    /// Recent change events, for watches that start at a past index.
    pub history: Arc<std::sync::Mutex<crate::machine::History>>,
    /// Client address of every server, by 1-based id.
    pub servers: Arc<Vec<String>>,
    /// This cluster's id.
    pub cluster_id: u64,
    /// `-unsafe-local-reads`: every read is served as a stale local read (test only).
    pub unsafe_local_reads: bool,
    /// The replicated address book, for nodes that let servers join by address.
    pub book: Option<Arc<PeerBook>>,
}

/// The leader-stamped clock that session expiry runs on.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn status(code: Code, reason: &'static str, message: impl Into<String>) -> Status {
    let mut status = Status::new(code, message);
    status
        .metadata_mut()
        .insert(errors::ERROR_KEY, MetadataValue::from_static(reason));
    status
}

impl Node {
    /// The client address of server `id`: its place in `-servers`, or else the client
    /// address it registered when it joined by address.
    pub fn address_of(&self, id: NodeId) -> Option<String> {
        let listed = usize::try_from(id.0)
            .ok()
            .and_then(|id| id.checked_sub(1))
            .and_then(|position| self.servers.get(position).cloned());
        listed.or_else(|| {
            let record = self.book.as_ref()?.get(id)?;
            (!record.client_address.is_empty()).then_some(record.client_address)
        })
    }

    /// An engine error as a gRPC status, with the leader's id and address when known.
    pub fn engine_status(&self, error: EngineError) -> Status {
        match error {
            EngineError::NotLeader { leader_hint } => {
                let text = match leader_hint {
                    Some(leader) => format!(
                        "not the leader; the leader is {leader} at {}",
                        self.address_of(leader).unwrap_or_default()
                    ),
                    None => {
                        "not the leader; no leader is known (an election may be under way)".into()
                    }
                };
                let mut s = status(Code::Unavailable, errors::NOT_LEADER, text);
                if let Some(leader) = leader_hint {
                    if let Ok(v) = MetadataValue::try_from(leader.0.to_string()) {
                        s.metadata_mut().insert(errors::LEADER_ID_KEY, v);
                    }
                    if let Some(v) = self
                        .address_of(leader)
                        .and_then(|a| MetadataValue::try_from(a).ok())
                    {
                        s.metadata_mut().insert(errors::LEADER_ADDR_KEY, v);
                    }
                }
                s
            }
            EngineError::Busy(why) => status(Code::ResourceExhausted, errors::BUSY, why),
            EngineError::Dropped => status(
                Code::Unavailable,
                errors::NOT_LEADER,
                "leadership changed before the write committed; it was not applied: retry",
            ),
            EngineError::Invalid(why) => {
                status(Code::InvalidArgument, errors::INVALID_ARGUMENT, why)
            }
            EngineError::Stopped(why) => status(Code::Unavailable, errors::STOPPED, why),
            EngineError::OutcomeUnknown(why) => status(
                Code::Unavailable,
                errors::OUTCOME_UNKNOWN,
                format!("{why}; the write may or may not be applied"),
            ),
            EngineError::Unavailable(why) => status(Code::Unavailable, errors::NOT_LEADER, why),
            other => status(Code::Internal, errors::INTERNAL, other.to_string()),
        }
    }

    /// Reads at `level`, waiting (bounded) for the read to be confirmed and applied.
    pub async fn read<R: Send + 'static>(
        &self,
        level: rkv_engine::ReadLevel,
        read: impl FnOnce(&KvMachine) -> R + Send + 'static,
    ) -> Result<R, Status> {
        let level = if self.unsafe_local_reads {
            rkv_engine::ReadLevel::Stale
        } else {
            level
        };
        match tokio::time::timeout(PROPOSAL_TIMEOUT, self.engine.read(level, read)).await {
            Ok(result) => result.map_err(|e| self.engine_status(e)),
            Err(_) => Err(status(
                Code::Unavailable,
                errors::NOT_LEADER,
                format!("the read was not confirmed within {PROPOSAL_TIMEOUT:?}; retry"),
            )),
        }
    }

    /// Proposes a command and waits (bounded) for its entry to be applied.
    pub async fn propose(&self, command: &Command) -> Result<Vec<Applied>, Status> {
        let bytes = bytes::Bytes::from(command.encode());
        match tokio::time::timeout(PROPOSAL_TIMEOUT, self.engine.propose(bytes)).await {
            Ok(result) => result.map_err(|e| self.engine_status(e)),
            Err(_) => Err(status(
                Code::Unavailable,
                errors::OUTCOME_UNKNOWN,
                format!("not applied within {PROPOSAL_TIMEOUT:?}; it may or may not apply later"),
            )),
        }
    }

    /// Applies a write, exactly once per session sequence number if `session` is given,
    /// and returns its result (waiting for an early write to be released).
    pub async fn write(&self, op: WriteOp, session: Option<ClientSeq>) -> Result<Applied, Status> {
        let command = Command::Write {
            now_ms: now_ms(),
            session,
            op,
        };
        command
            .validate()
            .map_err(|e| status(Code::InvalidArgument, errors::TOO_LARGE, e.to_string()))?;
        let waiter = session.map(|s| self.waiters.wait(s));
        let outputs = self.propose(&command).await;
        let own = outputs.map(|outputs| match session {
            None => outputs.into_iter().next(),
            Some(s) => outputs.into_iter().find(|a| a.session == Some(s)),
        });
        let result = match (own, waiter) {
            (Err(e), _) => Err(e),
            (Ok(Some(applied)), _) => Ok(applied),
            (Ok(None), Some(waiter)) => {
                // Buffered behind an earlier sequence number: answered when released.
                match tokio::time::timeout(PROPOSAL_TIMEOUT, waiter).await {
                    Ok(Ok(applied)) => Ok(applied),
                    _ => Err(status(
                        Code::Unavailable,
                        errors::OUTCOME_UNKNOWN,
                        "the write waits for an earlier sequence number that has not arrived",
                    )),
                }
            }
            (Ok(None), None) => Err(status(
                Code::Internal,
                errors::INTERNAL,
                "the write produced no result",
            )),
        };
        if let Some(s) = session {
            self.waiters.forget(s);
        }
        let applied = result?;
        output_status(&applied.output)?;
        Ok(applied)
    }
}

/// The state machine's refusal of a command, as a gRPC status; `Ok` if it succeeded.
pub fn output_status(output: &Output) -> Result<(), Status> {
    match output {
        Output::Session(
            SessionError::Unknown { client_id } | SessionError::Expired { client_id, .. },
        ) => Err(status(
            Code::FailedPrecondition,
            errors::UNKNOWN_SESSION,
            format!("unknown or expired session {client_id}: register again"),
        )),
        Output::Session(SessionError::TooFarAhead { .. }) => Err(status(
            Code::FailedPrecondition,
            errors::SEQ_TOO_FAR_AHEAD,
            format!("{output:?}"),
        )),
        Output::Session(other) => Err(status(
            Code::ResourceExhausted,
            errors::SESSION_BUFFER_FULL,
            format!("{other:?}"),
        )),
        Output::Limit(e) => Err(status(
            Code::InvalidArgument,
            errors::TOO_LARGE,
            e.to_string(),
        )),
        Output::Rejected(e) => Err(status(
            Code::InvalidArgument,
            errors::INVALID_ARGUMENT,
            e.to_string(),
        )),
        _ => Ok(()),
    }
}
