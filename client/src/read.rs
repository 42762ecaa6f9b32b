//! The read path.
//!
//! 1. Fetch the manifest (linearizable: a read sees every acknowledged
//!    write).
//! 2. Map the requested range to the stripes, and within each stripe to the
//!    data shards, it touches; nothing else is read.
//! 3. Fetch those data shards in parallel; every shard is checked against
//!    the BLAKE3 recorded in the manifest before any byte is used. On the
//!    happy path there is no decoding: the output is slices of the shards.
//! 4. A missing, slow (timeout) or corrupt shard is reported for repair and
//!    replaced by further shards (data, then parity) until k are verified;
//!    then the stripe is decoded on the blocking pool.
//! 5. Stripes are produced in order as a stream with a bounded read-ahead,
//!    so memory stays at a few stripes whatever the object size.

use std::collections::BTreeSet;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use cairn_chunkserver::codec::{shard_len_for, Codec, Layout, StripeSpan};
use cairn_metadata::client::Consistency;
use cairn_metadata::types::*;
use futures::stream::{self, Stream, StreamExt};

use crate::{Client, ClientError, Inner, Result};

/// The bytes of an object (or range), in order.
pub type GetStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// Why one shard could not be used.
///
/// Only `Missing` and `Corrupt` are verdicts, reported to the metadata
/// service as lost: the chunkserver said it has no such shard, or the bytes
/// failed verification. `Unreachable` (cannot connect, timed out, busy, an
/// I/O or protocol error) says nothing about the shard: the server may be
/// paused or overloaded and come back with it intact, so it is not reported
/// (a server that stays silent turns Down and the planner counts its shards
/// lost then).
#[derive(Debug)]
enum ShardFail {
    Missing(String),
    Corrupt(String),
    Unreachable(String),
}

impl Client {
    /// Reads `bucket/key`, whole or the byte `range` (end exclusive, within
    /// the object), as a stream of verified bytes.
    pub async fn get(
        &self,
        bucket: &str,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectManifest, GetStream)> {
        let m = self.inner.manifest(bucket, key).await?;
        let s = self.open_manifest(bucket, key, &m, range).await?;
        Ok((m, s))
    }

    /// [`Client::stream_manifest`], returning only once the first stripe
    /// the range needs was read and verified (or decoded): an object whose
    /// first stripe is unreadable fails here, with
    /// [`ClientError::NotEnoughShards`], before a caller has told anyone
    /// it has the object (an S3 `200`, a created output file). The read-
    /// ahead is already running, so on the happy path this costs no extra
    /// round trip: it only waits for what the first bytes needed anyway.
    /// A later stripe that turns out unreadable still ends the stream with
    /// an error, mid-body.
    pub async fn open_manifest(
        &self,
        bucket: &str,
        key: &str,
        m: &ObjectManifest,
        range: Option<Range<u64>>,
    ) -> Result<GetStream> {
        let s = self.stream_manifest(bucket, key, m, range)?;
        first_ready(s).await
    }

    /// Streams the bytes `range` of an already fetched manifest.
    pub fn stream_manifest(
        &self,
        bucket: &str,
        key: &str,
        m: &ObjectManifest,
        range: Option<Range<u64>>,
    ) -> Result<GetStream> {
        let range = range.unwrap_or(0..m.size);
        if range.start > range.end || range.end > m.size {
            return Err(ClientError::InvalidRange(format!(
                "{}..{} of an object of {} bytes",
                range.start, range.end, m.size
            )));
        }
        if let Some(inline) = &m.inline {
            // Verified like a shard: a manifest whose bytes do not match
            // their hash is never returned (there is no parity to fall back
            // on; the other metadata replicas hold the good copy).
            if !inline.verify() || inline.data.len() as u64 != m.size {
                return Err(ClientError::Meta(format!(
                    "inline data of {bucket}/{key} does not match its BLAKE3"
                )));
            }
            let start = usize::try_from(range.start).unwrap_or(usize::MAX);
            let end = usize::try_from(range.end).unwrap_or(usize::MAX);
            let bytes = inline
                .data
                .get(start..end)
                .map(|_| inline.data.slice(start..end));
            let out: Vec<Result<Bytes>> = match bytes {
                Some(b) if !b.is_empty() => vec![Ok(b)],
                Some(_) => Vec::new(),
                None => vec![Err(ClientError::InvalidRange(format!(
                    "{start}..{end} of inline data"
                )))],
            };
            return Ok(Box::pin(stream::iter(out)));
        }
        let total = stripe_count(m)?;
        let k = m.ec.k;
        let paged = (m.stripes.len() as u64) < total;
        // The spans the range touches, lazily: a 5 TiB object has more than
        // a million stripes, and none of them is held longer than its read.
        let spans: SpanIter = if m.parts.is_empty() {
            let layout = Layout::new(m.size, k, m.shard_size as usize)
                .map_err(|e| ClientError::Invalid(e.to_string()))?;
            Box::new(
                layout
                    .spans(range)
                    .map_err(|e| ClientError::InvalidRange(e.to_string()))?
                    .map(Ok),
            )
        } else if paged {
            part_spans(m, range)?
        } else {
            Box::new(walk_spans(m, range)?.into_iter().map(Ok))
        };
        let codec = Arc::new(Codec::new(m.ec).map_err(|e| ClientError::Invalid(e.to_string()))?);
        let mut first = m.clone();
        let rows = Arc::new(std::mem::take(&mut first.stripes));
        let m = Arc::new(first);
        let ctx = Arc::new((bucket.to_string(), key.to_string()));
        let inner = self.inner.clone();
        let pager = Pager {
            inner: inner.clone(),
            ctx: ctx.clone(),
            version: m.version,
            paged,
            rows,
            rows_from: 0,
            spans,
            done: false,
        };
        let ahead = self.inner.cfg.stripes_in_flight.max(1);
        let s = stream::unfold(pager, |mut p| async move {
            let item = p.next().await?;
            Some((item, p))
        })
        .map(move |item: Result<(StripeSpan, StripeManifest)>| {
            let inner = inner.clone();
            let m = m.clone();
            let codec = codec.clone();
            let ctx = ctx.clone();
            async move {
                let (span, stripe) = item?;
                inner
                    .read_span(&ctx.0, &ctx.1, &m, &stripe, &codec, span)
                    .await
            }
        })
        .buffered(ahead)
        .flat_map(|r: Result<Vec<Bytes>>| match r {
            Ok(v) => stream::iter(v.into_iter().map(Ok).collect::<Vec<_>>()),
            Err(e) => stream::iter(vec![Err(e)]),
        });
        Ok(Box::pin(s))
    }

    /// Up to `limit` (at most [`STRIPE_PAGE_MAX`]) stripe rows of version
    /// `version` of `bucket/key`, from stripe `from` (linearizable). Fails
    /// with a stale-version error once that version is no longer stored.
    pub async fn stripes(
        &self,
        bucket: &str,
        key: &str,
        version: StripeId,
        from: u64,
        limit: u32,
    ) -> Result<Vec<StripeManifest>> {
        self.inner
            .stripe_page(bucket, key, version, from, limit)
            .await
    }
}

/// Number of stripes of the object `m` describes (all of them, whatever
/// number its `stripes` holds): from its layout for a single PUT, the sum
/// of its parts' for a multipart object, zero for inline data.
pub fn stripe_count(m: &ObjectManifest) -> Result<u64> {
    if m.inline.is_some() {
        return Ok(0);
    }
    if m.parts.is_empty() {
        let layout = Layout::new(m.size, m.ec.k, m.shard_size as usize)
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        Ok(layout.stripe_count())
    } else {
        Ok(m.parts.iter().map(|p| u64::from(p.stripes)).sum())
    }
}

type SpanIter = Box<dyn Iterator<Item = Result<StripeSpan>> + Send>;

/// Pairs each span of a read with its stripe row: from the manifest's
/// rows, then (an object of more than [`STRIPE_PAGE_MAX`] stripes) from
/// pages of [`STRIPE_PAGE_MAX`] rows fetched as the read reaches them, so
/// a read holds one page of rows, never the whole object's.
struct Pager {
    inner: Arc<Inner>,
    ctx: Arc<(String, String)>,
    version: StripeId,
    paged: bool,
    /// Rows of stripes `rows_from..rows_from + rows.len()`.
    rows: Arc<Vec<StripeManifest>>,
    rows_from: u64,
    spans: SpanIter,
    done: bool,
}

impl Pager {
    async fn next(&mut self) -> Option<Result<(StripeSpan, StripeManifest)>> {
        if self.done {
            return None;
        }
        let r = self.step().await;
        match r {
            Some(Err(_)) | None => self.done = true,
            Some(Ok(_)) => {}
        }
        r
    }

    async fn step(&mut self) -> Option<Result<(StripeSpan, StripeManifest)>> {
        let span = match self.spans.next()? {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        let in_rows = |p: &Pager| {
            span.stripe >= p.rows_from && span.stripe - p.rows_from < p.rows.len() as u64
        };
        if !in_rows(self) && self.paged {
            let page = self
                .inner
                .stripe_page(
                    &self.ctx.0,
                    &self.ctx.1,
                    self.version,
                    span.stripe,
                    STRIPE_PAGE_MAX,
                )
                .await;
            match page {
                Ok(rows) => {
                    self.rows = Arc::new(rows);
                    self.rows_from = span.stripe;
                }
                Err(e) => return Some(Err(e)),
            }
        }
        if !in_rows(self) {
            return Some(Err(ClientError::Meta(format!(
                "manifest lacks stripe {}",
                span.stripe
            ))));
        }
        // In range: checked just above.
        let stripe = self.rows[(span.stripe - self.rows_from) as usize].clone();
        if stripe.len != span.stripe_len as u64 {
            return Some(Err(ClientError::Meta(format!(
                "stripe {} holds {} bytes, its layout says {}",
                span.stripe, stripe.len, span.stripe_len
            ))));
        }
        Some(Ok((span, stripe)))
    }
}

/// The spans of `range` of a multipart object, lazily, part by part: each
/// part is cut like a single PUT of its size (its last stripe short), and
/// its stripes follow the previous parts'. Used when the manifest holds
/// only the first page of stripes, so their lengths cannot be walked.
fn part_spans(m: &ObjectManifest, range: Range<u64>) -> Result<SpanIter> {
    let k = m.ec.k;
    let shard_size = m.shard_size as usize;
    let mut parts = Vec::with_capacity(m.parts.len());
    let (mut offset, mut first) = (0u64, 0u64);
    for p in &m.parts {
        let layout =
            Layout::new(p.size, k, shard_size).map_err(|e| ClientError::Invalid(e.to_string()))?;
        if layout.stripe_count() != u64::from(p.stripes) {
            return Err(ClientError::Meta(format!(
                "part {} of {} bytes records {} stripes, its layout has {}",
                p.number,
                p.size,
                p.stripes,
                layout.stripe_count()
            )));
        }
        parts.push((offset, first, layout));
        offset += p.size;
        first += u64::from(p.stripes);
    }
    if range.start > range.end || range.end > offset {
        return Err(ClientError::InvalidRange(format!(
            "{}..{} of parts holding {offset} bytes",
            range.start, range.end
        )));
    }
    let start = range.start;
    let it = parts
        .into_iter()
        .filter(move |(off, _, l)| *off < range.end && off + l.object_len() > range.start)
        .flat_map(move |(off, first, l)| {
            let a = range.start.max(off) - off;
            let b = range.end.min(off + l.object_len()) - off;
            let spans = l
                .spans(a..b)
                .map_err(|e| ClientError::InvalidRange(e.to_string()));
            let out: SpanIter = match spans {
                Ok(spans) => Box::new(spans.map(move |s| {
                    Ok(StripeSpan::new(
                        first + s.stripe,
                        off + s.stripe_offset,
                        s.stripe_len,
                        k,
                        s.in_stripe,
                        start,
                    ))
                })),
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
            out
        });
    Ok(Box::new(it))
}

/// Waits for the first item of `s`: an error is returned as is, a first
/// chunk is put back in front of the rest.
async fn first_ready(mut s: GetStream) -> Result<GetStream> {
    match s.next().await {
        None => Ok(Box::pin(stream::empty())),
        Some(Err(e)) => Err(e),
        Some(Ok(first)) => Ok(Box::pin(stream::once(async move { Ok(first) }).chain(s))),
    }
}

/// The spans of `range` over stripes of varying length (a multipart
/// object: each part ends with its own short stripe), by walking the
/// stripes' recorded lengths. Each stripe's shard length is
/// `ceil(len / k)`, exactly as the writer cut it.
fn walk_spans(m: &ObjectManifest, range: Range<u64>) -> Result<Vec<StripeSpan>> {
    let k = m.ec.k.max(1);
    let mut out = Vec::new();
    let mut offset = 0u64;
    for (i, s) in m.stripes.iter().enumerate() {
        let stripe_end = offset + s.len;
        if stripe_end <= range.start {
            offset = stripe_end;
            continue;
        }
        if offset >= range.end {
            break;
        }
        let stripe_len = usize::try_from(s.len)
            .map_err(|_| ClientError::Meta(format!("stripe {i} is too long")))?;
        let shard_len = shard_len_for(stripe_len, k);
        if shard_len == 0 {
            offset = stripe_end;
            continue;
        }
        // Both within the stripe, so they fit in usize.
        let a = (range.start.max(offset) - offset) as usize;
        let b = (range.end.min(stripe_end) - offset) as usize;
        out.push(StripeSpan::new(
            i as u64,
            offset,
            stripe_len,
            k,
            a..b,
            range.start,
        ));
        offset = stripe_end;
    }
    if offset < range.end {
        return Err(ClientError::Meta(format!(
            "manifest stripes hold {offset} bytes, fewer than the range needs"
        )));
    }
    Ok(out)
}

/// An [`AsyncRead`](tokio::io::AsyncRead) over a stream of byte chunks
/// (an HTTP body, a [`GetStream`]), so a stream can be fed to
/// [`Client::put`] without buffering it.
pub struct StreamReader<S> {
    stream: S,
    chunk: Bytes,
}

impl<S> StreamReader<S> {
    /// Wraps `stream`.
    pub fn new(stream: S) -> Self {
        StreamReader {
            stream,
            chunk: Bytes::new(),
        }
    }
}

impl<S, E> tokio::io::AsyncRead for StreamReader<S>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        loop {
            if !self.chunk.is_empty() {
                let n = self.chunk.len().min(buf.remaining());
                let piece = self.chunk.split_to(n);
                buf.put_slice(&piece);
                return Poll::Ready(Ok(()));
            }
            match self.stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(b))) => self.chunk = b,
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(std::io::Error::other(e.to_string())))
                }
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Inner {
    /// A page of stripe rows of one object version.
    pub(crate) async fn stripe_page(
        &self,
        bucket: &str,
        key: &str,
        version: StripeId,
        from: u64,
        limit: u32,
    ) -> Result<Vec<StripeManifest>> {
        let r = self
            .meta
            .query(
                &Query::ObjectStripes {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    version,
                    from,
                    limit,
                },
                Consistency::Linearizable,
            )
            .await?;
        crate::expect_result!(r, QueryResult::Stripes(s) => s)
    }

    /// Fetches shard `index` of `stripe` and verifies it against the
    /// manifest (length and BLAKE3).
    async fn fetch_shard(&self, loc: &ShardLoc, shard_len: usize) -> Result<Bytes, ShardFail> {
        let Some(cs) = loc.chunkserver else {
            return Err(ShardFail::Missing("never placed".into()));
        };
        let addr = self
            .chunkserver_addr(cs)
            .await
            .map_err(|e| ShardFail::Unreachable(e.to_string()))?;
        let get = self
            .shards
            .get(&addr, loc.shard, None, Some(loc.blake3.into()));
        let data = match tokio::time::timeout(self.cfg.shard_timeout, get).await {
            Ok(Ok(d)) => d,
            Ok(Err(cairn_chunkserver::Error::CorruptShard { reason, .. })) => {
                return Err(ShardFail::Corrupt(reason))
            }
            Ok(Err(e @ cairn_chunkserver::Error::NoSuchShard { .. })) => {
                return Err(ShardFail::Missing(e.to_string()))
            }
            Ok(Err(e)) => return Err(ShardFail::Unreachable(e.to_string())),
            Err(_) => return Err(ShardFail::Unreachable("timed out".into())),
        };
        if data.len() != shard_len {
            return Err(ShardFail::Corrupt(format!(
                "length {} instead of {shard_len}",
                data.len()
            )));
        }
        // `ShardClient::get` hashed the payload as it arrived and checked it
        // against the manifest's hash (`expected`), whatever the server
        // claims: nothing unverified is ever returned.
        Ok(data)
    }

    /// Produces the bytes of one stripe span.
    async fn read_span(
        &self,
        bucket: &str,
        key: &str,
        m: &ObjectManifest,
        stripe: &StripeManifest,
        codec: &Arc<Codec>,
        span: StripeSpan,
    ) -> Result<Vec<Bytes>> {
        let n = m.ec.total();
        let k = usize::from(m.ec.k);
        if stripe.shards.len() != n {
            return Err(ClientError::Meta(format!(
                "stripe {} lists {} shards, expected {n}",
                span.stripe,
                stripe.shards.len()
            )));
        }
        let wanted: BTreeSet<usize> = span.pieces.iter().map(|p| usize::from(p.index)).collect();
        let mut have: Vec<Option<Bytes>> = vec![None; n];
        let mut bad: Vec<(usize, String)> = Vec::new();
        let mut tried: BTreeSet<usize> = BTreeSet::new();

        // Happy path: only the data shards the range touches.
        let mut round: Vec<usize> = wanted.iter().copied().collect();
        loop {
            let fetches = round.iter().map(|&i| {
                let loc = &stripe.shards[i];
                async move { (i, self.fetch_shard(loc, span.shard_len).await) }
            });
            for (i, r) in futures::future::join_all(fetches).await {
                tried.insert(i);
                match r {
                    Ok(d) => have[i] = Some(d),
                    Err(ShardFail::Missing(why)) => bad.push((i, format!("missing: {why}"))),
                    Err(ShardFail::Corrupt(why)) => bad.push((i, format!("corrupt: {why}"))),
                    Err(ShardFail::Unreachable(why)) => {
                        tracing::debug!(index = i, %why, "shard unreachable; not reported");
                    }
                }
            }
            if wanted.iter().all(|&i| have[i].is_some()) {
                break;
            }
            // Degraded: we need k verified shards in all to decode.
            let present = have.iter().filter(|h| h.is_some()).count();
            let need = k.saturating_sub(present);
            round = (0..n).filter(|i| !tried.contains(i)).take(need).collect();
            if round.is_empty() {
                break;
            }
        }
        if !bad.is_empty() {
            self.report_bad(bucket, key, m, stripe, span.stripe, &bad)
                .await;
        }
        if wanted.iter().all(|&i| have[i].is_some()) {
            return Ok(span
                .pieces
                .iter()
                .filter_map(|p| {
                    have[usize::from(p.index)]
                        .as_ref()
                        .map(|d| d.slice(p.range.clone()))
                })
                .collect());
        }
        let present = have.iter().filter(|h| h.is_some()).count();
        if present < k {
            return Err(ClientError::NotEnoughShards {
                stripe: span.stripe,
                have: present,
                need: k,
            });
        }
        let codec = codec.clone();
        let pieces = span.pieces.clone();
        let stripe_no = span.stripe;
        tokio::task::spawn_blocking(move || -> Result<Vec<Bytes>> {
            let mut slots: Vec<Option<Vec<u8>>> =
                have.into_iter().map(|h| h.map(|b| b.to_vec())).collect();
            codec
                .reconstruct_data(&mut slots)
                .map_err(|_| ClientError::NotEnoughShards {
                    stripe: stripe_no,
                    have: present,
                    need: k,
                })?;
            let mut out = Vec::with_capacity(pieces.len());
            for p in &pieces {
                match &slots[usize::from(p.index)] {
                    Some(d) => out.push(Bytes::copy_from_slice(&d[p.range.clone()])),
                    None => {
                        return Err(ClientError::NotEnoughShards {
                            stripe: stripe_no,
                            have: present,
                            need: k,
                        })
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| ClientError::Io(std::io::Error::other(format!("decode task: {e}"))))?
    }

    async fn report_bad(
        &self,
        bucket: &str,
        key: &str,
        m: &ObjectManifest,
        stripe: &StripeManifest,
        stripe_no: u64,
        bad: &[(usize, String)],
    ) {
        let items: Vec<RepairItem> = bad
            .iter()
            .map(|(i, why)| RepairItem {
                bucket: bucket.to_string(),
                key: key.to_string(),
                version: m.version,
                stripe: stripe_no,
                index: *i as u8,
                chunkserver: stripe.shards[*i].chunkserver,
                reason: why.clone(),
            })
            .collect();
        tracing::warn!(
            bucket,
            key,
            stripe = stripe_no,
            ?bad,
            "bad shards; reading from parity"
        );
        if let Err(e) = self.write(Command::QueueRepair { items }).await {
            tracing::warn!(error = %e, "could not report bad shards");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(stripe_lens: &[u64], k: u8) -> ObjectManifest {
        let stripes = stripe_lens
            .iter()
            .map(|&len| StripeManifest {
                id: StripeId([0; 16]),
                len,
                shards: Vec::new(),
            })
            .collect();
        ObjectManifest {
            version: StripeId([0; 16]),
            size: stripe_lens.iter().sum(),
            etag: String::new(),
            content_type: None,
            headers: Default::default(),
            user_meta: Default::default(),
            checksums: Default::default(),
            created_ms: 0,
            ec: EcParams { k, m: 1 },
            shard_size: 100,
            stripes,
            inline: None,
            parts: vec![PartInfo {
                number: 1,
                size: 0,
                etag: String::new(),
                checksums: Default::default(),
                stripes: 0,
            }],
            tags: Default::default(),
        }
    }

    /// Every byte of every range maps to exactly one (stripe, shard, offset)
    /// that reproduces it, for stripes of uneven lengths (short stripes in
    /// the middle, as multipart objects have).
    #[test]
    fn walk_spans_cover_uneven_stripes() {
        let lens = [400u64, 123, 400, 1, 77];
        let m = manifest(&lens, 4);
        // The object byte at offset o is (o % 251); each stripe is cut into
        // k shards of ceil(len / k) bytes.
        let size: u64 = lens.iter().sum();
        let mut starts = vec![0u64];
        for l in lens {
            starts.push(starts.last().copied().unwrap_or(0) + l);
        }
        for (a, b) in [
            (0, size),
            (399, 401),
            (400, 523),
            (520, 930),
            (923, 924),
            (0, 0),
            (size - 1, size),
        ] {
            let spans = walk_spans(&m, a..b).unwrap_or_default();
            let mut out = Vec::new();
            for s in &spans {
                assert_eq!(s.shard_len, s.stripe_len.div_ceil(4));
                for p in &s.pieces {
                    for i in p.range.clone() {
                        let in_stripe = usize::from(p.index) * s.shard_len + i;
                        out.push((starts[s.stripe as usize] + in_stripe as u64) % 251);
                    }
                }
            }
            let want: Vec<u64> = (a..b).map(|o| o % 251).collect();
            assert_eq!(out, want, "range {a}..{b}");
        }
        assert!(walk_spans(&m, 0..size + 1).is_err());
    }
}
