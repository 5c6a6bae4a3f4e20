//! rkvd's command line, as relab's rkvd had it (Go `flag` style) plus rkv's own flags.
//!
//! Go's `flag` package accepts `-id 1`, `--id 1`, `-id=1` and `--id=1`, sets a boolean
//! with `-quiet` and clears it with `-servermetrics=false`. Clap speaks GNU style, so
//! [`normalize`] rewrites single-dash long flags to double-dash ones before clap sees them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

/// Rewrites Go-style `-flag` arguments to `--flag` (leaving `-h`, values and `--` alone).
pub fn normalize(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest_are_values = false;
    for (position, arg) in args.into_iter().enumerate() {
        if position == 0 || rest_are_values {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            rest_are_values = true;
            out.push(arg);
            continue;
        }
        let is_long_single_dash = arg.len() > 2
            && arg.starts_with('-')
            && !arg.starts_with("--")
            && arg[1..].starts_with(|c: char| c.is_ascii_alphabetic());
        if is_long_single_dash {
            out.push(format!("-{arg}"));
        } else {
            out.push(arg);
        }
    }
    out
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((text, ""), |at| text.split_at(at));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (try 1s, 20ms)"))?;
    let seconds = match unit {
        "ns" => value / 1e9,
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "not a duration: {text:?} (units: ns, us, ms, s, m, h)"
            ));
        }
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("not a duration: {text:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Which Raft implementation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// rkv's own core, log and transport (`native`, or the original's `gorums`).
    Native,
}

fn parse_backend(text: &str) -> Result<Backend, String> {
    match text {
        "native" | "gorums" => Ok(Backend::Native),
        "raft-rs" | "etcd" | "openraft" | "hashicorp" => Err(format!(
            "backend {text:?} is not available yet: this build has only the native engine \
             (-backend native, alias gorums)"
        )),
        other => Err(format!(
            "unknown backend {other:?}: use native (alias gorums)"
        )),
    }
}

/// How the log is made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// fdatasync before acknowledging (the default).
    Always,
    /// Never fsync: fast, and acknowledged writes may be lost on a crash.
    None,
}

fn parse_sync(text: &str) -> Result<Sync, String> {
    match text {
        "always" => Ok(Sync::Always),
        "none" => Ok(Sync::None),
        other => Err(format!("unknown sync policy {other:?}: use always or none")),
    }
}

fn parse_id(text: &str) -> Result<u64, String> {
    let id: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("not a server id: {text:?}"))?;
    if id == 0 {
        return Err("server ids start at 1 (positions in -servers)".to_string());
    }
    Ok(id)
}

/// rkvd's flags. The first block is relab's rkvd, same names, defaults and meanings.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "rkvd",
    version,
    about = "rkv server: a Raft-replicated key-value store"
)]
pub struct Flags {
    /// Raft implementation: native (alias gorums).
    #[arg(long, default_value = "native", value_parser = parse_backend)]
    pub backend: Backend,
    /// Batch proposals into one log append and one message.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub batch: bool,
    /// At most how many log entries are kept in memory (at least 1000): a snapshot
    /// compacts them before more than this pile up since the last one.
    #[arg(long, default_value_t = 67_108_864)]
    pub cache: u64,
    /// A lagging follower gets entriespermsg x this many entries per message.
    #[arg(long, default_value_t = 1024)]
    pub catchupmultiplier: u64,
    /// A leader that does not hear from a quorum within an election timeout steps down
    /// (also enables lease reads).
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub checkquorum: bool,
    /// Ids (1-based positions in -servers) that form the initial voting cluster.
    #[arg(long, default_value = "1,2,3", value_delimiter = ',', value_parser = parse_id)]
    pub cluster: Vec<u64>,
    /// Election timeout.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub election: Duration,
    /// Entries per AppendEntries message.
    #[arg(long, default_value_t = 64)]
    pub entriespermsg: u64,
    /// Heartbeat interval.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// This server's id: its 1-based position in -servers.
    #[arg(long)]
    pub id: u64,
    /// Largest gRPC message in bytes.
    #[arg(long, default_value_t = 134_217_728)]
    pub maxgrpc: usize,
    /// Keep per-peer messages in order (always true for the native transport).
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub ordergorums: bool,
    /// No log output.
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub quiet: bool,
    /// Resume from stable storage. rkvd always resumes an existing data directory (it never
    /// wipes one unless -wipe is given), so this is accepted for compatibility.
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub recover: bool,
    /// Serve Prometheus metrics over HTTP (on -metrics-addr, default :590<id>).
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub servermetrics: bool,
    /// Comma-separated client addresses of every possible server (ids are 1-based positions).
    #[arg(
        long,
        default_value = ":9201,:9202,:9203,:9204,:9205,:9206,:9207",
        value_delimiter = ','
    )]
    pub servers: Vec<String>,

    // ----- rkv's own flags -----
    /// Where this node keeps its log, snapshots and identity (default: rkvd-data/<id>).
    #[arg(long = "data-dir")]
    pub data_dir: Option<PathBuf>,
    /// Delete the data directory's contents before starting (the original's behaviour
    /// without -recover). Never done unless asked for.
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub wipe: bool,
    /// always (fdatasync before acknowledging) or none (UNSAFE: acknowledged writes may be lost).
    #[arg(long, default_value = "always", value_parser = parse_sync)]
    pub sync: Sync,
    /// Peer (Raft) port offset: peers talk on each server's client port plus this.
    #[arg(long = "peer-port-offset", default_value_t = 1000)]
    pub peer_port_offset: u16,
    /// Address for /metrics and the status page (default :590<id>, as the original).
    #[arg(long = "metrics-addr")]
    pub metrics_addr: Option<String>,
    /// TEST ONLY, UNSAFE: serve every read from this replica's local state, without
    /// confirming leadership, so reads can be stale. Exists so that fault tests can show
    /// their checker catches a violation; never use it for data you care about.
    #[arg(long = "unsafe-local-reads", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub unsafe_local_reads: bool,
    /// Log level filter when not -quiet (e.g. info, debug, rkv_engine=debug).
    #[arg(long = "log-level", default_value = "info")]
    pub log_level: String,
}

/// Flags that parsed but do not make sense together.
#[derive(Debug, PartialEq, Eq)]
pub struct FlagError(pub String);

impl std::fmt::Display for FlagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FlagError {}

/// Resolves a Go-style `host:port` (`:9201` means all interfaces) to a socket address.
pub fn resolve(address: &str) -> Result<SocketAddr, FlagError> {
    let full = if address.starts_with(':') {
        format!("0.0.0.0{address}")
    } else {
        address.to_string()
    };
    use std::net::ToSocketAddrs;
    full.to_socket_addrs()
        .map_err(|e| FlagError(format!("cannot resolve server address {address:?}: {e}")))?
        .next()
        .ok_or_else(|| FlagError(format!("server address {address:?} resolves to nothing")))
}

impl Flags {
    /// Parses a whole command line (argv\[0\] first), Go style.
    pub fn parse_go_style(args: impl IntoIterator<Item = String>) -> Result<Flags, clap::Error> {
        Flags::try_parse_from(normalize(args))
    }

    /// Checks the flags against each other.
    pub fn validate(&self) -> Result<(), FlagError> {
        let count = self.servers.len() as u64;
        if self.id == 0 || self.id > count {
            return Err(FlagError(format!(
                "-id {} is not a position in -servers (1..={count})",
                self.id
            )));
        }
        if let Some(bad) = self.cluster.iter().find(|id| **id > count) {
            return Err(FlagError(format!(
                "-cluster names {bad}, but -servers lists only {count}"
            )));
        }
        if self.heartbeat.is_zero() || self.election <= self.heartbeat * 2 {
            return Err(FlagError(format!(
                "-election ({:?}) must be more than twice -heartbeat ({:?})",
                self.election, self.heartbeat
            )));
        }
        if self.entriespermsg == 0 || self.catchupmultiplier == 0 {
            return Err(FlagError(
                "-entriespermsg and -catchupmultiplier must be at least 1".into(),
            ));
        }
        for server in &self.servers {
            resolve(server)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Flags, clap::Error> {
        Flags::parse_go_style(
            std::iter::once("rkvd".to_string()).chain(line.split_whitespace().map(String::from)),
        )
    }

    #[test]
    fn the_originals_readme_lines_parse() {
        let f = parse("-id 1 -servers :9201,:9202,:9203 -cluster 1,2,3").expect("parses");
        assert_eq!(f.id, 1);
        assert_eq!(f.servers, vec![":9201", ":9202", ":9203"]);
        assert_eq!(f.cluster, vec![1, 2, 3]);
        assert!(f.validate().is_ok());
        let f = parse("-id 1 -servers 127.0.0.1:9200,127.0.0.2:9200,127.0.0.3:9200 -cluster 1,2,3")
            .expect("parses");
        assert_eq!(f.servers.len(), 3);
    }

    #[test]
    fn go_flag_spellings_are_all_accepted() {
        for line in ["-id 2", "--id 2", "-id=2", "--id=2"] {
            assert_eq!(parse(line).expect(line).id, 2, "{line}");
        }
        let f = parse("-id 1 -quiet -servermetrics=false -checkquorum").expect("parses");
        assert!(f.quiet);
        assert!(!f.servermetrics);
        assert!(f.checkquorum);
    }

    #[test]
    fn defaults_match_the_original() {
        let f = parse("-id 1").expect("parses");
        assert_eq!(f.backend, Backend::Native);
        assert!(f.batch && f.ordergorums && f.servermetrics);
        assert!(!f.checkquorum && !f.quiet && !f.recover);
        assert_eq!(f.cache, 67_108_864);
        assert_eq!(f.catchupmultiplier, 1024);
        assert_eq!(f.cluster, vec![1, 2, 3]);
        assert_eq!(f.election, Duration::from_secs(1));
        assert_eq!(f.entriespermsg, 64);
        assert_eq!(f.heartbeat, Duration::from_millis(20));
        assert_eq!(f.maxgrpc, 134_217_728);
        assert_eq!(f.servers.len(), 7);
        assert_eq!(f.sync, Sync::Always);
    }

    #[test]
    fn bad_input_gets_a_clear_error() {
        assert!(parse("").is_err(), "-id is required");
        let e = parse("-id 1 -backend etcd").expect_err("not yet available");
        assert!(e.to_string().contains("not available yet"), "{e}");
        let e = parse("-id 1 -backend paxos").expect_err("unknown");
        assert!(e.to_string().contains("unknown backend"), "{e}");
        assert!(parse("-id 1 -election 1parsec").is_err());
        assert!(parse("-id 1 -cluster 1,0").is_err());
        let f = parse("-id 4 -servers :1,:2,:3").expect("parses");
        assert!(f.validate().expect_err("out of range").0.contains("-id 4"));
        let f = parse("-id 1 -election 10ms -heartbeat 20ms").expect("parses");
        assert!(f.validate().is_err());
    }

    #[test]
    fn gorums_is_an_alias_of_native() {
        assert_eq!(
            parse("-id 1 -backend gorums").expect("parses").backend,
            Backend::Native
        );
    }

    #[test]
    fn durations_in_go_syntax() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("s").is_err());
    }
}
