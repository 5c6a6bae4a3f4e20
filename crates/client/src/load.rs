//! The load generator behind `rkvctl` without a command: relab's rkvctl workload, and the
//! measurements the experiments need.
//!
//! Why it is shaped this way:
//! - **Open loop by default** (`-throughput N`): each client sends N requests per second
//!   on a timer, whether or not earlier replies arrived, as the original did; latency
//!   then shows queueing instead of hiding it by slowing the sender. A missed tick is
//!   sent late rather than dropped, so the offered rate holds. The clients' timers are
//!   spread evenly over one period, so that N clients offer a steady load rather than a
//!   burst of N requests at the start of every period. `-throughput 0` is the **closed
//!   loop** the etcd comparison uses: each client sends its next request when the reply
//!   to the previous one arrives.
//! - **One rkvpb session per client** (`Register`, then `Insert` with (clientID, seq)),
//!   reads with `Lookup`, and by default one [`Client`] (so one connection per server)
//!   per client, like the original. `-connections N` shares N connections among the
//!   clients instead (like etcd's benchmark `--conns`): on a small machine, fewer HTTP/2
//!   connections cost both sides less CPU per request. A retried write reuses its seq: exactly once. A write that finally
//!   fails leaves a gap its session could not pass, so the client registers anew.
//! - **Keys** are Zipf-distributed ([`crate::zipf`]) over `-keyspace` keys, each client
//!   seeded with `-seed` + its index, so a run's key sequence is reproducible.
//!   A key is its number in decimal, zero-padded to 8 digits; the value fills the request
//!   up to `-payload` bytes (key + value).
//! - **Measurements**: HdrHistograms of successful reads and writes (microseconds, 3
//!   significant digits), errors counted by [`Error::kind`], and one CSV row per request
//!   (start in unix nanoseconds, latency in nanoseconds, kind, ok), capped at
//!   [`RECORDS_MAX`] rows. Every run ends with [`Report::summary_line`].
//!
//! - **Two targets** (`-target`): rkv, as above, or etcd ([`Target::Etcd`]) through its
//!   v3 gRPC KV API ([`EtcdKv`]): a write is a `Put`, a read a linearizable `Range`.
//!   Everything else is the same code: the clients, the connections (one per client, or
//!   `-connections N` shared), the keys and values, open and closed loop, the histograms
//!   and the summary line, so that both systems see exactly the same load from the same
//!   process design. etcd has no sessions: instead of `Register`, each etcd client makes
//!   one linearizable read before the clock starts, which also waits for a leader.
//!
//! Limits: at most [`IN_FLIGHT_MAX`] requests in flight over all clients (an open-loop
//! tick beyond it is counted as a `max-in-flight` error, as the original refused it), and
//! every request is bounded by the client's deadline, so the final drain ends.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use bytes::Bytes;

use crate::client::{Client, ClientConfig};
use crate::error::Error;
use crate::etcd::EtcdKv;
use crate::zipf::{Rng, Zipf};

/// Most requests in flight over all clients (the original's `maxInFlight`).
pub const IN_FLIGHT_MAX: u64 = 50_000;

/// Most per-request rows kept for the latency CSV (about 24 bytes each in memory);
/// later requests are still measured, only not written out row by row.
pub const RECORDS_MAX: usize = 5_000_000;

/// Smallest `-payload`: the original refused less.
pub const PAYLOAD_MIN: usize = 16;

/// Width of a key: decimal, zero-padded.
const KEY_DIGITS: usize = 8;

/// Longest latency the histograms resolve (longer ones count as this).
const LATENCY_MAX_US: u64 = 3_600_000_000;

/// When a load run stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// After this many requests per client (`-count`).
    Count(u64),
    /// After this long (`-time`).
    Time(Duration),
    /// When interrupted (`-forever`).
    Forever,
}

/// The system a load run drives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Target {
    /// An rkv cluster, through the original's rkvpb API (`Register`, `Insert`, `Lookup`).
    #[default]
    Rkv,
    /// An etcd v3 cluster, through its gRPC KV API (`Put`, linearizable `Range`).
    Etcd,
}

impl Target {
    /// `rkv` or `etcd`, as `-target` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Target::Rkv => "rkv",
            Target::Etcd => "etcd",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Target, String> {
        match text {
            "rkv" => Ok(Target::Rkv),
            "etcd" => Ok(Target::Etcd),
            other => Err(format!("unknown target {other:?}: rkv or etcd")),
        }
    }
}

/// A load run's settings (rkvctl's flags, resolved).
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Concurrent clients, each with its own session.
    pub clients: u32,
    /// Requests per second per client (open loop); 0: closed loop.
    pub throughput: f64,
    /// When to stop.
    pub limit: Limit,
    /// Number of distinct keys.
    pub keyspace: u64,
    /// Zipf exponent s (> 1).
    pub zipf_s: f64,
    /// Zipf offset v (>= 1).
    pub zipf_v: f64,
    /// Bytes per request: key plus value (at least [`PAYLOAD_MIN`]).
    pub payload: usize,
    /// Fraction of requests that are reads, 0..=1.
    pub reads: f64,
    /// Client i draws keys and read/write choices from seed + i.
    pub seed: u64,
    /// Connections (one [`Client`] each) shared round-robin by the clients; 0: one per
    /// client, as the original.
    pub connections: u32,
    /// How each client retries.
    pub client: ClientConfig,
    /// The system to drive.
    pub target: Target,
}

impl LoadConfig {
    /// Checks the settings, with a message naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.clients == 0 {
            return Err("-clients must be at least 1".into());
        }
        if !(self.throughput.is_finite() && self.throughput >= 0.0) {
            return Err("-throughput must be a rate >= 0 (0: closed loop)".into());
        }
        if self.keyspace == 0 {
            return Err("-keyspace must be at least 1".into());
        }
        if Zipf::new(self.zipf_s, self.zipf_v, 0).is_none() {
            return Err(format!(
                "-zipfs must be > 1 and -zipfv >= 1 (got {} and {})",
                self.zipf_s, self.zipf_v
            ));
        }
        if self.payload < PAYLOAD_MIN {
            return Err(format!(
                "-payload must be at least {PAYLOAD_MIN} bytes (got {})",
                self.payload
            ));
        }
        if !(0.0..=1.0).contains(&self.reads) {
            return Err(format!("-reads is a fraction in 0..1 (got {})", self.reads));
        }
        if self.limit == Limit::Time(Duration::ZERO) {
            return Err("-time must be positive".into());
        }
        Ok(())
    }
}

/// Read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A `Lookup` (rkv) or linearizable `Range` (etcd).
    Read,
    /// An `Insert` (rkv) or `Put` (etcd).
    Write,
}

impl Kind {
    /// `read` or `write`, as in the CSV.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
        }
    }
}

/// One request, as the latency CSV has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// When it was sent, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// How long until its answer (or final error), nanoseconds.
    pub latency_nanos: u64,
    /// Read or write.
    pub kind: Kind,
    /// Whether it succeeded.
    pub ok: bool,
}

/// Live counters, for a progress line while the run goes on.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests finished successfully.
    pub ok: AtomicU64,
    /// Requests finished with an error (or refused for too many in flight).
    pub errors: AtomicU64,
    /// Requests sent and not yet answered.
    pub in_flight: AtomicU64,
}

struct Results {
    reads: Histogram<u64>,
    writes: Histogram<u64>,
    errors: BTreeMap<&'static str, u64>,
    records: Vec<Record>,
    records_dropped: u64,
}

/// What every client shares: the live counters, the results, and the clock base.
struct Shared {
    counters: Arc<Counters>,
    results: Mutex<Results>,
    base_instant: Instant,
    base_unix_nanos: u64,
}

impl Shared {
    fn unix_nanos(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.base_instant).as_nanos();
        self.base_unix_nanos
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    fn record(&self, kind: Kind, started: Instant, latency: Duration, outcome: Result<(), Error>) {
        let ok = outcome.is_ok();
        let counter = if ok {
            &self.counters.ok
        } else {
            &self.counters.errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let latency_nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let row = Record {
            start_unix_nanos: self.unix_nanos(started),
            latency_nanos,
            kind,
            ok,
        };
        let mut results = self.results.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Ok(()) => {
                let micros = (latency_nanos / 1000).clamp(1, LATENCY_MAX_US);
                let histogram = match kind {
                    Kind::Read => &mut results.reads,
                    Kind::Write => &mut results.writes,
                };
                histogram.saturating_record(micros);
            }
            Err(error) => *results.errors.entry(error.kind()).or_default() += 1,
        }
        if results.records.len() < RECORDS_MAX {
            results.records.push(row);
        } else {
            results.records_dropped += 1;
        }
    }

    fn refuse(&self) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        let mut results = self.results.lock().unwrap_or_else(PoisonError::into_inner);
        *results.errors.entry("max-in-flight").or_default() += 1;
    }
}

struct SessionState {
    client_id: u64,
    next_seq: u64,
}

/// How one simulated client reaches its target.
enum Backend {
    /// rkv: a (possibly shared) [`Client`] and this client's own rkvpb session.
    Rkv(RkvSession),
    /// etcd: a (possibly shared) connection, and the value every write sends.
    Etcd { etcd: Arc<EtcdKv>, value: Bytes },
}

/// One simulated client: how it reaches its target, and where it records what it saw.
struct Worker {
    backend: Backend,
    shared: Arc<Shared>,
}

/// One simulated rkv client: its connection and its rkvpb session.
struct RkvSession {
    client: Arc<Client>,
    session: Mutex<Option<SessionState>>,
    value: String,
}

impl RkvSession {
    /// The next (client id, seq), registering a session first if there is none.
    async fn position(&self) -> Result<(u64, u64), Error> {
        {
            let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(state) = session.as_mut() {
                let seq = state.next_seq;
                state.next_seq += 1;
                return Ok((state.client_id, seq));
            }
        }
        let client_id = self.client.register().await?;
        let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let state = session.get_or_insert(SessionState {
            client_id,
            next_seq: 1,
        });
        let seq = state.next_seq;
        state.next_seq += 1;
        Ok((state.client_id, seq))
    }

    fn forget_session(&self, client_id: u64) {
        let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        if session.as_ref().is_some_and(|s| s.client_id == client_id) {
            *session = None;
        }
    }

    async fn write(&self, key: &str) -> Result<(), Error> {
        let (client_id, seq) = self.position().await?;
        let result = self.client.insert(client_id, seq, key, &self.value).await;
        if result.is_err() {
            // This seq may never arrive: later ones would wait for it forever.
            self.forget_session(client_id);
        }
        result
    }
}

impl Worker {
    async fn perform(&self, kind: Kind, key: String) {
        let counters = &self.shared.counters;
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let outcome = match (&self.backend, kind) {
            (Backend::Rkv(rkv), Kind::Read) => rkv.client.lookup(&key).await.map(|_| ()),
            (Backend::Rkv(rkv), Kind::Write) => rkv.write(&key).await,
            (Backend::Etcd { etcd, .. }, Kind::Read) => etcd.get(key.into()).await.map(|_| ()),
            (Backend::Etcd { etcd, value }, Kind::Write) => {
                etcd.put(key.into(), value.clone()).await
            }
        };
        let latency = started.elapsed();
        counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.shared.record(kind, started, latency, outcome);
    }
}

/// The workload one client draws from.
struct Workload {
    rng: Rng,
    zipf: Zipf,
    reads: f64,
}

impl Workload {
    fn next(&mut self) -> (Kind, String) {
        // Draw the kind first and the key second, always both, so the key sequence of a
        // seed does not depend on -reads.
        let kind = if self.rng.next_f64() < self.reads {
            Kind::Read
        } else {
            Kind::Write
        };
        (kind, key_name(self.zipf.sample(&mut self.rng)))
    }
}

/// The key for key number `k`.
pub fn key_name(k: u64) -> String {
    format!("{k:0KEY_DIGITS$}")
}

/// What a load run measured.
pub struct Report {
    /// From the first request sent to the last answer received.
    pub elapsed: Duration,
    /// Latencies of successful reads, microseconds.
    pub reads: Histogram<u64>,
    /// Latencies of successful writes, microseconds.
    pub writes: Histogram<u64>,
    /// Failed requests by [`Error::kind`] (plus `max-in-flight`).
    pub errors: BTreeMap<&'static str, u64>,
    /// One row per request, in completion order (at most [`RECORDS_MAX`]).
    pub records: Vec<Record>,
    /// Requests not kept as rows because of [`RECORDS_MAX`].
    pub records_dropped: u64,
}

impl Report {
    /// Successful requests.
    pub fn ok(&self) -> u64 {
        self.reads.len() + self.writes.len()
    }

    /// Failed requests.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Successful requests per second over the run.
    pub fn ops_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.ok() as f64 / seconds
        } else {
            0.0
        }
    }

    /// Reads and writes together.
    pub fn all(&self) -> Histogram<u64> {
        let mut all = self.reads.clone();
        // Both have the same bounds, so adding cannot fail.
        let _ = all.add(&self.writes);
        all
    }

    /// The run's last line: `ops/s: 41234 p50_ms: 1.92 p99_ms: 8.71 errors: 0`.
    pub fn summary_line(&self) -> String {
        let all = self.all();
        summary_line(
            self.ops_per_second(),
            micros(all.value_at_quantile(0.50)),
            micros(all.value_at_quantile(0.99)),
            self.error_count(),
        )
    }

    /// The human-readable report printed above the summary line: one line each for
    /// writes, reads and both together (`all:`), with p50, p90, p99, p99.9 and max.
    pub fn details(&self) -> String {
        let seconds = self.elapsed.as_secs_f64();
        let mut text = format!(
            "run: {seconds:.2} s, {} ok, {} errors\n",
            self.ok(),
            self.error_count()
        );
        let all = self.all();
        for (name, histogram) in [
            ("writes", &self.writes),
            ("reads", &self.reads),
            ("all", &all),
        ] {
            if histogram.is_empty() {
                text.push_str(&format!("{name}: none\n"));
                continue;
            }
            let ms = |q: f64| micros(histogram.value_at_quantile(q)).as_secs_f64() * 1e3;
            text.push_str(&format!(
                "{name}: {} ok, {:.0} ops/s, latency ms: p50 {:.2} p90 {:.2} p99 {:.2} \
                 p99.9 {:.2} max {:.2}\n",
                histogram.len(),
                histogram.len() as f64 / seconds.max(f64::MIN_POSITIVE),
                ms(0.5),
                ms(0.9),
                ms(0.99),
                ms(0.999),
                micros(histogram.max()).as_secs_f64() * 1e3,
            ));
        }
        if self.errors.is_empty() {
            text.push_str("errors by kind: none\n");
        } else {
            let kinds: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            text.push_str(&format!("errors by kind: {}\n", kinds.join(", ")));
        }
        text
    }

    /// Writes the per-request CSV as `latency-<unix nanos>.csv` in `dir`; returns its path.
    pub fn write_csv(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = dir.join(format!("latency-{now}.csv"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        writeln!(out, "start_unix_nanos,latency_nanos,kind,ok")?;
        for r in &self.records {
            writeln!(
                out,
                "{},{},{},{}",
                r.start_unix_nanos,
                r.latency_nanos,
                r.kind.name(),
                r.ok
            )?;
        }
        out.flush()?;
        Ok(path)
    }
}

fn micros(value: u64) -> Duration {
    Duration::from_micros(value)
}

/// Formats the run's last line, exactly `ops/s: 41234 p50_ms: 1.92 p99_ms: 8.71 errors: 0`:
/// whole operations per second, milliseconds with two decimals.
pub fn summary_line(ops_per_second: f64, p50: Duration, p99: Duration, errors: u64) -> String {
    format!(
        "ops/s: {:.0} p50_ms: {:.2} p99_ms: {:.2} errors: {errors}",
        ops_per_second,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
    )
}

fn histogram() -> Histogram<u64> {
    // Bounds are constants known to be valid.
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).unwrap_or_else(|_| unreachable!())
}

/// Runs the load described by `config` against `servers` until its limit, or until
/// `stop` turns true (e.g. on Ctrl-C); then waits for the requests in flight and reports.
/// `servers` are rkv servers or etcd endpoints, as `config.target` says. Fails only if a
/// client cannot open its session (rkv) or get an answer from etcd before the clock starts.
pub async fn run(
    servers: &[String],
    config: &LoadConfig,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> Result<Report, Error> {
    config.validate().map_err(Error::Config)?;
    let zipf = Zipf::new(config.zipf_s, config.zipf_v, config.keyspace - 1)
        .ok_or_else(|| Error::Config("invalid Zipf parameters".into()))?;
    let shared = Arc::new(Shared {
        counters,
        results: Mutex::new(Results {
            reads: histogram(),
            writes: histogram(),
            errors: BTreeMap::new(),
            records: Vec::new(),
            records_dropped: 0,
        }),
        base_instant: Instant::now(),
        base_unix_nanos: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
    });
    let value = "x".repeat(config.payload.saturating_sub(KEY_DIGITS));
    let backends = match config.target {
        Target::Rkv => rkv_sessions(servers, config, value).await?,
        Target::Etcd => etcd_connections(servers, config, value).await?,
    };
    let workers: Vec<Arc<Worker>> = backends
        .into_iter()
        .map(|backend| {
            Arc::new(Worker {
                backend,
                shared: shared.clone(),
            })
        })
        .collect();

    // The run's own stop: the caller's, or the -time limit.
    let (stop_all, stopped) = watch::channel(false);
    let time_limit = match config.limit {
        Limit::Time(t) => Some(t),
        _ => None,
    };
    let started = Instant::now();
    let mut clients = JoinSet::new();
    for (index, worker) in workers.into_iter().enumerate() {
        let workload = Workload {
            rng: Rng::new(config.seed.wrapping_add(index as u64)),
            zipf: zipf.clone(),
            reads: config.reads,
        };
        let count = match config.limit {
            Limit::Count(n) => n,
            _ => u64::MAX,
        };
        let stopped = stopped.clone();
        if config.throughput > 0.0 {
            let period = Duration::from_secs_f64(1.0 / config.throughput);
            // Client i starts i/clients of a period late: the clients' timers are spread
            // over the period, so the offered load is smooth, not all clients at once.
            let first_at = started + period.mul_f64(index as f64 / f64::from(config.clients));
            clients.spawn(open_loop(
                worker, workload, first_at, period, count, stopped,
            ));
        } else {
            clients.spawn(closed_loop(worker, workload, count, stopped));
        }
    }
    let deadline = time_limit.map(|t| started + t);
    let mut caller_may_stop = true;
    if *stop.borrow_and_update() {
        let _ = stop_all.send(true);
    }
    let mut deadline_pending = deadline.is_some();
    loop {
        tokio::select! {
            joined = clients.join_next() => {
                if joined.is_none() {
                    break;
                }
            }
            changed = stop.changed(), if caller_may_stop => match changed {
                Ok(()) if *stop.borrow() => {
                    let _ = stop_all.send(true);
                }
                Ok(()) => {}
                Err(_) => caller_may_stop = false,
            },
            _ = sleep_until(deadline), if deadline_pending => {
                deadline_pending = false;
                let _ = stop_all.send(true);
            }
        }
    }
    let elapsed = started.elapsed();
    let results = Arc::try_unwrap(shared)
        .map_err(|_| Error::Internal("a client outlived the run".into()))?
        .results
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    Ok(Report {
        elapsed,
        reads: results.reads,
        writes: results.writes,
        errors: results.errors,
        records: results.records,
        records_dropped: results.records_dropped,
    })
}

/// How many connections the clients share: one each unless `-connections` asks for fewer.
fn pool_size(config: &LoadConfig) -> usize {
    match config.connections {
        0 => config.clients,
        n => n.min(config.clients),
    }
    .max(1) as usize
}

/// One rkv session per client, all opened before the clock starts, on connections
/// shared round-robin if `-connections` asks for fewer than one per client.
async fn rkv_sessions(
    servers: &[String],
    config: &LoadConfig,
    value: String,
) -> Result<Vec<Backend>, Error> {
    let pool = (0..pool_size(config))
        .map(|_| Client::new(servers, config.client.clone()).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sessions = JoinSet::new();
    for index in 0..config.clients as usize {
        let client = pool[index % pool.len()].clone();
        sessions.spawn(async move {
            let client_id = client.register().await?;
            Ok::<_, Error>((client, client_id))
        });
    }
    let mut backends = Vec::with_capacity(config.clients as usize);
    while let Some(joined) = sessions.join_next().await {
        let (client, client_id) = joined.map_err(|e| Error::Internal(e.to_string()))??;
        backends.push(Backend::Rkv(RkvSession {
            client,
            session: Mutex::new(Some(SessionState {
                client_id,
                next_seq: 1,
            })),
            value: value.clone(),
        }));
    }
    Ok(backends)
}

/// One etcd connection per client (or `-connections` shared round-robin), each client
/// having made one linearizable read before the clock starts: the counterpart of rkv's
/// `Register`, which also waits for the cluster to have a leader.
async fn etcd_connections(
    endpoints: &[String],
    config: &LoadConfig,
    value: String,
) -> Result<Vec<Backend>, Error> {
    let pool = (0..pool_size(config))
        .map(|_| EtcdKv::new(endpoints, config.client.clone()).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let value = Bytes::from(value);
    let mut probes = JoinSet::new();
    for index in 0..config.clients as usize {
        let etcd = pool[index % pool.len()].clone();
        probes.spawn(async move {
            etcd.probe().await?;
            Ok::<_, Error>(etcd)
        });
    }
    let mut backends = Vec::with_capacity(config.clients as usize);
    while let Some(joined) = probes.join_next().await {
        let etcd = joined.map_err(|e| Error::Internal(e.to_string()))??;
        backends.push(Backend::Etcd {
            etcd,
            value: value.clone(),
        });
    }
    Ok(backends)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends on a timer, from `first_at` on, `period` apart, whatever the replies do.
async fn open_loop(
    worker: Arc<Worker>,
    mut workload: Workload,
    first_at: Instant,
    period: Duration,
    count: u64,
    mut stopped: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval_at(first_at, period.max(Duration::from_nanos(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut requests = JoinSet::new();
    let mut sent = 0_u64;
    while sent < count && !*stopped.borrow() {
        tokio::select! {
            biased;
            _ = stopped.changed() => break,
            Some(_) = requests.join_next(), if !requests.is_empty() => continue,
            _ = ticker.tick() => {}
        }
        sent += 1;
        let (kind, key) = workload.next();
        if worker.shared.counters.in_flight.load(Ordering::Relaxed) >= IN_FLIGHT_MAX {
            worker.shared.refuse();
            continue;
        }
        let worker = worker.clone();
        requests.spawn(async move { worker.perform(kind, key).await });
    }
    while requests.join_next().await.is_some() {}
}

/// Sends the next request when the previous reply arrives.
async fn closed_loop(
    worker: Arc<Worker>,
    mut workload: Workload,
    count: u64,
    stopped: watch::Receiver<bool>,
) {
    let mut sent = 0_u64;
    while sent < count && !*stopped.borrow() {
        sent += 1;
        let (kind, key) = workload.next();
        worker.perform(kind, key).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LoadConfig {
        LoadConfig {
            clients: 1,
            throughput: 1.0,
            limit: Limit::Forever,
            keyspace: 10_000,
            zipf_s: 1.1,
            zipf_v: 4.0,
            payload: 16,
            reads: 0.0,
            seed: 99,
            connections: 0,
            client: ClientConfig::default(),
            target: Target::Rkv,
        }
    }

    #[test]
    fn the_summary_line_has_exactly_the_agreed_form() {
        let line = summary_line(
            41_234.4,
            Duration::from_micros(1_920),
            Duration::from_micros(8_714),
            0,
        );
        assert_eq!(line, "ops/s: 41234 p50_ms: 1.92 p99_ms: 8.71 errors: 0");
        let line = summary_line(0.0, Duration::ZERO, Duration::ZERO, 7);
        assert_eq!(line, "ops/s: 0 p50_ms: 0.00 p99_ms: 0.00 errors: 7");
    }

    #[test]
    fn a_report_summarises_reads_and_writes_together() {
        let mut reads = histogram();
        let mut writes = histogram();
        for _ in 0..60 {
            reads.record(1_000).expect("in range");
        }
        for _ in 0..50 {
            writes.record(3_000).expect("in range");
        }
        writes.record(100_000).expect("in range");
        let report = Report {
            elapsed: Duration::from_secs(1),
            reads,
            writes,
            errors: BTreeMap::from([("unavailable", 2)]),
            records: Vec::new(),
            records_dropped: 0,
        };
        assert_eq!(report.ok(), 111);
        let line = report.summary_line();
        assert!(
            line.starts_with("ops/s: 111 p50_ms: 1.00 p99_ms: 3.00"),
            "{line}"
        );
        assert!(line.ends_with(" errors: 2"), "{line}");
        let details = report.details();
        assert!(
            details.contains("errors by kind: unavailable 2"),
            "{details}"
        );
        assert!(details.contains("max 100.0"), "{details}");
        let all = details
            .lines()
            .find(|l| l.starts_with("all: "))
            .expect("a line for reads and writes together");
        assert!(all.starts_with("all: 111 ok, 111 ops/s,"), "{all}");
        assert!(all.contains("p99.9 100.0"), "p99.9 over both kinds: {all}");
    }

    #[test]
    fn the_csv_has_one_row_per_request() {
        let report = Report {
            elapsed: Duration::from_secs(1),
            reads: histogram(),
            writes: histogram(),
            errors: BTreeMap::new(),
            records: vec![
                Record {
                    start_unix_nanos: 5,
                    latency_nanos: 7,
                    kind: Kind::Write,
                    ok: true,
                },
                Record {
                    start_unix_nanos: 6,
                    latency_nanos: 9,
                    kind: Kind::Read,
                    ok: false,
                },
            ],
            records_dropped: 0,
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let path = report.write_csv(dir.path()).expect("written");
        let name = path.file_name().and_then(|n| n.to_str()).expect("utf-8");
        assert!(
            name.starts_with("latency-") && name.ends_with(".csv"),
            "{name}"
        );
        let text = std::fs::read_to_string(&path).expect("readable");
        assert_eq!(
            text,
            "start_unix_nanos,latency_nanos,kind,ok\n5,7,write,true\n6,9,read,false\n"
        );
    }

    #[test]
    fn the_workload_is_reproducible_and_mixes_reads_as_asked() {
        let zipf = Zipf::new(1.1, 4.0, 9_999).expect("valid");
        let draw = |reads| {
            let mut workload = Workload {
                rng: Rng::new(99),
                zipf: zipf.clone(),
                reads,
            };
            (0..2000).map(|_| workload.next()).collect::<Vec<_>>()
        };
        assert_eq!(draw(0.5), draw(0.5));
        let keys = |v: Vec<(Kind, String)>| v.into_iter().map(|(_, k)| k).collect::<Vec<_>>();
        assert_eq!(
            keys(draw(0.0)),
            keys(draw(0.9)),
            "keys do not depend on -reads"
        );
        let reads = draw(0.5).iter().filter(|(k, _)| *k == Kind::Read).count();
        assert!((800..1200).contains(&reads), "{reads} reads of 2000");
        assert!(
            draw(0.0)
                .iter()
                .all(|(k, key)| *k == Kind::Write && key.len() == 8)
        );
    }

    #[test]
    fn targets_are_named_as_the_flag_spells_them() {
        for target in [Target::Rkv, Target::Etcd] {
            assert_eq!(target.name().parse::<Target>(), Ok(target));
            assert_eq!(target.to_string(), target.name());
        }
        assert_eq!(Target::default(), Target::Rkv);
        let e = "zookeeper".parse::<Target>().expect_err("unknown");
        assert_eq!(e, "unknown target \"zookeeper\": rkv or etcd");
    }

    #[test]
    fn settings_are_checked() {
        assert!(config().validate().is_ok());
        let bad = [
            LoadConfig {
                payload: 15,
                ..config()
            },
            LoadConfig {
                reads: 1.5,
                ..config()
            },
            LoadConfig {
                zipf_s: 1.0,
                ..config()
            },
            LoadConfig {
                clients: 0,
                ..config()
            },
            LoadConfig {
                throughput: -1.0,
                ..config()
            },
            LoadConfig {
                keyspace: 0,
                ..config()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }
}
