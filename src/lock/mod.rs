//! `r2a.lock`, beside the manifest: every package each layer installed, with its version,
//! architecture and sha256. A plain build writes it; `build --locked` refuses to start
//! when the mirror would now give other packages, naming each one that moved; `plan`
//! shows the same drift.

pub mod mirror;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The lock's file name, in the manifest's folder.
pub const FILE_NAME: &str = "r2a.lock";
/// The list of a cached layer's packages, in the layer's folder.
const PACKAGES_FILE: &str = "packages.lock.json";

/// One installed package, as locked.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LockedPackage {
    /// Package name.
    pub name: String,
    /// Version, epoch included.
    pub version: String,
    /// Architecture.
    pub architecture: String,
    /// sha256 of the `.deb` file.
    pub sha256: String,
}

/// The packages one layer added to its parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedLayer {
    /// `base` or the role.
    pub name: String,
    /// The layer's key when it was locked.
    pub key: String,
    /// Its packages, by name.
    pub packages: Vec<LockedPackage>,
}

/// The whole lock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Layers, base first, then roles by name.
    #[serde(rename = "layer", default)]
    pub layers: Vec<LockedLayer>,
}

/// Where the lock of `manifest` is.
pub fn path_for(manifest: &Path) -> PathBuf {
    manifest.with_file_name(FILE_NAME)
}

impl Lock {
    /// The lock beside `manifest`; `None` when there is none yet.
    pub fn read(manifest: &Path) -> anyhow::Result<Option<Lock>> {
        let path = path_for(manifest);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
        };
        toml::from_str(&text).map(Some).map_err(|error| {
            crate::diag::UsageError(format!(
                "{}: {error}\n  = hint: the lock is written by `r2a-image build`; restore it from version control or remove it and build again",
                path.display()
            ))
            .into()
        })
    }

    /// Puts `layers` in, replacing the entries of the same names.
    pub fn update(&mut self, layers: impl IntoIterator<Item = LockedLayer>) {
        for layer in layers {
            self.layers.retain(|kept| kept.name != layer.name);
            self.layers.push(layer);
        }
        self.layers
            .sort_by(|a, b| (a.name != "base", &a.name).cmp(&(b.name != "base", &b.name)));
    }

    /// Writes the lock beside `manifest` (atomically, world-readable: it holds no secret).
    pub fn write(&self, manifest: &Path) -> anyhow::Result<()> {
        let manifest_name = manifest.file_name().unwrap_or_default().to_string_lossy();
        let text = format!(
            "# The packages each layer of {manifest_name} installed, written by `r2a-image build`.\n\
             # `r2a-image build --locked` refuses to build when the mirror would give others.\n\n{}",
            toml::to_string_pretty(self)?
        );
        crate::fsutil::write_atomic(&path_for(manifest), text.as_bytes(), 0o644)
    }

    /// The locked packages of the layers named in `layers`.
    pub fn packages_of<'a>(
        &'a self,
        layers: &'a BTreeSet<String>,
    ) -> impl Iterator<Item = (&'a str, &'a LockedPackage)> + 'a {
        self.layers
            .iter()
            .filter(move |layer| layers.contains(&layer.name))
            .flat_map(|layer| layer.packages.iter().map(move |p| (layer.name.as_str(), p)))
    }
}

/// A locked package that a build would not install as locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The layer that locked it.
    pub layer: String,
    /// What the lock says.
    pub locked: LockedPackage,
    /// Where the build would take it from: `the mirror` or `the cached layer`.
    pub source: &'static str,
    /// What that source has (version, sha256), if it has the package at all.
    pub now: Option<(String, String)>,
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let locked = &self.locked;
        write!(
            f,
            "{}: {} {} ({}) is locked; ",
            self.layer, locked.name, locked.version, locked.architecture
        )?;
        match &self.now {
            Some((version, _)) if *version != locked.version => {
                write!(f, "{} has {version}", self.source)
            }
            Some((_, sha256)) => write!(
                f,
                "{} has a file with another sha256 ({} instead of {})",
                self.source,
                short(sha256),
                short(&locked.sha256)
            ),
            None => write!(f, "{} does not have it", self.source),
        }
    }
}

fn short(sha256: &str) -> &str {
    &sha256[..sha256.len().min(12)]
}

/// How a lock stands against the layers a build would make and what the sources give now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LockStatus {
    /// The lock's path.
    pub path: PathBuf,
    /// Layers the lock has no entry for.
    pub missing: Vec<String>,
    /// Layers whose package list changed since the lock was written (their key moved).
    pub changed: Vec<String>,
    /// Locked packages the sources no longer give as locked, one line each.
    pub drift: Vec<String>,
}

impl LockStatus {
    /// Whether a build would install exactly what the lock says.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.changed.is_empty() && self.drift.is_empty()
    }

    /// One line per difference.
    pub fn lines(&self) -> Vec<String> {
        let missing = self
            .missing
            .iter()
            .map(|layer| format!("{layer}: not in the lock"));
        let changed = self
            .changed
            .iter()
            .map(|layer| format!("{layer}: its package list changed since the lock was written"));
        missing
            .chain(changed)
            .chain(self.drift.iter().cloned())
            .collect()
    }
}

/// One layer of a build as the lock check sees it: its spec, and its packages when the
/// cache holds it whole (the build takes it as it is, not from the mirror).
pub type LayerState<'a> = (&'a crate::pipeline::LayerSpec, Option<Vec<LockedPackage>>);

/// Compares the lock of `manifest` with the layers of a build: a cached layer with its
/// own packages, a layer to build with what the cluster's sources give now (fetching
/// their indexes into `state`). `None` without a lock.
pub fn status(
    cluster: &crate::manifest::Cluster,
    layers: &[LayerState<'_>],
    state: &Path,
) -> anyhow::Result<Option<LockStatus>> {
    let manifest = &cluster.manifest.path;
    let Some(lock) = Lock::read(manifest)? else {
        return Ok(None);
    };
    let mut status = LockStatus {
        path: path_for(manifest),
        ..LockStatus::default()
    };
    let mut from_mirror = BTreeSet::new();
    let mut drifts = Vec::new();
    for (spec, cached) in layers {
        match lock.layers.iter().find(|layer| layer.name == spec.name) {
            None => status.missing.push(spec.name.clone()),
            Some(locked) if locked.key != spec.key => status.changed.push(spec.name.clone()),
            Some(locked) => match cached {
                None => {
                    from_mirror.insert(spec.name.clone());
                }
                Some(packages) => {
                    let only_this = BTreeSet::from([spec.name.clone()]);
                    let has = as_available(packages);
                    drifts.extend(drift(&lock, &only_this, &has, "the cached layer"));
                    let locked_names: BTreeSet<&str> =
                        locked.packages.iter().map(|p| p.name.as_str()).collect();
                    for extra in packages
                        .iter()
                        .filter(|p| !locked_names.contains(p.name.as_str()))
                    {
                        status.drift.push(format!(
                            "{}: {} {} is in the cached layer but not in the lock",
                            spec.name, extra.name, extra.version
                        ));
                    }
                }
            },
        }
    }
    if !from_mirror.is_empty() {
        let names: BTreeSet<&str> = lock
            .packages_of(&from_mirror)
            .map(|(_, package)| package.name.as_str())
            .collect();
        let names: Vec<&str> = names.into_iter().collect();
        let available = mirror::available(cluster, state, &names)?;
        drifts.extend(drift(&lock, &from_mirror, &available, "the mirror"));
    }
    status.drift.extend(drifts.iter().map(ToString::to_string));
    Ok(Some(status))
}

/// Each layer of a build (base first) with its packages when the cache holds it whole.
pub fn layer_states<'a>(
    store: &crate::pipeline::LayerStore,
    archives: &Path,
    specs: &'a [crate::pipeline::LayerSpec],
) -> anyhow::Result<Vec<LayerState<'a>>> {
    let base_tree = specs.first().map(|base| store.tree(base));
    let mut states = Vec::new();
    for spec in specs {
        let parent = spec.parent.as_ref().and(base_tree.as_deref());
        let cached = match store.check(spec)? {
            crate::pipeline::layer::Cached::Whole => {
                Some(cached_layer_packages(store, spec, parent, archives)?)
            }
            _ => None,
        };
        states.push((spec, cached));
    }
    Ok(states)
}

fn as_available(packages: &[LockedPackage]) -> mirror::Available {
    packages
        .iter()
        .map(|p| (p.name.clone(), (p.version.clone(), p.sha256.clone())))
        .collect()
}

/// The packages of a cached layer (see [`layer_packages`]), kept in its folder: reading
/// every `.deb` again on each build would cost seconds.
pub fn cached_layer_packages(
    store: &crate::pipeline::LayerStore,
    spec: &crate::pipeline::LayerSpec,
    parent_tree: Option<&Path>,
    archives: &Path,
) -> anyhow::Result<Vec<LockedPackage>> {
    let cached = store.folder(spec).join(PACKAGES_FILE);
    if let Some(packages) = std::fs::read(&cached)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
    {
        return Ok(packages);
    }
    let packages = layer_packages(&store.tree(spec), parent_tree, archives)?;
    crate::fsutil::write_atomic(&cached, &serde_json::to_vec(&packages)?, 0o644)?;
    Ok(packages)
}

/// The packages a layer tree has that its parent's tree lacks (in that version), each
/// with the sha256 of its `.deb`: from the shared apt archive the layer was installed
/// from, else from the package indexes in the tree (the vendor's local packages); empty
/// when neither has it.
pub fn layer_packages(
    tree: &Path,
    parent: Option<&Path>,
    archives: &Path,
) -> anyhow::Result<Vec<LockedPackage>> {
    let inherited: BTreeSet<(String, String)> = match parent {
        Some(parent) => crate::sbom::installed(parent)?
            .into_iter()
            .map(|package| (package.name, package.version))
            .collect(),
        None => BTreeSet::new(),
    };
    let shas = mirror::index_sha256s(&tree.join("var/lib/apt/lists"))?;
    let mut packages = Vec::new();
    for package in crate::sbom::installed(tree)? {
        let id = (package.name.clone(), package.version.clone());
        if inherited.contains(&id) {
            continue;
        }
        // apt's file name for a version: the epoch's colon is written `%3a`.
        let deb = archives.join(format!(
            "{}_{}_{}.deb",
            package.name,
            package.version.replace(':', "%3a"),
            package.architecture
        ));
        let sha256 = if deb.is_file() {
            crate::hash::sha256_file(&deb)?
        } else {
            shas.get(&id).cloned().unwrap_or_default()
        };
        packages.push(LockedPackage {
            name: package.name,
            version: package.version,
            architecture: package.architecture,
            sha256,
        });
    }
    Ok(packages)
}

/// What moved between the lock and what the sources give now (`available`: by package
/// name, the version and sha256 an install would take). A package locked without a
/// sha256 is compared by version.
pub fn drift(
    lock: &Lock,
    layers: &BTreeSet<String>,
    available: &BTreeMap<String, (String, String)>,
    source: &'static str,
) -> Vec<Drift> {
    lock.packages_of(layers)
        .filter_map(|(layer, locked)| {
            let now = available.get(&locked.name).cloned();
            let same = now.as_ref().is_some_and(|(version, sha256)| {
                *version == locked.version && (locked.sha256.is_empty() || *sha256 == locked.sha256)
            });
            (!same).then(|| Drift {
                layer: layer.to_string(),
                locked: locked.clone(),
                source,
                now,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
