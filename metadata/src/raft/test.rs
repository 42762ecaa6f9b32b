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

/// The bytes of a snapshot's data file, from its start.
async fn snapshot_bytes(snap: Snapshot) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = snap.snapshot;
    f.seek(std::io::SeekFrom::Start(0)).await.unwrap();
    let mut out = Vec::new();
    f.read_to_end(&mut out).await.unwrap();
    out
}

/// A receiving file holding `data`, as openraft hands it to install.
async fn received(sm: &mut StateMachineStore, data: &[u8]) -> Box<tokio::fs::File> {
    use tokio::io::AsyncWriteExt;
    let mut rx = sm.begin_receiving_snapshot().await.unwrap();
    rx.write_all(data).await.unwrap();
    rx.shutdown().await.unwrap();
    rx
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
    let meta = snap.meta.clone();
    let data = snapshot_bytes(snap).await;
    let snap = Snapshot {
        meta,
        snapshot: Box::new(tokio::fs::File::from_std(tempfile::tempfile().unwrap())),
    };

    let b_dir = tempfile::tempdir().unwrap();
    {
        let (_b_log, mut b) = open_stores(b_dir.path()).await.unwrap();
        let rx = received(&mut b, &data).await;
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
    assert_eq!(snapshot_bytes(cur).await, data);
    // No temp files or staging tables are left behind.
    let names: Vec<String> = std::fs::read_dir(b_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    let txn = b.db().begin_write().unwrap();
    let tables: Vec<String> = txn
        .list_tables()
        .unwrap()
        .map(|t| redb::TableHandle::name(&t).to_string())
        .collect();
    assert!(
        tables.iter().all(|t| !t.starts_with("snapshot_staging")),
        "{tables:?}"
    );
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
        a_dir.path().join(snapshot::SNAPSHOT_FILE),
        c_dir.path().join(snapshot::SNAPSHOT_FILE),
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
    let snap_meta = snap.meta.clone();
    let good = snapshot_bytes(snap).await;
    let snap = Snapshot {
        meta: snap_meta,
        snapshot: Box::new(tokio::fs::File::from_std(tempfile::tempfile().unwrap())),
    };

    let b_dir = tempfile::tempdir().unwrap();
    let (_b_log, mut b) = open_stores(b_dir.path()).await.unwrap();
    b.apply([normal(1, create_bucket("local"))]).await.unwrap();
    let before = dump_model(&b);
    let applied_before = b.applied_state().await.unwrap();

    let mut bad: Vec<(String, Vec<u8>)> = Vec::new();
    // Truncations: every one in the header and the tail, a sample between.
    for n in (0..good.len()).filter(|n| *n < 64 || n % 17 == 0 || n + 48 > good.len()) {
        bad.push((format!("truncated to {n}"), good[..n].to_vec()));
    }
    let mut v = good.clone();
    v.push(0);
    bad.push(("trailing byte".into(), v));
    let mut v = good.clone();
    v[0] ^= 0xff;
    bad.push(("bad magic".into(), v));
    let mut v = good.clone();
    v[11] = 3; // version u32 at 8..12
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
    let mut v = good.clone();
    let last = v.len() - 1;
    v[last] ^= 1;
    bad.push(("BLAKE3 flipped".into(), v));
    let mut v = good.clone();
    let row = tables + 2 + "buckets".len() + 8 + 4 + 1;
    v[row] ^= 1; // a byte of the first bucket's key
    bad.push(("row byte flipped".into(), v));

    for (what, data) in bad {
        let rx = received(&mut b, &data).await;
        let r = b.install_snapshot(&snap.meta, rx).await;
        assert!(r.is_err(), "{what}: accepted");
    }
    // A valid stream under the wrong meta is refused too.
    let mut wrong = snap.meta.clone();
    wrong.last_log_id = Some(log_id(1, 1, 4));
    let rx = received(&mut b, &good).await;
    assert!(b.install_snapshot(&wrong, rx).await.is_err());
    let mut wrong = snap.meta.clone();
    wrong.snapshot_id = "another".into();
    let rx = received(&mut b, &good).await;
    assert!(b.install_snapshot(&wrong, rx).await.is_err());

    assert_eq!(dump_model(&b), before);
    assert_eq!(b.applied_state().await.unwrap(), applied_before);
    assert!(b.get_current_snapshot().await.unwrap().is_none());

    // And the good one still installs.
    let rx = received(&mut b, &good).await;
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
    let path = a_dir.path().join(snapshot::SNAPSHOT_FILE);
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
        Ok(body) => handle_raft_rpc(&raft, &path, body, None).await,
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
    // An older build's JSON: refused with both versions named.
    let json = serde_json::to_vec(&vote_req()).unwrap();
    let r = handle_raft_rpc(&n1.raft, network::VOTE_PATH, Bytes::from(json), None).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("RaftWireVersion")
            && body.contains("version 1")
            && body.contains(&format!("version {}", codec::WIRE_VERSION)),
        "{body}"
    );
    let mut garbage = vec![codec::WIRE_VERSION];
    garbage.extend_from_slice(b"\xff\xff\xff");
    let r = handle_raft_rpc(&n1.raft, network::APPEND_PATH, Bytes::from(garbage), None).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = handle_raft_rpc(&n1.raft, "/raft/nope", Bytes::new(), None).await;
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

/// A learner that joins behind many large entries catches up: openraft
/// bounds an append by entry count (300) and by the heartbeat interval, so
/// without the byte budget (`APPEND_BYTES_BUDGET`) 200 entries of 1 MiB went
/// in one append that timed out, again and again, forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_behind_large_entries_catches_up() {
    let config = Arc::new(
        Config {
            cluster_name: "cairn-test".into(),
            heartbeat_interval: 200,
            election_timeout_min: 1000,
            election_timeout_max: 2000,
            snapshot_policy: SnapshotPolicy::Never,
            ..Default::default()
        }
        .validate()
        .unwrap(),
    );
    let wait = Some(Duration::from_secs(60));
    let n1 = start_node(1, config.clone()).await;
    let n2 = start_node(2, config.clone()).await;
    n1.raft
        .initialize(BTreeMap::from([(1, n1.node())]))
        .await
        .unwrap();
    n1.raft
        .wait(wait)
        .state(ServerState::Leader, "n1 leads")
        .await
        .unwrap();
    // Each entry about 1 MiB (an invalid bucket name: apply refuses it,
    // the log still holds it).
    let mut last = 0;
    for i in 0..200u8 {
        let name = String::from_utf8(vec![b'a' + i % 26; 1 << 20]).unwrap();
        last = n1
            .raft
            .client_write(create_bucket(&name))
            .await
            .unwrap()
            .log_id
            .index;
    }
    tokio::time::timeout(
        Duration::from_secs(60),
        n1.raft.add_learner(2, n2.node(), true),
    )
    .await
    .expect("the learner caught up within 60 s")
    .unwrap();
    n2.raft
        .wait(wait)
        .applied_index_at_least(Some(last), "caught up")
        .await
        .unwrap();
    for n in [n1, n2] {
        n.stop().await;
    }
}

#[test]
fn append_budget_hint_fits_the_budget() {
    use network::APPEND_BYTES_BUDGET as B;
    assert_eq!(network::budget_hint(300, 300 * (1 << 20)), 4);
    assert_eq!(network::budget_hint(2, 3 * B), 1);
    assert_eq!(network::budget_hint(10, B + 1), 9);
    assert_eq!(network::budget_hint(5, 0), 4);
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
            tags: BTreeMap::new(),
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
            .remove(b"shard_index_placed".as_slice())
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

/// A state machine file of model format 2 (each object one JSON manifest
/// row) opens, splits every row into a binary head and stripe rows, reads
/// back the same manifests and is stamped format 3; a second open finds
/// nothing left to do.
#[tokio::test]
async fn format_2_object_rows_split_into_heads_and_stripe_rows() {
    use crate::types::{Query, QueryResult};
    let dir = TempDir::new().unwrap();
    drop(open_stores(dir.path()).await.unwrap());
    let mut big = manifest(false);
    big.version = crate::types::StripeId([9; 16]);
    big.stripes = (0..300u64)
        .map(|i| {
            let mut s = big.stripes[0].clone();
            s.len = i;
            s
        })
        .collect();
    let objects = [
        ("a", manifest(false)),
        ("b", manifest(true)),
        ("c/big", big),
    ];
    // What a format-2 binary left: JSON rows, no stripe rows, format 2.
    {
        let db = redb::Database::open(dir.path().join(state_machine::SM_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        let bucket = BucketInfo {
            name: "bkt".into(),
            ec: EcParams { k: 1, m: 1 },
            shard_size: 4,
            created_ms: 0,
            owner: String::new(),
        };
        txn.open_table(model::BUCKETS)
            .unwrap()
            .insert(
                b"bkt".as_slice(),
                serde_json::to_vec(&bucket).unwrap().as_slice(),
            )
            .unwrap();
        {
            let mut t = txn.open_table(model::OBJECTS).unwrap();
            for (k, m) in &objects {
                t.insert(
                    model::object_key("bkt", k).as_slice(),
                    serde_json::to_vec(m).unwrap().as_slice(),
                )
                .unwrap();
            }
        }
        txn.delete_table(model::OBJECT_STRIPES).unwrap();
        txn.open_table(model::COUNTERS)
            .unwrap()
            .remove(b"object_rows_v3".as_slice())
            .unwrap();
        txn.open_table(state_machine::SM_META)
            .unwrap()
            .insert(state_machine::KEY_FORMAT, b"2".as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    for _ in 0..2 {
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
        assert_eq!(format, 3);
        assert_eq!(model::table_len(&txn, model::OBJECT_STRIPES).unwrap(), 302);
        let heads = txn.open_table(model::OBJECTS).unwrap();
        for (k, m) in &objects {
            let raw = heads
                .get(model::object_key("bkt", k).as_slice())
                .unwrap()
                .unwrap();
            assert_eq!(raw.value()[0], model::ROW_V1, "{k} is still JSON");
            let head = model::decode_head(raw.value()).unwrap();
            assert_eq!(head.stripes, m.stripes.len() as u64);
            assert!(head.manifest.stripes.is_empty());
            let got = model::query(
                &txn,
                &Query::GetObject {
                    bucket: "bkt".into(),
                    key: k.to_string(),
                },
            )
            .unwrap();
            match got {
                QueryResult::Object(got) => assert_eq!(&got, m, "{k}"),
                other => panic!("{k}: {other:?}"),
            }
        }
        // A listing reads heads only and still sees every object.
        let page = model::query(
            &txn,
            &Query::ListObjects(crate::types::ListRequest {
                bucket: "bkt".into(),
                max_keys: 1000,
                ..Default::default()
            }),
        )
        .unwrap();
        match page {
            QueryResult::List(p) => assert_eq!(p.entries.len(), 3),
            other => panic!("{other:?}"),
        }
    }
}

// ------------------------------------------------------- binary encodings

/// A manifest with every optional part set (or not, per `inline`).
fn manifest(inline: bool) -> crate::types::ObjectManifest {
    use crate::types::{Hash32, InlineData, ObjectManifest, ShardId, ShardLoc, StripeId};
    use crate::types::{PartInfo, StripeManifest};
    ObjectManifest {
        version: StripeId([1; 16]),
        size: 4,
        etag: "e".into(),
        content_type: Some("text/plain".into()),
        headers: BTreeMap::from([("cache-control".into(), "no".into())]),
        user_meta: BTreeMap::from([("a".into(), "b".into())]),
        checksums: BTreeMap::from([("crc32c".into(), "AAAA".into())]),
        created_ms: 7,
        ec: EcParams { k: 1, m: 1 },
        shard_size: 4,
        stripes: vec![StripeManifest {
            id: StripeId([2; 16]),
            len: 4,
            shards: vec![ShardLoc {
                chunkserver: Some(1),
                shard: ShardId([3; 16]),
                blake3: Hash32([4; 32]),
            }],
        }],
        parts: vec![PartInfo {
            number: 1,
            size: 4,
            etag: "p".into(),
            checksums: BTreeMap::new(),
            stripes: 1,
        }],
        inline: inline.then(|| InlineData::new(Bytes::from_static(b"data"))),
        tags: Default::default(),
    }
}

/// One command of every variant. The match makes a new variant a compile
/// error here until it is added to the list.
fn every_command() -> Vec<Command> {
    use crate::types::{
        AccessKey, BucketGrant, ChunkserverState, CompletePart, PutCondition, RepairItem, ShardId,
        StripeId, UploadInfo, UploadPart,
    };
    fn covered(c: &Command) -> u32 {
        match c {
            Command::Once { .. } => 0,
            Command::Batch { .. } => 1,
            Command::At { .. } => 2,
            Command::RegisterIntent { .. } => 3,
            Command::WithIntent { .. } => 4,
            Command::ExpireIntents { .. } => 5,
            Command::CreateBucket { .. } => 6,
            Command::DeleteBucket { .. } => 7,
            Command::PutObject { .. } => 8,
            Command::DeleteObject { .. } => 9,
            Command::RegisterChunkserver { .. } => 10,
            Command::ChunkserverStats { .. } => 11,
            Command::SetChunkserverState { .. } => 12,
            Command::QueueRepair { .. } => 13,
            Command::GcDone { .. } => 14,
            Command::PutAccessKey { .. } => 15,
            Command::DeleteAccessKey { .. } => 16,
            Command::CreateUpload { .. } => 17,
            Command::PutPart { .. } => 18,
            Command::CompleteUpload { .. } => 19,
            Command::AbortUpload { .. } => 20,
            Command::ReportBadShards { .. } => 21,
            Command::ClearBadShards { .. } => 22,
            Command::CommitRepair { .. } => 23,
            Command::QueueGc { .. } => 24,
            Command::RemoveChunkserver { .. } => 25,
            Command::PutObjectTags { .. } => 26,
            Command::SetRebalance { .. } => 27,
            Command::PutBucketCors { .. } => 28,
            Command::DeleteBucketCors { .. } => 29,
            Command::PutBucketTagging { .. } => 30,
            Command::DeleteBucketTagging { .. } => 31,
            Command::PutBucketVersioning { .. } => 32,
            Command::DeleteObjectVersion { .. } => 33,
            Command::PutObjectLockConfig { .. } => 34,
            Command::PutObjectRetention { .. } => 35,
            Command::PutObjectLegalHold { .. } => 36,
            // Issue 14 (security).
            Command::SetAccessKeyGrant { .. } => 37,
            Command::RotateAccessKey { .. } => 38,
            Command::SealAccessKey { .. } => 39,
            Command::Audited { .. } => 40,
            Command::AuditRecord { .. } => 41,
        }
    }
    const VARIANTS: u32 = 42;
    let s = |b: u8| ShardId([b; 16]);
    let put = |inline: bool, condition: PutCondition| Command::PutObject {
        bucket: "b".into(),
        key: "k".into(),
        manifest: manifest(inline),
        condition,
    };
    let cmds = vec![
        Command::Once {
            id: StripeId([9; 16]),
            inner: Box::new(put(true, PutCondition::IfNoneMatch)),
        },
        Command::Batch {
            cmds: vec![put(false, PutCondition::None), create_bucket("x")],
        },
        Command::At {
            now_ms: 5,
            inner: Box::new(put(false, PutCondition::IfVersion(StripeId([1; 16])))),
        },
        Command::RegisterIntent {
            intent: StripeId([8; 16]),
            shards: vec![(1, s(1)), (2, s(2))],
            lease_ms: 1000,
        },
        Command::WithIntent {
            intent: StripeId([8; 16]),
            inner: Box::new(put(true, PutCondition::IfMatch("etag".into()))),
        },
        Command::ExpireIntents { limit: 10 },
        create_bucket("bkt"),
        Command::DeleteBucket { name: "bkt".into() },
        put(true, PutCondition::None),
        Command::DeleteObject {
            bucket: "b".into(),
            key: "k".into(),
            condition: PutCondition::IfMatch("e".into()),
        },
        Command::RegisterChunkserver {
            addr: "a:1".into(),
            zone: "z".into(),
            capacity: 10,
            free: 5,
            now_ms: 3,
        },
        Command::ChunkserverStats {
            id: 1,
            addr: "a:1".into(),
            zone: "z".into(),
            capacity: 10,
            free: 5,
            used: 4,
            shard_count: 2,
            now_ms: 3,
        },
        Command::SetChunkserverState {
            id: 1,
            state: ChunkserverState::Draining,
        },
        Command::QueueRepair {
            items: vec![RepairItem {
                bucket: "b".into(),
                key: "k".into(),
                version: StripeId([1; 16]),
                stripe: 0,
                index: 1,
                chunkserver: None,
                reason: "missing".into(),
            }],
        },
        Command::GcDone {
            chunkserver: 1,
            shards: vec![s(1)],
        },
        Command::PutAccessKey {
            key: AccessKey {
                id: "GK1".into(),
                secret: "s".into(),
                name: "n".into(),
                created_ms: 1,
                admin: false,
                buckets: BTreeMap::from([(
                    "b".into(),
                    BucketGrant {
                        read: true,
                        write: false,
                        owner: false,
                    },
                )]),
                expires_ms: None,
            },
        },
        Command::DeleteAccessKey { id: "GK1".into() },
        Command::CreateUpload {
            upload: UploadInfo {
                id: StripeId([5; 16]),
                bucket: "b".into(),
                key: "k".into(),
                initiated_ms: 1,
                owner: String::new(),
                content_type: None,
                headers: BTreeMap::new(),
                user_meta: BTreeMap::new(),
                checksum_algorithm: Some("crc32c".into()),
                checksum_type: None,
                ec: EcParams::default(),
                shard_size: 4,
                tags: Default::default(),
            },
        },
        Command::PutPart {
            bucket: "b".into(),
            key: "k".into(),
            upload: StripeId([5; 16]),
            part: UploadPart {
                info: manifest(false).parts[0].clone(),
                stripes: manifest(false).stripes,
                created_ms: 2,
            },
        },
        Command::CompleteUpload {
            bucket: "b".into(),
            key: "k".into(),
            upload: StripeId([5; 16]),
            parts: vec![CompletePart {
                number: 1,
                etag: "p".into(),
            }],
            min_part_size: 5,
            etag: "x-1".into(),
            version: StripeId([6; 16]),
            checksums: BTreeMap::new(),
            now_ms: 9,
            condition: PutCondition::None,
        },
        Command::AbortUpload {
            bucket: "b".into(),
            key: "k".into(),
            upload: StripeId([5; 16]),
        },
        Command::ReportBadShards {
            chunkserver: 2,
            shards: vec![s(4)],
        },
        Command::ClearBadShards {
            chunkserver: 2,
            shards: vec![s(4)],
        },
        Command::CommitRepair {
            bucket: "b".into(),
            key: "k".into(),
            version: StripeId([1; 16]),
            stripe: 0,
            index: 0,
            shard: s(3),
            from: None,
            to: 2,
            reused: true,
        },
        Command::QueueGc {
            chunkserver: 3,
            shards: vec![s(7), s(8)],
        },
        Command::RemoveChunkserver { id: 3 },
        Command::PutObjectTags {
            bucket: "b".into(),
            key: "k".into(),
            version: StripeId([1; 16]),
            tags: BTreeMap::from([("a".into(), "b".into())]),
        },
        Command::SetRebalance {
            enabled: false,
            threshold_pct: 5,
        },
        Command::PutBucketCors {
            bucket: "b".into(),
            rules: vec![crate::types::CorsRule {
                allowed_methods: vec!["GET".into()],
                allowed_origins: vec!["*".into()],
                ..crate::types::CorsRule::default()
            }],
        },
        Command::PutBucketTagging {
            bucket: "b".into(),
            tags: BTreeMap::from([("a".into(), "b".into())]),
        },
        Command::DeleteBucketCors { bucket: "b".into() },
        Command::DeleteBucketTagging { bucket: "b".into() },
        Command::PutBucketVersioning {
            bucket: "b".into(),
            state: crate::types::Versioning::Enabled,
        },
        Command::DeleteObjectVersion {
            bucket: "b".into(),
            key: "k".into(),
            version: crate::types::VersionRef::Null,
            bypass_governance: false,
        },
        Command::PutObjectLockConfig {
            bucket: "b".into(),
            config: crate::types::ObjectLockConfig::default(),
        },
        Command::PutObjectRetention {
            bucket: "b".into(),
            key: "k".into(),
            version: None,
            retention: None,
            bypass_governance: true,
        },
        Command::PutObjectLegalHold {
            bucket: "b".into(),
            key: "k".into(),
            version: Some(crate::types::VersionRef::Null),
            on: true,
        },
        // Issue 14 (security).
        Command::SetAccessKeyGrant {
            id: "GK1".into(),
            bucket: "b".into(),
            grant: BucketGrant {
                read: true,
                write: true,
                owner: false,
            },
        },
        Command::RotateAccessKey {
            id: "GK1".into(),
            new_id: "GK2".into(),
            secret: crate::types::SecretString("cairn-sealed-v1:00:00".into()),
            overlap_ms: 60_000,
        },
        Command::SealAccessKey {
            id: "GK1".into(),
            legacy_hash: "ab".into(),
            sealed: crate::types::SecretString("cairn-sealed-v1:00:00".into()),
        },
        Command::Audited {
            who: "alice".into(),
            role: "admin".into(),
            inner: Box::new(Command::DeleteAccessKey { id: "GK1".into() }),
        },
        Command::AuditRecord {
            who: "alice".into(),
            role: "admin".into(),
            what: "add_node 4 10.0.0.4:7001".into(),
            result: "ok".into(),
        },
    ];
    let seen: BTreeSet<u32> = cmds.iter().map(covered).collect();
    assert_eq!(seen.len() as u32, VARIANTS, "a Command variant is missing");
    cmds
}

/// A format-1 entry (written before object tags existed) still decodes,
/// with empty tags: a PutObject without tags encodes its manifest's `tags`
/// as one 0x00 length byte just before the condition's 0x00, which are
/// the entry's last two bytes; format 1 lacks the first of them.
#[test]
fn format_1_entries_decode_with_empty_tags() {
    let cmd = Command::PutObject {
        bucket: "b".into(),
        key: "k".into(),
        manifest: manifest(false),
        condition: crate::types::PutCondition::None,
    };
    let entry = normal(1, cmd.clone());
    let mut buf = Vec::new();
    codec::encode_entry(&entry, &mut buf).unwrap();
    assert_eq!(&buf[buf.len() - 2..], &[0, 0]);
    buf.pop();
    buf[0] = codec::ENTRY_POSTCARD_V1;
    let back = codec::decode_entry(&buf).unwrap();
    assert!(matches!(&back.payload, EntryPayload::Normal(c) if *c == cmd));
    // The same entry in an RPC body of wire version 2 (a peer of the
    // previous build during a rolling upgrade).
    let mut wire = codec::encode_wire(&entry).unwrap();
    assert_eq!(wire.pop(), Some(0));
    wire[0] = codec::WIRE_VERSION_V2;
    let back: Entry = codec::decode_wire(&wire).unwrap();
    assert!(matches!(&back.payload, EntryPayload::Normal(c) if *c == cmd));
    // The flag does not leak: a format-2 entry still reads its tags.
    let mut tagged = manifest(false);
    tagged.tags = BTreeMap::from([("t".into(), "v".into())]);
    let cmd = Command::PutObject {
        bucket: "b".into(),
        key: "k".into(),
        manifest: tagged,
        condition: crate::types::PutCondition::None,
    };
    codec::encode_entry(&normal(2, cmd.clone()), &mut buf).unwrap();
    let back = codec::decode_entry(&buf).unwrap();
    assert!(matches!(&back.payload, EntryPayload::Normal(c) if *c == cmd));
}

#[test]
fn every_command_round_trips_through_the_entry_encoding() {
    let mut buf = Vec::new();
    for (i, cmd) in every_command().into_iter().enumerate() {
        let entry = normal(i as u64 + 1, cmd.clone());
        codec::encode_entry(&entry, &mut buf).unwrap();
        assert_eq!(buf[0], codec::ENTRY_POSTCARD_V2);
        let back = codec::decode_entry(&buf).unwrap();
        assert_eq!(back.log_id, entry.log_id);
        assert!(
            matches!(&back.payload, EntryPayload::Normal(c) if *c == cmd),
            "{cmd:?} came back as {:?}",
            back.payload
        );
        // Through the RPC encoding too.
        let wire = codec::encode_wire(&entry).unwrap();
        let back: Entry = codec::decode_wire(&wire).unwrap();
        assert!(matches!(&back.payload, EntryPayload::Normal(c) if *c == cmd));
    }
    for entry in [blank(3), membership(4, &[1, 2, 3])] {
        codec::encode_entry(&entry, &mut buf).unwrap();
        assert_eq!(codec::decode_entry(&buf).unwrap(), entry);
    }
    // The JSON of the HTTP API is unchanged: no `inline` key when absent,
    // and the flag does not leak out of the binary encoding.
    let json = serde_json::to_value(manifest(false)).unwrap();
    assert!(json.get("inline").is_none(), "{json}");
    let json = serde_json::to_value(manifest(true)).unwrap();
    assert!(json.get("inline").is_some(), "{json}");
    // Refused, never misread.
    assert!(codec::decode_entry(&[0x7f, 1, 2]).is_err());
    assert!(codec::decode_entry(&[]).is_err());
    codec::encode_entry(&blank(3), &mut buf).unwrap();
    buf.push(0);
    assert!(codec::decode_entry(&buf).is_err(), "trailing byte accepted");
}

#[tokio::test]
async fn json_log_of_format_1_reads_back_and_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_stores(dir.path()).await.unwrap());
    let old = vec![
        membership(1, &[1]),
        normal(2, create_bucket("one")),
        normal(
            3,
            Command::PutObject {
                bucket: "one".into(),
                key: "k".into(),
                manifest: manifest(false),
                condition: Default::default(),
            },
        ),
        normal(
            4,
            Command::PutObject {
                bucket: "one".into(),
                key: "i".into(),
                manifest: manifest(true),
                condition: Default::default(),
            },
        ),
    ];
    // What a format 1 build left: JSON entries, format 1.
    {
        const LOG: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("raft_log");
        const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("raft_meta");
        let db = redb::Database::open(dir.path().join(log_store::LOG_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut log = txn.open_table(LOG).unwrap();
            for e in &old {
                let json = serde_json::to_vec(e).unwrap();
                assert_eq!(json[0], b'{');
                log.insert(e.log_id.index.to_be_bytes().as_slice(), json.as_slice())
                    .unwrap();
            }
            txn.open_table(META)
                .unwrap()
                .insert("format", b"1".as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let (mut log, mut sm) = open_stores(dir.path()).await.unwrap();
    assert_eq!(log.try_get_log_entries(1..5).await.unwrap(), old);
    assert_eq!(
        log.get_log_state().await.unwrap().last_log_id,
        Some(log_id(1, 1, 4))
    );
    // New entries are postcard, next to the old JSON ones.
    log.blocking_append([normal(5, create_bucket("two"))])
        .await
        .unwrap();
    let all = log.try_get_log_entries(..).await.unwrap();
    assert_eq!(all.len(), 5);
    sm.apply(all).await.unwrap();
    assert_eq!(bucket_count(&sm.db()), 2);
    drop((log, sm));
    let db = redb::Database::open(dir.path().join(log_store::LOG_FILE)).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn
        .open_table(redb::TableDefinition::<&str, &[u8]>::new("raft_meta"))
        .unwrap();
    let format: u64 = serde_json::from_slice(meta.get("format").unwrap().unwrap().value()).unwrap();
    assert_eq!(format, log_store::LOG_FORMAT_VERSION);
    let log = txn
        .open_table(redb::TableDefinition::<&[u8], &[u8]>::new("raft_log"))
        .unwrap();
    let v = log.get(5u64.to_be_bytes().as_slice()).unwrap().unwrap();
    assert_eq!(v.value()[0], codec::ENTRY_POSTCARD_V2);
}

#[test]
fn another_wire_version_is_refused_naming_both() {
    let json = serde_json::to_vec(&vote_req()).unwrap();
    let e = codec::decode_wire::<VoteRequest<NodeId>>(&json).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("version 1") && msg.contains(&format!("version {}", codec::WIRE_VERSION)),
        "{msg}"
    );
    let mut future = codec::encode_wire(&vote_req()).unwrap();
    future[0] = codec::WIRE_VERSION + 1;
    let msg = codec::decode_wire::<VoteRequest<NodeId>>(&future)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&format!("version {}", codec::WIRE_VERSION + 1)),
        "{msg}"
    );
    let good = codec::encode_wire(&vote_req()).unwrap();
    let back: VoteRequest<NodeId> = codec::decode_wire(&good).unwrap();
    assert_eq!(back.vote, vote_req().vote);
}

/// An older build's snapshot file (v1 stream in an envelope) is converted
/// on open, and installed when the state is behind it.
#[tokio::test]
async fn legacy_snapshot_file_upgrades_on_open() {
    let a_dir = tempfile::tempdir().unwrap();
    let (_a_log, mut a) = populated_sm(&a_dir).await;
    let snap = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let meta = snap.meta.clone();
    let v2 = snapshot_bytes(snap).await;
    // v1 stream: no BLAKE3, version 1 (the extra meta field is ignored).
    let mut v1 = v2[..v2.len() - 32].to_vec();
    v1[8..12].copy_from_slice(&1u32.to_be_bytes());
    let meta_json = serde_json::to_vec(&meta).unwrap();
    let mut file = b"CAIRNSNF".to_vec();
    file.extend_from_slice(&1u32.to_be_bytes());
    file.extend_from_slice(&(meta_json.len() as u32).to_be_bytes());
    file.extend_from_slice(&meta_json);
    file.extend_from_slice(&(v1.len() as u64).to_be_bytes());
    file.extend_from_slice(&v1);
    let c_dir = tempfile::tempdir().unwrap();
    std::fs::write(c_dir.path().join(snapshot::LEGACY_SNAPSHOT_FILE), &file).unwrap();

    let (_c_log, mut c) = open_stores(c_dir.path()).await.unwrap();
    assert!(!c_dir.path().join(snapshot::LEGACY_SNAPSHOT_FILE).exists());
    assert_eq!(dump_model(&c), dump_model(&a));
    assert_eq!(
        c.applied_state().await.unwrap(),
        a.applied_state().await.unwrap()
    );
    let cur = c.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(cur.meta, meta);
    // The converted file is a valid v2 stream: it installs elsewhere.
    let data = snapshot_bytes(cur).await;
    let d_dir = tempfile::tempdir().unwrap();
    let (_d_log, mut d) = open_stores(d_dir.path()).await.unwrap();
    let rx = received(&mut d, &data).await;
    d.install_snapshot(&meta, rx).await.unwrap();
    assert_eq!(dump_model(&d), dump_model(&a));
}

/// A real snapshot stream passes the fuzz target's entry point, and its
/// re-encoding is a fixed point. With `CAIRN_FUZZ_SEED_DIR` set the stream
/// is written there (how `fuzz/seeds/snapshot_stream` was made).
#[tokio::test]
async fn fuzz_stage_accepts_a_real_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = populated_sm(&dir).await;
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let data = snapshot_bytes(snap).await;
    let out = snapshot::fuzz_stage(&data).unwrap();
    assert_eq!(snapshot::fuzz_stage(&out).unwrap(), out);
    assert!(snapshot::fuzz_stage(&data[..data.len() - 1]).is_err());
    if let Some(d) = std::env::var_os("CAIRN_FUZZ_SEED_DIR") {
        std::fs::write(std::path::Path::new(&d).join("populated.snap"), &data).unwrap();
    }
}
