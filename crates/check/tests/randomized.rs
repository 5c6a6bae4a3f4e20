//! Randomised tests: the checker against a brute-force reading of the definition, and against
//! generated histories that are linearizable by construction (and stop being so after a
//! targeted corruption). Every failure message carries the seed that reproduces it; set
//! `RKV_CHECK_SEED` to change the master seed.

mod common;

use common::{
    Shape, SplitMix64, brute_force_linearizable, linearizable_history, master_seed,
    random_small_history,
};
use rkv_check::{OpKind, Operation, Outcome, Verdict, check};

/// Whether dropping `ops[removed]` would leave an observation without a write that explains
/// it, a move the shrinker never makes alone (see `Violation::minimal`): a read of a value
/// that another operation of the full key history invoked before the read completed wrote,
/// but no other remaining such operation writes; or a compare-and-swap that found the key
/// present with no such other write left. An independent restatement of that rule.
fn removal_orphans_an_observation(ops: &[Operation], removed: usize, full: &[Operation]) -> bool {
    let written = |op: &Operation| match &op.kind {
        OpKind::Put { value } => Some(value.clone()),
        OpKind::Cas { new, swapped, .. } if *swapped || op.outcome != Outcome::Ok => {
            Some(new.clone())
        }
        OpKind::Cas { .. } | OpKind::Get { .. } | OpKind::Delete => None,
    };
    // Writes of `value` (`None`: of anything) that could precede `observer`, with multiplicity.
    let count = |ops: &mut dyn Iterator<Item = &Operation>,
                 value: Option<&String>,
                 observer: &Operation| {
        ops.filter(|op| op.invoke <= observer.complete)
            .filter_map(written)
            .filter(|written| value.is_none_or(|value| written == value))
            .count()
    };
    let rest: Vec<&Operation> = ops
        .iter()
        .enumerate()
        .filter(|&(index, _)| index != removed)
        .map(|(_, op)| op)
        .collect();
    rest.iter().any(|&op| {
        if op.outcome != Outcome::Ok {
            return false;
        }
        let observed = match &op.kind {
            OpKind::Get { value: Some(value) }
            | OpKind::Cas {
                expected: Some(value),
                swapped: true,
                ..
            } => Some(value),
            OpKind::Cas {
                expected: None,
                swapped: false,
                ..
            } => None,
            _ => return false,
        };
        let own = usize::from(
            written(op).is_some_and(|written| observed.is_none_or(|value| &written == value)),
        );
        let others_in_rest = count(&mut rest.iter().copied(), observed, op) - own;
        let others_in_full = count(
            &mut full.iter().filter(|op| op.outcome != Outcome::Failed),
            observed,
            op,
        ) - own;
        others_in_rest == 0 && others_in_full > 0
    })
}

#[test]
fn agrees_with_brute_force_on_small_histories() {
    let mut seeds = SplitMix64::new(master_seed());
    let (mut linearizable, mut violations) = (0, 0);
    for case in 0..4000 {
        let seed = seeds.next_u64();
        let history = random_small_history(&mut SplitMix64::new(seed), 7, 2);
        let expected = brute_force_linearizable(&history);
        let verdict = check(&history);
        let context = format!("case {case}, seed {seed}: {history:#?}\nverdict: {verdict}");
        match &verdict {
            Verdict::Linearizable => {
                assert!(
                    expected,
                    "checker says linearizable, brute force disagrees; {context}"
                );
                linearizable += 1;
            }
            Verdict::NotLinearizable(violation) => {
                assert!(
                    !expected,
                    "checker reports a violation, brute force disagrees; {context}"
                );
                let minimal = &violation.minimal;
                assert!(!minimal.is_empty(), "{context}");
                assert!(
                    minimal
                        .iter()
                        .all(|op| op.key == violation.key && history.contains(op)),
                    "minimal history is not a sub-history of the key; {context}"
                );
                assert!(
                    !brute_force_linearizable(minimal),
                    "minimal history is linearizable; {context}"
                );
                let key_history: Vec<Operation> = history
                    .iter()
                    .filter(|op| op.key == violation.key)
                    .cloned()
                    .collect();
                for removed in 0..minimal.len() {
                    let mut smaller = minimal.clone();
                    smaller.remove(removed);
                    assert!(
                        brute_force_linearizable(&smaller)
                            || removal_orphans_an_observation(minimal, removed, &key_history),
                        "minimal history still fails without op {removed}; {context}"
                    );
                }
                violations += 1;
            }
            Verdict::Inconclusive { .. } => panic!("no budget, yet inconclusive; {context}"),
        }
    }
    // The generator must exercise both answers, or this test proves little.
    assert!(
        linearizable > 500 && violations > 500,
        "{linearizable} vs {violations}"
    );
}

#[test]
fn generated_histories_with_contention_are_linearizable() {
    let shape = Shape {
        clients: 8,
        keys: 4,
        ops: 400,
        values: 3,
        latency_max: 20,
        failed_per_mille: 30,
        unknown_per_mille: 30,
    };
    let mut seeds = SplitMix64::new(master_seed());
    for case in 0..100 {
        let seed = seeds.next_u64();
        let history = linearizable_history(seed, shape);
        let verdict = check(&history);
        assert_eq!(
            verdict,
            Verdict::Linearizable,
            "case {case}, seed {seed}: {verdict}"
        );
    }
}

#[test]
fn a_phantom_read_in_a_generated_history_is_found_and_isolated() {
    let shape = Shape {
        clients: 8,
        keys: 10,
        ops: 1000,
        values: 4,
        latency_max: 20,
        failed_per_mille: 20,
        unknown_per_mille: 20,
    };
    let mut seeds = SplitMix64::new(master_seed());
    for case in 0..50 {
        let seed = seeds.next_u64();
        let mut rng = SplitMix64::new(seed);
        let mut history = linearizable_history(rng.next_u64(), shape);
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| {
                history[i].outcome == Outcome::Ok && matches!(history[i].kind, OpKind::Get { .. })
            })
            .collect();
        let target = reads[usize::try_from(rng.below(reads.len() as u64)).unwrap()];
        history[target].kind = OpKind::Get {
            value: Some("phantom".to_string()),
        };
        let verdict = check(&history);
        let context = format!("case {case}, seed {seed}, corrupted op {target}: {verdict}");
        let violation = verdict.violation().unwrap_or_else(|| panic!("{context}"));
        assert_eq!(violation.key, history[target].key, "{context}");
        assert_eq!(
            violation.minimal,
            vec![history[target].clone()],
            "{context}"
        );
    }
}
