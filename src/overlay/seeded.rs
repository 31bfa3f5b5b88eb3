//! `node_data = "seed"`: which rendered files a role image may keep. A file stays in the
//! image only when it is the same for every node, stays the same when the manifest lists
//! one more node of every role, and carries no secret; every other file goes into each
//! node's seed. The extra nodes are a probe, rendered and thrown away, never written.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use super::{Inputs, OverlayFile, RenderedRole, Renders, identical_paths, partition};
use crate::manifest::{Cluster, Node, NodeData};
use crate::secrets::{SecretFinder, Secrets};

/// The name of the probe node added to `role`.
pub fn probe_node_name(role: &str) -> String {
    format!("r2a-probe-{role}")
}

/// The inputs with one more node of every role.
pub struct Probe<'a> {
    /// The cluster with the probe nodes.
    pub cluster: Cluster,
    secrets: Secrets,
    inputs: &'a Inputs<'a>,
}

impl<'a> Probe<'a> {
    /// Adds a probe node to every role, at addresses of the network no node uses (their
    /// certificates are placeholders).
    pub fn of(inputs: &'a Inputs<'a>) -> Probe<'a> {
        let mut cluster = inputs.cluster.clone();
        let network = &cluster.network;
        let used: HashSet<Ipv4Addr> = cluster
            .nodes
            .iter()
            .map(|node| node.address)
            .chain([network.gateway])
            .collect();
        let mut free = network
            .cidr
            .hosts()
            .filter(|address| !used.contains(address));
        let fallback = network.cidr.network();
        let probes: Vec<Node> = inputs
            .roles
            .roles
            .keys()
            .map(|role| Node {
                name: probe_node_name(role),
                role: role.clone(),
                address: free.next().unwrap_or(fallback),
                mac: None,
                vcpus: None,
                memory: None,
                disk: None,
                data_disk: None,
            })
            .collect();
        cluster.nodes.extend(probes);
        let secrets = inputs
            .secrets
            .clone()
            .with_placeholders(inputs.roles, &cluster);
        Probe {
            cluster,
            secrets,
            inputs,
        }
    }

    /// The inputs to render the probe with.
    pub fn inputs(&self) -> Inputs<'_> {
        Inputs {
            data_dir: self.inputs.data_dir,
            cluster: &self.cluster,
            roles: self.inputs.roles,
            secrets: &self.secrets,
        }
    }
}

/// Splits the renders of the real nodes into image and seed files, against the renders of
/// the probe (a real node and the role's probe node, in the cluster with probe nodes).
pub fn split(renders: Renders, probe: &Renders, finder: &SecretFinder<'_>) -> RenderedRole {
    let secret_free = |file: &OverlayFile| finder.found_in(&file.content).is_empty();
    let same_for_all: HashSet<String> = identical_paths(&renders.nodes)
        .into_keys()
        .map(str::to_string)
        .collect();
    let image_paths: HashSet<String> = identical_paths(renders.nodes.iter().chain(&probe.nodes))
        .into_iter()
        .filter(|(_, file)| secret_free(file))
        .map(|(path, _)| path.to_string())
        .collect();
    let mut shared = Vec::new();
    let mut seed_common = Vec::new();
    let unchanged = |file: &OverlayFile| probe.role.contains(file) && secret_free(file);
    for file in renders.role {
        if unchanged(&file) {
            shared.push(file);
        } else {
            seed_common.push(file);
        }
    }
    let (common, per_node) = partition(renders.nodes, &same_for_all);
    for file in common {
        if image_paths.contains(&file.path) {
            shared.push(file);
        } else {
            seed_common.push(file);
        }
    }
    shared.sort_by(|a, b| a.path.cmp(&b.path));
    seed_common.sort_by(|a, b| a.path.cmp(&b.path));
    RenderedRole {
        shared,
        seed_common,
        per_node,
        node_data: NodeData::Seed,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::project::{Project, SecretsMode};

    fn repo() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    /// The reference manifest with `node_data = "seed"` and `extra` appended, loaded with
    /// its secrets (one secrets file, so both variants share every secret).
    fn seeded(dir: &Path, extra: &str) -> Project {
        let text = std::fs::read_to_string(repo().join("examples/reference-cluster.toml"))
            .unwrap()
            .replacen("[build]\n", "[build]\nnode_data = \"seed\"\n", 1);
        assert!(text.contains("node_data = \"seed\""));
        let manifest = dir.join("c.toml");
        std::fs::write(&manifest, format!("{text}{extra}")).unwrap();
        Project::load(repo(), &manifest, SecretsMode::Create).unwrap()
    }

    /// Two more db nodes (etcd wants an odd count) and a telephony node.
    const MORE_NODES: &str = "
[[nodes]]
name = \"pg-node-04\"
role = \"db\"
address = \"192.168.10.91\"

[[nodes]]
name = \"pg-node-05\"
role = \"db\"
address = \"192.168.10.92\"

[[nodes]]
name = \"tel-node-03\"
role = \"telephony\"
address = \"192.168.10.93\"
";

    #[test]
    fn where_each_db_file_goes() {
        let dir = tempfile::tempdir().unwrap();
        let project = seeded(dir.path(), "");
        let db = project.render("db").unwrap();
        let image: Vec<String> = db.image_files().into_iter().map(|f| f.path).collect();
        let seed: Vec<String> = db
            .seed_files("pg-node-01")
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(db.seed_file_count("pg-node-01"), seed.len());
        let own = |path: &str| format!("/usr/lib/r2a/nodes/pg-node-01{path}");
        // (path, in the image, in pg-node-01's seed, why)
        let table = [
            (
                "/etc/r2a/role.json",
                true,
                false,
                "the role, whatever the nodes",
            ),
            (
                "/etc/r2a/tls/ca.crt",
                true,
                false,
                "public, the same for all",
            ),
            (
                "/usr/lib/systemd/system/r2a-early.service",
                true,
                false,
                "a static file",
            ),
            (
                "/etc/systemd/resolved.conf.d/50-r2a.conf",
                true,
                false,
                "cluster settings only",
            ),
            ("/etc/hosts", false, true, "lists the nodes"),
            ("/etc/r2a/cluster.json", false, true, "lists the nodes"),
            (
                "/etc/patroni/config.yml",
                false,
                true,
                "the node's own, with passwords",
            ),
            ("/etc/r2a/tls/node.key", false, true, "the node's key"),
            (
                "/etc/default/etcd",
                false,
                true,
                "names the node and its peers",
            ),
        ];
        for (path, in_image, in_seed, why) in table {
            assert_eq!(image.contains(&path.to_string()), in_image, "{path}: {why}");
            assert!(
                !image.contains(&own(path)),
                "{path}: no node tree in the image"
            );
            assert_eq!(seed.contains(&own(path)), in_seed, "{path}: {why}");
        }
        assert!(seed.contains(&"/etc/r2a/cluster.json".to_string()));
        assert!(!image.iter().any(|p| p.starts_with("/usr/lib/r2a/nodes/")));
    }

    #[test]
    fn no_role_image_holds_a_secret_and_a_seed_holds_only_its_node_s_key() {
        let dir = tempfile::tempdir().unwrap();
        let project = seeded(dir.path(), "");
        let finder = project.secrets.finder();
        for role in project.cluster.roles_in_use() {
            let rendered = project.render(&role).unwrap();
            for file in rendered.image_files() {
                let found = finder.found_in(&file.content);
                assert!(found.is_empty(), "{role}: {} holds {found:?}", file.path);
            }
            for node in project.cluster.nodes_of(&role) {
                for file in rendered.seed_files(&node.name) {
                    for name in finder.found_in(&file.content) {
                        if let Some(owner) = name.strip_prefix("pki.nodes.") {
                            assert_eq!(owner, format!("{}.key", node.name), "{}", file.path);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn more_nodes_change_no_image_file_but_every_seed() {
        let dir = tempfile::tempdir().unwrap();
        let before = seeded(dir.path(), "");
        let after = seeded(dir.path(), MORE_NODES);
        for role in before.cluster.roles_in_use() {
            let (old, new) = (before.render(&role).unwrap(), after.render(&role).unwrap());
            assert_eq!(old.image_files(), new.image_files(), "{role}");
            // Every seed carries the cluster file, which lists every node.
            let node = before.cluster.nodes_of(&role).next().unwrap();
            assert_ne!(
                old.seed_files(&node.name),
                new.seed_files(&node.name),
                "{role}"
            );
        }
        let db = after.render("db").unwrap();
        let seed = db.seed_files("pg-node-04");
        assert!(
            seed.iter()
                .any(|f| f.path.ends_with("pg-node-04/etc/r2a/tls/node.key"))
        );
    }
}
