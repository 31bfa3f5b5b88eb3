//! Package layers: the base layer plus a role's Debian and vendor packages, cached under
//! their content key and never rebuilt for an overlay or template change. The layers a
//! build lacks are made side by side, each on an overlay draft over the base.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;

use super::chroot::{Chroot, InstallGuard};
use super::draft::LayerDraft;
use super::layer::{self, CacheLock, LayerSpec};
use super::vendor::VendorSetup;
use super::{BuildContext, WorkDir};
use crate::fsutil;
use crate::progress::Stage;
use crate::role::PrepareFile;

/// A package layer a build needs.
pub struct Wanted<'a> {
    /// What the layer is made of.
    pub spec: LayerSpec,
    /// The files written before the install.
    pub prepare: &'a [PrepareFile],
    /// Its name in the progress display (the role's).
    pub label: String,
}

/// Returns the package layer of each of `roles`, in their order, making the missing ones.
pub fn role_layers(
    ctx: &BuildContext<'_>,
    base: &LayerSpec,
    roles: &[String],
) -> anyhow::Result<Vec<LayerSpec>> {
    let stage = ctx.progress.stage("package layers");
    let mut wanted = Vec::new();
    for role_name in roles {
        let role = ctx
            .project
            .roles
            .get(role_name)
            .with_context(|| format!("unknown role {role_name}"))?;
        wanted.push(Wanted {
            spec: layer::role_spec(&ctx.project.cluster, base, role)?,
            prepare: &role.prepare,
            label: role_name.clone(),
        });
    }
    let made = package_layers(ctx, base, &wanted)?;
    stage.finish(&format!("{made} made, {} roles", roles.len()));
    Ok(wanted.into_iter().map(|wanted| wanted.spec).collect())
}

/// Makes the layers of `wanted` that are not cached (or all with `--refresh`); returns
/// how many it made. Layers of the same packages are made once and shared: a later one
/// is the first's files linked. The others are made side by side, as many at once as the
/// machine has cores.
pub fn package_layers(
    ctx: &BuildContext<'_>,
    base: &LayerSpec,
    wanted: &[Wanted<'_>],
) -> anyhow::Result<usize> {
    let refresh = ctx.options.refresh;
    // Taken before the first change to the store, and held to the end.
    let mut lock: Option<CacheLock> = None;
    // By key, the first layer of the build with those packages: later ones share it.
    let mut firsts: BTreeMap<&str, &LayerSpec> = BTreeMap::new();
    let (mut to_make, mut to_share) = (Vec::new(), Vec::new());
    for want in wanted {
        let key = want.spec.key.as_str();
        let stage = layer_stage(ctx, want);
        if !refresh && super::layer_is_usable(ctx, &want.spec, &stage)? {
            stage.finish("cached");
            firsts.entry(key).or_insert(&want.spec);
            continue;
        }
        if lock.is_none() {
            lock = Some(super::lock_cache(ctx, &stage)?);
            // Another build may have made the layer while this one waited for the lock.
            if !refresh && super::layer_is_usable(ctx, &want.spec, &stage)? {
                stage.finish("cached, built by another build meanwhile");
                firsts.entry(key).or_insert(&want.spec);
                continue;
            }
        }
        if let Some(first) = firsts.get(key) {
            to_share.push((want, stage, (*first).clone()));
            continue;
        }
        firsts.insert(key, &want.spec);
        if !refresh && let Some(twin) = ctx.layers.twin(&want.spec)? {
            to_share.push((want, stage, twin));
            continue;
        }
        to_make.push((want, stage));
    }
    let made = to_make.len();
    make_side_by_side(ctx, base, to_make)?;
    for (want, mut stage, from) in to_share {
        stage.restart();
        share(ctx, &from, &want.spec)?;
        stage.finish(&format!(
            "the same packages as the {} layer, shared",
            from.name
        ));
    }
    Ok(made)
}

fn layer_stage(ctx: &BuildContext<'_>, want: &Wanted<'_>) -> Stage {
    ctx.progress.stage(format!(
        "{}: package layer {}",
        want.label,
        &want.spec.key[..12]
    ))
}

/// Makes the layers of `jobs`, as many at once as the machine has cores. After a failure
/// no other starts; those under way finish, and the first failure is returned.
fn make_side_by_side(
    ctx: &BuildContext<'_>,
    base: &LayerSpec,
    jobs: Vec<(&Wanted<'_>, Stage)>,
) -> anyhow::Result<()> {
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(jobs.len());
    let queue = Mutex::new(jobs.into_iter());
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while errors.lock().expect("no worker panics").is_empty() {
                    let Some((want, mut stage)) = queue.lock().expect("no worker panics").next()
                    else {
                        break;
                    };
                    stage.restart();
                    match make_layer(ctx, base, want, &stage) {
                        Ok(()) => stage.finish(&format!(
                            "{} packages",
                            want.spec.packages.len() + want.spec.vendor_packages.len()
                        )),
                        Err(error) => errors.lock().expect("no worker panics").push(error),
                    }
                }
            });
        }
    });
    match errors
        .into_inner()
        .expect("no worker panics")
        .into_iter()
        .next()
    {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Makes one layer: the base, `prepare`'s files, then the packages, installed on a draft
/// over the base (see [`LayerDraft`]), so the base's files are linked, never copied.
fn make_layer(
    ctx: &BuildContext<'_>,
    base: &LayerSpec,
    want: &Wanted<'_>,
    stage: &Stage,
) -> anyhow::Result<()> {
    let spec = &want.spec;
    let work = WorkDir::new(&ctx.layers.dir, &format!(".{}-", spec.name))?;
    let archive = LayerArchive::open(&ctx.apt_archives, &work.path().join("archives"))?;
    let draft = LayerDraft::mount(
        &ctx.options.private_mounts,
        &ctx.layers.tree(base),
        work.path(),
    )?;
    let root = draft.root();
    for file in want.prepare {
        file.write_into(&root)?;
    }
    {
        let _guard = InstallGuard::new(&root)?;
        let vendor = VendorSetup::install(ctx, &root, !spec.vendor_packages.is_empty())?;
        let chroot = Chroot::new(&root)
            .with_apt_archives(&archive.dir)
            .with_source_date_epoch(spec.source_date_epoch);
        let mut packages = spec.packages.clone();
        packages.extend(spec.vendor_packages.iter().cloned());
        apt_install(&chroot, &packages, &|line| stage.line(line))?;
        vendor.remove(&root)?;
    }
    draft.finish(&work.path().join("rootfs"))?;
    archive.give_back(&ctx.apt_archives)?;
    commit_layer(ctx, work, spec)
}

/// Makes the layer `spec` of the same packages as the cached layer `from`: its files
/// linked (cached trees are never written into, so hard links share them safely).
fn share(ctx: &BuildContext<'_>, from: &LayerSpec, spec: &LayerSpec) -> anyhow::Result<()> {
    let work = WorkDir::new(&ctx.layers.dir, &format!(".{}-", spec.name))?;
    fsutil::link_tree(&ctx.layers.tree(from), &work.path().join("rootfs"))?;
    commit_layer(ctx, work, spec)
}

/// A layer's own apt archive for its install: the shared archive's packages linked in
/// before, what the install downloaded linked back after. Installs side by side then
/// never wait on apt's lock of one archive (a package two of them lack is fetched by
/// each), and the shared archive only ever gains whole `.deb` files.
struct LayerArchive {
    dir: PathBuf,
}

impl LayerArchive {
    fn open(shared: &Path, dir: &Path) -> anyhow::Result<LayerArchive> {
        std::fs::create_dir_all(dir.join("partial"))
            .with_context(|| format!("creating {}", dir.display()))?;
        link_debs(shared, dir)?;
        Ok(LayerArchive {
            dir: dir.to_path_buf(),
        })
    }

    fn give_back(self, shared: &Path) -> anyhow::Result<()> {
        link_debs(&self.dir, shared)?;
        fsutil::remove_tree(&self.dir)
    }
}

/// Links each `.deb` of `from` into `to` that `to` lacks.
fn link_debs(from: &Path, to: &Path) -> anyhow::Result<()> {
    for deb in layer::debs_in(from)? {
        let target = to.join(deb.file_name().expect("a .deb file has a name"));
        match std::fs::hard_link(&deb, &target) {
            Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(error).with_context(|| format!("linking {}", target.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `apt-get update` and a non-interactive install without recommends, keeping the
/// configuration files a layer prepared.
pub fn apt_install(
    chroot: &Chroot,
    packages: &[String],
    on_line: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    // The indexes only, as mmdebstrap fetched them for the base: no translations.
    chroot.run(
        &["apt-get", "-o", "Acquire::Languages=none", "update"],
        on_line,
    )?;
    let mut argv = vec![
        "apt-get",
        "install",
        "--yes",
        "--no-install-recommends",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        // No fsync per file: a layer is committed whole after the install, or not at all.
        "-o",
        "Dpkg::Options::=--force-unsafe-io",
    ];
    argv.extend(packages.iter().map(String::as_str));
    // No `apt-get clean`: the archive is the shared cache, bind-mounted for the install.
    chroot.run(&argv, on_line)
}

/// Records the layer and moves its tree to its key's place in the cache.
pub fn commit_layer(ctx: &BuildContext<'_>, work: WorkDir, spec: &LayerSpec) -> anyhow::Result<()> {
    layer::record_contents(&work.path().join("rootfs"))?;
    let record = work.path().join("layer.json");
    std::fs::write(&record, serde_json::to_vec_pretty(spec)?)?;
    let target = ctx
        .layers
        .tree(spec)
        .parent()
        .expect("layer trees sit in a folder")
        .to_path_buf();
    fsutil::remove_tree(&target)?;
    std::fs::rename(work.path(), &target)
        .with_context(|| format!("moving the new layer to {}", target.display()))?;
    work.keep();
    ctx.layers.mark_used(spec)
}
