//! Metrics of the chunkserver role ([`ServerMetrics`], served on its
//! `/metrics`) and of the shard client other roles use
//! ([`ShardClientMetrics`], exported by the S3 gateway: latency and errors
//! of every shard PUT and GET, per chunkserver).

use std::time::Instant;

use cairn_metadata::metrics::{labels, latency_histogram, Labels, ProcessMetrics};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// A family of histograms built by [`latency_histogram`].
pub type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// A new [`HistogramFamily`].
pub fn histogram_family() -> HistogramFamily {
    Family::new_with_constructor(latency_histogram as fn() -> Histogram)
}

/// A chunkserver's metrics. Disk, scrub and repair values are read at
/// scrape time from the store, the scrubber and the repair executor.
#[derive(Debug)]
pub struct ServerMetrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Process RSS and fds.
    pub process: ProcessMetrics,
    /// API requests by method and status.
    pub requests: Family<Labels, Counter>,
    /// API request latency (to the response headers) by method.
    pub duration: HistogramFamily,
    /// Per data dir: file system size.
    pub disk_capacity: Family<Labels, Gauge>,
    /// Per data dir: free bytes of the file system.
    pub disk_free: Family<Labels, Gauge>,
    /// Per data dir: bytes of stored shards.
    pub disk_used: Family<Labels, Gauge>,
    /// Per data dir: shards stored.
    pub disk_shards: Family<Labels, Gauge>,
    /// Per data dir: 1 when it was taken out of service (device failure).
    pub disk_failed: Family<Labels, Gauge>,
    /// Scrub: shards checked in the current (or last) pass.
    pub scrub_scanned_shards: Gauge,
    /// Scrub: shards to check in the pass.
    pub scrub_total_shards: Gauge,
    /// Scrub: bytes checked in the pass.
    pub scrub_scanned_bytes: Gauge,
    /// Scrub: corrupt or missing shards found since start.
    pub scrub_corrupt: Gauge,
    /// Scrub: 1 while a pass runs.
    pub scrub_running: Gauge,
    /// Scrub: 1 while paused.
    pub scrub_paused: Gauge,
    /// Scrub: end of the last full pass, Unix seconds (0: never).
    pub scrub_last_full_pass: Gauge,
    /// Repair tasks running now.
    pub repair_running: Gauge,
    /// Repair tasks accepted and not finished.
    pub repair_accepted: Gauge,
    /// Bytes of shards rebuilt and stored since start.
    pub repair_rebuilt: Gauge,
    /// Repair tasks failed since start.
    pub repair_failed: Gauge,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerMetrics {
    /// Builds and registers every metric.
    pub fn new() -> ServerMetrics {
        let mut r = Registry::default();
        let m = ServerMetrics {
            process: ProcessMetrics::register(&mut r),
            requests: Family::default(),
            duration: histogram_family(),
            disk_capacity: Family::default(),
            disk_free: Family::default(),
            disk_used: Family::default(),
            disk_shards: Family::default(),
            disk_failed: Family::default(),
            scrub_scanned_shards: Gauge::default(),
            scrub_total_shards: Gauge::default(),
            scrub_scanned_bytes: Gauge::default(),
            scrub_corrupt: Gauge::default(),
            scrub_running: Gauge::default(),
            scrub_paused: Gauge::default(),
            scrub_last_full_pass: Gauge::default(),
            repair_running: Gauge::default(),
            repair_accepted: Gauge::default(),
            repair_rebuilt: Gauge::default(),
            repair_failed: Gauge::default(),
            registry: Registry::default(),
        };
        r.register(
            "cairn_chunkserver_requests",
            "Shard API requests by method and status",
            m.requests.clone(),
        );
        r.register_with_unit(
            "cairn_chunkserver_request_duration",
            "Shard API latency to the response headers, by method",
            Unit::Seconds,
            m.duration.clone(),
        );
        r.register_with_unit(
            "cairn_disk_capacity",
            "Size of the file system of each data dir",
            Unit::Bytes,
            m.disk_capacity.clone(),
        );
        r.register_with_unit(
            "cairn_disk_free",
            "Free bytes of the file system of each data dir",
            Unit::Bytes,
            m.disk_free.clone(),
        );
        r.register_with_unit(
            "cairn_disk_used",
            "Bytes of shards stored in each data dir",
            Unit::Bytes,
            m.disk_used.clone(),
        );
        r.register(
            "cairn_disk_shards",
            "Shards stored in each data dir",
            m.disk_shards.clone(),
        );
        r.register(
            "cairn_disk_failed",
            "1 when a data dir was taken out of service after its device failed (EIO, read-only file system)",
            m.disk_failed.clone(),
        );
        r.register(
            "cairn_scrub_scanned_shards",
            "Shards checked in the current or last scrub pass",
            m.scrub_scanned_shards.clone(),
        );
        r.register(
            "cairn_scrub_total_shards",
            "Shards the scrub pass covers",
            m.scrub_total_shards.clone(),
        );
        r.register_with_unit(
            "cairn_scrub_scanned",
            "Bytes checked in the current or last scrub pass",
            Unit::Bytes,
            m.scrub_scanned_bytes.clone(),
        );
        r.register(
            "cairn_scrub_corrupt_shards",
            "Corrupt or missing shards the scrubber found since start",
            m.scrub_corrupt.clone(),
        );
        r.register(
            "cairn_scrub_running",
            "1 while a scrub pass runs",
            m.scrub_running.clone(),
        );
        r.register(
            "cairn_scrub_paused",
            "1 while scrubbing is paused",
            m.scrub_paused.clone(),
        );
        r.register(
            "cairn_scrub_last_full_pass_timestamp_seconds",
            "End of the last full scrub pass, Unix time (0: never)",
            m.scrub_last_full_pass.clone(),
        );
        r.register(
            "cairn_repair_tasks_running",
            "Repair tasks running on this chunkserver",
            m.repair_running.clone(),
        );
        r.register(
            "cairn_repair_tasks_accepted",
            "Repair tasks accepted and not yet finished",
            m.repair_accepted.clone(),
        );
        r.register_with_unit(
            "cairn_repair_rebuilt",
            "Bytes of shards rebuilt and stored here since start",
            Unit::Bytes,
            m.repair_rebuilt.clone(),
        );
        r.register(
            "cairn_repair_tasks_failed",
            "Repair tasks that failed here since start",
            m.repair_failed.clone(),
        );
        ServerMetrics { registry: r, ..m }
    }
}

/// Client-side metrics of shard calls: count by chunkserver, operation and
/// result, and latency by chunkserver and operation. Share one per process
/// ([`crate::client::ShardClient::with_metrics`]).
#[derive(Debug)]
pub struct ShardClientMetrics {
    calls: Family<Labels, Counter>,
    duration: HistogramFamily,
    bytes: Family<Labels, Counter>,
}

impl Default for ShardClientMetrics {
    fn default() -> Self {
        ShardClientMetrics {
            calls: Family::default(),
            duration: histogram_family(),
            bytes: Family::default(),
        }
    }
}

impl ShardClientMetrics {
    /// Registers the families in `reg` (`cairn_shard_client_*`).
    pub fn register(reg: &mut Registry) -> ShardClientMetrics {
        let m = ShardClientMetrics::default();
        reg.register(
            "cairn_shard_client_calls",
            "Shard calls by chunkserver, op (put, get) and result (ok or the error kind)",
            m.calls.clone(),
        );
        reg.register_with_unit(
            "cairn_shard_client_duration",
            "Shard call latency by chunkserver and op",
            Unit::Seconds,
            m.duration.clone(),
        );
        reg.register_with_unit(
            "cairn_shard_client",
            "Shard payload bytes moved by chunkserver and op",
            Unit::Bytes,
            m.bytes.clone(),
        );
        m
    }

    /// Records one call to `addr` that started at `started`.
    pub fn record(&self, addr: &str, op: &str, started: Instant, result: &str, bytes: u64) {
        self.calls
            .get_or_create(&labels([
                ("chunkserver", addr),
                ("op", op),
                ("result", result),
            ]))
            .inc();
        self.duration
            .get_or_create(&labels([("chunkserver", addr), ("op", op)]))
            .observe(started.elapsed().as_secs_f64());
        if bytes > 0 {
            self.bytes
                .get_or_create(&labels([("chunkserver", addr), ("op", op)]))
                .inc_by(bytes);
        }
    }
}
