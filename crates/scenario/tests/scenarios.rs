//! Every scenario, briefly, against real rkvd processes: each must end with a
//! linearizable history, no lost acknowledged writes and agreeing replicas. And the
//! checking is not vacuous: a cluster started with `-unsafe-local-reads` (reads served
//! from any replica's local state) must be caught serving a stale read.
//!
//! Partition scenarios need root and nftables; `scripts/test` installs nftables.
//! rkvd is another package's binary: `cargo test --workspace` builds it into the same
//! target directory, where it is looked up (`target/<profile>/rkvd`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Seconds of load per scenario here (the tool's default is 30).
const SECONDS: &str = "4";
/// The seed CI runs with.
const SEED: &str = "7";

fn rkvd_path() -> PathBuf {
    let test_exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let rkvd = profile_dir.join(format!("rkvd{}", std::env::consts::EXE_SUFFIX));
    assert!(
        rkvd.is_file(),
        "rkvd not found at {}: run `cargo build -p rkv-server` first \
         (`cargo test --workspace` builds it too)",
        rkvd.display()
    );
    rkvd
}

/// One finished run: its exit, its report, and its output directory (kept on disk if
/// the test fails, for the history and the node logs).
struct Run {
    output: Output,
    stdout: String,
    scenario_pid: u32,
    out: PathBuf,
}

fn run(scenario: &str, extra: &[&str]) -> Run {
    let out = tempfile::tempdir().expect("temp dir").keep();
    let child = Command::new(env!("CARGO_BIN_EXE_rkv-scenario"))
        .arg(scenario)
        .args(["--seconds", SECONDS, "--seed", SEED])
        .arg("--rkvd")
        .arg(rkvd_path())
        .arg("--out")
        .arg(&out)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rkv-scenario");
    let scenario_pid = child.id();
    let output = child.wait_with_output().expect("wait for rkv-scenario");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    Run {
        output,
        stdout,
        scenario_pid,
        out,
    }
}

impl Run {
    /// Deletes the output directory (call when the test passed).
    fn clean_up(self) {
        let _ = std::fs::remove_dir_all(&self.out);
    }
}

/// The run left nothing behind: its rkvd processes are gone and its nftables table too.
fn left_nothing_behind(run: &Run) {
    let pids = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("rkvd processes (all stopped): "))
        .unwrap_or_else(|| panic!("no process list in:\n{}", run.stdout));
    let pids: Vec<u32> = pids
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().expect("a pid"))
        .collect();
    assert!(!pids.is_empty(), "no rkvd was started:\n{}", run.stdout);
    let out = run.out.to_string_lossy().into_owned();
    for pid in pids {
        // A reused pid is fine, as long as it is not one of this run's servers.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&out),
            "rkvd {pid} of this run still runs"
        );
    }
    if let Ok(tables) = Command::new("nft").args(["list", "tables"]).output() {
        let table = format!("rkv_scenario_{}", run.scenario_pid);
        assert!(
            !String::from_utf8_lossy(&tables.stdout).contains(&table),
            "nftables table {table} was left behind"
        );
    }
}

fn faults_injected(stdout: &str) -> usize {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("faults injected: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no fault count in:\n{stdout}"))
}

fn passes(scenario: &str) -> Run {
    let run = run(scenario, &[]);
    let (stdout, out) = (&run.stdout, run.out.display());
    assert!(
        run.output.status.success(),
        "scenario {scenario} (seed {SEED}) failed with {}; kept {out}:\n{stdout}\n{}",
        run.output.status,
        String::from_utf8_lossy(&run.output.stderr)
    );
    for line in [
        "linearizable: yes",
        "lost acknowledged writes: 0",
        "replicas agree: yes",
        "recovered after healing: yes",
    ] {
        assert!(
            stdout.contains(line),
            "{scenario}: no {line:?}; kept {out}:\n{stdout}"
        );
    }
    let injected = faults_injected(stdout);
    if scenario == "none" {
        assert_eq!(injected, 0, "{stdout}");
    } else {
        assert!(injected >= 1, "{scenario} injected no fault:\n{stdout}");
    }
    left_nothing_behind(&run);
    run
}

#[test]
fn no_faults() {
    passes("none").clean_up();
}

#[test]
fn crash_leader() {
    passes("crash-leader").clean_up();
}

#[test]
fn crash_all() {
    passes("crash-all").clean_up();
}

#[test]
fn pause() {
    passes("pause").clean_up();
}

#[test]
fn partition_follower() {
    passes("partition-follower").clean_up();
}

#[test]
fn partition_leader() {
    passes("partition-leader").clean_up();
}

#[test]
fn partition_random() {
    passes("partition-random").clean_up();
}

#[test]
fn replace_leader() {
    let run = passes("replace-leader");
    assert!(
        run.stdout.contains("; stopped it") && run.stdout.contains("promoted"),
        "no leader was replaced:\n{}",
        run.stdout
    );
    run.clean_up();
}

#[test]
fn membership_churn() {
    passes("membership-churn").clean_up();
}

#[test]
fn all_faults_mixed() {
    passes("all").clean_up();
}

#[test]
fn unsafe_local_reads_are_caught() {
    let run = run("none", &["--keys", "2", "--rkvd-arg=-unsafe-local-reads"]);
    let (stdout, out) = (&run.stdout, run.out.display());
    assert_eq!(
        run.output.status.code(),
        Some(1),
        "the stale reads of -unsafe-local-reads went unnoticed; kept {out}:\n{stdout}"
    );
    assert!(stdout.contains("linearizable: no"), "{stdout}");
    assert!(
        stdout.contains("is not linearizable; failing sub-history"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("--seed {SEED}")), "{stdout}");
    left_nothing_behind(&run);
    run.clean_up();
}

#[test]
fn bad_arguments_are_refused_clearly() {
    let output = Command::new(env!("CARGO_BIN_EXE_rkv-scenario"))
        .args(["no-such-scenario", "--rkvd"])
        .arg(rkvd_path())
        .output()
        .expect("run rkv-scenario");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown scenario \"no-such-scenario\""),
        "{stderr}"
    );
    assert!(stderr.contains("partition-leader"), "{stderr}");
    let output = Command::new(env!("CARGO_BIN_EXE_rkv-scenario"))
        .args(["none", "--rkvd", "/nonexistent/rkvd"])
        .output()
        .expect("run rkv-scenario");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no rkvd at /nonexistent/rkvd"));
    // A directory it did not make is never cleared.
    let foreign = tempfile::tempdir().expect("temp dir");
    std::fs::write(foreign.path().join("precious"), "keep me").expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_rkv-scenario"))
        .args(["none", "--rkvd"])
        .arg(rkvd_path())
        .arg("--out")
        .arg(foreign.path())
        .output()
        .expect("run rkv-scenario");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("was not made by rkv-scenario"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(foreign.path().join("precious").exists());
}
