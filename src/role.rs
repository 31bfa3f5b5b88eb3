//! Role definitions: `roles/base.toml` (what every image gets) and `roles/<role>.toml`.
//!
//! Roles are data. This module loads and checks them and nothing else; what a role means
//! for an image is decided by the build stages that read the resulting [`RoleSet`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;
use toml::de::DeValue;

use crate::diag::{Diagnostics, Source};
use crate::tomldoc::Document;

/// The name of the file every role inherits from.
pub const BASE: &str = "base";

/// Every role of the data directory, plus the common base.
#[derive(Debug, Clone, Serialize)]
pub struct RoleSet {
    /// `roles/base.toml`: packages, services, files and firewall rules of every image.
    pub base: Role,
    /// The roles by name, in name order.
    pub roles: BTreeMap<String, Role>,
}

impl RoleSet {
    /// Loads `base.toml` and every other `*.toml` of `dir`, reporting every problem.
    pub fn load(dir: &Path) -> anyhow::Result<RoleSet> {
        let mut diagnostics = Diagnostics::new();
        let mut base = None;
        let mut roles = BTreeMap::new();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("reading role directory {}: {e}", dir.display()))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            let name = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            let source = Source::new(&path, text);
            if let Some(role) = Role::parse(&name, &source, &mut diagnostics) {
                if name == BASE {
                    base = Some(role);
                } else {
                    roles.insert(name, role);
                }
            }
        }
        if base.is_none() {
            diagnostics.in_file(
                &dir.join("base.toml"),
                "the common base role is missing",
                Some("every data directory needs roles/base.toml".to_string()),
            );
        }
        let base = diagnostics.into_result(base)?.expect("checked above");
        Ok(RoleSet { base, roles })
    }

    /// The role called `name`, if the data directory defines it.
    pub fn get(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// The names of every role, for hints.
    pub fn names(&self) -> Vec<&str> {
        self.roles.keys().map(String::as_str).collect()
    }
}

/// One role, as its file defines it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// The role's name: its file name without `.toml`.
    #[serde(default)]
    pub name: String,
    /// One line on what nodes of this role do.
    #[serde(default)]
    pub description: String,
    /// Names of the cluster secrets this role's files may use.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Whether templates see the node's own TLS certificate and private key
    /// (`tls.node_cert`, `tls.node_key`); every role sees the CA's (`tls.ca_cert`).
    #[serde(default)]
    pub tls: bool,
    /// Shared overlay trees (`overlays/<name>/`) applied after `common` and before the
    /// role's own, for configuration several roles share (e.g. `db-client`).
    #[serde(default)]
    pub overlays: Vec<String>,
    /// Values for templates, as `roles.<role>.vars.<name>` (e.g. the Gluster volume name).
    #[serde(default)]
    pub vars: toml::Table,
    /// Packages to install.
    #[serde(default)]
    pub packages: Packages,
    /// Units to enable and to disable in the image.
    #[serde(default)]
    pub services: Services,
    /// How many nodes of this role a cluster may have.
    #[serde(default)]
    pub nodes: NodeRules,
    /// Where a node's data disk is mounted.
    pub data_disk: Option<DataDiskRule>,
    /// The join steps `r2a-node join` runs on nodes of this role, in order (names the
    /// agent knows: `r2a::agent::join::known_step_names`).
    #[serde(default)]
    pub join: Vec<String>,
    /// Ports this role serves, opened in its nftables rules.
    #[serde(default)]
    pub firewall: Vec<FirewallRule>,
    /// Owners and modes of installed files that need other than root:root 0644.
    #[serde(default)]
    pub files: Vec<FileRule>,
    /// Files written into the tree before the packages are installed (they are inputs of
    /// the package layer, e.g. to stop postgresql-common creating a cluster).
    #[serde(default)]
    pub prepare: Vec<PrepareFile>,
    /// What the finalize stage deletes from images of this role.
    #[serde(default)]
    pub finalize: Finalize,
    /// Per-node capacity, for the capacity table of `r2a-image plan`.
    pub capacity: Option<Capacity>,
}

/// Packages of a role.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Packages {
    /// From the Debian archive.
    #[serde(default)]
    pub debian: Vec<String>,
    /// From the vendor sources the manifest declares.
    #[serde(default)]
    pub vendor: Vec<String>,
}

/// Units to switch on or off in the image.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Services {
    /// Started at boot.
    #[serde(default)]
    pub enable: Vec<String>,
    /// Not started at boot: the first-boot agent starts them once the node has joined.
    #[serde(default)]
    pub disable: Vec<String>,
}

/// Rules on the number of nodes of one role.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRules {
    /// At least this many.
    #[serde(default)]
    pub min: usize,
    /// An odd number (quorum).
    #[serde(default)]
    pub odd: bool,
    /// A multiple of this (replica sets).
    pub multiple_of: Option<usize>,
    /// Why the rules hold, shown in the error.
    #[serde(default)]
    pub reason: String,
}

/// Where and how a node's data disk is used.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataDiskRule {
    /// The mount point.
    pub mount: String,
    /// The filesystem made on first boot.
    pub filesystem: String,
    /// Extra `mkfs` options.
    #[serde(default)]
    pub mkfs_options: Vec<String>,
}

/// One open port or port range.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallRule {
    /// What listens there, for the comment in the rules.
    pub service: String,
    /// `tcp` or `udp`.
    pub protocol: Protocol,
    /// A port (`5432`) or an inclusive range (`49152-49251`).
    pub ports: String,
    /// Who may connect.
    pub from: Audience,
}

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// Who a port is open to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Audience {
    /// The cluster network only.
    Cluster,
    /// Everyone.
    Any,
}

/// Ownership and mode of one installed file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileRule {
    /// Absolute path in the image.
    pub path: String,
    /// Octal mode, e.g. `"0600"`.
    pub mode: String,
    /// User name, resolved in the image's `/etc/passwd`.
    #[serde(default = "root")]
    pub owner: String,
    /// Group name, resolved in the image's `/etc/group`.
    #[serde(default = "root")]
    pub group: String,
}

fn root() -> String {
    "root".to_string()
}

impl FileRule {
    /// The mode as a number.
    pub fn mode_bits(&self) -> Option<u32> {
        u32::from_str_radix(self.mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|mode| *mode <= 0o7777)
    }
}

/// A file written before packages are installed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareFile {
    /// Absolute path in the image.
    pub path: String,
    /// The whole content.
    pub content: String,
    /// Written with mode 0755 instead of 0644 (initramfs hooks and boot scripts).
    #[serde(default)]
    pub executable: bool,
}

impl PrepareFile {
    /// The file's mode.
    pub fn mode(&self) -> u32 {
        if self.executable { 0o755 } else { 0o644 }
    }

    /// Writes the file under `root`, creating its folders.
    pub fn write_into(&self, root: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = root.join(self.path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().expect("absolute paths have a parent"))?;
        std::fs::write(&path, &self.content)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(self.mode()))
            .map_err(|e| anyhow::anyhow!("setting the mode of {}: {e}", path.display()))
    }
}

/// What the finalize stage removes.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Finalize {
    /// Absolute paths or globs whose last component may contain `*`; directories named
    /// with a trailing `/*` are emptied, not removed.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Files truncated to empty (kept, since their presence matters, like machine-id).
    #[serde(default)]
    pub truncate: Vec<String>,
}

/// What one node of a role serves, from the seed's scaling reference.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// Extensions one node carries.
    pub extensions_per_node: u64,
    /// Concurrent calls one node carries.
    pub calls_per_node: u64,
}

impl Role {
    fn parse(name: &str, source: &Source, diagnostics: &mut Diagnostics) -> Option<Role> {
        let document = Document::parse(source, diagnostics)?;
        let whole = Spanned::new(
            0..source.text.len(),
            DeValue::Table(document.root.get_ref().clone()),
        );
        let mut role: Role = document.decode(&whole, diagnostics)?;
        role.name = name.to_string();
        role.check(&document, diagnostics);
        Some(role)
    }

    fn check(&self, document: &Document<'_>, diagnostics: &mut Diagnostics) {
        let source = document.source;
        if self.name == BASE && self.tls {
            diagnostics.at(
                source,
                document.key_span("tls"),
                "`tls` hands node keys to the roles that need them; the base cannot set it",
                Some(
                    "set `tls = true` in the roles whose templates use tls.node_cert or tls.node_key"
                        .to_string(),
                ),
            );
        }
        for rule in &self.firewall {
            if parse_port_range(&rule.ports).is_none() {
                diagnostics.at(
                    source,
                    source.find(&format!("\"{}\"", rule.ports)),
                    format!(
                        "invalid port or range `{}` for {}",
                        rule.ports, rule.service
                    ),
                    Some("write a port (5432) or a range (49152-49251) within 1-65535".to_string()),
                );
            }
        }
        for file in &self.files {
            if file.mode_bits().is_none() {
                diagnostics.at(
                    source,
                    source.find(&format!("\"{}\"", file.mode)),
                    format!("invalid mode `{}` for {}", file.mode, file.path),
                    Some("write an octal mode such as \"0600\"".to_string()),
                );
            }
        }
        let known = crate::agent::join::known_step_names();
        for step in self
            .join
            .iter()
            .filter(|step| !known.contains(&step.as_str()))
        {
            diagnostics.at(
                source,
                source.find(&format!("\"{step}\"")),
                format!("unknown join step `{step}`"),
                Some(format!("join steps the agent knows: {}", known.join(", "))),
            );
        }
        let paths = self.files.iter().map(|f| &f.path);
        let paths = paths.chain(self.prepare.iter().map(|p| &p.path));
        for path in paths.filter(|p| !p.starts_with('/')) {
            diagnostics.at(
                source,
                source.find(&format!("\"{path}\"")),
                format!("path `{path}` is not absolute"),
                Some("paths in the image start with /".to_string()),
            );
        }
    }
}

/// Parses `5432` or `49152-49251` into an inclusive range.
pub fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let (first, last) = match text.split_once('-') {
        Some((first, last)) => (first.trim().parse().ok()?, last.trim().parse().ok()?),
        None => {
            let port = text.trim().parse().ok()?;
            (port, port)
        }
    };
    (first != 0 && first <= last).then_some((first, last))
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("5432"), Some((5432, 5432)));
        assert_eq!(parse_port_range("49152-49251"), Some((49152, 49251)));
        assert_eq!(parse_port_range("0"), None);
        assert_eq!(parse_port_range("20-10"), None);
        assert_eq!(parse_port_range("70000"), None);
    }

    #[test]
    fn the_project_roles_load() {
        let roles = RoleSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("roles")).unwrap();
        for name in [
            "db",
            "fs",
            "admin",
            "portal",
            "switchboard",
            "api",
            "telephony",
        ] {
            assert!(roles.get(name).is_some(), "missing role {name}");
        }
        assert!(roles.get("db").unwrap().nodes.odd);
        assert!(
            roles.get("db").unwrap().tls,
            "the db role uses its node's key"
        );
        assert!(
            !roles.get("portal").unwrap().tls,
            "only roles that use it get a node key"
        );
    }

    #[test]
    fn the_base_cannot_hand_out_node_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base.toml"), "tls = true\n").unwrap();
        let error = RoleSet::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("base.toml:1:1"), "{error}");
        assert!(error.contains("the base cannot set it"), "{error}");
    }

    #[test]
    fn a_tls_flag_that_is_not_a_boolean_is_refused_with_its_place() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base.toml"), "").unwrap();
        std::fs::write(dir.path().join("db.toml"), "secrets = []\ntls = \"yes\"\n").unwrap();
        let error = RoleSet::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("db.toml:2:"), "{error}");
    }
}
