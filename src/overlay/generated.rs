//! Files the builder writes into every image itself: the cluster and role model that
//! `r2a-node` reads (`/etc/r2a/cluster.json`, `/etc/r2a/role.json`).

use std::path::PathBuf;

use serde::Serialize;

use super::{CLUSTER_FILE, OverlayFile};
use crate::manifest::{Cluster, Node};
use crate::role::Role;

/// Files the builder writes itself: the cluster and role model for `r2a-node`.
pub(super) fn generated_files(cluster: &Cluster, role: &Role) -> anyhow::Result<Vec<OverlayFile>> {
    Ok(vec![
        generated(
            CLUSTER_FILE,
            to_json(&ClusterFile::from(cluster))?,
            "the manifest",
        ),
        generated(
            "/etc/r2a/role.json",
            to_json(role)?,
            &format!("roles/{}.toml", role.name),
        ),
    ])
}

/// The cluster as templates and `r2a-node` (`/etc/r2a/cluster.json`) see it: build-host
/// details (the manifest's path, vendor sources) stay out of the image.
#[derive(Serialize)]
pub(super) struct ClusterFile<'a> {
    name: &'a str,
    domain: &'a str,
    debian: &'a crate::manifest::Debian,
    network: &'a crate::manifest::Network,
    nodes: &'a [Node],
    ssh_authorized_keys: &'a [String],
    database: &'a crate::manifest::DatabaseSettings,
    /// The sha256 of this model (with this field empty): the same for manifests that say
    /// the same thing however they are written (ranges or nodes one by one, comments,
    /// key order), so images change with what the manifest means, not its wording.
    model_sha256: String,
}

impl<'a> From<&'a Cluster> for ClusterFile<'a> {
    fn from(cluster: &'a Cluster) -> Self {
        ClusterFile {
            name: &cluster.name,
            domain: &cluster.domain,
            debian: &cluster.debian,
            network: &cluster.network,
            nodes: &cluster.nodes,
            ssh_authorized_keys: &cluster.ssh_authorized_keys,
            database: &cluster.database,
            model_sha256: String::new(),
        }
        .with_digest()
    }
}

impl ClusterFile<'_> {
    fn with_digest(mut self) -> Self {
        let model = serde_json::to_vec(&self).expect("the cluster model serializes");
        self.model_sha256 = crate::hash::sha256_hex(&model);
        self
    }
}

fn generated(path: &str, content: Vec<u8>, from: &str) -> OverlayFile {
    OverlayFile {
        path: path.to_string(),
        content,
        mode: 0o644,
        owner: "root".to_string(),
        group: "root".to_string(),
        origin: PathBuf::from(format!("(generated from {from})")),
    }
}

fn to_json(value: &impl Serialize) -> anyhow::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    Ok(bytes)
}
