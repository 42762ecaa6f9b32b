//! The write path.
//!
//! 1. Read the input one stripe (`k * shard_size` bytes) at a time: memory
//!    holds at most `stripes_in_flight` stripes, whatever the object size.
//! 2. Encode each stripe into k + m shards and BLAKE3 each, on the blocking
//!    pool (never on the async reactor).
//! 3. Ask the metadata service where to put them, upload all shards in
//!    parallel over pooled connections; a failed upload is re-placed on
//!    another chunkserver. A chunkserver acknowledges a shard only once it is
//!    fsynced and its hash matched.
//! 4. When every stripe is durable (at least `write_quorum` shards each),
//!    commit the manifest through Raft: only then is the object visible.
//!    Stripes short of k + m are queued for repair at once.
//!
//! Before any shard is uploaded, its (chunkserver, shard id) is registered
//! under the write's intent (`Command::RegisterIntent`, one command per
//! stripe or re-placed shard), leased for `ClientConfig::intent_lease` (default [`INTENT_LEASE`]) and renewed every
//! quarter lease while the write runs (O(1) per renewal), so orphan GC never
//! collects the shards of a write in progress. The commit names the intent
//! (`Command::WithIntent`); an expired intent fails the write (retryable,
//! not acknowledged).
//!
//! On failure nothing is committed; shards already written are deleted on a
//! best-effort basis (orphan GC is the backstop).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use cairn_chunkserver::codec::{shard_len_for, Codec};
use cairn_chunkserver::ShardMeta;
use cairn_metadata::client::Consistency;
use cairn_metadata::types::*;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{expect_result, now_ms, Client, ClientError, Inner, Result, MAX_WRITE_SIZE};

/// What to store with an object besides its bytes.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Content-Type.
    pub content_type: Option<String>,
    /// Standard headers to keep (lowercase names).
    pub headers: BTreeMap<String, String>,
    /// User metadata.
    pub user_meta: BTreeMap<String, String>,
    /// Client checksums to record.
    pub checksums: BTreeMap<String, String>,
    /// Condition on the current version.
    pub condition: PutCondition,
    /// Object tags (checked by `apply` against `validate_tags`).
    pub tags: BTreeMap<String, String>,
    /// Compute the MD5 of the body for the ETag (what S3 clients expect).
    /// Without it the ETag is derived from the shards' BLAKE3 hashes, which
    /// costs nothing extra.
    pub md5: bool,
}

/// Default [`crate::ClientConfig::intent_lease`]: how long a write intent
/// lives without renewal. A write renews it every
/// quarter of this while it runs, so only a writer that stalls (or dies)
/// for this long loses it; long enough to ride out a leader election.
pub const INTENT_LEASE: std::time::Duration = std::time::Duration::from_secs(600);

/// A write's intent and its renewal task (stopped when dropped).
pub(crate) struct Intent {
    pub(crate) id: StripeId,
    renew: tokio::task::JoinHandle<()>,
}

impl Drop for Intent {
    fn drop(&mut self) {
        self.renew.abort();
    }
}

/// A stripe as encoded, before placement.
struct Encoded {
    len: u64,
    shards: Vec<Bytes>,
    hashes: Vec<Hash32>,
}

/// Progress callback: called with the number of input bytes consumed.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// A stripe's share of `ClientConfig::stripe_budget` (and of the caller's
/// [`crate::STRIPE_SHARE`]), held by everything that still references its
/// bytes.
type Permit = Arc<StripePermit>;

/// The permits one stripe holds; released together when dropped.
pub(crate) struct StripePermit {
    _share: Option<tokio::sync::OwnedSemaphorePermit>,
    _global: tokio::sync::OwnedSemaphorePermit,
}

/// Bytes of a stripe read before it asks for a stripe permit: a body that
/// sends nothing (or only a little) holds no permit, and what it can pin
/// outside the budget is this much per request.
pub const STRIPE_HEAD: usize = 64 << 10;

/// Checksums computed while the body was read, asked for before commit.
pub(crate) type LateChecksums = Box<dyn FnOnce() -> BTreeMap<String, String> + Send>;

impl Client {
    /// Stores the bytes of `reader` as `bucket/key`, returning the committed
    /// manifest.
    pub async fn put<R: AsyncRead + Unpin + Send>(
        &self,
        bucket: &str,
        key: &str,
        reader: R,
        opts: PutOptions,
    ) -> Result<ObjectManifest> {
        self.put_with_progress(bucket, key, reader, opts, None)
            .await
    }

    /// [`Client::put`] with a progress callback.
    pub async fn put_with_progress<R: AsyncRead + Unpin + Send>(
        &self,
        bucket: &str,
        key: &str,
        mut reader: R,
        opts: PutOptions,
        progress: Option<Progress>,
    ) -> Result<ObjectManifest> {
        self.put_impl(bucket, key, &mut reader, opts, progress, None)
            .await
            .map(|(m, _)| m)
    }

    /// [`Client::put`] for a body whose checksums are only known once it
    /// has been read to the end (e.g. verified while streaming): `checksums`
    /// is called after the last stripe is durable and before the commit,
    /// and its result replaces `opts.checksums`.
    pub async fn put_verified<R, F>(
        &self,
        bucket: &str,
        key: &str,
        reader: R,
        opts: PutOptions,
        checksums: F,
    ) -> Result<ObjectManifest>
    where
        R: AsyncRead + Unpin + Send,
        F: FnOnce() -> BTreeMap<String, String> + Send + 'static,
    {
        self.put_impl(bucket, key, reader, opts, None, Some(Box::new(checksums)))
            .await
            .map(|(m, _)| m)
    }

    /// [`Client::put_verified`] that also returns the version the write
    /// made when the bucket has versioning configured.
    pub async fn put_verified_versioned<R, F>(
        &self,
        bucket: &str,
        key: &str,
        reader: R,
        opts: PutOptions,
        checksums: F,
    ) -> Result<(ObjectManifest, Option<VersionStamp>)>
    where
        R: AsyncRead + Unpin + Send,
        F: FnOnce() -> BTreeMap<String, String> + Send + 'static,
    {
        self.put_impl(bucket, key, reader, opts, None, Some(Box::new(checksums)))
            .await
    }

    pub(crate) async fn put_impl<R: AsyncRead + Unpin + Send>(
        &self,
        bucket: &str,
        key: &str,
        reader: R,
        opts: PutOptions,
        progress: Option<Progress>,
        late_checksums: Option<LateChecksums>,
    ) -> Result<(ObjectManifest, Option<VersionStamp>)> {
        validate_key(key).map_err(|e| ClientError::Invalid(e.0))?;
        let mut reader = reader;
        let b = self.bucket_for_write(bucket).await?;
        // Small objects live in the manifest: read up to one byte past the
        // threshold; only a body that ends within it is stored inline.
        let inline_max = self.inner.cfg.inline_max.min(MAX_INLINE);
        let head = if inline_max > 0 {
            read_up_to(&mut reader, inline_max + 1).await?
        } else {
            Bytes::new()
        };
        let (stripes, size, etag, inline, w) = if inline_max > 0 && head.len() <= inline_max {
            if let Some(p) = &progress {
                p(head.len() as u64);
            }
            let etag = if opts.md5 {
                use md5::Digest;
                hex::encode(md5::Md5::digest(&head))
            } else {
                hex::encode(&blake3::hash(&head).as_bytes()[..16])
            };
            let size = head.len() as u64;
            (Vec::new(), size, etag, Some(InlineData::new(head)), None)
        } else {
            let body = std::io::Cursor::new(head).chain(reader);
            let w = self.write_stripes(&b, body, opts.md5, progress).await?;
            let stripes = w.stripes.clone();
            (stripes, w.size, w.etag.clone(), None, Some(w))
        };
        let checksums = match late_checksums {
            Some(f) => f(),
            None => opts.checksums,
        };
        let manifest = ObjectManifest {
            version: StripeId::random(),
            size,
            etag,
            content_type: opts.content_type,
            headers: opts.headers,
            user_meta: opts.user_meta,
            checksums,
            created_ms: now_ms(),
            ec: b.ec,
            shard_size: b.shard_size,
            stripes,
            parts: Vec::new(),
            inline,
            tags: opts.tags.clone(),
        };
        let put = Command::PutObject {
            bucket: bucket.to_string(),
            key: key.to_string(),
            manifest: manifest.clone(),
            condition: opts.condition,
        };
        let cmd = match &w {
            Some(w) => w.commit(put),
            None => put,
        };
        let stamp = match self.inner.write_versioned(cmd).await {
            Ok(s) => s,
            Err(e) => {
                // Refused (precondition, bucket deleted) or unknown outcome
                // (cluster unavailable): only a definite refusal may free
                // the shards, or a committed object could lose its data.
                if let (false, Some(w)) = (matches!(e, ClientError::Unavailable(_)), &w) {
                    self.inner.discard(&w.written).await;
                }
                return Err(e);
            }
        };
        self.inner.queue_degraded(bucket, key, &manifest).await;
        Ok((manifest, stamp))
    }

    /// Reads `reader` to the end as durable stripes of bucket `b` without
    /// committing anything. On error the shards written are deleted
    /// (best-effort); on success the caller commits them or calls
    /// [`Written::discard`].
    pub(crate) async fn write_stripes<R: AsyncRead + Unpin + Send>(
        &self,
        b: &BucketInfo,
        mut reader: R,
        md5: bool,
        progress: Option<Progress>,
    ) -> Result<Written> {
        let bucket = b.name.as_str();
        let codec = Arc::new(Codec::new(b.ec).map_err(|e| ClientError::Invalid(e.to_string()))?);
        let stripe_cap = usize::from(b.ec.k) * b.shard_size as usize;
        let written: Arc<Mutex<Vec<(ChunkserverId, ShardId)>>> = Arc::default();
        let intent = self.inner.start_intent().await?;
        let intent_id = intent.id;
        let mut md5 = md5.then(Md5Task::start);
        let result: Result<(Vec<StripeManifest>, u64)> = async {
            let mut pending = FuturesOrdered::new();
            let mut stripes = Vec::new();
            let mut total = 0u64;
            let share = crate::STRIPE_SHARE.try_with(|s| s.get()).ok().flatten();
            loop {
                // The first bytes of the stripe come before any permit, so
                // a stalled body holds none (bounded: STRIPE_HEAD).
                let mut buf = BytesMut::with_capacity(stripe_cap);
                read_into(&mut reader, &mut buf, STRIPE_HEAD.min(stripe_cap)).await?;
                if buf.is_empty() {
                    break;
                }
                // A process-wide budget (the gateway's) bounds the stripes
                // in memory over all requests, and the caller's share (one
                // access key's) bounds what one of them may hold. Pending
                // stripes keep being driven while waiting, so their
                // permits always come back.
                let permit = match &self.inner.cfg.stripe_budget {
                    None => None,
                    Some(sem) => {
                        let closed =
                            |_| ClientError::Io(std::io::Error::other("stripe budget closed"));
                        let mine = match &share {
                            None => None,
                            Some(share) => loop {
                                tokio::select! {
                                    p = share.clone().acquire_owned() => break Some(p.map_err(closed)?),
                                    Some(s) = pending.next(), if !pending.is_empty() => stripes.push(s?),
                                }
                            },
                        };
                        loop {
                            tokio::select! {
                                p = sem.clone().acquire_owned() => {
                                    break Some(Arc::new(StripePermit {
                                        _share: mine,
                                        _global: p.map_err(closed)?,
                                    }));
                                }
                                Some(s) = pending.next(), if !pending.is_empty() => stripes.push(s?),
                            }
                        }
                    }
                };
                read_into(&mut reader, &mut buf, stripe_cap).await?;
                let buf = buf.freeze();
                total += buf.len() as u64;
                // One commit carries every stripe of what it writes: the
                // S3 limit (5 GiB) keeps that entry about 1 MB. Larger
                // objects are multipart uploads (`cairn cp` does that).
                if total > MAX_WRITE_SIZE {
                    return Err(ClientError::EntityTooLarge(format!(
                        "more than {MAX_WRITE_SIZE} bytes in one PUT or part; upload larger objects in parts"
                    )));
                }
                if let Some(p) = &progress {
                    p(buf.len() as u64);
                }
                if let Some(m) = &mut md5 {
                    // The hasher holds the stripe too: it shares the permit.
                    m.feed(buf.clone(), permit.clone()).await;
                }
                while pending.len() >= self.inner.cfg.stripes_in_flight.max(1) {
                    if let Some(s) = pending.next().await {
                        stripes.push(s?);
                    }
                }
                let inner = self.inner.clone();
                let codec = codec.clone();
                let bucket = bucket.to_string();
                let written = written.clone();
                pending.push_back(async move {
                    let r = inner
                        .write_stripe(&bucket, codec, buf, &written, intent_id)
                        .await;
                    drop(permit);
                    r
                });
            }
            while let Some(s) = pending.next().await {
                stripes.push(s?);
            }
            Ok((stripes, total))
        }
        .await;
        let (stripes, size) = match result {
            Ok(v) => v,
            Err(e) => {
                self.inner.discard(&written).await;
                return Err(e);
            }
        };
        let etag = match md5 {
            Some(m) => match m.finish().await {
                Ok(e) => e,
                Err(e) => {
                    self.inner.discard(&written).await;
                    return Err(e);
                }
            },
            None => blake3_etag(&stripes),
        };
        Ok(Written {
            stripes,
            size,
            etag,
            written,
            intent,
        })
    }
}

/// Stripes made durable but not yet committed.
pub(crate) struct Written {
    pub(crate) stripes: Vec<StripeManifest>,
    pub(crate) size: u64,
    pub(crate) etag: String,
    pub(crate) written: Arc<Mutex<Vec<(ChunkserverId, ShardId)>>>,
    /// The intent naming these shards (renewed until this is dropped).
    pub(crate) intent: Intent,
}

impl Written {
    /// `cmd` (the PutObject or PutPart naming these stripes), committed
    /// under this write's intent.
    pub(crate) fn commit(&self, cmd: Command) -> Command {
        Command::WithIntent {
            intent: self.intent.id,
            inner: Box::new(cmd),
        }
    }
}

/// Reads until `cap` bytes or EOF.
/// Reads up to `cap` bytes (fewer only at the end of the reader).
async fn read_up_to<R: AsyncRead + Unpin>(r: &mut R, cap: usize) -> Result<Bytes> {
    let mut buf = BytesMut::with_capacity(cap);
    read_into(r, &mut buf, cap).await?;
    Ok(buf.freeze())
}

/// Reads into `buf` until it holds `cap` bytes or the reader ends.
async fn read_into<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut, cap: usize) -> Result<()> {
    while buf.len() < cap {
        let n = (&mut *r)
            .take((cap - buf.len()) as u64)
            .read_buf(buf)
            .await?;
        if n == 0 {
            break;
        }
    }
    Ok(())
}

/// The ETag of an object written without MD5: 16 bytes of BLAKE3 over the
/// shard hashes, hex (same shape as an MD5 ETag).
fn blake3_etag(stripes: &[StripeManifest]) -> String {
    let mut h = blake3::Hasher::new();
    for s in stripes {
        for l in &s.shards {
            h.update(&l.blake3.0);
        }
    }
    hex::encode(&h.finalize().as_bytes()[..16])
}

/// MD5 of the body on its own blocking thread, fed stripe by stripe, so the
/// hash (slower than encoding) overlaps with everything else.
struct Md5Task {
    tx: tokio::sync::mpsc::Sender<(Bytes, Option<Permit>)>,
    handle: tokio::task::JoinHandle<String>,
}

impl Md5Task {
    fn start() -> Md5Task {
        use md5::Digest;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Bytes, Option<Permit>)>(4);
        let handle = tokio::task::spawn_blocking(move || {
            let mut h = md5::Md5::new();
            while let Some((b, _permit)) = rx.blocking_recv() {
                h.update(&b);
            }
            hex::encode(h.finalize())
        });
        Md5Task { tx, handle }
    }

    async fn feed(&mut self, b: Bytes, permit: Option<Permit>) {
        // Only fails if the hashing thread died; finish() reports that.
        let _ = self.tx.send((b, permit)).await;
    }

    async fn finish(self) -> Result<String> {
        drop(self.tx);
        self.handle
            .await
            .map_err(|e| ClientError::Io(std::io::Error::other(format!("md5 task: {e}"))))
    }
}

impl Inner {
    /// Registers a new write intent and starts renewing it.
    pub(crate) async fn start_intent(self: &Arc<Self>) -> Result<Intent> {
        let id = StripeId::random();
        self.register(id, Vec::new()).await?;
        let this = Arc::downgrade(self);
        let renew = tokio::spawn(async move {
            loop {
                let every = match this.upgrade() {
                    Some(inner) => inner.cfg.intent_lease / 4,
                    None => return,
                };
                tokio::time::sleep(every).await;
                let Some(inner) = this.upgrade() else { return };
                if let Err(e) = inner.register(id, Vec::new()).await {
                    tracing::warn!(intent = %id.to_hex(), error = %e, "write intent not renewed");
                }
            }
        });
        Ok(Intent { id, renew })
    }

    /// Names `shards` under write intent `id` (and renews its lease).
    async fn register(&self, id: StripeId, shards: Vec<(ChunkserverId, ShardId)>) -> Result<()> {
        self.write(Command::RegisterIntent {
            intent: id,
            shards,
            lease_ms: self.cfg.intent_lease.as_millis().max(1) as u64,
        })
        .await
    }

    fn write_quorum(&self, ec: EcParams) -> usize {
        let n = ec.total();
        self.cfg
            .write_quorum
            .unwrap_or(usize::from(ec.k) + 1)
            .clamp(usize::from(ec.k), n)
    }

    async fn allocate(
        &self,
        bucket: &str,
        exclude: Vec<ChunkserverId>,
        placed: Vec<ChunkserverId>,
        count: usize,
        min: usize,
    ) -> Result<Vec<ChunkserverInfo>> {
        let r = self
            .meta
            .query(
                &Query::Allocate {
                    bucket: bucket.to_string(),
                    exclude,
                    count: Some(count),
                    min: Some(min),
                    placed,
                },
                Consistency::Stale,
            )
            .await?;
        expect_result!(r, QueryResult::Placement(p) => p)
    }

    /// Encodes, places and uploads one stripe.
    async fn write_stripe(
        self: Arc<Self>,
        bucket: &str,
        codec: Arc<Codec>,
        data: Bytes,
        written: &Mutex<Vec<(ChunkserverId, ShardId)>>,
        intent: StripeId,
    ) -> Result<StripeManifest> {
        let ec = codec.params();
        let n = ec.total();
        let quorum = self.write_quorum(ec);
        let enc = tokio::task::spawn_blocking(move || -> Result<Encoded> {
            let shard_len = shard_len_for(data.len(), ec.k);
            let shards = codec
                .encode(&data, shard_len)
                .map_err(|e| ClientError::Invalid(e.to_string()))?;
            let hashes = shards
                .iter()
                .map(|s| Hash32::from(blake3::hash(s)))
                .collect();
            Ok(Encoded {
                len: data.len() as u64,
                shards,
                hashes,
            })
        })
        .await
        .map_err(|e| ClientError::Io(std::io::Error::other(format!("encode task: {e}"))))??;
        let stripe_id = StripeId::random();
        let placement = self
            .allocate(bucket, Vec::new(), Vec::new(), n, quorum)
            .await?;
        let used: Arc<Mutex<HashSet<ChunkserverId>>> =
            Arc::new(Mutex::new(placement.iter().map(|c| c.id).collect()));
        let ids: Vec<ShardId> = (0..n).map(|_| ShardId::random()).collect();
        // Named before any upload: orphan GC leaves them alone from now on.
        self.register(
            intent,
            placement
                .iter()
                .zip(&ids)
                .map(|(c, s)| (c.id, *s))
                .collect(),
        )
        .await?;
        let assigned: Arc<tokio::sync::Mutex<HashMap<u8, ChunkserverId>>> =
            Arc::new(tokio::sync::Mutex::new(
                placement
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (i as u8, c.id))
                    .collect(),
            ));
        let uploads = (0..n).map(|i| {
            let target = placement.get(i).cloned();
            let payload = enc.shards[i].clone();
            let meta = ShardMeta {
                id: ids[i],
                stripe: stripe_id,
                index: i as u8,
                params: ec,
                len: payload.len() as u64,
                blake3: enc.hashes[i].into(),
            };
            let used = used.clone();
            let assigned = assigned.clone();
            let this = self.clone();
            async move {
                let placed = this
                    .upload_with_replacement(
                        bucket, target, &meta, payload, &used, &assigned, intent,
                    )
                    .await;
                (meta, placed)
            }
        });
        let results = futures::future::join_all(uploads).await;
        let mut shards = Vec::with_capacity(n);
        let mut durable = 0usize;
        for (meta, placed) in results {
            if let Some(cs) = placed {
                durable += 1;
                if let Ok(mut w) = written.lock() {
                    w.push((cs, meta.id));
                }
            }
            shards.push(ShardLoc {
                chunkserver: placed,
                shard: meta.id,
                blake3: Hash32::from(meta.blake3),
            });
        }
        if durable < quorum {
            return Err(ClientError::WriteQuorum(format!(
                "only {durable} of {n} shards of a stripe became durable; {quorum} required"
            )));
        }
        Ok(StripeManifest {
            id: stripe_id,
            len: enc.len,
            shards,
        })
    }

    /// Uploads one shard to `target`, or on failure to other chunkservers
    /// the metadata service picks; returns where it landed. `used` holds
    /// every chunkserver tried for the stripe (never tried again);
    /// `assigned` the chunkserver each other shard index holds or is being
    /// written to. A re-placement holds `assigned` while it asks, so two
    /// shards of a stripe re-placed at once cannot both take a zone's last
    /// slot under the zone cap (`model::apply` would refuse the manifest).
    #[allow(clippy::too_many_arguments)]
    async fn upload_with_replacement(
        &self,
        bucket: &str,
        mut target: Option<ChunkserverInfo>,
        meta: &ShardMeta,
        payload: Bytes,
        used: &Mutex<HashSet<ChunkserverId>>,
        assigned: &tokio::sync::Mutex<HashMap<u8, ChunkserverId>>,
        intent: StripeId,
    ) -> Option<ChunkserverId> {
        for attempt in 0..=self.cfg.shard_retries {
            if target.is_none() {
                let mut held = assigned.lock().await;
                held.remove(&meta.index);
                let exclude: Vec<ChunkserverId> = used
                    .lock()
                    .map(|u| u.iter().copied().collect())
                    .unwrap_or_default();
                let placed: Vec<ChunkserverId> = held.values().copied().collect();
                target = match self.allocate(bucket, exclude, placed, 1, 1).await {
                    Ok(mut v) if !v.is_empty() => {
                        let c = v.swap_remove(0);
                        if let Ok(mut u) = used.lock() {
                            if !u.insert(c.id) {
                                // Raced with another shard of this stripe.
                                continue;
                            }
                        }
                        // The re-placed copy is named before its upload too.
                        if let Err(e) = self.register(intent, vec![(c.id, meta.id)]).await {
                            tracing::warn!(error = %e, "cannot register a re-placed shard");
                            return None;
                        }
                        held.insert(meta.index, c.id);
                        Some(c)
                    }
                    _ => return None,
                };
            }
            let Some(cs) = target.take() else { continue };
            let put = self.shards.put(&cs.addr, meta, payload.clone());
            match tokio::time::timeout(self.cfg.shard_timeout, put).await {
                Ok(Ok(_)) => return Some(cs.id),
                Ok(Err(e)) => {
                    tracing::warn!(chunkserver = cs.id, attempt, error = %e, "shard upload failed; re-placing");
                }
                Err(_) => {
                    tracing::warn!(
                        chunkserver = cs.id,
                        attempt,
                        "shard upload timed out; re-placing"
                    );
                }
            }
        }
        assigned.lock().await.remove(&meta.index);
        None
    }

    /// Best-effort deletion of shards of a write that will not commit.
    pub(crate) async fn discard(&self, written: &Mutex<Vec<(ChunkserverId, ShardId)>>) {
        let list: Vec<_> = written
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        let dels = list.into_iter().map(|(cs, id)| async move {
            if let Ok(addr) = self.chunkserver_addr(cs).await {
                let _ = self.shards.delete(&addr, id).await;
            }
        });
        futures::future::join_all(dels).await;
    }

    /// Queues the stripes written short of k + m for repair.
    pub(crate) async fn queue_degraded(&self, bucket: &str, key: &str, m: &ObjectManifest) {
        let mut items = Vec::new();
        for (si, s) in m.stripes.iter().enumerate() {
            for (i, l) in s.shards.iter().enumerate() {
                if l.chunkserver.is_none() {
                    items.push(RepairItem {
                        bucket: bucket.to_string(),
                        key: key.to_string(),
                        version: m.version,
                        stripe: si as u64,
                        index: i as u8,
                        chunkserver: None,
                        reason: "written degraded".into(),
                    });
                }
            }
        }
        if !items.is_empty() {
            tracing::warn!(
                bucket,
                key,
                shards = items.len(),
                "degraded write: queueing repair"
            );
            if let Err(e) = self.write(Command::QueueRepair { items }).await {
                tracing::warn!(error = %e, "could not queue repair");
            }
        }
    }
}
