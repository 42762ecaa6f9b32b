//! Streamed snapshots between real metadata processes: a follower that
//! lags past the leader's purge point catches up by installing a large
//! snapshot, with its peak RSS bounded well below the snapshot's size.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use cairn_metadata::client::{Consistency, MetaClient};
use cairn_metadata::types::*;

use crate::cluster::{create_bucket, fake_manifest, Cluster, Opts};

/// Objects written while the follower is down (`CAIRN_SNAPSHOT_OBJECTS`
/// overrides, to measure how peak RSS follows the snapshot's size).
fn objects() -> usize {
    std::env::var("CAIRN_SNAPSHOT_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8_000)
}
/// Inline bytes per object: 8,000 objects make a snapshot of about
/// 250 MiB (raw bytes in the binary head rows of model format 3; about
/// 330 MiB of base64 in format 2's JSON rows), so a snapshot held in
/// memory would by itself push the follower's RSS past [`RSS_BOUND_KIB`].
const INLINE: usize = 32 << 10;
/// Peak RSS allowed on the follower (`VmHWM`): its baseline plus redb's
/// capped page cache plus the bounded staging batches and the log entries
/// after the snapshot. Measured: 110-155 MiB with a 111 MiB snapshot, 143
/// MiB with a 332 MiB one (it does not follow the snapshot's size).
const RSS_BOUND_KIB: u64 = 200 << 10;

/// Peak resident set (`VmHWM`) of process `pid`, KiB.
fn vm_hwm_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("bad line {line:?}"))?
        .parse()?)
}

/// Every key of `bucket` on node `i` (its own state).
async fn keys_on(c: &Cluster, i: usize, bucket: &str) -> anyhow::Result<BTreeSet<String>> {
    let meta = c.meta_at(i);
    let mut out = BTreeSet::new();
    let mut token = None;
    loop {
        let r = meta
            .query(
                &Query::ListObjects(ListRequest {
                    bucket: bucket.into(),
                    continuation: token.clone(),
                    max_keys: 1000,
                    ..Default::default()
                }),
                Consistency::Stale,
            )
            .await?;
        let QueryResult::List(page) = r else {
            anyhow::bail!("unexpected {r:?}");
        };
        out.extend(page.entries.into_iter().map(|e| e.key));
        if !page.truncated {
            return Ok(out);
        }
        token = page.next_continuation;
    }
}

/// Writes objects `range` of `bucket`, each with `INLINE` inline bytes.
async fn write_objects(meta: Arc<MetaClient>, range: std::ops::Range<usize>) -> anyhow::Result<()> {
    for i in range {
        let data = crate::common::data(INLINE, i as u64);
        let mut manifest = fake_manifest("big");
        manifest.size = data.len() as u64;
        manifest.inline = Some(InlineData::new(data.into()));
        let r = meta
            .write(&Command::PutObject {
                bucket: "big".into(),
                key: format!("o{i:05}"),
                manifest,
                condition: PutCondition::None,
            })
            .await?;
        anyhow::ensure!(r == CommandResult::Ok, "object {i}: {r:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lagging_follower_installs_a_large_snapshot_with_bounded_rss() -> anyhow::Result<()> {
    let mut c = Cluster::start(Opts {
        meta_flags: vec![
            "--snapshot-every".into(),
            "500".into(),
            // Every 500 entries whatever the sizes, so the snapshot the
            // follower installs holds (nearly) the whole state.
            "--snapshot-log-ratio".into(),
            "0".into(),
            "--keep-logs".into(),
            "50".into(),
        ],
        ..Default::default()
    })?;
    let meta = Arc::new(c.meta());
    create_bucket(&meta, "big").await?;
    let leader = c.leader().await?;
    let follower = (leader + 1) % 3;
    let before = c
        .meta_at(follower)
        .status()
        .await?
        .last_applied
        .unwrap_or(0);
    c.metas[follower].kill_9();

    let t = Instant::now();
    let tasks = 16;
    let per = objects() / tasks;
    let mut handles = Vec::new();
    for k in 0..tasks {
        handles.push(tokio::spawn(write_objects(
            meta.clone(),
            k * per..(k + 1) * per,
        )));
    }
    for h in handles {
        h.await??;
    }
    eprintln!(
        "wrote {} objects of {INLINE} bytes in {:?}",
        per * tasks,
        t.elapsed()
    );

    // Snapshots follow the default cadence (checked every second): wait
    // for the purge past the follower.
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    let l = loop {
        let l = c.leader().await?;
        let st = c.meta_at(l).status().await?;
        if st.purged.unwrap_or(0) > before {
            break l;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the leader did not purge past the follower ({before}): {st:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };

    let t = Instant::now();
    c.metas[follower].restart()?;
    let applied = c.meta_at(l).status().await?.last_applied.unwrap_or(0);
    c.wait_applied(follower, applied).await?;
    eprintln!("follower caught up in {:?}", t.elapsed());
    let pid = c.metas[follower]
        .pid()
        .ok_or_else(|| anyhow::anyhow!("follower not running"))?;
    let hwm = vm_hwm_kib(pid)?;

    let st = c.meta_at(follower).status().await?;
    anyhow::ensure!(st.snapshot.is_some(), "follower has no snapshot: {st:?}");
    let log = std::fs::read_to_string(c.metas[follower].log_path())?;
    anyhow::ensure!(
        log.contains("installed snapshot"),
        "the follower caught up without a snapshot install:\n{}",
        c.metas[follower].log_tail(40)
    );
    let snap_bytes = std::fs::metadata(
        c.dir
            .path()
            .join(format!("meta{}", follower + 1))
            .join("data/raft-snapshot.snap"),
    )?
    .len();
    eprintln!(
        "follower peak RSS (VmHWM) {} MiB, snapshot file {} MiB",
        hwm >> 10,
        snap_bytes >> 20
    );

    let want: BTreeSet<String> = (0..per * tasks).map(|i| format!("o{i:05}")).collect();
    assert_eq!(keys_on(&c, follower, "big").await?, want);
    // And a sample reads back byte for byte from the follower's own state.
    let r = c
        .meta_at(follower)
        .query(
            &Query::GetObject {
                bucket: "big".into(),
                key: "o00007".into(),
            },
            Consistency::Stale,
        )
        .await?;
    let QueryResult::Object(m) = r else {
        anyhow::bail!("unexpected {r:?}");
    };
    let inline = m.inline.ok_or_else(|| anyhow::anyhow!("no inline data"))?;
    assert!(inline.verify());
    assert_eq!(&inline.data[..], &crate::common::data(INLINE, 7)[..]);

    assert!(
        snap_bytes > (RSS_BOUND_KIB << 10) * 23 / 20,
        "the snapshot ({snap_bytes} bytes) is too small to prove anything"
    );
    assert!(
        hwm < RSS_BOUND_KIB,
        "follower peak RSS {hwm} KiB exceeds {RSS_BOUND_KIB} KiB"
    );
    Ok(())
}
