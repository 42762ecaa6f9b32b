//! The cluster model and the metadata API types (versioned by the `/v1/`
//! prefix of the HTTP API; every type is serde JSON).
//!
//! Everything a chunkserver, a client or the gateway exchanges with the
//! metadata service is defined here, in the lowest crate, so the crates above
//! share one definition.
//!
//! # Layout
//! One file per API; every item is re-exported here, so `crate::types::X`
//! names it whichever file holds it:
//! - `ids`: ids, hashes, erasure-coding parameters, name validation.
//! - `objects`: buckets, manifests, write conditions, multipart uploads.
//! - `keys`: S3 access keys and grants.
//! - `command`: [`Command`], [`CommandResult`] and [`CommandRole`], the
//!   role that may propose each command.
//! - `error`: [`MetaError`].
//! - `query`: [`Query`], listings, the placement audit, [`QueryResult`].
//! - `chunkserver`: what chunkservers exchange with the service
//!   (heartbeats, chunkserver commands, repair tasks, inventories, scrub).
//! - `tagging`: S3 object tag limits ([`validate_tags`]).
//! - `bucket_config`: per-bucket S3 configuration (CORS rules, bucket
//!   tags) and its limits ([`validate_cors`], [`validate_bucket_tags`]).
//! - `versions`: S3 versioning states, version ids, version listings.
//! - `admin`: cluster status and the other admin-facing reports.

mod admin;
mod bucket_config;
mod chunkserver;
mod command;
mod error;
mod ids;
mod keys;
mod objects;
mod query;
mod tagging;
mod versions;

pub use self::admin::*;
pub use self::bucket_config::*;
pub use self::chunkserver::*;
pub use self::command::*;
pub use self::error::*;
pub use self::ids::*;
pub use self::keys::*;
pub use self::objects::*;
pub use self::query::*;
pub use self::tagging::*;
pub use self::versions::*;

#[cfg(test)]
mod wire_tests;
