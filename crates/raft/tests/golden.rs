//! Golden scenario files, in the manner of etcd's `testdata/*.txt` (datadriven).
//!
//! Every file in `crates/raft/testdata/` is a script run against a fresh in-memory
//! [`common::Cluster`]. A case is a command line, a `----` line, and the expected output,
//! ended by a blank line; lines starting with `#` before a command are comments:
//!
//! ```text
//! # n1 times out first.
//! campaign 1
//! ----
//! n1 campaigns after 16 ticks: PreCandidate t0
//! ```
//!
//! Run with `REWRITE=1` to regenerate the expected outputs from the actual ones; review
//! the diff before committing it, since the output is the specification.
//!
//! Commands (one handler each, see `Env::run`):
//! - `new 1 2 3 [learners=4,5] [pre_vote=false] [check_quorum=false] [<setting>=N]`: a
//!   new cluster (`<setting>` is one of `entries_per_msg`, `max_inflight_msgs`,
//!   `catchup_multiplier`, `snapshot_chunk_bytes`, `promote_lag_entries_max`,
//!   `max_uncommitted_bytes`, `max_msg_bytes`); `add-node 4`: a server not yet a member.
//! - `campaign 1`: tick n1 alone until it leaves the follower role.
//! - `tick 1,2|all [xN]`: tick those servers (N times); nothing is processed.
//! - `stabilize`: process actions and deliver messages until nothing is left; prints
//!   every action performed (`> n1` then its actions in order) and every message lost.
//! - `propose 1 data`, `read 1 <id> [lease]`, `transfer 1 2`,
//!   `add-learner 1 4`, `promote 1 4`, `remove 1 4`, `snapshot 1`: inputs to n1.
//! - `partition 1`, `cut 1 2` (one way), `heal`; `hold-persist 1`, `release-persist 1`;
//!   `crash 1`, `restart 1`.
//! - `status 1,2|all`, `log 1`, `state 1`: inspect.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rkv_raft::{MembershipChange, NodeId, Payload, ReadId, ReadMode};

use common::*;

/// One case of a golden file.
struct Case {
    /// Comment lines before the command.
    comments: Vec<String>,
    command: String,
    expected: Vec<String>,
    /// 1-based line of the command.
    line: usize,
}

fn parse(path: &Path, text: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut comments = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((index, line)) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with('#') {
            comments.push(line.to_string());
            continue;
        }
        let separator = lines.next().map(|(_, l)| l);
        assert_eq!(
            separator,
            Some("----"),
            "{}:{}: expected ---- after the command",
            path.display(),
            index + 2
        );
        let mut expected = Vec::new();
        while let Some((_, out)) = lines.peek() {
            if out.is_empty() {
                break;
            }
            expected.push((*out).to_string());
            lines.next();
        }
        cases.push(Case {
            comments: std::mem::take(&mut comments),
            command: line.to_string(),
            expected,
            line: index + 1,
        });
    }
    cases
}

fn render_file(cases: &[Case], outputs: &[Vec<String>]) -> String {
    let mut text = String::new();
    for (case, output) in cases.iter().zip(outputs) {
        for comment in &case.comments {
            let _ = writeln!(text, "{comment}");
        }
        let _ = writeln!(text, "{}\n----", case.command);
        for line in output {
            let _ = writeln!(text, "{line}");
        }
        text.push('\n');
    }
    text.truncate(text.trim_end().len());
    text.push('\n');
    text
}

/// The state a script runs against.
#[derive(Default)]
struct Env {
    cluster: Option<Cluster>,
}

fn id(arg: &str) -> u64 {
    arg.parse()
        .unwrap_or_else(|_| panic!("not a node id: {arg}"))
}

fn ids(cluster: &Cluster, arg: &str) -> Vec<u64> {
    if arg == "all" {
        return cluster.ids().into_iter().map(|n| n.0).collect();
    }
    arg.split(',').map(id).collect()
}

fn list(arg: &str) -> Vec<u64> {
    arg.split(',').filter(|s| !s.is_empty()).map(id).collect()
}

impl Env {
    fn cluster(&mut self) -> &mut Cluster {
        self.cluster.as_mut().expect("start the script with `new`")
    }

    /// Runs one command; returns its output lines.
    fn run(&mut self, command: &str) -> Vec<String> {
        let args: Vec<&str> = command.split_whitespace().collect();
        let (name, args) = args.split_first().expect("a command");
        let out = match *name {
            "new" => self.new_cluster(args),
            "add-node" => {
                self.cluster().add_joining_node(id(args[0]));
                Vec::new()
            }
            "campaign" => self.campaign(id(args[0])),
            "tick" => self.tick(args),
            "stabilize" => {
                self.cluster().stabilize();
                self.cluster().take_trace()
            }
            "propose" => self.propose(id(args[0]), args[1]),
            "read" => self.read(id(args[0]), args[1], args.get(2) == Some(&"lease")),
            "transfer" => {
                let result = self
                    .cluster()
                    .node_mut(id(args[0]))
                    .transfer_leadership(NodeId(id(args[1])));
                vec![format!("{result:?}")]
            }
            "add-learner" | "promote" | "remove" => self.change(name, id(args[0]), id(args[1])),
            "partition" => {
                self.cluster().partition(id(args[0]));
                Vec::new()
            }
            "cut" => {
                self.cluster().cut(id(args[0]), id(args[1]));
                Vec::new()
            }
            "heal" => {
                self.cluster().heal();
                Vec::new()
            }
            "hold-persist" => {
                self.cluster().hold_persist(id(args[0]), true);
                Vec::new()
            }
            "release-persist" => self.release_persist(id(args[0])),
            "crash" => {
                self.cluster().crash(id(args[0]));
                Vec::new()
            }
            "restart" => {
                let node = id(args[0]);
                self.cluster().restart(node);
                vec![render_status(&self.cluster().node(node).status())]
            }
            "snapshot" => {
                let result = self.cluster().take_snapshot(id(args[0]));
                vec![format!("{result:?}")]
            }
            "status" => {
                let cluster = self.cluster();
                ids(cluster, args[0])
                    .into_iter()
                    .map(|n| render_status(&cluster.node(n).status()))
                    .collect()
            }
            "log" => {
                let node = self.cluster().node(id(args[0]));
                let entries: Vec<_> = log_of(node).into_values().collect();
                vec![format!(
                    "{}: snapshot {} {}",
                    node.id(),
                    node.snapshot_index(),
                    render_entries(&entries)
                )]
            }
            "state" => {
                let node = id(args[0]);
                let commands: Vec<String> = self
                    .cluster()
                    .commands(node)
                    .iter()
                    .map(|c| format!("{:?}", String::from_utf8_lossy(c)))
                    .collect();
                vec![format!("n{node}: [{}]", commands.join(", "))]
            }
            other => panic!("unknown command {other}"),
        };
        if out.is_empty() {
            vec!["ok".to_string()]
        } else {
            out
        }
    }

    fn new_cluster(&mut self, args: &[&str]) -> Vec<String> {
        let mut voters = Vec::new();
        let mut learners = Vec::new();
        let mut settings = Vec::new();
        for arg in args {
            match arg.split_once('=') {
                None => voters.push(id(arg)),
                Some(("learners", value)) => learners = list(value),
                Some((key, value)) => settings.push((key.to_string(), value.to_string())),
            }
        }
        let make = move |node: u64| {
            let mut cfg = config(node);
            for (key, value) in &settings {
                let number = || {
                    value
                        .parse::<usize>()
                        .unwrap_or_else(|_| panic!("{key}={value}"))
                };
                match key.as_str() {
                    "pre_vote" => cfg.pre_vote = value == "true",
                    "check_quorum" => cfg.check_quorum = value == "true",
                    "entries_per_msg" => cfg.entries_per_msg = number(),
                    "max_inflight_msgs" => cfg.max_inflight_msgs = number(),
                    "catchup_multiplier" => cfg.catchup_multiplier = number(),
                    "snapshot_chunk_bytes" => cfg.snapshot_chunk_bytes = number(),
                    "max_uncommitted_bytes" => cfg.max_uncommitted_bytes = number(),
                    "max_msg_bytes" => cfg.max_msg_bytes = number(),
                    "promote_lag_entries_max" => cfg.promote_lag_entries_max = number() as u64,
                    other => panic!("unknown setting {other}"),
                }
            }
            cfg
        };
        self.cluster = Some(Cluster::with(membership(&voters, &learners), make));
        Vec::new()
    }

    fn campaign(&mut self, node: u64) -> Vec<String> {
        let cluster = self.cluster();
        match cluster.campaign(node) {
            Some(ticks) => {
                let n = cluster.node(node);
                vec![format!(
                    "n{node} campaigns after {ticks} ticks: {:?} {}",
                    n.role(),
                    n.term()
                )]
            }
            None => vec![format!(
                "n{node} did not campaign within {} ticks",
                2 * ELECTION_TICKS
            )],
        }
    }

    fn tick(&mut self, args: &[&str]) -> Vec<String> {
        let count = args.get(1).map_or(1, |c| {
            c.strip_prefix('x')
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("tick count {c}"))
        });
        let cluster = self.cluster();
        let targets = ids(cluster, args[0]);
        for _ in 0..count {
            for node in &targets {
                cluster.tick(*node);
            }
        }
        Vec::new()
    }

    fn propose(&mut self, node: u64, data: &str) -> Vec<String> {
        match self.cluster().node_mut(node).propose(bytes(data)) {
            Ok((term, index)) => vec![format!("n{node} accepted {index}@{term}")],
            Err(error) => vec![format!("n{node} refused: {error:?}")],
        }
    }

    fn read(&mut self, node: u64, read_id: &str, lease: bool) -> Vec<String> {
        let read_id = ReadId(read_id.parse().expect("a read id"));
        let mode = if lease {
            ReadMode::Lease
        } else {
            ReadMode::Linearizable
        };
        match self.cluster().node_mut(node).read(read_id, mode) {
            Ok(()) => Vec::new(),
            Err(error) => vec![format!("n{node} refused: {error:?}")],
        }
    }

    fn change(&mut self, name: &str, leader: u64, node: u64) -> Vec<String> {
        let target = NodeId(node);
        let change = match name {
            "add-learner" => MembershipChange::AddLearner(target),
            "promote" => MembershipChange::Promote(target),
            _ => MembershipChange::Remove(target),
        };
        match self.cluster().node_mut(leader).change_membership(change) {
            Ok(index) => {
                let membership = self.cluster().node(leader).membership().clone();
                vec![format!(
                    "n{leader} accepted at {index}: {}",
                    render_membership(&membership)
                )]
            }
            Err(error) => vec![format!("n{leader} refused: {error:?}")],
        }
    }

    fn release_persist(&mut self, node: u64) -> Vec<String> {
        let cluster = self.cluster();
        cluster.hold_persist(node, false);
        let released = cluster.release_persist(node);
        if released.is_empty() {
            return vec![format!("n{node}: nothing held")];
        }
        let reports: Vec<String> = released.iter().map(|(i, t)| format!("{i}@{t}")).collect();
        vec![format!("n{node} persisted {}", reports.join(", "))]
    }
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// Runs one file; returns the mismatches as readable reports.
fn run_file(path: &Path, rewrite: bool) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cases = parse(path, &text);
    let mut env = Env::default();
    let mut outputs = Vec::new();
    let mut mismatches = Vec::new();
    for case in &cases {
        let actual = env.run(&case.command);
        if actual != case.expected {
            mismatches.push(format!(
                "{}:{}: {}\n--- expected\n{}\n--- actual\n{}\n",
                path.display(),
                case.line,
                case.command,
                case.expected.join("\n"),
                actual.join("\n")
            ));
        }
        outputs.push(actual);
    }
    if rewrite {
        std::fs::write(path, render_file(&cases, &outputs)).expect("rewrite the golden file");
        return Vec::new();
    }
    mismatches
}

#[test]
fn golden_scenarios() {
    let rewrite = std::env::var_os("REWRITE").is_some_and(|v| v == "1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(testdata())
        .expect("crates/raft/testdata exists")
        .map(|entry| entry.expect("readable directory").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no golden files in {}",
        testdata().display()
    );
    let mut mismatches = Vec::new();
    for file in &files {
        mismatches.extend(run_file(file, rewrite));
    }
    assert!(
        mismatches.is_empty(),
        "{} golden mismatches (REWRITE=1 regenerates):\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// The runner itself: the parser keeps comments and the rewrite reproduces a file.
#[test]
fn golden_parser_round_trips() {
    let text = "# a comment\nnew 1 2 3\n----\nok\n\nstatus 1\n----\nline one\nline two\n";
    let cases = parse(Path::new("inline"), text);
    assert_eq!(cases.len(), 2);
    assert_eq!(cases[0].comments, vec!["# a comment".to_string()]);
    assert_eq!(
        cases[1].expected,
        vec!["line one".to_string(), "line two".to_string()]
    );
    assert_eq!(cases[1].line, 6);
    let outputs: Vec<Vec<String>> = cases.iter().map(|c| c.expected.clone()).collect();
    assert_eq!(render_file(&cases, &outputs), text);
    // An entry renders the payload kinds distinctly.
    assert_eq!(render_entry(&noop(1, 1)), "i1@t1 noop");
    assert_eq!(render_entry(&cmd(2, 1, "x")), "i2@t1 \"x\"");
    let conf_entry = conf(3, 2, membership(&[1, 2], &[3]));
    assert!(matches!(conf_entry.payload, Payload::Membership(_)));
    assert_eq!(render_entry(&conf_entry), "i3@t2 conf v=[n1,n2] l=[n3]");
}
