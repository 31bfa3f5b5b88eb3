//! The shared Gluster volume of the test manifest, formed by the fs nodes' agents in the
//! cluster harness (one container per node, on the harness's own bridge): three fs nodes
//! with XFS data disks form the pool and the replica-3 volume over TLS, and admin1 mounts
//! it. One cluster serves every assertion, in the order a volume lives: formed, written
//! to, an fs node hard-killed while writes go on, healed on its return, grown by three
//! fs nodes added to the manifest, and `down`. The nodes' files and secrets travel in
//! their seeds (`node_data = "seed"`), so the nodes added later boot the fs image already
//! built, with nothing but their new seeds.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use r2a::cluster::Harness;
use r2a::manifest::Cluster;
use r2a::project::{Project, SecretsMode};
use support::db_cluster::*;
use support::{Lab, fixture};

const FS: [&str; 3] = ["fs1", "fs2", "fs3"];
const BRICK: &str = "/srv/gluster/b1/shared";
const MOUNT: &str = "/srv/shared";

#[test]
fn three_fs_nodes_form_a_replica_3_volume_that_survives_a_failure_heals_and_grows_by_three() {
    let fx = fixture();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("r2a-gluster-seeded");
    let _ = std::fs::remove_dir_all(&dir);
    let manifest = support::derived_manifest(fx, &dir, support::seeds::node_data_seed);
    let out = support::build_tarballs(fx, &manifest, &["fs", "admin"], None);
    support::seeds::write_seeds(&manifest, &out, &["--all"]);
    let project = Project::load(&support::repo(), &manifest, SecretsMode::ReadOnly).unwrap();
    let state = Path::new(env!("CARGO_TARGET_TMPDIR")).join("r2a-gluster-state");
    let harness = Harness::new(&project.cluster, &out, &state).unwrap();
    harness.down().unwrap();
    let lab = Lab(harness);
    let h = &lab.0;

    // The client first: its mount waits for a volume that does not exist yet.
    h.up(&["admin1"]).unwrap();
    h.wait_booted("admin1", JOIN_LIMIT).unwrap();
    let waiting = wait_until(JOIN_LIMIT, "admin1's mount to wait", || {
        let steps = join_steps(h, "admin1");
        let step = steps.iter().find(|step| step.0 == "shared-volume")?.clone();
        (step.1 == "waiting").then_some(step.2)
    });
    assert!(waiting.contains("fs1:/shared"), "{waiting}");
    let state_of_client = ok(h, "admin1", "systemctl is-system-running || true");
    assert_eq!(
        state_of_client.trim(),
        "running",
        "a volume not served yet fails no unit"
    );

    h.up(&FS).unwrap();
    wait_joined(h, &["fs1", "fs2", "fs3", "admin1"]);
    the_volume_is_replica_3_on_the_data_disks_over_tls(h);

    write_files(h, 0..100);
    h.kill("fs2").unwrap();
    // Two of three bricks keep the volume writable (quorum auto); the client notices
    // the lost brick within its ping timeout.
    write_files(h, 100..200);
    h.start("fs2").unwrap();
    h.wait_booted("fs2", JOIN_LIMIT).unwrap();
    every_file_is_on_every_brick_after_the_heal(h, 200);
    let before = checksums(h, "admin1", MOUNT);

    let grown = three_fs_nodes_added_to_the_manifest_make_it_2_by_3(h, fx, &out);
    assert_eq!(
        checksums(&grown, "admin1", MOUNT),
        before,
        "every file is still readable, unchanged"
    );
    write_files(&grown, 200..300);

    grown.down().unwrap();
    lab.0.down().unwrap();
    support::assert_nothing_left(
        &state,
        "r2a-test",
        &[
            &dir,
            &Path::new(env!("CARGO_TARGET_TMPDIR")).join("r2a-gluster-grown"),
        ],
    );
}

fn the_volume_is_replica_3_on_the_data_disks_over_tls(h: &Harness) {
    let info = ok(h, "fs2", "gluster volume info shared");
    assert!(info.contains("Status: Started"), "{info}");
    assert!(info.contains("Number of Bricks: 1 x 3 = 3"), "{info}");
    for (index, node) in FS.iter().enumerate() {
        let brick = format!("Brick{}: {node}:{BRICK}", index + 1);
        assert!(info.contains(&brick), "{info}");
    }
    for option in ["client.ssl: on", "server.ssl: on"] {
        assert!(info.contains(option), "{info}");
    }
    for node in FS {
        // The brick is on the node's own XFS data disk (the root is an overlay).
        let disk = ok(
            h,
            node,
            "findmnt --noheadings --output FSTYPE /srv/gluster/b1",
        );
        assert_eq!(disk.trim(), "xfs", "{node}");
        let join = join_steps(h, node);
        assert!(join[0].2.contains("1 × 3 bricks"), "{node}: {join:?}");
        assert!(!join[0].2.contains("root disk"), "{node}: {join:?}");
        // The pool's management port speaks TLS only.
        assert!(
            h.exec(node, &["test", "-e", "/var/lib/glusterd/secure-access"])
                .unwrap()
                .status
                .success()
        );
    }
    let mount = ok(
        h,
        "admin1",
        &format!("findmnt --noheadings --output SOURCE,FSTYPE {MOUNT}"),
    );
    assert_eq!(
        mount.split_whitespace().collect::<Vec<_>>(),
        ["fs1:/shared", "fuse.glusterfs"]
    );
    let log = ok(h, "admin1", "cat /var/log/glusterfs/srv-shared.log");
    assert!(
        log.contains("SSL support for MGMT is ENABLED IO path is ENABLED"),
        "the client talks TLS to the bricks and glusterd"
    );
}

/// Writes files `NNN.bin` of 64 KiB of random bytes through admin1's mount; each must
/// succeed.
fn write_files(h: &Harness, range: std::ops::Range<u32>) {
    let script = format!(
        "set -e; for i in $(seq {} {}); do \
         timeout 120 dd if=/dev/urandom of={MOUNT}/$(printf %03d $i).bin bs=64k count=1 \
         status=none conv=fsync; done",
        range.start,
        range.end - 1
    );
    ok(h, "admin1", &script);
}

/// Waits until no brick has heal entries, then compares every file's checksum on the
/// three bricks with the client's view.
fn every_file_is_on_every_brick_after_the_heal(h: &Harness, files: usize) {
    wait_until(Duration::from_secs(300), "the heal to finish", || {
        let summary = run(h, "fs1", "gluster volume heal shared info summary");
        let text = stdout(&summary);
        let pending: u32 = text
            .lines()
            .filter_map(|line| line.strip_prefix("Total Number of entries: "))
            .map(|count| count.trim().parse::<u32>().unwrap_or(u32::MAX))
            .sum();
        let connected = text.matches("Status: Connected").count();
        (summary.status.success() && connected == 3 && pending == 0).then_some(())
    });
    // The agent shows the pool as glusterd reports it now.
    let status = ok(h, "fs2", "r2a-node status");
    assert!(
        status.contains("volume shared started, 3 bricks (1 sets of 3), heal entries 0"),
        "{status}"
    );
    let peers = status
        .lines()
        .find(|line| line.starts_with("peers: "))
        .unwrap();
    assert_eq!(peers.matches(" connected").count(), 2, "{status}");
    let seen = checksums(h, "admin1", MOUNT);
    assert_eq!(seen.len(), files);
    for node in FS {
        assert_eq!(
            checksums(h, node, BRICK),
            seen,
            "{node}'s brick holds every file"
        );
    }
}

/// sha256 of every `NNN.bin` in `folder` on `node`, by name.
fn checksums(h: &Harness, node: &str, folder: &str) -> BTreeMap<String, String> {
    let listing = ok(
        h,
        node,
        &format!("cd {folder} && sha256sum [0-9][0-9][0-9].bin"),
    );
    listing
        .lines()
        .filter_map(|line| line.split_once("  "))
        .map(|(sum, name)| (name.to_string(), sum.to_string()))
        .collect()
}

/// fs4, fs5 and fs6 in the manifest, their image built from it; the running nodes keep
/// theirs. They ask to join, a member probes them in, and the lowest adds the set.
/// fs4-fs6 added to the manifest boot the fs image already built, each with only its
/// new seed (no build), and the volume grows to 2 × 3.
fn three_fs_nodes_added_to_the_manifest_make_it_2_by_3(
    h: &Harness,
    fx: &support::Fixture,
    out: &Path,
) -> Harness {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("r2a-gluster-grown");
    let _ = std::fs::remove_dir_all(&dir);
    let manifest = support::derived_manifest(fx, &dir, |text| {
        support::seeds::node_data_seed(text)
            + &support::node_entries(&[
                ("fs4", "fs", "10.77.0.24", Some("/dev/vdb")),
                ("fs5", "fs", "10.77.0.25", Some("/dev/vdb")),
                ("fs6", "fs", "10.77.0.26", Some("/dev/vdb")),
            ])
    });
    let image = out.join("r2a-test/fs/rootfs.tar.gz");
    let built = r2a::hash::sha256_file(&image).unwrap();
    support::seeds::write_seeds(
        &manifest,
        out,
        &["--node", "fs4", "--node", "fs5", "--node", "fs6"],
    );
    assert_eq!(
        r2a::hash::sha256_file(&image).unwrap(),
        built,
        "writing seeds changed the image"
    );
    let cluster = Cluster::load(&manifest, &project_roles()).unwrap();
    let grown = Harness::new(&cluster, out, h.state_dir()).unwrap();
    let started = std::time::Instant::now();
    grown.up(&["fs4", "fs5", "fs6"]).unwrap();
    wait_joined(&grown, &["fs4", "fs5", "fs6"]);
    println!(
        "fs4-fs6 joined the volume {:.0?} after up",
        started.elapsed()
    );
    let info = ok(&grown, "fs1", "gluster volume info shared");
    assert!(info.contains("Number of Bricks: 2 x 3 = 6"), "{info}");
    for n in 4..=6 {
        let brick = format!("Brick{n}: 10.77.0.2{n}:{BRICK}");
        assert!(info.contains(&brick), "{info}");
    }
    let rebalance = ok(&grown, "fs4", "gluster volume rebalance shared status");
    assert!(
        rebalance.contains("localhost"),
        "a rebalance ran: {rebalance}"
    );
    grown
}
