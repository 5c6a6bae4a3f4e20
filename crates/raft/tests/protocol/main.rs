//! The rules of the Raft core, one test per claim, grouped by area.
//!
//! In the manner of etcd's `raft_paper_test.go`, each test is named after the section of
//! the Raft paper (`s5_2_...`), the dissertation (`s4_...`, `s6_4_...`, `s9_6_...`, `s3_10_...`)
//! or the crate's documented contract that it checks. Unit tests drive one node with
//! synthetic messages and, in the manner of openraft's engine tests, assert the exact
//! list of actions it emits; cluster tests drive an in-memory [`common::Cluster`].
//!
//! Tests that document a defect of the core are marked `BUG:` in their doc comment; they
//! fail until the core is fixed.

#[path = "../common/mod.rs"]
mod common;

mod chaos;
mod election;
mod limits;
mod membership;
mod mutants;
mod reads;
mod recovery;
mod replication;
mod snapshots;
mod transfer;
