//! `rkv-scenario`: runs a fault scenario against a real local rkvd cluster and checks the
//! history. See the crate docs of `rkv_scenario` and the README's "Fault scenarios".

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rkv_scenario::{Options, Scenario, ScenarioError, run};

/// Fault scenarios on a real rkvd cluster, every history checked for linearizability,
/// lost acknowledged writes and diverging replicas.
#[derive(Parser, Debug)]
#[command(name = "rkv-scenario", version)]
struct Args {
    /// none, crash-leader, crash-all, pause, partition-follower, partition-leader,
    /// partition-random, replace-leader, membership-churn or all.
    scenario: String,
    /// Seeds the fault schedule and the workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long the load (and the faults) run, in seconds.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Initial voters.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: u64,
    /// Keys the clients share.
    #[arg(long, default_value_t = 5)]
    keys: u64,
    /// Output directory (default: rkv-scenario-out/<scenario>-seed<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The rkvd binary (default: the one next to this program).
    #[arg(long)]
    rkvd: Option<PathBuf>,
    /// rkvd's election timeout, in milliseconds.
    #[arg(long, default_value_t = 500)]
    election_ms: u64,
    /// rkvd's heartbeat interval, in milliseconds.
    #[arg(long, default_value_t = 20)]
    heartbeat_ms: u64,
    /// An extra flag for every rkvd (repeatable), e.g. --rkvd-arg=-unsafe-local-reads.
    #[arg(long = "rkvd-arg", allow_hyphen_values = true)]
    rkvd_args: Vec<String>,
    /// Keep the nodes' data directories after a passing run.
    #[arg(long)]
    keep_data: bool,
}

fn options(args: Args) -> Result<Options, ScenarioError> {
    let scenario = Scenario::parse(&args.scenario)?;
    if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 86_400.0) {
        return Err(ScenarioError::Usage(
            "--seconds must be in (0, 86400]".into(),
        ));
    }
    if args.election_ms < 3 * args.heartbeat_ms.max(1) {
        return Err(ScenarioError::Usage(
            "--election-ms must be at least 3 heartbeats".into(),
        ));
    }
    let rkvd = match args.rkvd {
        Some(path) => path,
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("rkvd")))
            .ok_or_else(|| ScenarioError::Usage("cannot locate rkvd: pass --rkvd".into()))?,
    };
    if !rkvd.is_file() {
        return Err(ScenarioError::Usage(format!(
            "no rkvd at {} (build it with `cargo build -p rkv-server`, or pass --rkvd)",
            rkvd.display()
        )));
    }
    Ok(Options {
        scenario,
        seed: args.seed,
        load: Duration::from_secs_f64(args.seconds),
        voters: args.nodes,
        clients: args.clients,
        keys: args.keys,
        out: args.out.unwrap_or_else(|| {
            PathBuf::from(format!("rkv-scenario-out/{}-seed{}", scenario, args.seed))
        }),
        rkvd,
        election: Duration::from_millis(args.election_ms),
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        rkvd_args: args.rkvd_args,
        keep_data: args.keep_data,
    })
}

/// Resolves on Ctrl-C, SIGTERM (a CI timeout) or SIGHUP (a closed terminal).
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = hup.recv() => {}
    }
}

fn main() -> ExitCode {
    let options = match options(Args::parse()) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("rkv-scenario: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rkv-scenario: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let out = options.out.clone();
    let seed = options.seed;
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(options) => Some(result),
            // Dropping the run kills its processes and deletes its nftables table.
            () = interrupted() => None,
        }
    });
    match result {
        None => {
            eprintln!(
                "rkv-scenario: interrupted; its rkvd processes stopped, its partitions removed"
            );
            ExitCode::from(130)
        }
        Some(Err(e @ ScenarioError::Usage(_))) => {
            eprintln!("rkv-scenario: {e}");
            ExitCode::from(2)
        }
        Some(Err(e)) => {
            eprintln!("rkv-scenario: {e}");
            ExitCode::from(3)
        }
        Some(Ok(report)) => {
            print!("{report}");
            println!("history and report: {}", out.display());
            if report.passed() {
                ExitCode::SUCCESS
            } else if report.violated() {
                eprintln!("rkv-scenario: violation found with seed {seed}");
                ExitCode::from(1)
            } else {
                eprintln!("rkv-scenario: the run could not check everything (see the report)");
                ExitCode::from(3)
            }
        }
    }
}
