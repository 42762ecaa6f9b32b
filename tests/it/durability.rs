//! `cairn admin durability --json` on a live cluster: before any repair it
//! says the repair rate is assumed; the numbers are sane (finite MTTDL,
//! a yearly loss probability in (0, 1), more parity helps, less hurts);
//! after a chunkserver is lost and rebuilt, the rate is the measured one.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cairn_client::PutOptions;
use cairn_metadata::types::*;
use serde_json::Value;

use crate::cluster::{Cluster, Opts};
use crate::common::data;

const BUCKET: &str = "dur";
/// 64 KiB shards: 12 MiB of objects make 48 stripes, about 2.25 MiB of
/// shards per chunkserver (enough rebuilt bytes for a measured rate).
const SHARD: u32 = 64 * 1024;

fn durability(c: &Cluster, extra: &[&str]) -> anyhow::Result<Value> {
    let mut args = vec!["admin", "durability", "--json"];
    args.extend_from_slice(extra);
    let out = c.cli(&args)?;
    if !out.status.success() {
        bail!(
            "cairn admin durability failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("durability --json is not JSON")
}

fn f(v: &Value, path: &str) -> anyhow::Result<f64> {
    v.pointer(path)
        .and_then(Value::as_f64)
        .with_context(|| format!("{path} missing or not a number in {v}"))
}

/// The bucket's report and the what-if named `change`.
fn bucket<'a>(r: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
    r["buckets"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["bucket"] == name))
        .with_context(|| format!("no bucket {name} in {r}"))
}

fn what_if<'a>(b: &'a Value, change: &str) -> anyhow::Result<&'a Value> {
    b["what_if"]
        .as_array()
        .and_then(|w| {
            w.iter()
                .find(|w| w["change"].as_str().is_some_and(|c| c.starts_with(change)))
        })
        .map(|w| &w["estimate"])
        .with_context(|| format!("no what-if {change} in {b}"))
}

async fn wait_status(
    c: &Cluster,
    what: &str,
    secs: u64,
    ok: impl Fn(&ClusterStatus) -> bool,
) -> anyhow::Result<ClusterStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(st) = c.meta().cluster_status().await {
            if ok(&st) {
                return Ok(st);
            }
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {secs} s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn durability_report_on_a_live_cluster() -> anyhow::Result<()> {
    // 8 chunkservers in 4 zones: a 4+2 stripe lost on one server is
    // rebuilt on a server holding none of its shards.
    let mut c = Cluster::start(Opts {
        metas: 1,
        chunkservers: 8,
        zones: 4,
        meta_flags: vec!["--chunkserver-down-secs".into(), "3".into()],
        cs_flags: Vec::new(),
    })?;
    c.wait_chunkservers_up(8).await?;
    let client = c.client();
    client
        .create_bucket(BUCKET, EcParams::default(), SHARD)
        .await?;
    for i in 0..4u64 {
        let body = data(3 << 20, i);
        client
            .put(
                BUCKET,
                &format!("obj-{i}"),
                &body[..],
                PutOptions::default(),
            )
            .await?;
    }
    let stripes = 48u64;
    wait_status(&c, "a planner pass over the bucket", 30, |st| {
        st.buckets.get(BUCKET).map(|b| b.stripes) == Some(stripes)
            && st.redundancy.get(&2).copied() == Some(stripes)
            // Every shard counted in the chunkservers' stats (12 MiB * 6/4).
            && st.chunkservers.iter().map(|cs| cs.used).sum::<u64>() >= 18 << 20
    })
    .await?;

    // Fresh cluster: no repair measured, the assumed rate says so.
    let r = durability(&c, &[])?;
    assert_eq!(r["assumptions"]["repair_rate_source"], "assumed", "{r}");
    assert_eq!(f(&r, "/assumptions/repair_mbps")?, 50.0);
    assert_eq!(f(&r, "/layout/chunkservers")?, 8.0);
    assert_eq!(f(&r, "/layout/zones")?, 4.0);
    assert!(f(&r, "/reprotect_one_node_hours")? > 0.0);
    let b = bucket(&r, BUCKET)?;
    assert_eq!(b["objects"], 4);
    let now = &b["current"];
    assert_eq!(now["stripes"], stripes);
    assert_eq!(now["zone_cap"], 2);
    assert_eq!(now["survives_zone_loss"], true);
    let mttdl = f(now, "/mttdl_years")?;
    let loss = f(now, "/loss_per_year")?;
    assert!(mttdl.is_finite() && mttdl > 1.0, "MTTDL {mttdl} years");
    assert!(loss > 0.0 && loss < 1.0, "loss per year {loss}");
    // More parity: longer; less parity: shorter (4+1 in 4 zones puts two
    // shards in a zone: a zone loss loses data); one more zone: fewer
    // zones holding two shards, less zone-correlated risk.
    let more = f(what_if(b, "4+3")?, "/mttdl_years")?;
    let less = f(what_if(b, "4+1")?, "/mttdl_years")?;
    assert!(more > mttdl && mttdl > less, "{less} < {mttdl} < {more}");
    assert_eq!(what_if(b, "4+1")?["survives_zone_loss"], false);
    let zone = f(what_if(b, "add a zone")?, "/zone_mttdl_years")?;
    assert!(zone > f(now, "/zone_mttdl_years")?, "adding a zone: {zone}");
    assert!(f(what_if(b, "4+3")?, "/stripe_mttdl_years")? > f(now, "/stripe_mttdl_years")?);
    // A given rate is used and named; faster repair is better (no
    // detection delay, so the rate decides the repair time).
    let slow = durability(&c, &["--repair-mbps", "1", "--detect-secs", "0"])?;
    let fast = durability(&c, &["--repair-mbps", "500", "--detect-secs", "0"])?;
    assert_eq!(fast["assumptions"]["repair_rate_source"], "flag");
    let (slow, fast) = (
        f(bucket(&slow, BUCKET)?, "/current/mttdl_years")?,
        f(bucket(&fast, BUCKET)?, "/current/mttdl_years")?,
    );
    assert!(fast > slow, "500 MB/s: {fast} years, 1 MB/s: {slow} years");
    let risky = durability(&c, &["--afr", "0.2"])?;
    assert!(f(bucket(&risky, BUCKET)?, "/current/mttdl_years")? < mttdl);
    // Bad input: a clear error, no report.
    let out = c.cli(&["admin", "durability", "--afr", "2"])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--afr"));

    // Lose a chunkserver; once everything is rebuilt the rate is measured.
    c.chunkservers[0].kill_9();
    let st = wait_status(&c, "full redundancy after the loss", 90, |st| {
        st.chunkservers
            .iter()
            .any(|cs| cs.state == ChunkserverState::Down)
            && st.redundancy.get(&2).copied() == Some(stripes)
            && st.repair_queue == 0
            && st.repairs_in_flight == 0
            && st.repaired_bytes >= 1 << 20
    })
    .await?;
    assert!(st.repair_busy_secs > 0.0);
    let r = durability(&c, &[])?;
    assert_eq!(r["assumptions"]["repair_rate_source"], "measured", "{r}");
    let mbps = f(&r, "/assumptions/repair_mbps")?;
    let want = st.repaired_bytes as f64 / st.repair_busy_secs / 1e6;
    assert!(
        mbps > 0.0 && (mbps - want).abs() / want < 0.5,
        "{mbps} vs {want}"
    );
    assert_eq!(f(&r, "/layout/chunkservers")?, 7.0);
    assert!(f(bucket(&r, BUCKET)?, "/current/mttdl_years")? > 0.0);
    Ok(())
}
