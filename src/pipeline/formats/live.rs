//! What the live formats (ISO and PXE) share: the role system as one squashfs, the
//! kernel and initramfs taken from the tree, and the kernel command line of the live root
//! (`boot=r2a`, the initramfs script of `roles/base.toml`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::exec::{CommandExt, Tool};

/// Host tools the live formats are made with.
pub const TOOLS: [Tool; 1] = [Tool {
    program: "mksquashfs",
    package: "squashfs-tools",
    reason: "pack the role system for the ISO and PXE images",
}];

/// Where the initramfs finds the squashfs when a network loader added it (at the top, so
/// that the loader need not make folders in the initramfs).
pub const INITRAMFS_SQUASHFS: &str = "/r2a.squashfs";

/// The kernel and initramfs a tree boots with.
#[derive(Debug, Clone)]
pub struct KernelFiles {
    /// The kernel.
    pub vmlinuz: PathBuf,
    /// Its initramfs.
    pub initrd: PathBuf,
}

impl KernelFiles {
    /// Follows the tree's `/vmlinuz` and `/initrd.img` links (made by Debian's kernel
    /// packages) to the files in `/boot`.
    pub fn of_tree(tree: &Path) -> anyhow::Result<KernelFiles> {
        let resolve = |link: &str| -> anyhow::Result<PathBuf> {
            let path = tree.join(link);
            let target = std::fs::read_link(&path).with_context(|| {
                format!(
                    "the tree has no /{link} link; the role needs a kernel (linux-image-amd64 in roles/base.toml)"
                )
            })?;
            let target = tree.join(target.strip_prefix("/").unwrap_or(&target));
            anyhow::ensure!(
                target.is_file(),
                "/{link} points at {}, which the tree does not hold",
                target.display()
            );
            Ok(target)
        };
        Ok(KernelFiles {
            vmlinuz: resolve("vmlinuz")?,
            initrd: resolve("initrd.img")?,
        })
    }

    /// Copies the two files into `dir` as `vmlinuz` and `initrd.img`. Copies, not hard
    /// links: the tree's files are the cached layer's, and artifacts get their own modes.
    pub fn place_in(&self, dir: &Path) -> anyhow::Result<()> {
        for (from, name) in [(&self.vmlinuz, "vmlinuz"), (&self.initrd, "initrd.img")] {
            std::fs::copy(from, dir.join(name))
                .with_context(|| format!("copying {}", from.display()))?;
        }
        Ok(())
    }
}

/// The kernel command line of the live root; `medium` is the ISO's label, `None` when
/// the squashfs comes inside the initramfs (PXE).
pub fn kernel_command_line(medium: Option<&str>, extra: &[&str]) -> String {
    let mut words = vec!["boot=r2a".to_string()];
    if let Some(label) = medium {
        words.push(format!("r2a.medium={label}"));
    }
    words.extend(extra.iter().map(|word| word.to_string()));
    words.push(super::grub::KERNEL_CONSOLE.to_string());
    words.join(" ")
}

/// Packs the tree into a squashfs, every file time set to `epoch`.
pub fn write_squashfs(tree: &Path, path: &Path, epoch: i64) -> anyhow::Result<()> {
    let epoch = epoch.to_string();
    Command::new("mksquashfs")
        .arg(tree)
        .arg(path)
        .args(["-noappend", "-comp", "zstd", "-quiet", "-no-progress"])
        // Its default cache is a quarter of the RAM (900 MB here); 256 MB is as fast.
        .args(["-mem", "256M"])
        .args(["-mkfs-time", &epoch, "-all-time", &epoch])
        .run()
        .context("packing the role system into a squashfs")
}

/// Hard-links `from` (a file of the work folder, never of the tree) to `to`, or copies
/// it across file systems.
pub fn link_or_copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_name_the_medium_only_for_the_iso() {
        let iso = kernel_command_line(Some("R2A_DB"), &["r2a.install=auto"]);
        assert_eq!(
            iso,
            "boot=r2a r2a.medium=R2A_DB r2a.install=auto console=tty0 console=ttyS0,115200"
        );
        let pxe = kernel_command_line(None, &["r2a.node=db1"]);
        assert!(pxe.starts_with("boot=r2a r2a.node=db1 "), "{pxe}");
        assert!(!pxe.contains("r2a.medium"));
    }

    #[test]
    fn kernel_files_follow_the_debian_links() {
        let tree = tempfile::tempdir().unwrap();
        std::fs::create_dir(tree.path().join("boot")).unwrap();
        std::fs::write(tree.path().join("boot/vmlinuz-6.12"), "kernel").unwrap();
        std::fs::write(tree.path().join("boot/initrd.img-6.12"), "initrd").unwrap();
        std::os::unix::fs::symlink("boot/vmlinuz-6.12", tree.path().join("vmlinuz")).unwrap();
        std::os::unix::fs::symlink("/boot/initrd.img-6.12", tree.path().join("initrd.img"))
            .unwrap();
        let files = KernelFiles::of_tree(tree.path()).unwrap();
        assert!(files.vmlinuz.ends_with("boot/vmlinuz-6.12"));
        assert!(files.initrd.ends_with("boot/initrd.img-6.12"));
        let out = tempfile::tempdir().unwrap();
        files.place_in(out.path()).unwrap();
        assert_eq!(
            std::fs::read(out.path().join("initrd.img")).unwrap(),
            b"initrd"
        );
    }

    #[test]
    fn a_tree_without_a_kernel_is_explained() {
        let tree = tempfile::tempdir().unwrap();
        let error = KernelFiles::of_tree(tree.path()).unwrap_err();
        assert!(
            format!("{error:#}").contains("linux-image-amd64"),
            "{error:#}"
        );
    }
}
