//! One whole run: cluster up, load and faults, heal, final reads, checks, report.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rkv_check::{OpKind, Operation, Outcome};
use rkv_client::zipf::Rng;
use rkv_client::{Client, ClientConfig, Consistency};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::analysis;
use crate::cluster::{Cluster, ClusterSpec};
use crate::faults::{Faults, probe_config};
use crate::firewall::Firewall;
use crate::report::{Gap, LeaderSeen, Recovery, Replica, Report};
use crate::workload::{self, Recorder};
use crate::{Scenario, ScenarioError};

/// The client id the final reads are recorded under.
pub const FINAL_READER: u64 = 0;

/// Longest the cluster may take to answer at start and after healing.
const RECOVERY_MAX: Duration = Duration::from_secs(60);

/// Most workload clients.
pub const CLIENTS_MAX: u64 = 256;

/// Most keys the workload shares (each is read back at the end).
pub const KEYS_MAX: u64 = 1000;

/// Most pairs read from one replica when comparing them.
const KEYS_READ_MAX: usize = 1_000_000;

/// Longest the checker may search (then the verdict is inconclusive).
const CHECK_BUDGET: Duration = Duration::from_secs(120);

/// A run's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Which faults.
    pub scenario: Scenario,
    /// Seeds the fault schedule and the workload (not the timing, nor the addresses).
    pub seed: u64,
    /// How long the workload runs.
    pub load: Duration,
    /// Initial voters (3 or 5).
    pub voters: usize,
    /// Concurrent workload clients.
    pub clients: u64,
    /// Keys the workload touches.
    pub keys: u64,
    /// Where the history, the report, the node logs and the data go.
    pub out: PathBuf,
    /// The rkvd binary.
    pub rkvd: PathBuf,
    /// rkvd's `-election`.
    pub election: Duration,
    /// rkvd's `-heartbeat`.
    pub heartbeat: Duration,
    /// Extra flags for every rkvd.
    pub rkvd_args: Vec<String>,
    /// Keep the nodes' data directories after a passing run.
    pub keep_data: bool,
}

fn workload_config() -> ClientConfig {
    ClientConfig {
        deadline: Duration::from_secs(4),
        attempt_timeout: Duration::from_secs(1),
        backoff_max: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(500),
        ..ClientConfig::default()
    }
}

/// The file that marks a directory as one this tool made (so it may clear it).
const MARKER: &str = ".rkv-scenario";

/// Makes `out` ready for a run: creates it, or clears what an earlier run of this tool
/// left there. A non-empty directory the tool did not make is refused, never cleared.
fn prepare_out_dir(out: &Path) -> Result<(), ScenarioError> {
    let io =
        |what: &str, e: std::io::Error| ScenarioError::Io(format!("{what} {}: {e}", out.display()));
    if out.exists() {
        let mut entries = std::fs::read_dir(out).map_err(|e| io("reading", e))?;
        if entries.next().is_some() && !out.join(MARKER).exists() {
            return Err(ScenarioError::Usage(format!(
                "{} is not empty and was not made by rkv-scenario: choose another --out",
                out.display()
            )));
        }
        for entry in std::fs::read_dir(out)
            .map_err(|e| io("reading", e))?
            .flatten()
        {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let result = if name == "nodes" {
                std::fs::remove_dir_all(&path)
            } else if name.starts_with("rkvd-") || name == "history.jsonl" || name == "report.txt" {
                std::fs::remove_file(&path)
            } else {
                Ok(())
            };
            result.map_err(|e| io("clearing", e))?;
        }
    }
    std::fs::create_dir_all(out).map_err(|e| io("creating", e))?;
    std::fs::write(
        out.join(MARKER),
        "made by rkv-scenario; cleared by its next run\n",
    )
    .map_err(|e| io("marking", e))
}

/// Tries `attempt` every 100 ms until it gives a value or `limit` has passed.
async fn retry_until<T, F, Fut>(limit: Duration, mut attempt: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = attempt().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Carries out a run and reports what it found. Errors mean the run could not be
/// carried out; violations are in the report.
pub async fn run(options: Options) -> Result<Report, ScenarioError> {
    if !(1..=7).contains(&options.voters) {
        return Err(ScenarioError::Usage("--nodes must be 1 to 7".into()));
    }
    if !(1..=CLIENTS_MAX).contains(&options.clients) || !(1..=KEYS_MAX).contains(&options.keys) {
        return Err(ScenarioError::Usage(format!(
            "--clients must be 1 to {CLIENTS_MAX} and --keys 1 to {KEYS_MAX}"
        )));
    }
    prepare_out_dir(&options.out)?;

    let mut rng = Rng::new(options.seed);
    // Addresses: a random 127.a.b.0/24 block and port, so that runs side by side do not
    // collide; drawn from the time and pid, not the seed (two runs may share a seed).
    let salt = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let mut address_rng = Rng::new(salt);
    let spec = ClusterSpec {
        rkvd: options.rkvd.clone(),
        dir: options.out.clone(),
        voters: options.voters,
        spares: 2,
        election: options.election,
        heartbeat: options.heartbeat,
        block: [
            1 + (address_rng.next_u64() % 254) as u8,
            (address_rng.next_u64() % 256) as u8,
        ],
        // Below the ephemeral range (32768+), peer ports (+1000) included.
        port: 20_000 + (address_rng.next_u64() % 11_000) as u16,
        extra_args: options.rkvd_args.clone(),
    };
    let mut firewall = if options.scenario.needs_firewall() {
        Some(Firewall::new()?)
    } else {
        None
    };
    let mut cluster = Cluster::new(spec);
    for id in cluster.initial_voters() {
        cluster.start(id)?;
    }
    let probe = cluster.client(&[], workload_config())?;
    let deadline = Instant::now() + RECOVERY_MAX;
    loop {
        if probe.put("_scenario_ready", "1").await.is_ok() {
            break;
        }
        let exits = cluster.unexpected_exits();
        if !exits.is_empty() || Instant::now() >= deadline {
            return Err(ScenarioError::Cluster(format!(
                "the cluster did not take a first write (exited: {exits:?}); see {}/rkvd-*.log",
                options.out.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let recorder = Recorder::new();
    let (stop, stopped) = watch::channel(false);
    let leaders = Arc::new(Mutex::new(Vec::new()));
    let observer = tokio::spawn(observe(
        cluster.addresses(),
        recorder.clone(),
        leaders.clone(),
        stopped.clone(),
    ));
    let mut workers = JoinSet::new();
    let voters = cluster.initial_voters();
    for w in 0..options.clients {
        let home = voters[(w as usize) % voters.len()];
        let client = cluster.client(&[home], workload_config())?;
        workers.spawn(workload::worker(
            w + 1,
            client,
            options.keys,
            options.seed,
            recorder.clone(),
            stopped.clone(),
        ));
    }

    let load_start = recorder.now();
    let until = Instant::now() + options.load;
    let fault_seed = rng.next_u64();
    let (faults, schedule) = {
        let mut faults = Faults::new(
            &mut cluster,
            firewall.as_mut(),
            recorder.clone(),
            fault_seed,
        )?;
        let result = faults.run_schedule(options.scenario, until).await;
        (std::mem::take(&mut faults.events), result)
    };
    let load_end = recorder.now();
    let _ = stop.send(true);
    while workers.join_next().await.is_some() {}
    // Keep the evidence before anything else can fail.
    write_file(&options.out.join("history.jsonl"), &jsonl(&recorder.ops()))?;
    schedule?;

    // Heal everything, then read back and compare.
    if let Some(firewall) = firewall.as_mut() {
        firewall.heal()?;
    }
    cluster.resume_all()?;
    let admin = cluster.client(&[], workload_config())?;
    let members = retry_until(RECOVERY_MAX, || async {
        admin
            .member_list()
            .await
            .ok()
            .map(|m| m.iter().map(|m| m.id).collect::<Vec<u64>>())
    })
    .await;
    for id in members.clone().unwrap_or_else(|| cluster.members()) {
        cluster.start(id)?;
    }
    let mut finals = BTreeMap::new();
    let mut recovered = true;
    for k in 0..options.keys {
        let key = workload::key_name(k);
        match final_read(&admin, &recorder, &key).await {
            Some(value) => {
                finals.insert(key, value);
            }
            None => recovered = false,
        }
    }
    let _ = observer.await;
    let (replicas, comparison) = match &members {
        Some(members) => compare_replicas(&cluster, members).await,
        None => (
            Vec::new(),
            Comparison::Unknown("the members could not be listed".into()),
        ),
    };
    let unexpected_exits = cluster.unexpected_exits();
    cluster.stop_all();
    let pids = cluster.pids().to_vec();
    drop(cluster);
    drop(firewall);

    let history = recorder.ops();
    write_file(&options.out.join("history.jsonl"), &jsonl(&history))?;
    let (verdict, history, lost) = tokio::task::spawn_blocking(move || {
        let verdict = rkv_check::check_with_limit(&history, CHECK_BUDGET);
        let lost = analysis::lost_writes(&history, &finals);
        (verdict, history, lost)
    })
    .await
    .map_err(|e| ScenarioError::Io(format!("the checker failed: {e}")))?;
    let completions = analysis::write_completions(&history);
    let recoveries = faults
        .iter()
        .filter(|e| e.starts_fault)
        .map(|e| Recovery {
            at_us: e.at_us,
            what: e.what.clone(),
            first_write_us: analysis::recovery_after(&history, e.at_us),
        })
        .collect();
    let (start_us, length_us) = analysis::longest_gap(&completions, load_start, load_end);
    let leaders = leaders
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let (divergence, compare_problem) = match comparison {
        Comparison::Agree => (None, None),
        Comparison::Differ(why) => (Some(why), None),
        Comparison::Unknown(why) => (None, Some(why)),
    };
    let report = Report {
        scenario: options.scenario,
        seed: options.seed,
        voters: options.voters,
        election: options.election,
        partitions: if options.scenario.needs_firewall() {
            "real: nftables rules dropping the packets between the nodes' own loopback addresses"
        } else {
            "none in this scenario"
        },
        load: Duration::from_micros(load_end - load_start),
        clients: options.clients,
        longest_gap: Gap {
            start_us,
            length_us,
        },
        throughput: analysis::throughput_per_second(&history, load_end),
        history,
        faults,
        leaders,
        recoveries,
        recovered,
        verdict,
        lost,
        replicas,
        divergence,
        compare_problem,
        unexpected_exits,
        pids,
    };
    write_file(
        &options.out.join("report.txt"),
        report.to_string().as_bytes(),
    )?;
    if report.passed() && !options.keep_data {
        let nodes = options.out.join("nodes");
        std::fs::remove_dir_all(&nodes)
            .map_err(|e| ScenarioError::Io(format!("removing {}: {e}", nodes.display())))?;
    }
    Ok(report)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ScenarioError> {
    std::fs::write(path, bytes)
        .map_err(|e| ScenarioError::Io(format!("writing {}: {e}", path.display())))
}

fn jsonl(history: &[Operation]) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = rkv_check::write_jsonl(&mut out, history);
    out
}

/// Reads `key` linearizably after healing, retrying until [`RECOVERY_MAX`]; records it.
async fn final_read(client: &Client, recorder: &Recorder, key: &str) -> Option<Option<String>> {
    retry_until(RECOVERY_MAX, || async {
        let invoke = recorder.now();
        let value = client.get(key, Consistency::Linearizable).await.ok()?;
        let value = value.map(|v| String::from_utf8_lossy(&v).into_owned());
        recorder.push(Operation {
            client: FINAL_READER,
            key: key.to_string(),
            invoke,
            complete: recorder.now().max(invoke),
            outcome: Outcome::Ok,
            kind: OpKind::Get {
                value: value.clone(),
            },
        });
        Some(value)
    })
    .await
}

/// Polls every node's status and records each new (term, leader) seen.
async fn observe(
    addresses: Vec<String>,
    recorder: Arc<Recorder>,
    leaders: Arc<Mutex<Vec<LeaderSeen>>>,
    mut stop: watch::Receiver<bool>,
) {
    let clients: Vec<Arc<Client>> = addresses
        .iter()
        .filter_map(|a| Client::new([a.as_str()], probe_config()).ok())
        .map(Arc::new)
        .collect();
    let mut last = (0, 0);
    while !*stop.borrow_and_update() {
        let mut asks = JoinSet::new();
        for client in &clients {
            let client = client.clone();
            asks.spawn(async move { client.status().await.ok() });
        }
        let mut best = (0, 0);
        while let Some(answer) = asks.join_next().await {
            if let Ok(Some(status)) = answer
                && status.leader_id != 0
                && (status.term, status.leader_id) > best
            {
                best = (status.term, status.leader_id);
            }
        }
        if best != (0, 0) && best.0 > last.0 {
            last = best;
            leaders
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(LeaderSeen {
                    at_us: recorder.now(),
                    term: best.0,
                    node: best.1,
                });
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// FNV-1a over the sorted pairs, each part followed by a zero byte.
fn digest(pairs: &[(bytes::Bytes, bytes::Bytes)]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for (key, value) in pairs {
        for part in [&key[..], b"\0", &value[..], b"\0"] {
            for byte in part {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    hash
}

/// What comparing the replicas found.
enum Comparison {
    /// Same data at the same applied index.
    Agree,
    /// Different data at the same applied index.
    Differ(String),
    /// They could not be compared (a liveness problem, not a verdict).
    Unknown(String),
}

/// Waits (bounded) until every member has applied the same index, then reads each one's
/// whole key space locally and compares.
async fn compare_replicas(cluster: &Cluster, members: &[u64]) -> (Vec<Replica>, Comparison) {
    let deadline = Instant::now() + RECOVERY_MAX;
    loop {
        let mut replicas = Vec::new();
        let mut problem = None;
        for id in members {
            let Ok(client) = cluster.client_of(*id, workload_config()) else {
                problem = Some(format!("node {id} has no address"));
                break;
            };
            let before = client.status().await.map(|s| s.applied_index);
            let pairs = client
                .scan_prefix("", KEYS_READ_MAX, Consistency::Stale)
                .await;
            let after = client.status().await.map(|s| s.applied_index);
            match (before, pairs, after) {
                (Ok(applied), Ok(pairs), Ok(after)) if applied == after => {
                    replicas.push(Replica {
                        id: *id,
                        applied,
                        digest: digest(&pairs),
                        keys: pairs.len(),
                    });
                }
                _ => {
                    problem = Some(format!("node {id} did not hold still to be read"));
                    break;
                }
            }
        }
        if problem.is_none() {
            let applied: Vec<u64> = replicas.iter().map(|r| r.applied).collect();
            if applied.windows(2).all(|w| w[0] == w[1]) {
                let digests: Vec<u64> = replicas.iter().map(|r| r.digest).collect();
                let comparison = if digests.windows(2).all(|w| w[0] == w[1]) {
                    Comparison::Agree
                } else {
                    Comparison::Differ(
                        "replicas hold different data at the same applied index".into(),
                    )
                };
                return (replicas, comparison);
            }
            problem = Some(format!("applied indexes differ: {applied:?}"));
        }
        if Instant::now() >= deadline {
            let why = problem.unwrap_or_default();
            return (
                Vec::new(),
                Comparison::Unknown(format!(
                    "no common applied index within {RECOVERY_MAX:?}: {why}"
                )),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
