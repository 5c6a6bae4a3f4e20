//! [`Client`]: one handle on an rkv cluster that finds the leader, retries what is safe
//! to retry, and makes writes exactly-once.
//!
//! Why it exists: rkvd forwards only rkv.v1 writes and membership calls to its leader;
//! for everything else a follower answers UNAVAILABLE with the leader's id and address
//! (`rkv-leader-id` / `rkv-leader-addr`). Every caller would
//! otherwise re-implement the original rkvctl's loop ("on error, try the next server,
//! with exponential back-off"). Here that loop is written once, bounded, and improved:
//!
//! 1. A call goes to the server believed to lead (initially the first listed).
//! 2. A not-leader answer naming the leader moves the call there at once (the address is
//!    added to the list if it was not in it); one without a hint moves to the next server.
//! 3. Unreachable, stopping or timed-out servers: next server. Busy: the same server.
//!    Both after a back-off that doubles from [`ClientConfig::backoff_initial`] to
//!    [`ClientConfig::backoff_max`].
//! 4. Every call has an overall deadline ([`ClientConfig::deadline`]), a per-attempt
//!    timeout and a cap on attempts; when they run out, the caller gets
//!    [`Error::NotLeader`] or [`Error::Unavailable`], whose `outcome_unknown` says whether a
//!    write may have been applied anyway.
//!
//! Exactly-once writes: the client opens a session (rkv.v1 `OpenSession`, the same
//! sessions as rkvpb `Register`) on its first write and sends `(client_id, seq)` with every
//! write; a retry of the same write reuses the same seq, so the server applies it at most
//! once. If a write finally fails, the session is dropped and the next write opens a new
//! one: the server makes a write with seq n+1 wait for seq n, so a session with a gap
//! would stall. An expired session (`unknown-session`: the write was not applied) is
//! replaced and the write retried transparently.
//!
//! The rkvpb calls ([`Client::register`], [`Client::insert`], [`Client::lookup`],
//! [`Client::reconf`]) are the original's API; the load generator uses them, managing its
//! own session ids and sequence numbers like relab's rkvctl.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use rkv_grpc::{Channel, ChannelConfig};
use rkv_wire::commonpb::ReconfResponse;
use rkv_wire::commonpb::{ReconfRequest, ReconfStatus, ReconfType};
use rkv_wire::paths;
use rkv_wire::rkvpb::{
    InsertRequest, InsertResponse, LookupRequest, LookupResponse, RegisterRequest, RegisterResponse,
};
use rkv_wire::v1::{self, Consistency, Member, StatusResponse, errors};
use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::error::{Error, reason};

/// What rkvd's rkvpb `Lookup` answers for a missing key.
pub const LOOKUP_MISSING: &str = "(none)";

/// Most servers a client tracks (the configured ones plus leader hints).
const SERVERS_MAX: usize = 64;

/// The least time left before the deadline for which a retry is still made.
pub(crate) const ATTEMPT_MIN: Duration = Duration::from_millis(10);

/// Most times one write replaces an expired session before giving up.
const SESSION_RENEWALS_MAX: u32 = 3;

/// Largest response the client accepts, bytes (rkvd's default `-maxgrpc`).
const RESPONSE_BYTES_MAX: usize = 134_217_728;

/// How a [`Client`] retries.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Give up on a call (all its attempts) after this long.
    pub deadline: Duration,
    /// Give up on one attempt after this long (then retry elsewhere).
    pub attempt_timeout: Duration,
    /// Give up on a call after this many attempts, even before the deadline.
    pub attempts_max: u32,
    /// First back-off between attempts.
    pub backoff_initial: Duration,
    /// Longest back-off between attempts.
    pub backoff_max: Duration,
    /// Give up connecting to one server after this long.
    pub connect_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            deadline: Duration::from_secs(15),
            attempt_timeout: Duration::from_secs(5),
            attempts_max: 1000,
            backoff_initial: Duration::from_millis(5),
            backoff_max: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// Turns a Go-style server address into one to dial: `:9201` and `0.0.0.0:9201` mean this
/// machine (127.0.0.1), `[::]:9201` means `[::1]:9201`; a leading `http://` is dropped.
pub fn dialable(address: &str) -> Result<String, Error> {
    let trimmed = address.trim();
    let trimmed = trimmed.strip_prefix("http://").unwrap_or(trimmed);
    let full = if trimmed.starts_with(':') {
        format!("127.0.0.1{trimmed}")
    } else if let Some(port) = trimmed.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = trimmed.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        trimmed.to_string()
    };
    let port = full
        .rsplit_once(':')
        .map(|(host, port)| (host, port.parse::<u16>()));
    match port {
        Some((host, Ok(_))) if !host.is_empty() => Ok(full),
        _ => Err(Error::Config(format!(
            "server address {address:?} is not host:port (e.g. :9201 or 10.0.0.1:9201)"
        ))),
    }
}

struct Server {
    address: String,
    channel: Channel,
}

struct SessionState {
    client_id: u64,
    next_seq: u64,
}

/// A handle on an rkv cluster; see the module docs. Cheap to share by reference; one
/// `Client` keeps one connection per server it has talked to, and one write session.
pub struct Client {
    servers: RwLock<Vec<Server>>,
    leader: AtomicUsize,
    session: Mutex<Option<SessionState>>,
    config: ClientConfig,
}

/// Where to take the next attempt, and what the last one taught.
enum Verdict {
    /// Retrying cannot help.
    Fail(Error),
    /// Not the leader; the leader's address if the server named it.
    NotLeader(Option<String>),
    /// Try another server (after a back-off); `maybe_applied`: the attempt may have taken
    /// effect.
    OtherServer { maybe_applied: bool },
    /// Try the same server again after a back-off (it is busy).
    SameServer,
}

/// Whether a transport failure happened before any request could be sent: the
/// transport marks such calls ([`rkv_grpc::NOT_SENT_KEY`]); a failed connect also says
/// so in these words.
fn never_connected(status: &Status) -> bool {
    if status.metadata().contains_key(rkv_grpc::NOT_SENT_KEY) {
        return true;
    }
    let message = status.message().to_ascii_lowercase();
    reason(status).is_none()
        && [
            "connection refused",
            "error trying to connect",
            "tcp connect error",
            "dns error",
        ]
        .iter()
        .any(|m| message.contains(m))
}

fn classify(status: &Status) -> Verdict {
    let why = reason(status);
    match status.code() {
        Code::Unavailable if why == Some(errors::NOT_LEADER) => Verdict::NotLeader(
            status
                .metadata()
                .get(errors::LEADER_ADDR_KEY)
                .and_then(|v| v.to_str().ok())
                .filter(|a| !a.is_empty())
                .map(str::to_string),
        ),
        Code::Unavailable => Verdict::OtherServer {
            // Nothing was applied for sure only when the server said it stopped before
            // taking the call, or the connection was never made; any other transport
            // failure may have struck after the call was applied.
            maybe_applied: why != Some(errors::STOPPED) && !never_connected(status),
        },
        Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Aborted => {
            Verdict::OtherServer {
                maybe_applied: true,
            }
        }
        Code::ResourceExhausted
            if why == Some(errors::BUSY) || why == Some(errors::SESSION_BUFFER_FULL) =>
        {
            Verdict::SameServer
        }
        Code::FailedPrecondition
            if why == Some(errors::MEMBERSHIP_CHANGE_PENDING)
                || why == Some(errors::NOT_CAUGHT_UP) =>
        {
            Verdict::SameServer
        }
        _ => Verdict::Fail(Error::definite(status)),
    }
}

/// What to do after a call gave up: the error the caller sees.
struct Failure {
    last_status: Option<Status>,
    leader_hint: Option<String>,
    maybe_applied: bool,
}

impl Failure {
    fn into_error(self) -> Error {
        let Some(status) = self.last_status else {
            return Error::Unavailable {
                message: "no attempt could be made before the deadline".into(),
                outcome_unknown: false,
            };
        };
        let why = reason(&status);
        if status.code() == Code::Unavailable && why == Some(errors::NOT_LEADER) {
            return Error::NotLeader {
                leader_hint: self.leader_hint,
                outcome_unknown: self.maybe_applied,
            };
        }
        if status.code() == Code::ResourceExhausted && !self.maybe_applied {
            return Error::Busy(status.message().to_string());
        }
        Error::Unavailable {
            message: format!("{:?}: {}", status.code(), status.message()),
            outcome_unknown: self.maybe_applied,
        }
    }
}

impl Client {
    /// A client of the cluster whose servers are `servers` (Go-style addresses such as
    /// `:9201` or `host:9201`). Connections are made lazily, on first use, so this does
    /// not fail for an unreachable server. Must be called inside a Tokio runtime.
    pub fn new<S: AsRef<str>>(
        servers: impl IntoIterator<Item = S>,
        config: ClientConfig,
    ) -> Result<Client, Error> {
        let mut list: Vec<Server> = Vec::new();
        for address in servers {
            let address = dialable(address.as_ref())?;
            if list.iter().any(|s| s.address == address) {
                continue;
            }
            if list.len() == SERVERS_MAX {
                return Err(Error::Config(format!("more than {SERVERS_MAX} servers")));
            }
            list.push(Server {
                channel: connect_lazy(&address, &config)?,
                address,
            });
        }
        if list.is_empty() {
            return Err(Error::Config(
                "no servers given (use -cluster host:port,...)".into(),
            ));
        }
        Ok(Client {
            servers: RwLock::new(list),
            leader: AtomicUsize::new(0),
            session: Mutex::new(None),
            config,
        })
    }

    /// The addresses this client knows, configured ones first.
    pub fn servers(&self) -> Vec<String> {
        self.read_servers()
            .iter()
            .map(|s| s.address.clone())
            .collect()
    }

    /// The address of the server this client currently believes leads.
    pub fn leader_guess(&self) -> String {
        let servers = self.read_servers();
        let index = self.leader.load(Ordering::Relaxed) % servers.len();
        servers[index].address.clone()
    }

    /// This client's retry settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn read_servers(&self) -> std::sync::RwLockReadGuard<'_, Vec<Server>> {
        self.servers.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn current(&self) -> (usize, Channel) {
        let servers = self.read_servers();
        let index = self.leader.load(Ordering::Relaxed) % servers.len();
        (index, servers[index].channel.clone())
    }

    /// Moves the leader guess past `from` (unless another call moved it already).
    fn advance(&self, from: usize) {
        let count = self.read_servers().len();
        let _ = self.leader.compare_exchange(
            from,
            (from + 1) % count,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The index of `address`, adding it (lazily connected) if it is new and there is room.
    fn index_of(&self, address: &str) -> Option<usize> {
        let address = dialable(address).ok()?;
        if let Some(index) = self
            .read_servers()
            .iter()
            .position(|s| s.address == address)
        {
            return Some(index);
        }
        let channel = connect_lazy(&address, &self.config).ok()?;
        let mut servers = self.servers.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(index) = servers.iter().position(|s| s.address == address) {
            return Some(index);
        }
        if servers.len() >= SERVERS_MAX {
            return None;
        }
        servers.push(Server { address, channel });
        Some(servers.len() - 1)
    }

    /// Runs `attempt` against the leader, retrying as the module docs say.
    async fn call<T, F, Fut>(&self, attempt: F) -> Result<T, Error>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_with(self.config.attempt_timeout, self.config.deadline, attempt)
            .await
    }

    async fn call_with<T, F, Fut>(
        &self,
        attempt_timeout: Duration,
        deadline: Duration,
        mut attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + deadline;
        let mut backoff = self.config.backoff_initial;
        let mut hint_jumps = 0_usize;
        let mut failure = Failure {
            last_status: None,
            leader_hint: None,
            maybe_applied: false,
        };
        for attempt_number in 0..self.config.attempts_max.max(1) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // A retry needs time to reach a server at all: one squeezed into the deadline's
            // last instants would only time out, and a timed-out write counts as maybe
            // applied.
            if remaining.is_zero() || (attempt_number > 0 && remaining < ATTEMPT_MIN) {
                break;
            }
            let (index, channel) = self.current();
            let status = match tokio::time::timeout(
                remaining.min(attempt_timeout),
                attempt(channel),
            )
            .await
            {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded("the attempt timed out"),
            };
            let verdict = classify(&status);
            failure.last_status = Some(status);
            match verdict {
                // A definite refusal of this attempt says nothing about an earlier one
                // that timed out: that one may still have been applied.
                Verdict::Fail(error) if failure.maybe_applied => {
                    return Err(Error::Unavailable {
                        message: format!("{error}, after an attempt that timed out"),
                        outcome_unknown: true,
                    });
                }
                Verdict::Fail(error) => return Err(error),
                Verdict::NotLeader(hint) => {
                    let target = hint.as_deref().and_then(|h| self.index_of(h));
                    failure.leader_hint = hint.or(failure.leader_hint);
                    let server_count = self.read_servers().len();
                    match target {
                        // A fresh hint: go there at once. Bounded, so two servers that
                        // name each other (stale hints) fall back to backing off.
                        Some(to) if to != index && hint_jumps < server_count => {
                            hint_jumps += 1;
                            let _ = self.leader.compare_exchange(
                                index,
                                to,
                                Ordering::Relaxed,
                                Ordering::Relaxed,
                            );
                            continue;
                        }
                        Some(to) if to != index => {
                            let _ = self.leader.compare_exchange(
                                index,
                                to,
                                Ordering::Relaxed,
                                Ordering::Relaxed,
                            );
                        }
                        _ => self.advance(index),
                    }
                }
                Verdict::OtherServer { maybe_applied } => {
                    failure.maybe_applied |= maybe_applied;
                    self.advance(index);
                }
                Verdict::SameServer => {}
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(backoff.min(remaining)).await;
            backoff = (backoff * 2).min(self.config.backoff_max);
        }
        Err(failure.into_error())
    }

    // ----- sessions -----

    async fn open_session(&self) -> Result<u64, Error> {
        self.call(|channel| async move {
            let response = kv(channel).open_session(v1::OpenSessionRequest {}).await?;
            Ok(response.client_id)
        })
        .await
    }

    /// The next (client_id, seq) of this client's session, opening one if needed.
    async fn next_position(&self) -> Result<v1::Session, Error> {
        for _ in 0..SESSION_RENEWALS_MAX {
            {
                let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(state) = session.as_mut() {
                    let seq = state.next_seq;
                    state.next_seq += 1;
                    return Ok(v1::Session {
                        client_id: state.client_id,
                        seq,
                    });
                }
            }
            let client_id = self.open_session().await?;
            let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
            if session.is_none() {
                *session = Some(SessionState {
                    client_id,
                    next_seq: 1,
                });
            }
        }
        Err(Error::Unavailable {
            message: "could not keep a session open".into(),
            outcome_unknown: false,
        })
    }

    fn forget_session(&self, client_id: u64) {
        let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        if session.as_ref().is_some_and(|s| s.client_id == client_id) {
            *session = None;
        }
    }

    /// The current session id, if a write has opened one.
    pub fn session_id(&self) -> Option<u64> {
        self.session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|s| s.client_id)
    }

    /// Runs a session write: one (client_id, seq) for all its retries.
    async fn write<T, F, Fut>(&self, mut send: F) -> Result<T, Error>
    where
        F: FnMut(Channel, v1::Session) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        for _ in 0..SESSION_RENEWALS_MAX {
            // Failing to open a session means the write itself was never sent.
            let position = self.next_position().await.map_err(|e| match e {
                Error::Unavailable { message, .. } => Error::Unavailable {
                    message: format!("opening a session: {message}"),
                    outcome_unknown: false,
                },
                Error::NotLeader { leader_hint, .. } => Error::NotLeader {
                    leader_hint,
                    outcome_unknown: false,
                },
                Error::Timeout(message) => Error::Unavailable {
                    message: format!("opening a session: {message}"),
                    outcome_unknown: false,
                },
                other => other,
            })?;
            let result = self.call(|channel| send(channel, position)).await;
            match result {
                Ok(value) => return Ok(value),
                // Expired: not applied, so a new session may safely retry it.
                Err(Error::UnknownSession(_)) => self.forget_session(position.client_id),
                Err(error) => {
                    // A gap in the sequence would stall the session's later writes.
                    self.forget_session(position.client_id);
                    return Err(error);
                }
            }
        }
        Err(Error::UnknownSession(
            "the server kept forgetting new sessions".into(),
        ))
    }

    // ----- rkv.v1: reads and writes -----

    /// Reads `key` at `consistency`; `None` if the key is absent.
    pub async fn get(
        &self,
        key: impl AsRef<[u8]>,
        consistency: Consistency,
    ) -> Result<Option<Bytes>, Error> {
        let key = Bytes::copy_from_slice(key.as_ref());
        self.call(|channel| {
            let request = v1::GetRequest {
                key: key.clone(),
                consistency: consistency.into(),
            };
            async move { Ok(kv(channel).get(request).await?.value) }
        })
        .await
    }

    /// Sets `key` to `value`, exactly once; returns whether the server had already applied
    /// it (a retry after a lost reply).
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<bool, Error> {
        let key = Bytes::copy_from_slice(key.as_ref());
        let value = Bytes::copy_from_slice(value.as_ref());
        self.write(|channel, session| {
            let request = v1::PutRequest {
                key: key.clone(),
                value: value.clone(),
                session: Some(session),
            };
            async move { Ok(kv(channel).put(request).await?.duplicate) }
        })
        .await
    }

    /// Deletes `key`, exactly once; returns whether it existed (false for a duplicate).
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool, Error> {
        let key = Bytes::copy_from_slice(key.as_ref());
        self.write(|channel, session| {
            let request = v1::DeleteRequest {
                key: key.clone(),
                session: Some(session),
            };
            async move { Ok(kv(channel).delete(request).await?.existed) }
        })
        .await
    }

    /// Sets `key` to `new` (or deletes it if `None`) if and only if it holds `expected`
    /// (`None`: is absent), exactly once.
    pub async fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<CasOutcome, Error> {
        let key = Bytes::copy_from_slice(key.as_ref());
        let expected = expected.map(Bytes::copy_from_slice);
        let new = new.map(Bytes::copy_from_slice);
        self.write(|channel, session| {
            let request = v1::CompareAndSwapRequest {
                key: key.clone(),
                expected: expected.clone(),
                new: new.clone(),
                session: Some(session),
            };
            async move {
                let response = kv(channel).compare_and_swap(request).await?;
                Ok(CasOutcome {
                    swapped: response.swapped,
                    previous: response.previous,
                    duplicate: response.duplicate,
                })
            }
        })
        .await
    }

    /// One page of keys (with values) selected by `selector`, in key order; at most
    /// `limit` pairs (0: the server's maximum).
    pub async fn scan(
        &self,
        selector: Selector,
        limit: u32,
        consistency: Consistency,
    ) -> Result<ScanPage, Error> {
        let selector = match selector {
            Selector::Prefix(prefix) => v1::scan_request::Selector::Prefix(prefix),
            Selector::Range { start, end } => {
                v1::scan_request::Selector::Range(v1::KeyRange { start, end })
            }
        };
        self.call(|channel| {
            let request = v1::ScanRequest {
                selector: Some(selector.clone()),
                limit,
                consistency: consistency.into(),
            };
            async move {
                let response = kv(channel).scan(request).await?;
                Ok(ScanPage {
                    pairs: response
                        .kvs
                        .into_iter()
                        .map(|kv| (kv.key, kv.value))
                        .collect(),
                    more: response.more,
                })
            }
        })
        .await
    }

    /// Every pair under `prefix`, following pages; at most `pairs_max` pairs.
    pub async fn scan_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
        pairs_max: usize,
        consistency: Consistency,
    ) -> Result<Vec<(Bytes, Bytes)>, Error> {
        let prefix = Bytes::copy_from_slice(prefix.as_ref());
        let end = prefix_end(&prefix);
        let mut pairs: Vec<(Bytes, Bytes)> = Vec::new();
        let mut selector = Selector::Prefix(prefix);
        // Bounded: each page adds at least one pair or ends the scan.
        while pairs.len() < pairs_max {
            let page = self.scan(selector, 0, consistency).await?;
            let Some((last, _)) = page.pairs.last() else {
                break;
            };
            let mut start = last.to_vec();
            start.push(0);
            pairs.extend(page.pairs);
            if !page.more {
                break;
            }
            selector = Selector::Range {
                start: start.into(),
                end: end.clone(),
            };
        }
        pairs.truncate(pairs_max);
        Ok(pairs)
    }

    /// Streams committed changes to the keys `filter` selects, from `start_index` (0: from
    /// now on). Any server can serve a watch.
    pub async fn watch(&self, filter: Filter, start_index: u64) -> Result<Watch, Error> {
        let filter = match filter {
            Filter::Key(key) => Some(v1::watch_request::Filter::Key(key)),
            Filter::Prefix(prefix) => Some(v1::watch_request::Filter::Prefix(prefix)),
            Filter::All => None,
        };
        let stream = self
            .call(|channel| {
                let request = v1::WatchRequest {
                    filter: filter.clone(),
                    start_index,
                };
                async move { kv(channel).watch(request).await }
            })
            .await?;
        Ok(Watch { stream })
    }

    // ----- rkv.v1: administration -----

    /// One server's view of the cluster (the first that answers, the leader guess first).
    pub async fn status(&self) -> Result<StatusResponse, Error> {
        self.call(|channel| async move { kv(channel).status(v1::StatusRequest {}).await })
            .await
    }

    /// Every known server's own status, asked once each (no retries), in list order.
    pub async fn status_all(&self) -> Vec<(String, Result<StatusResponse, Error>)> {
        let servers: Vec<(String, Channel)> = self
            .read_servers()
            .iter()
            .map(|s| (s.address.clone(), s.channel.clone()))
            .collect();
        let mut answers = Vec::with_capacity(servers.len());
        for (address, channel) in servers {
            let asked = tokio::time::timeout(
                self.config.attempt_timeout,
                kv(channel).status(v1::StatusRequest {}),
            )
            .await;
            let answer = match asked {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(status)) => Err(match classify(&status) {
                    Verdict::Fail(error) => error,
                    _ => Error::Unavailable {
                        message: format!("{:?}: {}", status.code(), status.message()),
                        outcome_unknown: false,
                    },
                }),
                Err(_) => Err(Error::Unavailable {
                    message: "timed out".into(),
                    outcome_unknown: false,
                }),
            };
            answers.push((address, answer));
        }
        answers
    }

    /// The members (voters and learners), in id order.
    pub async fn member_list(&self) -> Result<Vec<Member>, Error> {
        self.call(|channel| async move {
            Ok(kv(channel)
                .member_list(v1::MemberListRequest::default())
                .await?
                .members)
        })
        .await
    }

    /// Adds server `id` (its 1-based position in the servers' `-servers`) as a learner,
    /// promoted once caught up unless `as_learner`; returns the members after the change.
    pub async fn member_add(
        &self,
        id: u64,
        address: &str,
        as_learner: bool,
    ) -> Result<Vec<Member>, Error> {
        let address = address.to_string();
        self.call(|channel| {
            let request = v1::MemberAddRequest {
                id,
                address: address.clone(),
                as_learner,
            };
            async move { Ok(kv(channel).member_add(request).await?.members) }
        })
        .await
    }

    /// Removes member `id`; returns the members after the change.
    pub async fn member_remove(&self, id: u64) -> Result<Vec<Member>, Error> {
        self.call(|channel| async move {
            Ok(kv(channel)
                .member_remove(v1::MemberRemoveRequest { id })
                .await?
                .members)
        })
        .await
    }

    /// Promotes learner `id` to voter; returns the members after the change.
    pub async fn member_promote(&self, id: u64) -> Result<Vec<Member>, Error> {
        self.call(|channel| async move {
            Ok(kv(channel)
                .member_promote(v1::MemberPromoteRequest { id })
                .await?
                .members)
        })
        .await
    }

    /// Hands leadership to voter `target` (0: the leader picks); returns the new leader's
    /// id (0 if the transfer did not finish in the server's wait).
    pub async fn transfer_leader(&self, target: u64) -> Result<u64, Error> {
        self.call(|channel| async move {
            Ok(kv(channel)
                .transfer_leader(v1::TransferLeaderRequest { target_id: target })
                .await?
                .leader_id)
        })
        .await
    }

    // ----- rkvpb: the original's API -----

    /// Opens an rkvpb session (`Register`); returns its client id.
    pub async fn register(&self) -> Result<u64, Error> {
        self.call(|channel| async move {
            Ok(rkv(channel).register(RegisterRequest {}).await?.client_id)
        })
        .await
    }

    /// Writes `key` = `value` as write `seq` of session `client_id` (`Insert`); retries
    /// reuse the same seq, so it is applied at most once.
    pub async fn insert(
        &self,
        client_id: u64,
        seq: u64,
        key: &str,
        value: &str,
    ) -> Result<(), Error> {
        self.call(|channel| {
            let request = InsertRequest {
                client_id,
                client_seq: seq,
                key: key.to_string(),
                value: value.to_string(),
            };
            async move {
                rkv(channel).insert(request).await?;
                Ok(())
            }
        })
        .await
    }

    /// A linearizable read (`Lookup`); `None` if the key is absent (rkvd answers
    /// "(none)", which this maps to `None`).
    pub async fn lookup(&self, key: &str) -> Result<Option<String>, Error> {
        let value = self
            .call(|channel| {
                let request = LookupRequest {
                    key: key.to_string(),
                };
                async move { Ok(rkv(channel).lookup(request).await?.value) }
            })
            .await?;
        Ok((value != LOOKUP_MISSING).then_some(value))
    }

    /// Asks the leader to add or remove server `server_id` (`Reconf`), following
    /// not-leader answers; `Ok` once the change committed, [`Error::Timeout`] if the
    /// leader gave up waiting for it (for an add: the new server did not catch up, or the
    /// change is invalid). Waits up to `deadline` in all.
    pub async fn reconf(
        &self,
        server_id: u64,
        kind: ReconfType,
        deadline: Duration,
    ) -> Result<(), Error> {
        // rkvd waits up to 30 s for a change (an added server must catch up first).
        let attempt_timeout = Duration::from_secs(40).min(deadline);
        self.call_with(attempt_timeout, deadline, |channel| async move {
            let response = rkv(channel)
                .reconf(ReconfRequest {
                    server_id,
                    reconf_type: kind.into(),
                })
                .await?;
            match ReconfStatus::try_from(response.status) {
                Ok(ReconfStatus::ReconfOk) => Ok(Ok(())),
                Ok(ReconfStatus::ReconfNotLeader) => Err(not_leader(&response.leader_hint)),
                Ok(ReconfStatus::ReconfTimeout) => Ok(Err(Error::Timeout(format!(
                    "the {} of server {server_id} did not commit in time, or is invalid",
                    if kind == ReconfType::ReconfAdd {
                        "addition"
                    } else {
                        "removal"
                    }
                )))),
                Err(_) => Ok(Err(Error::Rpc {
                    code: Code::Unknown,
                    message: format!("unknown reconfiguration status {}", response.status),
                })),
            }
        })
        .await?
    }
}

/// A not-leader status like rkvd's, for rkvpb answers that carry the hint in the body.
fn not_leader(leader_hint: &str) -> Status {
    let mut status = Status::unavailable("not the leader");
    status.metadata_mut().insert(
        errors::ERROR_KEY,
        MetadataValue::from_static(errors::NOT_LEADER),
    );
    if let Ok(value) = MetadataValue::try_from(leader_hint) {
        status.metadata_mut().insert(errors::LEADER_ADDR_KEY, value);
    }
    status
}

fn connect_lazy(address: &str, config: &ClientConfig) -> Result<Channel, Error> {
    Ok(Channel::lazy(
        address,
        ChannelConfig {
            connect_timeout: config.connect_timeout,
            max_response_bytes: RESPONSE_BYTES_MAX,
            ..ChannelConfig::default()
        },
    ))
}

/// Defines typed unary calls of a service on a channel, by path.
macro_rules! unary_calls {
    ($($name:ident: $path:expr, $request:ty => $response:ty;)*) => {$(
        async fn $name(&self, request: $request) -> Result<$response, Status> {
            self.0.unary($path, &request).await
        }
    )*};
}

/// `rkv.v1.Kv`'s calls on a channel.
struct KvCalls(Channel);

impl KvCalls {
    unary_calls! {
        get: paths::v1::GET, v1::GetRequest => v1::GetResponse;
        put: paths::v1::PUT, v1::PutRequest => v1::PutResponse;
        delete: paths::v1::DELETE, v1::DeleteRequest => v1::DeleteResponse;
        compare_and_swap: paths::v1::COMPARE_AND_SWAP,
            v1::CompareAndSwapRequest => v1::CompareAndSwapResponse;
        scan: paths::v1::SCAN, v1::ScanRequest => v1::ScanResponse;
        open_session: paths::v1::OPEN_SESSION, v1::OpenSessionRequest => v1::OpenSessionResponse;
        member_list: paths::v1::MEMBER_LIST, v1::MemberListRequest => v1::MemberListResponse;
        member_add: paths::v1::MEMBER_ADD, v1::MemberAddRequest => v1::MemberAddResponse;
        member_remove: paths::v1::MEMBER_REMOVE,
            v1::MemberRemoveRequest => v1::MemberRemoveResponse;
        member_promote: paths::v1::MEMBER_PROMOTE,
            v1::MemberPromoteRequest => v1::MemberPromoteResponse;
        transfer_leader: paths::v1::TRANSFER_LEADER,
            v1::TransferLeaderRequest => v1::TransferLeaderResponse;
        status: paths::v1::STATUS, v1::StatusRequest => StatusResponse;
    }

    async fn watch(
        &self,
        request: v1::WatchRequest,
    ) -> Result<rkv_grpc::Streaming<v1::WatchResponse>, Status> {
        self.0.server_streaming(paths::v1::WATCH, &request).await
    }
}

/// `rkvpb.RKV`'s calls on a channel.
struct RkvCalls(Channel);

impl RkvCalls {
    unary_calls! {
        register: paths::rkvpb::REGISTER, RegisterRequest => RegisterResponse;
        insert: paths::rkvpb::INSERT, InsertRequest => InsertResponse;
        lookup: paths::rkvpb::LOOKUP, LookupRequest => LookupResponse;
        reconf: paths::rkvpb::RECONF, ReconfRequest => ReconfResponse;
    }
}

fn kv(channel: Channel) -> KvCalls {
    KvCalls(channel)
}

fn rkv(channel: Channel) -> RkvCalls {
    RkvCalls(channel)
}

/// The first key after every key that starts with `prefix` (empty: no such key).
fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end.into();
        }
    }
    Bytes::new()
}

/// Which keys a [`Client::scan`] reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Every key that starts with these bytes.
    Prefix(Bytes),
    /// Keys in `[start, end)`; an empty `end` means "to the last key".
    Range {
        /// First key, inclusive.
        start: Bytes,
        /// End, exclusive (empty: unbounded).
        end: Bytes,
    },
}

/// One page of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPage {
    /// The pairs, in key order.
    pub pairs: Vec<(Bytes, Bytes)>,
    /// More keys matched than were returned.
    pub more: bool,
}

/// The result of a compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the value matched and was replaced.
    pub swapped: bool,
    /// The value before (absent if the key was absent, or for a duplicate).
    pub previous: Option<Bytes>,
    /// A retry of a write the server had already applied (`swapped` is then unknown).
    pub duplicate: bool,
}

/// Which keys a [`Client::watch`] follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Exactly this key.
    Key(Bytes),
    /// Every key that starts with these bytes.
    Prefix(Bytes),
    /// Every key.
    All,
}

/// A stream of committed changes from [`Client::watch`].
pub struct Watch {
    stream: rkv_grpc::Streaming<v1::WatchResponse>,
}

impl Watch {
    /// The next batch of changes, in log order; `Ok(None)` when the server ended the
    /// stream (it is shutting down: watch again, from the last index + 1).
    pub async fn next(&mut self) -> Result<Option<Vec<v1::Event>>, Error> {
        match self.stream.message().await {
            Ok(Some(response)) => Ok(Some(response.events)),
            Ok(None) => Ok(None),
            Err(status) => Err(match classify(&status) {
                Verdict::Fail(error) => error,
                _ => Error::Unavailable {
                    message: status.message().to_string(),
                    outcome_unknown: false,
                },
            }),
        }
    }
}

/// Parses a consistency level as rkvctl spells it: `linearizable`, `lease` or `stale`.
pub fn parse_consistency(text: &str) -> Result<Consistency, String> {
    match text {
        "linearizable" | "l" => Ok(Consistency::Linearizable),
        "lease" => Ok(Consistency::Lease),
        "stale" | "s" => Ok(Consistency::Stale),
        other => Err(format!(
            "unknown consistency {other:?}: use linearizable, lease or stale"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_addresses_become_dialable() {
        assert_eq!(dialable(":9201").as_deref(), Ok("127.0.0.1:9201"));
        assert_eq!(dialable("0.0.0.0:9201").as_deref(), Ok("127.0.0.1:9201"));
        assert_eq!(dialable("[::]:9201").as_deref(), Ok("[::1]:9201"));
        assert_eq!(dialable("http://host:1").as_deref(), Ok("host:1"));
        assert!(dialable("9201").is_err());
        assert!(dialable("host:port").is_err());
        assert!(dialable("").is_err());
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"ab"), Bytes::from_static(b"ac"));
        assert_eq!(prefix_end(b"a\xff"), Bytes::from_static(b"b"));
        assert_eq!(prefix_end(b"\xff\xff"), Bytes::new());
    }

    #[test]
    fn not_leader_answers_carry_the_hint() {
        match classify(&not_leader("127.0.0.1:1")) {
            Verdict::NotLeader(Some(hint)) => assert_eq!(hint, "127.0.0.1:1"),
            _ => panic!("a not-leader status with a hint"),
        }
        assert!(matches!(
            classify(&not_leader("")),
            Verdict::NotLeader(None)
        ));
        assert!(matches!(
            classify(&Status::unavailable("connection refused")),
            Verdict::OtherServer {
                maybe_applied: false
            }
        ));
        assert!(matches!(
            classify(&Status::invalid_argument("too big")),
            Verdict::Fail(Error::InvalidArgument(_))
        ));
    }

    #[tokio::test]
    async fn a_refusal_after_a_timed_out_attempt_leaves_the_outcome_unknown() {
        let config = ClientConfig {
            backoff_initial: Duration::from_millis(1),
            ..ClientConfig::default()
        };
        let client = Client::new(["127.0.0.1:1"], config).expect("valid address");
        for (first, definite) in [(true, false), (false, true)] {
            let mut attempt = 0;
            let result: Result<(), Error> = client
                .call(|_channel| {
                    attempt += 1;
                    let timed_out = first && attempt == 1;
                    async move {
                        Err(if timed_out {
                            Status::deadline_exceeded("the attempt timed out")
                        } else {
                            Status::invalid_argument("refused")
                        })
                    }
                })
                .await;
            let error = result.expect_err("every attempt fails");
            assert_eq!(error.outcome_unknown(), !definite, "{error}");
            assert_eq!(
                matches!(error, Error::InvalidArgument(_)),
                definite,
                "{error}"
            );
        }
    }

    #[tokio::test]
    async fn an_unreachable_cluster_fails_by_the_deadline() {
        // Port 1 on loopback refuses connections.
        let config = ClientConfig {
            deadline: Duration::from_millis(300),
            ..ClientConfig::default()
        };
        let client = Client::new(["127.0.0.1:1"], config).expect("valid address");
        let started = Instant::now();
        let error = client
            .get("k", Consistency::Linearizable)
            .await
            .expect_err("nobody listens");
        assert_eq!(error.kind(), "unavailable", "{error}");
        assert!(!error.outcome_unknown());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
