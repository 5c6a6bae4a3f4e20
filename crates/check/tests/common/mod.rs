//! Test helpers shared by the integration tests: operation builders, a seeded generator of
//! linearizable histories, and a brute-force reference checker.
//!
//! Randomised tests derive everything from one `u64` seed. The master seed is read from the
//! `RKV_CHECK_SEED` environment variable (default: a fixed value) and every assertion message
//! includes the seed of the failing case, so `RKV_CHECK_SEED=<seed> cargo test` reproduces it.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::{BTreeMap, HashMap};

use rkv_check::{OpKind, Operation, Outcome};

/// The master seed for randomised tests.
pub fn master_seed() -> u64 {
    std::env::var("RKV_CHECK_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0x5eed_cafe_f00d)
}

/// splitmix64: small, fast, and good enough to drive test generators.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound > 0`); the modulo bias is irrelevant here.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// An operation on `key` by `client` over `[invoke, complete]`.
pub fn op(
    client: u64,
    key: &str,
    invoke: u64,
    complete: u64,
    outcome: Outcome,
    kind: OpKind,
) -> Operation {
    Operation {
        client,
        key: key.to_string(),
        invoke,
        complete,
        outcome,
        kind,
    }
}

pub fn get(value: Option<&str>) -> OpKind {
    OpKind::Get {
        value: value.map(str::to_string),
    }
}

pub fn put(value: &str) -> OpKind {
    OpKind::Put {
        value: value.to_string(),
    }
}

pub fn cas(expected: Option<&str>, new: &str, swapped: bool) -> OpKind {
    OpKind::Cas {
        expected: expected.map(str::to_string),
        new: new.to_string(),
        swapped,
    }
}

/// The sequential model: applies `kind` to `state`, returning the result-filled kind.
pub fn apply(state: &mut Option<String>, kind: &OpKind) -> OpKind {
    match kind {
        OpKind::Get { .. } => OpKind::Get {
            value: state.clone(),
        },
        OpKind::Put { value } => {
            *state = Some(value.clone());
            kind.clone()
        }
        OpKind::Delete => {
            *state = None;
            kind.clone()
        }
        OpKind::Cas { expected, new, .. } => {
            let swapped = state == expected;
            if swapped {
                *state = Some(new.clone());
            }
            OpKind::Cas {
                expected: expected.clone(),
                new: new.clone(),
                swapped,
            }
        }
    }
}

/// Shape of a generated history.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub clients: u64,
    pub keys: u64,
    pub ops: usize,
    /// Values are drawn from this many distinct strings (small: more ambiguity).
    pub values: u64,
    /// Longest time from invocation to the linearization point, and from there to completion.
    pub latency_max: u64,
    pub failed_per_mille: u64,
    pub unknown_per_mille: u64,
}

/// A linearizable history: clients issue operations back to back; each operation takes effect
/// at a random point inside its interval, in which order a sequential register per key
/// computes the results. Failed operations never take effect; unknown ones take effect half of
/// the time; the results of both are garbage, since the checker must ignore them.
pub fn linearizable_history(seed: u64, shape: Shape) -> Vec<Operation> {
    let mut rng = SplitMix64::new(seed);
    let mut client_free_at = vec![0_u64; usize::try_from(shape.clients).unwrap()];
    // (linearization point, whether it takes effect, operation)
    let mut planned: Vec<(u64, bool, Operation)> = Vec::with_capacity(shape.ops);
    let value = |rng: &mut SplitMix64| format!("v{}", rng.below(shape.values));
    for _ in 0..shape.ops {
        // The client that is free earliest goes next, so all clients overlap in time.
        let (client, &free_at) = client_free_at
            .iter()
            .enumerate()
            .min_by_key(|&(_, free_at)| *free_at)
            .unwrap();
        let invoke = free_at + rng.below(3);
        let point = invoke + rng.below(shape.latency_max + 1);
        let complete = point + rng.below(shape.latency_max + 1);
        client_free_at[client] = complete + 1 + rng.below(3);
        let key = format!("key-{}", rng.below(shape.keys));
        let kind = match rng.below(10) {
            0..=3 => get(None),
            4..=6 => put(&value(&mut rng)),
            7 => OpKind::Delete,
            _ => {
                let expected = (!rng.chance(200)).then(|| value(&mut rng));
                cas(expected.as_deref(), &value(&mut rng), false)
            }
        };
        let (outcome, takes_effect) = if rng.chance(shape.failed_per_mille) {
            (Outcome::Failed, false)
        } else if rng.chance(shape.unknown_per_mille) {
            (Outcome::Unknown, rng.chance(500))
        } else {
            (Outcome::Ok, true)
        };
        let op = op(client as u64, &key, invoke, complete, outcome, kind);
        planned.push((point, takes_effect, op));
    }
    planned.sort_by_key(|(point, _, _)| *point);
    let mut state: HashMap<String, Option<String>> = HashMap::new();
    let mut ops = Vec::with_capacity(planned.len());
    for (_, takes_effect, mut op) in planned {
        if takes_effect {
            let result = apply(state.entry(op.key.clone()).or_default(), &op.kind);
            if op.outcome == Outcome::Ok {
                op.kind = result;
            }
        }
        ops.push(op);
    }
    // Recorders write in completion order, not linearization order.
    ops.sort_by_key(|op| (op.complete, op.client));
    ops
}

/// A random (usually not linearizable) history on a few keys, for comparison with
/// [`brute_force_linearizable`].
pub fn random_small_history(rng: &mut SplitMix64, ops_max: u64, keys: u64) -> Vec<Operation> {
    let count = 1 + rng.below(ops_max);
    let value = |rng: &mut SplitMix64| match rng.below(3) {
        0 => None,
        1 => Some("a"),
        _ => Some("b"),
    };
    (0..count)
        .map(|client| {
            let invoke = rng.below(12);
            let complete = invoke + rng.below(8);
            let kind = match rng.below(8) {
                0..=2 => get(value(rng)),
                3 | 4 => put(value(rng).unwrap_or("c")),
                5 => OpKind::Delete,
                _ => cas(value(rng), value(rng).unwrap_or("c"), rng.chance(500)),
            };
            let outcome = match rng.below(10) {
                0 => Outcome::Failed,
                1 | 2 => Outcome::Unknown,
                _ => Outcome::Ok,
            };
            let key = format!("k{}", rng.below(keys));
            op(client, &key, invoke, complete, outcome, kind)
        })
        .collect()
}

/// The definition, checked by brute force: for every key, some order of the operations that
/// took effect (every ok one, any subset of the unknown writes) respects real time (`a` before
/// `b` whenever `a` completed strictly before `b` was invoked) and reproduces every ok result.
/// Exponential: keep histories tiny.
pub fn brute_force_linearizable(ops: &[Operation]) -> bool {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in ops {
        by_key.entry(&op.key).or_default().push(op);
    }
    by_key.values().all(|ops| {
        let relevant: Vec<&Operation> = ops
            .iter()
            .copied()
            .filter(|op| match op.outcome {
                Outcome::Ok => true,
                Outcome::Failed => false,
                Outcome::Unknown => !matches!(op.kind, OpKind::Get { .. }),
            })
            .collect();
        let mut used = vec![false; relevant.len()];
        brute_force_key(&relevant, &mut used, None)
    })
}

fn brute_force_key(ops: &[&Operation], used: &mut [bool], state: Option<String>) -> bool {
    let pending_ok: Vec<usize> = (0..ops.len())
        .filter(|&i| !used[i] && ops[i].outcome == Outcome::Ok)
        .collect();
    if pending_ok.is_empty() {
        return true;
    }
    for next in 0..ops.len() {
        if used[next] {
            continue;
        }
        let must_wait = pending_ok
            .iter()
            .any(|&other| ops[other].complete < ops[next].invoke);
        if must_wait {
            continue;
        }
        let mut after = state.clone();
        let result = apply(&mut after, &ops[next].kind);
        if ops[next].outcome == Outcome::Ok && result != ops[next].kind {
            continue;
        }
        used[next] = true;
        if brute_force_key(ops, used, after) {
            return true;
        }
        used[next] = false;
    }
    false
}
