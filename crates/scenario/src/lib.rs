//! # rkv-scenario: faults on real processes, every history checked
//!
//! The simulator proves the algorithm; this crate tests the program. One run, on one
//! machine:
//!
//! 1. starts a real cluster of `rkvd` processes ([`cluster`]), each on its own loopback
//!    address, in a directory of the run;
//! 2. runs a contended workload ([`workload`]): several clients doing linearizable reads,
//!    writes, deletes and compare-and-swaps on a few keys through the client library with
//!    its normal retries, every operation recorded with its times and outcome;
//! 3. injects the scenario's faults on a seeded schedule ([`faults`]): SIGKILL, SIGSTOP,
//!    real packet-dropping partitions ([`firewall`], nftables on the nodes' addresses),
//!    membership changes;
//! 4. heals everything, reads every key back linearizably, and checks the history with
//!    `rkv-check`, looks for acknowledged writes that are gone ([`analysis`]), and compares
//!    every replica's contents at the same applied index;
//! 5. writes a report ([`report`]) and the history to the output directory.
//!
//! The binary `rkv-scenario` is the command-line front end; `run` is the whole run.

pub mod analysis;
pub mod cluster;
pub mod faults;
pub mod firewall;
pub mod report;
pub mod run;
pub mod workload;

use std::fmt;

pub use report::Report;
pub use run::{Options, run};

/// What can stop a run from being carried out (not a verdict about the cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScenarioError {
    /// Starting, signalling or reaching the rkvd processes failed.
    Cluster(String),
    /// The partition rules could not be installed or removed.
    Firewall(String),
    /// Files of the run could not be written.
    Io(String),
    /// The options do not make sense.
    Usage(String),
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScenarioError::Cluster(why) => write!(f, "cluster: {why}"),
            ScenarioError::Firewall(why) => write!(f, "partitions: {why}"),
            ScenarioError::Io(why) => write!(f, "files: {why}"),
            ScenarioError::Usage(why) => write!(f, "usage: {why}"),
        }
    }
}

impl std::error::Error for ScenarioError {}

/// The named fault scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// No faults: the baseline.
    None,
    /// SIGKILL the leader, restart it from its directory later.
    CrashLeader,
    /// SIGKILL every node at once, restart all (the durability test).
    CrashAll,
    /// SIGSTOP a node (leader or follower) for a while, then SIGCONT.
    Pause,
    /// Cut one follower off from the others for 5 s, then heal (the original's experiment).
    PartitionFollower,
    /// Isolate the leader, so that a new one is elected while the old one still believes
    /// it leads.
    PartitionLeader,
    /// Random majorities and minorities, repeatedly.
    PartitionRandom,
    /// Remove the leader from the configuration and add a fresh server.
    ReplaceLeader,
    /// Add and remove members during load.
    MembershipChurn,
    /// A seeded mix of all of the above.
    All,
}

impl Scenario {
    /// Every scenario, in the order the help lists them.
    pub const EVERY: [Scenario; 10] = [
        Scenario::None,
        Scenario::CrashLeader,
        Scenario::CrashAll,
        Scenario::Pause,
        Scenario::PartitionFollower,
        Scenario::PartitionLeader,
        Scenario::PartitionRandom,
        Scenario::ReplaceLeader,
        Scenario::MembershipChurn,
        Scenario::All,
    ];

    /// The scenario's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::None => "none",
            Scenario::CrashLeader => "crash-leader",
            Scenario::CrashAll => "crash-all",
            Scenario::Pause => "pause",
            Scenario::PartitionFollower => "partition-follower",
            Scenario::PartitionLeader => "partition-leader",
            Scenario::PartitionRandom => "partition-random",
            Scenario::ReplaceLeader => "replace-leader",
            Scenario::MembershipChurn => "membership-churn",
            Scenario::All => "all",
        }
    }

    /// The scenario called `name`.
    pub fn parse(name: &str) -> Result<Scenario, ScenarioError> {
        Scenario::EVERY
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Scenario::EVERY.iter().map(|s| s.name()).collect();
                ScenarioError::Usage(format!(
                    "unknown scenario {name:?}; one of: {}",
                    names.join(", ")
                ))
            })
    }

    /// Whether it needs packet filtering (root and nftables).
    pub fn needs_firewall(self) -> bool {
        matches!(
            self,
            Scenario::PartitionFollower
                | Scenario::PartitionLeader
                | Scenario::PartitionRandom
                | Scenario::All
        )
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
