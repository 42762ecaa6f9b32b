//! HTTPS on the S3 gateway with certificates from `cairn admin ca init` /
//! `cairn admin cert issue`: the aws cli and boto3 over HTTPS trusting
//! the cluster CA, a client that does not trust it failing, the refusal to
//! start without TLS or `--plain-http`, certificate reload on SIGHUP while
//! an older connection keeps working, the handshake timeout, and 0600 key
//! files. One cluster and one gateway serve every case (2 cores).
//!
//! `AWS_CA_BUNDLE` is set machine-wide here: every aws/boto3 command sets
//! its own. Only 127.0.0.1 is ever contacted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use http_body_util::BodyExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt;

use crate::cluster::{signal, Cluster, Opts};
use crate::common::{Proc, SECRET};

/// The boto3 round trip: PUT, GET and compare, trusting `CA` only.
const BOTO3: &str = r#"
import os, sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["EP"], verify=os.environ["CA"],
                  aws_access_key_id=os.environ["KEY"], aws_secret_access_key=os.environ["SECRET"],
                  region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
body = os.urandom(300000)
s3.put_object(Bucket="tls", Key="boto", Body=body)
got = s3.get_object(Bucket="tls", Key="boto")["Body"].read()
assert got == body, "boto3 read back other bytes"
print("boto3 ok")
"#;

/// Runs `cmd`, failing with its output when it fails.
fn run(mut cmd: Command, what: &str) -> anyhow::Result<Output> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// `cairn <args>` with no cluster anywhere in sight (no metadata address,
/// no secret, no config file).
fn offline_cairn(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
    c.args(args)
        .env_remove("CAIRN_METADATA")
        .env_remove("CAIRN_SECRET")
        .env_remove("CAIRN_SECRET_FILE")
        .env("CAIRN_CONFIG", dir.join("no-config.json"));
    c
}

fn mode(p: &Path) -> anyhow::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(p)
        .with_context(|| format!("no {}", p.display()))?
        .permissions()
        .mode()
        & 0o777)
}

/// The leaf certificate of a PEM file.
fn leaf(pem: &Path) -> anyhow::Result<CertificateDer<'static>> {
    let b = std::fs::read(pem)?;
    CertificateDer::pem_slice_iter(&b)
        .next()
        .context("no certificate")?
        .map_err(|e| anyhow::anyhow!("bad PEM {}: {e}", pem.display()))
}

/// A rustls client trusting only the CA in `ca`.
fn client_config(ca: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(leaf(ca)?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// An HTTP/1.1 connection over TLS to the gateway, and the leaf
/// certificate it was served.
struct TlsConn {
    send: hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    cert: CertificateDer<'static>,
}

async fn tls_connect(addr: SocketAddr, ca: &Path) -> anyhow::Result<TlsConn> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let connector = tokio_rustls::TlsConnector::from(client_config(ca)?);
    let name = ServerName::try_from("127.0.0.1")?;
    let tls = connector.connect(name, tcp).await?;
    let (_, conn) = tls.get_ref();
    ensure!(
        conn.alpn_protocol() == Some(b"http/1.1".as_slice()),
        "ALPN: {:?}",
        conn.alpn_protocol()
    );
    let cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .context("no peer certificate")?
        .clone()
        .into_owned();
    let (send, driver) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(driver);
    Ok(TlsConn { send, cert })
}

impl TlsConn {
    /// GET /health/live on this very connection.
    async fn live(&mut self) -> anyhow::Result<()> {
        self.send.ready().await?;
        let req = http::Request::get("/health/live")
            .header("host", "127.0.0.1")
            .body(http_body_util::Empty::new())?;
        let resp = self.send.send_request(req).await?;
        ensure!(resp.status() == 200, "live: {}", resp.status());
        resp.into_body().collect().await?;
        Ok(())
    }
}

/// Replaces `dst` with a copy of `src` atomically (write aside, rename),
/// as a certificate rotation would.
fn replace(src: &Path, dst: &Path) -> anyhow::Result<()> {
    let tmp = dst.with_extension("new");
    std::fs::copy(src, &tmp)?;
    std::fs::rename(&tmp, dst)?;
    Ok(())
}

struct Env {
    cluster: Cluster,
    work: PathBuf,
    ca: PathBuf,
    key: String,
    secret: String,
}

impl Env {
    fn aws(&self, endpoint: &str, ca: Option<&Path>, args: &[&str]) -> Command {
        let none = self.work.join("no-aws-config");
        let mut cmd = Command::new("aws");
        cmd.arg("--endpoint-url")
            .arg(endpoint)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &self.key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", &none)
            .env("AWS_SHARED_CREDENTIALS_FILE", &none)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_MAX_ATTEMPTS", "1");
        match ca {
            Some(ca) => cmd.env("AWS_CA_BUNDLE", ca),
            // The system's roots only: they do not hold the cluster CA.
            None => cmd.env("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"),
        };
        cmd
    }

    fn issue(&self, name: &str, out: &Path) -> anyhow::Result<()> {
        let ca_dir = self.ca.parent().context("ca dir")?;
        run(
            offline_cairn(
                &self.work,
                &[
                    "admin",
                    "cert",
                    "issue",
                    "--ca-dir",
                    &ca_dir.to_string_lossy(),
                    "--role",
                    "gateway",
                    "--name",
                    name,
                    "--san",
                    "127.0.0.1",
                    "--san",
                    "localhost",
                    "--out-dir",
                    &out.to_string_lossy(),
                ],
            ),
            "cairn admin cert issue",
        )?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_https_with_cluster_ca_reload_and_refusals() -> anyhow::Result<()> {
    let cluster = Cluster::start(Opts {
        chunkservers: 3,
        zones: 3,
        ..Default::default()
    })?;
    let work = cluster.dir.path().join("tlswork");
    std::fs::create_dir_all(&work)?;
    let meta = cluster.meta_addrs.join(",");

    // Neither a certificate nor --plain-http: the gateway will not start.
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["gateway", "--listen", "127.0.0.1:0", "--metadata", &meta])
        .env("CAIRN_SECRET", SECRET)
        .stdin(std::process::Stdio::null())
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "gateway started without TLS: {err}");
    ensure!(
        err.contains("no TLS certificate") && err.contains("--plain-http"),
        "unclear refusal: {err}"
    );

    // The CA and two certificates, all offline.
    let ca_dir = work.join("ca");
    run(
        offline_cairn(
            &work,
            &["admin", "ca", "init", "--dir", &ca_dir.to_string_lossy()],
        ),
        "cairn admin ca init",
    )?;
    let again = offline_cairn(
        &work,
        &["admin", "ca", "init", "--dir", &ca_dir.to_string_lossy()],
    )
    .output()?;
    ensure!(
        !again.status.success() && String::from_utf8_lossy(&again.stderr).contains("refusing"),
        "a second ca init overwrote the CA: {}",
        String::from_utf8_lossy(&again.stderr)
    );
    let ca = ca_dir.join("ca.pem");
    cluster.wait_chunkservers_up(3).await?;
    let out = cluster.cli(&["--json", "admin", "key", "create", "tls", "--admin"])?;
    ensure!(
        out.status.success(),
        "key create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let env = Env {
        key: v["id"].as_str().context("no id")?.to_string(),
        secret: v["secret"].as_str().context("no secret")?.to_string(),
        cluster,
        work: work.clone(),
        ca: ca.clone(),
    };
    let (one, two) = (work.join("one"), work.join("two"));
    env.issue("gw-one", &one)?;
    env.issue("gw-two", &two)?;
    for k in [
        ca_dir.join("ca.key"),
        one.join("gw-one.key"),
        two.join("gw-two.key"),
    ] {
        ensure!(
            mode(&k)? == 0o600,
            "{} has mode {:o}",
            k.display(),
            mode(&k)?
        );
    }
    ensure!(
        leaf(&one.join("gw-one.pem"))? != leaf(&two.join("gw-two.pem"))?,
        "two issues gave one certificate"
    );

    // The gateway serves the first certificate from files it reloads.
    let live = work.join("live");
    std::fs::create_dir_all(&live)?;
    let (cert, key) = (live.join("cert.pem"), live.join("key.pem"));
    std::fs::copy(one.join("gw-one.pem"), &cert)?;
    std::fs::copy(one.join("gw-one.key"), &key)?;
    let gw = Proc::spawn(
        "gateway-tls",
        env.cluster.dir.path(),
        [
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--metadata",
            &meta,
            "--tls-cert",
            &cert.to_string_lossy(),
            "--tls-key",
            &key.to_string_lossy(),
            "--tls-handshake-timeout",
            "2s",
        ],
        &[("CAIRN_SECRET", SECRET)],
    )?;
    let endpoint = format!("https://{}", gw.addr_str());
    let mb = env.cluster.cli(&["mb", "cairn://tls", "--ec", "2+1"])?;
    ensure!(
        mb.status.success(),
        "mb: {}",
        String::from_utf8_lossy(&mb.stderr)
    );

    // aws cli PUT/GET over HTTPS, trusting the cluster CA.
    let src = work.join("src.bin");
    let data = crate::common::data(3 << 20, 7);
    std::fs::write(&src, &data)?;
    run(
        env.aws(
            &endpoint,
            Some(&ca),
            &["s3", "cp", &src.to_string_lossy(), "s3://tls/aws"],
        ),
        "aws s3 cp up",
    )?;
    let back = work.join("back.bin");
    run(
        env.aws(
            &endpoint,
            Some(&ca),
            &["s3", "cp", "s3://tls/aws", &back.to_string_lossy()],
        ),
        "aws s3 cp down",
    )?;
    ensure!(
        std::fs::read(&back)? == data,
        "aws read back other bytes over HTTPS"
    );

    // boto3 with verify= the CA.
    let mut py = Command::new("python3");
    py.args(["-c", BOTO3])
        .env("EP", &endpoint)
        .env("CA", &ca)
        .env("KEY", &env.key)
        .env("SECRET", &env.secret)
        .env_remove("AWS_CA_BUNDLE")
        .env("AWS_CONFIG_FILE", work.join("no-aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", work.join("no-aws-config"));
    let out = run(py, "boto3 over HTTPS")?;
    ensure!(String::from_utf8_lossy(&out.stdout).contains("boto3 ok"));

    // A client that does not trust the cluster CA refuses the gateway.
    let out = env
        .aws(&endpoint, None, &["s3", "ls", "s3://tls"])
        .stdin(std::process::Stdio::null())
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "aws trusted an unknown CA: {err}");
    ensure!(
        err.contains("CERTIFICATE_VERIFY_FAILED") || err.contains("SSL validation failed"),
        "not a verification failure: {err}"
    );
    // Plain HTTP to the HTTPS port gets no S3 answer either.
    let plain = format!("http://{}", gw.addr_str());
    let out = env
        .aws(&plain, Some(&ca), &["s3", "ls", "s3://tls"])
        .stdin(std::process::Stdio::null())
        .output()?;
    ensure!(
        !out.status.success(),
        "plain HTTP was served on the TLS port"
    );

    // Reload: a connection opened now sees gw-one...
    let mut old = tls_connect(gw.addr(), &ca).await?;
    ensure!(
        old.cert == leaf(&one.join("gw-one.pem"))?,
        "not gw-one served"
    );
    old.live().await?;
    // ...the files are rotated to gw-two and the gateway told with SIGHUP.
    replace(&two.join("gw-two.key"), &key)?;
    replace(&two.join("gw-two.pem"), &cert)?;
    signal(&gw, "-HUP")?;
    let want = leaf(&two.join("gw-two.pem"))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let c = tls_connect(gw.addr(), &ca).await?;
        if c.cert == want {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "new connections still see the old certificate:\n{}",
            gw.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The connection from before keeps working on its session.
    old.live().await?;
    run(
        env.aws(&endpoint, Some(&ca), &["s3", "ls", "s3://tls"]),
        "aws s3 ls after reload",
    )?;

    // A bad certificate file: the reload fails, gw-two stays in service.
    std::fs::write(&cert, b"-----BEGIN CERTIFICATE-----\nnot base64!\n")?;
    signal(&gw, "-HUP")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !std::fs::read_to_string(gw.log_path())?.contains("TLS reload failed") {
        ensure!(Instant::now() < deadline, "no reload error logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = tls_connect(gw.addr(), &ca).await?;
    ensure!(c.cert == want, "a failed reload replaced the certificate");
    ensure!(
        !std::fs::read_to_string(gw.log_path())?.contains("PRIVATE KEY"),
        "key material in the log"
    );

    // A client that connects and says nothing is cut after the handshake
    // timeout (2 s here).
    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(gw.addr()).await?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .context("silent connection not closed within 10 s")?
        .unwrap_or(0);
    let took = started.elapsed();
    ensure!(n == 0, "the gateway sent {n} bytes to a silent client");
    ensure!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "closed after {took:?}, expected about 2 s"
    );
    // And the gateway still serves.
    tls_connect(gw.addr(), &ca).await?.live().await?;
    Ok(())
}
