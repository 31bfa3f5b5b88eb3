//! What `r2a-image cluster status` reports: every node (running or not, its process, its
//! addresses, systemd's state, the agent's join steps) and, from one running db node, the
//! etcd and Patroni members. The parsers read the tools' JSON leniently: states and roles
//! are kept as the tools spell them, and a section that cannot be read says why.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterStatus {
    /// The cluster.
    pub cluster: String,
    /// The harness's state folder.
    pub state_dir: String,
    /// Every node of the manifest, then the recorded nodes it does not list.
    pub nodes: Vec<NodeStatus>,
    /// etcd's members, as one running db node sees them.
    pub etcd: Section<Vec<EtcdMember>>,
    /// Patroni's members, as one running db node sees them.
    pub patroni: Section<Vec<PatroniMember>>,
    /// The Gluster pool and volume, as one running fs node sees them.
    pub gluster: Section<crate::agent::join::gluster_view::PoolView>,
    /// The telephony pool, as one running telephony node reads it.
    pub telephony: Section<super::pools::TelephonyPool>,
}

/// A part of the report that may not be available.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Section<T> {
    /// Read from the node named `from`.
    Available {
        /// The node that answered.
        from: String,
        /// What it said.
        value: T,
    },
    /// Why not.
    Unavailable {
        /// The reason.
        reason: String,
    },
}

/// One node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStatus {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// Whether the harness's manifest lists it (a node booted with a larger manifest of
    /// the same cluster may not be).
    pub in_manifest: bool,
    /// Its address in the manifest (empty when the manifest does not list it).
    pub address: String,
    /// Whether its container runs.
    pub running: bool,
    /// The `systemd-nspawn` process.
    pub pid: Option<u32>,
    /// The container's init.
    pub init_pid: Option<u32>,
    /// The addresses on its `host0`.
    pub addresses: Vec<String>,
    /// `systemctl is-system-running` inside.
    pub system: Option<String>,
    /// `r2a-node status --json` inside.
    pub agent: Section<AgentStatus>,
}

/// `r2a-node status --json`, read leniently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Who the node found it is.
    #[serde(default)]
    pub identity: Option<serde_json::Value>,
    /// Every common step (identity, network, firewall, disks, ...).
    #[serde(default)]
    pub steps: Vec<AgentStep>,
    /// The role's join steps (etcd, Patroni, ...).
    #[serde(default)]
    pub join: Vec<AgentStep>,
    /// What stopped the last run.
    #[serde(default)]
    pub failure: Option<serde_json::Value>,
}

/// One step of the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStep {
    /// Its name.
    pub step: String,
    /// done, pending, waiting, failed, or whatever the agent says.
    pub state: String,
    /// When.
    #[serde(default)]
    pub when: Option<String>,
    /// What it found or did.
    #[serde(default)]
    pub detail: String,
}

impl AgentStatus {
    /// Parses the agent's JSON.
    pub fn parse(json: &str) -> Result<AgentStatus, String> {
        serde_json::from_str(json).map_err(|error| format!("unreadable agent status: {error}"))
    }

    /// The state of the named step (common or join).
    pub fn step_state(&self, step: &str) -> Option<&str> {
        self.steps
            .iter()
            .chain(&self.join)
            .find(|s| s.step == step)
            .map(|s| s.state.as_str())
    }
}

/// One etcd member.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EtcdMember {
    /// Its id, as etcd prints it in its logs (hex).
    pub id: String,
    /// Its name.
    pub name: String,
    /// A learner (not yet promoted to voter).
    pub learner: bool,
    /// Its client URLs.
    pub client_urls: Vec<String>,
    /// Whether `endpoint health` found it healthy; none when it was not asked.
    pub healthy: Option<bool>,
    /// The health check's error.
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct MemberList {
    #[serde(default)]
    members: Vec<RawMember>,
}

#[derive(Deserialize)]
struct RawMember {
    #[serde(rename = "ID", default)]
    id: u64,
    #[serde(default)]
    name: String,
    #[serde(rename = "clientURLs", default)]
    client_urls: Vec<String>,
    #[serde(rename = "isLearner", alias = "IsLearner", default)]
    learner: bool,
}

#[derive(Deserialize)]
struct RawHealth {
    #[serde(default)]
    endpoint: String,
    #[serde(default)]
    health: bool,
    #[serde(default)]
    error: Option<String>,
}

/// The members of `etcdctl member list -w json`, with the health of
/// `etcdctl endpoint health --cluster -w json` (when given) matched by client URL.
pub fn parse_etcd(members: &str, health: Option<&str>) -> Result<Vec<EtcdMember>, String> {
    let list: MemberList = serde_json::from_str(members)
        .map_err(|error| format!("unreadable etcd member list: {error}"))?;
    let health: Vec<RawHealth> = match health {
        Some(text) => serde_json::from_str(text)
            .map_err(|error| format!("unreadable etcd endpoint health: {error}"))?,
        None => Vec::new(),
    };
    Ok(list
        .members
        .into_iter()
        .map(|member| {
            let checked = health
                .iter()
                .find(|h| member.client_urls.contains(&h.endpoint));
            EtcdMember {
                id: format!("{:x}", member.id),
                name: member.name,
                learner: member.learner,
                client_urls: member.client_urls,
                healthy: checked.map(|h| h.health),
                error: checked
                    .and_then(|h| h.error.clone())
                    .filter(|e| !e.is_empty()),
            }
        })
        .collect())
}

/// One Patroni member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatroniMember {
    /// Its name.
    #[serde(rename(deserialize = "Member"))]
    pub member: String,
    /// Its address.
    #[serde(rename(deserialize = "Host"), default)]
    pub host: String,
    /// Leader, Sync Standby, Replica, ... as Patroni says.
    #[serde(rename(deserialize = "Role"), default)]
    pub role: String,
    /// running, streaming, ... as Patroni says.
    #[serde(rename(deserialize = "State"), default)]
    pub state: String,
    /// The timeline.
    #[serde(rename(deserialize = "TL"), default)]
    pub timeline: Option<serde_json::Value>,
    /// Replication lag in MB (a number, or a word such as "unknown").
    #[serde(rename(deserialize = "Lag in MB"), default)]
    pub lag_mb: Option<serde_json::Value>,
}

/// The members of `patronictl list -f json`.
pub fn parse_patroni(json: &str) -> Result<Vec<PatroniMember>, String> {
    serde_json::from_str(json).map_err(|error| format!("unreadable patronictl list: {error}"))
}

impl ClusterStatus {
    /// The report for people.
    pub fn to_text(&self) -> String {
        let mut text = format!("cluster {} (state {})\n", self.cluster, self.state_dir);
        for node in &self.nodes {
            let process = match (node.running, node.pid) {
                (true, Some(pid)) => format!("running, pid {pid}"),
                _ => "not running".to_string(),
            };
            let addresses = if node.addresses.is_empty() {
                "no address on host0".to_string()
            } else {
                format!("host0 {}", node.addresses.join(" "))
            };
            let address = if node.in_manifest {
                node.address.as_str()
            } else {
                "not in the manifest"
            };
            let _ = write!(
                text,
                "\n{} ({}, {address}): {process}; {addresses}",
                node.name, node.role
            );
            if let Some(system) = &node.system {
                let _ = write!(text, "; system {system}");
            }
            text.push('\n');
            match &node.agent {
                Section::Available { value, .. } => {
                    for step in value.steps.iter().chain(&value.join) {
                        let detail = step.detail.lines().next().unwrap_or_default();
                        let _ = writeln!(
                            text,
                            "  {:<12} {:<8} {:<21} {detail}",
                            step.step,
                            step.state,
                            step.when.as_deref().unwrap_or("-")
                        );
                    }
                    if let Some(failure) = &value.failure {
                        let message = failure["message"].as_str().unwrap_or("(no message)");
                        let _ = writeln!(text, "  failure: {message}");
                    }
                }
                Section::Unavailable { reason } => {
                    let _ = writeln!(text, "  agent: unavailable: {reason}");
                }
            }
        }
        text.push_str("\netcd members");
        match &self.etcd {
            Section::Available { from, value } => {
                let _ = writeln!(text, " (from {from}):");
                for member in value {
                    let kind = if member.learner { "learner" } else { "voter" };
                    let health = match (member.healthy, &member.error) {
                        (Some(true), _) => "healthy".to_string(),
                        (Some(false), Some(error)) => format!("unhealthy: {error}"),
                        (Some(false), None) => "unhealthy".to_string(),
                        (None, _) => "health unknown".to_string(),
                    };
                    let _ = writeln!(text, "  {} {} {kind} {health}", member.name, member.id);
                }
            }
            Section::Unavailable { reason } => {
                let _ = writeln!(text, ": unavailable: {reason}");
            }
        }
        text.push_str("patroni members");
        match &self.patroni {
            Section::Available { from, value } => {
                let _ = writeln!(text, " (from {from}):");
                for member in value {
                    let show = |value: &Option<serde_json::Value>| match value {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                        None => "-".to_string(),
                    };
                    let _ = writeln!(
                        text,
                        "  {} {} {} {} TL {} lag {} MB",
                        member.member,
                        member.host,
                        member.role,
                        member.state,
                        show(&member.timeline),
                        show(&member.lag_mb)
                    );
                }
            }
            Section::Unavailable { reason } => {
                let _ = writeln!(text, ": unavailable: {reason}");
            }
        }
        text.push_str(&super::pools::to_text(&self.gluster, &self.telephony));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_states_are_kept_as_the_agent_says_them() {
        let json = r#"{"identity":{"node":"db2","role":"db"},"steps":[
            {"step":"hostname","state":"done","when":"2025-08-09T00:00:01Z","detail":"db2"},
            {"step":"grow-root","state":"pending","when":null,"detail":""}],
            "join":[{"step":"etcd","state":"waiting","when":null,"detail":"for db1"},
            {"step":"patroni","state":"something-new","detail":""}],"failure":null}"#;
        let status = AgentStatus::parse(json).unwrap();
        // (step, state)
        let table = [
            ("hostname", Some("done")),
            ("grow-root", Some("pending")),
            ("etcd", Some("waiting")),
            ("patroni", Some("something-new")),
            ("absent", None),
        ];
        for (step, state) in table {
            assert_eq!(status.step_state(step), state, "{step}");
        }
        assert!(AgentStatus::parse("not json").is_err());
    }

    #[test]
    fn etcd_members_with_their_health() {
        let members = r#"{"header":{"cluster_id":1},"members":[
            {"ID":12345678901234567890,"name":"db1","peerURLs":["https://10.77.0.11:2380"],"clientURLs":["https://10.77.0.11:2379"]},
            {"ID":255,"name":"db2","clientURLs":["https://10.77.0.12:2379"],"isLearner":true},
            {"ID":16,"name":"db3","clientURLs":["https://10.77.0.13:2379"]}]}"#;
        let health = r#"[
            {"endpoint":"https://10.77.0.11:2379","health":true,"took":"2ms"},
            {"endpoint":"https://10.77.0.12:2379","health":false,"error":"context deadline exceeded"}]"#;
        let parsed = parse_etcd(members, Some(health)).unwrap();
        // (name, id, learner, healthy, error)
        let table = [
            ("db1", "ab54a98ceb1f0ad2", false, Some(true), None),
            (
                "db2",
                "ff",
                true,
                Some(false),
                Some("context deadline exceeded"),
            ),
            ("db3", "10", false, None, None),
        ];
        for ((name, id, learner, healthy, error), member) in table.into_iter().zip(&parsed) {
            assert_eq!(member.name, name);
            assert_eq!(member.id, id, "{name}");
            assert_eq!(member.learner, learner, "{name}");
            assert_eq!(member.healthy, healthy, "{name}");
            assert_eq!(member.error.as_deref(), error, "{name}");
        }
        assert!(parse_etcd("{\"members\": 3}", None).is_err());
    }

    #[test]
    fn patroni_members() {
        let json = r#"[
            {"Cluster":"r2a","Member":"db1","Host":"10.77.0.11","Role":"Leader","State":"running","TL":2},
            {"Cluster":"r2a","Member":"db2","Host":"10.77.0.12","Role":"Sync Standby","State":"streaming","TL":2,"Lag in MB":0},
            {"Cluster":"r2a","Member":"db3","Host":"10.77.0.13","Role":"Replica","State":"stopped","Lag in MB":"unknown"}]"#;
        let members = parse_patroni(json).unwrap();
        // (member, role, state, timeline, lag)
        let table = [
            ("db1", "Leader", "running", Some(serde_json::json!(2)), None),
            (
                "db2",
                "Sync Standby",
                "streaming",
                Some(serde_json::json!(2)),
                Some(serde_json::json!(0)),
            ),
            (
                "db3",
                "Replica",
                "stopped",
                None,
                Some(serde_json::json!("unknown")),
            ),
        ];
        for ((name, role, state, timeline, lag), member) in table.into_iter().zip(&members) {
            assert_eq!(member.member, name);
            assert_eq!(member.role, role, "{name}");
            assert_eq!(member.state, state, "{name}");
            assert_eq!(member.timeline, timeline, "{name}");
            assert_eq!(member.lag_mb, lag, "{name}");
        }
        let json = serde_json::to_value(&members[1]).unwrap();
        assert_eq!(json["role"], "Sync Standby");
        assert_eq!(json["lag_mb"], 0);
    }

    #[test]
    fn unavailable_sections_say_why() {
        let status = ClusterStatus {
            cluster: "c".to_string(),
            state_dir: "/s".to_string(),
            nodes: vec![NodeStatus {
                name: "db4".to_string(),
                role: "db".to_string(),
                in_manifest: false,
                address: String::new(),
                running: false,
                pid: None,
                init_pid: None,
                addresses: vec![],
                system: None,
                agent: Section::Unavailable {
                    reason: "the node is not running".to_string(),
                },
            }],
            etcd: Section::Unavailable {
                reason: "no db node is running".to_string(),
            },
            patroni: Section::Unavailable {
                reason: "no db node is running".to_string(),
            },
            gluster: Section::Unavailable {
                reason: "no fs node is running".to_string(),
            },
            telephony: Section::Unavailable {
                reason: "no telephony node is running".to_string(),
            },
        };
        let text = status.to_text();
        assert!(
            text.contains("gluster: unavailable: no fs node is running"),
            "{text}"
        );
        assert!(
            text.contains("db4 (db, not in the manifest): not running"),
            "{text}"
        );
        assert!(
            text.contains("etcd members: unavailable: no db node is running"),
            "{text}"
        );
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json["etcd"]["unavailable"]["reason"],
            "no db node is running"
        );
    }
}
