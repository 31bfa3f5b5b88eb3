//! Per-node cloud-init NoCloud seeds: `meta-data` (a stable instance-id and the node's
//! name), `user-data` and a `network-config` (v2) with the node's static address, packed
//! as an ISO 9660 image labelled `cidata` that cloud-init finds on any attached drive.
//! Under `node_data = "seed"` a seed also carries the node's payload (its own files and
//! secrets, [`crate::payload`]), and is then readable by root only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::Context;
use serde_json::json;

use crate::exec::{CommandExt, Tool, require_tools};
use crate::fsutil;
use crate::hash::sha256_file;
use crate::manifest::{Cluster, Node};
use crate::overlay::RenderedRole;
use crate::pipeline::{ClusterIndex, SeedRecord, WorkDir};
use crate::progress::{Progress, Stage};
use crate::project::Project;
use crate::signing::Signer;

/// The tool that packs seeds.
const XORRISO: Tool = Tool {
    program: "xorriso",
    package: "xorriso",
    reason: "pack NoCloud seed images",
};

/// The three files of one node's seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedFiles {
    /// `meta-data`.
    pub meta_data: String,
    /// `user-data`.
    pub user_data: String,
    /// `network-config`.
    pub network_config: String,
}

/// The seed of one node. The instance-id stays the same across rebuilds, so cloud-init's
/// once-per-instance steps run once per node, not once per image.
///
/// The files are YAML written as JSON: cloud-init reads them with a YAML 1.1 parser, for
/// which a bare `no`, `on` or an all-digit MAC (`52:54:00:12:34:56`, a base-60 number)
/// is no string; JSON quotes every string, and every YAML parser reads it alike.
pub fn seed_files(cluster: &Cluster, node: &Node) -> SeedFiles {
    let meta_data = json!({
        "instance-id": format!("r2a-{}-{}", cluster.name, node.name),
        "local-hostname": node.name,
        "r2a-node": node.name,
    });
    let user_data = json!({
        "hostname": node.name,
        "fqdn": format!("{}.{}", node.name, cluster.domain),
        "manage_etc_hosts": false,
        "ssh_pwauth": false,
        "disable_root": false,
    });
    SeedFiles {
        meta_data: yaml_text(&meta_data),
        user_data: format!(
            "#cloud-config\n# Seed of {node} in cluster {cluster}, written by r2a-image. The image configures\n# the rest; r2a-node reads the node's name from meta-data.\n{}",
            yaml_text(&user_data),
            node = node.name,
            cluster = cluster.name,
        ),
        network_config: yaml_text(&network_config(cluster, node)),
    }
}

/// A document as YAML that any YAML parser reads the same: indented JSON.
fn yaml_text(document: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(document).expect("JSON values serialize");
    text.push('\n');
    text
}

/// The ethernet id of a node without a MAC. cloud-init's networkd renderer writes
/// `[Match] Name=<id>` and drops `match: name:` (cloud-init 25.1), so the id itself is
/// the glob: it matches the predictable (`en*`) and classic (`eth*`) names of wired links.
/// A container's `host0`, or a machine with several wired links, is the agent's to sort
/// out (`r2a-node status` says which link got the address, and why).
pub const UNMATCHED_ETHERNET_ID: &str = "e*";

/// A network-config (version 2) giving the node its static address.
fn network_config(cluster: &Cluster, node: &Node) -> serde_json::Value {
    let network = &cluster.network;
    let (id, matching) = match &node.mac {
        Some(mac) => ("cluster", json!({ "macaddress": mac })),
        None => (
            UNMATCHED_ETHERNET_ID,
            json!({ "name": UNMATCHED_ETHERNET_ID }),
        ),
    };
    let ethernet = json!({
        "match": matching,
        "addresses": [format!("{}/{}", node.address, network.prefix_len)],
        "routes": [{ "to": "0.0.0.0/0", "via": network.gateway.to_string() }],
        "nameservers": {
            "addresses": network.dns.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "search": [cluster.domain],
        },
    });
    json!({ "network": { "version": 2, "ethernets": { id: ethernet } } })
}

/// How many seeds are packed at once. xorriso spends most of a seed's time asleep (its
/// writer thread is polled every 0.1 s), so packers overlap far beyond the core count.
const PACKERS: usize = 32;

/// Writes the seeds of `nodes` to `<out>/<cluster>/seeds/<node>.iso`, atomically, and
/// records them in the cluster's `manifest.json` and `SHA256SUMS`, signed with `signer`.
pub fn write_seeds(
    project: &Project,
    nodes: &[&Node],
    out: &Path,
    signer: Option<&Signer>,
    progress: Progress,
) -> anyhow::Result<Vec<PathBuf>> {
    require_tools(&[XORRISO])?;
    fsutil::use_artifact_umask();
    // A node named twice gets its one seed.
    let mut seen = std::collections::HashSet::new();
    let nodes: Vec<&Node> = nodes
        .iter()
        .copied()
        .filter(|node| seen.insert(node.name.as_str()))
        .collect();
    let cluster = &project.cluster;
    let cluster_out = out.join(&cluster.name);
    let seeds = cluster_out.join("seeds");
    std::fs::create_dir_all(&seeds).with_context(|| format!("creating {}", seeds.display()))?;
    let work = WorkDir::new(&seeds, ".staging-")?;
    let mut rendered: BTreeMap<&str, RenderedRole> = BTreeMap::new();
    for node in &nodes {
        if !rendered.contains_key(node.role.as_str()) {
            rendered.insert(&node.role, project.render(&node.role)?);
        }
    }
    let packer = Packer {
        cluster,
        rendered: &rendered,
        staging: work.path(),
        source_date_epoch: cluster.source_date_epoch()?,
    };
    let mut stage = progress.stage("seeds");
    stage.items(nodes.len() as u64);
    let packed = packer.pack_all(&nodes, &stage)?;
    let mut index = ClusterIndex::read(&cluster_out)?;
    let mut published = Vec::new();
    for (node, (staged, record)) in nodes.iter().zip(packed) {
        let target = seeds.join(format!("{}.iso", node.name));
        std::fs::rename(&staged, &target)
            .with_context(|| format!("writing {}", target.display()))?;
        index.seeds.insert(node.name.clone(), record);
        published.push(target);
    }
    index.write(&cluster_out, cluster, signer)?;
    stage.finish(&format!("{} seeds", published.len()));
    Ok(published)
}

/// A staged seed and its record for the cluster's index.
type Packed = (PathBuf, SeedRecord);

/// Packs seeds into a staging folder.
struct Packer<'a> {
    cluster: &'a Cluster,
    rendered: &'a BTreeMap<&'a str, RenderedRole>,
    staging: &'a Path,
    source_date_epoch: i64,
}

impl Packer<'_> {
    /// Packs the seed of every node, [`PACKERS`] at a time; the staged ISO and its record
    /// come back in the order of `nodes`. The first failure stops the others.
    fn pack_all(&self, nodes: &[&Node], stage: &Stage) -> anyhow::Result<Vec<Packed>> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Vec<Vec<(usize, anyhow::Result<Packed>)>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..PACKERS.min(nodes.len()))
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        while !failed.load(Ordering::Relaxed) {
                            let at = next.fetch_add(1, Ordering::Relaxed);
                            let Some(node) = nodes.get(at) else { break };
                            let result = self.pack(node);
                            failed.fetch_or(result.is_err(), Ordering::Relaxed);
                            stage.advance(1);
                            done.push((at, result));
                        }
                        done
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().expect("a seed packer does not panic"))
                .collect()
        });
        let mut ordered: Vec<_> = results.into_iter().flatten().collect();
        ordered.sort_by_key(|(at, _)| *at);
        ordered.into_iter().map(|(_, result)| result).collect()
    }

    /// Writes one node's seed files and packs them as `<staging>/<node>.iso`.
    fn pack(&self, node: &Node) -> anyhow::Result<Packed> {
        let epoch = self.source_date_epoch;
        let payload = self.rendered[node.role.as_str()].seed_files(&node.name);
        let files = seed_files(self.cluster, node);
        let dir = self.staging.join(&node.name);
        std::fs::create_dir_all(&dir)?;
        for (name, content) in [
            ("meta-data", &files.meta_data),
            ("user-data", &files.user_data),
            ("network-config", &files.network_config),
        ] {
            let path = dir.join(name);
            fsutil::write_atomic(&path, content.as_bytes(), 0o644)?;
            set_mtime(&path, epoch)?;
        }
        if !payload.is_empty() {
            let path = dir.join(crate::payload::FILE_NAME);
            let bytes = crate::payload::pack(&payload, epoch)?;
            fsutil::write_atomic(&path, &bytes, 0o600)?;
            set_mtime(&path, epoch)?;
        }
        set_mtime(&dir, epoch)?;
        let iso = self.staging.join(format!("{}.iso", node.name));
        Command::new("xorriso")
            .args([
                "-as", "mkisofs", "-quiet", "-volid", "cidata", "-joliet", "-rock", "-o",
            ])
            .arg(&iso)
            .arg(&dir)
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .run()
            .with_context(|| format!("packing the seed of {}", node.name))?;
        fsutil::set_mode(&iso, if payload.is_empty() { 0o644 } else { 0o600 })?;
        std::fs::remove_dir_all(&dir)?;
        let record = SeedRecord {
            path: format!("seeds/{}.iso", node.name),
            sha256: sha256_file(&iso)?,
            size: std::fs::metadata(&iso)?.len(),
        };
        Ok((iso, record))
    }
}

/// File times go into the ISO: fixed ones make the same seed byte for byte.
fn set_mtime(path: &Path, epoch: i64) -> anyhow::Result<()> {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch.max(0) as u64);
    std::fs::File::open(path)
        .and_then(|file| file.set_modified(time))
        .with_context(|| format!("setting the time of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::{Project, SecretsMode};

    fn reference() -> Project {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        Project::load(
            repo,
            &repo.join("examples/reference-cluster.toml"),
            SecretsMode::ReadOnly,
        )
        .unwrap()
    }

    /// A seed file as cloud-init reads it: YAML.
    fn read(text: &str) -> serde_yaml_ng::Value {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn a_seed_names_the_node_and_carries_its_static_address() {
        let project = reference();
        let node = project.cluster.node("pg-node-02").unwrap();
        let files = seed_files(&project.cluster, node);
        let meta = read(&files.meta_data);
        assert_eq!(meta["instance-id"], "r2a-ring2all-pg-node-02");
        assert_eq!(meta["local-hostname"], "pg-node-02");
        assert_eq!(meta["r2a-node"], "pg-node-02");
        assert!(files.user_data.starts_with("#cloud-config\n"));
        let user = read(&files.user_data);
        assert_eq!(user["fqdn"], "pg-node-02.pbx.example.com");
        assert_eq!(user["ssh_pwauth"], false);
        let network = read(&files.network_config);
        let ethernet = &network["network"]["ethernets"]["e*"];
        assert_eq!(network["network"]["version"], 2);
        assert_eq!(ethernet["match"]["name"], "e*");
        assert_eq!(ethernet["addresses"][0], "192.168.10.32/24");
        assert_eq!(ethernet["routes"][0]["to"], "0.0.0.0/0");
        assert_eq!(ethernet["routes"][0]["via"], "192.168.10.1");
        assert_eq!(ethernet["nameservers"]["addresses"][0], "192.168.10.1");
        assert_eq!(ethernet["nameservers"]["search"][0], "pbx.example.com");
    }

    #[test]
    fn a_node_with_a_mac_is_matched_by_it() {
        let mut project = reference();
        project.cluster.nodes[0].mac = Some("52:54:00:aa:bb:cc".to_string());
        let node = project.cluster.nodes[0].clone();
        let files = seed_files(&project.cluster, &node);
        let network = read(&files.network_config);
        let ethernets = &network["network"]["ethernets"];
        assert_eq!(
            ethernets["cluster"]["match"]["macaddress"],
            "52:54:00:aa:bb:cc"
        );
        assert!(ethernets["cluster"]["match"].get("name").is_none());
        assert!(ethernets.get("e*").is_none());
    }

    #[test]
    fn every_string_is_quoted_for_yaml_1_1_readers() {
        // A YAML 1.1 reader (cloud-init's) takes a bare `no` for false and an all-digit
        // MAC for a base-60 number: every string a seed holds must be quoted.
        let mut project = reference();
        project.cluster.nodes[0].name = "no".to_string();
        project.cluster.nodes[0].mac = Some("52:54:00:12:34:56".to_string());
        let node = project.cluster.nodes[0].clone();
        let files = seed_files(&project.cluster, &node);
        for text in [&files.meta_data, &files.network_config] {
            assert!(text.contains("\"no\"") || text.contains("\"52:54:00:12:34:56\""));
            let as_json: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_value(read(text)).unwrap(), as_json);
        }
        let body = files.user_data.split_once("\n{").unwrap().1;
        let user: serde_json::Value = serde_json::from_str(&format!("{{{body}")).unwrap();
        assert_eq!(user["hostname"], "no");
    }
}
