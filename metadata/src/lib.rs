//! Cairn's metadata crate: the cluster model, its API types and the
//! Raft-replicated metadata service.
//!
//! # Layout
//! - [`absent`]: the leader's named-but-absent check (shards the state
//!   places on a chunkserver that it no longer holds).
//! - [`auth`]: cluster secret, role tokens and the authorization matrix of
//!   the internal APIs.
//! - [`client`]: `MetaClient`, leader-following client of the metadata API.
//! - [`dashboard`]: the operator dashboard's static page on `/dashboard`.
//! - [`disk`]: the free-space reserve of a node's data dir (writes are
//!   refused before the disk fills, never with ENOSPC inside redb).
//! - [`leader`]: `LeaderCtx`, what leader-only jobs (the planner) need
//!   from a metadata node; `ApiError`.
//! - [`metrics`]: `/metrics` (Prometheus) and `/health/live|ready`, shared
//!   by every role; process metrics.
//! - [`node`]: a metadata node: composition root, API server (`node::api`),
//!   heartbeats and inventories (`node::heartbeat`), failure detector and
//!   intent reaper (`node::workers`).
//! - [`net`]: HTTP plumbing shared by every role (server loop, pooled client,
//!   cluster-secret check).
//! - [`types`]: the model and API types (buckets, manifests, chunkservers,
//!   commands, queries, heartbeats).
//! - [`model`]: the state machine's tables, `apply` and `query`.
//! - [`orphans`]: the leader's inventory reconciliation (orphan GC).
//! - [`planner`]: the leader's repair planner (damage discovery from the
//!   reverse shard index, bad rows and the repair queue (`planner::scan`),
//!   priority by remaining redundancy, dispatch on heartbeat replies,
//!   commits).
//! - [`raft`]: openraft wiring: the redb log and state-machine stores, the
//!   snapshot format and the HTTP transport.
//! - [`worker`]: the background-worker runtime every role uses.
pub mod absent;
pub mod auth;
pub mod client;
pub mod dashboard;
pub mod disk;
pub mod leader;
pub mod metrics;
pub mod model;
pub mod net;
pub mod node;
pub mod orphans;
pub mod planner;
pub mod raft;
pub mod secrets;
pub mod shard_index;
pub mod stats;
pub mod types;
pub mod worker;
