//! Network fault campaigns against one chunkserver (issue 16, network
//! faults) on the multi-host harness: cut off from the metadata service
//! but not from the gateway, the reverse, deaf (drops its input only), and
//! a flapping link, while the `faults.rs` workload runs through the
//! gateway. Besides the shared checks (linearizable history, every
//! acknowledged write reads back identical, no wrong bytes, every failure
//! a 503 within the client's deadline, convergence, no panic), each
//! campaign bounds the repair work to what its fault justifies, counted by
//! the chunkservers' repair executors (`cairn_repair_rebuilt_bytes`, so a
//! leader change cannot hide a storm), and checks that after healing every
//! stripe is at full redundancy with nothing queued, the GC queue drains
//! and the placement audit is clean.

use std::time::Duration;

use anyhow::{bail, Context};
use cairn_metadata::client::Consistency;
use cairn_metadata::types::*;

use crate::cluster::{assert_placement_clean, now_ms, wait_for};
use crate::faults::{
    body_of, check_record, converged, fault_secs, rebuilt_bytes, wait_full, Workload, BUCKET, KEYS,
    MAX_SHARD,
};
use crate::netns::{assert_no_panics, get_same, put_ok, Host, HostCluster, Net};

/// Full redundancy of the workload's 2+1 stripes.
const FULL: i32 = 1;

/// The metadata flags of these campaigns: a silent chunkserver is Down
/// after 4 s (a campaign's fault lasts long enough to see repairs start,
/// yet a loaded 2-core machine does not flap healthy ones), a repair task
/// that was not reported is forgotten after 20 s, and replaced shards are
/// deleted 20 s after they were queued: longer than any read takes (at
/// most the 10 s shard timeout on the unreachable server, then parity),
/// so a GET that read a manifest just before an overwrite still finds its
/// shards, as with the default delay; with `FAST_META`'s 0 such a read
/// fails when the overwrite's GC wins the race, which is not what these
/// campaigns test.
const META_FLAGS: &[&str] = &[
    "--chunkserver-down-secs",
    "4",
    "--repair-task-timeout-secs",
    "20",
    "--gc-delay-secs",
    "20",
];

/// A running campaign: cluster, workload, and the chunkserver under test.
struct Campaign {
    hc: HostCluster,
    wl: Workload,
    /// Index of the chunkserver the faults hit (process and host).
    victim: usize,
    /// Its id.
    victim_id: ChunkserverId,
    /// An erasure-coded object whose first data shard is on the victim.
    probe: (String, Vec<u8>),
}

impl Campaign {
    /// Starts a cluster, the bucket and the workload, writes the probe
    /// object and picks the victim: the holder of its data shard 0, so a
    /// read of it that cannot reach the victim must decode from parity.
    async fn start(net: &Net) -> anyhow::Result<Campaign> {
        let hc = HostCluster::start(net, META_FLAGS).await?;
        hc.s3.create_bucket(BUCKET, "2+1").await?;
        let body = body_of(KEYS, "probe");
        put_ok(&hc.s3, BUCKET, "probe", &body, Duration::from_secs(30)).await?;
        let q = Query::GetObject {
            bucket: BUCKET.into(),
            key: "probe".into(),
        };
        let m = match hc
            .cluster
            .meta()
            .query(&q, Consistency::Linearizable)
            .await?
        {
            QueryResult::Object(m) => m,
            other => bail!("probe manifest: {other:?}"),
        };
        let victim_id = m
            .stripes
            .first()
            .and_then(|s| s.shards.first())
            .and_then(|l| l.chunkserver)
            .context("probe has no placed data shard 0")?;
        let victim = hc.cluster.proc_of(victim_id).await?;
        eprintln!("victim: chunkserver {victim_id} (process {victim})");
        let wl = Workload::start(hc.s3.clone());
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(Campaign {
            hc,
            wl,
            victim,
            victim_id,
            probe: ("probe".into(), body),
        })
    }

    fn host<'n>(&self, net: &'n Net) -> anyhow::Result<&'n Host> {
        net.hosts.chunkserver(self.victim)
    }

    /// The victim's state in the leader's view.
    async fn victim_state(&self) -> anyhow::Result<ChunkserverState> {
        let st = self.hc.cluster.meta().cluster_status().await?;
        st.chunkservers
            .iter()
            .find(|c| c.id == self.victim_id)
            .map(|c| c.state)
            .context("victim not registered")
    }

    /// Waits until the leader sees the victim in `state`.
    async fn wait_state(&self, state: ChunkserverState, secs: u64) -> anyhow::Result<()> {
        wait_for(&format!("victim {state:?}"), secs, || async {
            Ok((self.victim_state().await? == state).then_some(()))
        })
        .await
    }

    /// GETs the probe through the gateway: one attempt, which must return
    /// every byte right; returns how long it took.
    async fn read_probe(&self) -> anyhow::Result<Duration> {
        let t = std::time::Instant::now();
        let r = self.hc.s3.get(BUCKET, &self.probe.0).await?;
        if r.status != hyper::StatusCode::OK || r.cut.is_some() || r.body != self.probe.1 {
            bail!(
                "probe GET: {} {:?}, {} bytes (cut {:?}), want {} identical bytes",
                r.status,
                r.code(),
                r.body.len(),
                r.cut,
                self.probe.1.len()
            );
        }
        Ok(t.elapsed())
    }

    /// Writes of erasure-coded bodies invoked so far (the probe included):
    /// each placed at most one shard of its stripe on the victim, so with
    /// only the victim failing, at most that many shards can need a
    /// rebuild.
    fn ec_writes(&self) -> u64 {
        self.wl.count(|o| o.ec_write()) as u64 + 1
    }

    /// After healing: waits for full redundancy with every chunkserver Up,
    /// stops the workload, checks the history, that repair stays quiet,
    /// the GC queue drains, the metadata nodes converge, the placement
    /// audit is clean and no log shows a panic. Returns the bytes rebuilt
    /// over the whole campaign.
    async fn finish(self, healed_ms: u64) -> anyhow::Result<u64> {
        let c = &self.hc.cluster;
        wait_full(c, FULL, healed_ms, 90).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let start = self.wl.start;
        let rec = self.wl.finish().await?;
        // One chunkserver failing leaves two shards of every stripe: every
        // GET must be answered (200, or 404 for a deleted register).
        let failed: Vec<_> = rec
            .outcomes
            .iter()
            .filter(|o| o.what.starts_with("GET"))
            .filter(|o| {
                !matches!(
                    o.status,
                    Some(hyper::StatusCode::OK | hyper::StatusCode::NOT_FOUND)
                )
            })
            .collect();
        if !failed.is_empty() {
            bail!("reads failed with one chunkserver unreachable: {failed:#?}");
        }
        check_record(&self.hc.s3, start, rec).await?;
        get_same(
            &self.hc.s3,
            BUCKET,
            &self.probe.0,
            &self.probe.1,
            Duration::from_secs(30),
        )
        .await?;
        // Quiet: with nothing damaged, nothing more is rebuilt.
        let settled = now_ms();
        let rebuilt = rebuilt_bytes(c).await?;
        let st = wait_full(c, FULL, settled, 60).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let again = rebuilt_bytes(c).await?;
        if again != rebuilt {
            bail!("repair kept running with nothing damaged: {rebuilt} -> {again} bytes");
        }
        eprintln!(
            "after healing: redundancy {:?}, repairs done {} (leader's count), {rebuilt} bytes rebuilt",
            st.redundancy, st.repairs_done
        );
        wait_for("GC queue drained", 60, || async {
            let st = c.meta().cluster_status().await?;
            Ok((st.gc_pending == 0).then_some(()))
        })
        .await?;
        converged(c, true).await?;
        let stripes = assert_placement_clean(c)?;
        eprintln!("placement audit clean over {stripes} stripes");
        assert_no_panics(self.hc.procs())?;
        Ok(rebuilt)
    }
}

/// Issue 16: a chunkserver cut off (nftables) from every metadata node
/// but not from the gateway, while the workload runs: its heartbeats stop,
/// so it turns Down and its shards are rebuilt elsewhere, once each (the
/// bytes rebuilt stay within one shard per erasure-coded write), while the
/// gateway keeps reading from it; after healing it comes back Up, its
/// stale copies are deleted, every stripe is at full redundancy and repair
/// goes quiet.
#[test]
fn chunkserver_cut_from_metadata() -> anyhow::Result<()> {
    let net = Net::new(3, 4)?;
    net.run(|| async {
        let cp = Campaign::start(&net).await?;
        let victim = cp.host(&net)?;
        let metas: Vec<&Host> = net.hosts.metas.iter().collect();
        net.partition(&[victim], &metas)?;
        let cut = cp.wl.now();
        cp.wait_state(ChunkserverState::Down, 20).await?;
        eprintln!("victim Down {:?} after the cut", cp.wl.now() - cut);
        let took = cp.read_probe().await?;
        eprintln!("probe read while the victim is Down: {took:?}");
        // Its shards are rebuilt on the others while it stays cut off.
        let rebuilt = wait_for("a rebuild of the victim's shards", 30, || async {
            let b = rebuilt_bytes(&cp.hc.cluster).await?;
            Ok((b > 0).then_some(b))
        })
        .await?;
        let rest = fault_secs(12).saturating_sub(cp.wl.now() - cut);
        tokio::time::sleep(rest).await;
        let until = cp.wl.now();
        let acked = cp.wl.acked_between(cut, until);
        let reads = cp.wl.ec_reads_between(cut, until);
        eprintln!(
            "{acked} PUTs acknowledged, {reads} EC GETs answered while cut off; {rebuilt} bytes rebuilt by then"
        );
        assert!(acked > 0, "writes must continue");
        assert!(reads > 0, "reads must continue");
        let bound = cp.ec_writes() * MAX_SHARD;
        net.heal()?;
        let healed = now_ms();
        cp.wait_state(ChunkserverState::Up, 20).await?;
        let total = cp.finish(healed).await?;
        assert!(
            total <= bound,
            "repair storm: {total} bytes rebuilt, at most {bound} (one shard per erasure-coded write) justified"
        );
        Ok(())
    })
}

/// Issue 16: a chunkserver the metadata service reaches but the gateway
/// does not: it stays Up (its heartbeats arrive), writes placed on it are
/// re-placed, reads of its shards decode from parity (the probe, whose
/// data shard 0 it holds, reads back at once), and since nothing was lost
/// nothing is rebuilt.
#[test]
fn chunkserver_cut_from_gateway() -> anyhow::Result<()> {
    let net = Net::new(3, 4)?;
    net.run(|| async {
        let cp = Campaign::start(&net).await?;
        let victim = cp.host(&net)?;
        net.partition(&[victim], &[&net.hosts.gateway])?;
        let cut = cp.wl.now();
        let took = cp.read_probe().await?;
        eprintln!("probe read from parity: {took:?}");
        let rest = fault_secs(12).saturating_sub(cp.wl.now() - cut);
        tokio::time::sleep(rest).await;
        let took = cp.read_probe().await?;
        eprintln!("probe read from parity at the end: {took:?}");
        let until = cp.wl.now();
        let acked = cp.wl.acked_between(cut, until);
        let reads = cp.wl.ec_reads_between(cut, until);
        eprintln!("{acked} PUTs acknowledged, {reads} EC GETs answered while cut off");
        assert!(acked > 0, "writes must continue");
        assert!(reads > 0, "reads must continue");
        let state = cp.victim_state().await?;
        assert_eq!(
            state,
            ChunkserverState::Up,
            "its heartbeats still arrive: it must stay Up"
        );
        net.heal()?;
        let healed = now_ms();
        let total = cp.finish(healed).await?;
        assert_eq!(
            total, 0,
            "nothing was lost, yet {total} bytes of shards were rebuilt"
        );
        Ok(())
    })
}

/// Issue 16: a chunkserver that can send but not receive (nftables drops
/// its input from every host) for 8 s, then, after healing, its link
/// flapping: down 2 s (under the down mark) and 6 s (over it) in turn, up
/// 3 s in between, for `CAIRN_FAULT_SECS` (default 20). Reads decode from
/// parity meanwhile, writes continue, and a server that keeps coming back
/// costs at most one rebuild per erasure-coded write: no repair storm.
#[test]
fn chunkserver_deaf_then_flapping() -> anyhow::Result<()> {
    let net = Net::new(3, 4)?;
    net.run(|| async {
        let cp = Campaign::start(&net).await?;
        let victim = cp.host(&net)?.clone();
        let others = net.others(&victim);
        let others: Vec<&Host> = others.iter().collect();

        // Deaf: the victim's SYNs and requests go out, nothing comes back.
        net.deafen(&victim, &others)?;
        let cut = cp.wl.now();
        let took = cp.read_probe().await?;
        eprintln!("probe read while the victim is deaf: {took:?}");
        cp.wait_state(ChunkserverState::Down, 20).await?;
        tokio::time::sleep(Duration::from_secs(8).saturating_sub(cp.wl.now() - cut)).await;
        let until = cp.wl.now();
        let acked = cp.wl.acked_between(cut, until);
        eprintln!("{acked} PUTs acknowledged while the victim was deaf");
        assert!(acked > 0, "writes must continue");
        net.heal()?;
        let healed = now_ms();
        cp.wait_state(ChunkserverState::Up, 20).await?;
        wait_full(&cp.hc.cluster, FULL, healed, 60).await?;

        // Flapping.
        let start = cp.wl.now();
        let downs = [Duration::from_secs(2), Duration::from_secs(6)];
        let flaps = net
            .flap(&victim, &downs, Duration::from_secs(3), fault_secs(20))
            .await?;
        let until = cp.wl.now();
        let acked = cp.wl.acked_between(start, until);
        let reads = cp.wl.ec_reads_between(start, until);
        eprintln!("{flaps} flaps: {acked} PUTs acknowledged, {reads} EC GETs answered");
        assert!(acked > 0, "writes must continue while the link flaps");
        assert!(reads > 0, "reads must continue while the link flaps");
        let bound = cp.ec_writes() * MAX_SHARD;
        net.heal()?;
        let healed = now_ms();
        let total = cp.finish(healed).await?;
        assert!(
            total <= bound,
            "repair storm: {total} bytes rebuilt, at most {bound} (one shard per erasure-coded write) justified"
        );
        Ok(())
    })
}
