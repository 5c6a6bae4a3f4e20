//! Black-box tests of the `rkvctl` binary against real `rkvd` clusters on loopback: the
//! everyday commands and their exit codes, the load generator in open and closed loop
//! (summary line, zero errors, the latency CSV), and `-add` of a fourth server.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;

use common::{Cluster, Running, WAIT, stderr, stdout};

/// Checks `line` is exactly `ops/s: <int> p50_ms: <x.xx> p99_ms: <x.xx> errors: <int>`;
/// returns (ops/s, errors).
fn parse_summary(line: &str) -> (u64, u64) {
    let words: Vec<&str> = line.split(' ').collect();
    assert_eq!(words.len(), 8, "summary line {line:?}");
    assert_eq!(
        [words[0], words[2], words[4], words[6]],
        ["ops/s:", "p50_ms:", "p99_ms:", "errors:"],
        "summary line {line:?}"
    );
    for ms in [words[3], words[5]] {
        let (whole, fraction) = ms.split_once('.').expect("two decimals");
        assert!(
            whole.parse::<u64>().is_ok() && fraction.len() == 2,
            "{line:?}"
        );
    }
    (
        words[1].parse().expect("whole ops/s"),
        words[7].parse().expect("an error count"),
    )
}

/// The CSV rkvctl wrote in `dir`: its lines, header first.
fn latency_csv(dir: &std::path::Path) -> Vec<String> {
    let csvs: Vec<_> = std::fs::read_dir(dir)
        .expect("scratch dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("latency-") && n.ends_with(".csv"))
        })
        .collect();
    assert_eq!(csvs.len(), 1, "one latency CSV in {}", dir.display());
    let text = std::fs::read_to_string(&csvs[0]).expect("readable CSV");
    std::fs::remove_file(&csvs[0]).expect("removable CSV");
    text.lines().map(str::to_string).collect()
}

#[test]
fn everyday_commands_work_with_script_friendly_exit_codes() {
    let cluster = Cluster::start(3, 3);
    cluster.wait_for_leader();

    let put = cluster.run(&["put", "fruit/apple", "red"]);
    assert!(put.status.success(), "put: {}", stderr(&put));
    assert_eq!(stdout(&put), "OK\n");
    assert!(
        cluster
            .run(&["put", "fruit/kiwi", "green"])
            .status
            .success()
    );
    assert!(cluster.run(&["put", "veg/leek", "white"]).status.success());

    for consistency in ["linearizable", "lease", "stale"] {
        // A stale read may lag the leader; the write above was acknowledged only once
        // applied on a majority, so poll a stale read until it shows up.
        let attempt = || {
            let get = cluster.run(&["get", "fruit/apple", "-consistency", consistency]);
            if get.status.success() {
                Ok(get)
            } else {
                Err(get)
            }
        };
        // Linearizable and lease reads must succeed at once; only a stale one may retry.
        let get = if consistency == "stale" {
            common::eventually(attempt)
        } else {
            attempt()
        };
        match get {
            Ok(get) => assert_eq!(stdout(&get), "red\n", "{consistency}"),
            Err(get) => panic!("get -consistency {consistency}: {}", stderr(&get)),
        }
    }

    let missing = cluster.run(&["get", "fruit/durian"]);
    assert_eq!(
        missing.status.code(),
        Some(1),
        "a missing key is exit code 1"
    );
    assert_eq!(stdout(&missing), "", "and nothing on stdout");
    assert!(
        stderr(&missing).contains("not found"),
        "{}",
        stderr(&missing)
    );

    let scan = cluster.run(&["scan", "fruit/"]);
    assert!(scan.status.success(), "scan: {}", stderr(&scan));
    assert_eq!(stdout(&scan), "fruit/apple\nred\nfruit/kiwi\ngreen\n");

    let del = cluster.run(&["del", "fruit/apple"]);
    assert_eq!((del.status.code(), stdout(&del)), (Some(0), "1\n".into()));
    let del = cluster.run(&["del", "fruit/apple"]);
    assert_eq!((del.status.code(), stdout(&del)), (Some(0), "0\n".into()));
    assert_eq!(cluster.run(&["get", "fruit/apple"]).status.code(), Some(1));

    let status = cluster.run(&["status"]);
    assert!(
        status.status.success(),
        "status: {}{}",
        stdout(&status),
        stderr(&status)
    );
    let text = stdout(&status);
    let roles: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(roles.len(), 3, "{text}");
    assert_eq!(
        roles.iter().filter(|r| **r == "leader").count(),
        1,
        "{text}"
    );

    let members = cluster.run(&["member", "list"]);
    assert!(
        members.status.success(),
        "member list: {}",
        stderr(&members)
    );
    let expected: String = cluster
        .addresses
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}, voter, {a}\n", i + 1))
        .collect();
    assert_eq!(stdout(&members), expected);

    let usage = cluster.run(&["-nosuchflag"]);
    assert_eq!(usage.status.code(), Some(2), "a bad flag is a usage error");
    assert!(stderr(&usage).contains("nosuchflag"), "{}", stderr(&usage));
    let usage = cluster.run(&["-payload", "8"]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(stderr(&usage).contains("-payload"), "{}", stderr(&usage));
}

#[test]
fn watch_prints_the_changes_it_sees() {
    let cluster = Cluster::start(3, 3);
    cluster.wait_for_leader();
    let mut child = cluster
        .rkvctl()
        .args(["watch", "w", "-count", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rkvctl watch starts");
    // The watch says when it is registered; only then are the changes made.
    let errors = child.stderr.take().expect("piped");
    let watcher = Running(Some(child));
    let (lines, registered) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(errors).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let line = registered.recv_timeout(WAIT).expect("the watch registers");
    assert!(line.contains("watching"), "{line}");
    assert!(cluster.run(&["put", "w", "1"]).status.success());
    assert!(cluster.run(&["del", "w"]).status.success());
    let output = watcher.wait();
    assert!(output.status.success());
    assert_eq!(stdout(&output), "PUT\nw\n1\nDELETE\nw\n");
}

#[test]
fn load_runs_end_with_the_summary_line_and_write_the_latency_csv() {
    let cluster = Cluster::start(3, 3);
    cluster.wait_for_leader();

    // Open loop: 4 clients x 50 requests/s for 2 s, half reads.
    let run = cluster.run(&[
        "-clients",
        "4",
        "-throughput",
        "50",
        "-time",
        "2s",
        "-reads",
        "0.5",
    ]);
    let text = stdout(&run);
    assert!(run.status.success(), "load run: {}\n{text}", stderr(&run));
    let last = text.lines().last().expect("output");
    let (ops, errors) = parse_summary(last);
    assert_eq!(errors, 0, "{text}\n{}", stderr(&run));
    // 200 requests/s offered; the rate holds unless the machine stalls badly.
    assert!((100..=260).contains(&ops), "{ops} ops/s: {text}");
    assert!(
        text.contains("reads: ") && text.contains("writes: "),
        "{text}"
    );
    assert!(text.contains("p99.9"), "{text}");
    let csv = latency_csv(&cluster.scratch());
    assert_eq!(csv[0], "start_unix_nanos,latency_nanos,kind,ok");
    assert!(csv.len() > 200, "{} rows", csv.len() - 1);
    for row in &csv[1..] {
        let fields: Vec<&str> = row.split(',').collect();
        assert_eq!(fields.len(), 4, "{row}");
        assert!(fields[0].parse::<u64>().is_ok() && fields[1].parse::<u64>().is_ok());
        assert!(["read", "write"].contains(&fields[2]), "{row}");
        assert_eq!(fields[3], "true", "{row}");
    }

    // Closed loop: one client, each request after the previous reply, 200 in all.
    let run = cluster.run(&["-throughput", "0", "-count", "200"]);
    let text = stdout(&run);
    assert!(
        run.status.success(),
        "closed loop: {}\n{text}",
        stderr(&run)
    );
    let (_, errors) = parse_summary(text.lines().last().expect("output"));
    assert_eq!(errors, 0, "{text}");
    assert!(text.contains("writes: 200 ok"), "{text}");
    let csv = latency_csv(&cluster.scratch());
    assert_eq!(csv.len(), 201, "one row per request");
    // Closed loop: each request starts after the previous one ended.
    let spans: Vec<(u64, u64)> = csv[1..]
        .iter()
        .map(|row| {
            let f: Vec<&str> = row.split(',').collect();
            let start: u64 = f[0].parse().expect("start");
            (start, start + f[1].parse::<u64>().expect("latency"))
        })
        .collect();
    assert!(
        spans.windows(2).all(|w| w[1].0 >= w[0].1),
        "requests overlapped in closed loop"
    );
}

#[test]
fn add_makes_a_started_fourth_server_a_member() {
    let cluster = Cluster::start(4, 3);
    cluster.wait_for_leader();
    let all = cluster.addresses.join(",");
    let add = cluster.run(&["-cluster", &all, "-add", "4"]);
    assert!(
        add.status.success(),
        "-add 4: {}{}",
        stderr(&add),
        cluster.logs()
    );
    assert_eq!(stdout(&add), "added server 4\n");
    let members = cluster.run(&["-cluster", &all, "member", "list"]);
    let text = stdout(&members);
    assert!(
        text.contains(&format!("4, voter, {}", cluster.addresses[3])),
        "{text}"
    );
}

#[test]
fn a_bad_target_is_refused_with_exit_code_2() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rkvctl"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("rkvctl runs")
    };
    let bad = run(&["-target", "redis", "-count", "1"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("unknown target \"redis\": rkv or etcd"),
        "{}",
        stderr(&bad)
    );
    let command = run(&["-target", "etcd", "put", "k", "v"]);
    assert_eq!(command.status.code(), Some(2), "{}", stderr(&command));
    assert!(
        stderr(&command).contains("-target etcd only generates load"),
        "{}",
        stderr(&command)
    );
    let tls = run(&["-target", "etcd", "-cluster", "https://127.0.0.1:2379"]);
    assert_eq!(tls.status.code(), Some(2), "{}", stderr(&tls));
    assert!(stderr(&tls).contains("TLS"), "{}", stderr(&tls));
}

/// A single-member etcd on free loopback ports, killed (by its own pid, through its
/// `Child`) when dropped; `None` if etcd is not installed.
struct Etcd {
    child: std::process::Child,
    client_url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Option<Etcd> {
        match std::process::Command::new("etcd").arg("--version").output() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("etcd --version: {e}"),
            Ok(_) => {}
        }
        let dir = tempfile::tempdir().expect("temp dir");
        // free_port also checks port + PEER_OFFSET, which etcd's peer URL uses.
        let port = common::free_port();
        let client_url = format!("http://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{}", port + common::PEER_OFFSET);
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("log file");
        let child = std::process::Command::new("etcd")
            .args(["--name", "solo", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("solo={peer_url}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        Some(Etcd {
            child,
            client_url,
            _dir: dir,
        })
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn target_etcd_runs_the_same_load_against_a_real_etcd() {
    let Some(etcd) = Etcd::start() else {
        let why = "etcd is not installed (Debian: apt-get install etcd-server; scripts/test \
                   and bench/compare install it)";
        // CI runs scripts/test, which installs it: there the test must run.
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("SKIPPED: {why}");
        return;
    };
    let scratch = tempfile::tempdir().expect("scratch dir");
    // rkvctl waits for etcd itself: each client's first read is retried until -timeout.
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_rkvctl"))
        .args(["-target", "etcd", "-cluster", &etcd.client_url])
        .args(["-clients", "4", "-throughput", "0", "-count", "50"])
        .args(["-reads", "0.5", "-timeout", "60s"])
        .current_dir(scratch.path())
        .stdin(Stdio::null())
        .output()
        .expect("rkvctl runs");
    let text = stdout(&run);
    assert!(run.status.success(), "load run: {}\n{text}", stderr(&run));
    let (_, errors) = parse_summary(text.lines().last().expect("output"));
    assert_eq!(errors, 0, "{text}\n{}", stderr(&run));
    assert!(text.starts_with("run: "), "{text}");
    assert!(
        text.contains(", 200 ok, 0 errors"),
        "4 clients x 50: {text}"
    );
    for kind in ["writes: ", "reads: ", "all: 200 ok"] {
        assert!(text.contains(kind), "{kind}: {text}");
    }
    assert!(text.contains("p99.9"), "{text}");
    assert_eq!(
        latency_csv(scratch.path()).len(),
        201,
        "one row per request"
    );
}
