//! Codec throughput: Reed-Solomon encode (4+2, 6+3, 10+4) and reconstruct
//! (1 and m shards lost) at 1 MiB shards, BLAKE3 over 1 MiB, and memcpy of
//! the same byte counts as the baseline.
//!
//! Throughput is the stripe's data bytes (k MiB) per second for encode and
//! reconstruct, the buffer size for BLAKE3 and memcpy. After the criterion
//! run a summary prints each figure in GB/s and as a ratio to memcpy of the
//! same number of bytes.
//!
//! Run: `cargo bench -p cairn-chunkserver --bench codec -- --warm-up-time 1
//! --measurement-time 2`.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use cairn_chunkserver::codec::{Codec, EcParams, DEFAULT_SHARD_SIZE};
use criterion::{BatchSize, Criterion, Throughput};

const MIB: usize = DEFAULT_SHARD_SIZE;
const PARAMS: [(u8, u8); 3] = [(4, 2), (6, 3), (10, 4)];

fn data(len: usize) -> Vec<u8> {
    // Cheap deterministic pseudo-random bytes (xorshift).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn codec(k: u8, m: u8) -> Codec {
    match EcParams::new(k, m)
        .map_err(|e| e.to_string())
        .and_then(|p| Codec::new(p).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => panic!("bad bench parameters {k}+{m}: {e}"),
    }
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for (k, m) in PARAMS {
        let codec = codec(k, m);
        let stripe = data(usize::from(k) * MIB);
        g.throughput(Throughput::Bytes(stripe.len() as u64));
        g.bench_function(format!("{k}+{m}"), |b| {
            b.iter(|| codec.encode(black_box(&stripe), MIB).map(|s| s.len()))
        });
    }
    g.finish();
}

fn bench_reconstruct(c: &mut Criterion) {
    let mut g = c.benchmark_group("reconstruct");
    for (k, m) in PARAMS {
        let codec = codec(k, m);
        let stripe = data(usize::from(k) * MIB);
        let shards: Vec<Vec<u8>> = match codec.encode(&stripe, MIB) {
            Ok(s) => s.iter().map(|b| b.to_vec()).collect(),
            Err(e) => panic!("encode: {e}"),
        };
        g.throughput(Throughput::Bytes(stripe.len() as u64));
        for lost in [1, m] {
            // Lose data shards: the expensive case (parity is cheaper).
            g.bench_function(format!("{k}+{m}-lose{lost}"), |b| {
                b.iter_batched(
                    || {
                        let mut v: Vec<Option<Vec<u8>>> =
                            shards.iter().cloned().map(Some).collect();
                        for s in v.iter_mut().take(usize::from(lost)) {
                            *s = None;
                        }
                        v
                    },
                    |mut v| {
                        let r = codec.reconstruct(&mut v);
                        (r.is_ok(), v)
                    },
                    BatchSize::LargeInput,
                )
            });
        }
    }
    g.finish();
}

fn bench_blake3(c: &mut Criterion) {
    let mut g = c.benchmark_group("blake3");
    let buf = data(MIB);
    g.throughput(Throughput::Bytes(MIB as u64));
    g.bench_function("1MiB", |b| b.iter(|| blake3::hash(black_box(&buf))));
    g.finish();
}

fn bench_memcpy(c: &mut Criterion) {
    let mut g = c.benchmark_group("memcpy");
    for mib in [1usize, 4, 6, 10] {
        let src = data(mib * MIB);
        let mut dst = vec![0u8; mib * MIB];
        g.throughput(Throughput::Bytes(src.len() as u64));
        g.bench_function(format!("{mib}MiB"), |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src));
                black_box(&mut dst);
            })
        });
    }
    g.finish();
}

/// Mean time per iteration, in ns, from criterion's saved estimates.
fn mean_ns(dir: &Path, group: &str, id: &str) -> Option<f64> {
    let path = dir.join(group).join(id).join("new").join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn summary(dir: &Path) {
    let gbps = |bytes: usize, ns: f64| bytes as f64 / ns;
    let memcpy =
        |mib: usize| mean_ns(dir, "memcpy", &format!("{mib}MiB")).map(|ns| gbps(mib * MIB, ns));
    let line = |name: String, bytes: usize, ns: Option<f64>, base: Option<f64>| match (ns, base) {
        (Some(ns), Some(base)) => {
            let g = gbps(bytes, ns);
            println!("{name:<22} {g:>8.2} GB/s   {:>6.3}x memcpy", g / base);
        }
        (Some(ns), None) => println!("{name:<22} {:>8.2} GB/s", gbps(bytes, ns)),
        _ => println!("{name:<22} (not measured in this run)"),
    };
    println!();
    println!("Summary (GB/s = 1e9 bytes/s of stripe data; ratio to memcpy of as many bytes)");
    for mib in [1usize, 4, 6, 10] {
        line(
            format!("memcpy {mib} MiB"),
            mib * MIB,
            mean_ns(dir, "memcpy", &format!("{mib}MiB")),
            None,
        );
    }
    line(
        "blake3 1 MiB".into(),
        MIB,
        mean_ns(dir, "blake3", "1MiB"),
        memcpy(1),
    );
    for (k, m) in PARAMS {
        let bytes = usize::from(k) * MIB;
        let base = memcpy(usize::from(k));
        line(
            format!("encode {k}+{m}"),
            bytes,
            mean_ns(dir, "encode", &format!("{k}+{m}")),
            base,
        );
        for lost in [1, m] {
            let id = format!("{k}+{m}-lose{lost}");
            line(
                format!("reconstruct {id}"),
                bytes,
                mean_ns(dir, "reconstruct", &id),
                base,
            );
        }
    }
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("criterion");
    let mut c = Criterion::default()
        .configure_from_args()
        .output_directory(&dir);
    bench_memcpy(&mut c);
    bench_blake3(&mut c);
    bench_encode(&mut c);
    bench_reconstruct(&mut c);
    c.final_summary();
    if std::env::args().any(|a| a == "--bench") {
        summary(&dir);
    }
}
