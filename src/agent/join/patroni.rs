//! The Patroni join step: Patroni runs on this db node with the etcd3 DCS and its
//! PostgreSQL 17 is the primary or a streaming replica.
//!
//! Patroni itself decides who runs initdb (the node that takes the DCS `initialize`
//! key) and who clones from the leader (`pg_basebackup`), so the step only prepares the
//! data folder, starts `patroni.service` once etcd is up, and waits until Patroni's own
//! REST API (`GET /patroni`, HTTPS) says PostgreSQL is running in a known role.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;

use super::Progress;
use super::etcd::{self, CA_CERT, Member};
use crate::agent::host::{Host, Invocation};
use crate::agent::root::Root;
use crate::agent::steps::Context;

/// PostgreSQL's home, the data disk's mount point on db nodes.
pub const POSTGRES_HOME: &str = "/var/lib/postgresql";
/// The folder Patroni's `data_dir` (`17/main`) goes in.
pub const CLUSTER_PARENT: &str = "/var/lib/postgresql/17";

/// What `GET /patroni` reports of this member.
#[derive(Debug, Clone, Deserialize)]
pub struct MemberState {
    /// `running`, `starting`, `creating replica`, `stopped`, ...
    #[serde(default)]
    pub state: String,
    /// `primary` (Patroni 4; `master` before), `replica`, `standby_leader`.
    #[serde(default)]
    pub role: String,
    /// The timeline PostgreSQL is on.
    #[serde(default)]
    pub timeline: Option<u64>,
    /// A replica's WAL receiver: `streaming` once it follows the primary.
    #[serde(default)]
    pub replication_state: Option<String>,
}

impl MemberState {
    /// Whether PostgreSQL runs in a role Patroni has settled on: the primary running,
    /// or a replica running and streaming from it.
    pub fn is_settled(&self) -> bool {
        let streaming = self.replication_state.as_deref() == Some("streaming");
        self.state == "running"
            && match self.role.as_str() {
                "primary" | "master" | "standby_leader" => true,
                "replica" => streaming,
                _ => false,
            }
    }
}

/// One attempt: data folder owned by postgres, Patroni started, PostgreSQL running.
pub fn attempt(context: &mut Context<'_>) -> anyhow::Result<Progress> {
    let postgres = postgres_owner(context.root)?;
    let mut changed = false;
    for folder in [POSTGRES_HOME, CLUSTER_PARENT] {
        changed |= ensure_owned_folder(&context.root.path(folder), postgres)?;
    }
    changed |= super::ensure_started(context.host, "patroni.service")?;
    let url = format!("https://{}:8008/patroni", context.node.address);
    let curl = Invocation::new(
        "curl",
        [
            "--silent",
            "--show-error",
            "--max-time",
            "3",
            "--cacert",
            CA_CERT,
            &url,
        ],
    );
    let body = match context.host.run(&curl) {
        Ok(body) => body,
        Err(_) => return Ok(Progress::Waiting(why_patroni_waits(context.host))),
    };
    let member: MemberState = serde_json::from_str(&body)
        .with_context(|| format!("reading Patroni's answer to GET {url}"))?;
    if !member.is_settled() {
        return Ok(Progress::waiting(format!(
            "waiting for PostgreSQL under Patroni: state `{}`, role `{}`{}",
            member.state,
            member.role,
            member
                .replication_state
                .as_deref()
                .map_or(String::new(), |replication| format!(
                    ", replication `{replication}`"
                ))
        )));
    }
    let detail = format!(
        "PostgreSQL 17 runs as {}{} under Patroni (timeline {})",
        member.role,
        if member.role == "replica" {
            ", streaming"
        } else {
            ""
        },
        member.timeline.map_or("?".to_string(), |t| t.to_string())
    );
    Ok(if changed {
        Progress::changed(detail)
    } else {
        Progress::in_place(detail)
    })
}

/// Why Patroni does not answer yet. One case needs saying: etcd reports the cluster
/// version 3.0.0 until every member of its initial cluster has started once, and
/// Patroni cannot use such a cluster (it would take the long-gone v3alpha API), so a
/// cluster formed by two of three seeds waits for the third.
fn why_patroni_waits(host: &mut dyn Host) -> String {
    let unsettled = etcd::cluster_version(host).filter(|version| version.starts_with("3.0."));
    let Some(version) = unsettled else {
        return "waiting for Patroni's REST API to answer".to_string();
    };
    let never_started: Vec<String> = etcd::member_list(host, &etcd::local_endpoint())
        .unwrap_or_default()
        .iter()
        .filter(|member| !member.started())
        .map(Member::label)
        .collect();
    format!(
        "waiting for every etcd member to start once ({} not yet): etcd reports cluster \
         version {version} until then, and Patroni needs 3.1 or later",
        if never_started.is_empty() {
            "some".to_string()
        } else {
            never_started.join(", ")
        }
    )
}

/// The postgres user's ids, from the image's own user database.
fn postgres_owner(root: &Root) -> anyhow::Result<(u32, u32)> {
    let path = root.path("/etc/passwd");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() > 3 && fields[0] == "postgres")
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .next()
        .ok_or_else(|| {
            crate::agent::config::config_error(format!(
                "{} has no postgres user: is postgresql-17 installed in this image?",
                path.display()
            ))
        })
}

/// Creates `folder` (0700 when new) and gives it to `owner`; returns whether it changed.
/// A fresh data disk's root belongs to root, and PostgreSQL refuses to run from it.
fn ensure_owned_folder(folder: &Path, (uid, gid): (u32, u32)) -> anyhow::Result<bool> {
    let mut changed = false;
    if !folder.is_dir() {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("creating {}", folder.display()))?;
        changed = true;
    }
    let metadata =
        std::fs::metadata(folder).with_context(|| format!("reading {}", folder.display()))?;
    if (metadata.uid(), metadata.gid()) != (uid, gid) {
        std::os::unix::fs::chown(folder, Some(uid), Some(gid))
            .with_context(|| format!("giving {} to postgres", folder.display()))?;
        changed = true;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_running_member_in_a_known_role_is_settled() {
        let cases = [
            (r#"{"state":"running","role":"primary","timeline":1}"#, true),
            (r#"{"state":"running","role":"master"}"#, true),
            (
                r#"{"state":"running","role":"replica","replication_state":"streaming"}"#,
                true,
            ),
            (r#"{"state":"running","role":"replica"}"#, false),
            (
                r#"{"state":"running","role":"replica","replication_state":"in archive recovery"}"#,
                false,
            ),
            (r#"{"state":"starting","role":"replica"}"#, false),
            (
                r#"{"state":"creating replica","role":"uninitialized"}"#,
                false,
            ),
            (r#"{"state":"running","role":"uninitialized"}"#, false),
        ];
        for (json, settled) in cases {
            let member: MemberState = serde_json::from_str(json).unwrap();
            assert_eq!(member.is_settled(), settled, "{json}");
        }
    }
}
