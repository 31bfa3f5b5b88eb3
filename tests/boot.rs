//! The built db image booted under real systemd (systemd-nspawn, on a bridge of the test's
//! own): identity from the node's NoCloud seed, r2a-early before the network,
//! r2a-firstboot after, every common step done, no ordering cycle, the node reaches
//! multi-user.target, and its address is on the container's `host0`, which the seed's
//! network file (matched by wired-link names) misses and the agent's own file catches.

mod support;

use std::time::Duration;

use r2a::agent::report::BootReport;
use r2a::project::{Project, SecretsMode};
use support::nspawn::Container;
use support::{fixture, repo};

#[test]
fn the_db_image_boots_and_its_agent_configures_the_node() {
    let fx = fixture();
    let tree = fx.extracted("db");
    let root = tree.path();
    // db2's own NoCloud seed, as cloud-init reads it from the image itself.
    let project = Project::load(&repo(), &fx.manifest, SecretsMode::ReadOnly).unwrap();
    let files = r2a::seed::seed_files(&project.cluster, project.cluster.node("db2").unwrap());
    let seed = root.join("var/lib/cloud/seed/nocloud");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(seed.join("meta-data"), files.meta_data).unwrap();
    std::fs::write(seed.join("user-data"), files.user_data).unwrap();
    std::fs::write(seed.join("network-config"), files.network_config).unwrap();

    let console = tempfile::NamedTempFile::new().unwrap();
    let mut container = Container::boot(root, "r2a-test-db2", console.path());
    let text = container.wait_for("r2a-report: {", Duration::from_secs(300));

    assert!(
        text.contains(
            "r2a-node: this is db2 of cluster r2a-test (role db), found by cloud-init NoCloud data"
        ),
        "{text}"
    );
    assert!(text.contains("Finished r2a-early.service"), "{text}");
    assert!(text.contains("Finished r2a-firstboot.service"), "{text}");
    assert!(!text.contains("ordering cycle"), "{text}");
    assert!(!text.contains("Failed to start r2a-"), "{text}");
    let early = text.find("Finished r2a-early.service").unwrap();
    let networkd = text
        .find("Started systemd-networkd.service")
        .expect("networkd started");
    assert!(
        early < networkd,
        "the network file is written before networkd starts:\n{text}"
    );

    for step in [
        "node-files",
        "hostname",
        "hosts",
        "network",
        "firewall",
        "data-disk",
        "grow-root",
    ] {
        let marker = root.join(format!("var/lib/r2a/done/{step}.json"));
        assert!(marker.is_file(), "step {step} has no done marker");
    }
    // A container's root is a folder of the host's file system: nothing to grow.
    let grow = std::fs::read_to_string(root.join("var/lib/r2a/done/grow-root.json")).unwrap();
    assert!(grow.contains("nothing to grow"), "{grow}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname"))
            .unwrap()
            .trim(),
        "db2"
    );
    assert!(text.contains("Reached target multi-user.target"), "{text}");
    let rendered =
        std::fs::read_to_string(root.join("etc/systemd/network/10-cloud-init-e*.network"))
            .expect("cloud-init rendered the seed's network-config");
    assert!(rendered.contains("Name=e*"), "{rendered}");
    let network = std::fs::read_to_string(root.join("etc/systemd/network/05-r2a.network")).unwrap();
    assert!(
        network.contains("Address=10.77.0.12/24") && network.contains("MACAddress="),
        "{network}"
    );
    let marker = std::fs::read_to_string(root.join("var/lib/r2a/done/network.json")).unwrap();
    assert!(
        marker.contains("10.77.0.12 on host0 by /etc/systemd/network/05-r2a.network (host0 is the only wired link)"),
        "{marker}"
    );
    let report = text
        .lines()
        .find_map(BootReport::parse_line)
        .expect("the boot report");
    let host0 = report
        .links
        .iter()
        .find(|link| link.name == "host0")
        .expect("the container's host0 link");
    assert_eq!(host0.addresses, ["10.77.0.12/24"], "{report:?}");
    let patroni = std::fs::read_to_string(root.join("etc/patroni/config.yml")).unwrap();
    assert!(
        patroni.contains("name: db2"),
        "the node's own files are installed"
    );
}
