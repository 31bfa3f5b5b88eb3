//! The etcd join step: this db node becomes a voting member of the cluster's etcd.
//!
//! [`plan`] decides from what the peers report (their member list) and what is on disk
//! (a data dir, an earlier done marker); [`attempt`] carries the plan out through
//! `etcdctl` and `systemctl`, then waits until the local member is healthy and a voter.
//! The cases, after `reference/self-join.md` §1 and §7:
//! - a data dir: the member exists, start it;
//! - nobody answers, never joined: static bootstrap with every db node of the manifest
//!   (`/etc/default/etcd`, state `new`, the cluster's own token);
//! - listed by the peers but never started: start it (state `new` when the entry came
//!   from the static bootstrap, `existing` when it was added at runtime);
//! - listed as started but our data is gone (wiped): remove the stale entry, then join
//!   again;
//! - not listed: add as a learner, start with state `existing`, promote once it has
//!   caught up; only when no other member is joining (one membership change at a time).

use std::path::Path;

use serde::Deserialize;

use super::Progress;
use crate::agent::host::{Host, Invocation};
use crate::agent::root::Root;
use crate::agent::steps::Context;
use crate::fsutil::write_atomic;

/// etcd's data dir (Debian's `ETCD_DATA_DIR`).
pub const DATA_DIR: &str = "/var/lib/etcd/default";
/// Settings that override `/etc/default/etcd` when this member joined a running
/// cluster; read by etcd.service after it (see the unit's drop-in).
pub const JOIN_ENV_FILE: &str = "/var/lib/r2a/etcd-join.env";
/// The cluster CA, this node's certificate and key (the agent runs as root).
pub const CA_CERT: &str = "/etc/r2a/tls/ca.crt";
/// This node's certificate.
pub const NODE_CERT: &str = "/etc/r2a/tls/node.crt";
/// This node's private key.
pub const NODE_KEY: &str = "/etc/r2a/tls/node.key";
/// etcd's local health endpoint (`ETCD_LISTEN_METRICS_URLS`), plain HTTP on loopback.
const HEALTH_URL: &str = "http://127.0.0.1:2381/health";
/// etcd refuses to promote a learner that has not caught up yet.
const NOT_IN_SYNC: &str = "can only promote a learner member which is in sync with leader";

/// One member as `etcdctl member list -w json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Member {
    /// The member id (etcdctl prints it in hex elsewhere).
    #[serde(rename = "ID")]
    pub id: u64,
    /// Empty until the member has started (for members added at runtime).
    #[serde(default)]
    pub name: String,
    /// Peer URLs.
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
    /// Client URLs; empty until the member has started and published them.
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
    /// A learner does not vote.
    #[serde(rename = "isLearner", default)]
    pub is_learner: bool,
}

impl Member {
    /// Whether the member has started and published its client URLs.
    pub fn started(&self) -> bool {
        !self.client_urls.is_empty()
    }

    /// Its name, or its peer URLs while it has none.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            self.peer_urls.join(",")
        } else {
            self.name.clone()
        }
    }
}

#[derive(Deserialize)]
struct MemberList {
    #[serde(default)]
    members: Vec<Member>,
}

/// What the etcd step knows before it acts.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// This node's member name.
    pub name: &'a str,
    /// This node's peer URL.
    pub peer_url: &'a str,
    /// The data dir holds a member.
    pub has_data: bool,
    /// The step was done on this node before (a latch: never bootstrap anew then).
    pub joined_before: bool,
    /// The member list of the first peer that answered; `None` when none did.
    pub members: Option<&'a [Member]>,
}

/// What to do about etcd on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The data dir holds the member: start it as it is.
    Resume,
    /// Static bootstrap with every db node (state `new`, `/etc/default/etcd` alone).
    Bootstrap,
    /// Our entry was added at runtime and never started: start it with state
    /// `existing` and this initial cluster.
    StartAdded {
        /// `name=peer-url,...` of every member, us included.
        initial_cluster: String,
    },
    /// Not a member: add us as a learner, then start as [`Plan::StartAdded`].
    AddLearner {
        /// `name=peer-url,...` of every member, us included.
        initial_cluster: String,
    },
    /// Our entry is from before our data was lost: remove it, then join again.
    RemoveStale {
        /// The stale member's id.
        id: u64,
    },
    /// Nothing to do yet.
    Wait(String),
}

/// Decides what to do from the facts; see the module's doc for the cases.
pub fn plan(facts: &Facts<'_>) -> Plan {
    if facts.has_data {
        return Plan::Resume;
    }
    let Some(members) = facts.members else {
        return if facts.joined_before {
            Plan::Wait(format!(
                "{} was a member but its etcd data is gone, and no peer answers to re-add it",
                facts.name
            ))
        } else {
            Plan::Bootstrap
        };
    };
    let ours = members
        .iter()
        .find(|member| member.peer_urls.iter().any(|url| url == facts.peer_url));
    match ours {
        Some(member) if member.started() => Plan::RemoveStale { id: member.id },
        Some(member) if member.name == facts.name && !facts.joined_before => Plan::Bootstrap,
        Some(_) => Plan::StartAdded {
            initial_cluster: initial_cluster(members, facts),
        },
        None => match members
            .iter()
            .find(|member| member.is_learner || !member.started())
        {
            Some(joining) => Plan::Wait(format!(
                "member {} is joining; one membership change at a time",
                joining.label()
            )),
            None => Plan::AddLearner {
                initial_cluster: initial_cluster(members, facts),
            },
        },
    }
}

/// `name=peer-url,...` of the members plus us, our entry named by us.
fn initial_cluster(members: &[Member], facts: &Facts<'_>) -> String {
    let mut entries: Vec<String> = members
        .iter()
        .filter(|member| !member.peer_urls.iter().any(|url| url == facts.peer_url))
        .flat_map(|member| {
            member
                .peer_urls
                .iter()
                .map(move |url| format!("{}={url}", member.name))
        })
        .collect();
    entries.push(format!("{}={}", facts.name, facts.peer_url));
    entries.join(",")
}

/// One attempt: observe, act on the plan, then check that the member is healthy and
/// votes.
pub fn attempt(context: &mut Context<'_>) -> anyhow::Result<Progress> {
    let name = context.node.name.clone();
    let peer_url = format!("https://{}:2380", context.node.address);
    let peers: Vec<String> = context
        .cluster
        .nodes_of("db")
        .filter(|node| node.name != name)
        .map(|node| format!("https://{}:2379", node.address))
        .collect();
    let has_data = context.root.path(DATA_DIR).join("member").is_dir();
    let members = if has_data {
        None
    } else {
        member_list(context.host, &peers)
    };
    let facts = Facts {
        name: &name,
        peer_url: &peer_url,
        has_data,
        joined_before: context.previous_marker.is_some(),
        members: members.as_deref(),
    };
    let mut changed = false;
    match plan(&facts) {
        Plan::Resume => {}
        Plan::Bootstrap => changed |= remove_join_env(context.root)?,
        Plan::StartAdded { initial_cluster } => {
            changed |= write_join_env(context.root, &initial_cluster)?;
        }
        Plan::AddLearner { initial_cluster } => {
            etcdctl(
                context.host,
                &peers,
                &[
                    "member",
                    "add",
                    &name,
                    &format!("--peer-urls={peer_url}"),
                    "--learner",
                ],
            )?;
            write_join_env(context.root, &initial_cluster)?;
            changed = true;
        }
        Plan::RemoveStale { id } => {
            etcdctl(
                context.host,
                &peers,
                &["member", "remove", &format!("{id:x}")],
            )?;
            return Ok(Progress::waiting(format!(
                "removed the stale member {id:x} of this node (its data was gone); joining again"
            )));
        }
        Plan::Wait(reason) => return Ok(Progress::Waiting(reason)),
    }
    changed |= super::ensure_started(context.host, "etcd.service")?;
    if !healthy(context.host) {
        let addresses: Vec<String> = context
            .cluster
            .nodes_of("db")
            .map(|node| node.address.to_string())
            .collect();
        let reachable = addresses
            .iter()
            .filter(|address| answers(context.host, address))
            .count();
        return Ok(Progress::waiting(format!(
            "waiting for etcd quorum: {reachable} of {} members reachable",
            addresses.len()
        )));
    }
    // A learner serves no client request (not even the member list), so a member that
    // just joined asks its peers.
    let members = member_list(context.host, &local_endpoint())
        .or_else(|| member_list(context.host, &peers))
        .ok_or_else(|| anyhow::anyhow!("neither the local etcd nor a peer lists the members"))?;
    let Some(me) = members
        .iter()
        .find(|member| member.peer_urls.contains(&peer_url))
    else {
        anyhow::bail!("the local etcd does not list this node ({peer_url}) as a member");
    };
    if me.is_learner {
        let id = format!("{:x}", me.id);
        return match etcdctl(context.host, &peers, &["member", "promote", &id]) {
            Ok(_) => Ok(Progress::changed(format!(
                "joined as learner {id} and was promoted to a voting member of {}",
                members.len()
            ))),
            Err(error) if format!("{error:#}").contains(NOT_IN_SYNC) => Ok(Progress::waiting(
                format!("learner {id} is catching up with the leader before its promotion"),
            )),
            Err(error) => Err(error),
        };
    }
    let voters = members.iter().filter(|member| !member.is_learner).count();
    let detail = format!(
        "member {:x}, healthy, one of {voters} voting members ({})",
        me.id,
        members
            .iter()
            .map(Member::label)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(if changed {
        Progress::changed(detail)
    } else {
        Progress::in_place(detail)
    })
}

/// `etcdctl` with the node's client certificate against `endpoints`.
fn etcdctl(host: &mut dyn Host, endpoints: &[String], args: &[&str]) -> anyhow::Result<String> {
    host.run(&etcdctl_invocation(endpoints, args))
}

/// The `etcdctl` command line [`etcdctl`] runs.
pub(crate) fn etcdctl_invocation(endpoints: &[String], args: &[&str]) -> Invocation {
    let mut argv = vec![
        format!("--endpoints={}", endpoints.join(",")),
        format!("--cacert={CA_CERT}"),
        format!("--cert={NODE_CERT}"),
        format!("--key={NODE_KEY}"),
        "--dial-timeout=2s".to_string(),
        "--command-timeout=5s".to_string(),
    ];
    argv.extend(args.iter().map(|arg| arg.to_string()));
    Invocation::new("etcdctl", argv).with_timeout(20)
}

/// The member list from the first of `endpoints` that answers; `None` when none does.
pub(crate) fn member_list(host: &mut dyn Host, endpoints: &[String]) -> Option<Vec<Member>> {
    if endpoints.is_empty() {
        return None;
    }
    let text = etcdctl(host, endpoints, &["member", "list", "-w", "json"]).ok()?;
    serde_json::from_str::<MemberList>(&text)
        .ok()
        .map(|list| list.members)
}

/// Whether the member at `address` answers on its peer port. Its client port would not
/// do: a member without a leader accepts no client request at all.
fn answers(host: &mut dyn Host, address: &str) -> bool {
    host.run(&peer_version_invocation(address)).is_ok()
}

/// `GET /version` on a member's peer port, with the node's certificate (the peer port
/// wants one of the cluster CA).
pub(crate) fn peer_version_invocation(address: &str) -> Invocation {
    member_get(&format!("https://{address}:2380/version"), 2)
}

/// `curl` of a member's URL with the node's certificate (both of etcd's ports want one
/// of the cluster CA), given up after `seconds`.
fn member_get(url: &str, seconds: u32) -> Invocation {
    let seconds = seconds.to_string();
    Invocation::new(
        "curl",
        [
            "--silent",
            "--fail",
            "--max-time",
            &seconds,
            "--cacert",
            CA_CERT,
            "--cert",
            NODE_CERT,
            "--key",
            NODE_KEY,
            url,
        ],
    )
}

/// The cluster version the local member reports (`etcdcluster` of `GET /version`).
/// etcd settles it only once every member has started at least once; until then it
/// says 3.0.0, and Patroni, which picks its API by it, cannot use the cluster.
pub(crate) fn cluster_version(host: &mut dyn Host) -> Option<String> {
    let curl = member_get("https://127.0.0.1:2379/version", 3);
    let body = host.run(&curl).ok()?;
    let version: serde_json::Value = serde_json::from_str(&body).ok()?;
    version["etcdcluster"].as_str().map(str::to_string)
}

/// The local client endpoint.
pub(crate) fn local_endpoint() -> Vec<String> {
    vec!["https://127.0.0.1:2379".to_string()]
}

/// Whether the local member reports itself healthy (it has a leader).
fn healthy(host: &mut dyn Host) -> bool {
    host.run(&health_invocation())
        .is_ok_and(|body| body.replace(' ', "").contains("\"health\":\"true\""))
}

/// The local health check's command line.
pub(crate) fn health_invocation() -> Invocation {
    Invocation::new("curl", ["--silent", "--max-time", "3", HEALTH_URL])
}

/// Writes [`JOIN_ENV_FILE`]; returns whether it changed.
fn write_join_env(root: &Root, initial_cluster: &str) -> anyhow::Result<bool> {
    let text = format!(
        "# Written by r2a-node: this member joined a running etcd cluster.\n\
         ETCD_INITIAL_CLUSTER_STATE=existing\nETCD_INITIAL_CLUSTER={initial_cluster}\n"
    );
    let path = root.path(JOIN_ENV_FILE);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    write_atomic(&path, text.as_bytes(), 0o644)?;
    Ok(true)
}

/// Removes [`JOIN_ENV_FILE`] (a static bootstrap uses `/etc/default/etcd` alone);
/// returns whether it was there.
fn remove_join_env(root: &Root) -> anyhow::Result<bool> {
    remove_if_present(&root.path(JOIN_ENV_FILE))
}

fn remove_if_present(path: &Path) -> anyhow::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => {
            Err(anyhow::Error::new(error).context(format!("removing {}", path.display())))
        }
    }
}

#[cfg(test)]
#[path = "etcd_tests.rs"]
mod tests;
