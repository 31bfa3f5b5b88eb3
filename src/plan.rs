//! `r2a-image plan`: what a build would make, which layers are cached, and the telephony
//! capacity the manifest buys, without building anything.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::manifest::{Bootstrap, Format};
use crate::pipeline::{LayerSpec, LayerStore, layer};
use crate::project::Project;

/// The version of `plan --json`'s shape: raised when a field changes meaning or goes.
pub const PLAN_SCHEMA: u32 = 1;

/// The whole plan, printable as text or JSON.
#[derive(Debug, Serialize)]
pub struct Plan {
    /// [`PLAN_SCHEMA`].
    pub schema: u32,
    /// Cluster name.
    pub cluster: String,
    /// The bootstrap tool and version.
    pub bootstrap: String,
    /// The base layer.
    pub base: LayerPlan,
    /// GRUB's layer, when a format boots.
    pub boot_tools: Option<LayerPlan>,
    /// One entry per role to build.
    pub roles: Vec<RolePlan>,
    /// Telephony capacity, from the seed's scaling reference.
    pub capacity: Option<CapacityPlan>,
    /// How the lock beside the manifest stands against these layers and the sources
    /// now; absent without a lock.
    pub lock: Option<crate::lock::LockStatus>,
}

/// One node of a role.
#[derive(Debug, Serialize)]
pub struct NodePlan {
    /// Its name.
    pub name: String,
    /// Its address.
    pub address: String,
}

/// One layer: its key and whether the cache has it.
#[derive(Debug, Serialize)]
pub struct LayerPlan {
    /// The content key.
    pub key: String,
    /// Whether the cache holds it.
    pub cached: bool,
    /// Packages it installs.
    pub packages: Vec<String>,
}

/// One role.
#[derive(Debug, Serialize)]
pub struct RolePlan {
    /// The role.
    pub role: String,
    /// Its nodes.
    pub nodes: Vec<NodePlan>,
    /// Its package layer.
    pub layer: LayerPlan,
    /// Vendor packages to install.
    pub vendor_packages: Vec<String>,
    /// Vendor packages skipped by `vendor = "skip"`.
    pub vendor_skipped: Vec<String>,
    /// Files the overlay installs for every node, and per node.
    pub overlay_files: usize,
    /// Files each node's seed carries for it (`node_data = "seed"`), by node.
    pub seed_files: BTreeMap<String, usize>,
    /// The artifacts, relative to the output folder.
    pub outputs: Vec<String>,
}

/// Telephony capacity: this cluster's row and the seed's scaling table around it.
#[derive(Debug, Serialize)]
pub struct CapacityPlan {
    /// Extensions one server carries.
    pub extensions_per_server: u64,
    /// Concurrent calls one server carries.
    pub calls_per_server: u64,
    /// This cluster.
    #[serde(flatten)]
    pub cluster: CapacityRow,
    /// The seed's sizes (1, 2, 3, 5, 10, 20 servers) and this cluster's.
    pub table: Vec<CapacityRow>,
}

/// Capacity for a number of telephony servers.
#[derive(Debug, Clone, Serialize)]
pub struct CapacityRow {
    /// Telephony servers.
    pub servers: u64,
    /// Extensions all servers carry.
    pub extensions: u64,
    /// Concurrent calls all servers carry.
    pub concurrent_calls: u64,
    /// Concurrent calls with one server down (N+1).
    pub calls_with_one_down: u64,
    /// The seed's name for this size.
    pub use_case: &'static str,
}

/// The server counts of the seed's scaling reference.
const SEED_SIZES: [u64; 6] = [1, 2, 3, 5, 10, 20];

/// Works out the plan for the chosen roles and formats.
pub fn plan(
    project: &Project,
    roles: &[String],
    formats: &[Format],
    bootstrap: Option<Bootstrap>,
    cache: &Path,
) -> anyhow::Result<Plan> {
    let cluster = &project.cluster;
    let store = LayerStore::new(cache);
    let bootstrap = bootstrap.unwrap_or(cluster.build.bootstrap);
    let formats = Format::chosen(formats, &cluster.build.formats);
    let base = layer::base_spec(cluster, &project.roles, bootstrap)?;
    let mut role_plans = Vec::new();
    let mut specs = vec![base.clone()];
    for name in project.roles_to_build(roles)? {
        let role = project.roles.get(&name).expect("roles with nodes exist");
        let spec = layer::role_spec(cluster, &base, role)?;
        specs.push(spec.clone());
        let overlay = project.render(&name)?;
        role_plans.push(RolePlan {
            nodes: cluster
                .nodes_of(&name)
                .map(|n| NodePlan {
                    name: n.name.clone(),
                    address: n.address.to_string(),
                })
                .collect(),
            layer: LayerPlan {
                cached: store.contains(&spec),
                key: spec.key.clone(),
                packages: spec.packages.clone(),
            },
            vendor_packages: spec.vendor_packages.clone(),
            vendor_skipped: spec.vendor_skipped.clone(),
            overlay_files: overlay.image_files().len(),
            seed_files: cluster
                .nodes_of(&name)
                .map(|node| (node.name.clone(), overlay.seed_file_count(&node.name)))
                .filter(|(_, count)| *count > 0)
                .collect(),
            outputs: formats
                .iter()
                .map(|f| format!("{}/{name}/{}", cluster.name, f.output(&name)))
                .collect(),
            role: name,
        });
    }
    let boot_tools = crate::pipeline::boot_tools::needed(&formats).then(|| {
        let spec = layer::boot_tools_spec(&base);
        specs.push(spec.clone());
        LayerPlan {
            cached: store.contains(&spec),
            key: spec.key,
            packages: spec.packages,
        }
    });
    Ok(Plan {
        schema: PLAN_SCHEMA,
        cluster: cluster.name.clone(),
        boot_tools,
        bootstrap: base.tool.clone().unwrap_or_default(),
        base: LayerPlan {
            cached: store.contains(&base),
            key: base.key.clone(),
            packages: base.packages.clone(),
        },
        roles: role_plans,
        capacity: capacity(project),
        lock: lock_status(project, &specs, &store, cache),
    })
}

/// The lock's standing; a plan still shows the rest when the sources cannot be read
/// (offline, say), with that as the lock's one line.
fn lock_status(
    project: &Project,
    specs: &[LayerSpec],
    store: &LayerStore,
    cache: &Path,
) -> Option<crate::lock::LockStatus> {
    let cluster = &project.cluster;
    let state = cache.join(crate::lock::mirror::STATE_DIR);
    let status =
        crate::lock::layer_states(store, &cache.join(crate::pipeline::APT_ARCHIVES_DIR), specs)
            .and_then(|states| crate::lock::status(cluster, &states, &state));
    match status {
        Ok(status) => status,
        Err(error) => Some(crate::lock::LockStatus {
            path: crate::lock::path_for(&cluster.manifest.path),
            drift: vec![format!("not checked: {error:#}")],
            ..Default::default()
        }),
    }
}

fn capacity(project: &Project) -> Option<CapacityPlan> {
    let (name, role) = project
        .roles
        .roles
        .iter()
        .find(|(_, role)| role.capacity.is_some())?;
    let per_node = role.capacity?;
    let row = |servers: u64| CapacityRow {
        servers,
        extensions: servers * per_node.extensions_per_node,
        concurrent_calls: servers * per_node.calls_per_node,
        calls_with_one_down: servers.saturating_sub(1) * per_node.calls_per_node,
        use_case: use_case(servers),
    };
    let servers = project.cluster.nodes_of(name).count() as u64;
    let mut sizes: Vec<u64> = SEED_SIZES.iter().copied().chain([servers]).collect();
    sizes.sort_unstable();
    sizes.dedup();
    Some(CapacityPlan {
        extensions_per_server: per_node.extensions_per_node,
        calls_per_server: per_node.calls_per_node,
        cluster: row(servers),
        table: sizes.into_iter().map(row).collect(),
    })
}

/// The seed's scaling reference names sizes by server count.
pub fn use_case(servers: u64) -> &'static str {
    match servers {
        0 => "none",
        1 => "Medium Enterprise",
        2 => "Large Enterprise",
        3..=4 => "Enterprise+",
        5..=9 => "Service Provider",
        10..=19 => "Carrier Grade",
        _ => "Large Carrier",
    }
}

impl Plan {
    /// The plan as a human reads it.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        let hit = |cached: bool| if cached { "cached" } else { "to build" };
        let _ = writeln!(
            text,
            "cluster {} (bootstrap: {})",
            self.cluster, self.bootstrap
        );
        let _ = writeln!(
            text,
            "base layer {}  {}  {} packages",
            &self.base.key[..12],
            hit(self.base.cached),
            self.base.packages.len()
        );
        if let Some(tools) = &self.boot_tools {
            let _ = writeln!(
                text,
                "boot tools  {}  {}  {}",
                &tools.key[..12],
                hit(tools.cached),
                tools.packages.join(" ")
            );
        }
        for role in &self.roles {
            let _ = writeln!(text, "\nrole {}", role.role);
            let nodes: Vec<String> = role
                .nodes
                .iter()
                .map(|node| format!("{} ({})", node.name, node.address))
                .collect();
            let _ = writeln!(text, "  nodes     {}", nodes.join(", "));
            let _ = writeln!(
                text,
                "  layer     {}  {}  {}",
                &role.layer.key[..12],
                hit(role.layer.cached),
                role.layer.packages.join(" ")
            );
            if !role.vendor_packages.is_empty() {
                let _ = writeln!(text, "  vendor    {}", role.vendor_packages.join(" "));
            }
            if !role.vendor_skipped.is_empty() {
                let _ = writeln!(
                    text,
                    "  skipped   {} (vendor = \"skip\")",
                    role.vendor_skipped.join(" ")
                );
            }
            let _ = writeln!(text, "  overlay   {} files", role.overlay_files);
            if !role.seed_files.is_empty() {
                let counts: Vec<String> = role
                    .seed_files
                    .iter()
                    .map(|(node, count)| format!("{node} {count}"))
                    .collect();
                let _ = writeln!(
                    text,
                    "  seeds     files of each node: {}",
                    counts.join(", ")
                );
            }
            let _ = writeln!(text, "  outputs   {}", role.outputs.join(", "));
        }
        if let Some(lock) = &self.lock {
            let _ = write!(text, "\nlock {}: ", lock.path.display());
            if lock.is_clean() {
                let _ = writeln!(text, "the sources give every package as locked");
            } else {
                let _ = writeln!(text, "a build would not install what it locks");
                for line in lock.lines() {
                    let _ = writeln!(text, "  {line}");
                }
            }
        }
        if let Some(capacity) = &self.capacity {
            let _ = writeln!(
                text,
                "\ntelephony capacity ({} extensions / {} calls per server)",
                capacity.extensions_per_server, capacity.calls_per_server
            );
            let _ = writeln!(
                text,
                "  servers  extensions  concurrent calls  with one down  use case"
            );
            for row in &capacity.table {
                let mark = if row.servers == capacity.cluster.servers {
                    "  <- this cluster"
                } else {
                    ""
                };
                let _ = writeln!(
                    text,
                    "  {:>7}  {:>10}  {:>16}  {:>13}  {}{mark}",
                    row.servers,
                    row.extensions,
                    row.concurrent_calls,
                    row.calls_with_one_down,
                    row.use_case
                );
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_cases_follow_the_seed_table() {
        assert_eq!(use_case(1), "Medium Enterprise");
        assert_eq!(use_case(2), "Large Enterprise");
        assert_eq!(use_case(3), "Enterprise+");
        assert_eq!(use_case(5), "Service Provider");
        assert_eq!(use_case(10), "Carrier Grade");
        assert_eq!(use_case(20), "Large Carrier");
    }
}
