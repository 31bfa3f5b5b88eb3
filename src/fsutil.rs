//! Filesystem helpers: atomic writes, tree copies, modes, and globbed removal.

use std::io::Write;
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

/// Writes a file atomically: a temporary file in the same folder, synced, then renamed
/// over the target, so readers see the old content or the new, never a part.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::Builder::new()
        .prefix(".r2a-tmp")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    // Creation masks the mode with the process's umask; a chmod does not.
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode {mode:o} on {}", path.display()))?;
    file.write_all(content)
        .with_context(|| format!("writing {}", path.display()))?;
    file.as_file().sync_all()?;
    file.persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// Copies a whole tree, keeping owners, modes, links, hard links, devices and xattrs
/// (file capabilities matter: `ping` has one). Reflinks are used where the filesystem has them.
pub fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    Command::new("cp")
        .args(["-a", "--reflink=auto", "--"])
        .arg(from)
        .arg(to)
        .run()
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
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
    use super::*;

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
