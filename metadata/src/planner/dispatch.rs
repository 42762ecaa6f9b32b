//! Dispatch: choosing a target for each candidate shard, most urgent first,
//! and recording the task until the target's next heartbeat reply carries
//! it.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::scan::{Candidate, Env};
use super::{PlannerConfig, ShardKey, State, StripeKey};
use crate::model;
use crate::types::*;

/// Dispatches `cands` (most urgent first) under the placement invariant and
/// the per-target limit; returns how many tasks it created.
pub(super) fn dispatch(
    txn: &redb::ReadTransaction,
    env: &Env,
    cfg: PlannerConfig,
    s: &mut State,
    cands: Vec<Candidate>,
    now: Instant,
) -> Result<u64, redb::Error> {
    let servers = &env.servers;
    let rules = &env.rules;
    let mut dispatched = 0u64;
    let mut load: HashMap<ChunkserverId, usize> = HashMap::new();
    let mut stripe_targets: HashMap<StripeKey, Vec<(u8, ChunkserverId)>> = HashMap::new();
    for f in s.in_flight.values() {
        *load.entry(f.target).or_insert(0) += 1;
        stripe_targets
            .entry((f.task.version, f.task.stripe))
            .or_default()
            .push((f.task.index, f.target));
    }
    let up: Vec<&ChunkserverInfo> = servers
        .values()
        .filter(|c| c.state == ChunkserverState::Up)
        .collect();
    let mut blocked: Option<(u8, i32)> = None;
    for c in cands {
        let ctx = &c.ctx;
        if blocked.is_some_and(|b| (c.class, c.redundancy) > b) {
            break;
        }
        let skey: ShardKey = (ctx.version, ctx.stripe, c.index);
        if s.finished.contains(&skey) || s.busy.contains_key(&skey) {
            continue;
        }
        let Some(loc) = ctx.manifest.shards.get(usize::from(c.index)) else {
            continue;
        };
        let shard_len = ctx.manifest.len.div_ceil(u64::from(ctx.ec.k.max(1)));
        // Who holds what of this stripe (healthy copies and planned ones).
        let mut holds: HashMap<ChunkserverId, usize> = HashMap::new();
        let mut zones: HashSet<&str> = HashSet::new();
        for (i, l) in ctx.manifest.shards.iter().enumerate() {
            if let (true, Some(cs)) = (ctx.healthy.get(i).copied().unwrap_or(false), l.chunkserver)
            {
                *holds.entry(cs).or_insert(0) += 1;
                if let Some(info) = servers.get(&cs) {
                    zones.insert(info.zone.as_str());
                }
            }
        }
        // The stripe's placement once the tasks in flight commit: what a
        // new target is checked against (as `CommitRepair` will check it).
        let mut planned: Vec<Option<ChunkserverId>> =
            ctx.manifest.shards.iter().map(|l| l.chunkserver).collect();
        for (i, t) in stripe_targets
            .get(&(ctx.version, ctx.stripe))
            .into_iter()
            .flatten()
        {
            *holds.entry(*t).or_insert(0) += 1;
            if let Some(info) = servers.get(t) {
                zones.insert(info.zone.as_str());
            }
            if let Some(l) = planned.get_mut(usize::from(*i)) {
                *l = Some(*t);
            }
        }
        let cap = rules.cap(ctx.ec);
        let in_zone = |locs: &[Option<ChunkserverId>], z: &str| {
            locs.iter()
                .filter(|c| c.and_then(|c| rules.zone(c)) == Some(z))
                .count()
        };
        // Never a chunkserver that holds (or is rebuilding) another shard of
        // the stripe, nor one whose zone would exceed the zone cap: with no
        // such target the stripe stays degraded (status says so) rather than
        // stacking shards, and is repaired once a valid server is Up.
        let index = usize::from(c.index);
        let valid = |i: &ChunkserverInfo| {
            let stacked = planned
                .iter()
                .enumerate()
                .any(|(j, on)| j != index && *on == Some(i.id));
            let mut after = planned.clone();
            if let Some(l) = after.get_mut(index) {
                *l = Some(i.id);
            }
            let n = in_zone(&after, &i.zone);
            !stacked && (n <= cap || n <= in_zone(&planned, &i.zone))
        };
        let mut options: Vec<&&ChunkserverInfo> = up
            .iter()
            .filter(|i| load.get(&i.id).copied().unwrap_or(0) < cfg.per_chunkserver)
            .filter(|i| i.free >= shard_len)
            .filter(|i| valid(i))
            .collect();
        if options.is_empty() {
            if up.iter().any(|i| {
                i.free >= shard_len
                    && valid(i)
                    && load.get(&i.id).copied().unwrap_or(0) >= cfg.per_chunkserver
            }) {
                blocked = Some((c.class, c.redundancy));
            }
            continue;
        }
        options.sort_by_key(|i| {
            let n = holds.get(&i.id).copied().unwrap_or(0);
            (
                n > 0,
                zones.contains(i.zone.as_str()),
                n,
                Reverse(i.free),
                i.id,
            )
        });
        let mut target = None;
        for o in options {
            if !model::gc_contains(txn, o.id, &loc.shard)? {
                target = Some(o.id);
                break;
            }
        }
        let Some(target) = target else {
            continue;
        };
        let mut sources: Vec<(u8, RepairSource)> = Vec::new();
        for (i, l) in ctx.manifest.shards.iter().enumerate() {
            let same = i == usize::from(c.index);
            if !ctx.healthy.get(i).copied().unwrap_or(false) {
                continue;
            }
            let Some(info) = l.chunkserver.and_then(|cs| servers.get(&cs)) else {
                continue;
            };
            let rank = if same {
                0
            } else if info.state == ChunkserverState::Up {
                1
            } else {
                2
            };
            sources.push((
                rank,
                RepairSource {
                    index: i as u8,
                    shard: l.shard,
                    addr: info.addr.clone(),
                    blake3: l.blake3,
                },
            ));
        }
        sources.sort_by_key(|(r, s)| (*r, s.index));
        let task = RepairTask {
            task: s.next_task_id(),
            bucket: ctx.bucket.clone(),
            key: ctx.key.clone(),
            version: ctx.version,
            stripe: ctx.stripe,
            stripe_id: ctx.manifest.id,
            ec: ctx.ec,
            shard_len,
            index: c.index,
            shard: loc.shard,
            blake3: loc.blake3,
            from: loc.chunkserver,
            sources: sources.into_iter().map(|(_, s)| s).collect(),
            redundancy: c.redundancy,
        };
        s.track(task, target, false, cfg.task_timeout, now);
        *load.entry(target).or_insert(0) += 1;
        stripe_targets
            .entry((ctx.version, ctx.stripe))
            .or_default()
            .push((c.index, target));
        dispatched += 1;
    }
    Ok(dispatched)
}
