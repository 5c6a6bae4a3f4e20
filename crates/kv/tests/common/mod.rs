//! Helpers shared by the integration tests: a seeded generator and command builders.

#![allow(dead_code)]

use bytes::Bytes;
use rkv_kv::{Applied, ClientSeq, Command, StateMachine, WriteOp};

/// SplitMix64: tiny, deterministic, good enough to drive tests from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Runs `test` once per seed. The seeds are `0..count`, or only `RKV_SEED` if set; a
/// failure names its seed so it can be replayed with `RKV_SEED=<seed>`.
pub fn for_seeds(count: u64, test: impl Fn(u64) + std::panic::RefUnwindSafe) {
    let seeds: Vec<u64> = match std::env::var("RKV_SEED") {
        Ok(seed) => vec![seed.parse().expect("RKV_SEED is a u64")],
        Err(_) => (0..count).collect(),
    };
    for seed in seeds {
        if std::panic::catch_unwind(|| test(seed)).is_err() {
            panic!("failed with seed={seed} (replay with RKV_SEED={seed})");
        }
    }
}

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub fn register(now_ms: u64) -> Vec<u8> {
    Command::Register { now_ms }.encode()
}

pub fn write(now_ms: u64, session: Option<(u64, u64)>, op: WriteOp) -> Vec<u8> {
    Command::Write {
        now_ms,
        session: session.map(|(client_id, seq)| ClientSeq { client_id, seq }),
        op,
    }
    .encode()
}

pub fn put(key: &str, value: &str) -> WriteOp {
    WriteOp::Put {
        key: b(key),
        value: b(value),
    }
}

pub fn delete(key: &str) -> WriteOp {
    WriteOp::Delete { key: b(key) }
}

/// Applies a payload and returns its single result.
pub fn apply_one(machine: &mut StateMachine, index: u64, payload: &[u8]) -> Applied {
    let mut applied = machine.apply(index, payload);
    assert_eq!(applied.len(), 1, "one result expected, got {applied:?}");
    applied.pop().unwrap()
}
