//! `rkv.v1.Kv`: rkv's own client API (reads at three consistency levels, sessions,
//! compare-and-swap, scans, watches, membership and status).

use std::pin::Pin;
use std::sync::Arc;

use rkv_engine::ReadLevel;
use rkv_kv::{ClientSeq, Command, Event, EventKind, Output, WriteOp};
use rkv_raft::{MembershipChange, NodeId, Role};
use rkv_wire::v1::kv_server::Kv;
use rkv_wire::v1::{self, Consistency, Member, ResponseHeader};
use tokio_stream::Stream;
use tokio_stream::wrappers::BroadcastStream;
use tonic::{Request, Response, Status};

use crate::machine::KvMachine;
use crate::service::{Node, now_ms, output_status};

/// Most pairs one Scan returns.
pub const SCAN_LIMIT_MAX: usize = 10_000;

/// The rkv.v1 front end.
#[derive(Clone)]
pub struct KvService {
    node: Node,
}

fn level(consistency: i32) -> ReadLevel {
    match Consistency::try_from(consistency) {
        Ok(Consistency::Lease) => ReadLevel::Lease,
        Ok(Consistency::Stale) => ReadLevel::Stale,
        _ => ReadLevel::Linearizable,
    }
}

fn session(s: Option<v1::Session>) -> Option<ClientSeq> {
    s.map(|s| ClientSeq {
        client_id: s.client_id,
        seq: s.seq,
    })
}

impl KvService {
    /// Serves `node`.
    pub fn new(node: Node) -> KvService {
        KvService { node }
    }

    fn header(&self) -> Option<ResponseHeader> {
        let observed = self.node.engine.observed();
        Some(ResponseHeader {
            cluster_id: self.node.cluster_id,
            member_id: self.node.engine.id().0,
            leader_id: observed.leader.map_or(0, |l| l.0),
            term: observed.term.0,
            applied_index: observed.applied.0,
        })
    }

    async fn read<R: Send + 'static>(
        &self,
        consistency: i32,
        read: impl FnOnce(&KvMachine) -> R + Send + 'static,
    ) -> Result<R, Status> {
        self.node.read(level(consistency), read).await
    }

    async fn members(&self) -> Result<Vec<Member>, Status> {
        let status = self
            .node
            .engine
            .status()
            .await
            .map_err(|e| self.node.engine_status(e))?;
        let member = |id: &NodeId, is_learner| Member {
            id: id.0,
            address: self.node.address_of(*id).unwrap_or_default(),
            is_learner,
        };
        let voters = status.membership.voters.iter().map(|id| member(id, false));
        let learners = status.membership.learners.iter().map(|id| member(id, true));
        Ok(voters.chain(learners).collect())
    }

    async fn change(&self, change: MembershipChange) -> Result<Vec<Member>, Status> {
        self.node
            .engine
            .change_membership(change)
            .await
            .map_err(|e| self.node.engine_status(e))?;
        self.members().await
    }
}

fn to_v1_event(e: Event) -> v1::Event {
    let (kind, value) = match e.kind {
        EventKind::Put(value) => (v1::EventKind::Put, value),
        EventKind::Delete => (v1::EventKind::Delete, bytes::Bytes::new()),
    };
    v1::Event {
        index: e.index,
        kind: kind.into(),
        key: e.key,
        value,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(
        &self,
        request: Request<v1::GetRequest>,
    ) -> Result<Response<v1::GetResponse>, Status> {
        let request = request.into_inner();
        let key = request.key;
        let value = self
            .read(request.consistency, move |m| m.kv.get(&key).cloned())
            .await?;
        Ok(Response::new(v1::GetResponse {
            header: self.header(),
            value,
        }))
    }

    async fn put(
        &self,
        request: Request<v1::PutRequest>,
    ) -> Result<Response<v1::PutResponse>, Status> {
        let request = request.into_inner();
        let op = WriteOp::Put {
            key: request.key,
            value: request.value,
        };
        let applied = self.node.write(op, session(request.session)).await?;
        Ok(Response::new(v1::PutResponse {
            header: self.header(),
            duplicate: applied.duplicate,
        }))
    }

    async fn delete(
        &self,
        request: Request<v1::DeleteRequest>,
    ) -> Result<Response<v1::DeleteResponse>, Status> {
        let request = request.into_inner();
        let applied = self
            .node
            .write(
                WriteOp::Delete { key: request.key },
                session(request.session),
            )
            .await?;
        let existed = matches!(applied.output, Output::Deleted { existed: true });
        Ok(Response::new(v1::DeleteResponse {
            header: self.header(),
            existed,
            duplicate: applied.duplicate,
        }))
    }

    async fn compare_and_swap(
        &self,
        request: Request<v1::CompareAndSwapRequest>,
    ) -> Result<Response<v1::CompareAndSwapResponse>, Status> {
        let request = request.into_inner();
        let op = WriteOp::CompareAndSwap {
            key: request.key,
            expected: request.expected,
            new: request.new,
        };
        let applied = self.node.write(op, session(request.session)).await?;
        let (swapped, previous) = match applied.output {
            Output::Swapped { swapped, previous } => (swapped, previous),
            _ => (false, None),
        };
        Ok(Response::new(v1::CompareAndSwapResponse {
            header: self.header(),
            swapped,
            previous,
            duplicate: applied.duplicate,
        }))
    }

    async fn scan(
        &self,
        request: Request<v1::ScanRequest>,
    ) -> Result<Response<v1::ScanResponse>, Status> {
        let request = request.into_inner();
        let limit = match request.limit {
            0 => SCAN_LIMIT_MAX,
            n => usize::try_from(n)
                .unwrap_or(SCAN_LIMIT_MAX)
                .min(SCAN_LIMIT_MAX),
        };
        let selector = request.selector;
        // One more than asked tells whether there is more.
        let mut kvs = self
            .read(request.consistency, move |m| match selector {
                Some(v1::scan_request::Selector::Range(range)) => {
                    let end = (!range.end.is_empty()).then_some(range.end);
                    m.kv.scan(&range.start, end.as_deref(), limit + 1)
                }
                Some(v1::scan_request::Selector::Prefix(prefix)) => {
                    m.kv.scan_prefix(&prefix, limit + 1)
                }
                None => m.kv.scan(&[], None, limit + 1),
            })
            .await?;
        let more = kvs.len() > limit;
        kvs.truncate(limit);
        let kvs = kvs
            .into_iter()
            .map(|(key, value)| v1::KeyValue { key, value })
            .collect();
        Ok(Response::new(v1::ScanResponse {
            header: self.header(),
            kvs,
            more,
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let request = request.into_inner();
        let filter = request.filter;
        let header = self.header();
        // Subscribe before reading the history, so nothing falls in between; events seen
        // in both are skipped by index.
        let live = BroadcastStream::new(self.node.events.subscribe());
        let past = match request.start_index {
            0 => Vec::new(),
            start => {
                let history = self
                    .node
                    .history
                    .lock()
                    .map_err(|_| Status::internal("history lock"))?;
                history.since(start).map_err(|oldest| {
                    let mut status = Status::out_of_range(format!(
                        "watch from {start}: events before {oldest} are no longer kept on this server"
                    ));
                    if let Ok(v) = oldest.to_string().parse() {
                        status.metadata_mut().insert(rkv_wire::v1::errors::OLDEST_INDEX_KEY, v);
                    }
                    status
                })?
            }
        };
        // Live events already replayed, or before the requested start, are skipped.
        let replayed_through = past
            .last()
            .map_or(0, |e| e.index)
            .max(request.start_index.saturating_sub(1));
        let matches = move |e: &Event| match &filter {
            Some(v1::watch_request::Filter::Key(key)) => e.key == *key,
            Some(v1::watch_request::Filter::Prefix(prefix)) => e.key.starts_with(prefix),
            None => true,
        };
        let past: Vec<v1::Event> = past
            .into_iter()
            .filter(|e| matches(e))
            .map(to_v1_event)
            .collect();
        let replay = (!past.is_empty()).then(|| {
            Ok(v1::WatchResponse {
                header,
                events: past,
            })
        });
        let replay = tokio_stream::iter(replay);
        let live = tokio_stream::StreamExt::filter_map(live, move |batch| match batch {
            Ok(batch) if batch.is_empty() => Some(Err(Status::data_loss(
                "this server installed a snapshot and cannot show the changes it covered; watch again from a later index",
            ))),
            Ok(batch) => {
                let events: Vec<v1::Event> = Arc::unwrap_or_clone(batch)
                    .into_iter()
                    .filter(|e| e.index > replayed_through && matches(e))
                    .map(to_v1_event)
                    .collect();
                (!events.is_empty()).then(|| Ok(v1::WatchResponse { header, events }))
            }
            Err(_) => Some(Err(Status::data_loss(
                "the watcher fell behind and missed events",
            ))),
        });
        let stream = tokio_stream::StreamExt::chain(replay, live);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn open_session(
        &self,
        _request: Request<v1::OpenSessionRequest>,
    ) -> Result<Response<v1::OpenSessionResponse>, Status> {
        let applied = self
            .node
            .propose(&Command::Register { now_ms: now_ms() })
            .await?;
        let output = applied.first().map(|a| a.output.clone());
        match output {
            Some(Output::Registered { client_id }) => Ok(Response::new(v1::OpenSessionResponse {
                header: self.header(),
                client_id,
            })),
            Some(other) => {
                output_status(&other)?;
                Err(Status::internal(format!("register produced {other:?}")))
            }
            None => Err(Status::internal("register produced no result")),
        }
    }

    async fn member_list(
        &self,
        _request: Request<v1::MemberListRequest>,
    ) -> Result<Response<v1::MemberListResponse>, Status> {
        let members = self.members().await?;
        Ok(Response::new(v1::MemberListResponse {
            header: self.header(),
            members,
        }))
    }

    async fn member_add(
        &self,
        request: Request<v1::MemberAddRequest>,
    ) -> Result<Response<v1::MemberAddResponse>, Status> {
        let request = request.into_inner();
        if request.id == 0 {
            return Err(Status::invalid_argument("member ids start at 1"));
        }
        let members = self
            .change(MembershipChange::AddLearner(NodeId(request.id)))
            .await?;
        Ok(Response::new(v1::MemberAddResponse {
            header: self.header(),
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<v1::MemberRemoveRequest>,
    ) -> Result<Response<v1::MemberRemoveResponse>, Status> {
        let id = NodeId(request.into_inner().id);
        let members = self.change(MembershipChange::Remove(id)).await?;
        Ok(Response::new(v1::MemberRemoveResponse {
            header: self.header(),
            members,
        }))
    }

    async fn member_promote(
        &self,
        request: Request<v1::MemberPromoteRequest>,
    ) -> Result<Response<v1::MemberPromoteResponse>, Status> {
        let id = NodeId(request.into_inner().id);
        let members = self.change(MembershipChange::Promote(id)).await?;
        Ok(Response::new(v1::MemberPromoteResponse {
            header: self.header(),
            members,
        }))
    }

    async fn transfer_leader(
        &self,
        request: Request<v1::TransferLeaderRequest>,
    ) -> Result<Response<v1::TransferLeaderResponse>, Status> {
        let target = NodeId(request.into_inner().target_id);
        self.node
            .engine
            .transfer_leadership(target)
            .await
            .map_err(|e| self.node.engine_status(e))?;
        let done = self
            .node
            .engine
            .wait_for(std::time::Duration::from_secs(5), |o| {
                o.leader == Some(target)
            })
            .await;
        let leader_id = done.and_then(|o| o.leader).map_or(0, |l| l.0);
        Ok(Response::new(v1::TransferLeaderResponse {
            header: self.header(),
            leader_id,
        }))
    }

    async fn status(
        &self,
        _request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        let status = self
            .node
            .engine
            .status()
            .await
            .map_err(|e| self.node.engine_status(e))?;
        let learner = status.membership.learners.contains(&status.id);
        let role = match status.role {
            Role::Leader => v1::Role::Leader,
            Role::Candidate => v1::Role::Candidate,
            Role::PreCandidate => v1::Role::PreCandidate,
            Role::Follower if learner => v1::Role::Learner,
            Role::Follower => v1::Role::Follower,
        };
        let peers = status
            .peers
            .iter()
            .map(|p| v1::PeerStatus {
                id: p.id.0,
                address: self.node.address_of(p.id).unwrap_or_default(),
                match_index: p.match_index.0,
                next_index: p.next_index.0,
                is_learner: status.membership.learners.contains(&p.id),
            })
            .collect();
        let members = self.members().await?;
        let leader = status.leader;
        Ok(Response::new(v1::StatusResponse {
            header: self.header(),
            id: status.id.0,
            role: role.into(),
            term: status.term.0,
            leader_id: leader.map_or(0, |l| l.0),
            leader_address: leader
                .and_then(|l| self.node.address_of(l))
                .unwrap_or_default(),
            commit_index: status.commit.0,
            applied_index: self.node.engine.observed().applied.0,
            peers,
            last_log_index: status.last_index.0,
            persisted_index: status.persisted.0,
            snapshot_index: status.snapshot_index.0,
            members,
            engine: "native".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }
}
