//! The state-machine command (the `D` of the Raft log), its result, and
//! the role that may propose each command.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

/// Deepest nesting of commands in commands (`Once`, `Batch`, `At`,
/// `WithIntent`) a decoder accepts. Real entries nest at most four deep
/// (`At` > `Batch` > `Once` > `WithIntent`); postcard has no depth limit of
/// its own, so without this a few kilobytes of nested variant tags in a Raft
/// RPC or a corrupt log entry overflowed the stack (found by the
/// `raft_entry` fuzz target).
pub const MAX_COMMAND_NESTING: u32 = 16;

std::thread_local! {
    static NESTING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Leaves one nesting level on drop.
struct NestingGuard;

impl Drop for NestingGuard {
    fn drop(&mut self) {
        NESTING.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// `deserialize_with` of the fields that hold commands: counts the nesting
/// depth (per thread, as decoding is synchronous) and refuses it past
/// [`MAX_COMMAND_NESTING`].
fn nested<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let depth = NESTING.with(|n| {
        n.set(n.get() + 1);
        n.get()
    });
    let _guard = NestingGuard;
    if depth > MAX_COMMAND_NESTING {
        return Err(serde::de::Error::custom(format!(
            "commands nested more than {MAX_COMMAND_NESTING} deep"
        )));
    }
    T::deserialize(d)
}

/// A state-machine command: the `D` of the Raft log. Time is always a field
/// stamped by the proposer: `apply` never reads a clock or a random source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// `inner`, applied at most once per `id`: clients wrap every write so a
    /// retry after an ambiguous failure (timeout, leader change) returns the
    /// first outcome instead of applying twice.
    Once {
        /// Random id chosen by the client, reused across its retries.
        id: StripeId,
        /// The command.
        #[serde(deserialize_with = "nested")]
        inner: Box<Command>,
    },
    /// Several commands applied in order in one log entry (group commit by
    /// the leader's API); each has its own result.
    Batch {
        /// The commands.
        #[serde(deserialize_with = "nested")]
        cmds: Vec<Command>,
    },
    /// `inner` (usually a `Batch`) stamped with the leader's clock when it
    /// proposed the log entry: the one time every command of the entry sees
    /// in `apply` (intent leases, GC queue times). Entries written before
    /// this wrapper existed carry no time; `apply` then uses 0 ("long ago":
    /// leases never expire, GC rows are due at once, as before).
    At {
        /// Leader's clock, ms since the epoch.
        now_ms: u64,
        /// The command.
        #[serde(deserialize_with = "nested")]
        inner: Box<Command>,
    },
    /// Register (or renew) a write intent: the shards a writer is about to
    /// upload, named before the upload starts, so orphan GC never collects
    /// them while the write is in progress. Creates the intent when it is
    /// new; always extends its lease to entry time + `lease_ms` (O(1) in the
    /// shards registered before) and adds `shards`.
    RegisterIntent {
        /// Intent id, chosen by the writer.
        intent: StripeId,
        /// (chunkserver, shard) pairs about to be uploaded (may be empty:
        /// a plain renewal).
        shards: Vec<(ChunkserverId, ShardId)>,
        /// Lease length from the entry's time.
        lease_ms: u64,
    },
    /// Commit `inner` (a `PutObject` or `PutPart`) on behalf of write intent
    /// `intent`: refused with [`MetaError::IntentExpired`] (retryable; the
    /// write is not acknowledged) when the intent is missing or its lease
    /// ran out, or when a shard the commit places was not registered under
    /// it or is queued for GC. On success the intent and its shard rows are
    /// dropped: the committed manifest or part now names the shards.
    WithIntent {
        /// The writer's intent.
        intent: StripeId,
        /// The commit.
        #[serde(deserialize_with = "nested")]
        inner: Box<Command>,
    },
    /// Drop write intents whose lease ended before the entry's time (the
    /// leader's intent reaper), oldest first, removing at most `limit` rows:
    /// their uncommitted shards become ordinary orphans.
    ExpireIntents {
        /// Most shard rows removed by this command.
        limit: u32,
    },
    /// Create a bucket (fails if it exists).
    CreateBucket {
        /// The new bucket.
        bucket: BucketInfo,
    },
    /// Delete an empty bucket.
    DeleteBucket {
        /// Its name.
        name: String,
    },
    /// Commit an object manifest, atomically replacing any previous version
    /// (whose shards are queued for garbage collection).
    PutObject {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The new version.
        manifest: ObjectManifest,
        /// Condition on the current version.
        #[serde(default)]
        condition: PutCondition,
    },
    /// Delete an object (its shards are queued for garbage collection).
    DeleteObject {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Condition on the current version.
        #[serde(default)]
        condition: PutCondition,
    },
    /// Register a new chunkserver; the reply carries its id.
    RegisterChunkserver {
        /// Shard API address.
        addr: String,
        /// Failure domain.
        zone: String,
        /// Capacity, bytes.
        capacity: u64,
        /// Free bytes.
        free: u64,
        /// Leader's clock, ms since the epoch.
        now_ms: u64,
    },
    /// Record a chunkserver's latest stats (written by the leader from
    /// heartbeats, at most every few seconds per chunkserver).
    ChunkserverStats {
        /// Which.
        id: ChunkserverId,
        /// Current address (may change across restarts).
        addr: String,
        /// Zone.
        zone: String,
        /// Capacity, bytes.
        capacity: u64,
        /// Free bytes.
        free: u64,
        /// Bytes used by shards.
        used: u64,
        /// Shards stored.
        shard_count: u64,
        /// Leader's clock, ms since the epoch.
        now_ms: u64,
    },
    /// Change a chunkserver's state (the leader's failure detector, or an
    /// operator's drain).
    SetChunkserverState {
        /// Which.
        id: ChunkserverId,
        /// New state.
        state: ChunkserverState,
    },
    /// Queue shards for repair (reported missing or corrupt by a reader,
    /// or never written by a degraded write).
    QueueRepair {
        /// What to repair.
        items: Vec<RepairItem>,
    },
    /// Chunkservers confirmed these shards deleted: drop them from the GC
    /// queue.
    GcDone {
        /// Which chunkserver.
        chunkserver: ChunkserverId,
        /// Deleted shards.
        shards: Vec<ShardId>,
    },
    /// Create or replace an S3 access key.
    PutAccessKey {
        /// The key, with its secret and grants.
        key: AccessKey,
    },
    /// Delete an S3 access key (deleting a missing key succeeds).
    DeleteAccessKey {
        /// Its id.
        id: String,
    },
    /// Start a multipart upload.
    CreateUpload {
        /// The upload.
        upload: UploadInfo,
    },
    /// Record one uploaded part (its stripes are already durable),
    /// replacing any earlier part with the same number (whose shards are
    /// queued for garbage collection).
    PutPart {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Upload id.
        upload: StripeId,
        /// The part.
        part: UploadPart,
    },
    /// Complete a multipart upload: the object's manifest concatenates the
    /// listed parts' stripes (no data is rewritten); parts not listed are
    /// queued for garbage collection, as is the replaced object version.
    CompleteUpload {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Upload id.
        upload: StripeId,
        /// The parts, in the client's order, with the ETags it expects.
        parts: Vec<CompletePart>,
        /// Every part but the last must hold at least this many bytes.
        min_part_size: u64,
        /// The object's ETag (`md5-of-part-md5s-N`, computed by the
        /// gateway from the listed ETags, which `apply` checks).
        etag: String,
        /// The new version id.
        version: StripeId,
        /// Whole-object checksums to record.
        #[serde(default)]
        checksums: BTreeMap<String, String>,
        /// Proposer's clock, ms since the epoch.
        now_ms: u64,
        /// Condition on the current version.
        #[serde(default)]
        condition: PutCondition,
    },
    /// Abort a multipart upload: its parts' shards are queued for garbage
    /// collection.
    AbortUpload {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Upload id.
        upload: StripeId,
    },
    /// A chunkserver found these shards corrupt, truncated or missing
    /// (scrub or read): they count as lost until repaired.
    ReportBadShards {
        /// Which chunkserver.
        chunkserver: ChunkserverId,
        /// The shards.
        shards: Vec<ShardId>,
    },
    /// Forget bad-shard reports (repaired, seen healthy again, or no longer
    /// named by any manifest), and the repair-queue items about these
    /// copies.
    ClearBadShards {
        /// Which chunkserver.
        chunkserver: ChunkserverId,
        /// The shards.
        shards: Vec<ShardId>,
    },
    /// A rebuilt shard is durable on `to`: move the placement there, but
    /// only if the object's live manifest is still `version` and the shard
    /// at `index` of stripe `stripe` is still `shard` on `from`. Otherwise
    /// the state is unchanged except that `(to, shard)` is queued for
    /// garbage collection, and the result is `Err(Stale)`. On success the
    /// old copy `(from, shard)` is queued for garbage collection and any
    /// repair-queue entry and bad report for it are dropped.
    CommitRepair {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The object version the repair was planned against.
        version: StripeId,
        /// Stripe number within the object.
        stripe: u64,
        /// Shard index within the stripe.
        index: u8,
        /// The shard.
        shard: ShardId,
        /// Where the manifest placed it when the repair was planned.
        from: Option<ChunkserverId>,
        /// Where the rebuilt copy now lives.
        to: ChunkserverId,
        /// The target found the shard already stored and kept that copy
        /// (no new write). Such a copy is refused if `to` confirmed deleting
        /// this shard recently (a GC tombstone): it may be gone.
        #[serde(default)]
        reused: bool,
    },
    /// Queue shards on a chunkserver for deletion (orphans found by
    /// inventory reconciliation, rebuilt copies nobody needs). The proposer
    /// has checked that no manifest or upload names them.
    QueueGc {
        /// Which chunkserver.
        chunkserver: ChunkserverId,
        /// The shards.
        shards: Vec<ShardId>,
    },
    /// Forget a chunkserver. Refused (`Invalid`) while any manifest or
    /// upload still places a shard on it.
    RemoveChunkserver {
        /// Which.
        id: ChunkserverId,
    },
    /// Replace the tags of an object (S3 object tagging; empty tags delete
    /// them), only if the key's live version is still `version`: a tagging
    /// planned against a version that was overwritten or deleted since is
    /// refused with [`MetaError::Stale`] (or `NoSuchKey`), never applied to
    /// the newer write. Nothing but the tags changes.
    PutObjectTags {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The version the tags are for.
        version: StripeId,
        /// The new tag set (see [`validate_tags`]).
        tags: BTreeMap<String, String>,
    },
    /// Start or pause the rebalancer (`cairn admin rebalance`), which
    /// moves shards from the fullest chunkservers to under-full ones while
    /// their fullness (used / capacity) differs by more than
    /// `threshold_pct` percentage points. Kept in the replicated state, so
    /// a new leader carries on; absent, it runs with
    /// [`DEFAULT_REBALANCE_THRESHOLD_PCT`].
    SetRebalance {
        /// Whether shards may move.
        enabled: bool,
        /// The fullness spread tolerated, 1..=50 percentage points.
        threshold_pct: u8,
    },
    /// Set a bucket's CORS configuration (S3 PutBucketCors), replacing any
    /// it had. Refused with `NoSuchBucket` when the bucket does not exist,
    /// `Invalid` when the rules break [`validate_cors`].
    PutBucketCors {
        /// Bucket.
        bucket: String,
        /// The rules, in the order they are matched.
        rules: Vec<CorsRule>,
    },
    /// Drop a bucket's CORS configuration (none is not an error).
    DeleteBucketCors {
        /// Bucket.
        bucket: String,
    },
    /// Set a bucket's tags (S3 PutBucketTagging), replacing any it had;
    /// an empty set drops them. Refused as `PutBucketCors` is, and with
    /// `Invalid` when the tags break [`validate_bucket_tags`].
    PutBucketTagging {
        /// Bucket.
        bucket: String,
        /// The tags.
        tags: BTreeMap<String, String>,
    },
    /// Drop a bucket's tags (none is not an error).
    DeleteBucketTagging {
        /// Bucket.
        bucket: String,
    },
    /// Set a bucket's versioning state (S3 PutBucketVersioning): `Enabled`
    /// or `Suspended`; `Unversioned` is refused (S3 cannot turn versioning
    /// off). From then on writes answer [`CommandResult::Version`].
    PutBucketVersioning {
        /// Bucket.
        bucket: String,
        /// The new state.
        state: Versioning,
    },
    /// Remove one version of a key for good (S3 DeleteObject with
    /// `versionId`): a data version's shards are queued for GC, a delete
    /// marker just goes; if it was the newest and the next is a data
    /// version, that one becomes current. A version that does not exist is
    /// not an error. Answers [`CommandResult::Version`].
    DeleteObjectVersion {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The version.
        version: VersionRef,
        /// Delete despite a GOVERNANCE retention (the proposer checked the
        /// requester may; COMPLIANCE and legal holds are never bypassed).
        bypass_governance: bool,
    },
    /// Enable Object Lock on a bucket (versioning must be `Enabled`; it can
    /// then never be suspended) and set its default retention.
    PutObjectLockConfig {
        /// Bucket.
        bucket: String,
        /// The configuration.
        config: ObjectLockConfig,
    },
    /// Set (or with `None` remove) the retention of a version (the current
    /// one when `version` is `None`) in a bucket with Object Lock. A
    /// COMPLIANCE retention can only be lengthened; a GOVERNANCE one is
    /// shortened, removed or weakened only with `bypass_governance`.
    PutObjectRetention {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The version, or the current one.
        version: Option<VersionRef>,
        /// The new retention.
        retention: Option<Retention>,
        /// May shorten a GOVERNANCE retention.
        bypass_governance: bool,
    },
    /// Place or lift a legal hold on a version (the current one when
    /// `version` is `None`) in a bucket with Object Lock.
    PutObjectLegalHold {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The version, or the current one.
        version: Option<VersionRef>,
        /// On or off.
        on: bool,
    },
    // --- Issue 14 (security): access keys without their secrets. Keep
    // these together; new variants of other work go after them. ---
    /// Set one bucket grant of access key `id` (`cairn admin key allow`),
    /// keeping its secret and everything else, so an operator changes
    /// grants without ever reading a secret. Refused with
    /// `NoSuchAccessKey`, or `Invalid` for a bad bucket name.
    SetAccessKeyGrant {
        /// The key.
        id: String,
        /// The bucket.
        bucket: String,
        /// Its grant there (replacing any earlier one).
        grant: BucketGrant,
    },
    /// Rotate access key `id` (`cairn admin key rotate`): creates key
    /// `new_id` with `secret` (sealed by the proposing node), the old key's
    /// name, admin flag and grants, plus an owner grant on every bucket the
    /// old key owns; the old key expires at the entry's time +
    /// `overlap_ms` (or earlier, if it already expires sooner). Refused
    /// with `NoSuchAccessKey`, or `Invalid` when `new_id` exists or the
    /// secret is empty.
    RotateAccessKey {
        /// The key being replaced.
        id: String,
        /// The new key's id.
        new_id: String,
        /// The new key's secret (sealed in the log).
        secret: SecretString,
        /// How long the old key keeps working, ms from the entry's time.
        overlap_ms: u64,
    },
    /// Replace the plaintext secret of an access key written before
    /// secrets were sealed by its sealed form (the leader's key sealer).
    /// Applied only while the row still holds that plaintext (whose BLAKE3
    /// hash is `legacy_hash`, hex): a key changed meanwhile is left alone
    /// (`Stale`).
    SealAccessKey {
        /// The key.
        id: String,
        /// BLAKE3 of the plaintext secret it replaces, hex.
        legacy_hash: String,
        /// The sealed secret.
        sealed: SecretString,
    },
    /// `inner`, an admin's command, with a record of it in the audit log
    /// (who, what, when, its result), applied in the same entry. Wrapped
    /// by the metadata node that authorized the caller, never by a client
    /// (`Internal`: a caller cannot name someone else as `who`).
    Audited {
        /// The verified role token's name.
        who: String,
        /// The verified role.
        role: String,
        /// The command.
        #[serde(deserialize_with = "nested")]
        inner: Box<Command>,
    },
    /// Append a record to the audit log for an admin action that is not a
    /// command (membership changes, snapshots), after it was done.
    AuditRecord {
        /// The verified role token's name.
        who: String,
        /// The verified role.
        role: String,
        /// What was done.
        what: String,
        /// `ok`, or the error.
        result: String,
    },
}

/// The rebalancer's threshold when none was set.
pub const DEFAULT_REBALANCE_THRESHOLD_PCT: u8 = 10;

/// The outcome of applying a [`Command`]: the `R` of the Raft log.
/// Application-level refusals are values here, not Raft errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandResult {
    /// Done.
    Ok,
    /// A new chunkserver's id.
    Registered {
        /// The id.
        id: ChunkserverId,
    },
    /// One result per command of a [`Command::Batch`].
    Batch(Vec<CommandResult>),
    /// Refused: the state is unchanged.
    Err(MetaError),
    /// The version a write or delete made or removed, in a bucket with
    /// versioning configured (`PutObject`, `CompleteUpload`,
    /// `DeleteObject`, `DeleteObjectVersion`).
    Version(VersionStamp),
}

/// Who may propose a [`Command`] through the metadata API: the basis of
/// per-role authorization. A role is about the party on whose behalf the
/// command is proposed, not the process that calls `client_write` (the
/// leader proposes chunkserver reports it received on heartbeats, for
/// instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandRole {
    /// An S3 client through the gateway or the client library: buckets,
    /// objects, multipart uploads, write intents, repair reports of reads.
    User,
    /// A chunkserver: registration, stats, deletions done, bad shards found.
    Chunkserver,
    /// An operator (`cairn admin`): access keys, chunkserver drain and
    /// removal.
    Admin,
    /// Only the leader's own workers: group commit, time stamping, the
    /// intent reaper, the repair planner and orphan GC.
    Internal,
}

impl Command {
    /// Which role may propose this command. The `match` is exhaustive
    /// without a wildcard on purpose: a new variant does not compile until
    /// it is classified. `Once` takes the role of the command it wraps.
    pub fn role(&self) -> CommandRole {
        match self {
            Command::Once { inner, .. } => inner.role(),
            Command::Batch { .. } | Command::At { .. } => CommandRole::Internal,
            Command::RegisterIntent { .. } => CommandRole::User,
            // The wrapped command decides: an intent does not launder an
            // admin command into a user's.
            Command::WithIntent { inner, .. } => inner.role(),
            Command::ExpireIntents { .. } => CommandRole::Internal,
            Command::CreateBucket { .. }
            | Command::DeleteBucket { .. }
            | Command::PutObject { .. }
            | Command::DeleteObject { .. } => CommandRole::User,
            Command::RegisterChunkserver { .. } | Command::ChunkserverStats { .. } => {
                CommandRole::Chunkserver
            }
            Command::SetChunkserverState { .. } | Command::SetRebalance { .. } => {
                CommandRole::Admin
            }
            Command::QueueRepair { .. } => CommandRole::User,
            Command::GcDone { .. } => CommandRole::Chunkserver,
            Command::PutAccessKey { .. } | Command::DeleteAccessKey { .. } => CommandRole::Admin,
            Command::CreateUpload { .. }
            | Command::PutPart { .. }
            | Command::CompleteUpload { .. }
            | Command::AbortUpload { .. } => CommandRole::User,
            Command::ReportBadShards { .. } => CommandRole::Chunkserver,
            Command::ClearBadShards { .. }
            | Command::CommitRepair { .. }
            | Command::QueueGc { .. } => CommandRole::Internal,
            Command::RemoveChunkserver { .. } => CommandRole::Admin,
            Command::PutObjectTags { .. } => CommandRole::User,
            Command::PutBucketCors { .. }
            | Command::DeleteBucketCors { .. }
            | Command::PutBucketTagging { .. }
            | Command::DeleteBucketTagging { .. }
            | Command::PutBucketVersioning { .. }
            | Command::DeleteObjectVersion { .. }
            | Command::PutObjectLockConfig { .. }
            | Command::PutObjectRetention { .. }
            | Command::PutObjectLegalHold { .. } => CommandRole::User,
            Command::SetAccessKeyGrant { .. } | Command::RotateAccessKey { .. } => {
                CommandRole::Admin
            }
            Command::SealAccessKey { .. }
            | Command::Audited { .. }
            | Command::AuditRecord { .. } => CommandRole::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deeply_nested_commands_are_refused_not_a_stack_overflow() {
        // postcard: variant 1 (`Batch`), a one-element vector, again and
        // again: 2 bytes per level, 200,000 levels.
        let mut bytes = Vec::new();
        for _ in 0..200_000 {
            bytes.extend_from_slice(&[1, 1]);
        }
        let e = postcard::from_bytes::<Command>(&bytes);
        assert!(e.is_err());
        // JSON has its own limit; the nesting limit holds there too.
        let mut json = String::new();
        for _ in 0..20 {
            json.push_str(r#"{"batch":{"cmds":["#);
        }
        json.push_str(r#"{"delete_bucket":{"name":"b"}}"#);
        for _ in 0..20 {
            json.push_str("]}}");
        }
        assert!(serde_json::from_str::<Command>(&json).is_err());
        // Real nesting decodes, and the counter is back at zero after
        // both refusals.
        let real = Command::At {
            now_ms: 1,
            inner: Box::new(Command::Batch {
                cmds: vec![Command::Once {
                    id: StripeId([1; 16]),
                    inner: Box::new(Command::DeleteBucket { name: "b".into() }),
                }],
            }),
        };
        let b = postcard::to_allocvec(&real).unwrap();
        assert_eq!(postcard::from_bytes::<Command>(&b).unwrap(), real);
        NESTING.with(|n| assert_eq!(n.get(), 0));
    }

    #[test]
    fn commands_are_classified_by_role() {
        let del = Command::DeleteBucket { name: "b".into() };
        assert_eq!(del.role(), CommandRole::User);
        let once = |inner: Command| Command::Once {
            id: StripeId([1; 16]),
            inner: Box::new(inner),
        };
        assert_eq!(once(del.clone()).role(), CommandRole::User);
        let remove = Command::RemoveChunkserver { id: 1 };
        assert_eq!(remove.role(), CommandRole::Admin);
        assert_eq!(once(remove).role(), CommandRole::Admin);
        let key = Command::DeleteAccessKey { id: "GK1".into() };
        assert_eq!(key.role(), CommandRole::Admin);
        let gc_done = Command::GcDone {
            chunkserver: 1,
            shards: vec![],
        };
        assert_eq!(gc_done.role(), CommandRole::Chunkserver);
        let batch = Command::Batch { cmds: vec![del] };
        assert_eq!(batch.role(), CommandRole::Internal);
        assert_eq!(once(batch).role(), CommandRole::Internal);
        let reap = Command::ExpireIntents { limit: 1 };
        assert_eq!(reap.role(), CommandRole::Internal);
    }
}
