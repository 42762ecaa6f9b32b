//! `cairn admin ca init` and `cairn admin cert issue`: a small cluster CA
//! (rcgen, ring) that needs no running cluster.
//!
//! Files (PEM):
//! - `D/ca.pem`: the CA certificate, subject `CN=Cairn cluster CA,
//!   O=Cairn`, ECDSA P-256, 10 years, `basicConstraints CA:true,
//!   pathlen:0`. Hand it to clients as their trust bundle
//!   (`AWS_CA_BUNDLE`).
//! - `D/ca.key`: its PKCS#8 key, mode 0600 from creation.
//! - `O/NAME.pem`, `O/NAME.key` (0600): a leaf certificate signed by the
//!   CA: subject `CN=NAME, OU=ROLE, O=Cairn`, the SANs asked for plus the
//!   URI SAN `cairn:role:ROLE` (where later mTLS work reads the role),
//!   extended key usage serverAuth and clientAuth, a random 127-bit
//!   serial, `--days` of validity (default 397).
//!
//! No file is ever overwritten: each is created with `O_EXCL`, so an
//! existing CA or certificate is refused; rotate by issuing into a new
//! directory (or under a new name) and moving the files into place (the
//! gateway reloads them).
//!
//! The issuer is rebuilt from `ca.key` and the fixed CA subject above
//! rather than parsed from `ca.pem` (no X.509 parser is linked): the CA
//! subject must therefore never change shape.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

/// The CA certificate's file name in the CA directory.
pub const CA_CERT: &str = "ca.pem";
/// The CA key's file name in the CA directory.
pub const CA_KEY: &str = "ca.key";
/// The CA certificate's lifetime: ten years, rotated by hand.
const CA_DAYS: i64 = 3650;
/// A leaf certificate's default lifetime: 397 days, the longest that
/// browsers accept for a server certificate.
pub const DEFAULT_DAYS: u32 = 397;
/// The longest leaf lifetime accepted (five years).
const MAX_DAYS: u32 = 5 * 366;
/// The most SANs on one certificate.
const MAX_SANS: usize = 64;
/// The longest certificate name.
const MAX_NAME: usize = 64;

/// Roles a certificate may be issued for.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertRole {
    /// An S3 gateway.
    Gateway,
    /// A metadata node.
    Metadata,
    /// A chunkserver.
    Chunkserver,
    /// An operator.
    Admin,
}

impl CertRole {
    /// The lowercase name written into the certificate.
    pub fn as_str(self) -> &'static str {
        match self {
            CertRole::Gateway => "gateway",
            CertRole::Metadata => "metadata",
            CertRole::Chunkserver => "chunkserver",
            CertRole::Admin => "admin",
        }
    }
}

/// `cairn admin ca ...`
#[derive(clap::Subcommand, Debug)]
pub enum CaCmd {
    /// Create a cluster CA: DIR/ca.pem and DIR/ca.key (mode 0600). Refuses
    /// to overwrite an existing CA.
    Init {
        /// Directory for the CA files (created, mode 0700, if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

/// `cairn admin cert ...`
#[derive(clap::Subcommand, Debug)]
pub enum CertCmd {
    /// Issue a certificate signed by the cluster CA: OUT/NAME.pem and
    /// OUT/NAME.key (mode 0600). The role is in the certificate as
    /// OU=ROLE and the URI SAN cairn:role:ROLE.
    Issue(IssueArgs),
}

/// Flags of `cairn admin cert issue`.
#[derive(clap::Args, Debug, Clone)]
pub struct IssueArgs {
    /// The CA directory (`cairn admin ca init --dir`).
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// The role the certificate is for.
    #[arg(long, value_enum)]
    pub role: CertRole,
    /// The certificate's name (its CN and file names): A-Z a-z 0-9 . _ -.
    #[arg(long)]
    pub name: String,
    /// A DNS name or IP address the certificate is valid for; repeat for
    /// more. A server certificate needs the names clients connect to.
    #[arg(long = "san", value_name = "DNS-OR-IP")]
    pub sans: Vec<String>,
    /// Where to write NAME.pem and NAME.key (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Days of validity.
    #[arg(long, default_value_t = DEFAULT_DAYS)]
    pub days: u32,
}

/// Creates a directory (and parents) with mode 0700 when missing.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Writes `bytes` to a new file `path` with `mode` set at creation,
/// fsynced; an existing file is refused, a failed write removes the file.
fn create_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = match opts.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            anyhow::bail!(
                "{} exists already: refusing to overwrite it",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    };
    let res = f.write_all(bytes).and_then(|()| f.sync_all());
    if let Err(e) = res {
        let _ = std::fs::remove_file(path);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// fsyncs a directory so new names in it are durable.
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

/// The fixed CA parameters (see the module doc: the issuer is rebuilt
/// from these).
fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Cairn cluster CA");
    dn.push(DnType::OrganizationName, "Cairn");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

/// A random positive 127-bit serial number.
fn random_serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    b[0] &= 0x7f;
    b[0] |= 0x01;
    SerialNumber::from_slice(&b)
}

/// `not_before` an hour ago (clock skew), `not_after` `days` from now.
fn validity(p: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(days);
}

/// `cairn admin ca init --dir DIR`; returns the paths written.
pub fn init(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    for p in [&cert_path, &key_path] {
        anyhow::ensure!(
            !p.exists(),
            "{} exists already: refusing to overwrite a CA (remove the directory's CA files \
             yourself to start over; every certificate it issued stops being trusted)",
            p.display()
        );
    }
    private_dir(dir)?;
    let key = KeyPair::generate().context("cannot generate the CA key")?;
    let mut params = ca_params();
    params.serial_number = Some(random_serial());
    validity(&mut params, CA_DAYS);
    let cert = params
        .self_signed(&key)
        .context("cannot sign the CA certificate")?;
    // The key first: a CA certificate without its key is useless, a key
    // without its certificate is refused by the next init.
    create_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    if let Err(e) = create_new(&cert_path, cert.pem().as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&key_path);
        return Err(e);
    }
    sync_dir(dir)?;
    Ok((cert_path, key_path))
}

/// Loads the CA key and rebuilds its issuer.
fn load_issuer(ca_dir: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let key_path = ca_dir.join(CA_KEY);
    let cert_path = ca_dir.join(CA_CERT);
    anyhow::ensure!(
        cert_path.exists(),
        "no CA certificate {} (run `cairn admin ca init --dir {}`)",
        cert_path.display(),
        ca_dir.display()
    );
    let pem = std::fs::read_to_string(&key_path)
        .with_context(|| format!("cannot read the CA key {}", key_path.display()))?;
    let key = KeyPair::from_pem(&pem).map_err(|_| {
        anyhow::anyhow!(
            "{} holds no usable CA key (expected PKCS#8 PEM)",
            key_path.display()
        )
    })?;
    Ok(Issuer::new(ca_params(), key))
}

fn check_name(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty()
            && name.len() <= MAX_NAME
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')),
        "bad --name {name:?}: 1 to {MAX_NAME} of A-Z a-z 0-9 . _ - (not starting with '.')"
    );
    Ok(())
}

fn san(s: &str) -> anyhow::Result<SanType> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
        });
    anyhow::ensure!(ok, "bad --san {s:?}: expected a DNS name or an IP address");
    Ok(SanType::DnsName(
        s.to_ascii_lowercase().try_into().map_err(|_| {
            anyhow::anyhow!("bad --san {s:?}: expected a DNS name or an IP address")
        })?,
    ))
}

/// `cairn admin cert issue`; returns the paths written.
pub fn issue(a: &IssueArgs) -> anyhow::Result<(PathBuf, PathBuf)> {
    check_name(&a.name)?;
    anyhow::ensure!(
        (1..=MAX_DAYS).contains(&a.days),
        "--days must be 1 to {MAX_DAYS}"
    );
    anyhow::ensure!(a.sans.len() <= MAX_SANS, "at most {MAX_SANS} --san");
    let issuer = load_issuer(&a.ca_dir)?;
    let role = a.role.as_str();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, a.name.as_str());
    dn.push(DnType::OrganizationalUnitName, role);
    dn.push(DnType::OrganizationName, "Cairn");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    for s in &a.sans {
        params.subject_alt_names.push(san(s)?);
    }
    params.subject_alt_names.push(SanType::URI(
        format!("cairn:role:{role}")
            .try_into()
            .context("cannot encode the role SAN")?,
    ));
    params.serial_number = Some(random_serial());
    validity(&mut params, i64::from(a.days));
    let key = KeyPair::generate().context("cannot generate a key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("cannot sign the certificate")?;
    private_dir(&a.out_dir)?;
    let cert_path = a.out_dir.join(format!("{}.pem", a.name));
    let key_path = a.out_dir.join(format!("{}.key", a.name));
    anyhow::ensure!(
        !cert_path.exists(),
        "{} exists already: refusing to overwrite it",
        cert_path.display()
    );
    create_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    if let Err(e) = create_new(&cert_path, cert.pem().as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&key_path);
        return Err(e);
    }
    sync_dir(&a.out_dir)?;
    Ok((cert_path, key_path))
}

/// Runs `cairn admin ca ...`.
pub fn ca_cmd(c: &CaCmd) -> anyhow::Result<()> {
    match c {
        CaCmd::Init { dir } => {
            let (cert, key) = init(dir)?;
            outln!("CA certificate: {}", cert.display());
            outln!(
                "CA key:         {}  (mode 0600: keep it offline)",
                key.display()
            );
            Ok(())
        }
    }
}

/// Runs `cairn admin cert ...`.
pub fn cert_cmd(c: &CertCmd) -> anyhow::Result<()> {
    match c {
        CertCmd::Issue(a) => {
            let (cert, key) = issue(a)?;
            outln!("certificate: {}", cert.display());
            outln!("key:         {}  (mode 0600)", key.display());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn issued_certificates_load_and_chain_to_the_ca() {
        let d = tempfile::tempdir().unwrap();
        let ca = d.path().join("ca");
        init(&ca).unwrap();
        assert!(init(&ca).is_err(), "an existing CA is never overwritten");
        let a = IssueArgs {
            ca_dir: ca.clone(),
            role: CertRole::Gateway,
            name: "gw1".into(),
            sans: vec!["127.0.0.1".into(), "localhost".into()],
            out_dir: d.path().join("out"),
            days: 30,
        };
        let (cert, key) = issue(&a).unwrap();
        assert!(issue(&a).is_err(), "an existing certificate is kept");
        #[cfg(unix)]
        for p in [&key, &ca.join(CA_KEY)] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        let ck = crate::gateway::tls::load_certified_key(&cert, &key).unwrap();
        // The leaf verifies against the CA for 127.0.0.1 and localhost.
        let mut roots = rustls::RootCertStore::empty();
        let ca_pem = std::fs::read(ca.join(CA_CERT)).unwrap();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca_pem) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider,
        )
        .build()
        .unwrap();
        let now = rustls::pki_types::UnixTime::now();
        for name in ["127.0.0.1", "localhost"] {
            let sn = rustls::pki_types::ServerName::try_from(name).unwrap();
            v.verify_server_cert(&ck.cert[0], &[], &sn, &[], now)
                .unwrap();
        }
        let other = rustls::pki_types::ServerName::try_from("example.com").unwrap();
        assert!(v
            .verify_server_cert(&ck.cert[0], &[], &other, &[], now)
            .is_err());
        for bad in ["", "../x", ".hidden", "a/b"] {
            let b = IssueArgs {
                name: bad.into(),
                ..a.clone()
            };
            assert!(issue(&b).is_err(), "{bad:?}");
        }
        let b = IssueArgs {
            name: "ok".into(),
            sans: vec!["bad name!".into()],
            ..a
        };
        assert!(issue(&b).is_err());
    }
}
