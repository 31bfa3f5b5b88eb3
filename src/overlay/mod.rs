//! Overlay trees: collecting `overlays/{common,<shared>,<role>}`, rendering `*.tera` files
//! strictly for the nodes of a role, and splitting the result into files all nodes share
//! and files the first-boot agent installs for its own node (from the image, or from the
//! node's seed under `node_data = "seed"`).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::diag::{Diagnostics, InvalidInput};
use crate::hash::KeyBuilder;
use crate::manifest::{Cluster, Node, NodeData};
use crate::role::{Role, RoleSet};
use crate::secrets::{SecretFinder, Secrets};

mod generated;
mod render;
mod scope;
mod seeded;

use render::{Renders, Templates};

/// Where in the image the per-node trees live; `r2a-node` installs its own at first boot.
pub const NODE_TREES: &str = "/usr/lib/r2a/nodes";
/// The cluster and its nodes, as `r2a-node` reads them.
pub const CLUSTER_FILE: &str = "/etc/r2a/cluster.json";

/// One file an image gets from its overlays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayFile {
    /// Absolute path in the image.
    pub path: String,
    /// Content after rendering.
    pub content: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    /// Owner and group names, resolved against the image's own user database.
    pub owner: String,
    /// Group name.
    pub group: String,
    /// The overlay file it came from.
    pub origin: PathBuf,
}

/// A role's overlay, rendered for every node of the role. Each file is kept once where
/// it is the same for many nodes: a role of a thousand nodes holds one `/etc/hosts`.
#[derive(Debug, Clone)]
pub struct RenderedRole {
    /// Files installed directly in the image: the same for every node (under
    /// `node_data = "seed"` also unchanged by more nodes, and free of secrets).
    pub shared: Vec<OverlayFile>,
    /// Under `node_data = "seed"`: files the same for every node that still go into each
    /// node's seed, since they change with the node list or carry a secret.
    pub seed_common: Vec<OverlayFile>,
    /// Files that differ between nodes, by node name.
    pub per_node: BTreeMap<String, Vec<OverlayFile>>,
    /// Where the node's own files go.
    pub node_data: NodeData,
}

impl RenderedRole {
    /// Every file of the image: shared ones at their path and, when node data goes into
    /// the image, per-node ones under [`NODE_TREES`]`/<node>/`.
    pub fn image_files(&self) -> Vec<OverlayFile> {
        let mut files = self.shared.clone();
        if self.node_data == NodeData::Image {
            for node in self.per_node.keys() {
                files.extend(self.node_tree(node));
            }
        }
        files
    }

    /// The files a node's seed carries under `node_data = "seed"` (none otherwise): its
    /// tree under [`NODE_TREES`]`/<node>/`, and the cluster file where the agent reads it
    /// before it knows its name.
    pub fn seed_files(&self, node: &str) -> Vec<OverlayFile> {
        if self.node_data == NodeData::Image {
            return Vec::new();
        }
        let mut files = self.node_tree(node);
        files.extend(
            self.own_files(node)
                .filter(|file| file.path == CLUSTER_FILE)
                .cloned(),
        );
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }

    /// How many files [`Self::seed_files`] gives, without copying them.
    pub fn seed_file_count(&self, node: &str) -> usize {
        if self.node_data == NodeData::Image {
            return 0;
        }
        let own = self.own_files(node);
        let (count, cluster_file) = own.fold((0, 0), |(count, cluster_file), file| {
            (
                count + 1,
                cluster_file + usize::from(file.path == CLUSTER_FILE),
            )
        });
        count + cluster_file
    }

    /// The files a node gets apart from the image's shared ones, at their own paths.
    fn own_files<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a OverlayFile> + 'a {
        self.seed_common
            .iter()
            .chain(self.per_node.get(node).into_iter().flatten())
    }

    /// A node's own files at their place under [`NODE_TREES`].
    fn node_tree(&self, node: &str) -> Vec<OverlayFile> {
        self.own_files(node)
            .map(|file| OverlayFile {
                path: format!("{NODE_TREES}/{node}{}", file.path),
                ..file.clone()
            })
            .collect()
    }

    /// The tree one node ends up with after first boot: shared plus its own files.
    pub fn node_view(&self, node: &str) -> Vec<OverlayFile> {
        let mut files = self.shared.clone();
        files.extend(self.own_files(node).cloned());
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }

    /// A content key over every file, its path, mode and owner, wherever it goes (the PXE
    /// set carries the seeds' payloads). Files common to every seed count once.
    pub fn key(&self) -> String {
        let node_files = self.per_node.iter().flat_map(|(node, files)| {
            files.iter().map(move |file| OverlayFile {
                path: format!("{NODE_TREES}/{node}{}", file.path),
                ..file.clone()
            })
        });
        let seed_common = self.seed_common.iter().map(|file| OverlayFile {
            path: format!("{NODE_TREES}/*{}", file.path),
            ..file.clone()
        });
        files_key(
            self.node_data,
            self.shared
                .iter()
                .cloned()
                .chain(seed_common)
                .chain(node_files),
        )
    }

    /// A content key over the files of the image only: under `node_data = "seed"` it does
    /// not change with the node list, and neither do the identifiers derived from it.
    pub fn image_key(&self) -> String {
        files_key(self.node_data, self.image_files().into_iter())
    }
}

/// A key over files: path, content, mode and owner of each.
fn files_key(node_data: NodeData, files: impl Iterator<Item = OverlayFile>) -> String {
    let mut key = KeyBuilder::new().add("node_data", node_data.name());
    for file in files {
        key = key
            .add("path", &file.path)
            .add("content", &file.content)
            .add(
                "meta",
                format!("{:o} {}:{}", file.mode, file.owner, file.group),
            );
    }
    key.finish()
}

/// Everything rendering reads.
pub struct Inputs<'a> {
    /// The data directory holding `roles/` and `overlays/`.
    pub data_dir: &'a Path,
    /// The validated cluster.
    pub cluster: &'a Cluster,
    /// Every role.
    pub roles: &'a RoleSet,
    /// The cluster's secrets.
    pub secrets: &'a Secrets,
}

/// Renders a role's overlays for each of its nodes; every problem is reported at once.
pub fn render_role(inputs: &Inputs<'_>, role_name: &str) -> anyhow::Result<RenderedRole> {
    let role = inputs
        .roles
        .get(role_name)
        .with_context(|| format!("unknown role {role_name}"))?;
    let nodes: Vec<&Node> = inputs.cluster.nodes_of(role_name).collect();
    anyhow::ensure!(
        !nodes.is_empty(),
        "role {role_name} has no nodes in {}",
        inputs.cluster.manifest.path.display()
    );
    let templates = Templates::load(inputs.data_dir, role)?;
    let mut diagnostics = Diagnostics::new();
    let renders = templates.render(inputs, &nodes, &mut diagnostics)?;
    diagnostics.dedup();
    diagnostics.into_result(())?;
    let tls_nodes = nodes
        .iter()
        .filter(|_| role.tls)
        .map(|node| node.name.as_str());
    let finder = inputs.secrets.finder_for_role(&role.secrets, tls_nodes);
    let rendered = match inputs.cluster.build.node_data {
        NodeData::Image => split_by_node(renders),
        NodeData::Seed => {
            // One node as it is and the new node, in a cluster with one more node of
            // every role: what changes there cannot go into an image that must not.
            let probe = seeded::Probe::of(inputs);
            let probe_nodes: Vec<&Node> = nodes[..1]
                .iter()
                .copied()
                .chain(probe.cluster.node(&seeded::probe_node_name(role_name)))
                .collect();
            let probe_renders =
                templates.render(&probe.inputs(), &probe_nodes, &mut Diagnostics::new())?;
            seeded::split(renders, &probe_renders, &finder)
        }
    };
    check_secret_modes(&rendered, &finder, role)?;
    Ok(rendered)
}

/// Under `node_data = "image"`: files the same for every node go into the image once,
/// the others into each node's tree.
fn split_by_node(renders: Renders) -> RenderedRole {
    let same: HashSet<String> = identical_paths(&renders.nodes)
        .into_keys()
        .map(str::to_string)
        .collect();
    let (mut shared, per_node) = partition(renders.nodes, &same);
    shared.extend(renders.role);
    shared.sort_by(|a, b| a.path.cmp(&b.path));
    RenderedRole {
        shared,
        seed_common: Vec::new(),
        per_node,
        node_data: NodeData::Image,
    }
}

/// The paths rendered the same in every one of `renders`, each with that render.
fn identical_paths<'a>(
    renders: impl IntoIterator<Item = &'a (String, Vec<OverlayFile>)>,
) -> BTreeMap<&'a str, &'a OverlayFile> {
    let mut variants: BTreeMap<&str, (&OverlayFile, bool)> = BTreeMap::new();
    for file in renders.into_iter().flat_map(|(_, files)| files) {
        variants
            .entry(&file.path)
            .and_modify(|(first, same)| *same &= *first == file)
            .or_insert((file, true));
    }
    variants
        .into_iter()
        .filter(|(_, (_, same))| *same)
        .map(|(path, (file, _))| (path, file))
        .collect()
}

/// One copy of each file at the `common` paths, and every node's other files.
fn partition(
    renders: Vec<(String, Vec<OverlayFile>)>,
    common: &HashSet<String>,
) -> (Vec<OverlayFile>, BTreeMap<String, Vec<OverlayFile>>) {
    let mut kept: Vec<OverlayFile> = Vec::new();
    let mut per_node = BTreeMap::new();
    for (index, (node, files)) in renders.into_iter().enumerate() {
        let (same, own): (Vec<OverlayFile>, Vec<OverlayFile>) = files
            .into_iter()
            .partition(|file| common.contains(&file.path));
        if index == 0 {
            kept = same;
        }
        if !own.is_empty() {
            per_node.insert(node, own);
        }
    }
    (kept, per_node)
}

/// A file that carries a secret must not be readable by everyone.
fn check_secret_modes(
    rendered: &RenderedRole,
    finder: &SecretFinder<'_>,
    role: &Role,
) -> Result<(), InvalidInput> {
    let mut diagnostics = Diagnostics::new();
    for file in rendered
        .shared
        .iter()
        .chain(&rendered.seed_common)
        .chain(rendered.per_node.values().flatten())
    {
        if file.mode & 0o004 == 0 {
            continue;
        }
        for name in finder.found_in(&file.content) {
            diagnostics.in_file(
                &file.origin,
                format!(
                    "{} would carry the secret `{name}` readable by everyone (mode {:04o})",
                    file.path, file.mode
                ),
                Some(format!(
                    "declare it in roles/{}.toml: [[files]] path = \"{}\" mode = \"0600\"",
                    role.name, file.path
                )),
            );
        }
    }
    diagnostics.dedup();
    diagnostics.into_result(())
}
