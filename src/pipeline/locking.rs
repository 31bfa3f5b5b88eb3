//! The build's side of `r2a.lock`: `--locked` checks the lock before any work, and every
//! other build records the packages of the layers it used.

use std::path::Path;

use anyhow::Context;

use super::BuildContext;
use super::layer::{self, LayerSpec};
use crate::lock::{self, Lock, LockedLayer, LockedPackage};

/// With `--locked`: fails before any work unless the lock covers every layer of the
/// build as it is now and the sources still give each locked package as locked.
pub fn check_locked(ctx: &BuildContext<'_>, roles: &[String]) -> anyhow::Result<()> {
    if !ctx.options.locked {
        return Ok(());
    }
    let stage = ctx.progress.stage("check the lock against the sources");
    let specs = specs(ctx, roles)?;
    let states = lock::layer_states(&ctx.layers, &ctx.apt_archives, &specs)?;
    let cluster = &ctx.project.cluster;
    let Some(status) = lock::status(cluster, &states, &mirror_state(ctx))? else {
        return Err(crate::diag::UsageError(format!(
            "--locked needs {}; build once without --locked to write it",
            lock::path_for(&cluster.manifest.path).display()
        ))
        .into());
    };
    if !status.is_clean() {
        anyhow::bail!(
            "the sources no longer give what {} locks; nothing was built:\n  {}\n  = hint: build without --locked to take the new packages and update the lock",
            status.path.display(),
            status.lines().join("\n  ")
        );
    }
    let count: usize = specs.len();
    stage.finish(&format!("{count} layers as locked"));
    Ok(())
}

/// The layers of a build, computed as the build will (their keys need no download).
pub fn specs(ctx: &BuildContext<'_>, roles: &[String]) -> anyhow::Result<Vec<LayerSpec>> {
    let project = ctx.project;
    let base = layer::base_spec(&project.cluster, &project.roles, ctx.bootstrap)?;
    let mut specs = vec![base.clone()];
    for name in roles {
        let role = project
            .roles
            .get(name)
            .context("a role to build has a definition")?;
        specs.push(layer::role_spec(&project.cluster, &base, role)?);
    }
    if super::boot_tools::needed(&ctx.formats) {
        specs.push(layer::boot_tools_spec(&base));
    }
    Ok(specs)
}

/// Where the host's apt keeps the sources' indexes for lock checks.
pub fn mirror_state(ctx: &BuildContext<'_>) -> std::path::PathBuf {
    ctx.options.cache.join(lock::mirror::STATE_DIR)
}

/// Writes the packages of `layers` (base first) into the lock beside the manifest,
/// keeping the entries of roles this build did not touch. A `--locked` build leaves the
/// lock as it is: it matched.
pub fn record(ctx: &BuildContext<'_>, layers: &[LayerSpec]) -> anyhow::Result<()> {
    if ctx.options.locked {
        return Ok(());
    }
    let manifest = &ctx.project.cluster.manifest.path;
    let mut lock = Lock::read(manifest)?.unwrap_or_default();
    let base_tree = layers.first().map(|base| ctx.layers.tree(base));
    let mut locked = Vec::new();
    for spec in layers {
        locked.push(LockedLayer {
            name: spec.name.clone(),
            key: spec.key.clone(),
            packages: packages_of(ctx, spec, base_tree.as_deref())?,
        });
    }
    lock.update(locked);
    lock.write(manifest)
}

/// A layer's packages; `base_tree` is the parent of every other layer.
fn packages_of(
    ctx: &BuildContext<'_>,
    spec: &LayerSpec,
    base_tree: Option<&Path>,
) -> anyhow::Result<Vec<LockedPackage>> {
    let parent = spec.parent.as_ref().and(base_tree);
    lock::cached_layer_packages(&ctx.layers, spec, parent, &ctx.apt_archives)
}
