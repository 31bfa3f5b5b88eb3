//! The network step: the node's static address on its cluster interface, by cloud-init's
//! file when that file matches the right link, else by the agent's own networkd file.
//!
//! A NoCloud seed with `network-config` makes cloud-init write the node's static
//! address itself, but cloud-init's networkd renderer matches by the ethernet's id, so
//! the file may match no link of this machine, or several ([`super::links`] decides).
//! Without a seed, cloud-init may still write a DHCP fallback; that file does not carry
//! the node's address, so it does not count.

use std::path::Path;

use anyhow::{Context as _, bail};

use super::config::{ClusterView, NodeView};
use super::host::Invocation;
use super::links::{self, CloudInitFile, Link, MatchSection, OwnMatch, Plan, WIRED_PATTERNS};
use super::root::Root;
use super::sources::interface_macs;
use super::steps::{Context, Outcome};
use crate::fsutil::{read_optional, write_atomic};

/// The file the agent writes. networkd applies the first file (in name order) that matches
/// a link, so it must sort before cloud-init's files, `10-cloud-init-<id>.network`.
pub const NETWORK_FILE: &str = "/etc/systemd/network/05-r2a.network";
/// Where networkd files live, cloud-init's among them.
const NETWORKD_DIR: &str = "/etc/systemd/network";
/// The drop-in that narrows a cloud-init file matching several links to one.
const NARROWING_DROP_IN: &str = "50-r2a-one-link.conf";

/// Puts the node's address on its cluster interface (see the module's documentation).
pub fn ensure_network(context: &mut Context<'_>) -> anyhow::Result<Outcome> {
    let address = context.node.address.to_string();
    let links: Vec<Link> = interface_macs(context.root)?
        .iter()
        .map(|(name, mac)| Link::new(name, mac))
        .collect();
    let choice = links::choose(&links, context.node.mac.as_deref());
    let cloud_init = cloud_init_files_with(context.root, &address)?;
    let (path, wanted, done) = match links::plan(&choice, &links, &cloud_init) {
        Plan::KeepCloudInit { file, link } => {
            return Ok(Outcome::unchanged(format!(
                "{address} on {link} by cloud-init's {file} ({})",
                choice.why
            )));
        }
        Plan::NarrowCloudInit { file, link, others } => (
            Path::new(NETWORKD_DIR)
                .join(format!("{file}.d"))
                .join(NARROWING_DROP_IN),
            narrowing_drop_in(&file, &link),
            format!(
                "{address} on {} by cloud-init's {file}, narrowed to its MAC {} (the file \
                 also matched {}; {})",
                link.name,
                link.mac,
                others.join(", "),
                choice.why
            ),
        ),
        Plan::Own(own) => {
            let on = match &choice.link {
                Some(link) => link.name.clone(),
                None => own.to_string(),
            };
            (
                NETWORK_FILE.into(),
                render_network_file(context.node, context.cluster, &own),
                format!("{address} on {on} by {NETWORK_FILE} ({})", choice.why),
            )
        }
    };
    let path = context.root.path(&path);
    if read_optional(&path)?.as_deref() == Some(wanted.as_str()) {
        return Ok(Outcome::unchanged(done));
    }
    if context.host.dry_run() {
        return Ok(Outcome::changed(format!(
            "would write {} and reload networkd: {done}",
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
    Ok(Outcome::changed(done))
}

/// A drop-in that adds the chosen link's MAC to a cloud-init file's `[Match]`: every
/// condition must hold, so the file then matches that link alone.
fn narrowing_drop_in(file: &str, link: &Link) -> String {
    format!(
        "# Written by r2a-node: {file} matched several links; the node's address belongs\n\
         # on {} alone. List the node's MAC in the manifest to pick another.\n\
         [Match]\nMACAddress={}\n",
        link.name, link.mac
    )
}

/// The node's `.network` file.
pub fn render_network_file(node: &NodeView, cluster: &ClusterView, interface: &OwnMatch) -> String {
    let network = &cluster.network;
    let match_line = match interface {
        OwnMatch::Mac(mac) => format!("MACAddress={mac}"),
        OwnMatch::Patterns => format!("Name={}", WIRED_PATTERNS.join(" ")),
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

/// cloud-init's networkd files that configure `address`, in name order.
fn cloud_init_files_with(root: &Root, address: &str) -> anyhow::Result<Vec<CloudInitFile>> {
    let dir = root.path(NETWORKD_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).with_context(|| format!("listing {}", dir.display())),
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("cloud-init") && name.ends_with(".network"))
        .collect();
    names.sort();
    let mut files = Vec::new();
    for name in names {
        let text = read_optional(&dir.join(&name))?.unwrap_or_default();
        if mentions_address(&text, address) {
            files.push(CloudInitFile {
                section: MatchSection::parse(&text),
                name,
            });
        }
    }
    Ok(files)
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
    fn a_node_without_a_mac_matches_its_wired_link_by_mac_or_the_patterns() {
        let fake = FakeRoot::db();
        let mut offline = ScriptedHost::new(false);
        let outcome = run(&fake, "db2", &mut offline);
        assert!(fake.read(NETWORK_FILE).contains("\nName=en* eth* host0\n"));
        assert!(
            outcome.detail.contains("no wired link"),
            "{}",
            outcome.detail
        );
        assert!(
            fake.read(NETWORK_FILE)
                .contains("\nAddress=192.168.10.12/24\n")
        );

        fake.add_interface("wlan0", "02:00:00:00:00:01");
        fake.add_interface("ens5", "02:00:00:00:00:02");
        fake.add_interface("ens3", "02:00:00:00:00:03");
        let outcome = run(&fake, "db2", &mut offline);
        // By MAC: udev may still rename the link after this early step.
        assert!(
            fake.read(NETWORK_FILE)
                .contains("\nMACAddress=02:00:00:00:00:03\n")
        );
        assert!(
            outcome
                .detail
                .contains("on ens3 by /etc/systemd/network/05-r2a.network (ens3 is the first of 2 wired links (ens3, ens5)"),
            "{}",
            outcome.detail
        );
        assert!(offline.log().is_empty(), "offline: no networkctl");
    }

    #[test]
    fn cloud_init_configuration_of_the_address_on_the_link_is_left_alone() {
        let fake = FakeRoot::db();
        fake.add_interface("eth0", "52:54:00:00:00:11");
        fake.write(
            "/etc/systemd/network/10-cloud-init-eth0.network",
            "[Match]\nName=eth0\n[Network]\nAddress=192.168.10.11/24\n",
        );
        let before = fake.snapshot();
        let outcome = run(&fake, "db1", &mut ScriptedHost::new(true));
        assert!(!outcome.changed);
        assert!(
            outcome
                .detail
                .contains("on eth0 by cloud-init's 10-cloud-init-eth0.network"),
            "{}",
            outcome.detail
        );
        assert_eq!(fake.snapshot(), before);
    }

    #[test]
    fn a_cloud_init_file_that_matches_no_link_is_replaced_by_the_agents_own() {
        // cloud-init 25.1 renders `ethernets: {cluster: {match: {name: "en*"}}}` so.
        let fake = FakeRoot::db();
        fake.add_interface("ens3", "02:00:00:00:00:03");
        fake.write(
            "/etc/systemd/network/10-cloud-init-cluster.network",
            "[Match]\nName=cluster\n\n[Network]\nAddress=192.168.10.12/24\n",
        );
        let outcome = run(&fake, "db2", &mut ScriptedHost::new(false));
        assert!(outcome.changed);
        assert!(
            fake.read(NETWORK_FILE)
                .contains("\nMACAddress=02:00:00:00:00:03\n")
        );
    }

    #[test]
    fn a_cloud_init_file_that_matches_several_links_is_narrowed_to_one() {
        let fake = FakeRoot::db();
        fake.add_interface("ens3", "02:00:00:00:00:03");
        fake.add_interface("ens4", "02:00:00:00:00:04");
        fake.write(
            "/etc/systemd/network/10-cloud-init-e*.network",
            "[Match]\nName=e*\n\n[Network]\nAddress=192.168.10.12/24\n",
        );
        let outcome = run(&fake, "db2", &mut ScriptedHost::new(false));
        assert!(outcome.changed);
        assert!(!fake.exists(NETWORK_FILE));
        let drop_in =
            fake.read("/etc/systemd/network/10-cloud-init-e*.network.d/50-r2a-one-link.conf");
        assert!(
            drop_in.ends_with("[Match]\nMACAddress=02:00:00:00:00:03\n"),
            "{drop_in}"
        );
        assert!(
            outcome.detail.contains("also matched ens4"),
            "{}",
            outcome.detail
        );
        assert!(!run(&fake, "db2", &mut ScriptedHost::new(false)).changed);
    }

    #[test]
    fn a_cloud_init_dhcp_fallback_does_not_count() {
        let fake = FakeRoot::db();
        fake.add_interface("eth0", "52:54:00:00:00:11");
        fake.write(
            "/etc/systemd/network/10-cloud-init-eth0.network",
            "[Match]\nName=eth0\n[Network]\nDHCP=ipv4\n# 192.168.10.111\n",
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
