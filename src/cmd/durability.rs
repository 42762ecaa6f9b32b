//! `cairn admin durability`: the mean time to data loss (MTTDL) of every
//! bucket, from the live layout and the measured repair rate.
//!
//! # The model
//!
//! **One stripe.** A stripe of `n = k + m` shards, each on a different
//! chunkserver (the placement invariant), survives any `m` lost shards. Its
//! state is the number `i` of shards currently lost, `0..=m+1`; `m + 1` is
//! data loss and absorbing. This is a birth-death Markov chain:
//!
//! - failure, `i -> i+1`, at rate `lambda_i = (n - i) * lambda`: each of
//!   the `n - i` live shards' chunkservers fails independently at rate
//!   `lambda = -ln(1 - AFR)` per year (the AFR is a yearly probability; a
//!   chunkserver counts as one failure unit, whatever its disks);
//! - repair, `i -> i-1`, at rate `mu_i`, where `mu = 1 / MTTR` and MTTR is
//!   the failure detector's down delay plus the time to rebuild one
//!   chunkserver's data at the measured cluster repair rate (at least one
//!   second). By default
//!   repair is **parallel**, `mu_i = i * mu`: the planner dispatches one
//!   task per lost shard to distinct targets, every lost shard is rebuilt
//!   at once. `--serial-repair` uses `mu_i = mu` (one at a time), the
//!   pessimistic textbook variant.
//!
//! Let `tau_j` be the expected time to first reach `j + 1` from `j`. From
//! `j` the chain leaves after a mean `1 / (lambda_j + mu_j)`; it goes up
//! with probability `lambda_j / (lambda_j + mu_j)`, else down, and must
//! then climb back (`tau_{j-1}`) and try again. So
//! `tau_j = 1/(lambda_j + mu_j) + mu_j/(lambda_j + mu_j) * (tau_{j-1} + tau_j)`,
//! which solves to
//!
//! ```text
//! tau_0 = 1 / lambda_0
//! tau_j = (1 + mu_j * tau_{j-1}) / lambda_j
//! MTTDL_stripe = tau_0 + tau_1 + ... + tau_m
//! ```
//!
//! (for `mu >> lambda` this is the classic `mu^m * m! / (n (n-1) ... (n-m)
//! lambda^(m+1))` with parallel repair). The recursion has only positive
//! terms, so it is numerically stable for any `mu / lambda`.
//!
//! **A bucket of S stripes.** With `mu >> lambda` the time to loss is
//! nearly exponential, and the bucket's S stripes are treated as S
//! independent groups: a loss rate `S / MTTDL_stripe`. Stripes share
//! chunkservers, so this over-counts once S is large: no data is lost
//! before `m + 1` chunkservers are down at once, which is the same chain
//! over all `N` chunkservers (`n = N`). The bucket's MTTDL is the larger
//! of the two, `max(MTTDL_stripe / S, MTTDL_cluster)`.
//!
//! **Correlated zone loss.** A whole zone (rack, room) failing at rate
//! `lambda_zone` (`--zone-afr`) takes all its chunkservers at once. The
//! placement invariant allows at most `cap = max(m, ceil(n / Z))` shards of
//! a stripe in one of `Z` zones; in a balanced cluster it spreads them as
//! evenly as it can, `c = floor(n/Z)` or `c + 1` per zone ([`spread`]). A
//! zone holding `c > m` shards of a stripe loses it outright. Otherwise
//! the stripe is lost only if at least `m - c + 1` more of its `n - c`
//! other chunkservers fail while the zone's data is rebuilt elsewhere
//! (`T_zone` = detection + the fullest zone's bytes at the repair rate):
//! with `p = 1 - exp(-lambda * T_zone)`, a binomial tail `P_c`. Summed
//! over the zones, with a union bound over the bucket's stripes, the
//! bucket's zone-loss rate is `sum_zones lambda_zone * min(1, S * P_c)`.
//! Adding a zone lowers the shards per zone (below `m + 1` the cluster
//! survives a zone; more zones with fewer shards need more concurrent
//! failures) and spreads the same data over more zones (shorter
//! `T_zone`), against one more zone that can fail.
//! The bucket's reported MTTDL combines both rates: `1 / (1/independent +
//! 1/zone)`; the yearly loss probability is `1 - exp(-1 year / MTTDL)`.

use std::collections::BTreeMap;

use anyhow::Context;
use cairn_metadata::client::{Consistency, MetaClient};
use cairn_metadata::types::{
    BucketInfo, ChunkserverState, ClusterStatus, EcParams, Query, QueryResult,
};
use serde::Serialize;

/// Hours in a (Julian) year: the unit AFRs are quoted in.
pub const HOURS_PER_YEAR: f64 = 8766.0;

/// Repair rate assumed when no repair was measured and none was given
/// (MB/s). About half of what `scripts/bench-repair.sh` measures on a
/// 2-core machine (ARCHITECTURE.md, Repair): deliberately modest.
pub const ASSUMED_REPAIR_MBPS: f64 = 50.0;

/// Less rebuilt data than this is too little to trust as a rate.
const MIN_MEASURED_BYTES: u64 = 1 << 20;

/// Shortest measured busy time trusted as a rate, seconds.
const MIN_MEASURED_SECS: f64 = 0.05;

/// Shortest repair time the model uses, hours (one second: a planner
/// round and a heartbeat). With no detection delay and no data the
/// rebuild time would be zero and the MTTDL infinite.
const MIN_MTTR_HOURS: f64 = 1.0 / 3600.0;

/// How lost shards of one stripe are rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RepairMode {
    /// Every lost shard at once: `mu_i = i * mu` (Cairn's planner).
    Parallel,
    /// One lost shard at a time: `mu_i = mu`.
    Serial,
}

/// The birth-death chain of one redundancy group (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chain {
    /// Members (shards of a stripe, or chunkservers of the cluster).
    pub n: u32,
    /// Losses survived; `m + 1` concurrent losses lose data.
    pub m: u32,
    /// Failure rate of one member, per hour.
    pub lambda: f64,
    /// Repair rate `1 / MTTR`, per hour.
    pub mu: f64,
    /// Repair per state.
    pub mode: RepairMode,
}

impl Chain {
    /// Failure rate out of state `i` (`i` lost members).
    fn up(&self, i: u32) -> f64 {
        f64::from(self.n.saturating_sub(i)) * self.lambda
    }

    /// Repair rate out of state `i`.
    fn down(&self, i: u32) -> f64 {
        match (self.mode, i) {
            (_, 0) => 0.0,
            (RepairMode::Parallel, i) => f64::from(i) * self.mu,
            (RepairMode::Serial, _) => self.mu,
        }
    }

    /// Mean time from no loss to `m + 1` concurrent losses, hours
    /// (infinite when `n <= m`: the group can never lose `m + 1`).
    pub fn mttdl(&self) -> f64 {
        if self.n <= self.m || self.lambda <= 0.0 {
            return f64::INFINITY;
        }
        let mut total = 0.0;
        let mut tau_prev = 0.0;
        for j in 0..=self.m {
            let tau = (1.0 + self.down(j) * tau_prev) / self.up(j);
            total += tau;
            tau_prev = tau;
        }
        total
    }

    /// Mean time to loss over `runs` simulated histories of the chain
    /// (for checking [`Chain::mttdl`]), hours.
    #[cfg(test)]
    pub fn simulate(&self, rng: &mut impl rand::Rng, runs: u32) -> f64 {
        let mut sum = 0.0;
        for _ in 0..runs {
            let (mut i, mut t) = (0u32, 0.0f64);
            while i <= self.m {
                let (up, down) = (self.up(i), self.down(i));
                let rate = up + down;
                // Exponential holding time by inversion; 1 - u is in (0, 1].
                let u: f64 = rng.random();
                t += -(1.0 - u).ln() / rate;
                if rng.random::<f64>() * rate < up {
                    i += 1;
                } else {
                    i -= 1;
                }
            }
            sum += t;
        }
        sum / f64::from(runs.max(1))
    }
}

/// Yearly failure probability -> rate per hour.
pub fn rate_per_hour(afr: f64) -> f64 {
    -(1.0 - afr).ln() / HOURS_PER_YEAR
}

/// Probability of at least one loss within a year at this MTTDL (hours).
pub fn loss_per_year(mttdl_hours: f64) -> f64 {
    if mttdl_hours.is_infinite() {
        return 0.0;
    }
    // 1 - exp(-x) without cancellation for tiny x.
    -(-HOURS_PER_YEAR / mttdl_hours).exp_m1()
}

/// How the placement spreads a stripe's `n` shards over `zones` zones
/// when it can (weighted by free space in a balanced cluster): as evenly
/// as possible. Returns (shards in a zone, zones holding that many), for
/// the zones that hold any.
pub fn spread(n: u32, zones: u32) -> Vec<(u32, u32)> {
    let zones = zones.max(1);
    let (q, r) = (n / zones, n % zones);
    let mut out = Vec::new();
    if r > 0 {
        out.push((q + 1, r));
    }
    if q > 0 {
        out.push((q, zones - r));
    }
    out
}

/// P(X >= r) for X ~ Binomial(n, p).
fn binomial_tail(n: u32, r: u32, p: f64) -> f64 {
    if r == 0 {
        return 1.0;
    }
    if r > n {
        return 0.0;
    }
    let mut total = 0.0;
    for x in r..=n {
        let mut c = 1.0f64;
        for i in 0..x {
            c *= f64::from(n - i) / f64::from(i + 1);
        }
        total += c * p.powi(x as i32) * (1.0 - p).powi((n - x) as i32);
    }
    total.min(1.0)
}

/// What the model needs of the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    /// Chunkservers counted as failure units (all but Down ones).
    pub chunkservers: u32,
    /// Zones among them.
    pub zones: u32,
    /// Mean shard bytes per chunkserver.
    pub bytes_per_chunkserver: u64,
    /// Shard bytes on the fullest chunkserver.
    pub bytes_fullest_chunkserver: u64,
    /// Shard bytes in the fullest zone.
    pub bytes_fullest_zone: u64,
    /// Shard bytes over all chunkservers.
    pub bytes_total: u64,
}

/// The operator's and the measured rates.
#[derive(Debug, Clone, Serialize)]
pub struct Assumptions {
    /// Yearly failure probability of one chunkserver.
    pub afr: f64,
    /// Yearly failure probability of one whole zone.
    pub zone_afr: f64,
    /// Cluster repair rate, MB/s (10^6 bytes).
    pub repair_mbps: f64,
    /// Where `repair_mbps` comes from: `measured`, `flag` or `assumed`.
    pub repair_rate_source: String,
    /// Shard bytes and busy seconds of the repairs the leader measured.
    pub measured_bytes: u64,
    /// Busy seconds of those repairs.
    pub measured_secs: f64,
    /// Seconds before a silent chunkserver counts as down (added to every
    /// repair).
    pub detect_secs: f64,
    /// Repair per state of a stripe.
    pub repair_mode: RepairMode,
    /// The model's approximations, in words.
    pub model: Vec<String>,
}

/// The model's answer for one erasure code on one layout.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    /// Data shards.
    pub k: u8,
    /// Parity shards.
    pub m: u8,
    /// Zones.
    pub zones: u32,
    /// Whether the cluster has the `k + m` distinct chunkservers a stripe
    /// needs.
    pub placeable: bool,
    /// Mean time to repair one lost chunkserver, hours.
    pub mttr_hours: f64,
    /// MTTDL of one stripe, years.
    pub stripe_mttdl_years: f64,
    /// Stripes at risk.
    pub stripes: u64,
    /// Shards of a stripe one zone may hold (the placement invariant).
    pub zone_cap: u32,
    /// Whether a stripe spread evenly over the zones survives the loss of
    /// a whole zone.
    pub survives_zone_loss: bool,
    /// MTTDL from independent chunkserver failures, years (`None`: no
    /// stripes, nothing at risk).
    pub independent_mttdl_years: Option<f64>,
    /// MTTDL from whole-zone loss, years.
    pub zone_mttdl_years: Option<f64>,
    /// Both combined, years.
    pub mttdl_years: Option<f64>,
    /// Probability of losing any data of the bucket within a year.
    pub loss_per_year: f64,
}

/// One what-if: a change and its estimate.
#[derive(Debug, Clone, Serialize)]
pub struct WhatIf {
    /// `k+m` or `add a zone`.
    pub change: String,
    /// The estimate with the change.
    pub estimate: Estimate,
}

/// One bucket's report.
#[derive(Debug, Clone, Serialize)]
pub struct BucketReport {
    /// Bucket.
    pub bucket: String,
    /// Objects.
    pub objects: u64,
    /// Logical bytes.
    pub bytes: u64,
    /// Now.
    pub current: Estimate,
    /// Alternatives.
    pub what_if: Vec<WhatIf>,
}

/// `cairn admin durability --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Inputs taken from the cluster.
    pub layout: Layout,
    /// Rates and approximations.
    pub assumptions: Assumptions,
    /// Hours until full redundancy after losing the fullest chunkserver
    /// (detection plus rebuilding its bytes at the repair rate).
    pub reprotect_one_node_hours: f64,
    /// Every bucket, with what-ifs.
    pub buckets: Vec<BucketReport>,
}

/// Everything [`estimate`] needs besides the code.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// Chunkserver failure rate, per hour.
    pub lambda: f64,
    /// Zone failure rate, per hour.
    pub lambda_zone: f64,
    /// Repair rate, bytes per hour.
    pub repair_bytes_per_hour: f64,
    /// Detection delay, hours.
    pub detect_hours: f64,
    /// Repair per state.
    pub mode: RepairMode,
}

/// The estimate for code `ec` holding `stripes` stripes on `layout`, whose
/// bytes were written with code `was` (bytes per server scale with the
/// code's overhead `(k + m) / k`).
pub fn estimate(
    ec: EcParams,
    was: EcParams,
    stripes: u64,
    layout: &Layout,
    rates: &Rates,
) -> Estimate {
    let (k, m) = (u32::from(ec.k), u32::from(ec.m));
    let n = k + m;
    let overhead = |e: EcParams| f64::from(u16::from(e.k) + u16::from(e.m)) / f64::from(e.k.max(1));
    let scale = overhead(ec) / overhead(was);
    let rebuild = |bytes: u64| {
        let b = bytes as f64 * scale;
        (rates.detect_hours + b / rates.repair_bytes_per_hour.max(f64::MIN_POSITIVE))
            .max(MIN_MTTR_HOURS)
    };
    let mttr = rebuild(layout.bytes_per_chunkserver);
    let chain = |n: u32| Chain {
        n,
        m,
        lambda: rates.lambda,
        mu: 1.0 / mttr,
        mode: rates.mode,
    };
    let stripe = chain(n).mttdl();
    let cluster = chain(layout.chunkservers).mttdl();
    let zones = layout.zones.max(1);
    let cap = m.max(n.div_ceil(zones));
    let spread = spread(n, zones);
    let survives = spread.iter().all(|&(c, _)| c <= m);
    let (independent, zone) = if stripes == 0 {
        (None, None)
    } else {
        let independent = (stripe / stripes as f64).max(cluster);
        let t_zone = rebuild(layout.bytes_fullest_zone);
        let p = -(-rates.lambda * t_zone).exp_m1();
        let zone_rate: f64 = spread
            .iter()
            .map(|&(c, zones_with_c)| {
                let per_stripe = if c > m {
                    1.0
                } else {
                    binomial_tail(n - c, m - c + 1, p)
                };
                f64::from(zones_with_c) * rates.lambda_zone * (stripes as f64 * per_stripe).min(1.0)
            })
            .sum();
        let zone = if zone_rate > 0.0 {
            1.0 / zone_rate
        } else {
            f64::INFINITY
        };
        (Some(independent), Some(zone))
    };
    let combined = match (independent, zone) {
        (Some(a), Some(b)) => Some(1.0 / (1.0 / a + 1.0 / b)),
        _ => None,
    };
    let years = |h: f64| h / HOURS_PER_YEAR;
    Estimate {
        k: ec.k,
        m: ec.m,
        zones,
        placeable: n <= layout.chunkservers,
        mttr_hours: mttr,
        stripe_mttdl_years: years(stripe),
        stripes,
        zone_cap: cap,
        survives_zone_loss: survives,
        independent_mttdl_years: independent.map(years),
        zone_mttdl_years: zone.map(years),
        mttdl_years: combined.map(years),
        loss_per_year: combined.map(loss_per_year).unwrap_or(0.0),
    }
}

/// The live inputs: what `cairn admin status` shows.
pub fn layout_of(c: &ClusterStatus) -> Layout {
    let live: Vec<_> = c
        .chunkservers
        .iter()
        .filter(|cs| cs.state != ChunkserverState::Down)
        .collect();
    let mut by_zone: BTreeMap<&str, u64> = BTreeMap::new();
    for cs in &live {
        *by_zone.entry(cs.zone.as_str()).or_insert(0) += cs.used;
    }
    let total: u64 = live.iter().map(|cs| cs.used).sum();
    let count = live.len() as u32;
    Layout {
        chunkservers: count,
        zones: by_zone.len() as u32,
        bytes_per_chunkserver: total / u64::from(count.max(1)),
        bytes_fullest_chunkserver: live.iter().map(|cs| cs.used).max().unwrap_or(0),
        bytes_fullest_zone: by_zone.values().copied().max().unwrap_or(0),
        bytes_total: total,
    }
}

/// The flags of `cairn admin durability`.
#[derive(clap::Args, Debug, Clone)]
pub struct DurabilityArgs {
    /// Yearly failure probability of one chunkserver (0.02 = 2%/year).
    #[arg(long, default_value_t = 0.02)]
    pub afr: f64,
    /// Yearly probability that a whole zone (rack, room) is lost.
    #[arg(long, default_value_t = 0.01)]
    pub zone_afr: f64,
    /// Cluster repair rate in MB/s to assume instead of the measured one
    /// (without it and without a measurement, 50 MB/s is assumed, and
    /// the report says so).
    #[arg(long)]
    pub repair_mbps: Option<f64>,
    /// Seconds before a silent chunkserver is marked down (the metadata
    /// nodes' `--chunkserver-down-secs`).
    #[arg(long, default_value_t = 30.0)]
    pub detect_secs: f64,
    /// Rebuild the lost shards of a stripe one at a time in the model
    /// (pessimistic) instead of all at once as the planner does.
    #[arg(long)]
    pub serial_repair: bool,
}

/// Builds the report from the cluster status and bucket list.
pub fn report(
    c: &ClusterStatus,
    buckets: &[BucketInfo],
    args: &DurabilityArgs,
) -> anyhow::Result<Report> {
    let prob = |name: &str, v: f64| {
        if v.is_finite() && v > 0.0 && v < 1.0 {
            Ok(v)
        } else {
            Err(anyhow::anyhow!(
                "--{name} must be a probability above 0 and below 1, not {v}"
            ))
        }
    };
    let afr = prob("afr", args.afr)?;
    let zone_afr = prob("zone-afr", args.zone_afr)?;
    if !(args.detect_secs.is_finite() && args.detect_secs >= 0.0) {
        anyhow::bail!("--detect-secs must be a non-negative number");
    }
    let measured = (c.repaired_bytes >= MIN_MEASURED_BYTES
        && c.repair_busy_secs >= MIN_MEASURED_SECS)
        .then(|| c.repaired_bytes as f64 / c.repair_busy_secs / 1e6);
    let (repair_mbps, source) = match (args.repair_mbps, measured) {
        (Some(v), _) if v.is_finite() && v > 0.0 => (v, "flag"),
        (Some(v), _) => anyhow::bail!("--repair-mbps must be above 0, not {v}"),
        (None, Some(v)) => (v, "measured"),
        (None, None) => (ASSUMED_REPAIR_MBPS, "assumed"),
    };
    let mode = if args.serial_repair {
        RepairMode::Serial
    } else {
        RepairMode::Parallel
    };
    let layout = layout_of(c);
    let rates = Rates {
        lambda: rate_per_hour(afr),
        lambda_zone: rate_per_hour(zone_afr),
        repair_bytes_per_hour: repair_mbps * 1e6 * 3600.0,
        detect_hours: args.detect_secs / 3600.0,
        mode,
    };
    let reprotect =
        rates.detect_hours + layout.bytes_fullest_chunkserver as f64 / rates.repair_bytes_per_hour;
    let mut out = Vec::new();
    for b in buckets {
        let usage = c.buckets.get(&b.name).cloned().unwrap_or_default();
        let ec = b.ec;
        let current = estimate(ec, ec, usage.stripes, &layout, &rates);
        let mut what_if = Vec::new();
        let mut alt = |change: String, e: EcParams, l: &Layout| {
            what_if.push(WhatIf {
                change,
                estimate: estimate(e, ec, usage.stripes, l, &rates),
            })
        };
        let codes = [
            (ec.k, ec.m.checked_add(1)),
            (ec.k, ec.m.checked_sub(1)),
            (ec.k.saturating_add(2), Some(ec.m)),
        ];
        for (k, m) in codes {
            if let Some(m) = m {
                let e = EcParams { k, m };
                if e != ec {
                    alt(format!("{k}+{m}"), e, &layout);
                }
            }
        }
        // A new zone as big as an average one; the same data spread over
        // one more zone.
        let zones = layout.zones.max(1);
        let per_zone = layout.chunkservers.div_ceil(zones);
        let grown = Layout {
            chunkservers: layout.chunkservers + per_zone,
            zones: zones + 1,
            bytes_per_chunkserver: layout.bytes_total
                / u64::from((layout.chunkservers + per_zone).max(1)),
            bytes_fullest_chunkserver: layout.bytes_fullest_chunkserver,
            bytes_fullest_zone: layout.bytes_total / u64::from(zones + 1),
            bytes_total: layout.bytes_total,
        };
        alt(
            format!("add a zone ({} chunkservers)", per_zone),
            ec,
            &grown,
        );
        out.push(BucketReport {
            bucket: b.name.clone(),
            objects: usage.objects,
            bytes: usage.bytes,
            current,
            what_if,
        });
    }
    Ok(Report {
        layout,
        assumptions: Assumptions {
            afr,
            zone_afr,
            repair_mbps,
            repair_rate_source: source.into(),
            measured_bytes: c.repaired_bytes,
            measured_secs: c.repair_busy_secs,
            detect_secs: args.detect_secs,
            repair_mode: mode,
            model: vec![
                "birth-death Markov chain per stripe, states 0..m+1 lost shards".into(),
                "chunkservers fail independently at -ln(1-AFR) per year".into(),
                "MTTR = detection delay + mean shard bytes per chunkserver / repair rate".into(),
                "a bucket's S stripes are S independent groups, bounded by the cluster's own m+1 concurrent losses".into(),
                "zone loss: all chunkservers of a zone at once; a stripe's shards spread evenly over the zones".into(),
            ],
        },
        reprotect_one_node_hours: reprotect,
        buckets: out,
    })
}

fn fmt_years(y: Option<f64>) -> String {
    match y {
        None => "no data at risk".into(),
        Some(y) if y.is_infinite() => "never".into(),
        Some(y) if y >= 1e6 => format!("{y:.2e} years"),
        Some(y) => format!("{y:.1} years"),
    }
}

fn print_estimate(label: &str, e: &Estimate) {
    println!(
        "  {label:<34} MTTDL {:<18} loss/year {:.2e}  stripe MTTDL {:.2e} y  MTTR {:.2} h  zone cap {}{}{}",
        fmt_years(e.mttdl_years),
        e.loss_per_year,
        e.stripe_mttdl_years,
        e.mttr_hours,
        e.zone_cap,
        if e.survives_zone_loss {
            ""
        } else {
            " (a zone loss loses data)"
        },
        if e.placeable {
            ""
        } else {
            " (not placeable: too few chunkservers)"
        },
    );
}

/// `cairn admin durability [--json]`.
pub async fn run(meta: &MetaClient, args: &DurabilityArgs, json: bool) -> anyhow::Result<()> {
    let c = meta.cluster_status().await?;
    let buckets = match meta
        .query(&Query::ListBuckets, Consistency::Linearizable)
        .await
        .context("listing buckets")?
    {
        QueryResult::Buckets(b) => b,
        QueryResult::Err(e) => anyhow::bail!("{e}"),
        other => anyhow::bail!("unexpected answer to ListBuckets: {other:?}"),
    };
    let r = report(&c, &buckets, args)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let a = &r.assumptions;
    let l = &r.layout;
    println!(
        "layout: {} chunkservers in {} zones, {:.1} MB of shards per chunkserver (fullest {:.1} MB)",
        l.chunkservers,
        l.zones,
        l.bytes_per_chunkserver as f64 / 1e6,
        l.bytes_fullest_chunkserver as f64 / 1e6
    );
    match a.repair_rate_source.as_str() {
        "measured" => println!(
            "repair rate: {:.1} MB/s, measured ({:.1} MB rebuilt in {:.1} s of repair since this leader's term began)",
            a.repair_mbps,
            a.measured_bytes as f64 / 1e6,
            a.measured_secs
        ),
        "flag" => println!("repair rate: {:.1} MB/s (--repair-mbps)", a.repair_mbps),
        _ => println!(
            "repair rate: {:.1} MB/s ASSUMED: no repair measured yet on this leader; give --repair-mbps for another figure",
            a.repair_mbps
        ),
    }
    println!(
        "assumptions: AFR {:.2}%/year per chunkserver, zone loss {:.2}%/year per zone, detection {} s, {:?} repair",
        a.afr * 100.0,
        a.zone_afr * 100.0,
        a.detect_secs,
        a.repair_mode
    );
    for m in &a.model {
        println!("  model: {m}");
    }
    println!(
        "time to re-protect after losing the fullest chunkserver: {:.2} h",
        r.reprotect_one_node_hours
    );
    for b in &r.buckets {
        println!(
            "bucket {} ({}+{}, {} objects, {} stripes):",
            b.bucket, b.current.k, b.current.m, b.objects, b.current.stripes
        );
        print_estimate("now", &b.current);
        for w in &b.what_if {
            print_estimate(&w.change, &w.estimate);
        }
    }
    if r.buckets.is_empty() {
        println!("no buckets");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn chain(n: u32, m: u32, lambda: f64, mu: f64, mode: RepairMode) -> Chain {
        Chain {
            n,
            m,
            lambda,
            mu,
            mode,
        }
    }

    /// 2+1 with lambda = 1, mu = 10, by hand: from state 0 the chain
    /// always goes to 1 (mean 1/3); from 1 it leaves after 1/12, to 0 with
    /// probability 10/12. So T0 = 1/3 + T1 and T1 = 1/12 + (10/12) T0:
    /// T0 = 1/3 + 1/12 + (10/12) T0, T0 / 6 = 5/12, T0 = 2.5.
    #[test]
    fn hand_computed_two_plus_one() {
        let c = chain(3, 1, 1.0, 10.0, RepairMode::Parallel);
        assert!((c.mttdl() - 2.5).abs() < 1e-12, "{}", c.mttdl());
        // Serial and parallel agree with one loss to repair.
        let s = chain(3, 1, 1.0, 10.0, RepairMode::Serial);
        assert!((s.mttdl() - 2.5).abs() < 1e-12);
    }

    /// 1+2 (n = 3, m = 2), lambda = 1, mu = 1, parallel, by hand:
    /// tau0 = 1/3; tau1 = (1 + 1 * 1/3) / 2 = 2/3; tau2 = (1 + 2 * 2/3) / 1
    /// = 7/3; MTTDL = 1/3 + 2/3 + 7/3 = 10/3. Serial: tau2 = 1 + 2/3 = 5/3,
    /// MTTDL = 8/3.
    #[test]
    fn hand_computed_one_plus_two() {
        let p = chain(3, 2, 1.0, 1.0, RepairMode::Parallel);
        assert!((p.mttdl() - 10.0 / 3.0).abs() < 1e-12, "{}", p.mttdl());
        let s = chain(3, 2, 1.0, 1.0, RepairMode::Serial);
        assert!((s.mttdl() - 8.0 / 3.0).abs() < 1e-12, "{}", s.mttdl());
    }

    /// For mu >> lambda the classic approximation holds:
    /// MTTDL ~ m! mu^m / (n (n-1) ... (n-m) lambda^(m+1)) (parallel).
    #[test]
    fn matches_the_classic_approximation_for_fast_repair() {
        let lambda = rate_per_hour(0.02);
        let mu = 1.0 / 10.0;
        let c = chain(6, 2, lambda, mu, RepairMode::Parallel);
        let approx = 2.0 * mu * mu / (6.0 * 5.0 * 4.0 * lambda.powi(3));
        let rel = (c.mttdl() - approx).abs() / approx;
        assert!(rel < 1e-3, "mttdl {} approx {approx} rel {rel}", c.mttdl());
    }

    /// A seeded Monte Carlo run of the same chains agrees with the closed
    /// form within 3% (20,000 histories: the standard error of an
    /// exponential-like mean is about 1/sqrt(20000) = 0.7%).
    #[test]
    fn monte_carlo_agrees_with_closed_form() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xca1a);
        for c in [
            chain(6, 2, 1.0, 8.0, RepairMode::Parallel),
            chain(6, 2, 1.0, 8.0, RepairMode::Serial),
            chain(9, 3, 1.0, 4.0, RepairMode::Parallel),
            chain(3, 1, 1.0, 10.0, RepairMode::Parallel),
        ] {
            let closed = c.mttdl();
            let sim = c.simulate(&mut rng, 20_000);
            let rel = (sim - closed).abs() / closed;
            assert!(rel < 0.03, "{c:?}: closed {closed} simulated {sim}");
        }
    }

    #[test]
    fn more_parity_and_faster_repair_help() {
        let base = chain(6, 2, 0.01, 1.0, RepairMode::Parallel).mttdl();
        assert!(chain(7, 3, 0.01, 1.0, RepairMode::Parallel).mttdl() > base);
        assert!(chain(6, 2, 0.01, 2.0, RepairMode::Parallel).mttdl() > base);
        assert!(chain(6, 2, 0.01, 1.0, RepairMode::Serial).mttdl() < base);
        assert!(chain(2, 2, 0.01, 1.0, RepairMode::Parallel)
            .mttdl()
            .is_infinite());
    }

    #[test]
    fn loss_probability_and_binomial() {
        assert!((loss_per_year(HOURS_PER_YEAR) - (1.0 - (-1.0f64).exp())).abs() < 1e-12);
        assert_eq!(loss_per_year(f64::INFINITY), 0.0);
        // P(X >= 2), X ~ Bin(3, 0.5) = (3 + 1) / 8.
        assert!((binomial_tail(3, 2, 0.5) - 0.5).abs() < 1e-12);
        assert_eq!(binomial_tail(3, 0, 0.1), 1.0);
        assert_eq!(binomial_tail(3, 4, 0.1), 0.0);
    }

    fn layout(chunkservers: u32, zones: u32) -> Layout {
        Layout {
            chunkservers,
            zones,
            bytes_per_chunkserver: 4_000_000_000_000,
            bytes_fullest_chunkserver: 4_000_000_000_000,
            bytes_fullest_zone: 4_000_000_000_000 * u64::from(chunkservers / zones),
            bytes_total: 4_000_000_000_000 * u64::from(chunkservers),
        }
    }

    fn rates() -> Rates {
        Rates {
            lambda: rate_per_hour(0.02),
            lambda_zone: rate_per_hour(0.01),
            repair_bytes_per_hour: 100e6 * 3600.0,
            detect_hours: 30.0 / 3600.0,
            mode: RepairMode::Parallel,
        }
    }

    #[test]
    fn spread_is_even() {
        assert_eq!(spread(6, 4), vec![(2, 2), (1, 2)]);
        assert_eq!(spread(6, 3), vec![(2, 3)]);
        assert_eq!(spread(6, 8), vec![(1, 6)]);
        assert_eq!(spread(6, 1), vec![(6, 1)]);
    }

    #[test]
    fn zones_and_stripes() {
        let ec = EcParams { k: 4, m: 2 };
        // 12 servers in 3 zones: cap 2 = m, survives a zone.
        let e = estimate(ec, ec, 1_000_000, &layout(12, 3), &rates());
        assert!(e.survives_zone_loss);
        assert_eq!(e.zone_cap, 2);
        // 2 zones: cap 3 > m, a zone loss loses data; MTTDL <= 1/(2 zone rate).
        let two = estimate(ec, ec, 1_000_000, &layout(6, 2), &rates());
        assert!(!two.survives_zone_loss);
        let bound = 1.0 / (2.0 * rates().lambda_zone) / HOURS_PER_YEAR;
        assert!(two.mttdl_years.is_some_and(|y| y <= bound));
        // More stripes, more risk, but never below the cluster floor.
        let few = estimate(ec, ec, 10, &layout(12, 3), &rates());
        assert!(few.independent_mttdl_years > e.independent_mttdl_years);
        assert!(estimate(ec, ec, 0, &layout(6, 3), &rates())
            .mttdl_years
            .is_none());
        let floor = Chain {
            n: 12,
            m: 2,
            lambda: rates().lambda,
            mu: 1.0 / e.mttr_hours,
            mode: RepairMode::Parallel,
        }
        .mttdl()
            / HOURS_PER_YEAR;
        let huge = estimate(ec, ec, u64::MAX / 2, &layout(12, 3), &rates());
        assert!((huge.independent_mttdl_years.unwrap_or(0.0) - floor).abs() / floor < 1e-9);
    }
}
