//! The simulator is only worth its green runs if it goes red on a broken Raft. Each test
//! here runs the cluster with one deliberately broken rule and asserts that some seed in
//! a bounded range finds a violation, and that the same seed passes with the rule intact.
#![cfg(feature = "broken-variants")]

use rkv_raft::Bug;
use rkv_sim::{Options, run};

/// Runs seeds `0..max_seeds` with `bug` and returns the first failing one.
fn first_failing_seed(bug: Bug, nodes: usize, max_seeds: u64) -> Option<(u64, String)> {
    (0..max_seeds).find_map(|seed| {
        let mut options = Options::new(seed);
        options.nodes = nodes;
        options.bug = Some(bug);
        run(options)
            .violation
            .map(|v| (seed, format!("{}: {}", v.property, v.detail)))
    })
}

fn assert_caught(bug: Bug, nodes: usize, max_seeds: u64) {
    let Some((seed, what)) = first_failing_seed(bug, nodes, max_seeds) else {
        panic!("{bug:?} went unnoticed for {max_seeds} seeds");
    };
    println!("{bug:?} caught by seed {seed}: {what}");
    let mut healthy = Options::new(seed);
    healthy.nodes = nodes;
    let report = run(healthy);
    assert!(
        report.violation.is_none(),
        "seed {seed} fails even without the bug: {:?}",
        report.violation
    );
}

#[test]
fn granting_votes_without_the_log_check_is_caught() {
    assert_caught(Bug::VoteWithoutLogCheck, 0, 200);
}

#[test]
fn acknowledging_before_persisting_is_caught() {
    assert_caught(Bug::AckBeforePersist, 0, 400);
}

#[test]
fn reads_without_a_quorum_round_are_caught_as_stale_reads() {
    assert_caught(Bug::ReadWithoutQuorum, 0, 600);
}

/// The paper's figure 8 needs a precise sequence of elections and crashes, so it is the
/// rarest of the four: with three nodes a few thousand seeds find it.
#[test]
fn committing_an_old_term_entry_by_counting_replicas_is_caught() {
    assert_caught(Bug::CommitOldTermByCount, 3, 8_000);
}
