//! The node payload of `node_data = "seed"`: the files a node's seed carries for it (its
//! tree under `/usr/lib/r2a/nodes/<node>/` and the cluster file), as one tar archive that
//! the builder packs and `r2a-node` unpacks at first boot. Owners travel as names, which
//! the agent resolves against the image it runs in.

use std::path::{Component, Path};

use anyhow::{Context as _, bail};

use crate::overlay::{CLUSTER_FILE, NODE_TREES, OverlayFile};

/// The payload's name on a NoCloud seed and in a seed folder.
pub const FILE_NAME: &str = "r2a-node.tar";

/// One file of a payload, as the agent reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadFile {
    /// Absolute path in the image.
    pub path: String,
    /// Content.
    pub content: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    /// Owner's name.
    pub owner: String,
    /// Group's name.
    pub group: String,
}

/// Packs `files` (sorted by path, times set to `epoch`): the same files give the same
/// bytes.
pub fn pack(files: &[OverlayFile], epoch: i64) -> anyhow::Result<Vec<u8>> {
    let mut sorted: Vec<&OverlayFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut archive = tar::Builder::new(Vec::new());
    archive.mode(tar::HeaderMode::Deterministic);
    for file in sorted {
        check_path(&file.path)?;
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(file.content.len() as u64);
        header.set_mode(file.mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(u64::try_from(epoch).unwrap_or(0));
        header
            .set_username(&file.owner)
            .and_then(|()| header.set_groupname(&file.group))
            .with_context(|| format!("owner of {} in the node payload", file.path))?;
        archive
            .append_data(
                &mut header,
                file.path.trim_start_matches('/'),
                file.content.as_slice(),
            )
            .with_context(|| format!("adding {} to the node payload", file.path))?;
    }
    Ok(archive.into_inner()?)
}

/// Reads a payload, refusing any path outside the node trees and the cluster file.
pub fn unpack(bytes: &[u8]) -> anyhow::Result<Vec<PayloadFile>> {
    let mut archive = tar::Archive::new(bytes);
    let mut files = Vec::new();
    for entry in archive.entries().context("reading the node payload")? {
        let mut entry = entry.context("reading the node payload")?;
        let header = entry.header().clone();
        let path = format!("/{}", entry.path()?.display());
        if header.entry_type() != tar::EntryType::Regular {
            bail!("the node payload's entry {path} is not a regular file");
        }
        check_path(&path)?;
        let name = |value: Result<Option<&str>, _>, what: &str| -> anyhow::Result<String> {
            match value {
                Ok(Some(name)) if !name.is_empty() => Ok(name.to_string()),
                _ => bail!("the node payload's entry {path} names no {what}"),
            }
        };
        let owner = name(header.username(), "owner")?;
        let group = name(header.groupname(), "group")?;
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content)
            .with_context(|| format!("reading {path} from the node payload"))?;
        files.push(PayloadFile {
            mode: header.mode()? & 0o7777,
            path,
            content,
            owner,
            group,
        });
    }
    Ok(files)
}

/// A payload holds the cluster file and files under the node trees, nothing else: a seed
/// must not be able to replace arbitrary files of the image.
fn check_path(path: &str) -> anyhow::Result<()> {
    let clean = Path::new(path)
        .components()
        .all(|part| matches!(part, Component::RootDir | Component::Normal(_)));
    let tree = Path::new(NODE_TREES);
    let allowed = path == CLUSTER_FILE
        || Path::new(path)
            .strip_prefix(tree)
            .is_ok_and(|rest| rest.components().count() >= 2);
    if !(clean && allowed) {
        bail!(
            "the node payload may not hold {path}: only {CLUSTER_FILE} and files under {NODE_TREES}/<node>/"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str, mode: u32, owner: &str) -> OverlayFile {
        OverlayFile {
            path: path.to_string(),
            content: content.as_bytes().to_vec(),
            mode,
            owner: owner.to_string(),
            group: owner.to_string(),
            origin: "test".into(),
        }
    }

    #[test]
    fn a_payload_round_trips_sorted_and_the_same_files_give_the_same_bytes() {
        let files = [
            file(
                "/usr/lib/r2a/nodes/db1/etc/patroni/config.yml",
                "scope: x\n",
                0o600,
                "postgres",
            ),
            file("/etc/r2a/cluster.json", "{}\n", 0o644, "root"),
        ];
        let bytes = pack(&files, 1_754_697_600).unwrap();
        let reversed = [files[1].clone(), files[0].clone()];
        assert_eq!(bytes, pack(&reversed, 1_754_697_600).unwrap());
        let read = unpack(&bytes).unwrap();
        assert_eq!(
            read,
            vec![
                PayloadFile {
                    path: "/etc/r2a/cluster.json".into(),
                    content: b"{}\n".to_vec(),
                    mode: 0o644,
                    owner: "root".into(),
                    group: "root".into(),
                },
                PayloadFile {
                    path: "/usr/lib/r2a/nodes/db1/etc/patroni/config.yml".into(),
                    content: b"scope: x\n".to_vec(),
                    mode: 0o600,
                    owner: "postgres".into(),
                    group: "postgres".into(),
                },
            ]
        );
    }

    #[test]
    fn paths_outside_the_node_trees_are_refused() {
        for path in [
            "/etc/shadow",
            "/usr/lib/r2a/nodes/db1",
            "/usr/lib/r2a/nodes/db1/../../../../etc/shadow",
            "/usr/lib/r2a/nodesx/db1/etc/hosts",
            "/etc/r2a/cluster.json/x",
        ] {
            let error = pack(&[file(path, "x", 0o644, "root")], 0).unwrap_err();
            assert!(
                format!("{error:#}").contains("may not hold"),
                "{path}: {error:#}"
            );
        }
        for path in ["/etc/r2a/cluster.json", "/usr/lib/r2a/nodes/db1/etc/hosts"] {
            assert!(pack(&[file(path, "x", 0o644, "root")], 0).is_ok(), "{path}");
        }
    }

    #[test]
    fn an_archive_with_a_link_or_a_foreign_path_is_refused() {
        let mut archive = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        archive
            .append_link(
                &mut header,
                "usr/lib/r2a/nodes/db1/etc/hosts",
                "/etc/shadow",
            )
            .unwrap();
        let error = unpack(&archive.into_inner().unwrap()).unwrap_err();
        assert!(
            format!("{error:#}").contains("not a regular file"),
            "{error:#}"
        );

        let mut archive = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(1);
        header.set_mode(0o644);
        header.set_username("root").unwrap();
        header.set_groupname("root").unwrap();
        archive
            .append_data(&mut header, "etc/passwd", &b"x"[..])
            .unwrap();
        let error = unpack(&archive.into_inner().unwrap()).unwrap_err();
        assert!(
            format!("{error:#}").contains("may not hold /etc/passwd"),
            "{error:#}"
        );
    }
}
