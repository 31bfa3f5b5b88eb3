//! The lab network: a bridge inside a network namespace of the harness's own, and per
//! node a namespace holding `host0`, whose veth peer is a port of that bridge. Nothing is
//! created in the host's namespace, the bridge and the ports get no address (not even an
//! IPv6 link-local one), and nothing routes out of the lab: test traffic stays inside.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use super::names::{CONTAINER_LINK, LabNames, NodeNames};
use crate::exec::CommandExt;

/// Where `ip netns` keeps its namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Whether the named network namespace exists.
pub fn netns_exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

/// The path systemd-nspawn joins.
pub fn netns_path(name: &str) -> String {
    format!("{NETNS_DIR}/{name}")
}

/// Creates the lab namespace and its bridge.
pub fn create_lab(lab: &LabNames) -> anyhow::Result<()> {
    add_netns(&lab.netns)?;
    ip_in(&lab.netns, &["link", "add", &lab.bridge, "type", "bridge"])?;
    ip_in(
        &lab.netns,
        &["link", "set", &lab.bridge, "addrgenmode", "none"],
    )?;
    ip_in(&lab.netns, &["link", "set", &lab.bridge, "up"])
        .with_context(|| format!("creating the lab bridge in namespace {}", lab.netns))
}

/// Creates a node's namespace with `host0` in it (carrying `mac` when the manifest gives
/// one, so the node's seed, which matches by MAC, finds its link) and plugs the other end
/// into the lab bridge.
pub fn create_node_link(lab: &LabNames, node: &NodeNames, mac: Option<&str>) -> anyhow::Result<()> {
    add_netns(&node.netns)?;
    let mut args = vec![
        "link",
        "add",
        &node.bridge_port,
        "type",
        "veth",
        "peer",
        "name",
        CONTAINER_LINK,
    ];
    if let Some(mac) = mac {
        args.extend(["address", mac]);
    }
    args.extend(["netns", &node.netns]);
    ip_in(&lab.netns, &args)?;
    ip_in(
        &lab.netns,
        &["link", "set", &node.bridge_port, "addrgenmode", "none"],
    )?;
    ip_in(
        &lab.netns,
        &[
            "link",
            "set",
            &node.bridge_port,
            "master",
            &lab.bridge,
            "up",
        ],
    )
    .with_context(|| format!("connecting node {} to the lab bridge", node.node))
}

/// Creates a persistent tap device `tap` in the lab namespace as a port of its bridge,
/// without an address, for a QEMU machine of that namespace to plug its NIC into.
pub fn create_tap(lab: &LabNames, tap: &str) -> anyhow::Result<()> {
    ip_in(&lab.netns, &["tuntap", "add", "dev", tap, "mode", "tap"])?;
    ip_in(&lab.netns, &["link", "set", tap, "addrgenmode", "none"])?;
    ip_in(
        &lab.netns,
        &["link", "set", tap, "master", &lab.bridge, "up"],
    )
    .with_context(|| format!("plugging tap {tap} into the lab bridge"))
}

/// Whether the lab namespace holds its bridge.
pub fn lab_ready(lab: &LabNames) -> bool {
    netns_exists(&lab.netns) && link_exists(&lab.netns, &lab.bridge)
}

/// Whether a node's namespace holds `host0` (and so its veth peer on the bridge).
pub fn node_link_ready(netns: &str) -> bool {
    netns_exists(netns) && link_exists(netns, CONTAINER_LINK)
}

fn link_exists(netns: &str, link: &str) -> bool {
    Command::new("ip")
        .args(["-n", netns, "link", "show", "dev", link])
        .output_text()
        .is_ok()
}

/// Deletes a namespace; the links in it (bridge, veth ends) go with it. Gone already is
/// fine.
pub fn delete_netns(name: &str) -> anyhow::Result<()> {
    if !netns_exists(name) {
        return Ok(());
    }
    Command::new("ip")
        .args(["netns", "del", name])
        .run()
        .with_context(|| format!("deleting network namespace {name}"))
}

/// The IPv4 addresses (with prefix) on `host0` in a node's namespace.
pub fn container_addresses(netns: &str) -> Vec<String> {
    if !netns_exists(netns) {
        return Vec::new();
    }
    Command::new("ip")
        .args([
            "-n",
            netns,
            "-4",
            "-o",
            "addr",
            "show",
            "dev",
            CONTAINER_LINK,
        ])
        .output_text()
        .map(|text| parse_addresses(&text))
        .unwrap_or_default()
}

/// The addresses in `ip -o addr show` lines (`2: host0    inet 10.77.0.12/24 brd ...`).
pub fn parse_addresses(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|word| *word == "inet" || *word == "inet6")?;
            words.next().map(str::to_string)
        })
        .collect()
}

fn add_netns(name: &str) -> anyhow::Result<()> {
    Command::new("ip")
        .args(["netns", "add", name])
        .run()
        .with_context(|| format!("creating network namespace {name}"))
}

fn ip_in(netns: &str, args: &[&str]) -> anyhow::Result<()> {
    Command::new("ip").args(["-n", netns]).args(args).run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_from_ip_lines() {
        // (ip -o output, addresses)
        let table: [(&str, &[&str]); 3] = [
            (
                "2: host0    inet 10.77.0.12/24 brd 10.77.0.255 scope global host0\\       valid_lft forever preferred_lft forever\n",
                &["10.77.0.12/24"],
            ),
            (
                "2: host0    inet 10.77.0.12/24 scope global host0\n2: host0    inet 10.77.0.99/24 scope global secondary host0\n",
                &["10.77.0.12/24", "10.77.0.99/24"],
            ),
            ("", &[]),
        ];
        for (text, addresses) in table {
            assert_eq!(parse_addresses(text), addresses, "{text}");
        }
    }
}
