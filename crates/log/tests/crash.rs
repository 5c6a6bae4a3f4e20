//! A real crash test: this test binary re-executes itself as a child process that appends
//! to a log in a real directory and prints every index reported durable; the parent kills
//! it with SIGKILL at a seeded random moment, reopens the directory, and checks that every
//! index reported durable is there and intact. Twenty rounds on the same directory, so
//! each round also recovers from the previous kill. No sleeps: the kill moment is counted
//! in durable reports the parent has read.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use rkv_log::conformance::entry;
use rkv_log::{FileLog, FileLogOptions, LogStore};
use rkv_raft::Index;

const CHILD_DIR: &str = "RKV_LOG_CRASH_CHILD_DIR";
const ROUNDS: u64 = 20;
const SEED: u64 = 0x5eed_0003;

fn options() -> FileLogOptions {
    FileLogOptions {
        segment_bytes_max: 16 << 10,
        cache_entries: 16,
        ..FileLogOptions::default()
    }
}

/// The child: appends forever (bounded) in batches, printing what is durable.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return; // not a child: nothing to do
    };
    let (mut log, recovered, report) = FileLog::open_dir(&dir, options()).expect("child open");
    println!("recovered {} ({report})", recovered.entries.len());
    let mut next = log.last_index().0 + 1;
    for batch in 0..20_000u64 {
        let count = 1 + batch % 17;
        let entries: Vec<_> = (next..next + count).map(|i| entry(i, 1)).collect();
        log.append(&entries).expect("child append");
        let (index, _) = log.sync().expect("child sync");
        println!("durable {}", index.0);
        next += count;
    }
}

fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn sigkill_at_random_moments_loses_nothing_reported_durable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("own binary");
    let mut rng = SEED;
    let mut durable_max = 0u64;
    for round in 0..ROUNDS {
        let kill_after = next_random(&mut rng) % 200;
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("piped");
        let mut reports = 0;
        // Keep the pipe open until after the kill, so the child dies by SIGKILL and not
        // by a broken pipe.
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(index) = line.strip_prefix("durable ") {
                durable_max = durable_max.max(index.parse().expect("an index"));
                reports += 1;
                if reports > kill_after {
                    break;
                }
            }
        }
        // std's kill sends SIGKILL on Unix: no destructor, no flush, no goodbye.
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        drop(lines);
        let (log, recovered, report) = FileLog::open_dir(dir.path(), options())
            .unwrap_or_else(|e| panic!("round {round} (seed={SEED:#x}): recovery failed: {e}"));
        let last = log.last_index().0;
        assert!(
            last >= durable_max,
            "round {round} (seed={SEED:#x}): index {durable_max} was reported durable, \
             the log ends at {last} ({report})"
        );
        for (position, e) in recovered.entries.iter().enumerate() {
            assert_eq!(
                *e,
                entry(position as u64 + 1, 1),
                "round {round} (seed={SEED:#x}): entry damaged"
            );
        }
        assert_eq!(recovered.entries.len() as u64, last);
        let read = log
            .entries(Index(1), Index(last + 1), usize::MAX)
            .expect("read back");
        assert_eq!(read, recovered.entries);
    }
    assert!(durable_max > 0, "the child never reported anything durable");
}
