//! Raw manifest → validated [`Cluster`], collecting every problem on the way.

use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;

use ipnet::Ipv4Net;
use toml::Spanned;

use super::raw;
use super::{
    Bootstrap, BuildSettings, Cluster, DEFAULT_MIRROR, DEFAULT_SECURITY_MIRROR,
    DEFAULT_SOURCE_DATE_EPOCH, DatabaseSettings, Debian, Format, ManifestFile, Network, NodeData,
    SUITE,
};
use crate::diag::{Diagnostics, InvalidInput, Source};
use crate::hash::sha256_hex;
use crate::role::RoleSet;
use crate::tomldoc::Document;

const SECTIONS: &[&str] = &[
    "cluster", "debian", "network", "ssh", "build", "database", "vendor", "nodes",
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
        within: None,
    };

    let cluster = check.section::<raw::ClusterSection>("cluster", true);
    let debian = check.section::<raw::DebianSection>("debian", false);
    let network = check.section::<raw::NetworkSection>("network", true);
    let ssh = check.section::<raw::SshSection>("ssh", false);
    let build = check.section::<raw::BuildSection>("build", false);
    let database = check.section::<raw::DatabaseSection>("database", false);
    let raw_nodes = check.nodes();

    let name = cluster
        .as_ref()
        .map(|c| check.label(&c.name, "cluster name"));
    let domain = cluster.as_ref().map(|c| check.domain(&c.domain));
    let debian = check.debian(debian);
    let network = network.and_then(|n| check.network(n));
    let (nodes, declared) = check.resolve_nodes(&raw_nodes, network.as_ref(), roles);
    let ssh_authorized_keys = check.ssh_keys(ssh);
    let build = check.build(build);
    let vendor = check.vendor();
    // Counting nodes when some failed to decode or resolve would only add noise.
    let every_node_resolved = nodes.len() == declared && raw_nodes.len() == check.declared_nodes();
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
        database: DatabaseSettings {
            synchronous: database.and_then(|d| d.synchronous).unwrap_or(true),
        },
        manifest: ManifestFile {
            path: source.path.clone(),
            sha256: sha256_hex(bytes),
        },
    })
}

pub(super) struct Checker<'a, 's> {
    pub(super) doc: &'a Document<'s>,
    pub(super) d: &'a mut Diagnostics,
    /// The node of a range being checked: its problems name it, since the manifest's
    /// text names only the range.
    pub(super) within: Option<String>,
}

impl Checker<'_, '_> {
    pub(super) fn error(
        &mut self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        hint: &str,
    ) {
        let message = match &self.within {
            Some(node) => format!("node {node}: {}", message.into()),
            None => message.into(),
        };
        self.d
            .at(self.doc.source, span, message, Some(hint.to_string()));
    }

    pub(super) fn section<T: serde::de::DeserializeOwned>(
        &mut self,
        key: &str,
        required: bool,
    ) -> Option<T> {
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

    pub(super) fn label(&mut self, name: &Spanned<String>, what: &str) -> String {
        if !is_dns_label(name.get_ref()) {
            self.error(
                Some(name.span()),
                format!("invalid {what} `{}`", name.get_ref()),
                "use 1-63 lower-case letters, digits and inner hyphens (a DNS label)",
            );
        }
        name.get_ref().clone()
    }

    pub(super) fn domain(&mut self, domain: &Spanned<String>) -> String {
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

    pub(super) fn debian(&mut self, raw: Option<raw::DebianSection>) -> Debian {
        let raw = raw.unwrap_or(raw::DebianSection {
            suite: None,
            mirror: None,
            architecture: None,
            components: None,
            security_mirror: None,
            security: None,
            updates: None,
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
        let mirror = self.mirror(raw.mirror.as_ref(), DEFAULT_MIRROR);
        let security_mirror = self.mirror(raw.security_mirror.as_ref(), DEFAULT_SECURITY_MIRROR);
        let components = match &raw.components {
            Some(given) => given
                .iter()
                .map(|c| self.apt_word(c, "component"))
                .collect(),
            None => vec!["main".to_string()],
        };
        let line = |uri: &str, suite: &str| format!("deb {uri} {suite} {}", components.join(" "));
        let mut sources = vec![line(&mirror, SUITE)];
        if raw.updates.unwrap_or(true) {
            sources.push(line(&mirror, &format!("{SUITE}-updates")));
        }
        if raw.security.unwrap_or(true) {
            sources.push(line(&security_mirror, &format!("{SUITE}-security")));
        }
        Debian {
            suite: SUITE.to_string(),
            mirror,
            architecture: "amd64".to_string(),
            components,
            sources,
        }
    }

    fn mirror(&mut self, given: Option<&Spanned<String>>, default: &str) -> String {
        match given {
            Some(mirror) => self.archive_url(mirror, "mirror"),
            None => default.to_string(),
        }
    }

    pub(super) fn network(&mut self, raw: raw::NetworkSection) -> Option<Network> {
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
        if let (Some(cidr), Some(gateway)) = (cidr, gateway) {
            if !cidr.contains(&gateway) {
                self.error(
                    Some(raw.gateway.span()),
                    format!("gateway {gateway} is outside the network {cidr}"),
                    "pick a gateway inside the cluster network",
                );
            } else if cidr.prefix_len() < 31
                && (gateway == cidr.network() || gateway == cidr.broadcast())
            {
                let which = if gateway == cidr.network() {
                    "network"
                } else {
                    "broadcast"
                };
                self.error(
                    Some(raw.gateway.span()),
                    format!(
                        "gateway {gateway} is the {which} address of {cidr}, which no host can have"
                    ),
                    "pick the router's own address (often the network's first host)",
                );
            }
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
            ntp: raw
                .ntp
                .iter()
                .map(|server| self.time_server(server))
                .collect(),
        })
    }

    pub(super) fn ipv4(&mut self, text: &Spanned<String>, what: &str) -> Option<Ipv4Addr> {
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

    pub(super) fn build(&mut self, raw: Option<raw::BuildSection>) -> BuildSettings {
        let raw = raw.unwrap_or(raw::BuildSection {
            source_date_epoch: None,
            bootstrap: None,
            formats: None,
            node_data: None,
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
        let node_data = match raw.node_data.as_ref().map(|n| n.get_ref().as_str()) {
            None | Some("image") => NodeData::Image,
            Some("seed") => NodeData::Seed,
            Some(other) => {
                let span = raw.node_data.as_ref().map(Spanned::span);
                self.error(
                    span,
                    format!("unknown node_data `{other}`"),
                    "use \"image\" (node files inside the role image) or \"seed\" (in each node's seed)",
                );
                NodeData::Image
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
            node_data,
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
