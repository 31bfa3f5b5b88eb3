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

/// Host tools the ISO is made with (and GRUB's two platforms, checked apart).
pub const TOOLS: [Tool; 3] = [
    Tool {
        program: "grub-mkrescue",
        package: "grub-common",
        reason: "make the bootable ISO",
    },
    Tool {
        program: "xorriso",
        package: "xorriso",
        reason: "write ISO images",
    },
    Tool {
        program: "mformat",
        package: "mtools",
        reason: "make the ISO's EFI boot image",
    },
];

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

/// What the ISO is made from.
pub struct Sources<'a> {
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
    Command::new("grub-mkrescue")
        .arg("--output")
        .arg(path)
        .arg(&dir)
        .args(["--", "-volid", &label])
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .run()
        .context("making the ISO with grub-mkrescue")
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
