//! The deployment files in `deploy/`: every flag they pass to a role is a
//! real flag of that role (`cairn <role> --help`), they pass
//! `scripts/check-deploy.sh` (systemd-analyze verify, strict Kubernetes
//! schema validation, promtool on the alert rules and the dashboard's
//! queries; a missing tool is skipped locally, fatal in CI), and every
//! metric the alert rules and the Grafana dashboard name is exposed by a
//! live cluster's role of that name.

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
    for tool in ["systemd-analyze", "kubernetes-validate", "promtool"] {
        assert!(
            stdout.contains(&format!("ok: {tool}")) || stdout.contains(&format!("SKIP: {tool}")),
            "{tool} neither ran nor was skipped:\n{stdout}"
        );
    }
    Ok(())
}

/// The PromQL expressions of the alert rules (`expr:` values, one-line or
/// `|` blocks) and of the Grafana dashboard's panel targets, each with
/// where it came from.
fn deploy_queries() -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/cairn-alerts.yml"))?;
    let lines: Vec<&str> = rules.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let Some((indent, rest)) = line.split_once("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest == "|" || rest == ">" {
            let mut block = String::new();
            while i < lines.len()
                && (lines[i].trim().is_empty()
                    || lines[i].len() - lines[i].trim_start().len() > indent.len())
            {
                block.push_str(lines[i].trim());
                block.push('\n');
                i += 1;
            }
            out.push((format!("cairn-alerts.yml line {i}"), block));
        } else {
            out.push((format!("cairn-alerts.yml line {i}"), rest.to_string()));
        }
    }
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        root().join("deploy/grafana/cairn.json"),
    )?)?;
    for p in dash["panels"].as_array().context("no panels")? {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().context("target without expr")?;
            out.push((
                format!("cairn.json panel {:?}", p["title"].as_str().unwrap_or("")),
                expr.to_string(),
            ));
        }
    }
    Ok(out)
}

/// The metric names an expression uses: identifiers starting `cairn_` or
/// `process_` that are followed by `{`, `[`, ` `, `)` or the end (so label
/// names and functions are skipped), each with the role its
/// `job="cairn-ROLE"` matcher names (`None`: no job, or a regex).
fn metric_names(expr: &str) -> Vec<(String, Option<String>)> {
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !(ident(b[i]) && (i == 0 || !ident(b[i - 1]))) || b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && ident(b[i]) {
            i += 1;
        }
        let name = &expr[start..i];
        let next = b.get(i).copied();
        let inside_quotes = expr[..start].matches('"').count() % 2 == 1;
        if inside_quotes
            || !(name.starts_with("cairn_") || name.starts_with("process_"))
            || !matches!(next, None | Some(b'{' | b'[' | b' ' | b')' | b'\n'))
        {
            continue;
        }
        let mut role = None;
        if next == Some(b'{') {
            if let Some(end) = expr[i..].find('}') {
                let labels = &expr[i + 1..i + end];
                role = labels
                    .split(',')
                    .map(str::trim)
                    .find_map(|l| l.strip_prefix("job=\"cairn-"))
                    .map(|r| r.trim_end_matches('"').to_string());
            }
        }
        out.push((name.to_string(), role));
    }
    out
}

/// The series names a role's `/metrics` exposes: every sample name, and
/// for every declared family (so one with no series yet counts too) the
/// names Prometheus stores it under (`_total` for a counter; `_bucket`,
/// `_sum`, `_count` for a histogram).
async fn exposed(addr: &str) -> anyhow::Result<BTreeSet<String>> {
    let r = crate::common::http(
        http::Method::GET,
        &format!("http://{addr}/metrics"),
        None,
        &[],
        bytes::Bytes::new(),
    )
    .await?;
    anyhow::ensure!(
        r.status == http::StatusCode::OK,
        "{addr}/metrics: {}",
        r.status
    );
    let text = String::from_utf8(r.body.to_vec())?;
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let mut it = t.split_whitespace();
            let (Some(name), Some(kind)) = (it.next(), it.next()) else {
                continue;
            };
            match kind {
                "counter" => {
                    names.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{s}"));
                    }
                }
                _ => {
                    names.insert(name.to_string());
                }
            }
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    Ok(names)
}

/// Every metric the alert rules and the dashboard name exists on a live
/// cluster, on the role its `job` matcher names; `cairn_*` selectors must
/// name their job. Fails with the list of what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_and_dashboard_name_real_metrics() -> anyhow::Result<()> {
    use crate::cluster::{Cluster, Opts};
    let queries = deploy_queries()?;
    assert!(queries.len() >= 30, "only {} queries found", queries.len());
    // A family with no series yet is not exposed at all, so the cluster
    // does real work first: an erasure-coded object written and read back
    // through the gateway, and a leader that has planned over it.
    let cluster = Cluster::start(Opts {
        chunkservers: 6,
        ..Default::default()
    })?;
    cluster
        .wait_chunkservers_up(cluster.chunkservers.len())
        .await?;
    let gw = crate::common::Proc::spawn(
        "gateway",
        cluster.dir.path(),
        [
            "gateway",
            "--plain-http",
            "--listen",
            "127.0.0.1:0",
            "--metadata",
            &cluster.meta_addrs.join(","),
        ],
        &[("CAIRN_SECRET", crate::common::SECRET)],
    )?;
    let out = cluster.cli(&["--json", "admin", "key", "create", "deploy", "--admin"])?;
    anyhow::ensure!(
        out.status.success(),
        "key create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let (Some(key), Some(secret)) = (v["id"].as_str(), v["secret"].as_str()) else {
        anyhow::bail!("key create printed no id/secret: {v}");
    };
    let s3 = crate::s3::RawS3::new(&gw.addr_str(), key, secret);
    let t = std::time::Duration::from_secs(30);
    let body = bytes::Bytes::from(crate::common::data(300 << 10, 7));
    for (method, path, sent) in [
        (http::Method::PUT, "/metrics-bucket", bytes::Bytes::new()),
        (http::Method::PUT, "/metrics-bucket/obj", body.clone()),
        (
            http::Method::GET,
            "/metrics-bucket/obj",
            bytes::Bytes::new(),
        ),
    ] {
        let resp = s3.send(method.clone(), path, &[], sent, t).await?;
        let status = resp.status();
        let (got, cut) = crate::s3::drain(resp).await;
        anyhow::ensure!(
            status == http::StatusCode::OK && cut.is_none(),
            "{method} {path}: {status} {}",
            String::from_utf8_lossy(&got)
        );
        if method == http::Method::GET {
            anyhow::ensure!(got == body.as_ref(), "GET returned other bytes");
        }
    }
    let leader = cluster.leader().await?;
    let meta = crate::cluster::wait_for("the leader to plan over the object", 60, || async {
        let names = exposed(&cluster.meta_addrs[leader]).await?;
        Ok(names.contains("cairn_stripes").then_some(names))
    })
    .await?;
    let mut by_role: std::collections::BTreeMap<&str, BTreeSet<String>> = Default::default();
    by_role.insert("metadata", meta);
    by_role.insert(
        "chunkserver",
        exposed(&cluster.chunkservers[0].addr_str()).await?,
    );
    by_role.insert("gateway", exposed(&gw.addr_str()).await?);
    let mut problems = BTreeSet::new();
    let mut checked = 0;
    for (place, expr) in &queries {
        for (name, role) in metric_names(expr) {
            checked += 1;
            match role.as_deref() {
                Some(r) => match by_role.get(r) {
                    Some(names) if names.contains(&name) => {}
                    Some(_) => {
                        problems.insert(format!("{name} (job cairn-{r}, {place})"));
                    }
                    None => {
                        problems.insert(format!("{name}: unknown job cairn-{r} ({place})"));
                    }
                },
                None if name.starts_with("cairn_") => {
                    problems.insert(format!("{name}: no job=\"cairn-ROLE\" matcher ({place})"));
                }
                None => {
                    if !by_role.values().any(|n| n.contains(&name)) {
                        problems.insert(format!("{name} (any role, {place})"));
                    }
                }
            }
        }
    }
    assert!(checked >= 40, "only {checked} metric references found");
    assert!(
        problems.is_empty(),
        "metrics named in deploy/ that no live role exposes:\n  {}",
        problems.into_iter().collect::<Vec<_>>().join("\n  ")
    );
    Ok(())
}

#[test]
fn metric_names_are_extracted_from_promql() {
    let got = metric_names(
        r#"sum by (le) (rate(cairn_s3_request_duration_seconds_bucket{job="cairn-gateway", op="x"}[5m])) / cairn_disk_free_bytes{job=~"cairn-.*"} and up{job="cairn_x"} > process_open_fds"#,
    );
    assert_eq!(
        got,
        vec![
            (
                "cairn_s3_request_duration_seconds_bucket".to_string(),
                Some("gateway".to_string())
            ),
            ("cairn_disk_free_bytes".to_string(), None),
            ("process_open_fds".to_string(), None),
        ]
    );
}
