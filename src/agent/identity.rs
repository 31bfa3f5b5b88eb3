//! Which node this is.
//!
//! Images are per role, not per node, so the agent finds its name at first boot, in the
//! order DESIGN.md §4 gives: the kernel command line (`r2a.node=NAME`), cloud-init
//! NoCloud meta-data (`r2a-node:` or `local-hostname:`), a MAC address listed in the
//! manifest, the hostname. The first source that names a node wins; an explicit source
//! (command line, NoCloud, MAC) that names a different node is a conflict, and a name
//! that is not a node of this image's role is a configuration error. The identity is
//! recorded in `/var/lib/r2a/identity.json` on the first run; later runs refuse to
//! continue under another cluster, role or name.

use std::net::Ipv4Addr;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::config::{Config, config_error};
use super::host::Host;
use super::markers::now_utc;
use super::root::Root;
use super::sources::{Claim, Source, gather_claims};
use crate::fsutil::{read_optional, write_atomic};

/// Where the identity is recorded on the first run.
pub const IDENTITY_FILE: &str = "/var/lib/r2a/identity.json";

/// Who this node is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Cluster name.
    pub cluster: String,
    /// The image's role.
    pub role: String,
    /// The node's name.
    pub node: String,
    /// The node's address.
    pub address: Ipv4Addr,
    /// How the name was found.
    pub source: Source,
    /// Where exactly.
    pub evidence: String,
}

/// The identity as `identity.json` keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedIdentity {
    /// The identity.
    #[serde(flatten)]
    pub identity: Identity,
    /// When it was recorded.
    pub recorded_at: String,
}

/// Finds which node this is and checks it against the recorded identity, without
/// writing anything (see [`record`]).
pub fn resolve(root: &Root, host: &mut dyn Host, config: &Config) -> anyhow::Result<Identity> {
    let recorded = read_recorded(root)?;
    if let Some(recorded) = &recorded {
        check_same_cluster_and_role(root, &recorded.identity, config)?;
    }
    let (claims, looked_at) = gather_claims(root, host, &config.cluster)?;
    let detected = choose(&claims, config)?;
    match (detected, recorded) {
        (Some(detected), Some(recorded)) if detected.node != recorded.identity.node => {
            Err(config_error(format!(
                "{} names node {} ({}), but {} records node {}; a node's name never \
                 changes: remove {} only if this disk is meant to become another node",
                detected.source,
                detected.node,
                detected.evidence,
                root.path(IDENTITY_FILE).display(),
                recorded.identity.node,
                root.path(IDENTITY_FILE).display()
            )))
        }
        (Some(detected), _) => Ok(detected),
        (None, Some(recorded)) => Ok(Identity {
            source: Source::Recorded,
            evidence: format!("{}", root.path(IDENTITY_FILE).display()),
            ..recorded.identity
        }),
        (None, None) => Err(config_error(format!(
            "cannot tell which node of role {} this is: {}; boot with r2a.node=NAME on the \
             kernel command line or a NoCloud seed with `r2a-node: NAME` (nodes of role {}: {})",
            config.role.name,
            looked_at.join("; "),
            config.role.name,
            config.cluster.names_of(&config.role.name)
        ))),
    }
}

/// Records `identity` in `identity.json` unless a record exists; returns whether it wrote.
pub fn record(root: &Root, identity: &Identity) -> anyhow::Result<bool> {
    if read_recorded(root)?.is_some() {
        return Ok(false);
    }
    let recorded = RecordedIdentity {
        identity: identity.clone(),
        recorded_at: now_utc(),
    };
    let mut json = serde_json::to_string_pretty(&recorded).context("encoding the identity")?;
    json.push('\n');
    write_atomic(&root.path(IDENTITY_FILE), json.as_bytes(), 0o644)?;
    Ok(true)
}

/// The identity recorded by the first run, if any.
pub fn read_recorded(root: &Root) -> anyhow::Result<Option<RecordedIdentity>> {
    let path = root.path(IDENTITY_FILE);
    let Some(text) = read_optional(&path)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("parsing {}", path.display()))
}

fn check_same_cluster_and_role(
    root: &Root,
    recorded: &Identity,
    config: &Config,
) -> anyhow::Result<()> {
    if recorded.cluster != config.cluster.name || recorded.role != config.role.name {
        return Err(config_error(format!(
            "{} records node {} of cluster {} (role {}), but this image is for cluster {} \
             (role {}); the disk belongs to another cluster or role",
            root.path(IDENTITY_FILE).display(),
            recorded.node,
            recorded.cluster,
            recorded.role,
            config.cluster.name,
            config.role.name
        )));
    }
    Ok(())
}

/// Picks the first claim, after checking every claim names a node of this role and no
/// explicit source disagrees.
fn choose(claims: &[Claim], config: &Config) -> anyhow::Result<Option<Identity>> {
    for claim in claims {
        check_claim(claim, config)?;
    }
    let Some(first) = claims.first() else {
        return Ok(None);
    };
    // The hostname is left out: until the hostname step has run it is the image's, and
    // after that it always agrees.
    let disagreeing = claims
        .iter()
        .find(|claim| claim.source != Source::Hostname && claim.name != first.name);
    if let Some(other) = disagreeing {
        return Err(config_error(format!(
            "conflicting identities: the {} says {} ({}), but the {} says {} ({})",
            first.source, first.name, first.evidence, other.source, other.name, other.evidence
        )));
    }
    let node = config
        .cluster
        .node(&first.name)
        .context("a checked claim names a node")?;
    Ok(Some(Identity {
        cluster: config.cluster.name.clone(),
        role: config.role.name.clone(),
        node: node.name.clone(),
        address: node.address,
        source: first.source,
        evidence: first.evidence.clone(),
    }))
}

fn check_claim(claim: &Claim, config: &Config) -> anyhow::Result<()> {
    let role = &config.role.name;
    let message = match config.cluster.node(&claim.name) {
        Some(node) if node.role == *role => return Ok(()),
        Some(node) => format!(
            "the {} ({}) names node {}, a {} node, but this is the {role} image",
            claim.source, claim.evidence, claim.name, node.role
        ),
        None => format!(
            "the {} ({}) names {}, which is not a node of cluster {}",
            claim.source, claim.evidence, claim.name, config.cluster.name
        ),
    };
    Err(config_error(format!(
        "{message} (nodes of role {role}: {})",
        config.cluster.names_of(role)
    )))
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
