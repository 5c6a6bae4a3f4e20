//! One whole run: cluster up, load and faults, heal, final reads, checks, report.

use std::collections::BTreeMap;
use std::path::PathBuf;
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
use crate::report::{Replica, Report};
use crate::workload::{self, Recorder};
use crate::{Scenario, ScenarioError};

/// The client id the final reads are recorded under.
pub const FINAL_READER: u64 = 0;

/// Longest the cluster may take to answer at start and after healing.
const RECOVERY_MAX: Duration = Duration::from_secs(60);

/// Longest the checker may search (then the verdict is inconclusive).
const CHECK_BUDGET: Duration = Duration::from_secs(120);

/// A run's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Which faults.
    pub scenario: Scenario,
    /// Seeds the fault schedule, the workload and the addresses.
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

/// Carries out a run and reports what it found. Errors mean the run could not be
/// carried out; violations are in the report.
pub async fn run(options: Options) -> Result<Report, ScenarioError> {
    if !(1..=7).contains(&options.voters) {
        return Err(ScenarioError::Usage("--nodes must be 1 to 7".into()));
    }
    if options.clients == 0 || options.keys == 0 {
        return Err(ScenarioError::Usage(
            "--clients and --keys must be positive".into(),
        ));
    }
    std::fs::create_dir_all(&options.out)
        .map_err(|e| ScenarioError::Io(format!("creating {}: {e}", options.out.display())))?;
    let nodes_dir = options.out.join("nodes");
    if nodes_dir.exists() {
        std::fs::remove_dir_all(&nodes_dir)
            .map_err(|e| ScenarioError::Io(format!("clearing {}: {e}", nodes_dir.display())))?;
    }
    for entry in std::fs::read_dir(&options.out)
        .map_err(|e| ScenarioError::Io(format!("reading {}: {e}", options.out.display())))?
        .flatten()
    {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("rkvd-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }

    let mut rng = Rng::new(options.seed);
    // Addresses: a random 127.a.b.0/24 block (so runs side by side do not collide) and
    // a random port; seeded by the time too, since two runs may share a seed.
    let salt = std::process::id() as u64
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
    if !answers(&probe, RECOVERY_MAX).await {
        return Err(ScenarioError::Cluster(format!(
            "the cluster did not take a write within {RECOVERY_MAX:?}; see {}/rkvd-*.log",
            options.out.display()
        )));
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
    let faults = {
        let mut faults = Faults::new(
            &mut cluster,
            firewall.as_mut(),
            recorder.clone(),
            fault_seed,
        )?;
        let result = faults.run_schedule(options.scenario, until).await;
        let events = std::mem::take(&mut faults.events);
        result.map(|()| events)
    };
    let load_end = recorder.now();
    let _ = stop.send(true);
    let faults = faults?;
    while workers.join_next().await.is_some() {}

    // Heal everything, then check.
    if let Some(firewall) = firewall.as_mut() {
        firewall.heal()?;
    }
    cluster.resume_all()?;
    let unexpected_exits = cluster.exited_by_itself();
    let admin = cluster.client(&[], workload_config())?;
    let members = member_ids(&admin, RECOVERY_MAX).await;
    for id in members.clone().unwrap_or_else(|| cluster.initial_voters()) {
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

    let history = recorder.ops();
    let _ = std::fs::write(options.out.join("history.jsonl"), jsonl(&history));
    let verdict = rkv_check::check_with_limit(&history, CHECK_BUDGET);
    let lost = analysis::lost_writes(&history, &finals);
    let completions = analysis::write_completions(&history);
    let recoveries = faults
        .iter()
        .filter(|e| e.starts_fault)
        .map(|e| {
            (
                e.at,
                e.what.clone(),
                analysis::recovery_after(&history, e.at),
            )
        })
        .collect();
    let (replicas, divergence) = match &members {
        Some(members) => compare_replicas(&cluster, members).await,
        None => (Vec::new(), Some("the members could not be listed".into())),
    };
    let leaders = leaders
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let report = Report {
        scenario: options.scenario,
        seed: options.seed,
        voters: options.voters,
        election: options.election,
        partitions: if firewall.is_some() {
            "real: nftables rules dropping packets between the nodes' own loopback addresses"
        } else {
            "none in this scenario"
        },
        load: options.load,
        clients: options.clients,
        longest_gap: analysis::longest_gap(&completions, load_start, load_end),
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
        unexpected_exits,
    };
    cluster.stop_all();
    drop(firewall);
    let _ = std::fs::write(options.out.join("report.txt"), report.to_string());
    if report.passed() && !options.keep_data {
        let _ = std::fs::remove_dir_all(&nodes_dir);
    }
    Ok(report)
}

fn jsonl(history: &[Operation]) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = rkv_check::write_jsonl(&mut out, history);
    out
}

/// Whether the cluster takes a write within `limit`.
async fn answers(client: &Client, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if client.put("_scenario_ready", "1").await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn member_ids(client: &Client, limit: Duration) -> Option<Vec<u64>> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(members) = client.member_list().await {
            return Some(members.iter().map(|m| m.id).collect());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Reads `key` linearizably after healing, retrying until [`RECOVERY_MAX`]; records it.
async fn final_read(client: &Client, recorder: &Recorder, key: &str) -> Option<Option<String>> {
    let deadline = Instant::now() + RECOVERY_MAX;
    while Instant::now() < deadline {
        let invoke = recorder.now();
        if let Ok(value) = client.get(key, Consistency::Linearizable).await {
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
            return Some(value);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Polls every node's status and records each new (term, leader) seen.
async fn observe(
    addresses: Vec<String>,
    recorder: Arc<Recorder>,
    leaders: Arc<Mutex<Vec<(u64, u64, u64)>>>,
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
                .push((recorder.now(), best.0, best.1));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => {}
        }
    }
}

fn fnv(pairs: &[(bytes::Bytes, bytes::Bytes)]) -> u64 {
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

/// Waits (bounded) until every member has applied the same index, then reads each one's
/// whole key space locally and compares.
async fn compare_replicas(cluster: &Cluster, members: &[u64]) -> (Vec<Replica>, Option<String>) {
    let deadline = Instant::now() + RECOVERY_MAX;
    let mut last_problem = String::from("not compared");
    while Instant::now() < deadline {
        let mut replicas = Vec::new();
        let mut problem = None;
        for id in members {
            let Ok(client) = cluster.client_of(*id, workload_config()) else {
                problem = Some(format!("node {id} has no address"));
                break;
            };
            let before = client
                .status()
                .await
                .map(|s| (s.applied_index, s.commit_index));
            let pairs = client.scan_prefix("", 1_000_000, Consistency::Stale).await;
            let after = client.status().await.map(|s| s.applied_index);
            match (before, pairs, after) {
                (Ok((applied, _)), Ok(pairs), Ok(after)) if applied == after => {
                    replicas.push(Replica {
                        id: *id,
                        applied,
                        digest: fnv(&pairs),
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
                if digests.windows(2).all(|w| w[0] == w[1]) {
                    return (replicas, None);
                }
                return (
                    replicas,
                    Some("replicas differ at the same applied index".into()),
                );
            }
            problem = Some(format!("applied indexes differ: {applied:?}"));
        }
        last_problem = problem.unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (
        Vec::new(),
        Some(format!(
            "no agreement within {RECOVERY_MAX:?}: {last_problem}"
        )),
    )
}
