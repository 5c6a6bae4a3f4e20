//! Any node accepts any rkv.v1 call: a follower that is asked to write (or to change the
//! membership) passes the call to the leader and relays the answer.
//!
//! Reads need no forwarding: a follower confirms a linearizable read with the leader
//! itself (ReadIndex) and serves it locally. A forwarded call carries the
//! `rkv-forwarded` header and is never forwarded again, so two nodes that disagree about
//! who leads cannot bounce a call between them; the second answers not-leader instead.
//! Exactly-once is kept by the session the client put in the request.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use rkv_grpc::{Channel, ChannelConfig};
use rkv_wire::paths;
use rkv_wire::v1::errors;
use rkv_wire::v1::{self, kv_server::Kv};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::service::PROPOSAL_TIMEOUT;
use crate::v1_service::KvService;

/// How long a follower waits for the leader's answer to a forwarded call: the leader's
/// own bound on a write, and a second for the way there and back.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(PROPOSAL_TIMEOUT.as_secs() + 1);

/// Metadata key marking a call that a follower already forwarded.
pub const FORWARDED_KEY: &str = "rkv-forwarded";

/// rkv.v1 with forwarding of writes from followers to the leader.
pub struct ForwardingKv {
    local: KvService,
    channels: Mutex<HashMap<String, Channel>>,
    source: Option<IpAddr>,
}

impl ForwardingKv {
    /// Serves `local`, forwarding what only the leader can do.
    pub fn new(local: KvService) -> ForwardingKv {
        ForwardingKv {
            local,
            channels: Mutex::new(HashMap::new()),
            source: None,
        }
    }

    /// Forwards from `source` (this node's own address, when it has one), as its peer
    /// traffic does: a packet filter between two nodes then stops forwarded calls too.
    pub fn with_source_address(mut self, source: Option<IpAddr>) -> ForwardingKv {
        self.source = source;
        self
    }

    /// A (lazily connected, shared) channel to the server at `address`.
    fn channel(&self, address: &str) -> Option<Channel> {
        let mut channels = self.channels.lock().ok()?;
        if let Some(channel) = channels.get(address) {
            return Some(channel.clone());
        }
        let host = if address.starts_with(':') {
            format!("127.0.0.1{address}")
        } else {
            address.to_string()
        };
        let channel = Channel::lazy(
            &host,
            ChannelConfig {
                connect_timeout: Duration::from_secs(2),
                local_address: self.source,
                ..ChannelConfig::default()
            },
        );
        channels.insert(address.to_string(), channel.clone());
        Some(channel)
    }

    /// Runs `here` on this node; if it is not the leader (and the call was not forwarded
    /// already), sends the same request to the leader named in the refusal, at `path`.
    async fn here_or_leader<T, R, Here, HereFut>(
        &self,
        request: Request<T>,
        here: Here,
        path: &'static str,
    ) -> Result<Response<R>, Status>
    where
        T: Clone + prost::Message,
        R: prost::Message + Default,
        Here: FnOnce(Request<T>) -> HereFut,
        HereFut: Future<Output = Result<Response<R>, Status>>,
    {
        let forwarded = request.metadata().contains_key(FORWARDED_KEY);
        let body = request.get_ref().clone();
        let refusal = match here(request).await {
            Err(status) if !forwarded && is_not_leader(&status) => status,
            other => return other,
        };
        let leader_address = refusal
            .metadata()
            .get(errors::LEADER_ADDR_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let Some(channel) = leader_address.as_deref().and_then(|a| self.channel(a)) else {
            return Err(refusal);
        };
        let call = channel.unary_with_metadata(path, &body, &[(FORWARDED_KEY, "1")]);
        let answer = match tokio::time::timeout(FORWARD_TIMEOUT, call).await {
            Ok(answer) => answer,
            Err(_) => Err(Status::deadline_exceeded(
                "the leader did not answer in time",
            )),
        };
        answer.map(Response::new).map_err(|status| {
            if status.metadata().contains_key(errors::ERROR_KEY) {
                return status;
            }
            // The leader's own answers carry a reason; a bare failure is the link to it,
            // which may have broken after the leader applied the call.
            let mut unknown = Status::unavailable(format!(
                "forwarding to the leader failed ({}); the call may or may not have been applied",
                status.message()
            ));
            unknown.metadata_mut().insert(
                errors::ERROR_KEY,
                MetadataValue::from_static(errors::OUTCOME_UNKNOWN),
            );
            unknown
        })
    }
}

fn is_not_leader(status: &Status) -> bool {
    status.code() == tonic::Code::Unavailable
        && status
            .metadata()
            .get(errors::ERROR_KEY)
            .and_then(|v| v.to_str().ok())
            == Some(errors::NOT_LEADER)
}

#[tonic::async_trait]
impl Kv for ForwardingKv {
    async fn get(
        &self,
        request: Request<v1::GetRequest>,
    ) -> Result<Response<v1::GetResponse>, Status> {
        self.local.get(request).await
    }

    async fn put(
        &self,
        request: Request<v1::PutRequest>,
    ) -> Result<Response<v1::PutResponse>, Status> {
        self.here_or_leader(request, |r| self.local.put(r), paths::v1::PUT)
            .await
    }

    async fn delete(
        &self,
        request: Request<v1::DeleteRequest>,
    ) -> Result<Response<v1::DeleteResponse>, Status> {
        self.here_or_leader(request, |r| self.local.delete(r), paths::v1::DELETE)
            .await
    }

    async fn compare_and_swap(
        &self,
        request: Request<v1::CompareAndSwapRequest>,
    ) -> Result<Response<v1::CompareAndSwapResponse>, Status> {
        self.here_or_leader(
            request,
            |r| self.local.compare_and_swap(r),
            paths::v1::COMPARE_AND_SWAP,
        )
        .await
    }

    async fn scan(
        &self,
        request: Request<v1::ScanRequest>,
    ) -> Result<Response<v1::ScanResponse>, Status> {
        self.local.scan(request).await
    }

    type WatchStream = <KvService as Kv>::WatchStream;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.local.watch(request).await
    }

    async fn open_session(
        &self,
        request: Request<v1::OpenSessionRequest>,
    ) -> Result<Response<v1::OpenSessionResponse>, Status> {
        self.here_or_leader(
            request,
            |r| self.local.open_session(r),
            paths::v1::OPEN_SESSION,
        )
        .await
    }

    async fn member_list(
        &self,
        request: Request<v1::MemberListRequest>,
    ) -> Result<Response<v1::MemberListResponse>, Status> {
        self.local.member_list(request).await
    }

    async fn member_add(
        &self,
        request: Request<v1::MemberAddRequest>,
    ) -> Result<Response<v1::MemberAddResponse>, Status> {
        self.here_or_leader(request, |r| self.local.member_add(r), paths::v1::MEMBER_ADD)
            .await
    }

    async fn member_remove(
        &self,
        request: Request<v1::MemberRemoveRequest>,
    ) -> Result<Response<v1::MemberRemoveResponse>, Status> {
        self.here_or_leader(
            request,
            |r| self.local.member_remove(r),
            paths::v1::MEMBER_REMOVE,
        )
        .await
    }

    async fn member_promote(
        &self,
        request: Request<v1::MemberPromoteRequest>,
    ) -> Result<Response<v1::MemberPromoteResponse>, Status> {
        self.here_or_leader(
            request,
            |r| self.local.member_promote(r),
            paths::v1::MEMBER_PROMOTE,
        )
        .await
    }

    async fn transfer_leader(
        &self,
        request: Request<v1::TransferLeaderRequest>,
    ) -> Result<Response<v1::TransferLeaderResponse>, Status> {
        self.here_or_leader(
            request,
            |r| self.local.transfer_leader(r),
            paths::v1::TRANSFER_LEADER,
        )
        .await
    }

    async fn status(
        &self,
        request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        self.local.status(request).await
    }
}
