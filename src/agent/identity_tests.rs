//! Tests of node identification: each source, their precedence, and the errors.

use super::*;
use crate::agent::config::{ROLE_FILE, is_config_error};
use crate::agent::host::ScriptedHost;
use crate::agent::sources::{CMDLINE_FILE, HOSTNAME_FILE, INSTANCE_DATA_FILE, Source};
use crate::agent::testing::FakeRoot;

fn identify(fake: &FakeRoot, host: &mut ScriptedHost) -> anyhow::Result<Identity> {
    let config = Config::load(&fake.root)?;
    resolve(&fake.root, host, &config)
}

fn offline() -> ScriptedHost {
    ScriptedHost::new(false)
}

fn config_error_text(result: anyhow::Result<Identity>) -> String {
    let error = result.expect_err("identification should fail");
    assert!(
        is_config_error(&error),
        "not a configuration error: {error:#}"
    );
    format!("{error:#}")
}

#[test]
fn the_kernel_command_line_names_the_node() {
    let fake = FakeRoot::db();
    fake.write(
        CMDLINE_FILE,
        "BOOT_IMAGE=/vmlinuz root=/dev/vda2 r2a.node=db2 quiet\n",
    );
    let identity = identify(&fake, &mut offline()).unwrap();
    assert_eq!(identity.node, "db2");
    assert_eq!(identity.address, Ipv4Addr::new(192, 168, 10, 12));
    assert_eq!(identity.source, Source::KernelCommandLine);
    assert!(
        identity.evidence.starts_with("r2a.node=db2 in "),
        "{}",
        identity.evidence
    );
}

#[test]
fn nocloud_instance_data_names_the_node_and_r2a_node_beats_local_hostname() {
    let fake = FakeRoot::db();
    fake.write(
        INSTANCE_DATA_FILE,
        r#"{"ds": {"meta_data": {"instance-id": "i-1", "local-hostname": "db3", "r2a-node": "db2"}}}"#,
    );
    let identity = identify(&fake, &mut offline()).unwrap();
    assert_eq!(
        (identity.node.as_str(), identity.source),
        ("db2", Source::NoCloud)
    );
}

#[test]
fn a_nocloud_seed_folder_names_the_node() {
    let fake = FakeRoot::db();
    fake.write(
        "/var/lib/cloud/seed/nocloud-net/meta-data",
        "# written by r2a-image\ninstance-id: lab-db3\nlocal-hostname: 'db3'\n",
    );
    let identity = identify(&fake, &mut offline()).unwrap();
    assert_eq!(
        (identity.node.as_str(), identity.source),
        ("db3", Source::NoCloud)
    );
    assert!(
        identity.evidence.contains("nocloud-net/meta-data"),
        "{}",
        identity.evidence
    );
}

#[test]
fn a_mac_listed_in_the_manifest_names_the_node() {
    let fake = FakeRoot::db();
    fake.add_interface("lo", "00:00:00:00:00:00");
    fake.add_interface("ens3", "52:54:00:AB:CD:EF");
    fake.add_interface("ens4", "52:54:00:00:00:13");
    let identity = identify(&fake, &mut offline()).unwrap();
    assert_eq!(
        (identity.node.as_str(), identity.source),
        ("db3", Source::Mac)
    );
    assert_eq!(identity.evidence, "52:54:00:00:00:13 of interface ens4");
}

#[test]
fn the_hostname_names_the_node_last() {
    let fake = FakeRoot::db();
    fake.write(HOSTNAME_FILE, "db2.pbx.example.com\n");
    let identity = identify(&fake, &mut offline()).unwrap();
    assert_eq!(
        (identity.node.as_str(), identity.source),
        ("db2", Source::Hostname)
    );
}

#[test]
fn the_kernel_hostname_counts_only_on_the_live_system() {
    let fake = FakeRoot::db();
    let mut live = ScriptedHost::new(true).with_hostname("db3");
    assert_eq!(identify(&fake, &mut live).unwrap().node, "db3");
    let mut not_live = ScriptedHost::new(false).with_hostname("db3");
    config_error_text(identify(&fake, &mut not_live));
}

#[test]
fn precedence_follows_the_design_order() {
    let fake = FakeRoot::db();
    // Every source is present and agrees on db1 except the hostname, which is left
    // over from another boot and never overrides or conflicts.
    fake.write(HOSTNAME_FILE, "db2\n");
    fake.add_interface("ens3", "52:54:00:00:00:11");
    fake.write("/var/lib/cloud/seed/nocloud/meta-data", "r2a-node: db1\n");
    assert_eq!(
        identify(&fake, &mut offline()).unwrap().source,
        Source::NoCloud
    );
    fake.write(CMDLINE_FILE, "r2a.node=db1\n");
    let identity = identify(&fake, &mut offline()).unwrap();
    assert_eq!(
        (identity.node.as_str(), identity.source),
        ("db1", Source::KernelCommandLine)
    );
}

#[test]
fn explicit_sources_that_disagree_are_a_conflict_naming_both() {
    let fake = FakeRoot::db();
    fake.write(CMDLINE_FILE, "r2a.node=db1\n");
    fake.add_interface("ens3", "52:54:00:00:00:13");
    let error = config_error_text(identify(&fake, &mut offline()));
    assert!(error.contains("conflicting identities"), "{error}");
    assert!(error.contains("kernel command line says db1"), "{error}");
    assert!(error.contains("MAC address says db3"), "{error}");
}

#[test]
fn an_unknown_name_is_a_configuration_error_naming_it_and_the_role() {
    let fake = FakeRoot::db();
    fake.write(CMDLINE_FILE, "r2a.node=db9\n");
    let error = config_error_text(identify(&fake, &mut offline()));
    assert!(
        error.contains("names db9, which is not a node of cluster lab"),
        "{error}"
    );
    assert!(error.contains("nodes of role db: db1, db2, db3"), "{error}");
}

#[test]
fn a_node_of_another_role_is_a_configuration_error() {
    let fake = FakeRoot::db();
    fake.write("/var/lib/cloud/seed/nocloud/meta-data", "r2a-node: fs1\n");
    let error = config_error_text(identify(&fake, &mut offline()));
    assert!(
        error.contains("names node fs1, a fs node, but this is the db image"),
        "{error}"
    );
}

#[test]
fn no_source_at_all_is_a_configuration_error_saying_where_it_looked() {
    let fake = FakeRoot::db();
    fake.add_interface("ens3", "52:54:00:ab:cd:ef");
    let error = config_error_text(identify(&fake, &mut offline()));
    assert!(
        error.contains("cannot tell which node of role db this is"),
        "{error}"
    );
    assert!(error.contains("no r2a.node= in"), "{error}");
    assert!(error.contains("hostname `debian`"), "{error}");
}

#[test]
fn the_recorded_identity_stands_in_when_no_source_names_the_node() {
    let fake = FakeRoot::db();
    fake.write(CMDLINE_FILE, "r2a.node=db2\n");
    let first = identify(&fake, &mut offline()).unwrap();
    assert!(record(&fake.root, &first).unwrap());
    assert!(
        !record(&fake.root, &first).unwrap(),
        "a record is written once"
    );
    fake.write(CMDLINE_FILE, "quiet\n");
    let later = identify(&fake, &mut offline()).unwrap();
    assert_eq!(
        (later.node.as_str(), later.source),
        ("db2", Source::Recorded)
    );
}

#[test]
fn a_later_run_refuses_another_role_cluster_or_name() {
    let fake = FakeRoot::db();
    fake.write(CMDLINE_FILE, "r2a.node=db1\n");
    record(&fake.root, &identify(&fake, &mut offline()).unwrap()).unwrap();

    fake.write(CMDLINE_FILE, "r2a.node=db2\n");
    let error = config_error_text(identify(&fake, &mut offline()));
    assert!(error.contains("records node db1"), "{error}");

    fake.write(CMDLINE_FILE, "r2a.node=fs1\n");
    fake.write(ROLE_FILE, r#"{"name": "fs", "data_disk": null}"#);
    let error = config_error_text(identify(&fake, &mut offline()));
    assert!(error.contains("of cluster lab (role db)"), "{error}");
    assert!(error.contains("for cluster lab (role fs)"), "{error}");
}
