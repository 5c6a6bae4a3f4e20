//! rkv's client side: a library to talk to an rkv cluster, and `rkvctl`.
//!
//! - [`client`]: [`Client`], one handle on a cluster. It finds the leader (following the
//!   `rkv-leader-addr` hints rkvd sends, else trying the next server), retries what is
//!   safe to retry with bounded back-off under a deadline, and makes writes exactly-once
//!   with a session. Both APIs: rkv.v1 (get at three consistency levels, put, delete,
//!   compare-and-swap, scan, watch, status, membership, leader transfer) and the
//!   original's rkvpb (Register, Insert, Lookup, Reconf).
//! - [`error`]: [`Error`], typed by what the caller can do; a write that timed out is
//!   *outcome unknown*, never "failed".
//! - [`load`]: relab's rkvctl load generator (open and closed loop, Zipf keys,
//!   HdrHistogram percentiles, the latency CSV and the one-line summary), against rkv or,
//!   with `-target etcd`, against etcd.
//! - [`etcd`]: [`etcd::EtcdKv`], the load generator's connection to an etcd v3 cluster
//!   (Put and linearizable Range), for the side-by-side benchmark (`bench/compare`).
//! - [`zipf`]: Go's `rand.Zipf` sampler with a seeded generator.
//! - [`goflags`]: Go `flag`-style command lines (`-cluster`, `-time=10s`) on clap.
//! - [`cli`]: `rkvctl` itself; `src/bin/rkvctl.rs` only calls [`cli::main`].
//!
//! ```no_run
//! # async fn example() -> Result<(), rkv_client::Error> {
//! use rkv_client::{Client, ClientConfig, Consistency};
//! let client = Client::new([":9201", ":9202", ":9203"], ClientConfig::default())?;
//! client.put("greeting", "hello").await?;
//! let value = client.get("greeting", Consistency::Linearizable).await?;
//! assert_eq!(value.as_deref(), Some(&b"hello"[..]));
//! # Ok(()) }
//! ```

pub mod cli;
pub mod client;
pub mod error;
pub mod etcd;
pub mod goflags;
pub mod load;
pub mod zipf;

pub use client::{CasOutcome, Client, ClientConfig, Filter, ScanPage, Selector, Watch};
pub use error::Error;
pub use rkv_wire::v1::{Consistency, Event, Member, StatusResponse};
