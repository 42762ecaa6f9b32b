//! `cairn bench limits`: this machine's ceilings, measured in the same
//! process as the load so a report can print "x% of the limit" (absolute
//! figures are noisy on shared machines; ratios from one run are what we
//! compare).
//!
//! Everything runs on one thread (the per-core rate is what bounds a
//! single request): memcpy, BLAKE3, EC encode at the bucket's k+m, the PUT
//! path's CPU work (encode + BLAKE3 of every shard) and the GET path's
//! (BLAKE3 of the data shards + one copy), one loopback TCP stream, and the
//! disk: fsync'd 4 MiB sequential writes and 4 KiB append+fdatasync.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_chunkserver::codec::{shard_len_for, Codec};
use cairn_metadata::types::EcParams;
use serde::Serialize;

/// Ceilings measured on this machine.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Limits {
    /// The erasure coding measured.
    pub ec: EcParams,
    /// memcpy, one thread, GB/s.
    pub memcpy_gbps: f64,
    /// BLAKE3 over 1 MiB buffers, one thread, GB/s.
    pub blake3_gbps: f64,
    /// EC encode of full stripes, one thread, GB/s of data.
    pub encode_gbps: f64,
    /// Copy + encode + BLAKE3 of every shard, one thread, GB/s of data: the
    /// CPU cost of the PUT path per core.
    pub put_cpu_gbps: f64,
    /// BLAKE3 of the data shards + one copy: the CPU cost of the GET path.
    pub get_cpu_gbps: f64,
    /// One loopback TCP stream (127.0.0.1, `TCP_NODELAY`), GB/s.
    pub loopback_tcp_gbps: f64,
    /// Sequential writes of 4 MiB each followed by fdatasync, MB/s.
    pub fsync_write_mbps: f64,
    /// 4 KiB appends each followed by fdatasync, per second.
    pub fsync_per_sec: f64,
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64().max(1e-9) / 1e9
}

/// Repeats `f` (each call processing `bytes`) for at least `min`, returns GB/s.
fn rate(bytes: u64, min: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < min {
        f();
        n += 1;
    }
    gbps(bytes * n, start.elapsed())
}

/// `len` pseudo-random bytes (xorshift: incompressible, cheap to make).
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ rand::random::<u64>();
    if x == 0 {
        x = 1;
    }
    for c in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        c.copy_from_slice(&b[..c.len()]);
    }
    v
}

/// One TCP stream over 127.0.0.1 (a socket pair with `TCP_NODELAY`, 1 MiB
/// writes), GB/s. This measures the kernel, so it uses plain std sockets
/// rather than the HTTP plumbing.
fn loopback_tcp(src: &[u8], min: Duration) -> anyhow::Result<f64> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    });
    let chunk = &src[..src.len().min(1 << 20)];
    let mut s = std::net::TcpStream::connect(addr).context("connect 127.0.0.1")?;
    s.set_nodelay(true)?;
    // Warm up (slow start, buffers), then time.
    for _ in 0..16 {
        s.write_all(chunk)?;
    }
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < min {
        s.write_all(chunk)?;
        sent += chunk.len() as u64;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let received = reader
        .join()
        .map_err(|_| anyhow::anyhow!("loopback reader panicked"))??;
    let elapsed = start.elapsed();
    anyhow::ensure!(
        received >= sent,
        "loopback TCP lost data: sent {sent}, received {received}"
    );
    Ok(gbps(sent, elapsed))
}

/// fsync'd sequential 4 MiB writes (MB/s) and 4 KiB append+fdatasync
/// (per second) in `dir`.
fn disk(dir: &std::path::Path, src: &[u8]) -> anyhow::Result<(f64, f64)> {
    let path = dir.join(format!(".cairn-bench-{}", std::process::id()));
    let res = (|| -> anyhow::Result<(f64, f64)> {
        let mut f = std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let block = &src[..src.len().min(4 << 20)];
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs(1) && n < 256 {
            f.write_all(block)?;
            f.sync_data()?;
            n += 1;
        }
        let mbps = (n * block.len() as u64) as f64 / start.elapsed().as_secs_f64() / 1e6;
        drop(f);
        let mut f = std::fs::File::create(&path)?;
        let small = &src[..4096];
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs(1) {
            f.write_all(small)?;
            f.sync_data()?;
            n += 1;
        }
        Ok((mbps, n as f64 / start.elapsed().as_secs_f64()))
    })();
    let _ = std::fs::remove_file(&path);
    res
}

/// Measures the ceilings (takes about six seconds; blocking: call it from
/// a blocking thread).
pub fn measure_limits(ec: EcParams, dir: &std::path::Path) -> anyhow::Result<Limits> {
    ec.validate().map_err(|e| anyhow::anyhow!("{}", e.0))?;
    let t = Duration::from_millis(600);
    let stripe = usize::from(ec.k) << 20;
    let src = random_bytes(stripe.max(4 << 20));
    let src_stripe = &src[..stripe];
    let mut dst = vec![0u8; stripe];
    let memcpy_gbps = rate(stripe as u64, t, || {
        dst.copy_from_slice(src_stripe);
        std::hint::black_box(&dst);
    });
    let blake3_gbps = rate(1 << 20, t, || {
        std::hint::black_box(blake3::hash(&src[..1 << 20]));
    });
    let codec = Codec::new(ec)?;
    let shard_len = shard_len_for(stripe, ec.k);
    let encode_gbps = rate(stripe as u64, t, || {
        std::hint::black_box(codec.encode(src_stripe, shard_len).ok());
    });
    let put_cpu_gbps = rate(stripe as u64, t, || {
        if let Ok(shards) = codec.encode(src_stripe, shard_len) {
            for s in &shards {
                std::hint::black_box(blake3::hash(s));
            }
        }
    });
    let get_cpu_gbps = rate(stripe as u64, t, || {
        for s in src_stripe.chunks(shard_len) {
            std::hint::black_box(blake3::hash(s));
        }
        dst.copy_from_slice(src_stripe);
        std::hint::black_box(&dst);
    });
    let loopback_tcp_gbps = loopback_tcp(&src, t).context("loopback TCP test")?;
    let (fsync_write_mbps, fsync_per_sec) = disk(dir, &src).context("disk test")?;
    Ok(Limits {
        ec,
        memcpy_gbps,
        blake3_gbps,
        encode_gbps,
        put_cpu_gbps,
        get_cpu_gbps,
        loopback_tcp_gbps,
        fsync_write_mbps,
        fsync_per_sec,
    })
}

/// The limits as a human-readable block.
pub fn limits_table(l: &Limits) -> String {
    format!(
        "machine limits (one thread, ec {ec}):\n\
         \x20 memcpy                      {:>8.2} GB/s\n\
         \x20 BLAKE3                      {:>8.2} GB/s\n\
         \x20 EC encode {ec:<18}{:>8.2} GB/s\n\
         \x20 copy+encode+BLAKE3 (PUT)    {:>8.2} GB/s\n\
         \x20 copy+BLAKE3 (GET)           {:>8.2} GB/s\n\
         \x20 loopback TCP (one stream)   {:>8.2} GB/s\n\
         \x20 fsync'd sequential write    {:>8.0} MB/s\n\
         \x20 4 KiB write+fdatasync       {:>8.0} /s\n",
        l.memcpy_gbps,
        l.blake3_gbps,
        l.encode_gbps,
        l.put_cpu_gbps,
        l.get_cpu_gbps,
        l.loopback_tcp_gbps,
        l.fsync_write_mbps,
        l.fsync_per_sec,
        ec = l.ec.to_string(),
    )
}
