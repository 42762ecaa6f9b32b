//! `cairn dev`: a whole local cluster from one command, as child processes
//! of this binary on 127.0.0.1: 3 metadata nodes, 6 chunkservers in 3
//! zones, and one S3 gateway on BASE+900. Data lives under one directory; running it again reuses the data
//! (ports are fixed so the Raft membership stays valid). Ctrl-C stops every
//! child cleanly (SIGTERM, then SIGKILL after a grace period). Children
//! die with `cairn dev` however it ends (even by SIGKILL): each is started
//! with `PR_SET_PDEATHSIG` = SIGKILL.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use cairn_metadata::client::{Consistency, MetaClient, MetaClientOptions};
use cairn_metadata::types::{
    AccessKey, ChunkserverState, Command as CmdWrite, CommandResult, Query, QueryResult,
};
use tokio::process::{Child, Command};

use crate::cmd::secret;
use crate::config::{self, FileConfig};

/// Flags of `cairn dev`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the cluster keeps its data and logs.
    #[arg(long, default_value = "./cairn-data")]
    pub data: PathBuf,
    /// Metadata nodes listen on BASE+1.., chunkservers on BASE+101..,
    /// the S3 gateway on BASE+900.
    #[arg(long, default_value_t = 7000)]
    pub base_port: u16,
    /// Metadata nodes (3 or 5).
    #[arg(long, default_value_t = 3)]
    pub metadata_nodes: u16,
    /// Chunkservers.
    #[arg(long, default_value_t = 6)]
    pub chunkservers: u16,
    /// Zones the chunkservers are spread over.
    #[arg(long, default_value_t = 3)]
    pub zones: u16,
    /// Where to write the CLI config (default ~/.config/cairn/config.json).
    #[arg(long, env = "CAIRN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Serve the S3 gateway over HTTPS: a dev CA and a gateway certificate
    /// for 127.0.0.1 and localhost are made under `<data>/tls` (kept across
    /// runs). Without it the gateway serves plain HTTP (`--plain-http`).
    #[arg(long)]
    pub tls: bool,
}

/// Where `cairn dev --tls` keeps its CA (`<data>/tls/ca`) and the
/// gateway's certificate (`<data>/tls/gateway.pem`, `.key`).
pub const TLS_DIR: &str = "tls";

/// The dev CA and gateway certificate, made on first use: returns the CA
/// bundle, the gateway's certificate and key.
fn load_or_make_tls(data: &Path) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    use crate::cmd::ca;
    let dir = std::path::absolute(data.join(TLS_DIR))
        .with_context(|| format!("bad data directory {}", data.display()))?;
    let ca_dir = dir.join("ca");
    let bundle = ca_dir.join(ca::CA_CERT);
    if !bundle.exists() {
        ca::init(&ca_dir)?;
    }
    let cert = dir.join("gateway.pem");
    let key = dir.join("gateway.key");
    if !cert.exists() || !key.exists() {
        for p in [&cert, &key] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("cannot remove {}", p.display())),
            }
        }
        ca::issue(&ca::IssueArgs {
            ca_dir: ca_dir.clone(),
            role: ca::CertRole::Gateway,
            name: "gateway".into(),
            sans: vec!["127.0.0.1".into(), "localhost".into()],
            out_dir: dir.clone(),
            days: ca::DEFAULT_DAYS,
        })?;
    }
    Ok((bundle, cert, key))
}

struct Role {
    name: String,
    child: Child,
}

/// The dev cluster secret's file: `<data>/dev-secret`, mode 0600, passed to
/// every child with `--secret-file`.
pub const SECRET_FILE: &str = "dev-secret";

/// Fixes the mode of an existing secret file (older versions wrote it with
/// the umask's mode), saying so.
fn fix_mode(p: &Path) -> anyhow::Result<()> {
    if secret::make_private(p)? {
        tracing::warn!(path = %p.display(), "was readable by group or others; now mode 0600");
    }
    Ok(())
}

/// The dev secret: read from `<data>/dev-secret` (its mode fixed to 0600
/// if it was looser), or made and written there with mode 0600.
fn load_or_make_secret(data: &Path) -> anyhow::Result<(String, PathBuf)> {
    let p = std::path::absolute(data.join(SECRET_FILE))
        .with_context(|| format!("bad data directory {}", data.display()))?;
    if p.exists() {
        fix_mode(&p)?;
        if let Ok(s) = secret::read_secret_file(&p) {
            return Ok((s, p));
        }
    }
    let s = hex::encode(rand::random::<[u8; 16]>());
    secret::write_private_file(&p, s.as_bytes())?;
    Ok((s, p))
}

/// The dev secrets key's file: `<data>/secrets.key`, mode 0600 from
/// creation, passed to every metadata node with `--secrets-key-file`.
pub const SECRETS_KEY_FILE: &str = "secrets.key";

/// The dev secrets key: `<data>/secrets.key` as it is (an unreadable or
/// malformed one is an error, never replaced: the secrets sealed under it
/// would be lost), or made there with mode 0600 from its first byte.
fn load_or_make_secrets_key(data: &Path) -> anyhow::Result<PathBuf> {
    let p = std::path::absolute(data.join(SECRETS_KEY_FILE))
        .with_context(|| format!("bad data directory {}", data.display()))?;
    if p.exists() {
        fix_mode(&p)?;
        crate::cmd::metadata::load_secrets_key(&p)?;
        return Ok(p);
    }
    secret::write_private_file(
        &p,
        cairn_metadata::secrets::SecretsKey::generate_hex().as_bytes(),
    )?;
    Ok(p)
}

/// Where `cairn dev` keeps its role tokens: `<data>/tokens`, mode 0700.
pub const TOKEN_DIR: &str = "tokens";

/// The token file of `role` under `<data>/tokens` (`gateway.token`, ...),
/// mode 0600: kept when it still verifies against `secret`, else issued
/// again. Each child runs with its own role's token, so a chunkserver's
/// credential cannot create keys and a gateway's cannot change membership.
fn load_or_make_token(
    data: &Path,
    secret: &str,
    role: cairn_metadata::auth::Role,
) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::path::absolute(data.join(TOKEN_DIR))
        .with_context(|| format!("bad data directory {}", data.display()))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let p = dir.join(format!("{role}.token"));
    if p.exists() {
        fix_mode(&p)?;
        if let Ok(t) = secret::read_secret_file(&p) {
            let auth = cairn_metadata::auth::Authority::new(secret);
            if auth.verify(t.as_bytes()).is_some_and(|c| c.role == role) {
                return Ok(p);
            }
        }
    }
    let t = cairn_metadata::auth::issue_token(secret, role, "dev")?;
    secret::write_private_file(&p, t.as_bytes())?;
    Ok(p)
}

/// The dev S3 key, created on first run and kept in `<data>/dev-s3-key.json`
/// (mode 0600 from creation) so endpoints and credentials survive restarts.
fn load_or_make_s3_key(data: &Path) -> anyhow::Result<AccessKey> {
    let p = data.join("dev-s3-key.json");
    if let Ok(b) = std::fs::read(&p) {
        if let Ok(k) = serde_json::from_slice::<AccessKey>(&b) {
            fix_mode(&p)?;
            return Ok(k);
        }
    }
    let k = crate::gateway::auth::generate_key("dev", true);
    secret::write_private_file(&p, &serde_json::to_vec_pretty(&k)?)?;
    Ok(k)
}

/// Makes the child about to be exec'd get SIGKILL when its parent dies.
///
/// Linux sends the signal when the *thread* that forked the child exits,
/// not the process. `cairn dev` spawns its children from `run`, which is
/// the future `main` drives with `Runtime::block_on`: it is polled only on
/// the main thread, which lives as long as the process. The parent check
/// after `prctl` closes the race of a parent that died before it.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::other("cairn dev exited during the spawn"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

fn spawn(
    name: &str,
    args: &[String],
    logs: &Path,
    secret_file: &Path,
    json_logs: bool,
) -> anyhow::Result<Role> {
    let exe = std::env::current_exe().context("cannot find the cairn binary")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("{name}.log")))?;
    let mut cmd = Command::new(exe);
    die_with_parent(&mut cmd);
    if json_logs {
        cmd.env("CAIRN_LOG_FORMAT", "json");
    }
    let child = cmd
        .args(args)
        // The secret goes by file, never by flag (visible in `ps`) or env.
        .arg("--secret-file")
        .arg(secret_file)
        .env_remove("CAIRN_SECRET")
        .env_remove("CAIRN_SECRET_FILE")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    Ok(Role {
        name: name.to_string(),
        child,
    })
}

fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
}

/// Runs the dev cluster until Ctrl-C.
pub async fn run(a: Args, json_logs: bool) -> anyhow::Result<()> {
    anyhow::ensure!(a.metadata_nodes >= 1, "need at least one metadata node");
    anyhow::ensure!(a.zones >= 1, "need at least one zone");
    let data = a.data.clone();
    let logs = data.join("logs");
    std::fs::create_dir_all(&logs)?;
    let (secret, secret_file) = load_or_make_secret(&data)?;
    use cairn_metadata::auth::Role as R;
    let cs_token = load_or_make_token(&data, &secret, R::Chunkserver)?;
    let gw_token = load_or_make_token(&data, &secret, R::Gateway)?;
    let admin_token = load_or_make_token(&data, &secret, R::Admin)?;
    let secrets_key = load_or_make_secrets_key(&data)?;
    let port = |off: u16| -> anyhow::Result<u16> {
        a.base_port.checked_add(off).context("--base-port too high")
    };
    let mut meta_addrs = Vec::new();
    for i in 1..=a.metadata_nodes {
        meta_addrs.push(format!("127.0.0.1:{}", port(i)?));
    }
    let peers: Vec<String> = meta_addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("{}={addr}", i + 1))
        .collect();
    let mut roles = Vec::new();
    for (i, addr) in meta_addrs.iter().enumerate() {
        let id = i + 1;
        let mut args = vec![
            "metadata".to_string(),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            addr.clone(),
            "--data".into(),
            data.join(format!("meta{id}"))
                .to_string_lossy()
                .into_owned(),
            "--secrets-key-file".into(),
            secrets_key.to_string_lossy().into_owned(),
        ];
        if id == 1 {
            args.push("--init".into());
            args.push("--peers".into());
            args.push(peers.join(","));
        }
        roles.push(spawn(
            &format!("meta{id}"),
            &args,
            &logs,
            &secret_file,
            json_logs,
        )?);
    }
    let mut cs_addrs = Vec::new();
    for j in 1..=a.chunkservers {
        let addr = format!("127.0.0.1:{}", port(100 + j)?);
        let zone = format!("zone{}", (j - 1) % a.zones + 1);
        let args = vec![
            "chunkserver".to_string(),
            "--listen".into(),
            addr.clone(),
            "--data".into(),
            data.join(format!("cs{j}")).to_string_lossy().into_owned(),
            "--zone".into(),
            zone,
            "--metadata".into(),
            meta_addrs.join(","),
        ];
        roles.push(spawn(
            &format!("cs{j}"),
            &args,
            &logs,
            &cs_token,
            json_logs,
        )?);
        cs_addrs.push(addr);
    }

    let s3_addr = format!("127.0.0.1:{}", port(900)?);
    let mut gw_args = vec![
        "gateway".to_string(),
        "--listen".into(),
        s3_addr.clone(),
        "--metadata".into(),
        meta_addrs.join(","),
    ];
    let ca_bundle = if a.tls {
        let (bundle, cert, key) = load_or_make_tls(&data)?;
        gw_args.push("--tls-cert".into());
        gw_args.push(cert.to_string_lossy().into_owned());
        gw_args.push("--tls-key".into());
        gw_args.push(key.to_string_lossy().into_owned());
        Some(bundle)
    } else {
        gw_args.push("--plain-http".into());
        None
    };
    roles.push(spawn("gateway", &gw_args, &logs, &gw_token, json_logs)?);
    let scheme = if a.tls { "https" } else { "http" };
    let s3_endpoint = format!("{scheme}://{s3_addr}");

    let cfg_path = a.config.clone().unwrap_or_else(config::default_config_path);
    config::save(
        &cfg_path,
        &FileConfig {
            metadata: meta_addrs.clone(),
            // The CLI runs as an operator: the admin token, not the
            // cluster secret.
            secret: secret::read_secret_file(&admin_token)?,
            s3_endpoint: Some(s3_endpoint.clone()),
        },
    )?;

    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let ready = wait_ready(
        &meta_addrs,
        &secret,
        usize::from(a.chunkservers),
        started_ms,
    );
    enum Startup {
        Ready(anyhow::Result<()>),
        Died(String),
        Interrupted,
    }
    let startup = tokio::select! {
        r = ready => Startup::Ready(r),
        d = first_exit(&mut roles, &logs) => Startup::Died(d),
        _ = crate::cmd::shutdown_signal() => Startup::Interrupted,
    };
    match startup {
        Startup::Ready(r) => {
            if let Err(e) = r {
                stop(roles).await;
                return Err(e);
            }
        }
        Startup::Died(why) => {
            stop(roles).await;
            anyhow::bail!("the cluster did not start: {why}");
        }
        Startup::Interrupted => {
            stop(roles).await;
            return Ok(());
        }
    }
    let s3_key = load_or_make_s3_key(&data)?;
    let meta = MetaClient::new(
        meta_addrs.clone(),
        secret.clone(),
        MetaClientOptions::default(),
    );
    if let CommandResult::Err(e) = meta
        .write(&CmdWrite::PutAccessKey {
            key: s3_key.clone(),
        })
        .await
        .context("cannot store the dev S3 key")?
    {
        anyhow::bail!("cannot store the dev S3 key: {e}");
    }
    outln!("Cairn dev cluster is up.");
    outln!("  metadata:     {}", meta_addrs.join(","));
    outln!(
        "  chunkservers: {} in {} zones ({})",
        a.chunkservers,
        a.zones.min(a.chunkservers),
        cs_addrs.join(",")
    );
    outln!(
        "  secret file:  {}  (the cluster secret; roles run with their tokens in {})",
        secret_file.display(),
        data.join(TOKEN_DIR).display()
    );
    outln!(
        "  admin token:  {}  (the CLI's, and the dashboard login)",
        admin_token.display()
    );
    outln!(
        "  secrets key:  {}  (S3 secrets are stored sealed under it; keep it)",
        secrets_key.display()
    );
    outln!("  S3 endpoint:  {s3_endpoint}");
    if let Some(b) = &ca_bundle {
        outln!(
            "  CA bundle:    {}  (the dev CA that signed the gateway's certificate)",
            b.display()
        );
    }
    outln!("  S3 key id:    {}", s3_key.id);
    outln!("  S3 secret:    {}", s3_key.secret);
    outln!(
        "  data:         {}  (logs in {})",
        data.display(),
        logs.display()
    );
    outln!("  CLI config:   {}", cfg_path.display());
    outln!("Try: cairn mb cairn://demo && cairn put FILE cairn://demo/ && cairn ls cairn://demo");
    if let Some(b) = &ca_bundle {
        outln!(
            "S3 over HTTPS: AWS_CA_BUNDLE={} aws --endpoint-url {s3_endpoint} s3 ls",
            b.display()
        );
    }
    outln!("Ctrl-C stops the cluster.");

    // Watch the children until Ctrl-C; report any that dies.
    let mut alive: Vec<bool> = vec![true; roles.len()];
    let shutdown = crate::cmd::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                for (i, r) in roles.iter_mut().enumerate() {
                    if alive[i] {
                        if let Ok(Some(status)) = r.child.try_wait() {
                            alive[i] = false;
                            eprintln!("warning: {} exited ({status}); see {}", r.name, logs.join(format!("{}.log", r.name)).display());
                        }
                    }
                }
            }
        }
    }
    outln!("stopping...");
    stop(roles).await;
    outln!("stopped.");
    Ok(())
}

async fn stop(mut roles: Vec<Role>) {
    // Chunkservers first, metadata last.
    roles.reverse();
    for r in &roles {
        terminate(&r.child);
    }
    for r in &mut roles {
        match tokio::time::timeout(Duration::from_secs(10), r.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("{} did not stop in time; killing it", r.name);
                let _ = r.child.kill().await;
            }
        }
    }
}

/// Resolves when the first role exits during startup (a port in use, a
/// bad data dir), naming it with the last lines of its log, so `cairn dev`
/// fails at once with the reason instead of waiting out its deadline.
async fn first_exit(roles: &mut [Role], logs: &Path) -> String {
    loop {
        for r in roles.iter_mut() {
            if let Ok(Some(status)) = r.child.try_wait() {
                let log = logs.join(format!("{}.log", r.name));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(5)..].join("\n    ");
                return format!(
                    "{} exited ({status}); last lines of {}:\n    {tail}",
                    r.name,
                    log.display()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `chunkservers` chunkservers have heartbeated since
/// `started_ms`: on a second run the metadata service still remembers the
/// previous run's servers as up, so "up" alone proves nothing.
async fn wait_ready(
    meta: &[String],
    secret: &str,
    chunkservers: usize,
    started_ms: u64,
) -> anyhow::Result<()> {
    let c = MetaClient::new(
        meta.to_vec(),
        secret.to_string(),
        MetaClientOptions {
            retry_deadline: Duration::from_secs(60),
            ..Default::default()
        },
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(QueryResult::Chunkservers(list)) = c
            .query(&Query::ListChunkservers, Consistency::Linearizable)
            .await
        {
            let up = list
                .iter()
                .filter(|c| c.state == ChunkserverState::Up && c.last_heartbeat_ms >= started_ms)
                .count();
            if up >= chunkservers {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the cluster did not come up within 90 s; see the logs");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
