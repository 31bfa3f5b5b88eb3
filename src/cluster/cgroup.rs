//! One cgroup per container. `systemd-nspawn --keep-unit` puts its container in a
//! `payload` cgroup below its own; two containers started from the same cgroup would
//! share it, and each container's systemd would manage (and stop) the other's services.
//! So every container starts in a cgroup of its own, in the unified (v2) hierarchy and,
//! on hybrid hosts, in systemd's named v1 hierarchy too.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The cgroup hierarchies the harness places containers in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchies {
    /// Where cgroup2 is mounted.
    pub unified: PathBuf,
    /// Where systemd's named v1 hierarchy is mounted, on hybrid hosts.
    pub systemd_v1: Option<PathBuf>,
}

impl Hierarchies {
    /// The hierarchies of this host.
    pub fn detect() -> anyhow::Result<Hierarchies> {
        let path = "/proc/self/mountinfo";
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        parse_mountinfo(&text).context(
            "no cgroup2 hierarchy is mounted; systemd-nspawn needs one \
             (SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1)",
        )
    }

    /// The folders of the cgroup at `relative` in every hierarchy.
    pub fn folders(&self, relative: &str) -> Vec<PathBuf> {
        std::iter::once(&self.unified)
            .chain(&self.systemd_v1)
            .map(|root| root.join(relative))
            .collect()
    }
}

/// Finds the cgroup2 mount and systemd's named v1 hierarchy in `/proc/self/mountinfo`.
pub fn parse_mountinfo(text: &str) -> Option<Hierarchies> {
    let mut unified = None;
    let mut systemd_v1 = None;
    for line in text.lines() {
        // Fields: id parent dev root mountpoint options [optional...] - fstype source superoptions
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = before.split_whitespace().nth(4);
        let mut after = after.split_whitespace();
        let (fstype, _source, options) = (after.next(), after.next(), after.next());
        match (fstype, mount_point) {
            (Some("cgroup2"), Some(point)) if unified.is_none() => {
                unified = Some(PathBuf::from(point));
            }
            (Some("cgroup"), Some(point))
                if options.is_some_and(|o| o.split(',').any(|o| o == "name=systemd")) =>
            {
                systemd_v1 = Some(PathBuf::from(point));
            }
            _ => {}
        }
    }
    unified.map(|unified| Hierarchies {
        unified,
        systemd_v1,
    })
}

/// Creates the folders (and their parents).
pub fn create(folders: &[PathBuf]) -> anyhow::Result<()> {
    for folder in folders {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("creating cgroup {}", folder.display()))?;
    }
    Ok(())
}

/// The `cgroup.procs` files a starting container writes its id to.
pub fn procs_files(folders: &[PathBuf]) -> Vec<PathBuf> {
    folders.iter().map(|f| f.join("cgroup.procs")).collect()
}

/// The ids of every process in the cgroup `folder` and below.
pub fn processes(folder: &Path) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(folder)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name() == "cgroup.procs")
    {
        if let Ok(text) = std::fs::read_to_string(entry.path()) {
            found.extend(
                text.lines()
                    .filter_map(|line| line.trim().parse::<u32>().ok()),
            );
        }
    }
    found
}

/// SIGKILLs every process in the cgroup `folder` and below (a cgroup2 folder: the kernel
/// does it through `cgroup.kill`). Only ever given a cgroup the harness made.
pub fn kill_all(folder: &Path) -> anyhow::Result<()> {
    let control = folder.join("cgroup.kill");
    if !folder.exists() {
        return Ok(());
    }
    std::fs::write(&control, "1").with_context(|| format!("writing {}", control.display()))
}

/// Removes a cgroup folder and the ones the container's systemd made below it (a cgroup
/// folder goes with `rmdir` once it holds no process). Gone already is fine.
pub fn remove(folder: &Path) -> anyhow::Result<()> {
    if !folder.exists() {
        return Ok(());
    }
    let mut folders: Vec<PathBuf> = walkdir::WalkDir::new(folder)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_dir())
        .map(|entry| entry.into_path())
        .collect();
    // Deepest first.
    folders.sort_by_key(|path| std::cmp::Reverse(path.components().count()));
    for path in folders {
        if let Err(error) = std::fs::remove_dir(&path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            bail!("removing cgroup {}: {error}", path.display());
        }
    }
    Ok(())
}

/// Removes the parent folders of a node cgroup up to the hierarchy's root once they are
/// empty (`r2a-cluster/<cluster>`, `r2a-cluster`); a parent other clusters use stays.
pub fn remove_empty_parents(folder: &Path, levels: usize) {
    let mut current = folder.parent();
    for _ in 0..levels {
        let Some(parent) = current else { break };
        if std::fs::remove_dir(parent).is_err() {
            break;
        }
        current = parent.parent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 25 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
32 30 0:29 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
33 30 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
";
    const UNIFIED: &str = "\
25 1 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 25 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
";
    const V1_ONLY: &str = "\
32 30 0:29 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
";

    #[test]
    fn hierarchies_of_hosts() {
        // (mountinfo, unified, systemd v1)
        let table = [
            (
                HYBRID,
                Some("/sys/fs/cgroup/unified"),
                Some("/sys/fs/cgroup/systemd"),
            ),
            (UNIFIED, Some("/sys/fs/cgroup"), None),
            (V1_ONLY, None, None),
        ];
        for (text, unified, systemd) in table {
            let found = parse_mountinfo(text);
            assert_eq!(
                found.as_ref().map(|h| h.unified.to_str().unwrap()),
                unified,
                "{text}"
            );
            assert_eq!(
                found
                    .as_ref()
                    .and_then(|h| h.systemd_v1.as_ref())
                    .map(|p| p.to_str().unwrap()),
                systemd,
                "{text}"
            );
        }
    }

    #[test]
    fn a_node_cgroup_is_in_every_hierarchy() {
        let hierarchies = parse_mountinfo(HYBRID).unwrap();
        assert_eq!(
            hierarchies.folders("r2a-cluster/c/db1"),
            [
                PathBuf::from("/sys/fs/cgroup/unified/r2a-cluster/c/db1"),
                PathBuf::from("/sys/fs/cgroup/systemd/r2a-cluster/c/db1"),
            ]
        );
    }
}
