//! Real processes on loopback for black-box tests: free ports, temporary directories,
//! children killed by their own pid when the test ends (a guard with `Drop`), polling
//! with a deadline instead of sleeping, and an HTTP client.

#![allow(dead_code)] // each test binary uses a different part

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use rkv_demo::http_client::HttpClient;
use rkv_demo::replica::StatusBody;

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

/// `count` distinct free loopback ports, each with `port + offset` free too (offset 0:
/// no condition); see `rkv-testkit`.
pub fn free_ports(count: usize, offset: u16) -> Vec<u16> {
    rkv_testkit::free_ports(count, offset)
}

/// One child process, killed (by its pid) when dropped.
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    child: Option<Child>,
    /// Its stdin, if piped.
    pub stdin: Option<ChildStdin>,
    /// Where its stdout goes.
    pub stdout: PathBuf,
    /// Where its stderr goes.
    pub stderr: PathBuf,
}

impl Proc {
    /// Starts `program args` in `cwd`; stdout and stderr go to files named after `name`
    /// in `logs`; stdin is piped if `piped_stdin`, else empty.
    pub fn spawn(
        name: &str,
        program: &str,
        args: &[&str],
        cwd: &Path,
        logs: &Path,
        piped_stdin: bool,
    ) -> Proc {
        let stdout = logs.join(format!("{name}.out"));
        let stderr = logs.join(format!("{name}.err"));
        let mut child = Command::new(program)
            .args(args)
            .current_dir(cwd)
            .stdin(if piped_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {program} does not start: {e}"));
        let stdin = child.stdin.take();
        Proc {
            name: name.to_string(),
            child: Some(child),
            stdin,
            stdout,
            stderr,
        }
    }

    /// Writes `text` to its stdin.
    pub fn type_in(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is piped");
        stdin.write_all(text.as_bytes()).expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Closes its stdin.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Its stdout so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Its stderr so far.
    pub fn errors(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until its stdout contains `text`.
    pub async fn wait_for_output(&mut self, text: &str) -> String {
        let what = format!("{} prints {text:?}", self.name);
        eventually(&what, async || {
            let output = self.output();
            if output.contains(text) {
                return Ok(output);
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} exited ({status}): {}\n{}",
                    self.name,
                    output,
                    self.errors()
                );
            }
            Err(format!("stdout: {output:?}, stderr: {:?}", self.errors()))
        })
        .await
    }

    /// Waits for it to exit and returns its exit code.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        let what = format!("{} exits", self.name);
        eventually(&what, async || {
            match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => Ok(status.code()),
                other => Err(format!("{other:?}")),
            }
        })
        .await
    }

    /// SIGKILLs it (its own pid only) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM to its pid (the program's clean stop) and waits for the exit.
    pub async fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.as_ref().map(Child::id).expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid}");
        let code = self.wait_exit().await;
        self.child = None;
        code
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            // Shown with the failing test's output: what the process said.
            let errors = self.errors();
            let tail = &errors[errors.len().saturating_sub(4000)..];
            eprintln!("--- {} stderr (tail) ---\n{tail}", self.name);
        }
    }
}

/// An HTTP client for the tests.
pub fn http() -> HttpClient {
    HttpClient::new(Duration::from_secs(15))
}

/// `method address path body` → (status, body as text).
pub async fn call(
    client: &HttpClient,
    method: Method,
    address: &str,
    path: &str,
    body: &str,
) -> Result<(StatusCode, String), String> {
    client
        .call(method, address, path, &[], Bytes::from(body.to_string()))
        .await
        .map(|(status, body)| (status, String::from_utf8_lossy(&body).into_owned()))
        .map_err(|e| e.to_string())
}

/// A node's `/status`.
pub async fn status(client: &HttpClient, address: &str) -> Result<StatusBody, String> {
    let (code, body) = call(client, Method::GET, address, "/status", "").await?;
    if code != StatusCode::OK {
        return Err(format!("{code}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
}

/// Waits until `address` reports `voters` voters and `learners` learners, with a leader.
pub async fn wait_for_membership(
    client: &HttpClient,
    address: &str,
    voters: usize,
    learners: usize,
) -> StatusBody {
    eventually(
        &format!("{address} sees {voters} voters and {learners} learners"),
        async || {
            let s = status(client, address).await?;
            if s.voters.len() == voters && s.learners.len() == learners && s.leader.is_some() {
                Ok(s)
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
    .await
}
