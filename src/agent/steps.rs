//! The steps of first boot and how each one runs.
//!
//! Every step is an `ensure_*` function: observe, act on the difference, verify, and say
//! what it found or did. The runner writes the step's done marker when the step changed
//! something or has no marker yet, so a second run that finds everything in place
//! changes no file. A role's join steps will be added to this list the same way.

use super::config::{ClusterView, Config, NodeView, RoleView};
use super::host::Host;
use super::markers::{Marker, read_marker, write_marker};
use super::root::Root;
use super::{disk, files, firewall, grow, names, network};

/// What a step works with.
pub struct Context<'a> {
    /// The root every path is resolved under.
    pub root: &'a Root,
    /// The running machine (commands, kernel hostname).
    pub host: &'a mut dyn Host,
    /// The whole cluster.
    pub cluster: &'a ClusterView,
    /// The image's role.
    pub role: &'a RoleView,
    /// This node.
    pub node: &'a NodeView,
    /// The running step's marker from an earlier run, if any: a latch for steps that
    /// must never repeat an action (formatting the data disk).
    pub previous_marker: Option<Marker>,
}

/// What a step reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether it changed anything.
    pub changed: bool,
    /// What it found or did, in one line.
    pub detail: String,
}

impl Outcome {
    /// Everything was already in place.
    pub fn unchanged(detail: impl Into<String>) -> Outcome {
        Outcome {
            changed: false,
            detail: detail.into(),
        }
    }

    /// The step changed something.
    pub fn changed(detail: impl Into<String>) -> Outcome {
        Outcome {
            changed: true,
            detail: detail.into(),
        }
    }
}

/// One named step.
#[derive(Clone, Copy)]
pub struct Step {
    /// Its name, also the name of its marker.
    pub name: &'static str,
    /// Brings the node to the step's goal.
    pub ensure: fn(&mut Context<'_>) -> anyhow::Result<Outcome>,
}

/// The steps every node runs, in order.
pub const COMMON_STEPS: [Step; 7] = [
    Step {
        name: "node-files",
        ensure: files::ensure_node_files,
    },
    Step {
        name: "hostname",
        ensure: names::ensure_hostname,
    },
    Step {
        name: "hosts",
        ensure: names::ensure_hosts,
    },
    Step {
        name: "network",
        ensure: network::ensure_network,
    },
    Step {
        name: "firewall",
        ensure: firewall::ensure_firewall,
    },
    Step {
        name: "data-disk",
        ensure: disk::ensure_data_disk,
    },
    Step {
        name: "grow-root",
        ensure: grow::ensure_root_grown,
    },
];

/// The names of the steps, in order.
pub fn step_names() -> Vec<&'static str> {
    COMMON_STEPS.iter().map(|step| step.name).collect()
}

/// Runs one step and writes its marker when needed; returns the marker and whether the
/// step changed anything.
pub fn run_step(step: &Step, context: &mut Context<'_>) -> anyhow::Result<(Marker, bool)> {
    let previous = read_marker(context.root, step.name)?;
    context.previous_marker = previous.clone();
    let outcome = (step.ensure)(context)?;
    match previous {
        Some(marker) if !outcome.changed => Ok((marker, false)),
        _ => Ok((
            write_marker(context.root, step.name, &outcome.detail)?,
            outcome.changed,
        )),
    }
}

impl<'a> Context<'a> {
    /// A context for `node` of the loaded configuration.
    pub fn new(
        root: &'a Root,
        host: &'a mut dyn Host,
        config: &'a Config,
        node: &'a NodeView,
    ) -> Context<'a> {
        Context {
            root,
            host,
            cluster: &config.cluster,
            role: &config.role,
            node,
            previous_marker: None,
        }
    }
}
