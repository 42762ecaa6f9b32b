//! S3 secrets at rest and their rotation (issue 14), with real processes
//! and the aws cli:
//!
//! - `admin key list` (text and JSON), `ListAccessKeys` with any
//!   credential and `GetAccessKey` with an admin token carry no secret;
//!   only a gateway token (and the cluster secret) get one, by id.
//! - After writes, a rotation and a snapshot on every node, no file under
//!   any metadata node's directory (Raft log, state machine, snapshot,
//!   logs) holds a secret's bytes; the sealed form is there.
//! - `admin key rotate --overlap-secs N`: the new key works at once (and
//!   owns what the old one created), the old key works during the
//!   overlap and is refused with 403 InvalidAccessKeyId after it;
//!   `admin key list` shows the expiry.
//! - `admin audit`: the admin actions with who (the token's name), what
//!   and the result, newest first, no secret; a gateway cannot read it.
//! - A metadata node without `--secrets-key-file` refuses to store a key
//!   and to hand out a sealed secret, with an error naming the flag;
//!   one with another key file names the key mismatch.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use cairn_metadata::types::{Query, QueryResult};
use http::{Method, StatusCode};

use crate::cluster::{Cluster, Opts};
use crate::common::{find_files, http, Proc, SECRET};

fn aws(endpoint: &str, work: &Path, key: &str, secret: &str, args: &[&str]) -> Output {
    let none = work.join("no-aws-config");
    Command::new("aws")
        .arg("--endpoint-url")
        .arg(endpoint)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", &none)
        .env("AWS_SHARED_CREDENTIALS_FILE", &none)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_MAX_ATTEMPTS", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| Output {
            status: std::os::unix::process::ExitStatusExt::from_raw(1 << 8),
            stdout: Vec::new(),
            stderr: format!("cannot run aws: {e}").into_bytes(),
        })
}

fn ok(out: Output, what: &str) -> anyhow::Result<String> {
    ensure!(
        out.status.success(),
        "{what} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn json_of(out: Output, what: &str) -> anyhow::Result<serde_json::Value> {
    let s = ok(out, what)?;
    serde_json::from_str(&s).with_context(|| format!("{what}: bad JSON {s:?}"))
}

fn id_secret(v: &serde_json::Value) -> anyhow::Result<(String, String)> {
    Ok((
        v["id"].as_str().context("no id")?.to_string(),
        v["secret"].as_str().context("no secret")?.to_string(),
    ))
}

fn token(c: &Cluster, role: &str) -> anyhow::Result<String> {
    let out = ok(
        c.cli(&["admin", "token", "issue", "--role", role, "--name", "sec"])?,
        "token issue",
    )?;
    Ok(out.trim().to_string())
}

/// POSTs `body` to `path` at the leader with `cred`.
async fn post(
    c: &Cluster,
    cred: &str,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<(StatusCode, String)> {
    let leader = c.leader().await?;
    let url = format!("http://{}{path}", c.meta_addrs[leader]);
    let r = http(Method::POST, &url, Some(cred), &[], Bytes::from(body)).await?;
    Ok((r.status, String::from_utf8_lossy(&r.body).into_owned()))
}

/// `/v1/read` of `q` at the leader with `cred`.
async fn read(c: &Cluster, cred: &str, q: &Query) -> anyhow::Result<(StatusCode, String)> {
    post(c, cred, "/v1/read", serde_json::to_vec(q)?).await
}

/// Files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    find_files(dir, &|_| true)
        .into_iter()
        .filter(|p| std::fs::read(p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)))
        .map(|p| p.display().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_secrets_are_sealed_listed_without_secrets_and_rotated() -> anyhow::Result<()> {
    if !crate::s3::have("aws", &["--version"]) {
        return Ok(());
    }
    let c = Cluster::start(Opts {
        metas: 3,
        chunkservers: 0,
        ..Default::default()
    })?;
    c.leader().await?;
    let admin = json_of(
        c.cli(&["--json", "admin", "key", "create", "root", "--admin"])?,
        "key create root",
    )?;
    let (admin_id, admin_secret) = id_secret(&admin)?;
    let alice = json_of(
        c.cli(&["--json", "admin", "key", "create", "alice"])?,
        "key create alice",
    )?;
    let (alice_id, alice_secret) = id_secret(&alice)?;

    // Lists never carry a secret, whatever the credential.
    let list = ok(c.cli(&["admin", "key", "list"])?, "key list")?;
    let list_json = ok(
        c.cli(&["--json", "admin", "key", "list"])?,
        "key list --json",
    )?;
    for out in [&list, &list_json] {
        ensure!(out.contains(&alice_id) && out.contains(&admin_id), "{out}");
        ensure!(
            !out.contains(&alice_secret) && !out.contains(&admin_secret),
            "a secret is listed: {out}"
        );
    }
    ensure!(!list_json.contains("\"secret\""), "{list_json}");
    let admin_tok = token(&c, "admin")?;
    let gw_tok = token(&c, "gateway")?;
    for cred in [SECRET, admin_tok.as_str()] {
        let (st, body) = read(&c, cred, &Query::ListAccessKeys).await?;
        ensure!(st == StatusCode::OK, "{st} {body}");
        let keys = match serde_json::from_str(&body)? {
            QueryResult::AccessKeys(k) => k,
            other => bail!("unexpected {other:?}"),
        };
        ensure!(
            keys.len() == 2 && keys.iter().all(|k| k.secret.is_empty()),
            "{body}"
        );
    }
    // One key by id: its secret only for the gateway (and the secret).
    let get = Query::GetAccessKey {
        id: alice_id.clone(),
    };
    for (cred, want) in [
        (admin_tok.as_str(), ""),
        (gw_tok.as_str(), alice_secret.as_str()),
        (SECRET, alice_secret.as_str()),
    ] {
        let (st, body) = read(&c, cred, &get).await?;
        ensure!(st == StatusCode::OK, "{st} {body}");
        match serde_json::from_str(&body)? {
            QueryResult::AccessKey(k) => ensure!(k.secret == want, "secret for {cred:.14}"),
            other => bail!("unexpected {other:?}"),
        }
    }

    // A gateway with its own token; alice creates a bucket she owns.
    let gateway = Proc::spawn(
        "gateway",
        c.dir.path(),
        [
            "gateway",
            "--plain-http",
            "--listen",
            "127.0.0.1:0",
            "--metadata",
            &c.meta_addrs.join(","),
            "--domain",
            "s3.test",
        ],
        &[("CAIRN_SECRET", &gw_tok)],
    )?;
    let ep = format!("http://{}", gateway.addr_str());
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work)?;
    let file = work.join("small.txt");
    std::fs::write(&file, b"sealed secrets, rotated keys")?;
    let file_s = file.to_string_lossy().into_owned();
    ok(
        aws(
            &ep,
            &work,
            &alice_id,
            &alice_secret,
            &["s3", "mb", "s3://alice-b"],
        ),
        "alice mb",
    )?;
    ok(
        aws(
            &ep,
            &work,
            &alice_id,
            &alice_secret,
            &["s3", "cp", &file_s, "s3://alice-b/one.txt"],
        ),
        "alice cp",
    )?;

    // Rotate alice with a short overlap.
    let overlap = 20u64;
    let rotated_at = Instant::now();
    let rot = json_of(
        c.cli(&[
            "--json",
            "admin",
            "key",
            "rotate",
            &alice_id,
            "--overlap-secs",
            &overlap.to_string(),
        ])?,
        "key rotate",
    )?;
    let (new_id, new_secret) = id_secret(&rot)?;
    ensure!(new_id != alice_id && new_secret != alice_secret);
    // The new key at once, on the old key's bucket (it owns it now).
    let ls = ok(
        aws(
            &ep,
            &work,
            &new_id,
            &new_secret,
            &["s3", "ls", "s3://alice-b/"],
        ),
        "new key ls",
    )?;
    ensure!(ls.contains("one.txt"), "{ls}");
    ok(
        aws(
            &ep,
            &work,
            &new_id,
            &new_secret,
            &["s3", "cp", &file_s, "s3://alice-b/two.txt"],
        ),
        "new key cp",
    )?;
    // The old key during the overlap.
    ok(
        aws(
            &ep,
            &work,
            &alice_id,
            &alice_secret,
            &["s3", "ls", "s3://alice-b/"],
        ),
        "old key during the overlap",
    )?;
    let list = ok(c.cli(&["admin", "key", "list"])?, "key list")?;
    let old_line = list
        .lines()
        .find(|l| l.starts_with(&alice_id))
        .context("old key not listed")?;
    ensure!(old_line.contains("expires"), "{list}");
    let new_line = list
        .lines()
        .find(|l| l.starts_with(&new_id))
        .context("new key not listed")?;
    ensure!(
        new_line.contains("alice") && !new_line.contains("expire"),
        "{list}"
    );
    ensure!(!list.contains(&new_secret) && !list.contains(&alice_secret));

    // Every node snapshots; then no file of any metadata node holds a
    // secret's bytes (log, state machine, snapshot, its log output).
    for addr in &c.meta_addrs {
        let r = http(
            Method::POST,
            &format!("http://{addr}/v1/admin/snapshot"),
            Some(SECRET),
            &[],
            Bytes::new(),
        )
        .await?;
        ensure!(
            r.status == StatusCode::OK,
            "snapshot on {addr}: {:?}",
            r.status
        );
    }
    for i in 1..=3 {
        let dir = c.dir.path().join(format!("meta{i}"));
        for s in [&admin_secret, &alice_secret, &new_secret] {
            let hits = files_containing(&dir, s.as_bytes());
            ensure!(hits.is_empty(), "a plaintext secret is in {hits:?}");
        }
        let sealed = files_containing(&dir, cairn_metadata::secrets::SEALED_PREFIX.as_bytes());
        ensure!(
            sealed.iter().any(|f| f.ends_with("raft-sm.redb")),
            "no sealed secret in meta{i}'s state: {sealed:?}"
        );
        ensure!(
            sealed.iter().any(|f| f.ends_with("raft-snapshot.snap")),
            "no sealed secret in meta{i}'s snapshot: {sealed:?}"
        );
    }

    // After the overlap the old key is refused, the new one is not.
    let left = Duration::from_secs(overlap + 1).saturating_sub(rotated_at.elapsed());
    tokio::time::sleep(left).await;
    let refused = aws(
        &ep,
        &work,
        &alice_id,
        &alice_secret,
        &["s3", "ls", "s3://alice-b/"],
    );
    ensure!(!refused.status.success(), "the expired key still works");
    let err = String::from_utf8_lossy(&refused.stderr);
    ensure!(err.contains("InvalidAccessKeyId"), "{err}");
    ok(
        aws(
            &ep,
            &work,
            &new_id,
            &new_secret,
            &["s3", "ls", "s3://alice-b/"],
        ),
        "new key after the overlap",
    )?;
    let list = ok(c.cli(&["admin", "key", "list"])?, "key list")?;
    ensure!(
        list.lines()
            .any(|l| l.starts_with(&alice_id) && l.contains("expired")),
        "{list}"
    );
    drop(gateway);

    // The audit log: every admin action with who, what and the result,
    // the admin token's by its name; no secret in it.
    let grant = |id: &str| cairn_metadata::types::Command::SetAccessKeyGrant {
        id: id.into(),
        bucket: "audited".into(),
        grant: cairn_metadata::types::BucketGrant {
            read: true,
            write: false,
            owner: false,
        },
    };
    for id in [new_id.as_str(), "CKNOSUCHKEY"] {
        let (st, body) = post(&c, &admin_tok, "/v1/write", serde_json::to_vec(&grant(id))?).await?;
        ensure!(st == StatusCode::OK, "{st} {body}");
    }
    let (st, body) = read(&c, &gw_tok, &Query::AuditLog { limit: 10 }).await?;
    ensure!(
        st == StatusCode::FORBIDDEN,
        "a gateway read the audit log: {st} {body}"
    );
    let audit = ok(c.cli(&["--json", "admin", "audit"])?, "admin audit --json")?;
    let entries: Vec<cairn_metadata::types::AuditEntry> = serde_json::from_str(&audit)?;
    for s in [&admin_secret, &alice_secret, &new_secret] {
        ensure!(!audit.contains(s.as_str()), "a secret is in the audit log");
    }
    let find = |what: &str| entries.iter().find(|e| e.what.starts_with(what));
    let e = find(&format!("set_access_key_grant {new_id} audited:r")).context("no grant record")?;
    ensure!(
        e.who == "sec" && e.role == "admin" && e.result == "ok",
        "{e:?}"
    );
    let e = find("set_access_key_grant CKNOSUCHKEY").context("no refused grant record")?;
    ensure!(e.result.contains("no such access key"), "{e:?}");
    let e = find(&format!("rotate_access_key {alice_id} -> {new_id}")).context("no rotation")?;
    ensure!(e.who == "cluster-secret" && e.result == "ok", "{e:?}");
    ensure!(
        find(&format!("put_access_key {alice_id}")).is_some(),
        "{audit}"
    );
    ensure!(
        entries.windows(2).all(|w| w[0].seq > w[1].seq),
        "not newest first"
    );
    let text = ok(c.cli(&["admin", "audit", "--limit", "2"])?, "admin audit")?;
    ensure!(
        text.lines().count() == 2 && text.contains("(admin)"),
        "{text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_secrets_key_refuses_to_store_or_serve_secrets() -> anyhow::Result<()> {
    let c = Cluster::start(Opts {
        metas: 1,
        ..Default::default()
    })?;
    c.leader().await?;
    let created = json_of(
        c.cli(&["--json", "admin", "key", "create", "k"])?,
        "key create",
    )?;
    let (id, _) = id_secret(&created)?;
    let key_file = c.secrets_key_file()?;
    let get = Query::GetAccessKey { id: id.clone() };
    let restart = |c: &mut Cluster, env: Option<&str>| -> anyhow::Result<()> {
        c.metas[0].terminate(Duration::from_secs(10))?;
        let addr = c.meta_addrs[0].clone();
        let dir = c.dir.path().join("meta1");
        let mut args: Vec<String> = vec![
            "metadata".into(),
            "--id".into(),
            "1".into(),
            "--listen".into(),
            addr,
            "--data".into(),
            dir.join("data").to_string_lossy().into_owned(),
        ];
        args.extend(crate::cluster::FAST_META.iter().map(|s| s.to_string()));
        let mut envs = vec![("CAIRN_SECRET", SECRET)];
        if let Some(f) = env {
            envs.push(("CAIRN_SECRETS_KEY_FILE", f));
        }
        c.metas[0] = Proc::spawn("meta1-again", &dir, args, &envs)?;
        Ok(())
    };
    let mut c = c;
    // No key file: reads of a sealed secret and new keys are refused,
    // naming the flag; listing still works.
    restart(&mut c, None)?;
    c.leader().await?;
    let (st, body) = read(&c, SECRET, &get).await?;
    eprintln!("without a key file: {st} {body}");
    ensure!(
        st == StatusCode::INTERNAL_SERVER_ERROR && body.contains("--secrets-key-file"),
        "{st} {body}"
    );
    let out = c.cli(&["admin", "key", "create", "k2"])?;
    ensure!(!out.status.success(), "a key was stored without a key file");
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("--secrets-key-file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(
        c.cli(&["admin", "key", "list"])?,
        "key list without a key file",
    )?;
    // Another key file: the mismatch is named.
    let other = c.dir.path().join("other.key");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&other)?;
        f.write_all(cairn_metadata::secrets::SecretsKey::generate_hex().as_bytes())?;
    }
    restart(&mut c, Some(&other.to_string_lossy()))?;
    c.leader().await?;
    let (st, body) = read(&c, SECRET, &get).await?;
    eprintln!("with another key file: {st} {body}");
    ensure!(
        st == StatusCode::INTERNAL_SERVER_ERROR && body.contains("sealed under secrets key"),
        "{st} {body}"
    );
    // A world-readable key file is refused at start.
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["metadata", "--id", "9", "--listen", "127.0.0.1:0", "--data"])
        .arg(c.dir.path().join("unused"))
        .env("CAIRN_SECRET", SECRET)
        .env("CAIRN_SECRETS_KEY_FILE", &other)
        .output()?;
    ensure!(!out.status.success(), "a loose key file was accepted");
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The right key again: the secret opens.
    restart(&mut c, Some(&key_file.to_string_lossy()))?;
    c.leader().await?;
    let (st, body) = read(&c, SECRET, &get).await?;
    ensure!(st == StatusCode::OK, "{st} {body}");
    Ok(())
}

/// Writes a plaintext access key row into a stopped node's state machine,
/// as a data dir of a build before sealed secrets has it.
fn write_legacy_row(sm: &Path, id: &str, secret: &str) -> anyhow::Result<()> {
    let db = redb::Database::open(sm).context("open the state machine")?;
    let txn = db.begin_write()?;
    {
        let mut t = txn.open_table(cairn_metadata::model::KEYS)?;
        let row = serde_json::json!({
            "id": id, "secret": secret, "name": "legacy", "created_ms": 1,
            "admin": true, "buckets": {}
        });
        t.insert(id.as_bytes(), serde_json::to_vec(&row)?.as_slice())?;
    }
    txn.commit()?;
    Ok(())
}

/// The stored secret of `id` in a stopped node's state machine.
fn stored_secret(sm: &Path, id: &str) -> anyhow::Result<String> {
    use redb::ReadableDatabase;
    let db = redb::Database::open(sm).context("open the state machine")?;
    let txn = db.begin_read()?;
    let t = txn.open_table(cairn_metadata::model::KEYS)?;
    let row = t.get(id.as_bytes())?.context("no row")?;
    let v: serde_json::Value = serde_json::from_slice(row.value())?;
    Ok(v["secret"].as_str().context("no secret")?.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_secrets_of_an_older_data_dir_keep_working_and_get_sealed() -> anyhow::Result<()>
{
    if !crate::s3::have("aws", &["--version"]) {
        return Ok(());
    }
    let mut c = Cluster::start(Opts {
        metas: 1,
        ..Default::default()
    })?;
    c.leader().await?;
    let sm = c
        .dir
        .path()
        .join("meta1/data")
        .join(cairn_metadata::raft::state_machine::SM_FILE);
    c.metas[0].terminate(Duration::from_secs(10))?;
    let (id, secret) = ("CKLEGACY0123456789AB", "legacy-plaintext-secret-0123456789");
    write_legacy_row(&sm, id, secret)?;
    c.metas[0].restart()?;
    c.leader().await?;
    // The leader's key sealer replaces it within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(c.metas[0].log_path())?.contains("sealing plaintext S3 secrets")
    {
        ensure!(
            Instant::now() < deadline,
            "the legacy secret was not sealed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The key works through a gateway (its secret opens) ...
    let gateway = Proc::spawn(
        "gateway",
        c.dir.path(),
        [
            "gateway",
            "--plain-http",
            "--listen",
            "127.0.0.1:0",
            "--metadata",
            &c.meta_addrs.join(","),
        ],
        &[("CAIRN_SECRET", SECRET)],
    )?;
    let ep = format!("http://{}", gateway.addr_str());
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work)?;
    ok(
        aws(&ep, &work, id, secret, &["s3", "mb", "s3://legacy"]),
        "legacy mb",
    )?;
    ok(aws(&ep, &work, id, secret, &["s3", "ls"]), "legacy ls")?;
    drop(gateway);
    // ... and its row holds only the sealed form now.
    c.metas[0].terminate(Duration::from_secs(10))?;
    let stored = stored_secret(&sm, id)?;
    ensure!(
        cairn_metadata::secrets::is_sealed(&stored) && !stored.contains(secret),
        "the row was not sealed"
    );
    Ok(())
}
