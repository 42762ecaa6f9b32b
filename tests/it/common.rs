//! Harness shared by every integration test: spawn `cairn` role processes,
//! wait for their address files, kill -9 and restart them, print their logs
//! when a test fails, and speak raw HTTP to them.
#![allow(dead_code)]

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use cairn_metadata::net::{self, HttpClient, SECRET_HEADER};
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode};

/// The cluster secret every test process is started with.
pub const SECRET: &str = "it-secret-0123456789abcdef";

/// What a test presents to a chunkserver's API: the data-plane key derived
/// from [`SECRET`] (chunkservers never see a credential that opens the
/// metadata API).
pub fn cs_key() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| cairn_metadata::auth::data_key(SECRET))
}

/// How long a process may take to bind and write its address file.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Lines of a child's log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// One `cairn` child process (a role such as a chunkserver), restartable
/// with the same arguments. Killed on drop; its log tail is printed if the
/// test is panicking (or always, with `CAIRN_IT_LOGS=1`).
pub struct Proc {
    name: String,
    /// A command the binary runs under (`ip netns exec NS`), or empty.
    wrapper: Vec<OsString>,
    args: Vec<OsString>,
    envs: Vec<(String, String)>,
    log_path: PathBuf,
    addr_file: PathBuf,
    child: Option<Child>,
    addr: SocketAddr,
}

impl Proc {
    /// Starts `cairn <args> --addr-file <dir>/<name>.addr`, logging stdout
    /// and stderr to `<dir>/<name>.log`, and waits for the address file.
    pub fn spawn(
        name: &str,
        dir: &Path,
        args: impl IntoIterator<Item = impl Into<OsString>>,
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        Proc::spawn_wrapped(&[] as &[OsString], name, dir, args, envs)
    }

    /// As `spawn`, but runs `<wrapper...> cairn <args>`, e.g. under
    /// `ip netns exec NS` (which execs, so the pid is cairn's).
    pub fn spawn_wrapped(
        wrapper: &[impl AsRef<std::ffi::OsStr>],
        name: &str,
        dir: &Path,
        args: impl IntoIterator<Item = impl Into<OsString>>,
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        std::fs::create_dir_all(dir)?;
        let mut p = Proc {
            name: name.to_string(),
            wrapper: wrapper.iter().map(|w| w.as_ref().to_owned()).collect(),
            args: args.into_iter().map(Into::into).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log_path: dir.join(format!("{name}.log")),
            addr_file: dir.join(format!("{name}.addr")),
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        p.start()?;
        Ok(p)
    }

    fn start(&mut self) -> anyhow::Result<()> {
        match std::fs::remove_file(&self.addr_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        writeln!(log, "==== starting {} {:?}", self.name, self.args)?;
        let mut cmd = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(env!("CARGO_BIN_EXE_cairn"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_cairn")),
        };
        cmd.args(&self.args)
            .arg("--addr-file")
            .arg(&self.addr_file)
            .env(
                "CAIRN_LOG",
                std::env::var("CAIRN_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("cannot spawn cairn")?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(s) = std::fs::read_to_string(&self.addr_file) {
                if let Ok(addr) = s.trim().parse() {
                    self.addr = addr;
                    break;
                }
            }
            if let Some(status) = child.try_wait()? {
                let tail = self.log_tail(LOG_TAIL_LINES);
                bail!("{} exited during start-up ({status}):\n{tail}", self.name);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let tail = self.log_tail(LOG_TAIL_LINES);
                bail!(
                    "{} did not write its address file in time:\n{tail}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = Some(child);
        Ok(())
    }

    /// The address the process is listening on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address as `host:port`.
    pub fn addr_str(&self) -> String {
        self.addr.to_string()
    }

    /// The file the process logs to (all its runs).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The child's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILLs the process and reaps it: no chance to clean up.
    pub fn kill_9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // std's kill sends SIGKILL on Unix.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits (up to `timeout`) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let Some(mut c) = self.child.take() else {
            bail!("{} is not running", self.name);
        };
        let status = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = c.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                bail!("{} did not stop within {timeout:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process (if running) and starts it again with the same
    /// arguments; the address may change.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill_9();
        self.start()
    }

    /// The last `n` lines of the process's log (all its runs).
    pub fn log_tail(&self, n: usize) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            // Logs are small; keep the read bounded anyway.
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(256 << 10)));
            let _ = f.read_to_string(&mut s);
        }
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A test returning `Err` does not panic before its processes drop:
        // set CAIRN_IT_LOGS=1 to print their logs in that case too.
        if std::thread::panicking() || std::env::var_os("CAIRN_IT_LOGS").is_some() {
            eprintln!(
                "---- last {LOG_TAIL_LINES} log lines of {} ({}) ----\n{}\n---- end of {} ----",
                self.name,
                self.log_path.display(),
                self.log_tail(LOG_TAIL_LINES),
                self.name
            );
        }
        self.kill_9();
    }
}

/// Starts a chunkserver named `name` under `root` with data directories
/// `<root>/<name>/data<i>` (`disks` of them), listening on 127.0.0.1:0.
pub fn chunkserver(root: &Path, name: &str, disks: usize, extra: &[&str]) -> anyhow::Result<Proc> {
    let dir = root.join(name);
    let mut args: Vec<OsString> = vec!["chunkserver".into()];
    for i in 0..disks.max(1) {
        args.push("--data".into());
        args.push(dir.join(format!("data{i}")).into());
    }
    for a in ["--listen", "127.0.0.1:0", "--zone", name] {
        args.push(a.into());
    }
    args.extend(extra.iter().map(OsString::from));
    Proc::spawn(name, &dir, args, &[("CAIRN_SECRET", SECRET)])
}

/// A reply, fully read.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// The `error` code of a JSON error body, if any.
    pub fn error_code(&self) -> Option<String> {
        serde_json::from_slice::<net::ErrorBody>(&self.body)
            .ok()
            .map(|e| e.error)
    }
}

/// Sends one request over the shared pooled client. `secret`: `None` sends
/// no secret header.
pub async fn http(
    method: Method,
    url: &str,
    secret: Option<&str>,
    headers: &[(&str, String)],
    body: Bytes,
) -> anyhow::Result<Reply> {
    static CLIENT: std::sync::OnceLock<HttpClient> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(HttpClient::default);
    let mut b = Request::builder().method(method).uri(url);
    if let Some(s) = secret {
        b = b.header(SECRET_HEADER, s);
    }
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    let resp = client
        .send(b.body(net::full(body))?, Duration::from_secs(20))
        .await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = net::read_body(resp.into_body(), 256 << 20).await?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Writes `request` verbatim on a fresh TCP connection (half-closing it
/// after when `half_close`) and returns whatever the server answers before
/// it closes or 5 s pass (possibly nothing). Send `connection: close` to
/// have the server close after its reply.
pub async fn raw_tcp(addr: SocketAddr, request: &[u8], half_close: bool) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(request).await?;
    if half_close {
        s.shutdown().await?;
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// All files under `dir` whose name satisfies `pred`.
pub fn find_files(dir: &Path, pred: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.file_name().to_str().is_some_and(pred) {
                out.push(p);
            }
        }
    }
    out
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A `--base-port` for `cairn dev` in `[lo, lo + span)` whose ports (3
/// metadata nodes at +1.., 6 chunkservers at +101.., the gateway at +900)
/// are free now. Callers pass ranges below the kernel's ephemeral range
/// (32768..), so the client ports of other tests cannot take them, and
/// ranges of their own, so two dev tests do not pick the same base.
pub fn dev_base_port(lo: u16, span: u16) -> u16 {
    let free = |base: u16| {
        [1u16, 2, 3, 101, 102, 103, 104, 105, 106, 900]
            .iter()
            .all(|off| std::net::TcpListener::bind(("127.0.0.1", base + off)).is_ok())
    };
    let mut base = lo + (std::process::id() % u32::from(span)) as u16;
    for _ in 0..50 {
        if free(base) {
            break;
        }
        base = lo + (base - lo + 997) % span;
    }
    base
}
