//! The unpacked role trees the nodes' overlays lie on. Each role tarball is unpacked once
//! (with numeric owners and file capabilities), into a folder named after its sha256:
//! `roles/<role>/<first 16 hex of the sha256>/tree`, with the whole sha256 beside it in
//! `sha256`, written last (a folder with a matching `sha256` holds a whole tree). Trees
//! are shared read-only by the nodes and never change once unpacked.
//!
//! An overlay's upper folder is only valid over the lower it was made on, so each node's
//! record names its tree ([`NodeRecord::tree`](super::state::NodeRecord::tree)), written
//! before the overlay is first mounted and cleared by `down` once the node's folder is
//! gone. [`choose_lower`] decides which tree a boot uses: a node that kept an upper folder
//! boots on its recorded tree, whatever the role's tarball is now; a node without one
//! (a first boot) takes the current tarball's tree. Rebuilding a role image therefore
//! serves new nodes without touching the ones that run. `up` removes, after unpacking a
//! new tree, the role's trees no node's record names ([`unused_entries`]), and the single
//! `roles/<role>/tree` of older harnesses once every recorded node names its own tree;
//! `down` keeps the trees for the next `up`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::Harness;
use super::rootfs::{self, NodeDirs};
use super::state::Record;
use crate::exec::CommandExt;
use crate::fsutil;

/// How many hex digits of the tarball's sha256 name its tree's folder.
pub const KEY_LEN: usize = 16;
/// The staging folder of an unpack, in the role's folder.
const STAGING: &str = ".unpacking";
/// The single tree per role of older harnesses, and its stamp.
const LEGACY: [&str; 2] = ["tree", "tree.sha256"];

/// The folder holding every unpacked tree of `role`.
pub fn role_dir(state_dir: &Path, role: &str) -> PathBuf {
    state_dir.join("roles").join(role)
}

/// The folder of the tree unpacked from the tarball whose sha256 is `sha256`.
pub fn tree_dir(state_dir: &Path, role: &str, sha256: &str) -> PathBuf {
    role_dir(state_dir, role).join(&sha256[..KEY_LEN.min(sha256.len())])
}

/// The tree in a tree folder (an overlay's lower).
pub fn tree_of(dir: &Path) -> PathBuf {
    dir.join("tree")
}

fn stamp_of(tree: &Path) -> PathBuf {
    tree.with_file_name("sha256")
}

/// Whether `tree` was unpacked whole (from the tarball with this sha256, when given).
pub fn is_whole(tree: &Path, sha256: Option<&str>) -> bool {
    let Ok(stamp) = std::fs::read_to_string(stamp_of(tree)) else {
        return false;
    };
    let stamp = stamp.trim();
    !stamp.is_empty() && sha256.is_none_or(|sha256| stamp == sha256) && tree.is_dir()
}

/// Unpacks `tarball` (whose sha256 is `sha256`) as a tree of `role`; returns the tree.
/// No overlay may lie on a tree of that folder (its stamp is missing, so none does).
pub fn unpack(
    state_dir: &Path,
    role: &str,
    tarball: &Path,
    sha256: &str,
) -> anyhow::Result<PathBuf> {
    let dir = tree_dir(state_dir, role, sha256);
    let tree = tree_of(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let staging = role_dir(state_dir, role).join(STAGING);
    fsutil::remove_tree(&staging)?;
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    Command::new("tar")
        .args(["-xzf"])
        .arg(tarball)
        .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-C"])
        .arg(&staging)
        .run()
        .with_context(|| format!("unpacking {}", tarball.display()))?;
    fsutil::remove_tree(&tree)?;
    std::fs::rename(&staging, &tree)
        .with_context(|| format!("moving the unpacked tree to {}", tree.display()))?;
    fsutil::write_atomic(&stamp_of(&tree), format!("{sha256}\n").as_bytes(), 0o644)?;
    Ok(tree)
}

/// What the harness knows of a node's overlay when it boots the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTreeFacts<'a> {
    /// The tree its record names.
    pub recorded: Option<&'a Path>,
    /// Whether that tree is there, whole.
    pub recorded_whole: bool,
    /// Whether the node has an upper folder (changes made over some tree).
    pub has_upper: bool,
}

/// Why a node cannot boot on any tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LowerProblem {
    /// It has an upper folder, but no record of the tree it was made on (a state folder
    /// of an older harness).
    Unrecorded,
    /// Its upper folder was made on this tree, which is gone or incomplete.
    Gone(PathBuf),
}

impl LowerProblem {
    /// The message for `node`, whose upper folder is `upper`.
    pub fn message(&self, node: &str, upper: &Path, manifest: &Path) -> String {
        let recover = format!(
            "`r2a-image cluster {} down` and then `up` start the cluster over on the current images",
            manifest.display()
        );
        match self {
            LowerProblem::Unrecorded => format!(
                "node {node} has its own changes ({}) but the state record does not say which \
                 role tree they were made on (a state folder of an older r2a-image?); {recover}",
                upper.display()
            ),
            LowerProblem::Gone(tree) => format!(
                "node {node} was booted on the role tree {}, which is missing or incomplete; its \
                 changes ({}) only fit that tree; {recover}",
                tree.display(),
                upper.display()
            ),
        }
    }
}

/// The tree a node boots on: the one its upper folder was made on, or `current` (the
/// role's current tarball's tree) when it has no upper folder yet.
pub fn choose_lower(facts: NodeTreeFacts, current: &Path) -> Result<PathBuf, LowerProblem> {
    match (facts.has_upper, facts.recorded) {
        (false, _) => Ok(current.to_path_buf()),
        (true, None) => Err(LowerProblem::Unrecorded),
        (true, Some(tree)) if facts.recorded_whole => Ok(tree.to_path_buf()),
        (true, Some(tree)) => Err(LowerProblem::Gone(tree.to_path_buf())),
    }
}

/// Every tree a node's record names.
pub fn recorded_trees(record: &Record) -> BTreeSet<PathBuf> {
    record
        .nodes
        .values()
        .filter_map(|node| node.tree.clone())
        .collect()
}

/// The entries of a role's folder (`names`, in `role_dir`) to remove once `current` is
/// unpacked: tree folders no node's record names (in `recorded`), and the single tree of
/// an older harness once no node may lie on it (`legacy_in_use`: a recorded node has no
/// tree of its own in the record).
pub fn unused_entries(
    role_dir: &Path,
    names: &[String],
    current: &Path,
    recorded: &BTreeSet<PathBuf>,
    legacy_in_use: bool,
) -> Vec<String> {
    let is_key = |name: &str| {
        name.len() == KEY_LEN
            && name
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    };
    names
        .iter()
        .filter(|name| {
            if is_key(name) {
                let tree = tree_of(&role_dir.join(name));
                tree != current && !recorded.contains(&tree)
            } else {
                LEGACY.contains(&name.as_str()) && !legacy_in_use
            }
        })
        .cloned()
        .collect()
}

/// Removes the trees of `role` that no node of `record` lies on, but `current`.
pub fn remove_unused(
    state_dir: &Path,
    role: &str,
    current: &Path,
    record: &Record,
) -> anyhow::Result<()> {
    let dir = role_dir(state_dir, role);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    let legacy_in_use = record.nodes.values().any(|node| node.tree.is_none());
    let unused = unused_entries(
        &dir,
        &names,
        current,
        &recorded_trees(record),
        legacy_in_use,
    );
    for name in unused {
        eprintln!(
            "r2a-image: cluster: removing {}, which no node uses",
            dir.join(&name).display()
        );
        fsutil::remove_any(&dir.join(name))?;
    }
    Ok(())
}

impl Harness {
    /// The tree of the role's current tarball, unpacked unless it is already; a new tree
    /// makes the role's trees that no node's record names go.
    pub(super) fn prepare_role(&self, record: &Record, role: &str) -> anyhow::Result<PathBuf> {
        let tarball = rootfs::role_tarball(&self.out, &self.cluster.name, role);
        let sha256 = crate::hash::sha256_file(&tarball)?;
        let tree = tree_of(&tree_dir(&self.state_dir, role, &sha256));
        if is_whole(&tree, Some(&sha256)) {
            return Ok(tree);
        }
        let on_it: Vec<&str> = record
            .nodes
            .iter()
            .filter(|(_, node)| node.tree.as_deref() == Some(tree.as_path()))
            .map(|(name, _)| name.as_str())
            .collect();
        if !on_it.is_empty() {
            bail!(
                "the {role} tree {} is incomplete (its sha256 stamp is missing or differs) \
                 while {} lie on it; `r2a-image cluster {} down` and then `up` start the \
                 cluster over",
                tree.display(),
                on_it.join(", "),
                self.cluster.manifest.path.display()
            );
        }
        eprintln!("r2a-image: cluster: unpacking {}", tarball.display());
        let tree = unpack(&self.state_dir, role, &tarball, &sha256)?;
        remove_unused(&self.state_dir, role, &tree, record)?;
        Ok(tree)
    }

    /// The tree a node boots on ([`choose_lower`]), `current` being its role's.
    pub(super) fn lower_of(
        &self,
        record: &Record,
        node: &str,
        current: &Path,
    ) -> anyhow::Result<PathBuf> {
        let recorded = record.nodes.get(node).and_then(|n| n.tree.as_deref());
        let upper = NodeDirs::new(&self.state_dir, node).upper();
        let facts = NodeTreeFacts {
            recorded,
            recorded_whole: recorded.is_some_and(|tree| is_whole(tree, None)),
            has_upper: upper.exists(),
        };
        choose_lower(facts, current).map_err(|problem| {
            anyhow::anyhow!(problem.message(node, &upper, &self.cluster.manifest.path))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_a_node_boots_on() {
        let (old, new) = (
            Path::new("/s/roles/db/aaaa/tree"),
            Path::new("/s/roles/db/bbbb/tree"),
        );
        let gone = || Err(LowerProblem::Gone(old.to_path_buf()));
        // (recorded, recorded whole, has upper, choice); `new` is the current tree
        let table = [
            // A first boot.
            (None, false, false, Ok(new.to_path_buf())),
            // Booted before on the tree that is still current.
            (Some(new), true, true, Ok(new.to_path_buf())),
            // Booted before on an older image: stays on it.
            (Some(old), true, true, Ok(old.to_path_buf())),
            // Its tree is gone.
            (Some(old), false, true, gone()),
            // Recorded, but the overlay was never made (or `down` stopped midway).
            (Some(old), true, false, Ok(new.to_path_buf())),
            (Some(old), false, false, Ok(new.to_path_buf())),
            // Changes of an older harness, over an unknown tree.
            (None, false, true, Err(LowerProblem::Unrecorded)),
        ];
        for (recorded, recorded_whole, has_upper, choice) in table {
            let facts = NodeTreeFacts {
                recorded,
                recorded_whole,
                has_upper,
            };
            assert_eq!(choose_lower(facts, new), choice, "{facts:?}");
        }
        let message = LowerProblem::Gone(old.to_path_buf()).message(
            "db1",
            Path::new("/s/nodes/db1/upper"),
            Path::new("c.toml"),
        );
        assert!(
            message.contains("node db1") && message.contains("cluster c.toml down` and then `up`"),
            "{message}"
        );
    }

    #[test]
    fn trees_no_node_uses_go() {
        let dir = Path::new("/s/roles/db");
        let key = |c: char| c.to_string().repeat(KEY_LEN);
        let tree = |c: char| tree_of(&dir.join(key(c)));
        let names: Vec<String> = [
            key('a'),
            key('b'),
            key('c'),
            ".unpacking".to_string(),
            "tree".to_string(),
            "tree.sha256".to_string(),
            "notes".to_string(),
        ]
        .into();
        // (current, recorded, legacy in use, removed)
        let table: [(char, &[char], bool, &[&str]); 4] = [
            (
                'c',
                &['a'],
                false,
                &["bbbbbbbbbbbbbbbb", "tree", "tree.sha256"],
            ),
            ('c', &['a', 'b'], true, &[]),
            ('a', &[], true, &["bbbbbbbbbbbbbbbb", "cccccccccccccccc"]),
            ('a', &['a', 'b', 'c'], false, &["tree", "tree.sha256"]),
        ];
        for (current, recorded, legacy_in_use, removed) in table {
            let recorded: BTreeSet<PathBuf> = recorded.iter().map(|c| tree(*c)).collect();
            assert_eq!(
                unused_entries(dir, &names, &tree(current), &recorded, legacy_in_use),
                removed,
                "{current} {recorded:?}"
            );
        }
    }

    #[test]
    fn each_tarball_has_its_own_tree_and_unused_ones_go() {
        let work = tempfile::tempdir().unwrap();
        let state = work.path().join("state");
        let tarball = |content: &str| {
            let source = work.path().join("source");
            std::fs::create_dir_all(&source).unwrap();
            std::fs::write(source.join("image"), content).unwrap();
            let tarball = work.path().join(format!("{content}.tar.gz"));
            Command::new("tar")
                .arg("-czf")
                .arg(&tarball)
                .arg("-C")
                .arg(&source)
                .arg(".")
                .run()
                .unwrap();
            let sha256 = crate::hash::sha256_file(&tarball).unwrap();
            (tarball, sha256)
        };
        let (old, old_sha) = tarball("old");
        let (new, new_sha) = tarball("new");
        let old_tree = unpack(&state, "db", &old, &old_sha).unwrap();
        assert_eq!(old_tree, tree_of(&tree_dir(&state, "db", &old_sha)));
        assert!(old_tree.ends_with(format!("roles/db/{}/tree", &old_sha[..KEY_LEN])));
        assert!(is_whole(&old_tree, Some(&old_sha)) && !is_whole(&old_tree, Some(&new_sha)));
        assert_eq!(
            std::fs::read_to_string(old_tree.join("image")).unwrap(),
            "old"
        );

        // db1 lies on the old tree: unpacking the new one keeps it.
        let mut record = Record::default();
        record.node_mut("db1", "db").tree = Some(old_tree.clone());
        let new_tree = unpack(&state, "db", &new, &new_sha).unwrap();
        remove_unused(&state, "db", &new_tree, &record).unwrap();
        assert!(is_whole(&old_tree, None) && is_whole(&new_tree, Some(&new_sha)));
        assert_eq!(
            std::fs::read_to_string(new_tree.join("image")).unwrap(),
            "new"
        );

        // Once no node lies on it, the next unpack removes it.
        record.nodes.clear();
        std::fs::remove_file(stamp_of(&new_tree)).unwrap();
        assert!(!is_whole(&new_tree, None));
        let again = unpack(&state, "db", &new, &new_sha).unwrap();
        remove_unused(&state, "db", &again, &record).unwrap();
        assert!(!old_tree.exists() && is_whole(&again, Some(&new_sha)));
        let left: Vec<_> = std::fs::read_dir(role_dir(&state, "db"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from(&new_sha[..KEY_LEN])]);
    }
}
