//! Outputs: artifacts are written to a staging folder beside `out/<cluster>/` and moved
//! into place only when every role succeeded; `SHA256SUMS` and `manifest.json` are
//! rewritten atomically to cover every published artifact.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::boot_tools::BootTools;
use super::layer::LayerSpec;
use super::{BuildContext, ImageTree, WorkDir};
use crate::fsutil;
use crate::hash::{KeyBuilder, sha256_file};
use crate::manifest::{Format, NodeData};
use crate::overlay::RenderedRole;
use crate::signing::{self, Signer};

/// The cluster's index of published images and seeds, in `out/<cluster>/`.
pub use crate::signing::INDEX;

/// Bumped when the way artifacts are made changes.
const OUTPUT_RECIPE: &str = "4";

/// What `manifest.json` says of one role's image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The role.
    pub role: String,
    /// sha256 of everything the image is made from; equal keys mean equal images (its
    /// identifiers derive from it).
    pub key: String,
    /// The package layers, base first.
    pub layers: Vec<LayerSpec>,
    /// Key of the rendered overlay, the nodes' own files included wherever they go (the
    /// PXE set carries them under `node_data = "seed"`).
    pub overlay_key: String,
    /// sha256 of the `r2a-node` binary inside.
    pub agent_sha256: String,
    /// File times are clamped to this.
    pub source_date_epoch: i64,
    /// Every installed package and its version.
    pub packages: BTreeMap<String, String>,
    /// Vendor packages left out by `vendor = "skip"`.
    pub vendor_skipped: Vec<String>,
    /// Where the nodes' own files went: into the image, or into each node's seed.
    #[serde(default)]
    pub node_data: NodeData,
    /// Whether the image holds cluster secrets (its artifacts are then mode 0600).
    pub contains_secrets: bool,
    /// The version of GRUB in its bootable artifacts, from the image's own Debian release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grub: Option<String>,
    /// The artifacts.
    pub artifacts: Vec<ArtifactRecord>,
    /// The SPDX document of the image's packages.
    #[serde(default)]
    pub sbom: Option<FileRecord>,
}

/// A published file that is not an image (the SBOM).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRecord {
    /// Path relative to `out/<cluster>/`.
    pub path: String,
    /// sha256 of its bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

impl ImageRecord {
    /// Every published file of the image, artifacts and SBOM: (path, sha256).
    pub fn files(&self) -> impl Iterator<Item = (&String, &String)> {
        self.artifacts
            .iter()
            .map(|a| (&a.path, &a.sha256))
            .chain(self.sbom.iter().map(|f| (&f.path, &f.sha256)))
    }
}

/// One output file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// Path relative to `out/<cluster>/`.
    pub path: String,
    /// Its format.
    pub format: Format,
    /// sha256 of its bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// One node's NoCloud seed image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedRecord {
    /// Path relative to `out/<cluster>/`.
    pub path: String,
    /// sha256 of its bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// `out/<cluster>/manifest.json`: every published image and seed; `SHA256SUMS` is
/// written from it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ClusterIndex {
    cluster: String,
    manifest: Option<crate::manifest::ManifestFile>,
    builder: String,
    images: BTreeMap<String, ImageRecord>,
    /// Seeds by node name.
    #[serde(default)]
    pub seeds: BTreeMap<String, SeedRecord>,
}

impl ClusterIndex {
    /// The index in `cluster_out`, or an empty one when there is none yet. A damaged
    /// index is an error, never read as empty: the next write would drop from
    /// `SHA256SUMS` every image it no longer knew.
    pub fn read(cluster_out: &Path) -> anyhow::Result<ClusterIndex> {
        let path = cluster_out.join(INDEX);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ClusterIndex::default());
            }
            Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
        };
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is damaged: it records every image and seed published in {}. Restore it \
                 from a backup, or remove {} and build every role again",
                path.display(),
                cluster_out.display(),
                cluster_out.display()
            )
        })
    }

    /// Every image, by role.
    pub fn images(&self) -> &BTreeMap<String, ImageRecord> {
        &self.images
    }

    /// The published image of `role`, if any.
    pub fn image(&self, role: &str) -> Option<&ImageRecord> {
        self.images.get(role)
    }

    /// Drops entries whose files are gone, then rewrites `manifest.json` and `SHA256SUMS`
    /// atomically; with the cluster's signing key, also
    /// `SHA256SUMS.sig` and `allowed_signers` (without one, a signature left from before
    /// is removed: it no longer matches).
    pub fn write(
        &mut self,
        cluster_out: &Path,
        cluster: &crate::manifest::Cluster,
        signer: Option<&Signer>,
    ) -> anyhow::Result<()> {
        self.images.retain(|_, record| {
            record
                .files()
                .all(|(path, _)| cluster_out.join(path).is_file())
        });
        self.seeds
            .retain(|_, seed| cluster_out.join(&seed.path).is_file());
        self.cluster = cluster.name.clone();
        self.manifest = Some(cluster.manifest.clone());
        self.builder = format!("r2a-image {}", env!("CARGO_PKG_VERSION"));
        let images = self.images.values().flat_map(ImageRecord::files);
        let seeds = self.seeds.values().map(|s| (&s.path, &s.sha256));
        let index = serde_json::to_vec_pretty(self)?;
        // manifest.json is not listed: a boot that adds its node's seed rewrites it, and
        // two files cannot be replaced at once, so a reader could see the old sums with
        // the new index. What it records of each file, the sums cover.
        let mut sums: Vec<(&String, &String)> = images.chain(seeds).collect();
        sums.sort();
        let text: String = sums
            .iter()
            .map(|(path, sha256)| format!("{sha256}  {path}\n"))
            .collect();
        fsutil::write_atomic(&cluster_out.join(INDEX), &index, 0o644)?;
        fsutil::write_atomic(&cluster_out.join(signing::SUMS), text.as_bytes(), 0o644)?;
        let signature = cluster_out.join(signing::SIGNATURE);
        match signer {
            Some(signer) => {
                let armored = signer.sign(text.as_bytes())?;
                fsutil::write_atomic(&signature, armored.as_bytes(), 0o644)?;
                let allowed = signer.allowed_signers()?;
                fsutil::write_atomic(
                    &cluster_out.join(signing::ALLOWED_SIGNERS),
                    allowed.as_bytes(),
                    0o644,
                )
            }
            None if signature.exists() => fsutil::remove_any(&signature),
            None => Ok(()),
        }
    }
}

/// The staging folder of one build and what it holds so far.
pub struct Staging {
    dir: WorkDir,
    /// GRUB's tools, when a format boots.
    boot_tools: Option<BootTools>,
    /// The boot tools' layer key, part of every image's key whether or not this build
    /// makes a format that boots (so an image's identifiers do not depend on its formats).
    boot_tools_key: String,
    previous: ClusterIndex,
    built: Vec<ImageRecord>,
    reused: Vec<ImageRecord>,
}

impl Staging {
    /// A staging folder inside `out/<cluster>/`, so the final moves are renames.
    pub fn new(
        ctx: &BuildContext<'_>,
        base: &LayerSpec,
        boot_tools: Option<BootTools>,
    ) -> anyhow::Result<Staging> {
        let out = ctx.cluster_out();
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let previous = ClusterIndex::read(&out)?;
        Ok(Staging {
            dir: WorkDir::new(&out, ".staging-")?,
            boot_tools,
            boot_tools_key: super::layer::boot_tools_spec(base).key,
            previous,
            built: Vec::new(),
            reused: Vec::new(),
        })
    }

    /// Keeps the published image of a role when nothing it is made from changed and its
    /// artifacts are intact; true when it did.
    pub fn reuse_unchanged(
        &mut self,
        ctx: &BuildContext<'_>,
        layer: &LayerSpec,
        overlay: &RenderedRole,
        role: &str,
    ) -> anyhow::Result<bool> {
        let stage = ctx.progress.stage(format!("{role}: check published image"));
        let key = artifact_key(ctx, layer, overlay, &self.boot_tools_key);
        let overlay_key = overlay.key();
        let Some(record) = self
            .previous
            .images
            .get(role)
            .filter(|r| r.key == key && r.overlay_key == overlay_key)
        else {
            stage.finish("changed");
            return Ok(false);
        };
        let out = ctx.cluster_out();
        let wanted: BTreeSet<Format> = ctx.formats.iter().copied().collect();
        let published: BTreeSet<Format> = record.artifacts.iter().map(|a| a.format).collect();
        let complete = wanted == published;
        let intact = complete
            && record.sbom.is_some()
            && record
                .files()
                .all(|(path, sha256)| sha256_file(&out.join(path)).is_ok_and(|sum| &sum == sha256));
        if intact {
            self.reused.push(record.clone());
            stage.finish("unchanged, kept");
        } else {
            stage.finish("changed");
        }
        Ok(intact)
    }

    /// Writes a role's artifacts into the staging folder and records them.
    pub fn write_outputs(
        &mut self,
        ctx: &BuildContext<'_>,
        tree: &ImageTree,
        layers: &[&LayerSpec],
        overlay: &RenderedRole,
        role: &str,
    ) -> anyhow::Result<()> {
        let contains_secrets = contains_secrets(ctx, overlay);
        let mode = if contains_secrets { 0o600 } else { 0o644 };
        let dir = self.dir.path().join(role);
        std::fs::create_dir_all(&dir)?;
        let key = artifact_key(
            ctx,
            layers.last().expect("a role has layers"),
            overlay,
            &self.boot_tools_key,
        );
        let mut outputs = super::formats::outputs::RoleOutputs::new(
            tree,
            self.boot_tools.as_ref(),
            role,
            &dir,
            &key,
        );
        let mut artifacts = Vec::new();
        for format in &ctx.formats {
            crate::interrupt::check()?;
            let stage = ctx.progress.stage(format!("{role}: {}", format.name()));
            if *format == Format::Tar {
                stage.bytes(tree_size(&tree.root));
            }
            let (files, note) = outputs.write(ctx, *format, &|bytes| stage.advance(bytes))?;
            let mut total = 0;
            for file in files {
                let path = dir.join(&file.path);
                fsutil::set_mode(&path, if file.private { 0o600 } else { mode })?;
                let size = std::fs::metadata(&path)?.len();
                total += size;
                artifacts.push(ArtifactRecord {
                    path: format!("{role}/{}", file.path),
                    format: file.format,
                    sha256: sha256_file(&path)?,
                    size,
                });
            }
            stage.finish(&format!(
                "{}, {note}",
                bytesize::ByteSize(total).display().iec()
            ));
        }
        let sbom = write_sbom(ctx, tree, layers, role, &key, &dir)?;
        let layer = layers.last().expect("a role has layers");
        self.built.push(ImageRecord {
            role: role.to_string(),
            key,
            layers: layers.iter().map(|spec| (*spec).clone()).collect(),
            overlay_key: overlay.key(),
            agent_sha256: ctx.agent_sha256.clone(),
            source_date_epoch: ctx.source_date_epoch,
            packages: installed_packages(&tree.root)?,
            sbom: Some(sbom),
            vendor_skipped: layer.vendor_skipped.clone(),
            node_data: overlay.node_data,
            contains_secrets,
            grub: self
                .boot_tools
                .as_ref()
                .map(|tools| tools.grub_version.clone()),
            artifacts,
        });
        Ok(())
    }

    /// Moves the new images into place and rewrites `manifest.json` and `SHA256SUMS`.
    pub fn publish(self, ctx: &BuildContext<'_>) -> anyhow::Result<Vec<ImageRecord>> {
        crate::interrupt::check()?;
        let out = ctx.cluster_out();
        let mut manifest = self.previous;
        for record in &self.built {
            let target = out.join(&record.role);
            if target.exists() {
                // Moved into the staging folder, which is removed below.
                std::fs::rename(
                    &target,
                    self.dir.path().join(format!(".old-{}", record.role)),
                )?;
            }
            std::fs::rename(self.dir.path().join(&record.role), &target).with_context(|| {
                format!("moving the {} image into {}", record.role, out.display())
            })?;
        }
        for record in self.built.iter().chain(&self.reused) {
            manifest.images.insert(record.role.clone(), record.clone());
        }
        let signer = ctx.project.signer()?;
        manifest.write(&out, &ctx.project.cluster, signer.as_ref())?;
        Ok(self.built.into_iter().chain(self.reused).collect())
    }
}

/// The image's key: what its contents and identifiers derive from. The formats are not in
/// it (a disk has the same identifiers whatever else is built beside it); they are
/// compared on their own before an image is kept.
fn artifact_key(
    ctx: &BuildContext<'_>,
    layer: &LayerSpec,
    overlay: &RenderedRole,
    boot_tools_key: &str,
) -> String {
    KeyBuilder::new()
        .add("recipe", OUTPUT_RECIPE)
        .add("layer", &layer.key)
        .add("boot-tools", boot_tools_key)
        .add("overlay", overlay.image_key())
        .add("agent", &ctx.agent_sha256)
        .add("epoch", ctx.source_date_epoch.to_string())
        .finish()
}

fn contains_secrets(ctx: &BuildContext<'_>, overlay: &RenderedRole) -> bool {
    let finder = ctx.project.secrets.finder();
    overlay
        .image_files()
        .iter()
        .any(|file| !finder.found_in(&file.content).is_empty())
}

fn tree_size(root: &Path) -> u64 {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file())
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len())
        .sum()
}

/// Writes the image's SPDX document beside its artifacts and records it.
fn write_sbom(
    ctx: &BuildContext<'_>,
    tree: &ImageTree,
    layers: &[&LayerSpec],
    role: &str,
    key: &str,
    dir: &Path,
) -> anyhow::Result<FileRecord> {
    let stage = ctx.progress.stage(format!("{role}: sbom"));
    let vendor_packages = layers
        .iter()
        .flat_map(|layer| layer.vendor_packages.iter().cloned())
        .collect();
    let image = crate::sbom::ImageInfo {
        cluster: &ctx.project.cluster.name,
        role,
        key,
        created: ctx.source_date_epoch,
        vendor_packages: &vendor_packages,
    };
    let path = dir.join(crate::sbom::FILE_NAME);
    let count = crate::sbom::write(&tree.root, &image, &path)?;
    let size = std::fs::metadata(&path)?.len();
    stage.finish(&format!(
        "SPDX 2.3, {count} packages, {}",
        bytesize::ByteSize(size).display().iec()
    ));
    Ok(FileRecord {
        path: format!("{role}/{}", crate::sbom::FILE_NAME),
        sha256: sha256_file(&path)?,
        size,
    })
}

/// Installed packages and versions, from the tree's dpkg database (`name:arch` for
/// packages of a foreign architecture).
pub fn installed_packages(root: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    Ok(crate::sbom::installed(root)?
        .into_iter()
        .map(|package| {
            let name = match package.architecture.as_str() {
                "all" | "amd64" => package.name,
                arch => format!("{}:{arch}", package.name),
            };
            (name, package.version)
        })
        .collect())
}
