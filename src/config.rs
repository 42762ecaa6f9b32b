//! Where the cluster is: flags, then environment (`CAIRN_METADATA`,
//! `CAIRN_SECRET`, `CAIRN_SECRET_FILE`), then the config file (`--config`,
//! `CAIRN_CONFIG`, or `~/.config/cairn/config.json`) that `cairn dev`
//! writes (mode 0600 from creation: it holds the secret).

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The config file's contents.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct FileConfig {
    /// Metadata node addresses.
    pub metadata: Vec<String>,
    /// Cluster secret.
    pub secret: String,
    /// S3 endpoint, when a gateway runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
}

impl std::fmt::Debug for FileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileConfig")
            .field("metadata", &self.metadata)
            .field("secret", &"<redacted>")
            .field("s3_endpoint", &self.s3_endpoint)
            .finish()
    }
}

/// Global flags shared by every client subcommand.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConnArgs {
    /// Metadata node addresses, comma separated.
    #[arg(long, env = "CAIRN_METADATA", global = true, value_delimiter = ',')]
    pub metadata: Option<Vec<String>>,
    /// Cluster secret. Prefer --secret-file: a flag is visible in the
    /// process list.
    #[arg(long, env = "CAIRN_SECRET", global = true, hide_env_values = true)]
    pub secret: Option<crate::cmd::secret::Secret>,
    /// File holding the cluster secret: a regular file with mode 0600 or
    /// stricter; one trailing newline is ignored.
    #[arg(long, env = "CAIRN_SECRET_FILE", global = true, value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
    /// Config file (default ~/.config/cairn/config.json).
    #[arg(long, env = "CAIRN_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Lease of a write's intent, seconds (default 600): a put whose
    /// process stalls this long is refused at commit.
    #[arg(long, env = "CAIRN_INTENT_LEASE_SECS", global = true)]
    pub intent_lease_secs: Option<u64>,
}

/// The default config file path.
pub fn default_config_path() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".config").join("cairn").join("config.json")
}

impl ConnArgs {
    /// The config file in force.
    pub fn config_path(&self) -> PathBuf {
        self.config.clone().unwrap_or_else(default_config_path)
    }

    /// The credential (cluster secret or role token): flags and
    /// environment, then the config file.
    pub fn credential(&self) -> anyhow::Result<String> {
        let file = load(&self.config_path()).ok();
        self.credential_with(file.as_ref())
    }

    fn credential_with(&self, file: Option<&FileConfig>) -> anyhow::Result<String> {
        let given =
            crate::cmd::secret::resolve_secret(self.secret.as_ref(), self.secret_file.as_deref())?;
        Ok(match (given, file) {
            (Some(s), _) => s,
            (None, Some(f)) => crate::cmd::secret::checked(
                f.secret.clone(),
                &self.config_path().display().to_string(),
            )?,
            _ => anyhow::bail!(
                "no cluster secret: pass --secret-file PATH (or set CAIRN_SECRET_FILE), \
                 or set CAIRN_SECRET"
            ),
        })
    }

    /// Resolves metadata addresses and secret.
    pub fn resolve(&self) -> anyhow::Result<(Vec<String>, String)> {
        let file = load(&self.config_path()).ok();
        let metadata = match (&self.metadata, &file) {
            (Some(m), _) if !m.is_empty() => m.clone(),
            (_, Some(f)) if !f.metadata.is_empty() => f.metadata.clone(),
            _ => anyhow::bail!(
                "where is the cluster? pass --metadata ADDR[,ADDR] or set CAIRN_METADATA, \
                 or run `cairn dev` (it writes {})",
                self.config_path().display()
            ),
        };
        let secret = self.credential_with(file.as_ref())?;
        Ok((metadata, secret))
    }
}

/// Reads a config file.
pub fn load(path: &std::path::Path) -> anyhow::Result<FileConfig> {
    let b = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&b).with_context(|| format!("bad config file {}", path.display()))
}

/// Writes a config file atomically and durably, readable by the owner only
/// from creation (it holds the secret).
pub fn save(path: &std::path::Path, cfg: &FileConfig) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    crate::cmd::secret::write_private_file(path, &serde_json::to_vec_pretty(cfg)?)
}
