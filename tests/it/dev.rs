//! `cairn dev`: the one-command local cluster works, the CLI finds it
//! through the config file it writes, Ctrl-C (SIGTERM) stops every child,
//! and a second run reuses the data.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn start_dev(
    data: &std::path::Path,
    config: &std::path::Path,
    base: u16,
) -> anyhow::Result<(Child, Vec<String>)> {
    // Its stderr goes to a file, shown if it does not come up.
    let stderr_path = config.with_extension("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "dev",
            "--data",
            data.to_str().unwrap(),
            "--base-port",
            &base.to_string(),
            "--config",
            config.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path)?)
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            break;
        }
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            let done = l.starts_with("Ctrl-C");
            lines.push(l);
            if done {
                // Keep draining in the background so the child never blocks.
                std::thread::spawn(move || while rx.recv().is_ok() {});
                return Ok((child, lines));
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    anyhow::bail!("cairn dev (base port {base}) did not come up: {lines:?}\nstderr:\n{stderr}");
}

fn stop(mut child: Child) -> anyhow::Result<()> {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?
        .success();
    anyhow::ensure!(ok, "kill -TERM failed");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = child.try_wait()? {
            anyhow::ensure!(s.success(), "cairn dev exited with {s}");
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "cairn dev did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cli(config: &std::path::Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_CONFIG", config)
        .env_remove("CAIRN_METADATA")
        .env_remove("CAIRN_SECRET")
        .output()?)
}

#[test]
fn dev_cluster_serves_the_cli_stops_cleanly_and_keeps_its_data() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("cairn-data");
    let config = dir.path().join("config.json");
    let base = crate::common::dev_base_port(16_000, 6_000);
    let (child, lines) = start_dev(&data, &config, base)?;
    let text = lines.join("\n");
    assert!(
        text.contains("metadata:") && text.contains("secret:"),
        "{text}"
    );
    let file = dir.path().join("hello.txt");
    std::fs::write(&file, b"hello, cairn")?;
    let out = cli(&config, &["mb", "cairn://dev-bucket"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(
        &config,
        &[
            "put",
            file.to_str().unwrap(),
            "cairn://dev-bucket/hello.txt",
        ],
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop(child)?;
    // Every child process is gone: the ports are free again.
    for port in [base + 1, base + 2, base + 3, base + 101, base + 106] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} still in use"
        );
    }
    // The key S3 secrets are sealed under was created private (and the
    // dev S3 key was stored with it, or `cairn dev` would have failed).
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("secrets.key"))?
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "secrets.key mode {mode:o}");
    }
    // Second run: same data (and the same secrets key).
    let (child, _) = start_dev(&data, &config, base)?;
    let out = cli(&config, &["get", "cairn://dev-bucket/hello.txt", "-"])?;
    assert_eq!(
        out.stdout,
        b"hello, cairn",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop(child)?;
    Ok(())
}
