//! Network fault campaigns on the multi-host harness (`netns.rs`, issue
//! 16) against the metadata service: clients write and read a set of keys
//! through the S3 gateway (the workload and checks of `faults.rs`) while
//! the leader is cut off, paused, deafened or its link flaps; every
//! operation is recorded and the history is checked with the
//! linearizability checker; at the end every acknowledged object must read
//! back identical, every metadata node must converge and no log may show a
//! panic. Chunkserver campaigns are in `partition_cs.rs`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use cairn_metadata::client::Consistency;
use cairn_metadata::types::*;
use hyper::{Method, StatusCode};

use crate::cluster::{create_bucket, fake_manifest, Cluster};
use crate::common::{http, SECRET};
use crate::faults::{check_record, converged, new_leader, status, Workload, BUCKET};
use crate::netns::{assert_no_panics, put_ok, signal, HostCluster, Net};

/// A write sent straight to node `i` (no leader following, no retry):
/// whether it was acknowledged.
async fn write_at(c: &Cluster, i: usize, cmd: Command) -> anyhow::Result<bool> {
    let once = Command::Once {
        id: StripeId::random(),
        inner: Box::new(cmd),
    };
    let url = format!("http://{}/v1/write", c.meta_addrs[i]);
    let body = Bytes::from(serde_json::to_vec(&once)?);
    let r = http(Method::POST, &url, Some(SECRET), &[], body).await?;
    if r.status != StatusCode::OK {
        return Ok(false);
    }
    let res: CommandResult = serde_json::from_slice(&r.body).context("write reply")?;
    Ok(matches!(res, CommandResult::Ok))
}

/// A linearizable read sent straight to node `i`: the register's ETag
/// (`Some(None)`: absent), or `None` when the node gave no answer.
async fn read_at(c: &Cluster, i: usize, key: &str) -> anyhow::Result<Option<Option<String>>> {
    let url = format!("http://{}/v1/read", c.meta_addrs[i]);
    let q = Query::GetObject {
        bucket: "probe".into(),
        key: key.into(),
    };
    let body = Bytes::from(serde_json::to_vec(&q)?);
    let Ok(r) = http(Method::POST, &url, Some(SECRET), &[], body).await else {
        return Ok(None);
    };
    if r.status != StatusCode::OK {
        return Ok(None);
    }
    Ok(
        match serde_json::from_slice::<QueryResult>(&r.body).context("read reply")? {
            QueryResult::Object(m) => Some(Some(m.etag)),
            QueryResult::Err(MetaError::NoSuchKey { .. }) => Some(None),
            other => bail!("read at node {}: {other:?}", i + 1),
        },
    )
}

fn put_probe(key: &str, tag: &str) -> Command {
    Command::PutObject {
        bucket: "probe".into(),
        key: key.into(),
        manifest: fake_manifest(tag),
        condition: PutCondition::None,
    }
}

/// Issue 16: the metadata leader is cut off from the other two nodes and
/// from the gateway while S3 clients write through the gateway on the
/// majority side: the majority elects a leader and writes continue; writes
/// sent straight to the isolated old leader are never acknowledged (nor
/// visible later); after healing every node converges. Then the gateway is
/// cut off from the majority: every request it answers meanwhile is a 503
/// (SlowDown / ServiceUnavailable) within the metadata client's deadline,
/// never a wrong answer; after healing writes succeed again.
#[test]
fn leader_partition_then_gateway_partition() -> anyhow::Result<()> {
    let net = Net::new(3, 4)?;
    net.run(|| async {
        let hc = HostCluster::start(&net, &[]).await?;
        let c = &hc.cluster;
        hc.s3.create_bucket(BUCKET, "2+1").await?;
        create_bucket(&c.meta(), "probe").await?;
        let s3 = hc.s3.clone();
        let wl = Workload::start(s3.clone());
        tokio::time::sleep(Duration::from_secs(2)).await;

        // Phase 1: the leader alone on its side.
        let l = c.leader().await?;
        let term = status(c, l).await.context("leader status")?.term;
        let hosts = &net.hosts;
        let others: Vec<_> = (0..3).filter(|&i| i != l).collect();
        let mut majority: Vec<_> = others.iter().map(|&i| &hosts.metas[i]).collect();
        majority.push(&hosts.gateway);
        net.partition(&[&hosts.metas[l]], &majority)?;
        let cut = wl.now();
        eprintln!("partitioned leader node {} (term {term}) at {cut:?}", l + 1);
        // Writes straight to the isolated old leader, from the client
        // host (which still reaches it): none may be acknowledged.
        let probes: Vec<_> = (0..3)
            .map(|i| {
                let (addr, cmd) = (i, put_probe("isolated", &format!("old-leader-{i}")));
                async move {
                    tokio::time::sleep(Duration::from_millis(300 * addr as u64)).await;
                    write_at(c, l, cmd).await
                }
            })
            .collect();
        let probe_results = futures::future::join_all(probes);
        let elected = new_leader(c, l, term, Duration::from_secs(15));
        let (probe_results, elected) = tokio::join!(probe_results, elected);
        let nl = elected?;
        for r in probe_results {
            // No reply at all (timeout) also means not acknowledged.
            if let Ok(true) = r {
                bail!("the isolated old leader acknowledged a write");
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let acked = wl.acked_between(cut, wl.now());
        eprintln!(
            "new leader node {}; {acked} PUTs acknowledged during the partition",
            nl + 1
        );
        assert!(acked > 0, "writes must continue on the majority side");
        net.heal()?;
        converged(c, false).await?;
        match read_at(c, c.leader().await?, "isolated").await? {
            Some(None) => {}
            other => bail!("a write to the isolated leader became visible: {other:?}"),
        }

        // Phase 2: the gateway cut off from the majority (it still reaches
        // one follower, which can only point at a leader it cannot reach).
        let l = c.leader().await?;
        let f = (0..3).find(|&i| i != l).context("no follower")?;
        net.partition(&[&hosts.gateway], &[&hosts.metas[l], &hosts.metas[f]])?;
        let gw_cut = wl.now();
        tokio::time::sleep(Duration::from_secs(23)).await;
        // Taken before healing: the rules go away during `heal`.
        let gw_heal = wl.now();
        net.heal()?;
        put_ok(&s3, BUCKET, "after-heal", b"after", Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let start = wl.start;
        let rec = wl.finish().await?;
        let inside: Vec<_> = rec
            .outcomes
            .iter()
            .filter(|o| o.done > gw_cut + Duration::from_secs(1) && o.done < gw_heal)
            .collect();
        eprintln!(
            "{} requests answered while the gateway was cut off",
            inside.len()
        );
        assert!(
            !inside.is_empty(),
            "requests must fail in bounded time, not hang"
        );
        for o in &inside {
            let slow = matches!(o.code.as_deref(), Some("SlowDown" | "ServiceUnavailable"));
            if o.status != Some(StatusCode::SERVICE_UNAVAILABLE) || !slow {
                bail!(
                    "{} while the gateway was cut off ({gw_cut:?}..{gw_heal:?}): {o:?}",
                    o.what
                );
            }
            assert!(
                o.done - o.call < Duration::from_secs(25),
                "{} took {:?}",
                o.what,
                o.done - o.call
            );
        }
        check_record(&s3, start, rec).await?;
        converged(c, true).await?;
        assert_no_panics(hc.procs())?;
        Ok(())
    })
}

/// Issue 16: the leader is paused (SIGSTOP) for longer than the election
/// timeout while S3 clients keep writing, then resumed: the others elect a
/// leader; the resumed node steps down (learns the new term) and, asked
/// straight away, never serves a stale read nor acknowledges a write that
/// is then missing; the history stays linearizable.
#[test]
fn paused_leader_steps_down() -> anyhow::Result<()> {
    let net = Net::new(3, 4)?;
    net.run(|| async {
        let hc = HostCluster::start(&net, &[]).await?;
        let c = &hc.cluster;
        hc.s3.create_bucket(BUCKET, "2+1").await?;
        let meta = c.meta();
        create_bucket(&meta, "probe").await?;
        let s3 = hc.s3.clone();
        let wl = Workload::start(s3.clone());
        tokio::time::sleep(Duration::from_secs(2)).await;

        let l = c.leader().await?;
        let term = status(c, l).await.context("leader status")?.term;
        if meta.write(&put_probe("fence", "before")).await? != CommandResult::Ok {
            bail!("probe write failed");
        }
        signal(&c.metas[l], libc::SIGSTOP)?;
        let paused = wl.now();
        eprintln!("paused leader node {} (term {term})", l + 1);
        let nl = new_leader(c, l, term, Duration::from_secs(15)).await?;
        // A write the new leader commits while the old one sleeps.
        let fence = c.meta_at(nl);
        if fence.write(&put_probe("fence", "after")).await? != CommandResult::Ok {
            bail!("fence write failed");
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
        let acked = wl.acked_between(paused, wl.now());
        eprintln!(
            "new leader node {}; {acked} PUTs acknowledged during the pause",
            nl + 1
        );
        assert!(acked > 0, "writes must continue while the leader is paused");
        signal(&c.metas[l], libc::SIGCONT)?;
        // Ask the resumed node at once, concurrently: reads must see the
        // fence write or fail; writes it acknowledges must survive.
        let mut probes = Vec::new();
        for i in 0..8u64 {
            probes.push(async move {
                tokio::time::sleep(Duration::from_millis(100 * i)).await;
                let read = read_at(c, l, "fence").await;
                let tag = format!("resumed-{i}");
                let wrote = write_at(c, l, put_probe(&format!("resumed-{i}"), &tag)).await;
                (i, read, wrote)
            });
        }
        let mut acked_probes = Vec::new();
        for (i, read, wrote) in futures::future::join_all(probes).await {
            match read? {
                // No answer: fine, it had not caught up yet.
                None => {}
                Some(Some(v)) if v == "after" => {}
                other => bail!("the resumed old leader served a stale read: {other:?}"),
            }
            if let Ok(true) = wrote {
                acked_probes.push(i);
            }
        }
        // It stepped down: it knows a newer term than the one it led.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = status(c, l).await {
                if s.term > term {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("the resumed node never learned the new term");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Whatever it acknowledged after resuming is in the cluster's state.
        for i in &acked_probes {
            let q = Query::GetObject {
                bucket: "probe".into(),
                key: format!("resumed-{i}"),
            };
            match meta.query(&q, Consistency::Linearizable).await? {
                QueryResult::Object(m) if m.etag == format!("resumed-{i}") => {}
                other => bail!("write resumed-{i} acknowledged but missing: {other:?}"),
            }
        }
        eprintln!(
            "{} writes acknowledged by the resumed node",
            acked_probes.len()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let start = wl.start;
        let rec = wl.finish().await?;
        check_record(&s3, start, rec).await?;
        converged(c, true).await?;
        assert_no_panics(hc.procs())?;
        Ok(())
    })
}

/// Issue 16: the metadata leader can send but not receive (nftables drops
/// its input from every other host) while the workload runs: its appends
/// and heartbeats go out but no reply comes back, so it commits nothing;
/// the others elect a leader in a higher term and writes continue; after
/// healing the deaf node learns the new term and every node converges.
/// Then whichever node leads has its link taken down for 2.5 s (beyond
/// the election timeout) and up for 3 s, again and again for
/// `CAIRN_FAULT_SECS` (default 24): leadership moves on every flap, and
/// still every acknowledged write survives and the history is
/// linearizable.
#[test]
fn leader_deaf_then_flapping_leader_link() -> anyhow::Result<()> {
    let net = Net::new(3, 4)?;
    net.run(|| async {
        let hc = HostCluster::start(&net, &[]).await?;
        let c = &hc.cluster;
        hc.s3.create_bucket(BUCKET, "2+1").await?;
        let s3 = hc.s3.clone();
        let wl = Workload::start(s3.clone());
        tokio::time::sleep(Duration::from_secs(2)).await;

        // Deaf leader.
        let l = c.leader().await?;
        let term = status(c, l).await.context("leader status")?.term;
        let host = net.hosts.meta(l)?.clone();
        let others = net.others(&host);
        net.deafen(&host, &others.iter().collect::<Vec<_>>())?;
        let cut = wl.now();
        eprintln!("deafened leader node {} (term {term})", l + 1);
        let nl = new_leader(c, l, term, Duration::from_secs(15)).await?;
        eprintln!("new leader node {} after {:?}", nl + 1, wl.now() - cut);
        tokio::time::sleep(Duration::from_secs(4)).await;
        let acked = wl.acked_between(cut, wl.now());
        eprintln!("{acked} PUTs acknowledged while the old leader was deaf");
        assert!(acked > 0, "writes must continue on the new leader");
        net.heal()?;
        converged(c, false).await?;
        let s = status(c, l).await.context("old leader status")?;
        assert!(s.term > term, "the deaf leader must learn the new term");

        // Flapping leader link.
        let start = wl.now();
        let first = status(c, c.leader().await?)
            .await
            .context("leader status")?
            .term;
        let end = Instant::now() + crate::faults::fault_secs(24);
        let mut flaps = 0;
        while Instant::now() < end {
            let l = c.leader().await?;
            let host = net.hosts.meta(l)?;
            net.isolate(host)?;
            flaps += 1;
            tokio::time::sleep(Duration::from_millis(2500)).await;
            net.reconnect(host)?;
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        net.heal()?;
        converged(c, false).await?;
        let last = status(c, c.leader().await?)
            .await
            .context("leader status")?
            .term;
        let acked = wl.acked_between(start, wl.now());
        eprintln!("{flaps} flaps, terms {first} -> {last}, {acked} PUTs acknowledged");
        assert!(last > first, "isolating the leader must move leadership");
        assert!(acked > 0, "writes must continue while the leader flaps");
        put_ok(&s3, BUCKET, "after-heal", b"after", Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let start = wl.start;
        let rec = wl.finish().await?;
        check_record(&s3, start, rec).await?;
        converged(c, true).await?;
        assert_no_panics(hc.procs())?;
        Ok(())
    })
}
