//! The base layer: a Debian 13 tree from mmdebstrap (or debootstrap) with the packages
//! every role shares, cached under its content key.

use std::process::Command;

use anyhow::Context;

use super::chroot::{Chroot, InstallGuard};
use super::layer::{self, LayerSpec};
use super::{BuildContext, WorkDir};
use crate::exec::CommandExt;
use crate::manifest::Bootstrap;

/// Returns the base layer, building it unless it is cached.
pub fn base_layer(ctx: &BuildContext<'_>) -> anyhow::Result<LayerSpec> {
    let spec = layer::base_spec(&ctx.project.cluster, &ctx.project.roles, ctx.bootstrap)?;
    let stage = ctx
        .progress
        .stage(format!("base layer {}", &spec.key[..12]));
    if !ctx.options.refresh && super::layer_is_usable(ctx, &spec, &stage)? {
        stage.finish("cached");
        return Ok(spec);
    }
    let _lock = super::lock_cache(ctx, &stage)?;
    // Another build may have made the layer while this one waited for the lock.
    if !ctx.options.refresh && super::layer_is_usable(ctx, &spec, &stage)? {
        stage.finish("cached, built by another build meanwhile");
        return Ok(spec);
    }
    let work = WorkDir::new(&ctx.layers.dir, ".base-")?;
    let root = work.path().join("rootfs");
    // The base role's `prepare` files (the live-boot initramfs script) are in place
    // before the kernel's initramfs is made.
    let prepared = work.path().join("prepare");
    std::fs::create_dir_all(&prepared)?;
    for file in &ctx.project.roles.base.prepare {
        file.write_into(&prepared)?;
    }
    match ctx.bootstrap {
        Bootstrap::Mmdebstrap => {
            mmdebstrap(ctx, &spec, &root, &prepared, &|line| stage.line(line))?
        }
        Bootstrap::Debootstrap => debootstrap(ctx, &spec, &root, &|line| stage.line(line))?,
    }
    super::packages::commit_layer(ctx, work, &spec)?;
    stage.finish(&format!("{} packages", spec.packages.len()));
    Ok(spec)
}

/// What the bootstrap tool and the packages' scripts it runs see, whatever the host's
/// settings: `SOURCE_DATE_EPOCH` (the kernel's initramfs is then the same bytes whenever
/// the layer is made), UTC and the C locale.
fn bootstrap_env(spec: &LayerSpec) -> [(&'static str, String); 3] {
    [
        ("LC_ALL", "C.UTF-8".to_string()),
        ("TZ", "UTC".to_string()),
        ("SOURCE_DATE_EPOCH", spec.source_date_epoch.to_string()),
    ]
}

fn mmdebstrap(
    ctx: &BuildContext<'_>,
    spec: &LayerSpec,
    root: &std::path::Path,
    prepared: &std::path::Path,
    on_line: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<()> {
    let debian = &ctx.project.cluster.debian;
    let prepared = prepared.to_str().context("cache path is not UTF-8")?;
    let archives = ctx
        .apt_archives
        .to_str()
        .context("cache path is not UTF-8")?;
    // The shared archive is bind-mounted for the run; the outer mount namespace makes sure
    // the mount ends with mmdebstrap whatever happens, and the PID namespace that no
    // process of the bootstrap outlives it.
    let setup = format!(
        "mkdir -p \"$1/var/cache/apt/archives\" && mount --bind '{archives}' \"$1/var/cache/apt/archives\""
    );
    super::chroot::unshare(&["--mount", "--pid", "--fork", "--kill-child"])
        .arg("mmdebstrap")
        .args(["--mode=root", "--variant=minbase", "--format=directory"])
        .arg(format!("--architectures={}", debian.architecture))
        .arg(format!("--components={}", debian.components.join(",")))
        .arg(format!("--include={}", spec.packages.join(",")))
        .arg("--aptopt=APT::Install-Recommends \"false\"")
        // apt drops to `_apt` for downloads only where `_apt` can read the tree, which
        // depends on the modes of the cache folder's parents (a umask of 077 makes them
        // private), and the owner of the tree's `archives/partial` follows. Downloading as
        // root always keeps the layer the same wherever it is built.
        .arg("--aptopt=APT::Sandbox::User \"root\"")
        // No fsync per file: the layer is committed whole after the run, or not at all.
        .arg("--dpkgopt=force-unsafe-io")
        // Keep the essential packages' .deb files: they were downloaded into the cache.
        .arg("--skip=essential/unlink")
        .arg(format!("--setup-hook={setup}"))
        .arg(format!("--setup-hook=sync-in '{prepared}' /"))
        .arg("--customize-hook=umount \"$1/var/cache/apt/archives\"")
        .arg(&debian.suite)
        .arg(root)
        // One-line sources are taken as they are: the suite, updates and security.
        .args(&debian.sources)
        .envs(bootstrap_env(spec))
        .run_streaming(on_line)
        .context("creating the base layer with mmdebstrap")
}

fn debootstrap(
    ctx: &BuildContext<'_>,
    spec: &LayerSpec,
    root: &std::path::Path,
    on_line: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<()> {
    let debian = &ctx.project.cluster.debian;
    Command::new("debootstrap")
        .args([
            "--variant=minbase",
            "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg",
        ])
        .arg(format!("--arch={}", debian.architecture))
        .arg(format!("--components={}", debian.components.join(",")))
        .arg(format!("--cache-dir={}", ctx.apt_archives.display()))
        .arg(&debian.suite)
        .arg(root)
        .arg(&debian.mirror)
        .envs(bootstrap_env(spec))
        .run_streaming(on_line)
        .context("creating the base layer with debootstrap")?;
    // debootstrap knows one mirror; apt gets every source. It also resolves --include
    // poorly for large sets (the kernel), so apt installs the base packages.
    let sources: String = debian
        .sources
        .iter()
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(root.join("etc/apt/sources.list"), sources)
        .context("writing the base layer's sources.list")?;
    for file in &ctx.project.roles.base.prepare {
        file.write_into(root)?;
    }
    let _guard = InstallGuard::new(root)?;
    let chroot = Chroot::new(root)
        .with_apt_archives(&ctx.apt_archives)
        .with_source_date_epoch(spec.source_date_epoch);
    super::packages::apt_install(&chroot, &spec.packages, on_line)
}
