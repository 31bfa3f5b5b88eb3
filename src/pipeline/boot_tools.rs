//! GRUB from the image's own Debian release, not the build host's: a layer on the base
//! with GRUB's two platforms and what `grub-mkrescue` runs (xorriso, mtools, faketime), in which
//! the GRUB images of disks, ISOs and PXE sets are made. Two hosts of different releases
//! then write the same boot loader, and `manifest.json` names its version.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::chroot::Chroot;
use super::layer::{self, LayerSpec};
use super::{BuildContext, packages};
use crate::manifest::Format;

/// The Debian packages of the layer (faketime holds grub-mkrescue's clock at the source
/// date).
pub const PACKAGES: [&str; 6] = [
    "grub-common",
    "grub-efi-amd64-bin",
    "grub-pc-bin",
    "xorriso",
    "mtools",
    "faketime",
];

/// Where a host folder appears inside the tools' tree while a tool runs.
const SHARED: &str = "/mnt/r2a";

/// The tools' tree, ready to run GRUB's programs in.
pub struct BootTools {
    tree: PathBuf,
    /// The GRUB packages' version (`2.12-9`).
    pub grub_version: String,
}

/// Whether any of `formats` holds a GRUB image.
pub fn needed(formats: &[Format]) -> bool {
    formats.iter().any(|format| {
        matches!(
            format,
            Format::Raw | Format::Qcow2 | Format::Iso | Format::Pxe
        )
    })
}

/// Returns the tools' layer, building it from the base unless it is cached; `None` when
/// no format of the build boots.
pub fn boot_tools(ctx: &BuildContext<'_>, base: &LayerSpec) -> anyhow::Result<Option<BootTools>> {
    if !needed(&ctx.formats) {
        return Ok(None);
    }
    let wanted = packages::Wanted {
        spec: layer::boot_tools_spec(base),
        prepare: &[],
        label: "boot tools".to_string(),
    };
    packages::package_layers(ctx, base, std::slice::from_ref(&wanted))?;
    let tree = ctx.layers.tree(&wanted.spec);
    let grub_version = crate::sbom::installed(&tree)?
        .into_iter()
        .find(|package| package.name == "grub-common")
        .map(|package| package.version)
        .context("the boot tools' layer has no grub-common")?;
    Ok(Some(BootTools { tree, grub_version }))
}

impl BootTools {
    /// A file of the tools' tree, e.g. `/usr/lib/grub/i386-pc/boot.img`.
    pub fn file(&self, absolute: &str) -> PathBuf {
        self.tree.join(absolute.trim_start_matches('/'))
    }

    /// Runs `argv` in the tools' tree with the host folder `folder` shared; `argv` names
    /// its files with [`BootTools::inside`].
    pub fn run(&self, folder: &Path, argv: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
        Chroot::new(&self.tree)
            .with_read_only_tree()
            .with_isolated_network()
            .with_shared_folder(folder, SHARED)
            .with_env(env)
            .run(argv, &|_| {})
    }

    /// Where `path`, inside the shared `folder`, is seen by the tools.
    pub fn inside(folder: &Path, path: &Path) -> anyhow::Result<String> {
        let relative = path
            .strip_prefix(folder)
            .with_context(|| format!("{} is not in {}", path.display(), folder.display()))?;
        let inside = Path::new(SHARED).join(relative);
        inside
            .to_str()
            .map(str::to_string)
            .context("a work path is not UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bootable_formats_need_grub() {
        assert!(!needed(&[Format::Tar]));
        for format in [Format::Raw, Format::Qcow2, Format::Iso, Format::Pxe] {
            assert!(needed(&[Format::Tar, format]), "{format:?}");
        }
    }

    #[test]
    fn shared_paths_are_seen_under_the_mount_point() {
        let folder = Path::new("/cache/work/portal-x");
        assert_eq!(
            BootTools::inside(folder, &folder.join("grub/core.img")).unwrap(),
            "/mnt/r2a/grub/core.img"
        );
        assert!(BootTools::inside(folder, Path::new("/elsewhere/x")).is_err());
    }
}
