//! `cargo bench -p rkv-log`: appends/s and fdatasyncs/s of `FileLog` for batch sizes
//! 1, 16, 256 and entry sizes 16 B, 256 B, 4 KiB, beside a baseline measured in the same
//! run: a bare loop of `write` + `fdatasync` of the same bytes on a plain file. The ratio
//! is the log's fdatasyncs/s over the baseline's. `-- --test` runs a few iterations only;
//! `RKV_LOG_BENCH_CELL=256x16` (batch x entry bytes) runs one cell, e.g. under a profiler.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rkv_log::{FileLog, FileLogOptions, LogStore};
use rkv_raft::{Entry, Index, Payload, Term};

const BATCHES: [usize; 3] = [1, 16, 256];
const SIZES: [usize; 3] = [16, 256, 4096];
/// Turns the log and the baseline take in each cell; the ratio printed is the median of
/// the rounds' ratios, which a few slow fdatasyncs of the disk cannot swing.
const ROUNDS: u32 = 9;

struct Cell {
    syncs: u64,
    elapsed: Duration,
}

impl Cell {
    fn add(&mut self, other: &Cell) {
        self.syncs += other.syncs;
        self.elapsed += other.elapsed;
    }

    fn per_second(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `prepare` then `step` until `budget` of time has been spent in `step` (or
/// `max_iterations`), returning the count and the time inside `step` only.
fn measure<T>(
    budget: Duration,
    max_iterations: u64,
    mut prepare: impl FnMut() -> T,
    mut step: impl FnMut(T),
) -> Cell {
    let mut cell = Cell {
        syncs: 0,
        elapsed: Duration::ZERO,
    };
    while cell.syncs < max_iterations && (cell.syncs == 0 || cell.elapsed < budget) {
        let input = prepare();
        let start = Instant::now();
        step(input);
        cell.elapsed += start.elapsed();
        cell.syncs += 1;
    }
    cell
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test");
    let (budget, max_iterations) = if quick {
        (Duration::from_millis(20), 5)
    } else {
        (Duration::from_millis(900), u64::MAX)
    };
    let root = tempfile::Builder::new()
        .prefix("rkv-log-bench")
        .tempdir_in(std::env::temp_dir())
        .expect("temp dir");
    println!(
        "rkv-log append benchmark (dir {}); each cell ~{budget:?}",
        root.path().display()
    );
    println!(
        "{:>6} {:>6} | {:>12} {:>10} | {:>12} {:>10} | {:>6}",
        "batch", "entry", "log app/s", "log sync/s", "base app/s", "base sync/s", "ratio"
    );
    let only = std::env::var("RKV_LOG_BENCH_CELL").ok();
    for &size in &SIZES {
        for &batch in &BATCHES {
            if only
                .as_ref()
                .is_some_and(|cell| *cell != format!("{batch}x{size}"))
            {
                continue;
            }
            let dir = root.path().join(format!("log-{batch}-{size}"));
            let (mut log, _, _) = FileLog::open_dir(&dir, FileLogOptions::default()).expect("open");
            let payload = Bytes::from(vec![0xabu8; size]);
            // The baseline writes the same number of bytes per sync as the log does.
            let record = rkv_log::format::RECORD_HEADER_BYTES + size;
            let buffer = vec![0xabu8; record * batch];
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(root.path().join(format!("base-{batch}-{size}")))
                .expect("baseline file");
            // Log and baseline take turns, so that drift of the disk hits both alike, and
            // the entries are built before the clock starts: a driver hands the log
            // entries it already has.
            let mut log_cell = Cell {
                syncs: 0,
                elapsed: Duration::ZERO,
            };
            let mut base_cell = Cell {
                syncs: 0,
                elapsed: Duration::ZERO,
            };
            let mut next = 1u64;
            let mut ratios = Vec::new();
            for round in 0..ROUNDS {
                // Each batch is built just before it is appended (off the clock), so its
                // entries are as hot in the CPU cache as a driver's fresh proposals are.
                let mut spent: Vec<Vec<Entry>> = Vec::new();
                let mut run_log = || {
                    measure(
                        budget / ROUNDS,
                        max_iterations,
                        || {
                            let entries: Vec<Entry> = (next..next + batch as u64)
                                .map(|i| Entry {
                                    term: Term(1),
                                    index: Index(i),
                                    payload: Payload::Command(payload.clone()),
                                })
                                .collect();
                            next += batch as u64;
                            entries
                        },
                        |entries| {
                            log.append(&entries).expect("append");
                            log.sync().expect("sync");
                            // Freeing the caller's entries is the caller's work: later.
                            spent.push(entries);
                        },
                    )
                };
                let mut run_base = || {
                    measure(
                        budget / ROUNDS,
                        max_iterations,
                        || (),
                        |()| {
                            file.write_all(&buffer).expect("write");
                            file.sync_data().expect("fdatasync");
                        },
                    )
                };
                // Who goes first alternates, so that neither always follows the other's
                // dirty pages.
                let (log_round, base_round) = if round % 2 == 0 {
                    let log_round = run_log();
                    (log_round, run_base())
                } else {
                    let base_round = run_base();
                    (run_log(), base_round)
                };
                drop(spent);
                ratios.push(
                    log_round.per_second(log_round.syncs) / base_round.per_second(base_round.syncs),
                );
                log_cell.add(&log_round);
                base_cell.add(&base_round);
            }
            drop(log);
            let log_syncs = log_cell.per_second(log_cell.syncs);
            let base_syncs = base_cell.per_second(base_cell.syncs);
            ratios.sort_by(f64::total_cmp);
            let median = ratios[ratios.len() / 2];
            println!(
                "{:>6} {:>6} | {:>12.0} {:>10.0} | {:>12.0} {:>10.0} | {:>6.2}",
                batch,
                size,
                log_syncs * batch as f64,
                log_syncs,
                base_syncs * batch as f64,
                base_syncs,
                median
            );
        }
    }
}
