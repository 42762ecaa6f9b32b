//! The planner's unit tests: redundancy, and damage-driven discovery on a
//! real (in-memory) state machine written through `model::apply`.

use super::*;
use crate::leader::now_ms;

fn cs(id: u64, zone: &str) -> ChunkserverInfo {
    ChunkserverInfo {
        id,
        addr: format!("cs{id}"),
        zone: zone.into(),
        capacity: 1,
        free: 1,
        used: 0,
        shard_count: 0,
        last_heartbeat_ms: 0,
        state: ChunkserverState::Up,
    }
}

/// Redundancy counts distinct chunkservers within the zone cap, and the
/// shards breaking the invariant are the ones to move.
#[test]
fn redundancy_counts_distinct_failure_domains() {
    let all: Vec<ChunkserverInfo> = (1..=6u64)
        .map(|id| cs(id, &format!("z{}", (id - 1) / 2)))
        .collect();
    let rules = model::PlacementRules::new(&all);
    let ec = EcParams { k: 4, m: 2 };
    let on = |v: &[u64]| -> Vec<Option<ChunkserverId>> {
        v.iter().map(|c| (*c != 0).then_some(*c)).collect()
    };
    assert_eq!(redundancy(&rules, ec, &on(&[1, 2, 3, 4, 5, 6])), 2);
    assert_eq!(redundancy(&rules, ec, &on(&[1, 2, 3, 4, 5, 0])), 1);
    // Two shards on chunkserver 2 count once.
    assert_eq!(redundancy(&rules, ec, &on(&[1, 2, 3, 4, 5, 2])), 1);
    assert_eq!(must_move(&rules, ec, &on(&[1, 2, 3, 4, 5, 2])), vec![5]);
    // All six on one server: readable, but one loss away from lost.
    assert_eq!(redundancy(&rules, ec, &on(&[1, 1, 1, 1, 1, 1])), 0);
    assert_eq!(
        must_move(&rules, ec, &on(&[1, 1, 1, 1, 1, 1])),
        vec![1, 2, 3, 4, 5]
    );
    // Below k: lost, negative.
    assert_eq!(redundancy(&rules, ec, &on(&[1, 2, 3, 0, 0, 0])), -1);
    assert!(must_move(&rules, ec, &on(&[1, 2, 3, 4, 5, 6])).is_empty());
}

fn db() -> redb::Database {
    match redb::Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()) {
        Ok(d) => d,
        Err(e) => panic!("in-memory redb: {e}"),
    }
}

fn run(db: &redb::Database, cmd: Command) -> CommandResult {
    let txn = db.begin_write().expect("begin");
    let r = model::apply(&txn, &cmd).expect("apply");
    txn.commit().expect("commit");
    r
}

/// Object `i`'s one 2+1 stripe on `servers` (0 = unplaced).
fn manifest(i: u32, servers: [u64; 3]) -> ObjectManifest {
    let id = |tag: u8| {
        let mut b = [tag; 16];
        b[..4].copy_from_slice(&i.to_be_bytes());
        b
    };
    ObjectManifest {
        version: StripeId(id(0xee)),
        size: 8,
        etag: "e".into(),
        content_type: None,
        headers: Default::default(),
        user_meta: Default::default(),
        checksums: Default::default(),
        created_ms: 0,
        ec: EcParams { k: 2, m: 1 },
        shard_size: 4,
        stripes: vec![StripeManifest {
            id: StripeId(id(0xdd)),
            len: 8,
            shards: servers
                .iter()
                .enumerate()
                .map(|(x, c)| ShardLoc {
                    chunkserver: (*c != 0).then_some(*c),
                    shard: ShardId(id(x as u8)),
                    blake3: Hash32([0; 32]),
                })
                .collect(),
        }],
        parts: Vec::new(),
        inline: None,
        tags: Default::default(),
    }
}

fn put(db: &redb::Database, i: u32, servers: [u64; 3]) {
    let cmd = Command::PutObject {
        bucket: "bkt".into(),
        key: format!("o{i:04}"),
        manifest: manifest(i, servers),
        condition: PutCondition::None,
    };
    assert_eq!(run(db, cmd), CommandResult::Ok);
}

/// Bucket "bkt" (2+1), chunkservers 1..=6 in one zone, `objects` one-stripe
/// objects: the first `on6` on chunkservers 1, 2, 6, the others on 1, 2, 3.
fn cluster(objects: u32, on6: u32) -> redb::Database {
    let db = db();
    let bucket = BucketInfo {
        name: "bkt".into(),
        ec: EcParams { k: 2, m: 1 },
        shard_size: 4,
        created_ms: 0,
        owner: String::new(),
    };
    assert_eq!(
        run(&db, Command::CreateBucket { bucket }),
        CommandResult::Ok
    );
    for id in 1..=6u64 {
        let r = run(
            &db,
            Command::RegisterChunkserver {
                addr: format!("cs{id}"),
                zone: "z".into(),
                capacity: 1 << 30,
                free: 1 << 30,
                now_ms: now_ms(),
            },
        );
        assert_eq!(r, CommandResult::Registered { id });
    }
    for i in 0..objects {
        put(&db, i, if i < on6 { [1, 2, 6] } else { [1, 2, 3] });
    }
    db
}

fn repairs() -> Repairs {
    let r = Repairs::new(PlannerConfig {
        per_chunkserver: 1000,
        task_timeout: Duration::from_secs(60),
        silent_after: Duration::from_secs(60),
    });
    r.state.lock().expect("state").reset(Some(1));
    r
}

fn round(db: &redb::Database, r: &Repairs, budget: usize) -> RoundResult {
    plan_round(db, r, 1, now_ms(), budget).expect("round")
}

fn down(db: &redb::Database, id: ChunkserverId) {
    let cmd = Command::SetChunkserverState {
        id,
        state: ChunkserverState::Down,
    };
    assert_eq!(run(db, cmd), CommandResult::Ok);
}

fn histogram(r: &Repairs) -> Vec<(i32, u64)> {
    let s = r.state.lock().expect("state");
    s.summary.redundancy.iter().map(|(a, b)| (*a, *b)).collect()
}

fn tasks(r: &Repairs) -> Vec<RepairTask> {
    let s = r.state.lock().expect("state");
    let mut t: Vec<RepairTask> = s.in_flight.values().map(|f| f.task.clone()).collect();
    t.sort_by(|a, b| a.key.cmp(&b.key));
    t
}

/// Nothing damaged: a round reads no manifest and no index row (one seek
/// per chunkserver id to notice unregistered ones), completes its cycle and
/// publishes every stripe at full redundancy from the bucket counters.
#[test]
fn a_round_with_nothing_damaged_reads_no_object() {
    let db = cluster(300, 10);
    let r = repairs();
    let res = round(&db, &r, scan::PAGE);
    assert!(res.complete);
    assert_eq!(res.dispatched, 0);
    let reads = res.reads;
    assert_eq!(
        (
            reads.index_rows,
            reads.bad_rows,
            reads.items,
            reads.manifests
        ),
        (0, 0, 0, 0),
        "{reads:?}"
    );
    assert!(reads.probes <= 7, "{reads:?}");
    assert_eq!(histogram(&r), vec![(1, 300)]);
    let s = r.state.lock().expect("state");
    assert!(!s.summary.active);
    assert_eq!(s.summary.objects, 300);
    assert_eq!(s.summary.waiting, 0);
}

/// One lost chunkserver: the round reads exactly its shards (one index row
/// and one manifest each), touches none of the other objects, and plans
/// every one of them onto a server holding no shard of the stripe; paging
/// with a small budget finds the same set over several rounds and
/// publishes the histogram only when the cycle is complete. Once the
/// repairs commit, the lost server's range is empty and every stripe is
/// back at full redundancy.
#[test]
fn a_lost_chunkserver_is_planned_from_its_own_shards() {
    for budget in [scan::PAGE, 4] {
        let db = cluster(300, 10);
        down(&db, 6);
        let r = repairs();
        let mut rows = 0;
        let mut manifests = 0;
        let mut rounds = 0;
        loop {
            let res = round(&db, &r, budget);
            rounds += 1;
            rows += res.reads.index_rows;
            manifests += res.reads.manifests;
            assert!(res.reads.manifests <= budget as u64);
            if res.complete {
                break;
            }
            assert!(histogram(&r).is_empty(), "published mid-cycle");
            assert!(rounds < 10, "cycle never completes");
        }
        assert_eq!(rounds, if budget == 4 { 3 } else { 1 });
        assert_eq!((rows, manifests), (10, 10));
        assert_eq!(histogram(&r), vec![(0, 10), (1, 290)]);
        let t = tasks(&r);
        let keys: Vec<String> = t.iter().map(|t| t.key.clone()).collect();
        let want: Vec<String> = (0..10).map(|i| format!("o{i:04}")).collect();
        assert_eq!(keys, want);
        for task in &t {
            assert_eq!((task.from, task.index), (Some(6), 2));
            let target = r
                .state
                .lock()
                .expect("state")
                .in_flight
                .get(&task.task)
                .map(|f| f.target);
            assert!(matches!(target, Some(3..=5)), "{target:?}");
        }
        assert_eq!(r.state.lock().expect("state").summary.waiting, 0);

        // The next cycle finds the same stripes, in flight: nothing new.
        let res = round(&db, &r, scan::PAGE);
        assert!(res.complete);
        assert_eq!(res.dispatched, 0);
        assert_eq!(histogram(&r), vec![(0, 10), (1, 290)]);

        // The repairs commit: the down server's index range empties.
        for task in &t {
            let to = r
                .state
                .lock()
                .expect("state")
                .in_flight
                .get(&task.task)
                .map(|f| f.target)
                .expect("in flight");
            let cmd = Command::CommitRepair {
                bucket: task.bucket.clone(),
                key: task.key.clone(),
                version: task.version,
                stripe: task.stripe,
                index: task.index,
                shard: task.shard,
                from: task.from,
                to,
                reused: false,
            };
            assert_eq!(run(&db, cmd), CommandResult::Ok);
            r.finish(to, task, Outcome::Committed);
        }
        let res = round(&db, &r, scan::PAGE);
        assert!(res.complete);
        assert_eq!((res.reads.index_rows, res.reads.manifests), (0, 0));
        assert_eq!(histogram(&r), vec![(1, 300)]);
        assert!(r.state.lock().expect("state").in_flight.is_empty());
    }
}

/// Two lost chunkservers: a stripe with a shard on each is found from both
/// but counted once; below k healthy shards it is unrecoverable and never
/// planned, while the stripes that lost one shard are.
#[test]
fn a_stripe_on_two_lost_chunkservers_is_counted_once() {
    let db = cluster(20, 0);
    put(&db, 100, [1, 2, 6]);
    put(&db, 101, [1, 5, 6]);
    put(&db, 102, [3, 4, 5]);
    down(&db, 5);
    down(&db, 6);
    let r = repairs();
    let res = round(&db, &r, scan::PAGE);
    assert!(res.complete);
    assert_eq!((res.reads.index_rows, res.reads.manifests), (4, 3));
    assert_eq!(histogram(&r), vec![(-1, 1), (0, 2), (1, 20)]);
    assert_eq!(res.unrecoverable, 1);
    let got: Vec<(String, u8)> = tasks(&r).iter().map(|t| (t.key.clone(), t.index)).collect();
    assert_eq!(
        got,
        vec![("o0100".to_string(), 2), ("o0102".to_string(), 2)]
    );
}

/// A bad report, an unplaced shard queued at commit and a bad row nothing
/// places: one row (and at most one manifest) each; the last is cleared.
#[test]
fn bad_rows_and_repair_items_are_read_one_by_one() {
    let db = cluster(50, 0);
    put(&db, 60, [1, 2, 0]);
    let shard = manifest(7, [1, 2, 3]).stripes[0].shards[2].shard;
    let nobody = ShardId([0x77; 16]);
    let cmd = Command::ReportBadShards {
        chunkserver: 3,
        shards: vec![shard, nobody],
    };
    assert_eq!(run(&db, cmd), CommandResult::Ok);
    let r = repairs();
    let res = round(&db, &r, scan::PAGE);
    assert!(res.complete);
    let reads = res.reads;
    assert_eq!(
        (
            reads.index_rows,
            reads.bad_rows,
            reads.items,
            reads.manifests
        ),
        (0, 2, 1, 2),
        "{reads:?}"
    );
    assert_eq!(
        res.clear_bad.into_iter().collect::<Vec<_>>(),
        vec![(3, vec![nobody])]
    );
    let t = tasks(&r);
    let got: Vec<(String, Option<ChunkserverId>)> =
        t.iter().map(|t| (t.key.clone(), t.from)).collect();
    assert_eq!(
        got,
        vec![("o0007".to_string(), Some(3)), ("o0060".to_string(), None)]
    );
    assert_eq!(histogram(&r), vec![(0, 2), (1, 49)]);
}

/// Commits every task in flight as its target would report it.
fn commit_all(db: &redb::Database, r: &Repairs) -> usize {
    let flights: Vec<(RepairTask, ChunkserverId)> = r
        .state
        .lock()
        .expect("state")
        .in_flight
        .values()
        .map(|f| (f.task.clone(), f.target))
        .collect();
    for (task, to) in &flights {
        let cmd = Command::CommitRepair {
            bucket: task.bucket.clone(),
            key: task.key.clone(),
            version: task.version,
            stripe: task.stripe,
            index: task.index,
            shard: task.shard,
            from: task.from,
            to: *to,
            reused: false,
        };
        assert_eq!(run(db, cmd), CommandResult::Ok, "{task:?}");
        r.finish(*to, task, Outcome::Committed);
    }
    flights.len()
}

fn rebalance_status(r: &Repairs) -> RebalanceStatus {
    r.state.lock().expect("state").rebalance.status.clone()
}

/// Chunkservers 1, 2, 3 hold every shard, 4, 5, 6 none (just added), each
/// with room for 2,000 shard bytes: the rebalancer moves shards off the
/// fullest, at most `MAX_IN_FLIGHT` at a time, never two shards of a
/// stripe onto one chunkserver, until the spread is within the threshold;
/// the placed counters follow every commit. Nothing moves while a
/// chunkserver is down (repairs first) or while paused.
#[test]
fn the_rebalancer_evens_out_fullness_under_the_invariant() {
    let db = cluster(0, 0);
    // Room: the registration said 1 GiB free; say 2,000 bytes instead.
    for id in 1..=6u64 {
        let cmd = Command::ChunkserverStats {
            id,
            addr: format!("cs{id}"),
            zone: "z".into(),
            capacity: 4000,
            free: 2000,
            used: 0,
            shard_count: 0,
            now_ms: now_ms(),
        };
        assert!(!matches!(run(&db, cmd), CommandResult::Err(_)));
    }
    for i in 0..300 {
        put(&db, i, [1, 2, 3]);
    }
    let r = repairs();
    // Paused: the spread is reported, nothing moves.
    let pause = Command::SetRebalance {
        enabled: false,
        threshold_pct: 5,
    };
    assert_eq!(run(&db, pause), CommandResult::Ok);
    let res = round(&db, &r, scan::PAGE);
    assert_eq!(res.dispatched, 0);
    let st = rebalance_status(&r);
    assert_eq!(st.state, "paused");
    assert!(st.spread_pct > 30.0, "{st:?}");
    assert!(r.state.lock().expect("state").in_flight.is_empty());
    let start = Command::SetRebalance {
        enabled: true,
        threshold_pct: 5,
    };
    assert_eq!(run(&db, start), CommandResult::Ok);
    // A down chunkserver: repairs first, no move.
    put(&db, 1000, [1, 2, 6]);
    down(&db, 6);
    let res = round(&db, &r, scan::PAGE);
    assert_eq!(res.dispatched, 1);
    assert_eq!(rebalance_status(&r).state, "waiting for repairs");
    assert!(r
        .state
        .lock()
        .expect("state")
        .in_flight
        .values()
        .all(|f| !f.rebalance));
    assert_eq!(commit_all(&db, &r), 1);
    let up = Command::SetChunkserverState {
        id: 6,
        state: ChunkserverState::Up,
    };
    assert_eq!(run(&db, up), CommandResult::Ok);

    let mut rounds = 0;
    loop {
        let _ = round(&db, &r, scan::PAGE);
        {
            let s = r.state.lock().expect("state");
            let moves = s.in_flight.values().filter(|f| f.rebalance).count();
            assert!(moves <= rebalance::MAX_IN_FLIGHT, "{moves} in flight");
            for f in s.in_flight.values() {
                assert!(f.rebalance);
                assert_eq!(f.task.sources[0].index, f.task.index, "own copy first");
                assert!(matches!(f.target, 4..=6), "{}", f.target);
            }
        }
        if commit_all(&db, &r) == 0 {
            break;
        }
        rounds += 1;
        assert!(rounds < 200, "never balances");
    }
    let st = rebalance_status(&r);
    assert_eq!(st.state, "balanced", "{st:?}");
    assert!(st.spread_pct <= 5.0, "{st:?}");
    assert!(st.moved > 0);
    // Every stripe still on three distinct chunkservers; the counters
    // agree with the rows.
    let txn = redb::ReadableDatabase::begin_read(&db).expect("read");
    let placed = crate::shard_index::placed(&txn).expect("placed");
    let mut counted: BTreeMap<ChunkserverId, u64> = BTreeMap::new();
    for i in (0..300u32).chain([1000]) {
        let q = Query::GetObject {
            bucket: "bkt".into(),
            key: format!("o{i:04}"),
        };
        let Ok(QueryResult::Object(m)) = model::query(&txn, &q) else {
            panic!("o{i:04}")
        };
        let on: HashSet<_> = m.stripes[0].shards.iter().map(|l| l.chunkserver).collect();
        assert_eq!(on.len(), 3, "o{i:04}: {:?}", m.stripes[0].shards);
        for l in &m.stripes[0].shards {
            *counted.entry(l.chunkserver.expect("placed")).or_insert(0) += 4;
        }
    }
    let bytes: BTreeMap<ChunkserverId, u64> = placed.iter().map(|(c, p)| (*c, p.bytes)).collect();
    assert_eq!(bytes, counted);
    assert!(counted.get(&4).copied().unwrap_or(0) > 0, "{counted:?}");
}
