//! Raw manifest → validated [`Cluster`], collecting every problem on the way.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use toml::Spanned;

use super::raw;
use super::{
    AptRepository, Bootstrap, BuildSettings, Cluster, DEFAULT_MIRROR, DEFAULT_SOURCE_DATE_EPOCH,
    Debian, Format, ManifestFile, Network, Node, SUITE, Vendor,
};
use crate::diag::{Diagnostics, InvalidInput, Source};
use crate::hash::sha256_hex;
use crate::role::RoleSet;
use crate::tomldoc::Document;

const SECTIONS: &[&str] = &[
    "cluster", "debian", "network", "ssh", "build", "vendor", "nodes",
];

/// Checks a manifest and builds its model, or returns every problem found.
pub fn resolve(source: &Source, bytes: &[u8], roles: &RoleSet) -> Result<Cluster, InvalidInput> {
    let mut d = Diagnostics::new();
    let Some(doc) = Document::parse(source, &mut d) else {
        return d
            .into_result(())
            .map(|_| unreachable!("parse failed with no diagnostics"));
    };
    doc.reject_unknown_top_level(SECTIONS, &mut d);
    let mut check = Checker {
        doc: &doc,
        d: &mut d,
    };

    let cluster = check.section::<raw::ClusterSection>("cluster", true);
    let debian = check.section::<raw::DebianSection>("debian", false);
    let network = check.section::<raw::NetworkSection>("network", true);
    let ssh = check.section::<raw::SshSection>("ssh", false);
    let build = check.section::<raw::BuildSection>("build", false);
    let raw_nodes = check.nodes();

    let name = cluster
        .as_ref()
        .map(|c| check.label(&c.name, "cluster name"));
    let domain = cluster.as_ref().map(|c| check.domain(&c.domain));
    let debian = check.debian(debian);
    let network = network.and_then(|n| check.network(n));
    let nodes = check.resolve_nodes(&raw_nodes, network.as_ref(), roles);
    let ssh_authorized_keys = ssh.map(|s| check.ssh_keys(s)).unwrap_or_default();
    let build = check.build(build);
    let vendor = check.vendor();
    // Counting nodes when some failed to decode or resolve would only add noise.
    let every_node_resolved =
        nodes.len() == raw_nodes.len() && raw_nodes.len() == check.declared_nodes();
    if every_node_resolved {
        check.node_counts(&raw_nodes, &nodes, roles);
    }
    check.vendor_needed(&raw_nodes, &nodes, &vendor, roles);

    let (Some(name), Some(domain), Some(network), Some(vendor)) = (name, domain, network, vendor)
    else {
        return d
            .into_result(())
            .map(|_| unreachable!("a section is missing but no diagnostic"));
    };
    d.into_result(Cluster {
        name,
        domain,
        debian,
        network,
        nodes,
        ssh_authorized_keys,
        vendor,
        build,
        manifest: ManifestFile {
            path: source.path.clone(),
            sha256: sha256_hex(bytes),
        },
    })
}

struct Checker<'a, 's> {
    doc: &'a Document<'s>,
    d: &'a mut Diagnostics,
}

impl Checker<'_, '_> {
    fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>, hint: &str) {
        self.d
            .at(self.doc.source, span, message, Some(hint.to_string()));
    }

    fn section<T: serde::de::DeserializeOwned>(&mut self, key: &str, required: bool) -> Option<T> {
        match self.doc.get(key) {
            Some(value) => self.doc.decode(value, self.d),
            None => {
                if required {
                    self.error(
                        None,
                        format!("missing section [{key}]"),
                        "see the manifest reference in README.md",
                    );
                }
                None
            }
        }
    }

    fn nodes(&mut self) -> Vec<raw::NodeEntry> {
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

    fn declared_nodes(&self) -> usize {
        self.doc
            .get("nodes")
            .and_then(|value| value.get_ref().as_array())
            .map_or(0, |array| array.len())
    }

    fn label(&mut self, name: &Spanned<String>, what: &str) -> String {
        if !is_dns_label(name.get_ref()) {
            self.error(
                Some(name.span()),
                format!("invalid {what} `{}`", name.get_ref()),
                "use 1-63 lower-case letters, digits and inner hyphens (a DNS label)",
            );
        }
        name.get_ref().clone()
    }

    fn domain(&mut self, domain: &Spanned<String>) -> String {
        let valid = !domain.get_ref().is_empty() && domain.get_ref().split('.').all(is_dns_label);
        if !valid {
            self.error(
                Some(domain.span()),
                format!("invalid domain `{}`", domain.get_ref()),
                "use DNS labels separated by dots, e.g. pbx.example.com",
            );
        }
        domain.get_ref().clone()
    }

    fn debian(&mut self, raw: Option<raw::DebianSection>) -> Debian {
        let raw = raw.unwrap_or(raw::DebianSection {
            suite: None,
            mirror: None,
            architecture: None,
            components: None,
        });
        if let Some(suite) = &raw.suite.as_ref().filter(|s| s.get_ref() != SUITE) {
            self.error(
                Some(suite.span()),
                format!("unsupported suite `{}`", suite.get_ref()),
                "the appliances are Debian 13: set suite = \"trixie\" or leave it out",
            );
        }
        if let Some(arch) = &raw.architecture.as_ref().filter(|a| a.get_ref() != "amd64") {
            self.error(
                Some(arch.span()),
                format!("unsupported architecture `{}`", arch.get_ref()),
                "only amd64 is built; leave architecture out",
            );
        }
        let mirror = raw.mirror.map_or(DEFAULT_MIRROR.to_string(), |mirror| {
            if !(mirror.get_ref().starts_with("http://")
                || mirror.get_ref().starts_with("https://"))
            {
                self.error(
                    Some(mirror.span()),
                    format!("mirror `{}` is not an http(s) URL", mirror.get_ref()),
                    "write a URL such as http://deb.debian.org/debian",
                );
            }
            mirror.get_ref().trim_end_matches('/').to_string()
        });
        Debian {
            suite: SUITE.to_string(),
            mirror,
            architecture: "amd64".to_string(),
            components: raw.components.unwrap_or_else(|| vec!["main".to_string()]),
        }
    }

    fn network(&mut self, raw: raw::NetworkSection) -> Option<Network> {
        let cidr: Option<Ipv4Net> = raw.cidr.get_ref().parse().ok();
        if cidr.is_none() {
            self.error(
                Some(raw.cidr.span()),
                format!("invalid network `{}`", raw.cidr.get_ref()),
                "write an IPv4 network in CIDR form, e.g. 192.168.10.0/24",
            );
        }
        let cidr = cidr.map(|c| c.trunc());
        let gateway = self.ipv4(&raw.gateway, "gateway");
        if let (Some(cidr), Some(gateway)) = (cidr, gateway)
            && !cidr.contains(&gateway)
        {
            self.error(
                Some(raw.gateway.span()),
                format!("gateway {gateway} is outside the network {cidr}"),
                "pick a gateway inside the cluster network",
            );
        }
        let mut dns = Vec::new();
        for server in &raw.dns {
            match server.get_ref().parse::<IpAddr>() {
                Ok(ip) => dns.push(ip),
                Err(_) => self.error(
                    Some(server.span()),
                    format!("invalid DNS server `{}`", server.get_ref()),
                    "write an IP address",
                ),
            }
        }
        Some(Network {
            cidr: cidr?,
            prefix_len: cidr?.prefix_len(),
            gateway: gateway?,
            dns,
            ntp: raw.ntp,
        })
    }

    fn ipv4(&mut self, text: &Spanned<String>, what: &str) -> Option<Ipv4Addr> {
        let parsed = text.get_ref().parse().ok();
        if parsed.is_none() {
            self.error(
                Some(text.span()),
                format!("invalid {what} address `{}`", text.get_ref()),
                "write an IPv4 address such as 192.168.10.31",
            );
        }
        parsed
    }

    fn resolve_nodes(
        &mut self,
        raw: &[raw::NodeEntry],
        network: Option<&Network>,
        roles: &RoleSet,
    ) -> Vec<Node> {
        let mut names = HashMap::new();
        let mut addresses = HashMap::new();
        let mut macs = HashMap::new();
        let mut nodes = Vec::new();
        for entry in raw {
            let name = self.label(&entry.name, "node name");
            self.unique(&mut names, name.clone(), entry.name.span(), &name, "name");
            let role_known = roles.get(entry.role.get_ref()).is_some();
            if !role_known {
                let hint = format!("use one of: {}", roles.names().join(", "));
                self.error(
                    Some(entry.role.span()),
                    format!("unknown role `{}` for node {name}", entry.role.get_ref()),
                    &hint,
                );
            }
            let address = self.ipv4(&entry.address, "node");
            if let Some(address) = address {
                self.unique(
                    &mut addresses,
                    address,
                    entry.address.span(),
                    &name,
                    "address",
                );
                if let Some(network) = network {
                    self.in_network(address, network, &entry.address, &name);
                }
            }
            let mac = entry.mac.as_ref().and_then(|mac| {
                let normalized = normalize_mac(mac.get_ref());
                if normalized.is_none() {
                    self.error(
                        Some(mac.span()),
                        format!("invalid MAC address `{}`", mac.get_ref()),
                        "write six hex pairs separated by colons, e.g. 52:54:00:12:34:56",
                    );
                }
                normalized
            });
            if let (Some(mac), Some(raw_mac)) = (&mac, &entry.mac) {
                self.unique(&mut macs, mac.clone(), raw_mac.span(), &name, "MAC address");
            }
            let memory = entry.memory.as_ref().and_then(|m| self.size(m, "memory"));
            let disk = entry.disk.as_ref().and_then(|m| self.size(m, "disk"));
            if let Some(device) = &entry.data_disk
                && !device.get_ref().starts_with("/dev/")
            {
                self.error(
                    Some(device.span()),
                    format!("data disk `{}` is not a device path", device.get_ref()),
                    "name the device, e.g. /dev/vdb or /dev/disk/by-id/...",
                );
            }
            if let (Some(address), true) = (address, role_known) {
                nodes.push(Node {
                    name,
                    role: entry.role.get_ref().clone(),
                    address,
                    mac,
                    vcpus: entry.vcpus.as_ref().map(|v| *v.get_ref()),
                    memory,
                    disk,
                    data_disk: entry.data_disk.as_ref().map(|d| d.get_ref().clone()),
                });
            }
        }
        nodes
    }

    /// Records `key` as used by node `name`, or reports the earlier node that uses it.
    fn unique<K: std::hash::Hash + Eq>(
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

    fn in_network(
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

    fn size(&mut self, text: &Spanned<String>, what: &str) -> Option<u64> {
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

    fn ssh_keys(&mut self, raw: raw::SshSection) -> Vec<String> {
        const KINDS: &[&str] = &[
            "ssh-ed25519",
            "ssh-rsa",
            "ecdsa-sha2-",
            "sk-ssh-ed25519@",
            "sk-ecdsa-sha2-",
        ];
        for key in &raw.authorized_keys {
            let kind = key.get_ref().split_whitespace().next().unwrap_or("");
            let has_body = key.get_ref().split_whitespace().nth(1).is_some();
            if !KINDS.iter().any(|k| kind.starts_with(k)) || !has_body {
                self.error(
                    Some(key.span()),
                    "not an OpenSSH public key",
                    "paste one line of a .pub file, e.g. `ssh-ed25519 AAAA... you@host`",
                );
            }
        }
        raw.authorized_keys
            .into_iter()
            .map(Spanned::into_inner)
            .collect()
    }

    fn build(&mut self, raw: Option<raw::BuildSection>) -> BuildSettings {
        let raw = raw.unwrap_or(raw::BuildSection {
            source_date_epoch: None,
            bootstrap: None,
            formats: None,
        });
        let bootstrap = match raw.bootstrap.as_ref().map(|b| b.get_ref().as_str()) {
            None | Some("mmdebstrap") => Bootstrap::Mmdebstrap,
            Some("debootstrap") => Bootstrap::Debootstrap,
            Some(other) => {
                let span = raw.bootstrap.as_ref().map(Spanned::span);
                self.error(
                    span,
                    format!("unknown bootstrap tool `{other}`"),
                    "use \"mmdebstrap\" or \"debootstrap\"",
                );
                Bootstrap::Mmdebstrap
            }
        };
        let mut formats = Vec::new();
        for format in raw.formats.unwrap_or_default() {
            match Format::ALL.iter().find(|f| f.name() == format.get_ref()) {
                Some(f) => formats.push(*f),
                None => {
                    let names: Vec<_> = Format::ALL.iter().map(|f| f.name()).collect();
                    self.error(
                        Some(format.span()),
                        format!("unknown format `{}`", format.get_ref()),
                        &format!("use one of: {}", names.join(", ")),
                    );
                }
            }
        }
        if formats.is_empty() {
            formats.push(Format::Tar);
        }
        let source_date_epoch = match raw.source_date_epoch {
            Some(epoch) if *epoch.get_ref() < 0 => {
                self.error(
                    Some(epoch.span()),
                    "source_date_epoch is negative",
                    "write seconds since 1970, e.g. 1754697600",
                );
                DEFAULT_SOURCE_DATE_EPOCH
            }
            Some(epoch) => *epoch.get_ref(),
            None => DEFAULT_SOURCE_DATE_EPOCH,
        };
        BuildSettings {
            source_date_epoch,
            bootstrap,
            formats,
        }
    }

    fn vendor(&mut self) -> Option<Vendor> {
        let Some(value) = self.doc.get("vendor") else {
            return Some(Vendor::Undeclared);
        };
        if let Some(text) = value.get_ref().as_str() {
            if text != "skip" {
                self.error(
                    Some(value.span()),
                    format!("vendor = \"{text}\" is not understood"),
                    "write vendor = \"skip\", or declare [[vendor.apt]] / [[vendor.local]] sources",
                );
            }
            return Some(Vendor::Skip);
        }
        let raw: raw::VendorSection = self.doc.decode(value, self.d)?;
        let base = self
            .doc
            .source
            .path
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let mut apt = Vec::new();
        for repo in raw.apt {
            let signing_key = base.join(repo.signing_key.get_ref());
            if !signing_key.is_file() {
                self.error(
                    Some(repo.signing_key.span()),
                    format!("signing key {} not found", signing_key.display()),
                    "give the path of the repository's OpenPGP key, relative to the manifest",
                );
            }
            for env in [&repo.username_env, &repo.password_env]
                .into_iter()
                .flatten()
            {
                if !is_env_name(env.get_ref()) {
                    self.error(Some(env.span()), format!("`{}` is not an environment variable name", env.get_ref()), "name the variable that holds the credential, e.g. VENDOR_TOKEN; never the credential itself");
                }
            }
            if !repo.uri.get_ref().starts_with("http://")
                && !repo.uri.get_ref().starts_with("https://")
            {
                self.error(
                    Some(repo.uri.span()),
                    format!("repository `{}` is not an http(s) URL", repo.uri.get_ref()),
                    "write the repository's URL",
                );
            }
            apt.push(AptRepository {
                name: self.label(&repo.name, "repository name"),
                uri: repo.uri.into_inner(),
                suite: repo.suite,
                components: repo.components,
                signing_key,
                username_env: repo.username_env.map(Spanned::into_inner),
                password_env: repo.password_env.map(Spanned::into_inner),
            });
        }
        let mut local = Vec::new();
        for folder in raw.local {
            let path: PathBuf = base.join(folder.path.get_ref());
            if !path.is_dir() {
                self.error(
                    Some(folder.path.span()),
                    format!("vendor folder {} not found", path.display()),
                    "give a folder of .deb files, relative to the manifest",
                );
            }
            local.push(path);
        }
        Some(Vendor::Sources { apt, local })
    }

    fn node_counts(&mut self, raw: &[raw::NodeEntry], nodes: &[Node], roles: &RoleSet) {
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

    fn vendor_needed(
        &mut self,
        raw: &[raw::NodeEntry],
        nodes: &[Node],
        vendor: &Option<Vendor>,
        roles: &RoleSet,
    ) {
        if !matches!(vendor, Some(Vendor::Undeclared)) {
            return;
        }
        for (name, role) in &roles.roles {
            if role.packages.vendor.is_empty() || !nodes.iter().any(|n| &n.role == name) {
                continue;
            }
            let span = raw
                .iter()
                .find(|e| e.role.get_ref() == name)
                .map(|e| e.role.span());
            let packages = role.packages.vendor.join(", ");
            self.error(span, format!("role {name} needs vendor packages ({packages}) but the manifest declares no vendor source"), "declare [[vendor.apt]] or [[vendor.local]] sources, or opt out with vendor = \"skip\"");
        }
    }
}

/// An RFC 1123 label: 1-63 of `[a-z0-9-]`, not starting or ending with `-`.
pub fn is_dns_label(text: &str) -> bool {
    (1..=63).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

fn is_env_name(text: &str) -> bool {
    !text.is_empty()
        && !text.starts_with(|c: char| c.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
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
