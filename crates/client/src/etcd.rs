//! [`EtcdKv`]: the load generator's connection to an etcd v3 cluster, so that
//! `rkvctl -target etcd` drives etcd with exactly the workload, client structure and
//! measurements it uses for rkv (issue 7's side-by-side benchmark).
//!
//! Why it is here and not the `etcd-client` crate: that crate works with tonic 0.14, but
//! its build script needs protoc installed on the machine, which the build machines do
//! not have. The load generator needs two calls, so `proto/etcdserverpb/kv.proto` holds
//! just those (KV `Put` and `Range`, with etcd's field numbers) and `build.rs` compiles
//! them with the vendored protoc, as `crates/wire` does for rkv's own protobufs.
//!
//! What a request is:
//! - a write is `Put(key, value)`; a read is `Range(key)` with `serializable = false`,
//!   etcd's default: a linearizable read (the member confirms with the leader that it has
//!   applied everything committed before answering), the counterpart of rkv's `Lookup`.
//! - One [`EtcdKv`] is one gRPC channel per endpoint (`rkv-grpc`'s, the transport
//!   rkvctl uses for rkv too). With several endpoints it spreads requests over them
//!   round-robin, as etcd's own clients do; give one endpoint to talk only to that member.
//! - Retries mirror [`Client`](crate::Client)'s: an `UNAVAILABLE` (no leader yet, leader
//!   changed, member unreachable) or `RESOURCE_EXHAUSTED` answer is retried after a
//!   back-off that doubles from [`ClientConfig::backoff_initial`] to
//!   [`ClientConfig::backoff_max`], each attempt bounded by
//!   [`ClientConfig::attempt_timeout`], the whole call by [`ClientConfig::deadline`] and
//!   [`ClientConfig::attempts_max`]. etcd has no client sessions, so a retried `Put` may
//!   be applied twice; it writes the same value, which the benchmark does not mind, and
//!   a write that finally fails says its outcome is unknown unless no attempt reached a
//!   member.

use std::future::Future;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use rkv_grpc::{Channel, ChannelConfig};
use tokio::time::Instant;
use tonic::{Code, Status};

use crate::client::{ClientConfig, dialable};
use crate::error::Error;

/// The generated etcd messages and KV service (see `proto/etcdserverpb/kv.proto`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("etcdserverpb");
}

use pb::{PutRequest, PutResponse, RangeRequest, RangeResponse};

/// The gRPC path of etcd's `KV.Put`.
pub const PUT_PATH: &str = "/etcdserverpb.KV/Put";
/// The gRPC path of etcd's `KV.Range`.
pub const RANGE_PATH: &str = "/etcdserverpb.KV/Range";

/// Most endpoints one [`EtcdKv`] spreads its requests over.
pub const ENDPOINTS_MAX: usize = 64;

/// Turns an etcd endpoint as users write them (`http://127.0.0.1:2379`,
/// `127.0.0.1:2379`, `:2379`) into the URL to dial. `https://` is refused: rkvctl speaks
/// plain gRPC only, as bench/compare's clusters do.
pub fn endpoint_url(endpoint: &str) -> Result<String, Error> {
    let trimmed = endpoint.trim();
    if trimmed.starts_with("https://") {
        return Err(Error::Config(format!(
            "etcd endpoint {endpoint:?}: TLS is not supported by rkvctl; use an http:// endpoint"
        )));
    }
    if trimmed.contains("://") && !trimmed.starts_with("http://") {
        return Err(Error::Config(format!(
            "etcd endpoint {endpoint:?}: only http:// URLs or host:port are understood"
        )));
    }
    Ok(format!("http://{}", dialable(trimmed)?))
}

/// One connection to an etcd cluster through its v3 gRPC KV API; cheap to clone (the
/// clones share the connection).
#[derive(Clone, Debug)]
pub struct EtcdKv {
    channels: Arc<[Channel]>,
    next: Arc<AtomicUsize>,
    endpoints: Vec<String>,
    config: ClientConfig,
}

/// etcd's `KV` calls the load generator makes, on one channel.
struct KvCalls(Channel);

impl KvCalls {
    async fn put(&self, request: PutRequest) -> Result<PutResponse, Status> {
        self.0.unary(PUT_PATH, &request).await
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, Status> {
        self.0.unary(RANGE_PATH, &request).await
    }
}

impl EtcdKv {
    /// A connection to the etcd members at `endpoints` (see [`endpoint_url`]), made
    /// lazily on first use, so this does not fail for an unreachable member. Must be
    /// called inside a Tokio runtime.
    pub fn new<S: AsRef<str>>(
        endpoints: impl IntoIterator<Item = S>,
        config: ClientConfig,
    ) -> Result<EtcdKv, Error> {
        let mut urls: Vec<String> = Vec::new();
        for endpoint in endpoints {
            let url = endpoint_url(endpoint.as_ref())?;
            if urls.contains(&url) {
                continue;
            }
            if urls.len() == ENDPOINTS_MAX {
                return Err(Error::Config(format!(
                    "more than {ENDPOINTS_MAX} etcd endpoints"
                )));
            }
            urls.push(url);
        }
        if urls.is_empty() {
            return Err(Error::Config(
                "no etcd endpoints given (use -cluster http://127.0.0.1:2379,...)".into(),
            ));
        }
        let channel_config = ChannelConfig {
            connect_timeout: config.connect_timeout,
            ..ChannelConfig::default()
        };
        let channels: Vec<Channel> = urls
            .iter()
            .map(|url| {
                let address = url.strip_prefix("http://").unwrap_or(url);
                Channel::lazy(address, channel_config.clone())
            })
            .collect();
        Ok(EtcdKv {
            channels: channels.into(),
            next: Arc::new(AtomicUsize::new(0)),
            endpoints: urls,
            config,
        })
    }

    /// The channel for the next attempt (round-robin over the endpoints).
    fn channel(&self) -> KvCalls {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        KvCalls(self.channels[index].clone())
    }

    /// The endpoints this connection uses, as dialed.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Writes `key` = `value` (`Put`); `Ok` once etcd committed and applied it.
    pub async fn put(&self, key: Bytes, value: Bytes) -> Result<(), Error> {
        self.call(true, |kv| {
            let request = PutRequest {
                key: key.clone(),
                value: value.clone(),
                ..PutRequest::default()
            };
            async move { kv.put(request).await.map(|_| ()) }
        })
        .await
    }

    /// Reads `key` linearizably (`Range` with `serializable = false`); `None` if absent.
    pub async fn get(&self, key: Bytes) -> Result<Option<Bytes>, Error> {
        self.call(false, |kv| {
            let request = RangeRequest {
                key: key.clone(),
                serializable: false,
                ..RangeRequest::default()
            };
            async move {
                let response = kv.range(request).await?;
                Ok(response.kvs.into_iter().next().map(|pair| pair.value))
            }
        })
        .await
    }

    /// Checks that the cluster answers a linearizable read (so that it has a leader),
    /// retrying under the deadline; the load generator calls it before its clock starts.
    pub async fn probe(&self) -> Result<(), Error> {
        self.get(Bytes::from_static(b"rkvctl/probe"))
            .await
            .map(|_| ())
            .map_err(|e| match e {
                Error::Unavailable { message, .. } => Error::Unavailable {
                    message: format!("etcd at {}: {message}", self.endpoints.join(",")),
                    outcome_unknown: false,
                },
                other => other,
            })
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retry budget runs out.
    async fn call<T, F, Fut>(&self, is_write: bool, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(KvCalls) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.config.deadline;
        let mut backoff = self.config.backoff_initial;
        let mut last: Option<Status> = None;
        let mut maybe_applied = false;
        for attempt_number in 0..self.config.attempts_max.max(1) {
            let left = deadline.saturating_duration_since(Instant::now());
            // As the rkv client: no retry squeezed into the deadline's last instants.
            if left.is_zero() || (attempt_number > 0 && left < crate::client::ATTEMPT_MIN) {
                break;
            }
            let limit = self.config.attempt_timeout.min(left);
            let status = match tokio::time::timeout(limit, attempt(self.channel())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded(format!("no answer within {limit:?}")),
            };
            if !retryable(&status) {
                return Err(Error::definite(&status));
            }
            maybe_applied |= is_write && !never_connected(&status);
            last = Some(status);
            let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(self.config.backoff_max);
        }
        Err(give_up(last, maybe_applied, self.config.deadline))
    }
}

/// Whether another attempt may succeed: no leader yet, a leader change, an unreachable
/// or overloaded member, an attempt that timed out, or an answer lost on the way back
/// (UNKNOWN from the transport: the write may have been applied).
fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded | Code::Unknown
    )
}

/// Whether a transport failure happened before the request could be sent: the
/// transport marks such calls ([`rkv_grpc::NOT_SENT_KEY`]); a failed connect also says
/// so in these words.
fn never_connected(status: &Status) -> bool {
    if status.metadata().contains_key(rkv_grpc::NOT_SENT_KEY) {
        return true;
    }
    let message = status.message().to_ascii_lowercase();
    status.code() == Code::Unavailable
        && [
            "connection refused",
            "error trying to connect",
            "tcp connect error",
            "dns error",
        ]
        .iter()
        .any(|m| message.contains(m))
}

/// The error a call reports once its retries ran out: after `last`, and with
/// `maybe_applied` if a write attempt reached a member (it may have been applied).
fn give_up(last: Option<Status>, maybe_applied: bool, deadline: Duration) -> Error {
    match last {
        None => Error::Unavailable {
            message: format!("no attempt could be made within {deadline:?}"),
            outcome_unknown: false,
        },
        Some(status) if status.code() == Code::ResourceExhausted && !maybe_applied => {
            Error::Busy(status.message().to_string())
        }
        Some(status) => Error::Unavailable {
            message: format!("{:?}: {}", status.code(), status.message()),
            outcome_unknown: maybe_applied,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex, PoisonError};

    use tonic::{Request, Response};

    use super::pb::kv_server::{Kv, KvServer};
    use super::pb::{KeyValue, PutResponse, RangeResponse};
    use super::*;

    /// The etcd client uses rkv's codec too, so that both systems see the same client.
    #[test]
    fn the_etcd_client_uses_the_same_codec_as_rkvs() {
        let generated = include_str!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
        assert!(generated.contains("rkv_wire::codec::SmallBufferCodec::default()"));
        assert!(!generated.contains("ProstCodec"));
    }

    /// A stand-in etcd: an in-memory map behind the same KV service, which answers
    /// `UNAVAILABLE` ("no leader") to the first `unavailable_first` calls.
    #[derive(Default)]
    struct FakeEtcd {
        pairs: Mutex<BTreeMap<Bytes, Bytes>>,
        unavailable_first: Mutex<u32>,
        serializable_reads: Mutex<u32>,
    }

    impl FakeEtcd {
        fn leaderless(&self) -> Result<(), Status> {
            let mut left = self
                .unavailable_first
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *left > 0 {
                *left -= 1;
                return Err(Status::unavailable("etcdserver: no leader"));
            }
            Ok(())
        }
    }

    #[tonic::async_trait]
    impl Kv for Arc<FakeEtcd> {
        async fn range(
            &self,
            request: Request<RangeRequest>,
        ) -> Result<Response<RangeResponse>, Status> {
            self.leaderless()?;
            let request = request.into_inner();
            if request.serializable {
                *self
                    .serializable_reads
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) += 1;
            }
            let pairs = self.pairs.lock().unwrap_or_else(PoisonError::into_inner);
            let kvs: Vec<KeyValue> = pairs
                .get(&request.key)
                .map(|value| KeyValue {
                    key: request.key.clone(),
                    value: value.clone(),
                    ..KeyValue::default()
                })
                .into_iter()
                .collect();
            Ok(Response::new(RangeResponse {
                count: kvs.len() as i64,
                kvs,
                ..RangeResponse::default()
            }))
        }

        async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
            self.leaderless()?;
            let request = request.into_inner();
            if request.key.is_empty() {
                return Err(Status::invalid_argument("etcdserver: key is not provided"));
            }
            self.pairs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(request.key, request.value);
            Ok(Response::new(PutResponse::default()))
        }
    }

    /// Serves `fake` on a free loopback port; returns its address.
    async fn serve(fake: Arc<FakeEtcd>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener.local_addr().expect("bound address");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(KvServer::new(fake))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        address.to_string()
    }

    fn quick() -> ClientConfig {
        ClientConfig {
            deadline: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(10),
            ..ClientConfig::default()
        }
    }

    #[test]
    fn endpoints_are_read_as_users_write_them() {
        assert_eq!(
            endpoint_url("http://127.0.0.1:2379").as_deref(),
            Ok("http://127.0.0.1:2379")
        );
        assert_eq!(
            endpoint_url("127.0.0.1:2379").as_deref(),
            Ok("http://127.0.0.1:2379")
        );
        assert_eq!(
            endpoint_url(":2379").as_deref(),
            Ok("http://127.0.0.1:2379")
        );
        for bad in ["https://127.0.0.1:2379", "unix://sock", "2379", "host:port"] {
            let e = endpoint_url(bad).expect_err(bad);
            assert_eq!(e.kind(), "config", "{bad}: {e}");
        }
        assert!(endpoint_url("https://h:1").is_err_and(|e| e.to_string().contains("TLS")));
    }

    #[tokio::test]
    async fn puts_and_linearizable_reads_reach_the_kv_service() {
        let fake = Arc::new(FakeEtcd::default());
        let address = serve(fake.clone()).await;
        let etcd = EtcdKv::new([format!("http://{address}")], quick()).expect("endpoint");
        etcd.probe().await.expect("the fake answers");
        assert_eq!(etcd.get(Bytes::from_static(b"k")).await, Ok(None));
        etcd.put(Bytes::from_static(b"k"), Bytes::from_static(b"v"))
            .await
            .expect("put");
        assert_eq!(
            etcd.get(Bytes::from_static(b"k")).await,
            Ok(Some(Bytes::from_static(b"v")))
        );
        assert_eq!(
            *fake
                .serializable_reads
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            0,
            "reads are linearizable (serializable = false)"
        );
    }

    #[tokio::test]
    async fn no_leader_is_retried_and_a_refusal_is_not() {
        let fake = Arc::new(FakeEtcd {
            unavailable_first: Mutex::new(3),
            ..FakeEtcd::default()
        });
        let address = serve(fake.clone()).await;
        let etcd = EtcdKv::new([address.as_str()], quick()).expect("endpoint");
        etcd.put(Bytes::from_static(b"k"), Bytes::from_static(b"v"))
            .await
            .expect("the put succeeds once the fake has a leader");
        let refused = etcd
            .put(Bytes::new(), Bytes::from_static(b"v"))
            .await
            .expect_err("an empty key is refused");
        assert_eq!(refused.kind(), "invalid-argument", "{refused}");
    }

    #[tokio::test]
    async fn an_unreachable_cluster_is_reported_within_the_deadline() {
        // A port that was free a moment ago: nothing listens on it.
        let address = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("address").to_string()
        };
        let config = ClientConfig {
            deadline: Duration::from_millis(300),
            ..quick()
        };
        let etcd = EtcdKv::new([address.as_str()], config).expect("endpoint");
        let started = Instant::now();
        let e = etcd.probe().await.expect_err("nothing listens");
        assert!(started.elapsed() < Duration::from_secs(5), "bounded");
        assert_eq!(e.kind(), "unavailable", "{e}");
        assert!(e.to_string().contains(&address), "{e}");
        let e = etcd
            .put(Bytes::from_static(b"k"), Bytes::from_static(b"v"))
            .await
            .expect_err("nothing listens");
        assert!(
            !e.outcome_unknown(),
            "a write that never reached a member was not applied: {e}"
        );
    }

    #[test]
    fn no_endpoints_is_a_configuration_error() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = runtime.enter();
        let e = EtcdKv::new(Vec::<String>::new(), quick()).expect_err("empty");
        assert!(e.to_string().contains("no etcd endpoints"), "{e}");
    }
}
