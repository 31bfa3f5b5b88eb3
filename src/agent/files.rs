//! The node-files step: installs this node's tree from `/usr/lib/r2a/nodes/<node>/`
//! into `/`.
//!
//! The builder renders the files that differ per node (`etc/patroni/config.yml`,
//! `etc/default/etcd`, ...) for every node of the role, with their final modes and
//! owners. Each file is written atomically with the tree's mode and numeric owner
//! (the ids come from the same image, so they mean the same users).

use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::config::NODE_TREES_DIR;
use super::steps::{Context, Outcome};
use crate::fsutil::{Owner, symlink_atomic, write_atomic_owned};

/// Installs the node's tree; files already identical (content, mode, owner) are left
/// alone.
pub fn ensure_node_files(context: &mut Context<'_>) -> anyhow::Result<Outcome> {
    let tree_image_path = format!("{NODE_TREES_DIR}/{}", context.node.name);
    let tree = context.root.path(&tree_image_path);
    if !tree.is_dir() {
        return Ok(Outcome::unchanged(format!(
            "no per-node files ({tree_image_path} does not exist)"
        )));
    }
    let entries = tree_entries(&tree)?;
    if context.host.dry_run() {
        let mut differing = Vec::new();
        for relative in &entries {
            let target = context.root.path("/").join(relative);
            if !matches(&tree.join(relative), &target)? {
                differing.push(format!("/{}", relative.display()));
            }
        }
        return Ok(match differing.is_empty() {
            true => Outcome::unchanged(format!(
                "{} entries of {tree_image_path} already in place",
                entries.len()
            )),
            false => Outcome::changed(format!(
                "would install {} of {} entries from {tree_image_path}: {}",
                differing.len(),
                entries.len(),
                differing.join(", ")
            )),
        });
    }
    let mut installed = 0;
    for relative in &entries {
        let source = tree.join(relative);
        let target = context.root.path("/").join(relative);
        if install(&source, &target)? {
            installed += 1;
        }
    }
    // Verify: every entry now matches.
    for relative in &entries {
        let (source, target) = (tree.join(relative), context.root.path("/").join(relative));
        if !matches(&source, &target)? {
            bail!(
                "{} still differs from {} after installing it",
                target.display(),
                source.display()
            );
        }
    }
    let files = entries.len();
    Ok(if installed == 0 {
        Outcome::unchanged(format!(
            "{files} entries of {tree_image_path} already in place"
        ))
    } else {
        Outcome::changed(format!(
            "installed {installed} of {files} entries from {tree_image_path}"
        ))
    })
}

/// The tree's entries relative to it, parents before children, in name order.
fn tree_entries(tree: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for entry in walkdir::WalkDir::new(tree).min_depth(1).sort_by_file_name() {
        let entry = entry.with_context(|| format!("walking {}", tree.display()))?;
        let relative = entry
            .path()
            .strip_prefix(tree)
            .with_context(|| format!("walking {}", tree.display()))?;
        entries.push(relative.to_path_buf());
    }
    Ok(entries)
}

/// Makes `target` match `source`; returns whether it changed anything.
fn install(source: &Path, target: &Path) -> anyhow::Result<bool> {
    if matches(source, target)? {
        return Ok(false);
    }
    let metadata = symlink_metadata(source)?.context("the tree entry vanished")?;
    let file_type = metadata.file_type();
    if file_type.is_dir() {
        // Folders that exist belong to packages (e.g. /etc/patroni owned by postgres);
        // only missing ones are created, with the tree's mode and owner.
        std::fs::create_dir(target).with_context(|| format!("creating {}", target.display()))?;
        std::fs::set_permissions(target, PermissionsExt::from_mode(metadata.mode() & 0o7777))
            .with_context(|| format!("setting the mode of {}", target.display()))?;
        std::os::unix::fs::lchown(target, Some(metadata.uid()), Some(metadata.gid()))
            .with_context(|| format!("setting the owner of {}", target.display()))?;
    } else if file_type.is_file() {
        if symlink_metadata(target)?.is_some_and(|existing| existing.is_dir()) {
            bail!(
                "{} is a folder, but {} is a file",
                target.display(),
                source.display()
            );
        }
        let content =
            std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
        let owner = Owner {
            uid: metadata.uid(),
            gid: metadata.gid(),
        };
        write_atomic_owned(target, &content, metadata.mode() & 0o7777, Some(owner))?;
    } else if file_type.is_symlink() {
        let link = std::fs::read_link(source)
            .with_context(|| format!("reading link {}", source.display()))?;
        symlink_atomic(target, &link)?;
    } else {
        bail!(
            "{} is neither a file, a folder nor a symbolic link",
            source.display()
        );
    }
    Ok(true)
}

/// Whether `target` already is what `source` describes. Existing folders always match.
fn matches(source: &Path, target: &Path) -> anyhow::Result<bool> {
    let wanted = symlink_metadata(source)?.context("the tree entry vanished")?;
    let Some(existing) = symlink_metadata(target)? else {
        return Ok(false);
    };
    let (wanted_type, existing_type) = (wanted.file_type(), existing.file_type());
    if wanted_type.is_dir() {
        return Ok(existing_type.is_dir());
    }
    if wanted_type.is_symlink() {
        return Ok(existing_type.is_symlink()
            && std::fs::read_link(source).ok() == std::fs::read_link(target).ok());
    }
    if !existing_type.is_file()
        || !same_mode_and_owner(&wanted, &existing)
        || wanted.len() != existing.len()
    {
        return Ok(false);
    }
    let read =
        |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    Ok(read(source)? == read(target)?)
}

fn same_mode_and_owner(wanted: &Metadata, existing: &Metadata) -> bool {
    wanted.mode() & 0o7777 == existing.mode() & 0o7777
        && wanted.uid() == existing.uid()
        && wanted.gid() == existing.gid()
}

fn symlink_metadata(path: &Path) -> anyhow::Result<Option<Metadata>> {
    match std::fs::symlink_metadata(path) {
        Ok(metadata) => Ok(Some(metadata)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::Config;
    use crate::agent::host::ScriptedHost;
    use crate::agent::testing::FakeRoot;

    fn run(fake: &FakeRoot) -> Outcome {
        let config = Config::load(&fake.root).unwrap();
        let node = config.cluster.node("db1").unwrap().clone();
        let mut host = ScriptedHost::new(false);
        let mut context = Context::new(&fake.root, &mut host, &config, &node);
        ensure_node_files(&mut context).unwrap()
    }

    #[test]
    fn the_node_tree_is_installed_with_its_modes_then_left_alone() {
        let fake = FakeRoot::db();
        fake.write(
            "/usr/lib/r2a/nodes/db1/etc/patroni/config.yml",
            "name: db1\n",
        );
        fake.write(
            "/usr/lib/r2a/nodes/db2/etc/patroni/config.yml",
            "name: db2\n",
        );
        let source = fake
            .root
            .path("/usr/lib/r2a/nodes/db1/etc/patroni/config.yml");
        std::fs::set_permissions(&source, PermissionsExt::from_mode(0o600)).unwrap();
        fake.write("/etc/patroni/config.yml", "name: template\n");

        let first = run(&fake);
        assert!(first.changed, "{first:?}");
        assert_eq!(fake.read("/etc/patroni/config.yml"), "name: db1\n");
        let mode = std::fs::metadata(fake.root.path("/etc/patroni/config.yml"))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o7777, 0o600);

        let before = fake.snapshot();
        let second = run(&fake);
        assert!(!second.changed, "{second:?}");
        assert_eq!(fake.snapshot(), before, "a second run changes no file");
    }

    #[test]
    fn a_mode_change_alone_is_repaired() {
        let fake = FakeRoot::db();
        fake.write("/usr/lib/r2a/nodes/db1/etc/default/etcd", "ETCD_NAME=db1\n");
        fake.write("/etc/default/etcd", "ETCD_NAME=db1\n");
        let target = fake.root.path("/etc/default/etcd");
        std::fs::set_permissions(&target, PermissionsExt::from_mode(0o666)).unwrap();
        let source = fake.root.path("/usr/lib/r2a/nodes/db1/etc/default/etcd");
        std::fs::set_permissions(&source, PermissionsExt::from_mode(0o640)).unwrap();
        assert!(run(&fake).changed);
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o7777, 0o640);
    }

    #[test]
    fn a_node_without_a_tree_has_nothing_to_do() {
        let fake = FakeRoot::db();
        let outcome = run(&fake);
        assert!(!outcome.changed);
        assert!(
            outcome.detail.contains("no per-node files"),
            "{}",
            outcome.detail
        );
    }
}
