//! Scrubbing and garbage collection with real processes: corrupt and
//! delete shard files under running chunkservers and check the scrubber
//! finds every one (and repair heals them); leave garbage of every kind
//! (deletes, overwrites, aborted uploads, a client killed mid-put) and check
//! the chunkservers end up holding exactly what live manifests and
//! in-progress uploads name.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use cairn_client::{Client, PutOptions};
use cairn_metadata::client::Consistency;
use cairn_metadata::types::*;
use futures::StreamExt;

use crate::cluster::{Cluster, Opts};
use crate::common::data;
use crate::common::SECRET;

/// Shard size of the test buckets: small, so objects of a few hundred KB
/// span several stripes and many shard files.
const SHARD: u32 = 64 << 10;

async fn get_all(c: &Client, bucket: &str, key: &str) -> anyhow::Result<Vec<u8>> {
    let (_, mut s) = c.get(bucket, key, None).await?;
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// Every live shard file (not temp files, not quarantine) of chunkserver
/// `i`, by shard id.
fn shard_files(c: &Cluster, i: usize) -> HashMap<ShardId, PathBuf> {
    crate::common::find_files(&c.cs_data(i).join("shards"), &|n| {
        n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit())
    })
    .into_iter()
    .filter_map(|p| {
        let id = p.file_name()?.to_str()?.parse().ok()?;
        Some((id, p))
    })
    .collect()
}

fn count_shard_files(c: &Cluster) -> usize {
    (0..c.chunkservers.len())
        .map(|i| shard_files(c, i).len())
        .sum()
}

fn quarantined(c: &Cluster) -> usize {
    (0..c.chunkservers.len())
        .map(|i| crate::common::find_files(&c.cs_data(i).join("quarantine"), &|_| true).len())
        .sum()
}

/// Chunkserver id -> index in `c.chunkservers`, by address.
async fn cs_index(c: &Cluster) -> anyhow::Result<HashMap<ChunkserverId, usize>> {
    let list = match c
        .meta()
        .query(&Query::ListChunkservers, Consistency::Linearizable)
        .await?
    {
        QueryResult::Chunkservers(l) => l,
        other => bail!("unexpected {other:?}"),
    };
    let mut out = HashMap::new();
    for info in list {
        if let Some(i) = c
            .chunkservers
            .iter()
            .position(|p| p.addr_str() == info.addr)
        {
            out.insert(info.id, i);
        }
    }
    Ok(out)
}

/// `cairn admin scrub <args> --json`.
fn scrub(c: &Cluster, args: &[&str]) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut all = vec!["admin", "scrub"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = c.cli(&all)?;
    if !out.status.success() {
        bail!(
            "cairn admin scrub {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("scrub --json output")
}

fn progress(v: &serde_json::Value) -> anyhow::Result<ScrubProgress> {
    serde_json::from_value(v["progress"].clone()).context("progress")
}

/// Every live object's manifest, by key.
async fn manifests(
    client: &Client,
    bucket: &str,
) -> anyhow::Result<BTreeMap<String, ObjectManifest>> {
    let page = client
        .list(ListRequest {
            bucket: bucket.into(),
            max_keys: 1000,
            ..Default::default()
        })
        .await?;
    let mut out = BTreeMap::new();
    for o in page.entries {
        let m = client.head(bucket, &o.key).await?;
        out.insert(o.key, m);
    }
    Ok(out)
}

/// Polls `f` until it returns `Ok(true)` or the deadline passes.
async fn wait_for<F, Fut>(what: &str, secs: u64, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last_err = None;
    loop {
        match f().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what} (last error: {last_err:?})");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn cluster(meta_flags: &[&str]) -> anyhow::Result<Cluster> {
    Cluster::start(Opts {
        chunkservers: 6,
        zones: 3,
        meta_flags: meta_flags.iter().map(|s| s.to_string()).collect(),
        cs_flags: ["--scrub-mbps", "0", "--scrub-tranquility", "0"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ..Default::default()
    })
}

/// 20 corrupted and 5 deleted shard files (each in a different stripe, so
/// every stripe stays decodable) are all found by one scrub pass, none stays
/// live, and repair brings every stripe back to k+m with identical data.
/// Pause and resume through the admin command show in the progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scrub_finds_corrupt_and_missing_shards_and_repair_heals() -> anyhow::Result<()> {
    let c = cluster(&[])?;
    c.wait_chunkservers_up(6).await?;
    let client = c.client();
    client
        .create_bucket("scrub", EcParams::default(), SHARD)
        .await?;
    // 15 objects of 300 KB: two stripes each, 30 stripes, 180 shard files.
    let mut bodies = BTreeMap::new();
    for i in 0..15u64 {
        let body = data(300_000, i);
        let key = format!("obj-{i:02}");
        client
            .put("scrub", &key, &body[..], PutOptions::default())
            .await?;
        bodies.insert(key, body);
    }
    let index = cs_index(&c).await?;
    let ms = manifests(&client, "scrub").await?;
    // One shard per stripe, spread over the chunkservers round-robin.
    let mut victims = Vec::new();
    for (n, stripe) in ms.values().flat_map(|m| m.stripes.iter()).enumerate() {
        if victims.len() == 25 {
            break;
        }
        let loc = &stripe.shards[n % stripe.shards.len()];
        let cs = loc.chunkserver.context("placed")?;
        let i = *index.get(&cs).context("known chunkserver")?;
        let path = shard_files(&c, i)
            .remove(&loc.shard)
            .context("shard file on disk")?;
        victims.push((i, loc.shard, path));
    }
    assert_eq!(victims.len(), 25);
    let spread: std::collections::BTreeSet<usize> = victims.iter().map(|v| v.0).collect();
    assert!(spread.len() >= 5, "victims on {spread:?}");

    // Pause and resume are visible (and the scrubbers are idle: their
    // start-up pass over an empty store is long done).
    for v in scrub(&c, &["pause"])? {
        assert_eq!(progress(&v)?.state, ScrubState::Paused, "{v}");
    }
    for v in scrub(&c, &["status"])? {
        assert_eq!(progress(&v)?.state, ScrubState::Paused, "{v}");
    }
    for v in scrub(&c, &["resume"])? {
        assert_ne!(progress(&v)?.state, ScrubState::Paused, "{v}");
    }

    let mut corrupted = Vec::new();
    for (n, (_, _, path)) in victims.iter().enumerate() {
        if n < 20 {
            let mut b = std::fs::read(path)?;
            let len = b.len();
            for k in 0..4 {
                let at = (rand::random::<u64>() as usize + k) % len;
                b[at] ^= 0xa5;
            }
            std::fs::write(path, &b)?;
            corrupted.push((path.clone(), b));
        } else {
            std::fs::remove_file(path)?;
        }
    }

    let started = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let all = scrub(&c, &["start"])?;
    assert_eq!(all.len(), 6);
    wait_for("a full scrub pass on every chunkserver", 60, || async {
        let all = scrub(&c, &["status"])?;
        let mut done = 0;
        for v in &all {
            let p = progress(v)?;
            if p.state == ScrubState::Idle && p.last_full_pass_ms.unwrap_or(0) >= started {
                done += 1;
            }
        }
        Ok(done == 6)
    })
    .await?;
    let bad: u64 = scrub(&c, &["status"])?
        .iter()
        .map(|v| progress(v).map(|p| p.bad_found))
        .sum::<anyhow::Result<u64>>()?;
    assert_eq!(bad, 25, "the scrub pass finds every bad shard");
    // No corrupt file is live: each was renamed aside (a shard file at the
    // same path later can only be a verified rebuild).
    for (path, bytes) in &corrupted {
        if let Ok(now) = std::fs::read(path) {
            assert_ne!(&now, bytes, "{} is still live", path.display());
        }
    }
    assert!(
        quarantined(&c) >= 20,
        "corrupt files are kept in quarantine"
    );

    // Repair brings every stripe back to k+m: every placement names a
    // chunkserver that holds the file.
    wait_for("every stripe at full redundancy", 90, || async {
        let index = cs_index(&c).await?;
        let ms = manifests(&client, "scrub").await?;
        let files: Vec<HashMap<ShardId, PathBuf>> = (0..6).map(|i| shard_files(&c, i)).collect();
        for m in ms.values() {
            for s in &m.stripes {
                if s.shards.len() != 6 {
                    return Ok(false);
                }
                for l in &s.shards {
                    let Some(i) = l.chunkserver.and_then(|cs| index.get(&cs)) else {
                        return Ok(false);
                    };
                    if !files[*i].contains_key(&l.shard) {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    })
    .await?;
    for (key, body) in &bodies {
        assert!(
            &get_all(&client, "scrub", key).await? == body,
            "{key} differs"
        );
    }
    // A second pass finds nothing new: the rebuilt shards verify.
    let second = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    scrub(&c, &["start"])?;
    wait_for("a second scrub pass", 60, || async {
        let all = scrub(&c, &["status"])?;
        let mut done = 0;
        for v in &all {
            let p = progress(v)?;
            if p.state == ScrubState::Idle && p.last_full_pass_ms.unwrap_or(0) >= second {
                done += 1;
            }
        }
        Ok(done == 6)
    })
    .await?;
    let bad: u64 = scrub(&c, &["status"])?
        .iter()
        .map(|v| progress(v).map(|p| p.bad_found))
        .sum::<anyhow::Result<u64>>()?;
    assert_eq!(bad, 25, "no new bad shards");
    // Every role lists its workers.
    let out = c.cli(&["admin", "workers", "--json"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let workers: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    assert_eq!(workers.len(), 3 + 6);
    for w in workers.iter().filter(|w| w["role"] == "chunkserver") {
        let names: Vec<&str> = w["workers"]
            .as_array()
            .context("workers")?
            .iter()
            .filter_map(|x| x["name"].as_str())
            .collect();
        assert!(
            names.contains(&"scrub") && names.contains(&"heartbeat"),
            "{w}"
        );
    }
    crate::cluster::assert_placement_clean(&c)?;
    Ok(())
}

/// Shard files named by `m` (placed ones).
fn placed(m: &ObjectManifest) -> usize {
    m.stripes
        .iter()
        .flat_map(|s| s.shards.iter())
        .filter(|l| l.chunkserver.is_some())
        .count()
}

/// After deletes, overwrites, an aborted multipart upload and a client
/// killed mid-put, the chunkservers hold exactly the shards live manifests
/// and the in-progress upload name; the in-progress upload's part survives
/// many inventory rounds past the grace period and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_leaves_exactly_what_manifests_and_uploads_name() -> anyhow::Result<()> {
    let c = cluster(&["--orphan-grace-secs", "3", "--inventory-every-secs", "2"])?;
    c.wait_chunkservers_up(6).await?;
    let client = c.client();
    client
        .create_bucket("gcb", EcParams::default(), SHARD)
        .await?;
    let mut bodies = BTreeMap::new();
    for i in 0..6u64 {
        let body = data(300_000, 100 + i);
        let key = format!("obj-{i}");
        client
            .put("gcb", &key, &body[..], PutOptions::default())
            .await?;
        bodies.insert(key, body);
    }
    // Deletes and an overwrite.
    for key in ["obj-0", "obj-1"] {
        client.delete("gcb", key).await?;
        bodies.remove(key);
    }
    let body = data(500_000, 999);
    client
        .put("gcb", "obj-2", &body[..], PutOptions::default())
        .await?;
    bodies.insert("obj-2".into(), body);
    // An aborted upload.
    let opts = PutOptions::default();
    let up = client
        .create_upload("gcb", "aborted", &opts, None, None, "")
        .await?;
    let part = data(300_000, 7);
    client
        .upload_part("gcb", "aborted", up.id, 1, &part[..], Default::default())
        .await?;
    client.abort_upload("gcb", "aborted", up.id).await?;
    // An upload left in progress.
    let live_up = client
        .create_upload("gcb", "in-progress", &opts, None, None, "")
        .await?;
    let live_part = data(300_000, 8);
    let info = client
        .upload_part(
            "gcb",
            "in-progress",
            live_up.id,
            1,
            &live_part[..],
            Default::default(),
        )
        .await?;
    let live_part_shards = info.stripes as usize * 6;

    // A client killed mid-put: its shards are orphans.
    let before = count_shard_files(&c);
    // It streams from a pipe that stays open: the put can never finish.
    let mut put = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["put", "-", "cairn://gcb/big.bin"])
        .env("CAIRN_METADATA", c.meta_addrs.join(","))
        .env("CAIRN_SECRET", SECRET)
        .env("CAIRN_CONFIG", c.dir.path().join("no-config.json"))
        // Its write intent lapses 2 s after the kill; then its shards are
        // ordinary orphans.
        .env("CAIRN_INTENT_LEASE_SECS", "2")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    {
        use std::io::Write;
        let mut stdin = put.stdin.take().context("stdin")?;
        // 8 MiB: 32 stripes of 4 x 64 KiB, all written while the put waits
        // for more input.
        stdin.write_all(&data(8 << 20, 5))?;
        let killed = wait_for("the killed client's shards", 60, || async {
            Ok(count_shard_files(&c) >= before + 60)
        })
        .await;
        put.kill()?;
        put.wait()?;
        drop(stdin);
        killed?;
    }
    assert!(
        client.head("gcb", "big.bin").await.is_err(),
        "the killed put committed nothing"
    );

    let expected = || async {
        let ms = manifests(&client, "gcb").await?;
        anyhow::Ok(ms.values().map(placed).sum::<usize>() + live_part_shards)
    };
    wait_for(
        "shard files == what manifests and uploads name",
        90,
        || async { Ok(count_shard_files(&c) == expected().await?) },
    )
    .await?;
    // Several inventory rounds well past the grace period: the in-progress
    // upload's part is still there.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(count_shard_files(&c), expected().await?);
    let parts = vec![CompletePart {
        number: 1,
        etag: info.etag.clone(),
    }];
    client
        .complete_upload(
            "gcb",
            "in-progress",
            live_up.id,
            parts,
            Default::default(),
            PutCondition::None,
        )
        .await?;
    bodies.insert("in-progress".into(), live_part);
    assert_eq!(
        count_shard_files(&c),
        manifests(&client, "gcb")
            .await?
            .values()
            .map(placed)
            .sum::<usize>()
    );
    for (key, body) in &bodies {
        assert!(
            &get_all(&client, "gcb", key).await? == body,
            "{key} differs"
        );
    }
    crate::cluster::assert_placement_clean(&c)?;
    Ok(())
}

/// Issue 11 item 2: a throttled `cairn put -` that lasts several orphan
/// grace periods and inventory rounds keeps every shard (its write intent
/// names them), commits, and reads back identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_put_outlives_the_orphan_grace() -> anyhow::Result<()> {
    let c = cluster(&["--orphan-grace-secs", "2", "--inventory-every-secs", "1"])?;
    c.wait_chunkservers_up(6).await?;
    let client = c.client();
    client
        .create_bucket("slow", EcParams::default(), SHARD)
        .await?;
    let mut put = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["put", "-", "cairn://slow/big.bin"])
        .env("CAIRN_METADATA", c.meta_addrs.join(","))
        .env("CAIRN_SECRET", SECRET)
        .env("CAIRN_CONFIG", c.dir.path().join("no-config.json"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    // 24 stripes of 4 x 64 KiB, one every 500 ms: 12 s, six grace periods.
    let body = data(24 * 4 * SHARD as usize, 42);
    {
        use std::io::Write;
        let mut stdin = put.stdin.take().context("stdin")?;
        for chunk in body.chunks(4 * SHARD as usize) {
            stdin.write_all(chunk)?;
            stdin.flush()?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let out = tokio::task::spawn_blocking(move || put.wait_with_output()).await??;
    assert!(
        out.status.success(),
        "put failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ms = manifests(&client, "slow").await?;
    let m = ms.get("big.bin").context("big.bin committed")?;
    assert_eq!(m.stripes.len(), 24);
    // Inventory rounds after the commit: nothing of it is collected.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        count_shard_files(&c),
        placed(m),
        "every shard is still there"
    );
    assert!(
        get_all(&client, "slow", "big.bin").await? == body,
        "bytes differ"
    );
    Ok(())
}

/// Issue 11 item 6: a GET streaming the old version while the key is
/// overwritten finishes with the old bytes (GC waits `--gc-delay-secs`);
/// the old shards are collected after the delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_streams_through_an_overwrite() -> anyhow::Result<()> {
    let c = cluster(&["--gc-delay-secs", "15"])?;
    c.wait_chunkservers_up(6).await?;
    let client = c.client();
    client
        .create_bucket("overwrite", EcParams::default(), SHARD)
        .await?;
    let old = data(32 * 4 * SHARD as usize, 1);
    client
        .put("overwrite", "k", &old[..], PutOptions::default())
        .await?;
    let (_, mut s) = client.get("overwrite", "k", None).await?;
    let mut got = Vec::new();
    if let Some(chunk) = s.next().await {
        got.extend_from_slice(&chunk?);
    }
    let new = data(4 * SHARD as usize + 5, 2);
    client
        .put("overwrite", "k", &new[..], PutOptions::default())
        .await?;
    let overwritten = Instant::now();
    // Read the rest slowly: 127 more shard-sized chunks, about 4 s,
    // many heartbeats, well inside the 15 s delay.
    while let Some(chunk) = s.next().await {
        got.extend_from_slice(&chunk?);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(
        overwritten.elapsed() < Duration::from_secs(15),
        "the read took longer than the GC delay"
    );
    assert!(got == old, "the streaming GET returned other bytes");
    assert!(get_all(&client, "overwrite", "k").await? == new);
    let ms = manifests(&client, "overwrite").await?;
    let live = placed(ms.get("k").context("k")?);
    wait_for("old shards collected after the delay", 40, || async {
        Ok(count_shard_files(&c) == live)
    })
    .await?;
    assert!(
        overwritten.elapsed() >= Duration::from_secs(15),
        "collected before the delay"
    );
    Ok(())
}
