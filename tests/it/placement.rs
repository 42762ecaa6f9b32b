//! The placement invariant end to end (issue 11, items 1 and 5): with six
//! chunkservers in three zones and a 4+2 bucket, losing one chunkserver
//! past the down timeout leaves its stripes honestly degraded (no valid
//! repair target exists, and shards are never stacked), bringing it back
//! restores full redundancy, the auditor finds no violation, and then any
//! two other chunkservers can die without losing an acknowledged object.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use cairn_client::{Client, PutOptions};
use cairn_metadata::types::*;
use futures::StreamExt;

use crate::cluster::{Cluster, Opts};
use crate::common::data;

const BUCKET: &str = "place";
/// Small shards so a few tens of KB make several stripes.
const SHARD: u32 = 4096;
const FULL: i32 = 2;

async fn get_all(c: &Client, key: &str) -> anyhow::Result<Vec<u8>> {
    let (_, mut s) = c.get(BUCKET, key, None).await?;
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

async fn wait_status(
    c: &Cluster,
    what: &str,
    secs: u64,
    ok: impl Fn(&ClusterStatus) -> bool,
) -> anyhow::Result<ClusterStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = c.meta().cluster_status().await;
        if let Ok(st) = &st {
            if ok(st) {
                return Ok(st.clone());
            }
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {secs} s; last status {st:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `cairn admin audit-placement --json`: (exit ok, violations).
fn audit(c: &Cluster) -> anyhow::Result<(bool, Vec<serde_json::Value>, u64)> {
    let out = c.cli(&["--json", "admin", "audit-placement"])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow::anyhow!(
            "audit output {e}: {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let violations = v["violations"].as_array().cloned().unwrap_or_default();
    let stripes = v["stripes"].as_u64().unwrap_or(0);
    Ok((out.status.success(), violations, stripes))
}

/// The minimal sequence: write, lose one chunkserver past the down
/// mark, restart it, then lose two others for good: every object reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_two_chunkservers_can_die_after_a_restart() -> anyhow::Result<()> {
    let mut c = Cluster::start(Opts {
        metas: 1,
        chunkservers: 6,
        zones: 3,
        meta_flags: vec![
            "--chunkserver-down-secs".into(),
            "3".into(),
            "--repair-task-timeout-secs".into(),
            "20".into(),
        ],
        cs_flags: Vec::new(),
    })?;
    c.wait_chunkservers_up(6).await?;
    let client = c.client();
    client
        .create_bucket(BUCKET, EcParams::default(), SHARD)
        .await?;
    let mut want = BTreeMap::new();
    let mut stripes = 0u64;
    for i in 0..24u64 {
        let key = format!("obj-{i}");
        let body = data(40_000 + 1_000 * i as usize, i);
        let m = client
            .put(BUCKET, &key, &body[..], PutOptions::default())
            .await?;
        assert!(m.stripes.len() >= 2, "{key}: multi-stripe, not inline");
        stripes += m.stripes.len() as u64;
        want.insert(key, body);
    }
    wait_status(&c, "every stripe at full redundancy", 30, |st| {
        st.redundancy.get(&FULL).copied() == Some(stripes)
    })
    .await?;

    // Lose one chunkserver past the down mark: every stripe has a shard on
    // it, and each of the five others holds one already, so nothing may be
    // rebuilt; status says the stripes are degraded.
    let victim = c.chunkservers[0].addr_str();
    c.chunkservers[0].kill_9();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    wait_status(&c, "chunkserver down", 30, |st| {
        st.chunkservers
            .iter()
            .any(|x| x.addr == victim && x.state == ChunkserverState::Down)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let st = wait_status(&c, "a planner pass after the loss", 30, |st| {
        st.last_plan_ms.is_some_and(|t| t > since + 5_000)
    })
    .await?;
    assert_eq!(
        st.redundancy.get(&FULL).copied().unwrap_or(0),
        0,
        "no stripe may claim full redundancy with a shard on a down server: {:?}",
        st.redundancy
    );
    assert_eq!(
        st.redundancy.get(&1).copied(),
        Some(stripes),
        "{:?}",
        st.redundancy
    );
    let (ok, v, _) = audit(&c)?;
    assert!(ok && v.is_empty(), "no shard stacked while degraded: {v:?}");

    // It returns: full redundancy again, GC settles, no violation.
    c.chunkservers[0].restart()?;
    wait_status(&c, "full redundancy after the restart", 60, |st| {
        st.redundancy.get(&FULL).copied() == Some(stripes)
            && st.repairs_in_flight == 0
            && st.gc_pending == 0
    })
    .await?;
    let (ok, v, audited) = audit(&c)?;
    assert!(ok, "audit-placement exits 0 when clean");
    assert!(v.is_empty(), "placement violations: {v:?}");
    assert_eq!(audited, stripes, "the audit walked every stripe");

    // Two other chunkservers die for good: every object still reads back.
    c.chunkservers[2].kill_9();
    c.chunkservers[4].kill_9();
    for (k, body) in &want {
        let got = get_all(&client, k).await?;
        assert!(got == *body, "{k} differs");
    }
    Ok(())
}
