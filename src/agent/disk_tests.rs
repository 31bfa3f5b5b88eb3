//! Tests of the data-disk step, with a scripted `blkid`, `mkfs`, `findmnt` and `mount`.

use super::*;
use crate::agent::config::{Config, ROLE_FILE, is_config_error};
use crate::agent::host::ScriptedHost;
use crate::agent::markers::Marker;
use crate::agent::testing::{FakeRoot, healthy_db1_host};

const BLKID: &str = "blkid -p -o export /dev/vdb";
const FINDMNT: &str =
    "findmnt --noheadings --output SOURCE,FSTYPE --mountpoint /var/lib/postgresql";
const UUID: &str = "0b1c2d3e-aaaa-bbbb-cccc-000000000001";

fn run(
    fake: &FakeRoot,
    node: &str,
    host: &mut ScriptedHost,
    previous: Option<Marker>,
) -> anyhow::Result<Outcome> {
    let config = Config::load(&fake.root).unwrap();
    let node = config.cluster.node(node).unwrap().clone();
    let mut context = Context::new(&fake.root, host, &config, &node);
    context.previous_marker = previous;
    ensure_data_disk(&mut context)
}

fn earlier_marker() -> Marker {
    Marker {
        step: "data-disk".to_string(),
        done_at: "2025-08-09T00:00:00Z".to_string(),
        detail: "set up".to_string(),
    }
}

fn ran_mkfs(host: &ScriptedHost) -> bool {
    host.log().iter().any(|line| line.starts_with("mkfs"))
}

#[test]
fn a_blank_disk_is_formatted_once_recorded_in_fstab_and_mounted() {
    let fake = FakeRoot::db();
    let mut host = healthy_db1_host();
    let outcome = run(&fake, "db1", &mut host, None).unwrap();
    assert!(outcome.changed);
    assert_eq!(
        host.log(),
        [
            BLKID,
            "mkfs.ext4 -L r2a-data /dev/vdb",
            BLKID,
            FINDMNT,
            &format!("mount -t ext4 'UUID={UUID}' /var/lib/postgresql"),
            FINDMNT,
        ]
    );
    assert!(
        fake.read(FSTAB_FILE).ends_with(&format!(
            "\nUUID={UUID} /var/lib/postgresql ext4 defaults,nofail 0 2\n"
        )),
        "{}",
        fake.read(FSTAB_FILE)
    );

    host.clear_log();
    let before = fake.snapshot();
    let again = run(&fake, "db1", &mut host, Some(earlier_marker())).unwrap();
    assert!(!again.changed, "{again:?}");
    assert_eq!(host.log(), [BLKID, FINDMNT], "a second run only looks");
    assert_eq!(fake.snapshot(), before, "a second run changes no file");
}

#[test]
fn a_disk_with_another_filesystem_is_never_formatted() {
    let fake = FakeRoot::db();
    let mut host = ScriptedHost::new(true);
    host.answer(
        BLKID,
        "DEVNAME=/dev/vdb\nUUID=1234\nTYPE=xfs\nUSAGE=filesystem\n",
    );
    let error = run(&fake, "db1", &mut host, None).unwrap_err();
    assert!(is_config_error(&error), "{error:#}");
    assert!(
        error.to_string().contains("/dev/vdb already holds xfs"),
        "{error}"
    );
    assert!(!ran_mkfs(&host), "{:?}", host.log());
}

#[test]
fn a_disk_with_the_roles_filesystem_is_kept_and_mounted() {
    let fake = FakeRoot::db();
    let mut host = ScriptedHost::new(true);
    host.answer(BLKID, &format!("UUID={UUID}\nTYPE=ext4\n"))
        .absent(FINDMNT)
        .answer(FINDMNT, "/dev/vdb ext4")
        .succeed(&format!("mount -t ext4 'UUID={UUID}' /var/lib/postgresql"));
    let outcome = run(&fake, "db1", &mut host, None).unwrap();
    assert!(outcome.changed);
    assert!(!outcome.detail.contains("formatted"), "{}", outcome.detail);
    assert!(!ran_mkfs(&host), "{:?}", host.log());
}

#[test]
fn a_partitioned_disk_is_never_formatted() {
    let fake = FakeRoot::db();
    let mut host = ScriptedHost::new(true);
    host.answer(BLKID, "DEVNAME=/dev/vdb\nPTUUID=abcd\nPTTYPE=gpt\n");
    let error = run(&fake, "db1", &mut host, None).unwrap_err();
    assert!(error.to_string().contains("gpt partition table"), "{error}");
    assert!(!ran_mkfs(&host));
}

#[test]
fn a_disk_that_looks_blank_after_being_set_up_is_not_formatted_again() {
    let fake = FakeRoot::db();
    let mut host = ScriptedHost::new(true);
    host.absent(BLKID);
    let error = run(&fake, "db1", &mut host, Some(earlier_marker())).unwrap_err();
    assert!(is_config_error(&error), "{error:#}");
    assert!(
        error.to_string().contains("not formatting it again"),
        "{error}"
    );
    assert!(!ran_mkfs(&host));
}

#[test]
fn a_failing_probe_stops_before_anything_is_formatted() {
    let fake = FakeRoot::db();
    let mut host = ScriptedHost::new(true);
    host.fail(BLKID, "ambivalent result (exit status: 8)");
    let error = format!("{:#}", run(&fake, "db1", &mut host, None).unwrap_err());
    assert!(error.contains("probing data disk /dev/vdb"), "{error}");
    assert!(!ran_mkfs(&host));
}

#[test]
fn the_roles_mkfs_options_come_before_the_label() {
    let fake = FakeRoot::db();
    fake.write(
        ROLE_FILE,
        r#"{"name": "db", "data_disk": {"mount": "/srv/gluster/b1", "filesystem": "xfs",
            "mkfs_options": ["-i", "size=512"]}}"#,
    );
    let findmnt = "findmnt --noheadings --output SOURCE,FSTYPE --mountpoint /srv/gluster/b1";
    let mut host = ScriptedHost::new(true);
    host.absent(BLKID)
        .answer(BLKID, "UUID=42\nTYPE=xfs\n")
        .succeed("mkfs.xfs -i 'size=512' -L r2a-data /dev/vdb")
        .absent(findmnt)
        .answer(findmnt, "/dev/vdb xfs")
        .succeed("mount -t xfs 'UUID=42' /srv/gluster/b1");
    run(&fake, "db1", &mut host, None).unwrap();
    assert!(
        host.log()
            .contains(&"mkfs.xfs -i 'size=512' -L r2a-data /dev/vdb".to_string())
    );
    assert!(
        fake.read(FSTAB_FILE)
            .contains("UUID=42 /srv/gluster/b1 xfs defaults,nofail 0 0\n")
    );
}

#[test]
fn a_node_without_a_data_disk_runs_nothing() {
    let fake = FakeRoot::db();
    let mut host = ScriptedHost::new(true);
    let outcome = run(&fake, "db3", &mut host, None).unwrap();
    assert!(!outcome.changed);
    assert!(
        outcome.detail.contains("no data disk"),
        "{}",
        outcome.detail
    );
    assert!(host.log().is_empty());
}

#[test]
fn a_missing_device_fails_without_running_anything() {
    let fake = FakeRoot::db();
    std::fs::remove_file(fake.root.path("/dev/vdb")).unwrap();
    let mut host = ScriptedHost::new(true);
    let error = run(&fake, "db1", &mut host, None).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("/dev/vdb of node db1 is not there"),
        "{error}"
    );
    assert!(host.log().is_empty());
}

#[test]
fn fstab_gets_one_line_per_mount_point() {
    let with = fstab_with_entry("# empty", "u1", "/data", Filesystem::Ext4)
        .unwrap()
        .unwrap();
    assert_eq!(with, "# empty\nUUID=u1 /data ext4 defaults,nofail 0 2\n");
    assert_eq!(
        fstab_with_entry(&with, "u1", "/data", Filesystem::Ext4).unwrap(),
        None
    );
    let error = fstab_with_entry(
        "/dev/sdz1 /data ext4 defaults 0 2\n",
        "u1",
        "/data",
        Filesystem::Ext4,
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("already mounts /dev/sdz1 at /data"),
        "{error}"
    );
}

#[test]
fn blkid_export_output_is_parsed() {
    let signature = Signature::parse("DEVNAME=/dev/vdb\nUUID=abc\nBLOCK_SIZE=4096\nTYPE=ext4\n");
    assert_eq!(signature.kind.as_deref(), Some("ext4"));
    assert_eq!(signature.uuid.as_deref(), Some("abc"));
    assert_eq!(signature.partition_table, None);
}
