//! The Gluster and telephony parts of `r2a-image cluster status`: the trusted pool, the
//! shared volume's bricks and heal backlog (from a running fs node), and the telephony
//! pool with its capacity against the seed's scaling table (from a running telephony
//! node, through its HAProxy).

use std::fmt::Write as _;

use serde::Serialize;

use super::status::Section;
use crate::agent::join::gluster_view::PoolView;

/// One node of the telephony pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TelephonyNode {
    /// Node name.
    pub name: String,
    /// Its address.
    pub address: String,
    /// `active` or `inactive` (a stale heartbeat counts as inactive).
    pub state: String,
    /// When it last said it is alive.
    pub last_heartbeat: String,
    /// Concurrent calls it carries.
    pub max_calls: u64,
    /// Extensions it carries.
    pub max_extensions: u64,
}

/// The telephony pool and what its active nodes carry together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TelephonyPool {
    /// Every registered node.
    pub nodes: Vec<TelephonyNode>,
    /// Active nodes.
    pub active: usize,
    /// Calls the active nodes carry together.
    pub calls: u64,
    /// Extensions the active nodes carry together.
    pub extensions: u64,
    /// The seed's scaling table for that many servers: its use case.
    pub seed_use_case: String,
}

/// The query the telephony section runs: one `|`-separated line per node.
pub const TELEPHONY_SQL: &str = "SELECT name, host(address), state, \
    to_char(last_heartbeat AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
    max_calls, max_extensions FROM telephony_pool ORDER BY name";

/// Reads [`TELEPHONY_SQL`]'s unaligned output.
pub fn parse_telephony(output: &str) -> Result<TelephonyPool, String> {
    let mut nodes = Vec::new();
    for line in output.lines().filter(|line| !line.trim().is_empty()) {
        let fields: Vec<&str> = line.split('|').collect();
        let [name, address, state, heartbeat, calls, extensions] = fields[..] else {
            return Err(format!("unexpected telephony pool line `{line}`"));
        };
        let number = |text: &str| {
            text.trim()
                .parse::<u64>()
                .map_err(|_| format!("unexpected number `{text}` in `{line}`"))
        };
        nodes.push(TelephonyNode {
            name: name.to_string(),
            address: address.to_string(),
            state: state.to_string(),
            last_heartbeat: heartbeat.to_string(),
            max_calls: number(calls)?,
            max_extensions: number(extensions)?,
        });
    }
    let active: Vec<&TelephonyNode> = nodes.iter().filter(|n| n.state == "active").collect();
    Ok(TelephonyPool {
        active: active.len(),
        calls: active.iter().map(|n| n.max_calls).sum(),
        extensions: active.iter().map(|n| n.max_extensions).sum(),
        seed_use_case: crate::plan::use_case(active.len() as u64).to_string(),
        nodes,
    })
}

/// The two sections for people.
pub fn to_text(gluster: &Section<PoolView>, telephony: &Section<TelephonyPool>) -> String {
    let mut text = String::from("gluster");
    match gluster {
        Section::Available { from, value } => {
            let _ = writeln!(text, " (from {from}):");
            for line in value.describe().lines() {
                let _ = writeln!(text, "  {line}");
            }
        }
        Section::Unavailable { reason } => {
            let _ = writeln!(text, ": unavailable: {reason}");
        }
    }
    text.push_str("telephony pool");
    match telephony {
        Section::Available { from, value } => {
            let _ = writeln!(text, " (from {from}):");
            for node in &value.nodes {
                let _ = writeln!(
                    text,
                    "  {} {} {} heartbeat {} {} calls {} extensions",
                    node.name,
                    node.address,
                    node.state,
                    node.last_heartbeat,
                    node.max_calls,
                    node.max_extensions
                );
            }
            let _ = writeln!(
                text,
                "  {} active: {} calls, {} extensions (seed's scaling table: {})",
                value.active, value.calls, value.extensions, value.seed_use_case
            );
        }
        Section::Unavailable { reason } => {
            let _ = writeln!(text, ": unavailable: {reason}");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_counts_only_active_nodes_against_the_seed_table() {
        let pool = parse_telephony(
            "tel1|10.77.0.51|active|2026-12-05T10:00:00Z|1500|10000\n\
             tel2|10.77.0.52|inactive|2026-12-05T09:00:00Z|1500|10000\n",
        )
        .unwrap();
        assert_eq!((pool.active, pool.calls, pool.extensions), (1, 1500, 10000));
        assert_eq!(pool.seed_use_case, "Medium Enterprise");
        assert!(parse_telephony("tel1|10.77.0.51|active").is_err());
    }
}
