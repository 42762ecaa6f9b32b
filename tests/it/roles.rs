//! Least privilege between roles (issue 14): role tokens issued with the
//! real `cairn admin token issue` against a real metadata node, then used
//! on its API the way a stolen chunkserver, gateway or operator credential
//! would be.
//!
//! Asserted: a chunkserver token cannot create or list access keys, queue
//! GC, remove or drain a chunkserver, or read anything (403, and the state
//! is unchanged afterwards); a gateway token can do what S3 requests need
//! (create a bucket, read one key by id) but none of the admin commands,
//! membership changes or Raft RPCs; an admin token can manage keys but
//! cannot post the leader's internal commands or speak Raft; a token of
//! another cluster, a tampered token and no credential are 401; a short
//! cluster secret is refused by the CLI; a token written with `--out` is
//! mode 0600. End to end with tokens (chunkservers heartbeating and a
//! gateway serving S3 with their own tokens) is what `cairn dev` runs:
//! see `dev.rs` and `ops.rs`.

use std::os::unix::fs::PermissionsExt;

use anyhow::{ensure, Context};
use bytes::Bytes;
use cairn_metadata::types::{AccessKey, ChunkserverState, Command, Query, QueryResult};
use http::{Method, StatusCode};

use crate::cluster::{Cluster, Opts};
use crate::common::{http, SECRET};

/// The CLI against `c` with `cred` as its credential.
fn cli_as(c: &Cluster, cred: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
    std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_METADATA", c.meta_addrs.join(","))
        .env("CAIRN_SECRET", cred)
        .env("CAIRN_CONFIG", c.dir.path().join("no-config.json"))
        .output()
        .context("cannot run cairn")
}

fn issue(c: &Cluster, role: &str, name: &str) -> anyhow::Result<String> {
    let out = c.cli(&["admin", "token", "issue", "--role", role, "--name", name])?;
    ensure!(
        out.status.success(),
        "token issue failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

async fn post(
    c: &Cluster,
    path: &str,
    cred: Option<&str>,
    body: Vec<u8>,
) -> anyhow::Result<(StatusCode, String)> {
    let leader = c.leader().await?;
    let url = format!("http://{}{path}", c.meta_addrs[leader]);
    let r = http(Method::POST, &url, cred, &[], Bytes::from(body)).await?;
    Ok((r.status, String::from_utf8_lossy(&r.body).into_owned()))
}

async fn write(c: &Cluster, cred: &str, cmd: &Command) -> anyhow::Result<(StatusCode, String)> {
    post(c, "/v1/write", Some(cred), serde_json::to_vec(cmd)?).await
}

async fn read(c: &Cluster, cred: &str, q: &Query) -> anyhow::Result<(StatusCode, String)> {
    post(c, "/v1/read", Some(cred), serde_json::to_vec(q)?).await
}

fn key(id: &str) -> AccessKey {
    AccessKey {
        id: id.into(),
        secret: "a-stolen-credential-minted-this".into(),
        name: "evil".into(),
        created_ms: 0,
        admin: true,
        buckets: Default::default(),
        expires_ms: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_token_opens_only_what_its_role_needs() -> anyhow::Result<()> {
    let c = Cluster::start(Opts {
        metas: 1,
        chunkservers: 1,
        zones: 1,
        ..Opts::default()
    })?;
    let cs = c.wait_chunkservers_up(1).await?;
    let cs_id = cs[0].id;

    // The CLI refuses a short cluster secret and writes --out files 0600.
    let short = cli_as(
        &c,
        "short",
        &["admin", "token", "issue", "--role", "admin", "--name", "x"],
    )?;
    ensure!(!short.status.success(), "a 5-byte secret was accepted");
    ensure!(
        String::from_utf8_lossy(&short.stderr).contains("at least 16 bytes"),
        "{}",
        String::from_utf8_lossy(&short.stderr)
    );
    let out = c.dir.path().join("gw.token");
    let o = c.cli(&[
        "admin",
        "token",
        "issue",
        "--role",
        "gateway",
        "--name",
        "gw-file",
        "--out",
        out.to_str().context("path")?,
    ])?;
    ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mode = std::fs::metadata(&out)?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "token file mode {mode:o}");
    ensure!(std::fs::read_to_string(&out)?.starts_with("cairn1.gateway.gw-file."));

    let cs_tok = issue(&c, "chunkserver", "cs-test")?;
    let gw_tok = issue(&c, "gateway", "gw-test")?;
    let admin_tok = issue(&c, "admin", "ops-test")?;
    ensure!(!cs_tok.contains(SECRET) && !gw_tok.contains(SECRET));

    let put_key = Command::PutAccessKey { key: key("GKEVIL") };
    let queue_gc = Command::QueueGc {
        chunkserver: cs_id,
        shards: vec![],
    };
    let remove = Command::RemoveChunkserver { id: cs_id };
    let drain = Command::SetChunkserverState {
        id: cs_id,
        state: ChunkserverState::Draining,
    };
    // A stolen chunkserver credential.
    for cmd in [&put_key, &queue_gc, &remove, &drain] {
        let (st, body) = write(&c, &cs_tok, cmd).await?;
        ensure!(
            st == StatusCode::FORBIDDEN,
            "chunkserver token: {st} {body}"
        );
    }
    for q in [Query::ListAccessKeys, Query::ListBuckets] {
        let (st, body) = read(&c, &cs_tok, &q).await?;
        ensure!(
            st == StatusCode::FORBIDDEN,
            "chunkserver token read: {st} {body}"
        );
    }
    // A stolen gateway credential.
    for cmd in [&put_key, &queue_gc, &remove, &drain] {
        let (st, body) = write(&c, &gw_tok, cmd).await?;
        ensure!(st == StatusCode::FORBIDDEN, "gateway token: {st} {body}");
        ensure!(body.contains("a gateway credential may not do"), "{body}");
    }
    let (st, body) = read(&c, &gw_tok, &Query::ListAccessKeys).await?;
    ensure!(
        st == StatusCode::FORBIDDEN,
        "gateway lists keys: {st} {body}"
    );
    for path in [
        "/v1/admin/add-node",
        "/v1/admin/remove-node",
        "/v1/admin/snapshot",
        "/v1/heartbeat",
        "/raft/vote",
    ] {
        let (st, body) = post(&c, path, Some(&gw_tok), b"{}".to_vec()).await?;
        ensure!(st == StatusCode::FORBIDDEN, "gateway {path}: {st} {body}");
    }
    // ... which still serves S3: buckets and the key a request presents.
    crate::cluster::create_bucket(&c.meta(), "roles-bucket").await?;
    let (st, body) = read(
        &c,
        &gw_tok,
        &Query::GetBucket {
            name: "roles-bucket".into(),
        },
    )
    .await?;
    ensure!(st == StatusCode::OK, "gateway GetBucket: {st} {body}");
    let (st, body) = write(
        &c,
        &gw_tok,
        &Command::DeleteBucket {
            name: "roles-bucket".into(),
        },
    )
    .await?;
    ensure!(
        st == StatusCode::OK && !body.contains("err"),
        "gateway DeleteBucket: {st} {body}"
    );
    let (st, body) = read(
        &c,
        &gw_tok,
        &Query::GetAccessKey {
            id: "GKNONE".into(),
        },
    )
    .await?;
    ensure!(st == StatusCode::OK, "gateway GetAccessKey: {st} {body}");
    // An operator: keys yes, the leader's internal commands and Raft no.
    let (st, body) = write(&c, &admin_tok, &Command::PutAccessKey { key: key("GKOPS") }).await?;
    ensure!(st == StatusCode::OK, "admin PutAccessKey: {st} {body}");
    let (st, body) = write(&c, &admin_tok, &queue_gc).await?;
    ensure!(st == StatusCode::FORBIDDEN, "admin QueueGc: {st} {body}");
    let (st, body) = post(&c, "/raft/append", Some(&admin_tok), b"{}".to_vec()).await?;
    ensure!(st == StatusCode::FORBIDDEN, "admin raft: {st} {body}");
    let admin_cli = cli_as(&c, &admin_tok, &["admin", "key", "list"])?;
    ensure!(
        admin_cli.status.success() && String::from_utf8_lossy(&admin_cli.stdout).contains("GKOPS"),
        "admin key list with the admin token: {}",
        String::from_utf8_lossy(&admin_cli.stderr)
    );
    let gw_cli = cli_as(&c, &gw_tok, &["admin", "key", "list"])?;
    ensure!(!gw_cli.status.success(), "the gateway token listed keys");

    // Not credentials of this cluster.
    let tampered = gw_tok.replacen("gateway", "admin", 1);
    let other = cairn_metadata::auth::issue_token(
        "another-cluster-secret-0123",
        cairn_metadata::auth::Role::Admin,
        "x",
    )?;
    for cred in [
        Some(tampered.as_str()),
        Some(other.as_str()),
        Some(""),
        None,
    ] {
        let (st, body) = post(
            &c,
            "/v1/read",
            cred,
            serde_json::to_vec(&Query::ListAccessKeys)?,
        )
        .await?;
        ensure!(st == StatusCode::UNAUTHORIZED, "{cred:?}: {st} {body}");
    }

    // Nothing the refused calls asked for happened.
    let meta = c.meta();
    let keys = match meta
        .query(
            &Query::ListAccessKeys,
            cairn_metadata::client::Consistency::Linearizable,
        )
        .await?
    {
        QueryResult::AccessKeys(k) => k,
        other => anyhow::bail!("unexpected {other:?}"),
    };
    ensure!(
        keys.iter().all(|k| k.id != "GKEVIL"),
        "a refused PutAccessKey landed"
    );
    let list = c.wait_chunkservers_up(1).await?;
    ensure!(
        list.iter()
            .any(|x| x.id == cs_id && x.state == ChunkserverState::Up),
        "a refused drain or removal landed: {list:?}"
    );
    Ok(())
}
