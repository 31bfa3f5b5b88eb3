//! GPT disk images made without loop devices or mounts: the partition table is written
//! into a sparse file by sfdisk, the ESP is made at its offset by mkfs.fat and filled with
//! mtools, the root ext4 is made at its offset from the tree by `mke2fs -d`, and GRUB's
//! BIOS core goes into the BIOS boot partition. The root grows to the disk on first boot
//! (`r2a-node`'s `grow-root` step).

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use anyhow::Context;

use super::grub;
use crate::exec::{CommandExt, Tool};

/// Host tools a disk image is made with.
pub const TOOLS: [Tool; 6] = [
    Tool {
        program: "sfdisk",
        package: "fdisk",
        reason: "write the GPT of disk images",
    },
    Tool {
        program: "mkfs.fat",
        package: "dosfstools",
        reason: "make the ESP of disk images",
    },
    Tool {
        program: "mcopy",
        package: "mtools",
        reason: "fill the ESP without mounting it",
    },
    Tool {
        program: "mke2fs",
        package: "e2fsprogs",
        reason: "make the root file system from the tree",
    },
    Tool {
        program: "debugfs",
        package: "e2fsprogs",
        reason: "pin the root file system's times to the source date",
    },
    Tool {
        program: "qemu-img",
        package: "qemu-utils",
        reason: "write compressed qcow2 images",
    },
];

const MIB: u64 = 1 << 20;
/// Bytes per sector of the images.
pub const SECTOR: u64 = 512;
const BIOS_BOOT_START: u64 = MIB;
const BIOS_BOOT_SIZE: u64 = MIB;
const ESP_START: u64 = 2 * MIB;
const ESP_SIZE: u64 = 64 * MIB;
const ROOT_START: u64 = ESP_START + ESP_SIZE;
/// Kept free at the end for the backup GPT.
const TAIL: u64 = MIB;

/// GPT partition types.
const BIOS_BOOT_TYPE: &str = "21686148-6449-6E6F-744E-656564454649";
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// The Discoverable Partitions Specification's root partition type for x86-64.
const ROOT_TYPE: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";

/// The label of the root file system.
pub const ROOT_LABEL: &str = "r2a-root";

/// Where one partition lies, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First byte.
    pub start: u64,
    /// Length.
    pub size: u64,
}

impl Extent {
    /// The first sector.
    pub fn start_sector(self) -> u64 {
        self.start / SECTOR
    }

    /// The length in sectors.
    pub fn sectors(self) -> u64 {
        self.size / SECTOR
    }
}

/// The partitions of a disk image of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskLayout {
    /// The whole disk, in bytes.
    pub size: u64,
    /// GRUB's BIOS core image.
    pub bios_boot: Extent,
    /// The EFI system partition: GRUB for UEFI and the menu.
    pub esp: Extent,
    /// The root file system.
    pub root: Extent,
}

impl DiskLayout {
    /// The layout of a disk of `size` bytes (a whole number of MiB).
    pub fn new(size: u64) -> anyhow::Result<DiskLayout> {
        anyhow::ensure!(
            size.is_multiple_of(MIB),
            "a disk size must be a whole number of MiB"
        );
        anyhow::ensure!(
            size >= ROOT_START + TAIL + 64 * MIB,
            "a disk of {} is too small for the boot partitions",
            bytesize::ByteSize(size).display().iec()
        );
        Ok(DiskLayout {
            size,
            bios_boot: Extent {
                start: BIOS_BOOT_START,
                size: BIOS_BOOT_SIZE,
            },
            esp: Extent {
                start: ESP_START,
                size: ESP_SIZE,
            },
            root: Extent {
                start: ROOT_START,
                size: size - ROOT_START - TAIL,
            },
        })
    }

    /// The smallest root file system that holds a tree of `tree_bytes` (allocated),
    /// with room for ext4's own metadata and journal.
    pub fn root_minimum(tree_bytes: u64) -> u64 {
        tree_bytes + tree_bytes / 10 + 128 * MIB
    }

    /// The default disk size for a tree: its minimum plus 512 MiB to spare, rounded up to
    /// 64 MiB; the root grows to the real disk on first boot.
    pub fn default_size(tree_bytes: u64) -> u64 {
        let wanted = ROOT_START + TAIL + Self::root_minimum(tree_bytes) + 512 * MIB;
        wanted.div_ceil(64 * MIB) * 64 * MIB
    }

    /// The layout for `requested` bytes (or the default), refusing a size the tree does
    /// not fit in.
    pub fn for_tree(tree_bytes: u64, requested: Option<u64>) -> anyhow::Result<DiskLayout> {
        let size = requested.unwrap_or_else(|| Self::default_size(tree_bytes));
        let needed = ROOT_START + TAIL + Self::root_minimum(tree_bytes);
        anyhow::ensure!(
            size >= needed,
            "the disk size {} is too small for this role's tree; give --disk-size {} or more",
            bytesize::ByteSize(size).display().iec(),
            bytesize::ByteSize(needed.div_ceil(MIB) * MIB)
                .display()
                .iec()
        );
        DiskLayout::new(size.div_ceil(MIB) * MIB)
    }

    /// sfdisk's script for the partition table.
    pub fn sfdisk_script(&self, ids: &DiskIds) -> String {
        let part = |extent: Extent, kind: &str, uuid: &uuid::Uuid, name: &str| {
            format!(
                "start={}, size={}, type={kind}, uuid={}, name={name}\n",
                extent.start_sector(),
                extent.sectors(),
                uuid.hyphenated().to_string().to_uppercase()
            )
        };
        format!(
            "label: gpt\nlabel-id: {}\nfirst-lba: 34\n{}{}{}",
            ids.disk.hyphenated().to_string().to_uppercase(),
            part(self.bios_boot, BIOS_BOOT_TYPE, &ids.bios_boot, "bios-boot"),
            part(self.esp, ESP_TYPE, &ids.esp, "esp"),
            part(self.root, ROOT_TYPE, &ids.root_partition, "root"),
        )
    }
}

/// Identifiers of one image's disk, derived from its content key so that a rebuild of
/// the same inputs gets the same ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskIds {
    /// The GPT's disk GUID.
    pub disk: uuid::Uuid,
    /// Partition GUIDs.
    pub bios_boot: uuid::Uuid,
    /// The ESP's partition GUID.
    pub esp: uuid::Uuid,
    /// The root's partition GUID.
    pub root_partition: uuid::Uuid,
    /// The root file system's UUID (also its htree hash seed).
    pub root_fs: uuid::Uuid,
    /// The ESP's FAT serial number.
    pub esp_serial: u32,
    /// The FAT serial number of GRUB's EFI image on the ISO (another than the disk's ESP:
    /// the installed disk's GRUB finds its ESP by serial while the ISO may be attached).
    pub iso_efi_serial: u32,
}

impl DiskIds {
    /// Identifiers derived from `seed` (an image's key).
    pub fn derive(seed: &str) -> DiskIds {
        let id = |name: &str| {
            let digest = crate::hash::sha256_hex(format!("{seed}/{name}").as_bytes());
            let bytes: [u8; 16] = std::array::from_fn(|i| {
                u8::from_str_radix(&digest[2 * i..2 * i + 2], 16).expect("hex digest")
            });
            uuid::Builder::from_random_bytes(bytes).into_uuid()
        };
        let serial = |name: &str| {
            id(name).as_bytes()[..4]
                .iter()
                .fold(0u32, |acc, byte| (acc << 8) | u32::from(*byte))
        };
        DiskIds {
            disk: id("disk"),
            bios_boot: id("bios-boot"),
            esp: id("esp"),
            root_partition: id("root-partition"),
            root_fs: id("root-fs"),
            esp_serial: serial("esp-serial"),
            iso_efi_serial: serial("iso-efi-serial"),
        }
    }

    /// The ESP's serial as GRUB and blkid spell it (`ABCD-1234`).
    pub fn esp_uuid(&self) -> String {
        format!(
            "{:04X}-{:04X}",
            self.esp_serial >> 16,
            self.esp_serial & 0xFFFF
        )
    }
}

/// Writes a raw GPT disk image of `tree` to `path`, bootable by UEFI and BIOS with
/// GRUB's `images`.
pub fn write_raw(
    tree: &Path,
    path: &Path,
    layout: &DiskLayout,
    ids: &DiskIds,
    images: &grub::CoreImages,
    title: &str,
    epoch: i64,
) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    file.set_len(layout.size)?;
    drop(file);
    Command::new("sfdisk")
        .args([
            "--quiet",
            "--no-reread",
            "--no-tell-kernel",
            "--wipe",
            "always",
        ])
        .arg(path)
        .run_with_input(layout.sfdisk_script(ids).as_bytes())
        .context("writing the partition table")?;
    write_esp(path, layout, ids, images, title, epoch)?;
    write_bios_boot(path, layout, images)?;
    write_root(tree, path, layout, ids, epoch)
}

fn write_esp(
    path: &Path,
    layout: &DiskLayout,
    ids: &DiskIds,
    images: &grub::CoreImages,
    title: &str,
    epoch: i64,
) -> anyhow::Result<()> {
    let menu = images.menu.as_path();
    let epoch = epoch.to_string();
    // Every time the FAT holds is the build's source date (mtools reads
    // SOURCE_DATE_EPOCH and writes it as local time, so in UTC; mkfs.fat's --invariant
    // fixes its own times, and -i after it the serial).
    Command::new("mkfs.fat")
        .args(["--invariant", "-F", "32", "-s", "1", "-n", "R2A-ESP"])
        .arg("-i")
        .arg(format!("{:08X}", ids.esp_serial))
        .arg(format!("--offset={}", layout.esp.start_sector()))
        .arg(path)
        .arg((layout.esp.size / 1024).to_string())
        .run()
        .context("making the ESP")?;
    std::fs::write(menu, grub::disk_menu(title, &ids.root_fs.to_string()))?;
    let esp = format!("{}@@{}", path.display(), layout.esp.start);
    Command::new("mmd")
        .args(["-i", &esp, "::/EFI", "::/EFI/BOOT", "::/grub"])
        .env("SOURCE_DATE_EPOCH", &epoch)
        .env("TZ", "UTC")
        .run()
        .context("making the ESP's folders")?;
    for (from, to) in [
        (&images.efi, "::/EFI/BOOT/BOOTX64.EFI"),
        (&menu.to_path_buf(), "::/grub/grub.cfg"),
    ] {
        Command::new("mcopy")
            .args(["-i", &esp])
            .arg(from)
            .arg(to)
            .env("SOURCE_DATE_EPOCH", &epoch)
            .env("TZ", "UTC")
            .run()
            .with_context(|| format!("copying {to} onto the ESP"))?;
    }
    Ok(())
}

fn write_bios_boot(
    path: &Path,
    layout: &DiskLayout,
    images: &grub::CoreImages,
) -> anyhow::Result<()> {
    let core = std::fs::read(&images.bios)?;
    let (boot_code, core) =
        grub::patch_bios_boot(&images.boot_sector, &core, layout.bios_boot.start_sector())?;
    anyhow::ensure!(
        core.len() as u64 <= layout.bios_boot.size,
        "GRUB's BIOS core image ({} bytes) does not fit the BIOS boot partition",
        core.len()
    );
    let mut disk = std::fs::OpenOptions::new().write(true).open(path)?;
    // The MBR's code area only: the protective partition table after it stays.
    disk.write_all(&boot_code)?;
    disk.seek(SeekFrom::Start(layout.bios_boot.start))?;
    disk.write_all(&core)?;
    disk.sync_all()?;
    Ok(())
}

fn write_root(
    tree: &Path,
    path: &Path,
    layout: &DiskLayout,
    ids: &DiskIds,
    epoch: i64,
) -> anyhow::Result<()> {
    let uuid = ids.root_fs.to_string();
    // The file system's own times (superblock, inode change and creation times) are the
    // build's source date; the files' times come from the tree, already clamped.
    // mke2fs takes each folder's entries sorted (scandir), not in the order the host's
    // file system lists them; sorted by byte, whatever the builder's locale.
    Command::new("mke2fs")
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .env("LC_ALL", "C.UTF-8")
        .args(["-q", "-F", "-t", "ext4", "-L", ROOT_LABEL, "-U", &uuid])
        .arg("-E")
        .arg(format!(
            "offset={},hash_seed={uuid},root_owner=0:0",
            layout.root.start
        ))
        .arg("-d")
        .arg(tree)
        .arg(path)
        .arg(format!("{}k", layout.root.size / 1024))
        .run()
        .context("making the root file system from the tree")?;
    super::fs_times::pin(tree, path, layout.root.start, epoch)
}

/// Converts a raw image to a compressed qcow2.
pub fn write_qcow2(raw: &Path, path: &Path) -> anyhow::Result<()> {
    Command::new("qemu-img")
        // Four coroutines compress at once, but without -W they write in order, so the
        // same disk always gives the same bytes.
        .args(["convert", "-c", "-f", "raw", "-O", "qcow2", "-m", "4"])
        .arg(raw)
        .arg(path)
        .run()
        .context("converting the disk image to qcow2")
}

/// The bytes a tree's content takes on the root file system's 4 KiB blocks: each file's
/// size rounded up to a block (hard-linked files once), each folder's entries, each
/// symbolic link too long to sit in its inode. What the host's file system allocated is
/// never read: that depends on the tree's history (a folder keeps the blocks of entries
/// since removed), and the disk's size must depend on the tree's content only.
pub fn content_size(tree: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    const BLOCK: u64 = 4096;
    let blocks = |bytes: u64| bytes.div_ceil(BLOCK) * BLOCK;
    let (mut files, mut folders, mut entries) = (0, 0, 0);
    let mut linked = std::collections::HashSet::new();
    for entry in walkdir::WalkDir::new(tree) {
        let entry = entry.with_context(|| format!("reading the tree {}", tree.display()))?;
        let metadata = entry
            .metadata()
            .with_context(|| format!("reading {}", entry.path().display()))?;
        // An ext4 folder entry: 8 bytes and the name, in 4-byte steps.
        entries += (8 + entry.file_name().len() as u64).next_multiple_of(4);
        let kind = metadata.file_type();
        if kind.is_dir() {
            folders += 1;
        } else if kind.is_symlink() && metadata.len() >= 60 {
            files += BLOCK;
        } else if kind.is_file()
            && (metadata.nlink() == 1 || linked.insert((metadata.dev(), metadata.ino())))
        {
            files += blocks(metadata.len());
        }
    }
    Ok(files + folders * BLOCK + blocks(entries))
}

#[cfg(test)]
#[path = "disk_tests.rs"]
mod tests;
