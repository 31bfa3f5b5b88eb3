//! `r2a-node join` on a fake db1: what the run records, when it waits, when it stops,
//! and that a second run over a joined node changes nothing.

use super::etcd::{etcdctl_invocation, health_invocation, peer_version_invocation};
use super::*;
use crate::agent::config::ROLE_FILE;
use crate::agent::host::ScriptedHost;
use crate::agent::identity::{Identity, record};
use crate::agent::sources::Source;
use crate::agent::status::{Report, State};
use crate::agent::testing::FakeRoot;

const ROLE_WITH_ETCD: &str = r#"{"name": "db", "data_disk": null, "join": ["etcd"]}"#;

/// A db1 image whose first boot recorded its identity.
fn identified_db1(role_json: &str) -> FakeRoot {
    let fake = FakeRoot::db();
    fake.write(ROLE_FILE, role_json);
    let identity = Identity {
        cluster: "lab".to_string(),
        role: "db".to_string(),
        node: "db1".to_string(),
        address: "192.168.10.11".parse().unwrap(),
        source: Source::KernelCommandLine,
        evidence: "r2a.node=db1".to_string(),
    };
    record(&fake.root, &identity).unwrap();
    fake
}

fn endpoint(address: &str) -> String {
    format!("https://{address}:2379")
}

fn etcdctl(endpoints: &[&str], args: &[&str]) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|a| endpoint(a)).collect();
    etcdctl_invocation(&endpoints, args).to_string()
}

const PEERS: [&str; 2] = ["192.168.10.12", "192.168.10.13"];
const ALL: [&str; 3] = ["192.168.10.11", "192.168.10.12", "192.168.10.13"];

fn once() -> RunOptions {
    RunOptions {
        once: true,
        ..RunOptions::default()
    }
}

#[test]
fn a_lone_db_node_bootstraps_etcd_and_says_how_many_members_it_reaches() {
    let fake = identified_db1(ROLE_WITH_ETCD);
    let mut host = ScriptedHost::new(true);
    host.fail(
        &etcdctl(&PEERS, &["member", "list", "-w", "json"]),
        "context deadline exceeded",
    );
    host.absent("systemctl is-active etcd.service")
        .answer("systemctl is-active etcd.service", "active\n");
    host.succeed("systemctl start --no-block etcd.service");
    host.fail(&health_invocation().to_string(), "connection refused");
    // The member itself answers on its peer port; the peers do not.
    host.answer(
        &peer_version_invocation(ALL[0]).to_string(),
        r#"{"etcdserver":"3.5.16","etcdcluster":"3.5.0"}"#,
    );
    for peer in PEERS {
        host.fail(
            &peer_version_invocation(peer).to_string(),
            "curl: (28) Connection timed out",
        );
    }
    let status = run(&fake.root, &mut host, once()).unwrap();

    let line = &status.steps[0];
    assert_eq!(line.state, JoinState::Waiting, "{status:?}");
    assert_eq!(
        line.detail,
        "waiting for etcd quorum: 1 of 3 members reachable"
    );
    assert!(
        host.log()
            .contains(&"systemctl start --no-block etcd.service".to_string())
    );
    assert!(!fake.exists("/var/lib/r2a/done/etcd.json"), "not done yet");
    assert!(!fake.exists(etcd::JOIN_ENV_FILE), "a static bootstrap");
    // `r2a-node status` shows the wait.
    let report = Report::current(&fake.root).unwrap();
    assert_eq!(report.join.len(), 1);
    assert_eq!(report.join[0].state, State::Waiting);
    assert!(report.to_table().contains("waiting for etcd quorum"));
}

fn joined_voter_host() -> ScriptedHost {
    let mut host = ScriptedHost::new(true);
    host.answer("systemctl is-active etcd.service", "active\n");
    host.answer(
        &health_invocation().to_string(),
        r#"{"health":"true","reason":""}"#,
    );
    host.answer(
        &etcdctl_invocation(&["https://127.0.0.1:2379".to_string()], &["member", "list", "-w", "json"])
            .to_string(),
        r#"{"members":[
          {"ID":17,"name":"db1","peerURLs":["https://192.168.10.11:2380"],"clientURLs":["https://192.168.10.11:2379"]},
          {"ID":18,"name":"db2","peerURLs":["https://192.168.10.12:2380"],"clientURLs":["https://192.168.10.12:2379"]},
          {"ID":19,"name":"db3","peerURLs":["https://192.168.10.13:2380"],"clientURLs":["https://192.168.10.13:2379"]}]}"#,
    );
    host
}

#[test]
fn a_healthy_voter_is_done_and_a_second_run_changes_nothing() {
    let fake = identified_db1(ROLE_WITH_ETCD);
    std::fs::create_dir_all(fake.root.path("/var/lib/etcd/default/member")).unwrap();
    let mut host = joined_voter_host();
    let status = run(&fake.root, &mut host, once()).unwrap();
    assert!(status.all_done(), "{status:?}");
    assert_eq!(
        status.steps[0].detail,
        "member 11, healthy, one of 3 voting members (db1, db2, db3)"
    );
    assert!(fake.exists("/var/lib/r2a/done/etcd.json"));

    let before = fake.snapshot();
    host.clear_log();
    let again = run(&fake.root, &mut host, once()).unwrap();
    assert!(again.all_done());
    assert_eq!(fake.snapshot(), before, "no file written");
    assert!(
        host.log().iter().all(|line| !line.contains(" start ")
            && !line.contains("member add")
            && !line.contains("promote")),
        "nothing started or changed: {:?}",
        host.log()
    );
}

#[test]
fn a_learner_that_has_not_caught_up_waits_for_its_promotion() {
    let fake = identified_db1(ROLE_WITH_ETCD);
    std::fs::create_dir_all(fake.root.path("/var/lib/etcd/default/member")).unwrap();
    let mut host = joined_voter_host();
    // A learner serves no client request: the member list and the promotion go to the
    // peers.
    let local = ["https://127.0.0.1:2379".to_string()];
    let local_list = etcdctl_invocation(&local, &["member", "list", "-w", "json"]).to_string();
    host.forget(&local_list).fail(
        &local_list,
        "Error: etcdserver: rpc not supported for learner",
    );
    host.answer(
        &etcdctl(&PEERS, &["member", "list", "-w", "json"]),
        r#"{"members":[
          {"ID":17,"name":"db1","peerURLs":["https://192.168.10.11:2380"],"clientURLs":["https://192.168.10.11:2379"],"isLearner":true},
          {"ID":18,"name":"db2","peerURLs":["https://192.168.10.12:2380"],"clientURLs":["https://192.168.10.12:2379"]}]}"#,
    );
    let promote = etcdctl(&PEERS, &["member", "promote", "11"]);
    host.fail(
        &promote,
        "Error: etcdserver: can only promote a learner member which is in sync with leader",
    )
    .succeed(&promote);
    let status = run(&fake.root, &mut host, once()).unwrap();
    assert_eq!(status.steps[0].state, JoinState::Waiting);
    assert!(status.steps[0].detail.contains("catching up"), "{status:?}");
    let status = run(&fake.root, &mut host, once()).unwrap();
    assert_eq!(status.steps[0].state, JoinState::Done, "{status:?}");
    assert!(
        status.steps[0]
            .detail
            .contains("promoted to a voting member")
    );
}

#[test]
fn a_join_step_the_agent_does_not_know_is_a_configuration_error() {
    let fake =
        identified_db1(r#"{"name": "db", "data_disk": null, "join": ["etcd", "pacemaker"]}"#);
    let mut host = ScriptedHost::new(true);
    let error = run(&fake.root, &mut host, once()).unwrap_err();
    assert!(crate::agent::config::is_config_error(&error));
    assert!(format!("{error:#}").contains("`pacemaker`"), "{error:#}");
    assert!(host.log().is_empty(), "nothing ran");
}

#[test]
fn without_a_recorded_identity_the_join_waits_for_firstboot_and_says_so() {
    let fake = FakeRoot::db();
    fake.write(ROLE_FILE, ROLE_WITH_ETCD);
    let mut host = ScriptedHost::new(true);
    let error = run(&fake.root, &mut host, once()).unwrap_err();
    assert!(format!("{error:#}").contains("r2a-firstboot.service must run first"));
}
