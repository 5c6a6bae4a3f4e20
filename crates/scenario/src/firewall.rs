//! Real network partitions between nodes on one machine: nftables rules that drop the
//! packets between chosen pairs of the nodes' own loopback addresses.
//!
//! Each run owns one nftables table, named after its process id, holding one input chain
//! whose rules only ever name the addresses of this run's nodes: nothing else on the
//! machine is filtered, and deleting the table (done on drop, also when a run is
//! interrupted) removes every rule the run made. Clients reach every node from 127.0.0.1,
//! which no rule names: a partition cuts nodes off from each other, not from clients, so
//! an isolated old leader still answers the clients that call it (Jepsen's stale-read
//! trap). Needs root (CAP_NET_ADMIN) and the `nft` command (Debian's nftables).

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::ScenarioError;

/// Prefix of the tables this tool creates; the rest of the name is the creator's pid.
const TABLE_PREFIX: &str = "rkv_scenario_";

/// The run's nftables table.
#[derive(Debug)]
pub struct Firewall {
    table: String,
}

impl Firewall {
    /// Creates the run's (empty) table and chain, after deleting the tables of earlier
    /// runs whose process is gone (killed before it could clean up).
    pub fn new() -> Result<Firewall, ScenarioError> {
        sweep_orphans();
        let table = format!("{TABLE_PREFIX}{}", std::process::id());
        nft(&format!(
            "add table ip {table}\n\
             add chain ip {table} input {{ type filter hook input priority 0 ; policy accept ; }}\n"
        ))
        .map_err(|e| {
            ScenarioError::Firewall(format!(
                "{e}\npartitions need root and nftables (apt-get install nftables)"
            ))
        })?;
        Ok(Firewall { table })
    }

    /// Cuts every group off from every other (both directions); replaces any earlier cut.
    pub fn partition(&mut self, groups: &[Vec<Ipv4Addr>]) -> Result<(), ScenarioError> {
        let table = &self.table;
        let mut script = format!("flush chain ip {table} input\n");
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i == j {
                    continue;
                }
                for from in a {
                    for to in b {
                        script.push_str(&format!(
                            "add rule ip {table} input ip saddr {from} ip daddr {to} drop\n"
                        ));
                    }
                }
            }
        }
        nft(&script)
    }

    /// Removes every rule: all nodes reach each other again.
    pub fn heal(&mut self) -> Result<(), ScenarioError> {
        nft(&format!("flush chain ip {} input\n", self.table))
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        if let Err(e) = nft(&format!("delete table ip {}\n", self.table)) {
            eprintln!(
                "rkv-scenario: could not delete nftables table {}: {e}",
                self.table
            );
        }
    }
}

/// Deletes `rkv_scenario_<pid>` tables whose process no longer exists.
fn sweep_orphans() {
    let Ok(output) = Command::new("nft").args(["list", "tables"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        // "table ip rkv_scenario_1234"
        let Some(pid) = line
            .trim()
            .strip_prefix("table ip ")
            .and_then(|name| name.strip_prefix(TABLE_PREFIX))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = nft(&format!("delete table ip {TABLE_PREFIX}{pid}\n"));
        }
    }
}

/// Runs an nft script (atomically: all of it or nothing).
fn nft(script: &str) -> Result<(), ScenarioError> {
    let mut child = Command::new("nft")
        .arg("-f")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ScenarioError::Firewall(format!("running nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| ScenarioError::Firewall(format!("writing to nft: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| ScenarioError::Firewall(format!("waiting for nft: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ScenarioError::Firewall(format!(
            "nft failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}
