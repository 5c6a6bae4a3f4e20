//! `rkvpb.RKV`, wire-compatible with relab's rkvd, so that its `rkvctl` works unchanged.
//!
//! Differences, all on the side of safety: an unknown client id or an undecodable
//! command gets a clear error instead of crashing the server, and a call on a follower
//! fails with UNAVAILABLE naming the leader (the original client then tries the next
//! server, as it always did).

use std::time::Duration;

use bytes::Bytes;
use rkv_engine::ReadLevel;
use rkv_kv::{ClientSeq, Command, Output, WriteOp};
use rkv_raft::{MembershipChange, NodeId, Role};
use rkv_wire::commonpb::{ReconfRequest, ReconfResponse, ReconfStatus, ReconfType};
use rkv_wire::rkvpb::rkv_server::Rkv;
use rkv_wire::rkvpb::{
    InsertRequest, InsertResponse, LookupRequest, LookupResponse, RegisterRequest, RegisterResponse,
};
use tonic::{Request, Response, Status};

use crate::service::{Node, now_ms};

/// What Lookup answers for a key that is not there, as the original did.
pub const MISSING_VALUE: &str = "(none)";

/// How long Reconf waits for a change (including a new server catching up).
const RECONF_TIMEOUT: Duration = Duration::from_secs(30);

/// The rkvpb front end.
#[derive(Clone)]
pub struct RkvService {
    node: Node,
}

impl RkvService {
    /// Serves `node`.
    pub fn new(node: Node) -> RkvService {
        RkvService { node }
    }

    async fn reconf(&self, request: ReconfRequest) -> ReconfResponse {
        let observed = self.node.engine.observed();
        if observed.role != Role::Leader {
            let hint = observed
                .leader
                .and_then(|l| self.node.address_of(l))
                .unwrap_or_default();
            return ReconfResponse {
                status: ReconfStatus::ReconfNotLeader.into(),
                leader_hint: hint,
            };
        }
        let target = NodeId(request.server_id);
        let add = request.reconf_type == i32::from(ReconfType::ReconfAdd);
        let engine = self.node.engine.clone();
        let change = async move {
            if !add {
                return change_when_possible(&engine, MembershipChange::Remove(target), false)
                    .await;
            }
            change_when_possible(&engine, MembershipChange::AddLearner(target), false).await?;
            // Promote once the learner has caught up; the core refuses until then.
            change_when_possible(&engine, MembershipChange::Promote(target), true).await
        };
        let status = match tokio::time::timeout(RECONF_TIMEOUT, change).await {
            Ok(Ok(())) => ReconfStatus::ReconfOk,
            Ok(Err(rkv_engine::EngineError::NotLeader { .. })) => ReconfStatus::ReconfNotLeader,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reconfiguration failed");
                ReconfStatus::ReconfTimeout
            }
            Err(_) => ReconfStatus::ReconfTimeout,
        };
        let hint = self
            .node
            .engine
            .observed()
            .leader
            .and_then(|l| self.node.address_of(l))
            .unwrap_or_default();
        ReconfResponse {
            status: status.into(),
            leader_hint: hint,
        }
    }
}

/// Makes `change`, trying again while the leader is busy with another change or has not
/// yet committed an entry of its term (a leader just elected), and, with
/// `until_valid`, while the core refuses it (a learner still catching up). The caller
/// bounds the whole wait.
async fn change_when_possible(
    engine: &rkv_engine::Engine<crate::machine::KvMachine>,
    change: MembershipChange,
    until_valid: bool,
) -> Result<(), rkv_engine::EngineError> {
    loop {
        match engine.change_membership(change).await {
            Ok(_) => return Ok(()),
            Err(rkv_engine::EngineError::Busy(_)) => {}
            Err(rkv_engine::EngineError::Invalid(_)) if until_valid => {}
            Err(e) => return Err(e),
        }
        // Something must change before another try can succeed: wait for the node's
        // state to move, or a moment.
        let mut watch = engine.watch();
        let _ = tokio::time::timeout(Duration::from_millis(100), watch.changed()).await;
    }
}

#[tonic::async_trait]
impl Rkv for RkvService {
    async fn register(
        &self,
        _request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let applied = self
            .node
            .propose(&Command::Register { now_ms: now_ms() })
            .await?;
        match applied.first().map(|a| &a.output) {
            Some(Output::Registered { client_id }) => Ok(Response::new(RegisterResponse {
                client_id: *client_id,
            })),
            other => Err(Status::internal(format!("register produced {other:?}"))),
        }
    }

    async fn insert(
        &self,
        request: Request<InsertRequest>,
    ) -> Result<Response<InsertResponse>, Status> {
        let request = request.into_inner();
        let session = ClientSeq {
            client_id: request.client_id,
            seq: request.client_seq,
        };
        let op = WriteOp::Put {
            key: Bytes::from(request.key),
            value: Bytes::from(request.value),
        };
        // `write` has already turned a refusal by the state machine into an error.
        self.node.write(op, Some(session)).await?;
        Ok(Response::new(InsertResponse { ok: true }))
    }

    async fn lookup(
        &self,
        request: Request<LookupRequest>,
    ) -> Result<Response<LookupResponse>, Status> {
        let key = request.into_inner().key;
        let value = self
            .node
            .read(
                ReadLevel::Linearizable,
                move |m: &crate::machine::KvMachine| m.kv.get(key.as_bytes()).cloned(),
            )
            .await?;
        let value = match value {
            Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            None => MISSING_VALUE.to_string(),
        };
        Ok(Response::new(LookupResponse { value }))
    }

    async fn reconf(
        &self,
        request: Request<ReconfRequest>,
    ) -> Result<Response<ReconfResponse>, Status> {
        Ok(Response::new(
            RkvService::reconf(self, request.into_inner()).await,
        ))
    }

    async fn reconf_on_become(
        &self,
        request: Request<ReconfRequest>,
    ) -> Result<Response<ReconfResponse>, Status> {
        // Wait (bounded) until this server leads, then reconfigure.
        let became = self
            .node
            .engine
            .wait_for(RECONF_TIMEOUT, |o| o.role == Role::Leader)
            .await;
        if became.is_none() {
            return Ok(Response::new(ReconfResponse {
                status: ReconfStatus::ReconfTimeout.into(),
                leader_hint: String::new(),
            }));
        }
        Ok(Response::new(
            RkvService::reconf(self, request.into_inner()).await,
        ))
    }
}
