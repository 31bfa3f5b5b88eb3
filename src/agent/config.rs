//! What the image builder leaves for the agent: `/etc/r2a/cluster.json` and
//! `/etc/r2a/role.json`, read as minimal views.
//!
//! The views name only the fields the agent uses and ignore the rest, so the builder can
//! add fields to `r2a::manifest::Cluster` or `r2a::role::Role` without breaking images
//! already in the field.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::Context;
use ipnet::Ipv4Net;
use serde::Deserialize;

use super::root::Root;

/// The cluster description, as the builder serialized it.
pub const CLUSTER_FILE: &str = "/etc/r2a/cluster.json";
/// The image's role, as the builder serialized it.
pub const ROLE_FILE: &str = "/etc/r2a/role.json";
/// The folder holding one tree of per-node files for every node of the image's role.
pub const NODE_TREES_DIR: &str = "/usr/lib/r2a/nodes";

/// A mistake in what the agent was given (manifest, seeds, image contents), as opposed
/// to a failure that may pass on a retry. The agent stops and reports it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Builds a [`ConfigError`] inside an `anyhow::Error`.
pub fn config_error(message: impl Into<String>) -> anyhow::Error {
    ConfigError(message.into()).into()
}

/// Whether an error (or anything in its chain) is a configuration error.
pub fn is_config_error(error: &anyhow::Error) -> bool {
    // `downcast_ref` sees contexts at every layer; `chain` sees wrapped source errors.
    error.downcast_ref::<ConfigError>().is_some()
        || error.chain().any(|cause| cause.is::<ConfigError>())
}

/// The part of `r2a::manifest::Cluster` the agent reads.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterView {
    /// Cluster name.
    pub name: String,
    /// DNS domain of the nodes.
    pub domain: String,
    /// The cluster network.
    pub network: NetworkView,
    /// Every node of every role.
    pub nodes: Vec<NodeView>,
}

/// The part of `r2a::manifest::Network` the agent reads.
#[derive(Debug, Clone, Deserialize)]
pub struct NetworkView {
    /// The cluster network.
    pub cidr: Ipv4Net,
    /// Default gateway.
    pub gateway: Ipv4Addr,
    /// DNS resolvers.
    #[serde(default)]
    pub dns: Vec<IpAddr>,
}

/// The part of `r2a::manifest::Node` the agent reads.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeView {
    /// Host name.
    pub name: String,
    /// Role name.
    pub role: String,
    /// Address in the cluster network.
    pub address: Ipv4Addr,
    /// MAC address, lower case, when the manifest lists one.
    #[serde(default)]
    pub mac: Option<String>,
    /// Device of the data disk, e.g. `/dev/vdb`.
    #[serde(default)]
    pub data_disk: Option<String>,
}

/// The part of `r2a::role::Role` the agent reads.
#[derive(Debug, Clone, Deserialize)]
pub struct RoleView {
    /// Role name.
    pub name: String,
    /// Where and how a node's data disk is used, if the role uses one.
    #[serde(default)]
    pub data_disk: Option<DataDiskView>,
    /// The role's join steps, in order (`r2a-node join`).
    #[serde(default)]
    pub join: Vec<String>,
    /// The role's template values (e.g. the Gluster volume and brick of the fs role).
    #[serde(default)]
    pub vars: BTreeMap<String, serde_json::Value>,
    /// What one node of the role carries (telephony).
    #[serde(default)]
    pub capacity: Option<CapacityView>,
}

/// The part of `r2a::role::Capacity` the agent reads.
#[derive(Debug, Clone, Deserialize)]
pub struct CapacityView {
    /// Extensions one node carries.
    pub extensions_per_node: u64,
    /// Concurrent calls one node carries.
    pub calls_per_node: u64,
}

impl RoleView {
    /// The role variable `name`, which must be a string; a configuration error names
    /// the role file otherwise.
    pub fn var(&self, name: &str) -> anyhow::Result<String> {
        self.vars
            .get(name)
            .and_then(|value| value.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                config_error(format!(
                    "roles/{}.toml has no string `vars.{name}`, which its join steps need",
                    self.name
                ))
            })
    }
}

/// The part of `r2a::role::DataDiskRule` the agent reads.
#[derive(Debug, Clone, Deserialize)]
pub struct DataDiskView {
    /// Mount point.
    pub mount: String,
    /// `ext4` or `xfs`.
    pub filesystem: String,
    /// Extra `mkfs` options.
    #[serde(default)]
    pub mkfs_options: Vec<String>,
}

/// The cluster and role files of an image, read together.
#[derive(Debug, Clone)]
pub struct Config {
    /// `/etc/r2a/cluster.json`.
    pub cluster: ClusterView,
    /// `/etc/r2a/role.json`.
    pub role: RoleView,
}

impl Config {
    /// Reads both files; a missing or malformed file is a configuration error.
    pub fn load(root: &Root) -> anyhow::Result<Config> {
        let cluster: ClusterView = read_json(root, CLUSTER_FILE)?;
        let role: RoleView = read_json(root, ROLE_FILE)?;
        if cluster.nodes_of(&role.name).next().is_none() {
            return Err(config_error(format!(
                "{} lists no node of role {}, the role of this image ({})",
                root.path(CLUSTER_FILE).display(),
                role.name,
                root.path(ROLE_FILE).display()
            )));
        }
        Ok(Config { cluster, role })
    }
}

impl RoleView {
    /// Reads `/etc/r2a/role.json` alone.
    pub fn load(root: &Root) -> anyhow::Result<RoleView> {
        read_json(root, ROLE_FILE)
    }
}

impl ClusterView {
    /// The node called `name`, of any role.
    pub fn node(&self, name: &str) -> Option<&NodeView> {
        self.nodes.iter().find(|node| node.name == name)
    }

    /// The nodes of one role, in manifest order.
    pub fn nodes_of<'a>(&'a self, role: &'a str) -> impl Iterator<Item = &'a NodeView> + 'a {
        self.nodes.iter().filter(move |node| node.role == role)
    }

    /// The names of one role's nodes, comma-separated, for messages.
    pub fn names_of(&self, role: &str) -> String {
        let names: Vec<&str> = self.nodes_of(role).map(|node| node.name.as_str()).collect();
        names.join(", ")
    }
}

fn read_json<T: serde::de::DeserializeOwned>(root: &Root, file: &str) -> anyhow::Result<T> {
    let path = root.path(file);
    let text = std::fs::read_to_string(&path)
        .with_context(|| ConfigError(format!("reading {}", path.display())))?;
    serde_json::from_str(&text).with_context(|| ConfigError(format!("parsing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::testing::FakeRoot;

    #[test]
    fn unknown_fields_are_ignored() {
        let fake = FakeRoot::db();
        let mut cluster: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fake.root.path(CLUSTER_FILE)).unwrap())
                .unwrap();
        cluster["added_by_a_later_builder"] = serde_json::json!({"anything": [1, 2]});
        cluster["nodes"][0]["rack"] = serde_json::json!("r7");
        fake.write(CLUSTER_FILE, &cluster.to_string());
        let config = Config::load(&fake.root).unwrap();
        assert_eq!(config.cluster.nodes[0].name, "db1");
        assert_eq!(config.role.name, "db");
    }

    #[test]
    fn a_missing_cluster_file_is_a_configuration_error_naming_it() {
        let fake = FakeRoot::db();
        std::fs::remove_file(fake.root.path(CLUSTER_FILE)).unwrap();
        let error = Config::load(&fake.root).unwrap_err();
        assert!(is_config_error(&error));
        assert!(
            format!("{error:#}").contains("etc/r2a/cluster.json"),
            "{error:#}"
        );
    }

    #[test]
    fn a_role_without_nodes_is_a_configuration_error() {
        let fake = FakeRoot::db();
        fake.write(ROLE_FILE, r#"{"name": "telephony", "data_disk": null}"#);
        let error = Config::load(&fake.root).unwrap_err();
        assert!(is_config_error(&error));
        assert!(
            error.to_string().contains("no node of role telephony"),
            "{error}"
        );
    }
}
