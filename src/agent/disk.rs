//! The data-disk step: the node's data disk gets the role's filesystem once, an
//! `/etc/fstab` line by UUID, and is mounted at the role's mount point.
//!
//! Formatting destroys data, so it happens only when `blkid` finds nothing at all on
//! the device (no filesystem, no partition table, no RAID or LVM signature), and never
//! again once the step's marker exists: a disk that was set up and now looks blank is
//! reported, not formatted.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use anyhow::{Context as _, bail};

use super::config::config_error;
use super::host::{BLKID_NOTHING_FOUND, FINDMNT_NOTHING_FOUND, Invocation, LONG_COMMAND_SECONDS};
use super::steps::{Context, Outcome};
use crate::fsutil::{read_optional, write_atomic};

/// The label of every data filesystem the agent makes.
pub const DATA_LABEL: &str = "r2a-data";
/// The mount table.
pub const FSTAB_FILE: &str = "/etc/fstab";

/// A filesystem the roles may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filesystem {
    /// ext4.
    Ext4,
    /// XFS.
    Xfs,
}

impl Filesystem {
    /// Parses a role's `filesystem`.
    pub fn parse(name: &str) -> anyhow::Result<Filesystem> {
        match name {
            "ext4" => Ok(Filesystem::Ext4),
            "xfs" => Ok(Filesystem::Xfs),
            other => Err(config_error(format!(
                "the role's data disk filesystem `{other}` is not one the agent makes (ext4, xfs)"
            ))),
        }
    }

    /// The name `blkid`, `mount` and fstab use.
    pub fn name(self) -> &'static str {
        match self {
            Filesystem::Ext4 => "ext4",
            Filesystem::Xfs => "xfs",
        }
    }

    /// The fstab pass: XFS checks itself at mount time and `fsck.xfs` does nothing.
    fn fsck_pass(self) -> u8 {
        match self {
            Filesystem::Ext4 => 2,
            Filesystem::Xfs => 0,
        }
    }
}

/// What `blkid -p -o export` found on a device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signature {
    /// `TYPE`: a filesystem, or `LVM2_member`, `linux_raid_member`, ...
    pub kind: Option<String>,
    /// `UUID`.
    pub uuid: Option<String>,
    /// `PTTYPE`: a partition table.
    pub partition_table: Option<String>,
}

impl Signature {
    /// Reads `KEY=value` lines.
    pub fn parse(export: &str) -> Signature {
        let mut signature = Signature::default();
        for (key, value) in export.lines().filter_map(|line| line.split_once('=')) {
            let value = Some(value.trim().to_string());
            match key.trim() {
                "TYPE" => signature.kind = value,
                "UUID" => signature.uuid = value,
                "PTTYPE" => signature.partition_table = value,
                _ => {}
            }
        }
        signature
    }
}

/// Whether to format, decided from what is on the device and whether the step ran before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Blank, and never set up: make the filesystem.
    Format,
    /// Already has the role's filesystem.
    Keep {
        /// Its UUID.
        uuid: String,
    },
}

/// Decides what to do with `device`; anything but a blank, never-set-up device or the
/// role's own filesystem is a configuration error.
pub fn plan(
    device: &str,
    found: Option<&Signature>,
    wanted: Filesystem,
    set_up_before: bool,
) -> anyhow::Result<Plan> {
    let Some(found) = found else {
        if set_up_before {
            return Err(config_error(format!(
                "{device} shows no filesystem, but this node set it up before \
                 (/var/lib/r2a/done/data-disk.json); not formatting it again: check the \
                 disk, and remove the marker only to accept a new blank disk"
            )));
        }
        return Ok(Plan::Format);
    };
    match (&found.kind, &found.partition_table) {
        (Some(kind), _) if kind == wanted.name() => match &found.uuid {
            Some(uuid) => Ok(Plan::Keep { uuid: uuid.clone() }),
            None => bail!("blkid shows {kind} on {device} but no UUID"),
        },
        (Some(kind), _) => Err(config_error(format!(
            "{device} already holds {kind}, but the role wants {}; not formatting a disk \
             that holds something",
            wanted.name()
        ))),
        (None, Some(table)) => Err(config_error(format!(
            "{device} has a {table} partition table; not formatting a partitioned disk \
             (the manifest's data_disk should name a whole blank disk)"
        ))),
        (None, None) => Err(config_error(format!(
            "blkid found an unknown signature on {device}; not formatting it"
        ))),
    }
}

/// Formats (once), records in fstab and mounts the node's data disk.
pub fn ensure_data_disk(context: &mut Context<'_>) -> anyhow::Result<Outcome> {
    let Some(device) = context.node.data_disk.clone() else {
        return Ok(Outcome::unchanged(format!(
            "node {} has no data disk",
            context.node.name
        )));
    };
    let Some(rule) = context.role.data_disk.clone() else {
        return Ok(Outcome::unchanged(format!(
            "role {} uses no data disk; {device} left alone",
            context.role.name
        )));
    };
    let filesystem = Filesystem::parse(&rule.filesystem)?;
    if !context.root.path(&device).exists() {
        bail!(
            "data disk {device} of node {} is not there",
            context.node.name
        );
    }
    let mut done = Vec::new();
    let found = probe(context, &device)?;
    let set_up_before = context.previous_marker.is_some();
    let decided = plan(&device, found.as_ref(), filesystem, set_up_before)?;
    if context.host.dry_run() {
        return would_set_up(context, &device, &decided, &rule.mount, filesystem);
    }
    let formatted = decided == Plan::Format;
    let uuid = match decided {
        Plan::Keep { uuid } => uuid,
        Plan::Format => {
            let mut args = rule.mkfs_options.clone();
            args.extend(["-L".to_string(), DATA_LABEL.to_string(), device.clone()]);
            let mkfs = format!("mkfs.{}", filesystem.name());
            context
                .host
                .run(&Invocation::new(&mkfs, args).with_timeout(LONG_COMMAND_SECONDS))
                .with_context(|| format!("formatting data disk {device}"))?;
            let made = probe(context, &device)?.unwrap_or_default();
            let Plan::Keep { uuid } = plan(&device, Some(&made), filesystem, false)? else {
                bail!("{device} shows no filesystem after {mkfs}");
            };
            done.push(format!("formatted {device} as {}", filesystem.name()));
            uuid
        }
    };
    if ensure_fstab_entry(context, &uuid, &rule.mount, filesystem)? {
        done.push(format!("added UUID={uuid} to {FSTAB_FILE}"));
    }
    if ensure_mounted(context, &uuid, &rule.mount, filesystem, formatted)? {
        done.push(format!("mounted it at {}", rule.mount));
    }
    let state = format!(
        "{device} ({}, UUID={uuid}) on {}",
        filesystem.name(),
        rule.mount
    );
    Ok(if done.is_empty() {
        Outcome::unchanged(state)
    } else {
        Outcome::changed(format!("{state}: {}", done.join(", ")))
    })
}

/// What a dry run says of the data disk: what setting it up would still take.
fn would_set_up(
    context: &mut Context<'_>,
    device: &str,
    decided: &Plan,
    mount: &str,
    filesystem: Filesystem,
) -> anyhow::Result<Outcome> {
    let mut would = Vec::new();
    let fstab = read_optional(&context.root.path(FSTAB_FILE))?.unwrap_or_default();
    match decided {
        Plan::Format => {
            would.push(format!("format {device} as {}", filesystem.name()));
            would.push(format!("add its UUID to {FSTAB_FILE}"));
        }
        Plan::Keep { uuid } => {
            if fstab_with_entry(&fstab, uuid, mount, filesystem)?.is_some() {
                would.push(format!("add UUID={uuid} to {FSTAB_FILE}"));
            }
        }
    }
    if mounted(context, mount)?.is_none() {
        would.push(format!("mount it at {mount}"));
    }
    Ok(match would.is_empty() {
        true => Outcome::unchanged(format!("{device} ({}) on {mount}", filesystem.name())),
        false => Outcome::changed(format!("would {}", would.join(", "))),
    })
}

fn probe(context: &mut Context<'_>, device: &str) -> anyhow::Result<Option<Signature>> {
    let blkid = Invocation::new("blkid", ["-p", "-o", "export", device]);
    let found = context
        .host
        .probe(&blkid, BLKID_NOTHING_FOUND)
        .with_context(|| format!("probing data disk {device}"))?;
    Ok(found.as_deref().map(Signature::parse))
}

/// Adds the fstab line; returns whether it changed the file.
fn ensure_fstab_entry(
    context: &mut Context<'_>,
    uuid: &str,
    mount: &str,
    filesystem: Filesystem,
) -> anyhow::Result<bool> {
    let path = context.root.path(FSTAB_FILE);
    let current = read_optional(&path)?.unwrap_or_default();
    let Some(updated) = fstab_with_entry(&current, uuid, mount, filesystem)? else {
        return Ok(false);
    };
    write_atomic(&path, updated.as_bytes(), 0o644)?;
    let written = read_optional(&path)?.unwrap_or_default();
    if fstab_with_entry(&written, uuid, mount, filesystem)?.is_some() {
        bail!(
            "{} lacks the data disk's line after writing it",
            path.display()
        );
    }
    Ok(true)
}

/// The fstab with a line mounting `UUID=uuid` at `mount`, or `None` when it has one.
/// `nofail`: a missing data disk must not stop the boot (and with it SSH access).
pub fn fstab_with_entry(
    fstab: &str,
    uuid: &str,
    mount: &str,
    filesystem: Filesystem,
) -> anyhow::Result<Option<String>> {
    let source = format!("UUID={uuid}");
    let existing = fstab
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.get(1) == Some(&mount));
    if let Some(fields) = existing {
        if fields[0] == source {
            return Ok(None);
        }
        return Err(config_error(format!(
            "{FSTAB_FILE} already mounts {} at {mount}, not the data disk {source}",
            fields[0]
        )));
    }
    let mut updated = fstab.to_string();
    if !updated.is_empty() && !updated.ends_with('\n') {
        updated.push('\n');
    }
    updated.push_str(&format!(
        "{source} {mount} {} defaults,nofail 0 {}\n",
        filesystem.name(),
        filesystem.fsck_pass()
    ));
    Ok(Some(updated))
}

/// Mounts the filesystem unless it is mounted; returns whether it mounted it.
fn ensure_mounted(
    context: &mut Context<'_>,
    uuid: &str,
    mount: &str,
    filesystem: Filesystem,
    fresh: bool,
) -> anyhow::Result<bool> {
    if let Some((source, kind)) = mounted(context, mount)? {
        if kind != filesystem.name() {
            bail!("{mount} has {source} ({kind}) mounted, not the data disk");
        }
        return Ok(false);
    }
    let dir = context.root.path(mount);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let underneath =
        std::fs::metadata(&dir).with_context(|| format!("reading {}", dir.display()))?;
    let args = ["-t", filesystem.name(), &format!("UUID={uuid}"), mount].map(str::to_string);
    context
        .host
        .run(&Invocation::new("mount", args))
        .with_context(|| format!("mounting the data disk at {mount}"))?;
    match mounted(context, mount)? {
        Some((_, kind)) if kind == filesystem.name() => {}
        _ => bail!("{mount} is not mounted after mount"),
    }
    if fresh {
        // A new filesystem's root is root:root 0755; services expect the owner and mode
        // the package gave the folder (e.g. postgres for /var/lib/postgresql).
        std::fs::set_permissions(&dir, PermissionsExt::from_mode(underneath.mode() & 0o7777))
            .with_context(|| format!("setting the mode of {}", dir.display()))?;
        std::os::unix::fs::chown(&dir, Some(underneath.uid()), Some(underneath.gid()))
            .with_context(|| format!("setting the owner of {}", dir.display()))?;
    }
    Ok(true)
}

/// What is mounted at `mount`, as (source, filesystem type).
fn mounted(context: &mut Context<'_>, mount: &str) -> anyhow::Result<Option<(String, String)>> {
    let findmnt = Invocation::new(
        "findmnt",
        [
            "--noheadings",
            "--output",
            "SOURCE,FSTYPE",
            "--mountpoint",
            mount,
        ],
    );
    let Some(output) = context.host.probe(&findmnt, FINDMNT_NOTHING_FOUND)? else {
        return Ok(None);
    };
    let mut words = output.split_whitespace();
    match (words.next(), words.next()) {
        (Some(source), Some(kind)) => Ok(Some((source.to_string(), kind.to_string()))),
        _ => bail!("cannot read the output of {findmnt}: {output:?}"),
    }
}

#[cfg(test)]
#[path = "disk_tests.rs"]
mod tests;
