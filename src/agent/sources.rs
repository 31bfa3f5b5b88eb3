//! Where a node's name can come from, strongest first: the kernel command line,
//! cloud-init NoCloud meta-data, a MAC address listed in the manifest, the hostname.
//! Each source only reports what it finds; [`super::identity`] decides.

use std::fmt;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::config::ClusterView;
use super::host::Host;
use super::root::Root;
use crate::fsutil::read_optional;

/// The kernel command line.
pub const CMDLINE_FILE: &str = "/proc/cmdline";
/// cloud-init's instance data; NoCloud meta-data keys are under `ds.meta_data`.
pub const INSTANCE_DATA_FILE: &str = "/run/cloud-init/instance-data.json";
/// NoCloud seed folders on the root file system, in cloud-init's order.
pub const NOCLOUD_SEED_FILES: [&str; 2] = [
    "/var/lib/cloud/seed/nocloud/meta-data",
    "/var/lib/cloud/seed/nocloud-net/meta-data",
];
/// One folder per network interface, each with an `address` file.
pub const NET_CLASS_DIR: &str = "/sys/class/net";
/// The static hostname.
pub const HOSTNAME_FILE: &str = "/etc/hostname";

/// The meta-data keys that name the node, strongest first. cloud-init also exposes
/// hyphenated keys with underscores in instance data.
const META_DATA_KEYS: [&str; 4] = ["r2a-node", "r2a_node", "local-hostname", "local_hostname"];

/// How a node name was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// `r2a.node=NAME` on the kernel command line.
    KernelCommandLine,
    /// cloud-init NoCloud meta-data.
    NoCloud,
    /// An interface's MAC address is listed for the node in the manifest.
    Mac,
    /// The hostname is the node's name.
    Hostname,
    /// Nothing names a node any more, but the first run recorded one.
    Recorded,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::KernelCommandLine => "kernel command line",
            Source::NoCloud => "cloud-init NoCloud data",
            Source::Mac => "MAC address",
            Source::Hostname => "hostname",
            Source::Recorded => "identity recorded on the first run",
        })
    }
}

/// One source's answer: it says this is node `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The source.
    pub source: Source,
    /// The node name it gives.
    pub name: String,
    /// Where exactly, e.g. `r2a.node=db1 in /proc/cmdline`.
    pub evidence: String,
}

/// Asks every source, strongest first. Also returns what each silent source looked at,
/// for the error when none answers.
pub fn gather_claims(
    root: &Root,
    host: &mut dyn Host,
    cluster: &ClusterView,
) -> anyhow::Result<(Vec<Claim>, Vec<String>)> {
    let mut claims = Vec::new();
    let mut looked_at = Vec::new();
    match from_kernel_command_line(root)? {
        Some(claim) => claims.push(claim),
        None => looked_at.push(format!(
            "no r2a.node= in {}",
            root.path(CMDLINE_FILE).display()
        )),
    }
    match from_nocloud(root)? {
        Some(claim) => claims.push(claim),
        None => looked_at.push("no NoCloud meta-data names a node".to_string()),
    }
    let by_mac = from_macs(root, cluster)?;
    if by_mac.is_empty() {
        looked_at.push("no interface has a MAC listed in the manifest".to_string());
    }
    claims.extend(by_mac);
    for (name, evidence) in hostnames(root, host)? {
        if cluster.node(&name).is_some() {
            claims.push(Claim {
                source: Source::Hostname,
                name,
                evidence,
            });
        } else {
            looked_at.push(format!("hostname `{name}` ({evidence}) is not a node"));
        }
    }
    Ok((claims, looked_at))
}

fn from_kernel_command_line(root: &Root) -> anyhow::Result<Option<Claim>> {
    let path = root.path(CMDLINE_FILE);
    let Some(cmdline) = read_optional(&path)? else {
        return Ok(None);
    };
    // Like the kernel's own parameters, the last occurrence wins.
    let name = cmdline
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("r2a.node="))
        .map(|value| value.trim_matches('"'))
        .rfind(|value| !value.is_empty());
    Ok(name.map(|name| Claim {
        source: Source::KernelCommandLine,
        name: name.to_string(),
        evidence: format!("r2a.node={name} in {}", path.display()),
    }))
}

fn from_nocloud(root: &Root) -> anyhow::Result<Option<Claim>> {
    let instance_data = root.path(INSTANCE_DATA_FILE);
    if let Some(text) = read_optional(&instance_data)? {
        let data: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", instance_data.display()))?;
        let meta_data = &data["ds"]["meta_data"];
        let found = META_DATA_KEYS
            .iter()
            .find_map(|key| meta_data[key].as_str().map(|name| (key, name.trim())))
            .filter(|(_, name)| !name.is_empty());
        if let Some((key, name)) = found {
            return Ok(Some(Claim {
                source: Source::NoCloud,
                name: name.to_string(),
                evidence: format!("ds.meta_data.{key} in {}", instance_data.display()),
            }));
        }
    }
    for seed in NOCLOUD_SEED_FILES {
        let path = root.path(seed);
        let Some(text) = read_optional(&path)? else {
            continue;
        };
        let found = META_DATA_KEYS
            .iter()
            .find_map(|key| meta_data_value(&text, key).map(|name| (key, name)));
        if let Some((key, name)) = found {
            return Ok(Some(Claim {
                source: Source::NoCloud,
                evidence: format!("{key}: {name} in {}", path.display()),
                name,
            }));
        }
    }
    Ok(None)
}

/// The value of a top-level key of NoCloud meta-data, read as YAML (the seeds write it
/// as JSON, which is YAML too); `None` for a missing key, text that is no YAML mapping, or
/// a value that could be no node's name (empty, or with a line break or control
/// character).
pub fn meta_data_value(text: &str, key: &str) -> Option<String> {
    let document: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(text).ok()?;
    let value = match document.get(key)? {
        serde_yaml_ng::Value::String(text) => text.clone(),
        serde_yaml_ng::Value::Number(number) => number.to_string(),
        serde_yaml_ng::Value::Bool(flag) => flag.to_string(),
        _ => return None,
    };
    (!value.is_empty() && !value.chars().any(char::is_control)).then_some(value)
}

fn from_macs(root: &Root, cluster: &ClusterView) -> anyhow::Result<Vec<Claim>> {
    let mut claims = Vec::new();
    for (interface, mac) in interface_macs(root)? {
        let owner = cluster.nodes.iter().find(|node| {
            node.mac
                .as_deref()
                .is_some_and(|listed| listed.eq_ignore_ascii_case(&mac))
        });
        if let Some(node) = owner {
            claims.push(Claim {
                source: Source::Mac,
                name: node.name.clone(),
                evidence: format!("{mac} of interface {interface}"),
            });
        }
    }
    Ok(claims)
}

/// Every interface but loopback with its MAC address (lower case), by interface name.
pub fn interface_macs(root: &Root) -> anyhow::Result<Vec<(String, String)>> {
    let dir = root.path(NET_CLASS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).with_context(|| format!("listing {}", dir.display())),
    };
    let mut interfaces = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "lo" {
            continue;
        }
        let Some(address) = read_optional(&entry.path().join("address"))? else {
            continue;
        };
        let mac = address.trim().to_ascii_lowercase();
        if !mac.is_empty() && mac != "00:00:00:00:00:00" {
            interfaces.push((name, mac));
        }
    }
    interfaces.sort();
    Ok(interfaces)
}

fn hostnames(root: &Root, host: &mut dyn Host) -> anyhow::Result<Vec<(String, String)>> {
    let mut names = Vec::new();
    let path = root.path(HOSTNAME_FILE);
    if let Some(text) = read_optional(&path)? {
        names.push((short_name(&text), format!("{}", path.display())));
    }
    // The kernel's hostname belongs to the machine running the agent, so it only
    // counts when the root is that machine's.
    if host.is_live() {
        names.push((short_name(&host.kernel_hostname()?), "kernel".to_string()));
    }
    names.retain(|(name, _)| !name.is_empty() && name != "localhost");
    names.dedup_by(|a, b| a.0 == b.0);
    Ok(names)
}

/// The first label of a hostname, without spaces.
fn short_name(hostname: &str) -> String {
    hostname
        .trim()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_data_is_read_as_yaml() {
        // (meta-data, the value of r2a-node)
        let table: [(&str, Option<&str>); 8] = [
            (
                "{\"instance-id\": \"x\", \"r2a-node\": \"db1\"}",
                Some("db1"),
            ),
            ("instance-id: x\nr2a-node: db1 # a comment\n", Some("db1")),
            ("r2a-node: 'db1'\n", Some("db1")),
            // A node named like a YAML 1.1 boolean is still its name.
            ("r2a-node: no\n", Some("no")),
            ("instance-id: x\nnested:\n  r2a-node: db2\n", None),
            ("r2a-node: \"a\\nb\"\n", None),
            ("r2a-node: [db1]\n", None),
            ("r2a-node: db1\n  broken: [\n", None),
        ];
        for (text, expected) in table {
            assert_eq!(
                meta_data_value(text, "r2a-node").as_deref(),
                expected,
                "{text}"
            );
        }
        assert_eq!(meta_data_value("instance-id: x\n", "missing"), None);
    }
}
