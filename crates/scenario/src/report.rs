//! The report of one run: what happened (operations, faults, leader changes, throughput,
//! availability) and the verdict, printed at the end and kept in the output directory.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rkv_check::{OpKind, Operation, Outcome, Verdict};

use crate::Scenario;
use crate::analysis::LostWrite;
use crate::faults::FaultEvent;

/// One replica's state at the end.
#[derive(Clone, Debug)]
pub struct Replica {
    /// Its id.
    pub id: u64,
    /// The index its state machine had applied when read.
    pub applied: u64,
    /// A hash of its whole key space (FNV-1a over the sorted pairs).
    pub digest: u64,
    /// How many keys it holds.
    pub keys: usize,
}

/// Everything a run found.
#[derive(Clone, Debug)]
pub struct Report {
    /// The scenario.
    pub scenario: Scenario,
    /// Its seed.
    pub seed: u64,
    /// Initial voters.
    pub voters: usize,
    /// rkvd's election timeout.
    pub election: Duration,
    /// How the partitions were made, if any were.
    pub partitions: &'static str,
    /// Length of the load period.
    pub load: Duration,
    /// The workload's clients.
    pub clients: u64,
    /// The history, final reads included.
    pub history: Vec<Operation>,
    /// What the fault schedule did.
    pub faults: Vec<FaultEvent>,
    /// (time, term, leader) each time a new leader was seen.
    pub leaders: Vec<(u64, u64, u64)>,
    /// The longest stretch of the load period with no successful write: (start, length).
    pub longest_gap: (u64, u64),
    /// For each fault: its start, what it was, and the time to the next successful write.
    pub recoveries: Vec<(u64, String, Option<u64>)>,
    /// Successful operations per second of the load period.
    pub throughput: Vec<u64>,
    /// Whether the healed cluster answered the final reads.
    pub recovered: bool,
    /// The checker's verdict.
    pub verdict: Verdict,
    /// Acknowledged writes that are gone.
    pub lost: Vec<LostWrite>,
    /// Every member's state at the end.
    pub replicas: Vec<Replica>,
    /// Why the replicas are not known to agree (`None`: they agree).
    pub divergence: Option<String>,
    /// rkvd processes that exited without being told to.
    pub unexpected_exits: Vec<(u64, String)>,
}

impl Report {
    /// Whether the run found no violation of any kind.
    pub fn passed(&self) -> bool {
        self.verdict.is_linearizable()
            && self.lost.is_empty()
            && self.divergence.is_none()
            && self.recovered
            && self.unexpected_exits.is_empty()
    }

    /// Whether the run found a definite violation (as opposed to being inconclusive).
    pub fn violated(&self) -> bool {
        self.verdict.violation().is_some()
            || !self.lost.is_empty()
            || self.divergence.is_some()
            || !self.recovered
            || !self.unexpected_exits.is_empty()
    }

    fn outcomes(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        let mut counts = BTreeMap::new();
        for op in &self.history {
            let kind = match op.kind {
                OpKind::Get { .. } => "get",
                OpKind::Put { .. } => "put",
                OpKind::Delete => "delete",
                OpKind::Cas { .. } => "cas",
            };
            let outcome = match op.outcome {
                Outcome::Ok => "ok",
                Outcome::Failed => "failed",
                Outcome::Unknown => "unknown",
            };
            *counts.entry((kind, outcome)).or_insert(0) += 1;
        }
        counts
    }
}

fn ms(us: u64) -> String {
    format!("{:.0} ms", us as f64 / 1000.0)
}

fn secs(us: u64) -> String {
    format!("{:>7.3}s", us as f64 / 1_000_000.0)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "scenario: {}  seed: {}  voters: {}  clients: {}  load: {:?}  election timeout: {:?}",
            self.scenario, self.seed, self.voters, self.clients, self.load, self.election
        )?;
        writeln!(f, "partitions: {}", self.partitions)?;
        let counts = self.outcomes();
        let total: u64 = counts.values().sum();
        writeln!(f, "operations: {total}")?;
        for kind in ["get", "put", "delete", "cas"] {
            let n = |outcome| counts.get(&(kind, outcome)).copied().unwrap_or(0);
            writeln!(
                f,
                "  {kind:<6} ok {:>6}  failed {:>5}  unknown {:>5}",
                n("ok"),
                n("failed"),
                n("unknown")
            )?;
        }
        writeln!(f, "faults:")?;
        if self.faults.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for event in &self.faults {
            writeln!(f, "  {} {}", secs(event.at), event.what)?;
        }
        writeln!(f, "leaders seen:")?;
        for (at, term, leader) in &self.leaders {
            writeln!(f, "  {} term {term}: node {leader}", secs(*at))?;
        }
        writeln!(
            f,
            "longest window without a successful write: {} (from {})",
            ms(self.longest_gap.1),
            secs(self.longest_gap.0).trim()
        )?;
        for (at, what, recovery) in &self.recoveries {
            let recovery = recovery.map_or_else(|| "none before the load ended".into(), ms);
            writeln!(
                f,
                "  after {what} at {}: first write {recovery}",
                secs(*at).trim()
            )?;
        }
        let throughput: Vec<String> = self.throughput.iter().map(u64::to_string).collect();
        writeln!(f, "successful ops per second: {}", throughput.join(" "))?;
        writeln!(f, "replicas at the end:")?;
        for r in &self.replicas {
            writeln!(
                f,
                "  node {}: applied {} keys {} digest {:016x}",
                r.id, r.applied, r.keys, r.digest
            )?;
        }
        for (id, status) in &self.unexpected_exits {
            writeln!(f, "node {id} exited by itself: {status}")?;
        }
        writeln!(
            f,
            "recovered after healing: {}",
            if self.recovered { "yes" } else { "no" }
        )?;
        writeln!(
            f,
            "replicas agree: {}",
            self.divergence
                .as_deref()
                .map_or("yes".into(), |why| format!("no ({why})"))
        )?;
        for lost in &self.lost {
            writeln!(f, "LOST: {} (final value {:?})", lost.op, lost.final_value)?;
        }
        match &self.verdict {
            Verdict::Linearizable => writeln!(f, "linearizable: yes")?,
            Verdict::NotLinearizable(violation) => {
                writeln!(f, "{violation}")?;
                writeln!(f, "linearizable: no")?;
            }
            Verdict::Inconclusive { key, reason } => {
                writeln!(f, "linearizable: unknown (key {key:?}: {reason})")?;
            }
        }
        writeln!(f, "lost acknowledged writes: {}", self.lost.len())?;
        if self.violated() {
            writeln!(f, "VIOLATION: reproduce with --seed {}", self.seed)?;
        }
        Ok(())
    }
}
