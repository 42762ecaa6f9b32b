//! HTTPS for the gateway: rustls (ring provider, no OpenSSL) behind the
//! shared `net::serve_with` loop.
//!
//! - Flags: `--tls-cert PATH --tls-key PATH` (a PEM chain, leaf first, and
//!   a PEM private key: PKCS#8, RSA or SEC1). Without them the gateway
//!   refuses to start unless `--plain-http` says plain HTTP is meant.
//! - ALPN offers `http/1.1` only: the gateway's hyper server speaks
//!   HTTP/1.1, not h2.
//! - A client has [`DEFAULT_HANDSHAKE`] (`--tls-handshake-timeout`) to
//!   finish its handshake, so one that connects and sends nothing holds
//!   its connection slot no longer than that. TCP_NODELAY is set by the
//!   server loop before the handshake.
//! - [`CertStore`] is the rustls certificate resolver: it holds the current
//!   certificate and key behind a lock and hands every new handshake the
//!   one in force. [`Reloader`] (a background worker) loads the files
//!   again on SIGHUP and when their size, mtime or inode changes (polled
//!   every [`RELOAD_POLL`]); established connections keep the session they
//!   negotiated. A reload that fails (bad PEM, a key that does not match)
//!   keeps the old certificate and logs an error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use cairn_metadata::worker::{BoxFuture, Worker, WorkerState};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to complete the TLS handshake: long enough
/// for a slow link (a handshake is two round trips), short enough that
/// idle connections cannot pin the `--max-connections` slots.
pub const DEFAULT_HANDSHAKE: &str = "10s";

/// How often the certificate and key files are checked for a change: a
/// rotated certificate is served within a few seconds without a SIGHUP.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

/// Largest certificate chain or key file read: real chains are a few KiB.
pub const MAX_PEM_FILE: u64 = 1 << 20;

/// The TLS flags of `cairn gateway`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs
    /// --tls-key. Reloaded on SIGHUP and when the file changes.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, RSA or SEC1). It
    /// should be mode 0600.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP (no TLS): without --tls-cert/--tls-key the gateway
    /// refuses to start unless this is given.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub plain_http: bool,
    /// Time a client has to finish the TLS handshake (e.g. `10s`).
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_HANDSHAKE, value_parser = crate::cmd::bench::parse_duration)]
    pub tls_handshake_timeout: Duration,
}

/// What the gateway serves, from [`TlsArgs`].
#[derive(Debug)]
pub enum Mode {
    /// Plain HTTP, asked for with `--plain-http`.
    Plain,
    /// HTTPS with this certificate and key.
    Tls {
        /// The PEM chain.
        cert: PathBuf,
        /// The PEM key.
        key: PathBuf,
    },
}

impl TlsArgs {
    /// The serving mode, or the refusal of a gateway given neither a
    /// certificate nor `--plain-http`.
    pub fn mode(&self) -> anyhow::Result<Mode> {
        match (&self.tls_cert, &self.tls_key, self.plain_http) {
            (Some(cert), Some(key), false) => Ok(Mode::Tls {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None, true) => Ok(Mode::Plain),
            (None, None, false) => anyhow::bail!(
                "no TLS certificate: pass --tls-cert PATH --tls-key PATH to serve HTTPS \
                 (`cairn admin cert issue` makes them), or --plain-http to serve plain HTTP \
                 on purpose (S3 secrets and data then cross the network unencrypted)"
            ),
            _ => anyhow::bail!("give both --tls-cert and --tls-key, or --plain-http alone"),
        }
    }
}

/// Reads a PEM file of at most [`MAX_PEM_FILE`] bytes.
fn read_pem(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)
        .with_context(|| format!("cannot open the {what} {}", path.display()))?;
    let mut buf = Vec::new();
    f.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot read the {what} {}", path.display()))?;
    anyhow::ensure!(
        buf.len() as u64 <= MAX_PEM_FILE,
        "the {what} {} is larger than {MAX_PEM_FILE} bytes",
        path.display()
    );
    Ok(buf)
}

/// Loads a certificate chain and its private key, checking that the key
/// is usable with the ring provider and matches the leaf certificate.
/// Errors never quote the key file's contents.
pub fn load_certified_key(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let pem = read_pem(cert, "certificate")?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("bad PEM in the certificate {}: {e}", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "no CERTIFICATE block in {} (expected a PEM chain, leaf first)",
        cert.display()
    );
    let kpem = read_pem(key, "private key")?;
    #[cfg(unix)]
    if let Ok(m) = std::fs::metadata(key) {
        use std::os::unix::fs::PermissionsExt;
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %key.display(), "private key is readable by group or others; chmod 600 it");
        }
    }
    let der = PrivateKeyDer::from_pem_slice(&kpem).map_err(|_| {
        anyhow::anyhow!(
            "no usable private key in {} (expected PEM: PKCS#8, RSA or SEC1)",
            key.display()
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, der, &provider).map_err(|e| {
        anyhow::anyhow!(
            "the key {} does not fit the certificate {}: {e}",
            key.display(),
            cert.display()
        )
    })
}

/// A short fingerprint of a certificate for logs: the first 8 bytes of
/// its BLAKE3 hash, hex.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(&blake3::hash(cert.as_ref()).as_bytes()[..8])
}

/// What identifies one version of a file on disk.
type Stamp = Option<(std::time::SystemTime, u64, u64)>;

fn stamp(p: &Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok()?, m.len(), ino))
}

/// The certificate resolver: the certificate and key in force, swapped
/// whole by [`CertStore::reload`].
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamps: Mutex<(Stamp, Stamp)>,
}

impl std::fmt::Debug for CertStore {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl CertStore {
    /// Loads the files once; an error here stops the gateway from starting.
    pub fn open(cert: &Path, key: &Path) -> anyhow::Result<CertStore> {
        let stamps = (stamp(cert), stamp(key));
        let ck = load_certified_key(cert, key)?;
        if let Some(leaf) = ck.cert.first() {
            tracing::info!(cert = %cert.display(), fingerprint = %fingerprint(leaf), "TLS certificate loaded");
        }
        Ok(CertStore {
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            current: RwLock::new(Arc::new(ck)),
            stamps: Mutex::new(stamps),
        })
    }

    /// The certificate and key in force.
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Loads the files again and, when they are good, serves them to new
    /// handshakes from now on; on error the old certificate stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let stamps = (stamp(&self.cert_path), stamp(&self.key_path));
        // Recorded even when loading fails: a half-written file is not
        // retried every poll, the next write changes the stamp again.
        if let Ok(mut s) = self.stamps.lock() {
            *s = stamps;
        }
        let ck = Arc::new(load_certified_key(&self.cert_path, &self.key_path)?);
        let fp = ck.cert.first().map(fingerprint).unwrap_or_default();
        match self.current.write() {
            Ok(mut c) => *c = ck,
            Err(poisoned) => *poisoned.into_inner() = ck,
        }
        tracing::info!(cert = %self.cert_path.display(), fingerprint = %fp, "TLS certificate reloaded");
        Ok(())
    }

    /// True when either file changed since the last load.
    fn changed(&self) -> bool {
        let now = (stamp(&self.cert_path), stamp(&self.key_path));
        match self.stamps.lock() {
            Ok(s) => *s != now,
            Err(_) => true,
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The rustls server configuration over `store`: ring provider, TLS 1.2
/// and 1.3, no client certificates (yet), ALPN `http/1.1`.
pub fn server_config(store: Arc<CertStore>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("cannot configure TLS")?
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The per-connection step of `net::serve_with`: the TLS handshake,
/// bounded by `timeout`; a failed or timed-out handshake drops the
/// connection (logged at debug: scanners and health checks do it all day).
pub fn handshake(
    acceptor: TlsAcceptor,
    timeout: Duration,
) -> impl Fn(TcpStream, SocketAddr) -> BoxFuture<'static, Option<TlsStream<TcpStream>>>
       + Clone
       + Send
       + Sync
       + 'static {
    move |stream, peer| {
        let acceptor = acceptor.clone();
        Box::pin(async move {
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => Some(s),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, ?timeout, "TLS handshake timed out: closed");
                    None
                }
            }
        })
    }
}

/// The background worker that reloads [`CertStore`] on SIGHUP and when
/// the files change.
pub struct Reloader {
    store: Arc<CertStore>,
    hup: Option<tokio::signal::unix::Signal>,
    hup_seen: bool,
    reloads: u64,
    failures: u64,
}

impl Reloader {
    /// Installs the SIGHUP handler now (before the gateway says it is
    /// listening, so an early SIGHUP never kills it).
    pub fn new(store: Arc<CertStore>) -> anyhow::Result<Reloader> {
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot listen for SIGHUP")?;
        Ok(Reloader {
            store,
            hup: Some(hup),
            hup_seen: false,
            reloads: 0,
            failures: 0,
        })
    }
}

impl Worker for Reloader {
    fn name(&self) -> String {
        "tls-reload".into()
    }

    fn status(&self) -> String {
        format!("{} reloads, {} failed", self.reloads, self.failures)
    }

    fn work(&mut self) -> BoxFuture<'_, Result<WorkerState, String>> {
        Box::pin(async move {
            let why = if std::mem::take(&mut self.hup_seen) {
                "SIGHUP"
            } else if self.store.changed() {
                "files changed"
            } else {
                return Ok(WorkerState::Idle);
            };
            match self.store.reload() {
                Ok(()) => self.reloads += 1,
                Err(e) => {
                    self.failures += 1;
                    tracing::error!(trigger = why, error = %format!("{e:#}"), "TLS reload failed; still serving the previous certificate");
                }
            }
            Ok(WorkerState::Idle)
        })
    }

    fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let hup = async {
                match self.hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            let got = tokio::select! {
                r = hup => Some(r),
                _ = tokio::time::sleep(RELOAD_POLL) => None,
            };
            match got {
                Some(Some(())) => self.hup_seen = true,
                // The signal stream ended: poll only.
                Some(None) => self.hup = None,
                None => {}
            }
        })
    }
}
