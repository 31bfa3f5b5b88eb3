//! The Gluster join step on fs nodes: glusterd with TLS on its management port, the
//! trusted pool, and the replica-3 shared volume that grows by sets of three.
//!
//! The first three fs nodes of the manifest are the seeds. The lowest-named seed probes
//! the other two (a node cannot probe itself into a pool: glusterd accepts `peer probe`
//! only on its local socket), creates the volume with one brick on each seed, turns TLS
//! on for its I/O and starts it; the other seeds are done once the volume they share is
//! started. An fs node beyond the seeds asks to join: it mounts the volume as a client
//! and leaves its address in `/.r2a/join/<name>`, where the members' `r2a-node keep`
//! finds it on their bricks and probes it in. Once in the pool, the lowest-named node of
//! a complete set of three adds the set's bricks and starts a rebalance; a set still
//! missing a node waits and says so.
//!
//! Seeds are known to Gluster by name (every image of the cluster resolves them); a
//! later node by its address, since the images built before it cannot resolve its name.
//!
//! Bricks are a folder on the data disk (`vars.brick` of the role). A node without a
//! data disk keeps its brick on the root disk, which glusterd accepts only with `force`;
//! its step says so in its detail, for `r2a-node status`.

use std::collections::BTreeMap;

use anyhow::Context as _;

use super::Progress;
use super::gluster_cli::{gluster, parse_pool, volume_info};
use super::gluster_requests::JoinRequest;
use crate::agent::steps::Context;
use crate::fsutil::write_atomic;

/// With this file present, glusterd and Gluster clients speak TLS on the management
/// port, with `/etc/ssl/glusterfs.{pem,key,ca}` (the node's certificate, key and the
/// cluster CA).
pub const SECURE_ACCESS: &str = "/var/lib/glusterd/secure-access";

/// Volume options the coordinator sets before it starts the volume: TLS for the bricks'
/// I/O too, for any client holding a certificate of the cluster CA.
pub const VOLUME_OPTIONS: [(&str, &str); 3] = [
    ("client.ssl", "on"),
    ("server.ssl", "on"),
    ("auth.ssl-allow", "*"),
];

/// How many copies of every file the volume keeps, and so the size of a brick set.
pub const REPLICA: usize = 3;

/// A peer of the local pool, as `gluster pool list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Peer {
    /// The name it was probed by.
    pub hostname: String,
    /// Whether glusterd talks to it now.
    pub connected: bool,
}

/// The shared volume, as `gluster volume info` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Volume {
    /// Its name.
    pub name: String,
    /// Whether it is started.
    pub started: bool,
    /// Its bricks, `host:/path`, in volume order (each run of three is a replica set).
    pub bricks: Vec<String>,
    /// Options set on it.
    pub options: BTreeMap<String, String>,
}

impl Peer {
    /// Whether this peer is `host`: glusterd may record a peer that probed it by the
    /// name its address resolves to, the node's full name (`fs1.<domain>`).
    pub fn is(&self, host: &str) -> bool {
        self.hostname == host
            || self
                .hostname
                .strip_prefix(host)
                .is_some_and(|rest| rest.starts_with('.'))
    }
}

impl Volume {
    /// Whether a brick of `node` is in the volume.
    pub fn has_brick_of(&self, node: &str) -> bool {
        self.bricks
            .iter()
            .any(|brick| brick.split_once(':').is_some_and(|(host, _)| host == node))
    }
}

/// What the step decides from.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// This node's name.
    pub own: &'a str,
    /// Every fs node this image knows, in manifest order; the first three are seeds.
    pub fs_nodes: &'a [&'a str],
    /// How Gluster knows each later fs node: (name, address).
    pub later_addresses: &'a [(&'a str, String)],
    /// fs nodes without a data disk (their bricks are on the root disk).
    pub without_data_disk: &'a [&'a str],
    /// The brick folder on every fs node.
    pub brick: &'a str,
    /// The local pool, without this node.
    pub peers: &'a [Peer],
    /// The volume as this node's glusterd knows it; `None` before it exists (or before
    /// this node is in the pool).
    pub volume: Option<&'a Volume>,
}

/// What the step does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// `gluster peer probe` this node.
    Probe(String),
    /// Leave a join request for the members on the volume, then wait.
    AskToJoin(String),
    /// `gluster volume create ... replica 3` of these bricks (`force` for bricks on a
    /// root disk).
    Create {
        /// `host:/path` of each brick.
        bricks: Vec<String>,
        /// Whether glusterd must be told that root-disk bricks are meant.
        force: bool,
    },
    /// Set the [`VOLUME_OPTIONS`] not set yet.
    SetOptions(Vec<(String, String)>),
    /// `gluster volume start`.
    Start,
    /// `gluster volume add-brick` of a complete set, then a rebalance.
    AddBricks {
        /// `host:/path` of each brick.
        bricks: Vec<String>,
        /// As for [`Plan::Create`].
        force: bool,
    },
    /// Nothing to do yet.
    Wait(String),
    /// The node's brick serves the started volume.
    Done(String),
}

/// Decides what to do from the facts; see the module's doc for the cases.
pub fn plan(facts: &Facts<'_>) -> Plan {
    let seeds: Vec<&str> = facts.fs_nodes.iter().take(REPLICA).copied().collect();
    let coordinator = seeds.iter().min().copied().unwrap_or(facts.own);
    let Some(volume) = facts.volume else {
        return plan_creation(facts, &seeds, coordinator);
    };
    if volume.has_brick_of(host(facts, facts.own)) {
        return plan_volume_settings(facts, volume, coordinator);
    }
    plan_growth(facts, volume)
}

/// Before the volume exists: the coordinator forms the pool of the seeds and creates it.
fn plan_creation(facts: &Facts<'_>, seeds: &[&str], coordinator: &str) -> Plan {
    if !seeds.contains(&facts.own) {
        return Plan::AskToJoin(format!(
            "waiting to be probed into the pool by a member ({})",
            seeds.join(", ")
        ));
    }
    if facts.own != coordinator {
        return Plan::Wait(format!(
            "waiting for {coordinator} to form the pool and create the volume"
        ));
    }
    if let Some(seed) = seeds
        .iter()
        .find(|seed| **seed != facts.own && !listed(facts, seed))
    {
        return Plan::Probe(seed.to_string());
    }
    if let Some(seed) = seeds.iter().find(|seed| !connected(facts, seed)) {
        return Plan::Wait(format!("{seed} is in the pool but not connected"));
    }
    Plan::Create {
        bricks: bricks(facts, seeds),
        force: needs_force(facts, seeds),
    }
}

/// The volume holds this node's brick: the coordinator sets its options and starts it.
fn plan_volume_settings(facts: &Facts<'_>, volume: &Volume, coordinator: &str) -> Plan {
    let missing: Vec<(String, String)> = VOLUME_OPTIONS
        .iter()
        .filter(|(name, value)| volume.options.get(*name).map(String::as_str) != Some(*value))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    if volume.started {
        let sets = volume.bricks.len() / REPLICA;
        let on_root = if facts.without_data_disk.contains(&facts.own) {
            "; its brick is on the root disk (no data disk)"
        } else {
            ""
        };
        return Plan::Done(format!(
            "the volume is started, {sets} × {REPLICA} bricks, one of them on this node{on_root}"
        ));
    }
    if facts.own != coordinator {
        return Plan::Wait(format!("waiting for {coordinator} to start the volume"));
    }
    if !missing.is_empty() {
        return Plan::SetOptions(missing);
    }
    Plan::Start
}

/// A node beyond the volume's bricks: it joins with the complete set of three it
/// belongs to, in manifest order.
fn plan_growth(facts: &Facts<'_>, volume: &Volume) -> Plan {
    let waiting: Vec<&str> = facts
        .fs_nodes
        .iter()
        .copied()
        .filter(|node| !volume.has_brick_of(host(facts, node)))
        .collect();
    let position = waiting.iter().position(|node| *node == facts.own);
    let Some(set) = position.and_then(|at| waiting.chunks(REPLICA).nth(at / REPLICA)) else {
        return Plan::Wait(format!(
            "{} is not an fs node of this image's manifest",
            facts.own
        ));
    };
    if set.len() < REPLICA {
        return Plan::Wait(format!(
            "{} waits for {} more fs node(s) in the manifest: bricks join in sets of {REPLICA}",
            set.join(", "),
            REPLICA - set.len()
        ));
    }
    let absent: Vec<&str> = set
        .iter()
        .copied()
        .filter(|node| !connected(facts, node))
        .collect();
    if !absent.is_empty() {
        return Plan::Wait(format!(
            "waiting for {} to be in the pool (a member probes new fs nodes in)",
            absent.join(", ")
        ));
    }
    let lowest = set.iter().min().copied().unwrap_or(facts.own);
    if facts.own != lowest {
        return Plan::Wait(format!("waiting for {lowest} to add the bricks of its set"));
    }
    Plan::AddBricks {
        bricks: bricks(facts, set),
        force: needs_force(facts, set),
    }
}

/// The name Gluster knows `node` by: its address for a later node, else its name.
fn host<'a>(facts: &'a Facts<'_>, node: &'a str) -> &'a str {
    facts
        .later_addresses
        .iter()
        .find(|(name, _)| *name == node)
        .map_or(node, |(_, address)| address.as_str())
}

fn listed(facts: &Facts<'_>, node: &str) -> bool {
    let host = host(facts, node);
    facts.peers.iter().any(|peer| peer.is(host))
}

fn connected(facts: &Facts<'_>, node: &str) -> bool {
    let host = host(facts, node);
    node == facts.own
        || facts
            .peers
            .iter()
            .any(|peer| peer.is(host) && peer.connected)
}

fn bricks(facts: &Facts<'_>, nodes: &[&str]) -> Vec<String> {
    nodes
        .iter()
        .map(|node| format!("{}:{}", host(facts, node), facts.brick))
        .collect()
}

fn needs_force(facts: &Facts<'_>, nodes: &[&str]) -> bool {
    nodes
        .iter()
        .any(|node| facts.without_data_disk.contains(node))
}

/// One attempt: TLS on, brick folder, glusterd started; then observe, act on the plan
/// and report.
pub fn attempt(context: &mut Context<'_>) -> anyhow::Result<Progress> {
    let volume_name = context.role.var("volume")?;
    let brick = context.role.var("brick")?;
    let mut changed = ensure_secure_access(context)?;
    let brick_folder = context.root.path(&brick);
    if !brick_folder.is_dir() {
        std::fs::create_dir_all(&brick_folder)
            .with_context(|| format!("creating the brick folder {brick}"))?;
        changed = true;
    }
    changed |= super::ensure_started(context.host, "glusterd.service")?;
    let Ok(pool) = gluster(context.host, &["pool", "list"]) else {
        return Ok(Progress::waiting("waiting for glusterd to answer"));
    };
    let peers = parse_pool(&pool)?;
    let volume = volume_info(context.host, Some(&volume_name))?;
    let fs_nodes: Vec<&str> = context
        .cluster
        .nodes_of("fs")
        .map(|node| node.name.as_str())
        .collect();
    let without_data_disk: Vec<&str> = context
        .cluster
        .nodes_of("fs")
        .filter(|node| node.data_disk.is_none())
        .map(|node| node.name.as_str())
        .collect();
    let later_addresses: Vec<(&str, String)> = context
        .cluster
        .nodes_of("fs")
        .skip(REPLICA)
        .map(|node| (node.name.as_str(), node.address.to_string()))
        .collect();
    let facts = Facts {
        own: &context.node.name,
        fs_nodes: &fs_nodes,
        later_addresses: &later_addresses,
        without_data_disk: &without_data_disk,
        brick: &brick,
        peers: &peers,
        volume: volume.as_ref(),
    };
    let action = plan(&facts);
    let detail = match action {
        Plan::Done(detail) if changed => return Ok(Progress::changed(detail)),
        Plan::Done(detail) => return Ok(Progress::in_place(detail)),
        Plan::Wait(reason) => return Ok(Progress::Waiting(reason)),
        Plan::AskToJoin(reason) => {
            let seeds: Vec<&str> = fs_nodes.iter().take(REPLICA).copied().collect();
            let request = JoinRequest {
                name: context.node.name.clone(),
                address: context.node.address.to_string(),
            };
            return Ok(Progress::Waiting(
                match request.leave(context.root, context.host, &seeds, &volume_name) {
                    Ok(()) => format!("{reason}; asked to join"),
                    Err(error) => format!("{reason}; cannot ask to join yet: {error:#}"),
                },
            ));
        }
        Plan::Probe(node) => {
            gluster(context.host, &["peer", "probe", &node])?;
            format!("probed {node} into the pool")
        }
        Plan::Create { bricks, force } => {
            let create = ["volume", "create", &volume_name, "replica", "3"];
            gluster(context.host, &with_bricks(&create, &bricks, force))?;
            format!("created the volume {volume_name} of {}", bricks.join(" "))
        }
        Plan::SetOptions(options) => {
            for (name, value) in &options {
                gluster(context.host, &["volume", "set", &volume_name, name, value])?;
            }
            format!("set {} option(s) of the volume", options.len())
        }
        Plan::Start => {
            gluster(context.host, &["volume", "start", &volume_name])?;
            format!("started the volume {volume_name}")
        }
        Plan::AddBricks { bricks, force } => {
            let add = ["volume", "add-brick", &volume_name];
            gluster(context.host, &with_bricks(&add, &bricks, force))?;
            gluster(
                context.host,
                &["volume", "rebalance", &volume_name, "start"],
            )?;
            format!("added {} and started a rebalance", bricks.join(" "))
        }
    };
    // The action changed the pool or the volume: the next attempt observes it again.
    Ok(Progress::waiting(format!("{detail}; checking the result")))
}

/// A `volume create` or `add-brick` command line: `command`, the bricks, and `force`
/// when root-disk bricks are meant.
fn with_bricks<'a>(command: &[&'a str], bricks: &'a [String], force: bool) -> Vec<&'a str> {
    let mut args = command.to_vec();
    args.extend(bricks.iter().map(String::as_str));
    args.extend(force.then_some("force"));
    args
}

/// Writes the file that turns TLS on for glusterd's management port, before glusterd
/// starts (it reads the file once, at start).
pub(crate) fn ensure_secure_access(context: &mut Context<'_>) -> anyhow::Result<bool> {
    let path = context.root.path(SECURE_ACCESS);
    if path.exists() {
        return Ok(false);
    }
    write_atomic(&path, b"", 0o644)?;
    Ok(true)
}

#[cfg(test)]
#[path = "gluster_tests.rs"]
mod tests;
