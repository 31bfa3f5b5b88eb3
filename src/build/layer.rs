//! Package layers and their content keys: a layer is cached under the sha256 of everything
//! that feeds it, so an overlay or template edit never rebuilds one.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::exec::{CommandExt, find_program};
use crate::hash::{KeyBuilder, sha256_file};
use crate::manifest::{Bootstrap, Cluster, Vendor};
use crate::role::{Role, RoleSet};

/// Bumped whenever the way a layer is made changes, so old cache entries stop matching.
const RECIPE_VERSION: &str = "1";

/// What one layer is made of, and its key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerSpec {
    /// `base` or the role's name.
    pub name: String,
    /// sha256 of every input, including the parent's key.
    pub key: String,
    /// Debian packages installed by this layer.
    pub packages: Vec<String>,
    /// Vendor packages installed by this layer.
    pub vendor_packages: Vec<String>,
    /// Vendor packages left out because the manifest says `vendor = "skip"`.
    pub vendor_skipped: Vec<String>,
    /// The bootstrap tool and its version (base layer only).
    pub tool: Option<String>,
    /// The parent layer's key.
    pub parent: Option<String>,
}

/// The base layer: the bootstrap tool's output with the common packages.
pub fn base_spec(
    cluster: &Cluster,
    roles: &RoleSet,
    bootstrap: Bootstrap,
) -> anyhow::Result<LayerSpec> {
    let tool = tool_version(bootstrap)?;
    let debian = &cluster.debian;
    let packages = roles.base.packages.debian.clone();
    let key = KeyBuilder::new()
        .add("recipe", RECIPE_VERSION)
        .add("suite", &debian.suite)
        .add_list("sources", &debian.sources)
        .add("architecture", &debian.architecture)
        .add_list("components", &debian.components)
        .add_list("packages", &packages)
        .add("tool", &tool);
    let key = add_prepare_files(key, &roles.base).finish();
    Ok(LayerSpec {
        name: "base".to_string(),
        key,
        packages,
        vendor_packages: Vec::new(),
        vendor_skipped: Vec::new(),
        tool: Some(tool),
        parent: None,
    })
}

/// A role layer: the base plus the role's packages.
pub fn role_spec(cluster: &Cluster, base: &LayerSpec, role: &Role) -> anyhow::Result<LayerSpec> {
    let (vendor_packages, vendor_skipped) = match &cluster.vendor {
        Vendor::Skip => (Vec::new(), role.packages.vendor.clone()),
        Vendor::Sources { .. } | Vendor::Undeclared => (role.packages.vendor.clone(), Vec::new()),
    };
    let mut key = KeyBuilder::new()
        .add("recipe", RECIPE_VERSION)
        .add("parent", &base.key)
        .add_list("packages", &role.packages.debian)
        .add_list("vendor-packages", &vendor_packages);
    key = add_prepare_files(key, role);
    if !vendor_packages.is_empty() {
        key = key.add("vendor-sources", vendor_sources_key(&cluster.vendor)?);
    }
    Ok(LayerSpec {
        name: role.name.clone(),
        key: key.finish(),
        packages: role.packages.debian.clone(),
        vendor_packages,
        vendor_skipped,
        tool: None,
        parent: Some(base.key.clone()),
    })
}

fn add_prepare_files(mut key: KeyBuilder, role: &Role) -> KeyBuilder {
    for file in &role.prepare {
        key = key
            .add("prepare-path", &file.path)
            .add("prepare-content", &file.content)
            .add("prepare-mode", format!("{:o}", file.mode()));
    }
    key
}

/// Vendor sources feed the key by what they are (URL, suite, key bytes, the .deb files),
/// never by their credentials.
fn vendor_sources_key(vendor: &Vendor) -> anyhow::Result<String> {
    let Vendor::Sources { apt, local } = vendor else {
        return Ok(String::new());
    };
    let mut key = KeyBuilder::new();
    for repo in apt {
        key = key
            .add("uri", &repo.uri)
            .add("suite", &repo.suite)
            .add_list("components", &repo.components)
            .add("signing-key", sha256_file(&repo.signing_key)?);
    }
    for folder in local {
        for deb in debs_in(folder)? {
            key = key
                .add(
                    "deb",
                    deb.file_name().unwrap_or_default().as_encoded_bytes(),
                )
                .add("sha256", sha256_file(&deb)?);
        }
    }
    Ok(key.finish())
}

/// The `.deb` files of a folder, sorted.
pub fn debs_in(folder: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut debs: Vec<PathBuf> = std::fs::read_dir(folder)
        .with_context(|| format!("reading {}", folder.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .collect();
    debs.sort();
    Ok(debs)
}

/// `mmdebstrap 1.3.5` or `debootstrap 1.0.128+nmu2+deb12u2`; "not installed" when missing,
/// so `plan` works on a machine without the tool.
fn tool_version(bootstrap: Bootstrap) -> anyhow::Result<String> {
    let name = bootstrap.command();
    if find_program(name).is_none() {
        return Ok(format!("{name} (not installed)"));
    }
    let version = match bootstrap {
        Bootstrap::Mmdebstrap => Command::new(name).arg("--version").output_text()?,
        Bootstrap::Debootstrap => Command::new("dpkg-query")
            .args(["-W", "-f", "${Version}", "debootstrap"])
            .output_text()?,
    };
    let version = version.trim().trim_start_matches(name).trim();
    Ok(format!("{name} {version}"))
}

/// The file whose time says when a build last used a cached layer.
pub const USED_STAMP: &str = "used";

/// The name of a layer's folder in the store: `<layer>-<first 16 hex of its key>`.
pub fn folder_name(spec: &LayerSpec) -> String {
    format!("{}-{}", spec.name, &spec.key[..16])
}

/// The folder of cached layers.
#[derive(Debug, Clone)]
pub struct LayerStore {
    /// `<cache>/layers`.
    pub dir: PathBuf,
}

impl LayerStore {
    /// The store under a cache folder.
    pub fn new(cache: &Path) -> Self {
        LayerStore {
            dir: cache.join("layers"),
        }
    }

    /// The folder of a layer: its tree, its record and its last-use stamp.
    pub fn folder(&self, spec: &LayerSpec) -> PathBuf {
        self.dir.join(folder_name(spec))
    }

    /// Where a layer's tree is (or will be).
    pub fn tree(&self, spec: &LayerSpec) -> PathBuf {
        self.folder(spec).join("rootfs")
    }

    /// Stamps the layer as used now (`cache prune` keeps the most recently used).
    pub fn mark_used(&self, spec: &LayerSpec) -> anyhow::Result<()> {
        let stamp = self.folder(spec).join(USED_STAMP);
        std::fs::File::create(&stamp)
            .and_then(|file| file.set_modified(std::time::SystemTime::now()))
            .with_context(|| format!("stamping {}", stamp.display()))
    }

    /// Whether the layer is cached: its record exists and names the same key.
    pub fn contains(&self, spec: &LayerSpec) -> bool {
        let record = self.tree(spec).with_file_name("layer.json");
        std::fs::read(&record)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<LayerSpec>(&bytes).ok())
            .is_some_and(|cached| cached.key == spec.key)
    }
}
