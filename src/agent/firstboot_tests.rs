//! Tests of a whole first-boot run on a fake root with a scripted host.

use super::*;
use crate::agent::host::ScriptedHost;
use crate::agent::identity::IDENTITY_FILE;
use crate::agent::markers::marker_path;
use crate::agent::sources::CMDLINE_FILE;
use crate::agent::status::{STATUS_FILE, State};
use crate::agent::testing::{FakeRoot, healthy_db1_host};

/// The commands that only look, never change anything.
fn is_observation(line: &str) -> bool {
    [
        "nft list table",
        "blkid ",
        "findmnt ",
        "systemctl is-active ",
    ]
    .iter()
    .any(|prefix| line.starts_with(prefix))
}

fn db1() -> FakeRoot {
    let fake = FakeRoot::db();
    fake.write(CMDLINE_FILE, "root=/dev/vda2 r2a.node=db1\n");
    fake.write("/usr/lib/r2a/nodes/db1/etc/default/etcd", "ETCD_NAME=db1\n");
    fake
}

fn saved_report(fake: &FakeRoot) -> Report {
    serde_json::from_str(&fake.read(STATUS_FILE)).unwrap()
}

#[test]
fn a_first_run_applies_every_step_and_records_it() {
    let fake = db1();
    let mut host = healthy_db1_host();
    let report = firstboot(&fake.root, &mut host).unwrap();
    assert!(report.all_done(), "{}", report.to_table());
    assert_eq!(report.identity.as_ref().unwrap().node, "db1");
    assert_eq!(saved_report(&fake), report);

    assert_eq!(fake.read("/etc/hostname"), "db1\n");
    assert_eq!(fake.read("/etc/default/etcd"), "ETCD_NAME=db1\n");
    assert!(
        fake.read("/etc/systemd/network/05-r2a.network")
            .contains("MACAddress=52:54:00:00:00:11")
    );
    assert!(
        fake.read("/etc/fstab")
            .contains("/var/lib/postgresql ext4 defaults,nofail")
    );
    assert!(
        fake.read(IDENTITY_FILE)
            .contains("\"source\": \"kernel-command-line\"")
    );
    for step in steps::step_names() {
        assert!(fake.exists(&marker_path(step)), "no marker for {step}");
    }
    let changes: Vec<&String> = host
        .log()
        .iter()
        .filter(|line| !is_observation(line))
        .collect();
    assert_eq!(
        changes,
        [
            "sethostname db1",
            "networkctl reload",
            "nft -f /etc/nftables.conf",
            "mkfs.ext4 -L r2a-data /dev/vdb",
            "mount -t ext4 'UUID=0b1c2d3e-aaaa-bbbb-cccc-000000000001' /var/lib/postgresql",
        ]
    );
}

#[test]
fn a_second_run_does_nothing_and_changes_no_file() {
    let fake = db1();
    let mut host = healthy_db1_host();
    firstboot(&fake.root, &mut host).unwrap();
    let before = fake.snapshot();
    host.clear_log();

    let report = firstboot(&fake.root, &mut host).unwrap();
    assert!(report.all_done());
    assert_eq!(fake.snapshot(), before, "a second run changes no file");
    let changes: Vec<&String> = host
        .log()
        .iter()
        .filter(|line| !is_observation(line))
        .collect();
    assert!(changes.is_empty(), "a second run only looks: {changes:?}");
}

#[test]
fn a_configuration_error_stops_before_any_step_and_is_reported() {
    let fake = FakeRoot::db();
    fake.write(CMDLINE_FILE, "r2a.node=db7\n");
    let mut host = healthy_db1_host();
    let error = firstboot(&fake.root, &mut host).unwrap_err();
    assert!(is_config_error(&error), "{error:#}");
    assert!(host.log().is_empty(), "{:?}", host.log());
    let report = saved_report(&fake);
    let failure = report.failure.unwrap();
    assert!(failure.configuration);
    assert_eq!(failure.step, None);
    assert!(failure.message.contains("db7"), "{}", failure.message);
    assert!(report.steps.iter().all(|step| step.state == State::Pending));
    assert!(!fake.exists(IDENTITY_FILE));
}

#[test]
fn a_failing_step_stops_the_run_and_a_later_run_finishes() {
    let fake = db1();
    let mut host = healthy_db1_host();
    host.forget("nft -f /etc/nftables.conf")
        .fail("nft -f /etc/nftables.conf", "Error: syntax error, line 3");
    let error = format!("{:#}", firstboot(&fake.root, &mut host).unwrap_err());
    assert!(
        error.starts_with("step firewall: loading the firewall rules"),
        "{error}"
    );

    let states: Vec<State> = saved_report(&fake)
        .steps
        .iter()
        .map(|step| step.state)
        .collect();
    use State::{Done, Failed, Pending};
    assert_eq!(states, [Done, Done, Done, Done, Failed, Pending, Pending]);
    assert!(!fake.exists(&marker_path("firewall")));

    let mut fixed = healthy_db1_host();
    assert!(firstboot(&fake.root, &mut fixed).unwrap().all_done());
    assert_eq!(saved_report(&fake).failure, None);
}

#[test]
fn an_image_tree_that_is_not_the_running_system_stops_at_the_first_command() {
    let fake = db1();
    let mut offline = host::OfflineHost {
        root: fake.root.dir().to_path_buf(),
    };
    let error = format!("{:#}", firstboot(&fake.root, &mut offline).unwrap_err());
    assert!(
        error.contains("not running `nft list table inet r2a`"),
        "{error}"
    );
    let report = saved_report(&fake);
    assert_eq!(
        report.steps[3].state,
        State::Done,
        "network needs no command offline"
    );
    assert_eq!(report.steps[4].state, State::Failed);
}

#[test]
fn status_reads_back_what_firstboot_saved() {
    let fake = db1();
    let mut host = ScriptedHost::new(false);
    let _ = firstboot(&fake.root, &mut host);
    let current = Report::current(&fake.root).unwrap();
    assert_eq!(current, saved_report(&fake));
    assert_eq!(current.steps[4].state, State::Failed);
}

#[test]
fn a_dry_run_says_what_each_step_would_change_and_changes_nothing() {
    let fake = db1();
    let mut host = healthy_db1_host();
    let before = fake.snapshot();
    let outcomes = {
        let mut observer = DryRunHost { inner: &mut host };
        firstboot_dry_run(&fake.root, &mut observer).unwrap()
    };
    assert_eq!(fake.snapshot(), before, "a dry run writes nothing");
    let changes: Vec<&String> = host
        .log()
        .iter()
        .filter(|line| !is_observation(line))
        .collect();
    assert!(changes.is_empty(), "{changes:?}");
    // (step, what it says it would do)
    let table = [
        (
            "node-files",
            "would install 2 of 3 entries from /usr/lib/r2a/nodes/db1: /etc/default, /etc/default/etcd",
        ),
        ("hostname", "would write "),
        ("network", "would write "),
        ("firewall", "would load /etc/nftables.conf"),
        (
            "data-disk",
            "would format /dev/vdb as ext4, add its UUID to /etc/fstab, mount it at /var/lib/postgresql",
        ),
    ];
    for (step, says) in table {
        let (_, outcome) = outcomes.iter().find(|(name, _)| *name == step).unwrap();
        assert!(outcome.changed, "{step}: {outcome:?}");
        assert!(
            outcome.detail.starts_with(says),
            "{step}: {}",
            outcome.detail
        );
    }
    assert_eq!(
        outcomes.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
        steps::step_names()
    );

    // After the real run, a dry run finds everything in place.
    firstboot(&fake.root, &mut host).unwrap();
    let mut observer = DryRunHost { inner: &mut host };
    for (step, outcome) in firstboot_dry_run(&fake.root, &mut observer).unwrap() {
        assert!(!outcome.changed, "{step}: {}", outcome.detail);
    }
}

#[test]
fn a_dry_run_needs_a_host_that_changes_nothing() {
    let fake = db1();
    let mut host = healthy_db1_host();
    assert!(firstboot_dry_run(&fake.root, &mut host).is_err());
    assert!(!fake.exists(STATUS_FILE));
}
