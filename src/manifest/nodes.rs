//! Checks of the `[[nodes]]` tables: names, roles, addresses, MACs, sizes, and the node
//! counts each role's rules ask for.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::Range;

use toml::Spanned;

use super::ranges::NameRange;
use super::raw;
use super::resolve::{Checker, is_dns_label};
use super::{Network, Node};
use crate::role::RoleSet;

/// The least memory a node boots a role image in (the live root's copy in RAM aside).
const MIN_MEMORY: u64 = 1 << 30;
/// The least system disk a role image fits on, with room to grow.
const MIN_DISK: u64 = 4 << 30;

/// What the nodes so far use, each with the node and line that took it first.
#[derive(Default)]
struct Seen {
    names: HashMap<String, (String, usize)>,
    addresses: HashMap<Ipv4Addr, (String, usize)>,
    macs: HashMap<String, (String, usize)>,
}

impl Checker<'_, '_> {
    pub(super) fn nodes(&mut self) -> Vec<raw::NodeEntry> {
        let Some(value) = self.doc.get("nodes") else {
            self.error(
                None,
                "the manifest declares no [[nodes]]",
                "add one [[nodes]] table per server",
            );
            return Vec::new();
        };
        let Some(array) = value.get_ref().as_array() else {
            let span = Some(value.span());
            self.error(
                span,
                "`nodes` must be an array of tables",
                "write one [[nodes]] table per server",
            );
            return Vec::new();
        };
        let items: Vec<_> = array.iter().cloned().collect();
        items
            .iter()
            .filter_map(|item| self.doc.decode(item, self.d))
            .collect()
    }

    pub(super) fn declared_nodes(&self) -> usize {
        self.doc
            .get("nodes")
            .and_then(|value| value.get_ref().as_array())
            .map_or(0, |array| array.len())
    }

    /// Every node of the manifest, ranges expanded, each checked; the count says how many
    /// nodes the entries stand for, resolved or not.
    pub(super) fn resolve_nodes(
        &mut self,
        raw: &[raw::NodeEntry],
        network: Option<&Network>,
        roles: &RoleSet,
    ) -> (Vec<Node>, usize) {
        let mut seen = Seen::default();
        let mut nodes = Vec::new();
        let mut declared = 0;
        for entry in raw {
            let role_known = roles.get(entry.role.get_ref()).is_some();
            if !role_known {
                let hint = format!("use one of: {}", roles.names().join(", "));
                self.error(
                    Some(entry.role.span()),
                    format!(
                        "unknown role `{}` for node {}",
                        entry.role.get_ref(),
                        entry.name.get_ref()
                    ),
                    &hint,
                );
            }
            let shared = self.shared_settings(entry);
            let range = match NameRange::parse(entry.name.get_ref()) {
                Ok(range) => range,
                Err(problem) => {
                    self.error(
                        Some(entry.name.span()),
                        format!("invalid node range `{}`: {problem}", entry.name.get_ref()),
                        "write one counter such as tele-node-[001-200]",
                    );
                    declared += 1;
                    continue;
                }
            };
            let Some(range) = range else {
                declared += 1;
                let name = self.label(&entry.name, "node name");
                let address = self.ipv4(&entry.address, "node");
                let mac = self.mac(entry, &name, &mut seen);
                if let Some(address) = address {
                    let node = Node {
                        name,
                        address,
                        mac,
                        ..shared
                    };
                    self.checked(node, entry, network, &mut seen, role_known, &mut nodes);
                }
                continue;
            };
            declared += range.count() as usize;
            self.expand(
                entry, &range, shared, network, &mut seen, role_known, &mut nodes,
            );
        }
        (nodes, declared)
    }

    /// The nodes of a range entry, each checked under its own name.
    #[allow(clippy::too_many_arguments)]
    fn expand(
        &mut self,
        entry: &raw::NodeEntry,
        range: &NameRange,
        shared: Node,
        network: Option<&Network>,
        seen: &mut Seen,
        role_known: bool,
        nodes: &mut Vec<Node>,
    ) {
        let pattern = entry.name.get_ref();
        for name in [range.name(0), range.name(range.count() - 1)] {
            if !is_dns_label(&name) {
                self.error(
                    Some(entry.name.span()),
                    format!("invalid node name `{name}` in the range `{pattern}`"),
                    "use 1-63 lower-case letters, digits and inner hyphens (a DNS label)",
                );
                return;
            }
        }
        if let Some(mac) = &entry.mac {
            self.error(
                Some(mac.span()),
                format!("the range `{pattern}` cannot share one MAC address"),
                "a MAC belongs to one machine: write the nodes that have one as entries of their own",
            );
        }
        let Some(start) = self.ipv4(&entry.address, "first node") else {
            return;
        };
        if let Some(network) = network {
            let beyond = (0..range.count()).find(|&index| {
                NameRange::address(start, index).is_none_or(|address| {
                    !network.cidr.contains(&address) || address == network.cidr.broadcast()
                })
            });
            if let Some(index) = beyond {
                self.error(
                    Some(entry.address.span()),
                    format!(
                        "the range `{pattern}` runs past the network {}: its node {} would get no address in it",
                        network.cidr,
                        range.name(index)
                    ),
                    "start lower, shorten the range, or widen [network].cidr",
                );
                return;
            }
        }
        for index in 0..range.count() {
            let address = NameRange::address(start, index).expect("checked against the network");
            let node = Node {
                name: range.name(index),
                address,
                ..shared.clone()
            };
            self.within = Some(format!("{} ({address}, from `{pattern}`)", node.name));
            self.checked(node, entry, network, seen, role_known, nodes);
            self.within = None;
        }
    }

    /// Checks what makes `node` one of a kind (its name and address) and keeps it.
    fn checked(
        &mut self,
        node: Node,
        entry: &raw::NodeEntry,
        network: Option<&Network>,
        seen: &mut Seen,
        role_known: bool,
        nodes: &mut Vec<Node>,
    ) {
        let name = node.name.clone();
        self.unique(
            &mut seen.names,
            name.clone(),
            entry.name.span(),
            &name,
            "name",
        );
        self.unique(
            &mut seen.addresses,
            node.address,
            entry.address.span(),
            &name,
            "address",
        );
        if let Some(network) = network {
            self.in_network(node.address, network, &entry.address, &name);
        }
        if role_known {
            nodes.push(node);
        }
    }

    /// The MAC of a single node entry, normalized and checked.
    fn mac(&mut self, entry: &raw::NodeEntry, name: &str, seen: &mut Seen) -> Option<String> {
        let raw_mac = entry.mac.as_ref()?;
        let Some(mac) = normalize_mac(raw_mac.get_ref()) else {
            self.error(
                Some(raw_mac.span()),
                format!("invalid MAC address `{}`", raw_mac.get_ref()),
                "write six hex pairs separated by colons, e.g. 52:54:00:12:34:56",
            );
            return None;
        };
        self.unique(
            &mut seen.macs,
            mac.clone(),
            raw_mac.span(),
            name,
            "MAC address",
        );
        Some(mac)
    }

    /// What every node of an entry has alike: role, sizes and data disk, checked once.
    /// Name, address and MAC are the caller's to fill in.
    fn shared_settings(&mut self, entry: &raw::NodeEntry) -> Node {
        let name = entry.name.get_ref();
        if let Some(vcpus) = entry.vcpus.as_ref().filter(|v| *v.get_ref() == 0) {
            self.error(
                Some(vcpus.span()),
                format!("node {name} has 0 vCPUs"),
                "give it at least 1, or leave vcpus out",
            );
        }
        let memory = entry.memory.as_ref().and_then(|m| self.size(m, "memory"));
        let disk = entry.disk.as_ref().and_then(|m| self.size(m, "disk"));
        for (given, size, least, what) in [
            (&entry.memory, memory, MIN_MEMORY, "memory"),
            (&entry.disk, disk, MIN_DISK, "disk"),
        ] {
            if let (Some(given), Some(size)) = (given, size)
                && size < least
            {
                self.error(
                    Some(given.span()),
                    format!(
                        "node {name}'s {what} of {} is too small to boot a role image",
                        given.get_ref()
                    ),
                    &format!(
                        "give it at least {}",
                        bytesize::ByteSize(least).display().iec()
                    ),
                );
            }
        }
        if let Some(device) = &entry.data_disk
            && !device.get_ref().starts_with("/dev/")
        {
            self.error(
                Some(device.span()),
                format!("data disk `{}` is not a device path", device.get_ref()),
                "name the device, e.g. /dev/vdb or /dev/disk/by-id/...",
            );
        }
        Node {
            name: String::new(),
            role: entry.role.get_ref().clone(),
            address: Ipv4Addr::UNSPECIFIED,
            mac: None,
            vcpus: entry.vcpus.as_ref().map(|v| *v.get_ref()),
            memory,
            disk,
            data_disk: entry.data_disk.as_ref().map(|d| d.get_ref().clone()),
        }
    }

    /// Records `key` as used by node `name`, or reports the earlier node that uses it.
    pub(super) fn unique<K: std::hash::Hash + Eq>(
        &mut self,
        seen: &mut HashMap<K, (String, usize)>,
        key: K,
        span: Range<usize>,
        name: &str,
        what: &str,
    ) {
        if let Some((other, line)) = seen.get(&key) {
            let message = format!("duplicate {what}: node {other} (line {line}) has it too");
            self.error(
                Some(span),
                message,
                &format!("give every node its own {what}"),
            );
        } else {
            let (line, _) = self.doc.source.line_col(span.start);
            seen.insert(key, (name.to_string(), line));
        }
    }

    pub(super) fn in_network(
        &mut self,
        address: Ipv4Addr,
        network: &Network,
        at: &Spanned<String>,
        name: &str,
    ) {
        let cidr = network.cidr;
        if !cidr.contains(&address) {
            self.error(
                Some(at.span()),
                format!("address {address} of node {name} is outside the network {cidr}"),
                "pick an address inside [network].cidr, or widen the network",
            );
        } else if address == cidr.network() || address == cidr.broadcast() {
            self.error(
                Some(at.span()),
                format!(
                    "address {address} of node {name} is the network's own or broadcast address"
                ),
                "pick a host address",
            );
        } else if address == network.gateway {
            self.error(
                Some(at.span()),
                format!("address {address} of node {name} is the gateway's"),
                "pick another address",
            );
        }
    }

    pub(super) fn size(&mut self, text: &Spanned<String>, what: &str) -> Option<u64> {
        let parsed = text
            .get_ref()
            .parse::<bytesize::ByteSize>()
            .ok()
            .map(|s| s.as_u64());
        if parsed.is_none() {
            self.error(
                Some(text.span()),
                format!("invalid {what} size `{}`", text.get_ref()),
                "write a size such as \"16GiB\" or \"500GB\"",
            );
        }
        parsed
    }

    pub(super) fn node_counts(&mut self, raw: &[raw::NodeEntry], nodes: &[Node], roles: &RoleSet) {
        for (name, role) in &roles.roles {
            let count = nodes.iter().filter(|n| &n.role == name).count();
            let rules = &role.nodes;
            let first = raw
                .iter()
                .find(|e| e.role.get_ref() == name)
                .map(|e| e.role.span());
            let why = if rules.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", rules.reason)
            };
            let anchor = first.or_else(|| self.doc.key_span("nodes"));
            if count < rules.min {
                let plural = if rules.min == 1 { "" } else { "s" };
                self.error(
                    anchor,
                    format!(
                        "role {name} needs at least {} node{plural}, the manifest has {count}{why}",
                        rules.min
                    ),
                    &format!("add [[nodes]] with role = \"{name}\""),
                );
            } else if rules.odd && count % 2 == 0 {
                self.error(
                    anchor,
                    format!(
                        "role {name} needs an odd number of nodes, the manifest has {count}{why}"
                    ),
                    "add or remove one node of this role",
                );
            } else if let Some(multiple) = rules.multiple_of.filter(|m| count % m != 0) {
                self.error(anchor, format!("role {name} needs a multiple of {multiple} nodes, the manifest has {count}{why}"), &format!("add or remove nodes to make a multiple of {multiple}"));
            }
        }
    }
}

/// `52:54:00:AB:cd:01` (or with `-`) → `52:54:00:ab:cd:01`.
pub fn normalize_mac(text: &str) -> Option<String> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    let valid = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    valid.then(|| parts.join(":").to_ascii_lowercase())
}
