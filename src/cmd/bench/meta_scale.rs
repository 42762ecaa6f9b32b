//! `cairn bench meta-scale`: what the metadata service costs per operation
//! as the number of objects grows (issue "Metadata v2").
//!
//! Against a scratch metadata cluster (no chunkservers needed:
//! `scripts/meta-scale.sh` starts one), it
//! 1. registers `--chunkservers` synthetic chunkservers, each its own zone,
//!    and heartbeats for them once a second (empty data-dir lists, so the
//!    leader never asks them to check shards; the commands it sends are
//!    ignored, and no chunkserver address is ever dialled: commands ride
//!    heartbeat replies);
//! 2. loads `--objects` synthetic 4+2 manifests (90 % one stripe, 10 % 2 to
//!    16) through the real write path (`/v1/write`, group commit), each
//!    stripe's six shards on six distinct chunkservers;
//! 3. times, one operation at a time: a PUT commit, a HEAD
//!    (linearizable `GetObject`), a ListObjectsV2 page of 1,000 from a
//!    random key, the check of one 10,000-shard inventory page, and a
//!    snapshot build on the leader (`/v1/admin/snapshot`);
//! 4. stops one chunkserver's heartbeats and times, from the moment it is
//!    marked down, how long the planner takes to queue every shard it held.
//!
//! The bucket and the synthetic chunkservers are left behind (deleting
//! millions of rows costs as much as loading them): run it only against a
//! cluster made for it, which `--scratch` confirms.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_metadata::client::{Consistency, MetaClient, MetaClientOptions};
use cairn_metadata::types::*;
use rand::Rng;
use serde::Serialize;

use super::report::{Latency, LatencyHist};
use crate::config::ConnArgs;

/// Flags of `cairn bench meta-scale`.
#[derive(clap::Args, Debug, Clone)]
pub struct MetaScaleArgs {
    /// Objects to load.
    #[arg(long, default_value_t = 100_000)]
    pub objects: u64,
    /// Synthetic chunkservers (6 to 64), one zone each.
    #[arg(long, default_value_t = 12)]
    pub chunkservers: u16,
    /// Writes in flight while loading (group commit batches them).
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Samples of each timed operation (LIST pages: a tenth of it).
    #[arg(long, default_value_t = 1000)]
    pub samples: u64,
    /// Skip the lost-chunkserver measurement.
    #[arg(long)]
    pub no_lost: bool,
    /// Confirms the target is a scratch cluster: the run leaves its bucket
    /// and synthetic chunkservers behind.
    #[arg(long, required = true)]
    pub scratch: bool,
}

/// Shard size of the synthetic objects (4 MiB stripes at 4+2).
const SHARD_SIZE: u32 = 1 << 20;

/// Objects of at most this many stripes.
const MAX_STRIPES: u64 = 16;

/// Shards in one inventory page (what a chunkserver posts).
const INVENTORY_PAGE: usize = 10_000;

/// What a run measured (`--json` prints it).
#[derive(Debug, Serialize)]
pub struct MetaScaleReport {
    /// Objects loaded.
    pub objects: u64,
    /// Stripes loaded.
    pub stripes: u64,
    /// Synthetic chunkservers.
    pub chunkservers: u16,
    /// Load rate, objects per second.
    pub load_objects_per_sec: f64,
    /// Seconds the load took.
    pub load_secs: f64,
    /// One PUT commit (one-stripe manifest), one at a time.
    pub put: Latency,
    /// HEAD (linearizable `GetObject`) of a random key.
    pub head: Latency,
    /// ListObjectsV2 page of 1,000 after a random key.
    pub list_page: Latency,
    /// One 10,000-shard inventory page check.
    pub inventory_page: Latency,
    /// Seconds the leader took to build a snapshot of the whole state.
    pub snapshot_build_secs: f64,
    /// Shards placed on the chunkserver that is then lost.
    pub lost_shards: u64,
    /// Seconds from its down mark until the planner had queued all of them
    /// (`None`: not measured).
    pub lost_find_secs: Option<f64>,
    /// Seconds from its last heartbeat to its down mark.
    pub down_mark_secs: Option<f64>,
}

/// Runs `cairn bench meta-scale`.
pub async fn run(conn: &ConnArgs, a: MetaScaleArgs, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        (6..=64).contains(&a.chunkservers),
        "--chunkservers must be 6 to 64"
    );
    anyhow::ensure!(a.objects >= 1, "--objects must be at least 1");
    anyhow::ensure!(
        (1..=4096).contains(&a.concurrency),
        "--concurrency must be 1 to 4096"
    );
    anyhow::ensure!(a.samples >= 10, "--samples must be at least 10");
    let (addrs, secret) = conn.resolve()?;
    let meta = Arc::new(MetaClient::new(
        addrs.clone(),
        secret.clone(),
        MetaClientOptions {
            retry_deadline: Duration::from_secs(120),
            ..Default::default()
        },
    ));

    // 1. Synthetic chunkservers.
    let fleet = Fleet::register(meta.clone(), a.chunkservers).await?;
    eprintln!("registered {} synthetic chunkservers", fleet.ids.len());

    // 2. Load.
    let bucket = format!("scale-{}", hex::encode(rand::random::<[u8; 4]>()));
    match meta
        .write(&Command::CreateBucket {
            bucket: BucketInfo {
                name: bucket.clone(),
                ec: EcParams::default(),
                shard_size: SHARD_SIZE,
                created_ms: 0,
                owner: String::new(),
            },
        })
        .await?
    {
        CommandResult::Ok => {}
        other => anyhow::bail!("cannot create bucket {bucket}: {other:?}"),
    }
    let lost_cs = fleet.ids[0];
    let inv_cs = fleet.ids[1];
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let bar = indicatif::ProgressBar::new(a.objects);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "loading {pos}/{len} objects {per_sec} eta {eta} {wide_bar}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut workers = Vec::new();
    for _ in 0..a.concurrency {
        let (meta, bucket, next, counts, ids, bar) = (
            meta.clone(),
            bucket.clone(),
            next.clone(),
            counts.clone(),
            fleet.ids.clone(),
            bar.clone(),
        );
        let total = a.objects;
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                let stripes = {
                    let mut rng = rand::rng();
                    if rng.random_ratio(9, 10) {
                        1
                    } else {
                        rng.random_range(2..=MAX_STRIPES)
                    }
                };
                let m = synthetic(stripes, &ids, &counts, lost_cs, inv_cs);
                put(&meta, &bucket, &key_of(i), m).await?;
                bar.inc(1);
            }
        }));
    }
    for w in workers {
        w.await.context("load worker")??;
    }
    bar.finish_and_clear();
    let load_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "loaded {} objects ({} stripes) in {load_secs:.1} s",
        a.objects,
        counts.stripes.load(Ordering::Relaxed)
    );

    // 3. One operation at a time.
    let mut put_h = LatencyHist::new();
    for i in 0..a.samples {
        let m = synthetic(1, &fleet.ids, &counts, lost_cs, inv_cs);
        let t = Instant::now();
        put(&meta, &bucket, &format!("put-{i:08}"), m).await?;
        put_h.record(t.elapsed());
    }
    let mut head_h = LatencyHist::new();
    for _ in 0..a.samples {
        let key = key_of(rand::rng().random_range(0..a.objects));
        let t = Instant::now();
        match meta
            .query(
                &Query::GetObject {
                    bucket: bucket.clone(),
                    key: key.clone(),
                },
                Consistency::Linearizable,
            )
            .await?
        {
            QueryResult::Object(_) => head_h.record(t.elapsed()),
            other => anyhow::bail!("HEAD {key}: {other:?}"),
        }
    }
    let mut list_h = LatencyHist::new();
    for _ in 0..(a.samples / 10).max(10) {
        let after = key_of(rand::rng().random_range(0..a.objects));
        let t = Instant::now();
        match meta
            .query(
                &Query::ListObjects(ListRequest {
                    bucket: bucket.clone(),
                    start_after: Some(after.clone()),
                    max_keys: 1000,
                    ..Default::default()
                }),
                Consistency::Linearizable,
            )
            .await?
        {
            QueryResult::List(_) => list_h.record(t.elapsed()),
            other => anyhow::bail!("LIST after {after}: {other:?}"),
        }
    }
    let inventory = counts.inventory_sample();
    let mut inv_h = LatencyHist::new();
    if !inventory.is_empty() {
        for round in 0..(a.samples / 50).max(10) {
            let page = InventoryPage {
                id: inv_cs,
                round: 1_000_000 + round,
                shards: inventory.clone(),
                last: false,
            };
            let t = Instant::now();
            let reply = meta.inventory(&page).await?;
            inv_h.record(t.elapsed());
            anyhow::ensure!(
                reply.queued == 0 && reply.pending == 0,
                "the inventory check called named shards orphans: {reply:?}"
            );
        }
    }
    let leader = leader_client(&meta, &secret).await?;
    let t = Instant::now();
    leader.snapshot().await.context("snapshot build")?;
    let snapshot_build_secs = t.elapsed().as_secs_f64();

    // 4. A lost chunkserver.
    let lost_shards = counts.lost.load(Ordering::Relaxed);
    let (mut lost_find_secs, mut down_mark_secs) = (None, None);
    if !a.no_lost {
        eprintln!("stopping chunkserver {lost_cs}'s heartbeats ({lost_shards} shards)");
        let silent = Instant::now();
        fleet.silence(lost_cs);
        loop {
            let down = match meta
                .query(&Query::ListChunkservers, Consistency::Linearizable)
                .await?
            {
                QueryResult::Chunkservers(list) => list
                    .iter()
                    .any(|c| c.id == lost_cs && c.state == ChunkserverState::Down),
                other => anyhow::bail!("list chunkservers: {other:?}"),
            };
            if down {
                break;
            }
            anyhow::ensure!(
                silent.elapsed() < Duration::from_secs(3600),
                "chunkserver {lost_cs} not marked down within an hour"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let marked = Instant::now();
        down_mark_secs = Some(silent.elapsed().as_secs_f64());
        let deadline = Duration::from_secs(4 * 3600);
        loop {
            let s = meta.cluster_status().await?;
            if s.repair_queue + s.repairs_in_flight >= lost_shards {
                break;
            }
            anyhow::ensure!(
                marked.elapsed() < deadline,
                "the planner queued {} of {lost_shards} lost shards in {deadline:?}",
                s.repair_queue + s.repairs_in_flight
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        lost_find_secs = Some(marked.elapsed().as_secs_f64());
    }
    fleet.stop();

    let report = MetaScaleReport {
        objects: a.objects,
        stripes: counts.stripes.load(Ordering::Relaxed),
        chunkservers: a.chunkservers,
        load_objects_per_sec: a.objects as f64 / load_secs.max(1e-9),
        load_secs,
        put: put_h.summary(),
        head: head_h.summary(),
        list_page: list_h.summary(),
        inventory_page: inv_h.summary(),
        snapshot_build_secs,
        lost_shards,
        lost_find_secs,
        down_mark_secs,
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", table(&report));
    }
    Ok(())
}

/// The key of the `i`-th loaded object.
fn key_of(i: u64) -> String {
    format!("obj/{i:010}")
}

/// Commits one manifest; any outcome but `Ok` is an error.
async fn put(meta: &MetaClient, bucket: &str, key: &str, m: ObjectManifest) -> anyhow::Result<()> {
    match meta
        .write(&Command::PutObject {
            bucket: bucket.to_string(),
            key: key.to_string(),
            manifest: m,
            condition: PutCondition::None,
        })
        .await?
    {
        CommandResult::Ok => Ok(()),
        other => anyhow::bail!("PUT {key}: {other:?}"),
    }
}

/// Shard counts the measurements need.
#[derive(Default)]
struct Counts {
    stripes: AtomicU64,
    /// Shards on the chunkserver that will be lost.
    lost: AtomicU64,
    /// Up to one page of shards on the inventory chunkserver.
    inventory: std::sync::Mutex<Vec<InventoryEntry>>,
}

impl Counts {
    fn inventory_sample(&self) -> Vec<InventoryEntry> {
        self.inventory.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

/// A 4+2 manifest of `stripes` full stripes, each shard on a distinct
/// chunkserver of `ids` (one zone each).
fn synthetic(
    stripes: u64,
    ids: &[ChunkserverId],
    counts: &Counts,
    lost_cs: ChunkserverId,
    inv_cs: ChunkserverId,
) -> ObjectManifest {
    let ec = EcParams::default();
    let width = usize::from(ec.k) + usize::from(ec.m);
    let stripe_len = u64::from(SHARD_SIZE) * u64::from(ec.k);
    let mut rng = rand::rng();
    let mut out = Vec::with_capacity(stripes as usize);
    for _ in 0..stripes {
        let chosen = rand::seq::index::sample(&mut rng, ids.len(), width.min(ids.len()));
        let shards: Vec<ShardLoc> = chosen
            .iter()
            .map(|i| ShardLoc {
                chunkserver: Some(ids[i]),
                shard: ShardId::random(),
                blake3: Hash32(rng.random()),
            })
            .collect();
        for s in &shards {
            if s.chunkserver == Some(lost_cs) {
                counts.lost.fetch_add(1, Ordering::Relaxed);
            }
            if s.chunkserver == Some(inv_cs) {
                if let Ok(mut g) = counts.inventory.lock() {
                    if g.len() < INVENTORY_PAGE {
                        g.push(InventoryEntry {
                            shard: s.shard,
                            age_ms: 0,
                        });
                    }
                }
            }
        }
        out.push(StripeManifest {
            id: StripeId::random(),
            len: stripe_len,
            shards,
        });
    }
    counts.stripes.fetch_add(stripes, Ordering::Relaxed);
    ObjectManifest {
        version: StripeId::random(),
        size: stripe_len * stripes,
        etag: hex::encode(rng.random::<[u8; 16]>()),
        content_type: None,
        headers: Default::default(),
        user_meta: Default::default(),
        checksums: Default::default(),
        created_ms: 0,
        ec,
        shard_size: SHARD_SIZE,
        stripes: out,
        parts: Vec::new(),
        inline: None,
        tags: Default::default(),
    }
}

/// A client of the current leader only (a snapshot is built where asked).
async fn leader_client(meta: &MetaClient, secret: &str) -> anyhow::Result<MetaClient> {
    let s = meta.status().await?;
    let leader = s.leader.context("no leader")?;
    let addr = s
        .voters
        .get(&leader)
        .or_else(|| s.learners.get(&leader))
        .context("leader address unknown")?;
    Ok(MetaClient::new(
        vec![addr.clone()],
        secret.to_string(),
        MetaClientOptions {
            request_timeout: Duration::from_secs(3600),
            retry_deadline: Duration::from_secs(3600),
            ..Default::default()
        },
    ))
}

/// The synthetic chunkservers and their heartbeat task.
struct Fleet {
    ids: Vec<ChunkserverId>,
    silenced: Arc<std::sync::Mutex<Vec<ChunkserverId>>>,
    stop: Arc<AtomicBool>,
}

impl Fleet {
    /// Registers `n` chunkservers (first heartbeats) and keeps them alive.
    async fn register(meta: Arc<MetaClient>, n: u16) -> anyhow::Result<Fleet> {
        let run = hex::encode(rand::random::<[u8; 3]>());
        let mut reqs = Vec::new();
        for i in 0..n {
            let mut req = HeartbeatRequest {
                id: None,
                // Distinct, never dialled (the metadata service never calls
                // a chunkserver).
                addr: format!("127.0.0.1:{}", 1 + i),
                zone: format!("scale-{run}-{i}"),
                capacity: 1 << 50,
                free: 1 << 50,
                used: 0,
                shard_count: 0,
                bad_shards: Vec::new(),
                deleted: Vec::new(),
                repairs: Vec::new(),
                repairs_running: 0,
                scrub: None,
                data_dirs: Vec::new(),
            };
            let r = meta.heartbeat(&req).await?;
            req.id = Some(r.id);
            reqs.push(req);
        }
        let ids = reqs.iter().filter_map(|r| r.id).collect();
        let silenced = Arc::new(std::sync::Mutex::new(Vec::<ChunkserverId>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2) = (silenced.clone(), stop.clone());
        tokio::spawn(async move {
            while !st2.load(Ordering::Relaxed) {
                let quiet = s2.lock().map(|g| g.clone()).unwrap_or_default();
                let active: Vec<&HeartbeatRequest> = reqs
                    .iter()
                    .filter(|r| !r.id.is_some_and(|id| quiet.contains(&id)))
                    .collect();
                let beats =
                    futures::future::join_all(active.into_iter().map(|r| meta.heartbeat(r)));
                // A failed heartbeat is retried on the next tick; a long
                // outage shows up as a down mark in the results.
                let _ = beats.await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Ok(Fleet {
            ids,
            silenced,
            stop,
        })
    }

    fn silence(&self, id: ChunkserverId) {
        if let Ok(mut g) = self.silenced.lock() {
            g.push(id);
        }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn table(r: &MetaScaleReport) -> String {
    let lat = |name: &str, l: &Latency| {
        format!(
            "{name:<22} p50 {:>9.3} ms  p99 {:>9.3} ms  max {:>9.3} ms\n",
            l.p50_ms, l.p99_ms, l.max_ms
        )
    };
    let mut s = format!(
        "objects {} ({} stripes) on {} chunkservers; load {:.0} objects/s ({:.1} s)\n",
        r.objects, r.stripes, r.chunkservers, r.load_objects_per_sec, r.load_secs
    );
    s += &lat("PUT commit", &r.put);
    s += &lat("HEAD", &r.head);
    s += &lat("LIST page of 1000", &r.list_page);
    s += &lat("inventory page 10000", &r.inventory_page);
    s += &format!("snapshot build         {:.2} s\n", r.snapshot_build_secs);
    match (r.down_mark_secs, r.lost_find_secs) {
        (Some(d), Some(f)) => {
            s += &format!(
                "lost chunkserver       {} shards: down mark after {d:.1} s, all queued {f:.1} s later\n",
                r.lost_shards
            )
        }
        _ => s += "lost chunkserver       not measured\n",
    }
    s
}
