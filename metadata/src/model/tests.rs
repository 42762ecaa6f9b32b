//! Unit tests of the model: commands applied to a real (temporary) redb
//! database.

use super::*;
use redb::ReadableDatabase;

fn db() -> redb::Database {
    match redb::Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()) {
        Ok(d) => d,
        Err(e) => panic!("in-memory redb: {e}"),
    }
}

/// The reverse index and bucket counters `apply` maintained equal the
/// ones the migration builds from the rows, and the audit finds no index
/// disagreement.
fn assert_index_matches(db: &redb::Database) {
    let rows = |txn: &redb::WriteTransaction| -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for def in [
            shard_index::SHARD_OWNERS,
            shard_index::PLACED,
            stats::BUCKET_STATS,
        ] {
            let t = txn.open_table(def).expect("table");
            out.extend(t.iter().expect("iter").map(|r| {
                let (k, v) = r.expect("row");
                (k.value().to_vec(), v.value().to_vec())
            }));
        }
        out
    };
    let txn = db.begin_write().expect("begin");
    let kept = rows(&txn);
    txn.open_table(COUNTERS)
        .expect("counters")
        .remove(migrate::SHARD_INDEX_BUILT)
        .expect("remove");
    build_shard_index(&txn).expect("rebuild");
    let rebuilt = rows(&txn);
    txn.abort().expect("abort");
    assert_eq!(kept, rebuilt, "maintained index differs from a rebuild");
    let txn = db.begin_read().expect("read");
    let mut cursor: Option<String> = None;
    loop {
        let r = query(
            &txn,
            &Query::AuditPlacement {
                cursor: cursor.clone(),
                stripes: Some(3),
            },
        );
        let Ok(QueryResult::Audit(page)) = r else {
            panic!("audit: {r:?}")
        };
        let index: Vec<_> = page
            .violations
            .iter()
            .filter(|v| v.kind == ViolationKind::Index)
            .collect();
        assert!(index.is_empty(), "{index:?}");
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
}

fn run(db: &redb::Database, cmd: Command) -> CommandResult {
    let txn = db.begin_write().expect("begin");
    let r = apply(&txn, &cmd).expect("apply");
    txn.commit().expect("commit");
    r
}

fn gc(db: &redb::Database, cs: ChunkserverId) -> Vec<ShardId> {
    let txn = db.begin_read().expect("read");
    gc_pending(&txn, cs, 1000).expect("gc")
}

fn part(number: u32, size: u64, shard: u8) -> UploadPart {
    UploadPart {
        info: PartInfo {
            number,
            size,
            etag: format!("{shard:032x}"),
            checksums: Default::default(),
            stripes: 1,
        },
        stripes: vec![StripeManifest {
            id: StripeId([shard; 16]),
            len: size,
            shards: vec![ShardLoc {
                chunkserver: Some(1),
                shard: ShardId([shard; 16]),
                blake3: Hash32([0; 32]),
            }],
        }],
        created_ms: 0,
    }
}

fn complete(up: StripeId, parts: &[(u32, u8)], min: u64) -> Command {
    Command::CompleteUpload {
        bucket: "bkt".into(),
        key: "k".into(),
        upload: up,
        parts: parts
            .iter()
            .map(|&(number, s)| CompletePart {
                number,
                etag: format!("\"{s:032x}\""),
            })
            .collect(),
        min_part_size: min,
        etag: "x-2".into(),
        version: StripeId([9; 16]),
        checksums: Default::default(),
        now_ms: 1,
        condition: PutCondition::None,
    }
}

fn stripe_on(servers: &[u64], tag: u8) -> StripeManifest {
    StripeManifest {
        id: StripeId([tag; 16]),
        len: 4,
        shards: servers
            .iter()
            .enumerate()
            .map(|(i, cs)| ShardLoc {
                chunkserver: Some(*cs),
                shard: ShardId([tag.wrapping_add(i as u8); 16]),
                blake3: Hash32([0; 32]),
            })
            .collect(),
    }
}

fn object(db: &redb::Database) -> ObjectManifest {
    let txn = db.begin_read().expect("read");
    match query(
        &txn,
        &Query::GetObject {
            bucket: "bkt".into(),
            key: "k".into(),
        },
    ) {
        Ok(QueryResult::Object(m)) => m,
        other => panic!("{other:?}"),
    }
}

/// CommitRepair moves a placement only against the planned version and
/// location; otherwise the rebuilt copy goes to GC (unless the manifest
/// already places it there). RemoveChunkserver waits until nothing
/// names the chunkserver.
/// A chunkserver registering anew at an address another id holds
/// (its whole data dir was replaced) turns the old id Down at once;
/// other addresses are untouched.
#[test]
fn registering_at_a_taken_address_marks_the_old_id_down() {
    let db = db();
    let reg = |addr: &str| Command::RegisterChunkserver {
        addr: addr.into(),
        zone: "z".into(),
        capacity: 1,
        free: 1,
        now_ms: 0,
    };
    assert_eq!(run(&db, reg("a")), CommandResult::Registered { id: 1 });
    assert_eq!(run(&db, reg("b")), CommandResult::Registered { id: 2 });
    assert_eq!(run(&db, reg("a")), CommandResult::Registered { id: 3 });
    let states: Vec<(ChunkserverId, ChunkserverState)> =
        chunkservers(&db.begin_read().expect("read"))
            .expect("list")
            .into_iter()
            .map(|c| (c.id, c.state))
            .collect();
    assert_eq!(
        states,
        vec![
            (1, ChunkserverState::Down),
            (2, ChunkserverState::Up),
            (3, ChunkserverState::Up)
        ]
    );
}

/// Bucket "bkt" (1+1, 4-byte shards), chunkservers 1..=`servers` in one
/// zone, and a one-stripe manifest on chunkservers 1 and 2 (shards
/// 0x10.. and 0x11..), not yet put.
fn one_stripe_object(db: &redb::Database, servers: u64) -> ObjectManifest {
    let bucket = BucketInfo {
        name: "bkt".into(),
        ec: EcParams { k: 1, m: 1 },
        shard_size: 4,
        created_ms: 0,
        owner: String::new(),
    };
    assert_eq!(run(db, Command::CreateBucket { bucket }), CommandResult::Ok);
    for id in 1..=servers {
        let r = run(
            db,
            Command::RegisterChunkserver {
                addr: format!("cs{id}"),
                zone: "z".into(),
                capacity: 1,
                free: 1,
                now_ms: 0,
            },
        );
        assert_eq!(r, CommandResult::Registered { id });
    }
    crate::types::ObjectManifest {
        version: StripeId([1; 16]),
        size: 4,
        etag: "e".into(),
        content_type: None,
        headers: Default::default(),
        user_meta: Default::default(),
        checksums: Default::default(),
        created_ms: 0,
        ec: EcParams { k: 1, m: 1 },
        shard_size: 4,
        stripes: vec![stripe_on(&[1, 2], 0x10)],
        parts: Vec::new(),
        inline: None,
        tags: Default::default(),
    }
}

#[test]
fn commit_repair_is_conditional() {
    let db = db();
    let mut m = one_stripe_object(&db, 3);
    let put = |m: &ObjectManifest| Command::PutObject {
        bucket: "bkt".into(),
        key: "k".into(),
        manifest: m.clone(),
        condition: PutCondition::None,
    };
    assert_eq!(run(&db, put(&m)), CommandResult::Ok);
    let shard = ShardId([0x10; 16]);
    let bad = Command::ReportBadShards {
        chunkserver: 1,
        shards: vec![shard],
    };
    assert_eq!(run(&db, bad), CommandResult::Ok);
    let commit = |version: StripeId, from: Option<u64>, to: u64| Command::CommitRepair {
        bucket: "bkt".into(),
        key: "k".into(),
        version,
        stripe: 0,
        index: 0,
        shard,
        from,
        to,
        reused: false,
    };
    // Planned against cs1, rebuilt on cs3: moves, old copy to GC.
    assert_eq!(run(&db, commit(m.version, Some(1), 3)), CommandResult::Ok);
    assert_eq!(object(&db).stripes[0].shards[0].chunkserver, Some(3));
    assert_eq!(gc(&db, 1), vec![shard]);
    assert!(bad_shards(&db.begin_read().expect("read"))
        .expect("bad")
        .is_empty());
    // The same report again: stale, and the copy on cs3 is kept.
    assert!(matches!(
        run(&db, commit(m.version, Some(1), 3)),
        CommandResult::Err(MetaError::Stale(_))
    ));
    assert!(gc(&db, 3).is_empty());
    // A repair planned against an overwritten version: its copy is GC'd;
    // the overwrite drops the old version's repair-queue items.
    let item = RepairItem {
        bucket: "bkt".into(),
        key: "k".into(),
        version: m.version,
        stripe: 0,
        index: 1,
        chunkserver: Some(2),
        reason: "test".into(),
    };
    let queue = Command::QueueRepair { items: vec![item] };
    assert_eq!(run(&db, queue), CommandResult::Ok);
    m.version = StripeId([2; 16]);
    m.stripes = vec![stripe_on(&[2, 3], 0x20)];
    assert_eq!(run(&db, put(&m)), CommandResult::Ok);
    match query(
        &db.begin_read().expect("read"),
        &Query::RepairQueue { limit: 10 },
    ) {
        Ok(QueryResult::Repairs(r)) => assert!(r.is_empty(), "{r:?}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        run(&db, commit(StripeId([1; 16]), Some(3), 2)),
        CommandResult::Err(MetaError::Stale(_))
    ));
    assert!(gc(&db, 2).contains(&shard));
    // Rebuilt in place (the bad copy was quarantined): nothing to GC.
    let in_place = Command::CommitRepair {
        bucket: "bkt".into(),
        key: "k".into(),
        version: m.version,
        stripe: 0,
        index: 1,
        shard: ShardId([0x21; 16]),
        from: Some(3),
        to: 3,
        reused: false,
    };
    assert_eq!(run(&db, in_place), CommandResult::Ok);
    assert!(!gc(&db, 3).contains(&ShardId([0x21; 16])));
    // A target whose copy of the shard is queued for deletion (a stale
    // copy found unnamed by the inventory) is refused: the queued
    // delete would remove the live copy.
    let doomed = ShardId([0x20; 16]);
    let queue = Command::QueueGc {
        chunkserver: 1,
        shards: vec![doomed],
    };
    assert_eq!(run(&db, queue), CommandResult::Ok);
    let onto_doomed = Command::CommitRepair {
        bucket: "bkt".into(),
        key: "k".into(),
        version: m.version,
        stripe: 0,
        index: 0,
        shard: doomed,
        from: Some(2),
        to: 1,
        reused: false,
    };
    assert!(matches!(
        run(&db, onto_doomed),
        CommandResult::Err(MetaError::Stale(_))
    ));
    assert_eq!(object(&db).stripes[0].shards[0].chunkserver, Some(2));
    // Removal: refused while Up, and while a manifest names it.
    let remove = |id| Command::RemoveChunkserver { id };
    assert!(matches!(
        run(&db, remove(2)),
        CommandResult::Err(MetaError::Invalid(_))
    ));
    let drain = |id| Command::SetChunkserverState {
        id,
        state: ChunkserverState::Draining,
    };
    assert_eq!(run(&db, drain(2)), CommandResult::Ok);
    assert!(matches!(
        run(&db, remove(2)),
        CommandResult::Err(MetaError::Invalid(_))
    ));
    assert_eq!(run(&db, drain(1)), CommandResult::Ok);
    assert_eq!(run(&db, remove(1)), CommandResult::Ok);
    assert!(gc(&db, 1).is_empty(), "its GC entries went with it");
    assert!(matches!(
        run(&db, remove(1)),
        CommandResult::Err(MetaError::NoSuchChunkserver(1))
    ));
    assert_index_matches(&db);
}

/// A completion whose parts add up to more than 5 TiB is refused.
#[test]
fn multipart_completion_over_5_tib_is_refused() {
    let db = db();
    let bucket = BucketInfo {
        name: "bkt".into(),
        ec: EcParams::default(),
        shard_size: 1 << 20,
        created_ms: 0,
        owner: String::new(),
    };
    assert_eq!(
        run(&db, Command::CreateBucket { bucket }),
        CommandResult::Ok
    );
    let up = StripeId([8; 16]);
    let upload = UploadInfo {
        id: up,
        bucket: "bkt".into(),
        key: "k".into(),
        initiated_ms: 0,
        owner: String::new(),
        content_type: None,
        headers: Default::default(),
        user_meta: Default::default(),
        checksum_algorithm: None,
        checksum_type: None,
        ec: EcParams::default(),
        shard_size: 1 << 20,
        tags: Default::default(),
    };
    assert_eq!(
        run(&db, Command::CreateUpload { upload }),
        CommandResult::Ok
    );
    for (n, shard) in [(1, 0x1), (2, 0x2)] {
        let cmd = Command::PutPart {
            bucket: "bkt".into(),
            key: "k".into(),
            upload: up,
            part: part(n, 3 << 40, shard),
        };
        assert_eq!(run(&db, cmd), CommandResult::Ok);
    }
    assert!(matches!(
        run(&db, complete(up, &[(1, 0x1), (2, 0x2)], 0)),
        CommandResult::Err(MetaError::EntityTooLarge(_))
    ));
    assert_eq!(
        run(&db, complete(up, &[(1, 0x1)], 0)),
        CommandResult::Ok,
        "one 3 TiB part is within the limit"
    );
    assert_index_matches(&db);
}

/// Replaced, unused and aborted parts' shards all reach the GC queue;
/// a refused completion changes nothing; the completed manifest
/// concatenates the chosen parts' stripes.
#[test]
fn multipart_lifecycle_and_gc() {
    let db = db();
    let bucket = BucketInfo {
        name: "bkt".into(),
        ec: EcParams::default(),
        shard_size: 1 << 20,
        created_ms: 0,
        owner: String::new(),
    };
    assert_eq!(
        run(&db, Command::CreateBucket { bucket }),
        CommandResult::Ok
    );
    let up = StripeId([7; 16]);
    let upload = UploadInfo {
        id: up,
        bucket: "bkt".into(),
        key: "k".into(),
        initiated_ms: 0,
        owner: String::new(),
        content_type: Some("x/y".into()),
        headers: Default::default(),
        user_meta: Default::default(),
        checksum_algorithm: None,
        checksum_type: None,
        ec: EcParams::default(),
        shard_size: 1 << 20,
        tags: Default::default(),
    };
    assert_eq!(
        run(&db, Command::CreateUpload { upload }),
        CommandResult::Ok
    );
    let put = |p: UploadPart| Command::PutPart {
        bucket: "bkt".into(),
        key: "k".into(),
        upload: up,
        part: p,
    };
    assert_eq!(run(&db, put(part(1, 10, 0xa))), CommandResult::Ok);
    assert_eq!(run(&db, put(part(1, 10, 0xb))), CommandResult::Ok);
    assert_eq!(gc(&db, 1), vec![ShardId([0xa; 16])]);
    assert_eq!(run(&db, put(part(2, 5, 0xc))), CommandResult::Ok);
    assert_eq!(run(&db, put(part(3, 5, 0xd))), CommandResult::Ok);

    assert!(matches!(
        run(&db, complete(up, &[(1, 0xb), (2, 0xc)], 100)),
        CommandResult::Err(MetaError::EntityTooSmall(_))
    ));
    assert!(matches!(
        run(&db, complete(up, &[(2, 0xc), (1, 0xb)], 0)),
        CommandResult::Err(MetaError::InvalidPartOrder(_))
    ));
    assert!(matches!(
        run(&db, complete(up, &[(1, 0xc)], 0)),
        CommandResult::Err(MetaError::InvalidPart(_))
    ));
    assert_eq!(gc(&db, 1).len(), 1, "refusals change nothing");

    assert_eq!(
        run(&db, complete(up, &[(1, 0xb), (2, 0xc)], 0)),
        CommandResult::Ok
    );
    let txn = db.begin_read().expect("read");
    let m = match query(
        &txn,
        &Query::GetObject {
            bucket: "bkt".into(),
            key: "k".into(),
        },
    ) {
        Ok(QueryResult::Object(m)) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!(m.size, 15);
    assert_eq!(m.content_type.as_deref(), Some("x/y"));
    assert_eq!(
        m.stripes.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![StripeId([0xb; 16]), StripeId([0xc; 16])]
    );
    assert_eq!(m.parts.len(), 2);
    drop(txn);
    let pending = gc(&db, 1);
    assert!(pending.contains(&ShardId([0xd; 16])), "unused part 3");
    assert!(!pending.contains(&ShardId([0xb; 16])));
    assert!(matches!(
        run(&db, complete(up, &[(1, 0xb)], 0)),
        CommandResult::Err(MetaError::NoSuchUpload(_))
    ));

    let up2 = StripeId([8; 16]);
    match db.begin_read().map(|t| {
        query(
            &t,
            &Query::ListUploads {
                bucket: "bkt".into(),
                prefix: String::new(),
                after: None,
                max: 10,
            },
        )
    }) {
        Ok(Ok(QueryResult::Uploads { uploads, .. })) => assert!(uploads.is_empty()),
        other => panic!("{other:?}"),
    }
    let upload = UploadInfo {
        id: up2,
        bucket: "bkt".into(),
        key: "k".into(),
        initiated_ms: 0,
        owner: String::new(),
        content_type: None,
        headers: Default::default(),
        user_meta: Default::default(),
        checksum_algorithm: None,
        checksum_type: None,
        ec: EcParams::default(),
        shard_size: 1 << 20,
        tags: Default::default(),
    };
    assert_eq!(
        run(&db, Command::CreateUpload { upload }),
        CommandResult::Ok
    );
    let mut p = part(1, 10, 0xe);
    p.info.number = 1;
    assert_eq!(
        run(
            &db,
            Command::PutPart {
                bucket: "bkt".into(),
                key: "k".into(),
                upload: up2,
                part: p,
            }
        ),
        CommandResult::Ok
    );
    let abort = Command::AbortUpload {
        bucket: "bkt".into(),
        key: "k".into(),
        upload: up2,
    };
    assert_eq!(run(&db, abort.clone()), CommandResult::Ok);
    assert!(gc(&db, 1).contains(&ShardId([0xe; 16])));
    assert!(matches!(
        run(&db, abort),
        CommandResult::Err(MetaError::NoSuchUpload(_))
    ));
    assert_index_matches(&db);
}

fn at(now_ms: u64, cmd: Command) -> Command {
    Command::At {
        now_ms,
        inner: Box::new(cmd),
    }
}

/// A bucket "bkt" (1+1, 4-byte shards) and chunkservers 1..=3.
fn small_cluster(db: &redb::Database) {
    let bucket = BucketInfo {
        name: "bkt".into(),
        ec: EcParams { k: 1, m: 1 },
        shard_size: 4,
        created_ms: 0,
        owner: String::new(),
    };
    assert_eq!(run(db, Command::CreateBucket { bucket }), CommandResult::Ok);
    for id in 1..=3u64 {
        let r = run(
            db,
            Command::RegisterChunkserver {
                addr: format!("cs{id}"),
                zone: "z".into(),
                capacity: 1,
                free: 1,
                now_ms: 0,
            },
        );
        assert_eq!(r, CommandResult::Registered { id });
    }
}

fn manifest(version: u8, stripes: Vec<StripeManifest>) -> ObjectManifest {
    ObjectManifest {
        version: StripeId([version; 16]),
        size: 4,
        etag: "e".into(),
        content_type: None,
        headers: Default::default(),
        user_meta: Default::default(),
        checksums: Default::default(),
        created_ms: 0,
        ec: EcParams { k: 1, m: 1 },
        shard_size: 4,
        stripes,
        parts: Vec::new(),
        inline: None,
        tags: Default::default(),
    }
}

fn put(m: &ObjectManifest) -> Command {
    Command::PutObject {
        bucket: "bkt".into(),
        key: "k".into(),
        manifest: m.clone(),
        condition: PutCondition::None,
    }
}

fn due(db: &redb::Database, cs: ChunkserverId, before: u64) -> Vec<ShardId> {
    let txn = db.begin_read().expect("read");
    gc_due(&txn, cs, 1000, before).expect("gc due")
}

/// A manifest committed with an unplaced shard queues its repair in the
/// same transaction; overwriting the object drops it.
#[test]
fn unplaced_shards_are_queued_for_repair_on_commit() {
    let db = db();
    let bucket = BucketInfo {
        name: "bkt".into(),
        ec: EcParams { k: 1, m: 1 },
        shard_size: 4,
        created_ms: 0,
        owner: String::new(),
    };
    assert_eq!(
        run(&db, Command::CreateBucket { bucket }),
        CommandResult::Ok
    );
    for id in 1..=2u64 {
        let r = run(
            &db,
            Command::RegisterChunkserver {
                addr: format!("cs{id}"),
                zone: format!("z{id}"),
                capacity: 1,
                free: 1,
                now_ms: 0,
            },
        );
        assert_eq!(r, CommandResult::Registered { id });
    }
    let mut stripe = stripe_on(&[1, 2], 0x40);
    stripe.shards[1].chunkserver = None;
    let m = manifest(1, vec![stripe]);
    assert_eq!(run(&db, put(&m)), CommandResult::Ok);
    let items = repair_items(&db.begin_read().expect("read")).expect("items");
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(
        (items[0].version, items[0].stripe, items[0].index),
        (m.version, 0, 1)
    );
    let m2 = manifest(2, vec![stripe_on(&[1, 2], 0x50)]);
    assert_eq!(run(&db, put(&m2)), CommandResult::Ok);
    assert!(repair_items(&db.begin_read().expect("read"))
        .expect("items")
        .is_empty());
    assert_index_matches(&db);
}

/// Overwritten shards are queued with the entry's time and handed out
/// only once they are older than the delay; GcDone clears both rows.
/// Legacy rows (empty value) are migrated to "due at once".
#[test]
fn gc_rows_are_due_after_the_delay() {
    let db = db();
    small_cluster(&db);
    let old = manifest(1, vec![stripe_on(&[1, 2], 0x10)]);
    assert_eq!(run(&db, at(1_000, put(&old))), CommandResult::Ok);
    let new = manifest(2, vec![stripe_on(&[1, 2], 0x20)]);
    assert_eq!(run(&db, at(5_000, put(&new))), CommandResult::Ok);
    assert!(
        due(&db, 1, 4_999).is_empty(),
        "queued at 5000: not due before"
    );
    assert_eq!(due(&db, 1, 5_000), vec![ShardId([0x10; 16])]);
    assert_eq!(gc(&db, 2), vec![ShardId([0x11; 16])]);
    // Queued again later: keeps its first time.
    let requeue = Command::QueueGc {
        chunkserver: 1,
        shards: vec![ShardId([0x10; 16])],
    };
    assert_eq!(run(&db, at(9_000, requeue)), CommandResult::Ok);
    assert_eq!(due(&db, 1, 5_000), vec![ShardId([0x10; 16])]);
    let done = Command::GcDone {
        chunkserver: 1,
        shards: vec![ShardId([0x10; 16])],
    };
    assert_eq!(run(&db, at(10_000, done)), CommandResult::Ok);
    assert!(due(&db, 1, u64::MAX).is_empty());
    assert!(gc(&db, 1).is_empty());

    // A row from an older binary: empty value, no index row.
    let txn = db.begin_write().expect("begin");
    txn.open_table(GC)
        .expect("gc")
        .insert(gc_key(3, &ShardId([0x77; 16])).as_slice(), [].as_slice())
        .expect("insert");
    txn.commit().expect("commit");
    assert!(due(&db, 3, u64::MAX).is_empty());
    let txn = db.begin_write().expect("begin");
    migrate(&txn).expect("migrate");
    txn.commit().expect("commit");
    assert_eq!(due(&db, 3, 0), vec![ShardId([0x77; 16])]);
    assert_index_matches(&db);
}

/// Item 7: the chunkserver deleted its (stale) copy and, in the same
/// heartbeat, reported a repair it satisfied with "the copy already
/// here". GcDone applied first must not let that repair make the
/// deleted copy live; a freshly written copy is accepted.
#[test]
fn gc_done_then_reused_commit_repair_is_refused() {
    let db = db();
    small_cluster(&db);
    let m = manifest(1, vec![stripe_on(&[1, 2], 0x10)]);
    assert_eq!(run(&db, at(1_000, put(&m))), CommandResult::Ok);
    let shard = ShardId([0x10; 16]);
    // Chunkserver 3 held a stale copy of the shard, queued for GC.
    let stale = Command::QueueGc {
        chunkserver: 3,
        shards: vec![shard],
    };
    assert_eq!(run(&db, at(2_000, stale)), CommandResult::Ok);
    let commit = |reused| Command::CommitRepair {
        bucket: "bkt".into(),
        key: "k".into(),
        version: m.version,
        stripe: 0,
        index: 0,
        shard,
        from: Some(1),
        to: 3,
        reused,
    };
    // Both in one entry, GcDone first (the old heartbeat order).
    let both = Command::Batch {
        cmds: vec![
            Command::GcDone {
                chunkserver: 3,
                shards: vec![shard],
            },
            commit(true),
        ],
    };
    match run(&db, at(3_000, both)) {
        CommandResult::Batch(r) => {
            assert_eq!(r[0], CommandResult::Ok);
            assert!(
                matches!(&r[1], CommandResult::Err(MetaError::Stale(_))),
                "{:?}",
                r[1]
            );
        }
        other => panic!("{other:?}"),
    }
    let live = object(&db);
    assert_eq!(live.stripes[0].shards[0].chunkserver, Some(1));
    // The claimed copy is queued for GC, in case it does exist.
    assert!(gc(&db, 3).contains(&shard));
    // A fresh rebuild (written after the delete) commits, and clears
    // the tombstone.
    let done = Command::GcDone {
        chunkserver: 3,
        shards: vec![shard],
    };
    assert_eq!(run(&db, at(4_000, done)), CommandResult::Ok);
    assert_eq!(run(&db, at(5_000, commit(false))), CommandResult::Ok);
    assert_eq!(object(&db).stripes[0].shards[0].chunkserver, Some(3));
    let txn = db.begin_read().expect("read");
    let t = txn.open_table(GC_DELETED).expect("tombstones");
    assert!(t.get(gc_key(3, &shard).as_slice()).expect("get").is_none());
    assert_index_matches(&db);
}

fn intent_rows(db: &redb::Database) -> (u64, u64, u64, u64) {
    let txn = db.begin_read().expect("read");
    (
        table_len(&txn, INTENTS).expect("len"),
        table_len(&txn, INTENT_EXPIRY).expect("len"),
        table_len(&txn, INTENT_SHARDS).expect("len"),
        table_len(&txn, INTENT_ROWS).expect("len"),
    )
}

/// Write intents: registered shards are named for orphan GC; a commit
/// under a live intent succeeds and drops it; an expired, unknown or
/// incomplete intent, or a shard queued for GC, is refused as
/// retryable; the reaper drops expired intents in bounded steps.
#[test]
fn write_intents_guard_commits() {
    let db = db();
    small_cluster(&db);
    let intent = StripeId([0xa1; 16]);
    let m = manifest(1, vec![stripe_on(&[1, 2], 0x10), stripe_on(&[2, 3], 0x20)]);
    let reg = |shards: Vec<(u64, u8)>| Command::RegisterIntent {
        intent,
        shards: shards
            .into_iter()
            .map(|(c, s)| (c, ShardId([s; 16])))
            .collect(),
        lease_ms: 1_000,
    };
    assert_eq!(
        run(&db, at(10_000, reg(vec![(1, 0x10), (2, 0x11)]))),
        CommandResult::Ok
    );
    {
        let txn = db.begin_read().expect("read");
        let named = intent_named(
            &txn,
            1,
            [ShardId([0x10; 16]), ShardId([0x11; 16])].into_iter(),
        )
        .expect("named");
        assert_eq!(named, HashSet::from([ShardId([0x10; 16])]));
    }
    let with = |m: &ObjectManifest| Command::WithIntent {
        intent,
        inner: Box::new(put(m)),
    };
    // The second stripe is not registered yet.
    let r = run(&db, at(10_100, with(&m)));
    assert!(
        matches!(r, CommandResult::Err(MetaError::IntentExpired(_))),
        "{r:?}"
    );
    // Renewal with the second stripe (the lease moves to 10_900 + 1000).
    assert_eq!(
        run(&db, at(10_900, reg(vec![(2, 0x20), (3, 0x21)]))),
        CommandResult::Ok
    );
    assert_eq!(intent_rows(&db), (1, 1, 4, 4));
    // Past the renewed lease: refused, nothing committed.
    let r = run(&db, at(11_901, with(&m)));
    assert!(
        matches!(r, CommandResult::Err(MetaError::IntentExpired(_))),
        "{r:?}"
    );
    // ... and it cannot be renewed any more.
    let r = run(&db, at(11_902, reg(vec![])));
    assert!(
        matches!(r, CommandResult::Err(MetaError::IntentExpired(_))),
        "{r:?}"
    );
    // Within the lease, a shard queued for GC refuses the commit.
    let r = run(
        &db,
        at(
            11_000,
            Command::QueueGc {
                chunkserver: 3,
                shards: vec![ShardId([0x21; 16])],
            },
        ),
    );
    assert_eq!(r, CommandResult::Ok);
    let r = run(&db, at(11_100, with(&m)));
    assert!(
        matches!(r, CommandResult::Err(MetaError::IntentExpired(_))),
        "{r:?}"
    );
    assert!(matches!(
        {
            let txn = db.begin_read().expect("read");
            query(
                &txn,
                &Query::GetObject {
                    bucket: "bkt".into(),
                    key: "k".into(),
                },
            )
            .expect("query")
        },
        QueryResult::Err(MetaError::NoSuchKey { .. })
    ));
    // A clean commit of the first stripe only succeeds and drops the
    // whole intent.
    let one = manifest(1, vec![stripe_on(&[1, 2], 0x10)]);
    assert_eq!(run(&db, at(11_200, with(&one))), CommandResult::Ok);
    assert_eq!(intent_rows(&db), (0, 0, 0, 0));
    let r = run(&db, at(11_300, with(&one)));
    assert!(
        matches!(r, CommandResult::Err(MetaError::IntentExpired(_))),
        "{r:?}"
    );

    // Reaping: two expired intents, 3 rows each, 4 rows per step.
    for (i, tag) in [(0xb1u8, 0x40u8), (0xb2, 0x50)] {
        let r = run(
            &db,
            at(
                20_000,
                Command::RegisterIntent {
                    intent: StripeId([i; 16]),
                    shards: (0..3).map(|j| (1, ShardId([tag + j; 16]))).collect(),
                    lease_ms: 100,
                },
            ),
        );
        assert_eq!(r, CommandResult::Ok);
    }
    {
        let txn = db.begin_read().expect("read");
        assert!(!intents_expired(&txn, 20_100).expect("check"));
        assert!(intents_expired(&txn, 20_101).expect("check"));
    }
    assert_eq!(
        run(&db, at(20_050, Command::ExpireIntents { limit: 4 })),
        CommandResult::Ok
    );
    assert_eq!(intent_rows(&db), (2, 2, 6, 6), "nothing expired yet");
    assert_eq!(
        run(&db, at(30_000, Command::ExpireIntents { limit: 4 })),
        CommandResult::Ok
    );
    assert_eq!(intent_rows(&db), (1, 1, 2, 2));
    assert_eq!(
        run(&db, at(30_000, Command::ExpireIntents { limit: 4 })),
        CommandResult::Ok
    );
    assert_eq!(intent_rows(&db), (0, 0, 0, 0));
    assert_index_matches(&db);
}

fn cs(id: u64, zone: &str) -> ChunkserverInfo {
    ChunkserverInfo {
        id,
        addr: format!("cs{id}"),
        zone: zone.into(),
        capacity: 1 << 40,
        free: 1 << 30,
        used: 0,
        shard_count: 0,
        last_heartbeat_ms: 0,
        state: ChunkserverState::Up,
    }
}

/// Six chunkservers in three zones, a 4+2 bucket "bkt" (zone cap 2).
fn six_in_three(db: &redb::Database) {
    let bucket = BucketInfo {
        name: "bkt".into(),
        ec: EcParams { k: 4, m: 2 },
        shard_size: 4,
        created_ms: 0,
        owner: String::new(),
    };
    assert_eq!(run(db, Command::CreateBucket { bucket }), CommandResult::Ok);
    for id in 1..=6u64 {
        let r = run(
            db,
            Command::RegisterChunkserver {
                addr: format!("cs{id}"),
                zone: format!("z{}", (id - 1) / 2),
                capacity: 1 << 40,
                free: 1 << 30,
                now_ms: 0,
            },
        );
        assert_eq!(r, CommandResult::Registered { id });
    }
}

fn manifest_on(servers: &[u64]) -> ObjectManifest {
    ObjectManifest {
        version: StripeId([1; 16]),
        size: 16,
        etag: "e".into(),
        content_type: None,
        headers: Default::default(),
        user_meta: Default::default(),
        checksums: Default::default(),
        created_ms: 0,
        ec: EcParams { k: 4, m: 2 },
        shard_size: 4,
        stripes: vec![stripe_on(servers, 0x10)],
        parts: Vec::new(),
        inline: None,
        tags: Default::default(),
    }
}

/// PutObject and CommitRepair refuse a placement with two shards of a
/// stripe on one chunkserver or more than the zone cap in one zone;
/// the refused repair's copy goes to GC. Unwritten shards count for
/// nothing.
#[test]
fn apply_refuses_stacked_placements() {
    let db = db();
    six_in_three(&db);
    let put = |m: ObjectManifest| Command::PutObject {
        bucket: "bkt".into(),
        key: "k".into(),
        manifest: m,
        condition: PutCondition::None,
    };
    // Two shards on chunkserver 1.
    let r = run(&db, put(manifest_on(&[1, 1, 3, 4, 5, 6])));
    assert!(
        matches!(&r, CommandResult::Err(MetaError::Placement { why, .. }) if why.contains("chunkserver 1")),
        "{r:?}"
    );
    // Three shards in zone z0 (chunkservers 1, 2 and a third on 2).
    let mut m = manifest_on(&[1, 2, 3, 4, 5, 6]);
    m.stripes[0].shards[4].chunkserver = Some(1);
    m.stripes[0].shards[5].chunkserver = None;
    assert!(matches!(
        run(&db, put(m)),
        CommandResult::Err(MetaError::Placement { .. })
    ));
    // A degraded write (one unwritten shard) is fine.
    let mut m = manifest_on(&[1, 2, 3, 4, 5, 6]);
    m.stripes[0].shards[0].chunkserver = None;
    assert_eq!(run(&db, put(m.clone())), CommandResult::Ok);
    // Rebuilding shard 0 onto chunkserver 2 (holds shard 1): refused,
    // the copy goes to GC.
    let commit = |to: u64| Command::CommitRepair {
        bucket: "bkt".into(),
        key: "k".into(),
        version: m.version,
        stripe: 0,
        index: 0,
        shard: m.stripes[0].shards[0].shard,
        from: None,
        to,
        reused: false,
    };
    assert!(matches!(
        run(&db, commit(2)),
        CommandResult::Err(MetaError::Stale(_))
    ));
    assert!(gc(&db, 2).contains(&m.stripes[0].shards[0].shard));
    assert_eq!(object(&db).stripes[0].shards[0].chunkserver, None);
    // Onto a seventh chunkserver in zone z1 (already holding 2): refused.
    assert_eq!(
        run(
            &db,
            Command::RegisterChunkserver {
                addr: "cs7".into(),
                zone: "z1".into(),
                capacity: 1 << 40,
                free: 1 << 30,
                now_ms: 0,
            }
        ),
        CommandResult::Registered { id: 7 }
    );
    assert!(matches!(
        run(&db, commit(7)),
        CommandResult::Err(MetaError::Stale(_))
    ));
    // An eighth in z0 (holding only shard 1): accepted.
    assert_eq!(
        run(
            &db,
            Command::RegisterChunkserver {
                addr: "cs8".into(),
                zone: "z0".into(),
                capacity: 1 << 40,
                free: 1 << 30,
                now_ms: 0,
            }
        ),
        CommandResult::Registered { id: 8 }
    );
    assert_eq!(run(&db, commit(8)), CommandResult::Ok);
    assert_eq!(object(&db).stripes[0].shards[0].chunkserver, Some(8));
    // The audit finds nothing wrong.
    let txn = db.begin_read().expect("read");
    match query(
        &txn,
        &Query::AuditPlacement {
            cursor: None,
            stripes: None,
        },
    ) {
        Ok(QueryResult::Audit(p)) => {
            assert!(p.violations.is_empty(), "{p:?}");
            assert_eq!((p.manifests, p.stripes, p.next), (1, 1, None));
        }
        other => panic!("{other:?}"),
    }
    assert_index_matches(&db);
}

/// place() never exceeds the zone cap: with one zone's servers
/// excluded it places fewer shards (at least `min`) or refuses; a
/// re-placement counts the stripe's placed shards toward the cap.
#[test]
fn place_honours_the_zone_cap() {
    let ec = EcParams { k: 4, m: 2 };
    let all: Vec<ChunkserverInfo> = (1..=6u64)
        .map(|id| cs(id, &format!("z{}", (id - 1) / 2)))
        .collect();
    let zone = |id: u64| (id - 1) / 2;
    for _ in 0..50 {
        let p = place(&all, 6, 5, ec, 4, &[], &[]).expect("place");
        assert_eq!(p.len(), 6);
        for z in 0..3 {
            assert_eq!(p.iter().filter(|c| zone(c.id) == z).count(), 2);
        }
    }
    // Zone z0 unusable (1 and 2 excluded): 4 fit under the cap of 2.
    let p = place(&all, 6, 4, ec, 4, &[1, 2], &[]).expect("degraded");
    assert_eq!(p.len(), 4);
    assert!(matches!(
        place(&all, 6, 5, ec, 4, &[1, 2], &[]),
        Err(MetaError::Placement { .. })
    ));
    // Re-placing one shard: z0 and z1 are full (1, 2, 3, 4 placed),
    // 5 holds another shard: only 6 qualifies.
    for _ in 0..20 {
        let p = place(&all, 1, 1, ec, 4, &[], &[1, 2, 3, 4, 5]).expect("one");
        assert_eq!(p.iter().map(|c| c.id).collect::<Vec<_>>(), vec![6]);
    }
    // Nothing left under the cap: a clear refusal, never a violation.
    assert!(matches!(
        place(&all, 1, 1, ec, 4, &[6], &[1, 2, 3, 4, 5]),
        Err(MetaError::Placement { .. })
    ));
}

/// Issue 11 item 3: a bad row or repair-queue item about a copy that an
/// inventory lists again is stale and cleared with it; reports about
/// other copies stay.
#[test]
fn a_copy_seen_healthy_clears_its_bad_row_and_repair_item() {
    let db = db();
    let m = one_stripe_object(&db, 2);
    let put = Command::PutObject {
        bucket: "bkt".into(),
        key: "k".into(),
        manifest: m,
        condition: PutCondition::None,
    };
    assert_eq!(run(&db, put), CommandResult::Ok);
    let (on1, on2) = (ShardId([0x10; 16]), ShardId([0x11; 16]));
    let item = |index: u8, cs: u64| RepairItem {
        bucket: "bkt".into(),
        key: "k".into(),
        version: StripeId([1; 16]),
        stripe: 0,
        index,
        chunkserver: Some(cs),
        reason: "missing".into(),
    };
    let queue = Command::QueueRepair {
        items: vec![item(0, 1), item(1, 2)],
    };
    assert_eq!(run(&db, queue), CommandResult::Ok);
    let bad = Command::ReportBadShards {
        chunkserver: 1,
        shards: vec![on1],
    };
    assert_eq!(run(&db, bad), CommandResult::Ok);
    let stale = |cs: u64, listed: &[ShardId]| {
        stale_reports(&db.begin_read().expect("read"), cs, listed).expect("stale")
    };
    // cs1 lists its copy (and one nothing reports): stale. cs1 listing
    // cs2's shard says nothing about cs2's copy.
    assert_eq!(stale(1, &[on1, ShardId([9; 16])]), vec![on1]);
    assert_eq!(stale(1, &[on2]), Vec::<ShardId>::new());
    assert_eq!(stale(2, &[on2]), vec![on2]);
    let clear = Command::ClearBadShards {
        chunkserver: 1,
        shards: vec![on1],
    };
    assert_eq!(run(&db, clear), CommandResult::Ok);
    let txn = db.begin_read().expect("read");
    assert!(bad_shards(&txn).expect("bad").is_empty());
    assert_eq!(repair_items(&txn).expect("items"), vec![item(1, 2)]);
    assert!(stale(1, &[on1]).is_empty());
}

/// A read of an object of more than `STRIPE_PAGE_MAX` stripes gets the
/// head with the first page, then pages through the stripe rows of that
/// version; once the version is overwritten, paging answers Stale.
#[test]
fn stripe_rows_are_read_in_pages_of_one_version() {
    let db = db();
    small_cluster(&db);
    let n: u64 = 2500;
    let stripes: Vec<StripeManifest> = (0..n)
        .map(|i| {
            let id = |j: u8| {
                let mut b = [j; 16];
                b[..8].copy_from_slice(&i.to_be_bytes());
                b
            };
            StripeManifest {
                id: StripeId(id(0)),
                len: 4,
                shards: vec![
                    ShardLoc {
                        chunkserver: Some(1),
                        shard: ShardId(id(1)),
                        blake3: Hash32([1; 32]),
                    },
                    ShardLoc {
                        chunkserver: Some(2),
                        shard: ShardId(id(2)),
                        blake3: Hash32([2; 32]),
                    },
                ],
            }
        })
        .collect();
    let mut m = manifest(1, stripes.clone());
    m.size = 4 * n;
    assert_eq!(run(&db, put(&m)), CommandResult::Ok);
    let q = |q: Query| query(&db.begin_read().expect("read"), &q).expect("query");
    let head = match q(Query::GetObjectPage {
        bucket: "bkt".into(),
        key: "k".into(),
        stripes: u32::MAX,
    }) {
        QueryResult::Object(h) => h,
        other => panic!("{other:?}"),
    };
    assert_eq!(head.size, 4 * n);
    assert_eq!(head.stripes[..], stripes[..STRIPE_PAGE_MAX as usize]);
    let page = |version: StripeId, from: u64, limit: u32| {
        q(Query::ObjectStripes {
            bucket: "bkt".into(),
            key: "k".into(),
            version,
            from,
            limit,
        })
    };
    let mut got = head.stripes.clone();
    while (got.len() as u64) < n {
        match page(m.version, got.len() as u64, u32::MAX) {
            QueryResult::Stripes(rows) => {
                assert!(!rows.is_empty() && rows.len() <= STRIPE_PAGE_MAX as usize);
                got.extend(rows);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, stripes);
    assert_eq!(page(m.version, n, 10), QueryResult::Stripes(Vec::new()));
    assert_eq!(
        page(m.version, 7, 2),
        QueryResult::Stripes(stripes[7..9].to_vec())
    );
    // Overwritten: the old version's rows are gone, and paging says so
    // rather than returning the new version's stripes.
    let m2 = manifest(2, vec![stripe_on(&[1, 2], 0xF0)]);
    assert_eq!(run(&db, put(&m2)), CommandResult::Ok);
    assert!(matches!(
        page(m.version, 1024, 10),
        QueryResult::Err(MetaError::Stale(_))
    ));
    let head = match q(Query::GetObjectPage {
        bucket: "bkt".into(),
        key: "k".into(),
        stripes: 0,
    }) {
        QueryResult::Object(h) => h,
        other => panic!("{other:?}"),
    };
    assert!(head.stripes.is_empty());
    assert_eq!(head.version, m2.version);
    assert_index_matches(&db);
}

fn ask(db: &redb::Database, q: Query) -> QueryResult {
    let txn = db.begin_read().expect("read");
    query(&txn, &q).expect("query")
}

fn versions_of(db: &redb::Database, max: u32) -> Vec<(String, VersionRef, bool, bool)> {
    let mut out = Vec::new();
    let (mut km, mut vm) = (None, None);
    loop {
        let r = ask(
            db,
            Query::ListVersions(ListVersionsRequest {
                bucket: "bkt".into(),
                prefix: String::new(),
                delimiter: None,
                key_marker: km.clone(),
                version_marker: vm,
                max_keys: max,
            }),
        );
        let QueryResult::Versions(p) = r else {
            panic!("{r:?}")
        };
        assert!(p.entries.len() <= max as usize);
        out.extend(
            p.entries
                .iter()
                .map(|e| (e.key.clone(), e.version, e.latest, e.delete_marker)),
        );
        if !p.truncated {
            return out;
        }
        km = p.next_key_marker;
        vm = p.next_version_marker;
    }
}

fn view(db: &redb::Database, v: Option<VersionRef>) -> Result<VersionView, MetaError> {
    match ask(
        db,
        Query::GetVersionPage {
            bucket: "bkt".into(),
            key: "k".into(),
            version: v,
            stripes: 10,
        },
    ) {
        QueryResult::Version(v) => Ok(v),
        QueryResult::Err(e) => Err(e),
        other => panic!("{other:?}"),
    }
}

fn put_key(key: &str, m: &ObjectManifest) -> Command {
    Command::PutObject {
        bucket: "bkt".into(),
        key: key.into(),
        manifest: m.clone(),
        condition: PutCondition::None,
    }
}

/// The version chain: versions kept while enabled, delete markers,
/// deleting versions (promoting the next), the null version replaced
/// while suspended; shards are collected only with their version; the
/// reverse index stays equal to a rebuild; listings page exactly.
#[test]
fn versions_chain_markers_and_null_versions() {
    let db = db();
    small_cluster(&db);
    let id = |n: u8| VersionRef::Id(StripeId([n; 16]));
    let v1 = manifest(1, vec![stripe_on(&[1, 2], 10)]);
    assert_eq!(run(&db, at(1, put(&v1))), CommandResult::Ok);
    let enable = |state| Command::PutBucketVersioning {
        bucket: "bkt".into(),
        state,
    };
    assert!(matches!(
        run(&db, enable(Versioning::Unversioned)),
        CommandResult::Err(MetaError::Invalid(_))
    ));
    assert_eq!(run(&db, enable(Versioning::Enabled)), CommandResult::Ok);
    assert_eq!(
        ask(
            &db,
            Query::GetBucketVersioning {
                bucket: "bkt".into()
            }
        ),
        QueryResult::Versioning(Versioning::Enabled)
    );
    // A new version keeps the old one and its shards.
    let v2 = manifest(2, vec![stripe_on(&[1, 2], 20)]);
    let stamp = |version, delete_marker| {
        CommandResult::Version(VersionStamp {
            version,
            delete_marker,
        })
    };
    assert_eq!(run(&db, at(2, put(&v2))), stamp(id(2), false));
    assert!(gc(&db, 1).is_empty() && gc(&db, 2).is_empty());
    assert_eq!(object(&db).version, v2.version);
    assert_eq!(
        versions_of(&db, 1000),
        vec![
            ("k".into(), id(2), true, false),
            ("k".into(), VersionRef::Null, false, false)
        ]
    );
    let old = view(&db, Some(VersionRef::Null)).expect("null version");
    assert!(!old.latest && !old.delete_marker);
    assert_eq!(old.manifest.version, v1.version);
    assert_eq!(old.manifest.stripes.len(), 1);
    // A read of the old version pages on.
    let r = ask(
        &db,
        Query::ObjectStripes {
            bucket: "bkt".into(),
            key: "k".into(),
            version: v1.version,
            from: 0,
            limit: 10,
        },
    );
    assert!(
        matches!(r, QueryResult::Stripes(ref s) if s.len() == 1),
        "{r:?}"
    );
    assert_index_matches(&db);
    // A noncurrent version is repaired like the current one: its shard
    // moves from cs1 to cs3, the old copy goes to GC.
    let repair = Command::CommitRepair {
        bucket: "bkt".into(),
        key: "k".into(),
        version: v1.version,
        stripe: 0,
        index: 0,
        shard: ShardId([10; 16]),
        from: Some(1),
        to: 3,
        reused: false,
    };
    assert_eq!(run(&db, at(2, repair)), CommandResult::Ok);
    let old = view(&db, Some(VersionRef::Null)).expect("null version");
    assert_eq!(old.manifest.stripes[0].shards[0].chunkserver, Some(3));
    assert_eq!(gc(&db, 1), vec![ShardId([10; 16])]);
    assert_eq!(object(&db).version, v2.version);
    assert_index_matches(&db);
    // A delete adds a marker; the key reads as missing.
    let QueryResult::Err(_) = ask(
        &db,
        Query::GetObjectPage {
            bucket: "bkt".into(),
            key: "nope".into(),
            stripes: 1,
        },
    ) else {
        panic!("missing key found")
    };
    let CommandResult::Version(VersionStamp {
        version: marker,
        delete_marker: true,
    }) = run(
        &db,
        at(
            3,
            Command::DeleteObject {
                bucket: "bkt".into(),
                key: "k".into(),
                condition: PutCondition::None,
            },
        ),
    )
    else {
        panic!("no delete marker")
    };
    assert!(matches!(
        ask(
            &db,
            Query::GetObjectPage {
                bucket: "bkt".into(),
                key: "k".into(),
                stripes: 1
            }
        ),
        QueryResult::Err(MetaError::NoSuchKey { .. })
    ));
    let top = view(&db, None).expect("newest");
    assert!(top.delete_marker && top.latest && top.version == marker);
    assert_eq!(top.manifest.created_ms, 3);
    assert_eq!(
        versions_of(&db, 1000),
        vec![
            ("k".into(), marker, true, true),
            ("k".into(), id(2), false, false),
            ("k".into(), VersionRef::Null, false, false)
        ]
    );
    // Pages of one entry give the same listing.
    assert_eq!(versions_of(&db, 1), versions_of(&db, 1000));
    assert!(matches!(
        run(&db, Command::DeleteBucket { name: "bkt".into() }),
        CommandResult::Err(MetaError::BucketNotEmpty(_))
    ));
    assert_index_matches(&db);
    // Deleting the marker brings v2 back.
    let del = |v| Command::DeleteObjectVersion {
        bucket: "bkt".into(),
        key: "k".into(),
        version: v,
        bypass_governance: false,
    };
    assert_eq!(run(&db, at(4, del(marker))), stamp(marker, true));
    assert_eq!(object(&db).version, v2.version);
    assert_eq!(
        gc(&db, 1),
        vec![ShardId([10; 16])],
        "only the repaired copy"
    );
    // Deleting the null version collects its shards only.
    assert_eq!(
        run(&db, at(5, del(VersionRef::Null))),
        stamp(VersionRef::Null, false)
    );
    assert_eq!(gc(&db, 3), vec![ShardId([10; 16])]);
    assert_eq!(gc(&db, 2), vec![ShardId([11; 16])]);
    assert!(matches!(
        view(&db, Some(VersionRef::Null)),
        Err(MetaError::NoSuchVersion { .. })
    ));
    // Deleting a version that does not exist succeeds.
    assert_eq!(run(&db, at(6, del(id(77)))), stamp(id(77), false));
    assert_index_matches(&db);
    // Suspended: writes replace the null version and keep v2.
    assert_eq!(run(&db, enable(Versioning::Suspended)), CommandResult::Ok);
    let v3 = manifest(3, vec![stripe_on(&[1, 2], 30)]);
    assert_eq!(run(&db, at(7, put(&v3))), stamp(VersionRef::Null, false));
    let v4 = manifest(4, vec![stripe_on(&[1, 2], 40)]);
    assert_eq!(run(&db, at(8, put(&v4))), stamp(VersionRef::Null, false));
    assert!(gc(&db, 1).contains(&ShardId([30; 16])));
    assert!(!gc(&db, 1).contains(&ShardId([20; 16])));
    assert!(!gc(&db, 2).contains(&ShardId([21; 16])));
    assert_eq!(
        versions_of(&db, 1000),
        vec![
            ("k".into(), VersionRef::Null, true, false),
            ("k".into(), id(2), false, false)
        ]
    );
    // A suspended delete: a null marker replaces the null version.
    assert_eq!(
        run(
            &db,
            at(
                9,
                Command::DeleteObject {
                    bucket: "bkt".into(),
                    key: "k".into(),
                    condition: PutCondition::None,
                }
            )
        ),
        stamp(VersionRef::Null, true)
    );
    assert!(gc(&db, 1).contains(&ShardId([40; 16])));
    assert_eq!(
        versions_of(&db, 1000),
        vec![
            ("k".into(), VersionRef::Null, true, true),
            ("k".into(), id(2), false, false)
        ]
    );
    assert_index_matches(&db);
    // Other keys interleave in key order; pages of 1 agree.
    let enable_again = enable(Versioning::Enabled);
    assert_eq!(run(&db, enable_again), CommandResult::Ok);
    let a = manifest(5, vec![stripe_on(&[1, 2], 50)]);
    let b = manifest(6, vec![stripe_on(&[1, 2], 60)]);
    assert_eq!(run(&db, at(10, put_key("j", &a))), stamp(id(5), false));
    assert_eq!(run(&db, at(11, put_key("l", &b))), stamp(id(6), false));
    let all = versions_of(&db, 1000);
    assert_eq!(
        all.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        vec!["j", "k", "k", "l"]
    );
    assert_eq!(versions_of(&db, 1), all);
    assert_eq!(versions_of(&db, 2), all);
    // Emptied of every version, the bucket can go.
    for (key, v, _, _) in all {
        let r = run(
            &db,
            at(
                12,
                Command::DeleteObjectVersion {
                    bucket: "bkt".into(),
                    key,
                    version: v,
                    bypass_governance: false,
                },
            ),
        );
        assert!(matches!(r, CommandResult::Version(_)), "{r:?}");
    }
    assert!(versions_of(&db, 1000).is_empty());
    assert_index_matches(&db);
    assert_eq!(
        run(&db, Command::DeleteBucket { name: "bkt".into() }),
        CommandResult::Ok
    );
}

/// Object Lock in `apply`: needs versioning; versioning cannot be
/// suspended after; default retention stamps new versions; locked
/// versions cannot be deleted by anyone (COMPLIANCE, legal hold) or only
/// with the bypass (GOVERNANCE); COMPLIANCE is never shortened; delete
/// markers can still be added; expiry frees them.
#[test]
fn object_lock_holds_versions_in_apply() {
    let db = db();
    small_cluster(&db);
    let day = 86_400_000u64;
    let lock = |default| Command::PutObjectLockConfig {
        bucket: "bkt".into(),
        config: ObjectLockConfig { default },
    };
    let gov = Some(DefaultRetention {
        mode: LockMode::Governance,
        days: 1,
    });
    assert!(matches!(
        run(&db, lock(gov)),
        CommandResult::Err(MetaError::InvalidBucketState(_))
    ));
    let versioning = |state| Command::PutBucketVersioning {
        bucket: "bkt".into(),
        state,
    };
    assert_eq!(run(&db, versioning(Versioning::Enabled)), CommandResult::Ok);
    assert_eq!(run(&db, lock(gov)), CommandResult::Ok);
    assert!(matches!(
        run(&db, versioning(Versioning::Suspended)),
        CommandResult::Err(MetaError::InvalidBucketState(_))
    ));
    let v1 = manifest(1, vec![stripe_on(&[1, 2], 10)]);
    let t0 = 1_000_000u64;
    assert!(matches!(
        run(&db, at(t0, put(&v1))),
        CommandResult::Version(_)
    ));
    let id1 = VersionRef::Id(v1.version);
    let v = view(&db, Some(id1)).expect("v1");
    assert_eq!(
        v.retention,
        Some(Retention {
            mode: LockMode::Governance,
            until_ms: t0 + day
        })
    );
    let del = |version, bypass| Command::DeleteObjectVersion {
        bucket: "bkt".into(),
        key: "k".into(),
        version,
        bypass_governance: bypass,
    };
    assert!(matches!(
        run(&db, at(t0 + 1, del(id1, false))),
        CommandResult::Err(MetaError::ObjectLocked(_))
    ));
    // A delete marker may still be added; the version stays.
    assert!(matches!(
        run(
            &db,
            at(
                t0 + 2,
                Command::DeleteObject {
                    bucket: "bkt".into(),
                    key: "k".into(),
                    condition: PutCondition::None,
                }
            )
        ),
        CommandResult::Version(VersionStamp {
            delete_marker: true,
            ..
        })
    ));
    // COMPLIANCE: lengthening works, shortening or weakening never does,
    // bypass or not; neither does deleting.
    let retain = |mode, until_ms, bypass| Command::PutObjectRetention {
        bucket: "bkt".into(),
        key: "k".into(),
        version: Some(id1),
        retention: Some(Retention { mode, until_ms }),
        bypass_governance: bypass,
    };
    assert_eq!(
        run(
            &db,
            at(t0 + 3, retain(LockMode::Compliance, t0 + 2 * day, false))
        ),
        CommandResult::Ok
    );
    for cmd in [
        retain(LockMode::Compliance, t0 + day, true),
        retain(LockMode::Governance, t0 + 3 * day, true),
        Command::PutObjectRetention {
            bucket: "bkt".into(),
            key: "k".into(),
            version: Some(id1),
            retention: None,
            bypass_governance: true,
        },
        del(id1, true),
    ] {
        let r = run(&db, at(t0 + 4, cmd));
        assert!(
            matches!(r, CommandResult::Err(MetaError::ObjectLocked(_))),
            "{r:?}"
        );
    }
    // GOVERNANCE on v2: bypass may shorten it and delete.
    let v2 = manifest(2, vec![stripe_on(&[1, 2], 20)]);
    assert!(matches!(
        run(&db, at(t0 + 5, put(&v2))),
        CommandResult::Version(_)
    ));
    let id2 = VersionRef::Id(v2.version);
    assert!(matches!(
        run(&db, at(t0 + 6, del(id2, false))),
        CommandResult::Err(MetaError::ObjectLocked(_))
    ));
    // A legal hold blocks even the bypass.
    let hold = |on| Command::PutObjectLegalHold {
        bucket: "bkt".into(),
        key: "k".into(),
        version: Some(id2),
        on,
    };
    assert_eq!(run(&db, at(t0 + 7, hold(true))), CommandResult::Ok);
    assert!(view(&db, Some(id2)).expect("v2").legal_hold);
    assert!(matches!(
        run(&db, at(t0 + 8, del(id2, true))),
        CommandResult::Err(MetaError::ObjectLocked(_))
    ));
    assert_eq!(run(&db, at(t0 + 9, hold(false))), CommandResult::Ok);
    assert_eq!(
        run(&db, at(t0 + 10, del(id2, true))),
        CommandResult::Version(VersionStamp {
            version: id2,
            delete_marker: false
        })
    );
    // Once the COMPLIANCE retention ends, v1 can go.
    assert!(matches!(
        run(&db, at(t0 + 2 * day - 1, del(id1, false))),
        CommandResult::Err(MetaError::ObjectLocked(_))
    ));
    assert!(matches!(
        run(&db, at(t0 + 2 * day, del(id1, false))),
        CommandResult::Version(_)
    ));
    assert_index_matches(&db);
}
