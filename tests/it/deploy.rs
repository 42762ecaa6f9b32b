//! The deployment files in `deploy/`: every flag they pass to a role is a
//! real flag of that role (`cairn <role> --help`), and they pass
//! `scripts/check-deploy.sh` (systemd-analyze verify, strict Kubernetes
//! schema validation; a missing tool is skipped locally, fatal in CI).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The repository root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `--flag` token in `text`.
fn flags(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|t| t.len() > 2 && t.starts_with("--") && t.as_bytes()[2].is_ascii_lowercase())
        .map(str::to_string)
        .collect()
}

fn help(role: &str) -> anyhow::Result<BTreeSet<String>> {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([role, "--help"])
        .output()
        .context("cannot run cairn")?;
    if !out.status.success() {
        bail!("cairn {role} --help failed");
    }
    Ok(flags(&String::from_utf8_lossy(&out.stdout)))
}

fn files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

#[test]
fn deploy_files_use_real_flags() -> anyhow::Result<()> {
    let roles = ["metadata", "chunkserver", "gateway"];
    let mut checked = 0;
    for dir in ["deploy/systemd", "deploy/kubernetes"] {
        for path in files(&root().join(dir))? {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let Some(role) = roles.iter().find(|r| name.contains(*r)) else {
                continue;
            };
            let text = std::fs::read_to_string(&path)?;
            let used = flags(&text);
            // Units take their flags from the env files.
            if !name.ends_with(".service") {
                assert!(!used.is_empty(), "{name} passes no flags to cairn {role}");
            }
            let known = help(role)?;
            let unknown: Vec<_> = used.difference(&known).collect();
            assert!(
                unknown.is_empty(),
                "{dir}/{name}: not flags of `cairn {role}`: {unknown:?}"
            );
            checked += 1;
        }
    }
    // A unit and an env file per role, one manifest per role.
    assert_eq!(checked, 9, "deploy files checked");
    Ok(())
}

#[test]
fn deploy_files_pass_their_validators() -> anyhow::Result<()> {
    let out = Command::new(root().join("scripts/check-deploy.sh"))
        .env("CAIRN_BIN", env!("CARGO_BIN_EXE_cairn"))
        .output()
        .context("cannot run scripts/check-deploy.sh")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "check-deploy.sh failed:\n{stdout}\n{stderr}"
    );
    // Each validator ran or said why not.
    for tool in ["systemd-analyze", "kubernetes-validate"] {
        assert!(
            stdout.contains(&format!("ok: {tool}")) || stdout.contains(&format!("SKIP: {tool}")),
            "{tool} neither ran nor was skipped:\n{stdout}"
        );
    }
    Ok(())
}
