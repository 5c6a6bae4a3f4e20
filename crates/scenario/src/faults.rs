//! The faults, and the seeded schedule that injects them while the workload runs.
//!
//! A schedule alternates quiet stretches (1-2 s) with faults until the load period is
//! over. Each fault is one self-contained step that also heals what it broke (restarts
//! the killed, resumes the paused, removes the partition), so the cluster gets a chance
//! to recover before the next one. What was done is logged with the time it was done;
//! the first event of each fault marks the start of its availability gap in the report.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use rkv_client::zipf::Rng;
use rkv_client::{Client, ClientConfig, Error};
use rkv_wire::v1::Role;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::firewall::Firewall;
use crate::workload::Recorder;
use crate::{Scenario, ScenarioError};

/// How long a follower stays cut off in `partition-follower` (the original's 5 s).
pub const PARTITION_FOLLOWER_HOLD: Duration = Duration::from_secs(5);

/// Longest a membership step (a new server catching up, a change committing) may take.
const MEMBERSHIP_STEP_MAX: Duration = Duration::from_secs(20);

/// One thing the schedule did.
#[derive(Clone, Debug)]
pub struct FaultEvent {
    /// When, in microseconds since the run started.
    pub at_us: u64,
    /// What, in words.
    pub what: String,
    /// Whether this event starts a fault (rather than healing one).
    pub starts_fault: bool,
}

/// Status calls during faults must not wait on a paused or cut-off node.
pub fn probe_config() -> ClientConfig {
    ClientConfig {
        deadline: Duration::from_millis(400),
        attempt_timeout: Duration::from_millis(400),
        attempts_max: 1,
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(5),
        connect_timeout: Duration::from_millis(300),
    }
}

/// The node that leads (the highest term any running, unpaused node reports as its own
/// leadership), if any.
pub async fn find_leader(cluster: &Cluster) -> Option<u64> {
    let mut best: Option<(u64, u64)> = None;
    for id in cluster.live() {
        let Ok(client) = cluster.client_of(id, probe_config()) else {
            continue;
        };
        if let Ok(status) = client.status().await
            && status.role == Role::Leader as i32
            && best.is_none_or(|(_, term)| status.term > term)
        {
            best = Some((id, status.term));
        }
    }
    best.map(|(id, _)| id)
}

/// Injects faults into a cluster and remembers what it did.
pub struct Faults<'a> {
    cluster: &'a mut Cluster,
    firewall: Option<&'a mut Firewall>,
    recorder: Arc<Recorder>,
    admin: Client,
    rng: Rng,
    /// Everything done so far.
    pub events: Vec<FaultEvent>,
}

impl<'a> Faults<'a> {
    /// Faults for `cluster`, seeded.
    pub fn new(
        cluster: &'a mut Cluster,
        firewall: Option<&'a mut Firewall>,
        recorder: Arc<Recorder>,
        seed: u64,
    ) -> Result<Faults<'a>, ScenarioError> {
        let admin = cluster.client(
            &[],
            ClientConfig {
                deadline: Duration::from_secs(10),
                attempt_timeout: Duration::from_secs(2),
                ..ClientConfig::default()
            },
        )?;
        Ok(Faults {
            cluster,
            firewall,
            recorder,
            admin,
            rng: Rng::new(seed),
            events: Vec::new(),
        })
    }

    fn log(&mut self, starts_fault: bool, what: String) {
        self.events.push(FaultEvent {
            at_us: self.recorder.now(),
            what,
            starts_fault,
        });
    }

    fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let spread = high.saturating_sub(low).as_millis() as u64;
        low + Duration::from_millis(if spread == 0 {
            0
        } else {
            self.rng.next_u64() % spread
        })
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            None
        } else {
            Some(items[(self.rng.next_u64() % items.len() as u64) as usize])
        }
    }

    /// Injects `scenario`'s faults until `until`, with quiet stretches between them.
    pub async fn run_schedule(
        &mut self,
        scenario: Scenario,
        until: Instant,
    ) -> Result<(), ScenarioError> {
        let kinds: Vec<Scenario> = match scenario {
            Scenario::None => return wait_until(until).await,
            Scenario::All => Scenario::EVERY
                .into_iter()
                .filter(|s| !matches!(s, Scenario::None | Scenario::All))
                .collect(),
            one => vec![one],
        };
        loop {
            let quiet = self.between(Duration::from_millis(1000), Duration::from_millis(2000));
            if Instant::now() + quiet + Duration::from_millis(500) >= until {
                return wait_until(until).await;
            }
            tokio::time::sleep(quiet).await;
            let Some(kind) = self.pick(&kinds) else {
                return wait_until(until).await;
            };
            self.inject(kind).await?;
            if Instant::now() >= until {
                return Ok(());
            }
        }
    }

    /// One fault of kind `kind`, healed before it returns.
    pub async fn inject(&mut self, kind: Scenario) -> Result<(), ScenarioError> {
        match kind {
            Scenario::None | Scenario::All => Ok(()),
            Scenario::CrashLeader => self.crash_leader().await,
            Scenario::CrashAll => self.crash_all().await,
            Scenario::Pause => self.pause().await,
            Scenario::PartitionFollower => self.partition_follower().await,
            Scenario::PartitionLeader => self.partition_leader().await,
            Scenario::PartitionRandom => self.partition_random().await,
            Scenario::ReplaceLeader => self.replace_leader().await,
            Scenario::MembershipChurn => self.churn().await,
        }
    }

    async fn crash_leader(&mut self) -> Result<(), ScenarioError> {
        let Some(leader) = find_leader(self.cluster).await else {
            self.log(false, "crash-leader: no leader to kill; skipped".into());
            return Ok(());
        };
        self.cluster.kill(&[leader])?;
        self.log(true, format!("SIGKILL leader {leader}"));
        let down = self.between(Duration::from_millis(800), Duration::from_millis(2000));
        tokio::time::sleep(down).await;
        self.cluster.start(leader)?;
        self.log(false, format!("restarted {leader} from its directory"));
        Ok(())
    }

    async fn crash_all(&mut self) -> Result<(), ScenarioError> {
        let running = self.cluster.running();
        self.cluster.kill(&running)?;
        self.log(true, format!("SIGKILL every node {running:?}"));
        let down = self.between(Duration::from_millis(300), Duration::from_millis(1000));
        tokio::time::sleep(down).await;
        for id in &running {
            self.cluster.start(*id)?;
        }
        self.log(false, format!("restarted {running:?}"));
        Ok(())
    }

    async fn pause(&mut self) -> Result<(), ScenarioError> {
        let leader = find_leader(self.cluster).await;
        let live = self.cluster.live();
        // Half the time the leader, else anyone.
        let target = match leader {
            Some(leader) if self.rng.next_u64().is_multiple_of(2) => Some(leader),
            _ => self.pick(&live),
        };
        let Some(target) = target else {
            return Ok(());
        };
        self.cluster.pause(target)?;
        let role = if Some(target) == leader {
            "leader"
        } else {
            "node"
        };
        self.log(true, format!("SIGSTOP {role} {target}"));
        let paused = self.between(Duration::from_millis(1000), Duration::from_millis(3000));
        tokio::time::sleep(paused).await;
        self.cluster.resume(target)?;
        self.log(false, format!("SIGCONT {target}"));
        Ok(())
    }

    fn ips(&self, ids: &[u64]) -> Vec<Ipv4Addr> {
        ids.iter()
            .filter_map(|id| self.cluster.node(*id))
            .map(|n| n.ip)
            .collect()
    }

    async fn cut(
        &mut self,
        groups: Vec<Vec<u64>>,
        hold: Duration,
        what: String,
    ) -> Result<(), ScenarioError> {
        let ips: Vec<Vec<Ipv4Addr>> = groups.iter().map(|g| self.ips(g)).collect();
        let Some(firewall) = self.firewall.as_deref_mut() else {
            return Err(ScenarioError::Firewall(
                "this scenario needs partitions, but the firewall is off".into(),
            ));
        };
        firewall.partition(&ips)?;
        self.log(true, what);
        tokio::time::sleep(hold).await;
        if let Some(firewall) = self.firewall.as_deref_mut() {
            firewall.heal()?;
        }
        self.log(false, "healed the partition".into());
        Ok(())
    }

    async fn partition_follower(&mut self) -> Result<(), ScenarioError> {
        let Some(leader) = find_leader(self.cluster).await else {
            self.log(false, "partition-follower: no leader; skipped".into());
            return Ok(());
        };
        let followers: Vec<u64> = self
            .cluster
            .running()
            .into_iter()
            .filter(|id| *id != leader)
            .collect();
        let Some(follower) = self.pick(&followers) else {
            return Ok(());
        };
        let rest: Vec<u64> = self
            .cluster
            .running()
            .into_iter()
            .filter(|id| *id != follower)
            .collect();
        self.cut(
            vec![vec![follower], rest],
            PARTITION_FOLLOWER_HOLD,
            format!("cut follower {follower} off"),
        )
        .await
    }

    async fn partition_leader(&mut self) -> Result<(), ScenarioError> {
        let Some(leader) = find_leader(self.cluster).await else {
            self.log(false, "partition-leader: no leader; skipped".into());
            return Ok(());
        };
        let rest: Vec<u64> = self
            .cluster
            .running()
            .into_iter()
            .filter(|id| *id != leader)
            .collect();
        let hold = self.between(Duration::from_millis(2000), Duration::from_millis(4000));
        self.cut(
            vec![vec![leader], rest],
            hold,
            format!("isolated leader {leader}"),
        )
        .await
    }

    async fn partition_random(&mut self) -> Result<(), ScenarioError> {
        let mut nodes = self.cluster.running();
        if nodes.len() < 2 {
            self.log(
                false,
                "partition-random: fewer than 2 nodes; skipped".into(),
            );
            return Ok(());
        }
        // Fisher-Yates with the run's generator.
        for i in (1..nodes.len()).rev() {
            let j = (self.rng.next_u64() % (i as u64 + 1)) as usize;
            nodes.swap(i, j);
        }
        let minority =
            1 + (self.rng.next_u64() % (nodes.len().saturating_sub(1) / 2).max(1) as u64) as usize;
        let minority = minority.min(nodes.len().saturating_sub(1));
        let (small, large) = nodes.split_at(minority);
        let hold = self.between(Duration::from_millis(1500), Duration::from_millis(3000));
        self.cut(
            vec![small.to_vec(), large.to_vec()],
            hold,
            format!("partitioned {small:?} | {large:?}"),
        )
        .await
    }

    async fn members(&self) -> Result<(Vec<u64>, Vec<u64>), Error> {
        let members = self.admin.member_list().await?;
        let voters = members
            .iter()
            .filter(|m| !m.is_learner)
            .map(|m| m.id)
            .collect();
        let learners = members
            .iter()
            .filter(|m| m.is_learner)
            .map(|m| m.id)
            .collect();
        Ok((voters, learners))
    }

    /// Whether `id` is a voter now, as far as the cluster answers.
    async fn is_voter(&self, id: u64) -> bool {
        self.members()
            .await
            .is_ok_and(|(voters, _)| voters.contains(&id))
    }

    /// Starts a server that is not a member and makes it a voter: a never-started spare
    /// if there is one (an empty directory: a fresh server), else a former member from
    /// the directory it kept. Returns its id, or `None` if there is none or it could not
    /// be added in time (logged).
    async fn add_spare(&mut self, exclude: &[u64]) -> Result<Option<u64>, ScenarioError> {
        let (voters, learners) = match self.members().await {
            Ok(members) => members,
            Err(e) => {
                self.log(false, format!("listing members failed: {e}"));
                return Ok(None);
            }
        };
        let mut candidates: Vec<(u32, u64)> = self
            .cluster
            .nodes
            .iter()
            .filter(|n| {
                !voters.contains(&n.id) && !learners.contains(&n.id) && !exclude.contains(&n.id)
            })
            .map(|n| (n.starts, n.id))
            .collect();
        candidates.sort_unstable();
        let Some(&(starts, spare)) = candidates.first() else {
            self.log(false, "no spare server to add".into());
            return Ok(None);
        };
        self.cluster.kill(&[spare])?;
        self.cluster.start(spare)?;
        let address = self
            .cluster
            .node(spare)
            .map(|n| n.address.to_string())
            .unwrap_or_default();
        let what = if starts == 0 {
            "fresh server"
        } else {
            "former member"
        };
        self.log(true, format!("adding {what} {spare} as a learner"));
        if let Err(e) = self.admin.member_add(spare, &address, false).await {
            self.log(false, format!("adding {spare} answered: {e}"));
        }
        let deadline = Instant::now() + MEMBERSHIP_STEP_MAX;
        loop {
            // A lost reply to an applied promotion makes the next attempt fail: ask.
            let promoted =
                self.admin.member_promote(spare).await.is_ok() || self.is_voter(spare).await;
            if promoted {
                self.cluster.set_member(spare, true);
                self.log(false, format!("promoted {spare} to voter"));
                return Ok(Some(spare));
            }
            if Instant::now() >= deadline {
                let learner = self.members().await.is_ok_and(|(_, l)| l.contains(&spare));
                self.cluster.set_member(spare, learner);
                self.log(
                    false,
                    format!("promoting {spare} gave up (learner: {learner})"),
                );
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Removes member `id`, then stops it. Its directory stays: if it is added again
    /// later, it comes back as a former member, with its log and its vote.
    async fn remove(&mut self, id: u64) -> Result<bool, ScenarioError> {
        self.log(true, format!("removing member {id}"));
        let deadline = Instant::now() + MEMBERSHIP_STEP_MAX;
        loop {
            let result = self.admin.member_remove(id).await;
            let gone = match &result {
                Ok(members) => !members.iter().any(|m| m.id == id),
                // An unknown outcome: ask what the configuration is now.
                Err(_) => self.members().await.is_ok_and(|(voters, learners)| {
                    !voters.contains(&id) && !learners.contains(&id)
                }),
            };
            if gone {
                self.cluster.kill(&[id])?;
                self.cluster.set_member(id, false);
                self.log(false, format!("removed {id}; stopped it"));
                return Ok(true);
            }
            if Instant::now() >= deadline {
                self.log(false, format!("removing {id} gave up: {result:?}"));
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn replace_leader(&mut self) -> Result<(), ScenarioError> {
        let Some(leader) = find_leader(self.cluster).await else {
            self.log(false, "replace-leader: no leader; skipped".into());
            return Ok(());
        };
        if self.add_spare(&[leader]).await?.is_some() {
            self.remove(leader).await?;
        }
        Ok(())
    }

    /// Grows the configuration by a spare, or, when it is larger than at the start,
    /// shrinks it by a voter that does not lead: add, remove, add, ...
    async fn churn(&mut self) -> Result<(), ScenarioError> {
        let initial = self.cluster.initial_voters().len();
        let Ok((voters, _)) = self.members().await else {
            self.log(false, "membership-churn: members unknown; skipped".into());
            return Ok(());
        };
        if voters.len() > initial {
            let leader = find_leader(self.cluster).await;
            let candidates: Vec<u64> = voters
                .iter()
                .copied()
                .filter(|id| Some(*id) != leader)
                .collect();
            if let Some(victim) = self.pick(&candidates) {
                self.remove(victim).await?;
            }
        } else {
            self.add_spare(&[]).await?;
        }
        Ok(())
    }
}

async fn wait_until(until: Instant) -> Result<(), ScenarioError> {
    tokio::time::sleep_until(until).await;
    Ok(())
}
