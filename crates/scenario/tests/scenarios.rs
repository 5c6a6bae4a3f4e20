//! Every scenario, briefly, against real rkvd processes: each must end with a
//! linearizable history, no lost acknowledged writes and agreeing replicas. And the
//! checking is not vacuous: a cluster started with `-unsafe-local-reads` (reads served
//! from any replica's local state) must be caught serving a stale read.
//!
//! Partition scenarios need root and nftables; `scripts/test` installs nftables.
//! rkvd is another package's binary: `cargo test --workspace` builds it into the same
//! target directory, where it is looked up (`target/<profile>/rkvd`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

fn run(scenario: &str, extra: &[&str]) -> (Output, String) {
    let out = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_rkv-scenario"))
        .arg(scenario)
        .args(["--seconds", SECONDS, "--seed", SEED])
        .arg("--rkvd")
        .arg(rkvd_path())
        .arg("--out")
        .arg(out.path())
        .args(extra)
        .output()
        .expect("run rkv-scenario");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, stdout)
}

fn passes(scenario: &str) {
    let (output, stdout) = run(scenario, &[]);
    assert!(
        output.status.success(),
        "scenario {scenario} (seed {SEED}) failed with {}:\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "linearizable: yes",
        "lost acknowledged writes: 0",
        "replicas agree: yes",
        "recovered after healing: yes",
    ] {
        assert!(
            stdout.contains(line),
            "{scenario}: no {line:?} in:\n{stdout}"
        );
    }
    if scenario != "none" {
        assert!(
            !stdout.contains("faults:\n  (none)"),
            "{scenario} injected no fault:\n{stdout}"
        );
    }
}

#[test]
fn no_faults() {
    passes("none");
}

#[test]
fn crash_leader() {
    passes("crash-leader");
}

#[test]
fn crash_all() {
    passes("crash-all");
}

#[test]
fn pause() {
    passes("pause");
}

#[test]
fn partition_follower() {
    passes("partition-follower");
}

#[test]
fn partition_leader() {
    passes("partition-leader");
}

#[test]
fn partition_random() {
    passes("partition-random");
}

#[test]
fn replace_leader() {
    passes("replace-leader");
}

#[test]
fn membership_churn() {
    passes("membership-churn");
}

#[test]
fn all_faults_mixed() {
    passes("all");
}

#[test]
fn unsafe_local_reads_are_caught() {
    let (output, stdout) = run("none", &["--keys", "2", "--rkvd-arg=-unsafe-local-reads"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "the stale reads of -unsafe-local-reads went unnoticed:\n{stdout}"
    );
    assert!(stdout.contains("linearizable: no"), "{stdout}");
    assert!(
        stdout.contains("is not linearizable; failing sub-history"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("reproduce with --seed {SEED}")),
        "{stdout}"
    );
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
}
