//! The names the harness gives what it creates for a cluster: network namespaces, the
//! lab bridge, veth ends, container machine names and cgroup folders. Decided here, in
//! one pure function, so that every command (and `down` after a crash) agrees on them.

use std::collections::BTreeSet;

use anyhow::bail;

use crate::hash::sha256_hex;

/// The longest interface name the kernel takes (IFNAMSIZ - 1).
pub const MAX_INTERFACE_NAME: usize = 15;
/// The longest machine name systemd-nspawn takes (a host name).
pub const MAX_MACHINE_NAME: usize = 64;
/// The bridge inside the lab namespace; the namespace is the harness's own, so a short
/// fixed name cannot clash with anything.
pub const BRIDGE: &str = "br0";
/// The container end of every node's veth: systemd-networkd in the image treats a link
/// of this name like the one `systemd-nspawn --network-veth` makes.
pub const CONTAINER_LINK: &str = "host0";
/// The folder, under each cgroup hierarchy's root, that holds the harness's cgroups.
pub const CGROUP_FOLDER: &str = "r2a-cluster";

/// The names of one cluster's lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabNames {
    /// The network namespace holding the bridge.
    pub netns: String,
    /// The bridge, inside that namespace.
    pub bridge: String,
}

/// The names of one node's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNames {
    /// The node.
    pub node: String,
    /// The node's own network namespace (the container's network).
    pub netns: String,
    /// The veth end that is a port of the lab bridge.
    pub bridge_port: String,
    /// The `--machine` name of its container.
    pub machine: String,
    /// Its cgroup, relative to a hierarchy's root.
    pub cgroup: String,
}

/// The lab of `cluster`. Node namespaces carry a dot (`r2a-<cluster>.<node>`) and the lab
/// none: cluster and node names are DNS labels, so no two of them can be equal.
pub fn lab_names(cluster: &str) -> LabNames {
    LabNames {
        netns: format!("r2a-{cluster}-lab"),
        bridge: BRIDGE.to_string(),
    }
}

/// The names of every node in `nodes`; fails when two would share an interface name.
pub fn node_names(cluster: &str, nodes: &[&str]) -> anyhow::Result<Vec<NodeNames>> {
    let planned: Vec<NodeNames> = nodes.iter().map(|node| names_of(cluster, node)).collect();
    let mut ports = BTreeSet::new();
    for names in &planned {
        if !ports.insert(names.bridge_port.as_str()) {
            bail!(
                "nodes of cluster {cluster} would share the bridge port name {}; rename one \
                 of them (the first {} characters of node names must differ)",
                names.bridge_port,
                MAX_INTERFACE_NAME - 8
            );
        }
    }
    Ok(planned)
}

/// The names of one node. They depend on the node's name alone, so a node the manifest
/// no longer lists (but the record does) keeps them; [`node_names`] checks a whole
/// manifest's for clashes.
pub fn names_of(cluster: &str, node: &str) -> NodeNames {
    NodeNames {
        node: node.to_string(),
        netns: format!("r2a-{cluster}.{node}"),
        bridge_port: bounded_name(&format!("ve-{node}"), MAX_INTERFACE_NAME),
        machine: bounded_name(&format!("{cluster}-{node}"), MAX_MACHINE_NAME),
        cgroup: format!("{CGROUP_FOLDER}/{cluster}/{node}"),
    }
}

/// `whole` when it fits in `limit` characters; otherwise its start and a short hash of
/// all of it, so that long names that share a start stay apart.
fn bounded_name(whole: &str, limit: usize) -> String {
    if whole.len() <= limit {
        return whole.to_string();
    }
    let hash = &sha256_hex(whole.as_bytes())[..4];
    let cut: String = whole.chars().take(limit - 1 - hash.len()).collect();
    format!("{cut}-{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_per_node() {
        // (cluster, node, netns, bridge port, machine)
        let table = [
            (
                "r2a-test",
                "db1",
                "r2a-r2a-test.db1",
                "ve-db1",
                "r2a-test-db1",
            ),
            (
                "ring2all",
                "pg-node-01",
                "r2a-ring2all.pg-node-01",
                "ve-pg-node-01",
                "ring2all-pg-node-01",
            ),
            (
                "c",
                "telephony-node-01",
                "r2a-c.telephony-node-01",
                "ve-telepho-9b87",
                "c-telephony-node-01",
            ),
        ];
        for (cluster, node, netns, port, machine) in table {
            let names = node_names(cluster, &[node]).unwrap();
            assert_eq!(names[0], names_of(cluster, node));
            assert_eq!(names[0].netns, netns, "{node}");
            assert_eq!(names[0].bridge_port, port, "{node}");
            assert!(names[0].bridge_port.len() <= MAX_INTERFACE_NAME);
            assert_eq!(names[0].machine, machine, "{node}");
            assert_eq!(names[0].cgroup, format!("r2a-cluster/{cluster}/{node}"));
        }
    }

    #[test]
    fn long_names_that_share_a_start_stay_apart() {
        let names = node_names("c", &["telephony-node-01", "telephony-node-02"]).unwrap();
        assert_ne!(names[0].bridge_port, names[1].bridge_port);
        assert!(
            names
                .iter()
                .all(|n| n.bridge_port.len() == MAX_INTERFACE_NAME)
        );
    }

    #[test]
    fn a_machine_name_fits_a_host_name() {
        let cluster = "c".repeat(63);
        let names = node_names(&cluster, &["db1"]).unwrap();
        assert_eq!(names[0].machine.len(), MAX_MACHINE_NAME);
        assert!(names[0].machine.starts_with(&cluster[..59]));
    }

    #[test]
    fn the_lab_cannot_be_a_node_namespace() {
        let lab = lab_names("r2a-test");
        assert_eq!(lab.netns, "r2a-r2a-test-lab");
        assert_eq!(lab.bridge, "br0");
        let nodes = node_names("r2a-test", &["lab"]).unwrap();
        assert_ne!(nodes[0].netns, lab.netns);
    }
}
