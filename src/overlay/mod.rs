//! Overlay trees: collecting `overlays/{common,<shared>,<role>}`, rendering `*.tera` files
//! strictly for every node of a role, and splitting the result into files all nodes share
//! and files the first-boot agent installs for its own node (from the image, or from the
//! node's seed under `node_data = "seed"`).

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tera::{Context, Tera};

use crate::diag::{Diagnostics, InvalidInput, Source};
use crate::hash::KeyBuilder;
use crate::manifest::{Cluster, Node, NodeData};
use crate::role::{FileRule, FirewallRule, Role, RoleSet};
use crate::secrets::Secrets;

mod generated;
mod seeded;

use generated::{ClusterFile, generated_files};

/// Where in the image the per-node trees live; `r2a-node` installs its own at first boot.
pub const NODE_TREES: &str = "/usr/lib/r2a/nodes";
/// The cluster and its nodes, as `r2a-node` reads them.
pub const CLUSTER_FILE: &str = "/etc/r2a/cluster.json";
const TEMPLATE_SUFFIX: &str = ".tera";

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

/// A role's overlay, rendered for every node of the role.
#[derive(Debug, Clone)]
pub struct RenderedRole {
    /// Files identical for every node, installed directly.
    pub shared: Vec<OverlayFile>,
    /// Files that differ between nodes, by node name (under `node_data = "seed"` also
    /// every file that would change with the node list or carries a secret).
    pub per_node: BTreeMap<String, Vec<OverlayFile>>,
    /// Where the per-node files go.
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
            self.per_node
                .get(node)
                .into_iter()
                .flatten()
                .filter(|file| file.path == CLUSTER_FILE)
                .cloned(),
        );
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }

    /// A node's own files at their place under [`NODE_TREES`].
    fn node_tree(&self, node: &str) -> Vec<OverlayFile> {
        self.per_node
            .get(node)
            .into_iter()
            .flatten()
            .map(|file| OverlayFile {
                path: format!("{NODE_TREES}/{node}{}", file.path),
                ..file.clone()
            })
            .collect()
    }

    /// The tree one node ends up with after first boot: shared plus its own files.
    pub fn node_view(&self, node: &str) -> Vec<OverlayFile> {
        let mut files = self.shared.clone();
        files.extend(self.per_node.get(node).into_iter().flatten().cloned());
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }

    /// A content key over every file, its path, mode and owner, wherever it goes (the PXE
    /// set carries the seeds' payloads).
    pub fn key(&self) -> String {
        let node_files = self.per_node.keys().flat_map(|node| self.node_tree(node));
        files_key(
            self.node_data,
            self.shared.iter().cloned().chain(node_files),
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

/// One source file of an overlay tree.
struct SourceFile {
    path: String,
    source: PathBuf,
    template: bool,
    executable: bool,
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
    let sources = collect_sources(inputs.data_dir, role)?;
    let mut tera = Tera::default();
    let mut diagnostics = Diagnostics::new();
    for file in sources.iter().filter(|f| f.template) {
        let text = std::fs::read_to_string(&file.source)
            .with_context(|| format!("reading {}", file.source.display()))?;
        if let Err(error) = tera.add_raw_template(&file.source.to_string_lossy(), &text) {
            diagnostics.in_file(
                &file.source,
                format!("invalid template: {}", error_chain(&error)),
                Some("fix the template syntax (Tera, like Jinja2)".to_string()),
            );
        }
    }
    diagnostics.check()?;

    let renders = render_nodes(inputs, role, &tera, &sources, &nodes, &mut diagnostics)?;
    diagnostics.dedup();
    diagnostics.into_result(())?;
    let rendered = match inputs.cluster.build.node_data {
        NodeData::Image => split_by_node(renders),
        NodeData::Seed => {
            let probe = seeded::Probe::of(inputs);
            let probe_nodes: Vec<&Node> = nodes
                .iter()
                .copied()
                .chain(probe.cluster.node(&seeded::probe_node_name(role_name)))
                .collect();
            let probe_renders = render_nodes(
                &probe.inputs(),
                role,
                &tera,
                &sources,
                &probe_nodes,
                &mut Diagnostics::new(),
            )?;
            seeded::split(renders, &probe_renders, inputs.secrets)
        }
    };
    check_secret_modes(&rendered, inputs, role)?;
    Ok(rendered)
}

/// Renders every source file for each of `nodes`; template problems go to `diagnostics`.
fn render_nodes(
    inputs: &Inputs<'_>,
    role: &Role,
    tera: &Tera,
    sources: &[SourceFile],
    nodes: &[&Node],
    diagnostics: &mut Diagnostics,
) -> anyhow::Result<Vec<(String, Vec<OverlayFile>)>> {
    let mut renders = Vec::new();
    for node in nodes {
        let context = context_for(inputs, role, node)?;
        let mut files = Vec::new();
        for file in sources {
            match render_file(tera, file, &context) {
                Ok(content) => files.push(with_rules(file, content, &inputs.roles.base, role)),
                Err(problem) => push_render_problem(diagnostics, file, problem),
            }
        }
        files.extend(generated_files(inputs.cluster, role)?);
        renders.push((node.name.clone(), files));
    }
    Ok(renders)
}

fn collect_sources(data_dir: &Path, role: &Role) -> anyhow::Result<Vec<SourceFile>> {
    let overlays = data_dir.join("overlays");
    let trees = std::iter::once("common".to_string())
        .chain(role.overlays.iter().cloned())
        .chain([role.name.clone()]);
    let mut by_path: BTreeMap<String, SourceFile> = BTreeMap::new();
    for tree in trees {
        let root = overlays.join(&tree);
        if !root.is_dir() {
            // A role needs no overlay of its own; a named shared overlay must exist.
            anyhow::ensure!(
                tree == role.name,
                "overlay {} named by roles/{}.toml does not exist",
                root.display(),
                role.name
            );
            continue;
        }
        for entry in walkdir::WalkDir::new(&root).sort_by_file_name() {
            let entry = entry.with_context(|| format!("reading {}", root.display()))?;
            if !entry.file_type().is_file() {
                continue;
            }
            let relative = entry
                .path()
                .strip_prefix(&root)
                .expect("walkdir stays below its root")
                .to_string_lossy()
                .into_owned();
            let template = relative.ends_with(TEMPLATE_SUFFIX);
            let path = format!(
                "/{}",
                relative.strip_suffix(TEMPLATE_SUFFIX).unwrap_or(&relative)
            );
            let executable = entry.metadata()?.permissions().mode() & 0o111 != 0;
            // Later trees override earlier ones: the role's own overlay wins.
            by_path.insert(
                path.clone(),
                SourceFile {
                    path,
                    source: entry.into_path(),
                    template,
                    executable,
                },
            );
        }
    }
    Ok(by_path.into_values().collect())
}

/// The template context, as documented in README.md.
fn context_for(inputs: &Inputs<'_>, role: &Role, node: &Node) -> anyhow::Result<Context> {
    let cluster = inputs.cluster;
    let mut nodes_by_role: BTreeMap<&str, Vec<&Node>> = inputs
        .roles
        .roles
        .keys()
        .map(|name| (name.as_str(), Vec::new()))
        .collect();
    for each in &cluster.nodes {
        nodes_by_role
            .entry(each.role.as_str())
            .or_default()
            .push(each);
    }
    let firewall: Vec<&FirewallRule> = inputs
        .roles
        .base
        .firewall
        .iter()
        .chain(&role.firewall)
        .collect();
    let secrets: BTreeMap<&str, &str> = inputs
        .secrets
        .for_role(&role.secrets)
        .map(|(name, value)| (name, value.expose()))
        .collect();
    let tls = inputs
        .secrets
        .pki()
        .template_context(&node.name, role.tls)?;
    let mut context = Context::new();
    context.insert("cluster", &ClusterFile::from(cluster));
    context.insert("nodes", &cluster.nodes);
    context.insert("nodes_by_role", &nodes_by_role);
    context.insert("node", node);
    context.insert("role", role);
    context.insert("roles", &inputs.roles.roles);
    context.insert("firewall", &firewall);
    context.insert("secrets", &secrets);
    context.insert("tls", &tls);
    Ok(context)
}

fn render_file(tera: &Tera, file: &SourceFile, context: &Context) -> Result<Vec<u8>, tera::Error> {
    if file.template {
        tera.render(&file.source.to_string_lossy(), context)
            .map(String::into_bytes)
    } else {
        Ok(std::fs::read(&file.source)
            .map_err(|e| tera::Error::msg(format!("reading {}: {e}", file.source.display())))?)
    }
}

fn with_rules(file: &SourceFile, content: Vec<u8>, base: &Role, role: &Role) -> OverlayFile {
    let rule: Option<&FileRule> = role
        .files
        .iter()
        .chain(&base.files)
        .find(|rule| rule.path == file.path);
    let default_mode = if file.executable { 0o755 } else { 0o644 };
    OverlayFile {
        path: file.path.clone(),
        content,
        mode: rule.and_then(FileRule::mode_bits).unwrap_or(default_mode),
        owner: rule.map_or("root".to_string(), |r| r.owner.clone()),
        group: rule.map_or("root".to_string(), |r| r.group.clone()),
        origin: file.source.clone(),
    }
}

fn push_render_problem(diagnostics: &mut Diagnostics, file: &SourceFile, error: tera::Error) {
    let chain = error_chain(&error);
    let text = std::fs::read_to_string(&file.source).unwrap_or_default();
    let source = Source::new(&file.source, text);
    match undefined_variable(&chain) {
        Some(variable) => {
            let span = source
                .find(&variable)
                .or_else(|| source.find(variable.split('.').next().unwrap_or(&variable)));
            diagnostics.at(
                &source,
                span,
                format!("template {} uses the undefined variable `{variable}`", file.source.display()),
                Some("templates see cluster, nodes, nodes_by_role, node, role, roles, firewall, secrets (only those the role lists) and tls (tls.ca_cert; tls.node_cert and tls.node_key only in roles with `tls = true`); see README.md".to_string()),
            );
        }
        None => diagnostics.in_file(&file.source, format!("rendering failed: {chain}"), None),
    }
}

/// Tera says "Variable `x.y` not found in context while rendering 'name'".
fn undefined_variable(chain: &str) -> Option<String> {
    let start = chain.find("Variable `")? + "Variable `".len();
    let end = chain[start..].find('`')? + start;
    Some(chain[start..end].to_string())
}

fn error_chain(error: &tera::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn split_by_node(renders: Vec<(String, Vec<OverlayFile>)>) -> RenderedRole {
    let shared = identical_paths(&renders)
        .into_keys()
        .map(str::to_string)
        .collect();
    partition(renders, &shared, NodeData::Image)
}

/// The paths rendered the same in every one of `renders`, each with that render.
fn identical_paths<'a>(
    renders: impl IntoIterator<Item = &'a (String, Vec<OverlayFile>)>,
) -> BTreeMap<&'a str, &'a OverlayFile> {
    let mut variants: BTreeMap<&str, Vec<&OverlayFile>> = BTreeMap::new();
    for file in renders.into_iter().flat_map(|(_, files)| files) {
        variants.entry(&file.path).or_default().push(file);
    }
    variants
        .into_iter()
        .filter(|(_, files)| files.windows(2).all(|pair| pair[0] == pair[1]))
        .map(|(path, files)| (path, files[0]))
        .collect()
}

/// Files at the `shared` paths go once into the role, the others to each node.
fn partition(
    renders: Vec<(String, Vec<OverlayFile>)>,
    shared: &HashSet<String>,
    node_data: NodeData,
) -> RenderedRole {
    let mut kept: Vec<OverlayFile> = renders
        .first()
        .map(|(_, files)| files.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|file| shared.contains(&file.path))
        .cloned()
        .collect();
    kept.sort_by(|a, b| a.path.cmp(&b.path));
    let per_node = renders
        .into_iter()
        .map(|(node, files)| {
            let own: Vec<OverlayFile> = files
                .into_iter()
                .filter(|file| !shared.contains(&file.path))
                .collect();
            (node, own)
        })
        .filter(|(_, own)| !own.is_empty())
        .collect();
    RenderedRole {
        shared: kept,
        per_node,
        node_data,
    }
}

/// A file that carries a secret must not be readable by everyone.
fn check_secret_modes(
    rendered: &RenderedRole,
    inputs: &Inputs<'_>,
    role: &Role,
) -> Result<(), InvalidInput> {
    let mut diagnostics = Diagnostics::new();
    for file in rendered
        .shared
        .iter()
        .chain(rendered.per_node.values().flatten())
    {
        if file.mode & 0o004 == 0 {
            continue;
        }
        for name in inputs.secrets.found_in(&file.content) {
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
