//! The shared-volume join step on Gluster clients (admin, api, telephony): the cluster's
//! Gluster volume mounted, at every boot, once the fs nodes serve it.
//!
//! The mount itself is a unit of the image (`overlays/gluster-client/`: the volume on
//! the first fs node, `backup-volfile-servers` listing the others), not enabled: a
//! mount that fails at boot would hold the boot up, or mark it failed, while the fs
//! nodes have not created the volume yet. This step starts it after the network is
//! online and tries again, with the join's backoff, until the volume is mounted.

use std::path::Path;

use anyhow::Context as _;

use super::Progress;
use super::gluster::ensure_secure_access;
use crate::agent::host::{FINDMNT_NOTHING_FOUND, Host, Invocation};
use crate::agent::steps::Context;

/// Where the image's units are.
const UNIT_DIR: &str = "/etc/systemd/system";

/// A Gluster mount unit of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlusterMount {
    /// The unit's name, e.g. `srv-shared.mount`.
    pub unit: String,
    /// `What=`: `server:/volume`.
    pub what: String,
    /// `Where=`: the mount point.
    pub mount_point: String,
}

/// Reads a mount unit's `What=`, `Where=` and `Type=`; `Some` for a Gluster mount.
pub fn parse_mount_unit(unit: &str, text: &str) -> Option<GlusterMount> {
    let value = |key: &str| {
        text.lines()
            .filter_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
            .map(|value| value.trim().to_string())
            .next_back()
    };
    (value("Type")?.as_str() == "glusterfs").then(|| GlusterMount {
        unit: unit.to_string(),
        what: value("What").unwrap_or_default(),
        mount_point: value("Where").unwrap_or_default(),
    })
}

/// The image's Gluster mount units, by name.
pub fn gluster_mounts(unit_dir: &Path) -> anyhow::Result<Vec<GlusterMount>> {
    let mut mounts = Vec::new();
    let entries = match std::fs::read_dir(unit_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(mounts),
        Err(error) => {
            return Err(error).with_context(|| format!("reading {}", unit_dir.display()));
        }
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", unit_dir.display()))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.ends_with(".mount") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path())
            .with_context(|| format!("reading {}", entry.path().display()))?;
        mounts.extend(parse_mount_unit(&name, &text));
    }
    mounts.sort_by(|a, b| a.unit.cmp(&b.unit));
    Ok(mounts)
}

/// One attempt: every Gluster mount of the image mounted, or started and waited for.
pub fn attempt(context: &mut Context<'_>) -> anyhow::Result<Progress> {
    let mounts = gluster_mounts(&context.root.path(UNIT_DIR))?;
    if mounts.is_empty() {
        return Err(crate::agent::config::config_error(format!(
            "role {} lists the join step `shared-volume`, but the image has no glusterfs \
             mount unit in {UNIT_DIR} (add the gluster-client overlay to the role)",
            context.role.name
        )));
    }
    let changed = ensure_secure_access(context)?;
    let mut mounted = Vec::new();
    for mount in &mounts {
        if is_mounted(context.host, mount)? {
            mounted.push(format!("{} at {}", mount.what, mount.mount_point));
            continue;
        }
        if let Err(error) = mount_now(context.host, &mount.unit) {
            return Ok(Progress::waiting(format!(
                "waiting for {} to mount at {} (the fs nodes serve it once they have \
                 created it): {error:#}",
                mount.what, mount.mount_point
            )));
        }
        // The mount helper can report success for a volume that is created but not
        // started yet and leave a moment later: the next attempt checks it stayed.
        return Ok(Progress::waiting(format!(
            "mounted {} at {}; checking that it stays",
            mount.what, mount.mount_point
        )));
    }
    let detail = format!("mounted {}", mounted.join(", "));
    Ok(if changed {
        Progress::changed(detail)
    } else {
        Progress::in_place(detail)
    })
}

/// Starts the mount unit and waits for it (the unit gives up after its `TimeoutSec`).
/// A mount that fails is reset at once: the volume not existing yet is a wait, not a
/// failed unit that would mark the node degraded.
fn mount_now(host: &mut dyn Host, unit: &str) -> anyhow::Result<()> {
    let start = Invocation::new("systemctl", ["start", unit]).with_timeout(150);
    host.run(&start).inspect_err(|_| {
        let _ = host.run(&Invocation::new("systemctl", ["reset-failed", unit]));
    })?;
    Ok(())
}

/// Whether a Gluster volume is mounted at `mount_point` (the mount helper mounts the
/// FUSE file system before it knows whether the volume exists, so the unit must be
/// active too).
fn is_mounted(host: &mut dyn Host, mount: &GlusterMount) -> anyhow::Result<bool> {
    let state = Invocation::new("systemctl", ["is-active", &mount.unit]);
    if host.probe(&state, super::SYSTEMCTL_NOT_ACTIVE)?.is_none() {
        return Ok(false);
    }
    let findmnt = Invocation::new(
        "findmnt",
        [
            "--noheadings",
            "--output",
            "FSTYPE",
            "--mountpoint",
            &mount.mount_point,
        ],
    );
    let is_gluster = host
        .probe(&findmnt, FINDMNT_NOTHING_FOUND)?
        .is_some_and(|fstype| fstype.trim() == "fuse.glusterfs");
    // statfs reaches the bricks: a mount whose client lost the volume fails it.
    let statfs = Invocation::new("stat", ["--file-system", "--format=%T", &mount.mount_point]);
    Ok(is_gluster && host.run(&statfs.with_timeout(30)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_glusterfs_mount_unit_is_found_and_others_are_not() {
        let unit = "[Unit]\nDescription=x\n[Mount]\nWhat=fs1:/shared\nWhere=/srv/shared\n\
                    Type=glusterfs\nOptions=_netdev,backup-volfile-servers=fs2:fs3\n";
        assert_eq!(
            parse_mount_unit("srv-shared.mount", unit),
            Some(GlusterMount {
                unit: "srv-shared.mount".into(),
                what: "fs1:/shared".into(),
                mount_point: "/srv/shared".into(),
            })
        );
        let ext4 = unit.replace("Type=glusterfs", "Type=ext4");
        assert_eq!(parse_mount_unit("srv-shared.mount", &ext4), None);
    }
}
