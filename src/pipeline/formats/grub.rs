//! GRUB for the disk images, made without `grub-install` (which probes the host's own
//! disks): standalone core images from `grub-mkimage` of the boot tools' layer (the
//! image's own release), the BIOS boot sector patched to find its core, and the menus the
//! images read.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::pipeline::boot_tools::BootTools;

/// GRUB's BIOS platform folder in the boot tools' tree.
const BIOS_PLATFORM: &str = "/usr/lib/grub/i386-pc";

/// Modules both images need to find the menu on the ESP and boot Linux from ext4; a
/// standalone image finds nothing without `part_gpt`, `fat`, `ext2` and `search`.
const MODULES: [&str; 16] = [
    "part_gpt",
    "part_msdos",
    "fat",
    "ext2",
    "iso9660",
    "search",
    "search_fs_uuid",
    "search_label",
    "normal",
    "configfile",
    "linux",
    "echo",
    "test",
    "serial",
    "terminal",
    "boot",
];

/// The kernel's console: the screen and the first serial port, serial last so that
/// `/dev/console` (and so the boot report) is the serial line.
pub const KERNEL_CONSOLE: &str = "console=tty0 console=ttyS0,115200";

/// Lines that put GRUB's own menu on the screen and the serial line.
pub const SERIAL_TERMINAL: &str = "serial --unit=0 --speed=115200\n\
                                   terminal_input serial console\n\
                                   terminal_output serial console\n";

/// The two core images of a disk.
pub struct CoreImages {
    /// `EFI/BOOT/BOOTX64.EFI`.
    pub efi: PathBuf,
    /// The BIOS core image, for the BIOS boot partition.
    pub bios: PathBuf,
    /// The first 440 bytes of the BIOS boot sector.
    pub boot_sector: Vec<u8>,
    /// Where the disk's menu is written before it goes onto the ESP.
    pub menu: PathBuf,
}

/// Makes both core images in `work`. Each holds an early configuration that finds the
/// ESP by its serial number and reads `/grub/grub.cfg` from it.
pub fn core_images(tools: &BootTools, work: &Path, esp_serial: &str) -> anyhow::Result<CoreImages> {
    let early = work.join("early.cfg");
    std::fs::write(
        &early,
        format!("search --no-floppy --fs-uuid --set=root {esp_serial}\nset prefix=($root)/grub\n"),
    )?;
    let efi = work.join("BOOTX64.EFI");
    let bios = work.join("core.img");
    let image = |platform, out, extra| Mkimage {
        platform,
        early: Some(&early),
        prefix: "/grub",
        out,
        extra,
    };
    image("x86_64-efi", &efi, &[]).run(tools, work)?;
    image("i386-pc", &bios, &["biosdisk"]).run(tools, work)?;
    let boot_img = tools.file(&format!("{BIOS_PLATFORM}/boot.img"));
    let boot_sector =
        std::fs::read(&boot_img).with_context(|| format!("reading {}", boot_img.display()))?;
    Ok(CoreImages {
        efi,
        bios,
        boot_sector,
        menu: work.join("grub.cfg"),
    })
}

/// GRUB's network boot images of the PXE set, made in `work` and copied into `dir`:
/// `NETBOOT_EFI` for UEFI and `NETBOOT_BIOS` (a PXE boot program) for BIOS.
///
/// Their prefix is empty, so GRUB takes the folder it was loaded from over TFTP as its
/// prefix and reads `grub.cfg` beside itself: the set works from any folder of a server.
pub fn netboot_images(tools: &BootTools, work: &Path, dir: &Path) -> anyhow::Result<()> {
    for (platform, name, driver) in [
        ("x86_64-efi", NETBOOT_EFI, "efinet"),
        ("i386-pc-pxe", NETBOOT_BIOS, "pxe"),
    ] {
        let made = work.join(name);
        Mkimage {
            platform,
            early: None,
            prefix: "",
            out: &made,
            extra: &["net", "tftp", driver],
        }
        .run(tools, work)?;
        std::fs::copy(&made, dir.join(name))
            .with_context(|| format!("copying {name} into {}", dir.display()))?;
    }
    Ok(())
}

/// The UEFI network boot image of the PXE set.
pub const NETBOOT_EFI: &str = "grubnetx64.efi";
/// The BIOS network boot program (`pxeboot.img` and a core image) of the PXE set.
pub const NETBOOT_BIOS: &str = "grubnetpc.0";

/// One `grub-mkimage` run; `early` and `out` lie in the work folder it is given.
struct Mkimage<'a> {
    platform: &'a str,
    early: Option<&'a Path>,
    prefix: &'a str,
    out: &'a Path,
    extra: &'a [&'a str],
}

impl Mkimage<'_> {
    fn run(&self, tools: &BootTools, work: &Path) -> anyhow::Result<()> {
        let out = BootTools::inside(work, self.out)?;
        let early = self
            .early
            .map(|early| BootTools::inside(work, early))
            .transpose()?;
        let mut argv = vec!["grub-mkimage", "--format", self.platform];
        argv.extend(["--prefix", self.prefix]);
        if let Some(early) = &early {
            argv.extend(["--config", early]);
        }
        argv.extend(["--output", &out]);
        argv.extend(MODULES);
        argv.extend(self.extra);
        tools
            .run(work, &argv, &[])
            .with_context(|| format!("making the GRUB {} image", self.platform))
    }
}

/// The menu of a disk image, on its ESP at `/grub/grub.cfg`.
pub fn disk_menu(title: &str, root_uuid: &str) -> String {
    format!(
        "# r2a-appliance: the menu of this disk; edit with mtools (mcopy -i ESP ::/grub/grub.cfg).\n\
         {SERIAL_TERMINAL}\
         set timeout=1\n\
         search --no-floppy --fs-uuid --set=root {root_uuid}\n\
         menuentry \"{title}\" {{\n\
         \tlinux /vmlinuz root=UUID={root_uuid} rw {KERNEL_CONSOLE}\n\
         \tinitrd /initrd.img\n\
         }}\n"
    )
}

/// Where the boot sector keeps the first sector of the core image (an LBA, u64 LE).
const BOOT_KERNEL_SECTOR: usize = 0x5C;
/// The block list at the end of the core's first sector: start LBA (u64), sector count
/// (u16) and load segment (u16), read by the first sector to load the rest of the core.
const CORE_BLOCKLIST_START: usize = 0x200 - 12;
const CORE_BLOCKLIST_LEN: usize = 0x200 - 4;
/// Bytes of the boot sector that hold code; the partition table follows.
pub const BOOT_CODE_LEN: usize = 440;

/// Patches GRUB's BIOS boot sector and core image for a core written at `core_lba`, what
/// `grub-bios-setup` does (it refuses image files, since it probes the host's disks).
/// Returns the 440 code bytes for the MBR and the core to write at `core_lba`.
pub fn patch_bios_boot(
    boot_img: &[u8],
    core_img: &[u8],
    core_lba: u64,
) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    anyhow::ensure!(
        boot_img.len() == 512,
        "GRUB's boot.img is {} bytes, not 512",
        boot_img.len()
    );
    anyhow::ensure!(core_img.len() > 512, "GRUB's core image is too small");
    let mut boot = boot_img[..BOOT_CODE_LEN].to_vec();
    boot[BOOT_KERNEL_SECTOR..BOOT_KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
    let sectors = core_img.len().div_ceil(512);
    let rest = u16::try_from(sectors - 1).context("GRUB's core image is too large")?;
    let mut core = core_img.to_vec();
    core.resize(sectors * 512, 0);
    core[CORE_BLOCKLIST_START..CORE_BLOCKLIST_START + 8]
        .copy_from_slice(&(core_lba + 1).to_le_bytes());
    core[CORE_BLOCKLIST_LEN..CORE_BLOCKLIST_LEN + 2].copy_from_slice(&rest.to_le_bytes());
    Ok((boot, core))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bios_boot_points_at_the_core() {
        let boot_img = vec![0xAA; 512];
        let core_img = vec![0x55; 512 * 3 + 100];
        let (boot, core) = patch_bios_boot(&boot_img, &core_img, 2048).unwrap();
        assert_eq!(boot.len(), BOOT_CODE_LEN);
        assert_eq!(&boot[0x5C..0x64], &2048u64.to_le_bytes());
        assert_eq!(boot[0x5B], 0xAA, "bytes around the LBA are kept");
        assert_eq!(boot[0x64], 0xAA);
        assert_eq!(core.len(), 512 * 4, "padded to whole sectors");
        assert_eq!(&core[0x1F4..0x1FC], &2049u64.to_le_bytes());
        assert_eq!(&core[0x1FC..0x1FE], &3u16.to_le_bytes());
        assert_eq!(
            &core[0x1FE..0x200],
            &[0x55, 0x55],
            "the load segment is kept"
        );
    }

    #[test]
    fn bad_grub_files_are_refused() {
        assert!(patch_bios_boot(&[0; 100], &[0; 1024], 2048).is_err());
        assert!(patch_bios_boot(&[0; 512], &[0; 512], 2048).is_err());
    }

    #[test]
    fn the_disk_menu_boots_the_root_by_uuid_on_both_consoles() {
        let menu = disk_menu("Ring2All db", "0c5f7a7e-1111-4222-8333-444455556666");
        assert!(menu.contains("search --no-floppy --fs-uuid --set=root 0c5f7a7e-"));
        assert!(menu.contains("root=UUID=0c5f7a7e-1111-4222-8333-444455556666 rw"));
        assert!(menu.contains("console=tty0 console=ttyS0,115200"));
        assert!(menu.contains("terminal_output serial console"));
    }
}
