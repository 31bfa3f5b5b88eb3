//! The hybrid ISO: boots by BIOS and UEFI, from CD and from USB (grub-mkrescue's El
//! Torito and hybrid MBR/GPT layout), with two entries: the role system live from RAM,
//! and an installer that writes the role's disk image to a disk.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::process::Command;

use anyhow::Context;

use super::grub::SERIAL_TERMINAL;
use super::live::{self, KernelFiles};
use crate::exec::{CommandExt, Tool};
use crate::pipeline::boot_tools::BootTools;

/// Host tools the ISO is finished with (GRUB's `grub-mkrescue` runs in the boot tools).
pub const TOOLS: [Tool; 1] = [Tool {
    program: "xorriso",
    package: "xorriso",
    reason: "read the ISO's layout",
}];

/// Where the installer finds the disk image on the medium.
pub const INSTALL_IMAGE: &str = "install/disk.img.gz";

/// The ISO's volume label, which the live root looks for: `R2A_<ROLE>`.
pub fn volume_label(role: &str) -> String {
    let mut label: String = format!("R2A_{role}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    label.truncate(32);
    label
}

/// The ISO's menu: live by default, install with the `i` key.
pub fn menu(title: &str, label: &str) -> String {
    let live = live::kernel_command_line(Some(label), &[]);
    let install = live::kernel_command_line(Some(label), &["r2a.install=auto"]);
    format!(
        "# r2a-appliance: `i` installs to the only empty disk; to choose the disk, press `e`\n\
         # on the install entry and set r2a.install=/dev/XXX (add r2a.install.force to\n\
         # overwrite a disk that holds data).\n\
         {SERIAL_TERMINAL}\
         set timeout=5\n\
         set default=live\n\
         menuentry \"{title}: live, runs from RAM\" --id live --hotkey=l {{\n\
         \tlinux /live/vmlinuz {live}\n\
         \tinitrd /live/initrd.img\n\
         }}\n\
         menuentry \"{title}: install to disk\" --id install --hotkey=i {{\n\
         \tlinux /live/vmlinuz {install}\n\
         \tinitrd /live/initrd.img\n\
         }}\n"
    )
}

/// What the ISO is made from, and with.
pub struct Sources<'a> {
    /// GRUB and grub-mkrescue.
    pub tools: &'a BootTools,
    /// The kernel and initramfs of the live entries.
    pub kernel: KernelFiles,
    /// The role system.
    pub squashfs: &'a Path,
    /// The raw disk image the installer writes.
    pub raw_disk: &'a Path,
}

/// Writes the ISO to `path`, working in `work`.
pub fn write(
    sources: &Sources<'_>,
    title: &str,
    role: &str,
    path: &Path,
    work: &Path,
    epoch: i64,
    efi_serial: u32,
) -> anyhow::Result<()> {
    let label = volume_label(role);
    let dir = work.join("iso");
    for sub in ["live", "install", "boot/grub"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    sources.kernel.place_in(&dir.join("live"))?;
    live::link_or_copy(sources.squashfs, &dir.join("live/rootfs.squashfs"))?;
    compress_disk(sources.raw_disk, &dir.join(INSTALL_IMAGE))?;
    std::fs::write(dir.join("boot/grub/grub.cfg"), menu(title, &label))?;
    // The volume's dates (and the GPT identifiers xorriso derives from them) and every
    // file's dates are the source date: the files grub-mkrescue copies in carry the time
    // of the copy. Time strings are read in the zone TZ names (UTC in every chroot run).
    // The serial number
    // mformat gives GRUB's EFI image inside the ISO is random: it is pinned afterwards.
    let date = xorriso_time(epoch)?;
    let made = work.join("made.iso");
    let (made_inside, dir_inside) = (
        BootTools::inside(work, &made)?,
        BootTools::inside(work, &dir)?,
    );
    // grub-mkrescue names a file `/.disk/<now>.uuid` and has GRUB's images search for
    // it; it reads the clock for that, not SOURCE_DATE_EPOCH, so its clock is the source
    // date, held still.
    let frozen = crate::timestamp::rfc3339(epoch)?
        .trim_end_matches('Z')
        .replace('T', " ");
    let epoch = epoch.to_string();
    // grub-mkrescue's own options leave xorriso in its native mode: back to mkisofs
    // emulation for the options that set the volume's and every file's dates.
    let argv = [
        "faketime",
        "-f",
        &frozen,
        "grub-mkrescue",
        "--output",
        &made_inside,
        &dir_inside,
        "--",
        "-volid",
        &label,
        "-as",
        "mkisofs",
        &format!("--modification-date={date}"),
        "--set_all_file_dates",
        &date,
    ];
    sources
        .tools
        .run(work, &argv, &[("SOURCE_DATE_EPOCH", &epoch)])
        .context("making the ISO with grub-mkrescue")?;
    live::link_or_copy(&made, path)?;
    std::fs::remove_file(&made)?;
    pin_efi_serial(path, efi_serial)
}

/// mformat, run by grub-mkrescue, gives GRUB's EFI image (`/efi.img`, FAT12) a random
/// volume serial; it becomes `serial`, so the ISO's bytes depend on its inputs only.
/// No checksum covers the image (the ISO records no MD5s), so four bytes change.
fn pin_efi_serial(iso: &Path, serial: u32) -> anyhow::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let report = Command::new("xorriso")
        .arg("-indev")
        .arg(iso)
        .args(["-find", "/efi.img", "-exec", "report_lba", "--"])
        .output_text()?;
    let lba: u64 = report
        .lines()
        .find_map(|line| line.strip_prefix("File data lba:"))
        .and_then(|fields| fields.split(',').nth(1))
        .and_then(|lba| lba.trim().parse().ok())
        .with_context(|| format!("no /efi.img in {}:\n{report}", iso.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(iso)?;
    let start = lba * 2048;
    let mut boot_sector = [0u8; 512];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut boot_sector)?;
    // FAT12 and FAT16 keep the serial at byte 39, and their type name at 54.
    anyhow::ensure!(
        boot_sector[54..59] == *b"FAT12" || boot_sector[54..59] == *b"FAT16",
        "GRUB's EFI image in {} is not the FAT12 image grub-mkrescue makes",
        iso.display()
    );
    file.seek(SeekFrom::Start(start + 39))?;
    file.write_all(&serial.to_le_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// `YYYYMMDDhhmmsscc`, one of the time strings xorriso reads, in UTC.
fn xorriso_time(epoch: i64) -> anyhow::Result<String> {
    Ok(format!("{}00", crate::timestamp::digits(epoch)?))
}

/// gzip of the raw disk image, for the installer (which checks the gzip CRC as it writes).
fn compress_disk(raw: &Path, path: &Path) -> anyhow::Result<()> {
    let mut input = File::open(raw).with_context(|| format!("opening {}", raw.display()))?;
    let output = BufWriter::new(File::create(path)?);
    let mut encoder = flate2::write::GzEncoder::new(output, flate2::Compression::fast());
    std::io::copy(&mut input, &mut encoder).context("compressing the disk image")?;
    encoder.finish()?.into_inner()?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_date_is_an_xorriso_time_string_in_utc() {
        assert_eq!(xorriso_time(1_754_697_600).unwrap(), "2025080900000000");
    }

    #[test]
    fn labels_are_iso_volume_ids() {
        assert_eq!(volume_label("db"), "R2A_DB");
        assert_eq!(volume_label("tel-2"), "R2A_TEL_2");
        assert!(volume_label(&"x".repeat(64)).len() <= 32);
    }

    #[test]
    fn the_menu_has_a_live_and_an_install_entry() {
        let text = menu("Ring2All db", "R2A_DB");
        assert!(text.contains("--id live --hotkey=l"));
        assert!(text.contains("--id install --hotkey=i"));
        assert!(text.contains("boot=r2a r2a.medium=R2A_DB console=tty0"));
        assert!(text.contains("boot=r2a r2a.medium=R2A_DB r2a.install=auto console=tty0"));
        assert!(text.contains("set default=live"));
    }
}
