//! Tests of the Raft stores (openraft's conformance suite plus restart and
//! snapshot cases) and of the HTTP transport on a real 3-node cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use openraft::error::RPCError;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{log_id, StoreBuilder, Suite};
use openraft::{
    BasicNode, Config, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder, ServerState,
    SnapshotPolicy, Vote,
};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use tempfile::TempDir;

use super::*;
use crate::model;
use crate::net::{self, HttpClient};
use crate::types::{BucketInfo, Command, CommandResult, EcParams, MetaError};

// ---------------------------------------------------------------- helpers

fn create_bucket(name: &str) -> Command {
    Command::CreateBucket {
        bucket: BucketInfo {
            name: name.to_string(),
            ec: EcParams::default(),
            shard_size: 1 << 20,
            created_ms: 1_700_000_000_000,
            owner: String::new(),
        },
    }
}

fn normal(index: u64, cmd: Command) -> Entry {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn blank(index: u64) -> Entry {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Blank,
    }
}

fn membership(index: u64, voters: &[NodeId]) -> Entry {
    let set: BTreeSet<NodeId> = voters.iter().copied().collect();
    let nodes: BTreeMap<NodeId, BasicNode> = voters
        .iter()
        .map(|&id| (id, BasicNode::new(format!("127.0.0.1:{}", 9000 + id))))
        .collect();
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Membership(Membership::new(vec![set], nodes)),
    }
}

type TableDump = Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>;

/// Every model table's rows.
fn dump_model(sm: &StateMachineStore) -> TableDump {
    let txn = sm.begin_read().unwrap();
    model::MODEL_TABLES
        .iter()
        .map(|def| {
            let t = txn.open_table(*def).unwrap();
            let rows = t
                .iter()
                .unwrap()
                .map(|r| {
                    let (k, v) = r.unwrap();
                    (k.value().to_vec(), v.value().to_vec())
                })
                .collect();
            (redb::TableHandle::name(def).to_string(), rows)
        })
        .collect()
}

fn bucket_count(db: &redb::Database) -> u64 {
    let txn = db.begin_read().unwrap();
    txn.open_table(model::BUCKETS).unwrap().len().unwrap()
}

/// A state machine holding a membership, a few buckets and a refused
/// command, up to log index 5.
async fn populated_sm(dir: &TempDir) -> (LogStore, StateMachineStore) {
    let (log, mut sm) = open_stores(dir.path()).await.unwrap();
    let replies = sm
        .apply([
            membership(1, &[1, 2, 3]),
            normal(2, create_bucket("alpha")),
            normal(3, create_bucket("beta")),
            normal(4, create_bucket("alpha")),
            blank(5),
        ])
        .await
        .unwrap();
    assert_eq!(
        replies,
        vec![
            CommandResult::Ok,
            CommandResult::Ok,
            CommandResult::Ok,
            CommandResult::Err(MetaError::BucketExists("alpha".into())),
            CommandResult::Ok,
        ]
    );
    (log, sm)
}

// ------------------------------------------------------------ store tests

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let (log, sm) = open_stores(dir.path()).await?;
        Ok((dir, log, sm))
    }
}

/// openraft's conformance suite (it runs each case on its own runtime, so
/// this is a plain test).
#[test]
fn openraft_suite() {
    Suite::test_all(Builder).unwrap();
}

#[tokio::test]
async fn restart_keeps_log_vote_committed_and_applied_state() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, mut sm) = open_stores(dir.path()).await.unwrap();
        log.blocking_append([
            blank(0),
            membership(1, &[1]),
            normal(2, create_bucket("one")),
        ])
        .await
        .unwrap();
        // save_committed is not fsynced on its own; the next append is.
        log.save_committed(Some(log_id(1, 1, 2))).await.unwrap();
        log.blocking_append((3..=6).map(blank)).await.unwrap();
        log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        log.purge(log_id(1, 1, 1)).await.unwrap();
        log.truncate(log_id(1, 1, 5)).await.unwrap();
        sm.apply([membership(1, &[1]), normal(2, create_bucket("one"))])
            .await
            .unwrap();
    }
    let (mut log, mut sm) = open_stores(dir.path()).await.unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 1)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 4)));
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(Vote::new_committed(1, 1))
    );
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 1, 2)));
    let entries = log.try_get_log_entries(0..100).await.unwrap();
    let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, vec![2, 3, 4]);
    assert!(matches!(&entries[0].payload, EntryPayload::Normal(c) if *c == create_bucket("one")));
    let mut reader = log.get_log_reader().await;
    assert_eq!(reader.try_get_log_entries(3..=3).await.unwrap().len(), 1);
    let (from, to) = (5, 3);
    assert!(reader
        .try_get_log_entries(from..to)
        .await
        .unwrap()
        .is_empty());

    let (applied, mem) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 1, 2)));
    assert_eq!(mem.log_id(), &Some(log_id(1, 1, 1)));
    assert_eq!(bucket_count(&sm.db()), 1);
    let txn = sm.begin_read().unwrap();
    let (applied_in_txn, _) = state_machine::read_applied(&txn).unwrap();
    assert_eq!(applied_in_txn, applied);
}

#[tokio::test]
async fn snapshot_installs_on_fresh_store_and_survives_restart() {
    let a_dir = tempfile::tempdir().unwrap();
    let (_a_log, mut a) = populated_sm(&a_dir).await;
    let snap = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snap.meta.last_log_id, Some(log_id(1, 1, 5)));
    let data = snap.snapshot.into_inner();

    let b_dir = tempfile::tempdir().unwrap();
    {
        let (_b_log, mut b) = open_stores(b_dir.path()).await.unwrap();
        let mut rx = b.begin_receiving_snapshot().await.unwrap();
        rx.get_mut().extend_from_slice(&data);
        b.install_snapshot(&snap.meta, rx).await.unwrap();
        assert_eq!(dump_model(&b), dump_model(&a));
        assert_eq!(
            b.applied_state().await.unwrap(),
            a.applied_state().await.unwrap()
        );
        assert_eq!(bucket_count(&b.db()), 2);
    }
    let (_b_log, mut b) = open_stores(b_dir.path()).await.unwrap();
    assert_eq!(dump_model(&b), dump_model(&a));
    let cur = b.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(cur.meta, snap.meta);
    assert_eq!(cur.snapshot.into_inner(), data);
}

#[tokio::test]
async fn newer_snapshot_file_is_installed_on_open() {
    // A crash between writing the snapshot file and committing the install
    // leaves the file ahead of the database: open must finish the install.
    let a_dir = tempfile::tempdir().unwrap();
    let (_a_log, mut a) = populated_sm(&a_dir).await;
    a.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let c_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        a_dir.path().join(state_machine::SNAPSHOT_FILE),
        c_dir.path().join(state_machine::SNAPSHOT_FILE),
    )
    .unwrap();
    let (_c_log, mut c) = open_stores(c_dir.path()).await.unwrap();
    assert_eq!(dump_model(&c), dump_model(&a));
    assert_eq!(
        c.applied_state().await.unwrap(),
        a.applied_state().await.unwrap()
    );
}

#[tokio::test]
async fn corrupt_snapshot_is_rejected_and_changes_nothing() {
    let a_dir = tempfile::tempdir().unwrap();
    let (_a_log, mut a) = populated_sm(&a_dir).await;
    let snap = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let good = snap.snapshot.into_inner();

    let b_dir = tempfile::tempdir().unwrap();
    let (_b_log, mut b) = open_stores(b_dir.path()).await.unwrap();
    b.apply([normal(1, create_bucket("local"))]).await.unwrap();
    let before = dump_model(&b);
    let applied_before = b.applied_state().await.unwrap();

    let mut bad: Vec<(String, Vec<u8>)> = Vec::new();
    // Every truncation.
    for n in 0..good.len() {
        bad.push((format!("truncated to {n}"), good[..n].to_vec()));
    }
    let mut v = good.clone();
    v.push(0);
    bad.push(("trailing byte".into(), v));
    let mut v = good.clone();
    v[0] ^= 0xff;
    bad.push(("bad magic".into(), v));
    let mut v = good.clone();
    v[11] = 2; // version u32 at 8..12
    bad.push(("future version".into(), v));
    let mut v = good.clone();
    let meta_len = u32::from_be_bytes(v[12..16].try_into().unwrap()) as usize;
    let tables = 16 + meta_len + 4;
    v[tables + 2] ^= 0x20; // first table name: "buckets" -> "Buckets"
    bad.push(("unknown table".into(), v));
    let mut v = good.clone();
    let count_at = tables + 2 + "buckets".len();
    v[count_at + 7] += 1; // one more row than present
    bad.push(("count too high".into(), v));
    bad.push(("garbage".into(), vec![0xa5; 300]));

    for (what, data) in bad {
        let mut rx = b.begin_receiving_snapshot().await.unwrap();
        *rx.get_mut() = data;
        let r = b.install_snapshot(&snap.meta, rx).await;
        assert!(r.is_err(), "{what}: accepted");
    }
    // A valid stream under the wrong meta is refused too.
    let mut wrong = snap.meta.clone();
    wrong.last_log_id = Some(log_id(1, 1, 4));
    let mut rx = b.begin_receiving_snapshot().await.unwrap();
    *rx.get_mut() = good.clone();
    assert!(b.install_snapshot(&wrong, rx).await.is_err());

    assert_eq!(dump_model(&b), before);
    assert_eq!(b.applied_state().await.unwrap(), applied_before);
    assert!(b.get_current_snapshot().await.unwrap().is_none());

    // And the good one still installs.
    let mut rx = b.begin_receiving_snapshot().await.unwrap();
    *rx.get_mut() = good;
    b.install_snapshot(&snap.meta, rx).await.unwrap();
    assert_eq!(dump_model(&b), dump_model(&a));
}

#[tokio::test]
async fn corrupt_snapshot_file_fails_open() {
    let a_dir = tempfile::tempdir().unwrap();
    {
        let (_a_log, mut a) = populated_sm(&a_dir).await;
        a.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
    }
    let path = a_dir.path().join(state_machine::SNAPSHOT_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 1);
    std::fs::write(&path, bytes).unwrap();
    assert!(open_stores(a_dir.path()).await.is_err());
}

// --------------------------------------------------------- network tests

const SECRET: &str = "test-secret";

fn rpc_option(ms: u64) -> RPCOption {
    RPCOption::new(Duration::from_millis(ms))
}

fn vote_req() -> VoteRequest<NodeId> {
    VoteRequest::new(Vote::new(1, 9), None)
}

async fn connection(
    id: NodeId,
    target: NodeId,
    addr: SocketAddr,
    secret: &str,
) -> NetworkConnection {
    let mut f = NetworkFactory::new(id, HttpClient::default(), secret);
    f.new_client(target, &BasicNode::new(addr.to_string()))
        .await
}

#[tokio::test]
async fn refused_connection_is_unreachable() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let mut c = connection(9, 1, addr, SECRET).await;
    match c.vote(vote_req(), rpc_option(2000)).await {
        Err(RPCError::Unreachable(_)) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn silent_peer_is_a_timeout() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            conns.push(s);
        }
    });
    let mut c = connection(9, 1, addr, SECRET).await;
    match c.vote(vote_req(), rpc_option(200)).await {
        Err(RPCError::Timeout(t)) => {
            assert_eq!((t.id, t.target), (9, 1));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    hold.abort();
}

struct TestNode {
    id: NodeId,
    addr: SocketAddr,
    raft: Raft,
    db: Arc<redb::Database>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

async fn serve_raft(raft: Raft, req: Request<Incoming>) -> Response<net::Body> {
    if !net::has_secret(req.headers(), SECRET) {
        return net::unauthorized();
    }
    let path = req.uri().path().to_string();
    match net::read_body(req.into_body(), net::MAX_JSON_BODY).await {
        Ok(body) => handle_raft_rpc(&raft, &path, body).await,
        Err(e) => net::error_response(StatusCode::PAYLOAD_TOO_LARGE, "TooLarge", &e.to_string()),
    }
}

async fn start_node(id: NodeId, config: Arc<Config>) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (log, sm) = open_stores(dir.path()).await.unwrap();
    let db = sm.db();
    let network = NetworkFactory::new(id, HttpClient::default(), SECRET);
    let raft = Raft::new(id, config, network, log, sm).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let r = raft.clone();
    let handler = move |req: Request<Incoming>, _peer: SocketAddr| serve_raft(r.clone(), req);
    let server = tokio::spawn(net::serve(
        listener,
        handler,
        async move {
            let _ = stopped.await;
        },
        net::ServerOptions::default(),
    ));
    TestNode {
        id,
        addr,
        raft,
        db,
        stop: Some(stop),
        server,
        _dir: dir,
    }
}

impl TestNode {
    fn node(&self) -> BasicNode {
        BasicNode::new(self.addr.to_string())
    }

    async fn stop(mut self) {
        self.raft.shutdown().await.unwrap();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.server.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_cluster_replicates_and_ships_snapshots() {
    let config = Arc::new(
        Config {
            cluster_name: "cairn-test".into(),
            heartbeat_interval: 50,
            election_timeout_min: 300,
            election_timeout_max: 600,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(10),
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            ..Default::default()
        }
        .validate()
        .unwrap(),
    );
    let wait = Some(Duration::from_secs(20));
    let n1 = start_node(1, config.clone()).await;
    let n2 = start_node(2, config.clone()).await;
    let n3 = start_node(3, config.clone()).await;

    n1.raft
        .initialize(BTreeMap::from([(1, n1.node())]))
        .await
        .unwrap();
    n1.raft
        .wait(wait)
        .state(ServerState::Leader, "n1 leads")
        .await
        .unwrap();

    // Enough writes for a snapshot and a purge before the others join, so
    // they can only catch up through /raft/snapshot.
    for i in 0..30 {
        let r = n1
            .raft
            .client_write(create_bucket(&format!("bucket-{i:02}")))
            .await
            .unwrap();
        assert_eq!(r.data, CommandResult::Ok);
    }
    let r = n1
        .raft
        .client_write(create_bucket("bucket-00"))
        .await
        .unwrap();
    assert_eq!(
        r.data,
        CommandResult::Err(MetaError::BucketExists("bucket-00".into()))
    );
    n1.raft
        .wait(wait)
        .metrics(|m| m.purged.is_some_and(|p| p.index >= 20), "purged")
        .await
        .unwrap();

    n1.raft.add_learner(2, n2.node(), true).await.unwrap();
    n1.raft.add_learner(3, n3.node(), true).await.unwrap();
    n1.raft.change_membership([1, 2, 3], false).await.unwrap();
    let last = n1
        .raft
        .client_write(create_bucket("after-join"))
        .await
        .unwrap()
        .log_id;

    for n in [&n1, &n2, &n3] {
        n.raft
            .wait(wait)
            .applied_index_at_least(Some(last.index), "caught up")
            .await
            .unwrap();
        assert_eq!(bucket_count(&n.db), 31, "node {}", n.id);
    }
    assert!(
        n3.raft.metrics().borrow().snapshot.is_some(),
        "n3 got a snapshot"
    );

    // Server side: malformed and unknown RPCs.
    let r = handle_raft_rpc(&n1.raft, network::APPEND_PATH, Bytes::from_static(b"{nope")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = handle_raft_rpc(&n1.raft, "/raft/nope", Bytes::new()).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // A wrong secret is refused by the peer: unreachable, not a Raft error.
    let mut c = connection(9, 1, n1.addr, "wrong").await;
    match c.vote(vote_req(), rpc_option(2000)).await {
        Err(RPCError::Unreachable(_)) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }

    // A peer whose Raft has stopped answers with a Raft error: RemoteError.
    n3.raft.shutdown().await.unwrap();
    let mut c = connection(9, 3, n3.addr, SECRET).await;
    match c.vote(vote_req(), rpc_option(2000)).await {
        Err(RPCError::RemoteError(e)) => assert_eq!(e.target, 3),
        other => panic!("expected RemoteError, got {other:?}"),
    }

    for n in [n1, n2, n3] {
        n.stop().await;
    }
}

/// A state machine file of model format 1 (no reverse shard index) opens,
/// builds the index from its rows and is stamped format 2.
#[tokio::test]
async fn format_1_state_opens_and_builds_the_shard_index() {
    use crate::shard_index;
    use crate::types::StripeManifest;
    use crate::types::{Hash32, ObjectManifest, PutCondition, ShardId, ShardLoc, StripeId};
    let dir = TempDir::new().unwrap();
    {
        let (_log, mut sm) = open_stores(dir.path()).await.unwrap();
        let mut entries = vec![normal(1, create_bucket("bkt"))];
        for i in 0..2u64 {
            entries.push(normal(
                2 + i,
                Command::RegisterChunkserver {
                    addr: format!("cs{i}"),
                    zone: format!("z{i}"),
                    capacity: 1,
                    free: 1,
                    now_ms: 0,
                },
            ));
        }
        let manifest = ObjectManifest {
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
            stripes: vec![StripeManifest {
                id: StripeId([2; 16]),
                len: 4,
                shards: (0..2u8)
                    .map(|i| ShardLoc {
                        chunkserver: Some(u64::from(i) + 1),
                        shard: ShardId([0x30 + i; 16]),
                        blake3: Hash32([0; 32]),
                    })
                    .collect(),
            }],
            parts: Vec::new(),
            inline: None,
        };
        entries.push(normal(
            4,
            Command::PutObject {
                bucket: "bkt".into(),
                key: "k".into(),
                manifest,
                condition: PutCondition::None,
            },
        ));
        let replies = sm.apply(entries).await.unwrap();
        assert!(
            replies.iter().all(|r| !matches!(r, CommandResult::Err(_))),
            "{replies:?}"
        );
    }
    // Make it what an older binary left: no index, no counter, format 1.
    {
        let db = redb::Database::open(dir.path().join(state_machine::SM_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(shard_index::SHARD_OWNERS).unwrap();
        txn.open_table(model::COUNTERS)
            .unwrap()
            .remove(b"shard_index".as_slice())
            .unwrap();
        txn.open_table(state_machine::SM_META)
            .unwrap()
            .insert(state_machine::KEY_FORMAT, b"1".as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let (_log, sm) = open_stores(dir.path()).await.unwrap();
    let txn = sm.begin_read().unwrap();
    let format: u64 = serde_json::from_slice(
        txn.open_table(state_machine::SM_META)
            .unwrap()
            .get(state_machine::KEY_FORMAT)
            .unwrap()
            .unwrap()
            .value(),
    )
    .unwrap();
    assert_eq!(format, model::MODEL_FORMAT_VERSION);
    assert_eq!(shard_index::len(&txn).unwrap(), 2);
    let owner = shard_index::owner(&txn, 2, &ShardId([0x31; 16]))
        .unwrap()
        .unwrap();
    assert_eq!(
        owner,
        shard_index::Owner {
            row: shard_index::OwnerRow::Object(model::object_key("bkt", "k")),
            version: StripeId([1; 16]),
            stripe: 0,
            index: 1,
        }
    );
    // A newer format than this binary knows is refused, untouched.
    drop(txn);
    drop(sm);
    {
        let db = redb::Database::open(dir.path().join(state_machine::SM_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(state_machine::SM_META)
            .unwrap()
            .insert(state_machine::KEY_FORMAT, b"99".as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    assert!(open_stores(dir.path()).await.is_err());
}
