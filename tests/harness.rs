//! The cluster harness (`r2a::cluster::Harness`) on the built test cluster: db1 (with a
//! data disk), db2 and portal1 boot as systemd-nspawn containers, each finishes its boot
//! with the agent's common steps done and its address on `host0`, the nodes reach each
//! other on the lab bridge while the host's namespace holds no address or route of the
//! cluster, a killed node and a stopped one come back with their state, each node's record
//! names the tree it lies on, and `down` (from a harness of a smaller manifest, which
//! still reports the node it does not list) leaves no process, mount, namespace, veth,
//! cgroup or loop device behind.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use r2a::cluster::Harness;
use r2a::cluster::state::Record;
use r2a::cluster::status::{AgentStatus, Section};
use r2a::cluster::trees;
use r2a::project::{Project, SecretsMode};
use support::{Lab, fixture, host_output, processes_mentioning, repo};

const BOOT_LIMIT: Duration = Duration::from_secs(300);
const COMMON_STEPS: [&str; 7] = [
    "node-files",
    "hostname",
    "hosts",
    "network",
    "firewall",
    "data-disk",
    "grow-root",
];

#[test]
fn a_cluster_runs_on_one_machine_and_goes_without_a_trace() {
    for tool in ["systemd-nspawn", "ip", "nsenter", "setsid", "losetup"] {
        assert!(
            r2a::exec::find_program(tool).is_some(),
            "{tool} is missing: run `make deps`"
        );
    }
    let fx = fixture();
    let project = Project::load(&repo(), &fx.manifest, SecretsMode::ReadOnly).unwrap();
    let state = Path::new(env!("CARGO_TARGET_TMPDIR")).join("r2a-harness-state");
    let harness = Harness::new(&project.cluster, &fx.out, &state).unwrap();
    // What a run that was killed left behind goes first, by the record it left.
    harness.down().unwrap();
    let lab = Lab(harness);
    let harness = &lab.0;
    an_up_killed_midway_leaves_nothing_after_down(harness, fx);
    let started = Instant::now();

    harness.up(&["db1", "db2", "portal1"]).unwrap();
    for (node, address) in [
        ("db1", "10.77.0.11/24"),
        ("db2", "10.77.0.12/24"),
        ("portal1", "10.77.0.31/24"),
    ] {
        assert_booted(harness, node);
        let addresses = run(harness, node, &["ip", "-4", "-o", "addr", "show", "host0"]);
        assert!(addresses.contains(address), "{node}: {addresses}");
    }
    eprintln!("three nodes booted in {:?}", started.elapsed());
    assert_trees_recorded(harness, &fx.out);

    // The data disk: a loop device shown as the manifest's /dev/vdb, formatted and mounted.
    let mounted = run(
        harness,
        "db1",
        &["findmnt", "-n", "-o", "FSTYPE", "/var/lib/postgresql"],
    );
    assert_eq!(mounted.trim(), "ext4");

    // The lab: the nodes reach each other; the host holds nothing of it.
    run(
        harness,
        "db2",
        &["ping", "-c", "2", "-W", "2", "10.77.0.31"],
    );
    run(
        harness,
        "portal1",
        &["ping", "-c", "2", "-W", "2", "10.77.0.12"],
    );
    run(
        harness,
        "portal1",
        &["bash", "-c", "exec 3<>/dev/tcp/10.77.0.11/22"],
    );
    for argv in [["ip", "-4", "addr"], ["ip", "-4", "route"]] {
        let host = host_output(&argv);
        assert!(
            !host.contains("10.77."),
            "the host has a lab address or route: {host}"
        );
    }
    assert_no_lab_link_on_the_host();

    // An exit status passes through.
    let output = harness
        .exec("db2", &["sh", "-c", "echo out; exit 7"])
        .unwrap();
    assert_eq!(output.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "out\n");

    // A harness of a smaller manifest of the same cluster (on the same state) still
    // reports portal1, and its `down` (at the end) removes it too.
    let mut without_portal = project.cluster.clone();
    without_portal.nodes.retain(|node| node.name != "portal1");
    let smaller = Harness::new(&without_portal, &fx.out, &state).unwrap();
    let status = smaller.status().unwrap();
    let db2 = status.nodes.iter().find(|n| n.name == "db2").unwrap();
    assert!(db2.running && db2.addresses == ["10.77.0.12/24"], "{db2:?}");
    let db3 = status.nodes.iter().find(|n| n.name == "db3").unwrap();
    assert!(!db3.running && db3.in_manifest, "{db3:?}");
    assert!(matches!(db3.agent, Section::Unavailable { .. }));
    let portal1 = status.nodes.iter().find(|n| n.name == "portal1").unwrap();
    assert!(portal1.running && !portal1.in_manifest, "{portal1:?}");
    let text = status.to_text();
    assert!(text.contains("etcd members"), "{text}");
    assert!(
        text.contains("portal1 (portal, not in the manifest)"),
        "{text}"
    );

    // A power loss and a clean poweroff: both come back on the state they kept.
    run(
        harness,
        "db2",
        &["sh", "-c", "echo kept > /root/harness-marker"],
    );
    harness.kill("db2").unwrap();
    assert!(!harness.is_running("db2").unwrap());
    harness.start("db2").unwrap();
    assert_booted(harness, "db2");
    assert_eq!(
        run(harness, "db2", &["cat", "/root/harness-marker"]),
        "kept\n"
    );
    harness.stop("portal1", Duration::from_secs(120)).unwrap();
    assert!(!harness.is_running("portal1").unwrap());
    assert!(
        harness
            .console_tail("portal1", 20)
            .contains("Halting system")
            || harness.console_tail("portal1", 20).contains("Powering off"),
        "portal1 did not shut down cleanly:\n{}",
        harness.console_tail("portal1", 20)
    );
    harness.start("portal1").unwrap();
    assert_booted(harness, "portal1");
    run(
        harness,
        "db2",
        &["ping", "-c", "1", "-W", "2", "10.77.0.31"],
    );

    assert_trees_recorded(harness, &fx.out);

    smaller.down().unwrap();
    assert_nothing_left(harness);
    harness.down().unwrap();
    support::assert_nothing_left(harness.state_dir(), "r2a-test", &[]);
    eprintln!("the whole test took {:?}", started.elapsed());
}

#[test]
fn the_command_line_names_the_build_of_a_missing_role_and_reports_a_cluster_that_is_down() {
    let fx = fixture();
    let state = tempfile::tempdir().unwrap();
    let cluster = |args: &[&str]| {
        let mut argv = vec![
            "cluster",
            fx.manifest.to_str().unwrap(),
            "--out",
            fx.out.to_str().unwrap(),
            "--state",
            state.path().to_str().unwrap(),
        ];
        argv.extend(args);
        support::run_image_tool(&argv, None)
    };
    // tel1's role, telephony, is not part of the fixture's build.
    let up = cluster(&["up", "--nodes", "tel1"]);
    assert_eq!(up.status.code(), Some(1), "{}", up.stderr);
    assert!(
        up.stderr.contains("role telephony is not built")
            && up.stderr.contains("--role telephony --format tar"),
        "{}",
        up.stderr
    );
    let status = cluster(&["status", "--json"]);
    assert!(status.status.success(), "{}", status.stderr);
    let json: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(json["nodes"][0]["name"], "db1");
    assert_eq!(json["nodes"][0]["running"], false);
    assert_eq!(
        json["etcd"]["unavailable"]["reason"],
        "no db node is running"
    );
    let exec = cluster(&["exec", "db1", "--", "true"]);
    assert!(
        exec.stderr.contains("node db1 is not running"),
        "{}",
        exec.stderr
    );
    assert!(cluster(&["down"]).status.success());
}

/// `r2a-image cluster up` killed (SIGKILL, no cleanup of its own) once its first
/// container runs and before the boots are done: `down` finds everything it made from its
/// record and removes it.
fn an_up_killed_midway_leaves_nothing_after_down(harness: &Harness, fx: &support::Fixture) {
    let mut up = std::process::Command::new(env!("CARGO_BIN_EXE_r2a-image"))
        .args(["cluster", fx.manifest.to_str().unwrap()])
        .args(["--out", fx.out.to_str().unwrap()])
        .args(["--state", harness.state_dir().to_str().unwrap()])
        .args(["up", "--nodes", "db1,db2,portal1"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + BOOT_LIMIT;
    while !harness.is_running("db1").unwrap_or(false) {
        assert!(
            up.try_wait().unwrap().is_none(),
            "`cluster up` ended before db1 ran"
        );
        assert!(Instant::now() < deadline, "db1 never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    up.kill().unwrap();
    up.wait().unwrap();
    assert!(
        harness.has_resources().unwrap(),
        "the killed up left nothing to remove"
    );
    harness.down().unwrap();
    assert_nothing_left(harness);
}

/// The node's systemd has finished booting and its agent has done every common step.
fn assert_booted(harness: &Harness, node: &str) {
    let system = harness
        .wait_booted(node, BOOT_LIMIT)
        .unwrap_or_else(|error| panic!("{node} did not boot: {error:#}"));
    assert!(
        system == "running" || system == "degraded",
        "{node}: {system}"
    );
    let json = run(harness, node, &["r2a-node", "status", "--json"]);
    let agent = AgentStatus::parse(&json).unwrap();
    for step in COMMON_STEPS {
        assert_eq!(
            agent.step_state(step),
            Some("done"),
            "{node}: step {step}:\n{json}\n{}",
            harness.console_tail(node, 40)
        );
    }
}

/// Each node's record names the tree of its role's tarball, `roles/<role>/<key>/tree`.
fn assert_trees_recorded(harness: &Harness, out: &Path) {
    let record = Record::load(harness.state_dir(), "r2a-test").unwrap();
    for (node, role) in [("db1", "db"), ("db2", "db"), ("portal1", "portal")] {
        let tarball = r2a::cluster::rootfs::role_tarball(out, "r2a-test", role);
        let sha256 = r2a::hash::sha256_file(&tarball).unwrap();
        let dir = trees::tree_dir(harness.state_dir(), role, &sha256);
        assert_eq!(
            record.nodes[node].tree,
            Some(trees::tree_of(&dir)),
            "{node}"
        );
        assert!(
            trees::is_whole(&trees::tree_of(&dir), Some(&sha256)),
            "{node}"
        );
    }
}

/// Runs a command in a node, which must succeed; its stdout.
fn run(harness: &Harness, node: &str, argv: &[&str]) -> String {
    let output = harness.exec(node, argv).unwrap();
    assert!(
        output.status.success(),
        "{argv:?} in {node} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// None of the lab's veth ends is in the host's namespace.
fn assert_no_lab_link_on_the_host() {
    let links = host_output(&["ip", "-br", "link"]);
    let nodes = r2a::cluster::names::node_names("r2a-test", &["db1", "db2", "portal1"]).unwrap();
    for names in nodes {
        let words: Vec<&str> = links.split_whitespace().collect();
        let found = |name: &str| words.iter().any(|w| w.split('@').next() == Some(name));
        assert!(!found(&names.bridge_port) && !found("host0"), "{links}");
    }
}

fn assert_nothing_left(harness: &Harness) {
    let state = harness.state_dir().to_string_lossy().into_owned();
    assert!(!harness.has_resources().unwrap());
    assert_eq!(processes_mentioning(&state), Vec::<String>::new());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(&state), "{mountinfo}");
    let namespaces = host_output(&["ip", "netns", "list"]);
    assert!(!namespaces.contains("r2a-r2a-test"), "{namespaces}");
    assert_no_lab_link_on_the_host();
    let loops = host_output(&["losetup", "--list", "--noheadings", "--output", "BACK-FILE"]);
    assert!(!loops.contains(&state), "{loops}");
    let hierarchies = r2a::cluster::cgroup::Hierarchies::detect().unwrap();
    for folder in hierarchies.folders("r2a-cluster/r2a-test") {
        assert!(!folder.exists(), "{} is left", folder.display());
    }
}
