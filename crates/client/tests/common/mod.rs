//! A small harness for black-box tests of `rkvctl`: real `rkvd` processes on free
//! loopback ports with temporary data directories, killed (each by its own pid, through
//! its `Child`) when the cluster is dropped, and `rkvctl` run as a process.
//!
//! rkvd is another package's binary, which cargo does not hand to this crate's tests;
//! `cargo test --workspace` builds it into the same target directory, so it is looked up
//! next to this test executable (`target/<profile>/deps/..` -> `target/<profile>/rkvd`).

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The peer port offset the tests give rkvd.
pub const PEER_OFFSET: u16 = 1000;
/// Generous bound for anything cluster-wide to happen.
pub const WAIT: Duration = Duration::from_secs(60);
/// Pause between two polls of a real process (its status or its exit).
pub const POLL: Duration = Duration::from_millis(50);

/// Tries `attempt` until it returns a value, at most for [`WAIT`].
///
/// Real processes can only be observed by asking them, so this is the one place where
/// the tests poll: every [`POLL`], bounded by the deadline. After the deadline it returns
/// `Err` with the last failure, for the caller's message.
pub fn eventually<T, E>(mut attempt: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let deadline = Instant::now() + WAIT;
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() >= deadline => return Err(e),
            // A real process cannot signal us: this pause is the poll interval, and the
            // deadline above bounds the wait (not synchronisation by sleeping).
            Err(_) => std::thread::sleep(POLL), // poll interval within the deadline
        }
    }
}

/// The rkvd binary of this build, or a panic saying how to build it.
pub fn rkvd_path() -> PathBuf {
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

/// A client port on 127.0.0.1 whose peer port (+ [`PEER_OFFSET`]) is free too (see
/// `rkv-testkit`).
pub fn free_port() -> u16 {
    rkv_testkit::free_port(PEER_OFFSET)
}

/// A cluster of rkvd processes on loopback.
pub struct Cluster {
    /// Client address of each server, by position (id - 1).
    pub addresses: Vec<String>,
    /// How many servers form the initial voters (ids 1..=founders).
    pub founders: usize,
    children: Vec<Child>,
    root: tempfile::TempDir,
}

impl Cluster {
    /// Starts `size` servers (all running), of which the first `founders` are the
    /// initial voters; the others wait to be added.
    pub fn start(size: usize, founders: usize) -> Cluster {
        let rkvd = rkvd_path();
        let root = tempfile::tempdir().expect("temp dir");
        let addresses: Vec<String> = (0..size)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let servers = addresses.join(",");
        let voters = (1..=founders)
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Vec::new();
        for id in 1..=size {
            let dir = root.path().join(format!("node{id}"));
            let log =
                std::fs::File::create(root.path().join(format!("node{id}.log"))).expect("log file");
            let child = Command::new(&rkvd)
                .args(["-id", &id.to_string(), "-servers", &servers])
                .args(["-cluster", &voters])
                .args(["-data-dir", &dir.display().to_string()])
                .args([
                    "-servermetrics=false",
                    "-election",
                    "300ms",
                    "-heartbeat",
                    "20ms",
                ])
                .args(["-peer-port-offset", &PEER_OFFSET.to_string()])
                .args(["-log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("rkvd starts");
            children.push(child);
        }
        Cluster {
            addresses,
            founders,
            children,
            root,
        }
    }

    /// The founders' addresses as a `-cluster` value.
    pub fn cluster_flag(&self) -> String {
        self.addresses[..self.founders].join(",")
    }

    /// A scratch directory that lives as long as the cluster (rkvctl's working directory).
    pub fn scratch(&self) -> PathBuf {
        let dir = self.root.path().join("scratch");
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    /// An rkvctl command with `-cluster` set to the founders, run in [`Cluster::scratch`].
    pub fn rkvctl(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rkvctl"));
        command
            .args(["-cluster", &self.cluster_flag()])
            .current_dir(self.scratch())
            .stdin(Stdio::null());
        command
    }

    /// Runs rkvctl with `args` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.rkvctl().args(args).output().expect("rkvctl runs")
    }

    /// Waits until one founder reports itself leader (polling `rkvctl status`).
    pub fn wait_for_leader(&self) {
        let found = eventually(|| {
            let output = self.run(&["status"]);
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            let leads = text
                .lines()
                .any(|l| l.split_whitespace().nth(2) == Some("leader"));
            if leads { Ok(()) } else { Err(text) }
        });
        if let Err(text) = found {
            panic!(
                "no leader within {WAIT:?}; last status:\n{text}{}",
                self.logs()
            );
        }
    }

    /// Every server's log, for failure messages.
    pub fn logs(&self) -> String {
        (1..=self.addresses.len())
            .map(|id| {
                let path = self.root.path().join(format!("node{id}.log"));
                let text = std::fs::read_to_string(path).unwrap_or_default();
                format!("--- node {id} log ---\n{text}")
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A child process (an rkvctl left running) killed by its pid if the test ends first.
pub struct Running(pub Option<Child>);

impl Running {
    /// Waits (polling, bounded by [`WAIT`]) for the process to exit; its output.
    pub fn wait(mut self) -> Output {
        let mut child = self.0.take().expect("running");
        let exited = eventually(|| match child.try_wait().expect("try_wait") {
            Some(_) => Ok(()),
            None => Err(()),
        });
        if exited.is_err() {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "the process did not exit within {WAIT:?}; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        child.wait_with_output().expect("output")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
