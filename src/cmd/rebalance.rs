//! `cairn admin rebalance start|pause|status`: the replicated rebalancer
//! setting (`Command::SetRebalance`) and what the leader's rebalancer
//! reports in the cluster status.

use cairn_metadata::client::MetaClient;
use cairn_metadata::types::{
    ClusterStatus, Command, CommandResult, RebalanceStatus, DEFAULT_REBALANCE_THRESHOLD_PCT,
};

use super::admin::fmt_bytes;

/// `cairn admin rebalance ...`
#[derive(clap::Subcommand, Debug)]
pub enum RebalanceCmd {
    /// Allow moves (on by default), optionally with a new threshold.
    Start {
        /// Fullness spread tolerated between chunkservers, in percentage
        /// points (1 to 50; default: keep the current one, 10 at first).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=50))]
        threshold: Option<u8>,
    },
    /// Stop planning moves (those in flight finish).
    Pause,
    /// Spread, fullness per chunkserver, moves in flight and done.
    Status,
}

/// Runs one `cairn admin rebalance` command.
pub async fn run(meta: &MetaClient, cmd: RebalanceCmd, json: bool) -> anyhow::Result<()> {
    let current = || async {
        let c: ClusterStatus = meta.cluster_status().await?;
        anyhow::Ok(c.rebalance)
    };
    let (enabled, threshold) = match cmd {
        RebalanceCmd::Status => {
            let r = current().await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                outln!("{}", summary(&r));
                for (id, f) in &r.fullness_pct {
                    outln!("  cs{id}: {f:.2}% full");
                }
            }
            return Ok(());
        }
        RebalanceCmd::Start { threshold } => {
            let t = match threshold {
                Some(t) => t,
                None => keep(&current().await?),
            };
            (true, t)
        }
        RebalanceCmd::Pause => (false, keep(&current().await?)),
    };
    match meta
        .write(&Command::SetRebalance {
            enabled,
            threshold_pct: threshold,
        })
        .await?
    {
        CommandResult::Err(e) => anyhow::bail!("{e}"),
        _ => {
            let what = if enabled { "on" } else { "paused" };
            outln!("rebalance {what} (threshold {threshold} percentage points)");
            Ok(())
        }
    }
}

/// The threshold in force (the default before the leader's first round).
fn keep(r: &RebalanceStatus) -> u8 {
    if (1..=50).contains(&r.threshold_pct) {
        r.threshold_pct
    } else {
        DEFAULT_REBALANCE_THRESHOLD_PCT
    }
}

/// One line for `cairn admin status` and `rebalance status`.
pub fn summary(r: &RebalanceStatus) -> String {
    let state = if r.state.is_empty() {
        "not planned yet"
    } else {
        r.state.as_str()
    };
    format!(
        "rebalance: {state}, spread {:.2} points (threshold {}), {} moves in flight, {} done ({})",
        r.spread_pct,
        r.threshold_pct,
        r.in_flight,
        r.moved,
        fmt_bytes(r.moved_bytes)
    )
}
