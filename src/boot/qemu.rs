//! The QEMU command line of a boot: firmware, accelerator, disks and CDs, and one NIC,
//! either on user networking that is always `restrict=on` (the guest reaches nothing but
//! QEMU's own DHCP and TFTP) or on a tap device made beforehand (a port of a private
//! bridge, for machines that talk to each other).

use std::path::{Path, PathBuf};

use crate::exec::Tool;

/// Host tools a boot needs.
pub const TOOLS: [Tool; 2] = [
    Tool {
        program: "qemu-system-x86_64",
        package: "qemu-system-x86",
        reason: "boot images",
    },
    Tool {
        program: "qemu-img",
        package: "qemu-utils",
        reason: "make the throwaway disks a boot writes to",
    },
];

/// OVMF's code and its variable store template (Debian's `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// Copied per boot: the firmware writes its variables there.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The firmware a boot uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Firmware {
    /// OVMF.
    Uefi,
    /// SeaBIOS.
    Bios,
}

/// What a PXE boot loads first over TFTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PxeLoader {
    /// The set's iPXE script (`boot.ipxe`), run by the NIC's iPXE.
    Ipxe,
    /// GRUB's network boot image for the firmware, which reads the set's `grub.cfg`.
    Grub,
}

impl PxeLoader {
    /// The file DHCP names for `firmware`.
    pub fn boot_file(self, firmware: Firmware) -> &'static str {
        use crate::pipeline::formats::grub::{NETBOOT_BIOS, NETBOOT_EFI};
        match (self, firmware) {
            (PxeLoader::Ipxe, _) => "boot.ipxe",
            (PxeLoader::Grub, Firmware::Uefi) => NETBOOT_EFI,
            (PxeLoader::Grub, Firmware::Bios) => NETBOOT_BIOS,
        }
    }
}

/// How QEMU runs the guest's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// KVM when /dev/kvm is usable and the boot makes progress, else TCG.
    Auto,
    /// Hardware virtualization.
    Kvm,
    /// Software emulation.
    Tcg,
}

/// A drive of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drive {
    /// A virtio disk (qcow2 or raw), written to: `/dev/vda`, `/dev/vdb`, ... in the
    /// order of the machine's drives.
    Disk {
        /// The file.
        path: PathBuf,
        /// `qcow2` or `raw`.
        format: &'static str,
    },
    /// A qcow2 disk on a SCSI controller: `/dev/sda`, `/dev/sdb`, ... in order.
    ScsiDisk(PathBuf),
    /// A qcow2 disk on an NVMe controller of its own: `/dev/nvme0n1`, ... in order.
    NvmeDisk(PathBuf),
    /// A read-only CD.
    Cdrom(PathBuf),
    /// A read-only USB stick (a hybrid ISO written to one), booted first.
    UsbStick(PathBuf),
}

/// What a machine's NIC is plugged into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// QEMU's user networking, restricted; optionally serving a folder by TFTP and
    /// naming a boot file in its DHCP answers.
    User {
        /// The folder and the boot file.
        tftp: Option<(PathBuf, String)>,
    },
    /// An existing tap device, by name, in the network namespace QEMU runs in. QEMU
    /// neither creates it nor runs scripts on it.
    Tap(String),
}

/// Everything one QEMU run is made of.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Firmware.
    pub firmware: Firmware,
    /// The OVMF variable store of this boot (UEFI only).
    pub ovmf_vars: Option<PathBuf>,
    /// The accelerator: `Auto` is resolved before.
    pub accel: Accel,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Drives, in order; the first bootable one boots unless `network_boot`.
    pub drives: Vec<Drive>,
    /// The NIC's MAC address.
    pub mac: String,
    /// What the NIC is plugged into.
    pub network: Network,
    /// Boot from the network first.
    pub network_boot: bool,
    /// Serial console on stdio, no display, no monitor (a check); else `-nographic`.
    pub headless: bool,
}

impl Machine {
    /// The arguments after `qemu-system-x86_64`.
    pub fn args(&self) -> Vec<String> {
        let accel = match self.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg | Accel::Auto => "tcg",
        };
        let mut args: Vec<String> = vec![
            "-accel".into(),
            accel.into(),
            "-machine".into(),
            "pc".into(),
            "-m".into(),
            self.memory_mib.to_string(),
            "-smp".into(),
            // One vCPU under TCG: QEMU's multi-threaded TCG has been seen to break the
            // kernel's live code patching (an int3 oops) with two.
            if self.accel == Accel::Kvm { "2" } else { "1" }.into(),
            // A reboot ends the run: a check fails on one, an install ends with one.
            "-no-reboot".into(),
        ];
        if self.headless {
            args.extend(
                ["-display", "none", "-serial", "stdio", "-monitor", "none"].map(String::from),
            );
        } else {
            args.push("-nographic".into());
        }
        if self.firmware == Firmware::Uefi {
            args.push("-drive".into());
            args.push(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"));
            if let Some(vars) = &self.ovmf_vars {
                args.push("-drive".into());
                args.push(format!("if=pflash,format=raw,file={}", vars.display()));
            }
        }
        if self.drives.iter().any(|d| matches!(d, Drive::ScsiDisk(_))) {
            args.extend(["-device".into(), "virtio-scsi-pci,id=scsi0".into()]);
        }
        let (mut scsi_ids, mut nvme_ids) = (0..8, 0..8);
        for (index, drive) in self.drives.iter().enumerate() {
            args.push("-drive".into());
            args.push(match drive {
                Drive::Disk { path, format } => format!(
                    "file={},format={format},if=virtio,index={index}",
                    path.display()
                ),
                Drive::ScsiDisk(path) | Drive::NvmeDisk(path) => format!(
                    "file={},format=qcow2,if=none,id=disk{index}",
                    path.display()
                ),
                Drive::Cdrom(path) => format!(
                    "file={},format=raw,media=cdrom,readonly=on,index={index}",
                    path.display()
                ),
                Drive::UsbStick(path) => format!(
                    "file={},format=raw,readonly=on,if=none,id=usb{index}",
                    path.display()
                ),
            });
            match drive {
                Drive::UsbStick(_) => args.extend([
                    "-device".into(),
                    "qemu-xhci,id=xhci".into(),
                    "-device".into(),
                    format!("usb-storage,bus=xhci.0,drive=usb{index},bootindex=0"),
                ]),
                // SCSI targets are scanned in order of their id, so ids follow the drives'.
                Drive::ScsiDisk(_) => args.extend([
                    "-device".into(),
                    format!(
                        "scsi-hd,bus=scsi0.0,scsi-id={},lun=0,drive=disk{index}",
                        scsi_ids.next().expect("at most 8 SCSI disks")
                    ),
                ]),
                Drive::NvmeDisk(_) => args.extend([
                    "-device".into(),
                    format!(
                        "nvme,serial=r2a-nvme{},drive=disk{index}",
                        nvme_ids.next().expect("at most 8 NVMe disks")
                    ),
                ]),
                Drive::Disk { .. } | Drive::Cdrom(_) => {}
            }
        }
        let netdev = match &self.network {
            Network::User { tftp } => {
                let mut netdev = "user,id=net0,restrict=on".to_string();
                if let Some((dir, file)) = tftp {
                    netdev.push_str(&format!(",tftp={},bootfile={file}", dir.display()));
                }
                netdev
            }
            Network::Tap(ifname) => {
                format!("tap,id=net0,ifname={ifname},script=no,downscript=no")
            }
        };
        args.extend(["-netdev".into(), netdev]);
        args.extend([
            "-device".into(),
            format!("virtio-net-pci,netdev=net0,mac={}", self.mac),
        ]);
        if self.network_boot {
            args.extend(["-boot".into(), "order=n".into()]);
        } else if matches!(self.drives.first(), Some(Drive::Cdrom(_))) {
            args.extend(["-boot".into(), "order=d".into()]);
        }
        args
    }
}

/// Whether /dev/kvm can be opened for use.
pub fn kvm_usable() -> bool {
    Path::new("/dev/kvm").exists()
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
}

/// A locally administered MAC for a node the manifest gives none, stable per name.
pub fn mac_for(node: &str) -> String {
    let digest = crate::hash::sha256_hex(node.as_bytes());
    format!(
        "52:54:00:{}:{}:{}",
        &digest[0..2],
        &digest[2..4],
        &digest[4..6]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            firmware: Firmware::Uefi,
            ovmf_vars: Some("/tmp/vars.fd".into()),
            accel: Accel::Tcg,
            memory_mib: 2048,
            drives: vec![
                Drive::Disk {
                    path: "/tmp/disk.qcow2".into(),
                    format: "qcow2",
                },
                Drive::Cdrom("/tmp/seed.iso".into()),
            ],
            mac: "52:54:00:00:00:31".into(),
            network: Network::User { tftp: None },
            network_boot: false,
            headless: true,
        }
    }

    #[test]
    fn user_networking_is_always_restricted() {
        let mut pxe = machine();
        pxe.network = Network::User {
            tftp: Some(("/srv/pxe".into(), "boot.ipxe".into())),
        };
        pxe.network_boot = true;
        for m in [machine(), pxe] {
            let args = m.args();
            let netdevs: Vec<&String> = args
                .windows(2)
                .filter(|w| w[0] == "-netdev")
                .map(|w| &w[1])
                .collect();
            assert_eq!(netdevs.len(), 1);
            assert!(
                netdevs[0].starts_with("user,id=net0,restrict=on"),
                "{netdevs:?}"
            );
            assert!(
                !args
                    .iter()
                    .any(|a| a.contains("hostfwd") || a.contains("guestfwd"))
            );
        }
    }

    #[test]
    fn a_tap_nic_uses_the_named_device_as_it_is() {
        let mut tapped = machine();
        tapped.network = Network::Tap("tap-db1".into());
        let args = tapped.args();
        let netdevs: Vec<&String> = args
            .windows(2)
            .filter(|w| w[0] == "-netdev")
            .map(|w| &w[1])
            .collect();
        assert_eq!(
            netdevs,
            ["tap,id=net0,ifname=tap-db1,script=no,downscript=no"]
        );
        assert!(
            args.join(" ")
                .contains("virtio-net-pci,netdev=net0,mac=52:54:00:00:00:31")
        );
    }

    #[test]
    fn uefi_gets_ovmf_and_bios_gets_none() {
        let uefi = machine().args().join(" ");
        assert!(
            uefi.contains("if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd")
        );
        assert!(uefi.contains("if=pflash,format=raw,file=/tmp/vars.fd"));
        let mut bios = machine();
        bios.firmware = Firmware::Bios;
        assert!(!bios.args().join(" ").contains("pflash"));
    }

    #[test]
    fn drives_network_boot_and_console() {
        let args = machine().args().join(" ");
        assert!(args.contains("-accel tcg"));
        assert!(args.contains("file=/tmp/disk.qcow2,format=qcow2,if=virtio,index=0"));
        assert!(args.contains("file=/tmp/seed.iso,format=raw,media=cdrom,readonly=on,index=1"));
        assert!(args.contains("-serial stdio"));
        assert!(args.contains("-no-reboot"));
        assert!(args.contains("mac=52:54:00:00:00:31"));
        let mut pxe = machine();
        pxe.network = Network::User {
            tftp: Some(("/srv/pxe".into(), "boot.ipxe".into())),
        };
        pxe.network_boot = true;
        let args = pxe.args().join(" ");
        assert!(args.contains("restrict=on,tftp=/srv/pxe,bootfile=boot.ipxe"));
        assert!(args.contains("-boot order=n"));
    }

    #[test]
    fn a_usb_stick_is_a_read_only_usb_disk_booted_first() {
        let mut usb = machine();
        usb.drives = vec![Drive::UsbStick("/tmp/r2a.iso".into())];
        let args = usb.args().join(" ");
        assert!(args.contains("-drive file=/tmp/r2a.iso,format=raw,readonly=on,if=none,id=usb0"));
        assert!(args.contains(
            "-device qemu-xhci,id=xhci -device usb-storage,bus=xhci.0,drive=usb0,bootindex=0"
        ));
        assert!(!args.contains("media=cdrom"));
    }

    #[test]
    fn generated_macs_are_stable_and_local() {
        assert_eq!(mac_for("portal1"), mac_for("portal1"));
        assert_ne!(mac_for("portal1"), mac_for("portal2"));
        assert!(mac_for("x").starts_with("52:54:00:"));
        assert_eq!(mac_for("x").len(), 17);
    }
}
