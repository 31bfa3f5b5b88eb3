//! `r2a-node install`: the ISO's install entry. Writes the role's disk image from the
//! boot medium to the disk named by `r2a.install=/dev/XXX`, or with `r2a.install=auto`
//! to the only empty disk, then reboots into it. A disk that holds anything (a partition
//! table, a file system, any signature `blkid` knows) is refused unless the command line
//! also says `r2a.install.force`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;

use super::config::config_error;
use super::host::{BLKID_NOTHING_FOUND, Host, Invocation};

/// Where the medium is mounted while the image is written.
const MEDIUM_MOUNT: &str = "/run/r2a/install-medium";
/// Bytes decompressed and written at a time.
const CHUNK: usize = 4 << 20;

/// What the kernel command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `None` for `auto`: the only empty disk.
    pub target: Option<String>,
    /// Overwrite a disk that holds data.
    pub force: bool,
    /// The boot medium's label.
    pub medium: String,
}

impl Request {
    /// Reads `r2a.install=`, `r2a.install.force` and `r2a.medium=`; `None` without
    /// `r2a.install=`.
    pub fn from_cmdline(cmdline: &str) -> anyhow::Result<Option<Request>> {
        let mut target = None;
        let mut force = false;
        let mut medium = None;
        for word in cmdline.split_whitespace() {
            if let Some(value) = word.strip_prefix("r2a.install=") {
                target = Some(value.to_string());
            } else if word == "r2a.install.force" {
                force = true;
            } else if let Some(value) = word.strip_prefix("r2a.medium=") {
                medium = Some(value.to_string());
            }
        }
        let Some(target) = target else {
            return Ok(None);
        };
        let medium = medium.ok_or_else(|| {
            config_error(
                "r2a.install= needs r2a.medium=LABEL (the ISO's label) on the command line",
            )
        })?;
        let target = match target.as_str() {
            "auto" => None,
            device if device.starts_with("/dev/") => Some(device.to_string()),
            other => {
                return Err(config_error(format!(
                    "r2a.install={other}: name a disk (/dev/vda) or say auto"
                )));
            }
        };
        Ok(Some(Request {
            target,
            force,
            medium,
        }))
    }
}

/// One block device, as `lsblk --json` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct BlockDevice {
    /// `/dev/...`.
    pub path: String,
    /// `disk`, `part`, `rom`, `loop`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Read-only.
    #[serde(default)]
    pub ro: bool,
    /// Size in bytes.
    #[serde(default)]
    pub size: u64,
    /// Partitions and holders.
    #[serde(default)]
    pub children: Vec<BlockDevice>,
}

#[derive(Deserialize)]
struct Lsblk {
    blockdevices: Vec<BlockDevice>,
}

/// Disks smaller than this are not install targets for `auto` (an empty floppy drive,
/// a card reader): no role image fits them.
const SMALLEST_TARGET: u64 = 1 << 30;

/// Parses `lsblk --json --bytes --output PATH,TYPE,RO,SIZE`.
pub fn parse_lsblk(json: &str) -> anyhow::Result<Vec<BlockDevice>> {
    Ok(serde_json::from_str::<Lsblk>(json)
        .context("reading lsblk's JSON")?
        .blockdevices)
}

/// The disk to write: the one asked for, or the only empty writable disk that does not
/// hold the medium. `is_empty` tells whether a disk carries no signature.
pub fn choose_target(
    request: &Request,
    devices: &[BlockDevice],
    medium_device: &str,
    is_empty: &mut dyn FnMut(&str) -> anyhow::Result<bool>,
) -> anyhow::Result<(String, bool)> {
    let holds_medium = |disk: &BlockDevice| {
        disk.path == medium_device || disk.children.iter().any(|c| c.path == medium_device)
    };
    if let Some(target) = &request.target {
        let disk = devices
            .iter()
            .find(|d| &d.path == target && d.kind == "disk")
            .ok_or_else(|| config_error(format!("r2a.install={target}: no such disk")))?;
        if holds_medium(disk) {
            return Err(config_error(format!("{target} holds the install medium")));
        }
        let empty = disk.children.is_empty() && is_empty(target)?;
        if !empty && !request.force {
            return Err(config_error(format!(
                "{target} holds data; add r2a.install.force to the command line to overwrite it"
            )));
        }
        return Ok((target.clone(), empty));
    }
    let mut candidates = Vec::new();
    let writable = |d: &&BlockDevice| d.kind == "disk" && !d.ro && d.size >= SMALLEST_TARGET;
    for disk in devices.iter().filter(writable) {
        if !holds_medium(disk) && disk.children.is_empty() && is_empty(&disk.path)? {
            candidates.push(disk.path.clone());
        }
    }
    match candidates.as_slice() {
        [only] => Ok((only.clone(), true)),
        [] => Err(config_error(
            "no empty disk to install to; name one with r2a.install=/dev/XXX (and r2a.install.force to overwrite data)",
        )),
        many => Err(config_error(format!(
            "several empty disks ({}); name one with r2a.install=/dev/XXX",
            many.join(", ")
        ))),
    }
}

/// Decompresses `image` onto `target`. On a blank disk, runs of zeros are skipped
/// instead of written (they are zeros already); returns the bytes of the image.
pub fn write_image(image: impl Read, target: &mut File, blank: bool) -> anyhow::Result<u64> {
    let mut decoder = flate2::read::GzDecoder::new(image);
    let mut buffer = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let mut filled = 0;
        while filled < CHUNK {
            let read = decoder
                .read(&mut buffer[filled..])
                .context("reading the disk image (damaged medium?)")?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        if filled == 0 {
            break;
        }
        let chunk = &buffer[..filled];
        if blank && chunk.iter().all(|byte| *byte == 0) {
            target.seek(SeekFrom::Current(filled as i64))?;
        } else {
            target.write_all(chunk).context("writing to the disk")?;
        }
        total += filled as u64;
    }
    target.sync_all().context("flushing the disk")?;
    Ok(total)
}

/// Runs the install the command line asks for; does nothing without `r2a.install=`.
pub fn run(host: &mut dyn Host, cmdline: &str) -> anyhow::Result<()> {
    let Some(request) = Request::from_cmdline(cmdline)? else {
        println!("r2a-node: no r2a.install= on the kernel command line: nothing to install");
        return Ok(());
    };
    std::fs::create_dir_all(MEDIUM_MOUNT)?;
    let medium = mount_medium(host, &request.medium)?;
    let devices = parse_lsblk(&host.run(&Invocation::new(
        "lsblk",
        ["--json", "--bytes", "--output", "PATH,TYPE,RO,SIZE"],
    ))?)?;
    let mut is_empty = |device: &str| -> anyhow::Result<bool> {
        let found = host.probe(
            &Invocation::new("blkid", ["-p", "-o", "export", device]),
            BLKID_NOTHING_FOUND,
        )?;
        Ok(found.is_none())
    };
    let (target, blank) = choose_target(&request, &devices, &medium, &mut is_empty)?;
    if !blank {
        host.run(&Invocation::new("wipefs", ["--all", target.as_str()]))?;
    }
    let image_path = Path::new(MEDIUM_MOUNT).join(crate::pipeline::formats::iso::INSTALL_IMAGE);
    println!(
        "r2a-node: installing {} onto {target}",
        image_path.display()
    );
    let written = File::open(&image_path)
        .with_context(|| format!("opening {}", image_path.display()))
        .and_then(|image| {
            let mut disk = std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .with_context(|| format!("opening {target}"))?;
            write_image(std::io::BufReader::new(image), &mut disk, blank)
        });
    host.run(&Invocation::new("umount", [MEDIUM_MOUNT]))?;
    let written = written?;
    // Best effort: the kernel learns the new partitions at the reboot anyway.
    let _ = host.run(&Invocation::new(
        "blockdev",
        ["--rereadpt", target.as_str()],
    ));
    println!(
        "r2a-node: installed {} onto {target}; rebooting into it",
        bytesize::ByteSize(written).display().iec()
    );
    host.run(&Invocation::new("systemctl", ["reboot"]))?;
    Ok(())
}

/// Mounts the ISO 9660 file system labelled `label` at [`MEDIUM_MOUNT`] and returns its
/// device, waiting for udev up to 60 s. Every block device is probed: a hybrid ISO on a
/// USB stick has it on the whole disk, beside partitions that may carry the same label.
fn mount_medium(host: &mut dyn Host, label: &str) -> anyhow::Result<String> {
    let list = Invocation::new("lsblk", ["--list", "--noheadings", "--output", "PATH"]);
    for _ in 0..60 {
        for device in host.run(&list)?.split_whitespace() {
            let probe = Invocation::new("blkid", ["-p", "-o", "export", device]);
            let found = host.probe(&probe, BLKID_NOTHING_FOUND).unwrap_or_default();
            if found
                .as_deref()
                .is_some_and(|export| is_medium(export, label))
            {
                host.run(&Invocation::new(
                    "mount",
                    ["-t", "iso9660", "-o", "ro", device, MEDIUM_MOUNT],
                ))?;
                return Ok(device.to_string());
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    bail!("no ISO 9660 medium labelled {label} (the install medium) appeared")
}

/// Whether `blkid -p -o export` output is an ISO 9660 file system labelled `label`.
pub fn is_medium(export: &str, label: &str) -> bool {
    let value = |key: &str| {
        export
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
    };
    value("TYPE") == Some("iso9660") && value("LABEL") == Some(label)
}

#[cfg(test)]
#[path = "install_tests.rs"]
mod tests;
