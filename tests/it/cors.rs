//! Bucket CORS and bucket tagging (issue 13) against one cluster and
//! gateway: the S3 API and CORS on requests through boto3
//! (`s3_cors.py`), then a real headless Chromium: a page served from
//! another origin PUTs and GETs an object with presigned URLs through
//! `fetch`, which works only while the bucket's CORS rules allow that
//! origin.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::cluster::free_port;
use crate::dashboard::{find_chromium, Browser};
use crate::s3::{have, run, stdout, S3Env};

/// The boto3 script.
const SCRIPT: &str = include_str!("s3_cors.py");

/// Longer than the gateway's CORS cache (`gateway::cors::CACHE_TTL`).
const CACHE_WAIT: Duration = Duration::from_millis(2500);

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn script(env: &S3Env, vars: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(SCRIPT)
        .env("S3_ENDPOINT", env.endpoint())
        .env("S3_KEY", &env.key)
        .env("S3_SECRET", &env.secret)
        .env("AWS_CONFIG_FILE", env.work.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            env.work.join("no-aws-config"),
        );
    for (k, v) in vars {
        cmd.env(k, v);
    }
    Ok(stdout(&run(cmd, "boto3 CORS script")?))
}

/// `python3 -m http.server` on 127.0.0.1: another origin than the
/// gateway's. Killed (by its own pid) on drop.
struct PageServer(Child);

impl Drop for PageServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A page that PUTs `body` to `put` and GETs it back from `get`, then
/// shows the outcome in `#result`.
fn page(put: &str, get: &str, body: &str) -> anyhow::Result<String> {
    let put = serde_json::to_string(put)?;
    let get = serde_json::to_string(get)?;
    let body = serde_json::to_string(body)?;
    Ok(format!(
        r#"<!doctype html><html><body><div id="result">pending</div><script>
(async () => {{
  const out = document.getElementById("result");
  try {{
    const p = await fetch({put}, {{ method: "PUT", body: {body} }});
    if (!p.ok) throw new Error("PUT " + p.status);
    const g = await fetch({get});
    out.textContent = "GOT:" + g.status + ":" + (await g.text()) + ":ETAG:" + (g.headers.get("ETag") || "none");
  }} catch (e) {{
    out.textContent = "FAILED:" + e;
  }}
}})();
</script></body></html>"#
    ))
}

fn result(dom: &str) -> String {
    dom.split("<div id=\"result\">")
        .nth(1)
        .and_then(|r| r.split("</div>").next())
        .unwrap_or("no #result in the DOM")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_cors_and_tagging_with_boto3_and_chromium() -> anyhow::Result<()> {
    if !have("python3", &["-c", "import boto3"]) {
        if ci() {
            bail!("boto3 is not installed (python3 -m pip install boto3)");
        }
        return Ok(());
    }
    let env = S3Env::start().await?;
    let out = script(&env, &[])?;
    print!("{out}");
    assert!(out.contains("ALL OK"), "{out}");

    let Some(bin) = find_chromium() else {
        if ci() {
            bail!("chromium is not installed (apt-get install chromium; .ci/run does)");
        }
        eprintln!("\n!!!!!!!! SKIPPING the Chromium CORS case: no `chromium` here !!!!!!!!\n");
        return Ok(());
    };
    let site = env.work.join("site");
    std::fs::create_dir_all(&site)?;
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(&site)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start python3 -m http.server")?;
    let _server = PageServer(child);
    let mut browser = Browser {
        bin,
        dir: env.work.join("chromium"),
        runs: 0,
    };
    let presign = |key: &str| -> anyhow::Result<(String, String)> {
        let out = script(&env, &[("CORS_MODE", "presign"), ("CORS_KEY", key)])?;
        let v: serde_json::Value = serde_json::from_str(out.trim())?;
        Ok((
            v["put"].as_str().context("no put url")?.to_string(),
            v["get"].as_str().context("no get url")?.to_string(),
        ))
    };
    // Wait for the page server.
    crate::cluster::wait_for("the page server", 20, || async {
        Ok(std::net::TcpStream::connect(("127.0.0.1", port))
            .is_ok()
            .then_some(()))
    })
    .await?;

    // Allowed: the page's origin is in the rules.
    script(&env, &[("CORS_MODE", "set"), ("CORS_ORIGIN", &origin)])?;
    let (put, get) = presign("from-browser")?;
    std::fs::write(
        site.join("allowed.html"),
        page(&put, &get, "hello from chromium")?,
    )?;
    let dom = browser.dom(&format!("{origin}/allowed.html"))?;
    let r = result(&dom);
    assert!(
        r.starts_with("GOT:200:hello from chromium:ETAG:\""),
        "the cross-origin PUT + GET failed: {r}"
    );

    // Refused: the rules name another origin; the preflight of the PUT
    // fails, so nothing is written.
    script(
        &env,
        &[
            ("CORS_MODE", "set"),
            ("CORS_ORIGIN", "http://other.example"),
        ],
    )?;
    tokio::time::sleep(CACHE_WAIT).await;
    let (put, get) = presign("refused")?;
    std::fs::write(
        site.join("refused.html"),
        page(&put, &get, "must not land")?,
    )?;
    let dom = browser.dom(&format!("{origin}/refused.html"))?;
    let r = result(&dom);
    assert!(
        r.starts_with("FAILED:"),
        "a refused origin got through: {r}"
    );
    let client = env.cluster.client();
    assert!(
        client.head("cors", "refused").await.is_err(),
        "the refused PUT was stored"
    );
    Ok(())
}
