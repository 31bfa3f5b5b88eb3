//! The built db image booted under real systemd (systemd-nspawn, on a bridge of the test's
//! own): identity from a NoCloud seed, r2a-early before the network, r2a-firstboot after,
//! every common step done, no ordering cycle, and the node reaches multi-user.target.

mod support;

use std::time::Duration;

use support::fixture;
use support::nspawn::Container;

#[test]
fn the_db_image_boots_and_its_agent_configures_the_node() {
    let fx = fixture();
    let tree = fx.extracted("db");
    let root = tree.path();
    // A NoCloud seed as cloud-init reads it from the image itself.
    let seed = root.join("var/lib/cloud/seed/nocloud");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(
        seed.join("meta-data"),
        "instance-id: r2a-test-db2\nlocal-hostname: db2\nr2a-node: db2\n",
    )
    .unwrap();
    std::fs::write(seed.join("user-data"), "#cloud-config\n{}\n").unwrap();

    let console = tempfile::NamedTempFile::new().unwrap();
    let mut container = Container::boot(root, "r2a-test-db2", console.path());
    let text = container.wait_for("Reached target multi-user.target", Duration::from_secs(240));

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
    let network = std::fs::read_to_string(root.join("etc/systemd/network/05-r2a.network")).unwrap();
    assert!(
        network.contains("Address=10.77.0.12/24") && network.contains("Name=host0"),
        "{network}"
    );
    let patroni = std::fs::read_to_string(root.join("etc/patroni/config.yml")).unwrap();
    assert!(
        patroni.contains("name: db2"),
        "the node's own files are installed"
    );
}
