//! What a bench run measured and how it is printed.
//!
//! Every worker task records into its own [`OpStats`] (no shared lock on the
//! hot path); the runner merges them when a phase ends. Latencies go into an
//! HDR histogram in microseconds (1 µs to 1 hour, 3 significant digits:
//! percentiles are exact to 0.1%, memory is fixed at a few tens of KiB
//! whatever the number of operations). A [`Row`] is one phase of one
//! operation kind; a [`Report`] is the whole run: what ran, the rows, the
//! machine limits measured in the same process, and the object accounting
//! that lets a test check the cluster against the report.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::limits::Limits;

/// Largest latency the histogram records (longer ones are clamped): 1 hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct LatencyHist {
    h: Histogram<u64>,
}

impl Default for LatencyHist {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHist {
    /// An empty histogram.
    pub fn new() -> Self {
        // Constant bounds (1 µs ..= 1 h, 3 digits) that hdrhistogram always
        // accepts: no input reaches this.
        #[allow(clippy::expect_used)]
        let h = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
            .expect("constant histogram bounds are valid");
        LatencyHist { h }
    }

    /// Records one operation's latency.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros())
            .unwrap_or(MAX_LATENCY_US)
            .clamp(1, MAX_LATENCY_US);
        self.h.saturating_record(us);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &LatencyHist) {
        // Same bounds on both sides, so this cannot fail; if it ever did,
        // the merged percentiles would only miss `other`'s samples.
        let _ = self.h.add(&other.h);
    }

    /// Samples recorded.
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// The value at quantile `q` (0..=1) in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.h.is_empty() {
            return 0.0;
        }
        self.h.value_at_quantile(q.clamp(0.0, 1.0)) as f64 / 1e3
    }

    /// The summary printed in reports.
    pub fn summary(&self) -> Latency {
        Latency {
            p50_ms: self.quantile_ms(0.5),
            p90_ms: self.quantile_ms(0.9),
            p99_ms: self.quantile_ms(0.99),
            max_ms: if self.h.is_empty() {
                0.0
            } else {
                self.h.max() as f64 / 1e3
            },
            mean_ms: if self.h.is_empty() {
                0.0
            } else {
                self.h.mean() / 1e3
            },
        }
    }
}

/// Latency summary in milliseconds (of successful operations).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Worst.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// What one worker (or a merge of workers) saw for one operation kind.
#[derive(Debug, Clone, Default)]
pub struct OpStats {
    /// Successful operations.
    pub ops: u64,
    /// Payload bytes moved by successful operations.
    pub bytes: u64,
    /// Failed operations by kind (HTTP status and S3 code, or the client
    /// error's kind).
    pub errors: BTreeMap<String, u64>,
    /// Latencies of successful operations.
    pub latency: LatencyHist,
}

impl OpStats {
    /// Records a success.
    pub fn ok(&mut self, bytes: u64, took: Duration) {
        self.ops += 1;
        self.bytes += bytes;
        self.latency.record(took);
    }

    /// Records a failure of kind `kind`.
    pub fn err(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_insert(0) += 1;
    }

    /// Failed operations.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &OpStats) {
        self.ops += other.ops;
        self.bytes += other.bytes;
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_insert(0) += v;
        }
        self.latency.merge(&other.latency);
    }
}

/// One operation kind of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured: `put`, `get`, `delete`, `meta-commit`, ...
    pub op: String,
    /// Object size in bytes (0 for operations without a body).
    pub size: u64,
    /// Concurrent workers.
    pub concurrency: usize,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Failed operations by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Payload bytes moved.
    pub bytes: u64,
    /// Wall time of the phase.
    pub seconds: f64,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Payload MB/s (10^6 bytes).
    pub mbps: f64,
    /// Latency of successful operations.
    pub latency: Latency,
    /// Process CPU seconds (user + system) during the phase.
    pub cpu_seconds: f64,
    /// Process CPU seconds per GB (10^9 bytes) moved; 0 without payload.
    pub cpu_s_per_gb: f64,
    /// The machine limit this row is compared with, if one applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<LimitRef>,
}

/// A row's figure as a share of a machine limit.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LimitRef {
    /// Which limit (e.g. `min(copy+encode+BLAKE3, fsync write * k/(k+m))`).
    pub name: String,
    /// The limit, in the row's unit (MB/s, or operations/s for small
    /// objects).
    pub value: f64,
    /// The unit of `value`: `MB/s` or `ops/s`.
    pub unit: String,
    /// The row's figure as a percentage of `value`.
    pub percent: f64,
}

impl Row {
    /// Builds a row from merged stats. `cpu_seconds` is the process CPU
    /// time of the phase; in a phase mixing several kinds it is charged to
    /// each row in proportion to its bytes (or operations, without bytes).
    pub fn new(
        op: &str,
        size: u64,
        concurrency: usize,
        s: &OpStats,
        elapsed: Duration,
        cpu_seconds: f64,
    ) -> Row {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Row {
            op: op.to_string(),
            size,
            concurrency,
            ops: s.ops,
            errors: s.error_count(),
            errors_by_kind: s.errors.clone(),
            bytes: s.bytes,
            seconds: elapsed.as_secs_f64(),
            ops_per_sec: s.ops as f64 / secs,
            mbps: s.bytes as f64 / secs / 1e6,
            latency: s.latency.summary(),
            cpu_seconds,
            cpu_s_per_gb: if s.bytes > 0 {
                cpu_seconds / (s.bytes as f64 / 1e9)
            } else {
                0.0
            },
            limit: None,
        }
    }

    /// Compares this row with the matching machine limit: PUT with the
    /// single-core encode rate or the disk's fsync'd rate (whichever is
    /// lower; the disk writes (k+m)/k bytes per payload byte), GET with the
    /// single-core copy+BLAKE3 rate or loopback TCP, small-object PUTs (at
    /// most 64 KiB) in operations/s against one disk's 4 KiB
    /// write+fdatasync rate.
    pub fn compare(&mut self, l: &Limits) {
        let small = self.size > 0 && self.size <= 64 * 1024;
        let overhead = f64::from(l.ec.k + l.ec.m) / f64::from(l.ec.k.max(1));
        let (name, value, unit, figure) = match (self.op.as_str(), small) {
            // A small GET costs a metadata read and one shard read, no
            // fsync: no machine limit applies.
            ("get", true) => return,
            ("put", true) => (
                "4 KiB write+fdatasync per second".to_string(),
                l.fsync_per_sec,
                "ops/s",
                self.ops_per_sec,
            ),
            ("put", false) => {
                let disk = l.fsync_write_mbps / overhead;
                let cpu = l.put_cpu_gbps * 1e3;
                if cpu <= disk {
                    (
                        format!("single-core copy+encode+BLAKE3 {}", l.ec),
                        cpu,
                        "MB/s",
                        self.mbps,
                    )
                } else {
                    (
                        format!("fsync'd disk write / {overhead:.2}"),
                        disk,
                        "MB/s",
                        self.mbps,
                    )
                }
            }
            ("get", false) => {
                let cpu = l.get_cpu_gbps * 1e3;
                let tcp = l.loopback_tcp_gbps * 1e3;
                if cpu <= tcp || tcp <= 0.0 {
                    (
                        "single-core copy+BLAKE3".to_string(),
                        cpu,
                        "MB/s",
                        self.mbps,
                    )
                } else {
                    ("loopback TCP".to_string(), tcp, "MB/s", self.mbps)
                }
            }
            _ => return,
        };
        if value > 0.0 {
            self.limit = Some(LimitRef {
                name,
                value,
                unit: unit.to_string(),
                percent: figure / value * 100.0,
            });
        }
    }
}

/// Objects the run left behind and what cleanup did, so a caller can check
/// the cluster against the report.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Objects {
    /// Successful PUTs, including the untimed working set.
    pub written: u64,
    /// Successful DELETEs during the timed phases.
    pub deleted: u64,
    /// Objects in the bucket written by this run when the load ended
    /// (distinct keys written and not deleted).
    pub live: u64,
    /// Objects removed by the final cleanup (0 with `--keep`).
    pub cleaned: u64,
    /// Cleanup deletions that failed.
    pub cleanup_errors: u64,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `put`, `get`, `mixed` or `small`.
    pub mode: String,
    /// `s3` or `native`.
    pub target: String,
    /// The S3 endpoint, for S3 runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The bucket used.
    pub bucket: String,
    /// Whether this run created the bucket.
    pub bucket_created: bool,
    /// Whether objects (and the bucket) were kept.
    pub kept: bool,
    /// Object size in bytes.
    pub size: u64,
    /// Concurrent workers.
    pub concurrency: usize,
    /// Erasure coding asked for (`None`: the target's default).
    pub ec: Option<String>,
    /// One row per phase and operation kind.
    pub results: Vec<Row>,
    /// Failed operations over every row.
    pub errors: u64,
    /// Object accounting.
    pub objects: Objects,
    /// This machine's limits, measured in the same process.
    pub limits: Option<Limits>,
}

impl Report {
    /// Sums the rows' errors into `errors`.
    pub fn finish(&mut self) {
        self.errors = self.results.iter().map(|r| r.errors).sum();
        if let Some(l) = &self.limits {
            for r in &mut self.results {
                r.compare(l);
            }
        }
    }

    /// The human-readable table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "cairn bench {} against {}{}: bucket {}{}, {} x {}, ec {}\n",
            self.mode,
            self.target,
            self.endpoint
                .as_deref()
                .map(|e| format!(" {e}"))
                .unwrap_or_default(),
            self.bucket,
            if self.kept { " (kept)" } else { "" },
            self.concurrency,
            super::human(self.size),
            self.ec.as_deref().unwrap_or("default"),
        ));
        out.push_str(&rows_table(&self.results));
        let o = &self.objects;
        out.push_str(&format!(
            "objects: {} written, {} deleted, {} live at the end, {} cleaned up{}\n",
            o.written,
            o.deleted,
            o.live,
            o.cleaned,
            if o.cleanup_errors > 0 {
                format!(", {} cleanup errors", o.cleanup_errors)
            } else {
                String::new()
            }
        ));
        if let Some(l) = &self.limits {
            out.push_str(&super::limits::limits_table(l));
        }
        out
    }
}

/// The rows as an aligned table, with errors by kind and the share of the
/// limit under each row that has them.
pub fn rows_table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<12} {:>5} {:>8} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "op",
        "conc",
        "ops",
        "errors",
        "ops/s",
        "MB/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "cpu s/GB"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<12} {:>5} {:>8} {:>6} {:>10.1} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
            format!("{}-{}", r.op, super::human(r.size)),
            r.concurrency,
            r.ops,
            r.errors,
            r.ops_per_sec,
            r.mbps,
            r.latency.p50_ms,
            r.latency.p90_ms,
            r.latency.p99_ms,
            r.latency.max_ms,
            r.cpu_s_per_gb
        ));
        for (kind, n) in &r.errors_by_kind {
            out.push_str(&format!("{:<12}   error {kind}: {n}\n", ""));
        }
        if let Some(l) = &r.limit {
            out.push_str(&format!(
                "{:<12}   = {:.0}% of {} ({:.0} {})\n",
                "", l.percent, l.name, l.value, l.unit
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_metadata::types::EcParams;

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut h = LatencyHist::new();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 1000);
        // 3 significant digits: within 0.1% (+ one bucket).
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.002 + 0.001;
        assert!(near(h.quantile_ms(0.5), 500.0), "{}", h.quantile_ms(0.5));
        assert!(near(h.quantile_ms(0.9), 900.0), "{}", h.quantile_ms(0.9));
        assert!(near(h.quantile_ms(0.99), 990.0), "{}", h.quantile_ms(0.99));
        let s = h.summary();
        assert!(near(s.max_ms, 1000.0), "{}", s.max_ms);
        assert!(near(s.mean_ms, 500.5), "{}", s.mean_ms);
    }

    #[test]
    fn empty_histogram_is_zero_and_extremes_clamp() {
        let h = LatencyHist::new();
        assert_eq!(h.summary(), Latency::default());
        let mut h = LatencyHist::new();
        h.record(Duration::ZERO);
        h.record(Duration::from_secs(10 * 3600));
        assert_eq!(h.count(), 2);
        assert!(h.quantile_ms(0.0) <= 0.002);
        assert!((h.summary().max_ms - 3_600_000.0).abs() < 3_600_000.0 * 0.001);
    }

    #[test]
    fn merging_adds_samples_and_errors() {
        let mut a = OpStats::default();
        let mut b = OpStats::default();
        for _ in 0..10 {
            a.ok(100, Duration::from_millis(1));
        }
        for _ in 0..30 {
            b.ok(100, Duration::from_millis(9));
        }
        a.err("503 SlowDown");
        b.err("503 SlowDown");
        b.err("timeout");
        a.merge(&b);
        assert_eq!(a.ops, 40);
        assert_eq!(a.bytes, 4000);
        assert_eq!(a.error_count(), 3);
        assert_eq!(a.errors["503 SlowDown"], 2);
        assert_eq!(a.latency.count(), 40);
        // 10 of 40 samples are 1 ms: the median is 9 ms.
        assert!((a.latency.quantile_ms(0.5) - 9.0).abs() < 0.02);
        assert!((a.latency.quantile_ms(0.2) - 1.0).abs() < 0.01);
    }

    fn limits() -> Limits {
        Limits {
            ec: EcParams::default(),
            memcpy_gbps: 8.0,
            blake3_gbps: 4.0,
            encode_gbps: 10.0,
            put_cpu_gbps: 2.0,
            get_cpu_gbps: 3.0,
            loopback_tcp_gbps: 6.0,
            fsync_write_mbps: 1500.0,
            fsync_per_sec: 4000.0,
        }
    }

    #[test]
    fn rows_report_rates_and_limits() {
        let mut s = OpStats::default();
        for _ in 0..100 {
            s.ok(10_000_000, Duration::from_millis(50));
        }
        s.err("500 InternalError");
        let mut r = Row::new("put", 10_000_000, 4, &s, Duration::from_secs(2), 1.0);
        assert_eq!(r.ops, 100);
        assert_eq!(r.errors, 1);
        assert!((r.ops_per_sec - 50.0).abs() < 1e-9);
        assert!((r.mbps - 500.0).abs() < 1e-9);
        assert!((r.cpu_s_per_gb - 1.0).abs() < 1e-9);
        r.compare(&limits());
        // min(2000 MB/s encode, 1500 / 1.5 = 1000 MB/s disk) = disk.
        let l = r.limit.clone().expect("limit");
        assert!((l.value - 1000.0).abs() < 1e-9);
        assert!((l.percent - 50.0).abs() < 1e-9);

        let mut g = Row::new("get", 10_000_000, 4, &s, Duration::from_secs(2), 1.0);
        g.compare(&limits());
        assert!((g.limit.expect("limit").value - 3000.0).abs() < 1e-9);

        let mut small = Row::new("put", 4096, 16, &s, Duration::from_secs(1), 0.1);
        small.compare(&limits());
        let l = small.limit.expect("limit");
        assert_eq!(l.unit, "ops/s");
        assert!((l.percent - 2.5).abs() < 1e-9);
        let mut small_get = Row::new("get", 4096, 16, &s, Duration::from_secs(1), 0.1);
        small_get.compare(&limits());
        assert!(small_get.limit.is_none());

        let mut d = Row::new("delete", 0, 4, &s, Duration::from_secs(1), 0.1);
        d.compare(&limits());
        assert!(d.limit.is_none());
    }

    #[test]
    fn report_json_shape() {
        let mut s = OpStats::default();
        s.ok(4096, Duration::from_millis(2));
        s.ok(4096, Duration::from_millis(4));
        s.err("404 NoSuchKey");
        let mut rep = Report {
            mode: "small".into(),
            target: "s3".into(),
            endpoint: Some("http://127.0.0.1:7900".into()),
            bucket: "bench-x".into(),
            bucket_created: true,
            kept: true,
            size: 4096,
            concurrency: 16,
            ec: Some("4+2".into()),
            results: vec![
                Row::new("put", 4096, 16, &s, Duration::from_secs(1), 0.5),
                Row::new(
                    "get",
                    4096,
                    16,
                    &OpStats::default(),
                    Duration::from_secs(1),
                    0.5,
                ),
            ],
            errors: 0,
            objects: Objects {
                written: 2,
                live: 2,
                ..Default::default()
            },
            limits: Some(limits()),
        };
        rep.finish();
        assert_eq!(rep.errors, 1);
        let v = serde_json::to_value(&rep).expect("json");
        assert_eq!(v["mode"], "small");
        assert_eq!(v["errors"], 1);
        assert_eq!(v["objects"]["written"], 2);
        assert_eq!(v["objects"]["live"], 2);
        let rows = v["results"].as_array().expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["ops"], 2);
        assert_eq!(rows[0]["errors_by_kind"]["404 NoSuchKey"], 1);
        assert_eq!(rows[0]["bytes"], 8192);
        assert!(rows[0]["latency"]["p99_ms"].as_f64().expect("p99") >= 3.9);
        assert!(rows[0]["limit"]["percent"].is_f64());
        assert_eq!(rows[1]["ops"], 0);
        assert_eq!(rows[1]["latency"]["max_ms"], 0.0);
        assert_eq!(v["limits"]["ec"]["k"], 4);
        let table = rep.to_table();
        assert!(table.contains("put-4KiB"), "{table}");
        assert!(table.contains("error 404 NoSuchKey: 1"), "{table}");
    }
}
