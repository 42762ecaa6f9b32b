//! Operations endpoints every role serves: Prometheus metrics on
//! [`METRICS_PATH`] and the load-balancer probes [`LIVE_PATH`] and
//! [`READY_PATH`], plus the process metrics (RSS, open fds) every role
//! exports.
//!
//! Metrics are kept in a `prometheus-client` [`Registry`] built once at
//! start-up by the role's composition root; values that are cheap to read
//! at scrape time (disk space, Raft state, cached cluster status) are set
//! right before encoding, so a scrape never scans the metadata.
//!
//! The endpoints need no cluster secret and expose no secret: only GET (or
//! HEAD) on the exact paths is answered here; the role's own API keeps
//! requiring the secret.

use http::{HeaderValue, Method, Request, Response, StatusCode};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::net::{self, Body};

/// Prometheus metrics, OpenMetrics text format.
pub const METRICS_PATH: &str = "/metrics";
/// Liveness: 200 while the process serves HTTP at all.
pub const LIVE_PATH: &str = "/health/live";
/// Readiness: 200 when the role can do its work, 503 (with the reason)
/// when not.
pub const READY_PATH: &str = "/health/ready";

/// The content type `prometheus-client`'s text encoder produces.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label sets of Cairn's metric families: (name, value) pairs.
pub type Labels = Vec<(String, String)>;

/// Which operations endpoint a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpsEndpoint {
    /// `GET /metrics`.
    Metrics,
    /// `GET /health/live`.
    Live,
    /// `GET /health/ready`.
    Ready,
}

/// The operations endpoint `req` asks for: the exact path (no query), with
/// GET or HEAD. Anything else is the role's own API.
pub fn ops_endpoint<B>(req: &Request<B>) -> Option<OpsEndpoint> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    if req.uri().query().is_some() {
        return None;
    }
    match req.uri().path() {
        METRICS_PATH => Some(OpsEndpoint::Metrics),
        LIVE_PATH => Some(OpsEndpoint::Live),
        READY_PATH => Some(OpsEndpoint::Ready),
        _ => None,
    }
}

/// Encodes `registry` as the reply to a scrape.
pub fn encode(registry: &Registry) -> Response<Body> {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
        return net::error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal",
            &format!("cannot encode metrics: {e}"),
        );
    }
    let mut r = Response::new(net::full(text));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}

/// The reply to `/health/live`.
pub fn live() -> Response<Body> {
    health_reply(StatusCode::OK, "live", None)
}

/// The reply to `/health/ready`: 200 `{"status":"ready"}`, or 503
/// `{"status":"not ready","reason":...}`.
pub fn ready(verdict: Result<(), String>) -> Response<Body> {
    match verdict {
        Ok(()) => health_reply(StatusCode::OK, "ready", None),
        Err(why) => health_reply(StatusCode::SERVICE_UNAVAILABLE, "not ready", Some(why)),
    }
}

fn health_reply(status: StatusCode, word: &str, reason: Option<String>) -> Response<Body> {
    let mut v = serde_json::json!({ "status": word });
    if let Some(r) = reason {
        v["reason"] = serde_json::Value::String(r);
    }
    let mut r = net::json_response(status, &v);
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}

/// Latency buckets in seconds: 0.5 ms to about 33 s, doubling.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// Size buckets (counts): 1 to 4096, doubling.
pub fn count_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// The label set `[(name, value)]`.
pub fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Process metrics read from `/proc/self` at scrape time.
#[derive(Debug, Default)]
pub struct ProcessMetrics {
    rss: Gauge,
    fds: Gauge,
    max_fds: Gauge,
    threads: Gauge,
}

impl ProcessMetrics {
    /// Registers the process metrics (`process_*`, the names Prometheus
    /// client libraries use) in `reg`.
    pub fn register(reg: &mut Registry) -> ProcessMetrics {
        let m = ProcessMetrics::default();
        reg.register_with_unit(
            "process_resident_memory",
            "Resident set size",
            Unit::Bytes,
            m.rss.clone(),
        );
        reg.register("process_open_fds", "Open file descriptors", m.fds.clone());
        reg.register(
            "process_max_fds",
            "File descriptor limit (soft)",
            m.max_fds.clone(),
        );
        reg.register("process_threads", "OS threads", m.threads.clone());
        m
    }

    /// Reads `/proc/self` (a few small files; no-op where it is absent).
    pub fn refresh(&self) {
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            for line in status.lines() {
                let num = |v: &str| -> i64 {
                    v.split_whitespace()
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0)
                };
                if let Some(v) = line.strip_prefix("VmRSS:") {
                    self.rss.set(num(v).saturating_mul(1024));
                } else if let Some(v) = line.strip_prefix("Threads:") {
                    self.threads.set(num(v));
                }
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The count includes the descriptor read_dir itself holds.
            self.fds.set(dir.count().saturating_sub(1) as i64);
        }
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            if let Some(soft) = limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<i64>().ok())
            {
                self.max_fds.set(soft);
            }
        }
    }
}

/// A metadata node's metrics. Raft values come from openraft's
/// `RaftMetrics`; the cluster values (objects, stripes by remaining
/// redundancy, repair and GC queues) are the leader's cached
/// `ClusterStatus` (the planner's last summary and table lengths), set
/// only while this node leads: nothing here scans the objects.
#[derive(Debug)]
pub struct MetaMetrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Process RSS and fds.
    pub process: ProcessMetrics,
    /// Raft term.
    pub term: Gauge,
    /// The leader's node id (0: none known).
    pub leader: Gauge,
    /// 1 on the leader.
    pub is_leader: Gauge,
    /// Index of the last log entry.
    pub last_log_index: Gauge,
    /// Index of the last applied entry.
    pub applied_index: Gauge,
    /// Highest index a quorum of voters holds (the leader's view).
    pub commit_index: Gauge,
    /// Index of the last snapshot.
    pub snapshot_index: Gauge,
    /// Log entries kept (last index - purged index).
    pub log_entries: Gauge,
    /// Applied entries not yet in a snapshot.
    pub entries_since_snapshot: Gauge,
    /// Voters in the membership.
    pub voters: Gauge,
    /// Time from proposing a log entry to its commit and apply.
    pub commit_latency: Histogram,
    /// Client writes per proposed log entry (group commit).
    pub batch_size: Histogram,
    /// Objects (leader only).
    pub objects: Gauge,
    /// Logical bytes stored (leader only).
    pub bytes: Gauge,
    /// Stripes by remaining redundancy (leader only).
    pub stripes: prometheus_client::metrics::family::Family<Labels, Gauge>,
    /// Chunkservers by state (leader only).
    pub chunkservers: prometheus_client::metrics::family::Family<Labels, Gauge>,
    /// Repairs waiting (leader only).
    pub repair_queue: Gauge,
    /// Repairs dispatched and not yet reported (leader only).
    pub repairs_in_flight: Gauge,
    /// Repairs committed since this node became leader (leader only).
    pub repairs_done: Gauge,
    /// Shards queued for deletion (leader only).
    pub gc_pending: Gauge,
    /// Orphans in their grace period (leader only).
    pub orphans_pending: Gauge,
    /// The data dir's file system size (label `dir`), named as the
    /// chunkserver's so one alert covers both roles.
    pub disk_capacity: prometheus_client::metrics::family::Family<Labels, Gauge>,
    /// The data dir's free bytes (label `dir`).
    pub disk_free: prometheus_client::metrics::family::Family<Labels, Gauge>,
    /// The data dir's reserve (label `dir`).
    pub disk_reserve: prometheus_client::metrics::family::Family<Labels, Gauge>,
    /// 1 while the data dir is below its reserve and writes are refused.
    pub storage_full: Gauge,
}

impl Default for MetaMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl MetaMetrics {
    /// Builds and registers every metric.
    pub fn new() -> MetaMetrics {
        let mut reg = Registry::default();
        let process = ProcessMetrics::register(&mut reg);
        let m = MetaMetrics {
            process,
            term: Gauge::default(),
            leader: Gauge::default(),
            is_leader: Gauge::default(),
            last_log_index: Gauge::default(),
            applied_index: Gauge::default(),
            commit_index: Gauge::default(),
            snapshot_index: Gauge::default(),
            log_entries: Gauge::default(),
            entries_since_snapshot: Gauge::default(),
            voters: Gauge::default(),
            commit_latency: latency_histogram(),
            batch_size: count_histogram(),
            objects: Gauge::default(),
            bytes: Gauge::default(),
            stripes: Default::default(),
            chunkservers: Default::default(),
            repair_queue: Gauge::default(),
            repairs_in_flight: Gauge::default(),
            repairs_done: Gauge::default(),
            gc_pending: Gauge::default(),
            orphans_pending: Gauge::default(),
            disk_capacity: Default::default(),
            disk_free: Default::default(),
            disk_reserve: Default::default(),
            storage_full: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut reg;
        r.register("cairn_raft_term", "Raft term", m.term.clone());
        r.register(
            "cairn_raft_leader_id",
            "Node id of the Raft leader this node knows (0: none)",
            m.leader.clone(),
        );
        r.register(
            "cairn_raft_is_leader",
            "1 on the Raft leader",
            m.is_leader.clone(),
        );
        r.register(
            "cairn_raft_last_log_index",
            "Index of the last Raft log entry",
            m.last_log_index.clone(),
        );
        r.register(
            "cairn_raft_applied_index",
            "Index of the last applied Raft log entry",
            m.applied_index.clone(),
        );
        r.register(
            "cairn_raft_commit_index",
            "Highest log index a quorum of voters holds (exported by the leader)",
            m.commit_index.clone(),
        );
        r.register(
            "cairn_raft_snapshot_index",
            "Log index of the last snapshot",
            m.snapshot_index.clone(),
        );
        r.register(
            "cairn_raft_log_entries",
            "Raft log entries kept (last index minus purged index)",
            m.log_entries.clone(),
        );
        r.register(
            "cairn_raft_entries_since_snapshot",
            "Applied entries not yet covered by a snapshot",
            m.entries_since_snapshot.clone(),
        );
        r.register(
            "cairn_raft_voters",
            "Voters in the membership",
            m.voters.clone(),
        );
        r.register_with_unit(
            "cairn_meta_commit_duration",
            "Time from proposing a log entry to its commit and apply",
            Unit::Seconds,
            m.commit_latency.clone(),
        );
        r.register(
            "cairn_meta_commit_batch_size",
            "Client writes per proposed log entry",
            m.batch_size.clone(),
        );
        r.register("cairn_objects", "Objects (leader only)", m.objects.clone());
        r.register_with_unit(
            "cairn_object",
            "Logical bytes of all objects (leader only)",
            Unit::Bytes,
            m.bytes.clone(),
        );
        r.register(
            "cairn_stripes",
            "Stripes by remaining redundancy, label redundancy (leader only, from the last plan)",
            m.stripes.clone(),
        );
        r.register(
            "cairn_chunkservers",
            "Chunkservers by state (leader only)",
            m.chunkservers.clone(),
        );
        r.register(
            "cairn_repair_queue",
            "Repairs waiting (leader only)",
            m.repair_queue.clone(),
        );
        r.register(
            "cairn_repairs_in_flight",
            "Repairs dispatched and not yet reported (leader only)",
            m.repairs_in_flight.clone(),
        );
        r.register(
            "cairn_repairs_done",
            "Repairs committed since this node became leader (leader only)",
            m.repairs_done.clone(),
        );
        r.register(
            "cairn_gc_pending",
            "Shards queued for deletion (leader only)",
            m.gc_pending.clone(),
        );
        r.register(
            "cairn_orphans_pending",
            "Orphan shards in their grace period (leader only)",
            m.orphans_pending.clone(),
        );
        r.register_with_unit(
            "cairn_disk_capacity",
            "Size of the file system of the metadata data dir",
            Unit::Bytes,
            m.disk_capacity.clone(),
        );
        r.register_with_unit(
            "cairn_disk_free",
            "Free bytes of the file system of the metadata data dir",
            Unit::Bytes,
            m.disk_free.clone(),
        );
        r.register_with_unit(
            "cairn_disk_reserve",
            "Free bytes the metadata node keeps: below them writes are refused",
            Unit::Bytes,
            m.disk_reserve.clone(),
        );
        r.register(
            "cairn_metadata_storage_full",
            "1 while the metadata data dir is below its reserve (writes refused with 507)",
            m.storage_full.clone(),
        );
        MetaMetrics { registry: reg, ..m }
    }

    /// Sets the data dir's space gauges (`None`: statvfs failed, they are
    /// cleared).
    pub fn set_disk(&self, dir: &str, st: Option<crate::types::DiskStatus>) {
        self.disk_capacity.clear();
        self.disk_free.clear();
        self.disk_reserve.clear();
        let Some(st) = st else {
            self.storage_full.set(0);
            return;
        };
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let l = labels([("dir", dir)]);
        self.disk_capacity.get_or_create(&l).set(i(st.capacity));
        self.disk_free.get_or_create(&l).set(i(st.free));
        self.disk_reserve.get_or_create(&l).set(i(st.reserve));
        self.storage_full.set(i64::from(st.full));
    }

    /// Sets the leader-only cluster values from `st`, or clears them
    /// (`None`: this node does not lead).
    pub fn set_cluster(&self, st: Option<&crate::types::ClusterStatus>) {
        self.stripes.clear();
        self.chunkservers.clear();
        let Some(st) = st else {
            for g in [
                &self.objects,
                &self.bytes,
                &self.repair_queue,
                &self.repairs_in_flight,
                &self.repairs_done,
                &self.gc_pending,
                &self.orphans_pending,
            ] {
                g.set(0);
            }
            return;
        };
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.objects.set(i(st.objects));
        self.bytes.set(i(st.bytes));
        for (r, n) in &st.redundancy {
            self.stripes
                .get_or_create(&labels([("redundancy", &r.to_string())]))
                .set(i(*n));
        }
        for cs in &st.chunkservers {
            let state = format!("{:?}", cs.state).to_ascii_lowercase();
            self.chunkservers
                .get_or_create(&labels([("state", &state)]))
                .inc();
        }
        self.repair_queue.set(i(st.repair_queue));
        self.repairs_in_flight.set(i(st.repairs_in_flight));
        self.repairs_done.set(i(st.repairs_done));
        self.gc_pending.set(i(st.gc_pending));
        self.orphans_pending.set(i(st.orphans_pending));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_paths_are_exact_gets() {
        let r = |m: Method, u: &str| Request::builder().method(m).uri(u).body(()).unwrap();
        assert_eq!(
            ops_endpoint(&r(Method::GET, "/metrics")),
            Some(OpsEndpoint::Metrics)
        );
        assert_eq!(
            ops_endpoint(&r(Method::HEAD, "/health/ready")),
            Some(OpsEndpoint::Ready)
        );
        assert_eq!(ops_endpoint(&r(Method::PUT, "/metrics")), None);
        assert_eq!(ops_endpoint(&r(Method::GET, "/metrics/x")), None);
        assert_eq!(ops_endpoint(&r(Method::GET, "/metrics?list-type=2")), None);
        assert_eq!(ops_endpoint(&r(Method::GET, "/health")), None);
    }

    #[test]
    fn process_metrics_encode() {
        let mut reg = Registry::default();
        let p = ProcessMetrics::register(&mut reg);
        p.refresh();
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &reg).unwrap();
        assert!(s.contains("process_resident_memory_bytes "), "{s}");
        let fds: i64 = s
            .lines()
            .find_map(|l| l.strip_prefix("process_open_fds "))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(fds >= 3, "{s}");
    }
}
