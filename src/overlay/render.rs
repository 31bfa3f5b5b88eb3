//! Rendering a role's overlay sources: each template once for the role, or once per node
//! when it reads the node ([`super::scope`]); static files are read once. The role's
//! context is built once and only `node` and `tls` change from node to node, so the cost
//! grows with the nodes and what each template writes, never with nodes × nodes.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tera::{Context, Tera};

use super::generated::{ClusterFile, generated_files};
use super::{Inputs, OverlayFile, scope};
use crate::diag::{Diagnostics, Source};
use crate::manifest::Node;
use crate::role::{FileRule, FirewallRule, Role};

const TEMPLATE_SUFFIX: &str = ".tera";

/// One source file of an overlay tree.
struct SourceFile {
    path: String,
    source: PathBuf,
    template: bool,
    executable: bool,
    /// Rendered for each node rather than once for the role.
    per_node: bool,
}

/// A role's overlay sources, parsed and ready to render for any set of nodes.
pub(super) struct Templates<'r> {
    role: &'r Role,
    tera: Tera,
    sources: Vec<SourceFile>,
}

/// A role's rendered files, before they are split between image and nodes.
pub(super) struct Renders {
    /// Files rendered once for the role: static files, templates that do not read the
    /// node, and the files the builder writes itself.
    pub role: Vec<OverlayFile>,
    /// For each node, in order, the files of the templates that read the node.
    pub nodes: Vec<(String, Vec<OverlayFile>)>,
}

impl<'r> Templates<'r> {
    /// Collects and parses the sources of `role`; syntax errors of every template at once.
    pub fn load(data_dir: &Path, role: &'r Role) -> anyhow::Result<Templates<'r>> {
        let mut sources = collect_sources(data_dir, role)?;
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
        for file in sources.iter_mut().filter(|f| f.template) {
            let template = tera.get_template(&file.source.to_string_lossy())?;
            file.per_node = scope::reads_the_node(&template.ast);
        }
        Ok(Templates {
            role,
            tera,
            sources,
        })
    }

    /// Renders the role's files for `nodes`; template problems go to `diagnostics`.
    pub fn render(
        &self,
        inputs: &Inputs<'_>,
        nodes: &[&Node],
        diagnostics: &mut Diagnostics,
    ) -> anyhow::Result<Renders> {
        let mut context = role_context(inputs, self.role)?;
        let mut role_files = self.render_each(inputs, |file| !file.per_node, &context, diagnostics);
        role_files.extend(generated_files(inputs.cluster, self.role)?);
        let pki = inputs.secrets.pki();
        let mut node_files = Vec::with_capacity(nodes.len());
        for node in nodes {
            context.insert("node", node);
            context.insert("tls", &pki.template_context(&node.name, self.role.tls)?);
            let files = self.render_each(inputs, |file| file.per_node, &context, diagnostics);
            node_files.push((node.name.clone(), files));
        }
        Ok(Renders {
            role: role_files,
            nodes: node_files,
        })
    }

    fn render_each(
        &self,
        inputs: &Inputs<'_>,
        chosen: impl Fn(&SourceFile) -> bool,
        context: &Context,
        diagnostics: &mut Diagnostics,
    ) -> Vec<OverlayFile> {
        let mut files = Vec::new();
        for file in self.sources.iter().filter(|file| chosen(file)) {
            match render_file(&self.tera, file, context) {
                Ok(content) => files.push(with_rules(file, content, &inputs.roles.base, self.role)),
                Err(problem) => push_render_problem(diagnostics, file, problem),
            }
        }
        files
    }
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
                    per_node: false,
                },
            );
        }
    }
    Ok(by_path.into_values().collect())
}

/// The template context of the role, as documented in README.md, without the node:
/// `node` and the node's own `tls` fields are added for each node in turn.
fn role_context(inputs: &Inputs<'_>, role: &Role) -> anyhow::Result<Context> {
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
    let mut context = Context::new();
    context.insert("cluster", &ClusterFile::from(cluster));
    context.insert("nodes", &cluster.nodes);
    context.insert("nodes_by_role", &nodes_by_role);
    context.insert("role", role);
    context.insert("roles", &inputs.roles.roles);
    context.insert("firewall", &firewall);
    context.insert("secrets", &secrets);
    context.insert("tls", &inputs.secrets.pki().template_context("", false)?);
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
