//! The network step: a static systemd-networkd configuration for the node's address,
//! unless cloud-init already configured it.
//!
//! A NoCloud seed with `network-config` makes cloud-init write the node's static
//! address itself. Without one, cloud-init may still write a DHCP fallback; that file
//! does not carry the node's address, so it does not count as configured.

use std::path::PathBuf;

use anyhow::{Context as _, bail};

use super::config::{ClusterView, NodeView};
use super::host::Invocation;
use super::root::{Root, read_optional, write_atomic};
use super::sources::interface_macs;
use super::steps::{Context, Outcome};

/// The file the agent writes. networkd applies the first file (in name order) that matches
/// a link, so it must sort before cloud-init's DHCP fallback, `10-cloud-init-<link>.network`.
pub const NETWORK_FILE: &str = "/etc/systemd/network/05-r2a.network";

/// Interface names a node's cluster interface may have when the manifest lists no MAC:
/// predictable names, the classic name, and systemd-nspawn's container side.
pub const INTERFACE_PATTERNS: [&str; 3] = ["en*", "eth*", "host0"];

/// Where cloud-init's renderers put network configuration, as (folder, file name part).
const CLOUD_INIT_OUTPUTS: [(&str, &str); 3] = [
    ("/etc/systemd/network", "cloud-init"),
    ("/etc/netplan", ".yaml"),
    ("/etc/network/interfaces.d", "cloud-init"),
];

/// Writes [`NETWORK_FILE`] when cloud-init gave no configuration for the node's address.
pub fn ensure_network(context: &mut Context<'_>) -> anyhow::Result<Outcome> {
    let address = context.node.address.to_string();
    if let Some(path) = cloud_init_config_with(context.root, &address)? {
        return Ok(Outcome::unchanged(format!(
            "cloud-init configured {address} in {}",
            path.display()
        )));
    }
    let interface = match &context.node.mac {
        Some(mac) => InterfaceMatch::Mac(mac.to_ascii_lowercase()),
        None => first_cluster_interface(context.root)?,
    };
    let wanted = render_network_file(context.node, context.cluster, &interface);
    let path = context.root.path(NETWORK_FILE);
    if read_optional(&path)?.as_deref() == Some(wanted.as_str()) {
        return Ok(Outcome::unchanged(format!(
            "{} already configures {address}",
            path.display()
        )));
    }
    write_atomic(&path, wanted.as_bytes(), 0o644)?;
    if read_optional(&path)?.as_deref() != Some(wanted.as_str()) {
        bail!(
            "{} does not hold the configuration just written",
            path.display()
        );
    }
    // Early in boot (r2a-early.service) networkd is not running yet and reads the file
    // when it starts; later, it must be told.
    let networkd = Invocation::new(
        "systemctl",
        ["is-active", "--quiet", "systemd-networkd.service"],
    );
    if context.host.is_live() && context.host.probe(&networkd, 3)?.is_some() {
        context
            .host
            .run(&Invocation::new("networkctl", ["reload"]))
            .context("applying the network configuration")?;
    }
    Ok(Outcome::changed(format!(
        "wrote {} for {address} on {interface}",
        path.display()
    )))
}

/// How the `[Match]` section finds the node's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceMatch {
    /// By the MAC address the manifest lists.
    Mac(String),
    /// By interface name (a name, or patterns).
    Names(Vec<String>),
}

impl std::fmt::Display for InterfaceMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InterfaceMatch::Mac(mac) => write!(f, "the interface with MAC {mac}"),
            InterfaceMatch::Names(names) => write!(f, "interface {}", names.join(" ")),
        }
    }
}

/// The node's `.network` file.
pub fn render_network_file(
    node: &NodeView,
    cluster: &ClusterView,
    interface: &InterfaceMatch,
) -> String {
    let network = &cluster.network;
    let match_line = match interface {
        InterfaceMatch::Mac(mac) => format!("MACAddress={mac}"),
        InterfaceMatch::Names(names) => format!("Name={}", names.join(" ")),
    };
    let mut lines = vec![
        "# Written by r2a-node at first boot: cloud-init gave no configuration for this"
            .to_string(),
        "# node's address. Delete it together with /var/lib/r2a/done/network.json to redo."
            .to_string(),
        "[Match]".to_string(),
        match_line,
        String::new(),
        "[Network]".to_string(),
        format!("Address={}/{}", node.address, network.cidr.prefix_len()),
        format!("Gateway={}", network.gateway),
    ];
    lines.extend(network.dns.iter().map(|dns| format!("DNS={dns}")));
    lines.push(format!("Domains={}", cluster.domain));
    lines.push(String::new());
    lines.join("\n")
}

/// The first interface (by name) that looks like a cluster interface; the name patterns
/// when none is visible. Matching one name rather than the patterns keeps a second NIC
/// from getting the same address.
fn first_cluster_interface(root: &Root) -> anyhow::Result<InterfaceMatch> {
    let names: Vec<String> = interface_macs(root)?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let first = names
        .into_iter()
        .find(|name| name.starts_with("en") || name.starts_with("eth") || name == "host0");
    Ok(InterfaceMatch::Names(match first {
        Some(name) => vec![name],
        None => INTERFACE_PATTERNS.map(str::to_string).to_vec(),
    }))
}

/// A file cloud-init wrote that configures `address`, if any.
fn cloud_init_config_with(root: &Root, address: &str) -> anyhow::Result<Option<PathBuf>> {
    for (dir, name_part) in CLOUD_INIT_OUTPUTS {
        let dir = root.path(dir);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error).with_context(|| format!("listing {}", dir.display())),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| {
                path.file_name()
                    .is_some_and(|name| name.to_string_lossy().contains(name_part))
            })
            .collect();
        paths.sort();
        for path in paths {
            let text = read_optional(&path)?.unwrap_or_default();
            if mentions_address(&text, address) {
                return Ok(Some(path));
            }
        }
    }
    Ok(None)
}

/// Whether `address` appears in `text` as a whole address (`192.168.10.1` is not in
/// `192.168.10.11/24`).
fn mentions_address(text: &str, address: &str) -> bool {
    text.match_indices(address).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + address.len()..].chars().next();
        let part_of_address = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit() || c == '.');
        !part_of_address(before) && !part_of_address(after)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::Config;
    use crate::agent::host::ScriptedHost;
    use crate::agent::testing::FakeRoot;

    fn run(fake: &FakeRoot, node: &str, host: &mut ScriptedHost) -> Outcome {
        let config = Config::load(&fake.root).unwrap();
        let node = config.cluster.node(node).unwrap().clone();
        let mut context = Context::new(&fake.root, host, &config, &node);
        ensure_network(&mut context).unwrap()
    }

    #[test]
    fn a_node_with_a_mac_gets_a_file_matching_it() {
        let fake = FakeRoot::db();
        let mut host = ScriptedHost::new(true);
        host.succeed("systemctl is-active --quiet systemd-networkd.service")
            .succeed("networkctl reload");
        assert!(run(&fake, "db1", &mut host).changed);
        assert_eq!(
            fake.read(NETWORK_FILE)
                .lines()
                .filter(|line| !line.starts_with('#'))
                .collect::<Vec<_>>(),
            [
                "[Match]",
                "MACAddress=52:54:00:00:00:11",
                "",
                "[Network]",
                "Address=192.168.10.11/24",
                "Gateway=192.168.10.1",
                "DNS=192.168.10.1",
                "DNS=192.168.10.2",
                "Domains=pbx.example.com",
            ]
        );
        assert_eq!(
            host.log(),
            [
                "systemctl is-active --quiet systemd-networkd.service",
                "networkctl reload"
            ]
        );

        host.clear_log();
        let before = fake.snapshot();
        assert!(!run(&fake, "db1", &mut host).changed);
        assert_eq!(fake.snapshot(), before);
        assert!(host.log().is_empty(), "{:?}", host.log());
    }

    #[test]
    fn a_node_without_a_mac_matches_the_first_cluster_interface_or_the_patterns() {
        let fake = FakeRoot::db();
        let mut offline = ScriptedHost::new(false);
        run(&fake, "db2", &mut offline);
        assert!(fake.read(NETWORK_FILE).contains("\nName=en* eth* host0\n"));
        assert!(
            fake.read(NETWORK_FILE)
                .contains("\nAddress=192.168.10.12/24\n")
        );

        fake.add_interface("wlan0", "02:00:00:00:00:01");
        fake.add_interface("ens5", "02:00:00:00:00:02");
        fake.add_interface("ens3", "02:00:00:00:00:03");
        run(&fake, "db2", &mut offline);
        assert!(fake.read(NETWORK_FILE).contains("\nName=ens3\n"));
        assert!(offline.log().is_empty(), "offline: no networkctl");
    }

    #[test]
    fn cloud_init_configuration_with_the_address_is_left_alone() {
        let fake = FakeRoot::db();
        fake.write(
            "/etc/systemd/network/10-cloud-init-eth0.network",
            "[Match]\nName=eth0\n[Network]\nAddress=192.168.10.11/24\n",
        );
        let outcome = run(&fake, "db1", &mut ScriptedHost::new(true));
        assert!(!outcome.changed);
        assert!(
            outcome.detail.contains("10-cloud-init-eth0.network"),
            "{}",
            outcome.detail
        );
        assert!(!fake.exists(NETWORK_FILE));
    }

    #[test]
    fn a_cloud_init_dhcp_fallback_does_not_count() {
        let fake = FakeRoot::db();
        fake.write(
            "/etc/netplan/50-cloud-init.yaml",
            "network: {version: 2, ethernets: {eth0: {dhcp4: true}}}\n# 192.168.10.111\n",
        );
        let mut host = ScriptedHost::new(true);
        host.succeed("systemctl is-active --quiet systemd-networkd.service")
            .succeed("networkctl reload");
        assert!(run(&fake, "db1", &mut host).changed);
        assert!(fake.exists(NETWORK_FILE));
    }

    #[test]
    fn before_networkd_starts_the_file_is_written_without_a_reload() {
        let fake = FakeRoot::db();
        let mut host = ScriptedHost::new(true);
        host.absent("systemctl is-active --quiet systemd-networkd.service");
        assert!(run(&fake, "db1", &mut host).changed);
        assert!(fake.exists(NETWORK_FILE));
        assert_eq!(
            host.log(),
            ["systemctl is-active --quiet systemd-networkd.service"],
            "networkd reads the file when it starts"
        );
    }

    #[test]
    fn addresses_match_whole() {
        assert!(mentions_address("Address=192.168.10.1/24", "192.168.10.1"));
        assert!(!mentions_address(
            "Address=192.168.10.11/24",
            "192.168.10.1"
        ));
        assert!(!mentions_address("gw 10.192.168.10.1", "192.168.10.1"));
    }
}
