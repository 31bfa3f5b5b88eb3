//! A node's root file system: an overlay per node over an unpacked tree of its role
//! ([`super::trees`]), whose upper folder keeps the node's own changes across restarts,
//! the node's NoCloud seed in that overlay, and a blank loop-backed data disk for nodes
//! the manifest gives one.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::exec::CommandExt;
use crate::fsutil;
use crate::manifest::{Cluster, Node, NodeData};

/// The size of a data disk when the node declares no `disk` size (as `r2a-image boot`).
pub const DEFAULT_DATA_DISK_BYTES: u64 = 16 << 30;
/// Where cloud-init finds a NoCloud seed inside the root.
pub const SEED_DIR: &str = "var/lib/cloud/seed/nocloud";

/// The folders of one node under the state folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDirs {
    /// `nodes/<node>`.
    pub base: PathBuf,
}

impl NodeDirs {
    /// The folders of `node` in `state_dir`.
    pub fn new(state_dir: &Path, node: &str) -> NodeDirs {
        NodeDirs {
            base: state_dir.join("nodes").join(node),
        }
    }
    /// The overlay's upper folder: everything the node changed.
    pub fn upper(&self) -> PathBuf {
        self.base.join("upper")
    }
    /// The overlay's work folder.
    pub fn work(&self) -> PathBuf {
        self.base.join("work")
    }
    /// The merged tree the container boots from.
    pub fn root(&self) -> PathBuf {
        self.base.join("root")
    }
    /// The container's console.
    pub fn console(&self) -> PathBuf {
        self.base.join("console.log")
    }
    /// Where the container's process writes its id.
    pub fn pid_file(&self) -> PathBuf {
        self.base.join("nspawn.pid")
    }
    /// The file behind the data disk.
    pub fn data_disk(&self) -> PathBuf {
        self.base.join("data-disk.img")
    }
}

/// The built tarball of `role`.
pub fn role_tarball(out: &Path, cluster: &str, role: &str) -> PathBuf {
    out.join(cluster).join(role).join("rootfs.tar.gz")
}

/// The overlay options for a node; overlayfs splits its options at `,` and `:`, so paths
/// holding either (or a space) are refused.
pub fn overlay_options(lower: &Path, dirs: &NodeDirs) -> anyhow::Result<String> {
    let (upper, work) = (dirs.upper(), dirs.work());
    for path in [lower, upper.as_path(), work.as_path()] {
        let text = path.to_string_lossy();
        if text.contains([',', ':', ' ']) || !path.is_absolute() {
            bail!(
                "{} cannot be an overlay folder (it must be absolute and hold no `,`, `:` or \
                 space); choose another --state folder",
                path.display()
            );
        }
    }
    Ok(format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    ))
}

/// Whether `path` is a mount point (listed in `/proc/self/mountinfo`).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    text.lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .any(|point| unescape_mount_path(point) == wanted)
}

/// The mount points at or below `path`.
pub fn mounts_under(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mount_points_under(&text, path)
}

/// The mount points of `mountinfo` at or below `path`.
pub fn mount_points_under(mountinfo: &str, path: &Path) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .map(unescape_mount_path)
        .filter(|point| Path::new(point).starts_with(path))
        .collect()
}

/// Mount points in mountinfo escape space, tab, newline and backslash as octal.
fn unescape_mount_path(text: &str) -> String {
    text.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Mounts the node's overlay over `lower` (a role tree) unless it is mounted.
pub fn mount_overlay(lower: &Path, dirs: &NodeDirs) -> anyhow::Result<()> {
    let root = dirs.root();
    if is_mounted(&root) {
        return Ok(());
    }
    let options = overlay_options(lower, dirs)?;
    for dir in [dirs.upper(), dirs.work(), root.clone()] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &options])
        .arg(&root)
        .run()
        .with_context(|| format!("mounting the overlay at {}", root.display()))
}

/// Unmounts the node's overlay when mounted.
pub fn unmount(path: &Path) -> anyhow::Result<()> {
    if !is_mounted(path) {
        return Ok(());
    }
    Command::new("umount")
        .arg(path)
        .run()
        .with_context(|| format!("unmounting {}", path.display()))
}

/// Writes the node's NoCloud seed into its (mounted) root, so cloud-init and the agent
/// find out which node this is; the files land in the node's upper folder. Under
/// `node_data = "seed"` the node's payload comes from its published seed, `seed_iso`,
/// as a real seed drive would carry it.
pub fn write_seed(
    root: &Path,
    cluster: &Cluster,
    node: &Node,
    seed_iso: Option<&Path>,
) -> anyhow::Result<()> {
    let files = crate::seed::seed_files(cluster, node);
    let dir = root.join(SEED_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, content) in [
        ("meta-data", files.meta_data),
        ("user-data", files.user_data),
        ("network-config", files.network_config),
    ] {
        fsutil::write_atomic(&dir.join(name), content.as_bytes(), 0o644)?;
    }
    if let Some(iso) = seed_iso {
        let payload = dir.join(crate::payload::FILE_NAME);
        let _ = std::fs::remove_file(&payload);
        Command::new("xorriso")
            .args(["-osirrox", "on", "-indev"])
            .arg(iso)
            .args(["-extract", &format!("/{}", crate::payload::FILE_NAME)])
            .arg(&payload)
            .run()
            .with_context(|| format!("reading {}'s payload from {}", node.name, iso.display()))?;
        fsutil::set_mode(&payload, 0o600)?;
    }
    Ok(())
}

/// The node's published seed, which carries its files under `node_data = "seed"`.
pub fn published_seed(
    out: &Path,
    cluster: &Cluster,
    node: &Node,
) -> anyhow::Result<Option<PathBuf>> {
    if cluster.build.node_data != NodeData::Seed {
        return Ok(None);
    }
    let iso = out
        .join(&cluster.name)
        .join("seeds")
        .join(format!("{}.iso", node.name));
    anyhow::ensure!(
        iso.is_file(),
        crate::diag::UsageError(format!(
            "{} is missing: the cluster keeps node data in seeds (node_data = \"seed\"), so \
             each node boots with its seed; write it with `r2a-image seed {} --node {}`",
            iso.display(),
            cluster.manifest.path.display(),
            node.name
        ))
    );
    Ok(Some(iso))
}

/// A loop device over the node's data disk file (made blank and sparse the first time),
/// reused when one is attached already. Containers have no block devices of their own.
pub fn attach_data_disk(file: &Path, size: u64) -> anyhow::Result<PathBuf> {
    if let Some(device) = loop_devices_of(file)?.into_iter().next() {
        return Ok(device);
    }
    if !file.exists() {
        let disk =
            std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?;
        disk.set_len(size)
            .with_context(|| format!("sizing {}", file.display()))?;
    }
    let device = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(file)
        .output_text()
        .with_context(|| format!("attaching {} to a loop device", file.display()))?;
    Ok(PathBuf::from(device.trim()))
}

/// Detaches every loop device backed by `file`.
pub fn detach_data_disk(file: &Path) -> anyhow::Result<()> {
    for device in loop_devices_of(file)? {
        Command::new("losetup")
            .arg("--detach")
            .arg(&device)
            .run()
            .with_context(|| format!("detaching {}", device.display()))?;
    }
    Ok(())
}

/// The loop devices backed by `file` (`losetup --associated`).
fn loop_devices_of(file: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !file.exists() {
        return Ok(Vec::new());
    }
    let text = Command::new("losetup")
        .arg("--associated")
        .arg(file)
        .output_text()?;
    Ok(parse_losetup_associated(&text))
}

/// The devices in `losetup --associated` lines (`/dev/loop3: [2049]:1234 (/path)`).
pub fn parse_losetup_associated(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(device, _)| PathBuf::from(device.trim()))
        .filter(|device| device.starts_with("/dev/"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_name_the_three_folders() {
        let dirs = NodeDirs::new(Path::new("/var/lib/r2a/c"), "db1");
        assert_eq!(
            overlay_options(
                Path::new("/var/lib/r2a/c/roles/db/0123456789abcdef/tree"),
                &dirs
            )
            .unwrap(),
            "lowerdir=/var/lib/r2a/c/roles/db/0123456789abcdef/tree,upperdir=/var/lib/r2a/c/nodes/db1/upper,workdir=/var/lib/r2a/c/nodes/db1/work"
        );
        // (state folder, accepted)
        let table = [
            ("/s", true),
            ("/s,x", false),
            ("/s:x", false),
            ("/a b", false),
            ("s", false),
        ];
        for (state, accepted) in table {
            let dirs = NodeDirs::new(Path::new(state), "db1");
            let lower = Path::new(state).join("roles/db/tree");
            assert_eq!(overlay_options(&lower, &dirs).is_ok(), accepted, "{state}");
        }
    }

    #[test]
    fn loop_devices_from_losetup() {
        let text = "/dev/loop3: [2049]:1234 (/s/nodes/db1/data-disk.img)\n/dev/loop7: [2049]:1234 (/s/nodes/db1/data-disk.img)\n";
        assert_eq!(
            parse_losetup_associated(text),
            [PathBuf::from("/dev/loop3"), PathBuf::from("/dev/loop7")]
        );
        assert!(parse_losetup_associated("").is_empty());
    }

    #[test]
    fn mount_points_below_a_folder() {
        let mountinfo = "\
1 0 0:1 / / rw - ext4 /dev/vda rw
2 1 0:2 / /s/nodes/db1/root rw - overlay overlay rw
3 1 0:3 / /s/nodes/db10/root rw - overlay overlay rw
4 1 0:4 / /s/nodes/a\\040b/root rw - overlay overlay rw
";
        // (folder, mount points)
        let table: [(&str, &[&str]); 3] = [
            ("/s/nodes/db1", &["/s/nodes/db1/root"]),
            ("/s/nodes/a b", &["/s/nodes/a b/root"]),
            ("/s/nodes/db2", &[]),
        ];
        for (folder, points) in table {
            assert_eq!(
                mount_points_under(mountinfo, Path::new(folder)),
                points,
                "{folder}"
            );
        }
    }
}
