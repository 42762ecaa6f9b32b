//! Erasure coding: parameters, stripe layout and the Reed-Solomon codec.
//!
//! An object is cut into stripes of `k * shard_size` bytes (the last one
//! may be shorter). Stripe bytes are laid out contiguously over the k data
//! shards: data shard `j` holds stripe bytes `[j * shard_len, (j + 1) *
//! shard_len)`, zero-padded at the end of the stripe; the m parity shards are
//! computed over those. The last, short stripe uses `shard_len =
//! ceil(stripe_len / k)` so a tiny object does not cost `k * shard_size`
//! bytes; the caller records each stripe's real length to strip the padding.
//!
//! [`EcParams`] itself is defined in `cairn_metadata::types` (manifests and
//! buckets carry it) and re-exported here.

use std::fmt;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::error::{Error, Result};

/// Default shard size of full stripes: 1 MiB keeps a 4+2 stripe (4 MiB of
/// data) large enough for sequential disk and network throughput while a
/// single stripe still fits comfortably in memory on every hop.
pub const DEFAULT_SHARD_SIZE: usize = 1 << 20;

pub use cairn_metadata::types::{EcParams, MAX_TOTAL_SHARDS};

/// Number of stripes of an object of `object_len` bytes with `k` data
/// shards of `shard_size` bytes per full stripe. Zero for an empty object.
pub fn stripe_count(object_len: u64, k: u8, shard_size: usize) -> u64 {
    let per = stripe_capacity(k, shard_size);
    if per == 0 {
        return 0;
    }
    object_len.div_ceil(per)
}

/// Shard length of a stripe holding `stripe_len` bytes: `ceil(stripe_len /
/// k)`. For a full stripe this is the shard size.
pub fn shard_len_for(stripe_len: usize, k: u8) -> usize {
    stripe_len.div_ceil(usize::from(k.max(1)))
}

fn stripe_capacity(k: u8, shard_size: usize) -> u64 {
    u64::from(k) * shard_size as u64
}

/// How one object of known length is cut into stripes and shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    object_len: u64,
    k: u8,
    shard_size: usize,
}

/// The part of one stripe that a byte range of the object touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeSpan {
    /// Stripe number, from 0.
    pub stripe: u64,
    /// Offset in the object of the stripe's first byte.
    pub stripe_offset: u64,
    /// Real (unpadded) length of the stripe.
    pub stripe_len: usize,
    /// Length of each of the stripe's shards.
    pub shard_len: usize,
    /// The touched bytes, as offsets within the stripe.
    pub in_stripe: Range<usize>,
    /// The touched data shards, in order; concatenated they are exactly the
    /// touched bytes.
    pub pieces: Vec<ShardPiece>,
}

impl StripeSpan {
    /// The span covering bytes `in_stripe` of stripe number `stripe`, which
    /// starts at object offset `stripe_offset` and holds `stripe_len` real
    /// bytes cut into `k` shards of `ceil(stripe_len / k)` bytes, for a
    /// requested range that starts at object offset `range_start` (at or
    /// before the span's first byte).
    pub fn new(
        stripe: u64,
        stripe_offset: u64,
        stripe_len: usize,
        k: u8,
        in_stripe: Range<usize>,
        range_start: u64,
    ) -> StripeSpan {
        let shard_len = shard_len_for(stripe_len, k);
        let mut pieces = Vec::new();
        let mut at = in_stripe.start;
        while shard_len > 0 && at < in_stripe.end {
            let index = at / shard_len;
            let shard_start = index * shard_len;
            let piece_end = in_stripe.end.min(shard_start + shard_len);
            pieces.push(ShardPiece {
                // index < k <= 255.
                index: index as u8,
                range: (at - shard_start)..(piece_end - shard_start),
                out_offset: (stripe_offset + at as u64).saturating_sub(range_start),
            });
            at = piece_end;
        }
        StripeSpan {
            stripe,
            stripe_offset,
            stripe_len,
            shard_len,
            in_stripe,
            pieces,
        }
    }
}

/// A byte range within one data shard, and where it lands in the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPiece {
    /// Data shard index (0..k).
    pub index: u8,
    /// Bytes within that shard.
    pub range: Range<usize>,
    /// Offset of these bytes within the requested object range.
    pub out_offset: u64,
}

impl Layout {
    /// The layout of an object of `object_len` bytes striped over `k` data
    /// shards of `shard_size` bytes.
    pub fn new(object_len: u64, k: u8, shard_size: usize) -> Result<Self> {
        if k == 0 {
            return Err(Error::InvalidParams("k must be at least 1".into()));
        }
        if shard_size == 0 {
            return Err(Error::InvalidParams("shard size must be at least 1".into()));
        }
        if usize::from(k).checked_mul(shard_size).is_none() {
            return Err(Error::InvalidParams("k * shard size overflows".into()));
        }
        Ok(Layout {
            object_len,
            k,
            shard_size,
        })
    }

    /// Object length.
    pub fn object_len(&self) -> u64 {
        self.object_len
    }

    /// Number of stripes.
    pub fn stripe_count(&self) -> u64 {
        stripe_count(self.object_len, self.k, self.shard_size)
    }

    /// Bytes of a full stripe (`k * shard_size`).
    pub fn full_stripe_len(&self) -> usize {
        usize::from(self.k) * self.shard_size
    }

    /// Offset in the object of stripe `i`'s first byte.
    pub fn stripe_offset(&self, i: u64) -> u64 {
        i.saturating_mul(self.full_stripe_len() as u64)
    }

    /// Real length of stripe `i` (0 past the end).
    pub fn stripe_len(&self, i: u64) -> usize {
        let start = self.stripe_offset(i);
        let left = self.object_len.saturating_sub(start);
        // Bounded by full_stripe_len, which is a usize.
        left.min(self.full_stripe_len() as u64) as usize
    }

    /// Shard length of stripe `i`.
    pub fn shard_len(&self, i: u64) -> usize {
        shard_len_for(self.stripe_len(i), self.k)
    }

    /// The stripes, and within each the data shards and offsets, that object
    /// bytes `range` touch. Empty for an empty range; an error when the
    /// range is inverted or runs past the end of the object.
    pub fn spans(&self, range: Range<u64>) -> Result<Spans> {
        if range.start > range.end || range.end > self.object_len {
            return Err(Error::BadRequest(format!(
                "range {}..{} is outside an object of {} bytes",
                range.start, range.end, self.object_len
            )));
        }
        Ok(Spans {
            layout: *self,
            pos: range.start,
            start: range.start,
            end: range.end,
        })
    }
}

/// Iterator over the [`StripeSpan`]s of a range; see [`Layout::spans`].
#[derive(Debug, Clone)]
pub struct Spans {
    layout: Layout,
    pos: u64,
    start: u64,
    end: u64,
}

impl Iterator for Spans {
    type Item = StripeSpan;

    fn next(&mut self) -> Option<StripeSpan> {
        if self.pos >= self.end {
            return None;
        }
        let l = &self.layout;
        let full = l.full_stripe_len() as u64;
        let stripe = self.pos / full;
        let stripe_offset = l.stripe_offset(stripe);
        let stripe_len = l.stripe_len(stripe);
        let stripe_end = stripe_offset + stripe_len as u64;
        let a = (self.pos - stripe_offset) as usize;
        let b = (self.end.min(stripe_end) - stripe_offset) as usize;
        self.pos = stripe_offset + b as u64;
        Some(StripeSpan::new(
            stripe,
            stripe_offset,
            stripe_len,
            l.k,
            a..b,
            self.start,
        ))
    }
}

/// Reed-Solomon encoder/decoder for one [`EcParams`]. Cheap to share
/// (`&self` everywhere); build one per parameter set and keep it.
pub struct Codec {
    params: EcParams,
    rs: ReedSolomon,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("params", &self.params)
            .finish()
    }
}

impl Codec {
    /// A codec for `params`, which are validated (values decoded from JSON
    /// may not have been).
    pub fn new(params: EcParams) -> Result<Self> {
        params
            .validate()
            .map_err(|e| Error::InvalidParams(e.to_string()))?;
        let rs = ReedSolomon::new(usize::from(params.k), usize::from(params.m))
            .map_err(|e| Error::InvalidParams(format!("{params}: {e}")))?;
        Ok(Codec { params, rs })
    }

    /// The parameters.
    pub fn params(&self) -> EcParams {
        self.params
    }

    /// Cuts `stripe` into k data shards of `shard_len` bytes (the end
    /// zero-padded) and computes m parity shards: k + m shards, data first.
    /// `shard_len` must be at least 1 and `k * shard_len >= stripe.len()`.
    ///
    /// One allocation of `(k + m) * shard_len` bytes backs all shards.
    pub fn encode(&self, stripe: &[u8], shard_len: usize) -> Result<Vec<Bytes>> {
        let k = usize::from(self.params.k);
        let n = self.params.total();
        if shard_len == 0 {
            return Err(Error::InvalidParams(
                "shard length must be at least 1".into(),
            ));
        }
        let data_len = k
            .checked_mul(shard_len)
            .ok_or_else(|| Error::InvalidParams("k * shard length overflows".into()))?;
        if stripe.len() > data_len {
            return Err(Error::InvalidParams(format!(
                "stripe of {} bytes does not fit {k} shards of {shard_len} bytes",
                stripe.len()
            )));
        }
        let total = n
            .checked_mul(shard_len)
            .ok_or_else(|| Error::InvalidParams("(k + m) * shard length overflows".into()))?;
        // Copy the stripe, then zero only the padding and the parity area
        // (zeroing everything first would touch the data bytes twice).
        let mut buf = BytesMut::with_capacity(total);
        buf.extend_from_slice(stripe);
        buf.resize(total, 0);
        {
            let (data, parity) = buf.split_at_mut(data_len);
            let data: Vec<&[u8]> = data.chunks(shard_len).collect();
            let mut parity: Vec<&mut [u8]> = parity.chunks_mut(shard_len).collect();
            self.rs
                .encode_sep(&data, &mut parity)
                .map_err(|e| Error::InvalidParams(format!("encode: {e}")))?;
        }
        let mut all = buf.freeze();
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(all.split_to(shard_len));
        }
        Ok(out)
    }

    /// Rebuilds every missing (`None`) shard of a stripe, bit-exact, from any
    /// k present ones. `shards` has exactly k + m entries, in index order; a
    /// shard that failed its hash check must be passed as `None`. All present
    /// shards must have the same length. With fewer than k present the
    /// shards are left untouched and [`Error::NotEnoughShards`] is returned.
    pub fn reconstruct(&self, shards: &mut [Option<Vec<u8>>]) -> Result<()> {
        self.check_present(shards)?;
        self.rs
            .reconstruct(shards)
            .map_err(|e| Error::InvalidParams(format!("reconstruct: {e}")))
    }

    /// Like [`Codec::reconstruct`] but only rebuilds the missing data shards
    /// (what a read needs); missing parity shards stay `None`.
    pub fn reconstruct_data(&self, shards: &mut [Option<Vec<u8>>]) -> Result<()> {
        self.check_present(shards)?;
        self.rs
            .reconstruct_data(shards)
            .map_err(|e| Error::InvalidParams(format!("reconstruct: {e}")))
    }

    /// Rebuilds a stripe's data from whatever shards are present and returns
    /// its first `stripe_len` bytes (the read path in one call).
    pub fn reconstruct_stripe(
        &self,
        shards: &mut [Option<Vec<u8>>],
        stripe_len: usize,
    ) -> Result<Bytes> {
        self.reconstruct_data(shards)?;
        let k = usize::from(self.params.k);
        let mut data = Vec::with_capacity(k);
        for s in shards.iter().take(k) {
            match s {
                Some(s) => data.push(s.as_slice()),
                None => return Err(Error::NotEnoughShards { have: 0, need: k }),
            }
        }
        self.join_data(&data, stripe_len)
    }

    /// Concatenates the k data shards (`data[..k]`; parity after them is
    /// ignored) and cuts the padding: the stripe's first `stripe_len` bytes.
    pub fn join_data<B: AsRef<[u8]>>(&self, data: &[B], stripe_len: usize) -> Result<Bytes> {
        let k = usize::from(self.params.k);
        if data.len() < k {
            return Err(Error::NotEnoughShards {
                have: data.len(),
                need: k,
            });
        }
        let shard_len = data[0].as_ref().len();
        if data[..k].iter().any(|d| d.as_ref().len() != shard_len) {
            return Err(Error::InvalidParams("data shards differ in length".into()));
        }
        if stripe_len > k.saturating_mul(shard_len) {
            return Err(Error::InvalidParams(format!(
                "stripe length {stripe_len} exceeds {k} shards of {shard_len} bytes"
            )));
        }
        let mut out = BytesMut::with_capacity(stripe_len);
        let mut left = stripe_len;
        for d in &data[..k] {
            if left == 0 {
                break;
            }
            let take = left.min(shard_len);
            out.extend_from_slice(&d.as_ref()[..take]);
            left -= take;
        }
        Ok(out.freeze())
    }

    fn check_present(&self, shards: &[Option<Vec<u8>>]) -> Result<()> {
        let n = self.params.total();
        let k = usize::from(self.params.k);
        if shards.len() != n {
            return Err(Error::InvalidParams(format!(
                "expected {n} shard slots for {}, got {}",
                self.params,
                shards.len()
            )));
        }
        let mut have = 0;
        let mut len = None;
        for s in shards.iter().flatten() {
            have += 1;
            match len {
                None => len = Some(s.len()),
                Some(l) if l != s.len() => {
                    return Err(Error::InvalidParams(format!(
                        "shards differ in length ({l} and {})",
                        s.len()
                    )))
                }
                Some(_) => {}
            }
        }
        if have < k {
            return Err(Error::NotEnoughShards { have, need: k });
        }
        if len == Some(0) {
            return Err(Error::InvalidParams("shards are empty".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn codec_validates_params() {
        for (k, m) in [(0, 2), (4, 0), (19, 2), (255, 255)] {
            assert!(matches!(
                Codec::new(EcParams { k, m }),
                Err(Error::InvalidParams(_))
            ));
        }
        assert!(Codec::new(EcParams::new(10, 10).unwrap()).is_ok());
        assert_eq!(
            Codec::new(EcParams::default())
                .unwrap()
                .params()
                .to_string(),
            "4+2"
        );
    }

    #[test]
    fn layout_basics() {
        let l = Layout::new(1, 4, DEFAULT_SHARD_SIZE).unwrap();
        assert_eq!(l.stripe_count(), 1);
        assert_eq!(l.stripe_len(0), 1);
        assert_eq!(l.shard_len(0), 1);
        let mib = DEFAULT_SHARD_SIZE as u64;
        let l = Layout::new(9 * mib + 3, 4, DEFAULT_SHARD_SIZE).unwrap();
        assert_eq!(l.stripe_count(), 3);
        assert_eq!(l.stripe_len(1), 4 * DEFAULT_SHARD_SIZE);
        assert_eq!(l.stripe_len(2), DEFAULT_SHARD_SIZE + 3);
        assert_eq!(l.shard_len(2), (DEFAULT_SHARD_SIZE + 3).div_ceil(4));
        assert_eq!(l.stripe_len(3), 0);
        assert_eq!(stripe_count(0, 4, 1024), 0);
        assert_eq!(
            Layout::new(0, 4, 1).unwrap().spans(0..0).unwrap().count(),
            0
        );
        assert!(l.spans(0..9 * mib + 4).is_err());
    }

    #[test]
    fn encode_rejects_bad_input() {
        let c = Codec::new(EcParams::default()).unwrap();
        assert!(c.encode(b"", 0).is_err());
        assert!(c.encode(&[1u8; 9], 2).is_err());
        let shards = c.encode(b"", 1).unwrap();
        assert_eq!(shards.len(), 6);
    }

    #[test]
    fn too_many_missing_is_an_error_not_data() {
        let c = Codec::new(EcParams::new(3, 2).unwrap()).unwrap();
        let s = c.encode(b"hello world, hello codec", 8).unwrap();
        let mut v: Vec<Option<Vec<u8>>> = s.iter().map(|b| Some(b.to_vec())).collect();
        v[0] = None;
        v[2] = None;
        v[4] = None;
        let before = v.clone();
        match c.reconstruct(&mut v) {
            Err(Error::NotEnoughShards { have: 2, need: 3 }) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(v, before);
        assert!(matches!(
            c.reconstruct_stripe(&mut v, 24),
            Err(Error::NotEnoughShards { .. })
        ));
    }

    fn params_and_data() -> impl Strategy<Value = (u8, u8, Vec<u8>)> {
        (1u8..=12, 1u8..=8)
            .prop_filter("k+m <= 20", |(k, m)| k + m <= MAX_TOTAL_SHARDS)
            .prop_flat_map(|(k, m)| {
                (
                    Just(k),
                    Just(m),
                    proptest::collection::vec(any::<u8>(), 1..3000),
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Up to m shards lost or corrupted (and caught by their hash):
        /// the stripe comes back bit-exact; more than m: a clear error.
        #[test]
        fn any_m_losses_recover((k, m, data) in params_and_data(), seed in any::<u64>(), extra in 0usize..3) {
            let params = EcParams::new(k, m).unwrap();
            let codec = Codec::new(params).unwrap();
            let shard_len = shard_len_for(data.len(), k);
            let shards = codec.encode(&data, shard_len).unwrap();
            prop_assert_eq!(shards.len(), params.total());
            let hashes: Vec<blake3::Hash> = shards.iter().map(|s| blake3::hash(s)).collect();

            // Pick a pseudo-random set of victims from the seed.
            let n = params.total();
            let mut order: Vec<usize> = (0..n).collect();
            let mut x = seed | 1;
            for i in (1..n).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let lost = (seed as usize) % (usize::from(m) + 1);
            let mut held: Vec<Option<Vec<u8>>> = shards.iter().map(|s| Some(s.to_vec())).collect();
            for (j, &victim) in order.iter().take(lost).enumerate() {
                if j % 2 == 0 {
                    held[victim] = None;
                } else if let Some(s) = held[victim].as_mut() {
                    // Corrupt: flip a byte; the hash check turns it into a loss.
                    let at = (x as usize) % s.len();
                    s[at] ^= 0x5a;
                }
            }
            for (i, h) in held.iter_mut().enumerate() {
                if h.as_ref().is_some_and(|s| blake3::hash(s) != hashes[i]) {
                    *h = None;
                }
            }
            let mut full = held.clone();
            codec.reconstruct(&mut full).unwrap();
            for (i, s) in full.iter().enumerate() {
                prop_assert_eq!(s.as_deref(), Some(&shards[i][..]));
            }
            let got = codec.reconstruct_stripe(&mut held, data.len()).unwrap();
            prop_assert_eq!(&got[..], &data[..]);

            // One loss too many.
            let mut too_few: Vec<Option<Vec<u8>>> = shards.iter().map(|s| Some(s.to_vec())).collect();
            for &victim in order.iter().take(usize::from(m) + 1 + extra.min(usize::from(k) - 1)) {
                too_few[victim] = None;
            }
            let is_not_enough = matches!(
                codec.reconstruct(&mut too_few),
                Err(Error::NotEnoughShards { need, .. }) if need == usize::from(k)
            );
            prop_assert!(is_not_enough);
        }

        /// The spans of any range, read from the data shards, are exactly
        /// that range of the object.
        #[test]
        fn spans_cover_the_range(k in 1u8..=6, shard_size in 1usize..40, len in 0u64..600, a in 0u64..600, b in 0u64..600) {
            let obj: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let layout = Layout::new(len, k, shard_size).unwrap();
            let (a, b) = (a.min(len), b.min(len));
            let (a, b) = (a.min(b), a.max(b));
            let codec = Codec::new(EcParams::new(k, 1).unwrap()).unwrap();
            let mut out = vec![0u8; (b - a) as usize];
            let mut covered = 0usize;
            for span in layout.spans(a..b).unwrap() {
                let s0 = span.stripe_offset as usize;
                let stripe = &obj[s0..s0 + span.stripe_len];
                let shards = codec.encode(stripe, span.shard_len).unwrap();
                prop_assert!(!span.pieces.is_empty());
                for p in span.pieces {
                    prop_assert!(p.index < k);
                    let bytes = &shards[usize::from(p.index)][p.range.clone()];
                    let o = p.out_offset as usize;
                    out[o..o + bytes.len()].copy_from_slice(bytes);
                    covered += bytes.len();
                }
            }
            prop_assert_eq!(covered as u64, b - a);
            prop_assert_eq!(&out[..], &obj[a as usize..b as usize]);
        }
    }
}
