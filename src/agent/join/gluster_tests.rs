//! The Gluster join decisions, as a table: the pool and the volume a node sees, and the
//! plan that follows; and the CLI's XML answers as glusterd 11 gives them.

use super::*;
use crate::agent::join::gluster_cli::{parse_pool, parse_volume};

const BRICK: &str = "/srv/gluster/b1/shared";
const SIX: [&str; 6] = ["fs1", "fs2", "fs3", "fs4", "fs5", "fs6"];

/// Gluster knows the fs nodes beyond the seeds by address.
fn later() -> Vec<(&'static str, String)> {
    (4..=6)
        .map(|n| (SIX[n - 1], format!("10.77.0.2{n}")))
        .collect()
}

/// Pool peers as glusterd lists them: seeds by name, later nodes by address.
fn peers(connected: &[&str], disconnected: &[&str]) -> Vec<Peer> {
    let peer = |name: &&str, connected| Peer {
        hostname: later()
            .into_iter()
            .find(|(node, _)| node == name)
            .map_or(name.to_string(), |(_, address)| address),
        connected,
    };
    connected
        .iter()
        .map(|name| peer(name, true))
        .chain(disconnected.iter().map(|name| peer(name, false)))
        .collect()
}

fn volume(nodes: &[&str], started: bool, with_options: bool) -> Volume {
    Volume {
        name: "shared".into(),
        started,
        bricks: bricks(nodes),
        options: if with_options {
            VOLUME_OPTIONS
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect()
        } else {
            BTreeMap::new()
        },
    }
}

fn bricks(nodes: &[&str]) -> Vec<String> {
    let host = |node: &str| {
        later()
            .into_iter()
            .find(|(name, _)| *name == node)
            .map_or(node.to_string(), |(_, address)| address)
    };
    nodes
        .iter()
        .map(|node| format!("{}:{BRICK}", host(node)))
        .collect()
}

fn wait(reason: &str) -> Plan {
    Plan::Wait(reason.to_string())
}

/// A case: what it shows, this node, the fs nodes it knows, the pool, the volume, plan.
type Case = (
    &'static str,
    &'static str,
    &'static [&'static str],
    Vec<Peer>,
    Option<Volume>,
    Plan,
);

fn cases() -> Vec<Case> {
    let three: &'static [&'static str] = &SIX[..3];
    let done3 = "the volume is started, 1 × 3 bricks, one of them on this node";
    vec![
        (
            "the coordinator probes the first seed it does not know",
            "fs1",
            three,
            peers(&[], &[]),
            None,
            Plan::Probe("fs2".into()),
        ),
        (
            "then the next one",
            "fs1",
            three,
            peers(&["fs2"], &[]),
            None,
            Plan::Probe("fs3".into()),
        ),
        (
            "a probed seed that is down holds creation back",
            "fs1",
            three,
            peers(&["fs2"], &["fs3"]),
            None,
            wait("fs3 is in the pool but not connected"),
        ),
        (
            "all three connected: it creates the replica-3 volume",
            "fs1",
            three,
            peers(&["fs2", "fs3"], &[]),
            None,
            Plan::Create {
                bricks: bricks(three),
                force: false,
            },
        ),
        (
            "the coordinator is the lowest name, not the first listed",
            "fs2",
            &["fs3", "fs2", "fs1"],
            peers(&[], &[]),
            None,
            wait("waiting for fs1 to form the pool and create the volume"),
        ),
        (
            "a created volume gets its TLS options before it starts",
            "fs1",
            three,
            peers(&["fs2", "fs3"], &[]),
            Some(volume(three, false, false)),
            Plan::SetOptions(
                VOLUME_OPTIONS
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            ),
        ),
        (
            "then it starts",
            "fs1",
            three,
            peers(&["fs2", "fs3"], &[]),
            Some(volume(three, false, true)),
            Plan::Start,
        ),
        (
            "another seed waits for the start",
            "fs3",
            three,
            peers(&["fs1", "fs2"], &[]),
            Some(volume(three, false, true)),
            wait("waiting for fs1 to start the volume"),
        ),
        (
            "a started volume with our brick is done, on every seed",
            "fs2",
            three,
            peers(&["fs1", "fs3"], &[]),
            Some(volume(three, true, true)),
            Plan::Done(done3.into()),
        ),
        (
            "a seed whose peers are down is still done: the volume is there",
            "fs1",
            three,
            peers(&[], &["fs2", "fs3"]),
            Some(volume(three, true, true)),
            Plan::Done(done3.into()),
        ),
        (
            "a later node outside the pool waits to be probed in",
            "fs4",
            &SIX,
            peers(&[], &[]),
            None,
            Plan::AskToJoin(
                "waiting to be probed into the pool by a member (fs1, fs2, fs3)".into(),
            ),
        ),
        (
            "a set of three in the pool: its lowest node adds the bricks",
            "fs4",
            &SIX,
            peers(&["fs1", "fs2", "fs3", "fs5", "fs6"], &[]),
            Some(volume(three, true, true)),
            Plan::AddBricks {
                bricks: bricks(&SIX[3..]),
                force: false,
            },
        ),
        (
            "the others of the set wait for it",
            "fs6",
            &SIX,
            peers(&["fs1", "fs2", "fs3", "fs4", "fs5"], &[]),
            Some(volume(three, true, true)),
            wait("waiting for fs4 to add the bricks of its set"),
        ),
        (
            "a set with a node not probed in yet waits for it",
            "fs4",
            &SIX,
            peers(&["fs1", "fs2", "fs3", "fs5"], &[]),
            Some(volume(three, true, true)),
            wait("waiting for fs6 to be in the pool (a member probes new fs nodes in)"),
        ),
        (
            "an incomplete set waits for the manifest to complete it",
            "fs4",
            &SIX[..5],
            peers(&["fs1", "fs2", "fs3", "fs5"], &[]),
            Some(volume(three, true, true)),
            wait("fs4, fs5 waits for 1 more fs node(s) in the manifest: bricks join in sets of 3"),
        ),
        (
            "after the add the new set is done",
            "fs5",
            &SIX,
            peers(&["fs1", "fs2", "fs3", "fs4", "fs6"], &[]),
            Some(volume(&SIX, true, true)),
            Plan::Done("the volume is started, 2 × 3 bricks, one of them on this node".into()),
        ),
    ]
}

#[test]
fn each_pool_and_volume_leads_to_its_plan() {
    let later = later();
    let later: Vec<(&str, String)> = later.iter().map(|(n, a)| (*n, a.clone())).collect();
    for (what, own, fs_nodes, peers, volume, expected) in cases() {
        let facts = Facts {
            own,
            fs_nodes,
            later_addresses: &later,
            without_data_disk: &[],
            brick: BRICK,
            peers: &peers,
            volume: volume.as_ref(),
        };
        assert_eq!(plan(&facts), expected, "{what}");
    }
}

#[test]
fn bricks_on_a_root_disk_are_created_with_force_and_said_so() {
    let three = ["fs1", "fs2", "fs3"];
    let pool = peers(&["fs2", "fs3"], &[]);
    let mut facts = Facts {
        own: "fs1",
        fs_nodes: &three,
        later_addresses: &[],
        without_data_disk: &["fs2"],
        brick: BRICK,
        peers: &pool,
        volume: None,
    };
    assert_eq!(
        plan(&facts),
        Plan::Create {
            bricks: bricks(&three),
            force: true
        }
    );
    let started = volume(&three, true, true);
    facts.volume = Some(&started);
    facts.own = "fs2";
    let Plan::Done(detail) = plan(&facts) else {
        panic!("a started volume is done");
    };
    assert!(
        detail.ends_with("its brick is on the root disk (no data disk)"),
        "{detail}"
    );
}

const POOL_LIST: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cliOutput>
  <opRet>0</opRet>
  <opErrno>0</opErrno>
  <opErrstr/>
  <peerStatus>
    <peer>
      <uuid>3eb5ba34-95a8-45c2-8a3c-b2429d497e46</uuid>
      <hostname>fs2</hostname>
      <hostnames>
        <hostname>fs2</hostname>
      </hostnames>
      <connected>1</connected>
      <state>3</state>
      <stateStr>Peer in Cluster</stateStr>
    </peer>
    <peer>
      <uuid>5a0b7e0c-1f7e-4c6c-9d8e-2b1f7c3e9a10</uuid>
      <hostname>fs3</hostname>
      <connected>0</connected>
    </peer>
    <peer>
      <uuid>e0043694-77f2-454f-a267-506444f4f83c</uuid>
      <hostname>localhost</hostname>
      <connected>1</connected>
    </peer>
  </peerStatus>
</cliOutput>"#;

const NO_VOLUME: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cliOutput>
  <opRet>-1</opRet>
  <opErrno>30806</opErrno>
  <opErrstr>Volume does not exist</opErrstr>
  <volInfo>
    <volumes>
      <count>0</count>
    </volumes>
  </volInfo>
</cliOutput>"#;

const VOLUME_INFO: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cliOutput>
  <opRet>0</opRet>
  <opErrno>0</opErrno>
  <opErrstr/>
  <volInfo>
    <volumes>
      <volume>
        <name>shared</name>
        <status>1</status>
        <statusStr>Started</statusStr>
        <brickCount>3</brickCount>
        <replicaCount>3</replicaCount>
        <bricks>
          <brick uuid="a">fs1:/srv/gluster/b1/shared<name>fs1:/srv/gluster/b1/shared</name><hostUuid>a</hostUuid><isArbiter>0</isArbiter></brick>
          <brick uuid="b">fs2:/srv/gluster/b1/shared<name>fs2:/srv/gluster/b1/shared</name><hostUuid>b</hostUuid><isArbiter>0</isArbiter></brick>
          <brick uuid="c">fs3:/srv/gluster/b1/shared<name>fs3:/srv/gluster/b1/shared</name><hostUuid>c</hostUuid><isArbiter>0</isArbiter></brick>
        </bricks>
        <optCount>2</optCount>
        <options>
          <option><name>client.ssl</name><value>on</value></option>
          <option><name>auth.ssl-allow</name><value>*</value></option>
        </options>
      </volume>
      <count>1</count>
    </volumes>
  </volInfo>
</cliOutput>"#;

#[test]
fn the_pool_list_gives_the_peers_without_this_node() {
    assert_eq!(
        parse_pool(POOL_LIST).unwrap(),
        vec![
            Peer {
                hostname: "fs2".into(),
                connected: true
            },
            Peer {
                hostname: "fs3".into(),
                connected: false
            },
        ]
    );
}

#[test]
fn volume_info_gives_state_bricks_and_options_or_none() {
    assert_eq!(parse_volume(NO_VOLUME).unwrap(), None);
    let volume = parse_volume(VOLUME_INFO).unwrap().unwrap();
    assert!(volume.started);
    assert_eq!(volume.name, "shared");
    assert_eq!(volume.bricks, bricks(&["fs1", "fs2", "fs3"]));
    assert!(volume.has_brick_of("fs2") && !volume.has_brick_of("fs4"));
    assert_eq!(
        volume.options.get("client.ssl").map(String::as_str),
        Some("on")
    );
    assert_eq!(volume.options.len(), 2);
    let refused = NO_VOLUME.replace("Volume does not exist", "Connection failed");
    assert!(parse_volume(&refused).is_err());
}

#[test]
fn a_peer_recorded_by_its_full_name_is_the_node() {
    let peer = Peer {
        hostname: "fs1.test.r2a.internal".into(),
        connected: true,
    };
    assert!(peer.is("fs1") && peer.is("fs1.test.r2a.internal"));
    assert!(!peer.is("fs") && !peer.is("fs11"));
}
