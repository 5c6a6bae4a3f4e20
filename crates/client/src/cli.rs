//! `rkvctl`'s command line: relab's rkvctl flags (the load generator and `-add` /
//! `-remove`) plus everyday commands in the style of etcdctl.
//!
//! It lives in the library, not in the binary, so that its parsing and output are unit
//! tested like any other code; `src/bin/rkvctl.rs` only calls [`main`].
//!
//! Exit codes, for scripts: [`EXIT_OK`] (0) success; [`EXIT_ERROR`] (1) the operation
//! failed, or `get` found no such key (the message goes to stderr and nothing to stdout);
//! [`EXIT_USAGE`] (2) the command line is wrong.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};
use rkv_wire::commonpb::ReconfType;
use rkv_wire::v1::{self, Consistency, Member};
use tokio::sync::watch;

use crate::client::{Client, ClientConfig, Filter, parse_consistency};
use crate::error::Error;
use crate::etcd::EtcdKv;
use crate::goflags::{normalize, parse_duration};
use crate::load::{self, Counters, Limit, LoadConfig, Target};

/// Success.
pub const EXIT_OK: u8 = 0;
/// The operation failed (or `get` found no such key).
pub const EXIT_ERROR: u8 = 1;
/// The command line is wrong.
pub const EXIT_USAGE: u8 = 2;

/// How long `-ensure` keeps retrying a reconfiguration (the original's request timeout).
pub const ENSURE_FOR: Duration = Duration::from_secs(600);

/// Most pairs `scan` prints.
pub const SCAN_PAIRS_MAX: usize = 1_000_000;

const AFTER_HELP: &str = "\
Without a command, rkvctl is relab's load generator: -clients sessions each send \
-throughput requests per second (open loop; -throughput 0: closed loop, the next request \
when the reply arrives) until -count requests per client, -time, or Ctrl-C. It prints a \
progress line on stderr, then throughput, latency percentiles and errors by kind, writes \
latency-<unix nanos>.csv in the current directory, and ends with one line: \
`ops/s: N p50_ms: X p99_ms: Y errors: E`. With -add N / -remove N it reconfigures the \
cluster and exits.

-target etcd drives an etcd v3 cluster with the same load instead (Put for writes, \
linearizable Range for reads): -cluster then lists etcd endpoints, e.g. \
-cluster http://127.0.0.1:2379. Only the load generator works with -target etcd.

Flags are Go style: -cluster :9201,:9202, --clients 10, -time=10s, -forever=false. \
A value that starts with '-' goes after `--` (rkvctl put -- key -value).

Exit codes: 0 ok; 1 error (including `get` of a missing key: message on stderr, nothing \
on stdout); 2 usage.";

fn parse_target(text: &str) -> Result<Target, String> {
    text.parse()
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("not a number: {text:?}"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is not a fraction in 0..1"))
    }
}

/// A comma-separated server list (one flag value, so that a later `-cluster` replaces an
/// earlier one, as in Go).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Servers(pub Vec<String>);

impl std::ops::Deref for Servers {
    type Target = [String];

    fn deref(&self) -> &[String] {
        &self.0
    }
}

fn parse_servers(text: &str) -> Result<Servers, String> {
    let servers: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if servers.is_empty() {
        return Err("no servers listed (e.g. -cluster :9201,:9202,:9203)".into());
    }
    Ok(Servers(servers))
}

/// rkvctl's flags. The first block is relab's rkvctl: same names, defaults, meanings.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "rkvctl",
    version,
    about = "rkv client: everyday commands and relab's load generator",
    after_help = AFTER_HELP,
    args_override_self = true
)]
pub struct Flags {
    /// Servers to talk to (comma-separated host:port; :9201 means this machine).
    #[arg(long, global = true, default_value = ":9201,:9202,:9203", value_parser = parse_servers)]
    pub cluster: Servers,
    /// Concurrent clients, each with its own session.
    #[arg(long, default_value_t = 1)]
    pub clients: u32,
    /// Requests per second per client, sent on a timer (open loop); 0: closed loop.
    #[arg(long, default_value_t = 1.0)]
    pub throughput: f64,
    /// Stop after this many requests per client (overrides -time and -forever).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Run for this long, e.g. 10s (overrides -forever).
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub time: Duration,
    /// Run until interrupted (clear with -forever=false).
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub forever: bool,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub keyspace: u64,
    /// Zipf s parameter of the key choice (> 1).
    #[arg(long, default_value_t = 1.1)]
    pub zipfs: f64,
    /// Zipf v parameter of the key choice (>= 1).
    #[arg(long, default_value_t = 4.0)]
    pub zipfv: f64,
    /// Bytes per request, key plus value (at least 16).
    #[arg(long, default_value_t = 16)]
    pub payload: usize,
    /// Fraction (0..1) of requests that are reads.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub reads: f64,
    /// Ask the cluster to add server N (its 1-based position in the servers' -servers), then exit.
    #[arg(long, default_value_t = 0)]
    pub add: u64,
    /// Ask the cluster to remove server N, then exit.
    #[arg(long, default_value_t = 0)]
    pub remove: u64,
    /// Keep retrying -add / -remove until it succeeds (for up to 10 minutes).
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub ensure: bool,

    // ----- rkv's own flags -----
    /// Seed of the key choice: client i uses seed + i (the original used 99 + i).
    #[arg(long, default_value_t = 99)]
    pub seed: u64,
    /// gRPC connections shared by the load clients (0: one per client, as the original).
    #[arg(long, default_value_t = 0)]
    pub connections: u32,
    /// The system to load: rkv, or etcd (through its v3 gRPC KV API, at the -cluster
    /// endpoints).
    #[arg(long, default_value = "rkv", value_parser = parse_target)]
    pub target: Target,
    /// Give up on one request (all its retries) after this long.
    #[arg(long, global = true, default_value = "15s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// An everyday command; without one, rkvctl generates load.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The everyday commands.
#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Print the value of KEY (exit code 1 and nothing on stdout if it is absent).
    Get {
        /// The key.
        key: String,
        /// linearizable (default), lease or stale.
        #[arg(long, default_value = "linearizable", value_parser = parse_consistency)]
        consistency: Consistency,
    },
    /// Set KEY to VALUE (exactly once); prints OK.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Delete KEY; prints 1 if it existed, else 0.
    Del {
        /// The key.
        key: String,
    },
    /// Print every key under PREFIX and its value (key line, then value line), in order.
    Scan {
        /// The prefix ("" for every key).
        prefix: String,
        /// linearizable (default), lease or stale.
        #[arg(long, default_value = "linearizable", value_parser = parse_consistency)]
        consistency: Consistency,
        /// Print at most this many pairs (0: all, up to 1,000,000).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
    /// Print committed changes to KEY as they happen (PUT, key, value / DELETE, key).
    Watch {
        /// The key (or prefix, with -prefix).
        key: String,
        /// Watch every key starting with KEY.
        #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1,
              require_equals = true, default_missing_value = "true")]
        prefix: bool,
        /// Exit after this many events (0: until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Print every server's status (role, term, leader, indexes); exit 1 if one is down.
    Status,
    /// List or change the members.
    Member {
        /// What to do.
        #[command(subcommand)]
        action: MemberCommand,
    },
    /// Hand leadership to voter N (0: the leader picks).
    TransferLeader {
        /// The new leader's id.
        target: u64,
    },
}

/// `rkvctl member ...`.
#[derive(Clone, Debug, Subcommand)]
pub enum MemberCommand {
    /// Print the members: id, voter or learner, address.
    List,
    /// Add server ID (its position in the servers' -servers), promoted once caught up.
    Add {
        /// The new member's id.
        id: u64,
        /// Its address, informational (rkvd uses its -servers list).
        #[arg(default_value = "")]
        address: String,
        /// Keep it a learner.
        #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1,
              require_equals = true, default_missing_value = "true")]
        learner: bool,
    },
    /// Remove member ID.
    Remove {
        /// The member's id.
        id: u64,
    },
    /// Promote learner ID to voter.
    Promote {
        /// The learner's id.
        id: u64,
    },
}

impl Flags {
    /// Parses a whole command line (argv\[0\] first), Go style.
    pub fn parse_go_style(args: impl IntoIterator<Item = String>) -> Result<Flags, clap::Error> {
        Flags::try_parse_from(normalize(args))
    }

    /// Checks the flags against each other.
    pub fn validate(&self) -> Result<(), String> {
        if self.add > 0 && self.remove > 0 {
            return Err("-add and -remove: one reconfiguration at a time".into());
        }
        if self.command.is_some() && (self.add > 0 || self.remove > 0) {
            return Err("-add / -remove cannot be combined with a command".into());
        }
        if self.target == Target::Etcd
            && (self.command.is_some() || self.add > 0 || self.remove > 0)
        {
            return Err(
                "-target etcd only generates load: commands and -add / -remove are for rkv".into(),
            );
        }
        if self.timeout.is_zero() {
            return Err("-timeout must be positive".into());
        }
        if self.command.is_none() && self.add == 0 && self.remove == 0 {
            self.load_config()?.validate()?;
        }
        Ok(())
    }

    /// When the load stops, by the original's precedence: -count, then -time, then -forever.
    pub fn limit(&self) -> Result<Limit, String> {
        if self.count > 0 {
            Ok(Limit::Count(self.count))
        } else if !self.time.is_zero() {
            Ok(Limit::Time(self.time))
        } else if self.forever {
            Ok(Limit::Forever)
        } else {
            Err("-forever=false needs -count or -time to say when to stop".into())
        }
    }

    /// The client settings the flags ask for.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            deadline: self.timeout,
            attempt_timeout: self.timeout.min(ClientConfig::default().attempt_timeout),
            ..ClientConfig::default()
        }
    }

    /// The load run the flags describe.
    pub fn load_config(&self) -> Result<LoadConfig, String> {
        Ok(LoadConfig {
            clients: self.clients,
            throughput: self.throughput,
            limit: self.limit()?,
            keyspace: self.keyspace,
            zipf_s: self.zipfs,
            zipf_v: self.zipfv,
            payload: self.payload,
            reads: self.reads,
            seed: self.seed,
            connections: self.connections,
            client: self.client_config(),
            target: self.target,
        })
    }
}

/// rkvctl's entry point: parses `std::env::args()`, runs, and returns the exit code.
pub fn main() -> ExitCode {
    let flags = match Flags::parse_go_style(std::env::args()) {
        Ok(flags) => flags,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    if let Err(e) = flags.validate() {
        eprintln!("rkvctl: {e}\nRun rkvctl -h for usage.");
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rkvctl: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    ExitCode::from(runtime.block_on(run(flags)))
}

async fn run(flags: Flags) -> u8 {
    // An address that cannot be dialed is a usage error, found before anything is sent.
    let client = match flags.target {
        Target::Rkv => Client::new(flags.cluster.iter(), flags.client_config()).map(Some),
        Target::Etcd => EtcdKv::new(flags.cluster.iter(), flags.client_config()).map(|_| None),
    };
    let client = match client {
        Ok(client) => client,
        Err(e) => {
            eprintln!("rkvctl: {e}");
            return EXIT_USAGE;
        }
    };
    let outcome = match (&client, &flags.command, flags.add, flags.remove) {
        // The load generator makes its own connections, one per client by default.
        (_, None, 0, 0) => run_load(&flags).await,
        (Some(client), Some(command), _, _) => run_command(client, command).await,
        (Some(client), None, 0, remove) => {
            reconfigure(client, remove, ReconfType::ReconfRemove, flags.ensure).await
        }
        (Some(client), None, add, _) => {
            reconfigure(client, add, ReconfType::ReconfAdd, flags.ensure).await
        }
        // validate() refuses these already.
        (None, _, _, _) => Err(Error::Config(
            "-target etcd only generates load: commands and -add / -remove are for rkv".into(),
        )),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rkvctl: {e}");
            EXIT_ERROR
        }
    }
}

fn stdout_lines(lines: &[&[u8]]) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    let written = lines
        .iter()
        .try_for_each(|line| out.write_all(line).and_then(|()| out.write_all(b"\n")))
        .and_then(|()| out.flush());
    written.map_err(|e| Error::Config(format!("writing to stdout: {e}")))
}

fn print_members(members: &[Member]) -> Result<(), Error> {
    for m in members {
        let role = if m.is_learner { "learner" } else { "voter" };
        let line = format!("{}, {role}, {}", m.id, m.address);
        stdout_lines(&[line.as_bytes()])?;
    }
    Ok(())
}

async fn run_command(client: &Client, command: &Command) -> Result<u8, Error> {
    match command {
        Command::Get { key, consistency } => match client.get(key, *consistency).await? {
            Some(value) => stdout_lines(&[&value]).map(|()| EXIT_OK),
            None => {
                eprintln!("rkvctl: key {key:?} not found");
                Ok(EXIT_ERROR)
            }
        },
        Command::Put { key, value } => {
            client.put(key, value).await?;
            stdout_lines(&[b"OK"]).map(|()| EXIT_OK)
        }
        Command::Del { key } => {
            let existed = client.delete(key).await?;
            stdout_lines(&[if existed { b"1" } else { b"0" }]).map(|()| EXIT_OK)
        }
        Command::Scan {
            prefix,
            consistency,
            limit,
        } => {
            let pairs_max = if *limit == 0 { SCAN_PAIRS_MAX } else { *limit };
            for (key, value) in client.scan_prefix(prefix, pairs_max, *consistency).await? {
                stdout_lines(&[&key, &value])?;
            }
            Ok(EXIT_OK)
        }
        Command::Watch { key, prefix, count } => watch(client, key, *prefix, *count).await,
        Command::Status => status(client).await,
        Command::Member { action } => member(client, action).await,
        Command::TransferLeader { target } => {
            let leader = client.transfer_leader(*target).await?;
            if leader == 0 || (*target != 0 && leader != *target) {
                eprintln!("rkvctl: the transfer did not finish in time; leader now: {leader}");
                return Ok(EXIT_ERROR);
            }
            stdout_lines(&[format!("leader is now {leader}").as_bytes()]).map(|()| EXIT_OK)
        }
    }
}

async fn watch(client: &Client, key: &str, prefix: bool, count: u64) -> Result<u8, Error> {
    let bytes = bytes::Bytes::copy_from_slice(key.as_bytes());
    let filter = if prefix {
        Filter::Prefix(bytes)
    } else {
        Filter::Key(bytes)
    };
    let mut stream = client.watch(filter, 0).await?;
    // Scripts (and tests) wait for this line before making the changes they watch for.
    eprintln!(
        "rkvctl: watching {} {key:?}",
        if prefix { "prefix" } else { "key" }
    );
    let mut seen = 0_u64;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let batch = tokio::select! {
            batch = stream.next() => batch?,
            _ = &mut interrupted => return Ok(EXIT_OK),
        };
        let Some(events) = batch else {
            eprintln!("rkvctl: the server ended the watch (is it shutting down?)");
            return Ok(EXIT_ERROR);
        };
        for event in events {
            if event.kind == i32::from(v1::EventKind::Delete) {
                stdout_lines(&[b"DELETE", &event.key])?;
            } else {
                stdout_lines(&[b"PUT", &event.key, &event.value])?;
            }
            seen += 1;
            if count > 0 && seen >= count {
                return Ok(EXIT_OK);
            }
        }
    }
}

fn role_name(role: i32) -> &'static str {
    match v1::Role::try_from(role) {
        Ok(v1::Role::Leader) => "leader",
        Ok(v1::Role::Follower) => "follower",
        Ok(v1::Role::Candidate) => "candidate",
        Ok(v1::Role::PreCandidate) => "pre-candidate",
        Ok(v1::Role::Learner) => "learner",
        Err(_) => "unknown",
    }
}

async fn status(client: &Client) -> Result<u8, Error> {
    let answers = client.status_all().await;
    let mut lines = vec![format!(
        "{:<4} {:<22} {:<13} {:>6} {:>6} {:>10} {:>10} {:>10}",
        "ID", "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST"
    )];
    let mut down = 0;
    for (address, answer) in answers {
        match answer {
            Ok(s) => lines.push(format!(
                "{:<4} {:<22} {:<13} {:>6} {:>6} {:>10} {:>10} {:>10}",
                s.id,
                address,
                role_name(s.role),
                s.term,
                s.leader_id,
                s.commit_index,
                s.applied_index,
                s.last_log_index
            )),
            Err(e) => {
                down += 1;
                lines.push(format!("{:<4} {address:<22} unreachable: {e}", "-"));
            }
        }
    }
    for line in &lines {
        stdout_lines(&[line.as_bytes()])?;
    }
    Ok(if down == 0 { EXIT_OK } else { EXIT_ERROR })
}

async fn member(client: &Client, action: &MemberCommand) -> Result<u8, Error> {
    let (members, message) = match action {
        MemberCommand::List => (client.member_list().await?, None),
        MemberCommand::Add {
            id,
            address,
            learner,
        } => (
            client.member_add(*id, address, *learner).await?,
            Some(format!("member {id} added")),
        ),
        MemberCommand::Remove { id } => (
            client.member_remove(*id).await?,
            Some(format!("member {id} removed")),
        ),
        MemberCommand::Promote { id } => (
            client.member_promote(*id).await?,
            Some(format!("member {id} promoted")),
        ),
    };
    if let Some(message) = message {
        stdout_lines(&[message.as_bytes()])?;
    }
    print_members(&members)?;
    Ok(EXIT_OK)
}

async fn reconfigure(
    client: &Client,
    server_id: u64,
    kind: ReconfType,
    ensure: bool,
) -> Result<u8, Error> {
    let (verb, done) = match kind {
        ReconfType::ReconfAdd => ("add", "added"),
        ReconfType::ReconfRemove => ("remove", "removed"),
    };
    // One attempt may wait the server's whole reconfiguration timeout (30 s).
    let deadline = client.config().deadline + Duration::from_secs(40);
    let give_up = tokio::time::Instant::now() + ENSURE_FOR;
    let mut backoff = Duration::from_millis(100);
    loop {
        match client.reconf(server_id, kind, deadline).await {
            Ok(()) => {
                stdout_lines(&[format!("{done} server {server_id}").as_bytes()])?;
                return Ok(EXIT_OK);
            }
            Err(
                e @ (Error::Timeout(_)
                | Error::NotLeader { .. }
                | Error::Unavailable { .. }
                | Error::Busy(_)),
            ) if ensure && tokio::time::Instant::now() < give_up => {
                eprintln!("rkvctl: {verb} server {server_id}: {e}; retrying (-ensure)");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => {
                eprintln!("rkvctl: could not {verb} server {server_id}: {e}");
                return Ok(EXIT_ERROR);
            }
        }
    }
}

/// Shows the live counters on stderr: an indicatif line on a terminal, else a plain
/// line per second (so logs of scripted runs stay readable).
async fn show_progress(counters: Arc<Counters>, mut done: watch::Receiver<bool>) {
    let terminal = std::io::stderr().is_terminal();
    let bar = terminal.then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}") {
            bar.set_style(style);
        }
        bar
    });
    let period = if terminal {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(1)
    };
    let started = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval(period);
    ticker.tick().await;
    let mut last_ok = 0_u64;
    let mut last_at = started;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = done.changed() => break,
        }
        let ok = counters.ok.load(Ordering::Relaxed);
        let now = tokio::time::Instant::now();
        let rate = (ok - last_ok) as f64 / now.duration_since(last_at).as_secs_f64();
        (last_ok, last_at) = (ok, now);
        let message = format!(
            "ok {ok}  errors {}  in flight {}  ops/s {rate:.0}",
            counters.errors.load(Ordering::Relaxed),
            counters.in_flight.load(Ordering::Relaxed),
        );
        match &bar {
            Some(bar) => bar.set_message(message),
            None => eprintln!(
                "rkvctl: {:.0}s {message}",
                now.duration_since(started).as_secs_f64()
            ),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

async fn run_load(flags: &Flags) -> Result<u8, Error> {
    let config = flags.load_config().map_err(Error::Config)?;
    let mode = if config.throughput > 0.0 {
        format!("open loop at {} req/s each", config.throughput)
    } else {
        "closed loop".to_string()
    };
    let limit = match config.limit {
        Limit::Count(n) => format!("{n} requests each"),
        Limit::Time(t) => format!("for {t:?}"),
        Limit::Forever => "until interrupted".to_string(),
    };
    eprintln!(
        "rkvctl: {} {} clients on {} connections, {mode}, {limit}; keyspace {}, zipf s={} \
         v={}, payload {} B, reads {}%",
        config.target,
        config.clients,
        match config.connections {
            0 => config.clients,
            n => n.min(config.clients),
        },
        config.keyspace,
        config.zipf_s,
        config.zipf_v,
        config.payload,
        config.reads * 100.0
    );
    let (stop, stop_requested) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "rkvctl: interrupted: finishing the requests in flight (Ctrl-C again to quit)"
            );
            let _ = stop.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let counters = Arc::new(Counters::default());
    let (done, done_seen) = watch::channel(false);
    let progress = tokio::spawn(show_progress(counters.clone(), done_seen));
    let report = load::run(&flags.cluster, &config, counters, stop_requested).await;
    let _ = done.send(true);
    let _ = progress.await;
    let report = report?;
    let mut text = report.details();
    match std::env::current_dir().and_then(|dir| report.write_csv(&dir)) {
        Ok(path) => text.push_str(&format!(
            "latency CSV: {} ({} rows{})\n",
            path.display(),
            report.records.len(),
            if report.records_dropped > 0 {
                format!(", {} more not kept", report.records_dropped)
            } else {
                String::new()
            }
        )),
        Err(e) => eprintln!("rkvctl: could not write the latency CSV: {e}"),
    }
    text.push_str(&report.summary_line());
    stdout_lines(&[text.as_bytes()])?;
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Flags, clap::Error> {
        Flags::parse_go_style(
            std::iter::once("rkvctl".to_string()).chain(line.split_whitespace().map(String::from)),
        )
    }

    #[test]
    fn defaults_are_the_originals() {
        let f = parse("").expect("parses");
        assert_eq!(*f.cluster, [":9201", ":9202", ":9203"]);
        assert_eq!(f.clients, 1);
        assert_eq!(f.throughput, 1.0);
        assert_eq!(f.count, 0);
        assert_eq!(f.time, Duration::ZERO);
        assert!(f.forever);
        assert_eq!(f.keyspace, 10_000);
        assert_eq!(f.zipfs, 1.1);
        assert_eq!(f.zipfv, 4.0);
        assert_eq!(f.payload, 16);
        assert_eq!(f.reads, 0.0);
        assert_eq!((f.add, f.remove), (0, 0));
        assert!(!f.ensure);
        assert!(f.command.is_none());
        assert_eq!(f.limit(), Ok(Limit::Forever));
        // rkv's own flags.
        assert_eq!((f.seed, f.connections), (99, 0));
        assert_eq!(f.timeout, Duration::from_secs(15));
        assert_eq!(f.target, Target::Rkv);
        assert!(f.validate().is_ok());
    }

    #[test]
    fn target_etcd_drives_the_same_load_generator() {
        for line in [
            "-target etcd",
            "--target etcd",
            "-target=etcd",
            "--target=etcd",
        ] {
            assert_eq!(parse(line).expect(line).target, Target::Etcd, "{line}");
        }
        let f = parse(
            "-target etcd -cluster http://127.0.0.1:2379,http://127.0.0.1:2381 -clients 50 \
             -throughput 0 -time 3s -reads 0.9 -connections 5",
        )
        .expect("parses");
        assert!(f.validate().is_ok(), "{:?}", f.validate());
        let config = f.load_config().expect("a load run");
        assert_eq!(config.target, Target::Etcd);
        assert_eq!(
            (
                config.clients,
                config.throughput,
                config.reads,
                config.connections
            ),
            (50, 0.0, 0.9, 5)
        );
        assert_eq!(config.limit, Limit::Time(Duration::from_secs(3)));
        assert_eq!(
            *f.cluster,
            ["http://127.0.0.1:2379", "http://127.0.0.1:2381"]
        );
        assert_eq!(parse("-target rkv").expect("parses").target, Target::Rkv);
        assert_eq!(
            parse("-target etcd -target rkv").expect("parses").target,
            Target::Rkv,
            "as in Go, the last occurrence wins"
        );
    }

    #[test]
    fn a_bad_target_is_a_usage_error_naming_the_choices() {
        for line in ["-target redis", "-target ETCD", "-target", "-target="] {
            let e = parse(line).expect_err(line);
            assert!(e.use_stderr(), "{line}");
            assert_eq!(e.exit_code(), i32::from(EXIT_USAGE), "{line}");
        }
        let message = parse("-target redis").expect_err("unknown").to_string();
        assert!(
            message.contains("redis") && message.contains("rkv or etcd"),
            "{message}"
        );
        for line in [
            "-target etcd get k",
            "-target etcd -add 4",
            "-target etcd status",
        ] {
            let e = parse(line).expect("parses").validate().expect_err(line);
            assert!(
                e.contains("-target etcd only generates load"),
                "{line}: {e}"
            );
        }
    }

    #[test]
    fn go_spellings_are_all_accepted() {
        for line in ["-clients 10", "--clients 10", "-clients=10", "--clients=10"] {
            assert_eq!(parse(line).expect(line).clients, 10, "{line}");
        }
        let f = parse("-cluster :9201,:9202,:9203 -time=10s -forever=false -ensure -reads 0.5")
            .expect("parses");
        assert_eq!(f.cluster.len(), 3);
        assert_eq!(f.time, Duration::from_secs(10));
        assert!(!f.forever && f.ensure);
        assert_eq!(f.reads, 0.5);
        assert_eq!(f.limit(), Ok(Limit::Time(Duration::from_secs(10))));
    }

    #[test]
    fn count_overrides_time_which_overrides_forever() {
        let f = parse("-count 200 -time 5s").expect("parses");
        assert_eq!(f.limit(), Ok(Limit::Count(200)));
        let f = parse("-throughput 0 -count 200").expect("parses");
        assert_eq!(f.throughput, 0.0, "closed loop");
        assert!(parse("-forever=false").expect("parses").validate().is_err());
    }

    #[test]
    fn commands_parse_with_flags_before_and_after() {
        let f = parse("-cluster :1,:2 get k -consistency stale").expect("parses");
        assert_eq!(*f.cluster, [":1", ":2"]);
        match f.command {
            Some(Command::Get { key, consistency }) => {
                assert_eq!(key, "k");
                assert_eq!(consistency, Consistency::Stale);
            }
            other => panic!("{other:?}"),
        }
        let f = parse("put k v -cluster :7").expect("parses");
        assert_eq!(*f.cluster, [":7"], "-cluster is accepted after the command");
        let f = parse("-cluster :1,:2 -clients 2 -cluster :3 -clients 5").expect("parses");
        assert_eq!(*f.cluster, [":3"], "as in Go, the last occurrence wins");
        assert_eq!(f.clients, 5);
        assert!(matches!(
            parse("member add 4").expect("parses").command,
            Some(Command::Member {
                action: MemberCommand::Add { id: 4, .. }
            })
        ));
        assert!(matches!(
            parse("transfer-leader 2").expect("parses").command,
            Some(Command::TransferLeader { target: 2 })
        ));
        assert!(matches!(
            parse("watch p -prefix -count 3").expect("parses").command,
            Some(Command::Watch {
                prefix: true,
                count: 3,
                ..
            })
        ));
        let f = parse("put -- k -v").expect("parses");
        assert!(matches!(f.command, Some(Command::Put { value, .. }) if value == "-v"));
    }

    #[test]
    fn bad_flags_get_a_clear_error() {
        assert!(parse("-nosuchflag").is_err());
        assert!(parse("-clients lots").is_err());
        assert!(parse("-reads 2").is_err());
        assert!(parse("-time 10").is_err(), "Go durations need a unit");
        assert!(parse("get").is_err(), "get needs a key");
        assert!(parse("get k -consistency eventual").is_err());
        let e = parse("-payload 8")
            .expect("parses")
            .validate()
            .expect_err("too small");
        assert!(e.contains("-payload"), "{e}");
        let e = parse("-add 4 -remove 2")
            .expect("parses")
            .validate()
            .expect_err("two");
        assert!(e.contains("one reconfiguration"), "{e}");
        assert!(parse("-zipfs 1").expect("parses").validate().is_err());
        let usage = parse("-nosuchflag").expect_err("unknown");
        assert!(usage.use_stderr());
        assert_eq!(usage.exit_code(), 2);
    }
}
