//! The build pipeline: manifest → base layer → role layers → overlay → finalize → outputs.
//!
//! [`build`] reads top to bottom as the list of stages; each stage lives in its own module
//! and returns at once when it has nothing to do (a cached layer, an unchanged artifact).

// The stages, in the order `build` runs them, and what they share.
mod assemble;
pub mod boot_tools;
mod bootstrap;
pub mod chroot;
mod draft;
mod finalize;
pub mod layer;
mod locking;
pub mod mounts;
mod packages;
mod publish;
mod vendor;
mod work;

// What writes each artifact from a finished tree.
pub mod formats;

use std::path::PathBuf;

use anyhow::Context;

use crate::exec::{Tool, require_tools};
use crate::manifest::{Bootstrap, Format};
use crate::overlay::RenderedRole;
use crate::progress::Progress;
use crate::project::Project;
pub use layer::{LayerSpec, LayerStore};
pub use mounts::PrivateMounts;
pub use publish::{ArtifactRecord, ClusterIndex, ImageRecord, SeedRecord};
pub use work::WorkDir;

/// The shared apt archive's folder in a build cache.
pub const APT_ARCHIVES_DIR: &str = "apt-archives";

/// What to build and where.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Roles to build; every role with nodes when empty.
    pub roles: Vec<String>,
    /// Formats to write; the manifest's when empty.
    pub formats: Vec<Format>,
    /// Overrides the manifest's bootstrap tool.
    pub bootstrap: Option<Bootstrap>,
    /// The output folder; the cluster's images go to `<out>/<cluster>/`.
    pub out: PathBuf,
    /// The cache folder (layers, apt archives, work trees).
    pub cache: PathBuf,
    /// The `r2a-node` binary installed into every image.
    pub agent: PathBuf,
    /// Rebuild package layers even when cached (the mirror moved on).
    pub refresh: bool,
    /// Size of disk images in bytes; the tree plus headroom when unset.
    pub disk_size: Option<u64>,
    /// Refuse to build unless the sources give exactly what the lock says (`--locked`).
    pub locked: bool,
    /// The builder's own mount namespace, where layers are drafted on overlay mounts.
    pub private_mounts: PrivateMounts,
}

/// Everything one build knows, shared by its stages.
pub struct BuildContext<'a> {
    /// The loaded cluster, roles, secrets and data folder.
    pub project: &'a Project,
    /// The options.
    pub options: &'a BuildOptions,
    /// The formats to write.
    pub formats: Vec<Format>,
    /// The bootstrap tool.
    pub bootstrap: Bootstrap,
    /// The layer cache.
    pub layers: LayerStore,
    /// The shared apt archive.
    pub apt_archives: PathBuf,
    /// Where work trees are made (on the cache's filesystem, so renames are cheap).
    pub work: PathBuf,
    /// Progress display.
    pub progress: Progress,
    /// The agent binary's sha256.
    pub agent_sha256: String,
    /// File times are clamped to this.
    pub source_date_epoch: i64,
}

/// Builds the images of the chosen roles; returns what was published.
pub fn build(
    project: &Project,
    options: &BuildOptions,
    progress: Progress,
) -> anyhow::Result<Vec<ImageRecord>> {
    let roles = project.roles_to_build(&options.roles)?;
    crate::fsutil::use_artifact_umask();
    let ctx = BuildContext::new(project, options, progress)?;
    preflight(&ctx)?;
    locking::check_locked(&ctx, &roles)?;
    let base = bootstrap::base_layer(&ctx)?;
    let boot_tools = boot_tools::boot_tools(&ctx, &base)?;
    let mut layers = vec![base.clone()];
    if boot_tools.is_some() {
        layers.push(layer::boot_tools_spec(&base));
    }
    let role_layers = packages::role_layers(&ctx, &base, &roles)?;
    let mut staging = publish::Staging::new(&ctx, &base, boot_tools)?;
    for (role, layer) in roles.iter().zip(role_layers) {
        crate::interrupt::check()?;
        let overlay = project.render(role)?;
        layers.push(layer.clone());
        if staging.reuse_unchanged(&ctx, &layer, &overlay, role)? {
            continue;
        }
        let tree = assemble::assemble(&ctx, &layer, &overlay, role)?;
        finalize::finalize(&ctx, &tree, role)?;
        staging.write_outputs(&ctx, &tree, &[&base, &layer], &overlay, role)?;
    }
    let published = staging.publish(&ctx)?;
    locking::record(&ctx, &layers)?;
    Ok(published)
}

impl<'a> BuildContext<'a> {
    fn new(
        project: &'a Project,
        options: &'a BuildOptions,
        progress: Progress,
    ) -> anyhow::Result<Self> {
        let cluster = &project.cluster;
        let source_date_epoch = cluster.source_date_epoch()?;
        let agent_sha256 = crate::hash::sha256_file(&options.agent).with_context(|| {
            format!(
                "reading the r2a-node binary {}; build it with `cargo build --release`",
                options.agent.display()
            )
        })?;
        Ok(BuildContext {
            project,
            options,
            formats: Format::chosen(&options.formats, &cluster.build.formats),
            bootstrap: options.bootstrap.unwrap_or(cluster.build.bootstrap),
            layers: LayerStore::new(&options.cache),
            apt_archives: options.cache.join(APT_ARCHIVES_DIR),
            work: options.cache.join("work"),
            progress,
            agent_sha256,
            source_date_epoch,
        })
    }

    /// The folder of this cluster's published images.
    pub fn cluster_out(&self) -> PathBuf {
        self.options.out.join(&self.project.cluster.name)
    }
}

/// Takes the cache's lock for building a layer, saying so when another build holds it.
fn lock_cache(
    ctx: &BuildContext<'_>,
    stage: &crate::progress::Stage,
) -> anyhow::Result<layer::CacheLock> {
    layer::CacheLock::acquire(&ctx.options.cache, || {
        stage.note("waiting for another build that is using the cache");
    })
}

/// Whether a cached layer serves as it is: whole (then stamped as used now). A damaged
/// one is said and built again; it is never used.
fn layer_is_usable(
    ctx: &BuildContext<'_>,
    spec: &layer::LayerSpec,
    stage: &crate::progress::Stage,
) -> anyhow::Result<bool> {
    match ctx.layers.check(spec)? {
        layer::Cached::Whole => {
            ctx.layers.mark_used(spec)?;
            Ok(true)
        }
        layer::Cached::Missing => Ok(false),
        layer::Cached::Damaged(why) => {
            stage.note(&format!("cached layer damaged ({why}); building it again"));
            Ok(false)
        }
    }
}

/// Checks host tools and the environment before any work starts, and removes the work
/// folders a killed build left.
fn preflight(ctx: &BuildContext<'_>) -> anyhow::Result<()> {
    let mut tools: Vec<Tool> = chroot::TOOLS.to_vec();
    tools.push(match ctx.bootstrap {
        Bootstrap::Mmdebstrap => Tool {
            program: "mmdebstrap",
            package: "mmdebstrap",
            reason: "create the base layer",
        },
        Bootstrap::Debootstrap => Tool {
            program: "debootstrap",
            package: "debootstrap",
            reason: "create the base layer",
        },
    });
    tools.push(Tool {
        program: "cp",
        package: "coreutils",
        reason: "link layer trees",
    });
    if ctx
        .formats
        .iter()
        .any(|f| matches!(f, Format::Raw | Format::Qcow2 | Format::Iso))
    {
        tools.extend(formats::disk::TOOLS);
    }
    if ctx
        .formats
        .iter()
        .any(|f| matches!(f, Format::Iso | Format::Pxe))
    {
        tools.extend(formats::live::TOOLS);
    }
    if ctx.formats.contains(&Format::Iso) {
        tools.extend(formats::iso::TOOLS);
    }
    if matches!(&ctx.project.cluster.vendor, crate::manifest::Vendor::Sources { local, .. } if !local.is_empty())
    {
        tools.push(Tool {
            program: "apt-ftparchive",
            package: "apt-utils",
            reason: "index the local vendor .deb folder",
        });
    }
    require_tools(&tools)?;
    for dir in [
        &ctx.options.cache,
        &ctx.apt_archives,
        &ctx.layers.dir,
        &ctx.work,
        &ctx.options.out,
    ] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut removed = work::remove_abandoned(&ctx.layers.dir, |name| name.starts_with('.'))?;
    removed.extend(work::remove_abandoned(&ctx.work, |_| true)?);
    removed.extend(work::remove_abandoned(&ctx.cluster_out(), |name| {
        name.starts_with(".staging-")
    })?);
    if !removed.is_empty() {
        let stage = ctx.progress.stage("work folders a stopped build left");
        stage.finish(&format!("removed {}", removed.join(", ")));
    }
    Ok(())
}

/// The tree an image is made from, ready for the output stages.
pub struct ImageTree {
    /// Holds the work folder alive (and removes it when the image is written).
    pub work: WorkDir,
    /// The root filesystem.
    pub root: PathBuf,
    /// The rendered overlay, recorded in manifest.json.
    pub overlay: RenderedRole,
}
