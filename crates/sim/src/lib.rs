//! Deterministic simulation of whole rkv Raft clusters.
//!
//! One seed derives everything: cluster size, configuration, network delays, loss,
//! duplication and partitions, disk latency and what a crash keeps, membership changes,
//! leadership transfers and the clients' operations. A failing seed therefore replays
//! exactly, and [`run_seed`] with `trace` prints every event of the run.
//!
//! After every event the Raft paper's safety properties are checked
//! ([`invariants`]); at the end the clients' history is checked for linearizability with
//! `rkv-check`, and the healing phase must finish every operation (liveness).

pub mod disk;
pub mod invariants;
pub mod kv;
pub mod rng;
pub mod world;

pub use invariants::Violation;
pub use world::{Faults, Options, Report, World};

/// The deliberately broken variants by their command-line names.
#[cfg(feature = "broken-variants")]
pub fn parse_bug(name: &str) -> Option<rkv_raft::Bug> {
    match name {
        "commit-old-term" => Some(rkv_raft::Bug::CommitOldTermByCount),
        "vote-without-log-check" => Some(rkv_raft::Bug::VoteWithoutLogCheck),
        "ack-before-persist" => Some(rkv_raft::Bug::AckBeforePersist),
        "read-without-quorum" => Some(rkv_raft::Bug::ReadWithoutQuorum),
        _ => None,
    }
}

/// Runs one simulation.
pub fn run(options: Options) -> Report {
    World::new(options).run()
}

/// Runs `seed` with default options.
pub fn run_seed(seed: u64, trace: bool) -> Report {
    let mut options = Options::new(seed);
    options.trace = trace;
    run(options)
}

/// For a failing run, finds a smaller set of fault kinds that still fails with the same
/// seed, so the trace to read is as short as it can be made by switching faults off.
/// Returns the reduced options and their (failing) report.
pub fn shrink(options: &Options) -> (Options, Report) {
    let mut best = options.clone();
    best.trace = false;
    let mut report = run(best.clone());
    for position in 0..6 {
        let mut candidate = best.clone();
        candidate.faults = best.faults.without(position);
        if candidate.faults == best.faults {
            continue;
        }
        let attempt = run(candidate.clone());
        if attempt.violation.is_some() && attempt.events <= report.events {
            best = candidate;
            report = attempt;
        }
    }
    best.trace = true;
    let report = run(best.clone());
    (best, report)
}
