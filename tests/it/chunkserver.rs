//! The chunkserver as a real process: round trips, verification and
//! quarantine, crash safety under kill -9, the cluster secret, the disk
//! reserve and malformed requests.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_chunkserver::client::ShardClient;
use cairn_chunkserver::format::{ShardMeta, HEADER_LEN};
use cairn_chunkserver::store::PutOutcome;
use cairn_chunkserver::{EcParams, Error, ShardId, StripeId};
use cairn_metadata::net::HttpClient;
use hyper::{Method, StatusCode};
use rand::Rng;

use crate::common::{self, chunkserver, http, raw_tcp, SECRET};

fn client() -> ShardClient {
    ShardClient::new(HttpClient::default(), SECRET).with_timeout(Duration::from_secs(20))
}

fn random_bytes(len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    rand::rng().fill(&mut v[..]);
    Bytes::from(v)
}

fn shard(len: usize, index: u8) -> (ShardMeta, Bytes) {
    let payload = random_bytes(len);
    let meta = ShardMeta::for_payload(
        ShardId::random(),
        StripeId::random(),
        index,
        EcParams::default(),
        &payload,
    );
    (meta, payload)
}

/// Request headers, as name/value pairs.
type Headers = Vec<(&'static str, String)>;

/// The metadata headers of a PUT, with `over` replacing or adding some.
fn put_headers(meta: &ShardMeta, over: &[(&'static str, &str)]) -> Headers {
    let mut h: Headers = cairn_chunkserver::api::meta_headers(meta)
        .into_iter()
        .filter(|(k, _)| *k != cairn_chunkserver::api::HDR_LENGTH)
        .collect();
    for (k, v) in over {
        h.retain(|(name, _)| name != k);
        h.push((k, v.to_string()));
    }
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_secret_and_malformed_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let cs = chunkserver(tmp.path(), "cs1", 2, &[]).unwrap();
    let addr = cs.addr_str();
    let c = client();

    // Round trips from 1 byte to 8 MiB, whole and ranged.
    let sizes = [1usize, 2, 1000, 65_537, 1 << 20, (3 << 20) + 7, 8 << 20];
    let mut stored = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        let (meta, payload) = shard(len, (i % 6) as u8);
        assert_eq!(
            c.put(&addr, &meta, payload.clone()).await.unwrap(),
            PutOutcome::Created
        );
        let got = c
            .get(&addr, meta.id, None, Some(meta.blake3))
            .await
            .unwrap();
        assert_eq!(got, payload, "size {len}");
        let r = (len as u64 / 3)..(len as u64 / 3 * 2 + 1);
        let part = c
            .get(&addr, meta.id, Some(r.clone()), Some(meta.blake3))
            .await
            .unwrap();
        assert_eq!(
            part,
            payload.slice(r.start as usize..r.end as usize),
            "size {len}"
        );
        assert_eq!(c.head(&addr, meta.id).await.unwrap(), meta);
        stored.push(meta);
    }
    // Idempotent re-put (of the 8 MiB shard: the server answers without
    // storing it again, and the client still gets the reply); a different
    // payload under the same id conflicts.
    let meta0 = &stored[6];
    let again = c.get(&addr, meta0.id, None, None).await.unwrap();
    assert_eq!(
        c.put(&addr, meta0, again).await.unwrap(),
        PutOutcome::AlreadyStored
    );
    let (mut other, other_payload) = shard(1000, 0);
    other.id = meta0.id;
    assert!(matches!(
        c.put(&addr, &other, other_payload).await,
        Err(Error::Conflict { .. })
    ));
    // A wrong expected hash is refused, not served.
    assert!(matches!(
        c.get(&addr, meta0.id, None, Some(blake3::hash(b"nope")))
            .await,
        Err(Error::CorruptShard { .. })
    ));

    // Stats and inventory see both disks and every shard.
    let stats = c.stats(&addr).await.unwrap();
    assert_eq!(stats.zone, "cs1");
    assert_eq!(stats.disks.len(), 2);
    assert_eq!(stats.total.shard_count, sizes.len() as u64);
    assert!(stats.disks.iter().all(|d| d.shard_count > 0), "{stats:?}");
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = c.list(&addr, after, 3).await.unwrap();
        listed.extend(page.shards.iter().copied());
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let mut want: Vec<ShardId> = stored.iter().map(|m| m.id).collect();
    want.sort();
    assert_eq!(listed, want);

    // Delete.
    c.delete(&addr, stored[0].id).await.unwrap();
    assert!(matches!(
        c.get(&addr, stored[0].id, None, None).await,
        Err(Error::NoSuchShard { .. })
    ));
    assert!(matches!(
        c.delete(&addr, stored[0].id).await,
        Err(Error::NoSuchShard { .. })
    ));

    // The cluster secret: absent or wrong -> 401, on every endpoint.
    let base = format!("http://{addr}");
    let shard_url = format!("{base}/v1/shards/{}", stored[1].id);
    for secret in [None, Some("wrong"), Some("")] {
        for (m, url) in [
            (Method::GET, format!("{base}/v1/stats")),
            (Method::GET, shard_url.clone()),
            (Method::DELETE, shard_url.clone()),
            (Method::GET, format!("{base}/v1/shards")),
        ] {
            let r = http(m.clone(), &url, secret, &[], Bytes::new())
                .await
                .unwrap();
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{m} {url} {secret:?}");
            assert_eq!(r.error_code().as_deref(), Some("Unauthorized"));
        }
    }
    let (meta, payload) = shard(100, 1);
    let r = http(
        Method::PUT,
        &format!("{base}/v1/shards/{}", meta.id),
        Some("wrong"),
        &put_headers(&meta, &[]),
        payload.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(c.get(&addr, stored[1].id, None, None).await.is_ok());

    // Malformed requests: 4xx with a JSON code, never a panic.
    let put_url = format!("{base}/v1/shards/{}", meta.id);
    for bad_id in [
        "xyz",
        "0123456789ABCDEF0123456789abcdef",
        "0123456789abcdef0123456789abcde",
        "..%2f..%2fetc",
    ] {
        let r = http(
            Method::GET,
            &format!("{base}/v1/shards/{bad_id}"),
            Some(crate::common::cs_key()),
            &[],
            Bytes::new(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad_id}");
        assert_eq!(r.error_code().as_deref(), Some("BadRequest"));
    }
    let wrong_hash = blake3::hash(b"something else").to_hex().to_string();
    let cases: Vec<(Headers, StatusCode, &str)> = vec![
        (
            put_headers(&meta, &[("x-cairn-blake3", "abc")]),
            StatusCode::BAD_REQUEST,
            "BadRequest",
        ),
        (
            put_headers(&meta, &[("x-cairn-blake3", &"zz".repeat(32))]),
            StatusCode::BAD_REQUEST,
            "BadRequest",
        ),
        (
            put_headers(&meta, &[("x-cairn-blake3", &wrong_hash)]),
            StatusCode::BAD_REQUEST,
            "BadDigest",
        ),
        (
            put_headers(&meta, &[("x-cairn-stripe", "nope")]),
            StatusCode::BAD_REQUEST,
            "BadRequest",
        ),
        (
            put_headers(&meta, &[("x-cairn-index", "6")]),
            StatusCode::BAD_REQUEST,
            "BadRequest",
        ),
        (
            put_headers(&meta, &[("x-cairn-index", "-1")]),
            StatusCode::BAD_REQUEST,
            "BadRequest",
        ),
        (
            put_headers(&meta, &[("x-cairn-k", "0")]),
            StatusCode::BAD_REQUEST,
            "BadRequest",
        ),
        (
            put_headers(&meta, &[("x-cairn-k", "19")]),
            StatusCode::BAD_REQUEST,
            "BadRequest",
        ),
        (
            put_headers(&meta, &[])
                .into_iter()
                .filter(|(k, _)| *k != "x-cairn-m")
                .collect(),
            StatusCode::BAD_REQUEST,
            "BadRequest",
        ),
    ];
    for (headers, status, code) in cases {
        let r = http(
            Method::PUT,
            &put_url,
            Some(crate::common::cs_key()),
            &headers,
            payload.clone(),
        )
        .await
        .unwrap();
        assert_eq!(
            (r.status, r.error_code().as_deref()),
            (status, Some(code)),
            "{headers:?}"
        );
    }
    let r = http(
        Method::GET,
        &shard_url,
        Some(crate::common::cs_key()),
        &[("range", "bytes=999999999-".to_string())],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let r = http(
        Method::GET,
        &format!("{base}/v1/nope"),
        Some(crate::common::cs_key()),
        &[],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = http(
        Method::GET,
        &format!("{base}/v1/shards?limit=abc"),
        Some(crate::common::cs_key()),
        &[],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Raw HTTP: declared length larger than the limit -> 413 before any
    // body; chunked (no length) -> 411; a body shorter than declared never
    // gets a 2xx and leaves nothing behind.
    let head = |len: Option<u64>, extra: &str| {
        let mut s = format!(
            "PUT /v1/shards/{} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{SECRET_H}: {}\r\n",
            meta.id,
            crate::common::cs_key(),
            SECRET_H = "x-cairn-secret"
        );
        for (k, v) in put_headers(&meta, &[]) {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(l) = len {
            s.push_str(&format!("content-length: {l}\r\n"));
        }
        s.push_str(extra);
        s.push_str("\r\n");
        s
    };
    let r = raw_tcp(cs.addr(), head(Some(1 << 40), "").as_bytes(), false)
        .await
        .unwrap();
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    let mut req = head(None, "transfer-encoding: chunked\r\n").into_bytes();
    req.extend_from_slice(b"64\r\n");
    req.extend_from_slice(&payload);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    let r = raw_tcp(cs.addr(), &req, false).await.unwrap();
    assert!(r.starts_with("HTTP/1.1 411"), "{r}");
    let mut req = head(Some(100), "").into_bytes();
    req.extend_from_slice(&payload[..50]);
    let r = raw_tcp(cs.addr(), &req, true).await.unwrap();
    assert!(!r.starts_with("HTTP/1.1 2"), "{r}");
    assert!(matches!(
        c.get(&addr, meta.id, None, None).await,
        Err(Error::NoSuchShard { .. })
    ));
    // Still healthy, and the same id can now be written properly.
    assert_eq!(
        c.put(&addr, &meta, payload.clone()).await.unwrap(),
        PutOutcome::Created
    );
    assert!(common::find_files(tmp.path(), &|n| n.starts_with(".tmp-")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_is_detected_and_quarantined() {
    let tmp = tempfile::tempdir().unwrap();
    let cs = chunkserver(tmp.path(), "cs1", 1, &[]).unwrap();
    let addr = cs.addr_str();
    let c = client();
    // A recognisable payload so we can check it never leaks.
    let payload = Bytes::from(b"SECRET-PAYLOAD-".repeat(1000));
    let meta = ShardMeta::for_payload(
        ShardId::random(),
        StripeId::random(),
        0,
        EcParams::default(),
        &payload,
    );
    c.put(&addr, &meta, payload.clone()).await.unwrap();

    let hex = meta.id.to_string();
    let data = tmp.path().join("cs1/data0");
    let file = data
        .join("shards")
        .join(&hex[0..2])
        .join(&hex[2..4])
        .join(&hex);
    let mut bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len(), HEADER_LEN + payload.len());
    bytes[HEADER_LEN + 1234] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();

    let url = format!("http://{addr}/v1/shards/{}", meta.id);
    let r = http(
        Method::GET,
        &url,
        Some(crate::common::cs_key()),
        &[],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.error_code().as_deref(), Some("CorruptShard"));
    let body = String::from_utf8_lossy(&r.body);
    assert!(!body.contains("SECRET-PAYLOAD"), "{body}");
    // Quarantined, not deleted; gone from the index.
    assert!(!file.exists());
    let q = common::find_files(&data.join("quarantine"), &|n| n.starts_with(&hex));
    assert_eq!(q.len(), 1);
    assert_eq!(std::fs::read(&q[0]).unwrap(), bytes);
    assert!(matches!(
        c.get(&addr, meta.id, None, None).await,
        Err(Error::NoSuchShard { .. })
    ));
    // Repair can write it again.
    c.put(&addr, &meta, payload.clone()).await.unwrap();
    assert_eq!(
        c.get(&addr, meta.id, None, Some(meta.blake3))
            .await
            .unwrap(),
        payload
    );

    // Same through the typed client, on a ranged read.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[HEADER_LEN] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    assert!(matches!(
        c.get(&addr, meta.id, Some(0..10), Some(meta.blake3)).await,
        Err(Error::CorruptShard { .. })
    ));
    assert_eq!(
        common::find_files(&data.join("quarantine"), &|_| true).len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_puts_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cs = chunkserver(tmp.path(), "cs1", 2, &[]).unwrap();
    let addr = cs.addr_str();
    let acked: Arc<Mutex<Vec<ShardMeta>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..6u8 {
        let (addr, acked, stop) = (addr.clone(), acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let c = client().with_timeout(Duration::from_secs(5));
            let mut failures = 0;
            // Bounded: at most 200 puts per task.
            for i in 0..200u32 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) || failures > 3 {
                    break;
                }
                let len = rand::rng().random_range(1..(1usize << 20) + 4096);
                let (meta, payload) = shard(len, ((i + u32::from(t)) % 6) as u8);
                match c.put(&addr, &meta, payload).await {
                    Ok(PutOutcome::Created) => acked.lock().unwrap().push(meta),
                    Ok(PutOutcome::AlreadyStored) => unreachable!(),
                    Err(_) => failures += 1,
                }
            }
        }));
    }
    // Kill once enough writes are acknowledged, with others mid-stream.
    let deadline = Instant::now() + Duration::from_secs(15);
    while acked.lock().unwrap().len() < 40 {
        assert!(Instant::now() < deadline, "puts too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cs.kill_9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let on_disk_tmp = common::find_files(tmp.path(), &|n| n.starts_with(".tmp-"));
    eprintln!(
        "{} acked, {} temp files left by the crash",
        acked.len(),
        on_disk_tmp.len()
    );

    cs.restart().unwrap();
    let addr = cs.addr_str();
    assert!(common::find_files(tmp.path(), &|n| n.starts_with(".tmp-")).is_empty());
    let c = client();
    for meta in &acked {
        assert_eq!(c.head(&addr, meta.id).await.unwrap(), *meta);
        c.get(&addr, meta.id, None, Some(meta.blake3))
            .await
            .unwrap();
    }
    // Every visible shard is whole and verified: no partial writes.
    let mut after = None;
    let mut visible = 0;
    loop {
        let page = c.list(&addr, after, 1000).await.unwrap();
        for id in &page.shards {
            let m = c.head(&addr, *id).await.unwrap();
            c.get(&addr, *id, None, Some(m.blake3)).await.unwrap();
            visible += 1;
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert!(visible >= acked.len());
    assert_eq!(
        c.stats(&addr).await.unwrap().total.shard_count,
        visible as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_refuses_writes_and_sigterm_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cs = chunkserver(tmp.path(), "cs1", 1, &["--reserve", "1PiB"]).unwrap();
    let addr = cs.addr_str();
    let c = client();
    // A large body too: refused before anything is stored, with the typed
    // reply (the server reads and discards the body first).
    for len in [4 << 20, 1000] {
        let (meta, payload) = shard(len, 0);
        match c.put(&addr, &meta, payload.clone()).await {
            Err(Error::DiskFull(msg)) => assert!(msg.contains("reserve"), "{msg}"),
            other => panic!("expected DiskFull, got {other:?}"),
        }
    }
    let (meta, payload) = shard(1000, 0);
    let r = http(
        Method::PUT,
        &format!("http://{addr}/v1/shards/{}", meta.id),
        Some(crate::common::cs_key()),
        &put_headers(&meta, &[]),
        payload,
    )
    .await
    .unwrap();
    assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(r.error_code().as_deref(), Some("DiskFull"));
    assert!(common::find_files(&tmp.path().join("cs1/data0/shards"), &|_| true).is_empty());
    let stats = c.stats(&addr).await.unwrap();
    assert!(stats.disks[0].reserve > stats.disks[0].free);

    let status = cs.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}");
    assert!(cs.log_tail(5).contains("stopped"), "{}", cs.log_tail(20));
}
