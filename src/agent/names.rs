//! The hostname and hosts steps: the node's own name, and the names of every node.
//!
//! The builder renders `/etc/hosts` for the whole cluster into every image; cloud-init
//! or an operator may have changed it since. The most common damage is a
//! `127.0.1.1 <node>` line (Debian's installer and cloud-init's `manage_etc_hosts`
//! write one), which makes etcd and Patroni advertise a loopback address, so a node's
//! name on any other address is removed before missing lines are added.

use std::net::IpAddr;

use anyhow::bail;

use super::config::ClusterView;
use super::sources::HOSTNAME_FILE;
use super::steps::{Context, Outcome};
use crate::fsutil::{read_optional, write_atomic};

/// The cluster's name table.
pub const HOSTS_FILE: &str = "/etc/hosts";

/// Writes `/etc/hostname` and, on the live system, sets the kernel's hostname.
pub fn ensure_hostname(context: &mut Context<'_>) -> anyhow::Result<Outcome> {
    let name = &context.node.name;
    let path = context.root.path(HOSTNAME_FILE);
    let mut done = Vec::new();
    let current = read_optional(&path)?;
    let file_differs = current.as_deref().map(str::trim) != Some(name.as_str());
    let kernel_differs = context.host.is_live() && context.host.kernel_hostname()? != *name;
    if context.host.dry_run() {
        let would: Vec<String> = [
            file_differs.then(|| format!("write {}", path.display())),
            kernel_differs.then(|| "set the kernel hostname".to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        return Ok(match would.is_empty() {
            true => Outcome::unchanged(format!("hostname is {name}")),
            false => Outcome::changed(format!("would {} to {name}", would.join(" and "))),
        });
    }
    if file_differs {
        write_atomic(&path, format!("{name}\n").as_bytes(), 0o644)?;
        done.push(format!("wrote {}", path.display()));
    }
    if kernel_differs {
        context.host.set_kernel_hostname(name)?;
        done.push("set the kernel hostname".to_string());
    }
    let written = read_optional(&path)?;
    if written.as_deref().map(str::trim) != Some(name.as_str()) {
        bail!("{} does not hold {name} after writing it", path.display());
    }
    if context.host.is_live() && context.host.kernel_hostname()? != *name {
        bail!("the kernel hostname is not {name} after setting it");
    }
    Ok(if done.is_empty() {
        Outcome::unchanged(format!("hostname is {name}"))
    } else {
        Outcome::changed(format!("hostname is {name} ({})", done.join(", ")))
    })
}

/// Makes `/etc/hosts` map every node's name to its address and to nothing else.
pub fn ensure_hosts(context: &mut Context<'_>) -> anyhow::Result<Outcome> {
    let path = context.root.path(HOSTS_FILE);
    let current = read_optional(&path)?.unwrap_or_default();
    let problems = hosts_problems(&current, context.cluster);
    if problems.is_empty() {
        return Ok(Outcome::unchanged(format!(
            "{} lists all {} nodes",
            path.display(),
            context.cluster.nodes.len()
        )));
    }
    if context.host.dry_run() {
        return Ok(Outcome::changed(format!(
            "would repair {}: {}",
            path.display(),
            problems.join("; ")
        )));
    }
    let repaired = repair_hosts(&current, context.cluster);
    write_atomic(&path, repaired.as_bytes(), 0o644)?;
    let remaining = hosts_problems(&read_optional(&path)?.unwrap_or_default(), context.cluster);
    if !remaining.is_empty() {
        bail!(
            "{} is still wrong after repairing it: {}",
            path.display(),
            remaining.join("; ")
        );
    }
    Ok(Outcome::changed(format!(
        "repaired {}: {}",
        path.display(),
        problems.join("; ")
    )))
}

/// What is wrong with a hosts file for this cluster; empty when nothing is.
pub fn hosts_problems(text: &str, cluster: &ClusterView) -> Vec<String> {
    let lines: Vec<HostsLine> = text.lines().filter_map(HostsLine::parse).collect();
    let mut problems = Vec::new();
    for node in &cluster.nodes {
        let names = node_names(&node.name, &cluster.domain);
        let listed = lines.iter().any(|line| {
            line.address == IpAddr::V4(node.address) && line.names.contains(&node.name)
        });
        if !listed {
            problems.push(format!("{} is not listed as {}", node.name, node.address));
        }
        for line in &lines {
            if line.address != IpAddr::V4(node.address)
                && line.names.iter().any(|name| names.contains(name))
            {
                problems.push(format!("{} is also listed as {}", node.name, line.address));
            }
        }
    }
    problems
}

/// The hosts file with every node's name removed from lines of other addresses (lines
/// left with no name are dropped) and a line added for every node not listed. A file
/// that was missing or lost its `localhost` line gets one back first.
pub fn repair_hosts(text: &str, cluster: &ClusterView) -> String {
    let mut output = String::new();
    let has_localhost = text
        .lines()
        .filter_map(HostsLine::parse)
        .any(|line| line.names.iter().any(|name| name == "localhost"));
    if !has_localhost {
        output.push_str("127.0.0.1 localhost\n");
    }
    for raw in text.lines() {
        let Some(line) = HostsLine::parse(raw) else {
            output.push_str(raw);
            output.push('\n');
            continue;
        };
        // The names of every node whose address is not this line's.
        let misplaced: Vec<String> = cluster
            .nodes
            .iter()
            .filter(|node| IpAddr::V4(node.address) != line.address)
            .flat_map(|node| node_names(&node.name, &cluster.domain))
            .collect();
        let kept: Vec<&str> = line
            .names
            .iter()
            .filter(|name| !misplaced.contains(name))
            .map(String::as_str)
            .collect();
        if kept.len() == line.names.len() {
            output.push_str(raw);
            output.push('\n');
        } else if !kept.is_empty() {
            output.push_str(&format!("{} {}\n", line.address, kept.join(" ")));
        }
    }
    let lines: Vec<HostsLine> = output.lines().filter_map(HostsLine::parse).collect();
    for node in &cluster.nodes {
        let listed = lines.iter().any(|line| {
            line.address == IpAddr::V4(node.address) && line.names.contains(&node.name)
        });
        if !listed {
            output.push_str(&format!(
                "{} {}.{} {}\n",
                node.address, node.name, cluster.domain, node.name
            ));
        }
    }
    output
}

/// A node's short and fully qualified names.
fn node_names(name: &str, domain: &str) -> [String; 2] {
    [name.to_string(), format!("{name}.{domain}")]
}

/// One `address name...` line.
struct HostsLine {
    address: IpAddr,
    names: Vec<String>,
}

impl HostsLine {
    fn parse(raw: &str) -> Option<HostsLine> {
        let content = raw.split('#').next().unwrap_or_default();
        let mut words = content.split_whitespace();
        let address = words.next()?.parse().ok()?;
        let names: Vec<String> = words.map(str::to_string).collect();
        (!names.is_empty()).then_some(HostsLine { address, names })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::Config;
    use crate::agent::host::ScriptedHost;
    use crate::agent::testing::{FakeRoot, HOSTS};

    fn cluster() -> ClusterView {
        Config::load(&FakeRoot::db().root).unwrap().cluster
    }

    #[test]
    fn the_builders_hosts_file_has_no_problems() {
        assert_eq!(hosts_problems(HOSTS, &cluster()), Vec::<String>::new());
    }

    #[test]
    fn a_loopback_line_and_a_missing_node_are_repaired() {
        let broken = "127.0.0.1 localhost\n\
            127.0.1.1 db1.pbx.example.com db1 extra\n\
            # comment stays\n\
            192.168.10.11 db1.pbx.example.com db1\n\
            192.168.10.12 db2\n\
            192.168.10.13 db3\n";
        let cluster = cluster();
        let problems = hosts_problems(broken, &cluster);
        assert_eq!(
            problems,
            [
                "db1 is also listed as 127.0.1.1",
                "fs1 is not listed as 192.168.10.21"
            ]
        );
        let repaired = repair_hosts(broken, &cluster);
        assert_eq!(
            repaired,
            "127.0.0.1 localhost\n\
             127.0.1.1 extra\n\
             # comment stays\n\
             192.168.10.11 db1.pbx.example.com db1\n\
             192.168.10.12 db2\n\
             192.168.10.13 db3\n\
             192.168.10.21 fs1.pbx.example.com fs1\n"
        );
        assert!(hosts_problems(&repaired, &cluster).is_empty());
    }

    #[test]
    fn a_missing_hosts_file_is_rebuilt_with_localhost() {
        let cluster = cluster();
        let rebuilt = repair_hosts("", &cluster);
        assert!(
            rebuilt.starts_with("127.0.0.1 localhost\n192.168.10.11 db1.pbx.example.com db1\n")
        );
        assert!(hosts_problems(&rebuilt, &cluster).is_empty());
    }

    #[test]
    fn the_hostname_step_writes_the_file_and_sets_the_live_hostname_once() {
        let fake = FakeRoot::db();
        let config = Config::load(&fake.root).unwrap();
        let node = config.cluster.node("db2").unwrap().clone();
        let mut host = ScriptedHost::new(true).with_hostname("debian");
        let mut context = Context::new(&fake.root, &mut host, &config, &node);
        assert!(ensure_hostname(&mut context).unwrap().changed);
        assert!(!ensure_hostname(&mut context).unwrap().changed);
        assert_eq!(fake.read(HOSTNAME_FILE), "db2\n");
        assert_eq!(host.log(), ["sethostname db2"]);
    }
}
