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
const RECIPE_VERSION: &str = "3";

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
    /// `SOURCE_DATE_EPOCH` while the layer is made: what the packages' scripts generate
    /// (the kernel's initramfs, the shadow files' dates) carries it, not the clock.
    /// Absent from the records of older caches, whose layers no key names any more.
    #[serde(default)]
    pub source_date_epoch: i64,
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
    let source_date_epoch = cluster.source_date_epoch()?;
    let key = KeyBuilder::new()
        .add("recipe", RECIPE_VERSION)
        .add("source-date-epoch", source_date_epoch.to_string())
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
        source_date_epoch,
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
        source_date_epoch: base.source_date_epoch,
    })
}

/// The boot tools' layer: the base plus GRUB and what it runs, in no image.
pub fn boot_tools_spec(base: &LayerSpec) -> LayerSpec {
    let packages: Vec<String> = super::boot_tools::PACKAGES
        .iter()
        .map(|name| name.to_string())
        .collect();
    LayerSpec {
        name: "boot-tools".to_string(),
        key: KeyBuilder::new()
            .add("recipe", RECIPE_VERSION)
            .add("parent", &base.key)
            .add_list("packages", &packages)
            .finish(),
        packages,
        vendor_packages: Vec::new(),
        vendor_skipped: Vec::new(),
        tool: None,
        parent: Some(base.key.clone()),
        source_date_epoch: base.source_date_epoch,
    }
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

/// Writes the digest of `tree` beside it ([`CONTENTS_STAMP`]).
pub fn record_contents(tree: &Path) -> anyhow::Result<()> {
    let digest = contents_digest(tree)?;
    let stamp = tree.with_file_name(CONTENTS_STAMP);
    std::fs::write(&stamp, format!("{digest}\n"))
        .with_context(|| format!("writing {}", stamp.display()))
}

/// The digest of a tree's listing: each entry's path, type, mode, size and link target,
/// in name order.
pub fn contents_digest(tree: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let mut key = KeyBuilder::new();
    for entry in walkdir::WalkDir::new(tree).sort_by_file_name() {
        let entry = entry.with_context(|| format!("reading {}", tree.display()))?;
        let metadata = entry.metadata()?;
        let kind = metadata.file_type();
        let target = if kind.is_symlink() {
            std::fs::read_link(entry.path())?
                .to_string_lossy()
                .into_owned()
        } else {
            String::new()
        };
        let size = if kind.is_file() { metadata.len() } else { 0 };
        let path = entry.path().strip_prefix(tree)?.to_string_lossy();
        key = key.add(&path, format!("{:o} {size} {target}", metadata.mode()));
    }
    Ok(key.finish())
}

/// The file whose time says when a build last used a cached layer.
pub const USED_STAMP: &str = "used";
/// The lock file in the cache folder (see [`CacheLock`]).
const LOCK_FILE: &str = "lock";

/// An exclusive lock on a cache folder, held while layers are built: the layer store and
/// the shared apt archive take one build at a time. A second build waits for it
/// (checking for Ctrl-C while it waits), then looks for the layer again: the first may
/// have built it. The lock goes with the process, however it ends.
#[derive(Debug)]
pub struct CacheLock {
    _file: std::fs::File,
}

impl CacheLock {
    /// Takes the lock of `cache`; `on_wait` is called once if another build holds it.
    pub fn acquire(cache: &Path, on_wait: impl FnOnce()) -> anyhow::Result<CacheLock> {
        use rustix::fs::{FlockOperation, flock};
        std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
        let path = cache.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut on_wait = Some(on_wait);
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(CacheLock { _file: file }),
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    if let Some(on_wait) = on_wait.take() {
                        on_wait();
                    }
                    crate::interrupt::check()?;
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Err(error) => {
                    return Err(error).with_context(|| format!("locking {}", path.display()));
                }
            }
        }
    }
}
/// The digest of a cached layer's tree listing, written when the layer is committed.
pub const CONTENTS_STAMP: &str = "contents.sha256";

/// What the store holds for a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// The layer, whole: its record names the key and its tree matches its digest.
    Whole,
    /// Nothing (or another key's layer).
    Missing,
    /// A record without a matching tree: a file was cut short, removed or added.
    Damaged(String),
}

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

    /// A whole cached layer with the same content key as `spec` under another name: two
    /// roles that install the same packages (admin, api and telephony without vendor
    /// packages) have one layer's worth of work between them.
    pub fn twin(&self, spec: &LayerSpec) -> anyhow::Result<Option<LayerSpec>> {
        let suffix = format!("-{}", &spec.key[..16]);
        let own = folder_name(spec);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(None);
        };
        for entry in entries {
            let folder = entry?.file_name().to_string_lossy().into_owned();
            if folder == own || folder.starts_with('.') || !folder.ends_with(&suffix) {
                continue;
            }
            let record = self.dir.join(&folder).join("layer.json");
            let Some(other) = std::fs::read(&record)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<LayerSpec>(&bytes).ok())
            else {
                continue;
            };
            if other.key == spec.key
                && folder_name(&other) == folder
                && let Cached::Whole = self.check(&other)?
            {
                return Ok(Some(other));
            }
        }
        Ok(None)
    }

    /// Whether the layer is cached: its record exists and names the same key.
    pub fn contains(&self, spec: &LayerSpec) -> bool {
        let record = self.tree(spec).with_file_name("layer.json");
        std::fs::read(&record)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<LayerSpec>(&bytes).ok())
            .is_some_and(|cached| cached.key == spec.key)
    }

    /// Whether the layer is cached and whole. The digest covers every entry's path,
    /// type, mode, size and link target (not the bytes: reading a whole tree on every
    /// build would cost more than the cache saves), which catches a file cut short,
    /// removed or added. A layer of an older cache without a digest gets one now.
    pub fn check(&self, spec: &LayerSpec) -> anyhow::Result<Cached> {
        if !self.contains(spec) {
            return Ok(Cached::Missing);
        }
        let tree = self.tree(spec);
        let stamp = self.folder(spec).join(CONTENTS_STAMP);
        let Ok(recorded) = std::fs::read_to_string(&stamp) else {
            record_contents(&tree)?;
            return Ok(Cached::Whole);
        };
        let now = contents_digest(&tree)?;
        Ok(if recorded.trim() == now {
            Cached::Whole
        } else {
            Cached::Damaged(format!(
                "{} no longer matches the digest of its files",
                tree.display()
            ))
        })
    }
}

#[cfg(test)]
#[path = "layer_tests.rs"]
mod tests;
