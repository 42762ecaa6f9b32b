//! Integration tests: real `cairn` processes on 127.0.0.1, each binding port
//! 0 and writing its address to a file the harness polls.
//!
//! One test binary (`it`) so the crate graph links once; run with
//! `cargo nextest run --test it` (add a module name to filter).

mod common;

mod bench;
mod chunkserver;
mod cluster;
mod cors;
mod dashboard;
mod deploy;
mod dev;
mod disk;
mod durability;
mod e2e;
mod faults;
mod linearizability;
mod lost;
mod metadata;
mod metadisk;
mod netns;
mod ops;
mod partition;
mod partition_cs;
mod placement;
mod rebalance;
mod repair;
mod roles;
mod s3;
mod scrub_gc;
mod secrets;
mod snapshot;
mod tls;
mod upgrade;
