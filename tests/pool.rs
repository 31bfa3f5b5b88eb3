//! The whole reference topology in the cluster harness, with the telephony pool under
//! test: 3 db, 3 fs, admin, portal, switchboard, api and telephony nodes; the db cluster
//! and the Gluster volume formed by their agents, tel1 registered in the shared
//! database through its HAProxy; tel2, added to the manifest later, registers with
//! nothing changed on tel1 but the names it resolves, and `cluster status` shows every
//! join done; a clean stop and a hard kill take a node out of the active set, and it
//! comes back by itself. The images are built with
//! `vendor = "skip"` (FreeSWITCH's packages are not public), which the FreeSWITCH step
//! reports as absent. sip1 runs Debian's Kamailio (a test-only role, `tests/data/`),
//! whose dispatcher loads the active nodes from the database and drops a lost one.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use r2a::cluster::Harness;
use r2a::manifest::Cluster;
use r2a::role::RoleSet;
use support::db_cluster::*;
use support::{Lab, fixture};

/// The nodes with join steps.
const JOINING: [&str; 9] = [
    "db1", "db2", "db3", "fs1", "fs2", "fs3", "admin1", "api1", "tel1",
];
/// The nodes without: the portal, the switchboard and Kamailio.
const OTHERS: [&str; 3] = ["portal1", "switch1", "sip1"];

#[test]
fn the_whole_topology_forms_and_telephony_nodes_register_grow_and_leave_the_active_set() {
    let fx = fixture();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("r2a-pool");
    let data = data_with_test_roles();
    let manifest = skip_vendor_manifest(&dir, fx, &[]);
    let roles = [
        "db",
        "fs",
        "admin",
        "portal",
        "switchboard",
        "api",
        "telephony",
        "sip-proxy",
    ];
    let out = support::build_tarballs(fx, &manifest, &roles, Some(data.path()));
    let roles = RoleSet::load(&data.path().join("roles")).unwrap();
    let cluster = Cluster::load(&manifest, &roles).unwrap();
    let state = dir.join("state");
    let harness = Harness::new(&cluster, &out, &state).unwrap();
    harness.down().unwrap();
    let lab = Lab(harness);
    let h = &lab.0;

    let started = Instant::now();
    h.up(&JOINING).unwrap();
    h.up(&OTHERS).unwrap();
    wait_joined(h, &JOINING);
    for node in OTHERS {
        h.wait_booted(node, JOIN_LIMIT).unwrap();
    }
    println!("tel1 registered {:.0?} after up", started.elapsed());
    tel1_is_registered_with_its_capacity_and_freeswitch_reported_absent(h);
    kamailio_routes_to(h, &["10.77.0.51"]);
    status_shows_the_volume_and_the_pool(h);

    let grown = a_node_added_to_the_manifest_changes_nothing_but_hosts(h, &dir, fx, &data);
    kamailio_routes_to(&grown, &["10.77.0.51", "10.77.0.52"]);
    every_node_of_the_topology_runs_with_every_join_done(&grown);
    a_clean_stop_or_a_lost_heartbeat_leaves_the_active_set_and_a_start_returns(&grown);

    grown.down().unwrap();
    lab.0.down().unwrap();
    support::assert_nothing_left(&state, "r2a-test", &[&dir]);
}

/// The project's roles and overlays with the test-only ones of `tests/data/` beside them.
fn data_with_test_roles() -> tempfile::TempDir {
    let data = support::data_copy();
    for folder in ["roles", "overlays"] {
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(support::repo().join("tests/data").join(folder))
            .arg(data.path())
            .status()
            .unwrap();
        assert!(status.success(), "copying tests/data/{folder}");
    }
    data
}

/// The fixture's manifest with `vendor = "skip"` instead of its local stand-ins, a
/// switchboard, an api node and sip1, and `extra` telephony nodes, in `dir` with the
/// fixture's secrets.
fn skip_vendor_manifest(dir: &Path, fx: &support::Fixture, extra: &[(&str, &str)]) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir.join("state"));
    let mut nodes = vec![
        ("switch1", "switchboard", "10.77.0.33", None),
        ("api1", "api", "10.77.0.43", None),
        ("sip1", "sip-proxy", "10.77.0.61", None),
    ];
    nodes.extend(
        extra
            .iter()
            .map(|(name, address)| (*name, "telephony", *address, None)),
    );
    support::derived_manifest(fx, dir, |text| {
        let text = text.replace("[[vendor.local]]\npath = \"vendor\"\n", "");
        format!(
            "vendor = \"skip\"\n\n{text}{}",
            support::node_entries(&nodes)
        )
    })
}

/// `telephony_pool` as a client reads it: `name|address|port|calls|extensions|state`.
fn pool(h: &Harness, from: &str) -> Vec<String> {
    let sql = "SELECT name, host(address), sip_port, max_calls, max_extensions, state \
               FROM telephony_pool ORDER BY name";
    ok(h, from, &client(sql, 5000))
        .lines()
        .map(str::to_string)
        .collect()
}

fn state_of(h: &Harness, from: &str, node: &str) -> String {
    pool(h, from)
        .iter()
        .find(|row| row.starts_with(&format!("{node}|")))
        .and_then(|row| row.rsplit('|').next())
        .unwrap_or("unregistered")
        .to_string()
}

fn tel1_is_registered_with_its_capacity_and_freeswitch_reported_absent(h: &Harness) {
    assert_eq!(pool(h, "tel1"), ["tel1|10.77.0.51|5060|1500|10000|active"]);
    let dispatcher = ok(
        h,
        "tel1",
        &client(
            "SELECT setid, destination, flags, attrs, description FROM dispatcher_active",
            5000,
        ),
    );
    assert_eq!(
        dispatcher.trim(),
        "1|sip:10.77.0.51:5060|0|duid=tel1;maxload=1500|tel1"
    );
    let steps = join_steps(h, "tel1");
    let names: Vec<&str> = steps.iter().map(|step| step.0.as_str()).collect();
    assert_eq!(names, ["shared-volume", "freeswitch", "telephony-pool"]);
    assert!(steps[1].2.starts_with("FreeSWITCH is absent"), "{steps:?}");
    // The heartbeat runs, and the password it uses is in no command line.
    let keep = ok(h, "tel1", "systemctl is-active r2a-keep.service");
    assert_eq!(keep.trim(), "active");
    let command_lines = ok(h, "tel1", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '");
    assert!(!command_lines.contains("PGPASSWORD"), "{command_lines}");
}

/// What a node's unchanged state looks like: the checksums of its configuration and
/// programs (but /etc/hosts) and when each of its units last started.
fn snapshot(h: &Harness, node: &str) -> (String, String) {
    let files = ok(
        h,
        node,
        "find /etc /usr /var/lib/r2a -xdev -type f ! -path /etc/hosts -print0 \
         | sort -z | xargs -0 sha256sum",
    );
    // The long-running services and the mounts (a timer's oneshot may run any time).
    let units = ok(
        h,
        node,
        "systemctl list-units --type=service,mount --state=running,mounted --plain \
         --no-legend | awk '{print $1}' | sort | xargs systemctl show \
         --property=Id,ActiveEnterTimestampMonotonic,NRestarts --",
    );
    (files, units)
}

fn a_node_added_to_the_manifest_changes_nothing_but_hosts(
    h: &Harness,
    dir: &Path,
    fx: &support::Fixture,
    data: &tempfile::TempDir,
) -> Harness {
    let before = snapshot(h, "tel1");
    let hosts_before = ok(h, "tel1", "cat /etc/hosts");
    assert!(!hosts_before.contains("tel2"), "{hosts_before}");
    // tel2 in the manifest, its image built from it; tel1 keeps the image it runs.
    let grown_dir = dir.join("grown");
    let manifest = skip_vendor_manifest(&grown_dir, fx, &[("tel2", "10.77.0.52")]);
    let out = support::build_tarballs(fx, &manifest, &["telephony"], Some(data.path()));
    let roles = RoleSet::load(&data.path().join("roles")).unwrap();
    let cluster = Cluster::load(&manifest, &roles).unwrap();
    let grown = Harness::new(&cluster, &out, h.state_dir()).unwrap();
    let started = Instant::now();
    grown.up(&["tel2"]).unwrap();
    wait_joined(&grown, &["tel2"]);
    println!("tel2 registered {:.0?} after up", started.elapsed());
    assert_eq!(state_of(&grown, "tel1", "tel2"), "active");
    // Every node resolves the new one within a heartbeat or two.
    for node in [
        "tel1", "tel2", "admin1", "portal1", "switch1", "api1", "sip1", "db1", "db3", "fs2",
    ] {
        let resolved = wait_until(Duration::from_secs(40), "tel2 by name", || {
            let output = run(&grown, node, "getent hosts tel2");
            output.status.success().then(|| stdout(&output))
        });
        assert!(resolved.starts_with("10.77.0.52"), "{node}: {resolved}");
    }
    assert_eq!(
        snapshot(&grown, "tel1"),
        before,
        "tel1 changed but /etc/hosts"
    );
    grown
}

fn a_clean_stop_or_a_lost_heartbeat_leaves_the_active_set_and_a_start_returns(h: &Harness) {
    h.stop("tel2", Duration::from_secs(120)).unwrap();
    assert_eq!(
        state_of(h, "tel1", "tel2"),
        "inactive",
        "a clean stop leaves at once"
    );
    assert_active_again(h);

    let killed = Instant::now();
    h.kill("tel2").unwrap();
    assert_eq!(
        state_of(h, "tel1", "tel2"),
        "active",
        "a killed node says nothing"
    );
    wait_until(Duration::from_secs(60), "a stale heartbeat", || {
        (state_of(h, "tel1", "tel2") == "inactive").then_some(())
    });
    let stale = killed.elapsed();
    println!("tel2 inactive {stale:.0?} after its kill");
    assert!(stale >= Duration::from_secs(20), "{stale:?}");
    let active = ok(
        h,
        "tel1",
        &client("SELECT description FROM dispatcher_active ORDER BY 1", 5000),
    );
    assert_eq!(
        active.trim(),
        "tel1",
        "Kamailio's view drops the inactive node"
    );
    kamailio_routes_to(h, &["10.77.0.51"]);
    assert_active_again(h);
}

/// Kamailio on sip1, after a `dispatcher.reload`, lists exactly these telephony nodes.
fn kamailio_routes_to(h: &Harness, addresses: &[&str]) {
    let listed = |text: &str| -> Vec<String> {
        let mut found: Vec<String> = text
            .lines()
            .filter_map(|line| line.trim().strip_prefix("URI: sip:"))
            .map(|uri| uri.trim_end_matches(":5060").to_string())
            .collect();
        found.sort();
        found
    };
    let wanted: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
    let last = wait_until(
        Duration::from_secs(120),
        "Kamailio's dispatcher list",
        || {
            let reload = run(h, "sip1", "kamcmd dispatcher.reload");
            let list = run(h, "sip1", "kamcmd dispatcher.list");
            (reload.status.success() && listed(&stdout(&list)) == wanted).then(|| stdout(&list))
        },
    );
    assert!(
        last.contains("ID: 1"),
        "the pool is dispatcher set 1: {last}"
    );
}

fn assert_active_again(h: &Harness) {
    h.start("tel2").unwrap();
    wait_until(JOIN_LIMIT, "tel2 active again", || {
        (state_of(h, "tel1", "tel2") == "active").then_some(())
    });
}

/// `r2a-image cluster status --json` reads the volume from an fs node and the pool from
/// tel1.
fn status_shows_the_volume_and_the_pool(h: &Harness) {
    let status = serde_json::to_value(h.status().unwrap()).unwrap();
    let gluster = &status["gluster"]["available"]["value"];
    assert_eq!(gluster["volume"]["started"], true, "{status:#}");
    assert_eq!(gluster["volume"]["bricks"].as_array().unwrap().len(), 3);
    assert_eq!(gluster["heal_entries"], 0, "{status:#}");
    let pool = &status["telephony"]["available"]["value"];
    assert_eq!(pool["active"], 1, "{status:#}");
    assert_eq!(
        (pool["calls"].clone(), pool["extensions"].clone()),
        (1500.into(), 10000.into())
    );
    assert_eq!(pool["seed_use_case"], "Medium Enterprise");
    let text = h.status().unwrap().to_text();
    assert!(
        text.contains("1 active: 1500 calls, 10000 extensions"),
        "{text}"
    );
}

/// `r2a-image cluster status --json`: every node of the grown manifest runs, systemd
/// says running, and every join step is done.
fn every_node_of_the_topology_runs_with_every_join_done(h: &Harness) {
    let status = serde_json::to_value(h.status().unwrap()).unwrap();
    let nodes = status["nodes"].as_array().unwrap();
    let names: Vec<&str> = nodes.iter().filter_map(|n| n["name"].as_str()).collect();
    for node in JOINING.iter().chain(&OTHERS).chain(&["tel2"]) {
        assert!(names.contains(node), "{node} is in the status: {names:?}");
    }
    for node in nodes {
        let name = node["name"].as_str().unwrap();
        assert_eq!(node["running"], true, "{name}");
        assert_eq!(node["system"], "running", "{name}: {node:#}");
        let join = node["agent"]["available"]["value"]["join"]
            .as_array()
            .unwrap();
        for step in join {
            assert_eq!(step["state"], "done", "{name}: {step:#}");
        }
    }
}
