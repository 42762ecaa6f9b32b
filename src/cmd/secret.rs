//! The cluster secret and the files that hold secrets.
//!
//! - Where a role or the CLI gets the secret: `--secret-file PATH` (or
//!   `CAIRN_SECRET_FILE`), else `--secret` / `CAIRN_SECRET` ([`SecretArgs`]);
//!   both at once is refused, never silently resolved.
//! - Reading a secret file ([`read_secret_file`]): a regular file (a
//!   symlink to one is fine), mode 0600 or stricter (no group or other
//!   bits: a group- or world-readable secret is refused with the path and
//!   the `chmod 600` that fixes it), at most [`MAX_SECRET_FILE`] bytes, one
//!   trailing newline (`\n` or `\r\n`) ignored, empty refused.
//! - Writing one ([`write_private_file`]): created with mode 0600 from the
//!   first byte (no window where it is readable by others, whatever the
//!   umask), temp file, write, fsync, rename, fsync the directory; a drop
//!   guard removes the temp file on error.
//! - [`Secret`]: a `String` whose `Debug` and `Display` print
//!   `<redacted>`, for flags and config structs that derive `Debug`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Largest secret file read: a secret is a few dozen bytes; anything this
/// big is the wrong file.
pub const MAX_SECRET_FILE: u64 = 64 << 10;

/// A secret string: never shown by `Debug` or `Display`. [`Secret::expose`]
/// hands out the value where it is really needed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// The secret flags every role takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SecretArgs {
    /// Shared cluster secret. Prefer --secret-file: a flag is visible in
    /// the process list.
    #[arg(long, env = "CAIRN_SECRET", hide_env_values = true)]
    pub secret: Option<Secret>,
    /// File holding the cluster secret: a regular file with mode 0600 or
    /// stricter (group- or world-readable is refused); one trailing
    /// newline is ignored.
    #[arg(long, env = "CAIRN_SECRET_FILE", value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
}

impl SecretArgs {
    /// The secret, when one was given (see [`resolve_secret`]).
    pub fn resolve(&self) -> anyhow::Result<Option<String>> {
        resolve_secret(self.secret.as_ref(), self.secret_file.as_deref())
    }

    /// The credential a `role` process runs with, checked by
    /// [`check_role_credential`].
    pub fn require_for(&self, role: cairn_metadata::auth::Role) -> anyhow::Result<String> {
        let cred = self.require()?;
        check_role_credential(&cred, role)?;
        Ok(cred)
    }

    /// The secret (or role token); none given is an error.
    pub fn require(&self) -> anyhow::Result<String> {
        match self.resolve()? {
            Some(s) => Ok(s),
            None => bail!(
                "no cluster secret: pass --secret-file PATH (or set CAIRN_SECRET_FILE), \
                 or set CAIRN_SECRET"
            ),
        }
    }
}

/// The secret from `--secret`/`CAIRN_SECRET` or from `--secret-file`;
/// both is refused, an empty `--secret` too.
pub fn resolve_secret(
    secret: Option<&Secret>,
    file: Option<&Path>,
) -> anyhow::Result<Option<String>> {
    match (secret, file) {
        (Some(_), Some(f)) => bail!(
            "both --secret (or CAIRN_SECRET) and --secret-file {} are given: pass one",
            f.display()
        ),
        (Some(s), None) if s.expose().is_empty() => {
            bail!("the cluster secret (--secret or CAIRN_SECRET) is empty")
        }
        (Some(s), None) => checked(s.expose().to_string(), "--secret (or CAIRN_SECRET)").map(Some),
        (None, Some(f)) => checked(read_secret_file(f)?, &f.display().to_string()).map(Some),
        (None, None) => Ok(None),
    }
}

/// Refuses a credential that is neither a cluster secret of at least
/// [`cairn_metadata::auth::MIN_SECRET_LEN`] bytes nor a well-formed role
/// token, naming where it came from.
pub fn checked(cred: String, from: &str) -> anyhow::Result<String> {
    match cairn_metadata::auth::check_credential(&cred) {
        Ok(()) => Ok(cred),
        Err(e) => bail!("{from}: {e}"),
    }
}

/// What a role process checks about the credential it was started with:
/// a metadata node needs the cluster secret (it verifies tokens with it);
/// any other role takes its own role's token, and warns when given the
/// cluster secret, which opens every API.
pub fn check_role_credential(cred: &str, role: cairn_metadata::auth::Role) -> anyhow::Result<()> {
    use cairn_metadata::auth::{self, Role};
    let claimed = auth::claimed_role(cred);
    match (role, claimed) {
        (Role::Metadata, Role::Metadata) => Ok(()),
        (Role::Metadata, other) => bail!(
            "a metadata node needs the cluster secret, not a {other} token: it verifies \
             every role's token with it"
        ),
        (_, Role::Metadata) => {
            tracing::warn!(
                role = %role,
                "started with the cluster secret, which opens every API; give this process \
                 its own token (`cairn admin token issue --role {role} --name NAME`)"
            );
            Ok(())
        }
        (want, got) if want == got => Ok(()),
        (want, got) => bail!("a {want} needs a {want} token, not a {got} token"),
    }
}

/// Group and other permission bits of `mode`; a secret file must have none.
#[cfg(unix)]
fn loose_bits(mode: u32) -> u32 {
    mode & 0o077
}

/// Reads a secret from `path` (see the module doc for the rules).
pub fn read_secret_file(path: &Path) -> anyhow::Result<String> {
    // stat first: opening a FIFO would block until a writer appears.
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the secret file {}", path.display()))?;
    if !meta.is_file() {
        bail!("the secret file {} is not a regular file", path.display());
    }
    let f = std::fs::File::open(path)
        .with_context(|| format!("cannot open the secret file {}", path.display()))?;
    // Check the file actually opened, not the name (it may have changed).
    let meta = f
        .metadata()
        .with_context(|| format!("cannot stat the secret file {}", path.display()))?;
    if !meta.is_file() {
        bail!("the secret file {} is not a regular file", path.display());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if loose_bits(mode) != 0 {
            bail!(
                "the secret file {} is readable by group or others (mode {mode:04o}); \
                 run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
    let mut bytes = Vec::new();
    f.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read the secret file {}", path.display()))?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        bail!(
            "the secret file {} is larger than {MAX_SECRET_FILE} bytes: not a secret",
            path.display()
        );
    }
    let mut s = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("the secret file {} is not UTF-8", path.display()))?;
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    if s.is_empty() {
        bail!("the secret file {} is empty", path.display());
    }
    Ok(s)
}

/// Removes the temp file unless disarmed.
struct TempGuard<'a>(Option<&'a Path>);

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Writes `bytes` to `path` durably, readable by the owner only from the
/// moment the file exists: a temp file created with mode 0600, write,
/// fsync, rename over `path`, fsync the directory.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    // A temp file left by a crash is ours to replace; create_new then
    // guarantees the mode below applies (an existing file keeps its own).
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", tmp.display())),
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut guard = TempGuard(Some(&tmp));
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    guard.0 = None;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot fsync {}", dir.display()))?;
    Ok(())
}

/// Takes group and other permissions off an existing secret file `path`
/// (kept from an older version that wrote it with the umask's mode).
/// Returns whether it changed anything.
pub fn make_private(path: &Path) -> anyhow::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
        let mode = meta.permissions().mode() & 0o7777;
        if loose_bits(mode) != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))
                .with_context(|| format!("cannot chmod {}", path.display()))?;
            return Ok(true);
        }
    }
    let _ = path;
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    }

    #[test]
    fn secret_files_must_be_private_regular_and_non_empty() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("secret");
        std::fs::write(&p, "s3cr3t\n")?;
        for loose in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(loose))?;
            let e = format!("{:#}", read_secret_file(&p).err().context("accepted")?);
            assert!(e.contains(&p.display().to_string()), "{e}");
            assert!(e.contains("chmod 600"), "{e}");
        }
        for strict in [0o600, 0o400] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(strict))?;
            assert_eq!(read_secret_file(&p)?, "s3cr3t");
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        std::fs::write(&p, "a b\r\n")?;
        assert_eq!(read_secret_file(&p)?, "a b");
        std::fs::write(&p, "\n")?;
        let e = format!("{:#}", read_secret_file(&p).err().context("accepted")?);
        assert!(e.contains("empty"), "{e}");
        let e = format!(
            "{:#}",
            read_secret_file(dir.path()).err().context("accepted")?
        );
        assert!(e.contains("not a regular file"), "{e}");
        let missing = dir.path().join("missing");
        assert!(read_secret_file(&missing).is_err());
        // Both sources at once, or an empty flag, are refused.
        std::fs::write(&p, "x-secret-of-16-bytes")?;
        let s = Secret("y-secret-of-16-bytes".into());
        assert!(resolve_secret(Some(&s), Some(&p)).is_err());
        assert!(resolve_secret(Some(&Secret(String::new())), None).is_err());
        assert_eq!(
            resolve_secret(None, Some(&p))?.as_deref(),
            Some("x-secret-of-16-bytes")
        );
        assert_eq!(
            resolve_secret(Some(&s), None)?.as_deref(),
            Some("y-secret-of-16-bytes")
        );
        // Short secrets are refused wherever they come from.
        let e = resolve_secret(Some(&Secret("short".into())), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 16 bytes"), "{e}");
        std::fs::write(&p, "x")?;
        assert!(resolve_secret(None, Some(&p)).is_err());
        Ok(())
    }

    #[test]
    fn private_files_are_created_0600_and_fixed() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("key.json");
        write_private_file(&p, b"one")?;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read(&p)?, b"one");
        // Replacing keeps 0600 and leaves no temp file behind.
        write_private_file(&p, b"two")?;
        assert_eq!(std::fs::read(&p)?, b"two");
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 1);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
        assert!(make_private(&p)?);
        assert_eq!(mode(&p), 0o600);
        assert!(!make_private(&p)?);
        Ok(())
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = Secret("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        let a = SecretArgs {
            secret: Some(s),
            secret_file: None,
        };
        assert!(!format!("{a:?}").contains("hunter2"), "{a:?}");
    }
}
