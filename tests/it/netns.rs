//! The multi-host harness: every role in its own network namespace with its
//! own address, as on separate machines, so faults can cut links between
//! hosts (issue 15; the fault campaigns in `partition.rs` reuse it).
//!
//! Layout of one test run (names carry the test process's pid, so parallel
//! or aborted runs never collide; needs root):
//!
//! ```text
//!  ns cairnit-<pid>-sw  (the "switch": bridge br0, one veth v-<host> per host)
//!    |-- ns cairnit-<pid>-m1 .. m3   eth0 10.213.0.11..   cairn metadata
//!    |-- ns cairnit-<pid>-c1 .. cN   eth0 10.213.0.21..   cairn chunkserver
//!    |-- ns cairnit-<pid>-gw         eth0 10.213.0.5      cairn gateway
//!    `-- ns cairnit-<pid>-cl         eth0 10.213.0.2      the test's client side
//! ```
//!
//! Nothing is added to the host's own namespace: the bridge lives in the
//! switch namespace and the private range exists only inside these
//! namespaces. Each role runs as `ip netns exec <ns> cairn <role> ...`, one
//! process per role with its own flags, as the systemd units run them. The
//! test's own requests (S3, metadata status) run on a thread that entered
//! the client namespace (`Net::run`), and so do the CLI processes it starts.
//!
//! Faults: `isolate` takes a host's switch-side link down (its packets
//! vanish: peers see timeouts, not errors); `partition` installs nftables
//! drop rules inside the namespaces between two groups of hosts, in both
//! directions; `heal` undoes both. Everything is deleted on drop, also when
//! the test fails; namespaces of runs whose process is gone are deleted at
//! the next start.

#![allow(dead_code)]

use std::ffi::OsString;
use std::future::Future;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hyper::{Method, StatusCode};

use crate::cluster::Cluster;
use crate::common::{Proc, SECRET};
use crate::s3::{drain, RawS3};

/// The port every metadata node listens on (each host has its own address,
/// so one fixed port serves them all, as in a real deployment).
pub const META_PORT: u16 = 7001;

/// Prefix of every namespace this harness creates.
const PREFIX: &str = "cairnit";

/// One host: a network namespace with one address on the switch.
#[derive(Clone, Debug)]
pub struct Host {
    /// Short name (`m1`, `c2`, `gw`, `cl`).
    pub name: String,
    /// The namespace.
    pub ns: String,
    /// Its address (10.213.0.0/24).
    pub ip: Ipv4Addr,
}

impl Host {
    /// The command prefix that runs a program on this host.
    pub fn wrapper(&self) -> Vec<OsString> {
        ["ip", "netns", "exec", self.ns.as_str()]
            .iter()
            .map(OsString::from)
            .collect()
    }

    /// The switch-side end of this host's link.
    fn link(&self) -> String {
        format!("v-{}", self.name)
    }
}

/// Where each role runs.
#[derive(Clone, Debug)]
pub struct Hosts {
    /// Metadata node i (Raft id i + 1).
    pub metas: Vec<Host>,
    /// Chunkserver i.
    pub chunkservers: Vec<Host>,
    /// The S3 gateway.
    pub gateway: Host,
    /// The test's client side.
    pub client: Host,
}

impl Hosts {
    /// Metadata node i's host.
    pub fn meta(&self, i: usize) -> anyhow::Result<&Host> {
        self.metas
            .get(i)
            .with_context(|| format!("no host for metadata node {}", i + 1))
    }

    /// Chunkserver i's host.
    pub fn chunkserver(&self, i: usize) -> anyhow::Result<&Host> {
        self.chunkservers
            .get(i)
            .with_context(|| format!("no host for chunkserver {}", i + 1))
    }
}

/// The namespaces, bridge and links of one test run; deleted on drop.
pub struct Net {
    switch: String,
    /// Every host.
    pub hosts: Hosts,
    /// Namespaces created so far (deleted on drop, in reverse).
    created: Vec<String>,
    /// Hosts that have nftables fault rules installed.
    filtered: Mutex<Vec<String>>,
}

/// Runs `ip <args>`; an error carries its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs an nftables script inside `ns`.
fn nft(ns: &str, script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft (install nftables)")?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft in {ns} failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Deletes namespaces left by runs whose process is gone (a SIGKILLed
/// test cannot run its drop guard).
fn delete_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let mut parts = name.splitn(3, '-');
        if parts.next() != Some(PREFIX) {
            continue;
        }
        let Some(pid) = parts.next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

impl Net {
    /// Creates the switch and one host per role: `metas` metadata nodes,
    /// `chunkservers` chunkservers, a gateway and a client. Fails loudly
    /// when namespaces cannot be created (not root, no iproute2): CI must
    /// never skip these tests.
    pub fn new(metas: usize, chunkservers: usize) -> anyhow::Result<Net> {
        if chunkservers > 50 || metas > 9 {
            bail!("too many hosts for 10.213.0.0/24");
        }
        delete_stale();
        let run = format!("{PREFIX}-{}", std::process::id());
        let host = |name: String, last: usize| Host {
            ns: format!("{run}-{name}"),
            ip: Ipv4Addr::new(10, 213, 0, last as u8),
            name,
        };
        let hosts = Hosts {
            metas: (0..metas)
                .map(|i| host(format!("m{}", i + 1), 11 + i))
                .collect(),
            chunkservers: (0..chunkservers)
                .map(|i| host(format!("c{}", i + 1), 21 + i))
                .collect(),
            gateway: host("gw".into(), 5),
            client: host("cl".into(), 2),
        };
        let mut net = Net {
            switch: format!("{run}-sw"),
            hosts,
            created: Vec::new(),
            filtered: Mutex::new(Vec::new()),
        };
        let sw = net.switch.clone();
        ip(&["netns", "add", &sw])
            .context("the multi-host tests need network namespaces (run as root with iproute2)")?;
        net.created.push(sw.clone());
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for h in net.all_hosts() {
            ip(&["netns", "add", &h.ns])?;
            net.created.push(h.ns.clone());
            ip(&["-n", &h.ns, "link", "set", "lo", "up"])?;
            let link = h.link();
            ip(&[
                "-n", &sw, "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns",
                &h.ns,
            ])?;
            ip(&["-n", &sw, "link", "set", &link, "master", "br0", "up"])?;
            let cidr = format!("{}/24", h.ip);
            ip(&["-n", &h.ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &h.ns, "link", "set", "eth0", "up"])?;
        }
        Ok(net)
    }

    /// Every host.
    pub fn all_hosts(&self) -> Vec<Host> {
        let h = &self.hosts;
        let mut v: Vec<Host> = h.metas.iter().chain(&h.chunkservers).cloned().collect();
        v.push(h.gateway.clone());
        v.push(h.client.clone());
        v
    }

    /// Runs `f`'s future on a fresh runtime whose threads live in the
    /// client namespace (threads and child processes inherit it), so the
    /// test reaches the hosts' addresses. A panic in `f` propagates.
    pub fn run<F, Fut>(&self, f: F) -> anyhow::Result<()>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let ns = self.hosts.client.ns.clone();
        std::thread::scope(|s| {
            let t = s.spawn(move || -> anyhow::Result<()> {
                enter(&ns)?;
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(4)
                    .enable_all()
                    .build()?;
                rt.block_on(f())
            });
            match t.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Takes `h`'s link down at the switch: every packet to or from it is
    /// lost, as when a cable is pulled.
    pub fn isolate(&self, h: &Host) -> anyhow::Result<()> {
        ip(&["-n", &self.switch, "link", "set", &h.link(), "down"])
    }

    /// Brings `h`'s link back up.
    pub fn reconnect(&self, h: &Host) -> anyhow::Result<()> {
        ip(&["-n", &self.switch, "link", "set", &h.link(), "up"])
    }

    /// Drops every packet between a host of `a` and a host of `b`, in both
    /// directions, with nftables rules inside their namespaces. Links
    /// within a group are untouched.
    pub fn partition(&self, a: &[&Host], b: &[&Host]) -> anyhow::Result<()> {
        for (side, other) in [(a, b), (b, a)] {
            let ips: Vec<String> = other.iter().map(|h| h.ip.to_string()).collect();
            let set = ips.join(", ");
            for h in side {
                nft(
                    &h.ns,
                    &format!(
                        "table inet cairnfault {{\n\
                         chain in {{ type filter hook input priority 0; policy accept; ip saddr {{ {set} }} drop; }}\n\
                         chain out {{ type filter hook output priority 0; policy accept; ip daddr {{ {set} }} drop; }}\n\
                         }}\n"
                    ),
                )?;
                let mut f = self.filtered.lock().unwrap_or_else(|e| e.into_inner());
                if !f.contains(&h.ns) {
                    f.push(h.ns.clone());
                }
            }
        }
        Ok(())
    }

    /// Makes `h` deaf to the hosts of `from`: a drop rule on its input only.
    /// It can still send, but every reply (and every SYN-ACK of a
    /// connection it opens) vanishes: its peers may hear a request on an
    /// established connection, and then nothing.
    pub fn deafen(&self, h: &Host, from: &[&Host]) -> anyhow::Result<()> {
        let ips: Vec<String> = from.iter().map(|h| h.ip.to_string()).collect();
        nft(
            &h.ns,
            &format!(
                "table inet cairnfault {{\n\
                 chain in {{ type filter hook input priority 0; policy accept; ip saddr {{ {} }} drop; }}\n\
                 }}\n",
                ips.join(", ")
            ),
        )?;
        let mut f = self.filtered.lock().unwrap_or_else(|e| e.into_inner());
        if !f.contains(&h.ns) {
            f.push(h.ns.clone());
        }
        Ok(())
    }

    /// Every host but `h`.
    pub fn others(&self, h: &Host) -> Vec<Host> {
        self.all_hosts()
            .into_iter()
            .filter(|o| o.ns != h.ns)
            .collect()
    }

    /// Takes `h`'s link down and up again and again for `total`: down for
    /// each of `downs` in turn (cycling), up for `up` in between. Returns
    /// how often it went down; the link is up when it returns.
    pub async fn flap(
        &self,
        h: &Host,
        downs: &[Duration],
        up: Duration,
        total: Duration,
    ) -> anyhow::Result<usize> {
        let end = Instant::now() + total;
        let mut n = 0;
        while Instant::now() < end {
            let down = downs.get(n % downs.len().max(1)).copied().unwrap_or(up);
            self.isolate(h)?;
            n += 1;
            tokio::time::sleep(down).await;
            self.reconnect(h)?;
            tokio::time::sleep(up).await;
        }
        Ok(n)
    }

    /// Removes every partition rule and brings every link up.
    pub fn heal(&self) -> anyhow::Result<()> {
        let filtered: Vec<String> =
            std::mem::take(&mut *self.filtered.lock().unwrap_or_else(|e| e.into_inner()));
        for ns in filtered {
            nft(&ns, "delete table inet cairnfault\n")?;
        }
        for h in self.all_hosts() {
            self.reconnect(&h)?;
        }
        Ok(())
    }

    /// Starts a gateway on the gateway host for `c`.
    pub fn gateway(&self, c: &Cluster) -> anyhow::Result<Proc> {
        let listen = format!("{}:0", self.hosts.gateway.ip);
        Proc::spawn_wrapped(
            &self.hosts.gateway.wrapper(),
            "gateway",
            c.dir.path(),
            [
                "gateway",
                "--plain-http",
                "--listen",
                listen.as_str(),
                "--metadata",
                &c.meta_addrs.join(","),
            ],
            &[("CAIRN_SECRET", SECRET)],
        )
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace whose processes still run only unlinks its
        // name; the cluster (and its processes) is dropped before this.
        for ns in self.created.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Moves the calling thread into network namespace `ns`.
fn enter(ns: &str) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("open namespace {ns}"))?;
    // SAFETY: setns on a valid, open namespace fd; it changes only the
    // calling thread's network namespace.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        bail!("setns {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `sig` (e.g. `libc::SIGSTOP`) to `p`.
pub fn signal(p: &Proc, sig: libc::c_int) -> anyhow::Result<()> {
    let pid = p.pid().context("process is not running")?;
    let pid = libc::pid_t::try_from(pid)?;
    // SAFETY: kill(2) on the pid of a child we have not reaped yet.
    if unsafe { libc::kill(pid, sig) } != 0 {
        bail!("kill {pid}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Fails if any process's log shows a panic.
pub fn assert_no_panics<'a>(procs: impl IntoIterator<Item = &'a Proc>) -> anyhow::Result<()> {
    for p in procs {
        let log = std::fs::read_to_string(p.log_path()).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.contains("panicked")) {
            bail!("{}: {line}", p.log_path().display());
        }
    }
    Ok(())
}

/// What one S3 request returned.
#[derive(Debug)]
pub struct S3Reply {
    /// Status.
    pub status: StatusCode,
    /// Body (the object, or the error document).
    pub body: Vec<u8>,
    /// Set when the body did not end cleanly.
    pub cut: Option<String>,
}

impl S3Reply {
    /// The S3 error code of an error document.
    pub fn code(&self) -> Option<String> {
        self.element("Code")
    }

    /// The message of an error document.
    pub fn message(&self) -> Option<String> {
        self.element("Message")
    }

    fn element(&self, name: &str) -> Option<String> {
        let s = String::from_utf8_lossy(&self.body);
        let open = format!("<{name}>");
        let start = s.find(&open)? + open.len();
        let end = s[start..].find(&format!("</{name}>"))? + start;
        Some(s[start..end].to_string())
    }
}

/// A signing S3 client for the gateway, from the client host.
pub struct S3 {
    raw: RawS3,
}

impl S3 {
    /// A client for the gateway at `addr` with an access key.
    pub fn new(addr: &str, key: &str, secret: &str) -> S3 {
        S3 {
            raw: RawS3::new(addr, key, secret),
        }
    }

    /// One request; `Err` only when no reply came within `timeout`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        extra: &[(&str, String)],
        body: Bytes,
        timeout: Duration,
    ) -> anyhow::Result<S3Reply> {
        let resp = tokio::time::timeout(timeout, self.raw.send(method, path, extra, body, timeout))
            .await
            .context("no reply in time")??;
        let status = resp.status();
        let (body, cut) = drain(resp).await;
        Ok(S3Reply { status, body, cut })
    }

    /// PUT an object.
    pub async fn put(&self, bucket: &str, key: &str, body: Bytes) -> anyhow::Result<S3Reply> {
        self.send(
            Method::PUT,
            &format!("/{bucket}/{key}"),
            &[],
            body,
            Duration::from_secs(30),
        )
        .await
    }

    /// GET an object.
    pub async fn get(&self, bucket: &str, key: &str) -> anyhow::Result<S3Reply> {
        self.send(
            Method::GET,
            &format!("/{bucket}/{key}"),
            &[],
            Bytes::new(),
            Duration::from_secs(30),
        )
        .await
    }

    /// Creates `bucket` with erasure coding `ec` (e.g. `2+1`).
    pub async fn create_bucket(&self, bucket: &str, ec: &str) -> anyhow::Result<()> {
        let r = self
            .send(
                Method::PUT,
                &format!("/{bucket}"),
                &[("x-cairn-ec", ec.to_string())],
                Bytes::new(),
                Duration::from_secs(30),
            )
            .await?;
        if r.status != StatusCode::OK {
            bail!("create bucket {bucket}: {} {:?}", r.status, r.code());
        }
        Ok(())
    }
}

/// A cluster spread over hosts, with a gateway and an admin key: the
/// common start of the multi-host tests.
pub struct HostCluster {
    /// The gateway (dropped first).
    pub gateway: Proc,
    /// Metadata nodes and chunkservers.
    pub cluster: Cluster,
    /// S3 client through the gateway.
    pub s3: std::sync::Arc<S3>,
}

impl HostCluster {
    /// 3 metadata nodes and `net`'s chunkservers (each in its own zone),
    /// a gateway, an admin key; waits for every chunkserver to be up.
    pub async fn start(net: &Net, meta_flags: &[&str]) -> anyhow::Result<HostCluster> {
        let n = net.hosts.chunkservers.len();
        let cluster = Cluster::start_on(
            crate::cluster::Opts {
                metas: net.hosts.metas.len(),
                chunkservers: n,
                zones: n,
                meta_flags: meta_flags.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            Some(net.hosts.clone()),
        )?;
        cluster.wait_chunkservers_up(n).await?;
        let (key, secret) = crate::s3::admin_key(&cluster)?;
        let gateway = net.gateway(&cluster)?;
        let s3 = std::sync::Arc::new(S3::new(&gateway.addr_str(), &key, &secret));
        Ok(HostCluster {
            gateway,
            cluster,
            s3,
        })
    }

    /// Every process, for log checks.
    pub fn procs(&self) -> Vec<&Proc> {
        let c = &self.cluster;
        let mut v: Vec<&Proc> = c.metas.iter().chain(&c.chunkservers).collect();
        v.push(&self.gateway);
        v
    }
}

/// PUTs `body` and fails unless it was acknowledged (retrying 503s, which
/// clients do, for up to `within`).
pub async fn put_ok(
    s3: &S3,
    bucket: &str,
    key: &str,
    body: &[u8],
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let r = s3.put(bucket, key, Bytes::copy_from_slice(body)).await;
        match r {
            Ok(r) if r.status == StatusCode::OK => return Ok(()),
            Ok(r) if r.status == StatusCode::SERVICE_UNAVAILABLE && Instant::now() < deadline => {}
            Ok(r) => bail!("PUT {bucket}/{key}: {} {:?}", r.status, r.code()),
            Err(e) if Instant::now() < deadline => eprintln!("PUT {bucket}/{key}: {e:#}"),
            Err(e) => return Err(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GETs `key` and fails unless it reads back exactly `body` (retrying
/// 503s for up to `within`).
pub async fn get_same(
    s3: &S3,
    bucket: &str,
    key: &str,
    body: &[u8],
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let r = s3.get(bucket, key).await;
        match r {
            Ok(r) if r.status == StatusCode::OK => {
                if r.cut.is_some() || r.body != body {
                    bail!(
                        "GET {bucket}/{key}: {} bytes (cut: {:?}), want {} identical bytes",
                        r.body.len(),
                        r.cut,
                        body.len()
                    );
                }
                return Ok(());
            }
            Ok(r) if r.status == StatusCode::SERVICE_UNAVAILABLE && Instant::now() < deadline => {}
            Ok(r) => bail!("GET {bucket}/{key}: {} {:?}", r.status, r.code()),
            Err(e) if Instant::now() < deadline => eprintln!("GET {bucket}/{key}: {e:#}"),
            Err(e) => return Err(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Issue 15: the end-to-end path on separate hosts: S3 PUT/GET of inline
/// and erasure-coded objects through a gateway on its own host, then a
/// metadata leader killed (-9) and a chunkserver killed (-9): every
/// acknowledged object still reads back identical and new writes succeed.
#[test]
fn multi_host_put_get_leader_kill_chunkserver_kill() -> anyhow::Result<()> {
    let net = Net::new(3, 4)?;
    net.run(|| async {
        let mut hc = HostCluster::start(&net, &[]).await?;
        let s3 = &hc.s3;
        let t = Duration::from_secs(30);
        s3.create_bucket("hosts", "2+1").await?;
        let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
        for (i, len) in [100usize, 40 << 10, 3 << 20].into_iter().enumerate() {
            let key = format!("before-{i}");
            let body = crate::common::data(len, i as u64);
            put_ok(s3, "hosts", &key, &body, t).await?;
            get_same(s3, "hosts", &key, &body, t).await?;
            acked.push((key, body));
        }

        let l = hc.cluster.leader().await?;
        hc.cluster.metas[l].kill_9();
        for (i, len) in [200usize, 1 << 20].into_iter().enumerate() {
            let key = format!("no-leader-{i}");
            let body = crate::common::data(len, 10 + i as u64);
            put_ok(&hc.s3, "hosts", &key, &body, t).await?;
            acked.push((key, body));
        }
        for (k, b) in &acked {
            get_same(&hc.s3, "hosts", k, b, t).await?;
        }
        let new_leader = hc.cluster.leader().await?;
        assert_ne!(new_leader, l, "the killed node cannot lead");
        hc.cluster.metas[l].restart()?;

        hc.cluster.chunkservers[0].kill_9();
        for (k, b) in &acked {
            get_same(&hc.s3, "hosts", k, b, t).await?;
        }
        // 3 chunkservers left: 2+1 writes still find k + m distinct hosts.
        let body = crate::common::data(2 << 20, 20);
        put_ok(&hc.s3, "hosts", "after-cs-kill", &body, t).await?;
        get_same(&hc.s3, "hosts", "after-cs-kill", &body, t).await?;
        assert_no_panics(hc.procs())?;
        Ok(())
    })
}
