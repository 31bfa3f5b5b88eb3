//! The file system the agent works on: every path resolved under `--root`, and writes
//! that are atomic (temp file, fsync, rename, fsync of the folder), so a power cut
//! leaves either the old file or the new one, never half of one.

use std::fs::{File, Permissions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The folder the agent treats as `/`: the real root on a node, a temp dir in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    /// A root at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Root {
        Root { dir: dir.into() }
    }

    /// The root a command line's `--root DIR` names. `/` itself is the running system.
    /// Any other way to name it (`/tmp/..`, a link to `/`, a bind mount of it) is refused:
    /// the agent writes into an offline tree as it never would into the running system,
    /// so it must never take the running system for one.
    pub fn from_command_line(dir: &Path) -> anyhow::Result<Root> {
        if dir == Path::new("/") {
            return Ok(Root::new("/"));
        }
        let resolved = std::fs::canonicalize(dir).map_err(|error| {
            super::config::config_error(format!(
                "--root {}: {error}; give the folder of an image tree",
                dir.display()
            ))
        })?;
        let same_as_system_root = |path: &Path| {
            use std::os::unix::fs::MetadataExt;
            match (std::fs::metadata(path), std::fs::metadata("/")) {
                (Ok(this), Ok(system)) => (this.dev(), this.ino()) == (system.dev(), system.ino()),
                _ => false,
            }
        };
        if resolved == Path::new("/") || same_as_system_root(&resolved) {
            return Err(super::config::config_error(format!(
                "--root {} is this system's own `/`, which r2a-node would write into as an \
                 offline tree; leave --root out to act on this system",
                dir.display()
            )));
        }
        Ok(Root::new(resolved))
    }

    /// The folder itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this is the running system's `/`.
    pub fn is_system_root(&self) -> bool {
        self.dir == Path::new("/")
    }

    /// Where the image path `absolute` (e.g. `/etc/hosts`) is under this root.
    pub fn path(&self, absolute: impl AsRef<Path>) -> PathBuf {
        let absolute = absolute.as_ref();
        self.dir
            .join(absolute.strip_prefix("/").unwrap_or(absolute))
    }
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

/// Replaces `path` with `contents` atomically, with `mode`, owned by the agent's user.
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
        .prefix(".r2a-")
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn a_root_that_is_the_system_root_by_another_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("system");
        std::os::unix::fs::symlink("/", &link).unwrap();
        let tmp_parent = std::env::temp_dir().join("..");
        for named in [link.as_path(), tmp_parent.as_path()] {
            let error = Root::from_command_line(named).unwrap_err();
            assert!(super::super::config::is_config_error(&error), "{named:?}");
            assert!(
                format!("{error}").contains("this system's own `/`"),
                "{error}"
            );
        }
        for system in ["/", "//"] {
            assert!(
                Root::from_command_line(Path::new(system))
                    .unwrap()
                    .is_system_root()
            );
        }
        let tree = Root::from_command_line(dir.path()).unwrap();
        assert!(!tree.is_system_root());
        assert_eq!(tree.dir(), std::fs::canonicalize(dir.path()).unwrap());
        assert!(Root::from_command_line(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn paths_resolve_under_the_root() {
        let root = Root::new("/tmp/x");
        assert_eq!(root.path("/etc/hosts"), Path::new("/tmp/x/etc/hosts"));
        assert!(!root.is_system_root());
        assert_eq!(Root::new("/").path("/etc/hosts"), Path::new("/etc/hosts"));
        assert!(Root::new("/").is_system_root());
    }

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
}
