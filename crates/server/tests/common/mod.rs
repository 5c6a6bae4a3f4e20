//! Real `rkvd` processes on loopback for black-box tests: free ports, temporary data
//! directories, and children that are killed (by their own pid) when the test ends.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rkv_wire::rkvpb::rkv_client::RkvClient;
use rkv_wire::v1::kv_client::KvClient;
use tonic::transport::Channel;

/// The peer port offset the tests use.
pub const PEER_OFFSET: u16 = 1000;
/// Generous bound for anything cluster-wide to happen.
pub const WAIT: Duration = Duration::from_secs(30);
/// How often [`eventually`] asks again.
pub const POLL: Duration = Duration::from_millis(50);

/// Tries `attempt` until it succeeds, at most for [`WAIT`], and returns its value.
///
/// Real processes can only be observed by asking them, so this is the one place where
/// the tests poll: every [`POLL`], bounded by the deadline, panicking with `what` and the
/// last error when it passes.
pub async fn eventually<T, E: std::fmt::Debug>(
    what: &str,
    mut attempt: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + WAIT;
    let mut every = tokio::time::interval(POLL);
    loop {
        every.tick().await;
        match attempt().await {
            Ok(value) => return value,
            Err(e) if Instant::now() >= deadline => panic!("{what}: not within {WAIT:?}: {e:?}"),
            Err(_) => {}
        }
    }
}

/// Picks a client port whose peer port (+ offset) is free too (see `rkv-testkit`).
pub fn free_port() -> u16 {
    rkv_testkit::free_port(PEER_OFFSET)
}

/// One rkvd process.
pub struct Server {
    /// 1-based id.
    pub id: u64,
    /// Client address.
    pub address: String,
    /// Data directory.
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// The gRPC endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Whether the process is running.
    pub fn is_up(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A cluster of rkvd processes.
pub struct Cluster {
    /// Its servers, by position (id - 1).
    pub servers: Vec<Server>,
    /// The `-servers` flag value.
    pub servers_flag: String,
    /// The founding ids.
    pub founders: String,
    /// Flags added to every server's command line.
    pub extra_args: Vec<String>,
    _root: tempfile::TempDir,
}

impl Drop for Cluster {
    /// A failing test shows what its servers logged (warnings and errors).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for server in &self.servers {
            let log = std::fs::read_to_string(server.dir.with_extension("log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!("--- rkvd {} (last lines of its log) ---", server.id);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Runs rkvd with `args` to completion (for flag errors).
pub fn rkvd_output(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rkvd"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("rkvd runs")
}

impl Cluster {
    /// Starts `size` servers, of which the first `founders` form the initial voters.
    pub fn start(size: usize, founders: usize) -> Cluster {
        Cluster::start_with(size, founders, &["-servermetrics=false"])
    }

    /// Like [`Cluster::start`], with `extra_args` on every server's command line.
    pub fn start_with(size: usize, founders: usize, extra_args: &[&str]) -> Cluster {
        let root = tempfile::tempdir().expect("temp dir");
        let ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let servers_flag = ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let founders = (1..=founders)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let servers = ports
            .iter()
            .enumerate()
            .map(|(i, port)| Server {
                id: i as u64 + 1,
                address: format!("127.0.0.1:{port}"),
                dir: root.path().join(format!("node{}", i + 1)),
                child: None,
            })
            .collect();
        let extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        let mut cluster = Cluster {
            servers,
            servers_flag,
            founders,
            extra_args,
            _root: root,
        };
        let founding = cluster.founders.split(',').count();
        for id in 1..=founding as u64 {
            cluster.boot(id);
        }
        cluster
    }

    /// Starts (or restarts) server `id` from its data directory.
    pub fn boot(&mut self, id: u64) {
        let server = &mut self.servers[usize::try_from(id - 1).expect("small")];
        assert!(server.child.is_none(), "server {id} is already running");
        let log = std::fs::File::create(server.dir.with_extension("log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_rkvd"))
            .args([
                "-id",
                &id.to_string(),
                "-servers",
                &self.servers_flag,
                "-cluster",
                &self.founders,
            ])
            .args(["-data-dir", &server.dir.display().to_string()])
            .args(&self.extra_args)
            .args(["-election", "300ms", "-heartbeat", "20ms"])
            .args([
                "-peer-port-offset",
                &PEER_OFFSET.to_string(),
                "-log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("rkvd starts");
        server.child = Some(child);
    }

    /// SIGKILLs server `id` (only a process this cluster started, by its pid).
    pub fn kill(&mut self, id: u64) {
        let server = &mut self.servers[usize::try_from(id - 1).expect("small")];
        if let Some(mut child) = server.child.take() {
            child.kill().expect("kill -9");
            let _ = child.wait();
        }
    }

    /// A v1 client of server `id`, once it accepts connections.
    pub async fn v1(&self, id: u64) -> KvClient<Channel> {
        let endpoint = self.servers[usize::try_from(id - 1).expect("small")].endpoint();
        let deadline = Instant::now() + WAIT;
        loop {
            match KvClient::connect(endpoint.clone()).await {
                Ok(client) => return client,
                Err(e) if Instant::now() > deadline => panic!("server {id} never accepted: {e}"),
                Err(_) => tokio::task::yield_now().await,
            }
        }
    }

    /// An rkvpb client of server `id`.
    pub async fn rkvpb(&self, id: u64) -> RkvClient<Channel> {
        let endpoint = self.servers[usize::try_from(id - 1).expect("small")].endpoint();
        let deadline = Instant::now() + WAIT;
        loop {
            match RkvClient::connect(endpoint.clone()).await {
                Ok(client) => return client,
                Err(e) if Instant::now() > deadline => panic!("server {id} never accepted: {e}"),
                Err(_) => tokio::task::yield_now().await,
            }
        }
    }

    /// The id of the leader as the running servers report it, waiting until they agree.
    pub async fn leader(&self) -> u64 {
        eventually("a leader", async || {
            for server in self.servers.iter().filter(|s| s.is_up()) {
                let mut client = self.v1(server.id).await;
                if let Ok(status) = client.status(rkv_wire::v1::StatusRequest {}).await {
                    let status = status.into_inner();
                    if status.role == rkv_wire::v1::Role::Leader as i32 {
                        return Ok(status.id);
                    }
                }
            }
            Err("no server reports being the leader")
        })
        .await
    }
}
