//! Gathering `status`: each node's process, addresses and systemd state (the manifest's
//! nodes, and any other node the record keeps), the agent's report read inside the
//! container, the etcd and Patroni members from the first running db node, the Gluster
//! pool and volume from the first running fs node, and the telephony pool from the first
//! running telephony node. Every command inside runs under a time limit, and a section
//! that cannot be read is reported as unavailable with the reason, never as a failure.

use std::process::Stdio;

use super::pools::{self, TelephonyPool};
use super::status::{self, AgentStatus, ClusterStatus, NodeStatus, Section};
use super::{Harness, container, network};
use crate::agent::host::{Host, Invocation};
use crate::agent::join::gluster_view::{self, PoolView};

/// The time limit of each command run inside a container for the report, in seconds.
const PROBE_SECONDS: &str = "20";

/// The db role's name, whose nodes run etcd and Patroni.
const DB_ROLE: &str = "db";
/// The fs role's name, whose nodes run glusterd.
const FS_ROLE: &str = "fs";
/// The telephony role's name, whose nodes read the telephony pool.
const TELEPHONY_ROLE: &str = "telephony";

const ETCD_TLS: [&str; 4] = [
    "--cacert=/etc/r2a/tls/ca.crt",
    "--cert=/etc/r2a/tls/node.crt",
    "--key=/etc/r2a/tls/node.key",
    "--endpoints=https://127.0.0.1:2379",
];

impl Harness {
    /// Every node of the manifest, then the recorded nodes it does not list (a state
    /// folder also driven with a larger manifest), and the etcd and Patroni members when
    /// a db node runs.
    pub fn status(&self) -> anyhow::Result<ClusterStatus> {
        let record = self.load_record()?;
        let mut nodes = Vec::new();
        let mut db_init = None;
        // The first running node of the roles the cluster-wide sections are read from.
        let mut fs_init = None;
        let mut telephony_init = None;
        // (name, role, address in the manifest)
        let mut listed: Vec<(&str, &str, Option<String>)> = (self.cluster.nodes.iter())
            .map(|n| {
                (
                    n.name.as_str(),
                    n.role.as_str(),
                    Some(n.address.to_string()),
                )
            })
            .collect();
        for (name, entry) in &record.nodes {
            if self.cluster.node(name).is_none() {
                listed.push((name.as_str(), entry.role.as_str(), None));
            }
        }
        for (name, role, address) in listed {
            let pid = self.live_container(&record, name);
            let init = pid.and_then(container::container_init);
            let netns = record.nodes.get(name).and_then(|n| n.netns.clone());
            let agent = match init {
                Some(init) => match run_inside(init, &["r2a-node", "status", "--json"]) {
                    Ok(json) => match AgentStatus::parse(&json) {
                        Ok(value) => Section::Available {
                            from: name.to_string(),
                            value,
                        },
                        Err(reason) => Section::Unavailable { reason },
                    },
                    Err(reason) => Section::Unavailable { reason },
                },
                None => Section::Unavailable {
                    reason: "the node is not running".to_string(),
                },
            };
            let system = init.map(|init| {
                inside(init, &["systemctl", "is-system-running"])
                    .map(|(_, stdout, _)| stdout.trim().to_string())
                    .unwrap_or_else(|reason| reason)
            });
            let first = |slot: &mut Option<(String, u32)>, of: &str| {
                if role == of && slot.is_none() {
                    *slot = init.map(|init| (name.to_string(), init));
                }
            };
            first(&mut db_init, DB_ROLE);
            first(&mut fs_init, FS_ROLE);
            first(&mut telephony_init, TELEPHONY_ROLE);
            nodes.push(NodeStatus {
                name: name.to_string(),
                role: role.to_string(),
                in_manifest: address.is_some(),
                address: address.unwrap_or_default(),
                running: pid.is_some(),
                pid,
                init_pid: init,
                addresses: netns
                    .map(|netns| network::container_addresses(&netns))
                    .unwrap_or_default(),
                system,
                agent,
            });
        }
        let (etcd, patroni) = match db_init {
            Some((name, init)) => (etcd_members(&name, init), patroni_members(&name, init)),
            None => {
                let reason = "no db node is running".to_string();
                (
                    Section::Unavailable {
                        reason: reason.clone(),
                    },
                    Section::Unavailable { reason },
                )
            }
        };
        Ok(ClusterStatus {
            cluster: self.cluster.name.clone(),
            state_dir: self.state_dir.display().to_string(),
            nodes,
            etcd,
            patroni,
            gluster: read_from(fs_init, "fs", gluster_status),
            telephony: read_from(telephony_init, "telephony", telephony_pool),
        })
    }
}

/// A section read from the first running node of a role, or why it cannot be.
fn read_from<T>(
    node: Option<(String, u32)>,
    role: &str,
    read: fn(u32) -> Result<T, String>,
) -> Section<T> {
    let Some((name, init)) = node else {
        return Section::Unavailable {
            reason: format!("no {role} node is running"),
        };
    };
    match read(init) {
        Ok(value) => Section::Available { from: name, value },
        Err(reason) => Section::Unavailable { reason },
    }
}

fn gluster_status(init: u32) -> Result<PoolView, String> {
    let mut host = InsideHost { init };
    gluster_view::observe(&mut host).map_err(|error| format!("{error:#}"))
}

/// Commands inside a container, so the report reads glusterd with the agent's own
/// reader. Read-only: nothing asks it for more than queries.
struct InsideHost {
    init: u32,
}

impl Host for InsideHost {
    fn is_live(&self) -> bool {
        true
    }

    fn run(&mut self, invocation: &Invocation) -> anyhow::Result<String> {
        let mut argv = vec![invocation.program.as_str()];
        argv.extend(invocation.args.iter().map(String::as_str));
        run_inside(self.init, &argv).map_err(anyhow::Error::msg)
    }

    fn probe(&mut self, invocation: &Invocation, _: i32) -> anyhow::Result<Option<String>> {
        self.run(invocation).map(Some)
    }

    fn kernel_hostname(&mut self) -> anyhow::Result<String> {
        anyhow::bail!("the report does not ask a container's hostname")
    }

    fn set_kernel_hostname(&mut self, _: &str) -> anyhow::Result<()> {
        anyhow::bail!("the report changes nothing in a container")
    }
}

fn telephony_pool(init: u32) -> Result<TelephonyPool, String> {
    let script = format!(
        "set -a; . /etc/r2a/database.env; set +a; psql -X -At -c \"{}\"",
        pools::TELEPHONY_SQL.replace('"', "\\\"")
    );
    pools::parse_telephony(&run_inside(init, &["sh", "-c", &script])?)
}

fn etcd_members(node: &str, init: u32) -> Section<Vec<status::EtcdMember>> {
    let mut list = vec!["etcdctl", "member", "list", "-w", "json"];
    list.extend(ETCD_TLS);
    let members = match run_inside(init, &list) {
        Ok(json) => json,
        Err(reason) => return Section::Unavailable { reason },
    };
    let mut health = vec!["etcdctl", "endpoint", "health", "--cluster", "-w", "json"];
    health.extend(ETCD_TLS);
    // An unhealthy member makes `endpoint health` exit 1 with the JSON still printed.
    let health = inside(init, &health)
        .ok()
        .map(|(_, stdout, _)| stdout)
        .filter(|stdout| stdout.trim_start().starts_with('['));
    match status::parse_etcd(&members, health.as_deref()) {
        Ok(value) => Section::Available {
            from: node.to_string(),
            value,
        },
        Err(reason) => Section::Unavailable { reason },
    }
}

fn patroni_members(node: &str, init: u32) -> Section<Vec<status::PatroniMember>> {
    let argv = [
        "patronictl",
        "-c",
        "/etc/patroni/config.yml",
        "list",
        "-f",
        "json",
    ];
    match run_inside(init, &argv).and_then(|json| status::parse_patroni(&json)) {
        Ok(value) => Section::Available {
            from: node.to_string(),
            value,
        },
        Err(reason) => Section::Unavailable { reason },
    }
}

/// Runs `argv` inside under the time limit; stdout when it succeeds, else why not.
fn run_inside(init: u32, argv: &[&str]) -> Result<String, String> {
    let (success, stdout, stderr) = inside(init, argv)?;
    if success {
        return Ok(stdout);
    }
    let said = stderr
        .trim()
        .lines()
        .last()
        .unwrap_or("no message")
        .to_string();
    Err(format!("`{}` failed: {said}", argv.join(" ")))
}

/// Runs `argv` inside under the time limit: (success, stdout, stderr).
fn inside(init: u32, argv: &[&str]) -> Result<(bool, String, String), String> {
    let mut limited = vec!["timeout", PROBE_SECONDS];
    limited.extend(argv);
    let output = container::exec_command(init, &limited)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run nsenter: {error}"))?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}
