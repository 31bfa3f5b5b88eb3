//! The db cluster of the test manifest, formed by the agents themselves in the cluster
//! harness (one container per node, on the harness's own bridge): etcd, Patroni and
//! PostgreSQL 17 over TLS, with portal1 as the client behind its HAProxy. One cluster
//! serves every assertion, in the order a cluster lives: a late member, the formed
//! cluster, HAProxy cutting the sessions of a server it marks down, TLS (another CA's
//! certificate refused on every port that takes certificates), a second agent run, a
//! hard kill and a clean stop of the leader under writes, a wiped member, two members
//! added to the manifest, the secrets (the harness's records too), and `down`.

#[path = "cluster/access.rs"]
mod access;
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use r2a::cluster::Harness;
use r2a::manifest::Cluster;
use r2a::project::{Project, SecretsMode};
use support::db_cluster::*;
use support::{Lab, build_tarballs, derived_manifest, fixture, node_entries, repo};

#[test]
fn the_db_cluster_forms_itself_fails_over_without_losing_a_commit_and_grows() {
    let fx = fixture();
    let project = Project::load(&repo(), &fx.manifest, SecretsMode::ReadOnly).unwrap();
    let state = Path::new(env!("CARGO_TARGET_TMPDIR")).join("r2a-cluster-state");
    let harness = Harness::new(&project.cluster, &fx.out, &state).unwrap();
    harness.down().unwrap();
    let lab = Lab(harness);
    let h = &lab.0;

    a_member_started_a_minute_late_still_forms_the_cluster(h);
    the_cluster_has_three_voters_a_leader_and_a_synchronous_replica(h);
    the_client_reaches_the_primary_and_a_replica_through_haproxy(h);
    access::haproxy_cuts_the_sessions_of_a_server_it_marks_down(h);
    access::tls_is_required_everywhere(h);
    running_the_agent_again_changes_nothing(h);
    ok(
        h,
        "portal1",
        &client("CREATE TABLE acked (id integer PRIMARY KEY)", 5000),
    );
    let next = failover_loses_no_acknowledged_commit(h, Halt::Kill, 1);
    failover_loses_no_acknowledged_commit(h, Halt::CleanStop, next);
    a_member_whose_etcd_data_was_wiped_joins_again(h);
    let grown = two_members_added_to_the_manifest_join_as_learners_and_vote(h, fx);
    // The grown manifest's harness knows every node, db4 and db5 too.
    no_secret_reaches_a_log_a_seed_or_a_public_artifact(&grown, fx);

    grown.down().unwrap();
    lab.0.down().unwrap();
    support::assert_nothing_left(
        &state,
        "r2a-test",
        &[&Path::new(env!("CARGO_TARGET_TMPDIR")).join("r2a-cluster-grown")],
    );
}

/// db1, db2 and the client boot; db3 a minute later. The first two have etcd quorum
/// and their members are healthy; Patroni waits for the third (etcd settles its cluster
/// version only once every initial member has started) and says so; then db3 joins and
/// the cluster forms.
fn a_member_started_a_minute_late_still_forms_the_cluster(h: &Harness) {
    let started = Instant::now();
    h.up(&["db1", "db2", "portal1"]).unwrap();
    for node in ["db1", "db2"] {
        h.wait_booted(node, JOIN_LIMIT).unwrap();
        wait_until(
            JOIN_LIMIT,
            &format!("{node}'s etcd member and Patroni's wait"),
            || {
                let steps = join_steps(h, node);
                let etcd_done = steps[0].1 == "done";
                let patroni_waits = steps[1].1 == "waiting" && steps[1].2.contains("db3 not yet");
                (etcd_done && patroni_waits).then_some(())
            },
        );
    }
    std::thread::sleep(Duration::from_secs(60).saturating_sub(started.elapsed()));
    assert!(!h.is_running("db3").unwrap());
    h.up(&["db3"]).unwrap();
    wait_joined(h, &DB);
    println!("cluster formed {:.0?} after up", started.elapsed());
}

fn the_cluster_has_three_voters_a_leader_and_a_synchronous_replica(h: &Harness) {
    let members = etcd_members(h, "db2");
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(members.iter().all(|m| !m.learner), "{members:?}");
    // The primary names its synchronous standby in its next loop once replicas stream;
    // a replica that just started may still be connecting to the primary.
    let settled = |members: &[PatroniMember]| {
        members.iter().any(|m| m.role == "Sync Standby")
            && members
                .iter()
                .all(|m| m.role == "Leader" || m.state == "streaming")
    };
    let patroni = wait_until(
        Duration::from_secs(90),
        "a synchronous standby and every replica streaming",
        || {
            let members = patroni_members(h, "db3");
            if !settled(&members) {
                println!("not settled yet: {members:?}");
            }
            settled(&members).then_some(members)
        },
    );
    let roles: Vec<&str> = patroni.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(count(&roles, "Leader"), 1, "{patroni:?}");
    assert_eq!(count(&roles, "Sync Standby"), 1, "{patroni:?}");
    assert_eq!(count(&roles, "Replica"), 1, "{patroni:?}");
    for member in patroni.iter().filter(|m| m.role != "Leader") {
        assert_eq!(member.state, "streaming", "{patroni:?}");
    }
    let leader = leader(h);
    let in_recovery = ok(
        h,
        &leader,
        "runuser -u postgres -- psql -X -At -c 'SELECT pg_is_in_recovery()'",
    );
    assert_eq!(in_recovery.trim(), "f");
    let version = ok(
        h,
        &leader,
        "runuser -u postgres -- psql -X -At -c 'SELECT max(version) FROM r2a_schema_version'",
    );
    // Every migration the db role ships ran, in order.
    let migrations = std::fs::read_dir(repo().join("overlays/db/etc/r2a/schema"))
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(".sql.tera")
        })
        .count();
    assert_eq!(version.trim(), migrations.to_string());
}

fn the_client_reaches_the_primary_and_a_replica_through_haproxy(h: &Harness) {
    let sql = "SELECT pg_is_in_recovery(), inet_server_addr(), current_setting('ssl')";
    let primary = ok(h, "portal1", &client(sql, 5000));
    let leader_address = address_of(h, &leader(h));
    assert_eq!(primary.trim(), format!("f|{leader_address}|on"));
    let replica = ok(h, "portal1", &client(sql, 5001));
    assert!(replica.starts_with("t|"), "{replica}");
    let env = ok(h, "portal1", "cat /etc/r2a/database.env");
    assert!(env.contains("PGSSLMODE=verify-full"), "{env}");
    // The pool tables the telephony nodes register in exist in the application database.
    let tables = ok(
        h,
        "portal1",
        &client("SELECT count(*) FROM telephony_nodes, dispatcher", 5000),
    );
    assert_eq!(tables.trim(), "0");
}

/// `r2a-node firstboot` and `r2a-node join` again on every node: no unit restarted, no
/// file written.
fn running_the_agent_again_changes_nothing(h: &Harness) {
    let script = "units='etcd.service patroni.service haproxy.service'
        props=ActiveEnterTimestampMonotonic,NRestarts,InvocationID
        before=$(systemctl show --property=$props $units)
        touch /run/r2a-test-stamp; sleep 1.1
        r2a-node firstboot >/dev/null
        r2a-node join --once >/dev/null
        after=$(systemctl show --property=$props $units)
        [ \"$before\" = \"$after\" ] || { echo \"units changed: $before / $after\"; exit 1; }
        for dir in /etc /var/lib/r2a /usr/lib/r2a; do
            [ ! -d $dir ] || find $dir -newer /run/r2a-test-stamp -type f
        done";
    for node in ["db1", "db2", "db3", "portal1"] {
        let written = ok(h, node, script);
        assert_eq!(written.trim(), "", "{node}: the second run wrote files");
    }
}

/// How the leader goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Halt {
    /// SIGKILL of the container: Patroni keeps its leader key until the ttl.
    Kill,
    /// A clean poweroff: Patroni hands the key over.
    CleanStop,
}

/// A client commits one row per transaction through HAProxy while the leader goes
/// away; writes resume on a new leader that holds every acknowledged row, and the old
/// leader, started again, comes back as a replica. Returns the next free row id.
fn failover_loses_no_acknowledged_commit(h: &Harness, halt: Halt, first_id: u64) -> u64 {
    let old = leader(h);
    let writer = Writer::start(h, first_id);
    writer.wait_for_acks(20, Duration::from_secs(60));
    let halted_at = Instant::now();
    match halt {
        Halt::Kill => h.kill(&old).unwrap(),
        Halt::CleanStop => h.stop(&old, Duration::from_secs(120)).unwrap(),
    }
    writer.wait_for_acks_after(halted_at, 20, Duration::from_secs(120));
    let (acked, outage) = writer.stop(h, halted_at);
    println!("{halt:?} of {old}: writes resumed after {outage:.1?}");
    let survivor = DB.iter().find(|node| **node != old).unwrap();
    let new = leader_seen_from(h, survivor);
    assert_ne!(new, old, "a new leader is elected");
    let stored: BTreeSet<u64> = ok(h, "portal1", &client("SELECT id FROM acked", 5000))
        .lines()
        .map(|line| line.trim().parse().unwrap())
        .collect();
    let lost: Vec<&u64> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged rows lost after {halt:?}: {lost:?}"
    );
    h.start(&old).unwrap();
    wait_until(
        JOIN_LIMIT,
        &format!("{old} back as a streaming replica"),
        || {
            let members = patroni_members(h, &new);
            members
                .iter()
                .any(|m| m.name == old && m.role != "Leader" && m.state == "streaming")
                .then_some(())
        },
    );
    wait_joined(h, &DB);
    acked.iter().max().map_or(first_id, |last| last + 1)
}

/// A member's etcd data is wiped while it is down: at its next boot the agent removes
/// its stale entry and it joins again, as a new member.
fn a_member_whose_etcd_data_was_wiped_joins_again(h: &Harness) {
    let leader = leader(h);
    let node = DB.iter().copied().find(|n| *n != leader).unwrap();
    let old_id = etcd_members(h, &leader)
        .into_iter()
        .find(|m| m.name == node)
        .unwrap()
        .id;
    h.stop(node, Duration::from_secs(120)).unwrap();
    let data = h
        .state_dir()
        .join("nodes")
        .join(node)
        .join("upper/var/lib/etcd/default");
    assert!(data.join("member").is_dir(), "{}", data.display());
    std::fs::remove_dir_all(&data).unwrap();
    h.start(node).unwrap();
    wait_joined(h, &[node]);
    let members = etcd_members(h, &leader);
    let again = members.iter().find(|m| m.name == node).unwrap();
    assert_ne!(again.id, old_id, "{members:?}");
    assert!(!again.learner, "{members:?}");
    assert_eq!(members.len(), 3, "{members:?}");
}

/// db4 and db5 are added to the manifest and the db image is built again; started
/// together on the running cluster, they join one at a time as learners and become
/// voters. Returns the harness of the grown manifest (it knows the new nodes).
fn two_members_added_to_the_manifest_join_as_learners_and_vote(
    h: &Harness,
    fx: &support::Fixture,
) -> Harness {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("r2a-cluster-grown");
    let _ = std::fs::remove_dir_all(&dir);
    let manifest = derived_manifest(fx, &dir, |text| {
        text + &node_entries(&[
            ("db4", "db", "10.77.0.14", None),
            ("db5", "db", "10.77.0.15", None),
        ])
    });
    let out = build_tarballs(fx, &manifest, &["db"], None);
    let cluster = Cluster::load(&manifest, &project_roles()).unwrap();
    let grown = Harness::new(&cluster, &out, h.state_dir()).unwrap();
    grown.up(&["db4", "db5"]).unwrap();
    wait_joined(&grown, &["db4", "db5"]);
    let members = etcd_members(&grown, "db1");
    let names: BTreeSet<&str> = members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["db1", "db2", "db3", "db4", "db5"]));
    assert!(members.iter().all(|m| !m.learner), "{members:?}");
    let details: Vec<String> = ["db4", "db5"]
        .iter()
        .map(|node| join_steps(&grown, node)[0].2.clone())
        .collect();
    assert!(
        details
            .iter()
            .all(|d| d.contains("promoted to a voting member")),
        "both joined as learners: {details:?}"
    );
    assert_eq!(patroni_members(&grown, "db5").len(), 5);
    grown
}

/// Every cluster secret and private key, searched in what may be read by others: the
/// consoles and journals of every node, the seeds, the build's records; the images that
/// carry secrets are 0600, and the CA's key is in no image at all.
fn no_secret_reaches_a_log_a_seed_or_a_public_artifact(h: &Harness, fx: &support::Fixture) {
    let secrets = fx.secrets();
    let finder = secrets.finder();
    let mut leaks = Vec::new();
    let mut search = |what: String, bytes: &[u8]| {
        for name in finder.found_in(bytes) {
            leaks.push(format!("{name} in {what}"));
        }
    };
    for entry in std::fs::read_dir(h.state_dir().join("nodes")).unwrap() {
        let node = entry.unwrap().path();
        search(
            node.join("console.log").display().to_string(),
            &std::fs::read(node.join("console.log")).unwrap_or_default(),
        );
        for file in ["meta-data", "user-data", "network-config"] {
            let seed = node.join("upper/var/lib/cloud/seed/nocloud").join(file);
            search(
                seed.display().to_string(),
                &std::fs::read(&seed).unwrap_or_default(),
            );
        }
    }
    // The harness's own records (its state file and whatever else it keeps beside the
    // node folders).
    for entry in std::fs::read_dir(h.state_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            search(path.display().to_string(), &std::fs::read(&path).unwrap());
        }
    }
    for node in ["db1", "db2", "db3", "db4", "db5", "portal1"] {
        if h.is_running(node).unwrap_or(false) {
            let journal = run(h, node, "journalctl --no-pager --output=cat");
            search(format!("the journal of {node}"), &journal.stdout);
        }
    }
    let cluster_out = fx.cluster_out();
    for file in ["manifest.json", "SHA256SUMS"] {
        let path = cluster_out.join(file);
        search(path.display().to_string(), &std::fs::read(&path).unwrap());
    }
    assert!(leaks.is_empty(), "secrets found: {leaks:?}");
    for role in ["db", "portal"] {
        let tarball = cluster_out.join(role).join("rootfs.tar.gz");
        let mode = std::fs::metadata(&tarball).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077,
            0,
            "{} holds secrets and must be private",
            tarball.display()
        );
    }
    let ca_key = secrets
        .values()
        .find(|(name, _)| *name == "pki.ca.key")
        .map(|(_, value)| value.expose().to_string())
        .expect("the CA key is among the secrets");
    let key_line = ca_key
        .lines()
        .find(|line| !line.starts_with("-----") && line.len() > 20)
        .unwrap()
        .to_string();
    let image = cluster_out.join("db/rootfs.tar.gz");
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg("zcat \"$1\" | grep -c -F -e \"$2\" || true")
        .arg("sh")
        .arg(&image)
        .arg(&key_line)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&found.stdout).trim(),
        "0",
        "the CA's private key is in the db image"
    );
}
