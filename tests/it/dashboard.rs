//! The operator dashboard in a real browser: Debian's Chromium, headless,
//! loads `/dashboard` from a `cairn dev` cluster (the secret passed in the
//! URL fragment, which the page moves into `sessionStorage`), and the test
//! reads the DOM it rendered: six chunkservers up, the redundancy table,
//! a follower pointing at the leader; then a chunkserver is killed with
//! SIGKILL and the page, reloaded, must show it down and repairs done.
//! The run leaves a screenshot in `target/dashboard.png`.
//!
//! Without Chromium the test fails when `CI` is set (`.ci/run` installs
//! it) and is skipped with a loud message otherwise.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hyper::{Method, StatusCode};

use crate::common;

/// Virtual time each page load runs for before its DOM is read: the first
/// poll and two more (the page polls every 2 s; virtual time stands still
/// while requests are pending).
const PAGE_BUDGET_MS: u64 = 5_000;

/// Longest a single Chromium run may take on a loaded 2-core machine.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

/// The Chromium binary: `CAIRN_CHROMIUM`, else `chromium` or
/// `chromium-browser` on the PATH.
pub(crate) fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CAIRN_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
        .find(|p| p.is_file())
}

/// Headless Chromium runs, each with a fresh profile under `dir`.
pub(crate) struct Browser {
    pub(crate) bin: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) runs: usize,
}

impl Browser {
    /// Runs Chromium on `url` with `extra` flags; returns its stdout.
    fn run(&mut self, extra: &[String], url: &str) -> anyhow::Result<String> {
        self.runs += 1;
        let profile = self.dir.join(format!("profile-{}", self.runs));
        let mut child = Command::new(&self.bin)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group, so a hung browser and its helpers can
            // be killed together.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        let mut stdout = child.stdout.take().context("piped stdout")?;
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + BROWSER_TIMEOUT;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.wait();
                bail!("chromium did not finish {url} within {BROWSER_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = reader.join().unwrap_or_default();
        let _ = std::fs::remove_dir_all(&profile);
        anyhow::ensure!(status.success(), "chromium exited with {status} on {url}");
        Ok(out)
    }

    /// The DOM of `url` after the page ran for [`PAGE_BUDGET_MS`].
    pub(crate) fn dom(&mut self, url: &str) -> anyhow::Result<String> {
        self.run(
            &[
                format!("--virtual-time-budget={PAGE_BUDGET_MS}"),
                "--dump-dom".into(),
            ],
            url,
        )
    }

    /// A 1280x1000 PNG of `url` after the page ran, written to `path`.
    fn screenshot(&mut self, url: &str, path: &Path) -> anyhow::Result<()> {
        self.run(
            &[
                format!("--virtual-time-budget={PAGE_BUDGET_MS}"),
                "--window-size=1280,1000".into(),
                format!("--screenshot={}", path.display()),
            ],
            url,
        )?;
        Ok(())
    }
}

/// The attributes of every `<tag ...>` start tag in `dom` that has
/// attribute `key`. Chromium serializes attribute values in double
/// quotes, with `"` escaped, so splitting on quotes is exact.
fn tags_with(dom: &str, tag: &str, key: &str) -> Vec<BTreeMap<String, String>> {
    let open = format!("<{tag} ");
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(end) = rest.find('>') else { break };
        let mut attrs = BTreeMap::new();
        let mut s = &rest[..end];
        while let Some(eq) = s.find("=\"") {
            let name = s[..eq].trim().to_string();
            let after = &s[eq + 2..];
            let Some(q) = after.find('"') else { break };
            attrs.insert(name, after[..q].to_string());
            s = &after[q + 1..];
        }
        if attrs.contains_key(key) {
            out.push(attrs);
        }
    }
    out
}

/// The attributes of the element with `id` (any tag).
fn element(dom: &str, id: &str) -> Option<BTreeMap<String, String>> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let start = dom[..at].rfind('<')?;
    let tag: String = dom[start + 1..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    tags_with(&dom[start..], &tag, "id").into_iter().next()
}

/// A number attribute of the element with `id` (0 when absent).
fn num(dom: &str, id: &str, attr: &str) -> u64 {
    element(dom, id)
        .and_then(|a| a.get(attr).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// The chunkserver rows of the page: id -> attributes.
fn chunkservers(dom: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    tags_with(dom, "tr", "data-chunkserver")
        .into_iter()
        .filter(|a| a.contains_key("data-state"))
        .filter_map(|a| Some((a.get("data-chunkserver")?.clone(), a)))
        .collect()
}

/// `cairn dev` running; stopped with SIGTERM (its children die with it)
/// when dropped.
struct Dev {
    child: Child,
}

impl Dev {
    fn start(data: &Path, config: &Path, base: u16) -> anyhow::Result<Dev> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("dev")
            .arg("--data")
            .arg(data)
            .args(["--base-port", &base.to_string()])
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Keeps reading after the test stopped listening, so the
                // child never blocks on a full pipe.
                let _ = tx.send(line);
            }
        });
        let dev = Dev { child };
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut lines = Vec::new();
        while Instant::now() < deadline {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
                let done = l.starts_with("Ctrl-C");
                lines.push(l);
                if done {
                    return Ok(dev);
                }
            }
        }
        bail!("cairn dev did not come up: {lines:?}");
    }

    /// The pid of the child serving chunkserver data directory `name`.
    fn chunkserver_pid(&self, name: &str) -> Option<u32> {
        let parent = self.child.id();
        let suffix = format!("/{name}");
        for e in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok());
            if ppid != Some(parent) {
                continue;
            }
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.iter().any(|a| a == "chunkserver") && args.iter().any(|a| a.ends_with(&suffix))
            {
                return Some(pid);
            }
        }
        None
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(config: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_CONFIG", config)
        .env_remove("CAIRN_METADATA")
        .env_remove("CAIRN_SECRET")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "cairn {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Where the test run leaves the screenshot: `<target>/dashboard.png`
/// (the test binary is `<target>/debug/deps/it-...`).
fn screenshot_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|e| e.ancestors().nth(3).map(Path::to_path_buf))
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("dashboard.png")
}

/// The parts of a DOM worth printing when a check fails.
fn excerpt(dom: &str) -> String {
    match dom.find("<main") {
        Some(i) => dom[i..].chars().take(6_000).collect(),
        None => dom.chars().take(3_000).collect(),
    }
}

#[test]
fn dashboard_in_headless_chromium_shows_a_chunkserver_down_and_repairs() -> anyhow::Result<()> {
    let Some(bin) = find_chromium() else {
        if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") {
            bail!("chromium is not installed (apt-get install chromium; .ci/run does)");
        }
        eprintln!(
            "\n!!!!!!!! SKIPPING the dashboard test: `chromium` is not installed here \
             (.ci/run installs it in CI) !!!!!!!!\n"
        );
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("cairn-data");
    let config = dir.path().join("config.json");
    // A port range of its own (dev.rs uses 16000.., ops.rs 23000..).
    let base = crate::common::dev_base_port(10_000, 5_000);
    let dev = Dev::start(&data, &config, base)?;
    let secret = std::fs::read_to_string(data.join("dev-secret"))?
        .trim()
        .to_string();
    let rt = tokio::runtime::Runtime::new()?;
    let node = |i: u16| format!("127.0.0.1:{}", base + i);

    // The static files need no secret; the data behind them does.
    let page = rt.block_on(common::http(
        Method::GET,
        &format!("http://{}/dashboard", node(1)),
        None,
        &[],
        Bytes::new(),
    ))?;
    assert_eq!(page.status, StatusCode::OK);
    let csp = page
        .headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    for path in ["/v1/admin/cluster", "/v1/status"] {
        let r = rt.block_on(common::http(
            Method::POST,
            &format!("http://{}{path}", node(1)),
            None,
            &[],
            Bytes::new(),
        ))?;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
    }

    // Some objects. Bucket `dash` is 2+1: with one chunkserver per zone
    // lost, each stripe still has a valid target (the other server of the
    // zone). Bucket `wide` is 4+2 over all six servers: with one down its
    // stripes stay degraded (no server without a shard of the stripe is
    // left), which the table shows.
    let file = dir.path().join("obj");
    cli(&config, &["mb", "cairn://dash", "--ec", "2+1"])?;
    cli(&config, &["mb", "cairn://wide"])?;
    let put = |bucket: &str, name: String, len: usize, seed: u64| -> anyhow::Result<()> {
        std::fs::write(&file, common::data(len, seed))?;
        let to = format!("cairn://{bucket}/{name}");
        cli(&config, &["put", file.to_str().unwrap_or_default(), &to])
    };
    for i in 0..10u64 {
        put("dash", format!("big-{i}"), 1 << 20, i)?;
    }
    for i in 0..2u64 {
        put("wide", format!("wide-{i}"), 2 << 20, 50 + i)?;
    }
    for i in 0..3u64 {
        put("dash", format!("small-{i}"), 1000, 100 + i)?;
    }

    // The leader, from node 1's own view.
    let status = rt.block_on(common::http(
        Method::POST,
        &format!("http://{}/v1/status", node(1)),
        Some(&secret),
        &[],
        Bytes::new(),
    ))?;
    let raft: serde_json::Value = serde_json::from_slice(&status.body)?;
    let leader = raft["leader"].as_u64().context("no leader")?;
    let leader_addr = raft["voters"][leader.to_string()]
        .as_str()
        .context("leader address")?
        .to_string();
    let url = |addr: &str| format!("http://{addr}/dashboard#secret={secret}");

    let mut browser = Browser {
        bin,
        dir: dir.path().join("chromium"),
        runs: 0,
    };

    // All six chunkservers up, and every stripe counted in the redundancy
    // table (the planner's summary follows the writes within a pass).
    let deadline = Instant::now() + Duration::from_secs(60);
    let dom = loop {
        let dom = browser.dom(&url(&leader_addr))?;
        let cs = chunkservers(&dom);
        let up = cs.values().filter(|a| a["data-state"] == "up").count();
        let stripes = num(&dom, "redundancy", "data-stripes");
        if up == 6 && cs.len() == 6 && stripes >= 12 {
            break dom;
        }
        if Instant::now() > deadline {
            bail!(
                "the page never showed 6 chunkservers up and 12 stripes (up {up} of {}, stripes {stripes}):\n{}",
                cs.len(),
                excerpt(&dom)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        element(&dom, "dash").and_then(|a| a.get("data-view").cloned()),
        Some("leader".into()),
        "{}",
        excerpt(&dom)
    );
    assert!(
        tags_with(&dom, "tr", "data-redundancy")
            .iter()
            .any(|a| a.get("data-stripes").is_some_and(|n| n != "0")),
        "{}",
        excerpt(&dom)
    );
    let nodes = tags_with(&dom, "tr", "data-node");
    assert_eq!(nodes.len(), 3, "{}", excerpt(&dom));
    assert_eq!(
        nodes.iter().filter(|a| a["data-role"] == "leader").count(),
        1
    );
    // The secret went into sessionStorage, not into the page.
    assert!(!dom.contains(&secret), "the secret is in the DOM");

    // A follower answers with its own view and points at the leader.
    let follower = (1..=3)
        .map(node)
        .find(|a| *a != leader_addr)
        .context("a follower")?;
    let fdom = browser.dom(&url(&follower))?;
    assert_eq!(
        element(&fdom, "dash").and_then(|a| a.get("data-view").cloned()),
        Some("follower".into()),
        "{}",
        excerpt(&fdom)
    );
    let link = element(&fdom, "leader-link").context("no link to the leader")?;
    assert_eq!(
        link.get("href").map(String::as_str),
        Some(format!("http://{leader_addr}/dashboard").as_str())
    );

    // Kill chunkserver cs3 (data dir `cs3`, port base+103) with SIGKILL.
    let victim_addr = node(103);
    let victim = chunkservers(&dom)
        .into_iter()
        .find(|(_, a)| a.get("data-addr") == Some(&victim_addr))
        .map(|(id, _)| id)
        .context("cs3 is not on the page")?;
    let pid = dev.chunkserver_pid("cs3").context("no cs3 process")?;
    let ok = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()?
        .success();
    anyhow::ensure!(ok, "kill -KILL {pid} failed");

    // The page shows it down (after the 30 s down timeout) and repairs
    // committed onto the others.
    let deadline = Instant::now() + Duration::from_secs(180);
    let dom = loop {
        let dom = browser.dom(&url(&leader_addr))?;
        let state = chunkservers(&dom)
            .get(&victim)
            .map(|a| a["data-state"].clone())
            .unwrap_or_default();
        let done = num(&dom, "repair", "data-done");
        if state == "down" && done > 0 {
            break dom;
        }
        if Instant::now() > deadline {
            bail!(
                "the page never showed chunkserver {victim} down with repairs done (state {state}, done {done}):\n{}",
                excerpt(&dom)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let up = chunkservers(&dom)
        .values()
        .filter(|a| a["data-state"] == "up")
        .count();
    assert_eq!(up, 5, "{}", excerpt(&dom));
    let zone_up: Vec<String> = tags_with(&dom, "tr", "data-zone")
        .into_iter()
        .filter_map(|a| a.get("data-up").cloned())
        .collect();
    assert_eq!(
        zone_up.iter().filter(|u| *u == "1").count(),
        1,
        "{zone_up:?}"
    );
    // Its down mark is an event, and so are the repairs.
    let events = tags_with(&dom, "li", "data-kind");
    assert!(
        events
            .iter()
            .any(|a| a["data-kind"] == "down" && a.get("data-chunkserver") == Some(&victim)),
        "{}",
        excerpt(&dom)
    );
    assert!(
        events.iter().any(|a| a["data-kind"] == "repair"),
        "{}",
        excerpt(&dom)
    );
    assert!(
        tags_with(&dom, "tr", "data-outcome")
            .iter()
            .any(|a| a["data-outcome"] == "committed"),
        "{}",
        excerpt(&dom)
    );

    // The screenshot of this state.
    let shot = screenshot_path();
    if let Some(p) = shot.parent() {
        std::fs::create_dir_all(p)?;
    }
    browser.screenshot(&url(&leader_addr), &shot)?;
    let png = std::fs::read(&shot)?;
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} is not a screenshot",
        shot.display()
    );
    eprintln!("dashboard screenshot: {}", shot.display());
    drop(dev);
    Ok(())
}
