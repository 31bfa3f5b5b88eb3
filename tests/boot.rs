//! The built db image booted under real systemd through the cluster harness
//! (`r2a::cluster::Harness`: a systemd-nspawn container on a bridge inside the harness's
//! own network namespace), db2 alone: identity from its NoCloud seed, r2a-early before
//! the network, every common step done, its address on the container's `host0` (which the
//! seed's network file, matched by wired-link names, misses and the agent's own file
//! catches), and a boot that finishes with no failed unit while the join waits for the
//! etcd quorum its absent peers db1 and db3 would make.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use r2a::agent::report::BootReport;
use r2a::agent::status::State;
use r2a::cluster::Harness;
use r2a::cluster::status::{AgentStatus, AgentStep};
use r2a::project::{Project, SecretsMode};
use support::{Lab, fixture, repo};

const NODE: &str = "db2";
const BOOT_LIMIT: Duration = Duration::from_secs(300);
/// `r2a-join.service` starts only once the network is online, and its first etcd
/// attempt waits out a time limit on every member it asks before it says where it stands.
const JOIN_LIMIT: Duration = Duration::from_secs(90);
/// What the etcd join step says while the manifest's three db members have no quorum.
/// How many of them it counts as reachable is left open: db1 and db3 are not there, and
/// a member without a quorum does not answer clients on its own address yet either.
const QUORUM_WAIT: (&str, &str) = ("waiting for etcd quorum: ", " of 3 members reachable");
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
fn the_db_image_boots_alone_and_its_agent_configures_the_node_and_waits_for_its_peers() {
    let fx = fixture();
    let project = Project::load(&repo(), &fx.manifest, SecretsMode::ReadOnly).unwrap();
    // A state folder apart from tests/harness.rs's, so the two never share records.
    let state = Path::new(env!("CARGO_TARGET_TMPDIR")).join("r2a-boot-state");
    let harness = Harness::new(&project.cluster, &fx.out, &state).unwrap();
    // What a run that was killed left behind goes first, by the record it left.
    harness.down().unwrap();
    let lab = Lab(harness);
    let harness = &lab.0;
    let run = |argv: &[&str]| run_in(harness, argv);
    let started = Instant::now();

    harness.up(&[NODE]).unwrap();
    let system = harness
        .wait_booted(NODE, BOOT_LIMIT)
        .unwrap_or_else(|error| panic!("{NODE} did not boot: {error:#}"));
    eprintln!("{NODE} booted in {:?}", started.elapsed());
    for peer in ["db1", "db3"] {
        assert!(!harness.is_running(peer).unwrap(), "{peer} runs");
    }
    assert_eq!(
        system,
        "running",
        "a unit failed:\n{}",
        run(&["systemctl", "list-units", "--failed", "--no-pager"])
    );

    let console = wait_for_console(harness, "r2a-report: {", Duration::from_secs(30));
    assert!(
        console.contains(
            "r2a-node: this is db2 of cluster r2a-test (role db), found by cloud-init NoCloud data"
        ),
        "{console}"
    );
    assert!(console.contains("Finished r2a-early.service"), "{console}");
    assert!(
        console.contains("Finished r2a-firstboot.service"),
        "{console}"
    );
    assert!(!console.contains("ordering cycle"), "{console}");
    assert!(!console.contains("Failed to start r2a-"), "{console}");
    assert!(
        console.contains("Reached target multi-user.target"),
        "{console}"
    );
    let early = console.find("Finished r2a-early.service").unwrap();
    let networkd = console
        .find("Started systemd-networkd.service")
        .expect("networkd started");
    assert!(
        early < networkd,
        "the network file is written before networkd starts:\n{console}"
    );

    for step in COMMON_STEPS {
        let marker = harness
            .exec(NODE, &["cat", &format!("/var/lib/r2a/done/{step}.json")])
            .unwrap();
        assert!(marker.status.success(), "step {step} has no done marker");
    }
    // A container's root is an overlay on the host's file system: nothing to grow.
    let grow = run(&["cat", "/var/lib/r2a/done/grow-root.json"]);
    assert!(grow.contains("nothing to grow"), "{grow}");
    assert_eq!(run(&["cat", "/etc/hostname"]).trim(), NODE);

    // cloud-init rendered the seed for wired-link names, which miss `host0`; the agent's
    // own file matches host0 by the MAC the harness's veth got.
    let rendered = run(&["cat", "/etc/systemd/network/10-cloud-init-e*.network"]);
    assert!(rendered.contains("Name=e*"), "{rendered}");
    let marker = run(&["cat", "/var/lib/r2a/done/network.json"]);
    assert!(
        marker.contains(
            "10.77.0.12 on host0 by /etc/systemd/network/05-r2a.network (host0 is the only wired link)"
        ),
        "{marker}"
    );
    let report = console
        .lines()
        .find_map(BootReport::parse_line)
        .expect("the boot report");
    assert!(report.is_healthy(), "{report:?}");
    assert_eq!(report.node.as_deref(), Some(NODE), "{report:?}");
    let host0 = report
        .links
        .iter()
        .find(|link| link.name == "host0")
        .expect("the container's host0 link");
    assert_eq!(host0.addresses, ["10.77.0.12/24"], "{report:?}");
    let network = run(&["cat", "/etc/systemd/network/05-r2a.network"]);
    assert!(
        network.contains("Address=10.77.0.12/24")
            && network.contains(&format!("MACAddress={}", host0.mac)),
        "{network}\n{host0:?}"
    );
    let patroni = run(&["cat", "/etc/patroni/config.yml"]);
    assert!(
        patroni.contains("name: db2"),
        "the node's own files are installed:\n{patroni}"
    );

    // The join: the report waited for the first etcd attempt, which could not find a
    // quorum; the later steps need etcd and have not started.
    let etcd = report
        .join
        .first()
        .expect("the report lists the join steps");
    assert!(
        etcd.step == "etcd" && etcd.state == State::Waiting && waits_for_quorum(&etcd.detail),
        "{report:?}"
    );
    let join = wait_for_quorum_wait(harness);
    let states: Vec<(&str, &str)> = join
        .iter()
        .map(|step| (step.step.as_str(), step.state.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("etcd", "waiting"),
            ("patroni", "pending"),
            ("schema", "pending")
        ],
        "{join:?}"
    );
    // The step started db2's own member, which keeps asking its absent peers for votes.
    assert_eq!(
        run(&["systemctl", "is-active", "etcd.service"]).trim(),
        "active"
    );
    // Waiting is no failure: after the join's first attempts the boot is still clean.
    assert_eq!(
        run(&[
            "systemctl",
            "list-units",
            "--failed",
            "--plain",
            "--no-legend"
        ]),
        ""
    );
    assert_eq!(run(&["systemctl", "is-system-running"]).trim(), "running");
    harness.down().unwrap();
    support::assert_nothing_left(&state, "r2a-test", &[]);
}

/// Runs a command in the node, which must succeed; its stdout.
fn run_in(harness: &Harness, argv: &[&str]) -> String {
    let output = harness.exec(NODE, argv).unwrap();
    assert!(
        output.status.success(),
        "{argv:?} in {NODE} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The node's whole console, without terminal escapes, once it shows `text`.
fn wait_for_console(harness: &Harness, text: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let console = harness.console_tail(NODE, usize::MAX);
        if console.contains(text) {
            return console;
        }
        assert!(
            Instant::now() < deadline,
            "`{text}` never appeared on the console:\n{}",
            harness.console_tail(NODE, 40)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Whether a join step's detail says it waits for the etcd quorum (and not, say, that
/// it retries after an error).
fn waits_for_quorum(detail: &str) -> bool {
    detail.starts_with(QUORUM_WAIT.0) && detail.ends_with(QUORUM_WAIT.1)
}

/// The join steps of `r2a-node status --json` once the etcd step waits for the quorum;
/// panics with the last status after [`JOIN_LIMIT`].
fn wait_for_quorum_wait(harness: &Harness) -> Vec<AgentStep> {
    let deadline = Instant::now() + JOIN_LIMIT;
    loop {
        let json = run_in(harness, &["r2a-node", "status", "--json"]);
        let status = AgentStatus::parse(&json).unwrap();
        let etcd = status.join.iter().find(|step| step.step == "etcd");
        if etcd.is_some_and(|etcd| etcd.state == "waiting" && waits_for_quorum(&etcd.detail)) {
            return status.join;
        }
        assert!(
            Instant::now() < deadline,
            "the etcd join step never waited for the quorum:\n{json}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}
