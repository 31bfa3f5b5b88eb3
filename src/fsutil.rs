//! Filesystem helpers, for the builder and the agent alike: atomic writes, tree copies,
//! modes, and globbed removal.

use std::fs::{File, Permissions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::exec::CommandExt;

/// Sets a path's permission bits.
pub fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode {mode:o} on {}", path.display()))
}

/// Who owns a file, as numeric ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Reads a text file, or `None` when it does not exist.
pub fn read_optional(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replaces `path` with `contents` atomically (temporary file, fsync, rename, fsync of
/// the folder), with `mode` whatever the umask, owned by the running user: readers and a
/// power cut see the old content or the new, never a part.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    write_atomic_owned(path, contents, mode, None)
}

/// Replaces `path` with `contents` atomically, with `mode` and, if given, `owner`.
/// Missing parent folders are created.
pub fn write_atomic_owned(
    path: &Path,
    contents: &[u8],
    mode: u32,
    owner: Option<Owner>,
) -> anyhow::Result<()> {
    let dir = parent_of(path)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut temp = tempfile::Builder::new()
        .prefix(".r2a-tmp")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let temp_path = temp.path().to_path_buf();
    let writing = || format!("writing {}", temp_path.display());
    temp.write_all(contents).with_context(writing)?;
    // Mode and owner go on before the rename, so the file never appears with the
    // temp file's 0600 or the wrong owner (some of these files hold secrets).
    temp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .with_context(writing)?;
    if let Some(owner) = owner {
        std::os::unix::fs::fchown(temp.as_file(), Some(owner.uid), Some(owner.gid))
            .with_context(|| format!("setting the owner of {}", temp_path.display()))?;
    }
    temp.as_file().sync_all().with_context(writing)?;
    temp.persist(path)
        .with_context(|| format!("renaming a temporary file to {}", path.display()))?;
    sync_dir(dir)
}

/// Makes a rename or a new entry in `dir` durable.
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("syncing folder {}", dir.display()))
}

/// Replaces whatever is at `path` with a symbolic link to `target`, atomically.
pub fn symlink_atomic(path: &Path, target: &Path) -> anyhow::Result<()> {
    let dir = parent_of(path)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(".r2a-{name}.{}", std::process::id()));
    // A leftover from an interrupted run would make symlink() fail.
    let _ = std::fs::remove_file(&temp);
    std::os::unix::fs::symlink(target, &temp)
        .with_context(|| format!("creating symbolic link {}", temp.display()))?;
    std::fs::rename(&temp, path)
        .with_context(|| format!("renaming {} to {}", temp.display(), path.display()))?;
    sync_dir(dir)
}

fn parent_of(path: &Path) -> anyhow::Result<&Path> {
    path.parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .with_context(|| format!("{} has no parent folder", path.display()))
}

/// Makes `to` a copy of `from` whose files are hard links to the originals: instant, and
/// safe as long as every later change replaces or unlinks a file instead of writing into
/// it (which `write_atomic` and `remove_any` do).
pub fn link_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    Command::new("cp")
        .args(["-a", "--link", "--"])
        .arg(from)
        .arg(to)
        .run()
        .with_context(|| format!("linking {} to {}", from.display(), to.display()))
}

/// Removes a tree if it exists.
pub fn remove_tree(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// The paths under `root` matching an absolute image path whose last component may hold
/// `*` wildcards (`/etc/ssh/ssh_host_*`). Links are matched, never followed.
pub fn glob_in(root: &Path, pattern: &str) -> anyhow::Result<Vec<PathBuf>> {
    let relative = pattern.trim_start_matches('/');
    let (dir, name) = relative.rsplit_once('/').unwrap_or(("", relative));
    anyhow::ensure!(
        !dir.contains('*'),
        "only the last component of {pattern} may hold a wildcard"
    );
    let folder = root.join(dir);
    if !name.contains('*') {
        let path = folder.join(name);
        return Ok(path
            .symlink_metadata()
            .is_ok()
            .then_some(path)
            .into_iter()
            .collect());
    }
    let Ok(entries) = std::fs::read_dir(&folder) else {
        return Ok(Vec::new());
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| wildcard_match(name, &entry.file_name().to_string_lossy()))
        .map(|entry| entry.path())
        .collect();
    found.sort();
    Ok(found)
}

/// Sets the process's umask to 022: artifacts must not depend on the user's, so folders
/// r2a-image makes and files its tools write (dpkg's maintainer scripts, xorriso's
/// folders in a seed) get the modes Debian expects. Files that hold secrets get their
/// mode explicitly.
pub fn use_artifact_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
}

/// Removes a file, link or whole folder.
pub fn remove_any(path: &Path) -> anyhow::Result<()> {
    let metadata = path
        .symlink_metadata()
        .with_context(|| format!("reading {}", path.display()))?;
    if metadata.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
    .with_context(|| format!("removing {}", path.display()))
}

/// Whether `name` matches the shell pattern `pattern` (`*`, `?`, `[...]`).
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    glob::Pattern::new(pattern).is_ok_and(|pattern| pattern.matches(name))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_file_with_its_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep/er/file.json");
        write_atomic(&path, b"first", 0o600).unwrap();
        write_atomic(&path, b"second", 0o640).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second");
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(metadata.mode() & 0o7777, 0o640);
        let names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["file.json"]);
    }

    #[test]
    fn an_atomic_write_keeps_the_requested_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("owned");
        let mine = std::fs::metadata(dir.path()).unwrap();
        let owner = Owner {
            uid: mine.uid(),
            gid: mine.gid(),
        };
        write_atomic_owned(&path, b"x", 0o644, Some(owner)).unwrap();
        let written = std::fs::metadata(&path).unwrap();
        assert_eq!((written.uid(), written.gid()), (owner.uid, owner.gid));
    }

    #[test]
    fn an_atomic_symlink_replaces_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("link");
        std::fs::write(&path, "was a file").unwrap();
        symlink_atomic(&path, Path::new("/etc/target")).unwrap();
        assert_eq!(std::fs::read_link(&path).unwrap(), Path::new("/etc/target"));
    }

    #[test]
    fn reading_a_missing_file_gives_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_optional(&dir.path().join("none")).unwrap(), None);
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("ssh_host_*", "ssh_host_ed25519_key"));
        assert!(wildcard_match("*.log", "dpkg.log"));
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("a*b*c", "a-x-b-y-c"));
        assert!(!wildcard_match("a*b*c", "a-x-c"));
        assert!(!wildcard_match("*.log", "dpkg.log.1"));
        assert!(!wildcard_match("ab*ba", "aba"));
    }

    #[test]
    fn glob_matches_only_the_last_component() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/ssh")).unwrap();
        std::fs::write(dir.path().join("etc/ssh/ssh_host_rsa_key"), "").unwrap();
        std::fs::write(dir.path().join("etc/ssh/sshd_config"), "").unwrap();
        let found = glob_in(dir.path(), "/etc/ssh/ssh_host_*").unwrap();
        assert_eq!(found, vec![dir.path().join("etc/ssh/ssh_host_rsa_key")]);
        assert!(glob_in(dir.path(), "/nonexistent/*").unwrap().is_empty());
        assert!(glob_in(dir.path(), "/e*/x").is_err());
    }

    #[test]
    fn atomic_write_sets_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"x", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
