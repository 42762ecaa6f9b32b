//! The metadata service as a real 3-node Raft cluster: durability of
//! acknowledged writes across leader kills and full restarts, snapshot
//! catch-up, online membership changes, linearizability, listing semantics.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_metadata::client::{Consistency, MetaClient};
use cairn_metadata::node::{AddNodeRequest, RemoveNodeRequest};
use cairn_metadata::types::*;
use hyper::Method;

use crate::cluster::{create_bucket, fake_manifest, Cluster, Opts};
use crate::common::{http, SECRET};
use crate::linearizability::{self, Event, Op, Ret};

async fn put(
    meta: &MetaClient,
    bucket: &str,
    key: &str,
    tag: &str,
) -> anyhow::Result<CommandResult> {
    Ok(meta
        .write(&Command::PutObject {
            bucket: bucket.into(),
            key: key.into(),
            manifest: fake_manifest(tag),
            condition: PutCondition::None,
        })
        .await?)
}

/// Every key of `bucket` as node `i` sees it (stale read: its own state).
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

async fn leader_applied(c: &Cluster) -> anyhow::Result<u64> {
    let l = c.leader().await?;
    Ok(c.meta_at(l).status().await?.last_applied.unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_leader_kill_and_full_restart() -> anyhow::Result<()> {
    let mut c = Cluster::start(Opts::default())?;
    let meta = Arc::new(c.meta());
    create_bucket(&meta, "durable").await?;
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (meta, acked, next) = (meta.clone(), acked.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= 1000 {
                    break;
                }
                let key = format!("k{i:04}");
                if let Ok(CommandResult::Ok) = put(&meta, "durable", &key, "t").await {
                    acked.lock().unwrap().insert(key);
                }
            }
        }));
    }
    // Kill the leader mid-stream.
    while acked.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let old = c.leader().await?;
    c.metas[old].kill_9();
    for t in tasks {
        t.await?;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 900,
        "only {} of 1000 writes acknowledged",
        acked.len()
    );
    c.metas[old].restart()?;
    let applied = leader_applied(&c).await?;
    for i in 0..3 {
        c.wait_applied(i, applied).await?;
        let keys = keys_on(&c, i, "durable").await?;
        let missing: Vec<_> = acked.difference(&keys).collect();
        assert!(
            missing.is_empty(),
            "node {} lost acknowledged writes: {missing:?}",
            i + 1
        );
    }
    // Restart all three from disk: the same state.
    for m in &mut c.metas {
        m.kill_9();
    }
    for m in &mut c.metas {
        m.restart()?;
    }
    c.leader().await?;
    let applied = leader_applied(&c).await?;
    let mut states = Vec::new();
    for i in 0..3 {
        c.wait_applied(i, applied).await?;
        states.push(keys_on(&c, i, "durable").await?);
    }
    assert!(acked.is_subset(&states[0]));
    assert_eq!(states[0], states[1]);
    assert_eq!(states[1], states[2]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lagging_node_catches_up_by_snapshot() -> anyhow::Result<()> {
    let mut c = Cluster::start(Opts {
        meta_flags: vec![
            "--snapshot-every".into(),
            "100".into(),
            "--keep-logs".into(),
            "10".into(),
        ],
        ..Default::default()
    })?;
    let meta = c.meta();
    create_bucket(&meta, "snap").await?;
    c.leader().await?;
    // Stop a follower, write well past the purge point, bring it back.
    let leader = c.leader().await?;
    let follower = (leader + 1) % 3;
    c.metas[follower].kill_9();
    for i in 0..400 {
        put(&meta, "snap", &format!("s{i:03}"), "x").await?;
    }
    // Snapshots follow the default cadence (at least 100 entries and a log
    // of a quarter of the last snapshot's size, checked every second), so
    // the purge comes within a few seconds of the writes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let l = c.leader().await?;
        let st = c.meta_at(l).status().await?;
        if st.purged.unwrap_or(0) > 50 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "leader did not purge its log: {st:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    c.metas[follower].restart()?;
    let applied = leader_applied(&c).await?;
    c.wait_applied(follower, applied).await?;
    let keys = keys_on(&c, follower, "snap").await?;
    assert_eq!(keys.len(), 400);
    let st = c.meta_at(follower).status().await?;
    assert!(st.snapshot.is_some(), "follower has no snapshot: {st:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_3_to_5_to_3_while_writing() -> anyhow::Result<()> {
    let mut c = Cluster::start(Opts::default())?;
    let meta = Arc::new(c.meta());
    create_bucket(&meta, "members").await?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let writer = {
        let (meta, stop, acked) = (meta.clone(), stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let key = format!("m{i:05}");
                if let Ok(CommandResult::Ok) = put(&meta, "members", &key, "v").await {
                    acked.lock().unwrap().insert(key);
                }
                i += 1;
            }
        })
    };
    // 3 -> 5.
    for id in [4usize, 5] {
        let addr = format!("127.0.0.1:{}", crate::cluster::free_port());
        let p = c.spawn_meta(id, &addr, &[])?;
        c.metas.push(p);
        c.meta_addrs.push(addr.clone());
        let s: RaftStatus = meta
            .call(
                "/v1/admin/add-node",
                &AddNodeRequest {
                    id: id as u64,
                    addr,
                },
            )
            .await?;
        assert!(s.voters.contains_key(&(id as u64)), "{s:?}");
    }
    let l = c.leader().await?;
    assert_eq!(c.meta_at(l).status().await?.voters.len(), 5);
    // 5 -> 3: remove two of the original nodes.
    for id in [1u64, 2] {
        let s: RaftStatus = c
            .meta()
            .call("/v1/admin/remove-node", &RemoveNodeRequest { id })
            .await?;
        assert!(!s.voters.contains_key(&id), "{s:?}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await?;
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "writes stalled during membership changes");
    let l = c.leader().await?;
    let st = c.meta_at(l).status().await?;
    assert_eq!(st.voters.keys().copied().collect::<Vec<_>>(), vec![3, 4, 5]);
    let applied = st.last_applied.unwrap_or(0);
    for i in [2usize, 3, 4] {
        c.wait_applied(i, applied).await?;
        let keys = keys_on(&c, i, "members").await?;
        assert!(
            acked.is_subset(&keys),
            "node {} misses acknowledged writes",
            i + 1
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_is_linearizable_across_leader_kills() -> anyhow::Result<()> {
    let mut c = Cluster::start(Opts::default())?;
    let setup = c.meta();
    create_bucket(&setup, "lin").await?;
    let start = Instant::now();
    let history: Arc<Mutex<Vec<Event>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..6 {
        let (history, stop) = (history.clone(), stop.clone());
        let meta = c.meta();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && n < 80 {
                n += 1;
                let key = format!("r{}", (w + n) % 3);
                let choice = (w * 7 + n * 13) % 3;
                let (op, cmd) = match choice {
                    0 => {
                        let v = format!("w{w}-{n}");
                        (Op::Put(v.clone()), Some((v, PutCondition::None)))
                    }
                    1 => (Op::Get, None),
                    _ => {
                        let expected = format!("w{}-{}", (w + 1) % 6, n.saturating_sub(1));
                        let v = format!("c{w}-{n}");
                        (
                            Op::Cas {
                                expected: expected.clone(),
                                new: v.clone(),
                            },
                            Some((v, PutCondition::IfMatch(expected))),
                        )
                    }
                };
                let call = start.elapsed().as_nanos();
                let ret = match cmd {
                    Some((v, cond)) => {
                        let r = meta
                            .write(&Command::PutObject {
                                bucket: "lin".into(),
                                key: key.clone(),
                                manifest: fake_manifest(&v),
                                condition: cond.clone(),
                            })
                            .await;
                        match (r, &cond) {
                            (Ok(CommandResult::Ok), PutCondition::None) => Ret::Ok,
                            (Ok(CommandResult::Ok), _) => Ret::Cas(true),
                            (
                                Ok(CommandResult::Err(
                                    MetaError::PreconditionFailed(_) | MetaError::NoSuchKey { .. },
                                )),
                                _,
                            ) => Ret::Cas(false),
                            _ => Ret::Unknown,
                        }
                    }
                    None => {
                        let r = meta
                            .query(
                                &Query::GetObject {
                                    bucket: "lin".into(),
                                    key: key.clone(),
                                },
                                Consistency::Linearizable,
                            )
                            .await;
                        match r {
                            Ok(QueryResult::Object(m)) => Ret::Value(Some(m.etag)),
                            Ok(QueryResult::Err(MetaError::NoSuchKey { .. })) => Ret::Value(None),
                            _ => Ret::Unknown,
                        }
                    }
                };
                let done = if ret == Ret::Unknown {
                    u128::MAX
                } else {
                    start.elapsed().as_nanos()
                };
                // A read without an answer tells nothing: drop it.
                if !(op == Op::Get && ret == Ret::Unknown) {
                    history.lock().unwrap().push(Event {
                        key,
                        op,
                        ret,
                        call,
                        done,
                    });
                }
            }
        }));
    }
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let l = c.leader().await?;
        c.metas[l].kill_9();
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.metas[l].restart()?;
    }
    for t in tasks {
        t.await?;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let h = history.lock().unwrap().clone();
    assert!(h.len() > 100, "too few operations recorded: {}", h.len());
    if let Err(e) = linearizability::check(&h) {
        panic!("history is not linearizable: {e}\n{h:#?}");
    }
    Ok(())
}

/// Reference S3 listing over a sorted key set.
fn reference_list(keys: &BTreeSet<String>, req: &ListRequest) -> (Vec<String>, Vec<String>) {
    let mut entries = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    for k in keys.iter().filter(|k| k.starts_with(&req.prefix)) {
        if let Some(sa) = &req.start_after {
            if k <= sa {
                continue;
            }
        }
        if let Some(d) = req.delimiter.as_deref().filter(|d| !d.is_empty()) {
            if let Some(pos) = k[req.prefix.len()..].find(d) {
                let cp = k[..req.prefix.len() + pos + d.len()].to_string();
                if prefixes.last() != Some(&cp) {
                    prefixes.push(cp);
                }
                continue;
            }
        }
        entries.push(k.clone());
    }
    (entries, prefixes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listing_matches_s3_semantics() -> anyhow::Result<()> {
    let c = Cluster::start(Opts::default())?;
    let meta = c.meta();
    create_bucket(&meta, "list").await?;
    let keys: BTreeSet<String> = [
        "a",
        "a/",
        "a/b",
        "a/b/c",
        "a/c",
        "a/d/e",
        "ab",
        "b/x",
        "b/y/z",
        "c",
        "c/",
        "c//d",
        "d.txt",
        "photos/2024/jan.jpg",
        "photos/2024/feb.jpg",
        "photos/2025/mar.jpg",
        "photos/index.html",
        "z",
        "zz/top",
        "ü/é",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for k in &keys {
        assert_eq!(put(&meta, "list", k, "e").await?, CommandResult::Ok);
    }
    let cases: Vec<(&str, Option<&str>, Option<&str>)> = vec![
        ("", None, None),
        ("", Some("/"), None),
        ("a", Some("/"), None),
        ("a/", Some("/"), None),
        ("photos/", Some("/"), None),
        ("photos/2024/", Some("/"), None),
        ("", Some("/"), Some("a/b")),
        ("", None, Some("c")),
        ("c", Some("/"), None),
        ("c/", Some("/"), None),
        ("", Some("o"), None),
        ("zz", Some("/"), None),
        ("nothing", Some("/"), None),
        ("", Some("/"), Some("zzz")),
    ];
    for (prefix, delimiter, start_after) in cases {
        for max_keys in [1u32, 2, 3, 1000] {
            let base = ListRequest {
                bucket: "list".into(),
                prefix: prefix.into(),
                delimiter: delimiter.map(String::from),
                start_after: start_after.map(String::from),
                continuation: None,
                max_keys,
            };
            let (want_e, want_p) = reference_list(&keys, &base);
            let (mut got_e, mut got_p) = (Vec::new(), Vec::new());
            let mut req = base.clone();
            let mut pages = 0;
            loop {
                let QueryResult::List(page) = meta
                    .query(&Query::ListObjects(req.clone()), Consistency::Linearizable)
                    .await?
                else {
                    panic!("bad reply");
                };
                pages += 1;
                assert!(page.entries.len() + page.common_prefixes.len() <= max_keys as usize);
                got_e.extend(page.entries.into_iter().map(|e| e.key));
                got_p.extend(page.common_prefixes);
                if !page.truncated {
                    assert!(page.next_continuation.is_none());
                    break;
                }
                req.continuation = page.next_continuation;
                assert!(pages < 100, "listing does not terminate");
            }
            assert_eq!((&got_e, &got_p), (&want_e, &want_p), "case prefix={prefix:?} delimiter={delimiter:?} start_after={start_after:?} max_keys={max_keys}");
        }
    }
    // Bad continuation tokens are refused, not a panic.
    let r = meta
        .query(
            &Query::ListObjects(ListRequest {
                bucket: "list".into(),
                continuation: Some("zz".into()),
                max_keys: 10,
                ..Default::default()
            }),
            Consistency::Linearizable,
        )
        .await?;
    assert!(
        matches!(r, QueryResult::Err(MetaError::Invalid(_))),
        "{r:?}"
    );
    // Unknown bucket.
    let r = meta
        .query(
            &Query::ListObjects(ListRequest {
                bucket: "nope".into(),
                max_keys: 10,
                ..Default::default()
            }),
            Consistency::Linearizable,
        )
        .await?;
    assert!(
        matches!(r, QueryResult::Err(MetaError::NoSuchBucket(_))),
        "{r:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requires_the_cluster_secret_and_refuses_garbage() -> anyhow::Result<()> {
    let c = Cluster::start(Opts {
        metas: 1,
        ..Default::default()
    })?;
    c.leader().await?;
    let url = format!("http://{}/v1/read", c.meta_addrs[0]);
    let body = bytes::Bytes::from_static(br#""list_buckets""#);
    let r = http(Method::POST, &url, None, &[], body.clone()).await?;
    assert_eq!(r.status, 401);
    let r = http(Method::POST, &url, Some("wrong"), &[], body.clone()).await?;
    assert_eq!(r.status, 401);
    let r = http(Method::POST, &url, Some(SECRET), &[], body).await?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let raft = format!("http://{}/raft/append", c.meta_addrs[0]);
    let r = http(
        Method::POST,
        &raft,
        None,
        &[],
        bytes::Bytes::from_static(b"{}"),
    )
    .await?;
    assert_eq!(r.status, 401);
    let w = format!("http://{}/v1/write", c.meta_addrs[0]);
    let r = http(
        Method::POST,
        &w,
        Some(SECRET),
        &[],
        bytes::Bytes::from_static(b"{not json"),
    )
    .await?;
    assert_eq!(r.status, 400);
    let r = http(
        Method::POST,
        &w,
        Some(SECRET),
        &[],
        bytes::Bytes::from(vec![b'x'; 65 << 20]),
    )
    .await?;
    assert_eq!(r.status, 413);
    // Invalid names are refused by the state machine, nothing is stored.
    let meta = c.meta();
    let r = meta
        .write(&Command::CreateBucket {
            bucket: BucketInfo {
                name: "Bad_Name".into(),
                ec: EcParams::default(),
                shard_size: 1,
                created_ms: 0,
                owner: String::new(),
            },
        })
        .await?;
    assert!(
        matches!(r, CommandResult::Err(MetaError::Invalid(_))),
        "{r:?}"
    );
    let _ = BTreeMap::<u8, u8>::new();
    Ok(())
}
