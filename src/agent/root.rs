//! The file system the agent works on: every path resolved under `--root`. Writes go
//! through [`crate::fsutil`]'s atomic helpers, the builder's own.

use std::path::{Path, PathBuf};

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

#[cfg(test)]
mod tests {
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
}
