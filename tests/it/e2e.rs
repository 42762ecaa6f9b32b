//! End to end: metadata cluster + chunkservers + client library + CLI, as
//! real processes; kill, corrupt, and check what a user sees.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use cairn_client::{ClientError, PutOptions};
use cairn_metadata::client::Consistency;
use cairn_metadata::types::*;
use futures::StreamExt;

use crate::cluster::{Cluster, Opts};
use crate::common::data;

fn six() -> Opts {
    Opts {
        chunkservers: 6,
        zones: 3,
        ..Default::default()
    }
}

async fn get_all(
    c: &cairn_client::Client,
    bucket: &str,
    key: &str,
) -> Result<Vec<u8>, ClientError> {
    let (_, mut s) = c.get(bucket, key, None).await?;
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

async fn ready(c: &Cluster) -> anyhow::Result<cairn_client::Client> {
    c.wait_chunkservers_up(c.chunkservers.len()).await?;
    let client = c.client();
    client
        .create_bucket("bkt", EcParams::default(), 1 << 20)
        .await?;
    Ok(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sizes_round_trip_and_ranges() -> anyhow::Result<()> {
    let c = Cluster::start(six())?;
    let client = ready(&c).await?;
    let stripe = 4 << 20;
    for (i, len) in [
        0usize,
        1,
        1000,
        stripe - 1,
        stripe,
        stripe + 1,
        3 * stripe + 12345,
    ]
    .into_iter()
    .enumerate()
    {
        let body = data(len, i as u64);
        let key = format!("obj-{len}");
        let m = client
            .put(
                "bkt",
                &key,
                &body[..],
                PutOptions {
                    md5: true,
                    ..Default::default()
                },
            )
            .await?;
        assert_eq!(m.size, len as u64);
        if len <= cairn_client::DEFAULT_INLINE_MAX {
            assert!(m.inline.is_some() && m.stripes.is_empty(), "{key} inline");
        } else {
            assert!(m.inline.is_none(), "{key} not inline");
            assert_eq!(m.stripes.len(), len.div_ceil(stripe));
        }
        assert_eq!(m.etag, md5_hex(&body));
        let got = get_all(&client, "bkt", &key).await?;
        assert!(got == body, "{key} differs");
        // Ranges across stripe and shard boundaries.
        if len > 10 {
            for (a, b) in [
                (0, 1),
                (len as u64 / 3, len as u64 / 2),
                ((len - 1) as u64, len as u64),
                (0, len as u64),
            ] {
                let (_, mut s) = client.get("bkt", &key, Some(a..b)).await?;
                let mut out = Vec::new();
                while let Some(ch) = s.next().await {
                    out.extend_from_slice(&ch?);
                }
                assert_eq!(out, body[a as usize..b as usize], "{key} range {a}..{b}");
            }
        }
    }
    // A range past the end is a clear error.
    assert!(matches!(
        client.get("bkt", "obj-1000", Some(10..2000)).await,
        Err(ClientError::InvalidRange(_))
    ));
    assert!(matches!(
        get_all(&client, "bkt", "missing").await,
        Err(ClientError::NoSuchKey { .. })
    ));
    assert!(matches!(
        get_all(&client, "nobucket", "k").await,
        Err(ClientError::NoSuchBucket(_))
    ));
    // Overwrite replaces atomically; delete hides it.
    client
        .put("bkt", "obj-1", &b"new"[..], PutOptions::default())
        .await?;
    assert_eq!(get_all(&client, "bkt", "obj-1").await?, b"new");
    client.delete("bkt", "obj-1").await?;
    assert!(matches!(
        client.head("bkt", "obj-1").await,
        Err(ClientError::NoSuchKey { .. })
    ));
    objects_of_more_than_a_page_of_stripes(&client).await
}

async fn read_range(
    c: &cairn_client::Client,
    key: &str,
    r: Option<std::ops::Range<u64>>,
) -> anyhow::Result<Vec<u8>> {
    let (_, mut s) = c.get("paged", key, r).await?;
    let mut out = Vec::new();
    while let Some(ch) = s.next().await {
        out.extend_from_slice(&ch?);
    }
    Ok(out)
}

/// Objects of more than `STRIPE_PAGE_MAX` stripes (a bucket of 8 KiB
/// stripes stands in for a 5 TiB object of 4 MiB ones): the head carries
/// only the first page, the read pages through the stripe rows as it goes,
/// for a single PUT and for a multipart object whose page boundary falls
/// inside its second part; and a read whose version is overwritten before
/// it reaches the second page ends with an error, never with the new
/// version's bytes.
async fn objects_of_more_than_a_page_of_stripes(
    client: &cairn_client::Client,
) -> anyhow::Result<()> {
    let stripe = 8u64 << 10;
    client
        .create_bucket("paged", EcParams { k: 2, m: 1 }, 4 << 10)
        .await?;
    let page = u64::from(STRIPE_PAGE_MAX);
    let len = (page + 65) * stripe + 123;
    let body = data(len as usize, 77);
    client
        .put("paged", "single", &body[..], PutOptions::default())
        .await?;
    let head = client.head("paged", "single").await?;
    assert_eq!(head.stripes.len() as u64, page, "the head holds one page");
    assert_eq!(cairn_client::read::stripe_count(&head)?, page + 66);
    let cut = page * stripe;
    for r in [
        None,
        Some(0..1),
        Some(cut - 5..cut + 5),
        Some(cut..cut + stripe),
        Some(cut + 3..len),
        Some(len - 1..len),
    ] {
        let got = read_range(client, "single", r.clone()).await?;
        let want = match &r {
            Some(r) => &body[r.start as usize..r.end as usize],
            None => &body[..],
        };
        assert!(got == want, "single range {r:?} differs");
    }
    // The stripe listing of `cairn stat` pages the same way.
    let mut rows = head.stripes.clone();
    rows.extend(
        client
            .stripes("paged", "single", head.version, page, 1024)
            .await?,
    );
    assert_eq!(rows.len() as u64, page + 66);
    assert_eq!(rows.iter().map(|s| s.len).sum::<u64>(), len);

    // Multipart: 5 MiB (640 stripes) + 3.5 MiB and a bit (449 stripes, the
    // last one short); stripe 1024 is the 385th of part 2.
    let part1 = data(5 << 20, 78);
    let part2 = data((7 << 19) + 4567, 79);
    let up = client
        .create_upload("paged", "multi", &PutOptions::default(), None, None, "")
        .await?;
    let mut parts = Vec::new();
    for (n, b) in [(1u32, &part1), (2, &part2)] {
        let p = client
            .upload_part("paged", "multi", up.id, n, &b[..], Default::default())
            .await?;
        parts.push(CompletePart {
            number: n,
            etag: p.etag,
        });
    }
    let m = client
        .complete_upload(
            "paged",
            "multi",
            up.id,
            parts,
            Default::default(),
            PutCondition::None,
        )
        .await?;
    let whole: Vec<u8> = [&part1[..], &part2[..]].concat();
    let total = whole.len() as u64;
    assert_eq!(m.stripes.len() as u64, page);
    assert_eq!(cairn_client::read::stripe_count(&m)?, 640 + 449);
    let p1 = part1.len() as u64;
    let mcut = p1 + 384 * stripe;
    for r in [
        None,
        Some(p1 - 1..p1 + 1),
        Some(mcut - 9..mcut + 9),
        Some(mcut + 1..total),
        Some(total - 4567..total),
    ] {
        let got = read_range(client, "multi", r.clone()).await?;
        let want = match &r {
            Some(r) => &whole[r.start as usize..r.end as usize],
            None => &whole[..],
        };
        assert!(got == want, "multi range {r:?} differs");
    }

    // Overwritten mid-read: the first page was the old version's, the
    // second is gone; the stream ends with an error.
    let (_, mut s) = client.get("paged", "single", None).await?;
    let mut got = Vec::new();
    match s.next().await {
        Some(Ok(ch)) => got.extend_from_slice(&ch),
        other => anyhow::bail!("first chunk: {other:?}"),
    }
    client
        .put("paged", "single", &b"replaced"[..], PutOptions::default())
        .await?;
    let mut failed = false;
    while let Some(ch) = s.next().await {
        match ch {
            Ok(ch) => got.extend_from_slice(&ch),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(
        failed,
        "a read of an overwritten version must not end cleanly"
    );
    assert!(got.len() as u64 <= cut && got[..] == body[..got.len()]);
    assert_eq!(read_range(client, "single", None).await?, b"replaced");
    Ok(())
}

fn md5_hex(b: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_survive_two_dead_chunkservers_and_fail_cleanly_at_three() -> anyhow::Result<()> {
    let mut c = Cluster::start(six())?;
    let client = ready(&c).await?;
    let mut objects = Vec::new();
    for i in 0..5 {
        let body = data(3 * (1 << 20) + i * 7919, 100 + i as u64);
        client
            .put("bkt", &format!("o{i}"), &body[..], PutOptions::default())
            .await?;
        objects.push(body);
    }
    c.chunkservers[0].kill_9();
    c.chunkservers[3].kill_9();
    for (i, body) in objects.iter().enumerate() {
        let got = get_all(&client, "bkt", &format!("o{i}")).await?;
        assert!(&got == body, "o{i} differs with two chunkservers down");
    }
    c.chunkservers[5].kill_9();
    for i in 0..objects.len() {
        match get_all(&client, "bkt", &format!("o{i}")).await {
            Err(ClientError::NotEnoughShards { have, need, .. }) => {
                assert!(have < need);
            }
            other => panic!("expected NotEnoughShards, got {:?}", other.map(|v| v.len())),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_shard_is_read_around_and_reported() -> anyhow::Result<()> {
    let c = Cluster::start(six())?;
    let client = ready(&c).await?;
    let body = data(2 * (4 << 20) + 99, 7);
    let m = client
        .put("bkt", "victim", &body[..], PutOptions::default())
        .await?;
    // Flip a byte in the payload of data shard 1 of stripe 1.
    let loc = &m.stripes[1].shards[1];
    let cs = loc.chunkserver.expect("placed");
    let servers = client.chunkservers().await?;
    let addr = &servers.iter().find(|s| s.id == cs).expect("known").addr;
    let idx = c
        .chunkservers
        .iter()
        .position(|p| &p.addr_str() == addr)
        .expect("ours");
    let hex = loc.shard.to_string();
    let path = c
        .cs_data(idx)
        .join("shards")
        .join(&hex[0..2])
        .join(&hex[2..4])
        .join(&hex);
    let mut bytes = std::fs::read(&path)?;
    let last = bytes.len() - 10;
    bytes[last] ^= 0x40;
    std::fs::write(&path, &bytes)?;
    let got = get_all(&client, "bkt", "victim").await?;
    assert!(got == body, "corrupt shard leaked into the read");
    // The chunkserver quarantined the bad copy rather than serving it
    // again, and the read reported it: it is in the repair queue, or the
    // automatic repair already rebuilt it (a verified copy, never the
    // corrupt bytes).
    let quarantined = std::fs::read_dir(c.cs_data(idx).join("quarantine"))?
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains(&hex));
    assert!(quarantined, "corrupt shard not quarantined");
    if let Ok(now) = std::fs::read(&path) {
        assert!(
            now != bytes,
            "corrupt shard still live at {}",
            path.display()
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let q = c
            .meta()
            .query(
                &Query::RepairQueue { limit: 100 },
                Consistency::Linearizable,
            )
            .await?;
        let QueryResult::Repairs(items) = q else {
            panic!("{q:?}")
        };
        let queued = items.iter().any(|r| {
            r.key == "victim" && r.stripe == 1 && r.index == 1 && r.reason.contains("corrupt")
        });
        let (now, _) = client.get("bkt", "victim", None).await?;
        let moved = now.stripes[1].shards[1].chunkserver != Some(cs);
        let rebuilt_in_place = std::fs::read(&path).is_ok_and(|b| b != bytes);
        if queued || moved || rebuilt_in_place {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not reported: {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(get_all(&client, "bkt", "victim").await? == body);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_uploads_survive_a_leader_kill() -> anyhow::Result<()> {
    let mut c = Cluster::start(six())?;
    let client = ready(&c).await?;
    let mut acked = Vec::new();
    for i in 0..200u64 {
        if i == 60 {
            let l = c.leader().await?;
            c.metas[l].kill_9();
        }
        if i == 140 {
            for m in &mut c.metas {
                if m.pid().is_none() {
                    m.restart()?;
                }
            }
        }
        let body = data(20_000 + (i as usize * 997) % 50_000, i);
        if client
            .put("bkt", &format!("u{i}"), &body[..], PutOptions::default())
            .await
            .is_ok()
        {
            acked.push((i, body));
        }
    }
    assert!(
        acked.len() >= 150,
        "only {} of 200 uploads acknowledged",
        acked.len()
    );
    for (i, body) in &acked {
        let got = get_all(&client, "bkt", &format!("u{i}")).await?;
        assert!(&got == body, "u{i} differs");
    }
    Ok(())
}

fn write_random_file(path: &Path, len: usize) -> anyhow::Result<blake3::Hash> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut h = blake3::Hasher::new();
    let chunk = 1 << 20;
    let mut done = 0;
    let mut seed = 1u64;
    while done < len {
        let n = chunk.min(len - done);
        let d = data(n, seed);
        seed += 1;
        h.update(&d);
        f.write_all(&d)?;
        done += n;
    }
    f.flush()?;
    Ok(h.finalize())
}

fn hash_file(path: &Path) -> anyhow::Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path)?)?;
    Ok(h.finalize())
}

fn peak_rss_mib(stderr: &[u8]) -> Option<u64> {
    let s = String::from_utf8_lossy(stderr);
    s.lines()
        .find_map(|l| l.strip_prefix("cairn: peak RSS "))
        .and_then(|v| v.trim().trim_end_matches(" KiB").parse::<u64>().ok())
        .map(|kib| kib / 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_big_file_round_trip_in_bounded_memory() -> anyhow::Result<()> {
    let c = Cluster::start(six())?;
    ready(&c).await?;
    let mib: usize = std::env::var("CAIRN_IT_BIG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let src = c.dir.path().join("big.bin");
    let want = write_random_file(&src, mib << 20)?;
    let out = c.cli_env(
        &["put", src.to_str().unwrap(), "cairn://bkt/big.bin"],
        &[("CAIRN_REPORT_RSS", "1")],
    )?;
    assert!(
        out.status.success(),
        "put failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let put_rss = peak_rss_mib(&out.stderr).expect("rss reported");
    let dst = c.dir.path().join("back.bin");
    let out = c.cli_env(
        &["get", "cairn://bkt/big.bin", dst.to_str().unwrap()],
        &[("CAIRN_REPORT_RSS", "1")],
    )?;
    assert!(
        out.status.success(),
        "get failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let get_rss = peak_rss_mib(&out.stderr).expect("rss reported");
    assert_eq!(hash_file(&dst)?, want, "downloaded file differs");
    eprintln!("{mib} MiB: put peak RSS {put_rss} MiB, get peak RSS {get_rss} MiB");
    assert!(put_rss < 300, "put peak RSS {put_rss} MiB");
    assert!(get_rss < 300, "get peak RSS {get_rss} MiB");
    Ok(())
}

/// Runs the CLI against `c` with `input` on its standard input.
fn cli_stdin(c: &Cluster, args: &[&str], input: &[u8]) -> anyhow::Result<std::process::Output> {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_METADATA", c.meta_addrs.join(","))
        .env("CAIRN_SECRET", crate::common::SECRET)
        .env("CAIRN_CONFIG", c.dir.path().join("no-config.json"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input)?;
    }
    Ok(child.wait_with_output()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_commands_and_json() -> anyhow::Result<()> {
    let c = Cluster::start(six())?;
    c.wait_chunkservers_up(6).await?;
    let ok = |out: std::process::Output| -> anyhow::Result<String> {
        anyhow::ensure!(
            out.status.success(),
            "cairn failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Not a terminal: no progress-bar escape codes.
        anyhow::ensure!(
            !out.stderr.contains(&0x1b),
            "escape codes on stderr: {:?}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    ok(c.cli(&["mb", "cairn://cli", "--ec", "3+2"])?)?;
    let dir = c.dir.path().join("tree");
    std::fs::create_dir_all(dir.join("sub/deeper"))?;
    std::fs::write(dir.join("a.txt"), b"alpha")?;
    std::fs::write(dir.join("sub/b.txt"), data(100_000, 3))?;
    std::fs::write(dir.join("sub/deeper/c.bin"), data(5 << 20, 4))?;
    ok(c.cli(&[
        "put",
        dir.join("a.txt").to_str().unwrap(),
        "cairn://cli/one/a.txt",
    ])?)?;
    ok(c.cli(&["cp", "-r", dir.to_str().unwrap(), "cairn://cli/tree/"])?)?;
    let ls = ok(c.cli(&["ls", "cairn://cli/tree/", "--json"])?)?;
    let v: serde_json::Value = serde_json::from_str(&ls)?;
    let keys: Vec<&str> = v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["tree/a.txt"]);
    assert_eq!(v["common_prefixes"], serde_json::json!(["tree/sub/"]));
    let ls = ok(c.cli(&["ls", "-r", "cairn://cli/tree/", "--json"])?)?;
    let v: serde_json::Value = serde_json::from_str(&ls)?;
    assert_eq!(v["objects"].as_array().unwrap().len(), 3);
    let stat = ok(c.cli(&["stat", "cairn://cli/tree/sub/deeper/c.bin", "--json"])?)?;
    let m: ObjectManifest = serde_json::from_str(&stat)?;
    assert_eq!(m.size, 5 << 20);
    assert_eq!(m.ec, EcParams { k: 3, m: 2 });
    assert_eq!(m.stripes.len(), 2);
    assert!(m
        .stripes
        .iter()
        .all(|s| s.shards.len() == 5 && s.shards.iter().all(|l| l.chunkserver.is_some())));
    let human = ok(c.cli(&["stat", "cairn://cli/tree/sub/deeper/c.bin"])?)?;
    assert!(
        human.contains("stripe 1") && human.contains("parity"),
        "{human}"
    );
    let back = c.dir.path().join("back");
    ok(c.cli(&["cp", "-r", "cairn://cli/tree/", back.to_str().unwrap()])?)?;
    assert_eq!(
        std::fs::read(back.join("sub/deeper/c.bin"))?,
        data(5 << 20, 4)
    );
    assert_eq!(std::fs::read(back.join("a.txt"))?, b"alpha");
    // stdout.
    let cat = c.cli(&["get", "cairn://cli/one/a.txt", "-"])?;
    assert_eq!(cat.stdout, b"alpha");
    // Errors are clear and non-zero.
    let missing = c.cli(&["get", "cairn://cli/nope", "-"])?;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such key"));

    // Large inputs go in parts (a PUT holds at most 5 GiB): a file over
    // the threshold, and standard input when a part size is given.
    let big = data(12 << 20, 9);
    let big_path = c.dir.path().join("big.bin");
    std::fs::write(&big_path, &big)?;
    let args = ["--multipart-threshold-mib", "5", "--part-size-mib", "5"];
    let mut cp = vec![
        "cp",
        big_path.to_str().unwrap(),
        "cairn://cli/parts/file.bin",
    ];
    cp.extend(args);
    ok(c.cli(&cp)?)?;
    ok(cli_stdin(
        &c,
        &[
            "cp",
            "-",
            "cairn://cli/parts/stdin.bin",
            "--part-size-mib",
            "5",
        ],
        &big,
    )?)?;
    for key in ["file.bin", "stdin.bin"] {
        let url = format!("cairn://cli/parts/{key}");
        let stat = ok(c.cli(&["stat", &url, "--json"])?)?;
        let v: serde_json::Value = serde_json::from_str(&stat)?;
        assert!(
            v["etag"].as_str().unwrap_or("").ends_with("-3"),
            "{key}: {v}"
        );
        assert_eq!(v["parts"].as_array().map(|p| p.len()), Some(3), "{key}");
        assert_eq!(v["size"], 12 << 20);
        let out = c.dir.path().join(format!("back-{key}"));
        ok(c.cli(&["cp", &url, out.to_str().unwrap()])?)?;
        assert!(std::fs::read(&out)? == big, "{key} differs");
    }
    // Without a part size, standard input is one PUT.
    ok(cli_stdin(
        &c,
        &["cp", "-", "cairn://cli/parts/small.bin"],
        &big[..100_000],
    )?)?;
    let stat = ok(c.cli(&["stat", "cairn://cli/parts/small.bin", "--json"])?)?;
    let v: serde_json::Value = serde_json::from_str(&stat)?;
    assert!(!v["etag"].as_str().unwrap_or("-").contains('-'), "{v}");
    assert_eq!(v["stripe_count"], 1);

    let nonempty = c.cli(&["rb", "cairn://cli"])?;
    assert!(!nonempty.status.success());
    assert!(String::from_utf8_lossy(&nonempty.stderr).contains("not empty"));
    ok(c.cli(&["rm", "-r", "cairn://cli/"])?)?;
    let ls = ok(c.cli(&["ls", "-r", "cairn://cli", "--json"])?)?;
    let v: serde_json::Value = serde_json::from_str(&ls)?;
    assert_eq!(v["objects"].as_array().unwrap().len(), 0);
    ok(c.cli(&["rb", "cairn://cli"])?)?;
    let buckets = ok(c.cli(&["ls", "--json"])?)?;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&buckets)?,
        serde_json::json!([])
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}

/// Small objects live in their manifest: no shard is written for them, the
/// threshold is exact, ranges and overwrites work, and they survive the loss
/// of the metadata leader (Raft replicates them) and of chunkservers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_objects_are_inline_and_survive_a_leader_kill() -> anyhow::Result<()> {
    let mut c = Cluster::start(six())?;
    let client = ready(&c).await?;
    let max = cairn_client::DEFAULT_INLINE_MAX;
    let shard_files = |c: &Cluster| -> usize {
        (0..c.chunkservers.len())
            .map(|i| count_shard_files(&c.cs_data(i)))
            .sum()
    };
    let before = shard_files(&c);
    let mut bodies = Vec::new();
    for (i, len) in [0usize, 1, 4096, max - 1, max].into_iter().enumerate() {
        let body = data(len, 500 + i as u64);
        let key = format!("small-{len}");
        let m = client
            .put("bkt", &key, &body[..], PutOptions::default())
            .await?;
        assert!(m.inline.is_some(), "{key} should be inline");
        assert!(m.stripes.is_empty());
        bodies.push((key, body));
    }
    assert_eq!(shard_files(&c), before, "inline objects write no shards");
    // One byte over the threshold: erasure coded.
    let big = data(max + 1, 9);
    let m = client
        .put("bkt", "over", &big[..], PutOptions::default())
        .await?;
    assert!(m.inline.is_none());
    assert_eq!(m.stripes.len(), 1);
    assert!(shard_files(&c) > before);
    // Ranges over inline data.
    let (_, mut s) = client.get("bkt", "small-4096", Some(100..4000)).await?;
    let mut out = Vec::new();
    while let Some(ch) = s.next().await {
        out.extend_from_slice(&ch?);
    }
    assert_eq!(out, bodies[2].1[100..4000]);
    assert!(matches!(
        client.get("bkt", "small-4096", Some(100..5000)).await,
        Err(ClientError::InvalidRange(_))
    ));
    // Kill the metadata leader and a chunkserver: inline objects are in the
    // replicated manifests, not on chunkservers.
    let leader = c.leader().await?;
    c.metas[leader].kill_9();
    c.chunkservers[0].kill_9();
    for (key, body) in &bodies {
        let got = get_all(&client, "bkt", key).await?;
        assert!(&got == body, "{key} differs after the leader kill");
    }
    // Overwrite an inline object with a striped one and back.
    client
        .put("bkt", "small-1", &big[..], PutOptions::default())
        .await?;
    assert_eq!(get_all(&client, "bkt", "small-1").await?, big);
    client
        .put("bkt", "small-1", &b"x"[..], PutOptions::default())
        .await?;
    assert_eq!(get_all(&client, "bkt", "small-1").await?, b"x");
    Ok(())
}

/// Shard files (named by their 32-hex-digit id) under `dir`, recursively.
fn count_shard_files(dir: &Path) -> usize {
    let mut n = 0;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            n += count_shard_files(&p);
        } else if p
            .file_name()
            .and_then(|f| f.to_str())
            .is_some_and(|f| f.len() == 32 && f.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            n += 1;
        }
    }
    n
}
