//! `rkv-sim`: runs many seeds of the deterministic cluster simulation, or replays one.
//!
//! ```text
//! rkv-sim --seeds 10000            # seeds 0..9999
//! rkv-sim --seed 4242 --trace      # replay one, printing every event
//! ```

use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rkv_sim::{Options, Report};

struct Args {
    seeds: u64,
    start: u64,
    seed: Option<u64>,
    trace: bool,
    nodes: usize,
    fault_ms: u64,
    threads: usize,
    #[cfg(feature = "broken-variants")]
    bug: Option<rkv_raft::Bug>,
}

const USAGE: &str = "usage: rkv-sim [--seeds N] [--start S] [--seed S [--trace]] [--nodes 3|5|7] [--fault-ms MS] [--threads N]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seeds: 1000,
        start: 0,
        seed: None,
        trace: false,
        nodes: 0,
        fault_ms: 5_000,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        #[cfg(feature = "broken-variants")]
        bug: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            v.parse().map_err(|_| format!("{name}: not a number: {v}"))
        };
        match flag.as_str() {
            "--seeds" => args.seeds = value("--seeds")?,
            "--start" => args.start = value("--start")?,
            "--seed" => args.seed = Some(value("--seed")?),
            "--nodes" => {
                args.nodes = usize::try_from(value("--nodes")?).map_err(|e| e.to_string())?;
                if ![3, 5, 7].contains(&args.nodes) {
                    return Err("--nodes must be 3, 5 or 7".into());
                }
            }
            "--fault-ms" => args.fault_ms = value("--fault-ms")?,
            "--threads" => {
                args.threads = usize::try_from(value("--threads")?)
                    .map_err(|e| e.to_string())?
                    .max(1)
            }
            "--trace" => args.trace = true,
            #[cfg(feature = "broken-variants")]
            "--bug" => {
                let name = it.next().ok_or("--bug needs a name")?;
                args.bug =
                    Some(rkv_sim::parse_bug(&name).ok_or_else(|| format!("unknown bug: {name}"))?);
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    Ok(args)
}

fn options(args: &Args, seed: u64) -> Options {
    let mut options = Options::new(seed);
    options.nodes = args.nodes;
    options.fault_ms = args.fault_ms;
    #[cfg(feature = "broken-variants")]
    {
        options.bug = args.bug;
    }
    options
}

fn print_failure(args: &Args, report: &Report) {
    let Some(v) = &report.violation else { return };
    println!(
        "seed {}: VIOLATION of {}: {}",
        report.seed, v.property, v.detail
    );
    let (shrunk, replay) = rkv_sim::shrink(&options(args, report.seed));
    println!(
        "shortest reproduction: seed {} with faults {:?} ({} events): {}",
        report.seed,
        shrunk.faults.names(),
        replay.events,
        replay
            .violation
            .as_ref()
            .map_or("(no longer fails)".to_string(), |v| v.property.to_string())
    );
    let tail = replay.trace.len().saturating_sub(200);
    for line in &replay.trace[tail..] {
        println!("  {line}");
    }
    println!(
        "reproduce with: cargo run --release -p rkv-sim -- --seed {} --trace",
        report.seed
    );
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("rkv-sim: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.seed {
        let mut opts = options(&args, seed);
        opts.trace = args.trace;
        let report = rkv_sim::run(opts);
        for line in &report.trace {
            println!("{line}");
        }
        println!(
            "seed {seed}: {} events, {} operations, {} ms simulated",
            report.events, report.operations, report.time_ms
        );
        let violations = u64::from(report.violation.is_some());
        print_failure(&args, &report);
        println!("seeds: 1, violations: {violations}");
        return if violations == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let started = Instant::now();
    let next = AtomicU64::new(args.start);
    let end = args.start + args.seeds;
    let failures: Mutex<Vec<Report>> = Mutex::new(Vec::new());
    let stats = Mutex::new((0u64, 0usize)); // (events, longest history)
    std::thread::scope(|scope| {
        for _ in 0..args.threads {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    let report = rkv_sim::run(options(&args, seed));
                    if let Ok(mut s) = stats.lock() {
                        s.0 += report.events;
                        s.1 = s.1.max(report.operations);
                    }
                    if report.violation.is_some()
                        && let Ok(mut f) = failures.lock()
                    {
                        f.push(report);
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_default();
    failures.sort_by_key(|r| r.seed);
    for report in failures.iter().take(3) {
        print_failure(&args, report);
    }
    for report in failures.iter().skip(3) {
        if let Some(v) = &report.violation {
            println!("seed {}: VIOLATION of {}", report.seed, v.property);
        }
    }
    let (events, longest) = stats.into_inner().unwrap_or_default();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} seeds in {secs:.1} s ({:.0} seeds/min, {events} events, longest history {longest} operations)",
        args.seeds,
        args.seeds as f64 / secs * 60.0
    );
    println!("seeds: {}, violations: {}", args.seeds, failures.len());
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
