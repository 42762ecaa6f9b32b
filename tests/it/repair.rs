//! Automatic repair, end to end with real processes: a chunkserver dies for
//! good and every stripe is rebuilt elsewhere; two die at once and the
//! stripes that lost two shards go first; repairs race overwrites and
//! deletes without resurrecting anything; a drained chunkserver empties and
//! can be removed.
//!
//! Redundancy in `ClusterStatus` is `healthy shards - k`: with 4+2, full is
//! 2, one lost shard is 1 ("-1" in the words), two lost is 0 ("-2").

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cairn_client::{Client, ClientError, PutOptions};
use cairn_metadata::types::*;

use crate::cluster::{assert_placement_clean, get_all, now_ms, wait_for, Cluster, Opts};
use crate::common::data;

const BUCKET: &str = "rep";
/// Small shards so a few hundred KB make many stripes.
const SHARD: u32 = 4096;
const FULL: i32 = 2;

fn opts(chunkservers: usize, zones: usize, per_cs: usize) -> Opts {
    Opts::faults(chunkservers, zones).meta_flag("--repair-per-chunkserver", &per_cs.to_string())
}

async fn get(c: &Client, key: &str) -> Result<Vec<u8>, ClientError> {
    get_all(c, BUCKET, key).await
}

async fn put(c: &Client, key: &str, body: &[u8]) -> anyhow::Result<ObjectManifest> {
    Ok(c.put(BUCKET, key, body, PutOptions::default()).await?)
}

async fn ready(c: &Cluster) -> anyhow::Result<Client> {
    c.wait_chunkservers_up(c.chunkservers.len()).await?;
    let client = c.client();
    client
        .create_bucket(BUCKET, EcParams::default(), SHARD)
        .await?;
    Ok(client)
}

async fn status(c: &Cluster) -> anyhow::Result<ClusterStatus> {
    Ok(c.meta().cluster_status().await?)
}

/// Every chunkserver any stripe of `keys` names (None = unplaced).
async fn placements(
    client: &Client,
    keys: &[String],
) -> anyhow::Result<Vec<Vec<Option<ChunkserverId>>>> {
    let mut out = Vec::new();
    for k in keys {
        let m = client.head(BUCKET, k).await?;
        for s in &m.stripes {
            out.push(s.shards.iter().map(|l| l.chunkserver).collect());
        }
    }
    Ok(out)
}

/// Waits until `dead` are all `Down`, then until a planner pass after that
/// sees every stripe at full redundancy with nothing waiting or in flight,
/// and no manifest of `keys` names a dead chunkserver or no chunkserver.
async fn wait_repaired(
    c: &Cluster,
    client: &Client,
    keys: &[String],
    dead: &[ChunkserverId],
    secs: u64,
) -> anyhow::Result<ClusterStatus> {
    wait_for("chunkservers marked down", 30, || async {
        let st = status(c).await?;
        let all = dead.iter().all(|d| {
            st.chunkservers
                .iter()
                .any(|x| x.id == *d && x.state == ChunkserverState::Down)
        });
        Ok(all.then_some(()))
    })
    .await?;
    let since = now_ms();
    let r = wait_for("full redundancy", secs, || async {
        let st = status(c).await?;
        let fresh = st.last_plan_ms.is_some_and(|t| t > since);
        let only_full = st.redundancy.keys().all(|r| *r == FULL);
        if !(fresh && only_full && st.repair_queue == 0 && st.repairs_in_flight == 0) {
            return Ok(None);
        }
        let p = placements(client, keys).await?;
        let clean = p
            .iter()
            .flatten()
            .all(|cs| cs.is_some_and(|cs| !dead.contains(&cs)));
        Ok(clean.then_some(st))
    })
    .await;
    match r {
        Ok(st) => Ok(st),
        Err(e) => {
            for p in c.metas.iter().chain(c.chunkservers.iter()) {
                let tail = p.log_tail(400);
                let lines: Vec<&str> = tail
                    .lines()
                    .filter(|l| l.contains("repair") || l.contains("WARN") || l.contains("ERROR"))
                    .collect();
                eprintln!("---- {}:\n{}", p.addr_str(), lines.join("\n"));
            }
            let st = status(c).await?;
            let p = placements(client, keys).await.unwrap_or_default();
            bail!(
                "{e}\nredundancy {:?} waiting {} in flight {} done {}\nchunkservers {:?}\n\
                 placements {p:?}\nrecent {:?}",
                st.redundancy,
                st.repair_queue,
                st.repairs_in_flight,
                st.repairs_done,
                st.chunkservers
                    .iter()
                    .map(|c| (c.id, c.state))
                    .collect::<Vec<_>>(),
                st.recent_repairs
                    .iter()
                    .filter(|r| r.outcome != "committed")
                    .collect::<Vec<_>>()
            )
        }
    }
}

async fn check_all(client: &Client, want: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
    for (k, body) in want {
        let got = get(client, k).await?;
        assert!(got == *body, "{k} differs after repair");
    }
    Ok(())
}

/// Kill one chunkserver of eight (four zones) for good: every stripe is
/// rebuilt on a server holding none of its shards; then a second: rebuilt
/// again, still six shards on six distinct servers (shards are never
/// stacked, so six servers must stay alive).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repair_after_losing_chunkservers() -> anyhow::Result<()> {
    let mut c = Cluster::start(opts(8, 4, 4))?;
    let client = ready(&c).await?;
    let mut want = BTreeMap::new();
    for i in 0..6u64 {
        let key = format!("obj-{i}");
        let body = data(60_000 + 37_000 * i as usize, i);
        let m = put(&client, &key, &body).await?;
        assert!(m.stripes.len() >= 4, "{key}: several stripes");
        want.insert(key, body);
    }
    let keys: Vec<String> = want.keys().cloned().collect();
    let stripes: usize = placements(&client, &keys).await?.len();
    wait_for("a pass over every stripe", 30, || async {
        let st = status(&c).await?;
        Ok((st.redundancy.get(&FULL).copied() == Some(stripes as u64)).then_some(()))
    })
    .await?;

    let first = c.cs_id(0).await?;
    c.chunkservers[0].kill_9();
    let st = wait_repaired(&c, &client, &keys, &[first], 60).await?;
    assert_eq!(st.redundancy.get(&FULL).copied(), Some(stripes as u64));
    assert!(st.repairs_done > 0, "repairs were committed");
    assert!(st
        .recent_repairs
        .iter()
        .all(|r| r.to != first && r.outcome != "dispatched"));
    check_all(&client, &want).await?;

    let second = c.cs_id(1).await?;
    c.chunkservers[1].kill_9();
    // Still readable while degraded.
    check_all(&client, &want).await?;
    wait_repaired(&c, &client, &keys, &[first, second], 60).await?;
    for p in placements(&client, &keys).await? {
        let servers: BTreeSet<_> = p.iter().flatten().collect();
        assert_eq!(p.len(), 6);
        assert_eq!(
            servers.len(),
            6,
            "six shards on six distinct servers: {p:?}"
        );
    }
    check_all(&client, &want).await?;
    assert_placement_clean(&c)?;
    Ok(())
}

/// Two chunkservers die at once: stripes at -2 (redundancy 0) and at -1
/// (redundancy 1) are queued together, and once the planner knows of the -2
/// stripes, every one of them is dispatched before any further stripe that
/// only lost one shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn double_failure_repairs_most_urgent_first() -> anyhow::Result<()> {
    let mut c = Cluster::start(opts(8, 4, 1))?;
    let client = ready(&c).await?;
    let mut want = BTreeMap::new();
    for i in 0..8u64 {
        let key = format!("obj-{i}");
        // 160 KB: 10 stripes of 16 KiB each.
        let body = data(160_000 + i as usize, 100 + i);
        put(&client, &key, &body).await?;
        want.insert(key, body);
    }
    let keys: Vec<String> = want.keys().cloned().collect();
    let a = c.cs_id(0).await?;
    let b = c.cs_id(1).await?;
    let both = placements(&client, &keys)
        .await?
        .iter()
        .filter(|p| p.contains(&Some(a)) && p.contains(&Some(b)))
        .count();
    assert!(both > 0, "some stripes span both victims");
    c.chunkservers[0].kill_9();
    c.chunkservers[1].kill_9();
    let st = wait_repaired(&c, &client, &keys, &[a, b], 120).await?;
    check_all(&client, &want).await?;

    let recs = &st.recent_repairs;
    assert!(recs.windows(2).all(|w| w[0].seq < w[1].seq));
    let stripe = |r: &RepairRecord| (r.key.clone(), r.stripe);
    let at_minus2: BTreeSet<_> = recs
        .iter()
        .filter(|r| r.redundancy == 0)
        .map(stripe)
        .collect();
    assert!(!at_minus2.is_empty(), "stripes at -2 were repaired");
    assert!(
        recs.iter().any(|r| r.redundancy == 1),
        "stripes at -1 were repaired"
    );
    // First dispatch of each -2 stripe; the first -2 dispatch proves the
    // planner saw both servers down.
    let mut first2: HashMap<(String, u64), u64> = HashMap::new();
    for r in recs.iter().filter(|r| r.redundancy == 0) {
        first2.entry(stripe(r)).or_insert(r.seq);
    }
    let known = first2.values().min().copied().unwrap_or(0);
    let all_started = first2.values().max().copied().unwrap_or(0);
    for r in recs {
        if r.redundancy == 1 && r.seq > known && r.seq < all_started {
            assert!(
                at_minus2.contains(&stripe(r)),
                "a stripe at -1 ({} stripe {} seq {}) was dispatched before every stripe at -2 \
                 had started (last first -2 dispatch: seq {all_started})",
                r.key,
                r.stripe,
                r.seq
            );
        }
    }
    assert_placement_clean(&c)?;
    Ok(())
}

/// Repairs race overwrites and deletes of the same objects: nothing deleted
/// comes back, nothing shows old data, every stripe ends at full
/// redundancy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repair_races_overwrite_and_delete() -> anyhow::Result<()> {
    let mut c = Cluster::start(opts(8, 4, 4))?;
    let client = ready(&c).await?;
    let n = 12u64;
    for i in 0..n {
        put(
            &client,
            &format!("k{i}"),
            &data(50_000 + 1000 * i as usize, i),
        )
        .await?;
    }
    let dead = c.cs_id(2).await?;
    c.chunkservers[2].kill_9();
    let mut latest: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut deleted: BTreeSet<String> = BTreeSet::new();
    let start = Instant::now();
    let mut round = 0u64;
    // Rounds through the down timeout and the repairs that follow it.
    while start.elapsed() < Duration::from_secs(8) || round < 3 {
        round += 1;
        for i in 0..n {
            let key = format!("k{i}");
            match i % 3 {
                0 => {
                    let body = data(40_000 + 777 * round as usize, 1000 * round + i);
                    put(&client, &key, &body).await?;
                    latest.insert(key, body);
                }
                1 => {
                    // Recreated and deleted again: a repair of any version
                    // must not bring it back.
                    put(&client, &key, &data(30_000, 7 * round + i)).await?;
                    client.delete(BUCKET, &key).await?;
                    deleted.insert(key);
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut keys: Vec<String> = latest.keys().cloned().collect();
    keys.extend((0..n).filter(|i| i % 3 == 2).map(|i| format!("k{i}")));
    wait_repaired(&c, &client, &keys, &[dead], 90).await?;
    for k in &deleted {
        assert!(
            matches!(get(&client, k).await, Err(ClientError::NoSuchKey { .. })),
            "{k} came back"
        );
    }
    check_all(&client, &latest).await?;
    for i in (0..n).filter(|i| i % 3 == 2) {
        let got = get(&client, &format!("k{i}")).await?;
        assert!(got == data(50_000 + 1000 * i as usize, i), "k{i} differs");
    }
    assert_placement_clean(&c)?;
    Ok(())
}

/// Drain a chunkserver holding data: removal is refused while it holds
/// shards; it empties (no manifest names it, GC deletes its copies),
/// objects are identical, then removal succeeds and it leaves the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_then_remove() -> anyhow::Result<()> {
    let mut c = Cluster::start(opts(8, 4, 4))?;
    let client = ready(&c).await?;
    let mut want = BTreeMap::new();
    for i in 0..6u64 {
        let key = format!("d{i}");
        let body = data(70_000 + 5000 * i as usize, 50 + i);
        put(&client, &key, &body).await?;
        want.insert(key, body);
    }
    let keys: Vec<String> = want.keys().cloned().collect();
    let p = placements(&client, &keys).await?;
    // The chunkserver holding most shards.
    let mut count: HashMap<ChunkserverId, usize> = HashMap::new();
    for cs in p.iter().flatten().flatten() {
        *count.entry(*cs).or_insert(0) += 1;
    }
    let (&victim, &held) = count.iter().max_by_key(|(_, n)| **n).context("no shards")?;
    assert!(held > 0);
    let idx = {
        let st = status(&c).await?;
        let addr = st
            .chunkservers
            .iter()
            .find(|x| x.id == victim)
            .map(|x| x.addr.clone())
            .context("victim")?;
        c.chunkservers
            .iter()
            .position(|p| p.addr_str() == addr)
            .context("victim process")?
    };
    let shards_dir = c.cs_data(idx).join("shards");
    assert!(
        !crate::cluster::files_under(&shards_dir).is_empty(),
        "the victim stores shard files"
    );
    let id = victim.to_string();
    let out = c.cli(&["admin", "chunkserver", "drain", &id])?;
    assert!(out.status.success(), "drain: {out:?}");
    let out = c.cli(&["admin", "chunkserver", "remove", &id])?;
    assert!(
        !out.status.success(),
        "remove must be refused while it holds shards"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("still holds shards"),
        "{out:?}"
    );

    wait_for("drained", 60, || async {
        let p = placements(&client, &keys).await?;
        Ok((!p.iter().flatten().any(|cs| *cs == Some(victim))).then_some(()))
    })
    .await?;
    wait_for("old copies deleted", 60, || async {
        let left = crate::cluster::files_under(&shards_dir).len();
        let st = status(&c).await?;
        let reported = st
            .chunkservers
            .iter()
            .find(|x| x.id == victim)
            .map(|x| x.shard_count)
            .unwrap_or(u64::MAX);
        Ok((left == 0 && reported == 0).then_some(()))
    })
    .await?;
    let st = status(&c).await?;
    assert!(
        st.redundancy.keys().all(|r| *r == FULL),
        "{:?}",
        st.redundancy
    );
    assert_eq!(
        st.chunkservers
            .iter()
            .find(|x| x.id == victim)
            .map(|x| x.state),
        Some(ChunkserverState::Draining),
        "a heartbeating draining chunkserver stays draining"
    );
    check_all(&client, &want).await?;

    // The operator stops the drained server, then removes it (a running one
    // would register again under a new id).
    c.chunkservers[idx].kill_9();
    let out = c.cli(&["admin", "chunkserver", "remove", &id])?;
    assert!(out.status.success(), "remove: {out:?}");
    let out = c.cli(&["admin", "status", "--json"])?;
    assert!(out.status.success(), "status: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let listed: Vec<u64> = v["cluster"]["chunkservers"]
        .as_array()
        .context("chunkservers")?
        .iter()
        .filter_map(|x| x["id"].as_u64())
        .collect();
    assert!(!listed.contains(&victim), "{listed:?}");
    assert_eq!(listed.len(), 7);
    assert_placement_clean(&c)?;
    Ok(())
}
