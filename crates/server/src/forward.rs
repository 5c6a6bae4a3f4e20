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

use rkv_wire::v1::errors;
use rkv_wire::v1::kv_client::KvClient;
use rkv_wire::v1::{self, kv_server::Kv};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::service::PROPOSAL_TIMEOUT;
use crate::v1_service::KvService;

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

    /// A (lazily connected, shared) client of the server at `address`.
    fn client(&self, address: &str) -> Option<KvClient<Channel>> {
        let mut channels = self.channels.lock().ok()?;
        if let Some(channel) = channels.get(address) {
            return Some(KvClient::new(channel.clone()));
        }
        let host = if address.starts_with(':') {
            format!("127.0.0.1{address}")
        } else {
            address.to_string()
        };
        let endpoint = Endpoint::from_shared(format!("http://{host}"))
            .ok()?
            .connect_timeout(Duration::from_secs(2))
            .timeout(PROPOSAL_TIMEOUT + Duration::from_secs(1))
            .tcp_nodelay(true)
            .local_address(self.source);
        let channel = endpoint.connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Some(KvClient::new(channel))
    }

    /// Runs `here` on this node; if it is not the leader (and the call was not forwarded
    /// already), runs `there` on the leader named in the refusal.
    async fn here_or_leader<T, R, Here, There, HereFut, ThereFut>(
        &self,
        request: Request<T>,
        here: Here,
        there: There,
    ) -> Result<Response<R>, Status>
    where
        T: Clone,
        Here: FnOnce(Request<T>) -> HereFut,
        HereFut: Future<Output = Result<Response<R>, Status>>,
        There: FnOnce(KvClient<Channel>, Request<T>) -> ThereFut,
        ThereFut: Future<Output = Result<Response<R>, Status>>,
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
        let Some(client) = leader_address.as_deref().and_then(|a| self.client(a)) else {
            return Err(refusal);
        };
        let mut request = Request::new(body);
        request
            .metadata_mut()
            .insert(FORWARDED_KEY, MetadataValue::from_static("1"));
        there(client, request).await.map_err(|status| {
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
        self.here_or_leader(
            request,
            |r| self.local.put(r),
            |mut c, r| async move { c.put(r).await },
        )
        .await
    }

    async fn delete(
        &self,
        request: Request<v1::DeleteRequest>,
    ) -> Result<Response<v1::DeleteResponse>, Status> {
        self.here_or_leader(
            request,
            |r| self.local.delete(r),
            |mut c, r| async move { c.delete(r).await },
        )
        .await
    }

    async fn compare_and_swap(
        &self,
        request: Request<v1::CompareAndSwapRequest>,
    ) -> Result<Response<v1::CompareAndSwapResponse>, Status> {
        self.here_or_leader(
            request,
            |r| self.local.compare_and_swap(r),
            |mut c, r| async move { c.compare_and_swap(r).await },
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
            |mut c, r| async move { c.open_session(r).await },
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
        self.here_or_leader(
            request,
            |r| self.local.member_add(r),
            |mut c, r| async move { c.member_add(r).await },
        )
        .await
    }

    async fn member_remove(
        &self,
        request: Request<v1::MemberRemoveRequest>,
    ) -> Result<Response<v1::MemberRemoveResponse>, Status> {
        self.here_or_leader(
            request,
            |r| self.local.member_remove(r),
            |mut c, r| async move { c.member_remove(r).await },
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
            |mut c, r| async move { c.member_promote(r).await },
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
            |mut c, r| async move { c.transfer_leader(r).await },
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
