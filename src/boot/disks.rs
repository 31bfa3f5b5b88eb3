//! The data disk a boot gives a node: a blank disk at the device name the manifest
//! declares. The kernel names disks by bus and probe order (`/dev/vdb` is the second
//! virtio disk), so the placement says which bus, and how many blank stand-ins go first
//! (the system disk a live or PXE boot leaves unused). A name QEMU cannot reproduce is
//! refused before the boot starts.

use anyhow::bail;

/// The most disks of one bus a boot makes.
const MAX_PER_BUS: usize = 8;

/// A bus a blank disk can sit on, named by the kernel's prefix for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    /// virtio-blk: `/dev/vda`, `/dev/vdb`, ...
    Virtio,
    /// SCSI: `/dev/sda`, `/dev/sdb`, ...
    Scsi,
    /// NVMe, one namespace per controller: `/dev/nvme0n1`, `/dev/nvme1n1`, ...
    Nvme,
}

/// What the boot already attached before the data disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attached {
    /// virtio disks (the system disk of a disk boot).
    pub virtio: usize,
    /// A USB stick, which takes a SCSI disk name (`/dev/sda`) at an unknown moment.
    pub usb_stick: bool,
}

/// Where the data disk goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Its bus.
    pub bus: Bus,
    /// Blank stand-ins to attach on that bus first, so that it gets its name.
    pub stand_ins: usize,
}

/// The bus and index of a kernel disk name, if it is one QEMU can reproduce.
pub fn parse_device(device: &str) -> Option<(Bus, usize)> {
    let name = device.strip_prefix("/dev/")?;
    let letter = |rest: &str| match rest.as_bytes() {
        [c @ b'a'..=b'z'] => Some(usize::from(c - b'a')),
        _ => None,
    };
    if let Some(rest) = name.strip_prefix("vd") {
        return letter(rest).map(|index| (Bus::Virtio, index));
    }
    if let Some(rest) = name.strip_prefix("sd") {
        return letter(rest).map(|index| (Bus::Scsi, index));
    }
    let controller = name.strip_prefix("nvme")?.strip_suffix("n1")?;
    if controller.is_empty() || !controller.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    controller.parse().ok().map(|index| (Bus::Nvme, index))
}

/// Places `device`, the data disk of `node`, after what is `attached`.
pub fn place(device: &str, node: &str, attached: Attached) -> anyhow::Result<Placement> {
    let Some((bus, index)) = parse_device(device) else {
        bail!(
            "the data disk {device} of node {node} has a name QEMU cannot give a disk: \
             `r2a-image boot` makes /dev/vdX (virtio), /dev/sdX (SCSI) and /dev/nvmeNn1; \
             declare one of those to boot this node here"
        );
    };
    if index >= MAX_PER_BUS {
        bail!(
            "the data disk {device} of node {node} would need {index} disks before it; \
             `r2a-image boot` attaches at most {MAX_PER_BUS} per bus"
        );
    }
    let taken = match bus {
        Bus::Virtio => attached.virtio,
        Bus::Scsi if attached.usb_stick => bail!(
            "the data disk {device} of node {node} is a SCSI name, and the USB stick of \
             this boot takes one too, in an order nobody controls; boot from a CD \
             (without --usb) or declare /dev/vdX"
        ),
        Bus::Scsi | Bus::Nvme => 0,
    };
    if index < taken {
        bail!(
            "the data disk {device} of node {node} is the system disk's name in this boot \
             (the system disk is virtio disk {}); declare /dev/vd{}",
            taken,
            char::from(b'a' + taken as u8)
        );
    }
    Ok(Placement {
        bus,
        stand_ins: index - taken,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names() {
        let table = [
            ("/dev/vda", Some((Bus::Virtio, 0))),
            ("/dev/vdb", Some((Bus::Virtio, 1))),
            ("/dev/sdc", Some((Bus::Scsi, 2))),
            ("/dev/nvme0n1", Some((Bus::Nvme, 0))),
            ("/dev/nvme1n1", Some((Bus::Nvme, 1))),
            ("/dev/nvme0n2", None),
            ("/dev/nvmen1", None),
            ("/dev/vdaa", None),
            ("/dev/disk/by-id/virtio-data", None),
            ("vdb", None),
        ];
        for (device, wanted) in table {
            assert_eq!(parse_device(device), wanted, "{device}");
        }
    }

    #[test]
    fn placements() {
        let disk_boot = Attached {
            virtio: 1,
            usb_stick: false,
        };
        let live = Attached::default();
        let usb = Attached {
            virtio: 0,
            usb_stick: true,
        };
        let ok = |bus, stand_ins| Ok(Placement { bus, stand_ins });
        // (device, what is attached, placement or words of the error)
        let table: [(&str, Attached, Result<Placement, &str>); 8] = [
            ("/dev/vdb", disk_boot, ok(Bus::Virtio, 0)),
            ("/dev/vdb", live, ok(Bus::Virtio, 1)),
            ("/dev/vdd", disk_boot, ok(Bus::Virtio, 2)),
            ("/dev/sdb", disk_boot, ok(Bus::Scsi, 1)),
            ("/dev/nvme0n1", live, ok(Bus::Nvme, 0)),
            ("/dev/vda", disk_boot, Err("the system disk's name")),
            ("/dev/sdb", usb, Err("USB stick")),
            ("/dev/disk/by-label/data", live, Err("cannot give a disk")),
        ];
        for (device, attached, wanted) in table {
            let placed = place(device, "pg-node-02", attached);
            match (placed, wanted) {
                (Ok(placed), Ok(wanted)) => assert_eq!(placed, wanted, "{device}"),
                (Err(error), Err(words)) => {
                    let message = error.to_string();
                    assert!(message.contains(words), "{device}: {message}");
                    assert!(message.contains("pg-node-02"), "{message}");
                }
                (placed, wanted) => panic!("{device}: {placed:?}, wanted {wanted:?}"),
            }
        }
    }
}
