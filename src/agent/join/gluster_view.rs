//! The Gluster pool as one fs node's glusterd reports it now: its peers, the shared
//! volume's bricks and how many entries wait to be healed. `r2a-node status` prints it
//! on fs nodes, and `r2a-image cluster status` reads it from a running one.

use std::fmt::Write as _;

use serde::Serialize;

use super::gluster::{Peer, Volume};
use super::gluster_cli::{gluster, parse_pool, volume_info};
use crate::agent::host::{Host, Invocation};

/// The pool and the volume, as one fs node's glusterd sees them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolView {
    /// The other members of the pool.
    pub peers: Vec<Peer>,
    /// The shared volume, when it exists.
    pub volume: Option<Volume>,
    /// Entries waiting to be healed, summed over the bricks (`heal info summary`);
    /// `None` when it could not be read.
    pub heal_entries: Option<u64>,
}

/// Asks the local glusterd (its CLI, under `host`).
pub fn observe(host: &mut dyn Host) -> anyhow::Result<PoolView> {
    let peers = parse_pool(&gluster(host, &["pool", "list"])?)?;
    let volume = volume_info(host, None)?;
    let heal_entries = volume.as_ref().and_then(|volume| {
        let summary = ["volume", "heal", &volume.name, "info", "summary"];
        let summary = Invocation::new("gluster", summary).with_timeout(60);
        host.run(&summary)
            .ok()
            .and_then(|text| parse_heal_summary(&text))
    });
    Ok(PoolView {
        peers,
        volume,
        heal_entries,
    })
}

/// Sums `Total Number of entries:` of `gluster volume heal VOL info summary`.
pub fn parse_heal_summary(text: &str) -> Option<u64> {
    let counts: Vec<u64> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Total Number of entries:"))
        .map(|count| count.trim().parse().ok())
        .collect::<Option<Vec<u64>>>()?;
    (!counts.is_empty()).then(|| counts.iter().sum())
}

impl PoolView {
    /// Lines for people: the peers, the volume and its bricks.
    pub fn describe(&self) -> String {
        let peers: Vec<String> = self
            .peers
            .iter()
            .map(|peer| {
                let state = if peer.connected {
                    "connected"
                } else {
                    "disconnected"
                };
                format!("{} {state}", peer.hostname)
            })
            .collect();
        let mut text = format!("peers: {}\n", peers.join(", "));
        match &self.volume {
            Some(volume) => {
                let state = if volume.started {
                    "started"
                } else {
                    "not started"
                };
                let heal = self
                    .heal_entries
                    .map_or("unknown".to_string(), |entries| entries.to_string());
                let _ = writeln!(
                    text,
                    "volume {} {state}, {} bricks ({} sets of 3), heal entries {heal}",
                    volume.name,
                    volume.bricks.len(),
                    volume.bricks.len() / 3
                );
                for brick in &volume.bricks {
                    let _ = writeln!(text, "  {brick}");
                }
            }
            None => text.push_str("no volume yet\n"),
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heal_entries_are_summed_over_the_bricks() {
        let summary = "Brick fs1:/b\nStatus: Connected\nTotal Number of entries: 3\n\
                       Brick fs2:/b\nStatus: Connected\nTotal Number of entries: 0\n";
        assert_eq!(parse_heal_summary(summary), Some(3));
        assert_eq!(parse_heal_summary("Volume shared is not started"), None);
    }

    #[test]
    fn the_view_names_peers_volume_and_bricks() {
        let view = PoolView {
            peers: vec![Peer {
                hostname: "fs2".into(),
                connected: false,
            }],
            volume: Some(Volume {
                name: "shared".into(),
                started: true,
                bricks: vec!["fs1:/b".into(), "fs2:/b".into(), "fs3:/b".into()],
                options: Default::default(),
            }),
            heal_entries: Some(4),
        };
        assert_eq!(
            view.describe(),
            "peers: fs2 disconnected\nvolume shared started, 3 bricks (1 sets of 3), \
             heal entries 4\n  fs1:/b\n  fs2:/b\n  fs3:/b\n"
        );
    }
}
