//! The PXE set: kernel, initramfs and the role system for HTTP or TFTP boot, an iPXE
//! script that hands each node its own script (keyed by MAC, naming the node on the
//! kernel command line), and GRUB's network boot images with their menu. Paths in the
//! scripts are relative, so the folder can be served from anywhere.
//!
//! The squashfs travels inside an initramfs archive of its own, `rootfs.cpio`, that the
//! kernel unpacks after the initramfs: every loader can hand the kernel a second initrd
//! file as it is (UEFI iPXE passes only the files that `initrd=` names, as they are;
//! BIOS iPXE and GRUB concatenate), and none needs to wrap it. Under `node_data = "seed"`
//! each listed node's payload travels the same way, as a third archive beside its script
//! (`nodes/<mac>.cpio`, readable by root only), which the live root's initramfs script
//! hands to `r2a-node`.

use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Write as _};
use std::path::Path;

use anyhow::Context as _;

use super::grub::{self, NETBOOT_BIOS, NETBOOT_EFI};
use super::live::{self, INITRAMFS_SQUASHFS, KernelFiles};
use crate::manifest::Node;

/// The archive that carries the squashfs into the initramfs.
pub const ROOTFS_CPIO: &str = "rootfs.cpio";

/// The files of the set, relative to its folder, besides the per-node scripts.
pub const FILES: [&str; 7] = [
    "vmlinuz",
    "initrd.img",
    ROOTFS_CPIO,
    "boot.ipxe",
    "grub.cfg",
    NETBOOT_EFI,
    NETBOOT_BIOS,
];

/// A MAC address as the per-node file names spell it (iPXE's `${mac:hexhyp}`).
pub fn mac_file_stem(mac: &str) -> String {
    mac.to_ascii_lowercase().replace(':', "-")
}

/// Where the initramfs finds a node's payload (see `roles/base.toml`).
pub const INITRAMFS_PAYLOAD: &str = "/r2a-node.tar";

/// The iPXE lines that boot the role from `prefix` (`""` or `"../"`), with the node's
/// payload archive (beside the script) when it has one.
fn ipxe_boot(prefix: &str, extra: &[&str], payload: Option<&str>) -> String {
    let cmdline = live::kernel_command_line(None, extra);
    let (payload_arg, payload_line) = match payload {
        Some(file) => (format!(" initrd={file}"), format!("initrd {file}\n")),
        None => (String::new(), String::new()),
    };
    format!(
        "kernel {prefix}vmlinuz {cmdline} initrd=initrd.img initrd={ROOTFS_CPIO}{payload_arg}\n\
         initrd {prefix}initrd.img\n\
         initrd {prefix}{ROOTFS_CPIO}\n\
         {payload_line}\
         boot\n"
    )
}

/// The name of a node's payload archive in `nodes/`.
pub fn payload_file(mac: &str) -> String {
    format!("{}.cpio", mac_file_stem(mac))
}

/// The iPXE script every machine loads first.
pub fn boot_script(title: &str) -> String {
    format!(
        "#!ipxe\n\
         # r2a-appliance: {title}. A node listed with its MAC gets nodes/<mac>.ipxe, which\n\
         # names it on the kernel command line; any other machine boots the role and is\n\
         # named by cloud-init data or its hostname. The initrd= words are for UEFI, where\n\
         # the kernel loads the files they name.\n\
         chain --autofree nodes/${{net0/mac:hexhyp}}.ipxe || echo r2a: no script for ${{net0/mac}}\n{}",
        ipxe_boot("", &[], None)
    )
}

/// One node's iPXE script, in `nodes/`, with its payload archive's name when it has one.
pub fn node_script(title: &str, node: &str, payload: Option<&str>) -> String {
    let node_arg = format!("r2a.node={node}");
    format!(
        "#!ipxe\n\
         # r2a-appliance: {title}, node {node}.\n\
         echo r2a: booting node {node}\n{}",
        ipxe_boot("../", &[&node_arg], payload)
    )
}

/// The GRUB netboot menu: files are found beside it (`$config_directory`), a listed MAC
/// names its node and adds its payload archive when it has one.
pub fn grub_menu(title: &str, nodes: &[&Node], payloads: &BTreeMap<String, Vec<u8>>) -> String {
    let cmdline = live::kernel_command_line(None, &[]);
    let mut text = format!(
        "# r2a-appliance: {title}, GRUB netboot ({NETBOOT_EFI} for UEFI, {NETBOOT_BIOS} for BIOS).\n{}\
         set timeout=3\n\
         set r2a_node=\"\"\n\
         set r2a_payload=\"\"\n",
        grub::SERIAL_TERMINAL
    );
    for node in nodes {
        if let Some(mac) = &node.mac {
            let payload = if payloads.contains_key(&node.name) {
                format!(
                    " set r2a_payload=\"$config_directory/nodes/{}\";",
                    payload_file(mac)
                )
            } else {
                String::new()
            };
            text.push_str(&format!(
                "if [ \"$net_default_mac\" = \"{}\" ]; then set r2a_node=\"r2a.node={}\";{payload} fi\n",
                mac.to_ascii_lowercase(),
                node.name
            ));
        }
    }
    text.push_str(&format!(
        "menuentry \"{title}: network boot\" {{\n\
         \techo \"r2a: GRUB network boot $r2a_node\"\n\
         \tlinux $config_directory/vmlinuz {cmdline} $r2a_node\n\
         \tinitrd $config_directory/initrd.img $config_directory/{ROOTFS_CPIO} $r2a_payload\n\
         }}\n"
    ));
    text
}

/// Writes the set into `dir`, GRUB's network boot images aside (`grub::netboot_images`
/// makes them in the boot tools); `payloads` holds the packed payload of each node that
/// has one, by name.
pub fn write(
    kernel: &KernelFiles,
    squashfs: &Path,
    title: &str,
    nodes: &[&Node],
    payloads: &BTreeMap<String, Vec<u8>>,
    dir: &Path,
    epoch: i64,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("nodes"))?;
    kernel.place_in(dir)?;
    pad_to_four_bytes(&dir.join("initrd.img"))?;
    write_rootfs_cpio(squashfs, &dir.join(ROOTFS_CPIO), epoch)?;
    std::fs::write(dir.join("boot.ipxe"), boot_script(title))?;
    std::fs::write(dir.join("grub.cfg"), grub_menu(title, nodes, payloads))?;
    for node in nodes {
        if let Some(mac) = &node.mac {
            let payload = payloads
                .get(&node.name)
                .map(|bytes| (payload_file(mac), bytes));
            if let Some((file, bytes)) = &payload {
                let path = dir.join("nodes").join(file);
                write_cpio(
                    INITRAMFS_PAYLOAD,
                    &mut bytes.as_slice(),
                    bytes.len() as u64,
                    &path,
                    epoch,
                )?;
                crate::fsutil::set_mode(&path, 0o600)?;
            }
            std::fs::write(
                dir.join("nodes")
                    .join(format!("{}.ipxe", mac_file_stem(mac))),
                node_script(
                    title,
                    &node.name,
                    payload.as_ref().map(|(file, _)| file.as_str()),
                ),
            )?;
        }
    }
    Ok(())
}

/// The kernel finds an archive that follows the initramfs only at a 4-byte boundary, and
/// UEFI's loader puts files end to end: zeros after the compressed initramfs are skipped.
fn pad_to_four_bytes(path: &Path) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata()?.len();
    file.set_len(len.next_multiple_of(4))
        .with_context(|| format!("padding {}", path.display()))
}

/// A newc archive holding the squashfs at [`INITRAMFS_SQUASHFS`], read-only for root.
fn write_rootfs_cpio(squashfs: &Path, out: &Path, epoch: i64) -> anyhow::Result<()> {
    let mut source =
        std::fs::File::open(squashfs).with_context(|| format!("opening {}", squashfs.display()))?;
    let size = source.metadata()?.len();
    write_cpio(INITRAMFS_SQUASHFS, &mut source, size, out, epoch).with_context(|| {
        format!(
            "packing the role system ({}) for the initramfs",
            squashfs.display()
        )
    })
}

/// A newc archive holding one file at `name`, read-only for root.
fn write_cpio(
    name: &str,
    source: &mut dyn Read,
    size: u64,
    out: &Path,
    epoch: i64,
) -> anyhow::Result<()> {
    let size = u32::try_from(size)
        .context("the file is over 4 GiB, more than an initramfs archive holds")?;
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut writer = cpio::newc::Builder::new(name.trim_start_matches('/'))
        .mode(0o100400)
        .nlink(1)
        .mtime(u32::try_from(epoch.max(0)).unwrap_or(u32::MAX))
        .write(BufWriter::new(file), size);
    std::io::copy(source, &mut writer).with_context(|| format!("writing {}", out.display()))?;
    let mut file = cpio::newc::trailer(writer.finish()?)?;
    file.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn node(name: &str, mac: Option<&str>) -> Node {
        Node {
            name: name.to_string(),
            role: "db".to_string(),
            address: "10.77.0.11".parse().unwrap(),
            mac: mac.map(str::to_string),
            vcpus: None,
            memory: None,
            disk: None,
            data_disk: None,
        }
    }

    #[test]
    fn scripts_chain_to_the_node_by_mac() {
        assert_eq!(mac_file_stem("52:54:00:AB:00:11"), "52-54-00-ab-00-11");
        let boot = boot_script("Ring2All db");
        assert!(boot.starts_with("#!ipxe\n"));
        assert!(boot.contains("chain --autofree nodes/${net0/mac:hexhyp}.ipxe || echo"));
        assert!(boot.contains(
            " initrd=initrd.img initrd=rootfs.cpio\ninitrd initrd.img\ninitrd rootfs.cpio\nboot\n"
        ));
        let node = node_script("Ring2All db", "db1", None);
        assert!(node.contains("kernel ../vmlinuz boot=r2a r2a.node=db1 "));
        assert!(node.contains("initrd ../initrd.img\ninitrd ../rootfs.cpio\nboot\n"));
        let seeded = node_script("Ring2All db", "db1", Some("52-54-00-00-00-11.cpio"));
        assert!(seeded.contains(" initrd=rootfs.cpio initrd=52-54-00-00-00-11.cpio\n"));
        assert!(seeded.contains("initrd ../rootfs.cpio\ninitrd 52-54-00-00-00-11.cpio\nboot\n"));
    }

    #[test]
    fn the_grub_menu_names_listed_macs() {
        let db1 = node("db1", Some("52:54:00:00:00:11"));
        let db2 = node("db2", None);
        let menu = grub_menu("Ring2All db", &[&db1, &db2], &BTreeMap::new());
        assert!(menu.contains(
            "if [ \"$net_default_mac\" = \"52:54:00:00:00:11\" ]; then set r2a_node=\"r2a.node=db1\"; fi"
        ));
        assert!(!menu.contains("db2"));
        assert!(menu.contains(
            "initrd $config_directory/initrd.img $config_directory/rootfs.cpio $r2a_payload\n"
        ));
        let payloads = BTreeMap::from([("db1".to_string(), b"tar".to_vec())]);
        let seeded = grub_menu("Ring2All db", &[&db1, &db2], &payloads);
        assert!(seeded.contains(
            "then set r2a_node=\"r2a.node=db1\"; set r2a_payload=\"$config_directory/nodes/52-54-00-00-00-11.cpio\"; fi"
        ));
    }

    #[test]
    fn the_set_holds_every_file() {
        let tree = tempfile::tempdir().unwrap();
        let kernel = KernelFiles {
            vmlinuz: tree.path().join("k"),
            initrd: tree.path().join("i"),
        };
        std::fs::write(&kernel.vmlinuz, "k").unwrap();
        std::fs::write(&kernel.initrd, "initrd").unwrap();
        let squashfs = tree.path().join("s");
        std::fs::write(&squashfs, "squashfs").unwrap();
        let out = tree.path().join("pxe");
        let db1 = node("db1", Some("52:54:00:00:00:11"));
        let db2 = node("db2", Some("52:54:00:00:00:12"));
        let payloads = BTreeMap::from([("db1".to_string(), b"payload".to_vec())]);
        write(
            &kernel,
            &squashfs,
            "t",
            &[&db1, &db2],
            &payloads,
            &out,
            1_700_000_000,
        )
        .unwrap();
        // GRUB's network boot images are added from the boot tools' layer afterwards.
        for file in FILES {
            let grub = [NETBOOT_EFI, NETBOOT_BIOS].contains(&file);
            assert_eq!(out.join(file).is_file(), !grub, "{file}");
        }
        assert!(out.join("nodes/52-54-00-00-00-11.ipxe").is_file());
        assert!(out.join("nodes/52-54-00-00-00-12.ipxe").is_file());
        assert!(!out.join("nodes/52-54-00-00-00-12.cpio").exists());
        // db1's payload: a root-only archive holding it at /r2a-node.tar.
        let payload = out.join("nodes/52-54-00-00-00-11.cpio");
        assert_eq!(
            std::fs::metadata(&payload).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut entry = cpio::newc::Reader::new(std::fs::File::open(payload).unwrap()).unwrap();
        assert_eq!(entry.entry().name(), "r2a-node.tar");
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
        assert_eq!(content, b"payload");
        assert_eq!(
            std::fs::read(out.join("initrd.img")).unwrap(),
            b"initrd\0\0"
        );
        // The archive reads back as the squashfs at /r2a.squashfs, then the trailer.
        let archive = std::fs::File::open(out.join(ROOTFS_CPIO)).unwrap();
        let mut entry = cpio::newc::Reader::new(archive).unwrap();
        assert_eq!(entry.entry().name(), "r2a.squashfs");
        assert_eq!(entry.entry().mode(), 0o100400);
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
        assert_eq!(content, b"squashfs");
        let trailer = cpio::newc::Reader::new(entry.finish().unwrap()).unwrap();
        assert!(trailer.entry().is_trailer());
    }
}
