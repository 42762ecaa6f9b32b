use super::*;
use crate::codec::EcParams;
use crate::ids::StripeId;

fn meta_for(payload: &[u8]) -> ShardMeta {
    ShardMeta::for_payload(
        ShardId::random(),
        StripeId::random(),
        1,
        EcParams::default(),
        payload,
    )
}

async fn open(dirs: &[&Path], reserve: Reserve) -> Store {
    let mut cfg = StoreConfig::new(dirs.iter().map(|d| d.to_path_buf()).collect());
    cfg.reserve = reserve;
    cfg.max_shard_size = 4 << 20;
    Store::open(cfg).await.unwrap()
}

fn count_files(dir: &Path, pred: &dyn Fn(&str) -> bool) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if pred(e.file_name().to_str().unwrap()) {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn reserve_parse() {
    assert_eq!("5%".parse::<Reserve>().unwrap(), Reserve::Percent(5.0));
    assert_eq!("1GiB".parse::<Reserve>().unwrap(), Reserve::Bytes(1 << 30));
    assert_eq!("10G".parse::<Reserve>().unwrap(), Reserve::Bytes(10 << 30));
    assert_eq!("3MB".parse::<Reserve>().unwrap(), Reserve::Bytes(3_000_000));
    assert_eq!("123".parse::<Reserve>().unwrap(), Reserve::Bytes(123));
    assert_eq!("auto".parse::<Reserve>().unwrap(), Reserve::Auto);
    for bad in ["", "5%%", "101%", "-1", "1XB", "99999999999PiB", "GiB"] {
        assert!(bad.parse::<Reserve>().is_err(), "{bad} accepted");
    }
    assert_eq!(Reserve::Auto.bytes_for(100 << 30), 1 << 30);
    assert_eq!(Reserve::Auto.bytes_for(1000), 50);
}

#[tokio::test]
async fn put_get_idempotent_conflict_delete() {
    let t = tempfile::tempdir().unwrap();
    let store = open(&[t.path()], Reserve::Bytes(0)).await;
    let payload = Bytes::from(vec![7u8; 3 << 20]);
    let meta = meta_for(&payload);
    assert_eq!(
        store.put(meta.clone(), payload.clone()).await.unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        store.put(meta.clone(), payload.clone()).await.unwrap(),
        PutOutcome::AlreadyStored
    );
    let (m, got) = store.get(meta.id).await.unwrap();
    assert_eq!(m, meta);
    assert_eq!(got, payload);
    assert_eq!(store.head(meta.id).await.unwrap(), meta);

    let mut other = meta_for(b"different");
    other.id = meta.id;
    assert!(matches!(
        store.put(other, Bytes::from_static(b"different")).await,
        Err(Error::Conflict { .. })
    ));
    let stats = store.stats().await.unwrap();
    assert_eq!(stats[0].shard_count, 1);
    assert_eq!(stats[0].used_by_shards, (3 << 20) + HEADER_LEN as u64);

    store.delete(meta.id).await.unwrap();
    assert!(matches!(
        store.get(meta.id).await,
        Err(Error::NoSuchShard { .. })
    ));
    assert!(matches!(
        store.delete(meta.id).await,
        Err(Error::NoSuchShard { .. })
    ));
    assert_eq!(store.stats().await.unwrap()[0].shard_count, 0);
}

#[tokio::test]
async fn bad_digest_and_length_leave_nothing() {
    let t = tempfile::tempdir().unwrap();
    let store = open(&[t.path()], Reserve::Bytes(0)).await;
    let mut meta = meta_for(b"abc");
    meta.blake3 = blake3::hash(b"abd");
    assert!(matches!(
        store.put(meta.clone(), Bytes::from_static(b"abc")).await,
        Err(Error::BadDigest(_))
    ));
    let meta = meta_for(b"abcd");
    assert!(matches!(
        store.put(meta.clone(), Bytes::from_static(b"abc")).await,
        Err(Error::BadDigest(_))
    ));
    assert!(matches!(
        store.put(meta.clone(), Bytes::from_static(b"abcde")).await,
        Err(Error::BadDigest(_))
    ));
    let big = meta_for(&vec![0u8; (4 << 20) + 1]);
    assert!(matches!(
        store.begin_put(big).await,
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(store.shard_count(), 0);
    assert_eq!(
        count_files(t.path(), &|n| n != "LOCK" && n != DISK_ID_FILE),
        0
    );
    // The reservation was released: the same id can be written now.
    assert_eq!(
        store.put(meta, Bytes::from_static(b"abcd")).await.unwrap(),
        PutOutcome::Created
    );
}

#[tokio::test]
async fn concurrent_writer_of_same_id_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let store = open(&[t.path()], Reserve::Bytes(0)).await;
    let meta = meta_for(b"hello");
    let PutStart::Write(w) = store.begin_put(meta.clone()).await.unwrap() else {
        panic!("expected a writer");
    };
    assert!(matches!(
        store.begin_put(meta.clone()).await,
        Err(Error::Busy { .. })
    ));
    let mut other = meta_for(b"other");
    other.id = meta.id;
    assert!(matches!(
        store.begin_put(other).await,
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        store.delete(meta.id).await,
        Err(Error::Busy { .. })
    ));
    drop(w);
    assert_eq!(count_files(t.path(), &|n| n.starts_with(TMP_PREFIX)), 0);
    store.put(meta, Bytes::from_static(b"hello")).await.unwrap();
}

#[tokio::test]
async fn corruption_is_quarantined_and_reported() {
    let t = tempfile::tempdir().unwrap();
    let store = open(&[t.path()], Reserve::Bytes(0)).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let payload = Bytes::from(vec![3u8; 1000]);
        let meta = meta_for(&payload);
        store.put(meta.clone(), payload).await.unwrap();
        ids.push(meta.id);
    }
    let path = |id: &ShardId| store.shard_path(0, id).unwrap();
    // Flip a payload byte.
    let mut b = std::fs::read(path(&ids[0])).unwrap();
    b[HEADER_LEN + 10] ^= 1;
    std::fs::write(path(&ids[0]), &b).unwrap();
    // Flip a header byte.
    let mut b = std::fs::read(path(&ids[1])).unwrap();
    b[50] ^= 1;
    std::fs::write(path(&ids[1]), &b).unwrap();
    // Truncate.
    let b = std::fs::read(path(&ids[2])).unwrap();
    std::fs::write(path(&ids[2]), &b[..b.len() - 1]).unwrap();

    assert!(matches!(
        store.get(ids[0]).await,
        Err(Error::CorruptShard { .. })
    ));
    assert!(matches!(
        store.head(ids[1]).await,
        Err(Error::CorruptShard { .. })
    ));
    assert!(matches!(
        store.get(ids[2]).await,
        Err(Error::CorruptShard { .. })
    ));
    for id in &ids {
        assert!(!path(id).exists());
        assert!(matches!(
            store.get(*id).await,
            Err(Error::NoSuchShard { .. })
        ));
    }
    assert_eq!(count_files(&t.path().join("quarantine"), &|_| true), 3);
    let (events, dropped) = store.take_corrupt_events();
    assert_eq!(dropped, 0);
    assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert!(store.take_corrupt_events().0.is_empty());
    assert_eq!(store.shard_count(), 0);
}

#[tokio::test]
async fn reopen_indexes_and_cleans_temp_files() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    let b = t.path().join("b");
    let mut ids = Vec::new();
    {
        let store = open(&[&a, &b], Reserve::Bytes(0)).await;
        for i in 0..20u8 {
            let payload = Bytes::from(vec![i; 100]);
            let meta = meta_for(&payload);
            store.put(meta.clone(), payload).await.unwrap();
            ids.push(meta.id);
        }
        // A second store on the same directories is refused while the
        // first holds the lock.
        assert!(Store::open(StoreConfig::new(vec![a.clone()]))
            .await
            .is_err());
        // Leave an interrupted write behind, as a crash would.
        let dir = store.shard_path(0, &ids[0]).unwrap();
        let dir = dir.parent().unwrap();
        std::fs::write(dir.join(format!("{TMP_PREFIX}{}-0", ids[0])), b"partial").unwrap();
    }
    assert_eq!(count_files(t.path(), &|n| n.starts_with(TMP_PREFIX)), 1);
    let store = open(&[&a, &b], Reserve::Bytes(0)).await;
    assert_eq!(count_files(t.path(), &|n| n.starts_with(TMP_PREFIX)), 0);
    assert_eq!(store.shard_count(), 20);
    for id in &ids {
        store.get(*id).await.unwrap();
    }
    // Both directories sit on one file system, so free space ties and
    // writes spread by bytes held.
    let stats = store.stats().await.unwrap();
    assert_eq!(
        stats.iter().map(|s| s.shard_count).collect::<Vec<_>>(),
        vec![10, 10]
    );
    // Pagination walks every id once, in order.
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(after, 7);
        if page.is_empty() {
            break;
        }
        after = page.last().copied();
        all.extend(page);
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(all, sorted);
}

#[tokio::test]
async fn reserve_refuses_writes() {
    let t = tempfile::tempdir().unwrap();
    let store = open(&[t.path()], Reserve::Percent(100.0)).await;
    let meta = meta_for(b"x");
    match store.put(meta, Bytes::from_static(b"x")).await {
        Err(e @ Error::DiskFull(_)) => {
            assert_eq!(e.http_status().0.as_u16(), 507);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        count_files(t.path(), &|n| n != "LOCK" && n != DISK_ID_FILE),
        0
    );
}

#[tokio::test]
async fn failed_device_takes_its_directory_out_of_service() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = open(&[a.path(), b.path()], Reserve::Bytes(0)).await;
    let mut on = [Vec::new(), Vec::new()];
    for i in 0..16u8 {
        let payload = Bytes::from(vec![i; 1000 + i as usize]);
        let meta = meta_for(&payload);
        store.put(meta.clone(), payload).await.unwrap();
        on[store.disk_of(&meta.id).unwrap()].push(meta.id);
    }
    assert!(!on[0].is_empty() && !on[1].is_empty(), "writes spread");
    let ids = store.disk_identities();
    assert_eq!(ids.len(), 2);

    // Not a device failure: nothing happens.
    let full = Error::io("write", std::io::Error::from_raw_os_error(28));
    let _ = store.inner.check_device::<()>(0, Err(full));
    assert!(store.failed_dirs().is_empty());
    // EIO: directory 0 leaves service.
    let eio = Error::io("fsync", std::io::Error::from_raw_os_error(5));
    let _ = store.inner.check_device::<()>(0, Err(eio));
    let failed = store.failed_dirs();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].1.contains("fsync"), "{failed:?}");
    for id in &on[0] {
        assert!(!store.contains(id));
        assert!(matches!(
            store.get(*id).await,
            Err(Error::NoSuchShard { .. })
        ));
    }
    for id in &on[1] {
        assert!(store.get(*id).await.is_ok(), "the other directory serves");
    }
    assert_eq!(store.disk_identities(), vec![ids[1].clone()]);
    let stats = store.stats().await.unwrap();
    assert!(stats[0].failed.is_some());
    assert_eq!((stats[0].capacity, stats[0].shard_count), (0, 0));
    assert_eq!(stats[1].shard_count, on[1].len() as u64);
    // New shards go to the directory in service only.
    for i in 0..8u8 {
        let payload = Bytes::from(vec![i; 10]);
        let meta = meta_for(&payload);
        store.put(meta.clone(), payload).await.unwrap();
        assert_eq!(store.disk_of(&meta.id), Some(1));
    }
    // The files on the failed directory were left alone.
    assert_eq!(count_files(a.path(), &|n| n.len() == 32), on[0].len(),);
}
