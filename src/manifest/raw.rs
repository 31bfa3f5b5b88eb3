//! The cluster manifest as written: a serde mirror of the TOML, spans kept for messages.
//!
//! Nothing here is checked beyond its TOML type; [`super::resolve`] turns these structs into
//! the validated [`super::Cluster`].

use serde::Deserialize;
use toml::Spanned;

/// `[cluster]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub name: Spanned<String>,
    pub domain: Spanned<String>,
}

/// `[debian]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebianSection {
    pub suite: Option<Spanned<String>>,
    pub mirror: Option<Spanned<String>>,
    pub architecture: Option<Spanned<String>>,
    pub components: Option<Vec<Spanned<String>>>,
    pub security_mirror: Option<Spanned<String>>,
    pub security: Option<bool>,
    pub updates: Option<bool>,
}

/// `[network]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    pub cidr: Spanned<String>,
    pub gateway: Spanned<String>,
    #[serde(default)]
    pub dns: Vec<Spanned<String>>,
    #[serde(default)]
    pub ntp: Vec<Spanned<String>>,
}

/// `[ssh]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSection {
    #[serde(default)]
    pub authorized_keys: Vec<Spanned<String>>,
    /// Says that no key is on purpose: nobody logs in over SSH.
    pub allow_no_keys: Option<bool>,
}

/// `[build]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSection {
    pub source_date_epoch: Option<Spanned<i64>>,
    pub bootstrap: Option<Spanned<String>>,
    pub formats: Option<Vec<Spanned<String>>>,
    pub node_data: Option<Spanned<String>>,
}

/// `[database]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    pub synchronous: Option<bool>,
}

/// One `[[nodes]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub name: Spanned<String>,
    pub role: Spanned<String>,
    pub address: Spanned<String>,
    pub mac: Option<Spanned<String>>,
    pub vcpus: Option<Spanned<u32>>,
    pub memory: Option<Spanned<String>>,
    pub disk: Option<Spanned<String>>,
    pub data_disk: Option<Spanned<String>>,
}

/// `[vendor]` when it is a table of sources.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorSection {
    #[serde(default)]
    pub apt: Vec<AptSource>,
    #[serde(default)]
    pub local: Vec<LocalSource>,
}

/// One `[[vendor.apt]]` repository.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptSource {
    pub name: Spanned<String>,
    pub uri: Spanned<String>,
    pub suite: Spanned<String>,
    pub components: Option<Vec<Spanned<String>>>,
    pub signing_key: Spanned<String>,
    pub username_env: Option<Spanned<String>>,
    pub password_env: Option<Spanned<String>>,
}

/// One `[[vendor.local]]` folder of `.deb` files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSource {
    pub path: Spanned<String>,
}
