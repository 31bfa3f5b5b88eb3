//! A layer drafted on overlayfs: its packages install into the parent layer's tree seen
//! through an overlay, which keeps only what the install changes, and the finished layer is
//! the parent's files as hard links with those changes merged in. No byte of the parent is
//! copied, and the parent is never written.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::mounts::{OverlayMount, PrivateMounts};
use crate::fsutil;

/// The overlay's folders inside the layer's work folder.
const UPPER: &str = "changes";
const SCRATCH: &str = "overlay-scratch";
const MERGED: &str = "draft";

/// Where overlayfs keeps its own bookkeeping on the entries of the upper folder.
const OVERLAY_XATTRS: &[u8] = b"trusted.overlay.";
/// Set to `y` on a folder that hides the parent's folder of the same path.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// A layer being made: the parent's tree, writable through an overlay mount.
pub struct LayerDraft {
    parent: PathBuf,
    folder: PathBuf,
    mount: OverlayMount,
}

impl LayerDraft {
    /// Mounts a draft of a layer on `parent` (a cached layer's tree) in `folder`, an empty
    /// work folder on the cache's filesystem.
    pub fn mount(
        private: &PrivateMounts,
        parent: &Path,
        folder: &Path,
    ) -> anyhow::Result<LayerDraft> {
        for name in [UPPER, SCRATCH, MERGED] {
            let path = folder.join(name);
            std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        }
        // The draft's root shows the parent's root folder's owner and mode only if the
        // upper folder has them: overlayfs takes the root's attributes from there.
        let parent_root = parent
            .symlink_metadata()
            .with_context(|| format!("reading {}", parent.display()))?;
        copy_folder_attributes(&parent_root, parent, &folder.join(UPPER))?;
        let mount = OverlayMount::new(
            private,
            parent,
            &folder.join(UPPER),
            &folder.join(SCRATCH),
            &folder.join(MERGED),
        )?;
        Ok(LayerDraft {
            parent: parent.to_path_buf(),
            folder: folder.to_path_buf(),
            mount,
        })
    }

    /// The draft's root: install into it.
    pub fn root(&self) -> PathBuf {
        self.folder.join(MERGED)
    }

    /// Unmounts the draft and makes the layer's tree at `tree` (which must not exist): the
    /// parent's files linked, the changes moved in.
    pub fn finish(self, tree: &Path) -> anyhow::Result<()> {
        self.mount.unmount()?;
        fsutil::link_tree(&self.parent, tree)?;
        merge_changes(&self.folder.join(UPPER), tree)?;
        for name in [UPPER, SCRATCH, MERGED] {
            fsutil::remove_tree(&self.folder.join(name))?;
        }
        Ok(())
    }
}

/// What an entry of the upper folder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// A character device 0/0: the parent's entry of that path was removed.
    Whiteout,
    /// A folder made anew where the parent had something: the parent's content is hidden.
    OpaqueFolder,
    /// A folder that adds to (or has the attributes of) the parent's folder of that path.
    Folder,
    /// Any other entry, whole: a file, a link, a device.
    Entry,
}

/// What the layer's tree holds at a path before the change is merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Below {
    Nothing,
    Folder,
    Entry,
}

/// What merging a change does after clearing the path (when `clear` says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Nothing,
    /// Make the folder if missing and give it the change's owner, mode and attributes.
    Folder,
    /// Move the entry from the upper folder into the tree.
    MoveIn,
}

/// How one change is merged into the tree.
fn merge_step(change: Change, below: Below) -> (bool, Then) {
    // Only a folder merges into a folder; anything else replaces what lies below.
    let clear = !matches!(
        (change, below),
        (_, Below::Nothing) | (Change::Folder, Below::Folder)
    );
    let then = match change {
        Change::Whiteout => Then::Nothing,
        Change::OpaqueFolder | Change::Folder => Then::Folder,
        Change::Entry => Then::MoveIn,
    };
    (clear, then)
}

/// Merges the upper folder of an unmounted overlay into `tree`, parents before children.
/// Entries are moved, not copied: the upper folder is on the tree's filesystem.
fn merge_changes(upper: &Path, tree: &Path) -> anyhow::Result<usize> {
    let mut merged = 0;
    // Sorted: each folder's entries are read whole before any is moved out of it.
    for entry in walkdir::WalkDir::new(upper)
        .min_depth(1)
        .sort_by_file_name()
    {
        let entry = entry.with_context(|| format!("reading {}", upper.display()))?;
        let source = entry.path();
        let target = tree.join(source.strip_prefix(upper)?);
        let metadata = source
            .symlink_metadata()
            .with_context(|| format!("reading {}", source.display()))?;
        let below = match target.symlink_metadata() {
            Ok(below) if below.is_dir() => Below::Folder,
            Ok(_) => Below::Entry,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Below::Nothing,
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", target.display()));
            }
        };
        let (clear, then) = merge_step(change_of(source, &metadata)?, below);
        if clear {
            fsutil::remove_any(&target)?;
        }
        match then {
            Then::Nothing => {}
            Then::Folder => {
                if clear || below == Below::Nothing {
                    std::fs::create_dir(&target)
                        .with_context(|| format!("creating {}", target.display()))?;
                }
                copy_folder_attributes(&metadata, source, &target)?;
            }
            Then::MoveIn => {
                std::fs::rename(source, &target).with_context(|| {
                    format!("moving {} to {}", source.display(), target.display())
                })?;
                for name in xattr_names(&target)? {
                    if name.starts_with(OVERLAY_XATTRS) {
                        remove_xattr(&target, &name)?;
                    }
                }
            }
        }
        merged += 1;
    }
    Ok(merged)
}

fn change_of(path: &Path, metadata: &std::fs::Metadata) -> anyhow::Result<Change> {
    let kind = metadata.file_type();
    Ok(if kind.is_char_device() && metadata.rdev() == 0 {
        Change::Whiteout
    } else if kind.is_dir() {
        let mut value = [0u8; 1];
        match rustix::fs::lgetxattr(path, OPAQUE_XATTR, &mut value) {
            Ok(1) if value == *b"y" => Change::OpaqueFolder,
            _ => Change::Folder,
        }
    } else {
        Change::Entry
    })
}

/// Gives `target` the owner, mode and extended attributes of the folder `source` (whose
/// metadata is `metadata`), leaving out overlayfs's own.
fn copy_folder_attributes(
    metadata: &std::fs::Metadata,
    source: &Path,
    target: &Path,
) -> anyhow::Result<()> {
    std::os::unix::fs::lchown(target, Some(metadata.uid()), Some(metadata.gid()))
        .with_context(|| format!("setting the owner of {}", target.display()))?;
    std::fs::set_permissions(target, std::fs::Permissions::from_mode(metadata.mode()))
        .with_context(|| format!("setting the mode of {}", target.display()))?;
    let wanted: Vec<Vec<u8>> = xattr_names(source)?
        .into_iter()
        .filter(|name| !name.starts_with(OVERLAY_XATTRS))
        .collect();
    for name in xattr_names(target)? {
        if !wanted.contains(&name) {
            remove_xattr(target, &name)?;
        }
    }
    for name in &wanted {
        let size = rustix::fs::lgetxattr_query(source, name.as_slice())?;
        let mut value = vec![0u8; size];
        let read = rustix::fs::lgetxattr(source, name.as_slice(), &mut value[..])?;
        rustix::fs::lsetxattr(
            target,
            name.as_slice(),
            &value[..read],
            rustix::fs::XattrFlags::empty(),
        )
        .with_context(|| format!("setting an attribute of {}", target.display()))?;
    }
    Ok(())
}

/// The names of an entry's extended attributes (of a link itself, not its target).
fn xattr_names(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let size = rustix::fs::llistxattr_query(path)
        .with_context(|| format!("listing the attributes of {}", path.display()))?;
    let mut list = vec![0u8; size];
    let read = rustix::fs::llistxattr(path, &mut list[..])
        .with_context(|| format!("listing the attributes of {}", path.display()))?;
    Ok(list[..read]
        .split(|byte| *byte == 0)
        .filter(|name| !name.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

fn remove_xattr(path: &Path, name: &[u8]) -> anyhow::Result<()> {
    rustix::fs::lremovexattr(path, name).with_context(|| {
        format!(
            "removing the attribute {} of {}",
            String::from_utf8_lossy(name),
            path.display()
        )
    })
}

#[cfg(test)]
#[path = "draft_tests.rs"]
mod tests;
