//! The builder's own mount namespace, and the overlayfs mounts made in it: no mount of a
//! build ever shows on the host, and each ends with the builder, however the builder ends.

use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// What the builder says when it is not root.
pub const NEEDS_ROOT: &str = "building images needs root (package installs chown files and make device nodes, layers are drafted on overlay mounts); run r2a-image build as root";

/// Proof that this process runs in a mount namespace of its own whose mounts do not
/// propagate to the host's: when the builder ends, even by SIGKILL, its tools end with it
/// (`setpriv --pdeathsig`), the namespace with them, and every mount in it.
#[derive(Debug, Clone, Copy)]
pub struct PrivateMounts(());

impl PrivateMounts {
    /// Moves this process into a new mount namespace, private from `/` down. The kernel
    /// allows it only while the process has a single thread: a command that builds calls
    /// this first, before it starts any.
    pub fn enter() -> anyhow::Result<PrivateMounts> {
        anyhow::ensure!(rustix::process::geteuid().is_root(), NEEDS_ROOT);
        nix::sched::unshare(CloneFlags::CLONE_NEWNS).context(
            "moving the builder into a mount namespace of its own (it must run before any thread starts)",
        )?;
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .context("making the builder's mounts private")?;
        Ok(PrivateMounts(()))
    }
}

/// An overlayfs mount: `lower` read-only beneath, every change written to `upper`. It is
/// unmounted when dropped.
#[derive(Debug)]
pub struct OverlayMount {
    target: PathBuf,
    mounted: bool,
}

impl OverlayMount {
    /// Mounts `lower` and `upper` (with overlayfs's scratch folder `scratch`, on the same
    /// filesystem as `upper`) at `target`.
    pub fn new(
        _private: &PrivateMounts,
        lower: &Path,
        upper: &Path,
        scratch: &Path,
        target: &Path,
    ) -> anyhow::Result<OverlayMount> {
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(options(lower, upper, scratch)?.as_str()),
        )
        .with_context(|| {
            format!(
                "mounting an overlay at {}; the cache folder must be on a local filesystem \
                 that overlayfs takes as its upper layer (ext4, xfs, btrfs or tmpfs, not \
                 overlayfs itself or NFS): give --cache another folder",
                target.display()
            )
        })?;
        Ok(OverlayMount {
            target: target.to_path_buf(),
            mounted: true,
        })
    }

    /// Unmounts, saying whether it worked (drop only tries).
    pub fn unmount(mut self) -> anyhow::Result<()> {
        nix::mount::umount2(&self.target, MntFlags::empty())
            .with_context(|| format!("unmounting {}", self.target.display()))?;
        self.mounted = false;
        Ok(())
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        // A tool that still holds a file open keeps a lazy unmount's mount alive until it
        // ends; the namespace ends with the builder in any case.
        let _ = nix::mount::umount2(&self.target, MntFlags::MNT_DETACH);
    }
}

/// The mount options. Folder names are escaped the way overlayfs reads them (`\,` `\:`
/// `\\`), so a cache path may hold any character. Redirects and metadata-only copies stay
/// off, whatever the kernel's defaults: every changed file is then whole in `upper`, and a
/// renamed folder is copied, so `upper` holds plain files, folders and whiteouts only.
fn options(lower: &Path, upper: &Path, scratch: &Path) -> anyhow::Result<String> {
    let escape = |path: &Path| -> anyhow::Result<String> {
        let text = path
            .to_str()
            .with_context(|| format!("{} is not UTF-8", path.display()))?;
        Ok(text
            .replace('\\', "\\\\")
            .replace(',', "\\,")
            .replace(':', "\\:"))
    };
    Ok(format!(
        "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off",
        escape(lower)?,
        escape(upper)?,
        escape(scratch)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_escape_what_overlayfs_splits_on() {
        let got = options(
            Path::new("/cache/a,b"),
            Path::new("/cache/up:per"),
            Path::new("/cache/back\\slash"),
        )
        .unwrap();
        assert_eq!(
            got,
            "lowerdir=/cache/a\\,b,upperdir=/cache/up\\:per,workdir=/cache/back\\\\slash,\
             redirect_dir=off,metacopy=off,index=off"
        );
    }
}
