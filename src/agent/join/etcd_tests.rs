//! The etcd join decisions, as a table: what is on disk and what the peers report, and
//! the plan that follows.

use super::*;

const ME: &str = "https://10.77.0.14:2380";

fn member(id: u64, name: &str, peer: &str, started: bool, learner: bool) -> Member {
    Member {
        id,
        name: name.to_string(),
        peer_urls: vec![peer.to_string()],
        client_urls: if started {
            vec![peer.replace(":2380", ":2379")]
        } else {
            Vec::new()
        },
        is_learner: learner,
    }
}

fn three_started() -> Vec<Member> {
    vec![
        member(1, "db1", "https://10.77.0.11:2380", true, false),
        member(2, "db2", "https://10.77.0.12:2380", true, false),
        member(3, "db3", "https://10.77.0.13:2380", true, false),
    ]
}

fn with(mut members: Vec<Member>, extra: Member) -> Vec<Member> {
    members.push(extra);
    members
}

const FULL: &str = "db1=https://10.77.0.11:2380,db2=https://10.77.0.12:2380,\
                    db3=https://10.77.0.13:2380,db4=https://10.77.0.14:2380";

/// A case: what it shows, data dir present, joined before, the peers' list, the plan.
type Case = (&'static str, bool, bool, Option<Vec<Member>>, Plan);

#[test]
fn the_plan_follows_the_disk_and_the_peers() {
    let cases: Vec<Case> = vec![
        (
            "a data dir: start the member as it is, whatever the peers say",
            true,
            true,
            None,
            Plan::Resume,
        ),
        (
            "first boot, nobody answers: static bootstrap",
            false,
            false,
            None,
            Plan::Bootstrap,
        ),
        (
            "first boot, a seed lists us (static entry, never started): bootstrap too",
            false,
            false,
            Some(with(three_started(), member(4, "db4", ME, false, false))),
            Plan::Bootstrap,
        ),
        (
            "added at runtime (no name yet) and never started: start as existing",
            false,
            false,
            Some(with(three_started(), member(4, "", ME, false, true))),
            Plan::StartAdded {
                initial_cluster: FULL.to_string(),
            },
        ),
        (
            "not listed, nobody else joining: add as a learner",
            false,
            false,
            Some(three_started()),
            Plan::AddLearner {
                initial_cluster: FULL.to_string(),
            },
        ),
        (
            "not listed, another learner joining: wait, one change at a time",
            false,
            false,
            Some(with(
                three_started(),
                member(5, "db5", "https://10.77.0.15:2380", true, true),
            )),
            Plan::Wait("member db5 is joining; one membership change at a time".to_string()),
        ),
        (
            "not listed, another added member not started yet: wait",
            false,
            false,
            Some(with(
                three_started(),
                member(5, "", "https://10.77.0.15:2380", false, true),
            )),
            Plan::Wait(
                "member https://10.77.0.15:2380 is joining; one membership change at a time"
                    .to_string(),
            ),
        ),
        (
            "listed as started but the data is gone (wiped): remove the stale entry",
            false,
            true,
            Some(with(three_started(), member(4, "db4", ME, true, false))),
            Plan::RemoveStale { id: 4 },
        ),
        (
            "wiped and nobody answers: wait, never bootstrap a second cluster",
            false,
            true,
            None,
            Plan::Wait(
                "db4 was a member but its etcd data is gone, and no peer answers to re-add it"
                    .to_string(),
            ),
        ),
        (
            "joined before, data gone, our static entry unstarted: start as existing",
            false,
            true,
            Some(with(three_started(), member(4, "db4", ME, false, false))),
            Plan::StartAdded {
                initial_cluster: FULL.to_string(),
            },
        ),
    ];
    for (case, has_data, joined_before, members, expected) in cases {
        let facts = Facts {
            name: "db4",
            peer_url: ME,
            has_data,
            joined_before,
            members: members.as_deref(),
        };
        assert_eq!(plan(&facts), expected, "{case}");
    }
}

#[test]
fn etcdctl_member_lists_parse_with_decimal_ids_and_omitted_defaults() {
    let text = r#"{"header":{"cluster_id":14841639068965178418,"member_id":10276657743932975437,"raft_term":2},
      "members":[{"ID":10276657743932975437,"name":"db1","peerURLs":["https://10.77.0.11:2380"],
                  "clientURLs":["https://10.77.0.11:2379"]},
                 {"ID":3,"peerURLs":["https://10.77.0.14:2380"],"isLearner":true}]}"#;
    let list: MemberList = serde_json::from_str(text).unwrap();
    assert_eq!(list.members[0].id, 10276657743932975437);
    assert!(list.members[0].started() && !list.members[0].is_learner);
    assert_eq!(list.members[1].name, "");
    assert!(!list.members[1].started() && list.members[1].is_learner);
}
