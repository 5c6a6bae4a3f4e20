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

/// A new leader, as the observer first saw it.
#[derive(Clone, Debug)]
pub struct LeaderSeen {
    /// When, in microseconds since the run started.
    pub at_us: u64,
    /// Its term.
    pub term: u64,
    /// Its id.
    pub node: u64,
}

/// How long one fault kept new writes from succeeding.
#[derive(Clone, Debug)]
pub struct Recovery {
    /// When the fault started, in microseconds since the run started.
    pub at_us: u64,
    /// The fault, in words.
    pub what: String,
    /// Time from the fault to the completion of the first successful write invoked after
    /// it (`None`: none before the load ended).
    pub first_write_us: Option<u64>,
}

/// The longest stretch of the load period without a successful write.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gap {
    /// Its start, in microseconds since the run started.
    pub start_us: u64,
    /// Its length in microseconds.
    pub length_us: u64,
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
    /// How long the load actually ran.
    pub load: Duration,
    /// The workload's clients.
    pub clients: u64,
    /// The history, final reads included.
    pub history: Vec<Operation>,
    /// What the fault schedule did.
    pub faults: Vec<FaultEvent>,
    /// Each new leader seen.
    pub leaders: Vec<LeaderSeen>,
    /// The longest stretch of the load period with no successful write.
    pub longest_gap: Gap,
    /// For each fault, the time to the next successful write.
    pub recoveries: Vec<Recovery>,
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
    /// Replicas that hold different data at the same applied index (a safety violation).
    pub divergence: Option<String>,
    /// Why the replicas could not be compared, if they could not (not a verdict).
    pub compare_problem: Option<String>,
    /// rkvd processes that exited without being told to.
    pub unexpected_exits: Vec<(u64, String)>,
    /// Every rkvd process the run started (all stopped by the time it reports).
    pub pids: Vec<u32>,
}

impl Report {
    /// Whether the run found nothing wrong and could check everything.
    pub fn passed(&self) -> bool {
        !self.violated()
            && self.verdict.is_linearizable()
            && self.recovered
            && self.compare_problem.is_none()
    }

    /// Whether the run found a definite violation: a non-linearizable history, a lost
    /// write, replicas that differ, or a server that crashed by itself. (A cluster that
    /// did not recover, or a check that could not finish, is a failure but not proof.)
    pub fn violated(&self) -> bool {
        self.verdict.violation().is_some()
            || !self.lost.is_empty()
            || self.divergence.is_some()
            || !self.unexpected_exits.is_empty()
    }

    /// How many faults the schedule started.
    pub fn faults_injected(&self) -> usize {
        self.faults.iter().filter(|e| e.starts_fault).count()
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

fn millis(us: u64) -> String {
    format!("{:.0} ms", us as f64 / 1000.0)
}

fn seconds(us: u64) -> String {
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
        writeln!(f, "faults injected: {}", self.faults_injected())?;
        for event in &self.faults {
            writeln!(f, "  {} {}", seconds(event.at_us), event.what)?;
        }
        writeln!(f, "leaders seen:")?;
        for seen in &self.leaders {
            writeln!(
                f,
                "  {} term {}: node {}",
                seconds(seen.at_us),
                seen.term,
                seen.node
            )?;
        }
        writeln!(
            f,
            "longest window without a successful write: {} (from {})",
            millis(self.longest_gap.length_us),
            seconds(self.longest_gap.start_us).trim()
        )?;
        for recovery in &self.recoveries {
            let first = recovery
                .first_write_us
                .map_or_else(|| "none before the load ended".into(), millis);
            writeln!(
                f,
                "  after {} at {}: first write {first}",
                recovery.what,
                seconds(recovery.at_us).trim()
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
            writeln!(f, "CRASH: node {id} exited by itself: {status}")?;
        }
        writeln!(f, "rkvd processes (all stopped): {:?}", self.pids)?;
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
            writeln!(
                f,
                "VIOLATION: run again with --seed {} for the same fault schedule and workload",
                self.seed
            )?;
        }
        Ok(())
    }
}
