//! Scale: generated linearizable histories large enough to show the search stays fast.
//!
//! The 100,000-operation check runs only in release builds (`cargo test -p rkv-check
//! --release`); debug builds run the same generator at a tenth of the size. Each test prints
//! its seed and timing (`--nocapture` to see them).

mod common;

use std::time::Instant;

use common::{Shape, linearizable_history, master_seed};
use rkv_check::{Verdict, check};

fn check_generated(name: &str, shape: Shape) {
    let seed = master_seed();
    let started = Instant::now();
    let history = linearizable_history(seed, shape);
    let generated = started.elapsed();
    let started = Instant::now();
    let verdict = check(&history);
    let checked = started.elapsed();
    eprintln!(
        "{name}: {} ops over {} keys ({} clients), seed {seed}: generated in {generated:?}, checked in {checked:?}",
        history.len(),
        shape.keys,
        shape.clients
    );
    assert_eq!(
        verdict,
        Verdict::Linearizable,
        "{name}, seed {seed}: {verdict}"
    );
}

const MANY_KEYS: Shape = Shape {
    clients: 64,
    keys: 1000,
    ops: 100_000,
    values: 5,
    latency_max: 50,
    failed_per_mille: 10,
    unknown_per_mille: 10,
};

#[test]
#[cfg_attr(debug_assertions, ignore = "100k operations: run with --release")]
fn hundred_thousand_ops_over_a_thousand_keys() {
    check_generated("100k/1000 keys", MANY_KEYS);
}

#[test]
fn ten_thousand_ops_over_a_hundred_keys() {
    let shape = Shape {
        keys: 100,
        ops: 10_000,
        ..MANY_KEYS
    };
    check_generated("10k/100 keys", shape);
}

const HOT_KEY: Shape = Shape {
    clients: 16,
    keys: 1,
    ops: 20_000,
    values: 5,
    latency_max: 20,
    failed_per_mille: 10,
    unknown_per_mille: 2,
};

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "20k operations on one key: run with --release"
)]
fn long_history_on_one_hot_key() {
    check_generated("20k/1 key", HOT_KEY);
}

#[test]
fn shorter_history_on_one_hot_key() {
    let shape = Shape {
        ops: 2_000,
        ..HOT_KEY
    };
    check_generated("2k/1 key", shape);
}
