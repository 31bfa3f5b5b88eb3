//! User and group names of an image, resolved to the ids of its own `/etc/passwd` and
//! `/etc/group`: the builder gives overlay files their owners with it, and `r2a-node`
//! the files of a node's seed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// User and group ids of an image, from its own `/etc/passwd` and `/etc/group`: the
/// host's ids mean nothing inside the image.
pub struct UserDb {
    users: HashMap<String, u32>,
    groups: HashMap<String, u32>,
    root: PathBuf,
}

impl UserDb {
    /// Reads the tree's user database.
    pub fn read(root: &Path) -> anyhow::Result<UserDb> {
        let table = |file: &str| -> anyhow::Result<HashMap<String, u32>> {
            let path = root.join(file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(text
                .lines()
                .filter_map(|line| {
                    let mut fields = line.split(':');
                    let name = fields.next()?;
                    let id = fields.nth(1)?.parse().ok()?;
                    Some((name.to_string(), id))
                })
                .collect())
        };
        Ok(UserDb {
            users: table("etc/passwd")?,
            groups: table("etc/group")?,
            root: root.to_path_buf(),
        })
    }

    /// The numeric ids of `owner:group` as the image knows them.
    pub fn ids(&self, owner: &str, group: &str) -> anyhow::Result<(u32, u32)> {
        let uid = *self.users.get(owner).with_context(|| {
            format!(
                "user `{owner}` does not exist in the image {}",
                self.root.display()
            )
        })?;
        let gid = *self.groups.get(group).with_context(|| {
            format!(
                "group `{group}` does not exist in the image {}",
                self.root.display()
            )
        })?;
        Ok((uid, gid))
    }

    /// Gives `path` to `owner:group` as the image knows them.
    pub fn chown(&self, path: &Path, owner: &str, group: &str) -> anyhow::Result<()> {
        let (uid, gid) = self.ids(owner, group)?;
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .with_context(|| format!("chown {owner}:{group} {}", path.display()))
    }
}
