//! Work folders: removed when dropped, so a failed or interrupted build leaves nothing
//! behind, and locked while alive, so the next build can tell a folder a killed build left
//! (SIGKILL, power loss) from one a running build uses, and remove it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rustix::fs::{FlockOperation, flock};

/// How many times a new folder is made again when a sweep took it before it was locked.
const CREATE_ATTEMPTS: usize = 8;

/// A work folder, removed when dropped, locked (flock) while it lives.
pub struct WorkDir {
    // Field order is drop order: the folder goes first, then its lock.
    dir: tempfile::TempDir,
    _lock: std::fs::File,
}

impl WorkDir {
    /// A new empty folder under `parent`, named `<prefix><random>`.
    pub fn new(parent: &Path, prefix: &str) -> anyhow::Result<Self> {
        for _ in 0..CREATE_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir_in(parent)
                .with_context(|| format!("creating a work folder in {}", parent.display()))?;
            // A sweep in another build may see the folder between its making and its
            // locking, and remove it: then it is made again.
            if let Some(lock) = lock_if_present(dir.path())? {
                return Ok(WorkDir { dir, _lock: lock });
            }
        }
        anyhow::bail!(
            "work folders in {} keep disappearing; is another program removing them?",
            parent.display()
        )
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps the folder: the caller has moved its content into place.
    pub fn keep(self) -> PathBuf {
        self.dir.keep()
    }
}

/// Locks a freshly made folder; `None` when it was removed before the lock was taken.
fn lock_if_present(path: &Path) -> anyhow::Result<Option<std::fs::File>> {
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(None);
    };
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("locking {}", path.display())),
    }
    let same = std::fs::symlink_metadata(path)
        .ok()
        .zip(file.metadata().ok())
        .is_some_and(|(now, locked)| now.ino() == locked.ino() && now.dev() == locked.dev());
    Ok(same.then_some(file))
}

/// Removes the work folders under `parent` (those whose name `is_work` accepts) that no
/// live build holds: a build that was killed left them. Returns their names.
pub fn remove_abandoned(
    parent: &Path,
    is_work: impl Fn(&str) -> bool,
) -> anyhow::Result<Vec<String>> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", parent.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_work(&name) || !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            continue;
        }
        let path = entry.path();
        let Ok(folder) = std::fs::File::open(&path) else {
            continue;
        };
        if flock(&folder, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue; // A running build holds it.
        }
        std::fs::remove_dir_all(&path)
            .with_context(|| format!("removing the abandoned work folder {}", path.display()))?;
        removed.push(name);
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_folder_stays_and_an_abandoned_one_goes() {
        let parent = tempfile::tempdir().unwrap();
        let held = WorkDir::new(parent.path(), ".base-").unwrap();
        std::fs::write(held.path().join("file"), "x").unwrap();
        // What a killed build leaves: a folder nobody locks.
        let abandoned = parent.path().join(".db-abandoned");
        std::fs::create_dir_all(abandoned.join("rootfs/etc")).unwrap();
        let layer = parent.path().join("db-0123456789abcdef");
        std::fs::create_dir(&layer).unwrap();

        let removed = remove_abandoned(parent.path(), |name| name.starts_with('.')).unwrap();
        assert_eq!(removed, [".db-abandoned"]);
        assert!(!abandoned.exists());
        assert!(held.path().join("file").is_file(), "the live folder stays");
        assert!(layer.is_dir(), "names the filter refuses stay");

        let path = held.path().to_path_buf();
        drop(held);
        assert!(!path.exists(), "a dropped work folder is removed");
    }

    #[test]
    fn a_new_folder_is_locked_only_while_it_is_there_and_free() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join(".new");
        std::fs::create_dir(&dir).unwrap();
        let lock = lock_if_present(&dir)
            .unwrap()
            .expect("a free folder is locked");
        assert!(
            lock_if_present(&dir).unwrap().is_none(),
            "a folder another holder locked (a sweep) is not taken"
        );
        drop(lock);
        assert!(
            lock_if_present(&parent.path().join(".swept"))
                .unwrap()
                .is_none()
        );
    }
}
