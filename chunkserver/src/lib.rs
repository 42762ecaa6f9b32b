//! Cairn's chunkserver crate: everything about one shard, from bytes to disk
//! and back.
//!
//! It owns the erasure codec and stripe layout (used by the client library
//! and by repair), the on-disk shard format, the durable multi-disk shard
//! store, the chunkserver's HTTP service and the typed client other roles use
//! to talk to it. It depends only on `cairn-metadata` (the shared HTTP
//! plumbing, the shared id and parameter types, the metadata client and the
//! worker runtime); the client library and the `cairn` binary sit above it.
//!
//! # Layout
//! - [`error`]: the crate's one error enum, [`Error`], and its HTTP mapping.
//! - [`ids`]: [`ShardId`] and [`StripeId`] (defined in `cairn_metadata::types`),
//!   random 128-bit ids shown as 32 lowercase hex characters (the only user
//!   input ever used in a path).
//! - [`codec`]: [`EcParams`], the stripe [`Layout`] helpers and
//!   the Reed-Solomon [`Codec`].
//! - [`format`](mod@format): the versioned shard-file header ([`ShardMeta`] on disk).
//! - [`store`]: the durable shard [`Store`] over one or more data directories:
//!   temp-file-fsync-rename writes, verified reads, quarantine, free-space
//!   reserve, in-memory index.
//! - [`api`]: wire-level names and JSON shapes shared by server and client.
//! - [`server`]: the [`Chunkserver`] composition root and its HTTP handler.
//! - [`heartbeat`]: the worker reporting to the metadata service and running
//!   the commands of its replies (deletes, inventory for orphan GC).
//! - [`scrub`]: the throttled background scrubber that re-verifies every
//!   shard, quarantines bad ones and checkpoints its cursor.
//! - [`repair`]: the executor of the leader's repair tasks: fetch k
//!   survivors, rebuild, verify against the manifest's BLAKE3, store.
//! - [`metrics`]: the chunkserver's `/metrics` and the shard client's
//!   per-chunkserver call metrics.
//! - [`client`]: [`ShardClient`](client::ShardClient), the typed client of a
//!   chunkserver.

pub mod api;
pub mod client;
pub mod codec;
pub mod error;
pub mod format;
pub mod heartbeat;
pub mod ids;
pub mod metrics;
pub mod repair;
pub mod scrub;
pub mod server;
pub mod store;

pub use codec::{Codec, EcParams, Layout, DEFAULT_SHARD_SIZE};
pub use error::{Error, Result};
pub use format::ShardMeta;
pub use ids::{ShardId, StripeId};
pub use server::{Chunkserver, ChunkserverConfig};
pub use store::{Reserve, Store, StoreConfig};
