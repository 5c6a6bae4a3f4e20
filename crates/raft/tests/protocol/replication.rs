//! Log replication and commitment: Raft paper §5.3 and §5.4.2, with the flow control of
//! the crate's `Config` (batching, `entries_per_msg`, catch-up, `max_inflight_msgs`) and
//! the persist-before-acknowledge contract of `src/lib.rs`.

use rkv_raft::{Action, Config, Entry, MessageBody, NodeId, RaftNode, Role};

use crate::common::*;

const VOTERS: &[u64] = &[1, 2, 3];

fn commands(first: u64, count: u64, term: u64) -> Vec<Entry> {
    (first..first + count)
        .map(|k| cmd(k, term, &format!("c{k}")))
        .collect()
}

fn propose_all(node: &mut RaftNode, entries: &[Entry]) {
    for entry in entries {
        let rkv_raft::Payload::Command(data) = &entry.payload else {
            panic!("commands only")
        };
        assert_eq!(node.propose(data.clone()), Ok((entry.term, entry.index)));
    }
}

/// A node 1 that recovered `entries` at `term` and then won the next election; the
/// Append it sent on winning is drained.
fn leader_from_log(cfg: Config, term: u64, entries: Vec<Entry>) -> RaftNode {
    let mut node = node_with(cfg, recovered(VOTERS, hard_state(term, None), entries));
    make_leader(&mut node);
    assert_eq!(node.term(), t(term + 1));
    node
}

/// §5.4.2 and §8: a new leader appends a no-op of its own term, after the entries of
/// earlier terms it holds, and sends it to every follower.
#[test]
fn s5_4_2_new_leader_appends_a_noop_of_its_term_after_earlier_entries() {
    let entries = vec![cmd(1, 1, "a"), cmd(2, 1, "b")];
    let mut node = node_with(config(1), recovered(VOTERS, hard_state(1, None), entries));
    tick_until_campaign(&mut node);
    node.step(msg(2, 1, 2, MessageBody::PreVoteResponse { granted: true }));
    node.take_actions();
    node.step(msg(2, 1, 2, MessageBody::VoteResponse { granted: true }));
    assert_eq!(
        node.take_actions(),
        vec![
            Action::Append(vec![noop(3, 2)]),
            send(1, 2, 2, append(2, 1, vec![noop(3, 2)], 0)),
            send(1, 3, 2, append(2, 1, vec![noop(3, 2)], 0)),
        ]
    );
}

/// Crate contract (`take_actions`): proposals made between two calls share one `Append`
/// action and one message per follower.
#[test]
fn s5_3_proposals_batch_into_one_append_and_one_message_per_follower() {
    let mut node = committed_leader(VOTERS);
    let entries = vec![cmd(2, 1, "a"), cmd(3, 1, "b"), cmd(4, 1, "c")];
    propose_all(&mut node, &entries);
    assert_eq!(
        node.take_actions(),
        vec![
            Action::Append(entries.clone()),
            send(1, 2, 1, append(1, 1, entries.clone(), 1)),
            send(1, 3, 1, append(1, 1, entries, 1)),
        ]
    );
}

/// Config contract: an Append carries at most `entries_per_msg` entries in steady state;
/// the rest follows in further messages, pipelined.
#[test]
fn s5_3_append_messages_carry_at_most_entries_per_msg_entries() {
    let mut cfg = config(1);
    cfg.entries_per_msg = 2;
    let mut node = committed_leader_with(cfg, VOTERS);
    let entries = commands(2, 5, 1);
    propose_all(&mut node, &entries);
    let to = |follower| {
        vec![
            send(1, follower, 1, append(1, 1, entries[0..2].to_vec(), 1)),
            send(1, follower, 1, append(3, 1, entries[2..4].to_vec(), 1)),
            send(1, follower, 1, append(5, 1, entries[4..5].to_vec(), 1)),
        ]
    };
    let mut expected = vec![Action::Append(entries.clone())];
    expected.extend(to(2));
    expected.extend(to(3));
    assert_eq!(node.take_actions(), expected);
}

/// Config contract: a follower that lags far behind (more than `entries_per_msg *
/// max_inflight_msgs` entries) gets `entries_per_msg * catchup_multiplier` per message.
#[test]
fn catching_up_follower_gets_entries_per_msg_times_catchup_multiplier_entries() {
    let mut cfg = config(1);
    cfg.entries_per_msg = 2;
    cfg.max_inflight_msgs = 2;
    cfg.catchup_multiplier = 3;
    let log = commands(1, 10, 1);
    let mut node = leader_from_log(cfg, 1, log.clone());
    // n2's log is empty: it rejects the first probe (prev 10) and says so.
    node.step(msg(2, 1, 2, reject(10, None, 1)));
    assert_eq!(
        node.take_actions(),
        vec![send(1, 2, 2, append(0, 0, log[0..6].to_vec(), 0))]
    );
    // Still 5 behind (> 2 * 2) after acknowledging 6: the rest goes in one message.
    node.step(msg(2, 1, 2, ack(6)));
    let mut rest = log[6..10].to_vec();
    rest.push(noop(11, 2));
    assert_eq!(
        node.take_actions(),
        vec![send(1, 2, 2, append(6, 1, rest, 0))]
    );
}

/// Config contract: at most `max_inflight_msgs` unacknowledged Appends per follower;
/// an acknowledgement opens the window again.
#[test]
fn s5_3_leader_stops_sending_when_max_inflight_msgs_are_unacknowledged() {
    let mut cfg = config(1);
    cfg.max_inflight_msgs = 2;
    cfg.entries_per_msg = 1;
    cfg.catchup_multiplier = 1;
    let mut node = committed_leader_with(cfg, VOTERS);
    let (a, b, c) = (cmd(2, 1, "a"), cmd(3, 1, "b"), cmd(4, 1, "c"));
    propose_all(&mut node, std::slice::from_ref(&a));
    assert_eq!(
        node.take_actions(),
        vec![
            Action::Append(vec![a.clone()]),
            send(1, 2, 1, append(1, 1, vec![a.clone()], 1)),
            send(1, 3, 1, append(1, 1, vec![a], 1)),
        ]
    );
    propose_all(&mut node, std::slice::from_ref(&b));
    assert_eq!(
        node.take_actions(),
        vec![
            Action::Append(vec![b.clone()]),
            send(1, 2, 1, append(2, 1, vec![b.clone()], 1)),
            send(1, 3, 1, append(2, 1, vec![b], 1)),
        ]
    );
    propose_all(&mut node, std::slice::from_ref(&c));
    assert_eq!(
        node.take_actions(),
        vec![Action::Append(vec![c.clone()])],
        "both windows are full"
    );
    node.step(msg(2, 1, 1, ack(2)));
    assert_eq!(
        node.take_actions(),
        vec![send(1, 2, 1, append(3, 1, vec![c], 1))]
    );
}

/// Crate contract, step 2: a follower hands new entries to the driver at once but
/// acknowledges them only once `persisted` reports them durable, and no further.
#[test]
fn s5_3_follower_appends_at_once_and_acknowledges_only_what_is_persisted() {
    follower_acknowledges_only_what_is_persisted(config(2));
}

/// The acknowledgement rule, for node 2 built with `cfg` (also run against a broken
/// variant in `mutants`).
pub(crate) fn follower_acknowledges_only_what_is_persisted(cfg: Config) {
    let mut node = node_with(cfg, bootstrap(VOTERS));
    let entries = vec![noop(1, 1), cmd(2, 1, "x")];
    node.step(msg(1, 2, 1, append(0, 0, entries.clone(), 0)));
    assert_eq!(
        node.take_actions(),
        vec![
            Action::SaveHardState(hard_state(1, None)),
            Action::Append(entries)
        ]
    );
    node.persisted(i(1), t(1));
    assert_eq!(node.take_actions(), vec![send(2, 1, 1, ack(1))]);
    node.persisted(i(2), t(1));
    assert_eq!(node.take_actions(), vec![send(2, 1, 1, ack(2))]);
}

/// Crate contract (`persisted`): a durability report for an entry that was since
/// overwritten is ignored, so it can never be acknowledged.
#[test]
fn persisted_report_for_an_overwritten_entry_is_ignored() {
    let mut node = new_node(2, VOTERS);
    node.step(msg(
        1,
        2,
        1,
        append(0, 0, vec![noop(1, 1), cmd(2, 1, "old")], 0),
    ));
    node.take_actions();
    node.step(msg(3, 2, 2, append(1, 1, vec![cmd(2, 2, "new")], 0)));
    assert_eq!(
        node.take_actions(),
        vec![
            Action::SaveHardState(hard_state(2, None)),
            Action::Append(vec![cmd(2, 2, "new")])
        ]
    );
    node.persisted(i(2), t(1));
    assert_eq!(node.take_actions(), vec![]);
    node.persisted(i(2), t(2));
    assert_eq!(node.take_actions(), vec![send(2, 3, 2, ack(2))]);
}

/// §5.3: "If a follower does not find an entry in its log with the same index and term,
/// then it refuses the new entries"; its hint says where its log ends.
#[test]
fn s5_3_follower_rejects_an_append_whose_previous_entry_it_lacks() {
    let mut node = follower_of(2, 1, 1, VOTERS);
    node.step(msg(1, 2, 1, append(5, 1, vec![cmd(6, 1, "x")], 0)));
    assert_eq!(node.take_actions(), vec![send(2, 1, 1, reject(5, None, 1))]);
    assert_eq!(node.last_index(), i(0));
}

/// §5.3 (the optimisation at the end of the section): the rejection names the term of
/// the conflicting entry and the first index the follower holds of that term.
#[test]
fn s5_3_follower_rejection_names_the_conflicting_term_and_its_first_index() {
    let entries = vec![
        cmd(1, 1, "a"),
        cmd(2, 2, "b"),
        cmd(3, 2, "c"),
        cmd(4, 2, "d"),
    ];
    let mut node = node_with(config(2), recovered(VOTERS, hard_state(2, None), entries));
    node.step(msg(1, 2, 3, append(4, 3, vec![noop(5, 3)], 0)));
    assert_eq!(
        node.take_actions(),
        vec![
            Action::SaveHardState(hard_state(3, None)),
            send(2, 1, 3, reject(4, Some(2), 2))
        ]
    );
}

/// §5.3: "If an existing entry conflicts with a new one (same index but different terms),
/// delete the existing entry and all that follow it"; the `Append` action starts at the
/// conflict, and entries that already match are not rewritten. The durable prefix that
/// matches (1..2) may be acknowledged at once; the new entries only once persisted.
#[test]
fn s5_3_follower_truncates_a_conflicting_suffix_and_writes_from_the_conflict() {
    let entries = vec![cmd(1, 1, "a"), cmd(2, 1, "b"), cmd(3, 1, "c")];
    let mut node = node_with(config(2), recovered(VOTERS, hard_state(1, None), entries));
    let sent = vec![cmd(2, 1, "b"), cmd(3, 2, "x"), cmd(4, 2, "y")];
    node.step(msg(1, 2, 2, append(1, 1, sent, 0)));
    assert_eq!(
        node.take_actions(),
        vec![
            Action::SaveHardState(hard_state(2, None)),
            Action::Append(vec![cmd(3, 2, "x"), cmd(4, 2, "y")]),
            send(2, 1, 2, ack(2)),
        ]
    );
    assert_eq!(
        node.status().persisted,
        i(2),
        "the overwritten entry 3 is no longer durable"
    );
    assert_eq!(node.entry(i(3)), Some(&cmd(3, 2, "x")));
    assert_eq!(node.last_index(), i(4));
    node.persisted(i(4), t(2));
    assert_eq!(node.take_actions(), vec![send(2, 1, 2, ack(4))]);
}

/// §5.3: an Append whose entries the follower already holds changes nothing and is
/// acknowledged (the acknowledgement of the first copy may have been lost).
#[test]
fn s5_3_duplicate_append_is_acknowledged_without_rewriting() {
    let mut node = new_node(2, VOTERS);
    let entries = vec![noop(1, 1), cmd(2, 1, "x")];
    node.step(msg(1, 2, 1, append(0, 0, entries.clone(), 0)));
    node.persisted(i(2), t(1));
    node.take_actions();
    node.step(msg(1, 2, 1, append(0, 0, entries, 0)));
    assert_eq!(node.take_actions(), vec![send(2, 1, 1, ack(2))]);
}

/// §5.3 with the conflict hint: a follower whose log holds a term the leader never had
/// makes the leader skip that whole term in one round trip.
#[test]
fn s5_3_conflict_hint_lets_the_leader_skip_a_whole_term() {
    // Leader: 1..4 @t1, 5..6 @t3, then its noop 7 @t4.
    let mut log = commands(1, 4, 1);
    log.extend(commands(5, 2, 3));
    let mut node = leader_from_log(config(1), 3, log.clone());
    // n2 holds 1 @t1, 2..5 @t2: too short for prev 6 ...
    node.step(msg(2, 1, 4, reject(6, None, 6)));
    let mut tail = log[5..6].to_vec();
    tail.push(noop(7, 4));
    assert_eq!(
        node.take_actions(),
        vec![send(1, 2, 4, append(5, 3, tail, 0))]
    );
    // ... and in conflict at 5, in term 2 since 2: the leader jumps straight to 2.
    node.step(msg(2, 1, 4, reject(5, Some(2), 2)));
    let mut from_two = log[1..6].to_vec();
    from_two.push(noop(7, 4));
    assert_eq!(
        node.take_actions(),
        vec![send(1, 2, 4, append(1, 1, from_two, 0))]
    );
}

/// A rejection that arrives twice (the network duplicated it) is answered once: the
/// copy teaches nothing, so it must not trigger another probe.
#[test]
fn s5_3_duplicated_rejection_is_answered_once() {
    let log = commands(1, 4, 1);
    let mut node = leader_from_log(config(1), 1, log.clone());
    node.step(msg(2, 1, 2, reject(4, None, 3)));
    let mut tail = log[2..4].to_vec();
    tail.push(noop(5, 2));
    assert_eq!(
        node.take_actions(),
        vec![send(1, 2, 2, append(2, 1, tail, 0))]
    );
    node.step(msg(2, 1, 2, reject(4, None, 3)));
    assert_eq!(node.take_actions(), vec![]);
}

/// §5.3 with the conflict hint: when the leader holds the conflicting term too, it
/// resumes right after its own last entry of that term.
#[test]
fn s5_3_conflict_hint_with_a_term_the_leader_holds_resumes_after_its_last_entry_of_it() {
    // Leader: 1 @t1, 2..3 @t2, 4 @t3, then its noop 5 @t4. n2: 1 @t1, 2..5 @t2.
    let log = vec![
        cmd(1, 1, "a"),
        cmd(2, 2, "b"),
        cmd(3, 2, "c"),
        cmd(4, 3, "d"),
    ];
    let mut node = leader_from_log(config(1), 3, log.clone());
    node.step(msg(2, 1, 4, reject(4, Some(2), 2)));
    assert_eq!(
        node.take_actions(),
        vec![send(
            1,
            2,
            4,
            append(3, 2, vec![log[3].clone(), noop(5, 4)], 0)
        )]
    );
}

/// §5.4.2 and figure 8: "Raft never commits log entries from previous terms by counting
/// replicas"; they commit only with an entry of the leader's own term.
#[test]
fn s5_4_2_leader_never_commits_an_earlier_term_entry_by_counting_replicas() {
    figure_8(config(1));
}

/// The figure 8 scenario, for node 1 built with `cfg` (also run against a broken variant
/// in `mutants`).
pub(crate) fn figure_8(cfg: Config) {
    let log = vec![cmd(1, 1, "a"), cmd(2, 2, "b")];
    let mut node = leader_from_log(cfg, 2, log.clone());
    // Every server holds index 2 of term 2: still not committed.
    node.step(msg(2, 1, 3, ack(2)));
    node.step(msg(3, 1, 3, ack(2)));
    assert_eq!(node.commit_index(), i(0));
    let actions = node.take_actions();
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Apply(_))),
        "{actions:?}"
    );
    // The noop of term 3 on a majority (n2 and, once durable, the leader) commits it all.
    node.step(msg(2, 1, 3, ack(3)));
    assert_eq!(
        node.commit_index(),
        i(0),
        "the leader's own noop is not durable yet"
    );
    node.persisted(i(3), t(3));
    assert_eq!(node.commit_index(), i(3));
    assert_eq!(
        node.take_actions(),
        vec![
            Action::Apply(vec![log[0].clone(), log[1].clone(), noop(3, 3)]),
            send(1, 2, 3, heartbeat(3, 0)),
            send(1, 3, 3, heartbeat(2, 0)),
        ]
    );
}

/// Crate contract, step 2: "a leader counts itself toward a quorum only once durable".
#[test]
fn s5_4_2_leader_counts_itself_toward_a_quorum_only_once_durable() {
    leader_counts_itself_only_once_durable(config(1));
}

/// The rule, for node 1 built with `cfg` (also run against a broken variant in `mutants`).
pub(crate) fn leader_counts_itself_only_once_durable(cfg: Config) {
    let mut node = node_with(cfg, bootstrap(VOTERS));
    make_leader(&mut node);
    node.step(msg(2, 1, 1, ack(1)));
    assert_eq!(node.commit_index(), i(0));
    assert_eq!(node.take_actions(), vec![]);
    node.persisted(i(1), t(1));
    assert_eq!(node.commit_index(), i(1));
    assert_eq!(
        node.take_actions(),
        vec![
            Action::Apply(vec![noop(1, 1)]),
            send(1, 2, 1, heartbeat(1, 0)),
            send(1, 3, 1, heartbeat(0, 0)),
        ]
    );
}

/// §5.3: a majority of followers commits an entry even before the leader's own write is
/// durable (the leader's disk is not special).
#[test]
fn s5_3_majority_of_followers_commits_without_the_leaders_own_write() {
    let mut node = committed_leader(&[1, 2, 3, 4, 5]);
    propose_all(&mut node, &[cmd(2, 1, "x")]);
    node.take_actions();
    node.step(msg(2, 1, 1, ack(2)));
    node.step(msg(3, 1, 1, ack(2)));
    assert_eq!(node.commit_index(), i(1), "two of five is not a majority");
    node.step(msg(4, 1, 1, ack(2)));
    assert_eq!(node.commit_index(), i(2));
}

/// §5.3: "the leader ... includes [the commit index] in future AppendEntries RPCs
/// (including heartbeats)"; a follower applies what it learns is committed, in order.
#[test]
fn s5_3_follower_applies_entries_once_it_learns_they_are_committed() {
    let mut node = new_node(2, VOTERS);
    let entries = vec![noop(1, 1), cmd(2, 1, "x")];
    node.step(msg(1, 2, 1, append(0, 0, entries.clone(), 1)));
    assert_eq!(
        node.take_actions(),
        vec![
            Action::SaveHardState(hard_state(1, None)),
            Action::Append(entries.clone()),
            Action::Apply(vec![noop(1, 1)]),
        ]
    );
    node.persisted(i(2), t(1));
    node.take_actions();
    node.step(msg(1, 2, 1, heartbeat(2, 3)));
    assert_eq!(
        node.take_actions(),
        vec![
            Action::Apply(vec![entries[1].clone()]),
            send(2, 1, 1, MessageBody::HeartbeatResponse { read_round: 3 })
        ]
    );
    assert_eq!(node.commit_index(), i(2));
}

/// §5.3 (figure 2, AppendEntries step 5): "set commitIndex = min(leaderCommit, index of
/// last new entry)": a follower never commits past what the leader sent it.
#[test]
fn s5_3_follower_commits_no_further_than_the_last_entry_sent() {
    let mut node = new_node(2, VOTERS);
    node.step(msg(1, 2, 1, append(0, 0, vec![noop(1, 1)], 5)));
    assert_eq!(node.commit_index(), i(1));
}

/// Cluster, §5.3: committed entries reach every follower's state machine, and the logs
/// match (§5.3 Log Matching).
#[test]
fn s5_3_cluster_commits_entries_on_every_server() {
    let mut cluster = Cluster::new(VOTERS);
    cluster.elect(1);
    cluster.node_mut(1).propose(bytes("a")).unwrap();
    cluster.node_mut(1).propose(bytes("b")).unwrap();
    cluster.stabilize();
    for id in VOTERS {
        assert_eq!(cluster.commands(*id), vec![bytes("a"), bytes("b")], "n{id}");
        assert_eq!(cluster.node(*id).commit_index(), i(3), "n{id}");
    }
    cluster.check_log_matching();
}

/// Cluster, §5.3: a follower whose fsyncs are held back delays nothing while a majority
/// is durable, and catches up once its disk catches up.
#[test]
fn s5_3_slow_disk_on_one_follower_does_not_block_commit() {
    let mut cluster = Cluster::new(VOTERS);
    cluster.elect(1);
    cluster.hold_persist(3, true);
    cluster.node_mut(1).propose(bytes("a")).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.node(1).commit_index(), i(2));
    let leader_view = cluster.node(1).status().peers;
    assert_eq!(
        leader_view
            .iter()
            .find(|p| p.id == n(3))
            .map(|p| p.match_index),
        Some(i(1))
    );
    cluster.hold_persist(3, false);
    cluster.release_persist(3);
    cluster.stabilize();
    let leader_view = cluster.node(1).status().peers;
    assert_eq!(
        leader_view
            .iter()
            .find(|p| p.id == n(3))
            .map(|p| p.match_index),
        Some(i(2))
    );
}

/// Cluster, §5.3: a leader that lost some messages repairs the follower's log.
#[test]
fn s5_3_lost_appends_are_repaired() {
    let mut cluster = Cluster::new(VOTERS);
    cluster.elect(1);
    cluster.cut(1, 3);
    for data in ["a", "b", "c"] {
        cluster.node_mut(1).propose(bytes(data)).unwrap();
        cluster.stabilize();
    }
    assert_eq!(cluster.node(3).last_index(), i(1));
    cluster.heal();
    cluster.run_ticks(3);
    assert_eq!(cluster.node(3).last_index(), i(4));
    assert_eq!(
        cluster.commands(3),
        vec![bytes("a"), bytes("b"), bytes("c")]
    );
    assert_eq!(cluster.node(1).role(), Role::Leader);
}

/// Processes and delivers like [`Cluster::stabilize`], but loses every message `lose`
/// picks, and stops early once `stop` holds (checked after each delivery round).
fn stabilize_with(
    cluster: &mut Cluster,
    lose: &impl Fn(&rkv_raft::Message) -> bool,
    stop: impl Fn(&Cluster) -> bool,
) {
    for _ in 0..STABILIZE_ROUNDS_MAX {
        let mut busy = false;
        for id in cluster.ids() {
            busy |= cluster.process(id);
        }
        busy |= !cluster.network.is_empty();
        cluster.deliver_only(|m| !lose(m));
        if !busy || stop(cluster) {
            return;
        }
    }
    panic!("did not stabilize");
}

fn never(_: &Cluster) -> bool {
    false
}

fn keep_all(_: &rkv_raft::Message) -> bool {
    false
}

/// Lets every other running server's lease lapse, then makes `id` campaign until it
/// leads (a first PreVote may only teach it the current term).
fn win(cluster: &mut Cluster, id: u64, lose: &impl Fn(&rkv_raft::Message) -> bool) {
    for other in cluster.ids() {
        if other != n(id) && cluster.peer(other.0).up {
            for _ in 0..ELECTION_TICKS {
                cluster.tick(other.0);
            }
        }
    }
    for _ in 0..3 {
        cluster.campaign(id).expect("campaigns");
        stabilize_with(cluster, lose, |c| c.node(id).role() == Role::Leader);
        if cluster.node(id).role() == Role::Leader {
            return;
        }
    }
    panic!("n{id} did not win");
}

/// The figure 8 scenario of the Raft paper, for five servers built with `make` (also run
/// against a broken variant in `mutants`).
pub(crate) fn figure_8_cluster(make: impl Fn(u64) -> Config) {
    let mut cluster = Cluster::with(membership(&[1, 2, 3, 4, 5], &[]), make);
    cluster.elect(1);
    // (a) S1 leads term 1 and gets entry 2 onto S2 only.
    for to in [3, 4, 5] {
        cluster.cut(1, to);
    }
    cluster.node_mut(1).propose(bytes("e")).unwrap();
    cluster.stabilize();
    cluster.crash(1);
    cluster.crash(2);
    cluster.heal();
    // (b) S5 leads term 2 with votes from S3 and S4, and appends entry 2 of its term on
    // itself only.
    win(&mut cluster, 5, &keep_all);
    cluster.partition(5);
    cluster.stabilize();
    assert_eq!(cluster.node(5).entry_term(i(2)), Some(t(2)));
    cluster.crash(5);
    cluster.heal();
    // (c) S1 leads term 3 and gets its term-1 entry 2 onto a majority (S1, S2, S3, S4),
    // but its own entry 3 onto S2 only.
    cluster.restart(1);
    cluster.restart(2);
    // S3 and S4 see S1's first Append (entry 3 after entry 2, which they lack) and
    // reject it; S1 then sends them entry 2 alone; every later Append that carries
    // entry 3 to them is lost.
    let first_seen = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let loses_entry_3 = |m: &rkv_raft::Message| {
        let carries_3 = matches!(&m.body, MessageBody::Append { entries, .. } if entries.iter().any(|e| e.index == i(3)));
        matches!(m.to, NodeId(3) | NodeId(4)) && carries_3 && !first_seen.borrow_mut().insert(m.to)
    };
    win(&mut cluster, 1, &loses_entry_3);
    stabilize_with(&mut cluster, &loses_entry_3, never);
    assert_eq!(
        cluster.node(3).entry_term(i(2)),
        Some(t(1)),
        "S3 holds the term-1 entry 2"
    );
    assert!(
        cluster.node(1).commit_index() < i(2),
        "entry 2 must not commit by counting replicas"
    );
    // (d) S1 crashes; S5 can still be elected (its last term 2 beats S3's and S4's 1)
    // and replaces entry 2 everywhere: it was never committed, so nothing is lost.
    cluster.crash(1);
    cluster.crash(2);
    cluster.restart(5);
    win(&mut cluster, 5, &keep_all);
    cluster.stabilize();
    cluster.run_ticks(1);
    assert_eq!(cluster.node(3).entry_term(i(2)), Some(t(2)));
    assert!(cluster.node(3).commit_index() >= i(3));
    assert_eq!(cluster.applied_entry(i(2)).map(|e| e.term), Some(t(2)));
}

/// §5.4.2, figure 8 as a cluster run: an entry of an earlier term replicated on a
/// majority is not committed, because a server without it can still be elected.
#[test]
fn s5_4_2_figure_8_cluster_run() {
    figure_8_cluster(|id| {
        let mut cfg = config(id);
        cfg.entries_per_msg = 1;
        cfg
    });
}
