//! The clients of a scenario: several workers doing reads, writes, deletes and
//! compare-and-swaps on a small key space, so that operations contend, each recorded
//! with its invocation and completion time and its outcome for the checker.
//!
//! Each worker has its own [`Client`] (its own session, so its writes are exactly-once)
//! whose list starts with a different node: reads are served by that node (a follower
//! confirms a linearizable read with the leader; under `-unsafe-local-reads` it answers
//! from its own state, which is what the checker must catch), and writes are forwarded
//! to the leader. When that node is down, the client moves on as it normally would.
//! Outcomes come from the client library: a success is `ok`, an error that says the
//! write may have been applied is `unknown`, any other error is `failed`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rkv_check::{OpKind, Operation, Outcome};
use rkv_client::zipf::Rng;
use rkv_client::{Client, Consistency, Error};
use tokio::sync::watch;
use tokio::time::Instant;

/// The history of a run, in microseconds since the run started.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Operation>>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
        })
    }

    /// Microseconds since the run started.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Records one operation.
    pub fn push(&self, op: Operation) {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(op);
    }

    /// Everything recorded so far.
    pub fn ops(&self) -> Vec<Operation> {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs `op` on `client`, recording it; returns the value read, for reads.
    pub async fn run(&self, worker: u64, client: &Client, key: &str, op: Op) -> Option<String> {
        let invoke = self.now();
        let (outcome, kind, read) = match op {
            Op::Get => match client.get(key, Consistency::Linearizable).await {
                Ok(value) => {
                    let value = value.map(|v| String::from_utf8_lossy(&v).into_owned());
                    (
                        Outcome::Ok,
                        OpKind::Get {
                            value: value.clone(),
                        },
                        value,
                    )
                }
                Err(_) => (Outcome::Failed, OpKind::Get { value: None }, None),
            },
            Op::Put(value) => {
                let result = client.put(key, &value).await;
                (outcome_of(&result), OpKind::Put { value }, None)
            }
            Op::Delete => {
                let result = client.delete(key).await;
                (outcome_of(&result), OpKind::Delete, None)
            }
            Op::Cas { expected, new } => {
                let result = client
                    .compare_and_swap(
                        key,
                        expected.as_deref().map(str::as_bytes),
                        Some(new.as_bytes()),
                    )
                    .await;
                let swapped = result.as_ref().is_ok_and(|o| o.swapped);
                (
                    outcome_of(&result),
                    OpKind::Cas {
                        expected,
                        new,
                        swapped,
                    },
                    None,
                )
            }
        };
        self.push(Operation {
            client: worker,
            key: key.to_string(),
            invoke,
            complete: self.now().max(invoke),
            outcome,
            kind,
        });
        read
    }
}

/// One operation a worker chose.
#[derive(Clone, Debug)]
pub enum Op {
    /// A linearizable read.
    Get,
    /// Set a value.
    Put(String),
    /// Remove the key.
    Delete,
    /// Compare-and-swap.
    Cas {
        /// The value the key must hold (`None`: absent).
        expected: Option<String>,
        /// The value to set.
        new: String,
    },
}

fn outcome_of<T>(result: &Result<T, Error>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(e) if e.outcome_unknown() => Outcome::Unknown,
        Err(_) => Outcome::Failed,
    }
}

/// The name of key number `i`.
pub fn key_name(i: u64) -> String {
    format!("k{i}")
}

/// One worker: operations until `stop` says so, each bounded by the client's deadline.
pub async fn worker(
    id: u64,
    client: Client,
    keys: u64,
    seed: u64,
    recorder: Arc<Recorder>,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = Rng::new(seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut seen: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut written = 0u64;
    while !*stop.borrow_and_update() {
        let key = key_name(rng.next_u64() % keys.max(1));
        let dice = rng.next_u64() % 100;
        let op = if dice < 40 {
            Op::Get
        } else if dice < 70 {
            written += 1;
            Op::Put(format!("{id}.{written}"))
        } else if dice < 80 {
            Op::Delete
        } else {
            written += 1;
            let expected = if rng.next_u64().is_multiple_of(4) {
                None
            } else {
                seen.get(&key).cloned().flatten()
            };
            Op::Cas {
                expected,
                new: format!("{id}.{written}"),
            }
        };
        let read = recorder.run(id, &client, &key, op.clone()).await;
        match op {
            Op::Get => {
                seen.insert(key, read);
            }
            Op::Put(value) => {
                seen.insert(key, Some(value));
            }
            _ => {}
        }
        // A tiny pause keeps a worker whose calls fail fast from spinning.
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(1)) => {}
            _ = stop.changed() => {}
        }
    }
}
